"""Simulated offer experiments (rebuy.simulate_offers): effects, the offer log and the responses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rebuy.errors import SimulationError
from rebuy.offers.control import control_draws
from rebuy.schema import OFFER_LOG_COLUMNS
from rebuy.simulate import simulate
from rebuy.simulate_offers import (
    DEFAULT_EFFECTS,
    OfferEffect,
    parse_effects,
    simulate_responses,
    simulated_offer_log,
)

WINDOW = 30


@pytest.fixture(scope="module")
def sim():
    return simulate(4_000, seed=5, events=False)


@pytest.fixture(scope="module")
def log(sim):
    return simulated_offer_log(sim, control_share=0.3, seed=2)


def test_parse_effects_reads_response_and_optional_spend():
    assert parse_effects(["win_back=0.05", "vip=0:1.2", "reminder=-0.1"]) == {
        "win_back": OfferEffect(0.05), "vip": OfferEffect(0.0, 1.2), "reminder": OfferEffect(-0.1)}
    assert parse_effects({"cross_sell": 0.02, "birthday": (0.1, 2.0)})["birthday"] == OfferEffect(0.1, 2.0)


@pytest.mark.parametrize("item, message", [
    ("win_back", "expected NAME=RESPONSE"), ("win_back=lots", "must be numbers"), ("coupon=0.1", "unknown offer type"),
    ("win_back=1.5", "response must be in"), ("win_back=0.1:-1", "spend must be"), ("vip=0.1:1:2", "RESPONSE:SPEND"),
])
def test_parse_effects_names_the_bad_item(item, message):
    with pytest.raises(SimulationError, match=f"offer effect '{item}'.*{message}"):
        parse_effects([item])


def test_default_effects_include_positive_zero_and_harmful_offers():
    responses = [e.response for e in DEFAULT_EFFECTS.values()]
    assert max(responses) >= 0.05 and 0.0 in responses and min(responses) < 0


def test_offer_log_has_the_schema_columns_and_one_night(sim, log):
    assert list(log.columns) == OFFER_LOG_COLUMNS
    assert len(log) == len(sim.latent) and log["customer_id"].is_unique
    assert (log["decided_at"] == pd.Timestamp(sim.truth["end"]) + pd.Timedelta(days=1)).all()


def test_offer_log_groups_follow_the_control_hash(log):
    draws = control_draws(log["customer_id"], log["experiment"].iloc[0])
    assert ((draws < log["control_share"]) == (log["group"] == "control")).all()
    assert set(log["group"]) == {"treatment", "control"}


def test_only_treated_customers_with_a_channel_are_delivered_and_cost(log):
    assert not (log["deliver"] & (log["group"] == "control")).any()
    assert not (log["deliver"] & (log["channel"] == "none")).any()
    assert (log.loc[~log["deliver"], "discount_cost"] == 0).all() and (log.loc[log["deliver"], "discount_cost"] > 0).all()


def test_responses_are_deterministic_per_seed(sim, log):
    a, b = simulate_responses(sim, log, seed=3), simulate_responses(sim, log, seed=3)
    pd.testing.assert_frame_equal(a.transactions, b.transactions)
    assert a.truth == b.truth
    assert not simulate_responses(sim, log, seed=4).transactions.equals(a.transactions)


def test_response_transactions_look_like_the_shops(sim, log):
    tx = simulate_responses(sim, log, seed=1).transactions
    start = pd.Timestamp(sim.truth["end"]) + pd.Timedelta(days=1)
    assert tx.dtypes.to_dict() == sim.transactions.dtypes.to_dict()
    assert tx["order_id"].is_unique and not tx["order_id"].isin(sim.transactions["order_id"]).any()
    assert tx["timestamp"].between(start, start + pd.Timedelta(days=WINDOW), inclusive="left").all()
    assert tx["customer_id"].is_monotonic_increasing


def test_only_alive_customers_buy_without_an_offer(sim, log):
    tx = simulate_responses(sim, log, effects={}, seed=1).transactions
    alive = set(sim.latent.loc[sim.latent["alive"], "customer_id"])
    assert len(tx) > 0 and set(tx["customer_id"]) <= alive


def test_effects_change_only_treated_delivered_customers(sim, log):
    none = simulate_responses(sim, log, effects={}, seed=1).transactions
    strong = simulate_responses(sim, log, effects=["win_back=0.5", "reminder=-1"], seed=1).transactions
    untouched = set(log.loc[~log["deliver"] | ~log["offer_type"].isin(["win_back", "reminder"]), "customer_id"])
    keep = lambda tx: tx[tx["customer_id"].isin(untouched)].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(keep(none)[["customer_id", "timestamp", "amount"]],
                                  keep(strong)[["customer_id", "timestamp", "amount"]])
    reminded = set(log.loc[log["deliver"] & (log["offer_type"] == "reminder"), "customer_id"])
    assert not strong["customer_id"].isin(reminded).any()


def test_truth_is_zero_for_no_effect_and_near_its_expectation_otherwise(sim, log):
    truth = simulate_responses(sim, log, effects={"win_back": OfferEffect(0.3), "reminder": OfferEffect(-0.5)}).truth
    assert truth["vip"]["true_uplift"] == 0.0 and truth["vip"]["true_incremental_revenue_per_customer"] == 0.0
    assert truth["win_back"]["true_uplift"] == pytest.approx(truth["win_back"]["expected_uplift"], abs=0.04)
    assert truth["win_back"]["true_incremental_revenue_per_customer"] > 0
    assert truth["reminder"]["true_uplift"] < 0 and truth["reminder"]["expected_uplift"] < 0
    assert (truth["window_days"], truth["decided_at"]) == (WINDOW, str(log["decided_at"].iloc[0].date()))
    assert truth["win_back"]["treatment"] + truth["win_back"]["control"] == (log["offer_type"] == "win_back").sum()


def test_responses_need_one_decision_night(sim, log):
    two = log.copy()
    two.loc[:10, "decided_at"] += pd.Timedelta(days=1)
    with pytest.raises(SimulationError, match="one night"):
        simulate_responses(sim, two)


def test_a_later_decision_night_continues_through_the_gap(sim):
    later = pd.Timestamp(sim.truth["end"]) + pd.Timedelta(days=11)
    log = simulated_offer_log(sim, decided_at=later)
    tx = simulate_responses(sim, log, seed=1).transactions
    assert tx["timestamp"].min() < later <= tx["timestamp"].max() < later + pd.Timedelta(days=WINDOW)
    assert np.isfinite([v["expected_uplift"] for k, v in simulate_responses(sim, log).truth.items()
                        if isinstance(v, dict)]).all()
