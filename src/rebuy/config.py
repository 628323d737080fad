"""The one validated configuration object, loaded from YAML.

Everything a marketer or analyst would tune lives here (column mapping, cleaning, segment rules,
model settings, offer rules, channels, budgets, horizons). Every field has a default, so data with
the canonical column names needs no config file at all. Unknown keys and wrong types are errors
that name the key.

Each section is owned by the module that reads it; add fields to the section, never elsewhere.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rebuy.errors import ConfigError  # noqa: F401 (re-exported)
from rebuy.offers.names import LAPSED_RULES, RULE_NAMES, UPSELL_RULES
from rebuy.recommend.defaults import DEFAULT_EXCLUDED, DEFAULT_EXCLUDED_PREFIXES

CANONICAL_COLUMNS = ("customer_id", "order_id", "timestamp", "product_id", "quantity", "price", "amount")
"""Canonical transaction columns; ``description``, ``country`` and ``category`` are optional extras."""
OPTIONAL_TRANSACTION_COLUMNS = ("description", "country", "category")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """How to read and clean the transactions (``rebuy.data``)."""

    columns: dict[str, str] = Field(
        default_factory=dict,
        description="canonical name -> source column name; unmapped canonical columns are looked up by name",
    )
    customer_columns: dict[str, str] = Field(default_factory=dict, description="mapping for the customers table")
    event_columns: dict[str, str] = Field(default_factory=dict, description="mapping for the events table")
    cancel_prefixes: list[str] = Field(default_factory=lambda: ["C"], description="order_id prefixes marking a cancellation")
    timestamp_format: str | None = Field(None, description="strftime format of the timestamp column; None infers")
    timezone: str | None = Field(None, description="tz-aware timestamps are converted to this zone, then made naive")
    csv_separator: str = ","
    drop_duplicates: bool = Field(
        True, description="drop exact duplicate lines, only when the lines carry an order id (without one, two "
        "identical purchases on one day are real)",
    )
    drop_products: list[str] = Field(
        default_factory=list, description="product ids dropped at cleaning (test items), e.g. [TEST001]"
    )
    drop_product_prefixes: list[str] = Field(
        default_factory=list, description="product id prefixes dropped at cleaning, e.g. [TEST]"
    )
    max_line_value_multiple: float = Field(
        1000.0, ge=0, description="lines worth more than this many times the 99.9th percentile line value "
        "(from 1,000 lines) are quarantined at cleaning (absurd_value); 0 = off (lines above 1e13 are always "
        "quarantined)"
    )

    @field_validator("columns", "customer_columns", "event_columns")
    @classmethod
    def _no_empty_names(cls, v: dict[str, str]) -> dict[str, str]:
        for k, s in v.items():
            if not str(s).strip():
                raise ValueError(f"column mapping for {k!r} is empty")
        return v

    @field_validator("customer_columns")
    @classmethod
    def _known_customer_columns(cls, v: dict[str, str]) -> dict[str, str]:
        allowed = ("customer_id", "age", "birth_date", "country", "acquisition_channel", "signup_date",
                   "consent_email", "consent_sms", "consent_messenger")
        unknown = sorted(set(v) - set(allowed))
        if unknown:
            raise ValueError(f"unknown customer column(s) {unknown}; expected some of {list(allowed)}")
        return v

    @field_validator("event_columns")
    @classmethod
    def _known_event_columns(cls, v: dict[str, str]) -> dict[str, str]:
        allowed = ("customer_id", "product_id", "timestamp", "event")
        unknown = sorted(set(v) - set(allowed))
        if unknown:
            raise ValueError(f"unknown event column(s) {unknown}; expected some of {list(allowed)}")
        return v

    @field_validator("cancel_prefixes", "drop_product_prefixes")
    @classmethod
    def _non_empty_prefixes(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if any(not p for p in v):
            what = "mark every order as cancelled" if info.field_name == "cancel_prefixes" else "drop every product"
            raise ValueError(f"an empty prefix would {what}")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str | None) -> str | None:
        if v is not None:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(v)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r} (use an IANA name such as 'Europe/London')") from None
        return v

    @field_validator("csv_separator")
    @classmethod
    def _non_empty_separator(cls, v: str) -> str:
        if not v:
            raise ValueError("must not be empty")
        return v


class SegmentRule(_Section):
    """A named segment: customers whose R and F scores (1..n_bins) fall in the inclusive ranges."""

    name: str = Field(min_length=1)
    r: tuple[int, int]
    f: tuple[int, int]

    @field_validator("r", "f")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        lo, hi = v
        if not (1 <= lo <= hi <= 10):
            raise ValueError(f"score range {list(v)} must satisfy 1 <= low <= high <= 10 (and <= segments.n_bins)")
        return v


def _default_segment_rules() -> list[SegmentRule]:
    # The widely used R/F grid (e.g. the "RFM segmentation" map popularised by Putler); first match wins.
    grid = [
        ("Champions", (5, 5), (4, 5)),
        ("Champions", (4, 4), (5, 5)),
        ("Loyal Customers", (3, 4), (4, 5)),
        ("Can't Lose Them", (1, 1), (5, 5)),
        ("At Risk", (1, 2), (3, 5)),
        ("Potential Loyalists", (4, 5), (2, 3)),
        ("New Customers", (5, 5), (1, 1)),
        ("Promising", (4, 4), (1, 1)),
        ("Need Attention", (3, 3), (3, 3)),
        ("About to Sleep", (3, 3), (1, 2)),
        ("Hibernating", (2, 2), (1, 2)),
        ("Lost", (1, 1), (1, 2)),
    ]
    return [SegmentRule(name=n, r=r, f=f) for n, r, f in grid]


class SegmentConfig(_Section):
    """RFM scores, named segments and clusters (``rebuy.segment``)."""

    n_bins: int = Field(5, ge=2, le=10)
    rules: list[SegmentRule] = Field(default_factory=_default_segment_rules)
    fallback_segment: str = "Need Attention"
    cluster_method: Literal["kmeans"] = "kmeans"
    n_clusters: int | None = Field(None, ge=2, description="fixed k; None chooses k by silhouette over k_range")
    k_range: tuple[int, int] = (3, 8)
    silhouette_sample: int = Field(20_000, ge=100, description="customers sampled to compute the silhouette")
    k_criterion: Literal["simplified_silhouette", "silhouette"] = Field(
        "simplified_silhouette",
        description="how k is chosen: silhouette with distances to the centres (cheap) or the full silhouette",
    )
    random_state: int = 0
    scaler: Literal["robust", "standard", "none"] = Field("robust", description="scaling after log1p of the RFM features")
    n_init: int = Field(4, ge=1, description="KMeans restarts (fixed, never 'auto')")

    @model_validator(mode="after")
    def _rules_fit_grid(self) -> SegmentConfig:
        lo, hi = self.k_range
        if not (2 <= lo <= hi):
            raise ValueError(f"k_range {list(self.k_range)} must satisfy 2 <= low <= high")
        if not self.rules:
            raise ValueError("rules: give at least one segment rule")
        n = self.n_bins
        for rule in self.rules:
            if rule.r[1] > n or rule.f[1] > n:
                raise ValueError(f"rules: rule {rule.name!r} uses a score above n_bins={n}; give rules for a {n}-point grid")
        if max(r.r[1] for r in self.rules) < n or max(r.f[1] for r in self.rules) < n:
            raise ValueError(f"rules: no rule reaches score {n} (n_bins={n}); give rules for a {n}-point grid")
        return self


class PurchaseModelConfig(_Section):
    """Settings of one purchase model (sections ``bgnbd``, ``mbgnbd``, ``pareto_nbd``)."""

    penalizer: float = Field(0.0, ge=0)
    retry_penalizer: float = Field(0.001, gt=0, description="used when the unpenalised fit does not converge")
    solver: Literal["numpy", "lifetimes"] = Field(
        "numpy", description="numpy: lifetimes' objective with an analytic gradient (fast); lifetimes: lifetimes' "
        "fitter of the same model (BetaGeoFitter, ModifiedBetaGeoFitter, ParetoNBDFitter)"
    )


BGNBDConfig = PurchaseModelConfig
"""The ``bgnbd`` section's class (the name before MBG/NBD and Pareto/NBD joined)."""


PURCHASE_MODEL_NAMES = ("bgnbd", "mbgnbd", "pareto_nbd")
"""Purchase models by config name (``rebuy.models.PURCHASE_MODELS``); ``purchase_model: auto`` picks one."""


class SelectionConfig(_Section):
    """How ``purchase_model: auto`` picks a purchase model and how ``p_purchase_90d`` is calibrated.

    Both use 90-day holdout periods inside the training window (the last ``windows`` of them as
    far as the history allows): the candidates are fitted on the history before each period and
    scored on whether each customer bought in it (mean log loss of the predicted probability of a
    purchase: it rewards ranking and calibration alike; see ``rebuy.models.selection``). 90 days
    is the horizon of p_purchase_90d."""

    candidates: list[Literal["bgnbd", "mbgnbd", "pareto_nbd"]] = Field(
        default_factory=lambda: list(PURCHASE_MODEL_NAMES), min_length=1, description="models auto compares"
    )
    max_customers: int = Field(20_000, ge=1_000, description="candidates are compared on a random sample of at "
                               "most this many customers (the chosen model is then fitted on everyone)")
    windows: int = Field(4, ge=1, le=8, description="90-day holdout periods, most recent first, as far as the "
                         "history allows (4 = a year: every season)")
    tie_tolerance: float = Field(0.001, ge=0, description="log-loss difference (nats) within which candidates count "
                                 "as equal and the AUC of P(alive) decides")
    ridge_penalizer: float = Field(0.0003, ge=0, description="auto also fits the ridge_candidates with this L2 "
                                   "penalizer (lifetimes' penalizer_coef; kept only within tie_tolerance of the best "
                                   "log loss: it settles what the purchases cannot tell apart, see "
                                   "rebuy.models.selection); 0 = off")
    ridge_candidates: list[Literal["bgnbd", "mbgnbd", "pareto_nbd"]] = Field(
        default_factory=lambda: ["mbgnbd"], description="models auto also fits with ridge_penalizer (MBG/NBD: its "
        "ridge is the split population; BG/NBD's P(alive) is 1 for one-time buyers whatever the penalty, and "
        "Pareto/NBD's ridge ranked worse on Online Retail II)")
    seasonal_calibration: bool = Field(False, description="p_purchase_90d's calibrator keeps the intercept of the "
                                       "holdout window a year before the as-of day (the same season) when there is "
                                       "one; off by default: on Online Retail II's test split it did not help")
    random_state: int = 0


class GammaGammaConfig(_Section):
    penalizer: float = Field(0.0, ge=0)
    retry_penalizer: float = Field(0.001, gt=0)
    independence_threshold: float = Field(0.3, gt=0, le=1, description="|corr(frequency, monetary)| above this warns")
    solver: Literal["numpy", "lifetimes"] = Field(
        "numpy", description="numpy: lifetimes' objective with an analytic gradient (fast); lifetimes: GammaGammaFitter"
    )


class CLVConfig(_Section):
    """Lifetime value settings. Currency is the transactions' currency."""

    MAX_DISCOUNT_RATE: ClassVar[float] = 0.2
    """Largest accepted ``discount_rate`` (a month): 20% a month is about 790% a year."""

    horizon_months: int = Field(12, ge=1)
    margin: float = Field(0.3, gt=0, le=1, description="gross margin as a share of revenue")
    discount_rate: float = Field(0.01, ge=0, le=MAX_DISCOUNT_RATE,
                                 description="monthly discount rate, 0.01 = 1% a month (at most 0.2)")
    acquisition_cost: float = Field(0.0, ge=0, description="per customer, currency")
    retention_cost: float = Field(0.0, ge=0, description="per customer per year, currency")
    horizons_days: list[int] = Field(default_factory=lambda: [30, 90, 365])
    churn_risk_thresholds: tuple[float, float] = Field(
        (0.2, 0.5), description="p_purchase_90d below the first is high risk, below the second medium, else low"
    )
    next_purchase_max_days: int = Field(
        365, ge=1, description="next_purchase_date is NaT when a purchase is not more likely than not within this many days"
    )
    method: Literal["auto", "model", "ranker"] = Field(
        "auto", description="clv_12m from the purchase x spend models (model), from the ranking model trained on a "
        "shifted window (ranker), or the ranker when it beats the models on its internal holdout (auto)"
    )
    ranker_horizon_days: int = Field(365, ge=28, description="target window of the ranking model (shortened to "
                                     "half the history when the history is shorter)")

    @field_validator("horizons_days")
    @classmethod
    def _positive_horizons(cls, v: list[int]) -> list[int]:
        if not v or any(h <= 0 for h in v):
            raise ValueError(f"horizons_days must be a non-empty list of positive day counts, got {v}")
        return v

    @field_validator("discount_rate", mode="before")
    @classmethod
    def _monthly_rate(cls, v: Any) -> Any:
        """Name the unit when the rate is too large (before the bound's generic message); a number or text."""
        try:
            rate = float(v)
        except (TypeError, ValueError):
            return v  # pydantic reports the type
        if not rate <= cls.MAX_DISCOUNT_RATE:
            raise ValueError(f"a monthly rate (0.01 = 1% a month) of at most {cls.MAX_DISCOUNT_RATE}, got {v!r}; "
                             "a yearly rate r is (1 + r) ** (1 / 12) - 1 a month")
        return v

    @field_validator("churn_risk_thresholds")
    @classmethod
    def _ordered_thresholds(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (0 <= lo <= hi <= 1):
            raise ValueError(f"churn_risk_thresholds must satisfy 0 <= high-risk <= medium-risk <= 1, got {list(v)}")
        return v


class RecommendConfig(_Section):
    """Implicit-feedback recommender (``rebuy.recommend``)."""

    enabled: bool = True
    # defaults tuned by benchmarks/tune_recommender.py on Online Retail II, train < 2011-06-01,
    # validation 2011-06-01..2011-08-31 (never on the 2011-09-01..2011-12-09 test period)
    algorithm: Literal["als", "bpr", "item_knn"] = Field(
        "als", description="item_knn: implicit's item-item nearest neighbours (knn_weighting, knn_neighbours)"
    )
    factors: int = Field(128, ge=1, description="capped below the number of products")
    regularization: float = Field(
        10.0, ge=0, description="absolute (implicit does not scale it by data size); ~0.1 suits a few hundred customers"
    )
    iterations: int = Field(40, ge=1)
    learning_rate: float = Field(0.01, gt=0, description="BPR only")
    alpha: float = Field(0.1, gt=0, description="confidence scale applied to the weighted matrix")
    confidence: Literal["count", "spend"] = "count"
    weighting: Literal["none", "log", "bm25", "tfidf"] = "tfidf"
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    recency_half_life_days: float | None = Field(None, gt=0)
    n_items: int = Field(10, ge=1)
    allow_repurchase: bool = False
    repurchase_categories: list[str] = Field(default_factory=list, description="categories that may be bought again")
    history_weight: float = Field(
        0.7, ge=0, le=1, description="blend of own purchase history for re-purchasable products (0 = model only)"
    )
    excluded_products: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUDED), description="product ids never recommended nor offered "
        "(postage, fees, adjustments: the shop's own codes; they still count as spend)"
    )
    excluded_product_prefixes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXCLUDED_PREFIXES), description="product id prefixes never recommended"
    )
    min_history: int = Field(1, ge=0, description="customers with fewer distinct products get popularity")
    batch_size: int = Field(10_000, ge=1)
    random_state: int = 0
    knn_weighting: Literal["bm25", "cosine", "tfidf"] = Field(
        "bm25", description="item_knn only: implicit's BM25Recommender (knn_bm25_k1, knn_bm25_b), "
        "CosineRecommender or TFIDFRecommender"
    )
    knn_neighbours: int = Field(20, ge=1, description="item_knn only: neighbours kept per product (implicit's K)")
    knn_bm25_k1: float = Field(1.2, ge=0, description="item_knn bm25 only: K1 (implicit's default)")
    knn_bm25_b: float = Field(0.75, ge=0, le=1, description="item_knn bm25 only: B (implicit's default)")


class ChannelRule(_Section):
    """Age group [min_age, max_age) -> preferred channel and its contact cadence. None = open-ended."""

    channel: Literal["messenger", "email", "sms"]
    min_age: int | None = None
    max_age: int | None = None
    max_contacts_per_month: int = Field(ge=0)

    @model_validator(mode="after")
    def _age_range(self) -> ChannelRule:
        if self.min_age is not None and self.max_age is not None and self.min_age >= self.max_age:
            raise ValueError(f"channel {self.channel}: min_age {self.min_age} must be below max_age {self.max_age}")
        return self


def _default_channels() -> list[ChannelRule]:
    return [
        ChannelRule(channel="messenger", min_age=18, max_age=30, max_contacts_per_month=10),
        ChannelRule(channel="email", min_age=30, max_age=45, max_contacts_per_month=4),
        ChannelRule(channel="sms", min_age=45, max_age=None, max_contacts_per_month=2),
    ]


OFFER_TYPES = RULE_NAMES
"""The offer rules ``OffersConfig.priority`` may list, in default order (``reminder`` and ``none`` are
outcomes, not rules). The one list lives in ``rebuy.offers.names`` beside the rule registry."""


class OffersConfig(_Section):
    """Offer rules, channels and budget (``rebuy.offers``). Money in the transactions' currency.

    Discounts (``*_discount``, ``spend_tiers`` shares) are shares of the order value (0.15 = 15% off).
    """

    priority: list[str] = Field(
        default_factory=lambda: list(OFFER_TYPES),
        description="offer rules in priority order; the first rule a customer qualifies for wins; "
        "a rule left out is switched off",
    )
    # channels and consent
    channels: list[ChannelRule] = Field(default_factory=_default_channels)
    default_channel_order: list[Literal["email", "sms", "messenger"]] = Field(
        default_factory=lambda: ["email", "sms", "messenger"],
        description="used when the age is unknown, and as the fallback order after the age group's channel",
    )
    fallback_to_consented_channel: bool = Field(
        True, description="if the age group's channel lacks consent, use the next consented one in default_channel_order"
    )
    min_contact_age: int | None = Field(18, ge=0, description="customers known to be younger get no message")
    assume_consent_without_customers: bool = Field(
        False, description="with no customers table (or a customer missing from it, or no consent columns) assume "
        "every channel is consented; false = consent unknown: the offer is decided, channel none, not delivered"
    )
    # lapsed customers: win-back (or birthday, browse abandonment) or nothing, never an upsell
    lapsed_segments: list[str] = Field(
        default_factory=lambda: ["Lost", "Hibernating", "At Risk", "Can't Lose Them"],
        description="segments that count as lapsed: no upsell (cross_sell, vip, spend_tier, referral, "
        "loyalty_points), and win-back is offered",
    )
    lapsed_max_p_purchase_90d: float | None = Field(
        None, ge=0, le=1, description="p_purchase_90d below this also counts as lapsed; null = segments only"
    )
    lapsed_rules: list[str] = Field(
        default_factory=lambda: list(LAPSED_RULES),
        description="the only rules a lapsed customer may get (win-back and re-engagement; never an upsell)",
    )
    # who gets nothing / no discount
    p_alive_floor: float = Field(0.05, ge=0, le=1, description="below this P(alive) an offer is wasted: no offer")
    buy_anyway_purchases_30d: float = Field(
        1.0, gt=0, description="expected purchases in 30 days at or above this: no discount, a reminder instead"
    )
    min_discount: float = Field(0.02, ge=0, lt=1, description="a discount capped below this becomes a reminder")
    discount_step: float = Field(0.01, gt=0, le=1, description="capped discounts are rounded down to this step")
    max_offer_products: int = Field(3, ge=1, description="products listed in an offer")
    new_products: list[str] = Field(
        default_factory=list, description="products to remind win-back customers of; empty = their recommendations"
    )
    # loyalty points
    loyalty_min_repeat_purchases: float = Field(1.0, ge=0, description="frequency (repeat purchases) at least this")
    loyalty_min_p_alive: float = Field(0.7, ge=0, le=1, description="active = P(alive) at least this")
    points_per_currency_unit: float = Field(1.0, ge=0)
    loyalty_points_multiplier: float = Field(2.0, gt=0, description="2 = double points on the next order")
    # spend tiers
    spend_tiers: list[tuple[float, float]] = Field(
        default_factory=lambda: [(500.0, 0.05), (2000.0, 0.10), (5000.0, 0.15)],
        description="(cumulative spend threshold, discount share), thresholds increasing",
    )
    spend_tier_max_orders_to_next: float = Field(
        2.0, gt=0, description="nudge when the next tier is at most this many expected orders away"
    )
    # VIP and referral
    vip_top_share: float = Field(0.05, gt=0, lt=1, description="share of customers by CLV who are VIP")
    vip_discount: float = Field(0.0, ge=0, lt=1, description="0 = exclusive early access, no discount")
    referral_segments: list[str] = Field(default_factory=lambda: ["Champions", "Loyal Customers"])
    referral_bonus: float = Field(10.0, ge=0, description="currency, for the customer and the friend")
    # birthday
    birthday_discount: float = Field(0.10, ge=0, lt=1)
    birthday_window_days: int = Field(14, ge=0, description="birthdays from as-of to as-of + this many days")
    # win-back
    winback_max_p_alive: float = Field(0.5, ge=0, le=1, description="P(alive) below this counts as falling")
    winback_overdue_days: int = Field(7, ge=0, description="days past the expected next purchase that count as overdue")
    winback_discount: float = Field(0.15, ge=0, lt=1)
    # cross-sell and browse abandonment
    cross_sell_window_days: int = Field(14, ge=0, description="last order at most this many days before as-of")
    cross_sell_discount: float = Field(0.0, ge=0, lt=1)
    browse_discount: float = Field(0.10, ge=0, lt=1)
    browse_window_days: int = Field(14, ge=0, description="views/carts at most this many days before as-of")
    # budget guard
    max_discount_margin_multiple: float = Field(2.0, gt=0, description="discount <= this x margin of one expected order")
    max_discount_clv_share: float = Field(0.5, gt=0, le=1, description="discount <= this share of clv_12m")
    redemption_rate: float = Field(
        1.0, gt=0, le=1, description="share of discounts expected to be redeemed; 1 = budget is a hard cap"
    )
    budget: float | None = Field(None, ge=0, description="total discount budget per run; None is unlimited")
    budget_rank_by: Literal["clv_12m", "net_ltv", "expected_order_value"] = Field(
        "clv_12m", description="the budget goes to the highest values of this column first"
    )
    # control groups and evidence (rebuy.offers.control, rebuy.offers.evidence)
    control_share: float = Field(0.10, ge=0, lt=1, description="share of each offer type's customers held out "
                                 "(not sent) to measure it; 0 = no control groups")
    min_control: int = Field(100, ge=1, description="customers an offer type's control group needs; smaller types "
                             "get a larger share (up to max_control_share) or no control group")
    max_control_share: float = Field(0.5, gt=0, lt=1, description="the largest share a small offer type may hold out")
    experiment_key: str | None = Field(None, description="key of the control draw; None = the decision's calendar "
                                       "month (a customer keeps their group all month)")
    use_measured_uplift: bool = Field(False, description="score with the latest `rebuy measure` result recorded in "
                                      "the models directory (latest_uplift.json), as `rebuy score --uplift` does")

    @field_validator("priority", "lapsed_rules")
    @classmethod
    def _known_rules(cls, v: list[str], info: ValidationInfo) -> list[str]:
        unknown = [r for r in v if r not in OFFER_TYPES]
        if unknown:
            raise ValueError(f"unknown offer rule(s) {unknown}; expected some of {list(OFFER_TYPES)}")
        if len(set(v)) != len(v):
            raise ValueError("an offer rule is listed twice")
        upsell = [r for r in v if r in UPSELL_RULES]
        if info.field_name == "lapsed_rules" and upsell:
            raise ValueError(f"{upsell} are upsells: lapsed customers get win-back or nothing")
        return v

    @field_validator("spend_tiers")
    @classmethod
    def _increasing_tiers(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        thresholds = [t for t, _ in v]
        if thresholds != sorted(set(thresholds)) or any(t < 0 for t in thresholds):
            raise ValueError("spend tier thresholds must be non-negative and strictly increasing")
        if any(not (0 <= s < 1) for _, s in v):
            raise ValueError("spend tier discounts must be shares in [0, 1)")
        return v


class WholesaleConfig(_Section):
    """Which customers are wholesalers or businesses (kept out of consumer offers and model fits)."""

    rule: Literal["none", "order_value_multiple"] = Field(
        "none", description="none = every customer is a consumer; order_value_multiple = a mean spend per "
        "purchase day above order_value_multiple x the median customer's (fixed at training)",
    )
    order_value_multiple: float = Field(5.0, gt=1, description="x the median customer's mean spend per purchase day")


class MeasureConfig(_Section):
    """Measuring offers against their control groups (``rebuy measure``)."""

    window_days: int = Field(30, ge=1, description="a decision's response window: a purchase in "
                             "[decided_at, decided_at + window_days) counts")


class OperationsConfig(_Section):
    """How runs share a models directory: the run lock and bundle pruning (:mod:`rebuy.runlock`)."""

    keep_bundles: int = Field(5, ge=0, description="bundles kept after a successful train (newest first; "
                              "latest and the bundle behind latest_scores.json are always kept); 0 = keep all")
    lock_timeout_seconds: float = Field(0, ge=0, allow_inf_nan=False, description="how long a run waits for "
                                        "another run on the same models directory; 0 = refuse at once")
    train_every_days: int = Field(7, ge=0, description="rebuy run trains first when the latest bundle is this many "
                                  "days old (or there is none); 0 = every night")
    keep_nights: int = Field(7, ge=1, description="scoring nights kept in .rebuy-nights/ beside the scores (newest "
                             "first, the live one always; rebuy.publish); their offer-log files live on in later nights")


class Config(BaseModel):
    """The whole configuration. ``Config()`` gives the defaults."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    as_of: dt.date | None = Field(None, description="scoring date; None uses the last transaction date")
    time_unit: Literal["days", "weeks"] = "weeks"
    currency: str | None = Field(None, description="ISO 4217 code of the shop's money (GBP, EUR, USD ...): reports "
                                 "and reasons show its symbol; None = plain numbers")
    data: DataConfig = Field(default_factory=DataConfig)
    segments: SegmentConfig = Field(default_factory=SegmentConfig)
    purchase_model: Literal["auto", "bgnbd", "mbgnbd", "pareto_nbd"] = Field(
        "auto", description="repeat-purchase model; auto = the candidate that predicts a holdout best (selection)"
    )
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    bgnbd: PurchaseModelConfig = Field(default_factory=PurchaseModelConfig)
    mbgnbd: PurchaseModelConfig = Field(default_factory=PurchaseModelConfig)
    pareto_nbd: PurchaseModelConfig = Field(default_factory=PurchaseModelConfig)
    gamma_gamma: GammaGammaConfig = Field(default_factory=GammaGammaConfig)
    clv: CLVConfig = Field(default_factory=CLVConfig)
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)
    offers: OffersConfig = Field(default_factory=OffersConfig)
    wholesale: WholesaleConfig = Field(default_factory=WholesaleConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    operations: OperationsConfig = Field(default_factory=OperationsConfig)

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, v: str | None) -> str | None:
        if v is not None and not (len(v) == 3 and v.isalpha()):
            raise ValueError(f"currency must be a three-letter ISO 4217 code such as GBP, got {v!r}")
        return v.upper() if v else v

    @model_validator(mode="after")
    def _check_columns(self) -> Config:
        allowed = set(CANONICAL_COLUMNS) | set(OPTIONAL_TRANSACTION_COLUMNS)
        unknown = sorted(set(self.data.columns) - allowed)
        if unknown:
            raise ValueError(f"data.columns: unknown canonical column(s) {unknown}; expected some of {sorted(allowed)}")
        return self

    @property
    def time_unit_days(self) -> float:
        """Length of one model time unit in days (weeks are exactly 7 days)."""
        from rebuy.features import unit_days

        return unit_days(self.time_unit)


def format_validation_error(err: ValidationError, source: str, *, prefix: str = "") -> str:
    """One line ``<source>: invalid config: <prefix><key>: <problem>; ...`` for a validation error."""
    parts = []
    for e in err.errors():
        key = prefix + (".".join(str(p) for p in e["loc"]) or "<root>")
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{key}: {msg}")
    return f"{source}: invalid config: " + "; ".join(parts)


def load_config(
    path: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    columns: dict[str, str] | None = None,
) -> Config:
    """Load and validate a config.

    Parameters
    ----------
    path : YAML file, or None for the defaults.
    overrides : dotted keys to set after loading, e.g. ``{"as_of": "2011-12-09", "time_unit": "days"}``.
    columns : canonical -> source column mapping merged over ``data.columns`` (the CLI's ``--column``).
    """
    raw: dict[str, Any] = {}
    source = str(path) if path is not None else "<defaults>"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        raw = _read_yaml(p)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            *parents, leaf = dotted.split(".")
            _mapping_at(raw, parents, source)[leaf] = value
    if columns:
        _mapping_at(raw, ["data", "columns"], source).update(columns)
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, except that an impossible date (``as_of: 2024-13-45``) stays a string, so
    validation names its key instead of YAML failing without one."""


def _timestamp_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def _read_yaml(p: Path) -> dict[str, Any]:
    """The mapping in the YAML file ``p``; ConfigError naming the file when it is not UTF-8 text,
    not YAML or not a mapping."""
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): "
                          "save the file as UTF-8") from None
    try:
        loaded = yaml.load(text, Loader=_ConfigLoader) or {}  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys to values")
    return loaded


def _mapping_at(raw: dict[str, Any], keys: list[str], source: str) -> dict[str, Any]:
    """The nested mapping at ``keys`` in ``raw``, created where missing or null."""
    node = raw
    for i, k in enumerate(keys):
        if node.get(k) is None:
            node[k] = {}
        node = node[k]
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: invalid config: {'.'.join(keys[: i + 1])}: must be a mapping")
    return node


def parse_column_overrides(items: list[str] | None) -> dict[str, str]:
    """Parse repeated ``CANONICAL=SOURCE`` strings (the CLI's ``--column``)."""
    out: dict[str, str] = {}
    for item in items or []:
        canonical, sep, source = item.partition("=")
        if not sep or not canonical.strip() or not source.strip():
            raise ConfigError(f"--column {item!r}: expected CANONICAL=SOURCE, e.g. customer_id='Customer ID'")
        out[canonical.strip()] = source.strip()
    return out
