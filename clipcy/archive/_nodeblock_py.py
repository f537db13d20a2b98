"""Node block decoding, pure-Python twin of clipcy.archive._nodeblock
(docs/FORMAT.md "Node records").

decode_block(raw, count, first) -> (paths, records): every record of a block as field tuples.
NodeBlock(raw, count, first): a decoded block kept by a long-lived reader: path(i), record(i),
bisect_left(key), and nbytes (what it holds in memory, for the reader's byte budget). The
compiled twin keeps the raw records plus one small state per record and builds a record's tuple
on demand; this twin keeps the tuples. Both validate the whole block up front and raise the
same Corrupt messages.
"""

from __future__ import annotations

import bisect
import sys

from clipcy.archive import format as F
from clipcy.archive.record import Record

__all__ = ["Corrupt", "NodeBlock", "decode_block", "take", "uv"]

_M64 = (1 << 64) - 1

class Corrupt(Exception):
    """Internal: a decoding failure; Archive turns it into ArchiveError with the file name.
    (The compiled twin raises this same class.)"""


def uv(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint (at most 10 bytes, value < 2**64)."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    v = b & 0x7F
    shift = 7
    while True:
        pos += 1
        b = buf[pos]
        v |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise Corrupt(f"varint longer than 10 bytes at block offset {pos}")
    if v >> 64:
        raise Corrupt(f"varint exceeds 64 bits at block offset {pos}")
    return v, pos + 1


def take(buf: bytes, pos: int, n: int) -> tuple[bytes, int]:
    end = pos + n
    if end > len(buf):
        raise Corrupt(f"field of {n} bytes runs past the end at offset {pos}")
    return buf[pos:end], end


def decode_block(raw: bytes, count: int, first: bytes) -> tuple[list[bytes], list[Record]]:
    """Decode a block's records (docs/FORMAT.md "Node records") into paths and field tuples."""
    paths, recs, _ = _decode(raw, count, first)
    return paths, recs


def _decode(raw: bytes, count: int, first: bytes) -> tuple[list[bytes], list[Record], int]:
    """decode_block(), and every record's flags or-ed."""
    seen = 0
    paths: list[bytes] = []
    recs: list[Record] = []
    uv_ = uv
    pos = 0
    prev = b""
    ino = mtime_bits = data_end = 0  # the block's delta state (docs/FORMAT.md)
    try:
        for _ in range(count):
            shared, pos = uv_(raw, pos)
            if shared > len(prev):
                raise Corrupt(f"shared prefix {shared} longer than the previous path")
            n, pos = uv_(raw, pos)
            suffix, pos = take(raw, pos, n)
            path = prev[:shared] + suffix
            if paths:
                if path <= prev:
                    raise Corrupt(f"path {path!r} out of order")
            elif path != first:
                raise Corrupt(f"first path {path!r} differs from the index ({first!r})")
            flags, pos = uv_(raw, pos)
            if flags & ~F.KNOWN_RECORD_FLAGS or flags & F.TYPE_MASK > 5:
                raise Corrupt(f"bad record flags {flags:#x} for {path!r}")
            seen |= flags
            mode, pos = uv_(raw, pos)
            uid, pos = uv_(raw, pos)
            gid, pos = uv_(raw, pos)
            z, pos = uv_(raw, pos)
            mtime_bits = (mtime_bits + ((z >> 1) ^ (_M64 if z & 1 else 0))) & _M64
            mtime = mtime_bits - (1 << 64) if mtime_bits >> 63 else mtime_bits
            nsec = 0
            if flags & F.F_NSEC:
                nsec, pos = uv_(raw, pos)
                if not 0 < nsec < 1_000_000_000:
                    raise Corrupt(f"mtime_nsec {nsec} out of range for {path!r}")
            z, pos = uv_(raw, pos)
            ino += -(z >> 1) - 1 if z & 1 else z >> 1
            if ino < 0:
                raise Corrupt(f"negative ino for {path!r}")
            if ino >> 63:
                raise Corrupt(f"ino {ino} exceeds 2**63 - 1 for {path!r}")
            nlink = 1
            if flags & F.F_NLINK:
                nlink, pos = uv_(raw, pos)
            size = 0
            if flags & F.F_SIZE:
                size, pos = uv_(raw, pos)
            layer, offset = -1, 0
            if flags & F.F_DATA:
                layer, pos = uv_(raw, pos)
                layer -= 1
                z, pos = uv_(raw, pos)
                offset = (data_end + ((z >> 1) ^ (_M64 if z & 1 else 0))) & _M64
                data_end = (offset + ((size + 511) & ~511) + 512) & _M64
            sparse = None
            if flags & F.F_SPARSE:
                k, pos = uv_(raw, pos)
                if k > len(raw) - pos:
                    raise Corrupt(f"sparse count {k} exceeds the block for {path!r}")
                runs = []
                for _ in range(k):
                    o, pos = uv_(raw, pos)
                    ln, pos = uv_(raw, pos)
                    runs.append((o, ln))
                sparse = tuple(runs)
            digest = b""
            if flags & F.F_DIGEST:
                n, pos = uv_(raw, pos)
                digest, pos = take(raw, pos, n)
            linkname = b""
            if flags & F.F_LINK:
                n, pos = uv_(raw, pos)
                linkname, pos = take(raw, pos, n)
            devmajor = devminor = 0
            if flags & F.F_DEV:
                devmajor, pos = uv_(raw, pos)
                devminor, pos = uv_(raw, pos)
            xattrs: tuple[tuple[str, bytes], ...] = ()
            if flags & F.F_XATTR:
                k, pos = uv_(raw, pos)
                if k > len(raw) - pos:
                    raise Corrupt(f"xattr count {k} exceeds the block for {path!r}")
                pairs = []
                for _ in range(k):
                    n, pos = uv_(raw, pos)
                    name, pos = take(raw, pos, n)
                    n, pos = uv_(raw, pos)
                    value, pos = take(raw, pos, n)
                    pairs.append((name.decode("utf-8", "surrogateescape"), value))
                xattrs = tuple(pairs)
            paths.append(path)
            # in clipcy.archive.record's order
            recs.append((path, F.TYPE_NAMES[flags & F.TYPE_MASK], mode, uid, gid, mtime, nsec,
                         size, linkname, devmajor, devminor, xattrs, ino, nlink, layer, offset,
                         sparse, digest))
            prev = path
    except IndexError:
        raise Corrupt(f"records run past the end of the block ({len(raw)} bytes)") from None
    if pos != len(raw):
        raise Corrupt(f"{len(raw) - pos} stray bytes after {count} records")
    return paths, recs, seen


class NodeBlock:
    """A validated, decoded node block (see the module docstring)."""

    __slots__ = ("count", "nbytes", "flags", "_paths", "_recs")

    def __init__(self, raw: bytes, count: int, first: bytes) -> None:
        self._paths, self._recs, flags = _decode(raw, count, first)
        self.count: int = len(self._paths)
        self.flags: int = flags  # every record's flags or-ed
        # the tuples, their int objects and the paths (sys.getsizeof of a sample record:
        # an estimate, exact enough for a cache budget)
        per = sys.getsizeof(self._recs[0]) + 8 * 32 if self._recs else 0
        self.nbytes: int = (sum(map(sys.getsizeof, self._paths)) + self.count * (per + 16)
                            + len(raw))

    def path(self, i: int) -> bytes:
        return self._paths[i]

    def record(self, i: int) -> Record:
        return self._recs[i]

    def bisect_left(self, key: bytes) -> int:
        """Index of the first path >= key (count when every path is smaller)."""
        return bisect.bisect_left(self._paths, key)
