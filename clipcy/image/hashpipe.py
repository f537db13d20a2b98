"""sha256 of a layer's compressed and uncompressed streams, and the BLAKE3 span checksums
of the compressed one (clipcy.storage.spans), each stream on a thread of its own.

Hashing both streams costs about as much CPU as inflating them (zlib-ng inflates a 500 MB
layer in ~0.3 CPU-s; sha256 of it and of its blob, with SHA-NI, ~0.4 CPU-s); done on the
decompressing thread it would halve the speed. hashlib and blake3 release the GIL for pieces
over 2 KiB, so helper threads fed through bounded queues hash on the other core while the
worker inflates and parses. One thread per stream (blob: sha256 + span checksums; tar:
sha256) rather than one for both: three runnable threads let the scheduler even out the
two cores, where one hash thread as long as the inflate would leave a core idle at times.
The pieces are immutable bytes (the blob's 1 MiB reads, the inflater's <= 1 MiB outputs), so
handing them over needs no copy, and the bounded queues keep memory at a few MiB whatever
the layer size.
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
        n = max(streams, 1)
        self._queues: list[queue.Queue[Any]] = [queue.Queue(DEPTH) for _ in range(n)]
        self._cpu = [0.0] * n
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"clipcy-hash-{i}", daemon=True)
            for i in range(n)
        ]
        for t in self._threads:
            t.start()
        self._closed = False

    @property
    def cpu_seconds(self) -> float:
        """CPU time of the hash threads (debug log), once closed."""
        return sum(self._cpu)

    def _run(self, i: int) -> None:
        get = self._queues[i].get
        spans = self._spans.update if i == 0 else None
        sha = self._hashes[i].update if i < len(self._hashes) else None
        cpu0 = time.thread_time()
        while (data := get()) is not None:
            if spans is not None:
                spans(data)
            if sha is not None:
                sha(data)
        self._cpu[i] = time.thread_time() - cpu0

    def update(self, stream: int, data: Any) -> None:
        self._queues[stream].put(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for q in self._queues:
                q.put(None)
            for t in self._threads:
                t.join()

    def hexdigests(self) -> list[str]:
        self.close()
        return [h.hexdigest() for h in self._hashes]

    def spans(self) -> SpanTable:
        """The span checksums of stream 0 (after close)."""
        self.close()
        return self._spans.table()
