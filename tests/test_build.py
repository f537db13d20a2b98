"""The compiled core is what runs, unless CLIPCY_PUREPYTHON asks for the twin."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import subprocess
import sys
import time
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


# What a local `clipctl cat` must not import (python -X importtime: each costs 1 to 8 ms of
# its start-up): the remote stores' stack, logging (imported when a message is logged at an
# enabled level), what other commands or writers need, dataclasses (with inspect, ast, dis,
# tokenize: clipcy._fields), typing (TYPE_CHECKING = False), zstandard's package with
# platform (clipcy._zstd loads its C backend alone), zlib_ng's with gzip (the inflate
# engine dlopens its extension module's file), threading (a lock is _thread's) and contextlib.
NOT_FOR_A_LOCAL_CAT = (
    "urllib3", "http.client", "email", "subprocess", "concurrent.futures", "ssl",
    "logging", "traceback", "hashlib", "shutil", "bz2", "lzma", "tempfile", "random",
    "base64", "importlib.resources", "importlib.metadata", "textwrap", "string",
    "pathlib", "urllib.parse", "ipaddress", "fnmatch",
    "dataclasses", "inspect", "ast", "dis", "tokenize", "typing", "zstandard", "platform",
    "zlib_ng", "gzip", "threading", "contextlib",
    "clipcy.storage.registry", "clipcy.storage.http", "clipcy.export", "clipcy.progress",
)


def test_local_cat_imports_only_what_it_needs(tmp_path: Path) -> None:
    sample = Path(clipcy.__file__).parent / "sample"
    _run(f"from clipcy import create_index_only_archive_from_oci_layout as index\n"
         f"index({str(sample)!r}, 'latest', 'a.clip', cache_dir='cache')\n", tmp_path)
    code = (
        "import sys\n"
        "before = set(sys.modules)  # (an editable install's finder loads pathlib)\n"
        "from clipcy.cli import main\n"
        "rc = main(['cat', 'a.clip', '/etc/os-release'])\n"
        f"print(rc, sorted(m for m in {NOT_FOR_A_LOCAL_CAT!r}\n"
        "                  if m in sys.modules and m not in before), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, check=True,
                         capture_output=True, text=True, env=dict(os.environ))
    assert out.stdout.startswith("NAME="), out.stdout
    assert out.stderr.strip() == "0 []"


@pytest.mark.parametrize(("setup", "shown"), [
    ("", ["WARNING w 1"]),
    ("verbose=1", ["WARNING w 1", "INFO i 2"]),
    ("quiet=True", []),
])
def test_logging_imported_after_setup_is_configured(tmp_path: Path, setup: str,
                                                     shown: list[str]) -> None:
    """setup_logging leaves logging unimported; a module that imports it later (a remote
    store, the mount) logs in clipctl's format, at the level asked for."""
    code = (
        "import sys\n"
        "from clipcy.logs import setup_logging\n"
        f"setup_logging({setup})\n"
        "assert 'logging' not in sys.modules\n"
        "import logging\n"
        "logging.getLogger('clipcy.storage.http').warning('w %d', 1)\n"
        "logging.getLogger('clipcy').info('i %d', 2)\n"
        "logging.getLogger('clipcy.x').debug('d %d', 3)\n"
    )
    err = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stderr
    lines = err.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == shown, err
    for line in lines:
        time.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S")


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


@pytest.mark.parametrize("path", ["", ".", "./", "/", "//", "///", "////a", "//a//b/", "a",
                                  "./a/./b/.", "a//b", "/a/../b/", "..", "a/.../b", ". /x"])
def test_local_store_paths_are_pathlibs(path: str) -> None:
    """The local store spells its paths as pathlib does, without importing it."""
    from clipcy.storage.local import LocalStore, _path_text

    assert _path_text(path) == str(Path(path))
    store = LocalStore(path or ".")
    digest = "sha256:" + "ab" * 32
    assert store.blob_path(digest) == Path(path or ".") / "blobs" / "sha256" / ("ab" * 32)
    assert store._blob_file(digest) == str(store.blob_path(digest))
    assert store.root == Path(path or ".")
