"""Per-customer features of the CLV ranker (:class:`rebuy.models.ranker.CLVRanker`).

Layout: :func:`ranker_features` validates at the boundary and maps the transaction lines onto the
rows of the RFM summary (:func:`_lines`, reusing the summary's own validation and day table from
:mod:`rebuy.features`); each feature group is then one function of plain arrays returning
``{name: float64 array}``:

- :func:`_summary_block`: RFM summary (days, counts, currency) and spend rates;
- :func:`_prediction_block`: the probabilistic models' columns and their expected spend;
- :func:`_window_block`: spend and purchase days in the last 30 / 90 / 180 / 365 days;
- :func:`_day_block`: per purchase day (order size, first/last/largest day, gap regularity);
- :func:`_line_block`: per line and order (lines per order, unit prices, return rate);
- :func:`_product_block`: product mix (distinct products, top-product share, repeat products) -
  only when ``product_id`` is present.

Every feature is computed from the customer's own lines alone, so a customer scored alone
(``Scorer.score_customer``, a Spark partition) gets exactly the features of the nightly batch
(product popularity and home-country features, computed across the scored customers, were dropped
for that reason).

Invariants: one row per customer of ``summary``, same index and order; float64 columns, finite
except the optional groups' columns, which are NaN when their input column is absent, and
``gap_cv``, NaN below three purchase days (the gradient-boosted model treats NaN as "missing"); days are calendar days (:mod:`rebuy.dates`),
money in the transactions' currency; every window ends at ``as_of`` (inclusive). Features are
relative (shares, rates, windows ending at ``as_of``) wherever possible, so that a model trained
on features as of an earlier date sees the same distributions when it scores at ``as_of``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from rebuy.data.values import arrow_strings
from rebuy.dates import day_number, unit_days
from rebuy.errors import FeatureError
from rebuy.features import _day_table, _validated_columns
from rebuy.models.inputs import summary_arrays, summary_time_unit

__all__ = ["PREDICTION_COLUMNS", "WINDOWS_DAYS", "ranker_features"]

PREDICTION_COLUMNS = ("p_alive", "expected_purchases_90d", "expected_purchases_365d", "expected_order_value")
"""Columns of the probabilistic models every ranker input needs (counts, currency)."""

WINDOWS_DAYS = (30, 90, 180, 365)
"""Recent windows (days, ending at as_of) of the spend and purchase-day features."""

_SUMMARY_INPUTS = ("frequency", "recency", "T", "monetary_value", "purchase_days", "total_spend")
_EPS = 1e-9


@dataclass(frozen=True)
class _Lines:
    """Transaction lines on or before as_of of customers in the summary, in input order."""

    row: np.ndarray  # int64 summary row of each line
    day: np.ndarray  # int64 day number
    amount: np.ndarray  # float64 currency (after netted returns)
    keep: np.ndarray  # bool mask of these lines in the input frame
    n: int  # customers (summary rows)
    as_of_day: np.int64
    day_row: np.ndarray  # per purchase day (sorted by row, then day): summary row,
    day_num: np.ndarray  # day number
    day_spend: np.ndarray  # and spend (currency)


def ranker_features(
    transactions: pd.DataFrame, summary: pd.DataFrame, predictions: pd.DataFrame, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Ranker features, one row per customer of ``summary`` (same index, same order).

    Parameters
    ----------
    transactions : cleaned canonical lines (``customer_id``, ``timestamp``, ``amount``; optional
        ``order_id``, ``quantity``, ``price``, ``product_id``, ``country``); lines after ``as_of``
        are ignored.
    summary : :func:`rebuy.features.rfm_summary` of those transactions as of ``as_of``.
    predictions : indexed like ``summary`` (any order), with :data:`PREDICTION_COLUMNS`.
    as_of : the features' date (its whole day counts).

    Raises :class:`~rebuy.errors.FeatureError` naming the missing column or customers.
    """
    arrays = summary_arrays(summary, _SUMMARY_INPUTS, "ranker_features", FeatureError)
    preds = _aligned_predictions(predictions, summary.index)
    as_of_day = day_number(as_of, "as_of", FeatureError)
    lines = _lines(transactions, summary.index, as_of_day)
    cols = _summary_block(*arrays, unit_days(summary_time_unit(summary)))
    cols |= _prediction_block(preds)
    cols |= _window_block(lines)
    cols |= _day_block(lines)
    kept = transactions.loc[lines.keep] if not lines.keep.all() else transactions
    cols |= _line_block(lines, kept)
    cols |= _product_block(lines, kept["product_id"] if "product_id" in kept.columns else None)
    values = np.empty((len(summary), len(cols)), order="F")  # pandas' block layout: no copy
    for j, v in enumerate(cols.values()):
        values[:, j] = v
    return pd.DataFrame(values, index=summary.index, columns=list(cols), copy=False)


def _aligned_predictions(predictions: pd.DataFrame, index: pd.Index) -> np.ndarray:
    """:data:`PREDICTION_COLUMNS` of ``predictions`` in the order of ``index`` (n x 4 float64)."""
    if not isinstance(predictions, pd.DataFrame):
        raise FeatureError(f"ranker_features: predictions must be a DataFrame, got {type(predictions).__name__}")
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise FeatureError(f"ranker_features: predictions are missing column(s) {missing}")
    if not predictions.index.equals(index):
        absent = index.difference(predictions.index)
        if len(absent):
            raise FeatureError(f"ranker_features: no predictions for {len(absent)} customer(s), e.g. {absent[0]!r}")
        predictions = predictions.reindex(index)
    out = predictions[list(PREDICTION_COLUMNS)].to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(out).all():
        raise FeatureError("ranker_features: predictions contain missing or infinite values")
    return out


def _lines(transactions: pd.DataFrame, index: pd.Index, as_of_day: np.int64) -> _Lines:
    """The lines of ``index``'s customers up to ``as_of_day``, mapped to summary rows."""
    (codes, labels), days, amount = _validated_columns(transactions, "ranker_features")
    row_of_label = index.get_indexer(pd.Index(labels))
    row = row_of_label[codes] if len(codes) else codes
    keep = (row >= 0) & (days <= as_of_day)
    if not keep.all():
        row, days, amount = row[keep], days[keep], amount[keep]
    row = row.astype(np.int64)
    _, day_row, day_num, day_spend = _day_table((row, np.arange(len(index))), days, amount)
    return _Lines(row=row, day=days, amount=amount, keep=keep, n=len(index), as_of_day=as_of_day,
                  day_row=day_row, day_num=day_num, day_spend=day_spend)


def _sum(lines: _Lines, weights: np.ndarray | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-customer sum of ``weights`` (count of lines when None) over the lines in ``mask``."""
    row = lines.row if mask is None else lines.row[mask]
    w = None if weights is None else (weights if mask is None else weights[mask])
    return np.bincount(row, weights=w, minlength=lines.n).astype(np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0."""
    return np.divide(num, den, out=np.zeros(len(num)), where=np.abs(den) > _EPS)


def _summary_block(
    frequency: np.ndarray, recency: np.ndarray, T: np.ndarray, monetary: np.ndarray,
    purchase_days: np.ndarray, total: np.ndarray, unit: float,
) -> dict[str, np.ndarray]:
    """RFM summary in days and currency, plus spend and purchase rates (per 365 days of tenure,
    with 30 days added to the tenure so that new customers are not extrapolated from one day)."""
    tenure = T * unit
    years = (tenure + 30.0) / 365.0
    return {
        "frequency": frequency,
        "purchase_days": purchase_days,
        "recency_days": recency * unit,
        "tenure_days": tenure,
        "days_since_last": (T - recency) * unit,
        "total_spend": total,
        "monetary_value": monetary,
        "spend_per_purchase_day": _ratio(total, purchase_days),
        "spend_per_year": total / years,
        "purchase_days_per_year": purchase_days / years,
        "mean_gap_days": _ratio(recency * unit, frequency),
    }


def _prediction_block(preds: np.ndarray) -> dict[str, np.ndarray]:
    """The probabilistic models' predictions and the expected spend they imply (currency)."""
    p_alive, e90, e365, eov = preds.T
    return {
        "p_alive": p_alive,
        "expected_purchases_90d": e90,
        "expected_purchases_365d": e365,
        "expected_order_value": eov,
        "expected_spend_90d": e90 * eov,
        "expected_spend_365d": e365 * eov,
    }


def _window_block(lines: _Lines) -> dict[str, np.ndarray]:
    """Spend (currency) and purchase days in each of :data:`WINDOWS_DAYS` ending at as_of, and the
    share of all spend in each window (the spend trend)."""
    row, spend = lines.day_row, lines.day_spend
    total = np.bincount(row, weights=spend, minlength=lines.n)
    age = lines.as_of_day - lines.day_num
    out: dict[str, np.ndarray] = {}
    for w in WINDOWS_DAYS:
        inside = age < w
        window = np.bincount(row[inside], weights=spend[inside], minlength=lines.n)
        out[f"spend_{w}d"] = window
        out[f"spend_share_{w}d"] = _ratio(window, total)
        out[f"purchase_days_{w}d"] = np.bincount(row[inside], minlength=lines.n).astype(np.float64)
    return out


def _day_block(lines: _Lines) -> dict[str, np.ndarray]:
    """Per purchase day: first, last and largest day's spend (currency), spread of day spends and
    regularity of the gaps between purchase days (coefficient of variation, longest gap in days)."""
    n, day_row, day_num, day_spend = lines.n, lines.day_row, lines.day_num, lines.day_spend
    out = {k: np.zeros(n) for k in ("first_day_spend", "last_day_spend", "max_day_spend", "day_spend_cv",
                                   "gap_cv", "max_gap_days")}
    if len(day_row) == 0:
        return out
    starts = np.flatnonzero(np.r_[True, day_row[1:] != day_row[:-1]])
    ends = np.r_[starts[1:], len(day_row)] - 1
    who = day_row[starts]
    out["first_day_spend"][who] = day_spend[starts]
    out["last_day_spend"][who] = day_spend[ends]
    out["max_day_spend"][who] = np.maximum.reduceat(day_spend, starts)
    count = np.bincount(day_row, minlength=n).astype(np.float64)
    mean = _ratio(np.bincount(day_row, weights=day_spend, minlength=n), count)
    sq = _ratio(np.bincount(day_row, weights=day_spend**2, minlength=n), count)
    out["day_spend_cv"] = _ratio(np.sqrt(np.maximum(sq - mean**2, 0.0)), mean)
    same = day_row[1:] == day_row[:-1]
    gap, gap_row = (day_num[1:] - day_num[:-1])[same].astype(np.float64), day_row[1:][same]
    n_gap = np.bincount(gap_row, minlength=n).astype(np.float64)
    g_mean = _ratio(np.bincount(gap_row, weights=gap, minlength=n), n_gap)
    g_sq = _ratio(np.bincount(gap_row, weights=gap**2, minlength=n), n_gap)
    out["gap_cv"] = np.where(n_gap >= 2, _ratio(np.sqrt(np.maximum(g_sq - g_mean**2, 0.0)), g_mean), np.nan)
    max_gap = np.zeros(n)
    np.maximum.at(max_gap, gap_row, gap)
    out["max_gap_days"] = max_gap
    return out


def _codes(values: pd.Series) -> np.ndarray:
    """int64 codes of a column's values (equal values, equal codes; missing values one code)."""
    arr = arrow_strings(values)
    if arr is not None:  # Arrow's dictionary encoding is several times faster than pandas' hashing
        enc = pc.dictionary_encode(arr, null_encoding="encode").combine_chunks()
        return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return pd.factorize(values, use_na_sentinel=False)[0].astype(np.int64)


def _changed(values: pd.Series) -> np.ndarray:
    """True where a value differs from the previous line's (n - 1 entries)."""
    arr = arrow_strings(values)
    if arr is not None:
        return pc.fill_null(pc.not_equal(arr.slice(1), arr.slice(0, len(arr) - 1)), True).to_numpy(
            zero_copy_only=False
        )
    codes = _codes(values)
    return codes[1:] != codes[:-1]


def _run_heads(lines: _Lines, key: pd.Series | None) -> np.ndarray:
    """True where a line starts a new (customer, key) run; lines of one order are adjacent in
    canonical transactions (sorted by customer then time). ``key`` None: (customer, day)."""
    if len(lines.row) == 0:
        return np.zeros(0, dtype=bool)
    other = lines.day[1:] != lines.day[:-1] if key is None else _changed(key)
    return np.r_[True, (lines.row[1:] != lines.row[:-1]) | other]


def _line_block(lines: _Lines, kept: pd.DataFrame) -> dict[str, np.ndarray]:
    """Orders (``order_id`` runs, else purchase days), lines per order, mean line value and unit
    price (currency), and the return rate: 1 - amount / (quantity x price), the share of the
    purchased value that was returned (returns are netted into ``amount``); NaN without prices."""
    orders = _sum(lines, None, _run_heads(lines, kept["order_id"] if "order_id" in kept.columns else None))
    n_lines = _sum(lines)
    total = _sum(lines, lines.amount)
    out = {
        "orders": orders,
        "lines_per_order": _ratio(n_lines, orders),
        "spend_per_order": _ratio(total, orders),
        "mean_line_value": _ratio(total, n_lines),
        "mean_unit_price": np.full(lines.n, np.nan),
        "return_rate": np.full(lines.n, np.nan),
    }
    if {"quantity", "price"} <= set(kept.columns):
        qty = kept["quantity"].to_numpy(dtype=np.float64, na_value=0.0)
        price = kept["price"].to_numpy(dtype=np.float64, na_value=0.0)
        gross = _sum(lines, qty * price)
        out["mean_unit_price"] = _ratio(gross, _sum(lines, qty))
        out["return_rate"] = np.clip(1.0 - _ratio(total, gross), 0.0, 1.0)
    return out


def _distinct(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(key, return_inverse=True)`` by a stable argsort, which is several times faster
    on keys that are nearly sorted already (customer-major keys of canonical lines)."""
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    head = np.r_[True, ordered[1:] != ordered[:-1]]
    inverse = np.empty(len(key), dtype=np.int64)
    inverse[order] = np.cumsum(head) - 1
    return ordered[head], inverse


def _product_block(lines: _Lines, product: pd.Series | None) -> dict[str, np.ndarray]:
    """Distinct products, share of spend on the top product and on products bought in more than
    one line. NaN without ``product_id``. Only the customer's own lines count: a feature computed
    across the scored customers (e.g. product popularity) would give a customer scored alone a
    different value than in the nightly batch."""
    names = ("distinct_products", "top_product_share", "repeat_product_share")
    if product is None or len(lines.row) == 0:
        return {k: np.full(lines.n, np.nan) for k in names}
    prod = _codes(product)
    n_prod = int(prod.max()) + 1
    pair, inverse = _distinct(lines.row * n_prod + prod)
    pair_row = pair // n_prod
    pair_spend = np.bincount(inverse, weights=lines.amount, minlength=len(pair))
    pair_lines = np.bincount(inverse, minlength=len(pair))
    total = _sum(lines, lines.amount)
    top = np.zeros(lines.n)
    np.maximum.at(top, pair_row, pair_spend)
    repeat = np.bincount(pair_row, weights=np.where(pair_lines > 1, pair_spend, 0.0), minlength=lines.n)
    return {
        "distinct_products": np.bincount(pair_row, minlength=lines.n).astype(np.float64),
        "top_product_share": _ratio(top, total),
        "repeat_product_share": _ratio(repeat, total),
    }
