"""One night, one publish: every file a scoring night writes goes live with ONE pointer switch.

Layout beside the scores file ``out`` (``rebuy score --out DIR/scores.parquet``)::

    DIR/
      scores.parquet -> .rebuy-nights/current/scores.parquet     stable views: symlinks made once,
      offer_log      -> .rebuy-nights/current/offer_log          they never change
      .rebuy-nights/
        <night-id>/                 one complete night, never modified once sealed
          scores.parquet            the scores (the name and format of ``out``)
          offer_log/<run>.parquet   the whole offer-log dataset as of that night: earlier nights'
                                    files are hard links (no copy), tonight's file is new
          exports/                  the contact files, when ``--exports`` (that path is a view too)
          night.json                the night's record: bundle, as-of day, experiment, database
        current -> <night-id>       THE pointer: a relative symlink replaced by rename(2)
        .tmp-<night-id>/            a night being staged (removed by the next run if it was killed)

A night is staged in ``.tmp-<night-id>/``, fsync'd and sealed (renamed to ``<night-id>/``); then
the database transaction (scores table, ``offer_log`` rows and a ``rebuy_nights`` row naming the
night) commits; then ``current`` is switched. A reader that opens ``scores.parquet``, lists
``offer_log/`` or follows ``models/latest_scores.json`` (which names the nights directory; the
night's own record is ``current/night.json``) sees last night's complete set or tonight's, never a
mix: any failure before the switch leaves ``current`` where it was and the next run removes the
unpublished night. The database commit and the switch are two steps: a crash in the microseconds
between them leaves the database one night ahead of the files; the next run (and ``rebuy doctor``)
finds the sealed night the database names and switches ``current`` to it (roll forward, as a
database redoes a committed transaction from its log).

Nights older than the newest ``operations.keep_nights`` are pruned (never ``current``); their
offer-log files live on in later nights through the hard links.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuy.errors import OutputError
from rebuy.outputs import fsync_dir, write_json

log = logging.getLogger(__name__)

NIGHTS_DIR = ".rebuy-nights"
CURRENT = "current"
NIGHT_RECORD = "night.json"
OFFER_LOG = "offer_log"
EXPORTS = "exports"
TEMP_PREFIX = ".tmp-"
PUBLISH_LOCK = ".publish.lock"
"""The run lock of a nights directory (:func:`rebuy.runlock.run_lock`): a run scoring into it with
another models directory waits for or refuses the first, never interleaves."""
NIGHTS_TABLE = "rebuy_nights"
"""Database table with one row per published night (``night_id``, ``run_id``, ``published_at``)."""


def nights_root(out: str | os.PathLike[str]) -> Path:
    """The nights directory of a scores file: ``.rebuy-nights/`` beside it."""
    return Path(out).parent / NIGHTS_DIR


def new_night_id(run_id: str, now: dt.datetime | None = None) -> str:
    """``<offer-log run id>-<UTC time to the microsecond>-<4 hex>``: unique, sorts by time within a run id."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"{run_id}-{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(2)}"


# --------------------------------------------------------------------------------------------- checks


def check_views(out: Path, exports: Path | None) -> None:
    """Refuse, before any scoring, output paths that could not become views, and a second scores
    file in a directory that publishes another's nights (one line each)."""
    for path, what in ((out, "--out"), (exports, "--exports")):
        if path is None:
            continue
        if path.is_dir() and not path.is_symlink() and what == "--out":
            raise OutputError(f"{path}: is a directory; {what} takes a scores file path (.parquet, .csv, .csv.gz)")
        if path.exists() and not path.is_symlink() and not path.is_dir() and what == "--exports":
            raise OutputError(f"{path}: is a file; {what} takes a directory")
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{path}: its parent {parent} is a file, not a directory")
    night = read_night(nights_root(out)) if nights_root(out).is_dir() else None
    if night is not None and night.get("scores_name") != out.name:
        raise OutputError(f"{out}: {out.parent} already publishes the nights of {night.get('scores_name')} "
                          "(one scores file per directory: its views share offer_log/); give this one its own directory")


# --------------------------------------------------------------------------------------------- staging


@dataclass
class StagedNight:
    """A night being written: its files go under :attr:`staging`; :meth:`seal` makes it complete
    (not live); :func:`switch_current` publishes it; :meth:`discard` removes it."""

    root: Path
    night_id: str
    out_name: str

    @property
    def staging(self) -> Path:
        return self.root / f"{TEMP_PREFIX}{self.night_id}"

    @property
    def sealed(self) -> Path:
        return self.root / self.night_id

    @property
    def scores_path(self) -> Path:
        return self.staging / self.out_name

    @property
    def offer_log_dir(self) -> Path:
        return self.staging / OFFER_LOG

    @property
    def exports_dir(self) -> Path:
        return self.staging / EXPORTS

    def seal(self, record: dict[str, Any]) -> Path:
        """Write ``night.json``, fsync every file and rename the staging directory to its night id."""
        write_json({**record, "night_id": self.night_id}, self.staging / NIGHT_RECORD)
        _fsync_tree(self.staging)
        os.replace(self.staging, self.sealed)
        fsync_dir(self.root)
        return self.sealed

    def discard(self) -> None:
        """Remove the night (staged or sealed, never the live one)."""
        if current_night_id(self.root) == self.night_id:
            raise AssertionError(f"internal: discarding the live night {self.night_id}")
        for path in (self.staging, self.sealed):
            shutil.rmtree(path, ignore_errors=True)


def stage_night(out: Path, run_id: str, previous_log: Path | None) -> StagedNight:
    """Start a night for the scores file ``out``: its staging directory, with the offer-log files of
    ``previous_log`` (the log directory readers see now) hard-linked in, except ``run_id``'s own
    (a rerun of the night replaces it)."""
    root = nights_root(out)
    root.mkdir(parents=True, exist_ok=True)
    night = StagedNight(root, new_night_id(run_id), out.name)
    night.offer_log_dir.mkdir(parents=True)
    if previous_log is not None and previous_log.is_dir():
        for file in sorted(previous_log.glob("*.parquet")):
            if file.name != f"{run_id}.parquet" and not file.name.startswith("."):
                _link_or_copy(file, night.offer_log_dir / file.name)
    return night


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src.resolve(), dst)
    except OSError:  # another file system or no hard links there
        shutil.copy2(src, dst)


def _fsync_tree(directory: Path) -> None:
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


# --------------------------------------------------------------------------------------------- the switch


def current_night_id(root: Path) -> str | None:
    """The live night of a nights directory (None before the first publish)."""
    try:
        return os.readlink(root / CURRENT)
    except (FileNotFoundError, NotADirectoryError):
        return None


def switch_current(root: Path, night_id: str) -> None:
    """Point ``root/current`` at the sealed night ``night_id``: one rename(2), atomic for readers."""
    if not (root / night_id / NIGHT_RECORD).is_file():
        raise AssertionError(f"internal: night {night_id} is not sealed")
    tmp = root / f".{CURRENT}-{secrets.token_hex(4)}"
    os.symlink(night_id, tmp)
    os.replace(tmp, root / CURRENT)
    fsync_dir(root)
    log.info("published night %s (%s)", night_id, root)


def link_views(out: Path, exports: Path | None, root: Path) -> None:
    """Make the stable views (``out``, ``offer_log/`` beside it, ``exports``) symlinks through
    ``root/current``; a view that already is one is left alone. Files and directories of versions
    that wrote them in place are replaced (a directory is moved into ``root`` as
    ``replaced-<name>-<time>``: its offer-log files already live on in the night through hard links)."""
    views = [(out, Path(CURRENT) / out.name), (out.parent / OFFER_LOG, Path(CURRENT) / OFFER_LOG)]
    if exports is not None:
        views.append((exports, Path(CURRENT) / EXPORTS))
    for view, inside in views:
        target = os.path.relpath(os.path.abspath(root / inside), os.path.abspath(view.parent))
        if view.is_symlink() and os.readlink(view) == target:
            continue
        view.parent.mkdir(parents=True, exist_ok=True)
        if view.is_dir() and not view.is_symlink():
            os.replace(view, root / f"replaced-{view.name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}")
        tmp = view.parent / f".{view.name}.view-{secrets.token_hex(4)}"
        os.symlink(target, tmp)
        os.replace(tmp, view)
        fsync_dir(view.parent)


# --------------------------------------------------------------------------------------------- recovery


def sealed_nights(root: Path) -> list[str]:
    """The sealed nights of ``root``, oldest first (ids sort by time within one run id, so sort by
    the recorded seal time)."""
    if not root.is_dir():
        return []
    nights = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (p / NIGHT_RECORD).is_file()]
    return [p.name for p in sorted(nights, key=lambda p: (p / NIGHT_RECORD).stat().st_mtime_ns)]


def unpublished(root: Path) -> tuple[list[Path], list[str]]:
    """What killed or failed runs left: staging directories, and sealed nights newer than ``current``."""
    if not root.is_dir():
        return [], []
    staging = [p for p in root.iterdir() if p.name.startswith(TEMP_PREFIX) or p.name.startswith(f".{CURRENT}-")]
    nights = sealed_nights(root)
    live = current_night_id(root)
    newer = nights[nights.index(live) + 1:] if live in nights else nights
    return staging, newer


def recover(root: Path, committed: set[str] | None) -> str | None:
    """Clean ``root`` before a night: remove staging leftovers; a sealed night newer than ``current``
    whose id the database committed (``committed``; None: no database) is published (roll forward),
    the others are removed. Returns the night rolled forward, if any."""
    staging, newer = unpublished(root)
    for path in staging:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
    forward = [n for n in newer if committed is not None and n in committed]
    if forward:
        log.warning("%s: night %s was committed to the database but not published (a run was killed between the "
                    "two); publishing it now", root, forward[-1])
        switch_current(root, forward[-1])
    for night in newer:
        if night not in forward[-1:]:
            log.info("%s: removing night %s, which a failed run left unpublished", root, night)
            shutil.rmtree(root / night, ignore_errors=True)
    return forward[-1] if forward else None


def prune_nights(root: Path, keep: int) -> list[str]:
    """Remove sealed nights older than the newest ``keep`` (never ``current``); returns their ids."""
    if keep <= 0:
        return []
    live = current_night_id(root)
    nights = [n for n in sealed_nights(root) if n != live]
    if live is not None:
        keep -= 1
    old = nights[: max(len(nights) - keep, 0)]
    for night in old:
        shutil.rmtree(root / night, ignore_errors=True)
    return old


# --------------------------------------------------------------------------------------------- readers


def read_night(root: Path) -> dict[str, Any] | None:
    """The live night's record (``current/night.json``) with ``night_dir`` (the resolved directory,
    so every path read from it belongs to the same night); None before the first publish."""
    night_id = current_night_id(root)
    if night_id is None:
        return None
    night_dir = root / night_id
    try:
        record = json.loads((night_dir / NIGHT_RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:  # pruned between readlink and open: a newer night is live now
        return read_night(root) if current_night_id(root) != night_id else None
    return {**record, "night_dir": night_dir}


LOCATION_KEYS = ("nights_dir", "scores_path", "db_path", "db_url", "table")


def record_location(models_dir: Path, root: Path, out: Path, db: str | Path | None, table: str | None) -> Path:
    """Record in ``models_dir/latest_scores.json`` where the nights live (the stable view ``out``, the
    nights directory, the database without its password). Rewritten only when that changes, so
    nightly publishes switch one pointer: ``current``."""
    from rebuy.bundle import LATEST_SCORES_FILE
    from rebuy.postgres import is_postgres_url, safe_url

    url = safe_url(str(db)) if is_postgres_url(db) else None
    record = {"nights_dir": str(root.resolve()), "scores_path": str(out.parent.resolve() / out.name),
              "db_path": str(Path(db).resolve()) if db is not None and url is None else None, "db_url": url,
              "table": table if db is not None else None}
    file = models_dir / LATEST_SCORES_FILE
    try:
        old = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or any(old.get(k) != record[k] for k in LOCATION_KEYS):
        models_dir.mkdir(parents=True, exist_ok=True)
        write_json({**record, "recorded_at": _now_text()}, file)
    return file


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def follow_night(record: dict[str, Any]) -> dict[str, Any] | None:
    """A ``latest_scores.json`` record that names a nights directory, completed by the live night's
    record: ``scores_path`` becomes the night's own file (so a table read from it belongs to that
    night even if another is published meanwhile), with its ``model_run_id``, ``as_of``,
    ``experiment`` and ``night_id``. None before the first publish."""
    night = read_night(Path(record["nights_dir"]))
    if night is None:
        return None
    merged = {**record, **{k: night.get(k) for k in ("model_run_id", "as_of", "experiment", "night_id")}}
    merged["scores_path"] = night["night_dir"] / night["scores_name"]
    return merged


def scores_stamp(record_file: Path, nights_dir: str | None) -> tuple[int, str | None] | None:
    """Changes when a new night is published or the record moves (two system calls); None when no
    record exists."""
    try:
        mtime = os.stat(record_file).st_mtime_ns
    except FileNotFoundError:
        return None
    return mtime, current_night_id(Path(nights_dir)) if nights_dir else None


def committed_nights(db: str | Path | None, night_ids: list[str]) -> set[str] | None:
    """Which of ``night_ids`` the database's ``rebuy_nights`` table holds (None without a database;
    an empty set when the table does not exist or cannot be read: nothing is rolled forward then)."""
    if db is None:
        return None
    if not night_ids:
        return set()
    from rebuy.postgres import is_postgres_url

    try:
        if is_postgres_url(db):
            from rebuy.postgres import committed_values

            return committed_values(str(db), NIGHTS_TABLE, "night_id", night_ids)
        return _duckdb_committed(Path(db), night_ids)
    except Exception as exc:  # noqa: BLE001 - recovery must not fail the night; the night is then discarded
        log.warning("%s: could not read %s (%s); unpublished nights are discarded", db, NIGHTS_TABLE, exc)
        return set()


def _duckdb_committed(db: Path, night_ids: list[str]) -> set[str]:
    import duckdb

    if not db.is_file():
        return set()
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if NIGHTS_TABLE not in tables:
            return set()
        rows = con.execute(f"SELECT night_id FROM {NIGHTS_TABLE} WHERE night_id IN (SELECT unnest(?))",
                           [night_ids]).fetchall()
        return {r[0] for r in rows}
    finally:
        con.close()
