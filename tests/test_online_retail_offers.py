"""Online Retail II as published, without a customers table: every customer gets an offer decision
from behaviour alone (not sent: consent unknown), lapsed customers get win-back or nothing, reasons
agree with the numbers they quote, test products are gone and wholesalers are kept apart.

Trains once per module with a fast config (BG/NBD, model CLV, a small recommender): about 30 s.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pytest

from rebuy import pipeline
from rebuy.config import load_config
from rebuy.data import load_transactions

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "online_retail_ii.csv.gz"
UPSELLS = {"spend_tier", "vip", "referral", "loyalty_points", "cross_sell"}
FAST = {"purchase_model": "bgnbd", "clv.method": "model", "recommend.factors": 16, "recommend.iterations": 5}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def orii() -> dict:
    cfg = load_config(REPO / "configs" / "online_retail_ii.yaml", overrides=FAST)
    tx = load_transactions(DATA, cfg)
    as_of = pd.Timestamp(tx["timestamp"].max()).normalize()
    bundle = pipeline.fit(tx, cfg, as_of)
    records = _Records()
    logger = logging.getLogger("rebuy.offers")
    logger.addHandler(records)
    try:
        table = pipeline.score(bundle, tx, None, None, as_of)
    finally:
        logger.removeHandler(records)
    return dict(tx=tx, bundle=bundle, table=table, warnings=records.messages)


def test_most_customers_get_an_offer_decision_without_a_customers_table(orii):
    t = orii["table"]
    assert len(t) == 5_878
    assert (t["offer_type"] != "none").mean() >= 0.6


def test_decisions_are_not_sent_and_say_consent_is_unknown(orii):
    t = orii["table"]
    decided = t["offer_type"] != "none"
    assert (t["channel"] == "none").all() and not t["deliver"].any()
    assert t.loc[decided, "offer_reason"].str.endswith(" Not sent: consent unknown (no customers table).").all()


def test_unknown_consent_is_warned_about_once(orii):
    assert sum("consent unknown" in m for m in orii["warnings"]) == 1


def test_no_lost_or_hibernating_customer_gets_an_upsell(orii):
    t = orii["table"]
    lapsed = t["segment"].isin(["Lost", "Hibernating", "At Risk", "Can't Lose Them"])
    assert not t.loc[lapsed, "offer_type"].isin(UPSELLS).any()
    assert (t.loc[lapsed, "offer_type"] == "win_back").mean() > 0.9


def test_lapsed_reasons_agree_with_the_numbers_they_quote(orii):
    t = orii["table"]
    lapsed = t[t["segment"].isin(["Lost", "Hibernating"])]
    assert not lapsed["offer_reason"].str.contains(r"P\(alive\) (?:0\.[5-9]\d|1\.00)", regex=True).any()
    for _, r in lapsed[lapsed["offer_reason"].str.contains(" customer: last order ", regex=False)].iterrows():
        m = re.search(r"(?:^|Decision: )([^:]+) customer: last order (\d{4}-\d\d-\d\d) \((\d+) days ago\), P\(purchase in 90 days\) "
                     r"(\d\.\d\d);", r["offer_reason"])
        assert m, r["offer_reason"]
        assert m[1] == r["segment"] and m[2] == str(r["last_purchase"].date())
        assert float(m[4]) == pytest.approx(r["p_purchase_90d"], abs=0.005)


def test_no_reason_quotes_zero_or_one_in_the_plural(orii):
    reasons = orii["table"]["offer_reason"]
    assert not reasons.str.contains(r"\b[01] (?:repeat purchases|days ago|purchase days)\b", regex=True).any()
    assert not reasons.str.contains("0 repeat purchase", regex=False).any()


def test_reasons_name_products_by_description(orii):
    t = orii["table"]
    win_back = t[t["offer_type"] == "win_back"].iloc[0]
    names = pipeline.recommender_names(orii["bundle"])
    first = win_back["offer_products"][0]
    assert names[first] in win_back["offer_reason"] and f" {first}," not in win_back["offer_reason"]


def test_test_products_and_non_products_are_never_offered(orii):
    offered = {p for ps in orii["table"]["offer_products"] for p in ps}
    assert not {"POST", "DOT", "M", "BANK CHARGES", "TEST001", "TEST002"} & offered
    assert not orii["tx"]["product_id"].str.startswith("TEST").any()
    assert (orii["tx"]["product_id"] == "POST").any()  # postage stays in the spend


def test_wholesale_customers_are_marked_and_kept_out_of_offers(orii):
    w = orii["bundle"].manifest["wholesale"]
    assert 0.01 < w["customer_share"] < 0.03 and 0.2 < w["revenue_share"] < 0.3
    t = orii["table"]
    assert t["wholesale"].sum() == w["customers"]
    assert (t.loc[t["wholesale"], "offer_type"] == "none").all()


def test_every_lookup_of_the_nightly_table_is_json_native(orii, tmp_path):
    import json

    from rebuy import Scorer
    from rebuy.bundle import record_latest_scores, save_model_bundle
    from rebuy.outputs import write_table

    saved = save_model_bundle(tmp_path / "models", orii["bundle"])
    write_table(orii["table"], tmp_path / "scores.parquet")
    record_latest_scores(tmp_path / "models", tmp_path / "scores.parquet", run_id=saved.run_id)
    scorer = Scorer.load(tmp_path / "models" / "latest")
    for cid in orii["table"]["customer_id"]:
        json.dumps(scorer.lookup(cid), allow_nan=False)
    assert scorer.lookup("13085.0")["customer_id"] == "13085"
