"""A/B of index, lookup and cold read across source trees, interleaved, best of N.

    python perf/ab_figures.py --data perf/data/quick --rounds 5 name=TREE [name=TREE ...]

Each TREE is a clipcy source tree with its compiled modules built in place (as for
perf/mount_ab.py); it runs as `PYTHONPATH=TREE python -m clipcy` from /tmp. Every round runs,
for each tree in turn:
- index: `clipctl index-layout --no-cache` of DATA/single and DATA/multi (wall and CPU time
  of the child: user + sys from wait4);
- lookup: a fresh process opens the tree's archive of DATA/small, looks up 2,000 seeded
  random paths once (warm), then times them again (µs per lookup, wall and thread CPU, best
  of 5 passes);
- cold read: a fresh process, for 30 seeded random 64 KiB-aligned offsets into the largest
  file of the tree's archive of DATA/single: open_archive + Archive.open + one 64 KiB read
  (median ms, wall and process CPU of the read; nothing parked from an earlier read: a new
  Archive each time).
Prints the best of the rounds per tree and the ratio of each tree to the first. The page
cache holds the blobs throughout (they are read every round), so "cold" is the decoder's
state, not the disk's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

WORKER = r"""
import json, random, statistics, sys, time
import clipcy
from clipcy.archive.reader import open_archive
kind, arc = sys.argv[1], sys.argv[2]
out = {"clipcy": clipcy.__file__}
if kind == "lookup":
    a = open_archive(arc)
    paths = [n.path for n in a.walk()]
    rng = random.Random(1)
    probe = [rng.choice(paths) for _ in range(2000)]
    for p in probe:
        assert a.lookup(p) is not None
    best = best_cpu = float("inf")
    for _ in range(5):
        t, c = time.perf_counter(), time.thread_time()
        for p in probe:
            a.lookup(p)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.thread_time() - c)
    out["us"] = best / len(probe) * 1e6
    out["cpu_us"] = best_cpu / len(probe) * 1e6
else:
    with open_archive(arc) as a:
        files = [n for n in a.walk() if n.type == "file"]
        big = max(files, key=lambda n: n.size)
    rng = random.Random(2)
    offs = [rng.randrange(0, big.size - 65536) & ~0xFFFF for _ in range(30)]
    reads, whole, cpus = [], [], []
    for off in offs:
        t0 = time.perf_counter()
        a = open_archive(arc)
        f = a.open(big.path)
        f.seek(off)
        t1, c1 = time.perf_counter(), time.process_time()
        b = f.read(65536)
        t2, c2 = time.perf_counter(), time.process_time()
        cpus.append((c2 - c1) * 1e3)
        assert len(b) == 65536
        f.close()
        a.close()
        reads.append((t2 - t1) * 1e3)
        whole.append((t2 - t0) * 1e3)
    out["read_ms"] = statistics.median(reads)
    out["open_read_ms"] = statistics.median(whole)
    out["read_cpu_ms"] = statistics.median(cpus)
    out["file"] = big.path if isinstance(big.path, str) else big.path.decode()
    out["size"] = big.size
print(json.dumps(out))
"""


def env_for(tree: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": tree}


def timed(cmd: list[str], tree: str) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one command run from /tmp."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env_for(tree), cwd="/tmp", stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        sys.exit(f"perf/ab_figures.py: {' '.join(cmd)}: exit {p.returncode}")
    return wall, ru.ru_utime + ru.ru_stime


def worker(tree: str, kind: str, arc: str) -> dict[str, object]:
    r = subprocess.run([sys.executable, "-c", WORKER, kind, arc], env=env_for(tree),
                       cwd="/tmp", check=True, capture_output=True, text=True)
    out: dict[str, object] = json.loads(r.stdout)
    if not str(out["clipcy"]).startswith(tree):
        sys.exit(f"perf/ab_figures.py: {tree} imported {out['clipcy']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="make_data.py's output (single, multi, small)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("trees", nargs="+", help="name=TREE")
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.trees)
    data = os.path.abspath(args.data)
    work = tempfile.mkdtemp(prefix="clipcy-ab-")
    py = sys.executable

    def index(tree: str, name: str, ds: str) -> tuple[float, float]:
        return timed([py, "-m", "clipcy", "-q", "index-layout", "--layout",
                      os.path.join(data, ds), "--out", os.path.join(work, f"{name}-{ds}.clip"),
                      "--no-cache"], tree)

    for name, tree in trees.items():  # the archives the lookups and reads use
        index(tree, name, "small")
    res: dict[str, dict[str, list[float]]] = {n: {} for n in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            m = res[name]
            for ds in ("single", "multi"):
                wall, cpu = index(tree, name, ds)
                m.setdefault(f"index {ds} wall s", []).append(wall)
                m.setdefault(f"index {ds} CPU s", []).append(cpu)
            lk = worker(tree, "lookup", os.path.join(work, f"{name}-small.clip"))
            m.setdefault("lookup µs", []).append(float(lk["us"]))  # type: ignore[arg-type]
            m.setdefault("lookup CPU µs", []).append(float(lk["cpu_us"]))  # type: ignore[arg-type]
            cr = worker(tree, "cold", os.path.join(work, f"{name}-single.clip"))
            m.setdefault("cold 64 KiB read ms (median of 30)", []).append(
                float(cr["read_ms"]))  # type: ignore[arg-type]
            m.setdefault("cold 64 KiB read CPU ms (median of 30)", []).append(
                float(cr["read_cpu_ms"]))  # type: ignore[arg-type]
            m.setdefault("open + cold 64 KiB read ms (median of 30)", []).append(
                float(cr["open_read_ms"]))  # type: ignore[arg-type]
        print(f"round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.1f}", flush=True)
    first = next(iter(trees))
    for key in res[first]:
        base = min(res[first][key])
        cells = []
        for name in trees:
            b = min(res[name][key])
            cells.append(f"{name} {b:.3g} ({b / base:.2f}x) all "
                         f"{[round(x, 3) for x in res[name][key]]}")
        print(f"{key}: " + "; ".join(cells))
    print(f"archives in {work}")


if __name__ == "__main__":
    main()
