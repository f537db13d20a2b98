"""The hostile corpus (tests/hostile/make.py) through `clipctl index-layout`, bounded.

Each case runs in a subprocess with its address space (RLIMIT_AS), CPU seconds (RLIMIT_CPU)
and wall time capped: an input that made clipcy hang or allocate without bound fails here.
Refused inputs: exit 1, one `clipctl: error:` line naming the problem, no traceback, no
output or temp file. Legal inputs: exit 0 with the semantics the case names, checked below.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from clipcy.archive.reader import open_archive

_spec = importlib.util.spec_from_file_location(
    "clipcy_tests_make", Path(__file__).parent / "hostile" / "make.py"
)
assert _spec is not None and _spec.loader is not None
MAKE = importlib.util.module_from_spec(_spec)
sys.modules["clipcy_tests_make"] = MAKE
_spec.loader.exec_module(MAKE)

MIB = 1 << 20


def _params() -> list[Any]:
    out = []
    for case in MAKE.CASES:
        marks = [pytest.mark.slow] if case.slow else []
        if case.root:
            marks.append(
                pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
            )
        out.append(pytest.param(case, id=case.name, marks=marks))
    return out


def _only_output(directory: Path, allowed: set[str]) -> None:
    left = {p.name for p in directory.iterdir()}
    assert left <= allowed, left - allowed


def _semantics(name: str, clip: Path, stderr: str) -> None:
    """What each legal input must index to."""
    with open_archive(clip) as arc:
        paths = {n.path for n in arc.walk()}
        if name == "name-newline":
            node = arc.lookup(b"/a\nb")
            assert node is not None and node.type == "file"
        elif name in ("name-dotdot", "name-absolute"):
            assert paths == {b"/", b"/etc", b"/etc/passwd"}, paths
        elif name == "hardlink-missing":
            assert paths == {b"/"}
            assert "hardlink /h -> /nowhere: target missing" in stderr
        elif name == "hardlink-later":
            assert paths == {b"/", b"/t"}
            assert "hardlink /h -> /t: target missing" in stderr
        elif name == "symlink-loop":
            a, b = arc.lookup(b"/a"), arc.lookup(b"/b")
            assert a is not None and a.type == "symlink" and a.linkname == b"b"
            assert b is not None and b.type == "symlink" and b.linkname == b"a"
        elif name == "blob-symlink-inside":
            assert b"/etc/hostname" in paths
        elif name == "million-entries":
            assert arc.node_count == 1 + 1024 + 1024 * 1024
            node = arc.lookup(b"/d1023/f1023")
            assert node is not None and node.type == "file"
        else:
            raise AssertionError(f"no semantics check for {name}")


@pytest.mark.parametrize("case", _params())
def test_hostile_case(case: Any, hostile: Any, bounded: Any, tmp_path: Path) -> None:
    layout = tmp_path / case.name
    case.build(layout)
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "x.clip"
    big = case.name == "million-entries"
    r = bounded.run(
        ["index-layout", "--layout", str(layout), "--out", str(out), "--no-cache"],
        mem=(2048 if big else 768) * MIB,
        cpu=120 if big else 30,
        timeout=300 if big else 60,
    )
    if case.expect == "error":
        bounded.error(r, case.match)
        _only_output(outdir, set())
    else:
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        _only_output(outdir, {"x.clip"})
        _semantics(case.name, out, r.stderr)


def test_hostile_corpus_script(hostile: Any, tmp_path: Path) -> None:
    """The script writes every (fast) case and a cases.json describing them."""
    import json
    import subprocess

    r = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "hostile" / "make.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    listed = json.loads((tmp_path / "cases.json").read_text())
    names = {c["name"] for c in listed}
    assert "blob-symlink-dev-zero" in names and "million-entries" not in names
    assert all((tmp_path / n / "index.json").exists() for n in names)
    assert len(r.stdout.splitlines()) == len(listed)
