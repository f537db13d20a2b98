"""Span checksums of a layer blob: recorded at index time, checked by every read.

A blob is cut into consecutive *spans* of compressed bytes, and the archive stores the BLAKE3
digest of each (docs/FORMAT.md "Span checksums"). Writers cut a fixed grid of SPAN_SIZE
bytes (the last span is shorter); readers accept any cut. A grid (not cuts at gzip resume
points / zstd frame starts) lets the hash thread compute the digests from the blob bytes it
already hashes for the descriptor digest, without waiting for the decompressor; a read that
starts at a resume point fetches at most SPAN_SIZE - 1 bytes before it (perf/RESULTS-
integrity.md measures the cost).

Why BLAKE3 and not xxh3 or crc32c: blobs may come from a registry over HTTP (clipcy.storage
remote stores), and a hostile server could craft bytes matching a non-cryptographic checksum.
BLAKE3 costs ~1/4 of the sha256 the indexer already computes, on the same helper thread.

VerifiedBlob.pread(offset, n) returns compressed bytes only after every span they touch has
been fetched (adjacent missing spans in ONE source.fetch call), hashed and compared.
"""

from __future__ import annotations

import bisect
import os
from _thread import allocate_lock  # threading.Lock, without importing threading (~0.8 ms)
from collections import OrderedDict
from collections.abc import Sequence
from itertools import accumulate

import blake3

from clipcy.errors import BlobError, SpanChecksumError
from clipcy.storage.checksums import (
    CHECKSUM_DIGEST_SIZES,
    CHECKSUM_NONE,
    CHECKSUM_WRITTEN,
    SPAN_SIZE,
)

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object  # (protocols are for the type checker: a plain base at run time)

DIGEST_SIZE = CHECKSUM_DIGEST_SIZES[CHECKSUM_WRITTEN]  # what index-layout records
RECENT_SPANS = 8  # verified spans kept per blob, so that unaligned sequential reads do not
# fetch and hash the span they share twice


def span_digest(data: bytes | memoryview, size: int = DIGEST_SIZE) -> bytes:
    """BLAKE3 of data, its first `size` output bytes (32: the full default digest)."""
    return blake3.blake3(data).digest(length=size)


class SpanTable:
    """The spans of one blob: lengths (consecutive from offset 0) and their digests."""

    __slots__ = ("kind", "lengths", "digests", "digest_size", "_ends")

    def __init__(self, kind: int, lengths: Sequence[int], digests: bytes) -> None:
        self.kind = kind
        self.lengths = list(lengths)
        self.digests = digests
        self.digest_size = CHECKSUM_DIGEST_SIZES.get(kind, 0)
        self._ends: list[int] | None = None

    def __repr__(self) -> str:
        return f"<SpanTable {len(self.lengths)} spans, {self.size} bytes>"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SpanTable) and self.kind == other.kind
                and self.lengths == other.lengths and self.digests == other.digests)

    __hash__ = None  # type: ignore[assignment]

    @property
    def count(self) -> int:
        return len(self.lengths)

    @property
    def ends(self) -> list[int]:
        if self._ends is None:
            self._ends = list(accumulate(self.lengths))
        return self._ends

    @property
    def size(self) -> int:
        return self.ends[-1] if self.lengths else 0

    def bounds(self, i: int) -> tuple[int, int]:
        """[start, end) of span i in the blob."""
        end = self.ends[i]
        return end - self.lengths[i], end

    def index(self, offset: int) -> int:
        """The span holding the byte at offset (0 <= offset < size)."""
        return bisect.bisect_right(self.ends, offset)

    def digest(self, i: int) -> bytes:
        size = self.digest_size
        return self.digests[i * size:(i + 1) * size]

    def problem(self) -> str:
        """Why the table is unusable, or ""."""
        if self.kind == CHECKSUM_NONE or self.kind not in CHECKSUM_DIGEST_SIZES:
            return f"unknown checksum kind {self.kind}"
        if len(self.digests) != self.digest_size * len(self.lengths):
            return f"{len(self.digests)} digest bytes for {len(self.lengths)} spans"
        if any(n <= 0 for n in self.lengths):
            return "a span is empty"
        return ""


class SpanHasher:
    """Cuts a stream fed piece by piece into SPAN_SIZE spans and digests each (index time)."""

    def __init__(self, span_size: int = SPAN_SIZE) -> None:
        self.span_size = span_size
        self._h = blake3.blake3()
        self._fill = 0
        self._lengths: list[int] = []
        self._digests: list[bytes] = []

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        size = self.span_size
        while view.nbytes:
            take = min(size - self._fill, view.nbytes)
            self._h.update(view[:take])
            self._fill += take
            view = view[take:]
            if self._fill == size:
                self._close()

    def _close(self) -> None:
        self._digests.append(self._h.digest(length=DIGEST_SIZE))
        self._lengths.append(self._fill)
        self._h = blake3.blake3()
        self._fill = 0

    def table(self) -> SpanTable:
        if self._fill:
            self._close()
        return SpanTable(CHECKSUM_WRITTEN, self._lengths, b"".join(self._digests))


class BlobSource:
    """Raw bytes of one blob (a local file, HTTP range requests...), thread-safe: subclasses
    implement fetch(). The hints below tell a source that can fetch ahead (a remote one) what
    the reader will consume; by default they do nothing, so a source declares what it can do
    by overriding them, and callers never ask."""

    size: int = 0  # its descriptor's size; fetch never reads past it
    digest: str = ""  # for messages and cache keys
    path: str = ""  # where it is, for messages

    def fetch(self, offset: int, n: int) -> bytes:
        """Exactly n bytes at offset (BlobError if the blob cannot give them)."""
        raise NotImplementedError

    def will_need(self, offset: int, end: int) -> None:
        """Hint: the reader will consume [offset, end) (span-aligned) next."""

    def read_limit(self, end: int, on: bool = False) -> None:
        """Hint: reading stops at compressed offset end; `on`: it goes on in order."""

    def prefetch(self, offset: int, end: int) -> None:
        """Hint: [offset, end) will be read soon (the start of a file read next)."""

    def discard(self) -> bool:
        """Forget bytes fetched ahead, because they failed their checksum; True when a
        second fetch may give other bytes (damage in transit), False when it cannot."""
        return False

    def close(self) -> None:
        """Release what the source holds (a file descriptor, buffers)."""


class SpanCache(Protocol):
    """Optional store-side cache of verified spans (e.g. on disk for a remote store), keyed
    by blob digest and the span's offset and length. What get() returns is verified again
    (cheap next to a fetch), so a damaged cache cannot give wrong bytes either."""

    def get(self, digest: str, offset: int, length: int) -> bytes | None: ...

    def put(self, digest: str, offset: int, data: bytes) -> object: ...


class FetchObserver(Protocol):
    """Told of every fetch from a blob's source (a mount's counters: clipcy.fusemount.counters):
    fetching() before it, with what it returns handed back to fetched() after it."""

    def fetching(self) -> int: ...

    def fetched(self, token: int, n: int) -> None: ...


class VerifiedBlob:
    """pread(offset, n) of a blob's compressed bytes, every span checked before use.

    Thread-safe: the source is, the recent-span memo has a lock, and nothing else changes.
    """

    observer: FetchObserver | None = None  # set by whoever opened it (LayerReaders)

    def __init__(self, source: BlobSource, table: SpanTable, cache: SpanCache | None = None,
                 digest: str | None = None) -> None:
        """digest: the blob's, for messages and cache keys (default: source.digest)."""
        digest = digest or source.digest
        problem = table.problem()
        if problem:
            raise BlobError(f"layer blob {digest}: unusable span checksums ({problem})")
        if table.size != source.size:
            raise BlobError(f"layer blob {digest}: span checksums cover {table.size} "
                            f"bytes, the blob is {source.size}")
        self.source = source
        self.table = table
        self.digest = digest
        self.size = source.size
        self.path = source.path or digest  # for messages
        self._cache = cache
        self._recent: OrderedDict[int, bytes] = OrderedDict()
        self._lock = allocate_lock()
        self.fetched = 0  # bytes fetched from the source (perf, tests)

    def pread(self, offset: int, n: int) -> bytes:
        """n verified bytes at offset, fewer only at the end of the blob."""
        if offset < 0 or n < 0:
            raise ValueError(f"bad read of {n} bytes at offset {offset} in {self.digest}")
        end = min(offset + n, self.size)
        if offset >= end:
            return b""
        t = self.table
        first, last = t.index(offset), t.index(end - 1)
        spans = self._spans(first, last)
        lo = offset - t.bounds(first)[0]
        if len(spans) == 1:
            data = spans[0]
            return data if lo == 0 and end - offset == len(data) else data[lo:lo + end - offset]
        return b"".join(spans)[lo:lo + end - offset]

    def _spans(self, first: int, last: int) -> list[bytes]:
        got: dict[int, bytes] = {}
        with self._lock:
            for i in range(first, last + 1):
                b = self._recent.get(i)
                if b is not None:
                    self._recent.move_to_end(i)
                    got[i] = b
        if self._cache is not None:
            t = self.table
            for i in range(first, last + 1):
                if i not in got:
                    start, end = t.bounds(i)
                    b = self._cache.get(self.digest, start, end - start)
                    if (b is not None and len(b) == end - start
                            and span_digest(b, t.digest_size) == t.digest(i)):
                        got[i] = b
        i = first
        while i <= last:  # each run of missing spans: one fetch
            if i in got:
                i += 1
                continue
            j = i
            while j + 1 <= last and j + 1 not in got:
                j += 1
            self._fetch(i, j, got)
            i = j + 1
        with self._lock:
            for i in range(first, last + 1):
                self._recent[i] = got[i]
                self._recent.move_to_end(i)
            while len(self._recent) > RECENT_SPANS:
                self._recent.popitem(last=False)
        return [got[i] for i in range(first, last + 1)]

    def will_need(self, offset: int, end: int) -> None:
        """A hint: the reader will soon consume [offset, end). A source that can (HTTP) then
        fetches the whole span-aligned range in one request; others ignore it."""
        end = min(end, self.size)
        if 0 <= offset < end:
            t = self.table
            self.source.will_need(t.bounds(t.index(offset))[0], t.bounds(t.index(end - 1))[1])

    def prefetch(self, offset: int, end: int) -> None:
        """A hint: a reader will soon consume [offset, end) (the start of the next file it
        reads). A source that can (HTTP) fetches those spans now, on a helper thread, less
        the leading ones already verified here; others ignore it. What is fetched goes
        through the same checks as any fetch before it is used."""
        end = min(end, self.size)
        if not 0 <= offset < end:
            return
        t = self.table
        i, j = t.index(offset), t.index(end - 1)
        with self._lock:
            while i <= j and i in self._recent:
                i += 1
        if i <= j:
            self.source.prefetch(t.bounds(i)[0], t.bounds(j)[1])

    def read_limit(self, end: int, on: bool = False) -> None:
        """A hint: reading will not go past the compressed offset end, and (`on`) goes on in
        order; a source that reads ahead (HTTP) then does, up to there (a span boundary)."""
        end = min(end, self.size)
        if end > 0:
            self.source.read_limit(self.table.bounds(self.table.index(end - 1))[1], on)

    def _fetch(self, i: int, j: int, got: dict[int, bytes]) -> None:
        try:
            self._fetch_once(i, j, got)
        except SpanChecksumError:
            # bytes damaged in transit (a remote source): fetch them again, once; a blob
            # that really changed fails the second time too
            if not self.source.discard():
                raise
            self._fetch_once(i, j, got)

    def _fetch_once(self, i: int, j: int, got: dict[int, bytes]) -> None:
        t = self.table
        start, end = t.bounds(i)[0], t.bounds(j)[1]
        obs = self.observer
        if obs is None:
            raw = self.source.fetch(start, end - start)
        else:
            token, raw = obs.fetching(), b""
            try:
                raw = self.source.fetch(start, end - start)
            finally:
                obs.fetched(token, len(raw))
        if len(raw) != end - start:
            raise BlobError(f"layer blob {self.digest} gave {len(raw)} bytes at compressed "
                            f"offset {start}, asked for {end - start}")
        self.fetched += len(raw)
        view = memoryview(raw)
        for k in range(i, j + 1):
            s, e = t.bounds(k)
            piece = view[s - start:e - start]
            if span_digest(piece, t.digest_size) != t.digest(k):
                raise SpanChecksumError(
                    f"layer blob {self.digest} has changed: span checksum mismatch at "
                    f"compressed offset {s} ({e - s} bytes)")
            data = raw if i == j else piece.tobytes()
            got[k] = data
            if self._cache is not None:
                self._cache.put(self.digest, s, data)

    def close(self) -> None:
        with self._lock:
            self._recent.clear()
        self.source.close()


def hash_file(path: str | os.PathLike[str], span_size: int = SPAN_SIZE) -> SpanTable:
    """The span checksums of a whole file, as index-layout records them for a blob."""
    h = SpanHasher(span_size)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.table()
