"""Type stub for the compiled node block decoder (same API as clipcy.archive._nodeblock_py)."""

from clipcy.archive._nodeblock_py import Corrupt as Corrupt
from clipcy.archive.record import Record

__all__ = ["Corrupt", "NodeBlock", "decode_block"]


class NodeBlock:
    count: int
    nbytes: int
    flags: int

    def __init__(self, raw: bytes, count: int, first: bytes) -> None: ...
    def path(self, i: int) -> bytes: ...
    def record(self, i: int) -> Record: ...
    def bisect_left(self, key: bytes) -> int: ...


def decode_block(raw: bytes, count: int, first: bytes) -> tuple[list[bytes], list[Record]]: ...


def compiled_layout() -> dict[str, int]: ...
