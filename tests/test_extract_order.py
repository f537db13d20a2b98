"""extract of an image whose layers are not in path order (plain GNU tar walks directories in
readdir order): the tree is exact against umoci's unpack of the same layout (tree, metadata,
bytes), whole and for a subtree, from the layout directory and from a registry; and each
layer's compressed bytes are read once, not once per file from its nearest resume point.

The layers are made by GNU tar from a file list in readdir-like order (each directory before
its entries, siblings shuffled), with hardlinks, a sparse file, files larger than the
distance between two resume points, whiteouts, symlinks, a FIFO, owners and odd modes, and
added with `umoci raw add-layer`, which keeps the tar's order.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import remoteserv as rs  # noqa: E402
from corpus.cases import TREE_PY  # noqa: E402

from clipcy import open_archive  # noqa: E402
from clipcy.extract import extract_archive  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="owners and umoci unpack need root"),
    pytest.mark.skipif(not shutil.which("umoci") or not shutil.which("tar"),
                       reason="needs umoci and GNU tar"),
]
SUBTREE = "/copy/d1"


def _content(rnd: random.Random, size: int) -> bytes:
    """Half random, half text: gzip keeps about half, so the layer spans many resume points."""
    out = bytearray()
    while len(out) < size:
        out += rnd.randbytes(64) + b"line %d of a text that repeats itself\n" % len(out) * 2
    return bytes(out[:size])


def _stage(root: Path, layer: int, rnd: random.Random) -> None:
    top = root / "copy"
    for d in range(4):
        sub = top / f"d{d}" / f"s{layer % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(40):
            size = rnd.choice([0, 1, 100, 3000, 20000, 70000])
            (sub / f"f{i:03d}-{layer}").write_bytes(_content(rnd, size))
        (sub.parent / f"over{d}").write_bytes(_content(rnd, 5000 + layer))  # replaced per layer
    big = top / "d1" / f"big{layer}"
    big.write_bytes(_content(rnd, (3 << 20) + 17 * layer))  # spans several resume points
    os.chmod(big, 0o4750)
    os.chown(big, 1000, 1001)
    os.link(big, top / "d2" / f"big{layer}-link")
    (top / "d3" / f"s{layer % 2}" / "rel").symlink_to("../../d1")
    os.chmod(top / "d3", 0o555)
    if layer == 0:
        with open(top / "d1" / "sparse", "wb") as f:  # holes, data, a hole at the end
            f.seek(1 << 20)
            f.write(_content(rnd, 70000))
            f.seek(3 << 20)
            f.write(b"tail")
            f.truncate(5 << 20)
        os.mkfifo(top / "d0" / "fifo")
        (top / "d0" / "gone").write_bytes(b"removed by the next layer's whiteout\n")
        os.chmod(top / "d0" / "s0" / "f000-0", 0o000)
    elif layer == 1:
        (top / "d0" / ".wh.gone").write_bytes(b"")


def _readdir_list(root: Path, rnd: random.Random) -> list[str]:
    """Every path under root, each directory before its entries, siblings shuffled."""
    out: list[str] = []

    def walk(rel: str) -> None:
        names = sorted(os.listdir(root / rel) if rel else os.listdir(root))
        rnd.shuffle(names)
        for name in names:
            p = f"{rel}/{name}" if rel else name
            out.append(p)
            if (root / p).is_dir() and not (root / p).is_symlink():
                walk(p)

    walk("")
    return out


class Image:
    def __init__(self, tmp: Path) -> None:
        rnd = random.Random(21)
        self.layout = tmp / "layout"
        subprocess.run(["umoci", "init", "--layout", str(self.layout)], check=True)
        subprocess.run(["umoci", "new", "--image", f"{self.layout}:latest"], check=True)
        self.first_order: list[str] = []
        for layer in range(3):
            stage = tmp / f"stage{layer}"
            stage.mkdir()
            _stage(stage, layer, rnd)
            names = _readdir_list(stage, rnd)
            if layer == 0:
                self.first_order = names
            (tmp / "list").write_text("".join(n + "\n" for n in names))
            tar = tmp / f"layer{layer}.tar"
            # (posix: umoci reads its sparse files, not GNU's old 'S' entries)
            subprocess.run(["tar", "-C", str(stage), "--no-recursion", "--sparse",
                            "--numeric-owner", "--format=posix", "-cf", str(tar),
                            "-T", str(tmp / "list")], check=True)
            subprocess.run(["umoci", "raw", "add-layer", "--no-history", "--image",
                            f"{self.layout}:latest", str(tar)], check=True,
                           capture_output=True)
        bundle = tmp / "bundle"
        subprocess.run(["umoci", "unpack", "--image", f"{self.layout}:latest", str(bundle)],
                       check=True, capture_output=True)
        self.rootfs = bundle / "rootfs"
        self.archive = tmp / "image.clip"
        self.index(self.archive, [])

    def index(self, out: Path, extra: list[str]) -> None:
        r = subprocess.run([sys.executable, "-I", "-m", "clipcy", "-q", "index-layout",
                            "--layout", str(self.layout), "--out", str(out), "--no-cache",
                            "--checkpoint-mib", "0.25", *extra], capture_output=True)
        assert r.returncode == 0, r.stderr.decode()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return Image(tmp_path_factory.mktemp("unsorted"))


def _tree(root: Path, out: Path) -> Path:
    with open(out, "w") as f:
        subprocess.run([sys.executable, str(TREE_PY), "rootfs", str(root)], stdout=f, check=True)
    return out


def _differences(expected: Path, actual: Path, tmp: Path, *ignore: str) -> str:
    r = subprocess.run([sys.executable, str(TREE_PY), "compare",
                        str(_tree(expected, tmp / "expected.jsonl")),
                        str(_tree(actual, tmp / "actual.jsonl")),
                        *(a for f in ignore for a in ("--ignore", f))],
                       capture_output=True, text=True)
    return r.stdout if r.returncode else ""


def _clipctl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], capture_output=True,
                          timeout=600)


def test_the_layers_are_not_in_path_order(image: Image) -> None:
    """The premise: the first layer's entries are far from path order."""
    order = image.first_order
    assert sum(a > b for a, b in zip(order, order[1:], strict=False)) > len(order) // 4


@pytest.mark.parametrize("subtree", [None, SUBTREE], ids=["whole", "subtree"])
def test_extract_matches_umoci(image: Image, tmp_path: Path, subtree: str | None) -> None:
    dest = tmp_path / "out"
    r = _clipctl("extract", str(image.archive), "-C", str(dest), *([subtree] if subtree else []))
    assert r.returncode == 0, r.stderr.decode()
    if subtree is None:
        diffs = _differences(image.rootfs, dest, tmp_path)
    else:
        assert sorted(p.name for p in dest.iterdir()) == ["copy"]  # nothing else written
        # (the link count of a file whose other path lies outside the subtree: tar -x of
        # the subtree's members gives one too)
        diffs = _differences(image.rootfs / subtree[1:], dest / subtree[1:], tmp_path, "nlink")
    assert diffs == "", diffs


@pytest.mark.parametrize("subtree", [None, SUBTREE], ids=["whole", "subtree"])
def test_each_compressed_byte_is_read_once(image: Image, tmp_path: Path,
                                           subtree: str | None) -> None:
    """Data order: a layer's decoder runs on from file to file, so no span of a blob is
    fetched (and checked) twice; in path order this image's files send the reader back to
    an earlier resume point again and again."""
    with open_archive(image.archive) as arc:
        files, nbytes = extract_archive(arc, tmp_path / "out", [subtree] if subtree else None)
        readers = arc.layer_readers()
        # (the readers' VerifiedBlob: what it fetched from the blob file)
        fetched = [cast(Any, readers.reader(i)).blob.fetched for i in range(len(arc.layers))]
        sizes = [layer["size"] for layer in arc.layers]
    assert files > 10 and nbytes > 9 << 20
    for got, size in zip(fetched, sizes, strict=True):
        assert got <= size, (fetched, sizes)
    if subtree:  # the files of one directory of each layer: less than the blobs
        assert sum(fetched) < sum(sizes) * 0.8, (fetched, sizes)


@pytest.fixture(scope="module")
def registry(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image pushed to a docker-registry; yields an archive whose storage ref names it."""
    if not rs.have_tools():
        pytest.skip(f"needs {' and '.join(rs.TOOLS)}")
    tmp = tmp_path_factory.mktemp("unsorted-registry")
    reg = rs.Registry(tmp / "registry")
    try:
        r = reg.push(image.layout, "latest", "unsorted", "latest")
        assert r.returncode == 0, r.stderr
        out = tmp / "remote.clip"
        image.index(out, ["--storage-ref", f"docker://{reg.host}/unsorted"])
        yield out
    finally:
        reg.stop()


@pytest.mark.parametrize("subtree", [None, SUBTREE], ids=["whole", "subtree"])
def test_extract_from_registry_matches_umoci(image: Image, registry: Path, tmp_path: Path,
                                            subtree: str | None) -> None:
    dest = tmp_path / "out"
    r = _clipctl("extract", str(registry), "-C", str(dest), "--no-cache",
                 *([subtree] if subtree else []))
    assert r.returncode == 0, r.stderr.decode()
    if subtree is None:
        diffs = _differences(image.rootfs, dest, tmp_path)
    else:
        # (the link count of a file whose other path lies outside the subtree: tar -x of
        # the subtree's members gives one too)
        diffs = _differences(image.rootfs / subtree[1:], dest / subtree[1:], tmp_path, "nlink")
    assert diffs == "", diffs
