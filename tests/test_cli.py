"""The `rebuy` command line: help, the demo path, config overrides and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from rebuy.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "rebuy.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("simulate", "train", "score", "measure", "evaluate", "report", "doctor", "run"):
        assert cmd in out


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    res = invoke("simulate", "--customers", 1500, "--seed", 5, "--products", 200, "--out", root / "shop.csv.gz")
    assert res.exit_code == 0, res.output
    assert "transaction lines" in res.output
    return root


def test_simulate_writes_the_files(demo):
    assert (demo / "shop.csv.gz").is_file()
    assert (demo / "shop_customers.csv.gz").is_file()
    truth = json.loads((demo / "shop_truth.json").read_text())
    assert {"r", "a", "b"} <= set(truth["bgnbd"]) and any(k.startswith("alpha") for k in truth["bgnbd"])


def test_train_score_summary(demo):
    models = demo / "models"
    res = invoke("train", "--transactions", demo / "shop.csv.gz", "--models-dir", models, "--time-unit", "days")
    assert res.exit_code == 0, res.output
    assert "(per day)" in res.output and "recommender" in res.output
    res = invoke(
        "score", "--transactions", demo / "shop.csv.gz", "--customers", demo / "shop_customers.csv.gz",
        "--models-dir", models, "--out", demo / "scores.csv", "--db", demo / "scores.duckdb",
    )
    assert res.exit_code == 0, res.output
    for text in ("segment: ", "mean P(alive)", "total predicted 12-month CLV", "offer: ", "scores written to",
                 "treatment / control", "offer log", "experiment"):
        assert text in res.output
    scores = pd.read_csv(demo / "scores.csv")
    assert len(scores) == 1500
    manifest = json.loads((models / "latest" / "manifest.json").read_text())
    assert manifest["config"]["time_unit"] == "days"


def test_simulated_experiment_is_measured_by_rebuy_measure(tmp_path):
    res = invoke("simulate", "--customers", 3000, "--seed", 2, "--products", 100, "--out", tmp_path / "shop.parquet",
                 "--experiment", "--offer-effect", "win_back=0.3", "--offer-effect", "vip=0")
    assert res.exit_code == 0, res.output
    truth = json.loads((tmp_path / "shop_experiment_truth.json").read_text())
    assert truth["win_back"]["effect"]["response"] == 0.3
    res = invoke("measure", "--offers", tmp_path / "shop_offer_log.parquet", "--transactions",
                 tmp_path / "shop_after.parquet", "--out", tmp_path / "uplift.json", "--models-dir", tmp_path / "m")
    assert res.exit_code == 0, res.output
    assert "win_back" in res.output and "overall" in res.output and "waiting for their 30-day window" in res.output
    result = json.loads((tmp_path / "uplift.json").read_text())
    assert {"window_days", "by_offer", "overall", "by_segment"} <= set(result)
    win_back = next(e for e in result["by_offer"] if e["offer_type"] == "win_back")
    assert win_back["verdict"] == "works"  # a 30-point effect: the interval is a few points wide
    assert json.loads((tmp_path / "m" / "latest_uplift.json").read_text()) == result


def test_measure_names_a_missing_log_column(tmp_path, demo):
    pd.DataFrame({"customer_id": ["a"], "decided_at": ["2025-01-01"], "group": ["control"]}).to_csv(
        tmp_path / "log.csv", index=False)
    res = runner.invoke(app, ["measure", "--offers", str(tmp_path / "log.csv"), "--transactions",
                              str(demo / "shop.csv.gz"), "--out", str(tmp_path / "u.json")])
    assert res.exit_code == 2
    assert "log.csv" in res.output and "offer_type" in res.output
    assert "Traceback" not in res.output


def test_column_override_maps_a_new_schema(demo, tmp_path):
    tx = pd.read_csv(demo / "shop.csv.gz").rename(columns={"customer_id": "Kunde", "timestamp": "Zeit"})
    src = tmp_path / "renamed.parquet"
    tx.to_parquet(src)
    res = invoke(
        "train", "--transactions", src, "--models-dir", tmp_path / "m",
        "--column", "customer_id=Kunde", "--column", "timestamp=Zeit", "--as-of", "2024-12-31",
    )
    assert res.exit_code == 0, res.output
    assert "as of                        2024-12-31" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--transactions", "missing.csv"], "missing.csv"),
        (["train", "--transactions", "{shop}", "--column", "customer_id"], "expected CANONICAL=SOURCE"),
        (["train", "--transactions", "{shop}", "--column", "customer_id=nope"], "'nope'"),
        (["train", "--transactions", "{shop}", "--time-unit", "months"], "time_unit"),
        (["score", "--transactions", "{shop}", "--models-dir", "{empty}", "--out", "x.parquet"], "latest"),
    ],
)
def test_bad_input_is_one_clear_line(demo, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(shop=demo / "shop.csv.gz", empty=tmp_path / "empty") for a in args]
    if args[0] == "train":  # never the repository's own models directory (a demo may be running there)
        args += ["--models-dir", str(tmp_path / "m")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], res.output
    assert "Traceback" not in res.output


def test_evaluate_writes_a_report(demo):
    out = demo / "eval.json"
    res = invoke(
        "evaluate", "--transactions", demo / "shop.csv.gz", "--calibration-end", "2024-06-30", "--out", out,
        "--recommender", "--cutoff", "2024-09-01",
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    vm = report["value_models"]
    assert {"aggregate", "per_customer", "tracking", "p_alive_calibration", "clv_ranking"} <= set(vm)
    assert "verdict" in res.output
    modes = report["recommender"]["modes"]
    assert set(modes) == {"new_items", "repurchase"}
    assert {"model", "popularity", "own_history"} <= set(modes["repurchase"])
    assert "recommender new_items ndcg@10" in res.output


def test_config_command_validates_and_prints(tmp_path):
    root = Path(__file__).resolve().parents[1]
    res = invoke("config", "--config", root / "configs" / "online_retail_ii.yaml")
    assert res.exit_code == 0
    assert json.loads(res.output)["data"]["columns"]["customer_id"] == "Customer ID"
    bad = tmp_path / "bad.yaml"
    bad.write_text("offers:\n  budgett: 10\n")
    res = runner.invoke(app, ["config", "--config", str(bad)])
    assert res.exit_code == 2 and "offers.budgett: unknown key" in res.output


def test_score_takes_offer_settings_and_columns_without_retraining(demo, tmp_path):
    models = tmp_path / "models"
    assert invoke("train", "--transactions", demo / "shop.csv.gz", "--models-dir", models).exit_code == 0
    renamed = pd.read_csv(demo / "shop.csv.gz").rename(columns={"customer_id": "Kunde"})
    src = tmp_path / "renamed.parquet"
    renamed.to_parquet(src)
    playbook = tmp_path / "offers.yaml"
    playbook.write_text("offers:\n  priority: [loyalty_points]\n  assume_consent_without_customers: true\n")
    res = invoke(
        "score", "--transactions", src, "--models-dir", models, "--out", tmp_path / "s.parquet", "--no-db",
        "--config", playbook, "--column", "customer_id=Kunde",
    )
    assert res.exit_code == 0, res.output
    offers = set(pd.read_parquet(tmp_path / "s.parquet")["offer_type"])
    assert "loyalty_points" in offers and offers <= {"loyalty_points", "none", "reminder"}
    res = runner.invoke(app, ["score", "--transactions", str(demo / "shop.csv.gz"), "--models-dir", str(models),
                              "--out", str(tmp_path / "t" / "t.parquet"), "--no-db", "--time-unit", "days"])
    assert res.exit_code == 2 and "trained in weeks" in res.output
    # --time-unit alone only checks the unit: the playbook the bundle was trained with stays in force
    trained_with_playbook = tmp_path / "models2"
    res = invoke("train", "--transactions", demo / "shop.csv.gz", "--models-dir", trained_with_playbook,
                 "--config", playbook)
    assert res.exit_code == 0, res.output
    res = invoke("score", "--transactions", demo / "shop.csv.gz", "--customers", demo / "shop_customers.csv.gz",
                 "--models-dir", trained_with_playbook, "--out", tmp_path / "u" / "u.parquet", "--no-db",
                 "--time-unit", "weeks")
    assert res.exit_code == 0, res.output
    offers = set(pd.read_parquet(tmp_path / "u" / "u.parquet")["offer_type"])
    assert "loyalty_points" in offers and offers <= {"loyalty_points", "none", "reminder"}


def _train_raising(exc: Exception, demo: Path, tmp_path: Path, monkeypatch, *extra: str):
    """`rebuy train` on the demo shop with pipeline.fit raising ``exc``."""
    import rebuy.pipeline

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(rebuy.pipeline, "fit", broken)
    args = ["train", "--transactions", str(demo / "shop.csv.gz"), "--models-dir", str(tmp_path / "models")]
    return runner.invoke(app, [*args, *extra])


def _error_lines(res) -> list[str]:
    return [ln for ln in res.output.splitlines() if ln.startswith("error:")]


def test_a_bug_is_an_internal_error_not_a_user_error(demo, tmp_path, monkeypatch):
    """A ValueError from inside rebuy is a bug: exit 1 and "internal error", never exit 2."""
    res = _train_raising(ValueError("operands could not be broadcast together"), demo, tmp_path, monkeypatch)
    assert res.exit_code == 1
    lines = _error_lines(res)
    assert len(lines) == 1 and "internal error" in lines[0] and "rerun with -v" in lines[0], res.output
    assert "Traceback" not in res.output


def test_verbose_shows_the_traceback_of_an_internal_error(demo, tmp_path, monkeypatch):
    res = _train_raising(KeyError("internal"), demo, tmp_path, monkeypatch, "-v")
    assert res.exit_code == 1
    assert "Traceback" in res.output and "KeyError" in res.output


def test_every_user_error_is_a_rebuy_error(demo, tmp_path, monkeypatch):
    """Any RebuyError subclass raised anywhere below the CLI is one line and exit 2."""
    from rebuy.errors import ModelFitError

    res = _train_raising(ModelFitError("BG/NBD: every customer bought once"), demo, tmp_path, monkeypatch)
    assert res.exit_code == 2
    assert _error_lines(res) == ["error: BG/NBD: every customer bought once"]


def test_missing_file_is_one_line_naming_it(tmp_path):
    res = runner.invoke(app, ["train", "--transactions", str(tmp_path / "nope.parquet")])
    assert res.exit_code == 2, res.output
    lines = _error_lines(res)
    assert len(lines) == 1 and "nope.parquet" in lines[0]


def _trained(demo: Path, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    res = invoke("train", "--transactions", demo / "shop.csv.gz", "--models-dir", models,
                 "--purchase-model", "bgnbd")
    assert res.exit_code == 0, res.output
    return models


def test_score_writes_no_database_unless_asked(demo, tmp_path, monkeypatch):
    models = _trained(demo, tmp_path)
    monkeypatch.chdir(tmp_path)
    res = invoke("score", "--transactions", demo / "shop.csv.gz", "--models-dir", models, "--out", tmp_path / "s.parquet")
    assert res.exit_code == 0, res.output
    assert not list(tmp_path.glob("*.duckdb")) and "database tables" not in res.output
    assert "decided, not sent" in res.output  # no customers table: decisions made, consent unknown


def test_log_format_json_gives_one_json_object_per_line(demo, tmp_path):
    out = subprocess.run([sys.executable, "-m", "rebuy.cli", "--log-format", "json", "train", "--transactions",
                          str(demo / "shop.csv.gz"), "--models-dir", str(tmp_path / "m"), "--purchase-model", "bgnbd"],
                         capture_output=True, text=True, check=True)
    records = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"] == "rebuy.pipeline" for r in records)


def test_unknown_log_format_is_a_one_line_usage_error():
    res = runner.invoke(app, ["--log-format", "xml", "config"])
    assert res.exit_code == 2 and "--log-format must be one of text, json" in res.output


def test_doctor_passes_on_a_ready_setup_and_names_what_fails(demo, tmp_path):
    models = _trained(demo, tmp_path)
    res = invoke("doctor", "--models-dir", models, "--transactions", demo / "shop.csv.gz", "--db", tmp_path / "new.duckdb")
    assert res.exit_code == 0, res.output
    for name in ("python", "duckdb", "models", "transactions", "database"):
        assert name in res.output
    assert not (tmp_path / "new.duckdb").exists()  # the doctor writes nothing
    res = runner.invoke(app, ["doctor", "--models-dir", str(tmp_path / "none"), "--transactions", str(tmp_path / "x.csv")])
    assert res.exit_code == 2
    assert "fail  models" in res.output and "fail  transactions" in res.output
    assert "2 check(s) failed: models, transactions" in res.output


def test_help_states_the_exit_codes():
    out = subprocess.run([sys.executable, "-m", "rebuy.cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "Exit codes: 0 done; 2 a user error" in " ".join(out.split())


def test_the_commands_shown_in_config_headers_parse_as_written():
    import shlex

    import typer.main

    command = typer.main.get_command(app)
    configs = Path(__file__).resolve().parents[1] / "configs"
    shown = [line.lstrip("# ").strip() for path in configs.glob("*.yaml") for line in path.read_text().splitlines()
             if line.startswith("#   rebuy ")]  # the indented example commands of the headers
    assert shown, "the config headers show how to run them"
    for line in shown:
        args = shlex.split(line)[1:]
        sub = command.get_command(None, args[0])
        sub.make_context(args[0], args[1:])  # a click UsageError (e.g. a positional file) fails the test
