"""Training: the function behind ``rebuy train``, a thin layer over :func:`rebuy.pipeline.fit`.

load + clean transactions (and validate the customers table) -> ``pipeline.fit`` -> one bundle
directory written by ``rebuy.bundle.save_model_bundle`` (artefacts + manifest.json with checksums)
-> old bundles pruned (``operations.keep_bundles``). The whole run holds the models directory's run
lock (:mod:`rebuy.runlock`), and first removes what killed runs left there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rebuy import pipeline
from rebuy.bundle import ModelBundle, bundle_leftovers, prune_bundles, save_model_bundle
from rebuy.config import Config
from rebuy.dates import resolve_as_of
from rebuy.progress import step
from rebuy.runlock import lock_path, remove_leftovers, run_lock

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one training run produced: the saved bundle, its directory and manifest."""

    bundle: ModelBundle

    @property
    def bundle_dir(self) -> Path:
        assert self.bundle.bundle_dir is not None
        return self.bundle.bundle_dir

    @property
    def manifest(self) -> dict[str, Any]:
        return self.bundle.manifest


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
    ``models_dir/latest`` moves to the new bundle only once it is completely written; then all but
    the newest ``operations.keep_bundles`` bundles are pruned (never latest nor the scoring bundle).
    The run holds ``models_dir/.rebuy.lock`` throughout (another run: wait up to
    ``operations.lock_timeout_seconds``, then :class:`rebuy.runlock.RunLockedError`).
    """
    models_dir = Path(models_dir)
    with run_lock(lock_path(models_dir), what="train", timeout_seconds=config.operations.lock_timeout_seconds):
        remove_leftovers(bundle_leftovers(models_dir), str(models_dir))
        saved = _train_locked(transactions, config, models_dir, customers)
        _prune(models_dir, config.operations.keep_bundles)
    saved.training_values = None  # only `rebuy run` scores the training night from memory
    return TrainResult(bundle=saved)


def _train_locked(
    transactions: str | Path | pd.DataFrame, config: Config, models_dir: Path, customers: Any,
    cleaned: tuple[pd.DataFrame, Any] | None = None,
) -> ModelBundle:
    """The training run proper (under the lock): fit and write the bundle. ``cleaned`` is
    ``load_transactions(transactions, config, as_of=config.as_of, with_report=True)`` when the
    caller already has it (``rebuy run`` cleans once for training and scoring)."""
    from rebuy.data import load_transactions

    if cleaned is None:
        with step("load and clean transactions", log):
            cleaned = load_transactions(transactions, config, as_of=config.as_of, with_report=True)
    tx, report = cleaned
    as_of = resolve_as_of(tx["timestamp"], config.as_of)
    customers_info = _customers_coverage(customers, tx, config, as_of)
    bundle = pipeline.fit(tx, config, as_of)
    bundle.manifest = {
        "as_of": as_of.date().isoformat(),
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
        **bundle.manifest,
    }
    with step("write bundle", log):
        return save_model_bundle(models_dir, bundle)


def _prune(models_dir: Path, keep: int) -> None:
    """Prune old bundles after a successful train (``keep`` 0: keep all); a failure only warns,
    since the new bundle is already live."""
    if keep == 0:
        return
    try:
        prune_bundles(models_dir, keep=keep)
    except OSError as exc:
        log.warning("%s: cannot prune old bundles (%s); the new bundle is live", models_dir, exc)


def _customers_coverage(customers: Any, tx: pd.DataFrame, config: Config, as_of: pd.Timestamp) -> dict[str, Any]:
    """The manifest's ``customers_table`` entry; loading validates the table (DataError on bad input)."""
    from rebuy.data import load_customers
    from rebuy.data.values import is_in

    info: dict[str, Any] = {"given": customers is not None}
    if customers is None:
        return info
    cust = load_customers(customers, config, as_of=as_of)
    info.update(
        rows=int(len(cust)),
        with_transactions=int(is_in(cust["customer_id"], tx["customer_id"].unique()).sum()),
        known_age=int(cust["age"].notna().sum()),
        **{c: int(cust[c].sum()) for c in ("consent_email", "consent_sms", "consent_messenger")},
    )
    return info
