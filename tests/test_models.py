"""rebuy.models: BG/NBD and Gamma-Gamma reproduce the published CDNOW results and lifetimes'
predictions, stay finite on awkward data, retry non-converging fits, and recover simulated truth."""

from __future__ import annotations

import logging
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

from rebuy.config import Config
from rebuy.datasets import load_cdnow_sample
from rebuy.features import rfm_summary
from rebuy.models import (
    BGNBDModel,
    GammaGammaModel,
    ModelFitError,
    bgnbd_log_likelihood,
    customer_lifetime_value,
    score_value,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import lifetimes
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import ConvergenceError

PAPER_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    return rfm_summary(load_cdnow_sample(), as_of="1997-09-30", time_unit="weeks")


@pytest.fixture(scope="module")
def bgnbd(cdnow_summary) -> BGNBDModel:
    return BGNBDModel().fit(cdnow_summary)


@pytest.fixture(scope="module")
def gg(cdnow_summary) -> GammaGammaModel:
    return GammaGammaModel().fit(cdnow_summary)


def lifetimes_bgnbd(params: dict[str, float]) -> BetaGeoFitter:
    f = BetaGeoFitter()
    f.params_ = pd.Series(params)
    f.predict = f.conditional_expected_number_of_purchases_up_to_time  # as fit() sets it
    return f


def lifetimes_gg(params: dict[str, float]) -> GammaGammaFitter:
    f = GammaGammaFitter()
    f.params_ = pd.Series(params)
    return f


# ------------------------------------------------------------------ published CDNOW numbers
def test_bgnbd_reproduces_fader_hardie_lee_2005(bgnbd):
    p = bgnbd.params_
    assert (round(p["r"], 3), round(p["alpha"], 3), round(p["a"], 3), round(p["b"], 3)) == (
        0.243,
        4.414,
        0.793,
        2.426,
    )
    assert round(bgnbd.log_likelihood_, 1) == -9582.4
    assert bgnbd.time_unit_ == "weeks" and bgnbd.converged_ and bgnbd.penalizer_ == 0.0
    assert bgnbd.n_customers_ == 2357 and bgnbd.n_distinct_rows_ < 1100


def test_conditional_expectation_published(bgnbd):
    # FHL 2005: x = 2, t_x = 30.43, T = 38.86, next 39 weeks -> 1.226
    paper = BGNBDModel.from_params(PAPER_BGNBD)
    assert round(float(paper.expected_purchases(39, 2, 30.43, 38.86)[0]), 3) == 1.226
    assert round(float(bgnbd.expected_purchases(39, 2, 30.43, 38.86)[0]), 3) == 1.226


def test_gamma_gamma_reproduces_published(gg, cdnow_summary):
    # Fader, Hardie & Lee (2005) "RFM and CLV": p = 6.25, q = 3.74, gamma = 15.44, from the mean value
    # of each customer's repeat purchase days in the calibration period (zero-value days included).
    p = gg.params_
    assert (round(p["p"], 2), round(p["q"], 2), round(p["v"], 2)) == (6.25, 3.74, 15.44)
    assert (
        gg.n_customers_ == int((cdnow_summary["frequency"] > 0).sum()) - 0
    )  # no repeat customer spends 0 on average
    assert gg.q_warning_ is None and gg.independence_ok_
    assert (
        abs(
            gg.independence_corr_
            - np.corrcoef(
                cdnow_summary.loc[cdnow_summary.frequency > 0, "frequency"],
                cdnow_summary.loc[cdnow_summary.frequency > 0, "monetary_value"],
            )[0, 1]
        )
        < 1e-12
    )


# ------------------------------------------------------------------ equality with lifetimes
def test_weighted_fit_equals_full_fit(bgnbd, gg, cdnow_summary):
    s = cdnow_summary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = BetaGeoFitter().fit(s["frequency"], s["recency"], s["T"])
        rep = s[s["frequency"] > 0]
        full_gg = GammaGammaFitter().fit(rep["frequency"], rep["monetary_value"])
    for k in BGNBDModel.PARAM_NAMES:
        assert bgnbd.params_[k] == pytest.approx(full.params_[k], rel=1e-5)
    for k in GammaGammaModel.PARAM_NAMES:
        assert gg.params_[k] == pytest.approx(full_gg.params_[k], rel=1e-5)
    per_customer = bgnbd_log_likelihood(bgnbd.params_, s["frequency"], s["recency"], s["T"])
    assert bgnbd.log_likelihood_ == pytest.approx(per_customer.sum(), rel=1e-12)


@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_numpy_objective_and_gradient_equal_lifetimes(cdnow_summary, penalizer):
    """rebuy's objectives are lifetimes' own (value to rounding, gradient equal to autograd's)."""
    from autograd import grad

    from rebuy.models import _BGNBDObjective, _distinct_rows, _GammaGammaObjective

    s = cdnow_summary
    (x, tx, T), counts, _ = _distinct_rows(s["frequency"], s["recency"], s["T"])
    w = counts.astype(float)
    scale = 1.0 / T.max()
    ours = _BGNBDObjective(x, tx, T, w, penalizer, scale)
    args = (x.astype(int), tx * scale, T * scale, w, penalizer)
    for theta in (np.full(4, 0.1), np.log([0.3, 0.1, 0.7, 2.5]), np.array([1.0, -3.0, 0.5, -0.5])):
        f, g = ours(theta)
        assert f == pytest.approx(BetaGeoFitter._negative_log_likelihood(theta, *args), rel=1e-12)
        np.testing.assert_allclose(g, grad(BetaGeoFitter._negative_log_likelihood)(theta, *args), rtol=1e-9, atol=1e-12)
    rep = s[s["frequency"] > 0]
    (gx, gm), gc, _ = _distinct_rows(rep["frequency"], rep["monetary_value"])
    ours = _GammaGammaObjective(gx, gm, gc.astype(float), penalizer)
    args = (gx, gm, gc.astype(float), penalizer)
    for theta in (np.full(3, 0.1), np.log([6.0, 3.7, 15.0]), np.array([-1.0, 2.0, 4.0])):
        f, g = ours(theta)
        assert f == pytest.approx(GammaGammaFitter._negative_log_likelihood(theta, *args), rel=1e-12)
        np.testing.assert_allclose(g, grad(GammaGammaFitter._negative_log_likelihood)(theta, *args), rtol=1e-9, atol=1e-12)


def test_numpy_solver_with_warm_start_equals_lifetimes_full_fit(monkeypatch):
    """The default solver (warm start from a subsample, then BFGS on all distinct rows) gives
    lifetimes' full per-customer fit, penalised or not."""
    import rebuy.models as models
    from rebuy.simulate import simulate

    sim = simulate(n_customers=6000, seed=11, n_products=200)
    s = rfm_summary(sim.transactions, as_of=sim.truth["end"], time_unit="weeks")
    monkeypatch.setattr(models, "WARM_START_CUSTOMERS", 1000)  # 6000 customers > 2 x 1000: warm start
    sizes = []
    original = models._minimize
    monkeypatch.setattr(
        models, "_minimize", lambda o, *a, **k: (sizes.append(float(o.W)), original(o, *a, **k))[1]
    )
    rep = s[(s["frequency"] > 0) & (s["monetary_value"] > 0)]
    for pen in (0.0, 0.001):
        sizes.clear()
        bg = BGNBDModel(penalizer=pen).fit(s)
        gg = GammaGammaModel(penalizer=pen).fit(s)
        assert sizes[0] < 0.5 * len(s) and sizes[1] == len(s)  # subsample first, then all customers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = BetaGeoFitter(penalizer_coef=pen).fit(s["frequency"], s["recency"], s["T"])
            ref_gg = GammaGammaFitter(penalizer_coef=pen).fit(rep["frequency"], rep["monetary_value"])
        for k in BGNBDModel.PARAM_NAMES:
            assert bg.params_[k] == pytest.approx(ref.params_[k], rel=1e-6), (pen, k)
        per_customer = bgnbd_log_likelihood(bg.params_, s["frequency"], s["recency"], s["T"]).sum()
        assert bg.log_likelihood_ == pytest.approx(per_customer, rel=1e-10)
        for k in GammaGammaModel.PARAM_NAMES:
            assert gg.params_[k] == pytest.approx(ref_gg.params_[k], rel=1e-6), (pen, k)
        lt = BGNBDModel(penalizer=pen, solver="lifetimes").fit(s)
        for k in BGNBDModel.PARAM_NAMES:
            assert lt.params_[k] == pytest.approx(ref.params_[k], rel=1e-6)


def test_predictions_equal_lifetimes_on_cdnow(bgnbd, cdnow_summary):
    s = cdnow_summary
    ref = lifetimes_bgnbd(bgnbd.params_)
    x, tx, T = s["frequency"].to_numpy(), s["recency"].to_numpy(), s["T"].to_numpy()
    for t in [1.0, 4.3, 39.0, 52.0, 260.0]:
        np.testing.assert_allclose(
            bgnbd.expected_purchases(t, x, tx, T),
            ref.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T),
            rtol=1e-9,
        )
    np.testing.assert_allclose(
        bgnbd.p_alive(x, tx, T), ref.conditional_probability_alive(x, tx, T), rtol=1e-12
    )
    t = np.linspace(0.5, 200, 50)
    np.testing.assert_allclose(
        bgnbd.expected_purchases_population(t), ref.expected_number_of_purchases_up_to_time(t), rtol=1e-9
    )


@pytest.mark.parametrize(
    "params",
    [
        PAPER_BGNBD,
        {"r": 2.0, "alpha": 10.0, "a": 1.5, "b": 5.0},
        {"r": 5.0, "alpha": 0.5, "a": 3.0, "b": 0.5},
        {"r": 0.5, "alpha": 1.0, "a": 0.2, "b": 0.3},
    ],
)
def test_predictions_equal_lifetimes_on_random_grid(params):
    rng = np.random.default_rng(0)
    n = 5000
    T = rng.uniform(0, 100, n)
    x = rng.integers(0, 60, n).astype(float)
    tx = np.where(x > 0, T * rng.uniform(0, 1, n), 0.0)
    t = rng.uniform(0, 80, n)
    mine = BGNBDModel.from_params(params).expected_purchases(t, x, tx, T)
    with np.errstate(all="ignore"):
        ref = lifetimes_bgnbd(params).conditional_expected_number_of_purchases_up_to_time(t, x, tx, T)
    assert np.isfinite(mine).all()
    ok = np.isfinite(ref)  # lifetimes gives NaN where a + b + x - 1 < 0 (here x = 0 with a + b < 1)
    if params["a"] + params["b"] >= 1:
        assert ok.all()
    else:
        assert (x[~ok] == 0).all()
    np.testing.assert_allclose(mine[ok], ref[ok], rtol=1e-9)


def test_negative_hypergeometric_case_is_consistent():
    # a + b < 1: for x = 0 lifetimes returns NaN; ours must be finite, increasing in t, and equal
    # the population expectation when the customer's T is 0 (no information beyond the first purchase).
    m = BGNBDModel.from_params({"r": 0.5, "alpha": 1.0, "a": 0.2, "b": 0.3})
    t = np.array([0.5, 1.0, 5.0, 20.0, 80.0])
    cond = m.expected_purchases(t, 0, 0, 0)
    np.testing.assert_allclose(cond, m.expected_purchases_population(t), rtol=1e-9)
    assert (np.diff(cond) > 0).all() and np.isfinite(cond).all()


# ------------------------------------------------------------------ robustness
def test_heavy_buyers_and_t_zero_are_finite():
    m = BGNBDModel.from_params({"r": 5.0, "alpha": 0.5, "a": 3.0, "b": 0.5})
    x = np.array([100, 300, 500, 800, 1000, 0, 0], dtype=float)
    T = np.array([100, 100, 100, 50, 10, 0, 30], dtype=float)
    tx = np.where(x > 0, 0.99 * T, 0.0)
    for t in [0.0, 1.0, 39.0, 260.0, 5000.0]:
        e = m.expected_purchases(t, x, tx, T)
        assert np.isfinite(e).all() and (e >= 0).all()
    # scipy's hyp2f1 returns NaN at 2F1(-2.5, 2; 1002.5; 0.96): the series fallback must kick in
    e = m.expected_purchases(260.0, 1000, 9.9, 10.0)
    rate_bound = (1000 + 5.0) / (0.5 + 10.0) * 260.0  # posterior mean rate x t, if surely alive
    assert 0 < e[0] < rate_bound
    # heavy buyer who stopped long ago: P(alive) underflows towards 0, never NaN
    p = m.p_alive(np.array([500.0]), np.array([1.0]), np.array([100.0]))
    assert np.isfinite(p).all() and 0 <= p[0] < 1e-12
    assert m.expected_purchases(0.0, 5, 3, 4)[0] == 0.0


@pytest.mark.parametrize(
    "A,B,C,z", [(-2.5, 2.0, 102.5, 0.98), (-2.5, 2.0, 1002.5, 0.96), (-0.7, 0.8, 3.0, 0.999)]
)
def test_hyp2f1_fallback_matches_euler_integral(A, B, C, z):
    from scipy.integrate import quad
    from scipy.special import gammaln

    from rebuy.models import _hyp2f1

    # Euler's integral (C > B > 0), an evaluation independent of the series
    def f(t):
        return np.exp((B - 1) * np.log(t) + (C - B - 1) * np.log1p(-t) - A * np.log1p(-z * t))

    integral = quad(f, 0, 1, limit=200, epsabs=0, epsrel=1e-12)[0]
    expected = np.exp(gammaln(C) - gammaln(B) - gammaln(C - B)) * integral
    assert _hyp2f1(A, B, C, z)[0] == pytest.approx(expected, rel=1e-8)


def test_probability_of_purchase(bgnbd, cdnow_summary):
    # a brand-new customer (x = 0, T = 0): 1 - P(N(t) = 0) of the unconditional model
    ref = lifetimes_bgnbd(bgnbd.params_)
    for t in [1.0, 10.0, 39.0]:
        expected = 1 - ref.probability_of_n_purchases_up_to_time(t, 0)
        assert bgnbd.probability_of_purchase(t, 0, 0, 0)[0] == pytest.approx(expected, rel=1e-12)
    s = cdnow_summary
    x, tx, T = s["frequency"], s["recency"], s["T"]
    p39 = bgnbd.probability_of_purchase(39, x, tx, T)
    p78 = bgnbd.probability_of_purchase(78, x, tx, T)
    assert ((p39 >= 0) & (p39 <= bgnbd.p_alive(x, tx, T) + 1e-15)).all()
    assert (p78 >= p39).all()


def test_expected_purchases_monotone_in_t(bgnbd):
    t = np.linspace(0, 500, 101)
    e = bgnbd.expected_purchases(t, 3, 20.0, 38.0)
    assert (np.diff(e) > 0).all()


def test_single_day_and_one_time_buyer_data_give_clear_errors():
    one_day = pd.DataFrame({"frequency": [0.0, 0.0], "recency": [0.0, 0.0], "T": [0.0, 0.0]})
    with pytest.raises(ModelFitError, match="one-time buyer"):
        BGNBDModel().fit(one_day)
    tx = pd.DataFrame(
        {
            "customer_id": pd.array(["a", "b", "c"], dtype="string"),
            "timestamp": pd.to_datetime(["2024-01-01 09:00", "2024-01-01 10:00", "2024-01-01 11:00"]),
            "amount": [1.0, 2.0, 3.0],
        }
    )
    s = rfm_summary(tx)
    assert (s["T"] == 0).all()
    with pytest.raises(ModelFitError, match="one-time buyer"):
        BGNBDModel().fit(s)
    with pytest.raises(ModelFitError, match="repeat customers"):
        GammaGammaModel().fit(s)
    same_day = pd.DataFrame({"frequency": [1.0], "recency": [0.0], "T": [0.0]})
    with pytest.raises(ModelFitError, match="T is 0"):
        BGNBDModel().fit(same_day)


def test_bad_summary_errors(cdnow_summary):
    with pytest.raises(ModelFitError, match="missing column"):
        BGNBDModel().fit(cdnow_summary.drop(columns="recency"))
    bad = cdnow_summary.copy()
    bad.iloc[0, bad.columns.get_loc("recency")] = bad["T"].iloc[0] + 5
    with pytest.raises(ModelFitError, match="exceeds 'T'"):
        BGNBDModel().fit(bad)
    bad = cdnow_summary.copy()
    bad.iloc[0, bad.columns.get_loc("frequency")] = np.nan
    with pytest.raises(ModelFitError, match="frequency"):
        BGNBDModel().fit(bad)
    with pytest.raises(ModelFitError, match="not fitted"):
        BGNBDModel().p_alive(1, 1, 2)


def test_non_convergence_retries_with_penalizer(cdnow_summary, monkeypatch, caplog):
    calls = []
    original = BetaGeoFitter.fit

    def flaky(self, *args, **kwargs):
        calls.append(self.penalizer_coef)
        if self.penalizer_coef == 0.0:
            print("lifetimes prints the scipy result here")  # must not reach stdout
            raise ConvergenceError("The model did not converge.")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(lifetimes.BetaGeoFitter, "fit", flaky)
    with caplog.at_level(logging.WARNING, logger="rebuy.models"):
        m = BGNBDModel(penalizer=0.0, retry_penalizer=0.01, solver="lifetimes").fit(cdnow_summary)
    assert calls == [0.0, 0.01]
    assert m.penalizer_ == 0.01 and not m.converged_
    assert any("did not converge" in w for w in m.warnings_)
    assert "retrying with penalizer=0.01" in caplog.text
    assert all(np.isfinite(v) and v > 0 for v in m.params_.values())

    def always_fails(self, *args, **kwargs):
        raise ConvergenceError("no")

    monkeypatch.setattr(lifetimes.BetaGeoFitter, "fit", always_fails)
    with pytest.raises(ModelFitError, match="did not converge"):
        BGNBDModel(solver="lifetimes").fit(cdnow_summary)


def test_numpy_solver_non_convergence_retries_with_penalizer(cdnow_summary, monkeypatch, caplog):
    import rebuy.models as models

    calls = []
    original = models._minimize

    def flaky(objective, x0, tol=1e-7, hess_inv0=None):
        calls.append(objective.penalizer)
        if objective.penalizer == 0.0:
            raise models._NotConverged("Desired error not necessarily achieved due to precision loss.")
        return original(objective, x0, tol, hess_inv0)

    monkeypatch.setattr(models, "_minimize", flaky)
    with caplog.at_level(logging.WARNING, logger="rebuy.models"):
        m = BGNBDModel(penalizer=0.0, retry_penalizer=0.01).fit(cdnow_summary)
    assert calls == [0.0, 0.01]
    assert m.penalizer_ == 0.01 and not m.converged_
    assert "retrying with penalizer=0.01" in caplog.text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = BetaGeoFitter(penalizer_coef=0.01).fit(cdnow_summary["frequency"], cdnow_summary["recency"], cdnow_summary["T"])
    for k in BGNBDModel.PARAM_NAMES:
        assert m.params_[k] == pytest.approx(ref.params_[k], rel=1e-6)

    def nan_start(objective, x0, tol=1e-7, hess_inv0=None):
        if objective.penalizer == 0.0:
            return np.array([np.nan, 0.0, 0.0]), np.eye(3)
        return original(objective, x0, tol, hess_inv0)

    monkeypatch.setattr(models, "_minimize", nan_start)
    g = GammaGammaModel(retry_penalizer=0.001).fit(cdnow_summary)
    assert g.penalizer_ == 0.001 and any("non-finite" in w for w in g.warnings_)
    with pytest.raises(ModelFitError, match="solver must be one of"):
        BGNBDModel(solver="autograd").fit(cdnow_summary)


def test_non_finite_parameters_trigger_retry(cdnow_summary, monkeypatch):
    original = GammaGammaFitter.fit

    def nan_params(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.penalizer_coef == 0.0:
            self.params_["q"] = np.nan
        return out

    monkeypatch.setattr(lifetimes.GammaGammaFitter, "fit", nan_params)
    m = GammaGammaModel(retry_penalizer=0.001, solver="lifetimes").fit(cdnow_summary)
    assert m.penalizer_ == 0.001 and np.isfinite(m.params_["q"])
    assert any("non-finite" in w for w in m.warnings_)


# ------------------------------------------------------------------ Gamma-Gamma checks
def test_independence_warning(caplog):
    rng = np.random.default_rng(3)
    n = 3000
    x = rng.integers(1, 30, n).astype(float)
    m = 10 + 4 * x + rng.gamma(2, 3, n)  # spend grows with frequency
    s = pd.DataFrame({"frequency": x, "monetary_value": m})
    with caplog.at_level(logging.WARNING, logger="rebuy.models"):
        g = GammaGammaModel(independence_threshold=0.3).fit(s)
    assert g.independence_corr_ > 0.3 and not g.independence_ok_
    assert "independence" in caplog.text and any("independence" in w for w in g.warnings_)
    # unpenalised, q runs off to infinity on such data (lifetimes fails to converge): the retry with
    # the penalizer is used and reported, as with lifetimes
    assert not g.converged_ and g.penalizer_ == g.retry_penalizer
    assert g.params_["q"] < 1e6 and any("degenerate" in w for w in g.warnings_)


def test_q_at_most_one_is_reported_not_hidden():
    g = GammaGammaModel.from_params({"p": 2.0, "q": 0.8, "v": 50.0}, empirical_mean=123.0)
    assert g.q_warning_ is not None and "undefined" in g.q_warning_
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


# ------------------------------------------------------------------ CLV and scores
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
    np.testing.assert_allclose(mine.to_numpy(), ref.to_numpy(), rtol=1e-8)
    half = customer_lifetime_value(bg, g, s, horizon_months=12, margin=0.5, discount_rate=0.01)
    np.testing.assert_allclose(half.to_numpy(), 0.5 * ref.to_numpy(), rtol=1e-8)


def test_score_value_columns_and_semantics(bgnbd, gg, cdnow_summary):
    cfg = Config.model_validate(
        {"clv": {"acquisition_cost": 5.0, "retention_cost": 2.0, "horizon_months": 24}}
    )
    sv = score_value(cdnow_summary, bgnbd, gg, cfg)
    expected = [
        "p_alive",
        "expected_purchases_30d",
        "expected_purchases_90d",
        "expected_purchases_365d",
        "expected_order_value",
        "clv_12m",  # the score table's contract column, kept when the configured horizon differs
        "clv_24m",
        "net_ltv",
        "next_purchase_date",
        "churn_risk",
    ]
    assert list(sv.columns) == expected and sv.index.equals(cdnow_summary.index)
    num = sv.select_dtypes("number")
    assert np.isfinite(num.to_numpy()).all()
    np.testing.assert_allclose(sv["net_ltv"], sv["clv_24m"] - 5.0 - 2.0 * 2)
    assert (sv["clv_24m"] > sv["clv_12m"]).all()
    s = cdnow_summary
    np.testing.assert_allclose(
        sv["expected_purchases_90d"],
        bgnbd.expected_purchases(90 / 7, s["frequency"], s["recency"], s["T"]),
        rtol=1e-12,
    )
    lo, hi = cfg.clv.churn_risk_thresholds
    p = sv["p_alive"]
    assert (sv.loc[p < lo, "churn_risk"] == "high").all()
    assert (sv.loc[(p >= lo) & (p < hi), "churn_risk"] == "medium").all()
    assert (sv.loc[p >= hi, "churn_risk"] == "low").all()
    # next purchase date: the expected count reaches 1 by that day (and not one day earlier)
    as_of = pd.Timestamp("1997-09-30")
    has = sv["next_purchase_date"].notna()
    assert has.any() and (~has).any()
    d = ((sv.loc[has, "next_purchase_date"] - as_of).dt.days).to_numpy()
    sh = s.loc[has]
    e_at = bgnbd.expected_purchases(d / 7, sh["frequency"], sh["recency"], sh["T"])
    e_before = bgnbd.expected_purchases((d - 1) / 7, sh["frequency"], sh["recency"], sh["T"])
    assert (e_at >= 1 - 1e-9).all() and (e_before < 1 + 1e-9).all()
    cap = 1825 / 7
    sn = s.loc[~has]
    assert (bgnbd.expected_purchases(cap, sn["frequency"], sn["recency"], sn["T"]) < 1).all()


def test_models_pickle_round_trip(bgnbd, gg, cdnow_summary):
    b2, g2 = pickle.loads(pickle.dumps(bgnbd)), pickle.loads(pickle.dumps(gg))
    s = cdnow_summary
    np.testing.assert_array_equal(
        b2.p_alive(s["frequency"], s["recency"], s["T"]), bgnbd.p_alive(s["frequency"], s["recency"], s["T"])
    )
    assert g2.params_ == gg.params_


# ------------------------------------------------------------------ parameter recovery
def test_parameter_recovery_on_simulated_data():
    from rebuy.simulate import simulate

    sim = simulate(n_customers=100_000, seed=11, events=False)
    truth = sim.truth
    s = rfm_summary(sim.transactions, as_of=truth["end"], time_unit="weeks")
    bg = BGNBDModel().fit(s)
    tb = truth["bgnbd"]
    for k, true in [("r", tb["r"]), ("alpha", tb["alpha_weeks"]), ("a", tb["a"]), ("b", tb["b"])]:
        assert bg.params_[k] == pytest.approx(true, rel=0.12), k
    # mean purchase rate and mean dropout probability are identified more tightly
    assert bg.params_["r"] / bg.params_["alpha"] == pytest.approx(tb["r"] / tb["alpha_weeks"], rel=0.05)
    assert bg.params_["a"] / (bg.params_["a"] + bg.params_["b"]) == pytest.approx(
        tb["a"] / (tb["a"] + tb["b"]), rel=0.05
    )
    g = GammaGammaModel().fit(s)
    tg = truth["gamma_gamma"]
    for k in ("p", "q", "v"):
        assert g.params_[k] == pytest.approx(tg[k], rel=0.12), k
    assert g.population_mean_ == pytest.approx(tg["p"] * tg["v"] / (tg["q"] - 1), rel=0.03)
    assert abs(g.independence_corr_) < 0.1


def test_sample_weight_on_distinct_rows_equals_the_full_fit(cdnow_summary):
    """Counts as weights (what the Spark path passes) give the same fit as one row per customer."""
    s = cdnow_summary
    distinct = s.groupby(["frequency", "recency", "T"]).size().rename("count").reset_index()
    full = BGNBDModel().fit(s)
    weighted = BGNBDModel().fit(distinct[["frequency", "recency", "T"]], time_unit="weeks",
                                sample_weight=distinct["count"])
    for k in full.params_:
        assert weighted.params_[k] == pytest.approx(full.params_[k], rel=1e-9)
    assert weighted.log_likelihood_ == pytest.approx(full.log_likelihood_, rel=1e-12)
    assert weighted.n_customers_ == len(s)
    rep = s[s["frequency"] > 0]
    spend = rep.groupby(["frequency", "monetary_value"]).size().rename("count").reset_index()
    g_full = GammaGammaModel().fit(s)
    g_weighted = GammaGammaModel().fit(spend[["frequency", "monetary_value"]], sample_weight=spend["count"])
    for k in g_full.params_:
        assert g_weighted.params_[k] == pytest.approx(g_full.params_[k], rel=1e-9)
    assert g_weighted.independence_corr_ == pytest.approx(g_full.independence_corr_, rel=1e-9)
    with pytest.raises(ModelFitError, match="sample_weight has 2 values"):
        BGNBDModel().fit(s, sample_weight=[1, 2])


def test_models_take_their_settings_from_config(cdnow_summary):
    from rebuy.config import load_config

    cfg = load_config(overrides={"bgnbd.solver": "lifetimes", "gamma_gamma.independence_threshold": 0.2})
    bg = BGNBDModel.from_config(cfg.bgnbd)
    g = GammaGammaModel.from_config(cfg.gamma_gamma)
    assert (bg.solver, g.solver, g.independence_threshold) == ("lifetimes", "numpy", 0.2)
    numpy_fit = BGNBDModel.from_config(load_config().bgnbd).fit(cdnow_summary)
    lifetimes_fit = bg.fit(cdnow_summary)
    for k, v in numpy_fit.params_.items():
        assert lifetimes_fit.params_[k] == pytest.approx(v, rel=1e-5)
