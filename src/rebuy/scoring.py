"""Scoring: one row per customer from a trained bundle (the nightly batch and the offers-service API).

    from rebuy import Scorer
    scorer = Scorer.load("models/latest")
    table = scorer.score(transactions, customers=customers)   # batch
    row = scorer.lookup("13085")                              # request path, from the latest nightly table
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rebuy import pipeline
from rebuy.bundle import ModelBundle, load_model_bundle
from rebuy.config import Config
from rebuy.dates import resolve_as_of
from rebuy.errors import ScoringError, UnknownCustomerError
from rebuy.offers.control import ShareDecision
from rebuy.offers.evidence import Evidence
from rebuy.progress import step
from rebuy.schema import SCORE_COLUMNS  # noqa: F401 (re-exported: the fixed score-table columns)

log = logging.getLogger(__name__)


@dataclass
class ScoreRun:
    """What ``run_scoring`` wrote."""

    scores: pd.DataFrame
    out_path: Path
    db_path: Path | None
    seconds: float
    log_path: Path | None = None
    experiment: dict[str, Any] | None = None


class Scorer:
    """A loaded, checksum-verified :class:`~rebuy.bundle.ModelBundle` that scores customers through
    :func:`rebuy.pipeline.score`, and serves the latest nightly rows (:meth:`lookup`).

    Use :meth:`load`; the constructor takes an already verified bundle.
    """

    SCORING_SECTIONS = ("data", "clv", "offers")
    """Config sections a scoring run may change without retraining (column mapping, CLV money
    settings, the offer playbook); the models' own settings stay as trained."""

    def __init__(self, bundle: ModelBundle):
        self.bundle = bundle
        # (mtime of latest_scores.json, id -> row, column arrays) of the table lookup serves
        self._lookup: tuple[int, dict[str, int], dict[str, np.ndarray]] | None = None

    @classmethod
    def load(cls, path: str | Path = "models/latest") -> Scorer:
        """Load a bundle (``models/latest`` or ``models/<run-id>``), verifying every checksum first."""
        return cls(load_model_bundle(path))

    @property
    def config(self) -> Config:
        """The scoring settings (the trained config, ``as_of`` cleared, with any :meth:`with_settings`)."""
        return self.bundle.config

    @property
    def manifest(self) -> dict[str, Any]:
        return self.bundle.manifest

    @property
    def run_id(self) -> str:
        return self.bundle.run_id

    @property
    def bundle_dir(self) -> Path | None:
        return self.bundle.bundle_dir

    @property
    def vip_min_clv(self) -> float | None:
        """12-month CLV (currency) a customer needs for VIP status, fixed at training time."""
        return self.bundle.vip_min_clv

    @property
    def recommender(self) -> Any | None:
        return self.bundle.recommender

    def with_settings(
        self, config: Config | None = None, columns: dict[str, str] | None = None, time_unit: str | None = None
    ) -> Scorer:
        """This scorer with the :data:`SCORING_SECTIONS` of ``config`` and extra ``columns`` mappings.

        ``time_unit`` (default ``config.time_unit``) must equal the trained one: the models'
        parameters are per time unit, so it is checked, never changed.
        """
        cfg = self.config.model_dump()
        unit = time_unit or (config.time_unit if config is not None else None)
        if unit is not None and unit != self.config.time_unit:
            raise ScoringError(f"the models were trained in {self.config.time_unit}; they cannot score in {unit}")
        if config is not None:
            cfg.update({k: getattr(config, k).model_dump() for k in self.SCORING_SECTIONS})
        if columns:
            cfg["data"]["columns"] = {**cfg["data"]["columns"], **columns}
        return Scorer(self.bundle.with_config(Config.model_validate(cfg)))

    # ------------------------------------------------------------------ batch
    def score(
        self,
        transactions: str | Path | pd.DataFrame,
        customers: str | Path | pd.DataFrame | None = None,
        events: str | Path | pd.DataFrame | None = None,
        *,
        as_of: dt.date | str | None = None,
        scored_at: pd.Timestamp | None = None,
        evidence: Evidence | None = None,
    ) -> pd.DataFrame:
        """Score every customer in ``transactions`` (raw source or DataFrame; cleaned with the bundle's config).

        ``as_of`` defaults to the last transaction's day of ``transactions`` (not the training date:
        a bundle trained with a fixed as-of date still scores each night's data as of that night).
        ``evidence`` (:func:`rebuy.offers.evidence.evidence_from_uplift`) re-orders the offers by
        measured uplift. Returns one row per customer with the columns of
        ``rebuy.schema.score_columns``; ``attrs["experiment"]`` describes the control groups.
        """
        from rebuy.data import load_customers, load_events, load_transactions

        cfg = self.config
        with step("load and clean transactions", log):
            tx = load_transactions(transactions, cfg, as_of=as_of)
        as_of_ts = resolve_as_of(tx["timestamp"], as_of)
        cust = load_customers(customers, cfg, as_of=as_of_ts) if customers is not None else None
        ev = load_events(events, cfg) if events is not None else None
        return pipeline.score(self.bundle, tx, cust, ev, as_of_ts, scored_at=scored_at, evidence=evidence)

    def score_frame(
        self,
        tx: pd.DataFrame,
        as_of: pd.Timestamp,
        *,
        customers: pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
        scored_at: pd.Timestamp | None = None,
        vip_min_clv: float | None = None,
    ) -> pd.DataFrame:
        """:func:`rebuy.pipeline.score` with this scorer's bundle, on already-cleaned canonical frames."""
        return pipeline.score(self.bundle, tx, customers, events, as_of, scored_at=scored_at, vip_min_clv=vip_min_clv)

    # ------------------------------------------------------------------ request path
    def score_customer(
        self,
        history: pd.DataFrame,
        customer: dict[str, Any] | pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
        *,
        as_of: dt.date | str | None = None,
    ) -> dict[str, Any]:
        """Score one customer from their transaction history (canonical or configured columns).

        ``customer`` is their customers-table row (age, consents); ``events`` their view/cart events.
        Uses the training-time RFM score boundaries and VIP threshold, so the result equals that
        customer's row in a batch scored with the same inputs, except that a run-wide discount
        ``offers.budget`` cannot apply to a single request.
        """
        from rebuy.data import load_customers, load_events, load_transactions

        cfg = self.config
        tx = load_transactions(history, cfg, as_of=as_of, min_customers=1)
        if tx["customer_id"].nunique() != 1:
            raise ScoringError(f"score_customer expects one customer's history, got {tx['customer_id'].nunique()}")
        as_of_ts = resolve_as_of(tx["timestamp"], as_of)
        cust = None
        if customer is not None:
            frame = pd.DataFrame([customer]) if isinstance(customer, dict) else customer
            cust = load_customers(frame, cfg, as_of=as_of_ts)
        ev = load_events(events, cfg) if events is not None and len(events) else None
        shares, evidence = self._nightly_experiment()
        return pipeline.score(self.bundle, tx, cust, ev, as_of_ts, control_shares=shares,
                              evidence=evidence).iloc[0].to_dict()

    def _nightly_experiment(self) -> tuple[dict[str, ShareDecision], Evidence | None]:
        """The control shares and the evidence of the latest nightly run, so that a request gets the
        offer and the group the batch gives it; without a recorded night, the configured
        ``offers.control_share`` for every type and no evidence."""
        from rebuy.bundle import read_latest_scores
        from rebuy.offers.names import OUTCOMES, RULE_NAMES

        info = read_latest_scores(self.bundle_dir.parent) if self.bundle_dir is not None else None
        recorded = (info or {}).get("experiment") or {}
        evidence = Evidence.from_report(recorded["evidence"]) if recorded.get("evidence") else None
        if recorded.get("shares") is not None:
            return {t: ShareDecision(float(v), "") for t, v in recorded["shares"].items()}, evidence
        share = self.config.offers.control_share
        return {t: ShareDecision(share, "") for t in (*RULE_NAMES, *OUTCOMES) if t != "none"}, evidence

    def _lookup_tables(self) -> tuple[dict[str, int], dict[str, np.ndarray]]:
        """The id -> row dict and the column arrays of the latest scores; reloaded when ``rebuy score``
        records a newer table (one ``stat`` of ``latest_scores.json`` per look-up)."""
        from rebuy.bundle import LATEST_SCORES_FILE, read_latest_scores
        from rebuy.outputs import read_table_for_lookup

        if self.bundle_dir is None:
            raise ScoringError("lookup needs a Scorer loaded from a models directory")
        models_dir = self.bundle_dir.parent
        missing = ScoringError(f"{models_dir}: no scores recorded yet; run `rebuy score` first")
        try:
            stamp = (models_dir / LATEST_SCORES_FILE).stat().st_mtime_ns
        except FileNotFoundError:
            raise missing from None
        if self._lookup is None or self._lookup[0] != stamp:
            info = read_latest_scores(models_dir)
            if info is None:
                raise missing
            frame = read_table_for_lookup(info["scores_path"])
            # One array per column and a dict from id to row: a look-up is ~40 array reads, no pandas.
            index = {str(cid): i for i, cid in enumerate(frame.index)}
            columns = {str(frame.index.name or "customer_id"): np.asarray(frame.index, dtype=object)}
            columns.update({c: frame[c].to_numpy() for c in frame.columns})
            self._lookup = (stamp, index, columns)
        return self._lookup[1], self._lookup[2]

    def lookup(self, customer_id: str | int) -> dict[str, Any]:
        """The latest nightly score row of one customer (the table is loaded once per nightly run).

        Raises :class:`~rebuy.errors.UnknownCustomerError` (a KeyError) when the customer is not in
        the latest scores.
        """
        index, columns = self._lookup_tables()
        i = index.get(str(customer_id))
        if i is None:
            raise UnknownCustomerError(f"customer {customer_id!r} is not in the latest scores")
        return {c: _plain(col[i]) for c, col in columns.items()}


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars (lists and strings pass through)."""
    return value.item() if isinstance(value, np.generic) else value


def run_scoring(
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
    columns: dict[str, str] | None = None,
    time_unit: str | None = None,
    uplift: str | Path | None = None,
) -> ScoreRun:
    """The nightly batch behind ``rebuy score``: score, write atomically, log the decisions, record where.

    ``config`` / ``columns`` change the scoring settings (see :meth:`Scorer.with_settings`).
    ``uplift`` is a ``rebuy measure`` JSON whose evidence re-orders the offers (default: none, or
    ``models_dir/latest_uplift.json`` when ``offers.use_measured_uplift`` is set).

    Output (Parquet or CSV by extension) and the DuckDB table are replaced atomically, so a failed run
    leaves yesterday's results intact. The night's decisions go to the offer log
    (:mod:`rebuy.offer_log`): the ``offer_log`` table of the DuckDB file, in the scores' transaction,
    and ``offer_log/<run_id>.parquet`` beside the scores, published last; a rerun of the night
    replaces its rows. ``models_dir/latest_scores.json`` records the paths for ``Scorer.lookup``.
    """
    from rebuy.bundle import record_latest_scores
    from rebuy.offer_log import LOG_TABLE, StagedLog, offer_log_dir, offer_log_frame, run_id_for
    from rebuy.outputs import upsert_duckdb, write_table

    t0 = time.perf_counter()
    scorer = Scorer.load(Path(models_dir) / "latest")
    if config is not None or columns or time_unit:
        scorer = scorer.with_settings(config, columns, time_unit)
    evidence = _evidence(uplift, scorer.config, Path(models_dir))
    scores = scorer.score(transactions, customers, events, as_of=as_of, evidence=evidence)
    pipeline.check_scores(scores)
    experiment = scores.attrs["experiment"]
    run_id = run_id_for(pd.Timestamp(experiment["decided_at"]))
    decisions = offer_log_frame(scores, experiment)
    out = Path(out)
    staged = StagedLog(decisions, offer_log_dir(out), run_id)
    try:
        with step(f"write {out}", log):
            write_table(scores, out)
        db_path = Path(db) if db is not None else None
        if db_path is not None:
            with step(f"upsert {db_path}:{table} and {LOG_TABLE}", log):
                upsert_duckdb(scores, db_path, table=table, appends={LOG_TABLE: (decisions, "run_id", run_id)})
        log_path = staged.publish()
    except BaseException:
        staged.discard()
        raise
    record_latest_scores(models_dir, out, db_path=db_path, table=table if db_path else None, run_id=scorer.run_id,
                         experiment={k: experiment[k] for k in ("experiment", "decided_at", "shares", "evidence")})
    return ScoreRun(scores=scores, out_path=out, db_path=db_path, seconds=time.perf_counter() - t0,
                    log_path=log_path, experiment={**experiment, "run_id": run_id, "logged": len(decisions)})


LATEST_UPLIFT_FILE = "latest_uplift.json"
"""Where ``rebuy measure --models-dir`` records its result for ``offers.use_measured_uplift``."""


def _evidence(uplift: str | Path | None, config: Config, models_dir: Path) -> Evidence | None:
    """The evidence of ``uplift`` (or of the recorded latest measurement when the config says so)."""
    from rebuy.offers.evidence import evidence_from_uplift, read_uplift

    if uplift is None and config.offers.use_measured_uplift:
        uplift = models_dir / LATEST_UPLIFT_FILE
        if not Path(uplift).is_file():
            log.warning("offers.use_measured_uplift: %s does not exist yet (run `rebuy measure --models-dir %s`); "
                        "scoring with the configured priority", uplift, models_dir)
            return None
    if uplift is None:
        return None
    evidence = evidence_from_uplift(read_uplift(uplift), config.offers.priority, source=str(uplift))
    log.info("offers by evidence from %s: switched off %s, promoted %s", uplift, evidence.switched_off or "none",
             evidence.promoted or "none")
    return evidence


def score_summary(scores: pd.DataFrame) -> dict[str, Any]:
    """The end-of-command summary: customers per segment, mean P(alive), total 12-month CLV, offers by type."""
    return {
        "customers": int(len(scores)),
        "segments": scores["segment"].value_counts().to_dict(),
        "mean_p_alive": float(scores["p_alive"].mean()),
        "total_clv_12m": float(scores["clv_12m"].sum()),
        "offers": scores["offer_type"].value_counts().to_dict(),
        "channels": scores["channel"].value_counts().to_dict(),
        "groups": scores["group"].value_counts().to_dict(),
        "delivered": int(scores["deliver"].sum()),
    }
