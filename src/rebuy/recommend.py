"""Implicit-feedback product recommender for cross-sell and repeat offers.

A scikit-learn-style wrapper around ``implicit``'s ALS (default) or BPR, trained on the
customer x product purchase matrix of the cleaned transactions, plus:

- popularity lists (global, per country, per segment) for cold-start customers;
- a repurchase policy (already-bought products filtered, or allowed and blended with the
  customer's own purchase history), excluded products that are never recommended;
- ``similar_items`` (cosine on the item factors), ``bought_together`` (order co-occurrence,
  for the post-order cross-sell) and ``upsell`` (similar products at a higher unit price).

The fitted object pickles with joblib (it holds numpy arrays, scipy ``csr_matrix`` and the
implicit model) and reloads to give identical recommendations. The customer factors are pickled
once (inside the implicit model; ``user_factors_`` is a view of them), customer ids as one unicode
buffer, and the id -> row dict is rebuilt on first use.

Scoring every customer: ``recommend`` calls implicit's fused, multi-threaded ``topk`` per batch of
``batch_size`` customers (BLAS held at 1 thread, ``num_threads`` implicit threads), so it costs no
more than implicit's own ``model.recommend(..., filter_already_liked_items=True)``; only the
repurchase blend (``history_weight`` > 0 with re-purchasable products) scores densely. Use
``output="lists"`` for a list per customer in input order (no dict of a million keys).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rebuy.progress import progress

if TYPE_CHECKING:
    from rebuy.config import RecommendConfig

log = logging.getLogger(__name__)

RECOMMENDER_COLUMNS = (
    "customer_id", "product_id", "timestamp", "quantity", "price", "amount", "country", "category",
    "description", "order_id",
)
"""Transaction columns the recommender keeps (the rest of the cleaned frame is dropped)."""

DEFAULT_EXCLUDED = (
    "POST",
    "DOT",
    "M",
    "m",
    "D",
    "C2",
    "CRUK",
    "BANK CHARGES",
    "AMAZONFEE",
    "ADJUST",
    "ADJUST2",
    "S",
    "B",
    "PADS",
)
DEFAULT_EXCLUDED_PREFIXES = ("gift_", "TEST")
_POPULAR_KEEP = 200  # products kept per country / segment popularity list
_NEIGHBOURS_KEEP = 100  # co-occurrence neighbours kept per product
_SCORE_CELLS = 1 << 23  # max customers x products cells scored at once (~32 MB of float32)


class RecommenderDataError(ValueError):
    """The transactions cannot train the recommender (e.g. no ``product_id`` column)."""


def _weight_matrix(x: sp.csr_matrix, weighting: str, k1: float, b: float) -> sp.csr_matrix:
    """Apply the confidence weighting to a customers x products matrix (rows are customers).

    ``bm25``/``tfidf`` down-weight products many customers buy (idf over customers) and, for
    BM25, normalise by the customer's basket size, as ``implicit.nearest_neighbours`` does.
    """
    if weighting == "none":
        out = x.copy()
    elif weighting == "log":
        out = x.copy()
        out.data = np.log1p(out.data)
    else:
        from implicit.nearest_neighbours import bm25_weight, tfidf_weight

        w = bm25_weight(x, K1=k1, B=b) if weighting == "bm25" else tfidf_weight(x)
        out = sp.csr_matrix(w)
        # an item bought by every customer gets idf log(N/(N+1)) < 0: keep it as a weak positive
        out.data = np.maximum(out.data, 1e-6)
    out = sp.csr_matrix(out, dtype=np.float32)
    out.sort_indices()
    return out


def _to_key(x: Any) -> str:
    return x if isinstance(x, str) else str(x)


class _SegmentLookup:
    """customer_id -> segment label (None when missing/NaN), converted lazily: the score table passes
    a Series for every customer, but only cold-start customers need a label."""

    def __init__(self, segments: Mapping[str, str] | pd.Series | None) -> None:
        self._src = segments
        self._series: pd.Series | None = None

    def labels(self, keys: Sequence[str]) -> list[str | None]:
        if self._src is None or not len(keys):
            return [None] * len(keys)
        if self._series is None:
            src = self._src
            if isinstance(src, pd.Series):
                ser = pd.Series(src.to_numpy(dtype=object), index=src.index.map(_to_key).astype(object))
            else:
                d = {_to_key(k): v for k, v in dict(src).items()}
                ser = pd.Series(list(d.values()), index=pd.Index(list(d.keys()), dtype=object), dtype=object)
            self._series = ser[~ser.index.duplicated(keep="last")]  # as a dict: the last value wins
        vals = self._series.reindex(pd.Index(list(keys), dtype=object)).to_numpy(dtype=object)
        return [None if pd.isna(v) else str(v) for v in vals]


class Recommender:
    """Customer x product recommender on implicit feedback (purchases).

    Parameters
    ----------
    algorithm : "als" (implicit AlternatingLeastSquares) or "bpr" (BayesianPersonalizedRanking).
    factors : latent factors; capped below the number of products (implicit gives NaN factors otherwise).
    regularization, iterations, learning_rate : passed to implicit (learning_rate is BPR only).
    alpha : multiplies the weighted matrix (ALS confidence scale).
    confidence : "count" (purchase lines per customer and product) or "spend" (currency).
    weighting : "none", "log" (log1p), "bm25" or "tfidf" applied to the confidence matrix.
    bm25_k1, bm25_b : BM25 parameters.
    recency_half_life_days : each purchase line counts 0.5 ** (age in days / half-life); None = no decay.
    n_items : default list length.
    allow_repurchase : products the customer already bought may be recommended again.
    repurchase_categories : with ``allow_repurchase=False``, products of these categories (the
        ``category`` column) may still be recommended again (consumables).
    history_weight : for re-purchasable products, score = (1 - w) * model + w * own history
        (both scaled to [0, 1] per customer). 0 = model only, 1 = own most-bought first.
    excluded_products, excluded_product_prefixes : product ids never recommended (non-products,
        gift cards, out of stock).
    min_history : customers with fewer distinct (non-excluded) products get popularity.
    batch_size : customers per batch in ``recommend`` (memory is bounded by the batch).
    random_state : seed for implicit.
    num_threads : implicit threads (0 = every core); BLAS is limited to 1 thread around implicit.
    """

    def __init__(
        self,
        algorithm: Literal["als", "bpr"] = "als",
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
    ) -> None:
        self.algorithm = algorithm
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.confidence = confidence
        self.weighting = weighting
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.recency_half_life_days = recency_half_life_days
        self.n_items = n_items
        self.allow_repurchase = allow_repurchase
        self.repurchase_categories = repurchase_categories
        self.history_weight = history_weight
        self.excluded_products = excluded_products
        self.excluded_product_prefixes = excluded_product_prefixes
        self.min_history = min_history
        self.batch_size = batch_size
        self.random_state = random_state
        self.num_threads = num_threads

    _PARAMS = (
        "algorithm",
        "factors",
        "regularization",
        "iterations",
        "learning_rate",
        "alpha",
        "confidence",
        "weighting",
        "bm25_k1",
        "bm25_b",
        "recency_half_life_days",
        "n_items",
        "allow_repurchase",
        "repurchase_categories",
        "history_weight",
        "excluded_products",
        "excluded_product_prefixes",
        "min_history",
        "batch_size",
        "random_state",
        "num_threads",
    )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: RecommendConfig, **overrides: Any) -> Recommender:
        """Build from the ``recommend`` section of the config (``enabled`` is the caller's business)."""
        params = {k: getattr(cfg, k) for k in cls._PARAMS if k in type(cfg).model_fields}
        params.update(overrides)
        return cls(**params)

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as a dict (scikit-learn style)."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params: Any) -> Recommender:
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ValueError(f"Recommender: unknown parameter {k!r}")
            setattr(self, k, v)
        return self

    def clone(self, **overrides: Any) -> Recommender:
        """An unfitted copy with the same hyper-parameters (and ``overrides``)."""
        return type(self)(**{**self.get_params(), **overrides})

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        if self.algorithm not in ("als", "bpr"):
            raise ValueError(f"Recommender: algorithm must be 'als' or 'bpr', got {self.algorithm!r}")
        if self.weighting not in ("none", "log", "bm25", "tfidf"):
            raise ValueError(f"Recommender: weighting must be none|log|bm25|tfidf, got {self.weighting!r}")
        if self.confidence not in ("count", "spend"):
            raise ValueError(f"Recommender: confidence must be 'count' or 'spend', got {self.confidence!r}")
        if int(self.factors) < 1 or int(self.iterations) < 1 or int(self.n_items) < 1:
            raise ValueError("Recommender: factors, iterations and n_items must be >= 1")
        if not 0.0 <= float(self.history_weight) <= 1.0:
            raise ValueError(f"Recommender: history_weight must be in [0, 1], got {self.history_weight}")
        if self.recency_half_life_days is not None and not self.recency_half_life_days > 0:
            raise ValueError("Recommender: recency_half_life_days must be > 0 or None")

    def _is_excluded(self, ids: pd.Series) -> np.ndarray:
        ex = np.array(ids.isin(list(self.excluded_products)).to_numpy(dtype=bool), copy=True)
        for p in self.excluded_product_prefixes:
            ex |= ids.str.startswith(p).fillna(False).to_numpy(dtype=bool)
        return ex

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        transactions: pd.DataFrame,
        as_of: Any = None,
        *,
        segments: Mapping[str, str] | pd.Series | None = None,
    ) -> Recommender:
        """Learn from the cleaned transactions (canonical columns, see ``rebuy.data``).

        Parameters
        ----------
        transactions : needs ``customer_id``, ``product_id``, ``timestamp``; ``quantity``/``price``/
            ``amount`` (for spend and upsell prices), ``country`` and ``category`` are used if present.
        as_of : only purchases at or before this time (a date means the end of that day) are used; it
            is also the reference time of the recency decay. None = the last transaction.
        segments : optional customer_id -> segment label; popularity is then also kept per segment.
        """
        self._check_params()
        if not isinstance(transactions, pd.DataFrame):
            raise TypeError("Recommender.fit: transactions must be a pandas DataFrame")
        missing = [c for c in ("customer_id", "product_id", "timestamp") if c not in transactions.columns]
        if missing:
            raise RecommenderDataError(
                f"Recommender.fit: transactions have no {', '.join(missing)} column; the recommender needs "
                "products (data such as CDNOW without product_id cannot train it)"
            )
        tx = transactions[[c for c in transactions.columns if c in RECOMMENDER_COLUMNS]]
        tx = tx[tx["customer_id"].notna() & tx["product_id"].notna()]
        ts = pd.to_datetime(tx["timestamp"])
        if as_of is not None:
            as_of_ts = pd.Timestamp(as_of)
            if as_of_ts == as_of_ts.normalize():  # a date: the whole day counts
                as_of_ts = as_of_ts + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
            keep = (ts <= as_of_ts).to_numpy()
            tx, ts = tx[keep], ts[keep]
        else:
            as_of_ts = ts.max() if len(ts) else None
        if self.confidence == "spend" and "amount" not in tx.columns:
            raise RecommenderDataError("Recommender.fit: confidence='spend' needs an 'amount' column")
        cust = tx["customer_id"].astype("string")
        prod = tx["product_id"].astype("string")
        excluded = self._is_excluded(prod)
        tx, ts, cust, prod = tx[~excluded], ts[~excluded], cust[~excluded], prod[~excluded]
        if len(tx) == 0:
            raise RecommenderDataError(
                "Recommender.fit: no purchase lines left (after as_of and the product exclusions)"
            )
        self.as_of_ = as_of_ts

        c_codes, c_uniques = pd.factorize(cust, sort=True)
        p_codes, p_uniques = pd.factorize(prod, sort=True)
        self.customer_ids_ = np.asarray(c_uniques, dtype=object)
        self.product_ids_ = np.asarray(p_uniques, dtype=object)
        self._drop_caches()  # customer_index_ and the exclusion mask are rebuilt lazily from the ids
        self.product_index_ = {p: i for i, p in enumerate(self.product_ids_)}
        n_c, n_p = len(self.customer_ids_), len(self.product_ids_)

        # confidence per line, optionally decayed by age
        if self.confidence == "spend":
            val = tx["amount"].to_numpy(dtype=np.float64).clip(min=0.0)
        else:
            val = np.ones(len(tx))
        if self.recency_half_life_days is not None:
            age_days = ((as_of_ts - ts).dt.total_seconds().to_numpy() / 86400.0).clip(min=0.0)
            decay = 0.5 ** (age_days / float(self.recency_half_life_days))
            val = val * decay
        else:
            decay = np.ones(len(tx))
        raw = sp.csr_matrix((val, (c_codes, p_codes)), shape=(n_c, n_p), dtype=np.float64)
        raw.sum_duplicates()
        raw.eliminate_zeros()
        # history: (decayed) purchase lines per customer and product; the already-bought pattern
        hist = sp.csr_matrix((decay, (c_codes, p_codes)), shape=(n_c, n_p), dtype=np.float64)
        hist.sum_duplicates()
        self.history_ = sp.csr_matrix(hist, dtype=np.float32)
        self.user_items_ = _weight_matrix(raw, self.weighting, self.bm25_k1, self.bm25_b)
        if self.alpha != 1.0:
            self.user_items_.data *= np.float32(self.alpha)
        self.n_history_ = np.diff(self.history_.indptr).astype(np.int64)
        self.n_history_[np.diff(self.user_items_.indptr) == 0] = 0  # e.g. zero spend: nothing to learn from

        self._fit_product_info(tx, prod, p_codes, n_p)
        self._fit_popularity(cust, c_codes, p_codes, decay, tx, segments)
        self._fit_cooccurrence(tx, c_codes, p_codes, ts, n_p)
        self._fit_model()
        return self

    def _fit_product_info(self, tx: pd.DataFrame, prod: pd.Series, p_codes: np.ndarray, n_p: int) -> None:
        if "price" in tx.columns:
            price = pd.Series(tx["price"].to_numpy(dtype=np.float64)).groupby(p_codes).median()
            self.product_price_ = price.reindex(range(n_p)).to_numpy(dtype=np.float64)
        else:
            self.product_price_ = np.full(n_p, np.nan)
        if "category" in tx.columns:
            # the mode per product (ties: the smallest label, as Series.mode), vectorised
            cat = tx["category"].astype("string")
            valid = cat.notna().to_numpy(dtype=bool)
            counts = (
                pd.DataFrame({"p": p_codes[valid], "c": cat[valid].to_numpy(dtype=object)})
                .groupby(["p", "c"], sort=False)
                .size()
                .reset_index(name="n")
                .sort_values(["p", "n", "c"], ascending=[True, False, True], kind="stable")
                .drop_duplicates("p")
            )
            self.product_category_ = np.full(n_p, None, dtype=object)
            self.product_category_[counts["p"].to_numpy(dtype=np.int64)] = counts["c"].to_numpy(dtype=object)
        else:
            self.product_category_ = None
        if "description" in tx.columns:
            desc = (
                pd.Series(tx["description"].astype("string").to_numpy(dtype=object)).groupby(p_codes).first()
            )
            self.product_description_ = np.asarray(desc.reindex(range(n_p)).to_numpy(), dtype=object)
        else:
            self.product_description_ = None
        self.excluded_mask_ = np.zeros(n_p, dtype=bool)  # exclusions were dropped before indexing

    def _fit_popularity(
        self,
        cust: pd.Series,
        c_codes: np.ndarray,
        p_codes: np.ndarray,
        decay: np.ndarray,
        tx: pd.DataFrame,
        segments: Mapping[str, str] | pd.Series | None,
    ) -> None:
        # popularity = (decayed) number of distinct customers who bought the product
        if self.recency_half_life_days is None:  # every line weighs 1: the pairs are history_'s pattern
            h = self.history_
            pairs = pd.DataFrame(
                {
                    "c": np.repeat(np.arange(h.shape[0], dtype=np.int64), np.diff(h.indptr)),
                    "p": h.indices.astype(np.int64),
                    "w": np.ones(h.nnz),
                }
            )
        else:
            pairs = (
                pd.DataFrame({"c": c_codes, "p": p_codes, "w": decay})
                .groupby(["c", "p"], sort=False)["w"]
                .max()
                .reset_index()
            )
        glob = pairs.groupby("p")["w"].sum()
        order = np.lexsort((glob.index.to_numpy(), -glob.to_numpy()))
        self.popular_ = glob.index.to_numpy()[order].astype(np.int64)
        self.popular_score_ = glob.to_numpy()[order].astype(np.float64)

        def _per_group(labels: np.ndarray) -> dict[str, np.ndarray]:
            df = pairs.assign(g=labels[pairs["c"].to_numpy()])
            df = df[pd.notna(df["g"])]
            out: dict[str, np.ndarray] = {}
            for g, grp in df.groupby("g", sort=True):
                s = grp.groupby("p")["w"].sum()
                o = np.lexsort((s.index.to_numpy(), -s.to_numpy()))[:_POPULAR_KEEP]
                out[str(g)] = s.index.to_numpy()[o].astype(np.int64)
            return out

        n_c = len(self.customer_ids_)
        if "country" in tx.columns:
            last_country = (
                pd.Series(tx["country"].astype("string").to_numpy(dtype=object)).groupby(c_codes).last()
            )
            self.customer_country_ = np.asarray(last_country.reindex(range(n_c)).to_numpy(), dtype=object)
            self.country_popular_ = _per_group(self.customer_country_)
        else:
            self.customer_country_ = None
            self.country_popular_ = {}
        if segments is not None:
            seg = pd.Series(segments)
            seg.index = seg.index.map(_to_key)
            labels = seg.reindex(pd.Index(self.customer_ids_)).to_numpy(dtype=object)
            self.customer_segment_ = labels
            self.segment_popular_ = _per_group(labels)
        else:
            self.customer_segment_ = None
            self.segment_popular_ = {}

    def _fit_cooccurrence(
        self, tx: pd.DataFrame, c_codes: np.ndarray, p_codes: np.ndarray, ts: pd.Series, n_p: int
    ) -> None:
        """Top co-occurring products per product: orders holding both, cosine-normalised."""
        if "order_id" in tx.columns:
            o_codes, _ = pd.factorize(tx["order_id"].astype("string"))
        else:  # one order per customer and timestamp
            o_codes, _ = pd.factorize(pd.Series(c_codes).astype(str) + "|" + ts.astype(str).to_numpy())
        n_o = int(o_codes.max()) + 1 if len(o_codes) else 0
        orders = sp.csr_matrix(
            (np.ones(len(o_codes), dtype=np.float32), (o_codes, p_codes)), shape=(n_o, n_p)
        )
        orders.data[:] = 1.0  # duplicates were summed; binarise
        orders.sum_duplicates()
        orders.data[:] = 1.0
        item_orders = orders.T.tocsr()
        n_orders = np.asarray(orders.sum(axis=0)).ravel().astype(np.float64)
        k = min(_NEIGHBOURS_KEEP, max(n_p - 1, 0))
        nb = np.full((n_p, k), -1, dtype=np.int64)
        nb_score = np.zeros((n_p, k), dtype=np.float32)
        norm = np.sqrt(np.maximum(n_orders, 1.0))
        if k > 0:
            # top-k of each sparse co-occurrence row: sort the non-zeros by (row, -score, product)
            chunk = max(1, _SCORE_CELLS // max(n_p, 1)) * 4
            for start in range(0, n_p, chunk):
                stop = min(n_p, start + chunk)
                co = (item_orders[start:stop] @ orders).tocoo()
                r = co.row.astype(np.int64)
                c = co.col.astype(np.int64)
                v = co.data.astype(np.float64)
                keep = (c != r + start) & (v > 0)
                r, c, v = r[keep], c[keep], v[keep]
                v = v / (norm[start + r] * norm[c])
                o = np.lexsort((c, -v, r))
                r, c, v = r[o], c[o], v[o]
                first = np.concatenate(([0], np.cumsum(np.bincount(r, minlength=stop - start))[:-1]))
                rank = np.arange(len(r)) - first[r]
                sel = rank < k
                nb[start + r[sel], rank[sel]] = c[sel]
                nb_score[start + r[sel], rank[sel]] = v[sel]
        self.cooc_neighbours_ = nb
        self.cooc_scores_ = nb_score

    def _fit_model(self) -> None:
        n_c, n_p = self.user_items_.shape
        self.model_ = None
        self.factors_ = 0
        if n_p < 2 or n_c < 2:
            log.warning(
                "Recommender: %d product(s), %d customer(s): no latent model, popularity only", n_p, n_c
            )
            return
        factors = min(int(self.factors), n_p - 1, n_c - 1)
        if factors < int(self.factors):
            log.info("Recommender: factors capped at %d (catalogue of %d products)", factors, n_p)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            if self.algorithm == "als":
                from implicit.cpu.als import AlternatingLeastSquares

                model = AlternatingLeastSquares(
                    factors=factors,
                    regularization=float(self.regularization),
                    alpha=1.0,
                    iterations=int(self.iterations),
                    num_threads=int(self.num_threads),
                    random_state=self.random_state,
                )
            else:
                from implicit.cpu.bpr import BayesianPersonalizedRanking

                model = BayesianPersonalizedRanking(
                    factors=factors,
                    learning_rate=float(self.learning_rate),
                    regularization=float(self.regularization),
                    iterations=int(self.iterations),
                    num_threads=int(self.num_threads),
                    random_state=self.random_state,
                )
            model.fit(self.user_items_, show_progress=False)
        uf = np.asarray(model.user_factors, dtype=np.float32)
        itf = np.asarray(model.item_factors, dtype=np.float32)
        if not (np.isfinite(uf).all() and np.isfinite(itf).all()):
            raise FloatingPointError("Recommender: implicit produced non-finite factors")
        self.model_ = model  # holds the factors: user_factors_/item_factors_ are views of it (pickled once)
        self.factors_ = factors
        norms = np.linalg.norm(itf, axis=1)
        self.item_norms_ = np.where(norms > 0, norms, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if not hasattr(self, "product_ids_"):
            raise RuntimeError("Recommender is not fitted; call fit(transactions) first")

    # Learned state derived from other attributes is rebuilt lazily and never pickled: the user
    # factors live in the implicit model only (one copy of n_customers x factors floats in the bundle)
    # and the customer id -> row dict is rebuilt from ``customer_ids_`` on first use after a load
    # (a million-entry dict pickles and unpickles slowly).
    _CACHE_ATTRS = ("_cache",)
    _DERIVED_ATTRS = ("user_factors_", "item_factors_", "customer_index_")

    def _drop_caches(self) -> None:
        self.__dict__.pop("_cache", None)

    def _cached(self) -> dict[str, Any]:
        c = self.__dict__.get("_cache")
        if c is None:
            c = self.__dict__["_cache"] = {}
        return c

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for k in (*self._CACHE_ATTRS, *self._DERIVED_ATTRS):
            state.pop(k, None)
        ids = state.get("customer_ids_")
        if isinstance(ids, np.ndarray) and ids.dtype == object and len(ids):
            # a fixed-width unicode array pickles as one buffer (a million str objects load ~100x slower)
            try:
                u = ids.astype(str)
            except (TypeError, ValueError):
                u = None
            if u is not None and np.array_equal(u.astype(object), ids):
                state["customer_ids_"] = u
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {k: v for k, v in state.items() if k not in self._DERIVED_ATTRS}  # older pickles held copies
        ids = state.get("customer_ids_")
        if isinstance(ids, np.ndarray) and ids.dtype.kind == "U":
            state["customer_ids_"] = ids.astype(object)
        self.__dict__.update(state)

    @property
    def user_factors_(self) -> np.ndarray:
        """Customer factors (customers x factors, float32): the implicit model's own array."""
        if self.__dict__.get("model_") is None:
            raise AttributeError("Recommender has no user factors (not fitted, or popularity only)")
        return np.asarray(self.model_.user_factors, dtype=np.float32)

    @property
    def item_factors_(self) -> np.ndarray:
        """Product factors (products x factors, float32): the implicit model's own array."""
        if self.__dict__.get("model_") is None:
            raise AttributeError("Recommender has no item factors (not fitted, or popularity only)")
        return np.asarray(self.model_.item_factors, dtype=np.float32)

    @property
    def customer_index_(self) -> dict[str, int]:
        """customer_id -> row of ``history_`` / the user factors (built on first use, not pickled)."""
        if "customer_ids_" not in self.__dict__:
            raise AttributeError("Recommender is not fitted: no customer_index_")
        c = self._cached()
        if "customer_index" not in c:
            c["customer_index"] = dict(zip(self.customer_ids_.tolist(), range(len(self.customer_ids_)), strict=True))
        return c["customer_index"]

    def _customer_rows(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of ``keys`` (-1 for unknown customers), via a hash index built once."""
        c = self._cached()
        idx = c.get("customer_pos")
        if idx is None:
            idx = c["customer_pos"] = pd.Index(self.customer_ids_, dtype=object)
        if not len(keys):
            return np.zeros(0, dtype=np.int64)
        arr = np.asarray(keys, dtype=object)
        # fast path: a run of consecutive fitted customers (a score table of the training customers)
        r0 = int(idx.get_indexer(arr[:1])[0])
        if r0 >= 0 and r0 + len(arr) <= len(idx) and np.array_equal(self.customer_ids_[r0 : r0 + len(arr)], arr):
            return np.arange(r0, r0 + len(arr), dtype=np.int64)
        return np.asarray(idx.get_indexer(arr), dtype=np.int64)

    def _exclusion_state(self) -> tuple[np.ndarray, np.ndarray, frozenset[int]]:
        """(mask, indices, set) of products never recommended now, cached per exclusion settings
        (the settings may be changed after fit)."""
        key = (tuple(self.excluded_products), tuple(self.excluded_product_prefixes))
        c = self._cached()
        hit = c.get("excluded")
        if hit is None or hit[0] != key:
            mask = self._is_excluded(pd.Series(self.product_ids_, dtype="string"))
            mask.flags.writeable = False
            idx = np.flatnonzero(mask)
            hit = c["excluded"] = (key, mask, idx, frozenset(idx.tolist()))
        return hit[1], hit[2], hit[3]

    def _request_excluded(self) -> np.ndarray:
        """Products never recommended now (exclusions may have been extended after fit); read-only."""
        return self._exclusion_state()[0]

    def _repurchasable(self) -> np.ndarray:
        n_p = len(self.product_ids_)
        if self.allow_repurchase:
            return np.ones(n_p, dtype=bool)
        if self.repurchase_categories and self.product_category_ is not None:
            return np.isin(self.product_category_.astype(str), [str(c) for c in self.repurchase_categories])
        return np.zeros(n_p, dtype=bool)

    def _popular_for(self, row: int | None, label: str | None) -> np.ndarray:
        if label is not None:
            if label in self.segment_popular_:
                return self.segment_popular_[label]
            if label in self.country_popular_:
                return self.country_popular_[label]
        if row is not None:
            if self.customer_segment_ is not None:
                s = self.customer_segment_[row]
                if s is not None and not pd.isna(s) and str(s) in self.segment_popular_:
                    return self.segment_popular_[str(s)]
            if self.customer_country_ is not None:
                c = self.customer_country_[row]
                if c is not None and not pd.isna(c) and str(c) in self.country_popular_:
                    return self.country_popular_[str(c)]
        return self.popular_

    def _fill(
        self, chosen: list[int], n: int, candidates: Iterable[np.ndarray], banned: set[int]
    ) -> list[int]:
        if len(chosen) >= n:
            return chosen[:n]
        seen = set(chosen) | banned
        for cand in candidates:
            for p in cand:
                p = int(p)
                if p not in seen:
                    chosen.append(p)
                    seen.add(p)
                    if len(chosen) >= n:
                        return chosen
        return chosen

    def _score_rows(self, rows: np.ndarray, excluded: np.ndarray, repurch: np.ndarray) -> np.ndarray:
        """Scores (len(rows) x products); -inf where a product may not be recommended."""
        scores = self.user_factors_[rows] @ self.item_factors_.T
        scores = scores.astype(np.float32, copy=False)
        hist = self.history_[rows]
        w = float(self.history_weight)
        if repurch.any() and w > 0:
            # blend: min-max scaled model score with the customer's own history scaled by its max
            finite_min = scores.min(axis=1, keepdims=True)
            finite_max = scores.max(axis=1, keepdims=True)
            span = np.where(finite_max > finite_min, finite_max - finite_min, 1.0)
            scores = (1.0 - w) * (scores - finite_min) / span
            h = hist.multiply(repurch[None, :].astype(np.float32)).tocsr()
            hmax = np.asarray(h.max(axis=1).todense()).ravel()
            hmax = np.where(hmax > 0, hmax, 1.0)
            h = sp.diags(1.0 / hmax) @ h
            scores += w * np.asarray(h.todense(), dtype=np.float32)
        scores[:, excluded] = -np.inf
        # already bought and not re-purchasable -> filtered
        bought = hist.tocoo()
        keep = ~repurch[bought.col]
        scores[bought.row[keep], bought.col[keep]] = -np.inf
        return scores

    def _model_top(
        self, rows: np.ndarray, k: int, excluded: np.ndarray, excluded_idx: np.ndarray, repurch: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` product indices and scores for fitted rows; index -1 where fewer than ``k`` are allowed.

        Without a repurchase blend this is implicit's fused, multi-threaded ``topk`` (the same call as
        ``model.recommend(..., filter_already_liked_items=True, filter_items=excluded)``), with the
        already-bought filter on the purchase history minus re-purchasable products. With the blend
        (re-purchasable products and ``history_weight`` > 0) every score of the row is needed (min-max
        scaling), so rows are scored densely in blocks of bounded size.
        """
        n_p = len(self.product_ids_)
        w = float(self.history_weight)
        if repurch.any() and w > 0:
            chunk = int(max(1, _SCORE_CELLS // max(n_p, 1)))  # bounds the dense score block
            tops, top_ss = [], []
            for start in range(0, len(rows), chunk):
                sc = self._score_rows(rows[start : start + chunk], excluded, repurch)
                top = (
                    np.argpartition(-sc, k - 1, axis=1)[:, :k]
                    if k < n_p
                    else np.tile(np.arange(n_p), (sc.shape[0], 1))
                )
                tops.append(top)
                top_ss.append(np.take_along_axis(sc, top, axis=1))
            top = np.concatenate(tops).astype(np.int64, copy=False)
            top_s = np.concatenate(top_ss).astype(np.float64)
            ok = np.isfinite(top_s)
        else:
            filt = self.history_[rows]
            if repurch.any():  # w == 0: re-purchasable products are ranked by the model like any other
                filt = sp.csr_matrix(filt @ sp.diags((~repurch).astype(np.float32)))
                filt.eliminate_zeros()
            top, top_s = self._topk_filtered(rows, k, filt, excluded_idx)
            ok = top_s > np.finfo(np.float32).min  # implicit marks filtered products with -FLT_MAX
            top_s = top_s.astype(np.float64)
        # best first, ties by product index (deterministic); not-allowed products last, then dropped
        o = np.lexsort((top, -np.where(ok, top_s, -np.inf)), axis=1)
        top, top_s, ok = (np.take_along_axis(a, o, axis=1) for a in (top, top_s, ok))
        top[~ok] = -1
        top_s[~ok] = 0.0
        return top, top_s

    def _topk_filtered(
        self, rows: np.ndarray, k: int, filt: sp.csr_matrix, excluded_idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """implicit's ``topk`` of ``rows`` with the products of ``filt`` (one row per customer) scored
        -FLT_MAX, as ``filter_query_items`` does. Rows with few filtered products take an unfiltered
        ``topk`` of ``k`` + their count and are filtered here with one vectorised lookup (implicit
        slices the filter matrix in small Python-level batches, which costs more than the extra
        candidates); the rest go through implicit's own filter."""
        from implicit.cpu.topk import topk
        from threadpoolctl import threadpool_limits

        n_p = len(self.product_ids_)
        user = self.user_factors_[rows]
        items = self.item_factors_
        f_items = excluded_idx.astype(np.int32) if len(excluded_idx) else None
        nf = np.diff(filt.indptr)
        extra = int(min(int(nf.max()) if len(nf) else 0, max(2 * k, 16)))
        kk = min(k + extra, n_p)
        light = nf <= kk - k
        top = np.empty((len(rows), k), dtype=np.int64)
        top_s = np.empty((len(rows), k), dtype=np.float32)
        floor = np.finfo(np.float32).min
        with threadpool_limits(limits=1, user_api="blas"):
            heavy = np.flatnonzero(~light)
            if len(heavy):
                ids, sc = topk(
                    items, user[heavy], k, filter_query_items=filt[heavy], filter_items=f_items,
                    num_threads=int(self.num_threads),
                )
                top[heavy], top_s[heavy] = ids, sc
            pos = np.flatnonzero(light)
            if len(pos):
                ids, sc = topk(items, user[pos], kk, filter_items=f_items, num_threads=int(self.num_threads))
                ids = np.asarray(ids, dtype=np.int64)
                sc = np.array(sc, dtype=np.float32)
                sub = filt[pos]
                sub.sort_indices()
                if sub.nnz:
                    bought = np.repeat(np.arange(len(pos), dtype=np.int64), np.diff(sub.indptr)) * n_p
                    bought += sub.indices
                    cand = (np.arange(len(pos), dtype=np.int64)[:, None] * n_p + ids).ravel()
                    at = np.minimum(np.searchsorted(bought, cand), len(bought) - 1)
                    sc.ravel()[bought[at] == cand] = floor
                # keep the best k allowed, in implicit's order (score descending)
                o = np.argsort(sc <= floor, axis=1, kind="stable")[:, :k]
                top[pos] = np.take_along_axis(ids, o, axis=1)
                top_s[pos] = np.take_along_axis(sc, o, axis=1)
        return top, top_s

    def _recommend_arrays(
        self, keys: list[str], n: int, segments: _SegmentLookup, repurch: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One batch: (product index matrix len(keys) x n with -1 padding, scores, list lengths,
        from-model flags)."""
        excluded, excluded_idx, banned_all = self._exclusion_state()
        m = len(keys)
        items = np.full((m, n), -1, dtype=np.int64)
        scores = np.zeros((m, n), dtype=np.float64)
        rows = self._customer_rows(keys)
        use_model = (rows >= 0) & (self.model_ is not None)
        if use_model.any():
            use_model[use_model] = self.n_history_[rows[use_model]] >= max(int(self.min_history), 1)
        model_pos = np.flatnonzero(use_model)
        k = min(n, len(self.product_ids_))
        if len(model_pos):
            top, top_s = self._model_top(rows[model_pos], k, excluded, excluded_idx, repurch)
            items[model_pos, :k] = top
            scores[model_pos, :k] = top_s
        lens = (items >= 0).sum(axis=1)
        from_model = use_model & (lens > 0)
        # popularity for cold customers and padding of short lists (few rows: a Python loop is fine)
        short = np.flatnonzero(lens < n)
        labels = segments.labels([keys[i] for i in short]) if len(short) else []
        indptr, indices = self.history_.indptr, self.history_.indices
        for i, label in zip(short.tolist(), labels, strict=True):
            row = int(rows[i]) if rows[i] >= 0 else None
            banned: set[int] | frozenset[int] = banned_all
            if row is not None:
                bought = indices[indptr[row] : indptr[row + 1]]
                bought = bought[~repurch[bought]]
                if len(bought):
                    banned = banned_all | set(bought.tolist())
            before = int(lens[i])
            chosen = self._fill(
                items[i, :before].tolist(), n, [self._popular_for(row, label), self.popular_], banned
            )
            if not chosen:  # everything left was bought already: popularity, exclusions only
                chosen = self._fill([], n, [self.popular_], banned_all)
            items[i, : len(chosen)] = chosen
            scores[i, before:] = 0.0
            lens[i] = len(chosen)
        return items, scores, lens, from_model

    def _batch_frame(
        self, keys: list[str], items: np.ndarray, scores: np.ndarray, lens: np.ndarray, from_model: np.ndarray
    ) -> pd.DataFrame:
        n = items.shape[1] if items.ndim == 2 else 0
        mask = np.arange(n)[None, :] < np.asarray(lens)[:, None]
        src = np.where(from_model, "model", "popularity").astype(object)
        return pd.DataFrame(
            {
                "customer_id": pd.array(np.repeat(np.array(keys, dtype=object), lens), dtype="string"),
                "rank": np.broadcast_to(np.arange(1, n + 1, dtype=np.int64), items.shape)[mask],
                "product_id": pd.array(self.product_ids_[items[mask]], dtype="string"),
                "score": scores[mask].astype(np.float64),
                "source": pd.array(np.repeat(src, lens), dtype="string"),
            }
        )

    def _lists(self, items: np.ndarray, lens: np.ndarray) -> list[list[str]]:
        """Product id lists from a padded index matrix (one C-level ``tolist`` for full rows)."""
        if not len(items):
            return []
        out = self.product_ids_[np.maximum(items, 0)].tolist()
        for i in np.flatnonzero(lens < items.shape[1]).tolist():
            out[i] = out[i][: lens[i]]
        return out

    def _batches(
        self, customer_ids: Iterable[Any] | str, n: int | None, segments: Mapping[str, str] | pd.Series | None
    ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        self._check_fitted()
        n = int(self.n_items if n is None else n)
        if n < 1:
            raise ValueError(f"Recommender.recommend: n must be >= 1, got {n}")
        if isinstance(customer_ids, (str, bytes)):
            customer_ids = [customer_ids]
        keys = [_to_key(c) for c in customer_ids]
        lookup = _SegmentLookup(segments)
        repurch = self._repurchasable()
        size = max(1, int(self.batch_size))
        starts = range(0, len(keys), size)
        # implicit's topk scores each batch with its own threads (num_threads; BLAS held at 1 thread)
        for start in progress(starts, desc="recommend", total=len(starts)):
            batch = keys[start : start + size]
            yield (batch, *self._recommend_arrays(batch, n, lookup, repurch))

    # ------------------------------------------------------------------ public API
    def recommend(
        self,
        customer_ids: Iterable[Any] | str,
        n: int | None = None,
        *,
        segments: Mapping[str, str] | pd.Series | None = None,
        output: Literal["dict", "lists", "frame"] = "dict",
    ) -> dict[str, list[str]] | list[list[str]] | pd.DataFrame:
        """Top-``n`` products for each customer, in batches of ``batch_size`` customers.

        Unknown customers, and customers with fewer than ``min_history`` products, get the
        popularity list of their segment (``segments``: customer_id -> segment label, or a
        country name), else their country, else the global list. Never raises for unknown ids
        and never returns an empty list while the catalogue has a recommendable product.

        Returns ``{customer_id: [product_id, ...]}``; with ``output="lists"`` the lists alone, in
        the order of ``customer_ids`` (the fast path for a score table: no dict of a million keys);
        with ``output="frame"`` a DataFrame with columns customer_id, rank (1 = best), product_id,
        score (model score; 0 for popularity fill), source ("model" or "popularity"). For very many
        customers use ``iter_recommendations`` to stream one batch at a time.
        """
        if output not in ("dict", "lists", "frame"):
            raise ValueError(
                f"Recommender.recommend: output must be 'dict', 'lists' or 'frame', got {output!r}"
            )
        if output in ("dict", "lists"):
            keys_all: list[str] = []
            lists: list[list[str]] = []
            for keys, items, _, lens, _ in self._batches(customer_ids, n, segments):
                keys_all.extend(keys)
                lists.extend(self._lists(items, lens))
            return lists if output == "lists" else dict(zip(keys_all, lists, strict=True))
        frames = list(self.iter_recommendations(customer_ids, n, segments=segments))
        if not frames:
            z = np.zeros((0, 0), dtype=np.int64)
            return self._batch_frame([], z, z.astype(np.float64), np.zeros(0, np.int64), np.zeros(0, bool))
        return pd.concat(frames, ignore_index=True)

    def iter_recommendations(
        self,
        customer_ids: Iterable[Any] | str,
        n: int | None = None,
        *,
        segments: Mapping[str, str] | pd.Series | None = None,
    ) -> Iterator[pd.DataFrame]:
        """Yield one recommendations frame per batch of ``batch_size`` customers (bounded memory).

        Columns as ``recommend(..., output="frame")``.
        """
        for keys, items, scores, lens, from_model in self._batches(customer_ids, n, segments):
            yield self._batch_frame(keys, items, scores, lens, from_model)

    def recommend_one(
        self, customer_id: Any, n: int | None = None, *, segment: str | None = None
    ) -> list[str]:
        """Top-``n`` product ids for one customer (see ``recommend``)."""
        seg = None if segment is None else {_to_key(customer_id): segment}
        out = self.recommend([customer_id], n, segments=seg)
        assert isinstance(out, dict)
        return out[_to_key(customer_id)]

    def _known_product(self, product_id: Any, where: str) -> int | None:
        self._check_fitted()
        idx = self.product_index_.get(_to_key(product_id))
        if idx is None:
            log.warning("Recommender.%s: unknown product id %r skipped", where, product_id)
        return idx

    def _similar_idx(self, idx: int) -> np.ndarray:
        """All other products, most similar first (cosine on item factors; co-occurrence without a model)."""
        n_p = len(self.product_ids_)
        if self.model_ is None:
            nb = self.cooc_neighbours_[idx]
            return nb[nb >= 0]
        v = self.item_factors_[idx] / self.item_norms_[idx]
        sim = (self.item_factors_ @ v) / self.item_norms_
        sim[idx] = -np.inf
        order = np.lexsort((np.arange(n_p), -sim))
        return order[np.isfinite(sim[order])]

    def similar_items(self, product_id: Any, n: int | None = None) -> list[str]:
        """Products most similar to ``product_id`` (cosine on the latent item factors).

        Unknown product ids give an empty list and a warning.
        """
        n = int(self.n_items if n is None else n)
        idx = self._known_product(product_id, "similar_items")
        if idx is None:
            return []
        excluded = self._request_excluded()
        out = [p for p in self._similar_idx(idx) if not excluded[p]][:n]
        return [str(self.product_ids_[p]) for p in out]

    def bought_together(self, product_ids: Iterable[Any] | str, n: int | None = None) -> list[str]:
        """Products most often in the same order as ``product_ids`` (post-order cross-sell).

        Scores add up the cosine-normalised order co-occurrence with each basket product; basket
        products and excluded products are left out. Unknown ids are skipped with a warning; if no
        id is known, or the basket has no co-occurring products, global popularity fills the list.
        """
        n = int(self.n_items if n is None else n)
        if isinstance(product_ids, str):
            product_ids = [product_ids]
        basket = [
            i for i in (self._known_product(p, "bought_together") for p in product_ids) if i is not None
        ]
        _, _, banned_excluded = self._exclusion_state()
        if basket:
            b = np.asarray(basket, dtype=np.int64)
            nb = self.cooc_neighbours_[b].ravel()
            sc = self.cooc_scores_[b].ravel().astype(np.float64)
            ok = nb >= 0
            nb, sc = nb[ok], sc[ok]
            # sums in basket then neighbour order, as a running float64 sum per product
            uniq, inv = np.unique(nb, return_inverse=True)
            tot = np.bincount(inv, weights=sc, minlength=len(uniq))
            keep = ~np.isin(uniq, b) & ~self._request_excluded()[uniq]
            uniq, tot = uniq[keep], tot[keep]
            ranked = uniq[np.lexsort((uniq, -tot))][:n].tolist()
        else:
            ranked = []
        banned = banned_excluded | set(basket) if basket else banned_excluded
        chosen = self._fill(ranked, n, [self.popular_], banned)
        return [str(self.product_ids_[p]) for p in chosen]

    def upsell(self, product_id: Any, n: int | None = None, *, min_price_ratio: float = 1.0) -> list[str]:
        """Similar products with a higher median unit price than ``product_id`` (currency of the data).

        ``min_price_ratio`` > 1 asks for a clearly dearer product (e.g. 1.2 = at least 20 % dearer).
        Unknown ids give an empty list and a warning.
        """
        n = int(self.n_items if n is None else n)
        idx = self._known_product(product_id, "upsell")
        if idx is None:
            return []
        base = self.product_price_[idx]
        if not np.isfinite(base):
            log.warning("Recommender.upsell: no price for product %r", product_id)
            return []
        excluded = self._request_excluded()
        price = self.product_price_
        out = [
            p
            for p in self._similar_idx(idx)
            if not excluded[p] and np.isfinite(price[p]) and price[p] > base * max(min_price_ratio, 1.0)
        ][:n]
        return [str(self.product_ids_[p]) for p in out]

    def product_price(self, product_id: Any) -> float | None:
        """Median unit price of a product in the training data (currency), None if unknown."""
        self._check_fitted()
        idx = self.product_index_.get(_to_key(product_id))
        return None if idx is None else float(self.product_price_[idx])
