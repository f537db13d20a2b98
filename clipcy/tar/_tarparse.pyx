# cython: language_level=3
"""Compiled incremental tar header parser; clipcy/tar/_tarparse_py.py is its pure-Python twin.

Both give the same entries, exception classes and messages (tests/test_tar*.py hold them
together). The hot path -- a ustar/GNU header with no extended records -- runs on C pointers
from a bounded cursor (_bufread.pxd) and builds nothing but the TarEntry; data areas are hopped
over without touching them. Extended headers (PAX, GNU long names, sparse maps) are rarer and
take the same Python-level route as the twin.
"""

import binascii
from urllib.parse import unquote_to_bytes

cimport cython

from libc.string cimport memcpy, memcmp

from clipcy.tar._bufread cimport Cursor, cursor_init, take, skip_upto
from clipcy.errors import TarChecksumError, TarHeaderError, TarLimitError, TarTruncatedError

DEF_BLOCK = 512
BLOCK = 512

cdef long long INT64_MAX = 0x7FFFFFFFFFFFFFFF

cdef enum:
    S_HEADER = 0
    S_EXT = 1
    S_SPARSE_GNU = 2
    S_SPARSE_PAX = 3
    S_SKIP = 4
    S_END = 5

cdef unsigned char ZERO[512]
for _i in range(512):
    ZERO[_i] = 0

_XATTR_PREFIXES = (b"SCHILY.xattr.", b"LIBARCHIVE.xattr.")

cdef str T_FILE = "file"
cdef str T_DIR = "dir"
cdef str T_SYMLINK = "symlink"
cdef str T_HARDLINK = "hardlink"
cdef str T_CHAR = "char"
cdef str T_BLOCK = "block"
cdef str T_FIFO = "fifo"


cdef inline str _type_of(int tf):
    if tf == 0x31:
        return T_HARDLINK
    if tf == 0x32:
        return T_SYMLINK
    if tf == 0x33:
        return T_CHAR
    if tf == 0x34:
        return T_BLOCK
    if tf == 0x35 or tf == 0x44:  # 'D': GNU dumpdir, a dir whose data is skipped
        return T_DIR
    if tf == 0x36:
        return T_FIFO
    return T_FILE  # '0', '\0', '7', 'S' and unknown types (as GNU tar)


cdef inline bint _header_only(int tf) noexcept nogil:
    # no data follows these whatever the size field says (Go and CPython agree)
    return 0x31 <= tf <= 0x36


cdef inline long long _pad(long long n) noexcept nogil:
    return (n + 511) & ~(<long long>511)


cdef inline Py_ssize_t _cstrlen(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = 0
    while i < n and p[i] != 0:
        i += 1
    return i


cdef inline bytes _cstr(const unsigned char *p, Py_ssize_t n):
    return (<const char *>p)[:_cstrlen(p, n)]


cdef inline long long _num(const unsigned char *p, Py_ssize_t n, int *bad) noexcept nogil:
    """Octal (leading spaces/NULs, ended by space/NUL) or GNU base-256 (0x80 / 0xff)."""
    cdef unsigned long long v
    cdef unsigned char c0 = p[0]
    cdef unsigned char inv
    cdef Py_ssize_t i
    if c0 & 0x80:
        inv = 0xFF if (c0 & 0x40) else 0
        v = (c0 ^ inv) & 0x7F
        for i in range(1, n):
            if v > <unsigned long long>(INT64_MAX >> 8):
                bad[0] = 1
                return 0
            v = (v << 8) | <unsigned char>(p[i] ^ inv)
        if inv:
            return -(<long long>v) - 1
        return <long long>v
    v = 0
    i = 0
    while i < n and (p[i] == 0x20 or p[i] == 0):
        i += 1
    while i < n and 0x30 <= p[i] <= 0x37:
        v = (v << 3) | (p[i] - 0x30)
        i += 1
    if i < n and p[i] != 0x20 and p[i] != 0:
        bad[0] = 1
    return <long long>v


cdef inline bint _checksum_ok(const unsigned char *p) noexcept nogil:
    cdef int bad = 0
    cdef long long want = _num(p + 148, 8, &bad)
    cdef long long unsigned_sum = 8 * 0x20
    cdef long long high = 0
    cdef Py_ssize_t i
    if bad:
        return False
    for i in range(148):
        unsigned_sum += p[i]
    for i in range(156, 512):
        unsigned_sum += p[i]
    if want == unsigned_sum:
        return True
    # old writers summed signed chars: count the bytes >= 0x80 only when needed
    for i in range(148):
        high += p[i] >> 7
    for i in range(156, 512):
        high += p[i] >> 7
    return want == unsigned_sum - 256 * high


cdef inline long long _field(const unsigned char *p, Py_ssize_t n, str field,
                             long long off) except? -1:
    cdef int bad = 0
    cdef long long v = _num(p, n, &bad)
    if bad:
        raise TarHeaderError(f"bad {field} field in tar header at offset {off}")
    return v


def _pax_int(bytes value, str key, long long off):
    """A non-negative decimal (leading zeros allowed) that fits in 63 bits."""
    v = value.lstrip(b"0")
    if not value or (v and not v.isdigit()) or len(v) > 19 or int(v or b"0") > INT64_MAX:
        raise TarHeaderError(f"bad pax {key} value in tar header at offset {off}")
    return int(v or b"0")


def _pax_time(bytes value, str key, long long off):
    v = value[1:] if value[:1] == b"-" else value
    whole, dot, frac = v.partition(b".")
    if (not whole and not frac) or (whole and not whole.isdigit()) or (
            dot and frac and not frac.isdigit()) or len(whole) > 19:
        raise TarHeaderError(f"bad pax {key} value in tar header at offset {off}")
    return float(value.decode("ascii"))


def _parse_pax(bytes data, long long off):
    """'%d %s=%s\\n' records, in order (GNU.sparse 0.0 repeats keys)."""
    out = []
    cdef Py_ssize_t pos = 0, end = len(data), sp, length, eq
    while pos < end:
        if data[pos] == 0:  # NUL padding after the last record
            if data[pos:].count(0) != end - pos:
                raise TarHeaderError(f"malformed pax record in tar header at offset {off}")
            break
        sp = data.find(b" ", pos, min(end, pos + 20))
        digits = data[pos:sp] if sp > pos else b""
        if not digits or not digits.isdigit():
            raise TarHeaderError(f"malformed pax record in tar header at offset {off}")
        length = int(digits)
        if length <= sp - pos + 1 or pos + length > end or data[pos + length - 1] != 0x0A:
            raise TarHeaderError(f"malformed pax record in tar header at offset {off}")
        rec = data[sp + 1:pos + length - 1]
        eq = rec.find(b"=")
        if eq <= 0 or 0 in rec[:eq]:
            raise TarHeaderError(f"malformed pax record in tar header at offset {off}")
        out.append((rec[:eq], rec[eq + 1:]))
        pos += length
    return out


def _sparse_map_ok(list runs, long long realsize, long long stored):
    prev = 0
    total = 0
    for o, n in runs:
        if o < 0 or n < 0 or o < prev or o + n > realsize:
            return False
        prev = o + n
        total += n
    return total <= stored


def _b64(bytes value):
    v = value.rstrip(b"=")
    return binascii.a2b_base64(v + b"=" * (-len(v) % 4))


# no_gc: an entry holds only bytes, str, ints, a tuple of int pairs and a dict of bytes, so it
# cannot be part of a reference cycle; skipping GC tracking keeps gen-0 collections cheap
# when a layer yields 100 000 entries. freelist: entries are created and dropped in bulk.
@cython.no_gc
@cython.freelist(64)
cdef class TarEntry:
    """One archive member, with where its data lies in the uncompressed stream."""

    cdef readonly bytes name
    cdef readonly str type
    cdef readonly int mode
    cdef readonly long long uid
    cdef readonly long long gid
    cdef readonly str uname
    cdef readonly str gname
    cdef readonly long long size
    cdef readonly double mtime
    cdef readonly bytes linkname
    cdef readonly long long devmajor
    cdef readonly long long devminor
    cdef dict _xattrs                # None when there are none: no dict per plain entry
    cdef readonly long long offset
    cdef readonly object sparse
    cdef readonly long long header_offset

    def __init__(self, bytes name, str type, int mode, long long uid, long long gid, str uname,
                 str gname, long long size, double mtime, bytes linkname, long long devmajor,
                 long long devminor, dict xattrs, long long offset, sparse,
                 long long header_offset):
        self.name = name
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.uname = uname
        self.gname = gname
        self.size = size
        self.mtime = mtime
        self.linkname = linkname
        self.devmajor = devmajor
        self.devminor = devminor
        self._xattrs = xattrs or None
        self.offset = offset
        self.sparse = sparse
        self.header_offset = header_offset

    @property
    def xattrs(self):
        """Extended attributes: name -> value (a new empty dict when there are none)."""
        return self._xattrs if self._xattrs is not None else {}

    def as_tuple(self):
        """All fields in declaration order (xattrs as a sorted tuple): for differential tests."""
        return (self.name, self.type, self.mode, self.uid, self.gid, self.uname, self.gname,
                self.size, self.mtime, self.linkname, self.devmajor, self.devminor,
                tuple(sorted(self.xattrs.items())), self.offset, self.sparse,
                self.header_offset)

    def __eq__(self, other):
        as_tuple = getattr(other, "as_tuple", None)
        if as_tuple is None or not callable(as_tuple):
            return NotImplemented
        return bool(self.as_tuple() == as_tuple())

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    __hash__ = None

    def __repr__(self):
        return (f"TarEntry(name={self.name!r}, type={self.type!r}, mode=0o{self.mode:o}, "
                f"uid={self.uid}, gid={self.gid}, size={self.size}, mtime={self.mtime!r}, "
                f"linkname={self.linkname!r}, offset={self.offset}, "
                f"header_offset={self.header_offset}, sparse={self.sparse!r})")


cdef class TarParser:
    """Incremental tar parser: feed() pieces of the uncompressed stream, get entries back."""

    cdef readonly Py_ssize_t max_header
    cdef readonly Py_ssize_t max_path
    cdef readonly Py_ssize_t max_link
    cdef readonly Py_ssize_t max_depth
    cdef readonly Py_ssize_t max_xattrs
    cdef readonly Py_ssize_t max_xattr_size
    cdef Py_ssize_t _name_guard
    cdef readonly long long offset
    cdef int _state
    cdef unsigned char _blk[512]     # a header block spanning pieces
    cdef Py_ssize_t _blklen
    cdef bytearray _part             # extended header data / sparse blocks being collected
    cdef Py_ssize_t _need
    cdef long long _skip
    cdef int _ext_kind
    cdef long long _ext_size
    cdef long long _ext_off
    cdef long long _ext_total        # extended header bytes collected for the pending entry
    cdef long long _hdr_off
    cdef dict _pax
    cdef list _pax_list
    cdef dict _globals
    cdef object _longname
    cdef object _longlink
    cdef TarEntry _pending
    cdef list _runs
    cdef long long _stored
    cdef long long _sparse_blocks
    cdef bytearray _map
    cdef dict _names                 # owner name bytes -> str cache

    def __init__(self, Py_ssize_t max_header=1 << 20, Py_ssize_t max_path=4096,
                 Py_ssize_t max_link=4096, Py_ssize_t max_depth=1024,
                 Py_ssize_t max_xattrs=1024, Py_ssize_t max_xattr_size=65536):
        # limits (clipcy/limits.py names them path_length, link_length, path_depth...)
        self.max_header = max_header
        self.max_path = max_path
        self.max_link = max_link
        self.max_depth = max_depth
        self.max_xattrs = max_xattrs
        self.max_xattr_size = max_xattr_size
        self._name_guard = min(max_path, max_depth)
        self.offset = 0
        self._state = S_HEADER
        self._blklen = 0
        self._part = bytearray()
        self._need = 512
        self._skip = 0
        self._ext_kind = 0
        self._ext_size = 0
        self._ext_off = 0
        self._ext_total = 0
        self._hdr_off = -1
        self._pax = {}
        self._pax_list = []
        self._globals = {}
        self._longname = None
        self._longlink = None
        self._pending = None
        self._runs = []
        self._stored = 0
        self._sparse_blocks = 0
        self._map = bytearray()
        self._names = {}

    def feed(self, buf):
        """Parse the next piece; returns the entries whose headers completed in it."""
        cdef const unsigned char[::1] mv = buf
        cdef Cursor cur
        cdef const unsigned char *blk
        cdef Py_ssize_t n
        cdef list out = []
        cdef object ent
        if mv.shape[0] == 0:
            return out
        cursor_init(&cur, &mv[0], mv.shape[0], self.offset)
        try:
            while cur.left > 0:
                if self._state == S_SKIP:
                    self._skip -= skip_upto(&cur, self._skip)
                    if self._skip == 0:
                        self._state = S_HEADER
                        self._need = 512
                    continue
                if self._state == S_END:
                    skip_upto(&cur, cur.left)
                    break
                if self._state == S_HEADER:
                    if self._blklen == 0 and cur.left >= 512:
                        blk = take(&cur, 512)
                    else:
                        n = 512 - self._blklen
                        if n > cur.left:
                            n = cur.left
                        memcpy(&self._blk[self._blklen], take(&cur, n), n)
                        self._blklen += n
                        if self._blklen < 512:
                            continue
                        self._blklen = 0
                        blk = self._blk
                    self.offset = cur.pos
                    ent = self._header(blk, cur.pos - 512)
                    if ent is not None:
                        out.append(ent)
                    continue
                # extended header data and sparse blocks: collected in a bytearray
                n = self._need - len(self._part)
                if n > cur.left:
                    n = cur.left
                self._part += (<const char *>take(&cur, n))[:n]
                if len(self._part) < self._need:
                    continue
                chunk = bytes(self._part)
                self._part = bytearray()
                self.offset = cur.pos
                ent = self._dispatch(chunk, cur.pos - self._need)
                if ent is not None:
                    out.append(ent)
        finally:
            self.offset = cur.pos
        return out

    def close(self):
        """Raise TarTruncatedError when the stream ended inside a header or data."""
        cdef Py_ssize_t have
        if self._state == S_END:
            return
        if self._state == S_SKIP:
            raise TarTruncatedError(
                f"truncated tar data at offset {self.offset}: {self._skip} bytes missing")
        if self._state == S_HEADER:
            have = self._blklen
            if have:
                raise TarTruncatedError(
                    f"truncated tar header at offset {self.offset - have}: {have} of 512 bytes")
            return  # EOF at a block boundary: a missing end marker is accepted (GNU tar)
        have = len(self._part)
        raise TarTruncatedError(f"truncated tar extended header at offset "
                                f"{self.offset - have}: {have} of {self._need} bytes")

    # -- states ---------------------------------------------------------------------------
    cdef object _dispatch(self, bytes chunk, long long start):
        if self._state == S_EXT:
            self._ext_done(chunk)
            self._state = S_HEADER
            self._need = 512
            return None
        if self._state == S_SPARSE_GNU:
            return self._sparse_gnu_block(chunk, start)
        return self._sparse_pax_block(chunk, start)

    cdef object _header(self, const unsigned char *blk, long long off):
        cdef int tf
        cdef long long size, total
        if memcmp(blk, ZERO, 512) == 0:
            # GNU tar and CPython stop at the first zero block (GNU warns about a lone
            # one); the second zero block, padding or anything after it is ignored
            self._state = S_END
            return None
        if not _checksum_ok(blk):
            raise TarChecksumError(f"bad tar header checksum at offset {off}")
        tf = blk[156]
        if self._hdr_off < 0 and tf != 0x67:  # a global header belongs to no entry
            self._hdr_off = off
        size = _field(blk + 124, 12, "size", off)
        if size < 0:
            raise TarHeaderError(f"negative size in tar header at offset {off}")
        if tf == 0x78 or tf == 0x67 or tf == 0x4C or tf == 0x4B or tf == 0x58:
            # all extended data of one entry counts (many small 'x' headers add up)
            total = size if tf == 0x67 else self._ext_total + size
            if total > self.max_header:
                raise TarLimitError(f"tar extended header of {total} bytes at offset {off} "
                                    f"exceeds the limit pax_header={self.max_header}")
            if tf != 0x67:
                self._ext_total = total
            self._ext_kind = tf
            self._ext_size = size
            self._ext_off = off
            if size == 0:
                self._ext_done(b"")
                return None
            self._state = S_EXT
            self._need = <Py_ssize_t>_pad(size)
            return None
        return self._member(blk, off, tf, size)

    cdef void _ext_done(self, bytes data) except *:
        data = data[:self._ext_size]
        kind = self._ext_kind
        if kind == 0x4C:
            self._longname = data[:data.find(b"\x00")] if b"\x00" in data else data
        elif kind == 0x4B:
            self._longlink = data[:data.find(b"\x00")] if b"\x00" in data else data
        else:
            recs = _parse_pax(data, self._ext_off)
            if kind == 0x67:
                for k, v in recs:
                    if v or k.startswith(_XATTR_PREFIXES):
                        self._globals[k] = v
                    else:
                        self._globals.pop(k, None)
                gsize = sum(len(k) + len(v) for k, v in self._globals.items())
                if gsize > self.max_header:  # global records accumulate: bound them too
                    raise TarLimitError(
                        f"tar extended header of {gsize} bytes at offset {self._ext_off} "
                        f"exceeds the limit pax_header={self.max_header}")
            else:
                # a second 'x' header replaces the first (GNU tar, bsdtar, Go)
                self._pax = dict(recs)
                self._pax_list = recs

    cdef object _member(self, const unsigned char *blk, long long off, int tf, long long size):
        cdef bint posix = memcmp(blk + 257, b"ustar\x00", 6) == 0
        cdef bint gnu = memcmp(blk + 257, b"ustar  \x00", 8) == 0
        cdef bytes name = _cstr(blk, 100)
        cdef bytes prefix
        cdef bytes linkname = _cstr(blk + 157, 100)
        cdef int mode = <int>(_field(blk + 100, 8, "mode", off) & 0o7777)
        cdef long long uid = _field(blk + 108, 8, "uid", off)
        cdef long long gid = _field(blk + 116, 8, "gid", off)
        cdef double mtime = <double>_field(blk + 136, 12, "mtime", off)
        cdef long long devmajor = 0, devminor = 0
        cdef long long realsize = size
        cdef bytes uname, gname
        cdef str etype
        cdef object sparse = None
        cdef bint sparse10 = False
        cdef long long data
        cdef TarEntry e
        if posix:
            # star puts atime/ctime after a 131-byte prefix and "tar\0" at the end
            if memcmp(blk + 508, b"tar\x00", 4) == 0:
                prefix = _cstr(blk + 345, 131)
            else:
                prefix = _cstr(blk + 345, 155)
            if prefix:
                name = prefix + b"/" + name
        if posix or gnu:
            uname = _cstr(blk + 265, 32)
            gname = _cstr(blk + 297, 32)
            devmajor = _field(blk + 329, 8, "devmajor", off)
            devminor = _field(blk + 337, 8, "devminor", off)
        else:
            uname = gname = b""
        if tf == 0 and name.endswith(b"/"):  # pre-POSIX archives mark dirs by a slash
            tf = 0x35
        etype = _type_of(tf)
        if tf == 0x53:  # 'S' old GNU sparse
            sparse = self._gnu_slots(blk, 386, 4, off)
            realsize = _field(blk + 483, 12, "realsize", off)

        xattrs = None
        if self._globals or self._pax:
            xattrs = {}
            (name, linkname, size, realsize, uid, gid, uname, gname, mtime, devmajor,
             devminor, sparse, sparse10, etype) = self._apply_pax(
                xattrs, name, linkname, size, realsize, uid, gid, uname, gname, mtime,
                devmajor, devminor, sparse, etype)
        if self._longname is not None:
            name = self._longname
        if self._longlink is not None:
            linkname = self._longlink
        if etype is T_DIR and len(name) > 1 and name[len(name) - 1] == 0x2F:
            stripped = name.rstrip(b"/")
            if stripped:
                name = stripped
        if len(name) > self._name_guard or len(linkname) > self.max_link or xattrs:
            self._check_limits(name, linkname, xattrs, self._hdr_off)
        data = 0 if _header_only(tf) else size

        e = TarEntry.__new__(TarEntry)
        e.name = name
        e.type = etype
        e.mode = mode
        e.uid = uid
        e.gid = gid
        e.uname = self._owner_name(uname)
        e.gname = self._owner_name(gname)
        e.size = realsize if etype is T_FILE else 0
        e.mtime = mtime
        e.linkname = linkname
        e.devmajor = devmajor
        e.devminor = devminor
        e._xattrs = xattrs or None
        e.header_offset = self._hdr_off
        self._hdr_off = -1
        self._ext_total = 0
        if self._pax:
            self._pax = {}
            self._pax_list = []
        self._longname = self._longlink = None
        self._stored = data
        if sparse is None and not sparse10:
            # the common case: hop over the data
            e.offset = off + 512
            e.sparse = None
            if data:
                self._state = S_SKIP
                self._skip = _pad(data)
            return e
        self._pending = e
        if sparse is not None:
            self._runs = sparse
            if tf == 0x53 and blk[482]:
                self._state = S_SPARSE_GNU
                self._need = 512
                self._sparse_blocks = 0
                return None
        if sparse10:
            self._runs = []
            self._state = S_SPARSE_PAX
            self._need = 512
            self._sparse_blocks = 0
            self._map = bytearray()
            return None
        return self._emit(off + 512, 0)

    cdef int _check_limits(self, bytes name, bytes linkname, dict xattrs,
                           long long off) except -1:
        """The entry limits; the pure twin raises the same messages."""
        cdef Py_ssize_t depth
        if len(name) > self.max_path:
            raise TarLimitError(f"tar entry name of {len(name)} bytes at offset {off} "
                                f"exceeds the limit path_length={self.max_path}")
        if len(linkname) > self.max_link:
            raise TarLimitError(f"tar link target of {len(linkname)} bytes at offset {off} "
                                f"exceeds the limit link_length={self.max_link}")
        if len(name) > self.max_depth:
            depth = sum([1 for part in name.split(b"/") if part not in (b"", b".")])
            if depth > self.max_depth:
                raise TarLimitError(f"tar entry name of {depth} components at offset {off} "
                                    f"exceeds the limit path_depth={self.max_depth}")
        if xattrs:
            if len(xattrs) > self.max_xattrs:
                raise TarLimitError(f"tar entry with {len(xattrs)} xattrs at offset {off} "
                                    f"exceeds the limit xattrs_per_entry={self.max_xattrs}")
            for value in xattrs.values():
                if len(value) > self.max_xattr_size:
                    raise TarLimitError(
                        f"tar xattr value of {len(value)} bytes at offset {off} "
                        f"exceeds the limit xattr_size={self.max_xattr_size}")
        return 0

    cdef tuple _apply_pax(self, dict xattrs, bytes name, bytes linkname, long long size,
                          long long realsize, long long uid, long long gid, bytes uname,
                          bytes gname, double mtime, long long devmajor, long long devminor,
                          object sparse, str etype):
        cdef bint sparse10 = False
        sparse_pax = None
        # local records apply as given; an empty one "deletes" the field (POSIX): an
        # empty string for names, an error for numbers (as CPython and Go resp.)
        eff = dict(self._globals)
        eff.update(self._pax)
        poff = self._ext_off
        for k, v in eff.items():
            if k == b"path":
                if 0 in v:
                    raise TarHeaderError(f"bad pax path value in tar header at offset {poff}")
                name = v
            elif k == b"linkpath":
                if 0 in v:
                    raise TarHeaderError(
                        f"bad pax linkpath value in tar header at offset {poff}")
                linkname = v
            elif k == b"size":
                size = _pax_int(v, "size", poff)
                realsize = size
            elif k == b"uid":
                uid = _pax_int(v, "uid", poff)
            elif k == b"gid":
                gid = _pax_int(v, "gid", poff)
            elif k == b"uname":
                if 0 in v:
                    raise TarHeaderError(f"bad pax uname value in tar header at offset {poff}")
                uname = v
            elif k == b"gname":
                if 0 in v:
                    raise TarHeaderError(f"bad pax gname value in tar header at offset {poff}")
                gname = v
            elif k == b"mtime":
                mtime = _pax_time(v, "mtime", poff)
            elif k == b"SCHILY.devmajor":
                devmajor = _pax_int(v, "SCHILY.devmajor", poff)
            elif k == b"SCHILY.devminor":
                devminor = _pax_int(v, "SCHILY.devminor", poff)
            elif k.startswith(b"SCHILY.xattr."):
                xattrs[k[13:].decode("utf-8", "surrogateescape")] = v
            elif k.startswith(b"LIBARCHIVE.xattr."):
                try:
                    xname = unquote_to_bytes(k[17:]).decode("utf-8", "surrogateescape")
                    xattrs[xname] = _b64(v)
                except (binascii.Error, ValueError):
                    raise TarHeaderError(
                        f"bad pax LIBARCHIVE.xattr value in tar header at offset {poff}"
                    ) from None
        if b"GNU.sparse.major" in eff or b"GNU.sparse.minor" in eff:
            major = eff.get(b"GNU.sparse.major", b"")
            minor = eff.get(b"GNU.sparse.minor", b"")
            if major == b"1" and minor == b"0":
                sparse10 = True
            elif not (major == b"0" and minor in (b"0", b"1")):
                raise TarHeaderError(
                    f"bad pax GNU.sparse.major value in tar header at offset {poff}")
        if b"GNU.sparse.map" in eff and not sparse10:
            fields = eff[b"GNU.sparse.map"].split(b",")
            if len(fields) % 2:
                raise TarHeaderError(f"bad sparse map in tar header at offset {poff}")
            nums = [_pax_int(f, "GNU.sparse.map", poff) for f in fields]
            sparse_pax = list(zip(nums[0::2], nums[1::2]))
        elif any(k == b"GNU.sparse.offset" for k, _ in self._pax_list) and not sparse10:
            sparse_pax = []
            cur = -1
            for k, v in self._pax_list:
                if k == b"GNU.sparse.offset":
                    if cur >= 0:
                        raise TarHeaderError(f"bad sparse map in tar header at offset {poff}")
                    cur = _pax_int(v, "GNU.sparse.offset", poff)
                elif k == b"GNU.sparse.numbytes":
                    if cur < 0:
                        raise TarHeaderError(f"bad sparse map in tar header at offset {poff}")
                    sparse_pax.append((cur, _pax_int(v, "GNU.sparse.numbytes", poff)))
                    cur = -1
            if cur >= 0:
                raise TarHeaderError(f"bad sparse map in tar header at offset {poff}")
        if sparse10 or sparse_pax is not None:
            if b"GNU.sparse.name" in eff:
                name = eff[b"GNU.sparse.name"]
            rs = eff.get(b"GNU.sparse.realsize", eff.get(b"GNU.sparse.size"))
            realsize = size if rs is None else _pax_int(rs, "GNU.sparse.realsize", poff)
            if sparse_pax is not None:
                nb = eff.get(b"GNU.sparse.numblocks")
                if nb is not None and _pax_int(nb, "GNU.sparse.numblocks", poff) != len(
                        sparse_pax):
                    raise TarHeaderError(f"bad sparse map in tar header at offset {poff}")
                sparse = sparse_pax
            etype = T_FILE
        return (name, linkname, size, realsize, uid, gid, uname, gname, mtime, devmajor,
                devminor, sparse, sparse10, etype)

    cdef str _owner_name(self, bytes raw):
        # most layers have one or two owners: decode each name once
        cdef object s
        if not raw:
            return ""
        s = self._names.get(raw)
        if s is None:
            s = raw.decode("utf-8", "surrogateescape")
            if len(self._names) < 256:
                self._names[raw] = s
        return <str>s

    cdef list _gnu_slots(self, const unsigned char *blk, int at, int count, long long off):
        cdef list runs = []
        cdef int i, p
        for i in range(count):
            p = at + 24 * i
            if blk[p] == 0:
                break
            runs.append((_field(blk + p, 12, "sparse offset", off),
                         _field(blk + p + 12, 12, "sparse numbytes", off)))
        return runs

    cdef int _more_blocks(self, long long off) except -1:
        self._sparse_blocks += 1
        if self._sparse_blocks * 512 > self.max_header:
            raise TarLimitError(f"tar extended header of {self._sparse_blocks * 512} bytes at "
                                f"offset {off} exceeds the limit pax_header={self.max_header}")
        return 0

    cdef object _sparse_gnu_block(self, bytes blk, long long off):
        self._more_blocks(off)
        self._runs.extend(self._gnu_slots(blk, 0, 21, off))
        if blk[504]:
            return None
        return self._emit(self.offset, 0)

    cdef object _sparse_pax_block(self, bytes blk, long long off):
        cdef Py_ssize_t pos = 0, nl
        self._more_blocks(off)
        self._map += blk
        if len(self._map) > _pad(self._stored):  # the map runs past the entry's data
            raise TarHeaderError(f"bad sparse map in tar header at offset {off}")
        # decimal numbers, each ended by '\n': count, then offset/length pairs
        nums = []
        m = self._map
        while True:
            nl = m.find(b"\n", pos)
            if nl < 0:
                if len(m) - pos > 20:
                    raise TarHeaderError(f"bad sparse map in tar header at offset {off}")
                return None  # need another block
            nums.append(_pax_int(bytes(m[pos:nl]), "sparse map", off))
            pos = nl + 1
            if len(nums) == 2 * nums[0] + 1:
                break
        self._runs = list(zip(nums[1::2], nums[2::2]))
        used = len(m)
        if used > self._stored:
            raise TarHeaderError(f"bad sparse map in tar header at offset {off}")
        return self._emit(self.offset, used)

    cdef TarEntry _emit(self, long long data_off, long long used):
        cdef TarEntry e = self._pending
        cdef long long stored = self._stored - used
        cdef long long skip
        self._pending = None
        if not _sparse_map_ok(self._runs, e.size, stored):
            raise TarHeaderError(f"bad sparse map in tar header at offset {e.header_offset}")
        e.sparse = tuple(self._runs)
        e.offset = data_off
        self._runs = []
        skip = _pad(self._stored) - used
        if skip:
            self._state = S_SKIP
            self._skip = skip
        else:
            self._state = S_HEADER
            self._need = 512
        return e


def iter_entries(data, Py_ssize_t max_header=1 << 20, **limits):
    """Parse a whole in-memory stream (for tests and tools)."""
    p = TarParser(max_header, **limits)
    yield from p.feed(data)
    p.close()


__all__ = ["TarEntry", "TarParser", "iter_entries", "BLOCK"]
