"""BG/NBD repeat-purchase model (Fader, Hardie & Lee 2005): likelihood, objective, model.

Layout: :func:`bgnbd_log_likelihood` (per customer, log space), :class:`BGNBDObjective`
(lifetimes' ``BetaGeoFitter._negative_log_likelihood`` with its analytic gradient),
:class:`BGNBDModel` (fit via :class:`~rebuy.models.base.PurchaseModel`, predictions) and
:class:`BGNBDForecast` (its fast exact ``conditional`` forecast for CLV and scores).

Invariants: parameters ``r, alpha, a, b`` with ``alpha`` in the summary's time unit. The objective
works on log parameters with time scaled by ``1 / max(T)`` (lifetimes' scaling), so its optimum
``theta`` maps to ``alpha = exp(theta_alpha) * max(T)``. Predictions equal lifetimes' to ~1e-9
relative and stay finite where lifetimes overflows (heavy buyers, T = 0, t = 0): expected purchases
factor as ``P(alive) * f(t, x, T)``, and ``f`` is computed once per distinct (x, T) pair.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import digamma, expit, gammaln

from rebuy.dates import unit_days
from rebuy.errors import InvalidParameterError
from rebuy.models.base import ConditionalForecast, PurchaseModel, check_max_days
from rebuy.models.inputs import distinct_rows, row_arrays
from rebuy.models.optimize import Solution, pairwise_dot
from rebuy.models.special import hyp2f1


def bgnbd_log_likelihood(params: dict[str, float], frequency: Any, recency: Any, T: Any) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6, in log space); time in
    the unit of ``params["alpha"]``."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    x, tx, T = row_arrays(frequency, recency, T)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(tx + alpha)
    a4 = np.where(x > 0, a4, -np.inf)
    return a1 + a2 + np.logaddexp(a3, a4)


class BGNBDObjective:
    """lifetimes' ``BetaGeoFitter._negative_log_likelihood`` (mean over weighted rows plus
    ``penalizer * sum(params**2)``, log parameters, time scaled by ``scale`` = 1 / max(T)) with its
    analytic gradient. Terms that depend only on x, only on T or only on t_x are computed on those
    distinct values and aggregated by weight, so each evaluation costs a few vector operations per row.
    Rows should be sorted by x (as :func:`~rebuy.models.inputs.distinct_rows` returns them)."""

    def __init__(
        self, x: np.ndarray, tx: np.ndarray, T: np.ndarray, w: np.ndarray, penalizer: float, scale: float
    ):
        self.scale = float(scale)
        self.penalizer = float(penalizer)
        self.W = float(w.sum())
        zero = x == 0
        # one-time buyers: ll = r * (log(alpha) - log(alpha + T)), aggregated by T
        self.t0, w0 = np.unique(T[zero] * self.scale, return_inverse=True)
        self.w0 = np.bincount(w0, weights=w[zero], minlength=len(self.t0))
        rep = ~zero
        x, tx, T, w = x[rep], tx[rep] * self.scale, T[rep] * self.scale, w[rep]
        self.ux, self.ix = np.unique(x, return_inverse=True)
        self.uT, self.iT = np.unique(T, return_inverse=True)
        self.utx, self.itx = np.unique(tx, return_inverse=True)
        self.x, self.w = x, w
        # rows sorted by x: per-x sums by reduceat, else bincount
        self.x_starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]]) if len(x) else np.array([], np.int64)
        if len(self.x_starts) != len(self.ux):
            self.x_starts = None
        self.wx = np.bincount(self.ix, weights=w, minlength=len(self.ux))  # weight per distinct x
        self.wT = np.bincount(self.iT, weights=w, minlength=len(self.uT))
        self.wxT = np.bincount(self.iT, weights=w * x, minlength=len(self.uT))
        self.W0 = float(self.w0.sum())

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        r, alpha, a, b = params = np.exp(theta)
        ll_x, g_x = self._x_terms(r, alpha, a, b)
        ll_0, g_0 = self._one_time_terms(r, alpha)
        ll_3, ll_4, g_rep = self._repeat_terms(r, alpha, a, b)
        ll = ll_x + ll_0 + ll_3 + ll_4
        grad_params = g_x + g_0 + g_rep
        f = -ll / self.W + self.penalizer * float(params @ params)
        g = (-grad_params / self.W + 2 * self.penalizer * params) * params
        return float(f), g

    def _x_terms(self, r: float, alpha: float, a: float, b: float) -> tuple[float, np.ndarray]:
        """Terms A1 + A2 of FHL eq. 6 (x only) and their derivatives, on the distinct x."""
        ux, wx = self.ux, self.wx
        la = math.log(alpha)
        n = wx.sum() + self.W0
        s12 = wx @ (
            gammaln(r + ux) - gammaln(r) + gammaln(a + b) + gammaln(b + ux) - gammaln(b) - gammaln(a + b + ux)
        ) + n * r * la
        g_r = wx @ (digamma(r + ux) - digamma(r)) + n * la
        g_a = wx @ (digamma(a + b) - digamma(a + b + ux))
        g_b = wx @ (digamma(a + b) + digamma(b + ux) - digamma(b) - digamma(a + b + ux))
        return s12, np.array([g_r, n * r / alpha, g_a, g_b])

    def _one_time_terms(self, r: float, alpha: float) -> tuple[float, np.ndarray]:
        """One-time buyers: -r * log(alpha + T)."""
        l0 = np.log(alpha + self.t0)
        s0 = self.w0 @ l0
        return -r * s0, np.array([-s0, -r * (self.w0 @ (1.0 / (alpha + self.t0))), 0.0, 0.0])

    def _repeat_terms(self, r: float, alpha: float, a: float, b: float) -> tuple[float, float, np.ndarray]:
        """Repeat buyers: log(exp(A3) + exp(A4)) = A3 + softplus(d), d = A4 - A3: (sum A3,
        sum softplus(d), gradient)."""
        ux = self.ux
        lT_u = np.log(alpha + self.uT)
        ltx_u = np.log(alpha + self.utx)
        s3 = -(r * (self.wT @ lT_u) + self.wxT @ lT_u)  # sum w * A3
        c4 = math.log(a) - np.log(b + ux - 1)
        D = lT_u[self.iT] - ltx_u[self.itx]  # log((alpha + T) / (alpha + t_x)) >= 0
        rx = r + self.x
        d = c4[self.ix] + rx * D
        e = np.exp(-np.abs(d))
        sp = np.maximum(d, 0.0) + np.log1p(e)  # softplus(d) = log(1 + exp(d))
        p = np.where(d >= 0, 1.0, e) / (1.0 + e)  # expit(d): share of the A4 term
        wp = self.w * p
        s4 = pairwise_dot(self.w, sp)
        g_r = -(self.wT @ lT_u) + pairwise_dot(wp, D)
        inv_T = 1.0 / (alpha + self.uT)
        inv_tx = 1.0 / (alpha + self.utx)
        g_alpha = -(r * (self.wT @ inv_T) + self.wxT @ inv_T) + pairwise_dot(
            wp * rx, inv_T[self.iT] - inv_tx[self.itx]
        )
        if self.x_starts is not None and len(wp):
            wp_x = np.add.reduceat(wp, self.x_starts)
        else:
            wp_x = np.bincount(self.ix, weights=wp, minlength=len(ux))
        g_a = wp_x.sum() / a
        g_b = -(wp_x @ (1.0 / (b + ux - 1)))
        return s3, s4, np.array([g_r, g_alpha, g_a, g_b])


SHAPE_FLOOR = 1e-12
"""BG/NBD's and MBG/NBD's a and b are read as at least this in predictions. A fit at the boundary
(a, b -> 0 on a shop where nobody seems to drop out) then gives the limit's values instead of 0/0;
predictions are flat there (a = b = 1e-12 and 1e-8 agree to 1e-4)."""


def prediction_params(params: dict[str, float]) -> tuple[float, float, float, float]:
    """``(r, alpha, a, b)`` for the closed forms: a and b floored at :data:`SHAPE_FLOOR`."""
    return params["r"], params["alpha"], max(params["a"], SHAPE_FLOOR), max(params["b"], SHAPE_FLOOR)


def _nudged_a(a: float) -> float:
    """``a`` moved 1e-6 away from 1, where the closed forms divide by ``a - 1``."""
    if abs(a - 1.0) < 1e-6:
        return 1.0 + math.copysign(1e-6, a - 1.0) if a != 1.0 else 1.0 + 1e-6
    return a


def _one_minus_scaled_2f1(
    first: tuple[Any, Any, Any], second: tuple[Any, Any, Any], c: Any, z: np.ndarray, log1mz: np.ndarray
) -> np.ndarray:
    """``1 - (1-z)^p 2F1(A, B; c; z)`` with ``(A, B, p) = first``, using the Euler-transformed form
    ``second`` (the same value) where ``first`` is not finite. Call under ``np.errstate(all="ignore")``."""
    (A, B, p), (A2, B2, p2) = first, second
    h = hyp2f1(A, B, c, z)
    log_term = np.log(np.abs(h)) + p * log1mz
    bad = ~np.isfinite(h) | np.isnan(log_term) | np.isposinf(log_term)
    if bad.any():
        h_alt = hyp2f1(A2, B2, c, z)
        log_term = np.where(bad, np.log(np.abs(h_alt)) + p2 * log1mz, log_term)
        h = np.where(bad, h_alt, h)
    # 2F1 can be negative when c < 0 (lifetimes returns NaN there)
    return np.where(h > 0, -np.expm1(log_term), 1.0 - np.sign(h) * np.exp(log_term))


class BGNBDModel(PurchaseModel):
    """BG/NBD repeat-purchase model (Fader, Hardie & Lee 2005): lifetimes' ``BetaGeoFitter`` objective.

    Parameters
    ----------
    penalizer : L2 penalty on the parameters for the first fit (lifetimes' ``penalizer_coef``).
    retry_penalizer : penalty for the one retry when the first fit does not converge or gives
        non-finite or degenerate parameters (a warning is logged and kept in ``warnings_``).
    solver : ``"numpy"`` (default) minimises lifetimes' exact ``BetaGeoFitter`` objective (same
        likelihood, time scaling, penalizer, start and BFGS tolerance; warm-started from a subsample
        fit above ``2 * WARM_START_CUSTOMERS`` customers) with an analytic gradient on the distinct
        rows: lifetimes' optimum, many times faster; ``"lifetimes"`` calls ``BetaGeoFitter.fit``.

    Attributes (after ``fit``)
    ----------
    params_ : {"r", "alpha", "a", "b"} (alpha in time units).  standard_errors_, covariance_,
    summary : from the Hessian (see :mod:`rebuy.models.base`).  log_likelihood_ : total
    log-likelihood of the fitted data (unpenalised).  time_unit_ : "weeks" or "days".
    penalizer_ : the penalizer actually used.  converged_ : True when the first attempt converged.
    n_customers_, n_distinct_rows_ : fit sizes.  warnings_ : list of warning strings.
    """

    PARAM_NAMES = ("r", "alpha", "a", "b")
    SHAPE_PARAMS = ("r", "a", "b")
    DISPLAY_NAME = "BG/NBD"

    def fit(self, summary: pd.DataFrame, time_unit: str | None = None, sample_weight: Any = None, *,
            start_from: BGNBDModel | None = None) -> BGNBDModel:
        """Fit on an RFM summary (columns ``frequency``, ``recency``, ``T``); returns self.

        ``time_unit`` defaults to ``summary.attrs["time_unit"]`` (set by ``rfm_summary``), else weeks.
        ``sample_weight``: customers each row stands for (e.g. the counts of already-distinct rows
        aggregated by Spark); None counts every row once. ``start_from``: see :meth:`PurchaseModel.fit`.
        """
        super().fit(summary, time_unit=time_unit, sample_weight=sample_weight, start_from=start_from)
        if abs(self.params_["a"] - 1.0) < 1e-6:
            self.warnings_.append("BG/NBD a is ~1: expected purchases use a = 1 +/- 1e-6")
        return self


    # ---------------------------------------------------------------- objective hooks
    def _objective(self, cols: list[np.ndarray], weights: np.ndarray, penalizer: float, mask: Any) -> BGNBDObjective:
        x, tx, T = cols
        return BGNBDObjective(x[mask], tx[mask], T[mask], weights, penalizer, 1.0 / T.max())

    def _from_theta(self, theta: np.ndarray, cols: list[np.ndarray]) -> dict[str, float]:
        r, alpha, a, b = np.exp(theta)
        return {"r": r, "alpha": alpha / (1.0 / cols[2].max()), "a": a, "b": b}

    def _to_theta(self, params: dict[str, float], cols: list[np.ndarray]) -> np.ndarray:
        scale = 1.0 / cols[2].max()
        with np.errstate(all="ignore"):
            return np.log([params["r"], params["alpha"] * scale, params["a"], params["b"]])

    def _lifetimes_fitter(self, penalizer: float) -> Any:
        from lifetimes import BetaGeoFitter

        return BetaGeoFitter(penalizer_coef=penalizer)

    def _fitted_log_likelihood(self, solution: Solution, cols: list[np.ndarray], counts: np.ndarray) -> float:
        """From the minimum rebuy's BFGS reached (no extra pass over the rows): time scaled by s
        adds -x log(s) per customer; per customer otherwise (lifetimes' solver)."""
        objective = solution.objective
        fun = getattr(objective, "fun_", None)
        if fun is not None:
            scaled = np.exp(solution.theta)
            ll = -(fun - objective.penalizer * float(scaled @ scaled)) * objective.W
            ll += float(counts @ cols[0]) * math.log(objective.scale)
            if np.isfinite(ll):
                return float(ll)
        return super()._fitted_log_likelihood(solution, cols, counts)

    # ---------------------------------------------------------------- predictions
    def log_likelihood(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """Per-customer log-likelihood at ``params_`` (:func:`bgnbd_log_likelihood`)."""
        self._check_fitted()
        return bgnbd_log_likelihood(self.params_, frequency, recency, T)

    def _log_div(self, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
        r, alpha, a, b = prediction_params(self.params_)
        return (r + x) * (np.log(alpha + T) - np.log(alpha + tx)) + np.log(a) - np.log(b + np.maximum(x, 1) - 1)

    def p_alive(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(customer still alive | frequency, recency, T); 1 for customers with no repeat purchase."""
        self._check_fitted()
        x, tx, T = row_arrays(frequency, recency, T)
        with np.errstate(over="ignore"):
            p = np.where(x > 0, expit(-self._log_div(x, tx, T)), 1.0)
        return np.atleast_1d(p)

    def expected_purchases(self, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """Conditional expected number of repeat purchases in the next ``t`` time units (FHL 2005 eq. 10).

        Computed as ``(a+b+x-1)/(a-1) * [1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)] * P(alive)``
        with ``z = t / (alpha+T+t)`` (Euler's transformation of the paper's hypergeometric term, whose
        parameters then no longer grow with x), falling back to lifetimes' form where scipy's
        ``hyp2f1`` is not finite. Finite for heavy buyers, T = 0 and t = 0.
        """
        self._check_fitted()
        t, x, tx, T = row_arrays(t, frequency, recency, T)
        if (t < 0).any():
            raise InvalidParameterError("expected_purchases: t must be >= 0")
        with np.errstate(all="ignore"):
            palive = np.where(x > 0, expit(-self._log_div(x, tx, T)), 1.0)
            out = self._purchase_factor(t, x, T) * palive
        if not np.isfinite(out).all():
            n_bad = int((~np.isfinite(out)).sum())
            raise FloatingPointError(f"expected_purchases: {n_bad} non-finite value(s) for params {self.params_}")
        return np.atleast_1d(np.maximum(out, 0.0))

    def _purchase_factor(self, t: Any, x: Any, T: Any) -> np.ndarray:
        """``expected_purchases / P(alive)``: depends on (t, x, T) only, not on t_x, so predictions
        compute it once per distinct (x, T) pair. 0 where t = 0; not checked for finiteness."""
        r, alpha, a, b = prediction_params(self.params_)
        a = _nudged_a(a)
        t, x, T = row_arrays(t, x, T)
        with np.errstate(all="ignore"):
            c = a + b + x - 1
            z = t / (alpha + T + t)
            log1mz = np.log(alpha + T) - np.log(alpha + T + t)
            second = _one_minus_scaled_2f1((a + b - 1 - r, a - 1, a - 1), (r + x, b + x, r + x), c, z, log1mz)
            out = c / (a - 1) * second
        return np.where(t == 0, 0.0, out)

    def probability_of_purchase(self, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(at least one repeat purchase in the next ``t`` time units | frequency, recency, T)
        (:func:`gamma_rate_purchase_probability`: a BG/NBD customer alive at T cannot drop out
        before the next purchase)."""
        self._check_fitted()
        return gamma_rate_purchase_probability(self, t, frequency, recency, T)

    def alive_count_moments(self, t: Any, frequency: Any, T: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`PurchaseModel.alive_count_moments`: alive at T after x repeat purchases, the
        rate is Gamma(r + x, alpha + T) and p is Beta(a, b + x) a posteriori (x survived dropouts)."""
        self._check_fitted()
        r, alpha, a, b = prediction_params(self.params_)
        x, T = (v.ravel() for v in row_arrays(frequency, T))
        return geometric_dropout_moments(float(t), r + x, alpha + T, a, b + x)

    def expected_purchases_population(self, t: Any) -> np.ndarray:
        """Unconditional expected repeat purchases of a new customer within ``t`` time units of the
        first purchase (FHL 2005 eq. 9); used for the cohort tracking curve."""
        self._check_fitted()
        r, alpha, a, b = prediction_params(self.params_)
        a = _nudged_a(a)
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if (t < 0).any():
            raise InvalidParameterError("expected_purchases_population: t must be >= 0")
        with np.errstate(all="ignore"):
            z = t / (alpha + t)
            log1mz = np.log(alpha) - np.log(alpha + t)
            # Euler: 2F1(r, b; c; z) = (1-z)^(c-r-b) 2F1(c-r, c-b; c; z)
            second = _one_minus_scaled_2f1((r, b, r), (a + b - 1 - r, a - 1, a - 1), a + b - 1, z, log1mz)
            out = (a + b - 1) / (a - 1) * second
        out = np.where(t == 0, 0.0, out)
        if not np.isfinite(out).all():
            raise FloatingPointError(f"expected_purchases_population: non-finite values for params {self.params_}")
        return out

    # ---------------------------------------------------------------- fast exact forecast
    def conditional(self, frequency: Any, recency: Any, T: Any) -> BGNBDForecast:
        """As :meth:`PurchaseModel.conditional`: a :class:`BGNBDForecast` (same values, shared work)."""
        self._check_fitted()
        return BGNBDForecast(self, frequency, recency, T)


class BGNBDForecast(ConditionalForecast):
    """BG/NBD predictions for fixed customers. Expected purchases factor as ``P(alive) * f(t, x, T)``
    (see :meth:`BGNBDModel._purchase_factor`), so P(alive) is computed once per row and ``f`` once
    per distinct (x, T) pair and horizon; values equal the model's methods exactly."""

    model: BGNBDModel

    def __init__(self, model: BGNBDModel, frequency: Any, recency: Any, T: Any):
        super().__init__(model, frequency, recency, T)
        (self.px, self.pT), _, self.pinv = distinct_rows(self.x, self.T)

    def expected_purchases(self, t: Any, rows: Any = slice(None)) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if (t < 0).any():
            raise InvalidParameterError("expected_purchases: t must be >= 0")
        with np.errstate(all="ignore"):
            if t.ndim == 0:  # one horizon: f on the pairs
                out = self.model._purchase_factor(t, self.px, self.pT)[self.pinv[rows]] * self.p_alive()[rows]
            else:
                out = self.model._purchase_factor(t, self.x[rows], self.T[rows]) * self.p_alive()[rows]
        if not np.isfinite(out).all():
            raise FloatingPointError(
                f"expected_purchases: {int((~np.isfinite(out)).sum())} non-finite value(s) for params "
                f"{self.model.params_}"
            )
        return np.maximum(out, 0.0)

    def next_purchase_days(self, max_days: int = 1825) -> np.ndarray:
        """As :meth:`ConditionalForecast.next_purchase_days`, in closed form: P(a purchase within t)
        = P(alive) (1 - (A / (A + t))^R) with R = r + x, A = alpha + T reaches 1/2 at
        t* = A ((1 - 1 / (2 P(alive)))^(-1/R) - 1), so the day is ceil(t*) (in days), at least 1."""
        max_days = check_max_days(max_days)
        return median_purchase_days(self.model, self.p_alive(), self.x, self.T, max_days)


def gamma_rate_purchase_probability(model: PurchaseModel, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
    """``P(alive) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x))``: P(at least one purchase in
    the next ``t`` time units) for models whose alive customers buy at a Gamma(r + x, alpha + T)
    rate a posteriori and cannot drop out before their next purchase (BG/NBD, MBG/NBD);
    InvalidParameterError for t < 0."""
    r, alpha = model.params_["r"], model.params_["alpha"]
    t, x, tx, T = row_arrays(t, frequency, recency, T)
    if (t < 0).any():
        raise InvalidParameterError("probability_of_purchase: t must be >= 0")
    with np.errstate(all="ignore"):
        log_none_if_alive = (r + x) * (np.log(alpha + T) - np.log(alpha + T + t))
    return np.atleast_1d(model.p_alive(x, tx, T) * -np.expm1(log_none_if_alive))


def median_purchase_days(model: PurchaseModel, p_alive: np.ndarray, x: np.ndarray, T: np.ndarray, max_days: int) -> np.ndarray:
    """Whole days until P(a purchase) reaches 1/2 for models whose alive customers buy at a
    Gamma(r + x, alpha + T) rate and cannot drop out before their next purchase (BG/NBD, MBG/NBD);
    -1 where P(alive) <= 1/2 or the day is after ``max_days``."""
    r, alpha = model.params_["r"], model.params_["alpha"]
    days = np.full(len(x), -1, dtype=np.int64)
    ok = p_alive > 0.5
    with np.errstate(all="ignore"):
        A = alpha + T[ok]
        t_star = A * np.expm1(-np.log1p(-0.5 / p_alive[ok]) / (r + x[ok]))  # time units
        d = np.maximum(np.ceil(t_star * unit_days(model.time_unit_) - 1e-9), 1.0)
    d = np.where(np.isfinite(d) & (d <= max_days), d, -1)
    days[ok] = d.astype(np.int64)
    return days


# ---------------------------------------------------------------------------- purchase-count moments
JACOBI_NODES = 40
"""Gauss-Jacobi nodes of the integrals over the dropout probability p ~ Beta (exact for polynomials
of degree 79 in p; the integrands are smooth, so moments agree with Monte Carlo to its precision)."""


LARGE_B = 500.0
"""Above this b, Beta(a, b) is taken as Gamma(a, rate b): scipy's Jacobi weights overflow near b = 1000,
and the two laws differ by O(1/b)."""


def _beta_nodes(a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes p and weights (summing to 1) of E[f(p)] for p ~ Beta(a, b): Gauss-Jacobi, or
    generalised Gauss-Laguerre in p = g / b with g ~ Gamma(a, 1) above :data:`LARGE_B`."""
    from scipy.special import roots_genlaguerre, roots_jacobi

    with np.errstate(all="ignore"):
        if b > LARGE_B:
            g, w = roots_genlaguerre(JACOBI_NODES, a - 1.0)  # weight g^(a-1) e^(-g) on [0, inf)
            return g / b, w / w.sum()
        if a - 1.0 <= -1.0 or b - 1.0 <= -1.0:  # a or b ~ 0 (below float spacing at 1): no Jacobi law;
            return np.full(JACOBI_NODES, np.nan), np.full(JACOBI_NODES, np.nan)  # the caller's degenerate branch
        u, w = roots_jacobi(JACOBI_NODES, b - 1.0, a - 1.0)  # weight (1-u)^(b-1) (1+u)^(a-1) on [-1, 1]
        return (1.0 + u) / 2.0, w / w.sum()


def geometric_dropout_moments(
    t: float, R: np.ndarray, A: np.ndarray, a: float, b_post: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(P(N = 0), E[N], E[N (N - 1)])`` of purchases N in the next ``t`` time units of customers
    alive now whose purchase rate is Gamma(R, A) (shape, rate) and who drop out after each purchase
    with probability p ~ Beta(a, b_post): N = min(Poisson(lambda t), Geometric(p)).

    Given (lambda, p): E[N] = (1 - e^{-lambda p t}) / p and E[N(N-1)] = 2 (1 - p) / p^2
    (1 - e^{-lambda p t} (1 + lambda p t)); lambda integrates in closed form, p by Gauss-Jacobi
    once per distinct b_post (rows with the same x share the nodes)."""
    t = float(t)
    p_none = np.exp(-R * np.log1p(t / A))
    mean, second = np.zeros(len(R)), np.zeros(len(R))
    if t == 0:
        return np.ones(len(R)), mean, second
    values, inverse = np.unique(b_post, return_inverse=True)
    for k, bp in enumerate(values):
        rows = np.flatnonzero(inverse == k)
        p, w = _beta_nodes(a, float(bp))
        if not (np.isfinite(p).all() and np.isfinite(w).all() and p.min() > 0):
            # the dropout law sits at p ~ 0 (a degenerate fit, e.g. a -> 0): no dropout in the window,
            # N ~ Poisson(lambda t) given lambda
            mean[rows] = R[rows] * t / A[rows]
            second[rows] = R[rows] * (R[rows] + 1.0) * (t / A[rows]) ** 2
            continue
        y = p[None, :] * t / A[rows, None]  # p t / A
        Rk = R[rows, None]
        L = Rk * np.log1p(y)
        mean[rows] = (-np.expm1(-L) / p) @ w
        c = Rk * y / (1.0 + y)
        h = -np.expm1(-L) - c * np.exp(-L)  # 1 - (1+y)^-R (1 + R y / (1+y))
        series = Rk * (Rk + 1) / 2 * y**2 - Rk * (Rk + 1) * (Rk + 2) / 3 * y**3
        h = np.where(y * (Rk + 2) < 1e-3, series, h)
        second[rows] = (2.0 * (1.0 - p) / p**2 * h) @ w
    return p_none, mean, second
