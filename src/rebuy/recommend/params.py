"""The recommender's hyper-parameters: storage, scikit-learn style access, validation, and the specs
each module is given.

Layout: :class:`RecommenderParams` (the base of ``Recommender``): ``__init__`` stores every
argument as given; ``from_config``, ``get_params``, ``set_params``, ``clone``; ``policy`` (the
default per-call policy), ``confidence_spec`` and ``model_spec`` (what ``interactions`` and
``implicit_model`` are fitted with); ``check_params``.

Invariants: the hyper-parameters are the only attributes a caller sets; a spec or policy is built
from their current values at each call (``set_params`` after ``fit`` changes the default policy of
the next call, as in earlier versions); parameter errors are ``InvalidParameterError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Self

from rebuy.errors import InvalidParameterError
from rebuy.recommend.defaults import DEFAULT_EXCLUDED, DEFAULT_EXCLUDED_PREFIXES
from rebuy.recommend.implicit_model import ModelSpec
from rebuy.recommend.interactions import Confidence
from rebuy.recommend.neighbours import KNN_WEIGHTINGS, KnnSpec
from rebuy.recommend.policy import RecommendPolicy

if TYPE_CHECKING:
    from rebuy.config import RecommendConfig

_CHOICES = {
    "algorithm": ("als", "bpr", "item_knn"),
    "knn_weighting": KNN_WEIGHTINGS,
    "weighting": ("none", "log", "bm25", "tfidf"),
    "confidence": ("count", "spend"),
}


class RecommenderParams:
    """Hyper-parameters of a recommender (documented on ``rebuy.recommend.Recommender``)."""

    _PARAMS = (
        "algorithm", "factors", "regularization", "iterations", "learning_rate", "alpha", "confidence",
        "weighting", "bm25_k1", "bm25_b", "recency_half_life_days", "n_items", "allow_repurchase",
        "repurchase_categories", "history_weight", "excluded_products", "excluded_product_prefixes",
        "min_history", "batch_size", "random_state", "num_threads", "knn_weighting", "knn_neighbours",
        "knn_bm25_k1", "knn_bm25_b",
    )
    # class-level fallbacks: a recommender stored before these parameters existed loads with them
    knn_weighting: str = "bm25"
    knn_neighbours: int = 20
    knn_bm25_k1: float = 1.2
    knn_bm25_b: float = 0.75

    def __init__(
        self,
        algorithm: Literal["als", "bpr", "item_knn"] = "als",
        factors: int = 128,
        regularization: float = 10.0,
        iterations: int = 40,
        learning_rate: float = 0.01,
        alpha: float = 0.1,
        confidence: Literal["count", "spend"] = "count",
        weighting: Literal["none", "log", "bm25", "tfidf"] = "tfidf",
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        recency_half_life_days: float | None = None,
        n_items: int = 10,
        allow_repurchase: bool = False,
        repurchase_categories: Sequence[str] = (),
        history_weight: float = 0.7,
        excluded_products: Sequence[str] = DEFAULT_EXCLUDED,
        excluded_product_prefixes: Sequence[str] = DEFAULT_EXCLUDED_PREFIXES,
        min_history: int = 1,
        batch_size: int = 10_000,
        random_state: int | None = 0,
        num_threads: int = 0,
        knn_weighting: Literal["bm25", "cosine", "tfidf"] = "bm25",
        knn_neighbours: int = 20,
        knn_bm25_k1: float = 1.2,
        knn_bm25_b: float = 0.75,
    ) -> None:
        params = dict(locals())  # every argument is stored as given (scikit-learn style)
        for k in self._PARAMS:
            setattr(self, k, params[k])

    @classmethod
    def from_config(cls, cfg: RecommendConfig, **overrides: Any) -> Self:
        """Build from the ``recommend`` section of the config (``enabled`` is the caller's business)."""
        params = {k: getattr(cfg, k) for k in cls._PARAMS if k in type(cfg).model_fields}
        return cls(**{**params, **overrides})

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as a dict (scikit-learn style)."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params: Any) -> Self:
        """Change hyper-parameters (scikit-learn style); unknown names raise ``InvalidParameterError``."""
        for k, v in params.items():
            if k not in self._PARAMS:
                raise InvalidParameterError(f"Recommender: unknown parameter {k!r}")
            setattr(self, k, v)
        return self

    def clone(self, **overrides: Any) -> Self:
        """An unfitted copy with the same hyper-parameters (and ``overrides``)."""
        return type(self)(**{**self.get_params(), **overrides})

    @property
    def policy(self) -> RecommendPolicy:
        """The default policy of a call: the one of the current hyper-parameters."""
        return RecommendPolicy(
            allow_repurchase=bool(self.allow_repurchase),
            repurchase_categories=self.repurchase_categories,
            history_weight=self.history_weight,
            excluded_products=self.excluded_products,
            excluded_product_prefixes=self.excluded_product_prefixes,
            min_history=self.min_history,
        )

    def confidence_spec(self) -> Confidence:
        """How purchase lines become the confidence matrix. item_knn learns from the unweighted
        matrix (``weighting`` "none", ``alpha`` 1): implicit's KNN classes weight it themselves."""
        if self.algorithm == "item_knn":
            return Confidence(self.confidence, "none", 1.0, 1.0, 1.0, self.recency_half_life_days)
        return Confidence(
            self.confidence, self.weighting, self.bm25_k1, self.bm25_b, self.alpha, self.recency_half_life_days
        )

    def knn_spec(self) -> KnnSpec:
        """implicit's item-item KNN hyper-parameters (item_knn)."""
        return KnnSpec(
            self.knn_weighting, int(self.knn_neighbours), float(self.knn_bm25_k1), float(self.knn_bm25_b),
            int(self.num_threads),
        )

    def model_spec(self) -> ModelSpec:
        """implicit's hyper-parameters."""
        return ModelSpec(
            self.algorithm, self.factors, self.regularization, self.iterations, self.learning_rate,
            self.random_state, self.num_threads,
        )

    def check_params(self) -> None:
        """Raise ``InvalidParameterError`` for a value a fit cannot use (policy values: ``policy``)."""
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise InvalidParameterError(
                    f"Recommender: {name} must be {'|'.join(allowed)}, got {getattr(self, name)!r}"
                )
        if int(self.factors) < 1 or int(self.iterations) < 1 or int(self.n_items) < 1:
            raise InvalidParameterError("Recommender: factors, iterations and n_items must be >= 1")
        if int(self.knn_neighbours) < 1:
            raise InvalidParameterError("Recommender: knn_neighbours must be >= 1")
        if self.recency_half_life_days is not None and not self.recency_half_life_days > 0:
            raise InvalidParameterError("Recommender: recency_half_life_days must be > 0 or None")
