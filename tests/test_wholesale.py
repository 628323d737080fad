"""Wholesale customers (config ``wholesale``): marked at training by a multiple of the median spend
per purchase day, left out of the purchase and spend model fits, flagged in the score table, kept
out of consumer offers, and their share recorded in the manifest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rebuy import pipeline
from rebuy.config import Config, WholesaleConfig
from rebuy.features import rfm_summary
from rebuy.offers.wholesale import mark_wholesale, wholesale_cut, wholesale_report
from rebuy.schema import column
from rebuy.simulate import simulate

ON = WholesaleConfig(rule="order_value_multiple", order_value_multiple=5.0)


def summary(spend: list[float], days: list[int]) -> pd.DataFrame:
    """An RFM summary with just what the wholesale rule reads (spend in currency)."""
    return pd.DataFrame({"total_spend": spend, "purchase_days": days}, index=[f"c{i}" for i in range(len(spend))])


def test_cut_is_a_multiple_of_the_median_spend_per_purchase_day():
    s = summary([10.0, 20.0, 30.0, 40.0, 1000.0], [1, 1, 1, 2, 2])  # per day: 10, 20, 30, 20, 500
    assert wholesale_cut(s, ON) == pytest.approx(100.0)
    assert mark_wholesale(s, 100.0).tolist() == [False, False, False, False, True]


def test_rule_none_marks_nobody():
    s = summary([10.0, 1e6], [1, 1])
    assert wholesale_cut(s, WholesaleConfig()) is None
    assert not mark_wholesale(s, None).any()


def test_report_gives_the_share_of_customers_and_revenue():
    s = summary([10.0, 20.0, 30.0, 40.0, 1000.0], [1, 1, 1, 2, 2])
    rep = wholesale_report(s, mark_wholesale(s, 100.0), ON, 100.0)
    assert rep == {"rule": "order_value_multiple", "order_value_multiple": 5.0, "min_order_value": 100.0,
                   "customers": 1, "customer_share": 0.2, "revenue_share": pytest.approx(1000 / 1100)}


def test_score_table_declares_the_wholesale_flag():
    assert column("wholesale").kind == "bool"


# ------------------------------------------------------------------------------------------ through the pipeline
FAST = dict(purchase_model="bgnbd", clv={"method": "model"}, recommend={"enabled": False})


@pytest.fixture(scope="module")
def shop() -> dict:
    """A simulated shop where 12 customers buy in bulk (every order x 40), trained with the rule on."""
    tx = simulate(n_customers=600, seed=5, n_products=60).transactions
    bulk = tx["customer_id"].drop_duplicates().iloc[:12]
    big = tx["customer_id"].isin(bulk).to_numpy()
    tx.loc[big, "quantity"] *= 40
    tx.loc[big, "amount"] *= 40
    as_of = tx["timestamp"].max().normalize()
    cfg = Config.model_validate({**FAST, "wholesale": {"rule": "order_value_multiple"}})
    bundle = pipeline.fit(tx, cfg, as_of)
    return dict(tx=tx, bulk=set(bulk), as_of=as_of, cfg=cfg, bundle=bundle,
                table=pipeline.score(bundle, tx, None, None, as_of))


def test_manifest_records_the_wholesale_share(shop):
    w = shop["bundle"].manifest["wholesale"]
    assert w["rule"] == "order_value_multiple" and w["customers"] >= len(shop["bulk"])
    assert w["customer_share"] == pytest.approx(w["customers"] / 600)
    assert 0.2 < w["revenue_share"] < 1


def test_value_models_are_fitted_without_wholesale_customers(shop):
    s = rfm_summary(shop["tx"], as_of=shop["as_of"], time_unit="weeks")
    consumers = ~mark_wholesale(s, shop["bundle"].manifest["wholesale"]["min_order_value"])
    gg = pipeline.fit_spend_model(s[consumers], shop["cfg"]).params_
    assert shop["bundle"].spend_model.params_ == pytest.approx(gg)
    everyone = pipeline.fit_spend_model(s, shop["cfg"]).params_
    assert shop["bundle"].spend_model.params_ != pytest.approx(everyone)


def test_wholesale_customers_are_flagged_and_get_no_consumer_offer(shop):
    t = shop["table"]
    flagged = t["wholesale"].to_numpy(dtype=bool)
    assert shop["bulk"] <= set(t.loc[flagged, "customer_id"])
    assert (t.loc[flagged, "offer_type"] == "none").all() and (t.loc[flagged, "channel"] == "none").all()
    assert t.loc[flagged, "offer_reason"].str.startswith("Wholesale customer (total spend ").all()
    assert np.isfinite(t.loc[flagged, "clv_12m"]).all()  # scored with the consumer models, flagged


def test_without_the_rule_nobody_is_wholesale(shop):
    bundle = pipeline.fit(shop["tx"], Config.model_validate(FAST), shop["as_of"])
    assert bundle.manifest["wholesale"] == {"rule": "none", "order_value_multiple": None, "min_order_value": None,
                                            "customers": 0, "customer_share": 0.0, "revenue_share": 0.0}
    assert not pipeline.score(bundle, shop["tx"], None, None, shop["as_of"])["wholesale"].any()
