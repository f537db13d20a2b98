"""Random-access data for one layer blob: how to start decompressing in the middle.

Recorded by index-layout while it streams each layer, stored in the archive, used by readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clipcy.storage.spans import SpanTable

PLAIN = "plain"
GZIP = "gzip"
ZSTD = "zstd"


@dataclass(slots=True)
class LayerAccess:
    kind: str  # PLAIN, GZIP or ZSTD: the compression found from the blob's magic bytes
    # gzip: spacing of resume points in uncompressed bytes (0: none recorded)
    span: int = 0
    # gzip resume points: (compressed offset, bit offset 0..7, uncompressed offset, window);
    # the window is the up-to-32 KiB of uncompressed data before the point ("" at a member start)
    points: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    # zstd frames: (compressed offset, compressed size, uncompressed offset, uncompressed size)
    frames: list[tuple[int, int, int, int]] = field(default_factory=list)
    # checksums of the blob's compressed spans (format 2.0); None only before indexing ends
    spans: SpanTable | None = None
