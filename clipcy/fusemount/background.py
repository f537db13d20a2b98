"""`clipctl mount --fetch-all`: after the replay, the rest of every layer blob into the disk
span cache, so that a running container survives the registry going away.

One thread plans, after the replay is done (or at once without one): for each layer of a
remote store with a span cache, the runs of 64 KiB checksum spans the cache does not hold yet,
cut at CHUNK bytes, in blob order. FETCHERS threads take the runs one by one and read each
through a VerifiedBlob of its own (BlobStore.background_blob: no read-ahead, nothing shared
with the readers' blobs), so every span is checked against the archive's checksums before it
is put in the cache, like any fetch. The program goes first: before each request a fetcher
waits until no foreground fetch is in flight (MountCounters.foreground_idle), so at most
FETCHERS background requests share the link with a read, and only those already on their way.

The first error stops the background fetch (each request has the readers' retries already);
it is counted and logged once, and reads are unaffected: they fetch what they need themselves.
`clipctl stats` shows the state (background.done once every span is in the cache).

Once done (or at once for a local layout: nothing to fetch), each layer is handed to
`decode` (the mount's DecodedSpanCache.stream): inflated once, in order, into the on-disk
decoded cache, so that a later mount of the image reads no compressed byte at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from clipcy.fusemount.counters import BACKGROUND, MountCounters, set_lane
from clipcy.fusemount.spans import lower_priority

if TYPE_CHECKING:
    from clipcy.archive.reader import Archive
    from clipcy.storage.spans import VerifiedBlob

log = logging.getLogger("clipcy.mount")

__all__ = ["CHUNK", "FETCHERS", "BackgroundFetch"]

FETCHERS = 2  # background requests in flight
CHUNK = 1 << 20  # most compressed bytes per background request

Run = tuple["VerifiedBlob", int, int]  # blob, start, end


class BackgroundFetch:
    """BackgroundFetch(arc, counters, after).start(): fetch every layer's missing spans into
    the store's span cache once after() returns (the replay's wait)."""

    def __init__(self, arc: Archive, counters: MountCounters,
                 after: Callable[[], object] | None = None,
                 decode: Callable[[int], object] | None = None) -> None:
        self.arc = arc
        self.counters = counters
        self.after = after
        self.decode = decode  # layer -> streamed into the decoded cache, once fetched
        self._done = threading.Event()

    def start(self) -> None:
        self.counters.background.state = "waiting"
        threading.Thread(target=self._run, name="clipcy-background", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _blobs(self) -> list[VerifiedBlob]:
        readers = self.arc.layer_readers()
        out = []
        for layer, desc in enumerate(self.arc.layers):
            if not desc.get("size"):
                continue
            spans = self.arc.access(layer).spans
            if spans is None:
                continue  # its reads report the missing checksums
            blob = readers.store.background_blob(desc, spans)
            if blob is not None:
                blob.observer = readers.observer  # counted in the background lane
                out.append(blob)
        return out

    def _runs(self, blobs: list[VerifiedBlob]) -> Iterator[Run]:
        """Runs of spans not in the cache, in blob order, at most CHUNK bytes each."""
        store = self.arc.layer_readers().store
        c = self.counters.background
        for blob in blobs:
            t = blob.table
            lo = hi = -1
            for i in range(t.count):
                s, e = t.bounds(i)
                if store.cached(blob.digest, s, e - s):
                    c.add(bytes_cached=e - s)
                    if lo >= 0:
                        yield blob, lo, hi
                        lo = -1
                    continue
                if lo >= 0 and e - lo > CHUNK:
                    yield blob, lo, hi
                    lo = -1
                if lo < 0:
                    lo = s
                hi = e
            if lo >= 0:
                yield blob, lo, hi

    def _run(self) -> None:
        set_lane(BACKGROUND)
        c = self.counters.background
        t0 = time.perf_counter()
        try:
            if self.after is not None:
                self.after()
            t0 = time.perf_counter()
            blobs = self._blobs()
            with c.lock:
                c.layers = len(blobs)
                c.bytes_total = sum(b.size for b in blobs)
                c.state = "running"
            if not blobs:
                log.info("fetch-all: nothing to fetch (the blobs are local, or no span cache)")
            runs = self._runs(blobs)
            take = threading.Lock()
            failed: list[BaseException] = []

            def fetcher() -> None:
                set_lane(BACKGROUND)
                lower_priority()
                while not failed:
                    with take:
                        run = next(runs, None)
                    if run is None:
                        return
                    try:
                        self._fetch_run(*run)
                    except Exception as e:  # noqa: BLE001 - reads fetch for themselves
                        failed.append(e)

            threads = [threading.Thread(target=fetcher, name=f"clipcy-background-{i}",
                                        daemon=True) for i in range(FETCHERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if failed:
                raise failed[0]
            c.state = "done"
            if self.decode is not None:
                for layer in range(self.arc.layer_count):
                    self.decode(layer)
        except Exception as e:  # noqa: BLE001 - best effort: reads fetch for themselves
            with c.lock:
                c.state = "failed"
                c.errors += 1
                c.error = c.error or str(e)
            log.warning("fetch-all stopped: %s; reads fetch what they need themselves", e)
        finally:
            c.seconds = round(time.perf_counter() - t0, 4)
            self._done.set()
            log.info("fetch-all %s: %s", c.state, c.snapshot())

    def _fetch_run(self, blob: VerifiedBlob, lo: int, hi: int) -> None:
        """One request: the verified spans of [lo, hi) into the store's span cache, after
        the foreground's fetches in flight."""
        idle = self.counters.foreground_idle
        if not idle.is_set():
            self.counters.background.add(pauses=1)
            idle.wait()
        blob.pread(lo, hi - lo)  # fetched, checked span by span and cached by VerifiedBlob
        self.counters.background.add(requests=1, bytes_fetched=hi - lo)
