"""PostgreSQL as the score table's sink: ``rebuy score --db postgresql://...`` (psycopg 3, COPY).

:func:`upsert_postgres` is the PostgreSQL twin of :func:`rebuy.outputs.upsert_duckdb`: in ONE
transaction the table's rows become exactly this run's (the nightly snapshot) and each ``appends``
table (the offer log) gets this run's rows in place of any earlier rows of the same run.

Transaction strategy: ``DELETE FROM customer_scores`` then ``COPY ... FROM STDIN``, committed
together. Both are MVCC operations taking only a ROW EXCLUSIVE lock, so a concurrent reader (at any
isolation level) keeps seeing the previous night's complete table until the commit, then the new
one; it never waits for the writer and never sees an empty, partial or mixed table. The
alternatives were rejected: TRUNCATE + COPY takes an ACCESS EXCLUSIVE lock (every reader blocks for
the whole COPY) and is not MVCC-safe (a REPEATABLE READ reader whose snapshot predates the commit
sees an empty table); COPY into a new table + ``ALTER TABLE ... RENAME`` has the same snapshot
problem and breaks views and grants bound to the old table. The price of DELETE is dead rows
(about one table's worth per night), reclaimed by autovacuum. Only when the columns change (a new
horizon in the config) is the table dropped and recreated, in the same transaction: readers then
wait for the commit and see the new table (READ COMMITTED).

Connection strings: a libpq URL (``postgresql://user@host:5432/db``, ``postgresql:///db?host=/run/
postgresql``) or a service (``postgresql://?service=rebuy``). Passwords belong in ``PGPASSWORD``,
``~/.pgpass`` or the service file: :func:`safe_url` strips any password before a URL is logged or
recorded in ``latest_scores.json``.

psycopg is optional (``pip install 'rebuy[postgres]'``); without it every function here raises an
:class:`~rebuy.errors.OutputError` saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd

from rebuy.errors import OutputError
from rebuy.outputs import (
    DEFAULT_KEY,
    DEFAULT_TABLE,
    _check_ident,
    _check_key,
    _is_listlike,
    _warn_non_finite,
    _with_key_columns,
    list_columns,
)

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

URL_PREFIXES = ("postgresql://", "postgres://")
INSTALL_HINT = "pip install 'rebuy[postgres]'"
CONNECT_TIMEOUT_SECONDS = 10


def is_postgres_url(db: object) -> bool:
    """Whether ``db`` (a ``--db`` value) names a PostgreSQL database rather than a DuckDB file."""
    return isinstance(db, str) and db.strip().lower().startswith(URL_PREFIXES)


def safe_url(url: str) -> str:
    """``url`` without its password (in the user part or as a ``password=`` parameter): safe to log
    and to record. libpq then takes the password from PGPASSWORD, ~/.pgpass or the service file."""
    parts = urlsplit(url.strip())
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"],
                      safe="/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password (which :func:`safe_url` would strip)."""
    return safe_url(url) != urlunsplit(urlsplit(url.strip()))


def require_psycopg(url: str) -> Any:
    """The psycopg module; an ``OutputError`` naming ``url`` and what to install when it is missing."""
    try:
        import psycopg
    except ImportError:
        raise OutputError(f"{safe_url(url)}: PostgreSQL needs psycopg 3, which is not installed; "
                          f"run `{INSTALL_HINT}`") from None
    return psycopg


@contextmanager
def connect(url: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A psycopg connection to ``url``; a failure to connect is an ``OutputError`` naming the (safe)
    URL. The connection is closed on exit (nothing is committed implicitly: use ``transaction()``)."""
    psycopg = require_psycopg(url)
    try:
        con = psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise OutputError(f"{safe_url(url)}: cannot connect to PostgreSQL ({reason}); check the URL and "
                          "PGPASSWORD / ~/.pgpass") from None
    try:
        yield con
    finally:
        con.close()


SERVER_PROBLEMS = {
    "53100": "the database server's disk is full: free space on the server, then rerun",
    "25006": "the database is read-only (a standby, or default_transaction_read_only): point --db at a "
             "writable primary",
    "42501": "permission denied: grant this role CREATE and INSERT on the schema (or own the tables), "
             "or use another role",
    "55P03": "a table is locked by another session: retry after that run ends",
}
"""SQLSTATEs of the user's server (disk, role, read-only standby, locks), with what to do."""


@contextmanager
def _server_errors(url: str, where: str) -> Iterator[None]:
    """PostgreSQL errors of the user's server (:data:`SERVER_PROBLEMS`) become one-line
    :class:`OutputError` naming ``where``; others pass through (the transaction is rolled back)."""
    psycopg = require_psycopg(url)
    try:
        yield
    except psycopg.Error as exc:
        problem = SERVER_PROBLEMS.get(getattr(exc, "sqlstate", None) or "")
        if problem is None:
            raise
        raise OutputError(f"{where}: {problem}") from None


# --------------------------------------------------------------------------------------------- types

PG_TYPES = {"string": "text", "int": "bigint", "float": "double precision", "bool": "boolean",
            "datetime": "timestamp without time zone", "list": "text[]"}
"""PostgreSQL column type of each :mod:`rebuy.schema` kind (as ``format_type`` spells it)."""


def _kind(s: pd.Series, is_list: bool) -> str:
    """The :mod:`rebuy.schema` kind of a column, from its dtype."""
    if is_list:
        return "list"
    if pd.api.types.is_bool_dtype(s.dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(s.dtype):
        return "int"
    if pd.api.types.is_float_dtype(s.dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return "datetime"
    return "string"


def column_types(df: pd.DataFrame) -> dict[str, str]:
    """Column name -> PostgreSQL type of a frame (:data:`PG_TYPES` of each column's kind)."""
    lists = set(list_columns(df))
    return {str(c): PG_TYPES[_kind(df[c], c in lists)] for c in df.columns}


def _python_values(s: pd.Series, pg_type: str) -> list[Any]:
    """A column as Python values psycopg adapts: None for NA/NaN/NaT, naive UTC datetimes, lists."""
    if pg_type == "text[]":
        return [None if v is None else [str(x) for x in v] if _is_listlike(v) else [str(v)] for v in s.tolist()]
    if pg_type.startswith("timestamp"):
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        values = s.dt.to_pydatetime() if pd.api.types.is_datetime64_any_dtype(s.dtype) else s.to_numpy(object)
        return [None if pd.isna(v) else v for v in values]
    if pg_type == "double precision":
        arr = s.to_numpy(dtype=np.float64, na_value=np.nan)
        return [v if np.isfinite(v) else None for v in arr.tolist()]
    obj = s.astype(object)
    return obj.where(s.notna(), None).tolist()


def _rows(df: pd.DataFrame, types: Mapping[str, str]) -> Iterator[tuple[Any, ...]]:
    return zip(*(_python_values(df[c], t) for c, t in types.items()), strict=True)


# --------------------------------------------------------------------------------------------- write


def _table_columns(cur: psycopg.Cursor, table: str) -> dict[str, str] | None:
    """The existing table's column -> type (``format_type`` spelling), None when there is no table."""
    cur.execute("SELECT to_regclass(%s)", [f'"{table}"'])
    if cur.fetchone()[0] is None:
        return None
    cur.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum", [f'"{table}"'])
    return dict(cur.fetchall())


def _create(cur: psycopg.Cursor, table: str, types: Mapping[str, str], key: str | None) -> None:
    from psycopg import sql

    cols = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in types.items()]
    if key is not None:
        cols.append(sql.SQL("PRIMARY KEY ({})").format(sql.Identifier(key)))
    cur.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), sql.SQL(", ").join(cols)))


def _copy(cur: psycopg.Cursor, table: str, df: pd.DataFrame, types: Mapping[str, str]) -> None:
    """COPY the frame's rows into ``table`` (text format; psycopg adapts each value)."""
    from psycopg import sql

    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in types))
    with cur.copy(statement) as copy:
        for row in _rows(df, types):
            copy.write_row(row)


def _replace_table(cur: psycopg.Cursor, table: str, df: pd.DataFrame, key: str, where: str) -> None:
    """Inside the caller's transaction: the table's rows become exactly ``df`` (see the module doc)."""
    from psycopg import sql

    types = column_types(df)
    have = _table_columns(cur, table)
    if have is not None and have != types:
        log.warning("%s: columns changed (missing %s, new %s): the table is recreated", where,
                    sorted(set(have) - set(types)), sorted(set(types) - set(have)))
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        have = None
    if have is None:
        _create(cur, table, types, key)
    else:
        cur.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
    _copy(cur, table, df, types)


def _append_run(cur: psycopg.Cursor, table: str, rows: pd.DataFrame, run_column: str, run_id: str) -> None:
    """Inside the caller's transaction: replace ``table``'s rows of run ``run_id`` by ``rows``."""
    from psycopg import sql

    types = column_types(rows)
    have = _table_columns(cur, table)
    if have is None:
        _create(cur, table, types, key=None)
    elif sorted(have) != sorted(types):
        raise OutputError(f"{table}: columns differ from the existing log table (missing "
                          f"{sorted(set(have) - set(types))}, new {sorted(set(types) - set(have))})")
    cur.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(sql.Identifier(table), sql.Identifier(run_column)),
                [run_id])
    _copy(cur, table, rows, types)


def upsert_postgres(
    df: pd.DataFrame,
    url: str,
    table: str = DEFAULT_TABLE,
    key: str = DEFAULT_KEY,
    *,
    appends: Mapping[str, tuple[pd.DataFrame, str, str]] | None = None,
) -> int:
    """Replace table ``table`` of the PostgreSQL database ``url`` by ``df`` in one transaction.

    The table's rows become exactly ``df`` (created on first use with a primary key on ``key``;
    recreated when the columns change). ``appends`` maps further tables to ``(rows, run column, run
    id)``: in the same transaction their rows of that run are deleted and ``rows`` copied in (the
    offer log; created on first use). Any error rolls everything back. Returns the table's row count.
    """
    where = f"{safe_url(url)}:{table}"
    _check_ident(table, "table name")
    _check_ident(key, "key column name")
    df = _with_key_columns(df)
    _check_key(df, key, where)
    _warn_non_finite(df, where)
    with _server_errors(url, where), connect(url) as con, con.transaction(), con.cursor() as cur:
        _replace_table(cur, table, df, key, where)
        for log_table, (rows, run_column, run_id) in (appends or {}).items():
            _append_run(cur, _check_ident(log_table, "table name"), rows, _check_ident(run_column, "column name"),
                        run_id)
        cur.execute(f'SELECT count(*) FROM "{table}"')
        n_rows = int(cur.fetchone()[0])
    log.info("%s: replaced by %d rows", where, n_rows)
    return n_rows


# --------------------------------------------------------------------------------------------- read


def read_postgres_table(url: str, table: str = DEFAULT_TABLE, key: str = DEFAULT_KEY) -> pd.DataFrame:
    """The whole table (one consistent snapshot), indexed by ``key`` as strings, lists as lists."""
    _check_ident(table, "table name")
    psycopg = require_psycopg(url)
    with connect(url) as con, con.cursor() as cur:
        try:
            cur.execute(f'SELECT * FROM "{table}"')
        except psycopg.errors.UndefinedTable:
            raise OutputError(f"{safe_url(url)}: no table {table!r}; run `rebuy score --db URL` first") from None
        names = [d.name for d in cur.description]
        df = pd.DataFrame.from_records(cur.fetchall(), columns=names)
    if key not in df.columns:
        raise OutputError(f"{safe_url(url)}:{table}: key column {key!r} is missing (columns: {names})")
    df[key] = df[key].astype("string")
    return df.set_index(key).sort_index()


def committed_values(url: str, table: str, column: str, values: list[str]) -> set[str]:
    """Which of ``values`` the ``column`` of ``table`` holds (empty when there is no such table)."""
    _check_ident(table, "table name")
    _check_ident(column, "column name")
    require_psycopg(url)
    with connect(url) as con, con.cursor() as cur:
        if _table_columns(cur, table) is None:
            return set()
        cur.execute(f'SELECT "{column}" FROM "{table}" WHERE "{column}" = ANY(%s)', [values])
        return {str(r[0]) for r in cur.fetchall()}
