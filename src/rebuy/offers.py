"""Personalised offers: the retention playbook as a vectorised rules engine (``rebuy.offers``).

``assign_offers`` turns the score table (one row per customer) into ONE offer per customer, the
channel to send it through, how often that channel may be used, a human-readable reason quoting the
customer's own numbers and the expected currency cost of any discount. Every threshold and amount
lives in ``config.offers`` (``rebuy.config.OffersConfig``).

The rules (``config.offers.priority`` orders them; the first one a customer qualifies for wins):

- ``birthday``: the birthday falls within ``birthday_window_days`` from as-of (needs ``birth_date``).
- ``browse_abandonment``: products viewed or carted in the last ``browse_window_days`` and not
  bought after the view (needs an events table): ``browse_discount`` on them.
- ``cross_sell``: last order at most ``cross_sell_window_days`` ago: the recommender's complementary
  products to that order (``cross_sell``), else the customer's recommendations.
- ``win_back``: P(alive) below ``winback_max_p_alive`` (falling) or more than ``winback_overdue_days``
  past the expected next purchase: "we miss you" with ``winback_discount``.
- ``vip``: the top ``vip_top_share`` of customers by 12-month CLV: exclusive early access
  (or ``vip_discount``).
- ``spend_tier``: the next cumulative-spend tier is at most ``spend_tier_max_orders_to_next``
  expected orders away: the offer says how much more to spend to unlock the tier's discount.
- ``referral``: segment in ``referral_segments``: a refer-a-friend bonus of ``referral_bonus``.
- ``loyalty_points``: active repeat buyers (frequency >= ``loyalty_min_repeat_purchases`` and
  P(alive) >= ``loyalty_min_p_alive``): ``loyalty_points_multiplier`` x points on the next order.

Then, in this order:

1. P(alive) below ``p_alive_floor``: offer ``none`` (an offer would be wasted), whatever qualified.
2. Will buy anyway: discretionary discounts (win-back, browse, cross-sell, VIP) for customers with
   ``expected_purchases_30d >= buy_anyway_purchases_30d`` become a ``reminder`` (no discount).
   Birthday and spend-tier discounts are entitlements and are not withdrawn here.
3. Per-customer guard: a discount (share x expected order value) may not exceed
   ``max_discount_margin_multiple`` x margin of one expected order (``clv.margin`` x
   ``expected_order_value``) nor ``max_discount_clv_share`` x ``clv_12m``. It is reduced to the cap
   (rounded down to ``discount_step``); below ``min_discount`` it becomes a ``reminder``.
4. No consented channel (or younger than ``min_contact_age``): offer ``none`` - no message offer.
5. Run budget (``budget``): discounts are kept in descending ``budget_rank_by`` (12-month CLV by
   default) while the running total of ``discount_cost`` fits; the rest become ``reminder``.

Channel: the age group's channel (``channels``: ``[min_age, max_age)``, first match wins) when that
channel is consented; otherwise (``fallback_to_consented_channel``) the first consented channel in
``default_channel_order``; unknown age uses ``default_channel_order`` among consented channels.
No consent on any channel -> ``"none"``. Without a customers table (or for a customer missing from
it) consent is unknown and treated as absent unless ``assume_consent_without_customers`` is set.

``offer_value`` units depend on ``offer_type``: a discount share (0.15 = 15% off) for birthday,
browse_abandonment, cross_sell, win_back, vip and spend_tier; bonus points for loyalty_points;
currency for referral; 0 for reminder and none. ``discount_cost`` (currency) is the expected cost of
a percentage discount: share x ``expected_order_value`` x ``redemption_rate`` (1 = every discount
redeemed, so the run budget is a hard cap); points and referral bonuses are not discounts and cost 0.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rebuy.config import Config, OffersConfig

log = logging.getLogger(__name__)

OFFER_COLUMNS = [
    "offer_type", "offer_value", "offer_products", "channel", "max_contacts_per_month", "offer_reason",
    "discount_cost",
]
"""Columns returned by :func:`assign_offers`, in order."""

CHANNELS = ("messenger", "email", "sms")
DISCOUNT_RULES = ("birthday", "browse_abandonment", "cross_sell", "win_back", "vip", "spend_tier")
"""Rules whose ``offer_value`` is a discount share (a discount only when the share is > 0)."""
BUY_ANYWAY_RULES = ("browse_abandonment", "cross_sell", "win_back", "vip")
"""Discretionary discounts withdrawn (-> reminder) for customers who will buy anyway."""

REQUIRED_SCORE_COLUMNS = (
    "customer_id", "segment", "r_score", "f_score", "frequency", "total_spend", "last_purchase", "p_alive",
    "expected_purchases_30d", "expected_order_value", "clv_12m", "next_purchase_date", "recommended_products",
)
_NUMERIC_COLUMNS = ("r_score", "f_score", "frequency", "total_spend", "p_alive", "expected_purchases_30d",
                    "expected_order_value", "clv_12m")


_RANK_LABEL = {"clv_12m": "12-month CLV", "net_ltv": "net lifetime value",
               "expected_order_value": "expected order value"}


class OffersInputError(ValueError):
    """An input to the offers engine is missing a column or holds invalid values."""


# ---------------------------------------------------------------------------------------------- helpers
def _s(n: int, value: str = "") -> np.ndarray:
    """An object array of ``n`` copies of a string."""
    out = np.empty(n, dtype=object)
    out[:] = value
    return out


def _in(arr: np.ndarray, values: Sequence[str]) -> np.ndarray:
    """Elementwise membership of an object array of str in a few values (np.isin hashes every object)."""
    out = np.zeros(len(arr), dtype=bool)
    for v in values:
        out |= arr == v
    return out


def _tmpl(template: str, *cols: Any) -> np.ndarray:
    """Fill a printf ``template`` row by row from equal-length columns: one pass, object array of str."""
    lists = [c.tolist() if isinstance(c, np.ndarray) else list(c) for c in cols]
    n = len(lists[0]) if lists else 0
    return np.fromiter(map(template.__mod__, zip(*lists, strict=True)), dtype=object, count=n)


def _day(ts: Any) -> np.ndarray:
    """Datetimes -> 'YYYY-MM-DD' strings (NaT -> 'unknown')."""
    arr = np.asarray(ts, dtype="datetime64[ns]")
    nat = np.isnat(arr)
    days = arr.astype("datetime64[D]").astype(np.int64)
    lo, hi = (int(days[~nat].min()), int(days[~nat].max())) if (~nat).any() else (0, -1)
    if len(arr) > 1000 and hi - lo < len(arr):
        # few distinct days: format each day of the range once, then look the rows up
        table = np.datetime_as_string(np.arange(lo, hi + 1).astype("datetime64[D]"), unit="D").astype(object)
        out = table[np.where(nat, 0, days - lo)] if hi >= lo else _s(len(arr))
    else:
        out = np.datetime_as_string(arr, unit="D").astype(object)
    out[nat] = "unknown"
    return out


def _prefixed(texts: np.ndarray, prefix: str) -> np.ndarray:
    """prefix + text where the text is not empty, else ''."""
    return np.fromiter(((prefix + t) if t else "" for t in texts), dtype=object, count=len(texts))


def _as_list(x: Any) -> list:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return []
    if isinstance(x, str):
        return [x]
    return list(x)


def _first_k(x: Any, k: int) -> list:
    """The first ``k`` products of a list-like (tuple, array) or of a single id / missing value, as a new list."""
    if isinstance(x, tuple | np.ndarray):
        return list(x[:k])
    return _as_list(x)[:k]


def _obj(items: Sequence) -> np.ndarray:
    """A 1-D object array holding ``items`` (lists stay lists; ``np.array`` would make a 2-D array)."""
    return np.fromiter(items, dtype=object, count=len(items))


def _empty_lists(n: int) -> np.ndarray:
    """``n`` empty product lists (one shared immutable empty tuple; lists are made on output)."""
    out = np.empty(n, dtype=object)
    out.fill(())
    return out


def _take(lists: np.ndarray, k: int) -> np.ndarray:
    """First ``k`` items of each list-like (None/NaN -> empty), as an object array."""
    return _obj([x[:k] if type(x) is list or type(x) is tuple else _as_list(x)[:k] for x in lists])


def _ids(values: Any) -> np.ndarray:
    """Customer ids as a numpy object array of str (fast hashing, no Arrow round trips)."""
    arr = pd.Series(values).to_numpy(dtype=object)
    if len(arr) and not all(type(x) is str for x in arr[:1000]):
        arr = pd.Series(arr).astype(str).to_numpy(dtype=object)
    return arr


def _arrow_str(values: Any) -> Any:
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


def _positions(values: Any, ref_index: pd.Index, ref_arrow: Any = None,
               to_key: Callable[[Any], np.ndarray] | None = None) -> np.ndarray:
    """Position of each value in ``ref_index`` (unique), -1 when absent: ``ref_index.get_indexer``.

    Hashes in Arrow when ``ref_arrow`` (``ref_index`` as :func:`_arrow_str`) is given and the values
    are strings (several times faster than object hashing on millions of ids); otherwise
    ``ref_index.get_indexer(to_key(values))`` (``to_key`` defaults to the values as objects).
    """
    if len(values) == 0:
        return np.zeros(0, dtype=np.intp)
    val_a = _arrow_str(values) if ref_arrow is not None else None
    if val_a is not None and (to_key is None or val_a.null_count == 0):  # _ids would stringify missing ids
        import pyarrow.compute as pc

        return pc.fill_null(pc.index_in(val_a, value_set=ref_arrow), -1).to_numpy().astype(np.intp)
    if to_key is not None:
        return ref_index.get_indexer(to_key(values))
    vals = values.to_numpy(dtype=object) if isinstance(values, pd.Series | pd.Index) else np.asarray(values, dtype=object)
    return ref_index.get_indexer(vals)


def _string_array(values: np.ndarray) -> Any:
    """An object array of str as ``pd.array(values, dtype="string")``; built by pyarrow directly when that
    is the string storage (several times faster on a million long reasons)."""
    if pd.StringDtype().storage == "pyarrow":
        import pyarrow as pa

        return pd.arrays.ArrowStringArray(pa.array(values, type=pa.large_string()))
    return pd.array(values, dtype="string")


def _distinct(arr: Any) -> int:
    """Number of distinct values in a pyarrow array."""
    import pyarrow.compute as pc

    return len(pc.unique(arr))


def _join(lists: np.ndarray, k: int) -> np.ndarray:
    """Lists of product ids -> 'A, B, C' strings (first ``k`` of each)."""
    try:
        return np.fromiter(map(", ".join, map(operator.itemgetter(slice(k)), lists)), dtype=object, count=len(lists))
    except TypeError:  # non-str ids
        return np.fromiter((", ".join(map(str, p[:k])) for p in lists), dtype=object, count=len(lists))


class _Texts:
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
        cols = [np.asarray(c) for c in cols]
        pid = self.piece[rows]
        for p in np.unique(pid).tolist():
            m = pid == p
            if p < 0:
                out[rows[m]] = _tmpl(template, _s(int(m.sum())), *(c[m] for c in cols))
                continue
            p_rows, p_template, p_cols = self.parts[p]
            at = np.searchsorted(p_rows, rows[m])
            out[rows[m]] = _tmpl(p_template + template[2:], *(c[at] for c in p_cols), *(c[m] for c in cols))


def vip_clv_threshold(clv_12m: pd.Series | np.ndarray, top_share: float) -> float:
    """The 12-month CLV a customer needs to be among the top ``top_share`` (pass it to ``assign_offers``
    as ``vip_min_clv`` when scoring a single customer on the request path)."""
    clv = np.asarray(clv_12m, dtype=float)
    clv = clv[np.isfinite(clv) & (clv > 0)]
    n_all = len(np.asarray(clv_12m))
    k = max(1, math.ceil(top_share * n_all)) if n_all else 0
    if k == 0 or len(clv) == 0:
        return math.inf
    return float(np.sort(clv)[::-1][min(k, len(clv)) - 1])


def _validate_scores(scores: pd.DataFrame, oc: OffersConfig) -> None:
    if not isinstance(scores, pd.DataFrame):
        raise OffersInputError(f"scores: expected a pandas DataFrame, got {type(scores).__name__}")
    required = list(REQUIRED_SCORE_COLUMNS)
    if oc.budget is not None:
        required.append(oc.budget_rank_by)
    missing = [c for c in required if c not in scores.columns]
    if missing:
        raise OffersInputError(f"scores: missing column(s) {missing} needed by the offer rules")
    for c in list(_NUMERIC_COLUMNS) + ([oc.budget_rank_by] if oc.budget is not None else []):
        try:
            v = pd.to_numeric(scores[c], errors="raise").to_numpy(dtype=float)
        except (TypeError, ValueError):
            raise OffersInputError(f"scores: column {c!r} must be numeric") from None
        bad = ~np.isfinite(v)
        if bad.any():
            raise OffersInputError(f"scores: column {c!r} has {int(bad.sum())} NaN/inf value(s)")
    if scores["last_purchase"].isna().any():
        raise OffersInputError(f"scores: column 'last_purchase' has {int(scores['last_purchase'].isna().sum())} missing date(s)")
    if scores["customer_id"].isna().any():
        raise OffersInputError("scores: column 'customer_id' has missing values")


# ---------------------------------------------------------------------------------------------- channels
def _customer_side(
    ids: np.ndarray, customers: pd.DataFrame | None, as_of: pd.Timestamp, oc: OffersConfig, ids_arrow: Any = None
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Aligned (age in years or NaN, consent per channel, birth_date) for the score table's customers."""
    n = len(ids)
    nat = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    if customers is None:
        consent = {ch: np.full(n, oc.assume_consent_without_customers) for ch in CHANNELS}
        return np.full(n, np.nan), consent, nat
    if "customer_id" not in customers.columns:
        raise OffersInputError("customers: missing column 'customer_id'")
    wanted = [c for c in ("age", "birth_date", *(f"consent_{ch}" for ch in CHANNELS)) if c in customers.columns]
    cid_arrow = _arrow_str(customers["customer_id"]) if ids_arrow is not None else None
    if cid_arrow is not None and len(cid_arrow) <= n and cid_arrow.equals(ids_arrow[: len(cid_arrow)]):
        # the customers table lists the scored customers in the same order (ids are unique)
        cust = customers[wanted]
        pos = np.arange(n, dtype=np.intp)
        pos[len(cid_arrow):] = -1
    elif cid_arrow is not None and cid_arrow.null_count == 0 and _distinct(cid_arrow) == len(cid_arrow):
        # string ids, none missing or duplicated (the usual case): hash in Arrow
        import pyarrow.compute as pc

        cust = customers[wanted]
        pos = pc.fill_null(pc.index_in(ids_arrow, value_set=cid_arrow), -1).to_numpy().astype(np.intp)
    else:
        cust_ids = pd.Index(_ids(customers["customer_id"]), dtype=object)
        dup = cust_ids.duplicated(keep="last")
        if dup.any():
            log.warning("customers: %d duplicated customer_id row(s); the last one is used", int(dup.sum()))
        cust = customers.loc[~dup, wanted]
        cust.index = cust_ids[~dup]
        pos = cust.index.get_indexer(ids)
    known = pos >= 0
    aligned = cust.iloc[np.where(known, pos, 0)] if len(cust) else cust.reindex(range(len(ids)))
    consent: dict[str, np.ndarray] = {}
    for ch in CHANNELS:
        col = f"consent_{ch}"
        if col not in aligned.columns:
            log.warning("customers: no %r column: %s is treated as not consented", col, ch)
            c = np.zeros(n, dtype=bool)
        else:
            raw = aligned[col]
            try:
                c = raw.astype("boolean").fillna(False).to_numpy(dtype=bool)
                c = c if len(c) == n else np.zeros(n, dtype=bool)
            except (TypeError, ValueError):
                raise OffersInputError(f"customers: column {col!r} must be boolean (True/False)") from None
        # customers missing from the table: consent unknown
        c = np.where(known, c, oc.assume_consent_without_customers)
        consent[ch] = c
    birth = nat
    if "birth_date" in aligned.columns:
        birth = pd.to_datetime(aligned["birth_date"], errors="coerce").to_numpy(dtype="datetime64[ns]").copy()
        birth[~known] = np.datetime64("NaT")
    if "age" in aligned.columns:
        age = pd.to_numeric(aligned["age"], errors="coerce").to_numpy(dtype=float).copy()
        age[~known] = np.nan
    else:
        age = np.full(n, np.nan)
    # age from the birth date where the age is missing
    from_birth = (as_of.to_datetime64() - birth) / np.timedelta64(1, "D") / 365.2425
    age = np.where(np.isnan(age), from_birth, age)
    age = np.where(np.isfinite(age), age, np.nan)
    return age, consent, birth


def _assign_channels(
    age: np.ndarray, consent: dict[str, np.ndarray], oc: OffersConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(channel, max_contacts_per_month, too_young) per customer."""
    n = len(age)
    known_age = ~np.isnan(age)
    pref = _s(n, "")
    pref_contacts = np.zeros(n, dtype=np.int64)
    unmatched = known_age.copy()
    for rule in oc.channels:
        m = unmatched.copy()
        if rule.min_age is not None:
            m &= age >= rule.min_age
        if rule.max_age is not None:
            m &= age < rule.max_age
        pref[m] = rule.channel
        pref_contacts[m] = rule.max_contacts_per_month
        unmatched &= ~m
    cadence = {}
    for ch in CHANNELS:
        rules = [r.max_contacts_per_month for r in oc.channels if r.channel == ch]
        cadence[ch] = min(rules) if rules else min((r.max_contacts_per_month for r in oc.channels), default=0)

    channel = _s(n, "none")
    contacts = np.zeros(n, dtype=np.int64)
    for ch in CHANNELS:
        m = (pref == ch) & consent[ch]
        channel[m] = ch
        contacts[m] = pref_contacts[m]
    has_pref = pref != ""
    may_fall_back = ~has_pref | oc.fallback_to_consented_channel
    for ch in oc.default_channel_order:
        m = (channel == "none") & may_fall_back & consent[ch]
        channel[m] = ch
        contacts[m] = cadence[ch]
    too_young = known_age & (age < oc.min_contact_age) if oc.min_contact_age is not None else np.zeros(n, bool)
    channel[too_young] = "none"
    contacts[channel == "none"] = 0
    return channel, contacts, too_young


# ---------------------------------------------------------------------------------------------- rule masks
def _days_to_birthday(birth: np.ndarray, as_of: pd.Timestamp) -> np.ndarray:
    """Days from as-of to the next birthday (0 = today; NaN when unknown). 29 Feb -> 28 Feb in common years."""
    b = pd.Series(birth)
    ok = b.notna().to_numpy()
    out = np.full(len(b), np.nan)
    if not ok.any():
        return out
    month = b[ok].dt.month.to_numpy()
    day = b[ok].dt.day.to_numpy()

    def on_year(year: int) -> np.ndarray:
        leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
        d = np.where((month == 2) & (day == 29) & (not leap), 28, day)
        first = np.datetime64(f"{year:04d}-01", "M") + (month - 1).astype(np.int64)
        return (first.astype("datetime64[D]") + (d - 1).astype(np.int64)).astype("datetime64[ns]")

    this_year = on_year(as_of.year)
    next_year = on_year(as_of.year + 1)
    base = as_of.to_datetime64()
    nxt = np.where(this_year >= base, this_year, next_year)
    out[ok] = (nxt - base) / np.timedelta64(1, "D")
    return out


def _browse_products(
    id_index: pd.Index,
    events: pd.DataFrame,
    as_of: pd.Timestamp,
    oc: OffersConfig,
    *,
    last_purchase: np.ndarray,
    last_order_products: pd.Series | None,
    transactions: pd.DataFrame | None,
    ids_arrow: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(abandoned products per customer, latest abandoned event time) aligned to ``id_index``.

    A view/cart in the window counts as abandoned when the product was not bought at or after the
    event time. With ``transactions`` that is checked exactly; otherwise from the last order: bought
    when the event is not after the last purchase day and the product is in the last order.
    Works on integer codes (customer position x product code), no string joins.
    """
    n = len(id_index)
    latest = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    missing = [c for c in ("customer_id", "product_id", "timestamp", "event") if c not in events.columns]
    if missing:
        raise OffersInputError(f"events: missing column(s) {missing}")
    start = (as_of - pd.Timedelta(days=oc.browse_window_days)).to_datetime64()
    end = (as_of + pd.Timedelta(days=1)).to_datetime64()
    ts = pd.to_datetime(events["timestamp"], errors="coerce").to_numpy(dtype="datetime64[ns]")
    keep = events["event"].isin(["view", "cart"]).to_numpy(dtype=bool) & (ts >= start) & (ts < end)
    if not keep.any():
        return _empty_lists(n), latest
    pos = _positions(events["customer_id"].array[keep], id_index, ids_arrow, _ids)
    ev_ts = ts[keep]
    codes, products = pd.factorize(events["product_id"].to_numpy(dtype=object)[keep])
    ok = pos >= 0
    pos, ev_ts, codes = pos[ok], ev_ts[ok], codes[ok]
    if len(pos) == 0:
        return _empty_lists(n), latest
    width = np.int64(len(products) + 1)
    key = pos.astype(np.int64) * width + codes
    prod_index = pd.Index(products, dtype=object)
    prod_arrow = _arrow_str(prod_index)
    if transactions is not None:
        for c in ("customer_id", "product_id", "timestamp"):
            if c not in transactions.columns:
                raise OffersInputError(f"transactions: missing column {c!r} needed for browse abandonment")
        t_pos = _positions(transactions["customer_id"], id_index, ids_arrow, _ids)
        t_code = _positions(transactions["product_id"], prod_index, prod_arrow)
        t_ok = (t_pos >= 0) & (t_code >= 0)
        t_key = t_pos[t_ok].astype(np.int64) * width + t_code[t_ok]
        t_ts = pd.to_datetime(transactions["timestamp"]).to_numpy(dtype="datetime64[ns]")[t_ok]
        # latest purchase of each viewed (customer, product): sorted keys + maximum.at, no hashing
        ukey = np.unique(key)
        at = np.minimum(np.searchsorted(ukey, t_key), len(ukey) - 1)
        hit = ukey[at] == t_key
        nat = np.iinfo(np.int64).min  # NaT; below every time, so a max ignores it
        last_buy = np.full(len(ukey), nat, dtype=np.int64)
        np.maximum.at(last_buy, at[hit], t_ts[hit].view(np.int64))
        bought_at = last_buy[np.searchsorted(ukey, key)].view("datetime64[ns]")
        abandoned = ~(bought_at >= ev_ts)  # NaT compares False -> abandoned
    else:
        lp_day = last_purchase[pos].astype("datetime64[D]")
        abandoned = ev_ts.astype("datetime64[D]") > lp_day
        in_last = np.zeros(len(key), dtype=bool)
        if last_order_products is not None and len(last_order_products):
            baskets = last_order_products.to_numpy(dtype=object)
            lop_ids = _arrow_str(last_order_products.index) if ids_arrow is not None else None
            if lop_ids is not None and lop_ids.null_count == 0 and all(type(b) is list for b in baskets):
                # the scorer's lists under string ids: flatten without explode
                import pyarrow.compute as pc

                sizes = np.fromiter(map(len, baskets), dtype=np.int64, count=len(baskets))
                at = pc.fill_null(pc.index_in(lop_ids, value_set=ids_arrow), -1).to_numpy().astype(np.intp)
                p_pos = np.repeat(at, sizes)
                flat = np.fromiter(itertools.chain.from_iterable(baskets), dtype=object, count=int(sizes.sum()))
                p_code = _positions(flat, prod_index, prod_arrow)  # missing products match nothing
            else:
                pairs = last_order_products.explode().dropna()
                p_pos = _positions(pairs.index, id_index, ids_arrow, _ids)
                p_code = _positions(pairs.to_numpy(dtype=object), prod_index, prod_arrow)
            p_ok = (p_pos >= 0) & (p_code >= 0)
            in_last = pd.Series(key).isin(p_pos[p_ok].astype(np.int64) * width + p_code[p_ok]).to_numpy()
        abandoned |= ~in_last
    pos, ev_ts, codes, key = pos[abandoned], ev_ts[abandoned], codes[abandoned], key[abandoned]
    if len(pos) == 0:
        return _empty_lists(n), latest
    # most recent first within customer; one row per (customer, product); at most k per customer
    order = np.lexsort((-ev_ts.astype(np.int64), pos))
    pos, ev_ts, codes, key = pos[order], ev_ts[order], codes[order], key[order]
    first = ~pd.Series(key).duplicated().to_numpy()
    pos, ev_ts, codes = pos[first], ev_ts[first], codes[first]
    start_i = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])  # pos is sorted
    pos_u = pos[start_i]
    counts = np.diff(np.r_[start_i, len(pos)])
    counts = np.minimum(counts, oc.max_offer_products)
    cols = [products[codes[np.minimum(start_i + j, len(codes) - 1)]] for j in range(oc.max_offer_products)]
    out = _empty_lists(n)
    out[pos_u] = _obj([list(t[:c]) for t, c in zip(zip(*cols, strict=True), counts.tolist(), strict=True)])
    latest[pos_u] = ev_ts[start_i]
    return out, latest


# ---------------------------------------------------------------------------------------------- engine
GC_PAUSE_MIN_ROWS = 100_000
"""assign_offers pauses the cyclic garbage collector only for tables at least this long."""


def assign_offers(
    scores: pd.DataFrame,
    config: Config,
    *,
    as_of: pd.Timestamp | str,
    customers: pd.DataFrame | None = None,
    events: pd.DataFrame | None = None,
    last_order_products: pd.Series | None = None,
    cross_sell: Callable[[list, int], Sequence] | None = None,
    transactions: pd.DataFrame | None = None,
    vip_min_clv: float | None = None,
) -> pd.DataFrame:
    """One offer per customer, vectorised over the score table (see the module docstring for the rules).

    Parameters
    ----------
    scores : the per-customer score table (see ``REQUIRED_SCORE_COLUMNS``); money in currency,
        ``expected_purchases_30d`` a count, dates as datetime64.
    config : the validated config (``config.offers`` holds the rules, ``config.clv.margin`` the margin).
    as_of : the scoring date (midnight); windows are counted in days from it.
    customers : customer_id, age, birth_date, consent_email, consent_sms, consent_messenger.
    events : customer_id, product_id, timestamp, event in {"view", "cart"} (browse abandonment).
    last_order_products : customer_id -> list of products in the customer's last order.
    cross_sell : ``(product_ids, n) -> product_ids`` (the recommender's ``bought_together``).
    transactions : optional canonical transactions; makes "bought after the view" exact.
    vip_min_clv : CLV threshold for VIP; None ranks within ``scores`` (use :func:`vip_clv_threshold`
        from the nightly table when scoring a single customer).

    Returns
    -------
    DataFrame with :data:`OFFER_COLUMNS`, same index and order as ``scores``.

    For tables of at least :data:`GC_PAUSE_MIN_ROWS` customers (the nightly batch) the cyclic
    garbage collector is paused during the call and restored after: it only creates acyclic lists
    and strings, and at a million rows the collector's repeated passes over every tracked object in
    the process cost more than the offers themselves. Small calls (a request path) leave it alone.
    """
    was_enabled = gc.isenabled()
    if len(scores) >= GC_PAUSE_MIN_ROWS:
        gc.disable()
    try:
        return _assign_offers(scores, config, as_of=as_of, customers=customers, events=events,
                              last_order_products=last_order_products, cross_sell=cross_sell,
                              transactions=transactions, vip_min_clv=vip_min_clv)
    finally:
        if was_enabled:
            gc.enable()


def _assign_offers(
    scores: pd.DataFrame,
    config: Config,
    *,
    as_of: pd.Timestamp | str,
    customers: pd.DataFrame | None,
    events: pd.DataFrame | None,
    last_order_products: pd.Series | None,
    cross_sell: Callable[[list, int], Sequence] | None,
    transactions: pd.DataFrame | None,
    vip_min_clv: float | None,
) -> pd.DataFrame:
    """:func:`assign_offers` with the garbage collector paused."""
    oc = config.offers
    _validate_scores(scores, oc)
    as_of = pd.Timestamp(as_of).normalize()
    n = len(scores)
    ids = _ids(scores["customer_id"])
    id_index = pd.Index(ids, dtype=object)
    if not id_index.is_unique:
        raise OffersInputError("scores: column 'customer_id' has duplicated ids")
    ids_arrow = _arrow_str(ids)

    def num(c: str) -> np.ndarray:
        return pd.to_numeric(scores[c]).to_numpy(dtype=float)

    p_alive = num("p_alive")
    e30 = num("expected_purchases_30d")
    eov = np.maximum(num("expected_order_value"), 0.0)
    clv = num("clv_12m")
    spend = num("total_spend")
    freq = num("frequency")
    segment = _ids(scores["segment"])
    last_purchase = pd.to_datetime(scores["last_purchase"]).to_numpy(dtype="datetime64[ns]")
    next_purchase = pd.to_datetime(scores["next_purchase_date"]).to_numpy(dtype="datetime64[ns]")
    k = oc.max_offer_products
    # each row's first k recommendations as its own new list, made once (None/NaN -> no products; a
    # single id -> [id]): rows offered their recommendations output that list as is (``owned``);
    # other product lists are copied on output
    recs = _obj([x[:k] if type(x) is list else _first_k(x, k)
                 for x in scores["recommended_products"].to_numpy(dtype=object)])
    base = as_of.to_datetime64()

    age, consent, birth = _customer_side(ids, customers, as_of, oc, ids_arrow)
    channel, contacts, too_young = _assign_channels(age, consent, oc)

    # --- who qualifies for which rule
    masks: dict[str, np.ndarray] = {}
    extra: dict[str, Any] = {}
    enabled = set(oc.priority)
    if "birthday" in enabled:
        days_bd = _days_to_birthday(birth, as_of)
        masks["birthday"] = np.nan_to_num(days_bd, nan=-1) >= 0
        masks["birthday"] &= np.nan_to_num(days_bd, nan=np.inf) <= oc.birthday_window_days
        extra["days_bd"] = days_bd
    if "browse_abandonment" in enabled and events is not None:
        bp, latest = _browse_products(
            id_index, events, as_of, oc, last_purchase=last_purchase,
            last_order_products=last_order_products, transactions=transactions, ids_arrow=ids_arrow,
        )
        masks["browse_abandonment"] = ~np.isnat(latest)  # a latest time exactly where products were found
        extra["browse"] = (bp, latest)
    days_since = (base - last_purchase) / np.timedelta64(1, "D")
    if "cross_sell" in enabled:
        masks["cross_sell"] = (days_since >= 0) & (days_since <= oc.cross_sell_window_days)
    falling = p_alive < oc.winback_max_p_alive
    overdue_days = (base - next_purchase) / np.timedelta64(1, "D")
    overdue = np.nan_to_num(overdue_days, nan=-np.inf) > oc.winback_overdue_days
    if "win_back" in enabled:
        masks["win_back"] = falling | overdue
    if "vip" in enabled:
        if vip_min_clv is None:
            # exact top-k by rank (ties broken by table order)
            kk = max(1, math.ceil(oc.vip_top_share * n))
            order = np.argsort(-clv, kind="stable")
            vip = np.zeros(n, dtype=bool)
            vip[order[:kk]] = True
            masks["vip"] = vip & (clv > 0)
        else:
            masks["vip"] = (clv >= vip_min_clv) & (clv > 0)
    tiers = np.array([t for t, _ in oc.spend_tiers], dtype=float)
    shares = np.array([s for _, s in oc.spend_tiers], dtype=float)
    if "spend_tier" in enabled and len(tiers):
        cur = np.searchsorted(tiers, spend, side="right")
        has_next = cur < len(tiers)
        nxt_i = np.minimum(cur, len(tiers) - 1)
        gap = np.where(has_next, tiers[nxt_i] - spend, np.inf)
        masks["spend_tier"] = has_next & (eov > 0) & (gap <= oc.spend_tier_max_orders_to_next * eov)
        extra["tier"] = (cur, nxt_i, gap)
    if "referral" in enabled:
        masks["referral"] = _in(segment, oc.referral_segments)
    if "loyalty_points" in enabled:
        masks["loyalty_points"] = (
            (freq >= oc.loyalty_min_repeat_purchases) & (p_alive >= oc.loyalty_min_p_alive) & (eov > 0)
        )

    # cross-sell products, only where cross-sell would win; no products -> does not qualify
    if "cross_sell" in masks and masks["cross_sell"].any():
        higher = np.zeros(n, dtype=bool)
        for rule in oc.priority[: oc.priority.index("cross_sell")]:
            if rule in masks:
                higher |= masks[rule]
        # below the P(alive) floor the offer is dropped whatever rule wins (and the reason does not
        # depend on it): no recommender calls for those customers
        wasted = p_alive < oc.p_alive_floor
        idx = np.flatnonzero(masks["cross_sell"] & ~higher & ~wasted)
        cs = _cross_sell_products(ids[idx], recs[idx], last_order_products, cross_sell, k)
        has = np.fromiter((len(x) > 0 for x in cs), dtype=bool, count=len(idx))
        masks["cross_sell"][idx[~has]] = False
        full = _empty_lists(n)
        full[idx] = cs
        extra["cross_sell"] = full

    # --- pick one rule per customer (the first in priority order); offer types as small integer codes
    type_names = ["none", "reminder", *(r for r in dict.fromkeys(oc.priority) if r not in ("none", "reminder"))]
    code = {t: np.int8(i) for i, t in enumerate(type_names)}
    offer_type = np.zeros(n, dtype=np.int8)
    for rule in reversed(oc.priority):
        if rule in masks:
            offer_type[masks[rule]] = code[rule]

    value = np.zeros(n)
    products = _empty_lists(n)  # references to product lists; sliced to k on output
    owned = np.zeros(n, dtype=bool)  # products[i] is row i's own list of at most k (recs or browse)
    trigger = _Texts(n)  # what triggered the offer; formatted only inside the final reason
    detail = _s(n)
    days_since_i = np.nan_to_num(days_since, nan=0).astype(np.int64)
    for rule in oc.priority:
        idx = np.flatnonzero(offer_type == code[rule])
        if len(idx) == 0:
            continue
        if rule == "birthday":
            value[idx] = oc.birthday_discount
            products[idx] = recs[idx]
            owned[idx] = True
            d = extra["days_bd"][idx].astype(np.int64)
            trigger.set(idx, "Birthday on %s (in %d days)", _day(base + d * np.timedelta64(1, "D")), d)
        elif rule == "browse_abandonment":
            bp, latest = extra["browse"]
            value[idx] = oc.browse_discount
            products[idx] = bp[idx]
            owned[idx] = True
            trigger.set(idx, "Viewed or carted %s (latest on %s) without buying",
                        _join(products[idx], k), _day(latest[idx]))
        elif rule == "cross_sell":
            value[idx] = oc.cross_sell_discount
            products[idx] = extra["cross_sell"][idx]
            trigger.set(idx, "Ordered %d days ago (%s)", days_since_i[idx], _day(last_purchase[idx]))
        elif rule == "win_back":
            value[idx] = oc.winback_discount
            products[idx] = _obj([oc.new_products] * len(idx)) if oc.new_products else recs[idx]
            owned[idx] = not oc.new_products
            f, o = falling[idx], overdue[idx]
            sub = idx[f & o]
            trigger.set(sub, "P(alive) fell to %.2f and the expected next purchase was %s",
                        p_alive[sub], _day(next_purchase[sub]))
            sub = idx[f & ~o]
            trigger.set(sub, "P(alive) fell to %.2f", p_alive[sub])
            sub = idx[~f]
            trigger.set(sub, "The expected next purchase was %s (%d days ago) and P(alive) is %.2f",
                        _day(next_purchase[sub]), np.nan_to_num(overdue_days[sub]).astype(np.int64), p_alive[sub])
        elif rule == "vip":
            value[idx] = oc.vip_discount
            products[idx] = recs[idx]
            owned[idx] = True
            trigger.set(idx, f"Among the top {oc.vip_top_share * 100:g}%% of customers by 12-month CLV (%.2f)",
                        clv[idx])
        elif rule == "spend_tier":
            cur, nxt_i, gap = extra["tier"]
            value[idx] = shares[nxt_i[idx]]
            products[idx] = recs[idx]
            owned[idx] = True
            c = cur[idx]
            prev = np.maximum(c - 1, 0)
            at = c > 0
            trigger.set(idx[at], "Cumulative spend is %.2f (now at the %.2f tier with %g%% off)",
                        spend[idx[at]], tiers[prev[at]], np.round(shares[prev[at]] * 100, 2))
            trigger.set(idx[~at], "Cumulative spend is %.2f", spend[idx[~at]])
            detail[idx] = _tmpl("spend %.2f more to reach the %.2f tier and unlock ", gap[idx], tiers[nxt_i[idx]])
        elif rule == "referral":
            value[idx] = oc.referral_bonus
            trigger.set(idx, "%s (R%d F%d)", segment[idx], num("r_score")[idx], num("f_score")[idx])
        elif rule == "loyalty_points":
            value[idx] = np.round(oc.points_per_currency_unit * eov[idx] * oc.loyalty_points_multiplier)
            products[idx] = recs[idx]
            owned[idx] = True
            trigger.set(idx, "Active repeat buyer with %g repeat purchases and P(alive) %.2f",
                        freq[idx], p_alive[idx])

    # --- downgrades; `note` explains a withdrawn or capped discount
    note = _s(n)
    is_discount = np.isin(offer_type, [code[r] for r in DISCOUNT_RULES if r in code]) & (value > 0)
    reminder = np.zeros(n, dtype=bool)

    floor = p_alive < oc.p_alive_floor
    anyway = is_discount & np.isin(offer_type, [code[r] for r in BUY_ANYWAY_RULES if r in code]) & (e30 >= oc.buy_anyway_purchases_30d) & ~floor
    if anyway.any():
        note[anyway] = _tmpl("expected %.2f purchases in the next 30 days anyway, so no discount", e30[anyway])
        reminder |= anyway

    margin_cap = oc.max_discount_margin_multiple * config.clv.margin * eov
    clv_cap = oc.max_discount_clv_share * np.maximum(clv, 0.0)
    cap_amount = np.minimum(margin_cap, clv_cap)
    cap_share = np.where(eov > 0, cap_amount / np.where(eov > 0, eov, 1.0), 0.0)
    over = is_discount & ~reminder & ~floor & (value > cap_share + 1e-12)
    if over.any():
        sub = np.flatnonzero(over)
        capped = np.floor(cap_share[sub] / oc.discount_step + 1e-9) * oc.discount_step
        by_clv = clv_cap[sub] < margin_cap[sub]
        why = _tmpl(f"at most {oc.max_discount_margin_multiple:g}x the margin of an expected order of %.2f", eov[sub])
        why[by_clv] = _tmpl(f"at most {oc.max_discount_clv_share * 100:g}%% of the 12-month CLV of %.2f",
                            clv[sub[by_clv]])
        too_small = capped < max(oc.min_discount, 1e-12)
        down, keep = sub[too_small], sub[~too_small]
        note[down] = _tmpl("a %g%% discount would exceed the budget guard (%s), so no discount",
                           np.round(value[down] * 100, 2), why[too_small])
        reminder[down] = True
        note[keep] = _tmpl(" (capped from %g%% by the budget guard: %s)", np.round(value[keep] * 100, 2),
                           why[~too_small])
        value[keep] = capped[~too_small]

    no_channel = channel == "none"

    # run budget: highest expected value first
    discount_cost = np.zeros(n)
    live_discount = is_discount & ~reminder & ~floor & ~no_channel
    discount_cost[live_discount] = value[live_discount] * eov[live_discount] * oc.redemption_rate
    if oc.budget is not None and live_discount.any():
        rank_value = num(oc.budget_rank_by)
        cand = np.flatnonzero(live_discount)
        order = cand[np.argsort(-rank_value[cand], kind="stable")]
        fits = np.cumsum(discount_cost[order]) <= oc.budget + 1e-9
        over_budget = order[~fits]
        if len(over_budget):
            note[over_budget] = (f"the run's discount budget of {oc.budget:.2f} went to customers with a higher "
                                 f"{_RANK_LABEL[oc.budget_rank_by]} first, so no discount")
            reminder[over_budget] = True
            discount_cost[over_budget] = 0.0
            log.info("offers: discount budget %.2f reached; %d discount(s) downgraded to reminders",
                     oc.budget, len(over_budget))

    # --- reminders keep the trigger and the products (recommendations if none)
    r_idx = np.flatnonzero(reminder)
    if len(r_idx):
        offer_type[r_idx] = code["reminder"]
        value[r_idx] = 0.0
        empty_p = np.fromiter((len(p) == 0 for p in products[r_idx]), dtype=bool, count=len(r_idx))
        products[r_idx[empty_p]] = recs[r_idx[empty_p]]
        owned[r_idx[empty_p]] = True

    # --- offers nobody will receive
    reason = _s(n)
    has_offer = offer_type != code["none"]
    idle = np.flatnonzero(~has_offer & ~floor)
    reason[idle] = _tmpl("No offer rule applies (P(alive) %.2f, last order %s, %g repeat purchases).",
                         p_alive[idle], _day(last_purchase[idle]), freq[idle])
    fl = np.flatnonzero(floor)
    reason[fl] = _tmpl(f"P(alive) is %.3f, below the floor of {oc.p_alive_floor:g}: an offer would be wasted.",
                       p_alive[fl])
    silent = has_offer & ~floor & no_channel
    for young, why in ((True, "the customer is younger than the minimum contact age"),
                       (False, "there is no consented channel")):
        sub = np.flatnonzero(silent & (too_young == young))
        trigger.fill(reason, sub, f"%s, but {why}: no message offer.")
    dropped = floor | silent
    offer_type[dropped] = code["none"]
    is_none = offer_type == code["none"]
    value[is_none] = 0.0
    discount_cost[is_none] = 0.0
    products[is_none] = _empty_lists(int(is_none.sum()))
    owned[is_none] = False

    # --- reasons for the offers sent
    for c in np.unique(offer_type).tolist():
        if c != code["none"]:
            t = type_names[c]
            idx = np.flatnonzero(offer_type == c)
            _offer_reason(reason, idx, t, trigger, value[idx], _join(products[idx], k), note[idx],
                                        detail[idx], oc)

    products_out = products.copy()
    copy = np.flatnonzero(~owned)
    products_out[copy] = _obj([p[:k] if type(p) is list else list(p[:k]) for p in products[copy]])
    out = pd.DataFrame(
        {
            "offer_type": _string_array(np.array(type_names, dtype=object)[offer_type]),
            "offer_value": np.round(value, 4),
            "offer_products": products_out,
            "channel": _string_array(channel),
            "max_contacts_per_month": contacts.astype(np.int64),
            "offer_reason": _string_array(reason),
            "discount_cost": np.round(discount_cost, 2),
        },
        index=scores.index,
    )
    log.info("offers: %s", out["offer_type"].value_counts().to_dict())
    return out


def _cross_sell_products(
    ids: np.ndarray,
    recs: np.ndarray,
    last_order_products: pd.Series | None,
    cross_sell: Callable[[list, int], Sequence] | None,
    k: int,
) -> np.ndarray:
    """Complementary products to the last order (cached per basket); recommendations when unknown."""
    out = _take(recs, k)
    if cross_sell is None or last_order_products is None or not len(last_order_products):
        return out
    lop_ids = _arrow_str(last_order_products.index)
    want = _arrow_str(ids) if lop_ids is not None and lop_ids.null_count == 0 else None
    if want is not None:  # string ids: hash in Arrow; the last of duplicated ids wins (search reversed)
        import pyarrow.compute as pc

        rev = pc.fill_null(pc.index_in(want, value_set=lop_ids[::-1]), -1).to_numpy().astype(np.int64)
        at = np.where(rev >= 0, len(lop_ids) - 1 - rev, -1)
        lop_values = last_order_products.to_numpy(dtype=object)
    else:
        lop = pd.Series(last_order_products.to_numpy(dtype=object),
                        index=pd.Index(_ids(last_order_products.index), dtype=object))
        lop = lop[~lop.index.duplicated(keep="last")]
        at = lop.index.get_indexer(ids)
        lop_values = lop.to_numpy(dtype=object)
    baskets = np.where(at >= 0, lop_values[np.maximum(at, 0)], None)
    cache: dict[tuple, list] = {}
    for i, b in enumerate(baskets):
        basket = _as_list(b)
        if not basket:
            continue
        key = tuple(sorted(map(str, basket)))
        if key not in cache:
            bought = set(basket)
            got = [p for p in cross_sell(list(basket), k + len(basket)) if p not in bought]
            cache[key] = got[:k]
        out[i] = cache[key]
    return out


def _offer_reason(reason: np.ndarray, rows: np.ndarray, t: str, trigger: _Texts, v: np.ndarray, prods: np.ndarray,
                  note: np.ndarray, detail: np.ndarray, oc: OffersConfig) -> None:
    """Write the full reason sentence (trigger; offer text) of ``rows``, all of offer type ``t``, into ``reason``.

    ``v``, ``prods``, ``note`` and ``detail`` are aligned to ``rows``.
    """
    pct = np.round(v * 100, 2)
    on = _prefixed(prods, " on ")
    if t == "reminder":
        return trigger.fill(reason, rows, "%s; %s: a reminder%s instead.", note, _prefixed(prods, " of "))
    if t == "birthday":
        return trigger.fill(reason, rows, "%s; a %g%% birthday discount%s%s.", pct, on, note)
    if t == "browse_abandonment":
        return trigger.fill(reason, rows, "%s; a %g%% discount on them%s.", pct, note)
    if t == "cross_sell":
        disc = _tmpl(" with %g%% off", pct)
        disc[v <= 0] = ""
        return trigger.fill(reason, rows, "%s; complementary products to that order%s%s%s.", _prefixed(prods, ": "),
                            disc, note)
    if t == "win_back":
        return trigger.fill(reason, rows, "%s; we miss you: a %g%% win-back discount%s%s.", pct, on, note)
    if t == "vip":
        perk = _tmpl("an exclusive %g%% discount", pct)
        perk[v <= 0] = "exclusive early access"
        return trigger.fill(reason, rows, "%s; VIP status with %s%s%s.", perk, _prefixed(prods, " to "), note)
    if t == "spend_tier":
        return trigger.fill(reason, rows, "%s; %s%g%% off every order%s.", detail, pct, note)
    if t == "referral":
        return trigger.fill(reason, rows,
                            "%s; an invitation to refer a friend: both get %.2f off when the friend orders.", v)
    if t == "loyalty_points":
        return trigger.fill(reason, rows,
                            f"%s; {oc.loyalty_points_multiplier:g}x points on the next order: about %d points%s.", v, on)
    raise AssertionError(f"unknown offer type {t!r}")


def offer_summary(offers: pd.DataFrame) -> pd.DataFrame:
    """Customers, total discount cost (currency) and mean offer value by offer_type and channel.

    Sorted by customers, descending; a final ``total`` row adds everything up.
    """
    missing = [c for c in ("offer_type", "channel", "discount_cost") if c not in offers.columns]
    if missing:
        raise OffersInputError(f"offers: missing column(s) {missing}")
    g = offers.groupby(["offer_type", "channel"], observed=True, sort=True)
    out = g.agg(customers=("discount_cost", "size"), discount_cost=("discount_cost", "sum")).reset_index()
    out = out.sort_values(["customers", "offer_type", "channel"], ascending=[False, True, True], kind="stable")
    total = pd.DataFrame({
        "offer_type": ["total"], "channel": ["all"], "customers": [len(offers)],
        "discount_cost": [float(offers["discount_cost"].sum())],
    })
    out = pd.concat([out, total], ignore_index=True)
    out["offer_type"] = out["offer_type"].astype("string")
    out["channel"] = out["channel"].astype("string")
    out["customers"] = out["customers"].astype("int64")
    out["discount_cost"] = out["discount_cost"].astype(float).round(2)
    return out
