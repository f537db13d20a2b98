"""The mount's decompressed-span cache (clipcy.fusemount.spans) over real layer readers.

A sequential read in small requests decompresses each span once; concurrent readers of one
span wait for a single decompression; the cache stays within its byte budget; bytes are
exact. Runs without FUSE (the cache is plain Python over Archive.layer_reader).
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from clipcy import create_index_only_archive_from_oci_layout, open_archive
from clipcy.fusemount.spans import SpanCache


class Counting:
    """A layer reader that counts what it decompresses."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.bytes = 0
        self.offsets: list[int] = []
        self.lock = threading.Lock()

    def pread(self, off: int, n: int) -> bytes:
        data: bytes = self.inner.pread(off, n)
        with self.lock:
            self.calls += 1
            self.bytes += len(data)
            self.offsets.append(off)
        return data


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spans") / "sample.clip"
    create_index_only_archive_from_oci_layout(str(resources.files("clipcy") / "sample"),
                                              "latest", out)
    return out


def _largest_file(arc: Any) -> Any:
    return max((n for n in arc.walk() if n.type == "file"), key=lambda n: n.size)


def test_sequential_small_requests_decompress_each_span_once(sample: Path) -> None:
    with open_archive(sample) as arc:
        node = _largest_file(arc)
        want = arc.open(node.path).read()
        counter = Counting(arc.layer_reader(node.layer))
        span = 512
        cache = SpanCache(lambda layer: counter, budget=1 << 20, span=span)
        got = b"".join(cache.read(node.layer, node.offset + off, min(100, node.size - off))
                       for off in range(0, node.size, 100))
        assert got == want
        spans = (node.offset + node.size - 1) // span - node.offset // span + 1
        # once per span, not once per 100-byte request (plus at most the one read ahead)
        assert len(set(counter.offsets)) == counter.calls
        assert spans <= counter.calls <= spans + 1
        calls = counter.calls
        again = cache.read(node.layer, node.offset, node.size)
        assert again == want and counter.calls == calls


def test_concurrent_readers_share_one_decompression(sample: Path) -> None:
    with open_archive(sample) as arc:
        node = _largest_file(arc)
        want = arc.open(node.path).read()
        counter = Counting(arc.layer_reader(node.layer))
        cache = SpanCache(lambda layer: counter, budget=1 << 20, span=256)
        results: list[bytes] = []
        barrier = threading.Barrier(8)

        def read() -> None:
            barrier.wait()
            results.append(cache.read(node.layer, node.offset, node.size))

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [want] * 8
        spans = (node.offset + node.size - 1) // 256 - node.offset // 256 + 1
        assert len(set(counter.offsets)) == counter.calls  # no span twice
        assert spans <= counter.calls <= spans + 1


def test_budget_bounds_the_cache(sample: Path) -> None:
    with open_archive(sample) as arc:
        files = [n for n in arc.walk() if n.type == "file" and n.size]
        cache = SpanCache(arc.layer_reader, budget=1000, span=256)
        for n in files:
            assert cache.read(n.layer, n.offset, n.size) == arc.open(n.path).read()
            assert cache.held <= 1000
        cache = SpanCache(arc.layer_reader, budget=0, span=256)  # no cache at all
        n = files[0]
        assert cache.read(n.layer, n.offset, n.size) == arc.open(n.path).read()
        assert cache.held == 0
