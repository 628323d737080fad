"""KPIs by campaign: treated vs control repeat rate, retention and revenue per offer type, from small
hand-built offer logs and transactions (one behaviour per test)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rebuy.campaign_kpis import CAMPAIGN_KPI_COLUMNS, campaign_kpis
from rebuy.errors import KPIInputError

DAY = "2026-03-01"  # decided_at of every decision unless a test says otherwise
AS_OF = "2026-06-30"  # long after every window


def decision(customer: str, offer_type: str = "win_back", group: str = "treatment", decided_at: str = DAY) -> dict:
    return {"customer_id": customer, "decided_at": pd.Timestamp(decided_at), "offer_type": offer_type,
            "group": group}


def purchase(customer: str, timestamp: str, amount: float = 10.0) -> dict:
    return {"customer_id": customer, "timestamp": pd.Timestamp(timestamp), "amount": amount,
            "order_id": f"{customer}-{timestamp}"}


def log(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def tx(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["customer_id", "timestamp", "amount", "order_id"])


def kpis(offer_log: pd.DataFrame, transactions: pd.DataFrame, **kw) -> pd.DataFrame:
    return campaign_kpis(offer_log, transactions, as_of=kw.pop("as_of", AS_OF), **kw)


def row(table: pd.DataFrame, offer_type: str = "win_back", group: str = "treatment") -> pd.Series:
    hit = table[(table["offer_type"] == offer_type) & (table["group"] == group)]
    assert len(hit) == 1, table
    return hit.iloc[0]


def test_columns_and_one_row_per_offer_type_and_group_treatment_first():
    table = kpis(log(decision("a"), decision("b", group="control"), decision("c", "vip")), tx(purchase("a", DAY)))
    assert tuple(table.columns) == CAMPAIGN_KPI_COLUMNS
    assert table[["offer_type", "group"]].values.tolist() == [
        ["vip", "treatment"], ["win_back", "treatment"], ["win_back", "control"]]


def test_a_purchase_on_decided_at_counts():
    table = kpis(log(decision("a")), tx(purchase("a", DAY, 25.0)))
    assert row(table)["repeat_rate"] == 1.0
    assert row(table)["revenue_per_customer"] == 25.0


def test_a_purchase_at_decided_at_plus_window_does_not_count():
    table = kpis(log(decision("a")), tx(purchase("a", "2026-03-31")), window_days=30)
    assert row(table)["repeat_rate"] == 0.0
    assert row(table)["revenue_per_customer"] == 0.0


def test_a_purchase_just_before_the_window_ends_counts():
    table = kpis(log(decision("a")), tx(purchase("a", "2026-03-30 23:59:59.999")), window_days=30)
    assert row(table)["repeat_rate"] == 1.0


def test_a_purchase_before_decided_at_is_not_in_the_window():
    table = kpis(log(decision("a")), tx(purchase("a", "2026-02-28 23:59:59")))
    assert row(table)["repeat_rate"] == 0.0


def test_repeat_rate_and_revenue_are_per_measured_customer_including_non_buyers():
    offers = log(decision("a"), decision("b"), decision("c"), decision("d"))
    table = kpis(offers, tx(purchase("a", "2026-03-02", 30.0), purchase("a", "2026-03-05", 10.0),
                            purchase("b", "2026-03-10", 20.0)))
    assert row(table)["customers"] == 4
    assert row(table)["repeat_rate"] == pytest.approx(0.5)
    assert row(table)["revenue_per_customer"] == pytest.approx(60.0 / 4)


def test_treatment_and_control_are_kept_apart():
    offers = log(decision("a"), decision("b", group="control"))
    table = kpis(offers, tx(purchase("a", "2026-03-02")))
    assert row(table, group="treatment")["repeat_rate"] == 1.0
    assert row(table, group="control")["repeat_rate"] == 0.0


def test_other_customers_purchases_do_not_leak_into_a_window():
    table = kpis(log(decision("a")), tx(purchase("b", "2026-03-02"), purchase("a", "2025-01-01")))
    assert row(table)["repeat_rate"] == 0.0


def test_retention_is_the_share_of_customers_active_in_the_lookback_who_buy_again():
    offers = log(decision("a"), decision("b"), decision("c"))
    table = kpis(offers, tx(purchase("a", "2026-02-01"), purchase("a", "2026-03-03"),  # active, retained
                            purchase("b", "2026-02-15"),  # active, not retained
                            purchase("c", "2025-06-01"), purchase("c", "2026-03-03")))  # not active before
    r = row(table)
    assert r["active_before"] == 2
    assert r["retention"] == pytest.approx(0.5)
    assert r["repeat_rate"] == pytest.approx(2 / 3)


def test_the_lookback_starts_lookback_days_before_decided_at():
    offers = log(decision("a"), decision("b"))
    table = kpis(offers, tx(purchase("a", "2025-12-01"), purchase("b", "2025-11-30 23:59")), lookback_days=90)
    assert row(table)["active_before"] == 1  # 2025-12-01 is exactly 90 days before 2026-03-01


def test_retention_is_nan_when_nobody_was_active_before():
    table = kpis(log(decision("a")), tx(purchase("a", "2026-03-02")))
    assert row(table)["active_before"] == 0
    assert np.isnan(row(table)["retention"])


def test_only_decisions_whose_window_has_fully_passed_are_measured():
    offers = log(decision("a", decided_at="2026-05-31"), decision("b", decided_at="2026-06-01"))
    table = kpis(offers, tx(purchase("a", "2026-06-01"), purchase("b", "2026-06-02")), as_of="2026-06-29")
    assert row(table)["customers"] == 1  # a's window ends 2026-06-30 = end of the as-of day; b's a day later


def test_as_of_defaults_to_the_day_of_the_last_transaction():
    offers = log(decision("a", decided_at="2026-03-01"), decision("b", decided_at="2026-03-02"))
    table = campaign_kpis(offers, tx(purchase("a", "2026-03-30 10:00")), window_days=30)
    assert row(table)["customers"] == 1


def test_a_customer_counts_once_at_the_earliest_measured_decision():
    offers = log(decision("a", decided_at="2026-03-10"), decision("a", decided_at="2026-03-01"))
    table = kpis(offers, tx(purchase("a", "2026-04-05")))  # in the window of 03-10 only
    assert row(table)["customers"] == 1
    assert row(table)["repeat_rate"] == 0.0


def test_no_measured_decision_gives_an_empty_table_with_the_columns():
    table = kpis(log(decision("a", decided_at="2026-06-20")), tx(purchase("a", "2026-06-21")))
    assert table.empty and tuple(table.columns) == CAMPAIGN_KPI_COLUMNS


def test_groups_other_than_treatment_and_control_are_left_out():
    table = kpis(log(decision("a"), decision("b", group="none")), tx(purchase("a", DAY)))
    assert set(table["group"]) == {"treatment"}


def test_string_and_time_zone_aware_decided_at_are_read():
    offers = log(decision("a")).assign(decided_at=["2026-03-01T00:00:00+00:00"])
    table = kpis(offers, tx(purchase("a", DAY)))
    assert row(table)["repeat_rate"] == 1.0


@pytest.mark.parametrize("col", ["customer_id", "decided_at", "offer_type", "group"])
def test_a_missing_offer_log_column_is_named(col):
    with pytest.raises(KPIInputError, match=f"offer_log: missing column '{col}'"):
        kpis(log(decision("a")).drop(columns=[col]), tx(purchase("a", DAY)))


def test_a_missing_transactions_column_is_named():
    with pytest.raises(KPIInputError, match=r"transactions: missing required column\(s\) \['amount'\]"):
        kpis(log(decision("a")), tx(purchase("a", DAY)).drop(columns=["amount"]))


def test_decided_at_that_is_no_date_is_named():
    with pytest.raises(KPIInputError, match="offer_log: column 'decided_at' is not a date"):
        kpis(log(decision("a")).assign(decided_at=["soon"]), tx(purchase("a", DAY)))


def test_missing_values_in_the_offer_log_are_named():
    with pytest.raises(KPIInputError, match="offer_log: column 'group' has 1 missing value"):
        kpis(log(decision("a")).assign(group=[None]), tx(purchase("a", DAY)))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_window_days_must_be_a_positive_whole_number(bad):
    with pytest.raises(KPIInputError, match="window_days must be a positive whole number of days"):
        kpis(log(decision("a")), tx(purchase("a", DAY)), window_days=bad)


def test_many_customers_match_a_per_customer_reference():
    rng = np.random.default_rng(0)
    n = 2000
    ids = [f"c{i}" for i in range(n)]
    offers = pd.DataFrame({"customer_id": ids, "decided_at": pd.Timestamp(DAY), "offer_type": "vip",
                           "group": rng.choice(["treatment", "control"], n)})
    times = pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.uniform(0, 120, 3 * n), unit="D")
    purchases = pd.DataFrame({"customer_id": rng.choice(ids, 3 * n), "timestamp": times,
                              "amount": rng.uniform(1, 50, 3 * n)})
    table = kpis(offers, purchases)
    start, end = pd.Timestamp(DAY), pd.Timestamp(DAY) + pd.Timedelta(days=30)
    inside = purchases[(purchases["timestamp"] >= start) & (purchases["timestamp"] < end)]
    spend = inside.groupby("customer_id")["amount"].sum().reindex(ids, fill_value=0.0)
    for group in ("treatment", "control"):
        members = offers.loc[offers["group"] == group, "customer_id"]
        r = row(table, "vip", group)
        assert r["repeat_rate"] == pytest.approx((spend[members] > 0).mean())
        assert r["revenue_per_customer"] == pytest.approx(spend[members].mean())
