"""Every error rebuy raises for bad input, in one place.

:class:`RebuyError` is the base of every *user-facing* error: bad files, bad columns, bad configs,
bundles that must not be loaded, requests that cannot be served. Its message is one line that names
the file, column or key and what is wrong. The command line catches ``RebuyError`` (and missing or
unreadable files) and prints that line with exit code 2; anything else is a bug in rebuy and exits 1
with "internal error" (the traceback under ``-v``).

Each subclass also derives from ``ValueError`` (as scikit-learn's ``NotFittedError`` does), so
code written against earlier versions that caught ``ValueError`` keeps working. Internal errors
(``FloatingPointError`` from a model, ``AssertionError``, ...) never derive from ``RebuyError``.
"""

from __future__ import annotations

import errno
import os


class RebuyError(Exception):
    """Base of every user-facing rebuy error: the message is one line naming the input and the problem."""


class InvalidParameterError(RebuyError, ValueError, TypeError):
    """A function or estimator was given a parameter outside its allowed range or of the wrong type."""


class UsageError(RebuyError, ValueError):
    """A command was called with options that do not fit together."""


class ConfigError(RebuyError, ValueError):
    """A configuration file or override is invalid. The message names the file and the key."""


class DataError(RebuyError, ValueError):
    """Bad input data. The one-line message names the source, the column and example rows."""


class FeatureError(RebuyError, ValueError):
    """The transactions cannot be summarised; the message names the column and the problem."""


class SegmentError(RebuyError, ValueError):
    """The input of a segmentation step is invalid; the message names the input and the column."""


class ModelFitError(RebuyError, ValueError):
    """A model cannot be fitted on the given data; the message says why."""


class RecommenderDataError(RebuyError, ValueError):
    """The transactions cannot train the recommender (e.g. no ``product_id`` column)."""


class OffersInputError(RebuyError, ValueError):
    """An input to the offers engine is missing a column or holds invalid values."""


class BundleError(RebuyError, ValueError):
    """A bundle cannot be written or must not be loaded. The message names the file and the problem."""


class ScoringError(RebuyError, ValueError):
    """Scoring cannot proceed (no scores recorded, unknown customer, ...)."""


class OutputError(RebuyError, ValueError):
    """An output cannot be written or read back (unknown extension, bad table name, missing key)."""


class KPIInputError(RebuyError, ValueError):
    """The input to a KPI is unusable (missing column, wrong type, empty period). One-line message."""


class PlotInputError(RebuyError, ValueError):
    """The data given to a plot is unusable; the message names the argument and the column."""


class ReportError(RebuyError, ValueError):
    """The report cannot be built (missing scores file, unusable column, ...). One line naming the file."""


class SimulationError(RebuyError, ValueError):
    """A simulation parameter is invalid; the message names the parameter."""


class SparkScoringError(RebuyError, ValueError):
    """Spark scoring cannot proceed; the message names the input and the problem."""


class UnknownCustomerError(RebuyError, KeyError):
    """A look-up asked for a customer who is not in the latest scores."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


# ----------------------------------------------------------------------------- the user's environment

_ENVIRONMENT_HINTS = {
    errno.ENOENT: "no such file or directory: check the path",
    errno.EACCES: "permission denied: make it (and its directory) writable for this user or choose another path",
    errno.EPERM: "operation not permitted: check its owner and permissions or choose another path",
    errno.EROFS: "read-only file system: choose a writable path",
    errno.ENOSPC: "no space left on device: free disk space or write elsewhere, then rerun",
    errno.EDQUOT: "disk quota exceeded: free space or write elsewhere, then rerun",
    errno.EFBIG: "file too large (file-size limit `ulimit -f` or the file system's maximum): "
                 "raise the limit or write elsewhere, then rerun",
    errno.ENOTDIR: "part of this path is a file, not a directory: choose another path",
    errno.EISDIR: "is a directory: give a file path",
    errno.EEXIST: "exists and is not a directory: remove it or choose another path",
    errno.ENAMETOOLONG: "file name too long: choose a shorter path",
}
"""OSErrors caused by the user's disk, paths or permissions (not by rebuy), with what to do."""

ENVIRONMENT_ERRNOS = frozenset(_ENVIRONMENT_HINTS)
_FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def environment_hint(errno_: int | None) -> str | None:
    """What to do about an OSError with this errno, or None when it is not the user's environment."""
    return _ENVIRONMENT_HINTS.get(errno_) if errno_ is not None else None


def hint_for_message(message: str) -> str | None:
    """The hint for a library error (DuckDB, Arrow) whose text holds an environment errno's strerror."""
    return next((hint for code, hint in _ENVIRONMENT_HINTS.items() if os.strerror(code) in message), None)


def describe_os_error(exc: OSError) -> str | None:
    """One line ``<path>: <problem>: <what to do>`` for an OSError of the user's environment, else None.

    A rename onto a directory names the target (``filename2``); an EEXIST whose path is a
    directory is not the user's (a race inside rebuy) and gives None.
    """
    if exc.errno is None and isinstance(exc, _FILE_ERRORS):  # raised by hand with a message
        return str(exc)
    hint = environment_hint(exc.errno)
    if hint is None:
        return None
    path = exc.filename2 if exc.errno == errno.EISDIR and exc.filename2 else exc.filename
    if exc.errno == errno.EEXIST and (path is None or os.path.isdir(path)):
        return None
    return f"{os.fsdecode(path)}: {hint}" if path is not None else hint


def at_path(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """The same OSError (same subclass and errno) naming ``path``: for errors raised while writing a
    temporary file or without a file name (a full disk during ``write``)."""
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno or 0), os.fspath(path))
