"""Uplift measurement (rebuy.measure): row builders for the edge cases, simulated truth for recovery."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from rebuy.errors import DataError
from rebuy.measure import format_uplift_table, measure_uplift, read_offer_log, uplift_summary_rows
from rebuy.simulate import simulate
from rebuy.simulate_offers import OfferEffect, simulate_responses, simulated_offer_log

DAY = pd.Timestamp("2024-03-01")
AS_OF = DAY + pd.Timedelta(days=40)


def decision(cid: str, day: pd.Timestamp = DAY, offer: str = "win_back", group: str = "treatment", **kw) -> dict:
    """One offer-log row; keyword arguments add or change columns."""
    return {"customer_id": cid, "decided_at": day, "offer_type": offer, "group": group,
            "discount_cost": 1.0 if group == "treatment" else 0.0, **kw}


def purchase(cid: str, when: pd.Timestamp, amount: float = 10.0) -> dict:
    return {"customer_id": cid, "order_id": f"{cid}-{when:%Y%m%d%H%M%S}", "timestamp": when, "amount": amount}


def log_of(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def tx_of(*rows: dict, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    """Transactions with a line on ``as_of`` by an outsider, so the default as-of day is known."""
    df = pd.DataFrame([*rows, purchase("outsider", as_of)])
    df["customer_id"] = df["customer_id"].astype("string")
    return df


def arm(prefix: str, group: str, n: int, buyers: int, offer: str = "win_back", **kw) -> list[dict]:
    """``n`` decisions of one group, the first ``buyers`` of them purchase on the decision day."""
    return [decision(f"{prefix}{i}", offer=offer, group=group, buys=i < buyers, **kw) for i in range(n)]


def measured(rows: list[dict], **kw) -> dict:
    """measure_uplift of ``rows`` (their ``buys`` flag: a purchase at noon on the decision day)."""
    tx = [purchase(r["customer_id"], r["decided_at"] + pd.Timedelta(hours=12)) for r in rows if r.pop("buys", False)]
    kw.setdefault("covariates", None)
    return measure_uplift(log_of(*rows), tx_of(*tx), **kw)


# ---------------------------------------------------------------------------------------------
# shape and reading


ENTRY_KEYS = {
    "treatment", "control", "response_treatment", "response_control", "uplift", "uplift_ci95",
    "incremental_revenue_per_customer", "incremental_revenue_ci95", "incremental_margin_per_customer",
    "incremental_margin_ci95", "mde", "verdict", "uplift_plain", "uplift_plain_ci95", "ci_width_ratio",
}


def test_result_has_the_documented_json_shape():
    rows = arm("t", "treatment", 20, 8, segment="Active") + arm("c", "control", 20, 4, segment="Lapsed")
    result = measured(rows, covariates="auto")
    assert {"window_days", "as_of", "margin", "decisions_total", "decisions_measured", "decisions_pending",
            "by_offer", "overall", "by_segment", "variance_reduction"} <= set(result)
    assert (result["window_days"], result["as_of"], result["margin"]) == (30, str(AS_OF.date()), 0.3)
    assert ENTRY_KEYS | {"offer_type"} <= set(result["by_offer"][0])
    assert ENTRY_KEYS <= set(result["overall"])
    assert all(ENTRY_KEYS | {"segment"} <= set(e) for e in result["by_segment"])
    assert set(result["variance_reduction"]) >= {"method", "covariates", "median_ci_width_ratio"}
    assert result["by_offer"][0]["verdict"] in ("works", "harmful", "no effect shown")
    json.dumps(result, allow_nan=False)


def test_plain_difference_and_welch_interval_match_a_hand_computation():
    result = measured(arm("t", "treatment", 40, 20) + arm("c", "control", 40, 10))
    e = result["by_offer"][0]
    se = np.sqrt(0.5 * 0.5 / 39 + 0.25 * 0.75 / 39)  # sample variances with ddof=1: p(1-p) n/(n-1), over n
    assert (e["response_treatment"], e["response_control"], e["uplift"]) == (0.5, 0.25, 0.25)
    assert e["uplift_ci95"] == pytest.approx([0.25 - 1.959964 * se, 0.25 + 1.959964 * se], abs=1e-5)
    assert e["mde"] == pytest.approx((1.959964 + 0.841621) * se, abs=1e-5)


def test_incremental_margin_is_margin_times_revenue_minus_the_treatment_discount():
    e = measured(arm("t", "treatment", 10, 10) + arm("c", "control", 10, 5), margin=0.5)["by_offer"][0]
    assert e["incremental_revenue_per_customer"] == pytest.approx(10.0 - 5.0)
    assert e["incremental_margin_per_customer"] == pytest.approx(0.5 * 5.0 - 1.0)


def test_a_missing_column_names_the_file_and_the_column(tmp_path):
    path = tmp_path / "offer_log.csv"
    log_of(decision("a")).drop(columns="group").to_csv(path, index=False)
    with pytest.raises(DataError, match=r"offer_log\.csv.*'group'"):
        read_offer_log(path)


def test_an_unparseable_decision_day_names_the_column_and_row(tmp_path):
    path = tmp_path / "offer_log.csv.gz"
    log_of(decision("a"), decision("b", day="31/02/2024")).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"offer_log\.csv\.gz: column 'decided_at'.*row 2 = '31/02/2024'"):
        read_offer_log(path)


def test_an_unknown_group_value_is_an_error():
    with pytest.raises(DataError, match=r"column 'group'.*'holdout'"):
        read_offer_log(log_of(decision("a"), decision("b", group="holdout")))


def test_rows_without_an_experiment_are_dropped_and_counted():
    log = read_offer_log(log_of(decision("a"), decision("b", group="none"), decision("c", group="Control")))
    assert list(log["group"]) == ["treatment", "control"]
    assert log.attrs["dropped_rows"] == 1


def test_types_are_normalised():
    log = read_offer_log(log_of(decision(7, day="2024-03-01 17:30"), decision("b", discount_cost=None)))
    assert log["customer_id"].dtype == "string" and list(log["customer_id"]) == ["7", "b"]
    assert list(log["decided_at"]) == [DAY, DAY]
    assert list(log["discount_cost"]) == [1.0, 0.0]


def test_duckdb_parquet_dataset_and_csv_sources_read_the_same(tmp_path):
    frame = log_of(decision("a"), decision("b", group="control"), decision("c", day=DAY + pd.Timedelta(days=1)))
    db = tmp_path / "scores.duckdb"
    with duckdb.connect(str(db)) as con:
        con.register("frame", frame)
        con.execute("CREATE TABLE offer_log AS SELECT * FROM frame")
    dataset = tmp_path / "offer_log"
    (dataset / "run=1").mkdir(parents=True)
    frame.iloc[:2].to_parquet(dataset / "run=1" / "part-0.parquet")
    frame.iloc[2:].to_parquet(dataset / "part-1.parquet")
    frame.to_parquet(dataset / "_ignored.parquet")
    frame.to_csv(tmp_path / "log.csv", index=False)
    expected = read_offer_log(frame)
    for source in (db, dataset, tmp_path / "log.csv"):
        got = read_offer_log(source).sort_values("customer_id", ignore_index=True)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)


# ---------------------------------------------------------------------------------------------
# windows and units


def test_a_purchase_on_the_decision_day_counts_and_one_on_the_last_day_plus_one_does_not():
    log = log_of(decision("on_day"), decision("after"), decision("c1", group="control"),
                 decision("c2", group="control"))
    tx = tx_of(purchase("on_day", DAY), purchase("after", DAY + pd.Timedelta(days=30)),
               purchase("c1", DAY - pd.Timedelta(seconds=1)))
    e = measure_uplift(log, tx, covariates=None)["by_offer"][0]
    assert (e["response_treatment"], e["response_control"]) == (0.5, 0.0)


def test_decisions_whose_window_has_not_passed_are_pending():
    ends_on_as_of = AS_OF - pd.Timedelta(days=29)  # window [d, d + 30) ends at as_of + 1 day: measurable
    log = log_of(decision("a", day=ends_on_as_of), decision("b", day=ends_on_as_of + pd.Timedelta(days=1)),
                 decision("c", day=ends_on_as_of, group="control"))
    result = measure_uplift(log, tx_of(), covariates=None)
    assert (result["decisions_total"], result["decisions_measured"], result["decisions_pending"]) == (3, 2, 1)


def test_as_of_defaults_to_the_last_transaction_day_and_can_be_set():
    log = log_of(decision("a"), decision("b", group="control"))
    assert measure_uplift(log, tx_of(), covariates=None)["decisions_measured"] == 2
    assert measure_uplift(log, tx_of(), as_of=DAY + pd.Timedelta(days=10), covariates=None)["decisions_pending"] == 2


def test_only_each_customers_first_decision_per_offer_type_is_measured():
    later = DAY + pd.Timedelta(days=1)
    log = log_of(decision("a"), decision("a", day=later), decision("a", offer="vip"), decision("b", group="control"),
                 decision("b", day=later, group="control"))
    tx = tx_of(purchase("a", later + pd.Timedelta(days=29, hours=1)))  # only in the second window
    result = measure_uplift(log, tx, covariates=None)
    win_back = next(e for e in result["by_offer"] if e["offer_type"] == "win_back")
    assert (win_back["treatment"], win_back["control"], win_back["response_treatment"]) == (1, 1, 0.0)
    assert result["overall"]["treatment"] + result["overall"]["control"] == 2  # a and b once each


def test_overall_is_stratified_by_offer_type_not_pooled():
    # no effect anywhere; type A: baseline 50%, half held out; type B: baseline 10%, 10% held out
    rows = (arm("at", "treatment", 100, 50, "win_back") + arm("ac", "control", 100, 50, "win_back")
            + arm("bt", "treatment", 900, 90, "vip") + arm("bc", "control", 100, 10, "vip"))
    pooled = (50 + 90) / 1000 - (50 + 10) / 200
    result = measured(rows)
    assert pooled == pytest.approx(-0.16)
    assert result["overall"]["uplift"] == pytest.approx(0.0, abs=1e-9)
    assert result["overall"]["response_treatment"] == pytest.approx(result["overall"]["response_control"])


def test_by_segment_reports_each_segment_stratified():
    rows = (arm("at", "treatment", 10, 5, segment="Active") + arm("ac", "control", 10, 5, segment="Active")
            + arm("lt", "treatment", 10, 4, segment="Lapsed") + arm("lc", "control", 10, 1, segment="Lapsed"))
    segments = {e["segment"]: e for e in measured(rows)["by_segment"]}
    assert set(segments) == {"Active", "Lapsed"}
    assert segments["Active"]["uplift"] == pytest.approx(0.0) and segments["Lapsed"]["uplift"] == pytest.approx(0.3)


def test_an_offer_type_without_control_gets_no_verdict_and_a_note():
    result = measured(arm("t", "treatment", 10, 5, "vip") + arm("w", "treatment", 10, 8) + arm("c", "control", 10, 2))
    vip = next(e for e in result["by_offer"] if e["offer_type"] == "vip")
    assert vip["verdict"] == "no effect shown" and "no control" in vip["note"]
    assert vip["uplift_ci95"] is None and vip["incremental_margin_ci95"] is None and vip["uplift"] is None
    assert result["overall"]["uplift"] == pytest.approx(0.6)  # the estimable type only


def test_the_terminal_table_has_one_line_per_offer_type_and_overall():
    result = measured(arm("t", "treatment", 10, 5, "vip") + arm("w", "treatment", 10, 8) + arm("c", "control", 10, 2))
    lines = format_uplift_table(result).splitlines()
    assert len(lines) == 3 + 2 + 1 and lines[-1].startswith("overall")
    assert "+60.0 [" in lines[-1] and "works" in lines[-1]


def test_the_terminal_table_marks_verdicts_that_do_not_survive_holm():
    result = measured(arm("t", "treatment", 10, 5, "vip") + arm("w", "treatment", 10, 8) + arm("c", "control", 10, 2))
    result["by_offer"][-1]["significant_holm"] = False
    lines = format_uplift_table(result).splitlines()
    assert "works*" in lines[-3]
    assert lines[-1].startswith("* not significant after Holm's correction over the 1 offer type tested")
    assert [label for label, _ in uplift_summary_rows(result)][-3:] == ["vip", "win_back", "overall"]


# ---------------------------------------------------------------------------------------------
# recovery of simulated truth

EFFECTS = {"win_back": OfferEffect(0.15), "vip": OfferEffect(0.0), "reminder": OfferEffect(-0.3)}
N_EXPERIMENTS = 200


@pytest.fixture(scope="module")
def experiments() -> pd.DataFrame:
    """200 small experiments (10 shops of 3,000 customers, 20 randomisations each, 3 offer types at
    a 50% control share): per offer type the truth, the estimates and the verdict."""
    shops = [simulate(3_000, seed=s, events=False) for s in range(10)]
    rows = []
    for i in range(N_EXPERIMENTS):
        sim = shops[i % len(shops)]
        log = simulated_offer_log(sim, control_share=0.5, min_control=10, experiment=f"exp-{i}", seed=i,
                                  offer_types=dict.fromkeys(EFFECTS, 1.0))
        responses = simulate_responses(sim, log, EFFECTS, seed=i)
        result = measure_uplift(log, pd.concat([sim.transactions, responses.transactions], ignore_index=True))
        for e in result["by_offer"]:
            rows.append({"offer_type": e["offer_type"], "truth": responses.truth[e["offer_type"]]["true_uplift"],
                         "adjusted": e["uplift"], "plain": e["uplift_plain"], "lo": e["uplift_ci95"][0],
                         "hi": e["uplift_ci95"][1], "verdict": e["verdict"], "ratio": e["ci_width_ratio"]})
    return pd.DataFrame(rows)


def test_intervals_cover_the_true_uplift_about_95_percent_of_the_time(experiments):
    # 600 intervals: binomial SD at 95% is sqrt(.95 * .05 / 600) = 0.9 points; 92-98% is > 3 SD either side
    covered = ((experiments["lo"] <= experiments["truth"]) & (experiments["truth"] <= experiments["hi"])).mean()
    assert 0.92 <= covered <= 0.98


def test_a_clearly_positive_offer_is_found_to_work(experiments):
    win_back = experiments[experiments["offer_type"] == "win_back"]
    assert win_back["truth"].mean() > 0.1 and (win_back["verdict"] == "works").mean() >= 0.99


def test_an_offer_without_effect_rarely_works(experiments):
    # one-sided false positives: 2.5% expected; 5% + 2 binomial SDs (2 * sqrt(.05 * .95 / 200) = 3.1 points)
    vip = experiments[experiments["offer_type"] == "vip"]
    assert (vip["truth"] == 0).all() and (vip["verdict"] == "works").mean() <= 0.05 + 0.031


def test_cuped_narrows_the_interval(experiments):
    assert experiments["ratio"].median() < 0.96 and (experiments["ratio"] < 1.0).mean() > 0.95


def test_cuped_estimate_is_unbiased(experiments):
    for _, runs in experiments.groupby("offer_type"):
        error = runs["adjusted"] - runs["truth"]
        assert abs(error.mean()) < 3 * error.std() / np.sqrt(len(error))


def test_nothing_measurable_yet_reports_all_decisions_pending():
    log = log_of(decision("a", day=AS_OF), decision("b", day=AS_OF, group="control"))
    result = measure_uplift(log, tx_of())
    assert (result["decisions_measured"], result["decisions_pending"], result["by_offer"]) == (0, 2, [])
    assert result["overall"]["verdict"] == "no effect shown" and result["overall"]["uplift_ci95"] is None
    json.dumps(result, allow_nan=False)


def test_log_covariates_with_missing_values_still_adjust():
    rows = [decision(f"t{i}", p_purchase_90d=np.nan if i == 0 else i / 40) for i in range(40)]
    rows += [decision(f"c{i}", group="control", p_purchase_90d=i / 40) for i in range(40)]
    tx = tx_of(*[purchase(r["customer_id"], DAY) for r in rows if r["p_purchase_90d"] > 0.5])
    result = measure_uplift(log_of(*rows), tx)
    assert "p_purchase_90d" in result["variance_reduction"]["covariates"]
    assert result["by_offer"][0]["ci_width_ratio"] < 1.0


def test_an_interval_below_zero_is_harmful():
    assert measured(arm("t", "treatment", 40, 2) + arm("c", "control", 40, 20))["by_offer"][0]["verdict"] == "harmful"


def test_aware_decision_times_are_converted_to_utc_days():
    log = read_offer_log(log_of(decision("a", day="2024-03-01T23:30:00-02:00"), decision("b", day="2024-03-01")))
    assert list(log["decided_at"]) == [DAY + pd.Timedelta(days=1), DAY]


def test_holm_rejects_in_order_and_stops_at_the_first_failure():
    from rebuy.measure.estimate import holm_significant

    # thresholds 0.05/4, 0.05/3, 0.05/2, 0.05/1 for the sorted p-values
    assert holm_significant([0.001, 0.03, 0.02, float("nan"), 0.04]) == [True, False, False, None, False]
    assert holm_significant([0.001, 0.016, 0.02]) == [True, True, True]
