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

Below the memory LRU, `disk` (a storage.decodedcache.LayerSpans, set by the mount unless
--no-cache) keeps every span decoded, by anyone, on local disk: a span missing here is looked
up there before it is inflated, and an inflated one is put there. A layer read out of its
data order (SCATTERED_AFTER read misses that continue no span just decoded, net of those that
do) is streamed once, on the STREAMER thread, from the lowest span so missed to its end, into
the disk cache (STREAM_CHUNK per layer read, the decoder running on from one to the next); a
read missing a span at most WAIT_AHEAD spans ahead of the streamer waits for it rather than
inflate from a resume point what the streamer is about to inflate; between its chunks the
streamer waits while a read is inflating. A miss of a read that starts inside a file counts
for less (random access: see _scattered). Once the same count is reached on a miss served from
disk, the layer's entries are read ahead into the page cache instead (_warm). stream(layer) is
the same for a caller that knows the whole layer will be read (mount --fetch-all).
"""

from __future__ import annotations

import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

SPAN = 256 << 10
AHEAD = 8  # spans a helper keeps inflated ahead of a sequential reader (2 MiB)
BEHIND = 16  # spans a sequential reader leaves cached behind it (the kernel has the pages)
STREAMS = 64  # streams (files being read) whose position is remembered
SCATTERED_AFTER = 8  # scattered read misses in a layer that have it streamed to the disk cache
INSIDE_SHARE = 3  # ... when the reads start inside files: a third of the layer's spans
WAIT_AHEAD = 4  # a read waits for the streamer when its span is at most this far ahead (1 MiB:
# no further than the resume-point spacing, so waiting never costs more than inflating)
WRITE_QUEUE = 8  # spans a read leaves to the writer thread to put on disk (2 MiB); past that
# a read writes its span itself (nothing inflated is dropped)
STREAM_CHUNK = 4  # spans the streamer asks of the layer reader at once (1 MiB, ~3 ms of
# inflate: how long a read that starts inflating may share the cores with the streamer)

__all__ = ["SPAN", "DecodedSpanCache", "LayerStream"]

# nice value of the mount's threads that work for later, not for a read waiting now (the
# decoded cache's writer and streamer, --fetch-all): a program that starts from the mount
# gets the cores first. Linux keeps a nice value per thread.
BACKGROUND_NICE = 10


def lower_priority() -> None:
    """Give the calling thread BACKGROUND_NICE (best effort: where it fails, as it may in a
    restricted sandbox, the thread keeps the process's priority)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except OSError:
        pass


class LayerStream:
    """A layer being streamed into the disk cache: spans first..last, `pos` the next one the
    streamer produces (guarded by the cache's lock)."""

    __slots__ = ("layer", "first", "last", "pos", "active", "started", "done")

    def __init__(self, layer: int, first: int, last: int) -> None:
        self.layer, self.first, self.last, self.pos = layer, first, last, first
        self.active = True  # False once done or stopped (waiters then decode themselves)
        self.started = False
        self.done = threading.Event()  # set when the streamer is through with it


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
        # the on-disk decoded cache (storage.decodedcache.LayerSpans) and the streamer
        self.disk: Any = None
        self.disk_hits = 0  # spans found in the disk cache (not inflated)
        self.disk_bytes = 0  # ... their bytes
        self.disk_puts = 0  # spans put in the disk cache
        self.stream_waits = 0  # reads that waited for the streamer
        self.streamed = 0  # spans the streamer put in the disk cache
        self.streams_started = 0  # layers queued for streaming
        self.stream_errors = 0
        self._scatter: dict[int, float] = {}  # layer -> scattered read misses (net, weighed)
        self._scatter_low: dict[int, int] = {}  # layer -> the lowest span so missed
        self._streams: dict[int, LayerStream] = {}  # layer -> its stream (once per mount)
        self._warmed: set[int] = set()  # layers whose entries were read ahead (once a mount)
        self.layers_warmed = 0
        self._stream_q: queue.SimpleQueue[LayerStream] = queue.SimpleQueue()
        self._streamer: threading.Thread | None = None
        self._moved = threading.Condition(self._lock)  # a stream's pos advanced or it ended
        # spans being inflated for reads (and the helper, the replay): the streamer waits for
        # none between its chunks, so it never takes a core from a read that is inflating
        self._inflating = 0
        self._quiet = threading.Condition(self._lock)  # _inflating fell to 0
        # spans inflated by reads, waiting for the writer thread to put them on disk (a put
        # creates a file and renames it: ~0.3-1 ms of a read's time on a busy disk)
        self._pending: dict[tuple[int, int], bytes] = {}
        self._writer: threading.Thread | None = None
        self._to_write = threading.Condition(self._lock)  # a span was queued
        self._written = threading.Condition(self._lock)  # the queue ran empty

    @property
    def held(self) -> int:
        return self._held

    def read(self, layer: int, offset: int, n: int, end: int | None = None,
             start: int | None = None) -> bytes:
        """Up to n bytes at offset (fewer only where the layer stream ends). `end`: where the
        file being read ends in the layer stream (read-ahead stops there); `start`: where it
        begins (a read from there counts as a whole-file read for the streaming policy)."""
        parts = self.parts(layer, offset, n, end, start)
        if len(parts) == 1:
            data, lo, length = parts[0]
            return data if lo == 0 and length == len(data) else data[lo:lo + length]
        return b"".join([memoryview(data)[lo:lo + length] for data, lo, length in parts])

    def parts(self, layer: int, offset: int, n: int, end: int | None = None,
              start: int | None = None) -> list[tuple[bytes, int, int]]:
        """read() without its copy: (span, start, length) pieces of cached spans whose bytes,
        in order, are read()'s (the FUSE binding hands them to the kernel as they are)."""
        span = self.span
        stop = (end - 1) // span if end is not None else None
        out: list[tuple[bytes, int, int]] = []
        k = offset // span
        inside = start is not None and offset != start  # the read begins inside a file
        while n > 0:
            data = self._span(layer, k, stop, inside=inside)
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
              helper: bool = False, inside: bool = False) -> bytes:
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
                    # scattered: no span just before k is cached or being decoded (a reader
                    # in data order, or two at once, always continue one)
                    scattered = not helper and (layer, k - 1) not in self._lru and not any(
                        (layer, j) in self._busy for j in range(k - 2, k))
                    break
            wait.wait()  # another thread is producing this span (or one before it)
        if data is not None:
            self._prefetch(layer, k + 1, stop)
            return data
        data, read, inflated = b"", False, False
        try:
            data, inflated = self._load(layer, k, not helper)
            read = True
        finally:
            with self._lock:
                self._settle(key, data, read, inflated)
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
                act = self._scattered(layer, k, scattered, inflated, inside) if data else None
            mine.set()
        if ahead:
            self._prefetch(layer, k + 1, stop)
        if act == "stream":
            self.stream(layer, self._scatter_low.get(layer, 0))
        elif act == "warm":
            threading.Thread(target=self._warm, args=(layer, self._scatter_low.get(layer, 0)),
                             daemon=True, name="clipcy-warm-spans").start()
        return data

    # -- the disk cache and the streamer ------------------------------------------------------
    def _load(self, layer: int, k: int, read: bool) -> tuple[bytes, bool]:
        """Span k's bytes and whether they were inflated (else: from the disk cache). A
        program's read (`read`) may wait for the streamer, and for the replay (on_miss)."""
        disk = self.disk
        if disk is not None:
            with self._lock:
                data = self._pending.get((layer, k))
            if data is None:
                data = disk.get(layer, k)
            if data is not None:
                return data, False
            if read and self._wait_stream(layer, k):
                data = disk.get(layer, k)
                if data is not None:
                    return data, False
        if read and self.on_miss is not None:
            self.on_miss(layer, k)
        with self._lock:
            self._inflating += 1
        try:
            data = bytes(self._reader(layer).pread(k * self.span, self.span))
        finally:
            with self._lock:
                self._inflating -= 1
                if not self._inflating:
                    self._quiet.notify_all()
        if disk is not None:
            self._put(layer, k, data)
        return data, True

    def _put(self, layer: int, k: int, data: bytes) -> None:
        """Have span k put on disk by the writer thread, or now if WRITE_QUEUE spans wait."""
        with self._lock:
            if len(self._pending) < WRITE_QUEUE:
                self._pending[(layer, k)] = data
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                                    name="clipcy-decoded-writer")
                    self._writer.start()
                self._to_write.notify()
                return
        self._write(layer, k, data)

    def _write(self, layer: int, k: int, data: bytes) -> None:
        if self.disk.put(layer, k, data):  # errors (a full disk) are the disk cache's count
            with self._lock:
                self.disk_puts += 1

    def _write_loop(self) -> None:
        lower_priority()
        while True:
            with self._lock:
                while not self._pending:
                    self._to_write.wait()
                (layer, k), data = next(iter(self._pending.items()))
            try:
                self._write(layer, k, data)
            except Exception:  # noqa: BLE001, S110 - a cache: the span is inflated again if asked
                pass
            finally:
                with self._lock:
                    self._pending.pop((layer, k), None)
                    if not self._pending:
                        self._written.notify_all()

    def flush(self) -> None:
        """Wait until the spans queued for the disk cache are written (at most WRITE_QUEUE):
        before the mount exits, and before its counters are reported."""
        with self._lock:
            while self._pending:
                self._written.wait()

    def _scattered(self, layer: int, k: int, scattered: bool, inflated: bool,
                   inside: bool) -> str | None:
        """Count a read's miss in memory (inflated, or found on disk); what the layer now
        needs (the lock is held): "stream" (inflated misses: the rest of the layer into the
        disk cache), "warm" (disk hits: the layer's entries read ahead into the page cache,
        once), or nothing.

        Files read whole in an order unrelated to the layer's (a tree walk, tar, cp -r) go
        on until the layer is read: SCATTERED_AFTER scattered misses stream it. Reads that
        start inside files (random access into large files: a database, a data loader) say
        less about what follows, and streaming a layer costs as much as inflating it: those
        misses count for a whole one only once they reach a third of the layer's spans (the
        inflates they paid for from resume points, ~3 spans each, about match the layer's),
        so random reads are not slowed by a stream they would not use."""
        if self.disk is None or (layer in self._streams and layer in self._warmed):
            return None
        n = self._scatter.get(layer, 0.0)
        if not scattered:
            self._scatter[layer] = max(0.0, n - 1)
            return None
        n += SCATTERED_AFTER / max(SCATTERED_AFTER, self.disk.spans(layer) // INSIDE_SHARE
                                   ) if inside else 1
        self._scatter[layer] = n
        self._scatter_low[layer] = min(k, self._scatter_low.get(layer, k))
        if n < SCATTERED_AFTER - 1e-9:
            return None
        if inflated:
            if layer in self._streams or not self.disk.room_for(layer):
                return None
            return "stream"
        if layer in self._warmed:
            return None
        self._warmed.add(layer)
        self.layers_warmed += 1
        return "warm"

    def _warm(self, layer: int, first: int) -> None:
        """Have the kernel read the layer's disk cache entries from span `first` on into the
        page cache (asynchronously, all at once): a layer whose spans are all on disk but
        read in an order unrelated to the entries' order on disk is then served at the
        disk's streaming rate rather than one 256 KiB read at a time."""
        disk = self.disk
        for j in range(first, disk.spans(layer)):
            disk.will_need(layer, j)

    def _wait_stream(self, layer: int, k: int) -> bool:
        """Wait for the streamer to pass span k if it is at most WAIT_AHEAD spans ahead of
        it; whether it was waited for."""
        with self._lock:
            st = self._streams.get(layer)
            if (st is None or not st.active or not st.started or not st.pos <= k <= st.last
                    or k - st.pos > WAIT_AHEAD):
                return False
            self.stream_waits += 1
            while st.active and st.pos <= k:
                self._moved.wait()
        return True

    def stream(self, layer: int, first: int = 0) -> LayerStream | None:
        """Have the streamer inflate layer's spans from `first` to its end into the disk
        cache (skipping those it holds), once per layer and mount: the LayerStream (its
        `done` is set at the end), None when there is no disk cache, no room for the layer,
        or it was streamed already. The hook of a caller that knows the whole layer will be
        read (mount --fetch-all)."""
        disk = self.disk
        if disk is None or not disk.room_for(layer):
            return None
        with self._lock:
            if layer in self._streams:
                return None
            st = self._streams[layer] = LayerStream(layer, first, disk.spans(layer) - 1)
            self.streams_started += 1
            if self._streamer is None:
                self._streamer = threading.Thread(target=self._stream_loop, daemon=True,
                                                  name="clipcy-stream")
                self._streamer.start()
        self._stream_q.put(st)
        return st

    def _stream_loop(self) -> None:
        lower_priority()
        while True:
            st = self._stream_q.get()
            try:
                self._stream_layer(st)
            except Exception as e:  # noqa: BLE001 - reads that need the spans decode them
                with self._lock:
                    self.stream_errors += 1
                import logging

                logging.getLogger("clipcy.mount").warning(
                    "streaming layer %d into the decoded cache stopped: %s", st.layer, e)
            finally:
                with self._lock:
                    st.active = False
                    self._moved.notify_all()
                st.done.set()

    def _stream_layer(self, st: LayerStream) -> None:
        disk, span = self.disk, self.span
        reader = self._reader(st.layer)
        failed = disk.cache.write_errors
        with self._lock:
            st.started = True
        k = st.first
        while k <= st.last:
            with self._lock:
                while self._inflating:
                    self._quiet.wait()
            n = min(STREAM_CHUNK, st.last - k + 1)
            with self._lock:
                queued = [j for j in range(k, k + n) if (st.layer, j) in self._pending]
            todo = [j for j in range(k, k + n) if j not in queued and not disk.has(st.layer, j)]
            if todo:
                lo = todo[0]
                data = memoryview(bytes(reader.pread(lo * span, (k + n - lo) * span)))
                for j in range(lo, k + n):
                    piece = bytes(data[(j - lo) * span:(j - lo + 1) * span])
                    if not piece:
                        break
                    if j in todo and disk.put(st.layer, j, piece):
                        with self._lock:
                            self.streamed += 1
            with self._lock:
                st.pos = k + n
                self._moved.notify_all()
            if disk.cache.write_errors != failed:
                raise OSError("the disk cache cannot be written (full?)")
            k += n

    def fill(self, layer: int, k: int) -> int:
        """Decode span k of layer into the cache for reads to come (the replay): the bytes
        decoded, 0 when the span is cached or being decoded already. A read that asks for it
        meanwhile waits for it instead of decoding it again. Errors are the caller's."""
        key = (layer, k)
        with self._lock:
            if key in self._lru or key in self._busy or k > self._ends.get(layer, k):
                return 0
            mine = self._busy[key] = threading.Event()
        data, read, inflated = b"", False, False
        try:
            data, inflated = self._load(layer, k, False)
            read = True
        finally:
            with self._lock:
                self._settle(key, data, read, inflated, replayed=True)
            mine.set()
        return len(data)

    def _settle(self, key: tuple[int, int], data: bytes, read: bool, inflated: bool,
                replayed: bool = False) -> None:
        """Count and keep a span _load returned (the lock is held), before its waiters are
        woken so that they find it in the LRU; a short span ends the layer's stream, so
        nothing reads further ahead."""
        layer, k = key
        if data and not inflated:
            self.disk_hits += 1
            self.disk_bytes += len(data)
        else:
            self.decompressed += len(data)
        if data and len(data) <= self.budget:
            self._lru[key] = data
            self._held += len(data)
            if replayed:
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
