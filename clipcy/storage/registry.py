"""Remote blob stores: a docker:// or http(s):// storage ref (clipcy.storage.refs) becomes
blob sources fetching byte ranges over HTTP, with read-ahead and one shared span cache.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from clipcy.errors import RemoteError
from clipcy.interrupts import waiting
from clipcy.storage import BlobStore
from clipcy.storage.auth import RegistryAuth
from clipcy.storage.diskcache import DEFAULT_MAX_MIB, DiskSpanCache
from clipcy.storage.http import BlobURL, HttpClient, HttpOptions, redact
from clipcy.storage.refs import DIR, DOCKER, HTTP, LOOPBACK, StorageRef, parse_storage_ref
from clipcy.storage.spans import BlobSource

if TYPE_CHECKING:
    from clipcy.storage.spans import SpanCache, SpanTable, VerifiedBlob

# The storage ref names, importable from here as before the split.
__all__ = ["DIR", "DOCKER", "HTTP", "RemoteBlob", "RemoteOptions", "RemoteStore", "StorageRef",
           "parse_storage_ref"]

# Compressed spans a process keeps in memory after putting them in the disk span cache (at
# most a quarter of the cache's bound): a mount's replay fetches a start's spans ahead of its
# inflaters, which then take them from memory instead of reading and checking the files.
MEMORY_FRONT = 32 << 20


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
    # the mount's on-disk cache of decoded spans (storage.decodedcache; off with cache=False)
    decoded_cache_mib: int = 2048


def _past(ranges: list[tuple[int, int]], top: int) -> int:
    """The end of what ranges cover contiguously from top (top if none covers it)."""
    for s, e in ranges:
        if s <= top < e:
            top = e
    return top


Request = tuple[int, int, "Future[bytes]"]  # a range on its way: start, end, the fetch


@dataclass
class ReadAhead:
    """The read-ahead state of one remote blob, and its transitions: what is fetched (held
    unverified, in memory) or on its way, and what its reader said (hints) or did (fetches).
    RemoteBlob holds one and changes it only through these methods, with its lock held; the
    requests themselves run on the pool, without the lock."""

    WINDOW0: ClassVar[int] = 2 << 20  # the first read-ahead window; each next one doubles
    BUFFERED: ClassVar[int] = 32 << 20  # most bytes held fetched ahead and not yet reached
    NEAR: ClassVar[int] = 256 << 10  # a fetch this close to the last one's end: sequential

    size: int
    readahead: int  # the largest window (0: no read-ahead)
    bufs: list[tuple[int, bytes]] = field(default_factory=list)  # (start, bytes) fetched
    pending: list[Request] = field(default_factory=list)  # read-ahead on its way
    pre: list[Request] = field(default_factory=list)  # prefetches not yet reached
    pre_at: dict[int, int] = field(default_factory=dict)  # id of each: fetches when made
    fetches: int = 0
    hint: tuple[int, int] = (0, 0)  # will_need's range, until a fetch in it asks for it all
    hint_end: int = 0  # the end of the last hint: reading past it is reading on
    last_end: int = -1  # where the last fetch ended
    window: int = 0  # the size of the next read-ahead window
    limit: int = -1  # no read-ahead past this (the end of the file being read); -1: size
    then: int = 0  # ... or past this: the end of the next files, when they follow it
    on: bool = False  # the file's reader reads in order: read ahead from the first fetch

    def __post_init__(self) -> None:
        if self.limit < 0:
            self.limit = self.size

    # -- the reader's hints -----------------------------------------------------------------
    def hinted(self, offset: int, end: int) -> None:
        """will_need: the next fetch in [offset, end) asks for all of it."""
        self.hint = (offset, min(end, self.size))
        self.hint_end = self.hint[1]

    def limited(self, end: int, on: bool) -> None:
        """read_limit: no read-ahead past end; `on`: the reader reads in order."""
        self.limit = min(max(end, 0), self.size)
        self.on = on

    def follows(self, offset: int, end: int) -> bool:
        """A prefetch of [offset, end) that follows what is being read: read-ahead goes on
        up to its end, in the usual windows (many small files: a few large requests, not one
        per file)."""
        if 0 <= self.last_end - self.NEAR <= offset <= self.limit + self.WINDOW0 or (
                0 <= self.last_end <= offset <= self.limit + self.WINDOW0):
            self.then = max(self.then, end)
            return True
        return False

    def prefetch_room(self) -> bool:
        """Whether another prefetch may be held: fewer than PREFETCH, or the oldest was never
        reached after PREFETCH_STALE fetches (its file was read from elsewhere): forgotten."""
        if len(self.pre) < RemoteBlob.PREFETCH:
            return True
        if self.fetches - self.pre_at.get(id(self.pre[0]), 0) < RemoteBlob.PREFETCH_STALE:
            return False
        del self.pre[0]
        return True

    def prefetching(self, request: Request) -> None:
        """A prefetch is on its way."""
        self.pre.append(request)
        self.pre_at = {id(p): self.pre_at.get(id(p), self.fetches) for p in self.pre}

    # -- fetches ------------------------------------------------------------------------------
    def fetching(self, offset: int, end: int) -> bool:
        """A fetch of [offset, end) begins: True when it reads on (right after the last
        fetch, and past what the reader said it needs); prefetches it reaches become its
        read-ahead."""
        self.fetches += 1
        near = abs(offset - self.last_end) <= self.NEAR
        if not near:
            self.then = 0  # the reader went elsewhere
        self.last_end = end
        for p in [p for p in self.pre if p[0] < end and offset < p[1]]:
            self.pre.remove(p)
            self.pending.append(p)
        return near and end > self.hint_end

    def request_end(self, start: int, end: int, sequential: bool) -> int:
        """Where the request for the missing [start, end) ends: the hinted range it starts
        in, or (reading on with nothing fetched ahead) one read-ahead window, never into
        bytes already on their way."""
        want = end
        hs, he = self.hint
        if hs <= start < he:
            want = max(want, he)
            self.hint = (0, 0)
        if sequential and self.readahead:
            # one window now; the next ones are asked for while it decodes
            want = max(want, min(start + self.WINDOW0, self.stop()))
            self.window = min(self.readahead, self.WINDOW0 * 2)
        elif not sequential:
            self.window = 0
        return max(end, min(want, self.size, self.next_start(end - 1)))

    def from_bufs(self, offset: int, end: int) -> bytes:
        """The longest run of bytes from offset (up to end) that the buffers hold."""
        parts = []
        pos = offset
        while pos < end:
            for s, b in self.bufs:
                if s <= pos < s + len(b):
                    piece = b[pos - s:min(end, s + len(b)) - s]
                    parts.append(piece)
                    pos += len(piece)
                    break
            else:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def keep(self, start: int, data: bytes) -> None:
        """Hold fetched bytes for the reads to come; what the reader left far behind or far
        ahead goes, and the total stays under BUFFERED."""
        lo = self.last_end - self.NEAR
        hi = self.last_end + 4 * max(self.readahead, self.WINDOW0)
        self.bufs = [(s, b) for s, b in self.bufs if s + len(b) > lo and s < hi]
        self.bufs.append((start, data))
        # bounded by bytes, not count: many small prefetches must not push out read-ahead
        # not yet reached (it would be fetched again)
        held = sum(len(b) for _, b in self.bufs)
        while held > self.BUFFERED and len(self.bufs) > 1:
            held -= len(self.bufs.pop(0)[1])

    def arrived(self, requests: list[Request]) -> None:
        """Read-ahead that has arrived moves into the buffers (a failed one is dropped: the
        reader's own fetch asks again, with retries)."""
        for p in requests:
            if p in self.pending and p[2].done():
                self.pending.remove(p)
                if p[2].exception() is None:
                    self.keep(p[0], p[2].result())

    # -- read-ahead ---------------------------------------------------------------------------
    def stop(self) -> int:
        """No read-ahead past this: the end of the file being read, or of the next files
        when they follow it."""
        return self.limit if self.then <= self.limit else self.then

    def next_start(self, pos: int) -> int:
        """Where the first request on its way that starts after pos starts (or the size)."""
        return min((p[0] for p in self.pending + self.pre if p[0] > pos), default=self.size)

    def on_the_way(self) -> list[tuple[int, int]]:
        """The ranges fetched or on their way (buffers, read-ahead, prefetches), sorted."""
        return sorted([(s, s + len(b)) for s, b in self.bufs]
                      + [(p[0], p[1]) for p in self.pending + self.pre])

    def forget_far(self, end: int) -> None:
        """Read-ahead left behind elsewhere (the reader moved on) is forgotten."""
        far = 4 * max(self.readahead, self.WINDOW0)
        self.pending = [p for p in self.pending if end - self.NEAR < p[1] and p[0] < end + far]

    def enough_ahead(self, top: int, end: int) -> bool:
        """Whether what is on its way up to top, the reader being at end, is enough: more
        than two windows."""
        return top - end > 2 * max(self.window, self.WINDOW0)

    def next_window(self, top: int) -> int:
        """The end of the read-ahead window from top (never past stop() or into a request on
        its way); the window after it is twice as large, up to `readahead`."""
        window = max(self.window, self.WINDOW0)
        self.window = min(self.readahead, window * 2)
        return min(self.stop(), top + window, self.next_start(top))

    def reading_ahead(self, request: Request) -> None:
        """A read-ahead window is on its way."""
        self.pending.append(request)

    def clear(self) -> None:
        """Everything fetched ahead is forgotten (it failed verification)."""
        self.bufs.clear()
        self.pending.clear()
        self.pre.clear()
        self.hint = (0, 0)


class RemoteBlob(BlobSource):
    """The BlobSource of one remote blob: fetch(offset, n) = one range request, plus
    read-ahead, so that a reader decoding compressed bytes piece by piece waits for one round
    trip, not one per piece. Its state is a ReadAhead.

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

    WINDOW0 = ReadAhead.WINDOW0
    AHEAD = 2
    PREFETCH = 4
    BUFFERED = ReadAhead.BUFFERED
    PREFETCH_STALE = 64  # a prefetch not reached after this many fetches may be dropped
    PREFETCH_REST = 1 << 20  # a prefetch whose start is already on its way: only a rest this big
    NEAR = ReadAhead.NEAR

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
        self._state = ReadAhead(url.size, readahead)

    def __repr__(self) -> str:
        return f"<RemoteBlob {self.digest} at {self.path}>"

    def will_need(self, offset: int, end: int) -> None:
        with self._lock:
            self._state.hinted(offset, end)

    def read_limit(self, end: int, on: bool = False) -> None:
        with self._lock:
            self._state.limited(end, on)

    def prefetch(self, offset: int, end: int) -> None:
        if self._pool is None or not self._max:
            return
        end = min(end, self.size)
        st = self._state
        with self._lock:
            if not self.url.resolved and (st.pending or st.pre or st.last_end >= 0):
                return  # (it would take its turn before the reader's own fetch; the
                # first fetch of a blob, made while its reader opens, may resolve the URL)
            if st.follows(offset, end):
                return
            top = _past(st.on_the_way(), offset)  # skip what is buffered or on its way
        if top >= end or (top > offset and end - top < self.PREFETCH_REST):
            return  # (a small rest: the reads will ask for it with their own bytes)
        if self._cached is not None and self._cached(top):
            return
        with self._lock:
            if not st.prefetch_room():
                return  # enough held or on its way: this file's reads ask for it
            st.prefetching((top, end, self._pool.submit(self.url.fetch, top, end - top)))

    def _harvest(self, wait_lo: int = -1, wait_hi: int = -1) -> None:
        """Move arrived read-ahead into the buffers (first waiting for the requests that
        overlap [wait_lo, wait_hi), if any). Called with the lock released."""
        with self._lock:
            pending = list(self._state.pending)
        for p in pending:
            if p[0] < wait_hi and wait_lo < p[1]:
                try:
                    waiting(p[2].result)
                except Exception:  # noqa: BLE001 - the synchronous fetch retries and reports
                    pass
        with self._lock:
            self._state.arrived(pending)

    def fetch(self, offset: int, n: int) -> bytes:
        end = offset + n
        if n <= 0:
            return b""
        st = self._state
        with self._lock:
            sequential = st.fetching(offset, end)
            data = st.from_bufs(offset, end)
        if len(data) < n and st.pending:
            self._harvest(offset + len(data), end)
            with self._lock:
                data = st.from_bufs(offset, end)
        if len(data) < n:
            head, start = data, offset + len(data)  # the rest: one request
            with self._lock:
                want = st.request_end(start, end, sequential)
            if st.on and self.url.resolved:  # the next windows travel while this one
                # does (not before the blob's URL is resolved: they would take their turn
                # first, and the reader would wait for them)
                self._read_ahead(want, True)
            got = self.url.fetch(start, want - start)
            with self._lock:
                if len(got) > end - start:
                    st.keep(start, got)
            tail = got[:end - start] if len(got) > end - start else got
            data = head + tail if head else tail
        self._read_ahead(end, sequential or st.on or st.then > end)
        return data

    def _read_ahead(self, end: int, sequential: bool) -> None:
        if self._pool is None or not self._max or not sequential:
            return
        self._harvest()
        st = self._state
        with self._lock:
            st.forget_far(end)
            ranges = st.on_the_way()
            top = _past(ranges, end)
            limit = st.stop()
            while len(st.pending) < self.AHEAD and top < limit:
                if st.enough_ahead(top, end):
                    break
                if self._cached is not None and self._cached(top):
                    break  # the reader will find it on disk
                stop = st.next_window(top)
                st.reading_ahead((top, stop, self._pool.submit(self.url.fetch, top,
                                                               stop - top)))
                ranges.append((top, stop))
                top = _past(ranges, stop)

    def discard(self) -> bool:
        """Forget bytes fetched ahead (they failed verification: fetch them again)."""
        with self._lock:
            self._state.clear()
        return True

    def close(self) -> None:
        self.discard()


class RemoteStore(BlobStore):
    """Blob sources of a docker:// or http(s):// ref, sharing one connection pool, one
    authorizer and one span cache."""

    prefetches = True  # its blobs fetch ahead on prefetch() hints

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
            self.cache = DiskSpanCache(self.options.cache_dir, self.options.cache_max_mib << 20,
                                       min(MEMORY_FRONT, self.options.cache_max_mib << 18))

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

    def probe(self, digest: str, size: int) -> None:
        """One 1-byte range request for the blob's last byte (a missing blob is a 404, a
        shorter one a 416 or a short answer; credentials are asked for and checked), with
        the readers' retries, so its error is the one a read would give."""
        if size and len(self.source(digest, size).fetch(size - 1, 1)) != 1:
            raise RemoteError(f"cannot read blob {digest} from {redact(self.blob_url(digest))}:"
                              f" shorter than its {size} bytes")

    def background_blob(self, layer: dict[str, Any], spans: SpanTable) -> VerifiedBlob | None:
        """A reader without read-ahead (its fetches are exactly what it asks for) whose
        verified spans go to the disk span cache."""
        from clipcy.storage.spans import VerifiedBlob

        if self.cache is None:
            return None
        digest, size = layer["digest"], layer["size"]
        return VerifiedBlob(RemoteBlob(self.source(digest, size), 0, None), spans, self.cache,
                            digest)

    def cached(self, digest: str, offset: int, length: int) -> bool:
        return self.cache is not None and self.cache.has(digest, offset, length)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
