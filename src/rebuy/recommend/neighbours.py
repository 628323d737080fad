"""Item neighbourhood model: implicit's item-item KNN fit, kept as one sparse similarity matrix.

Layout: :class:`KnnSpec` (the weighting and K), :class:`ItemNeighbours` (the fitted similarity and
its calls), :func:`knn_weighted` (implicit's weighting, for the Spark fit), :func:`fit_neighbours`, then :func:`knn_top` (sparse filtered top-k of many customers).

implicit's ``ItemItemRecommender`` family (``BM25Recommender``, ``CosineRecommender``,
``TFIDFRecommender``) weights the customers x products matrix and keeps each product's ``K`` most
similar products (``all_pairs_knn``; a product is its own neighbour). A customer's score of product
``j`` is ``sum_i user_items[u, i] * similarity[i, j]``, i.e. one row of the sparse product
``user_items @ similarity``; only products reachable from the customer's history get a score.

Invariants and traps:

- only the scipy ``csr_matrix`` similarity (products x products, float64 as implicit gives it,
  sorted indices) is kept: no implicit object is stored, so a bundle loads without implicit;
- lists are best first, ties by product column (implicit's own order among exact ties may differ);
  a customer with fewer than ``k`` allowed candidates gets a shorter list (padded with -1), which
  the caller fills from popularity as for the factor models;
- work is done in row blocks whose product has at most about :data:`KNN_CELLS` stored entries.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from rebuy.progress import interactive

log = logging.getLogger(__name__)

KNN_WEIGHTINGS = ("bm25", "cosine", "tfidf")
"""``knn_weighting`` choices: implicit's BM25Recommender, CosineRecommender, TFIDFRecommender."""

KNN_CELLS = 1 << 22
"""Max stored entries of one block of ``user_items @ similarity`` (~50 MB with the sort keys)."""


@dataclass(frozen=True)
class KnnSpec:
    """``weighting`` (bm25|cosine|tfidf), ``neighbours`` (implicit's K), ``bm25_k1``/``bm25_b`` (BM25
    only; implicit's BM25Recommender defaults) and ``num_threads`` (0 = every core)."""

    weighting: str = "bm25"
    neighbours: int = 20
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    num_threads: int = 0


@dataclass(eq=False)
class ItemNeighbours:
    """``similarity``: products x products ``csr_matrix`` (row ``i`` holds the ``neighbours`` most
    similar products of ``i``, itself included); ``weighting`` and ``neighbours`` as fitted."""

    similarity: sp.csr_matrix
    weighting: str
    neighbours: int

    def scores(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        """``user_items @ similarity`` in float64 (rows x products, sorted indices)."""
        out = sp.csr_matrix(sp.csr_matrix(user_items, dtype=np.float64) @ self.similarity)
        out.sort_indices()
        return out

    def similar(self, idx: int) -> np.ndarray:
        """The stored neighbours of product column ``idx`` but itself, most similar first (ties by column)."""
        s = self.similarity
        cols = s.indices[s.indptr[idx] : s.indptr[idx + 1]].astype(np.int64)
        sim = s.data[s.indptr[idx] : s.indptr[idx + 1]]
        keep = cols != idx
        cols, sim = cols[keep], sim[keep]
        return cols[np.lexsort((cols, -sim))]


def _implicit_knn(spec: KnnSpec):  # noqa: ANN202 - an implicit ItemItemRecommender
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender, TFIDFRecommender

    k, threads = int(spec.neighbours), int(spec.num_threads)
    if spec.weighting == "bm25":
        return BM25Recommender(K=k, K1=float(spec.bm25_k1), B=float(spec.bm25_b), num_threads=threads)
    if spec.weighting == "cosine":
        return CosineRecommender(K=k, num_threads=threads)
    return TFIDFRecommender(K=k, num_threads=threads)


def knn_weighted(user_items: sp.csr_matrix, spec: KnnSpec) -> sp.csr_matrix:
    """The customers x products matrix implicit's KNN class of ``spec`` builds its similarity from
    (its own weighting functions, so the values are bit-equal): BM25 of the products' rows, the
    products' L2-normalised columns (cosine) or normalised TF-IDF. float64, sorted indices."""
    from implicit.nearest_neighbours import bm25_weight, normalize, tfidf_weight

    counts = sp.csr_matrix(user_items)
    if spec.weighting == "bm25":
        w = bm25_weight(counts.T, float(spec.bm25_k1), float(spec.bm25_b)).T
    elif spec.weighting == "cosine":
        w = normalize(counts.T).T
    else:
        w = normalize(tfidf_weight(counts.T)).T
    out = sp.csr_matrix(w, dtype=np.float64)
    out.sort_indices()
    return out


def too_small_for_knn(user_items: sp.csr_matrix) -> bool:
    """Whether a customers x products matrix is too small for an item-KNN model (fewer than two
    products or customers): warns that the recommender falls back to popularity."""
    n_c, n_p = user_items.shape
    if n_p < 2 or n_c < 2:
        log.warning("Recommender: %d product(s), %d customer(s): no item-KNN model, popularity only", n_p, n_c)
        return True
    return False


def fit_neighbours(user_items: sp.csr_matrix, spec: KnnSpec) -> ItemNeighbours | None:
    """Fit implicit's item-item KNN on the customers x products matrix; None when it is too small."""
    if too_small_for_knn(user_items):
        return None
    from implicit.utils import ParameterWarning

    model = _implicit_knn(spec)
    with warnings.catch_warnings():  # implicit's KNN fit hands its own weighted coo matrix on to all_pairs_knn
        warnings.filterwarnings("ignore", category=ParameterWarning)
        model.fit(sp.csr_matrix(user_items), show_progress=interactive())
    sim = sp.csr_matrix(model.similarity, dtype=np.float64)
    sim.sort_indices()
    if not np.isfinite(sim.data).all():
        raise FloatingPointError("Recommender: implicit produced non-finite item similarities")
    return ItemNeighbours(sim, spec.weighting, int(spec.neighbours))


def _row_top(scores: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` stored entries of each row (best first, ties by column), -1 / 0 padded.

    Rows are grouped by their number of entries (up to a power of two); each group is laid out
    densely (padded) and sorted row-wise with a stable sort on the negated score, so exact ties stay
    in column order (a CSR row's columns are sorted).
    """
    m = scores.shape[0]
    top = np.full((m, k), -1, dtype=np.int64)
    top_s = np.zeros((m, k), dtype=np.float64)
    nnz = np.diff(scores.indptr).astype(np.int64)
    width = np.zeros(m, dtype=np.int64)
    has = nnz > 0
    width[has] = 1 << np.ceil(np.log2(np.maximum(nnz[has], 1))).astype(np.int64)
    for w in np.unique(width[has]).tolist():
        rows = np.flatnonzero(width == w)
        pos = scores.indptr[rows][:, None] + np.arange(w, dtype=np.int64)[None, :]
        valid = np.arange(w)[None, :] < nnz[rows][:, None]
        pos = np.where(valid, pos, 0)
        neg = np.where(valid, -scores.data[pos], np.inf)
        kk = min(k, w)
        o = np.argsort(neg, axis=1, kind="stable")[:, :kk]
        take = np.take_along_axis(valid, o, axis=1)
        p = np.take_along_axis(pos, o, axis=1)
        top[rows, :kk] = np.where(take, scores.indices[p], -1)
        top_s[rows, :kk] = np.where(take, scores.data[p], 0.0)
    return top, top_s


def _drop(scores: sp.csr_matrix, banned: sp.csr_matrix, excluded: np.ndarray) -> sp.csr_matrix:
    """``scores`` without the entries at ``banned``'s nonzeros (same rows) and ``excluded`` columns."""
    n_p = scores.shape[1]
    m = scores.shape[0]
    keep = ~excluded[scores.indices]
    if banned.nnz:
        banned = sp.csr_matrix(banned)
        banned.sort_indices()
        key_b = np.repeat(np.arange(m, dtype=np.int64), np.diff(banned.indptr)) * n_p + banned.indices
        key_s = np.repeat(np.arange(m, dtype=np.int64), np.diff(scores.indptr)) * n_p + scores.indices
        at = np.minimum(np.searchsorted(key_b, key_s), len(key_b) - 1)
        keep &= key_b[at] != key_s
    if keep.all():
        return scores
    row = np.repeat(np.arange(m, dtype=np.int64), np.diff(scores.indptr))[keep]
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=m), out=indptr[1:])
    return sp.csr_matrix((scores.data[keep], scores.indices[keep], indptr), shape=scores.shape)


def knn_top(
    knn: ItemNeighbours,
    user_items: sp.csr_matrix,
    banned: sp.csr_matrix,
    k: int,
    excluded: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` product columns (int64, -1 padded) and float64 scores of each row of ``user_items``
    (the customers' fitted confidence rows) scored against the neighbours, without the products of
    the same row of ``banned`` (already bought, not re-purchasable) and the ``excluded`` mask."""
    m = user_items.shape[0]
    # rows per block from the expected fill: stored neighbours per product x products per customer
    per_row = max(1.0, knn.similarity.nnz / max(knn.similarity.shape[0], 1)) * max(
        1.0, user_items.nnz / max(m, 1)
    )
    block = int(max(1, KNN_CELLS // per_row))
    tops, top_ss = [], []
    for s in range(0, m, block):
        sc = _drop(knn.scores(user_items[s : s + block]), banned[s : s + block], excluded)
        t, ts = _row_top(sc, k)
        tops.append(t)
        top_ss.append(ts)
    if not tops:
        return np.full((0, k), -1, dtype=np.int64), np.zeros((0, k), dtype=np.float64)
    return np.concatenate(tops), np.concatenate(top_ss)
