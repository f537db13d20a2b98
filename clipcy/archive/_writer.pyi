"""Type stub for the compiled writer (same API as clipcy.archive._writer_py)."""

from collections.abc import Iterable, Sequence
from typing import Any

from clipcy.archive.format import EncodedAccess
from clipcy.layers.access import LayerAccess
from clipcy.node import Node

__all__ = ["encode_archive", "assemble_archive", "encode_blocks", "encode_access"]


def encode_blocks(
    nodes: Iterable[Node], max_nodes: int = ..., target_bytes: int = ...
) -> list[tuple[bytes, int, bytes]]: ...


def encode_access(i: int, a: LayerAccess) -> bytes: ...


def encode_archive(
    metadata: dict[str, Any], nodes: Iterable[Node],
    access: Sequence[LayerAccess | EncodedAccess]
) -> bytes: ...


def assemble_archive(
    metadata: dict[str, Any], blocks: Sequence[tuple[bytes, int, bytes]],
    access: Sequence[LayerAccess | EncodedAccess]
) -> bytes: ...
