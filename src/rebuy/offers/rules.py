"""The offer rules: one small class per rule, and the registry ``RULES`` (name -> rule).

A rule answers, for the customers of one run (an :class:`~rebuy.offers.context.OfferContext`):

- ``eligible(ctx)``: who qualifies (bool per customer, vectorised over the whole table);
- ``confirm(ctx, rows)``: of the customers this rule would win, who really does (an expensive check
  run only where it matters, e.g. cross-sell needs products); by default all of them;
- ``value(ctx, rows)``: ``offer_value`` (a discount share when ``is_discount``; the rule's unit else);
- ``products(ctx, rows)``: the products offered, and whether each list is the row's own (not shared);
- ``trigger(ctx, rows, texts)``: what triggered the offer, quoting the customer's numbers;
- ``detail(ctx, rows)``: optional extra text the sentence uses (spend tier: how much more to spend);
- ``sentence(oc, s)``: the offer text after the trigger, for the offers actually sent;
- ``plain(c, run)``: the same rule for one customer in plain Python, used by the reference engine
  (:mod:`rebuy.offers.reference`) that tests hold the vectorised methods equal to.

``rows`` are sorted positions in the score table. Rules keep no state: what they derive once per run
lives in ``ctx.memo``. ``is_discount``: the value is a discount share (a discount only when > 0), so the
guards and the budget apply. ``buy_anyway``: a discretionary discount, withdrawn (-> reminder) for
customers expected to buy anyway; entitlements (birthday, spend tier) keep theirs.

Invariant: ``tuple(RULES) == rebuy.offers.names.RULE_NAMES`` (checked at import).
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd

from rebuy.offers.browse import abandoned_products, can_run
from rebuy.offers.cross_sell import complement_products
from rebuy.offers.lists import as_list, empty_lists, isin, obj
from rebuy.offers.names import RULE_NAMES
from rebuy.offers.text import (
    count_phrase,
    day_string,
    day_strings,
    days_ago,
    fill,
    in_days,
    join_products,
    percent,
    phrases,
    prefixed,
    product_text,
)

if TYPE_CHECKING:
    from rebuy.config import OffersConfig
    from rebuy.offers.context import OfferContext
    from rebuy.offers.reference import PlainCustomer, PlainRun
    from rebuy.offers.text import Texts


class Sentence(NamedTuple):
    """What an offer text quotes, aligned to the rows sent: value after the guards, the products
    ('A, B, C'; '' when none), the guard's note ('' when none) and the rule's detail ('' when none)."""

    value: np.ndarray
    products: np.ndarray
    note: np.ndarray
    detail: np.ndarray

    @property
    def pct(self) -> np.ndarray:
        return percent(self.value)

    def products_after(self, prefix: str) -> np.ndarray:
        """``prefix + products`` where there are products, else ''."""
        return prefixed(self.products, prefix)


class PlainOffer(NamedTuple):
    """One customer's offer from :meth:`Rule.plain`: value, products (first k), trigger, detail."""

    value: float
    products: list
    trigger: str
    detail: str = ""


class Rule(ABC):
    """Base of the offer rules (see the module docstring); subclasses register themselves by ``name``."""

    name: ClassVar[str] = ""
    is_discount: ClassVar[bool] = False
    buy_anyway: ClassVar[bool] = False
    classes: ClassVar[dict[str, type[Rule]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Rule.classes[cls.name] = cls

    @abstractmethod
    def eligible(self, ctx: OfferContext) -> np.ndarray:
        """Who qualifies: a bool per customer of the score table (cheap, vectorised)."""

    def confirm(self, ctx: OfferContext, rows: np.ndarray) -> np.ndarray:
        """Of ``rows`` (this rule would win them), those that really qualify (bool per row); the rest
        fall through to the next rules."""
        return np.ones(len(rows), dtype=bool)

    @abstractmethod
    def value(self, ctx: OfferContext, rows: np.ndarray) -> np.ndarray | float:
        """``offer_value`` of ``rows``: a discount share (0.15 = 15% off) when ``is_discount``, else the
        rule's unit (points, currency)."""

    def products(self, ctx: OfferContext, rows: np.ndarray) -> tuple[np.ndarray, bool]:
        """The customer's recommendations (their own lists) unless the rule says otherwise."""
        return ctx.recs[rows], True

    @abstractmethod
    def trigger(self, ctx: OfferContext, rows: np.ndarray, texts: Texts) -> None:
        """Write what triggered the offer of ``rows`` into ``texts`` (``texts.set``; rows sorted)."""

    def detail(self, ctx: OfferContext, rows: np.ndarray) -> np.ndarray | None:
        """Extra text per row for ``sentence`` (``Sentence.detail``), or None."""
        return None

    @abstractmethod
    def sentence(self, oc: OffersConfig, s: Sentence) -> tuple[str, tuple]:
        """(printf template starting with the trigger's ``%s``, its other columns)."""

    @abstractmethod
    def plain(self, c: PlainCustomer, run: PlainRun) -> PlainOffer | None:
        """This rule for one customer in plain Python (None: does not qualify); the reference twin."""


# ---------------------------------------------------------------------------------------------- birthday
def days_to_birthday(birth: np.ndarray, as_of: pd.Timestamp) -> np.ndarray:
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

    this_year, next_year = on_year(as_of.year), on_year(as_of.year + 1)
    base = as_of.to_datetime64()
    out[ok] = (np.where(this_year >= base, this_year, next_year) - base) / np.timedelta64(1, "D")
    return out


def next_birthday(birth: Any, today: dt.date) -> dt.date | None:
    """The next birthday on or after ``today`` (29 Feb -> 28 Feb in common years): the plain twin."""
    if pd.isna(birth):
        return None
    b = pd.Timestamp(birth)
    for year in (today.year, today.year + 1):
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        d = dt.date(year, b.month, 28 if (b.month, b.day) == (2, 29) and not leap else b.day)
        if d >= today:
            return d
    return None  # pragma: no cover - next year's birthday is always after today


class Birthday(Rule):
    """The birthday falls within ``birthday_window_days`` from as-of: ``birthday_discount``."""

    name = "birthday"
    is_discount = True
    TRIGGER = "Birthday on %s (%s)"

    def _days(self, ctx: OfferContext) -> np.ndarray:
        return ctx.memo("birthday.days", lambda: days_to_birthday(ctx.birth, ctx.as_of))

    def eligible(self, ctx: OfferContext) -> np.ndarray:
        d = self._days(ctx)
        return (d >= 0) & (d <= ctx.oc.birthday_window_days)

    def value(self, ctx: OfferContext, rows: np.ndarray) -> float:
        return ctx.oc.birthday_discount

    def trigger(self, ctx: OfferContext, rows: np.ndarray, texts: Texts) -> None:
        d = self._days(ctx)[rows].astype(np.int64)
        texts.set(rows, self.TRIGGER, day_strings(ctx.base + d * np.timedelta64(1, "D")), phrases(in_days, d))

    def sentence(self, oc: OffersConfig, s: Sentence) -> tuple[str, tuple]:
        return "%s; a %g%% birthday discount%s%s.", (s.pct, s.products_after(" on "), s.note)

    def plain(self, c: PlainCustomer, run: PlainRun) -> PlainOffer | None:
        today = run.as_of.date()
        d = next_birthday(c.birth, today)
        if d is None or (d - today).days > run.oc.birthday_window_days:
            return None
        return PlainOffer(run.oc.birthday_discount, c.recs, self.TRIGGER % (d.isoformat(), in_days((d - today).days)))


# ---------------------------------------------------------------------------------------------- browse
class BrowseAbandonment(Rule):
    """Products viewed or carted in the last ``browse_window_days`` and not bought: ``browse_discount``."""

    name = "browse_abandonment"
    is_discount = True
    buy_anyway = True
    TRIGGER = "Viewed or carted %s (latest on %s) without buying"

    def _found(self, ctx: OfferContext) -> tuple[np.ndarray, np.ndarray]:
        return ctx.memo("browse.abandoned", lambda: abandoned_products(ctx))

    def eligible(self, ctx: OfferContext) -> np.ndarray:
        if not can_run(ctx):  # no events, or transactions without products (warned once)
            return np.zeros(ctx.n, dtype=bool)
        return ~np.isnat(self._found(ctx)[1])  # a latest time exactly where products were found

    def value(self, ctx: OfferContext, rows: np.ndarray) -> float:
        return ctx.oc.browse_discount

    def products(self, ctx: OfferContext, rows: np.ndarray) -> tuple[np.ndarray, bool]:
        return self._found(ctx)[0][rows], True

    def trigger(self, ctx: OfferContext, rows: np.ndarray, texts: Texts) -> None:
        found, latest = self._found(ctx)
        texts.set(rows, self.TRIGGER, join_products(found[rows], ctx.k, ctx.names), day_strings(latest[rows]))

    def sentence(self, oc: OffersConfig, s: Sentence) -> tuple[str, tuple]:
        return "%s; a %g%% discount on them%s.", (s.pct, s.note)

    def plain(self, c: PlainCustomer, run: PlainRun) -> PlainOffer | None:
        if not run.has_events:
            return None
        start = run.as_of - pd.Timedelta(days=run.oc.browse_window_days)
        end = run.as_of + pd.Timedelta(days=1)
        views = [(ts, p) for ts, p, event in c.events if event in ("view", "cart") and start <= ts < end]
        left = [(ts, p) for ts, p in views if not c.bought_after(p, ts)]
        if not left:
            return None
        left.sort(key=lambda v: v[0], reverse=True)  # stable: ties keep the events' order
        products = list(dict.fromkeys(p for _, p in left))[: run.k]
        return PlainOffer(run.oc.browse_discount, products,
                          self.TRIGGER % (product_text(products, run.names), day_string(left[0][0])))


# ---------------------------------------------------------------------------------------------- cross-sell
class CrossSell(Rule):
    """Last order at most ``cross_sell_window_days`` ago: complements to it (else recommendations)."""

    name = "cross_sell"
    is_discount = True
    buy_anyway = True
    TRIGGER = "Ordered %s (%s)"

    def eligible(self, ctx: OfferContext) -> np.ndarray:
        days = ctx.days_before(ctx.last_purchase)
        return (days >= 0) & (days <= ctx.oc.cross_sell_window_days)

    def confirm(self, ctx: OfferContext, rows: np.ndarray) -> np.ndarray:
        """Customers with complementary products (the recommender is asked only for ``rows``)."""
        found = complement_products(ctx.ids[rows], ctx.recs[rows], ctx.last_order_products, ctx.cross_sell, ctx.k)
        full = empty_lists(ctx.n)
        full[rows] = found
        ctx.facts["cross_sell.products"] = full
        return np.fromiter((len(x) > 0 for x in found), dtype=bool, count=len(rows))

    def value(self, ctx: OfferContext, rows: np.ndarray) -> float:
        return ctx.oc.cross_sell_discount

    def products(self, ctx: OfferContext, rows: np.ndarray) -> tuple[np.ndarray, bool]:
        return ctx.facts["cross_sell.products"][rows], False  # lists shared per basket

    def trigger(self, ctx: OfferContext, rows: np.ndarray, texts: Texts) -> None:
        days = np.nan_to_num(ctx.days_before(ctx.last_purchase[rows]), nan=0).astype(np.int64)
        texts.set(rows, self.TRIGGER, phrases(days_ago, days), day_strings(ctx.last_purchase[rows]))

    def sentence(self, oc: OffersConfig, s: Sentence) -> tuple[str, tuple]:
        disc = fill(" with %g%% off", s.pct)
        disc[s.value <= 0] = ""
        return "%s; complementary products to that order%s%s%s.", (s.products_after(": "), disc, s.note)

    def plain(self, c: PlainCustomer, run: PlainRun) -> PlainOffer | None:
        days = (run.as_of - c.last_purchase) / pd.Timedelta(days=1)
        if not 0 <= days <= run.oc.cross_sell_window_days:
            return None
        basket = as_list(c.baskets[-1]) if c.baskets else []
        products = c.recs
        if run.cross_sell is not None and basket:
            got = run.cross_sell(list(basket), run.k + len(basket))
            products = [p for p in got if p not in set(basket)][: run.k]
        if not products:
            return None
        trigger = self.TRIGGER % (days_ago(int(days)), day_string(c.last_purchase))
        return PlainOffer(run.oc.cross_sell_discount, list(products), trigger)


# ---------------------------------------------------------------------------------------------- win-back
class WinBack(Rule):
    """P(alive) below ``winback_max_p_alive``, more than ``winback_overdue_days`` past the expected
    next purchase, or lapsed (``lapsed_segments``, ``lapsed_max_p_purchase_90d``): "we miss you" with
    ``winback_discount`` (on ``new_products`` when configured). A lapsed customer's trigger quotes the
    segment, the last order and P(purchase in 90 days) when the score table has it, never a P(alive)
    that contradicts the segment (1.00 for every one-time buyer under BG/NBD)."""

    name = "win_back"
    is_discount = True
    buy_anyway = True
    BOTH = "P(alive) fell to %.2f and the expected next purchase was %s"
    FALLING = "P(alive) fell to %.2f"
    OVERDUE = "The expected next purchase was %s (%s) and P(alive) is %.2f"
    LAPSED = "%s customer: last order %s (%s)"
    LAPSED_P90 = "%s customer: last order %s (%s), P(purchase in 90 days) %.2f"

    def _state(self, ctx: OfferContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        def make() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            overdue_days = ctx.days_before(ctx.next_purchase)
            overdue = np.nan_to_num(overdue_days, nan=-np.inf) > ctx.oc.winback_overdue_days
            return ctx.p_alive < ctx.oc.winback_max_p_alive, overdue, overdue_days

        return ctx.memo("win_back.state", make)

    def eligible(self, ctx: OfferContext) -> np.ndarray:
        falling, overdue, _ = self._state(ctx)
        return falling | overdue | ctx.lapsed

    def value(self, ctx: OfferContext, rows: np.ndarray) -> float:
        return ctx.oc.winback_discount

    def products(self, ctx: OfferContext, rows: np.ndarray) -> tuple[np.ndarray, bool]:
        if ctx.oc.new_products:
            return obj([ctx.oc.new_products] * len(rows)), False
        return ctx.recs[rows], True

    def trigger(self, ctx: OfferContext, rows: np.ndarray, texts: Texts) -> None:
        falling, overdue, overdue_days = self._state(ctx)
        f, o = falling[rows], overdue[rows]
        sub = rows[f & o]
        texts.set(sub, self.BOTH, ctx.p_alive[sub], day_strings(ctx.next_purchase[sub]))
        sub = rows[f & ~o]
        texts.set(sub, self.FALLING, ctx.p_alive[sub])
        lapsed = ctx.lapsed[rows] & ~f
        sub = rows[~f & ~lapsed]
        texts.set(sub, self.OVERDUE, day_strings(ctx.next_purchase[sub]),
                  phrases(days_ago, np.nan_to_num(overdue_days[sub]).astype(np.int64)), ctx.p_alive[sub])
        days = phrases(days_ago, np.nan_to_num(ctx.days_before(ctx.last_purchase[rows])).astype(np.int64))
        known = ~np.isnan(ctx.p90[rows])
        for template, m, extra in ((self.LAPSED_P90, lapsed & known, (ctx.p90,)), (self.LAPSED, lapsed & ~known, ())):
            sub = rows[m]
            texts.set(sub, template, ctx.segment[sub], day_strings(ctx.last_purchase[sub]), days[m],
                      *(col[sub] for col in extra))

    def sentence(self, oc: OffersConfig, s: Sentence) -> tuple[str, tuple]:
        return "%s; we miss you: a %g%% win-back discount%s%s.", (s.pct, s.products_after(" on "), s.note)

    def plain(self, c: PlainCustomer, run: PlainRun) -> PlainOffer | None:
        oc = run.oc
        falling = c.p_alive < oc.winback_max_p_alive
        overdue_days = (run.as_of - c.next_purchase) / pd.Timedelta(days=1) if pd.notna(c.next_purchase) else None
        overdue = overdue_days is not None and overdue_days > oc.winback_overdue_days
        if falling and overdue:
            trigger = self.BOTH % (c.p_alive, day_string(c.next_purchase))
        elif falling:
            trigger = self.FALLING % c.p_alive
        elif c.lapsed:
            days = days_ago(int((run.as_of - c.last_purchase) / pd.Timedelta(days=1)))
            trigger = self.LAPSED % (c.segment, day_string(c.last_purchase), days)
            if not math.isnan(c.p90):
                trigger = self.LAPSED_P90 % (c.segment, day_string(c.last_purchase), days, c.p90)
        elif overdue:
            trigger = self.OVERDUE % (day_string(c.next_purchase), days_ago(int(overdue_days)), c.p_alive)
        else:
            return None
        products = list(oc.new_products[: run.k]) if oc.new_products else c.recs
        return PlainOffer(oc.winback_discount, products, trigger)


# ---------------------------------------------------------------------------------------------- VIP
def vip_clv_threshold(clv_12m: pd.Series | np.ndarray, top_share: float) -> float:
    """The 12-month CLV a customer needs to be among the top ``top_share`` (pass it to ``assign_offers``
    as ``vip_min_clv`` when scoring a single customer on the request path). ``inf``: nobody qualifies."""
    clv = np.asarray(clv_12m, dtype=float)
    clv = clv[np.isfinite(clv) & (clv > 0)]
    n_all = len(np.asarray(clv_12m))
    k = max(1, math.ceil(top_share * n_all)) if n_all else 0
    if k == 0 or len(clv) == 0:
        return math.inf
    return float(np.sort(clv)[::-1][min(k, len(clv)) - 1])


class Vip(Rule):
    """The top ``vip_top_share`` of customers by 12-month CLV (or CLV >= ``vip_min_clv``): exclusive
    early access, or ``vip_discount``. Ties at the cut are broken by table order."""

    name = "vip"
    is_discount = True
    buy_anyway = True

    def eligible(self, ctx: OfferContext) -> np.ndarray:
        clv = ctx.clv
        if ctx.vip_min_clv is not None:
            return (clv >= ctx.vip_min_clv) & (clv > 0)
        top = np.zeros(ctx.n, dtype=bool)
        top[np.argsort(-clv, kind="stable")[: max(1, math.ceil(ctx.oc.vip_top_share * ctx.n))]] = True
        return top & (clv > 0)

    def value(self, ctx: OfferContext, rows: np.ndarray) -> float:
        return ctx.oc.vip_discount

    def _trigger_text(self, oc: OffersConfig) -> str:
        return f"Among the top {oc.vip_top_share * 100:g}%% of customers by 12-month CLV (%.2f)"

    def trigger(self, ctx: OfferContext, rows: np.ndarray, texts: Texts) -> None:
        texts.set(rows, self._trigger_text(ctx.oc), ctx.clv[rows])

    def sentence(self, oc: OffersConfig, s: Sentence) -> tuple[str, tuple]:
        perk = fill("an exclusive %g%% discount", s.pct)
        perk[s.value <= 0] = "exclusive early access"
        return "%s; VIP status with %s%s%s.", (perk, s.products_after(" to "), s.note)

    def plain(self, c: PlainCustomer, run: PlainRun) -> PlainOffer | None:
        if run.vip_min_clv is not None:
            vip = c.clv >= run.vip_min_clv
        else:
            def top() -> set[int]:
                ranked = sorted(range(len(run.customers)), key=lambda i: -run.customers[i].clv)
                return set(ranked[: max(1, math.ceil(run.oc.vip_top_share * len(run.customers)))])

            vip = c.i in run.memo("vip.top", top)
        if not (vip and c.clv > 0):
            return None
        return PlainOffer(run.oc.vip_discount, c.recs, self._trigger_text(run.oc) % c.clv)


# ---------------------------------------------------------------------------------------------- spend tier
class SpendTier(Rule):
    """The next cumulative-spend tier (``spend_tiers``) is at most ``spend_tier_max_orders_to_next``
    expected orders away: how much more to spend to unlock the tier's discount."""

    name = "spend_tier"
    is_discount = True
    AT_TIER = "Cumulative spend is %.2f (now at the %.2f tier with %g%% off)"
    SPEND = "Cumulative spend is %.2f"
    DETAIL = "spend %.2f more to reach the %.2f tier and unlock "

    @staticmethod
    def _tiers(oc: OffersConfig) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([t for t, _ in oc.spend_tiers], dtype=float),
                np.array([s for _, s in oc.spend_tiers], dtype=float))

    def _state(self, ctx: OfferContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tiers reached, index of the next tier, spend to reach it) per customer."""
        def make() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            tiers, _ = self._tiers(ctx.oc)
            cur = np.searchsorted(tiers, ctx.spend, side="right")
            nxt = np.minimum(cur, len(tiers) - 1)
            return cur, nxt, np.where(cur < len(tiers), tiers[nxt] - ctx.spend, np.inf)

        return ctx.memo("spend_tier.state", make)

    def eligible(self, ctx: OfferContext) -> np.ndarray:
        if not ctx.oc.spend_tiers:
            return np.zeros(ctx.n, dtype=bool)
        cur, _, gap = self._state(ctx)
        has_next = cur < len(ctx.oc.spend_tiers)
        return has_next & (ctx.eov > 0) & (gap <= ctx.oc.spend_tier_max_orders_to_next * ctx.eov)

    def value(self, ctx: OfferContext, rows: np.ndarray) -> np.ndarray:
        return self._tiers(ctx.oc)[1][self._state(ctx)[1][rows]]

    def trigger(self, ctx: OfferContext, rows: np.ndarray, texts: Texts) -> None:
        tiers, shares = self._tiers(ctx.oc)
        c = self._state(ctx)[0][rows]
        prev = np.maximum(c - 1, 0)
        at = c > 0
        texts.set(rows[at], self.AT_TIER, ctx.spend[rows[at]], tiers[prev[at]], percent(shares[prev[at]]))
        texts.set(rows[~at], self.SPEND, ctx.spend[rows[~at]])

    def detail(self, ctx: OfferContext, rows: np.ndarray) -> np.ndarray:
        _, nxt, gap = self._state(ctx)
        return fill(self.DETAIL, gap[rows], self._tiers(ctx.oc)[0][nxt[rows]])

    def sentence(self, oc: OffersConfig, s: Sentence) -> tuple[str, tuple]:
        return "%s; %s%g%% off every order%s.", (s.detail, s.pct, s.note)

    def plain(self, c: PlainCustomer, run: PlainRun) -> PlainOffer | None:
        tiers = [t for t, _ in run.oc.spend_tiers]
        shares = [s for _, s in run.oc.spend_tiers]
        cur = bisect.bisect_right(tiers, c.total_spend)
        if cur >= len(tiers) or c.eov <= 0:
            return None
        gap = tiers[cur] - c.total_spend
        if gap > run.oc.spend_tier_max_orders_to_next * c.eov:
            return None
        trigger = (self.AT_TIER % (c.total_spend, tiers[cur - 1], percent(shares[cur - 1])) if cur
                   else self.SPEND % c.total_spend)
        return PlainOffer(shares[cur], c.recs, trigger, self.DETAIL % (gap, tiers[cur]))


# ---------------------------------------------------------------------------------------------- referral
class Referral(Rule):
    """Segment in ``referral_segments``: a refer-a-friend bonus of ``referral_bonus`` (currency)."""

    name = "referral"
    TRIGGER = "%s (R%d F%d)"

    def eligible(self, ctx: OfferContext) -> np.ndarray:
        return isin(ctx.segment, ctx.oc.referral_segments)

    def value(self, ctx: OfferContext, rows: np.ndarray) -> float:
        return ctx.oc.referral_bonus

    def products(self, ctx: OfferContext, rows: np.ndarray) -> tuple[np.ndarray, bool]:
        return empty_lists(len(rows)), False

    def trigger(self, ctx: OfferContext, rows: np.ndarray, texts: Texts) -> None:
        texts.set(rows, self.TRIGGER, ctx.segment[rows], ctx.num("r_score")[rows], ctx.num("f_score")[rows])

    def sentence(self, oc: OffersConfig, s: Sentence) -> tuple[str, tuple]:
        return "%s; an invitation to refer a friend: both get %.2f off when the friend orders.", (s.value,)

    def plain(self, c: PlainCustomer, run: PlainRun) -> PlainOffer | None:
        if c.segment not in run.oc.referral_segments:
            return None
        return PlainOffer(run.oc.referral_bonus, [], self.TRIGGER % (c.segment, c.r_score, c.f_score))


# ---------------------------------------------------------------------------------------------- loyalty points
class LoyaltyPoints(Rule):
    """Active repeat buyers (frequency >= ``loyalty_min_repeat_purchases``, P(alive) >=
    ``loyalty_min_p_alive``): ``loyalty_points_multiplier`` x points on the next order (value: points)."""

    name = "loyalty_points"
    TRIGGER = "Active repeat buyer with %s and P(alive) %.2f"

    def eligible(self, ctx: OfferContext) -> np.ndarray:
        oc = ctx.oc
        return (ctx.freq >= oc.loyalty_min_repeat_purchases) & (ctx.p_alive >= oc.loyalty_min_p_alive) & (ctx.eov > 0)

    def value(self, ctx: OfferContext, rows: np.ndarray) -> np.ndarray:
        return self._points(ctx.oc, ctx.eov[rows])

    @staticmethod
    def _points(oc: OffersConfig, eov: Any) -> Any:
        return np.round(oc.points_per_currency_unit * eov * oc.loyalty_points_multiplier)

    def trigger(self, ctx: OfferContext, rows: np.ndarray, texts: Texts) -> None:
        texts.set(rows, self.TRIGGER, phrases(count_phrase, ctx.freq[rows], "repeat purchase", "repeat purchases"),
                  ctx.p_alive[rows])

    def sentence(self, oc: OffersConfig, s: Sentence) -> tuple[str, tuple]:
        return (f"%s; {oc.loyalty_points_multiplier:g}x points on the next order: about %d points%s.",
                (s.value, s.products_after(" on ")))

    def plain(self, c: PlainCustomer, run: PlainRun) -> PlainOffer | None:
        oc = run.oc
        if not (c.frequency >= oc.loyalty_min_repeat_purchases and c.p_alive >= oc.loyalty_min_p_alive and c.eov > 0):
            return None
        trigger = self.TRIGGER % (count_phrase(c.frequency, "repeat purchase", "repeat purchases"), c.p_alive)
        return PlainOffer(float(self._points(oc, c.eov)), c.recs, trigger)


RULES: dict[str, Rule] = {name: Rule.classes[name]() for name in RULE_NAMES if name in Rule.classes}
"""The registry: rule name -> rule, in the default priority order."""
if tuple(RULES) != RULE_NAMES or set(Rule.classes) != set(RULE_NAMES):
    raise ImportError(f"offer rule classes {sorted(Rule.classes)} do not match rebuy.offers.names.RULE_NAMES "
                      f"{list(RULE_NAMES)}: list each rule's name there")

DISCOUNT_RULES = tuple(name for name, rule in RULES.items() if rule.is_discount)
"""Rules whose ``offer_value`` is a discount share (a discount only when the share is > 0)."""
BUY_ANYWAY_RULES = tuple(name for name, rule in RULES.items() if rule.buy_anyway)
"""Discretionary discounts withdrawn (-> reminder) for customers who will buy anyway."""
