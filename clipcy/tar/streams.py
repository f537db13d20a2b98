"""Chunked decompressors for layer blobs: one small class per compression, same interface.

    s = GzipStream()          # or ZstdStream(), PlainStream()
    for piece in s.feed(compressed_chunk): ...   # decompressed pieces of bounded size
    s.finish()                # CompressionError if the stream is incomplete

The kind comes from the magic bytes only (detect()), never from a file name.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from clipcy._zstd import zstandard
from clipcy.errors import CompressionError
from clipcy.layers.access import GZIP, PLAIN, ZSTD

# Largest decompressed piece a feed() step yields (zlib's max_length bounds each step).
# 256 KiB: the piece is still in cache when the parser reads it, and freed pieces are reused
# (1 MiB pieces measured ~10% slower end to end).
MAX_PIECE = 1 << 18
# gzip input is handed to zlib in slices of this size: zlib copies the unconsumed rest of
# its input each time max_length stops it, so small slices keep that copy small.
GZIP_SLICE = 1 << 16
# zstandard's decompressobj has no max_length: it is fed at most this many compressed bytes
# per call. A zstd block of >= 4 bytes expands to <= 128 KiB, so one call makes at most
# ZSTD_STEP / 4 * 128 KiB (64 MiB) however hostile the input; real data makes ~4-20 KiB.
ZSTD_STEP = 2 << 10
ZSTD_WRITE = 1 << 15  # zstandard's output buffer per call (its default, 128 KiB, costs more)

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def detect(head: bytes) -> str:
    """'gzip', 'zstd' or 'plain' from the first bytes (4 are enough) of a blob."""
    if head[:2] == b"\x1f\x8b":
        return GZIP
    if head[:4] == _ZSTD_MAGIC:
        return ZSTD
    if len(head) >= 4 and 0x184D2A50 <= int.from_bytes(head[:4], "little") <= 0x184D2A5F:
        return ZSTD  # a skippable frame may start a valid zstd stream (RFC 8878 3.1.2)
    return PLAIN


class PlainStream:
    """No compression: hands the input back (as memoryview slices, no copy)."""

    def __init__(self, max_piece: int = MAX_PIECE) -> None:
        self.max_piece = max_piece

    def feed(self, data: bytes) -> Iterator[bytes]:
        mv = memoryview(data)
        for i in range(0, len(mv), self.max_piece):
            yield mv[i : i + self.max_piece]  # type: ignore[misc]

    def finish(self) -> None:
        return None


class GzipStream:
    """gzip, several members allowed (empty ones too); garbage after the last is an error."""

    def __init__(self, max_piece: int = MAX_PIECE) -> None:
        self.max_piece = max_piece
        self._d = zlib.decompressobj(31)
        self._started = False  # the current member has received input
        self._in = 0  # compressed bytes handed to zlib and consumed (member starts exact)
        self._member = 0  # compressed offset of the current member

    def feed(self, data: bytes) -> Iterator[bytes]:
        mv = memoryview(data)
        for i in range(0, len(mv), GZIP_SLICE):
            yield from self._feed(mv[i : i + GZIP_SLICE])

    def _feed(self, buf: memoryview | bytes) -> Iterator[bytes]:
        while buf:
            d = self._d
            self._started = True
            try:
                out = d.decompress(buf, self.max_piece)
            except zlib.error as e:
                raise CompressionError(
                    f"corrupt gzip data in the member at compressed offset {self._member} ({e})"
                ) from None
            if out:
                yield out
            if d.eof:
                rest = d.unused_data
                self._in += len(buf) - len(rest)
                self._member = self._in
                self._d = zlib.decompressobj(31)
                self._started = False
                buf = rest
                continue
            tail = d.unconsumed_tail
            self._in += len(buf) - len(tail)
            buf = tail
            if not buf:
                # zlib may hold more output than max_length let out: drain it
                while len(out) == self.max_piece:
                    try:
                        out = d.decompress(b"", self.max_piece)
                    except zlib.error as e:
                        raise CompressionError(
                            f"corrupt gzip data in the member at compressed offset "
                            f"{self._member} ({e})"
                        ) from None
                    if out:
                        yield out
                    if d.eof:
                        break
                if d.eof:
                    self._member = self._in
                    self._d = zlib.decompressobj(31)
                    self._started = False

    def finish(self) -> None:
        if self._started and not self._d.eof:
            raise CompressionError(
                f"truncated gzip stream: the member at compressed offset {self._member} "
                f"ends at offset {self._in} before its end"
            )


class ZstdStream:
    """zstd, several frames allowed (empty and skippable ones too, even first)."""

    def __init__(self, max_piece: int = MAX_PIECE) -> None:
        self.max_piece = max_piece
        self._dctx = zstandard.ZstdDecompressor()
        self._d = self._dctx.decompressobj(write_size=ZSTD_WRITE)
        self._started = False
        self._in = 0
        self._frame = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        mv = memoryview(data)
        pos, end = 0, len(mv)
        pending: list[bytes] = []  # small outputs joined into pieces of ~max_piece
        size = 0
        while pos < end:
            step = bytes(mv[pos : pos + ZSTD_STEP])
            pos += len(step)
            while step:
                self._started = True
                try:
                    out = self._d.decompress(step)
                except zstandard.ZstdError as e:
                    raise CompressionError(
                        f"corrupt zstd data in the frame at compressed offset {self._frame} ({e})"
                    ) from None
                if self._d.eof:
                    rest = self._d.unused_data
                    self._in += len(step) - len(rest)
                    self._frame = self._in
                    self._d = self._dctx.decompressobj(write_size=ZSTD_WRITE)
                    self._started = False
                    step = rest
                else:
                    self._in += len(step)
                    step = b""
                if out:
                    pending.append(out)
                    size += len(out)
                    if size >= self.max_piece:
                        yield from self._pieces(pending)
                        pending, size = [], 0
        if pending:
            yield from self._pieces(pending)

    def _pieces(self, outs: list[bytes]) -> Iterator[bytes]:
        om = memoryview(outs[0] if len(outs) == 1 else b"".join(outs))
        for i in range(0, len(om), self.max_piece):
            yield om[i : i + self.max_piece]  # type: ignore[misc]

    def finish(self) -> None:
        if self._started:
            raise CompressionError(
                f"truncated zstd stream: the frame at compressed offset {self._frame} "
                f"ends at offset {self._in} before its end"
            )


def open_stream(kind: str, max_piece: int = MAX_PIECE) -> PlainStream | GzipStream | ZstdStream:
    """The decompressor for a kind returned by detect()."""
    if kind == GZIP:
        return GzipStream(max_piece)
    if kind == ZSTD:
        return ZstdStream(max_piece)
    return PlainStream(max_piece)


__all__ = ["detect", "GzipStream", "ZstdStream", "PlainStream", "open_stream", "MAX_PIECE"]
