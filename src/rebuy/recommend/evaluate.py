"""Time-split evaluation of the recommender against two honest baselines.

Train on purchases before ``cutoff``, test on what each customer bought from ``cutoff`` to
``test_end`` (inclusive: a date covers its whole day, ``rebuy.dates.inclusive_end``). Test customers
are those with purchases both before the cutoff (so there is a history to personalise from) and in
the test period. Two modes:

- ``new_items``: relevant = test-period products the customer had not bought before the cutoff;
  every list filters already-bought products (repurchase off).
- ``repurchase``: relevant = every test-period product; already-bought products may be
  recommended and the model blends its score with the customer's own history.

Each mode is a per-call policy (``score_model``): the fitted recommender is never changed.

Methods: the model, ``popularity`` (the most-bought products by distinct customers before the
cutoff) and ``own_history`` (the customer's own most-bought products, by purchase lines; it has
nothing to offer in ``new_items`` mode by construction). Excluded (non-product) codes are removed
from the relevant sets. Metrics at k: precision, recall, NDCG, MAP (binary relevance; MAP
normalised by min(k, |relevant|)), catalogue coverage (share of the training catalogue that
appears in at least one list) and the share of test customers that got a non-empty list.

Layout: :func:`ranking_metrics`, :func:`summarise`, the baselines (:func:`own_history_lists`,
:func:`popularity_lists`), :class:`Split` with :func:`prepare_split`, :func:`score_model`, then
:func:`evaluate_recommender` (the whole report).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from rebuy.dates import inclusive_end, to_timestamp
from rebuy.errors import InvalidParameterError, RecommenderDataError
from rebuy.recommend.defaults import RECOMMENDER_COLUMNS
from rebuy.recommend.policy import RecommendPolicy
from rebuy.recommend.recommender import Recommender

log = logging.getLogger(__name__)

METHODS = ("model", "popularity", "own_history")
MODES = ("new_items", "repurchase")


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


def summarise(recs: dict[str, list[str]], relevant: dict[str, set[str]], k: int, n_catalogue: int) -> dict:
    """:func:`ranking_metrics` plus ``coverage`` (share of ``n_catalogue`` products shown) and
    ``customers_with_recommendation`` (share of relevant customers with a non-empty list)."""
    res = ranking_metrics(recs, relevant, k)
    shown = {p for c in relevant for p in recs.get(c, [])[:k]}
    res["coverage"] = len(shown) / max(n_catalogue, 1)
    res["customers_with_recommendation"] = (
        float(np.mean([len(recs.get(c, [])) > 0 for c in relevant])) if relevant else 0.0
    )
    return {key: float(v) for key, v in res.items()}


def own_history_lists(
    train: pd.DataFrame, customers: list[str], k: int, excluded: set[str]
) -> dict[str, list[str]]:
    """Each customer's ``k`` most-bought products (purchase lines; ties: most recent, then id)."""
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


def popularity_lists(model: Recommender, catalogue: set[int], customers: list[str]) -> dict[str, list[str]]:
    """The model's global popularity list restricted to ``catalogue`` (product columns), per customer."""
    pop = [str(model.product_ids_[p]) for p in model.popular_ if p in catalogue]
    return {c: pop for c in customers}


@dataclass
class Split:
    """A time split: training lines, test products per known customer, products bought before."""

    cutoff: pd.Timestamp
    train: pd.DataFrame
    test_items: dict[str, set[str]]
    bought_before: dict[str, set[str]]
    excluded_ids: set[str]

    def relevant(self, mode: str) -> dict[str, set[str]]:
        """customer -> relevant test products in ``mode`` (customers with none are left out)."""
        if mode == "new_items":
            rel = {c: items - self.bought_before.get(c, set()) for c, items in self.test_items.items()}
            return {c: r for c, r in rel.items() if r}
        if mode == "repurchase":
            return {c: set(r) for c, r in self.test_items.items() if r}
        raise InvalidParameterError(f"unknown evaluation mode {mode!r}; expected 'new_items' or 'repurchase'")

    def catalogue(self, model: Recommender, policy: RecommendPolicy | None = None) -> set[int]:
        """Product columns of ``model`` that ``policy`` (None: the model's) may recommend."""
        return set(np.flatnonzero(~model.excluded_mask(policy)).tolist())

    def new_only(self, lists: dict[str, list[str]], k: int | None = None) -> dict[str, list[str]]:
        """``lists`` without the products each customer bought before the cutoff (first ``k`` kept)."""
        out = {c: [p for p in lst if p not in self.bought_before.get(c, set())] for c, lst in lists.items()}
        return out if k is None else {c: lst[:k] for c, lst in out.items()}


def prepare_split(transactions: pd.DataFrame, cutoff: Any, test_end: Any, base: Recommender) -> Split:
    """Train before ``cutoff``; test products per customer known before the cutoff, to ``test_end`` (inclusive)."""
    if "product_id" not in transactions.columns:
        raise RecommenderDataError("evaluate_recommender: transactions have no product_id column")
    cut = to_timestamp(cutoff, "evaluate_recommender: cutoff")
    end = inclusive_end(test_end, "evaluate_recommender: test_end")
    if not end > cut:
        raise InvalidParameterError(f"evaluate_recommender: test_end {test_end} is not after cutoff {cutoff}")
    ts = pd.to_datetime(transactions["timestamp"])
    cols = [c for c in RECOMMENDER_COLUMNS if c in transactions.columns]
    tx = transactions[cols].copy()
    tx["customer_id"] = tx["customer_id"].astype("string")
    tx["product_id"] = tx["product_id"].astype("string")
    train = tx[(ts < cut).to_numpy()]
    test = tx[((ts >= cut) & (ts < end)).to_numpy()]
    if train.empty or test.empty:
        raise RecommenderDataError(
            f"evaluate_recommender: empty train or test period (cutoff {cutoff}, test_end {test_end})"
        )
    excludes = base.policy.excludes
    test = test[~excludes(test["product_id"])]
    test = test[test["customer_id"].isin(train["customer_id"].unique())]
    test_items = {
        str(c): set(map(str, v)) for c, v in test.groupby("customer_id")["product_id"].agg(set).items()
    }
    tr = train[train["customer_id"].isin(list(test_items))]
    bought_before = {
        str(c): set(map(str, v)) for c, v in tr.groupby("customer_id")["product_id"].agg(set).items()
    }
    excluded_ids = set(train.loc[excludes(train["product_id"]), "product_id"].astype(str))
    return Split(cut, train, test_items, bought_before, excluded_ids)


def score_model(
    model: Recommender, split: Split, mode: str, k: int = 10, *, policy: RecommendPolicy | None = None
) -> dict[str, float]:
    """Metrics of a recommender fitted on ``split.train`` in one mode.

    ``policy`` (None: the model's) is the starting point; the mode sets its ``allow_repurchase``
    (on in ``repurchase`` mode). The model itself is not changed.
    """
    relevant = split.relevant(mode)
    base = model.policy if policy is None else policy
    recs = model.recommend(sorted(relevant), k, policy=replace(base, allow_repurchase=mode == "repurchase"))
    n_cat = int((~model.excluded_mask(base)).sum())
    return summarise(recs, relevant, k, n_cat)


def _as_recommender(config_or_recommender: Any) -> Recommender:
    if isinstance(config_or_recommender, Recommender):
        return config_or_recommender.clone()
    if config_or_recommender is None:
        return Recommender()
    if hasattr(config_or_recommender, "recommend") and hasattr(config_or_recommender, "data"):
        return Recommender.from_config(config_or_recommender.recommend)
    return Recommender.from_config(config_or_recommender)


def _score_mode(model: Recommender, split: Split, mode: str, k: int, catalogue: set[int]) -> dict[str, Any]:
    """The model and both baselines in one mode."""
    relevant = split.relevant(mode)
    customers = sorted(relevant)
    res: dict[str, Any] = {"n_test_customers": len(customers), "model": score_model(model, split, mode, k)}
    pop = popularity_lists(model, catalogue, customers)
    own = own_history_lists(split.train, customers, k, split.excluded_ids)
    if mode == "new_items":
        pop, own = split.new_only(pop, k), split.new_only(own)
    else:
        pop = {c: lst[:k] for c, lst in pop.items()}
    res["popularity"] = summarise(pop, relevant, k, len(catalogue))
    res["own_history"] = summarise(own, relevant, k, len(catalogue))
    return res


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
    for mode in MODES[:1] if new_items_only else MODES:
        out["modes"][mode] = _score_mode(model, split, mode, k, catalogue)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("evaluate_recommender: %s", {m: v["model"] for m, v in out["modes"].items()})
    return out
