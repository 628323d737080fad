"""Bought together: order co-occurrence neighbours per product, for the post-order cross-sell.

Layout: :class:`CoOccurrence` (the neighbour table and :meth:`CoOccurrence.rank_basket`) and
:func:`fit_cooccurrence`.

Invariants: an order is an ``order_id`` (or, without that column, one customer at one timestamp);
products are counted once per order; the score of a pair is orders holding both / sqrt(orders of
each) (cosine, unitless in (0, 1]). Each product keeps its :data:`NEIGHBOURS_KEEP` best neighbours,
best first, ties by product column, padded with -1 (score 0). Work is chunked so that no more than
about :data:`SCORE_CELLS` * 4 products x products cells are held at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rebuy.recommend.interactions import PurchaseLines

NEIGHBOURS_KEEP = 100
"""Co-occurrence neighbours kept per product."""

SCORE_CELLS = 1 << 23
"""Max customers x products (or products x products) cells scored at once (~32 MB of float32)."""


@dataclass(eq=False)
class CoOccurrence:
    """``neighbours`` (products x k int64 columns, -1 padded) and their ``scores`` (float32)."""

    neighbours: np.ndarray
    scores: np.ndarray

    def rank_basket(self, basket: np.ndarray, excluded: np.ndarray, n: int) -> list[int]:
        """Up to ``n`` product columns co-occurring with the ``basket`` columns, best first.

        A product's score is the sum of its scores with each basket product (summed in basket then
        neighbour order, in float64); basket products and ``excluded`` (a mask) are left out.
        """
        nb = self.neighbours[basket].ravel()
        sc = self.scores[basket].ravel().astype(np.float64)
        ok = nb >= 0
        nb, sc = nb[ok], sc[ok]
        uniq, inv = np.unique(nb, return_inverse=True)
        tot = np.bincount(inv, weights=sc, minlength=len(uniq))
        keep = ~np.isin(uniq, basket) & ~excluded[uniq]
        uniq, tot = uniq[keep], tot[keep]
        return uniq[np.lexsort((uniq, -tot))][:n].tolist()


def _order_matrix(lines: PurchaseLines, n_products: int) -> sp.csr_matrix:
    """Orders x products, 1 where the order holds the product."""
    frame = lines.frame
    if "order_id" in frame.columns:
        o_codes, _ = pd.factorize(frame["order_id"].astype("string"))
    else:  # one order per customer and timestamp
        key = pd.Series(lines.customer_codes).astype(str) + "|" + lines.timestamps.astype(str).to_numpy()
        o_codes, _ = pd.factorize(key)
    n_o = int(o_codes.max()) + 1 if len(o_codes) else 0
    orders = sp.csr_matrix(
        (np.ones(len(o_codes), dtype=np.float32), (o_codes, lines.product_codes)), shape=(n_o, n_products)
    )
    orders.data[:] = 1.0  # duplicates were summed; binarise
    orders.sum_duplicates()
    orders.data[:] = 1.0
    return orders


def fit_cooccurrence(lines: PurchaseLines, n_products: int) -> CoOccurrence:
    """Top co-occurring products per product: orders holding both, cosine-normalised."""
    n_p = n_products
    orders = _order_matrix(lines, n_p)
    item_orders = orders.T.tocsr()
    n_orders = np.asarray(orders.sum(axis=0)).ravel().astype(np.float64)
    k = min(NEIGHBOURS_KEEP, max(n_p - 1, 0))
    nb = np.full((n_p, k), -1, dtype=np.int64)
    nb_score = np.zeros((n_p, k), dtype=np.float32)
    norm = np.sqrt(np.maximum(n_orders, 1.0))
    if k == 0:
        return CoOccurrence(nb, nb_score)
    # top-k of each sparse co-occurrence row: sort the non-zeros by (row, -score, product)
    chunk = max(1, SCORE_CELLS // max(n_p, 1)) * 4
    for start in range(0, n_p, chunk):
        stop = min(n_p, start + chunk)
        co = (item_orders[start:stop] @ orders).tocoo()
        r = co.row.astype(np.int64)
        c = co.col.astype(np.int64)
        v = co.data.astype(np.float64)
        keep = (c != r + start) & (v > 0)
        r, c, v = r[keep], c[keep], v[keep]
        v = v / (norm[start + r] * norm[c])
        o = np.lexsort((c, -v, r))
        r, c, v = r[o], c[o], v[o]
        first = np.concatenate(([0], np.cumsum(np.bincount(r, minlength=stop - start))[:-1]))
        rank = np.arange(len(r)) - first[r]
        sel = rank < k
        nb[start + r[sel], rank[sel]] = c[sel]
        nb_score[start + r[sel], rank[sel]] = v[sel]
    return CoOccurrence(nb, nb_score)
