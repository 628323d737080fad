"""Load, validate and clean transactions and the optional customers and events tables.

Sources (``read_table``)
------------------------
- a CSV file (``.csv``, ``.csv.gz``, ``.txt``, ... any other extension is read as CSV), separator
  ``config.data.csv_separator``; every column is read as text first so that this module does the
  parsing and can point at the offending rows;
- a Parquet file or directory (``.parquet``, ``.pq``);
- a SQL query against DuckDB written as ``"duckdb:PATH::SELECT ..."``, e.g.
  ``"duckdb:shop.duckdb::SELECT * FROM sales WHERE year >= 2020"``. ``PATH`` is opened read-only;
  leave it empty (``"duckdb:::SELECT * FROM 'tx.parquet'"``) or write ``:memory:`` to run the query
  in an in-memory database (useful with DuckDB's ``read_csv``/``read_parquet``);
- a pandas DataFrame, used as is (it is not modified).

Cleaning (``load_transactions``), in this order, each step counted in a ``CleaningReport``:
rows without a customer id; exact duplicate lines (all source columns); lines after the end of
the as-of date; zero quantities; zero/negative unit prices; cancellations and returns (negative
quantity or negative line value, or an order id starting with one of ``data.cancel_prefixes``).
Returns never count as purchases: their value is netted from the same customer's most recent
earlier purchase lines of the same product (without products: the customer's most recent
earlier lines), newest first, never below 0.

Speed: ids stay Arrow-backed strings; the duplicate check compares all columns only on rows that
share customer and timestamp (found by a linear scan when the input is sorted by customer and time,
as ``rebuy simulate`` writes it, else by hashing integer codes); sorted input is not sorted again.
The result is the same as ``DataFrame.duplicated`` and a stable ``sort_values`` would give.

Errors are ``DataError`` (a ``ValueError``) with a one-line message naming the source, the column
and up to three offending rows. Row numbers are 1-based data rows of the file (the header is not
counted, so row N is line N + 1 of a CSV); for a DataFrame the index label is shown.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rebuy.config import (
    CANONICAL_COLUMNS,
    OPTIONAL_TRANSACTION_COLUMNS,
    Config,
    DataConfig,
    load_config,
)

logger = logging.getLogger(__name__)

Source = str | Path | pd.DataFrame
"""A file path, a ``"duckdb:PATH::QUERY"`` string, or a DataFrame."""

DUCKDB_PREFIX = "duckdb:"
CUSTOMER_COLUMNS = (
    "customer_id", "age", "birth_date", "country", "acquisition_channel", "signup_date",
    "consent_email", "consent_sms", "consent_messenger",
)
CONSENT_COLUMNS = ("consent_email", "consent_sms", "consent_messenger")
EVENT_COLUMNS = ("customer_id", "product_id", "timestamp", "event")
EVENT_TYPES = ("view", "cart")

_NA_TOKENS = ("", "nan", "none", "null", "na", "n/a", "<na>", "nat")
_NA_SPELLINGS = tuple(sorted({
    "".join(chars) for token in _NA_TOKENS for chars in itertools.product(*({ch, ch.upper()} for ch in token))
}))
_TRUE_TOKENS = ("true", "t", "yes", "y", "1", "1.0")
_FALSE_TOKENS = ("false", "f", "no", "n", "0", "0.0")
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_MAX_EXAMPLES = 3
_TS_MIN, _TS_MAX = pd.Timestamp("1678-01-01"), pd.Timestamp("2261-12-31")
_EPS = 1e-9  # currency amounts below this count as zero when netting returns


class DataError(ValueError):
    """Bad input data. The one-line message names the source, the column and example rows."""


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def source_name(source: Source) -> str:
    """How a source is named in messages: the file path, the DuckDB spec, or ``<DataFrame>``."""
    if isinstance(source, pd.DataFrame):
        return "<DataFrame>"
    text = str(source)
    return text if len(text) <= 120 else text[:117] + "..."


def _first_line(err: BaseException) -> str:
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
        if not isinstance(source, (str, Path)):
            raise DataError(f"{name!s}: unsupported source type {type(source).__name__}; "
                            "pass a file path, 'duckdb:PATH::QUERY' or a DataFrame")
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: file not found")
        if path.is_file() and path.stat().st_size == 0:
            raise DataError(f"{path}: file is empty (no header, no rows)")
        is_parquet = path.is_dir() or any(path.name.lower().endswith(s) for s in _PARQUET_SUFFIXES)
        df = _read_parquet(path) if is_parquet else _read_csv(path, separator)
    if len(df.columns) == 0:
        raise DataError(f"{name}: no columns")
    if len(df) == 0:
        raise DataError(f"{name}: no data rows (columns: {list(map(str, df.columns))})")
    return df


def _read_csv(path: Path, separator: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=separator, engine="pyarrow", dtype=str)
    except Exception as err:  # pyarrow raises its own error types; fall back to the C parser
        if "empty" in str(err).lower():
            raise DataError(f"{path}: file is empty (no header, no rows)") from None
        logger.debug("pyarrow CSV reader failed on %s (%s); retrying with the C parser", path, _first_line(err))
    try:
        return pd.read_csv(path, sep=separator, dtype=str, engine="c" if len(separator) == 1 else "python")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: cannot be read as CSV with separator {separator!r}: {_first_line(err)}") from None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow.ArrowInvalid, OSError, ...
        raise DataError(f"{path}: cannot be read as Parquet: {_first_line(err)}") from None


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
            return con.execute(query).df()
        finally:
            con.close()
    except duckdb.Error as err:
        raise DataError(f"{label}: query failed: {_first_line(err)}") from None


# --------------------------------------------------------------------------------------------
# column mapping and value parsing
# --------------------------------------------------------------------------------------------


class _Table:
    """A read table with its name, mapped columns and a way to name original rows."""

    def __init__(self, source: Source, df: pd.DataFrame, mapping: dict[str, str], known: tuple[str, ...]):
        self.name = source_name(source)
        self.index = df.index if isinstance(source, pd.DataFrame) else None
        self.df = df.reset_index(drop=True)
        self.df.columns = [str(c) for c in self.df.columns]
        repeated = sorted(set(self.df.columns[self.df.columns.duplicated()]))
        if repeated:
            raise DataError(f"{self.name}: duplicate column name(s) {repeated}")
        self.cols: dict[str, str] = {}
        present = set(self.df.columns)
        # An in-memory frame with none of the mapped source names but canonical ones (e.g. a cleaned
        # frame passed back in) is already canonical: the mapping does not apply to it.
        if isinstance(source, pd.DataFrame) and mapping and not present & set(mapping.values()):
            mapping = {}
        for canonical in known:
            src = mapping.get(canonical, canonical)
            if src in present:
                self.cols[canonical] = src
            elif canonical in mapping:
                raise DataError(
                    f"{self.name}: column {src!r} (mapped to {canonical}) not found; "
                    f"columns present: {list(self.df.columns)}"
                )

    def require(self, canonical: str, hint: str = "") -> None:
        if canonical not in self.cols:
            raise DataError(
                f"{self.name}: required column {canonical!r} not found{hint}; columns present: "
                f"{list(self.df.columns)}; map it with data.columns / --column {canonical}=SOURCE"
            )

    def label(self, pos: int) -> str:
        if self.index is not None:
            return f"index {self.index[pos]!r}"
        return f"row {pos + 1}"

    def examples(self, positions: np.ndarray, values: pd.Series | np.ndarray) -> str:
        vals = np.asarray(values, dtype=object)
        shown = [f"{self.label(int(p))} = {vals[i]!r}" for i, p in enumerate(positions[:_MAX_EXAMPLES])]
        more = f" (and {len(positions) - _MAX_EXAMPLES} more)" if len(positions) > _MAX_EXAMPLES else ""
        return ", ".join(shown) + more

    def column(self, canonical: str) -> str:
        """``'Source'`` or ``'Source' (canonical)`` for messages."""
        col = self.cols.get(canonical, canonical)
        return repr(col) if col == canonical else f"{col!r} ({canonical})"

    def fail(self, canonical: str, what: str, rows: np.ndarray, mask: np.ndarray, raw: pd.Series) -> None:
        """Raise a DataError for the rows in ``mask`` (positions ``rows`` into the original table)."""
        idx = np.flatnonzero(mask)
        raise DataError(f"{self.name}: column {self.column(canonical)}: {len(idx)} {what}: "
                        f"{self.examples(rows[idx], raw.to_numpy()[idx])}")


def _as_text(s: pd.Series) -> pd.Series:
    """Text values with surrounding blanks stripped and NA tokens ("", "nan", "null", ...) as NA."""
    text = s.astype("string").str.strip()
    arr = _arrow(text)
    if arr is None:
        return text.mask(text.str.lower().isin(_NA_TOKENS))
    # every upper/lower-case spelling of the tokens: the same as lower() then isin(), without lower()
    tokens = pa.array(_NA_SPELLINGS, type=arr.type)
    na = pc.fill_null(pc.is_in(arr, value_set=tokens), False).to_numpy(zero_copy_only=False)
    return text.mask(na) if na.any() else text


def _ids(s: pd.Series, *, strip_float_zero: bool = True) -> pd.Series:
    """Identifiers as pandas ``string``; ``13085.0`` becomes ``13085`` when ``strip_float_zero``."""
    if pd.api.types.is_float_dtype(s.dtype):
        out = pd.Series(pd.NA, index=s.index, dtype="string")
        vals = s.to_numpy(dtype=float, na_value=np.nan)
        ok = np.isfinite(vals)
        integral = ok & (vals == np.round(vals))
        out[integral] = vals[integral].astype(np.int64).astype(str)
        rest = ok & ~integral
        out[rest] = vals[rest].astype(str)
        return out
    text = _as_text(s)
    if strip_float_zero and _may_contain(text, ".0"):  # the regex can only match values with ".0"
        text = text.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)
    return text


def _may_contain(text: pd.Series, part: str) -> bool:
    """Whether any value of a ``string`` Series contains ``part`` (True when unsure)."""
    arr = _arrow(text)
    if arr is None:
        return True
    return bool(pc.any(pc.match_substring(arr, part)).as_py())


def _arrow(s: pd.Series | pd.api.extensions.ExtensionArray) -> pa.ChunkedArray | None:
    """The Arrow data behind a pyarrow-backed string Series/array, or None for other storage."""
    values = s.array if isinstance(s, pd.Series) else s
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        arr = values.__arrow_array__()
        return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])
    return None


def _numbers(tab: _Table, canonical: str, s: pd.Series, rows: np.ndarray) -> np.ndarray:
    """Parse a numeric column to float64; missing, non-numeric or infinite values raise DataError."""
    if pd.api.types.is_bool_dtype(s.dtype):
        tab.fail(canonical, "values are true/false, not numbers", rows, np.ones(len(s), bool), s)
    if pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.to_numpy(dtype=float, na_value=np.nan)
        missing = np.isnan(vals)
        raw = s
    else:
        raw = _as_text(s)
        missing = raw.isna().to_numpy()
        vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bad = np.isnan(vals) & ~missing
        if bad.any():
            tab.fail(canonical, "value(s) are not numbers", rows, bad, s)
    if missing.any():
        tab.fail(canonical, "missing value(s)", rows, missing, s)
    inf = np.isinf(vals)
    if inf.any():
        tab.fail(canonical, "infinite value(s)", rows, inf, s)
    return vals


def _timestamps(
    tab: _Table, canonical: str, s: pd.Series, rows: np.ndarray, fmt: str | None, timezone: str | None,
    *, allow_missing: bool = False,
) -> pd.Series:
    """Parse timestamps to timezone-naive ``datetime64[ns]``.

    Text is parsed with ``fmt`` (strict) or, when ``fmt`` is None, with the format pandas infers
    from the first value; values that do not fit it may still be any ISO 8601 variant. Timezone-aware values are converted to
    ``timezone`` (UTC when None) and the zone dropped. Unparseable values raise ``DataError``.
    """
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        ts = pd.Series(s.to_numpy() if not isinstance(s.dtype, pd.DatetimeTZDtype) else s.array, index=s.index)
        missing = ts.isna().to_numpy()
    else:
        raw = _as_text(s)
        missing = raw.isna().to_numpy()
        ts = _parse_datetime(tab, canonical, raw, rows, fmt)
        bad = ts.isna().to_numpy() & ~missing
        if bad.any():
            how = f"format {fmt!r} (data.timestamp_format)" if fmt else "an inferred format (set data.timestamp_format)"
            tab.fail(canonical, f"unparseable date(s) with {how}", rows, bad, s)
    if missing.any() and not allow_missing:
        tab.fail(canonical, "missing date(s)", rows, missing, s)
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = ts.dt.tz_convert(timezone or "UTC").dt.tz_localize(None)
    outside = ((ts < _TS_MIN) | (ts > _TS_MAX)).to_numpy()
    if outside.any():
        tab.fail(canonical, "date(s) outside the supported years 1678-2261", rows, outside, s)
    return ts.astype("datetime64[ns]")


def _parse_datetime(tab: _Table, canonical: str, raw: pd.Series, rows: np.ndarray, fmt: str | None) -> pd.Series:
    def parse(values: pd.Series, form: str | None) -> pd.Series:
        try:
            with warnings.catch_warnings():  # "could not infer format": per-value parsing is intended
                warnings.simplefilter("ignore", UserWarning)
                try:
                    ts = pd.to_datetime(values, format=form, errors="coerce")
                except ValueError:  # mixed UTC offsets: convert everything to UTC
                    ts = pd.to_datetime(values, format=form, errors="coerce", utc=True)
        except (ValueError, TypeError, OverflowError) as err:
            raise DataError(f"{tab.name}: column {tab.column(canonical)}: "
                            f"cannot parse dates with format {form!r}: {_first_line(err)}") from None
        return ts.dt.as_unit("us")  # wide range; bounds are checked before the cast to ns

    def aware(ts: pd.Series) -> bool:
        return isinstance(ts.dtype, pd.DatetimeTZDtype)

    ts = parse(raw, fmt)
    retry = ts.isna() & raw.notna()
    if fmt is None and retry.any():
        # values that do not fit the format inferred from the first value: accept any ISO 8601
        # variant (date only, "T", offsets), never a guess between day-first and month-first
        again = parse(raw[retry], "ISO8601")
        if again.notna().any():
            if ts.notna().any() and aware(ts) != aware(again):
                mask = retry.to_numpy().copy()
                mask[mask] = again.notna().to_numpy()
                tab.fail(canonical, "date(s) mix timezone-aware and naive values", rows, mask, raw)
            if aware(again):
                again = again.dt.tz_convert("UTC")
                ts = ts.dt.tz_convert("UTC") if aware(ts) else ts.dt.tz_localize("UTC")
            elif aware(ts):
                ts = ts.dt.tz_localize(None)
            ts = ts.mask(retry, again.reindex(ts.index))
    return ts


def _as_of_cutoff(as_of: Any) -> pd.Timestamp | None:
    """The first instant after the as-of date (as-of dates include their whole day)."""
    day = _as_of_day(as_of)
    return None if day is None else day + pd.Timedelta(days=1)


def _as_of_day(as_of: Any) -> pd.Timestamp | None:
    """The as-of date as a midnight Timestamp; DataError when it is not a date."""
    if as_of is None:
        return None
    try:
        ts = pd.Timestamp(as_of)
    except (ValueError, TypeError) as err:
        raise DataError(f"as_of {as_of!r}: not a date ({_first_line(err)})") from None
    if ts is pd.NaT:
        raise DataError(f"as_of {as_of!r}: not a date")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.normalize()


def _resolve_config(config: Config | DataConfig | str | Path | None) -> tuple[DataConfig, dt.date | None]:
    if config is None:
        return DataConfig(), None
    if isinstance(config, (str, Path)):
        config = load_config(config)
    if isinstance(config, Config):
        return config.data, config.as_of
    if isinstance(config, DataConfig):
        return config, None
    raise TypeError(f"config must be a rebuy Config, DataConfig, YAML path or None, not {type(config).__name__}")


# --------------------------------------------------------------------------------------------
# transactions
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CleaningReport:
    """What ``load_transactions`` did, step by step (line counts; values in the data's currency)."""

    source: str
    rows_in: int = 0
    missing_customer: int = 0
    duplicates: int = 0
    after_as_of: int = 0
    zero_quantity: int = 0
    non_positive_price: int = 0
    returns: int = 0
    """Cancellation/return lines removed as purchases (negative quantity or value, or cancel prefix)."""
    returns_cancel_prefix: int = 0
    """Of ``returns``: lines whose order id starts with a cancel prefix."""
    returns_matched: int = 0
    """Return lines netted (at least partly) against an earlier purchase."""
    returns_unmatched: int = 0
    return_value: float = 0.0
    return_value_netted: float = 0.0
    return_value_unmatched: float = 0.0
    lines_fully_refunded: int = 0
    rows_out: int = 0
    customers: int = 0
    orders: int = 0
    products: int | None = None
    first_timestamp: pd.Timestamp | None = None
    last_timestamp: pd.Timestamp | None = None
    as_of: pd.Timestamp | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (timestamps as ISO strings, money rounded to cents)."""
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, pd.Timestamp):
                out[k] = v.isoformat()
            elif isinstance(v, float):
                out[k] = round(v, 2) if k.startswith("return_value") else round(v, 3)
        return out

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.to_dict().items())


@overload
def load_transactions(
    source: Source, config: Config | DataConfig | str | Path | None = ..., *, as_of: Any = ...,
    with_report: Literal[False] = ..., min_customers: int = ...,
) -> pd.DataFrame: ...
@overload
def load_transactions(
    source: Source, config: Config | DataConfig | str | Path | None = ..., *, as_of: Any = ...,
    with_report: Literal[True], min_customers: int = ...,
) -> tuple[pd.DataFrame, CleaningReport]: ...


def load_transactions(
    source: Source,
    config: Config | DataConfig | str | Path | None = None,
    *,
    as_of: Any = None,
    with_report: bool = False,
    min_customers: int = 2,
) -> pd.DataFrame | tuple[pd.DataFrame, CleaningReport]:
    """Read, validate and clean transactions into the canonical frame.

    Parameters
    ----------
    source : CSV/Parquet path, ``"duckdb:PATH::QUERY"`` or a DataFrame (see ``read_table``).
    config : a ``Config`` (its ``data`` section and ``as_of`` are used), a ``DataConfig``, a YAML
        path, or None for the defaults (canonical column names, cancel prefix ``C``).
    as_of : date; lines after the end of this day are removed. Overrides ``config.as_of``.
        None keeps everything.
    with_report : also return the ``CleaningReport``.
    min_customers : fewer customers left after cleaning is a ``DataError`` (the models need 2;
        scoring one customer's history passes 1).

    Returns
    -------
    DataFrame sorted by customer_id then timestamp with columns customer_id, order_id, timestamp
    (naive datetime64[ns]), product_id (when the source has it), quantity (> 0), price (unit
    price > 0), amount (line value in currency after netting returns, >= 0) and any of
    description, country, category present in the source. ``quantity`` is the purchased
    quantity (returns reduce ``amount`` only).
    """
    t0 = time.perf_counter()
    cfg, cfg_as_of = _resolve_config(config)
    cutoff = _as_of_cutoff(as_of if as_of is not None else cfg_as_of)
    df = read_table(source, separator=cfg.csv_separator)
    tab = _Table(source, df, cfg.columns, CANONICAL_COLUMNS + OPTIONAL_TRANSACTION_COLUMNS)
    tab.require("customer_id")
    tab.require("timestamp")
    if "price" not in tab.cols and "amount" not in tab.cols:
        tab.require("price", " (nor 'amount'; one of them is needed)")
    report = CleaningReport(source=tab.name, rows_in=len(tab.df))
    if cutoff is not None:
        report.as_of = cutoff - pd.Timedelta(days=1)
    c = tab.cols
    data = tab.df

    # 1. rows without a customer id
    cust = _ids(data[c["customer_id"]])
    keep = cust.notna().to_numpy()
    report.missing_customer = int((~keep).sum())
    if not keep.any():
        raise DataError(f"{tab.name}: column {tab.column('customer_id')}: no row has a customer id "
                        f"({len(data)} rows, all empty)")
    rows = np.flatnonzero(keep)
    if keep.all():
        data = data.copy(deep=False)  # copy-on-write: the assignment below leaves tab.df alone
    else:
        data, cust = data.loc[keep], cust[keep]
    data[c["customer_id"]] = cust
    cust_codes, cust_sorted = _id_codes(cust)

    # 2. exact duplicate lines (all source columns, customer id normalised)
    if cfg.drop_duplicates:
        dup = _duplicated(data, cust_codes, cust_sorted, data[c["timestamp"]])
        report.duplicates = int(dup.sum())
        if report.duplicates:
            data, rows, cust_codes = data.loc[~dup], rows[~dup], cust_codes[~dup]

    # 3. parse
    ts = _timestamps(tab, "timestamp", data[c["timestamp"]], rows, cfg.timestamp_format, cfg.timezone)
    ts = ts.to_numpy()
    qty = _numbers(tab, "quantity", data[c["quantity"]], rows) if "quantity" in c else np.ones(len(data))
    price = _numbers(tab, "price", data[c["price"]], rows) if "price" in c else None
    amount = _numbers(tab, "amount", data[c["amount"]], rows) if "amount" in c else None

    order = _ids(data[c["order_id"]], strip_float_zero=True) if "order_id" in c else None

    # 4. after the as-of date
    keep = np.ones(len(data), bool)
    if cutoff is not None:
        late = ts >= cutoff.to_datetime64()
        report.after_as_of = int(late.sum())
        keep &= ~late

    # 5. zero quantities
    zero_q = keep & (qty == 0)
    report.zero_quantity = int(zero_q.sum())
    keep &= ~zero_q

    # 6. unit price and line value
    with np.errstate(divide="ignore", invalid="ignore"):
        if price is None:
            unit = np.abs(amount) / np.abs(qty)
            value = np.abs(amount)
        else:
            unit = price
            value = np.abs(amount) if amount is not None else np.abs(qty) * price
    bad_price = keep & ~(unit > 0)
    report.non_positive_price = int(bad_price.sum())
    keep &= ~bad_price

    # 7. cancellations and returns
    is_return = qty < 0
    if amount is not None:
        is_return |= amount < 0
    if order is not None and cfg.cancel_prefixes:
        prefixed = order.str.startswith(tuple(cfg.cancel_prefixes)).fillna(False).to_numpy(dtype=bool)
        report.returns_cancel_prefix = int((keep & prefixed).sum())
        is_return |= prefixed
    ret = keep & is_return
    buy = keep & ~is_return
    report.returns = int(ret.sum())

    prod = _ids(data[c["product_id"]], strip_float_zero=False) if "product_id" in c else None
    value = value.astype(float)
    if ret.any() and buy.any():
        key_cols = [cust_codes] if prod is None else [cust_codes, prod.to_numpy(dtype=object, na_value="")]
        net = _net_returns(key_cols, ts, value, buy, ret)
        value[buy] = net.purchase_value
        report.returns_matched = int((net.netted > 0).sum())
        report.return_value_netted = float(net.netted.sum())
        report.lines_fully_refunded = int((net.purchase_value <= 0).sum())
    report.returns_unmatched = report.returns - report.returns_matched
    report.return_value = float(value[ret].sum())  # return lines keep their (absolute) value
    report.return_value_unmatched = max(report.return_value - report.return_value_netted, 0.0)

    # 8. assemble
    if not buy.any():
        raise DataError(f"{tab.name}: no purchase lines left after cleaning ({report.summary()})")
    every = bool(buy.all())

    def bought(values: Any) -> Any:
        return values if every else values[buy]

    out = pd.DataFrame({"customer_id": bought(data[c["customer_id"]].array).astype("string")})
    ts_buy = bought(ts)
    if order is not None:
        out["order_id"] = bought(order.array).astype("string")
    else:
        out["order_id"] = pd.array(np.full(len(out), None, dtype=object), dtype="string")
    no_order = out["order_id"].isna().to_numpy()
    if no_order.any():
        synth = out["customer_id"][no_order] + "@" + pd.Series(
            pd.DatetimeIndex(ts_buy[no_order]).strftime("%Y-%m-%dT%H:%M:%S"), index=out.index[no_order]
        ).astype("string")
        out.loc[no_order, "order_id"] = synth
    out["timestamp"] = ts_buy
    if prod is not None:
        out["product_id"] = bought(prod.array).astype("string")
    out["quantity"] = np.abs(bought(qty)).astype(float)
    out["price"] = bought(unit).astype(float)
    out["amount"] = np.maximum(bought(value), 0.0)
    for extra in OPTIONAL_TRANSACTION_COLUMNS:
        if extra == "category" and extra in c:  # a code: normalised like the ids
            out[extra] = bought(_ids(data[c[extra]]).array)
        elif extra in c:
            out[extra] = bought(data[c[extra]].astype("string").array)  # kept verbatim (whitespace too)
    codes_buy = bought(cust_codes)
    if cust_sorted:  # codes follow the id order: sort (stably) only when timestamps are out of order
        t_int = ts_buy.view(np.int64)
        same = codes_buy[1:] == codes_buy[:-1]
        if (same & (t_int[1:] < t_int[:-1])).any():
            out = out.take(np.lexsort((t_int, codes_buy))).reset_index(drop=True)
        report.customers = int(np.count_nonzero(~same)) + 1
    elif (ids := _arrow(out["customer_id"])) is not None:
        # dense ranks in byte (= code point) order, the order sort_values uses for strings
        rank = pc.rank(ids, sort_keys="ascending", tiebreaker="dense").to_numpy().astype(np.int64)
        out = out.take(np.lexsort((ts_buy.view(np.int64), rank))).reset_index(drop=True)
        report.customers = int(rank.max())
    else:
        out = out.sort_values(["customer_id", "timestamp"], kind="stable", ignore_index=True)
        report.customers = int(np.count_nonzero(np.bincount(codes_buy)))

    report.rows_out = len(out)
    report.orders = _n_distinct(out["order_id"])
    report.products = _n_distinct(out["product_id"]) if "product_id" in out else None
    report.first_timestamp = pd.Timestamp(out["timestamp"].min())
    report.last_timestamp = pd.Timestamp(out["timestamp"].max())
    if report.customers < min_customers:
        who = f"1 customer ({out['customer_id'].iloc[0]!r})" if report.customers == 1 else f"{report.customers} customers"
        raise DataError(f"{tab.name}: column {tab.column('customer_id')}: only {who} after cleaning; "
                        f"the models need at least {min_customers} customers")
    report.seconds = time.perf_counter() - t0
    logger.info("cleaned transactions from %s: %s", tab.name, report.summary())
    return (out, report) if with_report else out


def _n_distinct(s: pd.Series) -> int:
    """Number of distinct non-missing values (``Series.nunique``)."""
    arr = _arrow(s)
    if arr is None:
        return int(s.nunique())
    arr = arr.drop_null()
    if len(arr) and pc.all(pc.match_substring_regex(arr, r"^(0|[1-9][0-9]{0,17})$")).as_py():
        # canonical decimal numbers (e.g. invoice numbers) are distinct exactly when their ints are
        ints = np.sort(pc.cast(arr, pa.int64()).to_numpy())
        return int(np.count_nonzero(ints[1:] != ints[:-1])) + 1
    return len(pc.unique(arr))


def _id_codes(ids: pd.Series) -> tuple[np.ndarray, bool]:
    """Integer codes of non-missing ids (equal ids, equal codes) and whether ids are sorted.

    Sorted ids (non-decreasing in the string order pandas sorts by) are coded by counting changes
    between neighbours, which is much cheaper than hashing every string.
    """
    arr = _arrow(ids)
    if arr is not None and len(arr) > 1:
        left, right = arr.slice(0, len(arr) - 1), arr.slice(1)
        if pc.all(pc.less_equal(left, right)).as_py():
            changed = pc.not_equal(left, right).to_numpy(zero_copy_only=False)
            codes = np.zeros(len(arr), dtype=np.int64)
            np.cumsum(changed, out=codes[1:])
            return codes, True
    elif len(ids) <= 1:
        return np.zeros(len(ids), dtype=np.int64), True
    return pd.factorize(ids)[0].astype(np.int64), False


def _duplicated(data: pd.DataFrame, cust_codes: np.ndarray, cust_sorted: bool, ts: pd.Series) -> np.ndarray:
    """``data.duplicated(keep="first")`` as a numpy mask, computed on candidate rows only.

    Exact duplicates share their customer and timestamp, so only rows whose (customer code,
    raw timestamp) pair occurs more than once can be duplicates; the full all-column comparison
    runs on those rows alone (in their original order, so "first" means the same row). When the
    ids are sorted and the times ordered within each id, equal pairs are neighbours (no hashing).
    """
    cand = None
    naive = pd.api.types.is_datetime64_any_dtype(ts.dtype) and not isinstance(ts.dtype, pd.DatetimeTZDtype)
    if naive:
        t_codes = ts.to_numpy().view(np.int64)
        if cust_sorted:
            same = cust_codes[1:] == cust_codes[:-1]
            if not (same & (t_codes[1:] < t_codes[:-1])).any():  # equal pairs are neighbours
                pair = same & (t_codes[1:] == t_codes[:-1])
                mask = np.zeros(len(data), dtype=bool)
                mask[1:] |= pair
                mask[:-1] |= pair
                cand = np.flatnonzero(mask)
    else:
        t_codes = pd.factorize(ts)[0]
    if cand is None:
        with np.errstate(over="ignore"):
            key = cust_codes.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ t_codes.astype(np.uint64)
        cand = np.flatnonzero(pd.Series(key).duplicated(keep=False).to_numpy())
    if len(cand):
        # Narrow further, one column at a time (numeric columns first: they are cheap), keeping the
        # rows whose running key still repeats. Equal rows always get equal keys, so no duplicate
        # is lost; hash collisions only keep extra rows for the exact check below.
        with np.errstate(over="ignore"):
            key = cust_codes[cand].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ t_codes[cand].astype(np.uint64)
        numeric = [col for col in data.columns if isinstance(data[col].dtype, np.dtype) and data[col].dtype.kind in "fiu"]
        for col in numeric + [col for col in data.columns if col not in numeric]:
            if len(cand) == 0:
                break
            values = data[col]
            if col in numeric:
                v = values.to_numpy()[cand]
                if v.dtype.kind == "f":  # -0.0 == 0.0 and NaN == NaN, as in DataFrame.duplicated
                    v = np.where(np.isnan(v), np.nan, v.astype(np.float64) + 0.0)
                bits = v.astype(np.float64 if v.dtype.kind == "f" else np.int64).view(np.uint64)
            else:  # factorize like DataFrame.duplicated does (all missing values share one code)
                bits = pd.factorize(values.iloc[cand])[0].astype(np.uint64)
            with np.errstate(over="ignore"):
                key = key * np.uint64(0x100000001B3) ^ bits
            again = pd.Series(key).duplicated(keep=False).to_numpy()
            cand, key = cand[again], key[again]
    logger.debug("duplicate check: %d candidate rows of %d", len(cand), len(data))
    dup = np.zeros(len(data), dtype=bool)
    if len(cand):
        dup[cand] = data.iloc[cand].duplicated(keep="first").to_numpy()
    return dup


@dataclasses.dataclass
class _Netting:
    purchase_value: np.ndarray
    """New value of each purchase line (in the order of ``buy``'s True positions)."""
    netted: np.ndarray
    """Value netted for each return line (in the order of ``ret``'s True positions)."""


def _net_returns(
    key_cols: list[np.ndarray], ts: np.ndarray, value: np.ndarray, buy: np.ndarray, ret: np.ndarray
) -> _Netting:
    """Net return values from the same key's most recent earlier purchase lines, newest first.

    Keys are (customer, product) or (customer,). Purchases and returns are first located with
    vectorised sorting and ``searchsorted``; the allocation is then a single pass over the
    return lines (processed in time order within a key, so earlier returns use up the most
    recent purchases first), skipping exhausted purchase lines with a path-compressed pointer.
    A purchase at the very same time as the return counts as earlier.
    """
    codes = np.zeros(len(ts), dtype=np.int64)
    for col in key_cols:  # combine per-column codes, re-densified so that they stay small
        part, uniques = pd.factorize(col, use_na_sentinel=False)
        codes = pd.factorize(codes * (len(uniques) + 1) + part)[0].astype(np.int64)
    # one sortable int per (key, time): rank timestamps densely
    t_rank = np.unique(ts, return_inverse=True)[1].astype(np.int64)
    width = int(t_rank.max()) + 2
    comp = codes * width + t_rank
    b_idx = np.flatnonzero(buy)
    r_idx = np.flatnonzero(ret)
    b_order = np.argsort(comp[b_idx], kind="stable")
    b_sorted = b_idx[b_order]
    b_comp = comp[b_sorted]
    r_order = np.argsort(comp[r_idx], kind="stable")
    r_sorted = r_idx[r_order]
    last = np.searchsorted(b_comp, comp[r_sorted], side="right") - 1
    first = np.searchsorted(b_comp, codes[r_sorted] * width, side="left")

    remaining = value[b_sorted].astype(float).tolist()
    parent = list(range(len(b_sorted)))  # parent[i] == i while line i still has value

    def find(i: int) -> int:
        root = i
        while root >= 0 and parent[root] != root:
            root = parent[root]
        while i >= 0 and parent[i] != i:  # path compression
            parent[i], i = root, parent[i]
        return root

    netted_sorted = np.zeros(len(r_sorted))
    r_values = value[r_sorted].tolist()
    for j, (lo, hi) in enumerate(zip(first.tolist(), last.tolist(), strict=True)):
        need = r_values[j]
        i = find(hi) if hi >= lo else -1
        while need > _EPS and i >= lo:
            take = remaining[i] if remaining[i] < need else need
            remaining[i] -= take
            need -= take
            if remaining[i] <= _EPS:
                remaining[i] = 0.0
                parent[i] = i - 1
                i = find(i - 1)
        netted_sorted[j] = r_values[j] - need if need > _EPS else r_values[j]

    purchase_value = np.empty(len(b_idx))
    purchase_value[b_order] = remaining
    netted = np.empty(len(r_idx))
    netted[r_order] = netted_sorted
    return _Netting(purchase_value=purchase_value, netted=netted)


# --------------------------------------------------------------------------------------------
# customers and events
# --------------------------------------------------------------------------------------------


def _consent(tab: _Table, canonical: str, s: pd.Series, rows: np.ndarray) -> np.ndarray:
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.fillna(False).to_numpy(dtype=bool)
    text = _as_text(s).str.lower()
    true = text.isin(_TRUE_TOKENS).to_numpy()
    false = text.isin(_FALSE_TOKENS).to_numpy() | text.isna().to_numpy()
    bad = ~(true | false)
    if bad.any():
        tab.fail(canonical, "value(s) are not true/false, 1/0 or yes/no", rows, bad, s)
    return true


def _unique_ids(tab: _Table, ids: pd.Series, rows: np.ndarray) -> None:
    dup = ids.duplicated(keep=False).to_numpy() & ids.notna().to_numpy()
    if dup.any():
        tab.fail("customer_id", "duplicated customer id(s) (one row per customer expected)", rows, dup, ids)


def load_customers(
    source: Source, config: Config | DataConfig | str | Path | None = None, *, as_of: Any = None
) -> pd.DataFrame:
    """Read the optional customers side table (mapping ``data.customer_columns``).

    Returns one row per customer with customer_id (string), age (float years, NaN when unknown),
    birth_date and signup_date (datetime64[ns], NaT when unknown), country and
    acquisition_channel (string), consent_email/consent_sms/consent_messenger (bool; parsed from
    true/false, 1/0, yes/no; missing is False). When only ``birth_date`` is given, age is the exact
    age in years (days / 365.25) at ``as_of`` (default ``config.as_of``, else today); a given
    ``age`` column wins where it has a value. Rows without a customer id are dropped.
    """
    cfg, cfg_as_of = _resolve_config(config)
    ref = as_of if as_of is not None else cfg_as_of
    ref_ts = _as_of_day(ref) if ref is not None else pd.Timestamp(dt.date.today())
    tab = _Table(source, read_table(source, separator=cfg.csv_separator), cfg.customer_columns, CUSTOMER_COLUMNS)
    tab.require("customer_id")
    data, c = tab.df, tab.cols
    ids = _ids(data[c["customer_id"]])
    keep = ids.notna().to_numpy()
    if not keep.any():
        raise DataError(f"{tab.name}: column {tab.column('customer_id')}: no row has a customer id")
    if (~keep).any():
        logger.warning("%s: dropped %d customer rows without a customer id", tab.name, int((~keep).sum()))
    rows = np.flatnonzero(keep)
    data, ids = data.loc[keep].reset_index(drop=True), ids[keep].reset_index(drop=True)
    _unique_ids(tab, ids, rows)
    n = len(data)
    out = pd.DataFrame({"customer_id": ids.astype("string")})

    def dates(name: str) -> pd.Series:
        if name not in c:
            return pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns]")
        return _timestamps(tab, name, data[c[name]], rows, None, cfg.timezone, allow_missing=True)

    birth = dates("birth_date")
    age = np.full(n, np.nan)
    if "age" in c:
        raw = data[c["age"]]
        text = _as_text(raw) if not pd.api.types.is_numeric_dtype(raw.dtype) else raw
        age = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bad = np.isnan(age) & pd.Series(text).notna().to_numpy() | (age < 0) | (age > 130)
        if bad.any():
            tab.fail("age", "value(s) are not ages in years (0-130)", rows, bad, raw)
    from_birth = (ref_ts - birth).dt.days.to_numpy(dtype=float, na_value=np.nan) / 365.25
    unborn = from_birth < 0
    if unborn.any():
        logger.warning("%s: %d birth dates after %s; their age is unknown", tab.name, int(unborn.sum()), ref_ts.date())
        from_birth[unborn] = np.nan
    age = np.where(np.isnan(age), from_birth, age)
    out["age"] = age.astype(float)
    out["birth_date"] = birth.to_numpy()
    for name in ("country", "acquisition_channel"):
        out[name] = (_as_text(data[c[name]]) if name in c else pd.Series(pd.NA, index=out.index)).astype("string")
    out["signup_date"] = dates("signup_date").to_numpy()
    for name in CONSENT_COLUMNS:
        out[name] = _consent(tab, name, data[c[name]], rows) if name in c else np.zeros(n, bool)
    logger.info("loaded %d customers from %s", n, tab.name)
    return out


def load_events(source: Source, config: Config | DataConfig | str | Path | None = None) -> pd.DataFrame:
    """Read the optional browsing events table (mapping ``data.event_columns``).

    Returns customer_id, product_id (string), timestamp (naive datetime64[ns]) and event (one of
    ``"view"``, ``"cart"``; case and blanks are ignored), sorted by customer_id then timestamp.
    Any other event name raises ``DataError``. Rows without a customer id are dropped.
    """
    cfg, _ = _resolve_config(config)
    tab = _Table(source, read_table(source, separator=cfg.csv_separator), cfg.event_columns, EVENT_COLUMNS)
    for name in EVENT_COLUMNS:
        tab.require(name)
    data, c = tab.df, tab.cols
    ids = _ids(data[c["customer_id"]])
    keep = ids.notna().to_numpy()
    if not keep.any():
        raise DataError(f"{tab.name}: column {tab.column('customer_id')}: no row has a customer id")
    rows = np.flatnonzero(keep)
    data, ids = data.loc[keep], ids[keep]
    event = _as_text(data[c["event"]]).str.lower()
    bad = ~event.isin(EVENT_TYPES).to_numpy()
    if bad.any():
        tab.fail("event", f"value(s) not in {list(EVENT_TYPES)}", rows, bad, data[c["event"]])
    prod = _ids(data[c["product_id"]], strip_float_zero=False)
    missing = prod.isna().to_numpy()
    if missing.any():
        tab.fail("product_id", "missing product id(s)", rows, missing, data[c["product_id"]])
    ts = _timestamps(tab, "timestamp", data[c["timestamp"]], rows, cfg.timestamp_format, cfg.timezone)
    out = pd.DataFrame({
        "customer_id": pd.array(ids.to_numpy(dtype=object), dtype="string"),
        "product_id": pd.array(prod.to_numpy(dtype=object), dtype="string"),
        "timestamp": ts.to_numpy(),
        "event": pd.array(event.to_numpy(dtype=object), dtype="string"),
    })
    out = out.sort_values(["customer_id", "timestamp"], kind="stable", ignore_index=True)
    logger.info("loaded %d events from %s", len(out), tab.name)
    return out


__all__ = [
    "CleaningReport",
    "DataError",
    "DUCKDB_PREFIX",
    "Source",
    "load_customers",
    "load_events",
    "load_transactions",
    "read_table",
    "source_name",
]
