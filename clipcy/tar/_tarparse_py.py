"""Pure-Python twin of clipcy.tar._tarparse: an incremental tar header parser.

Same public names, results, exception classes and message text as the compiled module; the
differential tests hold the two together. See docs/COMPAT.md for the dialects understood.

The parser is a small state machine fed contiguous pieces of the *uncompressed* stream:

    HEADER  collect one 512-byte block (a header may span pieces)
    EXT     collect an extended header's data (PAX 'x'/'g', GNU 'L'/'K'), bounded by max_header
    SPARSE  collect old-GNU sparse extension blocks, or the PAX 1.0 sparse map in the data area
    SKIP    hop over an entry's data and padding without copying it
    END     after the end-of-archive marker: everything else is ignored
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from clipcy.errors import TarChecksumError, TarHeaderError, TarLimitError, TarTruncatedError

BLOCK = 512
INT64_MAX = (1 << 63) - 1

_HEADER, _EXT, _SPARSE_GNU, _SPARSE_PAX, _SKIP, _END = range(6)

# typeflag byte -> entry type; anything not listed is a regular file (as GNU tar)
_TYPES = {
    ord("1"): "hardlink",
    ord("2"): "symlink",
    ord("3"): "char",
    ord("4"): "block",
    ord("5"): "dir",
    ord("6"): "fifo",
    ord("D"): "dir",  # GNU dumpdir: a directory whose data (the dump list) is skipped
}
# types whose size field is ignored: no data follows them (Go and CPython agree)
_HEADER_ONLY = frozenset(b"123456")

_XATTR_PREFIXES = (b"SCHILY.xattr.", b"LIBARCHIVE.xattr.")
_TYPE_NAMES = ("file", "dir", "symlink", "hardlink", "char", "block", "fifo")


def _pad(n: int) -> int:
    return (n + BLOCK - 1) & ~(BLOCK - 1)


class TarEntry:
    """One archive member, with where its data lies in the uncompressed stream."""

    __slots__ = (
        "name",
        "type",
        "mode",
        "uid",
        "gid",
        "uname",
        "gname",
        "size",
        "mtime",
        "linkname",
        "devmajor",
        "devminor",
        "xattrs",
        "offset",
        "sparse",
        "header_offset",
    )

    name: bytes
    type: str
    mode: int
    uid: int
    gid: int
    uname: str
    gname: str
    size: int
    mtime: float
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]
    offset: int
    sparse: tuple[tuple[int, int], ...] | None
    header_offset: int

    def __init__(
        self,
        name: bytes,
        type: str,
        mode: int,
        uid: int,
        gid: int,
        uname: str,
        gname: str,
        size: int,
        mtime: float,
        linkname: bytes,
        devmajor: int,
        devminor: int,
        xattrs: dict[str, bytes],
        offset: int,
        sparse: tuple[tuple[int, int], ...] | None,
        header_offset: int,
    ) -> None:
        s = object.__setattr__
        s(self, "name", name)
        s(self, "type", type)
        s(self, "mode", mode)
        s(self, "uid", uid)
        s(self, "gid", gid)
        s(self, "uname", uname)
        s(self, "gname", gname)
        s(self, "size", size)
        s(self, "mtime", mtime)
        s(self, "linkname", linkname)
        s(self, "devmajor", devmajor)
        s(self, "devminor", devminor)
        s(self, "xattrs", xattrs)
        s(self, "offset", offset)
        s(self, "sparse", sparse)
        s(self, "header_offset", header_offset)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"TarEntry attribute {key!r} is read-only")

    def as_tuple(self) -> tuple[Any, ...]:
        """All fields in declaration order (xattrs as a sorted tuple): for differential tests."""
        return (
            self.name,
            self.type,
            self.mode,
            self.uid,
            self.gid,
            self.uname,
            self.gname,
            self.size,
            self.mtime,
            self.linkname,
            self.devmajor,
            self.devminor,
            tuple(sorted(self.xattrs.items())),
            self.offset,
            self.sparse,
            self.header_offset,
        )

    def __eq__(self, other: object) -> bool:
        as_tuple = getattr(other, "as_tuple", None)
        if as_tuple is None or not callable(as_tuple):
            return NotImplemented
        return bool(self.as_tuple() == as_tuple())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"TarEntry(name={self.name!r}, type={self.type!r}, mode=0o{self.mode:o}, "
            f"uid={self.uid}, gid={self.gid}, size={self.size}, mtime={self.mtime!r}, "
            f"linkname={self.linkname!r}, offset={self.offset}, "
            f"header_offset={self.header_offset}, sparse={self.sparse!r})"
        )


# -- field decoding ----------------------------------------------------------------------
def _cstr(b: bytes) -> bytes:
    i = b.find(0)
    return b if i < 0 else b[:i]


def _number(b: bytes, field: str, off: int) -> int:
    """Octal (leading spaces/NULs, ended by space/NUL) or GNU base-256 (0x80 / 0xff)."""
    c0 = b[0]
    if c0 & 0x80:
        # base-256, two's complement; bit 6 of the first byte is the sign
        neg = bool(c0 & 0x40)
        inv = 0xFF if neg else 0
        n = (c0 ^ inv) & 0x7F
        for c in b[1:]:
            if n > (INT64_MAX >> 8):
                raise TarHeaderError(f"bad {field} field in tar header at offset {off}")
            n = (n << 8) | (c ^ inv)
        return -n - 1 if neg else n
    i, end = 0, len(b)
    while i < end and b[i] in (0x20, 0):
        i += 1
    n = 0
    while i < end and 0x30 <= b[i] <= 0x37:
        n = (n << 3) | (b[i] - 0x30)
        i += 1
    if i < end and b[i] not in (0x20, 0):
        raise TarHeaderError(f"bad {field} field in tar header at offset {off}")
    return n


def _checksum_ok(block: bytes, off: int) -> bool:
    try:
        want = _number(block[148:156], "checksum", off)
    except TarHeaderError:
        return False
    unsigned = sum(block[:148]) + sum(block[156:]) + 8 * 0x20
    if want == unsigned:
        return True
    signed = unsigned - 256 * (
        sum(1 for c in block[:148] if c & 0x80) + sum(1 for c in block[156:] if c & 0x80)
    )
    return want == signed


def _pax_int(value: bytes, key: str, off: int) -> int:
    """A non-negative decimal (leading zeros allowed) that fits in 63 bits."""
    v = value.lstrip(b"0")
    if not value or (v and not v.isdigit()) or len(v) > 19 or int(v or b"0") > INT64_MAX:
        raise TarHeaderError(f"bad pax {key} value in tar header at offset {off}")
    return int(v or b"0")


def _pax_time(value: bytes, key: str, off: int) -> float:
    v = value[1:] if value[:1] == b"-" else value
    whole, dot, frac = v.partition(b".")
    if (
        (not whole and not frac)
        or (whole and not whole.isdigit())
        or (dot and frac and not frac.isdigit())
        or len(whole) > 19
    ):
        raise TarHeaderError(f"bad pax {key} value in tar header at offset {off}")
    return float(value.decode("ascii"))


def _parse_pax(data: bytes, off: int) -> list[tuple[bytes, bytes]]:
    """'%d %s=%s\\n' records, in order (GNU.sparse 0.0 repeats keys)."""
    out = []
    pos, end = 0, len(data)
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
        rec = data[sp + 1 : pos + length - 1]
        eq = rec.find(b"=")
        if eq <= 0 or 0 in rec[:eq]:
            raise TarHeaderError(f"malformed pax record in tar header at offset {off}")
        out.append((rec[:eq], rec[eq + 1 :]))
        pos += length
    return out


def _sparse_map_ok(runs: list[tuple[int, int]], realsize: int, stored: int) -> bool:
    prev = 0
    total = 0
    for o, n in runs:
        if o < 0 or n < 0 or o < prev or o + n > realsize:
            return False
        prev = o + n
        total += n
    return total <= stored


def _b64(value: bytes) -> bytes:
    v = value.rstrip(b"=")
    return binascii.a2b_base64(v + b"=" * (-len(v) % 4))


class TarParser:
    """Incremental tar parser: feed() pieces of the uncompressed stream, get entries back."""

    def __init__(
        self,
        max_header: int = 1 << 20,
        max_path: int = 4096,
        max_link: int = 4096,
        max_depth: int = 1024,
        max_xattrs: int = 1024,
        max_xattr_size: int = 65536,
    ) -> None:
        # limits (clipcy/limits.py names them path_length, link_length, path_depth...)
        self.max_header = max_header
        self.max_path = max_path
        self.max_link = max_link
        self.max_depth = max_depth
        self.max_xattrs = max_xattrs
        self.max_xattr_size = max_xattr_size
        self._name_guard = min(max_path, max_depth)
        self.offset = 0  # total bytes consumed
        self._state = _HEADER
        self._part = bytearray()  # partial header block / extended header data
        self._need = BLOCK  # bytes wanted in _part (HEADER, EXT, SPARSE states)
        self._skip = 0  # bytes left to hop over (SKIP)
        self._zero = False  # one zero block seen
        self._ext_kind = 0
        self._ext_size = 0  # logical size of the extended header being collected
        self._ext_off = 0
        self._ext_total = 0  # extended header bytes collected for the pending entry
        self._hdr_off = -1  # offset of the first header block of the pending entry
        self._pax: dict[bytes, bytes] = {}
        self._pax_list: list[tuple[bytes, bytes]] = []
        self._globals: dict[bytes, bytes] = {}
        self._longname: bytes | None = None
        self._longlink: bytes | None = None
        self._pending: dict[str, Any] = {}  # entry under construction (sparse states)
        self._runs: list[tuple[int, int]] = []
        self._stored = 0  # data bytes that follow the header (sparse: incl. a 1.0 map)
        self._sparse_blocks = 0
        self._map = bytearray()

    # -- driver ---------------------------------------------------------------------------
    def feed(self, buf: Any) -> list[TarEntry]:
        """Parse the next piece; returns the entries whose headers completed in it."""
        mv = memoryview(buf).cast("B")
        try:
            return self._feed(mv)
        finally:
            mv.release()  # keep no reference to the caller's buffer

    def _feed(self, mv: memoryview) -> list[TarEntry]:
        out: list[TarEntry] = []
        pos, end = 0, len(mv)
        while pos < end:
            st = self._state
            if st == _SKIP:
                n = min(self._skip, end - pos)
                self._skip -= n
                pos += n
                self.offset += n
                if not self._skip:
                    self._state = _HEADER
                    self._need = BLOCK
                continue
            if st == _END:
                self.offset += end - pos
                break
            # collecting states: fill _part up to _need, without copying whole blocks
            # when one lies entirely inside this piece
            if not self._part and end - pos >= self._need:
                chunk = bytes(mv[pos : pos + self._need])
                pos += self._need
            else:
                n = min(self._need - len(self._part), end - pos)
                self._part += mv[pos : pos + n]
                pos += n
                if len(self._part) < self._need:
                    self.offset += n
                    continue
                chunk = bytes(self._part)
                self._part.clear()
                self.offset += n - self._need  # balanced by += _need below
            start = self.offset
            self.offset += self._need
            ent = self._dispatch(chunk, start)
            if ent is not None:
                out.append(ent)
        return out

    def close(self) -> None:
        """Raise TarTruncatedError when the stream ended inside a header or data."""
        st = self._state
        if st == _END:
            return
        if st == _SKIP:
            raise TarTruncatedError(
                f"truncated tar data at offset {self.offset}: {self._skip} bytes missing"
            )
        have = len(self._part)
        if st == _HEADER:
            if have:
                raise TarTruncatedError(
                    f"truncated tar header at offset {self.offset - have}: {have} of 512 bytes"
                )
            return  # EOF at a block boundary: a missing end marker is accepted (GNU tar)
        start = self.offset - have
        raise TarTruncatedError(
            f"truncated tar extended header at offset {start}: {have} of {self._need} bytes"
        )

    # -- states ---------------------------------------------------------------------------
    def _dispatch(self, chunk: bytes, start: int) -> TarEntry | None:
        st = self._state
        if st == _HEADER:
            return self._header(chunk, start)
        if st == _EXT:
            self._ext_done(chunk)
            self._state = _HEADER
            self._need = BLOCK
            return None
        if st == _SPARSE_GNU:
            return self._sparse_gnu_block(chunk, start)
        return self._sparse_pax_block(chunk, start)

    def _header(self, blk: bytes, off: int) -> TarEntry | None:
        if blk.count(0) == BLOCK:
            # GNU tar and CPython stop at the first zero block (GNU warns about a lone
            # one); the second zero block, padding or anything after it is ignored
            self._state = _END
            return None
        if not _checksum_ok(blk, off):
            raise TarChecksumError(f"bad tar header checksum at offset {off}")
        tf = blk[156]
        if self._hdr_off < 0 and tf != 0x67:  # a global header belongs to no entry
            self._hdr_off = off
        size = _number(blk[124:136], "size", off)
        if size < 0:
            raise TarHeaderError(f"negative size in tar header at offset {off}")
        if tf in (0x78, 0x67, 0x4C, 0x4B, 0x58):  # 'x' 'g' 'L' 'K', Solaris 'X' (= 'x')
            # all extended data of one entry counts (many small 'x' headers add up)
            total = size if tf == 0x67 else self._ext_total + size
            if total > self.max_header:
                raise TarLimitError(
                    f"tar extended header of {total} bytes at offset {off} "
                    f"exceeds the limit pax_header={self.max_header}"
                )
            if tf != 0x67:
                self._ext_total = total
            self._ext_kind = tf
            self._ext_size = size
            self._ext_off = off
            if size == 0:
                self._ext_done(b"")
                return None
            self._state = _EXT
            self._need = _pad(size)
            return None
        return self._member(blk, off, tf, size)

    def _ext_done(self, data: bytes) -> None:
        data = data[: self._ext_size]
        kind = self._ext_kind
        if kind == 0x4C:
            self._longname = _cstr(data)
        elif kind == 0x4B:
            self._longlink = _cstr(data)
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
                        f"exceeds the limit pax_header={self.max_header}"
                    )
            else:
                # a second 'x' header replaces the first (GNU tar, bsdtar, Go)
                self._pax = dict(recs)
                self._pax_list = recs

    def _member(self, blk: bytes, off: int, tf: int, size: int) -> TarEntry | None:
        magic = blk[257:265]
        posix = magic[:6] == b"ustar\x00"
        gnu = magic == b"ustar  \x00"
        name = _cstr(blk[0:100])
        if posix:
            # star puts atime/ctime after a 131-byte prefix and "tar\0" at the end
            prefix = _cstr(blk[345:476] if blk[508:512] == b"tar\x00" else blk[345:500])
            if prefix:
                name = prefix + b"/" + name
        linkname = _cstr(blk[157:257])
        mode = _number(blk[100:108], "mode", off) & 0o7777
        uid = _number(blk[108:116], "uid", off)
        gid = _number(blk[116:124], "gid", off)
        mtime = float(_number(blk[136:148], "mtime", off))
        if posix or gnu:
            uname = _cstr(blk[265:297])
            gname = _cstr(blk[297:329])
            devmajor = _number(blk[329:337], "devmajor", off)
            devminor = _number(blk[337:345], "devminor", off)
        else:
            uname = gname = b""
            devmajor = devminor = 0
        if tf == 0 and name.endswith(b"/"):  # pre-POSIX archives mark dirs by a slash
            tf = 0x35
        etype = _TYPES.get(tf, "file")
        realsize = size
        sparse: list[tuple[int, int]] | None = None
        if tf == 0x53:  # 'S' old GNU sparse
            sparse = self._gnu_slots(blk, 386, 4, off)
            realsize = _number(blk[483:495], "realsize", off)

        # -- PAX records: globals first, then this entry's local ones ----------------------
        xattrs: dict[str, bytes] = {}
        pax = self._pax
        sparse_pax: list[tuple[int, int]] | None = None
        sparse10 = False
        if self._globals or pax:
            # local records apply as given; an empty one "deletes" the field (POSIX): an
            # empty string for names, an error for numbers (as CPython and Go resp.)
            eff = dict(self._globals)
            eff.update(pax)
            poff = self._ext_off
            for k, v in eff.items():
                if k == b"path":
                    if 0 in v:
                        raise TarHeaderError(f"bad pax path value in tar header at offset {poff}")
                    name = v
                elif k == b"linkpath":
                    if 0 in v:
                        raise TarHeaderError(
                            f"bad pax linkpath value in tar header at offset {poff}"
                        )
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
                        f"bad pax GNU.sparse.major value in tar header at offset {poff}"
                    )
            if b"GNU.sparse.map" in eff and not sparse10:
                fields = eff[b"GNU.sparse.map"].split(b",")
                if len(fields) % 2:
                    raise TarHeaderError(f"bad sparse map in tar header at offset {poff}")
                nums = [_pax_int(f, "GNU.sparse.map", poff) for f in fields]
                sparse_pax = list(zip(nums[0::2], nums[1::2], strict=False))
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
                        sparse_pax
                    ):
                        raise TarHeaderError(f"bad sparse map in tar header at offset {poff}")
                    sparse = sparse_pax
                etype = "file"
        if self._longname is not None:
            name = self._longname
        if self._longlink is not None:
            linkname = self._longlink

        if etype == "dir" and len(name) > 1:
            stripped = name.rstrip(b"/")
            if stripped:
                name = stripped
        if len(name) > self._name_guard or len(linkname) > self.max_link or xattrs:
            self._check_limits(name, linkname, xattrs, self._hdr_off)
        data = 0 if tf in _HEADER_ONLY else size
        ent = {
            "name": name,
            "type": etype,
            "mode": mode,
            "uid": uid,
            "gid": gid,
            "uname": uname.decode("utf-8", "surrogateescape"),
            "gname": gname.decode("utf-8", "surrogateescape"),
            "size": realsize if etype == "file" else 0,
            "mtime": mtime,
            "linkname": linkname,
            "devmajor": devmajor,
            "devminor": devminor,
            "xattrs": xattrs,
            "header_offset": self._hdr_off,
        }
        self._hdr_off = -1
        self._ext_total = 0
        self._pax = {}
        self._pax_list = []
        self._longname = self._longlink = None
        self._pending = ent
        self._stored = data
        if sparse is not None:
            self._runs = sparse
            if tf == 0x53 and blk[482]:
                self._state = _SPARSE_GNU
                self._need = BLOCK
                self._sparse_blocks = 0
                return None
        if sparse10:
            self._runs = []
            self._state = _SPARSE_PAX
            self._need = BLOCK
            self._sparse_blocks = 0
            self._map = bytearray()
            return None
        return self._emit(self.offset, 0, sparse is not None)

    def _check_limits(
        self, name: bytes, linkname: bytes, xattrs: dict[str, bytes], off: int
    ) -> None:
        """The entry limits; the compiled parser raises the same messages."""
        if len(name) > self.max_path:
            raise TarLimitError(
                f"tar entry name of {len(name)} bytes at offset {off} "
                f"exceeds the limit path_length={self.max_path}"
            )
        if len(linkname) > self.max_link:
            raise TarLimitError(
                f"tar link target of {len(linkname)} bytes at offset {off} "
                f"exceeds the limit link_length={self.max_link}"
            )
        if len(name) > self.max_depth:
            depth = sum(1 for part in name.split(b"/") if part not in (b"", b"."))
            if depth > self.max_depth:
                raise TarLimitError(
                    f"tar entry name of {depth} components at offset {off} "
                    f"exceeds the limit path_depth={self.max_depth}"
                )
        if len(xattrs) > self.max_xattrs:
            raise TarLimitError(
                f"tar entry with {len(xattrs)} xattrs at offset {off} "
                f"exceeds the limit xattrs_per_entry={self.max_xattrs}"
            )
        for value in xattrs.values():
            if len(value) > self.max_xattr_size:
                raise TarLimitError(
                    f"tar xattr value of {len(value)} bytes at offset {off} "
                    f"exceeds the limit xattr_size={self.max_xattr_size}"
                )

    def _gnu_slots(self, blk: bytes, at: int, count: int, off: int) -> list[tuple[int, int]]:
        runs = []
        for i in range(count):
            p = at + 24 * i
            if blk[p] == 0:
                break
            runs.append(
                (
                    _number(blk[p : p + 12], "sparse offset", off),
                    _number(blk[p + 12 : p + 24], "sparse numbytes", off),
                )
            )
        return runs

    def _more_blocks(self, off: int) -> None:
        self._sparse_blocks += 1
        if self._sparse_blocks * BLOCK > self.max_header:
            raise TarLimitError(
                f"tar extended header of {self._sparse_blocks * BLOCK} bytes at "
                f"offset {off} exceeds the limit pax_header={self.max_header}"
            )

    def _sparse_gnu_block(self, blk: bytes, off: int) -> TarEntry | None:
        self._more_blocks(off)
        self._runs.extend(self._gnu_slots(blk, 0, 21, off))
        if blk[504]:
            return None
        return self._emit(self.offset, 0, True)

    def _sparse_pax_block(self, blk: bytes, off: int) -> TarEntry | None:
        self._more_blocks(off)
        self._map += blk
        if len(self._map) > _pad(self._stored):  # the map runs past the entry's data
            raise TarHeaderError(f"bad sparse map in tar header at offset {off}")
        # decimal numbers, each ended by '\n': count, then offset/length pairs
        nums: list[int] = []
        pos = 0
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
        self._runs = list(zip(nums[1::2], nums[2::2], strict=False))
        used = len(m)
        if used > self._stored:
            raise TarHeaderError(f"bad sparse map in tar header at offset {off}")
        return self._emit(self.offset, used, True)

    def _emit(self, data_off: int, used: int, is_sparse: bool) -> TarEntry:
        f = self._pending
        self._pending = {}
        stored = self._stored - used
        if is_sparse:
            runs = self._runs
            if not _sparse_map_ok(runs, f["size"], stored):
                raise TarHeaderError(f"bad sparse map in tar header at offset {f['header_offset']}")
            f["sparse"] = tuple(runs)
        else:
            f["sparse"] = None
        f["offset"] = data_off
        self._runs = []
        skip = _pad(self._stored) - used
        if skip:
            self._state = _SKIP
            self._skip = skip
        else:
            self._state = _HEADER
            self._need = BLOCK
        return TarEntry(**f)


def iter_entries(data: Any, max_header: int = 1 << 20, **limits: int) -> Iterator[TarEntry]:
    """Parse a whole in-memory stream (for tests and tools)."""
    p = TarParser(max_header, **limits)
    yield from p.feed(data)
    p.close()


__all__ = ["TarEntry", "TarParser", "iter_entries", "BLOCK"]
