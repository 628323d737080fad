"""The per-run inputs the offer rules read, validated and aligned once (:class:`OfferContext`).

Built by :func:`build_context` from the arguments of ``assign_offers``. Layout: the score table's
columns as numpy arrays (row i = customer i of the score table), the customers side table aligned to
them (:mod:`rebuy.offers.customers`), the optional side inputs as given (events, last-order products,
cross-sell function, transactions), and ``facts``: a per-run memo where rules keep what they derive
once (days to the birthday, abandoned products, ...).

Invariants: ids are unique str; money columns are finite floats in the transactions' currency;
``eov`` (expected order value) is clipped at 0; dates are datetime64[ns]; ``as_of`` is a midnight;
``below_floor`` marks customers whose P(alive) is below ``p_alive_floor`` (no rule is applied to them:
an offer would be wasted); ``wholesale`` those the score table's optional ``wholesale`` column marks
(no consumer offer); ``lapsed`` those in ``lapsed_segments`` or with ``p_purchase_90d`` below
``lapsed_max_p_purchase_90d`` (only ``lapsed_rules``); ``p90`` is the optional ``p_purchase_90d``
column (NaN without it); ``unknown`` says why consent is unknown ("" when known); ``names`` maps
product ids to descriptions (empty when the data has none). A context belongs to one call; rules
never keep state of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rebuy.dates import to_day
from rebuy.errors import OffersInputError
from rebuy.offers.customers import customer_side
from rebuy.offers.ids import arrow_str, ids
from rebuy.offers.lists import first_k_lists, isin

if TYPE_CHECKING:
    from rebuy.config import Config, OffersConfig

REQUIRED_SCORE_COLUMNS = (
    "customer_id", "segment", "r_score", "f_score", "frequency", "total_spend", "last_purchase", "p_alive",
    "expected_purchases_30d", "expected_order_value", "clv_12m", "next_purchase_date", "recommended_products",
)
"""Score-table columns the offer rules read."""
OPTIONAL_SCORE_COLUMNS = ("p_purchase_90d", "wholesale")
"""Score-table columns the rules read when present: the calibrated 90-day purchase probability
(quoted in reasons, and a lapsed threshold) and the wholesale flag."""
NUMERIC_COLUMNS = ("r_score", "f_score", "frequency", "total_spend", "p_alive", "expected_purchases_30d",
                   "expected_order_value", "clv_12m")


class RunSettings:
    """What the engine's and the reference's per-run objects share (they hold ``config`` and ``facts``)."""

    config: Config
    facts: dict[str, Any]

    @property
    def oc(self) -> OffersConfig:
        """The ``offers`` config section."""
        return self.config.offers

    @property
    def k(self) -> int:
        """Products listed in an offer."""
        return self.oc.max_offer_products

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per run and kept under ``key``."""
        if key not in self.facts:
            self.facts[key] = make()
        return self.facts[key]


@dataclass(eq=False)
class OfferContext(RunSettings):
    """Everything one ``assign_offers`` call reads (see the module docstring)."""

    config: Config
    scores: pd.DataFrame
    as_of: pd.Timestamp
    ids: np.ndarray
    id_index: pd.Index
    ids_arrow: Any
    recs: np.ndarray
    age: np.ndarray
    consent: dict[str, np.ndarray]
    birth: np.ndarray
    unknown: np.ndarray
    names: Mapping[str, str]
    events: pd.DataFrame | None = None
    last_order_products: pd.Series | None = None
    cross_sell: Callable[[list, int], Sequence] | None = None
    transactions: pd.DataFrame | None = None
    vip_min_clv: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.n = len(self.ids)
        self.p_alive = self.num("p_alive")
        self.e30 = self.num("expected_purchases_30d")
        self.eov = np.maximum(self.num("expected_order_value"), 0.0)
        self.clv = self.num("clv_12m")
        self.spend = self.num("total_spend")
        self.freq = self.num("frequency")
        self.segment = ids(self.scores["segment"])
        self.last_purchase = self._dates("last_purchase")
        self.next_purchase = self._dates("next_purchase_date")
        self.below_floor = self.p_alive < self.oc.p_alive_floor
        self.p90 = self.num("p_purchase_90d") if "p_purchase_90d" in self.scores.columns else np.full(self.n, np.nan)
        self.wholesale = (self.scores["wholesale"].astype("boolean").fillna(False).to_numpy(dtype=bool)
                          if "wholesale" in self.scores.columns else np.zeros(self.n, dtype=bool))
        self.lapsed = is_lapsed(self.segment, self.p90, self.oc)

    @property
    def base(self) -> np.datetime64:
        """``as_of`` as a datetime64[ns]."""
        return self.as_of.to_datetime64()

    def num(self, col: str) -> np.ndarray:
        """A numeric score column as float64."""
        return pd.to_numeric(self.scores[col]).to_numpy(dtype=float)

    def _dates(self, col: str) -> np.ndarray:
        return pd.to_datetime(self.scores[col]).to_numpy(dtype="datetime64[ns]")

    def days_before(self, dates: np.ndarray) -> np.ndarray:
        """Days (float) from each date to as-of: positive in the past, NaN for NaT."""
        return (self.base - dates) / np.timedelta64(1, "D")


def is_lapsed(segment: np.ndarray, p90: np.ndarray, oc: OffersConfig) -> np.ndarray:
    """Lapsed per customer: segment in ``lapsed_segments``, or ``p_purchase_90d`` (NaN: unknown)
    below ``lapsed_max_p_purchase_90d`` when that is set."""
    lapsed = isin(segment, oc.lapsed_segments)
    if oc.lapsed_max_p_purchase_90d is not None:
        lapsed |= np.nan_to_num(p90, nan=np.inf) < oc.lapsed_max_p_purchase_90d
    return lapsed


def run_product_names(product_names: Mapping[str, str] | None, transactions: pd.DataFrame | None) -> dict[str, str]:
    """Product id -> description for the reasons: the names the transactions give (the most frequent
    description, :func:`rebuy.recommend.products.product_names`) over ``product_names`` (e.g. the
    recommender's, for products the scored customers never bought); empty when neither has any."""
    names = {str(k): str(v) for k, v in (product_names or {}).items() if isinstance(v, str) and v.strip()}
    if transactions is not None and "description" in transactions.columns:
        from rebuy.recommend.products import product_names as names_of

        names.update(names_of(transactions))
    return names


def build_context(scores: pd.DataFrame, config: Config, *, as_of: Any, customers: pd.DataFrame | None = None,
                  product_names: Mapping[str, str] | None = None, **side: Any) -> OfferContext:
    """Validate the score table and align every input of one ``assign_offers`` call."""
    oc = config.offers
    validate_scores(scores, oc)
    day = to_day(as_of, "as_of", OffersInputError)
    cust_ids = ids(scores["customer_id"])
    id_index = pd.Index(cust_ids, dtype=object)
    if not id_index.is_unique:
        raise OffersInputError("scores: column 'customer_id' has duplicated ids")
    ids_arrow = arrow_str(cust_ids)
    # each row's first k recommendations as its own new list, made once (None/NaN -> no products; a
    # single id -> [id]): rows offered their recommendations output that list as is
    recs = first_k_lists(scores["recommended_products"].to_numpy(dtype=object), oc.max_offer_products)
    age, consent, birth, unknown = customer_side(cust_ids, customers, day, oc, ids_arrow)
    names = run_product_names(product_names, side.get("transactions"))
    return OfferContext(config=config, scores=scores, as_of=day, ids=cust_ids, id_index=id_index,
                        ids_arrow=ids_arrow, recs=recs, age=age, consent=consent, birth=birth, unknown=unknown,
                        names=names, **side)


def validate_scores(scores: pd.DataFrame, oc: OffersConfig) -> None:
    """Raise :class:`OffersInputError` naming the column when the score table cannot feed the rules."""
    if not isinstance(scores, pd.DataFrame):
        raise OffersInputError(f"scores: expected a pandas DataFrame, got {type(scores).__name__}")
    rank = [oc.budget_rank_by] if oc.budget is not None else []
    missing = [c for c in (*REQUIRED_SCORE_COLUMNS, *rank) if c not in scores.columns]
    if missing:
        raise OffersInputError(f"scores: missing column(s) {missing} needed by the offer rules")
    optional = [c for c in OPTIONAL_SCORE_COLUMNS[:1] if c in scores.columns]
    for c in (*NUMERIC_COLUMNS, *rank, *optional):
        try:
            v = pd.to_numeric(scores[c], errors="raise").to_numpy(dtype=float)
        except (TypeError, ValueError):
            raise OffersInputError(f"scores: column {c!r} must be numeric") from None
        bad = ~np.isfinite(v)
        if bad.any():
            raise OffersInputError(f"scores: column {c!r} has {int(bad.sum())} NaN/inf value(s)")
    n_missing = int(scores["last_purchase"].isna().sum())
    if n_missing:
        raise OffersInputError(f"scores: column 'last_purchase' has {n_missing} missing date(s)")
    if scores["customer_id"].isna().any():
        raise OffersInputError("scores: column 'customer_id' has missing values")
