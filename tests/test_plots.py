"""Plots: each returns a Figure with the expected labels, draws the aggregated numbers, and renders
to a non-empty PNG; inputs are sized like 200k customers to show the aggregation keeps them cheap."""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere in this process

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rebuy import kpis, plots  # noqa: E402
from rebuy.plots import PlotInputError  # noqa: E402

N = 200_000
LIFETIMES_DATA = Path(__import__("lifetimes").__file__).parent / "datasets"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def render(fig: Figure, tmp_path: Path, name: str) -> int:
    """Save as PNG; return its size in bytes (a blank figure is ~2-5 kB, a drawn one far more)."""
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=60)
    return path.stat().st_size


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    return pd.read_csv(LIFETIMES_DATA / "cdnow_customers_summary.csv")


class LifetimesStandIn:
    """The rebuy model interface over a lifetimes BetaGeoFitter."""

    def __init__(self, fitter):
        self.fitter = fitter

    def p_alive(self, frequency, recency, T):
        return self.fitter.conditional_probability_alive(frequency, recency, T)

    def expected_purchases(self, t, frequency, recency, T):
        return self.fitter.conditional_expected_number_of_purchases_up_to_time(t, frequency, recency, T)


@pytest.fixture(scope="module")
def bgf(cdnow_summary):
    from lifetimes import BetaGeoFitter

    rows = cdnow_summary.groupby(["frequency", "recency", "T"]).size().reset_index(name="n")
    return BetaGeoFitter().fit(rows["frequency"], rows["recency"], rows["T"], weights=rows["n"])


def test_frequency_recency_matrix_values_match_lifetimes(bgf, cdnow_summary, tmp_path):
    fig = plots.plot_frequency_recency_matrix(LifetimesStandIn(bgf), t=10, summary=cdnow_summary)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Frequency (repeat purchases so far)"
    assert ax.get_ylabel() == "Recency (age at last purchase, weeks)"
    assert "Expected purchases in the next 10 weeks" in ax.get_title()
    # ranges: 99th percentile of frequency and of T (38.86 -> 39), T = 39 for every cell
    max_f = np.ceil(np.quantile(cdnow_summary["frequency"], 0.99))
    z = ax.images[0].get_array()
    assert z.shape == (100, int(max_f) + 1)  # recency sampled at 100 points, every integer frequency
    recs = np.linspace(0, 39, 100)
    for f, i in [(0, 0), (2, 50), (int(max_f), 99)]:
        want = bgf.conditional_expected_number_of_purchases_up_to_time(10, f, recs[i], 39.0)
        assert z[i, f] == pytest.approx(want, rel=1e-9)
    assert z.mask[0, 1]  # repeat purchases with recency 0: impossible, blank
    assert render(fig, tmp_path, "fr") > 10_000


def test_p_alive_matrix_rebuy_model_lifetimes_fitter_and_stand_in_agree(bgf, tmp_path):
    from rebuy.models import BGNBDModel

    model = BGNBDModel.from_params({k: float(bgf.params_[k]) for k in ("r", "alpha", "a", "b")})
    kw = {"max_frequency": 30, "max_recency": 52.0}
    figs = [plots.plot_probability_alive_matrix(m, **kw) for m in (model, bgf, LifetimesStandIn(bgf))]
    mats = [f.axes[0].images[0].get_array() for f in figs]
    np.testing.assert_allclose(mats[0], mats[1], rtol=1e-7)
    np.testing.assert_allclose(mats[2], mats[1], rtol=1e-7)
    ax = figs[0].axes[0]
    assert "Probability a customer is still alive" in ax.get_title()
    assert figs[0].axes[1].get_ylabel() == "P(alive)"  # the colour bar
    # a customer with no repeat purchase is alive by definition (BG/NBD), the matrix's first column
    assert np.all(mats[0][:, 0] == 1.0)
    assert render(figs[0], tmp_path, "alive") > 10_000


def test_matrix_needs_ranges(bgf):
    with pytest.raises(PlotInputError, match="summary="):
        plots.plot_frequency_recency_matrix(bgf)
    with pytest.raises(PlotInputError, match="no p_alive"):
        plots.plot_probability_alive_matrix(object(), max_frequency=3, max_recency=5)


def test_calibration_vs_holdout_group_means_by_hand(tmp_path):
    # calibration purchases 0, 0, 1, 1, 8, 9 (n=7 -> the last two share the "7+" group)
    # group 0: actual (0 + 1) / 2 = 0.5, predicted 0.2;  group 1: actual (1 + 3) / 2 = 2, predicted 1
    # group 7+: actual (5 + 7) / 2 = 6, predicted (4 + 6) / 2 = 5
    df = pd.DataFrame({
        "frequency_cal": [0, 0, 1, 1, 8, 9],
        "frequency_holdout": [0, 1, 1, 3, 5, 7],
        "predicted_holdout": [0.2, 0.2, 1.0, 1.0, 4.0, 6.0],
    })
    fig = plots.plot_calibration_purchases_vs_holdout_purchases(df, n=7)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [0, 1, 7])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.5, 2.0, 6.0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.2, 1.0, 5.0])
    assert ax.get_xlabel() == "Repeat purchases in the calibration period"
    assert ax.get_ylabel() == "Mean purchases in the holdout period"
    assert [t.get_text() for t in ax.get_xticklabels()][-1].startswith("7+")
    assert render(fig, tmp_path, "cal") > 5_000


def test_calibration_vs_holdout_from_model_at_200k(bgf, tmp_path):
    # columns as rebuy.features.calibration_holdout_split writes them, predictions from the model
    rng = np.random.default_rng(1)
    T = rng.uniform(1, 39, N)
    rec = T * rng.uniform(0, 1, N)
    freq = np.where(rec > 0.5, rng.poisson(2, N), 0).astype(float)
    df = pd.DataFrame({"frequency": freq, "recency": np.where(freq > 0, rec, 0.0), "T": T,
                       "frequency_holdout": rng.poisson(1, N).astype(float), "duration_holdout": 39.0})
    fig = plots.plot_calibration_purchases_vs_holdout_purchases(df, model=LifetimesStandIn(bgf))
    ax = fig.axes[0]
    assert len(ax.lines[1].get_ydata()) <= 8  # aggregated to groups 0..7+
    pred = bgf.conditional_expected_number_of_purchases_up_to_time(39.0, df["frequency"], df["recency"], df["T"])
    assert ax.lines[1].get_ydata()[0] == pytest.approx(np.asarray(pred)[freq == 0].mean())
    assert render(fig, tmp_path, "cal_model") > 5_000
    with pytest.raises(PlotInputError, match="no prediction column"):
        plots.plot_calibration_purchases_vs_holdout_purchases(df)


def test_cumulative_tracking(tmp_path):
    weeks = np.arange(1, 79)
    weekly_actual = np.full(78, 50.0)
    weekly_pred = np.full(78, 48.0)
    df = pd.DataFrame({"week": weeks, "actual": np.cumsum(weekly_actual), "predicted": np.cumsum(weekly_pred)})
    fig = plots.plot_cumulative_transactions(df, calibration_week=39)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Week" and ax.get_ylabel() == "Cumulative repeat purchases"
    assert ax.lines[0].get_ydata()[-1] == 78 * 50
    assert ax.lines[2].get_xdata()[0] == 39  # calibration end marker
    # weekly counts are summed when cumulative=False: week 78 -> 78 * 48
    fig2 = plots.plot_cumulative_transactions(
        df.assign(actual=weekly_actual, predicted=weekly_pred), cumulative=False)
    assert fig2.axes[0].lines[1].get_ydata()[-1] == 78 * 48
    # the dict written by `rebuy evaluate`
    report = {"weeks": weeks.tolist(), "actual_cumulative": df["actual"].tolist(),
              "predicted_cumulative": df["predicted"].tolist(), "calibration_weeks": 39}
    fig3 = plots.plot_cumulative_transactions(report)
    assert fig3.axes[0].lines[2].get_xdata()[0] == 39
    with pytest.raises(PlotInputError, match="not cumulative"):
        plots.plot_cumulative_transactions(df.assign(actual=weekly_actual * np.r_[1, 0] .repeat(39)))
    assert render(fig, tmp_path, "track") > 5_000


def test_cohort_heatmap_masks_unobserved_cells(tmp_path):
    # cohorts Jan (3 customers), Feb (2), Apr (1); data end in April (see test_kpis)
    tx = pd.DataFrame({
        "customer_id": pd.array(list("aaaabbcddef"), dtype="string"),
        "timestamp": pd.to_datetime(["2021-01-02", "2021-01-25", "2021-02-03", "2021-04-04", "2021-01-09",
                                     "2021-03-09", "2021-01-30", "2021-02-11", "2021-03-11", "2021-02-20",
                                     "2021-04-28"]),
    })
    _, pct = kpis.cohort_retention(tx)
    fig = plots.plot_cohort_retention(pct)
    ax = fig.axes[0]
    z = ax.images[0].get_array()
    # Jan cohort sees offsets 0-3, Feb 0-2, Apr only 0; Feb's offset 2 is an observed 0 (not masked)
    assert z.mask.tolist() == [[False] * 4, [False, False, False, True], [False, True, True, True]]
    assert z[1, 2] == 0.0
    assert ax.get_xlabel() == "Months since first purchase"
    assert ax.get_ylabel() == "Cohort (first purchase)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2021-01", "2021-02", "2021-04"]
    assert "33" in {t.get_text() for t in ax.texts}  # 1 of 3 = 33 %
    assert render(fig, tmp_path, "cohort") > 5_000


def test_segments_sizes_and_value_at_200k(tmp_path):
    rng = np.random.default_rng(2)
    names = np.array(["Champions", "Loyal Customers", "At Risk", "Lost", "New Customers"])
    scores = pd.DataFrame({"segment": rng.choice(names, N), "clv": rng.gamma(0.8, 100.0, N)})
    fig = plots.plot_segments(scores)
    ax_n, ax_v = fig.axes
    sizes = {t.get_text(): p.get_width() for t, p in zip(ax_n.get_yticklabels(), ax_n.patches, strict=True)}
    assert sizes == scores["segment"].value_counts().to_dict()
    values = {t.get_text(): p.get_width() for t, p in zip(ax_v.get_yticklabels(), ax_v.patches, strict=True)}
    expected = scores.groupby("segment")["clv"].sum()
    for k, v in values.items():
        assert v == pytest.approx(expected[k])
    assert ax_n.get_xlabel() == "Customers" and ax_v.get_xlabel() == "Total CLV (currency units)"
    assert ax_n.get_title() == "Customers per segment"
    assert render(fig, tmp_path, "segments") > 10_000
    with pytest.raises(PlotInputError, match=r"missing column\(s\) \['clv'\]"):
        plots.plot_segments(scores.drop(columns="clv"))


def test_clv_distribution_at_200k(tmp_path):
    rng = np.random.default_rng(3)
    clv = pd.Series(rng.gamma(0.8, 100.0, N))
    fig = plots.plot_clv_distribution(clv, bins=40)
    ax = fig.axes[0]
    heights = np.array([p.get_height() for p in ax.patches])
    assert len(heights) == 40
    cut = np.quantile(clv, 0.99)
    assert heights.sum() == (clv <= cut).sum()  # everything up to the 99th percentile, nothing lost
    assert ax.lines[0].get_xdata()[0] == pytest.approx(clv.median())
    assert ax.get_xlabel() == "Customer lifetime value (currency units)" and ax.get_ylabel() == "Customers"
    assert "not shown" in ax.get_legend().get_texts()[-1].get_text()
    assert render(fig, tmp_path, "clv") > 5_000
    with pytest.raises(PlotInputError, match="1 missing"):
        plots.plot_clv_distribution(np.array([1.0, np.nan]))


def test_cluster_profiles(tmp_path):
    prof = pd.DataFrame({
        "size": [1000, 5000, 300], "share": [0.16, 0.79, 0.05],
        "mean_days_since_last": [30.0, 300.0, 10.0], "mean_purchase_days": [4.0, 1.1, 20.0],
        "mean_total_spend": [200.0, 30.0, 3000.0], "one_time_share": [0.1, 0.9, 0.0],
        "label": ["Mid value, active", "Lapsed one-timers", "High value, active"],
        "dominant_segment": ["Loyal Customers", "Lost", "Champions"],
    }, index=pd.Index([0, 1, 2], name="cluster"))
    fig = plots.plot_cluster_profiles(prof)
    ax = fig.axes[0]
    z = ax.images[0].get_array()
    assert z.shape == (3, 4)
    # days since last: 300 is the highest -> positive z, 10 the lowest -> negative
    assert z[1, 0] > 0 > z[2, 0]
    assert ax.get_yticklabels()[1].get_text() == "Lapsed one-timers (n=5,000)\nmostly Lost"
    assert "3,000" in {t.get_text() for t in ax.texts}
    assert ax.get_title() == "Cluster profiles"
    assert render(fig, tmp_path, "clusters") > 5_000
    # per-customer input with a cluster column is aggregated to means
    rng = np.random.default_rng(4)
    cust = pd.DataFrame({"cluster": rng.integers(0, 4, N), "recency": rng.uniform(0, 50, N)})
    cust["spend"] = cust["cluster"] * 100.0 + 1.0
    fig2 = plots.plot_cluster_profiles(cust, cluster_col="cluster")
    z2 = fig2.axes[0].images[0].get_array()
    assert z2.shape == (4, 2)
    assert "301" in {t.get_text() for t in fig2.axes[0].texts}  # mean spend of cluster 3


def test_recommender_metrics_vs_baselines(tmp_path):
    metrics = {
        "n_test_customers": 1234,  # not a model: ignored
        "popularity": {"precision@10": 0.03, "recall@10": 0.07, "ndcg@10": 0.05},
        "model": {"precision@10": 0.05, "recall@10": 0.12, "ndcg@10": 0.08},
        "own_history": {"precision@10": 0.02, "recall@10": 0.05, "ndcg@10": 0.03},
    }
    fig = plots.plot_recommender_metrics(metrics)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["model", "popularity", "own history"]
    heights = [p.get_height() for p in ax.patches]
    assert heights[:3] == [0.05, 0.12, 0.08]  # the model first
    assert [t.get_text() for t in ax.get_xticklabels()] == ["precision@10", "recall@10", "ndcg@10"]
    assert ax.get_title() == "Recommender vs baselines"
    assert render(fig, tmp_path, "recs") > 5_000



UPLIFT_ROWS = [
    {"offer_type": "win_back", "treatment": 1200, "uplift": 0.031, "uplift_ci95": [0.012, 0.050], "verdict": "works"},
    {"offer_type": "vip", "treatment": 300, "uplift": -0.040, "uplift_ci95": [-0.070, -0.010], "verdict": "harmful"},
    {"offer_type": "cross_sell", "treatment": 800, "uplift": 0.004, "uplift_ci95": [-0.010, 0.018],
     "verdict": "no effect shown"},
    {"offer_type": "birthday", "treatment": 0, "uplift": None, "uplift_ci95": [None, None]},  # not measured
]


def test_uplift_error_bars_in_points_with_zero_line_and_readable_labels(tmp_path):
    fig = plots.plot_uplift(UPLIFT_ROWS, window_days=30)
    ax = fig.axes[0]
    label_at = {round(y): t.get_text() for y, t in zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)}
    assert label_at == {2: "win-back (1,200 treated)", 1: "VIP (300 treated)", 0: "cross-sell (800 treated)"}
    point_at = {round(float(line.get_ydata()[0])): float(line.get_xdata()[0]) for line in ax.lines
                if line.get_marker() == "o"}
    assert point_at == pytest.approx({2: 3.1, 1: -4.0, 0: 0.4})  # percentage points; birthday left out
    bar_at = {round(float(seg[0, 1])): (float(seg[0, 0]), float(seg[1, 0]))
              for coll in ax.collections for seg in coll.get_segments()}
    assert bar_at[1] == pytest.approx((-7.0, -1.0)) and bar_at[2] == pytest.approx((1.2, 5.0))
    assert any(list(line.get_xdata()) == [0.0, 0.0] for line in ax.lines)  # the zero line
    assert "percentage points" in ax.get_xlabel() and "30 days" in ax.get_xlabel()
    assert render(fig, tmp_path, "uplift") > 5_000


def test_uplift_without_any_measured_offer_type_is_refused():
    with pytest.raises(PlotInputError, match="by_offer: no offer type with an uplift"):
        plots.plot_uplift(UPLIFT_ROWS[3:])
    with pytest.raises(PlotInputError, match="by_offer: expected a list"):
        plots.plot_uplift("win_back")


def test_offer_type_label():
    assert [plots.offer_type_label(t) for t in ("win_back", "browse_abandonment", "vip", "loyalty_points")] == [
        "win-back", "browse abandonment", "VIP", "loyalty points"]

def test_plot_into_given_axes():
    fig, (a1, a2) = plt.subplots(1, 2)
    out = plots.plot_clv_distribution(np.arange(100.0), ax=a2)
    assert out is fig and a2.patches and not a1.patches


def test_figure_to_png_base64_closes_figure():
    fig = plots.plot_clv_distribution(np.arange(1000.0))
    num = fig.number
    b64 = plots.figure_to_png_base64(fig)
    png = base64.b64decode(b64)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert not plt.fignum_exists(num)


# --------------------------------------------------------------------------------------------------
# readable axes and money (issue 13)
# --------------------------------------------------------------------------------------------------


def _tick_overlaps(fig: Figure) -> list[tuple[str, str, str]]:
    """Pairs of neighbouring x tick labels whose drawn boxes overlap, on every axes of ``fig``."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    bad = []
    for ax in fig.axes:
        labels = [t for t in ax.xaxis.get_ticklabels() if t.get_visible() and t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in labels]
        for i in range(len(boxes) - 1):
            if boxes[i].overlaps(boxes[i + 1]):
                bad.append((ax.get_title(), labels[i].get_text(), labels[i + 1].get_text()))
    return bad


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6])
def test_money_axes_have_no_overlapping_tick_labels(scale):
    rng = np.random.default_rng(0)
    clv = rng.lognormal(8, 1.5, 5000) * scale
    df = pd.DataFrame({"segment": rng.choice(["Champions", "Loyal", "At Risk", "Lost"], 5000), "clv": clv * 50})
    assert _tick_overlaps(plots.plot_segments(df, value_col="clv", currency="GBP")) == []
    assert _tick_overlaps(plots.plot_segments(df, value_col="clv")) == []
    assert _tick_overlaps(plots.plot_clv_distribution(clv, currency="CHF")) == []


def test_money_axes_show_the_currency_sign():
    df = pd.DataFrame({"segment": ["A", "B"] * 50, "clv": np.linspace(1_000, 2_000_000, 100)})
    fig = plots.plot_segments(df, value_col="clv", currency="GBP")
    fig.canvas.draw()
    value_ax = fig.axes[1]
    assert value_ax.get_xlabel() == "Total CLV (£)"
    ticks = [t.get_text() for t in value_ax.xaxis.get_ticklabels() if t.get_text()]
    assert ticks and all(t.startswith("£") for t in ticks) and any(t.endswith("M") for t in ticks)
    fig = plots.plot_clv_distribution(np.linspace(0, 50, 100), currency="EUR")
    assert fig.axes[0].get_xlabel() == "Customer lifetime value (€)"
    assert "Median €25.00" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_format_money_signs_precision_and_codes():
    assert plots.format_money(1234.5, "GBP") == "£1,234.50"
    assert plots.format_money(-3, "EUR") == "-€3.00"
    assert plots.format_money(12, "usd") == "$12.00"
    assert plots.format_money(12, "CHF") == "CHF 12.00"
    assert plots.format_money(1.5, None, signed=True) == "+1.50"
    assert plots.format_money(-0.001, "GBP") == "£0.00"
    assert plots.format_money(None, "GBP") == plots.format_money(float("nan")) == "-"


def test_names_in_words():
    assert plots.offer_type_label("win_back") == "win-back"
    assert plots.offer_type_label("loyalty_points") == "loyalty points"
    assert plots.offer_type_label("none") == "no offer"
    assert [plots.channel_label(c) for c in ("email", "sms", "messenger", "none")] == [
        "e-mail", "SMS", "messenger", "no channel"]
