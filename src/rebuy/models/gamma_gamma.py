"""Gamma-Gamma spend model (Fader, Hardie & Lee 2005b): likelihood, objective, independence check, model.

Layout: :func:`gamma_gamma_log_likelihood` (per customer), :class:`GammaGammaObjective`
(lifetimes' ``GammaGammaFitter._negative_log_likelihood`` with its analytic gradient),
:func:`frequency_spend_correlation` (the model's independence assumption, checked before fitting)
and :class:`GammaGammaModel`.

Invariants: fitted on the repeat customers only (frequency > 0 and monetary_value > 0); parameters
``p, q, v`` with ``v`` in currency; the objective works on log parameters. When ``q <= 1`` the
population mean spend ``v p / (q - 1)`` is undefined: ``q_warning_`` says so and expected order
values fall back to observed means (never NaN).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import digamma, gammaln

from rebuy.errors import ModelFitError
from rebuy.models.base import OrderValueMoments, SpendModel
from rebuy.models.inputs import (
    SPEND_COLUMNS,
    check_sample_weight,
    row_arrays,
    summary_arrays,
    weighted_distinct_rows,
)
from rebuy.models.optimize import pairwise_dot

logger = logging.getLogger(__name__)


def gamma_gamma_log_likelihood(params: dict[str, float], frequency: Any, monetary_value: Any) -> np.ndarray:
    """Per-customer Gamma-Gamma log-likelihood of the mean spend ``monetary_value`` (currency) over
    ``frequency`` repeat purchases (Fader, Hardie & Lee 2005b; lifetimes' form)."""
    p, q, v = (params[k] for k in ("p", "q", "v"))
    x, m = row_arrays(frequency, monetary_value)
    return (
        gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v)
        + (p * x - 1) * np.log(m) + p * x * np.log(x) - (p * x + q) * np.log(x * m + v)
    )


class GammaGammaObjective:
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
        self.c_1 = pairwise_dot(w, np.log(m))  # sum w log m

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        p, q, v = params = np.exp(theta)
        ux, wx = self.ux, self.wx
        px = p * ux
        s_x = wx @ (gammaln(px + q) - gammaln(px) - gammaln(q))
        L1 = np.log1p(v / self.xm)  # log((x m + v) / (x m))
        L2 = np.log1p(self.xm / v)  # log((x m + v) / v)
        inv = 1.0 / (self.xm + v)
        sxL1, sL2 = pairwise_dot(self.wxr, L1), pairwise_dot(self.w, L2)
        sxI, sxmI = pairwise_dot(self.wxr, inv), pairwise_dot(self.w, self.xm * inv)
        ll = s_x - self.c_1 - p * sxL1 - q * sL2
        g_p = (wx * ux) @ (digamma(px + q) - digamma(px)) - sxL1
        g_q = wx @ (digamma(px + q) - digamma(q)) - sL2
        g_v = q / v * sxmI - p * sxI
        f = -ll / self.W + self.penalizer * float(params @ params)
        g = (-np.array([g_p, g_q, g_v]) / self.W + 2 * self.penalizer * params) * params
        return float(f), g


def frequency_spend_correlation(frequency: np.ndarray, monetary_value: np.ndarray, weights: np.ndarray | None) -> float:
    """Weighted Pearson correlation of frequency and monetary value (the Gamma-Gamma model assumes
    spend per purchase independent of frequency); NaN when either is constant."""
    if not (np.std(frequency) > 0 and np.std(monetary_value) > 0):
        return float("nan")
    cov = np.cov(frequency, monetary_value, aweights=weights)
    return float(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]))


class GammaGammaModel(SpendModel):
    """Gamma-Gamma spend model (Fader, Hardie & Lee 2005b), lifetimes' ``GammaGammaFitter`` objective,
    fitted on repeat customers.

    Parameters
    ----------
    penalizer, retry_penalizer, solver : as for :class:`~rebuy.models.BGNBDModel` (lifetimes'
        ``GammaGammaFitter``).
    independence_threshold : warn when |Pearson corr(frequency, monetary_value)| of the repeat
        customers exceeds this (the model assumes spend per purchase is independent of frequency).

    Attributes (after ``fit``)
    ----------
    params_ : {"p", "q", "v"}.  independence_corr_ : the Pearson correlation (0 when undefined).
    independence_ok_ : |corr| <= threshold.  q_warning_ : message when q <= 1 (the population mean
    spend v*p/(q-1) is then undefined), else None.  population_mean_ : currency, or the weighted
    mean of the repeat customers' monetary_value when q <= 1.  empirical_mean_ : that weighted mean.
    standard_errors_, covariance_, summary, log_likelihood_, penalizer_, converged_, n_customers_,
    n_distinct_rows_, warnings_ : as for BG/NBD.
    """

    PARAM_NAMES = ("p", "q", "v")
    SHAPE_PARAMS = ("p", "q")
    DISPLAY_NAME = "Gamma-Gamma"

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

    def fit(self, summary: pd.DataFrame, sample_weight: Any = None) -> GammaGammaModel:
        """Fit on the repeat customers (frequency > 0 and monetary_value > 0) of an RFM summary.

        ``sample_weight``: customers each row stands for (None counts every row once).
        """
        who = "GammaGammaModel.fit"
        self._check_hyperparameters(who)
        x, m = summary_arrays(summary, SPEND_COLUMNS, who)
        if (x < 0).any():
            raise ModelFitError(f"{who}: column 'frequency' has negative values")
        if (m < 0).any():
            raise ModelFitError(f"{who}: column 'monetary_value' has negative values")
        w = check_sample_weight(sample_weight, len(x), who)
        keep = (x > 0) & (m > 0)
        if keep.sum() < 2:
            raise ModelFitError(
                f"{who}: needs at least 2 repeat customers with positive monetary_value, found {int(keep.sum())}"
            )
        x, m = x[keep], m[keep]
        w = w[keep] if w is not None else None
        notes = self._check_independence(x, m, w)
        cols, counts = weighted_distinct_rows((x, m), w)
        outcome = self._fit_distinct(cols, counts)
        self.log_likelihood_ = self._fitted_log_likelihood(outcome.solution, cols, counts)
        self.empirical_mean_ = float(np.average(m, weights=w))
        self.warnings_ = notes + self.warnings_
        self._set_population_mean()
        return self

    def _check_independence(self, x: np.ndarray, m: np.ndarray, w: np.ndarray | None) -> list[str]:
        """Set ``independence_corr_`` / ``independence_ok_``; return the warnings (also logged)."""
        corr = frequency_spend_correlation(x, m, w)
        notes: list[str] = []
        if np.isnan(corr):
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
        return notes

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
        """A model with given parameters (e.g. published ones, or read from a bundle manifest);
        ``empirical_mean`` (currency) is required when q <= 1."""
        m = super().from_params(params)
        if m.params_["q"] <= 1 and empirical_mean is None:
            raise ModelFitError("GammaGammaModel.from_params: q <= 1 needs empirical_mean (population mean undefined)")
        m.empirical_mean_ = float(empirical_mean) if empirical_mean is not None else float("nan")
        m.independence_corr_ = 0.0
        m._set_population_mean()
        return m

    # ---------------------------------------------------------------- objective hooks
    def _objective(
        self, cols: list[np.ndarray], weights: np.ndarray, penalizer: float, mask: Any
    ) -> GammaGammaObjective:
        x, m = cols
        return GammaGammaObjective(x[mask], m[mask], weights, penalizer)

    def _from_theta(self, theta: np.ndarray, cols: list[np.ndarray]) -> dict[str, float]:
        return dict(zip(self.PARAM_NAMES, np.exp(theta), strict=True))

    def _to_theta(self, params: dict[str, float], cols: list[np.ndarray]) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.log([params[k] for k in self.PARAM_NAMES])

    def _lifetimes_fitter(self, penalizer: float) -> Any:
        from lifetimes import GammaGammaFitter

        return GammaGammaFitter(penalizer_coef=penalizer)

    # ---------------------------------------------------------------- predictions
    def log_likelihood(self, frequency: Any, monetary_value: Any) -> np.ndarray:
        """Per-customer log-likelihood at ``params_`` (:func:`gamma_gamma_log_likelihood`)."""
        self._check_fitted()
        return gamma_gamma_log_likelihood(self.params_, frequency, monetary_value)

    def order_value_moments(self, frequency: Any, monetary_value: Any) -> OrderValueMoments:
        """Moments of the values z of a customer's future purchase days (currency), integrating the
        customer's spend level a posteriori: z ~ Gamma(p, nu) per purchase and nu ~ Gamma(p x + q,
        v + x m) given x repeat days of mean value m, so two purchases share nu (E[z_i z_j] >
        E[z]^2) and the spend has a power tail of index ``tail_shape`` = p x + q. E[z] is
        :meth:`expected_order_value`.

        The second moments need p x + q > 2; below (heavy-tailed spend, few purchases) they use
        the spread of p x + q = 2.5 around the (finite) mean: a finite width instead of an infinite
        one; the interval test on held-out data says whether it covers. With q <= 1 (``q_warning_``)
        the observed means stand in for E[z], the gamma shape p alone sets the spread (E[z^2] =
        E[z]^2 (1 + 1/p)) and there is no power tail (``tail_shape`` inf)."""
        x, m = row_arrays(frequency, monetary_value)
        mean = self.expected_order_value(x, m)
        p, q, _ = (self.params_[k] for k in self.PARAM_NAMES)
        if q <= 1.0:
            return OrderValueMoments(mean, mean**2 * (1.0 + 1.0 / p), mean**2, np.full(len(mean), np.inf))
        shape = np.maximum(p * x + q, 2.5)
        shared = mean**2 * (shape - 1.0) / (shape - 2.0)  # p^2 E[1/nu^2] = E[z]^2 E[1/nu^2] / E[1/nu]^2
        return OrderValueMoments(mean, shared * (1.0 + 1.0 / p), shared, shape)

    def expected_order_value(self, frequency: Any, monetary_value: Any) -> np.ndarray:
        """E[spend per purchase day | x, m] (FHL 2005b eq. 5), currency.

        One-time buyers (x = 0) get the population mean. When q <= 1 (``q_warning_``) the population
        mean is undefined: repeat customers get their observed mean and one-time buyers the repeat
        customers' mean.
        """
        self._check_fitted()
        x, m = row_arrays(frequency, monetary_value)
        p, q, _ = (self.params_[k] for k in self.PARAM_NAMES)
        if q <= 1.0:
            out = np.where(x > 0, m, self.population_mean_)
        else:
            w = p * x / (p * x + q - 1)
            out = (1 - w) * self.population_mean_ + w * m
        return np.atleast_1d(out)
