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
    )
    return category_mode_of_counts(counts, n_products)


def category_mode_of_counts(counts: pd.DataFrame, n_products: int) -> np.ndarray:
    """The most frequent label per product from ``counts`` (int64 product code ``p``, label ``c``
    (str), lines ``n``; one row per product and label); ties: the smallest label; None if absent."""
    best = counts.sort_values(["p", "n", "c"], ascending=[True, False, True], kind="stable").drop_duplicates("p")
    out = np.full(n_products, None, dtype=object)
    out[best["p"].to_numpy(dtype=np.int64)] = best["c"].to_numpy(dtype=object)
    return out


def median_of_counts(values: pd.DataFrame, n_products: int) -> np.ndarray:
    """The median per product from ``values`` (int64 product code ``p``, non-NaN float64 ``value``,
    lines ``n``; one row per product and value), as ``groupby(...).median()`` of the lines gives it
    (the mean of the two middle lines for an even count); NaN for a product without a value."""
    v = values.sort_values(["p", "value"], kind="stable")
    p = v["p"].to_numpy(dtype=np.int64)
    x = v["value"].to_numpy(dtype=np.float64)
    end = np.cumsum(v["n"].to_numpy(dtype=np.int64))  # lines up to and including each row
    out = np.full(n_products, np.nan)
    if not len(v):
        return out
    first = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    start = np.r_[0, end[:-1]][first]  # lines before each product's first row
    total = np.r_[end[first[1:] - 1], end[-1]] - start
    lo = np.searchsorted(end, start + (total - 1) // 2, side="right")
    hi = np.searchsorted(end, start + total // 2, side="right")
    out[p[first]] = (x[lo] + x[hi]) / 2
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
