"""PostgreSQL as the nightly sink, against a real throwaway server (``postgres_url`` in conftest.py)."""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import pandas as pd
import psycopg
import pytest

from rebuy import Scorer
from rebuy.bundle import read_latest_scores, record_latest_scores
from rebuy.config import Config
from rebuy.errors import OutputError
from rebuy.postgres import has_password, is_postgres_url, read_postgres_table, safe_url, upsert_postgres
from rebuy.scoring import run_scoring
from rebuy.simulate import simulate, write_simulation
from rebuy.train import train

FAST = {"purchase_model": "bgnbd", "clv": {"method": "model"}}


def _frame(run: str, n: int) -> pd.DataFrame:
    """A score-like table of one run: every column kind, ``n`` customers."""
    return pd.DataFrame({
        "customer_id": pd.array([f"{i}" for i in range(n)], dtype="string"),
        "segment": pd.array(["Loyal Customers"] * n, dtype="string"),
        "r_score": np.arange(n, dtype=np.int64) % 5 + 1,
        "clv_12m": np.linspace(0, 100, n),
        "deliver": np.arange(n) % 2 == 0,
        "last_purchase": pd.Timestamp("2024-12-30") - pd.to_timedelta(np.arange(n) % 30, unit="D"),
        "recommended_products": [["p1", "p2"] if i % 3 else [] for i in range(n)],
        "model_run_id": pd.array([run] * n, dtype="string"),
    })


def _log(run_id: str, n: int) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": pd.array([str(i) for i in range(n)], dtype="string"),
                         "run_id": pd.array([run_id] * n, dtype="string"), "offer_value": np.full(n, 0.1)})


def _count(url: str, sql: str, params=()) -> int:
    with psycopg.connect(url) as con:
        return con.execute(sql, params).fetchone()[0]


@pytest.fixture
def db(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as con:
        for table in ("customer_scores", "offer_log"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
    return postgres_url


def test_replace_and_append_in_one_transaction(db):
    assert upsert_postgres(_frame("a", 50), db, appends={"offer_log": (_log("score-1", 10), "run_id", "score-1")}) == 50
    assert upsert_postgres(_frame("b", 30), db, appends={"offer_log": (_log("score-1", 7), "run_id", "score-1")}) == 30
    upsert_postgres(_frame("b", 30), db, appends={"offer_log": (_log("score-2", 4), "run_id", "score-2")})
    assert _count(db, "SELECT count(*) FROM customer_scores WHERE model_run_id = 'b'") == 30
    assert _count(db, "SELECT count(*) FROM offer_log WHERE run_id = 'score-1'") == 7  # a rerun replaced its rows
    assert _count(db, "SELECT count(*) FROM offer_log") == 11
    back = read_postgres_table(db)
    assert back.loc["1", "recommended_products"] == ["p1", "p2"] and back.loc["0", "recommended_products"] == []
    assert back.loc["1", "last_purchase"] == pd.Timestamp("2024-12-29") and bool(back.loc["0", "deliver"]) is True
    with psycopg.connect(db) as con:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'customer_scores'").fetchall())
    assert types["r_score"] == "bigint" and types["clv_12m"] == "double precision"
    assert types["recommended_products"] == "ARRAY" and types["last_purchase"] == "timestamp without time zone"


def test_a_failed_write_leaves_the_previous_table_and_log(db):
    upsert_postgres(_frame("a", 20), db, appends={"offer_log": (_log("score-1", 5), "run_id", "score-1")})
    bad_log = _log("score-2", 3).rename(columns={"offer_value": "other"})
    with pytest.raises(OutputError, match="columns differ"):
        upsert_postgres(_frame("b", 40), db, appends={"offer_log": (bad_log, "run_id", "score-2")})
    assert _count(db, "SELECT count(*) FROM customer_scores WHERE model_run_id = 'a'") == 20
    assert _count(db, "SELECT count(*) FROM offer_log") == 5


def test_new_columns_recreate_the_table(db):
    upsert_postgres(_frame("a", 10), db)
    upsert_postgres(_frame("b", 12).assign(clv_24m=1.0), db)
    assert "clv_24m" in read_postgres_table(db).columns


def _poll(url: str, stop: threading.Event, seen: list, isolation: str = "READ COMMITTED") -> None:
    with psycopg.connect(url, autocommit=True) as con:
        while not stop.is_set():
            seen.append(con.execute("SELECT count(*), count(DISTINCT model_run_id), min(model_run_id) "
                                    "FROM customer_scores").fetchone())


def test_a_reader_never_sees_an_empty_partial_or_mixed_table(db):
    """Two nights of different sizes replace each other while readers poll the table."""
    nights = {"a": _frame("a", 20_000), "b": _frame("b", 15_000)}
    upsert_postgres(nights["a"], db)
    stop, seen = threading.Event(), [[], []]
    readers = [threading.Thread(target=_poll, args=(db, stop, s)) for s in seen]
    for r in readers:
        r.start()
    try:
        for run in "babab":
            upsert_postgres(nights[run], db, appends={"offer_log": (_log(f"score-{run}", 100), "run_id", f"score-{run}")})
    finally:
        stop.set()
        for r in readers:
            r.join(timeout=30)
    polls = seen[0] + seen[1]
    assert len(polls) > 20, "the readers barely ran"
    assert {(n, runs) for n, runs, _ in polls} <= {(20_000, 1), (15_000, 1)}
    for n, _, run in polls:
        assert n == len(nights[run])
    assert {run for _, _, run in polls} == {"a", "b"}  # the readers saw both nights


def test_a_repeatable_read_reader_keeps_its_snapshot(db):
    """DELETE + COPY is MVCC-safe: a transaction begun before the nightly write still sees the old rows
    (TRUNCATE or a table swap would show it an empty table)."""
    upsert_postgres(_frame("a", 100), db)
    with psycopg.connect(db) as con:
        con.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        con.execute("SELECT 1").fetchone()  # the snapshot is taken here
        upsert_postgres(_frame("b", 60), db)
        assert con.execute("SELECT count(*), min(model_run_id) FROM customer_scores").fetchone() == (100, "a")
        con.rollback()
    assert _count(db, "SELECT count(*) FROM customer_scores") == 60


def test_passwords_are_stripped():
    url = "postgresql://rebuy:s3cret@db.example:5432/shop?sslmode=require&password=x"
    assert safe_url(url) == "postgresql://rebuy@db.example:5432/shop?sslmode=require"
    assert has_password(url) and not has_password(safe_url(url))
    assert safe_url("postgresql://rebuy@/shop?host=/run/postgresql") == "postgresql://rebuy@/shop?host=/run/postgresql"
    assert is_postgres_url("postgresql:///shop") and is_postgres_url("postgres://h/db")
    assert not is_postgres_url("scores.duckdb") and not is_postgres_url(None)


def test_record_never_stores_a_password(tmp_path):
    record_latest_scores(tmp_path, tmp_path / "s.parquet", db_path="postgresql://u:hunter2@h/db")
    assert "hunter2" not in (tmp_path / "latest_scores.json").read_text()
    info = read_latest_scores(tmp_path)
    assert info["db_url"] == "postgresql://u@h/db" and info["db_path"] is None and info["table"] == "customer_scores"


def test_without_psycopg_a_postgres_db_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(OutputError, match=r"postgresql://u@h/db: .*pip install 'rebuy\[postgres\]'") as err:
        upsert_postgres(_frame("a", 3), "postgresql://u:pw@h/db")
    assert "pw" not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(OutputError, match="pip install"):  # before any scoring (no models needed to fail)
        run_scoring(tmp_path / "none.parquet", models_dir=tmp_path, out=tmp_path / "s.parquet", db="postgresql:///x")


def test_an_unreachable_server_is_one_clear_error(tmp_path):
    with pytest.raises(OutputError, match=r"postgresql://u@/db\?host=.*: cannot connect to PostgreSQL"):
        upsert_postgres(_frame("a", 3), f"postgresql://u:pw@/db?host={tmp_path}")


@pytest.fixture(scope="module")
def nightly_pg(tmp_path_factory, postgres_url) -> dict:
    root = tmp_path_factory.mktemp("pgshop")
    paths = write_simulation(simulate(n_customers=500, seed=9, n_products=60), root / "shop.parquet")
    models = root / "models"
    train(paths["transactions"], Config.model_validate(FAST), models_dir=models, customers=paths["customers"])
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute("DROP TABLE IF EXISTS customer_scores")
        con.execute("DROP TABLE IF EXISTS offer_log")
    run = run_scoring(paths["transactions"], models_dir=models, out=root / "scores.parquet",
                      customers=paths["customers"], events=paths["events"], db=postgres_url)
    return {"root": root, "models": models, "run": run, "url": postgres_url}


def test_rebuy_score_writes_scores_and_offer_log_to_postgres(nightly_pg):
    run, url = nightly_pg["run"], nightly_pg["url"]
    assert run.db_path == url
    assert _count(url, "SELECT count(*) FROM customer_scores") == len(run.scores)
    logged = run.experiment["logged"]
    assert logged > 0 and _count(url, "SELECT count(*) FROM offer_log WHERE run_id = %s", [run.experiment["run_id"]]) == logged
    info = read_latest_scores(nightly_pg["models"])
    assert info["db_url"] == url and info["table"] == "customer_scores"


def test_lookup_serves_from_postgres(nightly_pg):
    run = nightly_pg["run"]
    run.out_path.unlink()  # the file is gone: every row must come from PostgreSQL
    scorer = Scorer.load(nightly_pg["models"] / "latest")
    nightly = run.scores.set_index("customer_id")
    for cid in nightly.index:
        row = scorer.lookup(cid)
        json.dumps(row, allow_nan=False)
    cid = nightly.index[7]
    row = scorer.lookup(f" {cid} ")
    assert row["segment"] == nightly.loc[cid, "segment"]
    assert row["clv_12m"] == pytest.approx(nightly.loc[cid, "clv_12m"])
    assert row["last_purchase"] == nightly.loc[cid, "last_purchase"].strftime("%Y-%m-%d")
    assert row["recommended_products"] == list(nightly.loc[cid, "recommended_products"])
    assert row["scored_at"].endswith("Z") and row["deliver"] is bool(nightly.loc[cid, "deliver"])
    assert scorer.lookup_run_id == scorer.run_id
    # tonight's write is seen without reloading the Scorer
    time.sleep(0.01)
    upsert_postgres(run.scores.assign(segment="Lost"), nightly_pg["url"])
    record_latest_scores(nightly_pg["models"], run.out_path, db_path=nightly_pg["url"], run_id=scorer.run_id)
    assert scorer.lookup(cid)["segment"] == "Lost"


def test_a_url_given_as_a_path_is_refused(tmp_path):
    from pathlib import Path

    from rebuy.errors import UsageError

    with pytest.raises(UsageError, match="must be passed as a string"):
        run_scoring(tmp_path / "none.parquet", models_dir=tmp_path, out=tmp_path / "s.parquet",
                    db=Path("postgresql://u@h/db"))


def test_a_night_committed_to_postgres_but_never_published_is_rolled_forward(nightly_pg, tmp_path, monkeypatch):
    import rebuy.publish
    from rebuy.publish import NIGHTS_DIR, current_night_id, sealed_nights

    def night(as_of: str | None = None):
        return run_scoring(nightly_pg["root"] / "shop.parquet", models_dir=nightly_pg["models"],
                           out=tmp_path / "scores.parquet", db=nightly_pg["url"], as_of=as_of)

    night("2024-12-30")
    root = tmp_path / NIGHTS_DIR
    live = current_night_id(root)

    def killed(root, night_id):
        raise SystemExit(137)  # dies after COMMIT, before the rename

    monkeypatch.setattr(rebuy.publish, "switch_current", killed)
    with pytest.raises(SystemExit):
        night()
    monkeypatch.undo()
    orphan = [n for n in sealed_nights(root) if n != live]
    assert current_night_id(root) == live and len(orphan) == 1
    assert rebuy.publish.committed_nights(nightly_pg["url"], orphan) == set(orphan)
    rebuy.scoring._recover_nights(tmp_path / "scores.parquet", nightly_pg["url"])
    assert current_night_id(root) == orphan[0]
    assert _count(nightly_pg["url"], "SELECT count(*) FROM customer_scores") == len(pd.read_parquet(tmp_path / "scores.parquet"))
