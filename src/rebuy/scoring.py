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

from rebuy.config import Config
from rebuy.progress import step

log = logging.getLogger(__name__)

SCORE_COLUMNS = [
    "customer_id", "segment", "r_score", "f_score", "m_score", "cluster", "cluster_label",
    "frequency", "recency", "T", "monetary_value", "orders", "total_spend", "first_purchase", "last_purchase",
    "p_alive", "expected_purchases_30d", "expected_purchases_90d", "expected_purchases_365d",
    "expected_order_value", "clv_12m", "net_ltv", "churn_risk", "next_purchase_date",
    "recommended_products", "offer_type", "offer_value", "offer_products", "channel",
    "max_contacts_per_month", "offer_reason", "discount_cost", "model_run_id", "scored_at",
]
"""Columns of the score table, in order (see README "The score table")."""


class ScoringError(ValueError):
    """Scoring cannot proceed (no scores recorded, unknown customer, ...)."""


@dataclass
class ScoreRun:
    """What ``run_scoring`` wrote."""

    scores: pd.DataFrame
    out_path: Path
    db_path: Path | None
    seconds: float


class Scorer:
    """A loaded, checksum-verified bundle that scores customers.

    Use :meth:`load`; the constructor takes the already verified artefacts.
    """

    def __init__(self, artefacts: dict[str, Any], manifest: dict[str, Any], bundle_dir: Path | None = None):
        self.artefacts = artefacts
        self.manifest = manifest
        self.bundle_dir = bundle_dir
        # The training run's as-of date stays in the manifest; scoring dates come from the data scored.
        self.config = Config.model_validate({**manifest["config"], "as_of": None})
        self.run_id: str = manifest["run_id"]
        # (mtime of latest_scores.json, id -> row, column arrays) of the table lookup serves
        self._lookup: tuple[int, dict[str, int], dict[str, np.ndarray]] | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path = "models/latest") -> Scorer:
        """Load a bundle (``models/latest`` or ``models/<run-id>``), verifying every checksum first."""
        from rebuy.bundle import load_bundle, resolve_bundle

        bundle_dir = resolve_bundle(path)
        artefacts, manifest = load_bundle(bundle_dir)
        return cls(artefacts, manifest, bundle_dir)

    SCORING_SECTIONS = ("data", "clv", "offers")
    """Config sections a scoring run may change without retraining (column mapping, CLV money
    settings, the offer playbook); the models' own settings stay as trained."""

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
        manifest = {**self.manifest, "config": Config.model_validate(cfg).model_dump(mode="json")}
        return Scorer(self.artefacts, manifest, self.bundle_dir)

    @property
    def vip_min_clv(self) -> float | None:
        """12-month CLV (currency) a customer needs for VIP status, fixed at training time."""
        return self.manifest.get("offers", {}).get("vip_min_clv")

    @property
    def recommender(self) -> Any | None:
        return self.artefacts.get("recommender")

    # ------------------------------------------------------------------ batch
    def score(
        self,
        transactions: str | Path | pd.DataFrame,
        customers: str | Path | pd.DataFrame | None = None,
        events: str | Path | pd.DataFrame | None = None,
        *,
        as_of: dt.date | str | None = None,
        scored_at: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Score every customer in ``transactions`` (raw source or DataFrame; cleaned with the bundle's config).

        ``as_of`` defaults to the last transaction's day of ``transactions`` (not the training date:
        a bundle trained with a fixed as-of date still scores each night's data as of that night).
        Returns one row per customer with :data:`SCORE_COLUMNS`.
        """
        from rebuy.data import load_customers, load_events, load_transactions
        from rebuy.train import resolve_as_of

        cfg = self.config
        with step("load and clean transactions", log):
            tx = load_transactions(transactions, cfg, as_of=as_of)
        as_of_ts = resolve_as_of(tx, as_of)
        cust = load_customers(customers, cfg, as_of=as_of_ts) if customers is not None else None
        ev = load_events(events, cfg) if events is not None else None
        return self.score_frame(tx, as_of_ts, customers=cust, events=ev, scored_at=scored_at)

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
        """Score already-cleaned canonical transactions as of ``as_of``.

        VIP status uses the training run's CLV threshold (``manifest["offers"]["vip_min_clv"]``) unless
        ``vip_min_clv`` is given, so a customer scored alone gets the same offer as in the batch.
        """
        from rebuy.features import rfm_summary
        from rebuy.models import score_value
        from rebuy.offers import assign_offers
        from rebuy.segment import assign_segments

        cfg = self.config
        a = self.artefacts
        with step("RFM summary", log):
            summary = rfm_summary(tx, as_of=as_of, time_unit=cfg.time_unit)
        with step("value models", log):
            value = score_value(summary, a["bgnbd"], a["gamma_gamma"], cfg)
        with step("segments and clusters", log):
            rfm = a["rfm_scorer"].transform(summary)
            segment = assign_segments(rfm, cfg.segments.rules, cfg.segments.fallback_segment)
            cluster = pd.Series(a["clusterer"].predict(summary), index=summary.index)
            labels = a["cluster_profiles"]["label"]
            cluster_label = cluster.map(labels).fillna("unprofiled").astype(str)

        table = pd.DataFrame(index=summary.index)
        table["segment"] = segment
        table[["r_score", "f_score", "m_score"]] = rfm[["r_score", "f_score", "m_score"]]
        table["cluster"] = cluster.astype("int64")
        table["cluster_label"] = cluster_label
        for c in ["frequency", "recency", "T", "monetary_value", "orders", "total_spend", "first_purchase", "last_purchase"]:
            table[c] = summary[c]
        for c in value.columns:
            table[c] = value[c]
        table = table.reset_index()

        n_items = cfg.recommend.n_items
        rec = self.recommender
        if rec is not None and "product_id" not in tx.columns:
            log.warning("transactions have no product_id column: no recommendations or product offers")
            rec = None
        if rec is not None:
            with step("recommendations", log):
                country = None
                if "country" in tx.columns:
                    country = tx.groupby("customer_id", observed=True)["country"].last()
                table["recommended_products"] = rec.recommend(
                    table["customer_id"].tolist(), n=n_items, segments=country, output="lists"
                )
            # products the recommender never saw (postage, fees, new items) cannot seed a cross-sell
            known = tx["product_id"].isin(rec.product_ids_)
            last_products = _last_order_products(tx[known])
            cross_sell = rec.bought_together
        else:
            table["recommended_products"] = [[] for _ in range(len(table))]
            last_products = None
            cross_sell = None

        with step("offers", log):
            offers = assign_offers(
                table,
                cfg,
                as_of=as_of,
                customers=customers,
                events=events,
                last_order_products=last_products,
                cross_sell=cross_sell,
                transactions=tx,
                vip_min_clv=vip_min_clv if vip_min_clv is not None else self.vip_min_clv,
            )
        for c in offers.columns:
            table[c] = offers[c].to_numpy()
        table["model_run_id"] = self.run_id
        table["scored_at"] = pd.Timestamp(scored_at) if scored_at is not None else pd.Timestamp.now(tz="UTC").tz_localize(None)
        missing = [c for c in SCORE_COLUMNS if c not in table.columns]
        if missing:
            raise ScoringError(f"internal: score table lacks columns {missing}")
        extra = [c for c in table.columns if c not in SCORE_COLUMNS]
        return table[SCORE_COLUMNS + extra]

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
        from rebuy.train import resolve_as_of

        cfg = self.config
        tx = load_transactions(history, cfg, as_of=as_of, min_customers=1)
        if tx["customer_id"].nunique() != 1:
            raise ScoringError(f"score_customer expects one customer's history, got {tx['customer_id'].nunique()}")
        as_of_ts = resolve_as_of(tx, as_of)
        cust = None
        if customer is not None:
            frame = pd.DataFrame([customer]) if isinstance(customer, dict) else customer
            cust = load_customers(frame, cfg, as_of=as_of_ts)
        ev = load_events(events, cfg) if events is not None and len(events) else None
        return self.score_frame(tx, as_of_ts, customers=cust, events=ev).iloc[0].to_dict()

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

        Raises KeyError when the customer is not in the latest scores.
        """
        index, columns = self._lookup_tables()
        i = index.get(str(customer_id))
        if i is None:
            raise KeyError(f"customer {customer_id!r} is not in the latest scores")
        return {c: _plain(col[i]) for c, col in columns.items()}


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars (lists and strings pass through)."""
    return value.item() if isinstance(value, np.generic) else value


def _last_order_products(tx: pd.DataFrame) -> pd.Series:
    """customer_id -> list of the distinct product ids of their last purchase day (first-seen order)."""
    day = tx["timestamp"].dt.normalize()
    last_day = day.groupby(tx["customer_id"], observed=True).transform("max")
    last = tx.loc[day == last_day, ["customer_id", "product_id"]].drop_duplicates()
    cust, uniques = pd.factorize(last["customer_id"], sort=False)
    order = np.argsort(cust, kind="stable")
    products = last["product_id"].to_numpy(dtype=object)[order]
    starts = np.searchsorted(cust[order], np.arange(len(uniques)))
    lists = np.split(products, starts[1:])
    return pd.Series([list(x) for x in lists], index=pd.Index(uniques, name="customer_id"), dtype=object)


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
) -> ScoreRun:
    """The nightly batch behind ``rebuy score``: score, write atomically, record where.

    ``config`` / ``columns`` change the scoring settings (see :meth:`Scorer.with_settings`).

    Output (Parquet or CSV by extension) and the DuckDB table are replaced atomically, so a failed run
    leaves yesterday's results intact. ``models_dir/latest_scores.json`` records the paths for
    ``Scorer.lookup``.
    """
    from rebuy.bundle import record_latest_scores
    from rebuy.outputs import upsert_duckdb, write_table

    t0 = time.perf_counter()
    scorer = Scorer.load(Path(models_dir) / "latest")
    if config is not None or columns or time_unit:
        scorer = scorer.with_settings(config, columns, time_unit)
    scores = scorer.score(transactions, customers, events, as_of=as_of)
    _check_scores(scores)
    out = Path(out)
    with step(f"write {out}", log):
        write_table(scores, out)
    db_path = Path(db) if db is not None else None
    if db_path is not None:
        with step(f"upsert {db_path}:{table}", log):
            upsert_duckdb(scores, db_path, table=table)
    record_latest_scores(models_dir, out, db_path=db_path, table=table if db_path else None, run_id=scorer.run_id)
    return ScoreRun(scores=scores, out_path=out, db_path=db_path, seconds=time.perf_counter() - t0)


def _check_scores(scores: pd.DataFrame) -> None:
    """Refuse to publish a table with a missing segment or a non-finite number."""
    if scores["segment"].isna().any():
        raise ScoringError("score table has customers without a segment")
    from rebuy.outputs import non_finite_columns

    bad = non_finite_columns(scores)
    if bad:
        raise ScoringError(f"score table has NaN or infinite values in {bad}")


def score_summary(scores: pd.DataFrame) -> dict[str, Any]:
    """The end-of-command summary: customers per segment, mean P(alive), total 12-month CLV, offers by type."""
    return {
        "customers": int(len(scores)),
        "segments": scores["segment"].value_counts().to_dict(),
        "mean_p_alive": float(scores["p_alive"].mean()),
        "total_clv_12m": float(scores["clv_12m"].sum()),
        "offers": scores["offer_type"].value_counts().to_dict(),
        "channels": scores["channel"].value_counts().to_dict(),
    }
