#!/usr/bin/env python3
"""Tar walking speed: the compiled parser, its twin, tarfile, walk_tar and a bare zlib loop.

    python perf/walk.py                 # generates perf/data/{large,mixed,small}.tar(.gz)
    python perf/walk.py --tar my.tar    # also/only a given tar (gzipped next to it if needed)

Prints a markdown table and appends it, with the machine, date and commit, to
perf/RESULTS-walk.md. Each number is the best of --repeat runs. Data is deterministic
(random.Random seeds) and written under perf/data/ (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import io
import os
import platform
import random
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import runinfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data"
RESULTS = HERE / "RESULTS-walk.md"
READ = 1 << 20  # compressed bytes per read, as walk_tar


def _content(rnd: random.Random, size: int) -> bytes:
    """Half random bytes, half text-like (compressible) data."""
    if rnd.random() < 0.5:
        return rnd.randbytes(size)
    words = [
        b"layer",
        b"tar",
        b"index",
        b"clip",
        b"python",
        b"cython",
        b"gzip",
        b"zstd",
        b"offset",
        b"header",
        b"\n",
    ]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rnd.choices(words, k=64))
    return bytes(out[:size])


def make_tar(path: Path, sizes: list[int], seed: int) -> None:
    rnd = random.Random(seed)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for i, size in enumerate(sizes):
            d = f"usr/share/pkg{i % 97:02d}/sub{i % 13}"
            if i % 500 == 0:
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                tf.addfile(ti)
            ti = tarfile.TarInfo(f"{d}/file-{i:06d}.dat")
            ti.size, ti.mode, ti.mtime, ti.uid, ti.gid = size, 0o644, 1700000000, 0, 0
            tf.addfile(ti, io.BytesIO(_content(rnd, size)))


def datasets() -> list[Path]:
    DATA.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(42)
    specs = {
        # a layer of big files: the parser only hops headers
        "large": [4 << 20] * 50,
        # mixed sizes, log-normal (median ~3.6 KiB, capped at 8 MiB): ~200 MB
        "mixed": [min(int(rnd.lognormvariate(8.2, 1.8)), 8 << 20) for _ in range(10000)],
        # many small files
        "small": [int(rnd.lognormvariate(5.5, 1.2)) for _ in range(100000)],
    }
    out = []
    for seed, (name, sizes) in enumerate(specs.items()):
        tar = DATA / f"{name}.tar"
        if not tar.exists():
            print(
                f"generating {tar} ({len(sizes)} files, {sum(sizes) / 1e6:.0f} MB of data)",
                file=sys.stderr,
            )
            make_tar(tar, sizes, seed)
        out.append(tar)
    return out


def gz_of(tar: Path) -> Path:
    gz = tar.with_name(tar.name + ".gz")
    if not gz.exists() or gz.stat().st_mtime < tar.stat().st_mtime:
        print(f"compressing {gz}", file=sys.stderr)
        with open(tar, "rb") as f, open(gz, "wb") as g:
            try:
                subprocess.run(["pigz", "-n", "-6", "-c"], stdin=f, stdout=g, check=True)
            except FileNotFoundError:
                g.write(gzip.compress(f.read(), 6, mtime=0))
    return gz


def best(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    times = []
    n = 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t)
    return min(times), n


def machine() -> str:
    cpu, commit = runinfo.cpu_model(), runinfo.commit()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{date}, commit {commit}, nproc {os.cpu_count()}, {cpu}, "
        f"Python {platform.python_version()}, zlib {zlib.ZLIB_RUNTIME_VERSION}"
    )


def run(tar: Path, repeat: int) -> list[str]:
    from clipcy.tar import _tarparse_py, tarparse
    from clipcy.tar.tarparse import IMPLEMENTATION, walk_tar

    try:
        from clipcy.tar import _tarparse as compiled
    except ImportError:
        compiled = None
    gz = gz_of(tar)
    raw = tar.read_bytes()
    size = len(raw)

    def parse(mod: object) -> Callable[[], int]:
        def go() -> int:
            p = mod.TarParser()  # type: ignore[attr-defined]
            mv = memoryview(raw)
            n = 0
            for i in range(0, size, READ):  # the pieces walk_tar would feed
                n += len(p.feed(mv[i : i + READ]))
            p.close()
            return n

        return go

    def tarfile_stream() -> int:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as tf:
            return sum(1 for _ in tf)

    def walk() -> int:
        return sum(1 for _ in walk_tar(gz))

    def walk_threaded() -> int:
        tarparse.THREADED = True
        try:
            return sum(1 for _ in walk_tar(gz))
        finally:
            tarparse.THREADED = False

    def bare_zlib() -> int:
        d = zlib.decompressobj(31)
        n = 0
        with open(gz, "rb") as f:
            while chunk := f.read(READ):
                n += len(d.decompress(chunk))
        return n

    def bare_zlib_bounded(bound: int) -> Callable[[], int]:
        def go() -> int:  # the same loop with an output bound, as walk_tar's streams
            d = zlib.decompressobj(31)
            n = 0
            with open(gz, "rb") as f:
                while chunk := f.read(READ):
                    while chunk:
                        n += len(d.decompress(chunk, bound))
                        chunk = d.unconsumed_tail
            return n

        return go

    def bare_zlib_sliced() -> int:  # 64 KiB input slices, 256 KiB output bound
        d = zlib.decompressobj(31)
        n = 0
        with open(gz, "rb") as f:
            while chunk := f.read(READ):
                mv = memoryview(chunk)
                for i in range(0, len(mv), 1 << 16):
                    buf: bytes | memoryview = mv[i : i + (1 << 16)]
                    while buf:
                        n += len(d.decompress(buf, 1 << 18))
                        buf = d.unconsumed_tail
        return n

    rows = []
    results: dict[str, tuple[float, int]] = {}
    cases: list[tuple[str, Callable[[], int], int]] = []
    if compiled is not None:
        cases.append(("Cython parser, decompressed buffer", parse(compiled), repeat))
    cases += [
        ("pure-Python twin, decompressed buffer", parse(_tarparse_py), 1),
        ('tarfile "r|", decompressed buffer', tarfile_stream, 1),
        (f"walk_tar on .tar.gz ({IMPLEMENTATION})", walk, repeat),
        (f"walk_tar on .tar.gz ({IMPLEMENTATION}, THREADED=True)", walk_threaded, repeat),
        ("bare zlib.decompressobj loop on .tar.gz", bare_zlib, repeat),
        ("bare zlib loop, max_length 1 MiB, on .tar.gz", bare_zlib_bounded(1 << 20), repeat),
        ("bare zlib loop, max_length 256 KiB, on .tar.gz", bare_zlib_bounded(1 << 18), repeat),
        ("bare zlib loop, 64 KiB slices, max_length 256 KiB, on .tar.gz", bare_zlib_sliced, repeat),
    ]
    for label, fn, rep in cases:
        results[label] = best(fn, rep)
    entries = results[f"walk_tar on .tar.gz ({IMPLEMENTATION})"][1]
    bare = min(t for label, (t, _n) in results.items() if label.startswith("bare"))
    gzmb = gz.stat().st_size / 1e6
    name = f"{tar.name} ({size / 1e6:.0f} MB, {entries} entries, .gz {gzmb:.0f} MB)"
    for label, (t, _n) in results.items():
        ratio = f"{t / bare:.2f}x" if "on .tar.gz" in label else ""
        rows.append(
            f"| {name} | {label} | {size / t / 1e6:,.0f} | {t / entries * 1e6:.3f} | "
            f"{t:.3f} | {ratio} |"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--tar",
        type=Path,
        action="append",
        help="a tar to measure (repeatable); default: generate perf/data/{large,mixed,small}.tar",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (best is kept)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    tars = args.tar or datasets()
    head = [
        f"### walk.py: {machine()}",
        "",
        "MB/s are uncompressed tar bytes per second; ratio = time / the faster bare zlib loop.",
        "",
        "| data | case | MB/s | µs/entry | seconds | ratio to bare zlib |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    rows = []
    for tar in tars:
        rows += run(tar, args.repeat)
    text = "\n".join(head + rows) + "\n"
    print(text)
    if not args.no_write:
        new = not RESULTS.exists() or RESULTS.stat().st_size == 0
        with open(RESULTS, "a") as f:
            if new:
                f.write("# perf/walk.py results (merged into perf/RESULTS.md)\n\n")
            f.write(text + "\n")


if __name__ == "__main__":
    main()
