"""rebuy.models.predictive and the moment hooks behind it: purchase-count and order-value moments
equal Monte Carlo draws of the fitted processes, and the spend interval covers simulated futures."""

from __future__ import annotations

import numpy as np
import pytest

from rebuy.models import PURCHASE_MODELS, BGNBDModel, GammaGammaModel
from rebuy.models.predictive import mixture_quantile, nominal_coverage, parameter_variance, spend_forecast
from rebuy.simulate import simulate

BG = {"r": 0.6, "alpha": 8.0, "a": 0.8, "b": 3.0}
GG = {"p": 6.0, "q": 4.0, "v": 22.5}
PARAMS = {"bgnbd": BG, "mbgnbd": BG, "pareto_nbd": {"r": 0.6, "alpha": 8.0, "s": 0.7, "beta": 12.0}}


def _alive_future_counts(name: str, params: dict, x: float, T: float, t: float, n: int, rng) -> np.ndarray:
    """Monte Carlo purchases in the next t weeks of a customer alive at T after x repeat purchases."""
    lam = rng.gamma(params["r"] + x, 1.0 / (params["alpha"] + T), n)
    if name == "pareto_nbd":
        mu = rng.gamma(params["s"], 1.0 / (params["beta"] + T), n)
        life = rng.exponential(1.0 / mu)
        return rng.poisson(lam * np.minimum(t, life))
    b_post = params["b"] + x + (1 if name == "mbgnbd" else 0)  # MBG/NBD: dropout possible after the first purchase
    p = rng.beta(params["a"], b_post, n)
    return np.minimum(rng.poisson(lam * t), rng.geometric(p))


@pytest.mark.parametrize("name", sorted(PURCHASE_MODELS))
@pytest.mark.parametrize("x, T", [(0, 10.0), (1, 30.0), (4, 52.0), (25, 100.0)])
def test_alive_count_moments_equal_monte_carlo(name, x, T):
    model = PURCHASE_MODELS[name].from_params(PARAMS[name])
    p0, m1, m2 = (float(v[0]) for v in model.alive_count_moments(52.0, [x], [T]))
    n = 400_000
    draws = _alive_future_counts(name, PARAMS[name], x, T, 52.0, n, np.random.default_rng(x))
    fact2 = draws * (draws - 1.0)
    assert p0 == pytest.approx((draws == 0).mean(), abs=4 * np.sqrt(p0 * (1 - p0) / n) + 1e-12)
    assert m1 == pytest.approx(draws.mean(), abs=4 * draws.std() / np.sqrt(n))
    assert m2 == pytest.approx(fact2.mean(), abs=4 * fact2.std() / np.sqrt(n))


@pytest.mark.parametrize("name", sorted(PURCHASE_MODELS))
def test_alive_mean_times_p_alive_is_expected_purchases(name):
    model = PURCHASE_MODELS[name].from_params(PARAMS[name])
    x = np.array([0.0, 1, 2, 5, 30, 0, 3])
    T = np.array([5.0, 20, 40, 52, 90, 60, 0.5])
    tx = np.minimum(T * 0.7, T)
    tx[x == 0] = 0
    for t in (4.0, 13.0, 52.0):
        _, m1, _ = model.alive_count_moments(t, x, T)
        np.testing.assert_allclose(m1 * model.p_alive(x, tx, T), model.expected_purchases(t, x, tx, T), rtol=1e-7)


def test_zero_horizon_has_no_purchases():
    p0, m1, m2 = BGNBDModel.from_params(BG).alive_count_moments(0.0, [0, 3], [10.0, 20.0])
    assert (p0 == 1).all() and (m1 == 0).all() and (m2 == 0).all()


def test_order_value_moments_equal_monte_carlo():
    gg = GammaGammaModel.from_params(GG)
    x, m = np.array([0.0, 1, 3, 10]), np.array([0.0, 30, 80, 45])
    ez, ez2, ezz, _ = gg.order_value_moments(x, m)
    rng = np.random.default_rng(3)
    n = 1_000_000
    for i in range(len(x)):
        nu = rng.gamma(GG["p"] * x[i] + GG["q"], 1.0 / (GG["v"] + x[i] * m[i]), n)
        z1, z2 = rng.gamma(GG["p"], 1.0 / nu), rng.gamma(GG["p"], 1.0 / nu)
        for ours, draws in ((ez[i], z1), (ez2[i], z1**2), (ezz[i], z1 * z2)):
            assert ours == pytest.approx(draws.mean(), abs=5 * draws.std() / np.sqrt(n))


def test_heavy_tailed_spend_keeps_a_finite_spread():
    gg = GammaGammaModel.from_params({"p": 2.0, "q": 1.5, "v": 20.0})  # p x + q <= 2 for one-time buyers
    ez, ez2, ezz, _ = gg.order_value_moments([0.0, 5.0], [0.0, 40.0])
    assert np.isfinite(ez2).all() and (ezz >= ez**2).all() and (ez2 > ezz).all()


def test_mixture_quantile_matches_a_gamma_law():
    from scipy.stats import gamma

    shape, scale, p_none = 2.5, 40.0, 0.3
    mean = (1 - p_none) * shape * scale
    second = (1 - p_none) * shape * (shape + 1) * scale**2
    for level in (0.2, 0.5, 0.95):
        q = mixture_quantile(level, np.array([p_none]), np.array([mean]), np.array([second]))[0]
        expected = 0.0 if level <= p_none else gamma.ppf((level - p_none) / (1 - p_none), shape, scale=scale)
        assert q == pytest.approx(expected, rel=4e-3, abs=1e-9)  # arguments rounded to 0.25% (QUANTILE_GRID)


def _simulated_spend(params_bg: dict, x: np.ndarray, T: np.ndarray, t: float, rng) -> np.ndarray:
    """One draw of each customer's spend in the next t weeks from the true processes (alive-now
    customers of a BG/NBD shop with Gamma-Gamma values and no observed repeat spend)."""
    lam = rng.gamma(params_bg["r"] + x, 1.0 / (params_bg["alpha"] + T))
    p = rng.beta(params_bg["a"], params_bg["b"] + x)
    n = np.minimum(rng.poisson(lam * t), rng.geometric(p))
    nu = rng.gamma(GG["q"], 1.0 / GG["v"], len(x))
    return np.where(n > 0, rng.gamma(np.maximum(n * GG["p"], 1e-12), 1.0 / nu), 0.0)


def test_interval_covers_ninety_percent_of_simulated_futures():
    pm, gg = BGNBDModel.from_params(BG), GammaGammaModel.from_params(GG)
    rng = np.random.default_rng(11)
    n = 200_000
    x = np.zeros(n)  # one-time buyers: P(alive) = 1 under BG/NBD, spend level from the prior
    T = rng.uniform(1, 104, n)
    f = spend_forecast(pm, gg, 52.0, (x, x, T, x), np.ones(n))
    spend = _simulated_spend(BG, x, T, 52.0, rng)
    inside = (spend >= f.lower) & (spend <= f.upper)
    expected = nominal_coverage(f.p_none)
    assert 0.9 <= expected.mean() <= 0.95
    assert inside.mean() == pytest.approx(expected.mean(), abs=0.01)  # the approximation costs < 1 point
    assert (spend == 0).mean() == pytest.approx(f.p_none.mean(), abs=0.005)
    assert f.mean.mean() == pytest.approx(spend.mean(), rel=0.02)


def test_parameter_variance_is_zero_without_a_covariance_and_shrinks_with_data():
    rows = (np.array([0.0, 2, 6]), np.array([0.0, 20, 40]), np.array([30.0, 50, 60]), np.array([0.0, 40, 50]))
    none = parameter_variance(BGNBDModel.from_params(BG), GammaGammaModel.from_params(GG), 52.0, rows)
    assert (none == 0).all()
    variances = []
    for n in (4_000, 40_000):
        from rebuy.features import rfm_summary

        tx = simulate(n, seed=1, events=False, n_products=50).transactions
        summary = rfm_summary(tx, time_unit="weeks")
        pm, gg = BGNBDModel().fit(summary), GammaGammaModel().fit(summary)
        variances.append(parameter_variance(pm, gg, 52.0, rows))
    assert (variances[0] > 0).all()
    ratio = variances[0] / variances[1]
    assert ((ratio > 4) & (ratio < 25)).all()  # ~10x the customers: ~10x less parameter variance
