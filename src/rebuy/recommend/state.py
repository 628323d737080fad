"""The fitted state of a ``Recommender``: its parts, their attribute aliases, and older pickles.

A fitted recommender holds one object per job, each pickled on its own terms::

    as_of_          the reference instant of the fit (pd.Timestamp)
    interactions_   Interactions   ids, customers x products matrices (rebuy.recommend.interactions)
    products_       ProductInfo    price, category, description per product (rebuy.recommend.products)
    popularity_     Popularity     global / country / segment lists (rebuy.recommend.popularity)
    cooccurrence_   CoOccurrence   bought-together neighbours (rebuy.recommend.cooccurrence)
    latent_         LatentFactors  the implicit model, or None: popularity only or item_knn (rebuy.recommend.implicit_model)
    neighbours_     ItemNeighbours the item-KNN similarity (item_knn), else None; absent in earlier
                                   versions' state (rebuy.recommend.neighbours)

:data:`FITTED_ALIASES` maps the scikit-learn style fitted attributes of earlier versions
(``product_ids_``, ``history_``, ``popular_``, ...) to a field of a part; :class:`FittedAlias`
serves them read-only. :func:`upgrade_legacy_state` turns the flat pickle state of those versions
(one attribute per array) into the parts, so bundles written before the split still load and give
the same recommendations. :class:`FittedState` (a base of ``Recommender``) holds all of it: the
pickling, the not-fitted check, the aliases and the model properties (``model_``, ``factors_``,
``user_factors_``, ``item_factors_``). Caches live under ``_cache`` and are never pickled.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import numpy as np
import scipy.sparse as sp

from rebuy.recommend.cooccurrence import CoOccurrence
from rebuy.recommend.implicit_model import LatentFactors
from rebuy.recommend.interactions import Interactions
from rebuy.recommend.popularity import Popularity
from rebuy.recommend.products import ProductInfo

T = TypeVar("T")

PARTS: dict[str, type] = {
    "interactions_": Interactions,
    "products_": ProductInfo,
    "popularity_": Popularity,
    "cooccurrence_": CoOccurrence,
}
"""Parts rebuilt field by field from a legacy state (``latent_`` is handled on its own)."""

FITTED_ALIASES: dict[str, tuple[str, str]] = {
    "customer_ids_": ("interactions_", "customer_ids"),
    "product_ids_": ("interactions_", "product_ids"),
    "product_index_": ("interactions_", "product_index"),
    "customer_index_": ("interactions_", "customer_index"),
    "history_": ("interactions_", "history"),
    "user_items_": ("interactions_", "user_items"),
    "n_history_": ("interactions_", "n_history"),
    "product_price_": ("products_", "price"),
    "product_category_": ("products_", "category"),
    "product_description_": ("products_", "description"),
    "popular_": ("popularity_", "popular"),
    "popular_score_": ("popularity_", "popular_score"),
    "customer_country_": ("popularity_", "customer_country"),
    "country_popular_": ("popularity_", "country_popular"),
    "customer_segment_": ("popularity_", "customer_segment"),
    "segment_popular_": ("popularity_", "segment_popular"),
    "cooc_neighbours_": ("cooccurrence_", "neighbours"),
    "cooc_scores_": ("cooccurrence_", "scores"),
}
"""Fitted attribute -> (part, field)."""

_LEGACY_DROPPED = ("excluded_mask_", "user_factors_", "item_factors_", "customer_index_", "_cache")
"""Legacy state that is derived (or was never used) and is not carried over."""


class FittedAlias(Generic[T]):
    """A read-only fitted attribute that reads ``part.field`` (AttributeError when not fitted)."""

    def __init__(self, part: str, field: str) -> None:
        self.part, self.field = part, field

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> T:
        if obj is None:
            return self  # type: ignore[return-value]
        part = obj.__dict__.get(self.part)
        if part is None:
            raise AttributeError(f"{type(obj).__name__} is not fitted: no {self.name}")
        return getattr(part, self.field)

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"{self.name} is read-only: it is {self.part}.{self.field}")


def upgrade_legacy_state(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with the flat fitted attributes of earlier versions gathered into the parts."""
    if "product_ids_" not in state:  # the current layout, or an unfitted recommender
        return state
    rest = {k: v for k, v in state.items() if k not in _LEGACY_DROPPED}
    fields: dict[str, dict[str, Any]] = {part: {} for part in PARTS}
    for alias, (part, field) in FITTED_ALIASES.items():
        if alias in rest:
            fields[part][field] = rest.pop(alias)
    for part, cls in PARTS.items():
        obj = cls.__new__(cls)
        if cls is Interactions:
            obj.__setstate__(fields[part])  # converts the unicode id buffer back to str objects
        else:
            obj.__dict__.update(fields[part])
        rest[part] = obj
    model, factors, norms = rest.pop("model_", None), rest.pop("factors_", 0), rest.pop("item_norms_", None)
    rest["latent_"] = None if model is None else LatentFactors(model, int(factors), norms)
    return rest


class FittedState:
    """The fitted parts of a recommender, their pickling and their scikit-learn style attributes."""

    def _check_fitted(self) -> None:
        if "interactions_" not in self.__dict__:
            raise RuntimeError("Recommender is not fitted; call fit(transactions) first")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(upgrade_legacy_state(state))

    def _latent(self, what: str) -> LatentFactors:
        latent = self.__dict__.get("latent_")
        if latent is None:
            raise AttributeError(f"Recommender has no {what} (not fitted, or popularity only)")
        return latent

    @property
    def model_(self) -> Any:
        """The fitted implicit model (None: popularity only)."""
        self._check_fitted()
        latent = self.__dict__["latent_"]
        return None if latent is None else latent.model

    @property
    def factors_(self) -> int:
        """Latent factors actually used (capped below the catalogue size; 0 without a model)."""
        self._check_fitted()
        latent = self.__dict__["latent_"]
        return 0 if latent is None else latent.factors

    @property
    def user_factors_(self) -> np.ndarray:
        """Customer factors (customers x factors, float32): the implicit model's own array."""
        return self._latent("user factors").user_factors

    @property
    def item_factors_(self) -> np.ndarray:
        """Product factors (products x factors, float32): the implicit model's own array."""
        return self._latent("item factors").item_factors

    customer_ids_ = FittedAlias[np.ndarray]("interactions_", "customer_ids")
    product_ids_ = FittedAlias[np.ndarray]("interactions_", "product_ids")
    product_index_ = FittedAlias[dict[str, int]]("interactions_", "product_index")
    customer_index_ = FittedAlias[dict[str, int]]("interactions_", "customer_index")
    history_ = FittedAlias[sp.csr_matrix]("interactions_", "history")
    user_items_ = FittedAlias[sp.csr_matrix]("interactions_", "user_items")
    n_history_ = FittedAlias[np.ndarray]("interactions_", "n_history")
    product_price_ = FittedAlias[np.ndarray]("products_", "price")
    product_category_ = FittedAlias["np.ndarray | None"]("products_", "category")
    product_description_ = FittedAlias["np.ndarray | None"]("products_", "description")
    popular_ = FittedAlias[np.ndarray]("popularity_", "popular")
    popular_score_ = FittedAlias[np.ndarray]("popularity_", "popular_score")
    customer_country_ = FittedAlias["np.ndarray | None"]("popularity_", "customer_country")
    country_popular_ = FittedAlias[dict[str, np.ndarray]]("popularity_", "country_popular")
    customer_segment_ = FittedAlias["np.ndarray | None"]("popularity_", "customer_segment")
    segment_popular_ = FittedAlias[dict[str, np.ndarray]]("popularity_", "segment_popular")
    cooc_neighbours_ = FittedAlias[np.ndarray]("cooccurrence_", "neighbours")
    cooc_scores_ = FittedAlias[np.ndarray]("cooccurrence_", "scores")


assert set(FITTED_ALIASES) == {k for k, v in vars(FittedState).items() if isinstance(v, FittedAlias)}
