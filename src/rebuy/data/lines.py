"""Array kernels of the transaction cleaning: id codes, distinct counts, exact duplicates, netting.

Pure functions on numpy arrays and pandas ``string`` Series (no ``Table``, no messages), each with
the result of the obvious pandas expression it replaces, only faster:

- :func:`id_codes`: integer codes of ids (equal ids, equal codes), by counting changes between
  neighbours when the ids are sorted, else ``pd.factorize``;
- :func:`n_distinct`: ``Series.nunique``;
- :func:`duplicated`: ``DataFrame.duplicated(keep="first")``, comparing all columns only on rows
  that share customer and timestamp;
- :func:`net_returns`: return values netted from the same key's most recent earlier purchase lines,
  newest first, never below 0 (amounts below ``EPS`` count as zero).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rebuy.data.values import arrow_strings

logger = logging.getLogger(__name__)

EPS = 1e-9
"""Currency amounts below this count as zero when netting returns."""

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # multiplier mixing customer codes into a row key
_FNV_PRIME = np.uint64(0x100000001B3)  # multiplier folding one more column into a row key


def n_distinct(s: pd.Series) -> int:
    """Number of distinct non-missing values (``Series.nunique``)."""
    arr = arrow_strings(s)
    if arr is None:
        return int(s.nunique())
    arr = arr.drop_null()
    if len(arr) and pc.all(pc.match_substring_regex(arr, r"^(0|[1-9][0-9]{0,17})$")).as_py():
        # canonical decimal numbers (e.g. invoice numbers) are distinct exactly when their ints are
        ints = np.sort(pc.cast(arr, pa.int64()).to_numpy())
        return int(np.count_nonzero(ints[1:] != ints[:-1])) + 1
    return len(pc.unique(arr))


def id_codes(ids: pd.Series) -> tuple[np.ndarray, bool]:
    """Integer codes of non-missing ids (equal ids, equal codes) and whether ids are sorted.

    Sorted ids (non-decreasing in the string order pandas sorts by) are coded by counting changes
    between neighbours, which is much cheaper than hashing every string.
    """
    arr = arrow_strings(ids)
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


def duplicated(data: pd.DataFrame, cust_codes: np.ndarray, cust_sorted: bool, ts: pd.Series) -> np.ndarray:
    """``data.duplicated(keep="first")`` as a numpy mask, computed on candidate rows only.

    Exact duplicates share their customer and timestamp, so only rows whose (customer code,
    raw timestamp) pair occurs more than once can be duplicates; the full all-column comparison
    runs on those rows alone (in their original order, so "first" means the same row). When the
    ids are sorted and the times ordered within each id, equal pairs are neighbours (no hashing).
    """
    naive = pd.api.types.is_datetime64_any_dtype(ts.dtype) and not isinstance(ts.dtype, pd.DatetimeTZDtype)
    t_codes = ts.to_numpy().view(np.int64) if naive else pd.factorize(ts)[0]
    cand = _neighbour_candidates(cust_codes, t_codes) if naive and cust_sorted else None
    if cand is None:
        cand = np.flatnonzero(pd.Series(_pair_key(cust_codes, t_codes)).duplicated(keep=False).to_numpy())
    if len(cand):
        cand = _narrow_candidates(data, cand, _pair_key(cust_codes[cand], t_codes[cand]))
    logger.debug("duplicate check: %d candidate rows of %d", len(cand), len(data))
    dup = np.zeros(len(data), dtype=bool)
    if len(cand):
        dup[cand] = data.iloc[cand].duplicated(keep="first").to_numpy()
    return dup


def _pair_key(cust_codes: np.ndarray, t_codes: np.ndarray) -> np.ndarray:
    """A uint64 hash of (customer code, time code) per row (equal pairs, equal keys)."""
    with np.errstate(over="ignore"):
        return cust_codes.astype(np.uint64) * _GOLDEN ^ t_codes.astype(np.uint64)


def _neighbour_candidates(cust_codes: np.ndarray, t_codes: np.ndarray) -> np.ndarray | None:
    """Rows whose neighbour has the same (customer, time), or None when times are not ordered
    within each customer (then equal pairs need not be neighbours)."""
    same = cust_codes[1:] == cust_codes[:-1]
    if (same & (t_codes[1:] < t_codes[:-1])).any():
        return None
    pair = same & (t_codes[1:] == t_codes[:-1])
    mask = np.zeros(len(cust_codes), dtype=bool)
    mask[1:] |= pair
    mask[:-1] |= pair
    return np.flatnonzero(mask)


def _narrow_candidates(data: pd.DataFrame, cand: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Narrow the candidates one column at a time (numeric columns first: they are cheap), keeping
    the rows whose running key still repeats. Equal rows always get equal keys, so no duplicate is
    lost; hash collisions only keep extra rows for the exact check."""
    numeric = [c for c in data.columns if isinstance(data[c].dtype, np.dtype) and data[c].dtype.kind in "fiu"]
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
            key = key * _FNV_PRIME ^ bits
        again = pd.Series(key).duplicated(keep=False).to_numpy()
        cand, key = cand[again], key[again]
    return cand


@dataclasses.dataclass
class Netting:
    """The result of :func:`net_returns` (currency)."""

    purchase_value: np.ndarray
    """New value of each purchase line (in the order of ``buy``'s True positions)."""
    netted: np.ndarray
    """Value netted for each return line (in the order of ``ret``'s True positions)."""


def net_returns(
    key_cols: list[np.ndarray], ts: np.ndarray, value: np.ndarray, buy: np.ndarray, ret: np.ndarray
) -> Netting:
    """Net return values from the same key's most recent earlier purchase lines, newest first.

    Keys are (customer, product) or (customer,). Purchases and returns are first located with
    vectorised sorting and ``searchsorted``; the allocation is then a single pass over the
    return lines (processed in time order within a key, so earlier returns use up the most
    recent purchases first), skipping exhausted purchase lines with a path-compressed pointer.
    A purchase at the very same time as the return counts as earlier.
    """
    codes = _key_codes(key_cols, len(ts))
    # one sortable int per (key, time): rank timestamps densely
    t_rank = np.unique(ts, return_inverse=True)[1].astype(np.int64)
    width = int(t_rank.max()) + 2
    comp = codes * width + t_rank
    b_idx, r_idx = np.flatnonzero(buy), np.flatnonzero(ret)
    b_order = np.argsort(comp[b_idx], kind="stable")
    b_sorted = b_idx[b_order]
    b_comp = comp[b_sorted]
    r_order = np.argsort(comp[r_idx], kind="stable")
    r_sorted = r_idx[r_order]
    last = np.searchsorted(b_comp, comp[r_sorted], side="right") - 1
    first = np.searchsorted(b_comp, codes[r_sorted] * width, side="left")
    remaining, netted_sorted = _allocate(
        value[b_sorted].astype(float).tolist(), value[r_sorted].tolist(), first, last
    )
    purchase_value = np.empty(len(b_idx))
    purchase_value[b_order] = remaining
    netted = np.empty(len(r_idx))
    netted[r_order] = netted_sorted
    return Netting(purchase_value=purchase_value, netted=netted)


def _key_codes(key_cols: list[np.ndarray], n: int) -> np.ndarray:
    """One int64 code per row for the combined key columns, re-densified so that codes stay small."""
    codes = np.zeros(n, dtype=np.int64)
    for col in key_cols:
        part, uniques = pd.factorize(col, use_na_sentinel=False)
        codes = pd.factorize(codes * (len(uniques) + 1) + part)[0].astype(np.int64)
    return codes


def _allocate(
    remaining: list[float], r_values: list[float], first: np.ndarray, last: np.ndarray
) -> tuple[list[float], np.ndarray]:
    """Take each return's value from purchases ``last[j]`` down to ``first[j]`` (sorted purchase
    positions), newest first; returns the purchases' remaining values and each return's netted value.

    ``remaining`` is consumed in place. Exhausted purchase lines are skipped through ``parent``
    pointers (``parent[i] == i`` while line i still has value), compressed as they are followed.
    """
    parent = list(range(len(remaining)))

    def find(i: int) -> int:
        root = i
        while root >= 0 and parent[root] != root:
            root = parent[root]
        while i >= 0 and parent[i] != i:  # path compression
            parent[i], i = root, parent[i]
        return root

    netted = np.zeros(len(r_values))
    for j, (lo, hi) in enumerate(zip(first.tolist(), last.tolist(), strict=True)):
        need = r_values[j]
        i = find(hi) if hi >= lo else -1
        while need > EPS and i >= lo:
            take = remaining[i] if remaining[i] < need else need
            remaining[i] -= take
            need -= take
            if remaining[i] <= EPS:
                remaining[i] = 0.0
                parent[i] = i - 1
                i = find(i - 1)
        netted[j] = r_values[j] - need if need > EPS else r_values[j]
    return remaining, netted
