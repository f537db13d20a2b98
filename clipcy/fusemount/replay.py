"""Replay of a prefetch list on a mount: the listed files' bytes ready before the program asks.

A start reads nearly the same files every time (clipcy.archive.prefetch records them). On
mount, Replay plans the decoded spans (fusemount.spans.SPAN of a layer's uncompressed stream)
those files cover, in list order, then:

1. fetch (remote stores with a disk span cache): the compressed range each span needs
   (blobread.first_fetch: from its resume point to the point after it; the zstd frames under
   it; the bytes themselves for a plain layer), merged per layer where they lie less than
   MERGE_GAP apart, up to MAX_REQUEST per request, FETCHERS requests in flight, first the
   ranges the list needs first. Each goes through a VerifiedBlob of the replay's own
   (BlobStore.background_blob: no read-ahead shared with the reads), so every span is checked
   against the archive's checksums before it is kept in the disk span cache.
2. inflate: INFLATERS threads take runs of consecutive spans in list order and decode them
   into the mount's DecodedSpanCache (fill), each once its range has arrived.

Reads never get bytes the replay did not verify, never wait for the replay longer than for
their own bytes, and never fetch twice: a read of a span being decoded waits for it (the
cache's busy event), and a read that would decode a span whose compressed range is on its way
waits for that request (on_miss) and then finds it in the disk cache. A failed replay fetch
or decode is counted and logged once; the read then fetches for itself. Local layouts skip
step 1 (a pread is no round trip) and save the inflate.

The decoded spans are held in the mount's cache, which is bounded: the replay fills at most
BUDGET_SHARE of it, the rest of a long list is left to the reads.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from clipcy.archive.record import LAYER, OFFSET, SIZE, SPARSE, TYPE

if TYPE_CHECKING:
    from clipcy.archive.reader import Archive
    from clipcy.fusemount.spans import DecodedSpanCache
    from clipcy.storage.spans import VerifiedBlob

log = logging.getLogger("clipcy.mount")

__all__ = ["FETCHERS", "INFLATERS", "MAX_REQUEST", "MERGE_GAP", "Replay", "ReplayCounters"]

MERGE_GAP = 256 << 10  # ranges of one layer closer than this are fetched in one request
MAX_REQUEST = 4 << 20  # ... up to this many compressed bytes per request
FETCHERS = 4  # requests in flight
INFLATERS = 2  # decoding threads (inflate and zstd release the GIL)
BUDGET_SHARE = 0.75  # the part of the decoded-span cache the replay may fill


@dataclass
class ReplayCounters:
    """What the replay did, for logs, tests and `clipctl stats`: one object, updated under its
    lock by the replay's threads, read as a whole by snapshot()."""

    state: str = "off"  # off, planning, running, done, failed
    files: int = 0  # regular files in the list
    files_planned: int = 0  # ... whose spans fit the budget
    spans: int = 0  # decoded spans planned
    spans_filled: int = 0  # decoded by the replay
    bytes_inflated: int = 0
    requests: int = 0  # range requests issued (merged ranges)
    bytes_requested: int = 0  # compressed bytes those ask for
    fetch_errors: int = 0
    inflate_errors: int = 0
    waits: int = 0  # reads that waited for a replay request rather than fetch again
    seconds: float = 0.0  # from start to done
    error: str = ""  # the first error, for the log
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def failed(self, kind: str, e: BaseException) -> None:
        """Count an error of kind ("fetch" or "inflate"); the first one is logged."""
        with self.lock:
            setattr(self, f"{kind}_errors", getattr(self, f"{kind}_errors") + 1)
            first = not self.error
            if first:
                self.error = f"{kind}: {e}"
        if first:
            log.warning("replay: %s failed (%s); reads fetch for themselves", kind, e)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lock"}


Run = tuple[int, int, int]  # layer, first span, last span


class Replay:
    """Replay(arc, cache, positions).start(): fetch and decode the listed files' spans on
    background threads; counters tells how far it got; wait() for tests and perf."""

    def __init__(self, arc: Archive, cache: DecodedSpanCache, positions: list[int],
                 counters: ReplayCounters | None = None) -> None:
        self.arc = arc
        self.cache = cache
        self.positions = positions
        self.counters = counters or ReplayCounters()
        self._done = threading.Event()
        self._inflight: dict[int, list[tuple[int, int, Future[None]]]] = {}  # layer -> ranges
        self._span_range: dict[tuple[int, int], tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._blobs: dict[int, VerifiedBlob] = {}  # layer -> the replay's own reader

    def start(self) -> None:
        self.counters.state = "planning"
        threading.Thread(target=self._run, name="clipcy-replay", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    # -- plan -------------------------------------------------------------------------------
    def plan(self) -> list[Run]:
        """Runs of consecutive decoded spans the listed files cover, in list order (a span
        shared by two files is planned once), within the budget."""
        span = self.cache.span
        budget = int(self.cache.budget * BUDGET_SHARE) // span
        seen: set[tuple[int, int]] = set()
        runs: list[Run] = []
        files = planned = 0
        for pos in self.positions:
            rec = self.arc.record_at(pos)
            if rec[TYPE] != "file":
                continue
            size = rec[SIZE] if rec[SPARSE] is None else sum(n for _, n in rec[SPARSE])
            files += 1
            if size <= 0 or rec[LAYER] < 0:
                planned += 1
                continue
            layer, first, last = rec[LAYER], rec[OFFSET] // span, (rec[OFFSET] + size - 1) // span
            new = [k for k in range(first, last + 1) if (layer, k) not in seen]
            if len(seen) + len(new) > budget:
                continue  # does not fit: its reads decode it
            planned += 1
            for k in new:
                seen.add((layer, k))
                if runs and runs[-1][0] == layer and runs[-1][2] == k - 1:
                    runs[-1] = (layer, runs[-1][1], k)
                else:
                    runs.append((layer, k, k))
        self.counters.add(files=files, files_planned=planned, spans=len(seen))
        return runs

    def segments(self, runs: list[Run]) -> list[list[Run]]:
        """The inflate order: runs of a layer that one decoder reaches more cheaply by
        inflating on through the gap than by starting again at the resume point before the
        next run form a segment, decoded front to back by one thread; segments go in the list
        order of the first run they hold that the list needs (a segment whose first-needed run
        is inside it is split there, so that the decoder starts where the program reads
        first). In list order alone, each run would start from its resume point: half the
        resume spacing inflated and dropped per run, as much again as the list's own bytes."""
        span = self.cache.span
        order = {run: i for i, run in reversed(list(enumerate(runs)))}
        by_layer: dict[int, list[Run]] = {}
        for run in runs:
            by_layer.setdefault(run[0], []).append(run)
        pieces: list[tuple[int, list[Run]]] = []
        for layer, rs in by_layer.items():
            starts = self._restart_points(layer)
            rs.sort(key=lambda r: r[1])
            seg = [rs[0]]
            for run in rs[1:]:
                start = run[1] * span
                gap = start - (seg[-1][2] + 1) * span
                restart = start - starts[bisect.bisect_right(starts, start) - 1] \
                    if starts else 0
                if gap <= restart:
                    seg.append(run)
                    continue
                pieces.extend(self._split(seg, order))
                seg = [run]
            pieces.extend(self._split(seg, order))
        pieces.sort(key=lambda p: p[0])
        return [seg for _, seg in pieces]

    @staticmethod
    def _split(seg: list[Run], order: dict[Run, int]) -> list[tuple[int, list[Run]]]:
        """seg cut before its first-needed run, again and again: (need, piece) pairs."""
        out: list[tuple[int, list[Run]]] = []
        while seg:
            i = min(range(len(seg)), key=lambda j: order[seg[j]])
            out.append((order[seg[i]], seg[i:]))
            seg = seg[:i]
        return out

    def _restart_points(self, layer: int) -> list[int]:
        """The uncompressed offsets where a decoder of layer can start (sorted): gzip resume
        points, zstd frame starts; [] for a plain layer, which is read in place."""
        acc = self.arc.access(layer)
        if acc.points:
            return sorted(p[2] for p in acc.points)
        return sorted(f[2] for f in acc.frames)

    def _ranges(self, runs: list[Run]) -> dict[int, list[tuple[int, int, int]]]:
        """Per layer: the compressed (start, end) each planned span needs, with the list
        order of its run (requests go out in that order)."""
        from clipcy.archive.prefetch import compressed_range

        span = self.cache.span
        out: dict[int, list[tuple[int, int, int]]] = {}
        access: dict[int, Any] = {}
        for order, (layer, first, last) in enumerate(runs):
            if layer not in access:
                access[layer] = self.arc.access(layer)
            size = int(self.arc.layers[layer]["size"])
            for k in range(first, last + 1):
                lo, hi = compressed_range(access[layer], size, k * span, (k + 1) * span)
                if lo < hi:
                    out.setdefault(layer, []).append((lo, hi, order))
                    self._span_range[(layer, k)] = (lo, hi)
        return out

    @staticmethod
    def merge(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """Ranges of one layer merged where less than MERGE_GAP apart, up to MAX_REQUEST
        each (a single range longer than that stays whole); each keeps its earliest order."""
        out: list[tuple[int, int, int]] = []
        for lo, hi, order in sorted(ranges):
            if out and lo - out[-1][1] < MERGE_GAP and max(hi, out[-1][1]) - out[-1][0] <= \
                    MAX_REQUEST:
                plo, phi, porder = out[-1]
                out[-1] = (plo, max(phi, hi), min(porder, order))
            elif out and hi <= out[-1][1]:
                continue  # inside the previous request
            else:
                out.append((lo, hi, order))
        return out

    # -- run --------------------------------------------------------------------------------
    def _run(self) -> None:
        c = self.counters
        t0 = time.perf_counter()
        pool: ThreadPoolExecutor | None = None
        try:
            runs = self.plan()
            store = self.arc.layer_readers().store
            c.state = "running"
            for layer in sorted({r[0] for r in runs}):
                # a verified reader that fills the store's span cache, with no read-ahead
                # shared with the reads; None for a local layout (a pread is no round trip)
                # or a store without a cache (each span is then fetched by its decode)
                spans = self.arc.access(layer).spans
                blob = store.background_blob(self.arc.layers[layer], spans) \
                    if spans is not None else None
                if blob is not None:
                    blob.observer = self.arc.layer_readers().observer  # the replay's lane
                    self._blobs[layer] = blob
            if self._blobs:
                ranges = self._ranges([r for r in runs if r[0] in self._blobs])
                requests = sorted(((order, layer, lo, hi) for layer, rs in ranges.items()
                                   for lo, hi, order in self.merge(rs)))
                pool = ThreadPoolExecutor(FETCHERS, thread_name_prefix="clipcy-replay-fetch")
                with self._lock:
                    for _, layer, lo, hi in requests:
                        fut = pool.submit(self._fetch, layer, lo, hi)
                        self._inflight.setdefault(layer, []).append((lo, hi, fut))
                c.add(requests=len(requests), bytes_requested=sum(r[3] - r[2] for r in requests))
                self.cache.on_miss = self._on_miss
            todo = self.segments(runs)
            take = threading.Lock()

            def inflater() -> None:
                while True:
                    with take:
                        if not todo:
                            return
                        segment = todo.pop(0)
                    for layer, first, last in segment:
                        if not self._inflate(layer, first, last):
                            break

            threads = [threading.Thread(target=inflater, name=f"clipcy-replay-inflate-{i}",
                                        daemon=True) for i in range(INFLATERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if pool is not None:
                pool.shutdown(wait=True)
            c.state = "done"
        except Exception as e:  # noqa: BLE001 - best effort: reads fetch for themselves
            c.state = "failed"
            with c.lock:
                c.error = c.error or f"replay: {e}"
            log.warning("replay stopped: %s; reads fetch for themselves", e)
        finally:
            self.cache.on_miss = None
            for blob in self._blobs.values():
                blob.close()
            c.seconds = round(time.perf_counter() - t0, 4)
            self._done.set()
            log.info("replay %s: %s", c.state, c.snapshot())

    def _fetch(self, layer: int, lo: int, hi: int) -> None:
        try:
            self._blobs[layer].pread(lo, hi - lo)  # verified span by span, kept in the cache
        except Exception as e:  # noqa: BLE001 - counted; the reads fetch for themselves
            self.counters.failed("fetch", e)

    def _wait_fetch(self, layer: int, k: int) -> bool:
        """Wait for the request carrying span k's compressed bytes, if one is on its way;
        True when there was one."""
        rng = self._span_range.get((layer, k))
        if rng is None:
            return False
        with self._lock:
            futs = [f for lo, hi, f in self._inflight.get(layer, ())
                    if lo < rng[1] and rng[0] < hi and not f.done()]
        for f in futs:
            f.result()  # _fetch never raises
        return bool(futs)

    def _on_miss(self, layer: int, k: int) -> None:
        if self._wait_fetch(layer, k):
            self.counters.add(waits=1)

    def _inflate(self, layer: int, first: int, last: int) -> bool:
        """Decode spans first..last of layer into the cache: False when the layer ended or
        a decode failed (the segment's later runs are left to the reads)."""
        for k in range(first, last + 1):
            self._wait_fetch(layer, k)
            try:
                n = self.cache.fill(layer, k)
            except Exception as e:  # noqa: BLE001 - counted; reads decode for themselves
                self.counters.failed("inflate", e)
                return False
            if n:
                self.counters.add(spans_filled=1, bytes_inflated=n)
            if n < self.cache.span and n:
                return False  # the layer stream ends
        return True

