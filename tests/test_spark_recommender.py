"""rebuy.spark_recommender in Spark local mode: the recommender fitted on Spark equals Recommender.fit.

Skipped only when Java is absent (as tests/test_spark.py); pyspark must be installed.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

if shutil.which("java") is None:
    pytest.skip("Java is not installed: Spark local mode needs a JVM (install Java 17+)", allow_module_level=True)

import pyspark  # noqa: E402,F401 - must be installed: pip install 'rebuy[spark]' (or the dev extra)

from rebuy.errors import InvalidParameterError, RecommenderDataError  # noqa: E402
from rebuy.recommend import Recommender  # noqa: E402
from rebuy.simulate import simulate  # noqa: E402
from rebuy.spark_recommender import fit_recommender_spark  # noqa: E402

pytestmark = [
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:DeprecationWarning"),
]

AS_OF = "2024-03-31"


@pytest.fixture(scope="module")
def lines():
    """A simulated shop's lines in rebuy's cleaned order (customer, timestamp), with a country that
    changes for some customers and descriptions that change over time, so "first" and "last" matter."""
    tx = simulate(n_customers=700, seed=11, start="2023-01-01", end="2024-06-30", n_products=60).transactions
    tx = tx.sort_values(["customer_id", "timestamp"], kind="stable", ignore_index=True)
    rng = np.random.default_rng(5)
    home = pd.Series(rng.choice(["UK", "France", "Spain", "EIRE"], tx["customer_id"].nunique()),
                     index=tx["customer_id"].unique())
    tx["country"] = home.reindex(tx["customer_id"]).to_numpy()
    moved = rng.random(len(tx)) < 0.05
    tx.loc[moved, "country"] = "Germany"
    tx["description"] = tx["product_id"].astype(str) + np.where(rng.random(len(tx)) < 0.3, " (new)", "")
    return tx


def _segments(tx: pd.DataFrame) -> pd.Series:
    ids = tx["customer_id"].drop_duplicates().to_numpy()
    return pd.Series(np.where(np.arange(len(ids)) % 3 == 0, "Champions", "At Risk"), index=ids)


def _pair(spark, tx, **params):
    """(single-machine fit, Spark fit) with the same hyper-parameters, as_of and segments."""
    seg = _segments(tx)
    exp = Recommender(**params).fit(tx, AS_OF, segments=seg)
    # in input order (as a Parquet file reads): lines of one timestamp keep their order ("last country")
    got = fit_recommender_spark(spark.createDataFrame(tx), Recommender(**params), AS_OF, segments=seg)
    return exp, got


def _assert_csr_equal(got, exp, rtol: float = 0.0) -> None:
    assert got.shape == exp.shape
    np.testing.assert_array_equal(got.indptr, exp.indptr)
    np.testing.assert_array_equal(got.indices, exp.indices)
    if rtol:
        np.testing.assert_allclose(got.data, exp.data, rtol=rtol)
    else:
        np.testing.assert_array_equal(got.data, exp.data)


def _assert_same_fit(got: Recommender, exp: Recommender, rtol: float = 0.0) -> None:
    """Every fitted part but the model (interactions, products, popularity, co-occurrence)."""
    assert got.as_of_ == exp.as_of_
    gi, ei = got.interactions_, exp.interactions_
    np.testing.assert_array_equal(gi.customer_ids, ei.customer_ids)
    np.testing.assert_array_equal(gi.product_ids, ei.product_ids)
    _assert_csr_equal(gi.history, ei.history, rtol)
    _assert_csr_equal(gi.user_items, ei.user_items, rtol)
    np.testing.assert_array_equal(gi.n_history, ei.n_history)
    gp, ep = got.products_, exp.products_
    np.testing.assert_array_equal(gp.price, ep.price)
    assert list(gp.category) == list(ep.category)
    assert list(gp.description) == list(ep.description)
    gpop, epop = got.popularity_, exp.popularity_
    np.testing.assert_array_equal(gpop.popular, epop.popular)
    np.testing.assert_allclose(gpop.popular_score, epop.popular_score, rtol=rtol or 1e-15)
    assert list(gpop.customer_country) == list(epop.customer_country)
    assert gpop.country_popular.keys() == epop.country_popular.keys()
    for k in epop.country_popular:
        np.testing.assert_array_equal(gpop.country_popular[k], epop.country_popular[k])
    assert list(gpop.customer_segment) == list(epop.customer_segment)
    for k in epop.segment_popular:
        np.testing.assert_array_equal(gpop.segment_popular[k], epop.segment_popular[k])
    np.testing.assert_array_equal(got.cooccurrence_.neighbours, exp.cooccurrence_.neighbours)
    np.testing.assert_array_equal(got.cooccurrence_.scores, exp.cooccurrence_.scores)


def _lists(rec: Recommender, tx: pd.DataFrame) -> dict:
    return rec.recommend(tx["customer_id"].drop_duplicates().tolist() + ["never-seen"], 10)


@pytest.mark.parametrize("weighting", ["bm25", "cosine", "tfidf"])
def test_item_knn_on_spark_is_bit_equal_when_no_neighbour_is_cut(spark, lines, weighting):
    # K above the catalogue: every similarity implicit computes is kept, so nothing depends on ties
    exp, got = _pair(spark, lines, algorithm="item_knn", knn_weighting=weighting, knn_neighbours=100,
                     excluded_product_prefixes=["P0000"])
    _assert_same_fit(got, exp)
    _assert_csr_equal(got.neighbours_.similarity, exp.neighbours_.similarity)
    assert not np.isin(got.interactions_.product_ids, [f"P0000{i}" for i in range(10)]).any()
    assert _lists(got, lines) == _lists(exp, lines)
    assert got.upsell("P00012", 3) == exp.upsell("P00012", 3)


def test_item_knn_top_k_on_spark_keeps_implicits_values(spark, lines):
    # with K = 5 a row may hold tied values at the 5th place: the kept values are the same, and
    # every product both keep has the same similarity
    exp, got = _pair(spark, lines, algorithm="item_knn", knn_weighting="bm25", knn_neighbours=5)
    gs, es = got.neighbours_.similarity, exp.neighbours_.similarity
    assert gs.nnz == es.nnz
    for i in range(es.shape[0]):
        g, e = gs.getrow(i), es.getrow(i)
        np.testing.assert_array_equal(np.sort(g.data), np.sort(e.data))
        common = np.intersect1d(g.indices, e.indices)
        np.testing.assert_array_equal(g[:, common].toarray(), e[:, common].toarray())
        if not np.array_equal(g.indices, e.indices):  # a different product only where values tie
            assert len(np.unique(g.data)) < len(g.data)


def test_recency_decay_and_spend_confidence_agree_within_float_rounding(spark, lines):
    exp, got = _pair(spark, lines, algorithm="item_knn", knn_weighting="cosine", knn_neighbours=100,
                     confidence="spend", recency_half_life_days=60.0)
    assert got.as_of_ == pd.Timestamp(AS_OF) + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    _assert_same_fit(got, exp, rtol=1e-6)
    _assert_csr_equal(got.neighbours_.similarity, exp.neighbours_.similarity, rtol=1e-6)


def test_als_fits_on_the_matrix_spark_collected(spark, lines):
    params = dict(algorithm="als", factors=8, iterations=3, num_threads=1, random_state=3)
    exp, got = _pair(spark, lines, **params)
    _assert_same_fit(got, exp)
    np.testing.assert_array_equal(got.latent_.item_factors, exp.latent_.item_factors)
    assert _lists(got, lines) == _lists(exp, lines)


def test_lines_after_as_of_never_reach_the_fit(spark, lines):
    late = lines["timestamp"] >= pd.Timestamp(AS_OF) + pd.Timedelta(days=1)
    assert late.any()
    _, got = _pair(spark, lines, algorithm="item_knn")
    assert got.interactions_.history.sum() == pytest.approx((~late).sum())


def test_without_products_or_a_dataframe_the_spark_fit_says_so(spark, lines):
    with pytest.raises(RecommenderDataError, match="product_id"):
        fit_recommender_spark(spark.createDataFrame(lines.drop(columns="product_id")), Recommender())
    with pytest.raises(InvalidParameterError, match="pyspark.sql.DataFrame"):
        fit_recommender_spark(lines, Recommender())
    with pytest.raises(RecommenderDataError, match="no purchase lines left"):
        fit_recommender_spark(spark.createDataFrame(lines), Recommender(), "2000-01-01")
