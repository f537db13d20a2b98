"""clipcy.storage.spans: span checksums at index time, and VerifiedBlob's reads (one fetch
per run of missing spans, a store cache whose hits are checked again, thread safety)."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import blake3
import pytest

from clipcy.archive.format import CHECKSUM_BLAKE3, CHECKSUM_BLAKE3_128
from clipcy.errors import BlobError, SpanChecksumError
from clipcy.storage.local import LocalBlob, LocalStore, open_file
from clipcy.storage.spans import (
    SPAN_SIZE,
    BlobSource,
    SpanHasher,
    SpanTable,
    VerifiedBlob,
    hash_file,
)

DIGEST = "sha256:" + "ab" * 32


class Source(BlobSource):
    """An in-memory blob that counts its fetches."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.size = len(data)
        self.digest = DIGEST
        self.calls: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def fetch(self, offset: int, n: int) -> bytes:
        with self.lock:
            self.calls.append((offset, n))
        assert 0 <= offset and offset + n <= self.size
        return bytes(self.data[offset:offset + n])


class DictCache:
    def __init__(self) -> None:
        self.d: dict[tuple[str, int, int], bytes] = {}

    def get(self, digest: str, offset: int, length: int) -> bytes | None:
        return self.d.get((digest, offset, length))

    def put(self, digest: str, offset: int, data: bytes) -> None:
        self.d[(digest, offset, len(data))] = data


def blob_bytes(n: int) -> bytes:
    return random.Random(n).randbytes(n)


def test_hasher_cuts_a_grid_whatever_the_pieces() -> None:
    data = blob_bytes(5 * SPAN_SIZE + 1234)
    whole = SpanHasher()
    whole.update(data)
    pieces = SpanHasher()
    rnd = random.Random(1)
    pos = 0
    while pos < len(data):
        n = rnd.randrange(1, 200_000)
        pieces.update(memoryview(data)[pos:pos + n])
        pos += n
    t = whole.table()
    assert t == pieces.table()
    assert t.lengths == [SPAN_SIZE] * 5 + [1234] and t.size == len(data)
    assert t.kind == CHECKSUM_BLAKE3_128
    assert t.digest(5) == blake3.blake3(data[5 * SPAN_SIZE:]).digest(length=16)
    assert SpanHasher().table().count == 0


def test_full_length_blake3_tables_are_read_too() -> None:
    """Kind 1 (32-byte digests) stays readable; a flipped byte is still refused."""
    data = blob_bytes(3 * SPAN_SIZE + 5)
    cuts = [(i, min(i + SPAN_SIZE, len(data))) for i in range(0, len(data), SPAN_SIZE)]
    table = SpanTable(CHECKSUM_BLAKE3, [b - a for a, b in cuts],
                      b"".join(blake3.blake3(data[a:b]).digest() for a, b in cuts))
    assert table.problem() == "" and len(table.digest(3)) == 32
    assert VerifiedBlob(Source(data), table).pread(10, 2 * SPAN_SIZE) == data[10:2 * SPAN_SIZE + 10]
    src = Source(data)
    src.data[SPAN_SIZE] ^= 0x40
    with pytest.raises(SpanChecksumError):
        VerifiedBlob(src, table).pread(SPAN_SIZE, 1)


def test_reads_fetch_each_run_of_missing_spans_once() -> None:
    data = blob_bytes(10 * SPAN_SIZE)
    h = SpanHasher()
    h.update(data)
    src = Source(data)
    vb = VerifiedBlob(src, h.table())
    # four spans, none verified yet: one fetch of exactly those spans
    assert vb.pread(SPAN_SIZE + 10, 3 * SPAN_SIZE) == data[SPAN_SIZE + 10:4 * SPAN_SIZE + 10]
    assert src.calls == [(SPAN_SIZE, 4 * SPAN_SIZE)]
    # spans 1..4 are now recent: a read of 0..6 fetches span 0 and span 5..6, one call each
    src.calls.clear()
    assert vb.pread(0, 7 * SPAN_SIZE) == data[:7 * SPAN_SIZE]
    assert src.calls == [(0, SPAN_SIZE), (5 * SPAN_SIZE, 2 * SPAN_SIZE)]
    assert vb.pread(len(data) - 5, 100) == data[-5:]  # short only at the end
    assert vb.pread(len(data), 10) == b""


def test_a_changed_span_is_refused_naming_blob_and_offset() -> None:
    data = blob_bytes(4 * SPAN_SIZE)
    h = SpanHasher()
    h.update(data)
    src = Source(data)
    src.data[2 * SPAN_SIZE + 7] ^= 1
    vb = VerifiedBlob(src, h.table())
    assert vb.pread(0, 2 * SPAN_SIZE) == data[:2 * SPAN_SIZE]  # untouched spans still read
    with pytest.raises(SpanChecksumError, match=rf"layer blob {DIGEST} has changed: span "
                                                rf"checksum mismatch at compressed offset "
                                                rf"{2 * SPAN_SIZE} \({SPAN_SIZE} bytes\)"):
        vb.pread(2 * SPAN_SIZE + 100, 10)
    with pytest.raises(SpanChecksumError):  # never remembered as good
        vb.pread(0, 4 * SPAN_SIZE)


def test_store_cache_hits_are_checked_again() -> None:
    data = blob_bytes(3 * SPAN_SIZE)
    h = SpanHasher()
    h.update(data)
    cache = DictCache()
    src = Source(data)
    assert VerifiedBlob(src, h.table(), cache).pread(0, len(data)) == data
    assert sorted(cache.d) == [(DIGEST, i * SPAN_SIZE, SPAN_SIZE) for i in range(3)]
    src.calls.clear()
    assert VerifiedBlob(src, h.table(), cache).pread(0, len(data)) == data
    assert src.calls == []  # all from the cache
    cache.d[(DIGEST, SPAN_SIZE, SPAN_SIZE)] = bytes(SPAN_SIZE)  # a damaged cache entry
    assert VerifiedBlob(src, h.table(), cache).pread(0, len(data)) == data
    assert src.calls == [(SPAN_SIZE, SPAN_SIZE)]  # refetched, not trusted
    assert cache.d[(DIGEST, SPAN_SIZE, SPAN_SIZE)] == data[SPAN_SIZE:2 * SPAN_SIZE]


def test_threads_read_one_blob(tmp_path: Path) -> None:
    data = blob_bytes(40 * SPAN_SIZE + 77)
    p = tmp_path / "blob"
    p.write_bytes(data)
    vb = open_file(p, hash_file(p))
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(200):
                off = rnd.randrange(len(data))
                n = rnd.choice([1, 100, SPAN_SIZE, 3 * SPAN_SIZE + 5])
                assert vb.pread(off, n) == data[off:off + n]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    vb.close()


def test_table_and_blob_must_agree(tmp_path: Path) -> None:
    data = blob_bytes(2 * SPAN_SIZE)
    h = SpanHasher()
    h.update(data)
    with pytest.raises(BlobError, match="span checksums cover 131072 bytes, the blob is 5"):
        VerifiedBlob(Source(b"12345"), h.table())
    with pytest.raises(BlobError, match="unusable span checksums .*unknown checksum kind 7"):
        VerifiedBlob(Source(data), SpanTable(7, h.table().lengths, h.table().digests))
    with pytest.raises(BlobError, match="unusable span checksums .*digest bytes"):
        VerifiedBlob(Source(data), SpanTable(1, [SPAN_SIZE, SPAN_SIZE], b"x"))
    # a local blob: a regular file of the descriptor's size, reads bounded by it
    root = tmp_path / "layout"
    (root / "blobs" / "sha256").mkdir(parents=True)
    path = root / "blobs" / "sha256" / ("ab" * 32)
    path.write_bytes(data)
    store = LocalStore(root)
    vb = store.open_blob({"digest": DIGEST, "size": len(data)}, h.table())
    assert vb.pread(5, 10) == data[5:15]
    with pytest.raises(BlobError, match="outside layer blob"):
        LocalBlob(path, DIGEST, len(data)).fetch(len(data) - 1, 2)
    with pytest.raises(BlobError, match="has changed: 131072 bytes, the archive recorded 9"):
        store.open_blob({"digest": DIGEST, "size": 9}, h.table())
    path.unlink()
    os.mkfifo(path)  # opened without blocking, then refused
    with pytest.raises(BlobError, match="is not a regular file"):
        store.open_blob({"digest": DIGEST, "size": len(data)}, h.table())
