"""Node block decoding: the compiled clipcy.archive._nodeblock against its pure twin.

Blocks come from both writers (trees of many shapes); then bytes are flipped, cut and
inserted, and both decoders must give the same records or the same Corrupt message. The
NodeBlock API (path, record, bisect_left) must agree with decode_block's lists, and the
reader's byte-bounded block cache must stay within its budget.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipcy._select import PUREPYTHON
from clipcy.archive import _nodeblock_py, _writer_py
from clipcy.archive import format as F
from clipcy.archive.reader import open_archive
from clipcy.archive.writer import encode_archive
from clipcy.node import Node

IMPLS: list[ModuleType] = [_nodeblock_py]
if not PUREPYTHON:
    from clipcy.archive import _nodeblock

    IMPLS.insert(0, _nodeblock)

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_name = st.binary(min_size=1, max_size=5).map(
    lambda b: bytes(b"a-.0\xffb"[x % 6] for x in b)).filter(lambda b: b not in (b".", b".."))
_u64 = st.integers(0, 2**64 - 1)


@st.composite
def _nodes(draw: st.DrawFn) -> list[Node]:
    names = sorted(set(draw(st.lists(_name, min_size=0, max_size=30))))
    nodes = [Node(b"/", "dir", 0o755, 0, 0, draw(st.integers(-2**63, 2**63 - 1)), ino=1,
                  nlink=2)]
    for i, name in enumerate(names, 2):
        t = draw(st.sampled_from(("dir", "file", "symlink", "char", "block", "fifo")))
        n = Node(b"/" + name, t, draw(st.integers(0, 0o7777)), draw(_u64), draw(_u64),
                 draw(st.integers(-2**63, 2**63 - 1)), draw(st.integers(0, 10**9 - 1)),
                 ino=draw(st.sampled_from((i, i - 1, 2**63 - 1))), nlink=draw(_u64))
        if t == "file":
            n.size = draw(_u64)
            n.layer = draw(st.integers(-1, 2**63))
            n.offset = draw(_u64)
            n.sparse = draw(st.none() | st.lists(st.tuples(_u64, _u64), max_size=3).map(tuple))
            n.digest = draw(st.sampled_from((b"", bytes(32), b"\x01")))
            n.xattrs = draw(st.dictionaries(st.text(min_size=1, max_size=5)
                                            | st.sampled_from(["\udcff", "user.\udc80"]),
                                            st.binary(max_size=8), max_size=3))
        elif t == "symlink":
            n.linkname = draw(st.binary(min_size=1, max_size=20))
        elif t in ("char", "block"):
            n.devmajor, n.devminor = draw(_u64), draw(_u64)
        nodes.append(n)
    return nodes


def _outcome(impl: ModuleType, raw: bytes, count: int, first: bytes) -> Any:
    try:
        return impl.decode_block(raw, count, first)
    except _nodeblock_py.Corrupt as e:
        return ("Corrupt", str(e))


def _block_api(impl: ModuleType, raw: bytes, count: int, first: bytes) -> Any:
    """The NodeBlock view of the block, as lists (must equal decode_block's)."""
    b = impl.NodeBlock(raw, count, first)
    return [b.path(i) for i in range(b.count)], [b.record(i) for i in range(b.count)]


def _check_same(raw: bytes, count: int, first: bytes) -> Any:
    results = [_outcome(impl, raw, count, first) for impl in IMPLS]
    assert all(r == results[0] for r in results), results
    if not isinstance(results[0], tuple) or results[0][0] != "Corrupt":
        for impl in IMPLS:
            assert _block_api(impl, raw, count, first) == results[0]
        flags = {impl.NodeBlock(raw, count, first).flags for impl in IMPLS}
        assert len(flags) == 1, flags  # the or of the stored flags, alike
    return results[0]


@SETTINGS
@given(nodes=_nodes(), max_nodes=st.integers(1, 40))
def test_blocks_decode_back_to_the_nodes(nodes: list[Node], max_nodes: int) -> None:
    got: list[Node] = []
    for first, count, raw in _writer_py.encode_blocks(nodes, max_nodes=max_nodes):
        paths, recs = _check_same(raw, count, first)
        assert len(paths) == count
        got += [Node(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                     dict(r[11]), r[12], r[13], r[14], r[15], r[16], r[17]) for r in recs]
    assert got == nodes
    if any(n.xattrs for n in nodes):
        assert any(impl.NodeBlock(raw, count, first).flags & F.F_XATTR
                   for first, count, raw in _writer_py.encode_blocks(nodes, max_nodes=max_nodes)
                   for impl in IMPLS[:1])


@SETTINGS
@given(nodes=_nodes(), data=st.data())
def test_damaged_blocks_fail_alike(nodes: list[Node], data: st.DataObject) -> None:
    first, count, raw = _writer_py.encode_blocks(nodes, max_nodes=64)[0]
    buf = bytearray(raw)
    how = data.draw(st.sampled_from(("flip", "cut", "insert", "count", "first")))
    if how == "flip" and buf:
        for _ in range(data.draw(st.integers(1, 4))):
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    elif how == "cut":
        del buf[data.draw(st.integers(0, len(buf))):]
    elif how == "insert":
        at = data.draw(st.integers(0, len(buf)))
        buf[at:at] = data.draw(st.binary(min_size=1, max_size=12))
    elif how == "count":
        count = data.draw(st.integers(0, count + 3))
    else:
        first = data.draw(st.sampled_from((b"/x", b"", first + b"a")))
    _check_same(bytes(buf), count, first)


@pytest.mark.parametrize("raw,message", [
    (b"\x00\x01/", "records run past the end of the block (3 bytes)"),
    (b"\x00\x01/\x00\x00\x00\x00\x00" + b"\xff" * 10, "varint longer than 10 bytes at block "
     "offset 17"),
    (b"\x00\x01/\x00\x00\x00\x00\x00" + b"\xff" * 9 + b"\x02", "varint exceeds 64 bits at "
     "block offset 17"),
    (b"\x00\x01/\x07", "bad record flags 0x7 for b'/'"),
    (b"\x00\x01/\x00\x00\x00\x00\x00\x01", "negative ino for b'/'"),
    (b"\x00\x01/\x00\x00\x00\x00\x00\x00\x00", "1 stray bytes after 1 records"),
    (b"\x00\x01/\x00\x00\x00\x00\x00\xfe" + b"\xff" * 8 + b"\x01"
     b"\x01\x01a\x00\x00\x00\x00\x00\x02",
     "ino 9223372036854775808 exceeds 2**63 - 1 for b'/a'"),
    (b"\x00\x05/", "field of 5 bytes runs past the end at offset 2"),
    (b"\x00\x01/\x08\x00\x00\x00\x00\x00\x00", "mtime_nsec 0 out of range for b'/'"),
])
def test_hand_made_damage(raw: bytes, message: str) -> None:
    assert _check_same(raw, 2 if "/a" in message else 1, b"/") == ("Corrupt", message)


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_bisect_left_matches_bisect(impl: ModuleType) -> None:
    nodes = [Node(b"/", "dir", 0o755, 0, 0, 0, ino=1)]
    nodes += [Node(b"/" + n, "file", 0o644, 0, 0, 0, ino=i)
              for i, n in enumerate([b"a", b"a-b", b"a.b", b"a0", b"b\xff", b"c"], 2)]
    first, count, raw = _writer_py.encode_blocks(nodes)[0]
    blk = impl.NodeBlock(raw, count, first)
    paths = [n.path for n in nodes]
    for key in paths + [b"", b"/0", b"/a/", b"/a\x00", b"/b", b"/d", b"/\xff\xff"]:
        assert blk.bisect_left(key) == bisect.bisect_left(paths, key), key
    assert blk.nbytes > len(raw)
    with pytest.raises(IndexError):
        blk.record(count)


def test_block_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    nodes = [Node(b"/", "dir", 0o755, 0, 0, 0, ino=1, nlink=2)]
    nodes += [Node(b"/f%05d" % i, "file", 0o644, 0, 0, i, size=i, ino=i + 2)
              for i in range(6000)]
    p = tmp_path / "a.clip"
    p.write_bytes(encode_archive({}, nodes, []))
    with open_archive(p) as a:
        for n in nodes[::97]:  # touch every block
            assert a.lookup(n.path) == n
        blocks, held = a.block_cache_info()
        assert blocks == len(a._blocks) and held > 0
        a.block_cache_bytes = held // 3
        for n in nodes[::-89]:
            assert a.lookup(n.path) == n
        blocks, held2 = a.block_cache_info()
        assert 0 < held2 <= held // 3 and blocks < len(a._blocks)
        assert a.listdir("/") == [n.path[1:] for n in nodes[1:]]
        assert a.block_cache_info()[1] <= held // 3


def test_record_layout_is_node_field_order() -> None:
    """clipcy.archive.record names each position of a decoded record: Node's fields, in
    order, so that readers index records by name and to_node() builds the same Node."""
    from clipcy.archive import record as R

    assert R.FIELDS == Node.FIELDS == Node.__slots__
    assert [getattr(R, name.upper()) for name in R.FIELDS] == list(range(len(R.FIELDS)))


@pytest.mark.skipif(PUREPYTHON, reason="CLIPCY_PUREPYTHON is set")
def test_compiled_layout_matches_the_python_names() -> None:
    """The positions of record.pxd and the flag bits of format.pxd, as compiled into the
    decoder (and cimported by the writer and the mount), equal record.py's and format.py's."""
    from clipcy.archive import _nodeblock
    from clipcy.archive import record as R

    compiled = _nodeblock.compiled_layout()
    python = {name.upper(): getattr(R, name.upper()) for name in R.FIELDS}
    python.update({name: getattr(F, name) for name in compiled if name not in python})
    assert compiled == python
    assert {n for n in dir(F) if n.startswith("F_")} <= set(compiled)


@pytest.mark.parametrize("impl", IMPLS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_record_fields_by_name(impl: ModuleType) -> None:
    """Every field of a decoded record, read by its name, is the Node's field of that name."""
    from clipcy.archive import record as R

    nodes = [Node(b"/", "dir", 0o755, 0, 0, 5, ino=1, nlink=3),
             Node(b"/a", "file", 0o640, 7, 8, -3, 999, size=10, xattrs={"user.k": b"v"}, ino=2,
                  nlink=2, layer=1, offset=4096, sparse=((0, 4), (8, 2)), digest=bytes(32)),
             Node(b"/b", "block", 0o600, 1, 2, 3, devmajor=8, devminor=1, ino=3),
             Node(b"/c", "symlink", 0o777, 0, 0, 4, linkname=b"a", ino=4)]
    ((first, count, raw),) = _writer_py.encode_blocks(nodes)
    block = impl.NodeBlock(raw, count, first)
    for i, node in enumerate(nodes):
        rec = block.record(i)
        for name in R.FIELDS:
            got = rec[getattr(R, name.upper())]
            assert (dict(got) if name == "xattrs" else got) == getattr(node, name), name
        assert R.to_node(rec) == node
