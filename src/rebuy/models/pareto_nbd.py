"""Pareto/NBD repeat-purchase model (Schmittlein, Morrison & Colombo 1987): likelihood, objective, model.

The model: a customer buys at Poisson rate ``lambda ~ Gamma(r, alpha)`` while alive and dies after
an ``Exp(mu)`` lifetime, ``mu ~ Gamma(s, beta)`` (shape, rate), both from the first purchase at
time 0. Everything reduces to one integral (time units, ``a >= 0``)::

    G(p, q; a) = int_a^inf (alpha + y)^-p (beta + y)^-q dy,   J = G(r + x, s + 1; .),  H = G(r + x + 1, s; .)

By parts, ``P(a) := (alpha + a)^-(r+x) (beta + a)^-s = (r + x) H(a) + s J(a)``, so Fader, Hardie &
Lee's likelihood (2005 note, eq. 18: ``C [P(T) + s int_{t_x}^T (alpha+y)^-(r+x) (beta+y)^-(s+1) dy]``,
``C = Gamma(r + x) alpha^r beta^s / Gamma(r)``, lifetimes' hyp2f1 form) is a sum of two positive terms::

    L = C [(r + x) H(x, T) + s J(x, t_x)]

P(alive) is ``P(T) / (L / C)``; given alive, E[purchases in t] is closed form and P(a purchase in
t) = ``(r + x) (H(x, T) - H(x, T + t)) / P(T)``.

Layout, bottom up:

- :func:`log_tail_integral`: log G and its gradient, by a positive series (Euler's transformation
  of lifetimes' hypergeometric form) or, where that converges slowly, composite Gauss-Legendre
  quadrature (:func:`_series`, :func:`_quadrature`);
- :func:`pair_terms` / :func:`pair_logs`: ``s J`` and ``(r + x) H`` (and gradients) at many
  distinct (x, a) pairs. With ``sigma = s J / P`` the identity above and ``H_x - J_x =
  (beta - alpha) J_x+1`` give a recurrence in x at fixed a; each run of pairs (:class:`PairLayout`)
  gets one :func:`log_tail_integral` at a pivot and O(1) steps from there, in the direction in
  which the recurrence shrinks errors;
- :func:`pareto_nbd_log_likelihood`, :class:`ParetoNBDObjective` (lifetimes'
  ``ParetoNBDFitter._negative_log_likelihood`` as a weighted mean, with its analytic gradient:
  ``log C`` per distinct x, the pair terms per distinct (x, T) and (x, t_x) pair, one
  ``logaddexp`` per row);
- :class:`ParetoNBDModel` (fit via :class:`~rebuy.models.base.PurchaseModel`, predictions) and
  :class:`ParetoNBDForecast` (its fast exact ``conditional`` forecast for CLV and scores).

Invariants: parameters ``r, alpha, s, beta`` with ``alpha`` and ``beta`` in the summary's time
unit. The objective works on log parameters with time scaled by ``1 / max(T)`` (lifetimes'
scaling), so its optimum ``theta`` maps to ``alpha = exp(theta_alpha) * max(T)`` (``beta`` alike).
The pair terms are exact to ~1e-12 relative in value and ~1e-10 in gradient (the worst corner of
a random grid with alpha / beta up to 1e5 and x up to 3000) for all parameter values, including
where lifetimes' hyp2f1 form overflows or loses its digits; predictions equal lifetimes' to ~1e-10
relative where lifetimes is finite and stay finite for heavy buyers, T = 0, t = 0 and
s = 1. Evaluation cost grows with the distinct (x, T) and (x, t_x) pairs and the distinct T and
t_x values, so summaries in whole days (as ``rfm_summary`` gives them) are fast.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.polynomial.legendre import leggauss
from scipy.special import digamma, exprel, gammaln

from rebuy.errors import InvalidParameterError
from rebuy.models.base import ConditionalForecast, PurchaseModel
from rebuy.models.bgnbd import BGNBDForecast
from rebuy.models.inputs import distinct_rows, row_arrays
from rebuy.models.mbgnbd import MBGNBDObjective
from rebuy.models.optimize import Solution, pairwise_dot

# ---------------------------------------------------------------------------- the tail integral
SERIES_MAX_U = 0.65
""":func:`log_tail_integral` sums its series where ``u = |alpha - beta| / (max(alpha, beta) + a)``
is at most this (at most ~100 terms, each a few multiplications) and integrates numerically above
(about the same cost per item there)."""

SERIES_TOL = 1e-17
"""The series stops once its remaining terms are bounded by this share of the sum."""

SERIES_BLOCK = 2048
"""Items summed at once by :func:`_series_sums` (a block holds items x terms values)."""

PANEL_WIDTH = 1.25
"""Width of the Gauss-Legendre panels in the quadrature's variable eta (see :func:`_quadrature`)."""

PANEL_NODES = 10
"""Gauss-Legendre nodes per panel (panels of width 1.25 with 10 nodes: ~1e-13 relative)."""

LOG_CUTOFF = 37.0
"""The quadrature stops where the integrand has fallen by ``exp(-LOG_CUTOFF)`` (plus a margin for
the integral's width), i.e. beyond double precision."""

_GL_X, _GL_W = leggauss(PANEL_NODES)
_GL_X = (_GL_X + 1.0) * (PANEL_WIDTH / 2.0)  # nodes on [0, PANEL_WIDTH]
_GL_W = _GL_W * (PANEL_WIDTH / 2.0)


class TailIntegral(NamedTuple):
    """``log G`` and ``grad`` = d log G / d (p, q, alpha, beta) (shape (4, n)) of :func:`log_tail_integral`."""

    log: np.ndarray
    grad: np.ndarray


def log_tail_integral(p: Any, q: Any, alpha: float, beta: float, a: Any) -> TailIntegral:
    """``log G(p, q; a)``, ``G = int_a^inf (alpha + y)^-p (beta + y)^-q dy`` (p, q > 0, p + q > 1,
    alpha, beta > 0, a >= 0; time units), and its gradient in (p, q, alpha, beta); 1-D arrays.

    With ``M = max(alpha, beta)``, ``c = min(alpha, beta)``, ``g`` and ``t`` the exponents of the
    ``M`` and ``c`` factors, ``m = p + q - 1`` and ``u = (M - c) / (M + a)`` in [0, 1), Euler's
    transformation of the hypergeometric form (lifetimes' ``_log_A_0``) gives a series of positive
    terms whose ratio is below ``u``::

        G = (M + a)^-g (c + a)^(1-t) / m * sum_k (g)_k / (m + 1)_k u^k

    It is summed where ``u <= SERIES_MAX_U``; elsewhere (c + a much smaller than M + a, where the
    series converges slowly and scipy's hyp2f1 loses its digits) :func:`_quadrature` integrates.
    """
    p, q, a = (np.ravel(v) for v in np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (p, q, a))))
    alpha_is_max = alpha >= beta
    M, c = (alpha, beta) if alpha_is_max else (beta, alpha)
    g, t = (p, q) if alpha_is_max else (q, p)
    u = (M - c) / (M + a)
    log_g = np.empty(len(a))
    grad = np.empty((4, len(a)))  # in (g, t, M, c) order until the end
    use_series = u <= SERIES_MAX_U
    for rows, method in ((np.flatnonzero(use_series), _series), (np.flatnonzero(~use_series), _quadrature)):
        if len(rows):
            log_g[rows], grad[:, rows] = method(g[rows], t[rows], M, c, a[rows])
    if not alpha_is_max:
        grad = grad[[1, 0, 3, 2]]
    return TailIntegral(log_g, grad)


def _terms_needed(u: np.ndarray) -> np.ndarray:
    """Terms of the series after which the rest is below :data:`SERIES_TOL` (the term ratio is
    below u, so the tails of the sum and of its derivative sums are bounded by ``u^K / (1 - u)^2``)."""
    with np.errstate(divide="ignore"):
        return np.where(u > 0, np.ceil((math.log(SERIES_TOL) + 2 * np.log1p(-u)) / np.log(u)) + 2, 1).astype(np.int64)


def _series_sums(g: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The four sums of :func:`_series` per item, shape (4, n): ``S = sum_k T_k``,
    ``T_k = (g)_k / (m + 1)_k u^k`` (m = g + t - 1), ``S_gm = sum_k T_k (psi_g,k - psi_m,k)``,
    ``S_m = sum_k T_k psi_m,k`` (psi: the derivatives of log (g)_k in g and of log (m + 1)_k in m)
    and ``S_u = sum_k k T_k / u``. All terms at once (items x terms, cumulative products), in
    blocks of items sorted by the number of terms they need; an item summing more terms than it
    needs only gains accuracy."""
    need = _terms_needed(u)
    order = np.argsort(need, kind="stable")
    out = np.empty((4, len(u)))
    for lo in range(0, len(u), SERIES_BLOCK):
        rows = order[lo : lo + SERIES_BLOCK]
        K = int(need[rows[-1]])
        gk = g[rows, None] + np.arange(K)  # g + k - 1, k = 1..K
        m1k = (g + t)[rows, None] + np.arange(K)  # m + k
        step = gk / m1k  # T_k / T_(k-1) / u
        T = np.cumprod(step * u[rows, None], axis=1)
        before = np.ones_like(T)
        before[:, 1:] = T[:, :-1]  # T_(k-1)
        psi_gm = np.cumsum(t[rows, None] / (gk * m1k), axis=1)  # 1 / (g + j) - 1 / (m + 1 + j) > 0
        psi_m = np.cumsum(1.0 / m1k, axis=1)
        out[:, rows] = [
            1.0 + T.sum(axis=1),
            (T * psi_gm).sum(axis=1),
            (T * psi_m).sum(axis=1),
            (np.arange(1, K + 1) * before * step).sum(axis=1),
        ]
    return out


def _series(g: np.ndarray, t: np.ndarray, M: float, c: float, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log G and its gradient in (g, t, M, c) by the series of :func:`log_tail_integral`."""
    m = g + t - 1.0
    u = (M - c) / (M + a)
    S, S_gm, S_m, S_u = _series_sums(g, t, u)
    lM, lc = np.log(M + a), np.log(c + a)
    log_g = -g * lM + (1.0 - t) * lc - np.log(m) + np.log(S)
    d_u = S_u / S  # d log S / du
    grad = np.stack(
        [
            -lM - 1.0 / m + S_gm / S,
            -lc - 1.0 / m - S_m / S,
            -g / (M + a) + d_u * (c + a) / (M + a) ** 2,
            (1.0 - t) / (c + a) - d_u / (M + a),
        ]
    )
    return log_g, grad


_PANELS: list[np.ndarray] = [np.empty((0, PANEL_NODES)), np.empty((0, PANEL_NODES))]


def _panel_tables(n_panels: int) -> tuple[np.ndarray, np.ndarray]:
    """``e^eta - 1`` and ``w e^eta`` (Gauss-Legendre weight w) at the nodes of the first
    ``n_panels`` panels in eta (shape (n_panels, PANEL_NODES)); the panels are the same for every
    integral, so they are computed once (and extended when more are needed)."""
    if len(_PANELS[0]) < n_panels:
        eta = np.arange(max(n_panels, 2 * len(_PANELS[0])))[:, None] * PANEL_WIDTH + _GL_X[None, :]
        _PANELS[:] = [np.expm1(eta), _GL_W[None, :] * np.exp(eta)]
    return _PANELS[0], _PANELS[1]


def _quadrature_layout(m: np.ndarray, t: np.ndarray, u: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item: the scale ``eps`` of the substitution ``lambda = eps (e^eta - 1)`` and the number of
    panels of width :data:`PANEL_WIDTH` in eta that reach the cutoff (see :func:`_quadrature`)."""
    rate0 = m + t * u / d  # decay rate of the integrand at lambda = 0 (its largest)
    with np.errstate(divide="ignore"):
        eps = np.minimum(1.0 / rate0, -np.log(u) / math.e)  # keeps the singularity at log(u) off the axis
    cut = LOG_CUTOFF + np.log1p(1.0 / (m * eps))
    reach = d * np.exp(np.minimum(cut / t, 700.0))  # 1 - u e^-lambda where the c factor has fallen by e^-cut
    with np.errstate(invalid="ignore", divide="ignore"):
        lam_c = np.where(reach < 1.0, -np.log((1.0 - reach) / u), np.inf)
    lam_max = np.minimum(cut / m, lam_c)
    panels = np.maximum(np.ceil(np.log1p(lam_max / eps) / PANEL_WIDTH), 1).astype(np.int64)
    return eps, panels


def _quadrature(g: np.ndarray, t: np.ndarray, M: float, c: float, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log G and its gradient in (g, t, M, c) by composite Gauss-Legendre (used for u > SERIES_MAX_U).

    With ``y = (M + a) e^lambda - M``: ``G = (M + a)^-m int_0^inf e^(-m lambda) (1 - u e^-lambda)^-t
    dlambda``. The integrand falls fastest at lambda = 0 (where ``1 - u = (c + a) / (M + a)`` is
    small) and then at rate m; ``lambda = eps (e^eta - 1)`` with ``eps`` the inverse initial rate
    makes it smooth on a scale of 1 in eta, with its singularities at distance >= pi/2 from the
    real axis, so equal panels in eta integrate it to ~1e-13. The derivatives are integrals of
    the same integrand times ``log(M + y)``, ``log(c + y)``, ``1 / (M + y)``, ``1 / (c + y)``."""
    m = g + t - 1.0
    u = (M - c) / (M + a)
    d = (c + a) / (M + a)  # 1 - u, without cancellation
    eps, panels = _quadrature_layout(m, t, u, d)
    item = np.repeat(np.arange(len(a)), panels)
    first = np.cumsum(panels) - panels
    expm1_eta, weight_exp_eta = _panel_tables(int(panels.max()))
    panel = np.arange(len(item)) - first[item]
    e, ti, ui, di, mi = eps[item, None], t[item, None], u[item, None], d[item, None], m[item, None]
    lam = e * expm1_eta[panel]
    em1 = np.expm1(-lam)  # e^-lambda - 1
    rise = ui * -em1  # (1 - u e^-lambda) - d
    log_rel = np.log1p(rise / di)  # log((1 - u e^-lambda) / d)
    f = (e * weight_exp_eta[panel]) * np.exp(-mi * lam - ti * log_rel)
    em = 1.0 + em1
    parts = np.stack([f, f * lam, f * log_rel, f * em, f * em / (di + rise)]).sum(axis=2)
    S, s_lam, s_rel, s_em, s_emc = np.add.reduceat(parts, first, axis=1)
    lM, lc = np.log(M + a), np.log(c + a)
    log_g = -m * lM - t * (lc - lM) + np.log(S)
    grad = np.stack(
        [
            -lM - s_lam / S,
            -lc - (s_lam + s_rel) / S,
            -g * s_em / S / (M + a),
            -t * s_emc / S / (M + a),
        ]
    )
    return log_g, grad


# ---------------------------------------------------------------------------- the recurrence in x
RUN_SPAN = 16
"""Largest x-span of one recurrence run (:class:`PairLayout`); a run costs one direct evaluation."""


class PairLayout:
    """Distinct (x, a) pairs (1-D arrays, any order; time scaled as the parameters) grouped into
    recurrence runs: pairs with the same ``a`` and whole x within :data:`RUN_SPAN` of the run's
    lowest x (a pair with fractional x is a run of its own). Depends on the data only, so the
    objective builds it once."""

    def __init__(self, x: np.ndarray, a: np.ndarray):
        self.x, self.a = x, a
        order = np.lexsort((x, a))
        xs, as_ = x[order], a[order]
        whole = xs == np.floor(xs)
        new_a = np.ones(len(xs), dtype=bool)
        new_a[1:] = as_[1:] != as_[:-1]
        first_x = xs[new_a][np.cumsum(new_a) - 1]
        chunk = np.where(whole, (xs - first_x) // RUN_SPAN, -1.0)
        new_run = new_a | ~whole
        new_run[1:] |= (chunk[1:] != chunk[:-1]) | ~whole[:-1]
        run = np.cumsum(new_run) - 1
        self.run_a, self.run_lo = as_[new_run], xs[new_run]
        last = np.ones(len(xs), dtype=bool)
        last[:-1] = new_run[1:]
        self.run_hi = xs[last]
        self.pair_run = np.empty(len(x), dtype=np.int64)
        self.pair_run[order] = run


class PairTerms(NamedTuple):
    """Per pair (x, a): ``sigma = s J / P`` and ``h = (r + x) H / P`` (``sigma + h = 1``), and
    ``d_sigma`` (shape (4, n)) = d sigma / d (r, alpha, s, beta); see :func:`pair_terms`."""

    sigma: np.ndarray
    h: np.ndarray
    d_sigma: np.ndarray


def _log_p_survive(params: np.ndarray, x: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log P = -(r + x) log(alpha + a) - s log(beta + a)`` and its gradient (4, n)."""
    r, alpha, s, beta = params
    la, lb = np.log(alpha + a), np.log(beta + a)
    grad = np.stack([-la, -(r + x) / (alpha + a), -lb, np.broadcast_to(-s / (beta + a), la.shape)])
    return -(r + x) * la - s * lb, grad


def _run_starts(params: np.ndarray, layout: PairLayout) -> tuple[np.ndarray, PairTerms]:
    """Per run: the pivot x and the pair terms there by :func:`log_tail_integral`. Below the pivot
    the backward recurrence contracts errors, above it the forward one (:func:`pair_terms`)."""
    r, alpha, s, beta = params
    a, lo, hi = layout.run_a, layout.run_lo, layout.run_hi
    rho = (beta - alpha) / (alpha + a)
    with np.errstate(divide="ignore", invalid="ignore"):
        turn = np.where(rho > 1.0, np.round(s / (rho - 1.0) - r), np.inf)
    pivot = np.clip(turn, lo, hi)
    log_p, grad_p = _log_p_survive(params, pivot, a)
    j = log_tail_integral(r + pivot, s + 1.0, alpha, beta, a)
    sigma = np.exp(math.log(s) + j.log - log_p)
    d_log_sigma = j.grad[[0, 2, 1, 3]] - grad_p
    d_log_sigma[2] += 1.0 / s
    h = 1.0 - sigma  # exact enough unless sigma is near 1: there H directly
    near = np.flatnonzero(sigma > 0.5)
    if len(near):
        log_h = log_tail_integral(r + pivot[near] + 1.0, s, alpha, beta, a[near]).log
        h[near] = np.exp(np.log(r + pivot[near]) + log_h - log_p[near])
    return pivot, PairTerms(sigma, h, sigma * d_log_sigma)


class _Walkers(NamedTuple):
    """The recurrence walkers (one per run and direction with steps to take), sorted by their
    number of steps. A step maps sigma from one x to the next by ``sigma <- (s - K1 sigma) / Q``,
    with ``K1``, ``Q`` affine in ``R = r + x_low`` (x_low: the lower x of the step): ``coef`` (4, n)
    holds (K1, Q) at R = 0 and their slopes in R, ``grad`` (4, 4, n) the same for their gradients
    in (r, alpha, s, beta) (including R's, d R / d r = 1). h is stepped with positive terms
    (:func:`_step`). At step k, x_low is ``base + sign * k`` and the state goes to buffer position
    ``at + sign * k``."""

    coef: np.ndarray
    grad: np.ndarray
    rho: np.ndarray
    one_plus_rho: np.ndarray
    down: np.ndarray
    base: np.ndarray
    sign: np.ndarray
    at: np.ndarray
    steps: np.ndarray


def _step_coefficients(params: np.ndarray, a: np.ndarray, down: np.ndarray) -> tuple[np.ndarray, ...]:
    """``coef``, ``grad``, ``rho`` and ``one_plus_rho`` of :class:`_Walkers` at ``a``. Backward
    (x+1 -> x): ``sigma_x = (s - R rho sigma_x+1) / (R + s)``; forward (x -> x+1):
    ``sigma_x+1 = (s - (R + s) sigma_x) / (R rho)``; rho = (beta - alpha) / (alpha + a)."""
    _, alpha, s, beta = params
    rho = (beta - alpha) / (alpha + a)
    one_plus_rho = (beta + a) / (alpha + a)  # 1 + rho without cancellation
    d_rho = np.stack([-one_plus_rho / (alpha + a), 1.0 / (alpha + a)])  # d rho / d (alpha, beta)
    coef = np.stack([np.where(down, 0.0, s), np.where(down, rho, 1.0), np.where(down, s, 0.0), np.where(down, 1.0, rho)])
    grad = np.zeros((4, 4, len(a)))
    grad[0, 0], grad[2, 0] = np.where(down, rho, 1.0), np.where(down, 0.0, 1.0)  # dK1 at R = 0
    grad[[1, 3], 1] = np.where(down, d_rho, 0.0)  # dK1 slope in R
    grad[0, 2], grad[2, 2] = np.where(down, 1.0, rho), np.where(down, 1.0, 0.0)  # dQ at R = 0
    grad[[1, 3], 3] = np.where(down, 0.0, d_rho)
    return coef, grad, rho, one_plus_rho


def _walkers(params: np.ndarray, layout: PairLayout, pivot: np.ndarray, at: np.ndarray) -> tuple[_Walkers, np.ndarray]:
    """The :class:`_Walkers` of the runs (down from each pivot to the run's lowest x, up to its
    highest) and the run of each walker."""
    n_down, n_up = (pivot - layout.run_lo).astype(np.int64), (layout.run_hi - pivot).astype(np.int64)
    run = np.r_[np.flatnonzero(n_down > 0), np.flatnonzero(n_up > 0)]
    down = np.arange(len(run)) < int((n_down > 0).sum())
    coef, grad, rho, one_plus_rho = _step_coefficients(params, layout.run_a[run], down)
    steps = np.where(down, n_down[run], n_up[run])
    o = np.argsort(-steps, kind="stable")
    base = pivot[run] - np.where(down, 0.0, 1.0)
    walkers = _Walkers(
        coef[:, o], grad[:, :, o], rho[o], one_plus_rho[o], down[o], base[o], np.where(down, -1, 1)[o], at[run][o], steps[o]
    )
    return walkers, run[o]


class _StepTables(NamedTuple):
    """The walkers' step coefficients at every step k (row k - 1), computed before the walk so
    that the sequential loop only updates the state: ``K1``, ``1 / Q``, ``h_a + h_b v`` the
    backward h (v = sigma, or h when rho < 0), and the gradients ``d_K1``, ``d_Q`` (steps, 4, n)."""

    K1: np.ndarray
    inv_Q: np.ndarray
    h_a: np.ndarray
    h_b: np.ndarray
    d_K1: np.ndarray
    d_Q: np.ndarray


def _step_tables(params: np.ndarray, w: _Walkers) -> _StepTables:
    """:class:`_StepTables` of the walkers (R = r + x_low at each step). Backward,
    ``h_x = R (1 + rho sigma_x+1) / (R + s)``, for rho < 0 written with positive terms
    ``R ((1 + rho) - rho h_x+1) / (R + s)``; forward h = 1 - sigma (then h > sigma)."""
    r, _, s, _ = params
    k = np.arange(1, int(w.steps[0]) + 1)[:, None]
    R = r + (w.base + w.sign * k)  # (steps, n)
    K1, Q = w.coef[0] + R * w.coef[1], w.coef[2] + R * w.coef[3]
    scale = R / (R + s)
    negative = w.rho < 0
    h_a = scale * np.where(negative, w.one_plus_rho, 1.0)
    h_b = scale * np.where(negative, -w.rho, w.rho)
    d_K1 = w.grad[:, 0] + R[:, None, :] * w.grad[:, 1]
    d_Q = w.grad[:, 2] + R[:, None, :] * w.grad[:, 3]
    return _StepTables(K1, 1.0 / Q, h_a, h_b, d_K1, d_Q)


def _walk(params: np.ndarray, w: _Walkers, v: np.ndarray, out: np.ndarray) -> None:
    """Take every walker's steps from its start ``v`` (6, n: sigma, h, d sigma), writing the state
    at each x into ``out`` (6, size); step k works on the walkers with >= k steps (a prefix)."""
    if not len(w.steps):
        return
    s = params[2]
    tb = _step_tables(params, w)
    h_mode = w.rho < 0  # backward walks with rho < 0 step h, the others sigma
    for k in range(1, int(w.steps[0]) + 1):
        m = int(np.searchsorted(-w.steps, -k, side="right"))
        v = v[:, :m]
        K1, inv_Q = tb.K1[k - 1, :m], tb.inv_Q[k - 1, :m]
        new = np.empty_like(v)
        new[0] = (s - K1 * v[0]) * inv_Q
        walked = np.where(h_mode[:m], v[1], v[0])
        new[1] = np.where(w.down[:m], tb.h_a[k - 1, :m] + tb.h_b[k - 1, :m] * walked, 1.0 - new[0])
        d = -(v[0] * tb.d_K1[k - 1, :, :m] + new[0] * tb.d_Q[k - 1, :, :m] + K1 * v[2:])
        d[2] += 1.0
        new[2:] = d * inv_Q
        out[:, w.at[:m] + w.sign[:m] * k] = new
        v = new


def pair_terms(params: np.ndarray, layout: PairLayout) -> PairTerms:
    """``sigma = s J / P``, ``h = (r + x) H / P`` and d sigma at every pair of ``layout``
    (parameters (r, alpha, s, beta) in the layout's time scale).

    The identities (r + x) H_x + s J_x = P_x (by parts) and H_x - J_x = (beta - alpha) J_x+1
    (partial fractions) give a recurrence in x at fixed a (:func:`_step_coefficients`). Per run,
    :func:`log_tail_integral` gives the terms at a pivot x and the recurrence the rest (O(1) per
    x). Backward, an error is multiplied by ``rho (r + x) / (r + x + s)``, below 1 in size unless
    rho > 1 and x > s / (rho - 1) - r; forward by its inverse. The pivot is that turning point
    (clipped to the run), so both walks shrink errors and the terms are about as exact as the
    direct evaluation (~1e-12)."""
    lo, hi = layout.run_lo, layout.run_hi
    pivot, start = _run_starts(params, layout)
    width = (hi - lo + 1).astype(np.int64)
    slot = np.cumsum(width) - width  # flat position of run i at x: slot[i] + (x - lo[i])
    at = slot + np.rint(pivot - lo).astype(np.int64)
    walkers, run = _walkers(params, layout, pivot, at)
    state = np.vstack([start.sigma, start.h, start.d_sigma])
    out = np.empty((6, int(width.sum())))
    out[:, at] = state
    _walk(params, walkers, state[:, run], out)
    pr = layout.pair_run
    flat = out[:, slot[pr] + np.rint(layout.x - lo[pr]).astype(np.int64)]
    return PairTerms(flat[0], flat[1], flat[2:])


# ---------------------------------------------------------------------------- likelihood
class PairLogs(NamedTuple):
    """Per pair: ``log_j = log(s J)``, ``log_h = log((r + x) H)`` and their gradients in
    (r, alpha, s, beta), shape (4, n) (module docstring)."""

    log_j: np.ndarray
    log_h: np.ndarray
    grad_j: np.ndarray
    grad_h: np.ndarray


def pair_logs(params: np.ndarray, layout: PairLayout) -> PairLogs:
    """:class:`PairLogs` at every pair of ``layout``: ``s J = sigma P`` and ``(r + x) H = h P``."""
    terms = pair_terms(params, layout)
    log_p, grad_p = _log_p_survive(params, layout.x, layout.a)
    return PairLogs(
        np.log(terms.sigma) + log_p,
        np.log(terms.h) + log_p,
        terms.d_sigma / terms.sigma + grad_p,
        -terms.d_sigma / terms.h + grad_p,
    )


def _pairs(x: np.ndarray, a: np.ndarray) -> tuple[PairLayout, np.ndarray]:
    """The :class:`PairLayout` of the distinct (x, a) pairs of the 1-D arrays and each row's pair
    (hash-based: the layout orders the pairs itself)."""
    a_code, a_values = pd.factorize(a)
    x_code, x_values = pd.factorize(x)
    inverse, keys = pd.factorize(x_code.astype(np.int64) * len(a_values) + a_code)
    return PairLayout(x_values[keys // len(a_values)], a_values[keys % len(a_values)]), inverse


def _row_logs(params: dict[str, float], x: np.ndarray, a: np.ndarray) -> PairLogs:
    """:class:`PairLogs` per row of the 1-D arrays (x, a), computed once per distinct pair; NaN
    for rows with a missing or infinite value (predictions do not validate their input)."""
    ok = np.isfinite(x) & np.isfinite(a)
    layout, inverse = _pairs(x[ok], a[ok])
    logs = pair_logs(np.array([params[k] for k in ParetoNBDModel.PARAM_NAMES]), layout)
    out = PairLogs(*(np.full(v.shape[:-1] + (len(x),), np.nan) for v in logs))
    for full, part in zip(out, logs, strict=True):
        full[..., ok] = part[..., inverse]
    return out


def _log_terms(params: dict[str, float], x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row (1-D arrays): ``log((r + x) H(x, T))`` and ``log(s J(x, t_x))``, the two terms of
    ``L / C`` (module docstring)."""
    n = len(x)
    logs = _row_logs(params, np.concatenate([x, x]), np.concatenate([T, tx]))
    return logs.log_h[:n], logs.log_j[n:]


def _flat(*values: Any) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """The broadcast shape of prediction inputs and the inputs as 1-D arrays of that size."""
    arrays = row_arrays(*values)
    return arrays[0].shape, [v.ravel() for v in arrays]


def pareto_nbd_log_likelihood(params: dict[str, float], frequency: Any, recency: Any, T: Any) -> np.ndarray:
    """Per-customer Pareto/NBD log-likelihood (Fader, Hardie & Lee 2005 note, eq. 18, as
    ``log C + log((r + x) H(x, T) + s J(x, t_x))``, see the module docstring); time in the unit of
    ``params["alpha"]`` and ``params["beta"]``."""
    r, alpha, s, beta = (params[k] for k in ParetoNBDModel.PARAM_NAMES)
    shape, (x, tx, T) = _flat(frequency, recency, T)
    log_c = gammaln(r + x) - gammaln(r) + r * math.log(alpha) + s * math.log(beta)
    return np.atleast_1d((log_c + np.logaddexp(*_log_terms(params, x, tx, T))).reshape(shape))


class ParetoNBDObjective:
    """lifetimes' ``ParetoNBDFitter._negative_log_likelihood`` as the mean over weighted rows plus
    ``penalizer * sum(params**2)`` (log parameters, time scaled by ``scale`` = 1 / max(T)) with its
    analytic gradient.

    lifetimes divides the weighted sum by the *mean* weight, i.e. its value is ``n_rows`` times this
    mean with penalizer ``penalizer * n_rows``; the two have the same optimum, and this form does
    not depend on how the customers are split into rows (so ``sample_weight`` fits equal full fits).
    Per evaluation: ``log C`` on the distinct x, ``(r + x) H`` on the distinct (x, T) pairs, ``s J``
    on the distinct (x, t_x) pairs (:func:`log_tail_integral`, values and gradients), then one
    ``logaddexp`` per row and weighted bincounts back to the pairs."""

    def __init__(
        self, x: np.ndarray, tx: np.ndarray, T: np.ndarray, w: np.ndarray, penalizer: float, scale: float
    ):
        self.scale = float(scale)
        self.penalizer = float(penalizer)
        self.W = float(w.sum())
        self.w = w
        self.wx = pairwise_dot(w, x)  # time scaling shifts the ll by wx log(scale)
        self.ux, ix = np.unique(x, return_inverse=True)
        self.w_ux = np.bincount(ix, weights=w, minlength=len(self.ux))  # weight per distinct x
        # the (x, T) pairs (H) and the (x, t_x) pairs (J), as one set of distinct pairs
        self.layout, inverse = _pairs(np.concatenate([x, x]), np.concatenate([T, tx]) * self.scale)
        self.ih, self.ij = inverse[: len(x)], inverse[len(x) :]
        self.wh = np.bincount(self.ih, weights=w, minlength=len(self.layout.x))

    # f = mean penalised negative log-likelihood and its gradient, and the total log-likelihood in
    # the data's time unit, from _terms: as MBG/NBD's objective
    __call__ = MBGNBDObjective.__call__
    log_likelihood = MBGNBDObjective.log_likelihood

    def _terms(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Weighted total log-likelihood (scaled time) and its gradient in (r, alpha, s, beta):
        per row ``log C + log_h + softplus(log_j - log_h)``."""
        params = np.exp(theta)
        ll_c, g_c = self._constant_terms(*params)
        logs = pair_logs(params, self.layout)
        d = logs.log_j[self.ij] - logs.log_h[self.ih]
        e = np.exp(-np.abs(d))
        share_j = np.where(d >= 0, 1.0, e) / (1.0 + e)  # expit(d): the J term's share of L / C
        ll = ll_c + pairwise_dot(self.wh, logs.log_h) + pairwise_dot(self.w, np.maximum(d, 0.0) + np.log1p(e))
        wj = self.w * share_j
        n_pairs = len(self.wh)
        b_j = np.bincount(self.ij, weights=wj, minlength=n_pairs)
        b_h = self.wh - np.bincount(self.ih, weights=wj, minlength=n_pairs)
        return ll, g_c + (logs.grad_h * b_h).sum(axis=1) + (logs.grad_j * b_j).sum(axis=1)  # not BLAS: steadier

    def _constant_terms(self, r: float, alpha: float, s: float, beta: float) -> tuple[float, np.ndarray]:
        """Sum of ``log C = log Gamma(r + x) - log Gamma(r) + r log(alpha) + s log(beta)`` and its
        gradient, on the distinct x."""
        la, lb = math.log(alpha), math.log(beta)
        wx, ux, W = self.w_ux, self.ux, self.W
        ll = pairwise_dot(wx, gammaln(r + ux) - gammaln(r)) + W * (r * la + s * lb)
        g_r = pairwise_dot(wx, digamma(r + ux) - digamma(r)) + W * la
        return ll, np.array([g_r, W * r / alpha, W * lb, W * s / beta])


# ---------------------------------------------------------------------------- model
class _LifetimesParetoNBD:
    """lifetimes' ``ParetoNBDFitter`` on rebuy's objective: lifetimes' is the weighted sum over the
    rows passed divided by their mean weight, so its ``penalizer_coef`` is ``penalizer * n_rows``;
    started at lifetimes' mean start (all parameters 1) instead of a random draw, so the fit is
    deterministic. Exposes ``params_`` and ``_negative_log_likelihood_`` as lifetimes' fitters do."""

    def __init__(self, penalizer: float):
        self.penalizer = penalizer

    def fit(self, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray, weights: np.ndarray) -> _LifetimesParetoNBD:
        from lifetimes import ParetoNBDFitter

        fitter = ParetoNBDFitter(penalizer_coef=self.penalizer * len(frequency))
        fitter.fit(frequency, recency, T, weights=weights, initial_params=np.ones(4))
        self.params_ = fitter.params_
        self._negative_log_likelihood_ = fitter._negative_log_likelihood_
        return self


class ParetoNBDModel(PurchaseModel):
    """Pareto/NBD repeat-purchase model (Schmittlein, Morrison & Colombo 1987): lifetimes'
    ``ParetoNBDFitter`` likelihood. Unlike BG/NBD, customers die in continuous time (also before
    their first repeat purchase), so one-time buyers have P(alive) < 1.

    Parameters
    ----------
    penalizer : L2 penalty on the parameters (scaled time) added to the *mean* negative
        log-likelihood, as for :class:`~rebuy.models.BGNBDModel` (lifetimes' ``ParetoNBDFitter``
        adds ``penalizer_coef`` to the sum over its input rows instead: the same objective with
        ``penalizer_coef = penalizer * n_rows``, see :class:`ParetoNBDObjective`).
    retry_penalizer : penalty of the one retry when the first fit fails (as BG/NBD's).
    solver : ``"numpy"`` (default) minimises the objective by BFGS with its analytic gradient on the
        distinct rows (warm-started above ``2 * WARM_START_CUSTOMERS`` customers); ``"lifetimes"``
        calls ``ParetoNBDFitter.fit`` (Nelder-Mead, lifetimes' tolerance 1e-4) with the penalizer
        converted and a fixed start.

    Attributes (after ``fit``)
    ----------
    params_ : {"r", "alpha", "s", "beta"} (alpha and beta in time units); the other fit attributes
    as for :class:`~rebuy.models.BGNBDModel`.
    """

    PARAM_NAMES = ("r", "alpha", "s", "beta")
    SHAPE_PARAMS = ("r", "s")
    DISPLAY_NAME = "Pareto/NBD"

    # ---------------------------------------------------------------- objective hooks
    def _objective(
        self, cols: list[np.ndarray], weights: np.ndarray, penalizer: float, mask: Any
    ) -> ParetoNBDObjective:
        x, tx, T = cols
        return ParetoNBDObjective(x[mask], tx[mask], T[mask], weights, penalizer, 1.0 / T.max())

    def _from_theta(self, theta: np.ndarray, cols: list[np.ndarray]) -> dict[str, float]:
        r, alpha, s, beta = np.exp(theta)
        t_max = cols[2].max()
        return {"r": r, "alpha": alpha * t_max, "s": s, "beta": beta * t_max}

    def _to_theta(self, params: dict[str, float], cols: list[np.ndarray]) -> np.ndarray:
        t_max = cols[2].max()
        with np.errstate(all="ignore"):
            return np.log([params["r"], params["alpha"] / t_max, params["s"], params["beta"] / t_max])

    def _lifetimes_fitter(self, penalizer: float) -> _LifetimesParetoNBD:
        return _LifetimesParetoNBD(penalizer)

    def _fitted_log_likelihood(self, solution: Solution, cols: list[np.ndarray], counts: np.ndarray) -> float:
        """From the minimum rebuy's BFGS reached (``fun_``), else one evaluation of the all-rows
        objective (lifetimes' solver); time scaled by s adds -x log(s) per customer."""
        objective = solution.objective
        fun = getattr(objective, "fun_", None)
        if fun is None:
            return float(objective.log_likelihood(solution.theta))
        params = np.exp(solution.theta)
        return float(-(fun - objective.penalizer * float(params @ params)) * objective.W + objective.wx * math.log(objective.scale))

    # ---------------------------------------------------------------- predictions
    def log_likelihood(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """Per-customer log-likelihood at ``params_`` (:func:`pareto_nbd_log_likelihood`)."""
        self._check_fitted()
        return pareto_nbd_log_likelihood(self.params_, frequency, recency, T)

    def _log_p_now(self, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """``log P(T) = -(r + x) log(alpha + T) - s log(beta + T)`` (module docstring)."""
        r, alpha, s, beta = (self.params_[k] for k in self.PARAM_NAMES)
        return -(r + x) * np.log(alpha + T) - s * np.log(beta + T)

    def p_alive(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(customer still alive at T | frequency, recency, T) (Fader, Hardie & Lee 2005 note,
        eq. 37; lifetimes' ``conditional_probability_alive``): ``P(T) / ((r + x) H + s J)``."""
        self._check_fitted()
        shape, (x, tx, T) = _flat(frequency, recency, T)
        log_total = np.logaddexp(*_log_terms(self.params_, x, tx, T))
        p = np.minimum(np.exp(self._log_p_now(x, T) - log_total), 1.0)
        return np.atleast_1d(p.reshape(shape))

    def expected_purchases(self, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """Conditional expected number of repeat purchases in the next ``t`` time units (FHL 2005
        note, eq. 41; lifetimes' ``conditional_expected_number_of_purchases_up_to_time``):
        ``P(alive) * f(t, x, T)`` (see :meth:`_purchase_factor`). Finite for heavy buyers, T = 0,
        t = 0 and s = 1."""
        self._check_fitted()
        shape, (t, x, tx, T) = _flat(t, frequency, recency, T)
        check_nonnegative_time(t, "expected_purchases")
        out = self.p_alive(x, tx, T) * self._purchase_factor(t, x, T)
        return np.atleast_1d(out.reshape(shape))

    def _purchase_factor(self, t: Any, x: Any, T: Any) -> np.ndarray:
        """``expected_purchases / P(alive)`` = E[purchases in t | alive at T]: depends on (t, x, T)
        only, so forecasts compute it once per distinct (x, T) pair. With ``l = log(1 + t / (beta + T))``:
        ``(r + x) / (alpha + T) * (beta + T) * (1 - e^(-(s-1) l)) / (s - 1)``, the last factor
        written ``l * exprel(-(s - 1) l)`` (finite at s = 1); 0 at t = 0."""
        r, alpha, s, beta = (self.params_[k] for k in self.PARAM_NAMES)
        t, x, T = row_arrays(t, x, T)
        ell = np.log1p(t / (beta + T))
        return (r + x) / (alpha + T) * (beta + T) * ell * exprel(-(s - 1.0) * ell)

    def probability_of_purchase(self, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(at least one repeat purchase in the next ``t`` time units | frequency, recency, T) =
        ``P(alive) * `` :meth:`_purchase_chance` (1 - lifetimes'
        ``conditional_probability_of_n_purchases_up_to_time(0, ...)``)."""
        self._check_fitted()
        shape, (t, x, tx, T) = _flat(t, frequency, recency, T)
        check_nonnegative_time(t, "probability_of_purchase")
        return np.atleast_1d((self.p_alive(x, tx, T) * self._purchase_chance(t, x, T)).reshape(shape))

    def _purchase_chance(self, t: np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """P(a purchase in the next ``t`` | alive at T) for 1-D arrays: the posterior rate is
        Gamma(r + x, alpha + T), the death rate Gamma(s, beta + T) and the remaining lifetime
        Exp(mu), so P(none) = E[exp(-lambda min(tau, t))] and its complement is
        ``int_T^{T+t} (r + x) (alpha + y)^-(r+x+1) (beta + y)^-s dy / P(T)
        = (r + x) (H(x, T) - H(x, T + t)) / P(T)``. 0 at t = 0."""
        n = len(t)
        log_h = _row_logs(self.params_, np.concatenate([x, x]), np.concatenate([T, T + t])).log_h
        log_now = log_h[:n] - self._log_p_now(x, T)  # log((r + x) H(T) / P(T)) <= 0
        return np.clip(np.exp(log_now) * -np.expm1(log_h[n:] - log_h[:n]), 0.0, 1.0)

    def alive_count_moments(self, t: Any, frequency: Any, T: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`PurchaseModel.alive_count_moments`: alive at T after x repeat purchases, the
        rate is Gamma(r + x, alpha + T) and the dropout rate Gamma(s, beta + T) a posteriori,
        independent (:func:`pareto_alive_moments`)."""
        self._check_fitted()
        r, alpha, s, beta = (self.params_[k] for k in self.PARAM_NAMES)
        x, T = (np.asarray(v, dtype=np.float64).ravel() for v in np.broadcast_arrays(frequency, T))
        return pareto_alive_moments(float(t), r + x, alpha + T, s, beta + T)

    def expected_purchases_population(self, t: Any) -> np.ndarray:
        """Unconditional expected repeat purchases of a new customer within ``t`` time units of the
        first purchase (FHL 2005 note, eq. 27; lifetimes' ``expected_number_of_purchases_up_to_time``):
        ``r beta / alpha * l * exprel(-(s - 1) l)`` with ``l = log(1 + t / beta)``."""
        self._check_fitted()
        r, alpha, s, beta = (self.params_[k] for k in self.PARAM_NAMES)
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        check_nonnegative_time(t, "expected_purchases_population")
        ell = np.log1p(t / beta)
        return r * beta / alpha * ell * exprel(-(s - 1.0) * ell)

    # ---------------------------------------------------------------- fast exact forecast
    def conditional(self, frequency: Any, recency: Any, T: Any) -> ParetoNBDForecast:
        """As :meth:`PurchaseModel.conditional`: a :class:`ParetoNBDForecast` (same values, shared work)."""
        self._check_fitted()
        return ParetoNBDForecast(self, frequency, recency, T)


def check_nonnegative_time(t: np.ndarray, who: str) -> None:
    """InvalidParameterError unless every horizon ``t`` (time units) is >= 0."""
    if (np.asarray(t) < 0).any():
        raise InvalidParameterError(f"{who}: t must be >= 0")


class ParetoNBDForecast(BGNBDForecast):
    """Pareto/NBD predictions for fixed customers. As for BG/NBD, expected purchases factor as
    ``P(alive) * f(t, x, T)`` (:meth:`ParetoNBDModel._purchase_factor`), and so does P(a purchase)
    (:meth:`ParetoNBDModel._purchase_chance`): :class:`~rebuy.models.bgnbd.BGNBDForecast` computes
    P(alive) once per row and ``f`` once per distinct (x, T) pair and horizon; values equal the
    model's methods exactly.

    ``next_purchase_days`` is the generic bisection of :class:`~rebuy.models.base.ConditionalForecast`
    on :meth:`probability_of_purchase` (BG/NBD's closed form assumes a customer alive now cannot
    die before the next purchase, which a Pareto/NBD customer can)."""

    model: ParetoNBDModel

    next_purchase_days = ConditionalForecast.next_purchase_days

    def probability_of_purchase(self, t: Any, rows: Any = slice(None)) -> np.ndarray:
        """P(at least one purchase in the next ``t`` time units) of ``rows``: scalar ``t`` on the
        distinct (x, T) pairs, one ``t`` per selected row on the distinct (x, T, t) triples."""
        t = np.asarray(t, dtype=np.float64)
        check_nonnegative_time(t, "probability_of_purchase")
        if t.ndim == 0:
            chance = self.model._purchase_chance(np.full(len(self.px), float(t)), self.px, self.pT)[self.pinv[rows]]
        else:
            x, T = self.x[rows], self.T[rows]
            (ut, ux, uT), _, inverse = distinct_rows(t, x, T)
            chance = self.model._purchase_chance(ut, ux, uT)[inverse]
        return self.p_alive()[rows] * chance


LEGENDRE_NODES = 32
"""Gauss-Legendre nodes of the integrals over the remaining lifetime in :func:`pareto_alive_moments`."""


def pareto_alive_moments(
    t: float, R: np.ndarray, A: np.ndarray, s: float, B: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(P(N = 0), E[N], E[N (N - 1)])`` of purchases N in the next ``t`` time units of customers
    alive now with purchase rate lambda ~ Gamma(R, A) and dropout rate mu ~ Gamma(s, B) (shape,
    rate; independent given alive), so a remaining lifetime tau with P(tau > u) = (B / (B + u))^s.

    Given the window's active time m = min(t, tau), N ~ Poisson(lambda m): E[N] = E[lambda] E[m],
    E[N(N-1)] = E[lambda^2] E[m^2] and P(N = 0) = E[(A / (A + m))^R]; the expectations over tau
    are integrals over u in [0, t], taken by Gauss-Legendre in v = log(1 + u/B) / log(1 + t/B) (the
    survival curve's own scale, so short and long lifetimes are integrated equally well)."""
    t = float(t)
    n = len(R)
    if t == 0:
        return np.ones(n), np.zeros(n), np.zeros(n)
    v, w = np.polynomial.legendre.leggauss(LEGENDRE_NODES)
    v, w = (v + 1.0) / 2.0, w / 2.0  # on [0, 1]
    L = np.log1p(t / B)[:, None]
    b = B[:, None]
    u = b * np.expm1(v[None, :] * L)  # rows x nodes, in [0, t]
    jac = L * (b + u) * w[None, :]  # du = L (B + u) dv
    surv = np.exp(-s * np.log1p(u / b))
    e_m = (surv * jac).sum(axis=1)  # E[min(t, tau)] = int_0^t P(tau > u) du
    e_m2 = (2.0 * u * surv * jac).sum(axis=1)
    density = s / (b + u) * surv  # f_tau(u)
    none_at = np.exp(-R[:, None] * np.log1p(u / A[:, None]))
    p_none = np.exp(-s * np.log1p(t / B) - R * np.log1p(t / A)) + (density * none_at * jac).sum(axis=1)
    return p_none, R / A * e_m, R * (R + 1.0) / A**2 * e_m2
