"""Extract of an image whose layers are not in path order, against `tar -xzf` of its layers.

    python perf/any_order.py [--data perf/data/any_order] [--scale 1] [--layers 4]
                             [--runs 3] [--old DIR] [--out perf/out/any_order.md]

1. The images (built once under DATA, reused while the source list and options match):
   LAYERS copies of a Debian /usr subtree (/usr/lib/python3.11, and a SCALE-sized share of
   /usr/share's top-level directories, each layer its own share) made with `cp -a` on the
   data's file system, each copy a layer tarred by plain GNU tar (no --sort: readdir order,
   hash order on ext4) and added with `umoci raw add-layer` (gzip, keeps the tar's order):
   the image `unsorted`; the same copies tarred with `tar --sort=name`: the image `sorted`.
   Both indexed with `clipctl index-layout`. The share of entries out of path order is
   printed for each.
2. Into tmpfs (/dev/shm), each job RUNS times, interleaved, the destination removed (not
   timed) before each: `tar -xzf` of the image's layer blobs one after the other (as root:
   owners and modes restored, like clipctl); `clipctl extract` of the whole image; the same
   with the clipcy at --old (a checkout built in place: `git worktree add DIR REV` and
   `python setup.py build_ext --inplace` in it), the code before data-order extraction;
   `clipctl extract IMG /copy1` (one layer's subtree). And a bare zlib loop over the blobs
   (one core), the floor of any gzip reader.
Ratios are speed ratios (tar's time / clipctl's time) from medians of this one run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from runinfo import commit, machine  # noqa: E402

SOURCES = [Path("/usr/lib/python3.11"), Path("/usr/share")]
TMPFS = Path("/dev/shm")


def _run(argv: list[str], **kw: object) -> None:
    subprocess.run(argv, check=True, **kw)  # type: ignore[call-overload]


def _share_entries(scale: float) -> list[str]:
    names = sorted(os.listdir("/usr/share"))
    step = max(1, round(1 / scale)) if scale < 1 else 1
    return names[::step]


def _build(data: Path, layers: int, scale: float) -> dict[str, Path]:
    """The two layouts and their archives (reused when the stamp matches)."""
    stamp = {"layers": layers, "scale": scale, "share": _share_entries(scale), "v": 1}
    key = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]
    out = {n: data / n for n in ("unsorted", "sorted")}
    arcs = {n: data / f"{n}.clip" for n in out}
    if (data / "stamp").exists() and (data / "stamp").read_text() == key and all(
            a.exists() for a in arcs.values()):
        return arcs
    shutil.rmtree(data, ignore_errors=True)
    src = data / "src"
    src.mkdir(parents=True)
    share = _share_entries(scale)
    for k in range(layers):
        copy = src / f"copy{k}"
        (copy / "share").mkdir(parents=True)
        _run(["cp", "-a", str(SOURCES[0]), str(copy / "python3")])
        for name in share[k::layers]:
            _run(["cp", "-a", "--no-preserve=links", f"/usr/share/{name}", str(copy / "share")])
    for name, sort in (("unsorted", []), ("sorted", ["--sort=name"])):
        layout = out[name]
        _run(["umoci", "init", "--layout", str(layout)])
        _run(["umoci", "new", "--image", f"{layout}:latest"])
        for k in range(layers):
            tar = data / f"layer{k}.tar"
            _run(["tar", "-C", str(src), *sort, "-cf", str(tar), f"copy{k}"])
            _run(["umoci", "raw", "add-layer", "--no-history", "--image", f"{layout}:latest",
                  str(tar)], stdout=subprocess.DEVNULL)
            tar.unlink()
        _run([sys.executable, "-m", "clipcy", "-q", "index-layout", "--layout", str(layout),
              "--out", str(arcs[name]), "--no-cache"])
    shutil.rmtree(src)
    (data / "stamp").write_text(key)
    return arcs


def _blobs(layout: Path) -> list[Path]:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    return [layout / "blobs" / "sha256" / d["digest"].split(":")[1] for d in manifest["layers"]]


def _out_of_order(layout: Path) -> float:
    """The share of a layer's entries whose path sorts before the entry ahead of it."""
    import tarfile

    behind = total = 0
    for blob in _blobs(layout)[:1]:
        with tarfile.open(blob, "r:gz") as t:
            last = ""
            for m in t:
                total += 1
                behind += m.name < last
                last = m.name
    return behind / max(total, 1)


def _timed(argv: list[str], dest: Path, env: dict[str, str] | None = None
           ) -> tuple[float, float]:
    """Wall and CPU (user + system, its children included) seconds of one run, from a
    directory with no clipcy in it (python puts the working directory on the path)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, cwd="/")
    took = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(dest, ignore_errors=True)
    return took, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def _tar_all(blobs: list[Path], dest: Path) -> list[str]:
    script = " && ".join(f"tar -xzf {b} -C {dest}" for b in blobs)
    return ["sh", "-c", script]


def _old_env(old: Path) -> dict[str, str]:
    """An environment in which `python -m clipcy` imports the clipcy at old (its .so built
    in place), not this checkout's editable install."""
    site = subprocess.run([sys.executable, "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return dict(os.environ, PYTHONPATH=f"{old}:{site}", PYTHONNOUSERSITE="1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE / "data" / "any_order")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="share of /usr/share's top-level directories copied (0.1: a quick run)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--old", type=Path, help="a checkout of the code to compare with")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "any_order.md")
    args = ap.parse_args()
    arcs = _build(args.data, args.layers, args.scale)
    py = [sys.executable, "-S"]  # -S: the import path is PYTHONPATH's, for --old
    here = dict(os.environ, PYTHONPATH=f"{HERE.parent}:{_old_env(HERE.parent)['PYTHONPATH']}",
                PYTHONNOUSERSITE="1")
    old = _old_env(args.old) if args.old else None
    for env, want in ((here, HERE.parent), (old, args.old)):
        if env is not None:
            got = subprocess.run([*py, "-c", "import clipcy; print(clipcy.__file__)"], env=env,
                                 capture_output=True, text=True, check=True, cwd="/").stdout
            assert got.startswith(str(want)), (got, want)
    dest = TMPFS / "clipcy-any-order"
    jobs: dict[str, tuple[list[str], dict[str, str] | None]] = {}
    for name in ("unsorted", "sorted"):
        layout, arc = args.data / name, arcs[name]
        jobs[f"tar -xzf, {name}"] = (_tar_all(_blobs(layout), dest), None)
        ext = ["-m", "clipcy", "-q", "extract", str(arc), "-C", str(dest)]
        jobs[f"clipctl extract, {name}"] = ([*py, *ext], here)
        if old is not None:
            jobs[f"clipctl extract (old), {name}"] = ([*py, *ext], old)
        jobs[f"clipctl extract /copy1, {name}"] = ([*py, *ext, "/copy1"], here)
        if old is not None:
            jobs[f"clipctl extract /copy1 (old), {name}"] = ([*py, *ext, "/copy1"], old)
    zlib = [sys.executable, str(HERE / "zlib_loop.py"),
            *map(str, _blobs(args.data / "unsorted"))]
    jobs["zlib loop, unsorted"] = (zlib, None)
    times: dict[str, list[float]] = {k: [] for k in jobs}
    cpu: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(args.runs):
        for k, (argv, env) in jobs.items():
            wall, used = _timed(argv, dest, env)
            times[k].append(wall)
            cpu[k].append(used)
            print(f"{k}: {wall:.2f} s, CPU {used:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    from clipcy import open_archive

    nodes: dict[str, int] = {}
    for name, arc_path in arcs.items():
        with open_archive(arc_path) as opened:
            nodes[name] = sum(1 for _ in opened.walk())
    sizes = {n: sum(b.stat().st_size for b in _blobs(args.data / n)) for n in arcs}
    lines = [
        "# Extract of an image in any order (perf/any_order.py)",
        "",
        f"{machine()}; commit {commit()}; {time.strftime('%Y-%m-%d')}; "
        f"{args.layers} layers, --scale {args.scale}, {args.runs} runs (median); "
        f"load before the run {os.getloadavg()[0]:.1f}.",
        "",
        *(f"- `{n}`: {nodes[n]} nodes, {sizes[n] / 1e6:.0f} MB of gzip blobs, "
          f"{_out_of_order(args.data / n):.0%} of the first layer's entries out of path order"
          for n in arcs),
        "",
        "| job | median s | runs (s) | speed vs tar -xzf of the same image | CPU s (median) "
        "| CPU vs tar -xzf |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for k in times:
        image = k.rsplit(", ", 1)[1]
        ratio = med[f"tar -xzf, {image}"] / med[k]
        cratio = med_cpu[f"tar -xzf, {image}"] / med_cpu[k]
        runs = " ".join(f"{t:.2f}" for t in times[k])
        lines.append(f"| {k} | {med[k]:.2f} | {runs} | {ratio:.2f}x | {med_cpu[k]:.2f} "
                     f"| {cratio:.2f}x |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
