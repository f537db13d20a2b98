"""Random-access layer readers (clipcy.layers.blobread) over real layer blobs.

The corpus layouts are built by tests/corpus/build.sh (fixture `corpus`); the
other blobs are made here by gzip/pigz/zstd from a seeded payload. Every read is compared
with a slice of the full decompression by zlib or `zstd -dc`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil
import subprocess
import threading
import tracemalloc
from pathlib import Path

import pytest
from samples import payload

from clipcy.errors import BlobError, ClipError, CompressionError
from clipcy.layers import blobread
from clipcy.layers.access import GZIP, PLAIN, ZSTD, LayerAccess
from clipcy.layers.blobindex import DEFAULT_SPAN, make_indexer
from clipcy.storage.local import open_file
from clipcy.storage.spans import SpanTable, hash_file

pytest.importorskip("clipcy.layers._checkpoint")  # compiled even under CLIPCY_PUREPYTHON


def open_layer_reader(path: Path, access: LayerAccess,
                      spans: SpanTable | None = None) -> blobread.LayerReader:
    """A reader of the blob file at path; its span checksums are those of the file as it is
    now unless given (the tests of the decoders' own checks need the file trusted)."""
    return blobread.open_layer_reader(open_file(path, spans or hash_file(path)), access)


def detect(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return GZIP
    magic = int.from_bytes(head[:4], "little")
    if magic == 0xFD2FB528 or magic & ~0xF == 0x184D2A50:
        return ZSTD
    return PLAIN


def reference(path: Path, kind: str) -> bytes:
    if kind == GZIP:
        return gzip.decompress(path.read_bytes())
    if kind == ZSTD:
        return subprocess.run(["zstd", "-dc", str(path)], check=True,
                              capture_output=True).stdout
    return path.read_bytes()


def index_file(path: Path, kind: str, span: int = DEFAULT_SPAN) -> tuple[LayerAccess, str, int]:
    ix = make_indexer(kind, span=span)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for out in ix.feed(chunk):
                sha.update(out)
    ix.finish()
    assert ix.total_in == path.stat().st_size
    return ix.access(), "sha256:" + sha.hexdigest(), ix.total_out


def layout_layers(layout: Path) -> list[tuple[Path, str]]:
    """(blob path, diff_id) of every layer of every manifest in index.json."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    seen: dict[Path, str] = {}
    for desc in index["manifests"]:
        manifest = json.loads((blobs / desc["digest"].split(":")[1]).read_text())
        if "layers" not in manifest:
            continue
        config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
        for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
            seen[blobs / layer["digest"].split(":")[1]] = diff_id
    return sorted(seen.items())


def random_reads(reader: blobread.LayerReader, full: bytes, count: int, seed: int,
                 sizes: tuple[int, ...] = (1, 100, 4096, 65536, 1 << 20)) -> None:
    rnd = random.Random(seed)
    for _ in range(count):
        off = rnd.randrange(len(full) + 10)
        n = rnd.choice(sizes)
        assert reader.pread(off, n) == full[off:off + n], (reader.path, off, n)


@pytest.mark.parametrize("layout", ["multimember", "zstd-multiframe", "zstd-skippable", "basic",
                                    "big"])
def test_corpus_layers(corpus: Path, layout: str) -> None:
    if shutil.which("zstd") is None:
        pytest.skip("zstd not installed")
    layers = layout_layers(corpus / layout)
    assert layers
    for path, diff_id in layers:
        kind = detect(path.read_bytes()[:4])
        span = DEFAULT_SPAN if layout == "big" else 256 << 10
        access, digest, total_out = index_file(path, kind, span)
        assert digest == diff_id, path
        full = reference(path, kind)
        assert total_out == len(full)
        assert access.kind == kind
        if kind == GZIP:
            assert access.points[0] == (0, 0, 0, b"")
            if len(full) > 4 * span:
                assert len(access.points) > 2
        if kind == ZSTD:
            assert sum(f[3] for f in access.frames) == len(full)
        with open_layer_reader(path, access) as r:
            random_reads(r, full, 60, seed=len(full))
            assert r.pread(len(full) - 5, 100) == full[-5:]
            assert r.pread(len(full), 10) == b""
            if kind == GZIP:  # at and just before each point
                for _, _, out, _ in access.points[:20]:
                    lo = max(0, out - 1000)
                    assert r.pread(lo, 3000) == full[lo:lo + 3000]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("gzip", "pigz", "zstd", "pzstd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    d = tmp_path_factory.mktemp("blobs")
    (d / "a.bin").write_bytes(payload(21, 3_000_000))
    (d / "b.bin").write_bytes(payload(22, 900_000))
    (d / "e.bin").write_bytes(b"")
    cmds = [
        "gzip -6 -n -c a.bin > g6.gz",
        "gzip -1 -n -c a.bin > g1.gz",
        "gzip -6 -c a.bin > mm.gz && gzip -c e.bin >> mm.gz && pigz -i -c b.bin >> mm.gz",
        "zstd -q --no-content-size -c a.bin > mf.zst && zstd -q -c e.bin >> mf.zst && "
        "pzstd -q -p 2 -c b.bin >> mf.zst",
        "zstd -q -c a.bin > one.zst",
    ]
    for cmd in cmds:
        subprocess.run(cmd, shell=True, check=True, cwd=d)
    return d


def test_threads_share_one_reader(blobs: Path) -> None:
    readers = []
    for name, kind in (("mm.gz", GZIP), ("mf.zst", ZSTD), ("a.bin", PLAIN)):
        access, _, _ = index_file(blobs / name, kind, span=128 << 10)
        readers.append((open_layer_reader(blobs / name, access), reference(blobs / name, kind)))
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for r, full in readers:
                random_reads(r, full, 25, seed, sizes=(1, 4096, 65536, 400_000))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r, _ in readers:
        r.close()
    assert not errors, errors[0]


def test_gzip_sequential_and_interleaved_reads(blobs: Path) -> None:
    """Parked decoders serve sequential reads; interleaved streams never mix up."""
    access, _, _ = index_file(blobs / "mm.gz", GZIP, span=256 << 10)
    full = reference(blobs / "mm.gz", GZIP)
    with open_layer_reader(blobs / "mm.gz", access) as r:
        step = 100_003
        assert b"".join(r.pread(off, step) for off in range(0, len(full), step)) == full
        rnd = random.Random(9)
        cursors = [rnd.randrange(len(full)) for _ in range(6)]  # more than CURSORS
        for _ in range(200):
            k = rnd.randrange(len(cursors))
            n = rnd.choice([1, 4096, 65536])
            assert r.pread(cursors[k], n) == full[cursors[k]:cursors[k] + n]
            cursors[k] = min(len(full), cursors[k] + n + rnd.choice([0, 0, 1, 70_000]))


def test_gzip_reader_keeps_windows_compressed(blobs: Path) -> None:
    """A gzip reader keeps its points' 32 KiB windows zstd-compressed (a mount holds its
    readers for its whole life), inflating one only to resume there: what it holds after
    reads is well under the raw windows, which the caller may drop. (close() first lets go
    of the parked decoders and their input, bounded and not the subject here.)"""
    access, _, _ = index_file(blobs / "g6.gz", GZIP, span=64 << 10)
    full = reference(blobs / "g6.gz", GZIP)
    raw = sum(len(p[3]) for p in access.points)
    assert len(access.points) > 20 and raw > 20 * 16384
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # fresh window objects, so that the reader's share is what stays after they go
        copy = LayerAccess(GZIP, access.span,
                           [(c, b, u, memoryview(w).tobytes()) for c, b, u, w in access.points])
        r = open_layer_reader(blobs / "g6.gz", copy)
        del copy
        random_reads(r, full, 40, seed=5, sizes=(1, 4096, 65536))
        for _, _, out, _ in access.points[::3]:  # resumes at many points
            assert r.pread(out, 100) == full[out:out + 100]
        r.close()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < raw // 2, (held, raw)


def decoder_frames(blob: bytes) -> list[tuple[int, int, int, int]]:
    """The frames table found by the decoder alone (no header parsing): each data frame is
    decoded from its start by a fresh zstandard decompressobj, which stops at the frame's
    end and leaves the rest in unused_data; skippable frames are stepped over by length."""
    import zstandard

    frames = []
    pos = uoff = 0
    while pos < len(blob):
        magic = int.from_bytes(blob[pos:pos + 4], "little")
        if magic & ~0xF == 0x184D2A50:
            pos += 8 + int.from_bytes(blob[pos + 4:pos + 8], "little")
            continue
        dobj = zstandard.ZstdDecompressor().decompressobj()
        usize = len(dobj.decompress(blob[pos:]))
        assert dobj.eof
        csize = len(blob) - pos - len(dobj.unused_data)
        frames.append((pos, csize, uoff, usize))
        pos += csize
        uoff += usize
    return frames


@pytest.mark.parametrize("layout", ["zstd", "zstd-multiframe", "zstd-skippable"])
def test_corpus_zstd_frames_match_decoder(corpus: Path, layout: str) -> None:
    """The indexer's frames (header walk) equal the decoder's own frame ends, on the corpus
    layers, fed in 1 MiB reads and in odd 65537-byte ones."""
    layers = [p for p, _ in layout_layers(corpus / layout)
              if detect(p.read_bytes()[:4]) == ZSTD]
    assert layers
    for path in layers:
        blob = path.read_bytes()
        want = decoder_frames(blob)
        assert index_file(path, ZSTD)[0].frames == want, path
        ix = make_indexer(ZSTD)
        for i in range(0, len(blob), 65537):
            for _ in ix.feed(blob[i:i + 65537]):
                pass
        ix.finish()
        assert ix.access().frames == want, path
    if layout == "zstd-multiframe":
        assert any(len(decoder_frames(p.read_bytes())) > 1 for p in layers)


def test_zstd_streamed_frames(blobs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames above FRAME_CACHE_MAX are streamed; parked decoders serve sequential reads."""
    monkeypatch.setattr(blobread, "FRAME_CACHE_MAX", 0)
    for name in ("one.zst", "mf.zst"):
        access, _, _ = index_file(blobs / name, ZSTD)
        full = reference(blobs / name, ZSTD)
        with open_layer_reader(blobs / name, access) as r:
            step = 300_007
            got = [r.pread(off, step) for off in range(0, len(full), step)]
            assert b"".join(got) == full
            random_reads(r, full, 30, seed=3)


def test_zstd_checksum_checked_at_frame_end(blobs: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    access, _, _ = index_file(blobs / "one.zst", ZSTD)
    full = reference(blobs / "one.zst", ZSTD)
    bad = bytearray((blobs / "one.zst").read_bytes())
    bad[-1] ^= 0xFF  # the frame's content checksum
    p = tmp_path / "bad.zst"
    p.write_bytes(bad)
    match = rf"layer blob {p}: zstd frame at compressed offset 0: .*checksum"
    with open_layer_reader(p, access) as r:  # small frames are decompressed whole: checked
        with pytest.raises(CompressionError, match=match):
            r.pread(0, 1000)
    monkeypatch.setattr(blobread, "FRAME_CACHE_MAX", 0)
    with open_layer_reader(p, access) as r:  # streamed: checked when a read reaches the end
        assert r.pread(0, 1000) == full[:1000]
        with pytest.raises(CompressionError, match=match):
            r.pread(len(full) - 10, 10)


def test_truncated_blob_is_refused(blobs: Path, tmp_path: Path) -> None:
    for name, kind in (("g6.gz", GZIP), ("mf.zst", ZSTD)):
        access, _, _ = index_file(blobs / name, kind, span=128 << 10)
        p = tmp_path / name
        p.write_bytes((blobs / name).read_bytes()[:-20_000])
        with pytest.raises(BlobError, match=rf"layer blob {p} is \d+ bytes, shorter than"):
            open_layer_reader(p, access)
        if kind == GZIP:  # cut after the last point: the read names the blob and the offset
            last = access.points[-1][0]
            p.write_bytes((blobs / name).read_bytes()[:last + 100])
            with open_layer_reader(p, access) as r:
                with pytest.raises(CompressionError, match=rf"layer blob {p}: truncated gzip "
                                                           r"stream: blob ends at compressed "
                                                           r"offset \d+ inside a member"):
                    r.pread(access.points[-1][2], 1 << 20)


def test_changed_gzip_blob_never_gives_wrong_bytes(blobs: Path, tmp_path: Path) -> None:
    """Index gzip -6, then put gzip -1 of the same data in its place: resuming fails loudly.

    (A change that keeps resume points decodable is not always caught mid-member: see the
    limits in blobread's docstring. A re-encoded blob moves every block, which is caught.)
    """
    access, _, _ = index_file(blobs / "g6.gz", GZIP, span=64 << 10)
    full = reference(blobs / "g6.gz", GZIP)
    p = tmp_path / "changed.gz"
    p.write_bytes((blobs / "g1.gz").read_bytes())
    failed = 0
    with open_layer_reader(p, access) as r:
        for _, _, out, _ in access.points[1:]:
            try:
                data = r.pread(out, 65536)
            except CompressionError as e:
                assert str(p) in str(e)
                failed += 1
                continue
            assert data == full[out:out + 65536]
    assert failed >= len(access.points) - 2


def test_flipped_byte_under_a_read(blobs: Path, tmp_path: Path) -> None:
    access, _, _ = index_file(blobs / "g6.gz", GZIP, span=64 << 10)
    full = reference(blobs / "g6.gz", GZIP)
    blob = bytearray((blobs / "g6.gz").read_bytes())
    blob[-7] ^= 0x10  # the CRC: a read that reaches the member end must fail
    p = tmp_path / "crc.gz"
    p.write_bytes(blob)
    with open_layer_reader(p, access) as r:
        assert r.pread(1000, 1000) == full[1000:2000]
        with pytest.raises(CompressionError, match=r"incorrect data check"):
            r.pread(0, len(full) + 1)  # from the member start: gzip mode checks the CRC


def test_plain_reader_and_misuse(blobs: Path) -> None:
    full = (blobs / "a.bin").read_bytes()
    r = open_layer_reader(blobs / "a.bin", LayerAccess(kind=PLAIN))
    random_reads(r, full, 20, seed=1)
    with pytest.raises(ValueError):
        r.pread(-1, 10)
    r.close()
    with pytest.raises(ValueError, match="closed"):
        r.pread(0, 10)
    with pytest.raises(BlobError, match="failed to open layer blob"):
        open_layer_reader(blobs / "missing", LayerAccess(kind=PLAIN), hash_file(blobs / "a.bin"))
    with pytest.raises(ValueError):
        open_layer_reader(blobs / "a.bin", LayerAccess(kind="lz4"))
    with pytest.raises(CompressionError, match=r"invalid gzip access data for .*g6.gz: no point "
                                               r"at offset 0"):
        open_layer_reader(blobs / "g6.gz", LayerAccess(kind=GZIP))


@pytest.mark.parametrize(("points", "why"), [
    ([(0, 0, 0, b""), (10, 8, 100, b"x")], "out of range"),
    ([(0, 0, 0, b""), (10, 1, 100, b"x" * 40000)], "window of 40000 bytes"),
    ([(0, 0, 0, b""), (50, 1, 100, b"x"), (20, 1, 200, b"x")], "lies before point 1"),
    ([(0, 0, 0, b""), (10, 1, 100, "text")], "wrong type"),
    ([(5, 0, 0, b"")], "no point at offset 0"),
])
def test_hostile_gzip_access(blobs: Path, points: list, why: str) -> None:
    with pytest.raises(CompressionError, match=why):
        open_layer_reader(blobs / "g6.gz", LayerAccess(kind=GZIP, points=points))


@pytest.mark.parametrize(("frames", "why"), [
    ([(0, 10, 0, 5), (5, 10, 5, 5)], "overlaps"),
    ([(0, 10, 0, 5), (10, 10, 6, 5)], "expected 5"),
    ([(0, 0, 0, 5)], "overlaps or is empty"),
    ([(0, 10, 0, -1)], "overlaps or is empty"),
])
def test_hostile_zstd_access(blobs: Path, frames: list, why: str) -> None:
    with pytest.raises(CompressionError, match=why):
        open_layer_reader(blobs / "mf.zst", LayerAccess(kind=ZSTD, frames=frames))
    assert issubclass(CompressionError, ClipError)
