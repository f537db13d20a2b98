"""Type stub for the compiled overlay merge (clipcy/image/_merge.pyx); the twin has the same API."""

from collections.abc import Iterable, Iterator

from clipcy.image._merge_py import Entry
from clipcy.node import Node

WHITEOUT: bytes
OPAQUE: bytes

class Inode:
    type: str
    mode: int
    uid: int
    gid: int
    mtime_sec: int
    mtime_nsec: int
    size: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]
    layer: int
    offset: int
    sparse: tuple[tuple[int, int], ...] | None
    digest: bytes
    children: set[bytes] | None
    links: int
    ino: int
    def __init__(self, type: str, mode: int, uid: int, gid: int, mtime: float) -> None: ...

class Tree:
    paths: dict[bytes, Inode]
    def __init__(self) -> None: ...
    def remove(self, path: bytes) -> None: ...
    def clear_children(self, path: bytes) -> None: ...
    def resolve_parent(self, path: bytes) -> bytes: ...
    def ensure_parents(self, path: bytes) -> Inode: ...
    def put(self, path: bytes, inode: Inode) -> None: ...

def split_mtime(mtime: float) -> tuple[int, int]: ...
def clean_path(name: bytes) -> bytes: ...
def split_path(path: bytes) -> tuple[bytes, bytes]: ...
def apply_layer(
    tree: Tree, entries: list[Entry], layer: int, digests: dict[int, bytes] | None = None
) -> None: ...
def apply_stream(
    tree: Tree, entries: list[Entry], layer: int, awaiting: dict[int, Inode] | None = None
) -> None: ...
def iter_nodes(tree: Tree) -> Iterator[Node]: ...
def encode_tree(tree: Tree) -> list[tuple[bytes, int, bytes]]: ...
def to_nodes(tree: Tree) -> list[Node]: ...
def merge_layers(
    layers: Iterable[Iterable[Entry]], digests: list[dict[int, bytes]] | None = None
) -> list[Node]: ...
