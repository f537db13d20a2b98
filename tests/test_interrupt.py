"""Interruptions and failing disks: never a temp file left, never a partial or mixed output.

- SIGINT / SIGTERM in the middle of index-layout (layers streaming, layer cache being
  written) and of extract: exit 130 / 143, one line, no temp file, no output archive, no
  file of the extract cut short. The signal is sent a random time after a progress line, so
  that it lands at a different point of the child each run; the seed is printed (shown with
  a failure) and CLIPCY_INTERRUPT_SEED=N runs the same delays again.
- An interrupt right after each os.close the extractor makes (in process): it propagates as
  itself, no fd is left open, no file is left short.
- ENOSPC writing the archive (a small tmpfs mounted here, root only) and EIO (fsync failing):
  one line, exit 1, no temp file, an existing output untouched.
- Two index-layout runs writing the same --out at once: the result is one of the two
  complete archives, byte for byte.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from samples import leaked_fds, open_fds

from clipcy import extract
from clipcy.archive.reader import open_archive
from clipcy.cli import Terminated
from clipcy.cli import main as clipctl
from clipcy.node import FILE

MAKE: Any = None
_CACHE: dict[str, Any] = {}
SEED = int(os.environ.get("CLIPCY_INTERRUPT_SEED") or random.randrange(1 << 32))
MAX_DELAY = 0.04  # seconds: the signal lands up to this long after its progress line


def _many_entries_layout(root: Path, hostile: Any, layers: int, per_layer: int) -> Path:
    """Layers of many empty files: slow enough to interrupt (seconds), small on disk."""
    tars = []
    for n in range(layers):
        parts = [hostile.header(b"l%d/" % n, b"5")]
        parts += [hostile.header(b"l%d/f%07d" % (n, i)) for i in range(per_layer)]
        parts.append(hostile.END)
        tars.append(b"".join(parts))
    hostile.layout(root, [hostile.tar_layer(t) for t in tars])
    return root


@pytest.fixture
def slow_layout(hostile: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "slow" not in _CACHE:
        root = tmp_path_factory.mktemp("slow") / "layout"
        _CACHE["slow"] = _many_entries_layout(root, hostile, 2, 200_000)
    return _CACHE["slow"]  # type: ignore[no-any-return]


def _content(i: int, size: int) -> bytes:
    """Compressible (the layout builds fast) and different per file and position."""
    line = b"%07d:" % i
    row = line + bytes(range(48, 48 + (64 - len(line) - 1))) + b"\n"
    return (row * (size // len(row) + 1))[:size]


def _content_layout(root: Path, hostile: Any) -> tuple[Path, dict[bytes, bytes]]:
    """Two layers of 10 directories x 150 files of 1 to 4000 bytes, with one of 1.5 MiB every
    50 (written in two pieces, read from a few resume points: most of the extract's time is
    spent in those, so a signal often lands in the middle of one). Two layers: extract
    writes them on two threads, both running when the signal lands."""
    files: dict[bytes, bytes] = {}
    parts = []
    layers = []
    for d in range(20):
        if d == 10:
            parts.append(hostile.END)
            layers.append(hostile.tar_layer(b"".join(parts)))
            parts = []
        parts.append(hostile.header(b"d%02d/" % d, b"5"))
        for k in range(150):
            i = d * 150 + k
            name = b"d%02d/f%05d" % (d, i)
            size = 3 << 19 if i % 50 == 10 else 1 + i * 7 % 4000
            files[b"/" + name] = data = _content(i, size)
            parts.append(hostile.member(name, data))
    parts.append(hostile.END)
    layers.append(hostile.tar_layer(b"".join(parts)))
    hostile.layout(root, layers)
    return root, files


@pytest.fixture
def content_archive(hostile: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive of _content_layout; _CACHE["files"]: path -> content."""
    if "content" not in _CACHE:
        root = tmp_path_factory.mktemp("content")
        layout, _CACHE["files"] = _content_layout(root / "layout", hostile)
        arc = root / "content.clip"
        assert clipctl(
            ["-q", "index-layout", "--layout", str(layout), "--out", str(arc), "--no-cache"]
        ) == 0
        _CACHE["content"] = arc
    return _CACHE["content"]  # type: ignore[no-any-return]


def _assert_whole(dest: Path, arc_path: Path, files: dict[bytes, bytes]) -> int:
    """Every regular file under dest has its archive size and its bytes: none was left cut
    short (the one being written when the interrupt hit is removed). Returns how many."""
    with open_archive(arc_path) as arc:
        sizes = {n.path: n.size for n in arc.walk() if n.type == FILE}
    assert {p: len(b) for p, b in files.items()} == sizes  # the archive describes the image
    seen = 0
    for f in dest.rglob("*"):
        if f.is_symlink() or not f.is_file():
            continue
        path = b"/" + os.fsencode(f.relative_to(dest))
        assert path in sizes, f"{f}: not in the archive"
        assert f.stat().st_size == sizes[path], f"{f}: cut short"
        assert f.read_bytes() == files[path], f"{f}: other bytes"
        seen += 1
    return seen


def _temp_files(*dirs: Path) -> list[Path]:
    """Temp files of the archive writer (.NAME.*.tmp) and of the layer cache (.tmp-*)."""
    out = []
    for d in dirs:
        if d.exists():
            out += [p for p in d.rglob("*") if p.name.startswith(".") and "tmp" in p.name]
    return out


def _start(argv: list[str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-I", "-m", "clipcy", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=dict(os.environ, PYTHONFAULTHANDLER="1"),
    )


def _signal_after(
    p: subprocess.Popen[str], event: str, sig: int, rnd: random.Random, count: int = 1
) -> str:
    """Send sig a random 0 to MAX_DELAY seconds after `count` progress events `event` were
    printed; returns stderr. The delay only moves where the signal lands in the child (every
    landing point must give the same outcome); nothing waits on it."""
    assert p.stderr is not None
    delay = rnd.uniform(0, MAX_DELAY)
    seen = 0
    lines = []
    for line in p.stderr:
        lines.append(line)
        if line.startswith("{") and json.loads(line).get("event") == event:
            seen += 1
            if seen == count:
                break
    else:
        pytest.fail("the run ended before it could be interrupted: " + "".join(lines))
    time.sleep(delay)
    p.send_signal(sig)
    try:
        _, rest = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        _, rest = p.communicate(timeout=30)
        pytest.fail("no exit within 120 s of the signal:\n" + rest)
    return "".join(lines) + rest


@pytest.mark.parametrize(
    ("sig", "rc", "says"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_during_index_layout(
    sig: int, rc: int, says: str, slow_layout: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rnd = _rnd(request)
    out = tmp_path / "out" / "x.clip"
    out.parent.mkdir()
    cache = tmp_path / "cache"
    p = _start(
        [
            "index-layout",
            "--layout",
            str(slow_layout),
            "--out",
            str(out),
            "--progress",
            "json",
            "--cache-dir",
            str(cache),
        ]
    )
    err = _signal_after(p, "layer-start", sig, rnd, count=2)  # both layers streaming
    assert p.returncode == rc, err
    assert err.rstrip().endswith(f"clipctl: {says}"), err
    assert "Traceback" not in err
    assert not out.exists()
    assert _temp_files(out.parent, cache) == []
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("sig", "rc", "says"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_during_extract(
    sig: int, rc: int, says: str, content_archive: Path, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    rnd = _rnd(request)
    dest = tmp_path / "dest"
    p = _start(["extract", str(content_archive), "-C", str(dest), "--progress", "json"])
    err = _signal_after(p, "progress", sig, rnd)  # the first line: after the first file
    assert p.returncode == rc, err
    assert err.rstrip().endswith(f"clipctl: {says}"), err
    assert "Traceback" not in err
    assert _temp_files(dest) == []
    # what was written is the image's files, whole: the file being written at the signal
    # is removed, not left short
    whole = _assert_whole(dest, content_archive, _CACHE["files"])
    assert 1 <= whole < len(_CACHE["files"]), whole


def _rnd(request: pytest.FixtureRequest) -> random.Random:
    """This test's delays: from SEED and the test's id, printed (pytest shows it with a
    failure) so that CLIPCY_INTERRUPT_SEED reproduces them."""
    print(f"CLIPCY_INTERRUPT_SEED={SEED}")
    return random.Random(f"{SEED}:{request.node.nodeid}")


class _InterruptingOs:
    """clipcy.extract's `os`, except that close() closes and then raises an interrupt on
    its n-th call (and, with every=True, on each call after): a signal landing as soon as
    a close returns. n=0: never; `calls` counts them."""

    def __init__(self, n: int, exc: type[BaseException], every: bool = False) -> None:
        self.n, self.exc, self.every = n, exc, every
        self.calls = 0
        self.raised: BaseException | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def close(self, fd: int) -> None:
        os.close(fd)
        self.calls += 1
        if self.n and (self.calls == self.n or (self.every and self.calls > self.n)):
            self.raised = self.exc()
            raise self.raised


@pytest.mark.parametrize("layers", [1, 2])
def test_interrupt_after_every_close(
    hostile: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], layers: int,
) -> None:
    """Every close the extractor makes, followed at once by an interrupt: the interrupt comes
    out as itself (not as "failed to extract ...: Bad file descriptor"), through the API
    and the CLI (exit 130/143), with no fd left open and no file left short. With two
    layers the files are written on two threads, and the interrupt comes from either."""
    big = _content(1, 2 * extract.COPY_PIECE + 123)  # written in three pieces
    files = {b"/top": _content(2, 10), b"/a/x": _content(3, 100),
             b"/a/b/c/f1": _content(4, 3000), b"/a/b/c/big": big, b"/a/b/empty": b""}
    dirs = [hostile.header(b"a/", b"5"), hostile.header(b"a/b/", b"5"),
            hostile.header(b"a/b/c/", b"5")]
    members = [hostile.member(p[1:], d) for p, d in files.items()]
    links = [hostile.header(b"a/b/c/hl", b"1", linkname=b"a/b/c/f1"),  # a second open_parent
             hostile.header(b"a/s", b"2", linkname=b"b/c/f1")]
    if layers == 1:
        tars = [b"".join([*dirs, *members, *links, hostile.END])]
    else:  # /a/b/c/big alone in the second layer
        tars = [b"".join([*dirs, *members[:3], members[4], *links, hostile.END]),
                b"".join([*dirs, members[3], hostile.END])]
    written = (len(files), sum(map(len, files.values())))
    files[b"/a/b/c/hl"] = files[b"/a/b/c/f1"]
    layout = tmp_path / "layout"
    hostile.layout(layout, [hostile.tar_layer(t) for t in tars])
    arc_path = tmp_path / "x.clip"
    assert clipctl(["-q", "index-layout", "--layout", str(layout), "--out", str(arc_path),
                    "--no-cache"]) == 0

    counting = _InterruptingOs(0, KeyboardInterrupt)
    monkeypatch.setattr(extract, "os", counting)
    with open_archive(arc_path) as arc:
        assert extract.extract_archive(arc, tmp_path / "whole") == written
    assert _assert_whole(tmp_path / "whole", arc_path, files) == len(files)
    total = counting.calls
    assert total > 10, total

    for n in range(1, total + 1):
        for every in (False, True):
            dest = tmp_path / f"api-{n}-{every}"
            fake = _InterruptingOs(n, KeyboardInterrupt, every)
            monkeypatch.setattr(extract, "os", fake)
            before = open_fds()
            with open_archive(arc_path) as arc, pytest.raises(KeyboardInterrupt) as ei:
                extract.extract_archive(arc, dest)
            assert ei.value is fake.raised  # the last one raised, not an error instead
            assert not leaked_fds(before), f"fds left open after an interrupt at close {n}"
            _assert_whole(dest, arc_path, files)
        # the CLI: SIGTERM's exception, exit 143 and its one line
        dest = tmp_path / f"cli-{n}"
        monkeypatch.setattr(extract, "os", _InterruptingOs(n, Terminated))
        before = open_fds()
        assert clipctl(["extract", str(arc_path), "-C", str(dest)]) == 143, n
        assert capsys.readouterr().err.strip().splitlines() == ["clipctl: terminated"], n
        assert not leaked_fds(before), f"fds left open after SIGTERM at close {n}"
        _assert_whole(dest, arc_path, files)


def _small_layout(hostile: Any, root: Path, tag: bytes, n: int) -> Path:
    """n files with random names (so that the archive does not compress to nothing)."""
    rnd = random.Random(tag)
    parts = [
        hostile.member(b"%s-%05d-%s" % (tag, i, rnd.randbytes(16).hex().encode()), b"x" * (i % 7))
        for i in range(n)
    ]
    hostile.layout(root, [hostile.tar_layer(b"".join(parts) + hostile.END)])
    return root


def test_full_disk(hostile: Any, tmp_path: Path, bounded: Any) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    layout = _small_layout(hostile, tmp_path / "layout", b"f", 4000)
    ref = tmp_path / "ref.clip"
    assert (
        clipctl(["-q", "index-layout", "--layout", str(layout), "--out", str(ref), "--no-cache"])
        == 0
    )
    size = ref.stat().st_size
    disk = tmp_path / "disk"
    disk.mkdir()
    limit = max(16384, size // 2 // 4096 * 4096)
    assert size > limit + 4096, size
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={limit}", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        out = disk / "x.clip"
        out.write_bytes(b"the old archive")
        r = bounded.run(
            ["index-layout", "--layout", str(layout), "--out", str(out), "--no-cache"], timeout=120
        )
        line = bounded.error(r, "failed to write")
        assert "No space left on device" in line, line
        assert out.read_bytes() == b"the old archive"
        assert [p.name for p in disk.iterdir()] == ["x.clip"]
        # the same with no output before
        out.unlink()
        bounded.error(
            bounded.run(
                ["index-layout", "--layout", str(layout), "--out", str(out), "--no-cache"],
                timeout=120,
            ),
            "No space left on device",
        )
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_io_error_on_fsync(
    hostile: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    layout = _small_layout(hostile, tmp_path / "layout", b"f", 50)
    out = tmp_path / "out" / "x.clip"
    out.parent.mkdir()
    out.write_bytes(b"the old archive")

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", eio)
    assert clipctl(["index-layout", "--layout", str(layout), "--out", str(out), "--no-cache"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clipctl: error: failed to write"), err
    assert "Input/output error" in err[0]
    assert out.read_bytes() == b"the old archive"
    assert [p.name for p in out.parent.iterdir()] == ["x.clip"]


def test_two_runs_same_out(hostile: Any, tmp_path: Path) -> None:
    a = _small_layout(hostile, tmp_path / "a", b"a", 20000)
    b = _small_layout(hostile, tmp_path / "b", b"b", 20000)
    refs = {}
    for name, lay in (("a", a), ("b", b)):
        ref = tmp_path / f"{name}.clip"
        assert (
            clipctl(["-q", "index-layout", "--layout", str(lay), "--out", str(ref), "--no-cache"])
            == 0
        )
        refs[name] = ref.read_bytes()
    out = tmp_path / "out" / "x.clip"
    out.parent.mkdir()
    for _ in range(3):
        procs = [
            _start(["-q", "index-layout", "--layout", str(lay), "--out", str(out), "--no-cache"])
            for lay in (a, b)
        ]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        assert out.read_bytes() in refs.values()
        assert [p.name for p in out.parent.iterdir()] == ["x.clip"]


def test_interrupt_between_submits_does_not_hang(
    hostile: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the SIGTERM test once hit: an interrupt inside pool.submit(), after layer 0's
    worker started. The call must raise promptly, with no layer worker left running."""
    import queue
    import types
    from concurrent.futures import ThreadPoolExecutor

    from clipcy.image import indexer

    layout = _many_entries_layout(tmp_path / "layout", hostile, 2, 20_000)
    full = threading.Event()

    class HandOver(queue.Queue[Any]):
        def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
            try:
                super().put(item, block, timeout)
            except queue.Full:
                full.set()  # layer 0's worker waits on the full hand-over queue
                raise

    class Pool(ThreadPoolExecutor):
        calls = 0

        def submit(self, *a: Any, **kw: Any) -> Any:
            Pool.calls += 1
            if Pool.calls == 2:
                assert full.wait(60), "layer 0's worker never filled the hand-over queue"
                raise KeyboardInterrupt
            return super().submit(*a, **kw)

    monkeypatch.setattr(indexer, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(indexer, "queue", types.SimpleNamespace(
        Queue=HandOver, Full=queue.Full, Empty=queue.Empty))
    monkeypatch.setattr(indexer, "STREAM_DEPTH", 1)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            indexer.create_index_only_archive_from_oci_layout(
                layout, "latest", tmp_path / "x.clip", cache_dir=None
            )
        except BaseException as e:  # noqa: BLE001 -- recorded for the assertion
            outcome.append(e)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "index-layout hung after an interrupt between submits"
    assert outcome and isinstance(outcome[0], KeyboardInterrupt), outcome
    assert not [x for x in threading.enumerate() if x.name.startswith("clipcy-layer")]
    assert not (tmp_path / "x.clip").exists()



def test_sigterm_handler_only_in_the_main_thread() -> None:
    """The command line's SIGTERM handler is installed for a run and SIG_DFL put back; in
    another thread (where signal.signal refuses) the run goes on without one; over a handler
    someone else set, that one stays."""
    from clipcy import cli

    seen: list[tuple[str, object]] = []

    def run(where: str) -> None:
        restore = cli._handle_sigterm()
        seen.append((where, signal.getsignal(signal.SIGTERM)))
        restore()

    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    run("main")
    t = threading.Thread(target=run, args=("thread",))
    t.start()
    t.join(30)

    def mine(signum: int, frame: object) -> None:
        pass

    signal.signal(signal.SIGTERM, mine)
    try:
        run("over mine")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert seen == [("main", cli._on_sigterm), ("thread", signal.SIG_DFL), ("over mine", mine)]
