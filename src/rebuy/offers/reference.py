"""The offers engine in plain Python, one customer at a time: the reference the tests hold
``assign_offers`` equal to. Not for production (it is slow on purpose: no hashing tricks, no
vectorisation, no caches, no fused formatting).

:func:`plain_offers` takes the arguments of ``assign_offers`` (valid inputs; it does not validate)
and returns the same table. Per customer, in order: the channel; a wholesale customer or one below the P(alive) floor
gets no offer; else the first rule in ``priority`` (only ``lapsed_rules`` for a lapsed customer)
whose ``Rule.plain`` gives an offer; then the guards (buy anyway, per-customer cap); after every
customer, the run budget in rank order; then reminders, "Not sent" (no channel) and the reason. Inputs are read with Python equality on ids as str (the last of
duplicated customers rows and last-order baskets wins).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rebuy.dates import DAYS_PER_YEAR
from rebuy.offers import guards
from rebuy.offers.channels import fallback_cadence
from rebuy.offers.context import RunSettings
from rebuy.offers.lists import as_list, obj
from rebuy.offers.names import CHANNELS
from rebuy.offers.rules import RULES, PlainOffer, Rule, Sentence
from rebuy.offers.text import (
    BELOW_FLOOR,
    CONSENT_UNKNOWN,
    NO_CONSENT,
    NO_RULE,
    NO_RULE_P90,
    NOT_SENT,
    REMINDER,
    TOO_YOUNG,
    UNKNOWN_SOURCES,
    WHOLESALE,
    count_phrase,
    day_string,
    percent,
    product_text,
)

if TYPE_CHECKING:
    from rebuy.config import Config, OffersConfig


@dataclass(eq=False)
class PlainCustomer:
    """One scored customer with everything the rules read about them."""

    i: int
    id: str
    segment: str
    r_score: float
    f_score: float
    frequency: float
    total_spend: float
    last_purchase: pd.Timestamp
    next_purchase: pd.Timestamp
    p_alive: float
    e30: float
    eov: float
    clv: float
    rank_value: float
    recs: list
    p90: float = math.nan
    wholesale: bool = False
    lapsed: bool = False
    unknown: str = ""
    age: float = math.nan
    birth: Any = pd.NaT
    consent: dict[str, bool] = field(default_factory=dict)
    events: list[tuple[pd.Timestamp, Any, Any]] = field(default_factory=list)
    purchases: list[tuple[Any, pd.Timestamp]] | None = None
    baskets: list[Any] = field(default_factory=list)

    def bought_after(self, product: Any, ts: pd.Timestamp) -> bool:
        """Bought ``product`` at or after ``ts``: from the transactions, else from the last order."""
        if self.purchases is not None:
            return any(p == product and t >= ts for p, t in self.purchases)
        in_last = any(product in as_list(b) for b in self.baskets)
        return in_last and ts.normalize() <= self.last_purchase.normalize()


@dataclass(eq=False)
class PlainRun(RunSettings):
    """What every customer's rules share: config, as-of, the recommender and all customers."""

    config: Config
    as_of: pd.Timestamp
    cross_sell: Callable[[list, int], Sequence] | None
    has_events: bool
    vip_min_clv: float | None
    names: dict[str, str] = field(default_factory=dict)
    customers: list[PlainCustomer] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class _Decision:
    """One customer's offer after the rules and the per-customer guards."""

    channel: str
    contacts: int
    too_young: bool
    wholesale: bool = False
    floor: bool = False
    rule: Rule | None = None
    offer: PlainOffer | None = None
    value: float = 0.0
    note: str = ""
    reminder: bool = False
    live: bool = False
    cost: float = 0.0


def plain_offers(scores: pd.DataFrame, config: Config, *, as_of: Any, customers: pd.DataFrame | None = None,
                 events: pd.DataFrame | None = None, last_order_products: pd.Series | None = None,
                 cross_sell: Callable[[list, int], Sequence] | None = None,
                 transactions: pd.DataFrame | None = None, vip_min_clv: float | None = None,
                 product_names: dict[str, str] | None = None) -> pd.DataFrame:
    """``assign_offers``, one customer at a time (see the module docstring)."""
    run = PlainRun(config, pd.Timestamp(as_of).normalize(), cross_sell, events is not None, vip_min_clv)
    run.names = _names(transactions, product_names)
    run.customers = _plain_customers(scores, run, customers, events, last_order_products, transactions)
    decisions = [_decide(c, run) for c in run.customers]
    _spend_budget(run, decisions)
    rows = [_finish(c, d, run) for c, d in zip(run.customers, decisions, strict=True)]
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in range(7)]
    return pd.DataFrame({
        "offer_type": pd.array(list(cols[0]), dtype="string"),
        "offer_value": np.round(np.array(cols[1], dtype=float), 4),
        "offer_products": obj(list(cols[2])),
        "channel": pd.array(list(cols[3]), dtype="string"),
        "max_contacts_per_month": np.array(cols[4], dtype=np.int64),
        "offer_reason": pd.array(list(cols[5]), dtype="string"),
        "discount_cost": np.round(np.array(cols[6], dtype=float), 2),
    }, index=scores.index)


# ---------------------------------------------------------------------------------------------- inputs
def _names(transactions: pd.DataFrame | None, given: dict[str, str] | None) -> dict[str, str]:
    """Product id -> its most frequent description in the transactions (first seen among ties), over
    the given names."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    if transactions is not None and "description" in transactions.columns:
        for p, d in zip(transactions["product_id"], transactions["description"], strict=True):
            if pd.isna(p) or pd.isna(d) or not str(d).strip():
                continue
            seen = counts[str(p)]
            seen[str(d).strip()] = seen.get(str(d).strip(), 0) + 1
    names = {str(k): str(v) for k, v in (given or {}).items() if isinstance(v, str) and v.strip()}
    names.update({p: max(seen, key=seen.__getitem__) for p, seen in counts.items()})  # max: first of the ties
    return names


def _by_id(table: pd.DataFrame | None, cols: list[str]) -> dict[str, list[tuple]]:
    """Rows of ``table`` grouped by str(customer_id), in table order."""
    out: dict[str, list[tuple]] = defaultdict(list)
    if table is not None:
        for cid, *values in zip(table["customer_id"], *(table[c] for c in cols), strict=True):
            out[str(cid)].append(tuple(values))
    return out


def _plain_customers(scores: pd.DataFrame, run: PlainRun, customers: pd.DataFrame | None,
                     events: pd.DataFrame | None, lop: pd.Series | None,
                     transactions: pd.DataFrame | None) -> list[PlainCustomer]:
    people = {} if customers is None else {str(r["customer_id"]): r for r in customers.to_dict("records")}
    ev = {cid: [(pd.to_datetime(t, errors="coerce"), p, e) for t, p, e in rows]
          for cid, rows in _by_id(events, ["timestamp", "product_id", "event"]).items()}
    tx = _by_id(transactions, ["product_id", "timestamp"]) if transactions is not None else None
    baskets: dict[str, list] = defaultdict(list)
    for cid, basket in (lop.items() if lop is not None else ()):
        baskets[str(cid)].append(basket)
    rank_col = run.oc.budget_rank_by if run.oc.budget is not None else "clv_12m"
    out = []
    for i, r in enumerate(scores.to_dict("records")):
        cid = str(r["customer_id"])
        c = PlainCustomer(
            i=i, id=cid, segment=str(r["segment"]), r_score=float(r["r_score"]), f_score=float(r["f_score"]),
            frequency=float(r["frequency"]), total_spend=float(r["total_spend"]),
            last_purchase=pd.Timestamp(r["last_purchase"]), next_purchase=pd.Timestamp(r["next_purchase_date"]),
            p_alive=float(r["p_alive"]), e30=float(r["expected_purchases_30d"]),
            eov=max(float(r["expected_order_value"]), 0.0), clv=float(r["clv_12m"]), rank_value=float(r[rank_col]),
            recs=as_list(r["recommended_products"])[: run.k], events=ev.get(cid, []),
            p90=float(r.get("p_purchase_90d", math.nan)), wholesale=_consented(r.get("wholesale")),
            purchases=None if tx is None else [(p, pd.Timestamp(t)) for p, t in tx.get(cid, [])],
            baskets=baskets.get(cid, []),
        )
        c.lapsed = c.segment in run.oc.lapsed_segments or (
            run.oc.lapsed_max_p_purchase_90d is not None and c.p90 < run.oc.lapsed_max_p_purchase_90d)
        _add_person(c, people.get(cid), customers, run)
        out.append(c)
    return out


def _add_person(c: PlainCustomer, person: dict | None, customers: pd.DataFrame | None, run: PlainRun) -> None:
    """Age, birth date and consent from the customer's row of the customers table."""
    assumed = run.oc.assume_consent_without_customers
    has_consent = customers is not None and any(f"consent_{ch}" in customers.columns for ch in CHANNELS)
    if person is None or not has_consent:
        c.consent = {ch: assumed for ch in CHANNELS}
        source = UNKNOWN_SOURCES[0] if customers is None else UNKNOWN_SOURCES[1 if person is None else 2]
        c.unknown = "" if assumed else source
    else:
        c.consent = {ch: _consented(person.get(f"consent_{ch}")) for ch in CHANNELS}
    if person is None:
        return
    c.birth = pd.to_datetime(person.get("birth_date"), errors="coerce")
    age = person.get("age")
    if age is not None and pd.notna(age):
        c.age = float(age)
    elif pd.notna(c.birth):
        c.age = (run.as_of - c.birth) / pd.Timedelta(days=1) / DAYS_PER_YEAR


def _consented(value: Any) -> bool:
    """A consent cell: missing means not consented."""
    return False if value is None or pd.isna(value) else bool(value)


# ---------------------------------------------------------------------------------------------- decisions
def _channel(c: PlainCustomer, oc: OffersConfig) -> tuple[str, int, bool]:
    """(channel, contacts per month, too young) of one customer."""
    known = not math.isnan(c.age)
    group = next((g for g in oc.channels if known and (g.min_age is None or c.age >= g.min_age)
                  and (g.max_age is None or c.age < g.max_age)), None)
    channel, contacts = "none", 0
    if group is not None and c.consent[group.channel]:
        channel, contacts = group.channel, group.max_contacts_per_month
    elif group is None or oc.fallback_to_consented_channel:
        first = next((ch for ch in oc.default_channel_order if c.consent[ch]), None)
        if first is not None:
            channel, contacts = first, fallback_cadence(oc)[first]
    too_young = known and oc.min_contact_age is not None and c.age < oc.min_contact_age
    return ("none", 0, True) if too_young else (channel, contacts, False)


def _decide(c: PlainCustomer, run: PlainRun) -> _Decision:
    """The channel, the first rule that gives an offer, and the per-customer guards."""
    oc = run.oc
    d = _Decision(*_channel(c, oc))
    if c.wholesale:
        d.wholesale = True
        return d
    if c.p_alive < oc.p_alive_floor:
        d.floor = True
        return d
    for name in oc.priority:
        if c.lapsed and name not in oc.lapsed_rules:
            continue
        offer = RULES[name].plain(c, run)
        if offer is not None:
            d.rule, d.offer, d.value = RULES[name], offer, offer.value
            break
    if d.rule is None or not (d.rule.is_discount and d.value > 0):
        return d
    if d.rule.buy_anyway and c.e30 >= oc.buy_anyway_purchases_30d:
        d.note, d.reminder = guards.BUY_ANYWAY % c.e30, True
        return d
    _cap(c, d, run)
    d.live = not d.reminder and (d.channel != "none" or c.unknown != "")  # a discount that may be sent
    if d.live:
        d.cost = d.value * c.eov * oc.redemption_rate
    return d


def _cap(c: PlainCustomer, d: _Decision, run: PlainRun) -> None:
    """The per-customer cap: reduce the discount to it, or make it a reminder."""
    oc = run.oc
    margin_cap = oc.max_discount_margin_multiple * run.config.clv.margin * c.eov
    clv_cap = oc.max_discount_clv_share * max(c.clv, 0.0)
    cap_share = min(margin_cap, clv_cap) / c.eov if c.eov > 0 else 0.0
    if not d.value > cap_share + 1e-12:
        return
    capped = math.floor(cap_share / oc.discount_step + 1e-9) * oc.discount_step
    if clv_cap < margin_cap:
        why = f"at most {oc.max_discount_clv_share * 100:g}% of the 12-month CLV of {c.clv:.2f}"
    else:
        why = f"at most {oc.max_discount_margin_multiple:g}x the margin of an expected order of {c.eov:.2f}"
    if capped < max(oc.min_discount, 1e-12):
        d.note, d.reminder = guards.OVER_CAP % (percent(d.value), why), True
    else:
        d.note, d.value = guards.CAPPED % (percent(d.value), why), capped


def _spend_budget(run: PlainRun, decisions: list[_Decision]) -> None:
    """The run budget, spent on the highest rank first (table order among ties)."""
    oc = run.oc
    if oc.budget is None:
        return
    live = [i for i, d in enumerate(decisions) if d.live]
    total = 0.0
    for i in sorted(live, key=lambda i: -run.customers[i].rank_value):
        total += decisions[i].cost
        if not total <= oc.budget + 1e-9:
            d = decisions[i]
            d.note = guards.OVER_BUDGET.format(budget=oc.budget, rank=guards.RANK_LABEL[oc.budget_rank_by])
            d.reminder, d.cost = True, 0.0


def _finish(c: PlainCustomer, d: _Decision, run: PlainRun) -> tuple:
    """(offer_type, offer_value, offer_products, channel, contacts, reason, discount_cost)."""
    oc = run.oc
    if d.wholesale:
        reason = WHOLESALE % (c.total_spend, count_phrase(c.frequency + 1, "purchase day", "purchase days"))
        return "none", 0.0, [], "none", 0, reason, 0.0
    if d.floor:
        return "none", 0.0, [], "none", 0, BELOW_FLOOR.format(floor=oc.p_alive_floor) % c.p_alive, 0.0
    if d.rule is None:
        template, prob = (NO_RULE, c.p_alive) if math.isnan(c.p90) else (NO_RULE_P90, c.p90)
        reason = template % (prob, day_string(c.last_purchase), count_phrase(c.frequency, "repeat purchase",
                                                                             "repeat purchases"))
        return "none", 0.0, [], "none", 0, reason, 0.0
    trigger = d.offer.trigger
    products = list(d.offer.products)
    if d.reminder:
        products = products or list(c.recs)
        shown = product_text(products, run.names)
        reason = REMINDER % (trigger, d.note, f" of {shown}" if shown else "")
        return "reminder", 0.0, products, d.channel, d.contacts, _not_sent(reason, c, d, oc), 0.0
    s = Sentence(np.array([d.value]), obj([product_text(products, run.names)]), obj([d.note]), obj([d.offer.detail]))
    template, cols = d.rule.sentence(oc, s)
    reason = template % (trigger, *(col[0] for col in cols))
    return d.rule.name, d.value, products, d.channel, d.contacts, _not_sent(reason, c, d, oc), d.cost


def _not_sent(reason: str, c: PlainCustomer, d: _Decision, oc: OffersConfig) -> str:
    """The reason, with why it is not sent when the decision has no channel."""
    if d.channel != "none":
        return reason
    if d.too_young:
        why = TOO_YOUNG.format(age=oc.min_contact_age)
    else:
        why = CONSENT_UNKNOWN.format(source=c.unknown) if c.unknown else NO_CONSENT
    return reason + NOT_SENT % why
