"""The CDNOW data sets that ship inside ``lifetimes.datasets``, as canonical transactions frames.

CDNOW (Fader & Hardie): every purchase of the cohort of customers who first bought CDs at CDNOW
in the first quarter of 1997, followed to the end of June 1998. Amounts are US dollars.

- ``CDNOW_sample.txt``: the 1/10th systematic sample of 2,357 customers (6,919 lines) used in
  Fader, Hardie & Lee (2005), "Counting your customers the easy way". Columns: master customer id,
  sample customer id (1..2357, the ``ID`` of lifetimes' ``cdnow_customers_summary.csv``), date,
  number of CDs, dollar value.
- ``CDNOW_master.txt``: the full cohort, 23,570 customers (69,659 lines).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

CANONICAL_CDNOW_COLUMNS = ("customer_id", "order_id", "timestamp", "quantity", "price", "amount")


def _lifetimes_file(name: str) -> Path:
    try:
        root = resources.files("lifetimes") / "datasets" / name
    except ModuleNotFoundError as e:  # pragma: no cover - lifetimes is a hard dependency
        raise FileNotFoundError(f"lifetimes is not installed, so {name} is unavailable") from e
    path = Path(str(root))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CDNOW file not found in lifetimes.datasets")
    return path


def _canonical(
    customer_id: pd.Series, date: pd.Series, quantity: pd.Series, amount: pd.Series
) -> pd.DataFrame:
    cid = customer_id.astype("string")
    ts = pd.to_datetime(date.astype(str), format="%Y%m%d").astype("datetime64[ns]")
    qty = quantity.astype(np.float64)
    amt = amount.astype(np.float64)
    df = pd.DataFrame(
        {
            "customer_id": cid,
            "order_id": (cid + "-" + ts.dt.strftime("%Y%m%d")).astype("string"),
            "timestamp": ts,
            "quantity": qty,
            "price": amt / qty,
            "amount": amt,
        }
    )
    return df.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)


def load_cdnow_sample() -> pd.DataFrame:
    """The 2,357-customer CDNOW sample of Fader, Hardie & Lee (2005) as canonical transactions.

    ``customer_id`` is the sample id "1".."2357" (the ``ID`` of lifetimes' CDNOW summary files);
    ``order_id`` is synthesised as customer id + date; ``amount`` in US dollars (a few lines are 0,
    kept as in the paper); ``price`` = amount / quantity.
    """
    path = _lifetimes_file("CDNOW_sample.txt")
    raw = pd.read_csv(
        path, sep=r"\s+", header=None, names=["master_id", "sample_id", "date", "cds", "dollars"]
    )
    return _canonical(raw["sample_id"].astype(int).astype(str), raw["date"], raw["cds"], raw["dollars"])


def load_cdnow_master() -> pd.DataFrame:
    """The full 23,570-customer CDNOW cohort as canonical transactions (``customer_id`` as in the
    file, zero-padded, e.g. "00001"; amounts in US dollars)."""
    path = _lifetimes_file("CDNOW_master.txt")
    raw = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str, "date": str})
    return _canonical(raw["customer_id"], raw["date"], raw["number_of_cds"], raw["dollar_value"])
