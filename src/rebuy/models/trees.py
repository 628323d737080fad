"""Gradient-boosted trees as plain arrays: extracted from a fitted scikit-learn
``HistGradientBoostingRegressor`` and evaluated with numpy, so a stored ranker needs neither the
estimator nor scikit-learn to predict.

Layout: :class:`BoostedTrees` (the arrays and :meth:`~BoostedTrees.predict`) and
:func:`from_sklearn` (the extraction).

Invariants: the trees are exactly scikit-learn's (``TreePredictor.nodes``: feature, threshold,
missing-goes-left, children, leaf values); a row goes left when ``x <= threshold``, a missing
value (NaN) goes where ``missing_go_to_left`` says; the raw prediction is the baseline plus every
tree's leaf value added in fitting order (the same float additions scikit-learn makes), mapped
through the loss's inverse link (identity for squared error, exp for Poisson / gamma). Categorical
splits are not supported (the ranker's features are numeric; extraction refuses them). Infinite
inputs are refused as scikit-learn refuses them.

Evaluation: each value is first coded by how many of its feature's split thresholds lie below it
(:func:`split_codes`; ``x <= threshold`` is then an integer comparison), and each tree's leaf is
looked up from the packed go-left bits of its internal nodes (a 7-leaf tree: 6 bits, a 64-entry
table), so a tree costs a few passes over small integers instead of a float comparison and a
``where`` per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LINKS = ("identity", "log")
"""Inverse links: ``identity`` (squared error, absolute error, quantile), ``log`` (Poisson, gamma)."""

_LOSS_LINKS = {"squared_error": "identity", "absolute_error": "identity", "quantile": "identity",
               "poisson": "log", "gamma": "log"}


@dataclass(eq=False)
class BoostedTrees:
    """``n_trees`` regression trees in flat node arrays (node ``i`` of tree ``t`` is row
    ``offsets[t] + i``): ``feature`` (int64), ``threshold`` (float64), ``missing_left`` (bool),
    ``left`` / ``right`` (int64, tree-local child index), ``is_leaf`` (bool), ``value`` (float64, the
    leaf values), ``offsets`` (int64, n_trees + 1); ``baseline`` (raw prediction before the first
    tree), ``link`` (see :data:`LINKS`) and ``n_features``."""

    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray
    offsets: np.ndarray
    baseline: float
    link: str
    n_features: int

    @property
    def n_trees(self) -> int:
        return len(self.offsets) - 1

    def split_values(self) -> list[np.ndarray]:
        """Per feature, the sorted distinct thresholds the trees compare it with (may be empty)."""
        inner = ~self.is_leaf
        return [np.unique(self.threshold[inner & (self.feature == j)]) for j in range(self.n_features)]

    def check_rows(self, X: np.ndarray) -> np.ndarray:
        """``X`` as float64 rows x n_features; ValueError for another shape or an infinite value."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}, the trees take {self.n_features} features")
        if np.isinf(X).any():
            raise ValueError("Input X contains infinity or a value too large for dtype('float64').")
        return X

    def raw_predict(self, X: np.ndarray) -> np.ndarray:
        """Baseline + sum of the trees' leaf values for each row of ``X`` (rows x n_features)."""
        X = self.check_rows(X)
        splits = self.split_values()
        return self.raw_predict_codes(split_codes(X, splits), splits)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.link_inverse(self.raw_predict(X))

    def link_inverse(self, raw: np.ndarray) -> np.ndarray:
        """Predictions from raw predictions (exp for the log link)."""
        return np.exp(raw) if self.link == "log" else raw

    def raw_predict_codes(self, codes: np.ndarray, splits: list[np.ndarray]) -> np.ndarray:
        """:meth:`raw_predict` from the rows' :func:`split_codes` against ``splits`` (this model's
        :meth:`split_values`): a row goes left at a node on feature ``f`` with threshold
        ``splits[f][k]`` when its code is <= k (x <= threshold), or when it is :data:`MISSING` there
        and missing values go left."""
        raw = np.zeros(codes.shape[0], dtype=np.float64) + self.baseline
        for t in range(self.n_trees):
            raw += self._tree(t, codes, splits)
        return raw

    def _tree(self, t: int, codes: np.ndarray, splits: list[np.ndarray]) -> np.ndarray:
        """Leaf value of every row in tree ``t``: each internal node's go-left bit is packed into an
        integer per row, which indexes a table of the leaf every combination of bits reaches."""
        o, end = int(self.offsets[t]), int(self.offsets[t + 1])
        inner = np.flatnonzero(~self.is_leaf[o:end])
        n = codes.shape[0]
        if len(inner) == 0:
            return np.full(n, self.value[o] if end > o else 0.0)
        if len(inner) > MAX_PACKED_NODES:
            return self._tree_by_nodes(o, codes, splits)
        packed = np.zeros(n, dtype=np.uint16 if len(inner) > 8 else np.uint8)
        for bit, i in enumerate(inner):
            packed |= self._go_left(o + i, codes, splits).view(np.uint8).astype(packed.dtype, copy=False) << bit
        return self._leaf_table(o, end, inner)[packed]

    def _go_left(self, j: int, codes: np.ndarray, splits: list[np.ndarray]) -> np.ndarray:
        """Which rows go left at node ``j`` (global index)."""
        f = int(self.feature[j])
        col = codes[:, f]
        go_left = col <= np.searchsorted(splits[f], self.threshold[j])
        if self.missing_left[j]:
            go_left |= col == MISSING
        return go_left

    def _leaf_table(self, o: int, end: int, inner: np.ndarray) -> np.ndarray:
        """Leaf value reached by each combination of go-left bits of the ``inner`` nodes (bit b: node
        ``inner[b]`` sends the row left)."""
        combos = np.arange(2 ** len(inner))
        bit_of = np.full(end - o, -1)
        bit_of[inner] = np.arange(len(inner))
        node = np.zeros(len(combos), dtype=np.int64)
        for _ in range(len(inner)):  # at most one step per internal node on any path
            at_inner = ~self.is_leaf[o + node]
            if not at_inner.any():
                break
            left = (combos >> np.maximum(bit_of[node], 0)) & 1 == 1
            step = np.where(left, self.left[o + node], self.right[o + node])
            node = np.where(at_inner, step, node)
        return self.value[o + node]

    def _tree_by_nodes(self, o: int, codes: np.ndarray, splits: list[np.ndarray]) -> np.ndarray:
        """Leaf value of every row in a tree too large to pack (bottom-up: a node's value is its left
        child's where the row goes left, else its right child's)."""

        def value(i: int) -> Any:
            j = o + i
            if self.is_leaf[j]:
                return self.value[j]
            return np.where(self._go_left(j, codes, splits), value(int(self.left[j])), value(int(self.right[j])))

        return np.broadcast_to(np.asarray(value(0), dtype=np.float64), (codes.shape[0],))


MISSING = np.iinfo(np.uint16).max
"""The split code of a missing value (NaN)."""

MAX_PACKED_NODES = 16
"""Trees with at most this many internal nodes are evaluated through a table of their leaves."""


def split_codes(X: np.ndarray, splits: list[np.ndarray]) -> np.ndarray:
    """Per row and feature, how many of that feature's sorted ``splits`` lie below the value (so
    ``x <= splits[f][k]`` exactly when the code is <= k); :data:`MISSING` for NaN. uint16, one
    contiguous column per feature."""
    codes = np.empty(X.shape, dtype=np.uint16, order="F")
    for f, s in enumerate(splits):
        set_codes(codes, f, X[:, f], s)
    return codes


def set_codes(codes: np.ndarray, f: int, col: np.ndarray, splits: np.ndarray, positions: np.ndarray | None = None) -> None:
    """Column ``f`` of :func:`split_codes` from the values ``col`` (``positions``:
    ``searchsorted(splits, col)`` when already computed)."""
    if len(splits) >= MISSING:
        raise ValueError(f"feature {f} has {len(splits)} split values; at most {MISSING - 1} are supported")
    pos = np.searchsorted(splits, col) if positions is None else positions
    codes[:, f] = np.where(np.isnan(col), MISSING, pos)


def from_sklearn(model: Any) -> BoostedTrees:
    """The trees of a fitted ``HistGradientBoostingRegressor`` (numeric splits only)."""
    link = _LOSS_LINKS.get(model.loss)
    if link is None:
        raise ValueError(f"unsupported loss {model.loss!r} (supported: {sorted(_LOSS_LINKS)})")
    if model.n_trees_per_iteration_ != 1:
        raise ValueError("only single-output regressors are supported")
    nodes = [iteration[0].nodes for iteration in model._predictors]
    if any(n["is_categorical"].any() for n in nodes):
        raise ValueError("categorical splits are not supported")
    allnodes = np.concatenate(nodes) if nodes else np.zeros(0, dtype=[("feature_idx", "<i8")])
    offsets = np.zeros(len(nodes) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(n) for n in nodes])
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    return BoostedTrees(
        feature=np.ascontiguousarray(allnodes["feature_idx"], dtype=np.int64),
        threshold=np.ascontiguousarray(allnodes["num_threshold"], dtype=np.float64),
        missing_left=np.ascontiguousarray(allnodes["missing_go_to_left"], dtype=bool),
        left=np.ascontiguousarray(allnodes["left"], dtype=np.int64),
        right=np.ascontiguousarray(allnodes["right"], dtype=np.int64),
        is_leaf=np.ascontiguousarray(allnodes["is_leaf"], dtype=bool),
        value=np.ascontiguousarray(allnodes["value"], dtype=np.float64),
        offsets=offsets,
        baseline=float(baseline[0]),
        link=link,
        n_features=int(model.n_features_in_),
    )
