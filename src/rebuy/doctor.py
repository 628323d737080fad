"""``rebuy doctor``: is this machine ready for tonight's run?

Each check returns a :class:`Check` (``ok`` / ``warn`` / ``fail``, a name and one line of detail):
the Python and package versions, BLAS threads, the models directory (``latest`` loads with every
checksum verified), the transactions (read and cleaned with the config, as ``rebuy train`` would),
the database (a DuckDB file that opens, or a PostgreSQL URL that answers ``SELECT 1``), and the
optional tools (Java for Spark, Chromium for the report tests). A ``fail`` makes the command exit
2; ``warn`` is informational. Nothing is written.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rebuy.config import Config
from rebuy.errors import RebuyError

CORE_PACKAGES = ("numpy", "pandas", "scipy", "scikit-learn", "lifetimes", "implicit", "duckdb", "pyarrow",
                 "pydantic", "matplotlib")
OPTIONAL_PACKAGES = {"psycopg": "PostgreSQL sink (pip install 'rebuy[postgres]')",
                     "pyspark": "Spark scoring (pip install 'rebuy[spark]')"}


@dataclass(frozen=True)
class Check:
    status: str  # "ok", "warn" or "fail"
    name: str
    detail: str


def _guard(name: str, run: Callable[[], Check]) -> Check:
    """A check whose user error (or missing file) is a fail with its one line, not a traceback."""
    try:
        return run()
    except (RebuyError, OSError) as e:
        return Check("fail", name, str(e).splitlines()[0] if str(e) else type(e).__name__)


def environment() -> list[Check]:
    """Python, the core packages (fail when missing), the optional ones (warn), BLAS threads."""
    out = [Check("ok", "python", f"{platform.python_version()} ({platform.machine()})")]
    for name in CORE_PACKAGES:
        try:
            out.append(Check("ok", name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append(Check("fail", name, "not installed (pip install rebuy installs it)"))
    for name, use in OPTIONAL_PACKAGES.items():
        try:
            out.append(Check("ok", name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append(Check("warn", name, f"not installed: needed only for {use}"))
    threads = os.environ.get("OPENBLAS_NUM_THREADS")
    out.append(Check("ok", "OPENBLAS_NUM_THREADS", f"{threads or 'unset'} (rebuy holds BLAS at 1 thread around "
                                                   "the recommender itself, whatever this says)"))
    for tool, use in (("java", "Spark"), ("chromium", "the report's browser tests")):
        found = shutil.which(tool)
        out.append(Check("ok" if found else "warn", tool, found or f"not found: needed only for {use}"))
    return out


def models(models_dir: Path) -> Check:
    """``models_dir/latest`` loads, every checksum verified."""
    def run() -> Check:
        from rebuy.bundle import load_model_bundle

        t0 = time.perf_counter()
        bundle = load_model_bundle(models_dir / "latest")
        m = bundle.manifest
        return Check("ok", "models", f"{bundle.run_id}: trained {m.get('created_at', '?')}, as of {m.get('as_of', '?')}, "
                                     f"{m.get('params', {}).get('purchase_model', '?')}; loaded and verified in "
                                     f"{time.perf_counter() - t0:.1f} s")
    return _guard("models", run)


def nights(models_dir: Path) -> Check:
    """The published scoring night that ``latest_scores.json`` leads to, and what failed runs left."""
    def run() -> Check:
        from rebuy.bundle import read_latest_scores
        from rebuy.publish import unpublished

        record = read_latest_scores(models_dir)
        if record is None:
            return Check("warn", "scores", "no night published yet: run `rebuy score`")
        if not record.get("nights_dir"):
            return Check("ok", "scores", f"{record['scores_path']} (written by an older rebuy: not yet a night)")
        staging, newer = unpublished(Path(record["nights_dir"]))
        detail = f"night {record['night_id']}: {record['scores_path']}, as of {record.get('as_of')}"
        if staging or newer:
            return Check("warn", "scores", f"{detail}; {len(staging) + len(newer)} unpublished leftover(s) of a "
                                           "killed run: the next `rebuy score` cleans them (or rolls a committed "
                                           "night forward)")
        return Check("ok", "scores", detail)
    return _guard("scores", run)


def transactions(source: str, config: Config) -> Check:
    """The transactions read and cleaned with ``config`` (as ``rebuy train`` reads them)."""
    def run() -> Check:
        from rebuy.data import load_transactions

        t0 = time.perf_counter()
        tx = load_transactions(source, config, min_customers=1)
        return Check("ok", "transactions", f"{source}: {len(tx):,} clean lines, {tx['customer_id'].nunique():,} "
                                           f"customers, {tx['timestamp'].min():%Y-%m-%d} to "
                                           f"{tx['timestamp'].max():%Y-%m-%d} ({time.perf_counter() - t0:.1f} s)")
    return _guard("transactions", run)


def database(db: str) -> Check:
    """A DuckDB file that opens (created nowhere: a missing file needs a writable directory), or a
    PostgreSQL URL that answers."""
    def run() -> Check:
        if db.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError:
                return Check("fail", "database", "psycopg is not installed: pip install 'rebuy[postgres]'")
            with psycopg.connect(db, connect_timeout=5) as con:
                version = con.execute("SHOW server_version").fetchone()[0]
            return Check("ok", "database", f"PostgreSQL {version} answers")
        path = Path(db)
        if not path.exists():
            parent = path.resolve().parent
            writable = parent.is_dir() and os.access(parent, os.W_OK)
            return Check("ok" if writable else "fail", "database",
                         f"{path} does not exist yet; {parent} is {'writable' if writable else 'not writable'}")
        import duckdb

        with duckdb.connect(str(path), read_only=True) as con:
            tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return Check("ok", "database", f"{path}: tables {', '.join(sorted(tables)) or 'none yet'}")
    return _guard("database", run)


def run_checks(*, models_dir: Path | None, transactions_source: str | None, config: Config,
               db: str | None) -> list[Check]:
    """Every check that applies to the given paths."""
    out = environment()
    if models_dir is not None:
        out += [models(models_dir), nights(models_dir)]
    if transactions_source is not None:
        out.append(transactions(transactions_source, config))
    if db is not None:
        out.append(database(db))
    return out
