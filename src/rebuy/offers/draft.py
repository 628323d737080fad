"""The offers of one run while they are being decided (:class:`OfferDraft`), one row per customer.

Offer types are small integer codes into ``type_names``: 0 = ``none``, 1 = ``reminder``, then the
configured rules in priority order. ``products[i]`` is a reference to a product list (sliced to
``max_offer_products`` on output); ``owned[i]`` says it is row i's own list of at most k products
(recommendations, abandoned products), so it is output as is and other lists are copied.
``note`` explains a withdrawn or capped discount; ``detail`` is the rule's extra text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rebuy.offers.lists import empty_lists, strings
from rebuy.offers.names import OUTCOMES
from rebuy.offers.rules import RULES

NONE, REMINDER = 0, 1
"""Codes of the two outcomes (``OUTCOMES`` order)."""


@dataclass(eq=False)
class OfferDraft:
    """Per-customer arrays of one run (see the module docstring)."""

    type_names: list[str]
    code: np.ndarray
    value: np.ndarray
    products: np.ndarray
    owned: np.ndarray
    detail: np.ndarray
    note: np.ndarray
    reminder: np.ndarray
    discount_cost: np.ndarray

    @classmethod
    def empty(cls, n: int, priority: list[str]) -> OfferDraft:
        """No offer for anyone yet; the codes of ``priority``'s rules follow the outcomes."""
        names = [*OUTCOMES, *(r for r in dict.fromkeys(priority) if r not in OUTCOMES)]
        return cls(names, np.zeros(n, dtype=np.int8), np.zeros(n), empty_lists(n), np.zeros(n, dtype=bool),
                   strings(n), strings(n), np.zeros(n, dtype=bool), np.zeros(n))

    def flag(self, attr: str) -> np.ndarray:
        """Per customer: the ``attr`` class flag (``is_discount``, ``buy_anyway``) of their rule."""
        per_code = [False] * len(OUTCOMES) + [getattr(RULES[t], attr) for t in self.type_names[len(OUTCOMES):]]
        return np.asarray(per_code, dtype=bool)[self.code]
