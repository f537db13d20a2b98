"""The inflate engine (clipcy/layers/_inflate.pyx): zlib-ng when its wheel is installed, else zlib.

Resume points are deflate block boundaries of the compressed stream, so they must not depend
on the engine: the same points, windows and archive bytes from both, and archives written
with one engine read back with the other."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HAVE_ZLIB_NG = importlib.util.find_spec("zlib_ng") is not None
ENGINES = ["zlib", "zlib-ng"]

# points and output of GzipIndexer over each blob given on the command line, as one digest
_POINTS = """
import hashlib, sys
from clipcy.layers import _inflate
from clipcy.layers._checkpoint import GzipIndexer
print(_inflate.NAME)
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    ix = GzipIndexer(65536)
    h = hashlib.sha256()
    for i in range(0, len(data), 100_000):
        for out in ix.feed(data[i:i + 100_000]):
            h.update(out)
    ix.finish()
    h.update(repr(ix.access().points).encode())
    print(h.hexdigest())
"""


def _env(engine: str) -> dict[str, str]:
    return dict(os.environ, CLIPCY_INFLATE=engine)


def _need_engines() -> None:
    if not HAVE_ZLIB_NG:
        pytest.skip("the zlib-ng wheel is not installed")


def _payload(seed: int, size: int) -> bytes:
    """Word text with random runs: many deflate blocks, most boundaries not byte-aligned."""
    import random

    rnd = random.Random(seed)
    words = [bytes(rnd.choices(b"abcdefghijklmnopqrstuvwxyz", k=rnd.randint(2, 9)))
             for _ in range(2000)]
    parts, total = [], 0
    while total < size:
        part = (rnd.randbytes(rnd.randint(100, 30000)) if rnd.random() < 0.3
                else b" ".join(rnd.choices(words, k=rnd.randint(50, 5000))))
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """gzip streams from real tools: GNU gzip at two levels, pigz, and several members."""
    for tool in ("gzip", "pigz"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    d = tmp_path_factory.mktemp("engine")
    (d / "a.bin").write_bytes(_payload(3, 3_000_000))
    (d / "b.bin").write_bytes(_payload(4, 500_000))
    cmds = {
        "gzip1.gz": "gzip -1 -n -c a.bin > gzip1.gz",
        "gzip9.gz": "gzip -9 -n -c a.bin > gzip9.gz",
        "pigz.gz": "pigz -p 2 -c a.bin > pigz.gz",
        "members.gz": "gzip -c b.bin > members.gz && pigz -i -c a.bin >> members.gz",
    }
    for cmd in cmds.values():
        subprocess.run(cmd, shell=True, check=True, cwd=d)
    return [d / name for name in cmds]


def test_default_engine_is_zlib_ng_when_installed(tmp_path: Path) -> None:
    """pip install brings the zlib-ng wheel (a dependency): then it is the default."""
    default = {k: v for k, v in os.environ.items() if k != "CLIPCY_INFLATE"}
    out = subprocess.run([sys.executable, "-I", "-m", "clipcy", "--version"], cwd=tmp_path,
                         check=True, capture_output=True, text=True, env=default).stdout
    line = next(x for x in out.splitlines() if x.startswith("inflate: "))
    assert line.startswith("inflate: zlib-ng 2." if HAVE_ZLIB_NG else "inflate: zlib 1.")
    forced = subprocess.run([sys.executable, "-I", "-m", "clipcy", "--version"], cwd=tmp_path,
                            check=True, capture_output=True, text=True,
                            env=_env("zlib")).stdout
    assert "inflate: zlib 1." in forced


def test_zlib_ng_is_found_not_imported(tmp_path: Path) -> None:
    """The engine dlopens the wheel's extension module without importing it (its import runs
    the package's __init__ and imports gzip); Python importing it afterwards shares it."""
    _need_engines()
    code = (
        "import sys, zlib\n"
        "from clipcy.layers import _inflate\n"
        "from clipcy.layers._checkpoint import GzipIndexer\n"
        "print(_inflate.NAME, sorted(m for m in ('zlib_ng', 'gzip') if m in sys.modules))\n"
        "from zlib_ng import zlib_ng\n"
        "data = bytes(range(256)) * 4000\n"
        "ix = GzipIndexer(65536)\n"
        "out = b''.join(ix.feed(zlib_ng.compress(data, 6, 31)))\n"
        "ix.finish()\n"
        "assert out == data == zlib_ng.decompress(zlib.compress(data))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, check=True,
                         capture_output=True, text=True, env=_env("auto")).stdout
    assert out.strip() == "zlib-ng []"


def test_points_and_output_equal_across_engines(blobs: list[Path], tmp_path: Path) -> None:
    _need_engines()
    runs = {}
    for engine in ENGINES:
        out = subprocess.run([sys.executable, "-I", "-c", _POINTS, *map(str, blobs)],
                             cwd=tmp_path, check=True, capture_output=True, text=True,
                             env=_env(engine)).stdout.split()
        assert out[0] == engine
        runs[engine] = out[1:]
    assert len(runs["zlib"]) == len(blobs)
    assert runs["zlib"] == runs["zlib-ng"]


def _clipctl(engine: str, *args: str, cwd: Path) -> str:
    return subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], cwd=cwd, check=True,
                          capture_output=True, text=True, env=_env(engine)).stdout


def test_archives_identical_and_readable_across_engines(
    blobs: list[Path], tmp_path: Path, layout_factory: Any, tar_factory: Any
) -> None:
    """index-layout with 1 MiB points: the same archive bytes from both engines, and files
    read (cat, from a resume point deep in the layer) equal under both."""
    _need_engines()
    payload = (blobs[0].parent / "a.bin").read_bytes()
    tar = tar_factory([("data", "dir", b""), ("data/a.bin", "file", payload),
                    ("data/b.bin", "file", payload[::-1])])
    layout = layout_factory(tmp_path / "layout", [tar, tar_factory([("top", "file", b"x")])])
    digests = {}
    for engine in ENGINES:
        out = tmp_path / f"{engine}.clip"
        _clipctl(engine, "index-layout", "--layout", str(layout), "--tag", "latest",
                 "--out", str(out), "--no-cache", "--checkpoint-mib", "1", "--progress", "none",
                 cwd=tmp_path)
        digests[engine] = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digests["zlib"] == digests["zlib-ng"]
    info = json.loads(_clipctl("zlib", "inspect", "--json", str(tmp_path / "zlib.clip"),
                               cwd=tmp_path))
    seekable = info["layers"][0]["seekable"]  # "gzip: N resume points every 1 MiB"
    assert int(re.match(r"gzip: (\d+) resume points", seekable)[1]) >= 5, seekable
    for engine in ENGINES:
        got = subprocess.run([sys.executable, "-I", "-m", "clipcy", "cat",
                              str(tmp_path / "zlib-ng.clip"), "/data/b.bin"], cwd=tmp_path,
                             check=True, capture_output=True, env=_env(engine)).stdout
        assert got == payload[::-1]


def test_unknown_engine_value_warns_and_works(tmp_path: Path) -> None:
    """A bad CLIPCY_INFLATE is one warning line, never a traceback; the default engine runs."""
    out = subprocess.run([sys.executable, "-I", "-m", "clipcy", "--version"], cwd=tmp_path,
                         capture_output=True, text=True, env=_env("isal"))
    assert out.returncode == 0, out.stderr
    assert "CLIPCY_INFLATE=isal is not auto, zlib or zlib-ng" in out.stderr
    assert "Traceback" not in out.stderr
    assert ("inflate: zlib-ng" if HAVE_ZLIB_NG else "inflate: zlib") in out.stdout
