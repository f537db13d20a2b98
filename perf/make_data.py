#!/usr/bin/env python3
"""Generate the perf data sets as OCI layouts, reproducibly, with real tools.

  python perf/make_data.py [--out perf/data] [--scale 1.0] [--only NAME ...]

Data sets (sizes are uncompressed tar bytes at --scale 1):
  single    one gzip layer of ~500 MB of mixed files (half random bytes, half text)
  multi     a 4-layer gzip image of ~1 GB
  small     one gzip layer of 150,000 small files
  zstd      the `single` layer as zstd (zstd -3)
  growth-N  `single` at 1/4, 1/2 and 1 of its size (time must grow linearly)
  multi-newtop  `multi` with its top layer replaced by a new ~20 MB one (the layer cache's case:
            an image rebuilt with only its top layer changed)

Files are written by Python from a seeded random generator into a staging directory, archived
by GNU tar (--sort=name, fixed mtime and owners), compressed by pigz -6 -n / zstd -3, and
wrapped into an OCI layout (blobs, config, manifest, index.json). Nothing here is committed:
perf/data is git-ignored and rebuilt by this script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua usr lib share bin etc config python "
    "package module import return class def self none true false"
).split()


def text_bytes(rng: random.Random, n: int) -> bytes:
    out = []
    size = 0
    while size < n:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + "\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def make_tree(root: Path, seed: int, total: int, n_files: int | None = None) -> None:
    """Files under root whose sizes add up to about `total` bytes (or n_files small files)."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    written = 0
    i = 0
    while (written < total) if n_files is None else (i < n_files):
        d = root / f"d{i % 97:02d}" / f"s{(i // 97) % 31:02d}"
        d.mkdir(parents=True, exist_ok=True)
        if n_files is not None:
            size = int(rng.lognormvariate(6.5, 1.2)) % 65536
        else:
            size = min(int(rng.lognormvariate(10.5, 2.0)), 64 << 20, total - written + 1)
        data = rng.randbytes(size) if rng.random() < 0.5 else text_bytes(rng, size)
        (d / f"f{i:06d}.{'bin' if i % 3 else 'txt'}").write_bytes(data)
        written += size
        i += 1


def tar_dir(src: Path, out: Path) -> None:
    subprocess.run(
        [
            "tar",
            "--sort=name",
            "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "--mtime=@1700000000",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
            str(src),
            "-cf",
            str(out),
            ".",
        ],
        check=True,
    )


def compress(tar: Path, kind: str) -> Path:
    if kind == "gzip":
        out = tar.with_suffix(".tar.gz")
        with open(out, "wb") as f:
            subprocess.run(["pigz", "-6", "-n", "-c", str(tar)], stdout=f, check=True)
    else:
        out = tar.with_suffix(".tar.zst")
        subprocess.run(["zstd", "-q", "-3", "-f", "-o", str(out), str(tar)], check=True)
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def write_layout(layout: Path, layers: list[tuple[Path, Path, str]]) -> None:
    """layers: (tar, blob, kind). Blobs are moved into the layout."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descs, diff_ids = [], []
    for tar, blob, kind in layers:
        diff_ids.append(sha256_file(tar))
        digest = sha256_file(blob)
        size = blob.stat().st_size
        shutil.move(blob, blobs / digest[7:])
        media = "application/vnd.oci.image.layer.v1.tar+" + ("gzip" if kind == "gzip" else "zstd")
        descs.append({"mediaType": media, "digest": digest, "size": size})

    def put(obj: dict) -> tuple[str, int]:  # type: ignore[type-arg]
        raw = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        (blobs / digest[7:]).write_bytes(raw)
        return digest, len(raw)

    cdigest, csize = put(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    )
    mdigest, msize = put(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cdigest,
                "size": csize,
            },
            "layers": descs,
        }
    )
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": mdigest,
                        "size": msize,
                        "annotations": {"org.opencontainers.image.ref.name": "latest"},
                    }
                ],
            }
        )
    )


def build(name: str, out: Path, scale: float) -> None:
    layout = out / name
    if (layout / "index.json").exists():
        print(f"{name}: exists", file=sys.stderr)
        return
    work = out / f".work-{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    mb = int(500e6 * scale)
    specs: list[tuple[int, int, int | None, str]] = []  # (seed, bytes, n_files, kind)
    if name == "single":
        specs = [(1, mb, None, "gzip")]
    elif name == "zstd":
        specs = [(1, mb, None, "zstd")]
    elif name == "multi":
        specs = [(10 + i, mb // 2, None, "gzip") for i in range(4)]
    elif name == "small":
        specs = [(3, 0, int(150_000 * min(scale, 1.0)), "gzip")]
    elif name == "multi-newtop":
        specs = [(10 + i, mb // 2, None, "gzip") for i in range(3)] + [(99, mb // 25, None, "gzip")]
    elif name.startswith("growth-"):
        frac = {"growth-1": 0.25, "growth-2": 0.5, "growth-4": 1.0}[name]
        specs = [(1, int(mb * frac), None, "gzip")]
    else:
        raise SystemExit(f"unknown data set {name}")
    layers = []
    for seed, size, n_files, kind in specs:
        reuse = out / "multi" / f"layer{seed}.tar"
        if name == "multi-newtop" and reuse.exists():  # the same bytes as multi's layer
            tar = work / reuse.name
            shutil.copy(reuse, tar)
            layers.append((tar, compress(tar, kind), kind))
            continue
        tree = work / f"tree{seed}"
        make_tree(tree, seed, size, n_files)
        tar = work / f"layer{seed}.tar"
        tar_dir(tree, tar)
        shutil.rmtree(tree)
        layers.append((tar, compress(tar, kind), kind))
    write_layout(layout, layers)
    # keep the plain tars for baselines (bench_index reads them)
    for tar, _, _ in layers:
        shutil.move(tar, layout / tar.name)
    shutil.rmtree(work)
    print(
        f"{name}: {sum((layout / t.name).stat().st_size for t, _, _ in layers) / 1e6:.0f} MB "
        f"tar in {len(layers)} layer(s)",
        file=sys.stderr,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument(
        "--only",
        nargs="*",
        default=["single", "multi", "small", "zstd", "growth-1", "growth-2", "multi-newtop"],
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        build(name, args.out, args.scale)


if __name__ == "__main__":
    os.umask(0o022)
    main()
