"""Progress bars and timed steps: a bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger(__name__)


def interactive() -> bool:
    """True when progress bars make sense (stderr is a terminal)."""
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a tqdm bar on a terminal; silent otherwise (steps log their own timing)."""
    yield from tqdm(iterable, desc=desc, total=total, disable=not interactive(), leave=False)


@contextmanager
def step(desc: str, logger: logging.Logger | None = None) -> Iterator[None]:
    """Log the start and the duration (seconds) of one pipeline step."""
    lg = logger or log
    lg.info("%s ...", desc)
    t0 = time.perf_counter()
    yield
    lg.info("%s done in %.1f s", desc, time.perf_counter() - t0)
