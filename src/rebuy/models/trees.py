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

    def raw_predict(self, X: np.ndarray) -> np.ndarray:
        """Baseline + sum of the trees' leaf values for each row of ``X`` (rows x n_features)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has shape {X.shape}, the trees take {self.n_features} features")
        if np.isinf(X).any():
            raise ValueError("Input X contains infinity or a value too large for dtype('float64').")
        cols = np.asfortranarray(X)
        nan = np.isnan(cols)
        raw = np.zeros(len(X), dtype=np.float64) + self.baseline
        for t in range(self.n_trees):
            raw += self._tree(t, cols, nan)
        return raw

    def predict(self, X: np.ndarray) -> np.ndarray:
        raw = self.raw_predict(X)
        return np.exp(raw) if self.link == "log" else raw

    def _tree(self, t: int, cols: np.ndarray, nan: np.ndarray) -> np.ndarray:
        """Leaf value of every row in tree ``t`` (bottom-up: a node's value is its left child's
        where the row goes left, else its right child's)."""
        o = int(self.offsets[t])
        n_nodes = int(self.offsets[t + 1]) - o

        def value(i: int) -> Any:
            j = o + i
            if self.is_leaf[j]:
                return self.value[j]
            f = int(self.feature[j])
            go_left = cols[:, f] <= self.threshold[j]
            if self.missing_left[j]:
                go_left |= nan[:, f]
            return np.where(go_left, value(int(self.left[j])), value(int(self.right[j])))

        out = value(0) if n_nodes else 0.0
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (cols.shape[0],))


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
