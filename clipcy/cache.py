"""A cache of indexed layers, keyed by the compressed blob's digest (index-layout --cache-dir).

Images built FROM the same base share their lower layers; with the cache, re-indexing such an
image streams only the layers it has not seen. An entry holds what streaming a layer yields:
its tar entries, resume points, uncompressed size, diff_id and (if asked) file digests.

- Safe under concurrent builds: entries are written to a temp file and renamed into place, so
  a reader sees a whole entry or none; a corrupt or foreign entry (checked by a sha256 over
  its payload) is ignored and rewritten.
- Bounded: after a write, the least recently used entries are removed until the directory is
  under its size limit (reads refresh an entry's mtime).
- Entries are marshal data behind a magic, a version and a checksum; they are only ever read
  back by clipcy from the user's own cache directory.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import os
import tempfile
from pathlib import Path
from typing import Any

from clipcy.access import LayerAccess

log = logging.getLogger("clipcy")

MAGIC = b"CLIPCYLC"
VERSION = 1
DEFAULT_LIMIT = 2 << 30  # bytes


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clipcy" / "layers"


class CachedEntry:
    """A tar entry read back from the cache (the attributes merge.py needs)."""

    __slots__ = (
        "name",
        "type",
        "mode",
        "uid",
        "gid",
        "size",
        "mtime",
        "linkname",
        "devmajor",
        "devminor",
        "xattrs",
        "offset",
        "sparse",
    )

    def __init__(self, t: tuple[Any, ...]) -> None:
        (
            self.name,
            self.type,
            self.mode,
            self.uid,
            self.gid,
            self.size,
            self.mtime,
            self.linkname,
            self.devmajor,
            self.devminor,
            self.xattrs,
            self.offset,
            self.sparse,
        ) = t


def _entry_tuple(e: Any) -> tuple[Any, ...]:
    sparse = tuple(tuple(r) for r in e.sparse) if e.sparse is not None else None
    return (
        e.name,
        e.type,
        e.mode,
        e.uid,
        e.gid,
        e.size,
        e.mtime,
        e.linkname,
        e.devmajor,
        e.devminor,
        dict(e.xattrs),
        e.offset,
        sparse,
    )


class LayerCache:
    def __init__(self, directory: str | os.PathLike[str], limit: int = DEFAULT_LIMIT) -> None:
        self.dir = Path(directory)
        self.limit = limit

    def _path(self, key: str) -> Path:
        return self.dir / (hashlib.sha256(key.encode()).hexdigest() + ".layer")

    @staticmethod
    def key(digest: str, span: int | None, file_digests: bool) -> str:
        return f"v{VERSION}|{digest}|span={span}|digests={int(file_digests)}"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        head = len(MAGIC) + 1 + 32
        if len(raw) < head or raw[: len(MAGIC)] != MAGIC or raw[len(MAGIC)] != VERSION:
            log.warning("ignoring a foreign cache entry %s", path)
            return None
        payload = raw[head:]
        if hashlib.sha256(payload).digest() != raw[len(MAGIC) + 1 : head]:
            log.warning("ignoring a corrupt cache entry %s", path)
            return None
        try:
            obj = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):
            log.warning("ignoring an unreadable cache entry %s", path)
            return None
        if not isinstance(obj, dict) or obj.get("key") != key:
            return None
        try:
            os.utime(path)  # least recently used goes first
        except OSError:
            pass
        acc = obj["access"]
        obj["access"] = LayerAccess(
            acc[0],
            acc[1],
            [tuple(p) for p in acc[2]],
            [tuple(f) for f in acc[3]],
        )
        obj["entries"] = [CachedEntry(t) for t in obj["entries"]]
        return obj

    def put(
        self,
        key: str,
        entries: list[Any],
        access: LayerAccess,
        compression: str,
        uncompressed_size: int,
        diff_id: str | None,
        file_digests: dict[int, bytes] | None,
    ) -> None:
        obj = {
            "key": key,
            "entries": [_entry_tuple(e) for e in entries],
            "access": (access.kind, access.span, access.points, access.frames),
            "compression": compression,
            "uncompressed_size": uncompressed_size,
            "diff_id": diff_id,
            "file_digests": file_digests,
        }
        payload = marshal.dumps(obj)
        data = MAGIC + bytes([VERSION]) + hashlib.sha256(payload).digest() + payload
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self._path(key))
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as e:  # a cache that cannot be written is not an error
            log.warning("cannot write the layer cache in %s: %s", self.dir, e.strerror or e)
            return
        self.prune()

    def prune(self) -> None:
        try:
            entries = []
            for p in self.dir.glob("*.layer"):
                try:
                    st = p.stat()
                except OSError:
                    continue
                entries.append((st.st_mtime, st.st_size, p))
        except OSError:
            return
        total = sum(size for _, size, _ in entries)
        for _, size, p in sorted(entries):
            if total <= self.limit:
                break
            try:
                p.unlink()
                total -= size
            except OSError:
                pass
