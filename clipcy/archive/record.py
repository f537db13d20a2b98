"""The layout of a decoded node record: where each field sits in the tuple.

A node block decoder (nodeblock.py: the compiled _nodeblock.pyx or its twin) returns a record
as a tuple of the Node's fields in dataclass order, xattrs as a tuple of (name, value) pairs so
that a cached record is immutable. Readers index it by these names, never by number: the
compiled modules take the same positions from record.pxd, and tests/test_nodeblock.py checks
that both agree with Node.
"""

from __future__ import annotations

from clipcy.node import Node

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "Record", "FIELDS", "to_node",
    "PATH", "TYPE", "MODE", "UID", "GID", "MTIME_SEC", "MTIME_NSEC", "SIZE", "LINKNAME",
    "DEVMAJOR", "DEVMINOR", "XATTRS", "INO", "NLINK", "LAYER", "OFFSET", "SPARSE", "DIGEST",
]

Record = tuple["Any", ...]  # (a string: Any is a type-only import)

PATH = 0
TYPE = 1
MODE = 2
UID = 3
GID = 4
MTIME_SEC = 5
MTIME_NSEC = 6
SIZE = 7
LINKNAME = 8
DEVMAJOR = 9
DEVMINOR = 10
XATTRS = 11
INO = 12
NLINK = 13
LAYER = 14
OFFSET = 15
SPARSE = 16
DIGEST = 17

# the Node field at each position
FIELDS = ("path", "type", "mode", "uid", "gid", "mtime_sec", "mtime_nsec", "size", "linkname",
          "devmajor", "devminor", "xattrs", "ino", "nlink", "layer", "offset", "sparse",
          "digest")


def to_node(rec: Record) -> Node:
    """A fresh Node from a record (xattrs become a dict)."""
    node = Node(*rec)  # the positions are Node's field order (FIELDS)
    node.xattrs = dict(rec[XATTRS])
    return node
