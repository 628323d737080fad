"""Retention and revenue KPIs on the cleaned canonical transactions.

Every function takes the frame :func:`rebuy.data.load_transactions` returns (columns ``customer_id``,
``order_id``, ``timestamp``, ``amount``; one row per purchase line, returns already netted) and is
vectorised, so a million customers cost seconds, not minutes.

Conventions used throughout
---------------------------
* **Periods are half-open**: ``[period_start, period_end)``. A calendar year 2011 is
  ``period_start="2011-01-01", period_end="2012-01-01"``. Dates may be strings, ``datetime.date``
  or ``pandas.Timestamp``; they are read by :func:`rebuy.dates.to_timestamp` (time-zone-aware
  values converted to UTC; a bad date is a one-line :class:`KPIInputError` naming the argument).
  :func:`kpi_summary`'s ``as_of`` is a day and includes its whole day, as everywhere in rebuy.
* **An order** is one distinct ``(customer_id, order_id)`` pair (``order_id`` falls back to the
  purchase timestamp when the column is absent); its value is the sum of its lines' ``amount``.
  ``orders`` here always counts order ids, never purchase days (the RFM summary of
  :mod:`rebuy.features` counts those, as ``purchase_days``).
* **Customers at a date** ("the customer base at date *d*") are the *active* customers: those with
  at least one purchase in the ``active_window_days`` before *d*, i.e. in ``[d - window, d)``. This is
  the usual reading for non-contractual retail, where nobody cancels and a customer who has not
  bought for a year is no longer counted as a customer. A cumulative base ("everyone who ever
  bought") would make the retention rate 100 % by construction, so it is not used. The default
  window is 365 days; with a window equal to the period length, "customers at period end" are exactly
  the customers who bought during the period.
* **New customers acquired in a period** are those whose first purchase in the data falls in it.
* Money is in the transactions' currency. Rates are shares in [0, 1] (multiply by 100 for per cent),
  except the cohort *percentages* matrix, which is in per cent.
* Outputs never hold NaN or inf: a ratio with an empty denominator raises :class:`KPIInputError`
  naming what is empty (or, in tables, the row is left out and the docstring says so).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rebuy.dates import cutoff_after, resolve_as_of, to_timestamp
from rebuy.errors import KPIInputError

logger = logging.getLogger(__name__)

DateLike = str | dt.date | dt.datetime | pd.Timestamp
DEFAULT_ACTIVE_WINDOW_DAYS = 365

__all__ = [
    "KPIInputError",
    "customers_at",
    "retention_counts",
    "customer_retention_rate",
    "repeat_purchase_rate",
    "churn_rate",
    "monthly_retention",
    "purchase_frequency",
    "average_order_value",
    "revenue_per_customer",
    "repeat_revenue_share",
    "cohort_retention",
    "period_coverage",
    "channel_metrics",
    "funnel",
    "kpi_summary",
]


# --------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------


def _check_transactions(transactions: pd.DataFrame, *, need_amount: bool = False) -> None:
    if not isinstance(transactions, pd.DataFrame):
        raise KPIInputError(f"transactions: expected a pandas DataFrame, got {type(transactions).__name__}")
    required = ["customer_id", "timestamp"] + (["amount"] if need_amount else [])
    missing = [c for c in required if c not in transactions.columns]
    if missing:
        raise KPIInputError(
            f"transactions: missing required column(s) {missing}; have {list(transactions.columns)}"
        )
    if not pd.api.types.is_datetime64_any_dtype(transactions["timestamp"]):
        raise KPIInputError(
            f"transactions: column 'timestamp' must be datetime64, got {transactions['timestamp'].dtype}"
        )
    if need_amount:
        if not pd.api.types.is_numeric_dtype(transactions["amount"]):
            raise KPIInputError(f"transactions: column 'amount' must be numeric, got {transactions['amount'].dtype}")
        bad = ~np.isfinite(transactions["amount"].to_numpy(dtype="float64", na_value=np.nan))
        if bad.any():
            raise KPIInputError(f"transactions: column 'amount' has {int(bad.sum())} NaN/inf value(s)")
    if transactions["customer_id"].isna().any():
        raise KPIInputError(
            f"transactions: column 'customer_id' has {int(transactions['customer_id'].isna().sum())} missing value(s)"
        )
    if transactions["timestamp"].isna().any():
        raise KPIInputError(
            f"transactions: column 'timestamp' has {int(transactions['timestamp'].isna().sum())} missing value(s)"
        )
    if len(transactions) == 0:
        raise KPIInputError("transactions: the frame is empty")


def _period(period_start: DateLike, period_end: DateLike) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = to_timestamp(period_start, "period_start", KPIInputError)
    end = to_timestamp(period_end, "period_end", KPIInputError)
    if end <= start:
        raise KPIInputError(f"period_end {end.date()} must be after period_start {start.date()}")
    return start, end


def _window(active_window_days: float) -> pd.Timedelta:
    if not np.isfinite(active_window_days) or active_window_days <= 0:
        raise KPIInputError(f"active_window_days must be a positive number of days, got {active_window_days!r}")
    return pd.Timedelta(days=float(active_window_days))


@dataclass(frozen=True)
class _Coded:
    """Transactions as integer codes, so set operations and group-bys run on numpy arrays."""

    cust: np.ndarray  # int64 customer code per line
    ids: pd.Index  # customer id by code
    ts: np.ndarray  # datetime64[ns] per line
    amount: np.ndarray | None  # float64 per line
    order_cust: np.ndarray  # customer code per order
    order_ts: np.ndarray  # datetime64[ns] per order (its first line)
    order_amount: np.ndarray | None  # float64 per order (sum of its lines)

    @property
    def n_customers(self) -> int:
        return len(self.ids)

    def active(self, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> np.ndarray:
        """Boolean per customer code: at least one purchase in ``[lo, hi)``."""
        out = np.zeros(self.n_customers, dtype=bool)
        out[self.cust[_between(self.ts, lo, hi)]] = True
        return out

    def first_purchase(self) -> np.ndarray:
        first = np.full(self.n_customers, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, self.order_cust, self.order_ts.view(np.int64))
        return first.view("datetime64[ns]")


def _between(ts: np.ndarray, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> np.ndarray:
    mask = np.ones(len(ts), dtype=bool)
    if lo is not None:
        mask &= ts >= lo.to_datetime64()
    if hi is not None:
        mask &= ts < hi.to_datetime64()
    return mask


def _code(transactions: pd.DataFrame, *, need_amount: bool = False) -> _Coded:
    """Validate and encode the transactions (customer and order codes, numpy timestamps)."""
    _check_transactions(transactions, need_amount=need_amount)
    cust, ids = pd.factorize(transactions["customer_id"], use_na_sentinel=False)
    cust = cust.astype(np.int64)
    ts = transactions["timestamp"].to_numpy(dtype="datetime64[ns]")
    key_col = transactions["order_id"] if "order_id" in transactions.columns else transactions["timestamp"]
    oc = pd.factorize(key_col, use_na_sentinel=False)[0].astype(np.int64)
    order, _ = pd.factorize(cust * (int(oc.max()) + 1) + oc)
    n_orders = int(order.max()) + 1
    order_cust = np.empty(n_orders, dtype=np.int64)
    order_cust[order] = cust
    order_ts = pd.Series(ts.view(np.int64)).groupby(order).min().to_numpy().view("datetime64[ns]")
    amount = order_amount = None
    if "amount" in transactions.columns and pd.api.types.is_numeric_dtype(transactions["amount"]):
        amount = transactions["amount"].to_numpy(dtype="float64", na_value=np.nan)
        order_amount = np.bincount(order, weights=amount, minlength=n_orders)
    return _Coded(cust, pd.Index(ids, name="customer_id"), ts, amount, order_cust, order_ts, order_amount)


def _period_label(start: pd.Timestamp | None, end: pd.Timestamp | None) -> str:
    s = "the start of the data" if start is None else str(start.date())
    e = "the end of the data" if end is None else str(end.date())
    return f"[{s}, {e})"


# --------------------------------------------------------------------------------------------------
# customer base and retention
# --------------------------------------------------------------------------------------------------


def customers_at(
    transactions: pd.DataFrame, date: DateLike, active_window_days: float = DEFAULT_ACTIVE_WINDOW_DAYS
) -> pd.Index:
    """Customers at ``date``: ids with at least one purchase in ``[date - active_window_days, date)``.

    Purchases on ``date`` itself do not count (the base is measured at the start of that day).
    """
    c = _code(transactions)
    d = to_timestamp(date, "date", KPIInputError)
    return c.ids[c.active(d - _window(active_window_days), d)]


def _retention_counts(
    c: _Coded, start: pd.Timestamp, end: pd.Timestamp, active_window_days: float
) -> dict[str, int]:
    window = _window(active_window_days)
    s_mask = c.active(start - window, start)
    e_mask = c.active(end - window, end)
    first = c.first_purchase()
    new = (first >= start.to_datetime64()) & (first < end.to_datetime64())
    counts = {
        "customers_start": int(s_mask.sum()),
        "customers_end": int(e_mask.sum()),
        "new_customers": int((e_mask & new).sum()),
        "retained": int((e_mask & ~new).sum()),
        "repeat_buyers": int((s_mask & c.active(start, end)).sum()),
        "lost": int((s_mask & ~e_mask).sum()),
    }
    logger.debug("retention counts for %s, window %s: %s", _period_label(start, end), window, counts)
    return counts


def retention_counts(
    transactions: pd.DataFrame,
    period_start: DateLike,
    period_end: DateLike,
    active_window_days: float = DEFAULT_ACTIVE_WINDOW_DAYS,
) -> dict[str, int]:
    """The counts behind the retention KPIs for the period ``[period_start, period_end)``.

    Returns
    -------
    dict with
      ``customers_start`` (S): customers at ``period_start`` (active in the window before it);
      ``customers_end`` (E): customers at ``period_end``;
      ``new_customers`` (N): customers whose first purchase falls in the period and who are in E;
      ``retained`` (E - N): customers at the end who were not acquired in the period;
      ``repeat_buyers``: customers of S who bought at least once in the period;
      ``lost``: customers of S who are not in E.
    """
    start, end = _period(period_start, period_end)
    _window(active_window_days)
    return _retention_counts(_code(transactions), start, end, active_window_days)


def _rate(numerator: float, denominator: float, what: str) -> float:
    if denominator <= 0:
        raise KPIInputError(what)
    return float(numerator) / float(denominator)


def _share_of_start_customers(
    kpi: str, key: str, transactions: pd.DataFrame, period_start: DateLike, period_end: DateLike,
    active_window_days: float,
) -> float:
    """``retention_counts[key]`` / customers at the period start; KPIInputError when there are none."""
    counts = retention_counts(transactions, period_start, period_end, active_window_days)
    start = to_timestamp(period_start, "period_start", KPIInputError)
    return _rate(
        counts[key],
        counts["customers_start"],
        f"{kpi}: no customers active in the {active_window_days:g} days before period_start {start.date()}",
    )


def customer_retention_rate(
    transactions: pd.DataFrame,
    period_start: DateLike,
    period_end: DateLike,
    active_window_days: float = DEFAULT_ACTIVE_WINDOW_DAYS,
) -> float:
    """Customer retention rate (CRR) over ``[period_start, period_end)``, a share in [0, 1].

    CRR = (E - N) / S with S the customers at the period start, E the customers at the period end
    and N the new customers acquired during the period (first purchase in the period); "customers at
    a date" are those who bought in the ``active_window_days`` (default 365) before it (see the module
    docstring). Textbook example: S = 200, E = 180, N = 40 gives (180 - 40) / 200 = 70 %.

    N counts only the new customers who are still in E, so the numerator is the number of end
    customers who were not acquired in the period. This equals the textbook E - N whenever the
    active window is at least as long as the period (then nobody acquired in the period can have
    lapsed yet), and it keeps the rate non-negative otherwise. As in the textbook formula, a
    customer who had lapsed at the start and comes back during the period counts as retained, so
    the rate can exceed the share of S that is in E (``1 - churn_rate``).

    Raises :class:`KPIInputError` when there are no customers at the period start.
    """
    return _share_of_start_customers(
        "customer_retention_rate", "retained", transactions, period_start, period_end, active_window_days
    )


def repeat_purchase_rate(
    transactions: pd.DataFrame,
    period_start: DateLike,
    period_end: DateLike,
    active_window_days: float = DEFAULT_ACTIVE_WINDOW_DAYS,
) -> float:
    """Repeat-purchase rate the way retailers quote it, a share in [0, 1].

    Of the customers active at ``period_start`` (at least one purchase in the ``active_window_days``
    before it), the share who bought again in ``[period_start, period_end)``. Example: 500 customers
    active at the start, 270 of them bought during the period: 270 / 500 = 54 %.
    New customers acquired in the period are not in the denominator.
    """
    return _share_of_start_customers(
        "repeat_purchase_rate", "repeat_buyers", transactions, period_start, period_end, active_window_days
    )


def churn_rate(
    transactions: pd.DataFrame,
    period_start: DateLike,
    period_end: DateLike,
    active_window_days: float = DEFAULT_ACTIVE_WINDOW_DAYS,
) -> float:
    """Churn rate over ``[period_start, period_end)``: customers lost / customers at the start.

    A customer at the start (active in the window before ``period_start``) is *lost* when they are no
    longer a customer at ``period_end`` (no purchase in the window before it). With a window equal to
    the period length this is the share of start customers who did not buy during the period, i.e.
    ``1 - repeat_purchase_rate``. Share in [0, 1].
    """
    return _share_of_start_customers(
        "churn_rate", "lost", transactions, period_start, period_end, active_window_days
    )


def monthly_retention(
    transactions: pd.DataFrame, freq: str = "M", period_end: DateLike | None = None
) -> pd.DataFrame:
    """Retention coefficient per calendar month (or other pandas period ``freq``, e.g. "W", "Q").

    For each month m: ``customers`` bought in m, ``previous_customers`` bought in m - 1,
    ``returning_customers`` bought in both m - 1 and m, and
    ``retention_rate = returning_customers / previous_customers`` (share in [0, 1]).

    Returns a DataFrame indexed by the month (``PeriodIndex`` named "month"), from the second month
    of the data to the last month with a purchase, or, when ``period_end`` is given, to the month
    containing the instant before ``period_end`` (purchases from ``period_end`` on are ignored, and
    trailing months without purchases are kept). The first month of the data and months whose
    previous month had no purchases have no defined rate and are left out. The last month may be
    incomplete, which biases its rate downwards.
    """
    _check_transactions(transactions)
    end = None if period_end is None else to_timestamp(period_end, "period_end", KPIInputError)
    if end is not None:
        transactions = transactions.loc[_between(transactions["timestamp"].to_numpy(), None, end)]
        if transactions.empty:
            raise KPIInputError(f"monthly_retention: no purchases before period_end {end.date()}")
    try:
        per = transactions["timestamp"].dt.to_period(freq)
        last = None if end is None else (end - pd.Timedelta(1, "ns")).to_period(freq).ordinal
    except (ValueError, TypeError):
        raise KPIInputError(f"monthly_retention: {freq!r} is not a pandas period frequency") from None
    codes = pd.factorize(transactions["customer_id"], use_na_sentinel=False)[0].astype(np.int64)
    pairs = pd.DataFrame({"c": codes, "p": per.array.asi8}).drop_duplicates()
    p_min = int(pairs["p"].min())
    p_max = int(pairs["p"].max()) if last is None else max(int(last), int(pairs["p"].max()))
    span = p_max - p_min + 2
    key = pairs["c"].to_numpy() * span + (pairs["p"].to_numpy() - p_min)
    returning = np.isin(key - 1, key)
    per_period = pairs.assign(returning=returning).groupby("p")["returning"].agg(["size", "sum"])
    full = per_period.reindex(np.arange(p_min, p_max + 1), fill_value=0)
    out = pd.DataFrame(
        {
            "customers": full["size"].to_numpy()[1:],
            "previous_customers": full["size"].to_numpy()[:-1],
            "returning_customers": full["sum"].to_numpy()[1:],
        },
        index=pd.PeriodIndex.from_ordinals(full.index.to_numpy()[1:], freq=per.dt.freq, name="month"),
    ).astype("int64")
    out = out[out["previous_customers"] > 0]
    out["retention_rate"] = out["returning_customers"] / out["previous_customers"]
    return out


# --------------------------------------------------------------------------------------------------
# frequency and revenue
# --------------------------------------------------------------------------------------------------


def _period_bounds(
    period_start: DateLike | None, period_end: DateLike | None
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    start = None if period_start is None else to_timestamp(period_start, "period_start", KPIInputError)
    end = None if period_end is None else to_timestamp(period_end, "period_end", KPIInputError)
    if start is not None and end is not None and end <= start:
        raise KPIInputError(f"period_end {end.date()} must be after period_start {start.date()}")
    return start, end


def _order_stats(
    c: _Coded, start: pd.Timestamp | None, end: pd.Timestamp | None, kpi: str
) -> tuple[int, int, float]:
    """(orders, distinct buyers, revenue) in ``[start, end)``; raises when there are no orders."""
    m = _between(c.order_ts, start, end)
    n_orders = int(m.sum())
    if n_orders == 0:
        raise KPIInputError(f"{kpi}: no purchases in the period {_period_label(start, end)}")
    buyers = np.zeros(c.n_customers, dtype=bool)
    buyers[c.order_cust[m]] = True
    assert c.order_amount is not None
    return n_orders, int(buyers.sum()), float(c.order_amount[m].sum())


def purchase_frequency(
    transactions: pd.DataFrame, period_start: DateLike | None = None, period_end: DateLike | None = None
) -> float:
    """Average number of orders per purchasing customer in ``[period_start, period_end)``.

    = distinct orders / distinct customers with at least one order in the period (both bounds
    optional: None means the start / end of the data). Orders per customer, e.g. 1.8.
    """
    start, end = _period_bounds(period_start, period_end)
    n_orders, buyers, _ = _order_stats(_code(transactions, need_amount=True), start, end, "purchase_frequency")
    return n_orders / buyers


def average_order_value(
    transactions: pd.DataFrame, period_start: DateLike | None = None, period_end: DateLike | None = None
) -> float:
    """Average order value (AOV) in currency: revenue / distinct orders in the period."""
    start, end = _period_bounds(period_start, period_end)
    n_orders, _, revenue = _order_stats(_code(transactions, need_amount=True), start, end, "average_order_value")
    return revenue / n_orders


def revenue_per_customer(
    transactions: pd.DataFrame, period_start: DateLike | None = None, period_end: DateLike | None = None
) -> float:
    """Revenue per purchasing customer in currency: revenue / distinct customers who bought in the
    period (= average order value x purchase frequency)."""
    start, end = _period_bounds(period_start, period_end)
    _, buyers, revenue = _order_stats(_code(transactions, need_amount=True), start, end, "revenue_per_customer")
    return revenue / buyers


def _repeat_revenue_share(c: _Coded, start: pd.Timestamp | None, end: pd.Timestamp | None) -> float:
    _order_stats(c, start, end, "repeat_revenue_share")
    assert c.order_amount is not None
    history = _between(c.order_ts, None, end)
    repeaters = np.bincount(c.order_cust[history], minlength=c.n_customers) >= 2
    m = _between(c.order_ts, start, end)
    total = float(c.order_amount[m].sum())
    repeat_rev = float(c.order_amount[m & repeaters[c.order_cust]].sum())
    return _rate(repeat_rev, total, f"repeat_revenue_share: the revenue in {_period_label(start, end)} is zero")


def repeat_revenue_share(
    transactions: pd.DataFrame, period_start: DateLike | None = None, period_end: DateLike | None = None
) -> float:
    """Share of the period's revenue that comes from repeat customers, in [0, 1].

    A repeat customer has placed at least two distinct orders from the start of the data up to
    ``period_end`` (orders before the period count, so a customer whose second order falls in the
    period is a repeat customer for all of their period revenue, including a first order in it).
    Raises :class:`KPIInputError` when the period's revenue is zero.
    """
    start, end = _period_bounds(period_start, period_end)
    return _repeat_revenue_share(_code(transactions, need_amount=True), start, end)


# --------------------------------------------------------------------------------------------------
# cohorts, channels, funnel
# --------------------------------------------------------------------------------------------------


def cohort_retention(transactions: pd.DataFrame, freq: str = "M") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cohort retention matrices by first-purchase period.

    Rows: cohorts, the period (default calendar month, any pandas period ``freq`` such as "W" or
    "Q") of each customer's first purchase (``PeriodIndex`` named "cohort"). Columns: periods since
    the first purchase, 0, 1, 2, ... (named "periods_since_first").

    Returns
    -------
    counts : int64 DataFrame, distinct customers of the cohort who bought in that period (column 0
        is the cohort size).
    percentages : float DataFrame, ``counts`` as per cent of the cohort size (column 0 is 100).

    Cells after the end of the data (the lower-right triangle that cannot be observed yet) hold 0,
    never NaN; :func:`rebuy.plots.plot_cohort_retention` masks them.
    """
    _check_transactions(transactions)
    try:
        per = transactions["timestamp"].dt.to_period(freq)
    except (ValueError, TypeError):
        raise KPIInputError(f"cohort_retention: {freq!r} is not a pandas period frequency") from None
    codes = pd.factorize(transactions["customer_id"], use_na_sentinel=False)[0].astype(np.int64)
    pairs = pd.DataFrame({"c": codes, "p": per.array.asi8}).drop_duplicates()
    cohort = pairs.groupby("c", sort=False)["p"].transform("min")
    pairs["cohort"] = cohort.to_numpy()
    pairs["offset"] = pairs["p"].to_numpy() - pairs["cohort"].to_numpy()
    counts = pairs.groupby(["cohort", "offset"]).size().unstack("offset", fill_value=0)
    counts = counts.reindex(columns=np.arange(int(pairs["offset"].max()) + 1), fill_value=0).astype("int64")
    counts.index = pd.PeriodIndex.from_ordinals(counts.index.to_numpy(), freq=per.dt.freq, name="cohort")
    counts.columns = pd.Index(counts.columns.to_numpy(), name="periods_since_first")
    size = counts[0].to_numpy(dtype="float64")
    percentages = counts.div(size, axis=0) * 100.0
    return counts, percentages


def period_coverage(transactions: pd.DataFrame, freq: str = "M", as_of: DateLike | None = None) -> pd.DataFrame:
    """Which calendar periods the data covers fully: one row per period from the first purchase's to
    the as-of day's (``PeriodIndex`` named "period", default calendar months).

    The data is observed from the first purchase's day to ``as_of`` (a day, included; default the
    last purchase's day). Columns: ``start`` and ``end`` (the period's first day and the day after
    its last, datetime64), ``days`` (its length, days), ``days_observed`` (days of it inside the
    data, 1..days) and ``partial`` (bool: fewer days observed than the period has, i.e. the data
    starts after the period's first day or the as-of day is before its last day). A cohort of a
    partial month holds only part of that month's new customers, and a retention cell in it counts
    only part of the month's buyers.
    """
    _check_transactions(transactions)
    as_of_ts = resolve_as_of(transactions["timestamp"], as_of, "as_of", KPIInputError)
    first = pd.Timestamp(transactions["timestamp"].min()).normalize()
    stop = cutoff_after(as_of_ts)  # the day after as_of, midnight
    if stop <= first:
        raise KPIInputError(f"period_coverage: as_of {as_of_ts.date()} is before the first purchase {first.date()}")
    try:
        periods = pd.period_range(first.to_period(freq), (stop - pd.Timedelta(days=1)).to_period(freq), name="period")
    except (ValueError, TypeError):
        raise KPIInputError(f"period_coverage: {freq!r} is not a pandas period frequency") from None
    start = periods.start_time.normalize()
    end = (periods + 1).start_time.normalize()
    lo = np.maximum(start.to_numpy(), first.to_datetime64())
    hi = np.minimum(end.to_numpy(), stop.to_datetime64())
    days = ((end - start) / pd.Timedelta(days=1)).to_numpy().astype("int64")
    observed = ((hi - lo) / np.timedelta64(1, "D")).astype("int64")
    return pd.DataFrame({"start": start.to_numpy(), "end": end.to_numpy(), "days": days,
                         "days_observed": observed, "partial": observed < days}, index=periods)


def channel_metrics(
    transactions: pd.DataFrame,
    customers: pd.DataFrame,
    clv: pd.Series | None = None,
    by: str = "acquisition_channel",
    unknown_label: str = "unknown",
) -> pd.DataFrame:
    """Repeat-purchase rate, revenue and (optionally) CLV per acquisition channel or campaign.

    Parameters
    ----------
    transactions : canonical cleaned transactions.
    customers : the customers table (``customer_id`` and the ``by`` column, e.g.
        ``acquisition_channel`` or a campaign column).
    clv : optional per-customer lifetime value in currency, a Series indexed by customer_id (e.g.
        the ``clv`` column of the scores).
    by : the customers column to group by.
    unknown_label : group for buyers missing from the customers table or with no value in ``by``.

    Returns
    -------
    DataFrame indexed by the group, sorted by customers (descending), with columns
    ``customers`` (distinct buyers), ``repeat_customers`` (buyers with >= 2 distinct orders),
    ``repeat_purchase_rate`` (repeat_customers / customers, lifetime share in [0, 1]),
    ``orders``, ``revenue`` and ``revenue_per_customer`` (currency); with ``clv`` also
    ``mean_clv`` and ``total_clv`` (currency, over the group's buyers; buyers absent from ``clv``
    count as 0).
    Customers in the table who never bought are not counted.
    """
    _check_transactions(transactions, need_amount=True)
    if not isinstance(customers, pd.DataFrame):
        raise KPIInputError(f"customers: expected a pandas DataFrame, got {type(customers).__name__}")
    for col in ("customer_id", by):
        if col not in customers.columns:
            raise KPIInputError(f"customers: missing column {col!r}; have {list(customers.columns)}")
    dup = customers["customer_id"].duplicated()
    if dup.any():
        raise KPIInputError(f"customers: column 'customer_id' has {int(dup.sum())} duplicated id(s)")
    c = _code(transactions, need_amount=True)
    assert c.order_amount is not None
    ids = c.ids.astype("string")
    per_customer = pd.DataFrame(
        {
            "orders": np.bincount(c.order_cust, minlength=c.n_customers),
            "revenue": np.bincount(c.order_cust, weights=c.order_amount, minlength=c.n_customers),
        }
    )
    group = np.full(c.n_customers, unknown_label, dtype=object)
    pos = ids.get_indexer(customers["customer_id"].astype("string"))
    labels = customers[by].astype("string").fillna(unknown_label).to_numpy(dtype=object)
    group[pos[pos >= 0]] = labels[pos >= 0]
    per_customer["group"] = group
    per_customer["repeat"] = (per_customer["orders"] >= 2).astype("int64")
    if clv is not None:
        if not isinstance(clv, pd.Series):
            raise KPIInputError(f"clv: expected a Series indexed by customer_id, got {type(clv).__name__}")
        values = pd.to_numeric(clv, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        if not np.isfinite(values).all():
            raise KPIInputError("clv: has NaN/inf or non-numeric values")
        if clv.index.has_duplicates:
            raise KPIInputError("clv: the index (customer_id) has duplicated ids")
        clv_pos = ids.get_indexer(clv.index.astype("string"))
        per_customer["clv"] = 0.0
        per_customer.loc[clv_pos[clv_pos >= 0], "clv"] = values[clv_pos >= 0]
    agg: dict[str, Any] = {
        "customers": ("orders", "size"),
        "repeat_customers": ("repeat", "sum"),
        "orders": ("orders", "sum"),
        "revenue": ("revenue", "sum"),
    }
    if clv is not None:
        agg["mean_clv"] = ("clv", "mean")
        agg["total_clv"] = ("clv", "sum")
    out = per_customer.groupby("group", sort=False).agg(**agg)
    out.index.name = by
    out["repeat_purchase_rate"] = out["repeat_customers"] / out["customers"]
    out["revenue_per_customer"] = out["revenue"] / out["customers"]
    cols = ["customers", "repeat_customers", "repeat_purchase_rate", "orders", "revenue", "revenue_per_customer"]
    if clv is not None:
        cols += ["mean_clv", "total_clv"]
    return out[cols].sort_values("customers", ascending=False, kind="stable")


def funnel(stages: Mapping[str, float] | pd.Series) -> pd.DataFrame:
    """Conversion rates through an ordered funnel.

    Parameters
    ----------
    stages : ordered counts per stage, e.g. ``{"visited": 10_000, "viewed": 4_000, "carted": 800,
        "bought": 200}`` (a dict keeps its insertion order) or a Series.

    Returns
    -------
    DataFrame indexed by stage with ``count``, ``step_conversion`` (count / previous stage's count;
    1.0 for the first stage, 0.0 after an empty stage), ``overall_conversion`` (count / first
    stage's count) and ``drop_off`` (previous count - count). In the example: step conversions 1.0,
    0.4, 0.2, 0.25 and overall conversion of the last stage 0.02.
    """
    s = pd.Series(stages, dtype="float64") if not isinstance(stages, pd.Series) else stages.astype("float64")
    if s.empty:
        raise KPIInputError("funnel: stages is empty; give at least one stage with its count")
    v = s.to_numpy()
    if not np.isfinite(v).all() or (v < 0).any():
        raise KPIInputError(f"funnel: stage counts must be finite and >= 0, got {dict(s)}")
    if v[0] <= 0:
        raise KPIInputError(f"funnel: the first stage {s.index[0]!r} has count 0; conversions are undefined")
    prev = np.concatenate([[v[0]], v[:-1]])
    step = np.divide(v, prev, out=np.zeros_like(v), where=prev > 0)
    out = pd.DataFrame(
        {"count": v, "step_conversion": step, "overall_conversion": v / v[0], "drop_off": prev - v},
        index=pd.Index(s.index.astype(str), name="stage"),
    )
    return out


# --------------------------------------------------------------------------------------------------
# headline summary
# --------------------------------------------------------------------------------------------------


def kpi_summary(
    transactions: pd.DataFrame,
    as_of: DateLike | None = None,
    period_days: int = 365,
    active_window_days: float = DEFAULT_ACTIVE_WINDOW_DAYS,
) -> dict[str, Any]:
    """The headline KPIs for the report, over the ``period_days`` up to and including ``as_of``.

    ``as_of`` is a day and is included (as elsewhere in rebuy: the scoring date, default the last
    transaction's day); the period is ``[as_of + 1 day - period_days, as_of + 1 day)``. Purchases
    after ``as_of`` are ignored.

    Returns a flat dict (JSON-serialisable): ``as_of``, ``period_start``, ``period_end`` (ISO dates,
    end exclusive), ``period_days``, ``active_window_days``; counts ``customers_total`` (ever bought
    up to as_of), ``customers_start``, ``customers_end``, ``new_customers``, ``buyers`` (bought in the
    period), ``orders``; currency ``revenue``, ``average_order_value``, ``revenue_per_customer``;
    ``purchase_frequency`` (orders per buyer); shares in [0, 1] ``customer_retention_rate``,
    ``repeat_purchase_rate``, ``churn_rate``, ``repeat_revenue_share`` and
    ``monthly_retention_last`` (retention coefficient of the last complete calendar month up to
    as_of, named by ``monthly_retention_month``; see :func:`monthly_retention`). A rate whose
    denominator is empty (no customers before the period, or nobody bought in the month before) is
    None, never NaN.
    """
    _check_transactions(transactions, need_amount=True)
    as_of_ts = resolve_as_of(transactions["timestamp"], as_of, "as_of", KPIInputError)
    if period_days <= 0:
        raise KPIInputError(f"period_days must be a positive number of days, got {period_days!r}")
    _window(active_window_days)
    end = cutoff_after(as_of_ts)
    start = end - pd.Timedelta(days=int(period_days))
    upto = transactions["timestamp"].to_numpy() < end.to_datetime64()
    if not upto.any():
        raise KPIInputError(f"kpi_summary: no purchases on or before as_of {as_of_ts.date()}")
    tx = transactions if upto.all() else transactions.loc[upto]
    c = _code(tx, need_amount=True)
    counts = _retention_counts(c, start, end, active_window_days)
    s = counts["customers_start"]
    out: dict[str, Any] = {
        "as_of": str(as_of_ts.date()),
        "period_start": str(start.date()),
        "period_end": str(end.date()),
        "period_days": int(period_days),
        "active_window_days": float(active_window_days),
        "customers_total": c.n_customers,
        **{k: int(counts[k]) for k in ("customers_start", "customers_end", "new_customers")},
        "customer_retention_rate": counts["retained"] / s if s else None,
        "repeat_purchase_rate": counts["repeat_buyers"] / s if s else None,
        "churn_rate": counts["lost"] / s if s else None,
    }
    try:
        n_orders, buyers, revenue = _order_stats(c, start, end, "kpi_summary")
    except KPIInputError:
        out.update(buyers=0, orders=0, revenue=0.0, average_order_value=None, purchase_frequency=None,
                   revenue_per_customer=None, repeat_revenue_share=None)
    else:
        out.update(
            buyers=buyers,
            orders=n_orders,
            revenue=revenue,
            average_order_value=revenue / n_orders,
            purchase_frequency=n_orders / buyers,
            revenue_per_customer=revenue / buyers,
            repeat_revenue_share=_repeat_revenue_share(c, start, end) if revenue > 0 else None,
        )
    monthly = monthly_retention(tx, period_end=end)
    last_month = (end - pd.Timedelta(1, "ns")).to_period("M")
    if last_month.end_time >= end:  # the as_of month is not over yet
        last_month = last_month - 1
    out["monthly_retention_month"] = str(last_month)
    out["monthly_retention_last"] = (
        float(monthly.loc[last_month, "retention_rate"]) if last_month in monthly.index else None
    )
    return out
