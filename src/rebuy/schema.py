"""The score table's schema: every column once, with its kind and its meaning.

One row per customer (``rebuy score``, ``Scorer.score``, ``rebuy.spark.score_spark``). Everything
that needs the columns reads them from here: the pipeline orders its output by
:func:`score_columns`, the Spark path builds its Spark schema and Arrow-friendly batches from
:attr:`Column.kind`, the report reads the columns it shows, and ``tests/test_schema.py`` checks the
README's "The score table" section against :data:`SCORE_TABLE`.

Kinds: ``string`` (pandas "string", nullable), ``int`` (int64), ``float`` (float64, always finite),
``bool``, ``datetime`` (naive datetime64[ns], NaT allowed only where the description says "empty"),
``list`` (a Python list of product ids per row).

Columns whose name depends on the config (``expected_purchases_{h}d`` for each extra
``clv.horizons_days`` and ``clv_{H}m`` when ``clv.horizon_months`` is not 12) follow the fixed ones,
in that order (:func:`score_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rebuy.config import Config

Kind = Literal["string", "int", "float", "bool", "datetime", "list"]


@dataclass(frozen=True)
class Column:
    """One score-table column: its name, kind (see the module docstring) and meaning (units included)."""

    name: str
    kind: Kind
    description: str


SCORE_HORIZONS_DAYS = (30, 90, 365)
"""Horizons (days) of expected purchases always in the score table; the config may add more."""

SCORE_TABLE: tuple[Column, ...] = (
    Column("customer_id", "string", "the customer"),
    Column("segment", "string", "named RFM segment (Champions, Loyal Customers, Potential Loyalists, New "
           "Customers, Promising, Need Attention, About to Sleep, At Risk, Can't Lose Them, Hibernating, Lost) "
           "from `segments.rules`"),
    Column("wholesale", "bool", "a wholesale or business customer (`wholesale.rule`, cut fixed at training): left "
           "out of the purchase and spend model fits, scored with the consumer models, no consumer offer"),
    Column("r_score", "int", "1–5 quantile score of days since the last purchase, boundaries fixed at training"),
    Column("f_score", "int", "1–5 quantile score of purchase days, boundaries fixed at training"),
    Column("m_score", "int", "1–5 quantile score of total spend, boundaries fixed at training"),
    Column("cluster", "int", "KMeans cluster on log/robust-scaled RFM (k by simplified silhouette, `segments.k_criterion`)"),
    Column("cluster_label", "string", "the cluster's readable label, e.g. \"High value, active\""),
    Column("frequency", "float", "repeat purchase days (purchase days − 1)"),
    Column("recency", "float", "first to last purchase, in the config's time unit (weeks by default)"),
    Column("T", "float", "first purchase to the as-of day, in the config's time unit"),
    Column("monetary_value", "float", "mean value of the repeat purchase days (0 for one-time buyers), currency"),
    Column("purchase_days", "int", "days with at least one purchase (several orders on one day count once)"),
    Column("total_spend", "float", "net spend over the whole history, currency"),
    Column("first_purchase", "datetime", "day of the first purchase"),
    Column("last_purchase", "datetime", "day of the last purchase"),
    Column("p_alive", "float", "probability the customer is still active, from the purchase model the manifest "
           "names (`params.purchase_model`: BG/NBD, MBG/NBD or Pareto/NBD)"),
    Column("p_purchase_90d", "float", "probability of at least one purchase in the next 90 days, calibrated on a "
           "holdout inside the training window"),
    Column("expected_purchases_30d", "float", "expected purchase days in the next 30 days"),
    Column("expected_purchases_90d", "float", "expected purchase days in the next 90 days"),
    Column("expected_purchases_365d", "float", "expected purchase days in the next 365 days"),
    Column("expected_order_value", "float", "Gamma-Gamma expected value of the next order, currency"),
    Column("clv_12m", "float", "discounted 12-month margin (× `clv.margin`, monthly `clv.discount_rate`), "
           "currency; from the ranking model or the purchase × spend models (`clv.method` in the manifest)"),
    Column("spend_12m", "float", "expected revenue in the next 365 days (before margin and discount), currency"),
    Column("spend_12m_p05", "float", "lower end of the 90% predictive interval of the next 365 days' revenue "
           "(purchase and spend randomness and parameter uncertainty), currency"),
    Column("spend_12m_p95", "float", "upper end of that 90% interval, currency"),
    Column("net_ltv", "float", "CLV over `clv.horizon_months` − acquisition cost − retention cost per year "
           "(config), currency"),
    Column("churn_risk", "string", "low / medium / high from `p_purchase_90d` (`clv.churn_risk_thresholds`)"),
    Column("next_purchase_date", "datetime", "first day by which a purchase is more likely than not (empty when "
           "not within `clv.next_purchase_max_days`)"),
    Column("recommended_products", "list", "top-N products (`recommend.n_items`)"),
    Column("offer_type", "string", "the one offer: birthday, browse_abandonment, cross_sell, win_back, vip, "
           "spend_tier, referral, loyalty_points, reminder or none"),
    Column("offer_value", "float", "the offer's value: discount share, points or currency by type"),
    Column("offer_products", "list", "the products the offer names"),
    Column("channel", "string", "messenger / email / sms / none (no offer, or a decision not sent: consent unknown "
           "or absent, or below `offers.min_contact_age`; the reason says which)"),
    Column("max_contacts_per_month", "int", "the channel's contact cap"),
    Column("offer_reason", "string", "a sentence with the customer's own numbers, e.g. \"P(alive) fell to 0.34 …\""),
    Column("discount_cost", "float", "expected cost of the discount, currency (0 for a control customer or one "
           "known not to be reachable: nothing is sent; counted when consent is unknown)"),
    Column("group", "string", "treatment / control (held out at random to measure the offer type, "
           "`offers.control_share`) / none (no offer)"),
    Column("deliver", "bool", "send it: a treated customer with an allowed channel"),
    Column("model_run_id", "string", "the bundle used"),
    Column("scored_at", "datetime", "when the row was scored (UTC)"),
)
"""The fixed columns of the score table, in order."""

SCORE_COLUMNS: list[str] = [c.name for c in SCORE_TABLE]
"""Names of the fixed score-table columns, in order."""

_BY_NAME = {c.name: c for c in SCORE_TABLE}


OFFER_LOG_TABLE: tuple[Column, ...] = (
    _BY_NAME["customer_id"],
    Column("decided_at", "datetime", "the first day the decision can act: the scoring as-of day + 1 (midnight)"),
    Column("run_id", "string", "the scoring run (`score-YYYYMMDD` of `decided_at`): a rerun replaces its rows"),
    _BY_NAME["model_run_id"],
    Column("experiment", "string", "the experiment key of the control draw (`offers.experiment_key`, default "
           "the month of `decided_at`)"),
    Column("offer_type", "string", "the offer decided (never none: customers without an offer are not logged)"),
    *(_BY_NAME[c] for c in ("offer_value", "discount_cost", "channel")),
    Column("group", "string", "treatment / control"),
    Column("deliver", "bool", "sent (treatment with an allowed channel)"),
    Column("control_share", "float", "the control share of this offer type on this night"),
    *(_BY_NAME[c] for c in ("segment", "p_purchase_90d", "expected_purchases_90d", "total_spend", "scored_at")),
)
"""The offer log's columns (``rebuy score`` appends one row per customer with an offer; read by
``rebuy measure``)."""

OFFER_LOG_COLUMNS: list[str] = [c.name for c in OFFER_LOG_TABLE]


def extra_columns(config: Config) -> list[Column]:
    """The config-dependent columns that follow :data:`SCORE_TABLE` (extra horizons, CLV at H months)."""
    out = [
        Column(f"expected_purchases_{h}d", "float", f"expected purchase days in the next {h} days")
        for h in sorted(set(config.clv.horizons_days))
        if f"expected_purchases_{h}d" not in _BY_NAME
    ]
    h = config.clv.horizon_months
    if f"clv_{h}m" not in _BY_NAME:
        out.append(Column(f"clv_{h}m", "float", f"discounted {h}-month margin, currency"))
    return out


def score_columns(config: Config) -> list[Column]:
    """Every column of a score table scored with ``config``, in output order."""
    return [*SCORE_TABLE, *extra_columns(config)]


def column(name: str) -> Column:
    """The fixed column called ``name`` (KeyError for another name)."""
    return _BY_NAME[name]


def columns_of_kind(columns: list[Column], kind: Kind) -> list[str]:
    """Names of the ``columns`` of one kind."""
    return [c.name for c in columns if c.kind == kind]


def markdown_table(columns: tuple[Column, ...] | list[Column] = SCORE_TABLE) -> str:
    """The columns as the README's Markdown table (``tests/test_schema.py`` keeps the README equal)."""
    lines = ["| column | kind | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{c.name}` | {c.kind} | {c.description} |" for c in columns]
    return "\n".join(lines)
