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
- ``win_back``: P(alive) below ``winback_max_p_alive`` (falling), more than ``winback_overdue_days``
  past the expected next purchase, or lapsed (below): "we miss you" with ``winback_discount``.
- ``vip``: the top ``vip_top_share`` of customers by 12-month CLV: exclusive early access
  (or ``vip_discount``).
- ``spend_tier``: the next cumulative-spend tier is at most ``spend_tier_max_orders_to_next``
  expected orders away: the offer says how much more to spend to unlock the tier's discount.
- ``referral``: segment in ``referral_segments``: a refer-a-friend bonus of ``referral_bonus``.
- ``loyalty_points``: active repeat buyers (frequency >= ``loyalty_min_repeat_purchases`` and
  P(alive) >= ``loyalty_min_p_alive``): ``loyalty_points_multiplier`` x points on the next order.

Who is tried on which rules: a wholesale customer (the score table's optional ``wholesale`` column,
``rebuy.offers.wholesale``) on none (offer ``none``: no consumer offer); a lapsed customer (segment in
``lapsed_segments``, or ``p_purchase_90d`` below ``lapsed_max_p_purchase_90d``) only on
``lapsed_rules`` (win-back, birthday, browse abandonment: never an upsell, ``names.UPSELL_RULES``).

Then, in this order:

1. P(alive) below ``p_alive_floor``: offer ``none`` (an offer would be wasted), whatever qualified.
2. Will buy anyway: discretionary discounts (win-back, browse, cross-sell, VIP) for customers with
   ``expected_purchases_30d >= buy_anyway_purchases_30d`` become a ``reminder`` (no discount).
   Birthday and spend-tier discounts are entitlements and are not withdrawn here.
3. Per-customer guard: a discount (share x expected order value) may not exceed
   ``max_discount_margin_multiple`` x margin of one expected order (``clv.margin`` x
   ``expected_order_value``) nor ``max_discount_clv_share`` x ``clv_12m``. It is reduced to the cap
   (rounded down to ``discount_step``); below ``min_discount`` it becomes a ``reminder``.
4. Run budget (``budget``): discounts are kept in descending ``budget_rank_by`` (12-month CLV by
   default) while the running total of ``discount_cost`` fits; the rest become ``reminder``. A
   discount whose consent is unknown counts (a service holding consent may send it); one known to be
   unreachable (no consented channel, too young) does not and costs 0.
5. Delivery needs consent, the decision does not: a decision without a channel keeps its offer, gets
   channel ``"none"`` and a reason ending "Not sent: consent unknown (no customers table)." (or "not
   in the customers table", "no consent columns in the customers table"), "Not sent: no consented
   channel." or "Not sent: younger than the minimum contact age of 18."; ``control.hold_out`` then
   sets ``deliver`` false. Unknown consent is warned about once per call. Offer ``none`` always has
   channel ``"none"`` and 0 contacts.

Channel: the age group's channel (``channels``: ``[min_age, max_age)``, first match wins) when that
channel is consented; otherwise (``fallback_to_consented_channel``) the first consented channel in
``default_channel_order``; unknown age uses ``default_channel_order`` among consented channels.
No consent on any channel -> ``"none"``. Without a customers table (or for a customer missing from
it, or a table without ``consent_*`` columns) consent is unknown: no channel unless
``assume_consent_without_customers`` is set.
Ages missing from the customers table come from ``birth_date`` (365.25-day years, ``rebuy.dates``).

Reasons quote the numbers that decide (P(purchase in 90 days) where the score table has it, never a
P(alive) of 1.00 beside a "Lost" segment), counts and days in words ("1 repeat purchase", "today"),
and products by their description (from the transactions, else ``product_names``); ``offer_products``
keeps the ids.

``offer_value`` units depend on ``offer_type``: a discount share (0.15 = 15% off) for birthday,
browse_abandonment, cross_sell, win_back, vip and spend_tier; bonus points for loyalty_points;
currency for referral; 0 for reminder and none. ``discount_cost`` (currency) is the expected cost of
a percentage discount: share x ``expected_order_value`` x ``redemption_rate`` (1 = every discount
redeemed, so the run budget is a hard cap); points and referral bonuses are not discounts and cost 0.

Layout (one job per module):

- ``names``: the rule names (the one list config validation reads; imports nothing);
- ``rules``: one class per rule and the registry ``RULES``; ``browse``, ``cross_sell``: their
  product look-ups;
- ``context``: the validated per-run inputs; ``customers``: the customers table aligned to them;
- ``engine``: ``assign_offers`` (rules in priority order, guards, channels, reasons, output);
- ``guards``, ``channels``, ``text``: the guards, the channel rules, the reason templates;
- ``reference``: a plain per-customer version of the whole engine, used by tests to prove the
  vectorised one equal; ``summary``: ``offer_summary``; ``wholesale``: who is a wholesale customer
  (cut fixed at training, read by ``rebuy.pipeline``).

How to add an offer rule
------------------------

1. Write one class in ``rules.py`` deriving from ``Rule``: ``name``, ``is_discount`` (its value is a
   discount share), ``buy_anyway`` (withdrawn for customers who will buy anyway), and the methods
   ``eligible``, ``value``, ``products``, ``trigger``, ``sentence`` (vectorised over the table) and
   ``plain`` (the same for one customer). It registers itself.
2. Add its name to ``names.RULE_NAMES`` (where it sits in the default priority) and its settings to
   ``rebuy.config.OffersConfig`` (and ``configs/offers_example.yaml``).

The tests then hold it to its plain version on a simulated shop (``tests/test_offers_reference.py``).
This package loads its engine lazily, so ``rebuy.config`` can import ``names`` without numpy/pandas.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rebuy.errors import OffersInputError
    from rebuy.offers.channels import assign_channels
    from rebuy.offers.context import REQUIRED_SCORE_COLUMNS
    from rebuy.offers.engine import GC_PAUSE_MIN_ROWS, OFFER_COLUMNS, assign_offers
    from rebuy.offers.names import CHANNELS
    from rebuy.offers.rules import RULES, Rule, vip_clv_threshold
    from rebuy.offers.summary import offer_summary

_EXPORTS = {
    "assign_offers": "rebuy.offers.engine",
    "OFFER_COLUMNS": "rebuy.offers.engine",
    "GC_PAUSE_MIN_ROWS": "rebuy.offers.engine",
    "offer_summary": "rebuy.offers.summary",
    "vip_clv_threshold": "rebuy.offers.rules",
    "RULES": "rebuy.offers.rules",
    "Rule": "rebuy.offers.rules",
    "REQUIRED_SCORE_COLUMNS": "rebuy.offers.context",
    "CHANNELS": "rebuy.offers.names",
    "assign_channels": "rebuy.offers.channels",
    "OffersInputError": "rebuy.errors",
}

__all__ = [
    "CHANNELS", "GC_PAUSE_MIN_ROWS", "OFFER_COLUMNS", "REQUIRED_SCORE_COLUMNS", "RULES", "OffersInputError", "Rule",
    "assign_channels", "assign_offers", "offer_summary", "vip_clv_threshold",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rebuy.offers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
