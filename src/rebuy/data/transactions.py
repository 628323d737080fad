"""``load_transactions``: read, validate and clean transactions into the canonical frame.

Layout: :func:`load_transactions` runs the cleaning steps in the order of the :mod:`rebuy.data`
docstring, one named function each, counting every removal in a :class:`CleaningReport`:

1. :func:`_drop_missing_customers` -> 1b. :func:`_drop_products` (``data.drop_products`` /
``drop_product_prefixes``: test items) -> 2. :func:`_drop_duplicates` (only when the lines carry an
order id) -> 3. :func:`_parse_values` ->
4-6. :func:`_purchasable` (as-of cutoff or, without one, today: :func:`_not_late`; zero quantity, unit
price) -> 6b. :func:`_quarantine_absurd` (line values above a ceiling) -> 7. :func:`_split_returns` and
:func:`_net` (returns netted from earlier purchases) -> 8. :func:`_assemble` and
:func:`_sort_canonical` -> :func:`_finish`.

Invariants between the steps: ``_Lines`` holds the surviving lines with ``rows`` (their 0-based
positions in the table as read, for messages) and the customer codes; every array of ``_Values``
and every mask has one entry per surviving line. Steps 1-3 drop lines; steps 4-7 only build masks
(``keep``, ``buy``, ``ret``); step 8 takes the ``buy`` lines. Sorted input (by customer, then time)
is never sorted again, and the result equals a stable ``sort_values(["customer_id", "timestamp"])``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from rebuy.config import CANONICAL_COLUMNS, OPTIONAL_TRANSACTION_COLUMNS, Config, DataConfig
from rebuy.data.lines import duplicated, id_codes, n_distinct, net_returns
from rebuy.data.sources import Source, read_table, resolve_config
from rebuy.data.values import Table, arrow_strings, parse_ids, parse_numbers, parse_timestamps
from rebuy.dates import as_of_day, cutoff_after
from rebuy.errors import DataError

logger = logging.getLogger(__name__)

MAX_LINE_VALUE_MULTIPLE = 1000.0
"""Lines worth more than this many times the :data:`LINE_VALUE_QUANTILE` line value are quarantined
(``absurd_value``); ``data.max_line_value_multiple`` overrides it once that key exists (0 = off).
Online Retail II's largest line (168,469.60) is 184 times its 99.9th percentile (916.00)."""
LINE_VALUE_QUANTILE = 0.999
"""The reference line value of the ceiling: the 99.9th percentile of the line values (the lower of
two neighbours, so that a single absurd line cannot lift it)."""
MIN_LINES_FOR_QUANTILE = 1000
"""Fewer lines have no meaningful 99.9th percentile: only :data:`MAX_LINE_VALUE` applies (a single
customer's history scored alone keeps its one big order)."""
MAX_LINE_VALUE = 1e13
"""Lines worth more (currency) are quarantined whatever the table: float64 sums keep cents only
below about 9e13, and no shop line is worth ten trillion."""


def today() -> pd.Timestamp:
    """The machine's calendar day (midnight): without an as-of date, lines after its end are dated in
    the future and dropped. Tests monkeypatch this function."""
    return pd.Timestamp(dt.date.today())


@dataclasses.dataclass
class CleaningReport:
    """What ``load_transactions`` did, step by step (line counts; values in the data's currency)."""

    source: str
    rows_in: int = 0
    missing_customer: int = 0
    dropped_products: int = 0
    """Lines of products listed in ``data.drop_products`` / ``drop_product_prefixes`` (test items)."""
    duplicates: int = 0
    """Exact duplicate lines dropped (only counted when the lines carry an order id)."""
    after_as_of: int = 0
    """Lines after the end of the given as-of day."""
    future_dated: int = 0
    """Without an as-of date: lines after the end of today (the machine's date), dropped."""
    zero_quantity: int = 0
    non_positive_price: int = 0
    absurd_value: int = 0
    """Lines quarantined for a value above the ceiling (:data:`MAX_LINE_VALUE_MULTIPLE`)."""
    returns: int = 0
    """Cancellation/return lines removed as purchases (negative quantity or value, or cancel prefix)."""
    returns_cancel_prefix: int = 0
    """Of ``returns``: lines whose order id starts with a cancel prefix."""
    returns_matched: int = 0
    """Return lines netted (at least partly) against an earlier purchase."""
    returns_unmatched: int = 0
    return_value: float = 0.0
    return_value_netted: float = 0.0
    return_value_unmatched: float = 0.0
    lines_fully_refunded: int = 0
    rows_out: int = 0
    customers: int = 0
    orders: int = 0
    products: int | None = None
    first_timestamp: pd.Timestamp | None = None
    last_timestamp: pd.Timestamp | None = None
    as_of: pd.Timestamp | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (timestamps as ISO strings, money rounded to cents)."""
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, pd.Timestamp):
                out[k] = v.isoformat()
            elif isinstance(v, float):
                out[k] = round(v, 2) if k.startswith("return_value") else round(v, 3)
        return out

    def summary(self) -> str:
        """The report as one ``key=value, ...`` line (for messages and the DEBUG log)."""
        return ", ".join(f"{k}={v}" for k, v in self.to_dict().items())

    def short(self) -> str:
        """One short human line: rows in -> out, customers, and the non-zero drops (the INFO log)."""
        drops = [(n, label) for n, label in (
            (self.missing_customer, "no customer id"), (self.dropped_products, "dropped products"),
            (self.duplicates, "duplicates"), (self.after_as_of, "after as-of"),
            (self.future_dated, "dated after today"), (self.zero_quantity, "zero quantity"),
            (self.non_positive_price, "price <= 0"), (self.absurd_value, "absurd value"),
            (self.returns, "returns netted"),
        ) if n]
        text = f"{self.source}: {self.rows_in:,} lines -> {self.rows_out:,}, {self.customers:,} customers"
        if drops:
            text += "; " + ", ".join(f"{label} {n:,}" for n, label in drops)
        return text + f" ({self.seconds:.1f} s)"


@dataclasses.dataclass
class _Lines:
    """The lines still in play: source columns, positions in the table as read, customer codes."""

    data: pd.DataFrame
    rows: np.ndarray
    cust_codes: np.ndarray
    cust_sorted: bool
    """Whether the customer ids are sorted (then ``cust_codes`` follow the id order)."""


@dataclasses.dataclass
class _Values:
    """The parsed columns, one entry per line of ``_Lines``."""

    ts: np.ndarray  # naive datetime64[ns]
    qty: np.ndarray  # float64, 1 when the source has no quantity
    price: np.ndarray | None  # unit price (currency), None without a price column
    amount: np.ndarray | None  # line value (currency), None without an amount column
    order: pd.Series | None  # order ids, None without an order_id column


@overload
def load_transactions(
    source: Source, config: Config | DataConfig | str | Path | None = ..., *, as_of: Any = ...,
    with_report: Literal[False] = ..., min_customers: int = ...,
) -> pd.DataFrame: ...
@overload
def load_transactions(
    source: Source, config: Config | DataConfig | str | Path | None = ..., *, as_of: Any = ...,
    with_report: Literal[True], min_customers: int = ...,
) -> tuple[pd.DataFrame, CleaningReport]: ...


def load_transactions(
    source: Source,
    config: Config | DataConfig | str | Path | None = None,
    *,
    as_of: Any = None,
    with_report: bool = False,
    min_customers: int = 2,
) -> pd.DataFrame | tuple[pd.DataFrame, CleaningReport]:
    """Read, validate and clean transactions into the canonical frame.

    Parameters
    ----------
    source : CSV/Parquet path, ``"duckdb:PATH::QUERY"`` or a DataFrame (see ``read_table``).
    config : a ``Config`` (its ``data`` section and ``as_of`` are used), a ``DataConfig``, a YAML
        path, or None for the defaults (canonical column names, cancel prefix ``C``).
    as_of : date; lines after the end of this day are removed. Overrides ``config.as_of``.
        None removes the lines after the end of today (:func:`today`, the machine's date) with a
        warning: a clock or typing error must not move the as-of date into the future.
    with_report : also return the ``CleaningReport``.
    min_customers : fewer customers left after cleaning is a ``DataError`` (the models need 2;
        scoring one customer's history passes 1).

    Returns
    -------
    DataFrame sorted by customer_id then timestamp with columns customer_id, order_id, timestamp
    (naive datetime64[ns]), product_id (when the source has it), quantity (> 0), price (unit
    price > 0), amount (line value in currency after netting returns, >= 0) and any of
    description, country, category present in the source. ``quantity`` is the purchased
    quantity (returns reduce ``amount`` only).
    """
    t0 = time.perf_counter()
    cfg, cfg_as_of = resolve_config(config)
    day = as_of_day(as_of if as_of is not None else cfg_as_of, "as_of", DataError)
    tab = _transactions_table(source, cfg)
    report = CleaningReport(source=tab.name, rows_in=len(tab.df), as_of=day)
    lines = _drop_missing_customers(tab, report)
    if "product_id" in tab.cols and (cfg.drop_products or cfg.drop_product_prefixes):
        lines = _drop_products(tab, lines, cfg, report)
    if cfg.drop_duplicates and "order_id" in tab.cols:
        lines = _drop_duplicates(tab, lines, report)
    values = _parse_values(tab, lines, cfg)
    keep, unit, value = _purchasable(values, day, report)
    keep = _quarantine_absurd(tab, lines, value, keep, getattr(cfg, "max_line_value_multiple", MAX_LINE_VALUE_MULTIPLE),
                              report)
    buy, ret = _split_returns(values, keep, cfg.cancel_prefixes, report)
    prod = None
    if "product_id" in tab.cols:
        prod = parse_ids(lines.data[tab.cols["product_id"]], strip_float_zero=False)
    value = _net(lines.cust_codes, prod, values.ts, value, buy, ret, report)
    if not buy.any():
        raise DataError(f"{tab.name}: no purchase lines left after cleaning ({report.summary()})")
    out = _assemble(tab, lines, values, prod, unit, value, buy)
    out = _sort_canonical(out, lines.cust_codes if buy.all() else lines.cust_codes[buy], lines.cust_sorted, report)
    _finish(out, tab, report, min_customers)
    report.seconds = time.perf_counter() - t0
    logger.info("cleaned %s", report.short())
    logger.debug("cleaning report: %s", report.summary())
    return (out, report) if with_report else out


def _transactions_table(source: Source, cfg: DataConfig) -> Table:
    """The read table with its columns mapped; customer_id, timestamp and price or amount required."""
    df = read_table(source, separator=cfg.csv_separator)
    tab = Table(source, df, cfg.columns, CANONICAL_COLUMNS + OPTIONAL_TRANSACTION_COLUMNS)
    tab.require("customer_id")
    tab.require("timestamp")
    if "price" not in tab.cols and "amount" not in tab.cols:
        tab.require("price", " (nor 'amount'; one of them is needed)")
    return tab


def _drop_missing_customers(tab: Table, report: CleaningReport) -> _Lines:
    """Step 1: drop rows without a customer id; the kept ids are normalised in place (a view)."""
    c, data = tab.cols, tab.df
    cust = parse_ids(data[c["customer_id"]])
    keep = cust.notna().to_numpy()
    report.missing_customer = int((~keep).sum())
    if not keep.any():
        raise DataError(f"{tab.name}: column {tab.column('customer_id')}: no row has a customer id "
                        f"({len(data)} rows, all empty)")
    rows = np.flatnonzero(keep)
    if keep.all():
        data = data.copy(deep=False)  # copy-on-write: the assignment below leaves tab.df alone
    else:
        data, cust = data.loc[keep], cust[keep]
    data[c["customer_id"]] = cust
    cust_codes, cust_sorted = id_codes(cust)
    return _Lines(data=data, rows=rows, cust_codes=cust_codes, cust_sorted=cust_sorted)


def _drop_products(tab: Table, lines: _Lines, cfg: DataConfig, report: CleaningReport) -> _Lines:
    """Step 1b: drop the lines of products the shop's config lists (``data.drop_products``, exact ids
    after normalising, and ``data.drop_product_prefixes``): test items that are no purchases."""
    prod = parse_ids(lines.data[tab.cols["product_id"]], strip_float_zero=False)
    drop = prod.isin(cfg.drop_products).fillna(False).to_numpy(dtype=bool)
    if cfg.drop_product_prefixes:
        drop = drop | prod.str.startswith(tuple(cfg.drop_product_prefixes)).fillna(False).to_numpy(dtype=bool)
    report.dropped_products = int(drop.sum())
    return _keep_lines(lines, ~drop) if report.dropped_products else lines


def _keep_lines(lines: _Lines, keep: np.ndarray) -> _Lines:
    """``lines`` with only the ``keep`` ones."""
    return dataclasses.replace(lines, data=lines.data.loc[keep], rows=lines.rows[keep], cust_codes=lines.cust_codes[keep])


def _drop_duplicates(tab: Table, lines: _Lines, report: CleaningReport) -> _Lines:
    """Step 2: drop exact duplicate lines (all source columns, customer id normalised). Called only
    when the lines carry an order id: without one, two identical purchases on one day are real."""
    dup = duplicated(lines.data, lines.cust_codes, lines.cust_sorted, lines.data[tab.cols["timestamp"]])
    report.duplicates = int(dup.sum())
    return _keep_lines(lines, ~dup) if report.duplicates else lines


def _parse_values(tab: Table, lines: _Lines, cfg: DataConfig) -> _Values:
    """Step 3: parse timestamps, quantities, prices, amounts and order ids (DataError on bad values)."""
    c, data, rows = tab.cols, lines.data, lines.rows
    ts = parse_timestamps(tab, "timestamp", data[c["timestamp"]], rows, cfg.timestamp_format, cfg.timezone)
    return _Values(
        ts=ts.to_numpy(),
        qty=parse_numbers(tab, "quantity", data[c["quantity"]], rows) if "quantity" in c else np.ones(len(data)),
        price=parse_numbers(tab, "price", data[c["price"]], rows) if "price" in c else None,
        amount=parse_numbers(tab, "amount", data[c["amount"]], rows) if "amount" in c else None,
        order=parse_ids(data[c["order_id"]], strip_float_zero=True) if "order_id" in c else None,
    )


def _not_late(ts: np.ndarray, day: pd.Timestamp | None, report: CleaningReport) -> np.ndarray:
    """Step 4: the lines up to the end of the as-of ``day`` (counted in ``after_as_of``) or, without
    one, up to the end of :func:`today` (counted in ``future_dated``, with a warning)."""
    end = cutoff_after(day if day is not None else today())
    late = ts >= end.to_datetime64()
    n = int(late.sum())
    if day is not None:
        report.after_as_of = n
    elif n:
        report.future_dated = n
        latest = pd.Timestamp(ts[late].max())
        logger.warning("%s: dropped %d line(s) dated after today (%s), the latest on %s; check the timestamp "
                       "column or the machine's clock, or pass an as-of date", report.source, n,
                       (end - pd.Timedelta(days=1)).date(), latest.date())
    return ~late


def _purchasable(
    values: _Values, day: pd.Timestamp | None, report: CleaningReport
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 4-6: the lines not after the as-of day (or today, :func:`_not_late`) with a non-zero
    quantity and a unit price > 0.

    Returns (keep mask, unit price, absolute line value), prices and values in currency.
    """
    qty, price, amount = values.qty, values.price, values.amount
    keep = _not_late(values.ts, day, report)
    zero_q = keep & (qty == 0)
    report.zero_quantity = int(zero_q.sum())
    keep &= ~zero_q
    with np.errstate(divide="ignore", invalid="ignore"):
        if price is None:
            unit = np.abs(amount) / np.abs(qty)
            value = np.abs(amount)
        else:
            unit = price
            value = np.abs(amount) if amount is not None else np.abs(qty) * price
    bad_price = keep & ~(unit > 0)
    report.non_positive_price = int(bad_price.sum())
    keep &= ~bad_price
    return keep, unit, value


def _quarantine_absurd(
    tab: Table, lines: _Lines, value: np.ndarray, keep: np.ndarray, multiple: float | None, report: CleaningReport
) -> np.ndarray:
    """Step 6b: ``keep`` without the lines worth more than :func:`_line_ceiling` (currency; a typo
    like a price of 1e300 would otherwise move every customer's model), counted in
    ``absurd_value``, with one warning naming how many and the largest."""
    ceiling, why = _line_ceiling(value[keep], multiple)
    absurd = keep & ~(value <= ceiling)  # NaN and inf are absurd too
    report.absurd_value = int(absurd.sum())
    if report.absurd_value:
        idx = np.flatnonzero(absurd)
        top = idx[np.argmax(value[idx])]
        logger.warning("%s: quarantined %d line(s) worth more than %.2f (%s); the largest %g at %s", tab.name,
                       report.absurd_value, ceiling, why, value[top], tab.label(int(lines.rows[top])))
    return keep & ~absurd


def _line_ceiling(kept: np.ndarray, multiple: float | None) -> tuple[float, str]:
    """The largest accepted line value (currency) and why: ``multiple`` times the
    :data:`LINE_VALUE_QUANTILE` of the finite ``kept`` values (from :data:`MIN_LINES_FOR_QUANTILE`
    lines; ``multiple`` None or 0 switches it off), at most :data:`MAX_LINE_VALUE`."""
    finite = kept[np.isfinite(kept)]
    if multiple and len(finite) >= MIN_LINES_FOR_QUANTILE:
        ceiling = multiple * float(np.quantile(finite, LINE_VALUE_QUANTILE, method="lower"))
        if 0 < ceiling < MAX_LINE_VALUE:
            return ceiling, f"{multiple:g} x the 99.9th percentile line value{_ceiling_hint()}"
    return MAX_LINE_VALUE, "the most a line can be worth"


def _ceiling_hint() -> str:
    """How to change the ceiling: the config key once it exists, else the module constant."""
    if "max_line_value_multiple" in DataConfig.model_fields:
        return "; raise data.max_line_value_multiple if such lines are real"
    return "; raise rebuy.data.transactions.MAX_LINE_VALUE_MULTIPLE if such lines are real"


def _split_returns(
    values: _Values, keep: np.ndarray, cancel_prefixes: list[str], report: CleaningReport
) -> tuple[np.ndarray, np.ndarray]:
    """Step 7a: (purchase mask, return mask) of the kept lines. A return has a negative quantity or
    amount, or an order id starting with one of ``cancel_prefixes``."""
    is_return = values.qty < 0
    if values.amount is not None:
        is_return |= values.amount < 0
    if values.order is not None and cancel_prefixes:
        prefixed = values.order.str.startswith(tuple(cancel_prefixes)).fillna(False).to_numpy(dtype=bool)
        report.returns_cancel_prefix = int((keep & prefixed).sum())
        is_return |= prefixed
    ret = keep & is_return
    buy = keep & ~is_return
    report.returns = int(ret.sum())
    return buy, ret


def _net(
    cust_codes: np.ndarray, prod: pd.Series | None, ts: np.ndarray, value: np.ndarray,
    buy: np.ndarray, ret: np.ndarray, report: CleaningReport,
) -> np.ndarray:
    """Step 7b: line values (currency) with returns netted from the same customer's (and product's)
    most recent earlier purchases; return lines keep their absolute value."""
    value = value.astype(float)
    if ret.any() and buy.any():
        key_cols = [cust_codes] if prod is None else [cust_codes, prod.to_numpy(dtype=object, na_value="")]
        net = net_returns(key_cols, ts, value, buy, ret)
        value[buy] = net.purchase_value
        report.returns_matched = int((net.netted > 0).sum())
        report.return_value_netted = float(net.netted.sum())
        report.lines_fully_refunded = int((net.purchase_value <= 0).sum())
    report.returns_unmatched = report.returns - report.returns_matched
    report.return_value = float(value[ret].sum())
    report.return_value_unmatched = max(report.return_value - report.return_value_netted, 0.0)
    return value


def _assemble(
    tab: Table, lines: _Lines, values: _Values, prod: pd.Series | None,
    unit: np.ndarray, value: np.ndarray, buy: np.ndarray,
) -> pd.DataFrame:
    """Step 8: the canonical frame of the purchase lines, in input order."""
    every = bool(buy.all())

    def bought(arr: Any) -> Any:
        return arr if every else arr[buy]

    c, data = tab.cols, lines.data
    out = pd.DataFrame({"customer_id": bought(data[c["customer_id"]].array).astype("string")})
    ts_buy = bought(values.ts)
    if values.order is not None:
        out["order_id"] = bought(values.order.array).astype("string")
    else:
        out["order_id"] = pd.array(np.full(len(out), None, dtype=object), dtype="string")
    _synthesise_order_ids(out, ts_buy)
    out["timestamp"] = ts_buy
    if prod is not None:
        out["product_id"] = bought(prod.array).astype("string")
    out["quantity"] = np.abs(bought(values.qty)).astype(float)
    out["price"] = bought(unit).astype(float)
    out["amount"] = np.maximum(bought(value), 0.0)
    for extra in OPTIONAL_TRANSACTION_COLUMNS:
        if extra == "category" and extra in c:  # a code: normalised like the ids
            out[extra] = bought(parse_ids(data[c[extra]]).array)
        elif extra in c:
            out[extra] = bought(data[c[extra]].astype("string").array)  # kept verbatim (whitespace too)
    return out


def _synthesise_order_ids(out: pd.DataFrame, ts: np.ndarray) -> None:
    """Lines without an order id get ``CUSTOMER@YYYY-MM-DDTHH:MM:SS`` (one order per customer and time)."""
    no_order = out["order_id"].isna().to_numpy()
    if no_order.any():
        synth = out["customer_id"][no_order] + "@" + pd.Series(
            pd.DatetimeIndex(ts[no_order]).strftime("%Y-%m-%dT%H:%M:%S"), index=out.index[no_order]
        ).astype("string")
        out.loc[no_order, "order_id"] = synth


def _sort_canonical(
    out: pd.DataFrame, codes: np.ndarray, cust_sorted: bool, report: CleaningReport
) -> pd.DataFrame:
    """Sort by customer_id then timestamp (stably, only when needed) and count the customers."""
    t_int = out["timestamp"].to_numpy().view(np.int64)
    if cust_sorted:  # codes follow the id order: sort only when timestamps are out of order
        same = codes[1:] == codes[:-1]
        if (same & (t_int[1:] < t_int[:-1])).any():
            out = out.take(np.lexsort((t_int, codes))).reset_index(drop=True)
        report.customers = int(np.count_nonzero(~same)) + 1
    elif (ids := arrow_strings(out["customer_id"])) is not None:
        # dense ranks in byte (= code point) order, the order sort_values uses for strings
        rank = pc.rank(ids, sort_keys="ascending", tiebreaker="dense").to_numpy().astype(np.int64)
        out = out.take(np.lexsort((t_int, rank))).reset_index(drop=True)
        report.customers = int(rank.max())
    else:
        out = out.sort_values(["customer_id", "timestamp"], kind="stable", ignore_index=True)
        report.customers = int(np.count_nonzero(np.bincount(codes)))
    return out


def _finish(out: pd.DataFrame, tab: Table, report: CleaningReport, min_customers: int) -> None:
    """Fill in the output counts; too few customers left is a DataError."""
    report.rows_out = len(out)
    report.orders = n_distinct(out["order_id"])
    report.products = n_distinct(out["product_id"]) if "product_id" in out else None
    report.first_timestamp = pd.Timestamp(out["timestamp"].min())
    report.last_timestamp = pd.Timestamp(out["timestamp"].max())
    if report.customers < min_customers:
        n = report.customers
        who = f"1 customer ({out['customer_id'].iloc[0]!r})" if n == 1 else f"{n} customers"
        raise DataError(f"{tab.name}: column {tab.column('customer_id')}: only {who} after cleaning; "
                        f"the models need at least {min_customers} customers")
