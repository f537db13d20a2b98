"""Packaging: the man page is installed, and sdist/wheel build and install in a fresh venv.

The build test is slow (it compiles twice); it is marked `slow` and CI runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import clipcy
from clipcy.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
INSTALLED_MAN = Path(sys.prefix) / "share" / "man" / "man1" / "clipctl.1"
EDITABLE = Path(clipcy.__file__).resolve().parent == ROOT / "clipcy"


def test_every_subcommand_help_ends_with_examples() -> None:
    parser = build_parser()
    assert "examples:" in parser.format_help()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        text = p.format_help()
        assert "examples:" in text, name
        assert text.rstrip().splitlines()[-1].strip().startswith("clipctl"), name


@pytest.mark.skipif(EDITABLE, reason="an editable install does not install the man page")
def test_man_page_installed() -> None:
    assert INSTALLED_MAN.is_file(), f"no man page at {INSTALLED_MAN}"
    page = INSTALLED_MAN.read_text()
    for needle in (
        "index-layout",
        "ENVIRONMENT",
        "CLIP_LOG_LEVEL",
        "CLIPCY_PUREPYTHON",
        "EXIT STATUS",
        "EXAMPLES",
        "FILES",
    ):
        assert needle in page, needle
    if shutil.which("man"):
        env = dict(
            os.environ,
            PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            MANPAGER="cat",
            PAGER="cat",
        )
        out = subprocess.run(["man", "clipctl"], capture_output=True, text=True, env=env)
        assert out.returncode == 0 and "index-layout" in out.stdout, out.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="needs the source tree")
def test_build_sdist_and_wheel_then_install_sdist_in_fresh_venv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            "build",
            "dist",
            "*.egg-info",
            "*.so",
            "*.c",
            "*.html",
            "man",
            ".git",
            "perf/data",
            "perf/out",
            "__pycache__",
            ".*_cache",
            ".hypothesis",
        ),
    )
    dist = tmp_path / "dist"
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(src)],
        check=True,
        capture_output=True,
        env=env,
    )
    (sdist,) = dist.glob("clipcy-*.tar.gz")
    (wheel,) = dist.glob("clipcy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for mod in ("tar/_tarparse", "layers/_checkpoint", "layers/_inflate", "archive/_writer",
                "archive/_nodeblock", "image/_merge"):  # every compiled module, with its stub
        assert any(n.startswith(f"clipcy/{mod}.") and n.endswith(".so") for n in names), mod
        assert f"clipcy/{mod}.pyi" in names, mod
    assert not [n for n in names if n.endswith((".pyx", ".pxd", ".c"))]
    assert any(n.endswith("share/man/man1/clipctl.1") for n in names)
    assert "clipcy/py.typed" in names
    assert any(n.startswith("clipcy/sample/blobs/sha256/") for n in names)
    # the sdist in a fresh venv: build deps come from the registry, nothing from this venv
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(sdist)], check=True, capture_output=True
    )
    clean = {k: v for k, v in os.environ.items() if k != "CLIPCY_PUREPYTHON"}
    out = subprocess.run(
        [str(env_dir / "bin" / "clipctl"), "--version"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean,
    )
    assert "compiled (Cython)" in out.stdout
    assert "inflate: zlib-ng 2." in out.stdout  # the fast engine arrives with pip install
    demo = subprocess.run(
        [str(env_dir / "bin" / "clipctl"), "demo"], capture_output=True, text=True, cwd=tmp_path
    )
    assert demo.returncode == 0, demo.stderr
    no_cython = subprocess.run([str(py), "-c", "import Cython"], capture_output=True)
    assert no_cython.returncode != 0  # the installed package needs no Cython at run time
    assert (env_dir / "share" / "man" / "man1" / "clipctl.1").is_file()
