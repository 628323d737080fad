"""Per-decision outcomes and pre-decision covariates from the transactions, fully vectorised.

For a decision of customer ``c`` on day ``d`` (``decided_at``, midnight) and a window of ``w`` days:

- outcomes over ``[d, d + w)``: ``purchased`` (1.0 when at least one transaction line, else 0.0) and
  ``revenue`` (net spend, the sum of ``amount``, currency);
- covariates, all strictly before ``d`` (known when the decision was made): ``purchased_before``
  (a line in ``[d - w, d)``), ``revenue_before`` (spend in ``[d - w, d)``), ``spend_365d`` (spend in
  ``[d - 365, d)``) and ``days_since_last`` (days from the last purchase day before ``d`` to ``d``,
  capped at :data:`DAYS_SINCE_CAP`; customers without one get the cap).

Method: customers become integer codes, each line the int64 key ``code * span + day``; the keys are
sorted once with the cumulative sum of ``amount``, and every window is two ``np.searchsorted``
calls (line counts) plus two look-ups in the cumulative sum (spend). No per-customer Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rebuy.dates import day_numbers, naive_utc
from rebuy.errors import DataError

DAYS_SINCE_CAP = 730
"""Cap of ``days_since_last`` (days); also the value for customers without an earlier purchase."""

YEAR_DAYS = 365
"""Look-back of ``spend_365d`` (days)."""

TRANSACTION_COLUMNS = ("customer_id", "timestamp", "amount")
"""Columns of the canonical transactions (``rebuy.data.load_transactions``) measurement reads."""

HISTORY_COVARIATES = ("purchased_before", "revenue_before", "spend_365d", "days_since_last")
"""Names of the covariates computed from the transactions (see the module docstring)."""


@dataclass(frozen=True)
class LineIndex:
    """The transaction lines as sorted ``code * span + day`` keys with the running sum of amounts."""

    ids: pd.Index  # distinct customer ids, position = code
    keys: np.ndarray  # sorted int64 keys
    spend: np.ndarray  # cumulative amount, spend[0] = 0, len(keys) + 1 values
    base: int  # day number of day offset 0
    span: int  # days per customer code

    def key(self, code: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Keys of (code, day) queries, days clipped to the customer's key range."""
        return code * self.span + np.clip(day - self.base, 0, self.span - 1)

    def window(self, code: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lines, spend) of each customer in the days ``[start, end)``; customers coded -1 have none."""
        lo = np.searchsorted(self.keys, self.key(code, start), side="left")
        hi = np.searchsorted(self.keys, self.key(code, end), side="left")
        hi = np.where(code < 0, lo, hi)
        return hi - lo, self.spend[hi] - self.spend[lo]


def line_index(transactions: pd.DataFrame, first_day: int, last_day: int, source: str = "transactions") -> LineIndex:
    """Index the lines of ``transactions`` for windows between day numbers ``first_day`` and ``last_day``."""
    missing = [c for c in TRANSACTION_COLUMNS if c not in transactions.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; need {list(TRANSACTION_COLUMNS)}")
    ts = transactions["timestamp"]
    if not pd.api.types.is_datetime64_any_dtype(ts):
        raise DataError(f"{source}: column 'timestamp' must be datetime64, got {ts.dtype} (use rebuy.data.load_transactions)")
    codes, ids = pd.factorize(transactions["customer_id"], sort=False)
    day = day_numbers(naive_utc(ts))
    amount = transactions["amount"].to_numpy(dtype=np.float64, na_value=0.0)
    base = min(first_day, int(day.min()) if len(day) else first_day) - 1
    span = max(last_day, int(day.max()) if len(day) else last_day) - base + 2
    keys = codes.astype(np.int64) * span + (day - base)
    order = np.argsort(keys, kind="stable")
    spend = np.concatenate([[0.0], np.cumsum(amount[order])])
    return LineIndex(pd.Index(ids), keys[order], spend, base, span)


def window_outcomes(index: LineIndex, customer_ids: pd.array, decided_day: np.ndarray,
                    window_days: int) -> dict[str, np.ndarray]:
    """Outcomes and history covariates per decision (see the module docstring); float64 arrays.

    The queries are answered in key order (``np.searchsorted`` is several times faster on sorted
    queries) and returned in the order of ``customer_ids``."""
    code = index.ids.get_indexer(customer_ids).astype(np.int64)
    order = np.argsort(index.key(code, decided_day), kind="stable")
    code, day = code[order], decided_day[order]
    lines, revenue = index.window(code, day, day + window_days)
    lines_before, revenue_before = index.window(code, day - window_days, day)
    _, spend_year = index.window(code, day - YEAR_DAYS, day)
    sorted_out = {
        "purchased": (lines > 0).astype(np.float64),
        "revenue": revenue,
        "purchased_before": (lines_before > 0).astype(np.float64),
        "revenue_before": revenue_before,
        "spend_365d": spend_year,
        "days_since_last": _days_since_last(index, code, day),
    }
    out = {}
    for name, values in sorted_out.items():
        out[name] = np.empty_like(values)
        out[name][order] = values
    return out


def _days_since_last(index: LineIndex, code: np.ndarray, decided_day: np.ndarray) -> np.ndarray:
    """Days from each customer's last purchase day before ``decided_day``, capped at DAYS_SINCE_CAP."""
    query = index.key(code, decided_day)
    before = np.searchsorted(index.keys, query, side="left") - 1
    found = (before >= 0) & (code >= 0)
    last = index.keys[np.maximum(before, 0)]
    found &= (last // index.span) == code
    days = np.where(found, query - last, DAYS_SINCE_CAP)
    return np.minimum(days, DAYS_SINCE_CAP).astype(np.float64)
