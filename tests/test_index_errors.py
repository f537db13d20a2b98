"""index-layout's error paths through the CLI: one line, exit 1, no archive left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clipcy.cli import main as clipctl


def _copy(corpus: Path, name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(corpus / name, dst)
    return dst


def _index(layout: Path | str, out: Path, *extra: str, tag: str | None = "latest") -> list[str]:
    argv = ["index-layout", "--layout", str(layout), "--out", str(out), *extra]
    if tag is not None:
        argv += ["--tag", tag]
    return argv


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], match: str) -> str:
    assert clipctl(argv) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("clipctl: error: "), err
    assert "Traceback" not in err
    assert match in lines[-1], lines[-1]
    return lines[-1]


def _manifest(layout: Path, tag: str = "latest") -> tuple[dict, dict]:  # type: ignore[type-arg]
    index = json.loads((layout / "index.json").read_text())
    desc = next(
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    )
    man = json.loads((layout / "blobs" / "sha256" / desc["digest"][7:]).read_text())
    return desc, man


def _no_output(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith("." + out.name)]


def test_missing_index_json(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = _copy(corpus, "basic", tmp_path)
    (layout / "index.json").unlink()
    out = tmp_path / "x.clip"
    _fails(capsys, _index(layout, out), "failed to read index.json")
    _no_output(tmp_path, out)


def test_not_a_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, _index(tmp_path / "nope", tmp_path / "x.clip"), "no such directory")
    (tmp_path / "file").write_text("x")
    _fails(capsys, _index(tmp_path / "file", tmp_path / "x.clip"), "not a directory")
    _fails(capsys, _index(tmp_path, tmp_path / "x.clip"), "not an OCI image layout")


def test_unknown_tag_lists_available(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _fails(
        capsys,
        _index(corpus / "basic", tmp_path / "x.clip", tag="nope"),
        "no manifest found for tag",
    )
    assert "available: latest, v1" in line


def test_no_tag_with_many_manifests(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails(capsys, _index(corpus / "basic", tmp_path / "x.clip", tag=None), "give a tag")


def test_missing_layer_blob(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = _copy(corpus, "basic", tmp_path)
    _, man = _manifest(layout)
    digest = man["layers"][1]["digest"]
    (layout / "blobs" / "sha256" / digest[7:]).unlink()
    out = tmp_path / "x.clip"
    _fails(capsys, _index(layout, out), f"failed to open layer blob {digest}")
    _no_output(tmp_path, out)


def test_corrupt_layer_blob_byte(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = _copy(corpus, "basic", tmp_path)
    _, man = _manifest(layout)
    blob = layout / "blobs" / "sha256" / man["layers"][0]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x55
    blob.write_bytes(bytes(data))
    out = tmp_path / "x.clip"
    out.write_bytes(b"previous archive")
    _fails(capsys, _index(layout, out), "layer 0")
    assert out.read_bytes() == b"previous archive"  # an existing output is untouched


def test_trailing_garbage_after_gzip(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Garbage appended to a blob (descriptor updated) is caught by the decompressor."""
    layout = _copy(corpus, "basic", tmp_path)
    desc, man = _manifest(layout)
    old = man["layers"][2]["digest"]
    data = (layout / "blobs" / "sha256" / old[7:]).read_bytes() + b"garbage!"
    import hashlib

    new = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / new[7:]).write_bytes(data)
    man["layers"][2].update(digest=new, size=len(data))
    raw = json.dumps(man).encode()
    mdigest = "sha256:" + hashlib.sha256(raw).hexdigest()
    (layout / "blobs" / "sha256" / mdigest[7:]).write_bytes(raw)
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if m["digest"] == desc["digest"]:
            m.update(digest=mdigest, size=len(raw))
    (layout / "index.json").write_text(json.dumps(index))
    _fails(capsys, _index(layout, tmp_path / "x.clip"), "layer 2")


def test_diff_id_mismatch(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config whose diff_id disagrees with the layer: an error, not an archive."""
    import hashlib

    layout = _copy(corpus, "basic", tmp_path)
    desc, man = _manifest(layout)
    cfg_path = layout / "blobs" / "sha256" / man["config"]["digest"][7:]
    cfg = json.loads(cfg_path.read_text())
    cfg["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64
    raw = json.dumps(cfg).encode()
    cdigest = "sha256:" + hashlib.sha256(raw).hexdigest()
    (layout / "blobs" / "sha256" / cdigest[7:]).write_bytes(raw)
    man["config"].update(digest=cdigest, size=len(raw))
    mraw = json.dumps(man).encode()
    mdigest = "sha256:" + hashlib.sha256(mraw).hexdigest()
    (layout / "blobs" / "sha256" / mdigest[7:]).write_bytes(mraw)
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if m["digest"] == desc["digest"]:
            m.update(digest=mdigest, size=len(mraw))
    (layout / "index.json").write_text(json.dumps(index))
    out = tmp_path / "x.clip"
    _fails(capsys, _index(layout, out), "diff_id")
    _no_output(tmp_path, out)
    # --no-verify indexes it anyway
    assert clipctl(_index(layout, out, "--no-verify")) == 0


def test_manifest_blob_tampered(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = _copy(corpus, "basic", tmp_path)
    desc, _ = _manifest(layout)
    path = layout / "blobs" / "sha256" / desc["digest"][7:]
    path.write_bytes(path.read_bytes().replace(b"schemaVersion", b"schemaVersiom"))
    _fails(capsys, _index(layout, tmp_path / "x.clip"), f"manifest blob {desc['digest']}")


def test_digest_path_traversal(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = _copy(corpus, "basic", tmp_path)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["digest"] = "sha256:../../../../etc/passwd"
    (layout / "index.json").write_text(json.dumps(index))
    _fails(capsys, _index(layout, tmp_path / "x.clip"), "invalid digest")


def test_ref_forms(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref_out = tmp_path / "ref.clip"
    assert clipctl(_index(f"oci:{corpus / 'basic'}:latest", ref_out, tag=None)) == 0
    plain = tmp_path / "plain.clip"
    assert clipctl(_index(corpus / "basic", plain)) == 0
    uri = tmp_path / "uri.clip"
    assert clipctl(_index(f"oci-layout://{corpus / 'basic'}:latest", uri, tag=None)) == 0
    desc, _ = _manifest(corpus / "basic")
    by_digest = tmp_path / "digest.clip"
    assert clipctl(_index(f"{corpus / 'basic'}@{desc['digest']}", by_digest, tag=None)) == 0
    by_flag = tmp_path / "flag.clip"
    assert clipctl(_index(corpus / "basic", by_flag, "--digest", desc["digest"], tag=None)) == 0
    capsys.readouterr()
    # the source ref differs, the tree does not
    from clipcy import open_archive

    trees = []
    for p in (ref_out, plain, uri, by_digest, by_flag):
        with open_archive(p) as arc:
            trees.append([(n.path, n.ino, n.offset) for n in arc.walk()])
    assert all(t == trees[0] for t in trees)
    _fails(
        capsys, _index(f"oci:{corpus / 'basic'}:latest", tmp_path / "x.clip", tag="v1"), "disagrees"
    )


def test_fully_qualified_tag_suffix(corpus: Path, tmp_path: Path) -> None:
    from clipcy import create_index_only_archive_from_oci_layout

    s = create_index_only_archive_from_oci_layout(corpus / "manytags", "1.2", tmp_path / "a.clip")
    t = create_index_only_archive_from_oci_layout(
        corpus / "manytags", "latest", tmp_path / "b.clip"
    )
    assert s.manifest_digest == t.manifest_digest


def test_platform_not_found(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails(
        capsys,
        _index(corpus / "multiarch", tmp_path / "x.clip", "--platform", "linux/s390x"),
        "no manifest for platform linux/s390x",
    )


def test_cli_subprocess_one_line(corpus: Path, tmp_path: Path) -> None:
    """Through the installed entry point: exit 1, one line, and CLIP_LOG_LEVEL=debug logs steps."""
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-m",
            "clipcy",
            *_index(corpus / "basic", tmp_path / "x.clip", tag="nope"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("clipctl: error: ")
    ok = subprocess.run(
        [sys.executable, "-I", "-m", "clipcy", *_index(corpus / "basic", tmp_path / "y.clip")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, CLIP_LOG_LEVEL="debug"),
    )
    assert ok.returncode == 0, ok.stderr
    assert "DEBUG resolve layout done in" in ok.stderr


def test_usage_error_exit_2(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-I", "-m", "clipcy", "index-layout"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "required" in out.stderr
