"""The offer rule names, in default priority order: the one list shared by the config and the registry.

This module imports nothing, so ``rebuy.config`` can read it at import time without loading numpy or
pandas (and without an import cycle: ``rebuy.offers`` itself loads its engine lazily).

Invariant: ``tuple(rebuy.offers.rules.RULES) == RULE_NAMES`` (checked when ``rules`` is imported), so
a rule class without its name here, or a name without its class, fails at once.
"""

from __future__ import annotations

RULE_NAMES = (
    "birthday", "browse_abandonment", "cross_sell", "win_back", "vip", "spend_tier", "referral",
    "loyalty_points",
)
"""The offer rules ``OffersConfig.priority`` may list, in its default order."""

UPSELL_RULES = ("cross_sell", "vip", "spend_tier", "referral", "loyalty_points")
"""Rules that sell more to an active customer: never offered to lapsed customers (``offers.lapsed_*``)."""

LAPSED_RULES = ("win_back", "birthday", "browse_abandonment")
"""The rules a lapsed customer may get by default (``offers.lapsed_rules``): win-back and re-engagement."""

OUTCOMES = ("none", "reminder")
"""Offer types that are outcomes, not rules: nothing to send, or a reminder instead of a discount."""

CHANNELS = ("messenger", "email", "sms")
"""Message channels; each has a ``consent_<channel>`` column in the customers table (``ChannelRule``'s
``channel`` and ``default_channel_order`` list the same names)."""
