"""Offer rules engine (rebuy.offers): one built customer per rule, channels/consent, budget guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rebuy.config import ChannelRule, Config, ConfigError, load_config
from rebuy.offers import (
    OFFER_COLUMNS,
    OffersInputError,
    assign_offers,
    offer_summary,
    vip_clv_threshold,
)

AS_OF = pd.Timestamp("2024-06-01")
REPO = Path(__file__).resolve().parents[1]


def row(cid: str = "c", **kw) -> dict:
    """A customer who triggers no rule; keyword arguments change that."""
    base = dict(
        customer_id=cid, segment="Need Attention", r_score=3, f_score=3, m_score=3, frequency=0.0,
        recency=0.0, T=20.0, monetary_value=0.0, orders=1, total_spend=50.0,
        last_purchase=AS_OF - pd.Timedelta(days=60), p_alive=0.9, expected_purchases_30d=0.2,
        expected_purchases_90d=0.6, expected_purchases_365d=2.0, expected_order_value=50.0, clv_12m=100.0,
        net_ltv=30.0, churn_risk="low", next_purchase_date=AS_OF + pd.Timedelta(days=30),
        recommended_products=["R1", "R2", "R3", "R4"],
    )
    base.update(kw)
    return base


def frame(*rows: dict) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    df["customer_id"] = df["customer_id"].astype("string")
    return df


def people(ids, age=35.0, email=True, sms=True, messenger=True, birth_date=pd.NaT) -> pd.DataFrame:
    ids = list(ids)
    return pd.DataFrame({
        "customer_id": pd.array(ids, dtype="string"), "age": age, "birth_date": pd.to_datetime(birth_date),
        "consent_email": email, "consent_sms": sms, "consent_messenger": messenger,
    }, index=range(len(ids)))


def run(scores: pd.DataFrame, cfg: Config | None = None, customers="all", **kw) -> pd.DataFrame:
    """Offers with a consenting 35-year-old customers table and VIP switched off unless asked."""
    if isinstance(customers, str) and customers == "all":
        customers = people(scores["customer_id"])
    kw.setdefault("vip_min_clv", 1e12)
    return assign_offers(scores, cfg or Config(), as_of=AS_OF, customers=customers, **kw)


def cfg_with(**offers) -> Config:
    cfg = Config()
    for k, v in offers.items():
        setattr(cfg.offers, k, v)
    return cfg


# ------------------------------------------------------------------------------------------ the rules
def test_customer_matching_no_rule_gets_none_with_reason():
    out = run(frame(row()))
    assert out["offer_type"].iloc[0] == "none"
    assert out["offer_value"].iloc[0] == 0 and out["discount_cost"].iloc[0] == 0
    assert out["offer_reason"].iloc[0].startswith("No offer rule applies (P(alive) 0.90, last order 2024-04-02")
    assert out["offer_products"].iloc[0] == []


def test_loyalty_points_for_active_repeat_buyer():
    out = run(frame(row(frequency=3.0, p_alive=0.92, expected_order_value=40.0)))
    r = out.iloc[0]
    assert r["offer_type"] == "loyalty_points"
    assert r["offer_value"] == 80  # 1 point per currency unit x 40.00 x double points
    assert r["discount_cost"] == 0
    assert "3 repeat purchases and P(alive) 0.92" in r["offer_reason"]
    assert "about 80 points" in r["offer_reason"]
    assert r["offer_products"] == ["R1", "R2", "R3"]
    # an inactive repeat buyer (P(alive) below loyalty_min_p_alive) is not "active"
    assert run(frame(row(frequency=3.0, p_alive=0.6)))["offer_type"].iloc[0] != "loyalty_points"


def test_spend_tier_nudge_says_how_much_more():
    scores = frame(
        row("near", total_spend=1900.0, expected_order_value=100.0, clv_12m=1000.0),
        row("far", total_spend=1000.0, expected_order_value=100.0, clv_12m=1000.0),
        row("top", total_spend=6000.0, expected_order_value=100.0, clv_12m=1000.0),
        row("first", total_spend=450.0, expected_order_value=100.0, clv_12m=1000.0),
    )
    out = run(scores).set_index(scores["customer_id"])
    assert out.loc["near", "offer_type"] == "spend_tier"
    assert out.loc["near", "offer_value"] == pytest.approx(0.10)
    reason = out.loc["near", "offer_reason"]
    assert "Cumulative spend is 1900.00 (now at the 500.00 tier with 5% off)" in reason
    assert "spend 100.00 more to reach the 2000.00 tier and unlock 10% off" in reason
    assert out.loc["near", "discount_cost"] == pytest.approx(10.0)  # 10% of an expected order of 100
    assert out.loc["far", "offer_type"] == "none"  # 1000 short > 2 expected orders
    assert out.loc["top", "offer_type"] == "none"  # no tier above
    assert out.loc["first", "offer_value"] == pytest.approx(0.05)
    assert "spend 50.00 more to reach the 500.00 tier" in out.loc["first", "offer_reason"]


def test_vip_is_the_top_share_by_clv():
    scores = frame(*[row(f"c{i}", clv_12m=float(i + 1)) for i in range(40)])
    out = assign_offers(scores, Config(), as_of=AS_OF, customers=people(scores["customer_id"]))
    vip = set(scores["customer_id"][out["offer_type"] == "vip"])
    assert vip == {"c39", "c38"}  # ceil(5% of 40) = 2 highest CLV
    r = out[scores["customer_id"] == "c39"].iloc[0]
    assert "top 5% of customers by 12-month CLV (40.00)" in r["offer_reason"]
    assert "VIP status with exclusive early access to R1, R2, R3" in r["offer_reason"]
    assert r["offer_value"] == 0 and r["discount_cost"] == 0
    # the request path passes the nightly threshold: one customer is not "top 5%" of itself
    thr = vip_clv_threshold(scores["clv_12m"], 0.05)
    assert thr == 39.0
    one = frame(row("x", clv_12m=20.0))
    assert run(one, vip_min_clv=thr)["offer_type"].iloc[0] != "vip"
    assert run(frame(row("y", clv_12m=45.0)), vip_min_clv=thr)["offer_type"].iloc[0] == "vip"


def test_referral_for_champions_and_loyal_customers():
    scores = frame(row("a", segment="Champions", r_score=5, f_score=5), row("b", segment="Loyal Customers"),
                   row("c", segment="Potential Loyalists"))
    out = run(scores)
    assert out["offer_type"].tolist() == ["referral", "referral", "none"]
    assert out["offer_value"].iloc[0] == 10.0
    assert out["offer_reason"].iloc[0].startswith("Champions (R5 F5); an invitation to refer a friend: both get 10.00")
    cfg = cfg_with(referral_segments=["Potential Loyalists"], referral_bonus=5.0)
    out2 = run(scores, cfg)
    assert out2["offer_type"].tolist() == ["none", "none", "referral"]
    assert out2["offer_value"].iloc[2] == 5.0


def test_birthday_in_the_coming_window():
    scores = frame(row("soon"), row("later"), row("today"), row("unknown"))
    cust = people(scores["customer_id"])
    cust["birth_date"] = pd.to_datetime(["1990-06-06", "1990-06-30", "1985-06-01", None])
    out = run(scores, customers=cust)
    assert out["offer_type"].tolist() == ["birthday", "none", "birthday", "none"]
    assert out["offer_reason"].iloc[0].startswith("Birthday on 2024-06-06 (in 5 days); a 10% birthday discount on R1")
    assert "(today)" in out["offer_reason"].iloc[2]
    assert out["discount_cost"].iloc[0] == pytest.approx(5.0)  # 10% of 50
    # the window is config: 30 days catches the 30 June birthday
    assert run(scores, cfg_with(birthday_window_days=30), customers=cust)["offer_type"].iloc[1] == "birthday"


def test_birthday_on_29_february_in_a_common_year():
    scores = frame(row())
    cust = people(["c"], birth_date="1992-02-29")
    out = assign_offers(scores, Config(), as_of="2023-02-20", customers=cust, vip_min_clv=1e12)
    assert out["offer_type"].iloc[0] == "birthday"
    assert "Birthday on 2023-02-28 (in 8 days)" in out["offer_reason"].iloc[0]


def test_win_back_when_p_alive_falls_and_purchase_is_overdue():
    scores = frame(row(p_alive=0.34, next_purchase_date=pd.Timestamp("2024-05-01")))
    r = run(scores).iloc[0]
    assert r["offer_type"] == "win_back"
    assert r["offer_value"] == pytest.approx(0.15)
    assert r["offer_reason"] == (
        "P(alive) fell to 0.34 and the expected next purchase was 2024-05-01; "
        "we miss you: a 15% win-back discount on R1, R2, R3."
    )
    assert r["discount_cost"] == pytest.approx(7.5)


def test_win_back_when_only_overdue_and_grace_period():
    scores = frame(row("late", p_alive=0.7, next_purchase_date=AS_OF - pd.Timedelta(days=10)),
                   row("grace", p_alive=0.7, next_purchase_date=AS_OF - pd.Timedelta(days=5)))
    out = run(scores)
    assert out["offer_type"].tolist() == ["win_back", "none"]
    assert out["offer_reason"].iloc[0].startswith(
        "The expected next purchase was 2024-05-22 (10 days ago) and P(alive) is 0.70")
    # new products configured: the win-back shows them instead of the recommendations
    out2 = run(scores, cfg_with(new_products=["N1", "N2"]))
    assert out2["offer_products"].iloc[0] == ["N1", "N2"]


def test_no_offer_below_the_p_alive_floor():
    scores = frame(row(p_alive=0.01, segment="Champions", next_purchase_date=AS_OF - pd.Timedelta(days=90)))
    r = run(scores).iloc[0]
    assert r["offer_type"] == "none" and r["discount_cost"] == 0 and r["offer_products"] == []
    assert r["offer_reason"] == "P(alive) is 0.010, below the floor of 0.05: an offer would be wasted."
    # a lower floor lets the win-back through
    assert run(scores, cfg_with(p_alive_floor=0.005))["offer_type"].iloc[0] == "win_back"


def test_no_discount_for_customers_who_will_buy_anyway():
    scores = frame(row(p_alive=0.8, expected_purchases_30d=1.5, next_purchase_date=AS_OF - pd.Timedelta(days=20)))
    r = run(scores).iloc[0]
    assert r["offer_type"] == "reminder"
    assert r["offer_value"] == 0 and r["discount_cost"] == 0
    assert "expected 1.50 purchases in the next 30 days anyway, so no discount: a reminder of R1, R2, R3" in (
        r["offer_reason"])
    assert run(scores, cfg_with(buy_anyway_purchases_30d=2.0))["offer_type"].iloc[0] == "win_back"


def test_cross_sell_after_a_recent_order():
    calls = []

    def bought_together(products, n):
        calls.append((list(products), n))
        return ["A", "X", "Y", "Z", "W"][:n]

    scores = frame(row("recent", last_purchase=AS_OF - pd.Timedelta(days=3)), row("old"),
                   row("nobasket", last_purchase=AS_OF - pd.Timedelta(days=1)))
    lop = pd.Series({"recent": ["A", "B"], "old": ["A"]})
    out = run(scores, last_order_products=lop, cross_sell=bought_together)
    assert out["offer_type"].tolist() == ["cross_sell", "none", "cross_sell"]
    assert out["offer_products"].iloc[0] == ["X", "Y", "Z"]  # last-order products left out
    assert calls[0][0] == ["A", "B"] and len(calls) == 1
    assert out["offer_reason"].iloc[0] == (
        "Ordered 3 days ago (2024-05-29); complementary products to that order: X, Y, Z.")
    assert out["offer_products"].iloc[2] == ["R1", "R2", "R3"]  # no basket known: recommendations
    assert out["discount_cost"].iloc[0] == 0
    # without a recommender the customer's recommendations are the complement
    assert run(scores)["offer_products"].iloc[0] == ["R1", "R2", "R3"]
    # window is config
    assert run(scores, cfg_with(cross_sell_window_days=2), last_order_products=lop,
               cross_sell=bought_together)["offer_type"].iloc[0] == "none"


def _events(rows):
    return pd.DataFrame(rows, columns=["customer_id", "product_id", "timestamp", "event"])


def test_browse_abandonment_from_events_and_last_order():
    cfg = cfg_with(priority=["browse_abandonment"])
    d = lambda days: AS_OF - pd.Timedelta(days=days)  # noqa: E731
    scores = frame(row("a", last_purchase=d(4)), row("b", last_purchase=d(4)), row("c"), row("d"))
    ev = _events([
        ("a", "P", d(6), "view"),    # viewed, then bought in the last order -> not abandoned
        ("a", "Q", d(6), "view"),    # viewed, last order without it -> abandoned
        ("b", "P", d(2), "view"),    # viewed after the last order -> abandoned
        ("b", "S", d(1), "cart"),    # carted after the last order -> abandoned, most recent first
        ("c", "T", d(30), "view"),   # outside the 14-day window
        ("d", "U", d(1), "purchase"),  # not a view/cart event
        ("zz", "U", d(1), "view"),   # unknown customer is ignored
    ])
    lop = pd.Series({"a": ["P"], "b": ["P"]})
    out = run(scores, cfg, events=ev, last_order_products=lop)
    assert out["offer_type"].tolist() == ["browse_abandonment", "browse_abandonment", "none", "none"]
    assert out["offer_products"].iloc[0] == ["Q"]
    assert out["offer_products"].iloc[1] == ["S", "P"]
    assert out["offer_value"].iloc[0] == pytest.approx(0.10)
    assert out["offer_reason"].iloc[1] == (
        "Viewed or carted S, P (latest on 2024-05-31) without buying; a 10% discount on them.")
    # a longer window catches c's old view
    out2 = run(scores, cfg_with(priority=["browse_abandonment"], browse_window_days=40), events=ev,
               last_order_products=lop)
    assert out2["offer_type"].iloc[2] == "browse_abandonment"


def test_browse_abandonment_exact_with_transactions():
    cfg = cfg_with(priority=["browse_abandonment"])
    d = lambda days: AS_OF - pd.Timedelta(days=days)  # noqa: E731
    scores = frame(row("a"), row("b"))
    ev = _events([("a", "V", d(3), "view"), ("b", "V", d(3), "view")])
    tx = pd.DataFrame({"customer_id": ["a", "b"], "product_id": ["V", "V"], "timestamp": [d(2), d(5)]})
    out = run(scores, cfg, events=ev, transactions=tx)
    # a bought V after viewing it; b bought V before the view only
    assert out["offer_type"].tolist() == ["none", "browse_abandonment"]


def test_browse_abandonment_is_skipped_with_one_warning_without_product_ids(caplog):
    # a shop whose transactions have no product_id passes events: the other rules still run
    cfg = cfg_with(priority=["browse_abandonment", "cross_sell", "loyalty_points"])
    d = lambda days: AS_OF - pd.Timedelta(days=days)  # noqa: E731
    scores = frame(row("a"), row("b", frequency=3.0, last_purchase=d(5)))
    ev = _events([("a", "V", d(3), "view"), ("b", "V", d(3), "view")])
    tx = pd.DataFrame({"customer_id": ["a", "b"], "timestamp": [d(60), d(5)], "amount": [5.0, 6.0]})
    with caplog.at_level("WARNING", logger="rebuy.offers"):
        out = run(scores, cfg, events=ev, transactions=tx)
    assert "browse_abandonment" not in set(out["offer_type"]) and out["offer_type"].iloc[1] != "none"
    warned = [r.getMessage() for r in caplog.records if "browse abandonment" in r.getMessage()]
    assert warned == ["offers: browse abandonment skipped: the transactions have no 'product_id' column; "
                      "map one with data.columns to offer viewed products"]


def test_priority_picks_one_offer_and_is_config():
    scores = frame(row(segment="Champions", frequency=5.0, p_alive=0.9,
                       next_purchase_date=AS_OF - pd.Timedelta(days=10)))
    assert run(scores)["offer_type"].iloc[0] == "win_back"
    assert run(scores, cfg_with(priority=["loyalty_points", "referral", "win_back"]))["offer_type"].iloc[0] == (
        "loyalty_points")
    assert run(scores, cfg_with(priority=["referral", "loyalty_points"]))["offer_type"].iloc[0] == "referral"
    assert run(scores, cfg_with(priority=[]))["offer_type"].iloc[0] == "none"


# ------------------------------------------------------------------------------------------ channels
@pytest.mark.parametrize(
    ("age", "email", "sms", "messenger", "fallback", "channel", "contacts"),
    [
        (25.0, True, True, True, True, "messenger", 10),
        (35.0, True, True, True, True, "email", 4),
        (30.0, True, True, True, True, "email", 4),  # [min_age, max_age): 30 is the email group
        (50.0, True, True, True, True, "sms", 2),
        (25.0, True, True, False, True, "email", 4),  # no messenger consent: next consented channel
        (50.0, False, False, True, True, "messenger", 10),
        (50.0, True, False, True, False, "none", 0),  # fallback switched off
        (25.0, False, False, False, True, "none", 0),
        (np.nan, False, True, True, True, "sms", 2),  # unknown age: default order among consented
        (np.nan, True, True, True, True, "email", 4),
        (16.0, True, True, True, True, "none", 0),  # below the minimum contact age
    ],
)
def test_channel_by_age_and_consent(age, email, sms, messenger, fallback, channel, contacts):
    scores = frame(row(frequency=2.0))  # a loyalty-points customer
    cust = people(["c"], age=age, email=email, sms=sms, messenger=messenger)
    out = run(scores, cfg_with(fallback_to_consented_channel=fallback), customers=cust).iloc[0]
    assert out["channel"] == channel
    assert out["max_contacts_per_month"] == contacts
    assert out["offer_type"] == "loyalty_points"  # decided from behaviour; delivery needs consent
    assert out["offer_reason"].startswith("Active repeat buyer")
    if channel == "none":
        why = "younger than the minimum contact age of 18" if age < 18 else "no consented channel"
        assert out["offer_reason"].endswith(f" Not sent: {why}.")


def test_consent_unknown_without_customers_table_unless_configured():
    scores = frame(row("a", frequency=2.0), row("b", frequency=2.0))
    out = run(scores, customers=None)
    assert (out["channel"] == "none").all() and (out["offer_type"] == "loyalty_points").all()
    assert out["offer_reason"].str.endswith(" Not sent: consent unknown (no customers table).").all()
    out = run(scores, cfg_with(assume_consent_without_customers=True), customers=None)
    assert out["channel"].tolist() == ["email", "email"]
    # a customer missing from the table has unknown consent too
    out = run(scores, customers=people(["a"], age=25.0))
    assert out["channel"].tolist() == ["messenger", "none"]
    assert out["offer_reason"].iloc[1].endswith(" Not sent: consent unknown (not in the customers table).")


def test_channel_rules_are_config():
    scores = frame(row(frequency=2.0))
    cfg = cfg_with(channels=[ChannelRule(channel="sms", min_age=18, max_age=None, max_contacts_per_month=1)])
    out = run(scores, cfg, customers=people(["c"], age=35.0)).iloc[0]
    assert (out["channel"], out["max_contacts_per_month"]) == ("sms", 1)
    with pytest.raises(ValueError, match="min_age 40 must be below max_age 30"):
        ChannelRule(channel="sms", min_age=40, max_age=30, max_contacts_per_month=1)


# ------------------------------------------------------------------------------------------ budget guard
def test_discount_capped_by_clv_share():
    overdue = AS_OF - pd.Timedelta(days=30)
    scores = frame(row("capped", p_alive=0.3, next_purchase_date=overdue, clv_12m=10.0),
                   row("tiny", p_alive=0.3, next_purchase_date=overdue, clv_12m=1.0))
    out = run(scores)
    # cap = min(2 x 0.3 x 50, 0.5 x 10) = 5.00 -> 10% of an expected order of 50
    assert out["offer_type"].iloc[0] == "win_back"
    assert out["offer_value"].iloc[0] == pytest.approx(0.10)
    assert out["discount_cost"].iloc[0] == pytest.approx(5.0)
    assert "(capped from 15% by the budget guard: at most 50% of the 12-month CLV of 10.00)" in (
        out["offer_reason"].iloc[0])
    # cap 0.50 -> 1% < min_discount 2%: downgraded to a reminder
    assert out["offer_type"].iloc[1] == "reminder"
    assert out["discount_cost"].iloc[1] == 0
    assert "a 15% discount would exceed the budget guard (at most 50% of the 12-month CLV of 1.00)" in (
        out["offer_reason"].iloc[1])


def test_discount_capped_by_margin_multiple():
    overdue = AS_OF - pd.Timedelta(days=30)
    scores = frame(row(p_alive=0.3, next_purchase_date=overdue, clv_12m=1e6))
    cfg = cfg_with(max_discount_margin_multiple=0.25)  # 0.25 x 0.3 x 50 = 3.75 -> 7.5% -> 7%
    r = run(scores, cfg).iloc[0]
    assert r["offer_value"] == pytest.approx(0.07)
    assert "at most 0.25x the margin of an expected order of 50.00" in r["offer_reason"]
    cfg.clv.margin = 0.5  # the margin comes from the clv section: 0.25 x 0.5 x 50 = 6.25 -> 12%
    assert run(scores, cfg)["offer_value"].iloc[0] == pytest.approx(0.12)


def test_run_budget_goes_to_highest_expected_value_first():
    overdue = AS_OF - pd.Timedelta(days=30)
    scores = frame(*[
        row(f"c{i}", p_alive=0.3, next_purchase_date=overdue, expected_order_value=100.0, clv_12m=clv,
            net_ltv=1000.0 - clv)
        for i, clv in enumerate([100.0, 400.0, 200.0, 300.0])
    ])
    out = run(scores, cfg_with(budget=40.0))  # 15 each: two fit
    assert out["offer_type"].tolist() == ["reminder", "win_back", "reminder", "win_back"]
    assert out["discount_cost"].sum() == pytest.approx(30.0)
    assert "the run's discount budget of 40.00 went to customers with a higher 12-month CLV first" in (
        out["offer_reason"].iloc[0])
    out = run(scores, cfg_with(budget=40.0, budget_rank_by="net_ltv"))
    assert out["offer_type"].tolist() == ["win_back", "reminder", "win_back", "reminder"]
    out = run(scores, cfg_with(budget=40.0, redemption_rate=0.5))  # 7.50 expected each: all fit
    assert (out["offer_type"] == "win_back").all()
    assert out["discount_cost"].sum() == pytest.approx(30.0)
    # customers without a channel do not use the budget
    cust = people(scores["customer_id"])
    cust.loc[1, ["consent_email", "consent_sms", "consent_messenger"]] = False
    out = run(scores, cfg_with(budget=40.0), customers=cust)
    assert out["offer_type"].tolist() == ["reminder", "win_back", "win_back", "win_back"]
    assert out["channel"].iloc[1] == "none" and out["discount_cost"].iloc[1] == 0


# ------------------------------------------------------------------------------------------ whole table
def _random_tables(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"C{i}" for i in range(n)]
    scores = pd.DataFrame({
        "customer_id": pd.array(ids, dtype="string"),
        "segment": rng.choice(["Champions", "Loyal Customers", "Lost", "At Risk", "Need Attention"], n),
        "r_score": rng.integers(1, 6, n), "f_score": rng.integers(1, 6, n),
        "frequency": rng.poisson(2, n).astype(float), "total_spend": rng.gamma(2, 500, n),
        "last_purchase": AS_OF - pd.to_timedelta(rng.integers(0, 400, n), unit="D"),
        "p_alive": rng.uniform(0, 1, n), "expected_purchases_30d": rng.gamma(1, 0.5, n),
        "expected_order_value": rng.gamma(2, 30, n), "clv_12m": rng.gamma(1, 200, n) * (rng.random(n) > 0.05),
        "net_ltv": rng.normal(50, 30, n),
        "next_purchase_date": AS_OF + pd.to_timedelta(rng.integers(-100, 100, n), unit="D"),
    }, index=rng.permutation(n) + 1000)
    pool = np.array([f"P{i}" for i in range(60)])
    scores["recommended_products"] = [list(x) for x in pool[rng.integers(0, 60, (n, 5))]]
    scores.loc[scores.index[:5], "recommended_products"] = None
    scores.loc[scores.index[5:10], "next_purchase_date"] = pd.NaT
    cust = pd.DataFrame({
        "customer_id": ids, "age": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(15, 80, n)),
        "birth_date": AS_OF - pd.to_timedelta(rng.integers(6000, 25000, n), unit="D"),
        "consent_email": rng.random(n) < 0.6, "consent_sms": rng.random(n) < 0.4,
        "consent_messenger": rng.random(n) < 0.5,
    }).iloc[: n - 50]  # some customers missing from the table
    m = n
    ev = _events({
        "customer_id": np.array(ids)[rng.integers(0, n, m)], "product_id": pool[rng.integers(0, 60, m)],
        "timestamp": AS_OF - pd.to_timedelta(rng.uniform(0, 20, m), unit="D"), "event": rng.choice(["view", "cart"], m),
    })
    lop = pd.Series([list(x) for x in pool[rng.integers(0, 60, (n, 2))]], index=ids)
    return scores, cust, ev, lop, pool


def test_whole_table_invariants():
    scores, cust, ev, lop, pool = _random_tables(3000)
    cfg = cfg_with(budget=2000.0)
    out = assign_offers(scores, cfg, as_of=AS_OF, customers=cust, events=ev, last_order_products=lop,
                        cross_sell=lambda b, n: [p for p in pool[:n + 2] if p not in b][:n])
    assert list(out.columns) == OFFER_COLUMNS
    assert out.index.equals(scores.index)
    assert set(out["offer_type"]) >= {"win_back", "reminder", "none", "referral", "loyalty_points", "cross_sell",
                                      "browse_abandonment", "birthday", "vip"}
    for c in ("offer_value", "discount_cost"):
        assert np.isfinite(out[c].to_numpy()).all()
    assert out["max_contacts_per_month"].dtype == np.int64
    assert out.notna().all().all()
    # every row has a sentence
    assert (out["offer_reason"].str.len() > 20).all() and out["offer_reason"].str.endswith(".").all()
    # no channel without consent (customers missing from the table have no consent)
    consent = cust.set_index("customer_id").reindex(scores["customer_id"].astype(str))
    for ch in ("email", "sms", "messenger"):
        on = (out["channel"] == ch).to_numpy()
        assert consent[f"consent_{ch}"].fillna(False).astype(bool).to_numpy()[on].all()
    assert (out.loc[out["offer_type"] == "none", "channel"] == "none").all()
    assert (out.loc[out["channel"] == "none", "max_contacts_per_month"] == 0).all()
    silent = (out["channel"] == "none") & (out["offer_type"] != "none")
    assert silent.any() and out.loc[silent, "offer_reason"].str.contains(" Not sent: ").all()
    # budget and per-customer caps hold
    assert out["discount_cost"].sum() <= 2000.0 + 1e-6
    eov = scores["expected_order_value"].to_numpy()
    amount = out["offer_value"].to_numpy() * eov
    disc = out["discount_cost"].to_numpy() > 0
    cap = np.minimum(2 * 0.3 * eov, 0.5 * np.maximum(scores["clv_12m"].to_numpy(), 0))
    assert (amount[disc] <= cap[disc] + 1e-6).all()
    assert (out["offer_products"].map(len) <= 3).all()
    none = out["offer_type"] == "none"
    assert (out.loc[none, "offer_value"] == 0).all() and (out.loc[none, "offer_products"].map(len) == 0).all()
    assert (scores.loc[out["offer_type"] != "none", "p_alive"] >= 0.05).all()


def test_offer_summary_counts_and_costs():
    scores, cust, ev, lop, _ = _random_tables(500, seed=1)
    out = assign_offers(scores, Config(), as_of=AS_OF, customers=cust, events=ev)
    s = offer_summary(out)
    body = s[s["offer_type"] != "total"]
    manual = out.groupby(["offer_type", "channel"])["discount_cost"].agg(["size", "sum"])
    assert len(body) == len(manual)
    for _, r in body.iterrows():
        assert r["customers"] == manual.loc[(r["offer_type"], r["channel"]), "size"]
        assert r["discount_cost"] == pytest.approx(manual.loc[(r["offer_type"], r["channel"]), "sum"], abs=0.01)
    total = s[s["offer_type"] == "total"].iloc[0]
    assert total["customers"] == 500
    assert total["discount_cost"] == pytest.approx(out["discount_cost"].sum(), abs=0.01)
    assert body["customers"].is_monotonic_decreasing


def test_product_lists_from_parquet_or_missing():
    """Recommendations may arrive as numpy arrays (Parquet round trip) or be missing."""
    scores = frame(row("arr", frequency=2.0), row("none", frequency=2.0), row("one", frequency=2.0))
    scores["recommended_products"] = [np.array(["R1", "R2", "R3", "R4"], dtype=object), None, "R9"]
    out = run(scores)
    assert out["offer_products"].tolist() == [["R1", "R2", "R3"], [], ["R9"]]
    assert all(type(p) is list for p in out["offer_products"])
    assert out["offer_reason"].iloc[1].endswith("about 100 points.")
    assert out["offer_reason"].iloc[0].endswith("about 100 points on R1, R2, R3.")


def test_empty_scores_give_empty_offers():
    scores = frame(row()).iloc[0:0]
    out = assign_offers(scores, Config(), as_of=AS_OF)
    assert list(out.columns) == OFFER_COLUMNS and len(out) == 0


# ------------------------------------------------------------------------------------------ validation
def test_missing_or_bad_columns_are_clear_errors():
    with pytest.raises(OffersInputError, match=r"missing column\(s\) \['p_alive'\]"):
        run(frame(row()).drop(columns="p_alive"))
    with pytest.raises(OffersInputError, match="'clv_12m' has 1 NaN"):
        run(frame(row(clv_12m=np.nan)))
    with pytest.raises(OffersInputError, match="duplicated"):
        run(frame(row("a"), row("a")))
    with pytest.raises(OffersInputError, match="net_ltv"):
        run(frame(row()).drop(columns="net_ltv"), cfg_with(budget=10.0, budget_rank_by="net_ltv"))
    with pytest.raises(OffersInputError, match="events: missing"):
        run(frame(row()), events=pd.DataFrame({"customer_id": ["c"]}))


def test_offer_config_validation_and_example_file():
    with pytest.raises(ConfigError, match="offers.priority"):
        load_config(overrides={"offers.priority": ["win_back", "free_lunch"]})
    with pytest.raises(ConfigError, match="strictly increasing"):
        load_config(overrides={"offers.spend_tiers": [[500, 0.05], [100, 0.1]]})
    with pytest.raises(ConfigError, match="offers.budgett"):
        load_config(overrides={"offers.budgett": 10})
    cfg = load_config(REPO / "configs" / "offers_example.yaml")
    assert cfg.offers.budget == 5000.0
    assert cfg.offers.priority[0] == "win_back"
    scores = frame(row(segment="Champions", p_alive=0.3, next_purchase_date=AS_OF - pd.Timedelta(days=30)))
    assert run(scores, cfg)["offer_type"].iloc[0] == "win_back"


# ------------------------------------------------------------------------------------------ fast paths
def test_string_and_object_ids_give_the_same_offers():
    """Arrow-hashed string ids (string dtype) and pandas-hashed object/int ids must agree; a customers table in
    another order, with extra rows or duplicates, gives the same offers as an aligned one."""
    scores, cust, ev, lop, pool = _random_tables(1500, seed=3)
    cross = lambda b, n: [p for p in pool[:n + 2] if p not in b][:n]  # noqa: E731
    tx = pd.DataFrame({"customer_id": ev["customer_id"].to_numpy()[::3], "product_id": ev["product_id"].to_numpy()[::3],
                       "timestamp": ev["timestamp"].to_numpy()[::3] + np.timedelta64(1, "h")})
    base = assign_offers(scores, Config(), as_of=AS_OF, customers=cust, events=ev, last_order_products=lop,
                         cross_sell=cross, transactions=tx)
    as_string = lambda df, c: df.assign(**{c: df[c].astype("string")})  # noqa: E731
    shuffled = as_string(cust.sample(frac=1.0, random_state=0), "customer_id")
    extra = pd.concat([shuffled, shuffled.iloc[:5].assign(customer_id=["X1", "X2", "X3", "X4", "X5"])])
    lop_obj = pd.Series([list(b) for b in lop], index=pd.Index(lop.index.astype(str), dtype="string"))
    for kw in (dict(customers=shuffled), dict(customers=extra),
               dict(events=as_string(as_string(ev, "customer_id"), "product_id")),
               dict(last_order_products=lop_obj, transactions=as_string(tx, "customer_id"))):
        args = dict(customers=cust, events=ev, last_order_products=lop, cross_sell=cross, transactions=tx) | kw
        pd.testing.assert_frame_equal(assign_offers(scores, Config(), as_of=AS_OF, **args), base)
    # the last of duplicated customers rows wins, whatever the id dtype
    dup = pd.concat([cust, cust.iloc[:20].assign(consent_email=False, consent_sms=False, consent_messenger=False)])
    for d in (dup, as_string(dup, "customer_id")):
        out = assign_offers(scores, Config(), as_of=AS_OF, customers=d)
        first = scores["customer_id"].isin(cust["customer_id"].iloc[:20]).to_numpy()
        assert (out.loc[first, "channel"] == "none").all()
    # integer customer ids (no Arrow path) still match the scores' string ids
    int_ids = scores.assign(customer_id=np.arange(len(scores)))
    int_cust = cust.assign(customer_id=cust["customer_id"].str[1:].astype(int))
    out_int = assign_offers(int_ids, Config(), as_of=AS_OF, customers=int_cust)
    out_str = assign_offers(scores, Config(), as_of=AS_OF, customers=cust)
    pd.testing.assert_series_equal(out_int["channel"], out_str["channel"])


def test_no_recommender_calls_for_customers_below_the_p_alive_floor():
    calls = []

    def bought_together(products, n):
        calls.append(list(products))
        return ["X", "Y", "Z", "W"][:n]

    recent = AS_OF - pd.Timedelta(days=2)
    scores = frame(row("dead", last_purchase=recent, p_alive=0.01), row("alive", last_purchase=recent))
    lop = pd.Series({"dead": ["D"], "alive": ["A"]})
    out = run(scores, last_order_products=lop, cross_sell=bought_together)
    assert calls == [["A"]]
    assert out["offer_type"].tolist() == ["none", "cross_sell"]
    assert out["offer_reason"].iloc[0].startswith("P(alive) is 0.010, below the floor")


def test_garbage_collector_state_is_restored(monkeypatch):
    import gc

    import rebuy.offers.engine as offers_module

    scores = frame(row())
    seen = []
    monkeypatch.setattr(offers_module, "_assign_offers", lambda *a, **k: seen.append(gc.isenabled()) or None)
    run(scores)  # a small (request-path) call leaves the collector alone
    monkeypatch.setattr(offers_module, "GC_PAUSE_MIN_ROWS", 1)
    run(scores)  # a batch pauses it while it runs
    assert seen == [True, False]
    monkeypatch.undo()
    run(scores)
    assert gc.isenabled()
    gc.disable()
    try:
        run(scores)
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(OffersInputError):
        run(frame(row(clv_12m=np.nan)))
    assert gc.isenabled()


def test_dates_in_reasons_match_numpy_formatting():
    from rebuy.offers.text import day_strings as _day

    rng = np.random.default_rng(5)
    for lo, hi in ((-(10**17), 10**17), (10**18, 10**18 + 86_400 * 10**9 * 700), (-(10**18), 10**18)):
        ts = rng.integers(lo, hi, 3000).view("datetime64[ns]")
        ts[::11] = np.datetime64("NaT")
        expected = np.datetime_as_string(ts, unit="D").astype(object)
        expected[np.isnat(ts)] = "unknown"
        assert _day(ts).tolist() == expected.tolist()


def test_days_to_birthday_matches_a_per_row_calendar():
    import datetime as dt

    from rebuy.offers.rules import days_to_birthday as _days_to_birthday

    rng = np.random.default_rng(6)
    births = np.datetime64("1930-01-01", "ns") + rng.integers(0, 80 * 365, 2000).astype("timedelta64[D]")
    births[::13] = np.datetime64("NaT")
    births[1::17] = np.datetime64("1992-02-29", "ns")
    for as_of in ("2023-02-28", "2023-12-31", "2024-02-29", "2024-06-01"):
        today = pd.Timestamp(as_of).date()

        def next_birthday(b, today=today):
            for year in (today.year, today.year + 1):
                leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
                day = 28 if (b.month, b.day) == (2, 29) and not leap else b.day
                d = dt.date(year, b.month, day)
                if d >= today:
                    return (d - today).days

        expected = [np.nan if pd.isna(b) else next_birthday(pd.Timestamp(b)) for b in births]
        np.testing.assert_array_equal(_days_to_birthday(births, pd.Timestamp(as_of)), np.array(expected, dtype=float))


# ------------------------------------------------------------------------------------------ consent unknown
def test_unknown_consent_is_warned_about_once_per_run(caplog):
    scores = frame(*[row(f"c{i}", frequency=2.0) for i in range(5)])
    with caplog.at_level("WARNING", logger="rebuy.offers"):
        run(scores, customers=None)
    warned = [r for r in caplog.records if "consent unknown" in r.getMessage()]
    assert len(warned) == 1 and "for 5 of 5 customers" in warned[0].getMessage()


def test_customers_table_without_consent_columns_means_consent_unknown():
    cust = people(["c"]).drop(columns=["consent_email", "consent_sms", "consent_messenger"])
    out = run(frame(row(frequency=2.0)), customers=cust).iloc[0]
    assert (out["offer_type"], out["channel"]) == ("loyalty_points", "none")
    assert out["offer_reason"].endswith(" Not sent: consent unknown (no consent columns in the customers table).")


def test_unknown_consent_discount_counts_towards_the_budget():
    overdue = AS_OF - pd.Timedelta(days=30)
    scores = frame(row("a", p_alive=0.3, next_purchase_date=overdue, expected_order_value=100.0))
    out = run(scores, customers=None).iloc[0]
    assert (out["offer_type"], out["channel"]) == ("win_back", "none")
    assert out["discount_cost"] == pytest.approx(15.0)  # an offers service holding consent may send it


def test_customer_without_an_offer_gets_no_channel():
    scores = frame(row("idle"), row("floor", p_alive=0.01))
    out = run(scores)
    assert out["offer_type"].tolist() == ["none", "none"]
    assert out["channel"].tolist() == ["none", "none"] and out["max_contacts_per_month"].tolist() == [0, 0]


# ------------------------------------------------------------------------------------------ lapsed customers
UPSELL_TRIGGERS = {  # a non-lapsed customer with these numbers gets the upsell
    "loyalty_points": dict(frequency=3.0),
    "spend_tier": dict(total_spend=480.0),
    "vip": dict(clv_12m=5000.0),
    "referral": dict(referral=True),
    "cross_sell": dict(last_purchase=AS_OF - pd.Timedelta(days=2)),
}


@pytest.mark.parametrize("rule", list(UPSELL_TRIGGERS))
@pytest.mark.parametrize("segment", ["Lost", "Hibernating", "At Risk", "Can't Lose Them"])
def test_lapsed_customer_gets_win_back_never_an_upsell(rule, segment):
    kw = dict(UPSELL_TRIGGERS[rule])
    cfg = cfg_with(referral_segments=["Need Attention", segment]) if kw.pop("referral", False) else Config()
    extra = dict(vip_min_clv=1000.0, last_order_products=pd.Series({"c": ["R1"]}),
                 cross_sell=lambda basket, n: ["X1", "X2", "X3", "X4"][:n])
    assert run(frame(row(**kw)), cfg, **extra)["offer_type"].iloc[0] == rule
    out = run(frame(row(segment=segment, r_score=1, p_purchase_90d=0.08, **kw)), cfg, **extra).iloc[0]
    assert out["offer_type"] == "win_back"


def test_lapsed_reason_quotes_segment_last_order_and_p_purchase_90d():
    out = run(frame(row(segment="Lost", r_score=1, p_alive=1.0, p_purchase_90d=0.08))).iloc[0]
    assert out["offer_reason"].startswith(
        "Lost customer: last order 2024-04-02 (60 days ago), P(purchase in 90 days) 0.08; we miss you: a 15% win-back")
    assert "P(alive)" not in out["offer_reason"]  # 1.00 for a one-time buyer: it would contradict "Lost"


def test_low_p_purchase_90d_counts_as_lapsed_when_configured():
    scores = frame(row(segment="Potential Loyalists", frequency=3.0, p_purchase_90d=0.1))
    assert run(scores)["offer_type"].iloc[0] == "loyalty_points"
    assert run(scores, cfg_with(lapsed_max_p_purchase_90d=0.2))["offer_type"].iloc[0] == "win_back"


def test_lapsed_rules_cannot_list_an_upsell():
    with pytest.raises(ValueError, match="lapsed customers get win-back or nothing"):
        cfg_with(lapsed_rules=["win_back", "spend_tier"])


# ------------------------------------------------------------------------------------------ reasons
def test_no_rule_reason_quotes_p_purchase_90d_when_scored():
    out = run(frame(row(p_purchase_90d=0.35)))
    assert out["offer_reason"].iloc[0] == (
        "No offer rule applies (P(purchase in 90 days) 0.35, last order 2024-04-02, no repeat purchases).")


@pytest.mark.parametrize(("n", "text"), [(0, "no repeat purchases"), (1, "1 repeat purchase"),
                                         (2.5, "2.5 repeat purchases")])
def test_repeat_purchases_in_words(n, text):
    out = run(frame(row(frequency=n, p_alive=0.8)), cfg_with(loyalty_min_repeat_purchases=0.0))
    assert f"with {text} and P(alive) 0.80" in out["offer_reason"].iloc[0]


@pytest.mark.parametrize(("days", "text"), [(0, "today"), (1, "yesterday"), (5, "5 days ago")])
def test_days_since_the_last_order_in_words(days, text):
    scores = frame(row(last_purchase=AS_OF - pd.Timedelta(days=days)))
    out = run(scores, last_order_products=pd.Series({"c": ["R1"]}), cross_sell=lambda b, n: ["X1", "X2"][:n])
    assert out["offer_reason"].iloc[0].startswith(f"Ordered {text} (")


@pytest.mark.parametrize(("days", "text"), [(0, "today"), (1, "tomorrow"), (9, "in 9 days")])
def test_days_to_the_birthday_in_words(days, text):
    born = (AS_OF + pd.Timedelta(days=days)).replace(year=1990)
    out = run(frame(row()), customers=people(["c"], birth_date=born))
    assert f"(Birthday on {(AS_OF + pd.Timedelta(days=days)).date()} ({text})"[1:] in out["offer_reason"].iloc[0]


def _described_transactions() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": pd.array(["c", "c", "d"], dtype="string"), "product_id": pd.array(["R1", "R2", "R1"], dtype="string"),
        "timestamp": [AS_OF - pd.Timedelta(days=60)] * 3, "description": ["Red mug", "Blue plate", "Red mug"],
    })


def test_reasons_name_products_by_description_and_keep_ids():
    out = run(frame(row(frequency=3.0)), transactions=_described_transactions()).iloc[0]
    assert out["offer_reason"].endswith("about 100 points on Red mug, Blue plate, R3.")
    assert out["offer_products"] == ["R1", "R2", "R3"]


def test_given_product_names_fill_products_the_transactions_do_not_name():
    out = run(frame(row(frequency=3.0)), transactions=_described_transactions(), product_names={"R3": "Green bowl",
                                                                                              "R1": "old name"})
    assert out["offer_reason"].iloc[0].endswith("on Red mug, Blue plate, Green bowl.")


# ------------------------------------------------------------------------------------------ wholesale
def test_wholesale_customer_gets_no_consumer_offer():
    out = run(frame(row(frequency=3.0, total_spend=9000.0, wholesale=True))).iloc[0]
    assert (out["offer_type"], out["channel"], out["offer_value"]) == ("none", "none", 0.0)
    assert out["offer_reason"] == "Wholesale customer (total spend 9000.00 over 4 purchase days): kept out of consumer offers."
