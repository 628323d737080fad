"""Uplift of each offer type, measured from the offer log and the transactions that followed.

What is estimated: for each offer type, the intention-to-treat (ITT) effect of being assigned to
its treatment group, relative to its randomly held-out control group, on three outcomes over a
fixed window of ``window_days`` days starting at ``decided_at`` (the first day the decision can
act): the response (at least one transaction line in the window: a probability, shown in points),
the net revenue in the window (currency per customer) and the margin ``margin * revenue −
discount_cost`` (currency per customer; control customers cost nothing).

Unit of analysis: a customer. Per offer type, each customer's FIRST measurable decision of that
type (repeated nightly decisions of one customer are not independent); for ``overall`` and
``by_segment``, each customer's first measurable decision of any type. These are combined across
offer types by stratification (weights = each type's share of the measured customers), never by a
pooled difference, because control shares differ by type.

Assumptions: groups are random (the control hash of :mod:`rebuy.offers.control`, independent of
the outcomes); ITT (treated customers who were not delivered still count as treatment); no peeking:
the window is fixed in advance and a decision is measured only when its whole window
``[decided_at, decided_at + window_days)`` has passed, i.e. ends on or before ``as_of + 1 day``
(the others are counted as ``decisions_pending``); no interference between customers. The headline
numbers are CUPED-adjusted (:mod:`rebuy.measure.estimate`) with covariates known before the
decision (:mod:`rebuy.measure.outcomes` and the log's pre-decision scores); the plain differences
are reported beside them.

Reported per entry (``by_offer``, ``overall``, ``by_segment``): counts; response rates (for
``overall`` and segments, stratified rates with the same weights); ``uplift`` (adjusted, in
probability units: 0.01 = one point) with its 95% normal interval and Welch SE, and the plain
``uplift_plain`` with its interval; ``ci_width_ratio`` (adjusted / plain width); incremental revenue
and margin per treated customer (currency) with 95% intervals; ``mde`` (minimum detectable uplift
at 80% power, two-sided 5%, from the adjusted SE at the current sizes); ``verdict`` from the
adjusted uplift interval. An offer type with fewer than 2 customers in a group has no estimate
(``None`` intervals, a ``note``) and is left out of the stratified combinations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rebuy.dates import day_number, day_numbers, resolve_as_of
from rebuy.errors import DataError, InvalidParameterError
from rebuy.measure.estimate import (
    NO_EFFECT,
    Difference,
    cuped_adjusted,
    difference,
    holm_significant,
    mde,
    p_value,
    stratified,
    verdict,
)
from rebuy.measure.log import COVARIATE_COLUMNS, NORMALISED, read_offer_log
from rebuy.measure.outcomes import HISTORY_COVARIATES, YEAR_DAYS, line_index, window_outcomes
from rebuy.metrics import json_float
from rebuy.offers.control import TREATMENT

logger = logging.getLogger(__name__)

OUTCOMES = ("purchased", "revenue", "margin")
"""The outcomes, in the column order of :class:`Stratum` arrays."""


@dataclass(frozen=True)
class Stratum:
    """The measured customers of one offer type (or of one type within a segment)."""

    treated: np.ndarray  # bool per customer
    plain: np.ndarray  # n x 3 outcomes (OUTCOMES)
    adjusted: np.ndarray  # n x 3 CUPED-adjusted outcomes
    cost: np.ndarray  # discount cost, currency (0 for control)

    def subset(self, rows: np.ndarray) -> Stratum:
        return Stratum(self.treated[rows], self.plain[rows], self.adjusted[rows], self.cost[rows])

    @property
    def counts(self) -> tuple[int, int]:
        n_t = int(self.treated.sum())
        return n_t, len(self.treated) - n_t


def measure_uplift(
    offer_log: pd.DataFrame | str | Path,
    transactions: pd.DataFrame,
    *,
    window_days: int = 30,
    margin: float = 0.3,
    as_of: Any = None,
    covariates: str | Sequence[str] | None = "auto",
) -> dict[str, Any]:
    """Uplift per offer type, overall and per segment, as a JSON-able dict (see the module docstring).

    ``transactions`` is the canonical frame of :func:`rebuy.data.load_transactions`; ``as_of``
    (default: its last day) is the last day of data, included; ``margin`` is the gross margin share
    of revenue; ``covariates`` is "auto" (the log's pre-decision scores present plus the history
    covariates), a list of those names, or None (no adjustment).

    Unit of analysis: per offer type, each customer's first measurable decision of that type; for
    ``overall`` and ``by_segment``, each customer's first measurable decision of any type,
    stratified by offer type. A decision is measurable when its window ends by ``as_of + 1 day``.
    """
    window_days, margin = _checked(window_days, margin)
    log = offer_log if isinstance(offer_log, pd.DataFrame) and offer_log.attrs.get(NORMALISED) else read_offer_log(offer_log)
    as_of_day = _as_of(transactions, as_of)
    day = day_numbers(log["decided_at"])
    measurable = day + window_days <= day_number(as_of_day, "as_of") + 1
    units = _first_decisions(log, day, measurable)
    names = _covariate_names(log, covariates)
    arrays = _unit_outcomes(log, units["rows"], day, transactions, window_days, margin, names)
    strata, overall, segments = _strata(log, units, *arrays)
    result = {
        "window_days": window_days, "as_of": str(as_of_day.date()), "margin": margin,
        "decisions_total": len(log), "decisions_measured": int(measurable.sum()),
        "decisions_pending": int((~measurable).sum()), "customers_measured": int(units["first_overall"].sum()),
        "dropped_rows": int(log.attrs.get("dropped_rows", 0)),
        "by_offer": [{"offer_type": t, **_entry([s], [1.0])} for t, s in strata.items()],
        "overall": _combined(strata, overall),
        "by_segment": [{"segment": g, **_combined(strata, rows)} for g, rows in segments.items()],
    }
    result["variance_reduction"] = _variance_reduction(result, names)
    result["multiple_testing"] = _holm(result["by_offer"])
    return result


def _holm(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Each offer type's p-value and whether its uplift stays significant after Holm-Bonferroni
    over the offer types tested (``significant_holm``); the family described. With k offer types
    tested at 95% each, about 0.05 k verdicts are wrong by chance when nothing works: the evidence
    switches an offer type off only when its harm survives this correction."""
    p = [p_value(e["uplift"] if e["uplift"] is not None else float("nan"),
                 e["uplift_se"] if e["uplift_se"] is not None else float("nan")) for e in entries]
    for entry, p_i, significant in zip(entries, p, holm_significant(p), strict=True):
        entry["p_value"] = json_float(p_i)
        entry["significant_holm"] = significant
    tested = sum(np.isfinite(x) for x in p)
    return {"method": "holm", "alpha": 0.05, "offer_types_tested": int(tested),
            "expected_chance_verdicts_if_nothing_works": json_float(0.05 * tested, 2)}


def _checked(window_days: Any, margin: Any) -> tuple[int, float]:
    if isinstance(window_days, bool) or not isinstance(window_days, int | np.integer) or window_days < 1:
        raise InvalidParameterError(f"window_days must be a positive whole number of days, got {window_days!r}")
    if not isinstance(margin, int | float) or not 0.0 <= float(margin) <= 1.0:
        raise InvalidParameterError(f"margin must be a share in [0, 1], got {margin!r}")
    return int(window_days), float(margin)


def _as_of(transactions: pd.DataFrame, as_of: Any) -> pd.Timestamp:
    """``as_of`` as a midnight, by default the last transaction day."""
    if as_of is None and ("timestamp" not in transactions.columns or transactions["timestamp"].isna().all()):
        raise DataError("transactions: no 'timestamp' values to take as_of from; pass as_of")
    return resolve_as_of(transactions["timestamp"] if as_of is None else pd.Series([], dtype="datetime64[ns]"),
                         as_of, error=InvalidParameterError)


def _covariate_names(log: pd.DataFrame, covariates: str | Sequence[str] | None) -> list[str]:
    available = [c for c in COVARIATE_COLUMNS if c in log.columns] + list(HISTORY_COVARIATES)
    if covariates is None:
        return []
    if isinstance(covariates, str):
        if covariates != "auto":
            raise InvalidParameterError(f"covariates must be 'auto', a list of names or None, got {covariates!r}")
        return available
    unknown = [c for c in covariates if c not in available]
    if unknown:
        raise InvalidParameterError(f"covariates: unknown or absent {unknown}; available: {available}")
    return list(covariates)


def _first_decisions(log: pd.DataFrame, day: np.ndarray, measurable: np.ndarray) -> dict[str, Any]:
    """Rows of each customer's first measurable decision per offer type, and which of them are the
    customer's first measurable decision of any type (ties on one day: first by offer type)."""
    rows = np.flatnonzero(measurable)
    cust, _ = pd.factorize(log["customer_id"].to_numpy()[rows])
    kind, types = pd.factorize(log["offer_type"].to_numpy()[rows], sort=True)
    order = np.lexsort((kind, day[rows], cust))  # by customer, then day, then type
    c, k = cust[order], kind[order]
    first_overall = _run_starts(c)
    by_type = np.lexsort((np.arange(len(order)), k, c))  # within (customer, type): earliest first
    first_type = np.zeros(len(order), dtype=bool)
    first_type[by_type[_run_starts(c[by_type], k[by_type])]] = True
    unit_rows = rows[order][first_type]
    return {
        "rows": unit_rows, "kind": k[first_type], "types": list(types),
        "first_overall": first_overall[first_type],
    }


def _run_starts(*keys: np.ndarray) -> np.ndarray:
    """True where sorted ``keys`` (equal-length arrays) differ from the previous row."""
    start = np.ones(len(keys[0]), dtype=bool)
    if len(start):
        start[1:] = np.logical_or.reduce([key[1:] != key[:-1] for key in keys])
    return start


def _unit_outcomes(log: pd.DataFrame, rows: np.ndarray, day: np.ndarray, transactions: pd.DataFrame,
                   window_days: int, margin: float, names: list[str]) -> tuple[np.ndarray, ...]:
    """(treated, n x 3 outcomes, n x k covariates, cost) of the unit decisions ``rows``."""
    decided = day[rows]
    first, last = (int(decided.min()), int(decided.max())) if len(rows) else (0, 0)
    index = line_index(transactions, first - max(YEAR_DAYS, window_days), last + window_days)
    measured = window_outcomes(index, log["customer_id"].array[rows], decided, window_days)
    for col in COVARIATE_COLUMNS:
        if col in log.columns:
            measured[col] = log[col].to_numpy(dtype=np.float64)[rows]
    treated = log["group"].to_numpy(dtype=object)[rows] == TREATMENT
    cost = np.where(treated, log["discount_cost"].to_numpy(dtype=np.float64)[rows], 0.0)
    outcomes = np.column_stack([measured["purchased"], measured["revenue"], margin * measured["revenue"] - cost])
    x = np.column_stack([measured[c] for c in names]) if names else np.empty((len(rows), 0))
    return treated, outcomes, x, cost


def _strata(log: pd.DataFrame, units: dict[str, Any], treated: np.ndarray, outcomes: np.ndarray, x: np.ndarray,
            cost: np.ndarray) -> tuple[dict[str, Stratum], dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """One :class:`Stratum` per offer type (CUPED fitted per type); per type, the rows of its stratum
    that are overall units; per segment, the same restricted to the segment."""
    segment = log["segment"].to_numpy(dtype=object)[units["rows"]] if "segment" in log.columns else None
    strata: dict[str, Stratum] = {}
    overall: dict[str, np.ndarray] = {}
    segments: dict[str, dict[str, np.ndarray]] = {}
    for k, offer_type in enumerate(units["types"]):
        mine = np.flatnonzero(units["kind"] == k)
        adjusted = cuped_adjusted(outcomes[mine], treated[mine], x[mine])
        strata[offer_type] = Stratum(treated[mine], outcomes[mine], adjusted, cost[mine])
        first = units["first_overall"][mine]
        overall[offer_type] = np.flatnonzero(first)
        if segment is not None:
            for g in np.unique(segment[mine][first]):
                segments.setdefault(str(g), {})[offer_type] = np.flatnonzero(first & (segment[mine] == g))
    return strata, overall, dict(sorted(segments.items()))


def _combined(strata: dict[str, Stratum], rows: dict[str, np.ndarray]) -> dict[str, Any]:
    """The stratified entry over the offer types of ``rows`` (type -> rows of that type's stratum)."""
    parts = [strata[t].subset(r) for t, r in rows.items() if len(r)]
    return _entry(parts, [len(p.treated) for p in parts])


def _entry(parts: list[Stratum], weights: list[float]) -> dict[str, Any]:
    """The reported fields of a stratified combination of ``parts`` (one part: that stratum alone)."""
    counts = [p.counts for p in parts]
    n_t, n_c = sum(c[0] for c in counts), sum(c[1] for c in counts)
    usable = [min(c) >= 2 for c in counts]
    w = [wi if ok else 0.0 for wi, ok in zip(weights, usable, strict=True)]
    plain = [stratified([difference(p.plain[:, j], p.treated) for p in parts], w) for j in range(3)]
    adj = [stratified([difference(p.adjusted[:, j], p.treated) for p in parts], w) for j in range(3)]
    rates = _rates(parts, weights, usable)
    cost_t = sum(float(p.cost[p.treated].sum()) for p in parts)
    out = {
        "treatment": n_t, "control": n_c, "response_treatment": json_float(rates[0]),
        "response_control": json_float(rates[1]),
        "uplift": json_float(adj[0].estimate), "uplift_ci95": _interval(adj[0]), "uplift_se": json_float(adj[0].se),
        "uplift_plain": json_float(plain[0].estimate), "uplift_plain_ci95": _interval(plain[0]),
        "ci_width_ratio": json_float(adj[0].se / plain[0].se if plain[0].se > 0 else float("nan")),
        "incremental_revenue_per_customer": json_float(adj[1].estimate),
        "incremental_revenue_ci95": _interval(adj[1]),
        "incremental_revenue_plain": json_float(plain[1].estimate),
        "incremental_margin_per_customer": json_float(adj[2].estimate),
        "incremental_margin_ci95": _interval(adj[2]),
        "mean_discount_cost_treatment": json_float(cost_t / n_t if n_t else float("nan")),
        "mde": json_float(mde(adj[0].se)),
        "verdict": verdict(adj[0].ci95) if np.isfinite(adj[0].se) else NO_EFFECT,
    }
    note = _note(counts, usable)
    if note:
        out["note"] = note
    return out


def _rates(parts: list[Stratum], weights: list[float], usable: list[bool]) -> tuple[float, float]:
    """Response rates of treatment and control: the group means for one part, else stratified means."""
    if len(parts) == 1:
        d = difference(parts[0].plain[:, 0], parts[0].treated)
        return d.mean_treatment, d.mean_control
    d = stratified([difference(p.plain[:, 0], p.treated) for p in parts],
                   [w if ok else 0.0 for w, ok in zip(weights, usable, strict=True)])
    return d.mean_treatment, d.mean_control


def _interval(d: Difference) -> list[float | None] | None:
    if not (np.isfinite(d.estimate) and np.isfinite(d.se)):
        return None
    lo, hi = d.ci95
    return [json_float(lo), json_float(hi)]


def _note(counts: list[tuple[int, int]], usable: list[bool]) -> str:
    if all(usable):
        return ""
    if len(counts) == 1:
        n_t, n_c = counts[0]
        return "no control group (all treated)" if n_c == 0 else \
            f"too few customers to compare ({n_t} treatment, {n_c} control; at least 2 each)"
    left = sum(1 for ok in usable if not ok)
    return f"{left} offer type(s) without 2+ customers in each group left out of the stratified estimate"


def _variance_reduction(result: dict[str, Any], names: list[str]) -> dict[str, Any]:
    ratios = [e["ci_width_ratio"] for e in result["by_offer"] if e["ci_width_ratio"] is not None]
    return {
        "method": "CUPED: pooled OLS theta per offer type and outcome on centred pre-decision covariates"
        if names else "none",
        "covariates": names,
        "median_ci_width_ratio": json_float(float(np.median(ratios))) if ratios else None,
    }
