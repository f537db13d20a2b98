"""Blocking waits in the main thread that an interrupt cannot turn into another error.

CPython's threading.Condition.wait (behind Event.wait, queue.Queue.get, Future.result)
re-acquires its lock after the wait in `_acquire_restore`. A signal handler that raises
there (SIGINT's KeyboardInterrupt, clipctl's Terminated for SIGTERM) leaves that lock
released, and the `with` block around the wait then raises RuntimeError("release unlocked
lock") over the interrupt: the command would end with a traceback and exit 1 instead of its
one line and 130 or 143. The interrupt is still there, as the RuntimeError's context.
"""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False  # typing's constant, without importing typing at start-up
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

__all__ = ["waiting"]


def waiting(wait: Callable[[], T]) -> T:
    """wait() (a blocking wait on a threading primitive), with an interrupt that cut it
    raised as itself rather than the RuntimeError it can leave behind."""
    try:
        return wait()
    except RuntimeError as e:
        cut = e.__context__
        if isinstance(cut, KeyboardInterrupt):
            raise cut from None
        raise
