"""rebuy.spark in Spark local mode: the Spark path equals the single-machine path on the same data.

Skipped only when Java is absent. pyspark itself must be importable (it is in the dev extra): a
missing pyspark fails this module, so CI cannot silently skip it.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

if shutil.which("java") is None:
    pytest.skip("Java is not installed: Spark local mode needs a JVM (install Java 17+)", allow_module_level=True)

import pyspark  # noqa: E402,F401 - must be installed: pip install 'rebuy[spark]' (or the dev extra)

from rebuy.config import Config  # noqa: E402
from rebuy.data import load_customers, load_events, load_transactions  # noqa: E402
from rebuy.features import FeatureError, rfm_summary  # noqa: E402
from rebuy.models import BGNBDModel, GammaGammaModel  # noqa: E402
from rebuy.offers import vip_clv_threshold  # noqa: E402
from rebuy.schema import score_columns  # noqa: E402
from rebuy.scoring import Scorer  # noqa: E402
from rebuy.simulate import simulate, write_simulation  # noqa: E402
from rebuy.spark import (  # noqa: E402
    SparkScoringError,
    _score_schema,
    _vip_cut,
    distinct_rfm_rows,
    distinct_spend_rows,
    fit_value_models_spark,
    recommend_spark,
    rfm_summary_spark,
    score_spark,
)
from rebuy.train import train  # noqa: E402

pytestmark = [
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:DeprecationWarning"),
]

SUMMARY_COLS = ["frequency", "recency", "T", "monetary_value", "first_purchase", "last_purchase", "purchase_days",
                "total_spend"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A simulated shop (2,500 customers) written to Parquet and a bundle trained on it."""
    root = tmp_path_factory.mktemp("spark_shop")
    sim = simulate(n_customers=2_500, seed=7, start="2023-01-01", end="2024-06-30", n_products=300)
    paths = write_simulation(sim, root / "shop.parquet", include_latent=False)
    cfg = Config(purchase_model="bgnbd")  # the Spark driver fits the configured model (auto needs holdouts)
    result = train(paths["transactions"], cfg, models_dir=root / "models")
    as_of = pd.Timestamp(result.manifest["as_of"])
    tx = load_transactions(paths["transactions"], cfg, as_of=as_of)
    customers = load_customers(paths["customers"], cfg, as_of=as_of)
    events = load_events(paths["events"], cfg)
    return {"paths": paths, "bundle": result.bundle_dir, "models": root / "models", "as_of": as_of, "tx": tx,
            "customers": customers, "events": events, "config": cfg}


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("customer_id", ignore_index=True)


def _assert_summary_equal(spark_summary: pd.DataFrame, expected: pd.DataFrame) -> None:
    got = _sorted(spark_summary)
    exp = expected.reset_index()
    assert got["customer_id"].astype(str).tolist() == exp["customer_id"].astype(str).tolist()
    for c in ("frequency", "recency", "T", "monetary_value", "total_spend"):
        np.testing.assert_allclose(got[c].to_numpy(float), exp[c].to_numpy(float), rtol=1e-9, atol=1e-9, err_msg=c)
    assert (got["purchase_days"].to_numpy() == exp["purchase_days"].to_numpy()).all()
    for c in ("first_purchase", "last_purchase"):
        assert (got[c].to_numpy(dtype="datetime64[ns]") == exp[c].to_numpy(dtype="datetime64[ns]")).all(), c


# ----------------------------------------------------------------------------------------------- RFM
def test_rfm_summary_matches_hand_worked_case(spark):
    # customer a: 3 purchase days (two lines on 1 Jan incl. one at 23:59, 8 Jan, 15 Jan); b: one day;
    # c: a line after as_of (dropped). Weeks: recency(a) = 14/7 = 2, T(a) = 21/7 = 3.
    tx = pd.DataFrame({
        "customer_id": ["a", "a", "a", "a", "b", "c", "c"],
        "timestamp": pd.to_datetime(["2024-01-01 09:00", "2024-01-01 23:59", "2024-01-08 12:00", "2024-01-15 08:00",
                                     "2024-01-20 10:00", "2024-01-10 10:00", "2024-01-30 10:00"]),
        "amount": [10.0, 5.0, 20.0, 40.0, 7.5, 3.0, 100.0],
    })
    got = _sorted(rfm_summary_spark(spark.createDataFrame(tx), "2024-01-22").toPandas())
    assert got["customer_id"].tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(got["frequency"], [2.0, 0.0, 0.0])
    np.testing.assert_allclose(got["recency"], [2.0, 0.0, 0.0])
    np.testing.assert_allclose(got["T"], [3.0, 2 / 7, 12 / 7])
    np.testing.assert_allclose(got["monetary_value"], [30.0, 0.0, 0.0])  # mean of 20 and 40; first day excluded
    np.testing.assert_allclose(got["total_spend"], [75.0, 7.5, 3.0])
    assert got["purchase_days"].tolist() == [3, 1, 1]
    _assert_summary_equal(got, rfm_summary(tx, as_of="2024-01-22"))


@pytest.mark.parametrize("time_unit", ["weeks", "days"])
def test_rfm_summary_spark_equals_single_machine(spark, shop, time_unit):
    tx = shop["tx"]
    sdf = spark.createDataFrame(tx)
    as_of = shop["as_of"] - pd.Timedelta(days=60)  # also exercises dropping later lines
    result = rfm_summary_spark(sdf, as_of, time_unit)
    assert result.schema["T"].metadata["rebuy"] == {"time_unit": time_unit, "as_of": as_of.date().isoformat()}
    _assert_summary_equal(result.toPandas(), rfm_summary(tx, as_of=as_of, time_unit=time_unit))


def test_rfm_summary_spark_rejects_bad_input(spark):
    sdf = spark.createDataFrame(pd.DataFrame({"customer_id": ["a", None], "timestamp": pd.to_datetime(["2024-01-01"] * 2),
                                              "amount": [1.0, 2.0]}))
    with pytest.raises(FeatureError, match="'customer_id' has 1 missing"):
        rfm_summary_spark(sdf, "2024-02-01")
    with pytest.raises(FeatureError, match=r"missing column\(s\) \['amount'\]"):
        rfm_summary_spark(sdf.drop("amount"), "2024-02-01")
    with pytest.raises(FeatureError, match="time_unit"):
        rfm_summary_spark(sdf, "2024-02-01", time_unit="months")


# ----------------------------------------------------------------------------------------------- fitting
def test_distinct_rows_and_fitted_params_equal_single_machine(spark, shop):
    tx, cfg, as_of = shop["tx"], shop["config"], shop["as_of"]
    summary_sdf = rfm_summary_spark(spark.createDataFrame(tx), as_of, cfg.time_unit)
    summary = rfm_summary(tx, as_of=as_of, time_unit=cfg.time_unit)

    frt = distinct_rfm_rows(summary_sdf)
    exp = summary.groupby(["frequency", "recency", "T"]).size().reset_index(name="count")
    assert frt["count"].sum() == len(summary)
    np.testing.assert_array_equal(frt[["frequency", "recency", "T", "count"]].to_numpy(), exp.to_numpy())
    assert len(frt) < len(summary)  # the point: far fewer rows than customers
    spend = distinct_spend_rows(summary_sdf)
    assert spend["count"].sum() == int(((summary["frequency"] > 0) & (summary["monetary_value"] > 0)).sum())

    bgnbd, gg = fit_value_models_spark(summary_sdf, cfg)
    ref_bg = BGNBDModel(penalizer=cfg.bgnbd.penalizer, retry_penalizer=cfg.bgnbd.retry_penalizer).fit(summary)
    ref_gg = GammaGammaModel(penalizer=cfg.gamma_gamma.penalizer, retry_penalizer=cfg.gamma_gamma.retry_penalizer).fit(summary)
    for k, v in ref_bg.params_.items():
        assert bgnbd.params_[k] == pytest.approx(v, rel=1e-9), k
    for k, v in ref_gg.params_.items():
        assert gg.params_[k] == pytest.approx(v, rel=1e-9), k
    assert bgnbd.n_customers_ == ref_bg.n_customers_ and gg.n_customers_ == ref_gg.n_customers_
    # and the bundle trained on the same data (single machine) holds the same parameters
    for k, v in shop_params(shop)["bgnbd"].items():
        assert bgnbd.params_[k] == pytest.approx(v, rel=1e-9), k

    with pytest.raises(FeatureError, match="config.time_unit"):
        fit_value_models_spark(summary_sdf, Config(time_unit="days"))


def shop_params(shop) -> dict:
    from rebuy.bundle import read_manifest

    return read_manifest(shop["bundle"])["params"]


# ----------------------------------------------------------------------------------------------- scoring
def _assert_tables_equal(got: pd.DataFrame, exp: pd.DataFrame) -> None:
    got, exp = _sorted(got), _sorted(exp)
    assert list(got.columns) == list(exp.columns)
    assert got["customer_id"].astype(str).tolist() == exp["customer_id"].astype(str).tolist()
    for c in exp.columns:
        if c == "scored_at":
            continue
        e, g = exp[c], got[c]
        if c in ("recommended_products", "offer_products"):
            assert [list(map(str, x)) for x in g] == [list(map(str, x)) for x in e], c
        elif pd.api.types.is_datetime64_any_dtype(e.dtype):
            gv = pd.to_datetime(g).to_numpy(dtype="datetime64[ns]")
            ev = e.to_numpy(dtype="datetime64[ns]")
            assert ((gv == ev) | (np.isnat(gv) & np.isnat(ev))).all(), c
        elif pd.api.types.is_float_dtype(e.dtype):
            np.testing.assert_allclose(g.to_numpy(float), e.to_numpy(float), rtol=1e-9, atol=1e-12, err_msg=c)
        else:
            assert g.astype(str).tolist() == e.astype(str).tolist(), c


def test_score_spark_equals_scorer_score_frame(spark, shop):
    scorer = Scorer.load(shop["models"] / "latest")
    as_of = shop["as_of"]
    scored_at = pd.Timestamp("2024-07-01 03:00:00")
    expected = scorer.score_frame(shop["tx"], as_of, customers=shop["customers"], events=shop["events"],
                                  scored_at=scored_at)
    # the comparison is meaningful only when several offer types occur
    assert {"vip", "win_back", "browse_abandonment", "cross_sell", "birthday"} <= set(expected["offer_type"])
    assert expected["recommended_products"].map(len).gt(0).all()
    assert (expected["group"] == "control").any()  # control groups need the whole night's counts: a second pass

    result = score_spark(
        spark.createDataFrame(shop["tx"]),
        shop["models"] / "latest",
        as_of,
        customers_sdf=spark.createDataFrame(shop["customers"]),
        events_sdf=spark.createDataFrame(shop["events"]),
        num_partitions=3,
        scored_at=scored_at,
    )
    assert [f.name for f in result.schema.fields][: len(expected.columns)] == list(expected.columns)
    assert result.schema["recommended_products"].dataType.simpleString() == "array<string>"
    got = result.toPandas()
    assert len(got) == len(expected)
    assert (pd.to_datetime(got["scored_at"]) == scored_at).all()
    _assert_tables_equal(got, expected)


def test_global_vip_cut_for_bundles_without_one_equals_batch_threshold(spark, shop):
    # bundles without manifest["offers"]["vip_min_clv"] get the cut from a first Spark pass; it must be
    # the threshold of the whole batch, not of a partition
    scorer = Scorer.load(shop["bundle"])
    table = scorer.score_frame(shop["tx"], shop["as_of"])
    share = scorer.config.offers.vip_top_share
    sdf = spark.createDataFrame(shop["tx"]).repartition(3, "customer_id")
    cut = _vip_cut(sdf, [str(shop["bundle"])], scorer.run_id, shop["as_of"], share)
    assert cut == vip_clv_threshold(table["clv_12m"], share)
    assert 0 < cut < table["clv_12m"].max()


def test_recommend_spark_equals_recommender(spark, shop):
    scorer = Scorer.load(shop["bundle"])
    ids = shop["tx"]["customer_id"].drop_duplicates().sample(400, random_state=1).tolist() + ["never-seen-1"]
    expected = scorer.recommender.recommend(ids, 5, output="frame")
    got = recommend_spark(spark.createDataFrame(pd.DataFrame({"customer_id": ids})).repartition(3), shop["bundle"], 5)
    got = got.toPandas().sort_values(["customer_id", "rank"], ignore_index=True)
    exp = expected.sort_values(["customer_id", "rank"], ignore_index=True)
    assert got["customer_id"].tolist() == exp["customer_id"].astype(str).tolist()
    assert got["product_id"].tolist() == exp["product_id"].astype(str).tolist()
    assert got["rank"].tolist() == exp["rank"].tolist()
    assert got["source"].tolist() == exp["source"].astype(str).tolist()
    np.testing.assert_allclose(got["score"], exp["score"], rtol=1e-5, atol=1e-6)
    assert (got.loc[got["customer_id"] == "never-seen-1", "source"] == "popularity").all()


def test_recommend_spark_with_bundle_shipped_as_archive(spark, shop, tmp_path, monkeypatch):
    # what `spark-submit --archives bundle.zip#rebuy_bundle` does: executors find it under SparkFiles
    archive = shutil.make_archive(str(tmp_path / "bundle"), "zip", root_dir=shop["bundle"])
    spark.sparkContext.addArchive(archive + "#rebuy_bundle_test")
    monkeypatch.chdir(tmp_path)  # "rebuy_bundle_test" is not a path here
    ids = shop["tx"]["customer_id"].drop_duplicates().head(50).tolist()
    got = recommend_spark(spark.createDataFrame(pd.DataFrame({"customer_id": ids})), "rebuy_bundle_test", 3).toPandas()
    exp = Scorer.load(shop["bundle"]).recommender.recommend(ids, 3)
    got_lists = got.sort_values(["customer_id", "rank"]).groupby("customer_id")["product_id"].agg(list).to_dict()
    assert got_lists == {k: v for k, v in exp.items()}


def test_score_spark_refuses_a_run_wide_budget(spark, shop, tmp_path):
    cfg = Config.model_validate({"offers": {"budget": 100.0}, "recommend": {"enabled": False},
                                 "clv": {"horizons_days": [60, 30], "horizon_months": 24}})
    bundle = train(shop["paths"]["transactions"], cfg, models_dir=tmp_path / "models").bundle_dir
    # the Spark schema follows the columns a config adds to the score table (rebuy.schema)
    table = Scorer.load(bundle).score_frame(shop["tx"].head(500), shop["as_of"])
    assert [f.name for f in _score_schema(score_columns(cfg)).fields] == list(table.columns)
    assert {"expected_purchases_60d", "clv_24m"} <= set(table.columns)
    with pytest.raises(SparkScoringError, match="offers.budget=100.0 is a run-wide cap"):
        score_spark(spark.createDataFrame(shop["tx"].head(100)), bundle, shop["as_of"])
    with pytest.raises(SparkScoringError, match="has no recommender"):
        recommend_spark(spark.createDataFrame(pd.DataFrame({"customer_id": ["1"]})), bundle, 3)
