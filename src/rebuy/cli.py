"""The ``rebuy`` command line: a thin layer over the library functions.

    rebuy simulate --customers 20000 --seed 1 --out shop.parquet
    rebuy train    --transactions shop.parquet [--customers shop_customers.parquet] --models-dir models
    rebuy score    --transactions shop.parquet --models-dir models --out scores.parquet [--db scores.duckdb]
    rebuy evaluate --transactions shop.parquet --calibration-end 2024-06-30 --out report.json
    rebuy report   --models-dir models --scores scores.parquet --out report.html
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from rebuy import __version__
from rebuy.config import Config, load_config, parse_column_overrides
from rebuy.errors import RebuyError, UsageError, describe_os_error

app = typer.Typer(
    help="rebuy: segments, repeat-purchase and lifetime-value models, recommendations and offers for retailers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("rebuy.cli")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config (see configs/default.yaml).")]
AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="Scoring date YYYY-MM-DD (default: last transaction day).")]
TimeUnitOpt = Annotated[str | None, typer.Option("--time-unit", help="Model time unit: days or weeks.")]
ColumnOpt = Annotated[
    list[str] | None,
    typer.Option("--column", help="Map a canonical column to a source column: CANONICAL=SOURCE (repeatable)."),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
TransactionsOpt = Annotated[str, typer.Option("--transactions", help="Transactions: CSV/Parquet path or duckdb:PATH::SQL.")]
ScoresOutOpt = Annotated[Path, typer.Option("--out", help="Scores file (.parquet, .csv or .csv.gz).")]
CustomersOpt = Annotated[str | None, typer.Option("--customers", help="Customers table (optional).")]
EventsOpt = Annotated[str | None, typer.Option("--events", help="View/cart events (optional).")]
UpliftOpt = Annotated[Path | None, typer.Option("--uplift", help="rebuy measure JSON: offers chosen by measured uplift.")]
ModelsDirOpt = Annotated[Path, typer.Option("--models-dir", help="Models directory holding latest.")]
ScoresDbOpt = Annotated[str | None, typer.Option(
    "--db", help="Also write the tables customer_scores and offer_log: a DuckDB file (.duckdb) or a "
    "postgresql:// URL (needs pip install 'rebuy[postgres]'; no password in the URL: use PGPASSWORD or "
    "~/.pgpass). Default: none.")]
ExportsOpt = Annotated[Path | None, typer.Option(
    "--exports", help="Directory for one CSV per offer type x channel, ready for the e-mail/SMS/messenger tool.")]


_LOG_FORMAT: list[str | None] = [None]
"""The --log-format of this invocation (set by the callback before the command runs)."""


def _setup_logging(verbose: bool) -> None:
    from rebuy.logs import configure

    configure(verbose, _LOG_FORMAT[0])


def _config(config: Path | None, as_of: str | None, time_unit: str | None, column: list[str] | None,
            **overrides: str | None) -> Config:
    return load_config(
        config,
        overrides={"as_of": as_of, "time_unit": time_unit, **overrides},
        columns=parse_column_overrides(column),
    )


PurchaseModelOpt = Annotated[
    str | None,
    typer.Option("--purchase-model", help="bgnbd, mbgnbd, pareto_nbd or auto (the config's purchase_model; "
                 "default auto: the candidate that predicts a holdout inside the window best)."),
]


def _fail(message: object) -> NoReturn:
    """One clear line on stderr and exit code 2 for user errors."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def _handled(verbose: bool) -> Iterator[None]:
    """User errors (``RebuyError``; OSErrors of the user's disk, paths or permissions: missing or
    unwritable files, a full disk, a file-size limit): one line, exit 2. Anything else is a bug
    in rebuy: exit 1 with "internal error", and the traceback under ``-v``."""
    try:
        yield
    except typer.Exit:
        raise
    except RebuyError as exc:
        _fail(exc)
    except OSError as exc:
        line = describe_os_error(exc)  # the user's disk, paths or permissions; else a bug
        if line is None:
            _internal(exc, verbose)
        _fail(line)
    except Exception as exc:
        _internal(exc, verbose)


def _internal(exc: BaseException, verbose: bool) -> NoReturn:
    """A bug in rebuy: "internal error" and exit 1 (the traceback under ``-v``)."""
    if verbose:
        traceback.print_exc(file=sys.stderr)
    hint = "" if verbose else ", rerun with -v for the traceback"
    first = str(exc).splitlines()[0] if str(exc) else ""
    typer.echo(f"error: internal error ({type(exc).__name__}: {first}){hint}", err=True)
    raise typer.Exit(code=1) from None


def _table(title: str, rows: list[tuple[str, str]]) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    lines = [title, "-" * len(title)]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


EXIT_CODES = "Exit codes: 0 done; 2 a user error (bad input, config, path or usage: one line says what); 1 an internal error (a bug: the traceback with -v)."


@app.callback(invoke_without_command=True, epilog=EXIT_CODES)
def main(
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help="text (default) or json: one JSON object per log line, for schedulers "
        "(also REBUY_LOG_FORMAT=json).")] = None,
) -> None:
    from rebuy.logs import FORMATS

    if log_format is not None and log_format.lower() not in FORMATS:
        _fail(f"--log-format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    _LOG_FORMAT[0] = log_format
    if version:
        typer.echo(f"rebuy {__version__}")
        raise typer.Exit()


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Transactions file (.parquet, .csv or .csv.gz).")],
    customers: Annotated[int, typer.Option("--customers", help="Number of customers.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    start: Annotated[str, typer.Option("--start", help="First day YYYY-MM-DD.")] = "2023-01-01",
    end: Annotated[str, typer.Option("--end", help="Last day YYYY-MM-DD.")] = "2024-12-31",
    products: Annotated[int, typer.Option("--products", help="Catalogue size.")] = 2_000,
    experiment: Annotated[bool, typer.Option(
        "--experiment", help="Also simulate a decision night: an offer log with control groups (random offer "
        "types) and the purchases after it, with true offer effects.")] = False,
    responses_to: Annotated[Path | None, typer.Option(
        "--responses-to", help="Simulate the purchases after this offer log's night (from rebuy score) instead "
        "of simulating decisions.")] = None,
    offer_effect: Annotated[list[str] | None, typer.Option(
        "--offer-effect", help="TYPE=RESPONSE[:SPEND], repeatable: true extra purchase probability in the window "
        "for a treated customer (negative = harmful) and the extra order's value multiple; default: the "
        "simulator's DEFAULT_EFFECTS.")] = None,
    window_days: Annotated[int, typer.Option("--window-days", help="Response window after the decision night.")] = 30,
    verbose: VerboseOpt = False,
) -> None:
    """Simulate a shop from the BG/NBD and Gamma-Gamma processes (with catalogue, customers and events);
    with --experiment or --responses-to, also a decision night, what customers buy after it, and the truth."""
    _setup_logging(verbose)
    from rebuy.simulate import simulate as run_simulation
    from rebuy.simulate import write_simulation

    t0 = time.perf_counter()
    with _handled(verbose):
        sim = run_simulation(n_customers=customers, seed=seed, start=start, end=end, n_products=products)
        paths = write_simulation(sim, out)
        if experiment or responses_to is not None:
            paths.update(_simulate_night(sim, out, responses_to, offer_effect, window_days, seed))
    tx = sim.transactions
    rows = [
        ("customers", f"{customers:,}"),
        ("transaction lines", f"{len(tx):,}"),
        ("orders", f"{sim.truth['realised']['orders']:,}"),
        ("revenue", f"{tx['amount'].sum():,.2f}"),
        ("period", f"{tx['timestamp'].min():%Y-%m-%d} .. {tx['timestamp'].max():%Y-%m-%d}"),
        *[(f"wrote {k}", str(v)) for k, v in paths.items()],
        ("seconds", f"{time.perf_counter() - t0:.1f}"),
    ]
    typer.echo(_table("rebuy simulate", rows))


def _simulate_night(sim: object, out: Path, responses_to: Path | None, effects: list[str] | None,
                    window_days: int, seed: int) -> dict[str, Path]:
    """The experiment files beside ``out``: the offer log (simulated unless given), the shop through
    the response window (``<stem>_after``) and the true effects (``<stem>_experiment_truth.json``)."""
    import pandas as pd

    from rebuy.measure import read_offer_log
    from rebuy.outputs import write_json, write_table
    from rebuy.simulate import simulation_paths
    from rebuy.simulate_offers import simulate_responses, simulated_offer_log

    base = simulation_paths(out)["transactions"]
    stem, ext = base.name[: -len("".join(base.suffixes))], "".join(base.suffixes)
    written: dict[str, Path] = {}
    if responses_to is None:
        log = simulated_offer_log(sim, seed=seed)
        written["offer log"] = write_table(log, base.with_name(f"{stem}_offer_log.parquet"))
    else:
        log = read_offer_log(responses_to)
    responses = simulate_responses(sim, log, effects or None, window_days=window_days, seed=seed)
    after = pd.concat([sim.transactions, responses.transactions], ignore_index=True)
    written["shop after the window"] = write_table(after, base.with_name(f"{stem}_after{ext}"))
    written["experiment truth"] = write_json(responses.truth, base.with_name(f"{stem}_experiment_truth.json"))
    return written


@app.command()
def measure(
    offers: Annotated[str, typer.Option("--offers", help="Offer log: DuckDB file, Parquet file/dataset dir or CSV.")],
    transactions: Annotated[str, typer.Option("--transactions", help="Transactions through the response windows.")],
    out: Annotated[Path, typer.Option("--out", help="Uplift JSON to write.")] = Path("uplift.json"),
    config: ConfigOpt = None,
    window_days: Annotated[int | None, typer.Option(
        "--window-days", help="Response window in days (default: measure.window_days of the config, 30).")] = None,
    models_dir: Annotated[Path | None, typer.Option(
        "--models-dir", help="Also record the result as MODELS_DIR/latest_uplift.json (offers.use_measured_uplift).")] = None,
    as_of: AsOfOpt = None,
    column: ColumnOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Measure each offer type against its control group: uplift, incremental revenue and margin, with 95% intervals."""
    _setup_logging(verbose)
    from rebuy.data import load_transactions
    from rebuy.measure import format_uplift_table, measure_uplift, read_offer_log
    from rebuy.outputs import write_json
    from rebuy.progress import step
    from rebuy.scoring import LATEST_UPLIFT_FILE

    t0 = time.perf_counter()
    with _handled(verbose):
        cfg = _config(config, None, None, column)
        log = read_offer_log(offers)
        with step("load and clean transactions", logging.getLogger("rebuy.measure")):
            tx = load_transactions(transactions, cfg, min_customers=1)
        result = measure_uplift(log, tx, window_days=window_days or cfg.measure.window_days,
                                margin=cfg.clv.margin, as_of=as_of)
        result["offer_log"] = str(offers)
        write_json(result, out)
        if models_dir is not None:
            write_json(result, Path(models_dir) / LATEST_UPLIFT_FILE)
    typer.echo(format_uplift_table(result))
    rows = [("decisions", f"{result['decisions_total']:,} ({result['decisions_measured']:,} measured, "
                          f"{result['decisions_pending']:,} waiting for their {result['window_days']}-day window)"),
            ("uplift written to", str(out))]
    if models_dir is not None:
        rows.append(("recorded for scoring", str(Path(models_dir) / LATEST_UPLIFT_FILE)))
    rows.append(("seconds", f"{time.perf_counter() - t0:.1f}"))
    typer.echo(_table("rebuy measure", rows))


@app.command()
def train(
    transactions: TransactionsOpt,
    customers: CustomersOpt = None,
    models_dir: Annotated[Path, typer.Option("--models-dir", help="Where bundles are written.")] = Path("models"),
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
    time_unit: TimeUnitOpt = None,
    column: ColumnOpt = None,
    purchase_model: PurchaseModelOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Fit segments, clusters, the purchase model (BG/NBD, MBG/NBD or Pareto/NBD), Gamma-Gamma, the
    CLV ranker and the recommender; write a bundle."""
    _setup_logging(verbose)
    from rebuy.train import train as run_training

    t0 = time.perf_counter()
    with _handled(verbose):
        cfg = _config(config, as_of, time_unit, column, purchase_model=purchase_model)
        result = run_training(transactions, cfg, models_dir=models_dir, customers=customers)
    rows = [*_train_rows(result), ("seconds", f"{time.perf_counter() - t0:.1f}")]
    typer.echo(_table("rebuy train", rows))


def _train_rows(result: Any) -> list[tuple[str, str]]:
    """The summary rows of a training run (bundle, window, candidates, parameters, warnings)."""
    m = result.manifest
    td = m["training_data"]
    name = m["params"]["purchase_model"]
    gg = m["params"]["gamma_gamma"]
    return [
        ("bundle", str(result.bundle_dir)),
        ("as of", m["as_of"]),
        ("rows / customers / products", f"{td['rows']:,} / {td['customers']:,} / {td['products']:,}"),
        *_selection_rows(m["purchase_model_selection"]),
        (f"{name} parameters", ", ".join(f"{k}={v:.4g}" for k, v in m["params"][name].items())
         + f" (per {m['params']['time_unit'][:-1]})"),
        ("Gamma-Gamma", ", ".join(f"{k}={v:.4g}" for k, v in gg.items())),
        ("clv_12m from", _clv_line(m["clv"])),
        ("clusters", str(m["clustering"]["n_clusters"])),
        ("recommender", "trained" if m["recommender"].get("trained") else f"skipped ({m['recommender'].get('reason')})"),
        *[("warning", w) for w in m["model_diagnostics"]["warnings"]],
        *([("finding", m["spend_concentration"]["finding"])] if m["spend_concentration"]["finding"] else []),
    ]


def _selection_rows(selection: dict) -> list[tuple[str, str]]:
    """One row per candidate (its holdout figures) and the choice."""
    rows = []
    for name, c in selection.get("candidates", {}).items():
        if "error" in c:
            rows.append((f"candidate {name}", f"not fitted: {c['error']}"))
        else:
            rows.append((f"candidate {name}", f"{selection['metric']} {c[selection['metric']]:.5f}, AUC P(purchase 90d) "
                         f"{c['auc_p_purchase']:.3f}, AUC P(alive) {c['auc_p_alive']:.3f}"))
    return [*rows, ("purchase model", selection.get("reason", selection.get("chosen", "")))]


def _clv_line(clv: dict) -> str:
    ranker = clv.get("ranker") or {}
    line = clv["method"]
    if ranker.get("reason"):
        line += f" ({ranker['reason']})"
    return line


@app.command()
def score(
    transactions: TransactionsOpt,
    out: ScoresOutOpt,
    customers: CustomersOpt = None,
    events: EventsOpt = None,
    models_dir: ModelsDirOpt = Path("models"),
    db: ScoresDbOpt = None,
    no_db: Annotated[bool, typer.Option("--no-db", help="Do not write a database (the default; kept for scripts).")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Take the data, clv and offers sections from this YAML.")
    ] = None,
    as_of: AsOfOpt = None,
    time_unit: TimeUnitOpt = None,
    column: ColumnOpt = None,
    uplift: UpliftOpt = None,
    exports: ExportsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Score every customer with the latest bundle; write Parquet/CSV, the DuckDB table and the offer log atomically."""
    _setup_logging(verbose)
    from rebuy.scoring import run_scoring

    with _handled(verbose):
        settings = _config(config, None, None, None) if config else None
        run = run_scoring(
            transactions,
            models_dir=models_dir,
            out=out,
            customers=customers,
            events=events,
            db=None if no_db else db,
            as_of=as_of,
            config=settings,
            columns=parse_column_overrides(column),
            time_unit=time_unit,
            uplift=uplift,
            exports=exports,
        )
    rows = [*_score_rows(run), ("seconds", f"{run.seconds:.1f}")]
    typer.echo(_table("rebuy score", rows))


@app.command()
def run(
    transactions: TransactionsOpt,
    out: ScoresOutOpt,
    customers: CustomersOpt = None,
    events: EventsOpt = None,
    models_dir: ModelsDirOpt = Path("models"),
    db: ScoresDbOpt = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="YAML config: the training config, and the scoring's data, clv and offers sections.")] = None,
    as_of: AsOfOpt = None,
    purchase_model: PurchaseModelOpt = None,
    train: Annotated[bool | None, typer.Option(
        "--train/--no-train", help="Train first whatever the bundle's age / never train (default: when "
        "operations.train_every_days says so, or when there is no bundle).")] = None,
    uplift: UpliftOpt = None,
    exports: ExportsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """The nightly job in one process: train when due, then score and publish (one read and one clean)."""
    _setup_logging(verbose)
    from rebuy.nightly import run_night

    with _handled(verbose):
        settings = _config(config, None, None, None, purchase_model=purchase_model) if config or purchase_model else None
        night = run_night(transactions, models_dir=models_dir, out=out, customers=customers, events=events, db=db,
                          as_of=as_of, config=settings, uplift=uplift, exports=exports, train=train)
    rows = [("training", night.train_reason)]
    if night.trained is not None:
        rows += _train_rows(night.trained)
    rows += [*_score_rows(night.score), ("seconds", f"{night.seconds:.1f}")]
    typer.echo(_table("rebuy run", rows))


def _score_rows(run: Any) -> list[tuple[str, str]]:
    """The summary rows of a scoring night (segments, offers, groups, where it was published)."""
    from rebuy.scoring import score_summary

    s = score_summary(run.scores)
    rows = [("customers", f"{s['customers']:,}")]
    rows += [(f"segment: {k}", f"{v:,}") for k, v in s["segments"].items()]
    rows += [("mean P(alive)", f"{s['mean_p_alive']:.3f}"), ("total predicted 12-month CLV", f"{s['total_clv_12m']:,.2f}")]
    rows += [(f"offer: {k}", f"{v:,}") for k, v in s["offers"].items()]
    rows += [(f"channel: {k}", f"{v:,}") for k, v in s["channels"].items()]
    rows += _experiment_rows(run.experiment or {}, s)
    rows += [("scores written to", str(run.out_path))]
    if run.db_path:
        rows += [("database tables", f"{run.db_path} :: customer_scores, offer_log")]
    if run.log_path:
        rows += [("offer log", f"{run.log_path} ({run.experiment['logged']:,} decisions)")]
    if run.exports:
        from rebuy.exports import customers_to_contact

        counts = customers_to_contact(run.scores).groupby(["offer_type", "channel"], observed=True).size()
        rows += [(f"export: {path.name}", f"{int(counts.get(key, 0)):,} customers") for key, path in run.exports.items()]
    return rows


def _experiment_rows(experiment: dict, summary: dict) -> list[tuple[str, str]]:
    """The control groups, their notes and the evidence of a scoring run, for its summary."""
    groups = summary["groups"]
    rows = [("experiment", f"{experiment.get('experiment')} (decided_at {experiment.get('decided_at')}, "
                           f"run {experiment.get('run_id')})"),
            ("treatment / control", f"{groups.get('treatment', 0):,} / {groups.get('control', 0):,} "
                                    f"(delivered {summary['delivered']:,})")]
    if summary["not_sent"]:
        rows.append(("decided, not sent", f"{summary['not_sent']:,} treated customers without an allowed channel "
                                          "(consent unknown or absent, or too young: see offer_reason)"))
    rows += [(f"control: {t}", note) for t, note in experiment.get("notes", {}).items()]
    evidence = experiment.get("evidence")
    if evidence:
        rows += [("evidence", evidence["source"]),
                 ("switched off (harmful)", ", ".join(evidence["switched_off"]) or "none"),
                 ("kept (harm not significant after Holm)", ", ".join(evidence.get("kept_despite_harm", [])) or "none"),
                 ("promoted (margin CI > 0)", ", ".join(evidence["promoted"]) or "none")]
    return rows


@app.command()
def evaluate(
    transactions: TransactionsOpt,
    out: Annotated[Path, typer.Option("--out", help="Report JSON path.")],
    calibration_end: Annotated[str | None, typer.Option("--calibration-end", help="End of the calibration period.")] = None,
    holdout_end: Annotated[str | None, typer.Option("--holdout-end", help="End of the holdout (default: last day).")] = None,
    recommender: Annotated[bool, typer.Option("--recommender", help="Also evaluate the recommender.")] = False,
    cutoff: Annotated[str | None, typer.Option("--cutoff", help="Recommender train/test cutoff (default: calibration end).")] = None,
    test_end: Annotated[str | None, typer.Option("--test-end", help="Recommender test end (default: holdout end).")] = None,
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
    time_unit: TimeUnitOpt = None,
    column: ColumnOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Validate the value models on a calibration/holdout split (and the recommender with --recommender).

    ``--as-of`` drops transactions after that day; the holdout ends there unless ``--holdout-end`` is given.
    """
    _setup_logging(verbose)
    from rebuy.data import load_transactions
    from rebuy.outputs import write_json

    t0 = time.perf_counter()
    report: dict = {}
    with _handled(verbose):
        cfg = _config(config, as_of, time_unit, column)
        tx = load_transactions(transactions, cfg)
        holdout = holdout_end or str(tx["timestamp"].max().date())
        if calibration_end is None and not recommender:
            raise UsageError("--calibration-end is required (or --recommender with --cutoff)")
        if calibration_end is not None:
            from rebuy.evaluate import evaluate_value_models

            report["value_models"] = evaluate_value_models(tx, calibration_end, holdout, cfg)
        if recommender:
            from rebuy.evaluate_recommender import evaluate_recommender

            rc = cutoff or calibration_end
            if rc is None:
                raise UsageError("--recommender needs --cutoff or --calibration-end")
            report["recommender"] = evaluate_recommender(tx, rc, test_end or holdout, cfg, new_items_only=False)
        report["command"] = " ".join(["rebuy", *sys.argv[1:]])
        write_json(report, out)
    rows: list[tuple[str, str]] = []
    vm = report.get("value_models")
    if vm:
        for k, v in vm.get("headline", {}).items():
            rows.append((k, str(v)))
        if vm.get("verdict"):
            rows.append(("verdict", vm["verdict"]))
    rm = report.get("recommender")
    if rm:
        k = rm.get("k", 10)
        for mode, res in rm.get("modes", {}).items():
            model, pop = res["model"], res["popularity"]
            for metric in (f"ndcg@{k}", f"recall@{k}"):
                ratio = model[metric] / pop[metric] if pop[metric] > 0 else float("inf")
                line = f"{model[metric]:.4f} ({ratio:.2f}x popularity"
                own = res.get("own_history", {}).get(metric)
                line += f", own most-bought {own:.4f})" if own is not None else ")"
                rows.append((f"recommender {mode} {metric}", line))
    rows += [("report written to", str(out)), ("seconds", f"{time.perf_counter() - t0:.1f}")]
    typer.echo(_table("rebuy evaluate", rows))


@app.command()
def report(
    scores: Annotated[Path, typer.Option("--scores", help="Scores file written by rebuy score.")],
    out: Annotated[Path, typer.Option("--out", help="HTML report path.")] = Path("report.html"),
    models_dir: ModelsDirOpt = Path("models"),
    transactions: Annotated[str | None, typer.Option("--transactions", help="Transactions for KPIs (optional).")] = None,
    evaluation: Annotated[Path | None, typer.Option("--evaluation", help="evaluate report JSON (optional).")] = None,
    uplift: Annotated[Path | None, typer.Option("--uplift", help="rebuy measure JSON for 'What worked' (optional).")] = None,
    offers: Annotated[str | None, typer.Option(
        "--offers", help="Offer log for the KPIs by campaign (optional; with --transactions).")] = None,
    exports: Annotated[Path | None, typer.Option(
        "--exports", help="The directory rebuy score --exports wrote (default: beside the scores).")] = None,
    customers: Annotated[str | None, typer.Option(
        "--customers", help="Customers table, for the KPIs by acquisition channel (optional).")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write the nightly HTML report (what worked, data summary, KPIs, segments, validation, offers)."""
    _setup_logging(verbose)
    from rebuy.report import build_report

    t0 = time.perf_counter()
    with _handled(verbose):
        path = build_report(models_dir=models_dir, scores=scores, out=out, transactions=transactions, evaluation=evaluation,
                            uplift=uplift, offer_log=offers, exports_dir=exports, customers=customers)
    typer.echo(_table("rebuy report", [("report written to", str(path)), ("seconds", f"{time.perf_counter() - t0:.1f}")]))


@app.command()
def doctor(
    models_dir: Annotated[Path | None, typer.Option("--models-dir", help="Check that models/latest loads.")] = None,
    transactions: Annotated[str | None, typer.Option("--transactions", help="Check that these read and clean.")] = None,
    db: Annotated[str | None, typer.Option("--db", help="Check this DuckDB file or postgresql:// URL.")] = None,
    config: ConfigOpt = None,
    column: ColumnOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Check the environment, the bundle, the data paths and the database before a nightly run."""
    _setup_logging(verbose)
    from rebuy.doctor import run_checks

    with _handled(verbose):
        cfg = _config(config, None, None, column)
        checks = run_checks(models_dir=models_dir, transactions_source=transactions, config=cfg, db=db)
    typer.echo(_table("rebuy doctor", [(f"{c.status:<4}  {c.name}", c.detail) for c in checks]))
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        _fail(f"{len(failed)} check(s) failed: {', '.join(failed)}")


@app.command("config")
def show_config(config: ConfigOpt = None, verbose: VerboseOpt = False) -> None:
    """Validate a config file and print the effective configuration as JSON."""
    with _handled(verbose):
        cfg = load_config(config)
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


if __name__ == "__main__":  # pragma: no cover
    app()
