"""The recommender trained on Spark (extra ``rebuy[spark]``): the purchase lines never reach the driver.

:func:`fit_recommender_spark` returns the fitted :class:`~rebuy.recommend.Recommender` that
``recommender.fit(lines as pandas, as_of, segments=segments)`` gives, ready for a bundle, for
``Recommender.recommend`` or for :func:`rebuy.spark.recommend_spark`.

Where the work runs:

- Spark, everything that grows with the lines or with the square of a basket: the line selection
  (``as_of``, customer and product present, the policy's excluded products), the recency decay,
  the sums per customer and product, each product's price values, category counts and first
  description, each customer's last country, the order co-occurrence (orders holding both
  products, top :data:`~rebuy.recommend.cooccurrence.NEIGHBOURS_KEEP` per product) and, for
  ``item_knn``, the product x product similarity (sum over customers of the product of their
  weights) with its top ``knn_neighbours`` per product;
- the driver, what the fitted recommender stores anyway: the distinct products (the exclusion
  policy runs on them), the customer x product pairs (``interactions_``), their weighting
  (implicit's own functions), the popularity lists and, for ``als``/``bpr``, the factor fit
  (implicit on the collected matrix: MLlib's ALS is another model and would not give the same lists).

Equality with the single-machine fit (tests in ``tests/test_spark_recommender.py``):

- sums are folded in line order, (customer, timestamp, input order): the order of rebuy's cleaned
  transactions, which ``Recommender.fit`` sums in. Input order is the order Spark reads the lines
  in (a Parquet file's row order); a shuffle before the call (``repartition``) loses it, and then
  lines of one customer at one instant are taken in any order; the similarity of products ``i`` and ``j`` is folded
  over customers in id order, as implicit's ``all_pairs_knn`` does. Without recency decay every
  array is bit-equal; with it the decay (``0.5 ** age``, Java's ``pow`` against numpy's) may differ
  in the last bit;
- "first" and "last" (a product's description, a customer's country) follow that line order;
- the top ``K`` similar products keep ties at the ``K``-th place by product column; implicit's heap
  may keep another of the tied products (the values kept are the same).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rebuy.dates import inclusive_end
from rebuy.errors import RecommenderDataError
from rebuy.recommend import Recommender
from rebuy.recommend.cooccurrence import NEIGHBOURS_KEEP, CoOccurrence
from rebuy.recommend.implicit_model import fit_latent
from rebuy.recommend.interactions import Confidence, Interactions, interactions_from_pairs
from rebuy.recommend.neighbours import ItemNeighbours, knn_weighted, too_small_for_knn
from rebuy.recommend.popularity import Segments, popularity_from_pairs
from rebuy.recommend.products import ProductInfo, category_mode_of_counts, median_of_counts
from rebuy.spark import _check_dataframe, _check_timestamp, _spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame

log = logging.getLogger(__name__)

_LINE = "__rebuy_line"
"""Input order of a line (``monotonically_increasing_id``): the tie-break after the timestamp."""


def fit_recommender_spark(
    transactions_sdf: SparkDataFrame,
    recommender: Recommender,
    as_of: Any = None,
    *,
    segments: Segments = None,
) -> Recommender:
    """Fit ``recommender`` (its hyper-parameters; it is changed in place and returned, as ``fit``)
    on the cleaned transactions of a Spark DataFrame.

    Parameters
    ----------
    transactions_sdf : canonical columns (``customer_id``, ``product_id``, ``timestamp``; ``amount``
        for spend confidence; ``price``, ``category``, ``description``, ``country``, ``order_id`` used
        if present), e.g. ``rebuy.data.load_transactions`` output written to Parquet.
    recommender : an unfitted (or fitted: it is refitted) ``Recommender``.
    as_of : only lines at or before it (a date: its whole day, in the session time zone, which
        should be UTC as in ``rebuy.spark``); None = every line, the last one is the decay reference.
    segments : customer_id -> label (pandas), as ``Recommender.fit``.
    """
    F, _, _ = _spark()
    _check_dataframe(transactions_sdf, "fit_recommender_spark: transactions_sdf")
    missing = [c for c in ("customer_id", "product_id", "timestamp") if c not in transactions_sdf.columns]
    if missing:
        raise RecommenderDataError(
            f"fit_recommender_spark: transactions_sdf has no {', '.join(missing)} column; the recommender needs products"
        )
    recommender.check_params()
    conf = recommender.confidence_spec()
    if conf.confidence == "spend" and "amount" not in transactions_sdf.columns:
        raise RecommenderDataError("fit_recommender_spark: confidence='spend' needs an 'amount' column")
    lines, as_of_ts = _selected_lines(transactions_sdf, as_of)
    product_ids = _kept_products(lines, recommender)
    spark = transactions_sdf.sparkSession
    codes = spark.createDataFrame(pd.DataFrame({"product_id": product_ids.astype(str), "p": np.arange(len(product_ids))}))
    lines = _with_values(lines.join(F.broadcast(codes), "product_id"), conf, as_of_ts).cache()
    try:
        interactions, pairs = _interactions(lines, product_ids, conf)
        parts = {
            "as_of_": as_of_ts,
            "interactions_": interactions,
            "products_": _product_info(lines, len(product_ids)),
            "popularity_": popularity_from_pairs(
                pairs, interactions.customer_ids, _last_country(lines, interactions.customer_ids), segments
            ),
            "cooccurrence_": _cooccurrence(lines, len(product_ids)),
        }
        if recommender.algorithm == "item_knn":
            parts["latent_"] = None
            parts["neighbours_"] = _neighbours(spark, interactions, recommender)
        else:
            parts["latent_"] = fit_latent(interactions.user_items, recommender.model_spec())
    finally:
        lines.unpersist()
    log.info("fit_recommender_spark: %d customers x %d products, %d pairs", len(interactions.customer_ids),
             len(product_ids), interactions.history.nnz)
    return recommender._set_fitted(parts)


# ----------------------------------------------------------------------------------------------- lines
def _selected_lines(transactions_sdf: SparkDataFrame, as_of: Any) -> tuple[SparkDataFrame, pd.Timestamp | None]:
    """Lines with a customer and a product at or before ``as_of`` (ids as strings, ``_LINE`` the input
    order), and the recency reference: the last included instant (``as_of``'s end less 1 µs, or the last line)."""
    F, _, _ = _spark()
    _check_timestamp(transactions_sdf, "fit_recommender_spark")
    tx = transactions_sdf.withColumn(_LINE, F.monotonically_increasing_id())
    tx = tx.where(F.col("customer_id").isNotNull() & F.col("product_id").isNotNull())
    tx = tx.withColumn("customer_id", F.col("customer_id").cast("string"))
    tx = tx.withColumn("product_id", F.col("product_id").cast("string"))
    tx = tx.withColumn("__us", F.unix_micros(F.col("timestamp").cast("timestamp")))
    if as_of is not None:
        end = inclusive_end(as_of, "fit_recommender_spark: as_of")
        end_us = int((end - pd.Timestamp(0)) // pd.Timedelta(microseconds=1))
        return tx.where(F.col("__us") < F.lit(end_us)), end - pd.Timedelta(microseconds=1)
    last = tx.agg(F.max("__us").alias("us")).collect()[0]["us"]
    return tx, (None if last is None else pd.Timestamp(0) + pd.Timedelta(microseconds=int(last)))


def _kept_products(lines: SparkDataFrame, recommender: Recommender) -> np.ndarray:
    """The distinct product ids the policy keeps, sorted as ``pd.factorize(sort=True)`` sorts them."""
    ids = lines.select("product_id").distinct().toPandas()["product_id"].astype("string")
    ids = ids[~recommender.policy.excludes(ids)]
    if not len(ids):
        raise RecommenderDataError(
            "fit_recommender_spark: no purchase lines left (after as_of and the product exclusions)"
        )
    _, uniques = pd.factorize(ids, sort=True)
    return np.asarray(uniques, dtype=object)


def _with_values(lines: SparkDataFrame, conf: Confidence, as_of_ts: pd.Timestamp | None) -> SparkDataFrame:
    """Each line's ``decay`` (its recency weight, 1 without decay) and ``value`` (its confidence:
    1 or the non-negative amount, times the decay), as ``select_lines`` / ``build_interactions``."""
    F, _, _ = _spark()
    if conf.recency_half_life_days is not None:
        ref_us = int((as_of_ts - pd.Timestamp(0)) // pd.Timedelta(microseconds=1))
        age_days = F.greatest((F.lit(ref_us) - F.col("__us")) / F.lit(1e6) / F.lit(86400.0), F.lit(0.0))
        decay = F.pow(F.lit(0.5), age_days / F.lit(float(conf.recency_half_life_days)))
    else:
        decay = F.lit(1.0)
    lines = lines.withColumn("__decay", decay.cast("double"))
    value = F.greatest(F.col("amount").cast("double"), F.lit(0.0)) if conf.confidence == "spend" else F.lit(1.0)
    if conf.recency_half_life_days is not None:
        value = value * F.col("__decay")
    return lines.withColumn("__value", value)


def _fold(column: str) -> Any:
    """The sum of ``column`` over a group's lines folded in line order (timestamp, input order)."""
    F, _, _ = _spark()
    ordered = F.array_sort(F.collect_list(F.struct(F.col("__us"), F.col(_LINE), F.col(column).alias("x"))))
    return F.aggregate(ordered, F.lit(0.0), lambda acc, e: acc + e["x"])


# ----------------------------------------------------------------------------------------------- parts
def _interactions(lines: SparkDataFrame, product_ids: np.ndarray, conf: Confidence) -> tuple[Interactions, pd.DataFrame]:
    """The :class:`Interactions` of the lines summed per (customer, product) in Spark, and the pairs
    (codes ``c``, ``p``, popularity weight ``w``: the pair's largest decay) in customer order."""
    F, _, _ = _spark()
    pairs = (
        lines.groupBy("customer_id", "p")
        .agg(_fold("__value").alias("raw"), _fold("__decay").alias("history"), F.max("__decay").alias("w"))
        .toPandas()
    )
    c_codes, c_uniques = pd.factorize(pairs["customer_id"].astype("string"), sort=True)
    pairs = pd.DataFrame({"c": c_codes.astype(np.int64), "p": pairs["p"].to_numpy(dtype=np.int64),
                          "raw": pairs["raw"].to_numpy(dtype=np.float64),
                          "history": pairs["history"].to_numpy(dtype=np.float64),
                          "w": pairs["w"].to_numpy(dtype=np.float64)})
    pairs = pairs.sort_values(["c", "p"], kind="stable", ignore_index=True)
    customer_ids = np.asarray(c_uniques, dtype=object)
    interactions = interactions_from_pairs(customer_ids, product_ids, pairs, conf)
    return interactions, pairs[["c", "p", "w"]]


def _last_country(lines: SparkDataFrame, customer_ids: np.ndarray) -> np.ndarray | None:
    """Each customer's country on their last line with one (None without a ``country`` column)."""
    F, _, _ = _spark()
    if "country" not in lines.columns:
        return None
    last = (
        lines.where(F.col("country").isNotNull())
        .groupBy("customer_id")
        .agg(F.max_by(F.col("country").cast("string"), F.struct("__us", _LINE)).alias("country"))
        .toPandas()
    )
    by_id = pd.Series(last["country"].to_numpy(dtype=object), index=last["customer_id"].astype(object))
    return np.asarray(by_id.reindex(pd.Index(customer_ids, dtype=object)).to_numpy(), dtype=object)


def _product_info(lines: SparkDataFrame, n_products: int) -> ProductInfo:
    """Median price, most frequent category and first description per product, from Spark aggregates."""
    F, _, _ = _spark()
    prices = np.full(n_products, np.nan)
    if "price" in lines.columns:
        price = F.col("price").cast("double")
        values = (lines.where(price.isNotNull() & ~F.isnan(price)).groupBy("p", price.alias("value"))
                  .count().withColumnRenamed("count", "n").toPandas())
        prices = median_of_counts(values, n_products)
    category = None
    if "category" in lines.columns:
        counts = (lines.where(F.col("category").isNotNull()).groupBy("p", F.col("category").cast("string").alias("c"))
                  .count().withColumnRenamed("count", "n").toPandas())
        category = category_mode_of_counts(counts, n_products)
    description = None
    if "description" in lines.columns:
        first = (lines.where(F.col("description").isNotNull()).groupBy("p")
                 .agg(F.min_by(F.col("description").cast("string"), F.struct("customer_id", "__us", _LINE)).alias("d"))
                 .toPandas())
        description = np.full(n_products, None, dtype=object)
        description[first["p"].to_numpy(dtype=np.int64)] = first["d"].to_numpy(dtype=object)
    return ProductInfo(prices, category, description)


def _top_per_row(pairs: SparkDataFrame, k: int) -> pd.DataFrame:
    """The ``k`` largest ``v`` of each row ``i`` of ``pairs`` (columns i, j, v), ties by column ``j``."""
    F, _, Window = _spark()
    rank = F.row_number().over(Window.partitionBy("i").orderBy(F.col("v").desc(), F.col("j").asc()))
    top = pairs.withColumn("rank", rank).where(F.col("rank") <= k)
    return top.select("i", "j", "v", "rank").toPandas()


def _cooccurrence(lines: SparkDataFrame, n_products: int) -> CoOccurrence:
    """Orders holding both products / sqrt(orders of each), top ``NEIGHBOURS_KEEP`` other products per product."""
    F, _, _ = _spark()
    k = min(NEIGHBOURS_KEEP, max(n_products - 1, 0))
    nb = np.full((n_products, k), -1, dtype=np.int64)
    nb_score = np.zeros((n_products, k), dtype=np.float32)
    if k == 0:
        return CoOccurrence(nb, nb_score)
    if "order_id" in lines.columns:
        order = F.col("order_id").cast("string")
    else:  # one order per customer and timestamp
        order = F.concat_ws("|", F.col("customer_id"), F.col("__us").cast("string"))
    orders = lines.select(order.alias("o"), "p").where(F.col("o").isNotNull()).distinct().cache()
    norm = orders.groupBy("p").agg(F.sqrt(F.greatest(F.count(F.lit(1)).cast("double"), F.lit(1.0))).alias("norm"))
    a = orders.select("o", F.col("p").alias("i"))
    b = orders.select("o", F.col("p").alias("j"))
    both = a.join(b, "o").where(F.col("i") != F.col("j")).groupBy("i", "j").agg(F.count(F.lit(1)).alias("n"))
    ni = norm.select(F.col("p").alias("i"), F.col("norm").alias("ni"))
    nj = norm.select(F.col("p").alias("j"), F.col("norm").alias("nj"))
    scored = both.join(ni, "i").join(nj, "j").select(
        "i", "j", (F.col("n").cast("double") / (F.col("ni") * F.col("nj"))).alias("v"))
    top = _top_per_row(scored, k)
    orders.unpersist()
    rows, rank = top["i"].to_numpy(dtype=np.int64), top["rank"].to_numpy(dtype=np.int64) - 1
    nb[rows, rank] = top["j"].to_numpy(dtype=np.int64)
    nb_score[rows, rank] = top["v"].to_numpy(dtype=np.float64)
    return CoOccurrence(nb, nb_score)


def _neighbours(spark: Any, interactions: Interactions, recommender: Recommender) -> ItemNeighbours | None:
    """implicit's item-item KNN similarity computed in Spark: ``sum_u w[u, i] * w[u, j]`` folded over
    customers in row order, then each product's top ``K`` (itself included, ties by column)."""
    F, _, _ = _spark()
    if too_small_for_knn(interactions.user_items):
        return None
    n_p = interactions.user_items.shape[1]
    spec = recommender.knn_spec()
    w = knn_weighted(interactions.user_items, spec).tocoo()
    weights = spark.createDataFrame(pd.DataFrame({"u": w.row.astype(np.int64), "i": w.col.astype(np.int64),
                                                  "w": w.data.astype(np.float64)}))
    a = weights.select("u", "i", F.col("w").alias("wi"))
    b = weights.select("u", F.col("i").alias("j"), F.col("w").alias("wj"))
    terms = a.join(b, "u").select("i", "j", F.struct("u", (F.col("wj") * F.col("wi")).alias("x")).alias("t"))
    folded = terms.groupBy("i", "j").agg(
        F.aggregate(F.array_sort(F.collect_list("t")), F.lit(0.0), lambda acc, e: acc + e["x"]).alias("v"))
    top = _top_per_row(folded, int(spec.neighbours))
    sim = sp.csr_matrix((top["v"].to_numpy(dtype=np.float64),
                         (top["i"].to_numpy(dtype=np.int64), top["j"].to_numpy(dtype=np.int64))),
                        shape=(n_p, n_p), dtype=np.float64)
    sim.sort_indices()
    if not np.isfinite(sim.data).all():
        raise FloatingPointError("fit_recommender_spark: non-finite item similarities")
    return ItemNeighbours(sim, spec.weighting, int(spec.neighbours))
