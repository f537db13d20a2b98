"""Type stub of the compiled clipcy.layers._checkpoint (gzip resume points on zlib's C API)."""

from collections.abc import Iterator
from typing import Protocol

from typing_extensions import Buffer

from clipcy.layers.access import LayerAccess

def zlib_version() -> str: ...

class GzipIndexer:
    """Streams a gzip blob (one or more members) and records resume points."""

    span: int
    min_points_layer: int
    members: int
    sparse_windows: bool
    def __init__(self, span: int, min_points_layer: int = 0,
                 sparse_windows: bool = True) -> None: ...
    @property
    def total_in(self) -> int: ...
    @property
    def total_out(self) -> int: ...
    @property
    def points(self) -> list[tuple[int, int, int, bytes]]: ...
    def feed(self, data: Buffer) -> Iterator[bytes]: ...
    def finish(self) -> None: ...
    def drain_points(self) -> list[tuple[int, int, int, bytes]]: ...
    def access(self) -> LayerAccess: ...

class _Source(Protocol):
    def pread(self, offset: int, n: int) -> bytes: ...

class GzipResumer:
    """A decoder resumed at a point; read() continues where the last read stopped."""

    position: int
    def __init__(self, source: int | _Source, comp_offset: int, bits: int, window: Buffer,
                 out_offset: int = 0) -> None: ...
    def read(self, n: int, skip: int = 0) -> bytes: ...

GzipStream = GzipResumer

def gzip_read(fd: int, comp_offset: int, bits: int, window: Buffer, skip: int,
              n: int) -> bytes: ...
