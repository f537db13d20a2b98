"""clipctl stats on live mounts, read errors counted once per kind, and mount --fetch-all.

Real FUSE mounts through the CLI; the remote cases read from a real docker-registry through
the fault proxy (tests/remoteserv.py), with an empty span cache of the test's own. Waiting is
on answers (each stats call is a request to the mount process), never on a fixed sleep.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import remoteserv as rs  # noqa: E402

from clipcy.fusemount import available  # noqa: E402
from clipcy.fusemount.service import is_mounted, unmount  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "clipcy" / "sample"
KEYS = {"mount", "uptime_seconds", "requests", "http", "span_cache", "decoded_cache", "read_errors",
        "read_errors_total", "replay", "background"}
LANES = {"foreground", "replay", "background"}
TRIES = 600  # stats answers waited for, at most, for a condition to hold

pytestmark = [
    pytest.mark.skipif(not available(), reason="FUSE unavailable (no /dev/fuse or binding)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the mount tests run as root (CI does)"),
]
needs_registry = pytest.mark.skipif(not rs.have_tools(), reason="docker-registry/skopeo absent")


def clipctl(*args: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], capture_output=True,
                       text=True, timeout=120, env=env)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def stats(mnt: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(clipctl("stats", "--json", str(mnt), env=env).stdout)
    return doc


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_STATE_HOME=str(tmp_path / "state"))
    return e


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the sample's archive, its tree extracted from the layout)."""
    tmp = tmp_path_factory.mktemp("sample")
    clip = tmp / "sample.clip"
    clipctl("index-layout", "--layout", str(SAMPLE), "--tag", "latest", "--out", str(clip))
    clipctl("extract", "-C", str(tmp / "tree"), "--layout", str(SAMPLE), str(clip))
    return clip, tmp / "tree"


def files(root: Path) -> dict[str, Path]:
    """Regular files under root by their path in the image."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink():
                out["/" + str(p.relative_to(root))] = p
    return out


def tree(root: Path) -> set[str]:
    out = set()
    for dirpath, dirs, names in os.walk(root):
        for n in dirs + names:
            out.add(str((Path(dirpath) / n).relative_to(root)))
    return out


def test_stats_counts_move(sample: tuple[Path, Path], mnt: Path, env: dict[str, str]) -> None:
    clip, expected = sample
    clipctl("mount", str(clip), str(mnt), "--layout", str(SAMPLE), env=env)
    try:
        before = stats(mnt, env)
        assert set(before) == KEYS
        assert before["mount"]["mountpoint"] == str(mnt) and before["mount"]["archive"] == \
            str(clip)
        assert set(before["requests"]) == LANES
        assert before["read_errors"] == {} and before["read_errors_total"] == 0
        assert before["replay"]["state"] == "off" and before["background"]["state"] == "off"
        assert before["http"] is None  # a layout directory
        # every key is documented in docs/CLI.md's stats section
        cli = (Path(__file__).resolve().parents[1] / "docs" / "CLI.md").read_text()
        section = cli[cli.index("`clipctl stats MOUNTPOINT [--json]`"):]
        section = section[:section.index("\n- ", 1)]
        for key, value in before.items():
            assert f"`{key}`" in section, key
            if isinstance(value, dict) and key not in ("requests", "read_errors",
                                                       "decoded_cache"):
                missing = [k for k in value if f"`{k}`" not in section]
                assert not missing, (key, missing)
        # the mount's tree is the image, nothing more (no stats file in it)
        assert tree(mnt) == tree(expected)
        got = {p: f.read_bytes() for p, f in files(mnt).items()}
        assert got == {p: f.read_bytes() for p, f in files(expected).items()}
        after = stats(mnt, env)
        fg, fg0 = after["requests"]["foreground"], before["requests"]["foreground"]
        assert fg["requests"] > fg0["requests"] and fg["bytes"] > fg0["bytes"]
        assert after["span_cache"]["spans_decoded"] > before["span_cache"]["spans_decoded"]
        assert after["span_cache"]["bytes_decoded"] >= sum(len(b) for b in got.values())
        assert after["requests"]["replay"] == {"requests": 0, "bytes": 0}
        assert after["uptime_seconds"] >= before["uptime_seconds"]
        text = clipctl("stats", str(mnt), env=env).stdout
        assert "foreground fetches" in text and "background  off" in text
    finally:
        unmount(mnt)


def test_stats_needs_a_live_mount(tmp_path: Path, env: dict[str, str]) -> None:
    for path, why in [(tmp_path, "is not a clipcy mount"),
                      (tmp_path / "nowhere", "does not exist or is not a directory")]:
        r = clipctl("stats", str(path), env=env, check=False)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("clipctl: error: "), r.stderr
        assert why in r.stderr


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[rs.Registry, rs.FaultProxy]]:
    if not rs.have_tools():
        pytest.skip("docker-registry/skopeo absent")
    reg = rs.Registry(tmp_path / "reg")
    proxy = None
    try:
        r = reg.push(SAMPLE, "latest", "sample", "latest")
        assert r.returncode == 0, r.stderr
        proxy = rs.FaultProxy(reg.host)
        yield reg, proxy
    finally:
        if proxy is not None:
            proxy.close()
        reg.stop()


@needs_registry
def test_read_errors_counted_and_logged_once(sample: tuple[Path, Path], mnt: Path,
                                             env: dict[str, str], tmp_path: Path,
                                             registry: tuple[rs.Registry, rs.FaultProxy]
                                             ) -> None:
    clip, expected = sample
    _, proxy = registry
    log = tmp_path / "mount.log"
    clipctl("mount", str(clip), str(mnt), "--storage", f"docker://127.0.0.1:{proxy.port}/sample",
            "--retries", "0", "--log", str(log), env=env)
    try:
        proxy.always = "503"  # the registry fails every blob request from now on
        names = sorted(files(expected))
        failed = 0
        for p in names:
            try:
                (mnt / p.lstrip("/")).read_bytes()
            except OSError as e:
                assert e.errno == 5  # EIO
                failed += 1
        assert failed == len(names)
        doc = stats(mnt, env)
        assert set(doc["read_errors"]) == {"remote"}
        assert doc["read_errors_total"] == doc["read_errors"]["remote"] >= failed
        assert doc["http"]["requests"] >= failed
    finally:
        unmount(mnt)
    lines = [ln for ln in log.read_text().splitlines() if "the read returns EIO" in ln]
    assert len(lines) == 1, lines  # one line for the kind, however many reads failed
    assert "HTTP 503" in lines[0]


def big_layout(root: Path) -> Path:
    """Two gzip layers, the second of several MiB compressed: more than one background
    request per blob."""
    from conftest import make_tar, write_layout
    from samples import payload

    small = make_tar([("etc", "dir", b""), ("etc/hostname", "file", b"big\n")])
    big = make_tar([("data", "dir", b"")] + [(f"data/f{i}", "file", payload(i, 700_000 + i))
                                              for i in range(6)])
    return write_layout(root, [small, big])


def wait_background(mnt: Path, env: dict[str, str]) -> dict[str, Any]:
    for _ in range(TRIES):
        doc = stats(mnt, env)
        if doc["background"]["state"] not in ("waiting", "running"):
            return doc
    raise AssertionError(f"the background fetch did not end: {doc['background']}")


def _big_in_registry(reg: rs.Registry, tmp_path: Path, env: dict[str, str]
                     ) -> tuple[Path, Path]:
    """big_layout's image indexed (its archive), extracted (the expected tree) and pushed to
    the registry as sample:latest."""
    layout = big_layout(tmp_path / "big")
    clip, expected = tmp_path / "big.clip", tmp_path / "big-tree"
    clipctl("index-layout", "--layout", str(layout), "--out", str(clip), env=env)
    clipctl("extract", "-C", str(expected), "--layout", str(layout), str(clip), env=env)
    r = reg.push(layout, "latest", "sample", "latest")
    assert r.returncode == 0, r.stderr
    return clip, expected


@needs_registry
@pytest.mark.parametrize("image", ["sample", "big"])
def test_fetch_all_survives_a_registry_outage(image: str, sample: tuple[Path, Path],
                                              mnt: Path, env: dict[str, str], tmp_path: Path,
                                              registry: tuple[rs.Registry, rs.FaultProxy]
                                              ) -> None:
    reg, proxy = registry
    clip, expected = sample if image == "sample" else _big_in_registry(reg, tmp_path, env)
    where = ["--storage", f"docker://127.0.0.1:{proxy.port}/sample", "--retries", "0"]
    clipctl("mount", str(clip), str(mnt), "--fetch-all", *where, env=env)
    try:
        doc = wait_background(mnt, env)
        bg = doc["background"]
        assert bg["state"] == "done" and bg["done"] is True, bg
        assert bg["bytes_total"] > 0 and bg["bytes_fetched"] == bg["bytes_total"]  # empty cache
        assert bg["bytes_cached"] == 0 and bg["errors"] == 0
        assert doc["requests"]["background"]["requests"] == bg["requests"] >= bg["layers"]
        assert doc["requests"]["background"]["bytes"] == bg["bytes_fetched"]
        if image == "big":  # 1 MiB per request
            assert bg["requests"] >= bg["bytes_total"] >> 20
    finally:
        unmount(mnt)
    # a second mount finds it all in the span cache: nothing to fetch
    clipctl("mount", str(clip), str(mnt), "--fetch-all", *where, env=env)
    try:
        bg = wait_background(mnt, env)["background"]
        assert bg["state"] == "done" and bg["bytes_cached"] == bg["bytes_total"], bg
        assert bg["bytes_fetched"] == 0 and bg["requests"] == 0
        # the registry goes away: every file still reads, exactly
        proxy.always = "503"
        reg.stop()
        want = {p: f.read_bytes() for p, f in files(expected).items()}
        assert {p: f.read_bytes() for p, f in files(mnt).items()} == want
        after = stats(mnt, env)
        assert after["read_errors_total"] == 0
        assert after["requests"]["foreground"]["requests"] == 0  # all from the caches
    finally:
        unmount(mnt)


@needs_registry
@pytest.mark.parametrize("faults", [["503", "429", "truncate", "reset", "flip", "200"],
                                    ["always flip"]], ids=["retried", "every-body-flipped"])
def test_fetch_all_never_caches_wrong_bytes(faults: list[str], mnt: Path, env: dict[str, str],
                                            tmp_path: Path,
                                            registry: tuple[rs.Registry, rs.FaultProxy]
                                            ) -> None:
    """Faults on the background fetch's requests: retried (503, 429, cut or reset bodies, a
    200 for a range, a flipped byte fetched again, once: a second damaged answer for the same
    spans fails like a read) and done, or, when every body is damaged,
    failed with the checksum error; either way every file then reads exactly."""
    reg, proxy = registry
    clip, expected = _big_in_registry(reg, tmp_path, env)
    if faults == ["always flip"]:
        proxy.always = "flip"  # the storage check reads one byte, unverified: it passes
    else:
        proxy.add(*faults)
    clipctl("mount", str(clip), str(mnt), "--storage", f"docker://127.0.0.1:{proxy.port}/sample",
            "--fetch-all", env=env)
    try:
        bg = wait_background(mnt, env)["background"]
        if faults == ["always flip"]:
            assert bg["state"] == "failed" and "span checksum mismatch" in bg["error"], bg
            proxy.always = ""
        else:
            assert bg["state"] == "done" and bg["errors"] == 0, bg["error"]
            assert bg["bytes_fetched"] == bg["bytes_total"]
        want = {p: f.read_bytes() for p, f in files(expected).items()}
        assert {p: f.read_bytes() for p, f in files(mnt).items()} == want
        assert stats(mnt, env)["read_errors_total"] == 0
    finally:
        unmount(mnt)


def test_python_api_stats_and_fetch_all(sample: tuple[Path, Path], mnt: Path) -> None:
    """clipcy.mount(fetch_all=True) and Mount.stats(): a layout directory has nothing to
    fetch, so the background fetch is done with no request."""
    import clipcy

    clip, expected = sample
    with clipcy.mount(clip, mnt, storage=SAMPLE, fetch_all=True) as m:
        assert (mnt / "etc" / "hostname").read_bytes() == \
            (expected / "etc" / "hostname").read_bytes()
        for _ in range(TRIES):
            doc = m.stats()
            if doc["background"]["state"] not in ("waiting", "running"):
                break
        assert doc["mount"]["pid"] == m.pid and set(doc) == KEYS
        assert doc["background"]["state"] == "done" and doc["background"]["layers"] == 0
        assert doc["background"]["bytes_fetched"] == doc["background"]["requests"] == 0
        assert doc["read_errors_total"] == 0 and doc["http"] is None
    assert not is_mounted(mnt)


def test_stats_of_a_stale_mount(sample: tuple[Path, Path], mnt: Path,
                                env: dict[str, str]) -> None:
    import signal

    clip, _ = sample
    clipctl("mount", str(clip), str(mnt), "--layout", str(SAMPLE), env=env)
    try:
        pid = stats(mnt, env)["mount"]["pid"]
        pidfd = os.pidfd_open(pid)
        try:
            os.kill(pid, signal.SIGKILL)
            select.select([pidfd], [], [], 60)  # readable once the process has exited
        finally:
            os.close(pidfd)
        r = clipctl("stats", str(mnt), env=env, check=False)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert f"{mnt}: stale mount (its process is gone)" in r.stderr, r.stderr
    finally:
        unmount(mnt, lazy=True)


def test_fetch_all_needs_room_in_the_span_cache(mnt: Path, env: dict[str, str],
                                                tmp_path: Path) -> None:
    """Refused before anything is asked of the registry: no span cache, or one smaller than
    the blobs (it would evict what it fetched)."""
    layout = big_layout(tmp_path / "big")
    clip = tmp_path / "big.clip"
    clipctl("index-layout", "--layout", str(layout), "--out", str(clip), env=env)
    nowhere = ["--storage", f"docker://127.0.0.1:{rs.free_port()}/sample"]
    for extra, why in [(["--no-cache"], "not with --no-cache"),
                       (["--cache-max-mib", "2"], "more than the span cache keeps")]:
        r = clipctl("mount", str(clip), str(mnt), "--fetch-all", *nowhere, *extra, env=env,
                    check=False)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("clipctl: error: --fetch-all") and why in r.stderr, r.stderr
        assert not is_mounted(mnt)


class _SeenWaiting(threading.Event):
    """foreground_idle that tells the test when someone waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


@needs_registry
def test_background_waits_for_the_foreground(tmp_path: Path,
                                             registry: tuple[rs.Registry, rs.FaultProxy]
                                             ) -> None:
    """While a read's fetch is in flight the background fetch sends nothing; it goes on once
    the fetch is done (the Python API, a real registry, the fetch counted at the proxy)."""
    from clipcy.archive.reader import open_archive
    from clipcy.fusemount.background import BackgroundFetch
    from clipcy.fusemount.counters import MountCounters
    from clipcy.storage.registry import RemoteOptions

    reg, proxy = registry
    layout = big_layout(tmp_path / "big")
    clip = tmp_path / "big.clip"
    clipctl("index-layout", "--layout", str(layout), "--out", str(clip))
    assert reg.push(layout, "latest", "sample", "latest").returncode == 0
    counters = MountCounters()
    idle = counters.foreground_idle = _SeenWaiting()
    idle.set()
    with open_archive(clip, storage=f"docker://127.0.0.1:{proxy.port}/sample",
                      remote=RemoteOptions(cache_dir=str(tmp_path / "spans"))) as arc:
        arc.layer_readers().observer = counters
        token = counters.fetching()  # a read's fetch is on its way (this thread: foreground)
        assert not idle.is_set()
        bg = BackgroundFetch(arc, counters)
        bg.start()
        assert idle.waiting.wait(60)  # a fetcher is held...
        assert proxy.blob_requests() == 0  # ...and none has sent anything
        counters.fetched(token, 0)
        assert bg.wait(60)
        c = counters.background.snapshot()
        assert c["state"] == "done" and c["pauses"] >= 1, c
        assert c["bytes_fetched"] == c["bytes_total"] > 0
        assert proxy.blob_requests() == c["requests"] >= 2
