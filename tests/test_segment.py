"""RFM scores, named segments, the RFM clusterer and cluster profiles (rebuy.segment)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.utils.estimator_checks import check_estimator

from rebuy.config import ConfigError, SegmentConfig, load_config
from rebuy.errors import InvalidParameterError
from rebuy.segment import (
    FEATURE_COLUMNS,
    RFMClusterer,
    RFMScorer,
    SegmentError,
    assign_segments,
    cluster_profiles,
    infer_time_unit_days,
    rfm_features,
    rfm_scores,
    segment_customers,
    segment_grid,
    silhouette_scores,
    simplified_silhouette,
)

NAMED_SEGMENTS = {
    "Champions",
    "Loyal Customers",
    "Potential Loyalists",
    "New Customers",
    "Promising",
    "Need Attention",
    "About to Sleep",
    "At Risk",
    "Can't Lose Them",
    "Hibernating",
    "Lost",
}


def make_summary(since_last, orders, spend, T=None, unit_days: float = 1.0) -> pd.DataFrame:
    """An RFM summary frame (time unit = ``unit_days`` days) from days since last purchase, purchase
    days (``orders``: one order per purchase day here) and spend."""
    since_last = np.asarray(since_last, dtype=float)
    orders = np.asarray(orders, dtype=float)
    spend = np.asarray(spend, dtype=float)
    n = len(orders)
    T_days = np.full(n, 400.0) if T is None else np.asarray(T, dtype=float)
    T_days = np.maximum(T_days, since_last)
    recency_days = np.where(orders > 1, T_days - since_last, 0.0)
    T_days = np.where(orders > 1, T_days, since_last)  # one-time buyers: first = last purchase
    as_of = pd.Timestamp("2024-01-01")
    last = as_of - pd.to_timedelta(since_last, unit="D")
    first = last - pd.to_timedelta(recency_days, unit="D")
    freq = orders - 1
    return pd.DataFrame(
        {
            "frequency": freq,
            "recency": recency_days / unit_days,
            "T": T_days / unit_days,
            "monetary_value": np.where(freq > 0, spend / np.maximum(orders, 1), 0.0),
            "first_purchase": first,
            "last_purchase": last,
            "purchase_days": orders.astype(np.int64),
            "total_spend": spend,
        },
        index=pd.Index([f"c{i}" for i in range(n)], name="customer_id", dtype="string"),
    )


def rfm_blobs(seed: int, sizes=(150, 300, 250, 200)) -> tuple[pd.DataFrame, np.ndarray]:
    """Four clearly separated, RFM-like customer groups (true labels returned)."""
    rng = np.random.default_rng(seed)
    #           days since last, orders, spend per order (medians)
    groups = [(8, 40, 300.0), (420, 1, 15.0), (60, 8, 60.0), (150, 2, 900.0)]
    since, orders, spend, truth = [], [], [], []
    for g, ((d, o, m), n) in enumerate(zip(groups, sizes, strict=True)):
        since.append(rng.lognormal(np.log(d), 0.15, n))
        o_g = np.maximum(1, np.round(rng.lognormal(np.log(o), 0.1, n))) if o > 1 else np.ones(n)
        orders.append(o_g)
        spend.append(o_g * rng.lognormal(np.log(m), 0.15, n))
        truth.append(np.full(n, g))
    perm = rng.permutation(sum(sizes))
    s = make_summary(
        np.concatenate(since)[perm],
        np.concatenate(orders)[perm],
        np.concatenate(spend)[perm],
        T=np.full(sum(sizes), 700.0),
    )
    return s, np.concatenate(truth)[perm]


# --------------------------------------------------------------------------------------------------
# RFM scores
# --------------------------------------------------------------------------------------------------


def test_scores_distinct_values_hand_worked():
    s = make_summary(since_last=[50, 40, 30, 20, 10], orders=[1, 2, 3, 4, 5], spend=[10, 20, 30, 40, 50])
    sc = rfm_scores(s)
    assert list(sc.columns) == ["r_score", "f_score", "m_score"]
    assert sc.index.equals(s.index)
    assert sc["f_score"].tolist() == [1, 2, 3, 4, 5]
    assert sc["m_score"].tolist() == [1, 2, 3, 4, 5]
    assert sc["r_score"].tolist() == [1, 2, 3, 4, 5]  # fewest days since the last purchase = R 5
    assert all(sc[c].dtype == np.int64 for c in sc.columns)


def test_scores_heavy_ties_hand_worked():
    # 60% one-time buyers: pd.qcut cannot even build the bins ...
    orders = [1, 1, 1, 1, 1, 1, 2, 2, 3, 10]
    with pytest.raises(ValueError):
        pd.qcut(pd.Series(orders), 5, labels=False)
    s = make_summary(since_last=[5] * 10, orders=orders, spend=[7.0] * 10)
    sc = rfm_scores(s)
    # ... quantile edges (linear) are [1, 1, 1.4, 2.2]; score = 1 + edges below the value
    assert sc["f_score"].tolist() == [1, 1, 1, 1, 1, 1, 4, 4, 5, 5]
    # no variation at all -> the neutral middle score
    assert set(sc["r_score"]) == {3} and set(sc["m_score"]) == {3}


@pytest.mark.parametrize(
    "orders, expected",
    [
        ([4], [3]),  # one customer: no information -> middle
        ([1, 3], [1, 5]),
        ([3, 1], [5, 1]),
        ([1, 2, 3], [1, 3, 5]),
        ([2, 2, 2, 2], [3, 3, 3, 3]),  # all equal
        ([1, 1, 5], [1, 1, 5]),
    ],
)
def test_scores_small_data(orders, expected):
    s = make_summary(
        since_last=np.arange(len(orders)) * 3.0 + 1, orders=orders, spend=np.array(orders) * 10.0
    )
    sc = rfm_scores(s)
    assert sc["f_score"].tolist() == expected
    assert sc["m_score"].tolist() == expected
    assert not sc.isna().any().any()


@pytest.mark.parametrize("n_bins", [2, 3, 5, 10])
def test_scores_properties_random_heavy_ties(n_bins):
    rng = np.random.default_rng(n_bins)
    n = 5000
    orders = rng.geometric(0.55, n)  # ~55% one-time buyers
    spend = np.round(orders * rng.lognormal(3, 1, n), 0)
    since = rng.integers(0, 30, n).astype(float) * 7  # weekly ties
    s = make_summary(since, orders, spend)
    sc = rfm_scores(s, n_bins=n_bins)
    assert not sc.isna().any().any()
    for col, raw, sign in [("f_score", orders, 1), ("m_score", spend, 1), ("r_score", since, -1)]:
        v = sc[col].to_numpy()
        assert v.min() >= 1 and v.max() <= n_bins
        # equal values -> equal scores, and scores never decrease with the value (increase for R)
        per_value = pd.Series(v).groupby(sign * raw).agg(["min", "max"])
        assert (per_value["min"] == per_value["max"]).all()
        assert per_value["min"].is_monotonic_increasing
    assert sc["f_score"][orders == 1].eq(1).all()  # one-time buyers always score F = 1
    assert sc["r_score"][since == since.min()].eq(n_bins).all()  # the most recent always score top R


def test_scores_are_quantiles_on_continuous_data():
    rng = np.random.default_rng(7)
    n = 10_000
    s = make_summary(rng.uniform(0, 365, n), rng.integers(1, 1000, n), rng.lognormal(4, 1, n))
    sc = rfm_scores(s)
    for col in sc.columns:
        shares = sc[col].value_counts(normalize=True)
        assert len(shares) == 5 and np.allclose(shares, 0.2, atol=0.01)
    # M comes from total_spend: the top spenders are M 5
    assert sc["m_score"][s["total_spend"] >= s["total_spend"].quantile(0.81)].eq(5).all()


def test_scorer_learned_edges_apply_to_new_customers():
    train = make_summary([50, 40, 30, 20, 10], [1, 2, 3, 4, 5], [10, 20, 30, 40, 50])
    scorer = RFMScorer().fit(train)
    new = make_summary(
        [100, 0, 30], [50, 1, 3], [1000, 1, 30]
    )  # edges: days [18, 26, 34, 42], orders [1.8, 2.6, 3.4, 4.2]
    sc = scorer.transform(new)
    assert sc["f_score"].tolist() == [5, 1, 3]
    assert sc["m_score"].tolist() == [5, 1, 3]
    assert sc["r_score"].tolist() == [1, 5, 3]
    # a constant training column: below / equal / above the value
    const = RFMScorer(n_bins=5).fit(make_summary([5, 5], [2, 2], [10, 10]))
    assert const.transform(make_summary([5, 5, 5], [1, 2, 3], [10, 10, 10]))["f_score"].tolist() == [1, 3, 5]


def test_scorer_conventions_and_fallback_columns():
    s = make_summary([50, 40, 30, 20, 10], [1, 2, 3, 4, 5], [10, 40, 90, 160, 250])  # monetary 0, 20, .., 50
    scorer = RFMScorer(n_bins=4)
    assert clone(scorer).get_params() == {"n_bins": 4}
    with pytest.raises(NotFittedError):
        scorer.transform(s)
    assert scorer.fit(s) is scorer
    assert scorer.frequency_column_ == "purchase_days" and scorer.monetary_column_ == "total_spend"
    # a lifetimes-style frame (no purchase_days / total_spend) ranks F by frequency, M by monetary_value
    lt = s[["frequency", "recency", "T", "monetary_value"]]
    sc = rfm_scores(lt)
    assert sc["f_score"].tolist() == [1, 2, 3, 4, 5]
    assert sc["m_score"].tolist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda s: s.drop(columns="T"), "missing column 'T'"),
        (lambda s: s.assign(total_spend=[1.0, np.nan, 2.0]), "'total_spend' has 1 missing"),
        (lambda s: s.assign(recency=s["T"] + 1), "'recency' exceeds 'T'"),
        (lambda s: s.assign(purchase_days=["a", "b", "c"]), "'purchase_days' must be numeric"),
        (lambda s: s.assign(total_spend=[1.0, -2.0, 2.0]), "'total_spend' has 1 negative"),
        (lambda s: s.iloc[:0], "no customers"),
        (lambda s: s.to_numpy(), "expected the RFM summary DataFrame"),
    ],
)
def test_scores_bad_input_is_a_clear_error(mutate, match):
    s = make_summary([3, 2, 1], [1, 2, 3], [1, 2, 3])
    with pytest.raises(SegmentError, match=match):
        rfm_scores(mutate(s))


# --------------------------------------------------------------------------------------------------
# named segments
# --------------------------------------------------------------------------------------------------


def all_cells(n: int = 5) -> pd.DataFrame:
    r, f = np.meshgrid(np.arange(1, n + 1), np.arange(1, n + 1), indexing="ij")
    return pd.DataFrame({"r_score": r.ravel(), "f_score": f.ravel(), "m_score": 3})


def test_default_rules_cover_the_grid_and_reach_every_named_segment():
    rules = SegmentConfig().rules
    assert (segment_grid(rules, 5) >= 0).all()  # the fallback is never needed with the defaults
    seg = assign_segments(all_cells(), rules, fallback="FALLBACK")
    assert "FALLBACK" not in set(seg)
    assert set(seg) == NAMED_SEGMENTS
    # every rule wins at least one cell (no rule is dead code)
    assert set(np.unique(segment_grid(rules, 5))) == set(range(len(rules)))


@pytest.mark.parametrize(
    "r, f, name",
    [
        (5, 5, "Champions"),
        (4, 5, "Champions"),
        (4, 4, "Loyal Customers"),
        (3, 5, "Loyal Customers"),
        (5, 3, "Potential Loyalists"),
        (5, 1, "New Customers"),
        (4, 1, "Promising"),
        (3, 3, "Need Attention"),
        (3, 1, "About to Sleep"),
        (2, 4, "At Risk"),
        (1, 3, "At Risk"),
        (1, 5, "Can't Lose Them"),
        (2, 2, "Hibernating"),
        (1, 1, "Lost"),
    ],
)
def test_default_rules_hand_mapped(r, f, name):
    seg = assign_segments(pd.DataFrame({"r_score": [r], "f_score": [f]}), SegmentConfig().rules)
    assert seg.iloc[0] == name


def test_first_matching_rule_wins_and_fallback():
    rules = [{"name": "A", "r": (4, 5), "f": (1, 5)}, {"name": "B", "r": (1, 5), "f": (5, 5)}]
    scores = pd.DataFrame({"r_score": [5, 1, 1], "f_score": [5, 5, 1]}, index=["x", "y", "z"])
    seg = assign_segments(scores, rules, fallback="Other")
    assert seg.to_dict() == {"x": "A", "y": "B", "z": "Other"}
    assert seg.name == "segment" and seg.index.equals(scores.index)
    seg2 = assign_segments(scores, list(reversed(rules)), fallback="Other")
    assert seg2["x"] == "B"


def test_rules_come_from_config(tmp_path):
    s = make_summary(np.linspace(300, 1, 50), np.arange(1, 51), np.linspace(10, 500, 50))
    default = segment_customers(s, SegmentConfig())
    assert list(default.columns) == ["r_score", "f_score", "m_score", "segment"]
    cfg_file = tmp_path / "seg.yaml"
    cfg_file.write_text(
        "segments:\n"
        "  fallback_segment: Everyone else\n"
        "  rules:\n"
        "    - {name: VIP, r: [4, 5], f: [4, 5]}\n"
        "    - {name: Sleeping, r: [1, 2], f: [1, 5]}\n"
    )
    cfg = load_config(cfg_file)
    custom = segment_customers(s, cfg.segments)
    assert set(custom["segment"]) == {"VIP", "Sleeping", "Everyone else"}
    assert not custom["segment"].equals(default["segment"])
    vip = (custom["r_score"] >= 4) & (custom["f_score"] >= 4)
    assert (custom["segment"][vip] == "VIP").all() and (custom["segment"][~vip] != "VIP").all()
    # scores do not depend on the rules
    pd.testing.assert_frame_equal(
        custom[["r_score", "f_score", "m_score"]], default[["r_score", "f_score", "m_score"]]
    )


def test_segment_config_validation():
    with pytest.raises(ConfigError, match="segments"):
        load_config(overrides={"segments.n_bins": 4})  # default rules use score 5
    with pytest.raises(ConfigError, match="no rule reaches score 7"):
        load_config(overrides={"segments.n_bins": 7})
    with pytest.raises(ConfigError, match="segments.rules"):
        load_config(overrides={"segments.rules": [{"name": "X", "r": [3, 2], "f": [1, 5]}]})
    three = load_config(
        overrides={
            "segments.n_bins": 3,
            "segments.rules": [
                {"name": "Top", "r": [3, 3], "f": [3, 3]},
                {"name": "Rest", "r": [1, 3], "f": [1, 3]},
            ],
        }
    )
    s = make_summary([30, 20, 10], [1, 2, 3], [1, 2, 3])
    assert segment_customers(s, three.segments)["segment"].tolist() == ["Rest", "Rest", "Top"]
    with pytest.raises(SegmentError, match=r"rules\[0\]"):
        assign_segments(
            pd.DataFrame({"r_score": [1], "f_score": [1]}), [{"name": "X", "r": (0, 2), "f": (1, 1)}]
        )
    with pytest.raises(SegmentError, match="whole scores"):
        assign_segments(pd.DataFrame({"r_score": [0], "f_score": [1]}), SegmentConfig().rules)


# --------------------------------------------------------------------------------------------------
# clustering
# --------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Skipping check check_array_api_input")
def test_sklearn_estimator_checks():
    results = check_estimator(RFMClusterer(silhouette_sample=200), on_fail=None)
    assert len(results) > 30
    # the array-API check is skipped by sklearn itself (it needs SCIPY_ARRAY_API; we claim no support)
    failed = [
        (r["check_name"], r["status"], repr(r["exception"])[:200])
        for r in results
        if r["status"] != "passed" and r["check_name"] != "check_array_api_input"
    ]
    assert failed == []


def test_clusterer_conventions():
    s, _ = rfm_blobs(seed=11)
    est = RFMClusterer(n_clusters=4, scaler="standard", random_state=3)
    params = est.get_params()
    assert params["n_clusters"] == 4 and params["scaler"] == "standard" and params["k_range"] == (3, 8)
    c = clone(est)
    assert c.get_params() == params and not hasattr(c, "labels_")
    with pytest.raises(NotFittedError):
        est.predict(s)
    assert est.fit(s) is est
    for attr in ("n_clusters_", "silhouette_scores_", "scaler_", "kmeans_", "cluster_centers_", "labels_"):
        assert hasattr(est, attr)
    assert est.silhouette_scores_ == {}  # fixed k: nothing chosen
    assert list(est.feature_names_in_) == list(FEATURE_COLUMNS)
    np.testing.assert_array_equal(est.predict(s), est.labels_)
    np.testing.assert_array_equal(est.predict(rfm_features(s)), est.labels_)
    assert est.cluster_centers_.shape == (4, 3)
    with pytest.raises(InvalidParameterError, match="scaler"):
        RFMClusterer(scaler="minmax").fit(s)


@pytest.mark.parametrize("criterion", ["simplified_silhouette", "silhouette"])
def test_silhouette_picks_true_k_on_separated_rfm_blobs(criterion):
    s, truth = rfm_blobs(seed=2024)
    est = RFMClusterer(k_range=(2, 7), silhouette_sample=500, random_state=0, k_criterion=criterion).fit(s)
    assert est.n_clusters_ == 4
    assert set(est.silhouette_scores_) == set(range(2, 8))
    assert max(est.silhouette_scores_, key=est.silhouette_scores_.get) == 4
    assert adjusted_rand_score(truth, est.labels_) > 0.99
    # labels ordered by value: cluster 0 = highest mean total spend (the 40-order group)
    spend = s["total_spend"].groupby(est.labels_).mean()
    assert spend.is_monotonic_decreasing
    assert pd.Series(truth).groupby(est.labels_).agg(lambda x: x.mode()[0])[0] == 0


def test_labels_stable_across_seeds_and_time_units():
    s, _ = rfm_blobs(seed=5)
    a = RFMClusterer(n_clusters=4, random_state=0).fit(s).labels_
    b = RFMClusterer(n_clusters=4, random_state=99).fit(s).labels_
    np.testing.assert_array_equal(a, b)  # same partition and same numbering
    # the same customers summarised in weeks give the same features (unit inferred) and clusters
    weeks = s.assign(recency=s["recency"] / 7, T=s["T"] / 7)
    assert infer_time_unit_days(weeks) == 7.0 and infer_time_unit_days(s) == 1.0
    pd.testing.assert_frame_equal(rfm_features(weeks), rfm_features(s))
    np.testing.assert_array_equal(RFMClusterer(n_clusters=4).fit(weeks).labels_, a)


def test_features_are_days_orders_and_spend_per_order():
    s = make_summary([14, 70], [1, 4], [50.0, 400.0], unit_days=7)
    f = rfm_features(s, time_unit_days=7)
    assert f.columns.tolist() == list(FEATURE_COLUMNS)
    np.testing.assert_allclose(f.to_numpy(), [[14, 1, 50], [70, 4, 100]])


def test_too_few_customers():
    s = make_summary([1, 50, 100, 200, 400], [1, 2, 3, 5, 8], [5, 50, 100, 200, 800])
    with pytest.warns(UserWarning, match="reduced"):
        est = RFMClusterer(k_range=(3, 8)).fit(s)
    assert 3 <= est.n_clusters_ <= 4 and set(est.silhouette_scores_) <= {3, 4}
    with pytest.raises(SegmentError, match="n_clusters=10 but only n_samples=5"):
        RFMClusterer(n_clusters=10).fit(s)
    with pytest.raises(SegmentError, match="at least 3 distinct"):
        RFMClusterer().fit(s.iloc[:2])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RFMClusterer(scaler="minmax"), "scaler must be"),
        (lambda: RFMClusterer(k_range=(1, 4)), "2 <= low <= high"),
        (lambda: RFMClusterer(k_range="many"), "k_range must be"),
        (lambda: RFMClusterer(n_clusters=0), "n_clusters must be a positive integer"),
        (lambda: RFMClusterer(silhouette_sample=1), "silhouette_sample must be"),
        (lambda: RFMClusterer(k_criterion="elbow"), "k_criterion must be one of"),
        (lambda: RFMScorer(n_bins=1), "n_bins must be"),
    ],
)
def test_bad_parameters_are_invalid_parameter_errors(make, match):
    s = make_summary([1, 50, 100, 200, 400], [1, 2, 3, 5, 8], [5, 50, 100, 200, 800])
    with pytest.raises(InvalidParameterError, match=match):
        make().fit(s)
    with pytest.raises(InvalidParameterError, match="time_unit_days"):
        rfm_features(s, time_unit_days=-7)


def test_scorer_fitted_on_the_old_orders_column_scores_new_summaries():
    # a scorer saved before ``orders`` was renamed ``purchase_days`` (e.g. in a model bundle)
    s = make_summary([50, 40, 30, 20, 10], [1, 2, 3, 4, 5], [10, 40, 90, 160, 250])
    new = RFMScorer(n_bins=4).fit(s)
    old = copy.deepcopy(new)
    old.frequency_column_ = "orders"  # what a scorer fitted by earlier versions holds
    pd.testing.assert_frame_equal(old.transform(s), new.transform(s))


def test_silhouette_scores_match_sklearn():
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(700, 3))
    labelings = [rng.integers(0, k, 700) for k in (2, 3, 6)] + [np.r_[np.zeros(699, int), 1]]
    ours = silhouette_scores(Z, labelings, chunk_rows=100)
    ref = [silhouette_score(Z, lab) for lab in labelings]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert silhouette_scores(Z, [np.zeros(700, int)]) == [-1.0]


def test_simplified_silhouette_is_the_silhouette_against_the_centres():
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(300, 3))
    labels = rng.integers(0, 4, 300)
    labels[0] = 4  # a singleton cluster scores 0
    centers = np.stack([Z[labels == c].mean(axis=0) for c in range(5)])
    a = np.linalg.norm(Z - centers[labels], axis=1)
    others = np.linalg.norm(Z[:, None, :] - centers[None, :, :], axis=2)
    others[np.arange(300), labels] = np.inf
    b = others.min(axis=1)
    expected = np.where(labels == 4, 0.0, (b - a) / np.maximum(a, b)).mean()
    assert simplified_silhouette(Z, labels, centers) == pytest.approx(expected, rel=1e-12)
    assert simplified_silhouette(Z, np.zeros(300, int), centers[:1]) == -1.0


def test_from_config():
    cfg = SegmentConfig(
        n_clusters=5, k_range=(2, 4), silhouette_sample=1000, random_state=7, scaler="standard", n_init=2
    )
    est = RFMClusterer.from_config(cfg, time_unit_days=7.0)
    p = est.get_params()
    assert (
        p["n_clusters"],
        p["k_range"],
        p["silhouette_sample"],
        p["random_state"],
        p["scaler"],
        p["n_init"],
        p["time_unit_days"],
    ) == (5, (2, 4), 1000, 7, "standard", 2, 7.0)


# --------------------------------------------------------------------------------------------------
# profiles
# --------------------------------------------------------------------------------------------------


def test_cluster_profiles_complete_and_readable():
    s, truth = rfm_blobs(seed=77)
    est = RFMClusterer(n_clusters=4).fit(s)
    seg = segment_customers(s)["segment"]
    clv = pd.Series(s["total_spend"].to_numpy() * 0.3, index=s.index)
    prof = cluster_profiles(s, est.labels_, segments=seg, clv=clv.sample(frac=1, random_state=1))
    expected_cols = {
        "size",
        "share",
        "mean_recency",
        "mean_T",
        "mean_days_since_last",
        "mean_frequency",
        "mean_purchase_days",
        "mean_monetary_value",
        "mean_total_spend",
        "one_time_share",
        "mean_r_score",
        "mean_f_score",
        "mean_m_score",
        "mean_clv",
        "dominant_segment",
        "dominant_segment_share",
        "label",
    }
    assert set(prof.columns) == expected_cols
    assert prof.index.tolist() == [0, 1, 2, 3] and prof.index.name == "cluster"
    assert not prof.isna().any().any()
    assert prof["size"].sum() == len(s) and np.isclose(prof["share"].sum(), 1.0)
    # means are the plain group means (clv aligned by customer_id even though it was shuffled)
    np.testing.assert_allclose(prof["mean_clv"], clv.groupby(est.labels_).mean())
    np.testing.assert_allclose(prof["mean_total_spend"], s["total_spend"].groupby(est.labels_).mean())
    for k in prof.index:
        members = seg[est.labels_ == k]
        assert prof.loc[k, "dominant_segment"] == members.value_counts().idxmax()
        assert np.isclose(prof.loc[k, "dominant_segment_share"], members.value_counts(normalize=True).max())
    assert prof["label"].is_unique
    # the readable names follow the profile: the 40-order recent group and the lapsed one-timers
    by_truth = pd.Series(est.labels_).groupby(truth).agg(lambda x: x.mode()[0])
    assert prof.loc[by_truth[0], "label"] == "High value, active"
    assert prof.loc[by_truth[1], "label"] == "Lapsed one-timers"
    # per customer cluster_label for the scoring table
    cluster_label = pd.Series(est.predict(s), index=s.index).map(prof["label"])
    assert not cluster_label.isna().any()


def test_cluster_profiles_bad_input():
    s = make_summary([1, 2, 3], [1, 2, 3], [1, 2, 3])
    with pytest.raises(SegmentError, match="labels must be 1-D with one value per customer"):
        cluster_profiles(s, [0, 1])
    with pytest.raises(SegmentError, match="clv has 1 missing"):
        cluster_profiles(s, [0, 1, 1], clv=[1.0, np.nan, 2.0])
    with pytest.raises(SegmentError, match="segments has no value for 1"):
        cluster_profiles(s, [0, 1, 1], segments=pd.Series(["a", "b"], index=s.index[:2]))
    prof = cluster_profiles(s, np.array([1, 0, 1]))
    assert prof["size"].tolist() == [1, 2] and "mean_clv" not in prof and "dominant_segment" not in prof


# --------------------------------------------------------------------------------------------------
# real data (CDNOW sample shipped with lifetimes)
# --------------------------------------------------------------------------------------------------


def test_cdnow_end_to_end():
    from rebuy.datasets import load_cdnow_sample
    from rebuy.features import rfm_summary

    s = rfm_summary(load_cdnow_sample(), as_of="1997-09-30", time_unit="weeks")
    seg = segment_customers(s, SegmentConfig())
    assert len(seg) == 2357 and not seg.isna().any().any()
    # ~60% one-time buyers: all of them F = 1, and no straddling of tied groups
    one_time = s["frequency"] == 0
    assert seg["f_score"][one_time].eq(1).all() and not seg["f_score"][~one_time].eq(1).any()
    assert seg["segment"].isin(NAMED_SEGMENTS).all()
    assert infer_time_unit_days(s) == 7.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn/numpy warnings on real data
        est = RFMClusterer(silhouette_sample=1000).fit(s)
    prof = cluster_profiles(s, est.labels_, segments=seg["segment"])
    assert prof["size"].sum() == 2357 and not prof.isna().any().any()
    assert prof["mean_total_spend"].is_monotonic_decreasing
