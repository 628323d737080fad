"""The offer log of `rebuy score` (rebuy.offer_log): one row per offer, reruns replace, failures add nothing;
control groups in the score table; scoring with measured evidence."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from models_common import trained_shop
from rebuy.config import Config
from rebuy.offer_log import offer_log_dir
from rebuy.schema import OFFER_LOG_COLUMNS
from rebuy.scoring import run_scoring


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> dict[str, Path]:
    return trained_shop(tmp_path_factory.mktemp("logshop"), n_customers=3_000, seed=5, n_products=200)


def score_night(shop: dict, out_dir: Path, **kw) -> object:
    return run_scoring(shop["transactions"], models_dir=shop["root"] / "models", out=out_dir / "scores.parquet",
                       customers=shop["customers"], events=shop["events"], db=out_dir / "scores.duckdb", **kw)


def db_log(path: Path) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT * FROM offer_log").df()


def parquet_log(out_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(offer_log_dir(out_dir / "scores.parquet"))


def test_score_table_has_groups_and_control_customers_are_not_sent(shop, tmp_path):
    scores = score_night(shop, tmp_path).scores
    offered = scores["offer_type"] != "none"
    assert set(scores.loc[offered, "group"]) == {"treatment", "control"}
    assert (scores.loc[~offered, "group"] == "none").all()
    control = scores[scores["group"] == "control"]
    assert (control["channel"] == "none").all() and not control["deliver"].any()
    assert control["offer_reason"].str.startswith("Held out to measure").all()
    treated = scores[scores["group"] == "treatment"]
    assert (treated["deliver"] == (treated["channel"] != "none")).all()


def test_log_has_one_row_per_offer_in_both_places(shop, tmp_path):
    run = score_night(shop, tmp_path)
    offered = run.scores[run.scores["offer_type"] != "none"]
    logged = db_log(tmp_path / "scores.duckdb")
    assert list(logged.columns) == OFFER_LOG_COLUMNS
    assert len(logged) == len(offered) and logged["customer_id"].is_unique
    assert (logged["decided_at"] == pd.Timestamp("2025-01-01")).all()  # the shop ends 2024-12-31
    assert set(logged["run_id"]) == {"score-20250101"}
    files = parquet_log(tmp_path).sort_values("customer_id", ignore_index=True)
    pd.testing.assert_frame_equal(files[OFFER_LOG_COLUMNS].astype(str),
                                  logged.sort_values("customer_id", ignore_index=True)[OFFER_LOG_COLUMNS].astype(str))


def test_rerunning_a_night_replaces_its_rows(shop, tmp_path):
    first = score_night(shop, tmp_path)
    score_night(shop, tmp_path)
    assert len(db_log(tmp_path / "scores.duckdb")) == first.experiment["logged"]
    assert len(parquet_log(tmp_path)) == first.experiment["logged"]
    assert [p.name for p in offer_log_dir(tmp_path / "scores.parquet").iterdir()] == ["score-20250101.parquet"]


def test_another_night_appends(shop, tmp_path):
    score_night(shop, tmp_path)
    score_night(shop, tmp_path, as_of="2024-12-30")
    assert set(db_log(tmp_path / "scores.duckdb")["run_id"]) == {"score-20250101", "score-20241231"}
    assert set(parquet_log(tmp_path)["run_id"]) == {"score-20250101", "score-20241231"}


def test_a_failed_night_adds_nothing(shop, tmp_path, monkeypatch):
    score_night(shop, tmp_path, as_of="2024-12-30")
    before_db, before_files = db_log(tmp_path / "scores.duckdb"), sorted(offer_log_dir(tmp_path / "scores.parquet").iterdir())
    import rebuy.outputs

    real = rebuy.outputs._append_run

    def crash_after_insert(con, *args):
        real(con, *args)
        raise OSError("disk full")  # after the rows went in, before COMMIT

    monkeypatch.setattr(rebuy.outputs, "_append_run", crash_after_insert)
    with pytest.raises(OSError, match="disk full"):
        score_night(shop, tmp_path)
    pd.testing.assert_frame_equal(db_log(tmp_path / "scores.duckdb"), before_db)
    assert sorted(offer_log_dir(tmp_path / "scores.parquet").iterdir()) == before_files  # no file, no leftover


def test_measured_evidence_switches_off_harmful_and_promotes_what_pays(shop, tmp_path):
    base = score_night(shop, tmp_path / "a").scores
    assert (base["offer_type"] == "referral").any() and (base["offer_type"] == "loyalty_points").any()
    uplift = {"as_of": "2025-01-31", "by_offer": [
        {"offer_type": "referral", "verdict": "harmful", "uplift": -0.05,
         "incremental_margin_per_customer": -2.0, "incremental_margin_ci95": [-3.0, -1.0]},
        {"offer_type": "loyalty_points", "verdict": "works", "uplift": 0.04,
         "incremental_margin_per_customer": 3.0, "incremental_margin_ci95": [1.0, 5.0]},
    ]}
    path = tmp_path / "uplift.json"
    path.write_text(json.dumps(uplift))
    run = score_night(shop, tmp_path / "b", uplift=path)
    scores = run.scores
    assert not (scores["offer_type"] == "referral").any()
    assert (scores["offer_type"] == "loyalty_points").sum() >= (base["offer_type"] == "loyalty_points").sum()
    points = scores[scores["offer_type"] == "loyalty_points"]
    assert points["offer_reason"].str.contains("Chosen by measured uplift").all()
    assert run.experiment["evidence"]["switched_off"] == ["referral"]
    assert run.experiment["evidence"]["priority"][0] == "loyalty_points"


def test_a_request_scored_alone_gets_the_nights_evidence_and_group(shop, tmp_path):
    from rebuy import Scorer

    path = tmp_path / "uplift.json"
    path.write_text(json.dumps({"as_of": "2025-01-31", "by_offer": [
        {"offer_type": "loyalty_points", "verdict": "works", "uplift": 0.04,
         "incremental_margin_per_customer": 3.0, "incremental_margin_ci95": [1.0, 5.0]}]}))
    nightly = score_night(shop, tmp_path, uplift=path).scores.set_index("customer_id")
    tx, customers = pd.read_parquet(shop["transactions"]), pd.read_parquet(shop["customers"])
    scorer = Scorer.load(shop["root"] / "models" / "latest")
    for group in ("treatment", "control"):
        cid = nightly.index[(nightly["offer_type"] == "loyalty_points") & (nightly["group"] == group)][0]
        one = scorer.score_customer(tx[tx["customer_id"] == cid], customers[customers["customer_id"] == cid].iloc[0].to_dict(),
                                    as_of="2024-12-31")
        for col in ("offer_type", "group", "channel", "offer_reason"):
            assert one[col] == nightly.loc[cid, col], col


def test_the_recorded_measurement_is_used_when_the_config_says_so(shop, tmp_path):
    from rebuy.scoring import LATEST_UPLIFT_FILE

    uplift = {"as_of": "2025-01-31", "by_offer": [
        {"offer_type": "referral", "verdict": "harmful", "uplift": -0.05, "significant_holm": True,
         "incremental_margin_per_customer": -2.0, "incremental_margin_ci95": [-3.0, -1.0]}]}
    models = tmp_path / "models"
    import shutil

    shutil.copytree(shop["root"] / "models", models, symlinks=True)
    (models / LATEST_UPLIFT_FILE).write_text(json.dumps(uplift))
    cfg = Config.model_validate({"offers": {"use_measured_uplift": True}})
    run = run_scoring(shop["transactions"], models_dir=models, out=tmp_path / "scores.parquet",
                      customers=shop["customers"], events=shop["events"], config=cfg)
    assert not (run.scores["offer_type"] == "referral").any()
    assert run.experiment["evidence"]["source"].endswith(LATEST_UPLIFT_FILE)


def test_the_night_writes_its_send_lists_when_asked(shop, tmp_path):
    run = score_night(shop, tmp_path, exports=tmp_path / "exports")
    sendable = run.scores[run.scores["deliver"]]
    assert run.exports and sum(len(pd.read_csv(p)) for p in run.exports.values()) == len(sendable)
    assert {p.name for p in run.exports.values()} == {f"{t}_{c}.csv" for t, c in
                                                     sendable[["offer_type", "channel"]].drop_duplicates().itertuples(index=False)}
