"""Shared fixtures: a throwaway PostgreSQL server for the PostgreSQL tests, a local Spark session.

``postgres_url`` starts one cluster per test session with Debian's server binaries
(``/usr/lib/postgresql/*/bin/initdb`` and ``pg_ctl``; ``.ci/run`` installs the ``postgresql``
package when they are missing) in a temporary directory, listening on a unix socket only (no
TCP), with trust authentication, and stops it at the end. Running as root (CI containers), the
server runs as the ``postgres`` user, since initdb refuses root. Missing binaries fail the tests
with a clear message; they are never skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_DATABASE = "rebuy_test"


def _pg_bin() -> Path:
    found = sorted(glob.glob(f"{PG_BIN_GLOB}/pg_ctl"), key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        pytest.fail(f"PostgreSQL server binaries not found ({PG_BIN_GLOB}/pg_ctl): install Debian's `postgresql` "
                    "package (apt-get install postgresql; .ci/run does it) to run the PostgreSQL tests")
    return Path(found[-1]).parent


def _as_server_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as ``postgres`` when we are root (initdb and postgres refuse to run as root)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _run(cmd: list[str]) -> None:
    done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:2])} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` URL of a fresh database on a throwaway server (unix socket, no password)."""
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="rebuy-pg-"))  # short path: a socket path has ~100 chars at most
    user = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        server = pwd.getpwnam("postgres")
        os.chown(root, server.pw_uid, server.pw_gid)
        user = "postgres"
    data, sock = root / "data", root
    _run([str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"])
    _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "start",
          "-o", f"-c listen_addresses='' -c unix_socket_directories={sock} -c fsync=off"])
    try:
        base = f"postgresql://{user}@/%s?host={sock}"
        import psycopg

        with psycopg.connect(base % "postgres", autocommit=True) as con:
            con.execute(f"CREATE DATABASE {PG_DATABASE}")
        yield base % PG_DATABASE
    finally:
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def spark():
    """A Spark local-mode session (2 threads, UTC session time zone, Arrow on) for one test module."""
    from pyspark.sql import SparkSession

    # executors (Python workers) must run this interpreter, which has rebuy and pyarrow
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("rebuy-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
