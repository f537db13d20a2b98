"""Per-file sha256 computed while a layer streams past (index-layout --file-digests).

The tar parser yields entries in stream order and their data areas follow in the same order,
so a queue of pending files is fed slices of each decompressed piece: no second pass and no
copies beyond memoryview slices. Sparse files are hashed as their logical content (holes as
zeros), so the digest equals that of the file a runtime serves.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any

_ZEROS = bytes(1 << 16)


def _zeros(h: Any, n: int) -> None:
    while n > 0:
        k = min(n, len(_ZEROS))
        h.update(_ZEROS[:k] if k < len(_ZEROS) else _ZEROS)
        n -= k


class _Pending:
    __slots__ = ("start", "end", "sha", "runs", "logical", "size")

    def __init__(self, start: int, stored: int, runs: Any, size: int) -> None:
        self.start = start
        self.end = start + stored
        self.sha = hashlib.sha256()
        # sparse: [(logical offset, length)], consumed as stored bytes arrive
        self.runs = deque(runs) if runs is not None else None
        self.logical = 0  # logical bytes hashed so far (sparse only)
        self.size = size

    def update(self, data: memoryview) -> None:
        if self.runs is None:
            self.sha.update(data)
            return
        pos = 0
        while pos < len(data) and self.runs:
            off, length = self.runs[0]
            if self.logical < off:
                _zeros(self.sha, off - self.logical)
                self.logical = off
            take = min(length - (self.logical - off), len(data) - pos)
            self.sha.update(data[pos : pos + take])
            pos += take
            self.logical += take
            if self.logical >= off + length:
                self.runs.popleft()

    def digest(self) -> bytes:
        if self.runs is not None:
            _zeros(self.sha, self.size - self.logical)
        return self.sha.digest()


class FileHasher:
    """Feed it the parser's new entries, then the decompressed piece they came from."""

    def __init__(self) -> None:
        self.pending: deque[_Pending] = deque()
        self.digests: dict[int, bytes] = {}  # data offset in the layer stream -> sha256

    def add(self, entries: list[Any]) -> None:
        for e in entries:
            if e.type != "file":
                continue
            runs = e.sparse
            stored = sum(n for _, n in runs) if runs is not None else e.size
            p = _Pending(e.offset, stored, runs, e.size)
            if stored == 0:
                self.digests[e.offset] = p.digest()
            else:
                self.pending.append(p)

    def feed(self, data: Any, pos: int) -> None:
        """data: the decompressed bytes at stream offset pos."""
        end = pos + len(data)
        view = memoryview(data)
        while self.pending and self.pending[0].start < end:
            p = self.pending[0]
            lo = max(p.start, pos) - pos
            hi = min(p.end, end) - pos
            if hi > lo:
                p.update(view[lo:hi])
            if p.end <= end:
                self.digests[p.start] = p.digest()
                self.pending.popleft()
            else:
                break
