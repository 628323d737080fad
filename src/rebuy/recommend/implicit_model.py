"""The implicit adapter: fit ALS / BPR on the confidence matrix, filtered top-k and item similarity.

Layout: :class:`ModelSpec` (implicit's hyper-parameters), :class:`LatentFactors` (the fitted
implicit model and what is derived from it), :func:`fit_latent`, then :func:`topk_filtered` (the
filtered top-k every model list goes through).

Invariants and traps:

- implicit is given a users x items ``scipy.sparse.csr_matrix`` (not csr_array);
- factors are capped at products - 1 and customers - 1 (more factors than items give NaN factors);
  fewer than 2 products or customers give no model (popularity only, :func:`fit_latent` is None);
- BLAS is held at 1 thread (threadpoolctl) around implicit, which runs ``num_threads`` threads of
  its own (0 = every core);
- the factors live in the implicit model only (``user_factors``/``item_factors`` are its arrays, so
  a pickle holds them once); non-finite factors are an internal error (``FloatingPointError``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from rebuy.progress import interactive

log = logging.getLogger(__name__)

FILTERED = np.finfo(np.float32).min
"""Score implicit's ``topk`` gives a filtered product (-FLT_MAX)."""


@dataclass(frozen=True)
class ModelSpec:
    """``algorithm`` "als" or "bpr", ``factors``, ``regularization``, ``iterations``,
    ``learning_rate`` (BPR only), ``random_state`` and ``num_threads`` (0 = every core)."""

    algorithm: str = "als"
    factors: int = 128
    regularization: float = 10.0
    iterations: int = 40
    learning_rate: float = 0.01
    random_state: int | None = 0
    num_threads: int = 0


@dataclass(eq=False)
class LatentFactors:
    """A fitted implicit ``model`` with its (capped) number of ``factors`` and the item factor
    norms ``item_norms`` (float32, zeros replaced by 1)."""

    model: Any
    factors: int
    item_norms: np.ndarray

    @property
    def user_factors(self) -> np.ndarray:
        """Customer factors (customers x factors, float32): the implicit model's own array."""
        return np.asarray(self.model.user_factors, dtype=np.float32)

    @property
    def item_factors(self) -> np.ndarray:
        """Product factors (products x factors, float32): the implicit model's own array."""
        return np.asarray(self.model.item_factors, dtype=np.float32)

    def similar(self, idx: int) -> np.ndarray:
        """Every other product column, most similar to ``idx`` first (cosine; ties by column)."""
        itf = self.item_factors
        v = itf[idx] / self.item_norms[idx]
        sim = (itf @ v) / self.item_norms
        sim[idx] = -np.inf
        order = np.lexsort((np.arange(len(sim)), -sim))
        return order[np.isfinite(sim[order])]


def _implicit_model(spec: ModelSpec, factors: int) -> Any:
    if spec.algorithm == "als":
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=factors,
            regularization=float(spec.regularization),
            alpha=1.0,
            iterations=int(spec.iterations),
            num_threads=int(spec.num_threads),
            random_state=spec.random_state,
        )
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    return BayesianPersonalizedRanking(
        factors=factors,
        learning_rate=float(spec.learning_rate),
        regularization=float(spec.regularization),
        iterations=int(spec.iterations),
        num_threads=int(spec.num_threads),
        random_state=spec.random_state,
    )


def fit_latent(user_items: sp.csr_matrix, spec: ModelSpec) -> LatentFactors | None:
    """Fit implicit on the customers x products confidence matrix; None when it is too small."""
    n_c, n_p = user_items.shape
    if n_p < 2 or n_c < 2:
        log.warning("Recommender: %d product(s), %d customer(s): no latent model, popularity only", n_p, n_c)
        return None
    factors = min(int(spec.factors), n_p - 1, n_c - 1)
    if factors < int(spec.factors):
        log.info("Recommender: factors capped at %d (catalogue of %d products)", factors, n_p)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # implicit checks the BLAS threads on creation
        model = _implicit_model(spec, factors)
        model.fit(user_items, show_progress=interactive())  # a bar per iteration on a terminal
    uf = np.asarray(model.user_factors, dtype=np.float32)
    itf = np.asarray(model.item_factors, dtype=np.float32)
    if not (np.isfinite(uf).all() and np.isfinite(itf).all()):
        raise FloatingPointError("Recommender: implicit produced non-finite factors")
    norms = np.linalg.norm(itf, axis=1)
    return LatentFactors(model, factors, np.where(norms > 0, norms, 1.0).astype(np.float32))


def _drop_filtered(
    ids: np.ndarray, sc: np.ndarray, filt: sp.csr_matrix, k: int, n_p: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each row of candidates (``ids``, ``sc``) not in that row of ``filt``, in
    implicit's order (score descending); filtered candidates are marked :data:`FILTERED`."""
    ids = np.asarray(ids, dtype=np.int64)
    sc = np.array(sc, dtype=np.float32)
    filt.sort_indices()
    if filt.nnz:
        n = len(ids)
        bought = np.repeat(np.arange(n, dtype=np.int64), np.diff(filt.indptr)) * n_p
        bought += filt.indices
        cand = (np.arange(n, dtype=np.int64)[:, None] * n_p + ids).ravel()
        at = np.minimum(np.searchsorted(bought, cand), len(bought) - 1)
        sc.ravel()[bought[at] == cand] = FILTERED
    o = np.argsort(sc <= FILTERED, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, o, axis=1), np.take_along_axis(sc, o, axis=1)


def topk_filtered(
    user: np.ndarray,
    items: np.ndarray,
    k: int,
    filt: sp.csr_matrix,
    excluded_idx: np.ndarray,
    num_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """implicit's ``topk`` of the ``user`` factor rows over ``items`` with the products of ``filt``
    (one row per user row) and ``excluded_idx`` scored -FLT_MAX, as ``filter_query_items`` does.

    Rows with few filtered products take an unfiltered ``topk`` of ``k`` + their count and are
    filtered here with one vectorised lookup (implicit slices the filter matrix in small Python-level
    batches, which costs more than the extra candidates); the rest go through implicit's own filter.
    Returns (product columns, float32 scores), both rows x ``k``.
    """
    from implicit.cpu.topk import topk
    from threadpoolctl import threadpool_limits

    n_p = len(items)
    f_items = excluded_idx.astype(np.int32) if len(excluded_idx) else None
    nf = np.diff(filt.indptr)
    extra = int(min(int(nf.max()) if len(nf) else 0, max(2 * k, 16)))
    kk = min(k + extra, n_p)
    light = nf <= kk - k
    top = np.empty((len(user), k), dtype=np.int64)
    top_s = np.empty((len(user), k), dtype=np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        heavy = np.flatnonzero(~light)
        if len(heavy):
            top[heavy], top_s[heavy] = topk(
                items, user[heavy], k, filter_query_items=filt[heavy], filter_items=f_items,
                num_threads=int(num_threads),
            )
        pos = np.flatnonzero(light)
        if len(pos):
            ids, sc = topk(items, user[pos], kk, filter_items=f_items, num_threads=int(num_threads))
            top[pos], top_s[pos] = _drop_filtered(ids, sc, filt[pos], k, n_p)
    return top, top_s
