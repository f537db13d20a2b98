# cython: language_level=3
"""Compiled archive writer: encodes node records and layer access payloads into growing C
buffers (docs/FORMAT.md "Node records", "Layer access payload"); clipcy.archive.format.assemble()
compresses and lays out the sections. Byte-identical to clipcy.archive._writer_py, with the same
exception classes and messages (tests/test_format.py checks both).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

from clipcy.archive.format cimport (
    F_DATA, F_DEV, F_DIGEST, F_LINK, F_NLINK, F_NSEC, F_SIZE, F_SPARSE, F_XATTR,
)

import operator

from clipcy.archive import format as F
from clipcy.errors import ArchiveWriteError

__all__ = ["encode_archive", "assemble_archive", "encode_blocks", "encode_access"]

cdef object _TYPE_CODES = F.TYPE_CODES
cdef object _ACCESS_KIND_CODES = F.ACCESS_KIND_CODES
cdef Py_ssize_t _BLOCK_MAX_NODES = F.BLOCK_MAX_NODES
cdef Py_ssize_t _BLOCK_TARGET_BYTES = F.BLOCK_TARGET_BYTES
cdef int _DIR_CODE = F.TYPE_CODES["dir"]
cdef uint64_t _MAX_I63 = (<uint64_t>1 << 63) - 1


cdef class _Buf:
    """A growing byte buffer; varints and byte strings are appended without Python objects."""

    def __dealloc__(self):
        free(self.data)

    cdef int reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self.n + extra
        cdef Py_ssize_t cap
        cdef unsigned char *p
        if need <= self.cap:
            return 0
        cap = self.cap * 2 if self.cap else 4096
        while cap < need:
            cap *= 2
        p = <unsigned char *>realloc(self.data, cap)
        if p == NULL:
            raise MemoryError()
        self.data = p
        self.cap = cap
        return 0

    cdef int uv(self, uint64_t v) except -1:
        if self.n + 10 > self.cap:
            self.reserve(10)
        while v >= 0x80:
            self.data[self.n] = <unsigned char>((v & 0x7F) | 0x80)
            self.n += 1
            v >>= 7
        self.data[self.n] = <unsigned char>v
        self.n += 1
        return 0

    cdef int byte(self, unsigned char c) except -1:
        if self.n + 1 > self.cap:
            self.reserve(1)
        self.data[self.n] = c
        self.n += 1
        return 0

    cdef int put(self, const unsigned char *p, Py_ssize_t k) except -1:
        if k <= 0:
            return 0
        if self.n + k > self.cap:
            self.reserve(k)
        memcpy(self.data + self.n, p, k)
        self.n += k
        return 0

    cdef int put_bytes(self, bytes b) except -1:
        return self.put(<const unsigned char *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))

    cdef bytes take(self):
        """The contents as bytes; the buffer is emptied (its memory kept for reuse)."""
        cdef bytes out = PyBytes_FromStringAndSize(<char *>self.data, self.n)
        self.n = 0
        return out


cdef str _what(object ctx):
    """The subject of an error message: a node path (bytes) or a layer index (int)."""
    return f"node {ctx!r}" if isinstance(ctx, bytes) else f"access data of layer {ctx}"


cdef uint64_t _u64(object ctx, str field, object v) except? 0xFFFFFFFFFFFFFFFF:
    """v as uint64, or ArchiveWriteError with the twin's message."""
    cdef uint64_t x
    try:
        if type(v) is int:
            x = v  # the common case: no operator.index call
        else:
            x = operator.index(v)
    except (TypeError, OverflowError):
        raise ArchiveWriteError(f"cannot encode {_what(ctx)}: {field} {v!r} is not an integer "
                                "in 0..2**64-1") from None
    return x


cdef bytes _blob(object ctx, str field, object v):
    if type(v) is not bytes:
        raise ArchiveWriteError(f"cannot encode {_what(ctx)}: {field} is {type(v).__name__}, "
                                "not bytes")
    return <bytes>v


cdef object _bad(bytes path, str why):
    return ArchiveWriteError(f"cannot encode node {path!r}: {why}")


cdef bint _normalised(bytes p) noexcept:
    """p is b"/" + components joined by b"/": none empty, ".", ".." or holding NUL."""
    cdef const unsigned char *c = <const unsigned char *>PyBytes_AS_STRING(p)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(p)
    cdef Py_ssize_t i, start = 1, k
    if n < 2 or c[0] != 47:  # '/'
        return False
    for i in range(1, n + 1):
        if i == n or c[i] == 47:
            k = i - start
            if k == 0 or (k == 1 and c[start] == 46) or (k == 2 and c[start] == 46
                                                         and c[start + 1] == 46):
                return False
            start = i + 1
        elif c[i] == 0:
            return False
    return True


cdef bytes _check_path(object path, bytes last, set dirs):
    """Validate the path's form, its order after `last`, and that its parent is a stored dir."""
    cdef bytes p
    cdef bytes parent
    if type(path) is not bytes:
        raise ArchiveWriteError(f"cannot encode node {path!r}: path is not bytes")
    p = <bytes>path
    if last is None:
        if p != b"/":
            raise _bad(p, "the first node must be the root b'/'")
        return p
    if not _normalised(p):
        raise _bad(p, "not a normalised absolute path")
    if p <= last:
        raise _bad(p, f"paths must be strictly increasing (after {last!r})")
    parent = p[: p.rindex(b"/")] or b"/"
    if parent not in dirs:
        raise _bad(p, f"parent directory {parent!r} is not in the tree")
    return p


cdef inline uint64_t _zigzag(int64_t v) noexcept:
    return (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)


cdef Py_ssize_t _shared_prefix(bytes a, bytes b) noexcept:
    cdef const unsigned char *pa = <const unsigned char *>PyBytes_AS_STRING(a)
    cdef const unsigned char *pb = <const unsigned char *>PyBytes_AS_STRING(b)
    cdef Py_ssize_t n = min(PyBytes_GET_SIZE(a), PyBytes_GET_SIZE(b))
    cdef Py_ssize_t i = 0
    while i < n and pa[i] == pb[i]:
        i += 1
    return i


cdef int _record(_Buf out, bytes path, Py_ssize_t shared, _Delta *st, object t,
                 object mode_v, object uid_v, object gid_v, object mtime_sec, object mtime_nsec,
                 object size_v, object linkname_v, object devmajor_v, object devminor_v,
                 object xattrs, object ino_v, object nlink_v, object layer_v, object offset_v,
                 object sparse, object digest_v) except -1:
    """Append one node record (a Node's fields, in Node's order), updating the block's delta
    state."""
    cdef object what = path
    cdef object code = _TYPE_CODES.get(t) if isinstance(t, str) else None
    cdef uint64_t mode, uid, gid, nsec, ino, nlink, size, layer, offset, devmajor, devminor
    cdef int64_t mtime, delta
    cdef uint64_t flags
    cdef object v, run, name, value
    cdef bytes linkname, digest, name_b, prev_name
    cdef list items
    if code is None:
        raise _bad(path, f"unknown type {t!r}")
    mode = _u64(what, "mode", mode_v)
    uid = _u64(what, "uid", uid_v)
    gid = _u64(what, "gid", gid_v)
    v = mtime_sec
    try:
        mtime = v if type(v) is int else operator.index(v)
    except (TypeError, OverflowError):
        raise _bad(path, f"mtime_sec {v!r} is not an integer in -2**63..2**63-1") from None
    nsec = _u64(what, "mtime_nsec", mtime_nsec)
    if nsec >= 1000000000:
        raise _bad(path, f"mtime_nsec {mtime_nsec!r} is not below 10**9")
    ino = _u64(what, "ino", ino_v)
    if ino > _MAX_I63:
        raise _bad(path, f"ino {ino_v!r} is not an integer in 0..2**63-1")
    nlink = _u64(what, "nlink", nlink_v)
    size = _u64(what, "size", size_v)
    v = layer_v
    try:
        layer = (v if type(v) is int else operator.index(v)) + 1
    except (TypeError, OverflowError):
        raise _bad(path, f"layer {v!r} is not an integer in -1..2**64-2") from None
    offset = _u64(what, "offset", offset_v)
    linkname = _blob(what, "linkname", linkname_v)
    digest = _blob(what, "digest", digest_v)
    devmajor = _u64(what, "devmajor", devmajor_v)
    devminor = _u64(what, "devminor", devminor_v)
    if not isinstance(xattrs, dict):
        raise _bad(path, f"xattrs is {type(xattrs).__name__}, not dict")

    flags = <uint64_t><int>code
    if nsec:
        flags |= F_NSEC
    if nlink != 1:
        flags |= F_NLINK
    if size:
        flags |= F_SIZE
    if layer or offset:
        flags |= F_DATA
    if sparse is not None:
        flags |= F_SPARSE
    if digest:
        flags |= F_DIGEST
    if linkname:
        flags |= F_LINK
    if devmajor or devminor:
        flags |= F_DEV
    if xattrs:
        flags |= F_XATTR

    out.uv(shared)
    out.uv(PyBytes_GET_SIZE(path) - shared)
    out.put(<const unsigned char *>PyBytes_AS_STRING(path) + shared,
            PyBytes_GET_SIZE(path) - shared)
    out.uv(flags)
    out.uv(mode)
    out.uv(uid)
    out.uv(gid)
    # differences wrap modulo 2**64, as in the twin
    out.uv(_zigzag(<int64_t>(<uint64_t>mtime - st.mtime)))
    st.mtime = <uint64_t>mtime
    if nsec:
        out.uv(nsec)
    delta = <int64_t>ino - <int64_t>st.ino
    out.uv(_zigzag(delta))
    st.ino = ino
    if nlink != 1:
        out.uv(nlink)
    if size:
        out.uv(size)
    if layer or offset:
        out.uv(layer)
        # tar data usually follows the previous file's data and one 512-byte header
        out.uv(_zigzag(<int64_t>(offset - st.data_end)))
        st.data_end = offset + ((size + 511) & ~(<uint64_t>511)) + 512
    if sparse is not None:
        if not isinstance(sparse, (tuple, list)):
            raise _bad(path, f"sparse is {type(sparse).__name__}, not a tuple")
        out.uv(len(sparse))
        for run in sparse:
            if not isinstance(run, (tuple, list)) or len(run) != 2:
                raise _bad(path, f"sparse run {run!r} is not an (offset, length) pair")
            out.uv(_u64(what, "sparse offset", run[0]))
            out.uv(_u64(what, "sparse length", run[1]))
    if digest:
        out.uv(len(digest))
        out.put_bytes(digest)
    if linkname:
        out.uv(len(linkname))
        out.put_bytes(linkname)
    if devmajor or devminor:
        out.uv(devmajor)
        out.uv(devminor)
    if xattrs:
        items = []
        for name, value in xattrs.items():
            if not isinstance(name, str):
                raise _bad(path, f"xattr name {name!r} is not str")
            items.append(((<str>name).encode("utf-8", "surrogateescape"),
                          _blob(what, f"xattr {name!r}", value)))
        items.sort()
        out.uv(len(items))
        prev_name = None
        for name_b, value in items:
            if name_b == prev_name:
                raise _bad(path, f"duplicate xattr name {name_b!r}")
            prev_name = name_b
            out.uv(len(name_b))
            out.put_bytes(name_b)
            out.uv(len(<bytes>value))
            out.put_bytes(<bytes>value)
    return 0


cdef class BlockEncoder:
    """Validates a tree given node by node in path order and encodes it into
    (first path, count, raw records) blocks. A block closes after max_nodes records or once it
    holds target_bytes (tests use small values to get many blocks from small trees; archives
    always use the defaults). The compiled merge feeds it straight from its inodes
    (clipcy.image._merge.encode_tree), without a Node per path."""

    def __init__(self, Py_ssize_t max_nodes=_BLOCK_MAX_NODES,
                 Py_ssize_t target_bytes=_BLOCK_TARGET_BYTES):
        self.blocks = []
        self.dirs = set()
        self.out = _Buf()
        self.count = 0
        self.max_nodes = max_nodes
        self.target_bytes = target_bytes
        self.first = self.prev = b""
        self.last = None

    cdef int add(self, object path, object type, object mode, object uid, object gid,
                 object mtime_sec, object mtime_nsec, object size, object linkname,
                 object devmajor, object devminor, object xattrs, object ino, object nlink,
                 object layer, object offset, object sparse, object digest) except -1:
        cdef Py_ssize_t shared
        cdef bytes p = _check_path(path, self.last, self.dirs)
        if self.count == 0:
            self.first = p
            shared = 0
            self.st.ino = self.st.mtime = self.st.data_end = 0
        else:
            shared = _shared_prefix(self.prev, p)
        _record(self.out, p, shared, &self.st, type, mode, uid, gid, mtime_sec, mtime_nsec,
                size, linkname, devmajor, devminor, xattrs, ino, nlink, layer, offset, sparse,
                digest)
        if type == "dir":
            self.dirs.add(p)
        self.last = self.prev = p
        self.count += 1
        if self.count >= self.max_nodes or self.out.n >= self.target_bytes:
            self.blocks.append((self.first, self.count, self.out.take()))
            self.count = 0
        return 0

    cpdef list finish(self):
        """The blocks (the last one closed here)."""
        if self.count:
            self.blocks.append((self.first, self.count, self.out.take()))
            self.count = 0
        return self.blocks


def encode_blocks(nodes, Py_ssize_t max_nodes=_BLOCK_MAX_NODES,
                  Py_ssize_t target_bytes=_BLOCK_TARGET_BYTES):
    """Validate the tree and encode it into (first path, count, raw records) blocks.

    A block closes after max_nodes records or once it holds target_bytes (tests use small
    values to get many blocks from small trees; archives always use the defaults).
    """
    cdef BlockEncoder enc = BlockEncoder(max_nodes, target_bytes)
    for n in nodes:
        enc.add(n.path, n.type, n.mode, n.uid, n.gid, n.mtime_sec, n.mtime_nsec, n.size,
                n.linkname, n.devmajor, n.devminor, n.xattrs, n.ino, n.nlink, n.layer,
                n.offset, n.sparse, n.digest)
    return enc.finish()


_FRAME_FIELDS = ("frame compressed offset", "frame compressed size",
                 "frame uncompressed offset", "frame uncompressed size")


def encode_access(Py_ssize_t i, a):
    """The raw access payload of layer i."""
    cdef object what = i
    cdef str where = f"cannot encode access data of layer {i}"
    cdef object kind = a.kind
    cdef object code = _ACCESS_KIND_CODES.get(kind) if isinstance(kind, str) else None
    cdef _Buf out = _Buf()
    cdef uint64_t bits, coff, uoff
    cdef bytes window
    cdef object p, fr, field, v
    if code is None:
        raise ArchiveWriteError(f"{where}: unknown kind {kind!r}")
    out.uv(<uint64_t><int>code)
    out.uv(_u64(what, "span", a.span))
    out.uv(len(a.points))
    for p in a.points:
        if not isinstance(p, (tuple, list)) or len(p) != 4:
            raise ArchiveWriteError(f"{where}: point {p!r} is not a 4-tuple")
        coff = _u64(what, "point compressed offset", p[0])
        bits = _u64(what, "point bits", p[1])
        if bits > 7:
            raise ArchiveWriteError(f"{where}: point bits {p[1]!r} is not in 0..7")
        uoff = _u64(what, "point uncompressed offset", p[2])
        window = _blob(what, "point window", p[3])
        out.uv(coff)
        out.byte(<unsigned char>bits)
        out.uv(uoff)
        out.uv(len(window))
        out.put_bytes(window)
    out.uv(len(a.frames))
    for fr in a.frames:
        if not isinstance(fr, (tuple, list)) or len(fr) != 4:
            raise ArchiveWriteError(f"{where}: frame {fr!r} is not a 4-tuple")
        for field, v in zip(_FRAME_FIELDS, fr):
            out.uv(_u64(what, field, v))
    out.put_bytes(F.encode_spans(i, getattr(a, "spans", None)))
    return out.take()


def assemble_archive(metadata, blocks, access):
    """The complete .clip archive from node blocks already encoded (encode_blocks, or the
    merge's encode_tree), as bytes (reproducible)."""
    meta = F.canonical_json(metadata)
    # an access item may come already encoded (format.EncodedAccess, from index-layout)
    payloads = [a if isinstance(a, F.EncodedAccess) else encode_access(i, a)
                for i, a in enumerate(access)]
    return F.assemble(meta, sum(b[1] for b in blocks), blocks, payloads)


def encode_archive(metadata, nodes, access):
    """The complete .clip archive for this tree, as bytes (reproducible)."""
    # nodes may be a one-pass iterable: the count comes from the blocks
    return assemble_archive(metadata, encode_blocks(nodes), access)
