"""rebuy.models.mbgnbd: the objective is lifetimes' ModifiedBetaGeoFitter's (value and gradient), the
fit reproduces the published CDNOW values and lifetimes' optimum, predictions equal lifetimes' and
stay finite on awkward data, inputs are validated, weights are counts, and simulated truth (and the
simulated future) is recovered."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

from models_common import (  # noqa: F401 (fixtures)
    HEAVY_BUYER_PARAMS,
    assert_finite_for_heavy_buyers,
    assert_same_optimum,
    bgnbd_problem,
    cdnow_summary_fixture,
    lifetimes_with_params,
    newton_step,
    random_customers,
)
from rebuy.errors import FeatureError, InvalidParameterError
from rebuy.models import (
    PURCHASE_MODELS,
    ConditionalForecast,
    MBGNBDForecast,
    MBGNBDModel,
    MBGNBDObjective,
    ModelFitError,
    mbgnbd_log_likelihood,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lifetimes import ModifiedBetaGeoFitter

PAPER_MBGNBD = {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}
"""Batislam, Denizel & Filiztekin (2007) on the CDNOW sample (calibration to 1997-09-30, weeks)."""

TRUTH = {"r": 0.8, "alpha": 6.0, "a": 0.9, "b": 2.5}
"""Generating parameters of the simulated customers (alpha in weeks)."""

GRID_PARAMS = [
    PAPER_MBGNBD,
    {"r": 2.0, "alpha": 10.0, "a": 1.5, "b": 5.0},
    {"r": 5.0, "alpha": 0.5, "a": 3.0, "b": 0.5},
    {"r": 0.5, "alpha": 1.0, "a": 0.2, "b": 0.3},
]


# ------------------------------------------------------------------ helpers
def lifetimes_mbgnbd(params: dict[str, float]) -> ModifiedBetaGeoFitter:
    return lifetimes_with_params(ModifiedBetaGeoFitter, params)


def mbgnbd_problem(summary: pd.DataFrame, penalizer: float) -> tuple[MBGNBDObjective, float, tuple]:
    """rebuy's MBG/NBD objective on a summary's distinct rows, its time scale (1 / max T), and the
    arguments of lifetimes' ``ModifiedBetaGeoFitter._negative_log_likelihood`` for the same rows
    (BG/NBD's: the same rows, already time-scaled, so the objective gets scale 1)."""
    _, scale, args = bgnbd_problem(summary, penalizer)
    x, tx_scaled, T_scaled, w, _ = args
    return MBGNBDObjective(x.astype(float), tx_scaled, T_scaled, w, penalizer, 1.0), scale, args


def theta_of(params: dict[str, float], scale: float) -> np.ndarray:
    return np.log([params["r"], params["alpha"] * scale, params["a"], params["b"]])


def frt(summary: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return summary["frequency"].to_numpy(), summary["recency"].to_numpy(), summary["T"].to_numpy()


def simulate_mbgnbd(
    params: dict[str, float], n: int, seed: int, horizon: float = 26.0
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """MBG/NBD customers observed over their own window: the RFM summary (weeks), each
    customer's repeat purchases in the ``horizon`` weeks after T (the simulated future) and
    whether the customer is still alive at T.

    Per customer: ``lambda ~ Gamma(r, rate alpha)``, ``p ~ Beta(a, b)``; the first purchase is at
    time 0 and the window T ~ Uniform(0, 78) weeks. The customer drops out with probability p
    right after the first purchase and after each repeat purchase, so the repeat purchases of the
    whole lifetime are ``M = G - 1``, G ~ Geometric(p) (tosses until the first drop). Purchases are
    a Poisson process of rate lambda: N(T) ~ Poisson(lambda T) in the window, independent
    Poisson(lambda * horizon) after it; x = min(N(T), M), the future purchases are
    min(N_future, M - x) (0 for a customer who dropped), and t_x is the x-th of N(T) uniform order
    statistics on (0, T): T * Beta(x, N(T) - x + 1). Alive at T: M > N(T) (survived the toss
    after every purchase so far)."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params["r"], 1.0 / params["alpha"], n)
    p = rng.beta(params["a"], params["b"], n)
    T = rng.uniform(0.0, 78.0, n)
    lifetime_repeats = rng.geometric(np.clip(p, 1e-12, 1.0)) - 1
    in_window = rng.poisson(lam * T)
    after = rng.poisson(lam * horizon)
    x = np.minimum(in_window, lifetime_repeats)
    has = x > 0
    tx = np.zeros(n)
    tx[has] = T[has] * rng.beta(x[has], in_window[has] - x[has] + 1)
    future = np.minimum(after, lifetime_repeats - x)
    summary = pd.DataFrame({"frequency": x.astype(float), "recency": tx, "T": T})
    summary.attrs["time_unit"] = "weeks"
    return summary, future.astype(float), lifetime_repeats > in_window


@pytest.fixture(scope="module", name="mbgnbd")
def mbgnbd_fixture(cdnow_summary) -> MBGNBDModel:
    return MBGNBDModel().fit(cdnow_summary)


@pytest.fixture(scope="module", name="simulated")
def simulated_fixture() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    return simulate_mbgnbd(TRUTH, n=40_000, seed=7)


@pytest.fixture(scope="module", name="simulated_fit")
def simulated_fit_fixture(simulated) -> MBGNBDModel:
    return MBGNBDModel().fit(simulated[0])


# ------------------------------------------------------------------ the objective
@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_objective_and_gradient_equal_lifetimes(cdnow_summary, penalizer):
    """rebuy's objective is lifetimes' own (value to rounding, gradient equal to autograd's)."""
    from autograd import grad

    ours, _, args = mbgnbd_problem(cdnow_summary, penalizer)
    reference = ModifiedBetaGeoFitter._negative_log_likelihood
    for theta in (np.full(4, 0.1), np.log([0.3, 0.1, 0.7, 2.5]), np.array([1.0, -3.0, 0.5, -0.5])):
        f, g = ours(theta)
        assert f == pytest.approx(reference(theta, *args), rel=1e-12)
        np.testing.assert_allclose(g, grad(reference)(theta, *args), rtol=1e-9, atol=1e-12)


def test_gradient_equals_finite_differences(cdnow_summary):
    ours, _, _ = mbgnbd_problem(cdnow_summary, 0.01)
    theta = np.log([0.5, 0.2, 0.9, 1.6])
    h = 1e-6
    numeric = [(ours(theta + h * e)[0] - ours(theta - h * e)[0]) / (2 * h) for e in np.eye(4)]
    np.testing.assert_allclose(ours(theta)[1], numeric, rtol=1e-6, atol=1e-9)


def test_objective_on_one_time_buyers_only_equals_lifetimes():
    """Rows with no repeat buyer (as a warm-start subsample may be): only the one-time terms."""
    from autograd import grad

    T = np.array([0.0, 0.5, 1.0, 3.0])
    x, tx, w = np.zeros(4), np.zeros(4), np.array([1.0, 2.0, 3.0, 4.0])
    ours = MBGNBDObjective(x, tx, T, w, 0.0, 1.0 / 3.0)
    args = (x.astype(int), tx / 3.0, T / 3.0, w, 0.0)
    theta = np.log([0.4, 0.3, 0.8, 1.7])
    f, g = ours(theta)
    reference = ModifiedBetaGeoFitter._negative_log_likelihood
    assert f == pytest.approx(reference(theta, *args), rel=1e-12)
    np.testing.assert_allclose(g, grad(reference)(theta, *args), rtol=1e-9)


def test_log_likelihood_is_lifetimes_objective_in_natural_time(mbgnbd, cdnow_summary):
    """Per-customer log-likelihood = lifetimes' objective (time scaled by s = 1 / max T adds
    -x log(s) per customer); ``log_likelihood_`` is its total at the fit."""
    x, tx, T = frt(cdnow_summary)
    scale = 1.0 / T.max()
    lifetimes_mean = ModifiedBetaGeoFitter._negative_log_likelihood(
        theta_of(mbgnbd.params_, scale), x.astype(int), tx * scale, T * scale, np.ones(len(x)), 0.0
    )
    ll = mbgnbd_log_likelihood(mbgnbd.params_, x, tx, T)
    assert -(ll.sum() - x.sum() * np.log(scale)) / len(x) == pytest.approx(lifetimes_mean, rel=1e-12)
    assert mbgnbd.log_likelihood_ == pytest.approx(ll.sum(), rel=1e-12)
    np.testing.assert_array_equal(mbgnbd.log_likelihood(x, tx, T), ll)


# ------------------------------------------------------------------ the fit
def test_fit_reproduces_batislam_et_al_2007(mbgnbd):
    p = mbgnbd.params_
    assert {k: round(v, 3) for k, v in p.items()} == PAPER_MBGNBD
    assert mbgnbd.converged_ and mbgnbd.penalizer_ == 0.0 and mbgnbd.time_unit_ == "weeks"
    assert mbgnbd.n_customers_ == 2357 and not mbgnbd.warnings_


def test_fit_is_lifetimes_fit_optimum(mbgnbd, cdnow_summary):
    """The same optimum as lifetimes' per-customer ModifiedBetaGeoFitter fit and as
    ``solver="lifetimes"`` (compared as optima of one objective), with the same standard errors."""
    x, tx, T = frt(cdnow_summary)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = ModifiedBetaGeoFitter().fit(x, tx, T)
    via_lifetimes = MBGNBDModel(solver="lifetimes").fit(cdnow_summary)
    objective, scale, _ = mbgnbd_problem(cdnow_summary, 0.0)
    ours = theta_of(mbgnbd.params_, scale)
    assert_same_optimum(objective, ours, theta_of(full.params_, scale))
    assert_same_optimum(objective, ours, theta_of(via_lifetimes.params_, scale))
    for k, se in mbgnbd.standard_errors_.items():
        assert full.standard_errors_[k] == pytest.approx(se, rel=1e-3)


def test_sample_weight_on_distinct_rows_equals_the_full_fit(cdnow_summary, mbgnbd):
    distinct = cdnow_summary.groupby(["frequency", "recency", "T"]).size().rename("count").reset_index()
    weighted = MBGNBDModel().fit(
        distinct[["frequency", "recency", "T"]], time_unit="weeks", sample_weight=distinct["count"]
    )
    for k in mbgnbd.params_:
        assert weighted.params_[k] == pytest.approx(mbgnbd.params_[k], rel=1e-9)
        assert weighted.standard_errors_[k] == pytest.approx(mbgnbd.standard_errors_[k], rel=1e-9)
    assert weighted.log_likelihood_ == pytest.approx(mbgnbd.log_likelihood_, rel=1e-12)
    assert weighted.n_customers_ == len(cdnow_summary)


def test_registered_and_pickles_by_public_path(mbgnbd):
    assert PURCHASE_MODELS["mbgnbd"] is MBGNBDModel
    blob = pickle.dumps(mbgnbd)
    assert b"rebuy.models" in blob and b"rebuy.models.mbgnbd" not in blob
    again = pickle.loads(blob)
    assert again.params_ == mbgnbd.params_
    assert again.expected_purchases(39, 2, 30.0, 38.0) == mbgnbd.expected_purchases(39, 2, 30.0, 38.0)


# ------------------------------------------------------------------ predictions against lifetimes
def test_predictions_equal_lifetimes_on_cdnow(mbgnbd, cdnow_summary):
    ref = lifetimes_mbgnbd(mbgnbd.params_)
    x, tx, T = frt(cdnow_summary)
    for t in [1.0, 4.3, 39.0, 52.0, 260.0]:
        np.testing.assert_allclose(
            mbgnbd.expected_purchases(t, x, tx, T),
            ref.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T),
            rtol=1e-9,
        )
    np.testing.assert_allclose(
        mbgnbd.p_alive(x, tx, T), ref.conditional_probability_alive(x, tx, T), rtol=1e-12
    )
    t = np.linspace(0.5, 200, 50)
    np.testing.assert_allclose(
        mbgnbd.expected_purchases_population(t), ref.expected_number_of_purchases_up_to_time(t), rtol=1e-9
    )


@pytest.mark.parametrize("params", GRID_PARAMS)
def test_predictions_equal_lifetimes_on_random_grid(params):
    x, tx, T, t = random_customers(0, 5000, 0, 60)
    m, ref = MBGNBDModel.from_params(params), lifetimes_mbgnbd(params)
    mine = m.expected_purchases(t, x, tx, T)
    with np.errstate(all="ignore"):
        expected = ref.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T)
    assert np.isfinite(mine).all()
    ok = np.isfinite(expected)
    assert ok.mean() > 0.99
    np.testing.assert_allclose(mine[ok], expected[ok], rtol=1e-8)
    np.testing.assert_allclose(m.p_alive(x, tx, T), ref.conditional_probability_alive(x, tx, T), rtol=1e-12)


@pytest.mark.parametrize("params", GRID_PARAMS)
def test_new_customer_purchase_probability_equals_lifetimes(params):
    """x = 0, T = 0: 1 - P(N(t) = 0) of the unconditional model (lifetimes'
    ``probability_of_n_purchases_up_to_time``)."""
    m, ref = MBGNBDModel.from_params(params), lifetimes_mbgnbd(params)
    for t in [1.0, 10.0, 39.0]:
        expected = 1 - ref.probability_of_n_purchases_up_to_time(t, 0)
        assert m.probability_of_purchase(t, 0, 0, 0)[0] == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------ model behaviour
def test_one_time_buyers_may_have_dropped_out(mbgnbd):
    """Unlike BG/NBD, P(alive) < 1 at frequency 0: b / (a + b) at T = 0 (only the first toss),
    falling with T; the new customer's expected purchases equal the population curve."""
    p = mbgnbd.params_
    T = np.array([0.0, 1.0, 10.0, 50.0])
    alive = mbgnbd.p_alive(0, 0, T)
    assert alive[0] == pytest.approx(p["b"] / (p["a"] + p["b"]), rel=1e-12)
    assert (np.diff(alive) < 0).all()
    t = np.array([0.5, 1.0, 5.0, 20.0, 80.0])
    np.testing.assert_allclose(
        mbgnbd.expected_purchases(t, 0, 0, 0), mbgnbd.expected_purchases_population(t), rtol=1e-9
    )


def test_heavy_buyers_and_t_zero_are_finite():
    m = MBGNBDModel.from_params(HEAVY_BUYER_PARAMS)
    assert_finite_for_heavy_buyers(m)
    assert m.expected_purchases_population(0.0)[0] == 0.0


def test_a_at_one_is_continuous():
    """The closed forms divide by a - 1: at and around a = 1 they stay finite and continuous."""
    t = np.array([1.0, 39.0])
    a_values = (1.0 - 1e-3, 1.0 - 1e-9, 1.0, 1.0 + 1e-3)
    models = [MBGNBDModel.from_params({**PAPER_MBGNBD, "a": a}) for a in a_values]
    conditional = [m.expected_purchases(t, 2, 20, 38) for m in models]
    for values in (conditional, [m.expected_purchases_population(t) for m in models]):
        assert all(np.isfinite(v).all() for v in values)
        np.testing.assert_allclose(values[1], values[2], rtol=1e-5)
        assert ((values[0] - values[2]) * (values[3] - values[2]) <= 0).all()


def test_probability_of_purchase_is_bounded_and_grows(mbgnbd, cdnow_summary):
    x, tx, T = frt(cdnow_summary)
    p39 = mbgnbd.probability_of_purchase(39, x, tx, T)
    p78 = mbgnbd.probability_of_purchase(78, x, tx, T)
    assert ((p39 >= 0) & (p39 <= mbgnbd.p_alive(x, tx, T) + 1e-15)).all()
    assert (p78 >= p39).all()


def test_conditional_forecast_equals_the_generic_one(mbgnbd, cdnow_summary):
    """The fast forecast (f once per distinct (x, T) pair) gives the generic forecast's values."""
    x, tx, T = frt(cdnow_summary)
    fast = mbgnbd.conditional(x, tx, T)
    generic = ConditionalForecast(mbgnbd, x, tx, T)
    assert isinstance(fast, MBGNBDForecast)
    for h in [0.0, 4.3, 52.0]:
        np.testing.assert_allclose(fast.expected_purchases(h), generic.expected_purchases(h), rtol=1e-12)
    np.testing.assert_array_equal(fast.next_purchase_days(730), generic.next_purchase_days(730))
    np.testing.assert_array_equal(fast.p_alive(), mbgnbd.p_alive(x, tx, T))


def test_negative_time_is_a_parameter_error(mbgnbd):
    for call in (
        lambda: mbgnbd.expected_purchases(-1.0, 1, 1, 2),
        lambda: mbgnbd.probability_of_purchase(-1.0, 1, 1, 2),
        lambda: mbgnbd.expected_purchases_population([1.0, -2.0]),
    ):
        with pytest.raises(InvalidParameterError, match="t must be >= 0"):
            call()


# ------------------------------------------------------------------ input validation
def test_bad_input_gives_clear_errors(cdnow_summary):
    with pytest.raises(ModelFitError, match="one-time buyer"):
        MBGNBDModel().fit(pd.DataFrame({"frequency": [0.0, 0.0], "recency": [0.0, 0.0], "T": [1.0, 2.0]}))
    with pytest.raises(ModelFitError, match="T is 0"):
        MBGNBDModel().fit(pd.DataFrame({"frequency": [1.0], "recency": [0.0], "T": [0.0]}))
    with pytest.raises(ModelFitError, match="missing column"):
        MBGNBDModel().fit(cdnow_summary.drop(columns="recency"))
    bad = cdnow_summary.copy()
    bad.iloc[0, bad.columns.get_loc("recency")] = bad["T"].iloc[0] + 5
    with pytest.raises(ModelFitError, match="exceeds 'T'"):
        MBGNBDModel().fit(bad)
    with pytest.raises(ModelFitError, match="penalizer"):
        MBGNBDModel(penalizer=-1.0).fit(cdnow_summary)
    with pytest.raises(ModelFitError, match="solver"):
        MBGNBDModel(solver="autograd").fit(cdnow_summary)
    with pytest.raises(FeatureError, match="time_unit"):
        MBGNBDModel().fit(cdnow_summary, time_unit="months")
    with pytest.raises(ModelFitError, match="sample_weight has 2 values"):
        MBGNBDModel().fit(cdnow_summary, sample_weight=[1, 2])


def test_parameters_and_unfitted_use_give_clear_errors():
    with pytest.raises(ModelFitError, match="not fitted"):
        MBGNBDModel().p_alive(1, 1, 2)
    with pytest.raises(ModelFitError, match="must be finite and > 0"):
        MBGNBDModel.from_params({**PAPER_MBGNBD, "a": -1.0})
    with pytest.raises(ModelFitError, match=r"missing parameter\(s\) \['b'\]"):
        MBGNBDModel.from_params({k: v for k, v in PAPER_MBGNBD.items() if k != "b"})


# ------------------------------------------------------------------ simulated truth
def test_fit_recovers_simulated_truth(simulated_fit):
    """Each parameter within 4 of its standard errors of the generating value."""
    for k, true in TRUTH.items():
        se = simulated_fit.standard_errors_[k]
        assert abs(simulated_fit.params_[k] - true) < 4 * se, (k, simulated_fit.params_[k], se)


def test_probability_of_purchase_matches_monte_carlo(simulated):
    """At the generating parameters, P(purchase in the next 26 weeks) is calibrated on the
    simulated future: in each decile of the prediction the share that bought is within 4 binomial
    standard errors of the mean prediction."""
    summary, future, _ = simulated
    model = MBGNBDModel.from_params(TRUTH)
    pred = model.probability_of_purchase(26.0, *frt(summary))
    bought = (future > 0).astype(float)
    for g in np.array_split(np.argsort(pred, kind="stable"), 10):
        se = np.sqrt((pred[g] * (1 - pred[g])).sum()) / len(g)
        assert abs(bought[g].mean() - pred[g].mean()) < 4 * se + 1e-12


def test_expected_purchases_match_monte_carlo(simulated):
    """At the generating parameters, expected purchases in the next 26 weeks match the simulated
    future per decile of the prediction (within 4 standard errors of the decile's mean count)."""
    summary, future, _ = simulated
    model = MBGNBDModel.from_params(TRUTH)
    pred = model.expected_purchases(26.0, *frt(summary))
    for g in np.array_split(np.argsort(pred, kind="stable"), 10):
        se = future[g].std(ddof=1) / np.sqrt(len(g))
        assert abs(future[g].mean() - pred[g].mean()) < 4 * se + 1e-12


def test_p_alive_matches_monte_carlo(simulated):
    """At the generating parameters, P(alive) per decile is within 4 binomial standard errors of
    the share of simulated customers alive at T, one-time buyers (who may have dropped out at their
    first purchase) included."""
    summary, _, alive = simulated
    x, tx, T = frt(summary)
    pred = MBGNBDModel.from_params(TRUTH).p_alive(x, tx, T)
    for rows in (x == 0, x > 0):
        idx = np.flatnonzero(rows)
        for g in np.array_split(idx[np.argsort(pred[idx], kind="stable")], 10):
            se = np.sqrt((pred[g] * (1 - pred[g])).sum()) / len(g)
            assert abs(alive[g].mean() - pred[g].mean()) < 4 * se + 1e-12


def test_fitted_model_is_calibrated_on_the_simulated_future(simulated, simulated_fit):
    """The fitted model (not the truth) predicts the simulated future: per decile within 4
    sampling standard errors plus 2% for the parameter error; totals within 3%."""
    summary, future, _ = simulated
    x, tx, T = frt(summary)
    expected = simulated_fit.expected_purchases(26.0, x, tx, T)
    prob = simulated_fit.probability_of_purchase(26.0, x, tx, T)
    bought = (future > 0).astype(float)
    for pred, seen in ((expected, future), (prob, bought)):
        for g in np.array_split(np.argsort(pred, kind="stable"), 10):
            se = seen[g].std(ddof=1) / np.sqrt(len(g))
            assert abs(seen[g].mean() - pred[g].mean()) < 4 * se + 0.02 * pred[g].mean()
        assert pred.sum() == pytest.approx(seen.sum(), rel=0.03)
