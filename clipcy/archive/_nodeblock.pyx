# cython: language_level=3
"""Compiled node block decoder (docs/FORMAT.md "Node records"), twin of clipcy.archive._nodeblock_py.

NodeBlock validates a whole block once, like the twin's decode_block, and keeps only the raw
records, the full paths in one buffer and a 32-byte state per record (where its fields start
and the block's delta state before it): about a third of the twin's tuples. record(i) decodes
one record on demand (~1 us); bisect_left() compares paths with memcmp. Same results, same
Corrupt class and messages as the twin (tests/test_nodeblock.py checks both).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcmp, memcpy

from clipcy.archive cimport record as R
from clipcy.archive.format cimport (
    F_DATA, F_DEV, F_DIGEST, F_LINK, F_NLINK, F_NSEC, F_SIZE, F_SPARSE, F_XATTR,
    KNOWN_RECORD_FLAGS, TYPE_MASK,
)

from clipcy.archive import format as F
from clipcy.archive._nodeblock_py import Corrupt

__all__ = ["Corrupt", "NodeBlock", "decode_block"]

cdef object _TYPE_NAMES = tuple(F.TYPE_NAMES[i] for i in range(6))
cdef uint64_t _SIGN = 1ULL << 63


cdef struct State:
    Py_ssize_t pos  # offset of the record's flags field
    uint64_t ino  # the block's delta state before the record
    uint64_t mtime
    uint64_t data_end


cdef struct Cur:
    const unsigned char *p
    Py_ssize_t n
    Py_ssize_t pos


cdef int _past_end(Cur *c) except -1:
    raise Corrupt(f"records run past the end of the block ({c.n} bytes)")


cdef inline int _uv(Cur *c, uint64_t *out) except -1:
    """An unsigned LEB128 varint, with the twin's checks in the twin's order."""
    cdef Py_ssize_t pos = c.pos
    cdef uint64_t v, b
    cdef int shift
    if pos >= c.n:
        return _past_end(c)
    b = c.p[pos]
    if b < 0x80:
        out[0] = b
        c.pos = pos + 1
        return 0
    v = b & 0x7F
    shift = 7
    while True:
        pos += 1
        if pos >= c.n:
            return _past_end(c)
        b = c.p[pos]
        if shift == 63 and (b & 0x7F) > 1:
            if b >= 0x80:
                raise Corrupt(f"varint longer than 10 bytes at block offset {pos}")
            raise Corrupt(f"varint exceeds 64 bits at block offset {pos}")
        v |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise Corrupt(f"varint longer than 10 bytes at block offset {pos}")
    out[0] = v
    c.pos = pos + 1
    return 0


cdef inline Py_ssize_t _take(Cur *c, uint64_t n) except -1:
    """Start of an n-byte field at the cursor (consumed)."""
    cdef Py_ssize_t start = c.pos
    if n > <uint64_t>(c.n - start):
        raise Corrupt(f"field of {n} bytes runs past the end at offset {start}")
    c.pos = start + <Py_ssize_t>n
    return start


cdef inline object _bytes(Cur *c, Py_ssize_t start):
    return PyBytes_FromStringAndSize(<const char *>c.p + start, c.pos - start)


cdef inline int64_t _signed(uint64_t v) noexcept:
    return <int64_t>v


cdef inline uint64_t _unzig(uint64_t z) noexcept:
    return (z >> 1) ^ (0 - (z & 1))


cdef class NodeBlock:
    """A validated node block: path(i), record(i), bisect_left(key), count, nbytes, flags
    (every record's flags or-ed: F_XATTR set when some record has xattrs)."""

    cdef bytes _raw
    cdef char *_paths
    cdef Py_ssize_t *_poff
    cdef State *_st
    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t nbytes
    cdef readonly unsigned long long flags

    def __cinit__(self) -> None:
        self._paths = NULL
        self._poff = NULL
        self._st = NULL

    def __dealloc__(self) -> None:
        PyMem_Free(self._paths)
        PyMem_Free(self._poff)
        PyMem_Free(self._st)

    def __init__(self, raw, Py_ssize_t count, bytes first) -> None:
        self._raw = raw if type(raw) is bytes else bytes(raw)
        self._validate(count, first)

    cdef int _validate(self, Py_ssize_t count, bytes first) except -1:
        cdef Cur c
        c.p = <const unsigned char *>PyBytes_AS_STRING(self._raw)
        c.n = PyBytes_GET_SIZE(self._raw)
        c.pos = 0
        cdef Py_ssize_t cap = 4096, used = 0, prev_off = 0, prev_len = 0, start, i, _j, _k
        cdef uint64_t shared, n, flags, z, v, nsec, size, ino = 0, mtime = 0, data_end = 0
        cdef uint64_t offset, d
        cdef Py_ssize_t plen, m
        cdef int cmp
        # bounded by the records present: a count larger than the block fails before this
        cdef Py_ssize_t slots = max(0, min(count, c.n)) + 1
        self._poff = <Py_ssize_t *>PyMem_Malloc(slots * sizeof(Py_ssize_t))
        self._st = <State *>PyMem_Malloc(slots * sizeof(State))
        self._paths = <char *>PyMem_Malloc(cap)
        if self._poff == NULL or self._st == NULL or self._paths == NULL:
            raise MemoryError()
        self._poff[0] = 0
        for i in range(count):
            if i >= c.n:  # every record takes at least one byte
                _past_end(&c)
            _uv(&c, &shared)
            if shared > <uint64_t>prev_len:
                raise Corrupt(f"shared prefix {shared} longer than the previous path")
            _uv(&c, &n)
            start = _take(&c, n)
            plen = <Py_ssize_t>shared + <Py_ssize_t>n
            if used + plen > cap:
                while used + plen > cap:
                    cap *= 2
                self._paths = <char *>_grow(self._paths, cap)
            # the previous path sits at prev_off (== used - prev_len): copy its prefix
            memcpy(self._paths + used, self._paths + prev_off, shared)
            memcpy(self._paths + used + shared, c.p + start, n)
            if i:
                m = min(plen, prev_len)
                cmp = memcmp(self._paths + used, self._paths + prev_off, m)
                if cmp < 0 or (cmp == 0 and plen <= prev_len):
                    path = PyBytes_FromStringAndSize(self._paths + used, plen)
                    raise Corrupt(f"path {path!r} out of order")
            elif plen != PyBytes_GET_SIZE(first) or memcmp(
                    self._paths, PyBytes_AS_STRING(first), plen) != 0:
                path = PyBytes_FromStringAndSize(self._paths + used, plen)
                raise Corrupt(f"first path {path!r} differs from the index ({first!r})")
            prev_off, prev_len = used, plen
            used += plen
            self._poff[i + 1] = used
            self._st[i].pos = c.pos
            self._st[i].ino = ino
            self._st[i].mtime = mtime
            self._st[i].data_end = data_end
            _uv(&c, &flags)
            if flags & ~<uint64_t>KNOWN_RECORD_FLAGS or flags & TYPE_MASK > 5:
                raise Corrupt(f"bad record flags {<object>flags:#x} for {self._path(i)!r}")
            self.flags |= flags
            _uv(&c, &v)  # mode
            _uv(&c, &v)  # uid
            _uv(&c, &v)  # gid
            _uv(&c, &z)
            mtime += _unzig(z)
            if flags & F_NSEC:
                _uv(&c, &nsec)
                if not 0 < nsec < 1_000_000_000:
                    raise Corrupt(f"mtime_nsec {nsec} out of range for {self._path(i)!r}")
            _uv(&c, &z)
            if z & 1:
                d = (z >> 1) + 1
                if d > ino:
                    raise Corrupt(f"negative ino for {self._path(i)!r}")
                ino -= d
            else:
                ino += z >> 1
                if ino >> 63:
                    raise Corrupt(f"ino {ino} exceeds 2**63 - 1 for {self._path(i)!r}")
            if flags & F_NLINK:
                _uv(&c, &v)
            size = 0
            if flags & F_SIZE:
                _uv(&c, &size)
            if flags & F_DATA:
                _uv(&c, &v)
                _uv(&c, &z)
                offset = data_end + _unzig(z)
                data_end = offset + ((size + 511) & ~(<uint64_t>511)) + 512
            if flags & F_SPARSE:
                _uv(&c, &v)
                if v > <uint64_t>(c.n - c.pos):
                    raise Corrupt(f"sparse count {v} exceeds the block for {self._path(i)!r}")
                for _j in range(<Py_ssize_t>v):
                    _uv(&c, &z)
                    _uv(&c, &z)
            if flags & F_DIGEST:
                _uv(&c, &n)
                _take(&c, n)
            if flags & F_LINK:
                _uv(&c, &n)
                _take(&c, n)
            if flags & F_DEV:
                _uv(&c, &v)
                _uv(&c, &v)
            if flags & F_XATTR:
                _uv(&c, &v)
                if v > <uint64_t>(c.n - c.pos):
                    raise Corrupt(f"xattr count {v} exceeds the block for {self._path(i)!r}")
                for _k in range(<Py_ssize_t>v):
                    _uv(&c, &n)  # names: UTF-8 with surrogateescape decodes any bytes
                    _take(&c, n)
                    _uv(&c, &n)
                    _take(&c, n)
        if c.pos != c.n:
            raise Corrupt(f"{c.n - c.pos} stray bytes after {count} records")
        self.count = max(count, 0)
        if used:
            self._paths = <char *>_grow(self._paths, used)
        self.nbytes = (sizeof(NodeBlock) + 33 + c.n + used
                       + (count + 1) * (sizeof(Py_ssize_t) + sizeof(State)))
        return 0

    cdef inline bytes _path(self, Py_ssize_t i):
        return PyBytes_FromStringAndSize(self._paths + self._poff[i],
                                         self._poff[i + 1] - self._poff[i])

    def path(self, Py_ssize_t i) -> bytes:
        if not 0 <= i < self.count:
            raise IndexError(f"record {i} out of range ({self.count} in the block)")
        return self._path(i)

    def bisect_left(self, bytes key) -> int:
        """Index of the first path >= key (count when every path is smaller)."""
        cdef const char *k = PyBytes_AS_STRING(key)
        cdef Py_ssize_t kn = PyBytes_GET_SIZE(key), lo = 0, hi = self.count, mid, pn, m
        cdef int cmp
        while lo < hi:
            mid = (lo + hi) >> 1
            pn = self._poff[mid + 1] - self._poff[mid]
            m = pn if pn < kn else kn
            cmp = memcmp(self._paths + self._poff[mid], k, m)
            if cmp < 0 or (cmp == 0 and pn < kn):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def record(self, Py_ssize_t i) -> tuple:
        """The record's fields in Node order (the twin's decode_block tuples)."""
        if not 0 <= i < self.count:
            raise IndexError(f"record {i} out of range ({self.count} in the block)")
        cdef State *s = &self._st[i]
        cdef Cur c
        c.p = <const unsigned char *>PyBytes_AS_STRING(self._raw)
        c.n = PyBytes_GET_SIZE(self._raw)
        c.pos = s.pos
        cdef uint64_t flags, mode, uid, gid, z, nsec = 0, ino = s.ino, nlink = 1, size = 0
        cdef uint64_t layer = 0, offset = 0, dmaj = 0, dmin = 0, v, n, o
        cdef Py_ssize_t start, _j
        cdef object sparse = None, digest = b"", linkname = b"", xattrs = (), layer_o
        _uv(&c, &flags)
        _uv(&c, &mode)
        _uv(&c, &uid)
        _uv(&c, &gid)
        _uv(&c, &z)
        cdef int64_t mtime = _signed(s.mtime + _unzig(z))
        if flags & F_NSEC:
            _uv(&c, &nsec)
        _uv(&c, &z)
        if z & 1:
            ino -= (z >> 1) + 1
        else:
            ino += z >> 1
        if flags & F_NLINK:
            _uv(&c, &nlink)
        if flags & F_SIZE:
            _uv(&c, &size)
        if flags & F_DATA:
            _uv(&c, &layer)
            _uv(&c, &z)
            offset = s.data_end + _unzig(z)
        layer_o = -1 if layer == 0 else layer - 1
        if flags & F_SPARSE:
            _uv(&c, &v)
            runs = []
            for _j in range(<Py_ssize_t>v):
                _uv(&c, &o)
                _uv(&c, &n)
                runs.append((o, n))
            sparse = tuple(runs)
        if flags & F_DIGEST:
            _uv(&c, &n)
            start = _take(&c, n)
            digest = _bytes(&c, start)
        if flags & F_LINK:
            _uv(&c, &n)
            start = _take(&c, n)
            linkname = _bytes(&c, start)
        if flags & F_DEV:
            _uv(&c, &dmaj)
            _uv(&c, &dmin)
        if flags & F_XATTR:
            _uv(&c, &v)
            pairs = []
            for _j in range(<Py_ssize_t>v):
                _uv(&c, &n)
                start = _take(&c, n)
                name = PyUnicode_DecodeUTF8(<const char *>c.p + start, <Py_ssize_t>n,
                                            "surrogateescape")
                _uv(&c, &n)
                start = _take(&c, n)
                pairs.append((name, _bytes(&c, start)))
            xattrs = tuple(pairs)
        # in clipcy.archive.record's order (compiled_layout() below, tests/test_nodeblock.py)
        return (self._path(i), _TYPE_NAMES[flags & TYPE_MASK], mode, uid, gid, mtime, nsec,
                size, linkname, dmaj, dmin, xattrs, ino, nlink, layer_o, offset, sparse, digest)


cdef void *_grow(void *p, Py_ssize_t size) except NULL:
    cdef void *q = PyMem_Realloc(p, size)
    if q == NULL:
        raise MemoryError()
    return q


def decode_block(raw, Py_ssize_t count, bytes first) -> tuple:
    """Every record of a block: (paths, records), as the twin's decode_block."""
    cdef NodeBlock b = NodeBlock(raw, count, first)
    cdef Py_ssize_t i
    return [b._path(i) for i in range(b.count)], [b.record(i) for i in range(b.count)]


def compiled_layout() -> dict:
    """The record positions (record.pxd) and flag bits (format.pxd) compiled into this
    module, by name: tests/test_nodeblock.py checks them against record.py and format.py."""
    return {
        "PATH": R.PATH, "TYPE": R.TYPE, "MODE": R.MODE, "UID": R.UID, "GID": R.GID,
        "MTIME_SEC": R.MTIME_SEC, "MTIME_NSEC": R.MTIME_NSEC, "SIZE": R.SIZE,
        "LINKNAME": R.LINKNAME, "DEVMAJOR": R.DEVMAJOR, "DEVMINOR": R.DEVMINOR,
        "XATTRS": R.XATTRS, "INO": R.INO, "NLINK": R.NLINK, "LAYER": R.LAYER,
        "OFFSET": R.OFFSET, "SPARSE": R.SPARSE, "DIGEST": R.DIGEST,
        "TYPE_MASK": TYPE_MASK, "F_NSEC": F_NSEC, "F_NLINK": F_NLINK, "F_SIZE": F_SIZE,
        "F_DATA": F_DATA, "F_SPARSE": F_SPARSE, "F_DIGEST": F_DIGEST, "F_LINK": F_LINK,
        "F_DEV": F_DEV, "F_XATTR": F_XATTR, "KNOWN_RECORD_FLAGS": KNOWN_RECORD_FLAGS,
    }
