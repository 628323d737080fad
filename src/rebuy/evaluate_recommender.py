"""Time-split evaluation of the recommender against two honest baselines.

Train on purchases before ``cutoff``, test on what each customer bought from ``cutoff`` to
``test_end`` (inclusive). Test customers are those with purchases both before the cutoff (so
there is a history to personalise from) and in the test period. Two modes:

- ``new_items``: relevant = test-period products the customer had not bought before the cutoff;
  every list filters already-bought products (repurchase off).
- ``repurchase``: relevant = every test-period product; already-bought products may be
  recommended and the model blends its score with the customer's own history.

Methods: the model, ``popularity`` (the most-bought products by distinct customers before the
cutoff) and ``own_history`` (the customer's own most-bought products, by purchase lines; it has
nothing to offer in ``new_items`` mode by construction). Excluded (non-product) codes are removed
from the relevant sets. Metrics at k: precision, recall, NDCG, MAP (binary relevance; MAP
normalised by min(k, |relevant|)), catalogue coverage (share of the training catalogue that
appears in at least one list) and the share of test customers that got a non-empty list.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rebuy.recommend import RECOMMENDER_COLUMNS, Recommender

log = logging.getLogger(__name__)

METHODS = ("model", "popularity", "own_history")


def _end_of(test_end: Any) -> pd.Timestamp:
    """``test_end`` is inclusive: a date (midnight) means the whole day."""
    t = pd.Timestamp(test_end)
    return t + pd.Timedelta(days=1) if t == t.normalize() else t + pd.Timedelta(microseconds=1)


def ranking_metrics(
    recs: dict[str, list[str]], relevant: dict[str, set[str]], k: int = 10
) -> dict[str, float]:
    """Mean precision@k, recall@k, NDCG@k and MAP@k over the customers in ``relevant``.

    Customers missing from ``recs`` (or with an empty list) score 0.
    """
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    p = r = nd = ap = 0.0
    for cust, rel in relevant.items():
        lst = recs.get(cust, [])[:k]
        hits = np.array([x in rel for x in lst], dtype=bool)
        nh = int(hits.sum())
        p += nh / k
        r += nh / len(rel)
        ideal = disc[: min(len(rel), k)].sum()
        nd += float(disc[: len(lst)][hits].sum()) / ideal
        if nh:
            prec_at = np.cumsum(hits) / np.arange(1, len(lst) + 1)
            ap += float(prec_at[hits].sum()) / min(len(rel), k)
    m = max(len(relevant), 1)
    return {f"precision@{k}": p / m, f"recall@{k}": r / m, f"ndcg@{k}": nd / m, f"map@{k}": ap / m}


def _own_history_lists(
    train: pd.DataFrame, customers: list[str], k: int, excluded: set[str]
) -> dict[str, list[str]]:
    t = train[~train["product_id"].isin(list(excluded))]
    t = t[t["customer_id"].isin(customers)]
    cnt = t.groupby(["customer_id", "product_id"], observed=True).size().rename("n").reset_index()
    last = (
        t.groupby(["customer_id", "product_id"], observed=True)["timestamp"]
        .max()
        .rename("last")
        .reset_index()
    )
    cnt = cnt.merge(last, on=["customer_id", "product_id"])
    cnt = cnt.sort_values(["customer_id", "n", "last", "product_id"], ascending=[True, False, False, True])
    top = cnt.groupby("customer_id", observed=True).head(k)
    out = {c: [] for c in customers}
    for c, grp in top.groupby("customer_id", observed=True, sort=False):
        out[str(c)] = grp["product_id"].astype(str).tolist()
    return out


def _summarise(recs: dict[str, list[str]], relevant: dict[str, set[str]], k: int, n_catalogue: int) -> dict:
    res = ranking_metrics(recs, relevant, k)
    shown = {p for c in relevant for p in recs.get(c, [])[:k]}
    res["coverage"] = len(shown) / max(n_catalogue, 1)
    res["customers_with_recommendation"] = (
        float(np.mean([len(recs.get(c, [])) > 0 for c in relevant])) if relevant else 0.0
    )
    return {key: float(v) for key, v in res.items()}


def evaluate_recommender(
    transactions: pd.DataFrame,
    cutoff: Any,
    test_end: Any,
    config_or_recommender: Any = None,
    *,
    new_items_only: bool = True,
    k: int = 10,
) -> dict[str, Any]:
    """Time-split evaluation; returns a JSON-serialisable dict.

    Parameters
    ----------
    transactions : cleaned transactions with ``customer_id``, ``product_id``, ``timestamp``.
    cutoff : train on purchases strictly before it; test from it.
    test_end : last test day (inclusive).
    config_or_recommender : a ``Recommender`` (its hyper-parameters are used, it is refitted on the
        training period), a ``RecommendConfig`` or a full ``Config`` (its ``recommend`` section);
        None = defaults.
    new_items_only : True evaluates the ``new_items`` mode only; False evaluates both the
        ``new_items`` and the ``repurchase`` mode.
    k : list length scored.

    Returns
    -------
    ``{"cutoff", "test_end", "k", "n_train_customers", "n_catalogue", "params", "seconds",
    "modes": {mode: {"n_test_customers", "model": {...}, "popularity": {...}, "own_history": {...}}}}``
    with metric names ``precision@k``, ``recall@k``, ``ndcg@k``, ``map@k``, ``coverage``,
    ``customers_with_recommendation``.
    """
    t0 = time.perf_counter()
    base = _as_recommender(config_or_recommender)
    split = prepare_split(transactions, cutoff, test_end, base)
    model = base.clone(allow_repurchase=False).fit(split.train)
    catalogue = split.catalogue(model)
    out: dict[str, Any] = {
        "cutoff": str(split.cutoff.date()),
        "test_end": str(pd.Timestamp(test_end).date()),
        "k": int(k),
        "n_train_customers": len(model.customer_ids_),
        "n_catalogue": len(catalogue),
        "params": {
            key: (list(v) if isinstance(v, (list, tuple)) else v) for key, v in base.get_params().items()
        },
        "modes": {},
    }
    modes = ["new_items"] if new_items_only else ["new_items", "repurchase"]
    for mode in modes:
        relevant = split.relevant(mode)
        customers = sorted(relevant)
        res = {"n_test_customers": len(customers), "model": score_model(model, split, mode, k)}
        pop = [str(model.product_ids_[p]) for p in model.popular_ if p in catalogue]
        if mode == "new_items":
            bb = split.bought_before
            recs_pop = {c: [p for p in pop if p not in bb.get(c, set())][:k] for c in customers}
        else:
            recs_pop = {c: pop[:k] for c in customers}
        res["popularity"] = _summarise(recs_pop, relevant, k, len(catalogue))
        own = _own_history_lists(split.train, customers, k, split.excluded_ids)
        if mode == "new_items":
            own = {
                c: [p for p in lst if p not in split.bought_before.get(c, set())] for c, lst in own.items()
            }
        res["own_history"] = _summarise(own, relevant, k, len(catalogue))
        out["modes"][mode] = res
    out["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("evaluate_recommender: %s", {m: v["model"] for m, v in out["modes"].items()})
    return out


def _as_recommender(config_or_recommender: Any) -> Recommender:
    if isinstance(config_or_recommender, Recommender):
        return config_or_recommender.clone()
    if config_or_recommender is None:
        return Recommender()
    if hasattr(config_or_recommender, "recommend") and hasattr(config_or_recommender, "data"):
        return Recommender.from_config(config_or_recommender.recommend)
    return Recommender.from_config(config_or_recommender)


@dataclass
class Split:
    """A time split: training lines, test products per known customer, products bought before."""

    cutoff: pd.Timestamp
    train: pd.DataFrame
    test_items: dict[str, set[str]]
    bought_before: dict[str, set[str]]
    excluded_ids: set[str]

    def relevant(self, mode: str) -> dict[str, set[str]]:
        if mode == "new_items":
            rel = {c: items - self.bought_before.get(c, set()) for c, items in self.test_items.items()}
            return {c: r for c, r in rel.items() if r}
        if mode == "repurchase":
            return {c: set(r) for c, r in self.test_items.items() if r}
        raise ValueError(f"unknown evaluation mode {mode!r}; expected 'new_items' or 'repurchase'")

    def catalogue(self, model: Recommender) -> set[int]:
        ex = model._request_excluded()
        return set(np.flatnonzero(~ex).tolist())


def prepare_split(transactions: pd.DataFrame, cutoff: Any, test_end: Any, base: Recommender) -> Split:
    """Train before ``cutoff``; test products per customer known before the cutoff, to ``test_end`` (inclusive)."""
    if "product_id" not in transactions.columns:
        raise ValueError("evaluate_recommender: transactions have no product_id column")
    cut = pd.Timestamp(cutoff)
    end = _end_of(test_end)
    if not end > cut:
        raise ValueError(f"evaluate_recommender: test_end {test_end} is not after cutoff {cutoff}")
    ts = pd.to_datetime(transactions["timestamp"])
    cols = [c for c in RECOMMENDER_COLUMNS if c in transactions.columns]
    tx = transactions[cols].copy()
    tx["customer_id"] = tx["customer_id"].astype("string")
    tx["product_id"] = tx["product_id"].astype("string")
    train = tx[(ts < cut).to_numpy()]
    test = tx[((ts >= cut) & (ts < end)).to_numpy()]
    if train.empty or test.empty:
        raise ValueError(
            f"evaluate_recommender: empty train or test period (cutoff {cutoff}, test_end {test_end})"
        )
    test = test[~base._is_excluded(test["product_id"])]
    test = test[test["customer_id"].isin(train["customer_id"].unique())]
    test_items = {
        str(c): set(map(str, v)) for c, v in test.groupby("customer_id")["product_id"].agg(set).items()
    }
    tr = train[train["customer_id"].isin(list(test_items))]
    bought_before = {
        str(c): set(map(str, v)) for c, v in tr.groupby("customer_id")["product_id"].agg(set).items()
    }
    excluded_ids = set(train.loc[base._is_excluded(train["product_id"]), "product_id"].astype(str))
    return Split(cut, train, test_items, bought_before, excluded_ids)


def score_model(model: Recommender, split: Split, mode: str, k: int = 10) -> dict[str, float]:
    """Metrics of a recommender fitted on ``split.train`` in one mode (sets its repurchase policy)."""
    relevant = split.relevant(mode)
    old = model.allow_repurchase
    model.allow_repurchase = mode == "repurchase"
    try:
        recs = model.recommend(sorted(relevant), k)
    finally:
        model.allow_repurchase = old
    n_cat = int((~model._request_excluded()).sum())
    return _summarise(recs, relevant, k, n_cat)
