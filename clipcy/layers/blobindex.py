"""Indexers: decompress one layer blob while recording how to start reading in its middle.

The integrator drives every indexer the same way::

    ix = make_indexer(kind)                 # kind: access.GZIP / ZSTD / PLAIN
    for chunk in blob_chunks:               # compressed input, any size
        for out in ix.feed(chunk):          # decompressed output, pieces of at most 1 MiB
            ...                             # (exhaust each feed() before the next one)
    ix.finish()                             # CompressionError: truncated / corrupt / garbage
    access = ix.access()                    # LayerAccess: span + points, or frames
    ix.total_in, ix.total_out

gzip runs in the compiled clipcy.layers._checkpoint (zlib's C API, served by zlib-ng when its
wheel is installed: clipcy.layers._inflate; GIL released while inflating); zstd
is walked here header by header (python-zstandard decompresses runs of whole blocks, zero-copy);
plain passes bytes through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from clipcy._zstd import zstandard
from clipcy.errors import CompressionError
from clipcy.layers.access import GZIP, PLAIN, ZSTD, LayerAccess

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
        from clipcy.layers._checkpoint import GzipIndexer

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

# walker states: header states need their bytes contiguous (carried in a tail across feeds),
# _SKIPBODY / _BODY / _CHECKSUM stream through any number of feeds
_MAGIC, _SKIP, _SKIPBODY, _DESC, _HEADER, _BLOCK, _BODY, _CHECKSUM = range(8)

# Output pieces: decompress calls already return up to OUT_PIECE; smaller ones (chunk ends, small
# blocks, small frames) are gathered until they reach this size before they are yielded.
JOIN_MIN = 256 << 10


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
    work: the frame's end is found from its block headers.

    Speed: only the headers (frame, block: a few thousand per 500 MB) are walked in Python.
    The block bytes between them go to the frame's zstandard decompressobj as zero-copy
    memoryview slices of the fed chunk, each slice spanning as many whole blocks as fit in
    OUT_PIECE of output by their headers' bound (raw/RLE: their size, compressed: 128 KiB),
    so one call returns at most OUT_PIECE even on a bomb (RLE: 4 bytes -> 128 KiB). Nothing
    is buffered but an incomplete header (at most 13 bytes) between feeds. The decoder checks
    the frame checksum; the walker checks that the decoder ends exactly where the walk does.
    """

    def __init__(self) -> None:
        self.total_in = 0
        self.total_out = 0
        self.frames: list[tuple[int, int, int, int]] = []
        self._tail = b""  # an incomplete header's first bytes, from the end of the last feed
        self._state = _MAGIC
        self._need = 4  # header states: bytes the header needs
        self._left = 0  # streamed states: bytes left in the skippable body / block / checksum
        self._bound = 0  # _BODY: most output the current block can give
        self._last = False  # current block is the frame's last
        self._frame_in = 0  # current frame: compressed start offset
        self._frame_out = 0  # current frame: uncompressed start offset
        self._fcs: int | None = None
        self._checksum = False
        self._hdr = b""
        self._dobj: zstandard.ZstdDecompressionObj | None = None
        self._dctx = zstandard.ZstdDecompressor()
        self._pend: list[bytes] = []  # small outputs gathered up to JOIN_MIN
        self._psize = 0
        self._finished = False
        self._any = False  # any frame (data or skippable) seen

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._finished:
            raise RuntimeError("ZstdIndexer.feed after finish()")
        view = memoryview(data).cast("B")
        n = len(view)
        base = self.total_in  # compressed offset of view[0]
        self.total_in += n
        pos = 0
        # the decoder's pending input is view[start:pos]; budget bounds its output
        start = 0
        budget = self._bound if self._state == _BODY else 0
        while True:
            state = self._state
            if state >= _BODY or state == _SKIPBODY:  # streamed through
                k = min(n - pos, self._left)
                pos += k
                self._left -= k
                if self._left:
                    break  # this chunk is used up
                if state == _SKIPBODY:
                    self._state, self._need = _MAGIC, 4
                    continue
                if state == _BODY:
                    if not self._last:
                        self._state, self._need = _BLOCK, 3
                        continue
                    if self._checksum:
                        self._state, self._left = _CHECKSUM, 4
                        continue
                if pos > start:
                    yield from self._pump(view[start:pos], base + start)
                start = pos
                self._end_frame(base + pos)
                continue
            # a header: its bytes must be contiguous
            need = self._need
            tail = self._tail
            if tail:  # only ever at pos 0: the previous feed ended inside this header
                k = need - len(tail)
                if n < k:
                    break
                head = tail + bytes(view[:k])
                hoff = base - len(tail)
                self._tail = b""
                pos = k
                loose = True  # not in view: the decoder gets these bytes on their own
            else:
                if n - pos < need:
                    break
                head = bytes(view[pos:pos + need])
                hoff = base + pos
                pos += need
                loose = False
            if state == _BLOCK:
                bits = int.from_bytes(head, "little")
                btype = bits >> 1 & 3
                bsize = bits >> 3
                if btype == 3:
                    raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: "
                                           f"reserved block type at compressed offset {hoff}")
                if bsize > BLOCK_MAX:
                    raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: "
                                           f"block of {bsize} bytes at compressed offset "
                                           f"{hoff} (at most {BLOCK_MAX})")
                bound = BLOCK_MAX if btype == 2 else bsize  # raw / RLE: exactly bsize
                if loose:
                    yield from self._pump(head, hoff)
                    start, budget = pos, 0
                elif budget + bound > OUT_PIECE and hoff - base > start:
                    yield from self._pump(view[start:hoff - base], base + start)
                    start, budget = hoff - base, 0
                budget += bound
                self._bound = bound
                self._last = bool(bits & 1)
                self._state, self._left = _BODY, 1 if btype == 1 else bsize
                continue
            if state == _MAGIC:
                magic = int.from_bytes(head, "little")
                self._frame_in = hoff
                if SKIPPABLE_MIN <= magic <= SKIPPABLE_MAX:
                    self._any = True
                    self._state, self._need = _SKIP, 4
                    continue
                if magic != ZSTD_MAGIC:
                    what = ("trailing garbage after the last zstd frame" if self._any
                            else "not a zstd frame")
                    raise CompressionError(f"{what} at compressed offset {hoff} "
                                           f"(magic {head.hex()})")
                self._any = True
                self._frame_out = self.total_out
                self._hdr = head
                self._state, self._need = _DESC, 1  # the descriptor tells the header size
                continue
            if state == _SKIP:
                self._state, self._left = _SKIPBODY, int.from_bytes(head, "little")
                continue
            if state == _DESC:
                desc = head[0]
                if desc & 0x08:
                    raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: "
                                           f"reserved bit set in the frame header descriptor")
                self._checksum = bool(desc & 0x04)
                self._hdr += head
                # never 0: a window byte or a content size (>= 1 byte) always follows
                self._state, self._need = _HEADER, zstd_header_size(desc) - 5
                continue
            # _HEADER: the frame header is complete; the decoder gets it on its own
            header = self._hdr + head
            self._fcs = zstd_content_size(header)
            self._dobj = self._dctx.decompressobj()
            yield from self._pump(header, self._frame_in)
            self._state, self._need = _BLOCK, 3
            start, budget = pos, 0
        if self._dobj is not None and pos > start:  # inside a frame: flush the decoder input
            yield from self._pump(view[start:pos], base + start)
        if pos < n:  # an incomplete header (the streamed states always use the whole chunk)
            self._tail += bytes(view[pos:])
        if self._pend:
            yield self._flush()

    def _flush(self) -> bytes:
        pend = self._pend
        out = pend[0] if len(pend) == 1 else b"".join(pend)
        self._pend, self._psize = [], 0
        return out

    def _pump(self, src: bytes | memoryview, offset: int) -> Iterator[bytes]:
        """Decode src (compressed bytes from `offset` on); yield pieces <= OUT_PIECE."""
        assert self._dobj is not None
        try:
            out = self._dobj.decompress(src)
        except zstandard.ZstdError as e:
            raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: {e} "
                                   f"(compressed offset {offset} to {offset + len(src)})"
                                   ) from e
        if not out:
            return
        self.total_out += len(out)
        if self._psize + len(out) > OUT_PIECE and self._pend:
            yield self._flush()
        self._pend.append(out)
        self._psize += len(out)
        if self._psize >= JOIN_MIN:
            yield self._flush()

    def _end_frame(self, end: int) -> None:
        assert self._dobj is not None
        usize = self.total_out - self._frame_out
        # the walk and the decoder read the same headers, so they end together unless the
        # decoder was fed something it rejected without an error; never trust either alone
        if not self._dobj.eof or self._dobj.unused_data:
            raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: "
                                   f"decoder did not finish at compressed offset {end}")
        if self._fcs is not None and self._fcs != usize:
            raise CompressionError(f"zstd frame at compressed offset {self._frame_in}: "
                                   f"{usize} bytes, header says {self._fcs}")
        self.frames.append((self._frame_in, end - self._frame_in, self._frame_out, usize))
        self._dobj = None
        self._state, self._need = _MAGIC, 4

    def finish(self) -> None:
        if self._state != _MAGIC or self._tail:
            start = self._frame_in if self._state != _MAGIC else self.total_in - len(self._tail)
            raise CompressionError(f"truncated zstd stream: the frame at compressed offset "
                                   f"{start} ends early at compressed offset {self.total_in}")
        if not self._any:
            raise CompressionError("truncated zstd stream: no data (compressed offset 0)")
        self._finished = True

    def access(self) -> LayerAccess:
        if not self._finished:
            raise RuntimeError("ZstdIndexer.access before a successful finish()")
        return LayerAccess(kind=ZSTD, frames=list(self.frames))
