"""Tar parsing: picks the compiled parser or its pure-Python twin, and streams layer blobs.

    for entry in walk_tar("layer.tar.gz"):
        print(entry.name, entry.type, entry.size, entry.offset)

walk_tar detects gzip / zstd / plain from the magic bytes, decompresses in bounded chunks
(clipcy.tar.streams), feeds the parser and yields entries as their headers are parsed.

With THREADED = True, compressed streams are decompressed in a helper thread (zlib and
zstandard release the GIL) while the caller's thread parses; the hand-over queue holds at
most QUEUE_PIECES batches of BATCH pieces of at most MAX_PIECE bytes. It is off by default:
the compiled parser costs ~0.3 us per entry, so there is little to overlap, and measured on
2 shared cores the hand-overs cost more than the overlap gained (perf/walk.py).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from clipcy._select import PUREPYTHON, compiled, implementation
from clipcy.layers.access import PLAIN
from clipcy.tar.streams import MAX_PIECE, GzipStream, PlainStream, ZstdStream, detect, open_stream

if TYPE_CHECKING or PUREPYTHON:
    from clipcy.tar import _tarparse_py as _impl
else:
    _impl = compiled("clipcy.tar._tarparse", "clipcy.tar._tarparse_py")

IMPLEMENTATION: str = implementation(_impl)
TarEntry = _impl.TarEntry
TarParser = _impl.TarParser

# Compressed bytes read per step. The decompressors bound each output piece (MAX_PIECE).
READ_SIZE = 1 << 20
# Decompress in a helper thread (compressed input only); False: all in the caller's thread.
THREADED = False
QUEUE_PIECES = 4  # batches waiting in the hand-over queue
BATCH = 4  # pieces per batch
_DONE = object()


def walk_tar(
    source: str | os.PathLike[str] | IO[bytes], *, max_header: int = 1 << 20
) -> Iterator[TarEntry]:
    """Yield the entries of a plain, gzip or zstd tar stream (a path or a binary file).

    Raises TarError subclasses for a malformed tar stream and CompressionError for corrupt or
    truncated compressed data (or garbage after the last gzip member). One generator level
    on purpose: each entry passes through it once.
    """
    own = isinstance(source, (str, os.PathLike))
    f: IO[bytes] = open(source, "rb") if own else source  # type: ignore[arg-type, assignment]
    try:
        head = f.read(READ_SIZE)
        while len(head) < 4:  # a short read must not hide the magic
            more = f.read(READ_SIZE)
            if not more:
                break
            head += more
        kind = detect(head)
        stream = open_stream(kind)
        parser = TarParser(max_header)
        if kind == PLAIN or not THREADED:
            chunk = head
            while chunk:
                for piece in stream.feed(chunk):
                    yield from parser.feed(piece)
                chunk = f.read(READ_SIZE)
            stream.finish()
            parser.close()
            return
        q: queue.Queue[object] = queue.Queue(maxsize=QUEUE_PIECES)
        stop = threading.Event()
        t = threading.Thread(
            target=_produce, args=(f, head, stream, q, stop), name="clipcy-walk-tar", daemon=True
        )
        t.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                for piece in item:  # type: ignore[attr-defined]
                    yield from parser.feed(piece)
            parser.close()
        finally:
            # done, an error, or the caller closed the generator: unblock a producer waiting
            # on a full queue and wait for it, so the file is no longer read after we return
            stop.set()
            while t.is_alive():
                try:
                    while True:
                        q.get_nowait()
                except queue.Empty:
                    pass
                t.join(0.01)
    finally:
        if own:
            f.close()


def _produce(
    f: IO[bytes],
    head: bytes,
    stream: GzipStream | ZstdStream | PlainStream,
    q: queue.Queue[object],
    stop: threading.Event,
) -> None:
    """Helper thread: read and decompress, hand over batches of pieces (then _DONE or the
    error). Batches of BATCH pieces keep the thread hand-overs few."""
    try:
        chunk = head
        batch: list[bytes] = []
        while chunk:
            for piece in stream.feed(chunk):
                batch.append(piece)
                if len(batch) == BATCH:
                    if stop.is_set():
                        return
                    q.put(batch)
                    batch = []
            chunk = f.read(READ_SIZE)
        stream.finish()
        if batch:
            q.put(batch)
        q.put(_DONE)
    except BaseException as e:  # noqa: BLE001 -- handed over and re-raised by the consumer
        q.put(e)


__all__ = ["IMPLEMENTATION", "TarEntry", "TarParser", "walk_tar", "READ_SIZE", "MAX_PIECE"]
