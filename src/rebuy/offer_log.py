"""The offer log: every night's decisions, appended, so that ``rebuy measure`` can judge them.

One row per customer with an offer (columns :data:`rebuy.schema.OFFER_LOG_COLUMNS`), written by
``rebuy score`` in two places:

- the DuckDB table ``offer_log`` beside ``customer_scores`` (same file, same transaction:
  :func:`rebuy.outputs.upsert_duckdb` with ``offer_log=``);
- a Parquet dataset ``offer_log/`` next to the scores file: one file per scoring run,
  ``offer_log/<run_id>.parquet``. Readers of the directory (pyarrow, DuckDB, pandas) skip names
  starting with ".", so the file is staged as ``.<run_id>.parquet.tmp-*`` and renamed into place
  only after every other output of the run was written (:class:`StagedLog`).

Invariants: a run is identified by its decision day (``run_id = "score-YYYYMMDD"``), so re-running
a night replaces that night's rows in both places and never duplicates them; a run that fails
before its outputs are published adds nothing (the staged file is removed, the DuckDB transaction
rolls back). Until issue 14's single publish, a crash in the instant between the DuckDB commit and
the rename leaves the night in DuckDB only; the next run of that night repairs it.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rebuy.schema import OFFER_LOG_COLUMNS

log = logging.getLogger(__name__)

LOG_TABLE = "offer_log"
LOG_DIR = "offer_log"

STAGED_RE = re.compile(r"^\.[0-9a-f]{8}-score-\d{8}\.parquet$")
"""Names of :class:`StagedLog` files (``.<8 hex>-score-YYYYMMDD.parquet``)."""


def run_id_for(decided_at: pd.Timestamp) -> str:
    """The scoring run's id: one per decision day (a rerun of the night replaces its rows)."""
    return f"score-{pd.Timestamp(decided_at):%Y%m%d}"


def offer_log_frame(scores: pd.DataFrame, experiment: dict[str, Any]) -> pd.DataFrame:
    """The log rows of a score table (customers with an offer), from ``scores.attrs["experiment"]``
    (decision day, experiment key, control shares)."""
    rows = scores[scores["offer_type"].astype(str) != "none"]
    decided_at = pd.Timestamp(experiment["decided_at"])
    shares = experiment.get("shares", {})
    frame = pd.DataFrame({
        "customer_id": rows["customer_id"].astype("string").to_numpy(),
        "decided_at": np.full(len(rows), decided_at.to_datetime64()).astype("datetime64[ns]"),
        "run_id": run_id_for(decided_at),
        "model_run_id": rows["model_run_id"].astype("string").to_numpy(),
        "experiment": experiment["experiment"],
        "offer_type": rows["offer_type"].astype("string").to_numpy(),
        "offer_value": rows["offer_value"].to_numpy(dtype=np.float64),
        "discount_cost": rows["discount_cost"].to_numpy(dtype=np.float64),
        "channel": rows["channel"].astype("string").to_numpy(),
        "group": rows["group"].astype("string").to_numpy(),
        "deliver": rows["deliver"].to_numpy(dtype=bool),
        "control_share": rows["offer_type"].astype(str).map(shares).fillna(0.0).to_numpy(dtype=np.float64),
        "segment": rows["segment"].astype("string").to_numpy(),
        "p_purchase_90d": rows["p_purchase_90d"].to_numpy(dtype=np.float64),
        "expected_purchases_90d": rows["expected_purchases_90d"].to_numpy(dtype=np.float64),
        "total_spend": rows["total_spend"].to_numpy(dtype=np.float64),
        "scored_at": rows["scored_at"].to_numpy(),
    })
    for c in ("run_id", "experiment"):
        frame[c] = frame[c].astype("string")
    return frame[OFFER_LOG_COLUMNS]


def offer_log_dir(scores_path: str | os.PathLike[str]) -> Path:
    """The Parquet dataset directory of the log: ``offer_log/`` beside the scores file."""
    return Path(scores_path).parent / LOG_DIR


class StagedLog:
    """One run's log file, written hidden (``.<token>-<run_id>.parquet``) beside its final name and
    published by :meth:`publish` (``os.replace``, atomic) or removed by :meth:`discard`. A night
    without offers still writes its (empty) file, so a rerun replaces an earlier one."""

    def __init__(self, frame: pd.DataFrame, directory: Path, run_id: str):
        from rebuy.outputs import write_table

        if len(frame) and set(frame["run_id"].unique()) != {run_id}:
            raise AssertionError(f"internal: the log file of {run_id} holds other runs")
        directory.mkdir(parents=True, exist_ok=True)
        self.final = directory / f"{run_id}.parquet"
        self.staged = directory / f".{secrets.token_hex(4)}-{run_id}.parquet"
        write_table(frame, self.staged)
        self.rows = len(frame)

    def publish(self) -> Path:
        os.replace(self.staged, self.final)
        log.info("offer log: %d rows in %s", self.rows, self.final)
        return self.final

    def discard(self) -> None:
        self.staged.unlink(missing_ok=True)


def staged_leftovers(scores_path: str | os.PathLike[str]) -> list[Path]:
    """Staged log files a killed run left in the log directory of ``scores_path``: its
    ``.<hex>-score-*.parquet`` files and their ``atomic_file`` temporaries.

    Only for a run holding :func:`rebuy.runlock.run_lock` (no other run is staging then);
    :func:`rebuy.runlock.remove_leftovers` removes them.
    """
    from rebuy.runlock import atomic_temp_files

    directory = offer_log_dir(scores_path)
    if not directory.is_dir():
        return []
    staged = sorted(p for p in directory.glob(".*-score-*.parquet") if STAGED_RE.match(p.name) and p.is_file())
    return staged + [p for p in atomic_temp_files(directory) if STAGED_RE.match(p.name[1:].rsplit(".tmp-", 1)[0])]
