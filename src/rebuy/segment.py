"""RFM scores, named segments and customer clusters.

Input everywhere is the RFM summary frame of :func:`rebuy.features.rfm_summary` (index
``customer_id``; columns ``frequency``, ``recency``, ``T`` in the model time unit, ``monetary_value``,
``purchase_days``, ``total_spend`` in currency, ``first_purchase``, ``last_purchase``).

* :class:`RFMScorer` / :func:`rfm_scores` give R, F and M scores ``1..n_bins`` by quantiles:

  - **R** from the time since the last purchase, ``T - recency`` (model time unit); the most recent
    customers score highest.
  - **F** from ``purchase_days`` (distinct purchase days, >= 1), or ``frequency`` (repeat purchase
    days) when the frame has no ``purchase_days``; both rank customers identically.
  - **M** from ``total_spend`` (all purchases, currency), or ``monetary_value`` when the frame has
    no ``total_spend``. ``total_spend`` is used because ``monetary_value`` is the mean of *repeat*
    purchases and is 0 for every one-time buyer, which would put a one-time buyer of 1,000 below a
    repeat buyer of 5; total spend is also the usual "M" of retail RFM grids.

  Bins are the quantiles of the fitted customers, right-closed like ``pd.qcut``: a score is
  ``1 + number of bin edges below the value``. Equal values always get equal scores (a tied group
  never straddles two bins) and heavy ties simply leave some scores unused instead of crashing; the
  lowest observed F and M (e.g. all one-time buyers) score 1 and the most recent customers score
  R = n_bins. A measure with no variation at all (one customer, or every value equal) carries no
  information and scores the middle, ``(n_bins + 1) // 2``.
* :func:`assign_segments` maps (R, F) scores to named segments with the first matching rule of the
  config (``segments.rules``), vectorised through an ``n_bins x n_bins`` lookup grid.
* :class:`RFMClusterer` is a scikit-learn clusterer (KMeans on log1p + robust-scaled RFM features,
  k chosen by the simplified silhouette or the silhouette), and :func:`cluster_profiles` describes each
  cluster for a marketer.

Errors (:mod:`rebuy.errors`, both ``ValueError``): an unusable input frame is a ``SegmentError``
naming the input and the column (also too few customers for the clusters asked for); a bad
parameter (``n_bins``, ``n_clusters``, ``k_range``, ``scaler``, ``silhouette_sample``, ``k_criterion``,
``time_unit_days``) is an ``InvalidParameterError``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.preprocessing import RobustScaler, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from rebuy.config import SegmentConfig, SegmentRule
from rebuy.errors import InvalidParameterError, SegmentError

logger = logging.getLogger(__name__)

SCORE_COLUMNS = ("r_score", "f_score", "m_score")
FEATURE_COLUMNS = ("recency_days", "frequency", "monetary")
"""Clustering features: days since the last purchase, purchase days, spend per purchase day."""
_RENAMED_COLUMNS = {"orders": "purchase_days"}
"""Summary columns renamed since scorers were first fitted: old name -> new name (for saved bundles)."""


# --------------------------------------------------------------------------------------------------
# input checks and derived measures
# --------------------------------------------------------------------------------------------------


def _check_frame(summary: object, source: str) -> pd.DataFrame:
    if not isinstance(summary, pd.DataFrame):
        raise SegmentError(f"{source}: expected the RFM summary DataFrame, got {type(summary).__name__}")
    return summary


def _numeric_column(summary: pd.DataFrame, col: str, source: str) -> np.ndarray:
    if col not in summary.columns:
        raise SegmentError(f"{source}: missing column {col!r}; columns are {list(summary.columns)}")
    s = summary[col]
    if not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)):
        raise SegmentError(f"{source}: column {col!r} must be numeric, got {s.dtype}")
    v = s.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(v)
    if bad.any():
        raise SegmentError(f"{source}: column {col!r} has {int(bad.sum())} missing or infinite value(s)")
    if (v < 0).any():
        raise SegmentError(f"{source}: column {col!r} has {int((v < 0).sum())} negative value(s)")
    return v


def _time_since_last(summary: pd.DataFrame, source: str) -> np.ndarray:
    """``T - recency`` in the summary's time unit (>= 0)."""
    t = _numeric_column(summary, "T", source)
    rec = _numeric_column(summary, "recency", source)
    since = t - rec
    tol = 1e-9 * np.maximum(1.0, t)
    if (since < -tol).any():
        raise SegmentError(
            f"{source}: column 'recency' exceeds 'T' for {int((since < -tol).sum())} customer(s)"
        )
    return np.maximum(since, 0.0)


def _frequency_column(summary: pd.DataFrame) -> str:
    return "purchase_days" if "purchase_days" in summary.columns else "frequency"


def _fitted_column(summary: pd.DataFrame, col: str) -> str:
    """``col``, or its new name when an estimator fitted before a rename (a saved bundle) meets a new
    summary (e.g. ``orders`` -> ``purchase_days``)."""
    new = _RENAMED_COLUMNS.get(col)
    return new if col not in summary.columns and new is not None and new in summary.columns else col


def _monetary_column(summary: pd.DataFrame) -> str:
    return "total_spend" if "total_spend" in summary.columns else "monetary_value"


def infer_time_unit_days(summary: pd.DataFrame) -> float:
    """Length in days of the summary's time unit, read from ``first_purchase``/``last_purchase``.

    Uses customers with ``recency > 0``: the median of (last - first purchase, days) / recency, snapped
    to 1 (days) or 7 (weeks) when within 1%. Returns 1.0 when it cannot tell (no repeat buyer or no
    purchase dates); pass the unit explicitly (``Config.time_unit_days``) to avoid the guess.
    """
    if not {"first_purchase", "last_purchase", "recency"} <= set(summary.columns):
        return 1.0
    rec = pd.to_numeric(summary["recency"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        span = (
            (pd.to_datetime(summary["last_purchase"]) - pd.to_datetime(summary["first_purchase"]))
            / pd.Timedelta(days=1)
        ).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        return 1.0
    ok = np.isfinite(rec) & np.isfinite(span) & (rec > 0)
    if not ok.any():
        logger.debug("cannot infer the summary time unit (no repeat buyer); assuming days")
        return 1.0
    est = float(np.median(span[ok] / rec[ok]))
    for unit in (1.0, 7.0):
        if abs(est - unit) <= 0.01 * unit:
            return unit
    return est if est > 0 else 1.0


# --------------------------------------------------------------------------------------------------
# RFM scores
# --------------------------------------------------------------------------------------------------


def _score(values: np.ndarray, edges: np.ndarray, constant: bool, n_bins: int) -> np.ndarray:
    """1 + number of edges strictly below each value (right-closed quantile bins, as pd.qcut)."""
    score = np.searchsorted(edges, values, side="left").astype(np.int64) + 1
    if constant:  # no variation when fitted: the fitted value itself carries no information
        score[values == edges[0]] = (n_bins + 1) // 2
    return score


class RFMScorer(TransformerMixin, BaseEstimator):
    """Quantile R, F and M scores ``1..n_bins``, learned on one set of customers, applied to any.

    Parameters
    ----------
    n_bins : number of score levels (5 = the usual 1-5 grid).

    Attributes
    ----------
    bin_edges_ : dict measure -> the ``n_bins - 1`` quantile edges (``"recency"``: time since the last
        purchase in the summary's time unit; ``"frequency"``: ``frequency_column_``; ``"monetary"``:
        ``monetary_column_``, currency).
    constant_ : dict measure -> True when the fitted customers all had the same value.
    frequency_column_, monetary_column_ : the summary columns the F and M scores come from.
    n_customers_ : number of customers fitted.
    """

    def __init__(self, n_bins: int = 5) -> None:
        self.n_bins = n_bins

    def _measures(self, summary: pd.DataFrame, source: str, fcol: str, mcol: str) -> dict[str, np.ndarray]:
        return {
            "recency": _time_since_last(summary, source),
            "frequency": _numeric_column(summary, fcol, source),
            "monetary": _numeric_column(summary, mcol, source),
        }

    def fit(self, summary: pd.DataFrame, y: object = None) -> RFMScorer:
        """Learn the quantile edges from the RFM summary frame; returns self."""
        source = "RFMScorer.fit: summary"
        summary = _check_frame(summary, source)
        if not isinstance(self.n_bins, int | np.integer) or isinstance(self.n_bins, bool) or self.n_bins < 2:
            raise InvalidParameterError(f"RFMScorer: n_bins must be an integer >= 2, got {self.n_bins!r}")
        if len(summary) == 0:
            raise SegmentError(f"{source}: no customers to learn score bins from")
        fcol, mcol = _frequency_column(summary), _monetary_column(summary)
        measures = self._measures(summary, source, fcol, mcol)
        qs = np.arange(1, self.n_bins) / self.n_bins
        self.bin_edges_ = {k: np.quantile(v, qs) for k, v in measures.items()}
        self.constant_ = {k: bool(v.min() == v.max()) for k, v in measures.items()}
        self.frequency_column_, self.monetary_column_ = fcol, mcol
        self.n_customers_ = int(len(summary))
        return self

    def transform(self, summary: pd.DataFrame) -> pd.DataFrame:
        """Scores ``r_score``, ``f_score``, ``m_score`` (int64, 1..n_bins), indexed like ``summary``."""
        check_is_fitted(self, "bin_edges_")
        source = "RFMScorer.transform: summary"
        summary = _check_frame(summary, source)
        fcol, mcol = (_fitted_column(summary, c) for c in (self.frequency_column_, self.monetary_column_))
        m = self._measures(summary, source, fcol, mcol)
        n = self.n_bins
        e, c = self.bin_edges_, self.constant_
        r = n + 1 - _score(m["recency"], e["recency"], c["recency"], n)  # less time since last = better
        f = _score(m["frequency"], e["frequency"], c["frequency"], n)
        mon = _score(m["monetary"], e["monetary"], c["monetary"], n)
        return pd.DataFrame({"r_score": r, "f_score": f, "m_score": mon}, index=summary.index)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.asarray(SCORE_COLUMNS, dtype=object)


def rfm_scores(summary: pd.DataFrame, n_bins: int = 5) -> pd.DataFrame:
    """R, F, M quantile scores ``1..n_bins`` of the customers in ``summary`` (see the module doc).

    Returns a DataFrame ``[r_score, f_score, m_score]`` (int64) indexed like ``summary``. Vectorised:
    a million customers take well under a second.
    """
    return RFMScorer(n_bins=n_bins).fit(summary).transform(summary)


# --------------------------------------------------------------------------------------------------
# named segments
# --------------------------------------------------------------------------------------------------


def _as_rules(rules: Iterable[SegmentRule | Mapping[str, Any]]) -> list[SegmentRule]:
    out = []
    for i, rule in enumerate(rules):
        if isinstance(rule, SegmentRule):
            out.append(rule)
            continue
        try:
            out.append(SegmentRule.model_validate(rule))
        except Exception as e:  # pydantic ValidationError: report it as ours, one line
            raise SegmentError(
                f"rules[{i}]: invalid segment rule {rule!r}: {str(e).splitlines()[-1].strip()}"
            ) from None
    if not out:
        raise SegmentError("rules: give at least one segment rule")
    return out


def segment_grid(rules: Sequence[SegmentRule | Mapping[str, Any]], n_bins: int = 5) -> np.ndarray:
    """The ``n_bins x n_bins`` grid of rule numbers (row R-1, column F-1; first match wins; -1 = none)."""
    grid = np.full((n_bins, n_bins), -1, dtype=np.int64)
    for i, rule in enumerate(_as_rules(rules)):
        cell = grid[rule.r[0] - 1 : rule.r[1], rule.f[0] - 1 : rule.f[1]]
        cell[cell == -1] = i
    return grid


def assign_segments(
    scores: pd.DataFrame,
    rules: Sequence[SegmentRule | Mapping[str, Any]],
    fallback: str = "Need Attention",
) -> pd.Series:
    """Named segment of each customer from its ``r_score`` and ``f_score``.

    ``rules`` are :class:`rebuy.config.SegmentRule` (or dicts with ``name``, ``r``, ``f``): inclusive
    score ranges, the first matching rule wins. Customers matched by no rule get ``fallback`` (logged).
    Returns a string Series named ``segment`` indexed like ``scores``.
    """
    source = "assign_segments: scores"
    scores = _check_frame(scores, source)
    rule_list = _as_rules(rules)
    rf = []
    for col in ("r_score", "f_score"):
        v = _numeric_column(scores, col, source)
        if (v < 1).any() or (v != np.round(v)).any():
            raise SegmentError(f"{source}: column {col!r} must hold whole scores >= 1")
        rf.append(v.astype(np.int64))
    r, f = rf
    size = int(max(r.max(initial=1), f.max(initial=1), *(max(x.r[1], x.f[1]) for x in rule_list)))
    grid = segment_grid(rule_list, size)
    idx = grid[r - 1, f - 1]
    unmatched = idx == -1
    if unmatched.any():
        logger.warning(
            "%d customer(s) match no segment rule: given the fallback segment %r",
            int(unmatched.sum()),
            fallback,
        )
        idx[unmatched] = len(rule_list)
    names = np.array([x.name for x in rule_list] + [fallback], dtype=object)
    return pd.Series(names[idx], index=scores.index, name="segment", dtype="string")


def segment_customers(summary: pd.DataFrame, config: SegmentConfig | None = None) -> pd.DataFrame:
    """RFM scores and the named segment of every customer: ``[r_score, f_score, m_score, segment]``."""
    cfg = config if config is not None else SegmentConfig()
    scores = rfm_scores(summary, n_bins=cfg.n_bins)
    scores["segment"] = assign_segments(scores, cfg.rules, cfg.fallback_segment)
    return scores


# --------------------------------------------------------------------------------------------------
# clustering
# --------------------------------------------------------------------------------------------------


def rfm_features(summary: pd.DataFrame, time_unit_days: float | None = None) -> pd.DataFrame:
    """The clustering features of each customer (all >= 0):

    * ``recency_days``: days since the last purchase, ``(T - recency) * time_unit_days``;
    * ``frequency``: purchase days, ``purchase_days`` (``frequency + 1`` when the frame has no
      ``purchase_days``);
    * ``monetary``: spend per purchase day, ``total_spend / purchase_days`` in currency
      (``monetary_value`` when the frame has no ``total_spend``/``purchase_days``), so
      ``frequency * monetary`` = total spend.

    ``time_unit_days`` is the summary's time unit in days (7 for weeks); None infers it with
    :func:`infer_time_unit_days`.
    """
    source = "rfm_features: summary"
    summary = _check_frame(summary, source)
    unit = infer_time_unit_days(summary) if time_unit_days is None else float(time_unit_days)
    if not (np.isfinite(unit) and unit > 0):
        raise InvalidParameterError(
            f"rfm_features: time_unit_days must be a positive number, got {time_unit_days!r}"
        )
    since = _time_since_last(summary, source) * unit
    if "purchase_days" in summary.columns:
        days = _numeric_column(summary, "purchase_days", source)
    else:
        days = _numeric_column(summary, "frequency", source) + 1.0
    if "total_spend" in summary.columns and "purchase_days" in summary.columns:
        spend = _numeric_column(summary, "total_spend", source)
        monetary = np.divide(spend, days, out=np.zeros_like(spend), where=days > 0)
    else:
        monetary = _numeric_column(summary, "monetary_value", source)
    return pd.DataFrame(
        {"recency_days": since, "frequency": days, "monetary": monetary}, index=summary.index
    )


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    """log1p for the (non-negative) RFM features; sign-symmetric so any real input stays finite."""
    return np.sign(x) * np.log1p(np.abs(x))


def _make_scaler(name: str) -> RobustScaler | StandardScaler | None:
    if name == "robust":
        return RobustScaler()
    if name == "standard":
        return StandardScaler()
    if name == "none":
        return None
    raise InvalidParameterError(f"RFMClusterer: scaler must be 'robust', 'standard' or 'none', got {name!r}")


def simplified_silhouette(Z: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> float:
    """Mean simplified silhouette (Hruschka et al. 2004): the silhouette with each row's distance to
    its own cluster's centre as ``a`` and to the nearest other centre as ``b`` (Euclidean). It costs
    rows x k distances instead of rows x rows, so k can be chosen in a fraction of a second on a
    large sample. Rows of singleton clusters score 0 (as in the silhouette); one cluster scores -1."""
    Z = np.asarray(Z, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = centers.shape[0]
    if k < 2 or len(np.unique(labels)) < 2:
        return -1.0
    d = euclidean_distances(Z, np.asarray(centers, dtype=np.float64))
    rows = np.arange(Z.shape[0])
    a = d[rows, labels].copy()
    d[rows, labels] = np.inf
    b = d.min(axis=1)
    top = np.maximum(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        sil = np.where(top > 0, (b - a) / top, 0.0)
    sil[np.bincount(labels, minlength=k)[labels] <= 1] = 0.0
    return float(sil.mean())


def silhouette_scores(Z: np.ndarray, label_sets: Sequence[np.ndarray], chunk_rows: int = 512) -> list[float]:
    """Mean silhouette (Euclidean) of several labelings of the same rows, in one pass over distances.

    Equals ``sklearn.metrics.silhouette_score(Z, labels)`` for each labeling (singleton clusters
    score 0), but the pairwise distances are computed once for all labelings, chunk by chunk
    (memory ``chunk_rows x n`` floats), which makes choosing k several times faster. A labeling
    with a single cluster scores -1 (never chosen).
    """
    Z = np.asarray(Z, dtype=np.float64)
    n = Z.shape[0]
    sets = [np.asarray(lab, dtype=np.int64) for lab in label_sets]
    uniq = [np.unique(lab, return_inverse=True) for lab in sets]
    sizes = [len(u) for u, _ in uniq]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    onehot = np.zeros((n, int(offsets[-1])), dtype=np.float64)
    rows = np.arange(n)
    for (_, inv), off in zip(uniq, offsets[:-1], strict=True):
        onehot[rows, off + inv] = 1.0
    sums = np.empty_like(onehot)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        d = euclidean_distances(Z[start:stop], Z)
        d[np.arange(stop - start), np.arange(start, stop)] = 0.0
        sums[start:stop] = d @ onehot
    out = []
    for (_, inv), off, k in zip(uniq, offsets[:-1], sizes, strict=True):
        if k < 2:
            out.append(-1.0)
            continue
        cnt = np.bincount(inv, minlength=k).astype(np.float64)
        block = sums[:, off : off + k]
        own_n = cnt[inv]
        with np.errstate(divide="ignore", invalid="ignore"):
            a = block[rows, inv] / (own_n - 1.0)
            mean_other = block / cnt
            mean_other[rows, inv] = np.inf
            b = mean_other.min(axis=1)
            sil = (b - a) / np.maximum(a, b)
        sil[(own_n <= 1) | ~np.isfinite(sil)] = 0.0
        out.append(float(sil.mean()))
    return out


K_CRITERIA = ("simplified_silhouette", "silhouette")
"""``k_criterion`` choices of :class:`RFMClusterer`."""


class RFMClusterer(ClusterMixin, BaseEstimator):
    """KMeans on log1p + scaled RFM features, with k chosen by (simplified) silhouette unless fixed.

    ``fit``/``predict`` take the RFM summary frame (converted with :func:`rfm_features`), a frame of
    the feature columns ``recency_days, frequency, monetary``, or any numeric 2-D array (each column
    is transformed with a sign-symmetric log1p, then scaled).

    Parameters
    ----------
    n_clusters : fixed k, or None to choose k in ``k_range`` by silhouette.
    k_range : inclusive (low, high) range of k tried when ``n_clusters`` is None.
    silhouette_sample : customers (rows) sampled to choose k; every candidate KMeans is fitted and
        scored on this sample, the final KMeans on all rows.
    k_criterion : ``"simplified_silhouette"`` (default: distances to the centres, rows x k; about 6 s
        less than the full silhouette on a 20,000-row sample) or ``"silhouette"`` (the full mean
        silhouette of scikit-learn, rows x rows distances).
    random_state : seed of the sample and of KMeans.
    scaler : ``"robust"`` (median / IQR, default), ``"standard"`` or ``"none"``.
    n_init : KMeans restarts (fixed).
    time_unit_days : the summary's time unit in days (7 for weeks) for ``recency_days``; None infers
        it from the summary at fit time (see :func:`infer_time_unit_days`) and reuses it in predict.
    n_threads : OpenMP/BLAS threads for KMeans and the silhouette (None = library default). 1 (the
        default) is reproducible and avoids the heavy slowdown of oversubscribed threads on a busy
        machine; raise it on a dedicated many-core machine.

    Too few customers: when ``n_clusters`` is None and the data have fewer distinct customers than
    ``k_range`` needs (k <= distinct rows - 1), the range is cut down with a warning; fewer than 3
    distinct rows is an error. A fixed ``n_clusters`` larger than the number of rows is an error.

    Attributes
    ----------
    n_clusters_ : the k used. silhouette_scores_ : dict k -> the ``k_criterion`` on the sample (empty
    when k is fixed). scaler_ : fitted scaler (or None). kmeans_ : fitted KMeans (its own label order).
    cluster_centers_ : centres in the transformed (log, scaled) space, in this estimator's label order.
    labels_ : label of each training row. label_map_ : KMeans label -> our label.
    Labels are ordered by value: cluster 0 has the highest mean ``frequency * monetary`` (= total
    spend for RFM features); ties go to the more recent cluster.
    time_unit_days_ : the unit used for summary frames. n_features_in_, feature_names_in_ : as sklearn.
    """

    def __init__(
        self,
        n_clusters: int | None = None,
        k_range: tuple[int, int] = (3, 8),
        silhouette_sample: int = 20_000,
        random_state: int | None = 0,
        scaler: str = "robust",
        n_init: int = 4,
        time_unit_days: float | None = None,
        n_threads: int | None = 1,
        k_criterion: str = "simplified_silhouette",
    ) -> None:
        self.n_clusters = n_clusters
        self.k_range = k_range
        self.silhouette_sample = silhouette_sample
        self.random_state = random_state
        self.scaler = scaler
        self.n_init = n_init
        self.time_unit_days = time_unit_days
        self.n_threads = n_threads
        self.k_criterion = k_criterion

    @classmethod
    def from_config(cls, config: SegmentConfig, time_unit_days: float | None = None) -> RFMClusterer:
        """The clusterer described by ``config.segments``; pass ``Config.time_unit_days``."""
        return cls(
            n_clusters=config.n_clusters,
            k_range=tuple(config.k_range),
            silhouette_sample=config.silhouette_sample,
            random_state=config.random_state,
            scaler=config.scaler,
            n_init=config.n_init,
            time_unit_days=time_unit_days,
            k_criterion=config.k_criterion,
        )

    def _features(self, X: Any, *, unit: float | None) -> Any:
        if isinstance(X, pd.DataFrame) and {"T", "recency"} <= set(X.columns):
            return rfm_features(X, unit)
        return X

    def _transform(self, X: np.ndarray) -> np.ndarray:
        Z = _signed_log1p(X)
        if self.scaler_ is not None:
            Z = self.scaler_.transform(Z)
        return Z

    def _kmeans(self, k: int) -> KMeans:
        return KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state)

    def _candidate_ks(self, n_distinct: int) -> list[int]:
        if self.n_clusters is not None:
            return [int(self.n_clusters)]
        try:
            lo, hi = (int(v) for v in self.k_range)
        except (TypeError, ValueError):
            raise InvalidParameterError(
                f"RFMClusterer: k_range must be (low, high), got {self.k_range!r}"
            ) from None
        if not (2 <= lo <= hi):
            raise InvalidParameterError(f"RFMClusterer: k_range {self.k_range!r} must satisfy 2 <= low <= high")
        if n_distinct < 3:
            raise SegmentError(
                f"RFMClusterer: need at least 3 distinct customers to choose k by silhouette, "
                f"got n_samples={n_distinct} distinct row(s)"
            )
        ks = [k for k in range(lo, hi + 1) if k <= n_distinct - 1]
        if len(ks) < hi - lo + 1:
            ks = ks or [max(2, min(lo, n_distinct - 1))]
            msg = f"only {n_distinct} distinct customers: k_range {tuple(self.k_range)} reduced to {ks[0]}..{ks[-1]}"
            logger.warning(msg)
            warnings.warn(msg, UserWarning, stacklevel=3)
        return ks

    def fit(self, X: Any, y: object = None) -> RFMClusterer:
        """Choose k (unless fixed) and fit KMeans; returns self."""
        with threadpool_limits(limits=self.n_threads):
            return self._fit(X)

    def _fit(self, X: Any) -> RFMClusterer:
        unit = self.time_unit_days
        if unit is None and isinstance(X, pd.DataFrame) and {"T", "recency"} <= set(X.columns):
            unit = infer_time_unit_days(X)
        X = validate_data(self, self._features(X, unit=unit), dtype=[np.float64, np.float32], reset=True)
        self.time_unit_days_ = 1.0 if unit is None else float(unit)
        self._check_parameters(X.shape[0])
        self.scaler_ = _make_scaler(self.scaler)
        if self.scaler_ is not None:
            self.scaler_.fit(_signed_log1p(X))
        Z = self._transform(X)
        self.silhouette_scores_: dict[int, float] = {}
        best = self._choose_k(Z) if self.n_clusters is None else int(self.n_clusters)
        self.kmeans_ = self._kmeans(best).fit(Z)
        self.n_clusters_ = int(best)
        order = self._value_order(X, self.kmeans_.labels_, best)
        self.label_map_ = np.empty(best, dtype=np.int64)
        self.label_map_[order] = np.arange(best)
        self.cluster_centers_ = self.kmeans_.cluster_centers_[order]
        self.labels_ = self.label_map_[self.kmeans_.labels_]
        return self

    def _check_parameters(self, n: int) -> None:
        """InvalidParameterError for a bad n_clusters, silhouette_sample or k_criterion; SegmentError
        when the ``n`` rows cannot hold ``n_clusters`` clusters."""
        if self.k_criterion not in K_CRITERIA:
            raise InvalidParameterError(
                f"RFMClusterer: k_criterion must be one of {', '.join(K_CRITERIA)}, got {self.k_criterion!r}"
            )
        if self.n_clusters is not None:
            if not isinstance(self.n_clusters, int | np.integer) or self.n_clusters < 1:
                raise InvalidParameterError(
                    f"RFMClusterer: n_clusters must be a positive integer or None, got {self.n_clusters!r}"
                )
            if n < self.n_clusters:
                raise SegmentError(
                    f"RFMClusterer: n_clusters={self.n_clusters} but only n_samples={n} customer(s)"
                )
        if not isinstance(self.silhouette_sample, int | np.integer) or self.silhouette_sample < 2:
            raise InvalidParameterError(
                f"RFMClusterer: silhouette_sample must be an integer >= 2, got {self.silhouette_sample!r}"
            )

    def _choose_k(self, Z: np.ndarray) -> int:
        """The k of ``k_range`` with the best silhouette on a sample of ``Z`` (ties: the smaller k);
        fills ``silhouette_scores_``."""
        n = Z.shape[0]
        rng = np.random.default_rng(self.random_state)
        sample = self.silhouette_sample
        Zs = Z[np.sort(rng.choice(n, size=sample, replace=False))] if n > sample else Z
        ks = self._candidate_ks(int(np.unique(Zs, axis=0).shape[0]))
        models = [self._kmeans(k).fit(Zs) for k in ks]
        if self.k_criterion == "silhouette":
            scores = silhouette_scores(Zs, [m.labels_ for m in models])
        else:
            scores = [simplified_silhouette(Zs, m.labels_, m.cluster_centers_) for m in models]
        for k, s in zip(ks, scores, strict=True):
            self.silhouette_scores_[k] = s
            logger.info("k=%d: %s %.4f on %d customers", k, self.k_criterion.replace("_", " "), s, len(Zs))
        return max(self.silhouette_scores_, key=lambda k: (self.silhouette_scores_[k], -k))

    def _value_order(self, X: np.ndarray, km_labels: np.ndarray, k: int) -> np.ndarray:
        """KMeans labels ordered by value: first the highest mean ``frequency * monetary`` (= total
        spend), ties to the more recent cluster; without RFM features, by the centres' sums."""
        if X.shape[1] != len(FEATURE_COLUMNS):
            return np.argsort(-self.kmeans_.cluster_centers_.sum(axis=1), kind="stable")
        counts = np.bincount(km_labels, minlength=k).astype(np.float64)
        value = np.bincount(km_labels, weights=X[:, 1].astype(np.float64) * X[:, 2], minlength=k)
        since = np.bincount(km_labels, weights=X[:, 0].astype(np.float64), minlength=k)
        with np.errstate(invalid="ignore", divide="ignore"):
            key_value = np.where(counts > 0, value / np.maximum(counts, 1), -np.inf)
            key_recent = np.where(counts > 0, since / np.maximum(counts, 1), np.inf)
        return np.lexsort((key_recent, -key_value))

    def predict(self, X: Any) -> np.ndarray:
        """Cluster of each row (int64, 0 = highest value)."""
        check_is_fitted(self, "kmeans_")
        X = validate_data(
            self, self._features(X, unit=self.time_unit_days_), dtype=[np.float64, np.float32], reset=False
        )
        Z = self._transform(X).astype(self.kmeans_.cluster_centers_.dtype, copy=False)
        with threadpool_limits(limits=self.n_threads):
            return self.label_map_[self.kmeans_.predict(Z)]

    def fit_predict(self, X: Any, y: object = None, **kwargs: Any) -> np.ndarray:
        """Fit, then return ``labels_``."""
        return self.fit(X).labels_


# --------------------------------------------------------------------------------------------------
# cluster profiles
# --------------------------------------------------------------------------------------------------


def _aligned(values: Any, index: pd.Index, name: str) -> pd.Series:
    if isinstance(values, pd.Series):
        if values.index.equals(index):
            s = values
        else:
            missing = ~index.isin(values.index)
            if missing.any():
                raise SegmentError(
                    f"cluster_profiles: {name} has no value for {int(missing.sum())} customer(s) of the summary"
                )
            s = values.reindex(index)
    else:
        arr = np.asarray(values)
        if arr.ndim != 1 or len(arr) != len(index):
            raise SegmentError(
                f"cluster_profiles: {name} must be 1-D with one value per customer ({len(index)}), got shape {arr.shape}"
            )
        s = pd.Series(arr, index=index)
    if s.isna().any():
        raise SegmentError(f"cluster_profiles: {name} has {int(s.isna().sum())} missing value(s)")
    return s


def _readable_label(one_time_share: float, r: float, m: float) -> str:
    activity = "active" if r >= 3.5 else "cooling" if r >= 2.5 else "lapsed"
    value = "High" if m >= 3.75 else "Mid" if m >= 2.5 else "Low"
    if one_time_share >= 0.5:
        who = {"active": "Recent", "cooling": "Cooling", "lapsed": "Lapsed"}[activity]
        return f"{who} one-timers" + (", high spend" if value == "High" else "")
    return f"{value} value, {activity}"


def cluster_profiles(
    summary: pd.DataFrame,
    labels: Any,
    segments: Any = None,
    clv: Any = None,
    time_unit_days: float | None = None,
) -> pd.DataFrame:
    """One readable row per cluster, indexed by cluster number (``cluster``).

    Columns: ``size``, ``share`` (of customers), ``mean_recency`` and ``mean_T`` (summary time unit),
    ``mean_days_since_last`` (days), ``mean_frequency`` (repeat purchase days), ``mean_purchase_days``,
    ``mean_monetary_value`` and ``mean_total_spend`` (currency), ``one_time_share``, mean R/F/M scores
    (``mean_r_score`` ...), ``mean_clv`` (currency, when ``clv`` is given), ``dominant_segment`` and
    ``dominant_segment_share`` (when ``segments`` is given), and ``label``: a short name from the
    profile ("High value, active", "Lapsed one-timers", ...; made unique with the cluster number).
    Activity comes from the mean R score (>= 3.5 active, >= 2.5 cooling, else lapsed), value from the
    mean M score (>= 3.75 high, >= 2.5 mid, else low); "one-timers" when half or more bought once.

    ``labels``, ``segments`` and ``clv`` are Series indexed by customer_id or arrays in summary order.
    """
    summary = _check_frame(summary, "cluster_profiles: summary")
    if len(summary) == 0:
        raise SegmentError("cluster_profiles: summary has no customers")
    lab = _aligned(labels, summary.index, "labels")
    if not pd.api.types.is_integer_dtype(lab):
        raise SegmentError(f"cluster_profiles: labels must be integer cluster numbers, got {lab.dtype}")
    unit = infer_time_unit_days(summary) if time_unit_days is None else float(time_unit_days)
    data = _profile_measures(summary, lab.to_numpy(dtype=np.int64), unit)
    if clv is not None:
        c = _aligned(clv, summary.index, "clv").to_numpy(dtype=np.float64)
        if not np.isfinite(c).all():
            raise SegmentError("cluster_profiles: clv has non-finite value(s)")
        data["mean_clv"] = c
    grouped = data.groupby("cluster", sort=True)
    prof = grouped.mean()
    size = grouped.size()
    prof.insert(0, "size", size.astype(np.int64))
    prof.insert(1, "share", size / len(data))
    if segments is not None:
        seg = _aligned(segments, summary.index, "segments").astype(str)
        counts = pd.crosstab(data["cluster"].to_numpy(), seg.to_numpy())
        prof["dominant_segment"] = counts.idxmax(axis=1).reindex(prof.index).astype(str)
        prof["dominant_segment_share"] = (
            (counts.max(axis=1) / counts.sum(axis=1)).reindex(prof.index).astype(float)
        )
    names = [
        _readable_label(row.one_time_share, row.mean_r_score, row.mean_m_score) for row in prof.itertuples()
    ]
    dup = pd.Series(names).duplicated(keep=False).to_numpy()
    prof["label"] = [
        f"{nm} (cluster {k})" if d else nm for nm, k, d in zip(names, prof.index, dup, strict=True)
    ]
    prof.index.name = "cluster"
    return prof


def _profile_measures(summary: pd.DataFrame, cluster: np.ndarray, unit: float) -> pd.DataFrame:
    """Per customer: the cluster and the measures whose cluster means form the profile (time in the
    summary's unit unless named ``days``, money in currency)."""
    source = "cluster_profiles: summary"
    scores = rfm_scores(summary)
    feats = rfm_features(summary, unit)
    if _frequency_column(summary) == "purchase_days":
        one_time = feats["frequency"] <= 1
    else:
        one_time = summary["frequency"] <= 0
    return pd.DataFrame(
        {
            "cluster": cluster,
            "mean_recency": _numeric_column(summary, "recency", source),
            "mean_T": _numeric_column(summary, "T", source),
            "mean_days_since_last": feats["recency_days"].to_numpy(),
            "mean_frequency": _numeric_column(summary, "frequency", source),
            "mean_purchase_days": feats["frequency"].to_numpy(),
            "mean_monetary_value": _numeric_column(summary, "monetary_value", source),
            "mean_total_spend": _numeric_column(summary, _monetary_column(summary), source),
            "one_time_share": one_time.to_numpy(dtype=np.float64),
            "mean_r_score": scores["r_score"].to_numpy(dtype=np.float64),
            "mean_f_score": scores["f_score"].to_numpy(dtype=np.float64),
            "mean_m_score": scores["m_score"].to_numpy(dtype=np.float64),
        }
    )
