"""The mount's decompressed-span cache (clipcy.fusemount.spans) over real layer readers.

A sequential read in small requests decompresses each span once; concurrent readers of one
span wait for a single decompression; a sequential reader has the helper thread inflate the
spans ahead of it, never past the file's end or the layer stream's, and leaves only a few
spans behind it (spans read out of order stay); parts() hands out the
cached spans themselves; the cache stays within its byte budget; bytes are exact. Runs
without FUSE (the cache is plain Python over Archive.layer_reader).
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from clipcy import create_index_only_archive_from_oci_layout, open_archive
from clipcy.fusemount.spans import AHEAD, BEHIND, SpanCache


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


def _counted(arc: Any, span: int) -> tuple[Any, bytes, Counting, SpanCache]:
    """The archive's largest file, its bytes, and a span cache over a counting reader of
    its layer."""
    node = _largest_file(arc)
    want = arc.open(node.path).read()
    counter = Counting(arc.layer_reader(node.layer))
    return node, want, counter, SpanCache(lambda layer: counter, budget=1 << 20, span=span)


def test_sequential_small_requests_decompress_each_span_once(sample: Path) -> None:
    with open_archive(sample) as arc:
        span = 512
        node, want, counter, cache = _counted(arc, span)
        end = node.offset + node.size  # as the mount passes it: read-ahead stops there
        held = []
        got = b""
        for off in range(0, node.size, 100):
            got += cache.read(node.layer, node.offset + off, min(100, node.size - off), end)
            held.append(cache.held)
        assert got == want
        spans = (node.offset + node.size - 1) // span - node.offset // span + 1
        # once per span, not once per 100-byte request, and none past the file's end
        assert len(set(counter.offsets)) == counter.calls
        assert counter.calls == spans
        # a stream keeps the spans read ahead and BEHIND spans behind the reader, not the
        # whole file (the kernel has its pages): the budget would hold 2048 spans
        assert spans > 4 * (AHEAD + BEHIND)
        assert max(held) <= (AHEAD + BEHIND + 2) * span


def test_spans_read_out_of_order_stay_cached(sample: Path) -> None:
    with open_archive(sample) as arc:
        span = 512
        node, want, counter, cache = _counted(arc, span)
        end = node.offset + node.size
        first, last = node.offset // span, (end - 1) // span
        for k in reversed(range(first, last + 1)):  # not a stream: nothing is dropped
            lo = max(k * span, node.offset)
            got = cache.read(node.layer, lo, min((k + 1) * span, end) - lo, end)
            assert got == want[lo - node.offset:lo - node.offset + len(got)]
        calls = counter.calls
        assert calls == last - first + 1
        assert cache.read(node.layer, node.offset, node.size) == want
        assert counter.calls == calls and cache.held == calls * span


def test_concurrent_readers_share_one_decompression(sample: Path) -> None:
    with open_archive(sample) as arc:
        node, want, counter, cache = _counted(arc, 256)
        n = (BEHIND - 2) * 256  # the request of 8 threads at once, fewer spans than BEHIND
        results: list[bytes] = []
        barrier = threading.Barrier(8)

        def read() -> None:
            barrier.wait()
            results.append(cache.read(node.layer, node.offset, n, node.offset + n))

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [want[:n]] * 8
        spans = (node.offset + n - 1) // 256 - node.offset // 256 + 1
        assert len(set(counter.offsets)) == counter.calls  # no span twice
        assert counter.calls == spans


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


class _Marker:
    """A request for the helper thread that asks for no span: unpacking it (the helper's
    first step with a request) sets `seen`."""

    def __init__(self) -> None:
        self.seen = threading.Event()

    def __iter__(self) -> Any:
        self.seen.set()
        return iter((0, 1, 0, None))  # spans 1..0: none


def _helper_idle(cache: SpanCache) -> None:
    """Return once the read-ahead helper has done every request made so far: it takes them
    one at a time, in order, so when it reaches a marker queued now, the earlier ones are
    done (no clock involved)."""
    assert cache._helper is not None, "no read-ahead was asked for"
    marker = _Marker()
    cache._ahead.put(marker)  # type: ignore[arg-type]
    assert marker.seen.wait(60)


def test_read_ahead_runs_ahead_of_a_sequential_reader_up_to_the_file_end(sample: Path) -> None:
    with open_archive(sample) as arc:
        span = 256
        node, want, counter, cache = _counted(arc, span)
        end = node.offset + node.size
        first, last = node.offset // span, (end - 1) // span
        assert last - first > AHEAD + 2
        got = cache.read(node.layer, node.offset, 2 * span, end)
        upto = (node.offset + 2 * span - 1) // span  # spans first..upto, in order
        # sequential: the helper inflates the next AHEAD spans before anyone asks for them
        ahead = {k * span for k in range(upto + 1, upto + 1 + AHEAD)}
        _helper_idle(cache)
        assert ahead <= set(counter.offsets), sorted(counter.offsets)
        pos = node.offset + len(got)
        while pos < end:  # the rest in 1000-byte requests
            got += cache.read(node.layer, pos, min(1000, end - pos), end)
            pos = node.offset + len(got)
        assert got == want
        _helper_idle(cache)  # a helper reading past the end would have done so now
        assert len(set(counter.offsets)) == counter.calls == last - first + 1
        assert max(counter.offsets) == last * span  # none past the file's last span
        assert cache.hits >= AHEAD  # the reader found the spans read ahead


def test_read_ahead_stops_at_the_layer_stream_end(sample: Path) -> None:
    with open_archive(sample) as arc:
        node = _largest_file(arc)
        counter = Counting(arc.layer_reader(node.layer))
        span = 256
        cache = SpanCache(lambda layer: counter, budget=1 << 20, span=span)
        whole = arc.layer_reader(node.layer).pread(0, 1 << 30)  # the layer's whole stream
        start = (len(whole) // span - 4) * span
        got = b""
        for pos in range(start, len(whole) + 3 * span, 100):  # no file end given
            got += cache.read(node.layer, pos, 100)
        assert got == whole[start:]
        _helper_idle(cache)
        # each span once, and the end of the stream (an empty span) found once, not again
        # by every later read-ahead
        assert len(set(counter.offsets)) == counter.calls
        assert max(counter.offsets) <= len(whole)


def test_parts_are_the_cached_spans(sample: Path) -> None:
    with open_archive(sample) as arc:
        node = _largest_file(arc)
        want = arc.open(node.path).read()
        cache = SpanCache(arc.layer_reader, budget=1 << 20, span=4096)
        off, n = 5000, 3 * 4096 + 123  # starts inside a span, ends inside the fourth
        parts = cache.parts(node.layer, node.offset + off, n, node.offset + node.size)
        assert len(parts) >= 4 and sum(p[2] for p in parts) == n
        assert b"".join(d[lo:lo + ln] for d, lo, ln in parts) == want[off:off + n]
        for data, _, _ in parts:  # the cache's own objects, not copies
            k = next(k for (layer, k), v in cache._lru.items() if v is data)
            assert len(data) == 4096 and k >= 0
        assert cache.read(node.layer, node.offset + off, n) == want[off:off + n]
        # past the end of the layer stream: nothing
        assert cache.parts(node.layer, 1 << 30, 10) == []


class Gated(Counting):
    """A layer reader that records how many decode at once, and holds its first decode
    until another thread waits for it (on `cache`, for `layer`): no sleep decides whether
    the second reader arrives while the decoder runs."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.running = 0
        self.most = 0
        self.started = threading.Event()  # the first decode has begun
        self.waited = threading.Event()  # another thread waits for it
        self.cache: SpanCache | None = None
        self.layer = 0

    def pread(self, off: int, n: int) -> bytes:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            first = not self.started.is_set()
        if first:
            assert self.cache is not None
            # the event this decode sets when done: what a second reader waits on
            ev = self.cache._busy[(self.layer, off // self.cache.span)]
            wait = ev.wait

            def watched(timeout: float | None = None) -> bool:
                self.waited.set()
                return wait(timeout)

            ev.wait = watched  # type: ignore[method-assign]
            self.started.set()
            assert self.waited.wait(60), "no reader waited for the running decoder"
        try:
            return super().pread(off, n)
        finally:
            with self.lock:
                self.running -= 1


def test_a_request_ahead_of_a_running_decoder_waits_for_it(sample: Path) -> None:
    """The kernel's next readahead request (span k) arrives while one decoder is still a few
    spans before k: it waits for that decoder instead of starting a second one from a resume
    point (which would inflate up to a resume interval again)."""
    with open_archive(sample) as arc:
        node = _largest_file(arc)
        want = arc.open(node.path).read()
        slow = Gated(arc.layer_reader(node.layer))
        span = 4096
        # room for 3 spans: below 4, no helper thread (two readers only)
        cache = SpanCache(lambda layer: slow, budget=3 * span, span=span)
        slow.cache, slow.layer = cache, node.layer
        first = node.offset // span + 1
        got: dict[str, bytes] = {}

        def read(name: str, k: int, n: int) -> None:
            got[name] = cache.read(node.layer, k * span, n * span)

        a = threading.Thread(target=read, args=("a", first, 6))  # spans first..first+5
        a.start()
        assert slow.started.wait(10)
        b = threading.Thread(target=read, args=("b", first + 3, 2))  # while a is at first
        b.start()
        a.join()
        b.join()
        lo = first * span - node.offset
        assert got["a"] == want[lo:lo + 6 * span]
        assert got["b"] == want[lo + 3 * span:lo + 5 * span]
        assert slow.most == 1  # one decoder at a time
        assert len(set(slow.offsets)) == slow.calls == 6


class ByThread(Counting):
    """A layer reader that records which thread decompressed each span."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.by: dict[int, str] = {}

    def pread(self, off: int, n: int) -> bytes:
        data = super().pread(off, n)
        with self.lock:
            self.by[off] = threading.current_thread().name
        return data


def test_two_files_of_one_layer_read_at_once_are_both_read_ahead(sample: Path) -> None:
    """Two sequential readers of one layer, their requests interleaved (as two programs
    reading two files): each is a stream of its own, so the helper reads ahead for both."""
    with open_archive(sample) as arc:
        node = _largest_file(arc)
        want = arc.open(node.path).read()
        counter = ByThread(arc.layer_reader(node.layer))
        span = 256
        cache = SpanCache(lambda layer: counter, budget=1 << 20, span=span)
        # two "files": the first and the second half of the largest file (their own ends)
        half = node.size // 2
        a, a_end = node.offset, node.offset + half
        b, b_end = node.offset + half + 3 * span, node.offset + node.size
        got_a = got_b = b""

        def helped(lo: int, hi: int) -> bool:
            with counter.lock:
                return any(lo <= off < hi and name == "clipcy-span-ahead"
                           for off, name in counter.by.items())

        rounds = 0
        while a + len(got_a) < a_end or b + len(got_b) < b_end:
            pos = a + len(got_a)
            if pos < a_end:
                got_a += cache.read(node.layer, pos, min(700, a_end - pos), a_end)
            pos = b + len(got_b)
            if pos < b_end:
                got_b += cache.read(node.layer, pos, min(700, b_end - pos), b_end)
            rounds += 1
            if rounds == 3:  # both streams are sequential now: the helper serves both
                _helper_idle(cache)
                assert helped(a, a_end) and helped(b, b_end)
        assert got_a == want[:half]
        assert got_b == want[half + 3 * span:]
        assert len(set(counter.offsets)) == counter.calls  # nothing inflated twice
