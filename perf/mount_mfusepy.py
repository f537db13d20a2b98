"""A quick mfusepy (ctypes, high-level path API) prototype of the mount, for perf/mount.py's
binding comparison only: the same Archive and span cache behind libfuse3's high-level API.

    python perf/mount_mfusepy.py ARCHIVE MOUNTPOINT    (foreground; umount to stop)

Path based: every call gets a path string, looked up in the archive (no node ids); readdir
returns names with their attributes (mfusepy has no readdirplus); kernel timeouts as ours.
"""

from __future__ import annotations

import errno
import stat
import sys
from typing import Any

import mfusepy  # type: ignore[import-not-found]

from clipcy.archive import record as R
from clipcy.archive.reader import open_archive
from clipcy.fusemount.spans import DecodedSpanCache

_IFMT = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK,
         "char": stat.S_IFCHR, "block": stat.S_IFBLK, "fifo": stat.S_IFIFO}


class ArchiveOps(mfusepy.Operations):  # type: ignore[misc]
    def __init__(self, path: str) -> None:
        self.arc = open_archive(path)
        self.spans = DecodedSpanCache(self.arc.layer_reader, 64 << 20)

    def _rec(self, path: str) -> Any:
        hit = self.arc.locate(path.encode("utf-8", "surrogateescape"))
        if hit is None:
            raise mfusepy.FuseOSError(errno.ENOENT)
        _, rec = hit
        return rec

    @staticmethod
    def _attrs(r: Any) -> dict[str, Any]:
        t = r[R.TYPE]
        size = r[R.SIZE] if t == "file" else len(r[R.LINKNAME]) if t == "symlink" else 0
        return {"st_mode": _IFMT[t] | r[R.MODE], "st_ino": r[R.INO], "st_nlink": r[R.NLINK],
                "st_uid": r[R.UID], "st_gid": r[R.GID], "st_size": size,
                "st_mtime": r[R.MTIME_SEC] + r[R.MTIME_NSEC] / 1e9,
                "st_blocks": (size + 511) // 512}

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        return self._attrs(self._rec(path))

    def readdir(self, path: str, fh: Any) -> list[Any]:
        raw = path.encode("utf-8", "surrogateescape")
        kids = self.arc.children(raw)
        return [".", ".."] + [(n.decode("utf-8", "surrogateescape"), self._attrs(r), 0)
                              for n, _, r in kids]

    def readlink(self, path: str) -> str:
        return str(self._rec(path)[R.LINKNAME].decode("utf-8", "surrogateescape"))

    def open(self, path: str, flags: int) -> int:
        return 0

    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        r = self._rec(path)
        n = min(size, r[R.SIZE] - offset)
        return self.spans.read(r[R.LAYER], r[R.OFFSET] + offset, n) if n > 0 else b""


def main() -> None:
    mfusepy.FUSE(ArchiveOps(sys.argv[1]), sys.argv[2], foreground=True, ro=True,
                 entry_timeout=1e9, attr_timeout=1e9, negative_timeout=1e9, kernel_cache=True)


if __name__ == "__main__":
    main()
