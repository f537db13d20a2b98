"""Node block decoder selector: the compiled clipcy._nodeblock, or its pure-Python twin.

NodeBlock(raw, count, first) validates a decompressed block (docs/FORMAT.md "Node records")
and serves path(i), record(i), bisect_left(key); decode_block() returns every record at once.
Both implementations give the same results and raise the same Corrupt messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipcy._nodeblock_py import Corrupt, Record
from clipcy._select import PUREPYTHON, compiled, implementation

if TYPE_CHECKING or PUREPYTHON:
    from clipcy import _nodeblock_py as _impl
else:
    _impl = compiled("clipcy._nodeblock", "clipcy._nodeblock_py")

IMPLEMENTATION: str = implementation(_impl)
NodeBlock = _impl.NodeBlock
decode_block = _impl.decode_block

__all__ = ["IMPLEMENTATION", "Corrupt", "NodeBlock", "Record", "decode_block"]
