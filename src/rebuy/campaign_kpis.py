"""KPIs by campaign: repeat rate, retention and revenue of treated vs control customers per offer type.

    from rebuy.campaign_kpis import campaign_kpis
    table = campaign_kpis(offer_log, transactions, window_days=30)

Inputs: the offer log ``rebuy score`` appends (columns :data:`rebuy.schema.OFFER_LOG_COLUMNS`; this
module reads ``customer_id``, ``decided_at``, ``offer_type`` and ``group``) and the canonical
cleaned transactions (:func:`rebuy.data.load_transactions`: ``customer_id``, ``timestamp``,
``amount``; one row per purchase line, returns netted).

Definitions (per offer type and group, ``treatment`` or ``control``):

* **The window** of a decision is ``[decided_at, decided_at + window_days)``: a purchase at
  ``decided_at`` counts, one at ``decided_at + window_days`` does not.
* **Measured decisions** are those whose window has fully passed: ``decided_at + window_days`` is
  at most the end of the as-of day (as-of dates include their whole day). Later ones are left out.
* **One customer counts once** per offer type and group, at their earliest measured decision (a
  customer offered the same type on several nights would otherwise be counted once per night, with
  overlapping windows).
* ``customers``: customers measured. ``repeat_rate``: share of them with at least one purchase in
  the window. ``revenue_per_customer``: their purchase amount in the window divided by
  ``customers`` (customers who did not buy count as 0), in the transactions' currency.
* ``active_before``: customers with a purchase in the ``lookback_days`` (default 90) before
  ``decided_at``, i.e. in ``[decided_at - lookback_days, decided_at)``. ``retention``: share of
  those who buy again in the window (NaN when ``active_before`` is 0, the only NaN in the table).

``decided_at`` is a day (midnight, as the offer log writes it; a time of day is dropped), so windows
are whole days. Windows are counted with the line index of :mod:`rebuy.measure.outcomes` (the one
``rebuy measure`` uses, so the treated/control repeat rates here are its response rates): one sorted
int64 key per line, two ``numpy.searchsorted`` calls per window; no per-customer Python loop.
Bad input raises :class:`~rebuy.errors.KPIInputError` with one line naming the column.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from rebuy.dates import cutoff_after, naive_utc, resolve_as_of
from rebuy.errors import KPIInputError
from rebuy.kpis import _check_transactions
from rebuy.offers.control import CONTROL, TREATMENT

logger = logging.getLogger(__name__)

__all__ = ["KPIInputError", "campaign_kpis", "CAMPAIGN_KPI_COLUMNS", "GROUPS"]

GROUPS = (TREATMENT, CONTROL)
"""The offer-log groups measured, in output order."""

_DTYPES = {
    "offer_type": "object", "group": "object", "customers": "int64", "repeat_rate": "float64",
    "active_before": "int64", "retention": "float64", "revenue_per_customer": "float64",
}
CAMPAIGN_KPI_COLUMNS = tuple(_DTYPES)
"""Columns of :func:`campaign_kpis`' result, in order."""

_LOG_COLUMNS = ("customer_id", "decided_at", "offer_type", "group")


def _check_offer_log(offer_log: pd.DataFrame) -> None:
    if not isinstance(offer_log, pd.DataFrame):
        raise KPIInputError(f"offer_log: expected a pandas DataFrame, got {type(offer_log).__name__}")
    for col in _LOG_COLUMNS:
        if col not in offer_log.columns:
            raise KPIInputError(f"offer_log: missing column {col!r}; have {list(offer_log.columns)}")
        if offer_log[col].isna().any():
            raise KPIInputError(f"offer_log: column {col!r} has {int(offer_log[col].isna().sum())} missing value(s)")


def _decided_at(offer_log: pd.DataFrame) -> pd.Series:
    """``decided_at`` as naive datetime64[ns]; a column that is no date is a KPIInputError."""
    try:
        ts = pd.to_datetime(offer_log["decided_at"])
    except (TypeError, ValueError) as exc:
        raise KPIInputError(f"offer_log: column 'decided_at' is not a date ({str(exc).splitlines()[0]})") from None
    return naive_utc(ts).astype("datetime64[ns]").dt.normalize()


def _positive_days(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise KPIInputError(f"{name} must be a positive whole number of days, got {value!r}")
    return int(value)


def _measured_decisions(offer_log: pd.DataFrame, window: pd.Timedelta, end: pd.Timestamp) -> pd.DataFrame:
    """One row per (offer_type, group, customer): the earliest decision whose window ends by ``end``."""
    log = pd.DataFrame({
        "customer_id": offer_log["customer_id"].astype(str).to_numpy(),
        "decided_at": _decided_at(offer_log).to_numpy(),
        "offer_type": offer_log["offer_type"].astype(str).to_numpy(),
        "group": offer_log["group"].astype(str).to_numpy(),
    })
    log = log[log["group"].isin(GROUPS) & (log["decided_at"] + window <= end)]
    log = log.sort_values("decided_at", kind="stable")
    return log.drop_duplicates(["offer_type", "group", "customer_id"], keep="first").reset_index(drop=True)


def _per_decision(decisions: pd.DataFrame, transactions: pd.DataFrame, window_days: int,
                  lookback_days: int) -> pd.DataFrame:
    """Each decision with ``bought`` (any purchase in the window), ``revenue`` (window amount,
    currency), ``active`` (any purchase in the lookback before it) and ``retained`` (both)."""
    from rebuy.dates import day_numbers
    from rebuy.measure.outcomes import line_index

    day = day_numbers(decisions["decided_at"])
    index = line_index(transactions, int(day.min()) - lookback_days, int(day.max()) + window_days)
    code = index.ids.get_indexer(decisions["customer_id"]).astype(np.int64)
    n_window, revenue = index.window(code, day, day + window_days)
    n_before, _ = index.window(code, day - lookback_days, day)
    return decisions.assign(bought=n_window > 0, revenue=revenue, active=n_before > 0,
                            retained=(n_before > 0) & (n_window > 0))


def _summarise(per_decision: pd.DataFrame) -> pd.DataFrame:
    g = per_decision.groupby(["offer_type", "group"], sort=True)
    out = g.agg(customers=("customer_id", "size"), bought=("bought", "sum"), revenue=("revenue", "sum"),
                active_before=("active", "sum"), retained=("retained", "sum")).reset_index()
    out["repeat_rate"] = out["bought"] / out["customers"]
    out["retention"] = (out["retained"] / out["active_before"].where(out["active_before"] > 0)).astype("float64")
    out["revenue_per_customer"] = out["revenue"] / out["customers"]
    out = out.sort_values(["offer_type", "group"], ascending=[True, False], kind="stable")  # treatment first
    return out[list(CAMPAIGN_KPI_COLUMNS)].astype(_DTYPES).reset_index(drop=True)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in _DTYPES.items()})


def campaign_kpis(
    offer_log: pd.DataFrame,
    transactions: pd.DataFrame,
    *,
    window_days: int = 30,
    as_of: Any = None,
    lookback_days: int = 90,
) -> pd.DataFrame:
    """KPIs by campaign: one row per offer type and group (treatment, then control).

    Parameters
    ----------
    offer_log : the offer log (``customer_id``, ``decided_at``, ``offer_type``, ``group``; other
        columns are ignored; groups other than treatment/control are left out).
    transactions : the canonical cleaned transactions (``customer_id``, ``timestamp``, ``amount``
        in currency).
    window_days : length of the measurement window after each decision, days.
    as_of : the last day of data (includes its whole day); default the day of the last transaction.
        Only decisions with ``decided_at + window_days`` at most the end of that day are measured.
    lookback_days : how far before a decision a customer must have bought to count in
        ``active_before`` / ``retention``, days.

    Returns
    -------
    Columns :data:`CAMPAIGN_KPI_COLUMNS`: ``customers`` (count), ``repeat_rate`` (share in [0, 1]),
    ``active_before`` (count), ``retention`` (share; NaN when ``active_before`` is 0),
    ``revenue_per_customer`` (currency per measured customer). See the module docstring for the
    exact definitions. An empty frame with these columns when no decision's window has passed.
    """
    _check_offer_log(offer_log)
    _check_transactions(transactions, need_amount=True)
    window_days = _positive_days(window_days, "window_days")
    lookback_days = _positive_days(lookback_days, "lookback_days")
    end = cutoff_after(resolve_as_of(transactions["timestamp"], as_of, "as_of", KPIInputError))
    decisions = _measured_decisions(offer_log, pd.Timedelta(days=window_days), end)
    if decisions.empty:
        logger.info("campaign KPIs: no decision's %d-day window has passed by %s", window_days, end.date())
        return _empty()
    tx = transactions[["customer_id", "timestamp", "amount"]].assign(customer_id=transactions["customer_id"].astype(str))
    table = _summarise(_per_decision(decisions, tx, window_days, lookback_days))
    logger.info("campaign KPIs: %d decisions measured over %d offer type(s)", len(decisions),
                table["offer_type"].nunique())
    return table
