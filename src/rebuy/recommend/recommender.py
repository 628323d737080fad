"""The ``Recommender`` facade: ``fit`` and the serving calls, wiring the modules of the package.

Layout: :class:`Recommender` = :class:`~rebuy.recommend.params.RecommenderParams` (hyper-parameters,
``from_config``, ``get_params``/``set_params``/``clone``, the default ``policy``) +
:class:`~rebuy.recommend.state.FittedState` (the fitted parts, pickling, the ``*_`` attributes) +
this module: ``fit``, the recommendation calls (``recommend``, ``iter_recommendations``,
``recommend_one``) and the product calls (``similar_items``, ``upsell``, ``bought_together``,
``product_price``, ``excluded_mask``). The work itself lives in one module per job.

Invariants:

- the hyper-parameters are the only public attributes a caller sets (``set_params``); no call
  changes them or the fitted parts. What may be recommended is a per-call
  :class:`~rebuy.recommend.policy.RecommendPolicy` (``policy=None``: the one of the
  hyper-parameters, ``Recommender.policy``);
- unknown customers never raise (cold start), unknown products are skipped with a warning;
- the object pickles with joblib and reloads to give identical recommendations; caches (the
  exclusion mask of the last exclusion settings, the customer index) are rebuilt on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import numpy as np
import pandas as pd

from rebuy.errors import InvalidParameterError
from rebuy.progress import progress
from rebuy.recommend.cooccurrence import fit_cooccurrence
from rebuy.recommend.implicit_model import fit_latent
from rebuy.recommend.interactions import build_interactions, customer_keys, select_lines, to_key
from rebuy.recommend.neighbours import fit_neighbours
from rebuy.recommend.params import RecommenderParams
from rebuy.recommend.policy import Exclusions, RecommendPolicy, repurchasable
from rebuy.recommend.popularity import SegmentLookup, Segments, fill, fit_popularity
from rebuy.recommend.products import fit_product_info
from rebuy.recommend.serve import Batch, Serving
from rebuy.recommend.state import FittedState

log = logging.getLogger(__name__)

Output = Literal["dict", "lists", "frame"]


class Recommender(RecommenderParams, FittedState):
    """Customer x product recommender on implicit feedback (purchases).

    Parameters
    ----------
    algorithm : "als" (implicit AlternatingLeastSquares), "bpr" (BayesianPersonalizedRanking) or
        "item_knn" (implicit's item-item nearest neighbours: ``knn_weighting`` BM25Recommender,
        CosineRecommender or TFIDFRecommender with K = ``knn_neighbours``; only the sparse item
        similarity is kept and lists are sparse products history x similarity, much cheaper than
        factor scoring for short histories). item_knn learns from the unweighted confidence matrix
        (``weighting``, ``alpha``, ``bm25_k1``/``bm25_b`` are ignored; BM25 uses ``knn_bm25_k1``/``knn_bm25_b``).
    factors : latent factors; capped below the number of products (implicit gives NaN factors otherwise).
    regularization, iterations, learning_rate : passed to implicit (learning_rate is BPR only).
    alpha : multiplies the weighted matrix (ALS confidence scale).
    confidence : "count" (purchase lines per customer and product) or "spend" (currency).
    weighting : "none", "log" (log1p), "bm25" or "tfidf" applied to the confidence matrix.
    bm25_k1, bm25_b : BM25 parameters.
    recency_half_life_days : each purchase line counts 0.5 ** (age in days / half-life); None = no decay.
    n_items : default list length.
    allow_repurchase, repurchase_categories, history_weight, excluded_products,
    excluded_product_prefixes, min_history : the default policy (see ``RecommendPolicy``); the
        exclusions of fit time also keep those products out of training.
    batch_size : customers per batch in ``recommend`` (memory is bounded by the batch).
    random_state : seed for implicit.
    num_threads : implicit threads (0 = every core); BLAS is limited to 1 thread around implicit.
    knn_weighting, knn_neighbours : item_knn only: "bm25", "cosine" or "tfidf", and K.
    knn_bm25_k1, knn_bm25_b : item_knn with bm25 only: implicit's BM25Recommender K1 and B.
    """

    # ------------------------------------------------------------------ fit
    def fit(self, transactions: pd.DataFrame, as_of: Any = None, *, segments: Segments = None) -> Recommender:
        """Learn from the cleaned transactions (canonical columns, see ``rebuy.data``); returns self.

        Parameters
        ----------
        transactions : needs ``customer_id``, ``product_id``, ``timestamp``; ``quantity``/``price``/
            ``amount`` (for spend and upsell prices), ``country``, ``category``, ``description`` and
            ``order_id`` are used if present.
        as_of : only purchases at or before this time (a date means the whole day, ``rebuy.dates``)
            are used; it is also the reference time of the recency decay. None = the last transaction.
        segments : optional customer_id -> segment label; popularity is then also kept per segment.
        """
        self.check_params()
        conf = self.confidence_spec()
        lines = select_lines(transactions, as_of, self.policy.excludes, conf)
        interactions = build_interactions(lines, conf)
        n_p = len(lines.product_ids)
        parts = {
            "as_of_": lines.as_of,
            "interactions_": interactions,
            "products_": fit_product_info(lines.frame, lines.product_codes, n_p),
            "popularity_": fit_popularity(
                interactions.history, lines, segments, decayed=self.recency_half_life_days is not None
            ),
            "cooccurrence_": fit_cooccurrence(lines, n_p),
        }
        if self.algorithm == "item_knn":
            parts["latent_"] = None
            parts["neighbours_"] = fit_neighbours(interactions.user_items, self.knn_spec())
        else:  # factor models keep the state layout of earlier versions (no neighbours_ entry)
            parts["latent_"] = fit_latent(interactions.user_items, self.model_spec())
        return self._set_fitted(parts)

    def _set_fitted(self, parts: dict[str, Any]) -> Recommender:
        """Replace the fitted state by ``parts`` (the ``*_`` attributes of a fit) and drop the caches."""
        self.__dict__.pop("_cache", None)
        self.__dict__.pop("neighbours_", None)
        self.__dict__.update(parts)
        return self

    # ------------------------------------------------------------------ recommendations
    def recommend(
        self,
        customer_ids: Iterable[Any] | str,
        n: int | None = None,
        *,
        segments: Segments = None,
        output: Output = "dict",
        policy: RecommendPolicy | None = None,
    ) -> dict[str, list[str]] | list[list[str]] | pd.DataFrame:
        """Top-``n`` products for each customer, in batches of ``batch_size`` customers.

        Unknown customers, and customers with fewer than ``min_history`` products, get the
        popularity list of their segment (``segments``: customer_id -> segment label, or a
        country name), else their country, else the global list. Never raises for unknown ids
        and never returns an empty list while the catalogue has a recommendable product.
        ``policy``: exclusions and repurchase rules of this call (None = ``self.policy``).

        Returns ``{customer_id: [product_id, ...]}``; with ``output="lists"`` the lists alone, in
        the order of ``customer_ids`` (the fast path for a score table: no dict of a million keys);
        with ``output="frame"`` a DataFrame with columns customer_id, rank (1 = best), product_id,
        score (model score; 0 for popularity fill), source ("model" or "popularity"). For very many
        customers use ``iter_recommendations`` to stream one batch at a time.
        """
        if output not in ("dict", "lists", "frame"):
            raise InvalidParameterError(
                f"Recommender.recommend: output must be 'dict', 'lists' or 'frame', got {output!r}"
            )
        batches = self._batches(customer_ids, n, segments, policy)
        ids = self.product_ids_
        if output == "frame":
            frames = [b.frame(ids) for b in batches]
            return pd.concat(frames, ignore_index=True) if frames else Batch.empty().frame(ids)
        keys: list[str] = []
        lists: list[list[str]] = []
        for b in batches:
            keys.extend(b.keys)
            lists.extend(b.lists(ids))
        return lists if output == "lists" else dict(zip(keys, lists, strict=True))

    def iter_recommendations(
        self,
        customer_ids: Iterable[Any] | str,
        n: int | None = None,
        *,
        segments: Segments = None,
        policy: RecommendPolicy | None = None,
    ) -> Iterator[pd.DataFrame]:
        """Yield one recommendations frame per batch of ``batch_size`` customers (bounded memory).

        Columns as ``recommend(..., output="frame")``.
        """
        batches = self._batches(customer_ids, n, segments, policy)
        return (b.frame(self.product_ids_) for b in batches)

    def recommend_one(
        self, customer_id: Any, n: int | None = None, *, segment: str | None = None,
        policy: RecommendPolicy | None = None,
    ) -> list[str]:
        """Top-``n`` product ids for one customer (see ``recommend``)."""
        seg = None if segment is None else {to_key(customer_id): segment}
        out = self.recommend([customer_id], n, segments=seg, policy=policy, output="lists")
        return out[0]

    def _batches(
        self, customer_ids: Iterable[Any] | str, n: int | None, segments: Segments, policy: RecommendPolicy | None
    ) -> Iterator[Batch]:
        """Validate, resolve the policy once, then compute the batches lazily."""
        self._check_fitted()
        n = int(self.n_items if n is None else n)
        if n < 1:
            raise InvalidParameterError(f"Recommender.recommend: n must be >= 1, got {n}")
        keys = customer_keys(customer_ids)
        serving = self._serving(policy)
        lookup = SegmentLookup(segments)
        size = max(1, int(self.batch_size))
        starts = range(0, len(keys), size)
        # implicit's topk scores each batch with its own threads (num_threads; BLAS held at 1 thread)
        batches = progress(starts, desc="recommend", total=len(starts))
        return (serving.batch(keys[s : s + size], n, lookup) for s in batches)

    def _serving(self, policy: RecommendPolicy | None) -> Serving:
        policy = self._policy(policy)
        n_p = len(self.product_ids_)
        repurch = repurchasable(policy, n_p, self.products_.category)
        model = self.latent_ if self.latent_ is not None else self.__dict__.get("neighbours_")
        return Serving(
            self.interactions_, model, self.popularity_, policy, self._exclusions(policy), repurch,
            int(self.num_threads),
        )

    # ------------------------------------------------------------------ products
    def similar_items(self, product_id: Any, n: int | None = None, *, policy: RecommendPolicy | None = None) -> list[str]:
        """Products most similar to ``product_id`` (cosine on the latent item factors; for item_knn
        its stored neighbours, then order co-occurrence; order co-occurrence without a model).
        Unknown product ids give an empty list and a warning."""
        idx = self._known_product(product_id, "similar_items")
        return [] if idx is None else self._similar(idx, n, policy)

    def upsell(
        self, product_id: Any, n: int | None = None, *, min_price_ratio: float = 1.0,
        policy: RecommendPolicy | None = None,
    ) -> list[str]:
        """Similar products with a higher median unit price than ``product_id`` (currency of the data).

        ``min_price_ratio`` > 1 asks for a clearly dearer product (e.g. 1.2 = at least 20 % dearer).
        Unknown ids, and products without a price, give an empty list and a warning.
        """
        idx = self._known_product(product_id, "upsell")
        if idx is None:
            return []
        price = self.products_.price
        if not np.isfinite(price[idx]):
            log.warning("Recommender.upsell: no price for product %r", product_id)
            return []
        dearer = np.isfinite(price) & (price > price[idx] * max(min_price_ratio, 1.0))
        return self._similar(idx, n, policy, dearer)

    def _similar(
        self, idx: int, n: int | None, policy: RecommendPolicy | None, allowed: np.ndarray | None = None
    ) -> list[str]:
        """Up to ``n`` products most similar to column ``idx``: not excluded and, if given, ``allowed``."""
        n = int(self.n_items if n is None else n)
        knn = self.__dict__.get("neighbours_")
        if self.latent_ is not None:
            order = self.latent_.similar(idx)
        else:
            nb = self.cooccurrence_.neighbours[idx]
            order = nb[nb >= 0]
            if knn is not None:  # the K neighbours first, then co-occurrence for the rest
                first = knn.similar(idx)
                order = np.concatenate([first, order[~np.isin(order, first)]])
        ok = ~self._exclusions(self._policy(policy)).mask
        if allowed is not None:
            ok = ok & allowed
        return [str(self.product_ids_[p]) for p in order[ok[order]][:n]]

    def bought_together(
        self, product_ids: Iterable[Any] | str, n: int | None = None, *, policy: RecommendPolicy | None = None
    ) -> list[str]:
        """Products most often in the same order as ``product_ids`` (post-order cross-sell).

        Scores add up the cosine-normalised order co-occurrence with each basket product; basket
        products and excluded products are left out. Unknown ids are skipped with a warning; if no
        id is known, or the basket has no co-occurring products, global popularity fills the list.
        """
        n = int(self.n_items if n is None else n)
        if isinstance(product_ids, str):
            product_ids = [product_ids]
        known = (self._known_product(p, "bought_together") for p in product_ids)
        basket = [i for i in known if i is not None]
        excl = self._exclusions(self._policy(policy))
        if not basket:
            return [str(self.product_ids_[p]) for p in fill([], n, [self.popular_], excl.banned)]
        ranked = self.cooccurrence_.rank_basket(np.asarray(basket, dtype=np.int64), excl.mask, n)
        chosen = fill(ranked, n, [self.popular_], excl.banned | set(basket))
        return [str(self.product_ids_[p]) for p in chosen]

    def product_price(self, product_id: Any) -> float | None:
        """Median unit price of a product in the training data (currency), None if unknown."""
        self._check_fitted()
        idx = self.product_index_.get(to_key(product_id))
        return None if idx is None else float(self.products_.price[idx])

    def excluded_mask(self, policy: RecommendPolicy | None = None) -> np.ndarray:
        """Read-only bool per fitted product (``product_ids_`` order): never recommended under ``policy``."""
        self._check_fitted()
        return self._exclusions(self._policy(policy)).mask

    # ------------------------------------------------------------------ helpers
    def _policy(self, policy: RecommendPolicy | None) -> RecommendPolicy:
        if policy is None:
            return self.policy
        if not isinstance(policy, RecommendPolicy):
            raise InvalidParameterError(f"Recommender: policy must be a RecommendPolicy or None, got {policy!r}")
        return policy

    def _exclusions(self, policy: RecommendPolicy) -> Exclusions:
        """The policy's excluded products, cached for the last exclusion settings (offers ask per basket)."""
        cache = self.__dict__.setdefault("_cache", {})
        hit = cache.get("excluded")
        if hit is None or hit[0] != policy.exclusion_key:
            hit = cache["excluded"] = (policy.exclusion_key, Exclusions.of(policy, self.product_ids_))
        return hit[1]

    def _known_product(self, product_id: Any, where: str) -> int | None:
        self._check_fitted()
        idx = self.product_index_.get(to_key(product_id))
        if idx is None:
            log.warning("Recommender.%s: unknown product id %r skipped", where, product_id)
        return idx
