"""Object arrays of strings and of product lists, the shapes the offers engine works in.

A product list is a Python ``list`` (or the shared empty tuple ``()`` for "no products" until the
output is built); ``np.array`` would turn a list of lists into a 2-D array, so every array of lists
here is built with :func:`obj`. None, NaN and a missing value mean "no products"; a single str id
means a one-product list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def strings(n: int, value: str = "") -> np.ndarray:
    """An object array of ``n`` copies of a string."""
    out = np.empty(n, dtype=object)
    out[:] = value
    return out


def isin(arr: np.ndarray, values: Sequence[str]) -> np.ndarray:
    """Elementwise membership of an object array of str in a few values (np.isin hashes every object)."""
    out = np.zeros(len(arr), dtype=bool)
    for v in values:
        out |= arr == v
    return out


def as_list(x: Any) -> list:
    """A list-like, a single id or a missing value (None/NaN) as a list."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return []
    if isinstance(x, str):
        return [x]
    return list(x)


def first_k(x: Any, k: int) -> list:
    """The first ``k`` products of a list-like (tuple, array) or of a single id / missing value, as a new list."""
    if isinstance(x, tuple | np.ndarray):
        return list(x[:k])
    return as_list(x)[:k]


def obj(items: Sequence) -> np.ndarray:
    """A 1-D object array holding ``items`` (lists stay lists; ``np.array`` would make a 2-D array)."""
    return np.fromiter(items, dtype=object, count=len(items))


def empty_lists(n: int) -> np.ndarray:
    """``n`` empty product lists (one shared immutable empty tuple; lists are made on output)."""
    out = np.empty(n, dtype=object)
    out.fill(())
    return out


def take(lists: np.ndarray, k: int) -> np.ndarray:
    """First ``k`` items of each list-like (None/NaN -> empty), as an object array."""
    return obj([x[:k] if type(x) is list or type(x) is tuple else as_list(x)[:k] for x in lists])


def first_k_lists(values: np.ndarray, k: int) -> np.ndarray:
    """Each row's first ``k`` products as its own new list (made once per row)."""
    return obj([x[:k] if type(x) is list else first_k(x, k) for x in values])
