"""MBG/NBD repeat-purchase model (Batislam, Denizel & Filiztekin 2007): likelihood, objective, model.

Layout: :func:`mbgnbd_log_likelihood` (per customer, log space), :class:`MBGNBDObjective`
(lifetimes' ``ModifiedBetaGeoFitter._negative_log_likelihood`` with its analytic gradient),
:class:`MBGNBDModel` (fit via :class:`~rebuy.models.base.PurchaseModel`, predictions) and
:class:`MBGNBDForecast` (its fast exact ``conditional`` forecast for CLV and scores).

The model is BG/NBD with one more dropout chance, at the first purchase (time 0): a customer
with dropout probability ``p ~ Beta(a, b)`` survives that first toss with probability ``1 - p``,
and ``p`` given survival is ``Beta(a, b + 1)``. So the code reuses :mod:`rebuy.models.bgnbd`
through these identities, with ``BG(b + 1)`` the BG/NBD model with parameters ``(r, alpha, a, b + 1)``:

- likelihood: ``L = b / (a + b) * L_BG(b+1) + a / (a + b) * [x = 0]`` (a one-time buyer may have
  dropped at time 0; a repeat buyer did not);
- given alive at T the posteriors are the same, so expected purchases are
  ``P(alive) * f(t, x, T)`` with ``f`` BG(b + 1)'s purchase factor, and P(at least one purchase in
  the next t) is ``P(alive) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x))``;
- P(alive) is BG(b + 1)'s for x >= 1, and ``< 1`` also for one-time buyers (x = 0);
- population expectation: ``b / (a + b)`` times BG(b + 1)'s.

Invariants: parameters ``r, alpha, a, b`` with ``alpha`` in the summary's time unit. The objective
works on log parameters with time scaled by ``1 / max(T)`` (lifetimes' scaling, the same
coordinates as BG/NBD), so its optimum ``theta`` maps to ``alpha = exp(theta_alpha) * max(T)``.
Predictions equal lifetimes' to ~1e-9 relative and stay finite where lifetimes overflows (heavy
buyers, T = 0, t = 0), as BG/NBD's do.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from rebuy.models.base import PurchaseModel
from rebuy.models.bgnbd import (
    BGNBDForecast,
    BGNBDModel,
    BGNBDObjective,
    bgnbd_log_likelihood,
    gamma_rate_purchase_probability,
    geometric_dropout_moments,
    prediction_params,
)
from rebuy.models.inputs import row_arrays
from rebuy.models.optimize import Solution, pairwise_dot


def _shifted_b(params: dict[str, float]) -> dict[str, float]:
    """The BG/NBD parameters ``(r, alpha, a, b + 1)`` of the MBG/NBD identities (module docstring)."""
    return {"r": params["r"], "alpha": params["alpha"], "a": params["a"], "b": params["b"] + 1.0}


def mbgnbd_log_likelihood(params: dict[str, float], frequency: Any, recency: Any, T: Any) -> np.ndarray:
    """Per-customer MBG/NBD log-likelihood (Batislam et al. 2007, eq. 3; lifetimes' form), in log
    space: ``log(b / (a + b) * L_BG(b + 1) + a / (a + b) * [x = 0])``; time in the unit of
    ``params["alpha"]``."""
    a, b = params["a"], params["b"]
    x, tx, T = row_arrays(frequency, recency, T)
    survived = math.log(b) - math.log(a + b) + bgnbd_log_likelihood(_shifted_b(params), x, tx, T)
    dropped_at_start = np.where(x == 0, math.log(a) - math.log(a + b), -np.inf)
    return np.logaddexp(survived, dropped_at_start)


class MBGNBDObjective:
    """lifetimes' ``ModifiedBetaGeoFitter._negative_log_likelihood`` (mean over weighted rows plus
    ``penalizer * sum(params**2)``, log parameters, time scaled by ``scale`` = 1 / max(T)) with its
    analytic gradient.

    Repeat buyers (x >= 1) contribute ``log(b / (a + b))`` plus BG/NBD's log-likelihood at
    ``b + 1``, evaluated (value and gradient) by a :class:`~rebuy.models.bgnbd.BGNBDObjective` on
    those rows; one-time buyers, ``log(b / (a + b) * (alpha / (alpha + T)) ** r + a / (a + b))``,
    are aggregated by distinct T. So an evaluation costs what BG/NBD's does. Rows should be
    sorted by x (as :func:`~rebuy.models.inputs.distinct_rows` returns them)."""

    def __init__(
        self, x: np.ndarray, tx: np.ndarray, T: np.ndarray, w: np.ndarray, penalizer: float, scale: float
    ):
        self.scale = float(scale)
        self.penalizer = float(penalizer)
        self.W = float(w.sum())
        self.wx = pairwise_dot(w, x)  # repeat purchases: time scaling shifts the ll by wx log(scale)
        rep = x > 0
        self.repeat = BGNBDObjective(x[rep], tx[rep], T[rep], w[rep], 0.0, scale)
        self.t0, inverse = np.unique(T[~rep] * self.scale, return_inverse=True)
        self.w0 = np.bincount(inverse, weights=w[~rep], minlength=len(self.t0))

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        params = np.exp(theta)
        ll, grad_params = self._terms(theta)
        f = -ll / self.W + self.penalizer * float(params @ params)
        g = (-grad_params / self.W + 2 * self.penalizer * params) * params
        return float(f), g

    def log_likelihood(self, theta: np.ndarray) -> float:
        """Unpenalised total log-likelihood at ``theta`` with time in the data's unit (scaling time
        by s adds ``-x log(s)`` per customer)."""
        return self._terms(theta)[0] + self.wx * math.log(self.scale)

    def _terms(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Weighted total log-likelihood (scaled time) and its gradient in (r, alpha, a, b)."""
        r, alpha, a, b = np.exp(theta)
        ll_rep, g_rep = self._repeat_terms(theta, a, b)
        ll_0, g_0 = self._one_time_terms(r, alpha, a, b)
        return ll_rep + ll_0, g_rep + g_0

    def _repeat_terms(self, theta: np.ndarray, a: float, b: float) -> tuple[float, np.ndarray]:
        """Repeat buyers: sum of ``log(b / (a + b)) + ll_BG(r, alpha, a, b + 1)`` and its gradient."""
        bg = self.repeat
        if bg.W == 0:
            return 0.0, np.zeros(4)
        theta_bg = np.array([theta[0], theta[1], theta[2], math.log1p(b)])
        f_bg, g_bg = bg(theta_bg)  # -mean ll and its gradient in log(r, alpha, a, b + 1)
        grad = -bg.W * g_bg / np.exp(theta_bg)
        grad[2] -= bg.W / (a + b)
        grad[3] += bg.W * (1.0 / b - 1.0 / (a + b))
        return bg.W * (math.log(b) - math.log(a + b) - f_bg), grad

    def _one_time_terms(self, r: float, alpha: float, a: float, b: float) -> tuple[float, np.ndarray]:
        """One-time buyers: sum of ``log(b (alpha / (alpha + T))^r + a) - log(a + b)`` and its gradient."""
        w0 = self.w0
        W0 = float(w0.sum())
        L = math.log(alpha) - np.log(alpha + self.t0)  # log(alpha / (alpha + T)) <= 0
        u = math.log(b) - math.log(a) + r * L
        q = expit(u)  # share of the "survived the first toss" term
        wq = w0 * q
        ll = W0 * (math.log(a) - math.log(a + b)) + float(w0 @ np.logaddexp(0.0, u))
        g_alpha = r * float(wq @ (1.0 / alpha - 1.0 / (alpha + self.t0)))
        g_a = float((w0 - wq).sum()) / a - W0 / (a + b)
        g_b = float(wq.sum()) / b - W0 / (a + b)
        return ll, np.array([float(wq @ L), g_alpha, g_a, g_b])


class MBGNBDModel(PurchaseModel):
    """MBG/NBD repeat-purchase model (Batislam, Denizel & Filiztekin 2007): lifetimes'
    ``ModifiedBetaGeoFitter`` objective. Unlike BG/NBD, a customer may drop out right after the
    first purchase, so one-time buyers have P(alive) < 1.

    Parameters
    ----------
    penalizer, retry_penalizer : as for :class:`~rebuy.models.BGNBDModel` (lifetimes'
        ``penalizer_coef``; the penalty of the one retry).
    solver : ``"numpy"`` (default) minimises lifetimes' exact ``ModifiedBetaGeoFitter`` objective
        with an analytic gradient on the distinct rows (warm-started above
        ``2 * WARM_START_CUSTOMERS`` customers); ``"lifetimes"`` calls ``ModifiedBetaGeoFitter.fit``.

    Attributes (after ``fit``)
    ----------
    params_ : {"r", "alpha", "a", "b"} (alpha in time units); the other fit attributes as for
    :class:`~rebuy.models.BGNBDModel`.
    """

    PARAM_NAMES = ("r", "alpha", "a", "b")
    SHAPE_PARAMS = ("r", "a", "b")
    DISPLAY_NAME = "MBG/NBD"

    def fit(
        self, summary: pd.DataFrame, time_unit: str | None = None, sample_weight: Any = None, *,
        start_from: MBGNBDModel | None = None,
    ) -> MBGNBDModel:
        """As :meth:`PurchaseModel.fit`; notes in ``warnings_`` when ``a`` is ~1 (the closed forms
        divide by ``a - 1``)."""
        super().fit(summary, time_unit=time_unit, sample_weight=sample_weight, start_from=start_from)
        if abs(self.params_["a"] - 1.0) < 1e-6:
            self.warnings_.append("MBG/NBD a is ~1: expected purchases use a = 1 +/- 1e-6")
        return self


    # ---------------------------------------------------------------- objective hooks
    def _objective(
        self, cols: list[np.ndarray], weights: np.ndarray, penalizer: float, mask: Any
    ) -> MBGNBDObjective:
        x, tx, T = cols
        return MBGNBDObjective(x[mask], tx[mask], T[mask], weights, penalizer, 1.0 / T.max())

    # the same coordinates as BG/NBD: log parameters, alpha in units of max(T)
    _from_theta = BGNBDModel._from_theta
    _to_theta = BGNBDModel._to_theta

    def _lifetimes_fitter(self, penalizer: float) -> Any:
        from lifetimes import ModifiedBetaGeoFitter

        return ModifiedBetaGeoFitter(penalizer_coef=penalizer)

    def _fitted_log_likelihood(self, solution: Solution, cols: list[np.ndarray], counts: np.ndarray) -> float:
        """From the all-rows objective at the optimum: one evaluation on its aggregated rows."""
        return float(solution.objective.log_likelihood(solution.theta))

    # ---------------------------------------------------------------- predictions
    def log_likelihood(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """Per-customer log-likelihood at ``params_`` (:func:`mbgnbd_log_likelihood`)."""
        self._check_fitted()
        return mbgnbd_log_likelihood(self.params_, frequency, recency, T)

    def p_alive(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(customer still alive at T | frequency, recency, T) (Batislam et al. 2007, eq. 5);
        below 1 for one-time buyers too."""
        self._check_fitted()
        r, alpha, a, b = prediction_params(self.params_)
        x, tx, T = row_arrays(frequency, recency, T)
        with np.errstate(over="ignore", divide="ignore"):
            log_dead_odds = math.log(a) - np.log(b + x) + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
        return np.atleast_1d(expit(-log_dead_odds))

    def expected_purchases(self, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """Conditional expected number of repeat purchases in the next ``t`` time units (Wagner &
        Hoppe 2008; lifetimes' ``conditional_expected_number_of_purchases_up_to_time``).

        ``P(alive) * f(t, x, T)`` with ``f`` BG/NBD's purchase factor at ``b + 1``:
        ``(a+b+x)/(a-1) * [1 - (1-z)^(a-1) 2F1(a+b-r, a-1; a+b+x; z)]``, ``z = t / (alpha+T+t)``
        (Euler's transformation of the published hypergeometric term). Finite for heavy buyers,
        T = 0 and t = 0. Computed by :class:`MBGNBDForecast`, so both give the same values."""
        self._check_fitted()
        t, x, tx, T = row_arrays(t, frequency, recency, T)
        out = MBGNBDForecast(self, x, tx, T).expected_purchases(t.ravel())
        return np.atleast_1d(out.reshape(t.shape))

    def _purchase_factor(self, t: Any, x: Any, T: Any) -> np.ndarray:
        """``expected_purchases / P(alive)``: BG/NBD's at ``b + 1`` (module docstring); depends on
        (t, x, T) only. 0 where t = 0; not checked for finiteness."""
        return self._shifted_bgnbd()._purchase_factor(t, x, T)

    def _shifted_bgnbd(self) -> BGNBDModel:
        """The BG/NBD model ``(r, alpha, a, b + 1)`` of the identities (module docstring)."""
        return BGNBDModel.from_params(_shifted_b(self.params_), self.time_unit_)

    def probability_of_purchase(self, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(at least one repeat purchase in the next ``t`` time units | frequency, recency, T)
        (:func:`~rebuy.models.bgnbd.gamma_rate_purchase_probability`: an MBG/NBD customer alive at
        T cannot drop out before the next purchase either)."""
        self._check_fitted()
        return gamma_rate_purchase_probability(self, t, frequency, recency, T)

    def alive_count_moments(self, t: Any, frequency: Any, T: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`PurchaseModel.alive_count_moments`: alive at T after x repeat purchases, the
        rate is Gamma(r + x, alpha + T) and p is Beta(a, b + x + 1) a posteriori (x + 1 survived
        dropout chances: the first purchase's too)."""
        self._check_fitted()
        r, alpha, a, b = prediction_params(self.params_)
        x, T = (v.ravel() for v in row_arrays(frequency, T))
        return geometric_dropout_moments(float(t), r + x, alpha + T, a, b + x + 1)

    def expected_purchases_population(self, t: Any) -> np.ndarray:
        """Unconditional expected repeat purchases of a new customer within ``t`` time units of the
        first purchase (lifetimes' ``expected_number_of_purchases_up_to_time``): the share
        ``b / (a + b)`` that survives the first toss times BG/NBD's at ``b + 1``."""
        self._check_fitted()
        a, b = self.params_["a"], self.params_["b"]
        return b / (a + b) * self._shifted_bgnbd().expected_purchases_population(t)

    # ---------------------------------------------------------------- fast exact forecast
    def conditional(self, frequency: Any, recency: Any, T: Any) -> MBGNBDForecast:
        """As :meth:`PurchaseModel.conditional`: an :class:`MBGNBDForecast` (same values, shared work)."""
        self._check_fitted()
        return MBGNBDForecast(self, frequency, recency, T)


class MBGNBDForecast(BGNBDForecast):
    """MBG/NBD predictions for fixed customers: :class:`~rebuy.models.bgnbd.BGNBDForecast` on an
    :class:`MBGNBDModel`. Expected purchases factor as ``P(alive) * f(t, x, T)`` here too (see
    :meth:`MBGNBDModel._purchase_factor`), so P(alive) is computed once per row and ``f`` once per
    distinct (x, T) pair and horizon; values equal the model's methods exactly."""

    model: MBGNBDModel
