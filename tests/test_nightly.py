"""`rebuy run` (rebuy.nightly, issue 15): train when due, score and publish in one process, with one
read and one clean of the transactions; the same scores as `rebuy train` then `rebuy score`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import rebuy.data
from rebuy.bundle import list_bundles, read_manifest
from rebuy.cli import app
from rebuy.config import Config
from rebuy.nightly import run_night, training_due
from rebuy.pipeline import TrainingValues
from rebuy.scoring import run_scoring
from rebuy.simulate import simulate, write_simulation
from rebuy.train import train

CFG = {"purchase_model": "bgnbd", "clv": {"method": "model"}}
VARYING = ["model_run_id", "scored_at"]  # the bundle's run id and the clock


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nightlyshop")
    return write_simulation(simulate(n_customers=1_500, seed=21, n_products=80), root / "shop.parquet")


@pytest.mark.parametrize("clv_method", ["model", "auto"])
def test_a_first_night_trains_and_scores_like_train_then_score(shop, tmp_path, monkeypatch, clv_method):
    calls, reused = [], []
    real = rebuy.data.load_transactions
    monkeypatch.setattr(rebuy.data, "load_transactions", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    real_matches = TrainingValues.matches
    monkeypatch.setattr(TrainingValues, "matches", lambda self, *a: reused.append(real_matches(self, *a)) or reused[-1])
    cfg = Config.model_validate({**CFG, "clv": {"method": clv_method}})
    night = run_night(shop["transactions"], models_dir=tmp_path / "a" / "models", out=tmp_path / "a" / "scores.parquet",
                      customers=shop["customers"], config=cfg)
    assert night.trained is not None and night.train_reason == "no bundle yet"
    assert len(calls) == 1  # one read and one clean for the training and the scoring
    assert reused == [True]  # the training's value scores serve the night: computed once
    monkeypatch.undo()
    trained = train(shop["transactions"], cfg, models_dir=tmp_path / "b" / "models", customers=shop["customers"])
    assert trained.bundle.training_values is None  # `rebuy train` keeps no frames on the bundle it returns
    separate = run_scoring(shop["transactions"], models_dir=tmp_path / "b" / "models",
                           out=tmp_path / "b" / "scores.parquet", customers=shop["customers"], config=cfg)
    pd.testing.assert_frame_equal(night.score.scores.drop(columns=VARYING), separate.scores.drop(columns=VARYING))
    published = pd.read_parquet(tmp_path / "a" / "scores.parquet")
    assert (published["model_run_id"] == night.trained.bundle.run_id).all()


def test_a_night_with_a_fresh_bundle_only_scores(shop, tmp_path):
    cfg = Config.model_validate(CFG)
    models = tmp_path / "models"
    first = run_night(shop["transactions"], models_dir=models, out=tmp_path / "scores.parquet", config=cfg)
    second = run_night(shop["transactions"], models_dir=models, out=tmp_path / "scores.parquet", config=cfg)
    assert second.trained is None and second.train_reason == "not due" and len(list_bundles(models)) == 1
    assert (second.score.scores["model_run_id"] == first.trained.bundle.run_id).all()
    forced = run_night(shop["transactions"], models_dir=models, out=tmp_path / "scores.parquet", config=cfg, train=True)
    assert forced.trained is not None and len(list_bundles(models)) == 2


def test_training_is_due_by_the_age_of_the_latest_bundle(shop, tmp_path):
    models = tmp_path / "models"
    assert training_due(models, 7) == "no bundle yet"
    train(shop["transactions"], Config.model_validate(CFG), models_dir=models)
    created = pd.Timestamp(read_manifest(models / "latest", check=False)["created_at"]).to_pydatetime()
    assert training_due(models, 7, now=created + dt.timedelta(days=6.9)) is None
    assert "7.0 days old" in training_due(models, 7, now=created + dt.timedelta(days=7))
    assert "every night" in training_due(models, 0, now=created)


def test_rebuy_run_prints_both_summaries_and_never_trains_with_no_train(shop, tmp_path):
    runner = CliRunner()
    base = ["run", "--transactions", str(shop["transactions"]), "--out", str(tmp_path / "scores.parquet"),
            "--models-dir", str(tmp_path / "models"), "--purchase-model", "bgnbd"]
    refused = runner.invoke(app, [*base, "--no-train"])
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    res = runner.invoke(app, base)
    assert res.exit_code == 0, res.output
    for row in ("rebuy run", "training", "no bundle yet", "bundle", "purchase model", "offer:", "scores written to",
                "seconds"):
        assert row in res.stdout
    again = runner.invoke(app, base)
    assert again.exit_code == 0 and "not due" in again.stdout and "bgnbd parameters" not in again.stdout
