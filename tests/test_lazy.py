"""Lazy reads, extract and verify on the corpus layouts: bytes equal the unpacked reference."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from corpus.cases import TREE_PY

from clipcy import create_index_only_archive_from_oci_layout, open_archive
from clipcy.cli import main as clipctl

LAYOUTS = ["basic", "multimember", "zstd", "zstd-multiframe", "zstd-skippable", "plain", "docker"]


def _expected(corpus: Path, name: str) -> dict[str, dict[str, Any]]:
    recs = {}
    with open(corpus / "expected" / name, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            recs[rec["path"]] = rec
    return recs


@pytest.fixture(scope="module")
def archives(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("lazy")
    arcs = {}
    for name in LAYOUTS:
        arcs[name] = out / f"{name}.clip"
        # small spans: many resume points, most of them not byte-aligned
        create_index_only_archive_from_oci_layout(
            corpus / name, "latest", arcs[name], checkpoint_span=256 << 10
        )
    return arcs


@pytest.mark.parametrize("name", LAYOUTS)
def test_every_file_reads_back(archives: dict[str, Path], corpus: Path, name: str) -> None:
    expected = _expected(corpus, f"{name}@latest.jsonl")
    files = {p: r for p, r in expected.items() if r["type"] == "file"}
    with open_archive(archives[name]) as arc:
        for path, rec in files.items():
            with arc.open(path) as f:
                data = f.read()
            assert len(data) == rec["size"], path
            assert hashlib.sha256(data).hexdigest() == rec["sha256"], path


@pytest.mark.parametrize("name", ["basic", "multimember", "zstd-multiframe"])
def test_random_seek_read(archives: dict[str, Path], corpus: Path, name: str) -> None:
    rng = random.Random(name)
    expected = _expected(corpus, f"{name}@latest.jsonl")
    big = sorted((r["size"], p) for p, r in expected.items() if r["type"] == "file")[-3:]
    with open_archive(archives[name]) as arc:
        for _, path in big:
            with arc.open(path) as f:
                whole = f.read()
            f = arc.open(path)
            for _ in range(60):
                pos = rng.randrange(0, len(whole) + 10)
                n = rng.choice([1, 7, 512, 4096, 65536, 300_000])
                assert f.seek(pos) == pos
                got = f.read(n)
                assert got == whole[pos : pos + n], (path, pos, n)
                assert f.tell() == pos + len(got)
            buf = bytearray(1000)
            f.seek(-1000, os.SEEK_END)
            assert f.readinto(buf) == 1000 and bytes(buf) == whole[-1000:]
            f.close()


def test_threads_read_different_files(archives: dict[str, Path], corpus: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    expected = _expected(corpus, "multimember@latest.jsonl")
    files = [(p, r["sha256"]) for p, r in expected.items() if r["type"] == "file"]
    with open_archive(archives["multimember"]) as arc:

        def digest(path: str) -> str:
            with arc.open(path) as f:
                return hashlib.sha256(f.read()).hexdigest()

        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(digest, [p for p, _ in files]))
    assert got == [d for _, d in files]


def test_cat_follows_symlinks(
    archives: dict[str, Path], corpus: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    expected = _expected(corpus, "basic@latest.jsonl")
    assert clipctl(["cat", str(archives["basic"]), "/usr/bin/vi"]) == 0  # vi -> editor -> vi-real
    out = capsysbinary.readouterr().out
    assert hashlib.sha256(out).hexdigest() == expected["/usr/bin/vi-real"]["sha256"]


def test_missing_blob_is_one_line(
    archives: dict[str, Path], corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = tmp_path / "moved"
    shutil.copytree(corpus / "basic", layout)
    with open_archive(archives["basic"]) as arc:
        digest = arc.layers[0]["digest"]
    (layout / "blobs" / "sha256" / digest[7:]).unlink()
    assert clipctl(["cat", str(archives["basic"]), "/etc/passwd", "--layout", str(layout)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clipctl: error: ") and digest in err and err.count("\n") == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="owners, devices and xattrs need root")
@pytest.mark.parametrize("name", ["basic", "zstd-multiframe"])
def test_extract_reproduces_tree(
    archives: dict[str, Path], corpus: Path, tmp_path: Path, name: str
) -> None:
    dest = tmp_path / "rootfs"
    assert clipctl(["extract", str(archives[name]), "-C", str(dest)]) == 0
    actual = tmp_path / "actual.jsonl"
    with open(actual, "w") as f:
        subprocess.run([sys.executable, str(TREE_PY), "rootfs", str(dest)], stdout=f, check=True)
    expected = corpus / "expected" / f"{name}@latest.jsonl"
    out = subprocess.run(
        [sys.executable, str(TREE_PY), "compare", str(expected), str(actual)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout


def test_extract_subtree(archives: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "sub"
    assert clipctl(["extract", str(archives["basic"]), "/etc", "-C", str(dest)]) == 0
    assert (dest / "etc" / "passwd").is_file()
    assert not (dest / "usr").exists()


def test_verify_ok_and_detects_changed_blob(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = tmp_path / "mm"
    shutil.copytree(corpus / "multimember", layout)
    arc = tmp_path / "mm.clip"
    assert (
        clipctl(
            [
                "index-layout",
                "--layout",
                str(layout),
                "--tag",
                "latest",
                "--out",
                str(arc),
                "--file-digests",
                "--checkpoint-mib",
                "0.5",
            ]
        )
        == 0
    )
    assert clipctl(["verify", str(arc)]) == 0
    capsys.readouterr()
    with open_archive(arc) as a:
        digest = a.layers[1]["digest"]
    blob = layout / "blobs" / "sha256" / digest[7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 1
    blob.write_bytes(bytes(data))
    assert clipctl(["verify", str(arc)]) == 1
    err = capsys.readouterr().err
    assert "layer 1" in err and err.strip().splitlines()[-1].startswith(
        "clipctl: error: verify failed"
    )


def test_tar_slip_contained(tmp_path: Path, layout_factory: Any, tar_factory: Any) -> None:
    """Names with '..', absolute names and a symlink that points outside stay inside DEST."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tar1 = tar_factory(
        [
            ("../../escape.txt", "file", b"x"),
            ("/abs.txt", "file", b"y"),
            ("link", "symlink", str(outside).encode()),
            ("link/payload", "file", b"z"),
            ("dotdot/../../up.txt", "file", b"w"),
            ("hl", "hardlink", b"../../escape.txt"),
        ]
    )
    layout = layout_factory(tmp_path / "layout", [tar1])
    arc = tmp_path / "slip.clip"
    assert (
        clipctl(["index-layout", "--layout", str(layout), "--tag", "latest", "--out", str(arc)])
        == 0
    )
    dest = tmp_path / "dest"
    assert clipctl(["extract", str(arc), "-C", str(dest)]) == 0
    assert list(outside.iterdir()) == []
    assert (dest / "escape.txt").read_bytes() == b"x"
    assert (dest / "abs.txt").read_bytes() == b"y"
    assert (dest / "up.txt").read_bytes() == b"w"
    # "link/payload" goes where the symlink points *inside the image* (as containerd and
    # umoci resolve it): DEST + the absolute target; the link itself is left as it was
    assert os.readlink(dest / "link") == str(outside)
    inside = dest / str(outside).lstrip("/") / "payload"
    assert inside.read_bytes() == b"z"
    assert os.path.samefile(dest / "hl", dest / "escape.txt")


def test_hostile_tree_under_symlink_refused(tmp_path: Path) -> None:
    """A tree with a node under a symlink: the writer refuses to encode it, and the extractor
    (defence in depth, e.g. for archives written by other tools) refuses to write through it."""
    from clipcy.archive.files import BlobStore
    from clipcy.archive.writer import encode_archive
    from clipcy.errors import ClipError
    from clipcy.extract import Extractor
    from clipcy.node import Node

    outside = tmp_path / "outside"
    outside.mkdir()
    nodes = [
        Node(b"/", "dir", 0o755, 0, 0, 0, ino=1, nlink=2),
        Node(b"/evil", "symlink", 0o777, 0, 0, 0, linkname=str(outside).encode(), ino=2),
        Node(b"/evil/x", "fifo", 0o644, 0, 0, 0, ino=3),
    ]
    with pytest.raises(ClipError, match="parent directory"):
        encode_archive({"layers": []}, nodes, [])
    ex = Extractor(tmp_path / "d", BlobStore({"storage_ref": str(tmp_path)}, None))
    try:
        for node in nodes[:2]:
            ex.extract(node)
        with pytest.raises(ClipError, match="refusing to extract through non-directory"):
            ex.extract(nodes[2])
        with pytest.raises(ClipError, match="unsafe path"):
            ex.extract(Node(b"/../up", "fifo", 0o644, 0, 0, 0))
    finally:
        ex.close()
    assert list(outside.iterdir()) == []
