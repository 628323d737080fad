"""One recommendation call: model lists for known customers, popularity for the rest, in batches.

Layout: :class:`Batch` (one batch's padded result) with its two outputs :meth:`Batch.frame` and
:meth:`Batch.lists`, then :class:`Serving` (the fitted parts and the resolved policy of one call)
whose :meth:`Serving.batch` computes a :class:`Batch`.

Invariants: a list never repeats a product and never holds an excluded one; a customer with a model
list shorter than ``n`` is padded from popularity (score 0); a known customer never gets a product
they bought unless it is re-purchasable, except when nothing else is left (then popularity with the
exclusions only, so no list is empty while the catalogue has a recommendable product).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rebuy.recommend.interactions import Interactions
from rebuy.recommend.policy import Exclusions, RecommendPolicy
from rebuy.recommend.popularity import Popularity, SegmentLookup, fill
from rebuy.recommend.topk import Model, model_top

FRAME_COLUMNS = ("customer_id", "rank", "product_id", "score", "source")
"""Columns of ``recommend(..., output="frame")``: rank 1 = best; score 0 for popularity fill;
source "model" or "popularity"."""


@dataclass(eq=False)
class Batch:
    """``keys`` (customer ids), ``items`` (product columns, keys x n, -1 padded), ``scores``
    (float64), ``lens`` (list lengths) and ``from_model`` (bool per key)."""

    keys: list[str]
    items: np.ndarray
    scores: np.ndarray
    lens: np.ndarray
    from_model: np.ndarray

    @classmethod
    def empty(cls) -> Batch:
        z = np.zeros((0, 0), dtype=np.int64)
        return cls([], z, z.astype(np.float64), np.zeros(0, np.int64), np.zeros(0, bool))

    def frame(self, product_ids: np.ndarray) -> pd.DataFrame:
        """One row per recommended product (columns :data:`FRAME_COLUMNS`)."""
        n = self.items.shape[1] if self.items.ndim == 2 else 0
        lens = np.asarray(self.lens)
        mask = np.arange(n)[None, :] < lens[:, None]
        src = np.where(self.from_model, "model", "popularity").astype(object)
        return pd.DataFrame(
            {
                "customer_id": pd.array(np.repeat(np.array(self.keys, dtype=object), lens), dtype="string"),
                "rank": np.broadcast_to(np.arange(1, n + 1, dtype=np.int64), self.items.shape)[mask],
                "product_id": pd.array(product_ids[self.items[mask]], dtype="string"),
                "score": self.scores[mask].astype(np.float64),
                "source": pd.array(np.repeat(src, lens), dtype="string"),
            }
        )

    def lists(self, product_ids: np.ndarray) -> list[list[str]]:
        """Product id lists in key order (one C-level ``tolist`` for full rows)."""
        if not len(self.items):
            return []
        out = product_ids[np.maximum(self.items, 0)].tolist()
        for i in np.flatnonzero(self.lens < self.items.shape[1]).tolist():
            out[i] = out[i][: self.lens[i]]
        return out


@dataclass(eq=False)
class Serving:
    """The fitted parts a call reads and its policy, resolved on the catalogue (``exclusions``,
    ``repurch``: bool per product); ``num_threads`` for implicit's top-k. ``latent`` is the fitted
    model: factors (ALS / BPR) or item neighbours (item-KNN), None for popularity only."""

    interactions: Interactions
    latent: Model | None
    popularity: Popularity
    policy: RecommendPolicy
    exclusions: Exclusions
    repurch: np.ndarray
    num_threads: int = 0

    def _model_rows(self, rows: np.ndarray) -> np.ndarray:
        """Bool per row: known, with a model and enough history (else cold start)."""
        use = (rows >= 0) & (self.latent is not None)
        if use.any():
            use[use] = self.interactions.n_history[rows[use]] >= max(int(self.policy.min_history), 1)
        return use

    def _pad(self, batch: Batch, rows: np.ndarray, segments: SegmentLookup) -> None:
        """Popularity for cold customers and padding of short lists (few rows: a Python loop is fine)."""
        items, n = batch.items, batch.items.shape[1]
        short = np.flatnonzero(batch.lens < n)
        labels = segments.labels([batch.keys[i] for i in short]) if len(short) else []
        history = self.interactions.history
        banned_all = self.exclusions.banned
        for i, label in zip(short.tolist(), labels, strict=True):
            row = int(rows[i]) if rows[i] >= 0 else None
            banned: set[int] | frozenset[int] = banned_all
            if row is not None:
                bought = history.indices[history.indptr[row] : history.indptr[row + 1]]
                bought = bought[~self.repurch[bought]]
                if len(bought):
                    banned = banned_all | set(bought.tolist())
            before = int(batch.lens[i])
            candidates = [self.popularity.for_customer(row, label), self.popularity.popular]
            chosen = fill(items[i, :before].tolist(), n, candidates, banned)
            if not chosen:  # everything left was bought already: popularity, exclusions only
                chosen = fill([], n, [self.popularity.popular], banned_all)
            items[i, : len(chosen)] = chosen
            batch.scores[i, before:] = 0.0
            batch.lens[i] = len(chosen)

    def batch(self, keys: list[str], n: int, segments: SegmentLookup) -> Batch:
        """Top-``n`` lists of one batch of customer ``keys``."""
        m = len(keys)
        items = np.full((m, n), -1, dtype=np.int64)
        scores = np.zeros((m, n), dtype=np.float64)
        rows = self.interactions.customer_rows(keys)
        use_model = self._model_rows(rows)
        model_pos = np.flatnonzero(use_model)
        k = min(n, len(self.interactions.product_ids))
        if len(model_pos):
            assert self.latent is not None
            items[model_pos, :k], scores[model_pos, :k] = model_top(
                self.latent, self.interactions.history, rows[model_pos], k, self.exclusions, self.repurch,
                self.policy.history_weight, self.num_threads, self.interactions.user_items,
            )
        lens = (items >= 0).sum(axis=1)
        out = Batch(keys, items, scores, lens, use_model & (lens > 0))
        self._pad(out, rows, segments)
        return out
