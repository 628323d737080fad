"""Wholesale customers: who they are (config ``wholesale``), fixed at training, applied when scoring.

Rule ``order_value_multiple``: a customer whose mean spend per purchase day (``total_spend`` /
``purchase_days``, currency; what :func:`rebuy.features.spend_concentration` calls an order) is above
``order_value_multiple`` x the median customer's is wholesale. The cut (currency per purchase day) is
computed on the training summary and kept in the manifest (``manifest["wholesale"]["min_order_value"]``),
so a customer scored alone on the request path is marked as in the nightly batch. Rule ``none``: nobody.

Wholesale customers are left out of the purchase and spend model fits (``rebuy.pipeline.fit``), are
scored with the consumer models but flagged (the score table's ``wholesale`` column) and get offer
``none`` with a reason (:mod:`rebuy.offers.engine`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from rebuy.config import WholesaleConfig


def order_values(summary: pd.DataFrame) -> np.ndarray:
    """Mean spend per purchase day of each customer of an RFM summary (currency)."""
    spend = summary["total_spend"].to_numpy(dtype=float)
    return spend / np.maximum(summary["purchase_days"].to_numpy(dtype=float), 1.0)


def wholesale_cut(summary: pd.DataFrame, wc: WholesaleConfig) -> float | None:
    """The mean spend per purchase day (currency) above which a customer is wholesale; None for rule ``none``."""
    if wc.rule == "none" or not len(summary):
        return None
    return float(wc.order_value_multiple * np.median(order_values(summary)))


def mark_wholesale(summary: pd.DataFrame, cut: float | None) -> np.ndarray:
    """Per customer of ``summary``: wholesale (bool); nobody when ``cut`` is None."""
    if cut is None:
        return np.zeros(len(summary), dtype=bool)
    return order_values(summary) > cut


def wholesale_report(summary: pd.DataFrame, flags: np.ndarray, wc: WholesaleConfig, cut: float | None) -> dict[str, Any]:
    """The manifest's ``wholesale`` entry: the rule, the cut, and the marked customers' count and
    shares of customers and of revenue (``total_spend``)."""
    spend = summary["total_spend"].to_numpy(dtype=float)
    total = float(spend.sum())
    n = len(summary)
    return {
        "rule": wc.rule,
        "order_value_multiple": float(wc.order_value_multiple) if cut is not None else None,
        "min_order_value": cut,
        "customers": int(flags.sum()),
        "customer_share": float(flags.sum() / n) if n else 0.0,
        "revenue_share": float(spend[flags].sum() / total) if total > 0 else 0.0,
    }
