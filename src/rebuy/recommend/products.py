"""Product metadata learnt with the matrix: unit price, category and description per product column.

Layout: :class:`ProductInfo` and :func:`fit_product_info`. Every array has one entry per product
column of the :class:`~rebuy.recommend.interactions.Interactions` (same order). Prices are the
median unit price of the training lines in the currency of the data (NaN without a ``price``
column); the category is the most frequent label (ties: the smallest label, as ``Series.mode``;
None when unknown); the description is the first seen. A missing column gives None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(eq=False)
class ProductInfo:
    """``price`` (float64, currency, NaN unknown), ``category`` and ``description`` (object or None)."""

    price: np.ndarray
    category: np.ndarray | None
    description: np.ndarray | None


def _category_mode(category: pd.Series, product_codes: np.ndarray, n_products: int) -> np.ndarray:
    """The mode per product (ties: the smallest label), vectorised; None where every label is missing."""
    cat = category.astype("string")
    valid = cat.notna().to_numpy(dtype=bool)
    counts = (
        pd.DataFrame({"p": product_codes[valid], "c": cat[valid].to_numpy(dtype=object)})
        .groupby(["p", "c"], sort=False)
        .size()
        .reset_index(name="n")
        .sort_values(["p", "n", "c"], ascending=[True, False, True], kind="stable")
        .drop_duplicates("p")
    )
    out = np.full(n_products, None, dtype=object)
    out[counts["p"].to_numpy(dtype=np.int64)] = counts["c"].to_numpy(dtype=object)
    return out


def fit_product_info(frame: pd.DataFrame, product_codes: np.ndarray, n_products: int) -> ProductInfo:
    """Price, category and description of each of ``n_products`` products from the coded lines."""
    if "price" in frame.columns:
        price = pd.Series(frame["price"].to_numpy(dtype=np.float64)).groupby(product_codes).median()
        prices = price.reindex(range(n_products)).to_numpy(dtype=np.float64)
    else:
        prices = np.full(n_products, np.nan)
    category = _category_mode(frame["category"], product_codes, n_products) if "category" in frame.columns else None
    description = None
    if "description" in frame.columns:
        desc = pd.Series(frame["description"].astype("string").to_numpy(dtype=object)).groupby(product_codes).first()
        description = np.asarray(desc.reindex(range(n_products)).to_numpy(), dtype=object)
    return ProductInfo(prices, category, description)


def product_names(transactions: pd.DataFrame) -> dict[str, str]:
    """product_id -> its most frequent non-empty description in ``transactions`` (ties: the first
    seen); empty without a ``description`` column. What reasons and exports call a product."""
    if "description" not in transactions.columns or "product_id" not in transactions.columns:
        return {}
    lines = pd.DataFrame({"p": transactions["product_id"].astype("string"),
                          "d": transactions["description"].astype("string").str.strip()})
    lines = lines[lines["d"].notna() & (lines["d"] != "") & lines["p"].notna()]
    if lines.empty:
        return {}
    counts = lines.groupby(["p", "d"], sort=False).size().reset_index(name="n")
    best = counts.sort_values(["p", "n"], ascending=[True, False], kind="stable").drop_duplicates("p")
    return dict(zip(best["p"].to_numpy(dtype=object), best["d"].to_numpy(dtype=object), strict=True))
