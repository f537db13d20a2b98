"""Overlay the layers' tar entries into one root filesystem, as umoci and containers/storage do.

Rules (OCI image-spec, "Applying changesets"):
- `.wh.NAME` removes NAME (and its subtree) of the LOWER layers; `.wh..wh..opq` hides the
  lower layers' children of its directory. Neither touches the same layer's own entries,
  whatever their order in the tar, so a layer's whiteouts are applied before its entries.
- A later entry replaces an earlier one; a non-directory replacing anything (or anything
  replacing a non-directory) removes the old subtree; a directory over a directory keeps the
  children and takes the new metadata (xattrs included: the header is the full new state).
- Hardlinks share the inode of their target (same layer or lower); missing parent
  directories are created (0755 root:root, mtime 0); whiteout files never appear.
"""

from __future__ import annotations

import logging
import math
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from clipcy.node import BLOCK, CHAR, DIR, FIFO, FILE, SYMLINK, Node
from clipcy.pathwalk import follow_symlinks

log = logging.getLogger("clipcy")

WHITEOUT = b".wh."
OPAQUE = b".wh..wh..opq"


class Entry(Protocol):
    """What merge needs of a tar entry (clipcy.tar.tarparse.TarEntry has it)."""

    name: bytes
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: float
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]
    offset: int
    sparse: Any


_NO_XATTRS: dict[str, bytes] = {}


class Inode:
    """What hardlinked paths share. Directories get one each too."""

    __slots__ = (
        "type",
        "mode",
        "uid",
        "gid",
        "mtime_sec",
        "mtime_nsec",
        "size",
        "linkname",
        "devmajor",
        "devminor",
        "xattrs",
        "layer",
        "offset",
        "sparse",
        "digest",
        "children",
        "links",
        "ino",
    )

    def __init__(self, type: str, mode: int, uid: int, gid: int, mtime: float) -> None:
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_sec, self.mtime_nsec = split_mtime(mtime)
        self.size = 0
        self.linkname = b""
        self.devmajor = 0
        self.devminor = 0
        self.xattrs: dict[str, bytes] = _NO_XATTRS  # shared, never mutated: saves a dict each
        self.layer = -1
        self.offset = 0
        self.sparse: tuple[tuple[int, int], ...] | None = None
        self.digest = b""
        # directories: the paths of its children (the same bytes objects as the tree's keys)
        self.children: set[bytes] | None = set() if type == DIR else None
        self.links = 0  # paths in the tree naming this inode (hardlinks share one)
        self.ino = 0  # assigned in path order by iter_nodes


def split_mtime(mtime: float) -> tuple[int, int]:
    if mtime.is_integer():  # the common case; False for inf and nan
        return int(mtime), 0
    if not math.isfinite(mtime):
        return 0, 0
    sec = math.floor(mtime)
    nsec = min(int(round((mtime - sec) * 1e9)), 999_999_999)
    return sec, nsec


def clean_path(name: bytes) -> bytes:
    """A tar member name as an absolute, normalised path; '..' cannot climb above '/'."""
    p = name
    while p.startswith(b"./"):
        p = p[2:]
    p = p.strip(b"/")
    if b"//" not in p and b"/." not in p and not p.startswith(b"."):
        return b"/" + p  # already normal: no empty, '.' or '..' component
    path = posixpath.normpath(b"/" + p)
    if path.startswith(b"//"):  # normpath keeps a leading '//' (POSIX allows it)
        path = b"/" + path.lstrip(b"/")
    return path


def split_path(path: bytes) -> tuple[bytes, bytes]:
    """(parent, name) of a clean absolute path; faster than posixpath.split."""
    i = path.rfind(b"/")
    return (path[:i] or b"/"), path[i + 1 :]


_TYPE_MAP = {
    "file": FILE,
    "dir": DIR,
    "symlink": SYMLINK,
    "char": CHAR,
    "block": BLOCK,
    "fifo": FIFO,
}


class Tree:
    """The root filesystem being built: path -> Inode, plus each directory's children."""

    def __init__(self) -> None:
        self.paths: dict[bytes, Inode] = {b"/": Inode(DIR, 0o755, 0, 0, 0.0)}

    # -- removal ---------------------------------------------------------------------
    def remove(self, path: bytes) -> None:
        inode = self.paths.pop(path, None)
        if inode is None:
            return
        inode.links -= 1
        pnode = self.paths.get(split_path(path)[0])
        if pnode is not None and pnode.children is not None:
            pnode.children.discard(path)
        self._remove_children(inode)

    def _remove_children(self, inode: Inode) -> None:
        stack = [inode]
        while stack:
            node = stack.pop()
            if node.children:
                for child in node.children:
                    sub = self.paths.pop(child, None)
                    if sub is not None:
                        sub.links -= 1
                        stack.append(sub)
                node.children.clear()

    def clear_children(self, path: bytes) -> None:
        inode = self.paths.get(path)
        if inode is not None and inode.children is not None:
            self._remove_children(inode)

    # -- symlinks in parent directories ---------------------------------------------
    def resolve_parent(self, path: bytes) -> bytes:
        """path with symlinks among its parent directories followed inside the tree, as
        containerd's RootPath and umoci's SecureJoin do (a layer's "usr/lib64/x" lands in
        usr/lib/x when usr/lib64 -> lib); the last component itself is never followed."""
        parent, name = split_path(path)
        pnode = self.paths.get(parent)
        if parent == b"/" or (pnode is not None and pnode.type == DIR):
            return path  # the common case: the parent is a directory already

        def target_of(p: bytes) -> bytes | None:
            node = self.paths.get(p)
            return node.linkname if node is not None and node.type == SYMLINK else None

        # a loop is left unfollowed: the entry then replaces the link with a directory
        resolved = follow_symlinks(parent, target_of)[0]
        return (b"" if resolved == b"/" else resolved) + b"/" + name

    # -- insertion -------------------------------------------------------------------
    def ensure_parents(self, path: bytes) -> Inode:
        """The parent directory of path, creating missing ones; returns the parent."""
        parent = split_path(path)[0]
        pnode = self.paths.get(parent)
        if pnode is not None and pnode.type == DIR:
            return pnode
        if pnode is not None:
            log.warning(
                "replacing non-directory %s with a directory to hold %s",
                parent.decode(errors="replace"),
                path.decode(errors="replace"),
            )
            self.remove(parent)
        gp = self.ensure_parents(parent)
        pnode = Inode(DIR, 0o755, 0, 0, 0.0)
        self._attach(gp, parent, pnode)
        return pnode

    def _attach(self, pnode: Inode, path: bytes, inode: Inode) -> None:
        self.paths[path] = inode
        inode.links += 1
        assert pnode.children is not None
        pnode.children.add(path)

    def put(self, path: bytes, inode: Inode) -> None:
        if path == b"/":
            if inode.type == DIR:  # the root takes the metadata of a "./" entry
                inode.children = self.paths[b"/"].children
                inode.links = 1
                self.paths[b"/"] = inode
            return
        old = self.paths.get(path)
        if old is not None:
            if old.type == DIR and inode.type == DIR and old is not inode:
                inode.children = old.children  # dir over dir keeps the children
                inode.links, old.links = 1, 0
                self.paths[path] = inode
                return
            self.remove(path)
        pnode = self.ensure_parents(path)
        self._attach(pnode, path, inode)


def _inode_from_entry(e: Entry, layer: int, digests: dict[int, bytes] | None) -> Inode:
    node_type = _TYPE_MAP.get(e.type, FILE)
    inode = Inode(node_type, e.mode & 0o7777, e.uid, e.gid, e.mtime)
    if e.xattrs:
        inode.xattrs = dict(e.xattrs)
    if node_type == FILE:
        inode.size = e.size
        inode.layer = layer
        inode.offset = e.offset
        inode.sparse = tuple((int(a), int(b)) for a, b in e.sparse) if e.sparse else None
        if digests is not None:
            inode.digest = digests.get(e.offset, b"")
    elif node_type == SYMLINK:
        inode.linkname = e.linkname
    elif node_type in (CHAR, BLOCK):
        inode.devmajor = e.devmajor
        inode.devminor = e.devminor
    return inode


def apply_layer(
    tree: Tree, entries: list[Entry], layer: int, digests: dict[int, bytes] | None = None
) -> None:
    """Apply one layer's entries (in tar order) on top of tree.

    The list is consumed: each entry is released once applied, so the layer's entries and
    the tree it builds are not both held whole.
    """
    removals = []
    opaques = []
    for e in entries:
        if WHITEOUT not in e.name:  # cheap test; most entries are not whiteouts
            continue
        parent, name = split_path(tree.resolve_parent(clean_path(e.name)))
        if name.startswith(WHITEOUT):
            if name == OPAQUE:
                opaques.append(parent)
            elif not name.startswith(WHITEOUT + WHITEOUT):  # .wh..wh.plnk etc.: AUFS metadata
                removals.append(clean_path(parent + b"/" + name[len(WHITEOUT) :]))
    # Whiteouts hide only lower layers: apply them before this layer's own entries.
    for path in removals:
        if path != b"/":
            tree.remove(path)
    for path in opaques:
        tree.clear_children(path)
    _apply_entries(tree, entries, layer, digests, None)
    entries.clear()


def apply_stream(
    tree: Tree, entries: list[Entry], layer: int, awaiting: dict[int, Inode] | None = None
) -> None:
    """Apply a batch of entries of a layer with nothing below it (layer 0), as they stream:
    its whiteouts hide nothing, so tar order is merge order. Files whose digests are not
    known yet are put in awaiting (data offset -> inode) when it is given."""
    _apply_entries(tree, entries, layer, None, awaiting)


def _apply_entries(
    tree: Tree,
    entries: list[Entry],
    layer: int,
    digests: dict[int, bytes] | None,
    awaiting: dict[int, Inode] | None,
) -> None:
    """Put entries into the tree in order, releasing each from the list once applied."""
    for i, e in enumerate(entries):
        entries[i] = None  # type: ignore[call-overload]
        path = clean_path(e.name)
        if split_path(path)[1].startswith(WHITEOUT):
            continue  # whiteouts never appear in the tree
        path = tree.resolve_parent(path)
        if e.type == "hardlink":
            target = tree.resolve_parent(clean_path(e.linkname))
            inode = tree.paths.get(target)
            if inode is None or inode.type == DIR:
                log.warning(
                    "layer %d: hardlink %s -> %s: target %s; skipped",
                    layer,
                    path.decode(errors="replace"),
                    target.decode(errors="replace"),
                    "missing" if inode is None else "is a directory",
                )
                continue
            if target == path:
                continue
            tree.put(path, inode)
        else:
            inode = _inode_from_entry(e, layer, digests)
            if awaiting is not None and inode.type == FILE:
                awaiting[inode.offset] = inode
            tree.put(path, inode)


def iter_nodes(tree: Tree) -> Iterator[Node]:
    """The tree as Nodes in path-byte order, with inode numbers and link counts.

    One pass that empties the tree as it goes, so the tree and a list of Nodes never both
    sit in memory (the writer consumes the Nodes as they come).
    """
    items: list[tuple[bytes, Inode] | None] = list(sorted(tree.paths.items()))
    tree.paths = {}
    subdirs: dict[bytes, int] = {}
    for item in items:
        assert item is not None
        path, inode = item
        if inode.type == DIR and path != b"/":
            parent = split_path(path)[0]
            subdirs[parent] = subdirs.get(parent, 0) + 1
    next_ino = 0
    for i, item in enumerate(items):
        assert item is not None
        path, inode = item
        items[i] = None  # release the inode (unless a hardlink still holds it)
        if not inode.ino:
            next_ino += 1
            inode.ino = next_ino
        nlink = 2 + subdirs.pop(path, 0) if inode.type == DIR else inode.links
        xattrs = dict(sorted(inode.xattrs.items())) if inode.xattrs else _NO_XATTRS
        # positional: Node's field order (path, type, mode, uid, gid, mtime_sec, mtime_nsec,
        # size, linkname, devmajor, devminor, xattrs, ino, nlink, layer, offset, sparse, digest)
        yield Node(
            path,
            inode.type,
            inode.mode,
            inode.uid,
            inode.gid,
            inode.mtime_sec,
            inode.mtime_nsec,
            inode.size,
            inode.linkname,
            inode.devmajor,
            inode.devminor,
            xattrs,
            inode.ino,
            nlink,
            inode.layer,
            inode.offset,
            inode.sparse,
            inode.digest,
        )


def encode_tree(tree: Tree) -> list[tuple[bytes, int, bytes]]:
    """The tree as the archive's node blocks (empties the tree). The compiled twin writes
    them straight from its inodes; here they are the writer's encoding of iter_nodes."""
    from clipcy.archive import _writer_py

    return _writer_py.encode_blocks(iter_nodes(tree))


def to_nodes(tree: Tree) -> list[Node]:
    """iter_nodes as a list (empties the tree)."""
    return list(iter_nodes(tree))


def merge_layers(
    layers: Iterable[Iterable[Entry]], digests: list[dict[int, bytes]] | None = None
) -> list[Node]:
    """The merged tree; digests[i] maps layer i's data offsets to file sha256s, if any."""
    tree = Tree()
    for i, entries in enumerate(layers):
        apply_layer(tree, list(entries), i, digests[i] if digests is not None else None)
    return to_nodes(tree)
