"""rebuy.models.bgnbd: the objective is lifetimes' (value and gradient), predictions equal lifetimes'
and stay finite on awkward data, inputs are validated, weights are counts, and simulated truth is
recovered."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models_common import (  # noqa: F401 (fixtures)
    HEAVY_BUYER_PARAMS,
    PAPER_BGNBD,
    BetaGeoFitter,
    assert_finite_for_heavy_buyers,
    bgnbd_fixture,
    bgnbd_problem,
    cdnow_summary_fixture,
    lifetimes_bgnbd,
    random_customers,
)
from rebuy.errors import InvalidParameterError
from rebuy.features import rfm_summary
from rebuy.models import BGNBDModel, ModelFitError


@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_objective_and_gradient_equal_lifetimes(cdnow_summary, penalizer):
    """rebuy's objective is lifetimes' own (value to rounding, gradient equal to autograd's)."""
    from autograd import grad

    ours, _, args = bgnbd_problem(cdnow_summary, penalizer)
    for theta in (np.full(4, 0.1), np.log([0.3, 0.1, 0.7, 2.5]), np.array([1.0, -3.0, 0.5, -0.5])):
        f, g = ours(theta)
        assert f == pytest.approx(BetaGeoFitter._negative_log_likelihood(theta, *args), rel=1e-12)
        np.testing.assert_allclose(g, grad(BetaGeoFitter._negative_log_likelihood)(theta, *args), rtol=1e-9, atol=1e-12)


def test_conditional_expectation_published(bgnbd):
    # FHL 2005: x = 2, t_x = 30.43, T = 38.86, next 39 weeks -> 1.226
    paper = BGNBDModel.from_params(PAPER_BGNBD)
    assert round(float(paper.expected_purchases(39, 2, 30.43, 38.86)[0]), 3) == 1.226
    assert round(float(bgnbd.expected_purchases(39, 2, 30.43, 38.86)[0]), 3) == 1.226


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
    np.testing.assert_allclose(bgnbd.p_alive(x, tx, T), ref.conditional_probability_alive(x, tx, T), rtol=1e-12)
    t = np.linspace(0.5, 200, 50)
    np.testing.assert_allclose(
        bgnbd.expected_purchases_population(t), ref.expected_number_of_purchases_up_to_time(t), rtol=1e-9
    )
    # per-customer log-likelihood = lifetimes' objective (mean negative log-likelihood, time scaled
    # by 1 / max T, which adds x log(max T) per customer)
    scale = 1.0 / T.max()
    theta = np.log([bgnbd.params_["r"], bgnbd.params_["alpha"] * scale, bgnbd.params_["a"], bgnbd.params_["b"]])
    lifetimes_mean = BetaGeoFitter._negative_log_likelihood(theta, x.astype(int), tx * scale, T * scale, np.ones(len(x)), 0.0)
    ll = bgnbd.log_likelihood(x, tx, T)
    assert -(ll.sum() - x.sum() * np.log(scale)) / len(x) == pytest.approx(lifetimes_mean, rel=1e-12)


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
    x, tx, T, t = random_customers(0, 5000, 0, 60)
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
    assert_finite_for_heavy_buyers(BGNBDModel.from_params(HEAVY_BUYER_PARAMS))


def test_a_at_one_is_continuous():
    """The closed forms divide by a - 1: at and around a = 1 they stay finite and continuous."""
    t = np.array([1.0, 39.0])
    models = [BGNBDModel.from_params({**PAPER_BGNBD, "a": a}) for a in (1.0 - 1e-3, 1.0 - 1e-9, 1.0, 1.0 + 1e-3)]
    cond = [m.expected_purchases(t, 2, 20, 38) for m in models]
    pop = [m.expected_purchases_population(t) for m in models]
    for values in (cond, pop):
        assert all(np.isfinite(v).all() for v in values)
        np.testing.assert_allclose(values[1], values[2], rtol=1e-5)
        assert ((values[0] - values[2]) * (values[3] - values[2]) <= 0).all()  # between its neighbours


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


def test_negative_time_is_a_parameter_error(bgnbd):
    with pytest.raises(InvalidParameterError, match="t must be >= 0"):
        bgnbd.expected_purchases(-1.0, 1, 1, 2)
    with pytest.raises(InvalidParameterError, match="t must be >= 0"):
        bgnbd.expected_purchases_population([1.0, -2.0])
    with pytest.raises(InvalidParameterError, match="horizons"):
        bgnbd.iter_expected_purchases([1.0, -2.0], 1, 1, 2)


# ------------------------------------------------------------------ input validation
def test_single_day_and_one_time_buyer_data_give_clear_errors():
    from rebuy.models import GammaGammaModel

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
    with pytest.raises(ModelFitError, match="penalizer"):
        BGNBDModel(penalizer=-1.0).fit(cdnow_summary)
    from rebuy.errors import FeatureError

    with pytest.raises(FeatureError, match="time_unit"):
        BGNBDModel().fit(cdnow_summary, time_unit="months")
    with pytest.raises(ModelFitError, match="must be finite and > 0"):
        BGNBDModel.from_params({**PAPER_BGNBD, "a": -1.0})
    with pytest.raises(ModelFitError, match=r"missing parameter\(s\) \['b'\]"):
        BGNBDModel.from_params({k: v for k, v in PAPER_BGNBD.items() if k != "b"})


def test_sample_weight_on_distinct_rows_equals_the_full_fit(cdnow_summary):
    """Counts as weights (what the Spark path passes) give the same fit as one row per customer:
    the same distinct rows and weights, so the same objective and the same optimiser path."""
    s = cdnow_summary
    distinct = s.groupby(["frequency", "recency", "T"]).size().rename("count").reset_index()
    full = BGNBDModel().fit(s)
    weighted = BGNBDModel().fit(distinct[["frequency", "recency", "T"]], time_unit="weeks",
                                sample_weight=distinct["count"])
    for k in full.params_:
        assert weighted.params_[k] == pytest.approx(full.params_[k], rel=1e-9)
    assert weighted.log_likelihood_ == pytest.approx(full.log_likelihood_, rel=1e-12)
    assert weighted.n_customers_ == len(s)
    for k in full.standard_errors_:
        assert weighted.standard_errors_[k] == pytest.approx(full.standard_errors_[k], rel=1e-9)
    with pytest.raises(ModelFitError, match="sample_weight has 2 values"):
        BGNBDModel().fit(s, sample_weight=[1, 2])
    with pytest.raises(ModelFitError, match="finite and > 0"):
        BGNBDModel().fit(s, sample_weight=np.zeros(len(s)))


def test_parameter_recovery_on_simulated_data():
    from rebuy.models import GammaGammaModel
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


# ------------------------------------------------------------------ hypergeometric function
def _euler_integral(A, B, C, z):
    """2F1 by Euler's integral (C > B > 0): an evaluation independent of the series and of scipy."""
    from scipy.integrate import quad
    from scipy.special import gammaln

    def f(t):
        return np.exp((B - 1) * np.log(t) + (C - B - 1) * np.log1p(-t) - A * np.log1p(-z * t))

    integral = quad(f, 0, 1, limit=200, epsabs=0, epsrel=1e-12)[0]
    return np.exp(gammaln(C) - gammaln(B) - gammaln(C - B)) * integral


HEAVY_BUYER_POINTS = [(-2.5, 2.0, 102.5, 0.98), (-2.5, 2.0, 1002.5, 0.96), (-0.7, 0.8, 3.0, 0.999)]


@pytest.mark.parametrize("A,B,C,z", HEAVY_BUYER_POINTS)
def test_hyp2f1_series_matches_euler_integral(A, B, C, z):
    """The fallback itself, whatever scipy returns at these points today."""
    from rebuy.models.special import hyp2f1_series

    assert hyp2f1_series(A, B, C, z)[0] == pytest.approx(_euler_integral(A, B, C, z), rel=1e-8)


@pytest.mark.parametrize("A,B,C,z", HEAVY_BUYER_POINTS)
def test_hyp2f1_matches_euler_integral(A, B, C, z):
    from rebuy.models.special import hyp2f1

    assert hyp2f1(A, B, C, z)[0] == pytest.approx(_euler_integral(A, B, C, z), rel=1e-8)


def test_hyp2f1_uses_the_series_only_where_scipy_fails(monkeypatch):
    import rebuy.models.special as special

    A, B, C, z = (np.array(v) for v in zip(*HEAVY_BUYER_POINTS, strict=True))
    real = special._scipy_hyp2f1
    # scipy made to fail at the first two points: those come from the series, the third from scipy
    monkeypatch.setattr(special, "_scipy_hyp2f1", lambda *a: np.where([True, True, False], np.nan, real(*a)))
    out = special.hyp2f1(A, B, C, z)
    np.testing.assert_allclose(out[:2], special.hyp2f1_series(A[:2], B[:2], C[:2], z[:2]), rtol=0)
    assert out[2] == real(A[2], B[2], C[2], z[2])
    assert np.isnan(special.hyp2f1_series(1.0, 1.0, 1.0, 1.0))  # divergent at z = 1: NaN, never inf


@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd"])
def test_a_fit_at_the_boundary_predicts_the_limit_instead_of_failing(model):
    """a, b -> 0 (a tiny shop where nobody seems to drop out; found by tests/test_properties.py):
    a = 1.5e-31 once made expected_purchases 0/0 and the Jacobi nodes a ValueError."""
    from rebuy.models import MBGNBDModel
    from rebuy.models.bgnbd import SHAPE_FLOOR, geometric_dropout_moments

    cls = BGNBDModel if model == "bgnbd" else MBGNBDModel
    x, tx, T = np.array([0, 1, 2, 3.0]), np.array([0, 10, 20, 40.0]), np.full(4, 50.0)
    tiny = cls.from_params({"r": 6.05, "alpha": 60.65, "a": 1.5e-31, "b": 2.8e-23})
    floor = cls.from_params({"r": 6.05, "alpha": 60.65, "a": SHAPE_FLOOR, "b": SHAPE_FLOOR})
    near = cls.from_params({"r": 6.05, "alpha": 60.65, "a": 1e-8, "b": 1e-8})
    for method, args in (("expected_purchases", (52.0, x, tx, T)), ("p_alive", (x, tx, T)),
                         ("probability_of_purchase", (13.0, x, tx, T))):
        got = getattr(tiny, method)(*args)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, getattr(floor, method)(*args), rtol=1e-12)
        np.testing.assert_allclose(got, getattr(near, method)(*args), rtol=1e-3)  # continuous in the limit
    p_none, mean, second = geometric_dropout_moments(52.0, np.array([1.5]), np.array([20.0]), 1e-17, np.array([3.0]))
    assert np.isfinite([p_none, mean, second]).all() and mean[0] == pytest.approx(1.5 * 52 / 20)  # Poisson limit
