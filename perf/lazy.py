"""Lazy-read benchmark: gzip resume points (clipcy.layers._checkpoint) on a >= 100 MB gzip layer.

    python perf/lazy.py [--size-mib 192] [--out perf/RESULTS-lazy.md]

1. Makes perf/data/lazy/layer-<N>M.gz once (git-ignored): deterministic mixed content from
   random.Random(2026) -- 75% word text, 25% random bytes (already-compressed files), in runs
   of 1 KB to 400 KB -- piped through `gzip -6 -n`.
2. Indexing cost: a bare zlib loop (Python's zlib.decompressobj, 1 MiB in, at most 1 MiB out
   per call: what the indexer replaces) vs GzipIndexer at several spans; best of 5 each.
3. Cold 64 KiB preads at 200 seeded random offsets through blobread (median, p99) vs
   inflating from the layer's start (20 of the offsets), at each span; and 32 MiB read
   sequentially in 128 KiB preads, with and without the reader's parked decoders.
4. Index size: points, raw window bytes, and the windows zstd -3 compressed as one stream,
   as a percent of the compressed layer, with sparse windows (default) and full ones.
Writes a markdown table with machine, date and commit. Numbers only from here, never tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import runinfo
import zstandard

from clipcy.layers import blobread
from clipcy.layers._checkpoint import GzipIndexer, gzip_read
from clipcy.layers.access import GZIP, LayerAccess
from clipcy.layers.blobindex import DEFAULT_SPAN
from clipcy.layers.blobread import open_layer_reader
from clipcy.storage.local import open_file
from clipcy.storage.spans import hash_file

HERE = Path(__file__).resolve().parent
HEADER = ("| span | index time | vs bare zlib | vs same loop, no points | points "
          "| windows raw | windows zstd -3 "
          "| % of gzip layer | % if each window compressed alone | pread median | pread p99 "
          "| faster than from start (median) |")
MiB = 1 << 20
READ = 64 << 10


def make_layer(path: Path, size: int) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(2026)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 12)))
             for _ in range(3000)]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        p = subprocess.Popen(["gzip", "-6", "-n", "-c"], stdin=subprocess.PIPE, stdout=out)
        assert p.stdin is not None
        total = 0
        while total < size:
            if rnd.random() < 0.25:
                part = rnd.randbytes(rnd.randint(1000, 400_000))
            else:
                part = b" ".join(rnd.choices(words, k=rnd.randint(1000, 60_000))) + b"\n"
            part = part[:size - total]
            p.stdin.write(part)
            total += len(part)
        p.stdin.close()
        if p.wait() != 0:
            raise SystemExit("gzip failed")
    tmp.rename(path)


def bare_zlib(path: Path) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    d = zlib.decompressobj(31)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(MiB):
            while chunk:
                out = d.decompress(chunk, MiB)
                n += len(out)
                chunk = d.unconsumed_tail
                if d.eof:  # single member here
                    break
    return time.perf_counter() - t, n


def run_indexer(path: Path, span: int, sparse: bool = True) -> tuple[float, GzipIndexer]:
    t = time.perf_counter()
    ix = GzipIndexer(span, 0, sparse)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(MiB):
            for _ in ix.feed(chunk):
                pass
    ix.finish()
    return time.perf_counter() - t, ix


def window_cost(points: list[tuple[int, int, int, bytes]]) -> tuple[int, int, int]:
    """Raw window bytes; zstd -3 of all windows as one stream; and of each window alone."""
    cz = zstandard.ZstdCompressor(level=3)
    raw = b"".join(p[3] for p in points)
    alone = sum(len(cz.compress(p[3])) for p in points if p[3])
    return len(raw), len(cz.compress(raw)), alone


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


machine, commit = runinfo.machine, runinfo.commit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=192)
    ap.add_argument("--spans-mib", default="0.5,1,2,4")
    ap.add_argument("--reads", type=int, default=200)
    ap.add_argument("--from-start", type=int, default=20)
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS-lazy.md")
    args = ap.parse_args()

    layer = HERE / "data" / "lazy" / f"layer-{args.size_mib}M.gz"
    make_layer(layer, args.size_mib * MiB)
    csize = layer.stat().st_size
    spans = sorted({int(float(s) * MiB) for s in args.spans_mib.split(",")} | {DEFAULT_SPAN})
    print(f"layer {layer}: {csize} bytes compressed", file=sys.stderr)

    # -- indexing cost, best of 3, interleaved so that machine noise hits all alike
    bare: list[float] = []
    timings: dict[tuple[int, bool], list[float]] = {}
    indexers: dict[tuple[int, bool], GzipIndexer] = {}
    usize = 0
    configs = [(s, True) for s in spans] + [(DEFAULT_SPAN, False), (1 << 50, True)]
    for _ in range(5):
        t, usize = bare_zlib(layer)
        bare.append(t)
        for cfg in configs:
            t, ix = run_indexer(layer, *cfg)
            assert ix.total_out == usize
            timings.setdefault(cfg, []).append(t)
            indexers[cfg] = ix
    base = min(bare)

    # -- two layers indexed in parallel threads (the GIL is released while inflating)
    def one() -> None:
        run_indexer(layer, DEFAULT_SPAN)

    t = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    two_threads = time.perf_counter() - t

    # -- reads
    rnd = random.Random(7)
    offsets = [rnd.randrange(usize - READ) for _ in range(args.reads)]
    fd = os.open(layer, os.O_RDONLY)
    start_times = []
    expected: dict[int, bytes] = {}
    for off in offsets[:args.from_start]:
        t = time.perf_counter()
        expected[off] = gzip_read(fd, 0, 0, b"", off, READ)
        start_times.append(time.perf_counter() - t)
    os.close(fd)
    reads: dict[int, list[float]] = {}
    layer_spans = hash_file(layer)  # reads verify span checksums, as clipcy's always do
    blobread.CURSORS = 0  # cold: no parked decoder may help
    for span in spans:
        access = LayerAccess(kind=GZIP, span=span, points=indexers[(span, True)].points)
        lat = []
        with open_layer_reader(open_file(layer, layer_spans), access) as r:
            for off in offsets:
                t = time.perf_counter()
                data = r.pread(off, READ)
                lat.append(time.perf_counter() - t)
                if off in expected:
                    assert data == expected[off], off
        reads[span] = lat
    start_med = statistics.median(start_times)

    # -- sequential: 32 MiB in 128 KiB preads from a point-less offset, default span, with and
    # without parked decoders
    seq = {}
    access = LayerAccess(kind=GZIP, span=DEFAULT_SPAN, points=indexers[(DEFAULT_SPAN, True)].points)
    for parked in (0, 4):
        blobread.CURSORS = parked
        with open_layer_reader(open_file(layer, layer_spans), access) as r:
            t = time.perf_counter()
            for off in range(usize // 3, usize // 3 + 32 * MiB, 128 << 10):
                r.pread(off, 128 << 10)
            seq[parked] = time.perf_counter() - t

    # -- report
    nopoints = min(timings[(1 << 50, True)])
    rows = []
    for span in spans:
        ix = indexers[(span, True)]
        raw, z3, z3_alone = window_cost(ix.points)
        _, z3_full, _ = window_cost(indexers[(span, False)].points) if span == DEFAULT_SPAN \
            else (0, 0, 0)
        med = statistics.median(reads[span])
        rows.append(
            f"| {span // 1024} KiB{' (default)' if span == DEFAULT_SPAN else ''} "
            f"| {min(timings[(span, True)]):.2f} s | {min(timings[(span, True)]) / base - 1:+.1%} "
            f"| {min(timings[(span, True)]) / nopoints - 1:+.1%} "
            f"| {len(ix.points)} | {raw / 1024:.0f} KiB | {z3 / 1024:.0f} KiB "
            f"| {z3 / csize:.2%}{f' (full windows: {z3_full / csize:.2%})' if z3_full else ''} "
            f"| {z3_alone / csize:.2%} "
            f"| {med * 1e3:.1f} ms | {pct(reads[span], 0.99) * 1e3:.1f} ms "
            f"| {start_med / med:.0f}x |")
    full_default = min(timings[(DEFAULT_SPAN, False)])
    text = f"""# Lazy reads through gzip resume points (perf/lazy.py)

- machine: {machine()} (shared with other jobs: timings are noisy)
- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit()}, Python \
{platform.python_version()}, zlib {zlib.ZLIB_RUNTIME_VERSION}
- layer: `{layer.relative_to(HERE.parent)}`: {usize / MiB:.0f} MiB uncompressed, \
{csize / MiB:.1f} MiB gzip -6 (75% word text, 25% random bytes, seeded)
- bare zlib loop (Python zlib.decompressobj, 1 MiB out per call): {base:.2f} s \
({usize / base / MiB:.0f} MiB/s out); GzipIndexer without points: {nopoints:.2f} s \
({nopoints / base - 1:+.1%}); default span with full (non-sparse) windows: {full_default:.2f} s
- two threads each indexing the layer at once: {two_threads:.2f} s wall (one alone: \
{min(timings[(DEFAULT_SPAN, True)]):.2f} s): the GIL is released while inflating
- sequential 32 MiB in 128 KiB preads at the default span: {seq[4]:.2f} s with parked \
decoders ({32 / seq[4]:.0f} MiB/s), {seq[0]:.2f} s when every read resumes at a point
- cold 64 KiB pread from the layer's start ({args.from_start} offsets): median \
{start_med * 1e3:.0f} ms; reads below at {args.reads} seeded offsets (file in page cache)

""" + "\n".join([HEADER, "|---" * HEADER.count(" | ") + "|---|"] + rows) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
