"""Column mapping and value parsing: the read table's columns become canonical, typed arrays.

:class:`Table` maps canonical column names to the source's (``data.columns`` and friends) and
names original rows in messages; the ``parse_*`` helpers turn one column into typed values and
raise a one-line ``DataError`` naming the source, the column and up to three offending rows.

Invariants: row positions passed around (``rows``) are 0-based positions into the table as read;
messages show them 1-based ("row N" = data row N, the header not counted) or, for a DataFrame
source, as its index label. Text is stripped and NA spellings ("", "nan", "null", ...) become NA.
Identifiers stay pandas ``string`` (Arrow-backed when the source is); timestamps come back naive
``datetime64[ns]`` within the years 1678-2261.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rebuy.data.sources import Source, first_line, source_name
from rebuy.errors import DataError

_NA_TOKENS = ("", "nan", "none", "null", "na", "n/a", "<na>", "nat")
_NA_SPELLINGS = tuple(sorted({
    "".join(chars) for token in _NA_TOKENS for chars in itertools.product(*({ch, ch.upper()} for ch in token))
}))
_TRUE_TOKENS = ("true", "t", "yes", "y", "1", "1.0")
_FALSE_TOKENS = ("false", "f", "no", "n", "0", "0.0")
_MAX_EXAMPLES = 3
_TS_MIN, _TS_MAX = pd.Timestamp("1678-01-01"), pd.Timestamp("2261-12-31")



class Table:
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
        """Raise a DataError naming the columns present when ``canonical`` is not mapped."""
        if canonical not in self.cols:
            raise DataError(
                f"{self.name}: required column {canonical!r} not found{hint}; columns present: "
                f"{list(self.df.columns)}; map it with data.columns / --column {canonical}=SOURCE"
            )

    def label(self, pos: int) -> str:
        """``row N`` (1-based data row) or, for a DataFrame source, ``index LABEL``."""
        if self.index is not None:
            return f"index {self.index[pos]!r}"
        return f"row {pos + 1}"

    def examples(self, positions: np.ndarray, values: pd.Series | np.ndarray) -> str:
        """Up to three ``label = value`` examples, and how many more there are."""
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


def as_text(s: pd.Series) -> pd.Series:
    """Text values with surrounding blanks stripped and NA tokens ("", "nan", "null", ...) as NA."""
    text = s.astype("string").str.strip()
    arr = arrow_strings(text)
    if arr is None:
        return text.mask(text.str.lower().isin(_NA_TOKENS))
    # every upper/lower-case spelling of the tokens: the same as lower() then isin(), without lower()
    tokens = pa.array(_NA_SPELLINGS, type=arr.type)
    na = pc.fill_null(pc.is_in(arr, value_set=tokens), False).to_numpy(zero_copy_only=False)
    return text.mask(na) if na.any() else text


def parse_ids(s: pd.Series, *, strip_float_zero: bool = True) -> pd.Series:
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
    text = as_text(s)
    if strip_float_zero and may_contain(text, ".0"):  # the regex can only match values with ".0"
        text = text.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)
    return text


def may_contain(text: pd.Series, part: str) -> bool:
    """Whether any value of a ``string`` Series contains ``part`` (True when unsure)."""
    arr = arrow_strings(text)
    if arr is None:
        return True
    return bool(pc.any(pc.match_substring(arr, part)).as_py())


def arrow_strings(s: pd.Series | pd.api.extensions.ExtensionArray) -> pa.ChunkedArray | None:
    """The Arrow data behind a pyarrow-backed string Series/array, or None for other storage."""
    values = s.array if isinstance(s, pd.Series) else s
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        arr = values.__arrow_array__()
        return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])
    return None


def parse_numbers(tab: Table, canonical: str, s: pd.Series, rows: np.ndarray) -> np.ndarray:
    """Parse a numeric column to float64; missing, non-numeric or infinite values raise DataError."""
    if pd.api.types.is_bool_dtype(s.dtype):
        tab.fail(canonical, "values are true/false, not numbers", rows, np.ones(len(s), bool), s)
    if pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.to_numpy(dtype=float, na_value=np.nan)
        missing = np.isnan(vals)
        raw = s
    else:
        raw = as_text(s)
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


def parse_timestamps(
    tab: Table, canonical: str, s: pd.Series, rows: np.ndarray, fmt: str | None, timezone: str | None,
    *, allow_missing: bool = False,
) -> pd.Series:
    """Parse timestamps to timezone-naive ``datetime64[ns]``.

    Text is parsed with ``fmt`` (strict) or, when ``fmt`` is None, with the format pandas infers
    from the first value; values that do not fit it may still be any ISO 8601 variant.
    Timezone-aware values are converted to ``timezone`` (UTC when None) and the zone dropped.
    Unparseable values, missing values (unless ``allow_missing``) and values outside the years
    1678-2261 raise ``DataError``.
    """
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        ts = pd.Series(s.to_numpy() if not isinstance(s.dtype, pd.DatetimeTZDtype) else s.array, index=s.index)
        missing = ts.isna().to_numpy()
    else:
        raw = as_text(s)
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


def _parse_datetime(tab: Table, canonical: str, raw: pd.Series, rows: np.ndarray, fmt: str | None) -> pd.Series:
    """Text to datetimes (NaT where unparseable): ``fmt``, else the inferred format, then ISO 8601.

    Values that do not fit the format inferred from the first value may be any ISO 8601 variant
    (date only, "T", offsets); day-first versus month-first is never guessed.
    """
    ts = _to_datetime(tab, canonical, raw, fmt)
    retry = ts.isna() & raw.notna()
    if fmt is None and retry.any():
        again = _to_datetime(tab, canonical, raw[retry], "ISO8601")
        if again.notna().any():
            ts = _merge_retried(tab, canonical, raw, rows, ts, retry, again)
    return ts


def _to_datetime(tab: Table, canonical: str, values: pd.Series, form: str | None) -> pd.Series:
    """``pd.to_datetime`` with ``errors="coerce"``, in microseconds (wide range; bounds checked later)."""
    try:
        with warnings.catch_warnings():  # "could not infer format": per-value parsing is intended
            warnings.simplefilter("ignore", UserWarning)
            try:
                ts = pd.to_datetime(values, format=form, errors="coerce")
            except ValueError:  # mixed UTC offsets: convert everything to UTC
                ts = pd.to_datetime(values, format=form, errors="coerce", utc=True)
    except (ValueError, TypeError, OverflowError) as err:
        raise DataError(f"{tab.name}: column {tab.column(canonical)}: "
                        f"cannot parse dates with format {form!r}: {first_line(err)}") from None
    return ts.dt.as_unit("us")


def _aware(ts: pd.Series) -> bool:
    return isinstance(ts.dtype, pd.DatetimeTZDtype)


def _merge_retried(
    tab: Table, canonical: str, raw: pd.Series, rows: np.ndarray, ts: pd.Series, retry: pd.Series, again: pd.Series
) -> pd.Series:
    """``ts`` with the re-parsed values ``again`` at ``retry``; aware and naive values must not mix."""
    if ts.notna().any() and _aware(ts) != _aware(again):
        mask = retry.to_numpy().copy()
        mask[mask] = again.notna().to_numpy()
        tab.fail(canonical, "date(s) mix timezone-aware and naive values", rows, mask, raw)
    if _aware(again):
        again = again.dt.tz_convert("UTC")
        ts = ts.dt.tz_convert("UTC") if _aware(ts) else ts.dt.tz_localize("UTC")
    elif _aware(ts):
        ts = ts.dt.tz_localize(None)
    return ts.mask(retry, again.reindex(ts.index))


def parse_consent(tab: Table, canonical: str, s: pd.Series, rows: np.ndarray) -> np.ndarray:
    """A consent flag as bool: true/false, t/f, yes/no, y/n or 1/0 (any case); missing is False."""
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.fillna(False).to_numpy(dtype=bool)
    text = as_text(s).str.lower()
    true = text.isin(_TRUE_TOKENS).to_numpy()
    false = text.isin(_FALSE_TOKENS).to_numpy() | text.isna().to_numpy()
    bad = ~(true | false)
    if bad.any():
        tab.fail(canonical, "value(s) are not true/false, 1/0 or yes/no", rows, bad, s)
    return true


def is_in(values: pd.Series | pd.Index | np.ndarray, among: object) -> np.ndarray:
    """Boolean array: which of ``values`` occur in ``among`` (missing values never do), like
    ``values.isin(among)`` for ids and other strings but hashed by Arrow. pandas 3's ``isin`` on
    Arrow-backed strings first turns ``among`` into a Python list (19.6 s for 1M ids on this
    machine, against 0.6 s here); other dtypes go to pandas unchanged."""
    left, right = _arrow_strings(values), _arrow_strings(among)
    if left is None or right is None:
        return np.asarray(pd.Series(values).isin(list(among) if isinstance(among, set) else among), dtype=bool)
    found = pc.is_in(left, value_set=right, skip_nulls=True)
    return np.asarray(found.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _arrow_strings(values: object) -> pa.Array | pa.ChunkedArray | None:
    """``values`` as an Arrow string array when they are pandas strings (None otherwise)."""
    array = values.array if isinstance(values, pd.Series | pd.Index) else values
    if isinstance(array, pd.arrays.ArrowStringArray) or (
            isinstance(array, pd.api.extensions.ExtensionArray) and pd.api.types.is_string_dtype(array.dtype)):
        arrow = pa.array(array)
        return arrow if pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type) else arrow.cast(pa.string())
    return None
