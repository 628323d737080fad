"""Ground-truth shop simulator: transactions generated from the very processes the models assume.

Purchasing follows the BG/NBD model exactly (Fader, Hardie & Lee 2005):

* each customer has a Poisson purchase rate ``lambda ~ Gamma(shape=r, rate=alpha)`` (per **week**)
  and a dropout probability ``p ~ Beta(a, b)``;
* the first (acquisition) purchase happens at a time uniform over the first ``acquisition_fraction``
  of the window, so every customer has an observation period ``T`` of at least a third of it;
* repeat purchases arrive at Poisson(lambda) times; right after each *repeat* purchase the customer
  drops out for good with probability ``p`` (no dropout after the first purchase, as in BG/NBD).

Order values follow the Gamma-Gamma model exactly (Fader, Hardie & Lee 2005, "RFM and CLV"): per
customer ``nu ~ Gamma(shape=q, rate=v)`` and every order value ``z ~ Gamma(shape=p, rate=nu)``
(currency, e.g. GBP), so the expected order value is ``p * v / (q - 1)``. Each order's value is split
over 1 + Poisson(``mean_lines`` - 1) lines of a catalogue with category structure, Zipf-like
popularity and per-customer taste (a few preferred categories), so a recommender has real signal.
Line unit prices are rounded to pence, so an order's total equals its Gamma-Gamma draw to within a
few pence.

Defaults (documented in :func:`simulate`): mean rate r/alpha = 0.6/8 = 0.075 purchases per week
(about 3.9 a year), mean dropout probability a/(a+b) = 0.8/3.8 = 0.21, mean order value
6 * 22.5 / 3 = 45.0. Purchases are continuous in time but the models see calendar days: two
purchases on the same day collapse into one in ``lifetimes``' summary. At these rates that happens
to well under 1% of repeat purchases (the realised share is reported in ``truth["realised"]``), and
parameter recovery is tested on the day-collapsed data.

Everything is vectorised numpy (no per-customer Python loop): 20,000 customers take well under a
second and 1,000,000 customers (about 9 million lines and 15 million events) about 15-20 s.

Layout: :func:`simulate` checks its arguments (:func:`_validated_parameters`; a bad one is a
:class:`~rebuy.errors.SimulationError` naming it), then runs one named step per process:
:func:`_bgnbd_customers` and :func:`_orders` (purchase times, invoices), the Gamma-Gamma values,
:func:`_baskets` (catalogue, taste, lines and prices), :func:`_customers` (demographics, consent)
and :func:`_events` (browsing); the frames and ``truth`` are assembled last.
:func:`write_simulation` writes the tables beside each other (:func:`simulation_paths`).

Invariants: results are deterministic for a given seed. Five independent random streams are
spawned from it, for behaviour, order values, baskets, demographics and events, and each step
draws from its own stream in a fixed order, so changing e.g. the event settings leaves the
transactions unchanged (and restructuring code must keep every stream's draw order). Times are
int64 nanoseconds since the epoch inside the steps and naive ``datetime64[ns]`` in the frames;
days are counted from ``start`` (``start`` and ``end`` are calendar days, see :mod:`rebuy.dates`).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from rebuy.dates import DAYS_PER_YEAR, to_day, unit_days
from rebuy.errors import OutputError, SimulationError

logger = logging.getLogger(__name__)

__all__ = ["Simulation", "simulate", "write_simulation", "simulation_paths", "SUPPORTED_EXTENSIONS"]

SUPPORTED_EXTENSIONS = (".csv", ".csv.gz", ".parquet")
"""File extensions :func:`write_simulation` understands (the transactions path decides the format)."""

_NS_PER_DAY = 86_400 * 10**9
_NS_PER_SECOND = 10**9
_NS_PER_MINUTE = 60 * _NS_PER_SECOND
_DAYS_PER_WEEK = unit_days("weeks")
_GZIP_LEVEL = 1  # .csv.gz: fast compression (about 4x smaller than CSV)

_CATEGORY_NAMES = (
    "Kitchen", "Home Decor", "Garden", "Stationery", "Toys", "Books", "Bath & Body", "Lighting",
    "Bedding", "Pet Supplies", "Party", "Gifts", "Jewellery", "Bags", "Candles", "Baby",
    "Sports", "Outdoor", "Crafts", "Tableware", "Storage", "Textiles", "Wall Art", "Seasonal",
    "Beauty", "Electronics", "Food & Drink", "Wellness", "Travel", "Clothing", "Footwear",
    "Accessories", "Tools", "Office", "Music", "Games", "Plants", "Cleaning", "Furniture", "Art Supplies",
)

_COUNTRIES = (
    ("United Kingdom", 0.80), ("Ireland", 0.05), ("Germany", 0.03), ("France", 0.03),
    ("Netherlands", 0.02), ("Spain", 0.02), ("Belgium", 0.015), ("Sweden", 0.01),
    ("Italy", 0.01), ("Denmark", 0.005), ("Norway", 0.005), ("Switzerland", 0.005),
)

# Acquisition channels: base log-weight, and log-weight change per year of age above 40.
_CHANNELS = (
    ("organic_search", 0.6, 0.000),
    ("paid_search", 0.4, 0.005),
    ("social", 0.3, -0.060),
    ("email", -0.4, 0.030),
    ("referral", -0.3, 0.000),
    ("direct", 0.0, 0.020),
    ("affiliate", -0.9, -0.010),
)

# Relative share of purchases by hour of day (an online shop: quiet at night, evening peak).
_HOUR_WEIGHTS = np.array(
    [0.6, 0.3, 0.2, 0.15, 0.15, 0.3, 0.8, 1.8, 3.0, 4.0, 4.6, 5.0,
     5.4, 5.4, 5.0, 4.8, 4.8, 5.0, 5.6, 6.4, 7.0, 6.6, 4.6, 2.2]
)


@dataclass
class Simulation:
    """A simulated shop and the truth it was generated from.

    Attributes
    ----------
    transactions:
        One row per purchase line, sorted by customer_id then timestamp: ``customer_id`` (string),
        ``order_id`` (string invoice number, increasing in time), ``timestamp`` (datetime64[ns]),
        ``product_id`` (string), ``quantity`` (float64, small integers), ``price`` (float64 unit
        price, pence-exact), ``amount`` (float64 line value = price * quantity), ``category`` (string).
    customers:
        One row per customer: ``customer_id``, ``birth_date`` (datetime64, NaT when unrecorded),
        ``age`` (float completed years at ``end``, NaN when unrecorded), ``country``,
        ``acquisition_channel``, ``signup_date`` (datetime64), ``consent_email``, ``consent_sms``,
        ``consent_messenger`` (bool).
    events:
        Browsing: ``customer_id``, ``product_id``, ``timestamp``, ``event`` ("view" or "cart"); views
        and carts before purchases, plus views (and abandoned carts) of products not then bought.
    truth:
        The generating parameters (JSON-serialisable): ``truth["bgnbd"]`` has ``r``, ``alpha_weeks``,
        ``alpha_days`` (= 7 * alpha_weeks), ``a``, ``b``; ``truth["gamma_gamma"]`` has ``p``, ``q``,
        ``v``; plus seed, dates, catalogue size, basket settings and realised counts.
    latent:
        Per-customer latent truth: ``lambda_per_week``, ``dropout_p``, ``nu`` (Gamma-Gamma scale),
        ``expected_order_value`` (= p / nu), ``alive`` (still active at ``end``), ``n_orders``
        (distinct orders) and preferred categories ``taste_1..3`` with weights ``taste_weight_1..3``.
    products:
        The catalogue: ``product_id``, ``category``, ``base_price`` (typical unit price) and
        ``popularity`` (probability a non-taste line picks it).
    """

    transactions: pd.DataFrame
    customers: pd.DataFrame
    events: pd.DataFrame
    truth: dict[str, Any]
    latent: pd.DataFrame | None = None
    products: pd.DataFrame | None = field(default=None)


# ----------------------------------------------------------------------------------------------
# helpers


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SimulationError(f"simulate: parameter {name!r} must be a number, got {value!r}") from None


def _positive(name: str, value: float) -> float:
    value = _number(name, value)
    if not np.isfinite(value) or value <= 0:
        raise SimulationError(f"simulate: parameter {name!r} must be a finite number > 0, got {value!r}")
    return value


def _probability(name: str, value: float) -> float:
    value = _number(name, value)
    if not np.isfinite(value) or not (0.0 <= value <= 1.0):
        raise SimulationError(f"simulate: parameter {name!r} must be a probability in [0, 1], got {value!r}")
    return value


def _count(name: str, value: Any, minimum: int, what: str) -> int:
    """``value`` as an int >= ``minimum``; SimulationError saying ``what`` is expected otherwise."""
    try:
        whole = int(value) == value and value >= minimum
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise SimulationError(f"simulate: {name} must be {what}, got {value!r}")
    return int(value)


def _day(name: str, value: str | dt.date | pd.Timestamp) -> pd.Timestamp:
    return to_day(value, f"simulate: parameter {name!r}", SimulationError)


def _strings(labels: list[str] | pa.Array, idx: np.ndarray) -> pd.arrays.ArrowStringArray:
    """``labels[idx]`` as a pandas "string" array, built with Arrow's take (fast for millions of rows)."""
    source = labels if isinstance(labels, pa.Array) else pa.array(labels, type=pa.string())
    longest = pc.max(pc.binary_length(source)).as_py() or 0 if len(source) else 0
    if len(idx) * longest >= 2**31 - 1:  # int32 offsets would overflow: use 64-bit offsets
        source = source.cast(pa.large_string())
    return pd.arrays.ArrowStringArray(source.take(pa.array(idx, type=pa.int64())))


def _within_segment_index(counts: np.ndarray) -> np.ndarray:
    """For segments of the given lengths laid end to end, each element's position in its segment."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def _alias_table(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table for O(1) sampling from a discrete distribution (loop over categories only)."""
    k = len(probs)
    scaled = np.asarray(probs, dtype=np.float64) * (k / float(np.sum(probs)))
    accept = np.ones(k)
    alias = np.arange(k, dtype=np.int64)
    small = [i for i in range(k) if scaled[i] < 1.0]
    large = [i for i in range(k) if scaled[i] >= 1.0]
    while small and large:
        s_i, l_i = small.pop(), large.pop()
        accept[s_i] = scaled[s_i]
        alias[s_i] = l_i
        scaled[l_i] -= 1.0 - scaled[s_i]
        (small if scaled[l_i] < 1.0 else large).append(l_i)
    return accept, alias  # leftovers keep accept = 1 (numerical round-off)


def _alias_draw(
    rng: np.random.Generator, accept: np.ndarray, alias: np.ndarray, first: np.ndarray | int, size_of: np.ndarray | int, n: int
) -> np.ndarray:
    """Draw ``n`` indices from alias tables; slot ``first + floor(u * size_of)`` then accept or alias."""
    slot = first + np.minimum((rng.random(n) * size_of).astype(np.int64), np.asarray(size_of) - 1)
    return np.where(rng.random(n) < accept[slot], slot, alias[slot])


def _sample_discrete(rng: np.random.Generator, probs: np.ndarray, size: int) -> np.ndarray:
    accept, alias = _alias_table(probs)
    return _alias_draw(rng, accept, alias, 0, len(probs), size)


def _sort_by_customer_time(customer: np.ndarray, ns: np.ndarray, origin_ns: int) -> np.ndarray:
    """Permutation sorting by customer then time (a single int64 key: much faster than lexsort)."""
    seconds = (ns - origin_ns) // _NS_PER_SECOND
    seconds = seconds - seconds.min() if len(seconds) else seconds
    span = int(seconds.max()) + 1 if len(seconds) else 1
    n_customers = int(customer.max()) + 1 if len(customer) else 1
    if span * n_customers >= 2**62:  # pragma: no cover - windows of millennia
        return np.lexsort((ns, customer))
    return np.argsort(customer * span + seconds)


def _unique_inverse(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(key, return_inverse=True)`` via one argsort (faster on the nearly sorted keys here)."""
    order = np.argsort(key)
    ordered = key[order]
    new = np.empty(len(key), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    group = np.cumsum(new) - 1
    inverse = np.empty(len(key), dtype=np.int64)
    inverse[order] = group
    return ordered[new], inverse


def _time_of_day_seconds(rng: np.random.Generator, size: int) -> np.ndarray:
    hours = _sample_discrete(rng, _HOUR_WEIGHTS, size)
    return hours * 3600 + rng.integers(0, 3600, size)


def _catalogue(rng: np.random.Generator, n_products: int, n_categories: int, zipf_s: float) -> dict[str, np.ndarray]:
    """Products grouped by category (index order), with within-category Zipf popularity and prices."""
    category_weight = 1.0 / np.arange(1, n_categories + 1) ** 0.8
    category_weight = rng.permutation(category_weight / category_weight.sum())
    # every category has at least one product; the rest follow the category weights loosely
    extra = rng.multinomial(n_products - n_categories, rng.dirichlet(40.0 * category_weight + 0.5))
    sizes = 1 + extra
    product_category = np.repeat(np.arange(n_categories), sizes)
    rank = _within_segment_index(sizes) + 1
    zipf = 1.0 / rank**zipf_s
    within_sum = np.bincount(product_category, weights=zipf, minlength=n_categories)
    within_p = zipf / within_sum[product_category]
    first = np.cumsum(sizes) - sizes
    accept = np.ones(n_products)
    alias = np.arange(n_products, dtype=np.int64)
    for c in range(n_categories):  # loop over categories (the catalogue), never over customers
        lo, hi = first[c], first[c] + sizes[c]
        acc_c, alias_c = _alias_table(within_p[lo:hi])
        accept[lo:hi], alias[lo:hi] = acc_c, alias_c + lo
    # category typical price level, then product prices around it (GBP)
    category_price = np.exp(rng.normal(np.log(9.0), 0.6, n_categories))
    base_price = np.round(category_price[product_category] * np.exp(rng.normal(0.0, 0.5, n_products)), 2)
    base_price = np.maximum(base_price, 0.5)
    return {
        "category_weight": category_weight,
        "product_category": product_category,
        "first": first,
        "size": sizes,
        "accept": accept,
        "alias": alias,
        "popularity": category_weight[product_category] * within_p,
        "base_price": base_price,
    }


def _sample_products(
    rng: np.random.Generator,
    line_customer: np.ndarray,
    taste_category: np.ndarray,
    taste_cum: np.ndarray,
    taste_strength: float,
    cat: dict[str, np.ndarray],
) -> np.ndarray:
    """One product index per line: a preferred category with prob. ``taste_strength``, else by popularity."""
    size = len(line_customer)
    u = rng.random(size)
    slot = (u > taste_cum[line_customer, 0]).astype(np.int64) + (u > taste_cum[line_customer, 1])
    category = taste_category[line_customer, slot]
    general = rng.random(size) >= taste_strength
    category[general] = _sample_discrete(rng, cat["category_weight"], int(general.sum()))
    return _alias_draw(rng, cat["accept"], cat["alias"], cat["first"][category], cat["size"][category], size)


# ----------------------------------------------------------------------------------------------
# the simulator


def simulate(
    n_customers: int = 20_000,
    seed: int = 0,
    start: str | dt.date | pd.Timestamp = "2023-01-01",
    end: str | dt.date | pd.Timestamp = "2024-12-31",
    n_products: int = 2_000,
    *,
    r: float = 0.6,
    alpha: float = 8.0,
    a: float = 0.8,
    b: float = 3.0,
    p: float = 6.0,
    q: float = 4.0,
    v: float = 22.5,
    n_categories: int = 30,
    acquisition_fraction: float = 2 / 3,
    mean_lines: float = 2.5,
    mean_extra_quantity: float = 0.4,
    taste_strength: float = 0.8,
    taste_concentration: float = 0.7,
    zipf_s: float = 1.0,
    browse_per_order: float = 1.5,
    view_before_purchase: float = 0.4,
    cart_before_purchase: float = 0.6,
    abandoned_cart: float = 0.1,
    missing_birth_date: float = 0.02,
    events: bool = True,
) -> Simulation:
    """Simulate a shop from the BG/NBD + Gamma-Gamma processes, with baskets, customers and events.

    Parameters
    ----------
    n_customers:
        Number of customers (each makes at least the acquisition purchase inside the window).
    seed:
        Seed of numpy's ``default_rng``; the same seed gives identical output.
    start, end:
        First and last calendar day of the window (inclusive). ``end`` is the natural as-of date.
    n_products:
        Catalogue size (at least ``n_categories``).
    r, alpha:
        BG/NBD purchase-rate heterogeneity: ``lambda ~ Gamma(shape=r, rate=alpha)`` with ``alpha`` in
        **weeks** (so lambda is purchases per week; in days the rate parameter is ``7 * alpha``).
        Default mean rate 0.6 / 8 = 0.075 per week.
    a, b:
        BG/NBD dropout heterogeneity: ``p ~ Beta(a, b)``, drawn per customer; default mean 0.21.
    p, q, v:
        Gamma-Gamma order values (currency): ``nu ~ Gamma(shape=q, rate=v)``, each order value
        ``~ Gamma(shape=p, rate=nu)``. Default mean order value p * v / (q - 1) = 45.0.
    n_categories:
        Number of product categories (at most 40 have names; more are named "Category k").
    acquisition_fraction:
        First purchases are uniform over this leading fraction of the window (default 2/3).
    mean_lines:
        Mean distinct products per order (1 + Poisson(mean_lines - 1) lines, duplicates merged).
    mean_extra_quantity:
        Quantity per line is 1 + Poisson(mean_extra_quantity).
    taste_strength:
        Probability a line comes from one of the customer's three preferred categories (the rest
        follow overall category popularity). Preferred categories are drawn by popularity with
        Dirichlet(``taste_concentration``) weights.
    zipf_s:
        Zipf exponent of product popularity within a category.
    browse_per_order:
        Mean views of products not then bought, per order the customer places.
    view_before_purchase, cart_before_purchase:
        Probability a bought line is preceded by a view / an add-to-cart event.
    abandoned_cart:
        Probability a browsing view is followed by a cart event that does not end in a purchase.
    missing_birth_date:
        Share of customers whose birth date (and so age) is unrecorded.
    events:
        Whether to generate the events table (it is an empty frame with the right columns otherwise).

    Raises :class:`~rebuy.errors.SimulationError` (a ValueError) naming the first invalid parameter.
    """
    prm = _validated_parameters(**locals())  # every argument, checked; SimulationError names a bad one
    started = time.perf_counter()
    ss = np.random.SeedSequence(prm.seed)
    rng_behaviour, rng_value, rng_basket, rng_people, rng_events = (np.random.default_rng(s) for s in ss.spawn(5))
    buyers = _bgnbd_customers(rng_behaviour, prm)
    orders = _orders(rng_behaviour, prm, buyers)
    nu = rng_value.gamma(prm.q, 1.0 / prm.v, prm.n)  # Gamma-Gamma: per-customer scale, then order values
    order_value = np.maximum(rng_value.gamma(prm.p, 1.0 / nu[orders.customer]), 0.01)
    basket = _baskets(rng_basket, prm, orders, order_value)
    labels = _labels(prm.n, prm.n_products, prm.n_categories, rng_basket)
    transactions = _transactions_frame(labels, basket, orders)
    realised_value = np.bincount(basket.line_order, weights=basket.amount, minlength=orders.n)
    customers = _customers(
        rng_people, prm.n, labels["customer"], prm.end_ts, prm.start_ts, orders.day[orders.first],
        prm.missing_birth_date,
    )
    events_df = _events(rng_events, prm, labels, basket, orders) if prm.events else _no_events()
    truth = _truth(prm, orders, buyers.alive, realised_value, len(transactions), len(events_df))
    logger.info(
        "simulated %d customers, %d orders, %d lines, %d events in %.1f s",
        prm.n, orders.n, len(transactions), len(events_df), time.perf_counter() - started,
    )
    return Simulation(
        transactions=transactions, customers=customers, events=events_df, truth=truth,
        latent=_latent_frame(labels, prm, buyers, nu, orders, basket),
        products=_products_frame(labels, basket.cat),
    )


# ----------------------------------------------------------------------------------------------
# the simulator's steps


@dataclass(frozen=True)
class _Parameters:
    """The validated arguments of :func:`simulate` (numbers as given unless converted below)."""

    n: int
    seed: int
    start_ts: pd.Timestamp
    end_ts: pd.Timestamp
    n_days: int
    n_products: int
    n_categories: int
    r: float
    alpha: float
    a: float
    b: float
    p: float
    q: float
    v: float
    zipf_s: float
    taste_concentration: float
    acquisition_fraction: Any
    mean_lines: Any
    mean_extra_quantity: Any
    taste_strength: Any
    browse_per_order: Any
    view_before_purchase: Any
    cart_before_purchase: Any
    abandoned_cart: Any
    missing_birth_date: Any
    events: bool


_POSITIVE_PARAMETERS = ("r", "alpha", "a", "b", "p", "q", "v", "zipf_s", "taste_concentration")
_PROBABILITY_PARAMETERS = (
    "taste_strength", "view_before_purchase", "cart_before_purchase", "abandoned_cart", "missing_birth_date",
)


def _validated_parameters(
    *, n_customers: Any, seed: Any, start: Any, end: Any, n_products: Any, n_categories: Any, **kw: Any
) -> _Parameters:
    """Check every argument of :func:`simulate`; the first bad one is a SimulationError naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SimulationError(f"simulate: seed must be a non-negative integer, got {seed!r}")
    n = _count("n_customers", n_customers, 1, "a positive integer")
    n_categories = _count("n_categories", n_categories, 1, "a positive integer")
    n_products = _count("n_products", n_products, n_categories, f"an integer >= n_categories ({n_categories})")
    positive = {k: _positive(k, kw[k]) for k in _POSITIVE_PARAMETERS}
    if not (0.0 < _number("acquisition_fraction", kw["acquisition_fraction"]) <= 1.0):
        raise SimulationError(
            f"simulate: acquisition_fraction must be in (0, 1], got {kw['acquisition_fraction']!r}"
        )
    for k, low in (("mean_lines", 1.0), ("mean_extra_quantity", 0.0), ("browse_per_order", 0.0)):
        if not (_number(k, kw[k]) >= low):
            raise SimulationError(f"simulate: {k} must be >= {low:g}, got {kw[k]!r}")
    for k in _PROBABILITY_PARAMETERS:
        _probability(k, kw[k])
    if positive["q"] <= 1.0:
        logger.warning("simulate: q = %s <= 1 gives order values with an infinite mean; use q > 1", positive["q"])
    start_ts, end_ts = _day("start", start), _day("end", end)
    n_days = int((end_ts - start_ts).days) + 1
    if n_days < 7:
        raise SimulationError(f"simulate: the window {start_ts.date()}..{end_ts.date()} must span at least 7 days")
    rest = {k: v for k, v in kw.items() if k not in positive}
    return _Parameters(
        n=n, seed=int(seed), start_ts=start_ts, end_ts=end_ts, n_days=n_days, n_products=n_products,
        n_categories=n_categories, **positive, **rest,
    )


@dataclass(frozen=True)
class _Buyers:
    """BG/NBD per customer: rate, dropout, acquisition time and the repeat purchases in the window."""

    lam_week: np.ndarray  # purchases per week
    dropout: np.ndarray  # probability of dropping out after each repeat purchase
    alive: np.ndarray  # still active at the end of the window
    t0: np.ndarray  # acquisition time, days from start
    exposure: np.ndarray  # days during which repeat purchases can happen
    m_poisson: np.ndarray  # purchases the Poisson process would place if the customer never dropped out
    x: np.ndarray  # repeat purchases in the window (int64)


def _bgnbd_customers(rng: np.random.Generator, prm: _Parameters) -> _Buyers:
    """Rates ``lambda ~ Gamma(r, rate alpha)``, dropout ``p ~ Beta(a, b)`` and repeat counts."""
    n = prm.n
    lam_week = rng.gamma(prm.r, 1.0 / prm.alpha, n)
    dropout = rng.beta(prm.a, prm.b, n)
    t0 = rng.random(n) * (prm.acquisition_fraction * prm.n_days)
    exposure = prm.n_days - t0
    m_poisson = rng.poisson(lam_week / _DAYS_PER_WEEK * exposure)
    # repeat purchases up to and including the one after which the customer drops out
    g_until_drop = rng.geometric(np.clip(dropout, 1e-12, 1.0))
    x = np.minimum(m_poisson, g_until_drop).astype(np.int64)
    return _Buyers(lam_week, dropout, g_until_drop > m_poisson, t0, exposure, m_poisson, x)


def _repeat_times(rng: np.random.Generator, buyers: _Buyers) -> np.ndarray:
    """Repeat purchase times (days from start), customer by customer: the first x of m uniform order
    statistics on the exposure, via exponential spacings: U_(j) = S_j / S_(m+1), where
    S_(m+1) = S_x + Gamma(m - x + 1)."""
    x, n = buyers.x, len(buyers.x)
    spacing = rng.standard_exponential(int(x.sum()))
    csum = np.cumsum(spacing)
    rep_start = np.cumsum(x) - x
    before = np.concatenate([[0.0], csum])[rep_start]
    partial = csum - np.repeat(before, x)
    s_x = np.zeros(n)
    has = x > 0
    s_x[has] = partial[(rep_start + x - 1)[has]]
    remainder = rng.standard_gamma((buyers.m_poisson - x + 1).astype(np.float64))
    u_rep = partial / np.repeat(s_x + remainder, x)
    return np.repeat(buyers.t0, x) + u_rep * np.repeat(buyers.exposure, x)


@dataclass(frozen=True)
class _Orders:
    """All orders, sorted by customer then time."""

    customer: np.ndarray  # customer index per order
    first: np.ndarray  # position of each customer's first order
    per_customer: np.ndarray  # orders per customer (1 + repeat purchases)
    ns: np.ndarray  # order time, int64 ns since the epoch
    day: np.ndarray  # order day, days from start
    same_day: np.ndarray  # a repeat order on the same day as the customer's previous one
    invoice: np.ndarray  # invoice number, increasing in time across the shop

    @property
    def n(self) -> int:
        return len(self.customer)


def _orders(rng: np.random.Generator, prm: _Parameters, buyers: _Buyers) -> _Orders:
    """Acquisition and repeat orders with a time of day, sorted by customer and time, with invoices."""
    t_rep = _repeat_times(rng, buyers)
    per_customer = buyers.x + 1
    customer = np.repeat(np.arange(prm.n, dtype=np.int64), per_customer)
    n_orders = len(customer)
    first = np.cumsum(per_customer) - per_customer
    is_first = np.zeros(n_orders, dtype=bool)
    is_first[first] = True
    order_time = np.empty(n_orders)
    order_time[is_first] = buyers.t0
    order_time[~is_first] = t_rep
    day = np.minimum(np.floor(order_time).astype(np.int64), prm.n_days - 1)
    origin = prm.start_ts.value
    ns = origin + day * _NS_PER_DAY + _time_of_day_seconds(rng, n_orders) * _NS_PER_SECOND
    sort = _sort_by_customer_time(customer, ns, origin)
    ns, day = ns[sort], day[sort]  # customer is unchanged by the sort
    same_day = np.zeros(n_orders, dtype=bool)
    same_day[1:] = (customer[1:] == customer[:-1]) & (day[1:] == day[:-1])
    invoice = np.empty(n_orders, dtype=np.int64)
    by_time = np.argsort(((ns - origin) // _NS_PER_SECOND) * prm.n + customer)
    invoice[by_time] = np.arange(100_001, 100_001 + n_orders)
    return _Orders(customer, first, per_customer, ns, day, same_day, invoice)


@dataclass(frozen=True)
class _Basket:
    """Taste, catalogue and the order lines (one per order and product), in order then product order."""

    cat: dict[str, np.ndarray]
    taste_category: np.ndarray  # (n, 3) preferred categories
    taste_weight: np.ndarray  # (n, 3) their Dirichlet weights
    taste_cum: np.ndarray  # (n, 3) cumulative weights
    line_order: np.ndarray
    line_product: np.ndarray
    qty: np.ndarray  # float64
    price: np.ndarray  # unit price, pence-exact (currency)
    amount: np.ndarray  # price * qty rounded to pence (currency)


def _baskets(rng: np.random.Generator, prm: _Parameters, orders: _Orders, order_value: np.ndarray) -> _Basket:
    """Products per order (taste or popularity) and unit prices splitting the order's value."""
    n, n_products = prm.n, prm.n_products
    cat = _catalogue(rng, n_products, prm.n_categories, prm.zipf_s)
    taste_category = _sample_discrete(rng, cat["category_weight"], n * 3).reshape(n, 3)
    taste_weight = rng.dirichlet(np.full(3, prm.taste_concentration), n)
    taste_cum = np.cumsum(taste_weight, axis=1)
    n_lines = 1 + rng.poisson(prm.mean_lines - 1.0, orders.n)
    line_order = np.repeat(np.arange(orders.n, dtype=np.int64), n_lines)
    line_product = _sample_products(
        rng, orders.customer[line_order], taste_category, taste_cum, prm.taste_strength, cat
    )
    line_qty = 1 + rng.poisson(prm.mean_extra_quantity, len(line_order))
    line_weight = cat["base_price"][line_product] * line_qty * rng.gamma(4.0, 0.25, len(line_order))
    # merge repeated products within an order (one line per order and product)
    key, inverse = _unique_inverse(line_order * n_products + line_product)
    qty = np.bincount(inverse, weights=line_qty).astype(np.float64)
    weight = np.bincount(inverse, weights=line_weight)
    line_order, line_product = key // n_products, key % n_products
    order_weight = np.bincount(line_order, weights=weight, minlength=orders.n)
    target = order_value[line_order] * weight / order_weight[line_order]
    price = np.maximum(np.round(target / qty, 2), 0.01)
    amount = np.round(price * qty, 2)
    return _Basket(cat, taste_category, taste_weight, taste_cum, line_order, line_product, qty, price, amount)


def _transactions_frame(labels: dict[str, Any], basket: _Basket, orders: _Orders) -> pd.DataFrame:
    line_order, line_product = basket.line_order, basket.line_product
    return pd.DataFrame(
        {
            "customer_id": _strings(labels["customer"], orders.customer[line_order]),
            "order_id": _strings(pc.cast(pa.array(orders.invoice), pa.string()), line_order),
            "timestamp": orders.ns[line_order].view("datetime64[ns]"),
            "product_id": _strings(labels["product"], line_product),
            "quantity": basket.qty,
            "price": basket.price,
            "amount": basket.amount,
            "category": _strings(labels["category"], basket.cat["product_category"][line_product]),
        }
    )


def _no_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.array([], dtype="string"),
            "product_id": pd.array([], dtype="string"),
            "timestamp": np.array([], dtype="datetime64[ns]"),
            "event": pd.array([], dtype="string"),
        }
    )


def _latent_frame(
    labels: dict[str, Any], prm: _Parameters, buyers: _Buyers, nu: np.ndarray, orders: _Orders, basket: _Basket
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": _strings(labels["customer"], np.arange(prm.n)),
            "lambda_per_week": buyers.lam_week,
            "dropout_p": buyers.dropout,
            "nu": nu,
            "expected_order_value": prm.p / nu,
            "alive": buyers.alive,
            "n_orders": orders.per_customer,
            **{f"taste_{k + 1}": _strings(labels["category"], basket.taste_category[:, k]) for k in range(3)},
            **{f"taste_weight_{k + 1}": basket.taste_weight[:, k] for k in range(3)},
        }
    )


def _products_frame(labels: dict[str, Any], cat: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": _strings(labels["product"], np.arange(len(cat["base_price"]))),
            "category": _strings(labels["category"], cat["product_category"]),
            "base_price": cat["base_price"],
            "popularity": cat["popularity"],
        }
    ).sort_values("product_id", ignore_index=True)


def _truth(
    prm: _Parameters, orders: _Orders, alive: np.ndarray, realised_value: np.ndarray, n_lines: int, n_events: int
) -> dict[str, Any]:
    """The generating parameters and realised counts (JSON-serialisable)."""
    r, alpha, a, b, p, q, v = prm.r, prm.alpha, prm.a, prm.b, prm.p, prm.q, prm.v
    repeat_orders = orders.n - prm.n
    return {
        "generator": "rebuy.simulate",
        "model": "BG/NBD purchases (lambda ~ Gamma(r, rate alpha), p ~ Beta(a, b), dropout only after "
        "repeat purchases) + Gamma-Gamma order values (nu ~ Gamma(q, rate v), value ~ Gamma(p, rate nu))",
        "seed": prm.seed,
        "n_customers": prm.n,
        "start": str(prm.start_ts.date()),
        "end": str(prm.end_ts.date()),
        "observation_end": str(prm.end_ts.date()),
        "n_days": prm.n_days,
        "acquisition_fraction": float(prm.acquisition_fraction),
        "bgnbd": {
            "r": r, "alpha_weeks": alpha, "alpha_days": alpha * _DAYS_PER_WEEK, "a": a, "b": b,
            "mean_rate_per_week": r / alpha, "mean_dropout_p": a / (a + b),
        },
        "gamma_gamma": {"p": p, "q": q, "v": v, "mean_order_value": p * v / (q - 1.0) if q > 1 else None},
        "catalogue": {
            "n_products": prm.n_products,
            "n_categories": prm.n_categories,
            "zipf_s": prm.zipf_s,
            "taste_strength": float(prm.taste_strength),
            "taste_concentration": prm.taste_concentration,
            "mean_lines": float(prm.mean_lines),
            "mean_extra_quantity": float(prm.mean_extra_quantity),
        },
        "events": {
            "generated": bool(prm.events),
            "browse_per_order": float(prm.browse_per_order),
            "view_before_purchase": float(prm.view_before_purchase),
            "cart_before_purchase": float(prm.cart_before_purchase),
            "abandoned_cart": float(prm.abandoned_cart),
        },
        "realised": {
            "orders": int(orders.n),
            "repeat_orders": int(repeat_orders),
            "lines": n_lines,
            "events": n_events,
            "alive_share": float(alive.mean()),
            "mean_order_value": float(realised_value.mean()),
            "total_revenue": float(realised_value.sum()),
            "same_day_repeat_share": float(orders.same_day.sum() / repeat_orders) if repeat_orders else 0.0,
        },
    }


def _labels(n: int, n_products: int, n_categories: int, rng: np.random.Generator) -> dict[str, Any]:
    width = max(6, len(str(n)))
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), width, "0")
    customer = pc.binary_join_element_wise(pa.scalar("C"), digits, pa.scalar(""))
    pwidth = max(5, len(str(n_products)))
    # product codes are shuffled so that code order says nothing about category
    codes = rng.permutation(n_products) + 1
    product = [f"P{c:0{pwidth}d}" for c in codes]
    names = list(_CATEGORY_NAMES[:n_categories]) + [
        f"Category {k + 1}" for k in range(len(_CATEGORY_NAMES), n_categories)
    ]
    return {"customer": customer, "product": product, "category": names}


def _customers(
    rng: np.random.Generator,
    n: int,
    customer_labels: Any,
    end_ts: pd.Timestamp,
    start_ts: pd.Timestamp,
    first_day: np.ndarray,
    missing_birth_date: float,
) -> pd.DataFrame:
    age_exact = 18.0 + 62.0 * rng.beta(2.2, 3.5, n)  # ages 18-80, mean about 42
    birth_ns = end_ts.value - np.ceil(age_exact * DAYS_PER_YEAR).astype(np.int64) * _NS_PER_DAY  # age >= 18 exactly
    birth = birth_ns.view("datetime64[ns]")
    age = (end_ts.value - birth_ns) / (DAYS_PER_YEAR * _NS_PER_DAY)
    age = np.floor(age)
    missing = rng.random(n) < missing_birth_date
    age = np.where(missing, np.nan, age)
    birth = np.where(missing, np.datetime64("NaT", "ns"), birth)
    country_names = [c for c, _ in _COUNTRIES]
    country = _sample_discrete(rng, np.array([w for _, w in _COUNTRIES]), n)
    # channel choice: softmax of base log-weights plus an age slope (true age, recorded or not)
    centred = age_exact - 40.0
    logits = np.array([c[1] for c in _CHANNELS])[None, :] + np.array([c[2] for c in _CHANNELS])[None, :] * centred[:, None]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    channel = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), len(_CHANNELS) - 1)
    channel_names = [c[0] for c in _CHANNELS]
    # account created at the first purchase (guest checkout) or some days before it
    lead_days = np.where(rng.random(n) < 0.5, 0, np.floor(rng.exponential(20.0, n)).astype(np.int64))
    signup = (start_ts.value + (first_day - lead_days) * _NS_PER_DAY).view("datetime64[ns]")

    def logistic(z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-z))

    via_email = channel == channel_names.index("email")
    via_social = channel == channel_names.index("social")
    consent_email = rng.random(n) < logistic(0.2 + 0.025 * centred + 1.5 * via_email)
    consent_sms = rng.random(n) < logistic(-0.9 + 0.01 * centred)
    consent_messenger = rng.random(n) < logistic(-0.8 - 0.05 * centred + 0.8 * via_social)
    return pd.DataFrame(
        {
            "customer_id": _strings(customer_labels, np.arange(n)),
            "birth_date": birth,
            "age": age,
            "country": _strings(country_names, country),
            "acquisition_channel": _strings(channel_names, channel),
            "signup_date": signup,
            "consent_email": consent_email,
            "consent_sms": consent_sms,
            "consent_messenger": consent_messenger,
        }
    )


def _events(
    rng: np.random.Generator, prm: _Parameters, labels: dict[str, Any], basket: _Basket, orders: _Orders
) -> pd.DataFrame:
    """Views and carts before bought lines, plus browsing (and abandoned carts) around each customer's
    orders, sorted by customer then time, clipped to the window and truncated to whole seconds."""
    bought = _purchase_events(rng, prm, basket, orders)
    browsed = _browse_events(rng, prm, basket, orders)
    customer, product, ts, is_cart = (np.concatenate([x, y]) for x, y in zip(bought, browsed, strict=True))
    start_ns = prm.start_ts.value
    ts = np.clip(ts, start_ns, start_ns + prm.n_days * _NS_PER_DAY - _NS_PER_SECOND)
    ts = ts - ts % _NS_PER_SECOND
    sort = _sort_by_customer_time(customer, ts, start_ns)
    return pd.DataFrame(
        {
            "customer_id": _strings(labels["customer"], customer[sort]),
            "product_id": _strings(labels["product"], product[sort]),
            "timestamp": ts[sort].view("datetime64[ns]"),
            "event": _strings(["view", "cart"], is_cart[sort].astype(np.int64)),
        }
    )


def _purchase_events(
    rng: np.random.Generator, prm: _Parameters, basket: _Basket, orders: _Orders
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(customer, product, ns, is_cart) of the events leading to bought lines: an add-to-cart minutes
    before the order, a view some minutes before that (views first, then carts)."""
    line_order, line_product = basket.line_order, basket.line_product
    n_lines = len(line_order)
    line_ns = orders.ns[line_order]
    cart_gap = (rng.exponential(8.0, n_lines) * _NS_PER_MINUTE).astype(np.int64) + _NS_PER_SECOND
    view_gap = cart_gap + (rng.exponential(15.0, n_lines) * _NS_PER_MINUTE).astype(np.int64) + _NS_PER_SECOND
    has_cart = rng.random(n_lines) < prm.cart_before_purchase
    has_view = rng.random(n_lines) < prm.view_before_purchase
    line_customer = orders.customer[line_order]
    return (
        np.concatenate([line_customer[has_view], line_customer[has_cart]]),
        np.concatenate([line_product[has_view], line_product[has_cart]]),
        np.concatenate([(line_ns - view_gap)[has_view], (line_ns - cart_gap)[has_cart]]),
        np.concatenate([np.zeros(int(has_view.sum()), bool), np.ones(int(has_cart.sum()), bool)]),
    )


def _browse_events(
    rng: np.random.Generator, prm: _Parameters, basket: _Basket, orders: _Orders
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(customer, product, ns, is_cart) of browsing not tied to a bought line: views within days of
    one of the customer's orders, some followed by an abandoned cart (views first, then carts)."""
    per_customer = orders.per_customer
    n_browse = rng.poisson(prm.browse_per_order * per_customer)
    customer = np.repeat(np.arange(len(per_customer), dtype=np.int64), n_browse)
    anchor = np.repeat(orders.first, n_browse) + np.floor(
        rng.random(len(customer)) * np.repeat(per_customer, n_browse)
    ).astype(np.int64)
    view_ns = orders.ns[anchor] + (rng.normal(0.0, 6.0, len(anchor)) * _NS_PER_DAY).astype(np.int64)
    product = _sample_products(
        rng, customer, basket.taste_category, basket.taste_cum, prm.taste_strength, basket.cat
    )
    cart = rng.random(len(customer)) < prm.abandoned_cart
    cart_ns = view_ns + (rng.exponential(5.0, len(customer)) * _NS_PER_MINUTE).astype(np.int64)
    return (
        np.concatenate([customer, customer[cart]]),
        np.concatenate([product, product[cart]]),
        np.concatenate([view_ns, cart_ns[cart]]),
        np.concatenate([np.zeros(len(view_ns), bool), np.ones(int(cart.sum()), bool)]),
    )


# ----------------------------------------------------------------------------------------------
# writing


def _split_extension(out: Path) -> tuple[str, str]:
    name = out.name
    lower = name.lower()
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext):]
    raise OutputError(
        f"{out}: unknown file extension; write the simulation as one of {', '.join(SUPPORTED_EXTENSIONS)}"
    )


def simulation_paths(out: str | os.PathLike[str]) -> dict[str, Path]:
    """The files :func:`write_simulation` writes for transactions path ``out``.

    ``shop.parquet`` -> transactions ``shop.parquet``, customers ``shop_customers.parquet``, events
    ``shop_events.parquet``, latent truth ``shop_latent.parquet``, catalogue ``shop_products.parquet``
    and the true parameters ``shop_truth.json``. Raises ValueError naming ``out`` for an unknown
    extension (supported: .csv, .csv.gz, .parquet): an ``OutputError`` (a ValueError).
    """
    out = Path(out)
    stem, ext = _split_extension(out)
    parent = out.parent
    return {
        "transactions": out,
        "customers": parent / f"{stem}_customers{ext}",
        "events": parent / f"{stem}_events{ext}",
        "latent": parent / f"{stem}_latent{ext}",
        "products": parent / f"{stem}_products{ext}",
        "truth": parent / f"{stem}_truth.json",
    }


def _to_arrow_for_csv(df: pd.DataFrame) -> pa.Table:
    """Arrow table with timestamps as text: ``YYYY-MM-DD`` for ``*date`` columns, else ``YYYY-MM-DD HH:MM:SS``."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    columns = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_timestamp(col.type):
            target = pa.date32() if name.endswith("date") else pa.timestamp("s")
            col = pc.cast(pc.cast(col, target, safe=False), pa.string())
        columns.append(col)
    return pa.table(columns, names=table.column_names)


def _write_table(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` atomically (temp file in the same directory, then os.replace)."""
    _, ext = _split_extension(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if ext == ".parquet":
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp, compression="zstd")
        elif ext == ".csv.gz":
            # Python's gzip at a fast level: pyarrow's gzip stream is many times slower here
            with open(tmp, "wb") as raw, gzip.GzipFile(
                filename=path.name[: -len(".gz")], mode="wb", fileobj=raw, compresslevel=_GZIP_LEVEL, mtime=0
            ) as sink:
                pa_csv.write_csv(_to_arrow_for_csv(df), sink)
        else:
            pa_csv.write_csv(_to_arrow_for_csv(df), str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_json(obj: dict[str, Any], path: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_simulation(
    sim: Simulation, out: str | os.PathLike[str], *, include_latent: bool = True
) -> dict[str, Path]:
    """Write a simulation beside ``out`` and return ``{"transactions": ..., "customers": ..., ...}``.

    The format follows ``out``'s extension (.csv, .csv.gz or .parquet); the customers, events,
    (optionally) latent-truth and catalogue tables go beside it with ``_customers``, ``_events``,
    ``_latent`` and ``_products`` appended to the stem, and the true parameters to ``<stem>_truth.json``
    (see :func:`simulation_paths`). Each file is written atomically. The directory is created if
    missing. Raises ``OutputError`` (a ValueError) naming ``out`` for an unknown extension.
    """
    paths = simulation_paths(out)
    paths["transactions"].parent.mkdir(parents=True, exist_ok=True)
    tables: dict[str, pd.DataFrame | None] = {
        "transactions": sim.transactions,
        "customers": sim.customers,
        "events": sim.events,
        "latent": sim.latent if include_latent else None,
        "products": sim.products,
    }
    written: dict[str, Path] = {}
    for key, df in tables.items():
        if df is None:
            continue
        started = time.perf_counter()
        _write_table(df, paths[key])
        logger.info("wrote %s (%d rows) in %.1f s", paths[key], len(df), time.perf_counter() - started)
        written[key] = paths[key]
    truth = dict(sim.truth)
    truth["files"] = {k: p.name for k, p in written.items()}
    _write_json(truth, paths["truth"])
    written["truth"] = paths["truth"]
    return written
