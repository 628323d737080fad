"""The plain-language verdict of ``rebuy evaluate``: one finding per check, then a trust level.

Each ``_..._finding(sections)`` returns (sentences, problems); the trust level is "good" with no
problem, "use with care" with one or two, "do not trust" with more. Two checks can never pass as
"good" (the issue that introduced them: a team would ask why it needs the model otherwise):

- the CLV ranking must beat ranking by past spend by at least :data:`MIN_CLV_GAIN_POINTS` points of
  the holdout revenue captured by the top 20%;
- the holdout revenue forecast must be within :data:`MAX_REVENUE_ERROR_PCT` percent.

``sections`` are the report sections :func:`rebuy.evaluate.evaluate_value_models` builds.
"""

from __future__ import annotations

from typing import Any

TRUST_LEVELS = ("good", "use with care", "do not trust")
VERDICT_LEADS = {
    "good": "Verdict: the models can be trusted on this data.",
    "use with care": "Verdict: usable with care.",
    "do not trust": "Verdict: do not rely on these models for this data without changes.",
}
MIN_CLV_GAIN_POINTS = 2.0
"""Top-20% revenue capture (percentage points) by which clv_12m must beat past spend for "good"."""
MAX_REVENUE_ERROR_PCT = 15.0
"""Largest holdout revenue forecast error (percent) compatible with "good"."""

Finding = tuple[list[str], int]
"""One verdict check: (sentences, problems found)."""


def _forecast_finding(s: dict[str, Any]) -> Finding:
    from rebuy.models import PURCHASE_MODELS

    agg, name = s["aggregate"], s["params"]["purchase_model"]
    model = PURCHASE_MODELS[name].DISPLAY_NAME if name in PURCHASE_MODELS else name
    err = agg["error_pct"]
    direction = "over" if err > 0 else "under"
    sentence = (
        f"The purchase model ({model}) forecast {agg['predicted_repeat_purchases']:.0f} repeat purchase days in the "
        f"holdout against {agg['actual_repeat_purchases']} actual ({abs(err):.1f}% {direction}-forecast)."
    )
    return [sentence], 2 if abs(err) > 30 else 1 if abs(err) > 15 else 0


def _revenue_finding(s: dict[str, Any]) -> Finding:
    agg = s["aggregate"]
    rev = agg.get("revenue_error_pct")
    if rev is None:
        return [], 0
    sentence = (
        f"Holdout revenue forecast (purchases x Gamma-Gamma): {agg['predicted_revenue']:,.0f} against "
        f"{agg['actual_revenue']:,.0f} actual ({rev:+.1f}%)."
    )
    return [sentence], 2 if abs(rev) > 2 * MAX_REVENUE_ERROR_PCT else int(abs(rev) > MAX_REVENUE_ERROR_PCT)


def _per_customer_finding(s: dict[str, Any]) -> Finding:
    imp = s["per_customer"].get("mae_improvement_pct")
    if imp is None:
        return [], 0
    if imp > 0:
        return [f"Per customer it is {imp:.1f}% more accurate (MAE) than each customer's own past rate."], 0
    return [f"Per customer it is {-imp:.1f}% LESS accurate (MAE) than each customer's own past rate."], 2


def _buy_again_finding(s: dict[str, Any]) -> Finding:
    auc = s["buy_again"]["auc"]
    p_alive, recency, p90 = auc.get("p_alive"), auc.get("recency_baseline"), auc.get("p_purchase_90d")
    if p_alive is None or recency is None:
        return [], 0
    sentence = (f"Who buys again: P(alive) ranks with AUC {p_alive:.2f}, p_purchase_90d {p90:.2f}, days since the "
                f"last purchase {recency:.2f}.")
    if p_alive < recency:
        sentence += " P(alive) ranks worse than recency alone: prefer p_purchase_90d for targeting."
    return [sentence], int(p_alive < 0.5)


def _calibration_finding(s: dict[str, Any]) -> Finding:
    cal = s["p_purchase_90d_calibration"].get("calibrated")
    if not cal:
        return [], 0
    err = cal["mean_abs_decile_error"]
    sentence = (f"p_purchase_90d is off by {100 * err:.1f} points on average across its deciles "
                f"(worst decile {100 * cal['max_abs_decile_error']:.1f}).")
    return [sentence], int(err > 0.05)


def _interval_finding(s: dict[str, Any]) -> Finding:
    cov = s["spend_interval"]["model"]["coverage"]
    if cov is None:
        return [], 0
    sentence = f"The 90% spend interval held the holdout revenue for {100 * cov:.0f}% of customers."
    return [sentence], int(not 0.8 <= cov <= 0.97)


def _ranking_finding(s: dict[str, Any]) -> Finding:
    rank = s["clv_ranking"]
    cap = rank["capture"]
    share, past = cap["clv_12m"]["top_20pct"], cap["past_spend"]["top_20pct"]
    if share is None or past is None:
        return [], 0
    gain = 100 * (share - past)
    sentence = (f"The top 20% by clv_12m ({rank['method']}) brought {100 * share:.1f}% of holdout revenue, ranking by "
                f"past spend {100 * past:.1f}% ({gain:+.1f} points).")
    if gain < MIN_CLV_GAIN_POINTS:
        sentence += f" That is less than {MIN_CLV_GAIN_POINTS:.0f} points: rank by past spend, or treat CLV as rough."
    return [sentence], int(gain < MIN_CLV_GAIN_POINTS) + int(share < 0.3)


def _spend_model_finding(spend_model: Any) -> Finding:
    sentences: list[str] = []
    if not spend_model.independence_ok_:
        sentences.append(
            f"Spend per order is correlated with frequency (r = {spend_model.independence_corr_:.2f}), which breaks a "
            "Gamma-Gamma assumption: treat order values and CLV as rough."
        )
    if spend_model.q_warning_ is not None:
        sentences.append("Gamma-Gamma q <= 1 (very heavy-tailed spend): expected order values use observed means.")
    return sentences, len(sentences)


def verdict(sections: dict[str, Any], spend_model: Any) -> tuple[str, str]:
    """Plain-language verdict and a trust level ("good", "use with care", "do not trust")."""
    if sections["aggregate"].get("error_pct") is None:
        return "No holdout purchases to compare with, so the forecasts cannot be checked.", "do not trust"
    findings = [
        _forecast_finding(sections),
        _revenue_finding(sections),
        _per_customer_finding(sections),
        _buy_again_finding(sections),
        _calibration_finding(sections),
        _interval_finding(sections),
        _ranking_finding(sections),
        _spend_model_finding(spend_model),
    ]
    problems = sum(n for _, n in findings)
    trust = "good" if problems == 0 else "use with care" if problems <= 2 else "do not trust"
    return VERDICT_LEADS[trust] + " " + " ".join(s for sentences, _ in findings for s in sentences), trust
