"""Measuring offers: the uplift of each offer type against its random control group.

Layout (import everything from ``rebuy.measure``):

- :mod:`rebuy.measure.log`: :func:`read_offer_log` (DuckDB, Parquet file or dataset, CSV, DataFrame);
- :mod:`rebuy.measure.outcomes`: window outcomes and pre-decision covariates (vectorised);
- :mod:`rebuy.measure.estimate`: Welch differences, CUPED adjustment, stratification, MDE, verdicts;
- :mod:`rebuy.measure.uplift`: :func:`measure_uplift` (what is estimated, the unit of analysis and
  the assumptions are stated there);
- :mod:`rebuy.measure.table`: :func:`format_uplift_table` and :func:`uplift_summary_rows`.
"""

from __future__ import annotations

from rebuy.measure.estimate import HARMFUL, NO_EFFECT, WORKS
from rebuy.measure.log import REQUIRED_COLUMNS, read_offer_log
from rebuy.measure.table import format_uplift_table, uplift_summary_rows
from rebuy.measure.uplift import measure_uplift

__all__ = [
    "HARMFUL",
    "NO_EFFECT",
    "REQUIRED_COLUMNS",
    "WORKS",
    "format_uplift_table",
    "measure_uplift",
    "read_offer_log",
    "uplift_summary_rows",
]
