"""Bad input that used to be accepted silently (issue 14): repeated column names, lines dated in the
future and absurd line values are refused or dropped with a count and one warning."""

from __future__ import annotations

import datetime as dt
import gzip
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rebuy.data.transactions as transactions
from rebuy.data import DataError, load_transactions, read_table

HEADER_TWICE = "customer_id,timestamp,amount,amount\nA,2024-01-01,10,20\nB,2024-01-02,5,6\n"


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------------ repeated column names
@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz"])
def test_csv_with_a_repeated_column_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    data = HEADER_TWICE.encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(DataError) as err:
        load_transactions(path)
    assert _one_line(err) == f"{path}: column 'amount' appears 2 times; rename or drop the extra column(s)"


def test_csv_with_a_semicolon_and_three_repeats_names_each(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("customer_id;price;price;price;day;day\nA;1;2;3;2024-01-01;2024-01-01\n")
    with pytest.raises(DataError, match=r"column 'price' appears 3 times, 'day' appears 2 times;"):
        read_table(path, separator=";")


def test_csv_with_a_column_named_like_a_renamed_repeat_is_read(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("customer_id,timestamp,amount.1,amount\nA,2024-01-01,10,20\nB,2024-01-02,5,6\n")
    assert read_table(path).columns.tolist() == ["customer_id", "timestamp", "amount.1", "amount"]


def test_parquet_file_and_directory_with_a_repeated_column_are_refused(tmp_path: Path) -> None:
    table = pa.table([pa.array(["A", "B"]), pa.array(["2024-01-01"] * 2), pa.array([1.0, 2.0]), pa.array([3.0, 4.0])],
                     names=["customer_id", "timestamp", "amount", "amount"])
    file = tmp_path / "t.parquet"
    pq.write_table(table, file)
    (tmp_path / "dir").mkdir()
    pq.write_table(table, tmp_path / "dir" / "part-0.parquet")
    for path in (file, tmp_path / "dir"):
        with pytest.raises(DataError) as err:
            load_transactions(path)
        assert _one_line(err) == f"{path}: column 'amount' appears 2 times; rename or drop the extra column(s)"


def test_duckdb_query_with_a_repeated_column_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE sales AS SELECT 'A' AS customer_id, DATE '2024-01-01' AS timestamp, 10.0 AS amount")
    con.close()
    spec = f"duckdb:{db}::SELECT customer_id, timestamp, amount, amount * 2 AS amount FROM sales"
    with pytest.raises(DataError) as err:
        load_transactions(spec)
    assert _one_line(err) == f"duckdb:{db}: column 'amount' appears 2 times; rename or drop the extra column(s)"


# ------------------------------------------------------------------------------ lines dated in the future
def _shop(n_customers: int = 100, seed: int = 0) -> pd.DataFrame:
    """Four lines a customer in 2024, 2% of them (8) dated 2031-06-01 (a typo of the year)."""
    rng = np.random.default_rng(seed)
    n = 4 * n_customers
    ts = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 150, n), unit="D")
    df = pd.DataFrame({"customer_id": np.repeat([f"c{i}" for i in range(n_customers)], 4),
                       "timestamp": ts, "quantity": 1, "price": rng.lognormal(3, 0.5, n).round(2)})
    df.loc[rng.choice(n, n // 50, replace=False), "timestamp"] = pd.Timestamp("2031-06-01")
    return df


@pytest.fixture
def today_2024_06_30(monkeypatch: pytest.MonkeyPatch) -> pd.Timestamp:
    day = pd.Timestamp("2024-06-30")
    monkeypatch.setattr(transactions, "today", lambda: day)
    return day


def test_lines_dated_after_today_are_dropped_counted_and_warned(today_2024_06_30, caplog) -> None:
    shop = _shop()
    with caplog.at_level("WARNING", logger="rebuy.data"):
        df, rep = load_transactions(shop, with_report=True)
    assert rep.future_dated == 8 and rep.after_as_of == 0 and rep.rows_out == len(shop) - 8 == len(df)
    assert rep.last_timestamp < pd.Timestamp("2024-07-01") and rep.as_of is None
    assert rep.to_dict()["future_dated"] == 8
    assert "dated after today 8" in rep.short()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["<DataFrame>: dropped 8 line(s) dated after today (2024-06-30), the latest on 2031-06-01; "
                      "check the timestamp column or the machine's clock, or pass an as-of date"]


def test_a_line_late_on_today_is_kept(today_2024_06_30) -> None:
    shop = _shop().iloc[:8].copy()
    shop.loc[shop.index[0], "timestamp"] = pd.Timestamp("2024-06-30 23:59:59")
    shop.loc[shop.index[1], "timestamp"] = pd.Timestamp("2024-07-01 00:00:00")
    _, rep = load_transactions(shop, with_report=True)
    assert rep.future_dated == 1 and rep.last_timestamp == pd.Timestamp("2024-06-30 23:59:59")


def test_a_given_as_of_decides_the_cut_without_a_warning(today_2024_06_30, caplog) -> None:
    shop = _shop()
    with caplog.at_level("WARNING", logger="rebuy.data"):
        _, before = load_transactions(shop, as_of="2024-03-31", with_report=True)
        _, later = load_transactions(shop, as_of="2031-12-31", with_report=True)  # explicit: kept
    assert before.future_dated == 0 and before.after_as_of > 8
    assert later.future_dated == later.after_as_of == 0 and later.last_timestamp == pd.Timestamp("2031-06-01")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_today_is_the_machine_date() -> None:
    assert transactions.today() == pd.Timestamp(dt.date.today())


# ------------------------------------------------------------------------------ absurd line values
def _lines(n: int = 2000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "customer_id": [f"c{i % 200}" for i in range(n)],
        "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 150, n), unit="D"),
        "quantity": rng.integers(1, 20, n), "price": rng.lognormal(1.5, 1.0, n).round(2),
    })


def test_a_line_priced_1e300_is_quarantined_counted_and_warned(today_2024_06_30, caplog) -> None:
    lines = _lines()
    lines.loc[7, ["quantity", "price"]] = [1, 1e300]
    with caplog.at_level("WARNING", logger="rebuy.data"):
        df, rep = load_transactions(lines, with_report=True)
    assert rep.absurd_value == 1 and rep.rows_out == len(lines) - 1 == len(df)
    assert df["amount"].max() < 1e6 and (df["customer_id"] == "c7").sum() == 9  # c7's other lines stay
    assert rep.to_dict()["absurd_value"] == 1 and "absurd value 1" in rep.short()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1
    assert re.fullmatch(r"<DataFrame>: quarantined 1 line\(s\) worth more than \d+\.\d\d \(1000 x the 99\.9th "
                        r"percentile line value; raise data\.max_line_value_multiple if such lines are real\); "
                        r"the largest 1e\+300 at index 7", warned[0])


def test_absurd_amounts_in_a_small_csv_are_quarantined(tmp_path: Path, today_2024_06_30) -> None:
    path = tmp_path / "t.csv"
    path.write_text("customer_id,timestamp,amount\nA,2024-01-01,10\nA,2024-01-05,12.5\nB,2024-01-02,8\n"
                    "B,2024-01-09,1e300\nB,2024-02-01,20\n")
    df, rep = load_transactions(path, with_report=True)
    assert rep.absurd_value == 1 and df["amount"].tolist() == [10.0, 12.5, 8.0, 20.0]


def test_one_customer_history_keeps_its_one_big_order(today_2024_06_30) -> None:
    history = pd.DataFrame({"customer_id": ["A", "A", "A"], "timestamp": ["2024-01-01", "2024-02-01", "2024-03-01"],
                            "amount": [2.0, 2.5, 9_000.0]})
    df, rep = load_transactions(history, with_report=True, min_customers=1)
    assert rep.absurd_value == 0 and df["amount"].tolist() == [2.0, 2.5, 9_000.0]


def test_the_ceiling_is_a_multiple_that_can_be_changed_or_switched_off(today_2024_06_30, monkeypatch, caplog) -> None:
    lines = _lines()
    big = float((lines["quantity"] * lines["price"]).max()) * 50  # far above the rest, below 1000 x
    lines.loc[3, ["quantity", "price"]] = [1, big]
    from rebuy.config import Config

    def multiple(m: float) -> Config:
        return Config.model_validate({"data": {"max_line_value_multiple": m}})

    assert load_transactions(lines, with_report=True)[1].absurd_value == 0
    assert load_transactions(lines, multiple(10.0), with_report=True)[1].absurd_value == 1
    assert load_transactions(lines, multiple(0.0), with_report=True)[1].absurd_value == 0  # off: only MAX_LINE_VALUE
    lines.loc[5, ["quantity", "price"]] = [2, 1e300]
    caplog.clear()
    with caplog.at_level("WARNING", logger="rebuy.data"):
        assert load_transactions(lines, multiple(0.0), with_report=True)[1].absurd_value == 1
    assert caplog.records[-1].getMessage() == (
        "<DataFrame>: quarantined 1 line(s) worth more than 10000000000000.00 (the most a line can be worth); "
        "the largest 2e+300 at index 5")
