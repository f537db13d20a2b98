"""Node block decoder selector: the compiled clipcy.archive._nodeblock, or its pure-Python twin.

NodeBlock(raw, count, first) validates a decompressed block (docs/FORMAT.md "Node records")
and serves path(i), record(i), bisect_left(key); decode_block() returns every record at once.
Both implementations give the same results and raise the same Corrupt messages.
"""

from __future__ import annotations

from clipcy._select import PUREPYTHON, compiled, implementation
from clipcy.archive._nodeblock_py import Corrupt
from clipcy.archive.record import Record

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING or PUREPYTHON:
    from clipcy.archive import _nodeblock_py as _impl
else:
    _impl = compiled("clipcy.archive._nodeblock", "clipcy.archive._nodeblock_py")

IMPLEMENTATION: str = implementation(_impl)
NodeBlock = _impl.NodeBlock
decode_block = _impl.decode_block

__all__ = ["IMPLEMENTATION", "Corrupt", "NodeBlock", "Record", "decode_block"]
