"""Bundles hold no pickles: the safe codec (rebuy.artefacts), the JSON + raw-array bundle files,
the tree walker that replaces the stored scikit-learn booster, and what tampering can (not) do."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rebuy import artefacts as A
from rebuy import bundle as B
from rebuy import pipeline
from rebuy.bundle import BundleError, load_model_bundle, save_model_bundle
from rebuy.config import Config
from rebuy.recommend import Recommender
from rebuy.scoring import Scorer
from rebuy.simulate import simulate


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv(B.KEY_ENV, raising=False)


@pytest.fixture(scope="module")
def shop() -> dict:
    """A small simulated shop, trained with every artefact present (ranker, recommender, calibrator)."""
    tx = simulate(n_customers=1_200, seed=7, n_products=80, events=False).transactions
    as_of = tx["timestamp"].max().normalize()
    cfg = Config.model_validate({"clv": {"method": "ranker"}, "recommend": {"factors": 8, "iterations": 3}})
    bundle = pipeline.fit(tx, cfg, as_of)
    return {"tx": tx, "as_of": as_of, "bundle": bundle}


@pytest.fixture(scope="module")
def saved_bundle(shop, tmp_path_factory) -> B.ModelBundle:
    """The in-memory bundle as saved (its manifest and run id set)."""
    return save_model_bundle(tmp_path_factory.mktemp("models"), shop["bundle"])


@pytest.fixture(scope="module")
def saved(saved_bundle) -> Path:
    return saved_bundle.bundle_dir


def _forbid_pickles(monkeypatch) -> None:
    def fail(*a, **k):
        raise AssertionError("a bundle file was unpickled")

    real_np_load = np.load
    monkeypatch.setattr(pickle, "load", fail)
    monkeypatch.setattr(pickle, "loads", fail)
    monkeypatch.setattr(pickle, "Unpickler", fail)
    monkeypatch.setattr(joblib, "load", fail)
    monkeypatch.setattr(np, "load", lambda *a, allow_pickle=False, **k: (
        fail() if allow_pickle else real_np_load(*a, allow_pickle=False, **k)))


def _build_all(bundle: B.ModelBundle) -> dict:
    return bundle.artefacts()  # reads every field: builds the deferred artefacts


def _rewrite_listed(bundle_dir: Path, file: str, data: bytes) -> None:
    """Replace a bundle file and rewrite its sha256 and size in the manifest (an attacker's edit)."""
    (bundle_dir / file).write_bytes(data)
    mpath = bundle_dir / B.MANIFEST_NAME
    m = json.loads(mpath.read_text())
    for entry in m["artefacts"].values():
        for e in [entry, *entry.get("data", [])]:
            if e["file"] == file:
                e.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    mpath.write_text(json.dumps(m))


# ------------------------------------------------------------------------------------ round trips


def test_every_artefact_is_stored(shop):
    b = shop["bundle"]
    assert set(b.artefacts()) == set(B.MODEL_ARTEFACTS)
    assert b.clv_ranker.model_ is not None and type(b.clv_ranker.model_).__name__ == "BoostedTrees"


def test_scores_of_a_saved_and_loaded_bundle_equal_the_in_memory_ones(shop, saved_bundle, saved, monkeypatch):
    _forbid_pickles(monkeypatch)
    loaded = load_model_bundle(saved)
    scorer = Scorer.load(saved)
    _build_all(loaded)
    _build_all(scorer.bundle)
    monkeypatch.undo()
    at = pd.Timestamp("2025-01-01")
    expected = pipeline.score(saved_bundle, shop["tx"], as_of=shop["as_of"], scored_at=at)
    got = pipeline.score(loaded, shop["tx"], as_of=shop["as_of"], scored_at=at)
    pd.testing.assert_frame_equal(got, expected)
    ids = [*shop["bundle"].recommender.customer_ids_[:40], "unknown"]
    pd.testing.assert_frame_equal(loaded.recommender.recommend(ids, 5, output="frame"),
                                  shop["bundle"].recommender.recommend(ids, 5, output="frame"))


def test_each_artefact_round_trips_through_the_codec(shop):
    b = shop["bundle"]
    tx, as_of = shop["tx"], shop["as_of"]
    from rebuy.features import rfm_summary

    summary = rfm_summary(tx, as_of=as_of, time_unit="weeks")
    back = {}
    for name, obj in b.artefacts().items():
        meta, arrays = A.encode(obj)
        assert all(a.dtype != object for a in arrays.values())
        back[name] = A.decode(json.loads(json.dumps(meta, allow_nan=False)), arrays)
        assert type(back[name]) is type(obj)
    f, r, T = (summary[c].to_numpy() for c in ("frequency", "recency", "T"))
    np.testing.assert_array_equal(back["purchase_model"].expected_purchases(52, f, r, T),
                                  b.purchase_model.expected_purchases(52, f, r, T))
    np.testing.assert_array_equal(back["spend_model"].expected_order_value(f, summary["monetary_value"].to_numpy()),
                                  b.spend_model.expected_order_value(f, summary["monetary_value"].to_numpy()))
    pd.testing.assert_frame_equal(back["purchase_model"].summary, b.purchase_model.summary)
    assert back["spend_model"].params_ == b.spend_model.params_
    pd.testing.assert_frame_equal(back["rfm_scorer"].transform(summary), b.rfm_scorer.transform(summary))
    np.testing.assert_array_equal(back["clusterer"].predict(summary), b.clusterer.predict(summary))
    pd.testing.assert_frame_equal(back["cluster_profiles"], b.cluster_profiles)
    p = np.linspace(0.01, 0.99, 7)
    np.testing.assert_array_equal(back["purchase_calibrator"].transform(p), b.purchase_calibrator.transform(p))
    ids = [*b.recommender.customer_ids_[:30], "nobody"]
    assert back["recommender"].recommend(ids, 5) == b.recommender.recommend(ids, 5)
    assert back["recommender"].customer_ids_.dtype == object


def test_bpr_recommender_round_trips():
    tx = simulate(n_customers=300, seed=2, n_products=40, events=False).transactions
    rec = Recommender(algorithm="bpr", factors=4, iterations=5, random_state=0).fit(tx)
    meta, arrays = A.encode(rec)
    assert "implicit.BayesianPersonalizedRanking" in A.class_names(meta)
    back = A.decode(json.loads(json.dumps(meta)), arrays)
    ids = list(rec.customer_ids_[:30])
    assert back.recommend(ids, 5) == rec.recommend(ids, 5)


def test_item_knn_bundle_round_trips_without_implicit(tmp_path, monkeypatch):
    tx = simulate(n_customers=400, seed=5, n_products=50, events=False).transactions
    as_of = tx["timestamp"].max().normalize()
    cfg = Config.model_validate({"recommend": {"algorithm": "item_knn", "knn_neighbours": 10}})
    saved_b = save_model_bundle(tmp_path / "models", pipeline.fit(tx, cfg, as_of))
    rec = saved_b.recommender
    assert rec.neighbours_ is not None and rec.model_ is None
    _forbid_pickles(monkeypatch)
    loaded = load_model_bundle(saved_b.bundle_dir)
    back = loaded.recommender
    monkeypatch.undo()
    meta, _ = A.encode(rec)
    assert "rebuy.ItemNeighbours" in A.class_names(meta)
    assert not any(n.startswith("implicit.") for n in A.class_names(meta))
    ids = [*rec.customer_ids_[:100], "unknown"]
    pd.testing.assert_frame_equal(back.recommend(ids, 10, output="frame"), rec.recommend(ids, 10, output="frame"))
    assert back.similar_items(rec.product_ids_[3], 5) == rec.similar_items(rec.product_ids_[3], 5)


def test_codec_values_come_back_equal_and_typed():
    ts = pd.Timestamp("2024-03-01 12:00", tz="Europe/Berlin")
    frame = pd.DataFrame({
        "x": [1.5, np.nan, 3.0],
        "s": pd.array(["a", None, "c"], dtype="str"),
        "c": pd.Categorical(["u", "v", "u"]),
        "t": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]).tz_localize("UTC"),
        "o": np.array(["p", "q", "r"], dtype=object),
    }, index=pd.Index(["k1", "k2", "k3"], dtype=object, name="key"))
    frame["obj"] = pd.Series(["x", None, "z"], dtype=object, index=frame.index)
    value = {
        "floats": [float("nan"), float("inf"), -float("inf"), 0.1],
        "tuple": (1, "a", None, True),
        3: "int key", ("t", 1): "tuple key",
        "np": [np.float64(0.5), np.int64(-3), np.uint64(2**63 + 1), np.bool_(True), np.float32(1.25),
               np.datetime64("2024-01-01T00:00:00", "ns"), np.str_("z")],
        "dtype": np.dtype("float32"),
        "ids": np.array(["a", None, "b\x00", float("nan"), "é"], dtype=object),
        "mixed": np.array([1, "a", None], dtype=object),
        "ts": ts, "td": pd.Timedelta(days=2), "nat": pd.NaT,
        "series": pd.Series([1, 2], index=["a", "b"], name="n"),
        "frame": frame,
        "csr": sp.csr_matrix(np.eye(3, dtype=np.float32)), "csr_array": sp.csr_array(np.eye(2)),
        "csc": sp.csc_matrix(np.eye(2)),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "empty": np.zeros((0, 4), dtype=np.int32),
    }
    value["same"] = [value["fortran"], value["fortran"]]
    meta, arrays = A.encode(value)
    text = json.dumps(meta, allow_nan=False)
    assert all(a.dtype.kind != "O" for a in arrays.values())
    back = A.decode(json.loads(text), arrays)
    assert np.isnan(back["floats"][0]) and back["floats"][1:] == [float("inf"), -float("inf"), 0.1]
    assert back["tuple"] == (1, "a", None, True) and back[3] == "int key" and back[("t", 1)] == "tuple key"
    for a, b in zip(back["np"], value["np"], strict=True):
        assert type(a) is type(b) and a == b
    assert back["dtype"] == np.float32
    ids = back["ids"]
    assert ids.dtype == object and ids[0] == "a" and ids[1] is None and ids[2] == "b\x00"
    assert np.isnan(ids[3]) and ids[4] == "é"
    assert back["mixed"].tolist() == [1, "a", None]
    assert back["ts"] == ts and str(back["ts"].tz) == "Europe/Berlin" and back["td"] == pd.Timedelta(days=2)
    assert back["nat"] is pd.NaT
    pd.testing.assert_series_equal(back["series"], value["series"])
    pd.testing.assert_frame_equal(back["frame"], frame)
    assert back["frame"].dtypes.tolist() == frame.dtypes.tolist() and back["frame"].index.dtype == object
    assert back["frame"]["obj"].dtype == object
    for k in ("csr", "csr_array", "csc"):
        assert type(back[k]) is type(value[k]) and (back[k] != value[k]).nnz == 0
    np.testing.assert_array_equal(back["fortran"], value["fortran"])
    assert back["same"][0] is back["same"][1]
    assert back["empty"].shape == (0, 4) and back["empty"].dtype == np.int32


def test_unlisted_classes_are_not_encoded():
    class Custom:
        pass

    with pytest.raises(A.ArtefactError, match="not in rebuy.artefacts.CLASSES"):
        A.encode({"x": Custom()})
    with pytest.raises(A.ArtefactError, match="arrays of dtype .* cannot be in a bundle"):
        A.encode(np.zeros(2, dtype=[("a", "f8")]))


def test_ranker_state_holds_no_scikit_learn_object(shop):
    meta, _ = A.encode(shop["bundle"].clv_ranker)
    assert A.class_names(meta) == {"rebuy.CLVRanker", "rebuy.BoostedTrees"}


# ------------------------------------------------------------------------------------ the tree walker


@pytest.mark.parametrize(("loss", "leaves"), [("poisson", 7), ("squared_error", 7), ("poisson", 12), ("poisson", 31)])
def test_boosted_trees_predict_like_scikit_learn(loss, leaves):
    # 7 leaves: 6 go-left bits packed in a byte; 12: in 16 bits; 31: too many to pack, node by node
    from sklearn.ensemble import HistGradientBoostingRegressor

    from rebuy.models.trees import from_sklearn

    rng = np.random.default_rng(0)
    X = rng.lognormal(0, 1, size=(3000, 6))
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:, 5] = np.where(rng.random(3000) < 0.5, np.nan, X[:, 5])
    y = np.nan_to_num(X[:, 0]) * 2 + np.isnan(X[:, 1]) + rng.poisson(1.0, 3000)
    model = HistGradientBoostingRegressor(loss=loss, max_iter=30, max_leaf_nodes=leaves, min_samples_leaf=5,
                                          random_state=0)
    model.fit(X[:2000], y[:2000])
    trees = from_sklearn(model)
    inner_nodes = np.diff(trees.offsets) - np.add.reduceat(trees.is_leaf, trees.offsets[:-1])
    assert inner_nodes.max() == leaves - 1  # the trees grew to full size: the path named above is taken
    held = X[2000:]
    np.testing.assert_allclose(trees.predict(held), model.predict(held), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="infinity"):
        trees.predict(np.full((1, 6), np.inf))


# ------------------------------------------------------------------------------------ bundle files


def test_no_bundle_file_is_a_pickle(saved):
    files = [p for p in saved.iterdir() if p.is_file()]
    assert files and not [p.name for p in files if p.suffix == ".joblib"]
    for p in files:
        assert not p.read_bytes()[:1] == b"\x80", p.name  # pickle protocol 2+ header
        if p.suffix == ".json":
            json.loads(p.read_bytes())
    assert B.verify_bundle(saved)["artefact_format"] == B.MANIFEST_FORMAT


class _Payload:
    """Unpickling this creates the marker file: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payload_with_rewritten_checksum_does_not_run(saved, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker), protocol=4)
    manifest = json.loads((saved / B.MANIFEST_NAME).read_text())
    files = [f["file"] for e in manifest["artefacts"].values() for f in [e, *e.get("data", [])]]
    for file in files:
        copy = tmp_path / f"copy-{file}"
        shutil.copytree(saved, copy)
        _rewrite_listed(copy, file, payload)
        try:
            bundle = load_model_bundle(copy)
            _build_all(bundle)
            scorer = Scorer.load(copy)
            _build_all(scorer.bundle)
        except Exception:  # noqa: BLE001 - a format error or wrong numbers are both fine
            pass
        assert not marker.exists(), f"code ran when {file} was replaced by a pickle"


def test_unknown_class_name_is_refused_in_one_line(saved, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    text = (copy / "purchase_model.json").read_text()
    name = json.loads(text)["object"]["class"]
    _rewrite_listed(copy, "purchase_model.json", text.replace(f'"{name}"', '"posix.system"').encode())
    _forbid_pickles(monkeypatch)
    with pytest.raises(BundleError) as err:
        load_model_bundle(copy)
    msg = str(err.value)
    assert "\n" not in msg and "purchase_model.json" in msg and "unknown class 'posix.system'" in msg


@pytest.mark.parametrize("signed", [False, True])
def test_a_joblib_bundle_of_an_earlier_version_is_refused(tmp_path, monkeypatch, signed):
    import rebuy

    run = tmp_path / "models" / "20260101T000000000000Z-abcdef"
    run.mkdir(parents=True)
    joblib.dump({"r": 1.0}, run / "purchase_model.joblib")
    data = (run / "purchase_model.joblib").read_bytes()
    manifest = {"run_id": run.name, "rebuy_version": rebuy.__version__, "artefacts": {
        "purchase_model": {"file": "purchase_model.joblib", "sha256": hashlib.sha256(data).hexdigest(),
                           "bytes": len(data)}}}
    text = json.dumps(manifest).encode()
    (run / B.MANIFEST_NAME).write_bytes(text)
    if signed:
        monkeypatch.setenv(B.KEY_ENV, "k")
        (run / B.SIGNATURE_NAME).write_text(B._sign(text, b"k"))
    _forbid_pickles(monkeypatch)
    for load in (B.load_bundle, load_model_bundle, Scorer.load, B.verify_bundle):
        with pytest.raises(BundleError) as err:
            load(run)
        assert str(err.value) == (f"{run}: bundle written by rebuy {rebuy.__version__} stores pickles; "
                                  "retrain it with `rebuy train`")


def test_large_arrays_are_split_into_parts_and_come_back(tmp_path, monkeypatch):
    monkeypatch.setattr(B, "PART_BYTES", 1000)
    rng = np.random.default_rng(1)
    value = {"factors": rng.normal(size=(100, 7)).astype(np.float32), "ids": np.array([f"c{i}" for i in range(50)],
                                                                                       dtype=object)}
    path = B.write_bundle(tmp_path / "m", {"rec": value}, {})
    entry = B.read_manifest(path)["artefacts"]["rec"]
    assert len(entry["data"]) > 2 and [d["file"] for d in entry["data"]][:2] == ["rec.0.bin", "rec.1.bin"]
    assert sum(d["bytes"] for d in entry["data"]) == sum((path / d["file"]).stat().st_size for d in entry["data"])
    back = B.load_bundle(path)[0]["rec"]
    np.testing.assert_array_equal(back["factors"], value["factors"])
    assert back["ids"].tolist() == value["ids"].tolist()
    part = path / entry["data"][1]["file"]
    part.write_bytes(part.read_bytes()[:-1])
    with pytest.raises(BundleError, match=r"rec\.1\.bin: checksum mismatch"):
        B.load_bundle(path)


def test_an_array_outside_the_data_is_refused_in_one_line(tmp_path):
    path = B.write_bundle(tmp_path / "m", {"a": np.arange(10.0)}, {})
    meta = json.loads((path / "a.json").read_text())
    key = next(iter(meta["arrays"]))
    meta["arrays"][key]["offset"] = 8
    _rewrite_listed(path, "a.json", json.dumps(meta).encode())
    with pytest.raises(BundleError, match=r"a\.json: array 'a0' lies outside the data") as err:
        B.load_bundle(path)
    assert "\n" not in str(err.value)
    meta["arrays"][key].update(offset=0, dtype="|O")
    _rewrite_listed(path, "a.json", json.dumps(meta).encode())
    with pytest.raises(BundleError, match=r"a\.json: arrays of dtype object cannot be in a bundle"):
        B.load_bundle(path)


def test_loading_imports_neither_scikit_learn_nor_implicit(saved):
    import subprocess
    import sys

    code = ("import sys; from rebuy.scoring import Scorer; s = Scorer.load(sys.argv[1]); "
            "print(sorted(m for m in ('sklearn', 'implicit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
