"""The nightly job in one process: ``rebuy run`` = train when due, score, publish.

One read and one clean of the transactions serve both the training (when due) and the scoring; the
bundle a training run just wrote scores the night from memory instead of being loaded again; the
publish is :mod:`rebuy.publish`'s, under the same locks as ``rebuy score`` (the models directory's
run lock for the whole job, the nights directory's publish lock from the scoring on). The separate commands
stay: ``rebuy run`` gives the same scores as ``rebuy train`` followed by ``rebuy score`` on the same
data (tests/test_nightly.py).

Training is due when there is no bundle yet, when the latest bundle is at least
``operations.train_every_days`` days old (0: every night), or when asked (``--train``);
``--no-train`` never trains.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rebuy.config import Config
from rebuy.scoring import (
    NightTarget,
    Scorer,
    ScoreRun,
    models_lock,
    publish_lock,
    score_and_publish,
)
from rebuy.train import TrainResult

log = logging.getLogger(__name__)


@dataclass
class NightRun:
    """What one ``rebuy run`` did: the training (None when not due) and why, and the scoring."""

    trained: TrainResult | None
    train_reason: str
    score: ScoreRun
    seconds: float


def training_due(models_dir: Path, every_days: int, now: dt.datetime | None = None) -> str | None:
    """Why the night must train first (no bundle, or the latest is ``every_days`` days old or more;
    0 = always), or None."""
    from rebuy.bundle import latest_run_id, read_manifest

    if latest_run_id(models_dir) is None:
        return "no bundle yet"
    if every_days == 0:
        return "operations.train_every_days: 0 (every night)"
    created = pd.Timestamp(read_manifest(models_dir / "latest", check=False)["created_at"])
    now_ts = pd.Timestamp(now or dt.datetime.now(dt.UTC))
    age_days = (now_ts - created).total_seconds() / 86400.0
    if age_days >= every_days:
        return f"the latest bundle is {age_days:.1f} days old (operations.train_every_days: {every_days})"
    return None


def run_night(
    transactions: str | Path | pd.DataFrame,
    *,
    models_dir: str | Path = "models",
    out: str | Path,
    customers: str | Path | pd.DataFrame | None = None,
    events: str | Path | pd.DataFrame | None = None,
    db: str | Path | None = None,
    table: str = "customer_scores",
    as_of: dt.date | str | None = None,
    config: Config | None = None,
    uplift: str | Path | None = None,
    exports: str | Path | None = None,
    train: bool | None = None,
) -> NightRun:
    """Train when due (``train``: True forces, False forbids, None asks :func:`training_due`), then
    score and publish as :func:`rebuy.scoring.run_scoring` does. ``config`` is the training config
    and the scoring settings (as ``rebuy train --config`` and ``rebuy score --config``); None trains
    with the defaults and scores with the bundle's own settings. ``as_of`` is the night's as-of day
    for both."""
    t0 = time.perf_counter()
    models_dir = Path(models_dir)
    target = NightTarget.check(out, exports, db, table)
    settings = config or Config()
    with models_lock(models_dir, settings, what="run"):
        reason = "asked (--train)" if train else (None if train is False else
                                                  training_due(models_dir, settings.operations.train_every_days))
        if reason is not None:
            log.info("training first: %s", reason)
            trained, scorer, tx = _train_in_process(transactions, settings, as_of, models_dir, customers)
        else:
            trained, scorer = None, Scorer.load(models_dir / "latest")
            if config is not None:
                scorer = scorer.with_settings(config)
            tx = None
        with publish_lock(target, settings, what="run"):
            if tx is None:
                tx = scorer.clean_transactions(transactions, as_of)
            run = score_and_publish(scorer, tx, customers, events, as_of=as_of, uplift=uplift, target=target,
                                    models_dir=models_dir, keep_nights=settings.operations.keep_nights, t0=t0)
    return NightRun(trained=trained, train_reason=reason or "not due", score=run, seconds=time.perf_counter() - t0)


def _train_in_process(transactions: Any, settings: Config, as_of: dt.date | str | None, models_dir: Path,
                      customers: Any) -> tuple[TrainResult, Scorer, pd.DataFrame]:
    """Clean once, train and save the bundle, and score with it from memory."""
    from rebuy.data import load_transactions
    from rebuy.progress import step
    from rebuy.train import _prune, _train_locked

    cfg = settings if as_of is None else settings.model_copy(update={"as_of": pd.Timestamp(as_of).date()})
    with step("load and clean transactions", log):
        cleaned = load_transactions(transactions, cfg, as_of=cfg.as_of, with_report=True)
    bundle = _train_locked(transactions, cfg, models_dir, customers, cleaned=cleaned)
    _prune(models_dir, cfg.operations.keep_bundles)
    scorer = Scorer(bundle)
    return TrainResult(bundle=bundle), scorer, cleaned[0]
