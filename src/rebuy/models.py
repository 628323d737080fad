"""Repeat-purchase (BG/NBD) and spend (Gamma-Gamma) models, and customer lifetime value.

Fitting maximises exactly lifetimes' ``BetaGeoFitter`` / ``GammaGammaFitter`` objective (same
likelihood, time scaling, penalizer, BFGS and tolerance) on the *distinct* input rows with their
counts as weights (the same maximum-likelihood estimate as one row per customer, at a cost that
grows with distinct rows, not customers), with an analytic gradient instead of autograd and, above
``2 * WARM_START_CUSTOMERS`` customers, warm-started from a fit on a random subsample; the
parameters equal lifetimes' full fit to ~1e-6 relative. ``solver="lifetimes"`` calls lifetimes'
fitters themselves. Predictions are re-implemented here with numpy/scipy,
in log space where lifetimes can overflow, and agree with lifetimes' to ~1e-9 relative.

Time is in the summary's time unit (``"weeks"`` = days / 7 exactly, or ``"days"``); money is in the
transactions' currency.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import expit, gammaln, hyp2f1

from rebuy.features import unit_days

if TYPE_CHECKING:
    from rebuy.config import BGNBDConfig, Config, GammaGammaConfig

logger = logging.getLogger(__name__)

MONTH_IN_UNITS = {"weeks": 4.345, "days": 30.0}
"""One CLV month in model time units, as lifetimes' ``customer_lifetime_value`` (freq "W" / "D")."""


class ModelFitError(ValueError):
    """A model cannot be fitted on the given data; the message says why."""


# --------------------------------------------------------------------------------------- helpers
def _as_float(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ModelFitError(f"{name}: contains missing or infinite values")
    return arr


def _summary_arrays(summary: pd.DataFrame, columns: tuple[str, ...], who: str) -> list[np.ndarray]:
    if not isinstance(summary, pd.DataFrame):
        raise ModelFitError(f"{who}: expected an RFM summary DataFrame, got {type(summary).__name__}")
    missing = [c for c in columns if c not in summary.columns]
    if missing:
        raise ModelFitError(f"{who}: summary is missing column(s) {missing} (use rebuy.features.rfm_summary)")
    if len(summary) == 0:
        raise ModelFitError(f"{who}: summary has no customers")
    return [
        _as_float(summary[c].to_numpy(dtype=np.float64, na_value=np.nan), f"{who}: column {c!r}")
        for c in columns
    ]


def _check_frt(frequency: np.ndarray, recency: np.ndarray, T: np.ndarray, who: str) -> None:
    if (frequency < 0).any() or (np.abs(frequency - np.round(frequency)) > 1e-9).any():
        raise ModelFitError(f"{who}: column 'frequency' must hold non-negative whole numbers")
    if (recency < 0).any():
        raise ModelFitError(f"{who}: column 'recency' has negative values")
    if (recency > T + 1e-9).any():
        raise ModelFitError(
            f"{who}: column 'recency' exceeds 'T' for {int((recency > T + 1e-9).sum())} customer(s)"
        )
    if ((frequency == 0) & (recency > 0)).any():
        raise ModelFitError(f"{who}: customers with frequency 0 must have recency 0")


def _sample_weight(sample_weight: Any, n: int, who: str) -> np.ndarray | None:
    """Validated per-row weights (finite, > 0, one per row), or None."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64).ravel()
    if len(w) != n:
        raise ModelFitError(f"{who}: sample_weight has {len(w)} values for {n} rows")
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise ModelFitError(f"{who}: sample_weight must be finite and > 0")
    return w


def _distinct_rows(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Distinct rows of the given equal-length columns, sorted lexicographically:
    (columns of the distinct rows, their counts, inverse index from each input row).

    Hash-based (``pd.factorize``): each column is coded by its sorted distinct values and the codes
    are combined into one integer key, so no sort of the full input is needed."""
    cols = tuple(np.asarray(c, dtype=np.float64).ravel() for c in cols)
    n = len(cols[0])
    if n == 0:
        return [c[:0] for c in cols], np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    key = None
    for c in cols:
        codes, uniq = pd.factorize(c, sort=True)
        codes = codes.astype(np.int64, copy=False)
        if key is None:
            key, n_keys = codes, len(uniq)
        else:
            if n_keys * len(uniq) >= 2**62:  # keep the combined key in int64: recode it first
                key, ukey = pd.factorize(key, sort=True)
                key, n_keys = key.astype(np.int64, copy=False), len(ukey)
            key = key * len(uniq) + codes
            n_keys *= len(uniq)
    inverse, ukey = pd.factorize(key, sort=True)
    inverse = inverse.astype(np.int64, copy=False)
    counts = np.bincount(inverse, minlength=len(ukey))
    first = np.empty(len(ukey), dtype=np.int64)
    first[inverse[::-1]] = np.arange(n - 1, -1, -1)
    return [c[first] for c in cols], counts, inverse


def _summary_time_unit(summary: pd.DataFrame, default: str | None = None) -> str:
    unit = summary.attrs.get("time_unit", default)
    if unit is None:
        unit = "weeks"
    unit_days(unit)
    return unit


def _hyp2f1(A: Any, B: Any, C: Any, z: Any) -> np.ndarray:
    """scipy's hyp2f1, with the Gauss series summed directly where scipy returns NaN or inf. scipy
    fails e.g. at 2F1(-2.5, 2; 1002.5; 0.96) (NaN) and 2F1(-2.5, 2; 102.5; 0.98) (inf, true ~0.98):
    the large-c regime of heavy buyers, where the series converges (0 <= z < 1)."""
    A, B, C, z = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (A, B, C, z)))
    with np.errstate(all="ignore"):
        h = np.array(hyp2f1(A, B, C, z), dtype=np.float64, ndmin=1)
    bad = ~np.isfinite(h).ravel()
    if bad.any():
        a_, b_, c_, z_ = (v.ravel()[bad] for v in (A, B, C, z))
        total = np.ones_like(a_)
        term = np.ones_like(a_)
        active = np.ones(a_.shape, dtype=bool)
        with np.errstate(all="ignore"):
            for k in range(50_000):
                term = np.where(active, term * (a_ + k) * (b_ + k) / ((c_ + k) * (k + 1)) * z_, 0.0)
                total = total + term
                active &= np.isfinite(total) & (np.abs(term) > 1e-17 * np.abs(total))
                if not active.any():
                    break
        active |= ~np.isfinite(total)
        flat = h.ravel().copy()
        flat[bad] = np.where(active, np.nan, total)
        h = flat.reshape(h.shape)
    return h


# --------------------------------------------------------------------------------------- numpy solvers
class _NotConverged(RuntimeError):
    """rebuy's optimiser did not report success (the analogue of lifetimes' ConvergenceError)."""


WARM_START_CUSTOMERS = 50_000
"""Above this many weighted rows, fits first run on a random subsample of about this many customers
(binomial thinning of the counts, fixed seed) and the full fit starts from that optimum and its
inverse-Hessian estimate: a few full-data BFGS iterations instead of ~25. The full fit still runs to
lifetimes' tolerance on lifetimes' objective, so the optimum is the same."""


def _minimize(
    objective, x0: np.ndarray, tol: float = 1e-7, hess_inv0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """BFGS with the analytic gradient, as lifetimes' ``_fit`` (scipy ``minimize`` default method,
    same ``tol``) but without autograd and without the Hessian lifetimes computes afterwards.
    Returns (optimum, BFGS inverse-Hessian estimate); sets ``objective.fun_`` (the minimum)."""
    from scipy.optimize import minimize

    options = {} if hess_inv0 is None else {"hess_inv0": hess_inv0}
    with np.errstate(all="ignore"):
        res = minimize(objective, x0, jac=True, method="BFGS", tol=tol, options=options)
    if not res.success or not np.isfinite(res.fun):
        raise _NotConverged(str(res.message))
    objective.fun_ = float(res.fun)
    return np.asarray(res.x, dtype=np.float64), np.asarray(res.hess_inv, dtype=np.float64)


def _fit_warm(make_objective, weights: np.ndarray, x0: np.ndarray) -> tuple[np.ndarray, Any]:
    """Minimise ``make_objective(mask, weights)`` over all rows, warm-started from a fit on a random
    subsample of customers when there are more than ``WARM_START_CUSTOMERS``.
    Returns (optimum, the all-rows objective, its ``fun_`` set)."""
    start, hess_inv0 = x0, None
    total = float(weights.sum())
    if total > 2 * WARM_START_CUSTOMERS:
        rng = np.random.default_rng(0)
        sub = rng.binomial(np.round(weights).astype(np.int64), WARM_START_CUSTOMERS / total).astype(np.float64)
        keep = sub > 0
        if keep.sum() < 100:
            keep = None  # fractional weights: no useful subsample
        try:
            if keep is None:
                raise _NotConverged("no subsample")
            start, hess_inv0 = _minimize(make_objective(keep, sub[keep]), x0)
        except (_NotConverged, FloatingPointError, ValueError, np.linalg.LinAlgError):
            start, hess_inv0 = x0, None  # the subsample is not enough: cold start on all rows
        if hess_inv0 is not None:
            hess_inv0 = 0.5 * (hess_inv0 + hess_inv0.T)
            if not (np.isfinite(start).all() and np.isfinite(hess_inv0).all()):
                start, hess_inv0 = x0, None
            elif np.linalg.eigvalsh(hess_inv0).min() <= 0:
                hess_inv0 = None  # keep the start, BFGS begins from the identity
    objective = make_objective(slice(None), weights)
    try:
        return _minimize(objective, start, hess_inv0=hess_inv0)[0], objective
    except _NotConverged:
        if start is x0 and hess_inv0 is None:
            raise
        return _minimize(objective, x0)[0], objective  # lifetimes' cold start


def _dot(u: np.ndarray, v: np.ndarray) -> float:
    """sum(u * v) with numpy's pairwise summation: steadier than BLAS ``ddot`` on a shared machine."""
    return float(np.multiply(u, v).sum())


class _BGNBDObjective:
    """lifetimes' ``BetaGeoFitter._negative_log_likelihood`` (mean over weighted rows plus
    ``penalizer * sum(params**2)``, log parameters, time scaled by 1 / max(T)) with its analytic
    gradient. Terms that depend only on x, only on T or only on t_x are computed on those distinct
    values and aggregated by weight, so each evaluation costs a few vector operations per row."""

    def __init__(
        self, x: np.ndarray, tx: np.ndarray, T: np.ndarray, w: np.ndarray, penalizer: float, scale: float
    ):
        self.scale = float(scale)  # lifetimes: 1 / max(T) of the data fitted
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
        # rows sorted by x (as _distinct_rows returns them): per-x sums by reduceat, else bincount
        self.x_starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]]) if len(x) else np.array([], np.int64)
        if len(self.x_starts) != len(self.ux):
            self.x_starts = None
        self.wx = np.bincount(self.ix, weights=w, minlength=len(self.ux))  # weight per distinct x
        self.wT = np.bincount(self.iT, weights=w, minlength=len(self.uT))
        self.wxT = np.bincount(self.iT, weights=w * x, minlength=len(self.uT))
        self.W0 = float(self.w0.sum())

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        from scipy.special import digamma

        r, alpha, a, b = params = np.exp(theta)
        ux, wx = self.ux, self.wx
        # x-only terms A1 + A2 and their derivatives, on the distinct x
        la = math.log(alpha)
        s12 = wx @ (
            gammaln(r + ux) - gammaln(r) + gammaln(a + b) + gammaln(b + ux) - gammaln(b) - gammaln(a + b + ux)
        ) + (wx.sum() + self.W0) * r * la
        g_r = wx @ (digamma(r + ux) - digamma(r)) + (wx.sum() + self.W0) * la
        g_alpha = (wx.sum() + self.W0) * r / alpha
        g_a = wx @ (digamma(a + b) - digamma(a + b + ux))
        g_b = wx @ (digamma(a + b) + digamma(b + ux) - digamma(b) - digamma(a + b + ux))
        # one-time buyers: -r * log(alpha + T)
        l0 = np.log(alpha + self.t0)
        s0 = -r * (self.w0 @ l0)
        g_r -= self.w0 @ l0
        g_alpha -= r * (self.w0 @ (1.0 / (alpha + self.t0)))
        # repeat buyers: log(exp(A3) + exp(A4)) = A3 + softplus(d), d = A4 - A3
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
        s4 = _dot(self.w, sp)
        g_r += -(self.wT @ lT_u) + _dot(wp, D)
        inv_T = 1.0 / (alpha + self.uT)
        inv_tx = 1.0 / (alpha + self.utx)
        g_alpha += -(r * (self.wT @ inv_T) + self.wxT @ inv_T) + _dot(
            wp * rx, inv_T[self.iT] - inv_tx[self.itx]
        )
        if self.x_starts is not None and len(wp):
            wp_x = np.add.reduceat(wp, self.x_starts)
        else:
            wp_x = np.bincount(self.ix, weights=wp, minlength=len(ux))
        g_a += wp_x.sum() / a
        g_b -= wp_x @ (1.0 / (b + ux - 1))
        ll = s12 + s0 + s3 + s4
        grad_params = np.array([g_r, g_alpha, g_a, g_b])
        f = -ll / self.W + self.penalizer * float(params @ params)
        g = (-grad_params / self.W + 2 * self.penalizer * params) * params
        return float(f), g


class _GammaGammaObjective:
    """lifetimes' ``GammaGammaFitter._negative_log_likelihood`` (mean over weighted rows plus
    ``penalizer * sum(params**2)``, log parameters) with its analytic gradient. Per row the
    log-likelihood is rewritten without cancelling terms: ``G(x) - log m - p x log1p(v / (x m))
    - q log1p(x m / v)`` with ``G(x) = gammaln(px + q) - gammaln(px) - gammaln(q)`` on the distinct x."""

    def __init__(self, x: np.ndarray, m: np.ndarray, w: np.ndarray, penalizer: float):
        self.penalizer = float(penalizer)
        self.W = float(w.sum())
        self.ux, ix = np.unique(x, return_inverse=True)
        self.wx = np.bincount(ix, weights=w, minlength=len(self.ux))
        self.xm = x * m
        self.w, self.wxr = w, w * x
        self.c_1 = _dot(w, np.log(m))  # sum w log m

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        from scipy.special import digamma

        p, q, v = params = np.exp(theta)
        ux, wx = self.ux, self.wx
        px = p * ux
        s_x = wx @ (gammaln(px + q) - gammaln(px) - gammaln(q))
        L1 = np.log1p(v / self.xm)  # log((x m + v) / (x m))
        L2 = np.log1p(self.xm / v)  # log((x m + v) / v)
        inv = 1.0 / (self.xm + v)
        sxL1, sL2 = _dot(self.wxr, L1), _dot(self.w, L2)
        sxI, sxmI = _dot(self.wxr, inv), _dot(self.w, self.xm * inv)
        ll = s_x - self.c_1 - p * sxL1 - q * sL2
        g_p = (wx * ux) @ (digamma(px + q) - digamma(px)) - sxL1
        g_q = wx @ (digamma(px + q) - digamma(q)) - sL2
        g_v = q / v * sxmI - p * sxI
        f = -ll / self.W + self.penalizer * float(params @ params)
        g = (-np.array([g_p, g_q, g_v]) / self.W + 2 * self.penalizer * params) * params
        return float(f), g


SOLVERS = ("numpy", "lifetimes")
"""``"numpy"``: rebuy's vectorised implementation of lifetimes' exact objective (same likelihood, time
scaling, penalizer, start point, BFGS and tolerance) with an analytic gradient; ``"lifetimes"``:
lifetimes' own fitter (autograd gradient, plus a Hessian for standard errors rebuy does not use)."""


_SHAPE_PARAMS = ("r", "a", "b", "p", "q")
_MAX_SHAPE = 1e6
"""Shape parameters above this (dimensionless; scale parameters alpha and v are not checked) count
as a fit that did not converge."""


def _run_fitter(
    fit_once,
    penalizer: float,
    retry_penalizer: float,
    name: str,
) -> tuple[dict[str, float], float, list[str], bool]:
    """Fit with ``fit_once(penalizer) -> params``; on non-convergence retry once with ``retry_penalizer``.

    Returns (params, penalizer used, warnings, converged without retry)."""
    notes: list[str] = []
    attempts = [penalizer]
    if retry_penalizer > penalizer:
        attempts.append(retry_penalizer)
    for i, pen in enumerate(attempts):
        captured = io.StringIO()
        reason = None
        params: dict[str, float] = {}
        try:
            # lifetimes prints the scipy result on failure and emits numerical RuntimeWarnings.
            with contextlib.redirect_stdout(captured), warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                params = fit_once(pen)
        except _NotConverged:
            reason = "the optimiser did not converge"
        except (FloatingPointError, ValueError, np.linalg.LinAlgError, OverflowError) as e:
            reason = f"the optimiser failed ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
        else:
            if not all(np.isfinite(v) and v > 0 for v in params.values()):
                reason = f"the fit gave non-finite or out-of-range parameters {params}"
            elif any(params.get(k, 0.0) > _MAX_SHAPE for k in _SHAPE_PARAMS):
                # a shape parameter running off to infinity is a degenerate boundary solution
                # (lifetimes' optimiser reports it as non-convergence): retry with the penalizer
                reason = f"the fit ran off to a degenerate solution {params}"
        if reason is None:
            return params, pen, notes, i == 0
        msg = f"{name} fit with penalizer={pen}: {reason}"
        if i + 1 < len(attempts):
            msg += f"; retrying with penalizer={attempts[i + 1]}"
        logger.warning(msg)
        notes.append(msg)
    raise ModelFitError(
        f"{name}: the fit did not converge ({notes[-1]}); try a larger retry_penalizer in the config"
    )


def _lifetimes_fit(fitter, names: tuple[str, ...], *args, **kwargs) -> dict[str, float]:
    """Fit a lifetimes fitter; its ConvergenceError becomes ``_NotConverged``."""
    from lifetimes.utils import ConvergenceError

    try:
        fitter.fit(*args, **kwargs)
    except ConvergenceError as e:
        raise _NotConverged(str(e)) from e
    params = {k: float(fitter.params_[k]) for k in names}
    if not np.isfinite(fitter._negative_log_likelihood_):
        params = {k: float("nan") for k in names}
    return params


def _check_solver(solver: str, who: str) -> None:
    if solver not in SOLVERS:
        raise ModelFitError(f"{who}: solver must be one of {SOLVERS}, got {solver!r}")


# --------------------------------------------------------------------------------------- BG/NBD
def bgnbd_log_likelihood(params: dict[str, float], frequency: Any, recency: Any, T: Any) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6, in log space)."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    x, tx, T = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (frequency, recency, T)))
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(tx + alpha)
    a4 = np.where(x > 0, a4, -np.inf)
    return a1 + a2 + np.logaddexp(a3, a4)


def gamma_gamma_log_likelihood(params: dict[str, float], frequency: Any, monetary_value: Any) -> np.ndarray:
    """Per-customer Gamma-Gamma log-likelihood of the mean spend ``monetary_value`` over ``frequency``
    repeat purchases (Fader, Hardie & Lee 2005b; lifetimes' form)."""
    p, q, v = (params[k] for k in ("p", "q", "v"))
    x, m = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (frequency, monetary_value)))
    return (
        gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v)
        + (p * x - 1) * np.log(m) + p * x * np.log(x) - (p * x + q) * np.log(x * m + v)
    )


class BGNBDModel:
    """BG/NBD repeat-purchase model (Fader, Hardie & Lee 2005): lifetimes' ``BetaGeoFitter`` objective.

    Parameters
    ----------
    penalizer : L2 penalty on the parameters for the first fit (lifetimes' ``penalizer_coef``).
    retry_penalizer : penalty for the one retry when the first fit does not converge or gives
        non-finite parameters (a warning is logged and kept in ``warnings_``).
    solver : ``"numpy"`` (default) minimises lifetimes' exact ``BetaGeoFitter`` objective (same
        likelihood, time scaling, penalizer, start and BFGS tolerance; warm-started from a subsample
        fit above ``2 * WARM_START_CUSTOMERS`` customers) with an analytic gradient on the distinct
        rows: lifetimes' parameters (tests: within 1e-6 relative), many times faster;
        ``"lifetimes"`` calls ``BetaGeoFitter.fit`` itself.

    Attributes (after ``fit``)
    ----------
    params_ : {"r", "alpha", "a", "b"} (alpha in time units).
    log_likelihood_ : total log-likelihood of the fitted data (unpenalised).
    time_unit_ : "weeks" or "days".
    penalizer_ : the penalizer actually used.  converged_ : True when the first attempt converged.
    n_customers_, n_distinct_rows_ : fit sizes.  warnings_ : list of warning strings.
    """

    PARAM_NAMES = ("r", "alpha", "a", "b")

    def __init__(self, penalizer: float = 0.0, retry_penalizer: float = 0.001, solver: str = "numpy"):
        self.penalizer = penalizer
        self.retry_penalizer = retry_penalizer
        self.solver = solver

    @classmethod
    def from_config(cls, cfg: BGNBDConfig) -> BGNBDModel:
        """A model with the settings of the config's ``bgnbd`` section."""
        return cls(penalizer=cfg.penalizer, retry_penalizer=cfg.retry_penalizer, solver=cfg.solver)

    # ---------------------------------------------------------------- fitting
    def fit(
        self, summary: pd.DataFrame, time_unit: str | None = None, sample_weight: Any = None
    ) -> BGNBDModel:
        """Fit on an RFM summary (columns ``frequency``, ``recency``, ``T``).

        ``time_unit`` defaults to ``summary.attrs["time_unit"]`` (set by ``rfm_summary``), else weeks.
        ``sample_weight``: customers each row stands for (e.g. the counts of already-distinct rows
        aggregated by Spark); None counts every row once.
        """
        who = "BGNBDModel.fit"
        _check_solver(self.solver, who)
        if self.penalizer < 0 or self.retry_penalizer < 0:
            raise ModelFitError(f"{who}: penalizer and retry_penalizer must be >= 0")
        x, tx, T = _summary_arrays(summary, ("frequency", "recency", "T"), who)
        _check_frt(x, tx, T, who)
        if not (x > 0).any():
            raise ModelFitError(
                f"{who}: every customer is a one-time buyer (frequency 0): there are no repeat purchases to fit"
            )
        if T.max() <= 0:
            raise ModelFitError(f"{who}: every customer's T is 0 (all data on the as_of day): nothing to fit")
        w = _sample_weight(sample_weight, len(x), who)
        (ux, utx, uT), counts, inv = _distinct_rows(x, tx, T)
        if w is not None:
            counts = np.bincount(inv, weights=w, minlength=len(ux))
        if self.solver == "lifetimes":

            def fit_once(pen: float) -> dict[str, float]:
                from lifetimes import BetaGeoFitter

                return _lifetimes_fit(
                    BetaGeoFitter(penalizer_coef=pen), self.PARAM_NAMES, ux, utx, uT, weights=counts
                )
        else:

            scale = 1.0 / uT.max()

            def fit_once(pen: float) -> dict[str, float]:
                theta, objective = _fit_warm(
                    lambda k, w_: _BGNBDObjective(ux[k], utx[k], uT[k], w_, pen, scale),
                    counts.astype(np.float64),
                    np.full(4, 0.1),
                )
                r, alpha, a, b = scaled = np.exp(theta)
                # unpenalised log-likelihood; time scaled by s adds -x log(s) per customer
                ll = -(objective.fun_ - pen * float(scaled @ scaled)) * objective.W
                fitted_ll[0] = ll + float(counts @ ux) * math.log(scale)
                return {"r": r, "alpha": alpha / scale, "a": a, "b": b}

        fitted_ll = [float("nan")]
        params, pen, notes, converged = _run_fitter(fit_once, self.penalizer, self.retry_penalizer, "BG/NBD")
        self.params_ = {k: float(params[k]) for k in self.PARAM_NAMES}
        if self.solver == "lifetimes" or not np.isfinite(fitted_ll[0]):
            fitted_ll[0] = float((counts * bgnbd_log_likelihood(self.params_, ux, utx, uT)).sum())
        self.log_likelihood_ = float(fitted_ll[0])
        self.time_unit_ = time_unit or _summary_time_unit(summary)
        self.penalizer_ = float(pen)
        self.converged_ = bool(converged)
        self.n_customers_ = int(round(counts.sum()))
        self.n_distinct_rows_ = int(len(ux))
        self.warnings_ = list(notes)
        if self.params_["a"] > 0 and abs(self.params_["a"] - 1.0) < 1e-6:
            self.warnings_.append("BG/NBD a is ~1: expected purchases use a = 1 +/- 1e-6")
        return self

    @classmethod
    def from_params(cls, params: dict[str, float], time_unit: str = "weeks") -> BGNBDModel:
        """A model with given parameters (e.g. published ones, or read from a bundle manifest)."""
        m = cls()
        m.params_ = {k: float(params[k]) for k in cls.PARAM_NAMES}
        if not all(np.isfinite(v) and v > 0 for v in m.params_.values()):
            raise ModelFitError(f"BGNBDModel.from_params: parameters must be finite and > 0, got {m.params_}")
        unit_days(time_unit)
        m.time_unit_ = time_unit
        m.penalizer_ = 0.0
        m.converged_ = True
        m.warnings_ = []
        return m

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise ModelFitError("BGNBDModel: not fitted; call fit(summary) first")

    # ---------------------------------------------------------------- predictions
    def _log_div(self, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
        r, alpha, a, b = (self.params_[k] for k in self.PARAM_NAMES)
        return (
            (r + x) * (np.log(alpha + T) - np.log(alpha + tx)) + np.log(a) - np.log(b + np.maximum(x, 1) - 1)
        )

    def p_alive(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(customer still alive | frequency, recency, T); 1 for customers with no repeat purchase."""
        self._check_fitted()
        x, tx, T = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (frequency, recency, T)))
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
        t, x, tx, T = np.broadcast_arrays(
            *(np.asarray(v, dtype=np.float64) for v in (t, frequency, recency, T))
        )
        if (t < 0).any():
            raise ValueError("expected_purchases: t must be >= 0")
        with np.errstate(all="ignore"):
            palive = np.where(x > 0, expit(-self._log_div(x, tx, T)), 1.0)
            out = self._purchase_factor(t, x, T) * palive
        if not np.isfinite(out).all():
            n_bad = int((~np.isfinite(out)).sum())
            raise FloatingPointError(
                f"expected_purchases: {n_bad} non-finite value(s) for params {self.params_}"
            )
        return np.atleast_1d(np.maximum(out, 0.0))

    def _purchase_factor(self, t: np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """``expected_purchases / P(alive)``: depends on (t, x, T) only, not on t_x, so predictions
        compute it once per distinct (x, T) pair. 0 where t = 0; not checked for finiteness."""
        r, alpha, a, b = (self.params_[k] for k in self.PARAM_NAMES)
        if abs(a - 1.0) < 1e-6:
            a = 1.0 + math.copysign(1e-6, a - 1.0) if a != 1.0 else 1.0 + 1e-6
        t, x, T = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (t, x, T)))
        with np.errstate(all="ignore"):
            c = a + b + x - 1
            z = t / (alpha + T + t)
            log1mz = np.log(alpha + T) - np.log(alpha + T + t)
            h = _hyp2f1(a + b - 1 - r, a - 1, c, z)
            log_term = np.log(np.abs(h)) + (a - 1) * log1mz
            bad = ~np.isfinite(h) | np.isnan(log_term) | np.isposinf(log_term)
            if bad.any():
                h_alt = _hyp2f1(r + x, b + x, c, z)
                log_term = np.where(bad, np.log(np.abs(h_alt)) + (r + x) * log1mz, log_term)
                h = np.where(bad, h_alt, h)
            # 2F1 can be negative when a + b + x - 1 < 0 (lifetimes returns NaN there)
            second = np.where(h > 0, -np.expm1(log_term), 1.0 - np.sign(h) * np.exp(log_term))
            first = c / (a - 1)
            out = first * second
        return np.where(t == 0, 0.0, out)

    def probability_of_purchase(self, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(at least one repeat purchase in the next ``t`` time units | frequency, recency, T).

        A BG/NBD customer alive at T cannot drop out before the next purchase, and given alive the
        purchase rate is Gamma(r + x, alpha + T) a posteriori, so this is
        ``P(alive) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x))``."""
        self._check_fitted()
        r, alpha, _, _ = (self.params_[k] for k in self.PARAM_NAMES)
        t, x, tx, T = np.broadcast_arrays(
            *(np.asarray(v, dtype=np.float64) for v in (t, frequency, recency, T))
        )
        with np.errstate(all="ignore"):
            none_if_alive = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
        return np.atleast_1d(self.p_alive(x, tx, T) * -np.expm1(np.log(none_if_alive)))

    def expected_purchases_population(self, t: Any) -> np.ndarray:
        """Unconditional expected repeat purchases of a new customer within ``t`` time units of the
        first purchase (FHL 2005 eq. 9); used for the cohort tracking curve."""
        self._check_fitted()
        r, alpha, a, b = (self.params_[k] for k in self.PARAM_NAMES)
        if abs(a - 1.0) < 1e-6:
            a = 1.0 + math.copysign(1e-6, a - 1.0) if a != 1.0 else 1.0 + 1e-6
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if (t < 0).any():
            raise ValueError("expected_purchases_population: t must be >= 0")
        with np.errstate(all="ignore"):
            z = t / (alpha + t)
            log1mz = np.log(alpha) - np.log(alpha + t)
            h = _hyp2f1(r, b, a + b - 1, z)
            log_term = np.log(np.abs(h)) + r * log1mz
            bad = ~np.isfinite(h) | np.isnan(log_term) | np.isposinf(log_term)
            if bad.any():  # Euler: 2F1(r,b;c;z) = (1-z)^(c-r-b) 2F1(c-r, c-b; c; z)
                h_alt = _hyp2f1(a + b - 1 - r, a - 1, a + b - 1, z)
                log_term = np.where(bad, np.log(np.abs(h_alt)) + (a - 1) * log1mz, log_term)
                h = np.where(bad, h_alt, h)
            second = np.where(h > 0, -np.expm1(log_term), 1.0 - np.sign(h) * np.exp(log_term))
            out = (a + b - 1) / (a - 1) * second
        out = np.where(t == 0, 0.0, out)
        if not np.isfinite(out).all():
            raise FloatingPointError(
                f"expected_purchases_population: non-finite values for params {self.params_}"
            )
        return out

    def expected_time_to_next_purchase(
        self, frequency: Any, recency: Any, T: Any, max_time: float
    ) -> np.ndarray:
        """Time (time units) until the expected number of purchases reaches 1, or ``np.inf`` when it
        does not within ``max_time``. Vectorised bisection (40 halvings) on the monotone
        ``expected_purchases``."""
        self._check_fitted()
        x, tx, T = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (frequency, recency, T)))
        x, tx, T = x.ravel(), tx.ravel(), T.ravel()
        out = np.full(x.shape, np.inf)
        if x.size == 0:
            return out
        (ux, utx, uT), _, inv = _distinct_rows(x, tx, T)
        reach = self.expected_purchases(max_time, ux, utx, uT) >= 1.0
        lo = np.zeros(int(reach.sum()))
        hi = np.full(lo.shape, float(max_time))
        rx, rtx, rT = ux[reach], utx[reach], uT[reach]
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            above = self.expected_purchases(mid, rx, rtx, rT) >= 1.0
            hi = np.where(above, mid, hi)
            lo = np.where(above, lo, mid)
        res = np.full(ux.shape, np.inf)
        res[reach] = hi
        out = res[inv]
        return out

    def expected_next_purchase_date(
        self, frequency: Any, recency: Any, T: Any, as_of: Any, max_days: int = 1825
    ) -> np.ndarray:
        """Expected date of the next purchase: ``as_of`` plus the first whole number of days ``d``
        (1 <= d <= ``max_days``) by which the expected number of purchases reaches 1, i.e.
        ``expected_purchases(d days) >= 1 > expected_purchases(d - 1 days)``. ``NaT`` when the
        expected count stays below 1 for ``max_days`` days (not expected to buy again within that
        cap; typically customers who have probably churned). Exact integer bisection on the distinct
        (frequency, recency, T) rows: about log2(max_days) evaluations."""
        self._check_fitted()
        x, tx, T = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (frequency, recency, T)))
        shape = x.shape
        out = np.full(x.size, np.datetime64("NaT"), dtype="datetime64[ns]")
        if x.size == 0:
            return out.reshape(shape)
        rows = _ValueRows(self, x.ravel(), tx.ravel(), T.ravel())
        days = self._next_purchase_days(rows, int(max_days))[rows.inv]
        ok = days >= 0
        base = np.datetime64(pd.Timestamp(as_of).normalize().to_datetime64(), "ns")
        out[ok] = base + days[ok].astype("timedelta64[D]")
        return out.reshape(shape)

    def _next_purchase_days(self, rows: _ValueRows, max_days: int) -> np.ndarray:
        """Whole days to the expected next purchase for each distinct row of ``rows`` (-1 when not
        within ``max_days``): integer bisection; each step evaluates the hypergeometric term once per
        distinct ((x, T) pair, day) instead of once per row."""
        u = unit_days(self.time_unit_)
        ridx = np.flatnonzero(rows.expected(self, max_days / u) >= 1.0)
        pair, palive = rows.pinv[ridx], rows.palive[ridx]
        lo = np.zeros(ridx.shape, dtype=np.int64)  # E(lo) < 1 (E(0) = 0)
        hi = np.full(ridx.shape, max_days, dtype=np.int64)  # E(hi) >= 1
        while ridx.size and (hi - lo > 1).any():
            mid = (lo + hi) // 2
            key_inv, keys = pd.factorize(pair * (max_days + 1) + mid)
            upair, umid = keys // (max_days + 1), keys % (max_days + 1)
            factor = self._purchase_factor(umid / u, rows.px[upair], rows.pT[upair])
            with np.errstate(all="ignore"):
                above = np.maximum(factor[key_inv] * palive, 0.0) >= 1.0
            hi = np.where(above, mid, hi)
            lo = np.where(above, lo, mid)
        days = np.full(len(rows.x), -1, dtype=np.int64)
        days[ridx] = hi
        return days


class _ValueRows:
    """The distinct (x, t_x, T) rows of some customers, their distinct (x, T) pairs and P(alive):
    computed once and shared by every prediction of :func:`score_value`."""

    def __init__(self, model: BGNBDModel, x: np.ndarray, tx: np.ndarray, T: np.ndarray):
        (self.x, self.tx, self.T), _, self.inv = _distinct_rows(x, tx, T)
        (self.px, self.pT), _, self.pinv = _distinct_rows(self.x, self.T)
        self.palive = model.p_alive(self.x, self.tx, self.T)

    def expected(self, model: BGNBDModel, t: float) -> np.ndarray:
        """``model.expected_purchases(t, ...)`` for each distinct row."""
        with np.errstate(all="ignore"):
            out = model._purchase_factor(t, self.px, self.pT)[self.pinv] * self.palive
        if not np.isfinite(out).all():
            raise FloatingPointError(
                f"expected_purchases: {int((~np.isfinite(out)).sum())} non-finite value(s) for params "
                f"{model.params_}"
            )
        return np.maximum(out, 0.0)


# --------------------------------------------------------------------------------------- Gamma-Gamma
class GammaGammaModel:
    """Gamma-Gamma spend model (Fader, Hardie & Lee 2005b), lifetimes' ``GammaGammaFitter`` objective,
    fitted on repeat customers.

    Parameters
    ----------
    penalizer, retry_penalizer, solver : as for :class:`BGNBDModel` (lifetimes' ``GammaGammaFitter``).
    independence_threshold : warn when |Pearson corr(frequency, monetary_value)| of the repeat
        customers exceeds this (the model assumes spend per purchase is independent of frequency).

    Attributes (after ``fit``)
    ----------
    params_ : {"p", "q", "v"}.  independence_corr_ : the Pearson correlation (0 when undefined).
    independence_ok_ : |corr| <= threshold.  q_warning_ : message when q <= 1 (the population mean
    spend v*p/(q-1) is then undefined), else None.  population_mean_ : currency, or the weighted
    mean of the repeat customers' monetary_value when q <= 1.  penalizer_, converged_,
    n_customers_, n_distinct_rows_, warnings_ : as for BG/NBD.
    """

    PARAM_NAMES = ("p", "q", "v")

    def __init__(
        self,
        penalizer: float = 0.0,
        retry_penalizer: float = 0.001,
        independence_threshold: float = 0.3,
        solver: str = "numpy",
    ):
        self.penalizer = penalizer
        self.retry_penalizer = retry_penalizer
        self.independence_threshold = independence_threshold
        self.solver = solver

    @classmethod
    def from_config(cls, cfg: GammaGammaConfig) -> GammaGammaModel:
        """A model with the settings of the config's ``gamma_gamma`` section."""
        return cls(
            penalizer=cfg.penalizer,
            retry_penalizer=cfg.retry_penalizer,
            independence_threshold=cfg.independence_threshold,
            solver=cfg.solver,
        )

    def fit(self, summary: pd.DataFrame, sample_weight: Any = None) -> GammaGammaModel:
        """Fit on the repeat customers (frequency > 0 and monetary_value > 0) of an RFM summary.

        ``sample_weight``: customers each row stands for (None counts every row once).
        """
        who = "GammaGammaModel.fit"
        _check_solver(self.solver, who)
        x, m = _summary_arrays(summary, ("frequency", "monetary_value"), who)
        if (x < 0).any():
            raise ModelFitError(f"{who}: column 'frequency' has negative values")
        if (m < 0).any():
            raise ModelFitError(f"{who}: column 'monetary_value' has negative values")
        w = _sample_weight(sample_weight, len(x), who)
        keep = (x > 0) & (m > 0)
        if keep.sum() < 2:
            raise ModelFitError(
                f"{who}: needs at least 2 repeat customers with positive monetary_value, found {int(keep.sum())}"
            )
        x, m = x[keep], m[keep]
        w = w[keep] if w is not None else None
        notes: list[str] = []
        if np.std(x) > 0 and np.std(m) > 0:
            cov = np.cov(x, m, aweights=w)
            corr = float(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]))
        else:
            corr = 0.0
            notes.append("independence check: frequency or monetary_value is constant; correlation set to 0")
        self.independence_corr_ = corr
        self.independence_ok_ = bool(abs(corr) <= self.independence_threshold)
        if not self.independence_ok_:
            msg = (
                f"Gamma-Gamma independence assumption fails: corr(frequency, monetary_value) = {corr:.3f} "
                f"exceeds {self.independence_threshold} in absolute value; expected order values are biased"
            )
            logger.warning(msg)
            notes.append(msg)
        (ux, um), counts, inv = _distinct_rows(x, m)
        if w is not None:
            counts = np.bincount(inv, weights=w, minlength=len(ux))
        if self.solver == "lifetimes":

            def fit_once(pen: float) -> dict[str, float]:
                from lifetimes import GammaGammaFitter

                return _lifetimes_fit(
                    GammaGammaFitter(penalizer_coef=pen), self.PARAM_NAMES, ux, um, weights=counts
                )
        else:

            def fit_once(pen: float) -> dict[str, float]:
                theta, _ = _fit_warm(
                    lambda k, w_: _GammaGammaObjective(ux[k], um[k], w_, pen),
                    counts.astype(np.float64),
                    np.full(3, 0.1),
                )
                return dict(zip(self.PARAM_NAMES, np.exp(theta), strict=True))

        params, pen, fit_notes, converged = _run_fitter(
            fit_once, self.penalizer, self.retry_penalizer, "Gamma-Gamma"
        )
        self.params_ = {k: float(params[k]) for k in self.PARAM_NAMES}
        self.log_likelihood_ = float(
            (counts * gamma_gamma_log_likelihood(self.params_, ux, um)).sum()
        )
        self.penalizer_ = float(pen)
        self.converged_ = bool(converged)
        self.n_customers_ = int(round(counts.sum()))
        self.n_distinct_rows_ = int(len(ux))
        self.empirical_mean_ = float(np.average(m, weights=w))
        self.warnings_ = notes + fit_notes
        self._set_population_mean()
        return self

    def _set_population_mean(self) -> None:
        p, q, v = (self.params_[k] for k in self.PARAM_NAMES)
        if q <= 1.0:
            self.q_warning_ = (
                f"Gamma-Gamma q = {q:.3f} <= 1: the population mean spend v*p/(q-1) is undefined (heavy-tailed "
                "spend); expected order values fall back to each customer's observed mean (and the repeat "
                "customers' mean for one-time buyers)"
            )
            logger.warning(self.q_warning_)
            self.warnings_.append(self.q_warning_)
            self.population_mean_ = float(getattr(self, "empirical_mean_", np.nan))
        else:
            self.q_warning_ = None
            self.population_mean_ = float(v * p / (q - 1))

    @classmethod
    def from_params(cls, params: dict[str, float], empirical_mean: float | None = None) -> GammaGammaModel:
        """A model with given parameters (e.g. published ones, or read from a bundle manifest)."""
        m = cls()
        m.params_ = {k: float(params[k]) for k in cls.PARAM_NAMES}
        if not all(np.isfinite(v) and v > 0 for v in m.params_.values()):
            raise ModelFitError(
                f"GammaGammaModel.from_params: parameters must be finite and > 0, got {m.params_}"
            )
        if m.params_["q"] <= 1 and empirical_mean is None:
            raise ModelFitError(
                "GammaGammaModel.from_params: q <= 1 needs empirical_mean (population mean undefined)"
            )
        m.empirical_mean_ = float(empirical_mean) if empirical_mean is not None else float("nan")
        m.warnings_ = []
        m.penalizer_ = 0.0
        m.converged_ = True
        m.independence_corr_ = 0.0
        m._set_population_mean()
        return m

    def expected_order_value(self, frequency: Any, monetary_value: Any) -> np.ndarray:
        """E[spend per purchase day | x, m] (FHL 2005b eq. 5), currency.

        One-time buyers (x = 0) get the population mean. When q <= 1 (``q_warning_``) the population
        mean is undefined: repeat customers get their observed mean and one-time buyers the repeat
        customers' mean.
        """
        if not hasattr(self, "params_"):
            raise ModelFitError("GammaGammaModel: not fitted; call fit(summary) first")
        x, m = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (frequency, monetary_value)))
        p, q, _ = (self.params_[k] for k in self.PARAM_NAMES)
        if q <= 1.0:
            out = np.where(x > 0, m, self.population_mean_)
        else:
            w = p * x / (p * x + q - 1)
            out = (1 - w) * self.population_mean_ + w * m
        return np.atleast_1d(out)


# --------------------------------------------------------------------------------------- CLV
def customer_lifetime_value(
    bgnbd: BGNBDModel,
    gg: GammaGammaModel,
    summary: pd.DataFrame,
    horizon_months: int = 12,
    margin: float = 1.0,
    discount_rate: float = 0.01,
    time_unit: str | None = None,
) -> pd.Series:
    """Discounted expected gross margin over ``horizon_months`` (currency), per customer.

    ``margin * sum_{i=1..H} E[order value] * (E[N(i months)] - E[N(i-1 months)]) / (1+d)^i`` with
    ``d`` the *monthly* ``discount_rate``; a month is 4.345 weeks or 30 days (lifetimes' convention),
    so with ``margin=1`` this equals lifetimes' ``GammaGammaFitter.customer_lifetime_value``.
    """
    unit = time_unit or bgnbd.time_unit_
    if unit not in MONTH_IN_UNITS:
        raise ValueError(f"customer_lifetime_value: time_unit must be 'weeks' or 'days', got {unit!r}")
    if horizon_months < 1:
        raise ValueError("customer_lifetime_value: horizon_months must be >= 1")
    x, tx, T, m = _summary_arrays(
        summary, ("frequency", "recency", "T", "monetary_value"), "customer_lifetime_value"
    )
    clv = _clv_arrays(bgnbd, gg, x, tx, T, m, horizon_months, margin, discount_rate, unit)
    return pd.Series(clv, index=summary.index, name=f"clv_{horizon_months}m")


def _clv_arrays(bgnbd, gg, x, tx, T, m, horizon_months, margin, discount_rate, unit, rows=None) -> np.ndarray:
    rows = rows if rows is not None else _ValueRows(bgnbd, x, tx, T)
    return margin * gg.expected_order_value(x, m) * _discounted_purchases(
        bgnbd, rows, horizon_months, discount_rate, unit
    )[rows.inv]


def _discounted_purchases(bgnbd, rows: _ValueRows, horizon_months: int, discount_rate: float, unit: str):
    """``sum_{i=1..H} (E[N(i months)] - E[N(i-1 months)]) / (1+d)^i`` per distinct row: the monthly
    differences are taken on the (x, T)-only factor, then multiplied by P(alive)."""
    factor = MONTH_IN_UNITS[unit]
    months = np.arange(0, horizon_months + 1, dtype=np.float64)
    with np.errstate(all="ignore"):
        cum = np.column_stack([bgnbd._purchase_factor(k * factor, rows.px, rows.pT) for k in months])
        disc = (1.0 + discount_rate) ** -months[1:]
        out = (np.diff(cum, axis=1) * disc).sum(axis=1)[rows.pinv] * rows.palive
    if not np.isfinite(out).all():
        raise FloatingPointError(f"customer_lifetime_value: non-finite values for params {bgnbd.params_}")
    return out


def _churn_risk(p_alive: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    lo, hi = thresholds
    return np.where(p_alive < lo, "high", np.where(p_alive < hi, "medium", "low"))


SCORE_HORIZONS_DAYS = (30, 90, 365)
"""Horizons (days) of expected purchases always in the score table; config may add more."""


def score_value(
    summary: pd.DataFrame, bgnbd: BGNBDModel, gg: GammaGammaModel, config: Config, as_of: Any = None
) -> pd.DataFrame:
    """Per-customer value scores, indexed like ``summary``.

    Columns: ``p_alive``; ``expected_purchases_{h}d`` for 30, 90 and 365 days (the score table's
    contract) and each further ``config.clv.horizons_days``; ``expected_order_value`` (currency);
    ``clv_12m`` and, when ``config.clv.horizon_months`` differs, ``clv_{H}m`` (discounted margin
    over that many months); ``net_ltv`` (over ``horizon_months``) (= clv - acquisition_cost - retention_cost * years);
    ``next_purchase_date`` (NaT when not expected within ``config.clv.next_purchase_max_days``);
    ``churn_risk`` (high / medium / low from ``config.clv.churn_risk_thresholds`` on p_alive).
    No NaN or inf in the numeric columns. ``as_of`` defaults to ``summary.attrs["as_of"]``, else
    first_purchase + T.
    """
    unit = bgnbd.time_unit_
    s_unit = summary.attrs.get("time_unit")
    if s_unit is not None and s_unit != unit:
        raise ValueError(f"score_value: summary is in {s_unit} but the BG/NBD model was fitted in {unit}")
    u = unit_days(unit)
    x, tx, T, m = _summary_arrays(summary, ("frequency", "recency", "T", "monetary_value"), "score_value")
    _check_frt(x, tx, T, "score_value")
    if as_of is None:
        as_of = summary.attrs.get("as_of")
    if as_of is None and "first_purchase" in summary.columns:
        as_of = (summary["first_purchase"] + pd.to_timedelta(summary["T"] * u, unit="D")).max()
    if as_of is None:
        raise ValueError("score_value: as_of is needed (summary has no first_purchase column)")
    cc = config.clv
    rows = _ValueRows(bgnbd, x, tx, T)  # distinct (x, t_x, T) rows, (x, T) pairs and P(alive), once
    inv = rows.inv
    out = pd.DataFrame(index=summary.index)
    out["p_alive"] = rows.palive[inv]
    for h in sorted({*SCORE_HORIZONS_DAYS, *cc.horizons_days}):
        out[f"expected_purchases_{h}d"] = rows.expected(bgnbd, h / u)[inv]
    out["expected_order_value"] = gg.expected_order_value(x, m)
    if cc.horizon_months != 12:
        out["clv_12m"] = _clv_arrays(bgnbd, gg, x, tx, T, m, 12, cc.margin, cc.discount_rate, unit, rows)
    clv = _clv_arrays(bgnbd, gg, x, tx, T, m, cc.horizon_months, cc.margin, cc.discount_rate, unit, rows)
    out[f"clv_{cc.horizon_months}m"] = clv
    out["net_ltv"] = clv - cc.acquisition_cost - cc.retention_cost * cc.horizon_months / 12.0
    days = bgnbd._next_purchase_days(rows, int(cc.next_purchase_max_days))[inv]
    next_date = np.full(len(days), np.datetime64("NaT"), dtype="datetime64[ns]")
    ok = days >= 0
    base = np.datetime64(pd.Timestamp(as_of).normalize().to_datetime64(), "ns")
    next_date[ok] = base + days[ok].astype("timedelta64[D]")
    out["next_purchase_date"] = next_date
    out["churn_risk"] = pd.Series(
        _churn_risk(out["p_alive"].to_numpy(), cc.churn_risk_thresholds), index=out.index, dtype="string"
    )
    num = out.select_dtypes("number").to_numpy()
    if not np.isfinite(num).all():
        raise FloatingPointError("score_value: non-finite value scores (please report with the summary)")
    return out
