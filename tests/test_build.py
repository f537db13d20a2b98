"""The compiled core is what runs, unless CLIPCY_PUREPYTHON asks for the twin."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

import clipcy
from clipcy._select import PUREPYTHON

COMPILED = (
    "clipcy.tar._tarparse", "clipcy.layers._checkpoint", "clipcy.layers._inflate",
    "clipcy.archive._writer", "clipcy.image._merge",
)


@pytest.mark.skipif(PUREPYTHON, reason="CLIPCY_PUREPYTHON is set")
@pytest.mark.parametrize("name", COMPILED)
def test_compiled_module_in_use(name: str) -> None:
    mod = importlib.import_module(name)
    assert mod.__file__ is not None
    assert mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (
        f"{name} is not compiled ({mod.__file__}); clipcy from {clipcy.__file__}"
    )


@pytest.mark.skipif(PUREPYTHON, reason="CLIPCY_PUREPYTHON is set")
def test_selectors_pick_cython() -> None:
    from clipcy.archive import writer
    from clipcy.image import merge
    from clipcy.tar import tarparse
    assert tarparse.IMPLEMENTATION == "cython", clipcy.__file__
    assert writer.IMPLEMENTATION == "cython", clipcy.__file__
    assert merge.IMPLEMENTATION == "cython", clipcy.__file__


def _run(code: str, tmp_path: Path, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        env=dict(os.environ, **env),
    )
    return out.stdout.strip()


def test_env_var_forces_twin(tmp_path: Path) -> None:
    code = (
        "from clipcy.image import merge; from clipcy.tar import tarparse; "
        "from clipcy.archive import writer; "
        "print(tarparse.IMPLEMENTATION, writer.IMPLEMENTATION, merge.IMPLEMENTATION)"
    )
    assert _run(code, tmp_path, CLIPCY_PUREPYTHON="1") == "python python python"


def test_local_reads_do_not_import_the_http_stack(tmp_path: Path) -> None:
    """urllib3 and friends cost ~28 ms of start-up: only remote stores may import them."""
    sample = Path(clipcy.__file__).parent / "sample"
    code = (
        "import sys\n"
        "from clipcy import create_index_only_archive_from_oci_layout as index, open_archive\n"
        f"index({str(sample)!r}, 'latest', 'a.clip', cache_dir='cache')\n"
        "with open_archive('a.clip') as a:\n"
        "    n = next(n for n in a.walk() if n.type == 'file' and n.size)\n"
        "    assert a.open(n.path).read()\n"
        "print(sorted(m for m in ('urllib3', 'http.client', 'email.utils', 'subprocess')\n"
        "             if m in sys.modules))\n"
    )
    assert _run(code, tmp_path) == "[]"


def test_clipctl_version(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-I", "-m", "clipcy", "--version"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.startswith(f"clipctl {clipcy.__version__}\n")
    assert "core: " in out.stdout and "zlib: " in out.stdout
    expected = "pure Python" if PUREPYTHON else "compiled (Cython)"
    assert expected in out.stdout


def test_console_script_installed() -> None:
    script = Path(sys.executable).parent / "clipctl"
    assert script.exists(), "the clipctl console script is not installed next to python"
    out = subprocess.run([str(script), "--help"], check=True, capture_output=True, text=True)
    assert "index-layout" in out.stdout


def _mount_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("mount: ")]
    assert len(lines) == 1, text
    return lines[0]


def test_version_says_whether_mount_is_available(tmp_path: Path) -> None:
    from clipcy.fusemount import available

    out = subprocess.run([sys.executable, "-I", "-m", "clipcy", "--version"], cwd=tmp_path,
                         check=True, capture_output=True, text=True).stdout
    line = _mount_line(out)
    if available():  # built with libfuse3, which loads, and /dev/fuse exists
        assert line.startswith("mount: available (libfuse3 3."), line
        assert "; but " not in line or os.geteuid() != 0, line
    else:
        assert "available (" not in line or "; but no /dev/fuse" in line, line
        assert "apt-get install" in line or "modprobe" in line, line


def test_version_names_packages_when_mount_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build without libfuse3's headers: --version says what to install."""
    from clipcy import version

    monkeypatch.setitem(sys.modules, "clipcy.fusemount._fuse", None)  # as if never built
    line = _mount_line(version.version_text())
    assert line.startswith("mount: not built ("), line
    assert "apt-get install fuse3 libfuse3-dev" in line and "wheel" in line, line
