"""Validation of the value models on a calibration / holdout split (``rebuy evaluate``).

Fit BG/NBD and Gamma-Gamma on the calibration window, forecast the holdout window, and compare
with what the calibration customers actually did there: aggregate repeat purchases, per-customer
errors against a naive baseline, the cohort's weekly cumulative tracking curve (as in Fader, Hardie
& Lee 2005, Figure 2), P(alive) calibration by decile and CLV ranking quality. The result is a
JSON-serialisable dict with a plain-language verdict.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from rebuy.config import Config
from rebuy.features import calibration_holdout_split, spend_concentration, unit_days
from rebuy.models import BGNBDModel, GammaGammaModel, ModelFitError, _clv_arrays

logger = logging.getLogger(__name__)


def _f(x: Any, nd: int = 6) -> float | None:
    """JSON-safe float (None for NaN/inf)."""
    x = float(x)
    return round(x, nd) if np.isfinite(x) else None


def _repeat_days(
    transactions: pd.DataFrame, customers: pd.Index, end_day: np.int64
) -> tuple[np.ndarray, np.ndarray]:
    """(first purchase day per customer in ``customers``, day numbers of their repeat purchase days
    up to ``end_day``), days since 1970-01-01."""
    tx = transactions[["customer_id", "timestamp"]]
    days = tx["timestamp"].to_numpy().astype("datetime64[D]").astype(np.int64)
    cid = tx["customer_id"].astype("string")
    keep = (days <= end_day) & cid.isin(customers).to_numpy()
    frame = pd.DataFrame({"c": cid.to_numpy()[keep], "d": days[keep]}).drop_duplicates()
    frame = frame.sort_values(["c", "d"], kind="stable")
    first_mask = ~frame["c"].duplicated()
    return frame.loc[first_mask, "d"].to_numpy(), frame.loc[~first_mask, "d"].to_numpy()


def tracking_curve(
    transactions: pd.DataFrame, model: BGNBDModel, customers: pd.Index, end: Any
) -> pd.DataFrame:
    """Weekly cumulative repeat purchases (purchase days after each customer's first) of the given
    customers, actual vs BG/NBD forecast, from the first transaction date to ``end``.

    Week w covers days [7(w-1), 7w) from the first transaction date. The forecast at week w is
    sum_i E[X(t_i)] with t_i the time from customer i's first purchase day to the end of week w
    (lifetimes' ``expected_cumulative_transactions`` convention).
    """
    end_day = np.int64(
        (np.datetime64(pd.Timestamp(end).date(), "D") - np.datetime64("1970-01-01", "D")).astype(np.int64)
    )
    first, repeat = _repeat_days(transactions, customers, end_day)
    start = first.min()
    n_weeks = int((end_day - start) // 7 + 1)
    week_end = start + 7 * np.arange(1, n_weeks + 1)  # exclusive day bound of each week
    actual = np.searchsorted(np.sort(repeat), week_end, side="left")
    u = unit_days(model.time_unit_)
    fdays, fcounts = np.unique(first, return_counts=True)
    elapsed = (week_end[None, :] - fdays[:, None]).astype(np.float64)  # days
    mask = elapsed > 0
    exp = np.zeros_like(elapsed)
    exp[mask] = model.expected_purchases_population(elapsed[mask] / u)
    predicted = (exp * fcounts[:, None]).sum(axis=0)
    dates = (np.datetime64("1970-01-01", "D") + (week_end - 1).astype("timedelta64[D]")).astype(
        "datetime64[ns]"
    )
    return pd.DataFrame(
        {
            "week": np.arange(1, n_weeks + 1),
            "week_end": dates,
            "actual": actual.astype(np.int64),
            "predicted": predicted,
        }
    )


def _deciles(score: np.ndarray, n: int = 10) -> np.ndarray:
    """Decile 1 (lowest) .. n (highest) by rank, ties broken by position (always n near-equal groups)."""
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score), dtype=np.int64)
    ranks[order] = np.arange(len(score))
    return (ranks * n // max(len(score), 1)) + 1


def _top_share(score: np.ndarray, revenue: np.ndarray, share: float) -> float:
    total = revenue.sum()
    if total <= 0:
        return float("nan")
    k = max(1, int(round(share * len(score))))
    idx = np.argsort(-score, kind="stable")[:k]
    return float(revenue[idx].sum() / total)


def evaluate_value_models(
    transactions: pd.DataFrame,
    calibration_end: dt.date | str | pd.Timestamp,
    holdout_end: dt.date | str | pd.Timestamp | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Fit on transactions up to ``calibration_end`` and score the holdout (days after it up to
    ``holdout_end``, default the last transaction date). Returns a JSON-serialisable dict:

    ``headline`` (key numbers), ``verdict`` (plain language), ``windows``, ``params``,
    ``aggregate`` (predicted vs actual repeat purchase days and revenue in the holdout),
    ``per_customer`` (MAE/RMSE of holdout purchases, model vs the naive own-past-rate baseline
    ``frequency / T * duration``), ``tracking`` (weekly cumulative curve), ``p_alive_calibration``
    (by decile of P(alive): mean P(alive), mean predicted and actual purchases, share who bought
    again), ``clv_ranking`` (holdout revenue share captured by the top 10% / 20% of predicted CLV,
    against past-spend ranking and the best possible, Spearman), ``warnings``.
    Only customers with a calibration purchase are scored (new holdout customers cannot be forecast).
    """
    cfg = config or Config()
    unit = cfg.time_unit
    u = unit_days(unit)
    split = calibration_holdout_split(transactions, calibration_end, holdout_end, time_unit=unit)
    cal_end = pd.Timestamp(split.attrs["as_of"])
    duration = float(split["duration_holdout"].iloc[0])
    hold_end = cal_end + pd.Timedelta(days=round(duration * u))
    warnings_: list[str] = []
    concentration = spend_concentration(split)
    if concentration["finding"]:
        warnings_.append(str(concentration["finding"]))
    n_hold_tx = float(split["frequency_holdout"].sum())
    if n_hold_tx == 0:
        warnings_.append("no repeat purchases by calibration customers in the holdout window")

    bg = BGNBDModel.from_config(cfg.bgnbd).fit(split)
    warnings_ += bg.warnings_
    try:
        gg: GammaGammaModel | None = GammaGammaModel.from_config(cfg.gamma_gamma).fit(split)
        warnings_ += gg.warnings_
    except ModelFitError as e:
        gg = None
        warnings_.append(f"Gamma-Gamma not fitted: {e}")

    x = split["frequency"].to_numpy()
    tx = split["recency"].to_numpy()
    T = split["T"].to_numpy()
    actual = split["frequency_holdout"].to_numpy()
    actual_rev = split["total_spend_holdout"].to_numpy()
    pred = bg.expected_purchases(duration, x, tx, T)
    p_alive = bg.p_alive(x, tx, T)
    p_buy = bg.probability_of_purchase(duration, x, tx, T)
    with np.errstate(divide="ignore", invalid="ignore"):
        naive = np.where(T > 0, x / np.where(T > 0, T, 1.0), 0.0) * duration

    # --- aggregate
    agg: dict[str, Any] = {
        "customers": int(len(split)),
        "actual_repeat_purchases": int(actual.sum()),
        "predicted_repeat_purchases": _f(pred.sum(), 2),
        "naive_predicted_repeat_purchases": _f(naive.sum(), 2),
        "error_pct": _f(100 * (pred.sum() - actual.sum()) / actual.sum(), 2) if actual.sum() > 0 else None,
        "actual_revenue": _f(actual_rev.sum(), 2),
    }
    eov = None
    if gg is not None:
        eov = gg.expected_order_value(x, split["monetary_value"].to_numpy())
        pred_rev = pred * eov
        agg["predicted_revenue"] = _f(pred_rev.sum(), 2)
        agg["revenue_error_pct"] = (
            _f(100 * (pred_rev.sum() - actual_rev.sum()) / actual_rev.sum(), 2)
            if actual_rev.sum() > 0
            else None
        )

    # --- per customer
    def _err(p: np.ndarray) -> dict[str, float | None]:
        return {"mae": _f(np.mean(np.abs(p - actual))), "rmse": _f(np.sqrt(np.mean((p - actual) ** 2)))}

    model_err, naive_err = _err(pred), _err(naive)
    per_customer = {
        "model": model_err,
        "naive_own_past_rate": naive_err,
        "mae_improvement_pct": _f(100 * (1 - model_err["mae"] / naive_err["mae"]), 2)
        if naive_err["mae"]
        else None,
        "rmse_improvement_pct": _f(100 * (1 - model_err["rmse"] / naive_err["rmse"]), 2)
        if naive_err["rmse"]
        else None,
        "correlation": _f(np.corrcoef(pred, actual)[0, 1])
        if np.std(actual) > 0 and np.std(pred) > 0
        else None,
    }

    # --- tracking curve
    curve = tracking_curve(transactions, bg, split.index, hold_end)
    cal_week = int(((cal_end - curve["week_end"].iloc[0]).days) // 7 + 1)
    tracking = {
        "note": (
            "cumulative repeat purchase days of the calibration customers by week from the first transaction "
            "date; predicted = BG/NBD unconditional forecast from each customer's first purchase day. "
            "holdout_* compare the weeks after the last whole calibration week."
        ),
        "calibration_weeks": cal_week,
        "weeks": curve["week"].tolist(),
        "week_end": [d.strftime("%Y-%m-%d") for d in curve["week_end"]],
        "actual_cumulative": curve["actual"].tolist(),
        "predicted_cumulative": [_f(v, 2) for v in curve["predicted"]],
    }
    in_cal = curve["week_end"] <= cal_end
    if in_cal.any() and (~in_cal).any():
        c_idx = int(np.flatnonzero(in_cal.to_numpy())[-1])
        tracking["holdout_actual"] = int(curve["actual"].iloc[-1] - curve["actual"].iloc[c_idx])
        tracking["holdout_predicted"] = _f(curve["predicted"].iloc[-1] - curve["predicted"].iloc[c_idx], 2)
        tracking["end_actual"] = int(curve["actual"].iloc[-1])
        tracking["end_predicted"] = _f(curve["predicted"].iloc[-1], 2)
        tracking["end_error_pct"] = (
            _f(100 * (curve["predicted"].iloc[-1] - curve["actual"].iloc[-1]) / curve["actual"].iloc[-1], 2)
            if curve["actual"].iloc[-1] > 0
            else None
        )

    # --- P(alive) calibration
    bought = actual > 0
    repeaters = x > 0
    rows = []
    groups: list[tuple[Any, np.ndarray]] = []
    if repeaters.any():
        dec = np.zeros(len(x), dtype=np.int64)
        dec[repeaters] = _deciles(p_alive[repeaters])
        groups += [(d, dec == d) for d in range(1, 11)]
    groups.append(("one_time_buyers", ~repeaters))
    for d, sel in groups:
        if not sel.any():
            continue
        rows.append(
            {
                "decile": d,
                "customers": int(sel.sum()),
                "mean_p_alive": _f(p_alive[sel].mean(), 4),
                "predicted_share_bought": _f(p_buy[sel].mean(), 4),
                "observed_share_bought": _f(bought[sel].mean(), 4),
                "mean_predicted_purchases": _f(pred[sel].mean(), 4),
                "mean_actual_purchases": _f(actual[sel].mean(), 4),
            }
        )
    p_alive_cal = {
        "note": (
            "deciles of P(alive) among repeat customers, then one-time buyers (P(alive) = 1 by the model's "
            "definition). P(alive) is an upper bound on the share who buy in the holdout (an alive customer "
            "may not buy within the window); predicted_share_bought = P(alive) x P(a purchase in the window "
            "| alive) is the number to compare with observed_share_bought."
        ),
        "mean_abs_share_error": _f(
            np.mean([abs(r["predicted_share_bought"] - r["observed_share_bought"]) for r in rows]), 4
        ),
        "by_decile": rows,
        "repeat_customers_mean_p_alive": _f(p_alive[repeaters].mean(), 4) if repeaters.any() else None,
        "repeat_customers_share_bought": _f(bought[repeaters].mean(), 4) if repeaters.any() else None,
        "spearman_p_alive_vs_bought": _f(spearmanr(p_alive[repeaters], bought[repeaters]).statistic, 4)
        if repeaters.any() and np.std(bought[repeaters]) > 0 and np.std(p_alive[repeaters]) > 0
        else None,
    }

    # --- CLV ranking
    clv_rank: dict[str, Any] = {"horizon_months": cfg.clv.horizon_months}
    if gg is not None:
        clv = _clv_arrays(
            bg,
            gg,
            x,
            tx,
            T,
            split["monetary_value"].to_numpy(),
            cfg.clv.horizon_months,
            cfg.clv.margin,
            cfg.clv.discount_rate,
            unit,
        )
        past = split["total_spend"].to_numpy()
        for share in (0.1, 0.2):
            key = f"top_{int(share * 100)}pct"
            clv_rank[key] = {
                "clv_share_of_holdout_revenue": _f(_top_share(clv, actual_rev, share), 4),
                "past_spend_share_of_holdout_revenue": _f(_top_share(past, actual_rev, share), 4),
                "best_possible_share": _f(_top_share(actual_rev, actual_rev, share), 4),
                "random_share": share,
            }
        ok = np.std(actual_rev) > 0 and np.std(clv) > 0
        clv_rank["spearman_clv_vs_holdout_revenue"] = (
            _f(spearmanr(clv, actual_rev).statistic, 4) if ok else None
        )
        clv_rank["spearman_past_spend_vs_holdout_revenue"] = (
            _f(spearmanr(past, actual_rev).statistic, 4) if ok and np.std(past) > 0 else None
        )

    params = {
        "time_unit": unit,
        "bgnbd": {k: _f(v, 6) for k, v in bg.params_.items()},
        "bgnbd_log_likelihood": _f(bg.log_likelihood_, 3),
        "bgnbd_penalizer_used": bg.penalizer_,
    }
    if gg is not None:
        params["gamma_gamma"] = {k: _f(v, 6) for k, v in gg.params_.items()}
        params["gamma_gamma_penalizer_used"] = gg.penalizer_
        params["gamma_gamma_independence_corr"] = _f(gg.independence_corr_, 4)
        params["gamma_gamma_q_above_1"] = gg.q_warning_ is None

    verdict, trust = _verdict(agg, per_customer, clv_rank, gg, p_alive_cal)
    headline = {
        "trust": trust,
        "holdout_actual_repeat_purchases": agg["actual_repeat_purchases"],
        "holdout_predicted_repeat_purchases": agg["predicted_repeat_purchases"],
        "aggregate_error_pct": agg["error_pct"],
        "mae_model": model_err["mae"],
        "mae_naive": naive_err["mae"],
        "clv_top20_revenue_share": clv_rank.get("top_20pct", {}).get("clv_share_of_holdout_revenue"),
        "spearman_clv": clv_rank.get("spearman_clv_vs_holdout_revenue"),
    }
    return {
        "headline": headline,
        "verdict": verdict,
        "windows": {
            "calibration_end": cal_end.strftime("%Y-%m-%d"),
            "holdout_end": hold_end.strftime("%Y-%m-%d"),
            "holdout_duration": _f(duration, 4),
            "time_unit": unit,
        },
        "params": params,
        "aggregate": agg,
        "per_customer": per_customer,
        "tracking": tracking,
        "p_alive_calibration": p_alive_cal,
        "clv_ranking": clv_rank,
        "spend_concentration": concentration,
        "warnings": warnings_,
    }


def _verdict(
    agg: dict, per_customer: dict, clv_rank: dict, gg: GammaGammaModel | None, p_alive_cal: dict
) -> tuple[str, str]:
    """Plain-language verdict and a trust level ("good", "use with care", "do not trust")."""
    parts: list[str] = []
    problems = 0
    err = agg.get("error_pct")
    if err is None:
        parts.append("No holdout purchases to compare with, so the forecasts cannot be checked.")
        return " ".join(parts), "do not trust"
    direction = "over" if err > 0 else "under"
    parts.append(
        f"BG/NBD forecast {agg['predicted_repeat_purchases']:.0f} repeat purchase days in the holdout against "
        f"{agg['actual_repeat_purchases']} actual ({abs(err):.1f}% {direction}-forecast)."
    )
    if abs(err) > 30:
        problems += 2
    elif abs(err) > 15:
        problems += 1
    rev = agg.get("revenue_error_pct")
    if rev is not None:
        parts.append(
            f"Holdout revenue forecast (BG/NBD x Gamma-Gamma): {agg['predicted_revenue']:,.0f} against "
            f"{agg['actual_revenue']:,.0f} actual ({rev:+.1f}%)."
        )
        if abs(rev) > 25:
            problems += 1
    imp = per_customer.get("mae_improvement_pct")
    if imp is not None:
        if imp > 0:
            parts.append(
                f"Per customer it is {imp:.1f}% more accurate (MAE) than each customer's own past rate."
            )
        else:
            parts.append(
                f"Per customer it is {-imp:.1f}% LESS accurate (MAE) than each customer's own past rate."
            )
            problems += 2
    share_err = p_alive_cal.get("mean_abs_share_error")
    if share_err is not None:
        parts.append(
            f"Predicted and observed shares of customers buying again differ by {100 * share_err:.1f} "
            "percentage points on average across P(alive) deciles."
        )
        if share_err > 0.1:
            problems += 1
    top = clv_rank.get("top_20pct")
    if top and top.get("clv_share_of_holdout_revenue") is not None:
        share = top["clv_share_of_holdout_revenue"]
        past = top.get("past_spend_share_of_holdout_revenue")
        parts.append(
            f"The top 20% by predicted CLV brought {100 * share:.0f}% of holdout revenue"
            + (f" (ranking by past spend: {100 * past:.0f}%)." if past is not None else ".")
        )
        if share < 0.3:
            problems += 1
    if gg is not None:
        if not gg.independence_ok_:
            parts.append(
                f"Spend per order is correlated with frequency (r = {gg.independence_corr_:.2f}), which breaks a "
                "Gamma-Gamma assumption: treat order values and CLV as rough."
            )
            problems += 1
        if gg.q_warning_ is not None:
            parts.append(
                "Gamma-Gamma q <= 1 (very heavy-tailed spend): expected order values use observed means."
            )
            problems += 1
    else:
        parts.append("Gamma-Gamma could not be fitted, so no CLV check.")
        problems += 1
    trust = "good" if problems == 0 else "use with care" if problems <= 2 else "do not trust"
    lead = {
        "good": "Verdict: the models can be trusted on this data.",
        "use with care": "Verdict: usable with care.",
        "do not trust": "Verdict: do not rely on these models for this data without changes.",
    }[trust]
    return lead + " " + " ".join(parts), trust
