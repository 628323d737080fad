"""Simulated offer experiments with a known truth: an offer log for a simulated shop, and what
its customers buy in the window after the decision, with and without the offer.

Offer log (:func:`simulated_offer_log`): one decision night ``decided_at`` (default: the shop's
last day + 1). Every customer of the shop gets an offer type drawn at random with the weights
``offer_types`` (independent of everything else: a random assignment, so every offer type sees the
same kind of customers), groups come from :mod:`rebuy.offers.control` (``control_shares`` from the
night's counts, ``assign_groups`` with ``experiment_key``), a share ``no_channel_share`` of the
customers has no allowed channel (channel "none"), and ``deliver`` = treatment with a channel. The
pre-decision columns are computed from the observed history (``total_spend``; ``segment`` =
"Active" / "Cooling" / "Lapsed" by days since the last purchase: <= 90, <= 180, more) and, as
stand-ins for a trained model's scores, from the latent truth without the hidden ``alive`` flag:
``p_alive~ = (1 - dropout_p) ** (lambda * gap / 7)`` (gap = days since the last purchase),
``expected_purchases_90d = p_alive~ * lambda * 90 / 7`` and ``p_purchase_90d = p_alive~ *
(1 - exp(-lambda * 90 / 7))``. ``discount_cost`` = ``offer_value`` (a 10% discount) x the customer's
observed mean order value for delivered decisions, 0 otherwise. No model is trained.

Responses (:func:`simulate_responses`): each customer's latent BG/NBD process continues from the
shop's end (alive customers only: Poisson(lambda) purchase times, dropout with probability p after
each purchase) up to the end of the window; order values are Gamma-Gamma draws ``Gamma(p, rate
nu)``. An :class:`OfferEffect` acts on treated, delivered customers inside the window only: with
``response = r >= 0`` such a customer makes one extra purchase with probability ``r`` (uniform time
in the window, value a Gamma-Gamma draw times ``spend``; it does not change the baseline process);
with ``r < 0`` the customer's baseline purchases in the window are all cancelled with probability
``|r|``. Both potential outcomes are computed for every logged customer from the same random
numbers (common random numbers), so the truth is the realised mean over the treatment group of
``Y1 - Y0`` (ITT: undelivered treated customers have ``Y1 = Y0``).

Deterministic per seed; vectorised numpy (1M customers in seconds).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from rebuy.dates import cutoff_after
from rebuy.errors import SimulationError
from rebuy.offers.control import TREATMENT, assign_groups, control_shares, experiment_key
from rebuy.offers.names import CHANNELS, RULE_NAMES
from rebuy.schema import OFFER_LOG_COLUMNS
from rebuy.simulate import Simulation

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EFFECTS", "DEFAULT_OFFER_TYPES", "OfferEffect", "OfferResponses", "parse_effects",
    "simulate_responses", "simulated_offer_log",
]

_NS_PER_DAY = 86_400 * 10**9
_OFFER_NAMES = (*RULE_NAMES, "reminder")
_DAYS_PER_WEEK = 7.0


@dataclass(frozen=True)
class OfferEffect:
    """The true effect of an offer type on a treated, delivered customer over the window.

    ``response``: extra probability of one extra purchase (in [0, 1]); negative: probability of
    cancelling the customer's baseline purchases in the window (in [-1, 0)). ``spend``: the extra
    purchase's value as a multiple of a Gamma-Gamma order value (>= 0).
    """

    response: float
    spend: float = 1.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.response) and -1.0 <= self.response <= 1.0):
            raise SimulationError(f"offer effect: response must be in [-1, 1], got {self.response!r}")
        if not (np.isfinite(self.spend) and self.spend >= 0.0):
            raise SimulationError(f"offer effect: spend must be a finite number >= 0, got {self.spend!r}")


DEFAULT_EFFECTS: dict[str, OfferEffect] = {
    "win_back": OfferEffect(0.06), "cross_sell": OfferEffect(0.04), "loyalty_points": OfferEffect(0.03),
    "birthday": OfferEffect(0.05), "browse_abandonment": OfferEffect(0.05), "spend_tier": OfferEffect(0.02),
    "vip": OfferEffect(0.0), "referral": OfferEffect(0.0), "reminder": OfferEffect(-0.2),
}
"""Demo effects: clearly positive (win_back), zero (vip, referral) and harmful (reminder: a customer
who would have bought in the window does not with probability 0.2, about −2 points of response)."""

DEFAULT_OFFER_TYPES: dict[str, float] = {
    "win_back": 0.25, "cross_sell": 0.2, "loyalty_points": 0.15, "reminder": 0.12, "browse_abandonment": 0.1,
    "spend_tier": 0.06, "vip": 0.05, "referral": 0.04, "birthday": 0.03,
}
"""Demo weights of the random offer-type assignment (unequal, so control shares differ by type)."""


def parse_effects(items: Sequence[str] | Mapping[str, Any]) -> dict[str, OfferEffect]:
    """Effects from ``["win_back=0.05", "vip=0:1.2", ...]`` (response[:spend]) or a mapping of names
    to an :class:`OfferEffect`, a response or a (response, spend) pair. SimulationError names a bad item."""
    pairs = items.items() if isinstance(items, Mapping) else (_split(item) for item in items)
    out: dict[str, OfferEffect] = {}
    for name, value in pairs:
        item = f"{name}={value}"
        if name not in _OFFER_NAMES:
            raise SimulationError(f"offer effect {item!r}: unknown offer type {name!r}; expected one of {list(_OFFER_NAMES)}")
        out[name] = _effect(value, item)
    return out


def _split(item: str) -> tuple[str, str]:
    name, sep, value = str(item).partition("=")
    if not sep or not name.strip() or not value.strip():
        raise SimulationError(f"offer effect {item!r}: expected NAME=RESPONSE or NAME=RESPONSE:SPEND")
    return name.strip(), value.strip()


def _effect(value: Any, item: str) -> OfferEffect:
    if isinstance(value, OfferEffect):
        return value
    parts = value.split(":") if isinstance(value, str) else list(value) if isinstance(value, tuple | list) else [value]
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise SimulationError(f"offer effect {item!r}: response and spend must be numbers") from None
    if len(numbers) not in (1, 2):
        raise SimulationError(f"offer effect {item!r}: expected RESPONSE or RESPONSE:SPEND")
    try:
        return OfferEffect(*numbers)
    except SimulationError as err:
        raise SimulationError(f"offer effect {item!r}: {str(err).split(': ', 1)[1]}") from None


# ----------------------------------------------------------------------------------------------
# the offer log


def _latent(sim: Simulation) -> pd.DataFrame:
    if sim.latent is None:
        raise SimulationError("simulation: no latent truth (sim.latent is None); use rebuy.simulate.simulate")
    return sim.latent


def _end(sim: Simulation) -> pd.Timestamp:
    """The first instant after the shop's observed window (midnight after ``truth["end"]``)."""
    return cutoff_after(pd.Timestamp(sim.truth["end"]))


def _history(sim: Simulation) -> pd.DataFrame:
    """Per latent customer (latent order): total spend, orders and the last purchase time."""
    latent = _latent(sim)
    tx = sim.transactions
    codes = pd.Index(latent["customer_id"]).get_indexer(tx["customer_id"])
    n = len(latent)
    last = pd.Series(tx["timestamp"].to_numpy().view(np.int64)).groupby(codes, sort=False).max()
    out = pd.DataFrame({"total_spend": np.bincount(codes, weights=tx["amount"].to_numpy(), minlength=n)})
    out["orders"] = latent["n_orders"].to_numpy()
    out["last_ns"] = last.reindex(range(n)).to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _gap_days(hist: pd.DataFrame, decided_at: pd.Timestamp) -> np.ndarray:
    """Days from each customer's last purchase day to ``decided_at`` (10,000 without a purchase)."""
    last_day = np.floor(hist["last_ns"].to_numpy() / _NS_PER_DAY)
    gap = decided_at.value // _NS_PER_DAY - last_day
    return np.nan_to_num(gap, nan=10_000.0)


def simulated_offer_log(
    sim: Simulation, *, decided_at: Any = None, control_share: float = 0.1, min_control: int = 100,
    max_control_share: float = 0.5, experiment: str | None = None, seed: int = 0,
    offer_types: Mapping[str, float] | None = None, no_channel_share: float = 0.1,
) -> pd.DataFrame:
    """One night's offer log for every customer of ``sim`` (columns :data:`OFFER_LOG_COLUMNS`; see
    the module docstring for the assignment and the covariates). ``offer_types`` maps types to
    assignment weights (default :data:`DEFAULT_OFFER_TYPES`)."""
    decided_at = _decision_day(sim, decided_at)
    weights = _type_weights(offer_types)
    latent = _latent(sim)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    n = len(latent)
    names = np.array(list(weights), dtype=object)
    kind = names[rng.choice(len(names), size=n, p=np.array(list(weights.values())))]
    ids = latent["customer_id"].astype("string")
    key = experiment_key(experiment, decided_at)
    counts = {t: int(c) for t, c in zip(*np.unique(kind, return_counts=True), strict=True)}
    shares = control_shares(counts, control_share, min_control, max_control_share)
    group, share = assign_groups(ids.to_numpy(dtype=object), kind, key, shares)
    has_channel = rng.random(n) >= no_channel_share
    channel = np.where(has_channel, np.array(CHANNELS, dtype=object)[rng.integers(0, len(CHANNELS), n)], "none")
    deliver = (group == TREATMENT) & has_channel
    hist = _history(sim)
    gap = _gap_days(hist, decided_at)
    log = pd.DataFrame({
        "customer_id": ids.array, "decided_at": np.full(n, decided_at.to_datetime64(), dtype="datetime64[ns]"),
        "run_id": _constant(f"score-{decided_at:%Y%m%d}", n), "model_run_id": _constant("simulated", n),
        "experiment": _constant(key, n), "offer_type": pd.array(kind, dtype="string"), "offer_value": 0.1,
    })
    mean_order = hist["total_spend"].to_numpy() / np.maximum(hist["orders"].to_numpy(), 1)
    log["discount_cost"] = np.where(deliver, 0.1 * mean_order, 0.0)
    log["channel"] = pd.array(channel, dtype="string")
    log["group"] = pd.array(group, dtype="string")
    log["deliver"] = deliver
    log["control_share"] = share
    log["segment"] = pd.array(_segments(gap), dtype="string")
    log = log.assign(**_scores(latent, gap), total_spend=hist["total_spend"].to_numpy())
    log["scored_at"] = np.full(n, (decided_at - pd.Timedelta(hours=1)).to_datetime64(), dtype="datetime64[ns]")
    return log[OFFER_LOG_COLUMNS]


def _constant(text: str, n: int) -> pd.array:
    return pd.array(np.full(n, text, dtype=object), dtype="string")


def _decision_day(sim: Simulation, decided_at: Any) -> pd.Timestamp:
    end = _end(sim)
    if decided_at is None:
        return end
    day = pd.Timestamp(decided_at).normalize()
    if day < end:
        raise SimulationError(f"decided_at {day.date()}: must be after the shop's last day {sim.truth['end']}")
    return day


def _type_weights(offer_types: Mapping[str, float] | None) -> dict[str, float]:
    weights = dict(DEFAULT_OFFER_TYPES if offer_types is None else offer_types)
    unknown = [t for t in weights if t not in _OFFER_NAMES]
    if unknown or not weights or min(weights.values()) < 0 or sum(weights.values()) <= 0:
        raise SimulationError(f"offer_types {weights!r}: expected non-negative weights of {list(_OFFER_NAMES)}")
    total = float(sum(weights.values()))
    return {t: float(w) / total for t, w in weights.items()}


def _segments(gap_days: np.ndarray) -> np.ndarray:
    return np.where(gap_days <= 90, "Active", np.where(gap_days <= 180, "Cooling", "Lapsed")).astype(object)


def _scores(latent: pd.DataFrame, gap: np.ndarray) -> dict[str, np.ndarray]:
    """Stand-in model scores from the latent rates (the hidden ``alive`` flag is not used)."""
    lam = latent["lambda_per_week"].to_numpy()
    p_alive = (1.0 - latent["dropout_p"].to_numpy()) ** (lam * gap / _DAYS_PER_WEEK)
    return {
        "p_purchase_90d": p_alive * -np.expm1(-lam * 90 / _DAYS_PER_WEEK),
        "expected_purchases_90d": p_alive * lam * 90 / _DAYS_PER_WEEK,
    }


# ----------------------------------------------------------------------------------------------
# the responses


@dataclass
class OfferResponses:
    """What the shop's customers bought after the decision night, and the true effects.

    ``transactions``: every purchase from the shop's end to the end of the window (the window only
    when ``decided_at`` is the day after the shop's end, the default), one line per order, same
    columns and dtypes as ``Simulation.transactions``, new unique order ids. ``truth``: per offer
    type (``truth[offer_type]``) ``true_uplift`` (realised mean over the treatment group of
    Y1 − Y0 for "at least one purchase in the window"), ``expected_uplift`` (its expectation given
    each customer's latent rate and whether still alive at ``decided_at``),
    ``true_incremental_revenue_per_customer`` (realised mean of revenue1 − revenue0, currency),
    ``treatment``, ``control`` and ``effect``; plus ``window_days`` and ``decided_at``.
    """

    transactions: pd.DataFrame
    truth: dict[str, Any]


@dataclass(frozen=True)
class _Baseline:
    """The continued BG/NBD purchases of the alive customers, and who is alive at decided_at."""

    customer: np.ndarray  # latent row per purchase
    days: np.ndarray  # purchase time, days after the shop's end
    value: np.ndarray  # order value, currency
    alive_at_decision: np.ndarray  # per latent customer


def _baseline(rng: np.random.Generator, sim: Simulation, gap_days: float, window_days: int) -> _Baseline:
    """Poisson(lambda) purchase times over the gap and the window, dropout with prob. p after each."""
    latent = _latent(sim)
    lam_day = latent["lambda_per_week"].to_numpy() / _DAYS_PER_WEEK
    alive = latent["alive"].to_numpy(dtype=bool)
    horizon = gap_days + window_days
    m = np.where(alive, rng.poisson(lam_day * horizon), 0)
    until_drop = rng.geometric(np.clip(latent["dropout_p"].to_numpy(), 1e-12, 1.0))
    customer = np.repeat(np.arange(len(latent)), m)
    days = rng.random(len(customer)) * horizon
    order = np.lexsort((days, customer))
    customer, days = customer[order], days[order]
    rank = np.arange(len(customer)) - np.repeat(np.cumsum(m) - m, m)
    kept = rank < until_drop[customer]
    in_gap = np.bincount(customer[days < gap_days], minlength=len(latent))
    p, nu = float(sim.truth["gamma_gamma"]["p"]), latent["nu"].to_numpy()
    customer, days = customer[kept], days[kept]
    value = np.maximum(rng.gamma(p, 1.0 / nu[customer]), 0.01)
    return _Baseline(customer, days, value, alive & (in_gap < until_drop))


def simulate_responses(
    sim: Simulation, offer_log: pd.DataFrame, effects: Mapping[str, OfferEffect] | Sequence[str] | None = None, *,
    window_days: int = 30, seed: int = 0,
) -> OfferResponses:
    """The purchases after the decision night of ``offer_log`` and the true offer effects (see the
    module docstring and :class:`OfferResponses`). ``effects`` default :data:`DEFAULT_EFFECTS`; offer
    types without one have no effect; without a ``deliver`` column every treated customer is delivered.
    Every ``decided_at`` of the log must be the same day, on or after the day after the shop's end."""
    effects = DEFAULT_EFFECTS if effects is None else parse_effects(effects)
    decided_at = _one_night(sim, offer_log)
    gap_days = float((decided_at - _end(sim)).days)
    rng_base, rng_effect = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, 2]).spawn(2))
    base = _baseline(rng_base, sim, gap_days, window_days)
    rows = _latent_rows(sim, offer_log)
    kind = offer_log["offer_type"].astype("string").to_numpy(dtype=object)
    response = _per_type(kind, effects, "response")
    spend = _per_type(kind, effects, "spend")
    treated = offer_log["group"].astype("string").to_numpy(dtype=object) == TREATMENT
    active = treated & offer_log["deliver"].to_numpy(dtype=bool) if "deliver" in offer_log.columns else treated
    u, extra_at = rng_effect.random(len(rows)), rng_effect.random(len(rows)) * window_days
    nu = _latent(sim)["nu"].to_numpy()[rows]
    extra_value = np.maximum(rng_effect.gamma(float(sim.truth["gamma_gamma"]["p"]), 1.0 / nu), 0.01) * spend
    in_window = base.days >= gap_days
    n_all = len(_latent(sim))
    n0 = np.bincount(base.customer[in_window], minlength=n_all)[rows]
    rev0 = np.bincount(base.customer[in_window], weights=base.value[in_window], minlength=n_all)[rows]
    extra = (u < response) & (response > 0)
    cancel = (u < -response) & (response < 0)
    n1, rev1 = np.where(cancel, 0, n0 + extra), np.where(cancel, 0.0, rev0 + extra * extra_value)
    lam_window = _latent(sim)["lambda_per_week"].to_numpy()[rows] * window_days / _DAYS_PER_WEEK
    p_any = np.where(base.alive_at_decision[rows], -np.expm1(-lam_window), 0.0)
    expected = np.where(response >= 0, response * (1.0 - p_any), response * p_any)
    outcome = {"d_response": np.where(active, (n1 > 0).astype(float) - (n0 > 0), 0.0),
               "d_revenue": np.where(active, rev1 - rev0, 0.0), "expected": np.where(active, expected, 0.0)}
    truth = _truth(kind, treated, outcome, effects, window_days, decided_at)
    frame = _purchases(sim, rng_effect, base, rows, active & cancel, active & extra, decided_at, extra_at,
                       extra_value)
    return OfferResponses(frame, truth)


def _per_type(kind: np.ndarray, effects: Mapping[str, OfferEffect], field: str) -> np.ndarray:
    """``effects[type].field`` per row (no effect for types without one), via the distinct types."""
    names, inverse = np.unique(kind.astype(str), return_inverse=True)
    values = np.array([getattr(effects.get(t, OfferEffect(0.0)), field) for t in names], dtype=np.float64)
    return values[inverse] if len(names) else np.zeros(0)


def _one_night(sim: Simulation, offer_log: pd.DataFrame) -> pd.Timestamp:
    missing = [c for c in ("customer_id", "decided_at", "offer_type", "group") if c not in offer_log.columns]
    if missing:
        raise SimulationError(f"offer_log: missing column(s) {missing}")
    days = pd.to_datetime(offer_log["decided_at"]).dt.normalize().unique()
    if len(days) != 1:
        raise SimulationError(f"offer_log: decided_at must be one night, got {len(days)} distinct days")
    return _decision_day(sim, days[0])


def _latent_rows(sim: Simulation, offer_log: pd.DataFrame) -> np.ndarray:
    rows = pd.Index(_latent(sim)["customer_id"]).get_indexer(offer_log["customer_id"].astype("string"))
    if (rows < 0).any():
        raise SimulationError(f"offer_log: {int((rows < 0).sum())} customer(s) not in the simulation, e.g. "
                              f"{offer_log['customer_id'].iloc[int(np.flatnonzero(rows < 0)[0])]!r}")
    if len(np.unique(rows)) != len(rows):
        raise SimulationError("offer_log: a customer appears twice on one night")
    return rows


def _mean(values: np.ndarray, rows: np.ndarray) -> float:
    return float(values[rows].mean()) if rows.any() else float("nan")


def _truth(kind: np.ndarray, treated: np.ndarray, outcome: dict[str, np.ndarray],
           effects: Mapping[str, OfferEffect], window_days: int, decided_at: pd.Timestamp) -> dict[str, Any]:
    by_offer = {}
    for t in sorted(set(kind)):
        mine = kind == t
        tr = mine & treated
        n_t = int(tr.sum())
        by_offer[t] = {
            "true_uplift": _mean(outcome["d_response"], tr), "expected_uplift": _mean(outcome["expected"], tr),
            "true_incremental_revenue_per_customer": _mean(outcome["d_revenue"], tr),
            "treatment": n_t, "control": int(mine.sum()) - n_t,
            "effect": asdict(effects.get(t, OfferEffect(0.0))),
        }
    return {**by_offer, "window_days": window_days, "decided_at": str(decided_at.date())}


def _purchases(sim: Simulation, rng: np.random.Generator, base: _Baseline, rows: np.ndarray, cancelled: np.ndarray, extra: np.ndarray,
               decided_at: pd.Timestamp, extra_at: np.ndarray, extra_value: np.ndarray) -> pd.DataFrame:
    """The realised purchases as transaction lines (one line per order), sorted by customer and time."""
    end_ns, decided_ns = _end(sim).value, decided_at.value
    gone = np.zeros(len(_latent(sim)), dtype=bool)
    gone[rows[cancelled]] = True
    keep = ~(gone[base.customer] & (base.days * _NS_PER_DAY + end_ns >= decided_ns))
    customer = np.concatenate([base.customer[keep], rows[extra]])
    ns = np.concatenate([end_ns + (base.days[keep] * _NS_PER_DAY).astype(np.int64),
                         decided_ns + (extra_at[extra] * _NS_PER_DAY).astype(np.int64)])
    value = np.round(np.concatenate([base.value[keep], extra_value[extra]]), 2)
    value = np.maximum(value, 0.01)
    product, category = _products(sim, rng, len(customer))
    first_invoice = 100_001 + int(sim.truth.get("realised", {}).get("orders", 0))
    invoice = np.empty(len(customer), dtype=np.int64)
    invoice[np.argsort(ns, kind="stable")] = first_invoice + np.arange(len(customer))
    ids = _latent(sim)["customer_id"].astype("string").array
    order = np.lexsort((ns, _id_rank(ids)[customer]))
    return pd.DataFrame({
        "customer_id": ids[customer[order]], "order_id": pd.array(invoice[order].astype(str), dtype="string"),
        "timestamp": ns[order].view("datetime64[ns]"), "product_id": product[order],
        "quantity": np.ones(len(customer)), "price": value[order], "amount": value[order],
        "category": category[order],
    })


def _id_rank(ids: pd.api.extensions.ExtensionArray) -> np.ndarray:
    """Each latent customer's position in customer-id order."""
    if pd.Index(ids).is_monotonic_increasing:
        return np.arange(len(ids))
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(np.asarray(ids, dtype=object), kind="stable")] = np.arange(len(ids))
    return rank


def _products(sim: Simulation, rng: np.random.Generator, n: int) -> tuple[pd.array, pd.array]:
    """A catalogue product per purchase, by popularity (one placeholder product without a catalogue)."""
    if sim.products is None or not len(sim.products):
        return pd.array(["P_OFFER"] * n, dtype="string"), pd.array(["Offers"] * n, dtype="string")
    popularity = sim.products["popularity"].to_numpy(dtype=np.float64)
    pick = rng.choice(len(popularity), size=n, p=popularity / popularity.sum())
    return (sim.products["product_id"].astype("string").array[pick],
            sim.products["category"].astype("string").array[pick])
