"""The nightly HTML report: built from a real bundle and score table of a small simulated shop, it
has every section, embedded PNGs that decode, numbers that match the inputs, segment movement
between runs, escaped text, and it renders in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from rebuy.config import Config  # noqa: E402
from rebuy.outputs import write_table  # noqa: E402
from rebuy.report import HISTORY_DIR, SECTIONS, ReportError, build_report  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects section ids, images, tables (by id) and every tag name of a report."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.images: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self.attrs_seen: list[tuple[str, str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.cells: list[dict[str, str]] = []
        self.classes: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        for k, v in attrs:
            self.attrs_seen.append((tag, k, v or ""))
        if a.get("class"):
            self.classes.append(a["class"])
        if tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "img":
            self.images.append(a)
        elif tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            if "data-to" in a:
                self.cells.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def kv(self, table_id: str) -> dict[str, str]:
        return {row[0]: row[1] for row in self.tables[table_id][1:]}

    def rows(self, table_id: str) -> list[list[str]]:
        return self.tables[table_id][1:]


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def num(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


# --------------------------------------------------------------------------------------------------
# one small shop, trained, scored and evaluated once for the module
# --------------------------------------------------------------------------------------------------


def _trained_shop(root: Path, n_customers: int, n_products: int):
    """(simulation, transactions path, train result) of a simulated shop trained into ``root/models``."""
    from rebuy.simulate import simulate
    from rebuy.train import train

    sim = simulate(n_customers=n_customers, seed=3, n_products=n_products)
    tx_path = root / "shop.parquet"
    sim.transactions.to_parquet(tx_path)
    return sim, tx_path, train(tx_path, Config(), models_dir=root / "models")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from rebuy.evaluate import evaluate_value_models
    from rebuy.evaluate_recommender import evaluate_recommender
    from rebuy.outputs import write_json
    from rebuy.scoring import run_scoring

    root = tmp_path_factory.mktemp("report")
    sim, tx_path, result = _trained_shop(root, n_customers=3000, n_products=300)
    cfg = Config()
    models = root / "models"
    scores_path = root / "scores.parquet"
    scored = run_scoring(tx_path, models_dir=models, out=scores_path, customers=sim.customers, events=sim.events)
    evaluation = {
        "value_models": evaluate_value_models(sim.transactions, "2024-06-30", None, cfg),
        "recommender": evaluate_recommender(sim.transactions, "2024-10-01", "2024-12-31", cfg),
    }
    eval_path = write_json(evaluation, root / "evaluate.json")
    from rebuy.exports import write_exports
    from rebuy.recommend.products import product_names

    exports = write_exports(scored.scores, root / "exports", product_names=product_names(sim.transactions))
    out = build_report(models_dir=models, scores=scores_path, out=root / "report.html", transactions=tx_path,
                       evaluation=eval_path, exports_dir=root / "exports", customers=sim.customers)
    return {"exports": exports,
        "root": root, "sim": sim, "tx_path": tx_path, "models": models, "manifest": result.manifest,
        "scores_path": scores_path, "scores": scored.scores, "evaluation": evaluation, "out": out,
        "page": parse(out),
    }


def test_report_has_every_section_in_order_and_no_failed_section(run):
    page = run["page"]
    assert run["out"].is_file()
    assert page.sections == [sid for sid, _ in SECTIONS]
    assert "section-error" not in page.classes
    text = " ".join(page.text)
    assert "No previous run" in text  # first report for this models directory
    # a run id, the as-of date and the customers scored are in the overview
    ov = page.kv("overview-table")
    assert ov["Model run id"] == run["manifest"]["run_id"]
    assert ov["Model as-of date"] == run["manifest"]["as_of"]
    assert num(ov["Customers scored"]) == len(run["scores"])


def test_report_images_are_embedded_pngs_that_decode(run):
    page = run["page"]
    # segments, CLV, clusters, tracking, calibration, recommender, offers (cohorts are a table of values)
    assert len(page.images) >= 7
    alts = " ".join(img.get("alt", "") for img in page.images)
    for word in ("segment", "CLV", "Cluster", "Tracking", "Calibration", "Recommender", "Offers"):
        assert word in alts
    for img in page.images:
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        width, height = png_size(data)
        assert width >= 300 and height >= 150
        assert len(data) > 10_000  # a drawn chart, not an empty canvas


def test_report_is_self_contained(run):
    page = run["page"]
    raw = run["out"].read_text(encoding="utf-8")
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for tag, attr, value in page.attrs_seen:
        if attr in ("src", "href"):
            assert value.startswith(("data:", "#")), (tag, attr, value[:60])
    assert "@import" not in raw and "url(" not in raw


def test_report_numbers_match_the_inputs(run):
    from rebuy.kpis import kpi_summary

    page, scores, manifest = run["page"], run["scores"], run["manifest"]
    # data summary and cleaning counts from the manifest
    cleaning = manifest["training_data"]["cleaning"]
    kv = page.kv("cleaning")
    assert num(kv["Lines read"]) == cleaning["rows_in"]
    assert num(kv["Clean purchase lines"]) == cleaning["rows_out"]
    assert num(page.kv("training-data")["Customers"]) == manifest["training_data"]["customers"]
    # model parameters
    params = page.kv("model-params")
    assert num(params["Gamma-Gamma q"]) == pytest.approx(manifest["params"]["gamma_gamma"]["q"], rel=1e-2)
    # segment sizes
    seg = {r[0]: num(r[1]) for r in page.rows("segment-table")}
    assert seg == scores["segment"].astype(str).value_counts().astype(float).to_dict()
    # KPIs on the cleaned transactions
    kpi = page.kv("kpi-table")
    expected = kpi_summary(run["sim"].transactions)
    assert num(kpi["Revenue (currency)"]) == pytest.approx(expected["revenue"], abs=0.01)
    assert num(kpi["Buyers in the period"]) == expected["buyers"]
    # offers: counts by type (in words) and the budget line
    from rebuy.plots import channel_label, offer_type_label

    by_type = {r[0]: num(r[1]) for r in page.rows("offers-by-type")}
    assert by_type == {offer_type_label(k): v for k, v in
                       scores["offer_type"].astype(str).value_counts().astype(float).to_dict().items()}
    total = page.rows("offers-by-channel")[-1]
    assert total[:2] == ["total", "all channels"] and num(total[2]) == len(scores)
    assert num(total[3]) == pytest.approx(scores["discount_cost"].sum(), abs=0.01)
    by_channel = {(r[0], r[1]): num(r[2]) for r in page.rows("offers-by-channel")[:-1]}
    channel = scores["channel"].where(scores["offer_type"] != "none", "none")
    want = scores.assign(channel=channel).groupby(["offer_type", "channel"]).size().astype(float)
    assert by_channel == {(offer_type_label(t), channel_label(c)): v for (t, c), v in want.items()}
    assert page.kv("offer-budget")["Run budget (currency)"] == "no cap configured"
    # validation: recommender metrics of the model row match the evaluation
    rec = page.rows("recommender-new_items")
    model_row = next(r for r in rec if r[0] == "model")
    assert num(model_row[1]) == pytest.approx(
        run["evaluation"]["recommender"]["modes"]["new_items"]["model"]["precision@10"], rel=1e-3)
    assert "Verdict" in " ".join(page.text)


def _label(key: str) -> str:
    """The report's label of a candidate key ("mbgnbd+ridge" -> "MBG/NBD (ridge)")."""
    from rebuy.models import PURCHASE_MODELS

    model, ridge = key.removesuffix("+ridge"), key.endswith("+ridge")
    return PURCHASE_MODELS[model].DISPLAY_NAME + (" (ridge)" if ridge else "")


def _pct(text: str) -> float:
    assert text.endswith("%"), text
    return num(text) / 100


def test_validation_shows_the_purchase_model_choice_and_the_buy_again_baselines(run):
    page, vm = run["page"], run["evaluation"]["value_models"]
    chosen = vm["params"]["purchase_model"]
    head = page.kv("validation-headline")
    assert head["purchase model"] == _label(chosen)
    assert head["clv method"] == vm["headline"]["clv_method"] == vm["clv_ranking"]["method"]
    assert head["trust"] == vm["headline"]["trust"]
    # every candidate with its holdout figures; exactly the chosen one marked
    candidates = vm["params"]["selection"]["candidates"]
    rows = {r[0]: r for r in page.rows("validation-selection")}
    assert set(rows) == {_label(n) for n in candidates}
    assert [name for name, r in rows.items() if r[-1] == "yes"] == [_label(vm["params"]["selection"]["chosen_candidate"])]
    assert vm["params"]["selection"]["chosen"] == chosen
    for name, c in candidates.items():
        assert num(rows[_label(name)][1]) == pytest.approx(c["log_loss"], rel=1e-3)
        assert num(rows[_label(name)][3]) == pytest.approx(c["auc_p_alive"], abs=1e-4)
    # buy-again AUC beside the recency and frequency baselines, everyone and one-time buyers
    auc = {r[0]: r for r in page.rows("buy-again-auc")}
    ba = vm["buy_again"]
    assert len(auc) == len(ba["auc"]) == 5
    for key, label in (("p_alive", "P(alive)"), ("p_purchase_90d", "p_purchase_90d"),
                       ("recency_baseline", "Baseline: days since the last purchase"),
                       ("frequency_baseline", "Baseline: repeat purchase days")):
        assert num(auc[label][1]) == pytest.approx(ba["auc"][key], abs=1e-4)
        assert num(auc[label][2]) == pytest.approx(ba["auc_one_time_buyers"][key], abs=1e-4)
    # the manifest's model section names the chosen model of the training run, with its parameters
    params = page.kv("model-params")
    trained = run["manifest"]["params"]["purchase_model"]
    assert params["Purchase model"] == _label(trained)
    assert num(params[f"{_label(trained)} r"]) == pytest.approx(run["manifest"]["params"][trained]["r"], rel=1e-2)
    assert "BG/NBD r" not in params or trained == "bgnbd"
    model_choice = {r[0]: r[-1] for r in page.rows("model-selection")}
    assert model_choice[_label(run["manifest"]["purchase_model_selection"]["chosen_candidate"])] == "yes"


def test_validation_shows_calibration_interval_and_clv_capture(run):
    page, vm = run["page"], run["evaluation"]["value_models"]
    # p_purchase_90d: calibrated and raw model, then ten deciles covering every calibration customer
    p90 = vm["p_purchase_90d_calibration"]
    cal = {r[0]: r for r in page.rows("p-purchase-calibration")}
    assert list(cal) == ["p_purchase_90d (calibrated)", "Raw model"]
    for label, key in (("p_purchase_90d (calibrated)", "calibrated"), ("Raw model", "raw_model")):
        assert _pct(cal[label][2]) == pytest.approx(p90[key]["mean_abs_decile_error"], abs=6e-4)
        assert num(cal[label][4]) == pytest.approx(p90[key]["auc"], abs=1e-4)
    deciles = page.rows("p-purchase-deciles")
    assert [r[0] for r in deciles] == [str(d) for d in range(1, 11)]
    assert sum(num(r[1]) for r in deciles) == vm["aggregate"]["customers"]
    predicted = [_pct(r[2]) for r in deciles]
    assert predicted == sorted(predicted) and predicted[-1] > predicted[0]
    # the spend interval beside one interval for everyone
    model_row, single_row = page.rows("spend-interval")
    si = vm["spend_interval"]
    assert model_row[0].startswith("Per-customer") and single_row[0].startswith("One interval for everyone")
    assert _pct(model_row[1]) == pytest.approx(si["model"]["coverage"], abs=6e-4)
    assert _pct(single_row[1]) == pytest.approx(si["one_interval_for_everyone"]["coverage"], abs=6e-4)
    assert num(model_row[7]) == pytest.approx(si["model"]["mean_interval_score"], abs=0.01)
    assert num(single_row[5]) == pytest.approx(si["one_interval_for_everyone"]["upper"]
                                               - si["one_interval_for_everyone"]["lower"], abs=0.02)
    # CLV capture: clv_12m (with its method), the models' CLV, past spend, best possible, random
    cap = vm["clv_ranking"]["capture"]
    rows = {r[0]: r for r in page.rows("clv-ranking")}
    method = vm["clv_ranking"]["method"]
    assert list(rows) == [f"clv_12m ({method})", "CLV of the purchase x spend models", "Past spend",
                          "Best possible (hindsight)", "Random"]
    for label, key in ((f"clv_12m ({method})", "clv_12m"), ("Past spend", "past_spend"),
                       ("Best possible (hindsight)", "best_possible")):
        assert _pct(rows[label][1]) == pytest.approx(cap[key]["top_10pct"], abs=6e-4)
        assert _pct(rows[label][2]) == pytest.approx(cap[key]["top_20pct"], abs=6e-4)
    assert rows["Random"][1:3] == ["10.0%", "20.0%"]
    assert _pct(rows["Best possible (hindsight)"][2]) >= _pct(rows[f"clv_12m ({method})"][2])
    gain = vm["clv_ranking"]["clv_minus_past_spend_top20_points"]
    assert f"{gain:+.1f} points" in " ".join(page.text)


def _old_layout(vm: dict) -> dict:
    """The value-model evaluation as rebuy wrote it before the purchase-model choice: BG/NBD only,
    clv_ranking by top_10pct / top_20pct, no buy_again, p_purchase_90d or spend_interval."""
    cap = vm["clv_ranking"]["capture"]
    old = {k: v for k, v in vm.items() if k not in ("buy_again", "p_purchase_90d_calibration", "spend_interval")}
    old["params"] = {"time_unit": "weeks", "bgnbd": {"r": 0.6, "alpha": 8.0, "a": 0.8, "b": 3.0},
                     "gamma_gamma": vm["params"]["gamma_gamma"]}
    old["headline"] = {k: vm["headline"][k] for k in ("trust", "aggregate_error_pct", "clv_top20_revenue_share")}
    old["clv_ranking"] = {"horizon_months": 12, "spearman_clv_vs_holdout_revenue": 0.41,
                          "spearman_past_spend_vs_holdout_revenue": 0.27, **{
                              top: {"clv_share_of_holdout_revenue": cap["clv_12m"][top],
                                    "past_spend_share_of_holdout_revenue": cap["past_spend"][top],
                                    "best_possible_share": cap["best_possible"][top], "random_share": share}
                              for top, share in (("top_10pct", 0.1), ("top_20pct", 0.2))}}
    return old


def test_an_old_evaluation_json_still_renders(run, tmp_path):
    from rebuy.report import _model_params_rows

    vm = run["evaluation"]["value_models"]
    models = _copy_models(run, tmp_path)
    out = build_report(models_dir=models, scores=run["scores_path"], out=tmp_path / "r.html",
                       evaluation={"value_models": _old_layout(vm)})
    page = parse(out)
    assert "section-error" not in page.classes
    text = " ".join(page.text)
    assert "written by an older rebuy" in text and "buy_again, p_purchase_90d_calibration, spend_interval" in text
    rows = {r[0]: r for r in page.rows("clv-ranking")}
    assert list(rows) == ["clv_12m (model)", "Past spend", "Best possible (hindsight)", "Random"]
    assert _pct(rows["clv_12m (model)"][2]) == pytest.approx(vm["clv_ranking"]["capture"]["clv_12m"]["top_20pct"],
                                                              abs=6e-4)
    assert num(rows["Past spend"][3]) == 0.27
    for absent in ("buy-again-auc", "p-purchase-calibration", "spend-interval", "validation-selection"):
        assert absent not in page.tables
    # a manifest from before the choice: BG/NBD parameters under "bgnbd", no purchase_model key
    rows = dict(_model_params_rows(_old_layout(vm)["params"]))
    assert rows["Purchase model"] == "BG/NBD"
    assert rows["BG/NBD alpha (per week)"] == 8.0 and rows["BG/NBD r"] == 0.6
    assert "Gamma-Gamma q" in rows


def test_a_holdout_too_short_for_p_purchase_90d_says_so(run):
    from rebuy.report import _value_models_validation

    vm = dict(run["evaluation"]["value_models"])
    vm["p_purchase_90d_calibration"] = {"note": "holdout shorter than 90 days: not checked"}
    page = _Page()
    page.feed(_value_models_validation(vm))
    assert "holdout shorter than 90 days: not checked" in " ".join(page.text)
    assert "p-purchase-calibration" not in page.tables and "p-purchase-deciles" not in page.tables
    assert "buy-again-auc" in page.tables and "clv-ranking" in page.tables


def _copy_models(run, dest: Path) -> Path:
    models = dest / "models"
    shutil.copytree(run["models"], models, symlinks=True)
    shutil.rmtree(models / HISTORY_DIR, ignore_errors=True)
    return models


def test_segment_movement_between_runs(run, tmp_path):
    models = _copy_models(run, tmp_path)
    scores = run["scores"]
    first = build_report(models_dir=models, scores=run["scores_path"], out=tmp_path / "r1.html")
    assert "No previous run" in " ".join(parse(first).text)
    # tomorrow's scores: 10 Champions became At Risk, 5 customers dropped out, 2 new customers
    nxt = scores.copy()
    champions = nxt.index[nxt["segment"] == "Champions"][:10]
    nxt.loc[champions, "segment"] = "At Risk"
    nxt = nxt.drop(nxt.index[-5:])
    extra = nxt.iloc[:2].copy()
    extra["customer_id"] = ["NEW1", "NEW2"]
    nxt = pd.concat([nxt, extra], ignore_index=True)
    nxt["scored_at"] = scores["scored_at"] + pd.Timedelta(days=1)
    path2 = write_table(nxt, tmp_path / "scores2.parquet")
    second = build_report(models_dir=models, scores=path2, out=tmp_path / "r2.html")
    page = parse(second)
    summary = page.kv("movement-summary")
    assert num(summary["Changed segment"]) == 10
    assert num(summary["Customers no longer in the scores"]) == 5
    assert num(summary["New customers (not in the previous run)"]) == 2
    assert num(summary["Same segment"]) == len(scores) - 5 - 10
    cells = {(c["data-from"], c["data-to"]): int(c["data-count"]) for c in page.cells}
    assert cells[("Champions", "At Risk")] == 10
    n_champ = int((scores["segment"] == "Champions").sum())
    assert cells[("Champions", "Champions")] == n_champ - 10 - int((scores["segment"].iloc[-5:] == "Champions").sum())
    assert page.rows("movement-top")[0] == ["Champions", "At Risk", "10"]
    # re-running on the same scores compares with the same previous run (idempotent)
    again = build_report(models_dir=models, scores=path2, out=tmp_path / "r2b.html")
    assert parse(again).kv("movement-summary") == summary
    assert len(list((models / HISTORY_DIR).glob("segments_*.parquet"))) == 2


def test_text_is_escaped_and_missing_inputs_are_explained(run, tmp_path):
    models = _copy_models(run, tmp_path)
    nasty = '<script>alert("x")</script> & Co'
    scores = run["scores"].copy()
    scores.loc[scores["segment"] == "Lost", "segment"] = nasty
    path = write_table(scores, tmp_path / "scores.csv")  # CSV scores are accepted too
    out = build_report(models_dir=models, scores=path, out=tmp_path / "r.html")
    raw = out.read_text(encoding="utf-8")
    page = parse(out)
    assert "<script" not in raw and "&lt;script&gt;" in raw
    assert nasty in {r[0] for r in page.rows("segment-table")}  # decoded back to the original text
    text = " ".join(page.text)
    assert "No transactions given" in text and "No evaluation given" in text
    assert "section-error" not in page.classes


def test_bad_scores_fail_with_one_line_naming_the_file(run, tmp_path):
    with pytest.raises(ReportError, match="scores.parquet: scores file not found"):
        build_report(models_dir=run["models"], scores=tmp_path / "scores.parquet", out=tmp_path / "r.html")
    bad = write_table(run["scores"].drop(columns=["segment"]), tmp_path / "noseg.parquet")
    with pytest.raises(ReportError, match=r"noseg.parquet: scores table lacks column\(s\) \['segment'\]"):
        build_report(models_dir=run["models"], scores=bad, out=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


# --------------------------------------------------------------------------------------------------
# a real browser
# --------------------------------------------------------------------------------------------------

_IMAGE_CHECK = (
    "<script>window.addEventListener('load',function(){var im=document.images,ok=0,w=[];"
    "for(var i=0;i<im.length;i++){w.push(im[i].naturalWidth);if(im[i].complete&&im[i].naturalWidth>0)ok++;}"
    "var p=document.createElement('pre');p.id='image-check';"
    "p.textContent=JSON.stringify({total:im.length,ok:ok,widths:w});document.body.appendChild(p);});</script>"
)


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(cmd, capture_output=True, timeout=180, check=False)


def test_report_renders_in_headless_chromium(run, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    import matplotlib.image as mpimg

    shot = tmp_path / "report.png"
    proc = _chromium(f"--screenshot={shot}", "--window-size=1280,4000", run["out"].resolve().as_uri(),
                     profile=tmp_path / "profile1")
    assert shot.is_file(), proc.stderr.decode(errors="replace")[-2000:]
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (4000, 1280)
    assert float(pixels.std()) > 0.05  # not a blank page
    # the dark-blue page header (#0b3d91) is drawn at the top: the report itself rendered, not an error page
    header = pixels[20, 600]
    assert np.allclose(header, np.array([11, 61, 145]) / 255, atol=0.03)
    # a chart (many distinct colours) is drawn somewhere below the header
    lower = pixels[400:].reshape(-1, 3)
    assert len(np.unique((lower * 255).astype(np.uint8), axis=0)) > 200

    checked = tmp_path / "checked.html"
    checked.write_text(run["out"].read_text(encoding="utf-8").replace("</body>", _IMAGE_CHECK + "</body>"),
                       encoding="utf-8")
    proc = _chromium("--dump-dom", checked.resolve().as_uri(), profile=tmp_path / "profile2")
    dom = proc.stdout.decode("utf-8", errors="replace")
    assert "rebuy nightly report" in dom
    found = re.search(r'<pre id="image-check">([^<]*)</pre>', dom)
    assert found, dom[-2000:]
    result = json.loads(found.group(1))
    assert result["total"] == len(run["page"].images)
    assert result["ok"] == result["total"]
    assert min(result["widths"]) > 0


# --------------------------------------------------------------------------------------------------
# "What worked": the measured uplift of the offers (a small bundle of its own and hand-written uplift)
# --------------------------------------------------------------------------------------------------


def _offer_row(offer_type: str, uplift: float, ci: list[float], margin: float, margin_ci: list[float],
               verdict: str, **extra) -> dict:
    return {"offer_type": offer_type, "treatment": 600, "control": 150, "response_treatment": 0.10 + uplift,
            "response_control": 0.10, "uplift": uplift, "uplift_ci95": ci, "uplift_plain": uplift,
            "uplift_plain_ci95": [ci[0] - 0.01, ci[1] + 0.01], "ci_width_ratio": 0.78,
            "incremental_revenue_per_customer": margin / 0.3, "incremental_revenue_ci95": [m / 0.3 for m in margin_ci],
            "incremental_margin_per_customer": margin, "incremental_margin_ci95": margin_ci, "mde": 0.03,
            "verdict": verdict, **extra}


UPLIFT = {
    "window_days": 30, "as_of": "2024-12-31", "margin": 0.3,
    "decisions_total": 1200, "decisions_measured": 1000, "decisions_pending": 200,
    "variance_reduction": {"method": "cuped", "covariates": ["p_purchase_90d", "total_spend"],
                           "median_ci_width_ratio": 0.81},
    "by_offer": [
        _offer_row("win_back", 0.04, [0.012, 0.068], 1.5, [0.3, 2.7], "works"),
        _offer_row("vip", -0.03, [-0.055, -0.005], -1.1, [-2.0, -0.2], "harmful"),
        _offer_row("cross_sell", 0.005, [-0.02, 0.03], 0.2, [-0.5, 0.9], "no effect shown",
                   note="fewer than 200 control customers"),
    ],
    "overall": _offer_row("overall", 0.01, [-0.004, 0.024], 0.4, [-0.1, 0.9], "no effect shown"),
    "by_segment": [],
}


def _section(path: Path, sid: str) -> _Page:
    found = re.search(rf'<section id="{sid}">(.*?)</section>', path.read_text(encoding="utf-8"), re.S)
    assert found, f"no section {sid}"
    page = _Page()
    page.feed(found.group(1))
    return page


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A trained bundle of a 400-customer shop, a hand-made score table and an offer log."""
    root = tmp_path_factory.mktemp("what_worked")
    sim, tx_path, result = _trained_shop(root, n_customers=400, n_products=50)
    ids = sorted(sim.transactions["customer_id"].astype(str).unique())
    scores = pd.DataFrame({"customer_id": ids, "segment": "Loyal Customers", "model_run_id": result.manifest["run_id"]})
    scores_path = write_table(scores, root / "scores.parquet")
    log = pd.DataFrame({"customer_id": ids, "decided_at": pd.Timestamp("2024-11-01"),
                        "offer_type": ["win_back", "vip"] * (len(ids) // 2) + ["win_back"] * (len(ids) % 2),
                        "group": ["control" if i % 3 == 0 else "treatment" for i in range(len(ids))]})
    log_path = write_table(log, root / "offer_log.parquet")
    full = build_report(models_dir=root / "models", scores=scores_path, out=root / "full.html", transactions=tx_path,
                        uplift=UPLIFT, offer_log=log_path)
    return {"root": root, "models": root / "models", "scores_path": scores_path, "tx_path": tx_path,
            "log": log, "log_path": log_path, "full": full, "page": _section(full, "what_worked")}


def test_what_worked_comes_right_after_what_to_do_now(small):
    assert parse(small["full"]).sections[:2] == ["what_to_do", "what_worked"]
    assert [sid for sid, _ in SECTIONS][:2] == ["what_to_do", "what_worked"]
    assert "section-error" not in small["page"].classes


def test_what_worked_says_the_window_and_the_decisions_measured_and_pending(small):
    text = " ".join(small["page"].text)
    assert "within 30 days of the decision, as of 2024-12-31" in text
    assert "1,000 of 1,200 decisions measured, 200 still inside their window" in text
    assert "cuped (p_purchase_90d, total_spend)" in text and "81.0%" in text


def test_what_worked_table_has_verdicts_and_formatted_intervals(small):
    rows = {r[0]: r for r in small["page"].rows("uplift-by-offer")}
    assert list(rows) == ["win-back", "VIP", "cross-sell", "overall"]
    win = rows["win-back"]
    assert win[1:5] == ["600", "150", "14.0%", "10.0%"]
    assert win[5:9] == ["+4.0", "+1.2 to +6.8", "+1.50", "+0.30 to +2.70"]
    assert win[9:] == ["works", "78.0%"]
    assert rows["VIP"][6] == "-5.5 to -0.5" and rows["VIP"][9] == "harmful"
    assert rows["cross-sell"][9] == "no effect shown"
    assert "cross-sell: fewer than 200 control customers" in " ".join(small["page"].text)


def test_what_worked_plots_the_uplift_intervals(small):
    images = small["page"].images
    assert len(images) == 1 and "Uplift per offer type" in images[0]["alt"]
    width, height = png_size(base64.b64decode(images[0]["src"].split(",", 1)[1]))
    assert width >= 300 and height >= 150


def test_a_harmful_type_is_switched_off_and_a_profitable_one_promoted(small):
    text = " ".join(small["page"].text)
    assert "VIP is switched off: it was harmful (uplift -3.0 points, 95% CI -5.5 to -0.5)." in text
    assert "win-back moves ahead in the priority" in text
    assert "cross-sell moves" not in text  # its margin interval includes 0


def test_campaign_kpis_of_the_offer_log_match_campaign_kpis(small):
    from rebuy.campaign_kpis import campaign_kpis
    from rebuy.data import load_transactions

    tx = load_transactions(small["tx_path"], Config())
    want = campaign_kpis(small["log"], tx, window_days=30, as_of="2024-12-31").set_index(["offer_type", "group"])
    table = small["page"].tables["campaign-kpis"]
    assert table[0][:3] == ["Offer type", "Customers treated", "Customers control"]
    rows = {r[0]: r for r in table[1:]}
    assert set(rows) == {"win-back", "VIP"}
    assert num(rows["VIP"][1]) == want.loc[("vip", "treatment"), "customers"]
    assert num(rows["VIP"][4]) == pytest.approx(100 * want.loc[("vip", "control"), "repeat_rate"], abs=0.05)
    assert num(rows["win-back"][7]) == pytest.approx(want.loc[("win_back", "treatment"), "revenue_per_customer"],
                                                     abs=0.005)
    assert num(rows["win-back"][2]) == want.loc[("win_back", "control"), "customers"]


def test_recorded_evidence_replaces_the_derived_changes(small, tmp_path):
    evidence = {"source": "uplift.json", "switched_off": [], "promoted": ["cross_sell"],
                "priority": ["cross_sell", "birthday", "win_back"]}
    out = build_report(models_dir=small["models"], scores=small["scores_path"], out=tmp_path / "r.html",
                       uplift=UPLIFT, evidence=evidence)
    text = " ".join(_section(out, "what_worked").text)
    assert "evidence from uplift.json" in text
    assert "cross-sell moves ahead in the priority" in text
    assert "Priority: cross-sell, birthday, win-back." in text
    assert "switched off" not in text


def test_without_uplift_or_evaluation_the_report_says_how_to_get_them(small, tmp_path):
    out = build_report(models_dir=small["models"], scores=small["scores_path"], out=tmp_path / "r.html")
    page = _section(out, "what_worked")
    text = " ".join(page.text)
    assert "No uplift measurement given" in text
    assert "rebuy measure --offers OFFER_LOG --transactions TRANSACTIONS --out uplift.json" in text
    assert "rebuy report --uplift uplift.json" in text
    assert not page.images and "uplift-by-offer" not in page.tables
    # the model-validation section is not empty: it says how to get the evaluation (the demo has none)
    validation = " ".join(_section(out, "validation").text)
    assert "rebuy evaluate ... --out evaluation.json" in validation
    assert "rebuy report --evaluation evaluation.json" in validation


def test_nothing_changes_when_no_type_is_harmful_or_clearly_profitable():
    from rebuy.report import _change_sentences

    calm = {"by_offer": [_offer_row("vip", 0.0, [-0.02, 0.02], 0.0, [-0.5, 0.5], "no effect shown")]}
    assert _change_sentences(calm, None) == [
        "Nothing changes: no offer type was shown harmful or clearly profitable, so the configured priority stays."]


def test_a_bad_uplift_json_fails_with_one_line_naming_the_file(small, tmp_path):
    bad = tmp_path / "uplift.json"
    bad.write_text('{"window_days": 30}', encoding="utf-8")
    with pytest.raises(ReportError, match=r"uplift.json: uplift JSON has no 'by_offer' list"):
        build_report(models_dir=small["models"], scores=small["scores_path"], out=tmp_path / "r.html", uplift=bad)
    with pytest.raises(ReportError, match=r"missing.json: uplift JSON not found"):
        build_report(models_dir=small["models"], scores=small["scores_path"], out=tmp_path / "r.html",
                     uplift=tmp_path / "missing.json")
    assert not (tmp_path / "r.html").exists()


def test_harm_that_does_not_survive_holm_stays_on_and_the_report_says_why():
    from rebuy.report import _change_sentences

    weak = {"by_offer": [_offer_row("vip", -0.03, [-0.055, -0.005], -1.0, [-2.0, -0.1], "harmful",
                                    significant_holm=False)]}
    sentences = _change_sentences(weak, None)
    assert sentences[0].startswith("VIP stays on: its harm (uplift -3.0 points) is not significant")
    assert not any("switched off" in s for s in sentences)


# --------------------------------------------------------------------------------------------------
# issue 13: a report a marketer acts on
# --------------------------------------------------------------------------------------------------

_MARKETER = ["what_to_do", "what_worked", "kpis", "segments", "movement", "clv"]
_ENGINEERING = ["overview", "data", "model", "validation"]


def test_what_to_do_now_comes_first_and_engineering_sections_last(run):
    order = run["page"].sections
    assert order[: len(_MARKETER)] == _MARKETER
    assert order[-len(_ENGINEERING):] == _ENGINEERING
    raw = run["out"].read_text(encoding="utf-8")
    # the first thing under the header is what to do, not run ids and cleaning counts
    assert raw.index('id="what-to-do"') < raw.index('id="overview-table"') < raw.index('id="cleaning"')


def _contacted(scores: pd.DataFrame) -> pd.DataFrame:
    keep = (scores["group"] == "treatment") & scores["deliver"].astype(bool) & (scores["channel"] != "none")
    return scores[keep & (scores["offer_type"] != "none")]


def test_what_to_do_now_has_customers_cost_margin_and_file_per_offer_and_channel(run, tmp_path):
    from rebuy.plots import channel_label, offer_type_label

    models = _copy_models(run, tmp_path)
    out = build_report(models_dir=models, scores=run["scores_path"], out=tmp_path / "r.html", uplift=UPLIFT,
                       exports_dir=run["root"] / "exports")
    page = _section(out, "what_to_do")
    table = page.tables["what-to-do"]
    assert table[0] == ["Offer", "Channel", "Customers", "Expected discount cost", "Expected incremental margin",
                        "Margin 95% interval", "File to send"]
    sent = _contacted(run["scores"])
    want = sent.groupby(["offer_type", "channel"]).agg(n=("customer_id", "size"), cost=("discount_cost", "sum"))
    assert len(want) >= 3
    rows = {(r[0], r[1]): r for r in table[1:]}
    assert set(rows) == {(offer_type_label(t), channel_label(c)) for t, c in want.index}
    assert "no channel" not in {r[1] for r in table[1:]}
    measured = {r["offer_type"]: r for r in UPLIFT["by_offer"]}
    for (t, c), w in want.iterrows():
        row = rows[(offer_type_label(t), channel_label(c))]
        assert num(row[2]) == w["n"]
        assert num(row[3]) == pytest.approx(w["cost"], abs=0.01)
        if t in measured:
            m = measured[t]
            assert num(row[4]) == pytest.approx(m["incremental_margin_per_customer"] * w["n"], abs=0.01)
            lo, hi = (num(x) for x in row[5].split(" to "))
            assert lo == pytest.approx(m["incremental_margin_ci95"][0] * w["n"], abs=0.01)
            assert hi == pytest.approx(m["incremental_margin_ci95"][1] * w["n"], abs=0.01)
        else:
            assert row[4] == "not measured yet" and row[5] == "-"
        assert row[6] == f"{t}_{c}.csv" and (run["root"] / "exports" / row[6]).is_file()
    text = " ".join(page.text)
    assert "held out as the control group" in text and str(run["root"] / "exports") in text


def test_what_to_do_now_without_exports_names_the_files_to_write(small, tmp_path):
    scores = pd.read_parquet(small["scores_path"]).assign(
        offer_type="win_back", channel="email", group="treatment", deliver=True, discount_cost=2.0)
    path = write_table(scores, tmp_path / "scores.parquet")
    out = build_report(models_dir=small["models"], scores=path, out=tmp_path / "r.html")
    page = _section(out, "what_to_do")
    (row,) = page.rows("what-to-do")
    assert row[:4] == ["win-back", "e-mail", f"{len(scores):,}", f"{2.0 * len(scores):,.2f}"]
    assert row[4] == "not measured yet" and row[6] == "win_back_email.csv (not written yet)"
    assert "rebuy score --exports DIR" in " ".join(page.text)


def test_no_channel_is_shown_for_customers_without_an_offer(small, tmp_path):
    scores = pd.read_parquet(small["scores_path"])
    n = len(scores)
    scores = scores.assign(offer_type=["none"] * (n - 10) + ["win_back"] * 10, channel="email", discount_cost=0.0,
                           group=["none"] * (n - 10) + ["treatment"] * 10, deliver=[False] * (n - 10) + [True] * 10)
    path = write_table(scores, tmp_path / "scores.parquet")
    page = _section(build_report(models_dir=small["models"], scores=path, out=tmp_path / "r.html"), "offers")
    rows = {(r[0], r[1]): num(r[2]) for r in page.rows("offers-by-channel")[:-1]}
    assert rows == {("no offer", "no channel"): n - 10, ("win-back", "e-mail"): 10}
    assert {r[0] for r in page.rows("offers-by-type")} == {"no offer", "win-back"}


def test_money_is_shown_with_the_shops_currency_and_probabilities_with_two_decimals(run, tmp_path):
    models = _copy_models(run, tmp_path)
    out = build_report(models_dir=models, scores=run["scores_path"], out=tmp_path / "gbp.html",
                       transactions=run["tx_path"], currency="GBP")
    page = parse(out)
    kpi = page.kv("kpi-table")
    assert re.fullmatch(r"£\d{1,3}(,\d{3})*\.\d\d", kpi["Revenue (£)"])
    assert re.fullmatch(r"£\d{1,3}(,\d{3})*\.\d\d", kpi["Average order value (£)"])
    segments = page.tables["segment-table"]
    assert segments[0][3] == "Mean P(alive)"
    assert all(re.fullmatch(r"[01]\.\d\d", r[3]) for r in segments[1:]), [r[3] for r in segments[1:]]
    assert all(r[4].startswith("£") for r in segments[1:])
    assert "Money in GBP (£)." in " ".join(page.text)
    other = build_report(models_dir=models, scores=run["scores_path"], out=tmp_path / "chf.html", currency="chf")
    clv = parse(other).kv("clv-table")
    assert re.fullmatch(r"CHF \d{1,3}(,\d{3})*\.\d\d", clv["Total"])
    plain = run["page"].kv("clv-table")["Total"]  # no currency configured: plain numbers
    assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d\d", plain)
    with pytest.raises(ReportError, match="currency"):
        build_report(models_dir=models, scores=run["scores_path"], out=tmp_path / "bad.html", currency="pounds")


def test_kpis_show_cohort_values_and_breakdowns_by_channel_and_offer_type(run):
    from rebuy.data import load_transactions
    from rebuy.kpis import channel_metrics, cohort_retention
    from rebuy.plots import offer_type_label

    page = run["page"]
    tx = load_transactions(run["tx_path"], Config())
    counts, pct = cohort_retention(tx)
    cohort = page.rows("cohort-table")[0]
    label = cohort[0].rstrip(" *")
    assert num(cohort[1]) == counts.loc[pd.Period(label, "M"), 0]
    assert [num(c) for c in cohort[2:5]] == pytest.approx(list(pct.loc[pd.Period(label, "M"), 1:3]), abs=0.5)
    assert all(c.endswith("%") or c.endswith("% *") for c in cohort[2:] if c)
    kpi = page.kv("kpi-table")
    for key in ("Customer retention rate", "Repeat-purchase rate", "Churn rate", "Average order value (currency)"):
        assert kpi[key] not in ("", "-")
    channels = {r[0]: r for r in page.rows("kpis-by-channel")}
    want = channel_metrics(tx, run["sim"].customers, by="acquisition_channel")
    assert {k.replace("_", " ") for k in want.index} == set(channels)
    first = want.index[0]
    assert num(channels[first.replace("_", " ")][1]) == want.loc[first, "customers"]
    offers = {r[0] for r in page.rows("kpis-by-offer")}
    assert offers == {offer_type_label(t) for t in run["scores"]["offer_type"].astype(str).unique()}


def test_partial_months_are_flagged_in_the_cohort_table(run):
    from rebuy.data import load_transactions
    from rebuy.report import _cohort_html

    tx = load_transactions(run["tx_path"], Config())
    last = tx["timestamp"].max()
    cut = tx[tx["timestamp"] < last.normalize().replace(day=10)]  # the last month ends on its 9th day
    page = _Page()
    page.feed(_cohort_html(cut))
    rows = page.rows("cohort-table")
    month = str((last.normalize().replace(day=10)).to_period("M"))
    flagged = [c for r in rows for c in r[2:] if c.endswith("*")]
    assert flagged, rows
    assert f"partial month ({month})" in " ".join(page.text)


def test_segment_movement_is_not_shown_against_another_shop(run, tmp_path):
    models = _copy_models(run, tmp_path)
    build_report(models_dir=models, scores=run["scores_path"], out=tmp_path / "r1.html")
    scores = run["scores"]
    # another shop with the same id scheme: the ids match, the first-purchase days do not
    other = scores.copy()
    other["first_purchase"] = pd.to_datetime(other["first_purchase"]) + pd.Timedelta(days=40)
    other["scored_at"] = scores["scored_at"] + pd.Timedelta(days=1)
    out = build_report(models_dir=models, scores=write_table(other, tmp_path / "other.parquet"), out=tmp_path / "r2.html")
    page = _section(out, "movement")
    assert "Previous run is another shop/data set: no movement shown" in " ".join(page.text)
    assert "movement-summary" not in page.tables
    # and a shop with other ids altogether
    ids = other.assign(customer_id="X" + scores["customer_id"].astype(str),
                       scored_at=scores["scored_at"] + pd.Timedelta(days=2))
    out = build_report(models_dir=models, scores=write_table(ids, tmp_path / "ids.parquet"), out=tmp_path / "r3.html")
    assert "another shop/data set" in " ".join(_section(out, "movement").text)


_FIRST_SCREEN_CHECK = (
    "<script>window.addEventListener('load',function(){var H=900,rects=[],bad=[],n,i,j;"
    "var w=document.createTreeWalker(document.body,NodeFilter.SHOW_TEXT,null);"
    "while((n=w.nextNode())){if(!n.textContent.trim())continue;var rg=document.createRange();rg.selectNodeContents(n);"
    "var rs=rg.getClientRects();for(i=0;i<rs.length;i++){var b=rs[i];if(b.width<1||b.height<1||b.top>=H||b.bottom<=0)"
    "continue;rects.push({t:n.textContent.trim().slice(0,40),l:b.left,r:b.right,y0:b.top,y1:b.bottom});}}"
    "for(i=0;i<rects.length;i++)for(j=i+1;j<rects.length;j++){var a=rects[i],c=rects[j];"
    "var ox=Math.min(a.r,c.r)-Math.max(a.l,c.l),oy=Math.min(a.y1,c.y1)-Math.max(a.y0,c.y0);"
    "if(ox>1&&oy>1)bad.push([a.t,c.t]);}"
    "var h=document.querySelector('section h2'),t=document.getElementById('what-to-do');"
    "var p=document.createElement('pre');p.id='first-screen-check';"
    "p.textContent=JSON.stringify({texts:rects.length,overlaps:bad.slice(0,10),n_overlaps:bad.length,"
    "heading:h?h.textContent:null,table_top:t?t.getBoundingClientRect().top:null,"
    "table_right:t?t.getBoundingClientRect().right:null,"
    "scroll_width:document.documentElement.scrollWidth,inner_width:window.innerWidth});"
    "document.body.appendChild(p);});</script>"
)


def test_first_screen_screenshot_is_what_to_do_now_without_overlapping_text(run, tmp_path):
    """The first 1280 x 900 pixels in headless Chromium: not blank, the "What to do now" table in
    view, and no two text boxes drawn on top of each other (measured in the page's own layout)."""
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    import matplotlib.image as mpimg

    models = _copy_models(run, tmp_path)
    report = build_report(models_dir=models, scores=run["scores_path"], out=tmp_path / "r.html", uplift=UPLIFT,
                          exports_dir=run["root"] / "exports", currency="GBP")
    shot = tmp_path / "first.png"
    proc = _chromium(f"--screenshot={shot}", "--window-size=1280,900", report.resolve().as_uri(),
                     profile=tmp_path / "profile1")
    assert shot.is_file(), proc.stderr.decode(errors="replace")[-2000:]
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (900, 1280)
    assert float(pixels.std()) > 0.05  # not blank
    assert float(pixels[300:].std()) > 0.05  # the table below the header is drawn too

    checked = tmp_path / "checked.html"
    checked.write_text(report.read_text(encoding="utf-8").replace("</body>", _FIRST_SCREEN_CHECK + "</body>"),
                       encoding="utf-8")
    proc = _chromium("--window-size=1280,900", "--dump-dom", checked.resolve().as_uri(), profile=tmp_path / "profile2")
    dom = proc.stdout.decode("utf-8", errors="replace")
    found = re.search(r'<pre id="first-screen-check">([^<]*)</pre>', dom)
    assert found, dom[-2000:]
    result = json.loads(html_unescape(found.group(1)))
    assert result["heading"] == "What to do now"
    assert result["table_top"] is not None and 0 < result["table_top"] < 700, result
    assert result["texts"] > 30, result  # the check saw the page's text
    assert result["n_overlaps"] == 0, result["overlaps"]
    assert result["scroll_width"] <= result["inner_width"], result  # nothing runs off to the right
    assert result["table_right"] <= result["inner_width"], result
