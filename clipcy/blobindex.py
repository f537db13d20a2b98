"""Indexers: decompress one layer blob while recording how to start reading in its middle.

The integrator drives every indexer the same way::

    ix = make_indexer(kind)                 # kind: access.GZIP / ZSTD / PLAIN
    for chunk in blob_chunks:               # compressed input, any size
        for out in ix.feed(chunk):          # decompressed output, pieces of at most 1 MiB
            ...                             # (exhaust each feed() before the next one)
    ix.finish()                             # CompressionError: truncated / corrupt / garbage
    access = ix.access()                    # LayerAccess: span + points, or frames
    ix.total_in, ix.total_out

gzip runs in the compiled clipcy._checkpoint (zlib C API, GIL released while inflating); zstd
is walked here frame by frame and block by block (python-zstandard decompresses each block);
plain passes bytes through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import zstandard

from clipcy.access import GZIP, PLAIN, ZSTD, LayerAccess
from clipcy.errors import CompressionError

# Spacing of gzip resume points in uncompressed bytes, chosen with perf/lazy.py
# (perf/RESULTS-lazy.md: a 192 MiB layer, 75% text / 25% random bytes, gzip -6 -> 101 MiB).
# A cold read inflates on average span/2 bytes before the wanted ones; a point costs one
# window, which the indexer makes sparse (bytes the following 32 KiB never copy are zeroed),
# so windows cost ~0.6% of the gzip layer at 1 MiB after zstd (1% if each window were
# compressed alone; 2.6% with full windows). Measured:
#   span     index cost (vs no points)   windows (zstd -3)   64 KiB pread median / p99   speedup
#   512 KiB  +20%                        1.15%               1.1 / 2.4 ms                181x
#   1 MiB    +8%                         0.61%               1.6 / 3.9 ms                119x
#   2 MiB    +6%                         0.30%               3.4 / 6.9 ms                 56x
#   4 MiB    +3%                         0.15%               6.0 / 12.7 ms                32x
# (speedup: median vs inflating from the layer's start.) 1 MiB is the largest span that keeps
# reads >= 100x faster than from the start on a ~200 MiB layer, and the index within 1%.
DEFAULT_SPAN = 1 << 20

# Layers whose uncompressed size is below this keep only the point at offset 0: reading any
# byte of a 2 MiB layer from its start costs ~4 ms (the gzip reader discards at ~500 MiB/s),
# about the p99 of a read with points, and saves a window per span.
MIN_POINTS_LAYER = 2 * DEFAULT_SPAN

OUT_PIECE = 1 << 20  # largest output piece feed() yields (bounded memory on bombs)


class Indexer(Protocol):
    """What make_indexer returns; see the module docstring for the call order."""

    @property
    def total_in(self) -> int: ...

    @property
    def total_out(self) -> int: ...

    def feed(self, data: bytes) -> Iterator[bytes]: ...

    def finish(self) -> None: ...

    def access(self) -> LayerAccess: ...


def make_indexer(kind: str, span: int = DEFAULT_SPAN,
                 min_points_layer: int | None = None) -> Indexer:
    """An indexer for a blob compressed as `kind` (access.GZIP, ZSTD or PLAIN).

    span: gzip resume-point spacing (uncompressed bytes). min_points_layer: gzip layers smaller
    than this keep only the start point; default MIN_POINTS_LAYER at the default span, else
    2 * span.
    """
    if kind == GZIP:
        from clipcy._checkpoint import GzipIndexer

        if span <= 0:
            raise ValueError(f"span must be positive, not {span}")
        if min_points_layer is None:
            min_points_layer = MIN_POINTS_LAYER if span == DEFAULT_SPAN else 2 * span
        ix: Indexer = GzipIndexer(span, min_points_layer)
        return ix
    if kind == ZSTD:
        return ZstdIndexer()
    if kind == PLAIN:
        return PlainIndexer()
    raise ValueError(f"unknown compression kind {kind!r}")


class PlainIndexer:
    """Uncompressed layers: output is input; readers use os.pread."""

    def __init__(self) -> None:
        self.total_in = 0
        self._done = False

    @property
    def total_out(self) -> int:
        return self.total_in

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data).cast("B")
        self.total_in += len(view)
        for i in range(0, len(view), OUT_PIECE):
            yield bytes(view[i:i + OUT_PIECE])

    def finish(self) -> None:
        self._done = True

    def access(self) -> LayerAccess:
        return LayerAccess(kind=PLAIN)


# -- zstd -----------------------------------------------------------------------------------
ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE_MIN, SKIPPABLE_MAX = 0x184D2A50, 0x184D2A5F
BLOCK_MAX = 128 << 10  # RFC 8878 Block_Maximum_Size: a block's content is never larger
_FCS_SIZES = (0, 2, 4, 8)
_DID_SIZES = (0, 1, 2, 4)

# walker states
_MAGIC, _SKIP, _SKIPBODY, _DESC, _HEADER, _BLOCK, _BLOCKBODY, _CHECKSUM = range(8)


def zstd_header_size(desc: int) -> int:
    """Size of a zstd frame header (magic included) from its Frame_Header_Descriptor byte."""
    single = desc >> 5 & 1
    fcs = _FCS_SIZES[desc >> 6]
    if fcs == 0 and single:
        fcs = 1
    return 4 + 1 + (0 if single else 1) + _DID_SIZES[desc & 3] + fcs


def zstd_content_size(header: bytes) -> int | None:
    """Frame_Content_Size from a complete frame header, None when absent."""
    desc = header[4]
    single = desc >> 5 & 1
    flag = desc >> 6
    size = _FCS_SIZES[flag] or (1 if single else 0)
    if size == 0:
        return None
    pos = 5 + (0 if single else 1) + _DID_SIZES[desc & 3]
    value = int.from_bytes(header[pos:pos + size], "little")
    return value + 256 if size == 2 else value


class ZstdIndexer:
    """Walks the zstd frame format and records every data frame.

    frames: (compressed offset, compressed size, uncompressed offset, uncompressed size).
    Skippable frames are skipped (also at the very start). Frames without a content size
    work: the frame's end is found from its block headers. Each complete block goes through
    the frame's zstandard decompressobj, so one call yields at most 128 KiB; pieces are
    joined up to 1 MiB before they are yielded.
    """

    def __init__(self) -> None:
        self.total_in = 0
        self.total_out = 0
        self.frames: list[tuple[int, int, int, int]] = []
        self._buf = bytearray()
        self._base = 0  # compressed offset of self._buf[0]
        self._state = _MAGIC
        self._need = 4
        self._frame_in = 0  # current frame: compressed start offset
        self._frame_out = 0  # current frame: uncompressed start offset
        self._fcs: int | None = None
        self._checksum = False
        self._dobj: zstandard.ZstdDecompressionObj | None = None
        self._dctx = zstandard.ZstdDecompressor()
        self._finished = False
        self._any = False  # any frame (data or skippable) seen
        self._hdr = b""
        self._skip_left = 0
        self._block_last = False
        self._block_head = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._finished:
            raise RuntimeError("ZstdIndexer.feed after finish()")
        self._buf += data
        self.total_in += len(data)
        pending: list[bytes] = []
        size = 0
        pos = 0
        buf = self._buf
        try:
            while True:
                avail = len(buf) - pos
                if self._state == _SKIPBODY:  # streamed: a skippable frame may be 4 GiB
                    k = min(avail, self._skip_left)
                    pos += k
                    self._skip_left -= k
                    if self._skip_left:
                        break
                    self._state, self._need = _MAGIC, 4
                    continue
                need = self._need
                if avail < need:
                    break
                out = self._advance(bytes(buf[pos:pos + need]), self._base + pos)
                pos += need
                if out:
                    pending.append(out)
                    size += len(out)
                    if size >= OUT_PIECE:
                        joined = b"".join(pending)
                        pending, size = [], 0
                        for i in range(0, len(joined), OUT_PIECE):
                            piece = joined[i:i + OUT_PIECE]
                            if len(piece) == OUT_PIECE:
                                yield piece
                            else:
                                pending, size = [piece], len(piece)
        finally:
            del buf[:pos]
            self._base += pos
        if pending:
            yield b"".join(pending)

    def _advance(self, data: bytes, offset: int) -> bytes:
        """Consume exactly self._need bytes at compressed `offset`; set the next need."""
        state = self._state
        if state == _MAGIC:
            magic = int.from_bytes(data, "little")
            if SKIPPABLE_MIN <= magic <= SKIPPABLE_MAX:
                self._any = True
                self._frame_in = offset
                self._state, self._need = _SKIP, 4
                return b""
            if magic != ZSTD_MAGIC:
                what = ("trailing garbage after the last zstd frame" if self._any
                        else "not a zstd frame")
                raise CompressionError(f"{what} at compressed offset {offset} "
                                       f"(magic {data.hex()})")
            self._any = True
            self._frame_in = offset
            self._frame_out = self.total_out
            self._hdr = data
            self._state, self._need = _DESC, 1  # the descriptor byte tells the header size
            return b""
        if state == _SKIP:
            self._skip_left = int.from_bytes(data, "little")
            self._state, self._need = _SKIPBODY, 0
            return b""
        if state == _DESC:
            desc = data[0]
            if desc & 0x08:
                raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: "
                                       f"reserved bit set in the frame header descriptor")
            self._checksum = bool(desc & 0x04)
            self._hdr += data
            self._state, self._need = _HEADER, zstd_header_size(desc) - 5
            if self._need:
                return b""
            data = b""
        if self._state == _HEADER:
            header = self._hdr + data
            self._fcs = zstd_content_size(header)
            self._dobj = self._dctx.decompressobj()
            self._state, self._need = _BLOCK, 3
            return self._decompress(header, offset)
        if state == _BLOCK:
            head = int.from_bytes(data, "little")
            btype = head >> 1 & 3
            bsize = head >> 3
            if btype == 3:
                raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: "
                                       f"reserved block type at compressed offset {offset}")
            if bsize > BLOCK_MAX:
                raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: "
                                       f"block of {bsize} bytes at compressed offset {offset} "
                                       f"(at most {BLOCK_MAX})")
            self._block_last = bool(head & 1)
            self._block_head = data
            content = 1 if btype == 1 else bsize  # RLE: one byte repeated bsize times
            if content:
                self._state, self._need = _BLOCKBODY, content
                return b""
            offset += 3
            data = b""
        if self._state == _BLOCKBODY or state == _BLOCK:
            out = self._decompress(self._block_head + data, offset)
            if not self._block_last:
                self._state, self._need = _BLOCK, 3
                return out
            if self._checksum:
                self._state, self._need = _CHECKSUM, 4
                return out
            return out + self._end_frame(offset + len(data))
        # _CHECKSUM
        out = self._decompress(data, offset)
        return out + self._end_frame(offset + 4)

    def _decompress(self, data: bytes, offset: int) -> bytes:
        assert self._dobj is not None
        try:
            out = self._dobj.decompress(data)
        except zstandard.ZstdError as e:
            raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: {e} "
                                   f"(compressed offset {offset})") from e
        self.total_out += len(out)
        return out

    def _end_frame(self, end: int) -> bytes:
        assert self._dobj is not None
        usize = self.total_out - self._frame_out
        if not self._dobj.eof:
            raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: "
                                   f"decoder did not finish at compressed offset {end}")
        if self._fcs is not None and self._fcs != usize:
            raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: "
                                   f"{usize} bytes, header says {self._fcs}")
        self.frames.append((self._frame_in, end - self._frame_in, self._frame_out, usize))
        self._dobj = None
        self._state, self._need = _MAGIC, 4
        return b""

    def finish(self) -> None:
        if self._state != _MAGIC or self._buf:
            start = self._frame_in if self._state != _MAGIC else self._base
            raise CompressionError(f"truncated zstd stream: the frame at compressed offset "
                                   f"{start} ends early at compressed offset {self.total_in}")
        if not self._any:
            raise CompressionError("truncated zstd stream: no data (compressed offset 0)")
        self._finished = True

    def access(self) -> LayerAccess:
        if not self._finished:
            raise RuntimeError("ZstdIndexer.access before a successful finish()")
        return LayerAccess(kind=ZSTD, frames=list(self.frames))

