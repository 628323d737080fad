"""Property-based bad-input suite (issue 14): hypothesis builds transactions, customers and events
tables and configs that are valid or malformed the way real exports are, and runs the real command
line (``rebuy.cli:app``, in-process) on them. The contract of every run:

- exit 0: the scores file has one row per valid customer (a customer with at least one valid
  purchase line: computed here from the generated lines, not by rebuy), every float column of the
  schema finite, and every published output (scores file, DuckDB tables, offer log,
  ``latest_scores.json``) is tonight's; or
- exit 2: exactly one line on stderr besides the JSON log lines (``--log-format json``), no
  traceback, and every output of the previous good night byte-identical, no file added or removed;
- never exit 1 (an internal error) or another code, never an exception out of the command.

Each scoring example first publishes a good night (train once per module, score the good data),
snapshots everything, then scores the generated night into the same paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from rebuy.cli import app
from rebuy.config import Config
from rebuy.schema import columns_of_kind, score_columns

pytestmark = pytest.mark.slow

COLUMNS = ["customer_id", "order_id", "timestamp", "product_id", "quantity", "price"]
PRODUCTS = [f"P{i}" for i in range(12)]
START = dt.date(2024, 1, 1)
FUTURE = (dt.date.today() + dt.timedelta(days=5 * 366)).isoformat()  # after today, whatever the machine date
SCORE_FLOATS = columns_of_kind(score_columns(Config()), "float")
SCORE_INTS = columns_of_kind(score_columns(Config()), "int")

PROPERTY = settings(derandomize=True, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- running the CLI
@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str
    warned: list[str]

    @property
    def error_lines(self) -> list[str]:
        """The stderr lines that are not JSON log records (what a person reads), and one line per
        Python warning (a real run prints each on stderr)."""
        lines = []
        for line in self.err.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not (isinstance(record, dict) and {"level", "logger", "message"} <= set(record)):
                lines.append(line)
        return lines + self.warned

    def explain(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}\n--- warnings\n{self.warned}"


def rebuy(*args: object) -> Run:
    """``rebuy --log-format json ARGS`` in this process, its exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        for noise in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", noise)  # libraries' notes to developers, not shown to users
        try:
            result = app(["--log-format", "json", *map(str, args)], prog_name="rebuy")
            code = 0 if result is None else result
        except SystemExit as exc:
            code = 0 if exc.code is None else exc.code
    warned = [f"{w.category.__name__}: {w.message}" for w in caught]
    return Run(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue(), warned)


def assert_contract(run: Run) -> None:
    """Exit 0, or exit 2 with one line; never a traceback or another code."""
    assert "Traceback" not in run.err + run.out, run.explain()
    assert run.code in (0, 2), run.explain()
    if run.code == 2:
        lines = [line for line in run.error_lines if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), run.explain()
        assert "internal error" not in lines[0], run.explain()


# ----------------------------------------------------------------------------- snapshots
def _db_tables(path: Path) -> dict[str, str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall())
        out = {}
        for name in names:
            df = con.execute(f'SELECT * FROM "{name}"').df()
            df = df.astype(str).sort_values(list(df.columns), kind="stable") if len(df.columns) else df
            out[name] = hashlib.sha256(df.to_csv(index=False).encode()).hexdigest()
        return out
    finally:
        con.close()


def snapshot(ws: Path) -> dict[str, object]:
    """Every path under the workspace: file bytes (sha256), symlink targets, directories; a DuckDB
    file by its tables' contents (its bytes may change when a failed run only read it)."""
    snap: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(ws):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(ws))
            if rel.startswith("night/"):
                continue  # the generated input files
            if path.is_symlink():
                snap[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                snap[rel] = ("dir",)
            elif name.endswith(".duckdb"):
                snap[rel] = ("duckdb", _db_tables(path))
            elif name.endswith(".duckdb.wal"):
                snap[rel] = ("wal",)
            else:
                snap[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return snap


def assert_unchanged(before: dict, after: dict, run: Run) -> None:
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"partial publish: added {added}, removed {removed}, " \
                                              f"changed {changed}\n{run.explain()}"


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class Line:
    customer: int
    spelling: str  # how the id is written in the file
    order: str
    day: int  # days after START
    product: str
    quantity: str
    price: str
    fate: str  # ok, huge_ok, cancel, zero_qty, bad_price, no_customer, future, absurd, dup

    def cells(self) -> dict[str, str]:
        ts = FUTURE + " 12:00:00" if self.fate == "future" else f"{START + dt.timedelta(days=self.day)} 10:30:00"
        return {"customer_id": "" if self.fate == "no_customer" else self.spelling, "order_id": self.order,
                "timestamp": ts, "product_id": self.product, "quantity": self.quantity, "price": self.price}


def good_lines(n_customers: int = 40, seed: int = 0) -> list[Line]:
    rng = np.random.default_rng(seed)
    lines = []
    for c in range(n_customers):
        days = np.sort(rng.integers(0, 355, rng.integers(1, 8)))
        for j, d in enumerate(days):
            lines.append(Line(10000 + c, str(10000 + c), f"O{c}-{j}", int(d), PRODUCTS[rng.integers(0, len(PRODUCTS))],
                              str(int(rng.integers(1, 4))), f"{rng.lognormal(2, 0.5):.2f}", "ok"))
    return lines


def csv_text(rows: list[dict[str, str]], columns: list[str], sep: str = ",") -> str:
    def cell(v: str) -> str:
        return f'"{v}"' if any(ch in v for ch in (sep, '"', "\n")) or v != v.strip() else v
    return "\n".join([sep.join(columns), *(sep.join(cell(r.get(c, "")) for c in columns) for r in rows)]) + "\n"


FATES = ["ok"] * 6 + ["huge_ok", "cancel", "zero_qty", "bad_price", "no_customer", "future", "absurd", "dup"]
SPELLINGS = [lambda i: str(i), lambda i: f"{i}.0", lambda i: f" {i}", lambda i: f"{i} ", lambda i: f"{i}.00"]


@st.composite
def night_lines(draw) -> list[Line]:
    n = draw(st.integers(1, 7))
    ids = draw(st.lists(st.integers(10000, 10060), min_size=n, max_size=n, unique=True))  # some unknown to the bundle
    one_day = draw(st.booleans()) and draw(st.booleans())
    lines: list[Line] = []
    for cid in ids:
        for j in range(draw(st.integers(1, 4))):
            fate = draw(st.sampled_from(FATES))
            if fate == "dup" and lines:
                lines.append(dataclasses.replace(lines[-1], fate="dup"))
                continue
            fate = "ok" if fate == "dup" else fate
            spelling = draw(st.sampled_from(SPELLINGS))(cid)
            qty = {"zero_qty": "0", "cancel": "-1"}.get(fate, str(draw(st.integers(1, 5))))
            price = {"huge_ok": "1e9", "bad_price": draw(st.sampled_from(["0", "-3.50", "0.00"])),
                     "absurd": draw(st.sampled_from(["1e300", "1e14", "5e308"]))}.get(
                fate, f"{draw(st.floats(0.01, 500, allow_nan=False)):.2f}")
            if price == "5e308":  # overflows to inf: a parse error, not a quarantine
                price = "1e300"
            order = f"C{cid}-{j}" if fate == "cancel" else f"O{cid}-{j}"
            day = 200 if one_day else draw(st.integers(0, 364))
            lines.append(Line(cid, spelling, order, day, draw(st.sampled_from(PRODUCTS + ["NEW1"])), qty, price, fate))
    return lines


VALID_FATES = {"ok", "huge_ok"}
TABLE_MUTATIONS = [
    "none", "none", "none", "none", "drop:quantity", "drop:order_id", "drop:product_id", "rename_mapped",
    "drop:customer_id", "drop:timestamp", "drop:price", "repeat:price", "rename_unmapped", "empty", "header_only",
    "latin1_description", "latin1_id", "semicolon", "text_price", "nan_quantity", "bad_date", "impossible_date",
    "far_date", "inf_price", "day_first_date", "blank_lines", "bom", "comma_decimal", "currency_price",
    "padded_numbers", "float_quantity", "tz_mixed",
]
EXACT_MUTATIONS = {"none", "drop:quantity", "drop:order_id", "drop:product_id", "rename_mapped", "blank_lines",
                   "padded_numbers", "float_quantity"}


def expected_customers(lines: list[Line], mutation: str, cutoff: dt.date | None) -> set[str] | None:
    """The valid customers of the night (None when the mutation leaves it undefined)."""
    if mutation not in EXACT_MUTATIONS:
        return None
    valid = set(VALID_FATES) | ({"zero_qty"} if mutation == "drop:quantity" else set())
    return {str(line.customer) for line in lines if line.fate in valid
            and (cutoff is None or START + dt.timedelta(days=line.day) <= cutoff)}


def write_transactions(path: Path, lines: list[Line], mutation: str) -> list[str]:
    """Write the night's transactions with one table-level mutation; the extra CLI arguments it needs."""
    rows = [line.cells() for line in lines]
    cols, args, sep = list(COLUMNS), [], ","
    kind, _, col = mutation.partition(":")
    if kind == "drop":
        cols.remove(col)
    elif kind == "repeat":
        cols.append(col)
    elif mutation in ("rename_mapped", "rename_unmapped"):
        for r in rows:
            r["Customer ID"] = r.pop("customer_id")
        cols[0] = "Customer ID"
        if mutation == "rename_mapped":
            args = ["--column", "customer_id=Customer ID"]
    elif mutation == "semicolon":
        sep = ";"
    elif rows and mutation in ("text_price", "nan_quantity", "bad_date", "impossible_date", "far_date",
                               "inf_price", "day_first_date", "comma_decimal", "currency_price", "tz_mixed"):
        key, value = {"text_price": ("price", "twelve"), "nan_quantity": ("quantity", "NaN"),
                      "bad_date": ("timestamp", "not a date"), "impossible_date": ("timestamp", "2024-13-45"),
                      "far_date": ("timestamp", "9999-01-01"), "inf_price": ("price", "inf"),
                      "day_first_date": ("timestamp", "31/12/2024"), "comma_decimal": ("price", "3,50"),
                      "currency_price": ("price", "\u00a33.50"),
                      "tz_mixed": ("timestamp", "2024-05-01T10:00:00+02:00")}[mutation]
        rows[len(rows) // 2][key] = value
    elif mutation == "padded_numbers":
        for r in rows:
            r["price"], r["quantity"] = f" {r['price']} ", f"{r['quantity']} "
    elif mutation == "float_quantity":
        for r in rows:
            r["quantity"] = f"{r['quantity']}.0"
    elif mutation == "latin1_description":
        cols.append("description")
        for r in rows:
            r["description"] = "Caf\udce9 cr\udce8me"  # surrogates: written back as raw latin-1 bytes
    elif mutation == "latin1_id" and rows:
        rows[0]["customer_id"] = rows[0]["customer_id"] + "\udce9"
    text = csv_text(rows, cols, sep)
    if mutation == "empty":
        text = ""
    elif mutation == "header_only":
        text = ",".join(COLUMNS) + "\n"
    elif mutation == "blank_lines":
        text = text.replace("\n", "\n\n", 2)
    data = text.encode("utf-8", errors="surrogateescape")
    if mutation == "bom":
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(data)
    return args


@st.composite
def customers_tables(draw, ids: list[int]) -> tuple[str, str] | None:
    """None (no --customers) or (kind, CSV text); kind 'ok' or the malformation."""
    kind = draw(st.sampled_from(["none", "ok", "ok", "negative_age", "age_200", "text_age", "bad_birth",
                                 "future_birth", "bad_consent", "duplicate_id", "no_id_column", "mixed_ids",
                                 "extra_customers", "only_unknown", "empty", "header_only", "latin1"]))
    if kind == "none":
        return None
    chosen = sorted(set(ids)) if kind != "only_unknown" else [99990, 99991]
    if kind == "extra_customers":
        chosen += [99990, 99991]
    rows = []
    for i in chosen:
        rows.append({"customer_id": str(i), "age": str(draw(st.integers(16, 90))),
                     "birth_date": f"{draw(st.integers(1940, 2005))}-0{draw(st.integers(1, 9))}-1{draw(st.integers(0, 9))}",
                     "consent_email": draw(st.sampled_from(["1", "0", "yes", "no", "TRUE", ""])),
                     "consent_sms": draw(st.sampled_from(["y", "n", "true", "false"]))})
    cols = ["customer_id", "age", "birth_date", "consent_email", "consent_sms"]
    if rows:
        first = rows[0]
        if kind == "negative_age":
            first["age"] = "-4"
        elif kind == "age_200":
            first["age"] = "200"
        elif kind == "text_age":
            first["age"] = "forty"
        elif kind == "bad_birth":
            first["birth_date"] = "1990-02-30"
        elif kind == "future_birth":
            first["birth_date"], first["age"] = "2031-01-01", ""
        elif kind == "bad_consent":
            first["consent_sms"] = "maybe"
        elif kind == "duplicate_id":
            rows.append(dict(first))
        elif kind == "no_id_column":
            cols = cols[1:]
        elif kind == "mixed_ids":
            for r, spell in zip(rows, SPELLINGS, strict=False):
                r["customer_id"] = spell(int(r["customer_id"]))
        elif kind == "latin1":
            first["acquisition_channel"] = "r\udce9seau"
            cols = [*cols, "acquisition_channel"]
    if kind == "empty":
        return kind, ""
    if kind == "header_only":
        return kind, ",".join(cols) + "\n"
    return kind, csv_text(rows, cols)


@st.composite
def events_tables(draw, ids: list[int]) -> tuple[str, str] | None:
    kind = draw(st.sampled_from(["none", "ok", "ok", "unknown_event", "missing_product", "bad_timestamp",
                                 "no_event_column", "unknown_customers_and_products", "future", "empty",
                                 "header_only", "semicolon"]))
    if kind == "none":
        return None
    rows = [{"customer_id": str(i), "product_id": draw(st.sampled_from(PRODUCTS)),
             "timestamp": f"2024-12-{draw(st.integers(10, 28))} 09:00:00",
             "event": draw(st.sampled_from(["view", "cart", "VIEW", " Cart "]))} for i in sorted(set(ids))]
    cols = ["customer_id", "product_id", "timestamp", "event"]
    if kind == "unknown_event":
        rows[0]["event"] = "purchase"
    elif kind == "missing_product":
        rows[0]["product_id"] = ""
    elif kind == "bad_timestamp":
        rows[0]["timestamp"] = "yesterday"
    elif kind == "no_event_column":
        cols = cols[:3]
    elif kind == "unknown_customers_and_products":
        rows.append({"customer_id": "424242", "product_id": "ZZZ", "timestamp": "2024-12-01", "event": "view"})
    elif kind == "future":
        rows[0]["timestamp"] = FUTURE
    elif kind == "empty":
        return kind, ""
    elif kind == "header_only":
        return kind, ",".join(cols) + "\n"
    return kind, csv_text(rows, cols, ";" if kind == "semicolon" else ",")


BAD_CONFIGS: list[tuple[str, bytes]] = [
    ("unknown_key", b"clv:\n  margn: 0.3\n"),
    ("unknown_top_key", b"shop_name: test\n"),
    ("wrong_type", b"clv:\n  margin: lots\n"),
    ("out_of_range_rate", b"clv:\n  discount_rate: 50\n"),
    ("out_of_range_share", b"offers:\n  control_share: 2.0\n"),
    ("negative_horizon", b"clv:\n  horizon_months: -3\n"),
    ("impossible_date", b"as_of: 2024-13-45\n"),
    ("non_utf8", b"clv:\n  margin: 0.3  # caf\xe9\n"),
    ("bad_purchase_model", b"purchase_model: gpt\n"),
    ("not_a_mapping", b"- clv\n- offers\n"),
    ("invalid_yaml", b"clv: [margin: 0.3\n"),
    ("section_not_mapping", b"clv: 0.3\n"),
    ("unknown_canonical_column", b"data:\n  columns:\n    custid: Customer\n"),
    ("mapped_column_missing", b"data:\n  columns:\n    customer_id: Kunde\n"),
    ("bad_time_unit", b"time_unit: fortnights\n"),
    ("null_section", b"clv:\n"),
    ("nan_margin", b"clv:\n  margin: .nan\n"),
    ("inf_rate", b"clv:\n  discount_rate: .inf\n"),
    ("huge_int", b"recommend:\n  n_items: 100000000000000000000000\n"),
    ("bad_channels", b"offers:\n  channels: email\n"),
]
GOOD_CONFIGS: list[tuple[str, bytes]] = [
    ("margin", b"clv:\n  margin: 0.45\n"),
    ("control", b"offers:\n  control_share: 0.2\n  min_control: 1\n"),
    ("empty", b""),
    ("comment_only", b"# nothing\n"),
    ("horizons", b"clv:\n  horizons_days: [30, 90, 365, 60]\n"),
]


@st.composite
def score_configs(draw) -> tuple[str, bytes] | None:
    which = draw(st.sampled_from(["none", "none", "good", "bad"]))
    if which == "none":
        return None
    return draw(st.sampled_from(GOOD_CONFIGS if which == "good" else BAD_CONFIGS))


# ----------------------------------------------------------------------------- the good night
@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """A good shop (40 customers), a bundle trained on it (``models``) and its side tables."""
    root = tmp_path_factory.mktemp("properties")
    lines = good_lines()
    (root / "tx.csv").write_text(csv_text([line.cells() for line in lines], COLUMNS))
    ids = sorted({line.customer for line in lines})
    (root / "customers.csv").write_text(csv_text(
        [{"customer_id": str(i), "age": str(18 + i % 60), "consent_email": "1", "consent_sms": "yes"} for i in ids],
        ["customer_id", "age", "consent_email", "consent_sms"]))
    (root / "events.csv").write_text(csv_text(
        [{"customer_id": str(i), "product_id": PRODUCTS[i % 12], "timestamp": "2024-12-20 08:00:00", "event": "view"}
         for i in ids], ["customer_id", "product_id", "timestamp", "event"]))
    run = rebuy("train", "--transactions", root / "tx.csv", "--customers", root / "customers.csv",
                "--models-dir", root / "models")
    assert run.code == 0, run.explain()
    return root


def good_night(shop: Path) -> Path:
    """A fresh workspace: a copy of the trained models and a published good night in ``out``."""
    ws = Path(tempfile.mkdtemp(dir=shop, prefix="ws-"))
    shutil.copytree(shop / "models", ws / "models", symlinks=True)
    (ws / "night").mkdir()
    run = rebuy("score", "--transactions", shop / "tx.csv", "--customers", shop / "customers.csv",
                "--events", shop / "events.csv", "--models-dir", ws / "models", "--out", ws / "out" / "scores.parquet",
                "--db", ws / "out" / "scores.duckdb")
    assert run.code == 0, run.explain()
    return ws


def _records(value: object) -> list[dict]:
    """The JSON record and, when it names a nights directory, the live night's record."""
    out = [value] if isinstance(value, dict) else []
    if isinstance(value, dict) and value.get("nights_dir"):
        night = Path(value["nights_dir"]) / "current" / "night.json"
        if night.is_file():
            out.append(json.loads(night.read_text()))
    return out


def assert_tonights(ws: Path, run: Run, expected: set[str] | None, known_ids: set[str]) -> None:
    """Exit 0: one row per valid customer, finite floats, and every output tonight's."""
    scores = pd.read_parquet(ws / "out" / "scores.parquet")
    ids = scores["customer_id"].astype(str)
    assert ids.is_unique, run.explain()
    if expected is not None:
        assert set(ids) == expected, f"scored {sorted(ids)}, valid {sorted(expected)}\n{run.explain()}"
    else:
        assert set(ids) <= known_ids, f"scored {sorted(set(ids) - known_ids)} not in the input\n{run.explain()}"
    summary = re.search(r"^customers\s+([\d,]+)$", run.out, re.M)
    assert summary and int(summary.group(1).replace(",", "")) == len(scores), run.explain()
    for col in SCORE_FLOATS:
        vals = scores[col].to_numpy(dtype=float)
        assert np.isfinite(vals).all(), f"{col} not finite: {scores.loc[~np.isfinite(vals), ['customer_id', col]]}"
    for col in SCORE_INTS:
        assert scores[col].notna().all(), col
    bundle = os.readlink(ws / "models" / "latest")
    assert set(scores["model_run_id"]) == {Path(bundle).name}, run.explain()
    scored_at = set(scores["scored_at"])
    assert len(scored_at) == 1, scored_at
    con = duckdb.connect(str(ws / "out" / "scores.duckdb"), read_only=True)
    try:
        db = con.execute("SELECT customer_id, model_run_id, scored_at FROM customer_scores").df()
        night_run = re.search(r"run (score-\d{8})", run.out).group(1)
        log_rows = con.execute("SELECT customer_id, scored_at FROM offer_log WHERE run_id = ?", [night_run]).df()
    finally:
        con.close()
    assert sorted(db["customer_id"]) == sorted(ids) and set(db["model_run_id"]) == set(scores["model_run_id"])
    assert set(db["scored_at"]) == scored_at, "the database holds another night's scores"
    offered = set(scores.loc[scores["offer_type"] != "none", "customer_id"])
    assert set(log_rows["customer_id"]) == offered and set(log_rows["scored_at"]) <= scored_at
    log_file = ws / "out" / "offer_log" / f"{night_run}.parquet"
    if offered:
        logged = pd.read_parquet(log_file)
        assert set(logged["customer_id"]) == offered and set(logged["scored_at"]) == scored_at
    record = json.loads((ws / "models" / "latest_scores.json").read_text())
    for rec in _records(record):
        for key in ("run_id", "model_run_id"):
            if key in rec and rec[key] is not None and not str(rec[key]).startswith("score-"):
                assert rec[key] == Path(bundle).name, (key, rec)


def check_night(shop: Path, lines: list[Line], mutation: str, cutoff: dt.date | None,
                customers: tuple[str, str] | None, events: tuple[str, str] | None,
                config: tuple[str, bytes] | None) -> Run:
    ws = good_night(shop)
    try:
        before = snapshot(ws)
        night = ws / "night"
        args = ["score", "--transactions", night / "tx.csv", "--models-dir", ws / "models",
                "--out", ws / "out" / "scores.parquet", "--db", ws / "out" / "scores.duckdb"]
        args += write_transactions(night / "tx.csv", lines, mutation)
        if cutoff is not None:
            args += ["--as-of", cutoff.isoformat()]
        if customers is not None:
            (night / "customers.csv").write_bytes(customers[1].encode("utf-8", errors="surrogateescape"))
            args += ["--customers", night / "customers.csv"]
        if events is not None:
            (night / "events.csv").write_bytes(events[1].encode("utf-8", errors="surrogateescape"))
            args += ["--events", night / "events.csv"]
        if config is not None:
            (night / "rebuy.yaml").write_bytes(config[1])
            args += ["--config", night / "rebuy.yaml"]
        run = rebuy(*args)
        event(f"exit {run.code}")
        assert_contract(run)
        expected = expected_customers(lines, mutation, cutoff)
        malformed = (customers is not None and customers[0] not in ("ok", "extra_customers", "future_birth")) or \
                    (events is not None and events[0] not in ("ok", "unknown_customers_and_products", "future")) or \
                    (config is not None and config in BAD_CONFIGS)
        if run.code == 0:
            assert not (config is not None and config in BAD_CONFIGS), f"bad config {config[0]} accepted"
            assert_tonights(ws, run, expected, {str(line.customer) for line in lines})
        else:
            assert_unchanged(before, snapshot(ws), run)
            # a good night (valid tables, at least two valid customers) must not be refused
            assert not (expected is not None and len(expected) >= 2 and not malformed), \
                f"a valid night was refused\n{run.explain()}"
        return run
    finally:
        shutil.rmtree(ws, ignore_errors=True)


# ----------------------------------------------------------------------------- properties
def _lines(*specs: tuple[int, str, str, int, str]) -> list[Line]:
    """Explicit lines: (customer, spelling, fate, day, price)."""
    out = []
    for j, (cid, spelling, fate, day, price) in enumerate(specs):
        qty = {"zero_qty": "0", "cancel": "-1"}.get(fate, "2")
        out.append(Line(cid, spelling, f"{'C' if fate == 'cancel' else 'O'}{cid}-{j}", day, "P1", qty, price, fate))
    return out


MIXED_IDS = _lines((13085, "13085", "ok", 10, "3.5"), (13085, "13085.0", "ok", 40, "7"), (13085, " 13085", "ok", 90, "2"),
                   (20001, "20001", "ok", 100, "4"), (20001, "20001", "cancel", 120, "4"))
ALL_BAD = _lines((13085, "13085", "cancel", 10, "3.5"), (20001, "20001", "absurd", 40, "1e300"),
                 (20002, "20002", "bad_price", 40, "0"), (20003, "20003", "future", 0, "5"))
ONE_CUSTOMER = _lines((13085, "13085", "ok", 10, "3.5"), (13085, "13085", "ok", 20, "3.5"))
ONE_DAY = _lines((1, "1", "ok", 300, "3"), (2, "2", "ok", 300, "1e9"), (3, "3", "ok", 300, "0.01"))
DEGENERATE_BGNBD = _lines((2, "2", "ok", 1, "49.27"), (2, "2", "ok", 340, "54.55"), (2, "2", "ok", 0, "78.60"),
                         (2, "2", "ok", 0, "129.02"), (3, "3", "ok", 0, "320.76"), (4, "4", "ok", 0, "337.72"),
                         (4, "4", "ok", 227, "445.83"), (5, "5", "ok", 0, "476.01"))
"""Four customers on which BG/NBD fits a, b -> 0 and exits 1 (FloatingPointError): see the report."""
REFUNDED = _lines((1, "1", "ok", 5, "10"), (1, "1", "cancel", 6, "10"), (2, "2", "ok", 7, "3"))


@settings(PROPERTY, max_examples=30)
@given(lines=night_lines(), mutation=st.sampled_from(TABLE_MUTATIONS),
       cutoff=st.sampled_from([None, None, None, dt.date(2024, 12, 31), dt.date(2024, 6, 30)]))
@example(lines=MIXED_IDS, mutation="none", cutoff=None)
@example(lines=ALL_BAD, mutation="none", cutoff=None)
@example(lines=ONE_CUSTOMER, mutation="none", cutoff=None)
@example(lines=ONE_DAY, mutation="none", cutoff=None)
@example(lines=REFUNDED, mutation="drop:order_id", cutoff=None)
@example(lines=MIXED_IDS, mutation="latin1_id", cutoff=None)
@example(lines=MIXED_IDS, mutation="semicolon", cutoff=None)
@example(lines=MIXED_IDS, mutation="empty", cutoff=None)
@example(lines=MIXED_IDS, mutation="impossible_date", cutoff=None)
def test_scoring_a_malformed_transactions_night(shop, lines, mutation, cutoff) -> None:
    check_night(shop, lines, mutation, cutoff, None, None, None)


@settings(PROPERTY, max_examples=25)
@given(data=st.data(), lines=night_lines())
def test_scoring_with_malformed_customers_events_and_configs(shop, data, lines) -> None:
    ids = [line.customer for line in lines]
    customers = data.draw(customers_tables(ids), "customers")
    events = data.draw(events_tables(ids), "events")
    config = data.draw(score_configs(), "config")
    check_night(shop, lines, "none", None, customers, events, config)


def tree(path: Path) -> dict[str, object]:
    return snapshot(path) if path.exists() else {}


@settings(PROPERTY, max_examples=6)
@given(config=st.one_of(st.sampled_from(BAD_CONFIGS), st.sampled_from(
    [("bgnbd", b"purchase_model: bgnbd\n"), ("days", b"time_unit: days\nsegments:\n  n_clusters: 3\n"),
     ("as_of", b"as_of: 2024-10-31\n"), ("no_recommender", b"recommend:\n  enabled: false\n")])),
    mutation=st.sampled_from(["none", "none", "none", "text_price", "drop:price", "header_only", "drop:product_id"]))
@example(config=("impossible_date", b"as_of: 2024-13-45\n"), mutation="none")
@example(config=("bgnbd", b"purchase_model: bgnbd\n"), mutation="none")  # BG/NBD a -> 0: see the report
@example(config=("non_utf8", b"clv:\n  margin: 0.3  # caf\xe9\n"), mutation="none")
def test_training_with_malformed_configs(shop, config, mutation) -> None:
    ws = Path(tempfile.mkdtemp(dir=shop, prefix="train-"))
    try:
        shutil.copytree(shop / "models", ws / "models", symlinks=True)
        (ws / "night").mkdir()
        (ws / "night" / "rebuy.yaml").write_bytes(config[1])
        args = write_transactions(ws / "night" / "tx.csv", good_lines(25, seed=3), mutation)
        before = tree(ws)
        run = rebuy("train", "--transactions", ws / "night" / "tx.csv", "--config", ws / "night" / "rebuy.yaml",
                    "--models-dir", ws / "models", *args)
        event(f"exit {run.code}")
        assert_contract(run)
        if run.code == 0:
            assert config not in BAD_CONFIGS, f"bad config {config[0]} accepted\n{run.explain()}"
            latest = ws / "models" / "latest"
            assert os.readlink(latest) != os.readlink(shop / "models" / "latest")
            manifest = json.loads((latest / "manifest.json").read_text())
            assert manifest["training_data"]["customers"] == 25
            assert not [p for p in (ws / "models").iterdir() if p.name.startswith(".tmp")]
        else:
            assert_unchanged(before, tree(ws), run)
    finally:
        shutil.rmtree(ws, ignore_errors=True)


@settings(PROPERTY, max_examples=8)
@given(lines=night_lines(), mutation=st.sampled_from(TABLE_MUTATIONS))
@example(lines=ONE_DAY, mutation="none")
@example(lines=MIXED_IDS, mutation="drop:product_id")
@example(lines=DEGENERATE_BGNBD, mutation="none")
def test_training_on_a_malformed_shop(shop, lines, mutation) -> None:
    ws = Path(tempfile.mkdtemp(dir=shop, prefix="train-"))
    try:
        shutil.copytree(shop / "models", ws / "models", symlinks=True)
        (ws / "night").mkdir()
        args = write_transactions(ws / "night" / "tx.csv", lines, mutation)
        before = tree(ws)
        run = rebuy("train", "--transactions", ws / "night" / "tx.csv", "--models-dir", ws / "models", *args)
        event(f"exit {run.code}")
        assert_contract(run)
        expected = expected_customers(lines, mutation, None)
        if run.code == 0:
            manifest = json.loads((ws / "models" / "latest" / "manifest.json").read_text())
            assert os.readlink(ws / "models" / "latest") != os.readlink(shop / "models" / "latest")
            if expected is not None:
                assert manifest["training_data"]["customers"] == len(expected), run.explain()
        else:
            assert_unchanged(before, tree(ws), run)
    finally:
        shutil.rmtree(ws, ignore_errors=True)
