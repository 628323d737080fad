"""Training: the function behind ``rebuy train``.

transactions -> clean -> RFM summary -> segments + clusters | BG/NBD + Gamma-Gamma | recommender
-> one bundle directory (joblib artefacts + manifest.json with checksums).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rebuy.config import Config
from rebuy.progress import step

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one training run produced."""

    bundle_dir: Path
    manifest: dict[str, Any]
    artefacts: dict[str, Any] = field(repr=False)


def resolve_as_of(transactions: pd.DataFrame, as_of: dt.date | str | None) -> pd.Timestamp:
    """The scoring date: the given one, else the day of the last transaction (midnight)."""
    if as_of is not None:
        return pd.Timestamp(as_of).normalize()
    return pd.Timestamp(transactions["timestamp"].max()).normalize()


def fit_models(transactions: pd.DataFrame, config: Config, as_of: pd.Timestamp) -> tuple[dict[str, Any], dict]:
    """Fit every model on cleaned transactions; return (artefacts, manifest entries)."""
    from rebuy.features import rfm_summary, spend_concentration
    from rebuy.models import BGNBDModel, GammaGammaModel, score_value
    from rebuy.offers import vip_clv_threshold
    from rebuy.segment import RFMClusterer, RFMScorer, assign_segments, cluster_profiles

    with step("RFM summary", log):
        summary = rfm_summary(transactions, as_of=as_of, time_unit=config.time_unit)
    concentration = spend_concentration(summary)
    if concentration["finding"]:
        log.warning("%s", concentration["finding"])
    with step("BG/NBD fit", log):
        bgnbd = BGNBDModel.from_config(config.bgnbd).fit(summary)
    with step("Gamma-Gamma fit", log):
        gg = GammaGammaModel.from_config(config.gamma_gamma).fit(summary)
    value = score_value(summary, bgnbd, gg, config)
    with step("RFM scores and segments", log):
        rfm = RFMScorer(n_bins=config.segments.n_bins).fit(summary)
        scores = rfm.transform(summary)
        segments = assign_segments(scores, config.segments.rules, config.segments.fallback_segment)
    with step("clustering", log):
        clusterer = RFMClusterer.from_config(config.segments, time_unit_days=config.time_unit_days).fit(summary)
        profiles = cluster_profiles(
            summary, clusterer.labels_, segments=segments, clv=value["clv_12m"], time_unit_days=config.time_unit_days
        )

    artefacts: dict[str, Any] = {
        "bgnbd": bgnbd,
        "gamma_gamma": gg,
        "rfm_scorer": rfm,
        "clusterer": clusterer,
        "cluster_profiles": profiles,
    }
    recommender_info: dict[str, Any] = {"trained": False}
    if not config.recommend.enabled:
        recommender_info["reason"] = "disabled in config"
    elif "product_id" not in transactions.columns:
        log.warning("transactions have no product_id column: the recommender is skipped; offers need no products")
        recommender_info["reason"] = "no product_id column"
    else:
        from rebuy.recommend import Recommender

        with step("recommender fit", log):
            rec = Recommender.from_config(config.recommend).fit(transactions, as_of=as_of)
        artefacts["recommender"] = rec
        recommender_info = {"trained": True, **config.recommend.model_dump(), "n_products": int(len(rec.product_ids_))}

    manifest_part = {
        "params": {
            "time_unit": config.time_unit,
            "bgnbd": {k: float(v) for k, v in bgnbd.params_.items()},
            "gamma_gamma": {k: float(v) for k, v in gg.params_.items()},
        },
        "model_diagnostics": {
            "bgnbd_log_likelihood": float(getattr(bgnbd, "log_likelihood_", float("nan"))),
            "bgnbd_penalizer_used": float(getattr(bgnbd, "penalizer_", config.bgnbd.penalizer)),
            "gamma_gamma_penalizer_used": float(getattr(gg, "penalizer_", config.gamma_gamma.penalizer)),
            "gamma_gamma_independence_corr": float(getattr(gg, "independence_corr_", float("nan"))),
            "warnings": [*getattr(bgnbd, "warnings_", []), *getattr(gg, "warnings_", [])],
        },
        "clustering": {
            "method": config.segments.cluster_method,
            "n_clusters": int(clusterer.n_clusters_),
            "silhouette_scores": {str(k): float(v) for k, v in getattr(clusterer, "silhouette_scores_", {}).items()},
        },
        "recommender": recommender_info,
        "spend_concentration": concentration,
        "segment_counts": {str(k): int(v) for k, v in segments.value_counts().items()},
        "offers": {"vip_min_clv": vip_clv_threshold(value["clv_12m"], config.offers.vip_top_share)},
    }
    return artefacts, manifest_part


def train(
    transactions: str | Path | pd.DataFrame,
    config: Config,
    *,
    models_dir: str | Path = "models",
    customers: str | Path | pd.DataFrame | None = None,
) -> TrainResult:
    """Load, clean, fit every model and write a bundle to ``models_dir/<run-id>/``.

    ``customers`` (optional) is validated now, so a bad customers table fails training rather than
    the night's scoring, and its coverage (rows, known ages, consents) is recorded in the manifest.
    ``models_dir/latest`` moves to the new bundle only once it is completely written.
    """
    from rebuy.bundle import write_bundle
    from rebuy.data import load_customers, load_transactions

    with step("load and clean transactions", log):
        tx, report = load_transactions(transactions, config, as_of=config.as_of, with_report=True)
    as_of = resolve_as_of(tx, config.as_of)
    customers_info: dict[str, Any] = {"given": customers is not None}
    if customers is not None:
        cust = load_customers(customers, config, as_of=as_of)
        customers_info.update(
            rows=int(len(cust)),
            with_transactions=int(cust["customer_id"].isin(tx["customer_id"].unique()).sum()),
            known_age=int(cust["age"].notna().sum()),
            **{c: int(cust[c].sum()) for c in ("consent_email", "consent_sms", "consent_messenger")},
        )
    artefacts, part = fit_models(tx, config, as_of)
    manifest = {
        "as_of": as_of.date().isoformat(),
        "config": config.model_dump(mode="json"),
        "source": str(transactions) if not isinstance(transactions, pd.DataFrame) else "<DataFrame>",
        "training_data": {
            "first_timestamp": str(tx["timestamp"].min()),
            "last_timestamp": str(tx["timestamp"].max()),
            "rows": int(len(tx)),
            "customers": int(tx["customer_id"].nunique()),
            "products": int(tx["product_id"].nunique()) if "product_id" in tx.columns else 0,
            "cleaning": report.to_dict(),
        },
        "customers_table": customers_info,
        **part,
    }
    with step("write bundle", log):
        bundle_dir = write_bundle(models_dir, artefacts, manifest)
    from rebuy.bundle import read_manifest

    return TrainResult(bundle_dir=Path(bundle_dir), manifest=read_manifest(bundle_dir), artefacts=artefacts)
