"""Tests for the per-call recommendation policy, the fitted state layout and the light defaults."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from rebuy.config import Config
from rebuy.errors import InvalidParameterError, RebuyError
from rebuy.recommend import DEFAULT_EXCLUDED, DEFAULT_EXCLUDED_PREFIXES, Recommender, RecommendPolicy
from rebuy.recommend.state import FITTED_ALIASES
from test_recommend import _bought, _synthetic  # tests/ is on sys.path (pytest's default import mode)


@pytest.fixture(scope="module")
def tx() -> pd.DataFrame:
    cat = _synthetic()
    return cat.assign(category=np.where(cat["product_id"].str[1:2] == "1", "food", "durable"))


@pytest.fixture(scope="module")
def fitted(tx: pd.DataFrame) -> Recommender:
    return Recommender(factors=8, iterations=10, regularization=0.1, alpha=1.0).fit(tx)


def test_policy_per_call_equals_a_refit_with_those_params_and_changes_nothing(
    fitted: Recommender, tx: pd.DataFrame
) -> None:
    customers = [*fitted.customer_ids_, "nobody"]
    params = fitted.get_params()
    for change in (
        {"allow_repurchase": True},
        {"allow_repurchase": True, "history_weight": 0.0},
        {"repurchase_categories": ("food",), "history_weight": 0.5},
        {"min_history": 5},
    ):
        per_call = fitted.recommend(customers, 6, policy=replace(fitted.policy, **change))
        refit = fitted.clone(**change).fit(tx)
        assert per_call == refit.recommend(customers, 6), change
    assert fitted.get_params() == params and fitted.policy == RecommendPolicy()
    # the default policy is back for the next call: nothing bought is offered again
    bought = _bought(tx)
    assert all(not set(lst) & bought[c] for c, lst in fitted.recommend(customers[:-1], 6).items())


def test_policy_exclusions_apply_to_product_calls(fitted: Recommender) -> None:
    ban = replace(fitted.policy, excluded_product_prefixes=(*DEFAULT_EXCLUDED_PREFIXES, "P1"))
    for lst in (
        fitted.similar_items("P12", 8, policy=ban),
        fitted.bought_together(["P12"], 8, policy=ban),
        fitted.upsell("P05", 8, policy=ban),
        fitted.recommend_one("c001", 8, policy=ban),
    ):
        assert lst and not any(p.startswith("P1") for p in lst)
    assert fitted.excluded_mask(ban).sum() == 10 and not fitted.excluded_mask().any()
    assert any(p.startswith("P1") for p in fitted.similar_items("P12", 8))  # the default policy again


def test_policy_validation() -> None:
    with pytest.raises(InvalidParameterError, match="history_weight"):
        RecommendPolicy(history_weight=1.5)
    with pytest.raises(InvalidParameterError, match="excluded_products"):
        RecommendPolicy(excluded_products="POST")
    assert RecommendPolicy(repurchase_categories=["food"]).repurchase_categories == ("food",)
    with pytest.raises(InvalidParameterError, match="policy"):
        Recommender(factors=2, iterations=1).fit(_synthetic(n_customers=30)).recommend(["c001"], policy={})
    with pytest.raises(InvalidParameterError, match="output"):
        Recommender().recommend(["x"], output="json")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError) as err:
        Recommender(weighting="idf").fit(_synthetic(n_customers=30))
    assert isinstance(err.value, RebuyError) and isinstance(err.value, ValueError)
    with pytest.raises(InvalidParameterError, match="unknown parameter"):
        Recommender().set_params(nope=1)


def test_fitted_attributes_are_read_only_views_of_the_parts(fitted: Recommender) -> None:
    assert fitted.product_ids_ is fitted.interactions_.product_ids
    with pytest.raises(AttributeError, match="read-only"):
        fitted.popular_ = np.zeros(3)  # type: ignore[misc]
    with pytest.raises(AttributeError, match="not fitted"):
        _ = Recommender().product_ids_
    with pytest.raises(RuntimeError, match="not fitted"):
        Recommender().recommend(["x"])


def test_flat_pickle_state_of_earlier_versions_loads(fitted: Recommender) -> None:
    # earlier versions pickled one attribute per array (customer ids as a unicode buffer)
    legacy = dict(fitted.get_params())
    legacy.update({a: getattr(fitted, a) for a in FITTED_ALIASES if a != "customer_index_"})
    legacy.update(
        as_of_=fitted.as_of_, model_=fitted.model_, factors_=fitted.factors_,
        item_norms_=fitted.latent_.item_norms, customer_ids_=fitted.customer_ids_.astype(str),
        excluded_mask_=np.zeros(len(fitted.product_ids_), dtype=bool),
    )
    back = Recommender.__new__(Recommender)
    back.__setstate__(legacy)
    customers = [*fitted.customer_ids_, "nobody"]
    pd.testing.assert_frame_equal(
        back.recommend(customers, 7, output="frame"), fitted.recommend(customers, 7, output="frame")
    )
    assert back.customer_ids_.dtype == object and back.customer_index_ == fitted.customer_index_
    assert back.bought_together(["P05"]) == fitted.bought_together(["P05"])
    assert back.similar_items("P23") == fitted.similar_items("P23")


def test_excluded_defaults_have_one_source_and_config_stays_light() -> None:
    cfg = Config().recommend
    assert cfg.excluded_products == list(DEFAULT_EXCLUDED)
    assert cfg.excluded_product_prefixes == list(DEFAULT_EXCLUDED_PREFIXES)
    assert Recommender().excluded_products == DEFAULT_EXCLUDED
    code = (
        "import sys, rebuy.config; "
        "print(sorted(m for m in ('numpy', 'pandas', 'scipy', 'implicit') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
