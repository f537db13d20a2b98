#!/usr/bin/env python3
"""End-to-end indexing speed and memory against real baselines, in one run.

  python perf/make_data.py            # once: perf/data/{single,multi,small,zstd,growth-*}
  python perf/bench_index.py [--runs 3] [--sets single multi small zstd] [--out perf/out]

For each data set, each command runs --runs times, interleaved (A B C A B C ...) so drift on
this shared machine hits all alike; the table gives the median wall time as MB/s of
uncompressed layer bytes, the ratio to the bare zlib loop (or `zstd -dc` for zstd layers),
the same ratio from the best of the N runs of each (closer to an idle machine when other jobs
share the cores), the median CPU time (user + sys of the process and its threads: what a
shared machine's load distorts less than wall time) and the peak RSS of the process (both
from wait4's rusage).

Commands:
  clipctl            clipctl index-layout (compiled core, verification and resume points on)
  clipctl --no-verify  the same without the sha256 of blobs and tars (shows what hashing costs)
  clipctl-1worker    the same with --workers 1 (multi-layer sets only)
  clipctl-py         the same with CLIPCY_PUREPYTHON=1 (the pure-Python twin; reported only)
  clipctl-zlib       the same with CLIPCY_INFLATE=zlib (the system zlib instead of zlib-ng)
  tarfile            perf/tarfile_walker.py: Python's tarfile in stream mode recording the
                     same metadata (no digests: a lower bar than clipctl)
  zlib-loop          a bare zlib.decompressobj loop over the blobs, one core (the baseline)
  gzip -dc / zstd -dc   the C tools, output to /dev/null
  igzip -dc          ISA-L's igzip (Debian `isal`), the fastest inflater here, when installed
  ratarmount         perf/ratarmount_index.py: ratarmount's index of each blob (SQLite, gzip
                     seek points every 1 MiB, 2 threads), when ratarmount is installed
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import runinfo

HERE = Path(__file__).resolve().parent
PY = sys.executable
CLIPCTL = [PY, "-I", "-m", "clipcy"]  # -I: the installed clipcy, never ./clipcy
CPU_LOG: list[float] = []  # user + sys seconds of each command run


def run(cmd: list[str] | str, env: dict[str, str] | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one command, output discarded; its CPU seconds are
    appended to CPU_LOG."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        shell=isinstance(cmd, str),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, **(env or {})),
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {cmd}\n{err}")
    CPU_LOG.append(usage.ru_utime + usage.ru_stime)
    return wall, usage.ru_maxrss * 1024


def index_cmd(layout: Path, out: Path, *extra: str) -> list[str]:
    """clipctl index-layout of tag latest, without progress output."""
    return CLIPCTL + [
        "index-layout",
        "--layout",
        str(layout),
        "--tag",
        "latest",
        "--out",
        str(out),
        "--progress",
        "none",
        *extra,
    ]


def layers_of(layout: Path) -> list[tuple[Path, str, int]]:
    """(blob path, compression, uncompressed size) for each layer of tag latest."""
    index = json.loads((layout / "index.json").read_text())
    man = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    out = []
    for i, desc in enumerate(man["layers"]):
        kind = "zstd" if desc["mediaType"].endswith("zstd") else "gzip"
        tars = sorted(layout.glob("layer*.tar"))
        out.append((layout / "blobs/sha256" / desc["digest"][7:], kind, tars[i].stat().st_size))
    return out


def commands(layout: Path, tmp: Path, with_py: bool) -> dict[str, list[str] | str]:
    layers = layers_of(layout)
    kind = layers[0][1]
    blobs = " ".join(str(b) for b, _, _ in layers)
    index = index_cmd(layout, tmp / "out.clip", "--no-cache")
    cmds: dict[str, list[str] | str] = {
        "clipctl": index,
        "clipctl --no-verify": index + ["--no-verify"],
    }
    if len(layers) > 1:
        cmds["clipctl-1worker"] = index + ["--workers", "1"]
    if with_py:
        cmds["clipctl-py"] = ["env", "CLIPCY_PUREPYTHON=1"] + index
    if kind == "gzip":
        cmds["clipctl-zlib"] = ["env", "CLIPCY_INFLATE=zlib"] + index
    cmds["tarfile"] = [PY, str(HERE / "tarfile_walker.py"), str(layout)]
    if kind == "gzip":
        cmds["zlib-loop"] = [PY, str(HERE / "zlib_loop.py")] + [str(b) for b, _, _ in layers]
        cmds["gzip -dc"] = f"cat {blobs} | gzip -dc > /dev/null"
        if shutil.which("igzip"):
            cmds["igzip -dc"] = f"for b in {blobs}; do igzip -dc $b; done > /dev/null"
        if importlib.util.find_spec("ratarmountcore") is not None:
            cmds["ratarmount"] = [PY, str(HERE / "ratarmount_index.py")] + [
                str(b) for b, _, _ in layers
            ]
    else:
        cmds["zstd -dc"] = f"zstd -dc {blobs} > /dev/null"
    return cmds


def bench(name: str, layout: Path, runs: int, with_py: bool) -> list[dict[str, object]]:
    total = sum(u for _, _, u in layers_of(layout))
    with tempfile.TemporaryDirectory() as t:
        cmds = commands(layout, Path(t), with_py)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        rss: dict[str, int] = {k: 0 for k in cmds}
        cpu: dict[str, list[float]] = {k: [] for k in cmds}
        run(next(iter(cmds.values())))  # warm-up: the blobs into the page cache
        for _ in range(runs):
            for k, c in cmds.items():
                wall, peak = run(c)
                times[k].append(wall)
                rss[k] = max(rss[k], peak)
                cpu[k].append(CPU_LOG[-1])
    base_key = "zlib-loop" if "zlib-loop" in cmds else "zstd -dc"
    base = statistics.median(times[base_key])
    best_base = min(times[base_key])
    rows = []
    for k in cmds:
        med = statistics.median(times[k])
        rows.append(
            {
                "set": name,
                "command": k,
                "seconds": med,
                "mb_s": total / 1e6 / med,
                "ratio": base / med,
                "best_ratio": best_base / min(times[k]),
                "rss_mb": rss[k] / 2**20,
                "cpu": statistics.median(cpu[k]),
                "bytes": total,
            }
        )
    return rows


def node_count(layout: Path) -> int:
    with tempfile.TemporaryDirectory() as t:
        out = Path(t) / "x.clip"
        subprocess.run(index_cmd(layout, out, "--no-cache"), check=True)
        res = subprocess.run(
            CLIPCTL + ["inspect", str(out), "--json"], check=True, capture_output=True, text=True
        )
        return int(json.loads(res.stdout)["nodes"]["total"])


def bench_cache(data: Path, runs: int) -> list[str]:
    """Re-indexing `multi-newtop` (only its top layer differs from `multi`) with a layer cache
    that holds `multi`'s layers, against indexing it cold."""
    layout, base = data / "multi-newtop", data / "multi"
    if not (layout / "index.json").exists() or not (base / "index.json").exists():
        return []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        seeded = tmp / "seeded"

        def index(lay: Path, *extra: str) -> list[str]:
            return index_cmd(lay, tmp / "o.clip", *extra)

        run(index(base, "--cache-dir", str(seeded)))
        cold, warm = [], []
        for _ in range(runs):
            cold.append(run(index(layout, "--no-cache"))[0])
            cache = tmp / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            shutil.copytree(seeded, cache)
            warm.append(run(index(layout, "--cache-dir", str(cache)))[0])
    c, w = statistics.median(cold), statistics.median(warm)
    return [
        f"| multi-newtop (top layer new, 3 of 4 layers cached) | cold (--no-cache) | {c:.2f} "
        f"| | 1.00 | | | |",
        f"| multi-newtop (top layer new, 3 of 4 layers cached) | layer cache | {w:.2f} | | "
        f"{c / w:.1f} (vs cold) | | | |",
    ]


LOOKUP = """
import sys, time
t0 = time.perf_counter()
from clipcy.archive.reader import open_archive
t1 = time.perf_counter()
arc = open_archive(sys.argv[1])
node = arc.lookup(sys.argv[2])
t2 = time.perf_counter()
assert node is not None
print((t1 - t0) * 1e3, (t2 - t1) * 1e3, arc.node_count)
"""


def bench_lookup(layout: Path, runs: int = 9) -> list[str]:
    """Open an archive and look up one path in a fresh process: median ms (import apart)."""
    with tempfile.TemporaryDirectory() as t:
        out = Path(t) / "x.clip"
        subprocess.run(index_cmd(layout, out, "--no-cache"), check=True)
        export = subprocess.run(
            CLIPCTL + ["export", str(out)], check=True, capture_output=True, text=True
        ).stdout.splitlines()
        path = json.loads(export[len(export) * 2 // 3])["path"]
        imports, lookups = [], []
        for _ in range(runs):
            res = subprocess.run(
                [PY, "-I", "-c", LOOKUP, str(out), path], check=True, capture_output=True, text=True
            ).stdout.split()
            imports.append(float(res[0]))
            lookups.append(float(res[1]))
            nodes = int(res[2])
    return [
        f"| {layout.name} ({nodes} nodes) | open_archive + one lookup, fresh process | "
        f"{statistics.median(lookups):.2f} ms | | | | | "
        f"(import {statistics.median(imports):.0f} ms) |"
    ]


def machine() -> str:
    return (
        f"{platform.node()}: {os.cpu_count()} cores, {runinfo.cpu_model()}, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}, commit {runinfo.commit()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description="index-layout vs baselines")
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--sets", nargs="*", default=["single", "multi", "small", "zstd"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-py", action="store_true", help="skip the pure-Python twin")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    args = ap.parse_args()
    version = subprocess.run(CLIPCTL + ["--version"], check=True, capture_output=True, text=True)
    if "compiled" not in version.stdout:
        raise SystemExit(f"the compiled core is not in use: install clipcy first\n{version.stdout}")
    lines = [
        f"Machine: {machine()}",
        "",
        "| data | command | median s | MB/s (uncompressed) | × baseline | × baseline, best of N "
        "| CPU s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in args.sets:
        layout = args.data / name
        if not (layout / "index.json").exists():
            print(f"skip {name}: run perf/make_data.py first", file=sys.stderr)
            continue
        nodes = node_count(layout)
        for r in bench(name, layout, args.runs, not args.no_py):
            label = f"{name} ({r['bytes'] / 1e6:.0f} MB, {nodes} nodes)"
            lines.append(
                f"| {label} | {r['command']} | {r['seconds']:.2f} | {r['mb_s']:.0f} | "
                f"{r['ratio']:.2f} | {r['best_ratio']:.2f} | {r['cpu']:.2f} | {r['rss_mb']:.0f} |"
            )
            print(lines[-1], flush=True)
    if "small" in args.sets and (args.data / "small" / "index.json").exists():
        for line in bench_lookup(args.data / "small"):
            lines.append(line)
            print(line, flush=True)
    if "multi" in args.sets:
        for line in bench_cache(args.data, args.runs):
            lines.append(line)
            print(line, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_index.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
