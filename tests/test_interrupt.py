"""Interruptions and failing disks: never a temp file left, never a partial or mixed output.

- SIGINT / SIGTERM in the middle of index-layout (layers streaming, layer cache being
  written) and of extract: exit 130 / 143, one line, no temp file, no output archive.
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
import time
from pathlib import Path
from typing import Any

import pytest

from clipcy.cli import main as clipctl

MAKE: Any = None
_CACHE: dict[str, Any] = {}


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


def _signal_after(p: subprocess.Popen[str], event: str, sig: int, count: int = 1) -> str:
    """Send sig once `count` progress events `event` were printed; returns stderr."""
    assert p.stderr is not None
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
    sig: int, rc: int, says: str, slow_layout: Path, tmp_path: Path
) -> None:
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
    err = _signal_after(p, "layer-start", sig, count=2)  # both layers streaming
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
    sig: int, rc: int, says: str, slow_layout: Path, tmp_path: Path
) -> None:
    if "archive" not in _CACHE:
        arc = slow_layout.parent / "slow.clip"
        assert (
            clipctl(
                [
                    "-q",
                    "index-layout",
                    "--layout",
                    str(slow_layout),
                    "--out",
                    str(arc),
                    "--no-cache",
                ]
            )
            == 0
        )
        _CACHE["archive"] = arc
    dest = tmp_path / "dest"
    p = _start(["extract", str(_CACHE["archive"]), "-C", str(dest), "--progress", "json"])
    err = _signal_after(p, "progress", sig, count=3)
    assert p.returncode == rc, err
    assert err.rstrip().endswith(f"clipctl: {says}"), err
    assert "Traceback" not in err
    assert _temp_files(dest) == []
    # what was written is the image's files, whole: no file half-written at the signal
    # is left with a size other than its own (all are empty here)
    assert all(f.stat().st_size == 0 for f in dest.rglob("f*"))


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
        time.sleep(0.01)


def test_interrupt_between_submits_does_not_hang(
    hostile: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the SIGTERM test once hit: an interrupt inside pool.submit(), after layer 0's
    worker started. The call must raise promptly, with no layer worker left running."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from clipcy.image import indexer

    layout = _many_entries_layout(tmp_path / "layout", hostile, 2, 20_000)

    class Pool(ThreadPoolExecutor):
        calls = 0

        def submit(self, *a: Any, **kw: Any) -> Any:
            Pool.calls += 1
            if Pool.calls == 2:
                time.sleep(0.2)  # layer 0's worker is streaming into the full hand-over queue
                raise KeyboardInterrupt
            return super().submit(*a, **kw)

    monkeypatch.setattr(indexer, "ThreadPoolExecutor", Pool)
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
