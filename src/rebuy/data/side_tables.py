"""The optional side tables: customers (``load_customers``) and browsing events (``load_events``).

Both read a source like the transactions (see :mod:`rebuy.data`), map its columns with
``data.customer_columns`` / ``data.event_columns`` and drop rows without a customer id.
Invariants: the customers table has exactly one row per customer id (a repeated id is a
``DataError``); ages are float years with :data:`rebuy.dates.DAYS_PER_YEAR`-day years, NaN when
unknown; events are sorted by customer_id then timestamp and their ``event`` is one of
:data:`EVENT_TYPES`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rebuy.config import Config, DataConfig
from rebuy.data.sources import Source, read_table, resolve_config
from rebuy.data.values import Table, as_text, parse_consent, parse_ids, parse_timestamps
from rebuy.dates import age_years, as_of_day
from rebuy.errors import DataError

logger = logging.getLogger(__name__)

CUSTOMER_COLUMNS = (
    "customer_id", "age", "birth_date", "country", "acquisition_channel", "signup_date",
    "consent_email", "consent_sms", "consent_messenger",
)
CONSENT_COLUMNS = ("consent_email", "consent_sms", "consent_messenger")
EVENT_COLUMNS = ("customer_id", "product_id", "timestamp", "event")
EVENT_TYPES = ("view", "cart")
_MAX_AGE = 130  # years; a larger age column value is an error


def _with_customer_id(tab: Table) -> tuple[pd.DataFrame, pd.Series, np.ndarray, int]:
    """(rows with a customer id, their normalised ids, their positions, rows dropped)."""
    data = tab.df
    ids = parse_ids(data[tab.cols["customer_id"]])
    keep = ids.notna().to_numpy()
    if not keep.any():
        raise DataError(f"{tab.name}: column {tab.column('customer_id')}: no row has a customer id")
    return data.loc[keep], ids[keep], np.flatnonzero(keep), int((~keep).sum())


def load_customers(
    source: Source, config: Config | DataConfig | str | Path | None = None, *, as_of: Any = None
) -> pd.DataFrame:
    """Read the optional customers side table (mapping ``data.customer_columns``).

    Returns one row per customer with customer_id (string), age (float years, NaN when unknown),
    birth_date and signup_date (datetime64[ns], NaT when unknown), country and
    acquisition_channel (string), consent_email/consent_sms/consent_messenger (bool; parsed from
    true/false, 1/0, yes/no; missing is False). When only ``birth_date`` is given, age is the exact
    age in years (days / 365.25, :func:`rebuy.dates.age_years`) at ``as_of`` (default
    ``config.as_of``, else today); a given ``age`` column wins where it has a value. Rows without a
    customer id are dropped.
    """
    cfg, cfg_as_of = resolve_config(config)
    ref = as_of if as_of is not None else cfg_as_of
    ref_ts = as_of_day(ref, "as_of", DataError) if ref is not None else pd.Timestamp(dt.date.today())
    tab = Table(source, read_table(source, separator=cfg.csv_separator), cfg.customer_columns, CUSTOMER_COLUMNS)
    tab.require("customer_id")
    data, ids, rows, dropped = _with_customer_id(tab)
    if dropped:
        logger.warning("%s: dropped %d customer rows without a customer id", tab.name, dropped)
    data, ids = data.reset_index(drop=True), ids.reset_index(drop=True)
    dup = ids.duplicated(keep=False).to_numpy() & ids.notna().to_numpy()
    if dup.any():
        tab.fail("customer_id", "duplicated customer id(s) (one row per customer expected)", rows, dup, ids)
    c, n = tab.cols, len(data)
    out = pd.DataFrame({"customer_id": ids.astype("string")})

    def dates(name: str) -> pd.Series:
        if name not in c:
            return pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns]")
        return parse_timestamps(tab, name, data[c[name]], rows, None, cfg.timezone, allow_missing=True)

    birth = dates("birth_date")
    out["age"] = _ages(tab, data, rows, birth, ref_ts)
    out["birth_date"] = birth.to_numpy()
    for name in ("country", "acquisition_channel"):
        out[name] = (as_text(data[c[name]]) if name in c else pd.Series(pd.NA, index=out.index)).astype("string")
    out["signup_date"] = dates("signup_date").to_numpy()
    for name in CONSENT_COLUMNS:
        out[name] = parse_consent(tab, name, data[c[name]], rows) if name in c else np.zeros(n, bool)
    logger.info("loaded %d customers from %s", n, tab.name)
    return out


def _ages(tab: Table, data: pd.DataFrame, rows: np.ndarray, birth: pd.Series, ref_ts: pd.Timestamp) -> np.ndarray:
    """Age in years: the ``age`` column (0-130) where given, else from the birth date at ``ref_ts``
    (birth dates after ``ref_ts`` give an unknown age, logged)."""
    age = np.full(len(data), np.nan)
    if "age" in tab.cols:
        raw = data[tab.cols["age"]]
        text = as_text(raw) if not pd.api.types.is_numeric_dtype(raw.dtype) else raw
        age = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bad = np.isnan(age) & pd.Series(text).notna().to_numpy() | (age < 0) | (age > _MAX_AGE)
        if bad.any():
            tab.fail("age", f"value(s) are not ages in years (0-{_MAX_AGE})", rows, bad, raw)
    from_birth = age_years(birth, ref_ts)
    unborn = from_birth < 0
    if unborn.any():
        logger.warning(
            "%s: %d birth dates after %s; their age is unknown", tab.name, int(unborn.sum()), ref_ts.date()
        )
        from_birth[unborn] = np.nan
    return np.where(np.isnan(age), from_birth, age).astype(float)


def load_events(source: Source, config: Config | DataConfig | str | Path | None = None) -> pd.DataFrame:
    """Read the optional browsing events table (mapping ``data.event_columns``).

    Returns customer_id, product_id (string), timestamp (naive datetime64[ns]) and event (one of
    ``"view"``, ``"cart"``; case and blanks are ignored), sorted by customer_id then timestamp.
    Any other event name raises ``DataError``. Rows without a customer id are dropped.
    """
    cfg, _ = resolve_config(config)
    tab = Table(source, read_table(source, separator=cfg.csv_separator), cfg.event_columns, EVENT_COLUMNS)
    for name in EVENT_COLUMNS:
        tab.require(name)
    data, ids, rows, _ = _with_customer_id(tab)
    c = tab.cols
    event = as_text(data[c["event"]]).str.lower()
    bad = ~event.isin(EVENT_TYPES).to_numpy()
    if bad.any():
        tab.fail("event", f"value(s) not in {list(EVENT_TYPES)}", rows, bad, data[c["event"]])
    prod = parse_ids(data[c["product_id"]], strip_float_zero=False)
    missing = prod.isna().to_numpy()
    if missing.any():
        tab.fail("product_id", "missing product id(s)", rows, missing, data[c["product_id"]])
    ts = parse_timestamps(tab, "timestamp", data[c["timestamp"]], rows, cfg.timestamp_format, cfg.timezone)
    out = pd.DataFrame({
        "customer_id": pd.array(ids.to_numpy(dtype=object), dtype="string"),
        "product_id": pd.array(prod.to_numpy(dtype=object), dtype="string"),
        "timestamp": ts.to_numpy(),
        "event": pd.array(event.to_numpy(dtype=object), dtype="string"),
    })
    out = out.sort_values(["customer_id", "timestamp"], kind="stable", ignore_index=True)
    logger.info("loaded %d events from %s", len(out), tab.name)
    return out
