"""Implicit-feedback product recommender for cross-sell and repeat offers.

A scikit-learn-style facade (:class:`Recommender`) over ``implicit``'s ALS (default), BPR or item-item KNN, trained
on the customer x product purchase matrix of the cleaned transactions, with popularity lists for
cold start, a per-call :class:`RecommendPolicy` (exclusions, repurchase and its blend with the
customer's own history, cold start threshold), ``similar_items``, ``bought_together`` (order
co-occurrence) and ``upsell``.

Package layout, one job per module::

    defaults.py        RECOMMENDER_COLUMNS, DEFAULT_EXCLUDED(_PREFIXES): stdlib only (rebuy.config reads them)
    policy.py          RecommendPolicy, exclusions, which products are re-purchasable
    interactions.py    lines kept, id maps, customers x products csr_matrix, confidence and weighting
    products.py        price / category / description per product
    popularity.py      global / country / segment popularity, cold start, list fill
    cooccurrence.py    bought-together neighbours
    implicit_model.py  fitting implicit, factors, filtered top-k (BLAS held at 1 thread)
    neighbours.py      item-item KNN (implicit's BM25/cosine/TF-IDF), kept as a sparse similarity; sparse top-k
    topk.py            model top-k under a policy (already-bought filter, repurchase blend)
    serve.py           one call: batches, popularity padding, frame / list outputs
    params.py          hyper-parameters (scikit-learn style), the default policy, the specs of each module
    state.py           the fitted parts, pickling, attribute aliases, loading pickles of earlier versions
    recommender.py     the Recommender facade: fit and the serving calls
    evaluate.py        time-split evaluation against baselines (also as rebuy.evaluate_recommender)

Imports are lazy (as in ``rebuy``'s own ``__init__``): ``import rebuy.recommend.defaults`` loads
neither numpy nor implicit, so ``rebuy.config`` stays cheap and free of import cycles.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from rebuy.recommend.defaults import DEFAULT_EXCLUDED, DEFAULT_EXCLUDED_PREFIXES, RECOMMENDER_COLUMNS

if TYPE_CHECKING:
    from rebuy.errors import RecommenderDataError
    from rebuy.recommend.policy import RecommendPolicy
    from rebuy.recommend.recommender import Recommender

_EXPORTS = {
    "Recommender": "rebuy.recommend.recommender",
    "RecommendPolicy": "rebuy.recommend.policy",
    "RecommenderDataError": "rebuy.errors",
}

__all__ = [
    "DEFAULT_EXCLUDED", "DEFAULT_EXCLUDED_PREFIXES", "RECOMMENDER_COLUMNS", "RecommendPolicy", "Recommender",
    "RecommenderDataError",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rebuy.recommend' has no attribute {name!r}")
