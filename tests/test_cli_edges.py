"""The CLI's rough edges a new user met: argument order, symlinks, messages, verify output,
demo paths, storage-ref checks (through clipctl itself and the Python API)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

import remoteserv as rs

from clipcy import open_archive
from clipcy.cli import main as clipctl

SAMPLE = Path(str(resources.files("clipcy") / "sample"))


@pytest.fixture(scope="module")
def sample_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clipcy import create_index_only_archive_from_oci_layout

    out = tmp_path_factory.mktemp("edges") / "sample.clip"
    create_index_only_archive_from_oci_layout(SAMPLE, "latest", out, file_digests=True)
    return out


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", "-m", "clipcy", *argv], capture_output=True,
                          text=True, cwd=cwd)


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert clipctl(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clipctl: error: "), err
    return err[0]


# -- extract: paths before or after -C ------------------------------------------------------


def test_extract_paths_after_options(sample_clip: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    r = _run("extract", str(sample_clip), "-C", str(a), "/etc/hello.d", "/usr/bin/hello")
    assert r.returncode == 0, r.stderr
    r = _run("extract", str(sample_clip), "/etc/hello.d", "-C", str(b), "/usr/bin/hello")
    assert r.returncode == 0, r.stderr
    for d in (a, b):
        got = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
        assert got == ["etc", "etc/hello.d", "etc/hello.d/10-greeting.conf", "usr", "usr/bin",
                       "usr/bin/hello"], got
    # an unknown option is still a usage error, and other commands take no stray words
    r = _run("extract", str(sample_clip), "-C", str(a), "/etc", "--bogus")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr
    r = _run("inspect", str(sample_clip), "extra")
    assert r.returncode == 2 and "unrecognized arguments: extra" in r.stderr


# -- demo -----------------------------------------------------------------------------------


def test_demo_says_its_directory_is_temporary(tmp_path: Path) -> None:
    r = _run("demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert "temporary directory, deleted" in last and "--keep DIR" in last, last
    tmp = last.split()[0]
    assert tmp in r.stdout.splitlines()[0] and not os.path.exists(tmp)


def test_demo_keep(tmp_path: Path) -> None:
    keep = tmp_path / "demo" / "here"
    r = _run("demo", "--keep", str(keep), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    clip = keep / "sample.clip"
    assert f"kept {clip}" in r.stdout and f"--out {clip}" in r.stdout
    with open_archive(clip) as arc:
        assert arc.stat("/usr/bin/hello").type == "file"
    r = _run("cat", str(clip), "/etc/hostname")
    assert r.returncode == 0 and r.stdout.strip()


# -- messages -------------------------------------------------------------------------------


def test_corrupt_blob_names_both_digests(sample_clip: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    layout = tmp_path / "img"
    shutil.copytree(SAMPLE, layout)
    with open_archive(sample_clip) as arc:
        digest = arc.layers[1]["digest"]
    blob = layout / "blobs" / "sha256" / digest[7:]
    data = bytearray(blob.read_bytes())
    data[-9] ^= 0xFF  # in the gzip trailer's crc: the stream still parses
    blob.write_bytes(bytes(data))
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    line = _error_line(capsys, ["index-layout", "--layout", str(layout), "--tag", "latest",
                                "--out", str(tmp_path / "x.clip"), "--no-cache"])
    assert f"blob digest is {actual}, expected {digest}" in line, line


def test_missing_layout_says_no_such_directory(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.clip")
    line = _error_line(capsys, ["index-layout", "--layout", str(tmp_path / "nope"), "--out", out])
    assert line.endswith("'" + str(tmp_path / "nope") + "': no such directory"), line
    (tmp_path / "file").write_text("x")
    line = _error_line(capsys, ["index-layout", "--layout", str(tmp_path / "file"), "--out", out])
    assert line.endswith(": not a directory"), line


def test_bar_and_summary_count_in_mib(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from clipcy.progress import TtyBar

    stream = io.StringIO()
    bar = TtyBar(stream)
    bar("start", {"layers": 1, "bytes": 3 << 20})
    bar("layer-progress", {"layer": 0, "bytes": 1 << 20})
    drawn = stream.getvalue()
    assert "1.0/3.0 MiB" in drawn and "MiB/s" in drawn and " MB" not in drawn, drawn
    bar.close()
    assert clipctl(["index-layout", "--layout", str(SAMPLE), "--tag", "latest", "--out",
                    str(tmp_path / "x.clip")]) == 0
    summary = capsys.readouterr().out
    assert re.search(r"KiB\), \d+ MiB/s$", summary.strip()), summary


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rs.Registry]:
    if not rs.have_tools():
        pytest.skip("docker-registry/skopeo absent")
    reg = rs.Registry(tmp_path_factory.mktemp("registry"))
    try:
        r = reg.push(SAMPLE, "latest", "sample", "latest")
        assert r.returncode == 0, r.stderr
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def remote_clip(registry: rs.Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("remote") / "remote.clip"
    assert clipctl(["index-layout", "--layout", str(SAMPLE), "--tag", "latest", "--out",
                    str(out), "--storage-ref", f"docker://{registry.host}/sample"]) == 0
    return out


def test_debug_cat_logs_a_span_cache_hit(remote_clip: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "spans")
    first = _run("-vv", "cat", str(remote_clip), "/etc/os-release", "--cache-dir", cache)
    assert first.returncode == 0, first.stderr
    assert "GET " in first.stderr and "span cache hit" not in first.stderr
    assert "cat /etc/os-release done in" in first.stderr
    second = _run("-vv", "cat", str(remote_clip), "/etc/os-release", "--cache-dir", cache)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert "span cache hit: sha256:" in second.stderr and "GET " not in second.stderr, \
        second.stderr
