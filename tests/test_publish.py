"""A night publishes all of its outputs or none (rebuy.publish, issue 14): one pointer switch, failures
leave the previous night live, a killed run is cleaned or rolled forward by the next one."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

import rebuy.outputs
import rebuy.publish
from models_common import trained_shop
from rebuy.bundle import read_latest_scores
from rebuy.config import Config
from rebuy.publish import CURRENT, NIGHTS_DIR, NIGHTS_TABLE, PUBLISH_LOCK, current_night_id, sealed_nights
from rebuy.scoring import Scorer, run_scoring


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> dict[str, Path]:
    return trained_shop(tmp_path_factory.mktemp("publishshop"), n_customers=2_000, seed=11, n_products=150)


def night(shop: dict, out_dir: Path, as_of: str | None = None, **kw):
    return run_scoring(shop["transactions"], models_dir=shop["root"] / "models", out=out_dir / "scores.parquet",
                       customers=shop["customers"], db=out_dir / "scores.duckdb", exports=out_dir / "exports",
                       as_of=as_of, **kw)


def snapshot(out_dir: Path, models: Path) -> dict[str, object]:
    """Everything a reader can see of the published night: file bytes through the views, the tables."""
    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    views = [out_dir / "scores.parquet", *sorted((out_dir / "offer_log").iterdir()), *sorted((out_dir / "exports").iterdir())]
    with duckdb.connect(str(out_dir / "scores.duckdb"), read_only=True) as con:
        tables = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").df().to_csv()
                  for t in ("customer_scores", "offer_log", NIGHTS_TABLE)}
    record = read_latest_scores(models)
    return {"files": {str(p.relative_to(out_dir)): digest(p) for p in views}, "tables": tables,
            "record": {k: str(v) for k, v in record.items()}, "current": current_night_id(out_dir / NIGHTS_DIR)}


def test_a_night_is_published_through_one_pointer(shop, tmp_path):
    run = night(shop, tmp_path, as_of="2024-12-30")
    root = tmp_path / NIGHTS_DIR
    live = current_night_id(root)
    for view in ("scores.parquet", "offer_log", "exports"):
        assert (tmp_path / view).is_symlink()
        assert (tmp_path / view).resolve().parent == (root / live).resolve()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "scores.parquet"), pd.read_parquet(run.out_path))
    record_file = shop["root"] / "models" / "latest_scores.json"
    before = record_file.read_bytes()
    night(shop, tmp_path)  # the next night: only `current` moves
    assert record_file.read_bytes() == before
    assert current_night_id(root) != live and sorted(sealed_nights(root)) == sorted([live, current_night_id(root)])
    with duckdb.connect(str(tmp_path / "scores.duckdb"), read_only=True) as con:
        db_nights = [r[0] for r in con.execute(f"SELECT night_id FROM {NIGHTS_TABLE} ORDER BY published_at").fetchall()]
    assert db_nights == [live, current_night_id(root)]
    assert sorted(p.name for p in (tmp_path / "offer_log").iterdir()) == ["score-20241231.parquet",
                                                                          "score-20250101.parquet"]


def test_a_reader_keeps_its_night_while_the_next_is_published(shop, tmp_path):
    night(shop, tmp_path, as_of="2024-12-30")
    held = read_latest_scores(shop["root"] / "models")["scores_path"]  # what a reader resolved
    seen = pd.read_parquet(held)
    night(shop, tmp_path)
    pd.testing.assert_frame_equal(pd.read_parquet(held), seen)
    assert not seen.equals(pd.read_parquet(tmp_path / "scores.parquet"))  # the view moved on, the night did not


@pytest.mark.parametrize("step", ["database", "exports", "seal"])
def test_a_failure_at_any_step_leaves_the_previous_night_live(shop, tmp_path, monkeypatch, step):
    import rebuy.exports

    first = night(shop, tmp_path, as_of="2024-12-30")
    models = shop["root"] / "models"
    scorer = Scorer.load(models / "latest")
    customer = str(first.scores["customer_id"].iloc[0])
    served = scorer.lookup(customer)
    before = snapshot(tmp_path, models)
    owner, name = {"database": (rebuy.outputs, "_append_run"), "exports": (rebuy.exports, "write_exports"),
                   "seal": (rebuy.publish.StagedNight, "seal")}[step]

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(owner, name, fail)
    with pytest.raises(OSError):
        night(shop, tmp_path)
    assert snapshot(tmp_path, models) == before
    hidden = [p.name for p in (tmp_path / NIGHTS_DIR).iterdir() if p.name.startswith(".")]
    assert hidden == [PUBLISH_LOCK]  # nothing staged left
    assert len(sealed_nights(tmp_path / NIGHTS_DIR)) == 1
    assert scorer.lookup(customer) == served


def test_a_run_killed_between_commit_and_switch_is_rolled_forward(shop, tmp_path, monkeypatch, caplog):
    night(shop, tmp_path, as_of="2024-12-30")
    live = current_night_id(tmp_path / NIGHTS_DIR)

    def killed(root, night_id):
        raise SystemExit(137)  # the process dies after COMMIT, before the rename

    monkeypatch.setattr(rebuy.publish, "switch_current", killed)
    with pytest.raises(SystemExit):
        night(shop, tmp_path)
    monkeypatch.undo()
    assert current_night_id(tmp_path / NIGHTS_DIR) == live  # files: last night; database: tonight
    with duckdb.connect(str(tmp_path / "scores.duckdb"), read_only=True) as con:
        committed = con.execute(f"SELECT night_id FROM {NIGHTS_TABLE} ORDER BY published_at DESC LIMIT 1").fetchone()[0]
    assert committed != live and committed in sealed_nights(tmp_path / NIGHTS_DIR)
    night(shop, tmp_path, as_of="2024-12-30")  # the next run rolls the committed night forward first
    assert any("committed to the database but not published" in r.getMessage() for r in caplog.records)
    assert committed in sealed_nights(tmp_path / NIGHTS_DIR)


KILL_AT_DATABASE = """
import os, signal, sys
from pathlib import Path
import rebuy.outputs
from rebuy.scoring import run_scoring
rebuy.outputs.upsert_db = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
shop, out = Path(sys.argv[1]), Path(sys.argv[2])
run_scoring(shop / "shop.parquet", models_dir=shop / "models", out=out / "scores.parquet",
            customers=shop / "shop_customers.parquet", db=out / "scores.duckdb", exports=out / "exports")
"""


def test_a_run_killed_before_the_database_commit_is_discarded(shop, tmp_path):
    night(shop, tmp_path, as_of="2024-12-30")
    root = tmp_path / NIGHTS_DIR
    live = current_night_id(root)
    before = snapshot(tmp_path, shop["root"] / "models")
    killed = subprocess.run([sys.executable, "-c", KILL_AT_DATABASE, str(shop["root"]), str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    orphan = [n for n in sealed_nights(root) if n != live]
    assert len(orphan) == 1  # sealed, never committed, never live
    assert snapshot(tmp_path, shop["root"] / "models") == before
    night(shop, tmp_path, as_of="2024-12-30")
    assert orphan[0] not in sealed_nights(root) and not (root / orphan[0]).exists()


def test_old_nights_are_pruned_and_their_log_files_live_on(shop, tmp_path):
    cfg = Config.model_validate({"operations": {"keep_nights": 2}})
    for day in ("2024-12-28", "2024-12-29", "2024-12-30"):
        night(shop, tmp_path, as_of=day, config=cfg)
    assert len(sealed_nights(tmp_path / NIGHTS_DIR)) == 2
    logs = sorted(p.name for p in (tmp_path / "offer_log").iterdir())
    assert logs == ["score-20241229.parquet", "score-20241230.parquet", "score-20241231.parquet"]
    assert set(pd.read_parquet(tmp_path / "offer_log")["run_id"]) == {n[:-8] for n in logs}


def test_outputs_of_an_older_version_become_views(shop, tmp_path):
    first = night(shop, tmp_path / "old", as_of="2024-12-30")
    legacy = tmp_path / "new"
    (legacy / "offer_log").mkdir(parents=True)
    old_log = pd.read_parquet(first.log_path)
    old_log.to_parquet(legacy / "offer_log" / "score-20241231.parquet")
    pd.read_parquet(first.out_path).to_parquet(legacy / "scores.parquet")  # a plain file, as before
    night(shop, legacy)
    assert (legacy / "scores.parquet").is_symlink() and (legacy / "offer_log").is_symlink()
    assert sorted(p.name for p in (legacy / "offer_log").iterdir()) == ["score-20241231.parquet", "score-20250101.parquet"]


def test_views_point_inside_the_output_directory(shop, tmp_path):
    night(shop, tmp_path)
    for view in ("scores.parquet", "offer_log", "exports"):
        target = os.readlink(tmp_path / view)
        assert not os.path.isabs(target) and target.startswith(f"{NIGHTS_DIR}/{CURRENT}/")


def test_doctor_names_the_live_night_and_what_a_killed_run_left(shop, tmp_path):
    from rebuy.doctor import nights

    models = shop["root"] / "models"
    night(shop, tmp_path)
    check = nights(models)
    assert check.status == "ok" and current_night_id(tmp_path / NIGHTS_DIR) in check.detail
    (tmp_path / NIGHTS_DIR / ".tmp-score-20250102-20261201T000000000000Z-abcd").mkdir()
    check = nights(models)
    assert check.status == "warn" and "1 unpublished leftover" in check.detail


def test_a_second_scores_file_in_the_same_directory_is_refused_before_scoring(shop, tmp_path):
    from rebuy.errors import OutputError

    night(shop, tmp_path)
    with pytest.raises(OutputError, match=r"already publishes the nights of scores.parquet"):
        run_scoring(shop["transactions"], models_dir=shop["root"] / "models", out=tmp_path / "other.parquet")
    assert (tmp_path / "scores.parquet").resolve().is_file()  # the first file's view still resolves


def test_a_second_run_into_the_same_outputs_from_another_models_dir_is_refused(shop, tmp_path):
    from rebuy.runlock import RunLockedError, run_lock

    night(shop, tmp_path)
    with run_lock(tmp_path / NIGHTS_DIR / PUBLISH_LOCK, what="score"):  # a run from another models directory
        with pytest.raises(RunLockedError, match=r"another rebuy score is running .*\.publish\.lock"):
            night(shop, tmp_path)


def test_a_run_that_fails_before_scoring_writes_nothing_beside_the_scores(tmp_path):
    from rebuy.errors import RebuyError

    with pytest.raises(RebuyError):
        run_scoring(tmp_path / "none.parquet", models_dir=tmp_path / "no-models", out=tmp_path / "out" / "scores.parquet")
    assert not (tmp_path / "out").exists()
