"""Constants of the recommender that the configuration needs too: standard library only.

``rebuy.config`` imports this module for the default excluded products, so it must stay free of
numpy, pandas, scipy, implicit and of any other ``rebuy`` module (no import cycles, a cheap
``import rebuy.config``). ``rebuy.recommend``'s ``__init__`` is lazy for the same reason: importing
``rebuy.recommend.defaults`` does not load the recommender.

Layout: :data:`RECOMMENDER_COLUMNS` (the transaction columns the recommender keeps), then the
default exclusions (:data:`DEFAULT_EXCLUDED`, :data:`DEFAULT_EXCLUDED_PREFIXES`, empty: a shop lists its
non-product codes in its config), the one source of
both the ``Recommender`` defaults and ``RecommendConfig``'s.
"""

from __future__ import annotations

RECOMMENDER_COLUMNS = (
    "customer_id", "product_id", "timestamp", "quantity", "price", "amount", "country", "category",
    "description", "order_id",
)
"""Transaction columns the recommender keeps (the rest of the cleaned frame is dropped)."""

DEFAULT_EXCLUDED: tuple[str, ...] = ()
"""Product ids never recommended by default: none. Non-product codes (postage, fees, manual
adjustments) are the shop's own and are listed in its config (``recommend.excluded_products``;
``configs/online_retail_ii.yaml`` lists Online Retail II's)."""

DEFAULT_EXCLUDED_PREFIXES: tuple[str, ...] = ()
"""Product id prefixes never recommended by default: none (``recommend.excluded_product_prefixes``)."""
