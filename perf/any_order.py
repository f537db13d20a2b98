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
3. The mount rows (--mount; root: the page cache is dropped), on `unsorted`, each RUNS times:
   every file read in path order through a fresh mount with an empty decoded cache (against
   the zlib loop); the same after a remount with the decoded cache (on the data's disk) warm
   and the page cache dropped (against reading the unpacked tree from the same disk, its page
   cache dropped); 200 random 64 KiB reads from the files over 64 KiB and one small file
   read, each on a fresh mount, with the decoded cache and with --no-cache (the mount as it
   was without one).
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


def _drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _files(root: Path) -> list[Path]:
    """Every regular file under root, in path order (as `find | sort` would list them)."""
    out = []
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        out += [Path(dirpath) / n for n in sorted(names) if (Path(dirpath) / n).is_file()
                and not (Path(dirpath) / n).is_symlink()]
    return out


def _read_all(files: list[Path]) -> float:
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass
    return time.perf_counter() - t0


class _Mount:
    """clipctl mount of ARC at MNT (its decoded cache under CACHE, or none), as a context."""

    def __init__(self, py: list[str], env: dict[str, str], arc: Path, mnt: Path,
                 cache: Path | None) -> None:
        self.argv = [*py, "-m", "clipcy", "-q", "mount", str(arc), str(mnt)]
        self.argv += ["--cache-dir", str(cache)] if cache is not None else ["--no-cache"]
        self.env, self.mnt = env, mnt

    def __enter__(self) -> Path:
        self.mnt.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(self.argv, env=self.env, capture_output=True, text=True, cwd="/")
        assert r.returncode == 0, r.stderr
        self.pid = int(r.stderr.split("(pid ")[1].split(",")[0])
        return self.mnt

    def __exit__(self, *exc: object) -> None:
        import select

        fd = os.pidfd_open(self.pid)
        subprocess.run([sys.executable, "-m", "clipcy", "umount", str(self.mnt)], check=True,
                       env=self.env, cwd="/")
        select.select([fd], [], [], 120)
        os.close(fd)


def _mount_jobs(py: list[str], env: dict[str, str], arc: Path, data: Path, runs: int,
                zlib: list[str]) -> tuple[dict[str, list[float]], list[str]]:
    """The mount rows' times by job, and their table lines."""
    import random

    work = data / "mount-work"
    shutil.rmtree(work, ignore_errors=True)
    tree, cache, mnt = work / "tree", work / "decoded", work / "mnt"
    _run([*py, "-m", "clipcy", "-q", "extract", str(arc), "-C", str(tree)], env=env, cwd="/")
    rel = [f.relative_to(tree) for f in _files(tree)]
    big = [r for r in rel if (tree / r).stat().st_size > (64 << 10)]
    small = [r for r in rel if 0 < (tree / r).stat().st_size <= 4096]
    rnd = random.Random(64)
    picks = [(rnd.choice(big), rnd.random()) for _ in range(200)]
    one = small[len(small) // 2]
    t: dict[str, list[float]] = {k: [] for k in (
        "zlib loop", "mount, fresh: every file in path order",
        "unpacked tree on disk, page cache dropped",
        "mount, remounted: decoded cache warm, page cache dropped",
        "mount: 200 random 64 KiB reads", "mount --no-cache: 200 random 64 KiB reads",
        "mount: one small file", "mount --no-cache: one small file")}

    def random_reads(m: Path) -> float:
        t0 = time.perf_counter()
        for r, where in picks:
            with open(m / r, "rb") as fh:
                fh.seek(int(where * ((tree / r).stat().st_size - (64 << 10))))
                fh.read(64 << 10)
        return time.perf_counter() - t0

    def one_file(m: Path) -> float:
        t0 = time.perf_counter()
        (m / one).read_bytes()
        return time.perf_counter() - t0

    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(zlib, check=True, stdout=subprocess.DEVNULL)
        t["zlib loop"].append(time.perf_counter() - t0)
        shutil.rmtree(cache, ignore_errors=True)
        with _Mount(py, env, arc, mnt, cache) as m:
            t["mount, fresh: every file in path order"].append(_read_all([m / r for r in rel]))
        _drop_caches()
        t["unpacked tree on disk, page cache dropped"].append(_read_all([tree / r for r in rel]))
        with _Mount(py, env, arc, mnt, cache) as m:
            _drop_caches()
            t["mount, remounted: decoded cache warm, page cache dropped"].append(
                _read_all([m / r for r in rel]))
        for name, c in (("mount", work / "fresh"), ("mount --no-cache", None)):
            for job, fn in (("200 random 64 KiB reads", random_reads),
                            ("one small file", one_file)):
                if c is not None:
                    shutil.rmtree(c, ignore_errors=True)
                _drop_caches()
                with _Mount(py, env, arc, mnt, c) as m:
                    t[f"{name}: {job}"].append(fn(m))
        for k, v in t.items():
            print(f"{k}: {v[-1]:.3f} s", flush=True)
    med = {k: statistics.median(v) for k, v in t.items()}
    size = sum((tree / r).stat().st_size for r in rel)
    lines = ["", f"Mount rows (`unsorted`, {len(rel)} files, {size / 1e6:.0f} MB; "
             "decoded cache on the data's disk):", "",
             "| job | median s | runs (s) | ratio | against |", "| --- | --- | --- | --- | --- |"]
    against = {"mount, fresh: every file in path order": "zlib loop",
               "mount, remounted: decoded cache warm, page cache dropped":
               "unpacked tree on disk, page cache dropped",
               "mount: 200 random 64 KiB reads": "mount --no-cache: 200 random 64 KiB reads",
               "mount: one small file": "mount --no-cache: one small file"}
    for k, v in t.items():
        base = against.get(k)
        ratio = f"{med[base] / med[k]:.2f}x" if base else ""
        lines.append(f"| {k} | {med[k]:.3f} | {' '.join(f'{x:.3f}' for x in v)} | {ratio} "
                     f"| {base or ''} |")
    shutil.rmtree(work, ignore_errors=True)
    return t, lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE / "data" / "any_order")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="share of /usr/share's top-level directories copied (0.1: a quick run)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--old", type=Path, help="a checkout of the code to compare with")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "any_order.md")
    ap.add_argument("--mount", action="store_true",
                    help="also the mount rows (root: drops the page cache)")
    ap.add_argument("--mount-only", action="store_true", help="only the mount rows")
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
    if args.mount_only:
        jobs = {}
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
    if args.mount or args.mount_only:
        lines += _mount_jobs(py, here, arcs["unsorted"], args.data, args.runs, zlib)[1]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
