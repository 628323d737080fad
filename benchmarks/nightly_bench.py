"""The nightly job against the glue a team writes by hand (issue 15's targets), one run, same data.

Scenarios, each side in a fresh subprocess on the same simulated shop (``bench.py``'s data: ~4
lines per customer, 20,000 products), BLAS limited to one thread on every side:

* ``value`` (no recommender), at every ``--value-sizes`` size, ``--repeats`` runs per side:
  - **glue**: ``bench.py``'s lifetimes reference (read the Parquet, ``summary_data_from_transaction_data``,
    ``BetaGeoFitter``/``GammaGammaFitter`` on every customer, P(alive), expected purchases, CLV,
    a Parquet score file);
  - **floor**: the physical floor: DuckDB reads the same Parquet and writes one group-by per
    customer (lines, purchase days, first and last purchase, spend) to Parquet;
  - **rebuy**: ``rebuy run`` as the nightly job calls it (``rebuy.nightly.run_night``: train, score
    and publish in one process, with the customers table, ``recommend.enabled: false``);
  - **rebuy, a night without training** (one run per size): ``run_night(train=False)`` on the bundle
    the previous rebuy run wrote (``operations.train_every_days`` is 7: six nights in seven).
* ``products`` at ``--products-size`` customers, one run per side:
  - **glue** as above plus implicit at its own defaults: the customers x products count matrix,
    ``bm25_weight`` (K1 100, B 0.8), ``AlternatingLeastSquares()`` (100 factors, 15 iterations,
    regularization 0.01) and ``recommend(every customer, N=10, filter_already_liked_items=True)``;
  - **rebuy**: ``rebuy run`` at rebuy's defaults (the recommender as configured: ALS, 128 factors,
    40 iterations, tf-idf), the night's recommendations for every customer in the score table.

``--growth`` instead runs the value scenario once per side at ``--growth-sizes`` (100k, 1M, 3M) for
the growth table.

    .venv/bin/python benchmarks/nightly_bench.py                      # make bench
    .venv/bin/python benchmarks/nightly_bench.py --growth             # make bench-growth

Writes ``benchmarks/results/nightly.json`` / ``nightly.md`` (``growth.json`` / ``growth.md``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the shared recorder, data and reference pipeline

log = logging.getLogger("nightly_bench")
SIDES = ("glue", "floor", "rebuy", "rebuy_night")
TARGETS = {"value": 5.0, "products": 3.0}
"""Issue 15: end to end, glue seconds / rebuy seconds."""


# ============================================================================ workers
def _worker_glue(args: argparse.Namespace, rec: bench.Recorder) -> dict[str, Any]:
    ns = argparse.Namespace(data=args.data, workdir=args.workdir, als_iterations=None, no_recommender=True)
    out = bench.worker_reference(ns, rec)  # its total_seconds: load to the score file, imports excluded
    if args.products:
        t0 = time.time()
        out.update(_implicit_defaults(args, rec))
        out["total_seconds"] += time.time() - t0
    return out


def _implicit_defaults(args: argparse.Namespace, rec: bench.Recorder) -> dict[str, Any]:
    """implicit as its documentation shows it, at its defaults: bm25 weighting, ALS(), top 10 for everyone."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import bm25_weight
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        with rec.stage("recommender_load"):
            tx = pd.read_parquet(args.data, columns=["customer_id", "product_id"])
        with rec.stage("recommender_fit"):
            c_codes, c_uniq = pd.factorize(tx["customer_id"], sort=True)
            p_codes, p_uniq = pd.factorize(tx["product_id"], sort=True)
            counts = sp.csr_matrix((np.ones(len(tx), dtype=np.float32), (c_codes, p_codes)),
                                   shape=(len(c_uniq), len(p_uniq)))
            user_items = sp.csr_matrix(bm25_weight(counts), dtype=np.float32)
            model = AlternatingLeastSquares(random_state=0)
            model.fit(user_items, show_progress=False)
        with rec.stage("recommend"):
            ids, _ = model.recommend(np.arange(len(c_uniq)), user_items, N=10, filter_already_liked_items=True)
        with rec.stage("recommend_write"):
            lists = pd.DataFrame({"customer_id": np.asarray(c_uniq, dtype=object),
                                  "recommended_products": list(np.asarray(p_uniq, dtype=object)[ids])})
            lists.to_parquet(Path(args.workdir) / "glue_recommendations.parquet", index=False)
    return {"implicit": {"factors": model.factors, "iterations": model.iterations,
                         "regularization": model.regularization}}


def _worker_floor(args: argparse.Namespace, rec: bench.Recorder) -> dict[str, Any]:
    import duckdb

    out = Path(args.workdir) / "floor.parquet"
    con = duckdb.connect()
    t0 = time.time()
    with rec.stage("floor"):
        con.execute(
            "COPY (SELECT customer_id, count(*) AS lines, count(DISTINCT CAST(timestamp AS DATE)) AS days, "
            "min(timestamp) AS first_purchase, max(timestamp) AS last_purchase, sum(amount) AS spend "
            f"FROM read_parquet('{args.data}') GROUP BY customer_id) TO '{out}' (FORMAT parquet)"
        )
    seconds = time.time() - t0
    return {"total_seconds": seconds, "rows": int(con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0])}


def _worker_rebuy(args: argparse.Namespace, rec: bench.Recorder) -> dict[str, Any]:
    import warnings

    warnings.filterwarnings("ignore")
    from threadpoolctl import threadpool_limits

    from rebuy.config import load_config
    from rebuy.nightly import run_night

    train = args.worker == "rebuy"
    cfg = load_config(None, overrides=None if args.products else {"recommend.enabled": False})
    tx_path = Path(args.data)
    cust_path = tx_path.with_name(tx_path.stem + "_customers" + "".join(tx_path.suffixes))
    work = Path(args.workdir)
    if train:
        shutil.rmtree(work / "rebuy_models", ignore_errors=True)
        shutil.rmtree(work / "rebuy_out", ignore_errors=True)
    cap = bench._StepCapture(rec)
    cap.phase = "run"
    lg = logging.getLogger("rebuy")
    lg.setLevel(logging.INFO)
    lg.addHandler(cap)
    t0 = time.time()
    with threadpool_limits(limits=1, user_api="blas"), rec.stage("run"):
        night = run_night(tx_path, models_dir=work / "rebuy_models", out=work / "rebuy_out" / "scores.parquet",
                          customers=cust_path, config=cfg, train=train)
    scores = night.score.scores
    return {"total_seconds": time.time() - t0, "trained": night.trained is not None, "scored_rows": int(len(scores)),
            "with_recommendations": int(scores["recommended_products"].map(len).gt(0).sum())
            if "recommended_products" in scores.columns else 0}


def run_worker(args: argparse.Namespace) -> None:
    bench.run_worker(args, {"glue": _worker_glue, "floor": _worker_floor, "rebuy": _worker_rebuy,
                            "rebuy_night": _worker_rebuy})


# ============================================================================ parent
def _spawn(side: str, tx_path: Path, workdir: Path, tag: str, products: bool) -> dict[str, Any]:
    result = workdir / f"nightly_{tag}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--data", str(tx_path),
           "--workdir", str(workdir), "--result", str(result)] + (["--products"] if products else [])
    logf = open(workdir / f"nightly_{tag}.log", "w")  # noqa: SIM115 - closed below
    t0 = time.time()
    proc = subprocess.Popen(cmd, env={**os.environ, **bench.BLAS_ENV}, stdout=logf, stderr=subprocess.STDOUT)
    _, status, ru = os.wait4(proc.pid, 0)
    logf.close()
    out: dict[str, Any] = json.loads(result.read_text()) if result.exists() else {"ok": False}
    if os.waitstatus_to_exitcode(status) != 0:
        out["ok"] = False
    out["process_wall_seconds"] = time.time() - t0
    out["peak_rss_mb"] = ru.ru_maxrss / 1024
    log.info("%-11s %-28s %s %.1f s, peak %.0f MB", side, tag, "ok" if out.get("ok") else "FAILED",
             out.get("total_seconds") or 0.0, out["peak_rss_mb"])
    return out


def _scenario(name: str, size: int, repeats: int, sides: tuple[str, ...], night_run: bool,
              args: argparse.Namespace) -> dict[str, Any]:
    products = name == "products"
    workdir = Path(args.workdir) / f"nightly_{name}_{size}"
    workdir.mkdir(parents=True, exist_ok=True)
    tx_path = bench._simulate(size, Path(args.workdir) / "data")  # cached, shared with bench.py
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
    for r in range(repeats):
        order = sides if r % 2 == 0 else tuple(reversed(sides))
        for side in order:
            runs[side].append(_spawn(side, tx_path, workdir, f"{name}_{size}_{side}_{r}", products))
        if night_run and r == 0:
            runs["rebuy_night"].append(_spawn("rebuy_night", tx_path, workdir, f"{name}_{size}_night", products))
    return {"scenario": name, "size": size, "runs": runs}


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    xs = [r[key] for r in runs if r.get("ok") and r.get(key) is not None]
    return statistics.median(xs) if xs else None


def _stage_medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for r in runs:
        if r.get("ok"):
            for s in r.get("stages", []):
                by.setdefault(s["name"], []).append(s["seconds"])
    return {k: statistics.median(v) for k, v in by.items()}


def summarise(block: dict[str, Any]) -> dict[str, Any]:
    runs = block["runs"]
    row = {"scenario": block["scenario"], "size": block["size"]}
    for side in SIDES:
        row[side] = {"seconds": _median(runs[side], "total_seconds"), "peak_rss_mb": _median(runs[side], "peak_rss_mb"),
                     "runs": sum(1 for r in runs[side] if r.get("ok")), "stages": _stage_medians(runs[side])}
    g, b = row["glue"]["seconds"], row["rebuy"]["seconds"]
    row["ratio"] = g / b if g and b else None
    n = row["rebuy_night"]["seconds"]
    row["ratio_night"] = g / n if g and n else None
    row["target"] = TARGETS.get(block["scenario"])
    return row


def _s(x: float | None) -> str:
    return "—" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.1f}")


def _r(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    L = [f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram']} RAM; Python {m['python']}, numpy {m['numpy']}, "
         f"pandas {m['pandas']}, lifetimes {m['lifetimes']}, implicit {m['implicit']}. Load average at start "
         f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}. Run {res['started']} UTC, "
         f"{res['wall_seconds'] / 60:.1f} min wall.", "",
         "| scenario | customers | glue s | floor s | rebuy run s | ratio glue/rebuy | target | "
         "rebuy night without training s | ratio | peak RSS MB glue / rebuy |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in res["rows"]:
        t = row["target"]
        met = "" if row["ratio"] is None or t is None else (" met" if row["ratio"] >= t else " **not met**")
        L.append(f"| {row['scenario']} | {row['size']:,} | {_s(row['glue']['seconds'])} | {_s(row['floor']['seconds'])} | "
                 f"{_s(row['rebuy']['seconds'])} | **{_r(row['ratio'])}** | ≥ {t:g}×{met} | "
                 f"{_s(row['rebuy_night']['seconds'])} | {_r(row['ratio_night'])} | "
                 f"{_s(row['glue']['peak_rss_mb'])} / {_s(row['rebuy']['peak_rss_mb'])} |")
    L.append("")
    L.append("Runs per side (glue/floor/rebuy): " + "; ".join(
        f"{r['scenario']} {r['size']:,}: {r['glue']['runs']}/{r['floor']['runs']}/{r['rebuy']['runs']}" for r in res["rows"]))
    for row in res["rows"]:
        L.append("")
        L.append(f"<details><summary>{row['scenario']}, {row['size']:,} customers: stages (median s)</summary>")
        L.append("")
        for side in ("glue", "rebuy", "rebuy_night"):
            st = row[side]["stages"]
            if st:
                L.append(f"- {side}: " + "; ".join(f"{k} {_s(v)}" for k, v in st.items()))
        L.append("")
        L.append("</details>")
    return "\n".join(L) + "\n"


def growth_markdown(res: dict[str, Any]) -> str:
    rows = res["rows"]
    L = ["| customers | customers × | glue s | rebuy run s | rebuy time × | rebuy peak RSS MB | rebuy memory × |",
         "|---:|---:|---:|---:|---:|---:|---:|"]
    base = rows[0]
    for row in rows:
        tb = (row["rebuy"]["seconds"] or 0) / (base["rebuy"]["seconds"] or 1)
        mb = (row["rebuy"]["peak_rss_mb"] or 0) / (base["rebuy"]["peak_rss_mb"] or 1)
        L.append(f"| {row['size']:,} | {row['size'] / base['size']:.0f}× | {_s(row['glue']['seconds'])} | "
                 f"{_s(row['rebuy']['seconds'])} | {tb:.1f}× | {_s(row['rebuy']['peak_rss_mb'])} | {mb:.1f}× |")
    return "\n".join(L) + "\n"


def run_parent(args: argparse.Namespace) -> None:
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    machine = bench.machine()
    t0 = time.time()
    rows = []
    if args.growth:
        for n in args.growth_sizes:
            rows.append(summarise(_scenario("value", n, 1, ("glue", "rebuy"), False, args)))
        name = "growth"
    else:
        for n in args.value_sizes:
            rows.append(summarise(_scenario("value", n, args.repeats, ("glue", "floor", "rebuy"), True, args)))
        rows.append(summarise(_scenario("products", args.products_size, 1, ("glue", "rebuy"), True, args)))
        name = "nightly"
    res = {"started": started, "machine": machine, "wall_seconds": time.time() - t0, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1, default=str))
    text = markdown(res) if name == "nightly" else markdown(res) + "\n" + growth_markdown(res)
    (out / f"{name}.md").write_text(text)
    print(text)  # noqa: T201 - the benchmark's report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--value-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--products-size", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--growth", action="store_true")
    ap.add_argument("--growth-sizes", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000])
    ap.add_argument("--workdir", default="/tmp/rebuy_bench")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--products", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.worker:
        run_worker(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
