"""Online Retail II, trained as of 2010-12-09 and checked on who bought in the six months after
(``rebuy evaluate``'s first development split, with configs/online_retail_ii.yaml as shipped).

The purchases there cannot tell a slow dropout of everyone from a share of one-time buyers who
never return: the unpenalised models put (a, b) or (s, beta) far out on that flat ridge, where
P(alive) ranks the holdout buyers below days-since-the-last-purchase. ``auto``'s ridge candidates
(``selection.ridge_penalizer``) predict the holdout purchases as well; MBG/NBD's then says a share
of customers leave after their first purchase and the others stay, and its P(alive) ranks.
One evaluation for the module: about 15 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rebuy.config import load_config
from rebuy.data import load_transactions
from rebuy.evaluate import evaluate_value_models

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "online_retail_ii.csv.gz"


@pytest.fixture(scope="module")
def evaluation() -> dict:
    cfg = load_config(REPO / "configs" / "online_retail_ii.yaml", overrides={"clv.method": "model"})
    tx = load_transactions(DATA, cfg)
    return evaluate_value_models(tx, "2010-12-09", "2011-06-09", cfg)


def test_the_ridge_candidates_predict_purchases_as_well(evaluation):
    selection = evaluation["params"]["selection"]
    tolerance = selection["tie_tolerance"]
    plain, ridge = selection["candidates"]["mbgnbd"], selection["candidates"]["mbgnbd+ridge"]
    assert ridge["penalizer"] > plain["penalizer"] == 0
    assert ridge["log_loss"] <= plain["log_loss"] + tolerance
    # MBG/NBD's ridge is the split population: a share drops at the first purchase, the rest stay
    assert ridge["auc_p_alive"] > plain["auc_p_alive"] + 0.1
    assert ridge["params_last_window"]["b"] < 0.01 < plain["params_last_window"]["b"]


def test_auto_keeps_a_ridge_candidate_whose_p_alive_ranks_better_than_recency(evaluation):
    selection = evaluation["params"]["selection"]
    assert selection["chosen_candidate"].endswith("+ridge")
    auc = evaluation["buy_again"]["auc"]
    assert auc["p_alive"] > auc["recency_baseline"] + 0.03
    assert evaluation["params"]["purchase_model_penalizer_used"] == selection["ridge_penalizer"]
