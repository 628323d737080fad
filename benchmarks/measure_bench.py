"""Benchmarks of rebuy.measure (not a unit test).

Two modes (both by default):

- ``--speed``: read an offer log of ``--decisions`` decisions (Parquet) and measure it against
  ``--lines`` transaction lines of synthetic data (random customers, days and amounts; the
  decisions fall on 10 nights in the last 60 days, with repeated customers), and print the times;
- ``--truth``: simulate a ``--customers`` shop (``rebuy.simulate.simulate``, events off), one night
  of offers (``simulated_offer_log``, control share 10%) and its responses with the demo effects
  (``simulate_responses``), then measure: per offer type the true uplift vs the estimate, adjusted
  vs plain interval width, and over ``--seeds`` shops the share of 95% intervals covering the truth.

    .venv/bin/python benchmarks/measure_bench.py --speed --cli --truth --seeds 20

- ``--cli``: the same data written to Parquet, timed through ``rebuy measure`` from the shell.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rebuy.measure import format_uplift_table, measure_uplift, read_offer_log
from rebuy.offers.names import RULE_NAMES
from rebuy.simulate import simulate
from rebuy.simulate_offers import simulate_responses, simulated_offer_log

END = pd.Timestamp("2024-12-31")


def synthetic_transactions(rng: np.random.Generator, n_customers: int, n_lines: int) -> pd.DataFrame:
    """Random lines over two years ending at END, sorted by customer and time like canonical data."""
    customer = np.sort(rng.integers(0, n_customers, n_lines))
    seconds = rng.integers(0, 730 * 86_400, n_lines)
    ts = (END + pd.Timedelta(days=1) - pd.Timedelta(days=730)).value + seconds * 10**9
    order = np.lexsort((ts, customer))
    ids = pd.array(np.char.add("C", np.char.zfill(np.arange(n_customers).astype(str), 7)), dtype="string")
    return pd.DataFrame({
        "customer_id": ids[customer[order]], "order_id": pd.array(np.arange(n_lines).astype(str), dtype="string"),
        "timestamp": ts[order].view("datetime64[ns]"), "amount": np.round(rng.gamma(2.0, 20.0, n_lines), 2),
    })


def synthetic_log(rng: np.random.Generator, n_customers: int, n_decisions: int) -> pd.DataFrame:
    """Decisions on 10 nights from 150 to 30 days before the end (all measurable with 30-day windows,
    but one: the last night is the day after the end, pending), random customers, types, 10% control."""
    nights = END + pd.to_timedelta(np.r_[np.linspace(-150, -30, 9).round(), 1], unit="D")
    types = np.array([*RULE_NAMES, "reminder"], dtype=object)
    control = rng.random(n_decisions) < 0.1
    return pd.DataFrame({
        "customer_id": pd.array(np.char.add("C", np.char.zfill(rng.integers(0, n_customers, n_decisions).astype(str), 7)),
                                dtype="string"),
        "decided_at": nights.to_numpy()[rng.integers(0, len(nights), n_decisions)],
        "offer_type": pd.array(types[rng.integers(0, len(types), n_decisions)], dtype="string"),
        "group": pd.array(np.where(control, "control", "treatment"), dtype="string"),
        "discount_cost": np.where(control, 0.0, 2.5), "deliver": ~control,
        "p_purchase_90d": rng.random(n_decisions), "total_spend": rng.gamma(2.0, 100.0, n_decisions),
    })


def speed(n_decisions: int, n_lines: int) -> None:
    rng = np.random.default_rng(0)
    n_customers = n_lines // 10
    tx = synthetic_transactions(rng, n_customers, n_lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "offer_log.parquet"
        synthetic_log(rng, n_customers, n_decisions).to_parquet(path)
        started = time.perf_counter()
        log = read_offer_log(path)
        read_s = time.perf_counter() - started
        result = measure_uplift(log, tx)
        measure_s = time.perf_counter() - started - read_s
    print(f"speed: {n_decisions:,} decisions, {n_lines:,} lines: read {read_s:.2f} s, measure_uplift "
          f"{measure_s:.2f} s, total {read_s + measure_s:.2f} s ({result['decisions_measured']:,} measured, "
          f"{result['decisions_pending']:,} pending)")


def cli(n_decisions: int, n_lines: int) -> None:
    """``rebuy measure`` as a user runs it: Parquet files in, the cleaning of ``load_transactions``,
    the JSON and the table out, timed from the shell (process start and imports included)."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    n_customers = n_lines // 10
    with tempfile.TemporaryDirectory() as tmp:
        tx_path, log_path = Path(tmp) / "tx.parquet", Path(tmp) / "offer_log.parquet"
        synthetic_transactions(rng, n_customers, n_lines).to_parquet(tx_path)
        synthetic_log(rng, n_customers, n_decisions).to_parquet(log_path)
        rebuy = Path(sys.executable).with_name("rebuy")
        started = time.perf_counter()
        subprocess.run([str(rebuy), "measure", "--offers", str(log_path), "--transactions", str(tx_path),
                        "--out", str(Path(tmp) / "uplift.json")], check=True, capture_output=True)
        seconds = time.perf_counter() - started
    print(f"cli: rebuy measure, {n_decisions:,} decisions, {n_lines:,} lines (Parquet): {seconds:.1f} s end to end")


def one_shop(n_customers: int, seed: int) -> tuple[dict, dict]:
    sim = simulate(n_customers, seed=seed, events=False)
    log = simulated_offer_log(sim, seed=seed)
    responses = simulate_responses(sim, log, seed=seed)
    tx = pd.concat([sim.transactions, responses.transactions], ignore_index=True)
    return measure_uplift(log, tx), responses.truth


def truth(n_customers: int, seeds: int) -> None:
    covered, total, widths, errors = 0, 0, [], []
    for seed in range(seeds):
        started = time.perf_counter()
        result, true = one_shop(n_customers, seed)
        if seed == 0:
            print(format_uplift_table(result))
            print(f"{'offer':<20}{'control':>8}{'true':>9}{'expected':>10}{'estimate':>10}{'plain':>9}{'error':>9}"
                  f"{'se':>8}{'width':>7}")
        for e in result["by_offer"]:
            t = true[e["offer_type"]]["true_uplift"]
            lo, hi = e["uplift_ci95"]
            covered, total = covered + (lo <= t <= hi), total + 1
            widths.append(e["ci_width_ratio"])
            errors.append((e["offer_type"], e["uplift"] - t, e["uplift_plain"] - t))
            if seed == 0:
                print(f"{e['offer_type']:<20}{e['control']:>8,}{t:>9.4f}{true[e['offer_type']]['expected_uplift']:>10.4f}"
                      f"{e['uplift']:>10.4f}{e['uplift_plain']:>9.4f}{e['uplift'] - t:>+9.4f}{e['uplift_se']:>8.4f}"
                      f"{e['ci_width_ratio']:>7.2f}")
        print(f"seed {seed}: {time.perf_counter() - started:.1f} s, coverage so far {covered}/{total}")
    err = pd.DataFrame(errors, columns=["offer_type", "adjusted", "plain"]).set_index("offer_type")
    print(err.abs().groupby("offer_type").agg(["mean", "max"]).round(4).to_string())
    print(f"mean error adjusted {err['adjusted'].mean():+.4f}, plain {err['plain'].mean():+.4f}; "
          f"|error| <= 0.01 in {(err['adjusted'].abs() <= 0.01).mean():.1%} (adjusted), "
          f"{(err['plain'].abs() <= 0.01).mean():.1%} (plain)")
    print(f"truth: {n_customers:,} customers x {seeds} shops: 95% intervals cover the true uplift in "
          f"{covered}/{total} = {covered / total:.1%}; median width adjusted/plain {np.median(widths):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speed", action="store_true", help="time read + measure on synthetic data")
    ap.add_argument("--truth", action="store_true", help="true vs estimated uplift on simulated shops")
    ap.add_argument("--cli", action="store_true", help="time `rebuy measure` end to end on Parquet files")
    ap.add_argument("--decisions", type=int, default=1_000_000)
    ap.add_argument("--lines", type=int, default=5_000_000)
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    both = not (args.speed or args.truth or args.cli)
    if args.speed or both:
        speed(args.decisions, args.lines)
    if args.cli or both:
        cli(args.decisions, args.lines)
    if args.truth or both:
        truth(args.customers, args.seeds)


if __name__ == "__main__":
    main()
