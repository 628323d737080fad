"""Difference-of-means estimators: Welch intervals, CUPED adjustment, stratification, MDE, verdicts.

- :func:`difference` is the plain two-sample estimate ``mean(treatment) - mean(control)`` with the
  Welch (unequal-variance) standard error ``sqrt(s_t^2 / n_t + s_c^2 / n_c)``; intervals are normal
  95% intervals ``estimate ± 1.96 SE``.
- :func:`cuped_adjusted` is CUPED / regression adjustment (Deng et al. 2013): ``y - (X - mean X) theta``
  with one ``theta`` per outcome, fitted by OLS of ``y`` on an intercept, the treatment indicator
  and the centred covariates pooled over both groups. Under randomisation the covariates (known
  before the decision) are balanced in expectation, so the difference of adjusted means estimates
  the same effect (bias O(1/n) from fitting theta), with a smaller variance the more the covariates
  explain the outcome.
- :func:`stratified` combines per-stratum estimates with fixed weights (``sum w_s est_s``,
  ``SE = sqrt(sum w_s^2 SE_s^2)``); used across offer types, whose control shares differ.
- :func:`mde` is the minimum detectable effect at 80% power, two-sided 5% test: ``(1.96 + 0.84) SE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054
"""Two-sided 95% normal quantile."""

Z80 = 0.8416212335729143
"""One-sided 80% power normal quantile."""

WORKS, HARMFUL, NO_EFFECT = "works", "harmful", "no effect shown"
"""Verdicts: the 95% interval lies above 0, below 0, or contains 0 (or there is none)."""


@dataclass(frozen=True)
class Difference:
    """A treatment − control difference of means, in the outcome's unit."""

    estimate: float
    se: float
    mean_treatment: float
    mean_control: float

    @property
    def ci95(self) -> tuple[float, float]:
        """Normal 95% interval ``estimate ± 1.96 SE``."""
        return self.estimate - Z95 * self.se, self.estimate + Z95 * self.se


NAN_DIFFERENCE = Difference(float("nan"), float("nan"), float("nan"), float("nan"))


def difference(values: np.ndarray, treated: np.ndarray) -> Difference:
    """Welch difference of means of ``values`` between ``treated`` and the rest (NaN when a group has < 2)."""
    t, c = values[treated], values[~treated]
    if len(t) < 2 or len(c) < 2:
        return Difference(float("nan"), float("nan"), _mean(t), _mean(c))
    se = float(np.sqrt(t.var(ddof=1) / len(t) + c.var(ddof=1) / len(c)))
    return Difference(float(t.mean() - c.mean()), se, float(t.mean()), float(c.mean()))


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def cuped_adjusted(outcomes: np.ndarray, treated: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """CUPED-adjusted outcomes (n x m array in, same shape out) with pooled OLS thetas (module docstring).

    ``covariates`` is n x k (NaN filled with the column mean first); constant columns are harmless
    (least squares with a pseudo-inverse). Returns ``outcomes`` unchanged when n <= k + 2.
    """
    n, k = covariates.shape
    if n <= k + 2 or k == 0:
        return outcomes.copy()
    x = _filled(covariates)
    x = x - x.mean(axis=0)
    scale = x.std(axis=0)
    x = x / np.where(scale > 0, scale, 1.0)
    design = np.column_stack([np.ones(n), treated.astype(np.float64), x])
    coef, *_ = np.linalg.lstsq(design, outcomes, rcond=None)
    return outcomes - x @ coef[2:]


def _filled(covariates: np.ndarray) -> np.ndarray:
    """Covariates with non-finite values replaced by their column's mean of finite values (0 if none)."""
    x = np.array(covariates, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        good = (~bad).sum(axis=0)
        col_mean = np.where(bad, 0.0, x).sum(axis=0) / np.maximum(good, 1)
        x[bad] = np.take(col_mean, np.nonzero(bad)[1])
    return x


def stratified(parts: Sequence[Difference], weights: Sequence[float]) -> Difference:
    """Weighted combination of per-stratum differences; weights are renormalised over the usable
    strata (finite estimate and SE). NaN when none is usable."""
    w = np.asarray(weights, dtype=np.float64)
    est = np.array([p.estimate for p in parts])
    se = np.array([p.se for p in parts])
    usable = np.isfinite(est) & np.isfinite(se) & (w > 0)
    if not usable.any():
        return NAN_DIFFERENCE
    w = w[usable] / w[usable].sum()
    mean_t = np.array([p.mean_treatment for p in parts])[usable]
    mean_c = np.array([p.mean_control for p in parts])[usable]
    return Difference(float(w @ est[usable]), float(np.sqrt(w**2 @ se[usable] ** 2)),
                      float(w @ mean_t), float(w @ mean_c))


def mde(se: float) -> float:
    """Minimum detectable effect at 80% power, two-sided 5% level, for a standard error ``se``."""
    return (Z95 + Z80) * se


def verdict(ci: tuple[float, float]) -> str:
    """"works" when the interval is above 0, "harmful" when below, else "no effect shown"."""
    lo, hi = ci
    if np.isfinite(lo) and lo > 0:
        return WORKS
    if np.isfinite(hi) and hi < 0:
        return HARMFUL
    return NO_EFFECT


def p_value(estimate: float, se: float) -> float:
    """Two-sided normal p-value of ``estimate`` against 0 (NaN without a finite SE)."""
    from math import erfc, sqrt

    if not (np.isfinite(estimate) and np.isfinite(se) and se > 0):
        return float("nan")
    return erfc(abs(estimate / se) / sqrt(2.0))


def holm_significant(p_values: Sequence[float], alpha: float = 0.05) -> list[bool | None]:
    """Holm-Bonferroni over the finite ``p_values``: True where the family-wise error rate of
    ``alpha`` still rejects "no effect", None for a NaN p-value (no test)."""
    finite = [(p, i) for i, p in enumerate(p_values) if np.isfinite(p)]
    out: list[bool | None] = [None] * len(p_values)
    rejecting = True
    for rank, (p, i) in enumerate(sorted(finite)):
        rejecting = rejecting and p <= alpha / (len(finite) - rank)
        out[i] = rejecting
    return out
