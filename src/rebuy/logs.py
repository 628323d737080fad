"""Logging for the command line: readable lines for people, one JSON object per line for schedulers.

``configure(verbose, fmt)`` sets the root logger once per command: level INFO (DEBUG with
``verbose``), to stderr, as ``HH:MM:SS LEVEL logger: message`` (``fmt="text"``) or as JSON lines
(``fmt="json"``: ``{"time": ISO-8601 UTC, "level", "logger", "message"}`` plus ``"exc"`` with the
traceback when one is logged), which Airflow, cron mailers and log shippers parse without regexes.
The format can also come from the environment: ``REBUY_LOG_FORMAT=json``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import Literal

LogFormat = Literal["text", "json"]
FORMATS: tuple[str, ...] = ("text", "json")
NOISY = ("matplotlib", "numba", "py4j", "PIL")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (UTC time, level, logger, message)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def log_format(requested: str | None = None) -> str:
    """The format to use: ``requested``, else ``REBUY_LOG_FORMAT``, else text."""
    return (requested or os.environ.get("REBUY_LOG_FORMAT") or "text").lower()


def configure(verbose: bool = False, fmt: str | None = None) -> None:
    """Route every logger to stderr at INFO (DEBUG when ``verbose``) in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format(fmt) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
