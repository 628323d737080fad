"""What each install gives: the report is a core job; the demo installs no test tools; the locks agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pins(lock: str) -> dict[str, str]:
    """name -> version of a requirements lock (environment markers dropped; one name may have several)."""
    out: dict[str, str] = {}
    for line in (REPO / lock).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            out.setdefault(m.group(1).lower().replace("_", "-"), m.group(2))
    return out


def test_the_report_needs_no_extra():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("matplotlib") for d in deps), "rebuy report draws with matplotlib: a core dependency"


def test_the_demo_lock_has_no_test_or_spark_tools_and_the_dev_lock_has_them():
    run, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert not {"pytest", "ruff", "pyspark", "nbclient"} & set(run)
    assert {"pytest", "ruff", "pyspark", "psycopg", "matplotlib"} <= set(dev) and "matplotlib" in run


def test_both_locks_pin_the_same_versions():
    run, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert set(run) <= set(dev)
    assert {name: v for name, v in run.items() if dev[name] != v} == {}


def test_make_demo_installs_the_run_lock_and_make_test_the_dev_lock():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: \$\(RUN_STAMP\)", makefile, re.M)
    assert re.search(r"^test: \$\(DEV_STAMP\)", makefile, re.M)
    assert "-r requirements.lock" in makefile and "-r requirements-dev.lock" in makefile
