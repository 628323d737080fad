"""Writing and reading score tables: atomic files (Parquet/CSV) and one-transaction DuckDB tables.

- :func:`write_table` picks the format by extension (``.parquet``, ``.csv``, ``.csv.gz``), writes a
  temporary file in the same directory, flushes and fsyncs it, then ``os.replace`` s it over the
  target: readers see the old file or the new one, never a half-written one.
- :func:`upsert_duckdb` writes a DataFrame into an embedded DuckDB database inside ONE transaction
  (BEGIN ... COMMIT, ROLLBACK on any error). Default ``mode="replace"``: the table's whole contents
  become this run's rows (the nightly table is a snapshot of the latest scoring, so customers absent
  from tonight's run do not keep stale scores, and re-running the same night gives the same rows).
  ``mode="upsert"`` instead deletes the rows whose key is in ``df`` and inserts ``df``, keeping other
  rows. List columns become DuckDB lists (``VARCHAR[]``).
- :func:`read_table_for_lookup` reads any of these back, indexed by the key, list columns as lists.

Errors: an unknown extension, a table or key name that is not a plain identifier, a missing,
incomplete or duplicated key column, a frame Arrow cannot convert or a missing table is an
:class:`~rebuy.errors.OutputError` (a ``ValueError``) naming the file (and table). DuckDB errors of
the user's environment (another process holding the lock, a file that is not a DuckDB database,
permission denied, disk full, file-size limit) become ``OutputError`` naming the database, after the
rollback; other DuckDB errors pass through. ``OSError`` passes through, naming the target file
rather than the temporary one (:func:`atomic_file`).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import logging
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rebuy.errors import ENVIRONMENT_ERRNOS, OutputError, at_path, hint_for_message

logger = logging.getLogger(__name__)

DEFAULT_TABLE = "customer_scores"
DEFAULT_KEY = "customer_id"
DUCKDB_SUFFIXES = (".duckdb", ".db")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SOURCE_VIEW = "_rebuy_upsert_source"


def table_format(path: str | os.PathLike[str]) -> Literal["parquet", "csv", "csv.gz"]:
    """The file format implied by ``path``'s extension; ``OutputError`` naming the path otherwise."""
    name = Path(path).name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".csv.gz"):
        return "csv.gz"
    if name.endswith(".csv"):
        return "csv"
    raise OutputError(f"{path}: unknown table extension (use .parquet, .csv or .csv.gz)")


def _is_listlike(v: Any) -> bool:
    return isinstance(v, list | tuple | np.ndarray)


def list_columns(df: pd.DataFrame) -> list[str]:
    """Columns of ``df`` whose non-null cells are lists (or tuples / numpy arrays)."""
    out = []
    for col in df.columns:
        if df[col].dtype != object:
            continue
        values = df[col].dropna()
        if len(values) and values.map(_is_listlike).all():
            out.append(col)
    return out


def _with_key_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Move a meaningful (non-default) index into columns; drop a default RangeIndex."""
    if isinstance(df.index, pd.RangeIndex) and df.index.name is None:
        return df
    return df.reset_index()


def _json_list(v: Any) -> Any:
    if v is None or (not _is_listlike(v) and pd.isna(v)):
        return None
    return json.dumps([x.item() if isinstance(x, np.generic) else x for x in v], ensure_ascii=False)


def _to_arrow(df: pd.DataFrame, where: str) -> pa.Table:
    """Arrow table of ``df``; lists of nothing get a string element type (not ``null``)."""
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise OutputError(f"{where}: cannot convert the table: {exc}") from None
    fields = []
    for field in table.schema:
        if pa.types.is_list(field.type) and pa.types.is_null(field.type.value_type):
            field = field.with_type(pa.list_(pa.string()))
        elif pa.types.is_null(field.type):
            field = field.with_type(pa.string())
        fields.append(field)
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table.cast(schema) if schema != table.schema else table


def non_finite_columns(df: pd.DataFrame) -> list[str]:
    """Numeric columns of ``df`` holding NaN or +-inf."""
    numeric = df.select_dtypes(include="number")
    return [
        c for c in numeric.columns if not np.isfinite(numeric[c].to_numpy(dtype=float, na_value=np.nan)).all()
    ]


def _warn_non_finite(df: pd.DataFrame, where: str) -> None:
    bad = non_finite_columns(df)
    if bad:
        logger.warning("%s: columns %s contain NaN or inf", where, bad)


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit flush, fsync and ``os.replace`` it over ``path``.

    On any error the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
            raise at_path(exc, path) from exc  # name the target, not the temp file
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, then ``os.replace``."""
    with atomic_file(path) as fh:
        fh.write(data)
    return Path(path)


def to_jsonable(obj: Any, where: str = "value") -> Any:
    """Convert to plain JSON types (numpy, pandas, dates, Paths, pydantic); non-finite floats become null."""
    if obj is None or isinstance(obj, bool | str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, set | frozenset):
        return sorted((to_jsonable(v, where) for v in obj), key=str)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dt.datetime | dt.date | dt.time):
        return obj.isoformat()
    if hasattr(obj, "model_dump"):  # pydantic models (e.g. the Config)
        return to_jsonable(obj.model_dump(mode="json"), where)
    if hasattr(obj, "isoformat"):  # pandas Timestamp (NaT != NaT)
        return None if obj != obj else obj.isoformat()
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:  # numpy scalar
        return to_jsonable(obj.item(), where)
    if hasattr(obj, "tolist"):  # numpy array / pandas Series
        return to_jsonable(obj.tolist(), where)
    raise TypeError(f"{where}: value of type {type(obj).__name__} cannot be written as JSON")


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN/inf become null)."""
    data = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"
    out = atomic_write_bytes(path, data.encode("utf-8"))
    logger.info("wrote %s", out)
    return out


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``df`` to ``path`` atomically: Parquet for ``.parquet``, CSV for ``.csv`` / ``.csv.gz``.

    A non-default index is written as column(s). In CSV, list columns are written as JSON arrays
    (``["p1", "p2"]``); :func:`read_table_for_lookup` turns them back into lists. Gzip output has a
    fixed header time, so the same frame gives the same bytes. On any error the previous file at
    ``path`` is left untouched and the temporary file is removed. Returns ``path``.
    """
    path = Path(path)
    fmt = table_format(path)
    if not isinstance(df, pd.DataFrame):
        raise OutputError(f"{path}: expected a pandas DataFrame, got {type(df).__name__}")
    df = _with_key_columns(df)
    _warn_non_finite(df, str(path))
    if fmt == "parquet":
        table = _to_arrow(df, str(path))
        with atomic_file(path) as fh:
            pq.write_table(table, fh)
    else:
        lists = list_columns(df)
        if lists:
            df = df.assign(**{c: df[c].map(_json_list) for c in lists})
        if fmt == "csv.gz":
            with atomic_file(path) as fh:
                # fixed name and time in the gzip header: same frame, same bytes
                with gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=fh, mtime=0, compresslevel=6) as gz:
                    with io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
                        df.to_csv(text, index=False)
        else:
            with atomic_file(path, "w", encoding="utf-8", newline="") as fh:
                df.to_csv(fh, index=False)
    logger.info("wrote %d rows to %s", len(df), path)
    return path


_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


def _duckdb_problem(message: str) -> str | None:
    """What is wrong and what to do, for a DuckDB error caused by the user's file or disk; else None."""
    lock = _LOCK_RE.search(message)
    if lock:
        return (f"locked by another process (PID {lock['pid']}, {lock['program']}): another rebuy run or "
                "a reader holds the database; retry after that run ends")
    if "not a valid DuckDB database file" in message:
        return "not a DuckDB database file: give the .duckdb file rebuy score writes, or a new path"
    return hint_for_message(message)


@contextmanager
def duckdb_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn DuckDB errors of the user's environment (lock held by another run, not a DuckDB file,
    read-only, disk full, file-size limit) into one-line :class:`OutputError` naming ``path``;
    other DuckDB errors pass through."""
    try:
        yield
    except duckdb.Error as exc:
        problem = _duckdb_problem(str(exc))
        if problem is None:
            raise
        raise OutputError(f"{path}: {problem}") from None


def _check_ident(name: str, what: str) -> str:
    if not isinstance(name, str) or not _IDENT_RE.match(name):
        raise OutputError(f"invalid {what} {name!r}: use letters, digits and '_', not starting with a digit")
    return name


def _check_key(df: pd.DataFrame, key: str, where: str) -> None:
    if key not in df.columns:
        raise OutputError(f"{where}: key column {key!r} is missing (columns: {list(df.columns)})")
    if df[key].isna().any():
        raise OutputError(f"{where}: key column {key!r} has {int(df[key].isna().sum())} missing values")
    dup = df[key][df[key].duplicated()]
    if len(dup):
        raise OutputError(f"{where}: key column {key!r} has duplicates, e.g. {dup.iloc[0]!r}")


def upsert_duckdb(
    df: pd.DataFrame,
    db_path: str | os.PathLike[str],
    table: str = DEFAULT_TABLE,
    key: str = DEFAULT_KEY,
    *,
    mode: Literal["replace", "upsert"] = "replace",
    appends: Mapping[str, tuple[pd.DataFrame, str, str]] | None = None,
) -> int:
    """Write ``df`` into table ``table`` of the DuckDB file ``db_path`` in one transaction.

    ``mode="replace"`` (default): the table's contents become exactly ``df`` (table recreated with
    ``df``'s schema and a unique index on ``key``). ``mode="upsert"``: rows whose ``key`` is in
    ``df`` are deleted and ``df`` inserted; other rows stay (the columns must match the existing
    table's). Either way re-running with the same frame gives the same table, and any error rolls
    back, leaving the previous table exactly as it was. Returns the table's row count after commit.

    ``appends`` maps further tables to ``(rows, run column, run id)``: in the same transaction the
    table's rows of that run are deleted and ``rows`` inserted (an append-only log where a rerun
    replaces its own rows; the table is created on first use).
    """
    db_path = Path(db_path)
    where = f"{db_path}:{table}"
    _check_ident(table, "table name")
    _check_ident(key, "key column name")
    if mode not in ("replace", "upsert"):
        raise OutputError(f"{where}: mode must be 'replace' or 'upsert', got {mode!r}")
    df = _with_key_columns(df)
    _check_key(df, key, where)
    _warn_non_finite(df, where)
    arrow = _to_arrow(df, where)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb_errors(db_path):
        n_rows = _write_duckdb(db_path, table, key, mode, arrow, list(df.columns), appends)
    logger.info("%s: %s %d rows (table now %d rows)", where, mode, len(df), n_rows)
    return int(n_rows)


def _write_duckdb(db_path: Path, table: str, key: str, mode: str, arrow: pa.Table, columns: list[str],
                  appends: Mapping[str, tuple[pd.DataFrame, str, str]] | None) -> int:
    """The transaction of :func:`upsert_duckdb`; returns the table's row count after commit."""
    where = f"{db_path}:{table}"
    con = duckdb.connect(str(db_path))
    try:
        con.register(_SOURCE_VIEW, arrow)
        con.execute("BEGIN TRANSACTION")
        try:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
                [table],
            ).fetchone()[0]
            if mode == "replace" or not exists:
                con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM {_SOURCE_VIEW}')
                con.execute(f'CREATE UNIQUE INDEX "{table}_{key}_idx" ON "{table}" ("{key}")')
            else:
                have = [r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()]
                if sorted(have) != sorted(columns):
                    raise OutputError(
                        f"{where}: columns differ from the existing table "
                        f"(missing {sorted(set(have) - set(columns))}, new {sorted(set(columns) - set(have))})"
                    )
                con.execute(f'DELETE FROM "{table}" WHERE "{key}" IN (SELECT "{key}" FROM {_SOURCE_VIEW})')
                con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM {_SOURCE_VIEW}')
            n_rows = con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
            for log_table, (rows, run_column, run_id) in (appends or {}).items():
                _append_run(con, _check_ident(log_table, "table name"), _to_arrow(rows, f"{db_path}:{log_table}"),
                            _check_ident(run_column, "column name"), run_id)
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass
            raise
    finally:
        try:
            con.unregister(_SOURCE_VIEW)
        finally:
            con.close()
    return int(n_rows)


_APPEND_VIEW = "_rebuy_append_source"


def _append_run(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table, run_column: str, run_id: str) -> None:
    """Inside the caller's transaction: replace ``table``'s rows of run ``run_id`` by ``rows``."""
    con.register(_APPEND_VIEW, rows)
    try:
        con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" AS SELECT * FROM {_APPEND_VIEW} LIMIT 0').fetchall()
        con.execute(f'DELETE FROM "{table}" WHERE "{run_column}" = ?', [run_id]).fetchall()
        con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM {_APPEND_VIEW}').fetchall()
    finally:
        con.unregister(_APPEND_VIEW)


def _decode_json_lists(df: pd.DataFrame, skip: str) -> pd.DataFrame:
    """Turn CSV columns whose every non-null cell is a JSON array back into lists."""
    for col in df.columns:
        if col == skip or (df[col].dtype.kind not in "OU" and not isinstance(df[col].dtype, pd.StringDtype)):
            continue
        values = df[col].dropna().astype(str)
        if len(values) and (values.str.startswith("[") & values.str.endswith("]")).all():
            try:
                decoded = [json.loads(v) if isinstance(v, str) else [] for v in df[col]]
            except ValueError:
                continue
            df[col] = pd.Series(decoded, index=df.index, dtype=object)
    return df


def read_table_for_lookup(
    path: str | os.PathLike[str], *, key: str = DEFAULT_KEY, table: str = DEFAULT_TABLE
) -> pd.DataFrame:
    """Read a score table written by :func:`write_table` or :func:`upsert_duckdb`, indexed by ``key``.

    ``path``: ``.parquet``, ``.csv``, ``.csv.gz`` or a DuckDB file (``.duckdb`` / ``.db``, reading
    ``table`` read-only). The key is a string index (unique, sorted for fast ``.loc`` lookups);
    list columns come back as Python lists. CSV loses other dtypes (timestamps stay strings).
    """
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"{path}: score table not found")
    if path.suffix.lower() in DUCKDB_SUFFIXES:
        _check_ident(table, "table name")
        with duckdb_errors(path), duckdb.connect(str(path), read_only=True) as con:
            try:
                df = con.execute(f'SELECT * FROM "{table}"').df()
            except duckdb.CatalogException:
                raise OutputError(f"{path}: no table {table!r}") from None
        for col in df.columns:
            if df[col].dtype == object and df[col].dropna().map(lambda v: isinstance(v, np.ndarray)).any():
                df[col] = df[col].map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)
    else:
        fmt = table_format(path)
        if fmt == "parquet":
            df = pd.read_parquet(path)
            for col in list_columns(df):
                df[col] = df[col].map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)
        else:
            df = pd.read_csv(path, dtype={key: "string"}, keep_default_na=True)
            df = _decode_json_lists(df, skip=key)
    if key not in df.columns:
        raise OutputError(f"{path}: key column {key!r} is missing (columns: {list(df.columns)})")
    df[key] = df[key].astype("string")
    _check_key(df, key, str(path))
    return df.set_index(key).sort_index()


def upsert_db(
    df: pd.DataFrame,
    db: str | os.PathLike[str],
    table: str = DEFAULT_TABLE,
    *,
    appends: Mapping[str, tuple[pd.DataFrame, str, str]] | None = None,
) -> int:
    """Replace ``table`` by ``df`` (with the ``appends``) in one transaction, in the database ``db``:
    a ``postgresql://`` URL goes to :func:`rebuy.postgres.upsert_postgres`, anything else is a
    DuckDB file (:func:`upsert_duckdb`, the embedded default). Returns the table's row count."""
    from rebuy.postgres import is_postgres_url, upsert_postgres

    if is_postgres_url(db):
        return upsert_postgres(df, str(db), table=table, appends=appends)
    return upsert_duckdb(df, db, table=table, appends=appends)
