"""Tests for rebuy.data: readers, cleaning counts on Online Retail II, netting and bad input."""

from __future__ import annotations

import gzip
import re
from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from rebuy.config import Config, DataConfig, load_config, parse_column_overrides
from rebuy.data import CleaningReport, DataError, load_customers, load_events, load_transactions, read_table

REPO = Path(__file__).resolve().parents[1]
ORII = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail_ii.csv.gz"
ORII_CONFIG = REPO / "configs" / "online_retail_ii.yaml"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _frame(rows: list[tuple], columns=("customer_id", "order_id", "timestamp", "product_id", "quantity", "price")):
    return pd.DataFrame(rows, columns=list(columns))


SIMPLE_CSV = """customer_id,order_id,timestamp,product_id,quantity,price
1,A1,2021-01-01 10:00:00,P,2,10
1,A2,2021-01-03 10:00:00,Q,1,5
2,B1,2021-01-02 09:00:00,P,3,10
"""


# ------------------------------------------------------------------------------------------
# Online Retail II: exact cleaning counts, cross-checked with plain pandas
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orii_raw() -> pd.DataFrame:
    return pd.read_csv(ORII, dtype=str, engine="pyarrow")


@pytest.fixture(scope="module")
def orii_clean() -> tuple[pd.DataFrame, CleaningReport]:
    return load_transactions(ORII, load_config(ORII_CONFIG), with_report=True)


# Counts reported by load_transactions on the file (computed once, cross-checked below).
ORII_COUNTS = {
    "rows_in": 1_067_371,
    "missing_customer": 243_007,
    "dropped_products": 16,  # TEST001 / TEST002 ("This is a test product."): data.drop_product_prefixes
    "duplicates": 26_479,
    "after_as_of": 0,
    "future_dated": 0,  # 2009-2011: nothing after today
    "zero_quantity": 0,
    "non_positive_price": 68,
    "absurd_value": 0,  # the largest line (168,469.60) is 184 x the 99.9th percentile line value (916.00)
    "returns": 18_386,
    "returns_cancel_prefix": 18_386,
    "returns_matched": 16_219,
    "returns_unmatched": 2_167,
    "lines_fully_refunded": 6_132,
    "rows_out": 779_415,
    "customers": 5_878,
    "orders": 36_959,
    "products": 4_629,
}


def test_orii_readme_facts(orii_raw):
    # Published facts from the data README, on the raw file.
    assert len(orii_raw) == 1_067_371
    assert orii_raw["Customer ID"].isna().sum() == 243_007
    assert orii_raw.duplicated().sum() == 34_335
    assert orii_raw["Invoice"].str.startswith("C").sum() == 19_494
    assert orii_raw["Customer ID"].nunique() == 5_942


def test_orii_exact_cleaning_counts(orii_clean):
    df, rep = orii_clean
    assert {k: getattr(rep, k) for k in ORII_COUNTS} == ORII_COUNTS
    assert rep.first_timestamp == pd.Timestamp("2009-12-01 07:45:00")
    assert rep.last_timestamp == pd.Timestamp("2011-12-09 12:50:00")
    assert rep.return_value == pytest.approx(1_084_790.48, abs=0.01)
    assert rep.return_value_netted == pytest.approx(777_946.66, abs=0.01)
    removed = (rep.missing_customer + rep.dropped_products + rep.duplicates + rep.after_as_of + rep.future_dated
               + rep.zero_quantity + rep.non_positive_price + rep.absurd_value + rep.returns)
    assert rep.rows_in - removed == rep.rows_out == len(df)
    d = rep.to_dict()
    assert d["rows_out"] == rep.rows_out and d["first_timestamp"] == "2009-12-01T07:45:00"


def test_orii_counts_match_plain_pandas(orii_raw, orii_clean):
    df, rep = orii_clean
    raw = orii_raw
    has_customer = raw["Customer ID"].notna()
    assert (~has_customer).sum() == rep.missing_customer
    sub = raw[has_customer]
    test_item = sub["StockCode"].str.startswith("TEST")
    assert test_item.sum() == rep.dropped_products
    sub = sub[~test_item]
    dup = sub.duplicated()
    assert dup.sum() == rep.duplicates
    sub = sub[~dup]
    price = sub["Price"].astype(float)
    qty = sub["Quantity"].astype(float)
    assert (price <= 0).sum() == rep.non_positive_price
    assert (qty == 0).sum() == rep.zero_quantity
    sub, price, qty = sub[price > 0], price[price > 0], qty[price > 0]
    cancel = sub["Invoice"].str.startswith("C") | (qty < 0)
    assert cancel.sum() == rep.returns
    buys = sub[~cancel]
    assert len(buys) == rep.rows_out
    assert buys["Customer ID"].nunique() == rep.customers
    assert buys["Invoice"].nunique() == rep.orders
    assert buys["StockCode"].nunique() == rep.products
    assert (qty[cancel].abs() * price[cancel]).sum() == pytest.approx(rep.return_value)
    gross = (qty[~cancel] * price[~cancel]).sum()
    assert df["amount"].sum() == pytest.approx(gross - rep.return_value_netted)
    assert rep.return_value_netted + rep.return_value_unmatched == pytest.approx(rep.return_value)


def _reference_netting(buys: pd.DataFrame, rets: pd.DataFrame) -> tuple[int, float, float]:
    """Naive per-return LIFO netting (independent of the vectorised code): matched, netted, amount left."""
    lines: dict[tuple, list[list]] = defaultdict(list)
    for cust, prod, ts, value in zip(buys.c, buys.p, buys.t, buys.v, strict=True):
        lines[(cust, prod)].append([ts, value])
    for group in lines.values():
        group.sort(key=lambda x: x[0])  # stable: file order within equal times
    matched, netted = 0, 0.0
    for cust, prod, ts, value in sorted(zip(rets.c, rets.p, rets.t, rets.v, strict=True), key=lambda r: (r[0], r[1], r[2])):
        need = value
        for line in reversed(lines.get((cust, prod), [])):
            if line[0] > ts or need <= 0:
                continue
            take = min(line[1], need)
            line[1] -= take
            need -= take
        if value - need > 1e-6:  # ignore float residues
            matched += 1
            netted += value - need
    left = sum(v for g in lines.values() for _, v in g)
    return matched, netted, left


def test_orii_return_netting_matches_naive_reference(orii_raw, orii_clean):
    df, rep = orii_clean
    sub = orii_raw[orii_raw["Customer ID"].notna() & ~orii_raw["StockCode"].str.startswith("TEST")].drop_duplicates()
    sub = pd.DataFrame({
        "c": sub["Customer ID"], "p": sub["StockCode"], "t": pd.to_datetime(sub["InvoiceDate"]),
        "q": sub["Quantity"].astype(float), "price": sub["Price"].astype(float), "inv": sub["Invoice"],
    })
    sub = sub[sub.price > 0]
    sub["v"] = sub.q.abs() * sub.price
    is_ret = sub.inv.str.startswith("C") | (sub.q < 0)
    key = sub.c + "|" + sub.p
    involved = key.isin(set(key[is_ret]))  # only (customer, product) pairs with a return can change
    buys, rets = sub[~is_ret & involved], sub[is_ret]
    matched, netted, left = _reference_netting(buys, rets)
    assert matched == rep.returns_matched
    assert netted == pytest.approx(rep.return_value_netted)
    untouched = (sub.v[~is_ret & ~involved]).sum()
    assert left + untouched == pytest.approx(df["amount"].sum())


def test_orii_canonical_frame(orii_clean):
    df, _ = orii_clean
    assert list(df.columns) == ["customer_id", "order_id", "timestamp", "product_id", "quantity", "price",
                                "amount", "description", "country"]
    assert str(df["customer_id"].dtype) == "string" and str(df["order_id"].dtype) == "string"
    assert df["timestamp"].dtype == "datetime64[ns]"
    assert (df["quantity"] > 0).all() and (df["price"] > 0).all() and (df["amount"] >= 0).all()
    assert np.isfinite(df[["quantity", "price", "amount"]].to_numpy()).all()
    assert not df["customer_id"].str.contains(".", regex=False).any()  # "13085.0" style ids normalised
    assert not df["order_id"].str.startswith("C").any()
    key = pd.DataFrame({"c": df["customer_id"], "t": df["timestamp"]})
    assert key.equals(key.sort_values(["c", "t"], kind="stable"))
    # descriptions keep their source whitespace
    assert (df["description"] == " WHITE CHERRY LIGHTS").any()


def test_orii_as_of(orii_raw):
    df, rep = load_transactions(ORII, ORII_CONFIG, as_of="2011-06-30", with_report=True)
    raw = orii_raw[orii_raw["Customer ID"].notna()].drop_duplicates()
    expected_late = (pd.to_datetime(raw["InvoiceDate"]) >= pd.Timestamp("2011-07-01")).sum()
    assert rep.after_as_of == expected_late > 0
    assert df["timestamp"].max() <= pd.Timestamp("2011-06-30 23:59:59")
    assert df["timestamp"].max() >= pd.Timestamp("2011-06-30")
    assert rep.as_of == pd.Timestamp("2011-06-30")


# ------------------------------------------------------------------------------------------
# readers
# ------------------------------------------------------------------------------------------


def test_csv_gz_parquet_duckdb_dataframe_agree(tmp_path):
    base = load_transactions(_write(tmp_path / "t.csv", SIMPLE_CSV))
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(SIMPLE_CSV.encode()))
    typed = pd.read_csv(tmp_path / "t.csv")  # ints/floats, as a Parquet export would hold them
    typed["timestamp"] = pd.to_datetime(typed["timestamp"])
    typed["customer_id"] = typed["customer_id"].astype(float)  # 1.0 -> "1"
    typed.to_parquet(tmp_path / "t.parquet")
    db = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(db))
    con.execute(f"CREATE TABLE sales AS SELECT * FROM read_parquet('{tmp_path / 't.parquet'}')")
    con.close()
    sources = [gz, tmp_path / "t.parquet", f"duckdb:{db}::SELECT * FROM sales",
               f"duckdb:::SELECT * FROM read_csv('{tmp_path / 't.csv'}', all_varchar=true)",
               f"duckdb::memory:::SELECT * FROM read_parquet('{tmp_path / 't.parquet'}')", typed]
    for src in sources:
        pd.testing.assert_frame_equal(load_transactions(src), base, obj=str(src)[:60])
    assert base["customer_id"].tolist() == ["1", "1", "2"]
    assert base["amount"].tolist() == [20.0, 5.0, 30.0]


def test_duckdb_query_filters(tmp_path):
    db = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE s AS SELECT * FROM (VALUES (1, TIMESTAMP '2021-01-01', 5.0, 2021),"
                " (2, TIMESTAMP '2021-02-01', 7.0, 2021), (3, TIMESTAMP '2020-02-01', 9.0, 2020))"
                " t(customer_id, timestamp, amount, yr)")
    con.close()
    df = load_transactions(f"duckdb:{db}::SELECT * FROM s WHERE yr = 2021")
    assert df["customer_id"].tolist() == ["1", "2"] and df["amount"].tolist() == [5.0, 7.0]


def test_read_table_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        read_table(_write(tmp_path / "empty.csv", ""))
    gz = tmp_path / "empty.csv.gz"
    gz.write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match=r"empty\.csv\.gz: file is empty"):
        read_table(gz)
    with pytest.raises(DataError, match=r"header\.csv: no data rows \(columns: \['customer_id', 'timestamp'\]\)"):
        read_table(_write(tmp_path / "header.csv", "customer_id,timestamp\n"))
    with pytest.raises(DataError, match=r"bad\.parquet: cannot be read as Parquet"):
        read_table(_write(tmp_path / "bad.parquet", "not parquet"))
    with pytest.raises(DataError, match=r"expected 'duckdb:PATH::SELECT \.\.\.'"):
        read_table("duckdb:shop.duckdb")
    with pytest.raises(DataError, match=r"missing\.duckdb: DuckDB database file not found"):
        read_table(f"duckdb:{tmp_path / 'missing.duckdb'}::SELECT 1")
    with pytest.raises(DataError, match=r"duckdb::memory:: query failed: .*no_such_table"):
        read_table("duckdb:::SELECT * FROM no_such_table")
    with pytest.raises(DataError, match=r"<DataFrame>: no data rows"):
        read_table(pd.DataFrame({"customer_id": []}))


def test_read_table_semicolon_separator_via_config(tmp_path):
    path = _write(tmp_path / "semi.csv", SIMPLE_CSV.replace(",", ";"))
    df = load_transactions(path, load_config(overrides={"data.csv_separator": ";"}))
    assert len(df) == 3 and df["amount"].sum() == 55.0


# ------------------------------------------------------------------------------------------
# bad input: one-line errors naming the source, the column and the rows
# ------------------------------------------------------------------------------------------


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_required_column(tmp_path):
    path = _write(tmp_path / "t.csv", "client,timestamp,price\n1,2021-01-01,3\n")
    with pytest.raises(DataError) as err:
        load_transactions(path)
    assert _one_line(err) == (
        f"{path}: required column 'customer_id' not found; columns present: ['client', 'timestamp', 'price']; "
        "map it with data.columns / --column customer_id=SOURCE"
    )
    path = _write(tmp_path / "t2.csv", "customer_id,timestamp\n1,2021-01-01\n")
    with pytest.raises(DataError, match=r"required column 'price' not found \(nor 'amount'; one of them is needed\)"):
        load_transactions(path)


def test_mapped_column_not_in_file(tmp_path):
    path = _write(tmp_path / "t.csv", SIMPLE_CSV)
    with pytest.raises(DataError) as err:
        load_transactions(path, load_config(columns={"customer_id": "Customer ID"}))
    assert _one_line(err).startswith(f"{path}: column 'Customer ID' (mapped to customer_id) not found; columns present:")


def test_unparseable_dates_show_rows(tmp_path):
    text = SIMPLE_CSV + "2,B2,yesterday,P,1,10\n3,C1,2021-02-30 10:00:00,P,1,10\n"
    path = _write(tmp_path / "t.csv", text)
    with pytest.raises(DataError) as err:
        load_transactions(path)
    assert _one_line(err) == (
        f"{path}: column 'timestamp': 2 unparseable date(s) with an inferred format (set data.timestamp_format): "
        "row 4 = 'yesterday', row 5 = '2021-02-30 10:00:00'"
    )
    cfg = load_config(overrides={"data.timestamp_format": "%d/%m/%Y"})
    with pytest.raises(DataError, match=r"column 'timestamp': 3 unparseable date\(s\) with format '%d/%m/%Y' "
                                        r"\(data.timestamp_format\): row 1 = '2021-01-01 10:00:00'"):
        load_transactions(_write(tmp_path / "t2.csv", SIMPLE_CSV), cfg)


def test_mixed_date_formats_when_inferring(tmp_path):
    # ISO 8601 variants mix freely with the inferred format ...
    path = _write(tmp_path / "t.csv", SIMPLE_CSV + "3,D1,2021-02-01,P,1,10\n3,D2,2021-03-05T10:30,P,1,10\n")
    df = load_transactions(path)
    assert df.loc[df["customer_id"] == "3", "timestamp"].tolist() == [pd.Timestamp("2021-02-01"),
                                                                     pd.Timestamp("2021-03-05 10:30")]
    # ... but day-first vs month-first is never guessed row by row
    frame = pd.DataFrame({"customer_id": [1, 2, 3], "timestamp": ["01/02/2021", "01/03/2021", "13/01/2021"],
                          "price": [1, 2, 3]})
    with pytest.raises(DataError, match=r"1 unparseable date\(s\) .*: index 2 = '13/01/2021'"):
        load_transactions(frame)
    df = load_transactions(frame, DataConfig(timestamp_format="%d/%m/%Y"))
    assert df["timestamp"].tolist() == [pd.Timestamp("2021-02-01"), pd.Timestamp("2021-03-01"),
                                        pd.Timestamp("2021-01-13")]


def test_duplicate_column_names():
    frame = pd.DataFrame([[1, "2021-01-01", 1, 1]], columns=["customer_id", "timestamp", "price", "price"])
    with pytest.raises(DataError, match=r"<DataFrame>: duplicate column name\(s\) \['price'\]"):
        load_transactions(frame)


def test_non_numeric_amounts(tmp_path):
    path = _write(tmp_path / "t.csv", SIMPLE_CSV + "2,B2,2021-01-04,P,1,abc\n2,B3,2021-01-04,P,1,1.2.3\n")
    with pytest.raises(DataError) as err:
        load_transactions(path)
    assert _one_line(err) == f"{path}: column 'price': 2 value(s) are not numbers: row 4 = 'abc', row 5 = '1.2.3'"
    path = _write(tmp_path / "q.csv", SIMPLE_CSV + "2,B2,2021-01-04,P,two,1\n")
    with pytest.raises(DataError, match=r"q\.csv: column 'quantity': 1 value\(s\) are not numbers: row 4 = 'two'"):
        load_transactions(path)
    frame = pd.DataFrame({"cust": ["a", "b", "c", "d", "e"], "when": ["2021-01-01"] * 5,
                          "total": ["1", "x", "y", "z", "w"]}, index=list("vwxyz"))
    cfg = DataConfig(columns={"customer_id": "cust", "timestamp": "when", "amount": "total"})
    with pytest.raises(DataError) as err:
        load_transactions(frame, cfg)
    assert _one_line(err) == ("<DataFrame>: column 'total' (amount): 4 value(s) are not numbers: "
                              "index 'w' = 'x', index 'x' = 'y', index 'y' = 'z' (and 1 more)")


def test_missing_price_value(tmp_path):
    path = _write(tmp_path / "t.csv", SIMPLE_CSV + "2,B2,2021-01-04,P,1,\n")
    with pytest.raises(DataError, match=r"column 'price': 1 missing value\(s\): row 4 = "):
        load_transactions(path)


def test_empty_file_errors(tmp_path):
    with pytest.raises(DataError, match=r"e\.csv: file is empty \(no header, no rows\)$"):
        load_transactions(_write(tmp_path / "e.csv", ""))
    with pytest.raises(DataError, match=r"h\.csv: no data rows"):
        load_transactions(_write(tmp_path / "h.csv", "customer_id,timestamp,price\n"))


def test_single_customer_error(tmp_path):
    text = SIMPLE_CSV.replace("\n2,", "\n1,")
    path = _write(tmp_path / "t.csv", text)
    with pytest.raises(DataError) as err:
        load_transactions(path)
    assert _one_line(err) == (f"{path}: column 'customer_id': only 1 customer ('1') after cleaning; "
                              "the models need at least 2 customers")
    # scoring one customer's history asks for just one
    assert load_transactions(path, min_customers=1)["customer_id"].unique().tolist() == ["1"]
    with pytest.raises(DataError, match=r"only 2 customers after cleaning; the models need at least 3 customers"):
        load_transactions(_write(tmp_path / "s.csv", SIMPLE_CSV), min_customers=3)
    # a second customer who only has a cancellation is not enough either
    path = _write(tmp_path / "t2.csv", text + "2,C9,2021-01-05,P,-1,10\n")
    with pytest.raises(DataError, match="need at least 2 customers"):
        load_transactions(path)


def test_no_customer_ids_and_only_returns(tmp_path):
    path = _write(tmp_path / "t.csv", "customer_id,timestamp,price\n,2021-01-01,3\n,2021-01-02,4\n")
    with pytest.raises(DataError, match=r"column 'customer_id': no row has a customer id"):
        load_transactions(path)
    path = _write(tmp_path / "r.csv", "customer_id,timestamp,price,quantity\n1,2021-01-01,3,-1\n2,2021-01-02,4,-2\n")
    with pytest.raises(DataError, match=r"r\.csv: no purchase lines left after cleaning \(.*returns=2"):
        load_transactions(path)


# ------------------------------------------------------------------------------------------
# cleaning rules
# ------------------------------------------------------------------------------------------


def test_return_netting_hand_example(caplog):
    rows = [
        ("A", "1", "2021-01-01", "P", 2, 10.0),   # 20 -> 10 -> 0
        ("A", "2", "2021-01-05", "P", 1, 10.0),   # 10 -> 0 (most recent, netted first)
        ("A", "C3", "2021-01-10", "P", -2, 10.0),  # 20: takes 10 from order 2, 10 from order 1
        ("A", "C4", "2021-01-12", "P", -5, 10.0),  # 50: takes the last 10, 40 unmatched
        ("A", "C5", "2020-12-31", "Q", -1, 7.0),  # before any Q purchase: unmatched
        ("A", "6", "2021-01-15", "Q", 1, 7.0),    # stays 7
        ("B", "7", "2021-01-02", "P", 1, 5.0),    # another customer's P: untouched
        ("B", "8", "2021-01-03", "R", -1, 3.0),   # negative quantity, no C: return of a never-bought R
    ]
    with caplog.at_level("INFO", logger="rebuy.data"):
        df, rep = load_transactions(_frame(rows), with_report=True)
    assert "cleaned <DataFrame>: 8 lines -> 4, 2 customers; returns netted 4 (" in caplog.text
    assert df["order_id"].tolist() == ["1", "2", "6", "7"]
    assert df["amount"].tolist() == [0.0, 0.0, 7.0, 5.0]
    assert df["quantity"].tolist() == [2.0, 1.0, 1.0, 1.0]  # quantities stay as purchased
    assert (rep.returns, rep.returns_cancel_prefix, rep.returns_matched, rep.returns_unmatched) == (4, 3, 2, 2)
    assert rep.return_value == pytest.approx(20 + 50 + 7 + 3)
    assert rep.return_value_netted == pytest.approx(30)
    assert rep.return_value_unmatched == pytest.approx(50)
    assert rep.lines_fully_refunded == 2


def test_return_netting_without_products_uses_recent_orders():
    frame = pd.DataFrame({
        "customer_id": [1, 1, 1, 2, 2],
        "timestamp": ["2021-01-01", "2021-02-01", "2021-02-10", "2021-01-01", "2021-03-01"],
        "amount": [30.0, 20.0, -25.0, 10.0, 4.0],
    })
    df, rep = load_transactions(frame, with_report=True)
    assert "product_id" not in df.columns
    assert df["amount"].tolist() == [25.0, 0.0, 10.0, 4.0]
    assert df["price"].tolist() == [30.0, 20.0, 10.0, 4.0] and (df["quantity"] == 1).all()
    assert df["order_id"].tolist() == ["1@2021-01-01T00:00:00", "1@2021-02-01T00:00:00",
                                       "2@2021-01-01T00:00:00", "2@2021-03-01T00:00:00"]
    assert (rep.returns, rep.returns_matched, rep.return_value_netted) == (1, 1, 25.0)


def test_cleaning_steps_counted():
    rows = [
        ("1", "A1", "2021-01-01", "P", 1, 10.0),
        ("1", "A1", "2021-01-01", "P", 1, 10.0),   # exact duplicate
        ("1.0", "A1", "2021-01-01", "P", 1, 10.0),  # duplicate once the id is normalised
        (None, "A2", "2021-01-01", "P", 1, 10.0),  # no customer
        ("  ", "A2", "2021-01-01", "P", 1, 10.0),  # blank customer
        ("2", "B1", "2021-01-02", "P", 1, 0.0),    # zero price
        ("2", "B2", "2021-01-02", "P", 1, -1.0),   # negative price
        ("2", "B3", "2021-01-02", "P", 0, 4.0),    # zero quantity
        ("2", "B4", "2021-01-02", "P", 2, 4.0),
        ("2", "B5", "2021-01-06 00:00:00", "P", 1, 4.0),  # after the as-of day
    ]
    df, rep = load_transactions(_frame(rows), as_of="2021-01-05", with_report=True)
    assert (rep.rows_in, rep.missing_customer, rep.duplicates, rep.after_as_of) == (10, 2, 2, 1)
    assert (rep.zero_quantity, rep.non_positive_price, rep.returns, rep.rows_out) == (1, 2, 0, 2)
    assert (rep.customers, rep.orders, rep.products) == (2, 2, 1)
    assert df["customer_id"].tolist() == ["1", "2"] and df["amount"].tolist() == [10.0, 8.0]
    # without dropping duplicates the three identical lines stay
    df2 = load_transactions(_frame(rows), DataConfig(drop_duplicates=False), as_of="2021-01-05")
    assert (df2["customer_id"] == "1").sum() == 3


def test_as_of_keeps_the_whole_day_and_config_as_of():
    rows = [("1", "a", "2021-01-05 23:59:59", "P", 1, 1.0), ("1", "b", "2021-01-06 00:00:00", "P", 1, 1.0),
            ("2", "c", "2021-01-01 00:00:00", "P", 1, 1.0)]
    assert load_transactions(_frame(rows), as_of="2021-01-05")["order_id"].tolist() == ["a", "c"]
    cfg = Config(as_of="2021-01-05")
    assert load_transactions(_frame(rows), cfg)["order_id"].tolist() == ["a", "c"]
    # the argument overrides the config
    assert load_transactions(_frame(rows), cfg, as_of="2021-01-06")["order_id"].tolist() == ["a", "b", "c"]
    with pytest.raises(DataError, match="as_of 'soon': not a date"):
        load_transactions(_frame(rows), as_of="soon")


def test_custom_cancel_prefixes():
    rows = [("1", "X9", "2021-01-03", "P", 1, 4.0), ("1", "7", "2021-01-01", "P", 1, 4.0),
            ("2", "C1", "2021-01-01", "P", 1, 4.0)]
    df, rep = load_transactions(_frame(rows), DataConfig(cancel_prefixes=["X"]), with_report=True)
    assert df["order_id"].tolist() == ["7", "C1"]  # C is not a cancellation under this config
    assert rep.returns_matched == 1 and df["amount"].tolist() == [0.0, 4.0]


def test_tz_aware_strings_are_normalised(tmp_path):
    text = ("customer_id,timestamp,price\n1,2021-07-01T10:00:00+02:00,1\n"
            "2,2021-07-01T10:00:00Z,1\n3,2021-07-01 10:00:00-05:00,1\n")
    path = _write(tmp_path / "tz.csv", text)
    df = load_transactions(path)
    assert df["timestamp"].dtype == "datetime64[ns]"
    assert df["timestamp"].tolist() == [pd.Timestamp("2021-07-01 08:00"), pd.Timestamp("2021-07-01 10:00"),
                                        pd.Timestamp("2021-07-01 15:00")]
    berlin = load_transactions(path, load_config(overrides={"data.timezone": "Europe/Berlin"}))
    assert berlin["timestamp"].tolist() == [pd.Timestamp("2021-07-01 10:00"), pd.Timestamp("2021-07-01 12:00"),
                                            pd.Timestamp("2021-07-01 17:00")]


def test_tz_aware_datetime_column_and_parquet(tmp_path):
    frame = pd.DataFrame({"customer_id": ["1", "2"],
                          "timestamp": pd.to_datetime(["2021-01-01 12:00", "2021-01-02 12:00"]).tz_localize(
                              "America/New_York"),
                          "price": [1.0, 2.0]})
    expected = [pd.Timestamp("2021-01-01 17:00"), pd.Timestamp("2021-01-02 17:00")]
    assert load_transactions(frame)["timestamp"].tolist() == expected
    frame.to_parquet(tmp_path / "tz.parquet")
    out = load_transactions(tmp_path / "tz.parquet")
    assert out["timestamp"].tolist() == expected and out["timestamp"].dtype == "datetime64[ns]"


def test_mixed_aware_and_naive_dates_error(tmp_path):
    path = _write(tmp_path / "m.csv", "customer_id,timestamp,price\n1,2021-07-01 10:00:00+02:00,1\n"
                                      "2,2021-07-02,1\n")
    with pytest.raises(DataError, match=r"column 'timestamp': 1 date\(s\) mix timezone-aware and naive values: "
                                        r"row 2 = '2021-07-02'"):
        load_transactions(path)


def test_column_mapping_via_config_and_overrides(tmp_path):
    text = "Cust,When,Sku,Units,Each,Inv\n13085.0,2021-01-01,P,2,1.5,1\n12,2021-01-02,Q,1,2,2\n"
    path = _write(tmp_path / "m.csv", text)
    mapping = {"customer_id": "Cust", "timestamp": "When", "product_id": "Sku", "quantity": "Units",
               "price": "Each", "order_id": "Inv"}
    yaml_path = _write(tmp_path / "c.yaml", "data:\n  columns:\n" + "".join(
        f"    {k}: {v}\n" for k, v in mapping.items()))
    via_yaml = load_transactions(path, yaml_path)
    via_flags = load_transactions(path, load_config(columns=parse_column_overrides(
        [f"{k}={v}" for k, v in mapping.items()])))
    pd.testing.assert_frame_equal(via_yaml, via_flags)
    assert via_yaml["customer_id"].tolist() == ["12", "13085"]
    assert via_yaml["amount"].tolist() == [2.0, 3.0]
    assert list(via_yaml.columns) == ["customer_id", "order_id", "timestamp", "product_id", "quantity", "price",
                                      "amount"]


def test_amount_only_source_derives_price():
    frame = pd.DataFrame({"customer_id": ["a", "b"], "timestamp": ["2021-01-01", "2021-01-02"],
                          "quantity": [4, 1], "amount": ["10", "3"], "category": [7.0, None]})
    df = load_transactions(frame)
    assert df["price"].tolist() == [2.5, 3.0] and df["amount"].tolist() == [10.0, 3.0]
    assert df["category"].iloc[0] == "7" and pd.isna(df["category"].iloc[1])


# ------------------------------------------------------------------------------------------
# customers and events
# ------------------------------------------------------------------------------------------


def test_load_customers(tmp_path):
    text = ("id,birth_date,country,consent_email,consent_sms\n"
            "1,1990-06-15,UK,yes,0\n2,,DE,TRUE,\n3.0,2000-01-01,,no,1\n")
    path = _write(tmp_path / "customers.csv", text)
    cfg = load_config(overrides={"data.customer_columns": {"customer_id": "id"}})
    out = load_customers(path, cfg, as_of="2020-06-15")
    assert list(out.columns) == ["customer_id", "age", "birth_date", "country", "acquisition_channel",
                                 "signup_date", "consent_email", "consent_sms", "consent_messenger"]
    assert out["customer_id"].tolist() == ["1", "2", "3"]
    assert out["age"].iloc[0] == pytest.approx(10958 / 365.25)  # 30 years of days
    assert np.isnan(out["age"].iloc[1]) and out["birth_date"].isna().iloc[1]
    assert out["age"].iloc[2] == pytest.approx(7471 / 365.25)
    assert out["consent_email"].tolist() == [True, True, False]
    assert out["consent_sms"].tolist() == [False, False, True]
    assert out["consent_messenger"].tolist() == [False, False, False]
    assert out["consent_email"].dtype == bool and out["acquisition_channel"].isna().all()
    assert out["country"].tolist()[:2] == ["UK", "DE"] and pd.isna(out["country"].iloc[2])


def test_load_customers_given_age_wins_and_errors(tmp_path):
    frame = pd.DataFrame({"customer_id": ["1", "2"], "age": [41, None],
                          "birth_date": ["1990-01-01", "1990-01-01"]})
    out = load_customers(frame, as_of="2020-01-01")
    assert out["age"].iloc[0] == 41 and out["age"].iloc[1] == pytest.approx(10957 / 365.25)
    bad = _write(tmp_path / "c.csv", "customer_id,consent_sms\n1,yes\n2,maybe\n")
    with pytest.raises(DataError, match=r"c\.csv: column 'consent_sms': 1 value\(s\) are not true/false, 1/0 or "
                                        r"yes/no: row 2 = 'maybe'"):
        load_customers(bad)
    dup = _write(tmp_path / "d.csv", "customer_id,country\n1,UK\n1,DE\n")
    with pytest.raises(DataError, match=r"2 duplicated customer id\(s\)"):
        load_customers(dup)


def test_load_events(tmp_path):
    text = "who,sku,ts,kind\n2,P,2021-01-02,View\n1,Q,2021-01-03, cart\n1,P,2021-01-01,view\n"
    path = _write(tmp_path / "events.csv", text)
    cfg = load_config(overrides={"data.event_columns": {"customer_id": "who", "product_id": "sku",
                                                        "timestamp": "ts", "event": "kind"}})
    out = load_events(path, cfg)
    assert out["customer_id"].tolist() == ["1", "1", "2"]
    assert out["event"].tolist() == ["view", "cart", "view"]
    assert out["timestamp"].dtype == "datetime64[ns]" and str(out["product_id"].dtype) == "string"
    bad = _write(tmp_path / "bad.csv", "customer_id,product_id,timestamp,event\n1,P,2021-01-01,purchase\n")
    with pytest.raises(DataError, match=re.escape("bad.csv: column 'event': 1 value(s) not in ['view', 'cart']: "
                                                  "row 1 = 'purchase'")):
        load_events(bad)


def test_dates_outside_supported_range(tmp_path):
    path = _write(tmp_path / "t.csv", SIMPLE_CSV + "2,B2,3021-01-04 10:00:00,P,1,10\n")
    with pytest.raises(DataError, match=r"column 'timestamp': 1 date\(s\) outside the supported years 1678-2261: "
                                        r"row 4 = '3021-01-04 10:00:00'"):
        load_transactions(path)


def test_unborn_customers_get_unknown_age():
    frame = pd.DataFrame({"customer_id": ["1", "2"], "birth_date": ["2030-01-01", "2000-01-01"]})
    out = load_customers(frame, as_of="2020-01-01")
    assert np.isnan(out["age"].iloc[0]) and out["age"].iloc[1] == pytest.approx(7305 / 365.25)
    with pytest.raises(DataError, match="as_of 'soon': not a date"):
        load_customers(frame, as_of="soon")


def test_cleaned_frame_loads_again_under_a_mapping_config():
    """A frame that already has canonical names passes through a config written for the raw schema."""
    from rebuy.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "online_retail_ii.yaml")
    raw = pd.DataFrame(
        {
            "Customer ID": ["1", "1", "2"],
            "Invoice": ["a", "b", "c"],
            "InvoiceDate": ["2011-01-01 10:00:00", "2011-02-01 10:00:00", "2011-01-05 09:00:00"],
            "StockCode": ["x", "y", "x"],
            "Quantity": ["1", "2", "3"],
            "Price": ["2.5", "1.0", "4.0"],
            "Description": ["X", "Y", "X"],
            "Country": ["UK", "UK", "FR"],
        }
    )
    once = load_transactions(raw, cfg)
    twice = load_transactions(once, cfg)
    pd.testing.assert_frame_equal(once.reset_index(drop=True), twice.reset_index(drop=True))
    assert once["amount"].tolist() == [2.5, 2.0, 12.0]


def _plain_pandas_clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Reference for clean frames (canonical names, no returns): drop_duplicates + stable sort."""
    dup = frame.duplicated()
    kept = frame[~dup].sort_values(["customer_id", "timestamp"], kind="stable", ignore_index=True)
    return kept, int(dup.sum())


@pytest.mark.parametrize("layout", ["sorted", "ids_sorted_times_not", "shuffled"])
def test_fast_duplicate_and_sort_paths_match_plain_pandas(layout):
    """The candidate-row duplicate check and the skipped/int sort agree with DataFrame.duplicated and
    sort_values: duplicates within a (customer, time) group that are not neighbours, rows differing only
    in text or in a float column, -0.0 == 0.0 and NaN == NaN, all under every input order."""
    rng = np.random.default_rng(11)
    n = 3000
    frame = pd.DataFrame({
        "customer_id": pd.array([f"c{i:04d}" for i in rng.integers(0, 300, n)], dtype="string"),
        "order_id": pd.array([str(i) for i in rng.integers(1, 400, n)], dtype="string"),
        "timestamp": pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 20, n), unit="D"),
        "product_id": pd.array([f"p{i}" for i in rng.integers(0, 4, n)], dtype="string"),
        "quantity": rng.integers(1, 3, n).astype(float),
        "price": rng.choice([1.0, 2.0], n),
        "score": rng.choice([0.0, -0.0, np.nan, 1.5], n),  # an extra source column takes part in "exact"
        "description": pd.array(rng.choice(["a", "b"], n), dtype="string"),
    })
    again = frame.iloc[::7].copy()  # more exact duplicates: 0.0 <-> -0.0 and another NaN bit pattern
    other_nan = np.array([0x7FF8000000000123], dtype=np.uint64).view(np.float64)[0]
    score = again["score"].to_numpy()
    again["score"] = np.where(np.isnan(score), other_nan, np.where(score == 0, -score, score))
    frame = pd.concat([frame, again], ignore_index=True)
    if layout == "sorted":
        frame = frame.sort_values(["customer_id", "timestamp"], kind="stable", ignore_index=True)
    elif layout == "ids_sorted_times_not":
        frame = frame.sort_values("customer_id", kind="stable", ignore_index=True)
    else:
        frame = frame.sample(frac=1.0, random_state=3, ignore_index=True)
    df, rep = load_transactions(frame, with_report=True)
    expected, n_dup = _plain_pandas_clean(frame)
    assert rep.duplicates == n_dup > 100
    assert (rep.customers, rep.orders, rep.products) == (
        expected["customer_id"].nunique(), expected["order_id"].nunique(), expected["product_id"].nunique())
    expected = expected.assign(amount=expected["quantity"] * expected["price"],
                               timestamp=expected["timestamp"].astype("datetime64[ns]"))
    pd.testing.assert_frame_equal(df, expected[df.columns.tolist()], check_exact=True)


def test_numeric_looking_order_ids_count_as_text():
    """'007' and '7' are different orders; the integer shortcut for counting must not merge them."""
    rows = [("1", "7", "2021-01-01", "P", 1, 1.0), ("1", "007", "2021-01-02", "P", 1, 1.0),
            ("2", "10", "2021-01-01", "P", 1, 1.0), ("2", "10", "2021-01-03", "Q", 1, 1.0)]
    assert load_transactions(_frame(rows), with_report=True)[1].orders == 3
    rows[1] = ("1", "8", "2021-01-02", "P", 1, 1.0)
    assert load_transactions(_frame(rows), with_report=True)[1].orders == 3


def test_bad_config_type_is_an_invalid_parameter_error():
    from rebuy.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="config must be a rebuy Config, DataConfig, YAML path or None, "
                                                    "not int"):
        load_transactions(_frame([("1", "a", "2021-01-01", "P", 1, 1.0)]), 42)
    with pytest.raises(TypeError):  # still a TypeError, as before
        load_customers(_frame([("1", "a", "2021-01-01", "P", 1, 1.0)]), [])


def test_age_from_birth_date_uses_365_25_day_years(tmp_path):
    path = _write(tmp_path / "c.csv", "customer_id,birth_date\n1,2000-03-01\n2,2000-03-02\n3,\n")
    out = load_customers(path, as_of="2030-03-01")
    days = (pd.Timestamp("2030-03-01") - pd.Timestamp("2000-03-01")).days
    assert out["age"].iloc[0] == days / 365.25 and out["age"].iloc[1] == (days - 1) / 365.25
    assert np.isnan(out["age"].iloc[2])


# ------------------------------------------------------------------------------------------
# duplicates need an order id; the shop's test products; one short log line
# ------------------------------------------------------------------------------------------
_TWIN_MUGS = [("A", "2021-01-01 10:00:00", "MUG", 1, 3.0), ("A", "2021-01-01 10:00:00", "MUG", 1, 3.0),
              ("B", "2021-01-02 10:00:00", "MUG", 1, 3.0)]


def test_identical_lines_without_an_order_id_are_two_real_purchases():
    df, rep = load_transactions(_frame(_TWIN_MUGS, ("customer_id", "timestamp", "product_id", "quantity", "price")),
                                with_report=True)
    assert rep.duplicates == 0 and len(df) == 3


def test_identical_lines_with_an_order_id_are_a_duplicate():
    rows = [(c, "o1" if c == "A" else "o2", *rest) for c, *rest in _TWIN_MUGS]
    df, rep = load_transactions(_frame(rows, ("customer_id", "order_id", "timestamp", "product_id", "quantity",
                                              "price")), with_report=True)
    assert rep.duplicates == 1 and len(df) == 2


def test_configured_test_products_are_dropped_at_cleaning():
    rows = [("A", "1", "2021-01-01", "TEST001", 1, 5.0), ("A", "2", "2021-01-02", "P", 1, 5.0),
            ("B", "3", "2021-01-02", "DEMO", 1, 5.0), ("B", "4", "2021-01-03", "POST", 1, 5.0)]
    cfg = DataConfig(drop_products=["DEMO"], drop_product_prefixes=["TEST"])
    df, rep = load_transactions(_frame(rows), cfg, with_report=True)
    assert df["product_id"].tolist() == ["P", "POST"]  # postage stays: it is spend
    assert rep.dropped_products == 2
    assert load_transactions(_frame(rows))["product_id"].tolist() == ["TEST001", "P", "DEMO", "POST"]


def test_online_retail_ii_test_products_are_gone_after_cleaning(orii_clean):
    df, rep = orii_clean
    assert not df["product_id"].str.startswith("TEST").any()
    assert not df["description"].str.contains("test product", case=False, regex=False).any()
    assert rep.dropped_products == 16


def test_cleaning_logs_one_short_line_and_the_full_report_at_debug(caplog):
    rows = [("A", "1", "2021-01-01", "P", 1, 5.0), ("A", "1", "2021-01-01", "P", 1, 5.0),
            (None, "2", "2021-01-02", "P", 1, 5.0), ("B", "3", "2021-01-02", "P", 1, 5.0)]
    with caplog.at_level("DEBUG", logger="rebuy.data"):
        load_transactions(_frame(rows))
    info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert len(info) == 1 and len(info[0]) < 160
    assert re.fullmatch(r"cleaned <DataFrame>: 4 lines -> 2, 2 customers; no customer id 1, duplicates 1 \(\d+\.\d s\)",
                        info[0])
    assert any("rows_in=4" in m and "zero_quantity=0" in m for m in debug)


def test_is_in_matches_pandas_isin_on_strings_and_other_dtypes():
    from rebuy.data.values import is_in

    ids = pd.Series(["13085", "13086", None, " 7", "x"], dtype="string")
    among = pd.Series(["13086", "x", "zz", None], dtype="string")
    np.testing.assert_array_equal(is_in(ids, among), [False, True, False, False, True])  # a missing id is never in
    np.testing.assert_array_equal(is_in(pd.Index(ids), among.unique()), [False, True, False, False, True])
    np.testing.assert_array_equal(is_in(pd.Series([1, 2, 3]), [2, 5]), pd.Series([1, 2, 3]).isin([2, 5]).to_numpy())
    np.testing.assert_array_equal(is_in(ids, ["13085"]), [True, False, False, False, False])
