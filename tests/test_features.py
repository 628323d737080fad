"""rebuy.features: rfm_summary equals lifetimes' summary_data_from_transaction_data; calibration split."""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rebuy.datasets import load_cdnow_master, load_cdnow_sample
from rebuy.features import (
    SUMMARY_COLUMNS,
    FeatureError,
    calibration_holdout_split,
    rfm_summary,
    spend_concentration,
    unit_days,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lifetimes.utils import summary_data_from_transaction_data

ONLINE_RETAIL = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail_ii.csv.gz"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
LIFETIMES_DATA = Path(str(resources.files("lifetimes") / "datasets"))
NUMERIC = ["frequency", "recency", "T", "monetary_value"]


def lifetimes_summary(tx: pd.DataFrame, as_of=None, time_unit: str = "weeks") -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = summary_data_from_transaction_data(
            tx,
            "customer_id",
            "timestamp",
            monetary_value_col="amount",
            observation_period_end=as_of,
            freq="D",
        )
    if time_unit == "weeks":
        ref[["recency", "T"]] = ref[["recency", "T"]] / 7
    ref.index = ref.index.astype("string")
    return ref.sort_index()


def assert_same_as_lifetimes(mine: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert mine.index.equals(ref.index)
    for c in ["frequency", "recency", "T"]:
        np.testing.assert_array_equal(mine[c].to_numpy(), ref[c].to_numpy(), err_msg=c)
    np.testing.assert_allclose(
        mine["monetary_value"].to_numpy(), ref["monetary_value"].to_numpy(), rtol=1e-12, atol=1e-9
    )


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return load_cdnow_sample()


@pytest.mark.parametrize("as_of", ["1997-09-30", None])
@pytest.mark.parametrize("time_unit", ["weeks", "days"])
def test_equals_lifetimes_on_cdnow(cdnow, as_of, time_unit):
    mine = rfm_summary(cdnow, as_of=as_of, time_unit=time_unit)
    assert_same_as_lifetimes(mine, lifetimes_summary(cdnow, as_of, time_unit))
    assert mine.attrs["time_unit"] == time_unit


def test_cdnow_master_equals_lifetimes():
    tx = load_cdnow_master()
    assert tx["customer_id"].nunique() == 23_570
    # the master file has many same-day lines, so collapsing matters here
    assert tx.duplicated(["customer_id", "timestamp"]).sum() > 1000
    assert_same_as_lifetimes(rfm_summary(tx, as_of="1997-09-30"), lifetimes_summary(tx, "1997-09-30"))


def test_cdnow_sample_is_the_papers_2357_customers(cdnow):
    summary = rfm_summary(cdnow, as_of="1997-09-30")
    assert len(summary) == 2357 and len(cdnow) == 6919
    published = pd.read_csv(LIFETIMES_DATA / "cdnow_customers_summary.csv")
    published.index = published["ID"].astype(str)
    published = published.loc[summary.index]
    np.testing.assert_array_equal(summary["frequency"].to_numpy(), published["frequency"].to_numpy())
    # the published file rounds to 2 decimals
    np.testing.assert_allclose(summary["recency"], published["recency"], atol=0.005 + 1e-12)
    np.testing.assert_allclose(summary["T"], published["T"], atol=0.005 + 1e-12)
    with_m = pd.read_csv(LIFETIMES_DATA / "cdnow_customers_summary_with_transactions.csv")
    with_m.index = with_m["ID"].astype(str)
    np.testing.assert_allclose(summary.loc[with_m.index, "monetary_value"], with_m["zbar"], atol=0.005 + 1e-9)


def test_equals_lifetimes_on_online_retail_ii():
    from rebuy.config import load_config
    from rebuy.data import load_transactions

    tx = load_transactions(ONLINE_RETAIL, load_config(CONFIG_DIR / "online_retail_ii.yaml"))
    assert tx["customer_id"].nunique() > 5000
    for as_of in [None, "2011-06-30"]:
        mine = rfm_summary(tx, as_of=as_of)
        assert_same_as_lifetimes(mine, lifetimes_summary(tx[["customer_id", "timestamp", "amount"]], as_of))
        assert mine["frequency"].max() > 100  # heavy buyers are present


def _tx(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.array([r[0] for r in rows], dtype="string"),
            "timestamp": pd.to_datetime([r[1] for r in rows]),
            "amount": [r[2] for r in rows],
        }
    )


def test_hand_worked_example():
    tx = _tx(
        [
            ("a", "2024-01-01 09:00", 10.0),
            ("a", "2024-01-01 18:00", 5.0),  # same day: one purchase worth 15
            ("a", "2024-01-08 10:00", 20.0),
            ("a", "2024-01-15 10:00", 4.0),
            ("a", "2024-01-15 11:00", 6.0),  # same day: 10
            ("b", "2024-01-10 12:00", 7.0),  # one-time buyer
            ("c", "2024-01-29 23:59", 3.0),  # first purchase on as_of: T = 0
            ("c", "2024-02-05 08:00", 100.0),  # after as_of: dropped
        ]
    )
    s = rfm_summary(tx, as_of="2024-01-29", time_unit="days")
    assert list(s.index) == ["a", "b", "c"]
    a, b, c = (s.loc[k] for k in "abc")
    assert (a["frequency"], a["recency"], a["T"], a["monetary_value"]) == (2, 14, 28, 15.0)
    assert (a["purchase_days"], a["total_spend"]) == (3, 45.0)
    assert a["first_purchase"] == pd.Timestamp("2024-01-01") and a["last_purchase"] == pd.Timestamp(
        "2024-01-15"
    )
    assert (b["frequency"], b["recency"], b["T"], b["monetary_value"], b["total_spend"]) == (
        0,
        0,
        19,
        0.0,
        7.0,
    )
    assert (c["frequency"], c["T"], c["purchase_days"], c["total_spend"]) == (0, 0, 1, 3.0)
    weeks = rfm_summary(tx, as_of="2024-01-29")
    np.testing.assert_allclose(weeks["T"] * 7, s["T"])
    np.testing.assert_allclose(weeks["recency"] * 7, s["recency"])
    assert s.attrs["as_of"] == pd.Timestamp("2024-01-29")


def test_time_zone_aware_timestamps_and_as_of_count_utc_days():
    # rebuy.dates: aware values are converted to UTC, so a day boundary is UTC midnight
    tx = _tx([("a", "2024-01-01 09:00", 10.0), ("a", "2024-01-02 21:00", 5.0)])
    tx["timestamp"] = tx["timestamp"].dt.tz_localize("America/New_York")  # 14:00 and 02:00 (+1 day) UTC
    s = rfm_summary(tx, time_unit="days")
    assert (s.loc["a", "recency"], s.loc["a", "T"], s.loc["a", "purchase_days"]) == (2, 2, 2)
    assert s.loc["a", "last_purchase"] == pd.Timestamp("2024-01-03")
    early = rfm_summary(tx, as_of="2024-01-03T01:00+02:00", time_unit="days")  # 2024-01-02 23:00 UTC
    assert (early.loc["a", "frequency"], early.loc["a", "T"], early.loc["a", "total_spend"]) == (0, 1, 10.0)
    assert list(s.columns) == list(SUMMARY_COLUMNS) and "orders" not in s.columns


def test_unsorted_input_and_default_as_of(cdnow):
    shuffled = cdnow.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(rfm_summary(shuffled), rfm_summary(cdnow))
    assert rfm_summary(cdnow).attrs["as_of"] == pd.Timestamp("1998-06-30")


def test_bad_input_errors(cdnow):
    with pytest.raises(FeatureError, match="amount"):
        rfm_summary(cdnow.drop(columns="amount"))
    bad = cdnow.copy()
    bad.loc[3, "amount"] = np.nan
    with pytest.raises(FeatureError, match="'amount'"):
        rfm_summary(bad)
    bad = cdnow.copy()
    bad["timestamp"] = bad["timestamp"].astype(str)
    with pytest.raises(FeatureError, match="'timestamp'"):
        rfm_summary(bad)
    with pytest.raises(FeatureError, match="time_unit"):
        rfm_summary(cdnow, time_unit="months")
    with pytest.raises(FeatureError, match="no transactions on or before"):
        rfm_summary(cdnow, as_of="1990-01-01")
    with pytest.raises(FeatureError, match="as_of 'not a date': not a date"):
        rfm_summary(cdnow, as_of="not a date")
    assert unit_days("weeks") == 7.0 and unit_days("days") == 1.0  # re-exported from rebuy.dates


def test_calibration_holdout_split_cdnow(cdnow):
    split = calibration_holdout_split(cdnow, "1997-09-30", "1998-06-30")
    cal = rfm_summary(cdnow, as_of="1997-09-30")
    pd.testing.assert_frame_equal(split[cal.columns], cal)
    # Fader, Hardie & Lee (2005): 1,882 repeat transactions in weeks 40-78
    assert split["frequency_holdout"].sum() == 1882
    assert (split["duration_holdout"] == 39.0).all()
    # holdout counts/values by hand from the transactions
    days = cdnow.assign(day=cdnow["timestamp"].dt.normalize())
    hold = days[(days["day"] > "1997-09-30") & (days["day"] <= "1998-06-30")]
    per_day = hold.groupby(["customer_id", "day"])["amount"].sum()
    count = per_day.groupby(level=0).size().reindex(split.index, fill_value=0)
    spend = per_day.groupby(level=0).sum().reindex(split.index, fill_value=0.0)
    np.testing.assert_array_equal(split["frequency_holdout"], count.astype(float))
    np.testing.assert_allclose(split["total_spend_holdout"], spend)
    mean = (spend / count.where(count > 0)).fillna(0.0)
    np.testing.assert_allclose(split["monetary_value_holdout"], mean)


def test_calibration_holdout_split_hand_example():
    tx = _tx(
        [
            ("a", "2024-01-01", 10.0),
            ("a", "2024-01-05", 20.0),
            ("a", "2024-01-12", 30.0),
            ("a", "2024-01-12", 12.0),
            ("a", "2024-01-20", 1.0),
            ("b", "2024-01-11", 5.0),  # first purchase in the holdout: not a calibration customer
        ]
    )
    s = calibration_holdout_split(tx, "2024-01-10", "2024-01-17", time_unit="days")
    assert list(s.index) == ["a"]
    row = s.loc["a"]
    assert (row["frequency"], row["T"], row["frequency_holdout"], row["monetary_value_holdout"]) == (
        1,
        9,
        1,
        42.0,
    )
    assert (row["duration_holdout"], row["total_spend_holdout"]) == (7.0, 42.0)
    with pytest.raises(FeatureError, match="holdout_end"):
        calibration_holdout_split(tx, "2024-01-10", "2024-01-10")


def test_spend_concentration_flags_large_order_customers():
    # hand-made: 18 consumers ordering 30 a time, 2 businesses ordering 3,000 a time
    summary = pd.DataFrame({"purchase_days": [2] * 18 + [5, 5], "total_spend": [60.0] * 18 + [15_000.0, 15_000.0]})
    c = spend_concentration(summary)
    assert c["median_order_value"] == 30.0
    assert c["large_order_customers_share"] == pytest.approx(0.1)
    assert c["large_order_revenue_share"] == pytest.approx(30_000 / 31_080)
    assert c["top_1pct_revenue_share"] == pytest.approx(15_000 / 31_080)
    assert "wholesalers" in c["finding"] and "97% of revenue" in c["finding"]
    consumers = spend_concentration(summary.iloc[:18])
    assert consumers["large_order_customers_share"] == 0.0 and consumers["finding"] is None
