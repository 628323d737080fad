"""The customers side table aligned to the score table: age, birth date and consent per channel.

:func:`customer_side` returns arrays aligned to the scored customers (row i = score row i):

- ``age`` in years (float; NaN when unknown): the ``age`` column, else from ``birth_date`` with
  :func:`rebuy.dates.age_years` (365.25-day years, the one convention of ``rebuy.dates``);
- ``birth`` (datetime64[ns]; NaT when unknown);
- ``consent[channel]`` (bool): the ``consent_<channel>`` column, missing values = not consented.

- ``unknown`` (object array of str): why consent is unknown ("" when known): no customers table, the
  customer is not in it, or it has no ``consent_*`` column at all (:data:`rebuy.offers.text.UNKNOWN_SOURCES`).

A customer missing from the table (or no table at all) has unknown age and birth date, and consent
``assume_consent_without_customers``; only when that is false is their consent "unknown" (an
assumed consent is treated as known). Of duplicated ``customer_id`` rows the last one is used.
Alignment takes a fast path when the table lists the scored customers in the same order, hashes
string ids in Arrow otherwise, and falls back to pandas for other ids (all three give the same rows).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from rebuy.dates import age_years
from rebuy.errors import OffersInputError
from rebuy.offers.ids import arrow_str, distinct, ids, index_in
from rebuy.offers.lists import strings
from rebuy.offers.names import CHANNELS
from rebuy.offers.text import UNKNOWN_SOURCES

if TYPE_CHECKING:
    from rebuy.config import OffersConfig

log = logging.getLogger("rebuy.offers")

class CustomerSide(NamedTuple):
    """Customers-table facts aligned to the score table (see the module docstring)."""

    age: np.ndarray
    consent: dict[str, np.ndarray]
    birth: np.ndarray
    unknown: np.ndarray


def _unknown(n: int, oc: OffersConfig, source: str, where: np.ndarray | None = None) -> np.ndarray:
    """Why consent is unknown per customer: ``source`` where ``where`` (all when None), "" elsewhere
    and everywhere when consent is assumed."""
    out = strings(n)
    if not oc.assume_consent_without_customers:
        out[slice(None) if where is None else where] = source
    return out


def customer_side(
    cust_ids: np.ndarray, customers: pd.DataFrame | None, as_of: pd.Timestamp, oc: OffersConfig,
    ids_arrow: Any = None,
) -> CustomerSide:
    """Age (years or NaN), consent per channel and birth date for the scored ids ``cust_ids``."""
    n = len(cust_ids)
    if customers is None:
        consent = {ch: np.full(n, oc.assume_consent_without_customers) for ch in CHANNELS}
        return CustomerSide(np.full(n, np.nan), consent, np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"),
                            _unknown(n, oc, UNKNOWN_SOURCES[0]))
    if "customer_id" not in customers.columns:
        raise OffersInputError("customers: missing column 'customer_id'")
    wanted = [c for c in ("age", "birth_date", *(f"consent_{ch}" for ch in CHANNELS)) if c in customers.columns]
    cust, pos = _align(cust_ids, customers, wanted, ids_arrow)
    known = pos >= 0
    aligned = cust.iloc[np.where(known, pos, 0)] if len(cust) else cust.reindex(range(n))
    no_columns = not any(f"consent_{ch}" in aligned.columns for ch in CHANNELS)
    if no_columns:
        consent = {ch: np.full(n, oc.assume_consent_without_customers) for ch in CHANNELS}
        unknown = _unknown(n, oc, UNKNOWN_SOURCES[2])
    else:
        consent = {ch: _consent(aligned, ch, known, oc) for ch in CHANNELS}
        unknown = _unknown(n, oc, UNKNOWN_SOURCES[1], ~known)
    birth = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    if "birth_date" in aligned.columns:
        birth = pd.to_datetime(aligned["birth_date"], errors="coerce").to_numpy(dtype="datetime64[ns]").copy()
        birth[~known] = np.datetime64("NaT")
    age = np.full(n, np.nan)
    if "age" in aligned.columns:
        age = pd.to_numeric(aligned["age"], errors="coerce").to_numpy(dtype=float).copy()
        age[~known] = np.nan
    age = np.where(np.isnan(age), age_years(birth, as_of), age)  # from the birth date where the age is missing
    return CustomerSide(np.where(np.isfinite(age), age, np.nan), consent, birth, unknown)


def _align(cust_ids: np.ndarray, customers: pd.DataFrame, wanted: list[str],
           ids_arrow: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """(customers table with the ``wanted`` columns, position of each scored id in it or -1)."""
    n = len(cust_ids)
    cid_arrow = arrow_str(customers["customer_id"]) if ids_arrow is not None else None
    if cid_arrow is not None and len(cid_arrow) <= n and cid_arrow.equals(ids_arrow[: len(cid_arrow)]):
        # the customers table lists the scored customers in the same order (ids are unique)
        pos = np.arange(n, dtype=np.intp)
        pos[len(cid_arrow):] = -1
        return customers[wanted], pos
    if cid_arrow is not None and cid_arrow.null_count == 0 and distinct(cid_arrow) == len(cid_arrow):
        # string ids, none missing or duplicated (the usual case): hash in Arrow
        return customers[wanted], index_in(ids_arrow, cid_arrow)
    cust_index = pd.Index(ids(customers["customer_id"]), dtype=object)
    dup = cust_index.duplicated(keep="last")
    if dup.any():
        log.warning("customers: %d duplicated customer_id row(s); the last one is used", int(dup.sum()))
    cust = customers.loc[~dup, wanted]
    cust.index = cust_index[~dup]
    return cust, cust.index.get_indexer(cust_ids)


def _consent(aligned: pd.DataFrame, ch: str, known: np.ndarray, oc: OffersConfig) -> np.ndarray:
    """Consent to ``ch`` per scored customer (unknown customers: ``assume_consent_without_customers``)."""
    n = len(known)
    col = f"consent_{ch}"
    if col not in aligned.columns:
        log.warning("customers: no %r column: %s is treated as not consented", col, ch)
        c = np.zeros(n, dtype=bool)
    else:
        try:
            c = aligned[col].astype("boolean").fillna(False).to_numpy(dtype=bool)
        except (TypeError, ValueError):
            raise OffersInputError(f"customers: column {col!r} must be boolean (True/False)") from None
        c = c if len(c) == n else np.zeros(n, dtype=bool)
    return np.where(known, c, oc.assume_consent_without_customers)
