"""CLVRanker: a gradient-boosted ranking of customers by expected revenue, trained on shifted windows.

The probabilistic models (BG/NBD-type purchase model x Gamma-Gamma) give intervals and
probabilities; as a *ranking* of who will spend most they do barely better than past spend. The
ranker learns that ranking from the shop's own history:

- **Window.** With ``h = min(horizon_days, half the days of history before as_of)``, features are
  computed as of origins ``as_of - H`` for each ``H = h x window_fractions`` (default ``h`` and
  ``h / 2``): the RFM summary, the probabilistic models' predictions fitted on that summary
  (``predict_value``) and :func:`~rebuy.models.ranker_features.ranker_features`, plus
  ``horizon_days = H``; the target is each customer's spend (currency) in ``(as_of - H, as_of]``.
  Scoring uses the features as of the scoring date with ``horizon_days = h``. The stacked shorter
  window doubles the training rows and adds the most recent behaviour.
- **Loss.** Poisson deviance (``HistGradientBoostingRegressor(loss="poisson")``): revenue is
  heavy-tailed and zero for most customers, and top-share capture rewards ranking by the *mean*,
  which a log target would not estimate.
- **Shrinkage to past spend.** The boosted prediction ``g`` is shrunk geometrically towards the
  past-spend forecast ``q`` (total spend per day of observed history x h):
  ``prediction = scale_ x g^(1 - w) x (q + floor_)^w`` with ``w = past_spend_weight``; ``scale_``
  makes the predictions on the training rows of horizon h sum to their actual spend. On Online
  Retail II the unshrunk model ranked slightly below past spend and every shrunk one above it.
- **Internal holdout.** ``holdout_share`` of the training customers (random, by customer, across
  all windows) is held out of a first fit; on their horizon-h rows the top-20% capture of the
  ranker is compared with the probabilistic expected spend and with past spend. ``use_`` is True
  when the ranker beats both; every figure is in ``holdout_`` and the verdict in ``reason_``.
  The final model is then refitted on all training customers (``refit=True``).

Invariants: predictions are expected revenue (currency, before margin) over ``horizon_days_``
days, finite and >= 0, one per row of the scoring summary in its order; the learned state has a
trailing underscore; nothing here depends on which purchase model produced ``predictions``.
``model_`` is the fitted booster's trees as plain arrays (:class:`rebuy.models.trees.BoostedTrees`,
predictions equal to scikit-learn's), not the scikit-learn estimator: a stored ranker holds no
scikit-learn object and predicts with numpy. Threads: the boosting fit runs under ``threadpool_limits(n_threads)``. Cost: the fit computes two
windows on at most ``max_train_customers`` sampled customers and fits the booster twice (holdout,
refit); predict computes the features of every customer and runs ``max_iter`` small trees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

from rebuy.dates import UNIT_DAYS, as_of_day, cutoff_after, naive_utc
from rebuy.errors import FeatureError, InvalidParameterError, ModelFitError, RebuyError
from rebuy.features import calibration_holdout_split, customer_sample
from rebuy.metrics import capture, spearman
from rebuy.models.ranker_features import PREDICTION_COLUMNS, _aligned_predictions, ranker_features
from rebuy.models.trees import from_sklearn, set_codes

__all__ = ["CLVRanker", "expected_spend"]

logger = logging.getLogger(__name__)

PredictValue = Callable[[pd.DataFrame], pd.DataFrame]
"""summary -> DataFrame indexed like it with the probabilistic models' prediction columns."""

_MIN_TRAIN_CUSTOMERS = 50
"""Fewer training customers (or a holdout without revenue) and the ranker is not used."""


def _significant(values: np.ndarray, digits: int = 10) -> np.ndarray:
    """``values`` (any shape) rounded to ``digits`` significant digits (NaN, inf and 0 kept).
    Whole numbers below 1e9 are skipped: they are exact at 10 digits already (most features are
    counts, and the log10 and power below are the cost)."""
    out = values.copy()
    ok = np.isfinite(values) & (values != 0)
    if digits >= 10:
        ok &= ~((np.abs(values) < 1e9) & (values == np.round(values)))
    exponent = np.floor(np.log10(np.abs(values[ok])))
    scale = 10.0 ** (digits - 1 - exponent)
    out[ok] = np.round(values[ok] * scale) / scale
    return out


def _near_splits(col: np.ndarray, splits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``searchsorted(splits, col)``, which entries lie within rounding reach of a split): rounding
    to 10 significant digits moves a value by at most half a unit in its 10th digit (< 1e-9 of it),
    so an entry farther than that from every split lies on the same side of each either way."""
    pos = np.searchsorted(splits, col)
    below, above = splits[np.maximum(pos - 1, 0)], splits[np.minimum(pos, len(splits) - 1)]
    reach = 1e-9 * np.abs(col)
    near = np.isfinite(col) & ((np.abs(col - below) <= reach) | (np.abs(col - above) <= reach))
    return pos, near


def _significant_codes(values: np.ndarray, thresholds: list[np.ndarray], digits: int = 10) -> np.ndarray:
    """:func:`~rebuy.models.trees.split_codes` of ``_significant(values)``, rounding only where it
    can matter: column ``j`` is compared with the sorted split ``thresholds[j]`` only, so an entry
    not near any of them (:func:`_near_splits`) keeps its code; the positions found for that test
    are the codes, recomputed from the rounded value only where an entry is near a split."""
    codes = np.empty(values.shape, dtype=np.uint16, order="F")
    for j, splits in enumerate(thresholds):
        col = values[:, j]
        if not len(splits):
            set_codes(codes, j, col, splits)
            continue
        pos, near = _near_splits(col, splits)
        if near.any():
            pos[near] = np.searchsorted(splits, _significant(col[near], digits))
        set_codes(codes, j, col, splits, pos)
    return codes


def expected_spend(predictions: pd.DataFrame, days: float) -> np.ndarray:
    """The probabilistic models' expected spend (currency) over ``days``: expected purchases over
    ``days`` (linear between 0, 90 and 365 days, proportional beyond 365) x expected order value."""
    e90 = predictions["expected_purchases_90d"].to_numpy(dtype=np.float64)
    e365 = predictions["expected_purchases_365d"].to_numpy(dtype=np.float64)
    if days <= 90:
        purchases = e90 * days / 90.0
    elif days <= 365:
        purchases = e90 + (e365 - e90) * (days - 90.0) / 275.0
    else:
        purchases = e365 * days / 365.0
    return purchases * predictions["expected_order_value"].to_numpy(dtype=np.float64)


def _history_days(summary: pd.DataFrame, as_of: pd.Timestamp) -> float:
    """Days of observed history: from the first purchase of any customer to as_of, inclusive."""
    return float((as_of - summary["first_purchase"].min()).days + 1)


def _past_forecast(summary: pd.DataFrame, as_of: pd.Timestamp, days: float) -> np.ndarray:
    """Past spend per day of observed history x ``days`` (currency): ranks like total spend, and
    means the same at an early origin and at the scoring date."""
    return summary["total_spend"].to_numpy(dtype=np.float64) * days / _history_days(summary, as_of)


def _capture_figures(score: np.ndarray, revenue: np.ndarray) -> dict[str, Any]:
    """Top-10% / top-20% revenue capture and Spearman correlation of a score (JSON-able)."""
    return {**capture(score, revenue), "spearman": spearman(score, revenue)}


class CLVRanker(BaseEstimator):
    """Expected revenue over the next ``horizon_days_`` days from a Poisson gradient-boosted model
    trained on shifted windows of the shop's own history (see the module docstring).

    Parameters
    ----------
    horizon_days : wanted horizon (days); shrunk to half the history when that is shorter.
    min_horizon_days : below this horizon (days) the ranker is not fitted (``use_`` False).
    max_train_customers : customers sampled for training (all when fewer); bounds the fit time.
    random_state : seed of the customer sample, the internal holdout and the boosting.
    time_unit : time unit of the training summaries (``"weeks"`` or ``"days"``; the config's).
    window_fractions : training windows as fractions of h (the first must be 1.0).
    holdout_share : share of the training customers held out to decide ``use_``.
    past_spend_weight : geometric weight ``w`` of the past-spend forecast (0 = the model alone).
    refit : refit on all training customers after the holdout comparison.
    learning_rate, max_iter, max_leaf_nodes, min_samples_leaf, l2_regularization : of the
        ``HistGradientBoostingRegressor``.
    n_threads : OpenMP threads of the boosting (None = library default). 1 by default: on a
        2-core machine with another busy process, 2 threads made the fit 4x slower (80 s vs 18 s
        at 1M customers), as OpenMP threads wait for each other.
    """

    def __init__(
        self,
        horizon_days: int = 365,
        min_horizon_days: int = 90,
        max_train_customers: int = 200_000,
        random_state: int = 0,
        *,
        time_unit: str = "weeks",
        window_fractions: tuple[float, ...] = (1.0, 0.5),
        holdout_share: float = 0.25,
        past_spend_weight: float = 0.5,
        refit: bool = True,
        learning_rate: float = 0.15,
        max_iter: int = 60,
        max_leaf_nodes: int = 7,
        min_samples_leaf: int = 100,
        l2_regularization: float = 1.0,
        n_threads: int | None = 1,
    ) -> None:
        self.horizon_days = horizon_days
        self.min_horizon_days = min_horizon_days
        self.max_train_customers = max_train_customers
        self.random_state = random_state
        self.time_unit = time_unit
        self.window_fractions = window_fractions
        self.holdout_share = holdout_share
        self.past_spend_weight = past_spend_weight
        self.refit = refit
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.n_threads = n_threads

    # ------------------------------------------------------------------------------------ fit

    def fit(self, transactions: pd.DataFrame, as_of: Any, predict_value: PredictValue) -> CLVRanker:
        """Train on shifted windows of ``transactions`` (cleaned canonical lines) up to ``as_of``
        (its whole day counts); ``predict_value(summary)`` fits the probabilistic models on a
        summary and returns their :data:`~rebuy.models.ranker_features.PREDICTION_COLUMNS`.
        Returns self; when the history is too short or a window cannot be built, ``use_`` is False
        and ``reason_`` says why (``model_`` is then None)."""
        started = time.perf_counter()
        day, before = self._start(transactions, as_of)
        h = self.horizon_days_
        if h < self.min_horizon_days:
            return self._refuse(f"{self.history_days_} days of history give a {h}-day training horizon, "
                                f"below min_horizon_days={self.min_horizon_days}")
        try:
            X, y, main, customer = self._windows(self._sample(transactions, before), day, h, predict_value)
        except (RebuyError, FloatingPointError) as err:
            return self._refuse(f"the training window could not be built ({err})")
        self.n_train_customers_ = int(main.sum())
        if self.n_train_customers_ < _MIN_TRAIN_CUSTOMERS:
            return self._refuse(f"only {self.n_train_customers_} customers bought by {day - pd.Timedelta(days=h):%Y-%m-%d}")
        self._holdout(X, y, main, customer)
        if self.refit or self.model_ is None:
            self._fit_model(X, y, main)
        self.fit_seconds_ = round(time.perf_counter() - started, 3)
        logger.info("CLVRanker: %s (fit in %.1f s)", self.reason_, self.fit_seconds_)
        return self

    def _start(self, transactions: pd.DataFrame, as_of: Any) -> tuple[pd.Timestamp, pd.Series]:
        """Check the parameters and inputs, reset the learned state and set the horizon: returns the
        as-of day and the mask of lines on or before it."""
        self._check_params()
        day = as_of_day(as_of, "as_of", ModelFitError)
        if not isinstance(transactions, pd.DataFrame) or "timestamp" not in transactions.columns:
            raise ModelFitError("CLVRanker.fit: transactions must be a DataFrame with a 'timestamp' column")
        ts = naive_utc(transactions["timestamp"])
        before = ts < cutoff_after(day)
        if not before.any():
            raise ModelFitError(f"CLVRanker.fit: no transactions on or before as_of={day:%Y-%m-%d}")
        self.history_days_ = int((day - ts[before].min().normalize()).days) + 1
        self.horizon_days_ = int(min(self.horizon_days, self.history_days_ // 2))
        self.time_unit_ = self.time_unit
        self.model_, self.use_, self.holdout_, self.feature_names_ = None, False, {}, []
        self.n_train_customers_ = 0
        return day, before

    def _check_params(self) -> None:
        """InvalidParameterError naming the first bad hyper-parameter."""
        fr = tuple(self.window_fractions)
        if not fr or fr[0] != 1.0 or not all(0 < f <= 1 for f in fr):
            raise InvalidParameterError(f"CLVRanker: window_fractions must start with 1.0 and lie in (0, 1], got {fr}")
        if not 0 < self.holdout_share < 1:
            raise InvalidParameterError(f"CLVRanker: holdout_share must be in (0, 1), got {self.holdout_share}")
        if not 0 <= self.past_spend_weight < 1:
            raise InvalidParameterError(f"CLVRanker: past_spend_weight must be in [0, 1), got {self.past_spend_weight}")
        if int(self.min_horizon_days) < 1 or int(self.horizon_days) < int(self.min_horizon_days):
            raise InvalidParameterError("CLVRanker: need 1 <= min_horizon_days <= horizon_days")
        if int(self.max_train_customers) < _MIN_TRAIN_CUSTOMERS:
            raise InvalidParameterError(f"CLVRanker: max_train_customers must be >= {_MIN_TRAIN_CUSTOMERS}")
        if self.time_unit not in UNIT_DAYS:
            raise InvalidParameterError(f"CLVRanker: time_unit must be one of {sorted(UNIT_DAYS)}, got {self.time_unit!r}")

    def _refuse(self, why: str) -> CLVRanker:
        """Record that the ranker is not used (no model), and why."""
        self.model_, self.use_ = None, False
        self.reason_ = f"Ranker not used: {why}."
        self.holdout_ = {"horizon_days": self.horizon_days_, "history_days": self.history_days_, "used": False}
        logger.warning("CLVRanker: %s", self.reason_)
        return self

    def _sample(self, transactions: pd.DataFrame, before: pd.Series) -> pd.DataFrame:
        """The lines up to as_of of at most ``max_train_customers`` random customers."""
        tx = transactions.loc[before.to_numpy()] if not before.all() else transactions
        return customer_sample(tx, int(self.max_train_customers), self.random_state)

    def _windows(
        self, tx: pd.DataFrame, day: pd.Timestamp, h: int, predict_value: PredictValue
    ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
        """Stacked training rows of every window: features, target (currency), whether the row is
        of the horizon-h window, and the customer id of each row."""
        frames, targets, mains, customers = [], [], [], []
        for i, frac in enumerate(self.window_fractions):
            H = max(1, int(round(h * frac)))
            try:
                X, y, summary = self._window(tx, day, H, predict_value)
            except (RebuyError, FloatingPointError) as err:  # score_value: FloatingPointError on a bad fit
                if i == 0:
                    raise
                logger.warning("CLVRanker: skipped the %d-day window (%s)", H, err)
                continue
            frames.append(X)
            targets.append(y)
            mains.append(np.full(len(X), i == 0))
            customers.append(summary.index.to_numpy(dtype=object))
        return pd.concat(frames, ignore_index=True), np.concatenate(targets), np.concatenate(mains), np.concatenate(customers)

    def _window(
        self, tx: pd.DataFrame, day: pd.Timestamp, H: int, predict_value: PredictValue
    ) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
        """Features as of ``day - H`` (with ``horizon_days``, the past-spend forecast and the
        probabilistic expected spend over H as extra columns) and spend in ``(day - H, day]``."""
        origin = day - pd.Timedelta(days=H)
        split = calibration_holdout_split(tx, origin, day, time_unit=self.time_unit)
        summary = split.drop(columns=[c for c in split.columns if c.endswith("_holdout")])
        summary.attrs = split.attrs
        predictions = predict_value(summary)
        X = self._features(tx, summary, predictions, origin, H)
        return X, split["total_spend_holdout"].to_numpy(dtype=np.float64), summary

    def _features(
        self, tx: pd.DataFrame, summary: pd.DataFrame, predictions: pd.DataFrame, as_of: pd.Timestamp, H: float,
        *, rounded: bool = True,
    ) -> pd.DataFrame:
        """Model features plus the two forecasts the holdout compares with (not model inputs).
        Features are rounded to 10 significant digits: sums over a customer's lines in another
        order (a Spark partition, a customer scored alone) differ in the last bits, and a tree
        split lying between the two would send the customer down another branch. ``rounded=False``
        leaves that to :meth:`_blend` (``near_splits``), which rounds only what the trees can tell."""
        X = ranker_features(tx, summary, predictions, as_of).reset_index(drop=True)
        if rounded:
            X = pd.DataFrame(_significant(X.to_numpy(dtype=np.float64)), columns=X.columns)
        X["horizon_days"] = float(H)
        X["_past_forecast"] = _past_forecast(summary, as_of, H)
        X["_probabilistic"] = expected_spend(predictions.reindex(summary.index), H)
        return X

    def _model_columns(self, X: pd.DataFrame) -> list[str]:
        """The model's inputs: feature columns with at least one value (an optional input column
        absent from the transactions leaves its features NaN)."""
        return [c for c in X.columns if not c.startswith("_") and X[c].notna().any()]

    def _fit_model(self, X: pd.DataFrame, y: np.ndarray, main: np.ndarray) -> None:
        """Fit the booster on rows ``X`` and calibrate ``scale_`` on their horizon-h rows."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        cols = self._model_columns(X)
        model = HistGradientBoostingRegressor(
            loss="poisson", learning_rate=self.learning_rate, max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes, min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization, early_stopping=False, random_state=self.random_state,
        )
        with threadpool_limits(limits=self.n_threads):
            model.fit(X[cols], y)
        # the fitted trees as plain arrays: predicting (and a stored bundle) needs no scikit-learn object
        self.model_, self.feature_names_ = from_sklearn(model), cols
        past = X["_past_forecast"].to_numpy()
        self.floor_ = float(max(0.01 * past[main].mean(), 1e-6))
        self.scale_ = 1.0
        raw = self._blend(X.loc[main])
        self.scale_ = float(y[main].sum() / raw.sum()) if raw.sum() > 0 else 1.0

    def _blend(self, X: pd.DataFrame, *, near_splits: bool = False) -> np.ndarray:
        """scale_ x g^(1-w) x (past forecast + floor_)^w for feature rows ``X`` (``near_splits``: ``X``
        is not rounded yet; round what the trees' splits can tell, :func:`_significant_codes`)."""
        M = X[self.feature_names_].to_numpy(dtype=np.float64)
        trees = self.model_
        if near_splits:
            M = trees.check_rows(M)
            splits = trees.split_values()
            g = trees.link_inverse(trees.raw_predict_codes(_significant_codes(M, splits), splits))
        else:
            g = trees.predict(M)
        w = self.past_spend_weight
        log = (1 - w) * np.log(np.maximum(g, 1e-12)) + w * np.log(X["_past_forecast"].to_numpy() + self.floor_)
        return self.scale_ * np.exp(log)

    def _holdout(self, X: pd.DataFrame, y: np.ndarray, main: np.ndarray, customer: np.ndarray) -> None:
        """Fit without a random share of customers; compare capture on their horizon-h rows."""
        ids, inverse = np.unique(customer, return_inverse=True)
        rng = np.random.default_rng(self.random_state)
        held = (rng.random(len(ids)) < self.holdout_share)[inverse]
        rows = held & main
        figures: dict[str, Any] = {"horizon_days": self.horizon_days_, "history_days": self.history_days_,
                                   "train_customers": self.n_train_customers_, "holdout_customers": int(rows.sum()),
                                   "holdout_revenue": round(float(y[rows].sum()), 2)}
        if rows.sum() < _MIN_TRAIN_CUSTOMERS or y[rows].sum() <= 0 or (~held).sum() < _MIN_TRAIN_CUSTOMERS:
            self.holdout_, self.use_ = {**figures, "used": False}, False
            self.reason_ = "Ranker not used: too few held-out customers (or no held-out revenue) to compare it."
            return
        self._fit_model(X.loc[~held], y[~held], main[~held])
        Xh, yh = X.loc[rows], y[rows]
        scores = {"ranker": self._blend(Xh), "probabilistic": Xh["_probabilistic"].to_numpy(),
                  "past_spend": Xh["_past_forecast"].to_numpy()}
        capture = {name: _capture_figures(s, yh) for name, s in scores.items()}
        top = {name: c["top_20pct"] for name, c in capture.items()}
        self.use_ = bool(top["ranker"] > max(top["probabilistic"], top["past_spend"]))
        self.holdout_ = {**figures, "capture": capture, "used": self.use_}
        verdict = "used" if self.use_ else "not used"
        self.reason_ = (f"Ranker {verdict}: on {int(rows.sum())} held-out customers its top 20% capture "
                        f"{top['ranker']:.1%} of {self.horizon_days_}-day revenue, the probabilistic expected "
                        f"spend {top['probabilistic']:.1%}, past spend {top['past_spend']:.1%}.")

    # -------------------------------------------------------------------------------- predict

    def predict(
        self, transactions: pd.DataFrame, summary: pd.DataFrame, predictions: pd.DataFrame, as_of: Any
    ) -> np.ndarray:
        """Expected revenue (currency, before margin) over the next ``horizon_days_`` days of each
        customer of ``summary`` (in its order), as of the scoring date ``as_of``: finite, >= 0.
        Without a model (``fit`` refused the history) it is the probabilistic expected spend."""
        if not hasattr(self, "horizon_days_"):
            raise ModelFitError("CLVRanker: call fit before predict")
        day = as_of_day(as_of, "as_of", FeatureError)
        if self.model_ is None:
            aligned = pd.DataFrame(_aligned_predictions(predictions, summary.index), columns=list(PREDICTION_COLUMNS))
            return np.maximum(expected_spend(aligned, self.horizon_days_), 0.0)
        X = self._features(transactions, summary, predictions, day, self.horizon_days_, rounded=False)
        out = self._blend(X, near_splits=True)
        if not np.isfinite(out).all():
            raise FloatingPointError("CLVRanker.predict: non-finite predictions (please report with the data)")
        return np.maximum(out, 0.0)
