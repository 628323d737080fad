"""The one chain from cleaned transactions to models and to the score table.

    bundle = fit(transactions, config, as_of)                 # -> ModelBundle (nothing written)
    table = score(bundle, transactions, customers, events, as_of)   # -> one row per customer

Both take *cleaned canonical* frames (``rebuy.data.load_transactions`` / ``load_customers`` /
``load_events`` validate and clean at the boundary); nothing here reads files or validates again.
This module is the only place the chain is written: ``rebuy.train`` (``rebuy train``),
``rebuy.scoring.Scorer`` (``rebuy score``, the offers service) and ``rebuy.spark`` (per partition)
all call it.

fit:   RFM summary -> purchase model + spend model -> value scores -> RFM scores, segments, clusters
       -> recommender (when the data has products) -> manifest entries (params, diagnostics, VIP cut)
score: RFM summary -> value scores -> RFM scores, segments, clusters -> recommendations
       -> offers -> the columns of ``rebuy.schema.score_columns(config)``, in that order
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from rebuy.bundle import ModelBundle
from rebuy.config import Config
from rebuy.errors import ScoringError
from rebuy.progress import step
from rebuy.schema import column, score_columns

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = tuple(column(name).name for name in (
    "frequency", "recency", "T", "monetary_value", "purchase_days", "total_spend", "first_purchase", "last_purchase"))
"""RFM summary columns copied into the score table as they are."""


# --------------------------------------------------------------------------------------------- fit

def fit(transactions: pd.DataFrame, config: Config, as_of: pd.Timestamp) -> ModelBundle:
    """Fit every model on cleaned transactions as of ``as_of`` (midnight; the whole day counts).

    Returns an unsaved :class:`~rebuy.bundle.ModelBundle` whose ``manifest`` holds the training's
    entries (params, diagnostics, clustering, recommender, spend concentration, segment counts and
    the VIP CLV threshold); ``rebuy.bundle.save_model_bundle`` writes it.
    """
    from rebuy.features import rfm_summary, spend_concentration
    from rebuy.models import score_value
    from rebuy.segment import RFMClusterer  # noqa: F401 (imports scikit-learn and scipy.optimize before the timed steps)

    with step("RFM summary", log):
        summary = rfm_summary(transactions, as_of=as_of, time_unit=config.time_unit)
    concentration = spend_concentration(summary)
    if concentration["finding"]:
        log.warning("%s", concentration["finding"])
    purchase_model, spend_model = _fit_value_models(summary, config)
    value = score_value(summary, purchase_model, spend_model, config)
    rfm_scorer, segments = _fit_rfm_scores(summary, config)
    clusterer, profiles = _fit_clusters(summary, config, segments, value["clv_12m"])
    recommender, recommender_info = _fit_recommender(transactions, config, as_of)
    bundle = ModelBundle(config=config, purchase_model=purchase_model, spend_model=spend_model,
                         rfm_scorer=rfm_scorer, clusterer=clusterer, cluster_profiles=profiles,
                         recommender=recommender)
    bundle.manifest = _fit_manifest(bundle, segments, value, recommender_info, concentration)
    return bundle


def _fit_value_models(summary: pd.DataFrame, config: Config) -> tuple[Any, Any]:
    with step("BG/NBD fit", log):
        purchase_model = fit_purchase_model(summary, config)
    with step("Gamma-Gamma fit", log):
        spend_model = fit_spend_model(summary, config)
    return purchase_model, spend_model


def fit_purchase_model(summary: pd.DataFrame, config: Config, *, sample_weight: Any = None,
                       time_unit: str | None = None) -> Any:
    """The purchase model of ``config`` fitted on (frequency, recency, T) rows; ``sample_weight``
    counts the customers behind each row (the Spark path fits distinct rows)."""
    from rebuy.models import BGNBDModel

    kwargs = {"time_unit": time_unit} if time_unit is not None else {}
    return BGNBDModel.from_config(config.bgnbd).fit(summary, sample_weight=sample_weight, **kwargs)


def fit_spend_model(summary: pd.DataFrame, config: Config, *, sample_weight: Any = None) -> Any:
    """The Gamma-Gamma spend model of ``config`` fitted on (frequency, monetary_value) rows."""
    from rebuy.models import GammaGammaModel

    return GammaGammaModel.from_config(config.gamma_gamma).fit(summary, sample_weight=sample_weight)


def _fit_rfm_scores(summary: pd.DataFrame, config: Config) -> tuple[Any, pd.Series]:
    from rebuy.segment import RFMScorer, assign_segments

    with step("RFM scores and segments", log):
        rfm = RFMScorer(n_bins=config.segments.n_bins).fit(summary)
        segments = assign_segments(rfm.transform(summary), config.segments.rules, config.segments.fallback_segment)
    return rfm, segments


def _fit_clusters(summary: pd.DataFrame, config: Config, segments: pd.Series, clv: pd.Series) -> tuple[Any, pd.DataFrame]:
    from rebuy.segment import RFMClusterer, cluster_profiles

    with step("clustering", log):
        clusterer = RFMClusterer.from_config(config.segments, time_unit_days=config.time_unit_days).fit(summary)
        profiles = cluster_profiles(summary, clusterer.labels_, segments=segments, clv=clv,
                                    time_unit_days=config.time_unit_days)
    return clusterer, profiles


def _fit_recommender(transactions: pd.DataFrame, config: Config, as_of: pd.Timestamp) -> tuple[Any, dict[str, Any]]:
    """(recommender or None, the manifest's ``recommender`` entry)."""
    if not config.recommend.enabled:
        return None, {"trained": False, "reason": "disabled in config"}
    if "product_id" not in transactions.columns:
        log.warning("transactions have no product_id column: the recommender is skipped; offers need no products")
        return None, {"trained": False, "reason": "no product_id column"}
    from rebuy.recommend import Recommender

    with step("recommender fit", log):
        rec = Recommender.from_config(config.recommend).fit(transactions, as_of=as_of)
    return rec, {"trained": True, **config.recommend.model_dump(), "n_products": int(len(rec.product_ids_))}


def _fit_manifest(bundle: ModelBundle, segments: pd.Series, value: pd.DataFrame,
                  recommender_info: dict[str, Any], concentration: dict[str, Any]) -> dict[str, Any]:
    """The training's manifest entries (JSON-able)."""
    from rebuy.offers import vip_clv_threshold

    config, pm, sm = bundle.config, bundle.purchase_model, bundle.spend_model
    return {
        "params": {
            "time_unit": config.time_unit,
            "bgnbd": {k: float(v) for k, v in pm.params_.items()},
            "gamma_gamma": {k: float(v) for k, v in sm.params_.items()},
        },
        "model_diagnostics": {
            "bgnbd_log_likelihood": float(getattr(pm, "log_likelihood_", float("nan"))),
            "bgnbd_penalizer_used": float(getattr(pm, "penalizer_", config.bgnbd.penalizer)),
            "gamma_gamma_penalizer_used": float(getattr(sm, "penalizer_", config.gamma_gamma.penalizer)),
            "gamma_gamma_independence_corr": float(getattr(sm, "independence_corr_", float("nan"))),
            "warnings": [*getattr(pm, "warnings_", []), *getattr(sm, "warnings_", [])],
        },
        "clustering": {
            "method": config.segments.cluster_method,
            "n_clusters": int(bundle.clusterer.n_clusters_),
            "silhouette_scores": {str(k): float(v)
                                  for k, v in getattr(bundle.clusterer, "silhouette_scores_", {}).items()},
        },
        "recommender": recommender_info,
        "spend_concentration": concentration,
        "segment_counts": {str(k): int(v) for k, v in segments.value_counts().items()},
        "offers": {"vip_min_clv": vip_clv_threshold(value["clv_12m"], config.offers.vip_top_share)},
    }


# --------------------------------------------------------------------------------------------- score

def score(
    bundle: ModelBundle,
    transactions: pd.DataFrame,
    customers: pd.DataFrame | None = None,
    events: pd.DataFrame | None = None,
    as_of: pd.Timestamp | None = None,
    *,
    scored_at: pd.Timestamp | None = None,
    vip_min_clv: float | None = None,
) -> pd.DataFrame:
    """The score table: one row per customer of ``transactions`` (cleaned canonical lines).

    ``as_of`` (midnight) defaults to the day of the last transaction. VIP status uses the training
    run's CLV threshold (``bundle.vip_min_clv``) unless ``vip_min_clv`` is given, so a customer
    scored alone gets the same offer as in the batch. Columns: ``rebuy.schema.score_columns``.
    """
    from rebuy.dates import resolve_as_of
    from rebuy.offers import assign_offers

    as_of = resolve_as_of(transactions["timestamp"], as_of)
    table = customer_table(bundle, transactions, as_of)
    last_products, cross_sell = _recommend(bundle, transactions, table)
    with step("offers", log):
        offers = assign_offers(
            table, bundle.config, as_of=as_of, customers=customers, events=events,
            last_order_products=last_products, cross_sell=cross_sell, transactions=transactions,
            vip_min_clv=vip_min_clv if vip_min_clv is not None else bundle.vip_min_clv,
        )
    for c in offers.columns:
        table[c] = offers[c].to_numpy()
    table["model_run_id"] = bundle.run_id
    table["scored_at"] = pd.Timestamp(scored_at) if scored_at is not None else pd.Timestamp.now(tz="UTC").tz_localize(None)
    return _in_schema_order(table, bundle.config)


def value_scores(bundle: ModelBundle, summary: pd.DataFrame) -> pd.DataFrame:
    """P(alive), expected purchases, order value, CLV, net LTV, next purchase date and churn risk per
    customer of an RFM summary (indexed like it)."""
    from rebuy.models import score_value

    return score_value(summary, bundle.purchase_model, bundle.spend_model, bundle.config)


def customer_table(bundle: ModelBundle, transactions: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Segments, clusters, the RFM summary and the value scores, one row per customer (a
    ``customer_id`` column), before recommendations and offers."""
    from rebuy.features import rfm_summary
    from rebuy.segment import assign_segments

    cfg = bundle.config
    with step("RFM summary", log):
        summary = rfm_summary(transactions, as_of=as_of, time_unit=cfg.time_unit)
    with step("value models", log):
        value = value_scores(bundle, summary)
    with step("segments and clusters", log):
        rfm = bundle.rfm_scorer.transform(summary)
        segment = assign_segments(rfm, cfg.segments.rules, cfg.segments.fallback_segment)
        cluster = pd.Series(bundle.clusterer.predict(summary), index=summary.index)
        cluster_label = cluster.map(bundle.cluster_profiles["label"]).fillna("unprofiled").astype(str)
    table = pd.DataFrame(index=summary.index)
    table["segment"] = segment
    table[["r_score", "f_score", "m_score"]] = rfm[["r_score", "f_score", "m_score"]]
    table["cluster"] = cluster.astype("int64")
    table["cluster_label"] = cluster_label
    for c in SUMMARY_COLUMNS:
        table[c] = summary[c]
    for c in value.columns:
        table[c] = value[c]
    return table.reset_index()


def _recommend(bundle: ModelBundle, transactions: pd.DataFrame, table: pd.DataFrame) -> tuple[pd.Series | None, Any]:
    """Fill ``table["recommended_products"]``; return (last-order products, bought-together lookup)
    for the cross-sell rule, or (None, None) without a recommender or products."""
    rec = bundle.recommender
    if rec is not None and "product_id" not in transactions.columns:
        log.warning("transactions have no product_id column: no recommendations or product offers")
        rec = None
    if rec is None:
        table["recommended_products"] = [[] for _ in range(len(table))]
        return None, None
    with step("recommendations", log):
        country = None
        if "country" in transactions.columns:
            country = transactions.groupby("customer_id", observed=True)["country"].last()
        table["recommended_products"] = rec.recommend(
            table["customer_id"].tolist(), n=bundle.config.recommend.n_items, segments=country, output="lists"
        )
    # products the recommender never saw (postage, fees, new items) cannot seed a cross-sell
    known = transactions["product_id"].isin(rec.product_ids_)
    return last_order_products(transactions[known]), rec.bought_together


def last_order_products(transactions: pd.DataFrame) -> pd.Series:
    """customer_id -> list of the distinct product ids of their last purchase day (first-seen order)."""
    day = transactions["timestamp"].dt.normalize()
    last_day = day.groupby(transactions["customer_id"], observed=True).transform("max")
    last = transactions.loc[day == last_day, ["customer_id", "product_id"]].drop_duplicates()
    cust, uniques = pd.factorize(last["customer_id"], sort=False)
    order = np.argsort(cust, kind="stable")
    products = last["product_id"].to_numpy(dtype=object)[order]
    starts = np.searchsorted(cust[order], np.arange(len(uniques)))
    lists = np.split(products, starts[1:])
    return pd.Series([list(x) for x in lists], index=pd.Index(uniques, name="customer_id"), dtype=object)


def _in_schema_order(table: pd.DataFrame, config: Config) -> pd.DataFrame:
    """The table's columns in ``score_columns(config)`` order; any column missing is a bug."""
    names = [c.name for c in score_columns(config)]
    missing = [c for c in names if c not in table.columns]
    if missing:
        raise AssertionError(f"internal: score table lacks columns {missing}")
    extra = [c for c in table.columns if c not in names]
    if extra:
        raise AssertionError(f"internal: score table has columns outside rebuy.schema: {extra}")
    return table[names]


def check_scores(scores: pd.DataFrame) -> None:
    """Refuse to publish a table with a missing segment or a non-finite number."""
    from rebuy.outputs import non_finite_columns

    if scores["segment"].isna().any():
        raise ScoringError("score table has customers without a segment")
    bad = non_finite_columns(scores)
    if bad:
        raise ScoringError(f"score table has NaN or infinite values in {bad}")
