"""rebuy.models.selection and the pipeline's holdout windows: the figures, the choice rule, the
calibrator, and what happens with short histories or failing candidates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from rebuy import pipeline
from rebuy.config import Config
from rebuy.errors import ModelFitError
from rebuy.metrics import auc, decile_table, log_loss
from rebuy.models import BGNBDModel
from rebuy.models.selection import (
    HOLDOUT_DAYS,
    ProbabilityCalibrator,
    _choose,
    select_purchase_model,
)
from rebuy.simulate import simulate


@pytest.fixture(scope="module", name="shop")
def shop_fixture() -> pd.DataFrame:
    return simulate(3000, seed=4, start="2022-01-01", end="2023-12-31", events=False, n_products=50).transactions


def test_auc_equals_the_rank_definition():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    score = rng.integers(0, 20, 500).astype(float)  # many ties
    label = rng.random(500) < expit(score / 10 - 1)
    assert auc(score, label) == pytest.approx(roc_auc_score(label, score), abs=1e-12)
    assert np.isnan(auc(score, np.ones(500, dtype=bool)))


def test_decile_table_and_log_loss():
    p = np.linspace(0.01, 0.99, 1000)
    y = p > 0.5
    table = decile_table(p, y)
    assert table["customers"].tolist() == [100] * 10
    assert (np.diff(table["mean_predicted"]) > 0).all()
    assert table["abs_error"].iloc[0] == pytest.approx(table["mean_predicted"].iloc[0])
    assert log_loss(np.full(4, 0.5), np.array([True, False, True, False])) == pytest.approx(np.log(2))


def test_calibrator_recovers_a_known_distortion():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0.02, 0.98, 200_000)
    truth = expit(-0.4 + 0.7 * logit(raw))
    observed = rng.random(len(raw)) < truth
    cal = ProbabilityCalibrator().fit(raw, observed)
    assert cal.intercept_ == pytest.approx(-0.4, abs=0.03) and cal.slope_ == pytest.approx(0.7, abs=0.03)
    p = cal.transform(np.array([0.0, 0.1, 0.5, 0.9, 1.0]))
    assert (np.diff(p) > 0).all() and (p > 0).all() and (p < 1).all()
    assert decile_table(cal.transform(raw), observed)["abs_error"].max() < 0.01
    assert json.loads(json.dumps(cal.report()))["method"] == "platt"


def test_calibrator_with_one_class_is_constant():
    cal = ProbabilityCalibrator().fit(np.array([0.2, 0.4, 0.9]), np.array([False, False, False]))
    assert cal.slope_ == 0 and (cal.transform(np.array([0.1, 0.9])) < 1e-5).all()


def test_choice_breaks_ties_by_p_alive_ranking():
    figures = {"bgnbd": {"log_loss": 0.5000, "auc_p_alive": 0.40}, "mbgnbd": {"log_loss": 0.5004, "auc_p_alive": 0.65},
               "pareto_nbd": {"log_loss": 0.5100, "auc_p_alive": 0.90}, "broken": {"error": "did not converge"}}
    assert _choose(figures, tolerance=0.001) == "mbgnbd"  # within tolerance; pareto_nbd is not
    assert _choose(figures, tolerance=0.0) == "bgnbd"
    assert _choose(figures, tolerance=0.1) == "pareto_nbd"


def test_windows_are_successive_holdouts_on_a_sample(shop):
    as_of = pd.Timestamp("2023-12-31")
    cfg = Config.model_validate({"selection": {"windows": 3, "max_customers": 1000}})
    windows = pipeline.selection_windows(shop, cfg, as_of)
    assert [pd.Timestamp(w.attrs["as_of"]) for w in windows] == [
        as_of - pd.Timedelta(days=HOLDOUT_DAYS * k) for k in (1, 2, 3)]
    assert all(len(w) <= 1000 for w in windows) and all(w["duration_holdout"].iloc[0] == HOLDOUT_DAYS / 7 for w in windows)
    # a history shorter than two holdout periods leaves no window
    recent = shop[shop["timestamp"] >= as_of - pd.Timedelta(days=150)]
    assert pipeline.selection_windows(recent, cfg, as_of) == []


def test_no_window_means_bgnbd_without_calibration():
    sel = select_purchase_model([], Config(), lambda name, s, pen, start: None)
    assert sel.name == "bgnbd" and sel.calibrator is None and "too short" in sel.report["reason"]
    sel = select_purchase_model([], Config(purchase_model="pareto_nbd"), lambda name, s, pen, start: None)
    assert sel.name == "pareto_nbd"


def test_every_candidate_is_reported_and_a_failing_one_is_never_chosen(shop):
    windows = pipeline.selection_windows(shop, Config(), pd.Timestamp("2023-12-31"))

    def fit(name, summary, penalizer, start):
        if name == "pareto_nbd":
            raise ModelFitError("Pareto/NBD: did not converge")
        return pipeline.fit_purchase_model(summary, Config(), name=name, penalizer=penalizer, start_from=start)

    sel = select_purchase_model(windows, Config(), fit)
    report = json.loads(json.dumps(sel.report, allow_nan=False))
    assert set(report["candidates"]) == {"bgnbd", "mbgnbd", "pareto_nbd", "mbgnbd+ridge"}
    assert report["candidates"]["pareto_nbd"] == {"error": "Pareto/NBD: did not converge"}
    assert sel.name in {"bgnbd", "mbgnbd"} and report["chosen"] == sel.name
    assert report["candidates"][report["chosen_candidate"]]["penalizer"] == (sel.penalizer or 0.0)
    assert report["candidates"]["mbgnbd+ridge"]["penalizer"] == Config().selection.ridge_penalizer
    assert len(report["windows"]) == 4 and report["calibrator"]["customers"] == sum(len(w) for w in windows)
    for name in ("bgnbd", "mbgnbd"):
        c = report["candidates"][name]
        assert 0 < c["log_loss"] < 1 and 0.5 < c["auc_p_purchase"] <= 1


def test_a_named_model_is_scored_but_not_compared(shop):
    windows = pipeline.selection_windows(shop, Config(), pd.Timestamp("2023-12-31"))
    cfg = Config(purchase_model="bgnbd")
    sel = select_purchase_model(windows, cfg, lambda name, s, pen, start: BGNBDModel().fit(s))
    assert sel.name == "bgnbd" and list(sel.report["candidates"]) == ["bgnbd"] and sel.penalizer is None
    assert sel.report["reason"] == "bgnbd: set in the config"


def test_candidates_add_the_ridge_under_auto_only():
    from rebuy.models.selection import Candidate, candidates, model_of_key

    assert [c.key for c in candidates(Config())] == ["bgnbd", "mbgnbd", "pareto_nbd", "mbgnbd+ridge"]
    every = Config.model_validate({"selection": {"ridge_candidates": ["pareto_nbd", "bgnbd", "mbgnbd"]}})
    keys = [c.key for c in candidates(every)]
    assert keys == ["bgnbd", "mbgnbd", "pareto_nbd", "bgnbd+ridge", "mbgnbd+ridge", "pareto_nbd+ridge"]
    assert {c.penalizer for c in candidates(every)} == {None, Config().selection.ridge_penalizer}
    assert [model_of_key(k) for k in keys[3:]] == ["bgnbd", "mbgnbd", "pareto_nbd"]
    assert [c.key for c in candidates(Config.model_validate({"selection": {"ridge_penalizer": 0}}))] == keys[:3]
    assert candidates(Config(purchase_model="mbgnbd")) == [Candidate("mbgnbd", "mbgnbd")]


def test_seasonal_calibrator_keeps_the_intercept_of_the_same_season():
    rng = np.random.default_rng(2)
    shifts = np.array([0.3, -0.5, 0.8, -0.2])  # four windows' seasons, on the log-odds scale
    groups = np.repeat(np.arange(4), 50_000)
    raw = rng.uniform(0.05, 0.95, len(groups))
    observed = rng.random(len(raw)) < expit(shifts[groups] + 0.8 * logit(raw))
    cal = ProbabilityCalibrator().fit(raw, observed, groups=groups, season=3)
    assert cal.intercept_ == pytest.approx(-0.2, abs=0.05) and cal.slope_ == pytest.approx(0.8, abs=0.03)
    assert list(cal.group_intercepts_.values()) == pytest.approx(shifts.tolist(), abs=0.05)
    same_season = groups == 3
    assert decile_table(cal.transform(raw[same_season]), observed[same_season])["abs_error"].max() < 0.02
    pooled = ProbabilityCalibrator().fit(raw, observed)
    assert decile_table(pooled.transform(raw[same_season]), observed[same_season])["abs_error"].mean() > 0.04
    assert json.loads(json.dumps(cal.report()))["season_window"] == 3


def test_same_season_window_is_the_one_a_year_back(shop):
    from rebuy.models.selection import same_season_window

    as_of = pd.Timestamp("2023-12-31")
    windows = pipeline.selection_windows(shop, Config(), as_of)
    assert len(windows) == 4 and same_season_window(windows) == 3  # its holdout began 360 days back
    assert same_season_window(windows[:3]) is None and same_season_window([]) is None
    on = Config.model_validate({"selection": {"candidates": ["bgnbd"], "seasonal_calibration": True}})
    sel = select_purchase_model(windows, on, lambda name, s, pen, start: BGNBDModel().fit(s))
    assert sel.report["calibrator"]["season_window"] == 3 and sel.calibrator.season_ == 3
    off = Config.model_validate({"selection": {"candidates": ["bgnbd"]}})
    assert select_purchase_model(windows, off, lambda name, s, pen, start: BGNBDModel().fit(s)).calibrator.season_ is None
