"""Maximum-likelihood machinery shared by every model: minimise, warm-start, retry, judge, Hessian.

An *objective* is a callable ``theta -> (f, gradient)`` on log parameters with attributes
``penalizer`` (the L2 penalty on the parameters) and ``W`` (total weight = customers fitted): ``f``
is lifetimes' mean negative log-likelihood over the weighted rows plus ``penalizer * sum(params**2)``.
:func:`minimize` sets ``objective.fun_`` to the minimum it reached.

Flow of one fit (``BaseFitter._fit_distinct``):

1. :func:`fit_with_retry` calls the model's solver with ``penalizer``; when that raises
   :class:`NotConverged` (or a numerical error) or :func:`fit_problem` finds the parameters
   non-finite or degenerate, it logs a warning and retries once with ``retry_penalizer``; when
   that fails too it raises ``ModelFitError``.
2. The ``"numpy"`` solver is :func:`fit_warm`: BFGS (:func:`minimize`) on all distinct rows,
   started from a fit on a random subsample above ``2 * WARM_START_CUSTOMERS`` customers, or from
   a given start (another fit's optimum and its BFGS inverse-Hessian estimate: the model
   selection's successive holdout windows) where both optima are well identified
   (:data:`MAX_START_CONDITION`). The ``"lifetimes"`` solver is :func:`lifetimes_fit`
   (lifetimes' own fitter).
3. :func:`numerical_hessian` at the optimum and :func:`covariance_from_hessian` give lifetimes'
   standard errors.

:class:`NotConverged` is internal: it never leaves ``fit`` (it becomes a retry or a ModelFitError).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

import numpy as np

from rebuy.errors import ModelFitError

logger = logging.getLogger(__name__)

SOLVERS = ("numpy", "lifetimes")
"""``"numpy"``: rebuy's vectorised implementation of lifetimes' exact objective (same likelihood, time
scaling, penalizer, start point, BFGS and tolerance) with an analytic gradient; ``"lifetimes"``:
lifetimes' own fitter (autograd gradient)."""

WARM_START_CUSTOMERS = 50_000
"""Above this many weighted rows, fits first run on a random subsample of about this many customers
(binomial thinning of the counts, fixed seed) and the full fit starts from that optimum and its
inverse-Hessian estimate: a few full-data BFGS iterations instead of ~25. The full fit still runs to
lifetimes' tolerance on lifetimes' objective, so the optimum is the same."""

TOL = 1e-7
"""BFGS tolerance (scipy ``minimize(tol=...)``), lifetimes' default."""

MAX_SHAPE = 1e6
"""Shape parameters (dimensionless; each model lists its own in ``SHAPE_PARAMS``) above this count as
a degenerate fit: the optimum ran off to the boundary. Scale parameters (time units, currency) are
not checked."""

Z_95 = 1.96
"""Normal quantile of two-sided 95% confidence intervals (lifetimes' value)."""


MAX_START_CONDITION = 1e5
"""A fit starts from another fit's optimum only when both optima are well identified: the condition
number of BFGS's inverse-Hessian estimate at most this. Where it is larger the likelihood is nearly
flat along some direction (Online Retail II's holdout windows: 1e7 to 1e11; the simulated shops':
1e2 to 1e4) and the start, not the data, would decide where along that ridge the fit stops, so
such fits start as lifetimes' do."""

NUMERICAL_ERRORS = (FloatingPointError, ValueError, np.linalg.LinAlgError, OverflowError)
"""What an objective raises where the optimiser steps out of its numerical range (e.g. ``math.log``
of an underflowed parameter after a long first step)."""


class NotConverged(RuntimeError):
    """rebuy's optimiser did not report success (the analogue of lifetimes' ConvergenceError)."""


class Objective(Protocol):
    """What the optimiser needs of a model's objective (see the module docstring)."""

    penalizer: float
    W: float

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]: ...


class Solution(NamedTuple):
    """One successful solver run: parameters in natural units, the optimum ``theta`` in the
    objective's (log, possibly time-scaled) coordinates, and the all-rows objective (``fun_`` set
    when rebuy minimised it)."""

    params: dict[str, float]
    theta: np.ndarray
    objective: Any
    hess_inv: np.ndarray | None = None  # BFGS's final inverse-Hessian estimate in theta (rebuy's solver)


class FitOutcome(NamedTuple):
    """Result of :func:`fit_with_retry`."""

    solution: Solution
    penalizer: float  # the penalizer of the attempt that succeeded
    notes: list[str]  # warnings (one per failed attempt)
    converged: bool  # True when the first attempt succeeded


def check_solver(solver: str, who: str) -> None:
    """ModelFitError unless ``solver`` is one of :data:`SOLVERS`."""
    if solver not in SOLVERS:
        raise ModelFitError(f"{who}: solver must be one of {SOLVERS}, got {solver!r}")


def pairwise_dot(u: np.ndarray, v: np.ndarray) -> float:
    """sum(u * v) with numpy's pairwise summation: steadier than BLAS ``ddot`` on a shared machine."""
    return float(np.multiply(u, v).sum())


# ------------------------------------------------------------------------------------ minimising
def minimize(
    objective: Objective, x0: np.ndarray, tol: float = TOL, hess_inv0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """BFGS with the analytic gradient, as lifetimes' ``_fit`` (scipy ``minimize`` default method,
    same ``tol``) but without autograd. Returns (optimum, BFGS inverse-Hessian estimate); sets
    ``objective.fun_``; raises :class:`NotConverged` when scipy reports failure."""
    from scipy.optimize import minimize as scipy_minimize

    options = {} if hess_inv0 is None else {"hess_inv0": hess_inv0}
    with np.errstate(all="ignore"):
        res = scipy_minimize(objective, x0, jac=True, method="BFGS", tol=tol, options=options)
    if not res.success or not np.isfinite(res.fun):
        raise NotConverged(str(res.message))
    objective.fun_ = float(res.fun)
    return np.asarray(res.x, dtype=np.float64), np.asarray(res.hess_inv, dtype=np.float64)


def _warm_start(
    make_objective: Callable[[Any, np.ndarray], Objective], weights: np.ndarray, x0: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """(start, inverse-Hessian estimate or None) for the all-rows fit: the optimum of a fit on a
    binomial subsample of about ``WARM_START_CUSTOMERS`` customers, else (x0, None)."""
    total = float(weights.sum())
    if total <= 2 * WARM_START_CUSTOMERS:
        return x0, None
    rng = np.random.default_rng(0)
    sub = rng.binomial(np.round(weights).astype(np.int64), WARM_START_CUSTOMERS / total).astype(np.float64)
    keep = sub > 0
    if keep.sum() < 100:
        return x0, None  # fractional weights: no useful subsample
    try:
        start, hess_inv0 = minimize(make_objective(keep, sub[keep]), x0)
    except (NotConverged, *NUMERICAL_ERRORS):
        return x0, None  # the subsample is not enough: cold start on all rows
    hess_inv0 = 0.5 * (hess_inv0 + hess_inv0.T)
    if not (np.isfinite(start).all() and np.isfinite(hess_inv0).all()):
        return x0, None
    if np.linalg.eigvalsh(hess_inv0).min() <= 0:
        return start, None  # keep the start, BFGS begins from the identity
    return start, hess_inv0


def well_conditioned(hess_inv: np.ndarray | None) -> bool:
    """True when a BFGS inverse-Hessian estimate is finite, positive definite and its condition
    number is at most :data:`MAX_START_CONDITION` (the optimum is identified in every direction)."""
    if hess_inv is None or not np.isfinite(hess_inv).all():
        return False
    eig = np.linalg.eigvalsh(0.5 * (hess_inv + hess_inv.T))
    return bool(eig.min() > 0 and eig.max() <= MAX_START_CONDITION * eig.min())


def fit_warm(
    make_objective: Callable[[Any, np.ndarray], Objective], weights: np.ndarray, x0: np.ndarray,
    start: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> tuple[np.ndarray, Objective, np.ndarray]:
    """Minimise ``make_objective(mask, weights)`` over all rows (``mask = slice(None)``).

    With ``start`` (theta and the BFGS inverse-Hessian estimate of another fit's optimum, e.g. the
    previous holdout window's) BFGS begins there when that estimate is :func:`well_conditioned`,
    and the result is kept when its own estimate is too; otherwise (and without ``start``) it is
    warm-started from a fit on a random subsample of customers when there are more than
    ``2 * WARM_START_CUSTOMERS``, else from lifetimes' start ``x0``; a warm start that does not
    converge falls back to ``x0``. Returns (optimum, the all-rows objective with ``fun_`` set,
    BFGS's final inverse-Hessian estimate)."""
    objective = make_objective(slice(None), weights)
    if start is not None and np.isfinite(start[0]).all() and well_conditioned(start[1]):
        try:
            theta, hess_inv = minimize(objective, start[0], hess_inv0=0.5 * (start[1] + start[1].T))
        except (NotConverged, *NUMERICAL_ERRORS):
            pass  # as without a start
        else:
            if well_conditioned(hess_inv):
                return theta, objective, hess_inv
    begin, hess_inv0 = _warm_start(make_objective, weights, x0)
    try:
        theta, hess_inv = minimize(objective, begin, hess_inv0=hess_inv0)
    except NotConverged:
        if begin is x0 and hess_inv0 is None:
            raise
        theta, hess_inv = minimize(objective, x0)  # lifetimes' cold start
    return theta, objective, hess_inv


def lifetimes_fit(fitter: Any, names: Iterable[str], *args: Any, **kwargs: Any) -> dict[str, float]:
    """Fit a lifetimes fitter and return its parameters; its ConvergenceError becomes
    :class:`NotConverged`, a non-finite minimum gives NaN parameters (rejected by :func:`fit_problem`)."""
    from lifetimes.utils import ConvergenceError

    try:
        fitter.fit(*args, **kwargs)
    except ConvergenceError as e:
        raise NotConverged(str(e)) from e
    params = {k: float(fitter.params_[k]) for k in names}
    if not np.isfinite(fitter._negative_log_likelihood_):
        params = {k: float("nan") for k in params}
    return params


# ------------------------------------------------------------------------------------ judging and retrying
def fit_problem(params: dict[str, float], shape_params: Iterable[str]) -> str | None:
    """Why fitted parameters are unusable, or None when they are fine: every parameter must be
    finite and > 0, and no parameter named in ``shape_params`` may exceed :data:`MAX_SHAPE` (a
    shape parameter running off to infinity is a degenerate boundary solution, which lifetimes'
    optimiser reports as non-convergence)."""
    if not all(np.isfinite(v) and v > 0 for v in params.values()):
        return f"the fit gave non-finite or out-of-range parameters {params}"
    if any(params[k] > MAX_SHAPE for k in shape_params):
        return f"the fit ran off to a degenerate solution {params}"
    return None


def _attempt(
    solve: Callable[[float], Solution], penalizer: float, shape_params: Iterable[str]
) -> tuple[Solution | None, str | None]:
    """(solution, None) or (None, reason) for one solver run, with lifetimes' printing and numpy's
    warnings silenced."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            solution = solve(penalizer)
    except NotConverged:
        return None, "the optimiser did not converge"
    except NUMERICAL_ERRORS as e:
        text = str(e).strip()
        return None, f"the optimiser failed ({type(e).__name__}: {text.splitlines()[0] if text else ''})"
    reason = fit_problem(solution.params, shape_params)
    return (None, reason) if reason else (solution, None)


def fit_with_retry(
    solve: Callable[[float], Solution],
    penalizer: float,
    retry_penalizer: float,
    name: str,
    shape_params: Iterable[str] = (),
) -> FitOutcome:
    """Fit with ``solve(penalizer)``; when that fails (see the module docstring; ``shape_params``
    for :func:`fit_problem`) retry once with ``retry_penalizer`` (only if it is larger). Each
    failure is logged and noted; ModelFitError when no attempt succeeds."""
    notes: list[str] = []
    attempts = [penalizer] + ([retry_penalizer] if retry_penalizer > penalizer else [])
    for i, pen in enumerate(attempts):
        solution, reason = _attempt(solve, pen, tuple(shape_params))
        if solution is not None:
            return FitOutcome(solution, float(pen), notes, i == 0)
        msg = f"{name} fit with penalizer={pen}: {reason}"
        if i + 1 < len(attempts):
            msg += f"; retrying with penalizer={attempts[i + 1]}"
        logger.warning(msg)
        notes.append(msg)
    raise ModelFitError(f"{name}: the fit did not converge ({notes[-1]}); try a larger retry_penalizer in the config")


# ------------------------------------------------------------------------------------ uncertainty
def numerical_hessian(objective: Objective, theta: np.ndarray, step: float = 1e-5) -> np.ndarray:
    """Hessian of ``objective`` at ``theta`` by central differences of its analytic gradient
    (2 gradient evaluations per parameter, step ``step * max(1, |theta_j|)``), symmetrised."""
    theta = np.asarray(theta, dtype=np.float64)
    k = len(theta)
    hess = np.empty((k, k))
    with np.errstate(all="ignore"):
        for j in range(k):
            h = step * max(1.0, abs(theta[j]))
            up, down = theta.copy(), theta.copy()
            up[j] += h
            down[j] -= h
            hess[:, j] = (objective(up)[1] - objective(down)[1]) / (2 * h)
    return 0.5 * (hess + hess.T)


def covariance_from_hessian(hessian: np.ndarray, params: np.ndarray, n: float) -> np.ndarray:
    """Asymptotic covariance of the parameters (natural units) from the Hessian of the mean
    objective in log parameters: ``diag(p) H^-1 diag(p) / n`` (the delta method; its diagonal is
    lifetimes' ``variance_matrix_``). NaN when the Hessian is singular or not positive definite."""
    p = np.asarray(params, dtype=np.float64)
    nan = np.full((len(p), len(p)), np.nan)
    if not np.isfinite(hessian).all():
        return nan
    try:
        inv = np.linalg.inv(hessian)
    except np.linalg.LinAlgError:
        return nan
    if not (np.diag(inv) > 0).all():
        return nan
    return inv * np.outer(p, p) / n
