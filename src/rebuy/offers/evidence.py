"""Offers chosen by what worked: the playbook's priority re-ordered by measured uplift.

Input: the JSON ``rebuy measure`` writes (``by_offer`` entries with ``offer_type``, ``verdict``,
``incremental_margin_per_customer`` and ``incremental_margin_ci95``). :func:`evidence_from_uplift`
turns it into an :class:`Evidence`:

- an offer type whose verdict is ``harmful`` (its uplift interval lies below 0) is switched off
  (a rule leaves the priority; harmful reminders become "no offer") when that harm survives Holm's
  correction over the offer types tested (``significant_holm``; a result without it is taken at
  its verdict). Switching off is the one decision the loop cannot undo (a type nobody gets is never
  measured again), and with nine types tested at 95% each one false verdict is common;
- offer types whose incremental margin per treated customer has a 95% interval above 0 move to the
  front of the priority, highest measured margin first: among the rules a customer qualifies for,
  the best-evidenced one wins;
- every other rule keeps its configured place (not enough evidence either way).

The engine itself is unchanged: it still takes the first rule a customer qualifies for, in the
(new) priority. Control groups continue under the new priority, so the evidence stays current.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rebuy.errors import UsageError
from rebuy.offers.names import OUTCOMES, RULE_NAMES

HARMFUL = "harmful"


@dataclass(frozen=True)
class Evidence:
    """What a measurement changes in tonight's offers. ``notes[t]`` is the sentence appended to the
    reason of every customer offered a promoted type ``t``."""

    source: str
    measured_to: str | None
    priority: list[str]
    switched_off: list[str] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    kept_despite_harm: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        """JSON-able summary for the manifest, the summary and the report."""
        return {"source": self.source, "measured_to": self.measured_to, "switched_off": list(self.switched_off),
                "promoted": list(self.promoted), "priority": list(self.priority),
                "kept_despite_harm": list(self.kept_despite_harm), "notes": dict(self.notes)}

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> Evidence:
        """The evidence :meth:`report` described (a nightly run's, recorded for the request path)."""
        return cls(source=str(report["source"]), measured_to=report.get("measured_to"),
                   priority=list(report["priority"]), switched_off=list(report.get("switched_off", [])),
                   promoted=list(report.get("promoted", [])), notes=dict(report.get("notes", {})),
                   kept_despite_harm=list(report.get("kept_despite_harm", [])))


def read_uplift(path: str | Path) -> dict[str, Any]:
    """The ``rebuy measure`` JSON at ``path``; a missing file or a file without ``by_offer`` entries
    naming ``offer_type`` and ``verdict`` is a :class:`~rebuy.errors.UsageError` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such uplift file (write one with `rebuy measure --out {path}`)") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable uplift JSON ({e})") from None
    entries = data.get("by_offer") if isinstance(data, dict) else None
    if not isinstance(entries, list) or any(not isinstance(e, dict) or "offer_type" not in e or "verdict" not in e
                                            for e in entries):
        raise UsageError(f"{path}: by_offer must be a list of entries with offer_type and verdict "
                         "(the JSON `rebuy measure` writes)")
    return data


def evidence_from_uplift(uplift: Mapping[str, Any], priority: Sequence[str], source: str = "uplift") -> Evidence:
    """The :class:`Evidence` of a measurement for a playbook whose rules are ``priority`` (see the
    module docstring)."""
    entries = {e["offer_type"]: e for e in uplift.get("by_offer", [])}
    switched_off = [t for t, e in entries.items() if e.get("verdict") == HARMFUL and e.get("significant_holm") is not False
                    and t in (*RULE_NAMES, *OUTCOMES)]
    kept = [t for t, e in entries.items() if e.get("verdict") == HARMFUL and t not in switched_off]
    significant = [t for t in priority if t in entries and t not in switched_off and _margin_above_zero(entries[t])]
    promoted = sorted(significant, key=lambda t: -float(entries[t]["incremental_margin_per_customer"]))
    rest = [t for t in priority if t not in promoted and t not in switched_off]
    measured_to = uplift.get("as_of")
    notes = {t: _note(t, entries[t], measured_to) for t in promoted}
    return Evidence(source=source, measured_to=measured_to, priority=[*promoted, *rest],
                    switched_off=switched_off, promoted=promoted, notes=notes, kept_despite_harm=kept)


def _margin_above_zero(entry: Mapping[str, Any]) -> bool:
    ci = entry.get("incremental_margin_ci95")
    return (isinstance(ci, Sequence) and len(ci) == 2 and ci[0] is not None
            and entry.get("incremental_margin_per_customer") is not None and float(ci[0]) > 0)


def _note(offer_type: str, entry: Mapping[str, Any], measured_to: str | None) -> str:
    """' Chosen by measured uplift: ...' for one promoted type."""
    lo, hi = entry["incremental_margin_ci95"]
    uplift = entry.get("uplift")
    points = f"{100 * float(uplift):+.1f} points of purchase rate, " if uplift is not None else ""
    when = f" (measured to {measured_to})" if measured_to else ""
    return (f" Chosen by measured uplift{when}: {offer_type.replace('_', '-')} offers added {points}"
            f"{float(entry['incremental_margin_per_customer']):.2f} margin per customer (95% CI {float(lo):.2f} to "
            f"{float(hi):.2f}).")


def annotate_reasons(offer_type: np.ndarray, reason: np.ndarray, evidence: Evidence) -> np.ndarray:
    """``reason`` with the evidence sentence appended for customers offered a promoted type."""
    out = np.asarray(reason, dtype=object).copy()
    types = np.asarray(offer_type, dtype=object)
    for t, note in evidence.notes.items():
        rows = np.flatnonzero(types == t)
        out[rows] = [r + note for r in out[rows]]
    return out
