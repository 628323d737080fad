"""Customer lifetime value from any purchase model and any spend model.

``CLV_H = margin * E[order value] * sum_{i=1..H} (E[N(i months)] - E[N(i-1 months)]) / (1+d)^i``
(currency), with ``d`` the monthly discount rate and a month :data:`MONTH_IN_UNITS` time units;
with ``margin = 1`` it equals lifetimes' ``GammaGammaFitter.customer_lifetime_value``.

Only the public interface is used: ``purchase_model.conditional(...).iter_expected_purchases``
(cumulative expected purchases at each month, on the distinct (frequency, recency, T) rows) and
``spend_model.expected_order_value``, so any :class:`~rebuy.models.base.PurchaseModel` and
:class:`~rebuy.models.base.SpendModel` work. :func:`discounted_purchases` accumulates the months one
at a time (memory O(customers), not O(customers x months)).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from rebuy.dates import MONTH_IN_UNITS
from rebuy.errors import FeatureError, InvalidParameterError
from rebuy.models.base import PurchaseModel, SpendModel
from rebuy.models.inputs import distinct_rows, summary_arrays, whole_number

CLV_COLUMNS = ("frequency", "recency", "T", "monetary_value")


def month_units(time_unit: str) -> float:
    """Length of one CLV month in ``time_unit``; InvalidParameterError for an unknown unit."""
    try:
        return MONTH_IN_UNITS[time_unit]
    except (KeyError, TypeError):
        raise InvalidParameterError(
            f"customer_lifetime_value: time_unit must be 'weeks' or 'days', got {time_unit!r}"
        ) from None


def month_horizons(max_months: int, time_unit: str) -> np.ndarray:
    """Times (time units) of months 0, 1, ..., ``max_months``."""
    return np.arange(0, max_months + 1, dtype=np.float64) * month_units(time_unit)


def discounted_purchases(
    cumulative: Iterator[np.ndarray], discount_rate: float, horizons_months: Iterable[int]
) -> dict[int, np.ndarray]:
    """``sum_{i=1..H} (E[N(i)] - E[N(i-1)]) / (1+d)^i`` for each H in ``horizons_months``, from
    ``cumulative`` yielding E[N(0)], E[N(1)], ... (one array per month, at least max(H) + 1 of them;
    only that many are consumed)."""
    wanted = sorted(set(horizons_months))
    out: dict[int, np.ndarray] = {}
    previous = next(cumulative)
    total = np.zeros_like(previous)
    for i in range(1, wanted[-1] + 1):
        current = next(cumulative)
        total = total + (current - previous) * (1.0 + discount_rate) ** -i
        previous = current
        if i in wanted:
            out[i] = total
    if not all(np.isfinite(v).all() for v in out.values()):
        raise FloatingPointError("customer_lifetime_value: non-finite discounted purchases")
    return out


def customer_lifetime_value(
    purchase_model: PurchaseModel,
    spend_model: SpendModel,
    summary: pd.DataFrame,
    horizon_months: int = 12,
    margin: float = 1.0,
    discount_rate: float = 0.01,
    time_unit: str | None = None,
) -> pd.Series:
    """Discounted expected gross margin over ``horizon_months`` (currency), per customer of an RFM
    summary (columns ``frequency``, ``recency``, ``T``, ``monetary_value``), indexed like it.

    ``margin`` is a share of revenue; ``discount_rate`` is monthly; ``time_unit`` defaults to the
    purchase model's. A month is 4.345 weeks or 30 days (lifetimes' convention), so with
    ``margin=1`` this equals lifetimes' ``GammaGammaFitter.customer_lifetime_value``.
    """
    unit = time_unit or purchase_model.time_unit_
    month_units(unit)
    horizon = whole_number(horizon_months, "customer_lifetime_value: horizon_months")
    x, tx, T, m = summary_arrays(summary, CLV_COLUMNS, "customer_lifetime_value", FeatureError)
    (ux, utx, uT), _, inv = distinct_rows(x, tx, T)
    cumulative = purchase_model.conditional(ux, utx, uT).iter_expected_purchases(month_horizons(horizon, unit))
    disc = discounted_purchases(cumulative, discount_rate, [horizon])[horizon]
    clv = margin * spend_model.expected_order_value(x, m) * disc[inv]
    return pd.Series(clv, index=summary.index, name=f"clv_{horizon}m")
