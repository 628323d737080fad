"""One run at a time per models directory, and the sweep of what killed runs left behind.

``rebuy train`` and ``rebuy score`` hold :func:`run_lock` on ``<models_dir>/.rebuy.lock`` for their
whole run (``score`` records ``latest_scores.json`` there and ``train`` prunes bundles there), so two
runs on the same models directory never interleave: the second waits up to
``operations.lock_timeout_seconds`` and then stops with one line naming the holder (its pid, command
and start time) and the lock file.

The lock is ``fcntl.flock`` on the lock file: the kernel releases it when the holder's process ends,
however it ends, so a lock file left by a killed run never blocks. The file's JSON content
(``{pid, command, started_at}``) only tells a waiting run who holds the lock; it is emptied on release
and never removed (removing a flock'ed file lets two runs lock two different files).

Leftovers of killed runs (temporary bundle directories, staged offer-log files, ``atomic_file``
temporaries) are found by the modules that write them and removed by :func:`remove_leftovers` while
the lock is held, so they can never be the files of another live run on the same models directory.
DuckDB's ``.wal`` files are left alone: DuckDB replays a write-ahead log itself when the database is
next opened, and removing one would lose a committed transaction.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rebuy.errors import RebuyError

log = logging.getLogger(__name__)

LOCK_NAME = ".rebuy.lock"
"""The lock file of a models directory."""

POLL_SECONDS = 0.1
"""How often a waiting run tries the lock again."""

ATOMIC_TEMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{8}$")
"""Names of the temporary files of :func:`rebuy.outputs.atomic_file` (``.<name>.tmp-<8 hex>``)."""

_UNWRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class RunLockedError(RebuyError, RuntimeError):
    """Another rebuy run holds the lock of this models directory; the message names it and the lock file."""


def lock_path(models_dir: str | os.PathLike[str]) -> Path:
    """The lock file of ``models_dir`` (``<models_dir>/.rebuy.lock``)."""
    return Path(models_dir) / LOCK_NAME


@contextmanager
def run_lock(path: str | os.PathLike[str], *, what: str, timeout_seconds: float = 0.0) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``path`` (created with its directory) for the ``with`` block.

    ``what`` names this run's command (``score``, ``train``) in the lock file. When another live
    process holds the lock, wait up to ``timeout_seconds`` (0: not at all) and then raise
    :class:`RunLockedError`. A directory where the lock file cannot be created (read-only, not ours)
    is locked itself instead, so that the run gets as far as its first write and fails there with
    the usual one-line message. Yields the lock file's path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, writable = _open_lock(path)
    try:
        _acquire(fd, path, timeout_seconds)
        try:
            if writable:
                _write_holder(fd, what)
            yield path
        finally:
            if writable:
                _clear_holder(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_lock(path: Path) -> tuple[int, bool]:
    """A descriptor to flock and whether the holder's details can be written into it."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644), True
    except OSError as exc:
        if exc.errno not in _UNWRITABLE:
            raise
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC), False
    except FileNotFoundError:
        log.warning("%s: cannot create the lock file; locking the directory instead", path)
        return os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC), False


def _acquire(fd: int, path: Path, timeout_seconds: float) -> None:
    """Take the lock, waiting up to ``timeout_seconds``; RunLockedError naming the holder when it stays taken."""
    deadline = time.monotonic() + max(float(timeout_seconds), 0.0)
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if time.monotonic() >= deadline:
            raise RunLockedError(_locked_message(path, timeout_seconds))
        if not announced:
            log.info("%s: waiting up to %gs: another %s", path.parent, timeout_seconds, _holder_text(path, "holds the lock"))
            announced = True
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))


def _write_holder(fd: int, what: str) -> None:
    """Record this process as the holder (best effort: a full disk must not stop the run here)."""
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    data = json.dumps({"pid": os.getpid(), "command": what, "started_at": started}).encode("utf-8") + b"\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as exc:
        log.debug("cannot record the lock holder: %s", exc)


def _clear_holder(fd: int) -> None:
    """Empty the lock file on release, so that its content never names a finished run."""
    try:
        os.ftruncate(fd, 0)
    except OSError as exc:
        log.debug("cannot clear the lock holder: %s", exc)


def read_holder(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``{pid, command, started_at}`` recorded in a lock file, or None (empty, unreadable, or a dead pid)."""
    try:
        holder = json.loads(Path(path).read_text(encoding="utf-8"))
        pid = int(holder["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return holder if _alive(pid) else None


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def _holder_text(path: Path, verb: str) -> str:
    """``rebuy score is running (pid 4242, started 2026-12-01T03:00:12Z)`` (``verb`` after the command),
    or ``rebuy run is running`` when the holder is unknown (it has not written its record yet)."""
    holder = read_holder(path)
    if holder is None:
        return f"rebuy run {verb}"
    return (f"rebuy {holder.get('command', 'run')} {verb} "
            f"(pid {holder['pid']}, started {holder.get('started_at', '?')})")


def _locked_message(path: Path, timeout_seconds: float) -> str:
    """The one line of :class:`RunLockedError`."""
    waited = f"; waited {timeout_seconds:g}s" if timeout_seconds > 0 else ""
    return (f"{path.parent}: another {_holder_text(path, 'is running')}{waited}; it holds {path}: "
            "wait for it to finish or raise operations.lock_timeout_seconds")


# --------------------------------------------------------------------------------------------- leftovers


def atomic_temp_files(directory: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """The ``atomic_file`` temporaries in ``directory`` (only those of the file ``name`` when given)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = f".{name}.tmp-*" if name is not None else ".*.tmp-*"
    return sorted(p for p in directory.glob(pattern) if ATOMIC_TEMP_RE.match(p.name) and (p.is_symlink() or not p.is_dir()))


def remove_leftovers(paths: Iterable[Path], where: str) -> list[Path]:
    """Remove what killed runs left (files, links, directories); one INFO line naming them.

    Call only while holding :func:`run_lock`. A path that cannot be removed is reported in a
    warning and kept: a leftover never fails the run. Returns the removed paths.
    """
    removed: list[Path] = []
    for path in paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: cannot remove this leftover of an earlier run (%s)", path, exc.strerror or exc)
            continue
        removed.append(path)
    if removed:
        log.info("%s: removed %d leftover(s) of killed runs: %s", where, len(removed),
                 ", ".join(str(p) for p in removed))
    return removed
