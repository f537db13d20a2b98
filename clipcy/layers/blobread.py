"""Random-access readers over one layer blob, driven by its LayerAccess.

    blob = open_store(ref).open_blob(descriptor, access.spans)   # clipcy.storage
    with open_layer_reader(blob, access) as r:
        data = r.pread(offset, n)    # bytes of the UNCOMPRESSED layer stream

Compressed bytes come only from the VerifiedBlob, which checks the archive's span checksum
of every span they touch before handing them over: a blob changed after indexing gives a
SpanChecksumError (naming the blob and the compressed offset), never other bytes.
pread is thread-safe: the blob is, and every call builds its own decompression state.

* plain: the verified bytes themselves.
* gzip: the last resume point <= offset, then a clipcy.layers._checkpoint.GzipResumer (compiled, GIL
  released): raw inflate primed with the point's bits and 32 KiB window (the reader keeps
  each window zstd-compressed and inflates it only to resume there), or a gzip-header
  inflate at a member start; output before `offset` is discarded; reads cross members. The
  decoder left at the end of a read is parked (a few per reader) and reused when a later
  read starts at or after it and after the point: sequential reads continue.
* zstd: only the frames covering [offset, offset + n). Frames up to FRAME_CACHE_MAX bytes are
  decompressed whole (so zstd checks their size and checksum) and kept in a small LRU;
  larger frames are streamed from their start, and the decoder left at the end of a read is
  kept (a few per reader) so that sequential reads continue instead of restarting.

The gzip decoder takes its input from the VerifiedBlob in READ_CHUNK pieces (the GIL is
held only to fetch them; inflate runs without it).
"""

from __future__ import annotations

import bisect
from _thread import allocate_lock  # threading.Lock, without importing threading (~0.8 ms)
from collections import OrderedDict
from collections.abc import Sequence
from types import TracebackType

from clipcy._zstd import zstandard
from clipcy.errors import BlobError, ClipError, CompressionError
from clipcy.layers.access import GZIP, PLAIN, ZSTD, LayerAccess
from clipcy.layers.packing import Point, WindowPacker

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from typing import Protocol

    from typing_extensions import Self

    from clipcy.layers._checkpoint import GzipResumer
    from clipcy.storage.spans import VerifiedBlob
else:
    Protocol = object  # (protocols are for the type checker: a plain base at run time)

FRAME_CACHE_MAX = 8 << 20  # zstd frames up to this size are decompressed whole and cached
FRAME_CACHE_BYTES = 32 << 20  # bound of the per-reader LRU of decompressed zstd frames
GZIP_READ_CHUNK = 1 << 17  # the compressed piece GzipResumer asks its source for (_checkpoint)
CURSORS = 4  # per reader: decoders parked at the end of the last reads (gzip, large zstd frames)
PREFETCH_OUT = 1 << 20  # prefetch(): the uncompressed bytes of a file's start to fetch ahead
PREFETCH_MAX = 4 << 20  # ... and at most this many compressed bytes for them


class LayerReader(Protocol):
    """A reader of one layer's uncompressed stream (PlainReader, GzipReader, ZstdReader)."""

    path: str

    def pread(self, offset: int, n: int) -> bytes: ...

    def reading(self, offset: int, end: int, on: bool = False) -> None: ...

    def prefetch(self, offset: int, end: int) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> LayerReader: ...

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def open_layer_reader(blob: VerifiedBlob, access: LayerAccess) -> LayerReader:
    """A reader of the uncompressed stream of a verified blob, indexed as `access`.
    The reader owns the blob: closing it closes the blob."""
    if access.kind == PLAIN:
        return PlainReader(blob)
    if access.kind == GZIP:
        return GzipReader(blob, access)
    if access.kind == ZSTD:
        return ZstdReader(blob, access)
    blob.close()
    raise ValueError(f"unknown compression kind {access.kind!r} for {blob.path}")


def _check_points(points: list[tuple[int, int, int, bytes]]) -> str:
    """Why gzip resume points (sorted by uncompressed offset) are unusable, or ""."""
    if not points or points[0][:3] != (0, 0, 0):
        return "no point at offset 0"
    prev = (0, 0)
    for i, p in enumerate(points):
        if len(p) != 4:
            return f"point {i} is not (offset, bits, offset, window)"
        comp, bits, out, window = p
        if not (isinstance(comp, int) and isinstance(bits, int) and isinstance(out, int)
                and isinstance(window, (bytes, bytearray, memoryview))):
            return f"point {i} has fields of the wrong type"
        if comp < 0 or out < 0 or not 0 <= bits <= 7 or (bits and comp == 0):
            return f"point {i} ({comp}, {bits}, {out}) is out of range"
        if len(window) > 32768:
            return f"point {i} has a window of {len(window)} bytes (at most 32768)"
        if (comp, out) < prev or comp < prev[0]:
            return f"point {i} lies before point {i - 1} in the compressed stream"
        prev = (comp, out)
    return ""


def _check_frames(frames: list[tuple[int, int, int, int]]) -> str:
    """Why zstd frames are unusable, or ""."""
    end_in = end_out = 0
    for i, f in enumerate(sorted(frames, key=lambda f: (f[2], f[0]))):
        if len(f) != 4 or not all(isinstance(v, int) for v in f):
            return f"frame {i} is not four integers"
        comp, csize, out, usize = f
        if comp < end_in or csize <= 0 or usize < 0:
            return f"frame {i} ({comp}, {csize}) overlaps or is empty"
        if out != end_out:
            return f"frame {i} starts at uncompressed offset {out}, expected {end_out}"
        end_in, end_out = comp + csize, out + usize
    return ""


def _gzip_stop(points: Sequence[Point], starts: list[int], blob_size: int, end: int) -> int:
    """The compressed offset no decoder reading up to the uncompressed offset end passes:
    just past the byte that holds the first point at or after end, or the blob's end."""
    k = bisect.bisect_left(starts, end)
    return points[k][0] + 1 if k < len(points) else blob_size


def _gzip_range(points: Sequence[Point], starts: list[int], blob_size: int, comp: int,
                bits: int,
                end: int) -> tuple[int, int]:
    """The compressed bytes that decoding from the point at comp up to the uncompressed
    offset end consumes at most: up to _gzip_stop, in the decoder's READ_CHUNK pieces."""
    stop = _gzip_stop(points, starts, blob_size, end)
    chunks = -(-(stop - comp) // GZIP_READ_CHUNK)  # the decoder reads from comp on
    return comp - 1 if bits else comp, min(blob_size, comp + chunks * GZIP_READ_CHUNK)


def first_fetch(access: LayerAccess, blob_size: int, offset: int, end: int) -> tuple[int, int]:
    """The compressed range a first read of [offset, end) consumes, from the access data
    alone (before a reader is opened): what GzipReader's will_need hint would say; the range
    itself for a plain layer; (0, 0) for zstd (not prefetched)."""
    if access.kind == PLAIN:
        return offset, min(end, blob_size)
    if access.kind != GZIP or not access.points:
        return 0, 0
    points = sorted(access.points, key=lambda p: p[2])  # as GzipReader keeps them
    starts = [p[2] for p in points]
    k = bisect.bisect_right(starts, offset) - 1
    if k < 0:
        return 0, 0
    return _gzip_range(points, starts, blob_size, points[k][0], points[k][1], end)


class _Reader:
    def __init__(self, blob: VerifiedBlob) -> None:
        self.blob = blob
        self.path: str = blob.path
        self.blob_size: int = blob.size
        self._closed = False

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or n < 0:
            raise ValueError(f"bad read of {n} bytes at offset {offset} in {self.path}")
        if self._closed:
            raise ValueError(f"layer reader for {self.path} is closed")

    def _raw(self, offset: int, n: int) -> bytes:
        """n verified compressed bytes at offset (short only at the end of the blob)."""
        return self.blob.pread(offset, n)

    def reading(self, offset: int, end: int, on: bool = False) -> None:
        """A hint: a file's reader is in [offset, end) of the uncompressed stream and may
        read up to end (`on`: it reads in order); a remote blob then fetches ahead (only if
        `on`) no further than the compressed bytes that end needs."""
        self.blob.read_limit(self._compressed_end(end), on)

    def _compressed_end(self, end: int) -> int:
        """The compressed offset that reading the uncompressed stream up to end needs."""
        return end

    def prefetch(self, offset: int, end: int) -> None:
        """A hint: [offset, end) of the uncompressed stream (a file) will be read from its
        start soon, e.g. the next file of an extract. A remote blob fetches the compressed
        bytes of its first PREFETCH_OUT bytes now, on a helper thread; others ignore it.
        Never past the compressed bytes that end needs."""
        if not 0 <= offset < end:
            return
        lo, hi = self._compressed_range(offset, min(end, offset + PREFETCH_OUT))
        hi = min(hi, lo + PREFETCH_MAX, self._compressed_end(end))
        if lo < hi:
            self.blob.prefetch(lo, hi)

    def _compressed_range(self, offset: int, end: int) -> tuple[int, int]:
        """The compressed bytes a read of [offset, end) from nothing decoded consumes."""
        return offset, end

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.blob.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PlainReader(_Reader):
    def pread(self, offset: int, n: int) -> bytes:
        self._check(offset, n)
        return self._raw(offset, n)


class GzipReader(_Reader):
    def __init__(self, blob: VerifiedBlob, access: LayerAccess) -> None:
        super().__init__(blob)
        path = self.path
        points = sorted(access.points, key=lambda p: p[2])
        problem = _check_points(points)
        if problem:
            self.close()
            raise CompressionError(f"invalid gzip access data for {path}: {problem}")
        last = max(p[0] for p in points)
        # each window kept as its own zstd frame (~4x smaller for the indexer's sparse windows),
        # inflated only when a read resumes at its point: raw windows were 32 KiB per MiB of
        # layer held for the reader's life (28 MiB for the 1 GB four-layer perf image)
        self._points = WindowPacker().pack(points)
        self._starts = [p[2] for p in points]
        if last > self.blob_size:
            self.close()
            raise BlobError(f"layer blob {path} is {self.blob_size} bytes, shorter than its "
                            f"index (a resume point at compressed offset {last})")
        self._lock = allocate_lock()
        self._parked: list[GzipResumer] = []  # decoders left where the last reads ended

    def pread(self, offset: int, n: int) -> bytes:
        from clipcy.layers._checkpoint import GzipResumer

        self._check(offset, n)
        if n == 0:
            return b""
        comp, bits, start, window = self._points[bisect.bisect_right(self._starts, offset) - 1]
        stream = None
        with self._lock:  # a parked decoder between the point and the offset beats the point
            best = -1
            for k, st in enumerate(self._parked):
                if start <= st.position <= offset and (
                        best < 0 or st.position > self._parked[best].position):
                    best = k
            if best >= 0:
                stream = self._parked.pop(best)
        try:
            if stream is None:
                self._will_need(comp, bits, offset + n)
                stream = GzipResumer(self.blob, comp, bits, _unpack(window), start)
            data = stream.read(n, offset - stream.position)
        except ClipError as e:
            where = "" if isinstance(e, BlobError) else f"layer blob {self.path}: "
            raise type(e)(f"{where}{e} (reading {n} bytes at uncompressed offset "
                          f"{offset})") from e
        if len(data) == n:
            with self._lock:
                self._parked.append(stream)
                if len(self._parked) > CURSORS:
                    self._parked.pop(0)
        return data

    def _compressed_end(self, end: int) -> int:
        stop = _gzip_stop(self._points, self._starts, self.blob_size, end)
        return min(self.blob_size, stop + GZIP_READ_CHUNK)

    def _will_need(self, comp: int, bits: int, end: int) -> None:
        """Tell the blob which compressed bytes a read from the point at comp up to the
        uncompressed offset end consumes at most (a remote blob then asks for them in one
        request)."""
        self.blob.will_need(*_gzip_range(self._points, self._starts, self.blob_size, comp, bits,
                                         end))

    def _compressed_range(self, offset: int, end: int) -> tuple[int, int]:
        # from the point at or before offset: a decoder parked between that point and
        # offset (the file before ended there) also reads only within this range
        comp, bits, _, _ = self._points[bisect.bisect_right(self._starts, offset) - 1]
        return _gzip_range(self._points, self._starts, self.blob_size, comp, bits, end)

    def close(self) -> None:
        super().close()
        if hasattr(self, "_lock"):
            with self._lock:
                self._parked.clear()


def _unpack(window: bytes) -> bytes:
    """A point's raw window from its zstd frame (a context per call: they are not
    thread-safe; making one costs microseconds next to the inflate that follows)."""
    return zstandard.ZstdDecompressor().decompress(window) if window else b""


class _PreadSource:
    """File-like view of [start, start + size) of a descriptor, for zstandard.stream_reader."""

    def __init__(self, reader: _Reader, start: int, size: int) -> None:
        self._r = reader
        self._pos = start
        self._end = start + size

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._pos
        if size < 0 or size > left:
            size = left
        b = self._r._raw(self._pos, size)
        self._pos += len(b)
        return b


class ZstdReader(_Reader):
    def __init__(self, blob: VerifiedBlob, access: LayerAccess) -> None:
        super().__init__(blob)
        path = self.path
        problem = _check_frames(access.frames)
        if problem:
            self.close()
            raise CompressionError(f"invalid zstd access data for {path}: {problem}")
        self._frames = [f for f in sorted(access.frames, key=lambda f: f[2]) if f[3] > 0]
        self._starts = [f[2] for f in self._frames]
        self.size = self._frames[-1][2] + self._frames[-1][3] if self._frames else 0
        end = max((f[0] + f[1] for f in access.frames), default=0)
        if end > self.blob_size:
            self.close()
            raise BlobError(f"layer blob {path} is {self.blob_size} bytes, shorter than its "
                            f"index (a zstd frame ends at compressed offset {end})")
        self._lock = allocate_lock()
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0
        # parked decoders: (frame index, uncompressed position in the frame, stream reader)
        self._cursors: list[tuple[int, int, zstandard.ZstdDecompressionReader]] = []

    def _compressed_end(self, end: int) -> int:
        i = bisect.bisect_left(self._starts, end) - 1
        if i < 0 or not self._frames:
            return 0
        comp, csize, _, _ = self._frames[min(i, len(self._frames) - 1)]
        return comp + csize

    def prefetch(self, offset: int, end: int) -> None:
        """Ignored: files share frames (decoded whole and kept, or streamed by a parked
        decoder), so fetching a next file's frames ahead fetched 35% of the bytes twice on
        the corpus's multi-frame layer, for no gain in time; a frame is one request anyway."""

    def pread(self, offset: int, n: int) -> bytes:
        self._check(offset, n)
        end = min(offset + n, self.size)
        if offset >= end:
            return b""
        parts = []
        i = bisect.bisect_right(self._starts, offset) - 1
        pos = offset
        try:
            while pos < end:
                comp, csize, ustart, usize = self._frames[i]
                lo, hi = pos - ustart, min(end, ustart + usize) - ustart
                if usize <= FRAME_CACHE_MAX:
                    parts.append(self._whole(i)[lo:hi])
                else:
                    parts.append(self._stream(i, lo, hi - lo))
                pos = ustart + hi
                i += 1
        except zstandard.ZstdError as e:
            raise CompressionError(f"layer blob {self.path}: zstd frame at compressed offset "
                                   f"{self._frames[i][0]}: {e} (reading {n} bytes at "
                                   f"uncompressed offset {offset})") from e
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _short(self, i: int, got: int) -> CompressionError:
        comp, csize, ustart, usize = self._frames[i]
        return CompressionError(f"layer blob {self.path}: zstd frame at compressed offset {comp} "
                                f"gives {got} bytes, its index says {usize}")

    def _whole(self, i: int) -> bytes:
        with self._lock:
            data = self._cache.get(i)
            if data is not None:
                self._cache.move_to_end(i)
                return data
        comp, csize, ustart, usize = self._frames[i]
        raw = self._raw(comp, csize)
        if len(raw) != csize:
            raise BlobError(f"layer blob {self.path} ends inside the zstd frame at compressed "
                            f"offset {comp}")
        data = zstandard.ZstdDecompressor().decompress(raw, max_output_size=usize)
        if len(data) != usize:
            raise self._short(i, len(data))
        with self._lock:
            if i not in self._cache:
                self._cache[i] = data
                self._cached += len(data)
                while self._cached > FRAME_CACHE_BYTES:
                    _, old = self._cache.popitem(last=False)
                    self._cached -= len(old)
        return data

    def _stream(self, i: int, lo: int, n: int) -> bytes:
        comp, csize, ustart, usize = self._frames[i]
        reader = None
        with self._lock:  # take the parked decoder closest below lo (never shared)
            best = -1
            for k, (fi, at, _) in enumerate(self._cursors):
                if fi == i and at <= lo and (best < 0 or at > self._cursors[best][1]):
                    best = k
            if best >= 0:
                _, at, reader = self._cursors.pop(best)
        if reader is None:
            src = _PreadSource(self, comp, csize)
            reader = zstandard.ZstdDecompressor().stream_reader(
                src,  # type: ignore[arg-type]  # (a file as far as stream_reader goes: read())
                read_size=1 << 17, read_across_frames=False, closefd=False)
            at = 0
        while at < lo:  # discard up to the offset
            b = reader.read(min(lo - at, 1 << 20))
            if not b:
                raise self._short(i, at)
            at += len(b)
        parts = []
        got = 0
        while got < n:
            b = reader.read(n - got)
            if not b:
                raise self._short(i, at + got)
            parts.append(b)
            got += len(b)
        at += got
        if at == usize:  # at the frame's end: let zstd check its checksum, refuse extra data
            if reader.read(1):
                raise self._short(i, usize + 1)
        else:
            with self._lock:
                self._cursors.append((i, at, reader))
                if len(self._cursors) > CURSORS:
                    self._cursors.pop(0)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        super().close()
        if hasattr(self, "_lock"):
            with self._lock:
                self._cache.clear()
                self._cursors.clear()
