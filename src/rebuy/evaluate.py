"""Validation of the value models on a calibration / holdout split (``rebuy evaluate``).

Train the value models exactly as ``rebuy train`` does (``rebuy.pipeline.fit_value_models``: the
purchase model chosen under ``purchase_model: auto``, the p_purchase_90d calibrator, Gamma-Gamma and
the CLV ranker) on the calibration window, score the calibration customers as ``rebuy score``
would (``pipeline.value_scores`` columns), and compare with what they did in the holdout:

- ``aggregate``, ``per_customer``, ``tracking``: repeat purchases and revenue, per-customer errors
  against each customer's own past rate, the cohort's weekly cumulative curve (FHL 2005, Fig. 2);
- ``buy_again``: AUC for buying again in the holdout of ``p_alive``, ``p_purchase_90d`` and the
  expected purchases, beside the recency (days since the last purchase) and frequency baselines,
  for everyone and for one-time buyers;
- ``p_alive_calibration`` (P(alive) deciles) and ``p_purchase_90d_calibration`` (deciles of the
  calibrated probability against who bought in the first 90 days of the holdout; the raw model's
  too);
- ``spend_interval``: how often the holdout revenue falls inside the 90% predictive interval for the
  holdout's length (the same machinery as ``spend_12m_p05``/``_p95``), and its width, beside one
  interval for everyone (the 5th-95th percentiles of the customers' spend in the same-length window
  before the cut);
- ``clv_ranking``: holdout revenue captured by the top 10% / 20% of ``clv_12m`` (the method the
  bundle would use, and the purchase x spend models' CLV), past spend, the best possible and
  random, and Spearman correlations.

:func:`rebuy.verdict.verdict` turns the sections into a plain-language verdict. Invariants: every
float in the result goes through :func:`_f` (rounded; None for NaN/inf), so ``json.dumps(result,
allow_nan=False)`` works; only customers with a calibration purchase are scored. Time in the
config's time unit, money in the transactions' currency.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rebuy.config import Config
from rebuy.data.values import is_in
from rebuy.dates import day_number, day_numbers_to_timestamps, unit_days
from rebuy.features import calibration_holdout_split, spend_concentration
from rebuy.metrics import auc, capture, decile_table, deciles, spearman
from rebuy.metrics import json_float as _f
from rebuy.models import PurchaseModel, SpendModel

logger = logging.getLogger(__name__)


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
    keep = (days <= end_day) & is_in(cid, pd.array(np.asarray(customers, dtype=object), dtype="string"))
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


# ------------------------------------------------------------------------------------ fitting and forecasting
@dataclass
class _Holdout:
    """Per calibration customer: the scores, what the models forecast for the holdout and what
    happened (purchases are repeat purchase days; revenue in currency; duration in time units)."""

    duration: float
    x: np.ndarray
    actual: np.ndarray
    actual_revenue: np.ndarray
    predicted: np.ndarray
    p_alive: np.ndarray
    p_buy: np.ndarray
    naive: np.ndarray
    order_value: np.ndarray
    scores: pd.DataFrame
    days_since_last: np.ndarray

    @classmethod
    def forecast(cls, split: pd.DataFrame, pm: PurchaseModel, sm: SpendModel, scores: pd.DataFrame) -> _Holdout:
        duration = float(split["duration_holdout"].iloc[0])
        x, tx, T = (split[c].to_numpy() for c in ("frequency", "recency", "T"))
        with np.errstate(divide="ignore", invalid="ignore"):
            naive = np.where(T > 0, x / np.where(T > 0, T, 1.0), 0.0) * duration
        cal_end = pd.Timestamp(split.attrs["as_of"])
        return cls(
            duration=duration,
            x=x,
            actual=split["frequency_holdout"].to_numpy(),
            actual_revenue=split["total_spend_holdout"].to_numpy(),
            predicted=pm.expected_purchases(duration, x, tx, T),
            p_alive=scores["p_alive"].to_numpy(),
            p_buy=pm.probability_of_purchase(duration, x, tx, T),
            naive=naive,
            order_value=sm.expected_order_value(x, split["monetary_value"].to_numpy()),
            scores=scores,
            days_since_last=(cal_end - split["last_purchase"]).dt.days.to_numpy().astype(np.float64),
        )


def _calibration_scores(transactions: pd.DataFrame, split: pd.DataFrame, cfg: Config) -> tuple[Any, pd.DataFrame]:
    """(the value models trained on the calibration window as ``rebuy train`` trains them, their
    score columns for the calibration customers as ``rebuy score`` computes them)."""
    from rebuy import pipeline
    from rebuy.models import score_value

    cal_end = pd.Timestamp(split.attrs["as_of"])
    train = transactions[transactions["timestamp"] < cal_end + pd.Timedelta(days=1)]
    summary = split[["frequency", "recency", "T", "monetary_value", "first_purchase", "last_purchase",
                     "purchase_days", "total_spend"]].copy()
    summary.attrs.update(split.attrs)
    values = pipeline.fit_value_models(train, summary, cfg, cal_end)
    scores = score_value(summary, values.purchase_model, values.spend_model, cfg, calibrator=values.calibrator)
    model_clv = scores["clv_12m"].copy()
    scores = pipeline.apply_clv_ranker(scores, values.clv_ranker, train, summary, cfg, cal_end)
    scores["model_clv_12m"] = model_clv
    return values, scores


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
            "date; predicted = the purchase model's unconditional forecast from each customer's first purchase day. "
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
        dec[repeaters] = deciles(h.p_alive[repeaters])
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
            "deciles of P(alive) among repeat customers, then one-time buyers (P(alive) = 1 for all of them "
            "under BG/NBD, by its definition; below 1 under MBG/NBD and Pareto/NBD). P(alive) is an upper bound on the share who buy in the holdout (an alive customer "
            "may not buy within the window); predicted_share_bought = P(alive) x P(a purchase in the window "
            "| alive) is the number to compare with observed_share_bought."
        ),
        "mean_abs_share_error": _f(
            np.mean([abs(r["predicted_share_bought"] - r["observed_share_bought"]) for r in rows]), 4
        ),
        "by_decile": rows,
        "repeat_customers_mean_p_alive": _f(h.p_alive[rep].mean(), 4) if rep.any() else None,
        "repeat_customers_share_bought": _f(bought[rep].mean(), 4) if rep.any() else None,
        "spearman_p_alive_vs_bought": spearman(h.p_alive[rep], bought[rep].astype(float)) if ranked else None,
    }




def to_json_floats(obj: Any) -> Any:
    """``obj`` with every float rounded through :func:`_f` (dicts and lists walked)."""
    if isinstance(obj, dict):
        return {k: to_json_floats(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json_floats(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return _f(obj)
    return obj


def _auc_row(scores: dict[str, np.ndarray], bought: np.ndarray, rows: np.ndarray) -> dict[str, float | None]:
    return {name: _f(auc(score[rows], bought[rows]), 4) for name, score in scores.items()}


def _buy_again(h: _Holdout) -> dict[str, Any]:
    """AUC for buying again in the holdout: the model's columns beside recency and frequency."""
    bought = h.actual > 0
    s = h.scores
    scores = {
        "p_alive": h.p_alive,
        "p_purchase_90d": s["p_purchase_90d"].to_numpy(),
        "expected_purchases_90d": s["expected_purchases_90d"].to_numpy(),
        "recency_baseline": -h.days_since_last,
        "frequency_baseline": h.x,
    }
    one_time = h.x == 0
    return {
        "note": "AUC (0.5 = chance) of each score for buying again in the holdout; recency_baseline ranks by "
                "days since the last purchase (fewer = more likely), frequency_baseline by repeat purchase days",
        "customers": int(len(bought)),
        "bought_share": _f(bought.mean(), 4),
        "one_time_buyers": int(one_time.sum()),
        "auc": _auc_row(scores, bought, np.ones(len(bought), dtype=bool)),
        "auc_one_time_buyers": _auc_row(scores, bought, one_time) if one_time.any() else {},
    }


def _decile_rows(predicted: np.ndarray, observed: np.ndarray) -> list[dict[str, Any]]:
    table = decile_table(predicted, observed)
    return [{"decile": int(r.decile), "customers": int(r.customers), "mean_predicted": _f(r.mean_predicted, 4),
             "observed_share": _f(r.observed_share, 4), "abs_error": _f(r.abs_error, 4)} for r in table.itertuples()]


def _p_purchase_calibration(transactions: pd.DataFrame, split: pd.DataFrame, h: _Holdout, pm: PurchaseModel,
                            cfg: Config) -> dict[str, Any]:
    """Deciles of ``p_purchase_90d`` (and of the raw model probability) against who bought within
    90 days of the calibration end; only a note when the holdout is shorter than 90 days."""
    from rebuy.models.value import P_PURCHASE_DAYS

    cal_end = pd.Timestamp(split.attrs["as_of"])
    if h.duration * unit_days(cfg.time_unit) < P_PURCHASE_DAYS:
        return {"note": f"holdout shorter than {P_PURCHASE_DAYS} days: not checked"}
    first = calibration_holdout_split(transactions, cal_end, cal_end + pd.Timedelta(days=P_PURCHASE_DAYS),
                                      time_unit=cfg.time_unit)
    bought = (first["frequency_holdout"].reindex(split.index).fillna(0) > 0).to_numpy()
    x, tx, T = (split[c].to_numpy() for c in ("frequency", "recency", "T"))
    predictions = {"calibrated": h.scores["p_purchase_90d"].to_numpy(),
                   "raw_model": pm.probability_of_purchase(P_PURCHASE_DAYS / unit_days(pm.time_unit_), x, tx, T)}
    out: dict[str, Any] = {"note": f"deciles of the predicted P(a purchase in {P_PURCHASE_DAYS} days) against the "
                                   f"share who bought in the first {P_PURCHASE_DAYS} days of the holdout",
                           "observed_share": _f(bought.mean(), 4)}
    for name, p in predictions.items():
        rows = _decile_rows(p, bought)
        errors = [r["abs_error"] for r in rows]
        out[name] = {"mean_predicted": _f(p.mean(), 4), "mean_abs_decile_error": _f(np.mean(errors), 4),
                     "max_abs_decile_error": _f(np.max(errors), 4), "auc": _f(auc(p, bought), 4), "by_decile": rows}
    return out


def _interval_figures(lower: np.ndarray, upper: np.ndarray, actual: np.ndarray, alpha: float = 0.1) -> dict[str, Any]:
    """Coverage, misses, widths and the mean interval score (Gneiting & Raftery 2007: width plus
    2/alpha times each miss, currency; lower is better, and it cannot be gamed by wide intervals)."""
    inside = (actual >= lower - 1e-9) & (actual <= upper + 1e-9)
    score = (upper - lower) + 2 / alpha * (np.maximum(lower - actual, 0) + np.maximum(actual - upper, 0))
    return {"coverage": _f(inside.mean(), 4), "below": _f((actual < lower - 1e-9).mean(), 4),
            "above": _f((actual > upper + 1e-9).mean(), 4), "mean_width": _f((upper - lower).mean(), 2),
            "median_width": _f(np.median(upper - lower), 2), "mean_interval_score": _f(score.mean(), 2)}


def shortest_interval(values: np.ndarray, share: float) -> tuple[float, float]:
    """The narrowest [lower, upper] holding at least ``share`` of ``values``."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    k = min(len(v) - 1, max(0, int(np.ceil(share * len(v))) - 1))
    widths = v[k:] - v[: len(v) - k]
    i = int(np.argmin(widths))
    return float(v[i]), float(v[i + k])


def _spend_interval(split: pd.DataFrame, h: _Holdout, values: Any, cfg: Config) -> dict[str, Any]:
    """Coverage and width of the 90% predictive interval of holdout revenue (for the holdout's own
    length), beside the best single interval for everyone (chosen in hindsight)."""
    from rebuy.models.predictive import LEVELS, nominal_coverage, spend_forecast

    rows = tuple(split[c].to_numpy() for c in ("frequency", "recency", "T", "monetary_value"))
    f = spend_forecast(values.purchase_model, values.spend_model, h.duration, rows, h.p_alive)
    days = int(round(h.duration * unit_days(cfg.time_unit)))
    model = _interval_figures(f.lower, f.upper, h.actual_revenue)
    lo, hi = shortest_interval(h.actual_revenue, model["coverage"] if model["coverage"] is not None else 0.9)
    level = int(round(100 * (LEVELS[1] - LEVELS[0])))
    return {
        "note": f"share of customers whose holdout revenue lies inside the {level}% predictive interval (the law's "
                f"5% and 95% quantiles) for the holdout's {days} days (spend_12m_p05/_p95 use the same method for 365 "
                "days); nominal_coverage = what a perfect model would cover (above 90% where a customer's chance of "
                "buying nothing exceeds 5%: the lower bound is then 0); one_interval_for_everyone = the narrowest "
                "single interval holding the same share of the holdout revenues, chosen in hindsight; "
                "mean_interval_score = width + 20 x each miss (lower is better): per-customer intervals must beat "
                "the single one on it to be worth having",
        "levels": list(LEVELS),
        "model": {**model, "nominal_coverage": _f(nominal_coverage(f.p_none).mean(), 4)},
        "one_interval_for_everyone": {"lower": _f(lo, 2), "upper": _f(hi, 2),
                                      **_interval_figures(np.full(len(f.mean), lo), np.full(len(f.mean), hi),
                                                          h.actual_revenue)},
        "predicted_revenue": _f(f.mean.sum(), 2),
        "actual_revenue": _f(h.actual_revenue.sum(), 2),
    }


def _clv_ranking(split: pd.DataFrame, h: _Holdout, values: Any, cfg: Config) -> dict[str, Any]:
    """Holdout revenue captured by the top 10% / 20% of ``clv_12m`` (the bundle's method), the
    purchase x spend models' CLV, past spend, the best possible and random; Spearman."""
    from rebuy.pipeline import clv_method, ranker_report

    revenue = h.actual_revenue
    clv = h.scores["clv_12m"].to_numpy()
    rankings = {"clv_12m": clv, "model_clv_12m": h.scores["model_clv_12m"].to_numpy(),
                "past_spend": split["total_spend"].to_numpy(), "best_possible": revenue}
    out: dict[str, Any] = {
        "method": clv_method(values.clv_ranker, cfg),
        "ranker": ranker_report(values.clv_ranker),
        "capture": {name: capture(score, revenue) for name, score in rankings.items()},
        "random": {"top_10pct": 0.1, "top_20pct": 0.2},
        "spearman": {name: spearman(score, revenue) for name, score in rankings.items() if name != "best_possible"},
    }
    cap = out["capture"]
    if cap["clv_12m"]["top_20pct"] is not None and cap["past_spend"]["top_20pct"] is not None:
        out["clv_minus_past_spend_top20_points"] = _f(100 * (cap["clv_12m"]["top_20pct"] - cap["past_spend"]["top_20pct"]), 2)
    return out


def _params(values: Any, unit: str, selection: dict[str, Any]) -> dict[str, Any]:
    from rebuy.pipeline import _model_name

    pm, sm = values.purchase_model, values.spend_model
    name = _model_name(type(pm))
    return {
        "time_unit": unit,
        "purchase_model": name,
        name: {k: _f(v, 6) for k, v in pm.params_.items()},
        "purchase_model_log_likelihood": _f(pm.log_likelihood_, 3),
        "purchase_model_penalizer_used": pm.penalizer_,
        "selection": selection,
        "gamma_gamma": {k: _f(v, 6) for k, v in sm.params_.items()},
        "gamma_gamma_penalizer_used": sm.penalizer_,
        "gamma_gamma_independence_corr": _f(sm.independence_corr_, 4),
        "gamma_gamma_q_above_1": sm.q_warning_ is None,
    }


def _headline(trust: str, sections: dict[str, Any]) -> dict[str, Any]:
    agg, pc, rank = sections["aggregate"], sections["per_customer"], sections["clv_ranking"]
    buy, interval = sections["buy_again"]["auc"], sections["spend_interval"]["model"]
    p90 = sections["p_purchase_90d_calibration"].get("calibrated") or {}
    return {
        "trust": trust,
        "purchase_model": sections["params"]["purchase_model"],
        "holdout_actual_repeat_purchases": agg["actual_repeat_purchases"],
        "holdout_predicted_repeat_purchases": agg["predicted_repeat_purchases"],
        "aggregate_error_pct": agg["error_pct"],
        "revenue_error_pct": agg.get("revenue_error_pct"),
        "mae_model": pc["model"]["mae"],
        "mae_naive": pc["naive_own_past_rate"]["mae"],
        "auc_p_alive": buy["p_alive"],
        "auc_p_alive_one_time_buyers": sections["buy_again"]["auc_one_time_buyers"].get("p_alive"),
        "auc_p_purchase_90d": buy["p_purchase_90d"],
        "auc_recency_baseline": buy["recency_baseline"],
        "p_purchase_90d_mean_decile_error": p90.get("mean_abs_decile_error"),
        "p_purchase_90d_max_decile_error": p90.get("max_abs_decile_error"),
        "spend_interval_coverage": interval["coverage"],
        "clv_method": rank["method"],
        "clv_top20_revenue_share": rank["capture"]["clv_12m"]["top_20pct"],
        "past_spend_top20_revenue_share": rank["capture"]["past_spend"]["top_20pct"],
        "clv_minus_past_spend_top20_points": rank.get("clv_minus_past_spend_top20_points"),
        "spearman_clv": rank["spearman"]["clv_12m"],
    }


def evaluate_value_models(
    transactions: pd.DataFrame,
    calibration_end: dt.date | str | pd.Timestamp,
    holdout_end: dt.date | str | pd.Timestamp | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Train on transactions up to ``calibration_end`` as ``rebuy train`` does and check the holdout
    (days after it up to ``holdout_end``, default the last transaction date). Returns a
    JSON-serialisable dict: ``headline``, ``verdict``, ``windows``, ``params`` (the chosen purchase
    model, every candidate's holdout figures, Gamma-Gamma), the sections of the module docstring,
    ``spend_concentration`` and ``warnings``. Only customers with a calibration purchase are scored
    (new holdout customers cannot be forecast)."""
    from rebuy.verdict import verdict

    cfg = config or Config()
    unit = cfg.time_unit
    split = calibration_holdout_split(transactions, calibration_end, holdout_end, time_unit=unit)
    cal_end = pd.Timestamp(split.attrs["as_of"])
    concentration = spend_concentration(split)
    warnings_ = [str(concentration["finding"])] if concentration["finding"] else []
    if float(split["frequency_holdout"].sum()) == 0:
        warnings_.append("no repeat purchases by calibration customers in the holdout window")
    values, scores = _calibration_scores(transactions, split, cfg)
    warnings_ += [*values.purchase_model.warnings_, *values.spend_model.warnings_]
    h = _Holdout.forecast(split, values.purchase_model, values.spend_model, scores)
    hold_end = cal_end + pd.Timedelta(days=round(h.duration * unit_days(unit)))
    sections: dict[str, Any] = {
        "windows": {"calibration_end": cal_end.strftime("%Y-%m-%d"), "holdout_end": hold_end.strftime("%Y-%m-%d"),
                    "holdout_duration": _f(h.duration, 4), "time_unit": unit},
        "params": _params(values, unit, values.selection),
        "aggregate": _aggregate(h),
        "per_customer": _per_customer(h),
        "tracking": _tracking(transactions, values.purchase_model, split.index, cal_end, hold_end),
        "buy_again": _buy_again(h),
        "p_alive_calibration": _p_alive_calibration(h),
        "p_purchase_90d_calibration": _p_purchase_calibration(transactions, split, h, values.purchase_model, cfg),
        "spend_interval": _spend_interval(split, h, values, cfg),
        "clv_ranking": _clv_ranking(split, h, values, cfg),
    }
    text, trust = verdict(sections, values.spend_model)
    return {"headline": _headline(trust, sections), "verdict": text, **sections,
            "spend_concentration": to_json_floats(concentration), "warnings": warnings_}
