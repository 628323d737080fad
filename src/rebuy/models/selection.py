"""Choosing the purchase model and calibrating its 90-day purchase probability, on one holdout.

Input: calibration/holdout splits *inside* the training window (``rebuy.features.
calibration_holdout_split``), one per :data:`HOLDOUT_DAYS`-day period of the last year before the
training as-of day, as far as the history allows (each needs that much history before its cut), on
a random sample of at most ``selection.max_customers`` customers (the pipeline draws it): each
customer's RFM summary up to the cut and whether they bought in the 90 days after.

- :func:`select_purchase_model` fits each candidate on each window's calibration part (each
  window's fit started from the previous window's optimum where both are well identified) and scores
  its predicted P(a purchase in the next 90 days) against what happened, pooled over the windows:
  mean log loss (the metric that chooses: a proper scoring rule, so it rewards ranking and
  calibration together), AUC of that probability and of P(alive) for buying again, and the mean
  absolute error over deciles. Under ``auto`` the lowest log loss wins; candidates within
  ``selection.tie_tolerance`` of it are told apart by the AUC of P(alive) (BG/NBD and MBG/NBD
  often fit purchases equally well while BG/NBD's P(alive) is 1 for every one-time buyer). Under
  ``auto`` each model of ``selection.ridge_candidates`` (MBG/NBD) is also a candidate with
  ``selection.ridge_penalizer`` (key ``<model>+ridge``): the purchases often cannot tell a slow
  dropout of everyone from a share of customers who never come back after their first purchase
  (the log loss is flat along that ridge of (a, b)), while P(alive), which nobody observes,
  differs greatly; a small L2 penalty picks the smallest parameters on the ridge, and the tie rule
  keeps it only when its purchases are predicted as well. A named model is scored the same way,
  with its own penalizer only (the figures are reported either way).
- :class:`ProbabilityCalibrator` is the logistic map (Platt scaling) from the chosen candidate's
  raw probability to the observed share, learned on the pooled windows (a year of them averages
  the seasons instead of imprinting the last quarter's on the next: calibrating on the last
  quarter alone was worse than no calibration on every Online Retail II split tried). With
  ``selection.seasonal_calibration`` (off by default; see the README for Online Retail II) and a
  window whose holdout began about a year before the as-of day (:func:`same_season_window`), the
  slope is still learned on every window but each window has its own intercept, and the
  calibrator keeps that window's: the next 90 days are calibrated to the same season a year
  earlier, not to the average season (the models have no season; a shop's 90-day purchase share
  does). ``p_purchase_90d`` applies it to the model fitted on all the data. It is two floats (no
  scikit-learn object is stored).

Invariants: every figure in :attr:`Selection.report` is JSON-able (floats rounded, NaN -> None);
a candidate whose fit fails is reported with its error and never chosen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rebuy.dates import unit_days
from rebuy.errors import ModelFitError
from rebuy.metrics import auc, decile_table, json_float, log_loss
from rebuy.models.base import PurchaseModel

if TYPE_CHECKING:
    from rebuy.config import Config

logger = logging.getLogger(__name__)

HOLDOUT_DAYS = 90
"""Days at the end of the training window held out for the choice (the horizon of p_purchase_90d)."""

METRIC = "log_loss"
"""The figure that chooses the model (lower is better)."""


class ProbabilityCalibrator:
    """Monotone map from a model's probability to the observed share: logistic in the model's
    log-odds (Platt scaling), ``p' = expit(intercept_ + slope_ * logit(p))``.

    Two parameters learned by maximum likelihood on the holdout windows: smooth, never exactly 0 or
    1 (an isotonic step map gave 0 to a tenth of the customers, of whom 9% then bought), and it
    keeps the model's ranking when ``slope_ > 0``. Probabilities are clipped to [1e-6, 1 - 1e-6]
    before the log-odds."""

    def fit(self, predicted: np.ndarray, observed: np.ndarray, groups: np.ndarray | None = None,
            season: int | None = None) -> ProbabilityCalibrator:
        """Learn the map on ``predicted`` probabilities and ``observed`` purchases (booleans).
        With ``groups`` (a window index per row) and ``season`` (the index of the window a year
        before the scored period), one slope for all and an intercept per window; the map keeps
        ``season``'s intercept (``group_intercepts_`` holds them all)."""
        z = _log_odds(predicted)
        y = np.asarray(observed, dtype=bool)
        self.season_, self.group_intercepts_ = None, None
        if y.all() or not y.any():
            self.intercept_, self.slope_ = (float(np.log((y.mean() + 1e-6) / (1 - y.mean() + 1e-6))), 0.0)
        elif groups is None or season is None:
            beta = _logistic_fit(np.column_stack([np.ones(len(z)), z]), y.astype(np.float64))
            self.intercept_, self.slope_ = float(beta[0]), float(beta[1])
        else:
            levels = np.unique(groups)
            X = np.column_stack([*(groups == g for g in levels), z]).astype(np.float64)
            beta = _logistic_fit(X, y.astype(np.float64))
            self.group_intercepts_ = {int(g): float(b) for g, b in zip(levels, beta[:-1], strict=True)}
            self.season_, self.slope_ = int(season), float(beta[-1])
            self.intercept_ = self.group_intercepts_[self.season_]
        self.n_ = int(len(y))
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``p`` (in (0, 1))."""
        from scipy.special import expit

        return expit(self.intercept_ + self.slope_ * _log_odds(p))

    def report(self) -> dict[str, Any]:
        out = {"method": "platt", "intercept": json_float(self.intercept_), "slope": json_float(self.slope_),
               "customers": self.n_}
        if getattr(self, "season_", None) is not None:
            out.update(season_window=self.season_,
                       window_intercepts=[json_float(b) for b in self.group_intercepts_.values()])
        return out


def _logistic_fit(X: np.ndarray, y: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Maximum-likelihood coefficients of P(y) = expit(X @ beta) by Newton's method (the
    log-likelihood is concave; a step is halved while it does not improve it)."""
    from scipy.special import expit

    beta = np.zeros(X.shape[1])

    def loglik(b: np.ndarray) -> float:
        eta = X @ b
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    current = loglik(beta)
    for _ in range(iterations):
        p = expit(X @ beta)
        grad = X.T @ (y - p)
        hess = X.T @ (X * (p * (1 - p))[:, None]) + 1e-12 * np.eye(X.shape[1])
        step = np.linalg.solve(hess, grad)
        for _ in range(30):
            trial = loglik(beta + step)
            if trial >= current:
                break
            step /= 2
        beta, previous, current = beta + step, current, max(trial, current)
        if abs(current - previous) < 1e-10 * max(1.0, abs(current)):
            break
    return beta


def _log_odds(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(q) - np.log1p(-q)


@dataclass
class Selection:
    """The outcome of :func:`select_purchase_model`: the model's config name, the penalizer to fit
    it with (None: its config section's), the calibrator (None when there was no usable holdout)
    and the JSON-able report (every candidate's figures)."""

    name: str
    calibrator: ProbabilityCalibrator | None
    report: dict[str, Any] = field(default_factory=dict)
    penalizer: float | None = None


@dataclass(frozen=True)
class Candidate:
    """One model the selection fits: its report key, the model's config name and the penalizer
    (None: the config section's own)."""

    key: str
    model: str
    penalizer: float | None = None


RIDGE_SUFFIX = "+ridge"
"""Report key suffix of a candidate fitted with ``selection.ridge_penalizer``."""


def candidates(config: Config) -> list[Candidate]:
    """What ``config`` compares: under ``auto`` every ``selection.candidates`` model with its own
    penalizer and, when ``selection.ridge_penalizer`` > 0, those also in
    ``selection.ridge_candidates`` again with that one; else the named model alone."""
    if config.purchase_model != "auto":
        return [Candidate(config.purchase_model, config.purchase_model)]
    sel = config.selection
    out = [Candidate(name, name) for name in sel.candidates]
    if sel.ridge_penalizer > 0:
        out += [Candidate(name + RIDGE_SUFFIX, name, sel.ridge_penalizer)
                for name in sel.candidates if name in sel.ridge_candidates]
    return out


def model_of_key(key: str) -> str:
    """The model's config name of a candidate's report key (\"mbgnbd+ridge\" -> \"mbgnbd\")."""
    return str(key).removesuffix(RIDGE_SUFFIX)


def _score_candidate(model_fits: list[PurchaseModel], windows: list[pd.DataFrame]) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(figures, raw P(purchase in the holdout), bought) of one candidate over every window
    (``model_fits[k]`` fitted on ``windows[k]``), pooled."""
    raw, alive, bought = [], [], []
    for model, split in zip(model_fits, windows, strict=True):
        forecast = model.conditional(*(split[c].to_numpy() for c in ("frequency", "recency", "T")))
        raw.append(forecast.probability_of_purchase(HOLDOUT_DAYS / unit_days(model.time_unit_)))
        alive.append(forecast.p_alive())  # computed once for both
        bought.append((split["frequency_holdout"] > 0).to_numpy())
    p_buy, p_alive, y = np.concatenate(raw), np.concatenate(alive), np.concatenate(bought)
    figures = {
        METRIC: json_float(log_loss(p_buy, y)),
        "auc_p_purchase": json_float(auc(p_buy, y), 4),
        "auc_p_alive": json_float(auc(p_alive, y), 4),
        "mean_decile_error": json_float(decile_table(p_buy, y)["abs_error"].mean(), 4),
        "params_last_window": {k: json_float(v) for k, v in model_fits[0].params_.items()},
    }
    return figures, p_buy, y


def _choose(candidates: dict[str, dict[str, Any]], tolerance: float) -> str:
    """The lowest log loss; among candidates within ``tolerance`` (nats) of it, the one whose
    P(alive) ranks the holdout buyers best (the holdout cannot tell them apart on purchases, and the
    score table's churn rules read P(alive))."""
    scored = {n: c for n, c in candidates.items() if "error" not in c}
    best = min(c[METRIC] for c in scored.values())
    close = [n for n, c in scored.items() if c[METRIC] <= best + tolerance]
    return max(close, key=lambda n: (scored[n]["auc_p_alive"] or 0.0, -scored[n][METRIC]))


def same_season_window(windows: list[pd.DataFrame]) -> int | None:
    """Index of the window whose holdout began within 45 days of a year before the as-of day (the
    first window's cut plus :data:`HOLDOUT_DAYS`), else None."""
    if not windows:
        return None
    as_of = pd.Timestamp(windows[0].attrs["as_of"]) + pd.Timedelta(days=HOLDOUT_DAYS)
    gaps = [abs((as_of - pd.Timedelta(days=365) - pd.Timestamp(w.attrs["as_of"])).days) for w in windows]
    best = int(np.argmin(gaps))
    return best if gaps[best] <= 45 else None


def _fit_windows(fit: Any, spec: Candidate, windows: list[pd.DataFrame]) -> list[PurchaseModel]:
    """``spec`` fitted on each window's calibration part, each fit started from the previous
    window's optimum (the windows are 90 days apart and share most customers: a few BFGS iterations
    instead of ~25, to the same tolerance; where the optima are not well identified the fits start
    cold, see ``PurchaseModel.fit``)."""
    fits: list[PurchaseModel] = []
    for w in windows:
        fits.append(fit(spec.model, w, spec.penalizer, fits[-1] if fits else None))
    return fits


def _windows_report(windows: list[pd.DataFrame]) -> list[dict[str, Any]]:
    return [{"calibration_end": pd.Timestamp(w.attrs["as_of"]).strftime("%Y-%m-%d"), "customers": int(len(w)),
             "bought_share": json_float((w["frequency_holdout"] > 0).mean(), 4)} for w in windows]


def select_purchase_model(windows: list[pd.DataFrame], config: Config, fit: Any) -> Selection:
    """Score the candidates on the holdout ``windows`` and return the choice (see the module
    docstring).

    ``windows`` are calibration/holdout splits whose holdouts are the successive
    :data:`HOLDOUT_DAYS`-day periods before the training as-of day (most recent first; up to a year
    of them, so the calibrator sees every season rather than the last quarter's); ``fit(name,
    summary, penalizer, start_from)`` fits the purchase model called ``name`` on a summary with
    ``penalizer`` (None: its config section's), its optimiser started from the fitted model
    ``start_from`` when that is not None (the pipeline's ``fit_purchase_model``). With no window (a history
    too short for a holdout) ``auto`` means BG/NBD and there is no calibrator."""
    specs = candidates(config)
    if not windows:
        name = "bgnbd" if config.purchase_model == "auto" else config.purchase_model
        reason = f"history too short for a {HOLDOUT_DAYS}-day holdout: {name} without comparison or calibration"
        logger.warning("purchase model: %s", reason)
        return Selection(name, None, {"chosen": name, "metric": METRIC, "reason": reason, "candidates": {}})
    report: dict[str, Any] = {"metric": METRIC, "holdout_days": HOLDOUT_DAYS, "windows": _windows_report(windows),
                              "tie_tolerance": config.selection.tie_tolerance,
                              "ridge_penalizer": config.selection.ridge_penalizer, "candidates": {}}
    pooled: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for spec in specs:
        t0 = time.perf_counter()
        try:
            fits = _fit_windows(fit, spec, windows)
        except ModelFitError as e:
            report["candidates"][spec.key] = {"error": str(e)}
            continue
        figures, p_buy, y = _score_candidate(fits, windows)
        pooled[spec.key] = (p_buy, y)
        report["candidates"][spec.key] = {"model": spec.model, "penalizer": json_float(fits[0].penalizer, 8),
                                          **figures, "fit_seconds": json_float(time.perf_counter() - t0, 3)}
    if not pooled:
        raise ModelFitError(f"purchase model: no candidate could be fitted ({report['candidates']})")
    chosen_key = _choose(report["candidates"], config.selection.tie_tolerance)
    chosen = next(s for s in specs if s.key == chosen_key)
    report["chosen"] = chosen.model
    report["chosen_candidate"] = chosen.key
    report["reason"] = (f"{chosen.key}: lowest {METRIC} of P(a purchase in {HOLDOUT_DAYS} days) over the holdout "
                        f"windows, ties within {config.selection.tie_tolerance} broken by the AUC of P(alive)"
                        if len(specs) > 1 else f"{chosen.key}: set in the config")
    season = same_season_window(windows) if config.selection.seasonal_calibration else None
    groups = np.repeat(np.arange(len(windows)), [len(w) for w in windows])
    calibrator = ProbabilityCalibrator().fit(*pooled[chosen.key], groups=groups, season=season)
    report["calibrator"] = calibrator.report()
    return Selection(chosen.model, calibrator, report, chosen.penalizer)
