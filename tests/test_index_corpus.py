"""index-layout on every layout, tag and platform of the test corpus (tests/corpus/build.sh):
zero export differences.

The expected trees were unpacked by an independent implementation (umoci); tree.py compares.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from corpus.cases import TREE_PY, TREES, expected_name, tree_id

from clipcy.cli import main as clipctl


def _compare(expected: Path, actual: Path) -> str:
    out = subprocess.run(
        [sys.executable, str(TREE_PY), "compare", str(expected), str(actual)],
        capture_output=True,
        text=True,
    )
    return out.stdout if out.returncode else ""


@pytest.mark.parametrize("layout,tag,platform", TREES, ids=[tree_id(*t) for t in TREES])
def test_export_matches_expected_tree(
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    layout: str,
    tag: str,
    platform: str | None,
) -> None:
    archive = tmp_path / "image.clip"
    # --file-digests: the export then carries every file's sha256, compared with the oracle's
    argv = ["index-layout", "--layout", str(corpus / layout), "--tag", tag, "--out", str(archive),
            "--file-digests"]
    if platform:
        argv += ["--platform", platform]
    assert clipctl(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert clipctl(["export", str(archive)]) == 0
    actual = tmp_path / "export.jsonl"
    actual.write_text(capsys.readouterr().out, encoding="utf-8", errors="surrogateescape")
    diffs = _compare(corpus / "expected" / expected_name(layout, tag, platform), actual)
    assert diffs == "", diffs


def test_python_api_summary(corpus: Path, tmp_path: Path) -> None:
    from clipcy import create_index_only_archive_from_oci_layout, open_archive

    out = tmp_path / "basic.clip"
    summary = create_index_only_archive_from_oci_layout(corpus / "basic", "latest", out)
    assert summary.layer_count == 3
    assert summary.archive_size == out.stat().st_size
    assert summary.manifest_digest.startswith("sha256:")
    with open_archive(out) as arc:
        assert arc.metadata["manifest_digest"] == summary.manifest_digest
        assert len(arc.layers) == 3
        assert arc.node_count == summary.node_count
        motd = arc.lookup("/etc/motd")
        assert motd is not None and motd.type == "file"
        assert b"etc" in arc.listdir("/")
        assert [n.path for n in arc.walk()] == sorted(n.path for n in arc.walk())


def test_reproducible(corpus: Path, tmp_path: Path) -> None:
    from clipcy import create_index_only_archive_from_oci_layout

    a, b = tmp_path / "a.clip", tmp_path / "b.clip"
    create_index_only_archive_from_oci_layout(corpus / "multimember", "latest", a, workers=2)
    create_index_only_archive_from_oci_layout(corpus / "multimember", "latest", b, workers=1)
    assert a.read_bytes() == b.read_bytes()


def test_big_layout_size_target(corpus: Path, tmp_path: Path) -> None:
    """Index size target before resume points: <= 0.2% of the compressed image."""
    from clipcy import create_index_only_archive_from_oci_layout, open_archive

    out = tmp_path / "big.clip"
    summary = create_index_only_archive_from_oci_layout(corpus / "big", "latest", out)
    with open_archive(out) as arc:
        sizes = arc.section_sizes()
        nodes_bytes = sizes["node index"] + sizes["node blocks"]
    assert nodes_bytes <= 0.002 * summary.image_size, (nodes_bytes, summary.image_size)
    assert summary.archive_size <= 0.01 * summary.image_size


def test_multiarch_default_platform_is_host(corpus: Path, tmp_path: Path) -> None:
    import platform as host

    from clipcy import create_index_only_archive_from_oci_layout, open_archive
    from clipcy.image.layout import Platform

    if host.machine() not in ("x86_64", "aarch64"):
        pytest.skip("the corpus has amd64 and arm64 images only")
    out = tmp_path / "m.clip"
    create_index_only_archive_from_oci_layout(corpus / "multiarch", "latest", out)
    with open_archive(out) as arc:
        assert arc.metadata["platform"] == str(Platform.host())


def test_docker_media_types_and_zstd_recorded(corpus: Path, tmp_path: Path) -> None:
    from clipcy import create_index_only_archive_from_oci_layout, open_archive

    for name, compression in (("docker", "gzip"), ("zstd", "zstd"), ("plain", "plain")):
        out = tmp_path / f"{name}.clip"
        create_index_only_archive_from_oci_layout(corpus / name, "latest", out)
        with open_archive(out) as arc:
            assert {x["compression"] for x in arc.layers} == {compression}
            assert all(arc.access(i).kind == compression for i in range(len(arc.layers)))
