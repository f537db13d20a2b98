"""sha256 of a layer's compressed and uncompressed streams, on a thread of its own.

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
from typing import Any

DEPTH = 4  # pieces in flight (each <= 1 MiB): enough to absorb jitter, bounded memory


class HashPipe:
    def __init__(self, streams: int = 2) -> None:
        self._hashes = [hashlib.sha256() for _ in range(streams)]
        self._q: queue.Queue[tuple[int, Any] | None] = queue.Queue(DEPTH)
        self._thread = threading.Thread(target=self._run, name="clipcy-hash", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        hashes = self._hashes
        get = self._q.get
        while (item := get()) is not None:
            hashes[item[0]].update(item[1])

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
