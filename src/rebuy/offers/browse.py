"""Browse abandonment: products a customer viewed or carted recently and did not buy afterwards.

:func:`abandoned_products` reads the events table (``customer_id``, ``product_id``, ``timestamp``,
``event``): view/cart events from ``as_of - browse_window_days`` to the end of the as-of day, by
scored customers (others are ignored). An event is abandoned when the product was not bought at or
after the event time: exactly from ``transactions`` when given; otherwise from the last order (bought
when the event is not after the last purchase day and the product is in the last order).

Per customer: the abandoned products, most recent event first, each product once, at most
``max_offer_products``; and the latest abandoned event time (NaT when none). Works on integer codes
(customer position x product code), no string joins; ties in time keep the events table's order.

:func:`can_run` says whether the rule can run at all: without events it is silently off; with
transactions that lack a product id or timestamp column (a shop without products) it is skipped with
one warning instead of failing the run.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from rebuy.errors import OffersInputError
from rebuy.offers.ids import arrow_str, ids, index_in, positions
from rebuy.offers.lists import empty_lists, obj

if TYPE_CHECKING:
    from rebuy.offers.context import OfferContext

log = logging.getLogger(__name__)
TRANSACTION_COLUMNS = ("customer_id", "product_id", "timestamp")
"""Transaction columns browse abandonment reads (to tell whether a viewed product was bought)."""


class _Views(NamedTuple):
    """View/cart events in the window: scored customer position, time, product code, pair key."""

    pos: np.ndarray
    ts: np.ndarray
    codes: np.ndarray
    key: np.ndarray
    products: np.ndarray
    prod_index: pd.Index
    prod_arrow: object

    @property
    def width(self) -> np.int64:
        return np.int64(len(self.products) + 1)

    def pair_keys(self, pos: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(customer position, product code) pairs as the same int64 keys as ``key``."""
        return pos.astype(np.int64) * self.width + codes

    def subset(self, m: np.ndarray) -> _Views:
        return self._replace(pos=self.pos[m], ts=self.ts[m], codes=self.codes[m], key=self.key[m])


def can_run(ctx: OfferContext) -> bool:
    """Whether browse abandonment can run: events are given and the transactions, when given, have
    :data:`TRANSACTION_COLUMNS`. Missing columns: one warning per run naming them, and the rule is
    skipped (every other rule still runs)."""
    return ctx.events is not None and ctx.memo("browse.can_run", lambda: _transactions_usable(ctx.transactions))


def _transactions_usable(tx: pd.DataFrame | None) -> bool:
    """True without transactions (the last order decides) or with all :data:`TRANSACTION_COLUMNS`;
    else a warning naming the missing columns."""
    missing = [] if tx is None else [c for c in TRANSACTION_COLUMNS if c not in tx.columns]
    if missing:
        log.warning("offers: browse abandonment skipped: the transactions have no %s column; map one with "
                    "data.columns to offer viewed products", " or ".join(repr(c) for c in missing))
    return not missing


def abandoned_products(ctx: OfferContext) -> tuple[np.ndarray, np.ndarray]:
    """(abandoned products per customer, latest abandoned event time), aligned to the score table."""
    n = ctx.n
    latest = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    views = _views_in_window(ctx)
    if views is None:
        return empty_lists(n), latest
    if ctx.transactions is not None:
        abandoned = ~_bought_at_or_after(ctx, views)
    else:
        lp_day = ctx.last_purchase[views.pos].astype("datetime64[D]")
        abandoned = (views.ts.astype("datetime64[D]") > lp_day) | ~_in_last_order(ctx, views)
    views = views.subset(abandoned)
    if len(views.pos) == 0:
        return empty_lists(n), latest
    return _most_recent_first(views, n, ctx.k, latest)


def _views_in_window(ctx: OfferContext) -> _Views | None:
    """The window's view/cart events by scored customers, or None when there are none."""
    events = ctx.events
    missing = [c for c in ("customer_id", "product_id", "timestamp", "event") if c not in events.columns]
    if missing:
        raise OffersInputError(f"events: missing column(s) {missing}")
    start = (ctx.as_of - pd.Timedelta(days=ctx.oc.browse_window_days)).to_datetime64()
    end = (ctx.as_of + pd.Timedelta(days=1)).to_datetime64()
    ts = pd.to_datetime(events["timestamp"], errors="coerce").to_numpy(dtype="datetime64[ns]")
    keep = events["event"].isin(["view", "cart"]).to_numpy(dtype=bool) & (ts >= start) & (ts < end)
    if not keep.any():
        return None
    pos = positions(events["customer_id"].array[keep], ctx.id_index, ctx.ids_arrow, ids)
    codes, products = pd.factorize(events["product_id"].to_numpy(dtype=object)[keep])
    ok = pos >= 0
    if not ok.any():
        return None
    prod_index = pd.Index(products, dtype=object)
    views = _Views(pos[ok], ts[keep][ok], codes[ok], np.zeros(0, np.int64), products, prod_index,
                   arrow_str(prod_index))
    return views._replace(key=views.pair_keys(views.pos, views.codes))


def _bought_at_or_after(ctx: OfferContext, views: _Views) -> np.ndarray:
    """Per view: the customer bought the product at or after the view (from the transactions)."""
    tx = ctx.transactions
    for c in ("customer_id", "product_id", "timestamp"):
        if c not in tx.columns:
            raise OffersInputError(f"transactions: missing column {c!r} needed for browse abandonment")
    t_pos = positions(tx["customer_id"], ctx.id_index, ctx.ids_arrow, ids)
    t_code = positions(tx["product_id"], views.prod_index, views.prod_arrow)
    t_ok = (t_pos >= 0) & (t_code >= 0)
    t_key = views.pair_keys(t_pos[t_ok], t_code[t_ok])
    t_ts = pd.to_datetime(tx["timestamp"]).to_numpy(dtype="datetime64[ns]")[t_ok]
    # latest purchase of each viewed (customer, product): sorted keys + maximum.at, no hashing
    ukey = np.unique(views.key)
    at = np.minimum(np.searchsorted(ukey, t_key), len(ukey) - 1)
    hit = ukey[at] == t_key
    last_buy = np.full(len(ukey), np.iinfo(np.int64).min, dtype=np.int64)  # NaT: below every time
    np.maximum.at(last_buy, at[hit], t_ts[hit].view(np.int64))
    bought_at = last_buy[np.searchsorted(ukey, views.key)].view("datetime64[ns]")
    return bought_at >= views.ts  # NaT compares False -> not bought


def _in_last_order(ctx: OfferContext, views: _Views) -> np.ndarray:
    """Per view: the product is in the customer's last order."""
    lop = ctx.last_order_products
    if lop is None or not len(lop):
        return np.zeros(len(views.key), dtype=bool)
    baskets = lop.to_numpy(dtype=object)
    lop_ids = arrow_str(lop.index) if ctx.ids_arrow is not None else None
    if lop_ids is not None and lop_ids.null_count == 0 and all(type(b) is list for b in baskets):
        # the scorer's lists under string ids: flatten without explode
        sizes = np.fromiter(map(len, baskets), dtype=np.int64, count=len(baskets))
        p_pos = np.repeat(index_in(lop_ids, ctx.ids_arrow), sizes)
        flat = np.fromiter(itertools.chain.from_iterable(baskets), dtype=object, count=int(sizes.sum()))
        p_code = positions(flat, views.prod_index, views.prod_arrow)  # missing products match nothing
    else:
        pairs = lop.explode().dropna()
        p_pos = positions(pairs.index, ctx.id_index, ctx.ids_arrow, ids)
        p_code = positions(pairs.to_numpy(dtype=object), views.prod_index, views.prod_arrow)
    p_ok = (p_pos >= 0) & (p_code >= 0)
    return pd.Series(views.key).isin(views.pair_keys(p_pos[p_ok], p_code[p_ok])).to_numpy()


def _most_recent_first(views: _Views, n: int, k: int, latest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per customer: up to ``k`` distinct products, most recent first, and the latest time."""
    order = np.lexsort((-views.ts.astype(np.int64), views.pos))
    pos, ts, codes, key = views.pos[order], views.ts[order], views.codes[order], views.key[order]
    first = ~pd.Series(key).duplicated().to_numpy()
    pos, ts, codes = pos[first], ts[first], codes[first]
    start_i = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])  # pos is sorted
    counts = np.minimum(np.diff(np.r_[start_i, len(pos)]), k)
    cols = [views.products[codes[np.minimum(start_i + j, len(codes) - 1)]] for j in range(k)]
    out = empty_lists(n)
    out[pos[start_i]] = obj([list(t[:c]) for t, c in zip(zip(*cols, strict=True), counts.tolist(), strict=True)])
    latest[pos[start_i]] = ts[start_i]
    return out, latest
