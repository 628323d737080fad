"""Send lists for an e-mail / SMS / messenger tool: one CSV per offer type x channel.

    from rebuy.exports import write_exports
    from rebuy.recommend.products import product_names
    files = write_exports(scores, "exports", product_names=product_names(transactions), currency="GBP")
    # {("win_back", "email"): Path("exports/win_back_email.csv"), ...}

Who is in a file: the customers to contact, i.e. score rows with ``group`` "treatment" (control
customers are held out on purpose and never exported), ``deliver`` true and a ``channel`` other
than "none" (an offer type other than "none" too). Each file has the columns of
:data:`EXPORT_COLUMNS`:

``customer_id``; ``channel`` (as in the scores: messenger / email / sms); ``offer_type`` in words
("win-back", "VIP", :func:`rebuy.plots.offer_type_label`); ``offer_value`` as text a message can
quote ("15% off" for a discount share, "120 points" for loyalty points, "£10.00" for a referral
bonus, empty for a reminder); ``products`` the offer's products by name (``product_names``, e.g.
:func:`rebuy.recommend.products.product_names` of the transactions; the product id where no name
is known), joined by "; "; ``reason`` the score table's ``offer_reason``.

File names are ``<offer_type>_<channel>.csv`` (``win_back_email.csv``). Every file is written
atomically; then ``exports_manifest.json`` (:data:`MANIFEST_NAME`: the scores' run and time, and
per file its offer type, channel and customer count); then files matching that name pattern that an
earlier run left in the directory and this run did not write are removed, so the directory always
holds exactly this run's lists (other files are left alone). The report's "What to do now" reads
the manifest to name the file to send.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rebuy.errors import OutputError
from rebuy.offers.names import CHANNELS
from rebuy.outputs import write_json, write_table

logger = logging.getLogger(__name__)

__all__ = ["write_exports", "read_exports_manifest", "export_name", "customers_to_contact", "EXPORT_COLUMNS", "MANIFEST_NAME"]

EXPORT_COLUMNS = ("customer_id", "channel", "offer_type", "offer_value", "products", "reason")
"""Columns of every export CSV, in order."""
MANIFEST_NAME = "exports_manifest.json"
"""The manifest written beside the exports (counts per file)."""
_NAME_RE = re.compile(rf"^[a-z0-9]+(?:_[a-z0-9]+)*_({'|'.join(CHANNELS)})\.csv$")
_REQUIRED = ("customer_id", "offer_type", "channel")
_POINTS_TYPES = ("loyalty_points",)
_MONEY_TYPES = ("referral",)


def export_name(offer_type: str, channel: str) -> str:
    """The export file name of an offer type and channel: ``win_back_email.csv``."""
    name = f"{offer_type}_{channel}.csv"
    if not _NAME_RE.match(name):
        raise OutputError(f"offer type {offer_type!r} / channel {channel!r}: not a valid export file name {name!r}")
    return name


def customers_to_contact(scores: pd.DataFrame) -> pd.DataFrame:
    """The rows to send: treatment, deliver true, a channel and an offer (columns that are missing
    mean everyone qualifies on that count: scores written before the control group)."""
    keep = (scores["channel"].astype("string").fillna("none") != "none") & (
        scores["offer_type"].astype("string").fillna("none") != "none")
    if "group" in scores.columns:
        keep &= scores["group"].astype("string").fillna("") == "treatment"
    if "deliver" in scores.columns:
        keep &= scores["deliver"].fillna(False).astype(bool)
    return scores.loc[keep.to_numpy(dtype=bool)]


def _discount_types() -> tuple[str, ...]:
    from rebuy.offers.rules import DISCOUNT_RULES

    return DISCOUNT_RULES


def _value_text(offer_type: np.ndarray, value: np.ndarray, currency: str | None) -> np.ndarray:
    """``offer_value`` as words per row: "15% off", "120 points", "£10.00", "" (nothing to quote)."""
    from rebuy.plots import format_money

    out = np.full(len(value), "", dtype=object)
    finite = np.isfinite(value)
    discount = finite & np.isin(offer_type, _discount_types()) & (value > 0)
    out[discount] = [f"{100 * v:.0f}% off" for v in value[discount]]
    points = finite & np.isin(offer_type, _POINTS_TYPES)
    out[points] = [f"{v:,.0f} points" for v in value[points]]
    money = finite & np.isin(offer_type, _MONEY_TYPES)
    out[money] = [format_money(v, currency) for v in value[money]]
    return out


def _products_text(products: pd.Series, names: Mapping[str, str]) -> list[str]:
    """Each row's product list as "name; name" (the id where no name is known)."""
    out = []
    for items in products.to_numpy(dtype=object):
        if items is None or (isinstance(items, float) and np.isnan(items)):
            out.append("")
            continue
        if isinstance(items, str):
            items = [items] if items else []
        out.append("; ".join(str(names.get(str(p), p)) for p in items))
    return out


def _export_frame(rows: pd.DataFrame, names: Mapping[str, str], currency: str | None) -> pd.DataFrame:
    from rebuy.plots import offer_type_label

    types = rows["offer_type"].astype(str).to_numpy(dtype=object)
    value = pd.to_numeric(rows["offer_value"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan) if (
        "offer_value" in rows.columns) else np.full(len(rows), np.nan)
    products = rows["offer_products"] if "offer_products" in rows.columns else pd.Series([None] * len(rows))
    reason = (rows["offer_reason"].astype("string").fillna("").to_numpy(dtype=object) if "offer_reason" in rows.columns
              else np.full(len(rows), "", dtype=object))
    return pd.DataFrame({
        "customer_id": rows["customer_id"].astype("string").to_numpy(),
        "channel": rows["channel"].astype(str).to_numpy(),
        "offer_type": [offer_type_label(t) for t in types],
        "offer_value": _value_text(types, value, currency),
        "products": _products_text(products, names),
        "reason": reason,
    }, columns=list(EXPORT_COLUMNS))


def _check(scores: Any, out_dir: Path) -> None:
    if not isinstance(scores, pd.DataFrame):
        raise OutputError(f"exports: expected the score table as a DataFrame, got {type(scores).__name__}")
    missing = [c for c in _REQUIRED if c not in scores.columns]
    if missing:
        raise OutputError(f"exports: the score table lacks column(s) {missing}")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exports directory is a file")


def _stamp(scores: pd.DataFrame) -> dict[str, Any]:
    """The scores' run id and time, so a reader can tell which run the lists belong to."""
    out: dict[str, Any] = {"written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    if "model_run_id" in scores.columns and scores["model_run_id"].notna().any():
        out["model_run_id"] = str(scores["model_run_id"].dropna().astype(str).mode().iloc[0])
    if "scored_at" in scores.columns:
        ts = pd.to_datetime(scores["scored_at"], errors="coerce", utc=True)
        if ts.notna().any():
            out["scored_at"] = ts.max().tz_convert(None).isoformat()
    return out


def _remove_stale(out_dir: Path, written: set[str]) -> list[str]:
    removed = []
    for p in out_dir.iterdir():
        if p.is_file() and _NAME_RE.match(p.name) and p.name not in written:
            p.unlink(missing_ok=True)
            removed.append(p.name)
    if removed:
        logger.info("removed %d export file(s) of an earlier run from %s: %s", len(removed), out_dir, sorted(removed))
    return removed


def write_exports(
    scores: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    product_names: Mapping[str, str] | None = None,
    currency: str | None = None,
) -> dict[tuple[str, str], Path]:
    """Write one send list per offer type x channel into ``out_dir`` (see the module doc).

    Parameters
    ----------
    scores : the score table (``customer_id``, ``offer_type``, ``channel``; ``group``, ``deliver``,
        ``offer_value``, ``offer_products``, ``offer_reason`` when present).
    out_dir : the directory (created when missing).
    product_names : product_id -> name for the ``products`` column (ids without a name stay ids).
    currency : the shop's ISO code for money values (GBP -> "£10.00"); None writes plain numbers.

    Returns ``{(offer_type, channel): path}`` of the files written (none for a combination without
    customers). Raises :class:`rebuy.errors.OutputError` for an unusable table or directory.
    """
    out_dir = Path(out_dir)
    _check(scores, out_dir)
    names = {str(k): str(v) for k, v in (product_names or {}).items()}
    rows = customers_to_contact(scores)
    written: dict[tuple[str, str], Path] = {}
    files: dict[str, dict[str, Any]] = {}
    groups = rows.groupby([rows["offer_type"].astype(str), rows["channel"].astype(str)], sort=True)
    names_of = {key: export_name(*key) for key in groups.groups}  # every name checked before anything is written
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for (offer_type, channel), part in groups:
            name = names_of[(offer_type, channel)]
            frame = _export_frame(part.sort_values("customer_id", kind="stable"), names, currency)
            written[(offer_type, channel)] = write_table(frame, out_dir / name)
            files[name] = {"offer_type": offer_type, "channel": channel, "customers": len(frame)}
        write_json({**_stamp(scores), "currency": currency, "files": files,
                    "customers": int(sum(f["customers"] for f in files.values()))}, out_dir / MANIFEST_NAME)
        _remove_stale(out_dir, set(files))
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write the exports ({exc})") from None
    logger.info("wrote %d export file(s) with %d customers to %s", len(files), len(rows), out_dir)
    return written


def read_exports_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest :func:`write_exports` left in ``out_dir``; None when there is none. A manifest
    that cannot be read is an :class:`OutputError` naming the file."""
    import json

    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path}: cannot read the exports manifest ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise OutputError(f"{path}: not an exports manifest (no 'files' object)")
    return data
