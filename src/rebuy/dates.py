"""The one place for rebuy's calendar conventions: as-of days, cutoffs, day numbers and time units.

Conventions (every module follows them; none re-implements them):

- **An as-of date includes its whole day.** ``as_of = 2011-06-30`` means "everything up to the end
  of 30 June": :func:`cutoff_after` gives the first excluded instant (midnight of 1 July).
- **Inclusive ends.** A period end given as a date covers that day; given with a time of day it is
  that instant (:func:`inclusive_end`).
- **Days are calendar days of naive timestamps.** Time-zone-aware inputs are converted to UTC and
  made naive first (:func:`to_timestamp` for one value, :func:`naive_utc` for a column), so a day
  boundary is UTC midnight.
- **Day numbers** are int64 days since 1970-01-01 (:func:`day_number`).
- **Time units**: ``"weeks"`` = 7 days, ``"days"`` = 1 day (:func:`unit_days`); a CLV month is
  30 days or 4.345 weeks (lifetimes' convention, :data:`MONTH_IN_UNITS`; the two differ by 1.4%,
  kept so that CLV equals lifetimes' in either unit).
- **A year** is :data:`DAYS_PER_YEAR` = 365.25 days (ages from birth dates, yearly costs).

Functions take an ``error`` class so that each boundary raises its own user-facing error
(``DataError`` for a file, ``FeatureError`` for a summary, ...) with one line naming the argument:
``"as_of 'soon': not a date (<parser's reason>)"`` or ``"as_of: missing date"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rebuy.errors import InvalidParameterError, RebuyError

DAYS_PER_YEAR = 365.25
"""Days in a year, for ages and yearly costs."""

UNIT_DAYS = {"weeks": 7.0, "days": 1.0}
"""Length of one model time unit in days."""

MONTH_IN_UNITS = {"weeks": 4.345, "days": 30.0}
"""One CLV month in model time units: lifetimes' ``customer_lifetime_value`` factors for
``freq="W"`` and ``freq="D"`` (4.345 weeks = 30.4 days, not 30/7 weeks), kept so that CLV equals
lifetimes'."""

EPOCH_DAY = np.datetime64("1970-01-01", "D")


def unit_days(time_unit: str) -> float:
    """Length of one model time unit in days (``"weeks"`` = 7, ``"days"`` = 1)."""
    try:
        return UNIT_DAYS[time_unit]
    except (KeyError, TypeError):
        from rebuy.errors import FeatureError

        raise FeatureError(f"time_unit: expected 'days' or 'weeks', got {time_unit!r}") from None


def to_timestamp(value: Any, name: str, error: type[RebuyError] = InvalidParameterError) -> pd.Timestamp:
    """``value`` as a naive Timestamp (aware values converted to UTC); ``error`` when it is no date."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise error(f"{name} {value!r}: not a date ({reason})") from None
    if ts is pd.NaT or pd.isna(ts):
        raise error(f"{name}: missing date")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def naive_utc(timestamps: pd.Series) -> pd.Series:
    """A datetime64 Series as naive timestamps: aware values converted to UTC, naive ones unchanged."""
    if isinstance(timestamps.dtype, pd.DatetimeTZDtype):
        return timestamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return timestamps


def to_day(value: Any, name: str, error: type[RebuyError] = InvalidParameterError) -> pd.Timestamp:
    """``value`` as a midnight Timestamp (its calendar day); ``error`` when it is no date."""
    return to_timestamp(value, name, error).normalize()


def as_of_day(value: Any, name: str = "as_of", error: type[RebuyError] = InvalidParameterError) -> pd.Timestamp | None:
    """The as-of day (midnight), or None when ``value`` is None."""
    return None if value is None else to_day(value, name, error)


def cutoff_after(day: pd.Timestamp) -> pd.Timestamp:
    """The first instant after the whole calendar day ``day`` (as-of dates include their day)."""
    return day.normalize() + pd.Timedelta(days=1)


def inclusive_end(value: Any, name: str = "end", error: type[RebuyError] = InvalidParameterError) -> pd.Timestamp:
    """The first excluded instant of a period ending at ``value``: a date covers its whole day,
    a timestamp with a time of day ends just after that instant."""
    ts = to_timestamp(value, name, error)
    return cutoff_after(ts) if ts == ts.normalize() else ts + pd.Timedelta(microseconds=1)


def resolve_as_of(
    timestamps: pd.Series, as_of: Any = None, name: str = "as_of", error: type[RebuyError] = InvalidParameterError
) -> pd.Timestamp:
    """The scoring day: ``as_of`` if given, else the day of the last timestamp (midnight)."""
    if as_of is not None:
        return to_day(as_of, name, error)
    return pd.Timestamp(timestamps.max()).normalize()


def day_number(value: Any, name: str, error: type[RebuyError] = InvalidParameterError) -> np.int64:
    """A date-like value as an int64 day number (days since 1970-01-01), time of day dropped."""
    ts = to_timestamp(value, name, error)
    return np.int64((np.datetime64(ts.date(), "D") - EPOCH_DAY).astype(np.int64))


def day_numbers(values: np.ndarray | pd.Series) -> np.ndarray:
    """datetime64 values as int64 day numbers (days since 1970-01-01, time of day dropped): the
    vectorised :func:`day_number`."""
    return (np.asarray(values, dtype="datetime64[ns]").astype("datetime64[D]") - EPOCH_DAY).astype(np.int64)


def day_numbers_to_timestamps(days: np.ndarray) -> np.ndarray:
    """int64 day numbers -> datetime64[ns] midnights."""
    return (days.astype("timedelta64[D]") + EPOCH_DAY).astype("datetime64[ns]")


def age_years(birth: Any, at: pd.Timestamp) -> np.ndarray:
    """Age in years (float, :data:`DAYS_PER_YEAR`-day years) at ``at`` of birth dates (NaT -> NaN)."""
    births = np.asarray(pd.to_datetime(pd.Series(birth)).to_numpy(dtype="datetime64[ns]"))
    days = (np.datetime64(pd.Timestamp(at).to_datetime64(), "ns") - births) / np.timedelta64(1, "D")
    return np.asarray(days, dtype=float) / DAYS_PER_YEAR
