"""recommend.algorithm = item_knn: implicit's item-item KNN behind the Recommender facade.

Checks the glue against implicit used directly, the per-call policy (exclusions, repurchase
categories, the blend), popularity padding, the config keys and the bundle codec round trip.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rebuy import artefacts as A
from rebuy.config import Config
from rebuy.errors import InvalidParameterError
from rebuy.recommend import Recommender, RecommendPolicy
from rebuy.recommend.neighbours import ItemNeighbours
from rebuy.simulate import simulate

NONE_EXCLUDED = {"excluded_products": (), "excluded_product_prefixes": ()}


@pytest.fixture(scope="module")
def tx() -> pd.DataFrame:
    return simulate(n_customers=800, seed=3, n_products=60, events=False).transactions


def _implicit_class(weighting: str, k: int):
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender, TFIDFRecommender

    if weighting == "bm25":
        return BM25Recommender(K=k)  # implicit's K1 = 1.2, B = 0.75 are rebuy's knn_bm25_k1 / knn_bm25_b
    return {"cosine": CosineRecommender, "tfidf": TFIDFRecommender}[weighting](K=k)


def _bought(rec: Recommender) -> list[set[int]]:
    h = rec.history_
    return [set(h.indices[h.indptr[i] : h.indptr[i + 1]].tolist()) for i in range(h.shape[0])]


@pytest.mark.filterwarnings("ignore::implicit.utils.ParameterWarning")
@pytest.mark.parametrize("weighting,k", [("bm25", 10), ("cosine", 20), ("tfidf", 5)])
def test_lists_equal_implicit_used_directly(tx: pd.DataFrame, weighting: str, k: int) -> None:
    rec = Recommender(algorithm="item_knn", knn_weighting=weighting, knn_neighbours=k, **NONE_EXCLUDED).fit(tx)
    ui = rec.user_items_
    model = _implicit_class(weighting, k)
    model.fit(ui, show_progress=False)
    assert abs(model.similarity - rec.neighbours_.similarity).max() == 0
    users = np.arange(ui.shape[0])
    ids, scores = model.recommend(users, ui[users], N=10, filter_already_liked_items=True)
    frame = rec.recommend(list(rec.customer_ids_), 10, output="frame")
    col = frame["product_id"].map(rec.product_index_).to_numpy()
    row = frame["customer_id"].map(dict(zip(rec.customer_ids_, range(len(users)), strict=True))).to_numpy()
    got_s = frame["score"].to_numpy()
    n_cmp = 0
    for u in users:
        # implicit pads a short candidate list with score-0 items; rebuy pads it from popularity (score 0)
        keep = (ids[u] >= 0) & (scores[u] > 0)
        exp_i, exp_s = ids[u][keep], scores[u][keep]
        mine = (row == u) & (got_s > 0)
        got_i, got_sc = col[mine], got_s[mine]
        np.testing.assert_allclose(got_sc, exp_s, rtol=1e-12)
        ties = np.isclose(exp_s[:, None], exp_s[None, :], rtol=1e-12).sum(axis=1) > 1
        np.testing.assert_array_equal(got_i[~ties], exp_i[~ties])  # order where scores do not tie
        assert set(got_i.tolist()) == set(exp_i.tolist())
        n_cmp += len(exp_i)
    assert n_cmp > 5 * len(users)
    assert (frame.groupby("customer_id").size() == 10).all()


def test_short_lists_are_padded_from_popularity_and_never_hold_bought(tx: pd.DataFrame) -> None:
    rec = Recommender(algorithm="item_knn", knn_neighbours=2, **NONE_EXCLUDED).fit(tx)
    frame = rec.recommend(list(rec.customer_ids_), 10, output="frame")
    bought = _bought(rec)
    index = dict(zip(rec.customer_ids_, range(len(bought)), strict=True))
    pad = frame[frame["score"] == 0]
    assert len(pad) > 0  # K = 2 leaves short candidate lists
    cols = frame["product_id"].map(rec.product_index_).to_numpy().reshape(-1, 10)
    assert len(cols) == len(bought)
    for i, c in enumerate(frame["customer_id"].to_numpy()[::10]):
        assert len(set(cols[i])) == 10 and not set(cols[i].tolist()) & bought[index[c]]
    from rebuy.recommend.popularity import fill

    for c in pad["customer_id"].unique()[:60]:
        i = index[c]
        full = frame[frame["customer_id"] == c]
        model_part = full[full["score"] > 0]["product_id"].map(rec.product_index_).tolist()
        cands = [rec.popularity_.for_customer(i, None), rec.popular_]
        expected = fill(list(model_part), 10, cands, frozenset(bought[i]))
        assert full["product_id"].map(rec.product_index_).tolist() == expected


def test_policy_exclusions_and_repurchase_categories_apply(tx: pd.DataFrame) -> None:
    cat = tx.assign(category=np.where(tx["product_id"].str[-1].isin(list("01234")), "food", "durable"))
    rec = Recommender(algorithm="item_knn", **NONE_EXCLUDED).fit(cat)
    ids = list(rec.customer_ids_)
    base = rec.recommend(ids, 10)
    top = pd.Series([p for lst in base.values() for p in lst]).value_counts().index[:3].tolist()
    prefix = str(top[0])[:-1]
    pol = RecommendPolicy(excluded_products=tuple(top[1:]), excluded_product_prefixes=(prefix,))
    got = rec.recommend(ids, 10, policy=pol)
    assert all(len(lst) == 10 for lst in got.values())
    assert not any(p in top[1:] or p.startswith(prefix) for lst in got.values() for p in lst)
    assert rec.excluded_mask(pol).sum() >= 3
    # repurchase categories: food may come back (blend and model-only), durable never
    bought = {c: {rec.product_ids_[j] for j in b} for c, b in zip(ids, _bought(rec), strict=True)}
    food = set(rec.product_ids_[rec.product_category_ == "food"])
    for w in (0.0, 0.5, 1.0):
        pol = RecommendPolicy(repurchase_categories=("food",), history_weight=w, **NONE_EXCLUDED)
        recs = rec.recommend(ids, 10, policy=pol)
        again = [p for c, lst in recs.items() for p in lst if p in bought[c]]
        assert again and set(again) <= food
        assert all(len(lst) == 10 and len(set(lst)) == 10 for lst in recs.values())
    # w = 1: own most-bought food first
    pol = RecommendPolicy(repurchase_categories=("food",), history_weight=1.0, **NONE_EXCLUDED)
    h = rec.history_.multiply(sp.csr_matrix(np.isin(rec.product_ids_, list(food)).astype(np.float32))).tocsr()
    for i in np.flatnonzero(h.getnnz(axis=1) > 0)[:50]:
        row = h.getrow(i)
        best = rec.product_ids_[row.indices[np.argmax(row.data)]]
        first = rec.recommend_one(rec.customer_ids_[i], 10, policy=pol)[0]
        assert row[0, rec.product_index_[first]] == row.data.max(), (best, first)


def test_blend_without_repurchase_equals_model_only(tx: pd.DataFrame) -> None:
    rec = Recommender(algorithm="item_knn", history_weight=0.7, **NONE_EXCLUDED).fit(tx)
    ids = list(rec.customer_ids_[:200])
    off = RecommendPolicy(history_weight=0.0, **NONE_EXCLUDED)
    assert rec.recommend(ids, 10) == rec.recommend(ids, 10, policy=off)


def test_similar_items_are_the_stored_neighbours_first(tx: pd.DataFrame) -> None:
    rec = Recommender(algorithm="item_knn", knn_neighbours=6, **NONE_EXCLUDED).fit(tx)
    s = rec.neighbours_.similarity
    j = int(np.argmax(np.diff(s.indptr)))
    row = s.getrow(j)
    nb = [c for c in row.indices[np.lexsort((row.indices, -row.data))] if c != j]
    got = rec.similar_items(rec.product_ids_[j], 10)
    assert got[: len(nb)] == [rec.product_ids_[c] for c in nb]
    assert len(got) == len(set(got)) and rec.product_ids_[j] not in got
    assert rec.model_ is None and rec.factors_ == 0


def test_config_keys_and_validation() -> None:
    cfg = Config.model_validate({"recommend": {"algorithm": "item_knn", "knn_weighting": "cosine",
                                               "knn_neighbours": 50}})
    rec = Recommender.from_config(cfg.recommend)
    assert (rec.algorithm, rec.knn_weighting, rec.knn_neighbours) == ("item_knn", "cosine", 50)
    assert Config().recommend.algorithm == "als"
    with pytest.raises(InvalidParameterError, match="knn_weighting"):
        Recommender(algorithm="item_knn", knn_weighting="jaccard").check_params()
    with pytest.raises(InvalidParameterError, match="knn_neighbours"):
        Recommender(algorithm="item_knn", knn_neighbours=0).check_params()


def test_item_knn_ignores_the_als_weighting(tx: pd.DataFrame) -> None:
    a = Recommender(algorithm="item_knn", weighting="tfidf", alpha=0.1, **NONE_EXCLUDED).fit(tx)
    b = Recommender(algorithm="item_knn", weighting="none", alpha=1.0, **NONE_EXCLUDED).fit(tx)
    assert (a.user_items_ != b.user_items_).nnz == 0
    assert (a.user_items_ != a.history_).nnz == 0  # count confidence, no decay: the purchase lines


def test_codec_round_trip_holds_no_implicit_object(tx: pd.DataFrame) -> None:
    rec = Recommender(algorithm="item_knn", knn_neighbours=10, batch_size=97, **NONE_EXCLUDED).fit(tx)
    meta, arrays = A.encode(rec)
    names = A.class_names(meta)
    assert "rebuy.ItemNeighbours" in names and not any(n.startswith("implicit.") for n in names)
    back = A.decode(json.loads(json.dumps(meta)), arrays)
    assert isinstance(back.neighbours_, ItemNeighbours)
    ids = [*rec.customer_ids_[:300], "nobody"]
    pd.testing.assert_frame_equal(back.recommend(ids, 10, output="frame"), rec.recommend(ids, 10, output="frame"))
    assert back.similar_items(rec.product_ids_[0], 5) == rec.similar_items(rec.product_ids_[0], 5)


def test_refit_as_als_drops_the_neighbours(tx: pd.DataFrame) -> None:
    rec = Recommender(algorithm="item_knn", **NONE_EXCLUDED).fit(tx)
    rec.set_params(algorithm="als", factors=4, iterations=2).fit(tx)
    assert "neighbours_" not in rec.__dict__ and rec.model_ is not None


def test_row_top_equals_a_full_sort_with_ties() -> None:
    from rebuy.recommend.neighbours import _row_top

    rng = np.random.default_rng(0)
    m = sp.random(300, 500, density=0.05, random_state=1, format="lil")
    m[5] = 0  # an empty row
    m = sp.csr_matrix(m)
    m.eliminate_zeros()
    m.data = rng.integers(1, 4, size=m.nnz).astype(np.float64)  # many exact ties
    m.sort_indices()
    top, top_s = _row_top(m, 7)
    for i in range(m.shape[0]):
        cols, vals = m.indices[m.indptr[i] : m.indptr[i + 1]], m.data[m.indptr[i] : m.indptr[i + 1]]
        o = np.lexsort((cols, -vals))[:7]
        np.testing.assert_array_equal(top[i, : len(o)], cols[o])
        np.testing.assert_array_equal(top_s[i, : len(o)], vals[o])
        assert (top[i, len(o) :] == -1).all() and (top_s[i, len(o) :] == 0).all()
