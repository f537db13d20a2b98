"""Reading a regular file of an archive lazily from the original layer blobs.

An ArchiveFile is a read-only binary file object (read, readinto, seek, tell). Its bytes come
from a LayerReader (blobread.py) that resumes decompression at the nearest recorded point.
Each ArchiveFile has its own position; the readers are shared and thread-safe, so different
threads can read different files (or the same one through separate ArchiveFiles) at once.
"""

from __future__ import annotations

import bisect
import io
import os
from _thread import LockType, allocate_lock  # threading.Lock, without importing threading (~0.8 ms)
from collections.abc import Callable, Iterable

from clipcy.archive.format import CHECKSUM_WRITTEN
from clipcy.errors import ArchivePathError, BlobError, ClipError
from clipcy.node import FILE, SYMLINK, Node
from clipcy.pathwalk import follow_symlinks
from clipcy.storage.spans import FetchObserver, SpanTable

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from clipcy.archive.reader import Archive
    from clipcy.layers.access import LayerAccess
    from clipcy.layers.blobread import LayerReader
    from clipcy.storage.registry import RemoteOptions

READ_PIECE = 1 << 20


class LayerReaders:
    """The layer readers of one archive: each layer's blob from one store (the archive's
    storage ref, or the storage given when it was opened: clipcy.storage.open_store), every
    read verified against the archive's span checksums. Archive.layer_readers() gives the
    archive's; everything that reads file bytes (Archive.open, cat, extract, verify, the
    mount) goes through one."""

    def __init__(
        self, metadata: dict[str, Any], access: Callable[[int], LayerAccess],
        storage: str | os.PathLike[str] | None = None, remote: RemoteOptions | None = None,
    ) -> None:
        """storage: a storage ref (a layout directory, docker://..., http(s)://...) that
        overrides the archive's; remote: how to reach a remote store."""
        from clipcy.storage import open_store

        self.store = open_store(storage if storage is not None else metadata.get("storage_ref"),
                                remote)
        self.layers: list[dict[str, Any]] = list(metadata.get("layers", []))
        self._access = access
        self._readers: dict[int, LayerReader] = {}
        self._opening: dict[int, LockType] = {}  # one per layer, made under _lock
        self._lock = allocate_lock()
        # told of every fetch of the blobs opened from now on (a mount's counters)
        self.observer: FetchObserver | None = None

    def blob_path(self, layer: int) -> Path | None:
        """Where layer's blob is as a local file, or None (a remote store)."""
        return self.store.blob_path(self.layers[layer]["digest"])

    def reader(self, layer: int, first: tuple[int, int] | None = None) -> LayerReader:
        """The layer's reader, opened on first use. first: the uncompressed range the
        caller reads next; a remote store starts fetching it while the reader opens."""
        r = self._readers.get(layer)
        if r is not None:
            return r
        # Opening a reader decodes the layer's access data (~25 ms for a 500 MB layer): under
        # a lock of its own, so readers of other layers (and of this one, once open) never
        # wait for it (the mount opens every layer in the background at start).
        with self._lock:
            opening = self._opening.setdefault(layer, allocate_lock())
        with opening:
            r = self._readers.get(layer)
            if r is None:
                from clipcy.layers.blobread import open_layer_reader

                if not 0 <= layer < len(self.layers):
                    raise ClipError(f"corrupt archive: file refers to layer {layer}")
                desc = self.layers[layer]
                access = self._access(layer)
                if access.spans is None and desc["size"]:
                    raise BlobError(f"the archive has no span checksums for layer blob "
                                    f"{desc['digest']}: re-run index-layout")
                spans = access.spans if access.spans is not None else SpanTable(
                    CHECKSUM_WRITTEN, [], b"")
                blob = self.store.open_blob(desc, spans)
                blob.observer = self.observer
                if first is not None and self.store.prefetches:
                    from clipcy.layers.blobread import first_fetch

                    # the request travels while the reader opens (its windows are
                    # packed: ~20 ms for 450 points), not after
                    lo, hi = first_fetch(access, desc["size"], *first)
                    if lo < hi:
                        blob.prefetch(lo, hi)
                r = self._readers[layer] = open_layer_reader(blob, access)
            return r

    def prefetch(self, nodes: Iterable[Node]) -> None:
        """A hint: these regular files will be read from their start soon, in this order
        (the next files of an extract). A remote store fetches the first compressed bytes of
        each now, on helper threads (never past a file's end; verified when read like any
        fetch); a local store ignores it."""
        if not self.store.prefetches:
            return
        for node in nodes:
            if node.type != FILE or node.size <= 0:
                continue
            start = node.offset
            stop = node.offset + (node.size if node.sparse is None
                                  else sum(length for _, length in node.sparse))
            if stop > start:
                self.reader(node.layer).prefetch(start, stop)

    def close(self) -> None:
        """Close every reader, then the store. A close that raises (an error, or an
        interrupt landing in it) leaves none of the others open: they are closed all the
        same, then the first interrupt (else the first error) is raised."""
        with self._lock:
            raised: list[BaseException] = []
            try:
                self._close_readers(raised)
            finally:
                try:
                    self.store.close()
                except BaseException as e:  # noqa: BLE001 (raised once all are closed)
                    raised.append(e)
            if raised:
                raise next((e for e in raised if not isinstance(e, Exception)), raised[0])

    def _close_readers(self, raised: list[BaseException]) -> None:
        readers = self._readers  # reader() adds without _lock
        try:
            while readers:
                layer = next(iter(readers))
                try:
                    readers[layer].close()
                except BaseException as e:  # noqa: BLE001 (raised once all are closed)
                    raised.append(e)
                del readers[layer]
        finally:
            if readers:  # interrupted between two: the rest are closed all the same
                self._close_readers(raised)


class ArchiveFile(io.RawIOBase):
    """A regular file of the image, read lazily. Sparse holes read as zeros."""

    def __init__(self, node: Node, store: LayerReaders) -> None:
        super().__init__()
        if node.type != FILE:
            raise ArchivePathError(f"not a regular file: {node.path.decode(errors='replace')}")
        self.node = node
        self.name = node.path.decode("utf-8", "surrogateescape")
        self._store = store
        self._pos = 0
        self._next = -1  # where the last pread ended: a pread there reads on
        self._size = node.size
        # sparse: logical starts, and where each run's bytes lie in the layer stream
        self._runs: list[tuple[int, int, int]] | None = None
        if node.sparse is not None:
            data = node.offset
            self._runs = []
            for off, length in node.sparse:
                self._runs.append((off, length, data))
                data += length
            self._starts = [start for start, _, _ in self._runs]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.pread(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._size - self._pos)
        data = self.pread(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def pread(self, pos: int, n: int) -> bytes:
        """n bytes at logical offset pos (fewer only at end of file); no position change."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        n = max(0, min(n, self._size - pos))
        if n == 0:
            return b""
        node = self.node
        reader = self._store.reader(node.layer, (node.offset + pos, node.offset + pos + n)
                                    if self._runs is None else None)
        if self._runs is None:
            # remote blobs read ahead for a file read in order (or from its start in large
            # pieces, as cat and extract do), and never past the file's end
            on = pos == self._next or (pos == 0 and n >= READ_PIECE)
            reader.reading(node.offset + pos, node.offset + self._size, on)
            self._next = pos + n
            data: bytes = reader.pread(node.offset + pos, n)
            if len(data) != n:
                raise BlobError(
                    f"layer blob {self._store.layers[node.layer]['digest']} ended "
                    f"early reading {self.name}"
                )
            return data
        return self._pread_sparse(reader, pos, n)

    def _pread_sparse(self, reader: LayerReader, pos: int, n: int) -> bytes:
        assert self._runs is not None
        out = bytearray(n)  # holes stay zero
        end = pos + n
        i = max(0, bisect.bisect_right(self._starts, pos) - 1)
        while i < len(self._runs):
            off, length, data = self._runs[i]
            if off >= end:
                break
            lo, hi = max(off, pos), min(off + length, end)
            if hi > lo:
                chunk = reader.pread(data + (lo - off), hi - lo)
                if len(chunk) != hi - lo:
                    raise BlobError(f"layer blob ended early reading {self.name}")
                out[lo - pos : hi - pos] = chunk
            i += 1
        return bytes(out)


# The former name, kept working for callers (clipcy.storage.BlobStore is the store protocol).
BlobStore = LayerReaders


def resolve_file(arc: Archive, path: str | bytes) -> Node:
    """The regular file at path, following symlinks (within the image) like open(2) would."""
    raw = os.fsencode(path)

    def target_of(p: bytes) -> bytes | None:
        node = arc.lookup(p)
        if node is None:
            raise ArchivePathError(f"no such path in archive: {os.fsdecode(raw)}")
        return node.linkname if node.type == SYMLINK else None

    resolved, complete = follow_symlinks(raw, target_of)
    if not complete:
        raise ArchivePathError(f"too many levels of symbolic links: {os.fsdecode(raw)}")
    node = arc.lookup(resolved)
    if node is None:
        raise ArchivePathError(f"no such path in archive: {os.fsdecode(raw)}")
    if node.type != FILE:
        raise ArchivePathError(f"not a regular file: {os.fsdecode(raw)} ({node.type})")
    return node


def read_piecewise(f: ArchiveFile, sink: Any, piece: int = READ_PIECE) -> int:
    """Copy a whole ArchiveFile into sink.write in bounded pieces; returns the byte count."""
    total = 0
    while True:
        data = f.read(piece)
        if not data:
            return total
        sink.write(data)
        total += len(data)
