"""Decoded spans: SPAN-sized pieces of the layers' uncompressed streams, in an LRU bounded in
bytes (not the 64 KiB checksum spans of the compressed blobs, clipcy.storage.spans).

A FUSE read asks for at most 1 MiB (the kernel's largest request, 256 pages), often much less;
decompressing from a resume point for each request would inflate the same bytes many times.
So reads are served from SPAN-aligned spans of the uncompressed layer stream, each
decompressed once through the layer reader (which resumes at the nearest recorded point and
parks its decoder at the end of the read, so span k+1 continues where span k stopped) and kept
while the budget allows. parts() hands out the cached spans themselves (with the start and
length of the piece each contributes): the binding replies with them as one iovec, so the
bytes are not copied in this process.

Concurrent requests for one span wait for the thread decompressing it instead of repeating
the work; a request for span k while one of the AHEAD spans before it is being decompressed
waits for that too, so the kernel's parallel readahead requests and the helper continue one
decoder instead of starting several. Once a file is read sequentially (span k right after
k-1; each file of a layer is its own stream), a helper thread keeps the next AHEAD spans
inflated while the reader's spans are handed to the kernel (no further than the end of the
file being read, and at most a quarter of the budget), so the decoder rarely waits for a
request: the kernel reads ahead 1 MiB at a time, the helper 2 MiB beyond that. A sequential
reader leaves BEHIND spans cached behind it and drops older ones it streamed (the kernel
keeps the file's pages).
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

SPAN = 256 << 10
AHEAD = 8  # spans a helper keeps inflated ahead of a sequential reader (2 MiB)
BEHIND = 16  # spans a sequential reader leaves cached behind it (the kernel has the pages)
STREAMS = 64  # streams (files being read) whose position is remembered

__all__ = ["SPAN", "DecodedSpanCache"]


class DecodedSpanCache:
    """read(layer, offset, n): bytes of layer's uncompressed stream, through the cache."""

    def __init__(self, reader: Callable[[int], Any], budget: int, span: int = SPAN) -> None:
        self._reader = reader  # layer index -> object with pread(offset, n)
        self.budget = budget
        self.span = span
        self._lru: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._held = 0
        self._busy: dict[tuple[int, int], threading.Event] = {}
        self._lock = threading.Lock()
        # a stream (layer, the file's last span or None) -> the span its reader reached last:
        # two files of one layer read at once are two streams, each read ahead
        self._last: OrderedDict[tuple[int, int | None], int] = OrderedDict()
        self._ends: dict[int, int] = {}  # layer -> its last span, once a read found it
        self._ahead_done: set[tuple[int, int]] = set()  # read ahead, no reader yet
        self._streamed: set[tuple[int, int]] = set()  # made for a sequential reader
        self._ahead: queue.SimpleQueue[tuple[int, int, int, int | None]] = queue.SimpleQueue()
        self._helper: threading.Thread | None = None
        self.decompressed = 0  # bytes produced by the layer readers (for perf and tests)
        self.hits = 0
        self.misses = 0
        # replay (clipcy.fusemount.replay) fills spans ahead of the program's reads with fill();
        # before a read decodes a span itself, on_miss(layer, k) lets the replay make it wait
        # for compressed bytes already on their way (they are fetched once)
        self.on_miss: Callable[[int, int], None] | None = None
        self._replayed: set[tuple[int, int]] = set()  # filled by the replay, not read yet
        self.replay_hits = 0  # reads that found a span the replay filled
        self.read_misses = 0  # spans a read decoded itself (not the helper, not the replay)

    @property
    def held(self) -> int:
        return self._held

    def read(self, layer: int, offset: int, n: int, end: int | None = None) -> bytes:
        """Up to n bytes at offset (fewer only where the layer stream ends). `end`: where the
        file being read ends in the layer stream (read-ahead stops there)."""
        parts = self.parts(layer, offset, n, end)
        if len(parts) == 1:
            data, lo, length = parts[0]
            return data if lo == 0 and length == len(data) else data[lo:lo + length]
        return b"".join([memoryview(data)[lo:lo + length] for data, lo, length in parts])

    def parts(self, layer: int, offset: int, n: int,
              end: int | None = None) -> list[tuple[bytes, int, int]]:
        """read() without its copy: (span, start, length) pieces of cached spans whose bytes,
        in order, are read()'s (the FUSE binding hands them to the kernel as they are)."""
        span = self.span
        stop = (end - 1) // span if end is not None else None
        out: list[tuple[bytes, int, int]] = []
        k = offset // span
        while n > 0:
            data = self._span(layer, k, stop)
            lo = offset - k * span
            length = min(n, len(data) - lo)
            if length <= 0:
                break  # the layer stream ends before offset
            out.append((data, lo, length))
            offset += length
            n -= length
            if len(data) < span:
                break  # ... or inside this span
            k += 1
        return out

    def _span(self, layer: int, k: int, stop: int | None = None,
              helper: bool = False) -> bytes:
        key = (layer, k)
        while True:
            with self._lock:
                if k > self._ends.get(layer, k):
                    return b""  # past the end of the layer stream (found by an earlier read)
                if helper and k <= self._last.get((layer, stop), -1):
                    return b""  # a reader got past this span while the helper waited
                data = self._lru.get(key)
                if data is not None:
                    self._lru.move_to_end(key)
                    self.hits += 1
                    if not helper and key in self._replayed:
                        self._replayed.discard(key)
                        self.replay_hits += 1
                    if helper or key not in self._ahead_done:
                        return data
                    self._ahead_done.discard(key)  # a reader reached the span read ahead:
                    self._reached(layer, stop, k)  # keep the helper ahead of it
                    self._drop_behind(layer, k)
                    break
                wait = self._busy.get(key)
                for j in range(k - 1, k - 1 - AHEAD, -1):
                    if wait is not None:
                        break
                    # a decoder a few spans before k (the helper, or a reader ahead of this
                    # one) continues to k: wait for it rather than start a second decoder
                    # from a resume point (up to 1 MiB inflated again, on the same cores)
                    wait = self._busy.get((layer, j))
                if wait is None:
                    mine = self._busy[key] = threading.Event()
                    self.misses += 1
                    self.read_misses += not helper
                    break
            wait.wait()  # another thread is producing this span (or one before it)
        if data is not None:
            self._prefetch(layer, k + 1, stop)
            return data
        data, read = b"", False
        try:
            on_miss = self.on_miss
            if on_miss is not None and not helper:
                on_miss(layer, k)
            data = bytes(self._reader(layer).pread(k * self.span, self.span))
            read = True
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
                        self._streamed.discard(old)
                        self._replayed.discard(old)
                del self._busy[key]
                if read and len(data) < self.span:  # the stream ends: read no further ahead
                    self._ends[layer] = k if data else k - 1
                # sequential (span k right after k-1 on this layer): have the next spans
                # inflated on the helper thread while this one is copied to the kernel
                ahead = (not helper and len(data) == self.span
                         and self._last.get((layer, stop)) == k - 1)
                if helper:
                    self._ahead_done.add(key)
                    self._streamed.add(key)
                else:
                    self._reached(layer, stop, k)
                    if ahead:
                        self._streamed.add(key)
                        self._drop_behind(layer, k)
            mine.set()
        if ahead:
            self._prefetch(layer, k + 1, stop)
        return data

    def fill(self, layer: int, k: int) -> int:
        """Decode span k of layer into the cache for reads to come (the replay): the bytes
        decoded, 0 when the span is cached or being decoded already. A read that asks for it
        meanwhile waits for it instead of decoding it again. Errors are the caller's."""
        key = (layer, k)
        with self._lock:
            if key in self._lru or key in self._busy or k > self._ends.get(layer, k):
                return 0
            mine = self._busy[key] = threading.Event()
        data, read = b"", False
        try:
            data = bytes(self._reader(layer).pread(k * self.span, self.span))
            read = True
        finally:
            with self._lock:
                self.decompressed += len(data)
                if data and len(data) <= self.budget:
                    self._lru[key] = data
                    self._held += len(data)
                    self._replayed.add(key)
                    while self._held > self.budget:
                        old, dropped = self._lru.popitem(last=False)
                        self._held -= len(dropped)
                        self._ahead_done.discard(old)
                        self._streamed.discard(old)
                        self._replayed.discard(old)
                del self._busy[key]
                if read and len(data) < self.span:
                    self._ends[layer] = k if data else k - 1
            mine.set()
        return len(data)

    def _reached(self, layer: int, stop: int | None, k: int) -> None:
        """A reader of the stream (layer, stop) got span k (the lock is held)."""
        key = (layer, stop)
        self._last[key] = k
        self._last.move_to_end(key)
        if len(self._last) > STREAMS:
            self._last.popitem(last=False)

    def _drop_behind(self, layer: int, k: int) -> None:
        """A sequential reader reached span k: forget the span BEHIND before it if it was made
        for the stream. The kernel keeps the file's pages (keep_cache), so a streamed span is
        rarely asked for again; dropping it keeps a long read from flushing the cache and lets
        malloc hand its memory (mapped, warm) to the next span instead of faulting in new
        pages for the whole budget (~2.5 us per 4 KiB page on the decoder's path). Called with
        the lock held."""
        old = (layer, k - BEHIND)
        if old in self._streamed:
            self._streamed.discard(old)
            self._ahead_done.discard(old)
            dropped = self._lru.pop(old, None)
            if dropped is not None:
                self._held -= len(dropped)

    def _prefetch(self, layer: int, k: int, stop: int | None) -> None:
        """Have the helper inflate spans k.. (up to AHEAD of them, none past `stop`)."""
        depth = min(AHEAD, self.budget // (4 * self.span))  # a quarter of the budget at most
        last = min(k + depth - 1, self._ends.get(layer, k + depth - 1))
        if stop is not None:
            last = min(last, stop)
        if last < k:
            return
        if self._helper is None:
            with self._lock:
                if self._helper is None:
                    self._helper = threading.Thread(target=self._ahead_loop, daemon=True,
                                                    name="clipcy-span-ahead")
                    self._helper.start()
        self._ahead.put((layer, k, last, stop))

    def _ahead_loop(self) -> None:
        while True:
            layer, first, last, stop = self._ahead.get()
            for k in range(first, last + 1):
                with self._lock:
                    if k <= self._last.get((layer, stop), -1):
                        continue  # a reader is past it already (a stale request)
                    if (layer, k) in self._lru or (layer, k) in self._busy:
                        continue
                try:
                    if len(self._span(layer, k, stop, helper=True)) < self.span:
                        break  # the layer stream ends here
                except Exception:  # noqa: BLE001 - a reader that needs the span reports it
                    break

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()
            self._ahead_done.clear()
            self._streamed.clear()
            self._replayed.clear()
            self._held = 0


SpanCache = DecodedSpanCache  # the former name, kept working for callers
