"""Figures that judge a prediction, shared by the model choice, ``rebuy evaluate`` and the CLV
ranker: pure numpy on 1-D arrays (one value per customer), no model and no validation.

- ranking: :func:`auc` (buying again), :func:`average_ranks`, :func:`spearman`, :func:`top_share`
  and :func:`capture` (the share of revenue the top 10% / 20% of a score bring);
- calibration: :func:`deciles`, :func:`decile_table` (mean predicted and observed share per decile),
  :func:`log_loss` (nats);
- reports: :func:`json_float` (rounded, NaN and inf as None).

Invariants: scores are never modified; ties are ranked as stated per function (AUC and Spearman:
average ranks; deciles and top shares: by position), so every figure is deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def json_float(x: float, nd: int = 6) -> float | None:
    """``x`` rounded to ``nd`` decimals for a JSON report; None for NaN / inf."""
    x = float(x)
    return round(x, nd) if np.isfinite(x) else None


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the boolean ``label`` (ties count half); NaN when
    one class is empty."""
    label = np.asarray(label, dtype=bool)
    n1, n0 = int(label.sum()), int((~label).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = average_ranks(np.asarray(score, dtype=np.float64))
    return float((ranks[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (scipy's ``rankdata`` without importing
    scipy.stats, which costs seconds on a cold start)."""
    order = np.argsort(values, kind="mergesort")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks


def deciles(score: np.ndarray, n: int = 10) -> np.ndarray:
    """Decile 1 (lowest) .. n (highest) by rank, ties broken by position (always n near-equal groups)."""
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score), dtype=np.int64)
    ranks[order] = np.arange(len(score))
    return (ranks * n // max(len(score), 1)) + 1


def decile_table(predicted: np.ndarray, observed: np.ndarray, n: int = 10) -> pd.DataFrame:
    """Per decile of ``predicted`` (1 = lowest; near-equal groups, ties by position): customers,
    mean predicted and observed share, and their absolute difference."""
    group = deciles(predicted, n)
    present = np.unique(group)
    customers = np.bincount(group, minlength=n + 1)[present]
    mean_predicted = np.bincount(group, weights=np.asarray(predicted, dtype=float), minlength=n + 1)[present] / customers
    observed_share = np.bincount(group, weights=np.asarray(observed, dtype=float), minlength=n + 1)[present] / customers
    return pd.DataFrame({"decile": present, "customers": customers, "mean_predicted": mean_predicted,
                         "observed_share": observed_share, "abs_error": np.abs(mean_predicted - observed_share)})


def log_loss(p: np.ndarray, label: np.ndarray) -> float:
    """Mean binary log loss (nats) with probabilities clipped to [1e-9, 1 - 1e-9]."""
    p = np.clip(p, 1e-9, 1 - 1e-9)
    y = np.asarray(label, dtype=bool)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def top_share(score: np.ndarray, revenue: np.ndarray, share: float) -> float:
    """Share of the total ``revenue`` (currency) brought by the ``share`` of customers with the
    highest ``score`` (at least one; ties by position); NaN when there is no revenue."""
    total = revenue.sum()
    if total <= 0:
        return float("nan")
    k = max(1, int(round(share * len(score))))
    idx = np.argsort(-score, kind="stable")[:k]
    return float(revenue[idx].sum() / total)


def capture(score: np.ndarray, revenue: np.ndarray) -> dict[str, Any]:
    """``top_10pct`` and ``top_20pct``: :func:`top_share` of the top 10% and 20% (JSON-able)."""
    return {f"top_{int(100 * share)}pct": json_float(top_share(score, revenue, share), 4) for share in (0.1, 0.2)}


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (scipy's, 4 decimals); None when either side is constant."""
    from scipy.stats import spearmanr  # scipy.stats costs seconds on a cold start

    return json_float(spearmanr(a, b).statistic, 4) if np.std(a) > 0 and np.std(b) > 0 else None
