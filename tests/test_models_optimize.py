"""rebuy.models.optimize: warm-started fits reach lifetimes' optimum, failed or degenerate fits are
retried with the penalizer and reported, and the Hessian is right. Failure paths are driven by
deterministic constructions (a solver that fails on purpose, parameters past the threshold), never
by where scipy happens to stop on awkward data."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest

import rebuy.models.optimize as optimize
from models_common import (  # noqa: F401 (fixtures)
    BetaGeoFitter,
    GammaGammaFitter,
    assert_same_optimum,
    bgnbd_objective,
    bgnbd_problem,
    bgnbd_theta,
    cdnow_summary_fixture,
    gg_objective,
    gg_theta,
    repeat_customers,
)
from rebuy.features import rfm_summary
from rebuy.models import BGNBDModel, GammaGammaModel, ModelFitError
from rebuy.models.optimize import MAX_SHAPE, Solution, fit_problem, fit_with_retry, numerical_hessian

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import lifetimes
    from lifetimes.utils import ConvergenceError


# ------------------------------------------------------------------ the degenerate-fit rule
def test_fit_problem_rule():
    good = {"r": 0.2, "alpha": 4.0, "a": 0.8, "b": 2.4}
    assert fit_problem(good, ("r", "a", "b")) is None
    assert "degenerate" in fit_problem({**good, "b": MAX_SHAPE * 2}, ("r", "a", "b"))
    assert fit_problem({**good, "b": MAX_SHAPE}, ("r", "a", "b")) is None  # at the threshold: fine
    # scale parameters may be large (alpha in days of a slow shop, v in a currency with small units)
    assert fit_problem({**good, "alpha": MAX_SHAPE * 10}, ("r", "a", "b")) is None
    assert "non-finite" in fit_problem({**good, "a": np.nan}, ("r", "a", "b"))
    assert "non-finite" in fit_problem({**good, "r": 0.0}, ("r", "a", "b"))
    assert "non-finite" in fit_problem({**good, "alpha": np.inf}, ("r", "a", "b"))


def _solver(results: dict[float, object]):
    """A solver returning a fixed Solution (or raising a fixed error) per penalizer."""
    calls: list[float] = []

    def solve(pen: float) -> Solution:
        calls.append(pen)
        out = results[pen]
        if isinstance(out, Exception):
            raise out
        return Solution(out, np.zeros(len(out)), None)

    return solve, calls


@pytest.mark.parametrize(
    "first,reason",
    [
        ({"p": 2.0, "q": 2 * MAX_SHAPE, "v": 9.0}, "degenerate"),
        ({"p": 2.0, "q": np.nan, "v": 9.0}, "non-finite"),
        (optimize.NotConverged("precision loss"), "did not converge"),
        (FloatingPointError("overflow\nmore"), "optimiser failed (FloatingPointError: overflow)"),
    ],
)
def test_failed_first_attempt_is_retried_with_the_penalizer(first, reason, caplog):
    retry = {"p": 2.0, "q": 3.0, "v": 9.0}
    solve, calls = _solver({0.0: first, 0.01: retry})
    with caplog.at_level(logging.WARNING, logger="rebuy.models"):
        out = fit_with_retry(solve, 0.0, 0.01, "Gamma-Gamma", ("p", "q"))
    assert calls == [0.0, 0.01] and out.solution.params == retry
    assert out.penalizer == 0.01 and not out.converged
    assert len(out.notes) == 1 and reason in out.notes[0] and "retrying with penalizer=0.01" in out.notes[0]
    assert "retrying with penalizer=0.01" in caplog.text


def test_retry_rules():
    good = {"p": 2.0, "q": 3.0, "v": 9.0}
    solve, calls = _solver({0.0: good})
    out = fit_with_retry(solve, 0.0, 0.01, "GG", ("p", "q"))
    assert calls == [0.0] and out.converged and out.notes == [] and out.penalizer == 0.0
    # no retry when the retry penalizer is not larger
    solve, calls = _solver({0.5: optimize.NotConverged("no")})
    with pytest.raises(ModelFitError, match="did not converge"):
        fit_with_retry(solve, 0.5, 0.1, "GG", ("p", "q"))
    assert calls == [0.5]
    solve, calls = _solver({0.0: optimize.NotConverged("no"), 0.01: {"p": 2.0, "q": 2e7, "v": 9.0}})
    with pytest.raises(ModelFitError, match="GG: the fit did not converge .*degenerate.*retry_penalizer"):
        fit_with_retry(solve, 0.0, 0.01, "GG", ("p", "q"))


def test_degenerate_gamma_gamma_fit_uses_the_retry(cdnow_summary, monkeypatch):
    """The model-level path: an unpenalised optimum with q past the threshold (made so by the
    patched optimiser) is rejected, and the penalised retry is used and reported."""
    original = optimize.minimize

    def runs_off(objective, x0, tol=1e-7, hess_inv0=None):
        if objective.penalizer == 0.0:
            return np.log([2.0, 2 * MAX_SHAPE, 3.0]), np.eye(3)
        return original(objective, x0, tol, hess_inv0)

    monkeypatch.setattr(optimize, "minimize", runs_off)
    g = GammaGammaModel(retry_penalizer=0.001).fit(cdnow_summary)
    assert not g.converged_ and g.penalizer_ == g.retry_penalizer
    assert g.params_["q"] < MAX_SHAPE and any("degenerate" in w for w in g.warnings_)


# ------------------------------------------------------------------ warm start and solvers
def test_numpy_solver_with_warm_start_reaches_lifetimes_full_fit(monkeypatch):
    """The default solver (warm start from a subsample, then BFGS on all distinct rows) reaches the
    optimum of lifetimes' full per-customer fit, penalised or not."""
    from rebuy.simulate import simulate

    sim = simulate(n_customers=6000, seed=11, n_products=200)
    s = rfm_summary(sim.transactions, as_of=sim.truth["end"], time_unit="weeks")
    monkeypatch.setattr(optimize, "WARM_START_CUSTOMERS", 1000)  # 6000 customers > 2 x 1000: warm start
    sizes = []
    original = optimize.minimize
    monkeypatch.setattr(
        optimize, "minimize", lambda o, *a, **k: (sizes.append(float(o.W)), original(o, *a, **k))[1]
    )
    rep = repeat_customers(s)
    for pen in (0.0, 0.001):
        sizes.clear()
        bg = BGNBDModel(penalizer=pen).fit(s)
        gg = GammaGammaModel(penalizer=pen).fit(s)
        assert sizes[0] < 0.5 * len(s) and sizes[1] == len(s)  # subsample first, then all customers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = BetaGeoFitter(penalizer_coef=pen).fit(s["frequency"], s["recency"], s["T"])
            ref_gg = GammaGammaFitter(penalizer_coef=pen).fit(rep["frequency"], rep["monetary_value"])
        objective, scale = bgnbd_objective(s, pen)
        assert_same_optimum(objective, bgnbd_theta(bg.params_, scale), bgnbd_theta(ref.params_, scale))
        assert_same_optimum(gg_objective(s, pen), gg_theta(gg.params_), gg_theta(ref_gg.params_))
        per_customer = bg.log_likelihood(s["frequency"], s["recency"], s["T"]).sum()
        assert bg.log_likelihood_ == pytest.approx(per_customer, rel=1e-10)
        lt = BGNBDModel(penalizer=pen, solver="lifetimes").fit(s)
        assert_same_optimum(objective, bgnbd_theta(lt.params_, scale), bgnbd_theta(ref.params_, scale))


def _counting_minimize(monkeypatch) -> list[int]:
    """Patch optimize.minimize to record how many objective evaluations each call makes."""
    calls: list[int] = []
    original = optimize.minimize

    def counted(objective, *args, **kwargs):
        n = [0]

        def wrapped(theta):
            n[0] += 1
            return objective(theta)

        wrapped.penalizer, wrapped.W = objective.penalizer, objective.W
        try:
            return original(wrapped, *args, **kwargs)
        finally:
            objective.fun_ = getattr(wrapped, "fun_", None)
            calls.append(n[0])

    monkeypatch.setattr(optimize, "minimize", counted)
    return calls


def test_a_fit_started_from_a_similar_fit_reaches_the_same_optimum_in_fewer_evaluations(monkeypatch):
    """The selection's next holdout window starts from the previous window's optimum and BFGS
    curvature: the same minimum of its own objective as lifetimes' cold start, a fraction of the work."""
    from rebuy.simulate import simulate

    sim = simulate(n_customers=3000, seed=5, n_products=100)
    end = pd.Timestamp(sim.truth["end"])
    earlier = rfm_summary(sim.transactions, as_of=end - pd.Timedelta(days=90), time_unit="weeks")
    later = rfm_summary(sim.transactions, as_of=end, time_unit="weeks")
    calls = _counting_minimize(monkeypatch)
    previous = BGNBDModel().fit(earlier)
    calls.clear()
    cold = BGNBDModel().fit(later)
    warm = BGNBDModel().fit(later, start_from=previous)
    assert len(calls) == 2 and calls[1] * 2 < calls[0]  # one BFGS run each; the started one is far shorter
    objective, scale = bgnbd_objective(later, 0.0)
    assert_same_optimum(objective, bgnbd_theta(warm.params_, scale), bgnbd_theta(cold.params_, scale))
    assert warm.log_likelihood_ == pytest.approx(cold.log_likelihood_, rel=1e-9)


def test_a_start_on_a_flat_ridge_is_not_used(monkeypatch):
    """Where BFGS's curvature says the optimum is not identified in some direction (condition number
    above MAX_START_CONDITION), the start would decide where along the ridge the fit stops: the fit
    then runs exactly as without it."""
    from rebuy.simulate import simulate

    sim = simulate(n_customers=3000, seed=5, n_products=100)
    summary = rfm_summary(sim.transactions, as_of=sim.truth["end"], time_unit="weeks")
    previous = BGNBDModel().fit(summary)
    theta = np.log(list(previous.params_.values()))
    flat = np.diag([1.0, 1.0, 1.0, 10 * optimize.MAX_START_CONDITION])
    assert optimize.well_conditioned(previous.__dict__["_hess_inv"]) and not optimize.well_conditioned(flat)
    previous.__dict__["_hess_inv"] = flat
    starts = []
    original = optimize.minimize
    monkeypatch.setattr(optimize, "minimize", lambda o, x0, **k: (starts.append(np.array(x0)), original(o, x0, **k))[1])
    again = BGNBDModel().fit(summary, start_from=previous)
    assert len(starts) == 1 and np.allclose(starts[0], 0.1)  # lifetimes' start, not the previous optimum
    assert not np.allclose(starts[0], theta)
    assert again.params_ == BGNBDModel().fit(summary).params_


def test_start_from_must_be_a_fitted_model_of_the_same_kind():
    from rebuy.errors import InvalidParameterError
    from rebuy.models import MBGNBDModel
    from rebuy.simulate import simulate

    sim = simulate(n_customers=500, seed=5, n_products=50)
    summary = rfm_summary(sim.transactions, as_of=sim.truth["end"], time_unit="weeks")
    with pytest.raises(InvalidParameterError, match="start_from must be a fitted BGNBDModel, got MBGNBDModel"):
        BGNBDModel().fit(summary, start_from=MBGNBDModel().fit(summary))
    with pytest.raises(InvalidParameterError, match="start_from must be a fitted BGNBDModel"):
        BGNBDModel().fit(summary, start_from=BGNBDModel())


def test_lifetimes_solver_non_convergence_retries_with_penalizer(cdnow_summary, monkeypatch, caplog):
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
    calls = []
    original = optimize.minimize

    def flaky(objective, x0, tol=1e-7, hess_inv0=None):
        calls.append(objective.penalizer)
        if objective.penalizer == 0.0:
            raise optimize.NotConverged("Desired error not necessarily achieved due to precision loss.")
        return original(objective, x0, tol, hess_inv0)

    monkeypatch.setattr(optimize, "minimize", flaky)
    with caplog.at_level(logging.WARNING, logger="rebuy.models"):
        m = BGNBDModel(penalizer=0.0, retry_penalizer=0.01).fit(cdnow_summary)
    assert calls == [0.0, 0.01]
    assert m.penalizer_ == 0.01 and not m.converged_
    assert "retrying with penalizer=0.01" in caplog.text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = cdnow_summary
        ref = BetaGeoFitter(penalizer_coef=0.01).fit(s["frequency"], s["recency"], s["T"])
    objective, scale = bgnbd_objective(cdnow_summary, 0.01)
    assert_same_optimum(objective, bgnbd_theta(m.params_, scale), bgnbd_theta(ref.params_, scale))

    def nan_start(objective, x0, tol=1e-7, hess_inv0=None):
        if objective.penalizer == 0.0:
            return np.array([np.nan, 0.0, 0.0]), np.eye(3)
        return original(objective, x0, tol, hess_inv0)

    monkeypatch.setattr(optimize, "minimize", nan_start)
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


# ------------------------------------------------------------------ Hessian
@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_numerical_hessian_equals_autograd(cdnow_summary, penalizer):
    from autograd import hessian

    objective, scale, args = bgnbd_problem(cdnow_summary, penalizer)
    for theta in (np.log([0.24, 4.4 * scale, 0.79, 2.4]), np.array([1.0, -3.0, 0.5, -0.5])):
        ref = hessian(BetaGeoFitter._negative_log_likelihood)(theta, *args)
        np.testing.assert_allclose(numerical_hessian(objective, theta), ref, rtol=1e-6, atol=1e-9)


def test_covariance_is_nan_when_the_hessian_is_not_positive_definite():
    from rebuy.models.optimize import covariance_from_hessian

    assert np.isnan(covariance_from_hessian(np.array([[1.0, 0.0], [0.0, -1.0]]), np.ones(2), 10)).all()
    assert np.isnan(covariance_from_hessian(np.zeros((2, 2)), np.ones(2), 10)).all()
    cov = covariance_from_hessian(np.diag([2.0, 4.0]), np.array([3.0, 5.0]), 10)
    np.testing.assert_allclose(cov, np.diag([9.0 / 2 / 10, 25.0 / 4 / 10]))
