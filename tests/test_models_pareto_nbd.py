"""rebuy.models.pareto_nbd: the objective is lifetimes' (value and gradient), the tail integral and
its recurrence are exact, the fit reproduces the published CDNOW values and lifetimes' optimum,
predictions equal lifetimes' and stay finite on awkward data, simulated truth is recovered and the
forecasts are calibrated, weights are counts, and bad input gives clear errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad

from models_common import (  # noqa: F401 (fixtures)
    assert_same_optimum,
    cdnow_summary_fixture,
    lifetimes_with_params,
    random_customers,
)
from rebuy.errors import InvalidParameterError
from rebuy.models import ModelFitError, ParetoNBDForecast, ParetoNBDModel, ParetoNBDObjective
from rebuy.models.base import ConditionalForecast
from rebuy.models.inputs import distinct_rows
from rebuy.models.pareto_nbd import PairLayout, log_tail_integral, pair_terms

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lifetimes import ParetoNBDFitter

PAPER = {"r": 0.55, "alpha": 10.58, "s": 0.61, "beta": 11.67}
"""Published Pareto/NBD estimates on the CDNOW sample (Fader, Hardie & Lee 2005 note; weeks)."""

GRID_PARAMS = [
    PAPER,
    {"r": 2.0, "alpha": 5.0, "s": 1.5, "beta": 40.0},
    {"r": 0.3, "alpha": 30.0, "s": 3.0, "beta": 2.0},
    {"r": 1.2, "alpha": 1.0, "s": 0.4, "beta": 150.0},
]


@pytest.fixture(scope="module", name="pnbd")
def pnbd_fixture(cdnow_summary) -> ParetoNBDModel:
    return ParetoNBDModel().fit(cdnow_summary)


def lifetimes_pnbd(params: dict[str, float]) -> ParetoNBDFitter:
    return lifetimes_with_params(ParetoNBDFitter, params)


def problem(summary: pd.DataFrame, penalizer: float) -> tuple[ParetoNBDObjective, float, tuple]:
    """rebuy's objective on the distinct rows, the time scale, and lifetimes'
    ``_negative_log_likelihood`` arguments for the same rows (its penalizer is per row sum)."""
    (x, tx, T), counts, _ = distinct_rows(summary["frequency"], summary["recency"], summary["T"])
    scale = 1.0 / T.max()
    w = counts.astype(float)
    args = (x.astype(int), tx * scale, T * scale, w, penalizer * len(x))
    return ParetoNBDObjective(x, tx, T, w, penalizer, scale), scale, args


def lifetimes_mean(theta: np.ndarray, args: tuple) -> float:
    """lifetimes' objective divided by the number of rows: rebuy's weighted mean form."""
    return ParetoNBDFitter._negative_log_likelihood(np.exp(theta), *args) / len(args[0])


THETAS = [np.full(4, 0.1), np.log([0.55, 0.14, 0.61, 0.15]), np.array([1.0, -3.0, 0.5, -0.5]), np.array([-1.0, -4.0, 1.0, -1.0])]


# ------------------------------------------------------------------ objective
@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_objective_value_equals_lifetimes(cdnow_summary, penalizer):
    ours, _, args = problem(cdnow_summary, penalizer)
    for theta in THETAS:
        assert ours(theta)[0] == pytest.approx(lifetimes_mean(theta, args), rel=1e-13)


def _richardson_gradient(fun, theta: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Central differences of ``fun`` at ``theta``, Richardson extrapolated (truncation error
    O(h^4), rounding ~1e-16 / h)."""
    grad = np.empty(len(theta))
    for j, e in enumerate(np.eye(len(theta))):
        d = [(fun(theta + k * e) - fun(theta - k * e)) / (2 * k) for k in (h, h / 2)]
        grad[j] = (4 * d[1] - d[0]) / 3
    return grad


@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_gradient_equals_finite_differences_of_lifetimes(cdnow_summary, penalizer):
    ours, _, args = problem(cdnow_summary, penalizer)
    for theta in THETAS:
        fd = _richardson_gradient(lambda th: lifetimes_mean(th, args), theta)
        np.testing.assert_allclose(ours(theta)[1], fd, rtol=1e-7, atol=1e-9)


def _tail_reference(p: float, q: float, alpha: float, beta: float, a: float) -> float:
    """log G by adaptive quadrature in v = log(M + y), independent of rebuy's series and panels:
    the integrand relative to its value at y = a, on pieces graded from the initial decay scale to
    the final one (the rate in v is at least p + q - 1, so the rest is below e^-45)."""
    M = max(alpha, beta)
    log_fa = -p * math.log(alpha + a) - q * math.log(beta + a)

    def f(v):
        y = math.exp(v) - M
        return math.exp(v - p * math.log(alpha + y) - q * math.log(beta + y) - log_fa - math.log(M + a))

    v0 = math.log(M + a)
    first = 1.0 / (p * (M + a) / (alpha + a) + q * (M + a) / (beta + a) - 1.0)  # initial decay scale in v
    last = 1.0 / (p + q - 1.0)
    steps = sorted({first * k for k in (1e-6, 1e-3, 0.1, 1, 3, 10, 30)} | {last * k for k in (0.1, 1, 5, 20, 45)})
    edges = [v0] + [v0 + d for d in steps]
    total = sum(quad(f, lo, hi, epsabs=1e-16 * first, epsrel=1e-13, limit=200)[0] for lo, hi in zip(edges[:-1], edges[1:], strict=True))
    return math.log(total) + log_fa + math.log(M + a)


TAIL_POINTS = [
    # (p, q, alpha, beta, a): series (u small), series near its limit, quadrature (u near 1),
    # heavy buyers, alpha = beta (u = 0), the beta-side exponent larger
    (1.55, 1.61, 10.58, 11.67, 0.0),
    (3.2, 0.7, 2.0, 6.5, 0.3),
    (0.6, 1.4, 8.0, 0.01, 0.0),
    (1000.3, 1.5, 0.2, 3.0, 0.05),
    (2.0, 1.5, 1.0, 1.0, 0.5),
    (21.0, 0.1, 0.003, 5.0, 0.0),
]


@pytest.mark.parametrize("point", TAIL_POINTS)
def test_log_tail_integral_matches_adaptive_quadrature(point):
    assert log_tail_integral(*(np.array([v]) for v in point[:2]), *point[2:4], np.array([point[4]])).log[0] == (
        pytest.approx(_tail_reference(*point), rel=1e-11)
    )


@pytest.mark.parametrize("point", TAIL_POINTS)
def test_log_tail_integral_gradient_matches_finite_differences(point):
    base = np.array(point[:4])
    a = np.array([point[4]])

    def value(v):
        return log_tail_integral(np.array([v[0]]), np.array([v[1]]), v[2], v[3], a).log[0]

    grad = log_tail_integral(np.array([base[0]]), np.array([base[1]]), base[2], base[3], a).grad[:, 0]
    fd = np.empty(4)
    for j in range(4):
        h = 1e-5 * base[j]
        up, down = base.copy(), base.copy()
        up[j] += h
        down[j] -= h
        fd[j] = (value(up) - value(down)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_log_tail_integral_equals_lifetimes_hyp2f1_form():
    """lifetimes' ``_log_A_0`` is (r + s + x) times the integral of (alpha+y)^-(r+x) (beta+y)^-(s+1)
    over [t_x, T] = J(t_x) - J(T), where scipy's hyp2f1 is accurate (moderate parameters)."""
    rng = np.random.default_rng(3)
    r, alpha, s, beta = 0.55, 10.58, 0.61, 11.67
    x = rng.integers(0, 30, 200).astype(float)
    T = rng.uniform(1, 80, 200)
    tx = T * rng.uniform(0, 0.9, 200)
    lj = [log_tail_integral(r + x, s + 1, alpha, beta, a).log for a in (tx, T)]
    ours = np.log(r + s + x) + lj[0] + np.log(-np.expm1(lj[1] - lj[0]))
    ref = ParetoNBDFitter._log_A_0([r, alpha, s, beta], x, tx, T)
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_recurrence_equals_direct_evaluation():
    """pair_terms walks the x recurrence from one direct evaluation per run: on random pairs and
    parameters (both walk directions, rho of either sign, x up to 3000) it equals
    log_tail_integral at every pair."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(40):
        r, s = np.exp(rng.uniform(math.log(0.02), math.log(30), 2))
        alpha, beta = np.exp(rng.uniform(math.log(1e-3), math.log(100), 2))
        x = np.r_[rng.integers(0, 60, 150), rng.integers(0, 3000, 150)].astype(float)
        a = rng.choice(np.r_[0.0, np.exp(rng.uniform(-6, 1, 8))], 300)
        x, a = np.unique(np.stack([x, a], 1), axis=0).T
        terms = pair_terms(np.array([r, alpha, s, beta]), PairLayout(x, a))
        log_p = -(r + x) * np.log(alpha + a) - s * np.log(beta + a)
        j = log_tail_integral(r + x, s + 1, alpha, beta, a).log
        h = log_tail_integral(r + x + 1, s, alpha, beta, a).log
        worst = max(
            worst,
            np.abs(np.log(terms.sigma) - (math.log(s) + j - log_p)).max(),
            np.abs(np.log(terms.h) - (np.log(r + x) + h - log_p)).max(),
        )
    assert worst < 1e-10


# ------------------------------------------------------------------ fit
def test_fit_reproduces_published_cdnow_values(pnbd):
    assert {k: round(v, 2) for k, v in pnbd.params_.items()} == PAPER
    assert pnbd.converged_
    assert round(pnbd.log_likelihood_, 1) == -9595.0  # FHL 2005 note: LL = -9595.0


def test_fit_is_lifetimes_optimum(pnbd, cdnow_summary):
    """lifetimes' ParetoNBDFitter (Nelder-Mead, tightened to 1e-8 so that it stops at the optimum)
    and rebuy reach the same minimum of the same objective."""
    s = cdnow_summary
    ref = ParetoNBDFitter().fit(s["frequency"], s["recency"], s["T"], initial_params=np.ones(4), tol=1e-8, maxiter=20000)
    ours, scale, _ = problem(s, 0.0)
    to_theta = ParetoNBDModel()._to_theta
    cols = [s["T"].to_numpy()] * 3
    assert_same_optimum(ours, to_theta(pnbd.params_, cols), to_theta(dict(ref.params_), cols))


def test_lifetimes_solver_fits_the_same_objective(pnbd, cdnow_summary):
    """solver="lifetimes" calls ParetoNBDFitter (its tolerance 1e-4, a fixed start) on the distinct
    rows with the penalizer converted to its per-row-sum form: the same optimum to its tolerance."""
    via = ParetoNBDModel(solver="lifetimes").fit(cdnow_summary)
    for k, v in pnbd.params_.items():
        assert via.params_[k] == pytest.approx(v, rel=2e-3)
    pen = 0.05
    ours = ParetoNBDModel(penalizer=pen).fit(cdnow_summary)
    theirs = ParetoNBDModel(penalizer=pen, solver="lifetimes").fit(cdnow_summary)
    for k, v in ours.params_.items():
        assert theirs.params_[k] == pytest.approx(v, rel=2e-3)
    assert abs(ours.params_["beta"] - pnbd.params_["beta"]) > 0.05 * pnbd.params_["beta"]  # the penalty bites


def test_sample_weight_on_distinct_rows_equals_the_full_fit(cdnow_summary):
    s = cdnow_summary
    distinct = s.groupby(["frequency", "recency", "T"]).size().rename("count").reset_index()
    full = ParetoNBDModel(penalizer=0.01).fit(s)
    weighted = ParetoNBDModel(penalizer=0.01).fit(
        distinct[["frequency", "recency", "T"]], time_unit="weeks", sample_weight=distinct["count"]
    )
    for k in full.params_:
        assert weighted.params_[k] == pytest.approx(full.params_[k], rel=1e-9)
    assert weighted.log_likelihood_ == pytest.approx(full.log_likelihood_, rel=1e-12)
    assert weighted.n_customers_ == len(s)
    for k in full.standard_errors_:
        assert weighted.standard_errors_[k] == pytest.approx(full.standard_errors_[k], rel=1e-7)


# ------------------------------------------------------------------ predictions
def test_predictions_equal_lifetimes_on_cdnow(pnbd, cdnow_summary):
    s = cdnow_summary
    ref = lifetimes_pnbd(pnbd.params_)
    x, tx, T = s["frequency"].to_numpy(), s["recency"].to_numpy(), s["T"].to_numpy()
    np.testing.assert_allclose(pnbd.p_alive(x, tx, T), ref.conditional_probability_alive(x, tx, T), rtol=1e-10)
    for t in [1.0, 4.3, 39.0, 52.0, 260.0]:
        np.testing.assert_allclose(
            pnbd.expected_purchases(t, x, tx, T), ref.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T), rtol=1e-10
        )
    for t in [1.0, 39.0]:
        none = ref.conditional_probability_of_n_purchases_up_to_time(0, t, x, tx, T)
        np.testing.assert_allclose(pnbd.probability_of_purchase(t, x, tx, T), 1 - none, rtol=1e-10, atol=1e-15)
    t = np.linspace(0.5, 200, 50)
    np.testing.assert_allclose(pnbd.expected_purchases_population(t), ref.expected_number_of_purchases_up_to_time(t), rtol=1e-12)
    ll = ParetoNBDFitter._conditional_log_likelihood(list(pnbd.params_.values()), x, tx, T)
    np.testing.assert_allclose(pnbd.log_likelihood(x, tx, T), ll, rtol=1e-12)


@pytest.mark.parametrize("params", GRID_PARAMS)
def test_predictions_equal_lifetimes_on_random_grid(params):
    x, tx, T, t = random_customers(1, 3000, 0.5, 40)
    m, ref = ParetoNBDModel.from_params(params), lifetimes_pnbd(params)
    with np.errstate(all="ignore"):
        expected = ref.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T)
        alive = ref.conditional_probability_alive(x, tx, T)
    ok = np.isfinite(expected) & np.isfinite(alive)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(m.expected_purchases(t, x, tx, T)[ok], expected[ok], rtol=1e-8)
    np.testing.assert_allclose(m.p_alive(x, tx, T)[ok], alive[ok], rtol=1e-8)


def test_heavy_buyers_t_zero_and_T_zero_are_finite():
    m = ParetoNBDModel.from_params({"r": 2.0, "alpha": 0.5, "s": 0.8, "beta": 20.0})
    x = np.array([500, 1000, 10000, 800, 0, 0, 5], dtype=float)
    T = np.array([100, 100, 100, 50, 0, 30, 0], dtype=float)
    tx = np.where(x > 0, 0.99 * T, 0.0)
    tx[-1] = 0.0
    with np.errstate(all="ignore"):
        lifetimes_alive = lifetimes_pnbd(m.params_).conditional_probability_alive(x[:4], tx[:4], T[:4])
    assert not np.isfinite(lifetimes_alive).all()  # lifetimes' hyp2f1 form overflows here
    for t in [0.0, 1.0, 39.0, 5000.0]:
        for values in (m.expected_purchases(t, x, tx, T), m.probability_of_purchase(t, x, tx, T)):
            assert np.isfinite(values).all() and (values >= 0).all()
    assert (m.expected_purchases(0.0, x, tx, T) == 0).all()
    assert (m.probability_of_purchase(0.0, x, tx, T) == 0).all()
    assert m.p_alive(0, 0, 0)[0] == pytest.approx(1.0, abs=1e-14)  # nothing observed yet
    gone = m.p_alive(np.array([1000.0]), np.array([1.0]), np.array([100.0]))  # heavy buyer, silent for 99 weeks
    assert np.isfinite(gone).all() and 0 <= gone[0] < 1e-12
    assert np.isfinite(m.log_likelihood(x, tx, T)).all()


def test_s_at_one_is_continuous():
    """The closed forms divide by s - 1 (lifetimes returns NaN at s = 1): finite and continuous."""
    t = np.array([1.0, 39.0, 520.0])
    models = [ParetoNBDModel.from_params({**PAPER, "s": s}) for s in (1.0 - 1e-6, 1.0, 1.0 + 1e-6)]
    cond = [m.expected_purchases(t, 2, 20, 38) for m in models]
    pop = [m.expected_purchases_population(t) for m in models]
    for values in (cond, pop):
        assert all(np.isfinite(v).all() for v in values)
        np.testing.assert_allclose(values[0], values[1], rtol=1e-5)
        np.testing.assert_allclose(values[2], values[1], rtol=1e-5)


def _posterior_draws(params: dict[str, float], x: float, T: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rate lambda and remaining lifetime tau of a customer alive at T after x repeat purchases:
    lambda ~ Gamma(r + x, alpha + T), mu ~ Gamma(s, beta + T), tau ~ Exp(mu)."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params["r"] + x, 1.0 / (params["alpha"] + T), n)
    mu = rng.gamma(params["s"], 1.0 / (params["beta"] + T), n)
    return lam, rng.exponential(1.0 / mu)


@pytest.mark.parametrize("history", [(0, 0.0, 30.0), (4, 30.0, 38.0), (12, 20.0, 60.0), (60, 70.0, 71.0)])
def test_forecasts_given_alive_match_monte_carlo(history):
    """P(a purchase in t | alive) and E[purchases in t | alive] against draws of the posterior
    process: N ~ Poisson(lambda min(tau, t)); within 4 Monte Carlo standard errors."""
    x, tx, T = history
    m = ParetoNBDModel.from_params(PAPER)
    lam, tau = _posterior_draws(PAPER, x, T, 400_000, seed=int(x))
    for t in (4.0, 39.0, 150.0):
        n = np.random.default_rng(1).poisson(lam * np.minimum(tau, t))
        alive = m.p_alive(x, tx, T)[0]
        p_hat, p_se = (n > 0).mean(), (n > 0).std() / math.sqrt(len(n))
        assert m.probability_of_purchase(t, x, tx, T)[0] / alive == pytest.approx(p_hat, abs=4 * p_se)
        e_hat, e_se = n.mean(), n.std() / math.sqrt(len(n))
        assert m.expected_purchases(t, x, tx, T)[0] / alive == pytest.approx(e_hat, abs=4 * e_se)


def test_conditional_forecast_equals_the_generic_one(pnbd, cdnow_summary):
    """The fast forecast (work shared per distinct (x, T) pair) gives the generic forecast's values,
    including next-purchase days by bisection on P(a purchase) (not BG/NBD's closed form)."""
    s = cdnow_summary
    x, tx, T = s["frequency"].to_numpy(), s["recency"].to_numpy(), s["T"].to_numpy()
    fast = pnbd.conditional(x, tx, T)
    assert isinstance(fast, ParetoNBDForecast)
    generic = ConditionalForecast(pnbd, x, tx, T)
    horizons = [4.3, 39.0]
    pairs = zip(fast.iter_expected_purchases(horizons), generic.iter_expected_purchases(horizons), strict=True)
    for ours, reference in pairs:
        np.testing.assert_allclose(ours, reference, rtol=1e-12)
    np.testing.assert_allclose(fast.probability_of_purchase(39.0), generic.probability_of_purchase(39.0), rtol=1e-12)
    np.testing.assert_array_equal(fast.next_purchase_days(730), generic.next_purchase_days(730))


# ------------------------------------------------------------------ simulated truth
TRUTH = {"r": 0.8, "alpha": 10.0, "s": 0.6, "beta": 12.0}
"""Simulation parameters (weeks): a purchase every ~12.5 weeks, a median lifetime of ~2 years."""


def simulate_pareto_nbd(params: dict[str, float], n: int, seed: int, horizon: float) -> dict[str, np.ndarray]:
    """The Pareto/NBD process: lambda ~ Gamma(r, alpha), mu ~ Gamma(s, beta) (shape, rate), a
    lifetime tau ~ Exp(mu) from the first purchase at 0 and Poisson(lambda) repeat purchases while
    alive; each customer is observed for T ~ U(26, 78) weeks (x, t_x, T; times floored to whole days
    as ``rfm_summary`` gives them), and the purchases of the next ``horizon`` weeks are counted
    (``future``)."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params["r"], 1.0 / params["alpha"], n)
    tau = rng.exponential(1.0 / rng.gamma(params["s"], 1.0 / params["beta"], n))
    T = rng.uniform(26.0, 78.0, n)
    active = np.minimum(tau, T)
    x = rng.poisson(lam * active).astype(float)
    tx = np.where(x > 0, active * rng.uniform(size=n) ** (1.0 / np.maximum(x, 1.0)), 0.0)  # last of x uniform times
    future = rng.poisson(lam * np.clip(tau - T, 0.0, horizon)).astype(float)
    return {"frequency": x, "recency": np.floor(tx * 7) / 7, "T": np.floor(T * 7) / 7, "future": future}


@pytest.fixture(scope="module", name="simulated")
def simulated_fixture() -> tuple[pd.DataFrame, ParetoNBDModel]:
    data = pd.DataFrame(simulate_pareto_nbd(TRUTH, 60_000, seed=5, horizon=52.0))
    return data, ParetoNBDModel().fit(data[["frequency", "recency", "T"]], time_unit="weeks")


def test_parameter_recovery_on_simulated_data(simulated):
    """Each estimate within 4 of its standard errors of the truth (60k customers: se ~2-6%)."""
    _, fit = simulated
    for k, true in TRUTH.items():
        se = fit.standard_errors_[k]
        assert 0 < se < 0.1 * true
        assert abs(fit.params_[k] - true) < 4 * se, k


def test_forecasts_are_calibrated_on_the_simulated_future(simulated):
    """Over deciles of the fitted model's forecasts for the next 52 weeks, the mean predicted
    probability of a purchase and expected count match what the simulated customers did, within 4
    standard errors of each decile's mean plus 1% (for the estimation error of the parameters)."""
    data, fit = simulated
    x, tx, T, future = (data[c].to_numpy() for c in ("frequency", "recency", "T", "future"))
    for predicted, observed in (
        (fit.probability_of_purchase(52.0, x, tx, T), (future > 0).astype(float)),
        (fit.expected_purchases(52.0, x, tx, T), future),
    ):
        decile = np.minimum((np.argsort(np.argsort(predicted)) * 10) // len(x), 9)
        for d in range(10):
            rows = decile == d
            se = observed[rows].std() / math.sqrt(rows.sum())
            assert abs(predicted[rows].mean() - observed[rows].mean()) < 4 * se + 0.01 * predicted[rows].mean(), d


# ------------------------------------------------------------------ errors
def test_negative_time_is_a_parameter_error(pnbd):
    for call in (
        lambda: pnbd.expected_purchases(-1.0, 1, 1, 2),
        lambda: pnbd.probability_of_purchase(-1.0, 1, 1, 2),
        lambda: pnbd.expected_purchases_population([1.0, -2.0]),
        lambda: pnbd.conditional(1, 1, 2).probability_of_purchase(-1.0),
    ):
        with pytest.raises(InvalidParameterError, match="t must be >= 0"):
            call()
    with pytest.raises(InvalidParameterError, match="horizons"):
        pnbd.iter_expected_purchases([1.0, -2.0], 1, 1, 2)


def test_bad_input_gives_clear_errors(cdnow_summary):
    with pytest.raises(ModelFitError, match="missing column"):
        ParetoNBDModel().fit(cdnow_summary.drop(columns="recency"))
    bad = cdnow_summary.copy()
    bad.iloc[0, bad.columns.get_loc("recency")] = bad["T"].iloc[0] + 5
    with pytest.raises(ModelFitError, match="exceeds 'T'"):
        ParetoNBDModel().fit(bad)
    with pytest.raises(ModelFitError, match="one-time buyer"):
        ParetoNBDModel().fit(pd.DataFrame({"frequency": [0.0, 0.0], "recency": [0.0, 0.0], "T": [3.0, 5.0]}))
    with pytest.raises(ModelFitError, match="not fitted"):
        ParetoNBDModel().p_alive(1, 1, 2)
    with pytest.raises(ModelFitError, match="solver"):
        ParetoNBDModel(solver="scipy").fit(cdnow_summary)
    with pytest.raises(ModelFitError, match="must be finite and > 0"):
        ParetoNBDModel.from_params({**PAPER, "s": -1.0})
    with pytest.raises(ModelFitError, match=r"missing parameter\(s\) \['beta'\]"):
        ParetoNBDModel.from_params({k: v for k, v in PAPER.items() if k != "beta"})
    with pytest.raises(ModelFitError, match="sample_weight has 2 values"):
        ParetoNBDModel().fit(cdnow_summary, sample_weight=[1, 2])
