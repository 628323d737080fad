"""rebuy.models.base: standard errors and summaries equal lifetimes' (computed at the same
parameters, so independent of where either optimiser stopped), repr and from_params behave, and the
generic purchase-model hooks equal BG/NBD's fast exact overrides."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models_common import (  # noqa: F401 (fixtures)
    PAPER_BGNBD,
    BetaGeoFitter,
    GammaGammaFitter,
    bgnbd_fixture,
    bgnbd_theta,
    cdnow_summary_fixture,
    gg_fixture,
    repeat_customers,
)
from rebuy.errors import InvalidParameterError
from rebuy.models import BGNBDForecast, BGNBDModel, ConditionalForecast, ModelFitError, PurchaseModel
from rebuy.models.base import SUMMARY_COLUMNS


def _lifetimes_summary(fitter, params: dict[str, float], hessian: np.ndarray, n: float) -> pd.DataFrame:
    """lifetimes' own summary (its variance, standard error and interval code) at given parameters."""
    fitter.params_ = pd.Series(params)
    fitter._hessian_ = hessian
    fitter.data = pd.DataFrame({"weights": np.ones(int(n))})
    fitter.variance_matrix_ = fitter._compute_variance_matrix()
    fitter.standard_errors_ = fitter._compute_standard_errors()
    fitter.confidence_intervals_ = fitter._compute_confidence_intervals()
    return fitter.summary


def _lifetimes_bgnbd_summary(params: dict[str, float], summary: pd.DataFrame, penalizer: float) -> pd.DataFrame:
    """lifetimes' BetaGeoFitter.summary at ``params``: the autograd Hessian of its per-customer
    objective (one row per customer, not rebuy's distinct rows) there."""
    from autograd import hessian

    x, tx, T = (summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    scale = 1.0 / T.max()
    theta = bgnbd_theta(params, scale)
    args = (x.astype(int), tx * scale, T * scale, np.ones(len(x)), penalizer)
    return _lifetimes_summary(BetaGeoFitter(), params, hessian(BetaGeoFitter._negative_log_likelihood)(theta, *args), len(x))


def test_bgnbd_summary_equals_lifetimes_at_the_same_parameters(bgnbd, cdnow_summary):
    """lifetimes' BetaGeoFitter.summary on CDNOW: its autograd Hessian of the per-customer objective
    evaluated at rebuy's optimum, pushed through lifetimes' own standard-error code."""
    ref = _lifetimes_bgnbd_summary(bgnbd.params_, cdnow_summary, 0.0)
    ours = bgnbd.summary
    assert list(ours.columns) == list(SUMMARY_COLUMNS) == list(ref.columns)
    assert list(ours.index) == list(BGNBDModel.PARAM_NAMES)
    np.testing.assert_allclose(ours.to_numpy(), ref.loc[list(ours.index)].to_numpy(), rtol=1e-7)
    assert bgnbd.covariance_.shape == (4, 4)
    np.testing.assert_allclose(np.sqrt(np.diag(bgnbd.covariance_)), ours["se(coef)"], rtol=1e-15)


def test_gamma_gamma_summary_equals_lifetimes_at_the_same_parameters(gg, cdnow_summary):
    from autograd import hessian

    rep = repeat_customers(cdnow_summary)
    x, m = rep["frequency"].to_numpy(), rep["monetary_value"].to_numpy()
    theta = np.log([gg.params_[k] for k in ("p", "q", "v")])
    H = hessian(GammaGammaFitter._negative_log_likelihood)(theta, x, m, np.ones(len(x)), 0.0)
    ref = _lifetimes_summary(GammaGammaFitter(), gg.params_, H, len(x))
    np.testing.assert_allclose(gg.summary.to_numpy(), ref.loc[list(gg.summary.index)].to_numpy(), rtol=1e-7)


def test_penalised_standard_errors_use_the_penalised_hessian(cdnow_summary):
    """As lifetimes: the Hessian is the minimised (penalised) objective's."""
    m = BGNBDModel(penalizer=0.05).fit(cdnow_summary)
    ref = _lifetimes_bgnbd_summary(m.params_, cdnow_summary, 0.05)
    np.testing.assert_allclose(m.summary["se(coef)"], ref.loc[list(m.params_), "se(coef)"], rtol=1e-7)


def test_repr():
    assert repr(BGNBDModel()) == "<rebuy.BGNBDModel: not fitted, penalizer=0.0, retry_penalizer=0.001, solver='numpy'>"
    paper = BGNBDModel.from_params(PAPER_BGNBD)
    assert repr(paper) == "<rebuy.BGNBDModel: from parameters, r: 0.243, alpha: 4.414, a: 0.793, b: 2.426>"


def test_fitted_repr(bgnbd, gg):
    p = bgnbd.params_
    assert repr(bgnbd) == (
        f"<rebuy.BGNBDModel: fitted with 2357 customers, r: {p['r']:.4g}, alpha: {p['alpha']:.4g}, "
        f"a: {p['a']:.4g}, b: {p['b']:.4g}>"
    )
    assert repr(gg).startswith("<rebuy.GammaGammaModel: fitted with 946 customers, p: ")


def test_from_params_has_no_standard_errors():
    m = BGNBDModel.from_params(PAPER_BGNBD, time_unit="days")
    assert m.time_unit_ == "days" and m.converged_ and m.penalizer_ == 0.0 and m.warnings_ == []
    assert m.summary["coef"].to_dict() == PAPER_BGNBD
    assert m.summary[["se(coef)", "lower 95% bound", "upper 95% bound"]].isna().all().all()
    with pytest.raises(ModelFitError, match="not fitted"):
        _ = BGNBDModel().summary


# ------------------------------------------------------------------ generic hooks = fast overrides
def test_generic_expected_purchases_hook_equals_bgnbd_override(bgnbd, cdnow_summary):
    s = cdnow_summary
    args = (s["frequency"].to_numpy(), s["recency"].to_numpy(), s["T"].to_numpy())
    horizons = [0.0, 4.345, 13.0, 52.0]
    fast = list(bgnbd.iter_expected_purchases(horizons, *args))
    assert isinstance(bgnbd.conditional(*args), BGNBDForecast)
    generic = list(ConditionalForecast(bgnbd, *args).iter_expected_purchases(horizons))
    assert len(fast) == len(generic) == 4 and (fast[0] == 0).all()
    for h, f, g in zip(horizons, fast, generic, strict=True):
        np.testing.assert_allclose(f, g, rtol=1e-12, atol=0)
        np.testing.assert_allclose(f, bgnbd.expected_purchases(h, *args), rtol=1e-12, atol=0)


@pytest.mark.parametrize("max_days", [1, 30, 1825])
def test_next_purchase_days(bgnbd, cdnow_summary, max_days):
    """The first whole day by which a purchase is more likely than not (and not one day earlier);
    -1 when it is not within max_days. The generic bisection and BG/NBD's closed form agree exactly."""
    s = cdnow_summary
    x, tx, T = (s[c].to_numpy() for c in ("frequency", "recency", "T"))
    days = bgnbd.next_purchase_days(x, tx, T, max_days=max_days)
    np.testing.assert_array_equal(days, ConditionalForecast(bgnbd, x, tx, T).next_purchase_days(max_days))
    has = days >= 0
    assert days.dtype == np.int64 and ((days >= 1) | ~has).all() and (days <= max_days).all()
    d = days[has]
    assert (bgnbd.probability_of_purchase(d / 7, x[has], tx[has], T[has]) >= 0.5).all()
    later = d > 1
    assert (bgnbd.probability_of_purchase((d[later] - 1) / 7, x[has][later], tx[has][later], T[has][later]) < 0.5).all()
    assert (bgnbd.probability_of_purchase(max_days / 7, x[~has], tx[~has], T[~has]) < 0.5).all()
    if max_days == 1825:
        assert has.any() and (~has).any()


def test_next_purchase_days_arguments(bgnbd):
    assert bgnbd.next_purchase_days([], [], []).shape == (0,)
    assert bgnbd.next_purchase_days(0, 0, 0, max_days=10).tolist() == [-1]  # brand-new: < 1 in 10 days
    for bad in (0, 2.5, "7", True):
        with pytest.raises(InvalidParameterError, match="max_days"):
            bgnbd.next_purchase_days(1, 1, 2, max_days=bad)
    days = BGNBDModel.from_params(PAPER_BGNBD, time_unit="days").next_purchase_days(20, 200, 210, max_days=400)
    assert days.shape == (1,) and 1 <= days[0] <= 400  # a frequent buyer, in a days model


def test_a_purchase_model_needs_only_the_interface(bgnbd, gg, cdnow_summary):
    """A purchase model that implements only the abstract interface (the generic forecast hook)
    gives the same CLV and value scores: clv.py and value.py use nothing else."""
    from rebuy.config import Config
    from rebuy.models import customer_lifetime_value, score_value

    class Plain(PurchaseModel):
        PARAM_NAMES = BGNBDModel.PARAM_NAMES

        def __init__(self, inner: BGNBDModel | None = None):
            self.inner = inner
            if inner is not None:
                self.params_, self.time_unit_ = inner.params_, inner.time_unit_
                self.__dict__["_covariance"] = inner.covariance_  # the spend interval's parameter uncertainty

        def log_likelihood(self, *a):
            return self.inner.log_likelihood(*a)

        def p_alive(self, *a):
            return self.inner.p_alive(*a)

        def expected_purchases(self, *a):
            return self.inner.expected_purchases(*a)

        def probability_of_purchase(self, *a):
            return self.inner.probability_of_purchase(*a)

        def expected_purchases_population(self, t):
            return self.inner.expected_purchases_population(t)

        def alive_count_moments(self, *a):
            return self.inner.alive_count_moments(*a)

        @classmethod
        def from_params(cls, params, time_unit="weeks"):  # the spend interval perturbs the parameters
            return cls(BGNBDModel.from_params(params, time_unit=time_unit))

        _objective = _from_theta = _to_theta = _lifetimes_fitter = None  # fitting is not exercised

    plain = Plain(bgnbd)
    s = cdnow_summary
    assert type(plain.conditional(1, 1, 2)) is ConditionalForecast
    np.testing.assert_allclose(
        customer_lifetime_value(plain, gg, s, horizon_months=6), customer_lifetime_value(bgnbd, gg, s, horizon_months=6),
        rtol=1e-12,
    )
    cfg = Config()
    a, b = score_value(s, plain, gg, cfg), score_value(s, bgnbd, gg, cfg)
    pd.testing.assert_frame_equal(a, b, rtol=1e-12)
