"""Read .clip archives (docs/FORMAT.md): open_archive(path) -> Archive.

Opening reads the header, the section table, the metadata and the two small indexes only;
a lookup binary-searches the block index and decodes one node block (nodeblock.py, compiled);
decoded blocks stay in an LRU bounded by Archive.block_cache_bytes.
Every byte read is covered by a crc32 checked before use; verify() also checks the whole-file
sha256. Any inconsistency raises ArchiveError("corrupt archive <file>: <what> ...").
"""

from __future__ import annotations

import bisect
import json
import os
import struct
import warnings
import zlib
from _thread import allocate_lock  # threading.Lock, without importing threading (~0.8 ms)
from collections import OrderedDict
from collections.abc import Iterator
from types import TracebackType

from clipcy._zstd import zstandard
from clipcy.archive import format as F
from clipcy.archive._nodeblock_py import Corrupt as _Corrupt
from clipcy.archive._nodeblock_py import take as _take
from clipcy.archive._nodeblock_py import uv as _uv
from clipcy.archive.nodeblock import NodeBlock, decode_block
from clipcy.archive.record import PATH, TYPE, Record, to_node
from clipcy.errors import ArchiveError, ArchivePathError
from clipcy.layers.access import LayerAccess
from clipcy.node import Node
from clipcy.storage.spans import SpanTable
from clipcy.tempfiles import close_held, open_held

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

    from clipcy.archive.files import ArchiveFile, LayerReaders
    from clipcy.layers.blobread import LayerReader
    from clipcy.storage.registry import RemoteOptions

__all__ = ["Archive", "open_archive", "normalize_path", "decode_block", "BLOCK_CACHE_BYTES"]

# Decoded node blocks kept by an open archive (LRU, bounded in bytes). 48 MiB holds every
# block of a 150k-node archive compiled (~20 MB, perf/RESULTS-mount.md), so a long-lived
# reader (a mount) decodes each block once; the pure twin's blocks are ~3x larger.
BLOCK_CACHE_BYTES = 48 << 20
_DIR = F.TYPE_CODES["dir"]


def normalize_path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> bytes:
    """b"/"-rooted path bytes: "a/b", "/a/b/", "//a//b" -> b"/a/b"; str via os.fsencode."""
    raw = os.fsencode(path)
    if raw.startswith(b"/") and not raw.endswith(b"/") and b"//" not in raw:
        return raw
    return b"/" + b"/".join(p for p in raw.split(b"/") if p)


def decode_access(raw: bytes) -> LayerAccess:
    """Decode one layer's access payload (docs/FORMAT.md "Layer access payload")."""
    uv = _uv
    try:
        code, pos = uv(raw, 0)
        if code >= len(F.ACCESS_KIND_NAMES):
            raise _Corrupt(f"unknown access kind {code}")
        span, pos = uv(raw, pos)
        k, pos = uv(raw, pos)
        if k > len(raw) - pos:
            raise _Corrupt(f"point count {k} exceeds the payload")
        points = []
        for _ in range(k):
            coff, pos = uv(raw, pos)
            bits = raw[pos]
            if bits > 7:
                raise _Corrupt(f"point bits {bits} out of range")
            uoff, pos = uv(raw, pos + 1)
            n, pos = uv(raw, pos)
            window, pos = _take(raw, pos, n)
            points.append((coff, bits, uoff, window))
        k, pos = uv(raw, pos)
        if k > len(raw) - pos:
            raise _Corrupt(f"frame count {k} exceeds the payload")
        frames = []
        for _ in range(k):
            a, pos = uv(raw, pos)
            b, pos = uv(raw, pos)
            c, pos = uv(raw, pos)
            d, pos = uv(raw, pos)
            frames.append((a, b, c, d))
        ckind, pos = uv(raw, pos)
        dsize = F.CHECKSUM_DIGEST_SIZES.get(ckind)
        if dsize is None:
            raise _Corrupt(f"unknown span checksum kind {ckind}")
        k, pos = uv(raw, pos)
        if k * (dsize + 1) > len(raw) - pos or (k and not dsize):
            raise _Corrupt(f"span count {k} exceeds the payload")
        lengths = []
        for _ in range(k):
            n, pos = uv(raw, pos)
            if n == 0:
                raise _Corrupt("empty span")
            lengths.append(n)
        digests, pos = _take(raw, pos, k * dsize)
    except IndexError:
        raise _Corrupt(f"access payload truncated ({len(raw)} bytes)") from None
    if pos != len(raw):
        raise _Corrupt(f"{len(raw) - pos} stray bytes after the access payload")
    spans = SpanTable(ckind, lengths, digests) if ckind != F.CHECKSUM_NONE else None
    return LayerAccess(F.ACCESS_KIND_NAMES[code], span, points, frames, spans)


def _decompress(frame: bytes, rawlen: int, limit: int, what: str) -> bytes:
    if rawlen > limit:
        raise _Corrupt(f"{what}: raw length {rawlen} exceeds the limit of {limit}")
    # A forged content size in the frame header would make zstandard allocate it: refuse.
    try:
        declared = zstandard.frame_content_size(frame)
        if declared not in (-1, rawlen):
            raise _Corrupt(f"{what}: frame declares {declared} bytes, index says {rawlen}")
        out = zstandard.ZstdDecompressor().decompress(frame, max_output_size=max(rawlen, 1))
    except zstandard.ZstdError as e:
        raise _Corrupt(f"{what}: zstd: {e}") from None
    if len(out) != rawlen:
        raise _Corrupt(f"{what}: decompressed to {len(out)} bytes, expected {rawlen}")
    return out


class Archive:
    """An open .clip archive. Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike[str],
                 layout: str | os.PathLike[str] | None = None, *,
                 storage: str | os.PathLike[str] | None = None,
                 remote: RemoteOptions | None = None) -> None:
        self.name = os.fspath(path)
        storage = storage_or_layout(storage, layout)
        if storage is not None:  # a bad ref fails here, before any read
            from clipcy.storage.refs import parse_storage_ref

            parse_storage_ref(storage)
        # where the layer blobs are, if not at the recorded storage ref
        self._storage = storage
        self._remote = remote
        self._readers: LayerReaders | None = None
        self._lock = allocate_lock()
        # pread on a plain fd, not mmap: thread-safe without a shared file position, and a
        # file truncated under us gives a short read (an error) instead of SIGBUS
        self._fd: int | None = None
        self._cache: OrderedDict[int, NodeBlock] = OrderedDict()
        self._cached = 0  # bytes held by _cache (NodeBlock.nbytes)
        self._cache_budget = BLOCK_CACHE_BYTES
        self._cache_lock = allocate_lock()
        held: list[int] = []  # the fd from inside its open, until it is self._fd
        try:
            self._fd = open_held(held, path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            size = os.fstat(self._fd).st_size
        except BaseException as e:
            if self._fd is None:  # interrupted as the open returned
                close_held(held)
            self.close()
            if not isinstance(e, OSError):
                raise
            raise ArchiveError(f"cannot open archive {self.name}: {e.strerror or e}") from e
        if size < F.HEADER_SIZE + F.TRAILER_SIZE:
            self.close()
            raise self._error(f"file of {size} bytes is too short for a header")
        try:
            self._open(size)
        except _Corrupt as e:
            self.close()
            raise self._error(str(e)) from None
        except BaseException:
            self.close()
            raise

    # -- opening ----------------------------------------------------------------------------
    def _error(self, what: str) -> ArchiveError:
        return ArchiveError(f"corrupt archive {self.name}: {what}")

    def _read(self, off: int, n: int) -> bytes:
        """n bytes at absolute offset off (a short read means the file changed: corrupt)."""
        if self._fd is None:
            raise ArchiveError(f"archive {self.name} is closed")
        try:
            data = os.pread(self._fd, n, off)
        except OSError as e:
            raise ArchiveError(f"cannot read archive {self.name} at offset {off}: "
                               f"{e.strerror or e}") from e
        if len(data) != n:
            raise _Corrupt(f"short read of {len(data)} of {n} bytes at offset {off} "
                           "(file changed?)")
        return data

    def _open(self, size: int) -> None:
        head = self._read(0, F.HEADER_SIZE)
        magic, major, minor, flags, file_size, nsec, crc = F.HEADER.unpack_from(head, 0)
        if magic != F.MAGIC:
            raise _Corrupt("bad magic at offset 0 (not a .clip archive)")
        if major != F.FORMAT_MAJOR:
            hint = "; re-run index-layout to rebuild it" if major < F.FORMAT_MAJOR else ""
            raise ArchiveError(f"unsupported archive {self.name}: format version "
                               f"{major}.{minor}, this clipcy reads {F.FORMAT_MAJOR}.x{hint}")
        if file_size != size:
            raise _Corrupt(f"header says {file_size} bytes, file has {size} (truncated?)")
        table_end = F.HEADER_SIZE + nsec * F.SECTION_SIZE
        if table_end > size - F.TRAILER_SIZE:
            raise _Corrupt(f"section table of {nsec} entries runs past the data at offset "
                           f"{F.HEADER_SIZE}")
        table = self._read(F.HEADER_SIZE, table_end - F.HEADER_SIZE)
        if zlib.crc32(table, zlib.crc32(head[:F.HEADER_CRC_OFFSET])) != crc:
            raise _Corrupt(f"header checksum mismatch at offset {F.HEADER_CRC_OFFSET}")
        if flags & ~F.KNOWN_FLAGS:
            raise ArchiveError(f"unsupported archive {self.name}: header flags {flags:#x} "
                               "need a newer clipcy")
        _, tmagic = F.TRAILER.unpack(self._read(size - F.TRAILER_SIZE, F.TRAILER_SIZE))
        if tmagic != F.TRAILER_MAGIC:
            raise _Corrupt(f"bad trailer magic at offset {size - 8}")
        self.format_version: tuple[int, int] = (major, minor)
        self.size: int = size
        self._sections: dict[int, tuple[int, int, int]] = {}
        for i in range(nsec):
            kind, scrc, off, length = F.SECTION.unpack_from(table, i * F.SECTION_SIZE)
            if off < table_end or off + length > size - F.TRAILER_SIZE:
                raise _Corrupt(f"section {kind} at offset {off} (+{length}) lies outside the "
                               "data area")
            if kind in self._sections:
                raise _Corrupt(f"section {kind} appears twice")
            self._sections[kind] = (off, length, scrc)  # unknown kinds: kept, ignored
        for kind in F.REQUIRED_SECTIONS:
            if kind not in self._sections:
                raise _Corrupt(f"the {F.SECTION_NAMES[kind]} section is missing")

        meta = self._section(F.SEC_METADATA)
        if len(meta) < 8:
            raise _Corrupt("metadata section shorter than 8 bytes")
        text = _decompress(meta[8:], F.U64.unpack_from(meta)[0], F.MAX_METADATA_RAW,
                           "metadata")
        try:
            metadata = json.loads(text.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # ValueError: bad UTF-8 or JSON
            raise _Corrupt(f"metadata is not JSON: {e}") from None
        if not isinstance(metadata, dict):
            raise _Corrupt("metadata is not a JSON object")
        self.metadata: dict[str, Any] = metadata

        self._parse_node_index(self._section(F.SEC_NODE_INDEX))
        self._parse_access_index(self._section(F.SEC_ACCESS_INDEX))

    def _section(self, kind: int) -> bytes:
        off, length, crc = self._sections[kind]
        body = self._read(off, length)
        if zlib.crc32(body) != crc:
            name = F.SECTION_NAMES.get(kind, f"kind {kind}")  # unknown kinds: verify()
            raise _Corrupt(f"{name} section checksum mismatch at offset {off}")
        return body

    def _parse_node_index(self, idx: bytes) -> None:
        _, blocks_len, _ = self._sections[F.SEC_NODE_BLOCKS]
        try:
            count, nblocks = F.NODE_INDEX_HEAD.unpack_from(idx, 0)
        except struct.error:
            raise _Corrupt("node index shorter than its header") from None
        pos = F.NODE_INDEX_HEAD.size
        if nblocks > (len(idx) - pos) // F.BLOCK_ENTRY.size:
            raise _Corrupt(f"node index claims {nblocks} blocks in {len(idx)} bytes")
        firsts: list[bytes] = []
        starts: list[int] = []  # position of each block's first record
        entries: list[tuple[int, int, int, int, int]] = []
        total = 0
        end_prev = 0
        unpack = F.BLOCK_ENTRY.unpack_from
        esize = F.BLOCK_ENTRY.size
        for i in range(nblocks):
            try:
                off, clen, rawlen, n, crc, plen = unpack(idx, pos)
            except struct.error:
                raise _Corrupt(f"node index entry {i} truncated") from None
            pos += esize
            first = idx[pos:pos + plen]
            pos += plen
            if len(first) != plen or n == 0 or off != end_prev or off + clen > blocks_len:
                raise _Corrupt(f"node index entry {i} is inconsistent")
            if firsts and first <= firsts[-1]:
                raise _Corrupt(f"node index entry {i}: first paths out of order")
            end_prev = off + clen
            starts.append(total)
            total += n
            firsts.append(first)
            entries.append((off, clen, rawlen, n, crc))
        if pos != len(idx) or total != count or (firsts and firsts[0] != b"/"):
            raise _Corrupt("node index is inconsistent with its node count")
        self.node_count: int = count
        self._firsts = firsts
        self._starts = starts
        self._blocks = entries

    def _parse_access_index(self, idx: bytes) -> None:
        _, data_len, _ = self._sections[F.SEC_ACCESS_DATA]
        try:
            (n,) = F.ACCESS_INDEX_HEAD.unpack_from(idx, 0)
        except struct.error:
            raise _Corrupt("access index shorter than its header") from None
        if len(idx) != F.ACCESS_INDEX_HEAD.size + n * F.ACCESS_ENTRY.size:
            raise _Corrupt(f"access index of {len(idx)} bytes does not hold {n} entries")
        self._access = [F.ACCESS_ENTRY.unpack_from(idx, F.ACCESS_INDEX_HEAD.size + i *
                                                   F.ACCESS_ENTRY.size) for i in range(n)]
        for i, (off, clen, _, _) in enumerate(self._access):
            if off + clen > data_len:
                raise _Corrupt(f"access entry {i} points past the access data")

    # -- public API -------------------------------------------------------------------------
    @property
    def layers(self) -> list[dict[str, Any]]:
        """metadata["layers"] (the layer descriptors), or [] when absent."""
        layers = self.metadata.get("layers", [])
        return layers if isinstance(layers, list) else []

    @property
    def layer_count(self) -> int:
        """How many layers have access data."""
        return len(self._access)

    def access(self, i: int) -> LayerAccess:
        """The random-access data (resume points / frames) of layer i."""
        if not 0 <= i < len(self._access):
            raise IndexError(f"layer {i} out of range (archive has {len(self._access)})")
        off, clen, rawlen, crc = self._access[i]
        base = self._sections[F.SEC_ACCESS_DATA][0] + off
        try:
            frame = self._read(base, clen)
            if zlib.crc32(frame) != crc:
                raise _Corrupt(f"access data of layer {i}: checksum mismatch at offset {base}")
            return decode_access(_decompress(frame, rawlen, F.MAX_ACCESS_RAW,
                                             f"access data of layer {i}"))
        except _Corrupt as e:
            raise self._error(str(e)) from None

    def _block(self, b: int) -> NodeBlock:
        with self._cache_lock:
            hit = self._cache.get(b)
            if hit is not None:
                self._cache.move_to_end(b)
                return hit
        off, clen, rawlen, n, crc = self._blocks[b]
        base = self._sections[F.SEC_NODE_BLOCKS][0] + off
        try:
            frame = self._read(base, clen)
            if zlib.crc32(frame) != crc:
                raise _Corrupt(f"node block {b}: checksum mismatch at offset {base}")
            raw = _decompress(frame, rawlen, F.MAX_BLOCK_RAW, f"node block {b}")
            hit = NodeBlock(raw, n, self._firsts[b])
            if b + 1 < len(self._firsts) and hit.path(hit.count - 1) >= self._firsts[b + 1]:
                raise _Corrupt(f"node block {b} overlaps the next block")
        except _Corrupt as e:
            raise self._error(f"{e} (block at offset {base})") from None
        with self._cache_lock:
            if b not in self._cache:
                self._cache[b] = hit
                self._cached += hit.nbytes
            self._trim()
        return hit

    def _trim(self) -> None:
        while self._cached > self._cache_budget and len(self._cache) > 1:
            self._cached -= self._cache.popitem(last=False)[1].nbytes

    @property
    def block_cache_bytes(self) -> int:
        """Bound of the decoded node blocks kept (default BLOCK_CACHE_BYTES); the most
        recent block is always kept."""
        return self._cache_budget

    @block_cache_bytes.setter
    def block_cache_bytes(self, n: int) -> None:
        with self._cache_lock:
            self._cache_budget = n
            self._trim()

    def block_cache_info(self) -> tuple[int, int]:
        """(decoded blocks held, bytes they hold); bounded by block_cache_bytes."""
        with self._cache_lock:
            return len(self._cache), self._cached

    def _seek(self, key: bytes) -> tuple[int, int]:
        """(block, index in block) of the first path >= key; block == nblocks at the end."""
        b = bisect.bisect_right(self._firsts, key) - 1
        if b < 0:
            return 0, 0
        blk = self._block(b)
        i = blk.bisect_left(key)
        if i == blk.count:
            return b + 1, 0
        return b, i

    def _record(self, path: bytes) -> Record | None:
        if self._fd is None:
            raise ArchiveError(f"archive {self.name} is closed")
        found = self.locate(path)
        return None if found is None else found[1]

    def _find(self, path: str | bytes, strict: bool = False) -> tuple[bytes, Any]:
        """(path, record or None) of the node path names, its parent symlinks followed as
        POSIX resolution does (pathwalk.resolve_path), its last component not. An exact hit
        needs no resolving: the merge puts nothing under a symlink. strict: a resolution
        error (no such path, not a directory, a loop) is raised."""
        p = normalize_path(path)
        r = self._record(p)
        if r is not None or p == b"/":
            return p, r
        from clipcy.pathwalk import resolve_path

        def kind(q: bytes) -> tuple[str, bytes] | None:
            node = next(self.walk(q), None)  # the node at exactly q: walk's first
            return None if node is None else (node.type, node.linkname)

        try:
            q = resolve_path(p, kind)
        except ArchivePathError:
            if strict:
                raise
            return p, None
        return q, self._record(q)

    def lookup(self, path: str | bytes) -> Node | None:
        """The node at path, or None: parent symlinks are followed inside the image (as
        POSIX resolution does), the last component is not (as lstat)."""
        _, r = self._find(path)
        return None if r is None else to_node(r)

    def stat(self, path: str | bytes) -> Node:
        """Like lookup() but raises ArchivePathError when the path is absent (or a parent is
        not a directory, or symlinks loop)."""
        p, r = self._find(path, strict=True)
        if r is None:
            raise ArchivePathError(f"no such path in archive: {os.fsdecode(p)}")
        return to_node(r)

    def _iter_from(self, b: int, i: int) -> Iterator[Record]:
        while b < len(self._blocks):
            blk = self._block(b)
            for j in range(i, blk.count):
                yield blk.record(j)
            b, i = b + 1, 0

    def listdir(self, path: str | bytes) -> list[bytes]:
        """Names of the directory's children, sorted by bytes (parent symlinks followed;
        a symlink at path is not a directory)."""
        p, r = self._find(path, strict=True)
        if r is None:
            raise ArchivePathError(f"no such path in archive: {os.fsdecode(p)}")
        if r[TYPE] != "dir":
            raise ArchivePathError(f"not a directory in archive: {os.fsdecode(p)}")
        return [name for name, _, _ in self._child_positions(p)]

    def walk(self, prefix: str | bytes = b"/") -> Iterator[Node]:
        """Every node of the subtree at prefix (prefix included), in path-byte order."""
        p = normalize_path(prefix)
        r = self._record(p)
        if r is None:
            return
        yield to_node(r)
        if p == b"/":
            sub = b"/"
            b, i = self._seek(b"/\0")
        else:
            sub = p + b"/"
            b, i = self._seek(sub)
        for rec in self._iter_from(b, i):
            if not rec[PATH].startswith(sub):
                return
            yield to_node(rec)

    def verify(self) -> None:
        """Check the whole-file sha256, every section, block and access checksum and record."""
        import hashlib  # (only here: opening an archive does without OpenSSL)

        end = self.size - F.TRAILER_SIZE
        try:
            digest, _ = F.TRAILER.unpack(self._read(end, F.TRAILER_SIZE))
            h = hashlib.sha256()
            for pos in range(0, end, 1 << 20):
                h.update(self._read(pos, min(end, pos + (1 << 20)) - pos))
            if h.digest() != digest:
                raise _Corrupt("sha256 of the file does not match its trailer")
            for kind in self._sections:
                self._section(kind)
        except _Corrupt as e:
            raise self._error(str(e)) from None
        seen = 0
        for b in range(len(self._blocks)):
            with self._cache_lock:
                old = self._cache.pop(b, None)  # decode afresh
                self._cached -= old.nbytes if old is not None else 0
            seen += self._block(b).count
        if seen != self.node_count:
            raise self._error(f"{seen} nodes decoded, index says {self.node_count}")
        for i in range(len(self._access)):
            self.access(i)
        self.prefetch_positions()  # the optional list, decoded and bounds-checked

    def section_sizes(self) -> dict[str, int]:
        """Bytes per section, by name ("metadata", "node index", "node blocks", ...)."""
        return {F.SECTION_NAMES.get(k, f"section {k}"): length
                for k, (_, length, _) in sorted(self._sections.items())}

    def prefetch_positions(self) -> list[int] | None:
        """The node positions of the stored prefetch list (the PREFETCH section, format 2.1)
        in list order, or None when the archive has none (clipcy.archive.prefetch)."""
        if F.SEC_PREFETCH not in self._sections:
            return None
        from clipcy.archive.prefetch import decode_section

        try:
            body = self._section(F.SEC_PREFETCH)
        except _Corrupt as e:
            raise self._error(str(e)) from None
        try:
            return decode_section(body, self.node_count)
        except ValueError as e:
            raise self._error(f"{e} at offset {self._sections[F.SEC_PREFETCH][0]}") from None

    # -- file data: one path for every reader (files.py) ------------------------------------
    @property
    def storage(self) -> str | None:
        """The storage ref the layer blobs are read from: the one given at open, else the
        one recorded in the archive (None if neither)."""
        if self._storage is not None:
            return os.fspath(self._storage)
        ref = self.metadata.get("storage_ref")
        return ref if isinstance(ref, str) else None

    @property
    def remote(self) -> RemoteOptions | None:
        """How a remote store is reached (given at open), or None for the defaults."""
        return self._remote

    def layer_readers(self) -> LayerReaders:
        """The archive's layer readers (opened on first use, closed by close()): the blob
        store of `storage` and each layer's decompressing reader. Archive.open, cat,
        extract, verify and the mount read file bytes through these."""
        from clipcy.archive.files import LayerReaders

        with self._lock:
            if self._readers is None:
                self._readers = LayerReaders(self.metadata, self.access, self._storage,
                                             self._remote)
            return self._readers

    _blob_store = layer_readers  # the former private name (tests use it)

    def open_layer_readers(self, storage: str | os.PathLike[str] | None = None,
                           remote: RemoteOptions | None = None) -> LayerReaders:
        """Layer readers of their own over another storage ref or remote options (each
        defaults to the archive's); the caller closes them."""
        from clipcy.archive.files import LayerReaders

        return LayerReaders(self.metadata, self.access,
                            storage if storage is not None else self._storage,
                            remote if remote is not None else self._remote)

    def open(self, path: str | bytes) -> ArchiveFile:
        """A read-only binary file object for the regular file at path (symlinks followed
        inside the image), reading lazily from the layer blobs. Thread-safe across files."""
        from clipcy.archive.files import ArchiveFile, resolve_file

        with self._lock:
            node = resolve_file(self, path)
        return ArchiveFile(node, self.layer_readers())

    def layer_reader(self, layer: int) -> LayerReader:
        """The shared reader of layer `layer`'s uncompressed stream (pread(offset, n))."""
        return self.layer_readers().reader(layer)

    # -- records by position (the mount's node ids are positions + 1) -----------------------
    def locate(self, path: bytes) -> tuple[int, Record] | None:
        """(position in path order, record) of the node at exactly this normalized path (no
        symlink followed), or None. Records: clipcy.archive.record."""
        b = bisect.bisect_right(self._firsts, path) - 1
        if b < 0:
            return None
        blk = self._block(b)
        i = blk.bisect_left(path)
        if i == blk.count or blk.path(i) != path:
            return None
        return self._starts[b] + i, blk.record(i)

    def record_at(self, pos: int) -> Record:
        """The record at position pos (0 = the root); IndexError when out of range."""
        starts = self._starts
        if not 0 <= pos < self.node_count:
            raise IndexError(f"node position {pos} out of range")
        b = bisect.bisect_right(starts, pos) - 1
        return self._block(b).record(pos - starts[b])

    def children(self, path: bytes) -> list[tuple[bytes, int, Record]]:
        """(name, position, record) of each child of the directory at this normalized path,
        sorted by name."""
        starts = self._starts
        return [(name, starts[b] + i, self._block(b).record(i))
                for name, b, i in self._child_positions(path)]

    def preload_blocks(self) -> int | None:
        """Decode every node block into the block cache while they all fit (a long-lived
        reader decodes each once anyway); returns every record's flags or-ed (format.F_*),
        or None when they do not all fit (the rest stay for real lookups)."""
        flags = 0
        for b in range(len(self._blocks)):
            flags |= self._block(b).flags
            if self.block_cache_info()[0] < b + 1:
                return None
        return flags

    def _child_positions(self, path: bytes) -> Iterator[tuple[bytes, int, int]]:
        """(name, block, index in block) of each child of the directory at path, by name."""
        prefix = path if path == b"/" else path + b"/"
        cut = len(prefix)
        b, i = self._seek(prefix + b"\0" if path == b"/" else prefix)
        nblocks = len(self._blocks)
        while b < nblocks:
            blk = self._block(b)
            while i < blk.count:
                q = blk.path(i)
                if not q.startswith(prefix):
                    return
                slash = q.find(b"/", cut)
                if slash < 0:
                    yield q[cut:], b, i
                    i += 1
                    continue
                # inside a child's subtree: all of q[:slash] + b"/..." sorts before
                # q[:slash] + b"0" ('0' is '/' + 1), so jump there
                nb, ni = self._seek(q[:slash] + b"0")
                if nb != b:
                    b, i = nb, ni
                    break
                i = ni
            else:
                b, i = b + 1, 0

    def close(self) -> None:
        # each is taken before it is closed, and the fd is closed even if closing the store
        # is interrupted: a second close() (an interrupt landing right after a close) finds
        # nothing to close again
        readers, self._readers = self._readers, None
        fd, self._fd = self._fd, None
        try:
            if readers is not None:
                readers.close()
        finally:
            try:
                if fd is not None:
                    os.close(fd)
            finally:
                with self._cache_lock:
                    self._cache.clear()
                    self._cached = 0

    def __del__(self) -> None:
        # one never closed (an interrupt landed as it was returned, before a `with` or a
        # `try` held it): its fd and readers go with it, as a file object's do
        if getattr(self, "_fd", None) is not None:
            try:
                self.close()
            except Exception:  # noqa: BLE001, S110 - nobody to tell in a finalizer
                pass

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"{self.node_count} nodes"
        return f"<clipcy Archive {self.name!r} {state}>"


def storage_or_layout(storage: str | os.PathLike[str] | None,
                 layout: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """storage, or the deprecated layout= (any storage ref: the same thing) with a warning."""
    if layout is None:
        return storage
    if storage is not None:
        raise ValueError("give layout or storage, not both")
    warnings.warn("layout= is deprecated: use storage= (it takes any storage ref, a layout "
                  "directory included)", DeprecationWarning, stacklevel=3)
    return layout


def open_archive(path: str | os.PathLike[str],
                 layout: str | os.PathLike[str] | None = None, *,
                 storage: str | os.PathLike[str] | None = None,
                 remote: RemoteOptions | None = None) -> Archive:
    """Open a .clip archive (cheap: reads the header, metadata and indexes only).

    storage: where the layer blobs are, when not at the archive's recorded storage ref: any
    storage ref (a layout directory, docker://HOST[:PORT]/REPO or http(s)://BASE); layout:
    the same, deprecated; remote: how to reach a remote store
    (clipcy.storage.registry.RemoteOptions: auth file, timeouts, retries, span cache).
    Only reading file data (Archive.open) reads blobs."""
    return Archive(path, storage=storage_or_layout(storage, layout), remote=remote)
