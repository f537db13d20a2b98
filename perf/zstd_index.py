"""Speed of clipcy's zstd layer indexer (blobindex.ZstdIndexer) against `zstd -dc`.

Compares, on the same blobs and interleaved round by round (the machine is shared and noisy,
so medians of several rounds are reported):

  zstd -dc     `zstd -dc BLOB... > /dev/null` (the blob named K times to amortise the spawn)
  reader       python-zstandard ZstdDecompressor().stream_reader(file).read(1 MiB) loop
  indexer      blobindex.ZstdIndexer, driven as the indexer does (1 MiB reads -> feed)
  old          ZstdIndexer as of OLD_COMMIT (block-by-block copies), loaded from git

Each is timed wall (perf_counter) and CPU (process_time; zstd -dc: the child's rusage).
Before timing, the indexer's output is checked against `zstd -dc` (sha256) and its frames
against the old indexer's.

Blobs: DATA/zstd (perf/make_data.py's `single` layer as one zstd -3 frame), and a multi-frame
blob made from it once, under DATA/zstd-multiframe (git-ignored): the same tar as independent
zstd -3 frames of 4 MiB of input each, as pzstd and zstd --rsyncable-style writers cut them.

    python perf/make_data.py --only single zstd      # once
    python perf/zstd_index.py [--data perf/data] [--rounds 5] [--no-old] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import runinfo
import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clipcy.layers.blobindex import ZstdIndexer  # noqa: E402

OLD_COMMIT = "17984b0"  # last commit with the block-by-block ZstdIndexer
OLD_PATH = "clipcy/blobindex.py"  # where it lived then
READ = 1 << 20
FRAME_IN = 4 << 20  # input bytes per frame of the multi-frame blob
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_blobs(layout: Path) -> list[Path]:
    """The layout's blobs that start with a zstd or skippable frame magic."""
    out = []
    for p in sorted((layout / "blobs" / "sha256").iterdir()):
        with p.open("rb") as f:
            head = f.read(4)
        if head == ZSTD_MAGIC or (len(head) == 4 and
                                  int.from_bytes(head, "little") & ~0xF == 0x184D2A50):
            out.append(p)
    return out


def make_multiframe(big: Path, out: Path) -> Path:
    """out/layer.tar.zst: big's tar recompressed as independent frames (made once)."""
    dest = out / "layer.tar.zst"
    if dest.exists():
        return dest
    out.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=True)
    with big.open("rb") as src, tmp.open("wb") as dst:
        reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
        while piece := reader.read(FRAME_IN):
            while len(piece) < FRAME_IN and (more := reader.read(FRAME_IN - len(piece))):
                piece += more
            dst.write(cctx.compress(piece))
    tmp.rename(dest)
    return dest


def load_old() -> Any:
    src = subprocess.run(["git", "show", f"{OLD_COMMIT}:{OLD_PATH}"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType("blobindex_old")
    exec(compile(src, f"{OLD_COMMIT}:{OLD_PATH}", "exec"), mod.__dict__)
    return mod.ZstdIndexer


def run_indexer(cls: Any, path: Path, sink: Callable[[bytes], object] | None = None
                ) -> tuple[int, list[tuple[int, int, int, int]], int]:
    ix = cls()
    biggest = 0
    with path.open("rb") as f:
        while chunk := f.read(READ):
            for out in ix.feed(chunk):
                biggest = max(biggest, len(out))
                if sink is not None:
                    sink(out)
    ix.finish()
    return ix.total_out, list(ix.frames), biggest


def run_reader(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        r = zstandard.ZstdDecompressor().stream_reader(f, read_size=READ,
                                                       read_across_frames=True)
        while out := r.read(READ):
            n += len(out)
    return n


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def timed_zstd(paths: list[Path]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run(["zstd", "-q", "-dc", *map(str, paths)], stdout=null, check=True)
    wall = time.perf_counter() - w
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def make_runners(paths: list[Path], rep: int, old: Any
                 ) -> dict[str, Callable[[], tuple[float, float]]]:
    def zstd_dc() -> tuple[float, float]:
        return timed_zstd(paths * rep)

    def reader() -> tuple[float, float]:
        return timed(lambda: [run_reader(p) for _ in range(rep) for p in paths])

    def new() -> tuple[float, float]:
        return timed(lambda: [run_indexer(ZstdIndexer, p) for _ in range(rep) for p in paths])

    def previous() -> tuple[float, float]:
        return timed(lambda: [run_indexer(old, p) for _ in range(rep) for p in paths])

    runners = {"zstd -dc": zstd_dc, "zstandard stream_reader": reader,
               "ZstdIndexer (new)": new}
    if old is not None:
        runners[f"ZstdIndexer (old, {OLD_COMMIT})"] = previous
    return runners


machine = runinfo.machine


def commit() -> str:
    head = runinfo.commit()
    dirty = subprocess.run(["git", "status", "--porcelain", "clipcy/layers/blobindex.py"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return head + (" + uncommitted blobindex.py" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "perf" / "data",
                    help="perf/make_data.py's output (needs its zstd set)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-old", action="store_true", help="skip the old indexer")
    ap.add_argument("--out", type=Path, default=ROOT / "perf" / "RESULTS-zstd.md")
    args = ap.parse_args()

    old = None
    if not args.no_old:
        try:
            old = load_old()
        except ImportError as e:  # it imports modules of its time that have moved or gone
            print(f"the old indexer ({OLD_COMMIT}) does not load against this tree ({e}): "
                  "its row is left out", file=sys.stderr)
    sets: list[tuple[str, list[Path], int]] = []  # name, blobs, repeats per timing
    layout = args.data / "zstd"
    if not (layout / "index.json").exists():
        raise SystemExit(f"{layout} is missing: python perf/make_data.py --out {args.data} "
                         "--only single zstd")
    big = zstd_blobs(layout)
    assert len(big) == 1, f"{layout}: expected one zstd layer blob, found {len(big)}"
    sets.append(("zstd layer, 1 frame (make_data zstd)", big, 1))
    multi = make_multiframe(big[0], args.data / "zstd-multiframe")
    sets.append((f"the same tar in {FRAME_IN >> 20} MiB frames", [multi], 1))

    rows = []
    for name, paths, rep in sets:
        comp = sum(p.stat().st_size for p in paths)
        # correctness first: same bytes as zstd -dc, same frames as the old walker
        usize = 0
        pieces: list[int] = []
        for p in paths:
            sha = hashlib.sha256()
            total, frames, biggest = run_indexer(ZstdIndexer, p, sha.update)
            ref = hashlib.sha256()
            with subprocess.Popen(["zstd", "-q", "-dc", str(p)], stdout=subprocess.PIPE) as z:
                assert z.stdout is not None
                while b := z.stdout.read(READ):
                    ref.update(b)
            assert sha.digest() == ref.digest(), f"{p}: output differs from zstd -dc"
            if old is not None:
                assert run_indexer(old, p)[1] == frames, f"{p}: frames differ from the old walker"
            assert biggest <= 1 << 20
            usize += total
            pieces.append(len(frames))
        usize *= rep
        comp *= rep

        runners = make_runners(paths, rep, old)
        walls: dict[str, list[float]] = {k: [] for k in runners}
        cpus: dict[str, list[float]] = {k: [] for k in runners}
        for r in range(args.rounds):
            order = list(runners) if r % 2 == 0 else list(reversed(runners))
            for k in order:
                w, c = runners[k]()
                walls[k].append(w)
                cpus[k].append(c)
        zw = statistics.median(walls["zstd -dc"])
        zc = statistics.median(cpus["zstd -dc"])
        for k in runners:
            w = statistics.median(walls[k])
            c = statistics.median(cpus[k])
            row = (name, k, comp, usize, w, c, usize / w / 1e6, zw / w, zc / c,
                   min(walls[k]))
            rows.append(row)
            print(f"{name[-40:]:40} {k:28} {w*1e3:8.1f} ms wall (min {min(walls[k])*1e3:7.1f})"
                  f" {c*1e3:8.1f} ms cpu  {usize / w / 1e6:7.0f} MB/s  "
                  f"x{zw / w:4.2f} of zstd -dc wall, x{zc / c:4.2f} cpu", flush=True)
        print(f"  frames per blob: {pieces}")

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    zver = subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# zstd layer indexer speed (perf/zstd_index.py)",
        "",
        f"- date: {now}; commit: {commit()}",
        f"- machine: {machine()} (shared with other jobs: medians of {args.rounds} "
        "interleaved rounds)",
        f"- Python {platform.python_version()}, zstandard {zstandard.__version__}, {zver}",
        "- ratio = zstd -dc median / this median (>= 1: at least as fast as `zstd -dc`); "
        "MB/s of uncompressed output; CPU = process_time (zstd -dc: child rusage)",
        f"- data: {args.data} (perf/make_data.py)",
        "",
        "| blobs | method | compressed MB | output MB | wall ms (median) | wall ms (min) "
        "| CPU ms (median) | MB/s | x zstd -dc wall | x zstd -dc CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, k, comp, usize, w, c, mbs, rw, rc, wmin in rows:
        lines.append(f"| {name} | {k} | {comp / 1e6:.1f} | {usize / 1e6:.1f} | {w * 1e3:.1f} "
                     f"| {wmin * 1e3:.1f} | {c * 1e3:.1f} | {mbs:.0f} | {rw:.2f} | {rc:.2f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
