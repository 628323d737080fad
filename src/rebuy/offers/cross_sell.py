"""Cross-sell products: the recommender's complements to each customer's last order.

:func:`complement_products` asks ``cross_sell(basket, k + len(basket))`` (the recommender's
``bought_together``) for each last-order basket and keeps the first ``k`` products not in the basket.
A customer without a known basket (or without a recommender) gets their own recommendations.

Speed trick: the recommender is called once per distinct basket (products compared as sorted str),
which assumes it treats a basket as a set (``bought_together`` does up to float round-off in ties).
Of duplicated ids in ``last_order_products`` the last one is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from rebuy.offers.ids import arrow_str, ids, index_in
from rebuy.offers.lists import as_list, take


def last_order_baskets(cust_ids: np.ndarray, last_order_products: pd.Series) -> np.ndarray:
    """Each customer's last-order basket (whatever the Series holds, None when unknown)."""
    lop_ids = arrow_str(last_order_products.index)
    want = arrow_str(cust_ids) if lop_ids is not None and lop_ids.null_count == 0 else None
    if want is not None:  # string ids: hash in Arrow; the last of duplicated ids wins (search reversed)
        rev = index_in(want, lop_ids[::-1]).astype(np.int64)
        at = np.where(rev >= 0, len(lop_ids) - 1 - rev, -1)
        values = last_order_products.to_numpy(dtype=object)
    else:
        lop = pd.Series(last_order_products.to_numpy(dtype=object),
                        index=pd.Index(ids(last_order_products.index), dtype=object))
        lop = lop[~lop.index.duplicated(keep="last")]
        at = lop.index.get_indexer(cust_ids)
        values = lop.to_numpy(dtype=object)
    return np.where(at >= 0, values[np.maximum(at, 0)], None)


def complement_products(
    cust_ids: np.ndarray,
    recs: np.ndarray,
    last_order_products: pd.Series | None,
    cross_sell: Callable[[list, int], Sequence] | None,
    k: int,
) -> np.ndarray:
    """Complementary products to the last order (cached per basket); recommendations when unknown."""
    out = take(recs, k)
    if cross_sell is None or last_order_products is None or not len(last_order_products):
        return out
    cache: dict[tuple, list] = {}
    for i, b in enumerate(last_order_baskets(cust_ids, last_order_products)):
        basket = as_list(b)
        if not basket:
            continue
        key = tuple(sorted(map(str, basket)))
        if key not in cache:
            bought = set(basket)
            cache[key] = [p for p in cross_sell(list(basket), k + len(basket)) if p not in bought][:k]
        out[i] = cache[key]
    return out
