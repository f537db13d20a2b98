"""The merged file tree: one Node per path of the image's root filesystem.

The merge (merge.py) produces Nodes, the archive writer stores them, the reader gives them
back. Hardlinked paths are separate Nodes sharing `ino`; their data fields are equal.
"""

from __future__ import annotations

from clipcy._fields import Fields

# Node.type values, also the export's "type" strings.
DIR = "dir"
FILE = "file"
SYMLINK = "symlink"
CHAR = "char"
BLOCK = "block"
FIFO = "fifo"
NODE_TYPES = (DIR, FILE, SYMLINK, CHAR, BLOCK, FIFO)


class Node(Fields):
    # The fields, in order: the positional order of __init__, of Node.FIELDS and of a decoded
    # record (clipcy.archive.record). A plain class, not a dataclass: see clipcy._fields.
    __slots__ = ("path", "type", "mode", "uid", "gid", "mtime_sec", "mtime_nsec", "size",
                 "linkname", "devmajor", "devminor", "xattrs", "ino", "nlink", "layer",
                 "offset", "sparse", "digest")

    def __init__(
        self,
        path: bytes,  # b"/"-rooted, no trailing slash (the root is b"/")
        type: str,  # one of NODE_TYPES
        mode: int,  # the 12 permission bits (st_mode & 0o7777)
        uid: int,
        gid: int,
        mtime_sec: int,  # floor of the mtime (may be negative)
        mtime_nsec: int = 0,  # 0 <= nsec < 1e9
        size: int = 0,  # regular files: logical size; 0 otherwise
        linkname: bytes = b"",  # symlinks: the target as stored
        devmajor: int = 0,
        devminor: int = 0,
        xattrs: dict[str, bytes] | None = None,  # None: a new empty dict
        ino: int = 0,  # inode number, 1.. in path order; hardlinks share one
        nlink: int = 1,  # files: link count; dirs: 2 + subdirectories
        layer: int = -1,  # regular files: index of the layer holding the data
        offset: int = 0,  # regular files: data offset in the uncompressed layer stream
        sparse: tuple[tuple[int, int], ...] | None = None,  # (logical offset, length) runs
        digest: bytes = b"",  # optional sha256 of the content (index-layout --file-digests)
    ) -> None:
        self.path = path
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_sec = mtime_sec
        self.mtime_nsec = mtime_nsec
        self.size = size
        self.linkname = linkname
        self.devmajor = devmajor
        self.devminor = devminor
        self.xattrs: dict[str, bytes] = {} if xattrs is None else xattrs
        self.ino = ino
        self.nlink = nlink
        self.layer = layer
        self.offset = offset
        self.sparse = sparse
        self.digest = digest

    @property
    def st_size(self) -> int:
        """The size lstat reports: a file's size, a symlink's target length (the archive
        stores 0 for a symlink), 0 otherwise."""
        return len(self.linkname) if self.type == SYMLINK else self.size

    @property
    def mtime(self) -> float:
        return self.mtime_sec + self.mtime_nsec / 1e9
