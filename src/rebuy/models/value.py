"""The per-customer value score table (:func:`score_value`) from a purchase and a spend model.

Columns, in this order (the score table's contract):

- ``p_alive``; ``p_purchase_90d`` (the model's P(a purchase in 90 days), calibrated by
  ``calibrator`` when one is given: :mod:`rebuy.models.selection`);
- ``expected_purchases_{h}d`` for h in :data:`SCORE_HORIZONS_DAYS` and each further
  ``config.clv.horizons_days`` (days, ascending);
- ``expected_order_value`` (currency);
- ``clv_12m`` (always) and ``clv_{H}m`` for ``H = config.clv.horizon_months`` (discounted margin,
  currency; see :mod:`rebuy.models.clv`);
- ``net_ltv`` = clv_H - acquisition_cost - retention_cost * H / 12 (currency);
- ``spend_12m``, ``spend_12m_p05``, ``spend_12m_p95``: expected revenue over the next 365 days and
  its 90% predictive interval (currency; :mod:`rebuy.models.predictive`);
- ``next_purchase_date`` (the as-of day plus the model's ``next_purchase_days``: the day by which a
  purchase is more likely than not; NaT when not within ``config.clv.next_purchase_max_days``);
- ``churn_risk`` ("high" / "medium" / "low" from ``config.clv.churn_risk_thresholds`` on
  ``p_purchase_90d``, the calibrated probability: P(alive) cannot be checked against what
  customers do, a purchase probability can).

Invariant: no NaN or inf in the numeric columns (a FloatingPointError, never a user error, if a
model produced one). Predictions run on the distinct (frequency, recency, T) rows, through one
``purchase_model.conditional`` forecast (the public interface only); every horizon is computed in
one pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rebuy.dates import to_day, unit_days
from rebuy.errors import FeatureError, InvalidParameterError
from rebuy.models.base import ConditionalForecast, PurchaseModel, SpendModel
from rebuy.models.clv import CLV_COLUMNS, discounted_purchases, month_horizons
from rebuy.models.inputs import check_frt, distinct_rows, summary_arrays
from rebuy.schema import SCORE_HORIZONS_DAYS

if TYPE_CHECKING:
    from rebuy.config import CLVConfig, Config


CONTRACT_CLV_MONTHS = 12
"""``clv_12m`` is always in the score table, whatever ``config.clv.horizon_months`` is."""


def churn_risk(p_purchase: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    """"high" below the first threshold of the calibrated P(a purchase in 90 days), "medium" below
    the second, else "low"."""
    lo, hi = thresholds
    return np.where(p_purchase < lo, "high", np.where(p_purchase < hi, "medium", "low"))


SPEND_DAYS = 365
"""Horizon of ``spend_12m`` and its interval (days)."""

P_PURCHASE_DAYS = 90
"""Horizon of ``p_purchase_90d`` (days); the calibrator is learned on a holdout this long."""


def _add_probabilities(out: pd.DataFrame, forecast: ConditionalForecast, inv: np.ndarray,
                       calibrator: Any) -> None:
    """``p_purchase_90d``: the model's P(a purchase in 90 days) through ``calibrator`` (when given)."""
    u = unit_days(forecast.model.time_unit_)
    raw = forecast.probability_of_purchase(P_PURCHASE_DAYS / u)[inv]
    out["p_purchase_90d"] = raw if calibrator is None else calibrator.transform(raw)


def _add_spend(out: pd.DataFrame, purchase_model: PurchaseModel, spend_model: SpendModel,
               rows: tuple[np.ndarray, ...], p_alive: np.ndarray, distinct: tuple[Any, np.ndarray]) -> None:
    """``spend_12m`` and its 90% predictive interval (currency; :mod:`rebuy.models.predictive`)."""
    from rebuy.models.predictive import spend_forecast

    horizon = SPEND_DAYS / unit_days(purchase_model.time_unit_)
    f = spend_forecast(purchase_model, spend_model, horizon, rows, p_alive, distinct=distinct)
    out["spend_12m"], out["spend_12m_p05"], out["spend_12m_p95"] = f.mean, f.lower, f.upper


def _time_unit(summary: pd.DataFrame, purchase_model: PurchaseModel) -> str:
    unit = purchase_model.time_unit_
    s_unit = summary.attrs.get("time_unit")
    if s_unit is not None and s_unit != unit:
        raise FeatureError(f"score_value: summary is in {s_unit} but the purchase model was fitted in {unit}")
    return unit


def _as_of_day(summary: pd.DataFrame, as_of: Any, day_length: float) -> pd.Timestamp:
    """``as_of``, else ``summary.attrs["as_of"]``, else the last first_purchase + T (days), as a day."""
    if as_of is None:
        as_of = summary.attrs.get("as_of")
    if as_of is None and "first_purchase" in summary.columns:
        as_of = (summary["first_purchase"] + pd.to_timedelta(summary["T"] * day_length, unit="D")).max()
    if as_of is None:
        raise InvalidParameterError("score_value: as_of is needed (summary has no first_purchase column)")
    return to_day(as_of, "score_value: as_of")


def _days_after(day: pd.Timestamp, days: np.ndarray) -> np.ndarray:
    """datetime64[ns] of ``day + days`` (whole days), NaT where ``days`` is -1."""
    out = np.full(len(days), np.datetime64("NaT"), dtype="datetime64[ns]")
    ok = days >= 0
    out[ok] = np.datetime64(day.to_datetime64(), "ns") + days[ok].astype("timedelta64[D]")
    return out


def _add_forecasts(
    out: pd.DataFrame,
    forecast: ConditionalForecast,
    inv: np.ndarray,
    order_value: np.ndarray,
    cc: CLVConfig,
) -> None:
    """Add the expected-purchase, order-value, CLV and net-LTV columns: every horizon (days and
    CLV months) in one pass of ``forecast.iter_expected_purchases`` over the distinct rows."""
    unit = forecast.model.time_unit_
    u = unit_days(unit)
    days = sorted({*SCORE_HORIZONS_DAYS, *cc.horizons_days})
    months = max(CONTRACT_CLV_MONTHS, cc.horizon_months)
    horizons = [h / u for h in days] + month_horizons(months, unit).tolist()
    cumulative = forecast.iter_expected_purchases(horizons)
    for h in days:
        out[f"expected_purchases_{h}d"] = next(cumulative)[inv]
    out["expected_order_value"] = order_value
    disc = discounted_purchases(cumulative, cc.discount_rate, {CONTRACT_CLV_MONTHS, cc.horizon_months})
    if cc.horizon_months != CONTRACT_CLV_MONTHS:
        out[f"clv_{CONTRACT_CLV_MONTHS}m"] = cc.margin * order_value * disc[CONTRACT_CLV_MONTHS][inv]
    clv = cc.margin * order_value * disc[cc.horizon_months][inv]
    out[f"clv_{cc.horizon_months}m"] = clv
    out["net_ltv"] = clv - cc.acquisition_cost - cc.retention_cost * cc.horizon_months / 12.0


def score_value(
    summary: pd.DataFrame,
    purchase_model: PurchaseModel,
    spend_model: SpendModel,
    config: Config,
    as_of: Any = None,
    calibrator: Any = None,
) -> pd.DataFrame:
    """Per-customer value scores, indexed like ``summary`` (columns: see the module docstring).

    ``summary`` is an RFM summary (``frequency``, ``recency``, ``T`` in the purchase model's time
    unit, ``monetary_value`` in currency); ``config.clv`` holds the horizons, margin, discount rate
    and costs. ``as_of`` defaults to ``summary.attrs["as_of"]``, else first_purchase + T.
    """
    _time_unit(summary, purchase_model)
    x, tx, T, m = summary_arrays(summary, CLV_COLUMNS, "score_value", FeatureError)
    check_frt(x, tx, T, "score_value", FeatureError)
    day = _as_of_day(summary, as_of, unit_days(purchase_model.time_unit_))
    cc = config.clv
    rows, _, inv = distinct_rows(x, tx, T)
    forecast = purchase_model.conditional(*rows)  # shared by every column below
    out = pd.DataFrame(index=summary.index)
    out["p_alive"] = forecast.p_alive()[inv]
    _add_probabilities(out, forecast, inv, calibrator)
    _add_forecasts(out, forecast, inv, spend_model.expected_order_value(x, m), cc)
    _add_spend(out, purchase_model, spend_model, (x, tx, T, m), out["p_alive"].to_numpy(), (rows, inv))
    days = forecast.next_purchase_days(int(cc.next_purchase_max_days))[inv]
    out["next_purchase_date"] = _days_after(day, days)
    out["churn_risk"] = pd.Series(
        churn_risk(out["p_purchase_90d"].to_numpy(), cc.churn_risk_thresholds), index=out.index, dtype="string"
    )
    if not np.isfinite(out.select_dtypes("number").to_numpy()).all():
        raise FloatingPointError("score_value: non-finite value scores (please report with the summary)")
    return out
