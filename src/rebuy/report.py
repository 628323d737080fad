"""The nightly HTML report behind ``rebuy report``: one self-contained page for marketers.

    from rebuy.report import build_report
    build_report(models_dir="models", scores="scores.parquet", out="report.html",
                 transactions="shop.parquet", evaluation="evaluation.json", uplift="uplift.json",
                 exports_dir="exports", customers="customers.parquet")

The page has no external resources (inline CSS, plots embedded as base64 PNG, no JavaScript), so it
can be mailed or opened from disk. Sections, each an ``<section id=...>``, in :data:`SECTIONS` order:
what a marketer acts on first, the engineering sections last.

``what_to_do`` (the first screen: per offer type and channel the customers to contact, i.e.
``group`` treatment with ``deliver`` true and a channel (:func:`rebuy.exports.customers_to_contact`),
their expected discount cost, the expected incremental margin (the uplift JSON's
``incremental_margin_per_customer`` x customers, with its 95% interval scaled the same way; "not
measured yet" without a measurement) and the file to send (see "Send lists" below); then how many
are held out as control or have no consented channel), ``what_worked`` (when an uplift JSON of
``rebuy measure`` is given: the measurement window and decisions measured/pending, per offer type
the treated/control sizes, response rates, uplift in points with its 95% interval, incremental
margin per treated customer, verdict and interval width vs the plain difference in means, a plot of
the intervals, and what the next ``rebuy score --uplift`` run changes (``evidence``, else derived
with its rule); with an offer log and transactions the KPIs by campaign of
:func:`rebuy.campaign_kpis.campaign_kpis`; without an uplift JSON, how to get one), ``kpis``
(:func:`rebuy.kpis.kpi_summary`: retention, repeat-purchase and churn rates, AOV ...; the last 12
monthly cohorts with their per cent buying 1..12 months later in the cells, partial months of
:func:`rebuy.kpis.period_coverage` flagged "*"; lifetime repeat rate, revenue and CLV by acquisition
channel (with ``customers``) and by this run's offer type; when ``transactions`` is given),
``segments`` (sizes and 12-month CLV per segment), ``movement`` (segment changes since the previous
run on the same data set), ``clv`` (CLV distribution), ``offers`` (every offer decision by offer
type and channel, discount cost against the run budget; customers without an offer show no
channel), ``clusters`` (cluster profiles from the bundle), then the engineering sections:
``overview`` (run details: run id, as-of, scores file), ``data`` (training rows, customers,
products and the cleaning counts of the manifest), ``model`` (the chosen purchase model's
parameters (BG/NBD, MBG/NBD or Pareto/NBD: manifest ``params.purchase_model``) and how it was
chosen, Gamma-Gamma, how clv_12m is computed, diagnostics and warnings, clustering, recommender)
and ``validation`` (when an evaluate JSON is given: the same figures as ``rebuy evaluate``: verdict
and headline, every purchase-model candidate's holdout figures, the tracking curve, buy-again AUC
beside the recency and frequency baselines, P(alive) and p_purchase_90d calibration, spend-interval
coverage beside one interval for everyone, CLV capture beside past spend; and the recommender
metrics vs baselines; older evaluation JSONs show what they have; without one, the bundle's
training-time holdout choice of the purchase model and the sentence saying how to get the rest:
``rebuy evaluate ... --out evaluation.json``, then ``rebuy report --evaluation evaluation.json``).

Which bundle: the one that produced the scores (their ``model_run_id``) when it is still in
``models_dir``, else ``models_dir/latest`` (the page says so). It is loaded with
:func:`rebuy.bundle.load_bundle`, so every checksum is verified first.

Send lists: ``build_report(exports_dir=DIR)`` reads ``DIR/exports_manifest.json`` written by
:func:`rebuy.exports.write_exports` (``rebuy score --exports DIR``); without ``exports_dir`` the
manifest is looked for beside the scores file, then in ``exports/`` beside it. "What to do now"
names each ``<offer_type>_<channel>.csv`` and warns when the manifest belongs to other scores
(another ``scored_at``); without a manifest it names the files ``rebuy score --exports`` would write.

Segment movement: each report keeps a snapshot of the scores in
``models_dir/segment_history/segments_<scored-at>_<model-run-id>.parquet`` (columns
``customer_id``, ``segment`` and, when the scores have it, ``first_purchase`` as a day;
``scored-at`` is the scores' ``scored_at`` as ``YYYYmmddTHHMMSSffffff``, falling back to the scores
file's modification time). The previous run is the newest snapshot scored strictly before the
current scores *of the same data set*, so re-running the report on the same scores gives the same
page. Same data set = the data fingerprint matches: at least half of the snapshot's customer ids
are in the current scores and at least 90% of those have the same first-purchase day (a strict
hash of all pairs would call a shop another one after one refunded first order; ids alone would
match two shops numbering customers alike). When earlier snapshots exist but none matches, the
page says "Previous run is another shop/data set: no movement shown". Snapshots without
``first_purchase`` (older reports) are compared by ids alone. The newest :data:`HISTORY_KEEP`
snapshots are kept. The first report says "no previous run".

Money: the shop's currency (``build_report(currency=)``, else the bundle config's ``currency``):
GBP -> £, EUR -> €, USD -> $, another ISO code as "CHF 12.00"; None = plain numbers. Money has 2
decimals and thousands separators, probabilities 2 decimals, shares are per cent; offer types,
channels and groups are shown in words (:func:`rebuy.plots.offer_type_label`,
:func:`rebuy.plots.channel_label`). Time units are the bundle config's (``weeks`` or ``days``).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import html
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import rebuy
from rebuy.errors import OutputError, PlotInputError, ReportError
from rebuy.offers.names import RULE_NAMES
from rebuy.outputs import atomic_write_bytes, write_table
from rebuy.schema import column

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from rebuy.config import Config

logger = logging.getLogger(__name__)

__all__ = ["ReportError", "build_report", "SECTIONS", "HISTORY_DIR", "HISTORY_KEEP"]

SECTIONS = (
    ("what_to_do", "What to do now"),
    ("what_worked", "What worked"),
    ("kpis", "Retention KPIs"),
    ("segments", "Segments"),
    ("movement", "Segment movement since the previous run"),
    ("clv", "Customer lifetime value"),
    ("offers", "All offer decisions and budget"),
    ("clusters", "Cluster profiles"),
    ("overview", "Run details"),
    ("data", "Data summary and cleaning"),
    ("model", "Model parameters and diagnostics"),
    ("validation", "Model validation"),
)
"""(id, heading) of every section, in page order."""

HISTORY_DIR = "segment_history"
"""Sub-directory of ``models_dir`` holding one segment snapshot per reported scores table."""
HISTORY_KEEP = 30
"""Segment snapshots kept (newest first); older ones are deleted when a report is written."""

SCORES_COLUMNS = tuple(column(name).name for name in (
    "customer_id", "segment", "cluster", "cluster_label", "p_alive", "clv_12m", "net_ltv", "churn_risk",
    "offer_type", "offer_value", "channel", "discount_cost", "group", "deliver", "first_purchase", "model_run_id",
    "scored_at",
))
"""Score-table columns the report reads (``customer_id`` and ``segment`` are required); each must be
a column of ``rebuy.schema`` (a KeyError at import otherwise)."""
_NUMERIC_COLUMNS = tuple(c for c in SCORES_COLUMNS if column(c).kind == "float")

_NEW = "(new customer)"
_GONE = "(not in these scores)"
_STAMP_RE = re.compile(r"^segments_(\d{8}T\d{12})_(.*)\.parquet$")


# --------------------------------------------------------------------------------------------------
# HTML building blocks (every piece of text goes through html.escape)
# --------------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


_CURRENCY: contextvars.ContextVar[str | None] = contextvars.ContextVar("rebuy_report_currency", default=None)
"""The shop's ISO currency code while a report is built (``Config.currency`` or ``build_report(currency=)``)."""


def _money(value: Any, signed: bool = False) -> str:
    """Money with the shop's currency sign, 2 decimals and thousands separators ("£1,234.50")."""
    from rebuy.plots import format_money

    return format_money(value, _CURRENCY.get(), signed=signed)


def _money_label(text: str) -> str:
    """A label naming "(currency)": the currency's sign when one is configured ("Revenue (£)")."""
    from rebuy.plots import currency_symbol

    symbol = currency_symbol(_CURRENCY.get())
    return text if symbol is None else text.replace("(currency)", f"({symbol})")


def _fmt(value: Any, kind: str = "auto") -> str:
    """Human formatting: thousands separators, money with the shop's currency and 2 decimals
    (``money``), probabilities with 2 decimals (``prob``), shares as per cent (``pct``); '-' for None."""
    if kind == "money":
        return _money(value)
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not np.isfinite(v):
            return "-"
        if kind == "pct":
            return f"{100 * v:.1f}%"
        if kind == "prob":
            return f"{v:.2f}"
        if kind == "int":
            return f"{round(v):,}"
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:,.2f}"
        return f"{v:.4g}"
    return str(value)


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    table_id: str | None = None,
    numeric: Sequence[int] = (),
    cell_attrs: Callable[[int, int], str] | None = None,
) -> str:
    """An HTML table; values are formatted with :func:`_fmt` unless already strings."""
    tid = f' id="{_e(table_id)}"' if table_id else ""
    out = [f"<table{tid}><thead><tr>"]
    out += [f"<th>{_e(_money_label(h))}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        out.append("<tr>")
        for j, v in enumerate(row):
            cls = ' class="num"' if j in numeric else ""
            extra = cell_attrs(i, j) if cell_attrs else ""
            out.append(f"<td{cls}{extra}>{_e(v if isinstance(v, str) else _fmt(v))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _kv(rows: Sequence[tuple[str, Any]], table_id: str | None = None) -> str:
    return _table(["", "value"], [(_money_label(k), v) for k, v in rows], table_id=table_id, numeric=(1,))


def _p(text: str, cls: str | None = None) -> str:
    c = f' class="{_e(cls)}"' if cls else ""
    return f"<p{c}>{_e(text)}</p>"


def _note(text: str) -> str:
    return _p(text, "note")


def _img(fig: Figure, alt: str, dpi: int = 90) -> str:
    from rebuy.plots import figure_to_png_base64

    data = figure_to_png_base64(fig, dpi=dpi)
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"><figcaption>{_e(alt)}</figcaption></figure>'


def _h3(text: str) -> str:
    return f"<h3>{_e(text)}</h3>"


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:16px 24px 48px}
header{background:#0b3d91;color:#fff;padding:18px 24px}
header h1{margin:0 0 4px;font-size:1.6em}
header p{margin:0;opacity:.9}
nav{background:#fff;border-bottom:1px solid #d0d7de;padding:8px 24px;font-size:.9em}
nav a{margin-right:14px;color:#0b3d91;text-decoration:none}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 20px;margin:18px 0;overflow-x:auto}
h2{margin-top:6px;border-bottom:1px solid #eaeef2;padding-bottom:4px}
h3{margin-bottom:6px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:10px 0}
figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-size:.85em;color:#57606a}
.note{color:#57606a;font-style:italic}
.warn{color:#9a6700;background:#fff8c5;padding:4px 8px;border-radius:4px}
.section-error{color:#a40e26;background:#ffebe9;padding:4px 8px;border-radius:4px}
.kpi-grid{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}
.kpi{border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;min-width:150px}
.kpi b{display:block;font-size:1.3em}
.kpi span{font-size:.8em;color:#57606a}
footer{color:#57606a;font-size:.8em;text-align:center;padding:12px}
"""


def _currency_sentence() -> str:
    from rebuy.plots import currency_symbol

    code = _CURRENCY.get()
    if code is None:
        return "Money in the transactions' currency (set currency in the config to show its sign)."
    symbol = currency_symbol(code)
    return f"Money in {code}" + (f" ({symbol})." if symbol != code else ".")


def _page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{_e(sid)}">{_e(head)}</a>' for sid, head, _ in sections)
    body = "".join(
        f'<section id="{_e(sid)}"><h2>{_e(head)}</h2>{content}</section>' for sid, head, content in sections
    )
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main>"
        f"<footer>Generated {_e(now)} by rebuy {_e(rebuy.__version__)}. {_e(_currency_sentence())}"
        "</footer></body></html>\n"
    )


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


def _read_scores(path: Path) -> pd.DataFrame:
    """The score columns the report uses, as a plain frame (customer_id a string column)."""
    from rebuy.outputs import read_table_for_lookup, table_format

    if not path.is_file():
        raise ReportError(f"{path}: scores file not found")
    try:
        is_parquet = table_format(path) == "parquet"
    except OutputError:
        is_parquet = False
    try:
        if is_parquet:
            import pyarrow.parquet as pq

            have = set(pq.read_schema(path).names)
            df = pd.read_parquet(path, columns=[c for c in SCORES_COLUMNS if c in have])
        else:
            df = read_table_for_lookup(path).reset_index()
    except ReportError:
        raise
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read the scores table ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("customer_id", "segment") if c not in df.columns]
    if missing:
        raise ReportError(f"{path}: scores table lacks column(s) {missing}")
    if len(df) == 0:
        raise ReportError(f"{path}: scores table has no rows")
    df = df[[c for c in SCORES_COLUMNS if c in df.columns]].copy()
    df["customer_id"] = df["customer_id"].astype("string")
    df["segment"] = df["segment"].astype("string").fillna("(none)")
    if "deliver" in df.columns and not pd.api.types.is_bool_dtype(df["deliver"]):
        df["deliver"] = df["deliver"].astype("string").str.strip().str.lower().isin(["true", "1", "yes"])
    for col in _NUMERIC_COLUMNS:
        if col in df.columns:
            v = pd.to_numeric(df[col], errors="coerce").astype("float64")
            if not np.isfinite(v.to_numpy()).all():
                raise ReportError(f"{path}: column {col!r} has missing or non-numeric values")
            df[col] = v
    return df


def _scored_at(scores: pd.DataFrame, path: Path) -> pd.Timestamp:
    """When the scores were computed (UTC, naive): their ``scored_at``, else the file's mtime."""
    if "scored_at" in scores.columns:
        ts = pd.to_datetime(scores["scored_at"], errors="coerce")
        if ts.notna().any():
            value = pd.Timestamp(ts.max())
            return value.tz_convert(None) if value.tzinfo is not None else value
    return pd.Timestamp(dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None))


def _scores_run_id(scores: pd.DataFrame) -> str | None:
    if "model_run_id" not in scores.columns:
        return None
    ids = scores["model_run_id"].dropna().astype(str)
    return str(ids.mode().iloc[0]) if len(ids) else None


def _load_bundle_for(models_dir: Path, run_id: str | None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(artefacts, manifest, note): the bundle that made the scores when present, else latest."""
    from rebuy.bundle import MANIFEST_NAME, load_bundle, read_manifest, resolve_bundle

    note = ""
    if run_id and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", run_id) and (models_dir / run_id / MANIFEST_NAME).is_file():
        bundle = models_dir / run_id
    else:
        bundle = resolve_bundle(models_dir)
        if run_id and bundle.name != run_id:
            note = (
                f"The scores were made by model run {run_id}, which is no longer in {models_dir}; "
                f"model details below are from the latest bundle {bundle.name}."
            )
    names = [n for n in ("cluster_profiles",) if n in read_manifest(bundle).get("artefacts", {})]
    artefacts, manifest = load_bundle(bundle, names=names)
    return artefacts, manifest, note


def _config(manifest: Mapping[str, Any]) -> tuple[Config, str]:
    from rebuy.config import Config

    try:
        return Config.model_validate(manifest.get("config", {})), ""
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        return Config(), f"The bundle's config does not validate with this rebuy ({first}); defaults are used."


def _read_json_object(source: str | os.PathLike[str] | Mapping[str, Any], what: str) -> dict[str, Any]:
    """A JSON object from a file (or a dict as is); ReportError naming the file otherwise."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: {what} not found") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read the {what} ({exc})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: {what} must be an object")
    return data


def _read_evaluation(evaluation: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    data = _read_json_object(evaluation, "evaluation JSON")
    # accept the bare outputs of evaluate_value_models / evaluate_recommender too
    if "tracking" in data and "value_models" not in data:
        data = {"value_models": data}
    elif "modes" in data and "recommender" not in data:
        data = {"recommender": data}
    return data


def _read_uplift(uplift: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """The ``rebuy measure`` JSON (or its dict); it must have a ``by_offer`` list."""
    data = _read_json_object(uplift, "uplift JSON")
    if not isinstance(data.get("by_offer"), list):
        name = "uplift" if isinstance(uplift, Mapping) else str(uplift)
        raise ReportError(f"{name}: uplift JSON has no 'by_offer' list (is it the output of rebuy measure?)")
    return data


def _read_offer_log(offer_log: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """The offer log (Parquet file or dataset directory, DuckDB table ``offer_log``, CSV, or a
    DataFrame), read by :func:`rebuy.measure.log.read_offer_log` (``DataError`` naming the source)."""
    from rebuy.measure.log import read_offer_log

    return read_offer_log(offer_log if isinstance(offer_log, pd.DataFrame) else Path(offer_log))


# --------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------

_CLEANING_LABELS = {
    "rows_in": "Lines read",
    "missing_customer": "Dropped: no customer id",
    "duplicates": "Dropped: exact duplicates",
    "future_dated": "Dropped: dated after today (no as-of given)",
    "absurd_value": "Quarantined: absurd line value",
    "after_as_of": "Dropped: after the as-of date",
    "zero_quantity": "Dropped: zero quantity",
    "non_positive_price": "Dropped: price <= 0",
    "returns": "Return / cancellation lines",
    "returns_cancel_prefix": "  of which cancel-prefixed invoices",
    "returns_matched": "  of which netted against a purchase",
    "returns_unmatched": "  of which with no matching purchase",
    "return_value": "Value of returns (currency)",
    "return_value_netted": "  netted from purchases (currency)",
    "return_value_unmatched": "  unmatched (currency)",
    "lines_fully_refunded": "Purchase lines fully refunded",
    "rows_out": "Clean purchase lines",
    "customers": "Customers",
    "orders": "Orders",
    "products": "Products",
    "first_timestamp": "First purchase",
    "last_timestamp": "Last purchase",
    "as_of": "As-of cut",
    "seconds": "Cleaning time (s)",
}


# ---- what to do now (the first screen) -----------------------------------------------------------

_NO_EXPORTS = ("Not written yet: rebuy score --exports DIR writes one CSV per offer type and channel (then "
               "rebuy report --exports DIR names them here).")


def _exports_manifest(ctx: _Context) -> tuple[dict[str, Any] | None, Path | None, str]:
    """(manifest, its directory, note) of the send lists: ``ctx.exports_dir`` when given, else an
    ``exports_manifest.json`` beside the scores or in ``exports/`` beside them; (None, None, note)
    without one. A manifest of another scoring run is named in the note."""
    from rebuy.exports import MANIFEST_NAME, read_exports_manifest

    if ctx.exports_dir is not None:
        candidates = [ctx.exports_dir]
    else:
        candidates = [ctx.scores_path.parent, ctx.scores_path.parent / "exports"]
    for folder in candidates:
        manifest = read_exports_manifest(folder)
        if manifest is None:
            continue
        note = ""
        scored = manifest.get("scored_at")
        if scored and pd.Timestamp(scored) != ctx.scored_at.floor("s") and pd.Timestamp(scored) != ctx.scored_at:
            note = (f"The send lists in {folder} were written for scores of {scored}, not these "
                    f"({ctx.scored_at:%Y-%m-%d %H:%M:%S}): run rebuy score --exports {folder} again before sending.")
        return manifest, folder, note
    where = ctx.exports_dir if ctx.exports_dir is not None else ctx.scores_path.parent
    note = "" if ctx.exports_dir is None else f"No {MANIFEST_NAME} in {where}. "
    return None, None, note + _NO_EXPORTS


def _measured_margin(uplift: Mapping[str, Any] | None) -> dict[str, tuple[float, tuple[float, float] | None]]:
    """offer type -> (incremental margin per treated customer, its 95% interval) where measured."""
    out: dict[str, tuple[float, tuple[float, float] | None]] = {}
    for r in (uplift or {}).get("by_offer") or []:
        if isinstance(r, Mapping) and _finite(r.get("incremental_margin_per_customer")):
            out[str(r.get("offer_type"))] = (float(r["incremental_margin_per_customer"]),
                                             _ci(r.get("incremental_margin_ci95")))
    return out


def _to_do_plan(s: pd.DataFrame, uplift: Mapping[str, Any] | None) -> pd.DataFrame:
    """One row per offer type x channel of the customers to contact: ``offer_type``, ``channel``,
    ``customers``, ``discount_cost`` (currency), ``margin``, ``margin_lo``, ``margin_hi`` (expected
    incremental margin, currency: per treated customer x customers; NaN where not measured)."""
    from rebuy.exports import customers_to_contact

    rows = customers_to_contact(s)
    cost = rows["discount_cost"] if "discount_cost" in rows.columns else pd.Series(0.0, index=rows.index)
    plan = (pd.DataFrame({"offer_type": rows["offer_type"].astype(str), "channel": rows["channel"].astype(str),
                          "cost": cost.astype("float64")})
            .groupby(["offer_type", "channel"], sort=True)
            .agg(customers=("cost", "size"), discount_cost=("cost", "sum")).reset_index())
    measured = _measured_margin(uplift)
    per = plan["offer_type"].map(lambda t: measured.get(t, (np.nan, None)))
    n = plan["customers"].to_numpy(dtype="float64")
    plan["margin"] = [m * k for (m, _), k in zip(per, n, strict=True)]
    plan["margin_lo"] = [ci[0] * k if ci else np.nan for (_, ci), k in zip(per, n, strict=True)]
    plan["margin_hi"] = [ci[1] * k if ci else np.nan for (_, ci), k in zip(per, n, strict=True)]
    return plan.sort_values(["customers", "offer_type", "channel"], ascending=[False, True, True], kind="stable")


def _file_cell(offer_type: str, channel: str, manifest: Mapping[str, Any] | None, folder: Path | None) -> str:
    from rebuy.exports import export_name

    name = export_name(offer_type, channel)
    if manifest is None or folder is None:
        return f"{name} (not written yet)"
    entry = (manifest.get("files") or {}).get(name)
    return name if isinstance(entry, Mapping) else f"{name} (not written)"


def _to_do_rows(plan: pd.DataFrame, manifest: Mapping[str, Any] | None, folder: Path | None) -> list[list[Any]]:
    from rebuy.plots import channel_label, offer_type_label

    rows = []
    for r in plan.itertuples():
        measured = bool(np.isfinite(r.margin))
        rows.append([offer_type_label(r.offer_type), channel_label(r.channel), int(r.customers),
                     _money(r.discount_cost), _money(r.margin, signed=True) if measured else "not measured yet",
                     f"{_money(r.margin_lo, signed=True)} to {_money(r.margin_hi, signed=True)}"
                     if measured and np.isfinite(r.margin_lo) else "-",
                     _file_cell(str(r.offer_type), str(r.channel), manifest, folder)])
    return rows


def _not_sent_notes(s: pd.DataFrame) -> list[str]:
    """Sentences on who gets nothing sent although they have an offer: control, no channel."""
    if "offer_type" not in s.columns:
        return []
    offer = s["offer_type"].astype(str) != "none"
    group = s["group"].astype(str) if "group" in s.columns else pd.Series("treatment", index=s.index)
    channel = s["channel"].astype(str) if "channel" in s.columns else pd.Series("none", index=s.index)
    n_control = int((offer & (group == "control")).sum())
    n_no_channel = int((offer & (group != "control") & (channel == "none")).sum())
    out = []
    if n_control:
        out.append(f"{n_control:,} customers with an offer are held out as the control group (not contacted), so "
                   "the offers can be measured.")
    if n_no_channel:
        out.append(f"{n_no_channel:,} customers have an offer but no consented channel: nothing is sent to them "
                   "(give rebuy score a customers table with consent columns).")
    return out


def _section_what_to_do(ctx: _Context) -> str:
    """Per offer type and channel: customers to contact, discount cost, expected incremental margin
    (measured uplift) and the file to send."""
    s = ctx.scores
    if "offer_type" not in s.columns or "channel" not in s.columns:
        return _p("These scores have no offer columns, so there is nothing to send.")
    plan = _to_do_plan(s, ctx.uplift)
    manifest, folder, note = _exports_manifest(ctx)
    notes = "".join(_p(t) for t in _not_sent_notes(s))
    if plan.empty:
        return _p("Nobody to contact in this run.", "warn") + notes
    measured = plan["margin"].notna()
    tiles = [(f"{int(plan['customers'].sum()):,}", "customers to contact"),
             (_money(float(plan["discount_cost"].sum())), "expected discount cost"),
             (_money(float(plan.loc[measured, "margin"].sum()), signed=True) if measured.any() else "not measured yet",
              "expected incremental margin" + (" (measured offers)" if measured.any() and not measured.all() else ""))]
    out = '<div class="kpi-grid">' + "".join(
        f'<div class="kpi"><b>{_e(v)}</b><span>{_e(label)}</span></div>' for v, label in tiles) + "</div>"
    out += _table(["Offer", "Channel", "Customers", "Expected discount cost", "Expected incremental margin",
                   "Margin 95% interval", "File to send"], _to_do_rows(plan, manifest, folder),
                  table_id="what-to-do", numeric=(2, 3, 4, 5))
    if folder is not None:
        out += _p(f"The files are in {folder} (written by rebuy score --exports), one CSV per offer and channel: "
                  "customer id, channel, offer, value, products by name and the reason.")
    if note:
        out += _p(note, "warn" if manifest is not None else "note")
    out += _note("Customers: treated customers with a consented channel (control customers are not contacted). "
                 "Expected incremental margin = the measured incremental margin per treated customer (What worked) "
                 "x customers; 'not measured yet' until rebuy measure has results for the offer type.")
    return out + notes


def _section_overview(ctx: _Context) -> str:
    m = ctx.manifest
    s = ctx.scores
    rows: list[tuple[str, Any]] = [
        ("Model run id", str(m.get("run_id", "-"))),
        ("Model trained at", str(m.get("created_at", "-"))),
        ("Model as-of date", str(m.get("as_of", "-"))),
        ("Scores file", str(ctx.scores_path)),
        ("Scored at (UTC)", ctx.scored_at.strftime("%Y-%m-%d %H:%M:%S")),
        ("Customers scored", int(len(s))),
    ]
    if "p_alive" in s.columns:
        rows.append(("Mean P(alive)", _fmt(float(s["p_alive"].mean()), "prob")))
    if "clv_12m" in s.columns:
        rows.append(("Total predicted 12-month CLV (currency)", _fmt(float(s["clv_12m"].sum()), "money")))
    if "offer_type" in s.columns:
        n_offer = int((s["offer_type"].astype(str) != "none").sum())
        rows.append(("Customers with an offer or reminder", n_offer))
    if "discount_cost" in s.columns:
        rows.append(("Expected discount cost (currency)", _fmt(float(s["discount_cost"].sum()), "money")))
    out = ""
    if ctx.bundle_note:
        out += _p(ctx.bundle_note, "warn")
    if ctx.config_note:
        out += _p(ctx.config_note, "warn")
    return out + _kv(rows, "overview-table")


# ---- what worked (measured uplift of the offers) -------------------------------------------------

_HOW_TO_MEASURE = (
    "No uplift measurement given. To see which offers worked, measure the treated against the control "
    "customers once their window has passed: rebuy measure --offers OFFER_LOG --transactions TRANSACTIONS "
    "--out uplift.json, then rebuy report --uplift uplift.json (add --offers OFFER_LOG for the KPIs by campaign)."
)
_UPLIFT_HEADERS = (
    "Offer type", "Treated", "Control", "Response treated", "Response control", "Uplift (points)",
    "Uplift 95% CI (points)", "Incremental margin per treated customer (currency)", "Margin 95% CI", "Verdict",
    "Interval width vs plain difference in means",
)


def _finite(value: Any) -> bool:
    """A real number (not bool, not NaN/inf)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and bool(
        np.isfinite(float(value)))


def _points(share: Any) -> str:
    """A difference of shares in percentage points, signed ("+3.1"); '-' when missing."""
    return f"{100 * float(share):+.1f}" if _finite(share) else "-"


def _ci(ci: Any) -> tuple[float, float] | None:
    """A JSON interval ``[lo, hi]`` as floats; None when missing or not finite."""
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2 or not all(_finite(v) for v in ci):
        return None
    return float(ci[0]), float(ci[1])


def _interval(ci: Any, fmt: Callable[[Any], str]) -> str:
    """A 95% interval ``[lo, hi]`` as "lo to hi"; '-' when missing."""
    bounds = _ci(ci)
    return "-" if bounds is None else f"{fmt(bounds[0])} to {fmt(bounds[1])}"


def _money_signed(value: Any) -> str:
    return _money(value, signed=True)


def _uplift_rows(uplift: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``by_offer`` rows, then ``overall`` when present."""
    rows = [r for r in uplift.get("by_offer") or [] if isinstance(r, Mapping)]
    overall = uplift.get("overall")
    return rows + ([{"offer_type": "overall", **overall}] if isinstance(overall, Mapping) else [])


def _uplift_intro(uplift: Mapping[str, Any]) -> str:
    """The measurement window, decisions measured and pending, and the variance reduction used."""
    text = (f"Response = a purchase within {uplift.get('window_days', '?')} days of the decision, as of "
            f"{uplift.get('as_of', '?')}: {_fmt(uplift.get('decisions_measured'))} of "
            f"{_fmt(uplift.get('decisions_total'))} decisions measured, {_fmt(uplift.get('decisions_pending'))} "
            f"still inside their window. Uplift = treated minus control response rate; intervals are 95%.")
    vr = uplift.get("variance_reduction")
    if isinstance(vr, Mapping) and vr.get("method"):
        covariates = ", ".join(str(c) for c in vr.get("covariates") or []) or "no covariates"
        text += (f" Variance reduction: {vr['method']} ({covariates}); the median interval is "
                 f"{_fmt(vr.get('median_ci_width_ratio'), 'pct')} as wide as the plain difference in means.")
    if _finite(uplift.get("margin")):
        text += f" Margin = revenue x {_fmt(float(uplift['margin']), 'pct')}."
    return _p(text)


def _uplift_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One row per offer type (and overall): group sizes, response rates, uplift, margin, verdict."""
    from rebuy.plots import offer_type_label

    body = [[offer_type_label(r.get("offer_type", "?")), r.get("treatment"), r.get("control"),
             _fmt(r.get("response_treatment"), "pct"), _fmt(r.get("response_control"), "pct"),
             _points(r.get("uplift")), _interval(r.get("uplift_ci95"), _points),
             _money_signed(r.get("incremental_margin_per_customer")),
             _interval(r.get("incremental_margin_ci95"), _money_signed), str(r.get("verdict") or "-"),
             _fmt(r.get("ci_width_ratio"), "pct")] for r in rows]
    out = _table(_UPLIFT_HEADERS, body, table_id="uplift-by-offer", numeric=range(1, 9))
    notes = [f"{offer_type_label(r.get('offer_type', '?'))}: {r['note']}" for r in rows if r.get("note")]
    return out + "".join(_note(n) for n in notes)


def _uplift_figure(uplift: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    from rebuy import plots

    try:
        fig = plots.plot_uplift(rows, window_days=uplift.get("window_days"))
    except PlotInputError:
        return _note("No offer type has a measured uplift yet.")
    return _img(fig, "Uplift per offer type with its 95% interval (percentage points)")


def _derived_evidence(uplift: Mapping[str, Any], priority: Sequence[str]) -> dict[str, Any]:
    """What ``rebuy score --uplift`` does with this JSON (:func:`rebuy.offers.evidence.evidence_from_uplift`)."""
    from rebuy.offers.evidence import evidence_from_uplift

    return evidence_from_uplift(uplift, priority).report()


def _change_sentences(uplift: Mapping[str, Any] | None, evidence: Mapping[str, Any] | None,
                      priority: Sequence[str] = RULE_NAMES) -> list[str]:
    """Sentences on what the next scoring run changes because of the measurement."""
    from rebuy.plots import offer_type_label

    ev = dict(evidence) if evidence is not None else _derived_evidence(uplift or {}, priority)
    by_type = {str(r.get("offer_type")): r for r in (uplift or {}).get("by_offer") or [] if isinstance(r, Mapping)}
    out = []
    for t in ev.get("switched_off") or []:
        r = by_type.get(str(t), {})
        out.append(f"{offer_type_label(t)} is switched off: it was harmful (uplift {_points(r.get('uplift'))} points, "
                   f"95% CI {_interval(r.get('uplift_ci95'), _points)}).")
    for t in ev.get("kept_despite_harm") or []:
        r = by_type.get(str(t), {})
        out.append(f"{offer_type_label(t)} stays on: its harm (uplift {_points(r.get('uplift'))} points) is not "
                   "significant once the offer types tested together are accounted for (Holm), and switching off "
                   "cannot be undone by later measurements.")
    promoted = [offer_type_label(t) for t in ev.get("promoted") or []]
    if promoted:
        out.append(f"{', '.join(promoted)} move{'s' if len(promoted) == 1 else ''} ahead in the priority (incremental "
                   "margin interval above 0), ordered by incremental margin per treated customer.")
    if ev.get("priority") and (ev.get("switched_off") or ev.get("promoted")):
        out.append(f"Priority: {', '.join(offer_type_label(t) for t in ev['priority'])}.")
    return out or ["Nothing changes: no offer type was shown harmful or clearly profitable, so the configured "
                   "priority stays."]


def _changes_html(uplift: Mapping[str, Any] | None, evidence: Mapping[str, Any] | None,
                  priority: Sequence[str] = RULE_NAMES) -> str:
    src = (f"as recorded by the scoring run (evidence from {evidence.get('source', '?')})" if evidence is not None
           else "when it is given to rebuy score --uplift")
    items = "".join(f"<li>{_e(s)}</li>" for s in _change_sentences(uplift, evidence, priority))
    return _h3("What the next run changes") + _p(f"Because of this measurement, {src}:") + (
        f'<ul id="what-worked-changes">{items}</ul>')


_CAMPAIGN_FIELDS = (("customers", "Customers", "int"), ("repeat_rate", "Repeat rate", "pct"),
                    ("retention", "Retention", "pct"), ("revenue_per_customer", "Revenue per customer", "money"))
_GROUP_WORDS = {"treatment": "treated", "control": "control"}


def _campaign_rows(kpi: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows) of the campaign KPI table: one row per offer type, treated beside control."""
    from rebuy.plots import offer_type_label

    cols = [(c, g) for c, _, _ in _CAMPAIGN_FIELDS for g in _GROUP_WORDS]
    wide = kpi.pivot(index="offer_type", columns="group").reindex(columns=pd.MultiIndex.from_tuples(cols))
    kinds = [kind for _, _, kind in _CAMPAIGN_FIELDS for _ in _GROUP_WORDS]
    rows = [[offer_type_label(t), *[_fmt(v, k) for v, k in zip(values, kinds, strict=True)]]
            for t, values in zip(wide.index, wide.to_numpy(dtype=object), strict=True)]
    headers = ["Offer type"] + [f"{name} {word}" for _, name, _ in _CAMPAIGN_FIELDS for word in _GROUP_WORDS.values()]
    return headers, rows


def _campaign_html(ctx: _Context) -> str:
    """Treated vs control repeat rate, retention and revenue per offer type (the offer log's KPIs)."""
    if ctx.offer_log is None:
        return ""
    if ctx.transactions is None:
        return _note("An offer log was given but no transactions (rebuy report --transactions PATH), so no KPIs "
                     "by campaign.")
    from rebuy.campaign_kpis import campaign_kpis

    u = ctx.uplift or {}
    window = int(u.get("window_days") or 30)
    kpi = campaign_kpis(ctx.offer_log, ctx.transactions, window_days=window, as_of=u.get("as_of"))
    out = _h3("KPIs by campaign (treated vs control)")
    if kpi.empty:
        return out + _note(f"No decision in the offer log is {window} days old yet.")
    headers, rows = _campaign_rows(kpi)
    out += _table(headers, rows, table_id="campaign-kpis", numeric=range(1, 9))
    return out + _note(f"Each customer counted once per offer type and group, at their first decision at least "
                       f"{window} days old. Repeat rate: bought within {window} days. Retention: of those who bought "
                       "in the 90 days before the decision, the share who bought again within the window. Revenue "
                       "per customer in the window, currency.")


def _section_what_worked(ctx: _Context) -> str:
    """Measured uplift per offer type, what the next run changes, KPIs by campaign; or how to measure."""
    if ctx.uplift is None:
        out = _p(_HOW_TO_MEASURE)
        return out + (_changes_html(None, ctx.evidence) if ctx.evidence is not None else "") + _campaign_html(ctx)
    rows = _uplift_rows(ctx.uplift)
    return (_uplift_intro(ctx.uplift) + _uplift_table(rows) + _uplift_figure(ctx.uplift, rows)
            + _changes_html(ctx.uplift, ctx.evidence, ctx.config.offers.priority) + _campaign_html(ctx))


def _section_data(ctx: _Context) -> str:
    td = ctx.manifest.get("training_data", {}) or {}
    rows = [
        ("Source", str(ctx.manifest.get("source", "-"))),
        ("Purchase lines (after cleaning)", td.get("rows")),
        ("Customers", td.get("customers")),
        ("Products", td.get("products")),
        ("First transaction", str(td.get("first_timestamp", "-"))),
        ("Last transaction", str(td.get("last_timestamp", "-"))),
    ]
    out = _h3("Training data") + _kv(rows, "training-data")
    cleaning = td.get("cleaning")
    if isinstance(cleaning, Mapping) and cleaning:
        crow = []
        keys = [k for k in _CLEANING_LABELS if k in cleaning] + [k for k in cleaning if k not in _CLEANING_LABELS]
        for key in keys:
            value = cleaning[key]
            if key == "source":
                continue
            kind = "money" if key.startswith("return_value") else "auto"
            crow.append((_CLEANING_LABELS.get(key, key.replace("_", " ")), _fmt(value, kind) if value is not None else "-"))
        out += _h3("Cleaning counts") + _kv(crow, "cleaning")
    else:
        out += _note("The manifest has no cleaning report.")
    return out


_TIME_SCALE_PARAMS = ("alpha", "beta")
"""Purchase-model parameters measured in the model's time unit (BG/NBD's alpha, Pareto/NBD's beta)."""


def _purchase_model_label(name: Any) -> str:
    """The display name of a purchase model's config name ("bgnbd" -> "BG/NBD"); the name itself
    for a model this rebuy does not know."""
    from rebuy.models import PURCHASE_MODELS
    from rebuy.models.selection import RIDGE_SUFFIX, model_of_key

    cls = PURCHASE_MODELS.get(model_of_key(name))
    label = cls.DISPLAY_NAME if cls is not None and cls.DISPLAY_NAME else model_of_key(name)
    return label + (" (ridge)" if str(name).endswith(RIDGE_SUFFIX) else "")


def _model_params_rows(params: Mapping[str, Any], default_unit: str = "weeks") -> list[tuple[str, Any]]:
    """The chosen purchase model (``params.purchase_model``; "bgnbd" in manifests that predate the
    choice) and its parameters, then Gamma-Gamma's."""
    name = str(params.get("purchase_model") or "bgnbd")
    label = _purchase_model_label(name)
    unit = str(params.get("time_unit", default_unit))
    rows: list[tuple[str, Any]] = [("Purchase model", label)] if params.get(name) else []
    for k, v in (params.get(name) or {}).items():
        suffix = f" (per {unit[:-1]})" if k in _TIME_SCALE_PARAMS else ""
        rows.append((f"{label} {k}{suffix}", v))
    rows += [(f"Gamma-Gamma {k}", v) for k, v in (params.get("gamma_gamma") or {}).items()]
    return rows


def _selection_html(selection: Any, table_id: str) -> str:
    """How the purchase model was chosen: every candidate's figures on the holdout windows, the
    reason and the p_purchase_90d calibrator; empty without a selection report."""
    if not isinstance(selection, Mapping) or not selection.get("reason"):
        return ""
    chosen = selection.get("chosen_candidate", selection.get("chosen"))
    rows: list[list[Any]] = []
    for name, c in (selection.get("candidates") or {}).items():
        if not isinstance(c, Mapping):
            continue
        if "error" in c:
            rows.append([_purchase_model_label(name), f"not fitted: {c['error']}", "-", "-", "-", "-", "no"])
            continue
        rows.append([_purchase_model_label(name), c.get("log_loss"), c.get("auc_p_purchase"), c.get("auc_p_alive"),
                     _fmt(c.get("mean_decile_error"), "pct"), c.get("penalizer", "-"), "yes" if name == chosen else "no"])
    out = _p(f"Purchase model: {_purchase_model_label(chosen)}. {selection['reason']}.")
    if rows:
        out += _table(["Candidate", "Log loss (lower is better)", "AUC of P(purchase in 90 days)", "AUC of P(alive)",
                       "Mean decile error", "Penalizer", "Chosen"], rows, table_id=table_id, numeric=(1, 2, 3, 4, 5))
    cal = selection.get("calibrator")
    if isinstance(cal, Mapping):
        out += _note(f"p_purchase_90d = the chosen model's probability calibrated by {cal.get('method', '?')} scaling "
                     f"(intercept {_fmt(cal.get('intercept'))}, slope {_fmt(cal.get('slope'))}, learned on "
                     f"{_fmt(cal.get('customers'))} customer-windows).")
    return out


def _section_model(ctx: _Context) -> str:
    m = ctx.manifest
    params = m.get("params", {}) or {}
    prow = _model_params_rows(params, ctx.config.time_unit)
    out = _h3("Parameters") + (_kv(prow, "model-params") if prow else _note("The manifest has no parameters."))
    selection = _selection_html(m.get("purchase_model_selection"), "model-selection")
    if selection:
        out += _h3("How the purchase model was chosen") + selection
    diag = dict(m.get("model_diagnostics", {}) or {})
    warnings = list(diag.pop("warnings", []) or [])
    if diag:  # nested entries (the purchase model's standard errors) one row per item
        drows = [(f"{k} {kk}".replace("_", " "), vv) for k, v in diag.items()
                 for kk, vv in (v.items() if isinstance(v, Mapping) else [("", v)])]
        out += _h3("Diagnostics") + _kv([(k.strip(), v) for k, v in drows], "model-diagnostics")
    out += _h3("Warnings")
    if warnings:
        out += "<ul id=\"model-warnings\">" + "".join(f'<li class="warn">{_e(w)}</li>' for w in warnings) + "</ul>"
    else:
        out += _p("No model warnings.")
    extra = _model_other_rows(m)
    if extra:
        out += _h3("Other settings") + _kv(extra, "model-other")
    return out


def _model_other_rows(m: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Clustering, recommender, how clv_12m is computed and the CLV settings of a manifest."""
    extra: list[tuple[str, Any]] = []
    cl = m.get("clustering") or {}
    if cl:
        extra += [("Clustering", f"{cl.get('method', '?')}, {cl.get('n_clusters', '?')} clusters")]
    rec = m.get("recommender") or {}
    if rec:
        if rec.get("trained"):
            extra += [("Recommender", f"trained ({rec.get('algorithm', '?')}, {rec.get('n_products', '?')} products)")]
        else:
            extra += [("Recommender", f"not trained ({rec.get('reason', 'unknown reason')})")]
    clv_run = m.get("clv") or {}
    if clv_run.get("method"):
        reason = (clv_run.get("ranker") or {}).get("reason")
        extra += [("clv_12m computed by", clv_run["method"] + (f" ({reason})" if reason else ""))]
    clv = (m.get("config") or {}).get("clv") or {}
    if clv:
        extra += [(f"CLV {k.replace('_', ' ')}", v) for k, v in clv.items() if not isinstance(v, (dict, list))]
    return extra


_KPI_ROWS = (
    ("customers_total", "Customers ever (up to as-of)", "int"),
    ("customers_start", "Active customers at period start", "int"),
    ("customers_end", "Active customers at period end", "int"),
    ("new_customers", "New customers in the period", "int"),
    ("buyers", "Buyers in the period", "int"),
    ("orders", "Orders in the period", "int"),
    ("revenue", "Revenue (currency)", "money"),
    ("average_order_value", "Average order value (currency)", "money"),
    ("revenue_per_customer", "Revenue per buyer (currency)", "money"),
    ("purchase_frequency", "Orders per buyer", "auto"),
    ("customer_retention_rate", "Customer retention rate", "pct"),
    ("repeat_purchase_rate", "Repeat-purchase rate", "pct"),
    ("churn_rate", "Churn rate", "pct"),
    ("repeat_revenue_share", "Revenue share from repeat customers", "pct"),
    ("monthly_retention_last", "Monthly retention (last full month)", "pct"),
)
_KPI_TILES = ("buyers", "revenue", "customer_retention_rate", "repeat_purchase_rate", "churn_rate",
              "average_order_value")


_COHORTS_SHOWN = 12
_COHORT_PERIODS = 12


def _cohort_html(tx: pd.DataFrame) -> str:
    """The last :data:`_COHORTS_SHOWN` monthly cohorts: size, then the per cent buying 1..12 months
    later in the cells (shaded); partial months (the data starts or ends inside them) flagged "*"."""
    from rebuy import kpis

    counts, pct = kpis.cohort_retention(tx)
    coverage = kpis.period_coverage(tx)
    partial = coverage["partial"]
    last = coverage.index[-1]
    pct = pct.iloc[-_COHORTS_SHOWN:, : _COHORT_PERIODS + 1]
    sizes = counts.iloc[-_COHORTS_SHOWN:, 0]
    offsets = [int(c) for c in pct.columns[1:]]
    rows, flags = [], []
    for cohort, values in zip(pct.index, pct.to_numpy(dtype="float64"), strict=True):
        row: list[Any] = [f"{cohort}{' *' if partial.get(cohort, False) else ''}", int(sizes.loc[cohort])]
        flag = [False, bool(partial.get(cohort, False))]
        for k, v in zip(offsets, values[1:], strict=True):
            period = cohort + k
            if period > last:
                row.append("")
                flag.append(False)
                continue
            is_partial = bool(partial.get(period, False))
            row.append(f"{v:.0f}%{' *' if is_partial else ''}")
            flag.append(is_partial)
        rows.append(row)
        flags.append(flag)
    later = pct.iloc[:, 1:].to_numpy(dtype="float64")
    top = float(later.max()) if later.size and later.max() > 0 else 100.0

    def shade(i: int, j: int) -> str:
        cell = rows[i][j]
        attrs = ' data-partial="1"' if flags[i][j] else ""
        if j >= 2 and cell:
            attrs += f' style="background:rgba(11,61,145,{0.05 + 0.55 * later[i, j - 2] / top:.2f})"'
        return attrs

    out = _h3("Cohorts: per cent of each first-purchase month buying again, months later")
    out += _table(["Cohort (first purchase)", "Customers", *[f"+{k}" for k in offsets]], rows, table_id="cohort-table",
                  numeric=range(1, len(offsets) + 2), cell_attrs=shade)
    months = [str(m) for m in partial.index[partial.to_numpy()]]
    if months:
        out += _note(f"* partial month ({', '.join(months)}): the data starts or ends inside it, so that cohort or "
                     "cell counts only part of the month. Blank: not observed yet.")
    else:
        out += _note("Every month shown is complete in the data. Blank: not observed yet.")
    return out


_GROUP_HEADERS = ["Customers", "Repeat-purchase rate", "Revenue per customer (currency)", "Mean 12-month CLV (currency)"]


def _group_kpi_html(tx: pd.DataFrame, groups: pd.DataFrame, by: str, title: str, table_id: str,
                    clv: pd.Series | None) -> str:
    """Lifetime repeat rate, revenue and CLV per group (:func:`rebuy.kpis.channel_metrics`)."""
    from rebuy import kpis

    table = kpis.channel_metrics(tx, groups, clv=clv, by=by)
    rows = [[str(g).replace("_", " "), int(r["customers"]), _fmt(float(r["repeat_purchase_rate"]), "pct"),
             _fmt(float(r["revenue_per_customer"]), "money"),
             *([_fmt(float(r["mean_clv"]), "money")] if clv is not None else [])] for g, r in table.iterrows()]
    headers = [title, *_GROUP_HEADERS[: 3 + (clv is not None)]]
    return _h3(f"By {title.lower()}") + _table(headers, rows, table_id=table_id, numeric=range(1, len(headers)))


def _breakdowns_html(ctx: _Context, tx: pd.DataFrame) -> str:
    """KPIs by acquisition channel (customers table) and by this run's offer type (scores)."""
    from rebuy.plots import offer_type_label

    s = ctx.scores
    clv = s.set_index("customer_id")["clv_12m"] if "clv_12m" in s.columns else None
    out = ""
    cust = ctx.customers
    if cust is not None and "acquisition_channel" in cust.columns:
        out += _group_kpi_html(tx, cust[["customer_id", "acquisition_channel"]].astype({"customer_id": "string"}),
                               "acquisition_channel", "Acquisition channel", "kpis-by-channel", clv)
    else:
        out += _note("No customers table with acquisition_channel given (build_report(customers=...)), so no KPIs "
                     "by acquisition channel.")
    if "offer_type" in s.columns:
        groups = pd.DataFrame({"customer_id": s["customer_id"], "offer_type": s["offer_type"].map(offer_type_label)})
        out += _group_kpi_html(tx, groups, "offer_type", "Offer type", "kpis-by-offer", clv)
        out += _note("Lifetime figures of the customers each offer type goes to in this run (not the offer's effect: "
                     "see What worked).")
    return out


def _section_kpis(ctx: _Context) -> str:
    if ctx.transactions is None:
        return _note("No transactions given (rebuy report --transactions PATH), so no KPIs in this report.")
    from rebuy import kpis

    tx = ctx.transactions
    summary = kpis.kpi_summary(tx)
    out = _p(
        f"Period {summary['period_start']} to {summary['period_end']} (end exclusive, {summary['period_days']} days "
        f"up to as-of {summary['as_of']}); a customer is active with a purchase in the previous "
        f"{summary['active_window_days']:.0f} days."
    )
    labels = {k: (lab, kind) for k, lab, kind in _KPI_ROWS}
    tiles = "".join(
        f'<div class="kpi"><b>{_e(_fmt(summary.get(k), labels[k][1]))}</b><span>{_e(_money_label(labels[k][0]))}</span></div>'
        for k in _KPI_TILES
    )
    out += f'<div class="kpi-grid">{tiles}</div>'
    rows = []
    for key, label, kind in _KPI_ROWS:
        if key == "monthly_retention_last":
            label = f"{label} ({summary.get('monthly_retention_month', '?')})"
        rows.append((label, _fmt(summary.get(key), kind)))
    out += _kv(rows, "kpi-table")
    return out + _cohort_html(tx) + _breakdowns_html(ctx, tx)


def _section_segments(ctx: _Context) -> str:
    from rebuy import plots

    s = ctx.scores
    value_col = "clv_12m" if "clv_12m" in s.columns else None
    shown = s[["segment", value_col]].rename(columns={value_col: "12-month CLV"}) if value_col else s[["segment"]]
    out = _img(
        plots.plot_segments(shown, value_col="12-month CLV" if value_col else None, currency=_CURRENCY.get()),
        "Customers and predicted 12-month CLV per segment" if value_col else "Customers per segment",
    )
    g = s.groupby("segment", observed=True, sort=False)
    table = pd.DataFrame({"customers": g.size()})
    table["share"] = table["customers"] / len(s)
    headers = ["Segment", "Customers", "Share"]
    if "p_alive" in s.columns:
        table["p_alive"] = g["p_alive"].mean()
        headers.append("Mean P(alive)")
    if value_col:
        table["clv"] = g[value_col].sum()
        table["mean_clv"] = g[value_col].mean()
        headers += ["Total 12-month CLV", "Mean 12-month CLV"]
    table = table.sort_values("customers", ascending=False)
    rows = []
    for seg, r in table.iterrows():
        row: list[Any] = [str(seg), int(r["customers"]), _fmt(float(r["share"]), "pct")]
        if "p_alive" in table.columns:
            row.append(_fmt(float(r["p_alive"]), "prob"))
        if value_col:
            row += [_fmt(float(r["clv"]), "money"), _fmt(float(r["mean_clv"]), "money")]
        rows.append(row)
    return out + _table(headers, rows, table_id="segment-table", numeric=range(1, len(headers)))


def _section_clv(ctx: _Context) -> str:
    from rebuy import plots

    s = ctx.scores
    if "clv_12m" not in s.columns:
        return _note("The scores have no clv_12m column.")
    v = s["clv_12m"].to_numpy(dtype="float64")
    out = _img(plots.plot_clv_distribution(v, currency=_CURRENCY.get()), "Distribution of predicted 12-month CLV")
    q = np.quantile(v, [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0])
    rows = [(name, _fmt(float(x), "money")) for name, x in
            zip(["Minimum", "25th percentile", "Median", "75th percentile", "90th percentile", "99th percentile",
                 "Maximum"], q, strict=True)]
    top = np.sort(v)[::-1]
    total = float(v.sum())
    n10 = max(1, len(v) // 10)
    rows += [
        ("Mean", _fmt(float(v.mean()), "money")),
        ("Total", _fmt(total, "money")),
        ("Share of total CLV in the top 10% of customers", _fmt(float(top[:n10].sum() / total), "pct") if total > 0 else "-"),
    ]
    if "net_ltv" in s.columns:
        rows.append(("Total net lifetime value", _fmt(float(s["net_ltv"].sum()), "money")))
    return out + _kv(rows, "clv-table")


def _section_clusters(ctx: _Context) -> str:
    from rebuy import plots

    prof = ctx.artefacts.get("cluster_profiles")
    if not isinstance(prof, pd.DataFrame) or prof.empty:
        return _note("The bundle has no cluster profiles.")
    out = _img(plots.plot_cluster_profiles(prof, currency=_CURRENCY.get()), "Cluster profiles at training time (colour: relative to other clusters)")
    cols = [c for c in ("label", "size", "share", "dominant_segment", "mean_days_since_last", "mean_purchase_days",
                        "mean_total_spend", "mean_clv", "one_time_share") if c in prof.columns]
    names = {"label": "Label", "size": "Customers", "share": "Share", "dominant_segment": "Mostly",
             "mean_days_since_last": "Days since last purchase", "mean_purchase_days": "Purchase days",
             "mean_total_spend": "Total spend", "mean_clv": "12-month CLV", "one_time_share": "One-time buyers"}
    rows = []
    for idx, r in prof.iterrows():
        row: list[Any] = [str(idx)]
        for c in cols:
            val = r[c]
            if c in ("share", "one_time_share"):
                row.append(_fmt(float(val), "pct"))
            elif c in ("mean_total_spend", "mean_clv"):
                row.append(_fmt(float(val), "money"))
            elif c == "size":
                row.append(int(val))
            else:
                row.append(val if isinstance(val, str) else float(val))
        rows.append(row)
    out += _table(["Cluster"] + [names[c] for c in cols], rows, table_id="cluster-table",
                  numeric=[i + 1 for i, c in enumerate(cols) if c not in ("label", "dominant_segment")])
    if "cluster_label" in ctx.scores.columns:
        now = ctx.scores["cluster_label"].astype(str).value_counts()
        out += _h3("Customers per cluster in these scores")
        out += _table(["Cluster", "Customers"], [(str(k), int(v)) for k, v in now.items()],
                      table_id="cluster-now", numeric=(1,))
    return out


# ---- segment movement ----------------------------------------------------------------------------


def _history_files(history: Path) -> list[tuple[str, Path]]:
    if not history.is_dir():
        return []
    found = []
    for p in history.iterdir():
        match = _STAMP_RE.match(p.name)
        if match and p.is_file():
            found.append((match.group(1), p))
    return sorted(found)


_SAME_SHOP_OVERLAP = 0.5
"""Share of the previous run's customers that must be in the current scores for the same data set."""
_SAME_SHOP_AGREEMENT = 0.9
"""Share of the customers in both runs whose first-purchase day must agree for the same data set."""


def _first_purchase_day(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, errors="coerce").dt.normalize()


def _same_data_set(previous: pd.DataFrame, current: pd.DataFrame) -> tuple[bool, str]:
    """Whether a snapshot comes from the same shop as the current scores, by their data fingerprint
    (the customer ids with their first-purchase days) and, if not, why."""
    if len(previous) == 0:
        return False, "it has no customers"
    both = previous.merge(current, on="customer_id", how="inner", suffixes=("_prev", "_now"))
    overlap = len(both) / len(previous)
    if overlap < _SAME_SHOP_OVERLAP:
        return False, f"{overlap:.0%} of its customer ids are in these scores"
    if "first_purchase_prev" in both.columns and "first_purchase_now" in both.columns:
        a, b = _first_purchase_day(both["first_purchase_prev"]), _first_purchase_day(both["first_purchase_now"])
        known = a.notna() & b.notna()
        if known.any():
            agree = float((a[known] == b[known]).mean())
            if agree < _SAME_SHOP_AGREEMENT:
                return False, f"only {agree:.0%} of the customers in both have the same first-purchase day"
    return True, ""


def _snapshot_frame(ctx: _Context) -> pd.DataFrame:
    """This run's snapshot: customer_id, segment and (when the scores have it) first_purchase."""
    snap = pd.DataFrame({"customer_id": ctx.scores["customer_id"].astype("string"),
                         "segment": ctx.scores["segment"].astype("string")})
    if "first_purchase" in ctx.scores.columns:
        snap["first_purchase"] = _first_purchase_day(ctx.scores["first_purchase"]).to_numpy()
    return snap


def _previous_snapshot(files: list[tuple[str, Path]], stamp: str, current: pd.DataFrame) -> tuple[
        pd.DataFrame | None, str | None, str]:
    """(frame, description, why-not) of the newest earlier snapshot of the same data set; the first
    two None when there is none (why-not says why the newest earlier one was not used, '' without any)."""
    why_not = ""
    for st, path in reversed([(st, p) for st, p in files if st < stamp]):
        frame = pd.read_parquet(path)
        frame["customer_id"] = frame["customer_id"].astype("string")
        same, why = _same_data_set(frame, current)
        when = dt.datetime.strptime(st, "%Y%m%dT%H%M%S%f").strftime("%Y-%m-%d %H:%M:%S")
        if same:
            match = _STAMP_RE.match(path.name)
            return frame, f"scores of {when} UTC (model run {match.group(2) if match else '?'})", why_not
        why_not = why_not or f"scores of {when} UTC: {why}"
    return None, None, why_not


def _snapshot_segments(ctx: _Context) -> tuple[pd.DataFrame | None, str | None, str]:
    """Read the previous snapshot of the same data set, then save this one (atomically) and prune old ones.

    Returns (previous frame or None, description of the previous run or None, why no earlier
    snapshot was used ('' when there was none)).
    """
    history = ctx.models_dir / HISTORY_DIR
    stamp = ctx.scored_at.strftime("%Y%m%dT%H%M%S%f")
    run = re.sub(r"[^A-Za-z0-9.-]", "-", ctx.scores_run_id or "unknown")
    snapshot = _snapshot_frame(ctx)
    previous, described, why_not = _previous_snapshot(_history_files(history), stamp, snapshot)
    try:
        write_table(snapshot, history / f"segments_{stamp}_{run}.parquet")
        for _, old in _history_files(history)[:-HISTORY_KEEP]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        ctx.movement_note = f"Could not save this run's segment snapshot in {history} ({exc}); the next report cannot compare."
        logger.warning("%s", ctx.movement_note)
    return previous, described, why_not


def _section_movement(ctx: _Context) -> str:
    previous, described, why_not = _snapshot_segments(ctx)
    note = _p(ctx.movement_note, "warn") if ctx.movement_note else ""
    if previous is None and why_not:
        return note + _p(f"Previous run is another shop/data set: no movement shown ({why_not}). This run's segments "
                         "were saved, so the next report on this data shows how customers moved.")
    if previous is None:
        return note + _p(
            "No previous run: this is the first report for this models directory. This run's segments "
            "were saved, so the next report shows how customers moved."
        )
    cur = ctx.scores[["customer_id", "segment"]]
    both = previous[["customer_id", "segment"]].astype("string").merge(cur, on="customer_id", how="outer",
                                                                       suffixes=("_prev", "_now"))
    prev = both["segment_prev"].fillna(_NEW).astype(str)
    now = both["segment_now"].fillna(_GONE).astype(str)
    matrix = pd.crosstab(prev, now)
    # current segments by size, "(gone)" last; previous the same order, "(new)" last
    order = list(cur["segment"].astype(str).value_counts().index)
    cols = [c for c in order if c in matrix.columns] + sorted(c for c in matrix.columns if c not in order and c != _GONE)
    cols += [_GONE] if _GONE in matrix.columns else []
    rows_order = [r for r in order if r in matrix.index] + sorted(r for r in matrix.index if r not in order and r != _NEW)
    rows_order += [_NEW] if _NEW in matrix.index else []
    matrix = matrix.reindex(index=rows_order, columns=cols, fill_value=0)
    n_new = int((prev == _NEW).sum())
    n_gone = int((now == _GONE).sum())
    known = (prev != _NEW) & (now != _GONE)
    n_same = int((known & (prev == now)).sum())
    n_moved = int((known & (prev != now)).sum())
    out = note + _p(f"Compared with the {described}.")
    out += _kv([
        ("Customers in both runs", int(known.sum())),
        ("Same segment", n_same),
        ("Changed segment", n_moved),
        ("New customers (not in the previous run)", n_new),
        ("Customers no longer in the scores", n_gone),
    ], "movement-summary")
    flows = [
        (a, b, int(matrix.loc[a, b]))
        for a in matrix.index for b in matrix.columns
        if a != b and a != _NEW and b != _GONE and matrix.loc[a, b] > 0
    ]
    flows.sort(key=lambda t: -t[2])
    if flows:
        out += _h3("Largest moves")
        out += _table(["From", "To", "Customers"], flows[:10], table_id="movement-top", numeric=(2,))
    values = matrix.to_numpy()
    row_tot = values.sum(axis=1)

    def shade(i: int, j: int) -> str:
        if j == 0:
            return f' data-from="{_e(matrix.index[i])}"'
        v = values[i, j - 1]
        share = v / row_tot[i] if row_tot[i] else 0.0
        style = f"background:rgba(11,61,145,{0.08 + 0.6 * share:.2f})" if v else ""
        weight = ";font-weight:bold" if matrix.index[i] == matrix.columns[j - 1] else ""
        return (f' data-from="{_e(matrix.index[i])}" data-to="{_e(matrix.columns[j - 1])}"'
                f' data-count="{int(v)}" style="{style}{weight}"')

    out += _h3("Previous segment (rows) to current segment (columns), customers")
    out += _table(
        ["Previous \\ current", *map(str, matrix.columns)],
        [[str(a), *[int(x) for x in values[i]]] for i, a in enumerate(matrix.index)],
        table_id="movement-matrix",
        numeric=range(1, len(matrix.columns) + 1),
        cell_attrs=shade,
    )
    return out


# ---- validation ----------------------------------------------------------------------------------


def _calibration_figure(rows: list[Mapping[str, Any]]) -> Figure:
    from matplotlib.figure import Figure

    labels = [str(r.get("decile")).replace("one_time_buyers", "1-time\nbuyers") for r in rows]
    x = np.arange(len(rows))
    pred = np.array([r.get("mean_predicted_purchases") or 0.0 for r in rows], dtype=float)
    act = np.array([r.get("mean_actual_purchases") or 0.0 for r in rows], dtype=float)
    pa = np.array([r.get("mean_p_alive") or 0.0 for r in rows], dtype=float)
    bought = np.array([r.get("observed_share_bought") or 0.0 for r in rows], dtype=float)
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.bar(x - 0.2, act, 0.4, label="Actual", color="tab:blue")
    ax1.bar(x + 0.2, pred, 0.4, label="Predicted (purchase model)", color="tab:orange")
    ax1.set_xticks(x, labels)
    ax1.set_xlabel("P(alive) decile at calibration end (10 = most likely alive)")
    ax1.set_ylabel("Mean purchases in the holdout")
    ax1.set_title("Holdout purchases by P(alive) decile")
    ax1.legend()
    ax2.plot(x, pa, marker="o", label="Mean P(alive) (model)")
    ax2.plot(x, bought, marker="s", linestyle="--", label="Share who bought in the holdout")
    ax2.set_xticks(x, labels)
    ax2.set_ylim(0, 1.05)
    ax2.set_xlabel("P(alive) decile at calibration end")
    ax2.set_ylabel("Share of customers")
    ax2.set_title("P(alive) vs observed buying (P(alive) is an upper bound)")
    ax2.legend()
    return fig


def _section_validation(ctx: _Context) -> str:
    if ctx.evaluation is None:
        return _validation_without_evaluation(ctx)
    ev = ctx.evaluation
    out = ""
    vm = ev.get("value_models")
    if isinstance(vm, Mapping):
        out += _value_models_validation(vm)
    rec = ev.get("recommender")
    if isinstance(rec, Mapping) and isinstance(rec.get("modes"), Mapping):
        out += _recommender_validation(rec)
    if not out:
        out = _note("The evaluation JSON has neither value_models nor recommender results.")
    return out


_HOW_TO_EVALUATE = ("No evaluation given, so no holdout validation here. To get it: rebuy evaluate ... --out "
                    "evaluation.json, then rebuy report --evaluation evaluation.json.")


def _validation_without_evaluation(ctx: _Context) -> str:
    """What the bundle itself says about the models (the training-time holdout choice of the
    purchase model, the diagnostics' warnings) and how to get the full validation."""
    out = _p(_HOW_TO_EVALUATE)
    selection = _selection_html(ctx.manifest.get("purchase_model_selection"), "validation-training-selection")
    if selection:
        out += _h3("Holdout check at training time") + selection
    warnings = (ctx.manifest.get("model_diagnostics") or {}).get("warnings") or []
    if warnings:
        out += _p(f"{len(warnings)} model warning{'s' if len(warnings) != 1 else ''}: see Model parameters and "
                  "diagnostics.", "warn")
    return out


_NEW_VALIDATION_SECTIONS = ("buy_again", "p_purchase_90d_calibration", "spend_interval")
"""Sections of ``rebuy evaluate`` that older evaluation JSONs lack (the page says so)."""


def _value_models_validation(vm: Mapping[str, Any]) -> str:
    """The value-model half of the validation section, from ``evaluate_value_models``' dict: the
    same figures as ``rebuy evaluate`` (and notebook 02)."""
    from rebuy import plots

    out = _h3("Value models (calibration / holdout)")
    win = vm.get("windows") or {}
    if win:
        out += _p(f"Calibration ends {win.get('calibration_end', '?')}; holdout ends {win.get('holdout_end', '?')}.")
    head = vm.get("headline") or {}
    if vm.get("verdict"):
        out += _p(str(vm["verdict"]), "warn" if head.get("trust") and head["trust"] != "good" else None)
    if head:
        out += _kv(_headline_rows(head), "validation-headline")
    missing = [k for k in _NEW_VALIDATION_SECTIONS if k not in vm]
    if missing:
        out += _note(f"This evaluation was written by an older rebuy: it has no {', '.join(missing)} "
                     "(re-run rebuy evaluate for them).")
    selection = _selection_html((vm.get("params") or {}).get("selection"), "validation-selection")
    if selection:
        out += _h3("Purchase model choice") + selection
    tracking = vm.get("tracking")
    if isinstance(tracking, Mapping) and tracking.get("weeks"):
        out += _img(plots.plot_cumulative_transactions(tracking),
                    "Tracking: cumulative repeat purchases, actual vs predicted")
    out += _buy_again_html(vm.get("buy_again"))
    cal = (vm.get("p_alive_calibration") or {}).get("by_decile")
    if cal:
        out += _img(_calibration_figure(list(cal)), "Calibration: holdout purchases and buying by P(alive) decile")
    out += _p_purchase_html(vm.get("p_purchase_90d_calibration"))
    out += _spend_interval_html(vm.get("spend_interval"))
    out += _clv_ranking_html(vm.get("clv_ranking"))
    for w in vm.get("warnings") or []:
        out += _p(str(w), "warn")
    return out


def _headline_rows(head: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The headline figures, shares as per cent, the purchase model by its display name."""
    rows: list[tuple[str, Any]] = []
    for k, v in head.items():
        if k == "purchase_model":
            v = _purchase_model_label(v)
        elif any(w in k for w in ("share", "coverage", "decile_error")) and isinstance(v, float):
            v = _fmt(float(v), "pct")
        rows.append((k.replace("_", " "), v))
    return rows


_BUY_AGAIN_LABELS = {
    "p_alive": "P(alive)",
    "p_purchase_90d": "p_purchase_90d",
    "expected_purchases_90d": "Expected purchases in 90 days",
    "recency_baseline": "Baseline: days since the last purchase",
    "frequency_baseline": "Baseline: repeat purchase days",
}


def _buy_again_html(buy: Any) -> str:
    """AUC for buying again in the holdout of the model's scores beside the recency and frequency
    baselines, for everyone and for one-time buyers."""
    if not isinstance(buy, Mapping) or not isinstance(buy.get("auc"), Mapping):
        return ""
    one_time = buy.get("auc_one_time_buyers") or {}
    rows = [[_BUY_AGAIN_LABELS.get(k, k), v, one_time.get(k)] for k, v in buy["auc"].items()]
    out = _h3("Who buys again: AUC against simple baselines")
    out += _p(f"{_fmt(buy.get('customers'))} customers, {_fmt(buy.get('bought_share'), 'pct')} bought in the holdout; "
              f"{_fmt(buy.get('one_time_buyers'))} one-time buyers. AUC 0.5 = chance, 1 = perfect ranking.")
    return out + _table(["Score", "AUC, all customers", "AUC, one-time buyers"], rows, table_id="buy-again-auc",
                        numeric=(1, 2))


def _p_purchase_html(cal: Any) -> str:
    """p_purchase_90d (calibrated) and the raw model probability against who bought within 90
    days: the summary of each, then the calibrated deciles."""
    if not isinstance(cal, Mapping):
        return ""
    out = _h3("Is p_purchase_90d calibrated?")
    kinds = [(k, label) for k, label in (("calibrated", "p_purchase_90d (calibrated)"), ("raw_model", "Raw model"))
             if isinstance(cal.get(k), Mapping)]
    if not kinds:
        return out + _note(str(cal.get("note", "Not checked.")))
    out += _p(f"{cal.get('note', '')}; {_fmt(cal.get('observed_share'), 'pct')} bought.")
    out += _table(["Probability", "Mean predicted", "Mean decile error", "Worst decile error", "AUC"],
                  [[label, _fmt(cal[k].get("mean_predicted"), "pct"), _fmt(cal[k].get("mean_abs_decile_error"), "pct"),
                    _fmt(cal[k].get("max_abs_decile_error"), "pct"), cal[k].get("auc")] for k, label in kinds],
                  table_id="p-purchase-calibration", numeric=(1, 2, 3, 4))
    rows = [[str(r.get("decile")), r.get("customers"), _fmt(r.get("mean_predicted"), "pct"),
             _fmt(r.get("observed_share"), "pct"), _fmt(r.get("abs_error"), "pct")]
            for r in (cal.get("calibrated") or {}).get("by_decile") or []]
    if rows:
        out += _table(["Decile of p_purchase_90d", "Customers", "Predicted", "Bought", "Error"], rows,
                      table_id="p-purchase-deciles", numeric=(1, 2, 3, 4))
    return out


def _spend_interval_html(interval: Any) -> str:
    """Coverage, width and interval score of the per-customer 90% spend interval, beside one
    interval for everyone."""
    if not isinstance(interval, Mapping) or not isinstance(interval.get("model"), Mapping):
        return ""
    single = interval.get("one_interval_for_everyone") or {}
    named = [("Per-customer interval (spend_12m_p05 / _p95)", interval["model"])]
    if single:
        named.append((f"One interval for everyone ({_fmt(single.get('lower'), 'money')} to "
                      f"{_fmt(single.get('upper'), 'money')})", single))
    rows = [[name, _fmt(r.get("coverage"), "pct"), _fmt(r.get("nominal_coverage"), "pct"), _fmt(r.get("below"), "pct"),
             _fmt(r.get("above"), "pct"), _fmt(r.get("mean_width"), "money"), _fmt(r.get("median_width"), "money"),
             _fmt(r.get("mean_interval_score"), "money")] for name, r in named]
    out = _h3("Spend interval: how often the holdout revenue fell inside")
    out += _table(["Interval", "Coverage", "Nominal coverage", "Below", "Above", "Mean width", "Median width",
                   "Mean interval score (lower is better)"], rows, table_id="spend-interval", numeric=range(1, 8))
    return out + _note(str(interval.get("note", "")))


_TOPS = ("top_10pct", "top_20pct")


def _capture_layout(rank: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(capture, random, spearman) of a ``clv_ranking`` section; evaluation JSONs of older rebuys
    (``top_20pct: {clv_share_of_holdout_revenue, ...}``) are read into the same layout."""
    if isinstance(rank.get("capture"), Mapping):
        return dict(rank["capture"]), dict(rank.get("random") or {}), dict(rank.get("spearman") or {})
    old = {"clv_12m": "clv_share_of_holdout_revenue", "past_spend": "past_spend_share_of_holdout_revenue",
           "best_possible": "best_possible_share"}
    capture = {name: {t: (rank.get(t) or {}).get(field) for t in _TOPS} for name, field in old.items()}
    chance = {t: (rank.get(t) or {}).get("random_share") for t in _TOPS}
    spearman = {"clv_12m": rank.get("spearman_clv_vs_holdout_revenue"),
                "past_spend": rank.get("spearman_past_spend_vs_holdout_revenue")}
    return capture, chance, spearman


def _clv_ranking_html(rank: Any) -> str:
    """Holdout revenue captured by the top 10% / 20% by clv_12m, the models' CLV, past spend, the
    best possible and random."""
    if not isinstance(rank, Mapping) or not (rank.get("capture") or rank.get("top_20pct")):
        return ""
    capture, chance, spearman = _capture_layout(rank)
    names = {"clv_12m": f"clv_12m ({rank.get('method', 'model')})", "model_clv_12m": "CLV of the purchase x spend models",
             "past_spend": "Past spend", "best_possible": "Best possible (hindsight)"}
    rows = [[names.get(k, k), *[_fmt(v.get(t), "pct") for t in _TOPS], spearman.get(k)]
            for k, v in capture.items() if isinstance(v, Mapping)]
    rows.append(["Random", *[_fmt(chance.get(t), "pct") for t in _TOPS], None])
    out = _h3("Holdout revenue captured by the top customers")
    out += _table(["Ranked by", "Top 10%", "Top 20%", "Spearman with holdout revenue"], rows,
                  table_id="clv-ranking", numeric=(1, 2, 3))
    gain = rank.get("clv_minus_past_spend_top20_points")
    if gain is not None:
        out += _p(f"The top 20% by clv_12m brought {gain:+.1f} points of the holdout revenue "
                  f"{'more' if gain >= 0 else 'less'} than the top 20% by past spend.")
    ranker = rank.get("ranker")
    if isinstance(ranker, Mapping):
        scalars = [(k.replace("_", " "), v) for k, v in ranker.items() if not isinstance(v, (Mapping, list))]
        if scalars:
            out += _kv(scalars, "clv-ranker")
    return out


def _recommender_validation(rec: Mapping[str, Any]) -> str:
    """The recommender's metrics against its baselines, one figure and table per mode."""
    from rebuy import plots

    out = _h3("Recommender vs baselines")
    out += _p(f"Trained before {rec.get('cutoff', '?')}, tested up to {rec.get('test_end', '?')}, "
              f"lists of {rec.get('k', '?')} products.")
    for mode, res in rec["modes"].items():
        if not isinstance(res, Mapping):
            continue
        fig = plots.plot_recommender_metrics(res)
        fig.axes[0].set_title(f"Recommender vs baselines ({str(mode).replace('_', ' ')}, "
                              f"{res.get('n_test_customers', '?')} test customers)")
        out += _img(fig, f"Recommender metrics vs baselines: {str(mode).replace('_', ' ')}")
        names = [k for k, v in res.items() if isinstance(v, Mapping)]
        metrics = [m for m in (res[names[0]] if names else {})]
        out += _table(["Model", *metrics], [[n.replace("_", " "), *[res[n].get(m) for m in metrics]] for n in names],
                      table_id=f"recommender-{mode}", numeric=range(1, len(metrics) + 1))
    return out


# ---- offers --------------------------------------------------------------------------------------


def _offers_figure(summary: pd.DataFrame) -> Figure:
    from matplotlib.figure import Figure

    from rebuy.plots import _money_axis, _thousands, currency_unit

    pivot = summary.pivot_table(index="offer_type", columns="channel", values="customers", aggfunc="sum", fill_value=0)
    pivot = pivot.loc[pivot.sum(axis=1).sort_values().index]
    cost = summary.groupby("offer_type")["discount_cost"].sum().reindex(pivot.index)
    fig = Figure(figsize=(11.0, max(3.0, 0.4 * len(pivot) + 1.5)), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    left = np.zeros(len(pivot))
    y = np.arange(len(pivot))
    for ch in pivot.columns:
        ax1.barh(y, pivot[ch].to_numpy(), left=left, label=str(ch))
        left += pivot[ch].to_numpy()
    ax1.set_yticks(y, [str(i) for i in pivot.index])
    ax1.set_xlabel("Customers")
    _thousands(ax1.xaxis)
    ax1.set_title("Offers by type and channel")
    ax1.legend(title="Channel", fontsize=8)
    ax2.set_yticks(y, [str(i) for i in pivot.index])
    if float(cost.sum()) > 0:
        ax2.barh(y, cost.to_numpy(), color="tab:red")
        for yi, v in zip(y, cost.to_numpy(), strict=True):
            ax2.text(v, yi, f" {_money(v)}", va="center", fontsize=8)
        _money_axis(ax2.xaxis, _CURRENCY.get())
    else:
        ax2.set_xticks([])
        ax2.text(0.5, 0.5, "No discounts in this run", transform=ax2.transAxes, ha="center", va="center")
    ax2.set_xlabel(f"Expected discount cost ({currency_unit(_CURRENCY.get())})")
    ax2.set_title("Expected discount cost by offer type")
    ax2.margins(x=0.25)
    return fig


def _section_offers(ctx: _Context) -> str:
    s = ctx.scores
    missing = [c for c in ("offer_type", "channel", "discount_cost") if c not in s.columns]
    if missing:
        return _note(f"The scores have no offer columns ({', '.join(missing)} missing).")
    from rebuy.plots import channel_label, offer_type_label

    offers = s[["offer_type", "channel", "discount_cost"]].astype({"offer_type": str, "channel": str})
    # no offer means nothing to send: no channel, whatever the scores say
    offers["channel"] = offers["channel"].where(offers["offer_type"] != "none", "none")
    offers["offer_type"] = offers["offer_type"].map(offer_type_label)
    offers["channel"] = offers["channel"].map(channel_label)
    g = offers.groupby(["offer_type", "channel"], sort=True)
    summary = g.agg(customers=("discount_cost", "size"), discount_cost=("discount_cost", "sum")).reset_index()
    summary = summary.sort_values(["customers", "offer_type", "channel"], ascending=[False, True, True], kind="stable")
    total_cost = float(offers["discount_cost"].sum())
    oc = ctx.config.offers
    budget = oc.budget
    rows: list[tuple[str, Any]] = [
        ("Customers scored", int(len(offers))),
        ("Customers with an offer or reminder", int((offers["offer_type"] != offer_type_label("none")).sum())),
        ("Customers with a discount", int((offers["discount_cost"] > 0).sum())),
        ("Expected discount cost (currency)", _fmt(total_cost, "money")),
        ("Run budget (currency)", _fmt(float(budget), "money") if budget is not None else "no cap configured"),
    ]
    if budget:
        rows.append(("Budget used", _fmt(total_cost / float(budget), "pct")))
    rows.append(("Expected redemption rate in the cost", _fmt(float(oc.redemption_rate), "pct")))
    out = _kv(rows, "offer-budget")
    if (offers["channel"] == channel_label("none")).all():
        out += _p(
            "No customer has a consented channel, so nobody gets an offer. Was the customers table (with "
            "consent columns) given to rebuy score --customers?", "warn"
        )
    out += _img(_offers_figure(summary), "Offers by type and channel, and their expected discount cost")
    by_type = offers.groupby("offer_type").agg(customers=("discount_cost", "size"), cost=("discount_cost", "sum"))
    by_type = by_type.sort_values("customers", ascending=False)
    out += _h3("By offer type")
    out += _table(["Offer type", "Customers", "Share", "Expected discount cost"],
                  [(str(t), int(r["customers"]), _fmt(r["customers"] / len(offers), "pct"), _fmt(float(r["cost"]), "money"))
                   for t, r in by_type.iterrows()],
                  table_id="offers-by-type", numeric=(1, 2, 3))
    out += _h3("By offer type and channel")
    out += _table(["Offer type", "Channel", "Customers", "Expected discount cost"],
                  [(str(r.offer_type), str(r.channel), int(r.customers), _fmt(float(r.discount_cost), "money"))
                   for r in summary.itertuples()] + [("total", "all channels", int(len(offers)), _fmt(total_cost, "money"))],
                  table_id="offers-by-channel", numeric=(2, 3))
    return out


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------


class _Context:
    """Everything the sections read."""

    def __init__(self, **kw: Any) -> None:
        self.models_dir: Path = kw["models_dir"]
        self.scores_path: Path = kw["scores_path"]
        self.scores: pd.DataFrame = kw["scores"]
        self.scored_at: pd.Timestamp = kw["scored_at"]
        self.scores_run_id: str | None = kw["scores_run_id"]
        self.artefacts: dict[str, Any] = kw["artefacts"]
        self.manifest: dict[str, Any] = kw["manifest"]
        self.config: Config = kw["config"]
        self.config_note: str = kw["config_note"]
        self.bundle_note: str = kw["bundle_note"]
        self.transactions: pd.DataFrame | None = kw["transactions"]
        self.evaluation: dict[str, Any] | None = kw["evaluation"]
        self.uplift: dict[str, Any] | None = kw.get("uplift")
        self.evidence: dict[str, Any] | None = kw.get("evidence")
        self.offer_log: pd.DataFrame | None = kw.get("offer_log")
        self.customers: pd.DataFrame | None = kw.get("customers")
        self.exports_dir: Path | None = kw.get("exports_dir")
        self.movement_note: str = ""


_BUILDERS: dict[str, Callable[[_Context], str]] = {
    "what_to_do": _section_what_to_do,
    "overview": _section_overview,
    "what_worked": _section_what_worked,
    "data": _section_data,
    "model": _section_model,
    "kpis": _section_kpis,
    "segments": _section_segments,
    "movement": _section_movement,
    "clv": _section_clv,
    "clusters": _section_clusters,
    "validation": _section_validation,
    "offers": _section_offers,
}


def _build_section(sid: str, ctx: _Context) -> str:
    """One section's HTML; a failure is shown (and logged) instead of failing the whole report."""
    try:
        return _BUILDERS[sid](ctx)
    except Exception as exc:  # one broken section must not cost the marketers the whole report
        logger.exception("report section %r failed", sid)
        first = str(exc).splitlines()[0] if str(exc) else ""
        return _p(f"This section could not be built: {type(exc).__name__}: {first}", "section-error")


def _currency_code(currency: str) -> str:
    """An ISO code as ``Config.currency`` validates it (ReportError otherwise)."""
    code = str(currency).strip().upper()
    if not (len(code) == 3 and code.isalpha()):
        raise ReportError(f"currency: expected a three-letter ISO 4217 code such as GBP, got {currency!r}")
    return code


def _read_customers(customers: str | os.PathLike[str] | pd.DataFrame, config: Config) -> pd.DataFrame:
    """The customers table for the KPIs by acquisition channel (a DataFrame with ``customer_id`` as
    is, else :func:`rebuy.data.side_tables.load_customers`, DataError naming the file)."""
    if isinstance(customers, pd.DataFrame):
        if "customer_id" not in customers.columns:
            raise ReportError("customers: the table has no customer_id column")
        return customers
    from rebuy.data.side_tables import load_customers

    return load_customers(customers, config)


def build_report(
    *,
    models_dir: str | os.PathLike[str],
    scores: str | os.PathLike[str],
    out: str | os.PathLike[str],
    transactions: str | os.PathLike[str] | pd.DataFrame | None = None,
    evaluation: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    uplift: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    offer_log: str | os.PathLike[str] | pd.DataFrame | None = None,
    evidence: Mapping[str, Any] | None = None,
    exports_dir: str | os.PathLike[str] | None = None,
    customers: str | os.PathLike[str] | pd.DataFrame | None = None,
    currency: str | None = None,
) -> Path:
    """Write the nightly report to ``out`` (one self-contained HTML file, replaced atomically).

    Parameters
    ----------
    models_dir : the models directory (bundles, ``latest``); also where the segment snapshots for
        "movement since the previous run" live (``models_dir/segment_history/``, see the module doc).
    scores : the score table ``rebuy score`` wrote (``.parquet``, ``.csv``, ``.csv.gz`` or DuckDB).
    out : the HTML file to write.
    transactions : raw transactions source (or a DataFrame) for the KPI section, cleaned with the
        bundle's config; None leaves the KPIs out (the page says so).
    evaluation : the JSON ``rebuy evaluate`` wrote (or its dict) for the validation section.
    uplift : the JSON ``rebuy measure`` wrote (or its dict) for the "What worked" section; None
        makes that section say how to get one.
    offer_log : the offer log ``rebuy score`` appends (Parquet file or dataset directory, DuckDB
        file with table ``offer_log``, CSV, or a DataFrame); with ``transactions`` it adds the KPIs by
        campaign (treated vs control) to "What worked".
    evidence : what the scoring run did with an uplift JSON (``{"source", "switched_off",
        "promoted", "priority"}``); without it the changes are derived from ``uplift`` by the rule
        ``rebuy score --uplift`` applies.
    exports_dir : the directory ``rebuy score --exports DIR`` (:func:`rebuy.exports.write_exports`)
        wrote the send lists to; "What to do now" names its files. None looks for an
        ``exports_manifest.json`` beside the scores, then in ``exports/`` beside them.
    customers : the customers table (path, or a DataFrame with ``customer_id``) for the KPIs by
        ``acquisition_channel``; None leaves that table out (the page says so).
    currency : ISO code of the shop's money (GBP shows £, EUR €, USD $, others as "CHF 12.00");
        None uses the bundle config's ``currency`` (None there too: plain numbers).

    A section that fails is shown with its error (and logged) instead of failing the whole report;
    unreadable inputs (scores, bundle, transactions, evaluation, uplift, offer log) raise :class:`ReportError`,
    ``BundleError`` or ``DataError`` before anything is written. Returns ``out``.
    """
    from rebuy.plots import _pyplot

    _pyplot()  # selects Agg on a headless machine before any figure is made
    models_dir = Path(models_dir)
    scores_path = Path(scores)
    out = Path(out)
    score_df = _read_scores(scores_path)
    run_id = _scores_run_id(score_df)
    artefacts, manifest, bundle_note = _load_bundle_for(models_dir, run_id)
    config, config_note = _config(manifest)
    tx = None
    if transactions is not None:
        from rebuy.data import load_transactions

        # KPIs as of the scored data, not the training run's as-of date
        tx = load_transactions(transactions, config.model_copy(update={"as_of": None}))
    ev = _read_evaluation(evaluation) if evaluation is not None else None
    cust = _read_customers(customers, config) if customers is not None else None
    if evidence is not None and not isinstance(evidence, Mapping):
        raise ReportError(f"evidence: expected a dict, got {type(evidence).__name__}")
    ctx = _Context(
        models_dir=models_dir, scores_path=scores_path, scores=score_df, scored_at=_scored_at(score_df, scores_path),
        scores_run_id=run_id or manifest.get("run_id"), artefacts=artefacts, manifest=manifest, config=config,
        config_note=config_note, bundle_note=bundle_note, transactions=tx, evaluation=ev,
        uplift=_read_uplift(uplift) if uplift is not None else None,
        offer_log=_read_offer_log(offer_log) if offer_log is not None else None,
        evidence=dict(evidence) if evidence is not None else None,
        customers=cust, exports_dir=Path(exports_dir) if exports_dir is not None else None,
    )
    token = _CURRENCY.set(_currency_code(currency) if currency is not None else config.currency)
    try:
        sections = [(sid, head, _build_section(sid, ctx)) for sid, head in SECTIONS]
        subtitle = (f"{len(score_df):,} customers scored {ctx.scored_at:%Y-%m-%d %H:%M} UTC on data up to "
                    f"{manifest.get('as_of', '?')}")
        page = _page("rebuy nightly report", subtitle, sections)
    finally:
        _CURRENCY.reset(token)
    atomic_write_bytes(out, page.encode("utf-8"))
    logger.info("wrote report %s (%.0f kB)", out, out.stat().st_size / 1024)
    return out
