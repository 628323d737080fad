"""Base classes of every rebuy model: :class:`BaseFitter`, :class:`PurchaseModel`, :class:`SpendModel`.

Manners (scikit-learn's): hyper-parameters are the ``__init__`` arguments, stored unchanged;
``fit`` validates its input once, returns ``self`` and sets the learned state in trailing-underscore
attributes; predictions below the public methods take plain arrays and do not re-validate.

Learned state every fitted model has:

- ``params_`` : dict, parameter name -> value, in ``PARAM_NAMES`` order (natural units: time
  parameters in the model's time unit, money in the transactions' currency);
- ``standard_errors_`` : dict, same keys; ``covariance_`` : DataFrame. Both from the Hessian of
  the minimised objective (the mean penalised negative log-likelihood in log parameters) at the
  optimum, exactly lifetimes' ``standard_errors_``: ``se_i = p_i sqrt((H^-1)_ii / n)``. Computed
  on first access while the fit's distinct rows are in memory (so a nightly fit does not pay for
  them); NaN for models built with ``from_params`` (no data), for a model pickled before its first
  access (pickles carry no fit data), or when the Hessian is not positive definite;
- ``log_likelihood_`` (unpenalised total over the fitted customers), ``penalizer_`` (the one
  actually used), ``converged_`` (first attempt succeeded), ``n_customers_``,
  ``n_distinct_rows_``, ``warnings_`` (list of str).

A :class:`PurchaseModel` additionally has ``time_unit_`` ("weeks" or "days") and implements the
purchase interface that :mod:`rebuy.models.clv` and :mod:`rebuy.models.value` use; they never need
a model's privates. Their one speed hook is :meth:`PurchaseModel.conditional`: a
:class:`ConditionalForecast` of given customers (P(alive), expected purchases at many horizons,
days to the next purchase) that computes what those predictions share once. The generic one here
calls the model's public methods; a model may return a faster exact subclass.

Instances are plain attribute bags: bundles store their state (``__getstate__``) as JSON and raw
arrays (:mod:`rebuy.artefacts`) and rebuild them with ``__setstate__``; they also pickle.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, NamedTuple, Self

import numpy as np
import pandas as pd

from rebuy.dates import unit_days
from rebuy.errors import InvalidParameterError, ModelFitError
from rebuy.models.inputs import (
    FRT_COLUMNS,
    check_frt,
    check_sample_weight,
    row_arrays,
    summary_arrays,
    summary_time_unit,
    weighted_distinct_rows,
    whole_number,
)
from rebuy.models.optimize import (
    Z_95,
    FitOutcome,
    Objective,
    Solution,
    check_solver,
    covariance_from_hessian,
    fit_warm,
    fit_with_retry,
    lifetimes_fit,
    numerical_hessian,
)

SUMMARY_COLUMNS = ("coef", "se(coef)", "lower 95% bound", "upper 95% bound")
"""Columns of :attr:`BaseFitter.summary` (lifetimes' names)."""


class BaseFitter(ABC):
    """Shared fitting, parameter and uncertainty logic (see the module docstring).

    A subclass sets ``PARAM_NAMES``, ``SHAPE_PARAMS`` (dimensionless parameters checked for
    running off to infinity), ``DISPLAY_NAME`` and implements the objective hooks
    :meth:`_objective`, :meth:`_from_theta`, :meth:`_to_theta` and :meth:`_lifetimes_fitter`.
    """

    PARAM_NAMES: ClassVar[tuple[str, ...]] = ()
    SHAPE_PARAMS: ClassVar[tuple[str, ...]] = ()
    DISPLAY_NAME: ClassVar[str] = ""

    penalizer: float
    retry_penalizer: float
    solver: str

    # ------------------------------------------------------------------ construction
    @classmethod
    def hyperparameter_names(cls) -> list[str]:
        """The ``__init__`` arguments (scikit-learn's ``_get_param_names``)."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters, as passed to ``__init__``."""
        return {k: getattr(self, k) for k in self.hyperparameter_names()}

    @classmethod
    def from_config(cls, cfg: Any) -> Self:
        """A model with the settings of its config section (e.g. ``config.bgnbd``): every
        ``__init__`` argument the section has."""
        return cls(**{k: getattr(cfg, k) for k in cls.hyperparameter_names() if hasattr(cfg, k)})

    @classmethod
    def from_params(cls, params: dict[str, float]) -> Self:
        """A model with given parameters (e.g. published ones, or read from a bundle manifest): no
        data, so ``standard_errors_`` are NaN. Subclasses add the state their predictions need."""
        who = f"{cls.__name__}.from_params"
        missing = [k for k in cls.PARAM_NAMES if k not in params]
        if missing:
            raise ModelFitError(f"{who}: missing parameter(s) {missing}")
        m = cls()
        m.params_ = {k: float(params[k]) for k in cls.PARAM_NAMES}
        if not all(np.isfinite(v) and v > 0 for v in m.params_.values()):
            raise ModelFitError(f"{who}: parameters must be finite and > 0, got {m.params_}")
        m.penalizer_ = 0.0
        m.converged_ = True
        m.warnings_ = []
        m._set_uncertainty(None)
        return m

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        name = f"rebuy.{type(self).__name__}"
        params = getattr(self, "params_", None)
        if params is None:
            hyper = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"<{name}: not fitted, {hyper}>"
        n = getattr(self, "n_customers_", None)
        origin = f"fitted with {n} customers" if n is not None else "from parameters"
        return f"<{name}: {origin}, " + ", ".join(f"{k}: {v:.4g}" for k, v in params.items()) + ">"

    @property
    def summary(self) -> pd.DataFrame:
        """One row per parameter: ``coef``, ``se(coef)``, ``lower 95% bound``, ``upper 95% bound``
        (coef -/+ 1.96 se; natural units), as lifetimes' ``summary``."""
        self._check_fitted()
        coef = pd.Series(self.params_, dtype=np.float64)
        se = pd.Series(getattr(self, "standard_errors_", {}), index=coef.index, dtype=np.float64)
        return pd.DataFrame(
            dict(zip(SUMMARY_COLUMNS, (coef, se, coef - Z_95 * se, coef + Z_95 * se), strict=True)),
            index=pd.Index(list(self.PARAM_NAMES), name="parameter"),
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise ModelFitError(f"{type(self).__name__}: not fitted; call fit(summary) first")

    # ------------------------------------------------------------------ fitting template
    def _check_hyperparameters(self, who: str) -> None:
        check_solver(self.solver, who)
        if self.penalizer < 0 or self.retry_penalizer < 0:
            raise ModelFitError(f"{who}: penalizer and retry_penalizer must be >= 0")

    def _fit_distinct(self, cols: list[np.ndarray], counts: np.ndarray, start_from: BaseFitter | None = None) -> FitOutcome:
        """Fit on distinct rows ``cols`` standing for ``counts`` customers each (with the retry) and
        set ``params_``, the uncertainty and the fit bookkeeping; ``warnings_`` holds the retry notes.
        ``start_from``: a fitted model of this class whose optimum starts rebuy's solver."""
        outcome = fit_with_retry(
            lambda pen: self._solve(pen, cols, counts, start_from),
            self.penalizer,
            self.retry_penalizer,
            self.DISPLAY_NAME,
            self.SHAPE_PARAMS,
        )
        self.params_ = {k: float(outcome.solution.params[k]) for k in self.PARAM_NAMES}
        self.penalizer_ = outcome.penalizer
        self.converged_ = bool(outcome.converged)
        self.n_customers_ = int(round(counts.sum()))
        self.n_distinct_rows_ = int(len(cols[0]))
        self.warnings_ = list(outcome.notes)
        self._set_uncertainty(outcome.solution)
        self.__dict__["_hess_inv"] = outcome.solution.hess_inv  # the next fit's start (not pickled)
        return outcome

    # ------------------------------------------------------------------ uncertainty (lazy)
    @property
    def covariance_(self) -> pd.DataFrame:
        """Covariance of the parameters (natural units) from the Hessian at the optimum; computed on
        first access while the fit's data are in memory (a fit at 1M customers would otherwise pay
        ~0.4 s for it), NaN for models from ``from_params`` or pickled before the first access."""
        cov = self.__dict__.get("_covariance")
        if cov is None:
            cov = self._compute_covariance()
            self.__dict__["_covariance"] = cov
        return cov

    @property
    def standard_errors_(self) -> dict[str, float]:
        """Standard error per parameter (natural units): ``sqrt(diag(covariance_))``."""
        cov = self.covariance_.to_numpy()
        with np.errstate(invalid="ignore"):
            return dict(zip(self.PARAM_NAMES, np.sqrt(np.diag(cov)).tolist(), strict=True))

    def _compute_covariance(self) -> pd.DataFrame:
        solution = self.__dict__.pop("_uncertainty_solution", None)
        k = len(self.PARAM_NAMES)
        if solution is None:
            cov = np.full((k, k), np.nan)
        else:
            hessian = numerical_hessian(solution.objective, solution.theta)
            values = np.array([self.params_[name] for name in self.PARAM_NAMES])
            cov = covariance_from_hessian(hessian, values, solution.objective.W)
        names = list(self.PARAM_NAMES)
        return pd.DataFrame(cov, index=names, columns=names)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the fit's data (the bundle stays small); covariance only if computed."""
        state = dict(self.__dict__)
        state.pop("_uncertainty_solution", None)
        state.pop("_hess_inv", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        # instances pickled when covariance_ / standard_errors_ were plain attributes
        old = state.pop("covariance_", None)
        state.pop("standard_errors_", None)
        if old is not None and "_covariance" not in state:
            state["_covariance"] = old
        self.__dict__.update(state)

    def _solve(self, penalizer: float, cols: list[np.ndarray], counts: np.ndarray,
               start_from: BaseFitter | None = None) -> Solution:
        """One solver run with ``penalizer``: rebuy's BFGS on the analytic objective (from
        ``start_from``'s optimum and inverse-Hessian estimate when given), or lifetimes' (which
        ignores ``start_from``)."""
        if self.solver == "lifetimes":
            params = lifetimes_fit(self._lifetimes_fitter(penalizer), self.PARAM_NAMES, *cols, weights=counts)
            objective = self._objective(cols, counts, penalizer, slice(None))
            return Solution(params, self._to_theta(params, cols), objective)
        start = None if start_from is None else (
            self._to_theta(start_from.params_, cols), start_from.__dict__.get("_hess_inv"))
        theta, objective, hess_inv = fit_warm(
            lambda mask, w: self._objective(cols, w, penalizer, mask),
            counts,
            np.full(len(self.PARAM_NAMES), 0.1),  # lifetimes' start
            start,
        )
        return Solution(self._from_theta(theta, cols), theta, objective, hess_inv)

    def _set_uncertainty(self, solution: Solution | None) -> None:
        """Keep the solution for the lazy covariance (see :attr:`covariance_`)."""
        self.__dict__.pop("_covariance", None)
        if solution is None:
            self.__dict__.pop("_uncertainty_solution", None)
        else:
            self.__dict__["_uncertainty_solution"] = solution

    def _fitted_log_likelihood(self, solution: Solution, cols: list[np.ndarray], counts: np.ndarray) -> float:
        """Unpenalised total log-likelihood at the fitted parameters (models may compute it from
        ``solution.objective.fun_`` instead)."""
        return float((counts * self.log_likelihood(*cols)).sum())

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def log_likelihood(self, *columns: Any) -> np.ndarray:
        """Per-customer log-likelihood of the summary columns at ``params_``."""

    @abstractmethod
    def _objective(self, cols: list[np.ndarray], weights: np.ndarray, penalizer: float, mask: Any) -> Objective:
        """The objective on rows ``mask`` of the distinct rows ``cols``, weighted by ``weights``
        (already masked)."""

    @abstractmethod
    def _from_theta(self, theta: np.ndarray, cols: list[np.ndarray]) -> dict[str, float]:
        """Parameters in natural units from the objective's coordinates."""

    @abstractmethod
    def _to_theta(self, params: dict[str, float], cols: list[np.ndarray]) -> np.ndarray:
        """The inverse of :meth:`_from_theta`."""

    @abstractmethod
    def _lifetimes_fitter(self, penalizer: float) -> Any:
        """lifetimes' fitter for ``solver="lifetimes"``."""


def first_day_reaching(reaches: Callable[[np.ndarray], np.ndarray], n: int, max_days: int) -> np.ndarray:
    """Per candidate, the smallest whole day d in 1..max_days with ``reaches(days)[i]`` true, by
    integer bisection (about log2(max_days) calls). ``reaches(days)`` evaluates every candidate at
    its own day; it must be monotone in the day, false at day 0 and true at ``max_days``."""
    lo = np.zeros(n, dtype=np.int64)  # reaches(lo) is false
    hi = np.full(n, max_days, dtype=np.int64)  # reaches(hi) is true
    while n and (hi - lo > 1).any():
        mid = (lo + hi) // 2
        above = reaches(mid)
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return hi


class PurchaseModel(BaseFitter):
    """A repeat-purchase ("buy till you die") model fitted on ``frequency``, ``recency``, ``T``.

    Time is in ``time_unit_``. Every method taking ``(frequency, recency, T)`` broadcasts them.
    Subclasses implement the abstract methods; :meth:`conditional` has a generic implementation.
    """

    time_unit_: str

    def __init__(self, penalizer: float = 0.0, retry_penalizer: float = 0.001, solver: str = "numpy"):
        """Hyper-parameters shared by every purchase model: ``penalizer`` (L2 penalty of the first
        fit, lifetimes' ``penalizer_coef``), ``retry_penalizer`` (of the one retry after a failed or
        degenerate fit), ``solver`` ("numpy": rebuy's analytic-gradient fit of lifetimes' objective;
        "lifetimes": lifetimes' own fitter)."""
        self.penalizer = penalizer
        self.retry_penalizer = retry_penalizer
        self.solver = solver

    @classmethod
    def from_params(cls, params: dict[str, float], time_unit: str = "weeks") -> Self:
        """A model with given parameters (e.g. published ones, or read from a bundle manifest); time
        parameters in ``time_unit``."""
        m = super().from_params(params)
        unit_days(time_unit)
        m.time_unit_ = time_unit
        return m

    def fit(self, summary: pd.DataFrame, time_unit: str | None = None, sample_weight: Any = None, *,
            start_from: PurchaseModel | None = None) -> Self:
        """Fit on an RFM summary (columns ``frequency``, ``recency``, ``T``); returns self.

        ``time_unit`` defaults to ``summary.attrs["time_unit"]`` (set by ``rfm_summary``), else weeks.
        ``sample_weight``: customers each row stands for (e.g. the counts of already-distinct rows
        aggregated by Spark); None counts every row once. ``start_from``: a model of this class
        fitted on a similar summary (the previous holdout window of the model selection); rebuy's
        solver starts at its parameters with its BFGS inverse-Hessian estimate, a few iterations
        instead of ~25, to the same tolerance on this summary's objective, so the optimum is the
        same. Only where both optima are well identified (``optimize.MAX_START_CONDITION``): on a
        flat ridge of the likelihood the fit runs as without it.
        """
        who = f"{type(self).__name__}.fit"
        self._check_hyperparameters(who)
        if start_from is not None and (type(start_from) is not type(self) or not hasattr(start_from, "params_")):
            raise InvalidParameterError(f"{who}: start_from must be a fitted {type(self).__name__}, "
                                        f"got {type(start_from).__name__}")
        x, tx, T = summary_arrays(summary, FRT_COLUMNS, who)
        check_frt(x, tx, T, who)
        if not (x > 0).any():
            raise ModelFitError(
                f"{who}: every customer is a one-time buyer (frequency 0): there are no repeat purchases to fit"
            )
        if T.max() <= 0:
            raise ModelFitError(f"{who}: every customer's T is 0 (all data on the as_of day): nothing to fit")
        unit = summary_time_unit(summary) if time_unit is None else time_unit
        unit_days(unit)
        cols, counts = weighted_distinct_rows((x, tx, T), check_sample_weight(sample_weight, len(x), who))
        outcome = self._fit_distinct(cols, counts, start_from)
        self.log_likelihood_ = self._fitted_log_likelihood(outcome.solution, cols, counts)
        self.time_unit_ = unit
        return self

    # ------------------------------------------------------------------ the purchase interface
    @abstractmethod
    def log_likelihood(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """Per-customer log-likelihood of (frequency, recency, T) at ``params_``."""

    @abstractmethod
    def p_alive(self, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(customer still alive at T | frequency, recency, T)."""

    @abstractmethod
    def expected_purchases(self, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """Expected repeat purchases in the next ``t`` time units (>= 0, finite)."""

    @abstractmethod
    def probability_of_purchase(self, t: Any, frequency: Any, recency: Any, T: Any) -> np.ndarray:
        """P(at least one repeat purchase in the next ``t`` time units)."""

    @abstractmethod
    def expected_purchases_population(self, t: Any) -> np.ndarray:
        """Expected repeat purchases of a new customer within ``t`` time units of the first purchase."""

    def alive_count_moments(self, t: Any, frequency: Any, T: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For customers alive at T after ``frequency`` repeat purchases: ``(P(N = 0), E[N],
        E[N (N - 1)])`` of the purchases N in the next ``t`` time units, integrated over the
        customer's posterior (which, given alive, depends on x and T only, not on t_x).

        With P(alive) these give the unconditional count moments (a dead customer buys nothing);
        :mod:`rebuy.models.predictive` turns them into spend intervals. Models that do not
        implement it cannot give intervals."""
        raise NotImplementedError(f"{type(self).__name__} does not give purchase-count moments")

    def next_purchase_days(self, frequency: Any, recency: Any, T: Any, max_days: int = 1825) -> np.ndarray:
        """Whole days to the day by which a next purchase is more likely than not (see
        :meth:`ConditionalForecast.next_purchase_days`); -1 when not within ``max_days``."""
        return self.conditional(frequency, recency, T).next_purchase_days(max_days)

    # ------------------------------------------------------------------ the hook for CLV and scores
    def conditional(self, frequency: Any, recency: Any, T: Any) -> ConditionalForecast:
        """Predictions for these customers that share their common work (the hook
        :mod:`~rebuy.models.clv` and :mod:`~rebuy.models.value` use; pass distinct rows). The
        generic :class:`ConditionalForecast` asks this model's public methods; a model may return
        a faster exact subclass."""
        self._check_fitted()
        return ConditionalForecast(self, frequency, recency, T)

    def iter_expected_purchases(
        self, horizons: Iterable[float], frequency: Any, recency: Any, T: Any
    ) -> Iterator[np.ndarray]:
        """``expected_purchases(h, ...)`` for each horizon ``h`` (time units), one 1-D array at a time
        (see :meth:`ConditionalForecast.iter_expected_purchases`)."""
        return self.conditional(frequency, recency, T).iter_expected_purchases(horizons)



class ConditionalForecast:
    """A purchase model's predictions for fixed customers (1-D rows of frequency, recency, T).

    Generic implementation: every prediction calls the model's public methods; P(alive) is
    computed once. Subclasses (returned by a model's ``conditional``) may share more, but must give
    the same values."""

    def __init__(self, model: PurchaseModel, frequency: Any, recency: Any, T: Any):
        self.model = model
        self.x, self.tx, self.T = (v.ravel() for v in row_arrays(frequency, recency, T))
        self._p_alive: np.ndarray | None = None

    def p_alive(self) -> np.ndarray:
        """P(alive) per row (computed once)."""
        if self._p_alive is None:
            self._p_alive = self.model.p_alive(self.x, self.tx, self.T)
        return self._p_alive

    def expected_purchases(self, t: Any, rows: Any = slice(None)) -> np.ndarray:
        """Expected purchases in the next ``t`` time units (scalar, or one per selected row) of
        ``rows`` (an index into the rows)."""
        return self.model.expected_purchases(t, self.x[rows], self.tx[rows], self.T[rows])

    def iter_expected_purchases(self, horizons: Iterable[float]) -> Iterator[np.ndarray]:
        """Expected purchases of every row at each horizon (time units, >= 0), one array per
        horizon, so callers can accumulate without an n x H matrix. Validates now, computes lazily."""
        return (self.expected_purchases(h) for h in check_horizons(horizons))

    def probability_of_purchase(self, t: Any, rows: Any = slice(None)) -> np.ndarray:
        """P(at least one purchase in the next ``t`` time units) of ``rows`` (scalar ``t`` or one per
        selected row)."""
        return self.model.probability_of_purchase(t, self.x[rows], self.tx[rows], self.T[rows])

    def next_purchase_days(self, max_days: int = 1825) -> np.ndarray:
        """Whole days (int64) from T to the customer's median time to the next purchase: the first d
        in 1..``max_days`` with P(a purchase within d days) >= 0.5; -1 when a purchase is not more
        likely than not within ``max_days`` (lapsed customers get no date rather than one years
        away). Integer bisection (about log2(max_days) evaluations)."""
        max_days = check_max_days(max_days)
        u = unit_days(self.model.time_unit_)
        cand = np.flatnonzero(self.probability_of_purchase(max_days / u) >= 0.5)
        days = np.full(len(self.x), -1, dtype=np.int64)
        days[cand] = first_day_reaching(
            lambda d: self.probability_of_purchase(d / u, cand) >= 0.5, len(cand), max_days
        )
        return days


def check_horizons(horizons: Iterable[float]) -> list[float]:
    """Horizons (time units) as floats; InvalidParameterError unless each is finite and >= 0."""
    hs = [float(h) for h in horizons]
    if any(not np.isfinite(h) or h < 0 for h in hs):
        raise InvalidParameterError(f"iter_expected_purchases: horizons must be finite and >= 0, got {hs}")
    return hs


def check_max_days(max_days: Any) -> int:
    """``max_days`` as an int; InvalidParameterError unless it is a whole number >= 1."""
    return whole_number(max_days, "next_purchase_days: max_days")


class OrderValueMoments(NamedTuple):
    """Per customer, of the values z of future purchases: ``mean`` E[z], ``second`` E[z^2],
    ``shared`` E[z_i z_j] for two different purchases (currency, currency^2), and ``tail_shape``:
    the index of the power tail the unknown spend level gives the total spend (inf for none)."""

    mean: np.ndarray
    second: np.ndarray
    shared: np.ndarray
    tail_shape: np.ndarray


class SpendModel(BaseFitter):
    """A spend-per-purchase model fitted on ``frequency`` and ``monetary_value`` (currency)."""

    @abstractmethod
    def fit(self, summary: pd.DataFrame, sample_weight: Any = None) -> Self:
        """Fit on an RFM summary (columns ``frequency``, ``monetary_value``); returns self."""

    @abstractmethod
    def log_likelihood(self, frequency: Any, monetary_value: Any) -> np.ndarray:
        """Per-customer log-likelihood of (frequency, monetary_value) at ``params_``."""

    @abstractmethod
    def expected_order_value(self, frequency: Any, monetary_value: Any) -> np.ndarray:
        """Expected spend per future purchase (currency), per customer."""

    def order_value_moments(self, frequency: Any, monetary_value: Any) -> OrderValueMoments:
        """Moments of future purchase values z (currency), per customer, for spend intervals (see
        :class:`OrderValueMoments`); models that do not implement it cannot give intervals."""
        raise NotImplementedError(f"{type(self).__name__} does not give order-value moments")
