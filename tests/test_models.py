"""rebuy.models as a package: every public import path works, BG/NBD and Gamma-Gamma reproduce the
published CDNOW results and lifetimes' full fits, models pickle (by their public path), come from
config and are registered. Per-module behaviour is in tests/test_models_*.py."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

import rebuy.models as models
from models_common import (  # noqa: F401 (fixtures)
    BetaGeoFitter,
    GammaGammaFitter,
    assert_same_optimum,
    bgnbd_fixture,
    bgnbd_objective,
    bgnbd_theta,
    cdnow_summary_fixture,
    gg_fixture,
    gg_objective,
    gg_theta,
    repeat_customers,
)
from rebuy.models import (
    MONTH_IN_UNITS,
    PURCHASE_MODELS,
    SCORE_HORIZONS_DAYS,
    SPEND_MODELS,
    BGNBDModel,
    GammaGammaModel,
    ModelFitError,
    PurchaseModel,
    SpendModel,
    bgnbd_log_likelihood,
    customer_lifetime_value,
    gamma_gamma_log_likelihood,
    score_value,
)


def test_public_import_paths():
    from rebuy.errors import ModelFitError as Base
    from rebuy.models.clv import customer_lifetime_value as clv
    from rebuy.models.value import score_value as sv

    assert ModelFitError is Base and clv is customer_lifetime_value and sv is score_value
    assert callable(bgnbd_log_likelihood) and callable(gamma_gamma_log_likelihood)
    assert SCORE_HORIZONS_DAYS == (30, 90, 365)
    assert MONTH_IN_UNITS == {"weeks": 4.345, "days": 30.0}  # lifetimes' CLV month
    assert set(models.__all__) <= set(dir(models))
    assert not hasattr(models, "expected_time_to_next_purchase")
    for dead in ("expected_time_to_next_purchase", "expected_next_purchase_date"):
        assert not hasattr(BGNBDModel, dead)


def test_models_are_registered_on_their_base():
    from rebuy.config import PURCHASE_MODEL_NAMES

    assert tuple(PURCHASE_MODELS) == PURCHASE_MODEL_NAMES and PURCHASE_MODELS["bgnbd"] is BGNBDModel
    assert SPEND_MODELS == {"gamma_gamma": GammaGammaModel}
    assert all(issubclass(cls, PurchaseModel) for cls in PURCHASE_MODELS.values())
    assert issubclass(GammaGammaModel, SpendModel)


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


def test_gamma_gamma_reproduces_published(gg, cdnow_summary):
    # Fader, Hardie & Lee (2005) "RFM and CLV": p = 6.25, q = 3.74, gamma = 15.44, from the mean value
    # of each customer's repeat purchase days in the calibration period (zero-value days included).
    p = gg.params_
    assert (round(p["p"], 2), round(p["q"], 2), round(p["v"], 2)) == (6.25, 3.74, 15.44)
    assert gg.n_customers_ == int((cdnow_summary["frequency"] > 0).sum())  # no repeat customer spends 0
    assert gg.q_warning_ is None and gg.independence_ok_
    rep = cdnow_summary[cdnow_summary.frequency > 0]
    assert gg.independence_corr_ == pytest.approx(np.corrcoef(rep["frequency"], rep["monetary_value"])[0, 1], abs=1e-12)


# ------------------------------------------------------------------ equality with lifetimes
def test_fit_is_lifetimes_full_fit_optimum(bgnbd, gg, cdnow_summary):
    """The fit on distinct rows is the optimum of lifetimes' per-customer fit (compared as optima
    of the same objective, not as landing spots of two optimisers)."""
    s = cdnow_summary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = BetaGeoFitter().fit(s["frequency"], s["recency"], s["T"])
        rep = repeat_customers(s)
        full_gg = GammaGammaFitter().fit(rep["frequency"], rep["monetary_value"])
    objective, scale = bgnbd_objective(s, 0.0)
    assert_same_optimum(objective, bgnbd_theta(bgnbd.params_, scale), bgnbd_theta(full.params_, scale))
    assert_same_optimum(gg_objective(s, 0.0), gg_theta(gg.params_), gg_theta(full_gg.params_))
    per_customer = bgnbd_log_likelihood(bgnbd.params_, s["frequency"], s["recency"], s["T"])
    assert bgnbd.log_likelihood_ == pytest.approx(per_customer.sum(), rel=1e-12)
    assert gg.log_likelihood_ == pytest.approx(
        gamma_gamma_log_likelihood(gg.params_, rep["frequency"], rep["monetary_value"]).sum(), rel=1e-12
    )


def test_models_take_their_settings_from_config(cdnow_summary):
    from rebuy.config import load_config

    cfg = load_config(overrides={"bgnbd.solver": "lifetimes", "gamma_gamma.independence_threshold": 0.2})
    bg = BGNBDModel.from_config(cfg.bgnbd)
    g = GammaGammaModel.from_config(cfg.gamma_gamma)
    assert (bg.solver, g.solver, g.independence_threshold) == ("lifetimes", "numpy", 0.2)
    assert bg.get_params() == {"penalizer": 0.0, "retry_penalizer": 0.001, "solver": "lifetimes"}
    numpy_fit = BGNBDModel.from_config(load_config().bgnbd).fit(cdnow_summary)
    lifetimes_fit = bg.fit(cdnow_summary)
    objective, scale = bgnbd_objective(cdnow_summary, 0.0)
    assert_same_optimum(objective, bgnbd_theta(numpy_fit.params_, scale), bgnbd_theta(lifetimes_fit.params_, scale))
    # the lifetimes solver gets rebuy's standard errors too (same objective, same Hessian)
    for k, se in numpy_fit.standard_errors_.items():
        assert lifetimes_fit.standard_errors_[k] == pytest.approx(se, rel=1e-3)


# ------------------------------------------------------------------ persistence
def test_models_pickle_round_trip_by_public_path(bgnbd, gg, cdnow_summary):
    assert all(np.isfinite(v) for v in bgnbd.standard_errors_.values())  # computed before pickling
    b_bytes, g_bytes = pickle.dumps(bgnbd), pickle.dumps(gg)
    assert b"rebuy.models.bgnbd" not in b_bytes and b"rebuy.models.gamma_gamma" not in g_bytes
    b2, g2 = pickle.loads(b_bytes), pickle.loads(g_bytes)
    s = cdnow_summary
    np.testing.assert_array_equal(
        b2.p_alive(s["frequency"], s["recency"], s["T"]), bgnbd.p_alive(s["frequency"], s["recency"], s["T"])
    )
    assert g2.params_ == gg.params_ and b2.standard_errors_ == bgnbd.standard_errors_
    assert repr(b2) == repr(bgnbd)


def test_standard_errors_are_lazy_and_pickles_carry_no_fit_data(cdnow_summary):
    fresh = BGNBDModel().fit(cdnow_summary)
    assert "_covariance" not in fresh.__dict__  # the fit did not pay for the Hessian
    unpickled = pickle.loads(pickle.dumps(fresh))  # pickled before the first access: no fit data
    assert unpickled.summary["se(coef)"].isna().all()
    assert all(np.isfinite(v) and v > 0 for v in fresh.standard_errors_.values())  # still computable
    # an instance pickled when covariance_ was a plain attribute keeps its numbers
    state = {k: v for k, v in fresh.__getstate__().items() if k != "_covariance"}
    state["covariance_"] = fresh.covariance_
    legacy = object.__new__(BGNBDModel)
    legacy.__setstate__(state)
    assert legacy.standard_errors_ == fresh.standard_errors_


def test_instances_pickled_before_standard_errors_still_work(bgnbd, cdnow_summary):
    """A model unpickled from a bundle written before standard errors existed still predicts,
    prints and summarises (with NaN standard errors)."""
    state = {k: v for k, v in bgnbd.__getstate__().items() if k != "_covariance"}
    old = object.__new__(type(bgnbd))
    old.__setstate__(state)
    assert old.summary["se(coef)"].isna().all()
    assert old.summary["coef"].to_dict() == bgnbd.params_
    assert repr(old).startswith("<rebuy.BGNBDModel: fitted with 2357 customers")
    s = cdnow_summary.head(5)
    np.testing.assert_array_equal(old.expected_purchases(10, s["frequency"], s["recency"], s["T"]),
                                  bgnbd.expected_purchases(10, s["frequency"], s["recency"], s["T"]))
