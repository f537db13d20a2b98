"""Property tests: archives written by CPython's tarfile read back the same by both twins;
corrupted and truncated archives give the same error (class and message) from both."""

from __future__ import annotations

import io
import tarfile
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from clipcy._select import PUREPYTHON
from clipcy.errors import TarError
from clipcy.tar import _tarparse_py

IMPLS: list[ModuleType] = [_tarparse_py]
if not PUREPYTHON:
    from clipcy.tar import _tarparse

    IMPLS.insert(0, _tarparse)

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_TYPES = {
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.DIRTYPE: "dir",
    tarfile.FIFOTYPE: "fifo",
}

# name components: ASCII, accents, CJK, and lone surrogates (= non-UTF-8 bytes)
_chars = st.sampled_from("abcxyz019._-~ é日🙂") | st.sampled_from(["\udce9", "\udcff", "\udc80"])
_component = st.text(_chars, min_size=1, max_size=40).filter(lambda s: s not in (".", ".."))
_names = st.lists(_component, min_size=1, max_size=8).map("/".join)


class Archive(bytes):
    """bytes with a short repr, so a failing example does not print 40 kB."""

    def __repr__(self) -> str:
        return f"Archive(<{len(self)} bytes>)"


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    fmt = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
    buf = io.BytesIO()
    names: list[str] = []
    with tarfile.open(
        fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape"
    ) as tf:
        for _ in range(draw(st.integers(1, 5))):
            ti = tarfile.TarInfo(draw(_names))
            kind = draw(
                st.sampled_from(["file", "file", "dir", "symlink", "hardlink", "fifo", "char"])
            )
            body = b""
            if kind == "file":
                body = draw(st.binary(max_size=1500))
                ti.size = len(body)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, draw(_names)
            elif kind == "hardlink":
                ti.type = tarfile.LNKTYPE
                ti.linkname = draw(st.sampled_from(names)) if names else "x"
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            else:
                ti.type = tarfile.CHRTYPE
                ti.devmajor = draw(st.integers(0, 4095))
                ti.devminor = draw(st.integers(0, 1 << 20))
            ti.mode = draw(st.integers(0, 0o7777))
            big = fmt != tarfile.USTAR_FORMAT
            ti.uid = draw(st.integers(0, (1 << 40) if big else 0o7777777))
            ti.gid = draw(st.integers(0, 0o7777777))
            ti.uname = draw(st.text("abcdefgh_é", max_size=12))
            if fmt == tarfile.PAX_FORMAT:
                ti.mtime = draw(
                    st.integers(-(1 << 34), 1 << 34) | st.floats(0, 4e9).map(lambda f: round(f, 3))
                )
                ti.pax_headers = {
                    f"SCHILY.xattr.user.{k}": v
                    for k, v in draw(
                        st.dictionaries(
                            st.text("abc", min_size=1, max_size=5),
                            st.text("xyz\x00é", max_size=10),
                            max_size=3,
                        )
                    ).items()
                }
            elif fmt == tarfile.GNU_FORMAT:
                ti.mtime = draw(st.integers(-(1 << 40), 1 << 40))
            else:
                ti.mtime = draw(st.integers(0, 8**11 - 1))
            try:
                tf.addfile(ti, io.BytesIO(body))
            except ValueError:  # a name USTAR cannot store
                assume(False)
            names.append(ti.name)
    return Archive(buf.getvalue())


def _parse(impl: ModuleType, data: bytes, step: int = 0) -> list[Any]:
    p = impl.TarParser()
    out: list[Any] = []
    if step:
        for i in range(0, len(data), step):
            out += p.feed(data[i : i + step])
    else:
        out += p.feed(data)
    p.close()
    return out


def _outcome(impl: ModuleType, data: bytes, step: int = 0) -> tuple[Any, ...]:
    try:
        return ("ok", [e.as_tuple() for e in _parse(impl, data, step)])
    except TarError as e:
        return (type(e).__name__, str(e))


def _tarfile_view(data: bytes) -> list[tuple[Any, ...]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tf:
        for m in tf:
            t = _TYPES.get(m.type, "file")
            xattrs = {
                k[13:]: v.encode("utf-8", "surrogateescape")
                for k, v in m.pax_headers.items()
                if k.startswith("SCHILY.xattr.")
            }
            body = tf.extractfile(m).read() if t == "file" else b""  # type: ignore[union-attr]
            dev = (m.devmajor, m.devminor) if t in ("char", "block") else (0, 0)
            out.append(
                (
                    m.name.encode("utf-8", "surrogateescape"),
                    t,
                    m.mode,
                    m.uid,
                    m.gid,
                    m.uname,
                    float(m.mtime),
                    m.linkname.encode("utf-8", "surrogateescape"),
                    dev,
                    xattrs,
                    body,
                )
            )
    return out


def _our_view(data: bytes, entries: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            e.name,
            e.type,
            e.mode,
            e.uid,
            e.gid,
            e.uname,
            e.mtime,
            e.linkname,
            (e.devmajor, e.devminor) if e.type in ("char", "block") else (0, 0),
            e.xattrs,
            data[e.offset : e.offset + e.size] if e.type == "file" else b"",
        )
        for e in entries
    ]


@SETTINGS
@given(archives(), st.integers(1, 700))
def test_twins_match_tarfile(data: bytes, step: int) -> None:
    want = _tarfile_view(data)
    first = None
    for impl in IMPLS:
        entries = _parse(impl, data)
        assert _our_view(data, entries) == want
        assert _parse(impl, data, step) == entries
        first = first or entries
        assert entries == first  # twins agree field by field (offsets included)


# a small archive with most features: GNU long name, pax records, xattrs, a sparse file
def _sample() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("d/" + "n" * 120)
        ti.size, ti.mtime, ti.uid = 5, 1.5, 1 << 30
        ti.pax_headers = {"SCHILY.xattr.user.a": "v"}
        tf.addfile(ti, io.BytesIO(b"hello"))
        ti = tarfile.TarInfo("link")
        ti.type, ti.linkname = tarfile.SYMTYPE, "target"
        tf.addfile(ti)
        tf.format = tarfile.GNU_FORMAT  # the next member as GNU: ././@LongLink, base-256
        ti = tarfile.TarInfo("g/" + "m" * 110)
        ti.size, ti.mtime = 700, -5
        tf.addfile(ti, io.BytesIO(b"z" * 700))
    return buf.getvalue()


SAMPLE = _sample()
SAMPLE_END = len(SAMPLE.rstrip(b"\x00"))


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, SAMPLE_END + 600), st.integers(0, 255)), min_size=1, max_size=4
    ),
    st.integers(0, 600),
)
def test_corruption_twins_agree(edits: list[tuple[int, int]], step: int) -> None:
    data = bytearray(SAMPLE)
    for pos, val in edits:
        if pos < len(data):
            data[pos] = val
    results = {repr(_outcome(impl, bytes(data), step)) for impl in IMPLS}
    assert len(results) == 1, results


def test_truncation_at_every_offset() -> None:
    for cut in range(SAMPLE_END + 1):
        results = {repr(_outcome(impl, SAMPLE[:cut])) for impl in IMPLS}
        assert len(results) == 1, (cut, results)
        kind = next(iter(results))
        assert ("TarTruncatedError" in kind) or cut % 512 == 0, (cut, kind)


def _raw_pax(records: bytes) -> bytes:
    """A pax 'x' header with exactly these record bytes, then a regular file 'f'."""
    x = tarfile.TarInfo("PaxHeader/f")
    x.type, x.size = tarfile.XHDTYPE, len(records)
    pad = b"\x00" * (-len(records) % 512)
    f = tarfile.TarInfo("f")
    return (
        x.tobuf(tarfile.USTAR_FORMAT)
        + records
        + pad
        + f.tobuf(tarfile.USTAR_FORMAT)
        + b"\x00" * 1024
    )


@pytest.mark.parametrize("value", ["9" * 19, "9" * 25, "1" + "0" * 400, "-1", "1e3", " 1", ""])
def test_pax_numbers_out_of_range(value: str) -> None:
    rec = f" uid={value}\n"
    n = len(rec) + len(str(len(rec) + 2))
    data = _raw_pax(f"{n}{rec}".encode())
    results = {repr(_outcome(impl, data)) for impl in IMPLS}
    assert results == {repr(("TarHeaderError", "bad pax uid value in tar header at offset 0"))}


def test_pax_edge_records() -> None:
    ok = "9223372036854775807"  # 2**63-1 fits
    for recs, want in (
        (f"27 uid={ok}\n".encode(), 2**63 - 1),
        (b"13 uid=00042\n", 42),
        (b"13 uid=00042\n\x00\x00\x00", 42),  # NUL padding after the last record
        (b"000014 uid=42\n", 42),  # leading zeros in the length
    ):
        for impl in IMPLS:
            (e,) = _parse(impl, _raw_pax(recs))
            assert e.uid == want
    # an empty local value deletes a name field (POSIX, as CPython and Go)
    for impl in IMPLS:
        (e,) = _parse(impl, _raw_pax(b"9 uname=\n"))
        assert e.uname == ""
    for recs in (b"0 uid=1\n", b"5 uid=1\n", b"999 uid=1\n", b"8 uid=1\n\x00x", b"8 =uid1\n"):
        results = {repr(_outcome(impl, _raw_pax(recs))) for impl in IMPLS}
        assert results == {
            repr(("TarHeaderError", "malformed pax record in tar header at offset 0"))
        }, recs
