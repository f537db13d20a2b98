"""`clipctl mount` benchmark: every figure of issue 10's Performance list, as ratios to a
baseline measured in the same run (perf/RESULTS-mount.md).

    python perf/mount.py --data perf/data [--work DIR] [--out perf/RESULTS-mount.md]

Needs root, /dev/fuse, umoci, GNU tar and the compiled clipcy (installed: run with -I or from
perf/run.sh). Archives, extracted trees and the extra layouts are made once in --work:
- small: the perf data's 153k-node layout (lookups, mount ready, lstat walks);
- single: its 503 MB one-layer gzip image (cold random 4 KiB reads);
- bigfile: one gzip layer holding one 160 MB file (the first 160 MB of single's tar, so real
  mixed content), made with umoci (sequential reads);
- bash: tests/data/mount/make-exec-layouts.sh's dynamically linked bash (program start);
- multi: the 1 GB four-layer image (memory after a walk and 1 GB of reads).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLIPCTL = [sys.executable, "-I", "-m", "clipcy"]


def run(*cmd: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run(list(cmd), capture_output=True, **kw)  # type: ignore[call-overload]
    if r.returncode:
        sys.exit(f"perf/mount.py: {' '.join(cmd)}: {r.stderr.decode(errors='replace')}")
    return r  # type: ignore[no-any-return]


def best(fn: Callable[[], float], k: int) -> float:
    return min(fn() for _ in range(k))


@contextmanager
def mounted(archive: Path, mnt: Path, *extra: str) -> Iterator[int]:
    """Mount (background), yield the serving pid, unmount and wait for it."""
    mnt.mkdir(parents=True, exist_ok=True)
    r = run(*CLIPCTL, "mount", str(archive), str(mnt), *extra)
    pid = int(r.stderr.decode().split("(pid ")[1].split(",")[0])
    try:
        yield pid
    finally:
        run(*CLIPCTL, "umount", str(mnt))
        for _ in range(500):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)


def walk_lstat(root: str) -> int:
    """lstat every node (os.scandir + lstat, like tree.py and `find`)."""
    n = 0
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                os.lstat(e.path)
                n += 1
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return n


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def read_file(path: Path, bufsize: int = 1 << 20) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(bufsize)
            if not b:
                return n
            n += len(b)


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# -- setup ------------------------------------------------------------------------------------
def prepare(data: Path, work: Path) -> dict[str, Path]:
    from clipcy.archive.format import FORMAT_MAJOR

    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    v = f"v{FORMAT_MAJOR}"
    for name in ("small", "single", "multi"):
        arc = work / f"{name}-{v}.clip"
        if not arc.exists():
            run(*CLIPCTL, "index-layout", "--layout", str(data / name), "--out", str(arc),
                "--no-cache")
        out[name] = arc
    big = work / "bigfile"
    if not (big / "index.json").exists():
        shutil.rmtree(big, ignore_errors=True)
        bundle = work / "bigfile-bundle"
        shutil.rmtree(bundle, ignore_errors=True)
        run("umoci", "init", "--layout", str(big))
        run("umoci", "new", "--image", f"{big}:latest")
        run("umoci", "unpack", "--image", f"{big}:latest", str(bundle))
        with open(data / "single" / "layer1.tar", "rb") as src, \
                open(bundle / "rootfs" / "big.bin", "wb") as dst:
            dst.write(src.read(160 << 20))
        run("umoci", "repack", "--image", f"{big}:latest", str(bundle))
        shutil.rmtree(bundle)
    out["bigfile"] = work / f"bigfile-{v}.clip"
    if not out["bigfile"].exists():
        run(*CLIPCTL, "index-layout", "--layout", str(big), "--out", str(out["bigfile"]))
    out["bigfile_layout"] = big
    ex = work / "exec"
    if not (ex / "bash" / "index.json").exists():
        shutil.rmtree(ex, ignore_errors=True)
        run(str(ROOT / "tests" / "data" / "mount" / "make-exec-layouts.sh"), str(ex))
    out["bash"] = work / f"bash-{v}.clip"
    if not out["bash"].exists():
        run(*CLIPCTL, "index-layout", "--layout", str(ex / "bash"), "--out", str(out["bash"]))
    for name in ("small", "bash"):
        tree = work / f"{name}-tree"
        if not tree.exists():
            run(*CLIPCTL, "extract", str(out[name]), "-C", str(tree) + ".tmp")
            os.rename(str(tree) + ".tmp", tree)
        out[f"{name}_tree"] = tree
    return out


# -- the figures --------------------------------------------------------------------------------
LOOKUP_CODE = r"""
import random, sys, time
from clipcy.archive.reader import open_archive
from clipcy.archive import nodeblock
a = open_archive(sys.argv[1])
paths = [n.path for n in a.walk()]
random.Random(1).shuffle(paths)
sample = paths[:20000]
for p in paths: a.lookup(p)
def rnd():
    t = time.perf_counter()
    for p in sample: a.lookup(p)
    return (time.perf_counter() - t) / len(sample)
srt = sorted(sample)
def sorted_():
    t = time.perf_counter()
    for p in srt: a.lookup(p)
    return (time.perf_counter() - t) / len(srt)
print(nodeblock.IMPLEMENTATION, min(rnd() for _ in range(3)) * 1e6,
      min(sorted_() for _ in range(3)) * 1e6, *a.block_cache_info(), len(a._blocks))
"""


def bench_lookups(arc: Path) -> list[str]:
    rows = []
    res = {}
    for pure in ("", "1"):
        env = dict(os.environ, CLIPCY_PUREPYTHON=pure)
        out = run(sys.executable, "-I", "-c", LOOKUP_CODE, str(arc), env=env).stdout.split()
        out = [x.decode() for x in out]
        res[out[0]] = [float(x) for x in out[1:]]
    c, p = res["cython"], res["python"]
    rows.append(f"| warm random `Archive.lookup()` | {c[0]:.1f} us | {p[0]:.1f} us | "
                f"{p[0] / c[0]:.0f}x | <= 20 us |")
    rows.append(f"| warm sorted `Archive.lookup()` | {c[1]:.1f} us | {p[1]:.1f} us | "
                f"{p[1] / c[1]:.1f}x | |")
    rows.append(f"| decoded blocks held (bytes, blocks of {c[4]:.0f}) | {c[3] / 1e6:.1f} MB "
                f"({c[2]:.0f}) | {p[3] / 1e6:.1f} MB ({p[2]:.0f}) | | budget 48 MiB |")
    return rows


def bench_ready(arc: Path, mnt: Path) -> list[str]:
    def once() -> float:
        t = time.perf_counter()
        run(*CLIPCTL, "mount", str(arc), str(mnt))
        os.listdir(mnt)
        dt = time.perf_counter() - t
        run(*CLIPCTL, "umount", str(mnt))
        time.sleep(0.2)
        return dt

    ready = statistics.median(once() for _ in range(5))
    startup = statistics.median(timed(lambda: run(*CLIPCTL, "--version")) for _ in range(5))
    return [f"| mount ready (command returns, root listed), median of 5 | {ready:.3f} s | "
            f"`clipctl --version`: {startup:.3f} s | {ready / startup:.1f}x | <= 0.3 s |"]


def bench_walk(arc: Path, tree: Path, mnt: Path) -> list[str]:
    walk_lstat(str(tree))  # the extracted tree's dentries and inodes in the kernel's cache
    colds, warms, bases, n = [], [], [], 0
    for _ in range(3):  # interleaved with the baseline: the same load on a shared machine
        bases.append(timed(lambda: walk_lstat(str(tree))))
        with mounted(arc, mnt):
            t = time.perf_counter()
            n = walk_lstat(str(mnt))
            colds.append(time.perf_counter() - t)
            warms.append(timed(lambda: walk_lstat(str(mnt))))
    cold, warm, base = min(colds), min(warms), min(bases)
    return [
        f"| lstat walk of {n} nodes, cold (fresh mount), best of 3 | {cold:.2f} s | extracted "
        f"tree (warm): {base:.2f} s | {cold / base:.2f}x | <= 5x |",
        f"| lstat walk, second walk (kernel cache) | {warm:.2f} s | {base:.2f} s | "
        f"{warm / base:.2f}x | <= 1.5x |",
    ]


def bench_sequential(arc: Path, layout: Path, mnt: Path) -> list[str]:
    size = 160 << 20

    def via_mount() -> float:
        with mounted(arc, mnt):
            return timed(lambda: read_file(mnt / "big.bin"))

    def via_cat() -> float:
        with open(os.devnull, "wb") as null:
            return timed(lambda: subprocess.run([*CLIPCTL, "cat", str(arc), "/big.bin"],
                                                stdout=null, check=True))

    def inflate() -> float:
        blob = max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)

        def go() -> None:
            d = zlib.decompressobj(31)
            with open(blob, "rb") as f:
                while chunk := f.read(1 << 20):
                    d.decompress(chunk)
        return timed(go)

    runs = [(via_mount(), via_cat(), inflate()) for _ in range(3)]  # interleaved: same load
    m, c, z = (min(r[i] for r in runs) for i in range(3))
    mb = size / 1e6
    return [
        f"| sequential read of a 160 MB file (1 MiB reads, fresh mount), best of 3 | "
        f"{mb / m:.0f} MB/s | `clipctl cat`: {mb / c:.0f} MB/s | {c / m:.2f}x | >= 0.9x |",
        f"| the same, against the bare inflate of its layer (zlib, 1 MiB chunks) | "
        f"{mb / m:.0f} MB/s | {mb / z:.0f} MB/s | {z / m:.2f}x | >= 0.8x |",
    ]


def bench_random(arc: Path, mnt: Path, samples: int = 300) -> list[str]:
    from clipcy.archive.reader import open_archive

    with open_archive(arc) as a:
        files = [(n.path, n.size) for n in a.walk() if n.type == "file" and n.size >= 8192]
    rnd = random.Random(7)
    picks = [(p, rnd.randrange(0, s - 4096)) for p, s in rnd.sample(files, samples)]
    lat_read, lat_open = [], []
    with mounted(arc, mnt):
        for p, off in picks:
            path = mnt / os.fsdecode(p[1:])
            t0 = time.perf_counter()
            fd = os.open(path, os.O_RDONLY)
            t1 = time.perf_counter()
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            os.pread(fd, 4096, off)
            t2 = time.perf_counter()
            os.close(fd)
            lat_open.append(t2 - t0)
            lat_read.append(t2 - t1)

    def q(xs: list[float], f: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(f * len(xs)))] * 1e3

    return [
        f"| cold random 4 KiB pread, {samples} files of the 503 MB gzip layer: median / p99 | "
        f"{q(lat_read, .5):.2f} / {q(lat_read, .99):.2f} ms | | | <= 3 / <= 15 ms |",
        f"| the same with the cold open (path lookups) included: median / p99 | "
        f"{q(lat_open, .5):.2f} / {q(lat_open, .99):.2f} ms | | | |",
    ]


def bench_program(arc: Path, tree: Path, mnt: Path) -> list[str]:
    cmd = ["/bin/bash", "/etc/greet.sh"]
    base = best(lambda: timed(lambda: run("chroot", str(tree), *cmd)), 5)
    colds, warms = [], []
    for _ in range(3):
        with mounted(arc, mnt):
            colds.append(timed(lambda: run("chroot", str(mnt), *cmd)))
            warms.append(best(lambda: timed(lambda: run("chroot", str(mnt), *cmd)), 3))
    cold, warm = min(colds), min(warms)
    return [
        f"| program start: `chroot MNT /bin/bash /etc/greet.sh` (bash + libtinfo + libc), "
        f"cold mount | {cold * 1e3:.1f} ms | extracted tree: {base * 1e3:.1f} ms | "
        f"{cold / base:.1f}x | (compare) |",
        f"| the same, second run (kernel page cache) | {warm * 1e3:.1f} ms | "
        f"{base * 1e3:.1f} ms | {warm / base:.2f}x | |",
    ]


def bench_memory(arc: Path, mnt: Path, cache_mib: int = 64) -> list[str]:
    with mounted(arc, mnt, "--cache-mib", str(cache_mib)) as pid:
        start = status_kb(pid, "VmRSS")
        walk_lstat(str(mnt))
        after_walk = status_kb(pid, "VmRSS")
        total = 0
        while total < 1 << 30:  # the tree again and again, its pages dropped: 1 GiB via FUSE
            for dirpath, _, names in os.walk(mnt):
                for name in names:
                    p = Path(dirpath) / name
                    if not p.is_symlink():
                        total += read_file(p)
                        fd = os.open(p, os.O_RDONLY)
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        os.close(fd)
        rss, hwm = status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")
    limit = 64 + cache_mib
    return [
        f"| mount process memory: at start / after the walk / after reading {total / 1e9:.2f}"
        f" GB (VmRSS) | {start / 1024:.0f} / {after_walk / 1024:.0f} / {rss / 1024:.0f} MiB | "
        f"budget {limit} MiB | {rss / 1024 / limit:.2f}x | <= 64 MiB + cache |",
        f"| peak (VmHWM) | {hwm / 1024:.0f} MiB | {limit} MiB | {hwm / 1024 / limit:.2f}x | |",
    ]


@contextmanager
def mounted_mfusepy(archive: Path, mnt: Path) -> Iterator[None]:
    """The same archive through perf/mount_mfusepy.py (ctypes, high-level path API)."""
    from clipcy.fusemount.service import is_mounted

    proc = subprocess.Popen([sys.executable, "-I", str(HERE / "mount_mfusepy.py"), str(archive),
                             str(mnt)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not is_mounted(mnt):
            if proc.poll() is not None:
                sys.exit("perf/mount.py: the mfusepy prototype did not mount")
            time.sleep(0.01)
        yield
    finally:
        run("fusermount3", "-u", str(mnt))
        proc.wait(30)


def bench_binding(small: Path, big: Path, mnt: Path) -> list[str]:
    """The binding chosen by measurement: ours (Cython, low-level) against mfusepy."""
    try:
        import mfusepy  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return ["| binding comparison | skipped: mfusepy not installed | | | |"]
    walks: dict[str, list[float]] = {"ours": [], "mfusepy": []}
    reads: dict[str, list[float]] = {"ours": [], "mfusepy": []}
    for _ in range(2):
        for name, ctx in (("ours", mounted), ("mfusepy", mounted_mfusepy)):
            with ctx(small, mnt):
                walks[name].append(timed(lambda: walk_lstat(str(mnt))))
            with ctx(big, mnt):
                reads[name].append(timed(lambda: read_file(mnt / "big.bin")))
    w = {k: min(v) for k, v in walks.items()}
    r = {k: (160 << 20) / 1e6 / min(v) for k, v in reads.items()}
    return [
        f"| binding: cold lstat walk of the 153k-node archive | ours {w['ours']:.2f} s | "
        f"mfusepy {w['mfusepy']:.2f} s | {w['mfusepy'] / w['ours']:.1f}x faster | |",
        f"| binding: sequential read of the 160 MB file | ours {r['ours']:.0f} MB/s | "
        f"mfusepy {r['mfusepy']:.0f} MB/s | {r['ours'] / r['mfusepy']:.1f}x | |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/clipcy-perf-mount"))
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS-mount.md")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    from clipcy.archive import nodeblock

    if nodeblock.IMPLEMENTATION != "cython":
        sys.exit("perf/mount.py: the compiled clipcy is not in use")
    w = prepare(args.data, args.work)
    mnt = args.work / "mnt"
    mnt.mkdir(exist_ok=True)
    benches = {
        "lookups": lambda: bench_lookups(w["small"]),
        "ready": lambda: bench_ready(w["small"], mnt),
        "walk": lambda: bench_walk(w["small"], w["small_tree"], mnt),
        "sequential": lambda: bench_sequential(w["bigfile"], w["bigfile_layout"], mnt),
        "random": lambda: bench_random(w["single"], mnt),
        "program": lambda: bench_program(w["bash"], w["bash_tree"], mnt),
        "memory": lambda: bench_memory(w["multi"], mnt),
        "binding": lambda: bench_binding(w["small"], w["bigfile"], mnt),
    }
    rows = []
    for name, fn in benches.items():
        if args.only and name not in args.only:
            continue
        got = fn()
        print("\n".join(got), flush=True)
        rows += got
    head = [
        "# clipctl mount: measured",
        "",
        f"`python perf/mount.py --data {args.data}` on {platform.node()} "
        f"({os.cpu_count()} cores, {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Ratios are to the baseline "
        "measured in the same run.",
        "",
        "| figure | clipcy | baseline (same run) | ratio | target |",
        "|---|---:|---:|---:|---|",
    ]
    if not args.only:
        # the hand-written analysis below the table survives a new run
        old = args.out.read_text() if args.out.exists() else ""
        notes = old[old.find("\n## "):] if "\n## " in old else ""
        args.out.write_text("\n".join(head + rows) + "\n" + notes)


if __name__ == "__main__":
    main()
