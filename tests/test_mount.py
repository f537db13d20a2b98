"""clipctl mount / umount and clipcy.mount(): the image through a read-only FUSE filesystem.

Every layout of the test corpus (tests/corpus/build.sh) is mounted and walked by tree.py
(lstat, sha256 of every file, xattrs, hardlink groups) against the expected trees of an
independent unpacker; programs run from mounts (a static busybox, a dynamically linked bash
with its libraries) made by tests/data/mount/make-exec-layouts.sh with umoci. Needs FUSE
(/dev/fuse, the compiled binding) and root; skips cleanly otherwise.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from corpus.cases import TREE_PY, TREES, expected_name, tree_id

import clipcy
from clipcy.archive.reader import open_archive
from clipcy.fusemount import available
from clipcy.fusemount.service import is_mounted
from clipcy.node import Node

ROOT = Path(__file__).resolve().parents[1]
MAKE_EXEC = ROOT / "tests" / "data" / "mount" / "make-exec-layouts.sh"

pytestmark = [
    pytest.mark.skipif(not available(), reason="FUSE unavailable (no /dev/fuse or binding)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the mount tests run as root (CI does)"),
]


def clipctl(*args: str, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], capture_output=True,
                       text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def _index(layout: Path, out: Path, *extra: str) -> Path:
    clipctl("index-layout", "--layout", str(layout), "--out", str(out), *extra)
    return out


def _tree_jsonl(root: Path, out: Path) -> Path:
    r = subprocess.run([sys.executable, str(TREE_PY), "rootfs", str(root)],
                       capture_output=True, check=True)
    out.write_bytes(r.stdout)
    return out


@pytest.mark.parametrize("layout,tag,platform", TREES, ids=[tree_id(*t) for t in TREES])
def test_mounted_tree_matches_expected(corpus: Path, tmp_path: Path,
                                       mnt: Path, layout: str, tag: str,
                                       platform: str | None) -> None:
    extra = ["--tag", tag] + (["--platform", platform] if platform else [])
    archive = _index(corpus / layout, tmp_path / "img.clip", *extra)
    clipctl("mount", str(archive), str(mnt))
    try:
        actual = _tree_jsonl(mnt, tmp_path / "actual.jsonl")
    finally:
        clipctl("umount", str(mnt))
    expected = corpus / "expected" / expected_name(layout, tag, platform)
    r = subprocess.run([sys.executable, str(TREE_PY), "compare", str(expected), str(actual)],
                       capture_output=True, text=True, errors="replace")
    assert r.returncode == 0, r.stdout
    assert not is_mounted(mnt)


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


def test_busybox_container_start(exec_layouts: Path, tmp_path: Path, mnt: Path) -> None:
    archive = _index(exec_layouts / "busybox", tmp_path / "bb.clip")
    want = {}
    with open_archive(archive) as a:
        for p in ("/etc/hello", "/data/random.bin", "/data/sub/numbers.txt"):
            want[p] = hashlib.sha256(a.open(p).read()).hexdigest()
    with clipcy.mount(archive, mnt):
        # no xattr in this image: once the mount has seen every record, the kernel is told
        # (ENOSYS) and stops asking; users see "not supported" instead of an empty list
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                assert os.listxattr(mnt / "etc" / "hello") == []
            except OSError as e:
                assert e.errno == errno.EOPNOTSUPP
                break
            time.sleep(0.05)
        else:
            raise AssertionError("getxattr was not turned off for an image without xattrs")
        script = ("busybox ls -ln / /data/sub; busybox cat /etc/hello; "
                  "busybox sha256sum /etc/hello /data/random.bin /data/sub/numbers.txt; "
                  "busybox stat -c '%a %u %s' /data/sub/numbers.txt")
        r = subprocess.run(["chroot", str(mnt), "/bin/busybox", "sh", "-c", script],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    assert "hello from the image" in r.stdout
    for p, digest in want.items():
        assert f"{digest}  {p}" in r.stdout
    assert "4755 0 108894" in r.stdout
    assert not is_mounted(mnt)


def test_dynamically_linked_bash_runs_from_the_mount(exec_layouts: Path, tmp_path: Path,
                                                     mnt: Path) -> None:
    archive = _index(exec_layouts / "bash", tmp_path / "bash.clip")
    with clipcy.mount(archive, mnt):
        r = subprocess.run(["chroot", str(mnt), "/bin/bash", "/etc/greet.sh"],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("bash ") and r.stdout.endswith(" read 2 lines\n")


@pytest.fixture(scope="module")
def big_archive(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _index(corpus / "big", tmp_path_factory.mktemp("big") / "big.clip")


def test_concurrent_random_reads_are_exact(big_archive: Path, mnt: Path) -> None:
    with open_archive(big_archive) as a:
        files = [n for n in a.walk() if n.type == "file" and n.size]
        content = {n.path: a.open(n.path).read() for n in files}
    errors: list[str] = []
    with clipcy.mount(big_archive, mnt, cache_mib=1):  # a small cache: evictions too

        def reader(seed: int) -> None:
            rnd = random.Random(seed)
            for _ in range(150):
                n = rnd.choice(files)
                want = content[n.path]
                off = rnd.randrange(len(want))
                ln = rnd.choice((1, 4096, 65536, 300000))
                with open(os.path.join(mnt, n.path.decode("utf-8", "surrogateescape")[1:]),
                          "rb", buffering=0) as f:
                    got = os.pread(f.fileno(), ln, off)
                if got != want[off:off + ln]:
                    errors.append(f"{n.path!r} at {off}+{ln}")

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_large_reads_are_exact(big_archive: Path, mnt: Path) -> None:
    """Reads larger than a span and than the kernel's largest request (1 MiB), on fresh
    mounts (no page cache): 1 MiB sequential reads (read ahead by the span helper), one read
    of a whole file, and reads that start inside a span and end inside another; each reply
    is several cached spans handed to the kernel as one iovec."""
    from clipcy.fusemount.spans import SPAN

    with open_archive(big_archive) as a:
        large = sorted((n for n in a.walk() if n.type == "file"), key=lambda n: n.size)[-4:]
        content = {n.path: a.open(n.path).read() for n in large}
    assert min(len(c) for c in content.values()) > (1 << 20) + SPAN

    def path(n: Node) -> str:
        return os.path.join(mnt, n.path.decode("utf-8", "surrogateescape")[1:])

    with clipcy.mount(big_archive, mnt):
        for n in large:
            with open(path(n), "rb", buffering=0) as f:
                got = b"".join(iter(lambda: f.read(1 << 20), b""))
            assert got == content[n.path], n.path
    with clipcy.mount(big_archive, mnt):
        for n in large:
            fd = os.open(path(n), os.O_RDONLY)
            try:
                assert os.read(fd, n.size + 4096) == content[n.path], n.path
            finally:
                os.close(fd)
    with clipcy.mount(big_archive, mnt):
        for i, n in enumerate(large):
            off, ln = SPAN // 2 + 4095 * i + 1, 2 * SPAN + 3 + i
            fd = os.open(path(n), os.O_RDONLY)
            try:
                assert os.pread(fd, ln, off) == content[n.path][off:off + ln], n.path
                tail = n.size - 7
                assert os.pread(fd, 1 << 20, tail) == content[n.path][tail:], n.path
            finally:
                os.close(fd)


def test_metadata_statfs_and_erofs(big_archive: Path, mnt: Path) -> None:
    with open_archive(big_archive) as a:
        nodes = list(a.walk())
        count = a.node_count
    f = next(n for n in nodes if n.type == "file" and n.size)
    d = next(n for n in nodes if n.type == "dir" and n.path != b"/")
    with clipcy.mount(big_archive, mnt):
        p = mnt / os.fsdecode(f.path[1:])
        st = os.lstat(p)
        assert (st.st_ino, st.st_size, st.st_mtime_ns) == (
            f.ino, f.size, f.mtime_sec * 10**9 + f.mtime_nsec)
        assert st.st_blocks == (f.size + 511) // 512 and st.st_nlink == f.nlink
        assert os.lstat(mnt).st_ino == 1
        assert sorted(os.listdir(mnt / os.fsdecode(d.path[1:]))) == sorted(
            os.fsdecode(n) for n in open_archive(big_archive).listdir(d.path))
        sv = os.statvfs(mnt)
        assert sv.f_files == count and sv.f_blocks > 0
        for op in (lambda: open(p, "ab"), lambda: os.mkdir(mnt / "new"),
                   lambda: os.unlink(p), lambda: os.chmod(p, 0o600),
                   lambda: os.setxattr(p, "user.x", b"1"), lambda: os.rename(p, mnt / "x"),
                   lambda: os.symlink("a", mnt / "l"), lambda: os.truncate(p, 0)):
            with pytest.raises(OSError) as ei:
                op()
            assert ei.value.errno == errno.EROFS
        with pytest.raises(FileNotFoundError):
            os.lstat(mnt / "no-such-name")
        with pytest.raises(FileNotFoundError):  # the cached miss answers the same
            os.lstat(mnt / "no-such-name")


def test_missing_blob_fails_the_mount_and_a_broken_one_is_eio_logged_once(
        corpus: Path, tmp_path: Path, mnt: Path) -> None:
    """A blob missing at mount time fails clipctl mount (the storage check); one that breaks
    after ready (truncated) fails its reads with EIO, logged once however many reads fail."""
    layout = tmp_path / "layout"
    shutil.copytree(corpus / "basic", layout)
    archive = _index(layout, tmp_path / "img.clip", "--tag", "latest")
    with open_archive(archive) as a:
        files = [n for n in a.walk() if n.type == "file" and n.size]
        digest = a.layers[files[0].layer]["digest"]
    blob = layout / "blobs" / "sha256" / digest.split(":")[1]
    kept = blob.read_bytes()
    blob.unlink()
    r = clipctl("mount", str(archive), str(mnt), check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and digest in r.stderr, r.stderr
    assert not is_mounted(mnt) and os.listdir(mnt) == []
    blob.write_bytes(kept)
    log = tmp_path / "mount.log"
    clipctl("mount", str(archive), str(mnt), "--log", str(log))
    try:
        os.truncate(blob, 0)
        victims = [n for n in files if a.layers[n.layer]["digest"] == digest][:3]
        for n in victims:
            with pytest.raises(OSError) as ei:
                (mnt / os.fsdecode(n.path[1:])).read_bytes()
            assert ei.value.errno == errno.EIO
        assert sorted(os.listdir(mnt))  # still up
    finally:
        clipctl("umount", str(mnt))
    lines = [ln for ln in log.read_text().splitlines() if digest in ln]
    assert len(lines) == 1, log.read_text()


def test_overlayfs_on_top(big_archive: Path, tmp_path: Path, mnt: Path) -> None:
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    with open_archive(big_archive) as a:
        f = next(n for n in a.walk() if n.type == "file" and n.size)
        data = a.open(f.path).read()
    with clipcy.mount(big_archive, mnt):
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={mnt},upperdir={upper},workdir={work}", str(merged)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"overlayfs unavailable here: {r.stderr.strip()}")
        try:
            target = merged / os.fsdecode(f.path[1:])
            assert target.read_bytes() == data
            target.write_bytes(b"changed")  # copy-up into upperdir
            (merged / "new-file").write_text("new")
            assert target.read_bytes() == b"changed"
            assert (upper / os.fsdecode(f.path[1:])).read_bytes() == b"changed"
            assert (mnt / os.fsdecode(f.path[1:])).read_bytes() == data  # lower unchanged
        finally:
            subprocess.run(["umount", str(merged)], check=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_foreground_mount_ends_on_signal(big_archive: Path, mnt: Path, sig: int) -> None:
    proc = subprocess.Popen([sys.executable, "-I", "-m", "clipcy", "mount", "-f",
                             str(big_archive), str(mnt)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(mnt):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.02)
        assert os.listdir(mnt)
        proc.send_signal(sig)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not is_mounted(mnt)


def test_umount_and_python_api(big_archive: Path, mnt: Path) -> None:
    m = clipcy.mount(big_archive, mnt, options=["allow_other"])
    try:
        assert is_mounted(mnt) and os.listdir(mnt)
        assert Path(m.log_path).exists()
    finally:
        m.unmount()
    assert not is_mounted(mnt)
    with pytest.raises(ProcessLookupError):
        os.kill(m.pid, 0)  # the serving process is gone
    r = clipctl("mount", str(big_archive), str(mnt))
    assert "clipctl umount" in r.stderr
    clipctl("umount", str(mnt))
    assert not is_mounted(mnt)


def _error(*args: str) -> str:
    r = clipctl(*args, check=False)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("clipctl: error: "), r.stderr
    return lines[0]


def test_errors_are_one_line(big_archive: Path, tmp_path: Path, mnt: Path) -> None:
    a = str(big_archive)
    assert "does not exist" in _error("mount", a, str(tmp_path / "nope"))
    (tmp_path / "file").write_text("x")
    assert "not a directory" in _error("mount", a, str(tmp_path / "file"))
    assert "cannot open archive" in _error("mount", str(tmp_path / "none.clip"), str(mnt))
    bad = tmp_path / "bad.clip"
    bad.write_bytes(big_archive.read_bytes()[:-100])  # truncated
    assert "corrupt archive" in _error("mount", str(bad), str(mnt))
    assert "option" in _error("mount", a, str(mnt), "-o", "no_such_option")
    assert "not a clipcy mount" in _error("umount", str(mnt))
    assert not is_mounted(mnt)
    for fg in ([], ["-f"]):
        clipctl("mount", a, str(mnt))
        try:
            assert "already a mount point" in _error("mount", *fg, a, str(mnt))
        finally:
            clipctl("umount", str(mnt))
    # no libfuse binding / no /dev/fuse: simulated in a child interpreter
    for hide, want in (("sys.modules['clipcy.fusemount._fuse'] = None", "libfuse3-dev"),
                       ("os.path.exists = lambda p, e=os.path.exists: p != '/dev/fuse' and e(p)",
                        "no /dev/fuse")):
        code = (f"import os, sys; {hide}\nfrom clipcy.cli import main\n"
                f"sys.exit(main(['mount', '-f', {a!r}, {str(mnt)!r}]))")
        r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and want in r.stderr, r.stderr
    assert not is_mounted(mnt)


def test_mount_from_a_registry(exec_layouts: Path, tmp_path: Path, mnt: Path) -> None:
    """The busybox image's blobs only in a real registry (docker-registry, pushed with
    skopeo); --storage docker://...: the container starts from the mount."""
    sys.path.insert(0, str(ROOT / "tests"))
    import remoteserv as rs

    if not rs.have_tools():
        pytest.skip("docker-registry/skopeo absent")
    reg = rs.Registry(tmp_path / "registry")
    try:
        r = reg.push(exec_layouts / "busybox", "latest", "bb", "latest")
        assert r.returncode == 0, r.stderr
        archive = _index(exec_layouts / "busybox", tmp_path / "bb.clip", "--storage-ref",
                         f"docker://{reg.host}/bb")
        clipctl("mount", str(archive), str(mnt), "--no-cache", "--retries", "1")
        try:
            r2 = subprocess.run(["chroot", str(mnt), "/bin/busybox", "sh", "-c",
                                 "busybox cat /etc/hello; busybox wc -l /data/sub/numbers.txt"],
                                capture_output=True, text=True, timeout=60)
        finally:
            clipctl("umount", str(mnt))
        assert r2.returncode == 0, r2.stderr
        assert r2.stdout == "hello from the image\n20000 /data/sub/numbers.txt\n"
    finally:
        reg.stop()


# -- stale mounts, --lazy, --mkdir, nonempty, logs, -f's line, --xattrs (the sample image) --
SAMPLE = ROOT / "clipcy" / "sample"


@pytest.fixture(scope="module")
def sample_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _index(SAMPLE, tmp_path_factory.mktemp("sample") / "sample.clip", "--tag", "latest")


def _served_pid(stderr: str) -> int:
    return int(stderr.split("(pid ", 1)[1].split(",", 1)[0])


def test_stale_mount_says_so_and_umount_clears_it(sample_archive: Path, mnt: Path) -> None:
    r = clipctl("mount", str(sample_archive), str(mnt))
    pidfd = os.pidfd_open(_served_pid(r.stderr))
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)  # the mount stays, its process goes
        select.select([pidfd], [], [], 30)  # readable once the process has exited
    finally:
        os.close(pidfd)
    with pytest.raises(OSError) as e:
        os.statvfs(mnt)
    assert e.value.errno == errno.ENOTCONN
    assert _error("mount", str(sample_archive), str(mnt)) == (
        f"clipctl: error: {mnt}: stale mount (its process is gone): run clipctl umount {mnt}")
    clipctl("umount", str(mnt))
    assert not is_mounted(mnt) and os.listdir(mnt) == []


def test_umount_lazy_detaches_a_busy_mount(sample_archive: Path, mnt: Path) -> None:
    clipctl("mount", str(sample_archive), str(mnt))
    fd = os.open(mnt / "etc", os.O_RDONLY | os.O_DIRECTORY)  # keeps the mount busy
    try:
        assert "busy" in _error("umount", str(mnt)).lower()
        assert is_mounted(mnt)
        clipctl("umount", "--lazy", str(mnt))
        assert not is_mounted(mnt)
        assert "hostname" in os.listdir(fd)  # the detached tree still serves the open fd
    finally:
        os.close(fd)


def test_umount_waits_out_a_short_busy_spell(sample_archive: Path, mnt: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A mount busy only for a moment (as it is while the kernel waits for the mount process to
    answer the last RELEASE of a program that just exited) is unmounted, not an error."""
    from clipcy.fusemount import service

    clipctl("mount", str(sample_archive), str(mnt))
    fd = os.open(mnt / "etc", os.O_RDONLY | os.O_DIRECTORY)
    attempts: list[bool] = []
    once = service._unmount_once

    def attempt(mp: str, lazy: bool) -> tuple[bool, str]:
        busy, why = once(mp, lazy)
        attempts.append(busy)
        if busy and len(attempts) == 1:
            os.close(fd)  # the user of the mount goes away after the first refusal
        return busy, why

    monkeypatch.setattr(service, "_unmount_once", attempt)
    try:
        service.unmount(mnt)
    finally:
        if len(attempts) < 1 or not attempts[0]:
            os.close(fd)
    assert attempts[0] is True and attempts[-1] is False
    assert not is_mounted(mnt)


def test_mount_mkdir_and_nonempty(sample_archive: Path, tmp_path: Path, mnt: Path) -> None:
    a = str(sample_archive)
    new = tmp_path / "new" / "mnt"
    assert "does not exist (--mkdir creates it)" in _error("mount", a, str(new))
    clipctl("mount", "--mkdir", a, str(new))
    try:
        assert (new / "etc" / "hostname").read_bytes()
    finally:
        clipctl("umount", str(new))
    (mnt / "mine").write_text("hidden by a mount")
    assert _error("mount", a, str(mnt)) == (
        f"clipctl: error: mountpoint {mnt} is not empty: the mount would hide its 1 entries "
        "(-o nonempty mounts anyway)")
    assert not is_mounted(mnt)
    clipctl("mount", a, str(mnt), "-o", "nonempty")
    try:
        assert not (mnt / "mine").exists() and (mnt / "etc").is_dir()
    finally:
        clipctl("umount", str(mnt))
    assert (mnt / "mine").read_text() == "hidden by a mount"
    m = clipcy.mount(sample_archive, tmp_path / "api" / "mnt", mkdir=True)  # the API too
    with m:
        assert os.listdir(m.mountpoint)


def test_mount_logs_one_file_per_mount_pruned(sample_archive: Path, tmp_path: Path,
                                              mnt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clipcy.fusemount.service import LOGS_KEPT

    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    logs = state / "clipcy" / "mounts"
    logs.mkdir(parents=True)
    dead = 1 << 30  # above any pid_max: no such process
    for i in range(LOGS_KEPT + 5):  # older logs of mounts that ended
        old = logs / f"mount-old-{dead + i}.log"
        old.write_text("old\n")
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    r = clipctl("mount", str(sample_archive), str(mnt))
    pid = _served_pid(r.stderr)
    tag = str(mnt.resolve()).strip("/").replace("/", "_")
    log = logs / f"mount-{tag}-{pid}.log"
    assert f"log {log})" in r.stderr
    second = tmp_path / "mnt2"
    second.mkdir()
    m = clipcy.mount(sample_archive, second)
    try:
        assert m.log_path == str(logs / f"mount-{str(second).strip('/').replace('/', '_')}-"
                                        f"{m.pid}.log")
        names = sorted(p.name for p in logs.iterdir())
        assert len(names) == LOGS_KEPT and log.name in names
        # the oldest went first
        assert f"mount-old-{dead}.log" not in names and f"mount-old-{dead + 24}.log" in names
    finally:
        m.unmount()
        clipctl("umount", str(mnt))
    assert log.exists() and Path(m.log_path).exists()


def _foreground(archive: Path, mnt: Path, *extra: str) -> subprocess.Popen[str]:
    """clipctl -v mount -f, read until its warm-up is done (its log on the stderr pipe)."""
    proc = subprocess.Popen([sys.executable, "-I", "-m", "clipcy", "-v", "mount", "-f",
                             *extra, str(archive), str(mnt)], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "warm-up done" in line:
            break
    else:
        raise AssertionError("".join(lines))
    serving = [x for x in lines if x.startswith("clipctl: serving")]
    assert serving == [f"clipctl: serving {archive} at {mnt} (pid {proc.pid}); stop with "
                       f"Ctrl-C or clipctl umount {mnt}\n"], lines
    return proc


@pytest.fixture(scope="module")
def no_xattrs_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import make_tar, write_layout

    root = tmp_path_factory.mktemp("noxattrs")
    write_layout(root / "img", [make_tar([("etc", "dir", b""),
                                          ("etc/os-release", "file", b"ID=plain\n")])])
    return _index(root / "img", root / "plain.clip", "--tag", "latest")


@pytest.mark.parametrize("forced", [False, True])
def test_xattrs_enosys_by_default_real_with_flag(no_xattrs_archive: Path, mnt: Path,
                                                 forced: bool) -> None:
    with open_archive(no_xattrs_archive) as arc:
        assert not any(n.xattrs for n in arc.walk())
    proc = _foreground(no_xattrs_archive, mnt, *(["--xattrs"] if forced else []))
    try:
        f = mnt / "etc" / "os-release"
        r = subprocess.run(["getfattr", "-d", str(f)], capture_output=True, text=True)
        if forced:
            assert os.listxattr(f) == []
            with pytest.raises(OSError) as e:
                os.getxattr(f, "user.nothing")
            assert e.value.errno == errno.ENODATA
            assert r.returncode == 0 and r.stdout == r.stderr == ""
        else:
            with pytest.raises(OSError) as e:
                os.listxattr(f)
            assert e.value.errno == errno.EOPNOTSUPP
            assert "Operation not supported" in r.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not is_mounted(mnt)
