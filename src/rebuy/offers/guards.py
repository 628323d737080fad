"""Guards applied, in this order, to the offers the rules picked (an :class:`OfferDraft`).

1. Will buy anyway: discretionary discounts (rules with ``buy_anyway``) for customers with
   ``expected_purchases_30d >= buy_anyway_purchases_30d`` become a reminder (no discount).
2. Per-customer cap: a discount (share x expected order value) may not exceed
   ``max_discount_margin_multiple`` x margin of one expected order (``clv.margin`` x
   ``expected_order_value``) nor ``max_discount_clv_share`` x ``clv_12m``. It is reduced to the cap
   rounded down to ``discount_step``; below ``min_discount`` it becomes a reminder.
3. Run budget (``budget``, currency): ``discount_cost`` = share x expected order value x
   ``redemption_rate`` for discounts that may be sent (a channel exists, or consent is unknown); they are kept in
   descending ``budget_rank_by`` (table order among ties) while the running total fits, the rest
   become reminders.
4. Reminders keep the trigger and the products (the recommendations when there were none).

``discount`` (the rule's ``is_discount`` and a value > 0) is decided before the guards. Customers
below the P(alive) floor never reach the guards (no rule is applied to them).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from rebuy.offers.draft import REMINDER, OfferDraft
from rebuy.offers.text import fill, percent

if TYPE_CHECKING:
    from rebuy.offers.context import OfferContext

log = logging.getLogger("rebuy.offers")

RANK_LABEL = {"clv_12m": "12-month CLV", "net_ltv": "net lifetime value", "expected_order_value": "expected order value"}
BUY_ANYWAY = "expected %.2f purchases in the next 30 days anyway, so no discount"
OVER_CAP = "a %g%% discount would exceed the budget guard (%s), so no discount"
CAPPED = " (capped from %g%% by the budget guard: %s)"
OVER_BUDGET = "the run's discount budget of {budget:.2f} went to customers with a higher {rank} first, so no discount"


def caps(ctx: OfferContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(margin cap, CLV cap, cap as a share of the expected order value) per customer; caps in currency."""
    oc = ctx.oc
    margin_cap = oc.max_discount_margin_multiple * ctx.config.clv.margin * ctx.eov
    clv_cap = oc.max_discount_clv_share * np.maximum(ctx.clv, 0.0)
    cap_share = np.where(ctx.eov > 0, np.minimum(margin_cap, clv_cap) / np.where(ctx.eov > 0, ctx.eov, 1.0), 0.0)
    return margin_cap, clv_cap, cap_share


def withdraw_for_buy_anyway(ctx: OfferContext, d: OfferDraft, discount: np.ndarray) -> None:
    """Guard 1: discretionary discounts of customers who will buy anyway -> reminder."""
    anyway = discount & d.flag("buy_anyway") & (ctx.e30 >= ctx.oc.buy_anyway_purchases_30d)
    if anyway.any():
        d.note[anyway] = fill(BUY_ANYWAY, ctx.e30[anyway])
        d.reminder |= anyway


def cap_discounts(ctx: OfferContext, d: OfferDraft, discount: np.ndarray) -> None:
    """Guard 2: discounts above the per-customer cap are reduced, or become a reminder."""
    oc = ctx.oc
    margin_cap, clv_cap, cap_share = caps(ctx)
    sub = np.flatnonzero(discount & ~d.reminder & (d.value > cap_share + 1e-12))
    if not len(sub):
        return
    capped = np.floor(cap_share[sub] / oc.discount_step + 1e-9) * oc.discount_step
    by_clv = clv_cap[sub] < margin_cap[sub]
    why = fill(f"at most {oc.max_discount_margin_multiple:g}x the margin of an expected order of %.2f", ctx.eov[sub])
    why[by_clv] = fill(f"at most {oc.max_discount_clv_share * 100:g}%% of the 12-month CLV of %.2f",
                       ctx.clv[sub[by_clv]])
    too_small = capped < max(oc.min_discount, 1e-12)
    down, keep = sub[too_small], sub[~too_small]
    d.note[down] = fill(OVER_CAP, percent(d.value[down]), why[too_small])
    d.reminder[down] = True
    d.note[keep] = fill(CAPPED, percent(d.value[keep]), why[~too_small])
    d.value[keep] = capped[~too_small]


def spend_budget(ctx: OfferContext, d: OfferDraft, discount: np.ndarray, unreachable: np.ndarray) -> None:
    """Guard 3: the discount cost of every discount that may be sent (not ``unreachable``: known to
    have no channel); the run budget to the highest rank first."""
    oc = ctx.oc
    live = discount & ~d.reminder & ~unreachable
    d.discount_cost[live] = d.value[live] * ctx.eov[live] * oc.redemption_rate
    if oc.budget is None or not live.any():
        return
    cand = np.flatnonzero(live)
    order = cand[np.argsort(-ctx.num(oc.budget_rank_by)[cand], kind="stable")]
    over = order[~(np.cumsum(d.discount_cost[order]) <= oc.budget + 1e-9)]
    if len(over):
        d.note[over] = OVER_BUDGET.format(budget=oc.budget, rank=RANK_LABEL[oc.budget_rank_by])
        d.reminder[over] = True
        d.discount_cost[over] = 0.0
        log.info("offers: discount budget %.2f reached; %d discount(s) downgraded to reminders", oc.budget, len(over))


def to_reminders(ctx: OfferContext, d: OfferDraft) -> None:
    """Guard 4: withdrawn discounts become reminders of the offer's products (or recommendations)."""
    rows = np.flatnonzero(d.reminder)
    if not len(rows):
        return
    d.code[rows] = REMINDER
    d.value[rows] = 0.0
    empty = rows[np.fromiter((len(p) == 0 for p in d.products[rows]), dtype=bool, count=len(rows))]
    d.products[empty] = ctx.recs[empty]
    d.owned[empty] = True
