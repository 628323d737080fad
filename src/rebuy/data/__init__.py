"""Load, validate and clean transactions and the optional customers and events tables.

Sources (``read_table``)
------------------------
- a CSV file (``.csv``, ``.csv.gz``, ``.txt``, ... any other extension is read as CSV), separator
  ``config.data.csv_separator``; every column is read as text first so that this module does the
  parsing and can point at the offending rows;
- a Parquet file or directory (``.parquet``, ``.pq``);
- a SQL query against DuckDB written as ``"duckdb:PATH::SELECT ..."``, e.g.
  ``"duckdb:shop.duckdb::SELECT * FROM sales WHERE year >= 2020"``. ``PATH`` is opened read-only;
  leave it empty (``"duckdb:::SELECT * FROM 'tx.parquet'"``) or write ``:memory:`` to run the query
  in an in-memory database (useful with DuckDB's ``read_csv``/``read_parquet``);
- a pandas DataFrame, used as is (it is not modified).

Cleaning (``load_transactions``), in this order, each step counted in a ``CleaningReport``:
rows without a customer id; lines of products the config drops (``data.drop_products``,
``data.drop_product_prefixes``: test items); exact duplicate lines (all source columns; only when the
lines carry an order id: without one, two identical purchases on one day are real); lines after the end of
the as-of date (without one: after the end of today, the machine's date, with a warning); zero
quantities; zero/negative unit prices; absurd line values (above ``MAX_LINE_VALUE_MULTIPLE`` = 1000 times
the 99.9th percentile line value, with a warning); cancellations and returns (negative
quantity or negative line value, or an order id starting with one of ``data.cancel_prefixes``).
Returns never count as purchases: their value is netted from the same customer's most recent
earlier purchase lines of the same product (without products: the customer's most recent
earlier lines), newest first, never below 0.

Speed: ids stay Arrow-backed strings; the duplicate check compares all columns only on rows that
share customer and timestamp (found by a linear scan when the input is sorted by customer and time,
as ``rebuy simulate`` writes it, else by hashing integer codes); sorted input is not sorted again.
The result is the same as ``DataFrame.duplicated`` and a stable ``sort_values`` would give.

Errors are ``DataError`` (:mod:`rebuy.errors`, a ``ValueError``) with a one-line message naming the
source, the column and up to three offending rows. Row numbers are 1-based data rows of the file
(the header is not counted, so row N is line N + 1 of a CSV); for a DataFrame the index label is
shown. A ``config`` of the wrong type is an ``InvalidParameterError``. As-of dates follow
:mod:`rebuy.dates` (an as-of date includes its whole day; aware values are converted to UTC).

Layout (import everything from ``rebuy.data``; the submodules are its implementation):

- :mod:`rebuy.data.sources`: ``read_table`` and the readers, ``source_name``, config resolution;
- :mod:`rebuy.data.values`: column mapping (``Table``) and value parsing (ids, numbers, dates);
- :mod:`rebuy.data.lines`: array kernels (id codes, duplicates, netting of returns);
- :mod:`rebuy.data.transactions`: ``load_transactions`` step by step and ``CleaningReport``;
- :mod:`rebuy.data.side_tables`: ``load_customers`` and ``load_events``.
"""

from __future__ import annotations

from rebuy.data.side_tables import (
    CONSENT_COLUMNS,
    CUSTOMER_COLUMNS,
    EVENT_COLUMNS,
    EVENT_TYPES,
    load_customers,
    load_events,
)
from rebuy.data.sources import DUCKDB_PREFIX, Source, read_table, source_name
from rebuy.data.transactions import CleaningReport, load_transactions
from rebuy.errors import DataError

__all__ = [
    "CONSENT_COLUMNS",
    "CUSTOMER_COLUMNS",
    "CleaningReport",
    "DataError",
    "DUCKDB_PREFIX",
    "EVENT_COLUMNS",
    "EVENT_TYPES",
    "Source",
    "load_customers",
    "load_events",
    "load_transactions",
    "read_table",
    "source_name",
]
