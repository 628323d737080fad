"""Tests for the ground-truth simulator (rebuy.simulate).

The model checks compare the simulated data with the BG/NBD and Gamma-Gamma formulas and fitters
of ``lifetimes`` itself, using the true parameters the simulator reports.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data

from rebuy.errors import OutputError, SimulationError
from rebuy.simulate import Simulation, simulate, simulation_paths, write_simulation

TRANSACTION_COLUMNS = ["customer_id", "order_id", "timestamp", "product_id", "quantity", "price", "amount", "category"]
CUSTOMER_COLUMNS = [
    "customer_id", "birth_date", "age", "country", "acquisition_channel", "signup_date",
    "consent_email", "consent_sms", "consent_messenger",
]


@pytest.fixture(scope="module")
def small() -> Simulation:
    return simulate(3_000, seed=11)


@pytest.fixture(scope="module")
def large() -> Simulation:
    # big enough to recover the mixing distributions; events are not needed here
    return simulate(30_000, seed=7, events=False)


@pytest.fixture(scope="module")
def daily_summary(large: Simulation) -> pd.DataFrame:
    """lifetimes' own RFM summary on calendar days (same-day orders collapse), converted to weeks."""
    orders = large.transactions.groupby(["customer_id", "timestamp"], as_index=False)["amount"].sum()
    summary = summary_data_from_transaction_data(
        orders, "customer_id", "timestamp", monetary_value_col="amount",
        observation_period_end=large.truth["end"], freq="D",
    )
    summary["recency"] = summary["recency"] / 7.0
    summary["T"] = summary["T"] / 7.0
    return summary


def _bgnbd_with(truth: dict) -> BetaGeoFitter:
    bg = BetaGeoFitter()
    t = truth["bgnbd"]
    bg.params_ = pd.Series({"r": t["r"], "alpha": t["alpha_weeks"], "a": t["a"], "b": t["b"]})
    return bg


# ---------------------------------------------------------------------------------------------
# determinism and schema


def test_same_seed_same_data_and_different_seed_different_data() -> None:
    one, two, other = simulate(1_500, seed=5), simulate(1_500, seed=5), simulate(1_500, seed=6)
    for name in ("transactions", "customers", "events", "latent", "products"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(two, name))
    assert one.truth == two.truth
    assert not one.transactions["amount"].equals(other.transactions["amount"])
    assert one.truth["realised"]["orders"] != other.truth["realised"]["orders"]


def test_event_settings_do_not_change_transactions() -> None:
    with_events, without = simulate(1_000, seed=3), simulate(1_000, seed=3, events=False)
    pd.testing.assert_frame_equal(with_events.transactions, without.transactions)
    assert len(without.events) == 0
    assert list(without.events.columns) == ["customer_id", "product_id", "timestamp", "event"]


def test_transactions_schema_and_invariants(small: Simulation) -> None:
    tx = small.transactions
    assert list(tx.columns) == TRANSACTION_COLUMNS
    for col in ("customer_id", "order_id", "product_id", "category"):
        assert tx[col].dtype == "string", col
    assert tx["timestamp"].dtype == "datetime64[ns]"
    for col in ("quantity", "price", "amount"):
        assert tx[col].dtype == "float64", col
    assert not tx.isna().any().any()
    assert (tx["quantity"] >= 1).all() and (tx["quantity"] == np.floor(tx["quantity"])).all()
    assert (tx["price"] >= 0.01).all()
    np.testing.assert_allclose(tx["amount"], np.round(tx["price"] * tx["quantity"], 2), atol=1e-9)
    # sorted by customer then time, all inside the window
    key = tx[["customer_id", "timestamp"]]
    assert key.equals(key.sort_values(["customer_id", "timestamp"], kind="stable"))
    assert tx["timestamp"].min() >= pd.Timestamp("2023-01-01")
    assert tx["timestamp"].max() < pd.Timestamp("2025-01-01")
    # an order belongs to one customer at one time, holds each product once, and invoices rise with time
    per_order = tx.groupby("order_id").agg(c=("customer_id", "nunique"), t=("timestamp", "nunique"))
    assert (per_order["c"] == 1).all() and (per_order["t"] == 1).all()
    assert not tx.duplicated(["order_id", "product_id"]).any()
    first = tx.drop_duplicates("order_id").sort_values("timestamp", kind="stable")
    assert first["order_id"].astype(int).is_monotonic_increasing
    # each product has one category
    assert (tx.groupby("product_id")["category"].nunique() == 1).all()
    # every customer buys at least once; customers and latent cover the same ids
    assert set(tx["customer_id"]) == set(small.customers["customer_id"]) == set(small.latent["customer_id"])
    assert tx["customer_id"].nunique() == small.truth["n_customers"] == 3_000


def test_order_values_follow_the_gamma_gamma_draw_to_pence(small: Simulation) -> None:
    # the realised order totals equal the latent draws up to pence rounding of line prices, so the
    # mean order value per customer tracks the latent expected value p / nu
    order_value = small.transactions.groupby("order_id")["amount"].sum()
    assert (order_value > 0).all()
    per_customer = small.transactions.groupby("customer_id")["amount"].sum() / small.latent.set_index(
        "customer_id"
    )["n_orders"]
    latent = small.latent.set_index("customer_id")["expected_order_value"].reindex(per_customer.index)
    assert np.corrcoef(np.log(per_customer), np.log(latent))[0, 1] > 0.6


def test_customers_table(small: Simulation) -> None:
    cu = small.customers
    assert list(cu.columns) == CUSTOMER_COLUMNS
    assert cu["customer_id"].is_unique and cu["customer_id"].dtype == "string"
    assert cu["birth_date"].dtype == "datetime64[ns]" and cu["signup_date"].dtype == "datetime64[ns]"
    for col in ("consent_email", "consent_sms", "consent_messenger"):
        assert cu[col].dtype == bool, col
    known = cu["age"].notna()
    assert 0 < (~known).sum() < 0.1 * len(cu)  # a few unrecorded birth dates
    assert (cu["birth_date"].isna() == ~known).all()
    assert cu.loc[known, "age"].between(18, 80).all()
    years = (pd.Timestamp(small.truth["end"]) - cu.loc[known, "birth_date"]).dt.days / 365.25
    np.testing.assert_array_equal(cu.loc[known, "age"], np.floor(years))
    # accounts exist by the first purchase
    first = small.transactions.groupby("customer_id")["timestamp"].min().dt.normalize()
    assert (cu.set_index("customer_id")["signup_date"].reindex(first.index) <= first).all()
    assert cu["country"].value_counts().index[0] == "United Kingdom"
    assert cu["acquisition_channel"].nunique() >= 5


def test_consent_and_channel_depend_on_age_sensibly() -> None:
    cu = simulate(20_000, seed=2, events=False).customers.dropna(subset=["age"])
    assert cu["age"].between(18, 80).all() and cu["age"].min() < 21 and cu["age"].max() > 70
    old, young = cu[cu["age"] >= 50], cu[cu["age"] < 35]
    assert old["consent_email"].mean() > young["consent_email"].mean() + 0.1
    assert young["consent_messenger"].mean() > old["consent_messenger"].mean() + 0.1
    by_channel = cu.groupby("acquisition_channel")["age"].mean()
    assert by_channel["social"] < by_channel["email"] - 5


def test_events_table(small: Simulation) -> None:
    ev, tx = small.events, small.transactions
    assert list(ev.columns) == ["customer_id", "product_id", "timestamp", "event"]
    assert ev["customer_id"].dtype == "string" and ev["product_id"].dtype == "string"
    assert ev["timestamp"].dtype == "datetime64[ns]"
    assert set(ev["event"].unique()) == {"view", "cart"}
    assert ev["timestamp"].between(pd.Timestamp("2023-01-01"), pd.Timestamp("2024-12-31 23:59:59")).all()
    key = ev[["customer_id", "timestamp"]]
    assert key.equals(key.sort_values(["customer_id", "timestamp"], kind="stable"))
    bought = pd.MultiIndex.from_frame(tx[["customer_id", "product_id"]].drop_duplicates())
    seen = pd.MultiIndex.from_frame(ev[["customer_id", "product_id"]])
    was_bought = seen.isin(bought)
    # both browsing that leads to a purchase and browsing that does not
    assert 0.2 < was_bought.mean() < 0.9
    assert (ev.loc[~was_bought, "event"] == "cart").any()  # abandoned carts
    assert set(ev["product_id"]) <= set(small.products["product_id"])


def test_truth_parameters(small: Simulation) -> None:
    t = small.truth
    assert t["bgnbd"]["alpha_days"] == pytest.approx(7 * t["bgnbd"]["alpha_weeks"])
    assert {"r", "alpha_weeks", "alpha_days", "a", "b"} <= set(t["bgnbd"])
    assert {"p", "q", "v"} <= set(t["gamma_gamma"])
    assert t["seed"] == 11 and t["start"] == "2023-01-01" and t["end"] == "2024-12-31"
    assert t["catalogue"]["n_products"] == 2_000 == len(small.products)
    assert t["realised"]["lines"] == len(small.transactions)
    assert t["realised"]["same_day_repeat_share"] < 0.03  # day collapse stays rare
    json.dumps(t)  # serialisable as is


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_customers": 0}, "n_customers"),
        ({"alpha": -1.0}, "'alpha'"),
        ({"q": float("nan")}, "'q'"),
        ({"start": "2024-01-01", "end": "2023-01-01"}, "at least 7 days"),
        ({"start": "not a date"}, "'start'"),
        ({"n_products": 10, "n_categories": 20}, "n_products"),
        ({"taste_strength": 1.5}, "taste_strength"),
        ({"seed": -1}, "seed"),
        ({"alpha": "fast"}, "'alpha' must be a number"),
        ({"n_customers": "many"}, "n_customers must be a positive integer"),
        ({"end": None}, "'end': missing date"),
        ({"mean_lines": 0.5}, "mean_lines must be >= 1"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs: dict, message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        simulate(**{"n_customers": 10, **kwargs})


def test_infinite_mean_order_value_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="rebuy.simulate"):
        sim = simulate(20, seed=0, q=0.9, events=False)
    assert "infinite mean" in caplog.text
    assert sim.truth["gamma_gamma"]["mean_order_value"] is None


# ---------------------------------------------------------------------------------------------
# writing


@pytest.mark.parametrize("ext", [".parquet", ".csv", ".csv.gz"])
def test_write_simulation_files(tmp_path: Path, ext: str) -> None:
    sim = simulate(300, seed=4)
    out = tmp_path / "nested" / f"shop{ext}"
    paths = write_simulation(sim, out)
    assert paths == {k: v for k, v in simulation_paths(out).items()}
    assert paths["transactions"] == out
    assert paths["customers"].name == f"shop_customers{ext}"
    assert paths["events"].name == f"shop_events{ext}"
    assert paths["truth"].name == "shop_truth.json"
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(p.name for p in paths.values())  # no temp files
    truth = json.loads(paths["truth"].read_text())
    assert truth["bgnbd"] == sim.truth["bgnbd"] and truth["gamma_gamma"] == sim.truth["gamma_gamma"]
    assert truth["files"]["customers"] == f"shop_customers{ext}"
    if ext == ".parquet":
        back = pd.read_parquet(out)
        pd.testing.assert_frame_equal(back, sim.transactions)
        pd.testing.assert_frame_equal(pd.read_parquet(paths["customers"]), sim.customers)
    else:
        if ext == ".csv.gz":
            with gzip.open(out, "rt") as fh:
                assert fh.readline().strip().replace('"', "").split(",") == TRANSACTION_COLUMNS
        back = pd.read_csv(out, dtype={"customer_id": str, "order_id": str, "product_id": str})
        assert list(back.columns) == TRANSACTION_COLUMNS
        np.testing.assert_array_equal(pd.to_datetime(back["timestamp"]), sim.transactions["timestamp"])
        np.testing.assert_array_equal(back["amount"], sim.transactions["amount"])
        np.testing.assert_array_equal(back["order_id"], sim.transactions["order_id"])
        customers = pd.read_csv(paths["customers"], parse_dates=["birth_date", "signup_date"])
        assert customers["consent_email"].dtype == bool
        assert customers["age"].isna().sum() == sim.customers["age"].isna().sum()
        events = pd.read_csv(paths["events"])
        assert len(events) == len(sim.events)


def test_write_simulation_overwrites_and_can_skip_latent(tmp_path: Path) -> None:
    out = tmp_path / "shop.parquet"
    write_simulation(simulate(100, seed=1), out)
    paths = write_simulation(simulate(200, seed=1), out, include_latent=False)
    assert pd.read_parquet(out)["customer_id"].nunique() == 200
    assert "latent" not in paths and "customers" in paths


@pytest.mark.parametrize("name", ["shop.xlsx", "shop", "shop.json", ".csv"])
def test_unknown_extension_is_an_error_naming_the_path(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    with pytest.raises(OutputError, match="unknown file extension") as err:
        write_simulation(simulate(50, seed=0), out)
    assert str(out) in str(err.value)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# the data follow the models


def test_latent_draws_match_mixing_distributions(large: Simulation) -> None:
    lat, t = large.latent, large.truth
    r, alpha, a, b = (t["bgnbd"][k] for k in ("r", "alpha_weeks", "a", "b"))
    n = len(lat)
    # Gamma(r, rate alpha): mean r/alpha, sd sqrt(r)/alpha; Beta(a, b) mean a/(a+b)
    assert abs(lat["lambda_per_week"].mean() - r / alpha) < 4 * np.sqrt(r) / alpha / np.sqrt(n)
    beta_sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert abs(lat["dropout_p"].mean() - a / (a + b)) < 4 * beta_sd / np.sqrt(n)
    q, v = t["gamma_gamma"]["q"], t["gamma_gamma"]["v"]
    assert abs(lat["nu"].mean() - q / v) < 4 * np.sqrt(q) / v / np.sqrt(n)


def test_repeat_purchases_match_bgnbd_expectation(large: Simulation) -> None:
    # E[X(T)] from the BG/NBD formula with the true parameters vs the realised repeat counts
    # (latent counts: no day collapse). T in weeks from the first purchase day (+ half a day).
    bg = _bgnbd_with(large.truth)
    first_day = large.transactions.groupby("customer_id")["timestamp"].min().dt.normalize()
    t_weeks = ((pd.Timestamp(large.truth["end"]) - first_day).dt.days + 0.5) / 7.0
    repeats = (large.latent.set_index("customer_id")["n_orders"] - 1).reindex(first_day.index)
    expected = bg.expected_number_of_purchases_up_to_time(t_weeks.to_numpy())
    se = repeats.std() / np.sqrt(len(repeats))
    assert abs(repeats.mean() - expected.mean()) < 4 * se


def test_alive_share_matches_bgnbd_p_alive(large: Simulation, daily_summary: pd.DataFrame) -> None:
    bg = _bgnbd_with(large.truth)
    s = daily_summary
    p_alive = bg.conditional_probability_alive(s["frequency"], s["recency"], s["T"])
    alive = large.latent.set_index("customer_id")["alive"].reindex(s.index)
    se = np.sqrt(np.sum(p_alive * (1 - p_alive))) / len(p_alive)
    assert abs(alive.mean() - p_alive.mean()) < 4 * se


def test_bgnbd_fit_on_day_collapsed_data_recovers_parameters(large: Simulation, daily_summary: pd.DataFrame) -> None:
    grouped = daily_summary.groupby(["frequency", "recency", "T"]).size().reset_index(name="weight")
    bg = BetaGeoFitter().fit(grouped["frequency"], grouped["recency"], grouped["T"], weights=grouped["weight"])
    truth = large.truth["bgnbd"]
    for name, true in (("r", truth["r"]), ("alpha", truth["alpha_weeks"]), ("a", truth["a"]), ("b", truth["b"])):
        estimate, se = bg.params_[name], bg.standard_errors_[name]
        # day collapse biases r and alpha up by a few percent; sampling error is 1-5% (se)
        assert abs(estimate / true - 1) < 0.15, (name, estimate, true, se)
        assert abs(estimate - true) < 6 * se + 0.05 * true, (name, estimate, true, se)


def test_gamma_gamma_fit_recovers_parameters(large: Simulation, daily_summary: pd.DataFrame) -> None:
    repeat = daily_summary[daily_summary["frequency"] > 0]
    gg = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
    truth = large.truth["gamma_gamma"]
    for name in ("p", "q", "v"):
        estimate, se = gg.params_[name], gg.standard_errors_[name]
        assert abs(estimate / truth[name] - 1) < 0.15, (name, estimate, truth[name], se)
        assert abs(estimate - truth[name]) < 4 * se, (name, estimate, truth[name], se)


# ---------------------------------------------------------------------------------------------
# baskets: popularity skew and taste


def test_popularity_is_skewed_and_matches_catalogue(small: Simulation) -> None:
    counts = small.transactions["product_id"].value_counts()
    top_tenth = counts.iloc[: len(small.products) // 10].sum() / counts.sum()
    assert top_tenth > 0.35  # Zipf-like: a tenth of the catalogue sells well over a third of lines
    # the catalogue's own popularity predicts sales
    pop = small.products.set_index("product_id")["popularity"].reindex(counts.index)
    assert np.corrcoef(np.log(counts), np.log(pop))[0, 1] > 0.5


def test_taste_gives_a_recommender_real_signal(large: Simulation) -> None:
    tx = large.transactions
    rank = tx.groupby("customer_id")["timestamp"].rank(method="dense")
    past, future = tx[rank <= 2], tx[rank > 2]
    counts = past.groupby(["customer_id", "category"]).size().reset_index(name="n")
    counts = counts.sort_values(["customer_id", "n"], ascending=[True, False], kind="stable")
    top_past = counts.drop_duplicates("customer_id").set_index("customer_id")["category"]
    future = future[future["customer_id"].isin(top_past.index)]
    hit = (future["category"].to_numpy() == top_past.reindex(future["customer_id"]).to_numpy()).mean()
    # baseline: how often a line falls in that category if customers bought by overall popularity
    share = tx["category"].value_counts(normalize=True)
    baseline = share.reindex(top_past.reindex(future["customer_id"]).to_numpy()).to_numpy().mean()
    assert hit > 2.5 * baseline
    # most lines come from the customer's preferred categories (taste_strength = 0.8 plus chance)
    lat = large.latent.set_index("customer_id")
    prefs = lat.loc[tx["customer_id"], ["taste_1", "taste_2", "taste_3"]].to_numpy()
    in_taste = (prefs == tx["category"].to_numpy()[:, None]).any(axis=1).mean()
    assert 0.8 < in_taste < 0.95
