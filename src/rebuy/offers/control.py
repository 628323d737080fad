"""Control groups: who is held out of each offer type, by a hash anyone can recompute.

A customer's draw is ``u = int(sha256(f"{experiment}|{customer_id}")[:16 hex], 16) / 2**64``, a
number in [0, 1) that depends only on the experiment key and the id: reruns, the Spark path and an
auditor with one line of SQL or Python get the same groups, and within one experiment (by default
one calendar month, :func:`experiment_key`) a customer does not change group from night to night.
The draw does not depend on the offer type, so a customer held out of one type is held out of every
type with the same share that month.

A customer with offer type ``t`` is in the control group when ``u < share[t]``;
:func:`control_shares` sets the shares from the night's counts: ``control_share`` where that gives
at least ``min_control`` customers; a larger share (up to ``max_control_share``) for smaller types;
no control group (share 0, every customer treated) when even that is too few. Customers without an
offer are in neither group (``group = "none"``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

TREATMENT = "treatment"
CONTROL = "control"
NO_EXPERIMENT = "none"
GROUPS = (TREATMENT, CONTROL, NO_EXPERIMENT)
"""The values of the score table's ``group`` column."""


def experiment_key(configured: str | None, decided_at: pd.Timestamp) -> str:
    """The experiment the decisions of ``decided_at`` belong to: the configured key, or the
    decision day's calendar month (``"2026-12"``)."""
    return configured if configured else pd.Timestamp(decided_at).strftime("%Y-%m")


def control_draws(customer_ids: Iterable[object], key: str) -> np.ndarray:
    """Each customer's uniform draw in [0, 1) for experiment ``key`` (see the module docstring)."""
    prefix = f"{key}|".encode()
    sha256 = hashlib.sha256
    digests = b"".join([sha256(prefix + (c if isinstance(c, str) else str(c)).encode()).digest() for c in customer_ids])
    first_8_bytes = np.frombuffer(digests, dtype=">u8")[::4]  # 32-byte digests: every 4th big-endian uint64
    return first_8_bytes.astype(np.float64) / 2.0**64


@dataclass(frozen=True)
class ShareDecision:
    """One offer type's control share and why."""

    share: float
    note: str


def control_shares(counts: Mapping[str, int], control_share: float, min_control: int,
                   max_control_share: float) -> dict[str, ShareDecision]:
    """The control share of each offer type with ``counts[t]`` customers tonight (see the module
    docstring); the note says when a type got a larger share or none."""
    out: dict[str, ShareDecision] = {}
    for offer_type, n in counts.items():
        if n * control_share >= min_control or control_share == 0:
            out[offer_type] = ShareDecision(control_share, "")
        elif n * max_control_share >= min_control:
            share = min_control / n
            out[offer_type] = ShareDecision(share, f"{n:,} customers: control share raised to {share:.0%} "
                                                   f"to hold out {min_control}")
        else:
            out[offer_type] = ShareDecision(0.0, f"{n:,} customers: too few for a control group of "
                                                 f"{min_control} (at most {max_control_share:.0%}); all treated")
    return out


def assign_groups(customer_ids: pd.Index | np.ndarray, offer_types: np.ndarray, key: str,
                  shares: Mapping[str, ShareDecision], no_offer: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """(group, share) per customer: ``control`` when the draw is below the type's share,
    ``treatment`` otherwise, ``none`` for customers without an offer (share 0)."""
    types = np.asarray(offer_types, dtype=object)
    share = np.zeros(len(types))
    for offer_type, decision in shares.items():
        share[types == offer_type] = decision.share
    has_offer = types != no_offer
    share[~has_offer] = 0.0
    group = np.full(len(types), NO_EXPERIMENT, dtype=object)
    rows = np.flatnonzero(has_offer)
    if len(rows):
        draws = control_draws(np.asarray(customer_ids, dtype=object)[rows], key)
        group[rows] = np.where(draws < share[rows], CONTROL, TREATMENT)
    return group, share


def hold_out(table: pd.DataFrame, *, experiment: str, shares: Mapping[str, ShareDecision]) -> pd.DataFrame:
    """``table`` (the score table's offer columns, ``customer_id``, ``offer_type``, ``channel``,
    ``max_contacts_per_month``, ``offer_reason``, ``discount_cost``) with ``group`` and ``deliver``
    set: control customers keep their decision but get channel "none", no contacts, no discount
    cost, and a reason that says they are held out; treated customers are delivered where a
    channel is allowed."""
    group, _ = assign_groups(table["customer_id"].to_numpy(dtype=object), table["offer_type"].to_numpy(dtype=object),
                             experiment, shares)
    out = table.copy()
    control = group == CONTROL
    out["group"] = pd.array(group, dtype="string")
    out["deliver"] = (group == TREATMENT) & (out["channel"].to_numpy(dtype=object) != "none")
    if control.any():
        rows = np.flatnonzero(control)
        types = out["offer_type"].to_numpy(dtype=object)[rows]
        reasons = out["offer_reason"].to_numpy(dtype=object)[rows]
        held = [f"Held out to measure {t.replace('_', '-')} offers (control group, experiment {experiment}): "
                f"nothing is sent. Decision: {r}" for t, r in zip(types, reasons, strict=True)]
        out.loc[control, "channel"] = "none"
        out.loc[control, "max_contacts_per_month"] = 0
        out.loc[control, "discount_cost"] = 0.0
        reason = out["offer_reason"].to_numpy(dtype=object).copy()
        reason[rows] = held
        out["offer_reason"] = pd.array(reason, dtype="string")
    return out


def nightly_shares(offer_types: pd.Series, control_share: float, min_control: int, max_control_share: float,
                   no_offer: str = "none") -> dict[str, ShareDecision]:
    """:func:`control_shares` for tonight's counts of each offer type (customers without an offer
    left out)."""
    counts = offer_types[offer_types != no_offer].value_counts()
    return control_shares({str(t): int(n) for t, n in counts.items()}, control_share, min_control, max_control_share)
