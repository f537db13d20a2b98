"""The tar parser (both twins) on fixtures made by real tools, errors, and walk_tar's streams."""

from __future__ import annotations

import gzip
import importlib
import io
import random
import struct
import tarfile
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import zstandard

from clipcy._select import PUREPYTHON
from clipcy.errors import (
    CompressionError,
    TarChecksumError,
    TarError,
    TarHeaderError,
    TarLimitError,
    TarTruncatedError,
)
from clipcy.tar import streams, tarparse

DATA = Path(__file__).resolve().parent / "data"
FIXTURES = sorted(p.name for p in DATA.glob("*.tar"))


@pytest.fixture(params=["cython", "python"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The compiled parser and its twin, imported directly (not through the selector)."""
    if request.param == "cython":
        if PUREPYTHON:
            pytest.skip("CLIPCY_PUREPYTHON is set")
        from clipcy.tar import _tarparse

        return _tarparse
    from clipcy.tar import _tarparse_py

    return _tarparse_py


def parse(
    impl: ModuleType,
    data: bytes,
    pieces: list[int] | None = None,
    max_header: int = 1 << 20,
    **limits: int,
) -> list[Any]:
    p = impl.TarParser(max_header, **limits)
    out: list[Any] = []
    if pieces is None:
        out += p.feed(data)
    else:
        pos = 0
        for n in pieces:
            out += p.feed(data[pos : pos + n])
            pos += n
        out += p.feed(data[pos:])
    p.close()
    assert p.offset == len(data)
    return out


def outcome(impl: ModuleType, data: bytes, **kw: Any) -> tuple[Any, ...]:
    """Entries, or (exception class name, message): for comparing twins on bad input."""
    try:
        return ("ok", [e.as_tuple() for e in parse(impl, data, **kw)])
    except TarError as e:
        return (type(e).__name__, str(e))


def content(data: bytes, e: Any) -> bytes:
    """A file's bytes, from the uncompressed stream (sparse: rebuilt from the map)."""
    if e.sparse is None:
        return data[e.offset : e.offset + e.size]
    out = bytearray(e.size)
    pos = e.offset
    for off, n in e.sparse:
        out[off : off + n] = data[pos : pos + n]
        pos += n
    return bytes(out)


_TF_TYPES = {
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.DIRTYPE: "dir",
    tarfile.FIFOTYPE: "fifo",
}


def tarfile_view(data: bytes) -> list[tuple[Any, ...]]:
    """What CPython's tarfile sees, in our terms (file content instead of offsets)."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tf:
        for m in tf:
            t = _TF_TYPES.get(m.type, "file")
            xattrs = {
                k[13:]: v.encode("utf-8", "surrogateescape")
                for k, v in m.pax_headers.items()
                if k.startswith("SCHILY.xattr.")
            }
            body = tf.extractfile(m).read() if t == "file" else b""  # type: ignore[union-attr]
            out.append(
                (
                    m.name.encode("utf-8", "surrogateescape"),
                    t,
                    m.mode,
                    m.uid,
                    m.gid,
                    m.uname,
                    m.gname,
                    m.size if t == "file" else 0,
                    float(m.mtime),
                    m.linkname.encode("utf-8", "surrogateescape"),
                    m.devmajor if t in ("char", "block") else 0,
                    m.devminor if t in ("char", "block") else 0,
                    xattrs,
                    body,
                )
            )
    return out


def our_view(data: bytes, entries: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            e.name,
            e.type,
            e.mode,
            e.uid,
            e.gid,
            e.uname,
            e.gname,
            e.size,
            e.mtime,
            e.linkname,
            e.devmajor if e.type in ("char", "block") else 0,
            e.devminor if e.type in ("char", "block") else 0,
            {k: v for k, v in e.xattrs.items()},
            content(data, e) if e.type == "file" else b"",
        )
        for e in entries
    ]


# -- fixtures made by GNU tar / bsdtar ---------------------------------------------------
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_matches_tarfile(impl: ModuleType, name: str) -> None:
    data = (DATA / name).read_bytes()
    entries = parse(impl, data)
    assert entries
    ours = our_view(data, entries)
    theirs = tarfile_view(data)
    if name.startswith("bsdtar-xattrs"):
        # tarfile only knows SCHILY.xattr.*; bsdtar writes both spellings, we decode both
        theirs = [t[:12] + (o[12],) + t[13:] for t, o in zip(theirs, ours, strict=True)]
    assert ours == theirs


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_random_pieces(impl: ModuleType, name: str) -> None:
    data = (DATA / name).read_bytes()
    whole = parse(impl, data)
    rnd = random.Random(name)
    for _ in range(3):
        pieces = [rnd.choice([1, 2, 7, 100, 511, 512, 513, 1500, 4096]) for _ in range(60)]
        assert parse(impl, data, pieces) == whole
    assert parse(impl, data, [1] * len(data)) == whole  # one byte at a time


def test_fixture_details(impl: ModuleType) -> None:
    fmts = {}
    for fmt in ("gnu", "oldgnu", "posix"):
        data = (DATA / f"fmt-{fmt}.tar").read_bytes()
        fmts[fmt] = [
            (e.name, e.type, e.mode, e.uid, e.size, e.mtime, e.linkname) for e in parse(impl, data)
        ]
    assert fmts["gnu"] == fmts["oldgnu"] == fmts["posix"]
    byname = {e[0]: e for e in fmts["gnu"]}
    assert byname[b"tree/empty.txt"][5] == -86400.0  # base-256 negative mtime (gnu)
    assert byname[b"tree/empty-dir"][1:3] == ("dir", 0o2750)  # trailing slash stripped
    hello = byname[b"tree/hello.txt"]  # --sort=name stores tree/hard first
    assert hello[1] == "hardlink" and hello[4] == 0 and hello[6] == b"tree/hard"
    assert byname[b"tree/sub/link"][1:] == (
        "symlink",
        0o777,
        1000,
        0,
        1700000000.0,
        b"../hello.txt",
    )
    assert byname[b"tree/fifo"][1] == "fifo"
    v7 = parse(impl, (DATA / "fmt-v7.tar").read_bytes())
    assert {e.uname for e in v7} == {""}  # v7 has no owner names
    big = parse(impl, (DATA / "biguid-gnu.tar").read_bytes())
    assert [e.uid for e in big] == [3000000]
    pax = parse(impl, (DATA / "biguid-posix.tar").read_bytes())  # pax uid record
    assert [(e.name, e.uid, e.size, e.header_offset) for e in pax] == [
        (b"tree/hello.txt", 3000000, 6, 0)
    ]
    assert pax[0].offset == 1536 and big[0].offset == 512


def test_sparse_fixtures_agree(impl: ModuleType) -> None:
    want = None
    for name in (
        "sparse-gnu.tar",
        "sparse-pax-0.0.tar",
        "sparse-pax-0.1.tar",
        "sparse-pax-1.0.tar",
    ):
        data = (DATA / name).read_bytes()
        (e,) = [e for e in parse(impl, data) if e.type == "file"]
        assert e.name == b"tree/holes.img" and e.size == 1 << 20
        assert e.sparse is not None and len(e.sparse) == 7  # 6 runs + GNU's final (size, 0)
        body = content(data, e)
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            assert body == tf.extractfile("tree/holes.img").read()  # type: ignore[union-attr]
        want = want or (e.sparse, body)
        assert (e.sparse, body) == want


def test_libarchive_xattrs(impl: ModuleType) -> None:
    data = (DATA / "bsdtar-xattrs.tar").read_bytes()
    assert b"LIBARCHIVE.xattr.user.binary=AP8Q/g" in data
    (f,) = [e for e in parse(impl, data) if e.name == b"tree/file"]
    assert f.xattrs == {"user.comment": b"hello world", "user.binary": b"\x00\xff\x10\xfe"}
    # only the LIBARCHIVE spelling, with a URL-encoded name and unpadded base64
    rec = b"LIBARCHIVE.xattr.user.a%20b%3D=AAEC"
    data = _pax_archive({"LIBARCHIVE.xattr.user.a%20b%3D": "AAEC"})
    assert rec in data
    (e,) = parse(impl, data)
    assert e.xattrs == {"user.a b=": b"\x00\x01\x02"}


def _pax_archive(
    pax: dict[str, str],
    name: str = "f",
    size: int = 3,
    fmt: int = tarfile.PAX_FORMAT,
    gpax: dict[str, str] | None = None,
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=gpax) as tf:
        ti = tarfile.TarInfo(name)
        ti.size = size
        ti.mtime = 1700000000
        ti.pax_headers = pax
        tf.addfile(ti, io.BytesIO(b"x" * size))
    return buf.getvalue()


def test_pax_records(impl: ModuleType) -> None:
    data = _pax_archive(
        {
            "mtime": "1700000000.75",
            "uid": "0000042",
            "path": "a/long/" + "p" * 300,
            "uname": "üser",
            "SCHILY.xattr.user.k": "v\x00w",
            "comment": "ignored",
        }
    )
    (e,) = parse(impl, data)
    assert e.mtime == 1700000000.75 and e.uid == 42 and e.uname == "üser"
    assert e.name == b"a/long/" + b"p" * 300 and e.xattrs == {"user.k": b"v\x00w"}
    assert e.header_offset == 0 and e.offset == data.index(b"xxx")
    # a global header applies to all following entries (as GNU tar and CPython)
    data = _pax_archive({}, gpax={"uname": "glob", "mtime": "5"})
    (e,) = parse(impl, data)
    assert (e.uname, e.mtime, e.header_offset) == ("glob", 5.0, 1024)


def test_end_of_archive(impl: ModuleType) -> None:
    data = _pax_archive({}, fmt=tarfile.USTAR_FORMAT)
    (e,) = parse(impl, data)
    end = 1024
    assert data[end:] == bytes(len(data) - end)
    # trailing garbage after the end marker is ignored, as is a missing marker
    assert parse(impl, data + b"garbage") == [e]
    assert parse(impl, data[:end]) == [e]
    assert parse(impl, data[: end + 512]) == [e]  # one zero block then EOF
    assert parse(impl, b"") == []


def test_errors(impl: ModuleType) -> None:
    data = bytearray(_pax_archive({}, fmt=tarfile.USTAR_FORMAT))
    bad = bytearray(data)
    bad[10] ^= 1
    with pytest.raises(TarChecksumError, match=r"^bad tar header checksum at offset 0$"):
        parse(impl, bytes(bad))
    with pytest.raises(
        TarTruncatedError, match=r"^truncated tar header at offset 0: 100 of 512 bytes$"
    ):
        parse(impl, bytes(data[:100]))
    with pytest.raises(
        TarTruncatedError, match=r"^truncated tar data at offset 514: 510 bytes missing$"
    ):
        parse(impl, bytes(data[:514]))
    # a non-octal size, and a negative base-256 size (checksum fixed up each time)
    for field, msg in ((b"12x45670000\x00", "bad size field"), (b"\xff" * 12, "negative size")):
        bad = bytearray(data)
        bad[124:136] = field
        _fix_checksum(bad, 0)
        with pytest.raises(TarHeaderError, match=f"^{msg} in tar header at offset 0$"):
            parse(impl, bytes(bad))
    # base-256 over 2**63-1
    bad = bytearray(data)
    bad[124:136] = b"\x80" + b"\x00" * 2 + b"\x80" + b"\x00" * 8
    _fix_checksum(bad, 0)
    with pytest.raises(TarHeaderError, match="^bad size field in tar header at offset 0$"):
        parse(impl, bytes(bad))


def _fix_checksum(b: bytearray, at: int) -> None:
    b[at + 148 : at + 156] = b" " * 8
    b[at + 148 : at + 156] = b"%06o\x00 " % sum(b[at : at + 512])


def test_pax_errors(impl: ModuleType) -> None:
    good = _pax_archive({"comment": "abc"})
    assert parse(impl, good)[0].name == b"f"
    for rec, exc, msg in (
        (b"15 mtime=x.5xx\n", TarHeaderError, "bad pax mtime value"),
        (b"16 comment=abc\n", TarHeaderError, "malformed pax record"),  # bad length
        (b"15 comment abc\n", TarHeaderError, "malformed pax record"),  # no '='
        (b"x5 comment=abc\n", TarHeaderError, "malformed pax record"),  # bad length digits
        (b"15 uid=-1.5xxx\n", TarHeaderError, "bad pax uid value"),
        (b"15 uid=9999999999999999999\n"[:15], TarHeaderError, "malformed pax record"),
        (b"15 path=ab\x00cde\n", TarHeaderError, "bad pax path value"),
    ):
        bad = bytearray(good)
        at = bad.index(b"15 comment=abc\n")
        bad[at : at + 15] = rec
        with pytest.raises(exc, match=f"^{msg} in tar header at offset 0$"):
            parse(impl, bytes(bad))
    big = _pax_archive({"comment": "c" * 5000})
    with pytest.raises(
        TarLimitError,
        match=r"^tar extended header of 5\d\d\d bytes at offset 0 "
        r"exceeds the limit pax_header=4096$",
    ):
        parse(impl, big, max_header=4096)
    long = _pax_archive({}, name="n" * 5000, fmt=tarfile.GNU_FORMAT)
    with pytest.raises(TarLimitError):
        parse(impl, long, max_header=4096)
    assert parse(impl, long, max_path=5000)[0].name == b"n" * 5000


def _limit_error(impl: ModuleType, data: bytes, **limits: int) -> str:
    with pytest.raises(TarLimitError) as info:
        parse(impl, data, **limits)
    return str(info.value)


def test_entry_limits_same_message_in_both_parsers(impl: ModuleType) -> None:
    """path_length, link_length, path_depth, xattrs_per_entry, xattr_size (clipcy/limits.py):
    the twins raise the same one-line message naming the limit; at the limit, no error."""
    from clipcy.tar import _tarparse_py

    long = _pax_archive({}, name="n" * 5000, fmt=tarfile.GNU_FORMAT)
    msg = "tar entry name of 5000 bytes at offset 0 exceeds the limit path_length=4096"
    assert _limit_error(impl, long) == msg
    assert _limit_error(_tarparse_py, long) == msg
    deep = _pax_archive({}, name="/".join(["d"] * 40))
    assert _limit_error(impl, deep, max_depth=39) == (
        "tar entry name of 40 components at offset 0 exceeds the limit path_depth=39"
    )
    assert parse(impl, deep, max_depth=40)[0].name.count(b"/") == 39
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("l")
        info.type = tarfile.SYMTYPE
        info.linkname = "t" * 300
        tf.addfile(info)
    assert _limit_error(impl, buf.getvalue(), max_link=299) == (
        "tar link target of 300 bytes at offset 0 exceeds the limit link_length=299"
    )
    assert parse(impl, buf.getvalue(), max_link=300)[0].linkname == b"t" * 300
    xattrs = {f"SCHILY.xattr.user.k{i}": "v" * i for i in range(1, 6)}
    many = _pax_archive(xattrs)
    assert _limit_error(impl, many, max_xattrs=4) == (
        "tar entry with 5 xattrs at offset 0 exceeds the limit xattrs_per_entry=4"
    )
    assert _limit_error(impl, many, max_xattr_size=4) == (
        "tar xattr value of 5 bytes at offset 0 exceeds the limit xattr_size=4"
    )
    assert len(parse(impl, many, max_xattrs=5, max_xattr_size=5)[0].xattrs) == 5


def _ext_block(kind: bytes, records: bytes) -> bytes:
    ti = tarfile.TarInfo("PaxHeader")
    ti.type, ti.size = kind, len(records)
    return ti.tobuf(tarfile.USTAR_FORMAT) + records + bytes(-len(records) % 512)


def test_extended_headers_add_up(impl: ModuleType) -> None:
    """Many small extended headers cannot grow memory past max_header."""
    f = tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT)
    xs = b"".join(
        _ext_block(tarfile.XHDTYPE, b"%d a%d=%s\n" % (14 + len(str(i)), i, b"v" * 8))
        for i in range(100, 400)
    )
    assert parse(impl, xs + f)[0].name == b"f"
    with pytest.raises(
        TarLimitError,
        match=r"^tar extended header of 4\d\d\d bytes at offset "
        r"\d+ exceeds the limit pax_header=4096$",
    ):
        parse(impl, xs + f, max_header=4096)
    gs = b"".join(
        _ext_block(tarfile.XGLTYPE, b"%d k%d=%s\n" % (14 + len(str(i)), i, b"v" * 8))
        for i in range(100, 400)
    )
    assert parse(impl, gs + f)[0].name == b"f"
    with pytest.raises(TarLimitError):  # 300 global records of 12 bytes
        parse(impl, gs + f, max_header=2048)


def test_entry_api(impl: ModuleType) -> None:
    (e,) = parse(impl, _pax_archive({}))
    with pytest.raises(AttributeError):
        e.name = b"x"
    assert "TarEntry(name=b'f'" in repr(e)
    assert e == parse(impl, _pax_archive({}))[0] and e != object()
    assert len(e.as_tuple()) == 16


def test_feed_buffer_kinds(impl: ModuleType) -> None:
    data = (DATA / "fmt-gnu.tar").read_bytes()
    want = parse(impl, data)
    for buf in (bytearray(data), memoryview(data)):
        p = impl.TarParser()
        assert p.feed(buf) == want
        p.close()
    with pytest.raises(TypeError):
        impl.TarParser().feed("text")


def test_feed_keeps_no_reference(impl: ModuleType) -> None:
    data = (DATA / "long-posix.tar").read_bytes()
    p = impl.TarParser()
    for cut in (700, 1300, 5000):  # inside a header, inside pax data, inside file data
        b = bytearray(data[:cut])
        p.feed(b)
        b.extend(b"x")  # BufferError if the parser still held an export of b
        p = impl.TarParser()
    with pytest.raises(TarChecksumError):
        p.feed(bytearray(b"\x01" * 512))


def test_twins_agree_on_fixtures() -> None:
    if PUREPYTHON:
        pytest.skip("CLIPCY_PUREPYTHON is set")
    from clipcy.tar import _tarparse, _tarparse_py

    for name in FIXTURES:
        data = (DATA / name).read_bytes()
        assert parse(_tarparse, data) == parse(_tarparse_py, data)


def test_truncation_everywhere_twins_agree() -> None:
    from clipcy.tar import _tarparse_py

    impls = (
        [_tarparse_py] if PUREPYTHON
        else [_tarparse_py, importlib.import_module("clipcy.tar._tarparse")]
    )
    data = (DATA / "long-posix.tar").read_bytes()
    end = len(data.rstrip(b"\x00"))
    for cut in range(0, end + 1, 7):
        results = {repr(outcome(m, data[:cut])) for m in impls}
        assert len(results) == 1, cut
    assert outcome(_tarparse_py, data[:end])[0] in ("ok", "TarTruncatedError")


# -- walk_tar and the decompressors -------------------------------------------------------
def test_selector() -> None:
    assert tarparse.IMPLEMENTATION == ("python" if PUREPYTHON else tarparse.IMPLEMENTATION)
    assert tarparse.IMPLEMENTATION in ("cython", "python")


@pytest.fixture(params=[True, False], ids=["threaded", "inline"])
def threaded(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """walk_tar decompressing in its helper thread, and all in the caller's thread."""
    monkeypatch.setattr(tarparse, "THREADED", request.param)
    return bool(request.param)


@pytest.mark.parametrize("name", ["multi.tar.gz", "single.tar.gz", "multi.tar.zst"])
def test_walk_compressed(name: str, threaded: bool) -> None:
    want = parse(tarparse._impl, (DATA / "long-posix.tar").read_bytes())
    assert list(tarparse.walk_tar(DATA / name)) == want
    assert list(tarparse.walk_tar(str(DATA / name))) == want
    with open(DATA / name, "rb") as f:
        assert list(tarparse.walk_tar(f)) == want


def test_walk_plain_and_short_reads(threaded: bool) -> None:
    data = (DATA / "fmt-posix.tar").read_bytes()
    want = parse(tarparse._impl, data)

    class Dribble(io.RawIOBase):
        def __init__(self, b: bytes) -> None:
            self.b, self.pos = b, 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:  # type: ignore[override]
            out = self.b[self.pos : self.pos + 3]
            self.pos += len(out)
            return out

    assert list(tarparse.walk_tar(Dribble(gzip.compress(data, mtime=0)))) == want
    assert list(tarparse.walk_tar(Dribble(data))) == want
    assert list(tarparse.walk_tar(io.BytesIO(b""))) == []


def test_walk_compression_errors(threaded: bool) -> None:
    gz = (DATA / "multi.tar.gz").read_bytes()
    zst = (DATA / "multi.tar.zst").read_bytes()
    for blob in (gz[:-1], gz[: len(gz) // 2], zst[:-10], zst[: len(zst) // 2]):
        with pytest.raises(CompressionError, match="truncated|corrupt"):
            list(tarparse.walk_tar(io.BytesIO(blob)))
    with pytest.raises(CompressionError, match=r"at compressed offset \d+"):
        list(tarparse.walk_tar(io.BytesIO(gz + b"trailing garbage")))
    with pytest.raises(CompressionError, match=r"at compressed offset \d+"):
        list(tarparse.walk_tar(io.BytesIO(zst + b"trailing garbage")))
    bad = bytearray(gz)
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(CompressionError):
        list(tarparse.walk_tar(io.BytesIO(bytes(bad))))
    # a tar error inside a good compressed stream stays a TarError
    tar = bytearray((DATA / "fmt-gnu.tar").read_bytes())
    tar[5] ^= 1
    with pytest.raises(TarChecksumError):
        list(tarparse.walk_tar(io.BytesIO(gzip.compress(bytes(tar)))))


def test_walk_closed_early(threaded: bool) -> None:
    """Stopping the generator stops the helper thread and closes the file it opened."""
    import threading

    blob = gzip.compress((DATA / "long-posix.tar").read_bytes() * 1, mtime=0)
    f = io.BytesIO(blob)
    it = tarparse.walk_tar(f)
    first = next(it)
    assert first.name == b"tree"
    it.close()
    assert not [t for t in threading.enumerate() if t.name == "clipcy-walk-tar"]
    it2 = tarparse.walk_tar(DATA / "multi.tar.gz")
    next(it2)
    it2.close()


def test_detect() -> None:
    assert streams.detect(b"\x1f\x8b\x08\x00") == "gzip"
    assert streams.detect(b"\x28\xb5\x2f\xfd") == "zstd"
    for magic in (0x184D2A50, 0x184D2A5F):
        assert streams.detect(struct.pack("<I", magic)) == "zstd"
    assert streams.detect(struct.pack("<I", 0x184D2A60)) == "plain"
    assert streams.detect(b"") == streams.detect(b"ustar") == "plain"


@pytest.mark.parametrize("kind", ["gzip", "zstd", "plain"])
def test_stream_output_is_bounded(kind: str) -> None:
    size = 64 << 20  # 64 MiB of zeros: a small bomb (~64 KiB gzip, ~2 KiB zstd)
    raw = bytes(size)
    blob = {
        "gzip": lambda: zlib.compress(raw, 9, wbits=31),
        "zstd": lambda: zstandard.ZstdCompressor().compress(raw),
        "plain": lambda: raw,
    }[kind]()
    s = streams.open_stream(streams.detect(blob), max_piece=1 << 20)
    total = 0
    for i in range(0, len(blob), 1 << 18):
        for piece in s.feed(blob[i : i + (1 << 18)]):
            assert 0 < len(piece) <= 1 << 20
            total += len(piece)
    s.finish()
    assert total == size


def test_gzip_members_and_empty() -> None:
    parts = [b"abc", b"", b"def" * 1000, b""]
    blob = b"".join(gzip.compress(p, mtime=0) for p in parts)
    for step in (1, 5, 1000, len(blob)):
        s = streams.GzipStream(max_piece=100)
        out = b"".join(
            bytes(x) for i in range(0, len(blob), step) for x in s.feed(blob[i : i + step])
        )
        s.finish()
        assert out == b"".join(parts)


def test_zstd_frames_and_skippable() -> None:
    z = zstandard.ZstdCompressor()
    skip = struct.pack("<II", 0x184D2A5A, 3) + b"abc"
    blob = skip + z.compress(b"one") + z.compress(b"") + skip + z.compress(b"two" * 999) + skip
    for step in (1, 7, len(blob)):
        s = streams.ZstdStream(max_piece=50)
        out = b"".join(
            bytes(x) for i in range(0, len(blob), step) for x in s.feed(blob[i : i + step])
        )
        s.finish()
        assert out == b"one" + b"two" * 999
    s = streams.ZstdStream()
    list(s.feed(skip[:5]))
    with pytest.raises(CompressionError, match="truncated zstd stream"):
        s.finish()
