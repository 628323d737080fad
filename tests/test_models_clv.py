"""rebuy.models.clv and rebuy.models.value: CLV equals lifetimes' customer_lifetime_value, and the
value score table has its contract columns with the documented semantics."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from models_common import (  # noqa: F401 (fixtures)
    bgnbd_fixture,
    cdnow_summary_fixture,
    gg_fixture,
    lifetimes_bgnbd,
    lifetimes_gg,
)
from rebuy.config import Config
from rebuy.datasets import load_cdnow_sample
from rebuy.errors import FeatureError, InvalidParameterError
from rebuy.features import rfm_summary
from rebuy.models import BGNBDModel, GammaGammaModel, customer_lifetime_value, score_value
from rebuy.models.clv import discounted_purchases


@pytest.mark.parametrize("time_unit,freq", [("weeks", "W"), ("days", "D")])
def test_clv_equals_lifetimes(time_unit, freq):
    s = rfm_summary(load_cdnow_sample(), as_of="1997-09-30", time_unit=time_unit)
    bg = BGNBDModel().fit(s)
    g = GammaGammaModel().fit(s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lifetimes_gg(g.params_).customer_lifetime_value(
            lifetimes_bgnbd(bg.params_),
            s["frequency"],
            s["recency"],
            s["T"],
            s["monetary_value"],
            time=12,
            discount_rate=0.01,
            freq=freq,
        )
    mine = customer_lifetime_value(bg, g, s, horizon_months=12, margin=1.0, discount_rate=0.01)
    assert mine.name == "clv_12m" and mine.index.equals(s.index)
    np.testing.assert_allclose(mine.to_numpy(), ref.to_numpy(), rtol=1e-8)
    half = customer_lifetime_value(bg, g, s, horizon_months=12, margin=0.5, discount_rate=0.01)
    np.testing.assert_allclose(half.to_numpy(), 0.5 * ref.to_numpy(), rtol=1e-8)


def test_discounted_purchases_by_construction():
    # E[N(month i)] = i for one customer, 2i for another: each month adds 1 (2) purchases
    months = (np.array([i, 2.0 * i]) for i in range(100))
    out = discounted_purchases(months, 0.1, [1, 3])
    np.testing.assert_allclose(out[1], [1 / 1.1, 2 / 1.1], rtol=1e-15)
    np.testing.assert_allclose(out[3], np.array([1, 2]) * sum(1.1**-i for i in (1, 2, 3)), rtol=1e-15)
    assert list(out) == [1, 3]
    undiscounted = discounted_purchases((np.array([i**2]) for i in range(13)), 0.0, [12])
    assert undiscounted[12][0] == pytest.approx(144.0, rel=1e-15)


def test_clv_arguments(bgnbd, gg, cdnow_summary):
    with pytest.raises(InvalidParameterError, match="time_unit must be 'weeks' or 'days'"):
        customer_lifetime_value(bgnbd, gg, cdnow_summary, time_unit="months")
    with pytest.raises(InvalidParameterError, match="horizon_months"):
        customer_lifetime_value(bgnbd, gg, cdnow_summary, horizon_months=0)
    with pytest.raises(FeatureError, match="missing column"):
        customer_lifetime_value(bgnbd, gg, cdnow_summary.drop(columns="monetary_value"))


def test_score_value_columns_and_semantics(bgnbd, gg, cdnow_summary):
    cfg = Config.model_validate({"clv": {"acquisition_cost": 5.0, "retention_cost": 2.0, "horizon_months": 24}})
    sv = score_value(cdnow_summary, bgnbd, gg, cfg)
    expected = [
        "p_alive",
        "p_purchase_90d",
        "expected_purchases_30d",
        "expected_purchases_90d",
        "expected_purchases_365d",
        "expected_order_value",
        "clv_12m",  # the score table's contract column, kept when the configured horizon differs
        "clv_24m",
        "net_ltv",
        "spend_12m",
        "spend_12m_p05",
        "spend_12m_p95",
        "next_purchase_date",
        "churn_risk",
    ]
    assert list(sv.columns) == expected and sv.index.equals(cdnow_summary.index)
    num = sv.select_dtypes("number")
    assert np.isfinite(num.to_numpy()).all()
    np.testing.assert_allclose(sv["net_ltv"], sv["clv_24m"] - 5.0 - 2.0 * 2)
    assert (sv["clv_24m"] > sv["clv_12m"]).all()
    s = cdnow_summary
    x, tx, T = s["frequency"], s["recency"], s["T"]
    np.testing.assert_allclose(sv["expected_purchases_90d"], bgnbd.expected_purchases(90 / 7, x, tx, T), rtol=1e-12)
    np.testing.assert_array_equal(sv["p_alive"], bgnbd.p_alive(x, tx, T))
    # no calibrator: p_purchase_90d is the model's own probability
    np.testing.assert_allclose(sv["p_purchase_90d"], bgnbd.probability_of_purchase(90 / 7, x, tx, T), rtol=1e-12)
    for h in (12, 24):
        clv = customer_lifetime_value(bgnbd, gg, s, horizon_months=h, margin=cfg.clv.margin, discount_rate=0.01)
        np.testing.assert_allclose(sv[f"clv_{h}m"], clv, rtol=1e-12)
    # spend: E[purchases in 365 days] x E[order value]; the interval's bounds are quantiles (the mean of
    # a law with a large mass at 0 and a heavy tail can lie above its 95% quantile)
    np.testing.assert_allclose(sv["spend_12m"], sv["expected_purchases_365d"] * sv["expected_order_value"], rtol=1e-9)
    assert (sv["spend_12m_p05"] <= sv["spend_12m"]).all()
    assert (sv["spend_12m_p05"] >= 0).all() and (sv["spend_12m_p95"] >= sv["spend_12m_p05"]).all()
    assert (sv["spend_12m_p95"] > 0).any()
    lo, hi = cfg.clv.churn_risk_thresholds
    p = sv["p_purchase_90d"]
    assert (sv.loc[p < lo, "churn_risk"] == "high").all()
    assert (sv.loc[(p >= lo) & (p < hi), "churn_risk"] == "medium").all()
    assert (sv.loc[p >= hi, "churn_risk"] == "low").all()
    # next purchase date: a purchase is more likely than not by that day (and not one day earlier)
    as_of = pd.Timestamp("1997-09-30")
    has = sv["next_purchase_date"].notna()
    assert has.any() and (~has).any()
    d = ((sv.loc[has, "next_purchase_date"] - as_of).dt.days).to_numpy()
    np.testing.assert_array_equal(d, bgnbd.next_purchase_days(x, tx, T)[has.to_numpy()])
    sh = s.loc[has]
    p_at = bgnbd.probability_of_purchase(d / 7, sh["frequency"], sh["recency"], sh["T"])
    p_before = bgnbd.probability_of_purchase((d - 1) / 7, sh["frequency"], sh["recency"], sh["T"])
    assert (p_at >= 0.5 - 1e-9).all() and (p_before < 0.5 + 1e-9).all()
    cap = cfg.clv.next_purchase_max_days / 7
    sn = s.loc[~has]
    assert (bgnbd.probability_of_purchase(cap, sn["frequency"], sn["recency"], sn["T"]) < 0.5).all()


def test_score_value_extra_horizons_and_default_clv(bgnbd, gg, cdnow_summary):
    cfg = Config.model_validate({"clv": {"horizons_days": [7, 90], "next_purchase_max_days": 30}})
    sv = score_value(cdnow_summary, bgnbd, gg, cfg, as_of="1997-10-31")
    assert [c for c in sv.columns if c.startswith("expected_purchases_")] == [
        "expected_purchases_7d", "expected_purchases_30d", "expected_purchases_90d", "expected_purchases_365d",
    ]
    assert "clv_12m" in sv.columns and sum(c.startswith("clv_") for c in sv.columns) == 1
    np.testing.assert_allclose(sv["net_ltv"], sv["clv_12m"])
    has = sv["next_purchase_date"].notna()
    assert (sv.loc[has, "next_purchase_date"] > pd.Timestamp("1997-10-31")).all()
    assert (sv.loc[has, "next_purchase_date"] <= pd.Timestamp("1997-10-31") + pd.Timedelta(days=30)).all()


def test_score_value_errors(bgnbd, gg, cdnow_summary):
    cfg = Config()
    days = cdnow_summary.copy()
    days.attrs["time_unit"] = "days"
    with pytest.raises(FeatureError, match="summary is in days"):
        score_value(days, bgnbd, gg, cfg)
    no_date = cdnow_summary.drop(columns="first_purchase")
    no_date.attrs = {k: v for k, v in cdnow_summary.attrs.items() if k != "as_of"}
    with pytest.raises(InvalidParameterError, match="as_of is needed"):
        score_value(no_date, bgnbd, gg, cfg)
    with pytest.raises(InvalidParameterError, match="as_of"):
        score_value(cdnow_summary, bgnbd, gg, cfg, as_of="not a date")
    bad = cdnow_summary.copy()
    bad.iloc[0, bad.columns.get_loc("recency")] = -1.0
    with pytest.raises(FeatureError, match="negative"):
        score_value(bad, bgnbd, gg, cfg)
