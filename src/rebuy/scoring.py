"""Scoring: one row per customer from a trained bundle (the nightly batch and the offers-service API).

    from rebuy import Scorer
    scorer = Scorer.load("models/latest")
    table = scorer.score(transactions, customers=customers)   # batch
    row = scorer.lookup("13085")                              # request path, from the latest nightly table
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from rebuy import pipeline
from rebuy.bundle import ModelBundle, load_model_bundle
from rebuy.config import Config
from rebuy.dates import resolve_as_of
from rebuy.errors import ScoringError, UnknownCustomerError, UsageError
from rebuy.offers.control import ShareDecision
from rebuy.offers.evidence import Evidence
from rebuy.progress import step
from rebuy.schema import (
    SCORE_COLUMNS,  # noqa: F401 (re-exported: the fixed score-table columns)
    SCORE_TABLE,
    Kind,
    score_columns,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- the row

JSON_TYPES: dict[Kind, Any] = {
    "string": str | None, "int": int, "float": float | None, "bool": bool, "datetime": str | None,
    "list": list[str],
}
"""The JSON-native Python type of each :mod:`rebuy.schema` kind in a :class:`ScoreRow`: floats are
None where not finite, datetimes ISO strings (``"YYYY-MM-DD"`` for days, ``"...Z"`` for
:data:`INSTANT_COLUMNS`) or None where empty, lists lists of product ids."""

INSTANT_COLUMNS = frozenset({"scored_at"})
"""Datetime columns that are instants (ISO datetime, UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``); every
other datetime column is a day (``YYYY-MM-DD``)."""


ScoreRow = TypedDict("ScoreRow", {c.name: JSON_TYPES[c.kind] for c in SCORE_TABLE})  # type: ignore[misc]
ScoreRow.__doc__ = """One customer's score row as :meth:`Scorer.lookup` and :meth:`Scorer.score_customer` return
it: JSON-native values only (``json.dumps(row)`` works). Built from :data:`rebuy.schema.SCORE_TABLE`
(one key per column, :data:`JSON_TYPES` of its kind), so it cannot drift from the schema; a config
with extra horizons adds float keys ``expected_purchases_{h}d`` / ``clv_{H}m``. Units: see the schema."""


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _json_float(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _json_int(value: Any) -> int | None:
    return None if _is_missing(value) else int(value)


def _json_bool(value: Any) -> bool | None:
    return None if _is_missing(value) else bool(value)


def _json_string(value: Any) -> str | None:
    return None if _is_missing(value) else str(value)


def _json_list(value: Any) -> list[str]:
    if value is None or (not isinstance(value, list | tuple | np.ndarray) and _is_missing(value)):
        return []
    return [str(v.item() if isinstance(v, np.generic) else v) for v in value]


def _json_day(value: Any) -> str | None:
    return None if _is_missing(value) or np.isnat(np.datetime64(value)) else str(np.datetime64(value, "D"))


def _json_instant(value: Any) -> str | None:
    if _is_missing(value) or np.isnat(np.datetime64(value)):
        return None
    return np.datetime_as_string(np.datetime64(value, "us"), unit="us") + "Z"


_JSON_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "string": _json_string, "int": _json_int, "float": _json_float, "bool": _json_bool, "list": _json_list,
}


def json_converter(name: str, kind: Kind) -> Callable[[Any], Any]:
    """The function turning one stored value of column ``name`` (of ``kind``) into its JSON-native value."""
    if kind == "datetime":
        return _json_instant if name in INSTANT_COLUMNS else _json_day
    return _JSON_CONVERTERS[kind]


def json_row(row: dict[str, Any], config: Config) -> ScoreRow:
    """A score row (pandas/numpy values) as a :class:`ScoreRow`, converted by the columns' kinds."""
    kinds = {c.name: c.kind for c in score_columns(config)}
    return {k: json_converter(k, kinds.get(k, "float"))(v) for k, v in row.items()}  # type: ignore[return-value]


_FLOAT_ZERO = re.compile(r"^(-?\d+)\.0+$")


def normalise_id(customer_id: Any) -> str:
    """A customer id as the score table stores it (``rebuy.data.values.parse_ids``): surrounding blanks
    stripped and a float's ``.0`` dropped, so ``13085``, ``"13085"``, ``" 13085"``, ``"13085.0"`` and
    ``13085.0`` are all ``"13085"``."""
    if isinstance(customer_id, float | np.floating) and math.isfinite(customer_id) and float(customer_id).is_integer():
        return str(int(customer_id))
    if isinstance(customer_id, np.generic):
        customer_id = customer_id.item()
    return _FLOAT_ZERO.sub(r"\1", str(customer_id).strip())


COLD_START_SEGMENT = "New Customers"
"""The segment of a customer without purchases (:meth:`Scorer.score_customer` cold start); such a row
has ``purchase_days`` 0 and no ``first_purchase``, which tells it from a first-time buyer."""

COLD_START_REASON = "No purchases yet: no offer until the first order (cold start)."


@dataclass
class _LookupTable:
    """The table :meth:`Scorer.lookup` serves, prepared once per night so that a look-up is a dict hit
    and a few array reads: numbers in one 2-D array per kind (``tolist`` gives Python values),
    everything else as object arrays of ready JSON values (days and instants factorised to shared
    strings), lists copied per look-up."""

    stamp: tuple[int, str | None]
    index: dict[str, int]
    order: list[str]
    ready: dict[str, np.ndarray]
    lists: dict[str, np.ndarray]
    blocks: list[tuple[list[str], np.ndarray]]
    run_id: str | None
    source: str
    nights_dir: str | None = None

    def row(self, i: int) -> ScoreRow:
        """Row ``i`` as a JSON-native dict in the table's column order (NaN and inf as None)."""
        values: dict[str, Any] = {c: col[i] for c, col in self.ready.items()}
        values.update((c, list(col[i])) for c, col in self.lists.items())
        for names, block in self.blocks:
            vals = block[i].tolist()
            if block.dtype.kind == "f":
                vals = [v if math.isfinite(v) else None for v in vals]
            values.update(zip(names, vals, strict=True))
        return {c: values[c] for c in self.order}  # type: ignore[return-value]


@dataclass
class ScoreRun:
    """What ``run_scoring`` wrote."""

    scores: pd.DataFrame
    out_path: Path
    db_path: Path | str | None
    """The DuckDB file, or the PostgreSQL URL without its password."""
    seconds: float
    log_path: Path | None = None
    experiment: dict[str, Any] | None = None
    exports: dict[tuple[str, str], Path] | None = None


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
        self._lookup: _LookupTable | None = None  # the table lookup serves, reloaded per nightly run
        self._scores_record: str | None = None  # models_dir/latest_scores.json, stat'ed per look-up

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
        tx = self.clean_transactions(transactions, as_of)
        return self.score_cleaned(tx, customers, events, as_of=as_of, scored_at=scored_at, evidence=evidence)

    def clean_transactions(self, transactions: str | Path | pd.DataFrame, as_of: dt.date | str | None = None
                           ) -> pd.DataFrame:
        """``transactions`` loaded and cleaned with this scorer's data settings (lines after ``as_of``
        dropped): the input of :meth:`score_cleaned`."""
        from rebuy.data import load_transactions

        with step("load and clean transactions", log):
            return load_transactions(transactions, self.config, as_of=as_of)

    def score_cleaned(
        self,
        tx: pd.DataFrame,
        customers: str | Path | pd.DataFrame | None = None,
        events: str | Path | pd.DataFrame | None = None,
        *,
        as_of: dt.date | str | None = None,
        scored_at: pd.Timestamp | None = None,
        evidence: Evidence | None = None,
    ) -> pd.DataFrame:
        """:meth:`score` of transactions already cleaned (:meth:`clean_transactions`, or the frame a
        training run of the same night cleaned with the same data settings); the customers and
        events tables are loaded and validated here."""
        from rebuy.data import load_customers, load_events

        cfg = self.config
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
        history: pd.DataFrame | None,
        customer: dict[str, Any] | pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
        *,
        as_of: dt.date | str | None = None,
        customer_id: str | int | None = None,
    ) -> ScoreRow:
        """Score one customer from their transaction history (canonical or configured columns).

        ``customer`` is their customers-table row (age, consents); ``events`` their view/cart events.
        ``as_of`` defaults to the as-of day of the latest nightly run (``latest_scores.json``; else
        the bundle's training as-of), moved forward to the history's last day when the history is
        newer: a customer with nothing new since the night gets exactly the nightly row, one who
        bought since is scored with the new purchases. Pass ``as_of="today"`` to score as of today.
        Uses the training-time RFM score boundaries and VIP threshold and the night's control shares
        and evidence, so the result equals that customer's batch row, except that a run-wide
        discount ``offers.budget`` cannot apply to a single request.

        A customer without purchases (``history`` None or empty; the id from ``customer`` or
        ``customer_id``) gets a cold-start row: segment :data:`COLD_START_SEGMENT`, zero RFM
        summary and scores, cluster -1, no model predictions (None) except the spend model's
        population mean order value, popular products, and offer "none" with
        :data:`COLD_START_REASON`. Returns a JSON-native :class:`ScoreRow`.
        """
        from rebuy.data import load_customers, load_events, load_transactions

        cfg = self.config
        if history is None or len(history) == 0:
            return self._cold_start(customer, customer_id, as_of)
        tx = load_transactions(history, cfg, as_of=as_of, min_customers=1)
        if tx["customer_id"].nunique() != 1:
            raise ScoringError(f"score_customer expects one customer's history, got {tx['customer_id'].nunique()}")
        as_of_ts = self._request_as_of(tx["timestamp"], as_of)
        cust = None
        if customer is not None:
            frame = pd.DataFrame([customer]) if isinstance(customer, dict) else customer
            cust = load_customers(frame, cfg, as_of=as_of_ts)
        ev = load_events(events, cfg) if events is not None and len(events) else None
        shares, evidence = self._nightly_experiment()
        table = pipeline.score(self.bundle, tx, cust, ev, as_of_ts, control_shares=shares, evidence=evidence)
        return json_row(table.iloc[0].to_dict(), cfg)

    def _nightly_record(self) -> dict[str, Any] | None:
        from rebuy.bundle import read_latest_scores

        return read_latest_scores(self.bundle_dir.parent) if self.bundle_dir is not None else None

    def nightly_as_of(self) -> pd.Timestamp | None:
        """The as-of day (midnight) of the latest nightly run (recorded, or its decision day - 1), else
        the bundle's training as-of; None when neither is known."""
        info = self._nightly_record() or {}
        decided = (info.get("experiment") or {}).get("decided_at")
        if info.get("as_of"):
            return pd.Timestamp(info["as_of"])
        if decided:
            return pd.Timestamp(decided) - pd.Timedelta(days=1)
        trained = self.manifest.get("as_of")
        return pd.Timestamp(trained).normalize() if trained else None

    def _request_as_of(self, timestamps: pd.Series, as_of: dt.date | str | None) -> pd.Timestamp:
        """``as_of`` when given, else the later of the nightly as-of and the history's last day."""
        own = resolve_as_of(timestamps, as_of)
        if as_of is not None:
            return own
        night = self.nightly_as_of()
        return own if night is None else max(own, night)

    def _cold_start(self, customer: dict[str, Any] | pd.DataFrame | None, customer_id: str | int | None,
                    as_of: dt.date | str | None) -> ScoreRow:
        """The row of a customer without purchases (see :meth:`score_customer`)."""
        from rebuy.data import load_customers

        country = None
        if customer is not None:
            frame = pd.DataFrame([customer]) if isinstance(customer, dict) else customer
            day = pd.Timestamp(as_of) if as_of is not None else (self.nightly_as_of() or pd.Timestamp.now())
            cust = load_customers(frame, self.config, as_of=day.normalize())
            customer_id = cust["customer_id"].iloc[0] if customer_id is None else customer_id
            if "country" in cust.columns and not _is_missing(cust["country"].iloc[0]):
                country = str(cust["country"].iloc[0])
        if customer_id is None:
            raise ScoringError("score_customer: no purchases and no customer id (pass customer= or customer_id=)")
        cid = normalise_id(customer_id)
        row: dict[str, Any] = {c.name: _COLD_START_DEFAULTS[c.kind] for c in score_columns(self.config)}
        row.update(
            customer_id=cid, segment=COLD_START_SEGMENT, cluster=-1, cluster_label="no purchases yet",
            frequency=0.0, recency=0.0, T=0.0, monetary_value=0.0, total_spend=0.0,
            expected_order_value=self._population_order_value(), recommended_products=self._popular(cid, country),
            offer_type="none", offer_value=0.0, channel="none", offer_reason=COLD_START_REASON, discount_cost=0.0,
            group="none", model_run_id=self.run_id, scored_at=_json_instant(pd.Timestamp.now(tz="UTC").tz_localize(None)),
        )
        log.info("customer %s has no purchases: cold-start row", cid)
        return row  # type: ignore[return-value]

    def _population_order_value(self) -> float | None:
        """The spend model's mean order value of a customer without repeat purchases (currency)."""
        value = self.bundle.spend_model.expected_order_value(np.zeros(1), np.zeros(1))
        return _json_float(np.asarray(value, dtype=float)[0])

    def _popular(self, customer_id: str, country: str | None) -> list[str]:
        """The recommender's list for an unknown customer (popularity in their country, else overall)."""
        rec = self.recommender
        if rec is None:
            return []
        segments = pd.Series({customer_id: country}) if country is not None else None
        lists = rec.recommend([customer_id], n=self.config.recommend.n_items, segments=segments, output="lists")
        return _json_list(list(lists)[0])

    def _nightly_experiment(self) -> tuple[dict[str, ShareDecision], Evidence | None]:
        """The control shares and the evidence of the latest nightly run, so that a request gets the
        offer and the group the batch gives it; without a recorded night, the configured
        ``offers.control_share`` for every type and no evidence."""
        from rebuy.offers.names import OUTCOMES, RULE_NAMES

        recorded = (self._nightly_record() or {}).get("experiment") or {}
        evidence = Evidence.from_report(recorded["evidence"]) if recorded.get("evidence") else None
        if recorded.get("shares") is not None:
            return {t: ShareDecision(float(v), "") for t, v in recorded["shares"].items()}, evidence
        share = self.config.offers.control_share
        return {t: ShareDecision(share, "") for t in (*RULE_NAMES, *OUTCOMES) if t != "none"}, evidence

    def _lookup_table(self) -> _LookupTable:
        """The latest scores as :class:`_LookupTable`; reloaded when ``rebuy score`` publishes a newer
        night (per look-up: one ``stat`` of ``latest_scores.json`` and one ``readlink`` of the nights
        pointer, :func:`rebuy.publish.scores_stamp`)."""
        from rebuy.bundle import LATEST_SCORES_FILE, read_latest_scores
        from rebuy.publish import scores_stamp

        if self.bundle_dir is None:
            raise ScoringError("lookup needs a Scorer loaded from a models directory")
        if self._scores_record is None:
            self._scores_record = os.fspath(self.bundle_dir.parent / LATEST_SCORES_FILE)
        nights = self._lookup.nights_dir if self._lookup is not None else None
        stamp = scores_stamp(Path(self._scores_record), nights)
        if stamp is None or self._lookup is None or self._lookup.stamp != stamp:
            info = read_latest_scores(self.bundle_dir.parent) if stamp is not None else None
            if info is None:
                raise ScoringError(f"{self.bundle_dir.parent}: no scores recorded yet; run `rebuy score` first")
            stamp = scores_stamp(Path(self._scores_record), info.get("nights_dir"))
            self._lookup = _load_lookup_table(info, stamp, self.config)
            if self._lookup.run_id != self.run_id:
                log.warning("%s serves the scores of bundle %s, not of the loaded bundle %s (a newer `rebuy train` "
                            "or an older `rebuy score`); each row's model_run_id names its bundle",
                            self._lookup.source, self._lookup.run_id, self.run_id)
        return self._lookup

    @property
    def lookup_run_id(self) -> str | None:
        """The bundle (``model_run_id``) that scored the table :meth:`lookup` serves."""
        return self._lookup_table().run_id

    def lookup(self, customer_id: str | int | float, *, allow_other_run: bool = True) -> ScoreRow:
        """The latest nightly score row of one customer, JSON-native (:class:`ScoreRow`).

        The table recorded in ``latest_scores.json`` is loaded once per nightly run: the scores file,
        or the PostgreSQL table when ``rebuy score --db postgresql://...`` wrote one. Ids are
        normalised (:func:`normalise_id`: ``13085``, ``"13085.0"``, ``" 13085"`` are one customer).
        When the table was scored with another bundle than this Scorer's (``rebuy train`` ran since
        the night, or the service loaded an older bundle), the row is still served, a warning is
        logged once per table and the row's ``model_run_id`` (and :attr:`lookup_run_id`) names the
        bundle that scored it; ``allow_other_run=False`` makes that a :class:`ScoringError` instead.
        Raises :class:`~rebuy.errors.UnknownCustomerError` (a KeyError) for a customer not in the table.
        """
        table = self._lookup_table()
        if not allow_other_run and table.run_id != self.run_id:
            raise ScoringError(f"{table.source}: scored with bundle {table.run_id}, this Scorer loaded {self.run_id}; "
                               "run `rebuy score` with this bundle or pass allow_other_run=True")
        i = table.index.get(normalise_id(customer_id))
        if i is None:
            raise UnknownCustomerError(f"customer {customer_id!r} is not in the latest scores ({table.source})")
        return table.row(i)


_COLD_START_DEFAULTS: dict[str, Any] = {"string": None, "int": 0, "float": None, "bool": False, "datetime": None,
                                        "list": []}


def _load_lookup_table(info: dict[str, Any], stamp: tuple[int, str | None], config: Config) -> _LookupTable:
    """Read the recorded table (PostgreSQL when recorded, else the scores file) for :meth:`Scorer.lookup`."""
    from rebuy.data.values import parse_ids
    from rebuy.outputs import DEFAULT_TABLE, read_table_for_lookup
    from rebuy.postgres import read_postgres_table

    if info.get("db_url"):
        source = f"{info['db_url']}:{info.get('table') or DEFAULT_TABLE}"
        frame = read_postgres_table(info["db_url"], info.get("table") or DEFAULT_TABLE)
    else:
        source = str(info["scores_path"])
        frame = read_table_for_lookup(info["scores_path"])
    key = str(frame.index.name or "customer_id")
    ids = parse_ids(pd.Series(frame.index, dtype="string")).to_numpy(dtype=object)
    index = {cid: i for i, cid in enumerate(ids)}
    if len(index) < len(ids):
        log.warning("%s: %d ids are equal after normalisation; lookup serves the last", source, len(ids) - len(index))
    kinds = {c.name: c.kind for c in score_columns(config)}
    table = _LookupTable(stamp, index, [key, *map(str, frame.columns)], {key: ids}, {}, [], info.get("model_run_id"),
                         source, info.get("nights_dir"))
    numeric: dict[str, list[tuple[str, np.ndarray]]] = {"float": [], "int": [], "bool": []}
    for c in frame.columns:
        _prepare_column(table, numeric, str(c), frame[c], kinds.get(c, "float"))
    for group in numeric.values():
        if group:
            table.blocks.append(([c for c, _ in group], np.column_stack([v for _, v in group])))
    return table


def _prepare_column(table: _LookupTable, numeric: dict[str, list[tuple[str, np.ndarray]]], name: str,
                    values: pd.Series, kind: Kind) -> None:
    """File one column of the lookup table by kind: a numeric block, a list column or ready JSON values."""
    if kind == "float":
        numeric["float"].append((name, pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)))
    elif kind in ("int", "bool") and not values.isna().any():
        numeric[kind].append((name, values.to_numpy(np.int64 if kind == "int" else bool)))
    elif kind == "list":
        table.lists[name] = _object_array([v if isinstance(v, list) else _json_list(v) for v in values.tolist()])
    else:  # strings, days and instants repeat: convert each distinct value once
        codes, uniques = pd.factorize(pd.to_datetime(values, errors="coerce") if kind == "datetime" else values)
        convert = json_converter(name, kind)
        table.ready[name] = _object_array([*(convert(u) for u in uniques), None])[codes]


def _object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (lists stay elements, not a second axis)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


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
    exports: str | Path | None = None,
) -> ScoreRun:
    """The nightly batch behind ``rebuy score``: score, write atomically, log the decisions, record where.

    ``config`` / ``columns`` change the scoring settings (see :meth:`Scorer.with_settings`).
    ``uplift`` is a ``rebuy measure`` JSON whose evidence re-orders the offers (default: none, or
    ``models_dir/latest_uplift.json`` when ``offers.use_measured_uplift`` is set). ``exports`` is a
    directory for one CSV per offer type x channel of the customers to contact
    (:func:`rebuy.exports.write_exports`, products by the names the recommender learnt).

    ``db`` is a DuckDB file (the embedded default) or a ``postgresql://`` URL (psycopg 3, ``pip install
    'rebuy[postgres]'``; :func:`rebuy.postgres.upsert_postgres`). Output (Parquet or CSV by extension)
    and the database table are replaced atomically (one transaction), so a failed run leaves
    yesterday's results intact and a reader never sees a partial table. The night's decisions go to
    the offer log (:mod:`rebuy.offer_log`): the ``offer_log`` table of the database, in the scores'
    transaction, and ``offer_log/<run_id>.parquet`` beside the scores, published last; a rerun of the
    night replaces its rows. ``models_dir/latest_scores.json`` records the paths (a PostgreSQL URL
    without its password), the bundle and the as-of day for ``Scorer.lookup`` / ``score_customer``.

    The whole run holds ``models_dir/.rebuy.lock`` and the nights directory's ``.publish.lock``
    (:mod:`rebuy.runlock`; another run: wait up to ``config.operations.lock_timeout_seconds``,
    default 0, then :class:`rebuy.runlock.RunLockedError`) and first removes what killed runs left:
    temporary bundle directories, unpublished nights (:func:`rebuy.publish.recover`: a night the
    database committed is published) and the temporaries of older versions beside ``out``.
    """
    t0 = time.perf_counter()
    target = NightTarget.check(out, exports, db, table)
    settings = config or Config()
    with models_lock(models_dir, settings, what="score"):
        scorer = Scorer.load(Path(models_dir) / "latest")
        if config is not None or columns or time_unit:
            scorer = scorer.with_settings(config, columns, time_unit)
        with publish_lock(target, settings, what="score"):
            tx = scorer.clean_transactions(transactions, as_of)
            return score_and_publish(scorer, tx, customers, events, as_of=as_of, uplift=uplift, target=target,
                                     models_dir=Path(models_dir), keep_nights=settings.operations.keep_nights, t0=t0)


@dataclass(frozen=True)
class NightTarget:
    """Where a night is published, checked before any work: the scores file, the exports directory,
    the database (a DuckDB path or a PostgreSQL URL) and how to name it in logs."""

    out: Path
    exports: Path | None
    db: str | Path | None
    db_where: Path | str | None
    table: str

    @classmethod
    def check(cls, out: str | Path, exports: str | Path | None, db: str | Path | None, table: str) -> NightTarget:
        """One-line errors for paths that cannot be published to; psycopg checked before the work."""
        from rebuy.postgres import has_password, is_postgres_url, require_psycopg, safe_url
        from rebuy.publish import check_views

        if isinstance(db, Path) and str(db).lower().startswith(("postgresql:", "postgres:")):
            raise UsageError(f"--db {db}: a PostgreSQL URL must be passed as a string (as a path it lost its '//')")
        db_where: Path | str | None = Path(db) if db is not None else None
        if is_postgres_url(db):
            require_psycopg(str(db))  # before an hour of scoring, not after
            db_where = safe_url(str(db))
            if has_password(str(db)):
                log.warning("%s: the password is not recorded in latest_scores.json; Scorer.lookup needs PGPASSWORD, "
                            "~/.pgpass or a libpq service", db_where)
        target = cls(Path(out), Path(exports) if exports is not None else None, db, db_where, table)
        check_views(target.out, target.exports)
        return target


@contextmanager
def models_lock(models_dir: str | Path, settings: Config, *, what: str) -> Iterator[None]:
    """The models directory's run lock (:mod:`rebuy.runlock`), then the removal of what killed
    runs left there (temporary bundle directories)."""
    from rebuy.bundle import bundle_leftovers
    from rebuy.runlock import lock_path, remove_leftovers, run_lock

    with run_lock(lock_path(models_dir), what=what, timeout_seconds=settings.operations.lock_timeout_seconds):
        remove_leftovers(bundle_leftovers(models_dir), str(models_dir))
        yield


@contextmanager
def publish_lock(target: NightTarget, settings: Config, *, what: str) -> Iterator[None]:
    """The nights directory's publish lock, taken once the bundle is loaded (a run that fails
    before that writes nothing beside the scores); then what killed runs left there: the
    temporaries of older versions and unpublished nights (:func:`_recover_nights`)."""
    from rebuy.offer_log import staged_leftovers as log_leftovers
    from rebuy.publish import PUBLISH_LOCK, nights_root
    from rebuy.runlock import atomic_temp_files, remove_leftovers, run_lock

    out = target.out
    with run_lock(nights_root(out) / PUBLISH_LOCK, what=what, timeout_seconds=settings.operations.lock_timeout_seconds):
        remove_leftovers([*log_leftovers(out), *atomic_temp_files(out.parent, out.name)], str(out.parent))
        _recover_nights(out, target.db)
        yield


def score_and_publish(scorer: Scorer, tx: pd.DataFrame, customers: Any, events: Any, *, as_of: dt.date | str | None,
                      uplift: str | Path | None, target: NightTarget, models_dir: Path, keep_nights: int,
                      t0: float) -> ScoreRun:
    """Score cleaned transactions, check the table and publish the night (:func:`_publish_night`)."""
    from rebuy.offer_log import offer_log_frame, run_id_for

    evidence = _evidence(uplift, scorer.config, models_dir)
    scores = scorer.score_cleaned(tx, customers, events, as_of=as_of, evidence=evidence)
    pipeline.check_scores(scores)
    experiment = scores.attrs["experiment"]
    run_id = run_id_for(pd.Timestamp(experiment["decided_at"]))
    decisions = offer_log_frame(scores, experiment)
    exports = target.exports
    export_names = _publish_night(scores, decisions, scorer, out=target.out, exports=exports, db=target.db,
                                  table=target.table, run_id=run_id, models_dir=models_dir, keep_nights=keep_nights)
    return ScoreRun(scores=scores, out_path=target.out, db_path=target.db_where, seconds=time.perf_counter() - t0,
                    log_path=target.out.parent / "offer_log" / f"{run_id}.parquet",
                    experiment={**experiment, "run_id": run_id, "logged": len(decisions)},
                    exports={k: exports / name for k, name in export_names.items()} if exports is not None else {})


def _recover_nights(out: Path, db: str | Path | None) -> None:
    """Before a night: remove what killed runs left in the nights directory, roll forward a night
    the database committed but the files never published (:func:`rebuy.publish.recover`)."""
    from rebuy.publish import committed_nights, nights_root, recover, unpublished

    root = nights_root(out)
    _, newer = unpublished(root)
    recover(root, committed_nights(db, newer) if newer else (None if db is None else set()))


def _publish_night(scores: pd.DataFrame, decisions: pd.DataFrame, scorer: Scorer, *, out: Path,
                   exports: Path | None, db: str | Path | None, table: str, run_id: str,
                   models_dir: Path, keep_nights: int) -> dict[tuple[str, str], str]:
    """Stage every file of the night, commit the database, switch ``current`` (:mod:`rebuy.publish`);
    any failure before the switch removes the night and leaves the previous one live. Returns the
    export file names by (offer type, channel)."""
    from rebuy.offer_log import LOG_TABLE
    from rebuy.outputs import upsert_db, write_table
    from rebuy.postgres import is_postgres_url
    from rebuy.publish import (
        NIGHTS_TABLE,
        link_views,
        prune_nights,
        record_location,
        stage_night,
        switch_current,
    )

    experiment = scores.attrs["experiment"]
    night = stage_night(out, run_id, out.parent / "offer_log")
    try:
        with step(f"write {out}", log):
            write_table(scores, night.scores_path)
            write_table(decisions, night.offer_log_dir / f"{run_id}.parquet")
        export_files = _write_exports(scores, night.exports_dir, scorer) if exports is not None else {}
        as_of_day = (pd.Timestamp(experiment["decided_at"]) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
        night.seal({"scores_name": out.name, "model_run_id": scorer.run_id, "as_of": as_of_day, "run_id": run_id,
                    "experiment": {k: experiment[k] for k in ("experiment", "decided_at", "shares", "evidence")},
                    "customers": len(scores), "decisions": len(decisions)})
        if db is not None:
            nights = pd.DataFrame({"night_id": [night.night_id], "run_id": [run_id], "model_run_id": [scorer.run_id],
                                   "published_at": [pd.Timestamp.now(tz="UTC").tz_localize(None)]})
            with step(f"upsert {db}:{table}, {LOG_TABLE} and {NIGHTS_TABLE}", log):
                upsert_db(scores, db if is_postgres_url(db) else Path(db), table=table,
                          appends={LOG_TABLE: (decisions, "run_id", run_id),
                                   NIGHTS_TABLE: (nights, "night_id", night.night_id)})
    except BaseException:
        night.discard()
        raise
    switch_current(night.root, night.night_id)
    link_views(out, exports, night.root)
    record_location(models_dir, night.root, out, db, table)
    pruned = prune_nights(night.root, keep_nights)
    if pruned:
        log.info("%s: pruned %d old night(s)", night.root, len(pruned))
    return {k: p.name for k, p in export_files.items()}


def _write_exports(scores: pd.DataFrame, out_dir: str | Path, scorer: Scorer) -> dict[tuple[str, str], Path]:
    """The contact files of the night, products named as the recommender learnt them."""
    from rebuy.exports import write_exports

    with step(f"exports to {out_dir}", log):
        return write_exports(scores, out_dir, product_names=pipeline.recommender_names(scorer.bundle),
                             currency=scorer.config.currency)


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
        "not_sent": int(((scores["group"] == "treatment") & ~scores["deliver"]).sum()),
    }
