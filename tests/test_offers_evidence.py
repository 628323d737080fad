"""Offers chosen by evidence (rebuy.offers.evidence): harmful types off, significant margins first."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rebuy.config import Config
from rebuy.errors import UsageError
from rebuy.offers.evidence import annotate_reasons, evidence_from_uplift, read_uplift

PRIORITY = list(Config().offers.priority)


def entry(offer_type: str, verdict: str = "no effect shown", margin: float = 0.0, ci: tuple = (-1.0, 1.0),
          uplift: float = 0.0) -> dict:
    """One by_offer entry of a `rebuy measure` result."""
    return {"offer_type": offer_type, "verdict": verdict, "uplift": uplift,
            "incremental_margin_per_customer": margin, "incremental_margin_ci95": list(ci)}


def uplift(*entries: dict) -> dict:
    return {"as_of": "2025-01-31", "window_days": 30, "by_offer": list(entries)}


def test_harmful_rule_leaves_the_priority():
    ev = evidence_from_uplift(uplift(entry("referral", "harmful", -1.0, (-2.0, -0.5))), PRIORITY)
    assert "referral" not in ev.priority and ev.switched_off == ["referral"]


def test_significant_margins_move_first_highest_first():
    ev = evidence_from_uplift(uplift(entry("win_back", "works", 2.0, (0.5, 3.5)),
                                     entry("loyalty_points", "works", 4.0, (1.0, 7.0))), PRIORITY)
    assert ev.priority[:2] == ["loyalty_points", "win_back"]
    assert ev.promoted == ["loyalty_points", "win_back"]


def test_without_significant_evidence_the_configured_order_stays():
    ev = evidence_from_uplift(uplift(entry("win_back", "works", 2.0, (-0.1, 4.0)), entry("vip")), PRIORITY)
    assert ev.priority == PRIORITY and ev.promoted == [] and ev.switched_off == []


def test_a_type_with_a_missing_interval_is_not_promoted():
    ev = evidence_from_uplift(uplift({"offer_type": "win_back", "verdict": "no effect shown",
                                      "incremental_margin_per_customer": None, "incremental_margin_ci95": [None, None]}),
                              PRIORITY)
    assert ev.promoted == []


def test_reason_of_a_promoted_offer_quotes_its_evidence():
    ev = evidence_from_uplift(uplift(entry("win_back", "works", 2.0, (0.5, 3.5), uplift=0.041)), PRIORITY)
    out = annotate_reasons(np.array(["win_back", "vip"], dtype=object), np.array(["A.", "B."], dtype=object), ev)
    assert out[0] == ("A. Chosen by measured uplift (measured to 2025-01-31): win-back offers added +4.1 points "
                      "of purchase rate, 2.00 margin per customer (95% CI 0.50 to 3.50).")
    assert out[1] == "B."


def test_read_uplift_names_the_file_when_it_is_missing(tmp_path):
    with pytest.raises(UsageError, match=r"nope\.json: no such uplift file"):
        read_uplift(tmp_path / "nope.json")


def test_read_uplift_refuses_json_without_by_offer_entries(tmp_path):
    path = tmp_path / "u.json"
    path.write_text(json.dumps({"by_offer": [{"offer_type": "win_back"}]}))
    with pytest.raises(UsageError, match="offer_type and verdict"):
        read_uplift(path)


def test_harm_that_does_not_survive_holm_is_kept_and_said():
    weak = {**entry("vip", "harmful", -1.0, (-2.0, -0.1)), "significant_holm": False}
    ev = evidence_from_uplift(uplift(weak), PRIORITY)
    assert "vip" in ev.priority and ev.switched_off == [] and ev.kept_despite_harm == ["vip"]
