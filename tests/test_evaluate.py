"""rebuy.evaluate: the value-model validation report reproduces the published CDNOW holdout numbers,
is JSON-serialisable, and says whether to trust the models."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from rebuy.config import Config
from rebuy.datasets import load_cdnow_sample
from rebuy.evaluate import evaluate_value_models, tracking_curve
from rebuy.features import FeatureError, calibration_holdout_split
from rebuy.models import BGNBDModel

PAPER_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return load_cdnow_sample()


@pytest.fixture(scope="module")
def report(cdnow) -> dict:
    return evaluate_value_models(cdnow, "1997-09-30", "1998-06-30", Config(purchase_model="bgnbd"))


def test_tracking_curve_reproduces_paper(cdnow):
    # FHL 2005: weeks 40-78 hold 1,882 actual repeat transactions vs ~1,666 forecast; cumulative at
    # week 78: 4,339 actual vs ~4,171 forecast (the paper's 4% under-forecast).
    split = calibration_holdout_split(cdnow, "1997-09-30", "1998-06-30")
    curve = tracking_curve(cdnow, BGNBDModel.from_params(PAPER_BGNBD), split.index, "1998-06-30")
    assert len(curve) == 78
    assert curve["week_end"].iloc[38] == pd.Timestamp("1997-09-30")
    assert curve["actual"].iloc[77] == 4339
    assert curve["actual"].iloc[77] - curve["actual"].iloc[38] == 1882
    assert round(curve["predicted"].iloc[77]) == 4171
    assert round(curve["predicted"].iloc[77] - curve["predicted"].iloc[38]) == 1666
    assert (np.diff(curve["actual"]) >= 0).all() and (np.diff(curve["predicted"]) > 0).all()
    # equals lifetimes' expected_cumulative_transactions (weekly, from daily periods)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes import BetaGeoFitter
        from lifetimes.utils import expected_cumulative_transactions

        ref_model = BetaGeoFitter()
        ref_model.params_ = pd.Series(PAPER_BGNBD)
        ref = expected_cumulative_transactions(
            ref_model, cdnow, "timestamp", "customer_id", t=78 * 7, freq="D", freq_multiplier=7
        )
    np.testing.assert_array_equal(curve["actual"].to_numpy(), ref["actual"].to_numpy())
    np.testing.assert_allclose(curve["predicted"].to_numpy(), ref["predicted"].to_numpy(), rtol=1e-9)


def test_report_is_json_and_matches_cdnow(report):
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert report["windows"] == {
        "calibration_end": "1997-09-30",
        "holdout_end": "1998-06-30",
        "holdout_duration": 39.0,
        "time_unit": "weeks",
    }
    p = report["params"]["bgnbd"]
    assert (round(p["r"], 3), round(p["alpha"], 3), round(p["a"], 3), round(p["b"], 3)) == (
        0.243,
        4.414,
        0.793,
        2.426,
    )
    g = report["params"]["gamma_gamma"]
    assert (round(g["p"], 2), round(g["q"], 2), round(g["v"], 2)) == (6.25, 3.74, 15.44)
    agg = report["aggregate"]
    assert agg["actual_repeat_purchases"] == 1882 and agg["customers"] == 2357
    # conditional forecast of the fitted model, summed over customers: a few % under, like the paper
    assert 1550 < agg["predicted_repeat_purchases"] < 1800
    assert agg["error_pct"] == pytest.approx(
        100 * (agg["predicted_repeat_purchases"] - 1882) / 1882, abs=0.01
    )
    tr = report["tracking"]
    assert tr["calibration_weeks"] == 39 and len(tr["weeks"]) == 78
    assert tr["end_actual"] == 4339 and tr["holdout_actual"] == 1882
    assert 4100 < tr["end_predicted"] < 4250


def test_model_beats_naive_baseline_on_cdnow(report):
    pc = report["per_customer"]
    assert pc["model"]["mae"] < pc["naive_own_past_rate"]["mae"]
    assert pc["model"]["rmse"] < pc["naive_own_past_rate"]["rmse"]
    assert pc["mae_improvement_pct"] == pytest.approx(
        100 * (1 - pc["model"]["mae"] / pc["naive_own_past_rate"]["mae"]), abs=0.01
    )


def test_p_alive_deciles_and_clv_ranking(report):
    rows = report["p_alive_calibration"]["by_decile"]
    assert [r["decile"] for r in rows] == [*range(1, 11), "one_time_buyers"]
    assert sum(r["customers"] for r in rows) == 2357
    deciles = rows[:10]
    means = [r["mean_p_alive"] for r in deciles]
    assert means == sorted(means)
    # customers the model thinks are alive buy again more often
    assert deciles[-1]["observed_share_bought"] > deciles[0]["observed_share_bought"]
    for r in rows:
        assert 0 <= r["predicted_share_bought"] <= r["mean_p_alive"] <= 1
    cap = report["clv_ranking"]["capture"]
    for k in ("top_10pct", "top_20pct"):
        random = report["clv_ranking"]["random"][k]
        for ranking in ("clv_12m", "model_clv_12m", "past_spend"):
            assert random < cap[ranking][k] <= cap["best_possible"][k] <= 1
    assert report["clv_ranking"]["spearman"]["clv_12m"] > 0.2
    gain = report["clv_ranking"]["clv_minus_past_spend_top20_points"]
    assert gain == pytest.approx(100 * (cap["clv_12m"]["top_20pct"] - cap["past_spend"]["top_20pct"]), abs=0.01)


def test_buy_again_and_calibration_sections(report):
    buy = report["buy_again"]
    assert set(buy["auc"]) == {"p_alive", "p_purchase_90d", "expected_purchases_90d", "recency_baseline",
                               "frequency_baseline"}
    assert all(0 <= v <= 1 for v in buy["auc"].values())
    assert buy["auc"]["p_purchase_90d"] > 0.6 and buy["auc"]["recency_baseline"] > 0.6
    cal = report["p_purchase_90d_calibration"]
    for name in ("calibrated", "raw_model"):
        rows = cal[name]["by_decile"]
        assert [r["decile"] for r in rows] == list(range(1, 11)) and sum(r["customers"] for r in rows) == 2357
        assert cal[name]["mean_abs_decile_error"] == pytest.approx(np.mean([r["abs_error"] for r in rows]), abs=1e-4)
    interval = report["spend_interval"]
    assert 0.8 < interval["model"]["coverage"] <= 1 and 0.9 <= interval["model"]["nominal_coverage"] <= 1
    everyone = interval["one_interval_for_everyone"]
    assert everyone["coverage"] >= interval["model"]["coverage"]  # the narrowest single interval with that share
    assert interval["model"]["mean_interval_score"] < everyone["mean_interval_score"]


def test_verdict_and_headline(report):
    assert report["headline"]["trust"] in {"good", "use with care", "do not trust"}
    assert report["verdict"].startswith("Verdict:")
    assert "1882 actual" in report["verdict"]
    assert report["headline"]["holdout_actual_repeat_purchases"] == 1882
    assert report["headline"]["purchase_model"] == "bgnbd"
    # CLV within 2 points of past spend, or revenue more than 15% off: never "good"
    head = report["headline"]
    if head["clv_minus_past_spend_top20_points"] < 2 or abs(head["revenue_error_pct"]) > 15:
        assert head["trust"] != "good"


def test_simulated_shop_is_forecast_well():
    from rebuy.simulate import simulate

    sim = simulate(n_customers=20_000, seed=5, start="2023-01-01", end="2024-12-31", events=False)
    rep = evaluate_value_models(sim.transactions, "2024-06-30", "2024-12-31", Config())
    json.dumps(rep, allow_nan=False)
    # the data follow the model exactly, so the aggregate holdout forecast must be close
    assert abs(rep["aggregate"]["error_pct"]) < 8
    assert rep["per_customer"]["model"]["mae"] < rep["per_customer"]["naive_own_past_rate"]["mae"]
    assert rep["headline"]["trust"] == "good"
    # P(purchase in the holdout) is calibrated when the model is true
    assert rep["p_alive_calibration"]["mean_abs_share_error"] < 0.04
    assert rep["warnings"] == []
    # the issue-11 checks on data the models were not tuned on: calibration and coverage
    cal = rep["p_purchase_90d_calibration"]["calibrated"]
    assert cal["mean_abs_decile_error"] <= 0.03
    interval = rep["spend_interval"]
    # a perfect model covers its nominal share: 90% where a purchase is near-certain, 95% where the chance of
    # buying nothing is above 5% (the lower bound is then 0)
    assert 0.9 <= interval["model"]["nominal_coverage"] <= 0.96
    assert abs(interval["model"]["coverage"] - interval["model"]["nominal_coverage"]) < 0.02
    assert interval["model"]["mean_interval_score"] < interval["one_interval_for_everyone"]["mean_interval_score"]
    assert interval["model"]["median_width"] < interval["one_interval_for_everyone"]["median_width"]


def test_bad_windows(cdnow):
    with pytest.raises(FeatureError, match="holdout_end"):
        evaluate_value_models(cdnow, "1997-09-30", "1997-09-01")
    with pytest.raises(FeatureError, match="calibration_end"):
        evaluate_value_models(cdnow, "1990-01-01", "1998-06-30")
