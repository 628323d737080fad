"""Reason texts: printf templates filled column-wise, dates as text, and the outcome sentences.

Every reason is ``<trigger>; <offer text>.``: the rule writes what triggered the offer (its own
numbers) into :class:`Texts`; the offer text comes from the rule's ``sentence`` (or, for a reminder
or no offer, from the templates here). Percentages are ``percent(share)`` (2 decimals, ``%g``),
money ``%.2f`` in the transactions' currency, dates ``YYYY-MM-DD`` (NaT -> ``unknown``), counts and
day distances in words (:func:`count_phrase`, :func:`days_ago`, :func:`in_days`: "1 repeat purchase",
"no repeat purchases", "today", "yesterday"), products by their description when the data has one
(:func:`join_products` with the run's names; the ``offer_products`` column keeps the ids).

Speed tricks and their plain twins (tests prove each pair equal): :func:`day_strings` formats each
distinct day once (plain: :func:`day_string`); :meth:`Texts.fill` fuses the trigger's template with
the sentence's and formats once instead of formatting the trigger first.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from rebuy.offers.lists import strings

REMINDER = "%s; %s: a reminder%s instead."
"""Trigger; why there is no discount (the note); " of <products>"."""
NO_RULE = "No offer rule applies (P(alive) %.2f, last order %s, %s)."
"""Without a ``p_purchase_90d`` column: P(alive), last order day, repeat purchases (:func:`count_phrase`)."""
NO_RULE_P90 = "No offer rule applies (P(purchase in 90 days) %.2f, last order %s, %s)."
"""With ``p_purchase_90d`` (the calibrated number that ranks; P(alive) is 1 for every one-time buyer
under BG/NBD, so it would contradict a "Lost" segment)."""
BELOW_FLOOR = "P(alive) is %.3f, below the floor of {floor:g}: an offer would be wasted."
WHOLESALE = "Wholesale customer (total spend %.2f over %s): kept out of consumer offers."
NOT_SENT = " Not sent: %s."
"""Appended to the reason of a decision without a channel (the decision stands; ``deliver`` is false)."""
TOO_YOUNG = "younger than the minimum contact age of {age}"
NO_CONSENT = "no consented channel"
CONSENT_UNKNOWN = "consent unknown ({source})"
"""``source``: one of :data:`UNKNOWN_SOURCES`."""
UNKNOWN_SOURCES = ("no customers table", "not in the customers table", "no consent columns in the customers table")


def count_phrase(n: float, one: str, many: str) -> str:
    """``n`` things in words: "no repeat purchases", "1 repeat purchase", "3 repeat purchases"."""
    if n == 0:
        return f"no {many}"
    return f"1 {one}" if n == 1 else f"{n:g} {many}"


def days_ago(days: int) -> str:
    """Days before as-of in words: "today", "yesterday", "5 days ago"."""
    if days == 0:
        return "today"
    return "yesterday" if days == 1 else f"{days} days ago"


def in_days(days: int) -> str:
    """Days after as-of in words: "today", "tomorrow", "in 5 days"."""
    if days == 0:
        return "today"
    return "tomorrow" if days == 1 else f"in {days} days"


def phrases(fn: Any, values: Any, *args: Any) -> np.ndarray:
    """``fn(value, *args)`` for each value: an object array of str (the vectorised twin of ``fn``).
    Numbers are phrased once per distinct value (counts and day gaps repeat across a million
    customers); -0.0 is phrased row by row, since ``np.unique`` would merge it with 0.0."""
    arr = np.asarray(values)
    if arr.ndim == 1 and arr.dtype.kind in "iuf" and len(arr) > 1000 and not (np.signbit(arr) & (arr == 0)).any():
        distinct, inverse = np.unique(arr, return_inverse=True)
        table = np.fromiter((fn(v, *args) for v in distinct.tolist()), dtype=object, count=len(distinct))
        return table[inverse]
    vals = arr.tolist()
    return np.fromiter((fn(v, *args) for v in vals), dtype=object, count=len(vals))


def fill(template: str, *cols: Any) -> np.ndarray:
    """Fill a printf ``template`` row by row from equal-length columns: one pass, object array of str."""
    lists = [c.tolist() if isinstance(c, np.ndarray) else list(c) for c in cols]
    n = len(lists[0]) if lists else 0
    return np.fromiter(map(template.__mod__, zip(*lists, strict=True)), dtype=object, count=n)


def percent(share: Any) -> Any:
    """A share (0.15) as the percentage quoted in texts (15.0), rounded to 2 decimals."""
    return np.round(share * 100, 2)


def day_string(ts: Any) -> str:
    """One datetime as 'YYYY-MM-DD' ('unknown' when missing): the plain twin of :func:`day_strings`."""
    return "unknown" if pd.isna(ts) else str(np.datetime64(pd.Timestamp(ts), "D"))


def day_strings(ts: Any) -> np.ndarray:
    """Datetimes -> 'YYYY-MM-DD' strings (NaT -> 'unknown')."""
    arr = np.asarray(ts, dtype="datetime64[ns]")
    nat = np.isnat(arr)
    days = arr.astype("datetime64[D]").astype(np.int64)
    lo, hi = (int(days[~nat].min()), int(days[~nat].max())) if (~nat).any() else (0, -1)
    if len(arr) > 1000 and hi - lo < len(arr):
        # few distinct days: format each day of the range once, then look the rows up
        table = np.datetime_as_string(np.arange(lo, hi + 1).astype("datetime64[D]"), unit="D").astype(object)
        out = table[np.where(nat, 0, days - lo)] if hi >= lo else strings(len(arr))
    else:
        out = np.datetime_as_string(arr, unit="D").astype(object)
    out[nat] = "unknown"
    return out


def prefixed(texts: np.ndarray, prefix: str) -> np.ndarray:
    """prefix + text where the text is not empty, else ''."""
    return np.fromiter(((prefix + t) if t else "" for t in texts), dtype=object, count=len(texts))


def product_text(products: Any, names: Mapping[str, str] | None) -> str:
    """One product list as 'A, B, C', each product by its name where ``names`` has one (else its id)."""
    if not names:
        return ", ".join(map(str, products))
    return ", ".join(names.get(str(p), str(p)) for p in products)


def join_products(lists: np.ndarray, k: int, names: Mapping[str, str] | None = None) -> np.ndarray:
    """Lists of product ids -> 'A, B, C' strings (first ``k`` of each), by name where ``names`` has one."""
    if names:
        return np.fromiter((product_text(p[:k], names) for p in lists), dtype=object, count=len(lists))
    try:
        return np.fromiter(map(", ".join, map(operator.itemgetter(slice(k)), lists)), dtype=object, count=len(lists))
    except TypeError:  # non-str ids
        return np.fromiter((", ".join(map(str, p[:k])) for p in lists), dtype=object, count=len(lists))


def string_array(values: np.ndarray) -> Any:
    """An object array of str as ``pd.array(values, dtype="string")``; built by pyarrow directly when that
    is the string storage (several times faster on a million long reasons)."""
    if pd.StringDtype().storage == "pyarrow":
        import pyarrow as pa

        return pd.arrays.ArrowStringArray(pa.array(values, type=pa.large_string()))
    return pd.array(values, dtype="string")


class Texts:
    """Per-row texts kept as pieces (sorted rows, printf template, columns aligned to the rows).

    A text is only ever used as the leading ``%s`` of a longer sentence, so :meth:`fill` formats the
    piece's template fused with the sentence's in a single pass instead of formatting the text first.
    """

    def __init__(self, n: int) -> None:
        self.piece = np.full(n, -1, dtype=np.int64)
        self.parts: list[tuple[np.ndarray, str, list[np.ndarray]]] = []

    def set(self, rows: np.ndarray, template: str, *cols: Any) -> None:
        """Rows ``rows`` (sorted, not set before) get ``template % row of cols``."""
        self.piece[rows] = len(self.parts)
        self.parts.append((rows, template, [np.asarray(c) for c in cols]))

    def fill(self, out: np.ndarray, rows: np.ndarray, template: str, *cols: Any) -> None:
        """``out[rows] = template % (text, *row of cols)``; ``template`` starts with ``%s`` (the text)."""
        if not template.startswith("%s"):
            raise AssertionError(f"template {template!r} must start with %s")
        cols = tuple(np.asarray(c) for c in cols)
        pid = self.piece[rows]
        for p in np.unique(pid).tolist():
            m = pid == p
            if p < 0:
                out[rows[m]] = fill(template, strings(int(m.sum())), *(c[m] for c in cols))
                continue
            p_rows, p_template, p_cols = self.parts[p]
            at = np.searchsorted(p_rows, rows[m])
            out[rows[m]] = fill(p_template + template[2:], *(c[at] for c in p_cols), *(c[m] for c in cols))
