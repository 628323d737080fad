"""KPIs on small hand-made transactions, each answer worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rebuy import kpis
from rebuy.kpis import KPIInputError


def make_tx(rows: list[tuple]) -> pd.DataFrame:
    """rows: (customer_id, timestamp, amount[, order_id]) -> canonical transactions frame."""
    out = []
    for r in rows:
        cid, ts, amount = r[0], pd.Timestamp(r[1]), float(r[2])
        oid = r[3] if len(r) > 3 else f"{cid}_{ts:%Y%m%d%H%M%S}"
        out.append((cid, oid, ts, amount))
    df = pd.DataFrame(out, columns=["customer_id", "order_id", "timestamp", "amount"])
    df["customer_id"] = df["customer_id"].astype("string")
    df["order_id"] = df["order_id"].astype("string")
    df["timestamp"] = df["timestamp"].astype("datetime64[ns]")
    return df.sort_values(["customer_id", "timestamp"], ignore_index=True)


def crr_textbook() -> pd.DataFrame:
    """Textbook CRR: 200 customers at the start of 2021, 180 at the end, 40 new -> (180 - 40) / 200.

    Window 365 days, period [2021-01-01, 2022-01-01):
    - s0..s199 bought on 2020-06-01 -> the 200 customers at the start (S);
    - s0..s139 bought again on 2021-06-01 -> still customers at the end;
    - n0..n39 first bought on 2021-03-01 -> 40 new customers, customers at the end;
    - o0..o29 bought only on 2019-06-01 -> lapsed: neither in S nor in E.
    E = 140 + 40 = 180, N = 40, S = 200. Every purchase is worth 10.
    """
    rows = [(f"s{i}", "2020-06-01", 10) for i in range(200)]
    rows += [(f"s{i}", "2021-06-01", 10) for i in range(140)]
    rows += [(f"n{i}", "2021-03-01", 10) for i in range(40)]
    rows += [(f"o{i}", "2019-06-01", 10) for i in range(30)]
    return make_tx(rows)


def test_crr_textbook_example():
    tx = crr_textbook()
    c = kpis.retention_counts(tx, "2021-01-01", "2022-01-01")
    assert (c["customers_start"], c["customers_end"], c["new_customers"]) == (200, 180, 40)
    # (180 - 40) / 200 = 0.70
    assert kpis.customer_retention_rate(tx, "2021-01-01", "2022-01-01") == pytest.approx(0.70)
    # lost: s140..s199 = 60 of 200 -> 0.30
    assert kpis.churn_rate(tx, "2021-01-01", "2022-01-01") == pytest.approx(0.30)
    # 140 of the 200 bought again in 2021
    assert kpis.repeat_purchase_rate(tx, "2021-01-01", "2022-01-01") == pytest.approx(0.70)
    assert len(kpis.customers_at(tx, "2021-01-01")) == 200


def test_repeat_purchase_rate_270_of_500():
    # 500 customers active at 2021-01-01 (bought 2020-09-15); 270 bought again in the period, the
    # first of them exactly at period_start (counts), 230 did not, one of whom bought exactly at
    # period_end (excluded: the period is half-open). 50 new customers do not enter the denominator.
    # -> 270 / 500 = 0.54
    rows = [(f"c{i}", "2020-09-15", 20) for i in range(500)]
    rows += [("c0", "2021-01-01 00:00:00", 5)]
    rows += [(f"c{i}", "2021-02-10", 20) for i in range(1, 270)]
    rows += [("c499", "2021-07-01 00:00:00", 20)]
    rows += [(f"new{i}", "2021-03-01", 20) for i in range(50)]
    tx = make_tx(rows)
    assert kpis.repeat_purchase_rate(tx, "2021-01-01", "2021-07-01", active_window_days=365) == pytest.approx(0.54)


def test_crr_counts_lapsed_returners_as_retained():
    # Window 90 days, period [2021-01-01, 2021-04-01) (90 days).
    # A: 2020-12-01 (in S) and 2021-02-01 (in E).  B: 2020-12-15 (in S), nothing after -> lost.
    # C: 2020-05-01 (lapsed, not in S), returns 2021-03-01 -> in E, not new.
    # D, F: first purchases 2021-01-10 and 2021-03-30 -> new, in E.
    # S = 2, E = {A, C, D, F} = 4, N = 2 -> CRR = (4 - 2) / 2 = 1.0; churn = 1/2; repeat = 1/2.
    tx = make_tx([
        ("A", "2020-12-01", 1), ("A", "2021-02-01", 1), ("B", "2020-12-15", 1),
        ("C", "2020-05-01", 1), ("C", "2021-03-01", 1), ("D", "2021-01-10", 1), ("F", "2021-03-30", 1),
    ])
    args = (tx, "2021-01-01", "2021-04-01", 90)
    assert kpis.customer_retention_rate(*args) == pytest.approx(1.0)
    assert kpis.churn_rate(*args) == pytest.approx(0.5)
    assert kpis.repeat_purchase_rate(*args) == pytest.approx(0.5)


def test_crr_window_shorter_than_period_ignores_lapsed_new_customers():
    # Window 30 days, period [2021-01-01, 2021-04-01). S = {A, B} (bought 2020-12-20 / 12-25).
    # A buys 2021-03-15 -> in E.  X new on 2021-01-10 only -> lapsed again, not in E.
    # Y new on 2021-03-20 -> in E.  E = {A, Y} = 2; new customers still in E = 1 (Y).
    # CRR = (2 - 1) / 2 = 0.5 (the literal E - N with N = 2 would give 0).
    tx = make_tx([
        ("A", "2020-12-20", 1), ("A", "2021-03-15", 1), ("B", "2020-12-25", 1),
        ("X", "2021-01-10", 1), ("Y", "2021-03-20", 1),
    ])
    c = kpis.retention_counts(tx, "2021-01-01", "2021-04-01", 30)
    assert c == {"customers_start": 2, "customers_end": 2, "new_customers": 1, "retained": 1,
                 "repeat_buyers": 1, "lost": 1}
    assert kpis.customer_retention_rate(tx, "2021-01-01", "2021-04-01", 30) == pytest.approx(0.5)


def test_monthly_retention_by_hand():
    # Jan: a (twice), b, c, d   Feb: a, b, e   Mar: nobody   Apr: a   May: a, e
    # Feb: returning {a, b} / Jan's 4 = 0.5;  Mar: 0 / Feb's 3 = 0.0;
    # Apr: previous month empty -> left out;  May: returning {a} / Apr's 1 = 1.0
    tx = make_tx([
        ("a", "2021-01-03", 1), ("a", "2021-01-20", 1), ("b", "2021-01-05", 1), ("c", "2021-01-31 23:00", 1),
        ("d", "2021-01-10", 1), ("a", "2021-02-01", 1), ("b", "2021-02-28", 1), ("e", "2021-02-14", 1),
        ("a", "2021-04-10", 1), ("a", "2021-05-02", 1), ("e", "2021-05-20", 1),
    ])
    m = kpis.monthly_retention(tx)
    assert [str(p) for p in m.index] == ["2021-02", "2021-03", "2021-05"]
    assert m["previous_customers"].tolist() == [4, 3, 1]
    assert m["returning_customers"].tolist() == [2, 0, 1]
    assert m["customers"].tolist() == [3, 0, 2]
    np.testing.assert_allclose(m["retention_rate"], [0.5, 0.0, 1.0])
    # with period_end 2021-08-01: May's 2 customers, nobody in June -> June 0/2 = 0.0; July left out
    m2 = kpis.monthly_retention(tx, period_end="2021-08-01")
    assert [str(p) for p in m2.index] == ["2021-02", "2021-03", "2021-05", "2021-06"]
    assert m2["retention_rate"].iloc[-1] == 0.0


def revenue_tx() -> pd.DataFrame:
    # a: order o1 = two lines 10 + 5 = 15 on 2021-01-05, order o2 = 30 on 2021-02-01
    # b: order o3 = 45 on 2021-01-20
    # c: order o4 = 100 on 2020-12-31 (before the period)
    # d: order o5 = 20 on 2020-11-01 (before), order o6 = 60 on 2021-02-10
    return make_tx([
        ("a", "2021-01-05", 10, "o1"), ("a", "2021-01-05", 5, "o1"), ("a", "2021-02-01", 30, "o2"),
        ("b", "2021-01-20", 45, "o3"), ("c", "2020-12-31", 100, "o4"),
        ("d", "2020-11-01", 20, "o5"), ("d", "2021-02-10", 60, "o6"),
    ])


def test_frequency_order_value_revenue_by_hand():
    tx = revenue_tx()
    p = ("2021-01-01", "2021-03-01")
    # period: orders o1, o2, o3, o6 = 4; buyers a, b, d = 3; revenue 15 + 30 + 45 + 60 = 150
    assert kpis.purchase_frequency(tx, *p) == pytest.approx(4 / 3)
    assert kpis.average_order_value(tx, *p) == pytest.approx(150 / 4)  # 37.5
    assert kpis.revenue_per_customer(tx, *p) == pytest.approx(50.0)
    # all data: 6 orders, 4 customers, revenue 270
    assert kpis.purchase_frequency(tx) == pytest.approx(1.5)
    assert kpis.average_order_value(tx) == pytest.approx(45.0)
    assert kpis.revenue_per_customer(tx) == pytest.approx(67.5)


def test_repeat_revenue_share_by_hand():
    tx = revenue_tx()
    # Repeat customers up to 2021-03-01: a (o1, o2) and d (o5 before the period, o6 in it); b has one order.
    # Period revenue 150, of which a 45 + d 60 = 105 -> 0.7
    assert kpis.repeat_revenue_share(tx, "2021-01-01", "2021-03-01") == pytest.approx(0.7)
    # Only January: a has just o1 by 2021-02-01, d just o5 -> no repeat customer bought in January.
    # January revenue = 15 + 45 = 60, repeat revenue 0 -> 0.0
    assert kpis.repeat_revenue_share(tx, "2021-01-01", "2021-02-01") == pytest.approx(0.0)


def test_cohort_retention_by_hand():
    # Jan cohort: a (Jan, Feb, Apr), b (Jan, Mar), c (Jan)   -> [3, 1 (a), 1 (b), 1 (a)]
    # Feb cohort: d (Feb, Mar), e (Feb)                        -> [2, 1 (d), 0, 0]
    # Apr cohort: f (Apr)                                      -> [1, 0, 0, 0]
    tx = make_tx([
        ("a", "2021-01-02", 1), ("a", "2021-01-25", 1), ("a", "2021-02-03", 1), ("a", "2021-04-04", 1),
        ("b", "2021-01-09", 1), ("b", "2021-03-09", 1), ("c", "2021-01-30", 1),
        ("d", "2021-02-11", 1), ("d", "2021-03-11", 1), ("e", "2021-02-20", 1), ("f", "2021-04-28", 1),
    ])
    counts, pct = kpis.cohort_retention(tx)
    assert [str(p) for p in counts.index] == ["2021-01", "2021-02", "2021-04"]
    assert counts.columns.tolist() == [0, 1, 2, 3]
    assert counts.to_numpy().tolist() == [[3, 1, 1, 1], [2, 1, 0, 0], [1, 0, 0, 0]]
    np.testing.assert_allclose(pct.to_numpy(), [[100, 100 / 3, 100 / 3, 100 / 3], [100, 50, 0, 0], [100, 0, 0, 0]])
    assert not pct.isna().any().any()


def test_cohort_retention_matches_naive_loop():
    rng = np.random.default_rng(3)
    n = 400
    tx = make_tx([
        (f"u{rng.integers(60)}", pd.Timestamp("2021-01-01") + pd.Timedelta(days=int(d)), 1.0)
        for d in rng.integers(0, 300, n)
    ])
    counts, _ = kpis.cohort_retention(tx, freq="M")
    month = tx["timestamp"].dt.to_period("M")
    expected: dict[tuple, set] = {}
    for cid in tx["customer_id"].unique():
        months = sorted(set(month[tx["customer_id"] == cid]))
        for m in months:
            expected.setdefault((months[0], (m - months[0]).n), set()).add(cid)
    for (cohort, offset), ids in expected.items():
        assert counts.loc[cohort, offset] == len(ids)
    assert counts.to_numpy().sum() == sum(len(v) for v in expected.values())


def test_channel_metrics_by_hand():
    # orders: a 2, b 1, c 3, d 2, e 1.  a, b email; c social; d has no channel, e is not in the table.
    tx = make_tx([
        ("a", "2021-01-01", 10), ("a", "2021-02-01", 10), ("b", "2021-01-05", 30),
        ("c", "2021-01-01", 5), ("c", "2021-01-02", 5), ("c", "2021-01-03", 5),
        ("d", "2021-03-01", 1), ("d", "2021-03-02", 1), ("e", "2021-03-03", 7),
    ])
    customers = pd.DataFrame({
        "customer_id": pd.array(["a", "b", "c", "d", "z"], dtype="string"),
        "acquisition_channel": ["email", "email", "social", None, "email"],
    })
    clv = pd.Series([100.0, 50.0, 300.0, 20.0], index=["a", "b", "c", "d"])  # e missing -> 0
    m = kpis.channel_metrics(tx, customers, clv=clv)
    # email: a, b -> 2 buyers, 1 repeat (a), rate 0.5, revenue 50, CLV mean 75, total 150 (z never bought)
    assert m.loc["email"].to_dict() == pytest.approx({
        "customers": 2, "repeat_customers": 1, "repeat_purchase_rate": 0.5, "orders": 3, "revenue": 50.0,
        "revenue_per_customer": 25.0, "mean_clv": 75.0, "total_clv": 150.0})
    # social: c -> 1 buyer, repeat, rate 1.0, revenue 15, CLV 300
    assert m.loc["social", "repeat_purchase_rate"] == 1.0
    assert m.loc["social", "mean_clv"] == 300.0
    # unknown: d (no channel) and e (not in the table) -> 2 buyers, 1 repeat (d), CLV (20 + 0) / 2 = 10
    assert m.loc["unknown", ["customers", "repeat_customers", "mean_clv"]].tolist() == [2, 1, 10.0]
    assert m.index.name == "acquisition_channel"
    with pytest.raises(KPIInputError, match="campaign"):
        kpis.channel_metrics(tx, customers, by="campaign")


def test_funnel_by_hand():
    f = kpis.funnel({"visited": 10_000, "viewed": 4_000, "carted": 800, "bought": 200})
    # step: 4000/10000 = 0.4, 800/4000 = 0.2, 200/800 = 0.25; overall: 0.4, 0.08, 0.02
    np.testing.assert_allclose(f["step_conversion"], [1.0, 0.4, 0.2, 0.25])
    np.testing.assert_allclose(f["overall_conversion"], [1.0, 0.4, 0.08, 0.02])
    np.testing.assert_allclose(f["drop_off"], [0, 6000, 3200, 600])
    assert f.index.tolist() == ["visited", "viewed", "carted", "bought"]
    # an empty middle stage gives 0, not NaN
    g = kpis.funnel(pd.Series([10, 0, 0], index=["a", "b", "c"]))
    assert g["step_conversion"].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(KPIInputError, match="first stage"):
        kpis.funnel({"a": 0, "b": 0})
    with pytest.raises(KPIInputError, match=">= 0"):
        kpis.funnel({"a": 10, "b": -1})


def test_kpi_summary_textbook():
    tx = crr_textbook()
    later = make_tx([("s0", "2022-02-01", 999)])  # after as_of: must be ignored
    s = kpis.kpi_summary(pd.concat([tx, later], ignore_index=True), as_of="2021-12-31")
    assert (s["period_start"], s["period_end"]) == ("2021-01-01", "2022-01-01")
    assert s["customer_retention_rate"] == pytest.approx(0.70)
    assert s["repeat_purchase_rate"] == pytest.approx(0.70)
    assert s["churn_rate"] == pytest.approx(0.30)
    # period: 140 repeat + 40 new orders of 10 each -> 180 orders, 180 buyers, revenue 1800
    assert (s["orders"], s["buyers"], s["revenue"]) == (180, 180, 1800.0)
    assert s["average_order_value"] == pytest.approx(10.0)
    assert s["purchase_frequency"] == pytest.approx(1.0)
    # repeat customers (two orders) are s0..s139: 1400 of 1800
    assert s["repeat_revenue_share"] == pytest.approx(1400 / 1800)
    assert s["customers_total"] == 270
    # last complete month is 2021-12; nobody bought in November, so its retention is undefined (None)
    assert (s["monthly_retention_month"], s["monthly_retention_last"]) == ("2021-12", None)
    assert all(v is None or np.isfinite(v) for v in s.values() if not isinstance(v, str))


def test_kpi_summary_without_history_gives_none_not_nan():
    tx = make_tx([("a", "2021-01-05", 10), ("b", "2021-01-06", 20)])
    s = kpis.kpi_summary(tx)
    assert s["as_of"] == "2021-01-06"
    assert s["customers_start"] == 0 and s["customer_retention_rate"] is None
    assert s["revenue"] == 30.0 and s["average_order_value"] == 15.0


def test_kpi_summary_consistent_on_random_data():
    rng = np.random.default_rng(0)
    n = 50_000
    tx = pd.DataFrame({
        "customer_id": pd.array(rng.integers(0, 20_000, n).astype(str), dtype="string"),
        "timestamp": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 730 * 24, n), unit="h"),
        "amount": rng.gamma(2.0, 15.0, n),
    })
    tx["order_id"] = pd.array(np.arange(n).astype(str), dtype="string")
    s = kpis.kpi_summary(tx, as_of="2021-06-30", period_days=182)
    p = (s["period_start"], s["period_end"])
    assert s["average_order_value"] * s["purchase_frequency"] == pytest.approx(s["revenue_per_customer"])
    assert s["repeat_purchase_rate"] == pytest.approx(kpis.repeat_purchase_rate(tx, *p))
    assert s["customer_retention_rate"] == pytest.approx(kpis.customer_retention_rate(tx, *p))
    assert s["revenue_per_customer"] == pytest.approx(kpis.revenue_per_customer(tx, *p))
    # as_of 2021-06-30 closes June: June's returning customers / May's customers
    june = kpis.monthly_retention(tx).loc[pd.Period("2021-06", "M")]
    assert s["monthly_retention_month"] == "2021-06"
    assert s["monthly_retention_last"] == pytest.approx(june["returning_customers"] / june["previous_customers"])
    s2 = kpis.kpi_summary(tx, as_of="2021-06-29", period_days=182)  # June not over: May is reported
    assert s2["monthly_retention_month"] == "2021-05"
    # independent count of the start base with plain pandas
    start = pd.Timestamp(p[0])
    in_window = tx[(tx["timestamp"] >= start - pd.Timedelta(days=365)) & (tx["timestamp"] < start)]
    assert s["customers_start"] == in_window["customer_id"].nunique()


def test_bad_input_errors():
    tx = crr_textbook()
    with pytest.raises(KPIInputError, match="missing required column.*timestamp"):
        kpis.churn_rate(tx.drop(columns="timestamp"), "2021-01-01", "2022-01-01")
    with pytest.raises(KPIInputError, match="'timestamp' must be datetime64"):
        kpis.monthly_retention(tx.assign(timestamp=tx["timestamp"].astype(str)))
    with pytest.raises(KPIInputError, match="must be after period_start"):
        kpis.customer_retention_rate(tx, "2022-01-01", "2021-01-01")
    with pytest.raises(KPIInputError, match="no customers active"):
        kpis.customer_retention_rate(tx, "2010-01-01", "2011-01-01")
    with pytest.raises(KPIInputError, match="no purchases in the period"):
        kpis.average_order_value(tx, "2030-01-01", "2031-01-01")
    with pytest.raises(KPIInputError, match="'customer_id' has 1 missing"):
        kpis.cohort_retention(tx.assign(customer_id=pd.array([None] + ["x"] * (len(tx) - 1), dtype="string")))
    with pytest.raises(KPIInputError, match="'amount' has 1 NaN"):
        kpis.average_order_value(tx.assign(amount=[np.nan] + [1.0] * (len(tx) - 1)))


def test_dates_follow_rebuy_dates():
    tx = crr_textbook()
    with pytest.raises(KPIInputError, match=r"^period_start 'soon': not a date \("):
        kpis.churn_rate(tx, "soon", "2022-01-01")
    with pytest.raises(KPIInputError, match="^period_end: missing date$"):
        kpis.average_order_value(tx, "2021-01-01", pd.NaT)
    with pytest.raises(KPIInputError, match="^as_of 'later': not a date"):
        kpis.kpi_summary(tx, as_of="later")
    # an aware bound is the same instant in UTC
    naive = kpis.churn_rate(tx, "2021-01-01", "2022-01-01")
    assert kpis.churn_rate(tx, "2021-01-01T02:00+02:00", "2022-01-01T00:00Z") == naive


def test_period_coverage_flags_partial_months():
    tx = pd.DataFrame({"customer_id": ["a", "b", "a"],
                       "timestamp": pd.to_datetime(["2011-01-15 09:00", "2011-02-03 10:00", "2011-03-10 14:00"])})
    cov = kpis.period_coverage(tx)
    assert [str(p) for p in cov.index] == ["2011-01", "2011-02", "2011-03"]
    assert cov["days"].tolist() == [31, 28, 31]
    assert cov["days_observed"].tolist() == [17, 28, 10]  # data from the 15th; as-of the 10th included
    assert cov["partial"].tolist() == [True, False, True]
    assert cov["start"].iloc[1] == pd.Timestamp("2011-02-01") and cov["end"].iloc[1] == pd.Timestamp("2011-03-01")
    full = kpis.period_coverage(tx, as_of="2011-03-31")
    assert full["partial"].tolist() == [True, False, False]
    with pytest.raises(KPIInputError, match="before the first purchase"):
        kpis.period_coverage(tx, as_of="2010-12-01")
    with pytest.raises(KPIInputError, match="not a pandas period frequency"):
        kpis.period_coverage(tx, freq="bogus")
