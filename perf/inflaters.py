#!/usr/bin/env python3
"""The inflaters this machine has, on one data set's gzip blobs: which one clipcy should use.

  python perf/inflaters.py [--data perf/data] [--set single] [--runs 5] [--out FILE]

Each command is a whole process, run --runs times interleaved; the table gives the best wall
time and the best CPU time (user + sys, from wait4: less sensitive than wall to the other
jobs on a shared machine), both also as ratios to the bare Python zlib loop. Rows:

  zlib loop            zlib.decompressobj over 1 MiB reads (the issue's baseline)
  zlib-ng loop         the same with the zlib-ng wheel's zlib_ng module (zlib-ng 2.x)
  isal loop            the same with python-isal's isal_zlib (ISA-L), when installed
  GzipIndexer zlib     clipcy's resume-point indexer (1 MiB points, sparse windows) on zlib
  GzipIndexer zlib-ng  the same on zlib-ng (CLIPCY_INFLATE unset: the default)
  igzip -dc            ISA-L's CLI (Debian `isal`), when installed
  gzip -dc             GNU gzip
  rapidgzip -P2        rapidgzip's parallel decoder on 2 threads, when installed
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import runinfo

HERE = Path(__file__).resolve().parent
PY = sys.executable

LOOP = """
import sys
from {module} import decompressobj
total = 0
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        d = decompressobj(31)
        while chunk := f.read(1 << 20):
            while chunk:
                total += len(d.decompress(chunk))
                if d.eof:
                    chunk = d.unused_data
                    d = decompressobj(31)
                else:
                    chunk = b""
print(total)
"""

INDEXER = """
import sys
from clipcy.layers._checkpoint import GzipIndexer
total = 0
for path in sys.argv[1:]:
    ix = GzipIndexer(1 << 20)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            for out in ix.feed(chunk):
                total += len(out)
    ix.finish()
print(total, len(ix.access().points))
"""

RAPIDGZIP = """
import sys, rapidgzip
total = 0
for path in sys.argv[1:]:
    with rapidgzip.open(path, parallelization=2) as f:
        while data := f.read(1 << 20):
            total += len(data)
print(total)
"""


def blobs_of(layout: Path) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    man = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    return [str(layout / "blobs/sha256" / d["digest"][7:]) for d in man["layers"]]


def measure(cmd: list[str] | str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall, user+sys CPU) seconds of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=isinstance(cmd, str), stdout=subprocess.DEVNULL,
                            env=dict(os.environ, **(env or {})))
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {cmd}")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--set", default="single")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS-inflate.md")
    args = ap.parse_args()
    blobs = blobs_of(args.data / args.set)
    files = " ".join(blobs)
    cmds: dict[str, tuple[list[str] | str, dict[str, str] | None]] = {
        "zlib loop": ([PY, "-I", "-c", LOOP.format(module="zlib"), *blobs], None),
        "zlib-ng loop": ([PY, "-I", "-c", LOOP.format(module="zlib_ng.zlib_ng"), *blobs], None),
    }
    if importlib.util.find_spec("isal"):
        cmds["isal loop"] = ([PY, "-I", "-c", LOOP.format(module="isal.isal_zlib"), *blobs], None)
    cmds["GzipIndexer zlib"] = ([PY, "-I", "-c", INDEXER, *blobs], {"CLIPCY_INFLATE": "zlib"})
    cmds["GzipIndexer zlib-ng"] = ([PY, "-I", "-c", INDEXER, *blobs],
                                   {"CLIPCY_INFLATE": "zlib-ng"})
    if shutil.which("igzip"):
        cmds["igzip -dc"] = (f"for b in {files}; do igzip -dc $b; done > /dev/null", None)
    cmds["gzip -dc"] = (f"cat {files} | gzip -dc > /dev/null", None)
    if importlib.util.find_spec("rapidgzip"):
        cmds["rapidgzip -P2"] = ([PY, "-I", "-c", RAPIDGZIP, *blobs], None)
    walls: dict[str, list[float]] = {k: [] for k in cmds}
    cpus: dict[str, list[float]] = {k: [] for k in cmds}
    measure(cmds["zlib loop"][0])  # warm the page cache
    for _ in range(args.runs):
        for k, (cmd, env) in cmds.items():
            w, c = measure(cmd, env)
            walls[k].append(w)
            cpus[k].append(c)
    bw, bc = min(walls["zlib loop"]), min(cpus["zlib loop"])
    size = sum(os.path.getsize(b) for b in blobs)
    commit = runinfo.commit()
    lines = [
        f"Data: {args.set} ({len(blobs)} gzip blob(s), {size / 1e6:.0f} MB compressed); best of "
        f"{args.runs} interleaved runs; {os.cpu_count()} cores; "
        f"{time.strftime('%Y-%m-%d %H:%M')}; commit {commit}",
        "",
        "| inflater | best wall s | × zlib loop (wall) | best CPU s | × zlib loop (CPU) |",
        "|---|---|---|---|---|",
    ]
    for k in cmds:
        w, c = min(walls[k]), min(cpus[k])
        lines.append(f"| {k} | {w:.3f} | {bw / w:.2f} | {c:.3f} | {bc / c:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text("# Inflaters on this machine (perf/inflaters.py)\n\n" + text)


if __name__ == "__main__":
    main()
