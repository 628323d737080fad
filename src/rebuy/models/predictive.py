"""Predictive distribution of a customer's spend over a horizon: mean and interval (currency).

The spend S over the next ``t`` time units is the sum of the values z_1..z_N of the N purchase days
in that window. Both factors come from the fitted processes, through the public interface only:

- counts: ``purchase_model.alive_count_moments`` gives P(N = 0), E[N], E[N(N-1)] for a customer
  alive now (on the distinct (x, T) pairs); times P(alive) they are the unconditional moments (a
  dead customer buys nothing);
- values: ``spend_model.order_value_moments`` gives E[z], E[z^2], E[z_i z_j] (two purchases share
  the customer's unknown spend level, so they are correlated) and that level's tail index;
- so E[S] = E[N] E[z] and E[S^2] = E[N] E[z^2] + E[N(N-1)] E[z_i z_j] exactly;
- parameter uncertainty: Var over the fitted parameters of E[S] (delta method with the models'
  covariances, finite differences in log parameters) is added to the variance (law of total
  variance); a model without a covariance (built from parameters) adds none.

The distribution is a point mass P(N = 0) at 0 plus, for S given N >= 1, a scaled beta-prime law
with the spend level's power tail matched to those two moments (:func:`mixture_quantile`);
quantiles invert it exactly (``betaincinv``). The bounds are the law's 5% and
95% quantiles, so where P(N = 0) >= 5% the lower bound is 0 and the interval holds 95% of the law,
not 90% (:func:`nominal_coverage`: what a perfect model would cover). Simulating the processes gives the
same intervals within Monte Carlo error (``tests/test_models_predictive.py``) at a fraction of the
cost: every operation is one vector pass over the customers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import betaincinv, gammaincinv

from rebuy.models.base import PurchaseModel, SpendModel
from rebuy.models.inputs import distinct_rows

LEVELS = (0.05, 0.95)
"""Quantiles of the score table's spend interval (``spend_12m_p05``, ``spend_12m_p95``): 90%."""

LOG_STEP = 1e-4
"""Relative step of the finite differences in log parameters (delta method)."""


class SpendForecast(NamedTuple):
    """Per customer: expected spend, the interval's bounds (currency) and P(no purchase)."""

    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    p_none: np.ndarray


def _count_moments(
    model: PurchaseModel, t: float, x: np.ndarray, T: np.ndarray, p_alive: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unconditional (P(N = 0), E[N], E[N(N-1)]) per row; the alive moments once per (x, T) pair."""
    (px, pT), _, inv = distinct_rows(x, T)
    p0, m1, m2 = (v[inv] for v in model.alive_count_moments(t, px, pT))
    return 1.0 - p_alive * (1.0 - p0), p_alive * m1, p_alive * m2


def _distinct(x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    rows, _, inv = distinct_rows(x, tx, T)
    return rows, inv


def _perturbed(model: PurchaseModel | SpendModel, name: str, step: float) -> PurchaseModel | SpendModel:
    """The model with parameter ``name`` multiplied by exp(step) (same time unit / empirical mean)."""
    params = {**model.params_, name: model.params_[name] * float(np.exp(step))}
    if isinstance(model, PurchaseModel):
        return type(model).from_params(params, time_unit=model.time_unit_)
    return type(model).from_params(params, empirical_mean=getattr(model, "empirical_mean_", None))


def _log_covariance(model: PurchaseModel | SpendModel) -> np.ndarray | None:
    """Covariance of the log parameters, or None when the model has none (NaN)."""
    cov = model.covariance_.to_numpy()
    if not np.isfinite(cov).all():
        return None
    p = np.array([model.params_[k] for k in model.PARAM_NAMES])
    return cov / np.outer(p, p)


def parameter_variance(
    purchase_model: PurchaseModel,
    spend_model: SpendModel,
    t: float,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    distinct: tuple[list[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Var over the fitted parameters of E[S | parameters] per row (currency^2), by the delta
    method: the gradient of E[S] = E[N] E[z] in log parameters (forward differences) against each
    model's covariance (the two models are fitted separately, so they do not covary). E[N] is
    computed on the distinct (frequency, recency, T) rows (``distinct`` = (those rows, the inverse
    index), when the caller has them)."""
    x, tx, T, m = rows
    (ux, utx, uT), inv = distinct if distinct is not None else _distinct(x, tx, T)
    base_n = purchase_model.conditional(ux, utx, uT).expected_purchases(t)
    base_z = spend_model.expected_order_value(x, m)
    total = np.zeros(len(x))
    cov = _log_covariance(purchase_model)
    if cov is not None:
        grads = [(_perturbed(purchase_model, name, LOG_STEP).conditional(ux, utx, uT).expected_purchases(t) - base_n)
                 / LOG_STEP for name in purchase_model.PARAM_NAMES]
        g = np.vstack(grads)  # params x distinct rows
        total += np.einsum("ir,ij,jr->r", g, cov, g)[inv] * base_z**2
    cov = _log_covariance(spend_model)
    if cov is not None and not getattr(spend_model, "q_warning_", None):  # q <= 1: observed means, no parameter path
        grads = [(_perturbed(spend_model, name, LOG_STEP).expected_order_value(x, m) - base_z) / LOG_STEP
                 for name in spend_model.PARAM_NAMES]
        g = np.vstack(grads)
        total += np.einsum("ir,ij,jr->r", g, cov, g) * base_n[inv] ** 2
    return total


QUANTILE_GRID = 200.0
"""Steps per unit of log(spread), log(tail shape - 2) and logit(level) on which quantiles are computed
once and shared (1/200: the arguments move by at most 0.25%, the bounds by less than that); scipy's
inverse incomplete beta costs ~5 us a call, so a million customers share a few ten thousand calls."""

_OFFSET = 1 << 20
"""Keeps each rounded argument non-negative in its 21-bit field of the packed int64 key."""


def _relative_quantile(ratio: np.ndarray, shape: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantile ``q`` of the positive part divided by its mean, for spread ``ratio`` = var / mean^2
    and tail ``shape`` (see :func:`mixture_quantile`); exact for the given arguments."""
    with np.errstate(all="ignore"):
        k = (shape - 1.0) / (ratio * (shape - 2.0) - 1.0)
    beta_prime = np.isfinite(shape) & (shape > 2.0) & np.isfinite(k) & (k > 0)
    out = gammaincinv(1.0 / ratio, q) * ratio  # gamma: shape 1/ratio, scale mean * ratio
    if beta_prime.any():
        kb, ab = k[beta_prime], shape[beta_prime]
        y = betaincinv(kb, ab, q[beta_prime])
        out[beta_prime] = (ab - 1.0) / kb * y / (1.0 - y)
    return out


def _on_grid(ratio: np.ndarray, shape: np.ndarray, q: np.ndarray) -> np.ndarray:
    """:func:`_relative_quantile` on arguments rounded to :data:`QUANTILE_GRID`, once per distinct
    rounded triple (packed into one int64 key and factorised)."""
    import pandas as pd

    finite = np.isfinite(shape)
    with np.errstate(all="ignore"):
        fields = [np.log(ratio), np.log(np.where(finite, shape - 2.0, 1.0)), np.log(q / (1.0 - q))]
    steps = [np.clip(np.round(f * QUANTILE_GRID), 1 - _OFFSET, _OFFSET - 2).astype(np.int64) for f in fields]
    steps[1] = np.where(finite, steps[1], _OFFSET - 1)  # the gamma limit
    key = ((steps[0] + _OFFSET) << 42) | ((steps[1] + _OFFSET) << 21) | (steps[2] + _OFFSET)
    inverse, uniq = pd.factorize(key)
    uniq = np.asarray(uniq, dtype=np.int64)
    r, a, qq = (((uniq >> shift) & ((1 << 21) - 1)) - _OFFSET for shift in (42, 21, 0))
    with np.errstate(over="ignore"):
        shape_u = np.where(a == _OFFSET - 1, np.inf, 2.0 + np.exp(np.minimum(a, _OFFSET - 2) / QUANTILE_GRID))
    return _relative_quantile(np.exp(r / QUANTILE_GRID), shape_u, 1.0 / (1.0 + np.exp(-qq / QUANTILE_GRID)))[inverse]


def mixture_quantile(level: float, p_none: np.ndarray, mean: np.ndarray, second: np.ndarray,
                     tail_shape: np.ndarray | None = None) -> np.ndarray:
    """The ``level`` quantile of a law with mass ``p_none`` at 0 and, given > 0, a positive law with
    the remaining first and second moments (``mean`` = E[S], ``second`` = E[S^2] of the whole law).

    The positive part is a scaled beta-prime law c BetaPrime(k, A) with A = ``tail_shape`` (the
    power tail an unknown spend level gives the total: the spend model's posterior shape) and k, c
    matched to the two moments; where no such k exists (spread too small for that tail) or
    ``tail_shape`` is None / inf, a gamma law with the two moments (the A -> inf limit). Matching a
    gamma alone put the 95% bound ~20% too high on heavy-tailed spend (the variance sits in the far
    tail); the beta-prime keeps the tail where it is. The quantile scales with the mean, so it is
    computed relative to it on a fine grid of the other arguments (:data:`QUANTILE_GRID`)."""
    out = np.zeros(len(mean))
    positive = 1.0 - p_none
    live = (level > p_none) & (positive > 1e-12) & (mean > 0)
    if not live.any():
        return out
    pos = positive[live]
    m_pos = mean[live] / pos
    ratio = np.maximum(second[live] / pos / m_pos**2 - 1.0, 1e-12)  # variance / mean^2 given S > 0
    q = np.clip((level - p_none[live]) / pos, 1e-12, 1.0 - 1e-12)
    shape = np.full(len(m_pos), np.inf) if tail_shape is None else np.asarray(tail_shape, dtype=np.float64)[live]
    out[live] = m_pos * _on_grid(ratio, shape, q)
    return out


def nominal_coverage(p_none: np.ndarray, levels: tuple[float, float] = LEVELS) -> np.ndarray:
    """Probability the law puts inside its own [lower, upper] quantiles, per customer: the levels'
    difference (0.90) for a continuous law, more when the mass at 0 reaches the lower level (the
    lower bound is then 0 and holds the mass: 0.95, and P(N = 0) when that is above the upper
    level). The coverage a perfect model would show on held-out data."""
    lo, hi = levels
    return np.where(p_none >= hi, p_none, np.where(p_none >= lo, hi, hi - lo))


def spend_forecast(
    purchase_model: PurchaseModel,
    spend_model: SpendModel,
    t: float,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    p_alive: np.ndarray,
    levels: tuple[float, float] = LEVELS,
    distinct: tuple[list[np.ndarray], np.ndarray] | None = None,
) -> SpendForecast:
    """Expected spend over the next ``t`` time units and its ``levels`` predictive interval
    (currency) for customers ``rows = (frequency, recency, T, monetary_value)`` (1-D arrays) with
    P(alive) ``p_alive`` (see the module docstring); ``distinct`` as in :func:`parameter_variance`."""
    x, tx, T, m = rows
    p_none, mean_n, fact2_n = _count_moments(purchase_model, t, x, T, p_alive)
    values = spend_model.order_value_moments(x, m)
    mean = mean_n * values.mean
    second = mean_n * values.second + fact2_n * values.shared + parameter_variance(
        purchase_model, spend_model, t, rows, distinct)
    lower, upper = (mixture_quantile(q, p_none, mean, second, values.tail_shape) for q in levels)
    return SpendForecast(mean, lower, upper, p_none)
