"""Property tests: the compiled merge (clipcy.image._merge) and its pure-Python twin
(clipcy.image._merge_py) give equal Node lists, the same log lines and the same errors for any
layers, including whiteouts, opaque dirs, replacements, hardlinks, symlinked parents, loops,
odd names ('.', '..', '//') and odd mtimes."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import E

from clipcy._select import PUREPYTHON
from clipcy.archive import _writer_py
from clipcy.errors import ArchiveWriteError
from clipcy.image import _merge_py

if PUREPYTHON:
    pytest.skip("compares the compiled merge with its twin", allow_module_level=True)
from clipcy.image import _merge  # noqa: E402

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# few components, so paths collide, replace and shadow each other
_component = st.sampled_from(
    [b"a", b"b", b"usr", b"lib", b"lib64", b".", b"..", b"", b".wh.a", b".wh.b", b".wh.lib",
     b".wh..wh..opq", b".wh..wh.plnk", b"\xff\xfe", b"x.wh.y"]
)
_name = st.lists(_component, min_size=1, max_size=4).map(b"/".join) | st.sampled_from(
    [b"./", b".", b"/", b"./a/", b"//a//b", b"./.wh.a", b"a/./b/../c"]
)
_mtime = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, 1.5, -0.5, -1e-10, 1700000000.123456789, 0.9999999999, 2.0**62]
)
_types = st.sampled_from(["file", "dir", "symlink", "hardlink", "char", "block", "fifo", "gnu-x"])


@st.composite
def entries(draw: st.DrawFn) -> E:
    kind = draw(_types)
    link = draw(_name.map(lambda n: (b"/" + n) if draw(st.booleans()) else n))
    sparse = draw(st.none() | st.lists(st.tuples(st.integers(0, 1 << 40), st.integers(0, 99))))
    return E(
        name=draw(_name),
        type=kind,
        mode=draw(st.integers(0, 0o177777)),
        uid=draw(st.integers(0, 1 << 40)),
        gid=draw(st.integers(0, 70000)),
        size=draw(st.integers(0, 1 << 40)),
        mtime=draw(_mtime),
        linkname=link if kind in ("symlink", "hardlink") else b"",
        devmajor=draw(st.integers(0, 255)),
        devminor=draw(st.integers(0, 255)),
        xattrs=draw(st.dictionaries(st.sampled_from(["user.b", "user.a", "security.c"]),
                                    st.binary(max_size=4), max_size=3)),
        offset=draw(st.integers(0, 1 << 20)) * 512,
        sparse=tuple(sparse) if sparse else None,
    )


_layers = st.lists(st.lists(entries(), max_size=12), max_size=4)


def _run(impl: ModuleType, fn: Any, caplog: pytest.LogCaptureFixture) -> tuple[Any, Any]:
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="clipcy"):
            out = ("ok", fn(impl))
    except Exception as e:  # noqa: BLE001 -- compared between the twins
        out = ("error", type(e).__name__, str(e))
    return out, [(r.levelname, r.getMessage()) for r in caplog.records]


def _both(fn: Any, caplog: pytest.LogCaptureFixture) -> Any:
    cy = _run(_merge, fn, caplog)
    py = _run(_merge_py, fn, caplog)
    assert cy == py
    return cy


@SETTINGS
@given(layers=_layers)
def test_merge_layers_equal(layers: list[list[E]], caplog: pytest.LogCaptureFixture) -> None:
    digests = [{e.offset: bytes([i]) * 32 for e in layer} for i, layer in enumerate(layers)]
    _both(lambda m: m.merge_layers(layers), caplog)
    _both(lambda m: m.merge_layers(layers, digests), caplog)


@SETTINGS
@given(first=st.lists(entries(), max_size=12), batches=st.integers(1, 4),
       rest=st.lists(st.lists(entries(), max_size=8), max_size=2))
def test_streamed_layer_equal(
    first: list[E], batches: int, rest: list[list[E]], caplog: pytest.LogCaptureFixture
) -> None:
    """The indexer's use: layer 0 streamed in batches (digests filled in afterwards through
    the awaiting inodes), later layers applied whole, then iter_nodes."""

    def run(m: ModuleType) -> Any:
        tree = m.Tree()
        awaiting: dict[int, Any] = {}
        step = max(1, len(first) // batches)
        for i in range(0, len(first), step):
            batch = list(first[i : i + step])
            m.apply_stream(tree, batch, 0, awaiting)
            assert batch == [None] * len(batch)  # released as applied
        for offset, inode in awaiting.items():
            inode.digest = offset.to_bytes(8, "big")
        for i, layer in enumerate(rest, 1):
            m.apply_layer(tree, list(layer), i)
        counts: dict[str, int] = {}
        for inode in tree.paths.values():
            counts[inode.type] = counts.get(inode.type, 0) + 1
        return sorted(awaiting), counts, list(m.iter_nodes(tree)), tree.paths

    _both(run, caplog)


@SETTINGS
@given(layers=_layers)
def test_encode_tree_equal(layers: list[list[E]], caplog: pytest.LogCaptureFixture) -> None:
    """index-layout writes the node blocks straight from the tree (encode_tree): the compiled
    merge through the compiled writer's encoder, without Nodes; both must give the bytes the
    twin writer makes of the twin's Nodes."""
    digests = [{e.offset: bytes([i]) * 32 for e in layer} for i, layer in enumerate(layers)]

    def run(m: ModuleType) -> Any:
        tree = m.Tree()
        for i, layer in enumerate(layers):
            m.apply_layer(tree, list(layer), i, digests[i])
        return m.encode_tree(tree), tree.paths

    (got, _logs) = _both(run, caplog)
    try:
        want: Any = ("ok", _writer_py.encode_blocks(_merge_py.merge_layers(layers, digests)))
    except ArchiveWriteError as e:  # e.g. an mtime the format cannot hold: the same refusal
        want = ("error", type(e).__name__, str(e))
    assert (got[0], got[1][0]) == want if got[0] == "ok" else got == want


@SETTINGS
@given(name=st.binary(max_size=24) | _name, mtime=_mtime)
def test_helpers_equal(name: bytes, mtime: float, caplog: pytest.LogCaptureFixture) -> None:
    path = _both(lambda m: m.clean_path(name), caplog)[0][1]
    _both(lambda m: m.split_path(path), caplog)
    _both(lambda m: m.split_mtime(mtime), caplog)


def test_wrong_types_fail_alike(caplog: pytest.LogCaptureFixture) -> None:
    """A str name is a TypeError in both (the message differs: Python's own)."""
    for impl in (_merge, _merge_py):
        with pytest.raises(TypeError):
            impl.merge_layers([[E("etc/a")]])  # type: ignore[arg-type]
