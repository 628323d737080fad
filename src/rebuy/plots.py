"""Figures for analysts and the nightly report (matplotlib).

Every function aggregates before it draws (grids, bins, group means), so a million customers cost
no more to plot than a thousand, and returns the matplotlib ``Figure`` it drew on. Each takes an
optional ``ax`` (an existing Axes; the two-panel :func:`plot_segments` takes a pair) and otherwise
creates its own figure through pyplot, so figures show inline in Jupyter. matplotlib is imported
lazily; on a Linux machine without a display (and no ``MPLBACKEND``) the non-interactive Agg backend
is selected. :func:`figure_to_png_base64` turns a figure into the base64 PNG the HTML report embeds
and closes it.

Model-based plots take any fitted object with ``p_alive(frequency, recency, T)`` and
``expected_purchases(t, frequency, recency, T)`` (any ``rebuy.models.PurchaseModel``: BG/NBD,
MBG/NBD, Pareto/NBD); lifetimes' fitters (``BetaGeoFitter`` ...) are accepted too.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rebuy.errors import PlotInputError  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = [
    "PlotInputError",
    "plot_frequency_recency_matrix",
    "plot_probability_alive_matrix",
    "plot_calibration_purchases_vs_holdout_purchases",
    "plot_cumulative_transactions",
    "plot_cohort_retention",
    "plot_segments",
    "plot_clv_distribution",
    "plot_cluster_profiles",
    "plot_recommender_metrics",
    "plot_uplift",
    "offer_type_label",
    "channel_label",
    "currency_symbol",
    "format_money",
    "figure_to_png_base64",
]

MAX_GRID = 100
"""Largest number of rows / columns drawn in a matrix plot (wider ranges are sampled evenly)."""

PREDICTION_COLUMNS = (
    "predicted_holdout",
    "frequency_holdout_predicted",
    "predicted_frequency_holdout",
    "model_predictions",
    "expected_holdout",
    "predicted",
    "prediction",
)
"""Column names recognised as the model's holdout prediction in the calibration/holdout frame."""

_PERIOD_WORDS = {"M": "months", "W": "weeks", "Q": "quarters", "Y": "years", "A": "years", "D": "days"}


# --------------------------------------------------------------------------------------------------
# matplotlib plumbing
# --------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    """Import pyplot, selecting Agg first on a headless Linux machine (unless MPLBACKEND is set)."""
    import matplotlib

    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if "matplotlib.pyplot" not in sys.modules and headless and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure_and_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, new_ax = _pyplot().subplots(figsize=figsize, layout="constrained")
    return fig, new_ax


def figure_to_png_base64(fig: Figure, dpi: int = 100, close: bool = True) -> str:
    """The figure as a base64-encoded PNG (ASCII, no ``data:`` prefix), for embedding in HTML as
    ``<img src="data:image/png;base64,...">``. Closes the figure unless ``close=False``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _frame(data: Any, name: str, columns: Sequence[str] = ()) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise PlotInputError(f"{name}: expected a pandas DataFrame, got {type(data).__name__}")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise PlotInputError(f"{name}: missing column(s) {missing}; have {list(data.columns)}")
    if len(data) == 0:
        raise PlotInputError(f"{name}: no rows to plot")
    return data


def _numeric(values: Any, name: str) -> np.ndarray:
    arr = pd.to_numeric(pd.Series(np.asarray(values).ravel()), errors="coerce").to_numpy(dtype="float64")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise PlotInputError(f"{name}: {int(bad.sum())} missing, non-numeric or infinite value(s)")
    return arr


# --------------------------------------------------------------------------------------------------
# purchase-model matrices
# --------------------------------------------------------------------------------------------------


def _model_functions(model: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    if hasattr(model, "p_alive") and hasattr(model, "expected_purchases"):
        return model.p_alive, model.expected_purchases
    if hasattr(model, "conditional_probability_alive"):  # a lifetimes fitter
        return (
            model.conditional_probability_alive,
            model.conditional_expected_number_of_purchases_up_to_time,
        )
    raise PlotInputError(
        f"model: {type(model).__name__} has no p_alive(frequency, recency, T) and "
        "expected_purchases(t, frequency, recency, T) methods"
    )


def _grid(max_value: float, integer: bool) -> np.ndarray:
    if integer and max_value + 1 <= MAX_GRID:
        return np.arange(int(max_value) + 1, dtype="float64")
    g = np.linspace(0.0, float(max_value), MAX_GRID)
    return np.unique(np.round(g)) if integer else g


def _matrix_ranges(
    summary: pd.DataFrame | None, max_frequency: float | None, max_recency: float | None, quantile: float
) -> tuple[float, float]:
    if summary is not None:
        _frame(summary, "summary", ["frequency", "T"])
        f = _numeric(summary["frequency"], "summary['frequency']")
        T = _numeric(summary["T"], "summary['T']")
        if max_frequency is None:
            max_frequency = float(np.ceil(np.quantile(f, quantile)))
        if max_recency is None:
            max_recency = float(np.ceil(np.quantile(T, quantile)))
    if max_frequency is None or max_recency is None:
        raise PlotInputError(
            "give summary= (an RFM summary with frequency and T) or both max_frequency and max_recency"
        )
    if not (np.isfinite(max_frequency) and np.isfinite(max_recency)) or max_frequency < 0 or max_recency <= 0:
        raise PlotInputError(
            f"max_frequency must be >= 0 and max_recency > 0, got {max_frequency!r} and {max_recency!r}"
        )
    return float(max(max_frequency, 1.0)), float(max_recency)


def _model_matrix(
    model: Any,
    kind: str,
    t: float,
    summary: pd.DataFrame | None,
    max_frequency: float | None,
    max_recency: float | None,
    T: float | None,
    quantile: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    p_alive, expected = _model_functions(model)
    max_f, max_r = _matrix_ranges(summary, max_frequency, max_recency, quantile)
    T_val = float(max_r if T is None else T)
    if T_val < max_r:
        raise PlotInputError(f"T ({T_val:g}) must be >= max_recency ({max_r:g}): recency cannot exceed T")
    freqs = _grid(max_f, integer=True)
    recs = _grid(max_r, integer=False)
    F, R = np.meshgrid(freqs, recs, indexing="xy")  # rows: recency, columns: frequency
    f_flat, r_flat = F.ravel(), R.ravel()
    Tv = np.full_like(f_flat, T_val)
    if kind == "alive":
        z = np.asarray(p_alive(f_flat, r_flat, Tv), dtype="float64")
    else:
        z = np.asarray(expected(float(t), f_flat, r_flat, Tv), dtype="float64")
    z = z.reshape(F.shape)
    # frequency > 0 with recency 0 is impossible; customers with frequency 0 have recency 0 by definition
    impossible = (F > 0) & (R <= 0)
    z = np.where(impossible, np.nan, z)
    return freqs, recs, z, T_val


def _amount(t: float, unit: str) -> str:
    """'1 week', '2.5 weeks', '1 day'."""
    return f"{t:g} {unit[:-1] if t == 1 and unit.endswith('s') else unit}"


def _thousands(axis: Any, nbins: int = 5) -> None:
    """Thousands separators and at most ``nbins`` intervals, so tick labels never run into each other."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=nbins, integer=True, min_n_ticks=2))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))


def _compact(v: float) -> str:
    """A tick value in few characters: 950, 8k, 12.5k, 1.5M."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:,.3g}M"
    if a >= 1e3:
        return f"{v / 1e3:,.3g}k"
    return f"{v:,.0f}" if a >= 10 or v == round(v) else f"{v:,.1f}"


def _money_axis(axis: Any, currency: str | None, nbins: int = 5) -> None:
    """A money axis: at most ``nbins`` intervals, compact labels with the currency's symbol (``£1.5M``)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    symbol = currency_symbol(currency)
    prefix = "" if symbol is None else (symbol if len(symbol) == 1 else f"{symbol} ")

    def label(v: float, _pos: int) -> str:
        text = _compact(v)
        return f"-{prefix}{text[1:]}" if text.startswith("-") else f"{prefix}{text}"

    axis.set_major_locator(MaxNLocator(nbins=nbins, min_n_ticks=2))
    axis.set_major_formatter(FuncFormatter(label))


_CURRENCY_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$"}


def currency_symbol(currency: str | None) -> str | None:
    """The sign shown before amounts: GBP -> "£", EUR -> "€", USD -> "$", another ISO code as
    itself ("CHF"), None (no currency configured) -> None."""
    if currency is None or not str(currency).strip():
        return None
    code = str(currency).strip().upper()
    return _CURRENCY_SYMBOLS.get(code, code)


def currency_unit(currency: str | None) -> str:
    """The unit for an axis label: "£", "CHF", or "currency units" when none is configured."""
    return currency_symbol(currency) or "currency units"


def format_money(value: Any, currency: str | None = None, *, signed: bool = False, decimals: int = 2) -> str:
    """An amount for people: 2 decimals and thousands separators with the currency's sign:
    ``1234.5`` -> ``"£1,234.50"`` (GBP), ``"CHF 1,234.50"``, ``"1,234.50"`` (None); negative
    ``"-£3.00"``; ``signed`` puts ``+`` before positive amounts. '-' for None, NaN or inf."""
    if value is None or isinstance(value, bool):
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    if not np.isfinite(v):
        return "-"
    symbol = currency_symbol(currency)
    prefix = "" if symbol is None else (symbol if len(symbol) == 1 else f"{symbol} ")
    sign = "-" if v < 0 and round(abs(v), decimals) > 0 else ("+" if signed else "")
    return f"{sign}{prefix}{abs(v):,.{decimals}f}"


def _draw_matrix(
    ax: Axes, freqs: np.ndarray, recs: np.ndarray, z: np.ndarray, cbar_label: str, cmap: str, vmax: float | None
) -> None:
    df = (freqs[1] - freqs[0]) / 2 if len(freqs) > 1 else 0.5
    dr = (recs[1] - recs[0]) / 2 if len(recs) > 1 else 0.5
    im = ax.imshow(
        np.ma.masked_invalid(z),
        origin="lower",
        aspect="auto",
        cmap=cmap,
        vmin=0.0,
        vmax=vmax,
        extent=(freqs[0] - df, freqs[-1] + df, recs[0] - dr, recs[-1] + dr),
        interpolation="nearest",
    )
    ax.figure.colorbar(im, ax=ax, label=cbar_label)


def plot_frequency_recency_matrix(
    model: Any,
    t: float = 1.0,
    *,
    summary: pd.DataFrame | None = None,
    max_frequency: float | None = None,
    max_recency: float | None = None,
    T: float | None = None,
    quantile: float = 0.99,
    time_unit: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Expected purchases in the next ``t`` time units for every (frequency, recency) pair.

    Parameters
    ----------
    model : a fitted purchase model (``expected_purchases(t, frequency, recency, T)``).
    t : forecast horizon in the model's time unit.
    summary : RFM summary; the axes run to its ``quantile`` (default 99th percentile) of frequency
        and of T, so a few extreme buyers among a million do not squash the picture.
    max_frequency, max_recency : explicit axis ranges (repeat purchases; time units), overriding
        ``summary``. T : the customer age used for every cell (default ``max_recency``, as lifetimes).
    time_unit : "weeks" or "days" for the labels; default the model's ``time_unit_`` or weeks.

    At most ``MAX_GRID`` (100) values per axis are evaluated. Impossible cells (repeat purchases with
    recency 0) are blank.
    """
    unit = time_unit or getattr(model, "time_unit_", None) or "weeks"
    freqs, recs, z, T_val = _model_matrix(model, "expected", t, summary, max_frequency, max_recency, T, quantile)
    fig, ax = _figure_and_axes(ax, (8.0, 6.0))
    horizon = _amount(t, unit)
    _draw_matrix(ax, freqs, recs, z, f"Expected purchases in the next {horizon}", "viridis", None)
    ax.set_xlabel("Frequency (repeat purchases so far)")
    ax.set_ylabel(f"Recency (age at last purchase, {unit})")
    ax.set_title(f"Expected purchases in the next {horizon}\nby frequency and recency (T = {T_val:g} {unit})")
    return fig


def plot_probability_alive_matrix(
    model: Any,
    *,
    summary: pd.DataFrame | None = None,
    max_frequency: float | None = None,
    max_recency: float | None = None,
    T: float | None = None,
    quantile: float = 0.99,
    time_unit: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """P(alive) for every (frequency, recency) pair, all customers aged ``T`` (default max recency).

    Same ranges and options as :func:`plot_frequency_recency_matrix`. High recency (a recent last
    purchase) and high frequency mean alive; frequent buyers who went quiet long ago are likely gone.
    """
    unit = time_unit or getattr(model, "time_unit_", None) or "weeks"
    freqs, recs, z, T_val = _model_matrix(model, "alive", 0.0, summary, max_frequency, max_recency, T, quantile)
    fig, ax = _figure_and_axes(ax, (8.0, 6.0))
    _draw_matrix(ax, freqs, recs, z, "P(alive)", "RdYlGn", 1.0)
    ax.set_xlabel("Frequency (repeat purchases so far)")
    ax.set_ylabel(f"Recency (age at last purchase, {unit})")
    ax.set_title(f"Probability a customer is still alive\nby frequency and recency (T = {T_val:g} {unit})")
    return fig


# --------------------------------------------------------------------------------------------------
# validation plots
# --------------------------------------------------------------------------------------------------


def plot_calibration_purchases_vs_holdout_purchases(
    calibration_holdout: pd.DataFrame,
    *,
    prediction_col: str | None = None,
    model: Any = None,
    n: int = 7,
    time_unit: str = "weeks",
    ax: Axes | None = None,
) -> Figure:
    """Mean actual vs predicted holdout purchases, grouped by calibration purchases (0 .. ``n``+).

    Parameters
    ----------
    calibration_holdout : one row per customer with the calibration frequency (``frequency_cal``,
        or ``frequency`` as in ``rebuy.features.calibration_holdout_split``), ``frequency_holdout``
        and the model's prediction for the holdout window (``prediction_col``, default the first
        column found among :data:`PREDICTION_COLUMNS`).
    model : alternatively, a fitted purchase model; predictions are then computed from ``recency``/``T``
        (``_cal`` suffixes accepted) and ``duration_holdout``.
    n : customers with ``n`` or more calibration purchases share the last group ("n+").
    """
    df = _frame(calibration_holdout, "calibration_holdout", ["frequency_holdout"])
    fcol = "frequency_cal" if "frequency_cal" in df.columns else "frequency"
    if fcol not in df.columns:
        raise PlotInputError("calibration_holdout: needs a frequency_cal (or frequency) column")
    freq = _numeric(df[fcol], f"calibration_holdout[{fcol!r}]")
    actual = _numeric(df["frequency_holdout"], "calibration_holdout['frequency_holdout']")
    if prediction_col is None and model is None:
        prediction_col = next((c for c in PREDICTION_COLUMNS if c in df.columns), None)
        if prediction_col is None:
            raise PlotInputError(
                f"calibration_holdout: no prediction column (looked for {list(PREDICTION_COLUMNS)}); "
                "pass prediction_col= or model="
            )
    if prediction_col is not None:
        _frame(df, "calibration_holdout", [prediction_col])
        predicted = _numeric(df[prediction_col], f"calibration_holdout[{prediction_col!r}]")
    else:
        suffix = "_cal" if "recency_cal" in df.columns else ""
        _frame(df, "calibration_holdout", [f"recency{suffix}", f"T{suffix}", "duration_holdout"])
        _, expected = _model_functions(model)
        duration = _numeric(df["duration_holdout"], "calibration_holdout['duration_holdout']")
        predicted = np.asarray(
            expected(duration, freq, _numeric(df[f"recency{suffix}"], "recency"), _numeric(df[f"T{suffix}"], "T")),
            dtype="float64",
        )
    if n < 1:
        raise PlotInputError(f"n must be >= 1, got {n}")
    group = np.minimum(np.round(freq), n).astype(np.int64)
    agg = (
        pd.DataFrame({"g": group, "actual": actual, "predicted": predicted})
        .groupby("g")
        .agg(actual=("actual", "mean"), predicted=("predicted", "mean"), customers=("actual", "size"))
        .reindex(np.arange(n + 1))
        .dropna()
    )
    fig, ax = _figure_and_axes(ax, (8.0, 5.0))
    x = agg.index.to_numpy()
    ax.plot(x, agg["actual"], marker="o", label="Actual")
    ax.plot(x, agg["predicted"], marker="s", linestyle="--", label="Model prediction")
    ax.set_xticks(x, [f"{k}{'+' if k == n else ''}\n(n={int(c):,})" for k, c in zip(x, agg["customers"], strict=True)])
    ax.set_xlabel("Repeat purchases in the calibration period")
    ax.set_ylabel("Mean purchases in the holdout period")
    ax.set_title("Actual vs predicted purchases in the holdout period")
    ax.set_ylim(bottom=0)
    ax.legend()
    return fig


def _tracking_frame(tracking: Any) -> pd.DataFrame:
    if isinstance(tracking, Mapping) and "weeks" in tracking:  # the "tracking" block of rebuy evaluate
        return pd.DataFrame(
            {
                "week": tracking["weeks"],
                "actual": tracking["actual_cumulative"],
                "predicted": tracking["predicted_cumulative"],
            }
        )
    return _frame(tracking, "tracking", ["week", "actual", "predicted"])


def plot_cumulative_transactions(
    tracking: pd.DataFrame | Mapping[str, Any],
    *,
    cumulative: bool = True,
    calibration_week: float | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Cumulative repeat purchases by week, actual vs predicted (the tracking plot of FHL 2005).

    Parameters
    ----------
    tracking : frame with ``week``, ``actual``, ``predicted`` (``rebuy.evaluate.tracking_curve``),
        or the ``tracking`` dict of ``rebuy evaluate``'s report (``weeks``, ``actual_cumulative``,
        ``predicted_cumulative``, ``calibration_weeks``).
    cumulative : True when ``actual``/``predicted`` are already running totals; False when they are
        weekly counts (they are summed here).
    calibration_week : draw the end of the calibration period at this week (default the report's
        ``calibration_weeks`` when given the dict).
    """
    df = _tracking_frame(tracking)
    if calibration_week is None and isinstance(tracking, Mapping):
        calibration_week = tracking.get("calibration_weeks")
    week = _numeric(df["week"], "tracking['week']")
    actual = _numeric(df["actual"], "tracking['actual']")
    predicted = _numeric(df["predicted"], "tracking['predicted']")
    order = np.argsort(week, kind="stable")
    week, actual, predicted = week[order], actual[order], predicted[order]
    if cumulative:
        for name, v in (("actual", actual), ("predicted", predicted)):
            if (np.diff(v) < -1e-9).any():
                raise PlotInputError(
                    f"tracking[{name!r}] decreases, so it is not cumulative; pass cumulative=False for weekly counts"
                )
    else:
        actual, predicted = np.cumsum(actual), np.cumsum(predicted)
    fig, ax = _figure_and_axes(ax, (9.0, 5.0))
    ax.plot(week, actual, label="Actual", linewidth=2)
    ax.plot(week, predicted, label="Predicted (purchase model)", linestyle="--", linewidth=2)
    if calibration_week is not None:
        ax.axvline(float(calibration_week), color="grey", linestyle=":", label="End of calibration")
    ax.set_xlabel("Week")
    ax.set_ylabel("Cumulative repeat purchases")
    ax.set_title("Tracking cumulative repeat purchases: actual vs predicted")
    ax.set_ylim(bottom=0)
    ax.legend()
    return fig


# --------------------------------------------------------------------------------------------------
# cohorts, segments, CLV, clusters
# --------------------------------------------------------------------------------------------------


def _unobserved_mask(pct: pd.DataFrame) -> np.ndarray:
    """True for cells after the end of the data: cohort + offset beyond the last active period."""
    offsets = np.asarray(pct.columns, dtype=np.int64)
    if isinstance(pct.index, pd.PeriodIndex):
        rows = pct.index.asi8.astype(np.int64)
    else:
        rows = np.arange(len(pct), dtype=np.int64)
    values = pct.to_numpy(dtype="float64")
    active = values > 0
    last = (rows[:, None] + offsets[None, :])[active].max() if active.any() else rows.max()
    return rows[:, None] + offsets[None, :] > last


def plot_cohort_retention(
    percentages: pd.DataFrame,
    *,
    max_periods: int | None = 24,
    annotate: bool | None = None,
    mask_unobserved: bool = True,
    ax: Axes | None = None,
) -> Figure:
    """Cohort retention heatmap: per cent of each first-purchase cohort buying N periods later.

    Parameters
    ----------
    percentages : the second matrix of :func:`rebuy.kpis.cohort_retention` (rows: cohorts, columns:
        periods since the first purchase, values in per cent).
    max_periods : columns beyond this offset are not drawn (None draws all).
    annotate : write the per cent in each cell (default when the grid has at most 400 cells).
    mask_unobserved : leave blank the cells after the end of the data (held as 0 in the matrix).
    """
    pct = _frame(percentages, "percentages")
    if max_periods is not None:
        pct = pct.loc[:, [c for c in pct.columns if int(c) <= max_periods]]
    values = pct.to_numpy(dtype="float64")
    if not np.isfinite(values).all():
        raise PlotInputError("percentages: has NaN/inf values")
    mask = _unobserved_mask(pct) if mask_unobserved else np.zeros(values.shape, dtype=bool)
    freq = pct.index.freqstr if isinstance(pct.index, pd.PeriodIndex) else None
    word = _PERIOD_WORDS.get((freq or "M").rstrip("E").split("-")[0][:1], "periods")
    n_rows, n_cols = values.shape
    fig, ax = _figure_and_axes(ax, (min(4 + 0.45 * n_cols, 16), min(2 + 0.35 * n_rows, 14)))
    later = values[:, 1:][~mask[:, 1:]] if n_cols > 1 else np.array([])
    vmax = float(np.quantile(later, 0.99)) if later.size and later.max() > 0 else 100.0
    im = ax.imshow(np.ma.masked_array(values, mask), aspect="auto", cmap="Blues", vmin=0.0, vmax=vmax,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, label="Customers buying (% of cohort)")
    ax.set_xticks(np.arange(n_cols), [str(c) for c in pct.columns])
    step = max(1, n_rows // 30)
    ax.set_yticks(np.arange(0, n_rows, step), [str(i) for i in pct.index[::step]])
    if annotate is None:
        annotate = values.size <= 400
    if annotate:
        for i, j in zip(*np.nonzero(~mask), strict=True):
            v = values[i, j]
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if v > 0.6 * vmax else "black")
    ax.set_xlabel(f"{word.capitalize()} since first purchase")
    ax.set_ylabel("Cohort (first purchase)")
    ax.set_title("Cohort retention (% of each cohort buying again)")
    return fig


def plot_segments(
    scores: pd.DataFrame,
    *,
    segment_col: str = "segment",
    value_col: str | None = "clv",
    currency: str | None = None,
    ax: Sequence[Axes] | None = None,
) -> Figure:
    """Customers per segment and their total value: two horizontal bar panels.

    Parameters
    ----------
    scores : one row per customer with the segment name and (optionally) a value such as the
        predicted CLV (``value_col``; None draws the sizes only).
    currency : the shop's ISO currency code (GBP shows £); None labels the value axis "currency".
        Axes have at most 5 intervals and compact labels (12k, £1.5M), so tick labels never overlap.
    ax : a pair of Axes (sizes, value) or, with ``value_col=None``, a single Axes.
    """
    cols = [segment_col] + ([value_col] if value_col else [])
    df = _frame(scores, "scores", cols)
    seg = df[segment_col].astype("string").fillna("(none)")
    agg = pd.DataFrame({"segment": seg.to_numpy()})
    if value_col:
        agg["value"] = _numeric(df[value_col], f"scores[{value_col!r}]")
    grouped = agg.groupby("segment", sort=False)
    size = grouped.size().sort_values()
    total = len(agg)
    n_panels = 2 if value_col else 1
    if ax is None:
        fig, axes = _pyplot().subplots(1, n_panels, figsize=(6.0 * n_panels, max(3.0, 0.4 * len(size) + 1.5)),
                                       layout="constrained", squeeze=False)
        axes = list(axes[0])
    else:
        axes = [ax] if not isinstance(ax, Sequence) and not isinstance(ax, np.ndarray) else list(ax)
        if len(axes) != n_panels:
            raise PlotInputError(f"ax: expected {n_panels} Axes, got {len(axes)}")
        fig = axes[0].figure
    y = np.arange(len(size))
    axes[0].barh(y, size.to_numpy(), color="tab:blue")
    axes[0].set_yticks(y, size.index.tolist())
    for yi, v in zip(y, size.to_numpy(), strict=True):
        axes[0].text(v, yi, f" {v:,} ({100 * v / total:.1f}%)", va="center", fontsize=8)
    axes[0].set_xlabel("Customers")
    _thousands(axes[0].xaxis)
    axes[0].set_title("Customers per segment")
    axes[0].margins(x=0.25)
    if value_col:
        value = grouped["value"].sum().reindex(size.index)
        axes[1].barh(y, value.to_numpy(), color="tab:green")
        axes[1].set_yticks(y, size.index.tolist())
        share = value / value.sum() if value.sum() > 0 else value * 0
        for yi, v, s in zip(y, value.to_numpy(), share.to_numpy(), strict=True):
            axes[1].text(v, yi, f" {format_money(v, currency, decimals=0)} ({100 * s:.1f}%)", va="center",
                         fontsize=8)
        name = value_col.upper() if len(value_col) <= 4 else value_col.replace("_", " ")
        axes[1].set_xlabel(f"Total {name} ({currency_unit(currency)})")
        axes[1].set_title(f"Total {name} per segment")
        _money_axis(axes[1].xaxis, currency)
        axes[1].margins(x=0.3)
    return fig


def plot_clv_distribution(
    clv: pd.Series | np.ndarray,
    *,
    bins: int = 50,
    clip_quantile: float = 0.99,
    currency: str | None = None,
    log_y: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Histogram of customer lifetime value, with the median and the mean marked.

    CLV is heavy-tailed: the histogram runs to the ``clip_quantile`` (default 99th percentile) and the
    customers beyond are counted in the legend. The histogram is computed with numpy first, so a
    million values draw as ``bins`` bars. ``currency``: the shop's ISO code (GBP shows £) or None;
    the money axis has at most 5 intervals with compact labels (£1.5k), so labels never overlap.
    """
    v = _numeric(clv, "clv")
    if v.size == 0:
        raise PlotInputError("clv: no values to plot")
    if not 0 < clip_quantile <= 1:
        raise PlotInputError(f"clip_quantile must be in (0, 1], got {clip_quantile}")
    lo = min(float(v.min()), 0.0)
    hi = float(np.quantile(v, clip_quantile))
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    beyond = int((v > hi).sum())
    fig, ax = _figure_and_axes(ax, (8.0, 5.0))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:purple", alpha=0.8,
           label=f"{v.size:,} customers" + (f" ({beyond:,} above {format_money(hi, currency, decimals=0)} not shown)"
                                            if beyond else ""))
    med, mean = float(np.median(v)), float(v.mean())
    ax.axvline(med, color="black", linestyle="--", label=f"Median {format_money(med, currency)}")
    if mean <= hi:
        ax.axvline(mean, color="tab:red", linestyle=":", label=f"Mean {format_money(mean, currency)}")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(f"Customer lifetime value ({currency_unit(currency)})")
    ax.set_ylabel("Customers")
    _money_axis(ax.xaxis, currency, nbins=8)
    if not log_y:
        _thousands(ax.yaxis)
    ax.set_title("Distribution of predicted customer lifetime value")
    ax.legend()
    return fig


_DEFAULT_PROFILE_FEATURES = (
    "mean_days_since_last",
    "mean_purchase_days",
    "mean_frequency",
    "mean_monetary_value",
    "mean_total_spend",
    "mean_clv",
    "one_time_share",
)
_NON_FEATURES = {"size", "share", "dominant_segment_share", "cluster"}


def plot_cluster_profiles(
    profiles: pd.DataFrame,
    *,
    features: Sequence[str] | None = None,
    cluster_col: str | None = None,
    currency: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Cluster profiles as a heatmap: colour = feature mean relative to the other clusters (z-score
    across clusters), text = the actual mean.

    Parameters
    ----------
    profiles : one row per cluster (``rebuy.segment.cluster_profiles``: ``size``, ``mean_*``
        columns, ``label``, ``dominant_segment``), or one row per customer with ``cluster_col``
        naming the cluster column (means are taken here).
    features : columns to show; default the profile's recency/frequency/monetary/CLV means that exist,
        else every numeric column except size and shares.
    currency : the shop's ISO code for the money features' labels ("Total spend (£)").
    """
    df = _frame(profiles, "profiles")
    if cluster_col is not None:
        _frame(df, "profiles", [cluster_col])
        numeric = df.select_dtypes("number").drop(columns=[cluster_col], errors="ignore")
        grouped = numeric.groupby(df[cluster_col].to_numpy())
        prof = grouped.mean()
        prof.insert(0, "size", grouped.size())
    else:
        prof = df
    if features is None:
        features = [c for c in _DEFAULT_PROFILE_FEATURES if c in prof.columns]
        if not features:
            features = [c for c in prof.select_dtypes("number").columns if c not in _NON_FEATURES]
    else:
        _frame(prof, "profiles", list(features))
    if not features:
        raise PlotInputError("profiles: no numeric feature columns to show")
    values = np.column_stack([_numeric(prof[c], f"profiles[{c!r}]") for c in features])
    sd = values.std(axis=0)
    z = np.divide(values - values.mean(axis=0), sd, out=np.zeros_like(values), where=sd > 0)
    labels = []
    for i, idx in enumerate(prof.index):
        name = str(prof["label"].iloc[i]) if "label" in prof.columns else f"Cluster {idx}"
        if "size" in prof.columns:
            name += f" (n={int(prof['size'].iloc[i]):,})"
        if "dominant_segment" in prof.columns:
            name += f"\nmostly {prof['dominant_segment'].iloc[i]}"
        labels.append(name)
    n_rows, n_cols = values.shape
    fig, ax = _figure_and_axes(ax, (min(3 + 1.3 * n_cols, 16), min(1.5 + 0.7 * n_rows, 14)))
    lim = max(float(np.abs(z).max()), 1.0)
    im = ax.imshow(z, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="z-score across clusters")
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            text = f"{v:.2f}" if abs(v) < 10 else f"{v:,.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if abs(z[i, j]) > 0.6 * lim else "black")
    ax.set_xticks(np.arange(n_cols), [_feature_label(c, currency) for c in features], rotation=30, ha="right")
    ax.set_yticks(np.arange(n_rows), labels)
    ax.set_xlabel("Feature (mean per cluster)")
    ax.set_ylabel("Cluster")
    ax.set_title("Cluster profiles")
    return fig


def _feature_label(col: str, currency: str | None = None) -> str:
    names = {
        "mean_days_since_last": "Days since last purchase",
        "mean_purchase_days": "Purchase days",
        "mean_frequency": "Repeat purchases",
        "mean_monetary_value": "Avg repeat order value",
        "mean_total_spend": f"Total spend ({currency_symbol(currency) or 'currency'})",
        "mean_clv": f"CLV ({currency_symbol(currency) or 'currency'})",
        "one_time_share": "Share one-time buyers",
        "mean_recency": "Recency (time units)",
        "mean_T": "Customer age T (time units)",
    }
    return names.get(col, col.replace("_", " "))


# --------------------------------------------------------------------------------------------------
# recommender
# --------------------------------------------------------------------------------------------------


def plot_recommender_metrics(
    metrics: Mapping[str, Mapping[str, float]] | pd.DataFrame,
    *,
    model_name: str = "model",
    metric_names: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Grouped bars of ranking metrics, the recommender against its baselines.

    Parameters
    ----------
    metrics : ``{"model": {"precision@10": 0.05, ...}, "popularity": {...}, "own_history": {...}}``
        (one mode of ``rebuy.evaluate_recommender.evaluate_recommender``'s ``modes``; entries that are
        not dicts, such as ``n_test_customers``, are ignored) or a DataFrame (rows: models, columns:
        metrics).
    model_name : the entry drawn first and in a strong colour; the rest are baselines.
    metric_names : metrics to show (default those every entry has, in the first entry's order).
    """
    if isinstance(metrics, pd.DataFrame):
        table = metrics.astype("float64")
    elif isinstance(metrics, Mapping):
        rows = {k: dict(v) for k, v in metrics.items() if isinstance(v, Mapping)}
        if not rows:
            raise PlotInputError("metrics: no model -> {metric: value} entries")
        table = pd.DataFrame.from_dict(rows, orient="index")
    else:
        raise PlotInputError(f"metrics: expected a dict or DataFrame, got {type(metrics).__name__}")
    if metric_names is None:
        metric_names = [c for c in table.columns if table[c].notna().all()]
    else:
        _frame(table, "metrics", list(metric_names))
    if not metric_names:
        raise PlotInputError("metrics: no metric shared by every model")
    order = ([model_name] if model_name in table.index else []) + [i for i in table.index if i != model_name]
    table = table.loc[order, list(metric_names)]
    values = np.column_stack([_numeric(table[c], f"metrics[{c!r}]") for c in metric_names])
    n_models, n_metrics = values.shape
    fig, ax = _figure_and_axes(ax, (max(6.0, 1.6 * n_metrics + 2), 5.0))
    width = 0.8 / n_models
    x = np.arange(n_metrics)
    greys = ["#9e9e9e", "#bdbdbd", "#757575", "#d9d9d9", "#616161"]
    for i, name in enumerate(table.index):
        color = "tab:blue" if name == model_name else greys[(i - (model_name in table.index)) % len(greys)]
        bars = ax.bar(x + (i - (n_models - 1) / 2) * width, values[i], width, label=str(name).replace("_", " "),
                      color=color, edgecolor="black", linewidth=0.5)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x, list(metric_names))
    ax.set_xlabel("Metric")
    ax.set_ylabel("Metric value (share, higher is better)")
    ax.set_title("Recommender vs baselines")
    ax.set_ylim(0, max(float(values.max()) * 1.15, 1e-3))
    ax.legend()
    return fig


# --------------------------------------------------------------------------------------------------
# measured uplift
# --------------------------------------------------------------------------------------------------

_OFFER_WORDS = {"win_back": "win-back", "cross_sell": "cross-sell", "vip": "VIP", "none": "no offer"}
_VERDICT_COLOURS = {"works": "tab:green", "harmful": "tab:red"}


def offer_type_label(offer_type: Any) -> str:
    """An offer type as words for people: ``"win_back"`` -> ``"win-back"``, ``"vip"`` -> ``"VIP"``,
    ``"browse_abandonment"`` -> ``"browse abandonment"``, ``"none"`` -> ``"no offer"``."""
    name = str(offer_type)
    return _OFFER_WORDS.get(name, name.replace("_", " "))


_CHANNEL_WORDS = {"email": "e-mail", "sms": "SMS", "messenger": "messenger", "none": "no channel"}


def channel_label(channel: Any) -> str:
    """A channel as words: ``"email"`` -> ``"e-mail"``, ``"sms"`` -> ``"SMS"``, ``"none"`` -> ``"no channel"``."""
    name = str(channel)
    return _CHANNEL_WORDS.get(name, name.replace("_", " "))


def _uplift_points(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], np.ndarray, np.ndarray]:
    """(rows with an uplift and an interval, uplift in points, [[below], [above]] error bar lengths)."""
    def usable(r: Mapping[str, Any]) -> bool:
        ci = r.get("uplift_ci95")
        return (r.get("uplift") is not None and isinstance(ci, Sequence) and len(ci) == 2
                and None not in ci and bool(np.isfinite([r["uplift"], *ci]).all()))

    kept = [r for r in rows if isinstance(r, Mapping) and usable(r)]
    if not kept:
        raise PlotInputError("by_offer: no offer type with an uplift and its uplift_ci95")
    mid = 100 * np.array([float(r["uplift"]) for r in kept])
    lo = 100 * np.array([float(r["uplift_ci95"][0]) for r in kept])
    hi = 100 * np.array([float(r["uplift_ci95"][1]) for r in kept])
    return kept, mid, np.vstack([np.maximum(mid - lo, 0), np.maximum(hi - mid, 0)])


def plot_uplift(
    by_offer: Sequence[Mapping[str, Any]],
    *,
    window_days: int | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Measured uplift per offer type with its 95% interval (horizontal error bars, a zero line).

    Parameters
    ----------
    by_offer : rows of the ``rebuy measure`` JSON's ``by_offer`` (and ``overall``, if wanted): each
        with ``offer_type``, ``uplift`` and ``uplift_ci95`` (shares: treated response rate minus
        control response rate) and optionally ``verdict`` (colours the point: works green, harmful
        red, otherwise grey) and ``treatment`` (customers, shown in the label). Rows without an
        uplift or interval are left out; none left is a :class:`PlotInputError`.
    window_days : the measurement window, days, for the axis label.

    The x axis is in percentage points (uplift x 100).
    """
    if isinstance(by_offer, (str, bytes)) or not isinstance(by_offer, Sequence):
        raise PlotInputError(f"by_offer: expected a list of dicts, got {type(by_offer).__name__}")
    rows, mid, err = _uplift_points(by_offer)
    fig, ax = _figure_and_axes(ax, (8.0, max(2.5, 0.55 * len(rows) + 1.5)))
    y = np.arange(len(rows))[::-1]
    colours = [_VERDICT_COLOURS.get(str(r.get("verdict")), "tab:gray") for r in rows]
    for yi, m, e_lo, e_hi, c in zip(y, mid, err[0], err[1], colours, strict=True):
        ax.errorbar(m, yi, xerr=[[e_lo], [e_hi]], fmt="o", color=c, ecolor=c, capsize=4, markersize=6)
    ax.axvline(0.0, color="black", linewidth=1)
    labels = [offer_type_label(r.get("offer_type", "?"))
              + (f" ({int(r['treatment']):,} treated)" if r.get("treatment") is not None else "") for r in rows]
    ax.set_yticks(y, labels)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    window = f" within {window_days} days" if window_days else ""
    ax.set_xlabel(f"Uplift in response rate{window} (percentage points, treated minus control)")
    ax.set_title("Measured uplift by offer type, with 95% interval")
    ax.margins(x=0.15)
    return fig
