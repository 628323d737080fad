"""The offers service's API: ``Scorer.lookup`` and ``Scorer.score_customer`` on a small simulated shop."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import typing

import numpy as np
import pandas as pd
import pytest

from rebuy import Scorer
from rebuy.bundle import read_latest_scores, record_latest_scores
from rebuy.config import Config
from rebuy.errors import ScoringError, UnknownCustomerError
from rebuy.schema import SCORE_TABLE
from rebuy.scoring import (
    COLD_START_REASON,
    COLD_START_SEGMENT,
    JSON_TYPES,
    ScoreRow,
    normalise_id,
    run_scoring,
)
from rebuy.simulate import simulate, write_simulation
from rebuy.train import train

FAST = {"purchase_model": "bgnbd", "clv": {"method": "model"}}


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lookup")
    paths = write_simulation(simulate(n_customers=600, seed=5, n_products=80), root / "shop.parquet")
    for name in ("transactions", "customers", "events"):  # numeric ids, as in Online Retail II ("13085")
        frame = pd.read_parquet(paths[name])
        frame["customer_id"] = (13_000 + frame["customer_id"].str.lstrip("C").astype(int)).astype(str)
        frame.to_parquet(paths[name])
    models = root / "models"
    train(paths["transactions"], Config.model_validate(FAST), models_dir=models, customers=paths["customers"])
    run = run_scoring(paths["transactions"], models_dir=models, out=root / "scores.parquet",
                      customers=paths["customers"], events=paths["events"])
    return {"root": root, "models": models, "run": run, **paths}


def test_score_row_keys_and_types_follow_the_schema():
    assert typing.get_type_hints(ScoreRow) == {c.name: JSON_TYPES[c.kind] for c in SCORE_TABLE}


def test_lookup_is_json_native_for_every_customer(night):
    scorer = Scorer.load(night["models"] / "latest")
    scores = night["run"].scores
    for cid in scores["customer_id"]:
        json.dumps(scorer.lookup(cid), allow_nan=False)
    row = scorer.lookup(scores["customer_id"].iloc[0])
    for col in SCORE_TABLE:
        value = row[col.name]
        expected = {"string": str, "int": int, "float": float, "bool": bool, "datetime": str, "list": list}[col.kind]
        assert value is None or type(value) is expected, (col.name, type(value))
    nightly = scores.iloc[0]
    assert row["first_purchase"] == nightly["first_purchase"].strftime("%Y-%m-%d")
    assert row["last_purchase"] == nightly["last_purchase"].strftime("%Y-%m-%d")
    assert dt.datetime.fromisoformat(row["scored_at"]).replace(tzinfo=None) == nightly["scored_at"].to_pydatetime()
    assert row["scored_at"].endswith("Z")
    assert row["clv_12m"] == pytest.approx(float(nightly["clv_12m"]))
    assert row["recommended_products"] == list(nightly["recommended_products"])


def test_lookup_turns_nan_and_nat_into_null(night, tmp_path):
    models = _copy_models(night, tmp_path)
    table = night["run"].scores.head(5).copy()
    table.loc[table.index[0], "clv_12m"] = np.nan
    table.loc[table.index[0], "next_purchase_date"] = pd.NaT
    from rebuy.outputs import write_table

    write_table(table, tmp_path / "s.parquet")
    record_latest_scores(models, tmp_path / "s.parquet")
    row = Scorer.load(models / "latest").lookup(table["customer_id"].iloc[0])
    assert row["clv_12m"] is None and row["next_purchase_date"] is None
    json.dumps(row, allow_nan=False)


@pytest.mark.parametrize("given", ["{0}", " {0} ", "{0}.0", "{0}.00", " {0}.0\n"])
def test_ids_are_normalised(night, given):
    scorer = Scorer.load(night["models"] / "latest")
    cid = night["run"].scores["customer_id"].iloc[3]
    assert cid.isdigit()
    assert scorer.lookup(given.format(cid))["customer_id"] == cid
    assert scorer.lookup(int(cid))["customer_id"] == cid
    assert scorer.lookup(float(cid))["customer_id"] == cid


def test_normalise_id():
    assert {normalise_id(v) for v in ("13085.0", " 13085", 13085, "13085", 13085.0, np.int64(13085))} == {"13085"}
    assert normalise_id("C-12.5") == "C-12.5" and normalise_id("13085.5") == "13085.5"


def test_unknown_customer_is_a_key_error(night):
    with pytest.raises(UnknownCustomerError, match="not in the latest scores"):
        Scorer.load(night["models"] / "latest").lookup("no-such-customer")


def _copy_models(night, tmp_path):
    bundle = (night["models"] / "latest").resolve()
    models = tmp_path / "models"
    shutil.copytree(bundle, models / bundle.name)
    (models / "latest").symlink_to(bundle.name)
    return models


def test_lookup_of_another_runs_table_warns_once_or_refuses(night, tmp_path, caplog):
    models = _copy_models(night, tmp_path)
    record_latest_scores(models, night["run"].out_path, run_id="20200101T000000000000Z-abcdef")
    scorer = Scorer.load(models / "latest")
    cid = night["run"].scores["customer_id"].iloc[0]
    with caplog.at_level(logging.WARNING, logger="rebuy.scoring"):
        row = scorer.lookup(cid)
        scorer.lookup(cid)
    warnings = [r for r in caplog.records if "not of the loaded bundle" in r.getMessage()]
    assert len(warnings) == 1 and "20200101T000000000000Z-abcdef" in warnings[0].getMessage()
    assert scorer.lookup_run_id == "20200101T000000000000Z-abcdef" != scorer.run_id
    assert row["model_run_id"] == scorer.run_id  # the row itself names the bundle that scored it
    with pytest.raises(ScoringError, match="scored with bundle 20200101T000000000000Z-abcdef.*allow_other_run"):
        scorer.lookup(cid, allow_other_run=False)
    # the table of the loaded bundle's own run is served without a word
    record_latest_scores(models, night["run"].out_path, run_id=scorer.run_id)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rebuy.scoring"):
        assert scorer.lookup(cid, allow_other_run=False)["customer_id"] == cid
    assert not caplog.records


def _one(night, cid):
    tx, customers, events = (pd.read_parquet(night[k]) for k in ("transactions", "customers", "events"))
    return (tx[tx["customer_id"] == cid], customers[customers["customer_id"] == cid].iloc[0].to_dict(),
            events[events["customer_id"] == cid])


def test_score_customer_without_as_of_equals_the_nightly_row(night):
    scorer = Scorer.load(night["models"] / "latest")
    scores = night["run"].scores
    assert read_latest_scores(night["models"])["as_of"] == str(scores["last_purchase"].max().date())
    nightly = scores.set_index("customer_id")
    # customers whose own last purchase is well before the night: today they were scored as of that day
    early = nightly.index[nightly["last_purchase"] < nightly["last_purchase"].max() - pd.Timedelta(days=60)]
    assert len(early) >= 4
    for cid in early[:4]:
        one = scorer.score_customer(*_one(night, cid))
        json.dumps(one, allow_nan=False)
        served = scorer.lookup(cid)
        for col in ("segment", "r_score", "f_score", "m_score", "offer_type", "group", "churn_risk", "T",
                    "next_purchase_date", "recommended_products"):
            assert one[col] == served[col], col
        for col in ("p_alive", "clv_12m", "expected_purchases_90d"):
            assert one[col] == pytest.approx(served[col], rel=1e-9), col


def test_score_customer_with_a_newer_purchase_scores_as_of_it(night):
    scorer = Scorer.load(night["models"] / "latest")
    cid = night["run"].scores["customer_id"].iloc[10]
    tx, customer, events = _one(night, cid)
    later = tx.iloc[[-1]].assign(timestamp=pd.Timestamp(read_latest_scores(night["models"])["as_of"]) + pd.Timedelta(days=3))
    one = scorer.score_customer(pd.concat([tx, later]), customer, events)
    assert one["last_purchase"] == str((later["timestamp"].iloc[0]).date())
    today = scorer.score_customer(tx, customer, events, as_of="today")
    assert today["T"] > scorer.lookup(cid)["T"]


def test_a_customer_without_purchases_gets_a_cold_start_row(night):
    scorer = Scorer.load(night["models"] / "latest")
    tx, customer, _ = _one(night, night["run"].scores["customer_id"].iloc[0])
    row = scorer.score_customer(tx.iloc[0:0], {**customer, "customer_id": "brand-new"})
    assert set(row) == {c.name for c in SCORE_TABLE}
    json.dumps(row, allow_nan=False)
    assert row["customer_id"] == "brand-new" and row["segment"] == COLD_START_SEGMENT
    assert row["purchase_days"] == 0 and row["first_purchase"] is None and row["total_spend"] == 0.0
    assert row["p_alive"] is None and row["clv_12m"] is None
    assert row["expected_order_value"] > 0  # the spend model's population mean
    assert row["offer_type"] == "none" and row["offer_reason"] == COLD_START_REASON and row["deliver"] is False
    assert len(row["recommended_products"]) == scorer.config.recommend.n_items
    assert scorer.score_customer(None, customer_id=" 42.0")["customer_id"] == "42"
    with pytest.raises(ScoringError, match="no customer id"):
        scorer.score_customer(None)
