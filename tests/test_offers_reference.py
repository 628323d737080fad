"""The vectorised offers engine equals its plain per-customer reference (rebuy.offers.reference).

On a simulated shop under several playbooks, and on one row-built case per rule, guard and channel
edge. Row builders come from test_offers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rebuy.config import OFFER_TYPES, ChannelRule, ConfigError, OffersConfig, load_config
from rebuy.offers import RULES, assign_offers
from rebuy.offers.names import CHANNELS, OUTCOMES, RULE_NAMES
from rebuy.offers.reference import plain_offers
from rebuy.simulate import simulate
from test_offers import AS_OF, cfg_with, frame, people, row


def both(scores: pd.DataFrame, cfg, **kw) -> pd.DataFrame:
    """assign_offers, after checking the plain reference gives exactly the same table."""
    fast = assign_offers(scores, cfg, **kw)
    pd.testing.assert_frame_equal(fast, plain_offers(scores, cfg, **kw))
    return fast


def set_like_cross_sell(pool: list[str]):
    """A recommender that treats the basket as a set (as bought_together does)."""
    def bought_together(basket: list, n: int) -> list[str]:
        h = sum(int(p[1:]) for p in basket)
        return [pool[(h + j) % len(pool)] for j in range(n)]
    return bought_together


# ------------------------------------------------------------------------------------------ simulated shop
@pytest.fixture(scope="module")
def shop() -> dict:
    """Scores built from a simulated shop's transactions and latent truth, and the side tables."""
    sim = simulate(n_customers=1500, seed=3, n_products=200)
    tx = sim.transactions
    as_of = tx["timestamp"].max().normalize()
    by = tx.groupby("customer_id", observed=True)
    s = pd.DataFrame({"orders": by["order_id"].nunique(), "total_spend": by["amount"].sum(),
                      "last_purchase": by["timestamp"].max()})
    lat = sim.latent.set_index("customer_id").reindex(s.index)
    rng = np.random.default_rng(0)
    n = len(s)
    s["frequency"] = (s["orders"] - 1).astype(float)
    s["p_alive"] = np.where(lat["alive"], 0.4 + 0.6 * rng.random(n), 0.5 * rng.random(n))
    s["expected_purchases_30d"] = lat["lambda_per_week"].to_numpy() * 30 / 7 * s["p_alive"]
    s["expected_order_value"] = lat["expected_order_value"].to_numpy()
    s["clv_12m"] = s["expected_purchases_30d"] * 12 * s["expected_order_value"] * (rng.random(n) > 0.05)
    s["net_ltv"] = s["clv_12m"] - 20.0
    gap = pd.to_timedelta(np.minimum(7 / lat["lambda_per_week"].to_numpy(), 3000), unit="D")
    s["next_purchase_date"] = (s["last_purchase"] + gap).where(lat["lambda_per_week"].to_numpy() > 0.002)
    s["r_score"] = pd.qcut(s["last_purchase"].rank(method="first"), 5, labels=False) + 1
    s["f_score"] = pd.qcut(s["orders"].rank(method="first"), 5, labels=False) + 1
    seg = np.select([(s["r_score"] >= 4) & (s["f_score"] >= 4), s["f_score"] >= 4, s["r_score"] <= 1,
                     s["r_score"] == 2], ["Champions", "Loyal Customers", "Lost", "Hibernating"], "Need Attention")
    s["segment"] = pd.array(seg, dtype="string")
    s["p_purchase_90d"] = np.clip(s["p_alive"] * rng.random(n), 0, 1)
    s["wholesale"] = rng.random(n) < 0.03
    pool = sorted(tx["product_id"].unique())
    s["recommended_products"] = [[pool[(i * 7 + j) % len(pool)] for j in range(5)] for i in range(n)]
    s.loc[s.index[:10], "recommended_products"] = None
    scores = s.reset_index()
    last = tx[tx["timestamp"] == tx.groupby("customer_id", observed=True)["timestamp"].transform("max")]
    lop = last.groupby("customer_id", observed=True)["product_id"].agg(list)
    tx = tx.assign(description=("item " + tx["product_id"].astype(str)).where(tx.index % 7 != 0))
    return dict(scores=scores, customers=sim.customers, events=sim.events, transactions=tx, as_of=as_of,
                last_order_products=lop, cross_sell=set_like_cross_sell(pool))


def _playbooks() -> dict[str, tuple[dict, dict]]:
    """name -> (offers settings, changes to the assign_offers arguments)."""
    return {
        "defaults": ({}, {}),
        "budget by net LTV, half redeemed": (dict(budget=800.0, budget_rank_by="net_ltv", redemption_rate=0.5), {}),
        "browse from the last order": ({}, dict(transactions=None)),
        "no customers table, consent assumed": (dict(assume_consent_without_customers=True), dict(customers=None)),
        "no customers table, consent unknown": ({}, dict(customers=None)),
        "lapsed by P(purchase in 90 days), names given": (
            dict(lapsed_max_p_purchase_90d=0.3, lapsed_rules=["win_back"]), dict(product_names={"P0001": "first"})),
        "VIP ranked in the table, discounts everywhere": (
            dict(vip_discount=0.2, cross_sell_discount=0.05, birthday_window_days=60, browse_window_days=40),
            dict(vip_min_clv=None)),
        "tight caps, reversed priority, new products": (
            dict(max_discount_margin_multiple=0.3, min_discount=0.05, priority=list(reversed(RULE_NAMES)),
                 new_products=["N1", "N2", "N3", "N4"]), {}),
        "no fallback channel, contact from 30": (
            dict(fallback_to_consented_channel=False, min_contact_age=30, p_alive_floor=0.2), {}),
    }


@pytest.mark.parametrize("name", list(_playbooks()))
def test_engine_equals_reference_on_a_simulated_shop(shop, name):
    settings, changes = _playbooks()[name]
    inputs = {k: v for k, v in shop.items() if k != "scores"}
    out = both(shop["scores"], cfg_with(**settings), **(inputs | changes))
    assert out["offer_type"].nunique() >= 5  # a real mix of offers, not a trivial table


def test_simulated_playbooks_reach_every_rule_and_guard(shop):
    types, reasons = set(), []
    for settings, changes in _playbooks().values():
        inputs = {k: v for k, v in shop.items() if k != "scores"} | changes
        out = assign_offers(shop["scores"], cfg_with(**settings), **inputs)
        types |= set(out["offer_type"])
        reasons += out["offer_reason"].tolist()
    assert types == set(RULE_NAMES) | set(OUTCOMES)
    text = "\n".join(reasons)
    for part in ("anyway, so no discount", "capped from", "would exceed the budget guard", "discount budget of",
                 "below the floor", "no consented channel", "younger than the minimum contact age",
                 "No offer rule applies", "consent unknown (no customers table)",
                 "Lost customer: last order", "Wholesale customer", " on item P"):
        assert part in text


def test_engine_equals_reference_without_p_purchase_90d_or_consent_columns(shop):
    inputs = {k: v for k, v in shop.items() if k != "scores"}
    no_consent = shop["customers"].drop(columns=[f"consent_{ch}" for ch in CHANNELS])
    out = both(shop["scores"].drop(columns=["p_purchase_90d", "wholesale"]), cfg_with(),
               **(inputs | dict(customers=no_consent)))
    assert out["offer_reason"].str.contains("no consent columns in the customers table").any()
    assert out["offer_reason"].str.startswith("No offer rule applies (P(alive) ").any()
    out = both(shop["scores"], cfg_with(), **(inputs | dict(customers=shop["customers"].iloc[::2])))
    assert out["offer_reason"].str.contains("consent unknown (not in the customers table)", regex=False).any()


def test_customers_ages_from_birth_dates_use_365_25_day_years(shop):
    """An age missing from the customers table comes from the birth date (rebuy.dates.age_years)."""
    inputs = {k: v for k, v in shop.items() if k != "scores"}
    both(shop["scores"], cfg_with(), **(inputs | dict(customers=shop["customers"].drop(columns="age"))))
    # 45 years of 365.25 days are 16436.25 days: born 16436 days before as-of is still 44
    born = AS_OF - pd.Timedelta(days=16436)
    out = both(frame(row(frequency=2.0)), cfg_with(), as_of=AS_OF, vip_min_clv=1e12,
               customers=people(["c"], age=np.nan, birth_date=born))
    assert out["channel"].iloc[0] == "email"


# ------------------------------------------------------------------------------------------ row-built edges
D = lambda days: AS_OF - pd.Timedelta(days=days)  # noqa: E731
OVERDUE = dict(p_alive=0.3, next_purchase_date=D(30))


def _ev(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["customer_id", "product_id", "timestamp", "event"])


def _edges() -> dict[str, tuple[pd.DataFrame, dict, dict]]:
    """name -> (scores, offers settings, assign_offers arguments besides as_of)."""
    two = frame(row("a", frequency=2.0), row("b", frequency=2.0))
    return {
        "no rule": (frame(row()), {}, {}),
        "birthday today, soon, 29 Feb, unknown": (
            frame(row("a"), row("b"), row("c"), row("d")), {},
            dict(customers=people("abcd", birth_date=["1985-06-01", "1990-06-10", "1992-02-29", None]))),
        "browse after, before and on the last order day": (
            frame(row("a", last_purchase=D(4)), row("b", last_purchase=D(4)), row("c", last_purchase=D(2))),
            dict(priority=["browse_abandonment"]),
            dict(events=_ev(("a", "P", D(6), "view"), ("a", "Q", D(6), "cart"), ("b", "P", D(2), "view"),
                            ("b", "S", D(1), "cart"), ("b", "P", D(1), "view"), ("c", "P", D(2), "view"),
                            ("zz", "U", D(1), "view"), ("a", "T", D(30), "view"), ("c", "V", D(1), "purchase")),
                 last_order_products=pd.Series({"a": ["P"], "b": ["P"], "c": ["P"]}))),
        "browse exact with transactions, bought at the view time": (
            frame(row("a"), row("b"), row("c")), dict(priority=["browse_abandonment"]),
            dict(events=_ev(("a", "V", D(3), "view"), ("b", "V", D(3), "view"), ("c", "V", D(3), "cart")),
                 transactions=pd.DataFrame({"customer_id": ["a", "b", "c"], "product_id": ["V", "V", "V"],
                                            "timestamp": [D(2), D(5), D(3)]}))),
        "cross-sell with and without basket or recommender": (
            frame(row("a", last_purchase=D(3)), row("b", last_purchase=D(1)), row("c", last_purchase=D(20))),
            dict(cross_sell_discount=0.05),
            dict(last_order_products=pd.Series({"a": ["P1", "P2"], "c": ["P1"]}),
                 cross_sell=set_like_cross_sell([f"P{i}" for i in range(9)]))),
        "win-back falling, overdue, both, unknown next purchase": (
            frame(row("a", p_alive=0.3), row("b", next_purchase_date=D(10)), row("c", **OVERDUE),
                  row("d", p_alive=0.4, next_purchase_date=pd.NaT), row("e", next_purchase_date=D(5))), {}, {}),
        "VIP ranked with ties and zero CLV": (
            frame(*[row(f"c{i}", clv_12m=float(i // 3)) for i in range(40)]), dict(vip_discount=0.1),
            dict(vip_min_clv=None)),
        "spend tiers below, between and above": (
            frame(*[row(f"s{i}", total_spend=t, expected_order_value=100.0, clv_12m=1000.0)
                    for i, t in enumerate([450.0, 500.0, 1900.0, 1000.0, 6000.0])]), {}, {}),
        "referral and loyalty points": (
            frame(row("a", segment="Champions", r_score=5, f_score=5), row("b", frequency=3.0, p_alive=0.92),
                  row("c", frequency=3.0, p_alive=0.6)), {}, {}),
        "floor, buy anyway, caps": (
            frame(row("f", p_alive=0.01, segment="Champions"), row("b", p_alive=0.8, expected_purchases_30d=1.5,
                                                                   next_purchase_date=D(20)),
                  row("c", **OVERDUE, clv_12m=10.0), row("t", **OVERDUE, clv_12m=1.0),
                  row("m", **OVERDUE, clv_12m=1e6)), dict(max_discount_margin_multiple=0.25), {}),
        "budget spent exactly, ties, no channel": (  # 15 each: three fit 45 exactly
            frame(*[row(f"c{i}", **OVERDUE, expected_order_value=100.0, clv_12m=v)
                    for i, v in enumerate([100.0, 400.0, 400.0, 300.0, 200.0])]), dict(budget=45.0),
            dict(customers=people(["c0", "c1", "c2", "c4"]))),
        "channels by age, consent and fallback": (
            frame(*[row(f"c{i}", frequency=2.0) for i in range(8)]), dict(fallback_to_consented_channel=False),
            dict(customers=pd.concat([people([f"c{i}"], age=a, email=e, sms=s, messenger=m) for i, (a, e, s, m) in
                                      enumerate([(25.0, 1, 1, 0), (30.0, 1, 0, 0), (50.0, 0, 1, 1), (np.nan, 0, 1, 1),
                                                 (16.0, 1, 1, 1), (45.0, 1, 1, 1), (np.nan, 0, 0, 0)])],
                                     ignore_index=True))),
        "channel rules as config, with fallback": (
            frame(*[row(f"c{i}", frequency=2.0) for i in range(3)]),
            dict(channels=[ChannelRule(channel="sms", min_age=18, max_age=40, max_contacts_per_month=3),
                           ChannelRule(channel="sms", min_age=40, max_contacts_per_month=1)]),
            dict(customers=people(["c0", "c1", "c2"], age=[20.0, 50.0, 70.0], sms=[True, False, False]))),
        "duplicated customers rows, the last wins": (
            two, {}, dict(customers=pd.concat([people(["a", "b"]), people(["a"], email=False, sms=False,
                                                                          messenger=False)], ignore_index=True))),
        "products as arrays, missing or one id": (
            frame(row("a", frequency=2.0, recommended_products=np.array(["R1", "R2", "R3", "R4"], dtype=object)),
                  row("b", frequency=2.0, recommended_products=None), row("c", frequency=2.0,
                                                                          recommended_products="R9")), {}, {}),
    }


@pytest.mark.parametrize("name", list(_edges()))
def test_engine_equals_reference_on_edge_cases(name):
    scores, settings, kw = _edges()[name]
    kw = dict(customers=people(scores["customer_id"]), vip_min_clv=1e12) | kw
    both(scores, cfg_with(**settings), as_of=AS_OF, **kw)


# ------------------------------------------------------------------------------------------ registry
def test_registry_is_the_one_list_of_rules():
    assert tuple(RULES) == RULE_NAMES == OFFER_TYPES
    assert OffersConfig().priority == list(RULE_NAMES)
    for name, rule in RULES.items():
        assert rule.name == name and callable(rule.plain)
    with pytest.raises(ConfigError, match="unknown offer rule"):
        load_config(overrides={"offers.priority": ["free_lunch"]})


def test_example_playbook_shows_every_offers_key():
    import yaml

    from test_offers import REPO

    example = yaml.safe_load((REPO / "configs" / "offers_example.yaml").read_text())["offers"]
    assert set(example) == set(OffersConfig.model_fields)
    assert example["priority"] and set(example["priority"]) == set(RULE_NAMES)


def test_config_channel_names_match_the_offers_channels():
    from typing import get_args

    channel = get_args(ChannelRule.model_fields["channel"].annotation)
    order = get_args(get_args(OffersConfig.model_fields["default_channel_order"].annotation)[0])
    assert set(channel) == set(order) == set(CHANNELS)


def test_config_imports_without_the_offers_engine():
    import subprocess
    import sys

    code = "import sys, rebuy.config; print(sorted(m for m in ('numpy', 'pandas', 'rebuy.offers.engine') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
