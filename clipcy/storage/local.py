"""Blobs of a local OCI image layout directory (blobs/<alg>/<hex>)."""

from __future__ import annotations

import os
import stat

from clipcy.errors import BlobError
from clipcy.storage import BlobStore
from clipcy.storage.refs import parse_digest
from clipcy.storage.spans import BlobSource, SpanCache, SpanTable, VerifiedBlob

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def _path_text(path: str) -> str:
    """str(pathlib.Path(path)) ("." and empty parts dropped, a leading "//" kept), without
    importing pathlib: reading a local archive's blobs does without it."""
    lead = "//" if path.startswith("//") and not path.startswith("///") else (
        "/" if path.startswith("/") else "")
    return lead + "/".join(p for p in path.split("/") if p and p != ".") or "."


class LocalBlob(BlobSource):
    """One blob file: must be a regular file of the descriptor's size; opened once, read with
    os.pread (thread-safe, no shared position), every read bounded by that size. Reads are
    cheap, so it takes none of BlobSource's hints."""

    _fd = -1  # until opened (close() from __del__ after a failed open finds nothing)

    def __init__(self, path: str | os.PathLike[str], digest: str, size: int) -> None:
        self.path = str(path)
        self.digest = digest
        self.size = size
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below)
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise BlobError(f"failed to open layer blob {digest}: {e.strerror or e} "
                            f"({path})") from e
        try:
            st = os.fstat(self._fd)
        except OSError as e:
            self.close()
            raise BlobError(f"cannot stat layer blob {digest}: {e.strerror or e}") from e
        if not stat.S_ISREG(st.st_mode):
            self.close()
            raise BlobError(f"layer blob {digest} is not a regular file ({path})")
        if st.st_size != size:
            self.close()
            raise BlobError(f"layer blob {digest} has changed: {st.st_size} bytes, the "
                            f"archive recorded {size} ({path})")

    def fetch(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise BlobError(f"read of {n} bytes at offset {offset} is outside layer blob "
                            f"{self.digest} ({self.size} bytes)")
        if self._fd < 0:
            raise ValueError(f"layer blob {self.digest} is closed")
        parts = []
        while n > 0:
            try:
                b = os.pread(self._fd, min(n, 1 << 30), offset)
            except OSError as e:
                raise BlobError(f"cannot read layer blob {self.digest} at offset {offset}: "
                                f"{e.strerror or e}") from e
            if not b:
                raise BlobError(f"layer blob {self.digest} has changed: it ends before "
                                f"compressed offset {offset + n} ({self.path})")
            parts.append(b)
            offset += len(b)
            n -= len(b)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class LocalStore(BlobStore):
    """The blobs of the OCI layout at root."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = _path_text(os.fspath(root))

    @property
    def root(self) -> Path:
        from pathlib import Path

        return Path(self._root)

    def __repr__(self) -> str:
        return f"<LocalStore {self._root!r}>"

    def blob_path(self, digest: str) -> Path:
        """Where the blob is (a file of the layout)."""
        from pathlib import Path

        return Path(self._blob_file(digest))

    def _blob_file(self, digest: str) -> str:
        """str(blob_path(digest))."""
        alg, hexpart = parse_digest(digest, "layer")
        root = self._root
        rest = f"blobs/{alg}/{hexpart}"
        return rest if root == "." else root + rest if root.endswith("/") else f"{root}/{rest}"

    def open_blob(self, layer: dict[str, Any], spans: SpanTable,
                  cache: SpanCache | None = None) -> VerifiedBlob:
        digest, size = layer["digest"], layer["size"]
        return VerifiedBlob(LocalBlob(self._blob_file(digest), digest, size), spans, cache)

    def probe(self, digest: str, size: int) -> None:
        """Open the blob as a read would (a regular file of its size), then close it."""
        LocalBlob(self._blob_file(digest), digest, size).close()

    def close(self) -> None:
        pass


def open_file(path: str | os.PathLike[str], spans: SpanTable,
              digest: str | None = None) -> VerifiedBlob:
    """A verified reader of one blob file outside any layout (tests, tools)."""
    from pathlib import Path

    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise BlobError(f"failed to open layer blob {p}: {e.strerror or e}") from e
    return VerifiedBlob(LocalBlob(p, digest or str(p), size), spans)
