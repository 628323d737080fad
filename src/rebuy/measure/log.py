"""Reading the offer log: one row per decision (customer, night, offer type, group), normalised.

The offer log is what ``rebuy score`` appends each night (columns :data:`rebuy.schema.OFFER_LOG_COLUMNS`).
:func:`read_offer_log` reads it from a DuckDB file (table ``offer_log``), a Parquet file or dataset
directory (every ``*.parquet`` below it; names starting with ``.`` or ``_`` are skipped), a CSV
(``.csv``/``.csv.gz``) or a DataFrame, and returns the columns measurement needs with fixed types:
``customer_id`` (string), ``decided_at`` (datetime64 midnight), ``offer_type`` (string), ``group``
("treatment"/"control"), ``discount_cost`` (float, currency, missing -> 0) and the optional
``segment`` (string), ``p_purchase_90d``, ``expected_purchases_90d``, ``total_spend`` (float) and
``deliver`` (bool). Rows of group "none" (no experiment) are dropped and counted in
``attrs["dropped_rows"]``. Bad input is a one-line :class:`~rebuy.errors.DataError` naming the
source, the column and an example row.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from rebuy.data import read_table, source_name
from rebuy.dates import naive_utc
from rebuy.errors import DataError
from rebuy.offers.control import CONTROL, NO_EXPERIMENT, TREATMENT

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("customer_id", "decided_at", "offer_type", "group")
"""Columns an offer log must have."""

COVARIATE_COLUMNS = ("p_purchase_90d", "expected_purchases_90d", "total_spend")
"""Optional pre-decision numbers of the log used as covariates."""

OFFER_LOG_TABLE_NAME = "offer_log"
"""The DuckDB table holding the offer log."""

NORMALISED = "rebuy_offer_log"
"""``attrs`` key marking a frame already normalised by :func:`read_offer_log`."""

_DUCKDB_SUFFIXES = (".duckdb", ".db")
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "t": True, "f": False,
             "1.0": True, "0.0": False}


def read_offer_log(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """The offer log of ``source`` with normalised types (see the module docstring).

    Raises :class:`~rebuy.errors.DataError` naming the source and column for a missing file or
    column, an unparseable date or number, a missing id or offer type, or an unknown group value.
    """
    name = source_name(source)
    raw = _read_raw(source, name)
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing} (an offer log needs {list(REQUIRED_COLUMNS)})")
    group = _groups(raw["group"], name)
    kept = raw.loc[group != NO_EXPERIMENT]
    out = pd.DataFrame(index=pd.RangeIndex(len(kept)))
    out["customer_id"] = _text(kept["customer_id"], name, "customer_id")
    out["decided_at"] = _days(kept["decided_at"], name)
    out["offer_type"] = _text(kept["offer_type"], name, "offer_type")
    out["group"] = pd.array(group[group != NO_EXPERIMENT], dtype="string")
    cost = _numbers(kept, "discount_cost", name)
    out["discount_cost"] = np.zeros(len(kept)) if cost is None else np.nan_to_num(cost, nan=0.0)
    if "segment" in kept.columns:
        out["segment"] = kept["segment"].astype("string").fillna("(none)").to_numpy()
    for col in COVARIATE_COLUMNS:
        values = _numbers(kept, col, name)
        if values is not None:
            out[col] = values
    if "deliver" in kept.columns:
        out["deliver"] = _booleans(kept["deliver"], name)
    dropped = int(len(raw) - len(kept))
    if dropped:
        logger.info("%s: dropped %d row(s) of group %r (no experiment)", name, dropped, NO_EXPERIMENT)
    out.attrs.update({NORMALISED: True, "source": name, "dropped_rows": dropped})
    return out


def _read_raw(source: str | Path | pd.DataFrame, name: str) -> pd.DataFrame:
    """The table as stored (columns untouched)."""
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    if not isinstance(source, (str, Path)):
        raise DataError(f"{name}: unsupported offer log source {type(source).__name__}; pass a path or a DataFrame")
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        return _read_dataset(path)
    if path.name.lower().endswith(_DUCKDB_SUFFIXES):
        return _read_duckdb(path)
    return read_table(path).reset_index(drop=True)


def _read_dataset(path: Path) -> pd.DataFrame:
    """Every ``*.parquet`` file below ``path`` (hidden ``.``/``_`` names skipped), concatenated."""
    files = sorted(
        f for f in path.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in f.relative_to(path).parts)
    )
    if not files:
        raise DataError(f"{path}: no *.parquet files in the offer log directory")
    frames = []
    for f in files:
        try:
            frames.append(pd.read_parquet(f))
        except Exception as err:  # pyarrow.ArrowInvalid, OSError, ...
            raise DataError(f"{f}: cannot be read as Parquet: {str(err).splitlines()[0]}") from None
    return pd.concat(frames, ignore_index=True)


def _read_duckdb(path: Path) -> pd.DataFrame:
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=True)
        try:
            return con.execute(f"SELECT * FROM {OFFER_LOG_TABLE_NAME}").df()
        finally:
            con.close()
    except duckdb.Error as err:
        raise DataError(f"{path}: cannot read table {OFFER_LOG_TABLE_NAME!r}: {str(err).splitlines()[0]}") from None


def _example(values: pd.Series, bad: np.ndarray) -> str:
    """``row N = 'value'`` for the first offending row (1-based data rows)."""
    i = int(np.flatnonzero(bad)[0])
    return f"row {i + 1} = {values.iloc[i]!r}"


def _groups(values: pd.Series, name: str) -> np.ndarray:
    """Lower-cased group labels; a value outside treatment/control/none is a DataError."""
    text = values.astype("string").str.strip().str.lower()
    allowed = text.isin([TREATMENT, CONTROL, NO_EXPERIMENT]).fillna(False).to_numpy(dtype=bool)
    if not allowed.all():
        raise DataError(f"{name}: column 'group': {int((~allowed).sum())} unknown value(s) "
                        f"(expected {TREATMENT}/{CONTROL}/{NO_EXPERIMENT}): {_example(values, ~allowed)}")
    return text.to_numpy(dtype=object)


def _text(values: pd.Series, name: str, column: str) -> pd.array:
    text = values.astype("string").str.strip()
    bad = (text.isna() | (text == "")).to_numpy(dtype=bool)
    if bad.any():
        raise DataError(f"{name}: column {column!r}: {int(bad.sum())} missing value(s): {_example(values, bad)}")
    return text.array


def _days(values: pd.Series, name: str) -> np.ndarray:
    """Decision days as naive datetime64[ns] midnights (aware values converted to UTC)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        try:
            parsed = pd.to_datetime(values, errors="coerce", format="mixed")
        except ValueError:  # mixed time zones (or aware and naive): convert all to UTC
            parsed = pd.to_datetime(values, errors="coerce", format="mixed", utc=True)
        if not pd.api.types.is_datetime64_any_dtype(parsed):
            parsed = pd.to_datetime(values, errors="coerce", format="mixed", utc=True)
    parsed = naive_utc(parsed)
    bad = parsed.isna().to_numpy(dtype=bool)
    if bad.any():
        raise DataError(f"{name}: column 'decided_at': {int(bad.sum())} missing or unparseable date(s): "
                        f"{_example(values, bad)}")
    return parsed.dt.normalize().to_numpy(dtype="datetime64[ns]")


def _numbers(frame: pd.DataFrame, column: str, name: str) -> np.ndarray | None:
    """The column as float64 (NaN where empty), None when absent; text that is no number is an error."""
    if column not in frame.columns:
        return None
    values = frame[column]
    parsed = pd.to_numeric(values, errors="coerce")
    bad = (parsed.isna() & values.notna()).to_numpy(dtype=bool)
    if bad.any():
        raise DataError(f"{name}: column {column!r}: {int(bad.sum())} value(s) that are not numbers: "
                        f"{_example(values, bad)}")
    return parsed.to_numpy(dtype=np.float64, na_value=np.nan)


def _booleans(values: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values):
        return values.fillna(False).to_numpy(dtype=bool)
    text = values.astype("string").str.strip().str.lower()
    mapped = text.map(_BOOL_TEXT)
    bad = (mapped.isna() & text.notna()).to_numpy(dtype=bool)
    if bad.any():
        raise DataError(f"{name}: column 'deliver': {int(bad.sum())} value(s) that are not true/false: "
                        f"{_example(values, bad)}")
    return mapped.fillna(False).to_numpy(dtype=bool)
