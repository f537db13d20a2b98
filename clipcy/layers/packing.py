"""gzip resume points with their 32 KiB windows kept zstd-compressed while a layer streams.

Raw windows cost 32 KiB per MiB of layer (14 MB for a 500 MB layer) and would all sit in
memory until the archive is written. index-layout drains each point from the GzipIndexer as
soon as its window is final, compresses the window on its own (sparse windows shrink ~10x),
and at the end clipcy.archive.format.encode_packed_access streams the layer's access payload,
one window at a time, into the archive's zstd frame: the raw payload never exists whole. The
frame is the same one the writer makes from the raw LayerAccess, so archives do not depend on
the path.
"""

from __future__ import annotations

from clipcy._fields import Fields
from clipcy._zstd import zstandard
from clipcy.layers.access import LayerAccess

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at start-up
if TYPE_CHECKING:
    from collections.abc import Iterator

    from clipcy.storage.spans import SpanTable

Point = tuple[int, int, int, bytes]  # (compressed offset, bits, uncompressed offset, window)


class WindowPacker:
    """Compresses windows one by one (a zstd context per packer: they are not thread-safe)."""

    def __init__(self) -> None:
        self._cctx = zstandard.ZstdCompressor(level=1)  # frames carry their content size

    def pack(self, points: list[Point]) -> list[Point]:
        return [(c, b, u, self._compress(w) if w else b"") for c, b, u, w in points]

    def _compress(self, window: bytes) -> bytes:
        # python-zstandard keeps the bound-sized buffer behind the bytes it returns (~32 KiB
        # for a ~1 KiB result): copy to an exact-size object, or nothing is saved.
        return memoryview(self._cctx.compress(window)).tobytes()


class PackedAccess(Fields):
    """A LayerAccess (kind gzip) whose point windows are each a zstd frame ("" at starts).
    (A plain class, not a dataclass: see clipcy._fields.)"""

    __slots__ = ("kind", "span", "points", "frames", "spans")

    def __init__(self, kind: str, span: int, points: list[Point] | None = None,
                 frames: list[tuple[int, int, int, int]] | None = None,
                 spans: SpanTable | None = None) -> None:
        self.kind = kind
        self.span = span
        self.points: list[Point] = [] if points is None else points  # None: a new empty list
        self.frames: list[tuple[int, int, int, int]] = [] if frames is None else frames
        self.spans = spans

    def windows(self) -> Iterator[Point]:
        """The points with raw windows, one at a time."""
        dctx = zstandard.ZstdDecompressor()
        for c, b, u, w in self.points:
            yield c, b, u, dctx.decompress(w) if w else b""

    def unpacked(self) -> LayerAccess:
        return LayerAccess(self.kind, self.span, list(self.windows()), list(self.frames),
                           self.spans)


def same_access(a: LayerAccess | PackedAccess, b: LayerAccess | PackedAccess) -> bool:
    """Equal resume data and span checksums, whichever form each side holds."""
    if (a.kind, a.span, len(a.points), list(a.frames), a.spans) != (
        b.kind,
        b.span,
        len(b.points),
        list(b.frames),
        b.spans,
    ):
        return False
    wa = a.windows() if isinstance(a, PackedAccess) else iter(a.points)
    wb = b.windows() if isinstance(b, PackedAccess) else iter(b.points)
    return all(tuple(x) == tuple(y) for x, y in zip(wa, wb, strict=True))
