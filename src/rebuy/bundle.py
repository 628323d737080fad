"""Model bundles: one directory per training run, checksummed, optionally signed, swapped in atomically.

Layout written by :func:`write_bundle`::

    models/
      <run-id>/               # e.g. 20261122T204121123456Z-3fa9c1 (UTC time + random; sorts by time)
        <name>.json           # one per artefact: its structure (rebuy.artefacts nodes) + array table
        <name>.bin            # its arrays, raw, at the offsets the JSON gives (none when it has none);
        <name>.<k>.bin        #   split into parts of <= PART_BYTES (64 MiB) when larger, k = 0, 1, ...
        manifest.json         # caller's manifest + artefact_format, run_id, created_at, versions,
                              #   artefacts {name: {file, sha256, bytes, data: [{file, sha256, bytes}]}}
        manifest.sig          # only when REBUY_BUNDLE_KEY is set: hex HMAC-SHA256 of manifest.json's bytes
      latest -> <run-id>      # relative symlink, repointed atomically after the bundle is complete
      LATEST                  # text file holding the run id (fallback where symlinks are unavailable)
      latest_scores.json      # where the last `rebuy score` wrote its table (record_latest_scores)

An artefact file holds ``{"format": "rebuy-artefact", "version", "class", "object": <node>,
"arrays": {key: {dtype, shape, offset, order}}, "data_bytes"}``; the parts, concatenated in the
manifest's order, are ``data_bytes`` long, and every array lies inside them (64-byte aligned).
Nothing is pickled: :mod:`rebuy.artefacts` rebuilds the objects, instantiating only whitelisted
classes and no object dtype. A tampered file can at worst give wrong numbers or an error, and the
checksums (and the signature) catch that first.

The typed view: a trained model is a :class:`ModelBundle` (what ``rebuy.pipeline.fit`` returns and
``rebuy.pipeline.score`` takes); :func:`save_model_bundle` writes its models as the artefacts named
in :data:`MODEL_ARTEFACTS` (the :data:`OPTIONAL_ARTEFACTS` only when present) with its ``manifest`` entries,
and :func:`load_model_bundle` reads one back after the checks below (each model is built on first
access from the verified bytes, so loading imports neither scikit-learn nor implicit).

Safety rules of :func:`load_bundle`: a bundle of the pickle era (``*.joblib`` artefacts) is refused
in one line, signed or not; then the manifest signature (when a key is configured), the package
major version, the presence of every listed file, the absence of unlisted files and the sha256 of
EVERY file are all checked before a single byte is decoded; the bytes decoded are exactly the
bytes that were hashed (each file is read once into private memory, hashed in parallel threads, and
the arrays are views of that memory), so a file swapped after the check is never read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import mmap
import os
import platform
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import rebuy
from rebuy import artefacts as codec
from rebuy.errors import ENVIRONMENT_ERRNOS, BundleError, at_path
from rebuy.outputs import atomic_write_bytes, fsync_dir, to_jsonable

if TYPE_CHECKING:
    import pandas as pd

    from rebuy.config import Config
    from rebuy.models import GammaGammaModel, PurchaseModel
    from rebuy.models.ranker import CLVRanker
    from rebuy.models.selection import ProbabilityCalibrator
    from rebuy.pipeline import TrainingValues
    from rebuy.recommend import Recommender
    from rebuy.segment import RFMClusterer, RFMScorer

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
LATEST_LINK = "latest"
LATEST_FILE = "LATEST"
LATEST_SCORES_FILE = "latest_scores.json"
ARTEFACT_SUFFIX = ".json"
"""Suffix of an artefact's meta file (``<name>.json``); its arrays are in :data:`DATA_SUFFIX` part files."""
DATA_SUFFIX = ".bin"
ARTEFACT_FORMAT = "rebuy-artefact"
"""``format`` of an artefact meta file; ``artefact_format`` of a manifest is :data:`MANIFEST_FORMAT`."""
MANIFEST_FORMAT = 1
PART_BYTES = 64 << 20
"""An artefact's array data is split into parts of at most this many bytes, hashed in parallel at load."""
_ALIGN = 64
KEY_ENV = "REBUY_BUNDLE_KEY"
"""Environment variable holding the HMAC key (any non-empty string; its UTF-8 bytes are the key)."""

TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 24 * 3600
"""prune_bundles removes leftover temporary bundle directories older than this (seconds)."""

RESERVED_MANIFEST_KEYS = ("run_id", "created_at", "rebuy_version", "versions", "artefacts", "artefact_format")
VERSIONED_PACKAGES = ("numpy", "pandas", "scikit-learn", "lifetimes", "implicit")

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------- helpers


def new_run_id(now: dt.datetime | None = None) -> str:
    """A sortable run id: UTC timestamp to the microsecond plus 6 random hex digits."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (LATEST_LINK, LATEST_FILE):
        raise BundleError(
            f"invalid {what} {name!r}: use letters, digits, '_', '-', '.', not starting with '.' or '-'"
        )
    return name


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        fh.flush()
        os.fsync(fh.fileno())


def _sha256_file(path: Path, keep: bool = False) -> tuple[str, int, bytes | None]:
    """sha256 hex digest and size of a file; with keep=True also the bytes that were hashed."""
    digest = hashlib.sha256()
    size = 0
    chunks: list[bytes] | None = [] if keep else None
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if chunks is not None:
                chunks.append(chunk)
    return digest.hexdigest(), size, (b"".join(chunks) if chunks is not None else None)


def _library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"rebuy": rebuy.__version__, "python": platform.python_version()}
    for pkg in VERSIONED_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


def _major(version: str) -> int:
    m = re.match(r"\s*(\d+)", str(version))
    if not m:
        raise ValueError(f"unparseable version {version!r}")
    return int(m.group(1))


def _jsonable(obj: Any, where: str = "manifest") -> Any:
    try:
        return to_jsonable(obj, where)
    except TypeError as e:
        raise BundleError(str(e).replace("as JSON", "to manifest.json")) from None


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _bundle_key() -> bytes | None:
    key = os.environ.get(KEY_ENV)
    return key.encode("utf-8") if key else None


def _sign(data: bytes, key: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------------------------- writing


def write_bundle(
    models_dir: str | os.PathLike[str],
    artefacts: Mapping[str, object],
    manifest: Mapping[str, Any],
    *,
    run_id: str | None = None,
) -> Path:
    """Write a bundle ``models_dir/<run-id>/`` and point ``models_dir/latest`` at it.

    ``artefacts`` maps a name (letters, digits, ``_ - .``) to an object :mod:`rebuy.artefacts` can
    encode (plain data, numpy / pandas / scipy.sparse values, the whitelisted classes); each is
    written as ``<name>.json`` (structure) plus its arrays, raw and uncompressed, in ``<name>.bin``
    (``<name>.<k>.bin`` when larger than :data:`PART_BYTES`). ``manifest`` is the caller's JSON-able
    content (config, data window, params, metrics...); ``artefact_format``, ``run_id``, ``created_at``
    (UTC ISO 8601), ``rebuy_version``, ``versions`` and ``artefacts`` ({name: {file, sha256, bytes,
    data: [{file, sha256, bytes}, ...]}}) are added and must not be supplied. Everything is
    written into ``models_dir/.tmp-<run-id>/``, fsync'd and renamed into place; only then are ``latest`` and ``LATEST`` repointed, so an exception or a crash at any
    point leaves the previous ``latest`` and no half bundle. When REBUY_BUNDLE_KEY is set the manifest
    is signed (``manifest.sig``). Returns the bundle directory.
    """
    models_dir = Path(models_dir)
    if not artefacts:
        raise BundleError(f"{models_dir}: no artefacts to write")
    clash = sorted(set(manifest) & set(RESERVED_MANIFEST_KEYS))
    if clash:
        raise BundleError(f"{models_dir}: manifest keys {clash} are reserved (write_bundle fills them in)")
    for name in artefacts:
        _check_name(name, "artefact name")
    run_id = _check_name(run_id, "run id") if run_id is not None else new_run_id()

    with _writes_into(models_dir):
        models_dir.mkdir(parents=True, exist_ok=True)
        final = models_dir / run_id
        if final.exists():
            raise BundleError(f"{final}: a bundle with this run id already exists")
        tmp = models_dir / f"{TEMP_PREFIX}{run_id}"
        tmp.mkdir()
        try:
            listed: dict[str, dict[str, Any]] = {}
            taken: set[str] = set()
            for name, obj in artefacts.items():
                listed[name] = _write_artefact(tmp, name, obj, taken)
                logger.debug("bundle %s: wrote %s", run_id, name)
            content = _jsonable(dict(manifest))
            content.update(
                artefact_format=MANIFEST_FORMAT,
                run_id=run_id,
                created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                rebuy_version=rebuy.__version__,
                versions=_library_versions(),
                artefacts=listed,
            )
            data = _manifest_bytes(content)
            atomic_write_bytes(tmp / MANIFEST_NAME, data)
            key = _bundle_key()
            if key is not None:
                atomic_write_bytes(tmp / SIGNATURE_NAME, (_sign(data, key) + "\n").encode("ascii"))
            fsync_dir(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(models_dir)
        _point_latest(models_dir, run_id)
    logger.info("wrote bundle %s (%d artefacts%s)", final, len(listed), ", signed" if key else "")
    return final


def _write_artefact(tmp: Path, name: str, obj: object, taken: set[str]) -> dict[str, Any]:
    """Write ``obj`` as ``<name>.json`` + its data parts into ``tmp``; its manifest entry."""
    try:
        meta, arrays = codec.encode(obj)
    except codec.ArtefactError as exc:
        raise BundleError(f"artefact {name!r}: {exc}") from None
    layout: dict[str, dict[str, Any]] = {}
    blobs: list[tuple[int, np.ndarray]] = []
    offset = 0
    for key, arr in arrays.items():
        fortran = arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous
        data = arr.T if fortran else np.ascontiguousarray(arr)
        offset = -(-offset // _ALIGN) * _ALIGN
        layout[key] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset, "order": "F" if fortran else "C"}
        blobs.append((offset, data.reshape(-1).view(np.uint8) if data.nbytes else np.zeros(0, np.uint8)))
        offset += data.nbytes
    total = offset
    n_parts = -(-total // PART_BYTES) if total else 0
    part_size = -(-total // n_parts) if n_parts else 0
    names = [f"{name}{DATA_SUFFIX}"] if n_parts == 1 else [f"{name}.{k}{DATA_SUFFIX}" for k in range(n_parts)]
    content = {"format": ARTEFACT_FORMAT, **meta, "arrays": layout, "data_bytes": total}
    text = (json.dumps(content, allow_nan=False, separators=(",", ":")) + "\n").encode("utf-8")
    files = [f"{name}{ARTEFACT_SUFFIX}", *names]
    clash = sorted(taken.intersection(files))
    if clash:
        raise BundleError(f"artefact {name!r}: file {clash[0]} is also another artefact's; rename one")
    taken.update(files)
    for file in files:
        _check_name(file, f"file name of artefact {name!r} (shorten the name)")
    path = tmp / files[0]
    path.write_bytes(text)
    _fsync_file(path)
    entry: dict[str, Any] = {"file": path.name, "sha256": hashlib.sha256(text).hexdigest(), "bytes": len(text)}
    if n_parts:
        entry["data"] = _write_parts(tmp, names, part_size, total, blobs)
    return entry


def _write_parts(tmp: Path, names: list[str], part_size: int, total: int,
                 blobs: list[tuple[int, np.ndarray]]) -> list[dict[str, Any]]:
    """Write the byte stream of ``blobs`` (each at its offset, zero padding between) into the part
    files ``names`` of ``part_size`` bytes (the last holds the rest); their manifest entries."""
    out: list[dict[str, Any]] = []
    pos = 0  # position in the whole stream
    pad = bytes(_ALIGN)
    blob_iter = iter(blobs)
    pending: memoryview | None = None
    next_offset, next_blob = next(blob_iter, (total, None))
    for k, fname in enumerate(names):
        end = total if k == len(names) - 1 else (k + 1) * part_size
        digest = hashlib.sha256()
        path = tmp / fname
        with open(path, "wb") as fh:
            while pos < end:
                if pending is None and pos < next_offset:
                    chunk: memoryview | bytes = pad[: min(next_offset, end) - pos]
                elif pending is None:
                    pending = memoryview(next_blob)  # type: ignore[arg-type]
                    next_offset, next_blob = next(blob_iter, (total, None))
                    continue
                else:
                    chunk = pending[: end - pos]
                    pending = pending[len(chunk):] if len(chunk) < len(pending) else None
                if len(chunk):
                    fh.write(chunk)
                    digest.update(chunk)
                    pos += len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        out.append({"file": fname, "sha256": digest.hexdigest(), "bytes": end - (k * part_size)})
    return out


@contextmanager
def _writes_into(models_dir: Path) -> Iterator[None]:
    """OSErrors of the user's environment while writing a bundle (read-only or full disk, file-size
    limit, the models directory being a file) name ``models_dir``, not a temporary file inside it."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        raise at_path(exc, models_dir) from exc


def _point_latest(models_dir: Path, run_id: str) -> None:
    """Repoint ``latest`` (symlink, atomic os.replace) and ``LATEST`` (text file, atomic)."""
    link = models_dir / LATEST_LINK
    tmp_link = models_dir / f".{LATEST_LINK}.tmp-{secrets.token_hex(4)}"
    try:
        os.symlink(run_id, tmp_link, target_is_directory=True)
        os.replace(tmp_link, link)
    except (OSError, NotImplementedError) as exc:
        try:
            tmp_link.unlink(missing_ok=True)
        except OSError:
            pass
        if link.is_symlink():  # a stale link must not outvote LATEST
            link.unlink()
        logger.warning("%s: cannot repoint symlink (%s); using %s only", link, exc, LATEST_FILE)
    atomic_write_bytes(models_dir / LATEST_FILE, (run_id + "\n").encode("utf-8"))
    fsync_dir(models_dir)


# --------------------------------------------------------------------------------------------- finding


def latest_run_id(models_dir: str | os.PathLike[str]) -> str | None:
    """The run id ``latest`` points at (symlink first, else the LATEST file); None when there is none."""
    models_dir = Path(models_dir)
    link = models_dir / LATEST_LINK
    if link.is_symlink():
        target = Path(os.readlink(link))
        if (models_dir / target).is_dir():
            return target.name
    file = models_dir / LATEST_FILE
    if file.is_file():
        run_id = file.read_text(encoding="utf-8").strip()
        if run_id:
            _check_name(run_id, f"run id in {file}")
            return run_id
    return None


def resolve_bundle(path: str | os.PathLike[str]) -> Path:
    """Turn a bundle directory, ``<models_dir>/latest`` or a models directory into a bundle directory."""
    path = Path(path)
    for where in (path, path.parent) if path.name == LATEST_LINK else (path,):
        if where.exists() and not where.is_dir():
            raise BundleError(f"{where}: is a file, not a models directory: give the directory rebuy train wrote")
    if (path / MANIFEST_NAME).is_file() and not path.is_symlink():
        return path
    if path.name == LATEST_LINK:
        models_dir = path.parent
    elif path.is_dir() and ((path / LATEST_FILE).is_file() or (path / LATEST_LINK).is_symlink()):
        models_dir = path
    elif path.is_symlink() and (path.resolve() / MANIFEST_NAME).is_file():
        return path.resolve()
    else:
        raise BundleError(f"{path}: not a bundle directory (no {MANIFEST_NAME}) and no latest bundle there")
    run_id = latest_run_id(models_dir)
    if run_id is None:
        raise BundleError(f"{models_dir}: no latest bundle ({LATEST_LINK} symlink and {LATEST_FILE} missing)")
    bundle = models_dir / run_id
    if not bundle.is_dir():
        raise BundleError(f"{models_dir}: latest points at {run_id}, which does not exist")
    return bundle


def list_bundles(models_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete bundle directories (having a manifest.json), oldest first (run ids sort by time)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(
        p
        for p in models_dir.iterdir()
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()
    )


def prune_bundles(models_dir: str | os.PathLike[str], keep: int = 5) -> list[Path]:
    """Delete all but the newest ``keep`` bundles, never the one ``latest`` points at nor the one
    ``latest_scores.json`` names as ``model_run_id`` (the bundle behind the served scores).

    Also removes temporary directories left by a killed writer once they are older than
    STALE_TEMP_SECONDS. Returns the removed paths. A malformed ``latest_scores.json`` keeps every
    bundle (with a warning): which one is serving cannot be known.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    models_dir = Path(models_dir)
    protected = _protected_run_ids(models_dir)
    removed: list[Path] = []
    for path in list_bundles(models_dir)[:-keep] if protected is not None else []:
        if path.name in protected:
            continue
        shutil.rmtree(path)
        removed.append(path)
    if models_dir.is_dir():
        now = time.time()
        for path in models_dir.glob(f"{TEMP_PREFIX}*"):
            if path.is_dir() and now - path.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    if removed:
        logger.info("pruned %d bundle(s) from %s", len(removed), models_dir)
    return removed


def _protected_run_ids(models_dir: Path) -> set[str] | None:
    """The run ids pruning must keep (``latest`` and the scoring bundle); None when unknown."""
    try:
        record = read_latest_scores(models_dir)
    except BundleError as exc:
        logger.warning("%s; not pruning bundles", exc)
        return None
    ids = {latest_run_id(models_dir), (record or {}).get("model_run_id")}
    return {i for i in ids if i}


def bundle_leftovers(models_dir: str | os.PathLike[str]) -> list[Path]:
    """What killed writers left in ``models_dir``: ``.tmp-<run-id>`` bundle directories and the
    temporaries of ``latest``, ``LATEST`` and ``latest_scores.json`` (``.<name>.tmp-<hex>``).

    Only for a run holding :func:`rebuy.runlock.run_lock` on ``models_dir`` (no other writer is
    alive then); :func:`rebuy.runlock.remove_leftovers` removes them.
    """
    from rebuy.runlock import atomic_temp_files

    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    temp_dirs = sorted(p for p in models_dir.glob(f"{TEMP_PREFIX}*") if p.is_dir() and not p.is_symlink())
    return temp_dirs + atomic_temp_files(models_dir)


# --------------------------------------------------------------------------------------------- loading


def _read_verified_manifest(bundle: Path) -> dict[str, Any]:
    """Signature check (when a key is set), JSON parse and major-version check. Reads no artefact."""
    mpath = bundle / MANIFEST_NAME
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing manifest")
    data = mpath.read_bytes()
    _refuse_pickles(bundle, data)
    key = _bundle_key()
    if key is None and (bundle / SIGNATURE_NAME).exists():
        # a signed bundle loaded without the key would skip the only check a rewritten manifest cannot pass
        raise BundleError(f"{bundle / SIGNATURE_NAME}: the bundle is signed but {KEY_ENV} is not set: set it to "
                          "load this bundle")
    if key is not None:
        spath = bundle / SIGNATURE_NAME
        if not spath.is_file():
            raise BundleError(f"{spath}: bad signature: bundle is unsigned but {KEY_ENV} is set")
        given = spath.read_text(encoding="ascii", errors="replace").strip()
        if not hmac.compare_digest(given, _sign(data, key)):
            raise BundleError(
                f"{mpath}: bad signature (HMAC-SHA256 with {KEY_ENV} does not match {SIGNATURE_NAME})"
            )
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{mpath}: malformed manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artefacts"), dict):
        raise BundleError(f"{mpath}: malformed manifest (no 'artefacts' table)")
    _check_artefact_table(mpath, manifest["artefacts"])
    if manifest.get("artefact_format") != MANIFEST_FORMAT:
        raise BundleError(f"{mpath}: malformed manifest: artefact_format {manifest.get('artefact_format')!r}, "
                          f"this rebuy reads {MANIFEST_FORMAT}; retrain it with `rebuy train`")
    written = manifest.get("rebuy_version")
    try:
        written_major, this_major = _major(written), _major(rebuy.__version__)
    except ValueError:
        raise BundleError(f"{mpath}: malformed manifest (rebuy_version {written!r})") from None
    if written_major != this_major:
        raise BundleError(f"{mpath}: written by rebuy {written_major}.x, this is {this_major}.x")
    return manifest


def _refuse_pickles(bundle: Path, data: bytes) -> None:
    """A bundle of the pickle era (``*.joblib`` artefacts, no ``artefact_format``): one-line BundleError,
    signed or not (nothing of it is trusted or read beyond the manifest's JSON)."""
    try:
        manifest = json.loads(data)
    except ValueError:
        return
    if not isinstance(manifest, dict) or "artefact_format" in manifest:
        return
    listed = manifest.get("artefacts")
    files = [e.get("file") for e in listed.values() if isinstance(e, dict)] if isinstance(listed, dict) else []
    if any(isinstance(f, str) and f.endswith(".joblib") for f in files):
        version = str(manifest.get("rebuy_version", "?"))[:40]
        raise BundleError(f"{bundle}: bundle written by rebuy {version} stores pickles; retrain it with `rebuy train`")


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _check_artefact_table(mpath: Path, listed: dict[str, Any]) -> None:
    """Every ``artefacts`` entry is ``{file, sha256[, bytes]}`` with a plain, unshared file name:
    BundleError naming the manifest and the key otherwise (before any file is read)."""
    owners: dict[str, str] = {}

    def check_file(entry: Any, key: str) -> None:
        if not isinstance(entry, dict):
            raise BundleError(f"{mpath}: malformed manifest: {key}: not a {{file, sha256, bytes}} entry; "
                              "retrain to write a valid bundle")
        file, sha, size = entry.get("file"), entry.get("sha256"), entry.get("bytes", 0)
        if not isinstance(file, str) or not _NAME_RE.match(file):
            raise BundleError(f"{mpath}: malformed manifest: {key}.file: {file!r} is not a plain file name")
        if not isinstance(sha, str) or not _SHA256_RE.match(sha):
            raise BundleError(f"{mpath}: malformed manifest: {key}.sha256: not a sha256 hex digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BundleError(f"{mpath}: malformed manifest: {key}.bytes: {size!r} is not a byte count")
        if file in owners:
            raise BundleError(f"{mpath}: malformed manifest: {key}.file: {file!r} is also the file of "
                              f"{owners[file]}; retrain to write a valid bundle")
        owners[file] = key

    for name, entry in listed.items():
        key = f"artefacts.{name}"
        if not _NAME_RE.match(name) or not isinstance(entry, dict):
            raise BundleError(f"{mpath}: malformed manifest: {key}: not an artefact name with a "
                              "{file, sha256, bytes} entry; retrain to write a valid bundle")
        check_file(entry, key)
        parts = entry.get("data", [])
        if not isinstance(parts, list):
            raise BundleError(f"{mpath}: malformed manifest: {key}.data: not a list of data files")
        for k, part in enumerate(parts):
            check_file(part, f"{key}.data[{k}]")
            if "bytes" not in part:
                raise BundleError(f"{mpath}: malformed manifest: {key}.data[{k}].bytes: missing")


def read_manifest(path: str | os.PathLike[str], *, check: bool = True) -> dict[str, Any]:
    """The manifest of a bundle (path as for :func:`load_bundle`). Reads no artefact.

    With ``check=True`` (default) the signature (when REBUY_BUNDLE_KEY is set) and the major version
    are checked as :func:`load_bundle` does; ``check=False`` only parses the JSON (for listing old or
    foreign bundles). Artefact checksums are checked by :func:`verify_bundle` / :func:`load_bundle`.
    """
    bundle = resolve_bundle(path)
    if check:
        return _read_verified_manifest(bundle)
    mpath = bundle / MANIFEST_NAME
    try:
        manifest = json.loads(mpath.read_bytes())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{mpath}: malformed manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: malformed manifest (not a JSON object)")
    return manifest


def verify_bundle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Run every check :func:`load_bundle` runs, without decoding anything; returns the manifest."""
    bundle = resolve_bundle(path)
    manifest = _read_verified_manifest(bundle)
    _verify_files(bundle, manifest, keep=())
    return manifest


@dataclass
class _Verified:
    """An artefact's verified bytes: its meta file and its data parts read into one buffer."""

    meta: bytes
    data: np.ndarray  # uint8, the concatenated parts (views of it become the artefact's arrays)


def _buffer(size: int) -> np.ndarray:
    """A writable uint8 buffer of ``size`` bytes. Large ones are private anonymous memory in small
    pages: numpy asks for transparent huge pages, whose synchronous compaction made allocating 650 MB
    take 0.1-1.0 s here, against 0.2 s of page faults, spread over the reading threads."""
    if size < (4 << 20) or not hasattr(mmap, "MAP_PRIVATE"):
        return np.empty(size, dtype=np.uint8)
    return np.frombuffer(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), dtype=np.uint8)


def _hash_workers(n_jobs: int) -> int:
    return max(1, min(n_jobs, os.cpu_count() or 1, 8))


def _read_into(path: Path, out: memoryview) -> tuple[str, int]:
    """Read ``path`` into ``out`` (its expected size) and hash what was read: (sha256, file size)."""
    with open(path, "rb") as fh:
        got = 0
        while got < len(out):
            n = fh.readinto(out[got:])
            if not n:
                break
            got += n
        digest = hashlib.sha256(out[:got])  # one call on a large buffer: hashlib releases the GIL
        extra = fh.read(_CHUNK)
        while extra:  # longer than the manifest says: hash the rest too (it fails the check)
            digest.update(extra)
            got += len(extra)
            extra = fh.read(_CHUNK)
    return digest.hexdigest(), got


def _verify_files(bundle: Path, manifest: dict[str, Any], keep: Iterable[str]) -> dict[str, _Verified]:
    """Check every file of the bundle against the manifest (listed, present, regular, sha256, size);
    return the hashed bytes of the ``keep`` artefacts. Files are hashed in parallel threads; the
    bytes returned are the bytes hashed."""
    keep = set(keep)
    listed: dict[str, dict[str, Any]] = manifest["artefacts"]
    expected: dict[str, tuple[str, dict[str, Any], int | None]] = {}  # file -> (artefact, entry, part)
    for name, entry in listed.items():  # structure checked by _check_artefact_table
        expected[entry["file"]] = (name, entry, None)
        for k, part in enumerate(entry.get("data", [])):
            expected[part["file"]] = (name, part, k)
    present = {
        p.name
        for p in bundle.iterdir()
        if not p.name.startswith(".") and p.name not in (MANIFEST_NAME, SIGNATURE_NAME)
    }
    for file in sorted(set(expected) - present):
        raise BundleError(f"{bundle / file}: missing artefact (listed in {MANIFEST_NAME})")
    for file in sorted(present - set(expected)):
        raise BundleError(f"{bundle / file}: unlisted artefact file (not in {MANIFEST_NAME})")
    for file in sorted(expected):
        path = bundle / file
        if not path.is_file() or path.is_symlink():
            raise BundleError(f"{path}: missing artefact (not a regular file)")

    buffers: dict[str, np.ndarray] = {}
    starts: dict[str, int] = {}
    for name in keep:
        parts = listed[name].get("data", [])
        buffers[name] = _buffer(sum(p["bytes"] for p in parts))
        at = 0
        for part in parts:
            starts[part["file"]] = at
            at += part["bytes"]

    def check(file: str) -> tuple[str, int, bytes | None]:
        name, entry, part = expected[file]
        path = bundle / file
        if part is not None and name in buffers:
            at = starts[file]
            sha, size = _read_into(path, memoryview(buffers[name])[at : at + entry["bytes"]])
            return sha, size, None
        return _sha256_file(path, keep=name in keep)

    files = sorted(expected, key=lambda f: -int(expected[f][1].get("bytes", 0)))  # biggest first
    workers = _hash_workers(len(files))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rebuy-verify") as pool:
            results = dict(zip(files, pool.map(check, files), strict=True))
    else:
        results = {f: check(f) for f in files}

    verified: dict[str, _Verified] = {}
    for file in sorted(expected):
        name, entry, part = expected[file]
        sha, size, data = results[file]
        path = bundle / file
        if not hmac.compare_digest(sha, entry["sha256"]):
            raise BundleError(
                f"{path}: checksum mismatch (sha256 {sha[:12]}..., manifest says {entry['sha256'][:12]}...)"
            )
        if "bytes" in entry and size != entry["bytes"]:
            raise BundleError(f"{path}: size mismatch ({size} bytes, manifest says {entry['bytes']})")
        if part is None and data is not None:
            verified[name] = _Verified(data, buffers[name])
    return verified


def _prepare(bundle: Path, name: str, entry: dict[str, Any], verified: _Verified) -> Callable[[], Any]:
    """Parse and check an artefact's verified meta and build its arrays (views of the verified
    bytes); returns the function that builds the object. One-line BundleError naming the file."""
    path = bundle / entry["file"]
    try:
        meta = json.loads(verified.meta)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{path}: malformed artefact ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != ARTEFACT_FORMAT:
        raise BundleError(f"{path}: not a rebuy artefact (no format {ARTEFACT_FORMAT!r}); retrain the bundle")
    try:
        if meta.get("version") != codec.VERSION:
            raise codec.ArtefactError(f"artefact format version {str(meta.get('version'))[:20]!r}, "
                                      f"this rebuy reads {codec.VERSION}")
        codec.check_classes(meta.get("object"))
        arrays = _array_views(meta, verified.data)
    except codec.ArtefactError as exc:
        raise BundleError(f"{path}: {exc}") from None

    def build() -> Any:
        try:
            return codec.decode(meta, arrays)
        except codec.ArtefactError as exc:
            raise BundleError(f"{path}: {exc}") from None

    return build


def _array_views(meta: dict[str, Any], data: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of ``meta["arrays"]`` as views of ``data`` (no copy); ArtefactError when a
    dtype, shape or range is malformed or outside the data."""
    layout = meta.get("arrays")
    if not isinstance(layout, dict) or meta.get("data_bytes") != len(data):
        raise codec.ArtefactError(f"malformed artefact: data_bytes {str(meta.get('data_bytes'))[:20]} but "
                                  f"{len(data)} bytes of data")
    out: dict[str, np.ndarray] = {}
    for key, spec in layout.items():
        if not isinstance(spec, dict):
            raise codec.ArtefactError(f"malformed array entry {str(key)[:40]!r}")
        dtype = codec.array_dtype(spec.get("dtype"))
        shape, offset, order = spec.get("shape"), spec.get("offset"), spec.get("order", "C")
        if (not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape)
                or type(offset) is not int or offset < 0 or order not in ("C", "F")):
            raise codec.ArtefactError(f"malformed array entry {str(key)[:40]!r}")
        count = 1
        for n in shape:
            count *= n
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(data):
            raise codec.ArtefactError(f"array {str(key)[:40]!r} lies outside the data ({offset}+{nbytes} bytes)")
        if nbytes == 0:
            arr = np.zeros(shape, dtype=dtype, order=order)
        else:
            flat = data[offset : offset + nbytes].view(dtype)
            arr = flat.reshape(shape[::-1]).T if order == "F" else flat.reshape(shape)
        out[key] = arr
    return out


def _verified_artefacts(
    path_or_latest: str | os.PathLike[str], names: Iterable[str] | None
) -> tuple[Path, dict[str, Callable[[], Any]], dict[str, Any]]:
    """Resolve, verify every file and prepare the ``names`` artefacts (default: all)."""
    bundle = resolve_bundle(path_or_latest)
    manifest = _read_verified_manifest(bundle)
    wanted = list(manifest["artefacts"]) if names is None else list(names)
    unknown = sorted(set(wanted) - set(manifest["artefacts"]))
    if unknown:
        raise BundleError(
            f"{bundle / MANIFEST_NAME}: no artefact named {unknown} (has {sorted(manifest['artefacts'])})"
        )
    verified = _verify_files(bundle, manifest, keep=wanted)
    builders = {name: _prepare(bundle, name, manifest["artefacts"][name], verified[name]) for name in wanted}
    return bundle, builders, manifest


def load_bundle(
    path_or_latest: str | os.PathLike[str], *, names: Iterable[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify a bundle completely, then decode its artefacts. Returns ``(artefacts, manifest)``.

    ``path_or_latest``: a bundle directory, ``<models_dir>/latest`` (symlink or, failing that, the
    LATEST file beside it) or a models directory. ``names`` limits which artefacts are decoded;
    every file is verified regardless. Raises :class:`BundleError` (one line naming the file:
    "stores pickles", "bad signature", "written by rebuy X.x, this is Y.x", "missing artefact",
    "unlisted artefact file", "checksum mismatch", "unknown class") before anything is decoded.
    """
    bundle, builders, manifest = _verified_artefacts(path_or_latest, names)
    artefacts = {name: build() for name, build in builders.items()}
    logger.info("loaded bundle %s (%d artefacts)", bundle, len(artefacts))
    return artefacts, manifest


# --------------------------------------------------------------------------------------------- scores pointer


def record_latest_scores(
    models_dir: str | os.PathLike[str],
    scores_path: str | os.PathLike[str],
    db_path: str | os.PathLike[str] | None = None,
    table: str | None = None,
    run_id: str | None = None,
    experiment: dict[str, Any] | None = None,
    as_of: str | dt.date | None = None,
) -> Path:
    """Record (atomically) where the latest scores table was written, in ``models_dir/latest_scores.json``.

    Paths are stored absolute. ``db_path`` is a DuckDB file or a ``postgresql://`` URL; a URL is
    stored as ``db_url`` with any password stripped (:func:`rebuy.postgres.safe_url`: readers get
    it from PGPASSWORD, ~/.pgpass or a libpq service). ``table`` defaults to ``customer_scores``
    when a database is given. ``run_id`` is the bundle that scored (``model_run_id``; default: the
    current latest bundle; null when there is none). ``experiment`` (the night's control-group key
    and shares) lets a request scored alone land in the group the batch would give it; ``as_of``
    (the night's as-of day, ``YYYY-MM-DD``) is the default as-of of ``Scorer.score_customer``.
    """
    from rebuy.postgres import is_postgres_url, safe_url

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    if db_path is not None and table is None:
        table = "customer_scores"
    url = safe_url(str(db_path)) if is_postgres_url(db_path) else None
    record = {
        "scores_path": str(Path(scores_path).resolve()),
        "db_path": str(Path(db_path).resolve()) if db_path is not None and url is None else None,
        "db_url": url,
        "table": table,
        "model_run_id": run_id if run_id is not None else latest_run_id(models_dir),
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "as_of": str(as_of)[:10] if as_of is not None else None,
        "experiment": experiment,
    }
    out = models_dir / LATEST_SCORES_FILE
    atomic_write_bytes(out, _manifest_bytes(record))
    return out


def read_latest_scores(models_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record written by :func:`record_latest_scores`, with Path values; None when none was written.

    Accepts the models directory or a path inside it (``models/latest``, ``models/<run-id>``).
    ``db_url`` (PostgreSQL, no password) and ``as_of`` are None in records of older versions. A
    record naming a nights directory (``rebuy score``: :mod:`rebuy.publish`) is completed by the
    live night's own record (:func:`rebuy.publish.follow_night`); None before its first publish.
    """
    path = Path(models_dir)
    candidates = [path / LATEST_SCORES_FILE, path.parent / LATEST_SCORES_FILE]
    file = next((c for c in candidates if c.is_file()), None)
    if file is None:
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
        record["scores_path"] = Path(record["scores_path"])
        record["db_path"] = Path(record["db_path"]) if record.get("db_path") else None
        record.setdefault("db_url", None)
        record.setdefault("as_of", None)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{file}: malformed scores record ({exc})") from None
    if record.get("nights_dir"):  # written by rebuy.publish: the live night completes it
        from rebuy.publish import follow_night

        return follow_night(record)
    return record


# --------------------------------------------------------------------------------------------- typed bundle

MODEL_ARTEFACTS = ("purchase_model", "spend_model", "rfm_scorer", "clusterer", "cluster_profiles", "recommender",
                   "purchase_calibrator", "clv_ranker")
"""The :class:`ModelBundle` fields stored as artefacts, each in ``<field>.json`` + ``<field>.bin``."""

OPTIONAL_ARTEFACTS = ("recommender", "purchase_calibrator", "clv_ranker")
"""Artefacts a bundle may lack: no products, no holdout for the calibration, ``clv.method: model``."""


_BUILD_LOCK = threading.RLock()


class _Deferred:
    """A verified, checked artefact that is built on first access (then kept)."""

    __slots__ = ("_build", "_value")

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build: Callable[[], Any] | None = build
        self._value: Any = None

    def get(self) -> Any:
        with _BUILD_LOCK:
            if self._build is not None:
                self._value, self._build = self._build(), None
            return self._value


class _ArtefactField:
    """A :class:`ModelBundle` artefact field whose value may be :class:`_Deferred` (built on first
    read). As a dataclass default it is "no default" (required) or None (optional)."""

    def __init__(self, optional: bool = False) -> None:
        self.optional = optional

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            if self.optional:
                return None
            raise AttributeError(self.name)  # dataclass: a field without a default
        try:
            value = obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None
        if type(value) is _Deferred:
            value = obj.__dict__[self.name] = value.get()
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value


@dataclass
class ModelBundle:
    """Everything one training run learned, typed: the input of scoring.

    ``config`` holds the settings the models were trained with (its ``as_of`` cleared: scoring dates
    come from the data scored). ``manifest`` holds the run's JSON record: the training's own entries
    (``params``, ``model_diagnostics``, ``clustering``, ``recommender``, ``offers.vip_min_clv``, ...)
    and, once saved or loaded, ``run_id``, versions and checksums. ``bundle_dir`` is where it lives
    on disk (None until saved).
    """

    config: Config
    purchase_model: PurchaseModel = _ArtefactField()  # type: ignore[assignment]
    spend_model: GammaGammaModel = _ArtefactField()  # type: ignore[assignment]
    rfm_scorer: RFMScorer = _ArtefactField()  # type: ignore[assignment]
    clusterer: RFMClusterer = _ArtefactField()  # type: ignore[assignment]
    cluster_profiles: pd.DataFrame = _ArtefactField()  # type: ignore[assignment]
    recommender: Recommender | None = _ArtefactField(optional=True)  # type: ignore[assignment]
    purchase_calibrator: ProbabilityCalibrator | None = _ArtefactField(optional=True)  # type: ignore[assignment]
    clv_ranker: CLVRanker | None = _ArtefactField(optional=True)  # type: ignore[assignment]
    manifest: dict[str, Any] = field(default_factory=dict)
    bundle_dir: Path | None = None
    training_values: TrainingValues | None = field(default=None, repr=False, compare=False)
    """The training customers' value scores, in memory only (never saved, dropped by ``with_config``
    and once used): ``rebuy run`` scores the night it trained on from them instead of computing them twice."""

    @property
    def run_id(self) -> str:
        """The training run's id ("unsaved" before :func:`save_model_bundle`)."""
        return str(self.manifest.get("run_id", "unsaved"))

    @property
    def vip_min_clv(self) -> float | None:
        """12-month CLV (currency) a customer needs for VIP status, fixed at training time."""
        return self.manifest.get("offers", {}).get("vip_min_clv")

    def with_config(self, config: Config) -> ModelBundle:
        """The same models with another config (recorded in the manifest too); models not built yet
        stay deferred (and are built once, for both bundles)."""
        manifest = {**self.manifest, "config": config.model_dump(mode="json")}
        deferred = {n: self.__dict__[n] for n in MODEL_ARTEFACTS if n in self.__dict__}
        return replace(self, config=config, manifest=manifest, training_values=None, **deferred)

    def __getstate__(self) -> dict[str, Any]:
        return {k: (getattr(self, k) if k in MODEL_ARTEFACTS else v) for k, v in self.__dict__.items()
                if k != "training_values"}

    def artefacts(self) -> dict[str, Any]:
        """The stored models by artefact name (the :data:`OPTIONAL_ARTEFACTS` only when present)."""
        out = {name: getattr(self, name) for name in MODEL_ARTEFACTS}
        return {k: v for k, v in out.items() if v is not None}


def save_model_bundle(models_dir: str | os.PathLike[str], bundle: ModelBundle, *, run_id: str | None = None) -> ModelBundle:
    """Write ``bundle`` with :func:`write_bundle` (atomically; ``latest`` moves last) and return it
    with its saved manifest and directory."""
    manifest = {k: v for k, v in bundle.manifest.items() if k not in RESERVED_MANIFEST_KEYS}
    manifest["config"] = bundle.config.model_dump(mode="json")
    bundle_dir = write_bundle(models_dir, bundle.artefacts(), manifest, run_id=run_id)
    return replace(bundle, manifest=read_manifest(bundle_dir), bundle_dir=bundle_dir)


def load_model_bundle(path: str | os.PathLike[str]) -> ModelBundle:
    """Verify (see :func:`load_bundle`) and load a bundle directory, ``<models_dir>/latest`` or a
    models directory as a :class:`ModelBundle`.

    Every file is verified and every artefact's meta parsed and checked (format, whitelisted class
    names, array ranges) here; each model object is built from those verified bytes on first
    access, so a scorer that never touches the clusterer does not import scikit-learn."""
    bundle_dir, builders, manifest = _verified_artefacts(path, None)
    missing = [n for n in MODEL_ARTEFACTS if n not in OPTIONAL_ARTEFACTS and n not in builders]
    if missing:
        raise BundleError(f"{bundle_dir / MANIFEST_NAME}: not a rebuy model bundle (no artefact {missing})")
    config = _manifest_config(bundle_dir / MANIFEST_NAME, manifest)
    logger.info("loaded bundle %s (%d artefacts)", bundle_dir, len(builders))
    return ModelBundle(config=config, manifest=manifest, bundle_dir=bundle_dir,
                       **{n: _Deferred(builders[n]) if n in builders else None for n in MODEL_ARTEFACTS})


def _manifest_config(mpath: Path, manifest: dict[str, Any]) -> Config:
    """The bundle's training config (``as_of`` cleared); one-line BundleError naming the manifest and
    the ``config.<key>`` that does not validate."""
    from pydantic import ValidationError

    from rebuy.config import Config, format_validation_error

    raw = manifest.get("config")
    if not isinstance(raw, dict):
        raise BundleError(f"{mpath}: malformed manifest: config: missing or not a mapping; retrain the bundle")
    try:
        return Config.model_validate({**raw, "as_of": None})
    except ValidationError as exc:
        raise BundleError(f"{format_validation_error(exc, str(mpath), prefix='config.')}; "
                          "retrain the bundle or fix that key") from None
