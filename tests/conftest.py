"""Shared fixtures. The first lines make sure the tests import the *installed* clipcy."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `python -m pytest` puts the checkout on sys.path; the checkout has no compiled modules
# (unless built in place), so drop it and import the installed package instead.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != _ROOT]

import shutil  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

import clipcy  # noqa: E402

ROOT = _ROOT
DATA = ROOT / "tests" / "data"
CORPUS = ROOT.parent / "shared" / "corpus"
CORPUS_TOOLS = ("umoci", "skopeo", "bsdtar", "pigz", "zstd", "pzstd", "setfattr")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse a stale in-place build: a .so older than its .pyx (or any .pxd)."""
    pkg = Path(clipcy.__file__).resolve().parent
    if pkg != ROOT / "clipcy" or os.environ.get("CLIPCY_ALLOW_STALE"):
        return  # a regular install: nothing in the checkout is used
    sources = list(pkg.glob("*.pxd"))
    for so in pkg.glob("_*.*.so"):
        pyx = pkg / (so.name.split(".")[0] + ".pyx")
        newest = max([p.stat().st_mtime for p in sources + [pyx] if p.exists()], default=0)
        if newest > so.stat().st_mtime:
            pytest.exit(
                f"{so.name} is older than its sources: rebuild with "
                "'pip install --no-build-isolation -e .' (or set CLIPCY_ALLOW_STALE=1 to run anyway)",
                returncode=3,
            )


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The committed ../shared/corpus directory (expected trees, peers, tree.py)."""
    if not (CORPUS / "make-layouts.sh").is_file():
        pytest.skip("../shared/corpus not present")
    return CORPUS


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """The layouts and tars built by ../shared/corpus/make-layouts.sh (once per session).

    CLIPCY_CORPUS_OUT=DIR reuses a directory that make-layouts.sh already filled.
    """
    reuse = os.environ.get("CLIPCY_CORPUS_OUT")
    if reuse and (Path(reuse) / ".clipcy-corpus").exists():
        return Path(reuse)
    if os.geteuid() != 0:
        pytest.skip("building the corpus needs root")
    for tool in CORPUS_TOOLS:
        if shutil.which(tool) is None:
            pytest.skip(f"building the corpus needs {tool}")
    out = tmp_path_factory.mktemp("corpus")
    subprocess.run(
        [str(corpus_dir / "make-layouts.sh"), str(out)],
        check=True,
        env=dict(os.environ, SKIP_EXPECTED="1"),
        stdout=subprocess.DEVNULL,
    )
    return out
