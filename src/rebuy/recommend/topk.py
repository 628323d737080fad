"""Model top-k per customer under a policy: already-bought filter, exclusions, the repurchase blend.

Layout: :func:`model_top` (the entry point) and :func:`blend_scores` (the dense scoring of the
repurchase blend).

The model is a :class:`~rebuy.recommend.implicit_model.LatentFactors` (ALS / BPR) or an
:class:`~rebuy.recommend.neighbours.ItemNeighbours` (item-KNN: scores are rows of the sparse product
``user_items @ similarity``). Two paths, chosen per call:

- no blend (nothing re-purchasable, or ``history_weight`` 0): for factors, implicit's fused,
  multi-threaded ``topk`` (:func:`~rebuy.recommend.implicit_model.topk_filtered`), the same call as
  ``model.recommend(..., filter_already_liked_items=True, filter_items=excluded)``; for item-KNN the
  sparse top-k of :func:`~rebuy.recommend.neighbours.knn_top`; both with the already-bought filter
  on the purchase history minus the re-purchasable products;
- blend: every score of a row is needed (min-max scaling), so rows are scored densely in blocks of at
  most :data:`~rebuy.recommend.cooccurrence.SCORE_CELLS` cells.

Invariant: lists are best first with ties by product column (deterministic); products that may not
be recommended come out as column -1 with score 0 at the end of the row.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from rebuy.recommend.cooccurrence import SCORE_CELLS
from rebuy.recommend.implicit_model import FILTERED, LatentFactors, topk_filtered
from rebuy.recommend.neighbours import ItemNeighbours, knn_top
from rebuy.recommend.policy import Exclusions

Model = LatentFactors | ItemNeighbours


def _dense_model_scores(
    model: Model, rows: np.ndarray, user_items: sp.csr_matrix | None
) -> tuple[np.ndarray, sp.csr_matrix | None]:
    """Every product's model score for the customer ``rows`` (dense, float32), and for item-KNN the
    sparse scores (their stored entries are the products the model reaches; None for factors)."""
    if isinstance(model, ItemNeighbours):
        assert user_items is not None, "item-KNN scores need the customers' user_items rows"
        sparse = model.scores(user_items[rows])
        return sparse.toarray().astype(np.float32), sparse
    return (model.user_factors[rows] @ model.item_factors.T).astype(np.float32, copy=False), None


def blend_scores(
    latent: Model,
    history: sp.csr_matrix,
    rows: np.ndarray,
    excluded: np.ndarray,
    repurch: np.ndarray,
    history_weight: float,
    user_items: sp.csr_matrix | None = None,
) -> np.ndarray:
    """Scores (len(rows) x products, float32); -inf where a product may not be recommended.

    Re-purchasable products score (1 - w) * min-max scaled model score + w * own history scaled by
    the customer's largest; other products bought before, and ``excluded`` ones, are -inf.
    ``user_items`` (the fitted confidence matrix) is needed for an item-KNN model only; with it, a
    product neither a neighbour of the history nor re-purchasable history is -inf too (popularity
    fills those places rather than an arbitrary pick among zero scores).
    """
    scores, sparse = _dense_model_scores(latent, rows, user_items)
    hist = history[rows]
    w = float(history_weight)
    if repurch.any() and w > 0:
        finite_min = scores.min(axis=1, keepdims=True)
        finite_max = scores.max(axis=1, keepdims=True)
        span = np.where(finite_max > finite_min, finite_max - finite_min, 1.0)
        scores = (1.0 - w) * (scores - finite_min) / span
        h = hist.multiply(repurch[None, :].astype(np.float32)).tocsr()
        hmax = np.asarray(h.max(axis=1).todense()).ravel()
        hmax = np.where(hmax > 0, hmax, 1.0)
        h = sp.diags(1.0 / hmax) @ h
        scores += w * np.asarray(h.todense(), dtype=np.float32)
        if sparse is not None:
            reached = np.asarray((abs(sparse) + abs(h)).astype(bool).todense())
            scores[~reached] = -np.inf
    elif sparse is not None:
        scores[~np.asarray(sparse.astype(bool).todense())] = -np.inf
    scores[:, excluded] = -np.inf
    bought = hist.tocoo()
    keep = ~repurch[bought.col]
    scores[bought.row[keep], bought.col[keep]] = -np.inf
    return scores


def _dense_top(
    latent: Model, history: sp.csr_matrix, rows: np.ndarray, k: int, excluded: np.ndarray,
    repurch: np.ndarray, history_weight: float, user_items: sp.csr_matrix | None,
) -> tuple[np.ndarray, np.ndarray]:
    n_p = history.shape[1]
    chunk = int(max(1, SCORE_CELLS // max(n_p, 1)))  # bounds the dense score block
    tops, top_ss = [], []
    for start in range(0, len(rows), chunk):
        sc = blend_scores(
            latent, history, rows[start : start + chunk], excluded, repurch, history_weight, user_items
        )
        top = np.argpartition(-sc, k - 1, axis=1)[:, :k] if k < n_p else np.tile(np.arange(n_p), (sc.shape[0], 1))
        tops.append(top)
        top_ss.append(np.take_along_axis(sc, top, axis=1))
    return np.concatenate(tops).astype(np.int64, copy=False), np.concatenate(top_ss).astype(np.float64)


def model_top(
    latent: Model,
    history: sp.csr_matrix,
    rows: np.ndarray,
    k: int,
    exclusions: Exclusions,
    repurch: np.ndarray,
    history_weight: float,
    num_threads: int = 0,
    user_items: sp.csr_matrix | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` product columns (int64, -1 where fewer than ``k`` are allowed) and float64 scores
    for the fitted customer ``rows``; ``repurch`` marks re-purchasable products. ``user_items``
    (the fitted confidence matrix) is needed for an item-KNN model only."""
    if repurch.any() and float(history_weight) > 0:
        top, top_s = _dense_top(latent, history, rows, k, exclusions.mask, repurch, history_weight, user_items)
        ok = np.isfinite(top_s)
    else:
        filt = history[rows]
        if repurch.any():  # w == 0: re-purchasable products are ranked by the model like any other
            filt = sp.csr_matrix(filt @ sp.diags((~repurch).astype(np.float32)))
            filt.eliminate_zeros()
        if isinstance(latent, ItemNeighbours):
            assert user_items is not None, "item-KNN scores need the customers' user_items rows"
            top, top_s = knn_top(latent, user_items[rows], filt, k, exclusions.mask)
            return top, top_s  # already best first, ties by column, -1 / 0 padded
        top, top_s32 = topk_filtered(
            latent.user_factors[rows], latent.item_factors, k, filt, exclusions.index, num_threads
        )
        ok = top_s32 > FILTERED
        top_s = top_s32.astype(np.float64)
    # best first, ties by product index (deterministic); not-allowed products last, then dropped
    o = np.lexsort((top, -np.where(ok, top_s, -np.inf)), axis=1)
    top, top_s, ok = (np.take_along_axis(a, o, axis=1) for a in (top, top_s, ok))
    top[~ok] = -1
    top_s[~ok] = 0.0
    return top, top_s
