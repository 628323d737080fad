"""Customer and product ids as hashable arrays, and fast look-ups of ids in a reference index.

Layout: :func:`ids` (ids as an object array of str), :func:`arrow_str` (ids as a pyarrow string array,
or None), :func:`positions` (position of each value in a unique index), :func:`distinct`.

Invariant: every look-up gives exactly what Python equality of the ids gives. The pyarrow paths are
speed tricks (several times faster than object hashing on millions of string ids); they are taken only
when every value is a str, and otherwise the plain pandas path (``Index.get_indexer``) answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd


def ids(values: Any) -> np.ndarray:
    """Customer ids as a numpy object array of str (fast hashing, no Arrow round trips)."""
    arr = pd.Series(values).to_numpy(dtype=object)
    if len(arr) and not all(type(x) is str for x in arr[:1000]):
        arr = pd.Series(arr).astype(str).to_numpy(dtype=object)
    return arr


def arrow_str(values: Any) -> Any:
    """``values`` (Series, Index or array of str, missing allowed) as a pyarrow large_string array, else None.

    None when pyarrow is missing or the values are not all str (ints, bytes, mixed): callers then fall
    back to pandas' object hashing, which matches exactly what Python equality matches.
    """
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return None
    if isinstance(values, pd.Series | pd.Index):
        values = values.array
    if not isinstance(getattr(values, "dtype", None), pd.StringDtype):
        arr = np.asarray(values, dtype=object)
        if arr.ndim != 1 or (len(arr) and pd.api.types.infer_dtype(arr, skipna=True) != "string"):
            return None
        values = arr
    try:
        arr = pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):
        return None
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def index_in(values: Any, value_set: Any) -> np.ndarray:
    """Position of each pyarrow value in the pyarrow ``value_set`` (first match), -1 when absent."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.index_in(values, value_set=value_set), -1).to_numpy().astype(np.intp)


def positions(values: Any, ref_index: pd.Index, ref_arrow: Any = None,
              to_key: Callable[[Any], np.ndarray] | None = None) -> np.ndarray:
    """Position of each value in ``ref_index`` (unique), -1 when absent: ``ref_index.get_indexer``.

    Hashes in Arrow when ``ref_arrow`` (``ref_index`` as :func:`arrow_str`) is given and the values
    are strings; otherwise ``ref_index.get_indexer(to_key(values))`` (``to_key`` defaults to the
    values as objects).
    """
    if len(values) == 0:
        return np.zeros(0, dtype=np.intp)
    val_a = arrow_str(values) if ref_arrow is not None else None
    if val_a is not None and (to_key is None or val_a.null_count == 0):  # ids() would stringify missing ids
        return index_in(val_a, ref_arrow)
    if to_key is not None:
        return ref_index.get_indexer(to_key(values))
    vals = values.to_numpy(dtype=object) if isinstance(values, pd.Series | pd.Index) else np.asarray(values, dtype=object)
    return ref_index.get_indexer(vals)


def distinct(arr: Any) -> int:
    """Number of distinct values in a pyarrow array."""
    import pyarrow.compute as pc

    return len(pc.unique(arr))
