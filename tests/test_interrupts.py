"""clipcy.interrupts.waiting: an interrupt that cuts a threading wait while it takes its lock
back comes out as itself, not as the RuntimeError CPython's Condition then raises (seen as a
traceback and exit 1 from `clipctl index-layout` under SIGINT, 1 start of 600)."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import pytest

from clipcy.interrupts import waiting


def _cut_at_reacquire(cond: threading.Condition) -> None:
    """Make cond's next wait end as a signal handler raising in _acquire_restore does: the
    interrupt raised, the lock not taken back."""

    def cut(state: object) -> None:
        raise KeyboardInterrupt

    cond._acquire_restore = cut  # type: ignore[attr-defined]


def test_queue_get() -> None:
    q: queue.Queue[int] = queue.Queue()
    _cut_at_reacquire(q.not_empty)
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        q.get(timeout=0.001)  # what it does unguarded
    _cut_at_reacquire(q.not_empty)
    with pytest.raises(KeyboardInterrupt):
        waiting(lambda: q.get(timeout=0.001))
    q.put(1)  # the queue still works: its lock is free
    assert waiting(q.get) == 1


def test_event_wait_and_future_result() -> None:
    ev = threading.Event()
    _cut_at_reacquire(ev._cond)  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        waiting(lambda: ev.wait(0.001))
    fut: Future[int] = Future()
    _cut_at_reacquire(fut._condition)  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        waiting(lambda: fut.result(0.001))


def test_other_errors_pass_through() -> None:
    def fails() -> None:
        try:
            raise ValueError("first")
        except ValueError:
            raise RuntimeError("second") from None

    with pytest.raises(RuntimeError, match="second"):
        waiting(fails)
    assert waiting(lambda: 7) == 7
