"""The filesystem the FUSE binding serves: an open Archive seen through node ids.

A node id is the node's position in the archive's path order plus one (the root, position 0,
is FUSE's root id 1), so nothing is allocated per lookup and forget has nothing to free: the
id gives the record through the decoded block cache, the record gives the path. st_ino is the
archive's inode number (hardlinks share it); the kernel keeps one inode per path.

open and opendir answer ENOSYS where the kernel allows it (it then opens by itself, keeps
pages and listings cached, and sends no open/release at all), so reads and readdirs name the
node id: a directory's listing (with each child's record: readdirplus hands the kernel every
child's attributes) and a file's data location are kept in small LRUs. File bytes come from
the decoded-span cache (spans.py) over the archive's layer readers.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from clipcy.archive.format import F_XATTR
from clipcy.archive.reader import Archive
from clipcy.archive.record import LAYER, LINKNAME, OFFSET, PATH, SIZE, SPARSE, TYPE, XATTRS, Record
from clipcy.errors import ClipError
from clipcy.fusemount.counters import MountCounters
from clipcy.fusemount.spans import DecodedSpanCache
from clipcy.storage.decodedcache import DecodedDiskCache, LayerSpans

log = logging.getLogger("clipcy.mount")

__all__ = ["ImageFS"]

LISTINGS = 16  # directory listings kept while the kernel reads them in pieces
FILES = 256  # files whose data location (sparse runs) is kept for their reads


def _err(code: int) -> OSError:
    return OSError(code, "")


class _File:
    """An open regular file: where its bytes are."""

    __slots__ = ("layer", "offset", "size", "runs", "path")

    def __init__(self, rec: Record) -> None:
        self.path: bytes = rec[PATH]
        self.layer: int = rec[LAYER]
        self.offset: int = rec[OFFSET]
        self.size: int = rec[SIZE]
        self.runs: list[tuple[int, int, int]] | None = None  # (logical, length, data offset)
        if rec[SPARSE] is not None:
            self.runs, data = [], self.offset
            for off, length in rec[SPARSE]:
                self.runs.append((off, length, data))
                data += length


class ImageFS:
    """The callbacks' Python half (clipcy.fusemount._fuse calls these with the GIL)."""

    def __init__(self, arc: Archive, cache_bytes: int,
                 decoded: DecodedDiskCache | None = None) -> None:
        self.arc = arc
        self.spans = DecodedSpanCache(arc.layer_reader, cache_bytes)
        self.decoded = decoded
        if decoded is not None:  # compressed layers only: a plain one is read in place
            self.spans.disk = LayerSpans(decoded, [
                (str(la.get("digest", "")), int(la.get("uncompressed_size") or 0)
                 if la.get("compression") in ("gzip", "zstd") else 0) for la in arc.layers],
                self.spans.span)
        self.counters = MountCounters()  # the mount's one counters object (clipctl stats)
        self._listings: OrderedDict[int, list[tuple[bytes, int, Record]]] = OrderedDict()
        self._files: OrderedDict[int, _File] = OrderedDict()
        self._lock = threading.Lock()
        self.image_bytes = sum(int(la.get("uncompressed_size") or la.get("size") or 0)
                               for la in arc.layers)

    def warm(self, set_xattrs: Callable[[bool], None]) -> None:
        """Background start-up work: import and open the blob store and every layer's reader
        (decoding a layer's access data and packing its windows takes ~25 ms for a 500 MB
        layer: the first read of a program need not wait for it), decode every node block
        while they fit in the block cache (each is decoded once anyway), and turn xattrs off
        when no record has one."""
        try:
            self.arc.layer_readers()
            for layer in range(self.arc.layer_count):
                try:
                    self.arc.layer_reader(layer)
                except Exception as e:  # noqa: BLE001 - a read of that layer reports it
                    log.info("warm-up: layer %d not opened: %s", layer, e)
            flags = self.arc.preload_blocks()
            if flags is not None and not flags & F_XATTR:
                set_xattrs(False)
                log.info("no xattrs in the image: getxattr answers ENOSYS")
        except Exception as e:  # noqa: BLE001 - warming is best effort; requests report errors
            log.info("warm-up stopped: %s", e)

    # -- names and attributes ---------------------------------------------------------------
    def record(self, nodeid: int) -> Record:
        try:
            return self.arc.record_at(nodeid - 1)
        except IndexError:
            raise _err(errno.ENOENT) from None

    def lookup(self, parent: int, name: bytes) -> tuple[int, Record] | None:
        base = self.record(parent)[PATH]
        hit = self.arc.locate((base if base != b"/" else b"") + b"/" + name)
        if hit is None:
            return None
        return hit[0] + 1, hit[1]

    def readlink(self, nodeid: int) -> bytes:
        rec = self.record(nodeid)
        if rec[TYPE] != "symlink":
            raise _err(errno.EINVAL)
        target: bytes = rec[LINKNAME]
        return target

    def getxattr(self, nodeid: int, name: bytes) -> bytes | None:
        xattrs = self.record(nodeid)[XATTRS]
        if not xattrs:
            return None
        key = name.decode("utf-8", "surrogateescape")
        for k, v in xattrs:
            if k == key:
                value: bytes = v
                return value
        return None

    def listxattr(self, nodeid: int) -> bytes:
        return b"".join(k.encode("utf-8", "surrogateescape") + b"\0"
                        for k, _ in self.record(nodeid)[XATTRS])

    def statfs(self) -> tuple[int, int]:
        return self.image_bytes, self.arc.node_count

    # -- directories and files, by node id (open/opendir are the kernel's: no handles) -----
    def listing(self, nodeid: int) -> list[tuple[bytes, int, Record]]:
        """".", ".." and every child (name, node id, record), kept for a few directories: the
        kernel asks in pieces, then caches the listing itself."""
        with self._lock:
            hit = self._listings.get(nodeid)
            if hit is not None:
                self._listings.move_to_end(nodeid)
                return hit
        rec = self.record(nodeid)
        if rec[TYPE] != "dir":
            raise _err(errno.ENOTDIR)
        path = rec[PATH]
        _, up = self.arc.locate(path.rpartition(b"/")[0] or b"/") or (0, rec)
        entries: list[tuple[bytes, int, Record]] = [(b".", 0, rec), (b"..", 0, up)]
        entries += [(name, pos + 1, r) for name, pos, r in self.arc.children(path)]
        with self._lock:
            self._listings[nodeid] = entries
            if len(self._listings) > LISTINGS:
                self._listings.popitem(last=False)
        return entries

    def _file(self, nodeid: int) -> _File:
        with self._lock:
            f = self._files.get(nodeid)
            if f is not None:
                self._files.move_to_end(nodeid)
                return f
        rec = self.record(nodeid)
        if rec[TYPE] != "file":
            raise _err(errno.EISDIR if rec[TYPE] == "dir" else errno.EINVAL)
        f = _File(rec)
        with self._lock:
            self._files[nodeid] = f
            if len(self._files) > FILES:
                self._files.popitem(last=False)
        return f

    # -- data -------------------------------------------------------------------------------
    def read_parts(self, nodeid: int, size: int, off: int) -> list[tuple[bytes, int, int]]:
        """Up to size bytes of the file at off (fewer only at its end), as (bytes, start,
        length) pieces of the decoded-span cache, not joined: the binding replies with them as
        one iovec (no copy in this process)."""
        f = self._file(nodeid)
        n = min(size, f.size - off)
        if n <= 0:
            return []
        try:
            if f.runs is None:
                parts = self.spans.parts(f.layer, f.offset + off, n, f.offset + f.size,
                                         f.offset)
            else:
                data = self._read_sparse(f, off, n)
                parts = [(data, 0, len(data))]
        except (ClipError, OSError) as e:
            self._log_failure(f, e)
            raise _err(errno.EIO) from None
        if sum([p[2] for p in parts]) != n:
            self._log_failure(f, ClipError(f"layer {f.layer} ended early"))
            raise _err(errno.EIO)
        return parts

    def _read_sparse(self, f: _File, off: int, n: int) -> bytes:
        assert f.runs is not None
        out = bytearray(n)  # holes read as zeros
        end = off + n
        for lo_run, length, data in f.runs:
            lo, hi = max(lo_run, off), min(lo_run + length, end)
            if hi > lo:
                chunk = self.spans.read(f.layer, data + (lo - lo_run), hi - lo,
                                         data + length)
                if len(chunk) != hi - lo:
                    raise ClipError(f"layer {f.layer} ended early")
                out[lo - off:hi - off] = chunk
        return bytes(out)

    def _log_failure(self, f: _File, e: BaseException) -> None:
        """Count a failed read (it answers EIO) by its kind; the first of each kind is logged,
        naming the file and its blob (a registry gone away fails every read: one line)."""
        first = self.counters.read_error(e)
        layers = self.arc.layers
        digest = layers[f.layer].get("digest", "?") if 0 <= f.layer < len(layers) else "?"
        (log.error if first else log.debug)(
            "reading %s: layer blob %s: %s (the read returns EIO%s)",
            f.path.decode("utf-8", "replace"), digest, e,
            "; further errors of this kind are counted, see clipctl stats" if first else "")
