"""What may be recommended to whom: exclusions, repurchase and cold start, as a per-call value.

:class:`RecommendPolicy` is a small frozen dataclass. ``Recommender.recommend(..., policy=...)``
(and ``similar_items``, ``bought_together``, ``upsell``) take one per call; ``None`` means the
policy of the recommender's hyper-parameters (``Recommender.policy``). Nothing in a call changes the
recommender: evaluation asks for another policy instead of flipping state and restoring it (as
implicit's ``recommend(..., filter_already_liked_items=..., items=...)`` does).

Layout: :func:`is_excluded` (the id test), :class:`RecommendPolicy`, then :class:`Exclusions`
(the policy's excluded products resolved on a fitted catalogue) and :func:`repurchasable`.

Invariants: exclusions apply to every list, whatever the other settings; a product bought before is
recommended again only if ``allow_repurchase`` or its category is in ``repurchase_categories``;
customers with fewer than ``max(min_history, 1)`` known products get popularity (cold start).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rebuy.errors import InvalidParameterError
from rebuy.recommend.defaults import DEFAULT_EXCLUDED, DEFAULT_EXCLUDED_PREFIXES


def is_excluded(ids: pd.Series, products: Sequence[Any], prefixes: Sequence[str]) -> np.ndarray:
    """Boolean mask (one per id of the string Series ``ids``): in ``products`` or starting with a prefix."""
    ex = np.array(ids.isin(list(products)).to_numpy(dtype=bool), copy=True)
    for p in prefixes:
        ex |= ids.str.startswith(p).fillna(False).to_numpy(dtype=bool)
    return ex


@dataclass(frozen=True)
class RecommendPolicy:
    """Filtering and blending rules of one recommendation call.

    Attributes
    ----------
    allow_repurchase : products the customer already bought may be recommended again.
    repurchase_categories : with ``allow_repurchase=False``, products of these categories (the
        ``category`` column) may still be recommended again (consumables).
    history_weight : for re-purchasable products, score = (1 - w) * model + w * own history (both
        scaled to [0, 1] per customer); 0 = model only, 1 = own most-bought first. Unitless, in [0, 1].
    excluded_products, excluded_product_prefixes : product ids never recommended.
    min_history : customers with fewer distinct known products get popularity (cold start); 0 and 1
        both mean "any history".
    """

    allow_repurchase: bool = False
    repurchase_categories: tuple[str, ...] = ()
    history_weight: float = 0.7
    excluded_products: tuple[Any, ...] = DEFAULT_EXCLUDED
    excluded_product_prefixes: tuple[str, ...] = DEFAULT_EXCLUDED_PREFIXES
    min_history: int = 1

    def __post_init__(self) -> None:
        for name in ("repurchase_categories", "excluded_products", "excluded_product_prefixes"):
            value = getattr(self, name)
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise InvalidParameterError(f"RecommendPolicy: {name} must be a list of strings, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not 0.0 <= float(self.history_weight) <= 1.0:
            raise InvalidParameterError(
                f"RecommendPolicy: history_weight must be in [0, 1], got {self.history_weight}"
            )

    @property
    def exclusion_key(self) -> tuple[tuple[Any, ...], tuple[str, ...]]:
        """The settings :class:`Exclusions` depends on (a cache key)."""
        return self.excluded_products, self.excluded_product_prefixes

    def excludes(self, ids: pd.Series) -> np.ndarray:
        """Mask of the product ids (a string Series) this policy never recommends."""
        return is_excluded(ids, self.excluded_products, self.excluded_product_prefixes)


@dataclass(frozen=True, eq=False)
class Exclusions:
    """A policy's excluded products on a fitted catalogue: ``mask`` (read-only bool per product),
    ``index`` (their int64 positions) and ``banned`` (the same as a frozenset, for list fills)."""

    mask: np.ndarray
    index: np.ndarray
    banned: frozenset[int]

    @classmethod
    def of(cls, policy: RecommendPolicy, product_ids: np.ndarray) -> Exclusions:
        mask = policy.excludes(pd.Series(product_ids, dtype="string"))
        mask.flags.writeable = False
        index = np.flatnonzero(mask)
        return cls(mask, index, frozenset(index.tolist()))


def repurchasable(policy: RecommendPolicy, n_products: int, category: np.ndarray | None) -> np.ndarray:
    """Bool per product: may be recommended to a customer who bought it (``category``: one label per product)."""
    if policy.allow_repurchase:
        return np.ones(n_products, dtype=bool)
    if policy.repurchase_categories and category is not None:
        return np.isin(category.astype(str), [str(c) for c in policy.repurchase_categories])
    return np.zeros(n_products, dtype=bool)
