"""The CLI's rough edges a new user met: argument order, symlinks, messages, verify output,
demo paths, storage-ref checks (through clipctl itself and the Python API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

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
