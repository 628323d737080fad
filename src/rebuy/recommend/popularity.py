"""Popularity lists and cold start: global, per country and per segment, and the list fill.

Layout: :class:`Popularity` (the lists and each customer's country / segment label) with its cold
start choice :meth:`Popularity.for_customer`, :func:`fit_popularity` (from lines) and
:func:`popularity_from_pairs` (from customer x product pairs), :func:`fill` (complete a list
from candidate lists) and :class:`SegmentLookup` (the per-call customer -> segment map).

Invariants: popularity is the (decayed) number of distinct customers who bought a product; lists
are int64 product columns, most popular first, ties by column; country and segment lists keep the
top :data:`POPULAR_KEEP`; the global list holds every product. The cold start order is: the label
passed for the call (a segment, else a country name), the customer's own fitted segment, their
country, the global list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rebuy.recommend.interactions import PurchaseLines, to_key

POPULAR_KEEP = 200
"""Products kept per country / segment popularity list."""

Segments = Mapping[str, str] | pd.Series | None
"""customer_id -> segment label (or a country name), as callers pass it."""


@dataclass(eq=False)
class Popularity:
    """``popular`` (every product column, most popular first) and ``popular_score`` (its popularity);
    ``customer_country`` / ``customer_segment`` (label per customer row, or None) with their lists
    ``country_popular`` / ``segment_popular`` (label -> product columns)."""

    popular: np.ndarray
    popular_score: np.ndarray
    customer_country: np.ndarray | None
    country_popular: dict[str, np.ndarray]
    customer_segment: np.ndarray | None
    segment_popular: dict[str, np.ndarray]

    def for_customer(self, row: int | None, label: str | None) -> np.ndarray:
        """The popularity list for a customer: ``row`` in the fit (None = unknown), ``label`` of the call."""
        if label is not None:
            if label in self.segment_popular:
                return self.segment_popular[label]
            if label in self.country_popular:
                return self.country_popular[label]
        if row is not None:
            for labels, lists in (
                (self.customer_segment, self.segment_popular),
                (self.customer_country, self.country_popular),
            ):
                if labels is not None:
                    s = labels[row]
                    if s is not None and not pd.isna(s) and str(s) in lists:
                        return lists[str(s)]
        return self.popular


def _ranked(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Products of ``pairs`` (columns p, w) by summed weight descending, ties by product."""
    s = pairs.groupby("p")["w"].sum()
    order = np.lexsort((s.index.to_numpy(), -s.to_numpy()))
    return s.index.to_numpy()[order].astype(np.int64), s.to_numpy()[order].astype(np.float64)


def _per_group(pairs: pd.DataFrame, labels: np.ndarray) -> dict[str, np.ndarray]:
    df = pairs.assign(g=labels[pairs["c"].to_numpy()])
    df = df[pd.notna(df["g"])]
    return {str(g): _ranked(grp)[0][:POPULAR_KEEP] for g, grp in df.groupby("g", sort=True)}


def _customer_pairs(history: sp.csr_matrix, lines: PurchaseLines, decayed: bool) -> pd.DataFrame:
    """One row per (customer, product) bought: weight 1, or the largest decay of its lines."""
    if not decayed:  # every line weighs 1: the pairs are the history's pattern
        return pd.DataFrame(
            {
                "c": np.repeat(np.arange(history.shape[0], dtype=np.int64), np.diff(history.indptr)),
                "p": history.indices.astype(np.int64),
                "w": np.ones(history.nnz),
            }
        )
    return (
        pd.DataFrame({"c": lines.customer_codes, "p": lines.product_codes, "w": lines.decay})
        .groupby(["c", "p"], sort=False)["w"]
        .max()
        .reset_index()
    )


def fit_popularity(
    history: sp.csr_matrix, lines: PurchaseLines, segments: Segments, *, decayed: bool
) -> Popularity:
    """Global, per country (the customer's last country) and per segment (``segments``) popularity."""
    pairs = _customer_pairs(history, lines, decayed)
    country = None
    if "country" in lines.frame.columns:
        last = pd.Series(lines.frame["country"].astype("string").to_numpy(dtype=object)).groupby(
            lines.customer_codes
        ).last()
        country = np.asarray(last.reindex(range(len(lines.customer_ids))).to_numpy(), dtype=object)
    return popularity_from_pairs(pairs, lines.customer_ids, country, segments)


def popularity_from_pairs(
    pairs: pd.DataFrame, customer_ids: np.ndarray, country: np.ndarray | None, segments: Segments
) -> Popularity:
    """:class:`Popularity` of the (customer, product) ``pairs`` (int64 codes ``c``, ``p`` and weight
    ``w``: 1, or the pair's largest line decay; rows in customer order), ``country`` (each customer
    row's last country, or None) and ``segments`` (customer_id -> label, or None)."""
    popular, score = _ranked(pairs)
    country_popular = _per_group(pairs, country) if country is not None else {}
    segment, segment_popular = None, {}
    if segments is not None:
        seg = pd.Series(segments)
        seg.index = seg.index.map(to_key)
        segment = seg.reindex(pd.Index(customer_ids)).to_numpy(dtype=object)
        segment_popular = _per_group(pairs, segment)
    return Popularity(popular, score, country, country_popular, segment, segment_popular)


def fill(chosen: list[int], n: int, candidates: Iterable[np.ndarray], banned: set[int] | frozenset[int]) -> list[int]:
    """``chosen`` completed to ``n`` products from ``candidates`` in order, skipping ``banned`` and repeats."""
    if len(chosen) >= n:
        return chosen[:n]
    seen = set(chosen) | banned
    for cand in candidates:
        for p in cand:
            p = int(p)
            if p not in seen:
                chosen.append(p)
                seen.add(p)
                if len(chosen) >= n:
                    return chosen
    return chosen


class SegmentLookup:
    """customer_id -> segment label (None when missing/NaN), converted lazily: the score table passes
    a Series for every customer, but only cold-start customers need a label."""

    def __init__(self, segments: Segments) -> None:
        self._src = segments
        self._series: pd.Series | None = None

    def labels(self, keys: Sequence[str]) -> list[str | None]:
        """The label of each key (None where unknown); with duplicate customers the last value wins."""
        if self._src is None or not len(keys):
            return [None] * len(keys)
        if self._series is None:
            src = self._src
            if isinstance(src, pd.Series):
                ser = pd.Series(src.to_numpy(dtype=object), index=src.index.map(to_key).astype(object))
            else:
                d = {to_key(k): v for k, v in dict(src).items()}
                ser = pd.Series(list(d.values()), index=pd.Index(list(d.keys()), dtype=object), dtype=object)
            self._series = ser[~ser.index.duplicated(keep="last")]
        vals = self._series.reindex(pd.Index(list(keys), dtype=object)).to_numpy(dtype=object)
        return [None if pd.isna(v) else str(v) for v in vals]
