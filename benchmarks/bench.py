"""rebuy vs the reference pipeline a team would write with lifetimes + implicit directly.

One run, on the same simulated data (``rebuy.simulate``: ~4 transaction lines per customer, 20k
products), at each ``--sizes`` customer count:

* **reference** (one fresh subprocess per run): ``pd.read_parquet``;
  ``lifetimes.utils.summary_data_from_transaction_data``; ``BetaGeoFitter.fit`` on every customer;
  ``GammaGammaFitter.fit`` on the repeat customers; P(alive), expected purchases (the config's
  horizons), expected average profit and ``customer_lifetime_value`` for every customer; the
  customers x products matrix with the same weighting, implicit ALS fit and implicit's batch
  ``recommend(N=10, filter_already_liked_items=True)`` for every customer; a Parquet score file.
* **rebuy** (one fresh subprocess per run): the library functions behind the CLI,
  ``rebuy.train.train(path, config, models_dir=...)`` then ``rebuy.scoring.run_scoring(path,
  models_dir=..., out=..., customers=...)`` (no DuckDB). Stage times come from rebuy's own
  ``progress.step`` log records (start and end timestamps, not the rounded message).

BLAS is limited to one thread in both subprocesses (``OPENBLAS_NUM_THREADS=1`` etc. plus
threadpoolctl); implicit's own OpenMP threads keep their default (every core) on both sides.
Peak memory: the kernel's ``ru_maxrss`` of each worker process (``os.wait4``), plus an RSS sampler
(/proc/self/statm every 20 ms) in the worker for the peak inside each stage.

Budget (``make bench`` must stay under 15 minutes on 2 cores): ``--repeats`` full runs per side at
every size below ``--large``; at sizes >= ``--large`` one full run per side, then up to
``--repeats - 1`` more runs per side with the recommender disabled (value-model stages only), as
long as the estimated time stays within ``--budget-minutes``. Medians are over the runs that have
the stage. ``--als-iterations`` (default: rebuy's config) sets the ALS iterations of BOTH sides;
the reference records seconds per ALS iteration, so the configured iteration count can be
extrapolated and is reported as such.

    .venv/bin/python benchmarks/bench.py --sizes 100000 1000000 --repeats 3

Writes ``benchmarks/results/latest.json`` and ``latest.md`` (the README table).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import inspect
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED = 7
N_PRODUCTS = 20_000
MEAN_LINES = 1.08  # 1 + Poisson(0.08) distinct products per order: ~3.7 orders x 1.08 = ~4 lines/customer
BLAS_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}

log = logging.getLogger("bench")


# ============================================================================ worker side
class Recorder:
    """Stage wall times (time.time()) and a background RSS sampler for per-stage peaks."""

    def __init__(self, interval: float = 0.02):
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.samples: list[tuple[float, int]] = []
        self.stages: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._rss()))
            self._stop.wait(self._interval)

    def _rss(self) -> int:
        """Current resident set size in bytes (Linux /proc; psutil elsewhere)."""
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            import psutil

            return int(psutil.Process().memory_info().rss)

    @contextmanager
    def stage(self, name: str):
        t0 = time.time()
        yield
        self.add(name, t0, time.time())

    def add(self, name: str, t0: float, t1: float) -> None:
        self.stages.append({"name": name, "t0": t0, "t1": t1, "seconds": t1 - t0})

    def finish(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), self._rss()))
        for s in self.stages:
            inside = [r for t, r in self.samples if s["t0"] - 0.03 <= t <= s["t1"] + 0.03]
            s["peak_rss_mb"] = max(inside) / 2**20 if inside else None
            before = [r for t, r in self.samples if t <= s["t0"]]
            s["start_rss_mb"] = before[-1] / 2**20 if before else None  # growth in the stage = peak - start
        return {
            "stages": self.stages,
            "ru_maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "sampled_peak_rss_mb": max(r for _, r in self.samples) / 2**20,
        }


def _config(args: argparse.Namespace):
    from rebuy.config import load_config

    overrides: dict[str, Any] = {}
    if args.als_iterations:
        overrides["recommend.iterations"] = args.als_iterations
    if args.no_recommender:
        overrides["recommend.enabled"] = False
    return load_config(None, overrides=overrides or None)


def _as_of(tx_path: Path) -> str:
    truth = json.loads(tx_path.with_name(tx_path.stem + "_truth.json").read_text())
    return truth["end"]


def worker_reference(args: argparse.Namespace, rec: Recorder) -> dict[str, Any]:
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data
    from threadpoolctl import threadpool_limits

    cfg = _config(args)
    tx_path = Path(args.data)
    as_of = pd.Timestamp(_as_of(tx_path))
    # rebuy's time unit: weeks = days / 7 exactly -> lifetimes' freq="D", freq_multiplier=7
    unit_days = cfg.time_unit_days
    out: dict[str, Any] = {}
    t_start = time.time()
    with threadpool_limits(limits=1, user_api="blas"):
        with rec.stage("load"):
            tx = pd.read_parquet(tx_path)
        with rec.stage("rfm_summary"):
            s = summary_data_from_transaction_data(
                tx, "customer_id", "timestamp", monetary_value_col="amount", observation_period_end=as_of,
                freq="D", freq_multiplier=int(unit_days),
            )
        with rec.stage("bgnbd_fit"):
            bgf = BetaGeoFitter(penalizer_coef=cfg.bgnbd.penalizer).fit(s["frequency"], s["recency"], s["T"])
        with rec.stage("gamma_gamma_fit"):
            rep = s[(s["frequency"] > 0) & (s["monetary_value"] > 0)]
            ggf = GammaGammaFitter(penalizer_coef=cfg.gamma_gamma.penalizer).fit(rep["frequency"], rep["monetary_value"])
        with rec.stage("score_value"):
            x, rcy, T, m = s["frequency"], s["recency"], s["T"], s["monetary_value"]
            scores = pd.DataFrame(index=s.index)
            scores["p_alive"] = bgf.conditional_probability_alive(x, rcy, T)
            for h in cfg.clv.horizons_days:
                scores[f"expected_purchases_{h}d"] = bgf.conditional_expected_number_of_purchases_up_to_time(
                    h / unit_days, x, rcy, T
                )
            scores["expected_order_value"] = ggf.conditional_expected_average_profit(x, m)
            scores[f"clv_{cfg.clv.horizon_months}m"] = cfg.clv.margin * ggf.customer_lifetime_value(
                bgf, x, rcy, T, m, time=cfg.clv.horizon_months, discount_rate=cfg.clv.discount_rate,
                freq="W" if unit_days == 7 else "D",
            ).to_numpy()
        rc = cfg.recommend
        if rc.enabled:
            iter_times: list[float] = []
            with rec.stage("recommender_fit"):
                c_codes, c_uniq = pd.factorize(tx["customer_id"], sort=True)
                p_codes, p_uniq = pd.factorize(tx["product_id"], sort=True)
                counts = sp.csr_matrix(
                    (np.ones(len(tx)), (c_codes, p_codes)), shape=(len(c_uniq), len(p_uniq))
                )
                counts.sum_duplicates()
                if rc.weighting == "bm25":
                    w = bm25_weight(counts, K1=rc.bm25_k1, B=rc.bm25_b)
                elif rc.weighting == "tfidf":
                    w = tfidf_weight(counts)
                elif rc.weighting == "log":
                    w = counts.copy()
                    w.data = np.log1p(w.data)
                else:
                    w = counts
                user_items = sp.csr_matrix(w, dtype=np.float32)
                user_items.data *= np.float32(rc.alpha)
                model = AlternatingLeastSquares(
                    factors=min(rc.factors, len(p_uniq) - 1), regularization=rc.regularization, alpha=1.0,
                    iterations=rc.iterations, random_state=rc.random_state,
                )
                t_fit = time.time()
                model.fit(user_items, show_progress=False, callback=lambda *a: iter_times.append(time.time()))
            steps = np.diff([t_fit, *iter_times]) if iter_times else np.array([])
            out["als_seconds_per_iteration"] = float(np.median(steps)) if len(steps) else None
            out["als_iterations"] = int(rc.iterations)
            with rec.stage("recommend"):
                ids, _ = model.recommend(
                    np.arange(len(c_uniq)), user_items, N=rc.n_items, filter_already_liked_items=True
                )
            recs = pd.Series(list(np.asarray(p_uniq, dtype=object)[ids]), index=pd.Index(c_uniq, name="customer_id"))
        with rec.stage("write"):
            if rc.enabled:
                scores["recommended_products"] = recs.reindex(scores.index).to_numpy()
            scores.reset_index().to_parquet(Path(args.workdir) / "reference_scores.parquet", index=False)
    out["total_seconds"] = time.time() - t_start
    out["params"] = {
        "bgnbd": {k: float(v) for k, v in bgf.params_.items()},
        "gamma_gamma": {k: float(v) for k, v in ggf.params_.items()},
    }
    out["n_customers"] = int(len(s))
    out["n_lines"] = int(len(tx))
    return out


class _StepCapture(logging.Handler):
    """Turns rebuy.progress.step's '<desc> ...' / '<desc> done in' records into recorder stages."""

    def __init__(self, rec: Recorder):
        super().__init__(logging.INFO)
        self.rec = rec
        self.phase = ""
        self.open: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if not record.args or not isinstance(record.args, tuple):
            return
        desc = f"{self.phase}.{record.args[0]}"
        if record.msg == "%s ...":
            self.open[desc] = record.created
        elif record.msg.startswith("%s done in") and desc in self.open:
            self.rec.add(desc, self.open.pop(desc), record.created)


def worker_rebuy(args: argparse.Namespace, rec: Recorder) -> dict[str, Any]:
    import shutil
    import warnings

    warnings.filterwarnings("ignore")
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from rebuy.scoring import run_scoring
    from rebuy.train import train

    cfg = _config(args)
    tx_path = Path(args.data)
    cust_path = tx_path.with_name(tx_path.stem + "_customers" + "".join(tx_path.suffixes))
    models_dir = Path(args.workdir) / "rebuy_models"
    shutil.rmtree(models_dir, ignore_errors=True)
    cap = _StepCapture(rec)
    lg = logging.getLogger("rebuy")
    lg.setLevel(logging.INFO)
    lg.addHandler(cap)
    out: dict[str, Any] = {}
    t_start = time.time()
    with threadpool_limits(limits=1, user_api="blas"):
        cap.phase = "train"
        with rec.stage("train"):
            # as `rebuy train --customers` does (validates the customers table) when train() takes it
            kw = {"customers": cust_path} if "customers" in inspect.signature(train).parameters else {}
            result = train(tx_path, cfg, models_dir=models_dir, **kw)
        params = result.manifest["params"]
        out["purchase_model"] = params.get("purchase_model", "bgnbd")
        out["params"] = {k: params[k] for k in ("bgnbd", "gamma_gamma") if k in params}
        out["n_customers"] = int(result.manifest["training_data"]["customers"])
        out["n_lines"] = int(result.manifest["training_data"]["rows"])
        del result
        gc.collect()
        cap.phase = "score"
        with rec.stage("score"):
            run = run_scoring(tx_path, models_dir=models_dir, out=Path(args.workdir) / "rebuy_scores.parquet",
                              customers=cust_path, db=None)
        out["scored_rows"] = int(len(run.scores))
        out["offer_types"] = {str(k): int(v) for k, v in run.scores["offer_type"].value_counts().items()}
        del run
    out["total_seconds"] = time.time() - t_start
    _ = pd  # imported for parity of import cost with the reference worker
    return out


def run_worker(args: argparse.Namespace, workers: dict[str, Any] | None = None) -> None:
    """Run the worker ``args.worker`` names (``workers``: name -> function(args, Recorder); default
    this script's reference and rebuy sides) and write its result and stages to ``args.result``."""
    rec = Recorder()
    fn = (workers or {"reference": worker_reference, "rebuy": worker_rebuy})[args.worker]
    try:
        out = fn(args, rec)
        out["ok"] = True
    except Exception as e:  # noqa: BLE001 - reported to the parent, which records the failure
        import traceback

        traceback.print_exc()
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    out.update(rec.finish())
    Path(args.result).write_text(json.dumps(out, indent=1, default=str))


# ============================================================================ parent side
def simulate_to(n: int, tx_path: Path) -> None:
    """Simulated shop with ~4 lines per customer written to ``tx_path`` (+ customers table beside it)."""
    from rebuy.simulate import simulate, write_simulation

    sim = simulate(n, seed=SEED, n_products=N_PRODUCTS, mean_lines=MEAN_LINES, events=False)
    write_simulation(sim, tx_path, include_latent=False)


def _simulate(n: int, workdir: Path) -> Path:
    """Cached per size/seed/knobs in ``workdir``; simulated in a subprocess so that this (parent)
    process stays small: a forked child starts with its parent's ru_maxrss on Linux."""
    d = workdir / f"sim_{n}_s{SEED}_p{N_PRODUCTS}_l{MEAN_LINES}"
    tx_path = d / "shop.parquet"
    if (d / "shop_truth.json").exists() and tx_path.exists():
        return tx_path
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--simulate", str(n), "--data", str(tx_path)],
                   check=True)
    log.info("simulated %d customers in %.1f s", n, time.perf_counter() - t0)
    return tx_path


def _spawn(side: str, tx_path: Path, workdir: Path, args: argparse.Namespace, tag: str,
           no_recommender: bool) -> dict[str, Any]:
    result = workdir / f"result_{tag}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--data", str(tx_path),
           "--workdir", str(workdir), "--result", str(result)]
    if args.als_iterations:
        cmd += ["--als-iterations", str(args.als_iterations)]
    if no_recommender:
        cmd.append("--no-recommender")
    parent_maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    env = {**os.environ, **BLAS_ENV}
    logf = open(workdir / f"worker_{tag}.log", "w")  # noqa: SIM115 - closed below
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    logf.close()
    wall = time.time() - t0
    out: dict[str, Any] = json.loads(result.read_text()) if result.exists() else {"ok": False}
    if proc.returncode != 0 and out.get("ok"):
        out["ok"] = False
    if not out.get("ok"):
        out.setdefault("error", f"worker exited with {proc.returncode}; see {workdir / f'worker_{tag}.log'}")
        log.error("%s %s failed: %s", side, tag, out["error"])
    out["process_wall_seconds"] = wall
    out["peak_rss_mb"] = ru.ru_maxrss / 1024  # kernel's max RSS of that child (KiB on Linux)
    out["parent_maxrss_mb_at_spawn"] = parent_maxrss_mb  # a lower bound the child's figure starts from
    out["recommender"] = not no_recommender
    return out


def _stage_seconds(run: dict[str, Any], names: list[str]) -> float | None:
    """Sum of the named stages in one run (None when any is missing)."""
    by = {}
    for s in run.get("stages", []):
        by[s["name"]] = by.get(s["name"], 0.0) + s["seconds"]
    if "train.BG/NBD fit" in by:  # a run of rebuy before issue 11: one BG/NBD fit, no selection
        by.setdefault("train.purchase model fit", by["train.BG/NBD fit"])
        by.setdefault("train.purchase model selection", 0.0)
    if not all(n in by for n in names):
        return None
    return sum(by[n] for n in names)


def _stage_growth(run: dict[str, Any], name: str) -> float | None:
    """RSS added during one stage (peak inside it minus RSS at its start), MB."""
    for st in run.get("stages", []):
        if st["name"] == name and st.get("peak_rss_mb") is not None and st.get("start_rss_mb") is not None:
            return st["peak_rss_mb"] - st["start_rss_mb"]
    return None


def _stage_peak(run: dict[str, Any], names: list[str]) -> float | None:
    peaks = [s["peak_rss_mb"] for s in run.get("stages", []) if s["name"] in names and s.get("peak_rss_mb")]
    return max(peaks) if peaks else None


# Comparison rows: label -> (reference stages, rebuy stages). rebuy stage names are "<phase>.<step desc>".
# Comparison rows: (label, reference stages, rebuy stages, uses value-only runs too). rebuy stage names are
# "<phase>.<step desc>". Rows that depend on the recommender (offers use its cross-sell, the bundle holds it)
# only use the full runs.
PURCHASE_STAGES = ["train.purchase model selection", "train.purchase model fit"]
"""rebuy's purchase-model stages: the candidates compared on holdouts (``purchase_model: auto``) and the fit
of the chosen one on every customer (named ``train.BG/NBD fit`` before issue 11; ``_stage_seconds`` maps it)."""

COMPARISONS: list[tuple[str, list[str], list[str], bool]] = [
    ("load (+ clean for rebuy)", ["load"], ["train.load and clean transactions"], True),
    ("RFM summary", ["rfm_summary"], ["train.RFM summary"], True),
    ("BG/NBD fit (rebuy: purchase-model selection + fit)", ["bgnbd_fit"], PURCHASE_STAGES, True),
    ("Gamma-Gamma fit", ["gamma_gamma_fit"], ["train.Gamma-Gamma fit"], True),
    ("BG/NBD + Gamma-Gamma fit", ["bgnbd_fit", "gamma_gamma_fit"], [*PURCHASE_STAGES, "train.Gamma-Gamma fit"], True),
    ("scoring: P(alive), E[purchases], CLV (rebuy: + segment, cluster, offer)", ["score_value"],
     ["score.value models", "score.segments and clusters", "score.offers"], False),
    ("  of which value models only: P(alive), E[purchases], CLV (rebuy `score_value`)", ["score_value"],
     ["score.value models"], True),
    ("recommender fit (matrix + implicit ALS)", ["recommender_fit"], ["train.recommender fit"], False),
    ("top-10 recommendations, every customer", ["recommend"], ["score.recommendations"], False),
    ("end to end (ref. script vs train + score)", ["__total__"], ["train", "score"], False),
]


def _seconds(run: dict[str, Any], names: list[str]) -> float | None:
    if names == ["__total__"]:
        return run.get("total_seconds")
    return _stage_seconds(run, names)


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else float("inf")


def summarise(size_runs: dict[str, list[dict[str, Any]]], config_iterations: int | None = None) -> dict[str, Any]:
    ref = [r for r in size_runs["reference"] if r.get("ok")]
    reb = [r for r in size_runs["rebuy"] if r.get("ok")]
    rows = []
    full_ref = [r for r in ref if r.get("recommender")]
    full_reb = [r for r in reb if r.get("recommender")]
    for label, ref_names, reb_names, all_runs in COMPARISONS:
        ref_runs, reb_runs = (ref, reb) if all_runs else (full_ref, full_reb)
        rs = [_seconds(r, ref_names) for r in ref_runs]
        bs = [_seconds(r, reb_names) for r in reb_runs]
        rs_ = [x for x in rs if x is not None]
        bs_ = [x for x in bs if x is not None]
        mr, mb = _median(rs_), _median(bs_)
        row = {
            "stage": label,
            "reference_seconds": rs_, "rebuy_seconds": bs_,
            "reference_median": mr, "rebuy_median": mb,
            "ratio": (mr / mb) if mr and mb else None,
            "runs": [len(rs_), len(bs_)],
            "reference_stage_peak_mb": _median([r["peak_rss_mb"] if ref_names == ["__total__"] else
                                                _stage_peak(r, ref_names) for r in ref_runs]),
            "rebuy_stage_peak_mb": _median([_stage_peak(r, reb_names) for r in reb_runs]),
        }
        rows.append(row)
    # end to end without the shared ALS fit (identical implicit call on both sides)
    e2e_ref = [r["total_seconds"] - (_stage_seconds(r, ["recommender_fit"]) or 0) for r in full_ref]
    e2e_reb = [_stage_seconds(r, ["train", "score"]) - (_stage_seconds(r, ["train.recommender fit"]) or 0)
               for r in full_reb]
    extra = {}
    if e2e_ref and e2e_reb:
        extra["end_to_end_excluding_recommender_fit"] = {
            "reference_median": _median(e2e_ref), "rebuy_median": _median(e2e_reb),
            "ratio": _median(e2e_ref) / _median(e2e_reb),
        }
    breakdown: dict[str, dict[str, dict[str, Any]]] = {}
    for side, runs in (("reference", full_ref), ("rebuy", full_reb)):
        names: list[str] = []
        for r in runs:
            names += [st["name"] for st in r.get("stages", []) if st["name"] not in names]
        breakdown[side] = {
            nm: {"median_seconds": _median([_stage_seconds(r, [nm]) for r in runs]),
                 "median_peak_rss_mb": _median([_stage_peak(r, [nm]) for r in runs]),
                 "runs": sum(_stage_seconds(r, [nm]) is not None for r in runs)}
            for nm in names
        }
    per_iter = _median([r.get("als_seconds_per_iteration") for r in full_ref])
    it_run = (full_ref or [{}])[0].get("als_iterations")
    if per_iter and it_run and config_iterations and config_iterations != it_run and e2e_ref and e2e_reb:
        add = (config_iterations - it_run) * per_iter
        r_ = _median([r["total_seconds"] for r in full_ref]) + add
        b_ = _median([_stage_seconds(r, ["train", "score"]) for r in full_reb]) + add
        extra["end_to_end_extrapolated_to_config_iterations"] = {
            "iterations": config_iterations, "added_seconds_each_side": add,
            "reference_median": r_, "rebuy_median": b_, "ratio": r_ / b_,
        }
    extra["recommend_rss_growth_mb"] = {
        "reference": _median([_stage_growth(r, "recommend") for r in full_ref]),
        "rebuy": _median([_stage_growth(r, "score.recommendations") for r in full_reb]),
    }
    params = {}
    if ref and reb:
        for model in ("bgnbd", "gamma_gamma"):
            if model not in reb[0]["params"]:  # auto chose another purchase model: nothing to compare with lifetimes
                continue
            pr, pb = ref[0]["params"][model], reb[0]["params"][model]
            params[model] = {k: {"reference": pr[k], "rebuy": pb[k], "rel_diff": _rel(pb[k], pr[k])} for k in pr}
    return {
        "rows": rows,
        "extra": extra,
        "breakdown": breakdown,
        "params": params,
        "peak_rss_mb": {
            "reference_full": _median([r["peak_rss_mb"] for r in full_ref]),
            "rebuy_full": _median([r["peak_rss_mb"] for r in full_reb]),
            "reference_no_recommender": _median([r["peak_rss_mb"] for r in ref if not r.get("recommender")]),
            "rebuy_no_recommender": _median([r["peak_rss_mb"] for r in reb if not r.get("recommender")]),
        },
        "als_seconds_per_iteration": _median([r.get("als_seconds_per_iteration") for r in full_ref]),
        "n_customers": (ref or reb or [{}])[0].get("n_customers"),
        "n_lines": (ref or reb or [{}])[0].get("n_lines"),
        "failures": [r.get("error") for side in size_runs.values() for r in side if not r.get("ok")],
    }


def _fmt_s(x: float | None) -> str:
    return "—" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.0f}")


def _fmt_r(x: float | None) -> str:
    return "—" if x is None else (f"{x:.1f}×" if x < 100 else f"{x:.0f}×")


def _growth(a: float | None, b: float | None) -> str:
    return _fmt_r(b / a) if a and b else "—"


def _fmt_mb(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


TARGETS = [
    ("RFM summary", "RFM summary", 10.0),
    ("BG/NBD + Gamma-Gamma fit", "BG/NBD + Gamma-Gamma fit", 5.0),
    ("scoring", "scoring: P(alive), E[purchases], CLV (rebuy: + segment, cluster, offer)", 5.0),
    ("top-10 recommendations", "top-10 recommendations, every customer", 1.0),
    ("end to end", "end to end (ref. script vs train + score)", 5.0),
]


def check_targets(summ: dict[str, Any]) -> list[dict[str, Any]]:
    by = {r["stage"]: r for r in summ["rows"]}
    out = []
    for name, label, need in TARGETS:
        ratio = by[label]["ratio"] if label in by else None
        out.append({"target": f"{name} >= {need:g}x", "ratio": ratio, "met": bool(ratio is not None and ratio >= need)})
    maxrel = max((v["rel_diff"] for m in summ["params"].values() for v in m.values()), default=None)
    out.append({"target": "fitted parameters within 1e-3 relative of lifetimes' full fit", "max_rel_diff": maxrel,
                "met": bool(maxrel is not None and maxrel <= 1e-3)})
    pk = summ["peak_rss_mb"]
    if pk["reference_full"] and pk["rebuy_full"]:
        out.append({"target": "end-to-end peak memory <= reference", "reference_mb": pk["reference_full"],
                    "rebuy_mb": pk["rebuy_full"], "met": bool(pk["rebuy_full"] <= pk["reference_full"])})
    return out


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    from importlib.metadata import version  # no heavy imports in the parent (see _simulate)

    return {
        "nproc": os.cpu_count(), "cpu": cpu, "ram": mem, "python": platform.python_version(),
        **{p: version(p) for p in ("numpy", "pandas", "lifetimes", "implicit")},
        "load_average_at_start": os.getloadavg(),
    }


def markdown(res: dict[str, Any]) -> str:
    L: list[str] = []
    m = res["machine"]
    L.append(f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram']} RAM; Python {m['python']}, numpy {m['numpy']}, "
             f"pandas {m['pandas']}, lifetimes {m['lifetimes']}, implicit {m['implicit']}. "
             f"Load average at start {', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}. "
             f"Run {res['started']} UTC, {res['wall_seconds'] / 60:.1f} min wall in all.")
    L.append("")
    L.append(f"Settings: {res['settings_note']}")
    for size, summ in res["sizes"].items():
        L.append("")
        L.append(f"### {int(size):,} customers, {summ['n_lines']:,} transaction lines, {N_PRODUCTS:,} products")
        L.append("")
        L.append("| stage | reference s (median) | rebuy s (median) | ratio ref/rebuy | runs ref/rebuy | stage peak RSS MB ref / rebuy |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for r in summ["rows"]:
            L.append(f"| {r['stage']} | {_fmt_s(r['reference_median'])} | {_fmt_s(r['rebuy_median'])} | "
                     f"**{_fmt_r(r['ratio'])}** | {r['runs'][0]}/{r['runs'][1]} | "
                     f"{_fmt_mb(r['reference_stage_peak_mb'])} / {_fmt_mb(r['rebuy_stage_peak_mb'])} |")
        ex = summ["extra"].get("end_to_end_excluding_recommender_fit")
        if ex:
            L.append(f"| end to end without the recommender fit (same implicit ALS on both sides) | "
                     f"{_fmt_s(ex['reference_median'])} | {_fmt_s(ex['rebuy_median'])} | **{_fmt_r(ex['ratio'])}** | | |")
        ex = summ["extra"].get("end_to_end_extrapolated_to_config_iterations")
        if ex:
            L.append(f"| end to end at the config's {ex['iterations']} ALS iterations (EXTRAPOLATED: + "
                     f"{ex['added_seconds_each_side']:.0f} s on each side from the measured s/iteration) | "
                     f"{_fmt_s(ex['reference_median'])} | {_fmt_s(ex['rebuy_median'])} | **{_fmt_r(ex['ratio'])}** | | |")
        pk = summ["peak_rss_mb"]
        L.append("")
        L.append(f"Peak RSS of the whole process (kernel ru_maxrss), full pipeline: reference {_fmt_mb(pk['reference_full'])} MB, "
                 f"rebuy train+score {_fmt_mb(pk['rebuy_full'])} MB"
                 + (f"; without recommender: reference {_fmt_mb(pk['reference_no_recommender'])} MB, rebuy "
                    f"{_fmt_mb(pk['rebuy_no_recommender'])} MB" if pk["reference_no_recommender"] else "") + ".")
        g = summ["extra"].get("recommend_rss_growth_mb") or {}
        if g.get("reference") is not None and g.get("rebuy") is not None:
            L.append(f"Memory added during the top-10 stage (stage peak minus RSS at its start): reference "
                     f"{_fmt_mb(g['reference'])} MB, rebuy {_fmt_mb(g['rebuy'])} MB.")
        if summ.get("als_seconds_per_iteration"):
            L.append(f"implicit ALS: {summ['als_seconds_per_iteration']:.2f} s per iteration (reference side).")
        if summ["params"]:
            parts = []
            for ps in summ["params"].values():
                parts.append(", ".join(f"{k} {v['reference']:.5g} vs {v['rebuy']:.5g} ({v['rel_diff']:.1e})" for k, v in ps.items()))
            L.append("Fitted parameters, lifetimes full fit vs rebuy (relative difference): " + "; ".join(parts) + ".")
        tg = summ.get("targets", []) if int(size) == max(int(k) for k in res["sizes"]) else []
        if tg:
            L.append("")
            L.append(f"Targets (issue 7, at {int(size):,} customers): " + "; ".join(
                f"{t['target']}: {'MET' if t['met'] else 'NOT MET'}"
                + (f" ({_fmt_r(t['ratio'])})" if t.get("ratio") is not None else "")
                + (f" (max {t['max_rel_diff']:.1e})" if t.get("max_rel_diff") is not None else "")
                + (f" ({_fmt_mb(t['rebuy_mb'])} vs {_fmt_mb(t['reference_mb'])} MB)" if t.get("rebuy_mb") else "")
                for t in tg) + ".")
        L.append("")
        L.append("<details><summary>every stage of the full runs, median seconds (peak RSS MB)</summary>")
        L.append("")
        for side, stages in summ["breakdown"].items():
            L.append(f"- {side}: " + "; ".join(
                f"{nm} {_fmt_s(v['median_seconds'])} s ({_fmt_mb(v['median_peak_rss_mb'])})" for nm, v in stages.items()))
        L.append("")
        L.append("</details>")
        if summ["failures"]:
            L.append("")
            L.append("FAILED runs: " + "; ".join(str(f) for f in summ["failures"]))
    if len(res["sizes"]) >= 2:
        sizes = sorted(res["sizes"], key=int)
        a, b = res["sizes"][sizes[0]], res["sizes"][sizes[-1]]
        L.append("")
        L.append(f"### Growth {int(sizes[0]):,} → {int(sizes[-1]):,} customers "
                 f"(transaction lines ×{b['n_lines'] / a['n_lines']:.1f})")
        L.append("")
        L.append("| stage | reference time × | rebuy time × |")
        L.append("|---|---:|---:|")
        for ra, rb in zip(a["rows"], b["rows"], strict=True):
            L.append(f"| {ra['stage']} | {_growth(ra['reference_median'], rb['reference_median'])} | "
                     f"{_growth(ra['rebuy_median'], rb['rebuy_median'])} |")
        pa, pb = a["peak_rss_mb"], b["peak_rss_mb"]
        if all((pa["reference_full"], pb["reference_full"], pa["rebuy_full"], pb["rebuy_full"])):
            L.append(f"| peak RSS (full pipeline) | {_fmt_r(pb['reference_full'] / pa['reference_full'])} | "
                     f"{_fmt_r(pb['rebuy_full'] / pa['rebuy_full'])} |")
    return "\n".join(L) + "\n"


def run_parent(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    t_all = time.time()
    budget = args.budget_minutes * 60
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    from rebuy.config import load_config

    cfg = load_config(None)
    rc = cfg.recommend
    iters = args.als_iterations or rc.iterations
    res: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"), "machine": machine(), "sizes": {}, "runs": {},
        "settings": {
            "seed": SEED, "n_products": N_PRODUCTS, "mean_lines": MEAN_LINES, "time_unit": cfg.time_unit,
            "als": {"factors": rc.factors, "iterations_run": iters, "iterations_config": rc.iterations,
                    "regularization": rc.regularization, "alpha": rc.alpha, "weighting": rc.weighting},
            "repeats": args.repeats, "large": args.large, "budget_minutes": args.budget_minutes,
            "blas_threads": 1, "rebuy_entry": "rebuy.train.train() + rebuy.scoring.run_scoring() (library functions)",
            "memory": "ru_maxrss of each worker subprocess via os.wait4 (kernel), stage peaks by a 20 ms /proc/self/statm RSS sampler",
        },
    }
    tx_paths = {n: _simulate(n, workdir / "data") for n in args.sizes}
    plan_note = []
    for n in args.sizes:
        sdir = workdir / f"n{n}"
        sdir.mkdir(exist_ok=True)
        runs: dict[str, list[dict[str, Any]]] = {"reference": [], "rebuy": []}
        n_full = args.repeats if n < args.large else 1
        last: dict[tuple[str, bool], float] = {}
        i = 0
        plan = [(True, k) for k in range(n_full)] + ([(False, k) for k in range(args.repeats - n_full)] if n >= args.large else [])
        for full, k in plan:
            order = ("reference", "rebuy") if k % 2 == 0 else ("rebuy", "reference")
            # a value-only run is estimated at 35% of that side's full run until one has been timed
            # (measured: 17-27% at 1M customers)
            need = sum(last.get((s, full), 0.35 * last.get((s, True), 0)) for s in order)
            if (k > 0 or not full) and time.time() - t_all + need > budget:
                plan_note.append(f"{n:,}: skipped repeat {k + 1} ({'full' if full else 'no recommender'}): budget")
                log.info("skip %s repeat %d at %d: budget", "full" if full else "value-only", k + 1, n)
                continue
            for side in order:
                i += 1
                tag = f"{side}_{'full' if full else 'value'}_{k}"
                log.info("n=%d %s ...", n, tag)
                t0 = time.time()
                out = _spawn(side, tx_paths[n], sdir, args, tag, no_recommender=not full)
                last[(side, full)] = time.time() - t0
                log.info("n=%d %s: %.1f s wall, peak %.0f MB", n, tag, last[(side, full)], out["peak_rss_mb"])
                runs[side].append(out)
        summ = summarise(runs, rc.iterations)
        summ["targets"] = check_targets(summ)
        res["sizes"][str(n)] = summ
        res["runs"][str(n)] = runs
    res["wall_seconds"] = time.time() - t_all
    full_note = (f"{args.repeats} full runs per side below {args.large:,} customers; at {args.large:,}+ one full run per "
                 f"side plus up to {args.repeats - 1} value-model-only runs (recommender disabled on both sides)")
    res["settings_note"] = (
        f"simulate(seed={SEED}, n_products={N_PRODUCTS:,}, mean_lines={MEAN_LINES}); rebuy's default config "
        f"(time unit {cfg.time_unit}; ALS factors {rc.factors}, regularization {rc.regularization}, alpha {rc.alpha}, "
        f"{rc.weighting} weighting, top {rc.n_items}) with ALS iterations {iters}"
        + (f" on both sides (config: {rc.iterations})" if iters != rc.iterations else "")
        + f"; BLAS 1 thread on both sides; {full_note}. rebuy = train() then run_scoring() with the customers table "
        "(library functions, one process). Ratios are medians of the runs that have the stage. "
        + (" ".join(plan_note) if plan_note else "")
    )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(res, indent=1, default=str))
    md = markdown(res)
    (out_dir / "latest.md").write_text(md)
    sys.stdout.write(md)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large", type=int, default=1_000_000, help="sizes from here get one full run per side")
    ap.add_argument("--budget-minutes", type=float, default=13.5)
    ap.add_argument("--als-iterations", type=int, default=None, help="ALS iterations for both sides")
    ap.add_argument("--workdir", default="/tmp/rebuy_bench")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--worker", choices=["reference", "rebuy"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--no-recommender", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--render", metavar="JSON", help="only re-summarise a results JSON and rewrite latest.md/json")
    ap.add_argument("--simulate", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.simulate:
        simulate_to(args.simulate, Path(args.data))
    elif args.render:
        res = json.loads(Path(args.render).read_text())
        it = res["settings"]["als"]["iterations_config"]
        for n, runs in res["runs"].items():
            summ = summarise(runs, it)
            summ["targets"] = check_targets(summ)
            res["sizes"][n] = summ
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "latest.json").write_text(json.dumps(res, indent=1, default=str))
        (out_dir / "latest.md").write_text(markdown(res))
        sys.stdout.write(markdown(res))
    elif args.worker:
        run_worker(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
