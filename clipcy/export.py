"""`clipctl export`: one JSON object per node, the schema of ../shared/corpus/expected."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from clipcy.node import BLOCK, CHAR, FILE, SYMLINK, Node


def decode_path(path: bytes) -> str:
    """Path bytes as text; non-UTF-8 bytes survive as lone surrogates (surrogateescape)."""
    return path.decode("utf-8", "surrogateescape")


def node_record(node: Node) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "path": decode_path(node.path),
        "type": node.type,
        "mode": node.mode,
        "uid": node.uid,
        "gid": node.gid,
        "size": node.st_size if node.type in (FILE, SYMLINK) else 0,
        "mtime": node.mtime_sec,
        "nlink": node.nlink,
        "ino": node.ino,
        "xattrs": {k: base64.b64encode(v).decode("ascii") for k, v in sorted(node.xattrs.items())},
    }
    if node.type == SYMLINK:
        rec["linkname"] = decode_path(node.linkname)
    if node.type in (CHAR, BLOCK):
        rec["devmajor"] = node.devmajor
        rec["devminor"] = node.devminor
    if node.type == FILE:
        rec["layer"] = node.layer
        rec["offset"] = node.offset
        if node.sparse is not None:
            rec["sparse"] = [list(run) for run in node.sparse]
        if node.digest:
            rec["sha256"] = node.digest.hex()
    return rec


def export_lines(nodes: Iterable[Node]) -> Iterator[str]:
    for node in nodes:
        yield json.dumps(node_record(node), sort_keys=True) + "\n"


def write_export(nodes: Iterable[Node], out: IO[str]) -> int:
    count = 0
    for line in export_lines(nodes):
        out.write(line)
        count += 1
    return count
