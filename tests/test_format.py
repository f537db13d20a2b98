"""The .clip format: golden archive, both writers byte-identical, round trips, corruption.

Covers clipcy.archive.writer (and both implementations directly), clipcy.archive.format and
clipcy.archive.reader.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.machinery
import importlib.util
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipcy._select import PUREPYTHON
from clipcy.archive import _writer_py
from clipcy.archive import format as F
from clipcy.archive.reader import normalize_path, open_archive
from clipcy.archive.writer import IMPLEMENTATION, encode_archive
from clipcy.errors import ArchiveError, ArchivePathError, ArchiveWriteError
from clipcy.layers.access import LayerAccess
from clipcy.node import Node

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"


def _load_golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


golden = _load_golden()
GOLDEN_BYTES = (GOLDEN_DIR / "golden.clip").read_bytes()


def _compiled() -> ModuleType | None:
    if PUREPYTHON:
        return None
    try:
        from clipcy.archive import _writer
    except ImportError:
        return None
    file = _writer.__file__ or ""
    return _writer if file.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) else None


CY = _compiled()
needs_cython = pytest.mark.skipif(CY is None, reason="compiled writer not in use")
WRITERS = [pytest.param(_writer_py, id="python"),
           pytest.param(CY, id="cython", marks=needs_cython)]


def _write(tmp_path: Path, data: bytes, name: str = "t.clip") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _assemble(mod: ModuleType, metadata: dict[str, Any], nodes: Sequence[Node],
              access: Sequence[LayerAccess], max_nodes: int) -> bytes:
    """An archive with small blocks (the reader does not care about block sizes)."""
    blocks = mod.encode_blocks(nodes, max_nodes, 1 << 30)
    payloads = [mod.encode_access(i, a) for i, a in enumerate(access)]
    return F.assemble(F.canonical_json(metadata), len(nodes), blocks, payloads)


# -- golden archive ----------------------------------------------------------------------------
def test_public_writer_reproduces_golden() -> None:
    assert encode_archive(*golden.golden_input()) == GOLDEN_BYTES, (
        f"{IMPLEMENTATION} writer no longer reproduces tests/data/golden/golden.clip: if the "
        "format changed on purpose, bump clipcy/archive/format.py + docs/FORMAT.md and regenerate")


@pytest.mark.parametrize("mod", WRITERS)
def test_each_writer_reproduces_golden(mod: ModuleType) -> None:
    assert mod.encode_archive(*golden.golden_input()) == GOLDEN_BYTES


def test_golden_decodes_to_its_input() -> None:
    metadata, nodes, access = golden.golden_input()
    with open_archive(GOLDEN_DIR / "golden.clip") as a:
        assert a.metadata == metadata
        assert a.layers == metadata["layers"]
        assert a.node_count == len(nodes)
        assert a.format_version == (F.FORMAT_MAJOR, F.FORMAT_MINOR)
        assert a.size == len(GOLDEN_BYTES)
        assert list(a.walk()) == nodes
        for n in nodes:
            assert a.lookup(n.path) == n
        assert [a.access(i) for i in range(len(access))] == access
        assert len(a._blocks) == 3  # the 1040-file directory spans blocks
        a.verify()


def test_golden_header_matches_format_doc() -> None:
    """The header fields sit where docs/FORMAT.md says (a cross-check of format.py)."""
    d = GOLDEN_BYTES
    assert d[:8] == b"\x89CLIP\r\n\x1a"
    major, minor, flags, size, nsec, crc = struct.unpack_from("<HHIQII", d, 8)
    assert (major, minor, flags, size, nsec) == (2, 0, 0, len(d), 5)
    table = d[32:32 + 24 * nsec]
    assert crc == zlib.crc32(d[:28] + table)
    kinds = []
    end = 32 + 24 * nsec
    for i in range(nsec):
        kind, scrc, off, length = struct.unpack_from("<IIQQ", table, 24 * i)
        assert off == end  # contiguous, in table order
        assert zlib.crc32(d[off:off + length]) == scrc
        end = off + length
        kinds.append(kind)
    assert kinds == [1, 2, 3, 4, 5]
    assert end == len(d) - 40
    assert d[-8:] == b"CLIPEND\n"
    assert d[-40:-8] == hashlib.sha256(d[:-40]).digest()
    meta_off = struct.unpack_from("<Q", table, 8)[0]
    raw_len = struct.unpack_from("<Q", d, meta_off)[0]
    assert raw_len == len(F.canonical_json(golden.golden_input()[0]))


# -- writers agree; reproducibility ----------------------------------------------------------
def test_output_independent_of_dict_order() -> None:
    metadata, nodes, access = golden.golden_input()
    shuffled = {k: metadata[k] for k in reversed(list(metadata))}
    for n in nodes:
        n.xattrs = {k: n.xattrs[k] for k in reversed(list(n.xattrs))}
    assert encode_archive(shuffled, nodes, access) == GOLDEN_BYTES


def test_canonical_json() -> None:
    assert F.canonical_json({"b": [1, None, True], "a": {"é": "x"}}) == \
        '{"a":{"é":"x"},"b":[1,null,true]}'.encode()


_BAD_NODES: list[tuple[str, Callable[[list[Node]], None], str]] = [
    ("unsorted", lambda ns: ns.__setitem__(slice(1, 3), [ns[2], ns[1]]),
     "paths must be strictly increasing"),
    ("duplicate", lambda ns: ns.insert(2, copy.copy(ns[1])),
     "paths must be strictly increasing"),
    ("no root", lambda ns: ns.pop(0), "the first node must be the root"),
    ("missing parent", lambda ns: ns.append(Node(b"/zz/y", "file", 0, 0, 0, 0)),
     r"parent directory b'/zz' is not in the tree"),
    ("parent not dir", lambda ns: ns.append(Node(b"/many/f519/x", "file", 0, 0, 0, 0)),
     r"parent directory b'/many/f519' is not in the tree"),
    ("trailing slash", lambda ns: ns.append(Node(b"/zz/", "dir", 0, 0, 0, 0)),
     "not a normalised absolute path"),
    ("dot", lambda ns: ns.append(Node(b"/many/.", "dir", 0, 0, 0, 0)),
     "not a normalised absolute path"),
    ("dotdot", lambda ns: ns.append(Node(b"/many/..", "dir", 0, 0, 0, 0)),
     "not a normalised absolute path"),
    ("double slash", lambda ns: ns.append(Node(b"/many//x", "dir", 0, 0, 0, 0)),
     "not a normalised absolute path"),
    ("nul", lambda ns: ns.append(Node(b"/z\0", "dir", 0, 0, 0, 0)),
     "not a normalised absolute path"),
    ("str path", lambda ns: ns.append(Node("/zz", "dir", 0, 0, 0, 0)),  # type: ignore[arg-type]
     "path is not bytes"),
    ("negative uid", lambda ns: setattr(ns[-1], "uid", -1),
     r"uid -1 is not an integer in 0..2\*\*64-1"),
    ("huge gid", lambda ns: setattr(ns[-1], "gid", 2**64), "gid 18446744073709551616"),
    ("float mode", lambda ns: setattr(ns[-1], "mode", 1.5), "mode 1.5 is not an integer"),
    ("nsec", lambda ns: setattr(ns[-1], "mtime_nsec", 10**9), "is not below 10\\*\\*9"),
    ("mtime", lambda ns: setattr(ns[-1], "mtime_sec", 2**63), "mtime_sec 9223372036854775808"),
    ("type", lambda ns: setattr(ns[-1], "type", "socket"), "unknown type 'socket'"),
    ("layer", lambda ns: setattr(ns[-1], "layer", -2), "layer -2 is not an integer"),
    ("ino", lambda ns: setattr(ns[-1], "ino", 2**63), "ino 9223372036854775808"),
    ("linkname", lambda ns: setattr(ns[-1], "linkname", "x"), "linkname is str, not bytes"),
    ("xattr value", lambda ns: setattr(ns[-1], "xattrs", {"user.a": "x"}),
     "xattr 'user.a' is str, not bytes"),
    ("xattr name", lambda ns: setattr(ns[-1], "xattrs", {b"user.a": b"x"}),
     "xattr name b'user.a' is not str"),
    ("sparse", lambda ns: setattr(ns[-1], "sparse", ((1, 2, 3),)), "is not an"),
]


@pytest.mark.parametrize("mutate,match", [pytest.param(m, r, id=i) for i, m, r in _BAD_NODES])
@pytest.mark.parametrize("mod", WRITERS)
def test_writer_rejects_bad_nodes(mod: ModuleType, mutate: Callable[[list[Node]], None],
                                  match: str) -> None:
    metadata, nodes, access = golden.golden_input()
    mutate(nodes)
    with pytest.raises(ArchiveWriteError, match=match):
        mod.encode_archive(metadata, nodes, access)


_BAD_ACCESS = [
    (LayerAccess("lz4"), "unknown kind 'lz4'"),
    (LayerAccess("gzip", 1, [(0, 8, 0, b"")]), r"point bits 8 is not in 0..7"),
    (LayerAccess("gzip", 1, [(0, 0, -1, b"")]), "point uncompressed offset -1"),
    (LayerAccess("gzip", 1, [(0, 0, 0, "w")]), "point window is str, not bytes"),
    (LayerAccess("gzip", 1, [(0, 0, 0)]), "is not a 4-tuple"),  # type: ignore[list-item]
    (LayerAccess("zstd", 0, [], [(0, 1, 2, -3)]), "frame uncompressed size -3"),
]


@pytest.mark.parametrize("acc,match", _BAD_ACCESS)
@pytest.mark.parametrize("mod", WRITERS)
def test_writer_rejects_bad_access(mod: ModuleType, acc: LayerAccess, match: str) -> None:
    metadata, nodes, _ = golden.golden_input()
    with pytest.raises(ArchiveWriteError, match=r"access data of layer 1: .*" + match):
        mod.encode_archive(metadata, nodes, [LayerAccess("plain"), acc])


@needs_cython
@pytest.mark.parametrize("mutate", [m for _, m, _ in _BAD_NODES])
def test_writers_raise_identical_messages(mutate: Callable[[list[Node]], None]) -> None:
    msgs = []
    for mod in (CY, _writer_py):
        metadata, nodes, access = golden.golden_input()
        mutate(nodes)
        with pytest.raises(ArchiveWriteError) as e:
            assert mod is not None
            mod.encode_archive(metadata, nodes, access)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1]


@pytest.mark.parametrize("bad", [[1], {"x": float("nan")}, {"x": "\udc80"}, {"x": object()}])
def test_writer_rejects_bad_metadata(bad: Any) -> None:
    with pytest.raises(ArchiveWriteError, match="metadata"):
        encode_archive(bad, [], [])


def test_empty_archive(tmp_path: Path) -> None:
    p = _write(tmp_path, encode_archive({}, [], []))
    with open_archive(p) as a:
        assert a.node_count == 0 and a.metadata == {} and a.layers == [] and a.layer_count == 0
        assert a.lookup("/") is None
        assert list(a.walk()) == []
        with pytest.raises(ArchivePathError):
            a.listdir("/")
        a.verify()


# -- hypothesis: trees of many shapes against a dict model -------------------------------------
# components from a small alphabet around '/' (0x2f): '-' 0x2d, '.' 0x2e, '0' 0x30, plus
# non-UTF-8 bytes, so that sibling names sort between a directory and its subtree
_name = st.binary(min_size=1, max_size=4).map(
    lambda b: bytes(b"a-.0\xffb"[x % 6] for x in b)).filter(lambda b: b not in (b".", b".."))
_u32 = st.integers(0, 2**32 - 1)


@st.composite
def _trees(draw: st.DrawFn) -> list[Node]:
    leaves = draw(st.lists(st.lists(_name, min_size=1, max_size=4), max_size=40))
    kinds: dict[bytes, str] = {b"/": "dir"}
    for parts in leaves:
        for i in range(1, len(parts)):
            p = b"/" + b"/".join(parts[:i])
            if kinds.get(p, "dir") != "dir":
                break
            kinds[p] = "dir"
        else:
            p = b"/" + b"/".join(parts)
            if p not in kinds:
                kinds[p] = draw(st.sampled_from(("dir", "file", "symlink", "char", "fifo")))
    nodes = []
    for ino, path in enumerate(sorted(kinds), 1):
        t = kinds[path]
        n = Node(path, t, draw(st.integers(0, 0o7777)), draw(_u32), draw(_u32),
                 draw(st.integers(-2**63, 2**63 - 1)), draw(st.integers(0, 10**9 - 1)),
                 ino=ino, nlink=draw(st.integers(0, 3)))
        if t == "file":
            n.size = draw(st.integers(0, 2**64 - 1))
            n.layer = draw(st.integers(-1, 5))
            n.offset = draw(st.integers(0, 2**40))
            n.sparse = draw(st.none() | st.tuples(*[st.tuples(_u32, _u32)] * draw(
                st.integers(0, 3))))
            n.digest = draw(st.sampled_from((b"", bytes(32))))
            n.xattrs = draw(st.dictionaries(st.text(min_size=1, max_size=5), st.binary(
                max_size=8), max_size=3))
        elif t == "symlink":
            n.linkname = draw(st.binary(min_size=1, max_size=20))
        elif t == "char":
            n.devmajor, n.devminor = draw(_u32), draw(_u32)
        nodes.append(n)
    return nodes


def _model_children(nodes: list[Node]) -> dict[bytes, list[bytes]]:
    kids: dict[bytes, list[bytes]] = {n.path: [] for n in nodes if n.type == "dir"}
    for n in nodes[1:]:
        parent, _, name = n.path.rpartition(b"/")
        kids[parent or b"/"].append(name)
    return {k: sorted(v) for k, v in kids.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(nodes=_trees(), max_nodes=st.integers(1, 6), data=st.data())
def test_trees_round_trip(tmp_path_factory: pytest.TempPathFactory, nodes: list[Node],
                          max_nodes: int, data: st.DataObject) -> None:
    raw = _assemble(_writer_py, {"n": len(nodes)}, nodes, [], max_nodes)
    if CY is not None:
        assert _assemble(CY, {"n": len(nodes)}, nodes, [], max_nodes) == raw
        assert CY.encode_archive({}, nodes, []) == _writer_py.encode_archive({}, nodes, [])
    p = _write(tmp_path_factory.mktemp("h"), raw)
    kids = _model_children(nodes)
    by_path = {n.path: n for n in nodes}
    with open_archive(p) as a:
        a.verify()
        assert list(a.walk()) == nodes
        for n in nodes:
            assert a.lookup(n.path) == n
            assert a.stat(os.fsdecode(n.path)) == n
            if n.type == "dir":
                assert a.listdir(n.path) == kids[n.path]
                sub = n.path if n.path == b"/" else n.path + b"/"
                assert list(a.walk(n.path)) == [m for m in nodes
                                                if m.path == n.path or m.path.startswith(sub)]
            else:
                with pytest.raises(ArchivePathError, match="not a directory"):
                    a.listdir(n.path)
        for probe in data.draw(st.lists(st.lists(_name, min_size=1, max_size=3), max_size=5)):
            path = b"/" + b"/".join(probe)
            assert a.lookup(path) == by_path.get(path)
            if path not in by_path:
                assert list(a.walk(path)) == []


# -- reader API ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden_archive() -> Path:
    return GOLDEN_DIR / "golden.clip"


@pytest.mark.parametrize("given,want", [("a/b", b"/a/b"), ("/a/b/", b"/a/b"),
                                        ("//a//b", b"/a/b"), ("", b"/"), ("/", b"/"),
                                        (b"x\xff", b"/x\xff"), ("x\udcff", b"/x\xff")])
def test_normalize_path(given: str | bytes, want: bytes) -> None:
    assert normalize_path(given) == want


def test_lookup_forms(golden_archive: Path) -> None:
    with open_archive(golden_archive) as a:
        want = a.lookup(b"/etc/latin1-\xe9t\xe9")
        assert want is not None and want.xattrs["user.bin"] == b"\x00\xff\x80"
        for form in ("etc/latin1-\udce9t\udce9", "//etc//latin1-\udce9t\udce9/",
                     b"etc/latin1-\xe9t\xe9"):
            assert a.lookup(form) == want
        assert a.lookup("/bin/x") is None  # no symlink following
        assert a.lookup("/bin") is not None and a.lookup("/bin").type == "symlink"  # type: ignore[union-attr]
        with pytest.raises(ArchivePathError, match=r"^no such path in archive: /x$"):
            a.stat("x")
        with pytest.raises(ArchivePathError, match="no such path in archive: /nope"):
            a.listdir("/nope")
        with pytest.raises(KeyError):  # ArchivePathError is a KeyError too
            a.stat("/nope")


def test_returned_nodes_are_fresh(golden_archive: Path) -> None:
    with open_archive(golden_archive) as a:
        n = a.stat("/etc/latin1-\udce9t\udce9")
        n.xattrs["user.bin"] = b"changed"
        n.uid = 99
        assert a.stat("/etc/latin1-\udce9t\udce9").xattrs["user.bin"] == b"\x00\xff\x80"
        assert a.stat("/etc/latin1-\udce9t\udce9").uid == 0


def test_listdir_around_slash(tmp_path: Path) -> None:
    """Siblings "a-b", "a.b" sort between "a" and "a/...", and "a0" after it."""
    names = [b"a", b"a-b", b"a.b", b"a/x", b"a/x/deep", b"a/y", b"a0", b"a0/z", b"b"]
    dirs = {b"a", b"a/x", b"a0"}
    nodes = [Node(b"/", "dir", 0o755, 0, 0, 0)]
    nodes += [Node(b"/" + n, "dir" if n in dirs else "file", 0o644, 0, 0, 0)
              for n in sorted(names)]
    for max_nodes in (1, 2, 3, 128):
        p = _write(tmp_path, _assemble(_writer_py, {}, nodes, [], max_nodes))
        with open_archive(p) as a:
            assert a.listdir("/") == [b"a", b"a-b", b"a.b", b"a0", b"b"]
            assert a.listdir("/a") == [b"x", b"y"]
            assert a.listdir("/a/x") == [b"deep"]
            assert a.listdir("/a0") == [b"z"]
            assert [n.path for n in a.walk("/a")] == [b"/a", b"/a/x", b"/a/x/deep", b"/a/y"]


def test_large_listdir_skips_subtrees(tmp_path: Path) -> None:
    nodes = [Node(b"/", "dir", 0o755, 0, 0, 0), Node(b"/d", "dir", 0o755, 0, 0, 0)]
    for i in range(300):
        nodes.append(Node(b"/d/%03d" % i, "dir", 0o755, 0, 0, 0))
        nodes += [Node(b"/d/%03d/%d" % (i, j), "file", 0o644, 0, 0, 0) for j in range(5)]
    p = _write(tmp_path, encode_archive({}, nodes, []))
    with open_archive(p) as a:
        assert a.listdir("/d") == [b"%03d" % i for i in range(300)]
        assert len(list(a.walk("/d/007"))) == 6


def test_block_frames_same_bytes_on_one_or_more_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # node blocks are compressed as a batch on two threads when there are two cores: the
    # archive must be the bytes a one-core machine makes (reproducible output)
    nodes = [Node(b"/", "dir", 0o755, 0, 0, 0)]
    nodes += [Node(b"/f%05d" % i, "file", 0o644, i, i % 7, i * 3) for i in range(3000)]
    blocks = _writer_py.encode_blocks(nodes, 100, 1 << 30)
    assert len(blocks) == 31  # 3001 nodes, 100 a block
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    threaded = F.assemble(b"{}", len(nodes), blocks, [])
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert F.assemble(b"{}", len(nodes), blocks, []) == threaded


def test_closed_and_missing(tmp_path: Path, golden_archive: Path) -> None:
    a = open_archive(golden_archive)
    a.close()
    with pytest.raises(ArchiveError, match="is closed"):
        a.lookup("/")
    a.close()  # idempotent
    with pytest.raises(ArchiveError, match="cannot open archive"):
        open_archive(tmp_path / "missing.clip")
    with pytest.raises(IndexError):
        open_archive(golden_archive).access(3)


# -- versioning ------------------------------------------------------------------------------
def _rebuild(data: bytes, *, major: int = F.FORMAT_MAJOR, minor: int = 0, flags: int = 0,
             extra: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """Re-lay out an archive's sections, optionally with more sections and another version."""
    nsec = struct.unpack_from("<I", data, 24)[0]
    secs = []
    for i in range(nsec):
        kind, _, off, length = F.SECTION.unpack_from(data, 32 + 24 * i)
        secs.append((kind, data[off:off + length]))
    secs[2:2] = list(extra)  # unknown sections in the middle, not only at the end
    offset = 32 + 24 * len(secs)
    table = b""
    for kind, body in secs:
        table += F.SECTION.pack(kind, zlib.crc32(body), offset, len(body))
        offset += len(body)
    head = F.HEADER.pack(F.MAGIC, major, minor, flags, offset + 40, len(secs), 0)[:28]
    body = head + struct.pack("<I", zlib.crc32(head + table)) + table + b"".join(
        b for _, b in secs)
    return body + hashlib.sha256(body).digest() + F.TRAILER_MAGIC


def test_rebuild_helper_is_faithful() -> None:
    assert _rebuild(GOLDEN_BYTES) == GOLDEN_BYTES


def test_newer_minor_with_unknown_sections_opens(tmp_path: Path) -> None:
    data = _rebuild(GOLDEN_BYTES, minor=7, extra=[(99, b"future"), (1000, b"")])
    with open_archive(_write(tmp_path, data)) as a:
        assert a.format_version == (F.FORMAT_MAJOR, 7)
        assert list(a.walk()) == golden.golden_input()[1]
        a.verify()
    # an unknown section is not read when opening, but verify() checks its crc
    at = data.index(b"future")
    bad = bytearray(data)
    bad[at] ^= 1
    bad[-40:-8] = hashlib.sha256(bad[:-40]).digest()  # so that the crc is what fails
    with open_archive(_write(tmp_path, bytes(bad))) as a:
        assert list(a.walk()) == golden.golden_input()[1]
        with pytest.raises(ArchiveError, match="kind 99 section checksum mismatch"):
            a.verify()


@pytest.mark.parametrize("major", [0, 1, 3, 65535])
def test_unknown_major_refused(tmp_path: Path, major: int) -> None:
    with pytest.raises(ArchiveError, match=f"unsupported archive .*format version {major}.0, "
                                           f"this clipcy reads {F.FORMAT_MAJOR}.x"):
        open_archive(_write(tmp_path, _rebuild(GOLDEN_BYTES, major=major)))


def test_version_1_archive_says_to_reindex(tmp_path: Path) -> None:
    """A 1.x archive (no span checksums) names both versions and the way out, in one line,
    through the CLI."""
    path = _write(tmp_path, _rebuild(GOLDEN_BYTES, major=1))
    r = subprocess.run([sys.executable, "-I", "-m", "clipcy", "inspect", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (f"clipctl: error: unsupported archive {path}: format version 1.0, this "
                        f"clipcy reads 2.x; re-run index-layout to rebuild it\n")


def test_unknown_flags_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="header flags 0x4 need a newer clipcy"):
        open_archive(_write(tmp_path, _rebuild(GOLDEN_BYTES, flags=4)))


def test_missing_or_duplicate_section(tmp_path: Path) -> None:
    data = _rebuild(GOLDEN_BYTES, extra=[(1, b"x")])
    with pytest.raises(ArchiveError, match="section 1 appears twice"):
        open_archive(_write(tmp_path, data))


# -- corruption ------------------------------------------------------------------------------
def _read_everything(p: Path) -> tuple[Any, ...]:
    with open_archive(p) as a:
        nodes = list(a.walk())
        return (a.metadata, nodes, [a.access(i) for i in range(a.layer_count)],
                [a.listdir(n.path) for n in nodes if n.type == "dir"])


def test_every_byte_flip_is_detected(tmp_path: Path) -> None:
    """Flip each byte of the golden archive: reading raises ArchiveError or returns the true
    data (only the trailer's sha256 is not read by lookups), and verify() always raises."""
    truth = _read_everything(GOLDEN_DIR / "golden.clip")
    p = tmp_path / "flip.clip"
    silent = []
    for i in range(len(GOLDEN_BYTES)):
        bad = bytearray(GOLDEN_BYTES)
        bad[i] ^= 0xFF if i % 2 else 0x01
        p.write_bytes(bad)
        try:
            got = _read_everything(p)
        except ArchiveError:
            got = None
        if got is not None:
            assert got == truth, f"flip at {i} returned wrong data"
            silent.append(i)
            with open_archive(p) as a, pytest.raises(ArchiveError, match="corrupt archive"):
                a.verify()
    # the bytes no read path checks are exactly the trailer's sha256
    assert set(silent) <= set(range(len(GOLDEN_BYTES) - 40, len(GOLDEN_BYTES) - 8))


def test_every_truncation_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "cut.clip"
    for n in range(len(GOLDEN_BYTES)):
        p.write_bytes(GOLDEN_BYTES[:n])
        with pytest.raises(ArchiveError, match="corrupt archive .*cut.clip: "):
            open_archive(p)
    p.write_bytes(GOLDEN_BYTES + b"\0")
    with pytest.raises(ArchiveError, match="truncated"):
        open_archive(p)


def test_forged_checksums_still_fail_cleanly(tmp_path: Path) -> None:
    """Garbage inside a block with a matching crc32: still an ArchiveError, no traceback."""
    metadata, nodes, access = golden.golden_input()
    for mod_blocks in ([(b"/", 1, b"\xff" * 12)], [(b"/", 5, b"\x00")],
                       [(b"/", 1, b"\x00\x01/\x00\x00\x00\x00\x00\x00\x00")],
                       [(b"/", 1, b"\x00\x01/\x00\x00\x00\x00\x00\x00\x00junk")],
                       [(b"/", 1, b"\x00\x01/\x07\x00\x00\x00\x00\x00")],
                       [(b"/", 1, b"\x00\x01/\x80\x02\x00\x00\x00\x00\x00\x00\xff\xff\xff")]):
        raw = F.assemble(b"{}", mod_blocks[0][1], mod_blocks, [b"\x09", b"\x01\x00\x05"])
        p = _write(tmp_path, raw)
        with pytest.raises(ArchiveError, match="corrupt archive"):
            _read_everything(p)
    with pytest.raises(ArchiveError, match="metadata is not a JSON object"):
        open_archive(_write(tmp_path, F.assemble(b"[1]", 0, [], [])))
    for meta in (b"{", b"\xff", b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(ArchiveError, match="metadata is not JSON"):
            open_archive(_write(tmp_path, F.assemble(meta, 0, [], [])))


def test_format_doc_record_example_matches_writer() -> None:
    """docs/FORMAT.md's worked record example is what the writers produce for golden's root."""
    import re

    doc = (Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text()
    para = doc[doc.index("Example: a block whose first record"):]
    para = para[:para.index("\n\n")]
    hex_groups = re.findall(r"`((?:[0-9a-f]{2} ?)+)`", para)
    example = bytes.fromhex("".join(hex_groups))
    raw = _writer_py.encode_blocks(golden.golden_input()[1])[0][2]
    assert len(example) == 15 and raw.startswith(example)


_access = st.builds(
    LayerAccess, st.sampled_from(("plain", "gzip", "zstd")), st.integers(0, 2**64 - 1),
    st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 7), st.integers(0, 2**64 - 1),
                       st.binary(max_size=300)), max_size=4),
    st.lists(st.tuples(*[st.integers(0, 2**64 - 1)] * 4), max_size=4))


@settings(max_examples=40, deadline=None)
@given(acc=st.lists(_access, max_size=4))
def test_access_round_trip(tmp_path_factory: pytest.TempPathFactory,
                           acc: list[LayerAccess]) -> None:
    nodes = [Node(b"/", "dir", 0o755, 0, 0, 0)]
    data = _writer_py.encode_archive({"layers": []}, nodes, acc)
    if CY is not None:
        assert CY.encode_archive({"layers": []}, nodes, acc) == data
    with open_archive(_write(tmp_path_factory.mktemp("a"), data)) as a:
        assert a.layer_count == len(acc)
        assert [a.access(i) for i in range(len(acc))] == acc


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_forged_blocks_with_valid_checksums(tmp_path_factory: pytest.TempPathFactory,
                                            data: st.DataObject) -> None:
    """Records garbled *before* compression (so every crc matches): the reader still raises
    ArchiveError (or, for garbled paths, ArchivePathError), never another exception."""
    metadata, nodes, access = golden.golden_input()
    blocks = _writer_py.encode_blocks(nodes, 40, 1 << 30)
    payloads = [_writer_py.encode_access(i, a) for i, a in enumerate(access)]
    if data.draw(st.booleans()):
        k = data.draw(st.integers(0, len(blocks) - 1))
        first, count, raw = blocks[k]
        pos = data.draw(st.integers(0, len(raw) - 1))
        garbled = raw[:pos] + data.draw(st.binary(min_size=1, max_size=3)) + raw[pos + 1:]
        blocks[k] = (first, count + data.draw(st.sampled_from((0, 0, 1, -1))), garbled)
    else:
        k = data.draw(st.integers(0, 1))  # the gzip and zstd payloads
        raw = payloads[k]
        pos = data.draw(st.integers(0, len(raw) - 1))
        payloads[k] = raw[:pos] + data.draw(st.binary(min_size=1, max_size=3)) + raw[pos + 1:]
    p = _write(tmp_path_factory.mktemp("f"),
               F.assemble(F.canonical_json(metadata), len(nodes), blocks, payloads))
    try:
        _read_everything(p)
    except (ArchiveError, ArchivePathError):
        pass


def test_file_truncated_after_open(tmp_path: Path) -> None:
    p = _write(tmp_path, GOLDEN_BYTES)
    with open_archive(p) as a:
        p.write_bytes(GOLDEN_BYTES[:1000])
        with pytest.raises(ArchiveError, match="short read .*file changed"):
            list(a.walk())


def test_concurrent_lookups(tmp_path: Path) -> None:
    """Threads share one Archive (and its block cache) and all see the right nodes."""
    import threading

    nodes = [Node(b"/", "dir", 0o755, 0, 0, 0)]
    nodes += [Node(b"/f%05d" % i, "file", 0o644, i, 0, 0, size=i) for i in range(3000)]
    p = _write(tmp_path, encode_archive({}, nodes, []))
    errors: list[BaseException] = []
    with open_archive(p) as a:
        def work(seed: int) -> None:
            try:
                for k in range(600):
                    n = nodes[(seed * 7919 + k * 104729) % len(nodes)]
                    assert a.lookup(n.path) == n
            except BaseException as e:  # noqa: BLE001  (reported below)
                errors.append(e)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_open_and_lookup_decode_one_block(tmp_path: Path) -> None:
    """Opening reads only the indexes; a lookup decodes the one block holding the path."""
    nodes = [Node(b"/", "dir", 0o755, 0, 0, 0)]
    nodes += [Node(b"/f%05d" % i, "file", 0o644, 0, 0, 0, size=i) for i in range(6000)]
    p = _write(tmp_path, encode_archive({}, nodes, []))
    with open_archive(p) as a:
        assert len(a._blocks) > 10 and len(a._cache) == 0
        assert a.lookup("/f01234") == nodes[1235]
        assert len(a._cache) == 1
