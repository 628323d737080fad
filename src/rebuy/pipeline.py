"""The one chain from cleaned transactions to models and to the score table.

    bundle = fit(transactions, config, as_of)                 # -> ModelBundle (nothing written)
    table = score(bundle, transactions, customers, events, as_of)   # -> one row per customer

Both take *cleaned canonical* frames (``rebuy.data.load_transactions`` / ``load_customers`` /
``load_events`` validate and clean at the boundary); nothing here reads files or validates again.
This module is the only place the chain is written: ``rebuy.train`` (``rebuy train``),
``rebuy.scoring.Scorer`` (``rebuy score``, the offers service) and ``rebuy.spark`` (per partition)
all call it.

fit:   RFM summary -> wholesale customers (``wholesale``; left out of the value-model fits) -> purchase model (chosen on holdout windows under ``purchase_model: auto``) and
       its p_purchase_90d calibrator -> spend model -> CLV ranker (``clv.method``) -> value scores
       -> RFM scores, segments, clusters -> recommender (when the data has products) -> manifest
       entries (params, selection, clv method, diagnostics, VIP cut, wholesale share)
score: RFM summary -> value scores -> RFM scores, segments, clusters, wholesale flag -> recommendations
       -> offers -> the columns of ``rebuy.schema.score_columns(config)``, in that order
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rebuy.bundle import ModelBundle
from rebuy.config import Config
from rebuy.data.values import is_in
from rebuy.errors import ScoringError
from rebuy.offers.evidence import Evidence, annotate_reasons
from rebuy.progress import step
from rebuy.schema import column, score_columns

if TYPE_CHECKING:
    from rebuy.models import PurchaseModel, SpendModel
    from rebuy.models.ranker import CLVRanker
    from rebuy.models.selection import ProbabilityCalibrator
    from rebuy.offers.control import ShareDecision

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
    if concentration["finding"] and config.wholesale.rule == "none":
        log.warning("%s (config wholesale.rule separates them)", concentration["finding"])
    wholesale, wholesale_info = _wholesale(summary, config)
    if concentration["finding"] and wholesale_info["min_order_value"] is not None:
        concentration["finding"] = (
            f"{concentration['large_order_customers_share']:.1%} of customers order more than "
            f"{concentration['large_order_multiple']:g}x the median order value and bring "
            f"{concentration['large_order_revenue_share']:.0%} of revenue; wholesale.rule marks "
            f"{wholesale_info['customers']:,} wholesale customers ({wholesale_info['revenue_share']:.0%} of revenue), "
            "kept out of the value-model fits and of consumer offers.")
    consumer_tx = transactions if not wholesale.any() else transactions[
        ~is_in(transactions["customer_id"], summary.index[wholesale])]
    values = fit_value_models(consumer_tx, summary[~wholesale], config, as_of)
    with step("value scores of the training customers (VIP threshold, segments)", log):
        value = score_value(summary, values.purchase_model, values.spend_model, config, calibrator=values.calibrator)
        value = apply_clv_ranker(value, values.clv_ranker, transactions, summary, config, as_of)
    rfm_scorer, segments = _fit_rfm_scores(summary, config)
    clusterer, profiles = _fit_clusters(summary, config, segments, value["clv_12m"])
    recommender, recommender_info = _fit_recommender(transactions, config, as_of)
    bundle = ModelBundle(config=config, purchase_model=values.purchase_model, spend_model=values.spend_model,
                         rfm_scorer=rfm_scorer, clusterer=clusterer, cluster_profiles=profiles,
                         recommender=recommender, purchase_calibrator=values.calibrator,
                         clv_ranker=values.clv_ranker)
    bundle.manifest = _fit_manifest(bundle, segments, value[~wholesale], recommender_info, concentration, values)
    bundle.manifest["wholesale"] = wholesale_info
    bundle.training_values = TrainingValues(weakref.ref(transactions), as_of, summary, value)
    return bundle


@dataclass(frozen=True, eq=False)
class TrainingValues:
    """The value scores a training computed for its customers, kept on the in-memory bundle: the same
    transactions (the very object, held weakly), as-of day and RFM summary give the same scores.
    :func:`value_scores` hands them out once and drops them from the bundle."""

    transactions: weakref.ref[pd.DataFrame]
    as_of: pd.Timestamp
    summary: pd.DataFrame
    value: pd.DataFrame

    def matches(self, summary: pd.DataFrame, transactions: pd.DataFrame, as_of: pd.Timestamp) -> bool:
        """Whether the scores of ``summary`` of ``transactions`` as of ``as_of`` are these."""
        return (self.transactions() is transactions and pd.Timestamp(as_of) == self.as_of
                and summary.equals(self.summary))


def _wholesale(summary: pd.DataFrame, config: Config) -> tuple[np.ndarray, dict[str, Any]]:
    """(wholesale flag per summary row, the manifest's ``wholesale`` entry) under ``config.wholesale``."""
    from rebuy.offers.wholesale import mark_wholesale, wholesale_cut, wholesale_report

    cut = wholesale_cut(summary, config.wholesale)
    flags = mark_wholesale(summary, cut)
    info = wholesale_report(summary, flags, config.wholesale, cut)
    if cut is not None:
        log.info("wholesale: %d customers (%.1f%%) spend more than %.2f per purchase day and bring %.0f%% of revenue: "
                 "left out of the purchase and spend model fits and of consumer offers", info["customers"],
                 100 * info["customer_share"], cut, 100 * info["revenue_share"])
    return flags, info


def wholesale_flags(bundle: ModelBundle, summary: pd.DataFrame) -> np.ndarray:
    """Per customer of ``summary``: wholesale under the training run's cut (none when the bundle has no cut)."""
    from rebuy.offers.wholesale import mark_wholesale

    cut = (bundle.manifest.get("wholesale") or {}).get("min_order_value")
    if cut is None and bundle.config.wholesale.rule != "none":
        log.warning("the bundle records no wholesale cut (trained before config wholesale was set): nobody is "
                    "marked wholesale; retrain to apply wholesale.rule")
    return mark_wholesale(summary, cut)


@dataclass
class ValueModels:
    """The fitted value models of one training run and how they were chosen."""

    purchase_model: PurchaseModel
    spend_model: SpendModel
    calibrator: ProbabilityCalibrator | None
    clv_ranker: CLVRanker | None
    selection: dict[str, Any]


def fit_value_models(transactions: pd.DataFrame, summary: pd.DataFrame, config: Config,
                     as_of: pd.Timestamp) -> ValueModels:
    """The purchase model (chosen on a holdout inside the window under ``purchase_model: auto``),
    the 90-day probability calibrator, the spend model and the CLV ranker (``clv.method``)."""
    from rebuy.models.selection import select_purchase_model

    with step("purchase model selection", log):
        windows = selection_windows(transactions, config, as_of)
        selection = select_purchase_model(windows, config, lambda name, s, pen, start: fit_purchase_model(
            s, config, name=name, penalizer=pen, start_from=start))
    log.info("purchase model: %s", selection.report.get("reason", selection.name))
    with step("purchase model fit", log):
        purchase_model = fit_purchase_model(summary, config, name=selection.name, penalizer=selection.penalizer)
        purchase_model.standard_errors_  # noqa: B018 (computed while the fit's data are in memory: intervals use them)
    with step("Gamma-Gamma fit", log):
        spend_model = fit_spend_model(summary, config)
        spend_model.standard_errors_  # noqa: B018
    ranker = _fit_clv_ranker(transactions, summary, config, as_of, purchase_model)
    return ValueModels(purchase_model, spend_model, selection.calibrator, ranker, selection.report)


def selection_windows(transactions: pd.DataFrame, config: Config, as_of: pd.Timestamp) -> list[pd.DataFrame]:
    """The calibration/holdout splits :mod:`rebuy.models.selection` scores the candidates on: one
    per ``HOLDOUT_DAYS``-day period before ``as_of`` (most recent first, at most
    ``selection.windows``), each with at least that much history before its cut, on a random sample
    of at most ``selection.max_customers`` customers. Empty when the history is too short."""
    from rebuy.features import calibration_holdout_split, customer_sample
    from rebuy.models.selection import HOLDOUT_DAYS

    sel = config.selection
    sample = customer_sample(transactions, sel.max_customers, sel.random_state)
    first = sample["timestamp"].min().normalize()
    period = pd.Timedelta(days=HOLDOUT_DAYS)
    windows = []
    for k in range(1, sel.windows + 1):
        cut = as_of - k * period
        if cut - first < period:
            break
        split = calibration_holdout_split(sample, cut, cut + period, time_unit=config.time_unit)
        if len(split) >= 2 and (split["frequency"] > 0).any():
            windows.append(split)
    return windows


def fit_purchase_model(summary: pd.DataFrame, config: Config, *, name: str | None = None,
                       penalizer: float | None = None, sample_weight: Any = None,
                       time_unit: str | None = None, start_from: PurchaseModel | None = None) -> PurchaseModel:
    """The purchase model ``name`` (default: ``config.purchase_model``, BG/NBD for ``auto``) with
    its config section (``penalizer``, when given, replaces the section's: the selection's ridge),
    fitted on (frequency, recency, T) rows; ``sample_weight`` counts the customers behind each row
    (the Spark path fits distinct rows); ``start_from`` (a fitted model of that kind) starts the
    optimiser at its optimum (``PurchaseModel.fit``)."""
    from rebuy.models import PURCHASE_MODELS

    name = name or (config.purchase_model if config.purchase_model != "auto" else "bgnbd")
    kwargs = {"time_unit": time_unit} if time_unit is not None else {}
    model = PURCHASE_MODELS[name].from_config(getattr(config, name))
    if penalizer is not None:
        model.penalizer = float(penalizer)
    return model.fit(summary, sample_weight=sample_weight, start_from=start_from, **kwargs)


def _fit_clv_ranker(transactions: pd.DataFrame, summary: pd.DataFrame, config: Config, as_of: pd.Timestamp,
                    purchase_model: PurchaseModel) -> CLVRanker | None:
    """The CLV ranking model trained on a shifted window (None under ``clv.method: model``); its
    features include the predictions of this run's purchase model (its class and penalizer) and the
    spend model, fitted on the shifted window's summary."""
    if config.clv.method == "model":
        return None
    from rebuy.models import GammaGammaModel
    from rebuy.models.ranker import CLVRanker

    name, penalizer = _model_name(type(purchase_model)), purchase_model.penalizer

    def predict_value(shifted: pd.DataFrame) -> pd.DataFrame:
        pm = fit_purchase_model(shifted, config, name=name, penalizer=penalizer)
        sm = GammaGammaModel.from_config(config.gamma_gamma).fit(shifted)
        return prediction_columns(shifted, pm, sm)

    with step("CLV ranker fit", log):
        ranker = CLVRanker(horizon_days=config.clv.ranker_horizon_days, time_unit=config.time_unit)
        return ranker.fit(transactions, as_of, predict_value)


def prediction_columns(summary: pd.DataFrame, purchase_model: PurchaseModel, spend_model: SpendModel) -> pd.DataFrame:
    """The value-score columns the CLV ranker reads (P(alive), expected purchases in 90 and 365
    days, expected order value), alone: indexed like ``summary``."""
    from rebuy.dates import unit_days
    from rebuy.models.inputs import distinct_rows

    x, tx, T, m = (summary[c].to_numpy(dtype=np.float64) for c in ("frequency", "recency", "T", "monetary_value"))
    rows, _, inv = distinct_rows(x, tx, T)
    forecast = purchase_model.conditional(*rows)
    u = unit_days(purchase_model.time_unit_)
    return pd.DataFrame({"p_alive": forecast.p_alive()[inv],
                         "expected_purchases_90d": forecast.expected_purchases(90 / u)[inv],
                         "expected_purchases_365d": forecast.expected_purchases(365 / u)[inv],
                         "expected_order_value": spend_model.expected_order_value(x, m)}, index=summary.index)


def _ranker_inputs() -> tuple[str, ...]:
    """Value-score columns the CLV ranker takes as features."""
    from rebuy.models.ranker_features import PREDICTION_COLUMNS

    return PREDICTION_COLUMNS


def _model_name(purchase_cls: type) -> str:
    from rebuy.models import PURCHASE_MODELS

    return next(name for name, cls in PURCHASE_MODELS.items() if cls is purchase_cls)


def clv_method(ranker: CLVRanker | None, config: Config) -> str:
    """"ranker" when the ranking model sets clv_12m (``clv.method: ranker``, or ``auto`` and it won
    its internal holdout), else "model" (purchase x spend models)."""
    if ranker is None or getattr(ranker, "model_", None) is None:
        return "model"
    return "ranker" if config.clv.method == "ranker" or ranker.use_ else "model"


def ranker_report(ranker: CLVRanker | None) -> dict[str, Any] | None:
    """The CLV ranker's JSON-able record: whether it won its internal holdout, why, the figures."""
    if ranker is None:
        return None
    return {"use": bool(ranker.use_), "reason": ranker.reason_, "horizon_days": int(ranker.horizon_days_),
            "holdout": ranker.holdout_}


def apply_clv_ranker(value: pd.DataFrame, ranker: CLVRanker | None, transactions: pd.DataFrame,
                     summary: pd.DataFrame, config: Config, as_of: pd.Timestamp) -> pd.DataFrame:
    """``value`` with ``clv_12m``, ``clv_{H}m`` and ``net_ltv`` from the ranker's predicted revenue
    when :func:`clv_method` says so: its spend over ``horizon_days_`` as a steady monthly rate,
    times ``clv.margin``, discounted monthly at ``clv.discount_rate`` (currency)."""
    if clv_method(ranker, config) != "ranker":
        return value
    from rebuy.models.value import CONTRACT_CLV_MONTHS

    cc = config.clv
    revenue = ranker.predict(transactions, summary, value[list(_ranker_inputs())], as_of)
    monthly = cc.margin * revenue / ranker.horizon_days_ * (365.25 / 12)
    out = value.copy()
    for months in {CONTRACT_CLV_MONTHS, cc.horizon_months}:
        discount = float(sum((1.0 + cc.discount_rate) ** -i for i in range(1, months + 1)))
        out[f"clv_{months}m"] = monthly * discount
    out["net_ltv"] = out[f"clv_{cc.horizon_months}m"] - cc.acquisition_cost - cc.retention_cost * cc.horizon_months / 12.0
    return out


def fit_spend_model(summary: pd.DataFrame, config: Config, *, sample_weight: Any = None) -> SpendModel:
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


def _fit_manifest(bundle: ModelBundle, segments: pd.Series, value: pd.DataFrame, recommender_info: dict[str, Any],
                  concentration: dict[str, Any], values: ValueModels) -> dict[str, Any]:
    """The training's manifest entries (JSON-able)."""
    from rebuy.offers import vip_clv_threshold

    config, pm, sm = bundle.config, bundle.purchase_model, bundle.spend_model
    name = _model_name(type(pm))
    ranker = bundle.clv_ranker
    return {
        "params": {
            "time_unit": config.time_unit,
            "purchase_model": name,
            name: {k: float(v) for k, v in pm.params_.items()},
            "gamma_gamma": {k: float(v) for k, v in sm.params_.items()},
        },
        "purchase_model_selection": values.selection,
        "clv": {
            "method": clv_method(ranker, config),
            "config_method": config.clv.method,
            "ranker": ranker_report(ranker),
        },
        "model_diagnostics": {
            "purchase_model": name,
            "purchase_model_log_likelihood": float(getattr(pm, "log_likelihood_", float("nan"))),
            "purchase_model_penalizer_used": float(getattr(pm, "penalizer_", getattr(config, name).penalizer)),
            "purchase_model_standard_errors": {k: float(v) for k, v in pm.standard_errors_.items()},
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
    evidence: Evidence | None = None,
    control_shares: Mapping[str, ShareDecision] | None = None,
) -> pd.DataFrame:
    """The score table: one row per customer of ``transactions`` (cleaned canonical lines).

    ``as_of`` (midnight) defaults to the day of the last transaction. VIP status uses the training
    run's CLV threshold (``bundle.vip_min_clv``) unless ``vip_min_clv`` is given, so a customer
    scored alone gets the same offer as in the batch. ``evidence`` (from ``rebuy measure``)
    re-orders the offer priority (:mod:`rebuy.offers.evidence`). Control groups
    (:mod:`rebuy.offers.control`) use ``control_shares`` when given (a single customer or a Spark
    partition uses the night's), else the shares of this table's offer counts; the experiment, the
    shares and their notes are in ``table.attrs["experiment"]``. Columns:
    ``rebuy.schema.score_columns``.
    """
    from rebuy.dates import resolve_as_of
    from rebuy.offers import assign_offers

    as_of = resolve_as_of(transactions["timestamp"], as_of)
    config = with_evidence(bundle.config, evidence)
    table = customer_table(bundle, transactions, as_of)
    last_products, cross_sell = _recommend(bundle, transactions, table)
    with step("offers", log):
        offers = assign_offers(
            table, config, as_of=as_of, customers=customers, events=events,
            last_order_products=last_products, cross_sell=cross_sell, transactions=transactions,
            vip_min_clv=vip_min_clv if vip_min_clv is not None else bundle.vip_min_clv,
            product_names=recommender_names(bundle),
        )
    for c in offers.columns:
        table[c] = offers[c].to_numpy()
    with step("control groups", log):
        table, experiment = experiment_groups(table, config, as_of, evidence, control_shares)
    table["model_run_id"] = bundle.run_id
    table["scored_at"] = pd.Timestamp(scored_at) if scored_at is not None else pd.Timestamp.now(tz="UTC").tz_localize(None)
    out = _in_schema_order(table, bundle.config)
    out.attrs["experiment"] = experiment
    return out


def recommender_names(bundle: ModelBundle) -> dict[str, str]:
    """Product id -> description the recommender learnt (empty without one or without descriptions):
    names for recommended products a customer scored alone never bought."""
    rec = bundle.recommender
    info = getattr(rec, "products_", None)
    if info is None or info.description is None:
        return {}
    return {str(p): d for p, d in zip(rec.product_ids_, info.description, strict=True) if isinstance(d, str) and d.strip()}


def with_evidence(config: Config, evidence: Evidence | None) -> Config:
    """``config`` with the offer priority the evidence sets (unchanged without evidence)."""
    if evidence is None:
        return config
    offers = config.offers.model_copy(update={"priority": [t for t in evidence.priority if t != "reminder"]})
    return config.model_copy(update={"offers": offers})


def decision_day(as_of: pd.Timestamp) -> pd.Timestamp:
    """The first day a decision made on data to ``as_of`` can act (``decided_at`` in the offer log)."""
    from rebuy.dates import cutoff_after

    return cutoff_after(pd.Timestamp(as_of))


def experiment_groups(table: pd.DataFrame, config: Config, as_of: pd.Timestamp, evidence: Evidence | None,
                      shares: Mapping[str, ShareDecision] | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The offer columns after the evidence's harmful reminders are dropped and the control groups
    are held out; and the experiment's description (key, decision day, shares, notes)."""
    from rebuy.offers.control import experiment_key, hold_out, nightly_shares

    oc = config.offers
    if evidence is not None:
        table = _drop_harmful_reminders(table, evidence)
        table["offer_reason"] = annotate_reasons(table["offer_type"].to_numpy(dtype=object),
                                                 table["offer_reason"].to_numpy(dtype=object), evidence)
        table["offer_reason"] = table["offer_reason"].astype("string")
    decided_at = decision_day(as_of)
    key = experiment_key(oc.experiment_key, decided_at)
    if shares is None:
        shares = nightly_shares(table["offer_type"], oc.control_share, oc.min_control, oc.max_control_share)
    table = hold_out(table, experiment=key, shares=shares)
    return table, {"experiment": key, "decided_at": decided_at.strftime("%Y-%m-%d"),
                   "shares": {t: d.share for t, d in shares.items()},
                   "notes": {t: d.note for t, d in shares.items() if d.note},
                   "evidence": evidence.report() if evidence is not None else None}


def _drop_harmful_reminders(table: pd.DataFrame, evidence: Evidence) -> pd.DataFrame:
    """Reminders measured harmful become "none" (a rule is switched off through the priority
    instead; a reminder is the guards' outcome, not a rule)."""
    if "reminder" not in evidence.switched_off:
        return table
    rows = table["offer_type"].to_numpy(dtype=object) == "reminder"
    if rows.any():
        table = table.copy()
        table.loc[rows, ["offer_type", "channel"]] = "none"
        table.loc[rows, ["offer_value", "discount_cost"]] = 0.0
        table.loc[rows, "max_contacts_per_month"] = 0
        table.loc[rows, "offer_products"] = pd.Series([[] for _ in range(int(rows.sum()))], dtype=object,
                                                      index=table.index[rows])
        table.loc[rows, "offer_reason"] = f"Reminders were measured harmful ({evidence.source}): no message."
    return table


def value_scores(bundle: ModelBundle, summary: pd.DataFrame, transactions: pd.DataFrame,
                 as_of: pd.Timestamp) -> pd.DataFrame:
    """P(alive), the calibrated 90-day purchase probability, expected purchases, order value, CLV
    (from the ranker when the bundle's ``clv.method`` is "ranker"), spend and its interval, net LTV,
    next purchase date and churn risk per customer of an RFM summary of ``transactions`` as of
    ``as_of`` (indexed like the summary)."""
    from rebuy.models import score_value

    memo = bundle.training_values
    if memo is not None and memo.matches(summary, transactions, as_of):
        log.debug("value scores: the training's own (same transactions, as-of day and summary)")
        bundle.training_values = None  # used once: the frames are freed with the table built from them
        return memo.value
    cfg = bundle.config
    value = score_value(summary, bundle.purchase_model, bundle.spend_model, cfg, calibrator=bundle.purchase_calibrator)
    return apply_clv_ranker(value, bundle.clv_ranker, transactions, summary, cfg, as_of)


def customer_table(bundle: ModelBundle, transactions: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Segments, clusters, the RFM summary and the value scores, one row per customer (a
    ``customer_id`` column), before recommendations and offers."""
    from rebuy.features import rfm_summary
    from rebuy.segment import assign_segments

    cfg = bundle.config
    with step("RFM summary", log):
        summary = rfm_summary(transactions, as_of=as_of, time_unit=cfg.time_unit)
    with step("value models", log):
        value = value_scores(bundle, summary, transactions, as_of)
    with step("segments and clusters", log):
        rfm = bundle.rfm_scorer.transform(summary)
        segment = assign_segments(rfm, cfg.segments.rules, cfg.segments.fallback_segment)
        cluster = pd.Series(bundle.clusterer.predict(summary), index=summary.index)
        cluster_label = cluster.map(bundle.cluster_profiles["label"]).fillna("unprofiled").astype(str)
    table = pd.DataFrame(index=summary.index)
    table["segment"] = segment
    table["wholesale"] = wholesale_flags(bundle, summary)
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
    known = is_in(transactions["product_id"], pd.array(np.asarray(rec.product_ids_, dtype=object), dtype="string"))
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
