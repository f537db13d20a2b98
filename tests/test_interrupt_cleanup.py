"""Temp files and fds under an interrupt at every point: an interrupt raised as soon as any
call made by the code under test returns (a signal's exception lands there: after a C call
such as os.open, os.close, mkstemp's open, or a Python call returning) propagates as itself,
leaves no fd open and no temp file, and leaves the destination either as it was or whole.

The interrupt is raised by a profile function (sys.setprofile) on the n-th `c_return` or
`return` event of a call made from the functions under test, for every n up to the number
of such events in an uninterrupted run.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType, FrameType, SimpleNamespace
from typing import Any

import pytest
from samples import leaked_fds, open_fds

from clipcy import publish, tempfiles
from clipcy.archive import prefetch, reader
from clipcy.archive.files import LayerReaders
from clipcy.archive.reader import open_archive
from clipcy.cli import main as clipctl
from clipcy.image import cache as layer_cache
from clipcy.image import indexer
from clipcy.image.layout import Layout
from clipcy.node import FILE
from clipcy.storage import diskcache
from clipcy.storage.registry import RemoteOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
import remoteserv as rs  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "clipcy" / "sample"


class _Interrupter:
    """Counts the returns of calls made by code in `files` (restricted to the functions
    named in `funcs`, or all of a file's functions for names absent from it) and raises
    KeyboardInterrupt on the n-th (n=0: never)."""

    def __init__(self, n: int, where: dict[str, set[str] | None] | set[CodeType]) -> None:
        self.n = n
        self.where = where
        self.events = 0
        self.raised: BaseException | None = None

    def _ours(self, frame: FrameType | None) -> bool:
        if frame is None:
            return False
        code = frame.f_code
        if isinstance(self.where, set):
            return code in self.where
        funcs = self.where.get(code.co_filename, ())
        return funcs is None or code.co_name in funcs

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if self.raised is not None:
            return
        if event == "c_return":
            caller: FrameType | None = frame
        elif event == "return":
            caller = frame.f_back
        else:
            return
        if caller is None or not self._ours(caller):
            return
        self.events += 1
        if self.events == self.n:  # where, for a failure's message
            self.raised = KeyboardInterrupt(f"{caller.f_code.co_name}:{caller.f_lineno} {event} "
                                            f"{getattr(arg, '__name__', type(arg).__name__)}")
            raise self.raised


@contextmanager
def _profiled(it: _Interrupter) -> Iterator[_Interrupter]:
    # No garbage collection while profiled: a collection that runs finalizers (__del__ of an
    # object an earlier test in this worker left) inside one of our frames would add return
    # events there, so that the points of one run would not be those of the next.
    was_enabled = gc.isenabled()
    gc.disable()
    sys.setprofile(it)
    try:
        yield it
    finally:
        sys.setprofile(None)
        if was_enabled:
            gc.enable()


def _every_point(where: dict[str, set[str] | None] | set[CodeType], run: Callable[[int], object],
                 check: Callable[[int, BaseException | None], None]) -> int:
    """run(n) under an interrupt at each point n (n=0: none); check(n, interrupt raised or
    None) after each. Returns the number of points."""
    before = open_fds()
    with _profiled(_Interrupter(0, where)) as it:
        run(0)
    check(0, None)
    assert not leaked_fds(before)
    total = it.events
    assert total > 3, total
    for n in range(1, total + 1):
        before = open_fds()
        try:
            with _profiled(_Interrupter(n, where)) as it:
                run(n)
        except KeyboardInterrupt as e:
            assert e is it.raised, n  # itself, not another error raised over it
            # raised in a callee's return event, its traceback holds the callee's frame
            # (a signal's would not): dropped so that its locals can go
            e.__traceback__ = None
        else:
            raise AssertionError(f"no interrupt at point {n} of {total}")
        # (collected only when an fd is still open: a full collection per point is most of
        # the test's time)
        assert not leaked_fds(before), f"fd left open after an interrupt at {n}: {it.raised}"
        check(n, it.raised)
    return total


def _file(mod: Any) -> str:
    return mod.__file__  # type: ignore[no-any-return]


def test_tempfile_every_point(tmp_path: Path) -> None:
    dest = tmp_path / "dest"

    def run(n: int) -> None:
        tmp = tempfiles.TempFile(tmp_path, ".dest.", ".tmp")
        try:
            fd = tmp.create()
            os.write(fd, b"new %d" % n)
            tmp.close()
            os.replace(tmp.path, dest)
        except BaseException:
            tmp.discard()
            raise

    def check(n: int, interrupted: BaseException | None) -> None:
        assert [p.name for p in tmp_path.iterdir()] == ["dest"], n
        dest.write_bytes(b"old")

    _every_point({_file(tempfiles): None, __file__: {"run"}}, run, check)


def test_tempfile_discard_keeps_another_file(tmp_path: Path) -> None:
    """create() failing (the name taken) leaves the other file alone."""
    tmp = tempfiles.TempFile(tmp_path, "x.")
    Path(tmp.path).write_bytes(b"another's")
    with pytest.raises(FileExistsError):
        tmp.create()
    tmp.discard()
    assert Path(tmp.path).read_bytes() == b"another's"


def test_write_atomic_every_point(tmp_path: Path) -> None:
    out = tmp_path / "x.clip"
    out.write_bytes(b"old")
    new = b"new archive " * 1000

    def check(n: int, interrupted: BaseException | None) -> None:
        assert [p.name for p in tmp_path.iterdir()] == ["x.clip"], n
        assert out.read_bytes() in (b"old", new), n
        out.write_bytes(b"old")

    _every_point({_file(tempfiles): None, _file(indexer): {"write_atomic"}},
                 lambda n: indexer.write_atomic(out, new), check)


@pytest.mark.skipif(not rs.have_tools(), reason="docker-registry/skopeo absent")
def test_pull_every_point(tmp_path: Path) -> None:
    """pull_archive (clipctl pull) and fetch_by_reference (an archive opened by image
    reference, kept in the cache): no .part file left, the output absent or whole."""
    reg = rs.Registry(tmp_path / "registry")
    try:
        r = reg.push(SAMPLE, "latest", "sample", "latest")
        assert r.returncode == 0, r.stderr
        arc = tmp_path / "sample.clip"
        assert clipctl(["-q", "index-layout", "--layout", str(SAMPLE), "--tag", "latest",
                        "--out", str(arc), "--no-cache"]) == 0
        repo = f"docker://{reg.host}/sample"
        assert clipctl(["-q", "push", str(arc), repo]) == 0
        ref = f"{repo}:latest"
        want = arc.read_bytes()

        got = tmp_path / "got"
        got.mkdir()
        out = got / "x.clip"

        def check_pull(n: int, interrupted: BaseException | None) -> None:
            assert [p.name for p in got.iterdir()] in ([], ["x.clip"]), n
            assert not out.exists() or out.read_bytes() == want, n
            out.unlink(missing_ok=True)

        _every_point({_file(tempfiles): None, _file(publish): {"pull_archive"}},
                     lambda n: publish.pull_archive(ref, out), check_pull)

        cache = tmp_path / "cache"
        opts = RemoteOptions(cache_dir=str(cache))

        def check_cached(n: int, interrupted: BaseException | None) -> None:
            kept = list((cache / "archives").iterdir()) if (cache / "archives").exists() else []
            assert [p.name for p in kept if not p.name.endswith(".clip")] == [], n
            assert all(p.read_bytes() == want for p in kept), n
            for p in kept:
                p.unlink()

        _every_point({_file(tempfiles): None, _file(publish): {"fetch_by_reference"}},
                     lambda n: publish.fetch_by_reference(ref, opts), check_cached)
    finally:
        reg.stop()


def test_layer_readers_close_every_point(tmp_path: Path) -> None:
    """LayerReaders.close interrupted at any point (in a reader's close, between two, in
    the store's): every reader and the store's blob fds are closed all the same, and the
    interrupt comes out."""
    arc_path = tmp_path / "sample.clip"
    assert clipctl(["-q", "index-layout", "--layout", str(SAMPLE), "--tag", "latest",
                    "--out", str(arc_path), "--no-cache"]) == 0
    arc = open_archive(arc_path, storage=str(SAMPLE))
    layers = len(arc.metadata["layers"])
    assert layers >= 3
    opened: list[Any] = []

    def run(n: int) -> None:
        store = arc.open_layer_readers()
        opened[:] = [store.reader(i) for i in range(layers)]
        with _profiled(_Interrupter(n, codes)) as it:
            try:
                store.close()
            finally:
                counts.append(it.events)

    def check(n: int, interrupted: BaseException | None) -> None:
        assert all(r._closed for r in opened), n

    counts: list[int] = []
    codes = {LayerReaders.close.__code__, LayerReaders._close_readers.__code__}
    try:  # the profile around the close only: opening the readers is not under test
        before = open_fds()
        run(0)
        check(0, None)
        assert not leaked_fds(before)
        total = counts[-1]
        assert total >= layers, total
        for n in range(1, total + 1):
            before = open_fds()
            with pytest.raises(KeyboardInterrupt) as ei:
                run(n)
            assert not leaked_fds(before), f"fd left open after an interrupt at point {n}"
            check(n, ei.value)
    finally:
        arc.close()


def test_layer_cache_every_point(tmp_path: Path) -> None:
    """The layer cache's entry (writer, add, commit; abort when interrupted, as the indexer
    does) and its fingerprint (remember): no .tmp- file left, an entry whole or absent."""
    d = tmp_path / "cache"
    cache = layer_cache.LayerCache(d)
    where: dict[str, set[str] | None] = {
        _file(tempfiles): None,
        _file(layer_cache): {"remember", "writer", "__init__", "start", "_write", "_record",
                             "commit", "abort"},
        __file__: {"write_entry"},
    }
    access = SimpleNamespace(kind="gzip", span=1 << 20, points=[], frames=[], spans=None)
    sizes: dict[str, int] = {}

    def write_entry(n: int) -> None:
        w = cache.writer("key")
        try:
            assert w.start()
            w.add([])
            w.commit(access, "gzip", 123, "sha256:" + "0" * 64, None)  # type: ignore[arg-type]
        except BaseException:
            w.abort()
            raise

    def check(n: int, interrupted: BaseException | None) -> None:
        names = sorted(p.name for p in d.iterdir()) if d.exists() else []
        assert not [x for x in names if x.startswith(".tmp-")], (n, names)
        for p in d.glob("*"):
            if not interrupted:
                sizes[p.suffix] = p.stat().st_size
            assert p.stat().st_size == sizes[p.suffix], (n, p)  # whole
            p.unlink()

    _every_point(where, write_entry, check)
    _every_point(where, lambda n: cache.remember("key", (1, 2, 3, 4, 5)), check)
    assert set(sizes) == {".layer", ".fp"}


def test_span_cache_every_point(tmp_path: Path) -> None:
    """DiskSpanCache.put (and the eviction a put starts): no .tmp- file left, no lock fd
    left open, every entry there whole."""
    root = tmp_path / "spans"
    cache = diskcache.DiskSpanCache(root, 12_000)  # the fourth put evicts
    digest = "sha256:" + "ab" * 32
    data = [bytes([k]) * 3000 for k in range(5)]

    def put_all(n: int) -> None:
        for k, d in enumerate(data):
            assert cache.put(digest, k * 3000, d)

    def check(n: int, interrupted: BaseException | None) -> None:
        files = [p for p in root.rglob("*") if p.is_file() and p.name != "lock"]
        assert not [p for p in files if p.name.startswith(".tmp-")], n
        assert len(files) <= len(data)
        kept = [k for k, d in enumerate(data) if cache.get(digest, k * 3000, 3000) == d]
        assert len(kept) == len(files), n  # each entry there is whole
        if not interrupted:
            assert len(files) < len(data)  # evicted some
        shutil.rmtree(root, ignore_errors=True)
        cache._approx = None

    _every_point({_file(tempfiles): None, _file(diskcache): {"put", "evict", "_unlink"}},
                 put_all, check)


def test_archive_open_close_every_point(tmp_path: Path) -> None:
    """An Archive opened and closed (its layer readers open) with an interrupt at any
    point of Archive.__init__ or Archive.close: no fd left open."""
    arc_path = tmp_path / "sample.clip"
    assert clipctl(["-q", "index-layout", "--layout", str(SAMPLE), "--tag", "latest",
                    "--out", str(arc_path), "--no-cache"]) == 0

    def run(n: int) -> None:
        with reader.Archive(arc_path, storage=str(SAMPLE)) as arc:
            arc.layer_readers().reader(0)

    _every_point({reader.Archive.__init__.__code__, reader.Archive.close.__code__}, run,
                 lambda n, interrupted: None)


def test_index_run_source_every_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """index-layout interrupted at each point of IndexRun.run_source (the source opened,
    the resolve step ending, the run, the close): the source closed, no fd left open, no
    temp file, the archive absent or whole."""
    out = tmp_path / "out" / "x.clip"
    out.parent.mkdir()
    want: list[bytes] = []
    sources: list[Any] = []

    class Source(Layout):
        closed = False

        def __init__(self, *a: Any) -> None:
            super().__init__(*a)
            sources.append(self)

        def close(self) -> None:
            self.closed = True
            super().close()

    monkeypatch.setattr(indexer, "Layout", Source)

    def run(n: int) -> None:
        indexer.create_index_only_archive_from_oci_layout(SAMPLE, "latest", out)

    def check(n: int, interrupted: BaseException | None) -> None:
        if not interrupted:
            want.append(out.read_bytes())
        assert [p.name for p in out.parent.iterdir()] in ([], ["x.clip"]), n
        assert not out.exists() or out.read_bytes() == want[0], n
        out.unlink(missing_ok=True)
        assert len(sources) == 1 or (interrupted and not sources), n
        # not closed only when the interrupt lands as open_source() returns, before the
        # source is assigned: a window no caller can close
        assert all(src.closed for src in sources) or "return Source" in str(interrupted), n
        sources.clear()

    _every_point({indexer.IndexRun.run_source.__code__}, run, check)


def test_prefetch_attach_every_point(tmp_path: Path) -> None:
    """A prefetch list resolved in the archive read from a memfd: no fd left open whatever
    point an interrupt lands on."""
    arc_path = tmp_path / "sample.clip"
    assert clipctl(["-q", "index-layout", "--layout", str(SAMPLE), "--tag", "latest",
                    "--out", str(arc_path), "--no-cache"]) == 0
    with open_archive(arc_path) as arc:
        paths = [n.path for n in arc.walk() if n.type == FILE][:3]
    assert paths
    data = arc_path.read_bytes()
    _every_point({prefetch.attach_paths.__code__},
                 lambda n: prefetch.attach_paths(data, paths, "list"),
                 lambda n, interrupted: None)
