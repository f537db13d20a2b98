"""The on-disk cache of decoded spans (storage/decodedcache.py) through real FUSE mounts.

An image of two gzip layers tarred by GNU tar in a shuffled (readdir-like) order is read file
by file in path order: the mount puts what it inflates in the decoded cache and, the reads
being scattered, streams the layers into it; after a remount every file is served from it
with nothing inflated (the mount's counters, clipctl stats --json). A damaged cache (a
flipped byte, a truncated entry, another entry's bytes in its place), a full one (a small
tmpfs) and two mounts sharing one give the image's bytes, every file compared. clipctl cache
info and prune report and remove what they say.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clipcy.fusemount import available
from clipcy.fusemount.service import is_mounted, unmount

pytestmark = [
    pytest.mark.skipif(not available() or os.geteuid() != 0,
                       reason="FUSE unavailable, or not root (the mount tests run as root)"),
    pytest.mark.skipif(not shutil.which("umoci") or not shutil.which("tar"),
                       reason="needs umoci and GNU tar"),
]


def clipctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], capture_output=True,
                       text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def _content(rnd: random.Random, size: int) -> bytes:
    """Half random, half text: gzip keeps about half of it."""
    out = bytearray()
    while len(out) < size:
        out += rnd.randbytes(48) + b"a line of text that repeats itself %d\n" % len(out) * 2
    return bytes(out[:size])


class Image:
    """Two gzip layers of ~6 MB of files each, in shuffled order (umoci keeps the tar's)."""

    def __init__(self, tmp: Path) -> None:
        rnd = random.Random(2121)
        self.files: dict[str, bytes] = {}
        layout = tmp / "layout"
        subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
        subprocess.run(["umoci", "new", "--image", f"{layout}:latest"], check=True)
        for layer in range(2):
            stage = tmp / f"stage{layer}"
            names = []
            for d in range(10):
                (stage / f"l{layer}" / f"d{d}").mkdir(parents=True)
                for i in range(60):
                    name = f"l{layer}/d{d}/f{i:03d}"
                    data = _content(rnd, rnd.choice([0, 10, 900, 5000, 20000, 40000]))
                    (stage / name).write_bytes(data)
                    self.files["/" + name] = data
                    names.append(name)
            big = f"l{layer}/big"
            self.files["/" + big] = _content(rnd, 2 << 20)
            (stage / big).write_bytes(self.files["/" + big])
            names.append(big)
            rnd.shuffle(names)
            dirs = [f"l{layer}"] + [f"l{layer}/d{d}" for d in range(10)]
            (tmp / "list").write_text("".join(n + "\n" for n in dirs + names))
            tar = tmp / f"layer{layer}.tar"
            subprocess.run(["tar", "-C", str(stage), "--no-recursion", "--format=posix", "-cf",
                            str(tar), "-T", str(tmp / "list")], check=True)
            subprocess.run(["umoci", "raw", "add-layer", "--no-history", "--image",
                            f"{layout}:latest", str(tar)], check=True, capture_output=True)
        self.archive = tmp / "image.clip"
        clipctl("index-layout", "--layout", str(layout), "--out", str(self.archive),
                "--no-cache")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return Image(tmp_path_factory.mktemp("decoded"))


@pytest.fixture
def mnts(tmp_path: Path) -> Iterator[list[Path]]:
    made: list[Path] = []
    for i in range(2):
        d = tmp_path / f"mnt{i}"
        d.mkdir()
        made.append(d)
    yield made
    for d in made:
        for _ in range(3):
            if not is_mounted(d):
                break
            unmount(d, lazy=True)


def cache_root() -> Path:
    return Path(os.environ["XDG_CACHE_HOME"]) / "clipcy" / "decoded"


def mount(image: Image, mnt: Path, *extra: str) -> int:
    # a 1 MiB span cache (4 spans): reads miss in memory, so the disk cache is what serves
    r = clipctl("mount", "--cache-mib", "1", str(image.archive), str(mnt), *extra)
    return int(r.stderr.split("(pid ")[1].split(",")[0])


def umount(mnt: Path, pid: int) -> None:
    import select

    fd = os.pidfd_open(pid)
    try:
        clipctl("umount", str(mnt))
        assert select.select([fd], [], [], 60)[0], "the mount process did not exit"
    finally:
        os.close(fd)


def stats(mnt: Path) -> dict[str, Any]:
    got: dict[str, Any] = json.loads(clipctl("stats", "--json", str(mnt)).stdout)
    return got


def read_all(image: Image, mnt: Path) -> None:
    """Every file, in path order, compared with the image's bytes."""
    for path in sorted(image.files):
        assert (mnt / path[1:]).read_bytes() == image.files[path], path


def entries() -> list[Path]:
    return sorted(p for p in cache_root().rglob("*-*") if p.is_file()
                  and not p.name.startswith("."))


def _thread_nice(pid: int) -> set[int]:
    """The nice values of a process's threads (field 19 of /proc/PID/task/TID/stat)."""
    out = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # the thread ended
        out.add(int(stat.rsplit(")", 1)[1].split()[16]))
    return out


def test_remount_reads_from_the_decoded_cache(image: Image, mnts: list[Path]) -> None:
    mnt = mnts[0]
    pid = mount(image, mnt)
    try:
        read_all(image, mnt)
        first = stats(mnt)
        nice = _thread_nice(pid)
    finally:
        umount(mnt, pid)
    # the writer and the streamer yield the cores to the program the mount serves
    from clipcy.fusemount.spans import BACKGROUND_NICE

    assert BACKGROUND_NICE > 0 and BACKGROUND_NICE in nice and 0 in nice, nice
    dc = first["decoded_cache"]
    assert dc is not None and dc["dir"] == str(cache_root())
    assert first["span_cache"]["bytes_decoded"] > 0
    assert dc["puts"] + dc["spans_streamed"] > 0
    # reads in path order of layers in shuffled order: both are streamed into the cache
    assert dc["layers_streamed"] == 2, dc
    assert entries()
    pid = mount(image, mnt)
    try:
        read_all(image, mnt)
        second = stats(mnt)
    finally:
        umount(mnt, pid)
    # every span a read needed is in the cache: nothing inflated, nothing streamed again
    assert second["span_cache"]["bytes_decoded"] == 0, second["span_cache"]
    assert second["decoded_cache"]["hits"] > 0
    assert second["decoded_cache"]["layers_streamed"] == 0
    assert second["read_errors_total"] == 0


def test_no_cache_and_zero_bound_keep_none(image: Image, mnts: list[Path]) -> None:
    for flag in (["--no-cache"], ["--decoded-cache-mib", "0"]):
        pid = mount(image, mnts[0], *flag)
        try:
            read_all(image, mnts[0])
            assert stats(mnts[0])["decoded_cache"] is None
        finally:
            umount(mnts[0], pid)
        assert not cache_root().exists() or not entries()
    r = clipctl("mount", str(image.archive), str(mnts[0]), "--decoded-cache-mib", "-1",
                check=False)
    assert r.returncode == 1 and r.stderr.startswith("clipctl: error: --decoded-cache-mib")
    assert r.stderr.count("\n") == 1


def _warm(image: Image, mnt: Path) -> None:
    pid = mount(image, mnt)
    try:
        read_all(image, mnt)
    finally:
        umount(mnt, pid)


def test_damaged_entries_are_misses_never_wrong_bytes(image: Image, mnts: list[Path]) -> None:
    _warm(image, mnts[0])
    found = entries()
    assert len(found) >= 6
    damaged = 0
    for i, p in enumerate(found):
        raw = bytearray(p.read_bytes())
        if i % 3 == 0:  # a flipped byte in the data
            raw[len(raw) // 2] ^= 0x20
            p.write_bytes(bytes(raw))
        elif i % 3 == 1:  # truncated
            p.write_bytes(bytes(raw[: len(raw) // 2]))
        else:  # another entry's (intact) bytes renamed into its place
            other = found[i - 1]
            if other.stat().st_size != len(raw):
                continue
            os.replace(other, p)
        damaged += 1
    pid = mount(image, mnts[0])
    try:
        read_all(image, mnts[0])
        got = stats(mnts[0])
    finally:
        umount(mnts[0], pid)
    assert got["read_errors_total"] == 0
    assert got["decoded_cache"]["damaged"] > 0
    assert got["span_cache"]["bytes_decoded"] > 0  # the damaged spans inflated again


def test_a_full_disk_gives_the_image_bytes(image: Image, mnts: list[Path],
                                           tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        pid = mount(image, mnts[0], "--cache-dir", str(small))
        try:
            read_all(image, mnts[0])
            got = stats(mnts[0])
        finally:
            umount(mnts[0], pid)
        dc = got["decoded_cache"]
        assert dc["dir"] == str(small / "decoded")
        assert dc["write_errors"] > 0, dc
        assert got["read_errors_total"] == 0
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_two_mounts_share_the_cache(image: Image, mnts: list[Path]) -> None:
    pids = [mount(image, m) for m in mnts]
    errors: list[BaseException] = []

    def reader(m: Path, reverse: bool) -> None:
        try:
            for path in sorted(image.files, reverse=reverse):
                assert (m / path[1:]).read_bytes() == image.files[path], path
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    try:
        threads = [threading.Thread(target=reader, args=(m, i == 1))
                   for i, m in enumerate(mnts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    finally:
        for m, pid in zip(mnts, pids, strict=True):
            umount(m, pid)
    pid = mount(image, mnts[0])
    try:
        read_all(image, mnts[0])
        got = stats(mnts[0])
    finally:
        umount(mnts[0], pid)
    assert got["span_cache"]["bytes_decoded"] == 0
    assert got["decoded_cache"]["damaged"] == 0


def test_stream_fills_the_cache_for_whole_layer_readers(image: Image, tmp_path: Path) -> None:
    """DecodedSpanCache.stream (mount --fetch-all's hook): each layer inflated once into the
    disk cache; a second cache over it then serves every file without inflating a byte."""
    from clipcy import open_archive
    from clipcy.fusemount.fs import ImageFS
    from clipcy.storage.decodedcache import DecodedDiskCache

    root = tmp_path / "decoded"
    with open_archive(image.archive) as arc:
        fs = ImageFS(arc, 1 << 20, DecodedDiskCache(root))
        streams = [fs.spans.stream(layer) for layer in range(arc.layer_count)]
        assert all(s is not None for s in streams)
        assert fs.spans.stream(0) is None  # once per layer
        for s in streams:
            assert s is not None
            s.done.wait()
        assert fs.spans.stream_errors == 0
        assert fs.spans.decompressed == 0  # the streamer's bytes went to disk only
        streamed = fs.spans.streamed
        assert streamed > 0

        class Refuse:
            def pread(self, offset: int, n: int) -> bytes:
                raise AssertionError(f"inflated {n} bytes at {offset}")

        again = ImageFS(arc, 1 << 20, DecodedDiskCache(root))
        again.spans._reader = lambda layer: Refuse()
        files = {n.path.decode(): n for n in arc.walk() if n.type == "file"}
        for path, want in image.files.items():
            n = files[path]
            assert again.spans.read(n.layer, n.offset, n.size, n.offset + n.size) == want
        assert again.spans.disk_hits > 0 and again.spans.decompressed == 0


def test_cache_info_prune_stats_and_inspect(image: Image, mnts: list[Path]) -> None:
    pid = mount(image, mnts[0])
    try:
        read_all(image, mnts[0])
        text = clipctl("stats", str(mnts[0])).stdout
        assert "decoded cache" in text and "on disk" in text
    finally:
        umount(mnts[0], pid)
    info = json.loads(clipctl("cache", "info", "--json").stdout)
    assert set(info) == {"spans", "decoded", "layers", "archives"}
    on_disk = entries()
    assert info["decoded"]["dir"] == str(cache_root())
    assert info["decoded"]["entries"] == len(on_disk)
    assert info["decoded"]["bytes"] == sum(p.stat().st_size for p in on_disk)
    assert "decoded spans" in clipctl("cache", "info").stdout
    cached = json.loads(clipctl("inspect", "--json", str(image.archive)).stdout)["cache"]
    decoded = cached["decoded"]
    assert 0 < decoded["bytes"] <= decoded["of"]
    assert cached["spans"]["bytes"] == 0  # a local layout: nothing fetched
    # --max-mib: least recently used first, down to the bound
    by_age = sorted(on_disk, key=lambda p: p.stat().st_mtime)
    for i, p in enumerate(by_age):
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    keep = info["decoded"]["bytes"] // 2
    got = json.loads(clipctl("cache", "prune", "--json", "--max-mib",
                             str(keep >> 20)).stdout)["decoded"]
    assert got["bytes"] <= keep and got["entries"] > 0
    left = set(entries())
    assert left == set(by_age[len(by_age) - len(left):])  # the newest ones stay
    clipctl("cache", "prune", "--all", "--kind", "decoded")
    assert entries() == []
    assert json.loads(clipctl("inspect", "--json", str(image.archive)).stdout)[
        "cache"]["decoded"]["bytes"] == 0
    for bad in (["prune"], ["prune", "--max-mib", "-1"], ["info", "--all"],
                ["prune", "--max-mib", "1", "--kind", "layers"]):
        r = clipctl("cache", *bad, check=False)
        assert r.returncode == 1 and r.stderr.startswith("clipctl: error: "), r.stderr
        assert r.stderr.count("\n") == 1


def _spread_reads(image: Image, layer: int, count: int, whole: bool) -> list[tuple[Any, int, int]]:
    """`count` reads (node, offset in the file, length) of files of `layer`: each whole
    file, or 4 KiB from the middle of one, within one span at least 2 spans from every other
    read's: each read misses one span with none cached or decoded just before it, a
    scattered miss."""
    from clipcy import open_archive
    from clipcy.fusemount.spans import SPAN

    with open_archive(image.archive) as arc:
        nodes = [n for n in arc.walk() if n.type == "file" and n.layer == layer
                 and n.size > 8192]
    random.Random(7).shuffle(nodes)
    out: list[tuple[Any, int, int]] = []
    taken: list[int] = []
    for n in nodes:
        off, length = (0, n.size) if whole else (n.size // 2, 4096)
        k = (n.offset + off) // SPAN
        if (n.offset + off + length - 1) // SPAN == k and all(abs(k - j) >= 2 for j in taken):
            taken.append(k)
            out.append((n, off, length))
            if len(out) == count:
                break
    assert len(out) == count, "the image has too few spread files"
    return out


def test_streaming_policy_whole_files_and_reads_inside_files(image: Image,
                                                             tmp_path: Path) -> None:
    """Files read whole out of data order have the layer streamed after SCATTERED_AFTER
    scattered misses, not one fewer; reads that start inside files count for a whole miss
    only at a third of the layer's spans, so a few random reads stream nothing. Once a
    layer is on disk, the same whole-file reads have its entries read ahead (warmed)."""
    from clipcy import open_archive
    from clipcy.fusemount.fs import ImageFS
    from clipcy.fusemount.spans import INSIDE_SHARE, SCATTERED_AFTER
    from clipcy.storage.decodedcache import DecodedDiskCache

    with open_archive(image.archive) as arc:
        # reads inside files: as many scattered misses as the whole-file rule would stream
        # after, and more, still under a third of the layer's spans
        fs = ImageFS(arc, 1 << 20, DecodedDiskCache(tmp_path / "inside"))
        assert fs.spans.disk is not None
        spans = fs.spans.disk.spans(0)
        inside = max(SCATTERED_AFTER, spans // INSIDE_SHARE) - 1
        assert inside >= SCATTERED_AFTER  # the test image is large enough to tell them apart
        for n, off, length in _spread_reads(image, 0, inside, whole=False):
            got = fs.spans.read(n.layer, n.offset + off, length, n.offset + n.size, n.offset)
            assert got == image.files[n.path.decode()][off:off + length]
        assert fs.spans.read_misses == inside
        assert fs.spans.streams_started == 0

        # whole files: SCATTERED_AFTER - 1 scattered misses stream nothing, one more does
        fs = ImageFS(arc, 1 << 20, DecodedDiskCache(tmp_path / "whole"))
        files = [n for n, _, _ in _spread_reads(image, 0, SCATTERED_AFTER, whole=True)]
        for i, n in enumerate(files):
            assert fs.spans.streams_started == 0, i
            got = fs.spans.read(n.layer, n.offset, n.size, n.offset + n.size, n.offset)
            assert got == image.files[n.path.decode()]
        assert fs.spans.streams_started == 1
        st = fs.spans.stream(0)  # the layer's stream exists: None, then wait for it
        assert st is None
        fs.spans._streams[0].done.wait()
        fs.spans.flush()  # the spans the reads inflated, queued for the disk
        assert fs.spans.stream_errors == 0 and fs.spans.streamed > 0
        assert fs.spans.disk_puts == SCATTERED_AFTER

        # the layer is on disk: the same reads from a new mount's view find every span
        # there, and the SCATTERED_AFTER-th has the layer's entries read ahead, once
        again = ImageFS(arc, 1 << 20, DecodedDiskCache(tmp_path / "whole"))
        for i, n in enumerate(files):
            assert again.spans.layers_warmed == 0, i
            got = again.spans.read(n.layer, n.offset, n.size, n.offset + n.size, n.offset)
            assert got == image.files[n.path.decode()]
        assert again.spans.layers_warmed == 1
        assert again.spans.decompressed == 0 and again.spans.streams_started == 0


def test_reads_leave_their_puts_to_the_writer(image: Image, tmp_path: Path) -> None:
    """A read's inflated span is put on disk by the writer thread; with WRITE_QUEUE spans
    waiting, the next read writes its own. A span waiting is served from the queue (not
    inflated again), and flush() returns once every one is on disk."""
    from clipcy import open_archive
    from clipcy.fusemount.fs import ImageFS
    from clipcy.fusemount.spans import SPAN, WRITE_QUEUE
    from clipcy.storage.decodedcache import DecodedDiskCache

    gate = threading.Event()
    with open_archive(image.archive) as arc:
        fs = ImageFS(arc, 1 << 20, DecodedDiskCache(tmp_path / "decoded"))
        disk = fs.spans.disk
        assert disk is not None
        put = disk.put

        def held_put(layer: int, k: int, data: bytes) -> bool:
            if threading.current_thread().name == "clipcy-decoded-writer":
                gate.wait()  # the writer is slow: reads must not wait for it
            return bool(put(layer, k, data))

        disk.put = held_put
        # every other span (none read in order: no read-ahead), each a miss, inflated
        ks = [2 * i for i in range(WRITE_QUEUE + 4)]
        assert ks[-1] < disk.spans(0)
        for k in ks:
            fs.spans.read(0, k * SPAN, 4096)
        assert fs.spans.read_misses == len(ks)
        # WRITE_QUEUE wait (the first held by the writer); the reads past that wrote theirs
        assert fs.spans.disk_puts == len(ks) - WRITE_QUEUE
        assert disk.has(0, ks[-1]) and not disk.has(0, 0)
        inflated = fs.spans.decompressed
        fs.spans.clear()  # memory forgets them: span 0 is only in the queue now
        assert fs.spans.read(0, 0, 4096) == fs.spans.read(0, 0, 4096)
        assert fs.spans.decompressed == inflated
        gate.set()
        fs.spans.flush()
        assert fs.spans.disk_puts == len(ks)
        assert all(disk.has(0, k) for k in ks)
