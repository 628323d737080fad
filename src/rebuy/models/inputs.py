"""Model inputs: an RFM summary's columns as validated float arrays, and their distinct rows.

Every model validates its input here, once, at the public boundary (``fit``, ``score_value``,
``customer_lifetime_value``); everything below that boundary takes plain float64 arrays and does
not re-check them. Invariants of what these functions return:

- arrays are float64, one-dimensional, finite (a NaN or inf is a user error, never passed on);
- :func:`distinct_rows` returns the distinct rows sorted lexicographically by column (the BG/NBD
  objective relies on the rows being sorted by frequency), their counts and the inverse index, so
  ``cols[i][inverse]`` rebuilds the input;
- weights are per-customer counts (dimensionless), finite and > 0.

Errors are raised as the caller's ``error`` class (``ModelFitError`` when fitting, ``FeatureError``
when scoring) with a one-line message naming the function (``who``) and the column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rebuy.dates import unit_days
from rebuy.errors import InvalidParameterError, ModelFitError, RebuyError

FRT_COLUMNS = ("frequency", "recency", "T")
"""Columns every purchase model reads (repeat purchase count, time of last repeat purchase, age)."""

SPEND_COLUMNS = ("frequency", "monetary_value")
"""Columns every spend model reads (repeat purchase count, mean spend per repeat purchase)."""


def float_array(x: Any, name: str, error: type[RebuyError] = ModelFitError) -> np.ndarray:
    """``x`` as a float64 array; ``error`` when it holds a missing or infinite value."""
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise error(f"{name}: contains missing or infinite values")
    return arr


def summary_arrays(
    summary: pd.DataFrame, columns: tuple[str, ...], who: str, error: type[RebuyError] = ModelFitError
) -> list[np.ndarray]:
    """The given columns of an RFM summary as finite float64 arrays (one per column)."""
    if not isinstance(summary, pd.DataFrame):
        raise error(f"{who}: expected an RFM summary DataFrame, got {type(summary).__name__}")
    missing = [c for c in columns if c not in summary.columns]
    if missing:
        raise error(f"{who}: summary is missing column(s) {missing} (use rebuy.features.rfm_summary)")
    if len(summary) == 0:
        raise error(f"{who}: summary has no customers")
    return [
        float_array(summary[c].to_numpy(dtype=np.float64, na_value=np.nan), f"{who}: column {c!r}", error)
        for c in columns
    ]


def check_frt(
    frequency: np.ndarray, recency: np.ndarray, T: np.ndarray, who: str, error: type[RebuyError] = ModelFitError
) -> None:
    """Raise ``error`` unless frequency is a whole number >= 0, 0 <= recency <= T, and recency is 0
    for customers with no repeat purchase (time in the summary's unit)."""
    if (frequency < 0).any() or (np.abs(frequency - np.round(frequency)) > 1e-9).any():
        raise error(f"{who}: column 'frequency' must hold non-negative whole numbers")
    if (recency < 0).any():
        raise error(f"{who}: column 'recency' has negative values")
    if (recency > T + 1e-9).any():
        raise error(f"{who}: column 'recency' exceeds 'T' for {int((recency > T + 1e-9).sum())} customer(s)")
    if ((frequency == 0) & (recency > 0)).any():
        raise error(f"{who}: customers with frequency 0 must have recency 0")


def check_sample_weight(sample_weight: Any, n: int, who: str) -> np.ndarray | None:
    """Validated per-row weights (customers each row stands for: finite, > 0, one per row), or None."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64).ravel()
    if len(w) != n:
        raise ModelFitError(f"{who}: sample_weight has {len(w)} values for {n} rows")
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise ModelFitError(f"{who}: sample_weight must be finite and > 0")
    return w


def summary_time_unit(summary: pd.DataFrame, default: str | None = None) -> str:
    """The summary's time unit (``summary.attrs["time_unit"]``, else ``default``, else weeks), checked."""
    unit = summary.attrs.get("time_unit", default)
    if unit is None:
        unit = "weeks"
    unit_days(unit)
    return unit


def distinct_rows(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Distinct rows of the given equal-length columns, sorted lexicographically:
    (columns of the distinct rows, their counts, inverse index from each input row).

    Hash-based (``pd.factorize``): each column is coded by its sorted distinct values and the codes
    are combined into one integer key, so no sort of the full input is needed."""
    cols = tuple(np.asarray(c, dtype=np.float64).ravel() for c in cols)
    n = len(cols[0])
    if n == 0:
        return [c[:0] for c in cols], np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    key = None
    for c in cols:
        codes, uniq = pd.factorize(c, sort=True)
        codes = codes.astype(np.int64, copy=False)
        if key is None:
            key, n_keys = codes, len(uniq)
        else:
            if n_keys * len(uniq) >= 2**62:  # keep the combined key in int64: recode it first
                key, ukey = pd.factorize(key, sort=True)
                key, n_keys = key.astype(np.int64, copy=False), len(ukey)
            key = key * len(uniq) + codes
            n_keys *= len(uniq)
    inverse, ukey = pd.factorize(key, sort=True)
    inverse = inverse.astype(np.int64, copy=False)
    counts = np.bincount(inverse, minlength=len(ukey))
    first = np.empty(len(ukey), dtype=np.int64)
    first[inverse[::-1]] = np.arange(n - 1, -1, -1)
    return [c[first] for c in cols], counts, inverse


def weighted_distinct_rows(
    cols: tuple[np.ndarray, ...], weights: np.ndarray | None
) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of ``cols`` and the customers each stands for (float64): the row counts, or the
    sums of ``weights`` when given. Fitting on these is the same maximum-likelihood problem as
    fitting one row per customer."""
    rows, counts, inverse = distinct_rows(*cols)
    if weights is not None:
        return rows, np.bincount(inverse, weights=weights, minlength=len(rows[0]))
    return rows, counts.astype(np.float64)


def row_arrays(*values: Any) -> list[np.ndarray]:
    """Prediction inputs broadcast to one shape as float64 arrays (no validation: a prediction of
    NaN input is NaN)."""
    return list(np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values)))


def whole_number(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int; InvalidParameterError (naming ``name``) unless it is a whole number >= ``minimum``."""
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidParameterError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)
