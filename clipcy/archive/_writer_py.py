"""Pure-Python twin of clipcy.archive._writer: the same encode_archive(), byte for byte.

Encodes node records into blocks and layer access data into payloads (docs/FORMAT.md
"Node records", "Layer access payload"); clipcy.archive.format.assemble() does the rest. Every
validation error has the same class and message as in the compiled module.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

from clipcy.archive import format as F
from clipcy.errors import ArchiveWriteError
from clipcy.layers.access import LayerAccess
from clipcy.node import Node

__all__ = ["encode_archive", "assemble_archive", "encode_blocks", "encode_access"]

MAX_U64 = (1 << 64) - 1
MAX_I63 = (1 << 63) - 1


def _uv(out: bytearray, v: int) -> None:
    """Append v (0..2**64-1) as an unsigned LEB128 varint."""
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _what(ctx: bytes | int) -> str:
    """The subject of an error message: a node path (bytes) or a layer index (int)."""
    return f"node {ctx!r}" if isinstance(ctx, bytes) else f"access data of layer {ctx}"


def _u64(ctx: bytes | int, field: str, v: Any) -> int:
    try:
        x = v if type(v) is int else operator.index(v)
    except TypeError:
        x = -1
    if x < 0 or x > MAX_U64:
        raise ArchiveWriteError(f"cannot encode {_what(ctx)}: {field} {v!r} is not an integer "
                                "in 0..2**64-1")
    return x


def _blob(ctx: bytes | int, field: str, v: Any) -> bytes:
    if type(v) is not bytes:
        raise ArchiveWriteError(f"cannot encode {_what(ctx)}: {field} is {type(v).__name__}, "
                                "not bytes")
    return v


def _bad(path: bytes, why: str) -> ArchiveWriteError:
    return ArchiveWriteError(f"cannot encode node {path!r}: {why}")


def _check_path(path: Any, last: bytes | None, dirs: set[bytes]) -> bytes:
    """Validate the path's form, its order after `last`, and that its parent is a stored dir."""
    if type(path) is not bytes:
        raise ArchiveWriteError(f"cannot encode node {path!r}: path is not bytes")
    if last is None:
        if path != b"/":
            raise _bad(path, "the first node must be the root b'/'")
        return path
    if (not path.startswith(b"/") or path.endswith(b"/") or b"//" in path or b"\0" in path
            or b"/./" in path + b"/" or b"/../" in path + b"/"):
        raise _bad(path, "not a normalised absolute path")
    if path <= last:
        raise _bad(path, f"paths must be strictly increasing (after {last!r})")
    parent = path[: path.rindex(b"/")] or b"/"
    if parent not in dirs:
        raise _bad(path, f"parent directory {parent!r} is not in the tree")
    return path


def _zz64(d: int) -> int:
    """Zigzag of d taken modulo 2**64 as a signed 64-bit value (the Cython writer's
    wrapping uint64 arithmetic)."""
    d &= MAX_U64
    return ((d << 1) & MAX_U64) ^ (MAX_U64 if d >> 63 else 0)


def _record(out: bytearray, n: Node, path: bytes, shared: int, st: list[int]) -> None:
    """Append one node record (docs/FORMAT.md "Node records").

    st is the block's delta state [previous ino, previous mtime, predicted data offset],
    all 0 at the start of a block; updated in place.
    """
    what = path
    code = F.TYPE_CODES.get(n.type) if isinstance(n.type, str) else None
    if code is None:
        raise _bad(path, f"unknown type {n.type!r}")
    mode = _u64(what, "mode", n.mode)
    uid = _u64(what, "uid", n.uid)
    gid = _u64(what, "gid", n.gid)
    try:
        mtime = operator.index(n.mtime_sec)
    except TypeError:
        mtime = MAX_I63 + 1
    if not -MAX_I63 - 1 <= mtime <= MAX_I63:
        raise _bad(path, f"mtime_sec {n.mtime_sec!r} is not an integer in -2**63..2**63-1")
    nsec = _u64(what, "mtime_nsec", n.mtime_nsec)
    if nsec >= 1_000_000_000:
        raise _bad(path, f"mtime_nsec {n.mtime_nsec!r} is not below 10**9")
    ino = _u64(what, "ino", n.ino)
    if ino > MAX_I63:
        raise _bad(path, f"ino {n.ino!r} is not an integer in 0..2**63-1")
    nlink = _u64(what, "nlink", n.nlink)
    size = _u64(what, "size", n.size)
    try:
        layer = operator.index(n.layer) + 1
    except TypeError:
        layer = -1
    if layer < 0 or layer > MAX_U64:
        raise _bad(path, f"layer {n.layer!r} is not an integer in -1..2**64-2")
    offset = _u64(what, "offset", n.offset)
    linkname = _blob(what, "linkname", n.linkname)
    digest = _blob(what, "digest", n.digest)
    devmajor = _u64(what, "devmajor", n.devmajor)
    devminor = _u64(what, "devminor", n.devminor)
    sparse = n.sparse
    xattrs = n.xattrs
    if not isinstance(xattrs, dict):
        raise _bad(path, f"xattrs is {type(xattrs).__name__}, not dict")

    flags = code
    if nsec:
        flags |= F.F_NSEC
    if nlink != 1:
        flags |= F.F_NLINK
    if size:
        flags |= F.F_SIZE
    if layer or offset:
        flags |= F.F_DATA
    if sparse is not None:
        flags |= F.F_SPARSE
    if digest:
        flags |= F.F_DIGEST
    if linkname:
        flags |= F.F_LINK
    if devmajor or devminor:
        flags |= F.F_DEV
    if xattrs:
        flags |= F.F_XATTR

    _uv(out, shared)
    _uv(out, len(path) - shared)
    out += path[shared:]
    _uv(out, flags)
    _uv(out, mode)
    _uv(out, uid)
    _uv(out, gid)
    _uv(out, _zz64(mtime - st[1]))
    st[1] = mtime
    if nsec:
        _uv(out, nsec)
    delta = ino - st[0]
    _uv(out, (-delta << 1) - 1 if delta < 0 else delta << 1)
    st[0] = ino
    if nlink != 1:
        _uv(out, nlink)
    if size:
        _uv(out, size)
    if layer or offset:
        _uv(out, layer)
        # tar data usually follows the previous file's data and one 512-byte header
        _uv(out, _zz64(offset - st[2]))
        st[2] = (offset + ((size + 511) & ~511) + 512) & MAX_U64
    if sparse is not None:
        if not isinstance(sparse, (tuple, list)):
            raise _bad(path, f"sparse is {type(sparse).__name__}, not a tuple")
        _uv(out, len(sparse))
        for run in sparse:
            if not isinstance(run, (tuple, list)) or len(run) != 2:
                raise _bad(path, f"sparse run {run!r} is not an (offset, length) pair")
            _uv(out, _u64(what, "sparse offset", run[0]))
            _uv(out, _u64(what, "sparse length", run[1]))
    if digest:
        _uv(out, len(digest))
        out += digest
    if linkname:
        _uv(out, len(linkname))
        out += linkname
    if devmajor or devminor:
        _uv(out, devmajor)
        _uv(out, devminor)
    if xattrs:
        items = []
        for name, value in xattrs.items():
            if not isinstance(name, str):
                raise _bad(path, f"xattr name {name!r} is not str")
            items.append((name.encode("utf-8", "surrogateescape"),
                          _blob(what, f"xattr {name!r}", value)))
        items.sort()
        _uv(out, len(items))
        prev_name = None
        for name_b, value in items:
            if name_b == prev_name:
                raise _bad(path, f"duplicate xattr name {name_b!r}")
            prev_name = name_b
            _uv(out, len(name_b))
            out += name_b
            _uv(out, len(value))
            out += value


def _shared_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    # compare 8 bytes at a time first: paths in a block share long prefixes
    while i + 8 <= n and a[i:i + 8] == b[i:i + 8]:
        i += 8
    while i < n and a[i] == b[i]:
        i += 1
    return i


def encode_blocks(nodes: Iterable[Node], max_nodes: int = F.BLOCK_MAX_NODES,
                  target_bytes: int = F.BLOCK_TARGET_BYTES) -> list[tuple[bytes, int, bytes]]:
    """Validate the tree and encode it into (first path, count, raw records) blocks.

    A block closes after max_nodes records or once it holds target_bytes (tests use small
    values to get many blocks from small trees; archives always use the defaults).
    """
    blocks: list[tuple[bytes, int, bytes]] = []
    dirs: set[bytes] = set()
    out = bytearray()
    count = 0
    first = prev = b""
    last: bytes | None = None
    st = [0, 0, 0]
    for n in nodes:
        path = _check_path(n.path, last, dirs)
        if count == 0:
            first, shared = path, 0
            st[:] = (0, 0, 0)
        else:
            shared = _shared_prefix(prev, path)
        _record(out, n, path, shared, st)
        if n.type == "dir":
            dirs.add(path)
        last = prev = path
        count += 1
        if count >= max_nodes or len(out) >= target_bytes:
            blocks.append((first, count, bytes(out)))
            out = bytearray()
            count = 0
    if count:
        blocks.append((first, count, bytes(out)))
    return blocks


_FRAME_FIELDS = ("frame compressed offset", "frame compressed size",
                 "frame uncompressed offset", "frame uncompressed size")


def encode_access(i: int, a: LayerAccess) -> bytes:
    """The raw access payload of layer i (docs/FORMAT.md "Layer access payload")."""
    what = i
    where = f"cannot encode access data of layer {i}"
    code = F.ACCESS_KIND_CODES.get(a.kind) if isinstance(a.kind, str) else None
    if code is None:
        raise ArchiveWriteError(f"{where}: unknown kind {a.kind!r}")
    out = bytearray()
    _uv(out, code)
    _uv(out, _u64(what, "span", a.span))
    _uv(out, len(a.points))
    for p in a.points:
        if not isinstance(p, (tuple, list)) or len(p) != 4:
            raise ArchiveWriteError(f"{where}: point {p!r} is not a 4-tuple")
        coff = _u64(what, "point compressed offset", p[0])
        bits = _u64(what, "point bits", p[1])
        if bits > 7:
            raise ArchiveWriteError(f"{where}: point bits {p[1]!r} is not in 0..7")
        uoff = _u64(what, "point uncompressed offset", p[2])
        window = _blob(what, "point window", p[3])
        _uv(out, coff)
        out.append(bits)
        _uv(out, uoff)
        _uv(out, len(window))
        out += window
    _uv(out, len(a.frames))
    for fr in a.frames:
        if not isinstance(fr, (tuple, list)) or len(fr) != 4:
            raise ArchiveWriteError(f"{where}: frame {fr!r} is not a 4-tuple")
        for field, v in zip(_FRAME_FIELDS, fr, strict=True):
            _uv(out, _u64(what, field, v))
    out += F.encode_spans(i, getattr(a, "spans", None))
    return bytes(out)


def assemble_archive(metadata: dict[str, Any], blocks: Sequence[tuple[bytes, int, bytes]],
                     access: Sequence[LayerAccess | F.EncodedAccess]) -> bytes:
    """The complete .clip archive from node blocks already encoded (encode_blocks, or the
    merge's encode_tree), as bytes (reproducible)."""
    meta = F.canonical_json(metadata)
    # an access item may come already encoded (format.EncodedAccess, from index-layout)
    payloads = [a if isinstance(a, F.EncodedAccess) else encode_access(i, a)
                for i, a in enumerate(access)]
    return F.assemble(meta, sum(b[1] for b in blocks), blocks, payloads)


def encode_archive(metadata: dict[str, Any], nodes: Iterable[Node],
                   access: Sequence[LayerAccess | F.EncodedAccess]) -> bytes:
    """The complete .clip archive for this tree, as bytes (reproducible)."""
    # nodes may be a one-pass iterable: the count comes from the blocks
    return assemble_archive(metadata, encode_blocks(nodes), access)
