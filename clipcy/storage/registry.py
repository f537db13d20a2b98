"""Remote blob stores: a docker:// or http(s):// storage ref (clipcy.storage.refs) becomes
blob sources fetching byte ranges over HTTP, with read-ahead and one shared span cache.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clipcy.storage.auth import RegistryAuth
from clipcy.storage.diskcache import DEFAULT_MAX_MIB, DiskSpanCache
from clipcy.storage.http import BlobURL, HttpClient, HttpOptions, redact
from clipcy.storage.refs import DIR, DOCKER, HTTP, LOOPBACK, StorageRef, parse_storage_ref

if TYPE_CHECKING:
    from clipcy.storage.spans import SpanCache, SpanTable, VerifiedBlob

# The storage ref names, importable from here as before the split.
__all__ = ["DIR", "DOCKER", "HTTP", "RemoteBlob", "RemoteOptions", "RemoteStore", "StorageRef",
           "parse_storage_ref"]


@dataclass(frozen=True)
class RemoteOptions:
    """How remote stores connect and cache (the readers' --authfile, --timeout, --cache-*)."""

    authfile: str | None = None
    http: HttpOptions = field(default_factory=HttpOptions)
    insecure: bool = False  # docker://: plain http even for non-loopback hosts
    cache: bool = True
    cache_dir: str | None = None
    cache_max_mib: int = DEFAULT_MAX_MIB
    readahead_mib: int = 8  # most bytes fetched ahead of a sequential reader (0: none)


def _past(ranges: list[tuple[int, int]], top: int) -> int:
    """The end of what ranges cover contiguously from top (top if none covers it)."""
    for s, e in ranges:
        if s <= top < e:
            top = e
    return top


class RemoteBlob:
    """The BlobSource of one remote blob: fetch(offset, n) = one range request, plus
    read-ahead, so that a reader decoding compressed bytes piece by piece waits for one round
    trip, not one per piece.

    - will_need(offset, end): the reader knows it will consume [offset, end) (a gzip read
      from its resume point up to the point after its end): the next fetch in that range
      asks for all of it at once;
    - reading on (the file's reader says it reads in order, or fetches follow each other
      past the hinted range) fetches ahead on helper threads: windows of 2 MiB doubling up to
      readahead_mib, at most AHEAD requests in flight, while less than two windows are
      buffered ahead of the reader, so decoding overlaps the round trips; never past
      read_limit() (the compressed end of the file being read, from the layer reader).
    - prefetch(offset, end): a reader will soon read there (the start of the next files of
      an extract): fetched now on a helper thread, at most PREFETCH such ranges held (the
      oldest forgotten), less what is already buffered or on its way; a fetch in the range
      takes it over as its read-ahead, so the file's first read waits for no round trip.
    Bytes fetched ahead are held in memory unverified and handed to VerifiedBlob like any
    fetch (which checks them before use); what the reader has passed is dropped. A fetch
    that the buffers cover in part asks only for the rest."""

    WINDOW0 = 2 << 20
    AHEAD = 2
    PREFETCH = 4
    BUFFERED = 32 << 20  # most bytes held fetched ahead and not yet reached
    PREFETCH_STALE = 64  # a prefetch not reached after this many fetches may be dropped
    PREFETCH_REST = 1 << 20  # a prefetch whose start is already on its way: only a rest this big
    NEAR = 256 << 10  # a fetch this close to the last one's end counts as sequential

    def __init__(self, url: BlobURL, readahead: int, pool: ThreadPoolExecutor | None,
                 cached: Callable[[int], bool] | None = None) -> None:
        self.url = url
        self._cached = cached  # whether the span at an offset is in the disk cache
        self.digest = url.name
        self.size = url.size
        self.path = redact(url.url)
        self._max = readahead
        self._pool = pool
        self._lock = threading.Lock()
        self._bufs: list[tuple[int, bytes]] = []  # (start, bytes): fetched, not yet verified
        self._pending: list[tuple[int, int, Future[bytes]]] = []  # start, end, future
        self._pre: list[tuple[int, int, Future[bytes]]] = []  # prefetches not yet reached
        self._pre_at: dict[int, int] = {}  # id of each: the fetch count when it was made
        self._fetches = 0
        self._hint = (0, 0)
        self._hint_end = 0  # the end of the last hint: reading past it is reading on
        self._last_end = -1
        self._window = 0
        self._limit = url.size  # no read-ahead past this (the end of the file being read)
        self._then = 0  # ... or past this: the end of the next files, when they follow it
        self._on = False  # the file's reader reads in order: read ahead from the first fetch

    def __repr__(self) -> str:
        return f"<RemoteBlob {self.digest} at {self.path}>"

    def will_need(self, offset: int, end: int) -> None:
        with self._lock:
            self._hint = (offset, min(end, self.size))
            self._hint_end = self._hint[1]

    def read_limit(self, end: int, on: bool = False) -> None:
        with self._lock:
            self._limit = min(max(end, 0), self.size)
            self._on = on

    def _from_bufs(self, offset: int, end: int) -> bytes:
        """The longest run of bytes from offset (up to end) that the buffers hold."""
        parts = []
        pos = offset
        while pos < end:
            for s, b in self._bufs:
                if s <= pos < s + len(b):
                    piece = b[pos - s:min(end, s + len(b)) - s]
                    parts.append(piece)
                    pos += len(piece)
                    break
            else:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def prefetch(self, offset: int, end: int) -> None:
        if self._pool is None or not self._max:
            return
        end = min(end, self.size)
        with self._lock:
            if not self.url.resolved and (self._pending or self._pre or self._last_end >= 0):
                return  # (it would take its turn before the reader's own fetch; the
                # first fetch of a blob, made while its reader opens, may resolve the URL)
            if 0 <= self._last_end - self.NEAR <= offset <= self._limit + self.WINDOW0 or (
                    0 <= self._last_end <= offset <= self._limit + self.WINDOW0):
                # it follows what is being read: read-ahead goes on up to its end, in the
                # usual windows (many small files: a few large requests, not one per file)
                self._then = max(self._then, end)
                return
            top = _past(self._on_the_way(), offset)  # skip what is buffered or on its way
        if top >= end or (top > offset and end - top < self.PREFETCH_REST):
            return  # (a small rest: the reads will ask for it with their own bytes)
        if self._cached is not None and self._cached(top):
            return
        with self._lock:
            if len(self._pre) >= self.PREFETCH:
                oldest = self._pre[0]
                if self._fetches - self._pre_at.get(id(oldest), 0) < self.PREFETCH_STALE:
                    return  # enough held or on its way: this file's reads ask for it
                del self._pre[0]  # never reached (its file was read from elsewhere)
            entry = (top, end, self._pool.submit(self.url.fetch, top, end - top))
            self._pre.append(entry)
            self._pre_at = {id(p): self._pre_at.get(id(p), self._fetches) for p in self._pre}

    def _stop(self) -> int:
        """No read-ahead past this: the end of the file being read, or of the next files
        when they follow it."""
        return self._limit if self._then <= self._limit else self._then

    def _next_start(self, pos: int) -> int:
        """Where the first request on its way that starts after pos starts (or the size)."""
        return min((p[0] for p in self._pending + self._pre if p[0] > pos), default=self.size)

    def _adopt(self, offset: int, end: int) -> None:
        """Prefetches that a fetch of [offset, end) reached become its read-ahead."""
        for p in [p for p in self._pre if p[0] < end and offset < p[1]]:
            self._pre.remove(p)
            self._pending.append(p)

    def _harvest(self, wait_lo: int = -1, wait_hi: int = -1) -> None:
        """Move arrived read-ahead into the buffers (first waiting for the requests that
        overlap [wait_lo, wait_hi), if any). Called with the lock released."""
        with self._lock:
            pending = list(self._pending)
        for p in pending:
            if p[0] < wait_hi and wait_lo < p[1]:
                try:
                    p[2].result()
                except Exception:  # noqa: BLE001 - the synchronous fetch retries and reports
                    pass
        with self._lock:
            for p in pending:
                if p in self._pending and p[2].done():
                    self._pending.remove(p)
                    if p[2].exception() is None:
                        self._keep(p[0], p[2].result())

    def fetch(self, offset: int, n: int) -> bytes:
        end = offset + n
        if n <= 0:
            return b""
        with self._lock:
            # reading on: right after the last fetch, and past what the reader said it needs
            self._fetches += 1
            near = abs(offset - self._last_end) <= self.NEAR
            sequential = near and end > self._hint_end
            if not near:
                self._then = 0  # the reader went elsewhere
            self._last_end = end
            self._adopt(offset, end)
            data = self._from_bufs(offset, end)
        if len(data) < n and self._pending:
            self._harvest(offset + len(data), end)
            with self._lock:
                data = self._from_bufs(offset, end)
        if len(data) < n:
            head, start = data, offset + len(data)  # the rest: one request
            with self._lock:
                hs, he = self._hint
                want = end
                if hs <= start < he:
                    want = max(want, he)
                    self._hint = (0, 0)
                if sequential and self._max:  # reading on, and nothing was fetched ahead:
                    # one window now; _read_ahead asks for the next ones while it decodes
                    want = max(want, min(start + self.WINDOW0, self._stop()))
                    self._window = min(self._max, self.WINDOW0 * 2)
                elif not sequential:
                    self._window = 0
                # not into bytes already on their way (prefetches, read-ahead) past end
                want = max(end, min(want, self.size, self._next_start(end - 1)))
            if self._on and self.url.resolved:  # the next windows travel while this one
                # does (not before the blob's URL is resolved: they would take their turn
                # first, and the reader would wait for them)
                self._read_ahead(want, True)
            got = self.url.fetch(start, want - start)
            with self._lock:
                if len(got) > end - start:
                    self._keep(start, got)
            tail = got[:end - start] if len(got) > end - start else got
            data = head + tail if head else tail
        self._read_ahead(end, sequential or self._on or self._then > end)
        return data

    def _keep(self, start: int, data: bytes) -> None:
        lo, hi = self._last_end - self.NEAR, self._last_end + 4 * max(self._max, self.WINDOW0)
        self._bufs = [(s, b) for s, b in self._bufs if s + len(b) > lo and s < hi]
        self._bufs.append((start, data))
        # bounded by bytes, not count: many small prefetches must not push out read-ahead
        # not yet reached (it would be fetched again)
        held = sum(len(b) for _, b in self._bufs)
        while held > self.BUFFERED and len(self._bufs) > 1:
            held -= len(self._bufs.pop(0)[1])

    def _read_ahead(self, end: int, sequential: bool) -> None:
        if self._pool is None or not self._max or not sequential:
            return
        self._harvest()
        with self._lock:
            far = 4 * max(self._max, self.WINDOW0)  # read-ahead left behind elsewhere: forget
            self._pending = [p for p in self._pending
                             if end - self.NEAR < p[1] and p[0] < end + far]
            ranges = self._on_the_way()
            top = _past(ranges, end)
            limit = self._stop()
            while len(self._pending) < self.AHEAD and top < limit:
                window = max(self._window, self.WINDOW0)
                if top - end > 2 * window:
                    break  # enough is on its way
                if self._cached is not None and self._cached(top):
                    break  # the reader will find it on disk
                stop = min(limit, top + window, self._next_start(top))
                self._window = min(self._max, window * 2)  # the next one is larger
                self._pending.append((top, stop, self._pool.submit(self.url.fetch, top,
                                                                   stop - top)))
                ranges.append((top, stop))
                top = _past(ranges, stop)

    def _on_the_way(self) -> list[tuple[int, int]]:
        """The ranges fetched or on their way (buffers, read-ahead, prefetches), sorted;
        called with the lock held."""
        return sorted([(s, s + len(b)) for s, b in self._bufs]
                      + [(p[0], p[1]) for p in self._pending + self._pre])

    def discard(self) -> None:
        """Forget bytes fetched ahead (they failed verification: fetch them again)."""
        with self._lock:
            self._bufs.clear()
            self._pending.clear()
            self._pre.clear()
            self._hint = (0, 0)

    def close(self) -> None:
        self.discard()


class RemoteStore:
    """Blob sources of a docker:// or http(s):// ref, sharing one connection pool, one
    authorizer and one span cache."""

    prefetches = True  # its blobs fetch ahead on prefetch() hints (archive.files.LayerReaders)

    def __init__(self, ref: StorageRef, options: RemoteOptions | None = None) -> None:
        if not ref.remote:
            raise ValueError(f"not a remote storage ref: {ref.text}")
        self.ref = ref
        self.options = options or RemoteOptions()
        self.client = HttpClient(self.options.http)
        self.auth = RegistryAuth(self.client, ref.host, ref.repo, self.options.authfile)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.cache: DiskSpanCache | None = None
        if self.options.cache and self.options.cache_max_mib > 0:
            self.cache = DiskSpanCache(self.options.cache_dir, self.options.cache_max_mib << 20)

    def __repr__(self) -> str:
        return f"<RemoteStore {self.ref.text}>"

    def blob_url(self, digest: str) -> str:
        alg, _, hexpart = digest.partition(":")
        if self.ref.kind == DOCKER:
            bare = self.ref.host.split(":")[0] if not self.ref.host.startswith("[") \
                else self.ref.host.split("]")[0] + "]"
            scheme = "http" if self.options.insecure or bare in LOOPBACK else "https"
            return f"{scheme}://{self.ref.host}/v2/{self.ref.repo}/blobs/{digest}"
        return f"{self.ref.base}/{alg}/{hexpart}"

    def source(self, digest: str, size: int) -> BlobURL:
        """A fetcher of the blob's compressed bytes (unverified: see clipcy.storage.spans)."""
        return BlobURL(self.client, self.blob_url(digest), digest, size, self.auth)

    def download(self, digest: str, size: int, dest: str | os.PathLike[str],
                 piece: int = 8 << 20) -> None:
        """The whole blob into dest, in ranges of `piece` bytes (verify re-indexes it, which
        checks its digest)."""
        src = self.source(digest, size)
        with open(dest, "wb") as f:
            for off in range(0, size, piece):
                f.write(src.fetch(off, min(piece, size - off)))

    def open_blob(self, layer: dict[str, Any], spans: SpanTable,
                  cache: SpanCache | None = None) -> VerifiedBlob:
        """The verified reader of a layer blob (the clipcy.storage BlobStore protocol)."""
        from clipcy.storage.spans import VerifiedBlob

        digest, size = layer["digest"], layer["size"]
        with self._lock:
            if self._pool is None and self.options.readahead_mib > 0:
                # read-ahead (AHEAD per blob) and prefetches of the next files (PREFETCH)
                self._pool = ThreadPoolExecutor(RemoteBlob.AHEAD + RemoteBlob.PREFETCH,
                                                thread_name_prefix="clipcy-readahead")
        cached = None
        if self.cache is not None:
            disk = self.cache

            def cached(off: int) -> bool:
                s, e = spans.bounds(spans.index(off))
                return disk.has(digest, s, e - s)

        source = RemoteBlob(self.source(digest, size), self.options.readahead_mib << 20,
                            self._pool, cached)
        return VerifiedBlob(source, spans, cache if cache is not None else self.cache, digest)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
