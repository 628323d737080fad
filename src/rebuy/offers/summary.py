"""Offer counts and costs by offer type and channel (:func:`offer_summary`), for reports and logs."""

from __future__ import annotations

import pandas as pd

from rebuy.errors import OffersInputError


def offer_summary(offers: pd.DataFrame) -> pd.DataFrame:
    """Customers and total discount cost (currency) by offer_type and channel.

    Sorted by customers, descending; a final ``total`` row adds everything up.
    """
    missing = [c for c in ("offer_type", "channel", "discount_cost") if c not in offers.columns]
    if missing:
        raise OffersInputError(f"offers: missing column(s) {missing}")
    g = offers.groupby(["offer_type", "channel"], observed=True, sort=True)
    out = g.agg(customers=("discount_cost", "size"), discount_cost=("discount_cost", "sum")).reset_index()
    out = out.sort_values(["customers", "offer_type", "channel"], ascending=[False, True, True], kind="stable")
    total = pd.DataFrame({
        "offer_type": ["total"], "channel": ["all"], "customers": [len(offers)],
        "discount_cost": [float(offers["discount_cost"].sum())],
    })
    out = pd.concat([out, total], ignore_index=True)
    out["offer_type"] = out["offer_type"].astype("string")
    out["channel"] = out["channel"].astype("string")
    out["customers"] = out["customers"].astype("int64")
    out["discount_cost"] = out["discount_cost"].astype(float).round(2)
    return out
