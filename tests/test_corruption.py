"""Archive corruption: an archive made by `clipctl index-layout` from a tiny layout, damaged.

Every single-bit flip must be detected on open or on first use (walk, lookup, listdir,
access, reading the files, verify): a ClipError, never wrong metadata or file bytes, never
another exception. Every truncation must be refused at open. An archive of a newer major
version names both versions. Everything is derived from the archive the test makes, so the
tests hold for whatever format version main writes. (tests/test_format.py does the same
byte-wise for the writer's golden archive.)
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clipcy.archive import format as F
from clipcy.archive.reader import open_archive
from clipcy.errors import ArchiveError, ClipError

_MADE: dict[str, Any] = {}


@pytest.fixture
def made(tmp_path_factory: pytest.TempPathFactory, layout_factory: Any, tar_factory: Any) -> Any:
    """(archive bytes, everything read from it), made once per session."""
    if "made" not in _MADE:
        _MADE["made"] = _make(tmp_path_factory, layout_factory, tar_factory)
    return _MADE["made"]


def _make(tmp_path_factory: pytest.TempPathFactory, layout_factory: Any, tar_factory: Any) -> Any:
    root = tmp_path_factory.mktemp("corrupt")
    layers = [
        tar_factory(
            [
                ("etc", "dir", b""),
                ("etc/hostname", "file", b"tiny\n"),
                ("etc/motd", "file", b"hello " * 300),
                ("bin", "dir", b""),
                ("bin/sh", "file", bytes(range(256)) * 8),
                ("bin/ash", "hardlink", b"bin/sh"),
                ("usr", "symlink", b"/"),
            ]
        ),
        tar_factory([("etc/motd", "file", b"replaced\n"), ("opt/a/b", "file", b"deep")]),
    ]
    layout = layout_factory(root / "layout", layers)
    out = root / "tiny.clip"
    subprocess.run(
        [
            sys.executable,
            "-I",
            "-m",
            "clipcy",
            "-q",
            "index-layout",
            "--layout",
            str(layout),
            "--out",
            str(out),
            "--no-cache",
            "--file-digests",
        ],
        check=True,
    )
    data = out.read_bytes()
    return data, _use(out)


def _use(p: Path) -> tuple[Any, ...]:
    """Everything a user can get out of the archive (raises ClipError on damage)."""
    with open_archive(p) as a:
        nodes = list(a.walk())
        looked = [a.lookup(n.path) for n in nodes]
        dirs = [a.listdir(n.path) for n in nodes if n.type == "dir"]
        access = [a.access(i) for i in range(a.layer_count)]
        files = []
        for n in nodes:
            if n.type == "file":
                with a.open(n.path) as f:
                    files.append(f.read())
        return (a.metadata, a.node_count, nodes, looked, dirs, access, files)


def _check_damaged(p: Path, truth: tuple[Any, ...], where: str) -> bool:
    """True when the damage was noticed before verify(); fails the test on wrong data or a
    foreign exception, or when even verify() misses it."""
    try:
        got = _use(p)
    except ClipError:
        return True
    assert got == truth, f"{where}: wrong data returned without an error"
    with open_archive(p) as a, pytest.raises(ArchiveError):
        a.verify()
    return False


def _flip_bits(data: bytes, bits: range | list[int], tmp_path: Path, truth: Any) -> list[int]:
    p = tmp_path / "flip.clip"
    late = []
    for bit in bits:
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        p.write_bytes(bad)
        if not _check_damaged(p, truth, f"bit {bit}"):
            late.append(bit)
    return late


def _trailer_digest_bits(data: bytes) -> set[int]:
    end = len(data) - len(F.TRAILER_MAGIC)
    return set(range((end - 32) * 8, end * 8))


def test_made_archive_reads(made: Any) -> None:
    data, truth = made
    nodes = {n.path for n in truth[2]}
    assert {b"/etc/motd", b"/bin/ash", b"/opt/a/b", b"/usr"} <= nodes
    assert b"replaced\n" in truth[6]


def test_bit_flips_fast_subset(made: Any, tmp_path: Path) -> None:
    """Every bit of the first 256 bytes (header, section table, metadata start) and of the
    last 64, and every 11th bit between."""
    data, truth = made
    n = len(data) * 8
    bits = sorted(
        set(range(min(n, 256 * 8))) | set(range(max(0, n - 64 * 8), n)) | set(range(0, n, 11))
    )
    late = _flip_bits(data, bits, tmp_path, truth)
    # only the whole-file sha256 in the trailer is left to verify()
    assert set(late) <= _trailer_digest_bits(data)


@pytest.mark.slow
def test_every_bit_flip(made: Any, tmp_path: Path) -> None:
    data, truth = made
    late = _flip_bits(data, range(len(data) * 8), tmp_path, truth)
    assert set(late) <= _trailer_digest_bits(data)


def test_every_truncation(made: Any, tmp_path: Path) -> None:
    data, _ = made
    p = tmp_path / "cut.clip"
    for n in range(len(data)):
        p.write_bytes(data[:n])
        with pytest.raises(ArchiveError, match="cut.clip"):
            open_archive(p)
    p.write_bytes(data + b"\0")
    with pytest.raises(ArchiveError):
        open_archive(p)


def test_newer_major_names_both_versions(made: Any, tmp_path: Path) -> None:
    data, _ = made
    p = tmp_path / "new.clip"
    p.write_bytes(data)
    with open_archive(p) as a:
        major, minor = a.format_version
    at = len(F.MAGIC)  # the major follows the magic (docs/FORMAT.md, Versioning)
    assert struct.unpack_from("<H", data, at)[0] == major
    bad = bytearray(data)
    struct.pack_into("<H", bad, at, major + 1)
    p.write_bytes(bad)
    with pytest.raises(ArchiveError) as info:
        open_archive(p)
    msg = str(info.value)
    assert f"{major + 1}.{minor}" in msg and f"{major}." in msg, msg
    r = subprocess.run(
        [sys.executable, "-I", "-m", "clipcy", "inspect", str(p)], capture_output=True, text=True
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("clipctl: error: ") and f"{major + 1}.{minor}" in r.stderr
