"""Tests for rebuy.evaluate_recommender, including the quality bar on Online Retail II."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rebuy.config import load_config
from rebuy.evaluate_recommender import evaluate_recommender, prepare_split, ranking_metrics
from rebuy.recommend import Recommender

_SHOP = load_config(Path(__file__).resolve().parents[1] / "configs" / "online_retail_ii.yaml").recommend
SHOP_EXCLUSIONS = {"excluded_products": list(_SHOP.excluded_products),
                   "excluded_product_prefixes": list(_SHOP.excluded_product_prefixes)}

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail_ii.csv.gz"
CFG = REPO / "configs" / "online_retail_ii.yaml"


@pytest.fixture(scope="module")
def retail() -> pd.DataFrame:
    from rebuy.data import load_transactions

    return load_transactions(DATA, load_config(CFG))


@pytest.fixture(scope="module")
def report(retail: pd.DataFrame) -> dict:
    # the quality-bar split of the issue: the default (tuned) config, never tuned on this period
    return evaluate_recommender(retail, "2011-09-01", "2011-12-09", load_config(CFG), new_items_only=False)


def test_ranking_metrics_hand_worked() -> None:
    recs = {"a": ["x", "y", "z"], "b": ["p", "q"]}
    rel = {"a": {"y", "w"}, "b": {"r"}}
    m = ranking_metrics(recs, rel, k=3)
    # a: one hit at rank 2 -> P=1/3, R=1/2, DCG=1/log2(3), IDCG=1+1/log2(3), AP=(1/2)/2; b: nothing
    assert m["precision@3"] == pytest.approx((1 / 3) / 2)
    assert m["recall@3"] == pytest.approx(0.5 / 2)
    assert m["ndcg@3"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)) / 2)
    assert m["map@3"] == pytest.approx(0.25 / 2)


def test_split_never_leaks_test_period(retail: pd.DataFrame) -> None:
    split = prepare_split(retail, "2011-09-01", "2011-12-09", Recommender(**SHOP_EXCLUSIONS))
    assert split.train["timestamp"].max() < pd.Timestamp("2011-09-01")
    new = split.relevant("new_items")
    assert new and all(not (items & split.bought_before.get(c, set())) for c, items in new.items())
    assert not any(
        {"POST", "DOT", "M", "BANK CHARGES"} & items for items in split.relevant("repurchase").values()
    )


def test_report_is_json_and_complete(report: dict) -> None:
    back = json.loads(json.dumps(report))
    assert set(back["modes"]) == {"new_items", "repurchase"}
    for mode in back["modes"].values():
        assert mode["n_test_customers"] > 1000
        for method in ("model", "popularity", "own_history"):
            assert set(mode[method]) == {
                "precision@10",
                "recall@10",
                "ndcg@10",
                "map@10",
                "coverage",
                "customers_with_recommendation",
            }
            assert all(np.isfinite(v) and 0 <= v <= 1 for v in mode[method].values())
        assert mode["model"]["customers_with_recommendation"] == 1.0
        assert mode["model"]["coverage"] > 5 * mode["popularity"]["coverage"]


def test_quality_bar_new_items(report: dict) -> None:
    r = report["modes"]["new_items"]
    assert r["model"]["ndcg@10"] >= 1.8 * r["popularity"]["ndcg@10"]
    assert r["model"]["recall@10"] >= 1.8 * r["popularity"]["recall@10"]
    assert r["own_history"]["recall@10"] == 0.0  # by construction: nothing new in one's own history


def test_quality_bar_repurchase_blend_beats_own_history(report: dict) -> None:
    r = report["modes"]["repurchase"]
    own = r["own_history"]
    assert own["ndcg@10"] > 2.5 * r["popularity"]["ndcg@10"]  # the strong baseline the issue describes
    for metric in ("ndcg@10", "recall@10", "precision@10", "map@10"):
        assert r["model"][metric] > own[metric], metric


def test_small_synthetic_split_and_config_inputs() -> None:
    rng = np.random.default_rng(1)
    rows = [
        (f"c{c}", pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(d)), f"P{(c % 2) * 5 + int(p)}")
        for c in range(60)
        for d, p in zip(rng.integers(0, 100, 8), rng.integers(0, 5, 8), strict=True)
    ]
    df = pd.DataFrame(rows, columns=["customer_id", "timestamp", "product_id"])
    df["price"] = 1.0
    df["amount"] = 1.0
    out = evaluate_recommender(df, "2024-03-01", "2024-04-10", Recommender(factors=4, iterations=5))
    assert set(out["modes"]) == {"new_items"}
    assert out["modes"]["new_items"]["model"]["customers_with_recommendation"] == 1.0
    with pytest.raises(ValueError, match="product_id"):
        evaluate_recommender(df.drop(columns=["product_id"]), "2024-03-01", "2024-04-10", None)
    with pytest.raises(ValueError, match="not after cutoff"):
        evaluate_recommender(df, "2024-03-01", "2024-02-01", None)


def test_tuning_script_refuses_the_test_period() -> None:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "tune_recommender.py"), "--valid-end", "2011-09-15"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert res.returncode != 0 and "test period" in res.stderr
