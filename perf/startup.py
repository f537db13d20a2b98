"""Cold container starts: an unpacked tree against clipcy mounts, without and with a replayed
prefetch list (issue 18's targets; figures go to perf/RESULTS.md).

Workloads (several programs, so no one is tuned for): WORKLOADS below, each run by chroot
into the root filesystem: a python import set (stdlib modules of every kind), a shell
pipeline (busybox sort | uniq | wc over a file), and a dynamically linked bash script.

Each start is cold: the page cache dropped (echo 3 > /proc/sys/vm/drop_caches, root), an empty
span cache directory, a fresh mount (or a fresh extract). The time is the workload's, from
exec to exit, with the mount already ready (the replay, when there is one, runs while the
program starts: no --prefetch-wait). Rows: extract (unpacked tree), a local layout, Debian's
docker-registry on 127.0.0.1, the same behind a proxy adding DELAY s per request; each with no
list and with the list recorded by a first start. Median of REPS.

    sudo python perf/startup.py [--reps 5] [--delay 0.02] [--image DIR] [--before PYTHON]

--before PYTHON (a venv with an older clipcy, e.g. `pip install .` of an older commit) adds
rows "no list, before": that clipctl's plain mounts, alternating with this one's no-list
starts (the "not slower than before" check).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

PY = ("import argparse, email, logging, pathlib, subprocess, tempfile, inspect, csv, ssl, "
      "configparser, datetime, json, decimal, asyncio")
WORKLOADS = {
    "python": ["/usr/bin/python3", "-c", PY],
    "pipeline": ["/bin/busybox", "sh", "-c",
                 "/bin/busybox sort -rn /etc/numbers.txt | /bin/busybox uniq | "
                 "/bin/busybox wc -l"],
    "bash": ["/bin/bash", "-c", "for i in 1 2 3; do :; done; echo ok"],
}


def clipctl(*args: str, py: str = sys.executable) -> str:
    r = subprocess.run([py, "-I", "-m", "clipcy", *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"clipctl {' '.join(args)}: {r.stderr.strip()}")
    return r.stderr


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_all(root: Path) -> float:
    """Every workload once in root, cold; total seconds."""
    t = 0.0
    for argv in WORKLOADS.values():
        t0 = time.perf_counter()
        r = subprocess.run(["chroot", str(root), *argv], capture_output=True)
        t += time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(f"{argv}: {r.stderr.decode(errors='replace')}")
    return t


def mounted_start(arc: Path, work: Path, extra: list[str],
                  py: str = sys.executable) -> tuple[float, dict]:
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    cache = Path(tempfile.mkdtemp(dir=work))
    log = work / "mount.log"
    drop_caches()
    t0 = time.perf_counter()
    clipctl("-v", "mount", str(arc), str(mnt), "--cache-dir", str(cache), "--log", str(log),
            *extra, py=py)
    ready = time.perf_counter() - t0
    try:
        t = run_all(mnt)
    finally:
        clipctl("umount", str(mnt))
    # the mount process logs its counters on its way out (an older clipcy: none)
    for _ in range(200 if py == sys.executable else 1):
        text = log.read_text() if log.exists() else ""
        lines = [ln for ln in text.splitlines() if " counters {" in ln]
        if lines:
            break
        time.sleep(0.05)
    c = json.loads(lines[-1].split(" counters ", 1)[1]) if lines else {}
    log.unlink(missing_ok=True)
    shutil.rmtree(cache)
    c["ready"] = ready
    return t, c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--delay", type=float, default=0.02)
    ap.add_argument("--image", type=Path, help="an OCI layout made by make-python-image.sh")
    ap.add_argument("--no-registry", action="store_true")
    ap.add_argument("--before", metavar="PYTHON",
                    help="an interpreter with an older clipcy installed: its starts with no "
                    "list (a plain mount) alternate with this one's, rows 'no list, before'")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipcy-startup-"))
    image = args.image
    if image is None:
        image = work / "image"
        subprocess.run([str(ROOT / "perf" / "make-python-image.sh"), str(image)], check=True)
    local = work / "local.clip"
    clipctl("index-layout", "--layout", str(image), "--out", str(local), "--no-cache")
    # the list: recorded by one start from the local layout
    lst = work / "start.list"
    mnt = work / "mnt"
    mnt.mkdir()
    clipctl("mount", str(local), str(mnt), "--record", str(lst))
    run_all(mnt)
    clipctl("umount", str(mnt))
    for _ in range(200):
        if lst.exists():
            break
        time.sleep(0.05)
    paths = [ln for ln in lst.read_text().splitlines() if ln and not ln.startswith("#")]
    # coverage: a second recorded start's files that the first list names
    lst2 = work / "second.list"
    clipctl("mount", str(local), str(mnt), "--record", str(lst2))
    run_all(mnt)
    clipctl("umount", str(mnt))
    for _ in range(200):
        if lst2.exists():
            break
        time.sleep(0.05)
    second = {ln for ln in lst2.read_text().splitlines() if ln and not ln.startswith("#")}
    coverage = len(second & set(paths)) / max(1, len(second))
    rows: dict[str, dict] = {}

    tree = work / "tree"
    times = []
    for _ in range(args.reps):
        shutil.rmtree(tree, ignore_errors=True)
        clipctl("extract", str(local), "-C", str(tree))
        drop_caches()
        times.append(run_all(tree))
    rows["unpacked tree"] = {"seconds": statistics.median(times)}

    stores: list[tuple[str, Path, object]] = [("local layout", local, None)]
    reg = proxy = None
    if not args.no_registry:
        import remoteserv as rs

        reg = rs.Registry(work / "registry")
        r = reg.push(image, "latest", "py", "latest")
        if r.returncode:
            raise SystemExit(r.stderr)
        proxy = rs.FaultProxy(reg.host)
        for name, host in (("registry", reg.host), (f"registry +{args.delay * 1000:.0f} ms",
                                                    f"127.0.0.1:{proxy.port}")):
            arc = work / f"{name.split()[0]}-{len(stores)}.clip"
            clipctl("index-layout", "--layout", str(image), "--out", str(arc), "--no-cache",
                    "--storage-ref", f"docker://{host}/py", "--no-check-storage")
            stores.append((name, arc, host))
    try:
        for name, arc, host in stores:
            for label, extra in (("no list", ["--no-prefetch"]),
                                 ("replay", ["--prefetch", str(lst)])):
                if proxy is not None and host == f"127.0.0.1:{proxy.port}":
                    proxy.delay = args.delay
                got, before = [], []
                for _ in range(args.reps):
                    got.append(mounted_start(arc, work, extra))
                    if args.before and label == "no list":
                        before.append(mounted_start(arc, work, [], py=args.before)[0])
                if proxy is not None:
                    proxy.delay = 0.0
                if before:
                    rows[f"{name}, no list, before"] = {"seconds": statistics.median(before)}
                t = statistics.median(g[0] for g in got)
                c = got[len(got) // 2][1]
                http = c.get("http") or {}
                rows[f"{name}, {label}"] = {
                    "seconds": t, "ready": statistics.median(g[1]["ready"] for g in got),
                    "http_requests": http.get("requests"), "http_bytes": http.get("bytes"),
                    "replay": {k: c.get("replay", {}).get(k) for k in
                               ("state", "files", "spans", "requests", "bytes_requested")},
                    "read_misses": c.get("span_cache", {}).get("read_misses")}
    finally:
        if proxy is not None:
            proxy.close()
        if reg is not None:
            reg.stop()
    # ready with the page cache warm (clipctl and its Python modules read before, as on a
    # host that starts containers all day): the mount's own start, without the disk
    warm = []
    for _ in range(args.reps):
        cache = Path(tempfile.mkdtemp(dir=work))
        t0 = time.perf_counter()
        clipctl("mount", str(local), str(mnt), "--cache-dir", str(cache), "--no-prefetch")
        warm.append(time.perf_counter() - t0)
        clipctl("umount", str(mnt))
        shutil.rmtree(cache)
    base = rows["unpacked tree"]["seconds"]
    print(f"mount ready, local layout, page cache warm: {statistics.median(warm):.3f} s "
          f"(median of {args.reps}; the rows' ready column is with the page cache dropped)")
    print(f"coverage of the next start's files: {coverage:.1%}")
    print(f"list: {len(paths)} files; workloads: {', '.join(WORKLOADS)}; median of {args.reps}")
    print("| root filesystem | start (s) | x unpacked | ready (s) | HTTP requests | HTTP bytes |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['seconds']:.3f} | {row['seconds'] / base:.2f} | "
              f"{row.get('ready', 0):.3f} | {row.get('http_requests')} | "
              f"{row.get('http_bytes')} |")
    print(json.dumps(rows, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
