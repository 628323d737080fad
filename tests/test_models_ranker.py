"""rebuy.models.ranker / ranker_features: the CLV ranker's features, fit/predict contract and that it
learns a planted signal past spend misses.

The probabilistic models are replaced by a closed-form stand-in (:func:`stand_in_predictions`), so
no test depends on an optimiser: the ranker must work whatever model produced the columns.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rebuy.errors import FeatureError, InvalidParameterError
from rebuy.features import calibration_holdout_split, rfm_summary
from rebuy.models.ranker import CLVRanker, expected_spend
from rebuy.models.ranker_features import ranker_features
from rebuy.simulate import simulate

AS_OF = pd.Timestamp("2023-12-31")


def stand_in_predictions(summary: pd.DataFrame) -> pd.DataFrame:
    """Deterministic stand-in for the probabilistic models: rate = purchase days per week of tenure."""
    weeks = summary["T"].to_numpy() + 1.0
    rate = summary["purchase_days"].to_numpy() / weeks
    return pd.DataFrame(
        {
            "p_alive": np.exp(-(summary["T"] - summary["recency"]).to_numpy() / 26.0),
            "expected_purchases_90d": rate * 90 / 7,
            "expected_purchases_365d": rate * 365 / 7,
            "expected_order_value": summary["total_spend"].to_numpy() / summary["purchase_days"].to_numpy(),
        },
        index=summary.index,
    )


@pytest.fixture(scope="module")
def shop() -> pd.DataFrame:
    """Two years of a simulated shop, with a country column (every 7th customer abroad)."""
    tx = simulate(2500, seed=3, start="2022-01-01", end="2023-12-31", n_products=300, events=False).transactions
    abroad = tx["customer_id"].str[1:].astype(int).to_numpy() % 7 == 0
    return tx.assign(country=np.where(abroad, "France", "United Kingdom"))


@pytest.fixture(scope="module")
def fitted(shop: pd.DataFrame) -> CLVRanker:
    return CLVRanker(min_samples_leaf=30).fit(shop, AS_OF, stand_in_predictions)


def scoring_inputs(tx: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    summary = rfm_summary(tx, as_of=AS_OF)
    return summary, stand_in_predictions(summary)


# ------------------------------------------------------------------------------------ features


def test_features_one_finite_row_per_customer(shop: pd.DataFrame) -> None:
    summary, preds = scoring_inputs(shop)
    X = ranker_features(shop, summary, preds, AS_OF)
    assert X.index.equals(summary.index)
    assert np.isfinite(X.drop(columns=["gap_cv"]).to_numpy()).all()  # gap_cv: NaN below 3 purchase days
    np.testing.assert_allclose(X["total_spend"], summary["total_spend"])
    np.testing.assert_allclose(X["spend_365d"] <= X["total_spend"] + 1e-9, True)
    assert (X["distinct_products"] >= 1).all() and X["return_rate"].between(0, 1).all()


def test_a_customer_alone_gets_the_batch_features(shop: pd.DataFrame) -> None:
    summary, preds = scoring_inputs(shop)
    X = ranker_features(shop, summary, preds, AS_OF)
    one = summary.index[3]
    alone = ranker_features(shop[shop["customer_id"] == one], summary.loc[[one]], preds.loc[[one]], AS_OF)
    pd.testing.assert_frame_equal(alone, X.loc[[one]])


def test_features_ignore_lines_after_as_of_and_prediction_order(shop: pd.DataFrame) -> None:
    summary, preds = scoring_inputs(shop)
    early = pd.Timestamp("2023-06-30")
    cut = shop[shop["timestamp"] < early + pd.Timedelta(days=1)]
    s_early = rfm_summary(cut, as_of=early)
    p_early = stand_in_predictions(s_early)
    a = ranker_features(cut, s_early, p_early, early)
    b = ranker_features(shop, s_early, p_early.iloc[::-1], early)  # later lines and shuffled predictions
    pd.testing.assert_frame_equal(a, b)


def test_features_without_optional_columns(shop: pd.DataFrame) -> None:
    bare = shop.drop(columns=["product_id", "country", "quantity", "price", "order_id"])
    summary, preds = scoring_inputs(bare)
    X = ranker_features(bare, summary, preds, AS_OF)
    for col in ("distinct_products", "return_rate"):
        assert X[col].isna().all()
    assert np.isfinite(X["spend_90d"]).all() and (X["orders"] == summary["purchase_days"]).all()


def test_features_reject_missing_predictions(shop: pd.DataFrame) -> None:
    summary, preds = scoring_inputs(shop)
    with pytest.raises(FeatureError, match="expected_order_value"):
        ranker_features(shop, summary, preds.drop(columns="expected_order_value"), AS_OF)
    with pytest.raises(FeatureError, match="no predictions for 1 customer"):
        ranker_features(shop, summary, preds.iloc[1:], AS_OF)


def test_expected_spend_interpolates_horizons() -> None:
    p = pd.DataFrame({"expected_purchases_90d": [1.0], "expected_purchases_365d": [3.0], "expected_order_value": [10.0]})
    assert expected_spend(p, 45)[0] == pytest.approx(5.0)
    assert expected_spend(p, 90)[0] == pytest.approx(10.0)
    assert expected_spend(p, 365)[0] == pytest.approx(30.0)
    assert expected_spend(p, 730)[0] == pytest.approx(60.0)


# --------------------------------------------------------------------------------- fit / predict


def test_fit_predict_contract(shop: pd.DataFrame, fitted: CLVRanker) -> None:
    assert fitted.horizon_days_ == 365 and fitted.model_ is not None
    assert isinstance(fitted.use_, bool) and fitted.reason_.startswith("Ranker ")
    assert "horizon_days" in fitted.feature_names_ and not any(c.startswith("_") for c in fitted.feature_names_)
    cap = json.loads(json.dumps(fitted.holdout_))["capture"]
    assert set(cap) == {"ranker", "probabilistic", "past_spend"} and fitted.holdout_["used"] == fitted.use_
    assert fitted.use_ == (cap["ranker"]["top_20pct"] > max(cap["probabilistic"]["top_20pct"], cap["past_spend"]["top_20pct"]))
    summary, preds = scoring_inputs(shop)
    out = fitted.predict(shop, summary, preds, AS_OF)
    assert out.shape == (len(summary),) and np.isfinite(out).all() and (out >= 0).all()
    order = np.random.default_rng(0).permutation(len(summary))
    again = fitted.predict(shop, summary.iloc[order], preds.iloc[order], AS_OF)
    np.testing.assert_allclose(again, out[order])  # one prediction per summary row, in its order


def test_fit_is_deterministic_and_works_without_products_or_country(shop: pd.DataFrame, fitted: CLVRanker) -> None:
    again = CLVRanker(min_samples_leaf=30).fit(shop, AS_OF, stand_in_predictions)
    assert again.holdout_ == fitted.holdout_
    bare = shop.drop(columns=["product_id", "country"])
    ranker = CLVRanker(min_samples_leaf=30).fit(bare, AS_OF, stand_in_predictions)
    assert ranker.model_ is not None and "distinct_products" not in ranker.feature_names_
    summary, preds = scoring_inputs(bare)
    out = ranker.predict(bare, summary, preds, AS_OF)
    assert np.isfinite(out).all() and (out >= 0).all()


def test_horizon_shrinks_with_history_and_is_refused_below_minimum(shop: pd.DataFrame) -> None:
    short = shop[shop["timestamp"] >= pd.Timestamp("2023-05-01")]  # 245 days of history
    ranker = CLVRanker(min_samples_leaf=30).fit(short, AS_OF, stand_in_predictions)
    assert ranker.history_days_ == 245 and ranker.horizon_days_ == 122 and ranker.model_ is not None
    shorter = shop[shop["timestamp"] >= pd.Timestamp("2023-08-01")]  # 153 days: h = 76 < 90
    refused = CLVRanker().fit(shorter, AS_OF, stand_in_predictions)
    assert refused.use_ is False and refused.model_ is None and "min_horizon_days=90" in refused.reason_
    json.dumps(refused.holdout_)
    summary, preds = scoring_inputs(shorter)
    out = refused.predict(shorter, summary, preds, AS_OF)  # falls back to the probabilistic expected spend
    np.testing.assert_allclose(out, expected_spend(preds, 76))


def test_subsampling_caps_training_customers(shop: pd.DataFrame) -> None:
    ranker = CLVRanker(max_train_customers=600, min_samples_leaf=20).fit(shop, AS_OF, stand_in_predictions)
    assert 0 < ranker.n_train_customers_ <= 600


def test_bad_parameters_are_named(shop: pd.DataFrame) -> None:
    with pytest.raises(InvalidParameterError, match="past_spend_weight"):
        CLVRanker(past_spend_weight=1.0).fit(shop, AS_OF, stand_in_predictions)
    with pytest.raises(InvalidParameterError, match="window_fractions"):
        CLVRanker(window_fractions=(0.5, 1.0)).fit(shop, AS_OF, stand_in_predictions)


# ------------------------------------------------------------------------------- planted signal


def planted_shop(n: int = 1600, seed: int = 0) -> pd.DataFrame:
    """Two kinds of customer over 2022-01-01 .. 2024-06-30. Regulars buy every 10-30 days for 20-60
    throughout; one-off bulk buyers place one order of 300-3000 and never return. Past spend puts
    the bulk buyers on top; only the regulars spend after any date."""
    rng = np.random.default_rng(seed)
    start, end = pd.Timestamp("2022-01-01"), pd.Timestamp("2024-06-30")
    span = (end - start).days
    rows = []
    for i in range(n):
        cid = f"C{i:05d}"
        if i % 2 == 0:
            gap, first = rng.uniform(10, 30), rng.uniform(0, span * 0.8)
            days = np.arange(first, span, gap)
            values = rng.uniform(20, 60, len(days))
        else:
            days, values = np.array([rng.uniform(0, span)]), np.array([rng.uniform(300, 3000)])
        for d, v in zip(days, values, strict=True):
            rows.append((cid, start + pd.Timedelta(days=int(d)), v))
    tx = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    tx["customer_id"] = tx["customer_id"].astype("string")
    return tx.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)


def top_share(score: np.ndarray, revenue: np.ndarray, share: float = 0.2) -> float:
    k = int(round(share * len(score)))
    return float(revenue[np.argsort(-score, kind="stable")[:k]].sum() / revenue.sum())


def test_ranker_beats_past_spend_on_planted_signal() -> None:
    tx = planted_shop()
    as_of = pd.Timestamp("2023-12-31")
    seen = tx[tx["timestamp"] < as_of + pd.Timedelta(days=1)]
    ranker = CLVRanker(min_samples_leaf=20).fit(seen, as_of, stand_in_predictions)
    split = calibration_holdout_split(tx, as_of, "2024-06-30")
    summary = split.drop(columns=[c for c in split.columns if c.endswith("_holdout")])
    score = ranker.predict(seen, summary, stand_in_predictions(summary), as_of)
    revenue = split["total_spend_holdout"].to_numpy()
    ours, past = top_share(score, revenue), top_share(summary["total_spend"].to_numpy(), revenue)
    assert ours > past + 0.3, (ours, past)
    cap = ranker.holdout_["capture"]
    assert ranker.use_ or cap["ranker"]["top_20pct"] <= cap["probabilistic"]["top_20pct"]
    assert cap["ranker"]["top_20pct"] > cap["past_spend"]["top_20pct"] + 0.3


def test_rounding_to_ten_significant_digits_skips_only_what_it_leaves_unchanged():
    from rebuy.models.ranker import _significant

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.lognormal(3, 4, 5_000), np.round(rng.lognormal(3, 4, 5_000)), [0.0, np.nan, np.inf,
                        -np.inf, 123456789.0, 1234567890123.0, -7.0, -3.3e-7]])
    ok = np.isfinite(x) & (x != 0)
    expected = x.copy()
    exponent = np.floor(np.log10(np.abs(x[ok])))
    expected[ok] = np.round(x[ok] * 10.0 ** (9 - exponent)) / 10.0 ** (9 - exponent)  # the plain rule on every value
    got = _significant(x)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(_significant(x.reshape(-1, 1)).ravel(), expected)  # 2-D as 1-D


def test_prediction_rounds_only_what_the_splits_can_tell(shop: pd.DataFrame, fitted: CLVRanker) -> None:
    # predict rounds a feature only near one of its column's splits; the trees must see exactly
    # what full rounding gives, also for values planted within rounding reach of every split
    from rebuy.models.ranker import _significant, _significant_codes
    from rebuy.models.trees import split_codes

    summary = rfm_summary(shop, as_of=AS_OF, time_unit="weeks")
    X = fitted._features(shop, summary, stand_in_predictions(summary), AS_OF, fitted.horizon_days_, rounded=False)
    M = X[fitted.feature_names_].to_numpy(dtype=np.float64)
    trees = fitted.model_
    inner = ~trees.is_leaf
    splits = [np.unique(trees.threshold[inner & (trees.feature == j)]) for j in range(M.shape[1])]
    planted = M.copy()
    rows = np.arange(len(M))
    for j, s in enumerate(splits):
        if len(s):
            t = s[rows % len(s)]
            planted[:, j] = np.where(rows % 3 == 0, t * (1 + 3e-11), np.where(rows % 3 == 1, t * (1 - 3e-11), M[:, j]))
    assert any(len(s) for s in splits)
    for values in (M, planted):
        coded = trees.link_inverse(trees.raw_predict_codes(_significant_codes(values, splits), splits))
        np.testing.assert_array_equal(coded, trees.predict(_significant(values)))
        # the codes predict() uses are those of the rounded values
        np.testing.assert_array_equal(_significant_codes(values, splits), split_codes(_significant(values), splits))
    full = fitted._blend(fitted._features(shop, summary, stand_in_predictions(summary), AS_OF, fitted.horizon_days_))
    np.testing.assert_array_equal(fitted.predict(shop, summary, stand_in_predictions(summary), AS_OF), full)
