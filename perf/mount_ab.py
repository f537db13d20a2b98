"""A/B of the mount's sequential read across source trees, interleaved with `clipctl cat`.

    python perf/mount_ab.py ARCHIVE MOUNTPOINT N name=TREE[,ARG...] [...] [--file PATH ...]
                            [--fresh-cache]

Each TREE is a clipcy source tree with its compiled modules built in place (a worktree, or
`git archive REV | tar -x` plus the .so files of a build of REV); it runs as
`PYTHONPATH=TREE python -m clipcy` from /tmp. Every round mounts ARCHIVE from each tree in
turn (a fresh mount: no page cache), reads the file (default /big.bin) in 1 MiB `read()`s,
unmounts, then times `clipctl cat` of the same file (first tree). Prints the best of N per
tree as a ratio to the best `cat` of the same run, and the mount process's CPU time per
round. With several --file, they are read at once (a thread each: interleaved sequential
streams) and `cat` reads them one after the other. perf/RESULTS.md
("Issue 10: the mount's sequential read") was measured with it on perf/mount.py's bigfile
archive. Each ARG after a tree (comma-separated) is passed to its `clipctl mount`, so one
tree can be measured with different options (`head-nocache=TREE,--no-cache`). With
--fresh-cache every mount gets an empty $XDG_CACHE_HOME of its own (removed after it), so
an on-disk cache (the decoded spans) starts cold in every round; without it the mounts use
the caller's $XDG_CACHE_HOME. Also prints each tree's best time from `clipctl mount` to
ready. Needs root and /dev/fuse.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def clip(tree: str, *args: str, env_extra: dict[str, str] | None = None,
         **kw: object) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": tree, **(env_extra or {})}
    r: subprocess.CompletedProcess[bytes] = subprocess.run(  # type: ignore[call-overload]
        [sys.executable, "-m", "clipcy", *args], env=env, cwd="/tmp", check=True, **kw)
    return r


def read_all(path: str, sizes: list[int]) -> None:
    total = 0
    with open(path, "rb", buffering=0) as f:
        while b := f.read(1 << 20):
            total += len(b)
    sizes.append(total)


def via_mount(tree: str, archive: str, mnt: str, paths: list[str], extra: list[str],
              fresh_cache: bool) -> tuple[float, int, int, float]:
    """(seconds, bytes, CPU ms of the mount process, seconds to ready) for one read on a
    fresh mount."""
    cache = tempfile.mkdtemp(prefix="clipcy-ab-cache-") if fresh_cache else None
    env_extra = {"XDG_CACHE_HOME": cache} if cache else None
    t = time.perf_counter()
    r = clip(tree, "mount", *extra, archive, mnt, env_extra=env_extra, capture_output=True)
    ready = time.perf_counter() - t
    pid = int(r.stderr.decode().split("(pid ")[1].split(",")[0])
    sizes: list[int] = []
    threads = [threading.Thread(target=read_all, args=(os.path.join(mnt, p.lstrip("/")), sizes))
               for p in paths]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    dt = time.perf_counter() - t
    total = sum(sizes)
    with open(f"/proc/{pid}/stat") as st:
        fields = st.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")
    clip(tree, "umount", mnt, capture_output=True)
    for _ in range(500):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    if cache:
        shutil.rmtree(cache)
    return dt, total, cpu, ready


def via_cat(tree: str, archive: str, paths: list[str]) -> float:
    t = time.perf_counter()
    with open(os.devnull, "wb") as null:
        for path in paths:
            clip(tree, "cat", archive, path, stdout=null)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archive")
    ap.add_argument("mountpoint")
    ap.add_argument("rounds", type=int)
    ap.add_argument("trees", nargs="+", help="name=TREE[,MOUNT_ARG...]")
    ap.add_argument("--file", action="append", help="a file of the archive (repeatable)")
    ap.add_argument("--fresh-cache", action="store_true",
                    help="an empty $XDG_CACHE_HOME for every mount")
    args = ap.parse_args()
    specs = {name: spec.split(",") for name, spec in (t.split("=", 1) for t in args.trees)}
    trees = {name: spec[0] for name, spec in specs.items()}
    files = args.file or ["/big.bin"]
    os.makedirs(args.mountpoint, exist_ok=True)
    times: dict[str, list[float]] = {k: [] for k in trees}
    cpus: dict[str, list[int]] = {k: [] for k in trees}
    readys: dict[str, list[float]] = {k: [] for k in trees}
    cat: list[float] = []
    size = 0
    for _ in range(args.rounds):
        for name, tree in trees.items():
            dt, size, cpu, ready = via_mount(tree, args.archive, args.mountpoint, files,
                                             specs[name][1:], args.fresh_cache)
            times[name].append(dt)
            cpus[name].append(cpu)
            readys[name].append(ready)
        cat.append(via_cat(next(iter(trees.values())), args.archive, files))
    c = min(cat)
    print(f"cat: best {size / 1e6 / c:.0f} MB/s, all {[round(x * 1000) for x in cat]} ms")
    for name, ts in times.items():
        m = min(ts)
        print(f"{name}: best {size / 1e6 / m:.0f} MB/s = {c / m:.2f}x cat, all "
              f"{[round(x * 1000) for x in ts]} ms, mount process CPU {sorted(cpus[name])} ms, "
              f"mount to ready best {min(readys[name]) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
