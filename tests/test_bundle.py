"""Model bundles: round trip, verification before decoding, signing, atomic swap of ``latest``."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pickle

import joblib
import numpy as np
import pytest
from sklearn.cluster import KMeans

import rebuy
from rebuy import bundle as B
from rebuy.bundle import BundleError, load_bundle, write_bundle


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv(B.KEY_ENV, raising=False)


@pytest.fixture
def artefacts():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (30, 2)), rng.normal(6, 1, (30, 2))])
    km = KMeans(n_clusters=2, n_init=2, random_state=0).fit(X)
    return {"kmeans": km, "params": {"r": 0.24, "alpha": 4.41}, "factors": rng.normal(size=(5, 3))}


def _forbid_unpickling(monkeypatch):
    """Any pickle / joblib read fails the test (bundles are never unpickled, verified or not)."""

    def fail(*a, **k):
        raise AssertionError("a bundle file was unpickled")

    monkeypatch.setattr(joblib, "load", fail)
    monkeypatch.setattr(pickle, "load", fail)
    monkeypatch.setattr(pickle, "loads", fail)
    real_np_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, allow_pickle=False, **k: (
        fail() if allow_pickle else real_np_load(*a, allow_pickle=False, **k)))


def _temp_dirs(models):
    return [p.name for p in models.iterdir() if p.name.startswith(".")]


def test_round_trip_and_manifest(tmp_path, artefacts, monkeypatch):
    models = tmp_path / "models"
    manifest_in = {"as_of": dt.date(2011, 12, 9), "counts": {"rows": np.int64(10)}, "metric": float("nan")}
    path = write_bundle(models, artefacts, manifest_in)
    assert path.parent == models and path.name == os.readlink(models / "latest")
    assert (models / "LATEST").read_text().strip() == path.name
    assert sorted(p.name for p in path.iterdir()) == [
        "factors.bin",
        "factors.json",
        "kmeans.bin",
        "kmeans.json",
        "manifest.json",
        "params.json",  # no arrays: no data file
    ]
    assert _temp_dirs(models) == []

    _forbid_unpickling(monkeypatch)
    loaded, manifest = load_bundle(models / "latest")
    X = np.array([[0.0, 0.0], [6.0, 6.0], [3.0, 2.5]])
    np.testing.assert_array_equal(loaded["kmeans"].predict(X), artefacts["kmeans"].predict(X))
    np.testing.assert_array_equal(loaded["factors"], artefacts["factors"])
    assert loaded["params"] == artefacts["params"]

    assert manifest["run_id"] == path.name
    assert (
        manifest["as_of"] == "2011-12-09"
        and manifest["counts"] == {"rows": 10}
        and manifest["metric"] is None
    )
    assert manifest["rebuy_version"] == rebuy.__version__
    assert manifest["artefact_format"] == B.MANIFEST_FORMAT
    assert set(manifest["versions"]) >= {"python", "numpy", "pandas", "scikit-learn", "lifetimes", "implicit"}
    created = dt.datetime.fromisoformat(manifest["created_at"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 3600
    for name, entry in manifest["artefacts"].items():
        for e in [entry, *entry.get("data", [])]:
            data = (path / e["file"]).read_bytes()
            assert e["sha256"] == hashlib.sha256(data).hexdigest() and e["bytes"] == len(data)
        assert entry["file"] == f"{name}.json"
        assert [e["file"] for e in entry.get("data", [])] == ([] if name == "params" else [f"{name}.bin"])
    assert B.read_manifest(path) == manifest
    # only the requested artefacts are decoded
    some, _ = load_bundle(path, names=["params"])
    assert list(some) == ["params"]
    with pytest.raises(BundleError, match="no artefact named"):
        load_bundle(path, names=["nope"])


def test_run_ids_sort_by_time_and_latest_moves(tmp_path):
    t0 = dt.datetime(2026, 1, 1, 23, 59, 59, 999999, tzinfo=dt.UTC)
    ids = [B.new_run_id(t0 + dt.timedelta(microseconds=k)) for k in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    models = tmp_path / "m"
    written = [write_bundle(models, {"a": k}, {"k": k}) for k in range(3)]
    assert B.list_bundles(models) == written
    assert B.latest_run_id(models) == written[-1].name
    assert load_bundle(models)[0]["a"] == 2  # the models directory itself resolves to latest


def test_tampered_artefact_refused_before_unpickling(tmp_path, artefacts, monkeypatch):
    path = write_bundle(tmp_path, artefacts, {})
    target = path / "kmeans.bin"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    _forbid_unpickling(monkeypatch)
    for kwargs in ({}, {"names": ["params"]}):  # every artefact is verified, not only the requested ones
        with pytest.raises(BundleError, match=r"kmeans\.bin: checksum mismatch"):
            load_bundle(tmp_path / "latest", **kwargs)
    with pytest.raises(BundleError, match="checksum mismatch"):
        B.verify_bundle(path)


def test_missing_and_unlisted_artefacts_refused(tmp_path, artefacts, monkeypatch):
    path = write_bundle(tmp_path, artefacts, {})
    _forbid_unpickling(monkeypatch)
    (path / "evil.bin").write_bytes(b"not listed")
    with pytest.raises(BundleError, match=r"evil\.bin: unlisted artefact"):
        load_bundle(path)
    (path / "evil.bin").unlink()
    (path / "factors.bin").unlink()
    with pytest.raises(BundleError, match=r"factors\.bin: missing artefact"):
        load_bundle(path)
    (path / "factors.json").unlink()
    with pytest.raises(BundleError, match=r"factors\.bin: missing artefact"):
        load_bundle(path)


def test_manifest_cannot_point_outside_bundle(tmp_path, monkeypatch):
    path = write_bundle(tmp_path, {"a": 1}, {})
    outside = tmp_path / "outside.json"
    outside.write_bytes((path / "a.json").read_bytes())
    m = json.loads((path / "manifest.json").read_text())
    m["artefacts"]["a"] = {
        "file": "../outside.json",
        "sha256": hashlib.sha256(outside.read_bytes()).hexdigest(),
    }
    (path / "manifest.json").write_text(json.dumps(m))
    _forbid_unpickling(monkeypatch)
    with pytest.raises(BundleError, match=r"malformed manifest: artefacts\.a\.file: '\.\./outside\.json'"):
        load_bundle(path)
    m["artefacts"]["a"] = {"file": "a.json", "sha256": "0" * 64, "data": [{"file": "../x.bin", "sha256": "0" * 64,
                                                                           "bytes": 1}]}
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"malformed manifest: artefacts\.a\.data\[0\]\.file: '\.\./x\.bin'"):
        load_bundle(path)


def test_two_entries_for_one_file_refused_naming_the_key(tmp_path, monkeypatch):
    """Artefact list edited to list one file twice (checksums copied): a KeyError deep in loading before."""
    path = write_bundle(tmp_path, {"a": 1, "b": 2}, {})
    m = json.loads((path / "manifest.json").read_text())
    m["artefacts"]["bgnbd"] = dict(m["artefacts"]["a"])
    (path / "manifest.json").write_text(json.dumps(m))
    _forbid_unpickling(monkeypatch)
    with pytest.raises(BundleError, match=r"manifest.json: malformed manifest: artefacts\.bgnbd\.file: "
                       r"'a\.json' is also the file of artefacts\.a"):
        load_bundle(path)


def test_major_version_mismatch_refused(tmp_path, monkeypatch):
    path = write_bundle(tmp_path, {"a": 1}, {})
    _forbid_unpickling(monkeypatch)
    this = int(rebuy.__version__.split(".")[0])
    m = json.loads((path / "manifest.json").read_text())
    m["rebuy_version"] = f"{this + 2}.0.1"
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(
        BundleError, match=rf"manifest\.json: written by rebuy {this + 2}\.x, this is {this}\.x"
    ):
        load_bundle(path)
    with pytest.raises(BundleError, match="written by rebuy"):
        B.read_manifest(path)
    assert B.read_manifest(path, check=False)["rebuy_version"] == f"{this + 2}.0.1"  # listing still works
    # and the other direction: an older bundle read by a newer package
    m["rebuy_version"] = rebuy.__version__
    (path / "manifest.json").write_text(json.dumps(m))
    monkeypatch.setattr(rebuy, "__version__", f"{this + 1}.0.0")
    with pytest.raises(BundleError, match=rf"written by rebuy {this}\.x, this is {this + 1}\.x"):
        load_bundle(path)


def test_hmac_signing(tmp_path, monkeypatch):
    monkeypatch.setenv(B.KEY_ENV, "s3cret")
    signed = write_bundle(tmp_path / "s", {"a": [1, 2]}, {})
    assert (signed / "manifest.sig").is_file()
    assert load_bundle(signed)[0]["a"] == [1, 2]

    unsigned_dir = tmp_path / "u"
    monkeypatch.delenv(B.KEY_ENV)
    unsigned = write_bundle(unsigned_dir, {"a": 1}, {})
    assert not (unsigned / "manifest.sig").exists()
    assert load_bundle(unsigned)[0]["a"] == 1  # no key at load time: checksums only

    _forbid_unpickling(monkeypatch)
    monkeypatch.setenv(B.KEY_ENV, "s3cret")
    with pytest.raises(BundleError, match="manifest.sig: bad signature: bundle is unsigned"):
        load_bundle(unsigned)
    monkeypatch.setenv(B.KEY_ENV, "other key")
    with pytest.raises(BundleError, match="bad signature"):
        load_bundle(signed)

    # an attacker who swaps an artefact AND updates its checksum passes the checksum check,
    # but not the signature check
    monkeypatch.setenv(B.KEY_ENV, "s3cret")
    (signed / "a.json").write_bytes((signed / "a.json").read_bytes().replace(b"[1,2]", b"[6,6]"))
    m = json.loads((signed / "manifest.json").read_text())
    data = (signed / "a.json").read_bytes()
    m["artefacts"]["a"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (signed / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"manifest\.json: bad signature"):
        load_bundle(signed)


@pytest.mark.parametrize("where", ["dump", "manifest", "rename"])
def test_crash_mid_write_keeps_previous_latest(tmp_path, monkeypatch, where):
    models = tmp_path / "models"
    good = write_bundle(models, {"a": 1, "b": 2}, {"run": "good"})
    if where == "dump":
        real_write, calls = B._write_artefact, []

        def write(tmp, name, obj, taken):
            calls.append(name)
            if len(calls) == 2:
                raise OSError("disk full")
            return real_write(tmp, name, obj, taken)

        monkeypatch.setattr(B, "_write_artefact", write)
    elif where == "manifest":
        monkeypatch.setattr(B, "_library_versions", lambda: (_ for _ in ()).throw(OSError("boom")))
    else:
        monkeypatch.setattr(os, "rename", lambda *a: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        write_bundle(models, {"a": 10, "b": 20}, {"run": "bad"})
    monkeypatch.undo()
    assert B.list_bundles(models) == [good]
    assert _temp_dirs(models) == []
    assert os.readlink(models / "latest") == good.name
    assert (models / "LATEST").read_text().strip() == good.name
    loaded, manifest = load_bundle(models / "latest")
    assert loaded == {"a": 1, "b": 2} and manifest["run"] == "good"


def test_latest_via_file_when_symlinks_unavailable(tmp_path, monkeypatch):
    models = tmp_path / "models"
    first = write_bundle(models, {"a": 1}, {})
    assert (models / "latest").is_symlink()

    def no_symlink(*a, **k):
        raise OSError("symlinks not supported")

    monkeypatch.setattr(os, "symlink", no_symlink)
    second = write_bundle(models, {"a": 2}, {})
    assert not (models / "latest").exists() and not (models / "latest").is_symlink()  # stale link removed
    assert (models / "LATEST").read_text().strip() == second.name != first.name
    assert load_bundle(models / "latest")[0]["a"] == 2
    assert B.resolve_bundle(models) == second
    assert _temp_dirs(models) == []


def test_resolve_errors(tmp_path):
    with pytest.raises(BundleError, match="no latest bundle"):
        load_bundle(tmp_path / "latest")
    with pytest.raises(BundleError, match="not a bundle directory"):
        load_bundle(tmp_path / "nothing-here")
    models = tmp_path / "m"
    models.mkdir()
    (models / "LATEST").write_text("20990101T000000000000Z-abcdef\n")
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(models / "latest")
    (tmp_path / "file").write_text("x")
    for given in (tmp_path / "file", tmp_path / "file" / "latest"):
        with pytest.raises(BundleError, match="file: is a file, not a models directory"):
            load_bundle(given)


def test_write_validation(tmp_path):
    with pytest.raises(BundleError, match="reserved"):
        write_bundle(tmp_path, {"a": 1}, {"run_id": "x"})
    with pytest.raises(BundleError, match="invalid artefact name"):
        write_bundle(tmp_path, {"../a": 1}, {})
    with pytest.raises(BundleError, match="no artefacts"):
        write_bundle(tmp_path, {}, {})
    with pytest.raises(BundleError, match=r"manifest\.obj: value of type object"):
        write_bundle(tmp_path, {"a": 1}, {"obj": object()})
    write_bundle(tmp_path, {"a": 1}, {}, run_id="run1")
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(tmp_path, {"a": 1}, {}, run_id="run1")
    assert [p.name for p in B.list_bundles(tmp_path)] == ["run1"] and _temp_dirs(tmp_path) == []


def test_prune_keeps_newest_and_latest(tmp_path):
    ids = [f"2026010{k}T000000000000Z-aaaaaa" for k in range(1, 6)]
    for run_id in ids:
        write_bundle(tmp_path, {"a": run_id}, {}, run_id=run_id)
    B._point_latest(tmp_path, ids[0])  # e.g. a rollback to the oldest bundle
    stale = tmp_path / ".tmp-crashed"
    stale.mkdir()
    os.utime(stale, (0, 0))
    removed = B.prune_bundles(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == sorted([ids[1], ids[2], ".tmp-crashed"])
    assert [p.name for p in B.list_bundles(tmp_path)] == [ids[0], ids[3], ids[4]]
    assert load_bundle(tmp_path / "latest")[0]["a"] == ids[0]
    with pytest.raises(ValueError, match="keep"):
        B.prune_bundles(tmp_path, keep=0)


def test_latest_scores_record(tmp_path):
    models = tmp_path / "models"
    assert B.read_latest_scores(models) is None
    run = write_bundle(models, {"a": 1}, {})
    out = B.record_latest_scores(models, tmp_path / "scores.parquet", db_path=tmp_path / "scores.duckdb")
    assert out == models / "latest_scores.json" and _temp_dirs(models) == []
    for where in (models, models / "latest", run):
        rec = B.read_latest_scores(where)
        assert rec["scores_path"] == (tmp_path / "scores.parquet").resolve()
        assert rec["db_path"] == (tmp_path / "scores.duckdb").resolve()
        assert rec["table"] == "customer_scores" and rec["model_run_id"] == run.name
    B.record_latest_scores(models, tmp_path / "s.csv")
    rec = B.read_latest_scores(models)
    assert rec["scores_path"].name == "s.csv" and rec["db_path"] is None and rec["table"] is None
    (models / "latest_scores.json").write_text("{not json")
    with pytest.raises(BundleError, match="malformed scores record"):
        B.read_latest_scores(models)


def test_a_signed_bundle_is_refused_when_no_key_is_set(tmp_path, monkeypatch):
    monkeypatch.setenv(B.KEY_ENV, "s3cret")
    signed = write_bundle(tmp_path / "s", {"a": [1, 2]}, {})
    monkeypatch.delenv(B.KEY_ENV)
    _forbid_unpickling(monkeypatch)
    with pytest.raises(BundleError, match=r"manifest.sig: the bundle is signed but REBUY_BUNDLE_KEY is not set"):
        load_bundle(signed)
