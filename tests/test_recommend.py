"""Tests for rebuy.recommend.Recommender (synthetic data, plus one pass over Online Retail II)."""

from __future__ import annotations

import logging
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rebuy.config import Config, load_config
from rebuy.recommend import Recommender, RecommenderDataError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail_ii.csv.gz"
NON_PRODUCTS = {"POST", "DOT", "M", "BANK CHARGES"}
_SHOP = load_config(REPO / "configs" / "online_retail_ii.yaml").recommend
SHOP_EXCLUSIONS = {"excluded_products": list(_SHOP.excluded_products),
                   "excluded_product_prefixes": list(_SHOP.excluded_product_prefixes)}
"""Online Retail II's non-product codes, from its config (the code's defaults exclude nothing)."""


def shop_recommender(**params) -> Recommender:
    """A Recommender with Online Retail II's exclusions (POST, DOT, ... are in the test data)."""
    return Recommender(**{**SHOP_EXCLUSIONS, **params})


def _synthetic(seed: int = 0, n_customers: int = 300) -> pd.DataFrame:
    """Customers in 3 taste groups over 3 blocks of 10 products; two countries with different favourites.

    Every order also holds postage ("POST"). Product prices rise with the product number.
    """
    rng = np.random.default_rng(seed)
    rows = []
    t0 = pd.Timestamp("2024-01-01")
    for c in range(n_customers):
        group = c % 3
        country = "FR" if c % 2 else "UK"
        for o in range(int(rng.integers(1, 5))):
            ts = t0 + pd.Timedelta(days=int(rng.integers(0, 300)))
            k = int(rng.integers(2, 6))
            items = rng.choice(10, size=k, replace=False) + 10 * group
            if country == "FR" and rng.random() < 0.7:
                items = np.append(items, 40)  # FR favourite
            for p in items:
                rows.append((f"c{c:03d}", f"o{c:03d}_{o}", ts, f"P{p:02d}", 1.0, 1.0 + p, country))
            rows.append((f"c{c:03d}", f"o{c:03d}_{o}", ts, "POST", 1.0, 5.0, country))
    df = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "timestamp", "product_id", "quantity", "price", "country"]
    )
    df["amount"] = df["quantity"] * df["price"]
    for col in ("customer_id", "order_id", "product_id", "country"):
        df[col] = df[col].astype("string")
    return df


def _bought(df: pd.DataFrame) -> dict[str, set[str]]:
    return {str(c): set(g.astype(str)) for c, g in df.groupby("customer_id")["product_id"]}


@pytest.fixture(scope="module")
def tx() -> pd.DataFrame:
    return _synthetic()


@pytest.fixture(scope="module")
def fitted(tx: pd.DataFrame) -> Recommender:
    # the defaults are tuned for thousands of customers (Online Retail II); 300 customers need far less
    # regularisation for the same confidence scale
    return shop_recommender(factors=8, iterations=15, regularization=0.1, alpha=1.0, random_state=0).fit(tx)


@pytest.fixture(scope="module")
def retail() -> pd.DataFrame:
    from rebuy.data import load_transactions

    return load_transactions(DATA, load_config(REPO / "configs" / "online_retail_ii.yaml"))


def test_matrix_is_csr_matrix_and_ids_are_stable(fitted: Recommender, tx: pd.DataFrame) -> None:
    assert type(fitted.user_items_) is sp.csr_matrix
    assert type(fitted.history_) is sp.csr_matrix
    assert fitted.user_items_.shape == (
        tx["customer_id"].nunique(),
        tx["product_id"].nunique() - 1,
    )  # POST out
    assert "POST" not in fitted.product_index_
    for i, c in enumerate(fitted.customer_ids_):
        assert fitted.customer_index_[c] == i
    # row of a customer holds exactly the products they bought
    c = "c005"
    bought = set(tx.loc[(tx.customer_id == c) & (tx.product_id != "POST"), "product_id"])
    row = fitted.customer_index_[c]
    assert {fitted.product_ids_[j] for j in fitted.history_[row].indices} == bought
    assert np.isfinite(fitted.user_factors_).all() and np.isfinite(fitted.item_factors_).all()


def test_recommend_matches_implicit_directly(fitted: Recommender) -> None:
    rows = np.arange(20)
    ids, _ = fitted.model_.recommend(rows, fitted.user_items_[rows], N=5, filter_already_liked_items=True)
    ours = fitted.recommend(list(fitted.customer_ids_[rows]), 5)
    for r, cid in zip(rows, fitted.customer_ids_[rows], strict=True):
        assert ours[cid] == [fitted.product_ids_[j] for j in ids[r]]


def test_model_learns_the_taste_groups(fitted: Recommender, tx: pd.DataFrame) -> None:
    bought = _bought(tx)
    # customers with at least 3 products of their own taste block still to discover
    todo = [
        c
        for c in fitted.customer_ids_
        if len({f"P{10 * (int(c[1:]) % 3) + i:02d}" for i in range(10)} - bought[c]) >= 3
    ]
    recs = fitted.recommend(todo, 3)
    in_group = [int(p[1:]) // 10 == int(c[1:]) % 3 for c, lst in recs.items() for p in lst if p != "P40"]
    assert len(todo) > 50 and np.mean(in_group) > 0.9  # a random pick would be in the block 1 time in 3


def test_already_bought_filtered_and_excluded_never(fitted: Recommender, tx: pd.DataFrame) -> None:
    customers = list(fitted.customer_ids_)
    recs = fitted.recommend(customers, 8)
    bought = _bought(tx)
    for c, lst in recs.items():
        assert len(lst) == 8 and len(set(lst)) == 8
        assert "POST" not in lst
        assert not set(lst) & bought[c]


def test_batches_give_the_same_lists(fitted: Recommender) -> None:
    customers = list(fitted.customer_ids_)
    small = Recommender(**{**fitted.get_params(), "batch_size": 7})
    small.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    assert small.recommend(customers, 5) == fitted.recommend(customers, 5)
    frames = list(small.iter_recommendations([*customers, "new"], 5))
    assert len(frames) == -(-(len(customers) + 1) // 7)  # one frame per batch of 7
    pd.testing.assert_frame_equal(
        pd.concat(frames, ignore_index=True), fitted.recommend([*customers, "new"], 5, output="frame")
    )


def test_cold_start_unknown_customer_gets_country_or_segment_popularity(fitted: Recommender) -> None:
    out = fitted.recommend(["nobody", "nobody_fr", 12345], 5, segments={"nobody_fr": "FR"})
    assert set(out) == {"nobody", "nobody_fr", "12345"}
    assert all(len(v) == 5 for v in out.values())
    assert out["nobody"] == [fitted.product_ids_[p] for p in fitted.popular_[:5]]
    assert out["nobody_fr"][0] == "P40"  # the FR favourite leads the FR list
    frame = fitted.recommend(["nobody"], 3, output="frame")
    assert list(frame.columns) == ["customer_id", "rank", "product_id", "score", "source"]
    assert frame["rank"].tolist() == [1, 2, 3] and set(frame["source"]) == {"popularity"}
    assert fitted.recommend_one("nobody", 4) == out["nobody"][:4]


def test_segment_map_at_fit_and_min_history(tx: pd.DataFrame) -> None:
    seg = {f"c{c:03d}": ("even" if c % 2 == 0 else "odd") for c in range(300)}
    m = shop_recommender(factors=8, iterations=5, min_history=1000).fit(tx, segments=seg)
    assert set(m.segment_popular_) == {"even", "odd"}
    frame = m.recommend(["c001", "c002"], 5, output="frame")
    assert set(frame["source"]) == {"popularity"}  # too little history for everyone
    odd = frame.loc[frame.customer_id == "c001", "product_id"].tolist()
    bought = set(tx.loc[tx.customer_id == "c001", "product_id"])
    expected = [m.product_ids_[p] for p in m.segment_popular_["odd"] if m.product_ids_[p] not in bought][:5]
    assert odd == expected


def test_empty_history_customer_gets_popularity(tx: pd.DataFrame) -> None:
    only_post = pd.DataFrame(
        {
            "customer_id": pd.array(["ghost"], dtype="string"),
            "order_id": pd.array(["g1"], dtype="string"),
            "timestamp": [pd.Timestamp("2024-03-01")],
            "product_id": pd.array(["POST"], dtype="string"),
            "quantity": [1.0],
            "price": [5.0],
            "country": pd.array(["UK"], dtype="string"),
            "amount": [5.0],
        }
    )
    m = shop_recommender(factors=8, iterations=5).fit(pd.concat([tx, only_post], ignore_index=True))
    assert "ghost" not in m.customer_index_  # nothing but postage: no history
    lst = m.recommend_one("ghost", 6)
    assert len(lst) == 6 and "POST" not in lst


def test_single_product_catalogue() -> None:
    df = pd.DataFrame(
        {
            "customer_id": pd.array(["a", "b", "b"], dtype="string"),
            "product_id": pd.array(["X", "X", "POST"], dtype="string"),
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-02"]),
            "price": [2.0, 2.0, 5.0],
            "amount": [2.0, 2.0, 5.0],
            "quantity": [1.0, 1.0, 1.0],
        }
    )
    m = shop_recommender(factors=64).fit(df)
    assert m.model_ is None and list(m.product_ids_) == ["X"]
    assert m.recommend_one("new", 10) == ["X"]
    assert m.recommend_one("a", 10) == ["X"]  # never empty, even if everything was bought
    assert m.similar_items("X") == [] and m.upsell("X") == []
    assert m.bought_together(["X"], 3) == []  # nothing else to offer; basket items are left out


def test_factors_capped_below_catalogue_size(tx: pd.DataFrame) -> None:
    small = tx[tx["product_id"].isin(["P00", "P01", "P02", "P03", "P04"])]
    m = shop_recommender(factors=64, iterations=5).fit(small)
    assert m.factors_ == 4
    assert np.isfinite(m.user_factors_).all() and np.isfinite(m.item_factors_).all()


def test_unknown_product_ids_skipped_with_warning(
    fitted: Recommender, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="rebuy.recommend"):
        assert fitted.similar_items("NOPE") == []
        together = fitted.bought_together(["NOPE", "P00"], 5)
    assert "NOPE" in caplog.text
    assert len(together) == 5 and "P00" not in together and "POST" not in together
    assert fitted.bought_together(["NOPE"], 4) == [fitted.product_ids_[p] for p in fitted.popular_[:4]]


def test_bought_together_similar_and_upsell(fitted: Recommender) -> None:
    together = fitted.bought_together(["P12"], 5)
    assert all(10 <= int(p[1:]) < 20 for p in together if p != "P40")  # same taste block
    sim = fitted.similar_items("P23", 5)
    assert len(sim) == 5 and "P23" not in sim and np.mean([20 <= int(p[1:]) < 30 for p in sim]) >= 0.8
    up = fitted.upsell("P21", 5)
    assert up and all(fitted.product_price(p) > fitted.product_price("P21") for p in up)


def test_repurchase_blend_and_categories(tx: pd.DataFrame) -> None:
    m = shop_recommender(factors=8, iterations=10, allow_repurchase=True, history_weight=1.0).fit(tx)
    c = "c004"
    own = tx[(tx.customer_id == c) & (tx.product_id != "POST")].groupby("product_id").size()
    lst = m.recommend_one(c, 3)
    assert own[lst[0]] == own.max()  # own most-bought first
    assert set(lst) <= set(own.index) or len(own) < 3
    cat = tx.assign(
        category=np.where(
            tx["product_id"].str[1:].isin([f"{i:02d}" for i in range(10, 20)]), "food", "durable"
        )
    )
    m2 = shop_recommender(factors=8, iterations=10, repurchase_categories=["food"], history_weight=0.5).fit(cat)
    bought = _bought(cat)
    recs = m2.recommend(list(m2.customer_ids_), 10)
    again = [p for c, lst in recs.items() for p in lst if p in bought[c]]
    assert again, "food bought before should come back"
    assert all(10 <= int(p[1:]) < 20 for p in again)


def test_save_load_round_trip(fitted: Recommender, tmp_path: Path) -> None:
    path = tmp_path / "rec.joblib"
    joblib.dump(fitted, path)
    back = joblib.load(path)
    customers = [*fitted.customer_ids_[:50], "unknown"]
    pd.testing.assert_frame_equal(
        back.recommend(customers, 7, output="frame"), fitted.recommend(customers, 7, output="frame")
    )
    np.testing.assert_array_equal(back.item_factors_, fitted.item_factors_)
    assert (back.user_items_ != fitted.user_items_).nnz == 0
    assert back.bought_together(["P05"]) == fitted.bought_together(["P05"])
    assert back.get_params() == fitted.get_params()


def test_no_product_id_raises_clear_error(tx: pd.DataFrame) -> None:
    with pytest.raises(RecommenderDataError, match="product_id"):
        shop_recommender().fit(tx.drop(columns=["product_id"]))
    assert issubclass(RecommenderDataError, ValueError)


def test_from_config_and_bpr(tx: pd.DataFrame) -> None:
    cfg = Config().recommend
    m = Recommender.from_config(cfg)
    assert (
        m.factors == cfg.factors and m.weighting == cfg.weighting and m.history_weight == cfg.history_weight
    )
    assert list(m.excluded_products) == list(cfg.excluded_products)
    b = shop_recommender(algorithm="bpr", factors=8, iterations=50, learning_rate=0.05).fit(tx)
    out = b.recommend(list(b.customer_ids_[:10]), 5)
    assert all(len(v) == 5 for v in out.values())


def test_online_retail_excluded_codes_never_recommended(retail: pd.DataFrame) -> None:
    cfg = load_config(REPO / "configs" / "online_retail_ii.yaml")
    m = Recommender.from_config(cfg.recommend, iterations=5).fit(retail)
    assert type(m.user_items_) is sp.csr_matrix
    assert not NON_PRODUCTS & set(m.product_ids_)
    customers = [*m.customer_ids_, "99999"]
    recs = m.recommend(customers, 10, segments={"99999": "Germany"})
    assert len(recs) == len(customers) and all(len(v) == 10 for v in recs.values())
    shown = {p for v in recs.values() for p in v}
    assert not shown & NON_PRODUCTS
    for p in ("85123A", "22423"):
        lists = m.similar_items(p, 20) + m.bought_together([p, "POST"], 20) + m.upsell(p, 20)
        assert lists and not set(lists) & NON_PRODUCTS


def test_as_of_keeps_purchases_up_to_that_day(tx: pd.DataFrame) -> None:
    m = shop_recommender(factors=8, iterations=5).fit(tx, as_of="2024-03-01")
    upto = tx[(tx.timestamp < pd.Timestamp("2024-03-02")) & (tx.product_id != "POST")]
    assert m.history_.sum() == pytest.approx(len(upto))  # purchase lines counted, none after the day
    assert set(m.customer_ids_) == set(upto["customer_id"])


def test_factors_stored_once_and_ids_index_rebuilt_after_load(fitted: Recommender, tmp_path: Path) -> None:
    # the user factors are the implicit model's own array: a bundle holds them once
    assert np.shares_memory(fitted.user_factors_, fitted.model_.user_factors)
    path = tmp_path / "rec.joblib"
    joblib.dump(fitted, path)
    back = joblib.load(path)
    assert "user_factors_" not in back.__dict__ and "_cache" not in back.__dict__
    np.testing.assert_array_equal(back.user_factors_, fitted.user_factors_)
    assert back.customer_ids_.dtype == object and list(back.customer_ids_) == list(fitted.customer_ids_)
    assert back.customer_index_ == {c: i for i, c in enumerate(fitted.customer_ids_)}


def test_lists_output_follows_input_order(fitted: Recommender) -> None:
    customers = [*fitted.customer_ids_[::-7], "nobody", fitted.customer_ids_[0]]
    as_dict = fitted.recommend(customers, 6)
    lists = fitted.recommend(customers, 6, output="lists")
    assert isinstance(lists, list) and len(lists) == len(customers)
    assert all(lst == as_dict[str(c)] for c, lst in zip(customers, lists, strict=True))


def test_topk_filter_split_matches_implicit_filter(fitted: Recommender) -> None:
    # rows with many filtered products go through implicit's own filter, the others are filtered here
    from implicit.cpu.topk import topk

    from rebuy.recommend.implicit_model import topk_filtered

    n_c, n_p = fitted.history_.shape
    rows = np.arange(min(n_c, 60))
    rng = np.random.default_rng(3)
    dense = np.zeros((len(rows), n_p), dtype=np.float32)
    for i in range(len(rows)):
        dense[i, rng.choice(n_p, size=i % 25, replace=False)] = 1.0  # 0..24 filtered products per row
    filt = sp.csr_matrix(dense)
    excluded = np.array([3], dtype=np.int64)
    ours, our_s = topk_filtered(fitted.user_factors_[rows], fitted.item_factors_, 4, filt, excluded)
    ids, ref_s = topk(
        fitted.item_factors_, fitted.user_factors_[rows], 4, filter_query_items=filt,
        filter_items=excluded.astype(np.int32),
    )
    np.testing.assert_allclose(our_s, ref_s, rtol=1e-5)
    for r in range(len(rows)):
        ok = ref_s[r] > np.finfo(np.float32).min
        assert set(ours[r][ok]) == set(ids[r][ok])
        assert not set(ours[r][ok]) & (set(np.flatnonzero(dense[r])) | {3})


def test_repurchase_categories_without_blend_equal_dense_scores(tx: pd.DataFrame) -> None:
    cat = tx.assign(category=np.where(tx["product_id"].str[1:2] == "1", "food", "durable"))
    m = shop_recommender(factors=8, iterations=5, repurchase_categories=["food"], history_weight=0.0).fit(cat)
    scores = m.user_factors_ @ m.item_factors_.T
    food = np.array([c == "food" for c in m.product_category_])
    h = m.history_.tocoo()
    nofood = ~food[h.col]
    scores[h.row[nofood], h.col[nofood]] = -np.inf
    expected = {
        c: [m.product_ids_[j] for j in np.lexsort((np.arange(scores.shape[1]), -scores[i]))[:5]]
        for i, c in enumerate(m.customer_ids_)
    }
    assert m.recommend(list(m.customer_ids_), 5) == expected


def test_bought_together_equals_plain_sum(fitted: Recommender) -> None:
    for basket in (["P01"], ["P12", "P15", "P12"], ["P21", "P40", "P00"]):
        idx = [fitted.product_index_[p] for p in basket]
        total: dict[int, float] = {}
        for b in idx:
            for p, s in zip(fitted.cooc_neighbours_[b], fitted.cooc_scores_[b], strict=True):
                if p >= 0:
                    total[int(p)] = total.get(int(p), 0.0) + float(s)
        ranked = sorted((p for p in total if p not in idx), key=lambda p: (-total[p], p))[:6]
        ranked += [int(p) for p in fitted.popular_ if p not in idx and p not in ranked][: 6 - len(ranked)]
        assert fitted.bought_together(basket, 6) == [fitted.product_ids_[p] for p in ranked]


def test_product_category_is_the_mode_and_neighbours_the_top_cooccurrence(tx: pd.DataFrame) -> None:
    extra = tx.iloc[:5].copy()
    df = pd.concat([tx, extra], ignore_index=True)
    cats = np.where(df["product_id"] == "P01", "b", "x").astype(object)
    p01 = np.flatnonzero(df["product_id"].to_numpy() == "P01")
    cats[p01[: len(p01) // 2]] = "a"  # a tie or near tie between "a" and "b"
    df["category"] = pd.array(cats, dtype="string")
    df.loc[df["product_id"] == "P02", "category"] = pd.NA
    m = shop_recommender(factors=4, iterations=2).fit(df)
    got = dict(zip(m.product_ids_, m.product_category_, strict=True))
    expected = df[df["product_id"] == "P01"]["category"].astype(object).mode().iloc[0]
    assert got["P01"] == expected and got["P02"] is None and got["P05"] == "x"
    # neighbours: brute-force cosine co-occurrence over orders
    orders = pd.crosstab(df["order_id"], df["product_id"]).clip(upper=1)[list(m.product_ids_)].to_numpy(float)
    co = orders.T @ orders
    np.fill_diagonal(co, 0.0)
    norm = np.sqrt(np.maximum(orders.sum(axis=0), 1.0))
    co = co / (norm[:, None] * norm[None, :])
    for i in range(len(m.product_ids_)):
        k = int((m.cooc_neighbours_[i] >= 0).sum())
        assert k == min(int((co[i] > 0).sum()), m.cooc_neighbours_.shape[1])
        np.testing.assert_allclose(m.cooc_scores_[i, :k], np.sort(co[i])[::-1][:k], rtol=1e-6)
        assert set(co[i, m.cooc_neighbours_[i, :k]] > 0) == {True} or k == 0


@pytest.mark.parametrize("terminal", [True, False])
def test_the_recommender_fit_shows_a_progress_bar_only_on_a_terminal(terminal, monkeypatch, capsys):
    import rebuy.recommend.implicit_model as im

    monkeypatch.setattr(im, "interactive", lambda: terminal)
    rng = np.random.default_rng(0)
    matrix = sp.csr_matrix((rng.random((60, 20)) < 0.2).astype(np.float32))
    assert im.fit_latent(matrix, im.ModelSpec(factors=4, iterations=3)) is not None
    err = capsys.readouterr().err
    assert ("3/3" in err) == terminal  # implicit's per-iteration bar (a 44 s fit on Online Retail II)
