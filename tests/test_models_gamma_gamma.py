"""rebuy.models.gamma_gamma: the objective is lifetimes' (value and gradient), the independence
assumption is checked on the data before fitting, q <= 1 is reported, and expected order values
equal lifetimes'."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from models_common import (  # noqa: F401 (fixtures)
    GammaGammaFitter,
    cdnow_summary_fixture,
    gg_fixture,
    gg_problem,
    lifetimes_gg,
    repeat_customers,
)
from rebuy.models import GammaGammaModel, ModelFitError
from rebuy.models.gamma_gamma import frequency_spend_correlation


@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_objective_and_gradient_equal_lifetimes(cdnow_summary, penalizer):
    from autograd import grad

    ours, args = gg_problem(cdnow_summary, penalizer)
    for theta in (np.full(3, 0.1), np.log([6.0, 3.7, 15.0]), np.array([-1.0, 2.0, 4.0])):
        f, g = ours(theta)
        assert f == pytest.approx(GammaGammaFitter._negative_log_likelihood(theta, *args), rel=1e-12)
        np.testing.assert_allclose(g, grad(GammaGammaFitter._negative_log_likelihood)(theta, *args), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ independence assumption
def _spend_grows_with_frequency() -> pd.DataFrame:
    """400 repeat customers on a full grid: frequencies 1..10 crossed with 40 spend multipliers
    0.2..2.0, spend = 20 x frequency x multiplier. Spend per purchase grows with frequency by
    construction (corr ~0.6), and the multipliers spread spend across customers, so the likelihood
    has an interior maximum."""
    x = np.repeat(np.arange(1.0, 11.0), 40)
    m = 20.0 * x * np.tile(np.linspace(0.2, 2.0, 40), 10)
    return pd.DataFrame({"frequency": x, "monetary_value": m})


def test_frequency_spend_correlation_by_construction():
    s = _spend_grows_with_frequency()
    x, m = s["frequency"].to_numpy(), s["monetary_value"].to_numpy()
    corr = frequency_spend_correlation(x, m, None)
    assert corr == pytest.approx(np.corrcoef(x, m)[0, 1], rel=1e-12) and corr > 0.5
    # weights are customer counts: duplicating rows is the same as weighting them
    w = np.where(x > 5, 3.0, 1.0)
    dup = np.repeat(np.arange(len(x)), w.astype(int))
    assert frequency_spend_correlation(x, m, w) == pytest.approx(np.corrcoef(x[dup], m[dup])[0, 1], rel=1e-12)
    # independent by construction: every spend level at every frequency, the same spend per purchase
    grid_x, grid_s = np.meshgrid(np.arange(1.0, 11.0), np.linspace(5.0, 50.0, 40))
    assert abs(frequency_spend_correlation(grid_x.ravel(), grid_s.ravel(), None)) < 1e-12
    assert np.isnan(frequency_spend_correlation(np.full(5, 2.0), np.arange(5.0), None))


def test_independence_warning(caplog):
    s = _spend_grows_with_frequency()
    corr = np.corrcoef(s["frequency"], s["monetary_value"])[0, 1]
    with caplog.at_level(logging.WARNING, logger="rebuy.models"):
        g = GammaGammaModel(independence_threshold=0.3).fit(s)
    assert g.independence_corr_ == pytest.approx(corr, rel=1e-12) and not g.independence_ok_
    assert "independence assumption fails" in caplog.text
    assert any("independence assumption fails" in w for w in g.warnings_)
    assert g.warnings_[0].startswith("Gamma-Gamma independence")  # data checks come before fit notes
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rebuy.models"):
        lenient = GammaGammaModel(independence_threshold=0.9).fit(s)
    assert lenient.independence_ok_ and lenient.independence_corr_ == g.independence_corr_
    assert "independence" not in caplog.text and not any("independence" in w for w in lenient.warnings_)


def test_constant_spend_sets_correlation_to_zero_with_a_note():
    s = pd.DataFrame({"frequency": [1.0, 2.0, 3.0, 4.0], "monetary_value": [10.0, 10.0, 10.0, 10.0]})
    g = GammaGammaModel()
    assert g._check_independence(s["frequency"].to_numpy(), s["monetary_value"].to_numpy(), None) == [
        "independence check: frequency or monetary_value is constant; correlation set to 0"
    ]
    assert g.independence_corr_ == 0.0 and g.independence_ok_


# ------------------------------------------------------------------ q and order values
def test_q_at_most_one_is_reported_not_hidden():
    g = GammaGammaModel.from_params({"p": 2.0, "q": 0.8, "v": 50.0}, empirical_mean=123.0)
    assert g.q_warning_ is not None and "undefined" in g.q_warning_
    assert g.warnings_ == [g.q_warning_]
    e = g.expected_order_value(np.array([0.0, 3.0]), np.array([0.0, 40.0]))
    np.testing.assert_allclose(e, [123.0, 40.0])
    with pytest.raises(ModelFitError, match="empirical_mean"):
        GammaGammaModel.from_params({"p": 2.0, "q": 0.8, "v": 50.0})


def test_expected_order_value_equals_lifetimes(gg, cdnow_summary):
    s = cdnow_summary
    ref = lifetimes_gg(gg.params_).conditional_expected_average_profit(s["frequency"], s["monetary_value"])
    np.testing.assert_allclose(gg.expected_order_value(s["frequency"], s["monetary_value"]), ref, rtol=1e-12)
    p, q, v = (gg.params_[k] for k in "pqv")
    assert gg.population_mean_ == pytest.approx(p * v / (q - 1))
    rep = repeat_customers(s)
    assert gg.empirical_mean_ == pytest.approx(rep["monetary_value"].mean(), rel=1e-12)


def test_spend_input_errors(cdnow_summary):
    with pytest.raises(ModelFitError, match="missing column"):
        GammaGammaModel().fit(cdnow_summary.drop(columns="monetary_value"))
    bad = cdnow_summary.copy()
    bad.iloc[0, bad.columns.get_loc("monetary_value")] = -1.0
    with pytest.raises(ModelFitError, match="'monetary_value' has negative values"):
        GammaGammaModel().fit(bad)
    with pytest.raises(ModelFitError, match="not fitted"):
        GammaGammaModel().expected_order_value(1, 10.0)


def test_sample_weight_on_distinct_rows_equals_the_full_fit(gg, cdnow_summary):
    rep = cdnow_summary[cdnow_summary["frequency"] > 0]
    spend = rep.groupby(["frequency", "monetary_value"]).size().rename("count").reset_index()
    g_weighted = GammaGammaModel().fit(spend[["frequency", "monetary_value"]], sample_weight=spend["count"])
    for k in gg.params_:
        assert g_weighted.params_[k] == pytest.approx(gg.params_[k], rel=1e-9)
    assert g_weighted.independence_corr_ == pytest.approx(gg.independence_corr_, rel=1e-9)
    assert g_weighted.n_customers_ == gg.n_customers_


# ------------------------------------------------------------------ from the raw transactions
def test_cdnow_transactions_cleaned_with_the_default_config_give_the_published_parameters():
    """The CDNOW sample file as a shop would load it (no order ids): two identical purchases on one
    day are real, so cleaning keeps them and Gamma-Gamma reproduces Fader, Hardie & Lee (2005):
    p = 6.25, q = 3.74, gamma = 15.44 (dropping the 21 "duplicates" moved gamma to 15.35)."""
    from rebuy.config import Config
    from rebuy.data import load_transactions
    from rebuy.datasets import _lifetimes_file
    from rebuy.features import rfm_summary
    from rebuy.pipeline import fit_spend_model

    raw = pd.read_csv(_lifetimes_file("CDNOW_sample.txt"), sep=r"\s+", header=None,
                      names=["master_id", "customer_id", "date", "quantity", "amount"])
    lines = pd.DataFrame({"customer_id": raw["customer_id"].astype(str), "timestamp": raw["date"].astype(str),
                          "quantity": raw["quantity"], "amount": raw["amount"]})
    tx, report = load_transactions(lines, Config(), with_report=True)
    assert report.duplicates == 0
    summary = rfm_summary(tx, as_of="1997-09-30", time_unit="weeks")
    p = fit_spend_model(summary, Config()).params_
    assert (round(p["p"], 2), round(p["q"], 2), round(p["v"], 2)) == (6.25, 3.74, 15.44)
