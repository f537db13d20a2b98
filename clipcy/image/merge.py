"""Overlay merge selector: the compiled clipcy.image._merge, or its pure-Python twin _merge_py.

Both apply the same rules (written down in clipcy/image/_merge_py.py), give equal Nodes, log the
same lines and raise the same errors; tests/test_merge.py and tests/test_mergehypothesis.py
run both. merge_layers(layers) -> list[Node]; Tree + apply_layer / apply_stream + iter_nodes
(or encode_tree, the node blocks straight from the tree) for the indexer's streaming use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipcy._select import PUREPYTHON, compiled, implementation
from clipcy.image._merge_py import OPAQUE, WHITEOUT, Entry

if TYPE_CHECKING or PUREPYTHON:
    from clipcy.image import _merge_py as _impl
else:
    _impl = compiled("clipcy.image._merge", "clipcy.image._merge_py")

IMPLEMENTATION: str = implementation(_impl)
Inode = _impl.Inode
Tree = _impl.Tree
apply_layer = _impl.apply_layer
apply_stream = _impl.apply_stream
iter_nodes = _impl.iter_nodes
encode_tree = _impl.encode_tree
merge_layers = _impl.merge_layers
clean_path = _impl.clean_path
split_path = _impl.split_path
split_mtime = _impl.split_mtime

__all__ = [
    "IMPLEMENTATION",
    "OPAQUE",
    "WHITEOUT",
    "Entry",
    "Inode",
    "Tree",
    "apply_layer",
    "apply_stream",
    "clean_path",
    "encode_tree",
    "iter_nodes",
    "merge_layers",
    "split_mtime",
    "split_path",
]
