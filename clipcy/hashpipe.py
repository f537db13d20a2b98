"""sha256 of a layer's compressed and uncompressed streams, and the BLAKE3 span checksums
of the compressed one (clipcy.storage.spans), on a thread of its own.

Hashing both streams costs about as much CPU as inflating them; done on the decompressing
thread it would halve the speed. hashlib releases the GIL for pieces over 2 KiB, so a helper
thread fed through a bounded queue hashes on the other core while this one inflates and
parses. The pieces are immutable bytes, so handing them over needs no copy, and the bounded
queue keeps memory at a few MiB whatever the layer size.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from typing import Any

from clipcy.storage.spans import SpanHasher, SpanTable

DEPTH = 4  # pieces in flight (each <= 1 MiB): enough to absorb jitter, bounded memory


class HashPipe:
    """streams: how many sha256 streams (0: none, only span checksums of stream 0)."""

    def __init__(self, streams: int = 2) -> None:
        self._hashes = [hashlib.sha256() for _ in range(streams)]
        self._spans = SpanHasher()
        self._q: queue.Queue[tuple[int, Any] | None] = queue.Queue(DEPTH)
        self._thread = threading.Thread(target=self._run, name="clipcy-hash", daemon=True)
        self._thread.start()
        self._closed = False
        self.cpu_seconds = 0.0  # the hash thread's CPU time, once closed (debug log)

    def _run(self) -> None:
        hashes = self._hashes
        n = len(hashes)
        spans = self._spans.update
        get = self._q.get
        cpu0 = time.thread_time()
        while (item := get()) is not None:
            i, data = item
            if i == 0:
                spans(data)
            if i < n:
                hashes[i].update(data)
        self.cpu_seconds = time.thread_time() - cpu0

    def update(self, stream: int, data: Any) -> None:
        self._q.put((stream, data))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._q.put(None)
            self._thread.join()

    def hexdigests(self) -> list[str]:
        self.close()
        return [h.hexdigest() for h in self._hashes]

    def spans(self) -> SpanTable:
        """The span checksums of stream 0 (after close)."""
        self.close()
        return self._spans.table()
