"""The offers engine: one offer per customer, vectorised over the score table.

``assign_offers`` runs, in order: :func:`~rebuy.offers.context.build_context` (validate and align
the inputs), channels (:mod:`rebuy.offers.channels`), :func:`pick` (the configured rules in
``config.offers.priority`` order; the first rule a customer qualifies for wins), the guards
(:mod:`rebuy.offers.guards`), then the reasons (:func:`write_reasons`) and the output table.

Outcomes besides the rules: a wholesale customer (the score table's ``wholesale`` column) -> ``none``
(no consumer offer); P(alive) below ``p_alive_floor`` -> ``none`` (an offer would be wasted; no rule
is even tried); no rule applies -> ``none``; a withdrawn discount -> ``reminder``. Lapsed customers
are tried only on ``lapsed_rules`` (never an upsell). The offer is decided from behaviour alone:
delivery is what needs consent. A decision without a channel (consent unknown, no consented channel,
younger than ``min_contact_age``) keeps its offer, gets channel ``none`` and a reason ending "Not
sent: ..."; ``rebuy.offers.control.hold_out`` then sets ``deliver`` false. Customers with offer
``none`` get channel ``none``. Unknown consent is warned about once per call. Every row gets a
reason sentence.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rebuy.offers import guards
from rebuy.offers.channels import Channels, assign_channels
from rebuy.offers.context import OfferContext, build_context
from rebuy.offers.draft import NONE, REMINDER, OfferDraft
from rebuy.offers.lists import obj, strings
from rebuy.offers.rules import RULES, Sentence
from rebuy.offers.text import (
    BELOW_FLOOR,
    CONSENT_UNKNOWN,
    NO_CONSENT,
    NO_RULE,
    NO_RULE_P90,
    NOT_SENT,
    TOO_YOUNG,
    WHOLESALE,
    Texts,
    count_phrase,
    day_strings,
    fill,
    join_products,
    phrases,
    prefixed,
    string_array,
)
from rebuy.offers.text import REMINDER as REMINDER_TEXT
from rebuy.schema import column

if TYPE_CHECKING:
    from rebuy.config import Config, OffersConfig

log = logging.getLogger("rebuy.offers")

OFFER_COLUMNS = [column(name).name for name in (
    "offer_type", "offer_value", "offer_products", "channel", "max_contacts_per_month", "offer_reason",
    "discount_cost",
)]
"""Columns returned by :func:`assign_offers`, in order: score-table columns of ``rebuy.schema``
(a KeyError at import if one is not)."""

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
    product_names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One offer per customer, vectorised over the score table (see ``rebuy.offers`` for the rules).

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
    vip_min_clv : CLV threshold for VIP; None ranks within ``scores`` (use ``vip_clv_threshold``
        from the nightly table when scoring a single customer).
    product_names : product id -> description, used in reasons over the names of ``transactions``
        (``rebuy.recommend.products.product_names``); ``offer_products`` keeps the ids.

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
                              transactions=transactions, vip_min_clv=vip_min_clv, product_names=product_names)
    finally:
        if was_enabled:
            gc.enable()


def _assign_offers(scores: pd.DataFrame, config: Config, *, as_of: pd.Timestamp | str,
                   customers: pd.DataFrame | None, **side: object) -> pd.DataFrame:
    """:func:`assign_offers` with the garbage collector paused."""
    ctx = build_context(scores, config, as_of=as_of, customers=customers, **side)
    ch = assign_channels(ctx.age, ctx.consent, ctx.oc)
    texts = Texts(ctx.n)
    d = pick(ctx, texts)
    discount = d.flag("is_discount") & (d.value > 0)
    guards.withdraw_for_buy_anyway(ctx, d, discount)
    guards.cap_discounts(ctx, d, discount)
    # a decision whose consent is unknown may still be sent by a service that holds consent: it counts
    guards.spend_budget(ctx, d, discount, (ch.channel == "none") & (ctx.unknown == ""))
    guards.to_reminders(ctx, d)
    reason = write_reasons(ctx, d, texts, ch)
    out = _frame(ctx, d, ch, reason)
    log.info("offers: %s", out["offer_type"].value_counts().to_dict())
    warn_unknown_consent(ctx, d)
    return out


def warn_unknown_consent(ctx: OfferContext, d: OfferDraft) -> None:
    """One warning per call when decisions are not sent because consent is unknown."""
    unknown = (ctx.unknown != "") & (d.code != NONE)
    if not unknown.any():
        return
    sources = sorted(set(ctx.unknown[unknown].tolist()))
    log.warning("offers: consent unknown for %d of %d customers with an offer (%s): their offers are decided but "
                "not sent (channel none, deliver false); load a customers table with consent_* columns, or set "
                "offers.assume_consent_without_customers", int(unknown.sum()), int((d.code != NONE).sum()),
                "; ".join(sources))


def pick(ctx: OfferContext, texts: Texts) -> OfferDraft:
    """The first rule in priority order each customer qualifies for (none below the P(alive) floor)."""
    d = OfferDraft.empty(ctx.n, ctx.oc.priority)
    open_ = ~ctx.below_floor & ~ctx.wholesale
    for code, name in enumerate(d.type_names[REMINDER + 1:], start=REMINDER + 1):
        rule = RULES[name]
        allowed = open_ if name in ctx.oc.lapsed_rules else open_ & ~ctx.lapsed
        rows = np.flatnonzero(rule.eligible(ctx) & allowed)
        if len(rows):
            rows = rows[rule.confirm(ctx, rows)]
        if not len(rows):
            continue
        open_[rows] = False
        d.code[rows] = code
        d.value[rows] = rule.value(ctx, rows)
        d.products[rows], d.owned[rows] = rule.products(ctx, rows)
        detail = rule.detail(ctx, rows)
        if detail is not None:
            d.detail[rows] = detail
        rule.trigger(ctx, rows, texts)
    return d


def write_reasons(ctx: OfferContext, d: OfferDraft, texts: Texts, ch: Channels) -> np.ndarray:
    """Every customer's reason; a decision without a channel ends with why it is not sent."""
    reason = strings(ctx.n)
    _no_offer_reasons(ctx, d, reason)
    for code in np.unique(d.code).tolist():
        if code == NONE:
            continue
        rows = np.flatnonzero(d.code == code)
        prods = join_products(d.products[rows], ctx.k, ctx.names)
        if code == REMINDER:
            texts.fill(reason, rows, REMINDER_TEXT, d.note[rows], prefixed(prods, " of "))
            continue
        s = Sentence(d.value[rows], prods, d.note[rows], d.detail[rows])
        template, cols = RULES[d.type_names[code]].sentence(ctx.oc, s)
        texts.fill(reason, rows, template, *cols)
    silent = np.flatnonzero((d.code != NONE) & (ch.channel == "none"))
    reason[silent] = reason[silent] + fill(NOT_SENT, not_sent_why(ctx.unknown[silent], ch.too_young[silent], ctx.oc))
    return reason


def not_sent_why(unknown: np.ndarray, too_young: np.ndarray, oc: OffersConfig) -> np.ndarray:
    """Why a decision has no channel: too young, consent unknown (and why), or no consented channel."""
    young = TOO_YOUNG.format(age=oc.min_contact_age)
    return np.fromiter((young if y else CONSENT_UNKNOWN.format(source=u) if u else NO_CONSENT
                        for u, y in zip(unknown.tolist(), too_young.tolist(), strict=True)),
                       dtype=object, count=len(unknown))


def _no_offer_reasons(ctx: OfferContext, d: OfferDraft, reason: np.ndarray) -> None:
    """Reasons of the customers without an offer: wholesale, below the floor, or no rule applies
    (quoting P(purchase in 90 days) when the table has it, else P(alive))."""
    ws = np.flatnonzero(ctx.wholesale)
    reason[ws] = fill(WHOLESALE, ctx.spend[ws], phrases(count_phrase, ctx.freq[ws] + 1, "purchase day", "purchase days"))
    fl = np.flatnonzero(ctx.below_floor & ~ctx.wholesale)
    reason[fl] = fill(BELOW_FLOOR.format(floor=ctx.oc.p_alive_floor), ctx.p_alive[fl])
    idle = (d.code == NONE) & ~ctx.below_floor & ~ctx.wholesale
    repeat = phrases(count_phrase, ctx.freq, "repeat purchase", "repeat purchases") if idle.any() else None
    for template, prob, m in ((NO_RULE_P90, ctx.p90, idle & ~np.isnan(ctx.p90)),
                              (NO_RULE, ctx.p_alive, idle & np.isnan(ctx.p90))):
        rows = np.flatnonzero(m)
        reason[rows] = fill(template, prob[rows], day_strings(ctx.last_purchase[rows]), repeat[rows]) if len(rows) else []


def _frame(ctx: OfferContext, d: OfferDraft, ch: Channels, reason: np.ndarray) -> pd.DataFrame:
    """The output table; product lists not owned by their row are copied (first k, as lists)."""
    k = ctx.k
    products = d.products.copy()
    copy = np.flatnonzero(~d.owned)
    products[copy] = obj([p[:k] if type(p) is list else list(p[:k]) for p in d.products[copy]])
    none = d.code == NONE
    channel = np.where(none, "none", ch.channel).astype(object)
    return pd.DataFrame(
        {
            "offer_type": string_array(np.array(d.type_names, dtype=object)[d.code]),
            "offer_value": np.round(d.value, 4),
            "offer_products": products,
            "channel": string_array(channel),
            "max_contacts_per_month": np.where(none, 0, ch.contacts).astype(np.int64),
            "offer_reason": string_array(reason),
            "discount_cost": np.round(d.discount_cost, 2),
        },
        index=ctx.scores.index,
    )
