"""Building leaves no build/ directory in the source tree (its build base is under $TMPDIR)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # compiles every extension (minutes on a loaded machine); CI runs it
@pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="needs the source tree")
def test_build_writes_outside_the_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    # the generated .c files come along, so nothing is cythonized (build_py compiles nothing)
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "*.so", "man", ".git", "perf", "fuzz", "__pycache__",
        ".*_cache", ".hypothesis"))
    for c in src.rglob("*.c"):  # newer than every .pyx/.pxd: cythonize has nothing to do
        os.utime(c)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py"], cwd=src,
                       capture_output=True, text=True, env=dict(os.environ, TMPDIR=str(tmp)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (src / "build").exists()
    (base,) = tmp.glob(f"clipcy-build-{os.getuid()}-*")
    (built,) = base.glob("lib*/clipcy/cli.py")
    assert built.read_bytes() == (src / "clipcy" / "cli.py").read_bytes()
    # a build base the user sets still wins (setup.cfg, as --build-base does)
    (src / "setup.cfg").write_text("[build]\nbuild_base = here\n")
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py"], cwd=src,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert list((src / "here").glob("lib*/clipcy/cli.py"))
