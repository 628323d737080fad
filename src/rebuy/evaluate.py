"""Validation of the value models on a calibration / holdout split (``rebuy evaluate``).

Fit the purchase (BG/NBD) and spend (Gamma-Gamma) models on the calibration window, forecast the
holdout window, and compare with what the calibration customers actually did there: aggregate
repeat purchases, per-customer errors against a naive baseline, the cohort's weekly cumulative
tracking curve (as in Fader, Hardie & Lee 2005, Figure 2), P(alive) calibration by decile and CLV
ranking quality. The result is a JSON-serialisable dict with a plain-language verdict.

Layout: :func:`evaluate_value_models` fits (:func:`_fit_models`), forecasts the holdout once
(:class:`_Holdout`) and assembles one section per function (``_aggregate``, ``_per_customer``,
``_tracking``, ``_p_alive_calibration``, ``_clv_ranking``, ``_params``); :func:`_verdict` adds up
one finding per check (sentences and a problem count). Invariants: every float in the result goes
through :func:`_f` (rounded; None for NaN/inf), so ``json.dumps(result, allow_nan=False)`` works;
only customers with a calibration purchase are scored. Time in the config's time unit, money in
the transactions' currency.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from rebuy.config import Config
from rebuy.dates import day_number, day_numbers_to_timestamps, unit_days
from rebuy.features import calibration_holdout_split, spend_concentration
from rebuy.models import BGNBDModel, GammaGammaModel, ModelFitError, PurchaseModel, customer_lifetime_value

logger = logging.getLogger(__name__)

TRUST_LEVELS = ("good", "use with care", "do not trust")
VERDICT_LEADS = {
    "good": "Verdict: the models can be trusted on this data.",
    "use with care": "Verdict: usable with care.",
    "do not trust": "Verdict: do not rely on these models for this data without changes.",
}

Finding = tuple[list[str], int]
"""One verdict check: (sentences, problems found)."""


def _f(x: Any, nd: int = 6) -> float | None:
    """JSON-safe float (None for NaN/inf)."""
    x = float(x)
    return round(x, nd) if np.isfinite(x) else None


def _pct_error(predicted: float, actual: float) -> float | None:
    """100 (predicted - actual) / actual, rounded; None when actual is not positive."""
    return _f(100 * (predicted - actual) / actual, 2) if actual > 0 else None


# ------------------------------------------------------------------------------------ tracking curve
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
    transactions: pd.DataFrame, model: PurchaseModel, customers: pd.Index, end: Any
) -> pd.DataFrame:
    """Weekly cumulative repeat purchases (purchase days after each customer's first) of the given
    customers, actual vs the purchase model's forecast, from the first transaction date to ``end``.

    Week w covers days [7(w-1), 7w) from the first transaction date. The forecast at week w is
    sum_i E[X(t_i)] with t_i the time from customer i's first purchase day to the end of week w
    (lifetimes' ``expected_cumulative_transactions`` convention).
    """
    end_day = day_number(end, "tracking_curve: end")
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
    return pd.DataFrame(
        {
            "week": np.arange(1, n_weeks + 1),
            "week_end": day_numbers_to_timestamps(week_end - 1),
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


# ------------------------------------------------------------------------------------ fitting and forecasting
def _fit_models(split: pd.DataFrame, cfg: Config) -> tuple[BGNBDModel, GammaGammaModel | None, list[str]]:
    """(purchase model, spend model or None when it cannot be fitted, their warnings)."""
    bg = BGNBDModel.from_config(cfg.bgnbd).fit(split)
    notes = list(bg.warnings_)
    try:
        gg: GammaGammaModel | None = GammaGammaModel.from_config(cfg.gamma_gamma).fit(split)
        notes += gg.warnings_
    except ModelFitError as e:
        gg = None
        notes.append(f"Gamma-Gamma not fitted: {e}")
    return bg, gg, notes


@dataclass
class _Holdout:
    """Per calibration customer: what the models forecast for the holdout and what happened
    (purchases are repeat purchase days; revenue in currency; duration in time units)."""

    duration: float
    x: np.ndarray
    actual: np.ndarray
    actual_revenue: np.ndarray
    predicted: np.ndarray
    p_alive: np.ndarray
    p_buy: np.ndarray
    naive: np.ndarray
    order_value: np.ndarray | None

    @classmethod
    def forecast(cls, split: pd.DataFrame, bg: PurchaseModel, gg: GammaGammaModel | None) -> _Holdout:
        duration = float(split["duration_holdout"].iloc[0])
        x, tx, T = (split[c].to_numpy() for c in ("frequency", "recency", "T"))
        with np.errstate(divide="ignore", invalid="ignore"):
            naive = np.where(T > 0, x / np.where(T > 0, T, 1.0), 0.0) * duration
        return cls(
            duration=duration,
            x=x,
            actual=split["frequency_holdout"].to_numpy(),
            actual_revenue=split["total_spend_holdout"].to_numpy(),
            predicted=bg.expected_purchases(duration, x, tx, T),
            p_alive=bg.p_alive(x, tx, T),
            p_buy=bg.probability_of_purchase(duration, x, tx, T),
            naive=naive,
            order_value=None if gg is None else gg.expected_order_value(x, split["monetary_value"].to_numpy()),
        )


# ------------------------------------------------------------------------------------ report sections
def _aggregate(h: _Holdout) -> dict[str, Any]:
    actual, pred = h.actual.sum(), h.predicted.sum()
    agg: dict[str, Any] = {
        "customers": int(len(h.x)),
        "actual_repeat_purchases": int(actual),
        "predicted_repeat_purchases": _f(pred, 2),
        "naive_predicted_repeat_purchases": _f(h.naive.sum(), 2),
        "error_pct": _pct_error(pred, actual),
        "actual_revenue": _f(h.actual_revenue.sum(), 2),
    }
    if h.order_value is not None:
        pred_rev = (h.predicted * h.order_value).sum()
        agg["predicted_revenue"] = _f(pred_rev, 2)
        agg["revenue_error_pct"] = _pct_error(pred_rev, h.actual_revenue.sum())
    return agg


def _errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float | None]:
    return {
        "mae": _f(np.mean(np.abs(predicted - actual))),
        "rmse": _f(np.sqrt(np.mean((predicted - actual) ** 2))),
    }


def _improvement_pct(model: float | None, baseline: float | None) -> float | None:
    return _f(100 * (1 - model / baseline), 2) if baseline else None


def _per_customer(h: _Holdout) -> dict[str, Any]:
    model_err, naive_err = _errors(h.predicted, h.actual), _errors(h.naive, h.actual)
    correlated = np.std(h.actual) > 0 and np.std(h.predicted) > 0
    return {
        "model": model_err,
        "naive_own_past_rate": naive_err,
        "mae_improvement_pct": _improvement_pct(model_err["mae"], naive_err["mae"]),
        "rmse_improvement_pct": _improvement_pct(model_err["rmse"], naive_err["rmse"]),
        "correlation": _f(np.corrcoef(h.predicted, h.actual)[0, 1]) if correlated else None,
    }


def _tracking(
    transactions: pd.DataFrame, bg: PurchaseModel, customers: pd.Index, cal_end: pd.Timestamp, hold_end: pd.Timestamp
) -> dict[str, Any]:
    curve = tracking_curve(transactions, bg, customers, hold_end)
    tracking: dict[str, Any] = {
        "note": (
            "cumulative repeat purchase days of the calibration customers by week from the first transaction "
            "date; predicted = BG/NBD unconditional forecast from each customer's first purchase day. "
            "holdout_* compare the weeks after the last whole calibration week."
        ),
        "calibration_weeks": int(((cal_end - curve["week_end"].iloc[0]).days) // 7 + 1),
        "weeks": curve["week"].tolist(),
        "week_end": [d.strftime("%Y-%m-%d") for d in curve["week_end"]],
        "actual_cumulative": curve["actual"].tolist(),
        "predicted_cumulative": [_f(v, 2) for v in curve["predicted"]],
    }
    in_cal = (curve["week_end"] <= cal_end).to_numpy()
    if in_cal.any() and (~in_cal).any():
        c_idx = int(np.flatnonzero(in_cal)[-1])
        actual, predicted = curve["actual"], curve["predicted"]
        tracking["holdout_actual"] = int(actual.iloc[-1] - actual.iloc[c_idx])
        tracking["holdout_predicted"] = _f(predicted.iloc[-1] - predicted.iloc[c_idx], 2)
        tracking["end_actual"] = int(actual.iloc[-1])
        tracking["end_predicted"] = _f(predicted.iloc[-1], 2)
        tracking["end_error_pct"] = _pct_error(predicted.iloc[-1], actual.iloc[-1])
    return tracking


def _calibration_rows(h: _Holdout) -> list[dict[str, Any]]:
    """One row per decile of P(alive) among repeat customers, then the one-time buyers."""
    bought = h.actual > 0
    repeaters = h.x > 0
    groups: list[tuple[Any, np.ndarray]] = []
    if repeaters.any():
        dec = np.zeros(len(h.x), dtype=np.int64)
        dec[repeaters] = _deciles(h.p_alive[repeaters])
        groups += [(d, dec == d) for d in range(1, 11)]
    groups.append(("one_time_buyers", ~repeaters))
    return [
        {
            "decile": d,
            "customers": int(sel.sum()),
            "mean_p_alive": _f(h.p_alive[sel].mean(), 4),
            "predicted_share_bought": _f(h.p_buy[sel].mean(), 4),
            "observed_share_bought": _f(bought[sel].mean(), 4),
            "mean_predicted_purchases": _f(h.predicted[sel].mean(), 4),
            "mean_actual_purchases": _f(h.actual[sel].mean(), 4),
        }
        for d, sel in groups
        if sel.any()
    ]


def _p_alive_calibration(h: _Holdout) -> dict[str, Any]:
    rows = _calibration_rows(h)
    bought = h.actual > 0
    rep = h.x > 0
    ranked = rep.any() and np.std(bought[rep]) > 0 and np.std(h.p_alive[rep]) > 0
    return {
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
        "repeat_customers_mean_p_alive": _f(h.p_alive[rep].mean(), 4) if rep.any() else None,
        "repeat_customers_share_bought": _f(bought[rep].mean(), 4) if rep.any() else None,
        "spearman_p_alive_vs_bought": _f(spearmanr(h.p_alive[rep], bought[rep]).statistic, 4) if ranked else None,
    }


def _clv_ranking(
    split: pd.DataFrame, bg: PurchaseModel, gg: GammaGammaModel | None, cfg: Config, revenue: np.ndarray
) -> dict[str, Any]:
    """Holdout revenue share captured by the top 10% / 20% of predicted CLV (vs past spend, the best
    possible and random) and Spearman correlations; only the horizon when there is no spend model."""
    clv_rank: dict[str, Any] = {"horizon_months": cfg.clv.horizon_months}
    if gg is None:
        return clv_rank
    clv = customer_lifetime_value(
        bg, gg, split, cfg.clv.horizon_months, cfg.clv.margin, cfg.clv.discount_rate, cfg.time_unit
    ).to_numpy()
    past = split["total_spend"].to_numpy()
    for share in (0.1, 0.2):
        clv_rank[f"top_{int(share * 100)}pct"] = {
            "clv_share_of_holdout_revenue": _f(_top_share(clv, revenue, share), 4),
            "past_spend_share_of_holdout_revenue": _f(_top_share(past, revenue, share), 4),
            "best_possible_share": _f(_top_share(revenue, revenue, share), 4),
            "random_share": share,
        }
    ok = np.std(revenue) > 0 and np.std(clv) > 0
    clv_rank["spearman_clv_vs_holdout_revenue"] = _f(spearmanr(clv, revenue).statistic, 4) if ok else None
    clv_rank["spearman_past_spend_vs_holdout_revenue"] = (
        _f(spearmanr(past, revenue).statistic, 4) if ok and np.std(past) > 0 else None
    )
    return clv_rank


def _params(bg: BGNBDModel, gg: GammaGammaModel | None, unit: str) -> dict[str, Any]:
    params: dict[str, Any] = {
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
    return params


def _headline(trust: str, agg: dict, per_customer: dict, clv_rank: dict) -> dict[str, Any]:
    return {
        "trust": trust,
        "holdout_actual_repeat_purchases": agg["actual_repeat_purchases"],
        "holdout_predicted_repeat_purchases": agg["predicted_repeat_purchases"],
        "aggregate_error_pct": agg["error_pct"],
        "mae_model": per_customer["model"]["mae"],
        "mae_naive": per_customer["naive_own_past_rate"]["mae"],
        "clv_top20_revenue_share": clv_rank.get("top_20pct", {}).get("clv_share_of_holdout_revenue"),
        "spearman_clv": clv_rank.get("spearman_clv_vs_holdout_revenue"),
    }


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
    against past-spend ranking and the best possible, Spearman), ``spend_concentration``, ``warnings``.
    Only customers with a calibration purchase are scored (new holdout customers cannot be forecast).
    """
    cfg = config or Config()
    unit = cfg.time_unit
    split = calibration_holdout_split(transactions, calibration_end, holdout_end, time_unit=unit)
    cal_end = pd.Timestamp(split.attrs["as_of"])
    concentration = spend_concentration(split)
    warnings_ = [str(concentration["finding"])] if concentration["finding"] else []
    if float(split["frequency_holdout"].sum()) == 0:
        warnings_.append("no repeat purchases by calibration customers in the holdout window")
    bg, gg, fit_notes = _fit_models(split, cfg)
    warnings_ += fit_notes
    holdout = _Holdout.forecast(split, bg, gg)
    hold_end = cal_end + pd.Timedelta(days=round(holdout.duration * unit_days(unit)))
    agg, per_customer = _aggregate(holdout), _per_customer(holdout)
    p_alive_cal = _p_alive_calibration(holdout)
    clv_rank = _clv_ranking(split, bg, gg, cfg, holdout.actual_revenue)
    verdict, trust = _verdict(agg, per_customer, clv_rank, gg, p_alive_cal)
    return {
        "headline": _headline(trust, agg, per_customer, clv_rank),
        "verdict": verdict,
        "windows": {
            "calibration_end": cal_end.strftime("%Y-%m-%d"),
            "holdout_end": hold_end.strftime("%Y-%m-%d"),
            "holdout_duration": _f(holdout.duration, 4),
            "time_unit": unit,
        },
        "params": _params(bg, gg, unit),
        "aggregate": agg,
        "per_customer": per_customer,
        "tracking": _tracking(transactions, bg, split.index, cal_end, hold_end),
        "p_alive_calibration": p_alive_cal,
        "clv_ranking": clv_rank,
        "spend_concentration": concentration,
        "warnings": warnings_,
    }


# ------------------------------------------------------------------------------------ verdict
def _forecast_finding(agg: dict) -> Finding:
    err = agg["error_pct"]
    direction = "over" if err > 0 else "under"
    sentence = (
        f"BG/NBD forecast {agg['predicted_repeat_purchases']:.0f} repeat purchase days in the holdout against "
        f"{agg['actual_repeat_purchases']} actual ({abs(err):.1f}% {direction}-forecast)."
    )
    return [sentence], 2 if abs(err) > 30 else 1 if abs(err) > 15 else 0


def _revenue_finding(agg: dict) -> Finding:
    rev = agg.get("revenue_error_pct")
    if rev is None:
        return [], 0
    sentence = (
        f"Holdout revenue forecast (BG/NBD x Gamma-Gamma): {agg['predicted_revenue']:,.0f} against "
        f"{agg['actual_revenue']:,.0f} actual ({rev:+.1f}%)."
    )
    return [sentence], int(abs(rev) > 25)


def _per_customer_finding(per_customer: dict) -> Finding:
    imp = per_customer.get("mae_improvement_pct")
    if imp is None:
        return [], 0
    if imp > 0:
        return [f"Per customer it is {imp:.1f}% more accurate (MAE) than each customer's own past rate."], 0
    return [f"Per customer it is {-imp:.1f}% LESS accurate (MAE) than each customer's own past rate."], 2


def _share_finding(p_alive_cal: dict) -> Finding:
    share_err = p_alive_cal.get("mean_abs_share_error")
    if share_err is None:
        return [], 0
    sentence = (
        f"Predicted and observed shares of customers buying again differ by {100 * share_err:.1f} "
        "percentage points on average across P(alive) deciles."
    )
    return [sentence], int(share_err > 0.1)


def _ranking_finding(clv_rank: dict) -> Finding:
    top = clv_rank.get("top_20pct")
    if not top or top.get("clv_share_of_holdout_revenue") is None:
        return [], 0
    share = top["clv_share_of_holdout_revenue"]
    past = top.get("past_spend_share_of_holdout_revenue")
    sentence = f"The top 20% by predicted CLV brought {100 * share:.0f}% of holdout revenue" + (
        f" (ranking by past spend: {100 * past:.0f}%)." if past is not None else "."
    )
    return [sentence], int(share < 0.3)


def _spend_model_finding(gg: GammaGammaModel | None) -> Finding:
    if gg is None:
        return ["Gamma-Gamma could not be fitted, so no CLV check."], 1
    sentences: list[str] = []
    if not gg.independence_ok_:
        sentences.append(
            f"Spend per order is correlated with frequency (r = {gg.independence_corr_:.2f}), which breaks a "
            "Gamma-Gamma assumption: treat order values and CLV as rough."
        )
    if gg.q_warning_ is not None:
        sentences.append("Gamma-Gamma q <= 1 (very heavy-tailed spend): expected order values use observed means.")
    return sentences, len(sentences)


def _verdict(
    agg: dict, per_customer: dict, clv_rank: dict, gg: GammaGammaModel | None, p_alive_cal: dict
) -> tuple[str, str]:
    """Plain-language verdict and a trust level ("good", "use with care", "do not trust")."""
    if agg.get("error_pct") is None:
        return "No holdout purchases to compare with, so the forecasts cannot be checked.", "do not trust"
    findings = [
        _forecast_finding(agg),
        _revenue_finding(agg),
        _per_customer_finding(per_customer),
        _share_finding(p_alive_cal),
        _ranking_finding(clv_rank),
        _spend_model_finding(gg),
    ]
    problems = sum(n for _, n in findings)
    trust = "good" if problems == 0 else "use with care" if problems <= 2 else "do not trust"
    return VERDICT_LEADS[trust] + " " + " ".join(s for sentences, _ in findings for s in sentences), trust
