"""Random-access data for one layer blob: how to start decompressing in the middle.

Recorded by index-layout while it streams each layer, stored in the archive, used by readers.
"""

from __future__ import annotations

from clipcy._fields import Fields

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at start-up
if TYPE_CHECKING:
    from clipcy.storage.spans import SpanTable

PLAIN = "plain"
GZIP = "gzip"
ZSTD = "zstd"


class LayerAccess(Fields):
    """How to decompress a layer blob from the middle, and the checksums of its spans. (A
    plain class, not a dataclass: see clipcy._fields.)"""

    __slots__ = ("kind", "span", "points", "frames", "spans")

    def __init__(
        self,
        kind: str,  # PLAIN, GZIP or ZSTD: the compression found from the blob's magic bytes
        # gzip: spacing of resume points in uncompressed bytes (0: none recorded)
        span: int = 0,
        # gzip resume points: (compressed offset, bit offset 0..7, uncompressed offset,
        # window); the window is the up-to-32 KiB of uncompressed data before the point (""
        # at a member start). None: a new empty list
        points: list[tuple[int, int, int, bytes]] | None = None,
        # zstd frames: (compressed offset, compressed size, uncompressed offset, uncompressed
        # size). None: a new empty list
        frames: list[tuple[int, int, int, int]] | None = None,
        # checksums of the blob's compressed spans (format 2.0); None only before indexing ends
        spans: SpanTable | None = None,
    ) -> None:
        self.kind = kind
        self.span = span
        self.points: list[tuple[int, int, int, bytes]] = [] if points is None else points
        self.frames: list[tuple[int, int, int, int]] = [] if frames is None else frames
        self.spans = spans
