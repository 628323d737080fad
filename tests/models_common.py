"""Shared fixtures and helpers of the rebuy.models tests (tests/test_models*.py).

Test modules import the fixtures by their function names (``cdnow_summary_fixture``, ...) and
request them by their fixture names (``cdnow_summary``, ``bgnbd``, ``gg``).

``assert_same_optimum`` compares two fits of the same objective without depending on where each
optimiser stopped: both must be stationary points (BFGS reports success only below its gradient
tolerance), and one Newton step from each must land on the same point.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from rebuy.datasets import load_cdnow_sample
from rebuy.features import rfm_summary
from rebuy.models import BGNBDModel, BGNBDObjective, GammaGammaModel, GammaGammaObjective
from rebuy.models.inputs import distinct_rows
from rebuy.models.optimize import numerical_hessian

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lifetimes import BetaGeoFitter, GammaGammaFitter

PAPER_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
GRADIENT_TOL = 1e-6
"""Max |gradient| of the mean objective at a reported optimum: 10 x BFGS' tolerance (1e-7)."""


@pytest.fixture(scope="module", name="cdnow_summary")
def cdnow_summary_fixture() -> pd.DataFrame:
    return rfm_summary(load_cdnow_sample(), as_of="1997-09-30", time_unit="weeks")


@pytest.fixture(scope="module", name="bgnbd")
def bgnbd_fixture(cdnow_summary) -> BGNBDModel:
    return BGNBDModel().fit(cdnow_summary)


@pytest.fixture(scope="module", name="gg")
def gg_fixture(cdnow_summary) -> GammaGammaModel:
    return GammaGammaModel().fit(cdnow_summary)


def lifetimes_with_params(fitter_cls: type, params: dict[str, float]):
    """A lifetimes fitter of ``fitter_cls`` holding ``params`` as if it had been fitted."""
    f = fitter_cls()
    f.params_ = pd.Series(params)
    return f


def lifetimes_bgnbd(params: dict[str, float]) -> BetaGeoFitter:
    f = lifetimes_with_params(BetaGeoFitter, params)
    f.predict = f.conditional_expected_number_of_purchases_up_to_time  # as fit() sets it
    return f


def lifetimes_gg(params: dict[str, float]) -> GammaGammaFitter:
    return lifetimes_with_params(GammaGammaFitter, params)


def random_customers(seed: int, n: int, T_low: float, x_high: int) -> tuple[np.ndarray, ...]:
    """(x, tx, T, t) of ``n`` random customers for comparing predictions with lifetimes: T uniform on
    [T_low, 100), repeat purchases below ``x_high``, recency inside T, horizons uniform on [0, 80)."""
    rng = np.random.default_rng(seed)
    T = rng.uniform(T_low, 100, n)
    x = rng.integers(0, x_high, n).astype(float)
    tx = np.where(x > 0, T * rng.uniform(0, 1, n), 0.0)
    return x, tx, T, rng.uniform(0, 80, n)


HEAVY_BUYER_PARAMS = {"r": 5.0, "alpha": 0.5, "a": 3.0, "b": 0.5}


def assert_finite_for_heavy_buyers(m) -> None:
    """A BG/NBD-family model (fitted with :data:`HEAVY_BUYER_PARAMS`) stays finite and bounded for
    heavy buyers and at t = 0."""
    x = np.array([100, 300, 500, 800, 1000, 0, 0], dtype=float)
    T = np.array([100, 100, 100, 50, 10, 0, 30], dtype=float)
    tx = np.where(x > 0, 0.99 * T, 0.0)
    for t in [0.0, 1.0, 39.0, 260.0, 5000.0]:
        e = m.expected_purchases(t, x, tx, T)
        assert np.isfinite(e).all() and (e >= 0).all()
        assert np.isfinite(m.probability_of_purchase(t, x, tx, T)).all()
    # where scipy's hyp2f1 fails (e.g. NaN at 2F1(-2.5, 2; 1002.5; 0.96)) the result stays bounded
    e = m.expected_purchases(260.0, 1000, 9.9, 10.0)
    rate_bound = (1000 + 5.0) / (0.5 + 10.0) * 260.0  # posterior mean rate x t, if surely alive
    assert 0 < e[0] < rate_bound
    # heavy buyer who stopped long ago: P(alive) underflows towards 0, never NaN
    p = m.p_alive(np.array([500.0]), np.array([1.0]), np.array([100.0]))
    assert np.isfinite(p).all() and 0 <= p[0] < 1e-12
    assert m.expected_purchases(0.0, 5, 3, 4)[0] == 0.0


def repeat_customers(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]


def bgnbd_problem(summary: pd.DataFrame, penalizer: float) -> tuple[BGNBDObjective, float, tuple]:
    """rebuy's BG/NBD objective on a summary's distinct rows, its time scale (1 / max T), and the
    arguments of lifetimes' ``BetaGeoFitter._negative_log_likelihood`` for the same rows."""
    (x, tx, T), counts, _ = distinct_rows(summary["frequency"], summary["recency"], summary["T"])
    scale = 1.0 / T.max()
    w = counts.astype(float)
    args = (x.astype(int), tx * scale, T * scale, w, penalizer)
    return BGNBDObjective(x, tx, T, w, penalizer, scale), scale, args


def bgnbd_objective(summary: pd.DataFrame, penalizer: float) -> tuple[BGNBDObjective, float]:
    """rebuy's BG/NBD objective on a summary, and its time scale (1 / max T)."""
    return bgnbd_problem(summary, penalizer)[:2]


def gg_problem(summary: pd.DataFrame, penalizer: float) -> tuple[GammaGammaObjective, tuple]:
    """rebuy's Gamma-Gamma objective on the distinct repeat-customer rows, and the arguments of
    lifetimes' ``GammaGammaFitter._negative_log_likelihood`` for the same rows."""
    rep = repeat_customers(summary)
    (x, m), counts, _ = distinct_rows(rep["frequency"], rep["monetary_value"])
    w = counts.astype(float)
    return GammaGammaObjective(x, m, w, penalizer), (x, m, w, penalizer)


def gg_objective(summary: pd.DataFrame, penalizer: float) -> GammaGammaObjective:
    return gg_problem(summary, penalizer)[0]


def bgnbd_theta(params, scale: float) -> np.ndarray:
    return np.log([params["r"], params["alpha"] * scale, params["a"], params["b"]])


def gg_theta(params) -> np.ndarray:
    return np.log([params["p"], params["q"], params["v"]])


def newton_step(objective, theta: np.ndarray) -> np.ndarray:
    return np.linalg.solve(numerical_hessian(objective, theta), objective(theta)[1])


def assert_same_optimum(objective, theta_a: np.ndarray, theta_b: np.ndarray) -> None:
    """``theta_a`` and ``theta_b`` are the same minimum of ``objective``, whatever path each
    optimiser took: both stationary, equal after one Newton step (to 1e-9 in log parameters), and
    apart by no more than their Newton steps."""
    steps = []
    for theta in (theta_a, theta_b):
        assert np.abs(objective(theta)[1]).max() < GRADIENT_TOL
        steps.append(newton_step(objective, theta))
    np.testing.assert_allclose(theta_a - steps[0], theta_b - steps[1], rtol=0, atol=1e-9)
    assert (np.abs(theta_a - theta_b) <= np.abs(steps[0]) + np.abs(steps[1]) + 1e-9).all()


def trained_shop(root, *, n_customers: int, seed: int, n_products: int) -> dict:
    """A simulated shop written under ``root`` and a BG/NBD bundle (CLV from the models) trained on
    it in ``root/models``: ``{"root", "transactions", "customers", "events", ...}``."""
    from rebuy.config import Config
    from rebuy.simulate import simulate, write_simulation
    from rebuy.train import train

    paths = write_simulation(simulate(n_customers=n_customers, seed=seed, n_products=n_products), root / "shop.parquet")
    cfg = Config.model_validate({"purchase_model": "bgnbd", "clv": {"method": "model"}})
    train(paths["transactions"], cfg, models_dir=root / "models", customers=paths["customers"])
    return {"root": root, **paths}
