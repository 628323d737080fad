"""One run at a time per models directory (issue 14): the run lock, leftovers of killed runs, pruning.

A holder is a separate process (:func:`_hold`) that takes :func:`rebuy.runlock.run_lock` as
``rebuy score`` would, says so on stdout and keeps the lock until it is told to go (stdin closed),
its time is up, or it is killed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from rebuy.bundle import latest_run_id, list_bundles, read_latest_scores, record_latest_scores, write_bundle
from rebuy.cli import app
from rebuy.config import Config
from rebuy.runlock import LOCK_NAME, RunLockedError, read_holder, run_lock
from rebuy.scoring import Scorer, run_scoring
from rebuy.simulate import simulate
from rebuy.train import train

SETTINGS = {"purchase_model": "bgnbd", "clv": {"method": "model"}}

HOLDER = """
import sys, time
from rebuy.runlock import run_lock
path, seconds = sys.argv[1], float(sys.argv[2])
with run_lock(path, what="score", timeout_seconds=0):
    print("locked", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
print("released", flush=True)
sys.stdin.read()
"""


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[pd.DataFrame, Path]:
    """Simulated transactions and a models directory trained on them (copied by :func:`models`)."""
    tx = simulate(n_customers=500, seed=1, n_products=40, events=False).transactions
    models = tmp_path_factory.mktemp("shop") / "models"
    train(tx, Config.model_validate(SETTINGS), models_dir=models)
    return tx, models


@pytest.fixture
def tx(shop) -> pd.DataFrame:
    return shop[0]


@pytest.fixture
def models(shop, tmp_path) -> Path:
    """This test's own copy of the trained models directory."""
    return Path(shutil.copytree(shop[1], tmp_path / "models", symlinks=True))


@contextmanager
def _hold(models: Path, seconds: float = 60.0) -> Iterator[subprocess.Popen[str]]:
    """A process holding ``models/.rebuy.lock`` (for ``seconds``, then released while it lives on)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(models / LOCK_NAME), str(seconds)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _score(tx: pd.DataFrame, models: Path, out: Path, **settings: object) -> object:
    config = Config.model_validate({**SETTINGS, **settings}) if settings else None
    return run_scoring(tx, models_dir=models, out=out, config=config)


# --------------------------------------------------------------------------------------------- the lock


def test_second_run_is_refused_with_the_holders_pid(tx, models, tmp_path):
    out = tmp_path / "out" / "scores.parquet"
    with _hold(models) as holder:
        with pytest.raises(RunLockedError) as info:
            _score(tx, models, out)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(f"{models}: another rebuy score is running (pid {holder.pid}, started 20")
    assert f"it holds {models / LOCK_NAME}" in line and "operations.lock_timeout_seconds" in line
    assert not out.exists() and read_latest_scores(models) is None  # nothing of this run was written


def test_with_a_timeout_the_run_waits_for_the_holder_then_succeeds(tx, models, tmp_path, monkeypatch, caplog):
    started: list[float] = []
    load = Scorer.load
    monkeypatch.setattr(Scorer, "load", classmethod(lambda cls, path: (started.append(time.monotonic()),
                                                                         load(path))[1]))
    out = tmp_path / "scores.parquet"
    with _hold(models, seconds=1.5) as holder, caplog.at_level(logging.INFO, logger="rebuy.runlock"):
        t0 = time.monotonic()
        run = _score(tx, models, out, operations={"lock_timeout_seconds": 30})
        assert holder.stdout is not None and holder.stdout.readline().strip() == "released"
    assert started[0] - t0 >= 1.0  # the bundle was loaded only after the holder let go
    assert run.out_path == out and out.is_file()
    assert f"waiting up to 30s: another rebuy score holds the lock (pid {holder.pid}" in caplog.text


def test_lock_file_of_a_killed_process_does_not_block(tmp_path):
    lock = tmp_path / "models" / LOCK_NAME
    with _hold(tmp_path / "models") as holder:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    assert json.loads(lock.read_text())["pid"] == holder.pid  # the dead run's record is still there
    assert read_holder(lock) is None
    with run_lock(lock, what="train", timeout_seconds=0):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert lock.read_text() == ""


# --------------------------------------------------------------------------------------------- leftovers


def _leftovers(models: Path, out: Path) -> list[Path]:
    """What killed runs leave: a half-written bundle, a staged offer-log file, a scores temporary."""
    (models / ".tmp-20261201T030000000000Z-abcdef").mkdir()
    (models / ".tmp-20261201T030000000000Z-abcdef" / "purchase_model.joblib").write_bytes(b"half")
    (out.parent / "offer_log").mkdir(parents=True)
    staged = out.parent / "offer_log" / ".0a1b2c3d-score-20261201.parquet"
    temp = out.parent / f".{out.name}.tmp-deadbeef"
    for path in (staged, temp):
        path.write_bytes(b"partial")
    return [models / ".tmp-20261201T030000000000Z-abcdef", staged, temp]


def test_leftovers_of_killed_runs_are_removed_by_the_next_run(tx, models, tmp_path, caplog):
    out = tmp_path / "out" / "scores.parquet"
    leftovers = _leftovers(models, out)
    unrelated = out.parent / ".keep-me"
    unrelated.write_text("not rebuy's")
    with caplog.at_level(logging.INFO, logger="rebuy.runlock"):
        run = _score(tx, models, out)
    assert not any(p.exists() for p in leftovers) and unrelated.exists()
    lines = [r.getMessage() for r in caplog.records if "leftover(s) of killed runs" in r.getMessage()]
    assert len(lines) == 2, lines  # one line for the models directory, one beside the scores
    assert "removed 1 leftover(s)" in lines[0] and "removed 2 leftover(s)" in lines[1], lines
    assert run.log_path.is_file() and out.is_file()


def test_leftovers_are_only_swept_under_the_lock(tx, models, tmp_path):
    out = tmp_path / "out" / "scores.parquet"
    live = _leftovers(models, out)  # while a run holds the lock, these are its files
    with _hold(models), pytest.raises(RunLockedError):
        _score(tx, models, out)
    assert all(p.exists() for p in live)


# --------------------------------------------------------------------------------------------- pruning


def test_train_prunes_to_keep_bundles_but_keeps_the_scoring_bundle(tx, tmp_path):
    models = tmp_path / "models"
    old = [f"2020010{k}T000000000000Z-aaaaaa" for k in range(1, 5)]
    for run_id in old:
        write_bundle(models, {"a": run_id}, {}, run_id=run_id)
    record_latest_scores(models, tmp_path / "scores.parquet", run_id=old[0])  # tonight's scores came from old[0]
    train(tx, Config.model_validate({**SETTINGS, "operations": {"keep_bundles": 2}}), models_dir=models)
    new = latest_run_id(models)
    assert [p.name for p in list_bundles(models)] == [old[0], old[3], new]


# --------------------------------------------------------------------------------------------- command line


def test_cli_score_under_a_held_lock_exits_2_with_one_line(shop, models, tmp_path):
    data = tmp_path / "shop.parquet"
    shop[0].to_parquet(data)
    with _hold(models) as holder:
        res = CliRunner().invoke(app, ["score", "--transactions", str(data), "--models-dir", str(models),
                                       "--out", str(tmp_path / "scores.parquet")])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {models}: another rebuy score is running (pid {holder.pid}")
