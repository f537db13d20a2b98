"""Prefetch lists: recorded on a real mount (--record), stored in the archive (index-layout
--prefetch), replayed on the next mount (local layout and a real docker-registry, with the
fault proxy), and refused with one line when bad (index time and mount time, before ready).

Replay timing is never asserted: --prefetch-wait makes the mount report ready once the replay
is done, and the counters the mount logs at unmount say what it did.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clipcy.archive import prefetch as P
from clipcy.archive.reader import open_archive
from clipcy.errors import PrefetchListError
from clipcy.fusemount import available
from clipcy.fusemount.replay import Replay
from clipcy.fusemount.service import is_mounted

ROOT = Path(__file__).resolve().parents[1]
MAKE_EXEC = ROOT / "tests" / "data" / "mount" / "make-exec-layouts.sh"
SAMPLE = ROOT / "clipcy" / "sample"

needs_mount = pytest.mark.skipif(
    not available() or os.geteuid() != 0,
    reason="FUSE unavailable (no /dev/fuse or binding), or not root (the mount tests run as "
    "root, as CI does)")


def clipctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], capture_output=True,
                       text=True, timeout=180)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def one_line_error(r: subprocess.CompletedProcess[str], *want: str) -> None:
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("clipctl: error: "), r.stderr
    for w in want:
        assert w in r.stderr, r.stderr


def mount(*args: str) -> int:
    """clipctl mount ...; the pid of the mount process (from its line on stderr)."""
    r = clipctl("mount", *args) if args[0] != "-v" else clipctl(*args)
    return int(r.stderr.split("(pid ")[1].split(",")[0])


def umount(mnt: Path, pid: int) -> None:
    """clipctl umount, then wait for the mount process to exit (it writes the record and
    its counters on the way out): a pidfd becomes readable when it does."""
    fd = os.pidfd_open(pid)
    try:
        clipctl("umount", str(mnt))
        assert select.select([fd], [], [], 60)[0], "the mount process did not exit"
    finally:
        os.close(fd)


def counters(log: Path) -> dict[str, Any]:
    """The counters line the mount process logs when it ends."""
    lines = [ln for ln in log.read_text().splitlines() if " counters {" in ln]
    assert len(lines) == 1, log.read_text()
    got: dict[str, Any] = json.loads(lines[0].split(" counters ", 1)[1])
    return got


@pytest.fixture(scope="module")
def exec_layouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("umoci", "ldd"):
        if shutil.which(tool) is None:
            pytest.skip(f"making the program layouts needs {tool}")
    if not Path("/bin/busybox").is_file() or not Path("/bin/bash").is_file():
        pytest.skip("needs /bin/busybox (busybox-static) and /bin/bash")
    out = tmp_path_factory.mktemp("exec")
    subprocess.run([str(MAKE_EXEC), str(out)], check=True, capture_output=True)
    return out


def _sample(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "sample.clip"
    clipctl("index-layout", "--layout", str(SAMPLE), "--tag", "latest", "--out", str(out),
            "--no-cache", *extra)
    return out


# -- the list, in the archive --------------------------------------------------------------
def test_list_stored_inspected_and_resolved(tmp_path: Path) -> None:
    lst = tmp_path / "start.list"
    lst.write_text("# a start\n\n/usr/bin/hi\n//etc//passwd/\n/usr/bin/hello\n  # indented\n")
    plain = _sample(tmp_path)
    out = tmp_path / "with.clip"
    clipctl("index-layout", "--layout", str(SAMPLE), "--tag", "latest", "--out", str(out),
            "--no-cache", "--prefetch", str(lst))
    with open_archive(plain) as a:
        assert a.format_version == (2, 0) and a.prefetch_positions() is None
    with open_archive(out) as a:
        assert a.format_version == (2, 1)
        got = [a.record_at(p)[0] for p in a.prefetch_positions() or []]
        # /usr/bin/hi is a symlink to hello: stored as hello, which is then not repeated
        assert got == [b"/usr/bin/hello", b"/etc/passwd"]
        size = a.stat("/usr/bin/hello").size + a.stat("/etc/passwd").size
    info = json.loads(clipctl("inspect", "--json", str(out)).stdout)
    assert info["prefetch"] == {"files": 2, "bytes": size}
    assert json.loads(clipctl("inspect", "--json", str(plain)).stdout)["prefetch"] is None
    assert "prefetch:  2 files" in clipctl("inspect", str(out)).stdout
    clipctl("verify", str(out))
    # the section is additive: the rest of the archive is the archive without it
    a_bytes, b_bytes = plain.read_bytes(), out.read_bytes()
    assert len(b_bytes) > len(a_bytes)
    assert a_bytes[32 + 24 * 5:-40] in b_bytes


BAD_LISTS = {
    "missing": (b"/etc/passwd\n/etc/nope\n", "/etc/nope is not in the image"),
    "duplicate": (b"/etc/passwd\n/usr/bin/hello\n/etc//passwd\n",
                  "line 3: /etc/passwd is listed twice (first on line 1)"),
    "too-long": (b"".join(b"/f%d\n" % i for i in range(100_000)),
                 "line 65537: path 65537 exceeds the limit prefetch_files=65536"),
    "binary": (bytes(range(256)) * 8, "binary data (a NUL byte)"),
    "binary-no-nul": (b"\x7fELF\x02\x01\x01junk\n", "not an absolute path"),
    "directory": (b"/usr/bin\n", "/usr/bin is a dir, not a regular file"),
}


@pytest.mark.parametrize("case", sorted(BAD_LISTS))
def test_bad_list_at_index_time(tmp_path: Path, case: str) -> None:
    data, want = BAD_LISTS[case]
    lst = tmp_path / "bad.list"
    lst.write_bytes(data)
    out = tmp_path / "out.clip"
    r = clipctl("index-layout", "--layout", str(SAMPLE), "--tag", "latest", "--out", str(out),
                "--no-cache", "--prefetch", str(lst), check=False)
    one_line_error(r, f"prefetch list {lst}", want)
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(BAD_LISTS))
@needs_mount
def test_bad_list_at_mount_time(tmp_path: Path, mnt: Path, case: str) -> None:
    data, want = BAD_LISTS[case]
    lst = tmp_path / "bad.list"
    lst.write_bytes(data)
    arc = _sample(tmp_path)
    r = clipctl("mount", str(arc), str(mnt), "--prefetch", str(lst), check=False)
    one_line_error(r, f"prefetch list {lst}", want)
    assert not is_mounted(mnt)


def test_parse_list_limits() -> None:
    with pytest.raises(PrefetchListError, match="prefetch_list_bytes"):
        P.parse_list(b"/a\n" * (P.PREFETCH_LIST_BYTES // 3 + 1), "x")
    with pytest.raises(PrefetchListError, match="line 1: not an absolute path"):
        P.parse_list(b"etc/passwd\n", "x")
    assert P.parse_list(b"/a\r\n#c\n/b//c/\n", "x") == [b"/a", b"/b/c"]


def test_section_codec_round_trip_and_refusals() -> None:
    positions = [7, 3, 100, 0, 99]
    body = P.encode_section(positions)
    assert P.decode_section(body, 101) == positions
    with pytest.raises(ValueError, match="names node 100 of 100"):
        P.decode_section(body, 100)
    with pytest.raises(ValueError, match="twice"):
        P.decode_section(P.encode_section([1, 1]), 10)
    with pytest.raises(ValueError):
        P.decode_section(body[:-3], 101)


def test_merge_bounds() -> None:
    from clipcy.fusemount.replay import MAX_REQUEST, MERGE_GAP

    near = [(0, 100, 2), (100 + MERGE_GAP - 1, 200 + MERGE_GAP, 0), (10 << 20, 11 << 20, 1)]
    assert Replay.merge(near) == [(0, 200 + MERGE_GAP, 0), (10 << 20, 11 << 20, 1)]
    step = MERGE_GAP * 3 // 4
    many = [(i * step, i * step + 1000, i) for i in range(50)]  # 9.4 MiB, gaps under the bound
    merged = Replay.merge(many)
    assert all(hi - lo <= MAX_REQUEST for lo, hi, _ in merged)
    assert len(merged) == -(-(49 * step + 1000) // MAX_REQUEST)  # as few as the bound allows
    assert all(any(mlo <= lo and hi <= mhi for mlo, mhi, _ in merged) for lo, hi, _ in many)
    assert Replay.merge([(0, 100, 0), (MERGE_GAP + 100, MERGE_GAP + 200, 1)]) == [
        (0, 100, 0), (MERGE_GAP + 100, MERGE_GAP + 200, 1)]  # a gap of MERGE_GAP: apart
    assert Replay.merge([(0, 10, 0), (2, 5, 1)]) == [(0, 10, 0)]


def test_segments_inflate_on_through_near_gaps() -> None:
    """The replay's inflate order: runs a decoder reaches more cheaply by inflating on than by
    restarting at the resume point before them share a segment, decoded front to back;
    segments go in the list order of their first-needed run, split where it is inside."""
    from types import SimpleNamespace

    S = 256 << 10
    gzip = SimpleNamespace(points=[(0, 0, k * 4 * S, b"") for k in range(8)], frames=[])
    arc = SimpleNamespace(access=lambda layer: gzip)
    replay = Replay(arc, SimpleNamespace(span=S), [])  # type: ignore[arg-type]
    # list order; resume points every 4 spans
    runs = [(0, 9, 9), (0, 2, 2), (0, 5, 6), (0, 20, 20), (0, 11, 11)]
    # (5, 6) after (2, 2): a gap of 2 spans, a restart at 4 costs 1: apart; (11, 11) after
    # (9, 9): a gap of 1, a restart at 8 costs 3: together; (20, 20) starts at a point
    assert replay.segments(runs) == [[(0, 9, 9), (0, 11, 11)], [(0, 2, 2)], [(0, 5, 6)],
                                     [(0, 20, 20)]]
    # the first-needed run inside a segment: the decoder starts there, the rest after it
    runs = [(0, 11, 11), (0, 2, 2), (0, 9, 9)]
    assert replay.segments(runs) == [[(0, 11, 11)], [(0, 2, 2)], [(0, 9, 9)]]
    # a plain layer (no resume points: any offset is a start) never inflates through a gap
    plain = SimpleNamespace(points=[], frames=[])
    replay = Replay(SimpleNamespace(access=lambda layer: plain), SimpleNamespace(span=S),
                    [])  # type: ignore[arg-type]
    assert replay.segments([(0, 3, 3), (0, 1, 1)]) == [[(0, 3, 3)], [(0, 1, 1)]]
    # zstd: frame starts are the restart points
    zstd = SimpleNamespace(points=[], frames=[(0, 0, 0, 64 * S)])
    replay = Replay(SimpleNamespace(access=lambda layer: zstd), SimpleNamespace(span=S),
                    [])  # type: ignore[arg-type]
    assert replay.segments([(0, 30, 30), (0, 1, 1)]) == [[(0, 30, 30)], [(0, 1, 1)]]
    assert replay.segments([(0, 1, 1), (0, 30, 30)]) == [[(0, 1, 1), (0, 30, 30)]]


# -- record and replay on real mounts ------------------------------------------------------
def _record_bash(layouts: Path, tmp_path: Path, mnt: Path) -> tuple[Path, Path, str]:
    """index the bash image, record a run of its script; (archive, list, the run's output)"""
    arc = tmp_path / "bash.clip"
    clipctl("index-layout", "--layout", str(layouts / "bash"), "--out", str(arc), "--no-cache")
    lst = tmp_path / "bash.list"
    pid = mount(str(arc), str(mnt), "--record", str(lst))
    try:
        r = subprocess.run(["chroot", str(mnt), "/bin/bash", "/etc/greet.sh"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    finally:
        umount(mnt, pid)
    return arc, lst, r.stdout


@needs_mount
def test_record_then_replay_local(exec_layouts: Path, tmp_path: Path, mnt: Path) -> None:
    arc, lst, out = _record_bash(exec_layouts, tmp_path, mnt)
    assert out.startswith("bash ") and out.endswith(" read 2 lines\n"), out
    paths = P.read_list(lst)
    assert lst.read_text().startswith("# clipcy prefetch list")
    assert paths[0] == b"/bin/bash" and b"/etc/greet.sh" in paths and b"/etc/motd" in paths
    assert any(b"libc.so" in p for p in paths)
    stored = tmp_path / "stored.clip"
    clipctl("index-layout", "--layout", str(exec_layouts / "bash"), "--out", str(stored),
            "--no-cache", "--prefetch", str(lst))
    with open_archive(stored) as a:
        want = {p: hashlib.sha256(a.open(p).read()).hexdigest() for p in paths}
    log = tmp_path / "replay.log"
    pid = mount("-v", "mount", str(stored), str(mnt), "--prefetch-wait", "--log", str(log))
    try:
        r = subprocess.run(["chroot", str(mnt), "/bin/bash", "/etc/greet.sh"],
                           capture_output=True, text=True, timeout=60)
        got = {p: hashlib.sha256((mnt / os.fsdecode(p[1:])).read_bytes()).hexdigest()
               for p in paths}
    finally:
        umount(mnt, pid)
    assert r.returncode == 0 and r.stdout == out, r.stderr
    assert got == want
    c = counters(log)
    rp = c["replay"]
    assert rp["state"] == "done" and rp["files"] == len(paths) == rp["files_planned"]
    assert rp["spans_filled"] == rp["spans"] > 0 and rp["requests"] == 0  # local: no fetch
    # the program's reads found every span replayed: none decoded by a read itself
    assert c["span_cache"]["read_misses"] == 0 and c["span_cache"]["replay_hits"] > 0, c


@needs_mount
def test_no_prefetch_and_list_at_mount(exec_layouts: Path, tmp_path: Path, mnt: Path) -> None:
    arc, lst, out = _record_bash(exec_layouts, tmp_path, mnt)
    stored = tmp_path / "stored.clip"
    clipctl("index-layout", "--layout", str(exec_layouts / "bash"), "--out", str(stored),
            "--no-cache", "--prefetch", str(lst))
    log = tmp_path / "none.log"
    umount(mnt, mount("-v", "mount", str(stored), str(mnt), "--no-prefetch", "--log", str(log)))
    assert counters(log)["replay"]["state"] == "off"
    # a list given at mount time replaces the stored one (here: on an archive without one)
    short = tmp_path / "short.list"
    short.write_text("/etc/motd\n")
    log = tmp_path / "given.log"
    pid = mount("-v", "mount", str(arc), str(mnt), "--prefetch", str(short), "--prefetch-wait",
                "--log", str(log))
    assert (mnt / "etc" / "motd").read_text() == "line one\nline two\n"
    umount(mnt, pid)
    rp = counters(log)["replay"]
    assert rp["state"] == "done" and rp["files"] == 1


@needs_mount
def test_container_on_overlay_with_replay(exec_layouts: Path, tmp_path: Path,
                                          mnt: Path) -> None:
    """A program runs under chroot on an overlay over the mount while the replay runs."""
    arc, lst, out = _record_bash(exec_layouts, tmp_path, mnt)
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    log = tmp_path / "overlay.log"
    pid = mount("-v", "mount", str(arc), str(mnt), "--prefetch", str(lst), "--log", str(log))
    try:
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={mnt},upperdir={upper},workdir={work}", str(merged)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"overlayfs unavailable here: {r.stderr.strip()}")
        try:
            r = subprocess.run(["chroot", str(merged), "/bin/bash", "-c",
                                "source /etc/greet.sh; echo written > /etc/new"],
                               capture_output=True, text=True, timeout=60)
        finally:
            subprocess.run(["umount", str(merged)], check=True)
    finally:
        umount(mnt, pid)
    assert r.returncode == 0 and r.stdout == out, r.stderr
    assert (upper / "etc" / "new").read_text() == "written\n"
    assert counters(log)["replay"]["state"] == "done"


# -- a real registry, with faults ----------------------------------------------------------
@pytest.fixture
def registry_bash(exec_layouts: Path, tmp_path: Path) -> Iterator[tuple[Any, Any, str]]:
    sys.path.insert(0, str(ROOT / "tests"))
    import remoteserv as rs

    if not rs.have_tools():
        pytest.skip("docker-registry/skopeo absent")
    reg = rs.Registry(tmp_path / "registry")
    proxy = None
    try:
        r = reg.push(exec_layouts / "bash", "latest", "bash", "latest")
        assert r.returncode == 0, r.stderr
        proxy = rs.FaultProxy(reg.host)
        yield reg, proxy, f"docker://127.0.0.1:{proxy.port}/bash"
    finally:
        if proxy is not None:
            proxy.close()
        reg.stop()


def _remote_start(arc: Path, mnt: Path, tmp_path: Path, name: str,
                  *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    log = tmp_path / f"{name}.log"
    pid = mount("-v", "mount", str(arc), str(mnt), "--cache-dir",
                str(tmp_path / f"{name}-cache"), "--retries", "1", "--prefetch-wait", "--log",
                str(log), *extra)
    try:
        r = subprocess.run(["chroot", str(mnt), "/bin/bash", "/etc/greet.sh"],
                           capture_output=True, text=True, timeout=60)
    finally:
        umount(mnt, pid)
    return r, counters(log)


@needs_mount
def test_replay_from_registry(exec_layouts: Path, tmp_path: Path, mnt: Path,
                              registry_bash: tuple[Any, Any, str]) -> None:
    reg, proxy, ref = registry_bash
    arc, lst, out = _record_bash(exec_layouts, tmp_path, mnt)
    remote = tmp_path / "remote.clip"
    clipctl("index-layout", "--layout", str(exec_layouts / "bash"), "--out", str(remote),
            "--no-cache", "--storage-ref", ref, "--prefetch", str(lst))
    before = proxy.blob_requests()
    r, c = _remote_start(remote, mnt, tmp_path, "clean")
    assert r.returncode == 0 and r.stdout == out, r.stderr
    rp = c["replay"]
    assert rp["state"] == "done" and rp["fetch_errors"] == 0 and rp["spans_filled"] == rp["spans"]
    # one layer, nearby ranges: merged into few requests, and the reads needed none
    assert 1 <= rp["requests"] <= 3
    assert c["requests"]["foreground"]["requests"] == 0
    assert c["requests"]["replay"]["requests"] == rp["requests"]  # counted in its lane
    # besides the replay's: the one probe of the blob before ready
    assert proxy.blob_requests() - before == rp["requests"] + 1
    assert c["span_cache"]["read_misses"] == 0 and c["span_cache"]["replay_hits"] > 0


@pytest.mark.parametrize("faults", [["503", "503"], ["429"], ["truncate", "truncate"],
                                    ["reset"], ["flip", "flip"], ["flip"]])
@needs_mount
def test_replay_faults_never_wrong_bytes(exec_layouts: Path, tmp_path: Path, mnt: Path,
                                         registry_bash: tuple[Any, Any, str],
                                         faults: list[str]) -> None:
    """Faults on the replay's requests: it retries, refetches a span that fails its checksum
    once, or gives up (counted); the program's reads then fetch for themselves. The run's
    output and every listed file are the image's bytes."""
    reg, proxy, ref = registry_bash
    arc, lst, out = _record_bash(exec_layouts, tmp_path, mnt)
    remote = tmp_path / "remote.clip"
    clipctl("index-layout", "--layout", str(exec_layouts / "bash"), "--out", str(remote),
            "--no-cache", "--storage-ref", ref, "--prefetch", str(lst))
    paths = P.read_list(lst)
    with open_archive(arc) as a:
        want = {p: a.open(p).read() for p in paths}
    proxy.add("", *faults)  # the first request is the mount's probe of the blob
    log = tmp_path / "faults.log"
    pid = mount("-v", "mount", str(remote), str(mnt), "--cache-dir", str(tmp_path / "cache"),
                "--retries", "1", "--prefetch-wait", "--log", str(log))
    try:
        r = subprocess.run(["chroot", str(mnt), "/bin/bash", "/etc/greet.sh"],
                           capture_output=True, text=True, timeout=60)
        got = {p: (mnt / os.fsdecode(p[1:])).read_bytes() for p in paths}
    finally:
        umount(mnt, pid)
    assert r.returncode == 0 and r.stdout == out, r.stderr
    assert got == want
    rp = counters(log)["replay"]
    assert rp["state"] == "done"


@needs_mount
def test_failed_replay_leaves_reads_working(exec_layouts: Path, tmp_path: Path, mnt: Path,
                                            registry_bash: tuple[Any, Any, str]) -> None:
    reg, proxy, ref = registry_bash
    arc, lst, out = _record_bash(exec_layouts, tmp_path, mnt)
    remote = tmp_path / "remote.clip"
    clipctl("index-layout", "--layout", str(exec_layouts / "bash"), "--out", str(remote),
            "--no-cache", "--storage-ref", ref, "--prefetch", str(lst))
    proxy.add("", *["503"] * 50)  # the probe passes, then every replay request fails
    log = tmp_path / "down.log"
    pid = mount("-v", "mount", str(remote), str(mnt), "--cache-dir", str(tmp_path / "cache"),
                "--retries", "0", "--prefetch-wait", "--log", str(log))
    try:
        with proxy.lock:  # the registry is back: the program's own reads fetch
            assert len(proxy.faults) < 50
            proxy.faults.clear()
        r = subprocess.run(["chroot", str(mnt), "/bin/bash", "/etc/greet.sh"],
                           capture_output=True, text=True, timeout=60)
    finally:
        umount(mnt, pid)
    assert r.returncode == 0 and r.stdout == out, r.stderr
    c = counters(log)
    assert c["replay"]["fetch_errors"] >= 1 and c["replay"]["state"] == "done"
    assert c["span_cache"]["read_misses"] > 0  # the reads decoded (and fetched) themselves
    assert c["requests"]["foreground"]["requests"] > 0
