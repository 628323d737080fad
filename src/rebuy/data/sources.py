"""Reading a source into a DataFrame, and resolving the ``config`` argument of the loaders.

A source is a CSV file, a Parquet file or directory, a ``"duckdb:PATH::QUERY"`` string or a
DataFrame (see :mod:`rebuy.data`). Invariants: :func:`read_table` never modifies a DataFrame it is
given (it returns a copy), returns CSV columns as text (missing cells as NA) and never returns a
table without columns or rows; every failure is a one-line ``DataError`` naming the source.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

import pandas as pd

from rebuy.config import Config, DataConfig, load_config
from rebuy.errors import DataError, InvalidParameterError

logger = logging.getLogger(__name__)

Source = str | Path | pd.DataFrame
"""A file path, a ``"duckdb:PATH::QUERY"`` string, or a DataFrame."""

DUCKDB_PREFIX = "duckdb:"
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_MANGLED = re.compile(r".+\.\d+")
"""How pandas renames a repeated CSV column name ("amount" -> "amount.1")."""


def source_name(source: Source) -> str:
    """How a source is named in messages: the file path, the DuckDB spec, or ``<DataFrame>``."""
    if isinstance(source, pd.DataFrame):
        return "<DataFrame>"
    text = str(source)
    return text if len(text) <= 120 else text[:117] + "..."


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_table(source: Source, *, separator: str = ",") -> pd.DataFrame:
    """Read a table from a CSV/Parquet file, a DuckDB query or a DataFrame (see the module doc).

    CSV columns are returned as text (missing cells as NA); Parquet and DuckDB keep their types.
    Raises ``DataError`` for a missing file, an unreadable file, a failing query or a table
    without rows.
    """
    name = source_name(source)
    if isinstance(source, pd.DataFrame):
        df = source.copy()
    elif isinstance(source, str) and source.startswith(DUCKDB_PREFIX):
        df = _read_duckdb(source)
    else:
        df = _read_file(source, name, separator)
    if len(df.columns) == 0:
        raise DataError(f"{name}: no columns")
    if len(df) == 0:
        raise DataError(f"{name}: no data rows (columns: {list(map(str, df.columns))})")
    return df


def _read_file(source: object, name: str, separator: str) -> pd.DataFrame:
    if not isinstance(source, (str, Path)):
        raise DataError(f"{name!s}: unsupported source type {type(source).__name__}; "
                        "pass a file path, 'duckdb:PATH::QUERY' or a DataFrame")
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (no header, no rows)")
    is_parquet = path.is_dir() or any(path.name.lower().endswith(s) for s in _PARQUET_SUFFIXES)
    return _read_parquet(path) if is_parquet else _read_csv(path, separator)


def _read_csv(path: Path, separator: str) -> pd.DataFrame:
    df = _parse_csv(path, separator)
    if any(_MANGLED.fullmatch(str(c)) for c in df.columns):  # pandas renames a repeated "x" to "x.1"
        _refuse_repeated(path, _csv_header(path, separator))
    return df


def _parse_csv(path: Path, separator: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=separator, engine="pyarrow", dtype=str)
    except Exception as err:  # pyarrow raises its own error types; fall back to the C parser
        if "empty" in str(err).lower():
            raise DataError(f"{path}: file is empty (no header, no rows)") from None
        logger.debug("pyarrow CSV reader failed on %s (%s); retrying with the C parser", path, first_line(err))
    try:
        return pd.read_csv(path, sep=separator, dtype=str, engine="c" if len(separator) == 1 else "python")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: cannot be read as CSV with separator {separator!r}: {first_line(err)}") from None


def _csv_header(path: Path, separator: str) -> list[str]:
    """The first line's cells as written (no renaming of repeated names), compression inferred."""
    try:
        first = pd.read_csv(path, sep=separator, header=None, nrows=1, dtype=str, keep_default_na=False,
                            engine="c" if len(separator) == 1 else "python")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError):
        return []  # the table itself was read: nothing more to check
    return [str(c) for c in first.iloc[0]]


def _refuse_repeated(name: object, columns: list[str]) -> None:
    """A ``DataError`` naming the source and each column name that appears more than once."""
    counts = pd.Series(columns, dtype=object).value_counts(sort=False)
    repeated = counts[counts > 1]
    if len(repeated):
        names = ", ".join(f"{c!r} appears {n} times" for c, n in repeated.items())
        raise DataError(f"{name}: column {names}; rename or drop the extra column(s)")


def _read_parquet(path: Path) -> pd.DataFrame:
    _refuse_repeated(path, _parquet_columns(path))
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow.ArrowInvalid, OSError, ...
        raise DataError(f"{path}: cannot be read as Parquet: {first_line(err)}") from None


def _parquet_columns(path: Path) -> list[str]:
    """The column names of a Parquet file (of a directory: its first data file) as stored, repeats
    kept; [] when the schema is unreadable (reading then reports the error)."""
    import pyarrow.parquet as pq

    file = next((p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith((".", "_"))), None) \
        if path.is_dir() else path
    try:
        return list(pq.read_schema(file).names) if file is not None else []
    except Exception:  # noqa: BLE001 - any failure is reported by the read that follows
        return []


def _read_duckdb(spec: str) -> pd.DataFrame:
    body = spec[len(DUCKDB_PREFIX):]
    memory = ":memory:"
    if body.startswith(memory):  # "duckdb::memory:::QUERY" is the same as "duckdb:::QUERY"
        body = body[len(memory):]
    db, sep, query = body.partition("::")
    if sep != "::" or not query.strip():
        raise DataError(f"{source_name(spec)}: expected 'duckdb:PATH::SELECT ...' (empty PATH = in-memory)")
    import duckdb

    label = f"duckdb:{db or ':memory:'}"
    if db and not Path(db).exists():
        raise DataError(f"{db}: DuckDB database file not found")
    try:
        con = duckdb.connect(db or ":memory:", read_only=bool(db))
        try:
            result = con.execute(query)
            _refuse_repeated(label, [d[0] for d in result.description or ()])
            return result.df()
        finally:
            con.close()
    except duckdb.Error as err:
        raise DataError(f"{label}: query failed: {first_line(err)}") from None


def resolve_config(config: Config | DataConfig | str | Path | None) -> tuple[DataConfig, dt.date | None]:
    """The ``data`` section and the configured as-of date of a loader's ``config`` argument.

    ``config`` is a ``Config``, a ``DataConfig`` (no as-of date), a YAML path or None (defaults);
    anything else is an ``InvalidParameterError``.
    """
    if config is None:
        return DataConfig(), None
    if isinstance(config, (str, Path)):
        config = load_config(config)
    if isinstance(config, Config):
        return config.data, config.as_of
    if isinstance(config, DataConfig):
        return config, None
    raise InvalidParameterError(
        f"config must be a rebuy Config, DataConfig, YAML path or None, not {type(config).__name__}"
    )
