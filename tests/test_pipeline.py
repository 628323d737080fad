"""Train -> bundle -> score on a simulated shop: the nightly batch and the offers-service API."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rebuy import Scorer
from rebuy.bundle import BundleError, load_bundle, read_latest_scores
from rebuy.config import Config
from rebuy.outputs import read_table_for_lookup
from rebuy.scoring import SCORE_COLUMNS, ScoringError, run_scoring
from rebuy.simulate import simulate, write_simulation
from rebuy.train import train


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shop")
    sim = simulate(n_customers=2_500, seed=11, n_products=300)
    paths = write_simulation(sim, root / "shop.parquet")
    return {"root": root, **paths}


@pytest.fixture(scope="module")
def trained(shop) -> dict:
    models = shop["root"] / "models"
    result = train(shop["transactions"], Config(), models_dir=models, customers=shop["customers"])
    run = run_scoring(
        shop["transactions"],
        models_dir=models,
        out=shop["root"] / "scores.parquet",
        customers=shop["customers"],
        events=shop["events"],
        db=shop["root"] / "scores.duckdb",
    )
    return {"result": result, "run": run, "models": models}


def test_manifest_records_params_versions_and_checksums(trained):
    m = trained["result"].manifest
    name = m["params"]["purchase_model"]
    own_names = {"bgnbd": {"r", "alpha", "a", "b"}, "mbgnbd": {"r", "alpha", "a", "b"},
                 "pareto_nbd": {"r", "alpha", "s", "beta"}}
    assert set(m["params"][name]) == own_names[name]
    assert m["purchase_model_selection"]["chosen"] == name
    models = {"bgnbd", "mbgnbd", "pareto_nbd"}
    assert set(m["purchase_model_selection"]["candidates"]) == models | {"mbgnbd+ridge"}
    chosen = m["purchase_model_selection"]["candidates"][m["purchase_model_selection"]["chosen_candidate"]]
    assert chosen["model"] == name
    assert m["model_diagnostics"]["purchase_model_penalizer_used"] >= chosen["penalizer"]
    assert set(m["params"]["gamma_gamma"]) == {"p", "q", "v"}
    assert m["params"]["time_unit"] == "weeks"
    assert all(v > 0 and np.isfinite(v) for v in m["params"][name].values())
    assert m["clv"]["method"] in {"model", "ranker"} and m["clv"]["ranker"]["reason"]
    assert m["training_data"]["customers"] == 2_500
    assert m["training_data"]["cleaning"]["rows_in"] >= m["training_data"]["rows"]
    assert m["recommender"]["trained"] is True
    assert m["customers_table"]["rows"] == m["customers_table"]["with_transactions"] == 2_500
    assert 0 < m["customers_table"]["consent_email"] < 2_500
    assert {"rebuy", "lifetimes", "implicit"} <= set(m["versions"])
    for artefact in ("purchase_model", "spend_model", "rfm_scorer", "clusterer", "cluster_profiles", "recommender",
                     "purchase_calibrator", "clv_ranker"):
        assert len(m["artefacts"][artefact]["sha256"]) == 64
    assert (trained["models"] / "latest").resolve() == trained["result"].bundle_dir.resolve()


def test_score_table_is_complete_and_clean(trained, shop):
    scores = trained["run"].scores
    assert list(scores.columns[: len(SCORE_COLUMNS)]) == SCORE_COLUMNS
    assert scores["customer_id"].is_unique and len(scores) == 2_500
    assert scores["segment"].notna().all() and (scores["segment"] != "").all()
    numeric = scores.select_dtypes(include=[np.number])
    assert np.isfinite(numeric.to_numpy(dtype=float)).all()
    assert scores["p_alive"].between(0, 1).all()
    assert (scores["expected_purchases_365d"] >= scores["expected_purchases_90d"]).all()
    assert (scores["expected_purchases_90d"] >= scores["expected_purchases_30d"]).all()
    assert set(scores["churn_risk"]) <= {"low", "medium", "high"}
    assert scores["offer_reason"].str.len().gt(0).all()
    assert scores["model_run_id"].eq(trained["result"].manifest["run_id"]).all()
    # every recommendation list is full and excludes nothing the config forbids
    assert scores["recommended_products"].map(len).eq(Config().recommend.n_items).all()


def test_no_offer_on_a_channel_without_consent(trained, shop):
    scores = trained["run"].scores
    customers = pd.read_parquet(shop["customers"]).set_index("customer_id")
    joined = scores.join(customers[["consent_email", "consent_sms", "consent_messenger"]], on="customer_id")
    for channel in ("email", "sms", "messenger"):
        on = joined["channel"] == channel
        assert on.any(), f"no customer was contacted by {channel}"
        assert joined.loc[on, f"consent_{channel}"].all()
    treated = (joined["offer_type"] != "none") & (joined["group"] == "treatment")
    reachable = treated & (joined["channel"] != "none")
    assert joined.loc[reachable, "deliver"].all() and not joined.loc[~reachable, "deliver"].any()
    # a decision without a consented channel stands, is not delivered, and says why
    assert joined.loc[treated & ~reachable, "offer_reason"].str.contains(" Not sent: ").all()


def test_outputs_are_written_and_recorded(trained, shop):
    run = trained["run"]
    parquet = pd.read_parquet(run.out_path)
    assert len(parquet) == len(run.scores)
    import duckdb

    con = duckdb.connect(str(run.db_path), read_only=True)
    try:
        n = con.execute("select count(*) from customer_scores").fetchone()[0]
    finally:
        con.close()
    assert n == len(run.scores)
    info = read_latest_scores(trained["models"])
    assert Path(info["scores_path"]).resolve() == run.out_path.resolve()


def test_bundle_round_trip_gives_identical_scores(trained, shop, tmp_path):
    copy = tmp_path / "models"
    bundle = trained["result"].bundle_dir
    shutil.copytree(bundle, copy / bundle.name)
    s1 = Scorer.load(bundle)
    s2 = Scorer.load(copy / bundle.name)
    at = pd.Timestamp("2025-01-01")
    a = s1.score(shop["transactions"], shop["customers"], shop["events"], scored_at=at)
    b = s2.score(shop["transactions"], shop["customers"], shop["events"], scored_at=at)
    pd.testing.assert_frame_equal(a, b)
    # and re-running gives the same rows as the nightly table (apart from the scoring time)
    nightly = trained["run"].scores.drop(columns="scored_at")
    pd.testing.assert_frame_equal(a.drop(columns="scored_at"), nightly)


def test_tampered_artefact_is_refused_before_unpickling(trained, tmp_path, monkeypatch):
    bundle = trained["result"].bundle_dir
    copy = tmp_path / bundle.name
    shutil.copytree(bundle, copy)
    target = copy / "purchase_model.bin"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    from rebuy import artefacts

    monkeypatch.setattr(artefacts, "decode", lambda *a, **k: pytest.fail("decoded an unverified artefact"))
    with pytest.raises(BundleError, match="purchase_model.bin.*checksum"):
        Scorer.load(copy)


def test_crash_mid_training_leaves_latest_and_scores(trained, shop, monkeypatch):
    models = trained["models"]
    before = (models / "latest").resolve()
    scores_before = trained["run"].out_path.read_bytes()
    from rebuy import bundle as B

    calls = {"n": 0}
    real_write = B._write_parts

    def failing_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (injected)")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(B, "_write_parts", failing_write)
    with pytest.raises(OSError, match="injected"):
        train(shop["transactions"], Config(), models_dir=models)
    assert (models / "latest").resolve() == before
    assert not [p for p in models.iterdir() if p.name.startswith(".tmp-")]
    load_bundle(models / "latest")  # still loads and verifies

    # a scoring run that fails while writing leaves yesterday's table and file in place
    import rebuy.outputs as outputs

    def failing_replace(*args, **kwargs):
        raise OSError("crash during rename (injected)")

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(OSError, match="injected"):
        run_scoring(shop["transactions"], models_dir=models, out=trained["run"].out_path, customers=shop["customers"])
    assert trained["run"].out_path.read_bytes() == scores_before


def test_lookup_returns_the_nightly_row_fast(trained):
    scorer = Scorer.load(trained["models"] / "latest")
    nightly = trained["run"].scores.set_index("customer_id")
    cid = nightly.index[17]
    row = scorer.lookup(cid)
    json.dumps(row, allow_nan=False)  # JSON-native: ISO dates, plain floats, lists
    assert row["segment"] == nightly.loc[cid, "segment"]
    assert row["clv_12m"] == pytest.approx(nightly.loc[cid, "clv_12m"])
    assert list(row["recommended_products"]) == list(nightly.loc[cid, "recommended_products"])
    with pytest.raises(KeyError, match="not in the latest scores"):
        scorer.lookup("no-such-customer")


def test_lookup_follows_a_newer_nightly_table(trained, shop, tmp_path):
    """A long-running service sees tonight's table without reloading the Scorer."""
    models = tmp_path / "models"
    shutil.copytree(trained["result"].bundle_dir, models / trained["result"].bundle_dir.name)
    (models / "latest").symlink_to(trained["result"].bundle_dir.name)
    first = trained["run"].scores.head(50)
    from rebuy.bundle import record_latest_scores
    from rebuy.outputs import write_table

    write_table(first, tmp_path / "night1.parquet")
    record_latest_scores(models, tmp_path / "night1.parquet")
    scorer = Scorer.load(models / "latest")
    cid = first["customer_id"].iloc[0]
    assert scorer.lookup(cid)["segment"] == first["segment"].iloc[0]
    second = first.assign(segment="Lost")
    write_table(second, tmp_path / "night2.parquet")
    time.sleep(0.01)
    record_latest_scores(models, tmp_path / "night2.parquet")
    assert scorer.lookup(cid)["segment"] == "Lost"


def test_score_customer_equals_the_batch_row(trained, shop):
    scorer = Scorer.load(trained["models"] / "latest")
    tx = pd.read_parquet(shop["transactions"])
    customers = pd.read_parquet(shop["customers"])
    events = pd.read_parquet(shop["events"])
    nightly = trained["run"].scores.set_index("customer_id")
    as_of = trained["result"].manifest["as_of"]
    picks = list(nightly.index[[3, 250, 1200]])
    for offer in ("browse_abandonment", "cross_sell", "vip", "win_back"):
        picks.append(nightly.index[nightly["offer_type"] == offer][0])
    for cid in picks:
        one = scorer.score_customer(
            tx[tx["customer_id"] == cid],
            customers[customers["customer_id"] == cid].iloc[0].to_dict(),
            events[events["customer_id"] == cid],
            as_of=as_of,
        )
        batch = nightly.loc[cid]
        for col in ("segment", "r_score", "f_score", "m_score", "cluster", "offer_type", "channel", "churn_risk", "group"):
            assert one[col] == batch[col], col
        for col in ("p_alive", "expected_purchases_30d", "clv_12m", "net_ltv", "offer_value"):
            assert one[col] == pytest.approx(batch[col], rel=1e-9, abs=1e-12), col
        assert list(one["recommended_products"]) == list(batch["recommended_products"])


def test_lookup_without_scores_is_a_clear_error(trained, tmp_path):
    bundle = trained["result"].bundle_dir
    shutil.copytree(bundle, tmp_path / "m" / bundle.name)
    with pytest.raises(ScoringError, match="no scores recorded yet"):
        Scorer.load(tmp_path / "m" / bundle.name).lookup("1")


def test_data_without_products_trains_without_recommender(tmp_path, caplog):
    from rebuy.datasets import load_cdnow_sample

    tx = load_cdnow_sample()
    assert "product_id" not in tx.columns
    with caplog.at_level("WARNING"):
        result = train(tx, Config(), models_dir=tmp_path / "models")
    assert result.manifest["recommender"] == {"trained": False, "reason": "no product_id column"}
    assert any("recommender is skipped" in r.message for r in caplog.records)
    scores = Scorer.load(tmp_path / "models" / "latest").score(tx)
    assert scores["recommended_products"].map(len).eq(0).all()
    assert not scores["offer_type"].isin(["cross_sell", "browse_abandonment"]).any()
    params = json.loads((result.bundle_dir / "manifest.json").read_text())["params"]
    assert params[params["purchase_model"]]["r"] > 0


def test_lookup_table_reads_back_lists(trained):
    frame = read_table_for_lookup(trained["run"].out_path)
    assert isinstance(frame.iloc[0]["recommended_products"], list | np.ndarray)


def test_scoring_uses_the_scoring_data_date_not_the_training_date(shop, tmp_path):
    """A bundle trained as of an earlier day scores newer data as of that data's last day."""
    cfg = Config.model_validate({"as_of": "2024-06-30"})
    result = train(shop["transactions"], cfg, models_dir=tmp_path / "m")
    assert result.manifest["as_of"] == "2024-06-30"
    scores = Scorer.load(tmp_path / "m" / "latest").score(shop["transactions"])
    last_day = pd.read_parquet(shop["transactions"])["timestamp"].max().normalize()
    assert scores["last_purchase"].max().normalize() == last_day > pd.Timestamp("2024-06-30")
