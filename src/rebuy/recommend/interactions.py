"""The customers x products purchase matrix: which lines count, the id maps, confidence and weighting.

Layout: :func:`to_key` (every customer / product id is looked up as a str), :func:`weight_matrix`,
:class:`Confidence` (the weighting hyper-parameters), :class:`PurchaseLines` with
:func:`select_lines` (the lines a fit learns from, coded), then :class:`Interactions` (ids and
matrices, pickled compactly) with :func:`build_interactions` (from lines) and
:func:`interactions_from_pairs` (from lines summed per customer and product, as ``rebuy.spark_recommender``
collects them).

Invariants:

- rows are customers, columns products, both sorted by id (``pd.factorize(sort=True)``); every
  matrix is a ``scipy.sparse.csr_matrix`` (implicit wants csr_matrix, not csr_array), float32, with
  sorted indices;
- excluded products and lines after ``as_of`` never reach a matrix; an as-of date includes its
  whole day (``rebuy.dates``) and the recency decay is measured from the last included instant;
- ``history`` holds (decayed) purchase lines per customer and product, ``user_items`` the weighted
  confidence implicit learns from; ``n_history`` is 0 for a customer with nothing to learn from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rebuy.dates import inclusive_end
from rebuy.errors import InvalidParameterError, RecommenderDataError
from rebuy.recommend.defaults import RECOMMENDER_COLUMNS

_ONE_US = pd.Timedelta(microseconds=1)


def to_key(x: Any) -> str:
    """The look-up key of an id: the id itself if it is a str, else ``str(id)``."""
    return x if isinstance(x, str) else str(x)


def customer_keys(customer_ids: Iterable[Any] | str) -> list[str]:
    """Look-up keys of ``customer_ids`` in order; a single str is one customer."""
    if isinstance(customer_ids, str | bytes):
        customer_ids = [customer_ids]
    return [to_key(c) for c in customer_ids]


def weight_matrix(x: sp.csr_matrix, weighting: str, k1: float, b: float) -> sp.csr_matrix:
    """Apply the confidence weighting to a customers x products matrix (rows are customers).

    ``bm25``/``tfidf`` down-weight products many customers buy (idf over customers) and, for
    BM25, normalise by the customer's basket size, as ``implicit.nearest_neighbours`` does.
    """
    if weighting == "none":
        out = x.copy()
    elif weighting == "log":
        out = x.copy()
        out.data = np.log1p(out.data)
    else:
        from implicit.nearest_neighbours import bm25_weight, tfidf_weight

        w = bm25_weight(x, K1=k1, B=b) if weighting == "bm25" else tfidf_weight(x)
        out = sp.csr_matrix(w)
        # an item bought by every customer gets idf log(N/(N+1)) < 0: keep it as a weak positive
        out.data = np.maximum(out.data, 1e-6)
    out = sp.csr_matrix(out, dtype=np.float32)
    out.sort_indices()
    return out


@dataclass(frozen=True)
class Confidence:
    """How purchase lines become confidence: ``confidence`` "count" (lines) or "spend" (currency),
    ``weighting`` (none|log|bm25|tfidf with ``bm25_k1``, ``bm25_b``), ``alpha`` (a multiplier) and
    ``recency_half_life_days`` (a line counts 0.5 ** (age in days / half-life); None = no decay)."""

    confidence: str = "count"
    weighting: str = "tfidf"
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    alpha: float = 0.1
    recency_half_life_days: float | None = None


@dataclass(eq=False)
class PurchaseLines:
    """The purchase lines a fit learns from: ``frame`` (the kept columns), ``timestamps``, integer
    codes of customers and products (rows / columns of the matrices), the ids they code, ``decay``
    (each line's recency weight, 1 without decay) and ``as_of`` (the reference instant, or None)."""

    frame: pd.DataFrame
    timestamps: pd.Series
    customer_codes: np.ndarray
    product_codes: np.ndarray
    customer_ids: np.ndarray
    product_ids: np.ndarray
    decay: np.ndarray
    as_of: pd.Timestamp | None


def _check_frame(transactions: Any) -> None:
    if not isinstance(transactions, pd.DataFrame):
        raise InvalidParameterError("Recommender.fit: transactions must be a pandas DataFrame")
    missing = [c for c in ("customer_id", "product_id", "timestamp") if c not in transactions.columns]
    if missing:
        raise RecommenderDataError(
            f"Recommender.fit: transactions have no {', '.join(missing)} column; the recommender needs "
            "products (data such as CDNOW without product_id cannot train it)"
        )


def select_lines(
    transactions: pd.DataFrame,
    as_of: Any,
    excluded: Callable[[pd.Series], np.ndarray],
    conf: Confidence,
) -> PurchaseLines:
    """The lines with a customer and a product, at or before ``as_of`` (a date: its whole day; None =
    all, the reference is then the last line), minus the products ``excluded`` flags; coded by id."""
    _check_frame(transactions)
    tx = transactions[[c for c in transactions.columns if c in RECOMMENDER_COLUMNS]]
    tx = tx[tx["customer_id"].notna() & tx["product_id"].notna()]
    ts = pd.to_datetime(tx["timestamp"])
    if as_of is not None:
        end = inclusive_end(as_of, "Recommender.fit: as_of")
        keep = (ts < end).to_numpy()
        tx, ts = tx[keep], ts[keep]
        as_of_ts = end - _ONE_US  # the last included instant: the recency reference
    else:
        as_of_ts = ts.max() if len(ts) else None
    if conf.confidence == "spend" and "amount" not in tx.columns:
        raise RecommenderDataError("Recommender.fit: confidence='spend' needs an 'amount' column")
    cust = tx["customer_id"].astype("string")
    prod = tx["product_id"].astype("string")
    kept = ~excluded(prod)
    tx, ts, cust, prod = tx[kept], ts[kept], cust[kept], prod[kept]
    if len(tx) == 0:
        raise RecommenderDataError(
            "Recommender.fit: no purchase lines left (after as_of and the product exclusions)"
        )
    c_codes, c_uniques = pd.factorize(cust, sort=True)
    p_codes, p_uniques = pd.factorize(prod, sort=True)
    if conf.recency_half_life_days is not None:
        age_days = ((as_of_ts - ts).dt.total_seconds().to_numpy() / 86400.0).clip(min=0.0)
        decay = 0.5 ** (age_days / float(conf.recency_half_life_days))
    else:
        decay = np.ones(len(tx))
    return PurchaseLines(
        tx, ts, c_codes, p_codes, np.asarray(c_uniques, dtype=object), np.asarray(p_uniques, dtype=object),
        decay, as_of_ts,
    )


@dataclass(eq=False)
class Interactions:
    """Ids and matrices of a fit.

    ``customer_ids`` / ``product_ids``: object arrays of str (row / column order); ``product_index``:
    product id -> column; ``history``, ``user_items``: customers x products ``csr_matrix`` (float32);
    ``n_history``: distinct products per customer (int64, 0 = cold). The customer id -> row map is
    built on first use and never pickled; customer ids pickle as one fixed-width unicode buffer (a
    million str objects load ~100x slower).
    """

    customer_ids: np.ndarray
    product_ids: np.ndarray
    product_index: dict[str, int]
    history: sp.csr_matrix
    user_items: sp.csr_matrix
    n_history: np.ndarray
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def customer_index(self) -> dict[str, int]:
        """customer_id -> row (built on first use, not pickled)."""
        if "index" not in self._cache:
            self._cache["index"] = dict(zip(self.customer_ids.tolist(), range(len(self.customer_ids)), strict=True))
        return self._cache["index"]

    def customer_rows(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of ``keys`` (int64, -1 for unknown customers), via a hash index built once."""
        idx = self._cache.get("pos")
        if idx is None:
            idx = self._cache["pos"] = pd.Index(self.customer_ids, dtype=object)
        if not len(keys):
            return np.zeros(0, dtype=np.int64)
        arr = np.asarray(keys, dtype=object)
        # fast path: a run of consecutive fitted customers (a score table of the training customers)
        r0 = int(idx.get_indexer(arr[:1])[0])
        if r0 >= 0 and r0 + len(arr) <= len(idx) and np.array_equal(self.customer_ids[r0 : r0 + len(arr)], arr):
            return np.arange(r0, r0 + len(arr), dtype=np.int64)
        return np.asarray(idx.get_indexer(arr), dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_cache"}
        ids = state["customer_ids"]
        if ids.dtype == object and len(ids):
            try:
                u = ids.astype(str)
            except (TypeError, ValueError):
                u = None
            if u is not None and np.array_equal(u.astype(object), ids):
                state["customer_ids"] = u
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        ids = state["customer_ids"]
        if isinstance(ids, np.ndarray) and ids.dtype.kind == "U":
            state = {**state, "customer_ids": ids.astype(object)}
        self.__dict__.update(state, _cache={})


def build_interactions(lines: PurchaseLines, conf: Confidence) -> Interactions:
    """The purchase history and the weighted confidence matrix of ``lines``."""
    n_c, n_p = len(lines.customer_ids), len(lines.product_ids)
    if conf.confidence == "spend":
        val = lines.frame["amount"].to_numpy(dtype=np.float64).clip(min=0.0)
    else:
        val = np.ones(len(lines.frame))
    if conf.recency_half_life_days is not None:
        val = val * lines.decay
    coords = (lines.customer_codes, lines.product_codes)
    raw = sp.csr_matrix((val, coords), shape=(n_c, n_p), dtype=np.float64)
    hist = sp.csr_matrix((lines.decay, coords), shape=(n_c, n_p), dtype=np.float64)
    return _interactions(lines.customer_ids, lines.product_ids, raw, hist, conf)


def interactions_from_pairs(
    customer_ids: np.ndarray,
    product_ids: np.ndarray,
    pairs: pd.DataFrame,
    conf: Confidence,
) -> Interactions:
    """:func:`build_interactions` from lines already summed per (customer, product): ``pairs`` has
    int64 codes ``c``/``p`` (rows / columns of ``customer_ids`` / ``product_ids``), ``raw`` (the
    confidence: lines or spend, decayed) and ``history`` (decayed lines), float64, one row per pair."""
    shape = (len(customer_ids), len(product_ids))
    coords = (pairs["c"].to_numpy(dtype=np.int64), pairs["p"].to_numpy(dtype=np.int64))
    raw = sp.csr_matrix((pairs["raw"].to_numpy(dtype=np.float64), coords), shape=shape, dtype=np.float64)
    hist = sp.csr_matrix((pairs["history"].to_numpy(dtype=np.float64), coords), shape=shape, dtype=np.float64)
    return _interactions(customer_ids, product_ids, raw, hist, conf)


def _interactions(
    customer_ids: np.ndarray, product_ids: np.ndarray, raw: sp.csr_matrix, hist: sp.csr_matrix, conf: Confidence
) -> Interactions:
    """The :class:`Interactions` of the summed confidence ``raw`` and history ``hist`` (float64 csr)."""
    raw.sum_duplicates()
    raw.eliminate_zeros()
    hist.sum_duplicates()
    history = sp.csr_matrix(hist, dtype=np.float32)
    user_items = weight_matrix(raw, conf.weighting, conf.bm25_k1, conf.bm25_b)
    if conf.alpha != 1.0:
        user_items.data *= np.float32(conf.alpha)
    n_history = np.diff(history.indptr).astype(np.int64)
    n_history[np.diff(user_items.indptr) == 0] = 0  # e.g. zero spend: nothing to learn from
    product_index = {p: i for i, p in enumerate(product_ids)}
    return Interactions(customer_ids, product_ids, product_index, history, user_items, n_history)
