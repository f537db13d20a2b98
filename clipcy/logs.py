"""Logging: CLIP_LOG_LEVEL (debug, info, warn, error) and -v/-q; a flag beats the variable."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("clipcy")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def level_from_env() -> int:
    return _LEVELS.get(os.environ.get("CLIP_LOG_LEVEL", "").strip().lower(), logging.WARNING)


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    if quiet:
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    else:
        level = level_from_env()
    handler = _Handler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Erases a progress bar before writing, so a log line never lands inside it."""

    def emit(self, record: logging.LogRecord) -> None:
        from clipcy.progress import clear_active

        clear_active()
        super().emit(record)


@contextmanager
def step(what: str) -> Iterator[None]:
    """Log `what` at debug level with the time it took."""
    t0 = time.perf_counter()
    log.debug("%s ...", what)
    yield
    log.debug("%s done in %.3f s", what, time.perf_counter() - t0)
