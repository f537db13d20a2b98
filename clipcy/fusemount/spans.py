"""Decompressed spans of the layers' uncompressed streams, in an LRU bounded in bytes.

A FUSE read asks for at most 128 KiB (the kernel's request size); decompressing from a resume
point for each request would inflate the same bytes many times. So reads are served from
SPAN-aligned spans of the uncompressed layer stream, each decompressed once through the layer
reader (which resumes at the nearest recorded point and parks its decoder at the end of the
read, so span k+1 continues where span k stopped) and kept while the budget allows.

Concurrent requests for one span wait for the thread decompressing it instead of repeating
the work; a request for span k+1 while span k is being decompressed waits for it too, so the
kernel's parallel readahead requests continue one decoder instead of starting several. Once
a layer is read sequentially (span k right after k-1), a helper thread inflates span k+1
while span k is handed to the kernel (when the budget holds a few spans).
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

SPAN = 256 << 10

__all__ = ["SPAN", "SpanCache"]


class SpanCache:
    """read(layer, offset, n): bytes of layer's uncompressed stream, through the cache."""

    def __init__(self, reader: Callable[[int], Any], budget: int, span: int = SPAN) -> None:
        self._reader = reader  # layer index -> object with pread(offset, n)
        self.budget = budget
        self.span = span
        self._lru: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._held = 0
        self._busy: dict[tuple[int, int], threading.Event] = {}
        self._lock = threading.Lock()
        self._last: dict[int, int] = {}  # layer -> the span a reader produced last
        self._ahead_done: set[tuple[int, int]] = set()  # read ahead, no reader yet
        self._ahead: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self._helper: threading.Thread | None = None
        self.decompressed = 0  # bytes produced by the layer readers (for perf and tests)
        self.hits = 0
        self.misses = 0

    @property
    def held(self) -> int:
        return self._held

    def read(self, layer: int, offset: int, n: int) -> bytes:
        """Up to n bytes at offset (fewer only where the layer stream ends)."""
        span = self.span
        first, last = offset // span, (offset + n - 1) // span
        if first == last:
            data = self._span(layer, first)
            lo = offset - first * span
            return data[lo:lo + n]
        parts = [self._span(layer, k) for k in range(first, last + 1)]
        joined = b"".join(parts)
        lo = offset - first * span
        return joined[lo:lo + n]

    def _span(self, layer: int, k: int, helper: bool = False) -> bytes:
        key = (layer, k)
        while True:
            with self._lock:
                data = self._lru.get(key)
                if data is not None:
                    self._lru.move_to_end(key)
                    self.hits += 1
                    if key not in self._ahead_done:
                        return data
                    self._ahead_done.discard(key)  # a reader reached the span read ahead:
                    self._last[layer] = k  # keep one span ahead of it
                    break
                wait = self._busy.get(key) or self._busy.get((layer, k - 1))
                if wait is None:
                    mine = self._busy[key] = threading.Event()
                    self.misses += 1
                    break
            wait.wait()  # another thread is producing this span (or the one before it)
        if data is not None:
            self._prefetch(layer, k + 1)
            return data
        data = b""
        try:
            data = bytes(self._reader(layer).pread(k * self.span, self.span))
        finally:
            with self._lock:
                self.decompressed += len(data)
                if data and len(data) <= self.budget:
                    self._lru[key] = data  # before waking the waiters: they find it here
                    self._held += len(data)
                    while self._held > self.budget:
                        old, dropped = self._lru.popitem(last=False)
                        self._held -= len(dropped)
                        self._ahead_done.discard(old)
                del self._busy[key]
                # sequential (span k right after k-1 on this layer): have the next span
                # inflated on the helper thread while this one is copied to the kernel
                ahead = (not helper and len(data) == self.span
                         and self._last.get(layer) == k - 1)
                if helper:
                    self._ahead_done.add(key)
                else:
                    self._last[layer] = k
            mine.set()
        if ahead:
            self._prefetch(layer, k + 1)
        return data

    def _prefetch(self, layer: int, k: int) -> None:
        if self.budget < 4 * self.span:
            return  # no room to keep what the helper reads
        if self._helper is None:
            with self._lock:
                if self._helper is None:
                    self._helper = threading.Thread(target=self._ahead_loop, daemon=True,
                                                    name="clipcy-span-ahead")
                    self._helper.start()
        self._ahead.put((layer, k))

    def _ahead_loop(self) -> None:
        while True:
            layer, k = self._ahead.get()
            with self._lock:
                if (layer, k) in self._lru or (layer, k) in self._busy:
                    continue
            try:
                self._span(layer, k, helper=True)
            except Exception:  # noqa: BLE001 - a reader that needs the span reports the error
                pass

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()
            self._held = 0
