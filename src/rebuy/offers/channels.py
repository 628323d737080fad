"""Channel and contact cadence per customer, from the age group and consent.

Rules (``config.offers``): the age group's channel (``channels``: ``[min_age, max_age)``, first match
wins) when that channel is consented; otherwise (``fallback_to_consented_channel``) the first consented
channel in ``default_channel_order``; unknown age uses ``default_channel_order`` among consented
channels. A fallback channel's cadence is the smallest ``max_contacts_per_month`` the age groups give
it (the smallest of all groups when no group names it). Customers known to be younger than
``min_contact_age``, and customers with no consented channel, get ``"none"`` and 0 contacts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from rebuy.offers.lists import strings
from rebuy.offers.names import CHANNELS

if TYPE_CHECKING:
    from rebuy.config import OffersConfig


class Channels(NamedTuple):
    """Per customer: channel (object array of str), max contacts per month (int64), too young (bool)."""

    channel: np.ndarray
    contacts: np.ndarray
    too_young: np.ndarray


def fallback_cadence(oc: OffersConfig) -> dict[str, int]:
    """Contacts per month on each channel when it is used as the fallback."""
    cadence = {}
    for ch in CHANNELS:
        rules = [r.max_contacts_per_month for r in oc.channels if r.channel == ch]
        cadence[ch] = min(rules) if rules else min((r.max_contacts_per_month for r in oc.channels), default=0)
    return cadence


def assign_channels(age: np.ndarray, consent: dict[str, np.ndarray], oc: OffersConfig) -> Channels:
    """Channel, contacts per month and "too young" per customer (``age`` in years, NaN unknown)."""
    n = len(age)
    known_age = ~np.isnan(age)
    pref = strings(n, "")
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
    channel = strings(n, "none")
    contacts = np.zeros(n, dtype=np.int64)
    for ch in CHANNELS:
        m = (pref == ch) & consent[ch]
        channel[m] = ch
        contacts[m] = pref_contacts[m]
    may_fall_back = (pref == "") | oc.fallback_to_consented_channel
    cadence = fallback_cadence(oc)
    for ch in oc.default_channel_order:
        m = (channel == "none") & may_fall_back & consent[ch]
        channel[m] = ch
        contacts[m] = cadence[ch]
    too_young = known_age & (age < oc.min_contact_age) if oc.min_contact_age is not None else np.zeros(n, bool)
    channel[too_young] = "none"
    contacts[channel == "none"] = 0
    return Channels(channel, contacts, too_young)
