"""A mount's counters: one MountCounters per mount, fed by the reads, the replay and the
background fetch, read as a whole by `clipctl stats` (clipcy.fusemount.stats) and logged when
the mount ends.

- Fetches from the blobs' sources (HTTP range requests for a registry, preads for a layout
  directory) are counted by lane: VerifiedBlob tells the counters of each (they are its
  FetchObserver, set on the archive's LayerReaders before any blob is opened), and the lane
  is the fetching thread's: the replay's threads (named clipcy-replay*) are the replay's,
  the background fetcher's (clipcy-background*) and the decoded cache's streamer
  (clipcy-stream) are the background's, every other one is a read's (foreground). A
  fetch is a round trip or a pread, so its lock costs nothing next to it; the reads' hot
  path (a decoded span found in the cache) touches no counter of this module.
- The foreground fetches in flight are a gauge the background fetcher waits on
  (foreground_idle): the program's reads always go first.
- Read errors are counted by kind (error_kind), and the first of each kind is logged: a
  registry gone away fails every read, but the log says so once.
- The replay's counters are the replay module's ReplayCounters (replay), the background
  fetch's a BackgroundCounters (background): both live here, so there is one object to ask.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from clipcy.errors import BlobError, ClipError, RemoteAuthError, RemoteError, SpanChecksumError
from clipcy.fusemount.replay import ReplayCounters

if TYPE_CHECKING:
    from clipcy.archive.files import LayerReaders
    from clipcy.fusemount.spans import DecodedSpanCache

log = logging.getLogger("clipcy.mount")

__all__ = ["BACKGROUND", "FOREGROUND", "LANES", "REPLAY", "BackgroundCounters", "MountCounters",
           "error_kind", "set_lane"]

FOREGROUND, REPLAY, BACKGROUND = 0, 1, 2
LANES = ("foreground", "replay", "background")

_lane = threading.local()


def set_lane(lane: int) -> None:
    """Count this thread's fetches in lane."""
    _lane.v = lane


def current_lane() -> int:
    v: int | None = getattr(_lane, "v", None)
    if v is None:
        name = threading.current_thread().name
        v = REPLAY if name.startswith("clipcy-replay") else \
            BACKGROUND if name.startswith(("clipcy-background", "clipcy-stream")) else \
            FOREGROUND
        _lane.v = v
    return v


def error_kind(e: BaseException) -> str:
    """The kind a read error is counted (and logged once) under."""
    if isinstance(e, RemoteAuthError):
        return "auth"  # the registry refused the credentials, or none were found
    if isinstance(e, RemoteError):
        return "remote"  # unreachable, timed out, HTTP errors after the retries
    if isinstance(e, SpanChecksumError):
        return "checksum"  # the blob's bytes are not the ones indexed
    if isinstance(e, BlobError):
        return "blob"  # a local blob missing, changed or unreadable
    if isinstance(e, ClipError):
        return "archive"  # a layer stream that ends early, a corrupt record
    return "os"


@dataclass
class BackgroundCounters:
    """What --fetch-all did (clipcy.fusemount.background): updated under lock by its threads."""

    state: str = "off"  # off, waiting (for the replay), running, done, failed
    layers: int = 0  # blobs to fetch (those of a local layout need none)
    bytes_total: int = 0  # their compressed bytes
    bytes_cached: int = 0  # ... found in the span cache (fetched earlier, by anyone)
    bytes_fetched: int = 0  # ... fetched by the background fetch
    requests: int = 0  # its range requests
    pauses: int = 0  # times it waited for the foreground's fetches to finish
    errors: int = 0
    seconds: float = 0.0  # from start to done
    error: str = ""  # the first error
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lock"}
        d["done"] = self.state == "done"
        return d


class MountCounters:
    """The counters of one mount (see the module's docstring). Its fetching()/fetched() make
    it the archive's LayerReaders.observer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = [0, 0, 0]  # by lane: fetches from the blobs' sources
        self.bytes = [0, 0, 0]  # ... their compressed bytes
        self.read_errors: dict[str, int] = {}  # reads answered EIO, by error_kind
        self.replay = ReplayCounters()
        self.background = BackgroundCounters()
        self._fg = 0  # foreground fetches in flight
        self.foreground_idle = threading.Event()
        self.foreground_idle.set()
        self.started = time.monotonic()

    # -- the FetchObserver of every blob ---------------------------------------------------
    def fetching(self) -> int:
        lane = current_lane()
        if lane == FOREGROUND:
            with self._lock:
                self._fg += 1
                self.foreground_idle.clear()
        return lane

    def fetched(self, token: int, n: int) -> None:
        with self._lock:
            self.requests[token] += 1
            self.bytes[token] += n
            if token == FOREGROUND:
                self._fg -= 1
                if not self._fg:
                    self.foreground_idle.set()

    # -- errors ----------------------------------------------------------------------------
    def read_error(self, e: BaseException) -> bool:
        """Count a failed read; True for the first of its kind (the one to log)."""
        kind = error_kind(e)
        with self._lock:
            n = self.read_errors[kind] = self.read_errors.get(kind, 0) + 1
        return n == 1

    # -- all of it ---------------------------------------------------------------------------
    def snapshot(self, spans: DecodedSpanCache | None = None,
                 readers: LayerReaders | None = None) -> dict[str, Any]:
        """Every counter as one JSON-able dict (the keys are documented in docs/CLI.md,
        `clipctl stats`)."""
        with self._lock:
            requests = {name: {"requests": self.requests[i], "bytes": self.bytes[i]}
                        for i, name in enumerate(LANES)}
            errors = dict(self.read_errors)
        replay = self.replay.snapshot()
        cache: dict[str, Any] = {"hits": 0, "misses": 0, "read_misses": 0, "replay_hits": 0,
                                 "spans_decoded": 0, "bytes_decoded": 0, "held": 0,
                                 "disk_hits": None, "disk_misses": None}
        if spans is not None:
            cache.update(hits=spans.hits, misses=spans.misses, read_misses=spans.read_misses,
                         replay_hits=spans.replay_hits,
                         spans_decoded=spans.misses + int(replay.get("spans_filled", 0)),
                         bytes_decoded=spans.decompressed, held=spans.held)
        decoded: dict[str, Any] | None = None  # the on-disk decoded cache (None: off)
        if spans is not None and spans.disk is not None:
            spans.flush()  # the spans a read queued for the disk: counted once written
            dc = spans.disk.cache
            on_disk = dc.approx_bytes
            decoded = {"dir": str(dc.root), "max_bytes": dc.max_bytes,
                       "disk_bytes": on_disk if on_disk is not None else dc.size(),
                       "hits": spans.disk_hits, "bytes_read": spans.disk_bytes,
                       "puts": spans.disk_puts, "damaged": dc.damaged,
                       "write_errors": dc.write_errors, "layers_streamed": spans.streams_started,
                       "spans_streamed": spans.streamed, "stream_waits": spans.stream_waits,
                       "stream_errors": spans.stream_errors}
        http = None
        if readers is not None:
            from clipcy.storage.registry import RemoteStore

            store = readers.store
            if isinstance(store, RemoteStore):
                http = {"requests": store.client.requests,
                        "bytes": store.client.bytes_received}
                if store.cache is not None:
                    cache.update(disk_hits=store.cache.hits, disk_misses=store.cache.misses)
        return {"uptime_seconds": round(time.monotonic() - self.started, 3),
                "requests": requests, "http": http, "span_cache": cache,
                "decoded_cache": decoded,
                "read_errors": errors, "read_errors_total": sum(errors.values()),
                "replay": replay, "background": self.background.snapshot()}
