"""Faults of the user's environment and edited files: one line naming the path or key, exit 2, never a traceback.

Read-only directories and databases run the CLI as ``nobody`` with no capabilities (``setpriv``: these
machines run as root); full disks are a 64 KiB tmpfs; file-size limits are ``RLIMIT_FSIZE`` with
SIGXFSZ ignored (the write fails with EFBIG instead of killing the process); the DuckDB lock is held
by another process. Cases that need no privilege change run in-process (faster).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from rebuy.cli import app
from rebuy.errors import OutputError

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) [\w.]+: ")
"""A log record on stderr (text format); everything else there must be the one error line."""

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
CHILD = """
import os, resource, signal, sys
limit = os.environ.get("REBUY_TEST_FSIZE")
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
sys.argv[0] = "rebuy"
from rebuy.cli import app
app()
"""


# --------------------------------------------------------------------------------------------- helpers


def _error_line(code: int, stderr: str) -> str:
    """The single error line of a failed run (exit 2, no traceback, nothing but log records besides)."""
    assert "Traceback" not in stderr, stderr
    others = [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert code == 2 and len(others) == 1 and others[0].startswith("error: "), (code, stderr)
    return others[0]


def cli(*args: object) -> str:
    """Run rebuy in-process; the error line."""
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return _error_line(res.exit_code, res.stderr)


def cli_child(*args: object, cwd: Path, nobody: bool = False, fsize: int | None = None) -> str:
    """Run rebuy in a subprocess (as ``nobody`` without capabilities, or under a file-size limit)."""
    env = {**os.environ, "REBUY_TEST_FSIZE": str(fsize or "")}
    cmd = [*(NOBODY if nobody else []), sys.executable, "-c", CHILD, *map(str, args)]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return _error_line(done.returncode, done.stderr)


@pytest.fixture(scope="module")
def shop() -> Iterator[Path]:
    """A world-readable directory (nobody can read it) with a small shop and its trained bundle."""
    root = Path(tempfile.mkdtemp(prefix="rebuy-faults-"))
    try:
        os.chmod(root, 0o755)
        res = CliRunner().invoke(app, ["simulate", "--customers", "500", "--seed", "3", "--products", "40",
                                       "--out", str(root / "shop.parquet")])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(app, ["train", "--transactions", str(root / "shop.parquet"), "--models-dir",
                                       str(root / "models"), "--purchase-model", "bgnbd"])
        assert res.exit_code == 0, res.output
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                os.chmod(path, 0o777 if path.is_dir() else 0o666)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _dir(root: Path, name: str, mode: int = 0o777) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    os.chmod(path, mode)
    return path


def _score(shop: Path, out: object, *more: object, models: object = None) -> list[object]:
    return ["score", "--transactions", shop / "shop.parquet", "--models-dir", models or shop / "models",
            "--out", out, *more]


def _train(shop: Path, models_dir: object, *more: object) -> list[object]:
    return ["train", "--transactions", shop / "shop.parquet", "--models-dir", models_dir,
            "--purchase-model", "bgnbd", *more]


needs_setpriv = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                   reason="permission cases drop root's capabilities with setpriv")


@pytest.fixture
def full_disk(shop: Path) -> Iterator[Path]:
    """An empty 64 KiB tmpfs (the disk fills at once)."""
    mnt = _dir(shop, "full")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0777", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# --------------------------------------------------------------------------------------------- read-only


@needs_setpriv
def test_read_only_output_directory(shop):
    ro = _dir(shop, "ro", 0o555)
    line = cli_child(*_score(shop, ro / "scores.parquet"), cwd=shop, nobody=True)
    assert str(ro) in line and "permission denied" in line


@needs_setpriv
def test_read_only_models_directory_for_train(shop):
    ro = _dir(shop, "ro-models", 0o555)
    line = cli_child(*_train(shop, ro), cwd=shop, nobody=True)
    assert f"error: {ro}: permission denied" in line


@needs_setpriv
def test_read_only_models_directory_for_score(shop):
    models = _dir(shop, "ro-models")
    shutil.copytree(shop / "models", models, symlinks=True, dirs_exist_ok=True)
    os.chmod(models, 0o555)
    out = _dir(shop, "out")
    line = cli_child(*_score(shop, out / "scores.parquet", models=models), cwd=shop, nobody=True)
    assert f"error: {models / 'latest_scores.json'}: permission denied" in line


@needs_setpriv
def test_read_only_database(shop):
    out = _dir(shop, "out")
    db = out / "scores.duckdb"
    duckdb.connect(str(db)).close()
    os.chmod(db, 0o444)
    line = cli_child(*_score(shop, out / "scores.parquet", "--db", db), cwd=shop, nobody=True)
    assert f"error: {db}: permission denied" in line


# --------------------------------------------------------------------------------------------- full disk, size limit


def test_disk_full_while_writing_scores(shop, full_disk):
    line = cli(*_score(shop, full_disk / "scores.parquet"))
    assert str(full_disk) in line and "no space left on device" in line


def test_disk_full_while_writing_the_database(shop, full_disk):
    out = _dir(shop, "out")
    line = cli(*_score(shop, out / "scores.parquet", "--db", full_disk / "scores.duckdb"))
    assert f"error: {full_disk / 'scores.duckdb'}: no space left on device" in line


def test_disk_full_while_writing_the_bundle(shop, full_disk):
    line = cli(*_train(shop, full_disk / "models"))
    assert f"error: {full_disk / 'models'}: no space left on device" in line
    assert not (full_disk / "models" / "latest").exists()


def test_file_size_limit_while_writing_scores(shop):
    out = _dir(shop, "out")
    line = cli_child(*_score(shop, out / "scores.parquet"), cwd=shop, fsize=20_000)
    assert str(out) in line and "file too large" in line and "ulimit -f" in line


def test_file_size_limit_while_writing_the_database(shop):
    out = _dir(shop, "out")
    line = cli_child(*_score(shop, out / "scores.parquet", "--db", out / "scores.duckdb"), cwd=shop, fsize=300_000)
    assert f"error: {out / 'scores.duckdb'}: file too large" in line


def test_file_size_limit_while_writing_the_bundle(shop):
    models = _dir(shop, "models")
    line = cli_child(*_train(shop, models), cwd=shop, fsize=20_000)
    assert f"error: {models}: file too large" in line


# --------------------------------------------------------------------------------------------- wrong kinds of path


def test_output_whose_parent_is_a_file(shop):
    parent = _dir(shop, "out") / "a-file"
    parent.write_text("not a directory")
    line = cli(*_score(shop, parent / "scores.parquet"))
    assert str(parent) in line and "is a file, not a directory" in line


def test_output_that_is_a_directory(shop):
    out = _dir(shop, "out") / "scores.parquet"
    out.mkdir()
    line = cli(*_score(shop, out))
    assert f"error: {out}: is a directory" in line


def test_db_that_is_not_a_duckdb_file(shop):
    out = _dir(shop, "out")
    db = out / "x.duckdb"
    db.write_text("hello, not a database\n")
    line = cli(*_score(shop, out / "scores.parquet", "--db", db))
    assert f"error: {db}: not a DuckDB database file" in line
    assert db.read_text() == "hello, not a database\n"


@pytest.mark.parametrize("command", ["score", "train"])
def test_models_directory_that_is_a_file(shop, command):
    models = _dir(shop, "out") / "models"
    models.write_text("a file")
    args = _score(shop, models.parent / "s.parquet", models=models) if command == "score" else _train(shop, models)
    line = cli(*args)
    assert f"error: {models}: " in line and "not a" in line


def test_database_locked_by_another_run(shop):
    out = _dir(shop, "out")
    db = out / "scores.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
                               "print('ready', flush=True); time.sleep(120)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        line = cli(*_score(shop, out / "scores.parquet", "--db", db))
    finally:
        holder.kill()
        holder.wait()
    assert f"error: {db}: locked by another process (PID {holder.pid}" in line and "retry after" in line


# --------------------------------------------------------------------------------------------- edited manifests


def _edited_bundle(shop: Path, tmp_path: Path, edit) -> Path:
    models = tmp_path / "models"
    shutil.copytree(shop / "models", models, symlinks=True)
    manifest_path = models / "latest" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    edit(manifest)
    manifest_path.write_text(json.dumps(manifest))
    return models


def test_manifest_whose_artefact_list_was_edited(shop, tmp_path):
    """An extra entry pointing at another artefact's file (checksum and size copied): KeyError before."""
    def edit(m):
        m["artefacts"]["bgnbd"] = dict(m["artefacts"]["purchase_model"])

    models = _edited_bundle(shop, tmp_path, edit)
    line = cli(*_score(shop, tmp_path / "s.parquet", models=models))
    assert "manifest.json: malformed manifest: artefacts.bgnbd.file" in line


@pytest.mark.parametrize("entry, key", [("not a table", "artefacts.purchase_model"),
                                        ({"file": "../x.joblib", "sha256": "0" * 64}, "artefacts.purchase_model.file"),
                                        ({"file": "purchase_model.joblib", "sha256": 3}, "artefacts.purchase_model.sha256")])
def test_manifest_with_a_malformed_artefact_entry(shop, tmp_path, entry, key):
    def edit(m):
        m["artefacts"]["purchase_model"] = entry

    models = _edited_bundle(shop, tmp_path, edit)
    line = cli(*_score(shop, tmp_path / "s.parquet", models=models))
    assert f"manifest.json: malformed manifest: {key}" in line


def test_manifest_config_that_does_not_validate(shop, tmp_path):
    def edit(m):
        m["config"]["time_unit"] = "months"

    models = _edited_bundle(shop, tmp_path, edit)
    line = cli(*_score(shop, tmp_path / "s.parquet", models=models))
    assert "manifest.json: invalid config: config.time_unit: Input should be 'days' or 'weeks'" in line


# --------------------------------------------------------------------------------------------- config files


@pytest.mark.parametrize("command", ["config", "train"])
def test_config_with_an_impossible_date(shop, tmp_path, command):
    path = tmp_path / "bad.yaml"
    path.write_text("as_of: 2024-13-45\n")
    args = ["config"] if command == "config" else _train(shop, tmp_path / "m")
    line = cli(*args, "--config", path)
    assert f"error: {path}: invalid config: as_of: " in line


@pytest.mark.parametrize("command", ["config", "train"])
def test_config_that_is_not_utf8(shop, tmp_path, command):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# caf\u00e9\nas_of: '2024-01-01'\n".encode("latin-1"))
    args = ["config"] if command == "config" else _train(shop, tmp_path / "m")
    line = cli(*args, "--config", path)
    assert f"error: {path}: not UTF-8 text" in line


def test_a_valid_date_still_loads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("as_of: 2024-02-29\n")
    res = CliRunner().invoke(app, ["config", "--config", str(path)])
    assert res.exit_code == 0 and json.loads(res.stdout)["as_of"] == "2024-02-29"


# --------------------------------------------------------------------------------------------- not dressed up


def test_other_os_errors_stay_internal_errors(monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr("rebuy.cli.load_config", broken)
    res = CliRunner().invoke(app, ["config"])
    assert res.exit_code == 1 and "internal error (OSError" in res.stderr


def test_read_only_postgres_is_one_line(postgres_url):
    from rebuy.postgres import upsert_postgres

    url = postgres_url + "&options=-c%20default_transaction_read_only%3Don"
    df = pd.DataFrame({"customer_id": ["1", "2"], "clv_12m": [1.0, 2.0]})
    with pytest.raises(OutputError, match="customer_scores: the database is read-only") as info:
        upsert_postgres(df, url)
    assert "\n" not in str(info.value)
