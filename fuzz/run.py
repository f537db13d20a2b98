"""Run a fuzz target (fuzz/targets.py) for as long as asked, with seeded corpora.

    python fuzz/run.py TARGET --seconds N       # tar, merge, archive, checkpoint, layout, all
    python fuzz/run.py all --seconds 20         # what .ci/run does (a smoke run of each)
    python fuzz/run.py TARGET --replay FILE...  # run inputs once (a finding, a regression)

Corpora live in WORKDIR/corpus/TARGET (--workdir, default $XDG_CACHE_HOME/clipcy/fuzz: out
of the source tree, which the fuzzer would otherwise keep changing), seeded on each run from
the tests' data (tests/data tars and gzip/zstd streams, the golden archive, archives
index-layout makes of the shipped sample, the sample's JSON documents). Findings (crashes,
foreign exceptions, hangs past --timeout, memory past --rss-mib) are written to
WORKDIR/artifacts/ and make the run exit non-zero. The fuzzer runs under `nice`; it needs
atheris (pip install atheris, or the `fuzz` extra) and the compiled core.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "tests" / "data"
TARGETS = ("tar", "merge", "archive", "checkpoint", "layout")


def _sample() -> Path:
    return Path(str(resources.files("clipcy") / "sample"))


def _tars() -> list[bytes]:
    out = [p.read_bytes() for p in sorted(DATA.glob("*.tar"))]
    for p in sorted(DATA.glob("*.tar.gz")):
        out.append(gzip.decompress(p.read_bytes()))
    return out


def _archives() -> list[bytes]:
    out = [(DATA / "golden" / "golden.clip").read_bytes()]
    with tempfile.TemporaryDirectory() as d:
        for extra in ([], ["--file-digests"], ["--checkpoint-mib", "0.001"]):
            arc = Path(d, "s.clip")
            subprocess.run(
                [
                    sys.executable,
                    "-I",
                    "-m",
                    "clipcy",
                    "-q",
                    "index-layout",
                    "--layout",
                    str(_sample()),
                    "--tag",
                    "latest",
                    "--out",
                    str(arc),
                    "--no-cache",
                    *extra,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            out.append(arc.read_bytes())
    return out


def seeds(target: str) -> list[bytes]:
    """Seed inputs in each target's own encoding (see fuzz/targets.py)."""
    if target == "tar":
        return [b"\x07\x00" + t for t in _tars()] + [b"\x01\x01" + t for t in _tars()[:4]]
    if target == "merge":
        return [bytes((i * 7 + j) % 256 for j in range(400)) for i in range(24)]  # provider bytes
    if target == "archive":
        return _archives()
    if target == "checkpoint":
        gz = [p.read_bytes() for p in sorted(DATA.glob("*.gz"))]
        gz += [
            p.read_bytes()
            for p in sorted(_sample().glob("blobs/sha256/*"))
            if p.read_bytes()[:2] == b"\x1f\x8b"
        ]
        return [b"\x01\x10\x00" + g for g in gz] + [b"\x00\x03\x02" + t[:4096] for t in _tars()[:3]]
    if target == "layout":
        sample = _sample()
        index = json.loads((sample / "index.json").read_bytes())
        docs = [(sample / "index.json").read_bytes()]
        for p in sorted(sample.glob("blobs/sha256/*")):
            raw = p.read_bytes()
            if raw[:1] == b"{":
                docs.append(raw)
        out = []
        for which, doc in enumerate(docs):
            # which, tag?, platform?, ref (length-prefixed by the provider), document
            out.append(bytes([which % 5, 0, 0]) + b"oci:x:latest" + doc)
        out.append(json.dumps(index).encode())
        return out
    raise SystemExit(f"unknown target {target}")


def _default_workdir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "clipcy" / "fuzz"


def _write_seeds(target: str, corpus: Path) -> Path:
    seed_dir = corpus.parent / (target + ".seeds")
    seed_dir.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(seeds(target)):
        (seed_dir / f"seed-{i:03d}").write_bytes(s)
    corpus.mkdir(parents=True, exist_ok=True)
    return seed_dir


def run(target: str, seconds: int, timeout: int, rss_mib: int, jobs: int, work: Path) -> int:
    corpus = work / "corpus" / target
    seed_dir = _write_seeds(target, corpus)
    artifacts = work / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        "nice",
        "-n",
        "10",
        sys.executable,
        str(HERE / "targets.py"),
        target,
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        f"-rss_limit_mb={rss_mib}",
        f"-artifact_prefix={artifacts}/{target}-",
        "-print_final_stats=1",
        "-max_len=65536",
        str(corpus),
        str(seed_dir),
    ]
    env = dict(os.environ)
    if jobs > 1:
        # libFuzzer starts each job as `argv[0] FLAGS`: argv[0] must run this target with
        # this interpreter, so it is a small wrapper script (targets.py hands it over)
        wrapper = work / "bin" / f"fuzz-{target}"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "targets.py"}" '
                           f'{target} "$@"\n')
        wrapper.chmod(0o755)
        env["CLIPCY_FUZZ_ARGV0"] = str(wrapper)
        cmd += [f"-jobs={jobs}", f"-workers={jobs}"]
    t0 = time.monotonic()
    cpu0 = os.times()
    print(f"== fuzz {target}: {seconds} s", flush=True)
    # the working directory gets libFuzzer's per-job logs (fuzz-N.log): not the source tree
    rc = subprocess.run(cmd, cwd=work, env=env).returncode
    cpu1 = os.times()
    cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
    print(
        f"== fuzz {target}: exit {rc}, {time.monotonic() - t0:.0f} s wall, {cpu:.0f} s CPU",
        flush=True,
    )
    return rc


def replay(target: str, files: list[str]) -> int:
    cmd = [sys.executable, str(HERE / "targets.py"), target, "-runs=1", *files]
    return subprocess.run(cmd, cwd=HERE).returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("target", choices=(*TARGETS, "all"))
    ap.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    ap.add_argument("--timeout", type=int, default=20, help="seconds one input may take")
    ap.add_argument("--rss-mib", type=int, default=2048, help="memory one process may use")
    ap.add_argument("--jobs", type=int, default=1, help="parallel fuzzing processes")
    ap.add_argument("--replay", nargs="+", metavar="FILE", help="run these inputs once")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=_default_workdir(),
        help="corpora and findings (default: $XDG_CACHE_HOME/clipcy/fuzz)",
    )
    args = ap.parse_args()
    targets = TARGETS if args.target == "all" else (args.target,)
    if args.replay:
        return max(replay(t, args.replay) for t in targets)
    worst = 0
    for t in targets:
        worst = max(
            worst, run(t, args.seconds, args.timeout, args.rss_mib, args.jobs, args.workdir)
        )
    return worst


if __name__ == "__main__":
    sys.exit(main())
