"""Indexers (clipcy.layers._checkpoint.GzipIndexer, blobindex.ZstdIndexer/PlainIndexer) and
gzip_read.

Every compressed fixture is made here by the real tools (gzip, pigz, zstd, pzstd) from a
seeded payload, and every result is compared with a full decompression by zlib / zstd.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import struct
import subprocess
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from samples import payload as make_payload

from clipcy.errors import ClipError, CompressionError
from clipcy.layers.access import GZIP, PLAIN, ZSTD
from clipcy.layers.blobindex import BLOCK_MAX as BLOCK
from clipcy.layers.blobindex import DEFAULT_SPAN, OUT_PIECE, ZstdIndexer, make_indexer

_checkpoint = pytest.importorskip("clipcy.layers._checkpoint")  # compiled even under PUREPYTHON
GzipIndexer = _checkpoint.GzipIndexer
gzip_read = _checkpoint.gzip_read

SPAN = 64 << 10  # small: many points, most of them not byte-aligned


def run(cmd: str, cwd: Path) -> None:
    subprocess.run(cmd, shell=True, check=True, cwd=cwd)


def need(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} not installed")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ckpt")
    (d / "a.bin").write_bytes(make_payload(1, 2_500_000))
    (d / "b.bin").write_bytes(make_payload(2, 700_000))
    (d / "empty.bin").write_bytes(b"")
    return d


# name -> (shell command writing blob.gz in the work dir, payload files it holds, in order)
GZIP_BLOBS = {
    "gzip-1": ("gzip -1 -n -c a.bin > {out}", ["a.bin"]),
    "gzip-6": ("gzip -6 -n -c a.bin > {out}", ["a.bin"]),
    "gzip-9": ("gzip -9 -c a.bin > {out}", ["a.bin"]),
    "pigz": ("pigz -p 2 -c a.bin > {out}", ["a.bin"]),
    "pigz-i": ("pigz -i -p 2 -c a.bin > {out}", ["a.bin"]),
    "members": ("gzip -1 -c a.bin > {out} && gzip -9 -c b.bin >> {out} && "
                "gzip -c empty.bin >> {out} && pigz -i -c b.bin >> {out} && "
                "gzip -c empty.bin >> {out}", ["a.bin", "b.bin", "empty.bin", "b.bin"]),
    "empty-first": ("gzip -c empty.bin > {out} && gzip -6 -c b.bin >> {out}",
                    ["empty.bin", "b.bin"]),
    "only-empty": ("gzip -c empty.bin > {out}", ["empty.bin"]),
}


def make_gzip(work: Path, name: str) -> tuple[Path, bytes]:
    cmd, parts = GZIP_BLOBS[name]
    need("gzip", "pigz")
    out = work / f"{name}.gz"
    if not out.exists():
        run(cmd.format(out=out.name), work)
    blob = out.read_bytes()
    full = gzip.decompress(blob)  # the reference: zlib over every member
    assert full == b"".join((work / p).read_bytes() for p in parts)
    return out, full


def index(ix: object, blob: bytes, chunk: int = 1 << 20) -> bytes:
    outs = []
    for i in range(0, len(blob), chunk):
        for out in ix.feed(blob[i:i + chunk]):  # type: ignore[attr-defined]
            assert 0 < len(out) <= OUT_PIECE
            outs.append(out)
    ix.finish()  # type: ignore[attr-defined]
    return b"".join(outs)


@pytest.mark.parametrize("name", list(GZIP_BLOBS))
def test_gzip_points_resume_exactly(work: Path, name: str) -> None:
    path, full = make_gzip(work, name)
    blob = path.read_bytes()
    ix = make_indexer(GZIP, span=SPAN, min_points_layer=0)
    assert index(ix, blob) == full
    assert ix.total_in == len(blob) and ix.total_out == len(full)
    access = ix.access()
    assert access.kind == GZIP and access.span == SPAN
    points = access.points
    assert points[0] == (0, 0, 0, b"")
    assert [p[2] for p in points] == sorted(p[2] for p in points)
    if len(full) > 4 * SPAN:
        assert len(points) >= len(full) // (2 * SPAN)
        assert any(p[1] != 0 for p in points), "expected points that are not byte-aligned"
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, (comp, bits, out, window) in enumerate(points):
            assert 0 <= bits <= 7 and comp <= len(blob)
            assert len(window) <= 32768
            if window:  # sparse: bytes the next 32 KiB never copy are zeroed
                before = full[max(0, out - len(window)):out]
                assert len(before) == len(window)
                assert all(w == b or w == 0 for w, b in zip(window, before, strict=True))
            else:  # a member start: the gzip magic is there
                assert bits == 0 and blob[comp:comp + 2] == b"\x1f\x8b"
            nxt = points[i + 1][2] if i + 1 < len(points) else len(full)
            for skip, n in ((0, 1), (0, 70000), (1, 100), (nxt - out, 50), (nxt - out + 5, 10)):
                assert gzip_read(fd, comp, bits, window, skip, n) == \
                    full[out + skip:out + skip + n], (i, skip, n)
        # every read from the start of the blob runs across all members, short at the end
        assert gzip_read(fd, 0, 0, b"", 0, len(full) + 10) == full
    finally:
        os.close(fd)


@pytest.mark.parametrize("sparse", [True, False])
def test_gzip_sparse_windows(work: Path, sparse: bool) -> None:
    """Sparse windows zero what is never referenced, yet every resume stays exact."""
    path, full = make_gzip(work, "gzip-6")
    ix = GzipIndexer(SPAN, 0, sparse)
    index(ix, path.read_bytes())
    assert ix.sparse_windows == sparse
    zeroed = kept = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for comp, bits, out, window in ix.points[1:]:
            before = full[out - len(window):out]
            if not sparse:
                assert window == before
            zeroed += sum(1 for w, b in zip(window, before, strict=True) if w != b)
            kept += len(window)
            assert gzip_read(fd, comp, bits, window, 0, 40000) == full[out:out + 40000]
    finally:
        os.close(fd)
    if sparse:
        assert zeroed > kept // 10  # text references only part of its window
    else:
        assert zeroed == 0


def test_gzip_member_starts_are_points(work: Path) -> None:
    """Small members and a span smaller than a member: member starts become points."""
    need("gzip")
    parts = [make_payload(10 + i, 3000 + 1000 * i) for i in range(12)]
    parts.insert(3, b"")
    blob = b"".join(gzip.compress(p, compresslevel=6, mtime=0) for p in parts)
    full = b"".join(parts)
    path = work / "small-members.gz"
    path.write_bytes(blob)
    ix = GzipIndexer(4096)
    assert index(ix, blob, chunk=777) == full
    assert ix.members == len(parts)
    starts = [p for p in ix.points if p[3] == b""]
    assert len(starts) > 5
    fd = os.open(path, os.O_RDONLY)
    try:
        for comp, bits, out, window in ix.points:
            assert gzip_read(fd, comp, bits, window, 0, 9000) == full[out:out + 9000]
        # member boundaries: read across each
        edge = 0
        for p in parts:
            edge += len(p)
            lo = max(0, edge - 100)
            assert gzip_read(fd, 0, 0, b"", lo, 250) == full[lo:lo + 250]
    finally:
        os.close(fd)


def test_gzip_stream_continues(work: Path) -> None:
    """GzipStream keeps its place: consecutive reads (and skips) across members."""
    path, full = make_gzip(work, "members")
    ix = GzipIndexer(SPAN)
    index(ix, path.read_bytes())
    comp, bits, out, window = ix.points[len(ix.points) // 3]
    fd = os.open(path, os.O_RDONLY)
    try:
        st = _checkpoint.GzipStream(fd, comp, bits, window, out)
        pos = out
        rnd = random.Random(11)
        while pos < len(full):
            skip, n = rnd.choice([0, 0, 10, 5000]), rnd.choice([1, 999, 65536, 250_000])
            got = st.read(n, skip)
            pos = min(pos + skip, len(full))
            assert got == full[pos:pos + n]
            pos += len(got)
            assert st.position == pos
        assert st.read(10) == b"" and st.read(10, 10) == b""
    finally:
        os.close(fd)


def test_gzip_random_reads_seeded(work: Path) -> None:
    path, full = make_gzip(work, "members")
    ix = make_indexer(GZIP, span=SPAN)
    index(ix, path.read_bytes(), chunk=300_001)
    points = ix.access().points
    starts = [p[2] for p in points]
    rnd = random.Random(7)
    import bisect

    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(300):
            off = rnd.randrange(len(full) + 100)
            n = rnd.choice([1, 17, 4096, 65536, 300_000])
            comp, bits, out, window = points[bisect.bisect_right(starts, off) - 1]
            assert gzip_read(fd, comp, bits, window, off - out, n) == full[off:off + n]
    finally:
        os.close(fd)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_gzip_reads_hypothesis(work: Path, data: st.DataObject) -> None:
    path, full = make_gzip(work, "gzip-9")
    key = "_hyp_points"
    points = getattr(test_gzip_reads_hypothesis, key, None)
    if points is None:
        ix = GzipIndexer(SPAN)
        index(ix, path.read_bytes())
        points = ix.points
        setattr(test_gzip_reads_hypothesis, key, points)
    i = data.draw(st.integers(0, len(points) - 1))
    comp, bits, out, window = points[i]
    skip = data.draw(st.integers(0, 3 * SPAN))
    n = data.draw(st.integers(0, 200_000))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert gzip_read(fd, comp, bits, window, skip, n) == full[out + skip:out + skip + n]
    finally:
        os.close(fd)


@pytest.mark.parametrize("chunk", [1, 10, 4096])
def test_gzip_tiny_chunks(chunk: int) -> None:
    raw = make_payload(3, 60_000) * 2
    blob = gzip.compress(raw, 6, mtime=0) + gzip.compress(b"", mtime=0) + \
        gzip.compress(raw[:5000], 1, mtime=0)
    ix = GzipIndexer(8192)
    assert index(ix, blob, chunk) == raw + raw[:5000]
    assert ix.total_in == len(blob)
    assert len(ix.points) > 3


def test_gzip_bomb_output_is_bounded() -> None:
    blob = gzip.compress(b"\0" * (40 << 20), 9, mtime=0)  # ~40 KB of input
    ix = GzipIndexer(DEFAULT_SPAN)
    total = 0
    pieces = 0
    for out in ix.feed(blob):
        assert len(out) <= OUT_PIECE
        assert out.count(0) == len(out)
        total += len(out)
        pieces += 1
    ix.finish()
    assert total == 40 << 20 and pieces >= 40
    assert len(ix.points) > 5


def test_gzip_default_span_keeps_small_layers_pointless() -> None:
    raw = make_payload(4, 3_000_000)
    blob = gzip.compress(raw, 6, mtime=0)
    ix = make_indexer(GZIP, span=SPAN)  # min_points_layer = 2 * span: this layer is larger
    index(ix, blob)
    assert len(ix.access().points) > 1
    ix = make_indexer(GZIP, span=SPAN, min_points_layer=len(raw) + 1)
    index(ix, blob)
    assert ix.access().points == [(0, 0, 0, b"")]


# -- gzip errors --------------------------------------------------------------------------
def feed_all(ix: object, blob: bytes, chunk: int = 65536) -> None:
    for i in range(0, len(blob), chunk):
        for _ in ix.feed(blob[i:i + chunk]):  # type: ignore[attr-defined]
            pass
    ix.finish()  # type: ignore[attr-defined]


def test_gzip_truncated() -> None:
    raw = make_payload(5, 200_000)
    blob = gzip.compress(raw, 6, mtime=0)
    for cut in (1, 5, 10, 11, 100, len(blob) // 2, len(blob) - 8, len(blob) - 1):
        with pytest.raises(CompressionError, match=r"truncated gzip stream.*compressed offset"):
            feed_all(GzipIndexer(SPAN), blob[:cut])
    with pytest.raises(CompressionError, match=r"truncated gzip stream: no data"):
        feed_all(GzipIndexer(SPAN), b"")
    # a second member cut short
    with pytest.raises(CompressionError, match=rf"member at compressed offset {len(blob)} "):
        feed_all(GzipIndexer(SPAN), blob + blob[:50])


def test_gzip_flipped_bytes() -> None:
    raw = make_payload(6, 200_000)
    blob = gzip.compress(raw, 6, mtime=0)
    # in the trailer: CRC mismatch, reported by zlib's own message
    bad = bytearray(blob)
    bad[-6] ^= 0x55
    with pytest.raises(CompressionError,
                       match=r"inflate failed with Z_DATA_ERROR \(incorrect data check\) "
                             r"at compressed offset \d+"):
        feed_all(GzipIndexer(SPAN), bytes(bad))
    # in the header: not gzip at all
    with pytest.raises(CompressionError, match=r"Z_DATA_ERROR \(incorrect header check\)"):
        feed_all(GzipIndexer(SPAN), b"\x1f\x8c" + blob[2:])
    # in the deflate data: some error, always with an offset (a CRC error at worst)
    rnd = random.Random(3)
    for _ in range(20):
        bad = bytearray(blob)
        bad[rnd.randrange(10, len(blob) - 8)] ^= 1 << rnd.randrange(8)
        with pytest.raises(CompressionError, match=r"at compressed offset \d+"):
            feed_all(GzipIndexer(SPAN), bytes(bad))


@pytest.mark.parametrize("garbage", [b"\0", b"\0" * 100, b"hello world", b"\x1f"])
def test_gzip_trailing_garbage(garbage: bytes) -> None:
    blob = gzip.compress(make_payload(7, 50_000), 6, mtime=0)
    if garbage == b"\x1f":  # half a magic: a truncated member
        with pytest.raises(CompressionError, match=rf"truncated.*offset {len(blob)} "):
            feed_all(GzipIndexer(SPAN), blob + garbage)
        return
    with pytest.raises(CompressionError,
                       match=rf"trailing garbage after the last gzip member at compressed "
                             rf"offset {len(blob)} "):
        feed_all(GzipIndexer(SPAN), blob + garbage)


def test_gzip_read_errors(tmp_path: Path) -> None:
    raw = make_payload(8, 400_000)
    blob = gzip.compress(raw, 6, mtime=0)
    ix = GzipIndexer(SPAN)
    index(ix, blob)
    comp, bits, out, window = ix.points[-1]
    p = tmp_path / "cut.gz"
    p.write_bytes(blob[:comp + 100])  # the blob ends soon after the last point
    fd = os.open(p, os.O_RDONLY)
    try:
        with pytest.raises(CompressionError, match=r"truncated gzip stream: blob ends at "
                                                   r"compressed offset \d+ inside a member"):
            gzip_read(fd, comp, bits, window, 0, len(raw))
        with pytest.raises(CompressionError, match=r"compressed offset"):
            gzip_read(fd, 0, 0, b"", 0, len(raw))
        with pytest.raises(ValueError):
            gzip_read(fd, 0, 3, b"", 0, 10)  # bits need a previous byte
        with pytest.raises(ValueError):
            gzip_read(fd, 10, 0, b"x" * 40000, 0, 10)
    finally:
        os.close(fd)
    with pytest.raises(ClipError, match="pread failed"):
        gzip_read(fd, 0, 0, b"", 0, 10)  # closed descriptor: EBADF


def test_gzip_misuse() -> None:
    ix = GzipIndexer(SPAN)
    gen = ix.feed(gzip.compress(make_payload(9, 3_000_000), 1))
    next(gen)
    with pytest.raises(RuntimeError):
        ix.feed(b"x")
    with pytest.raises(RuntimeError):
        ix.finish()
    gen.close()
    with pytest.raises(ValueError):
        GzipIndexer(0)
    with pytest.raises(TypeError):
        ix.feed("text")


# -- zstd -------------------------------------------------------------------------------------
ZSTD_BLOBS = {
    "plain": ("zstd -q -3 -c a.bin > {out}", ["a.bin"]),
    "no-size": ("zstd -q --no-content-size -c a.bin > {out}", ["a.bin"]),
    "frames": ("zstd -q --no-content-size -c a.bin > {out} && zstd -q -19 -c b.bin >> {out} && "
               "zstd -q -c empty.bin >> {out} && zstd -q --no-check -c b.bin >> {out} && "
               "pzstd -q -p 2 -c a.bin >> {out}", ["a.bin", "b.bin", "empty.bin", "b.bin",
                                                   "a.bin"]),
    "skippable-first": ("pzstd -q -p 2 -c a.bin > {out}", ["a.bin"]),
}


def make_zstd(work: Path, name: str) -> tuple[Path, bytes]:
    need("zstd", "pzstd")
    cmd, parts = ZSTD_BLOBS[name]
    out = work / f"{name}.zst"
    if not out.exists():
        run(cmd.format(out=out.name), work)
    full = subprocess.run(["zstd", "-dc", str(out)], check=True, capture_output=True).stdout
    assert full == b"".join((work / p).read_bytes() for p in parts)
    return out, full


@pytest.mark.parametrize("name", list(ZSTD_BLOBS))
@pytest.mark.parametrize("chunk", [1 << 20, 9999])
def test_zstd_frames(work: Path, name: str, chunk: int) -> None:
    path, full = make_zstd(work, name)
    blob = path.read_bytes()
    ix = make_indexer(ZSTD)
    assert index(ix, blob, chunk) == full
    assert ix.total_in == len(blob) and ix.total_out == len(full)
    frames = ix.access().frames
    assert ix.access().kind == ZSTD
    uoff = 0
    for comp, csize, out, usize in frames:
        assert int.from_bytes(blob[comp:comp + 4], "little") == 0xFD2FB528
        assert out == uoff
        uoff += usize
        # each recorded frame decompresses alone to its slice
        piece = subprocess.run(["zstd", "-dc"], input=blob[comp:comp + csize], check=True,
                               capture_output=True).stdout
        assert piece == full[out:out + usize]
    assert uoff == len(full)
    if name == "frames":
        assert any(f[3] == 0 for f in frames)  # the empty frame is recorded
    if name == "skippable-first":
        assert frames[0][0] > 0 and int.from_bytes(blob[:4], "little") & ~0xF == 0x184D2A50


def test_zstd_tiny_chunks(work: Path) -> None:
    path, full = make_zstd(work, "frames")
    blob = path.read_bytes()[:300_000]
    ix = ZstdIndexer()
    outs = []
    for i in range(0, len(blob), 7):
        outs.extend(ix.feed(blob[i:i + 7]))
    assert b"".join(outs) == full[:len(b"".join(outs))] and outs


def test_zstd_errors(work: Path) -> None:
    path, full = make_zstd(work, "frames")
    blob = path.read_bytes()
    frames = make_frames(blob)
    for cut in (2, 5, frames[0][1] // 2, frames[0][1] - 1, len(blob) - 3):
        with pytest.raises(CompressionError,
                           match=r"truncated zstd stream: the frame at compressed offset \d+ "
                                 r"ends early at compressed offset \d+"):
            feed_all(ZstdIndexer(), blob[:cut])
    with pytest.raises(CompressionError, match=rf"trailing garbage after the last zstd frame "
                                               rf"at compressed offset {len(blob)}"):
        feed_all(ZstdIndexer(), blob + b"garbage!")
    with pytest.raises(CompressionError, match=r"not a zstd frame at compressed offset 0"):
        feed_all(ZstdIndexer(), b"\x1f\x8b\x08\x00" + blob)
    with pytest.raises(CompressionError, match=r"no data"):
        feed_all(ZstdIndexer(), b"")
    # a flipped byte inside the first frame's compressed blocks
    bad = bytearray(blob)
    bad[frames[0][1] // 2] ^= 0xFF
    with pytest.raises(CompressionError, match=r"compressed offset \d+"):
        feed_all(ZstdIndexer(), bytes(bad))
    # a block header claiming a block larger than 128 KiB
    one = zstd_one(b"x" * 1000)
    hdr = 4 + 1 + 1  # magic, descriptor, window byte (no content size, no dict)
    bad = bytearray(one)
    bad[hdr:hdr + 3] = ((200_000 << 3) | 0b101).to_bytes(3, "little")  # last, compressed
    with pytest.raises(CompressionError, match=r"block of 200000 bytes"):
        feed_all(ZstdIndexer(), bytes(bad))


def zstd_one(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(write_content_size=False, write_checksum=True).compress(data)


def make_frames(blob: bytes) -> list[tuple[int, int, int, int]]:
    ix = ZstdIndexer()
    feed_all(ix, blob)
    return ix.frames


def test_zstd_bomb_output_is_bounded() -> None:
    import zstandard

    blob = zstandard.ZstdCompressor(level=19).compress(b"\0" * (30 << 20))
    ix = ZstdIndexer()
    total = 0
    for out in ix.feed(blob):
        assert len(out) <= OUT_PIECE
        total += len(out)
    ix.finish()
    assert total == 30 << 20


# -- zstd: fed in any pieces, frames walked independently, bombs ---------------------------
def walk_zstd(blob: bytes) -> list[tuple[int, int, int, int]]:
    """The frames table, independently of ZstdIndexer: the whole blob walked by RFC 8878's
    layout (skippable frames, frame header, block headers, checksum), each data frame's size
    from zstandard decoding that frame alone."""
    import zstandard

    frames = []
    pos = uoff = 0
    while pos < len(blob):
        (magic,) = struct.unpack_from("<I", blob, pos)
        if magic & ~0xF == 0x184D2A50:
            (size,) = struct.unpack_from("<I", blob, pos + 4)
            pos += 8 + size
            continue
        assert magic == 0xFD2FB528
        desc = blob[pos + 4]
        single = bool(desc & 0x20)
        fcs_len = [1 if single else 0, 2, 4, 8][desc >> 6]
        end = pos + 5 + (0 if single else 1) + [0, 1, 2, 4][desc & 3] + fcs_len
        while True:
            (head,) = struct.unpack("<I", blob[end:end + 3] + b"\0")
            end += 3 + (1 if head >> 1 & 3 == 1 else head >> 3)
            if head & 1:
                break
        end += 4 if desc & 4 else 0
        usize = len(zstandard.ZstdDecompressor().decompressobj().decompress(blob[pos:end]))
        frames.append((pos, end - pos, uoff, usize))
        uoff += usize
        pos = end
    assert pos == len(blob)
    return frames


def random_pieces(blob: bytes, seed: int) -> list[bytes]:
    """blob cut into pieces of 1 byte .. 3 MiB: half tiny (1-64), half log-uniform."""
    rnd = random.Random(seed)
    out = []
    pos = 0
    while pos < len(blob):
        size = rnd.randint(1, 64) if rnd.random() < 0.5 else int(2 ** rnd.uniform(0, 21.58))
        out.append(blob[pos:pos + size])
        pos += size
    assert max(map(len, out)) <= 3 << 20
    return out


def index_pieces(ix: ZstdIndexer, pieces: list[bytes]) -> list[bytes]:
    outs = []
    for piece in pieces:
        for out in ix.feed(piece):
            assert 0 < len(out) <= OUT_PIECE
            outs.append(out)
    ix.finish()
    return outs


def skippable(data: bytes, nibble: int = 0) -> bytes:
    return struct.pack("<II", 0x184D2A50 | nibble, len(data)) + data


def handmade_frame(blocks: list[tuple[int, bytes]]) -> bytes:
    """A zstd frame built by hand: no content size, no checksum, 128 KiB window; blocks are
    (0, raw bytes) or (n, one byte): an RLE block of that byte repeated n times."""
    out = [struct.pack("<IBB", 0xFD2FB528, 0x00, 7 << 3)]  # window 2**(10+7)
    for i, (n, data) in enumerate(blocks):
        last = i == len(blocks) - 1
        if n:
            out.append(((n << 3) | 2 | last).to_bytes(3, "little") + data)
        else:
            out.append(((len(data) << 3) | last).to_bytes(3, "little") + data)
    return b"".join(out)


def small_zstd_blob() -> bytes:
    """A few KiB holding every frame kind: skippable (first and between), content size and
    checksum, empty, neither, RLE and raw blocks, zero-size raw block."""
    import zstandard

    payload = make_payload(5, 6000)
    return b"".join([
        skippable(b"first", 3),
        zstandard.ZstdCompressor(write_checksum=True).compress(payload[:3000]),
        zstandard.ZstdCompressor().compress(b""),
        skippable(b""),
        zstandard.ZstdCompressor(write_content_size=False,
                                 write_checksum=False).compress(payload[3000:] + b"a" * 5000),
        handmade_frame([(3000, b"z"), (0, b"raw bytes"), (0, b""), (1, b"q"), (0, b"end")]),
    ])


@pytest.mark.parametrize("name", list(ZSTD_BLOBS))
@pytest.mark.parametrize("seed", range(3))
def test_zstd_random_pieces(work: Path, name: str, seed: int) -> None:
    path, full = make_zstd(work, name)
    blob = path.read_bytes()
    ix = ZstdIndexer()
    assert b"".join(index_pieces(ix, random_pieces(blob, seed))) == full
    assert ix.total_in == len(blob) and ix.total_out == len(full)
    assert ix.access().frames == walk_zstd(blob)


def test_zstd_frames_match_independent_walk(work: Path) -> None:
    blobs = [make_zstd(work, name)[0].read_bytes() for name in ZSTD_BLOBS]
    for blob in blobs + [small_zstd_blob()]:
        ix = ZstdIndexer()
        index_pieces(ix, [blob])
        assert ix.access().frames == walk_zstd(blob)


def test_zstd_piece_sizes(work: Path) -> None:
    """1 MiB feeds of a 2.5 MB frame: pieces stay <= OUT_PIECE and are mostly big."""
    path, full = make_zstd(work, "plain")
    blob = path.read_bytes()
    pieces = [blob[i:i + (1 << 20)] for i in range(0, len(blob), 1 << 20)]
    outs = index_pieces(ZstdIndexer(), pieces)
    assert b"".join(outs) == full
    assert sum(len(o) < 64 << 10 for o in outs) <= 2 * len(pieces)
    assert max(map(len, outs)) == OUT_PIECE


def test_zstd_split_anywhere() -> None:
    """Every header, block and checksum cut at every byte, in two and in three feeds."""
    import zstandard

    blob = small_zstd_blob()
    frames = walk_zstd(blob)
    assert len(frames) == 4 and frames[1][3] == 0
    full = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True).read()
    for cut in range(len(blob) + 1):
        ix = ZstdIndexer()
        assert b"".join(index_pieces(ix, [blob[:cut], blob[cut:]])) == full, cut
        assert ix.frames == frames
    rnd = random.Random(7)
    for _ in range(1000):
        i, j = sorted(rnd.randrange(len(blob) + 1) for _ in range(2))
        ix = ZstdIndexer()
        assert b"".join(index_pieces(ix, [blob[:i], blob[i:j], blob[j:]])) == full, (i, j)
        assert ix.frames == frames


def bomb_check(blob: bytes, size: int, pieces: list[bytes]) -> None:
    """Index a bomb of `size` zero bytes: pieces <= OUT_PIECE, Python memory stays small."""
    zeros = bytes(OUT_PIECE)
    ix = ZstdIndexer()
    total = count = 0
    tracemalloc.start()
    try:
        for piece in pieces:
            for out in ix.feed(piece):
                assert 0 < len(out) <= OUT_PIECE and out == zeros[:len(out)]
                total += len(out)
                count += 1
        ix.finish()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == size == ix.total_out
    assert count >= size // OUT_PIECE
    assert peak < 8 * OUT_PIECE, peak  # a few pieces alive at once, never the whole output
    assert ix.access().frames == [(0, len(blob), 0, size)]


def test_zstd_rle_bomb_is_bounded() -> None:
    """2 GiB from 64 KiB: hand-built RLE blocks (4 bytes -> 128 KiB each)."""
    size = 2 << 30
    blob = handmade_frame([(BLOCK, b"\0")] * (size // BLOCK))
    assert len(blob) < 70_000
    bomb_check(blob, size, [blob])  # all in one feed
    bomb_check(blob, size, random_pieces(blob, 3))


def test_zstd_tool_bomb_is_bounded(tmp_path: Path) -> None:
    """512 MiB of zeros streamed through `zstd -1` (no content size; RLE + tiny blocks)."""
    need("zstd")
    size = 512 << 20
    with subprocess.Popen(["zstd", "-q", "-1", "-c"], stdin=subprocess.PIPE,
                          stdout=(tmp_path / "bomb.zst").open("wb")) as z:
        assert z.stdin is not None
        zeros = bytes(4 << 20)
        for _ in range(size // len(zeros)):
            z.stdin.write(zeros)
        z.stdin.close()
    assert z.returncode == 0
    blob = (tmp_path / "bomb.zst").read_bytes()
    assert len(blob) < 100_000
    bomb_check(blob, size, [blob])


def test_zstd_more_errors() -> None:
    import zstandard

    payload = make_payload(6, 3000)
    one = zstandard.ZstdCompressor(write_checksum=True).compress(payload)
    pre = skippable(b"x" * 10)
    off = len(pre)
    desc = one[4]
    assert desc & 0x20 and desc >> 6 == 1  # single segment, 2-byte content size
    # a flipped checksum byte: the decoder's check, named with the frame's offset
    bad = bytearray(pre + one)
    bad[-1] ^= 1
    with pytest.raises(CompressionError,
                       match=rf"zstd frame at compressed offset {off}: .*checksum"):
        index_pieces(ZstdIndexer(), [bytes(bad)])
    # the content size says one byte more / less than the frame holds
    for delta in (1, -1):
        bad = bytearray(pre + one)
        bad[off + 5:off + 7] = (len(payload) - 256 + delta).to_bytes(2, "little")
        with pytest.raises(CompressionError, match=rf"zstd frame at compressed offset {off}: "):
            index_pieces(ZstdIndexer(), [bytes(bad)])
    # the reserved bit of the frame header descriptor
    bad = bytearray(pre + one)
    bad[off + 4] |= 0x08
    with pytest.raises(CompressionError, match=rf"compressed offset {off}: reserved bit"):
        index_pieces(ZstdIndexer(), [bytes(bad)])
    # reserved block type (3) in the second frame's first block header
    hand = handmade_frame([(0, b"abc")])
    bad = bytearray(one + hand)
    bad[len(one) + 6] |= 0b110
    with pytest.raises(CompressionError, match=rf"compressed offset {len(one)}: reserved block "
                                               rf"type at compressed offset {len(one) + 6}"):
        index_pieces(ZstdIndexer(), [bytes(bad[:len(one) + 7]), bytes(bad[len(one) + 7:])])
    # a raw block header claiming 200000 bytes, split across feeds
    bad = bytearray(hand)
    bad[6:9] = ((200_000 << 3) | 1).to_bytes(3, "little")
    with pytest.raises(CompressionError, match=r"block of 200000 bytes at compressed offset 6"):
        index_pieces(ZstdIndexer(), [bytes(bad[:7]), bytes(bad[7:])])
    # a frame that ends inside a skippable frame, or in the middle of its checksum
    for cut in (len(pre) - 3, len(pre) + len(one) - 2):
        with pytest.raises(CompressionError, match=r"truncated zstd stream"):
            index_pieces(ZstdIndexer(), [(pre + one)[:cut]])


def test_plain_indexer() -> None:
    ix = make_indexer(PLAIN)
    data = make_payload(11, 2_500_000)
    assert index(ix, data, 1_500_000) == data
    assert ix.total_in == ix.total_out == len(data)
    assert ix.access().kind == PLAIN


def test_make_indexer_unknown() -> None:
    with pytest.raises(ValueError):
        make_indexer("bzip2")


def test_zlib_window_flags_match_python_zlib() -> None:
    """The compiled indexer agrees with Python's zlib on a stream Python made."""
    raw = make_payload(12, 1_000_000)
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = co.compress(raw) + co.flush()
    ix = GzipIndexer(SPAN)
    assert index(ix, blob) == raw
    assert _checkpoint.zlib_version().split(".")[0] == zlib.ZLIB_RUNTIME_VERSION.split(".")[0]
