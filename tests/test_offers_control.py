"""Control groups (rebuy.offers.control): an auditable hash, shares by tonight's counts, the hold-out."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from rebuy.offers.control import (
    CONTROL,
    NO_EXPERIMENT,
    TREATMENT,
    ShareDecision,
    assign_groups,
    control_draws,
    control_shares,
    experiment_key,
    hold_out,
)


def offers_table(n: int, offer_type: str = "win_back", channel: str = "email") -> pd.DataFrame:
    """``n`` customers with one offer each, as the score table's offer columns."""
    return pd.DataFrame({
        "customer_id": pd.array([f"c{i}" for i in range(n)], dtype="string"),
        "offer_type": pd.array([offer_type] * n, dtype="string"),
        "channel": pd.array([channel] * n, dtype="string"),
        "max_contacts_per_month": np.full(n, 4, dtype=np.int64),
        "offer_reason": pd.array(["P(alive) fell to 0.34."] * n, dtype="string"),
        "discount_cost": np.full(n, 5.0),
    })


def test_draw_is_the_documented_sha256_so_anyone_can_recompute_it():
    expected = int(hashlib.sha256(b"2026-12|13085").hexdigest()[:16], 16) / 2**64
    assert control_draws(["13085"], "2026-12")[0] == expected


def test_draws_are_uniform_and_differ_between_experiments():
    ids = [str(i) for i in range(20000)]
    a, b = control_draws(ids, "2026-11"), control_draws(ids, "2026-12")
    assert abs((a < 0.1).mean() - 0.1) < 0.01  # binomial sd 0.002
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.05


def test_default_experiment_is_the_decision_month_and_a_configured_key_wins():
    assert experiment_key(None, pd.Timestamp("2026-12-01")) == experiment_key(None, pd.Timestamp("2026-12-31"))
    assert experiment_key(None, pd.Timestamp("2027-01-01")) == "2027-01"
    assert experiment_key("spring-test", pd.Timestamp("2027-01-01")) == "spring-test"


def test_large_type_gets_the_configured_share():
    assert control_shares({"win_back": 5000}, 0.1, 100, 0.5)["win_back"] == ShareDecision(0.1, "")


def test_small_type_gets_a_larger_share_with_a_note():
    d = control_shares({"vip": 400}, 0.1, 100, 0.5)["vip"]
    assert d.share == pytest.approx(0.25)
    assert "raised to 25%" in d.note


def test_tiny_type_gets_no_control_group_and_says_so():
    d = control_shares({"birthday": 150}, 0.1, 100, 0.5)["birthday"]
    assert d.share == 0.0 and "too few" in d.note


def test_customers_without_an_offer_are_in_no_group():
    group, share = assign_groups(np.array(["a", "b"]), np.array(["none", "none"]), "k",
                                 {"none": ShareDecision(0.5, "")})
    assert list(group) == [NO_EXPERIMENT, NO_EXPERIMENT] and (share == 0).all()


def test_a_customer_keeps_the_group_across_offer_types_with_the_same_share():
    ids = np.array([str(i) for i in range(2000)])
    shares = {"win_back": ShareDecision(0.2, ""), "cross_sell": ShareDecision(0.2, "")}
    g1, _ = assign_groups(ids, np.array(["win_back"] * 2000), "2026-12", shares)
    g2, _ = assign_groups(ids, np.array(["cross_sell"] * 2000), "2026-12", shares)
    assert (g1 == g2).all()


def test_hold_out_keeps_the_decision_but_sends_nothing():
    out = hold_out(offers_table(3000), experiment="2026-12", shares={"win_back": ShareDecision(0.1, "")})
    control = out["group"] == CONTROL
    assert 200 < control.sum() < 400
    held = out[control]
    assert (held["offer_type"] == "win_back").all()
    assert (held["channel"] == "none").all() and (~held["deliver"]).all()
    assert (held["discount_cost"] == 0).all() and (held["max_contacts_per_month"] == 0).all()
    assert held["offer_reason"].str.startswith("Held out to measure win-back offers").all()
    assert held["offer_reason"].str.endswith("P(alive) fell to 0.34.").all()


def test_treated_customers_are_delivered_only_with_a_channel():
    table = offers_table(4)
    table.loc[1, "channel"] = "none"
    out = hold_out(table, experiment="k", shares={"win_back": ShareDecision(0.0, "")})
    assert (out["group"] == TREATMENT).all()
    assert out["deliver"].tolist() == [True, False, True, True]


def test_hold_out_is_deterministic_across_runs():
    shares = {"win_back": ShareDecision(0.3, "")}
    a = hold_out(offers_table(500), experiment="2026-12", shares=shares)
    b = hold_out(offers_table(500).sample(frac=1, random_state=1), experiment="2026-12", shares=shares)
    assert a.set_index("customer_id")["group"].equals(b.set_index("customer_id")["group"].loc[a["customer_id"]])
