"""An independent reader of the .clip format, written from docs/FORMAT.md alone, parses the golden
archive (tests/data/golden/golden.clip, a snapshot of clipcy's own writer).

It imports nothing of clipcy's reader, writer or format modules (only zstandard for the frames),
so a writer and reader that drifted together from the document cannot both pass here: every
checksum, length and record of the golden file is checked as the document describes it, and
what it decodes to is compared with the input the golden file was made from
(tests/data/golden/make_golden.py), as the golden test claims.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

zstandard = pytest.importorskip("zstandard")

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
DATA = (GOLDEN_DIR / "golden.clip").read_bytes()
MASK = (1 << 64) - 1


def _golden_input() -> tuple[dict[str, Any], list[Any], list[Any]]:
    spec = importlib.util.spec_from_file_location("make_golden_spec", GOLDEN_DIR / "make_golden.py")
    assert spec is not None and spec.loader is not None
    mod: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.golden_input()  # type: ignore[no-any-return]


class Cursor:
    """Conventions: little-endian ints, LEB128 varints (shortest, <= 10 bytes, < 2^64),
    zigzag, bytes(n)."""

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def fixed(self, fmt: str) -> tuple[Any, ...]:
        v = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return v

    def u8(self) -> int:
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def varint(self) -> int:
        value = shift = 0
        for i in range(10):
            b = self.u8()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                assert not (b == 0 and i > 0), "not the shortest encoding"
                assert value < 1 << 64
                return value
        raise AssertionError("varint longer than 10 bytes")

    def zigzag(self) -> int:
        z = self.varint()
        return (z >> 1) ^ -(z & 1)

    def bytes_(self) -> bytes:
        n = self.varint()
        v = self.buf[self.pos:self.pos + n]
        assert len(v) == n
        self.pos += n
        return v

    def done(self) -> bool:
        return self.pos == len(self.buf)


def _frame(buf: bytes, raw_len: int) -> bytes:
    """A zstd frame without content size, checksum or dictionary id, of raw_len bytes."""
    params = zstandard.get_frame_parameters(buf)
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert not params.has_checksum and params.dict_id == 0
    out: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(buf)
    assert len(out) == raw_len
    return out


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


TYPES = ["dir", "file", "symlink", "char", "block", "fifo"]


@dataclass
class Rec:
    path: bytes
    type: str
    mode: int
    uid: int
    gid: int
    mtime_sec: int
    mtime_nsec: int = 0
    size: int = 0
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    ino: int = 0
    nlink: int = 1
    layer: int = -1
    offset: int = 0
    sparse: tuple[tuple[int, int], ...] | None = None
    digest: bytes = b""


def _records(raw: bytes, count: int) -> list[Rec]:
    c = Cursor(raw)
    prev_ino = prev_mtime = data_end = 0
    path = b""
    out = []
    for i in range(count):
        shared = c.varint()
        assert i > 0 or shared == 0
        path = path[:shared] + c.bytes_()
        flags = c.varint()
        assert flags >> 12 == 0 and flags & 7 < 6
        r = Rec(path, TYPES[flags & 7], c.varint(), c.varint(), c.varint(), 0)
        prev_mtime = (prev_mtime + c.zigzag()) & MASK
        r.mtime_sec = _signed64(prev_mtime)
        if flags & 0x008:
            r.mtime_nsec = c.varint()
            assert 1 <= r.mtime_nsec <= 999_999_999
        prev_ino += c.zigzag()
        r.ino = prev_ino
        if flags & 0x010:
            r.nlink = c.varint()
            assert r.nlink != 1
        if flags & 0x020:
            r.size = c.varint()
            assert r.size != 0
        if flags & 0x040:
            r.layer = c.varint() - 1
            r.offset = _signed64((data_end + c.zigzag()) & MASK)
            assert (r.layer, r.offset) != (-1, 0)
            data_end = (r.offset + (r.size + 511) // 512 * 512 + 512) & MASK
        if flags & 0x080:
            r.sparse = tuple((c.varint(), c.varint()) for _ in range(c.varint()))
        if flags & 0x100:
            r.digest = c.bytes_()
            assert r.digest
        if flags & 0x200:
            r.linkname = c.bytes_()
            assert r.linkname
        if flags & 0x400:
            r.devmajor, r.devminor = c.varint(), c.varint()
            assert (r.devmajor, r.devminor) != (0, 0)
        if flags & 0x800:
            names = []
            for _ in range(c.varint()):
                name = c.bytes_()
                names.append(name)
                r.xattrs[name.decode("utf-8", "surrogateescape")] = c.bytes_()
            assert names and names == sorted(set(names))
        out.append(r)
    assert c.done(), "a block must be consumed exactly"
    return out


def _access(raw: bytes) -> dict[str, Any]:
    c = Cursor(raw)
    kind = ["plain", "gzip", "zstd"][c.varint()]
    span = c.varint()
    points = [(c.varint(), c.u8(), c.varint(), c.bytes_()) for _ in range(c.varint())]
    frames = [(c.varint(), c.varint(), c.varint(), c.varint()) for _ in range(c.varint())]
    checksum = c.varint()
    lengths = [c.varint() for _ in range(c.varint())]
    assert all(n >= 1 for n in lengths)
    size = {2: 16, 1: 32, 0: 0}[checksum]
    assert checksum or not lengths
    digests = c.buf[c.pos:c.pos + size * len(lengths)]
    c.pos += len(digests)
    assert c.done(), "the payload must be consumed exactly"
    for bits in (p[1] for p in points):
        assert 0 <= bits <= 7
    return {"kind": kind, "span": span, "points": points, "frames": frames,
            "checksum": checksum, "lengths": lengths, "digests": digests}


def parse(d: bytes) -> dict[str, Any]:
    """The whole archive, every checksum checked, as docs/FORMAT.md lays it out."""
    magic, major, minor, flags, file_size, nsec, header_crc = struct.unpack_from("<8sHHIQII", d)
    assert magic == b"\x89CLIP\r\n\x1a" and (major, flags) == (2, 0)
    assert file_size == len(d)
    table_end = 32 + 24 * nsec
    assert zlib.crc32(d[:28] + d[32:table_end]) == header_crc
    assert d[-8:] == b"CLIPEND\n" and d[-40:-8] == hashlib.sha256(d[:-40]).digest()
    sections: dict[int, bytes] = {}
    for i in range(nsec):
        kind, crc, off, length = struct.unpack_from("<IIQQ", d, 32 + 24 * i)
        assert table_end <= off and off + length <= file_size - 40
        assert kind not in sections
        sections[kind] = d[off:off + length]
        assert zlib.crc32(sections[kind]) == crc
    assert {1, 2, 3, 4, 5} <= set(sections)

    (raw_len,) = struct.unpack_from("<Q", sections[1])
    text = _frame(sections[1][8:], raw_len)
    metadata = json.loads(text)
    assert text == json.dumps(metadata, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False, allow_nan=False).encode()

    idx = Cursor(sections[2])
    node_count, block_count = idx.fixed("QI")
    nodes: list[Rec] = []
    expect_off = 0
    firsts = []
    for _ in range(block_count):
        off, clen, raw, count, crc, path_len = idx.fixed("QIIIII")
        first = idx.buf[idx.pos:idx.pos + path_len]
        idx.pos += path_len
        assert off == expect_off and count >= 1
        frame = sections[3][off:off + clen]
        assert zlib.crc32(frame) == crc
        recs = _records(_frame(frame, raw), count)
        assert recs[0].path == first
        firsts.append(first)
        nodes += recs
        expect_off = off + clen
    assert idx.done() and expect_off == len(sections[3])
    assert firsts[0] == b"/" and firsts == sorted(set(firsts))
    assert len(nodes) == node_count
    paths = [n.path for n in nodes]
    assert paths == sorted(set(paths))  # global path-byte order

    acc = Cursor(sections[4])
    (layer_count,) = acc.fixed("I")
    assert len(sections[4]) == 4 + 28 * layer_count
    access = []
    for _ in range(layer_count):
        off, clen, raw, crc = acc.fixed("QQQI")
        frame = sections[5][off:off + clen]
        assert zlib.crc32(frame) == crc
        access.append(_access(_frame(frame, raw)))
    return {"version": (major, minor), "metadata": metadata, "nodes": nodes,
            "blocks": block_count, "access": access}


def test_golden_archive_as_the_format_document_describes_it() -> None:
    metadata, nodes, access = _golden_input()
    got = parse(DATA)
    assert got["version"] == (2, 0)
    assert got["metadata"] == metadata
    assert got["blocks"] == 3  # 1040 files in one directory: more than two blocks of 512
    assert len(got["nodes"]) == len(nodes)
    for rec, node in zip(got["nodes"], nodes, strict=True):
        for name in Rec.__dataclass_fields__:
            assert getattr(rec, name) == getattr(node, name), (node.path[:40], name)
    assert len(got["access"]) == len(metadata["layers"]) == len(access)
    for i, (a, want) in enumerate(zip(got["access"], access, strict=True)):
        assert a["kind"] == want.kind and a["span"] == want.span
        assert a["points"] == [tuple(p) for p in want.points]
        assert a["frames"] == [tuple(f) for f in want.frames]
        if want.spans is None:
            assert (a["checksum"], a["lengths"]) == (0, [])
        else:
            assert a["checksum"] == 2  # BLAKE3-128, what writers write
            assert a["lengths"] == list(want.spans.lengths)
            assert a["digests"] == want.spans.digests
            assert sum(a["lengths"]) == metadata["layers"][i]["size"]


def test_format_document_examples() -> None:
    """The worked examples of docs/FORMAT.md decode as it says."""
    assert [Cursor(bytes.fromhex(h)).varint() for h in ("00", "7f", "8001", "ac02")] == [
        0, 127, 128, 300]
    root = _records(bytes.fromhex("00012f10ed030000" "80c49fd50c" "0206"), 1)[0]
    assert (root.path, root.type, root.mode, root.mtime_sec, root.ino, root.nlink) == (
        b"/", "dir", 0o755, 1_700_000_000, 1, 6)
    spans = Cursor(bytes.fromhex("0203" "808004" "808004" "f09301"))
    assert (spans.varint(), spans.varint()) == (2, 3)
    assert [spans.varint() for _ in range(3)] == [65536, 65536, 18928]
    assert 65536 * 2 + 18928 == 150_000


def test_the_reader_is_not_lenient() -> None:
    """The independent reader notices a flipped byte anywhere (so the test above can fail)."""
    for pos in range(0, len(DATA), 97):
        bad = bytearray(DATA)
        bad[pos] ^= 0x01
        with pytest.raises(AssertionError):
            parse(bytes(bad))
