"""The purchase-model stage against a single BG/NBD fit, in one process (issue 11's speed target).

On ``bench.py``'s simulated shop (cached under ``/tmp/rebuy_bench/data``; 1M customers by
default), median of ``--repeats`` runs each, BLAS at one thread:

- ``auto``: the holdout windows (``pipeline.selection_windows``), every candidate on every window
  (``models.selection.select_purchase_model``) and the chosen model on everyone, against
  ``bgnbd``: one BG/NBD fit on everyone (what training did before the choice);
- value scoring: ``score_value`` with the chosen model and its calibrator (P(alive),
  p_purchase_90d, expected purchases, CLV, spend and its interval, next purchase date, churn risk)
  against the same with BG/NBD; the CLV ranker is not part of the purchase model's scoring.

Writes ``results/purchase.{json,md}``. Run: ``make bench-purchase`` (about 2 minutes at 1M).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"


def _median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(median seconds of ``repeats`` calls of ``fn``, its last result)."""
    from bench import _median

    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(_median(times)), out


def measure(n: int, repeats: int) -> dict[str, Any]:
    import pandas as pd
    from bench import _simulate

    from rebuy import pipeline
    from rebuy.config import load_config
    from rebuy.features import rfm_summary
    from rebuy.models.selection import select_purchase_model
    from rebuy.models.value import score_value

    path = _simulate(n, Path("/tmp/rebuy_bench/data"))
    as_of = pd.Timestamp(json.loads(path.with_name("shop_truth.json").read_text())["end"])
    tx = pd.read_parquet(path)
    cfg = load_config(None)
    summary = rfm_summary(tx, as_of, time_unit=cfg.time_unit)

    def fit(name: str, s: pd.DataFrame, pen: float | None, start: Any = None) -> Any:
        return pipeline.fit_purchase_model(s, cfg, name=name, penalizer=pen, start_from=start)

    windows_s, windows = _median_seconds(lambda: pipeline.selection_windows(tx, cfg, as_of), repeats)
    select_s, sel = _median_seconds(lambda: select_purchase_model(windows, cfg, fit), repeats)
    chosen_s, chosen = _median_seconds(lambda: fit(sel.name, summary, sel.penalizer), repeats)
    bgnbd_s, bgnbd = _median_seconds(lambda: fit("bgnbd", summary, None), repeats)
    spend = pipeline.fit_spend_model(summary, cfg)
    score_s, _ = _median_seconds(lambda: score_value(summary, chosen, spend, cfg, as_of, sel.calibrator), repeats)
    score_bg_s, _ = _median_seconds(lambda: score_value(summary, bgnbd, spend, cfg, as_of, None), repeats)
    auto_s = windows_s + select_s + chosen_s
    return {
        "customers": int(len(summary)), "repeats": repeats, "chosen": sel.report.get("chosen_candidate", sel.name),
        "candidate_fit_seconds": {k: c.get("fit_seconds") for k, c in sel.report["candidates"].items()},
        "seconds": {"windows": windows_s, "select": select_s, "fit_chosen": chosen_s, "auto": auto_s,
                    "fit_bgnbd": bgnbd_s, "score_chosen": score_s, "score_bgnbd": score_bg_s},
        "ratios": {"auto_vs_bgnbd_fit": auto_s / bgnbd_s, "score_vs_bgnbd_score": score_s / score_bg_s},
    }


def markdown(res: dict[str, Any]) -> str:
    s, r = res["seconds"], res["ratios"]
    lines = [f"# Purchase-model stage, {res['customers']:,} customers (median of {res['repeats']})", "",
             "| step | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in s.items()]
    lines += ["", f"auto (windows + selection + chosen fit) / one BG/NBD fit: **{r['auto_vs_bgnbd_fit']:.1f}×**; "
              f"value scoring with the chosen model and calibrator / with BG/NBD: **{r['score_vs_bgnbd_score']:.2f}×**; "
              f"chosen: {res['chosen']}", "", "Candidate fits over the windows (s): "
              + ", ".join(f"{k} {v}" for k, v in res["candidate_fit_seconds"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    res = measure(args.customers, args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "purchase.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "purchase.md").write_text(markdown(res))
    sys.stdout.write(markdown(res))


if __name__ == "__main__":
    main()
