"""Score-table outputs: atomic Parquet/CSV files and one-transaction DuckDB tables."""

from __future__ import annotations

import csv
import gzip
import io

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rebuy import outputs
from rebuy.errors import OutputError
from rebuy.outputs import read_table_for_lookup, upsert_duckdb, write_table


def _scores(n: int = 4, value: float = 1.0) -> pd.DataFrame:
    """n (<= 4) customers; the lists include an empty one and CSV-hostile characters."""
    return pd.DataFrame(
        {
            "customer_id": pd.array([f"c{i}" for i in range(n)], dtype="string"),
            "clv_12m": [value * (i + 1) for i in range(n)],
            "segment": pd.array(["Champions", "At Risk, high value", "Lost", "New"][:n], dtype="string"),
            "recommended_products": [["p1", "p2"], [], ['p"3', "p,4"], ["p5"]][:n],
            "scored_at": pd.Timestamp("2026-11-22 03:00"),
        }
    )


def _leftovers(d):
    return [p.name for p in d.iterdir() if p.name.startswith(".")]


def _table(db, table="customer_scores"):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(f'SELECT * FROM "{table}" ORDER BY customer_id').df()


# ------------------------------------------------------------------------------------------- files


def test_parquet_round_trip_keeps_types_and_lists(tmp_path):
    df = _scores()
    path = write_table(df, tmp_path / "scores.parquet")
    assert pq.read_schema(path).field("recommended_products").type.value_type.equals("string")
    back = read_table_for_lookup(path)
    assert back.index.name == "customer_id" and list(back.index) == ["c0", "c1", "c2", "c3"]
    assert (
        back.loc["c2", "recommended_products"] == ['p"3', "p,4"]
        and back.loc["c1", "recommended_products"] == []
    )
    assert back.loc["c3", "clv_12m"] == 4.0 and back.loc["c0", "scored_at"] == pd.Timestamp(
        "2026-11-22 03:00"
    )
    assert back.loc["c1", "segment"] == "At Risk, high value"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["scores.csv", "scores.csv.gz"])
def test_csv_lists_as_json_strings(tmp_path, name):
    df = _scores()
    path = write_table(df, tmp_path / name)
    raw = gzip.decompress(path.read_bytes()).decode() if name.endswith(".gz") else path.read_text()
    rows = list(csv.DictReader(io.StringIO(raw)))
    assert [r["recommended_products"] for r in rows] == ['["p1", "p2"]', "[]", '["p\\"3", "p,4"]', '["p5"]']
    assert rows[1]["segment"] == "At Risk, high value"
    back = read_table_for_lookup(path)
    assert back["recommended_products"].tolist() == df["recommended_products"].tolist()
    assert back.loc["c3", "clv_12m"] == 4.0
    if name.endswith(".gz"):  # fixed gzip header time: same frame, same bytes
        first = path.read_bytes()
        assert write_table(df, path).read_bytes() == first


def test_numeric_like_ids_stay_strings_in_csv(tmp_path):
    df = pd.DataFrame({"customer_id": ["00123", "456"], "x": [1.0, 2.0]})
    back = read_table_for_lookup(write_table(df, tmp_path / "s.csv"))
    assert list(back.index) == ["00123", "456"]


def test_index_written_as_column(tmp_path):
    df = _scores().set_index("customer_id")
    back = read_table_for_lookup(write_table(df, tmp_path / "s.parquet"))
    assert list(back.index) == ["c0", "c1", "c2", "c3"]


def test_unknown_extension_names_path(tmp_path):
    with pytest.raises(OutputError, match=r"scores\.xlsx: unknown table extension"):
        write_table(_scores(), tmp_path / "scores.xlsx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["scores.parquet", "scores.csv"])
def test_injected_failure_leaves_old_file(tmp_path, monkeypatch, name):
    path = tmp_path / name
    write_table(_scores(2), path)
    before = path.read_bytes()

    def half_then_fail(*args, **kwargs):
        target = args[1]  # the open temp file (pq.write_table(table, fh) / df.to_csv(fh))
        target.write(b"partial" if "b" in getattr(target, "mode", "b") else "partial")
        raise OSError("disk full")

    if name.endswith(".parquet"):
        monkeypatch.setattr(outputs.pq, "write_table", half_then_fail)
    else:
        monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_table(_scores(4, value=9.0), path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_failed_rename_leaves_old_file(tmp_path, monkeypatch):
    path = write_table(_scores(2), tmp_path / "s.parquet")
    before = path.read_bytes()

    def boom(*a):
        raise OSError("rename failed")

    monkeypatch.setattr(outputs.os, "replace", boom)
    with pytest.raises(OSError):
        write_table(_scores(4), path)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_lookup_reader_rejects_bad_tables(tmp_path):
    dup = pd.DataFrame({"customer_id": ["a", "a"], "x": [1, 2]})
    with pytest.raises(OutputError, match="duplicates"):
        read_table_for_lookup(write_table(dup, tmp_path / "d.parquet"))
    nokey = pd.DataFrame({"id": ["a"], "x": [1]})
    with pytest.raises(OutputError, match="key column 'customer_id' is missing"):
        read_table_for_lookup(write_table(nokey, tmp_path / "n.parquet"))
    with pytest.raises(OutputError, match="not found"):
        read_table_for_lookup(tmp_path / "missing.parquet")


# ------------------------------------------------------------------------------------------- duckdb


def test_duckdb_replace_is_idempotent_with_list_columns(tmp_path):
    db = tmp_path / "scores.duckdb"
    df = _scores()
    assert upsert_duckdb(df, db) == 4
    first = _table(db)
    assert upsert_duckdb(df, db) == 4  # re-running the same night
    pd.testing.assert_frame_equal(_table(db), first)
    with duckdb.connect(str(db), read_only=True) as con:
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'customer_scores'"
            ).fetchall()
        )
        assert types["recommended_products"] == "VARCHAR[]" and types["clv_12m"] == "DOUBLE"
    assert [list(v) for v in first["recommended_products"]] == df["recommended_products"].tolist()
    # replace semantics: the table becomes exactly the new run's rows
    assert upsert_duckdb(_scores(2, value=5.0), db) == 2
    assert _table(db)["clv_12m"].tolist() == [5.0, 10.0]
    back = read_table_for_lookup(db)
    assert (
        back.loc["c0", "recommended_products"] == ["p1", "p2"]
        and back.loc["c1", "recommended_products"] == []
    )


def test_duckdb_all_empty_lists_get_string_lists(tmp_path):
    db = tmp_path / "s.duckdb"
    df = pd.DataFrame({"customer_id": ["a", "b"], "recommended_products": [[], []]})
    upsert_duckdb(df, db)
    with duckdb.connect(str(db), read_only=True) as con:
        assert (
            con.execute(
                "SELECT data_type FROM information_schema.columns WHERE column_name = 'recommended_products'"
            ).fetchone()[0]
            == "VARCHAR[]"
        )


def test_duckdb_upsert_mode_replaces_matching_keys(tmp_path):
    db = tmp_path / "s.duckdb"
    upsert_duckdb(_scores(4), db, mode="upsert")
    new = _scores(2, value=7.0)
    assert upsert_duckdb(new, db, mode="upsert") == 4
    assert upsert_duckdb(new, db, mode="upsert") == 4
    assert _table(db)["clv_12m"].tolist() == [7.0, 14.0, 3.0, 4.0]
    with pytest.raises(OutputError, match=r"columns differ .*missing \['segment'\]"):
        upsert_duckdb(new.drop(columns="segment"), db, mode="upsert")
    assert _table(db)["clv_12m"].tolist() == [7.0, 14.0, 3.0, 4.0]


class _FailingConnection:
    """Wraps a real DuckDB connection; raises when a statement starting with ``fail_on`` runs."""

    def __init__(self, con, fail_on):
        self._con, self._fail_on, self.statements = con, fail_on, []

    def execute(self, sql, *args):
        self.statements.append(sql.strip().split()[0].upper())
        if sql.strip().upper().startswith(self._fail_on):
            raise duckdb.IOException(f"injected failure at {self._fail_on}")
        return self._con.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._con, name)


@pytest.mark.parametrize(
    ("mode", "fail_on"),
    [("replace", "COMMIT"), ("replace", "CREATE UNIQUE"), ("upsert", "INSERT"), ("upsert", "COMMIT")],
)
def test_duckdb_failure_rolls_back(tmp_path, monkeypatch, mode, fail_on):
    db = tmp_path / "s.duckdb"
    upsert_duckdb(_scores(4), db)
    before = _table(db)
    real_connect, wrapped = duckdb.connect, []

    def connect(*a, **k):
        wrapped.append(_FailingConnection(real_connect(*a, **k), fail_on))
        return wrapped[-1]

    monkeypatch.setattr(outputs.duckdb, "connect", connect)
    with pytest.raises(duckdb.IOException, match="injected"):
        upsert_duckdb(_scores(3, value=100.0), db, mode=mode)
    monkeypatch.undo()
    assert "ROLLBACK" in wrapped[0].statements
    pd.testing.assert_frame_equal(_table(db), before)
    # the database is still usable afterwards
    assert upsert_duckdb(_scores(3, value=2.0), db) == 3


def test_duckdb_bad_input(tmp_path):
    db = tmp_path / "s.duckdb"
    upsert_duckdb(_scores(2), db)
    before = _table(db)
    dup = pd.DataFrame({"customer_id": ["a", "a"], "x": [1.0, 2.0]})
    with pytest.raises(
        OutputError, match=r"s\.duckdb:customer_scores: key column 'customer_id' has duplicates"
    ):
        upsert_duckdb(dup, db)
    with pytest.raises(OutputError, match="missing values"):
        upsert_duckdb(pd.DataFrame({"customer_id": ["a", None], "x": [1.0, 2.0]}), db)
    with pytest.raises(OutputError, match="invalid table name"):
        upsert_duckdb(_scores(2), db, table="scores; DROP TABLE x")
    pd.testing.assert_frame_equal(_table(db), before)
    with pytest.raises(OutputError, match="no table 'other'"):
        read_table_for_lookup(db, table="other")


def test_output_errors_are_value_errors_naming_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown table extension"):  # OutputError is a ValueError
        outputs.table_format(tmp_path / "x.json")
    with pytest.raises(OutputError, match="expected a pandas DataFrame, got list"):
        write_table([1, 2], tmp_path / "x.parquet")
    with pytest.raises(OutputError, match="invalid key column name"):
        upsert_duckdb(_scores(2), tmp_path / "k.duckdb", key="customer id")
    with pytest.raises(OutputError, match="mode must be 'replace' or 'upsert'"):
        upsert_duckdb(_scores(2), tmp_path / "k.duckdb", mode="merge")
