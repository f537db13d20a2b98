"""A cache of indexed layers, keyed by the compressed blob's digest (index-layout --cache-dir).

Images built FROM the same base share their lower layers; with the cache, re-indexing such an
image streams only the layers it has not seen. An entry holds what streaming a layer yields:
its tar entries, resume points, uncompressed size, diff_id and (if asked) file digests.

- Safe under concurrent builds: entries are written to a temp file and renamed into place, so
  a reader sees a whole entry or none; a corrupt or foreign entry (checked by a sha256 over
  its payload) is ignored and rewritten.
- Bounded: after a write, the least recently used entries are removed until the directory is
  under its size limit (reads refresh an entry's mtime).
- A hit must prove the blob is the one that was verified: the entry is keyed by
  the descriptor's digest, but the file at the blob path may have changed since. After a
  blob's sha256 was checked, its stat fingerprint (st_dev, st_ino, size, mtime_ns, ctime_ns,
  as git's index) is kept in a small sidecar file; a later hit whose blob stats the same is
  trusted, any other hit re-hashes the blob against the entry's BLAKE3-128 span checksums
  (computed from the bytes whose sha256 was checked; ~2.5x faster than sha256, a fraction
  of indexing it: indexer._rehash) and fails with the sha256 digest mismatch when it
  differs. Changing a
  file updates its ctime, which no user call can set back, so restoring the mtime with
  utime does not fool it. A fingerprint is recorded only if the file's ctime is more than
  RACY_NS before the verification started ("racy git"): a write during or right after the
  read, in the same timestamp tick, could otherwise leave the fingerprint unchanged.
- An entry is written while its layer streams (batches of tar entries, then a trailer record),
  so it never needs the whole layer's entries in memory: MAGIC, a version byte, records of
  (u32 length, marshal data), and a sha256 of everything before it. Only clipcy reads them
  back, from the user's own cache directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import marshal
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from clipcy._zstd import zstandard
from clipcy.archive.format import EncodedAccess
from clipcy.layers.access import LayerAccess
from clipcy.layers.packing import PackedAccess
from clipcy.storage.spans import SpanTable
from clipcy.tempfiles import TempFile

log = logging.getLogger("clipcy")

MAGIC = b"CLIPCYLC"
VERSION = 7  # 6: span checksums in the access data; 7: 16-byte span digests
_LEN = struct.Struct("<I")
# zstandard contexts are not thread-safe: each writer and each get() makes its own.
DEFAULT_LIMIT = 2 << 30  # bytes
RACY_NS = 1_000_000_000  # a file changed this close to its verification gets no fingerprint
Fingerprint = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, mtime_ns, ctime_ns


def fingerprint(st: os.stat_result) -> Fingerprint:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def trusted_fingerprint(before: os.stat_result, after: os.stat_result,
                        started_ns: int) -> Fingerprint | None:
    """The fingerprint of a file read and verified between two fstats, or None when it cannot
    vouch for the bytes: the file changed while read, or changed too recently (racy)."""
    fp = fingerprint(before)
    if fp != fingerprint(after) or before.st_ctime_ns >= started_ns - RACY_NS:
        return None
    return fp


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


@dataclass(slots=True)
class CachedLayer:
    """A hit: what streaming the layer yielded when it was cached (see LayerCache.get)."""

    entries: list[CachedEntry]  # its tar entries, in tar order
    access: LayerAccess | PackedAccess  # resume points or frames, and span checksums
    compression: str
    uncompressed_size: int
    diff_id: str | None  # the tar's sha256, checked when the entry was written
    file_digests: dict[int, bytes] | None  # data offset -> sha256 of the content, if asked
    encoded: EncodedAccess | None  # the access frame as the archive holds it, if made


class CacheWriter:
    """Appends a layer's entries batch by batch; commit() renames the file into place.
    Made with nothing open: start() creates the temp file, inside the caller's try that
    calls abort() (an interrupt as the writer is returned loses no file)."""

    def __init__(self, cache: LayerCache, key: str) -> None:
        self.cache, self.key = cache, key
        self.tmp = TempFile(cache.dir, ".tmp-")
        self.f: BinaryIO | None = None
        self.sha = hashlib.sha256()
        self.cctx = zstandard.ZstdCompressor(level=1)  # frames carry their content size
        self.failed = False

    def start(self) -> bool:
        """Create the temp file; False (a warning logged) when the cache cannot be written:
        a cache that cannot be written is not an error."""
        try:
            self.cache.dir.mkdir(parents=True, exist_ok=True)
            self.f = open(self.tmp.create(), "wb", closefd=False)  # noqa: SIM115 (abort)
        except OSError as e:
            log.warning("cannot write the layer cache in %s: %s", self.cache.dir, e.strerror or e)
            self.abort()
            return False
        self._write(MAGIC + bytes([VERSION]))
        return not self.failed

    def _write(self, data: bytes) -> None:
        if self.failed or self.f is None:
            return
        try:
            self.f.write(data)
            self.sha.update(data)
        except OSError as e:
            log.warning("cannot write the layer cache in %s: %s", self.cache.dir, e.strerror or e)
            self.abort()

    def _record(self, obj: Any) -> None:
        # zstd level 1: the trailer holds the raw 32 KiB resume windows, which shrink ~10x
        payload = self.cctx.compress(marshal.dumps(obj))
        self._write(_LEN.pack(len(payload)) + payload)

    def add(self, entries: list[Any]) -> None:
        if entries:
            self._record([_entry_tuple(e) for e in entries])

    def commit(
        self,
        access: LayerAccess | PackedAccess,
        compression: str,
        uncompressed_size: int,
        diff_id: str | None,
        file_digests: dict[int, bytes] | None,
        encoded: EncodedAccess | None = None,
    ) -> None:
        self._record(
            {
                "key": self.key,
                "access": (
                    access.kind,
                    access.span,
                    access.points,
                    access.frames,
                    isinstance(access, PackedAccess),
                    _spans_tuple(access.spans),
                ),
                "compression": compression,
                "uncompressed_size": uncompressed_size,
                "diff_id": diff_id,
                "file_digests": file_digests,
                "encoded": tuple(encoded) if encoded is not None else None,
            }
        )
        if self.failed or self.f is None:
            return
        try:
            self.f.write(self.sha.digest())
            self.f.close()
            self.tmp.close()
            os.replace(self.tmp.path, self.cache._path(self.key))
        except BaseException as e:
            self.abort()
            if not isinstance(e, OSError):
                raise
            log.warning("cannot write the layer cache in %s: %s", self.cache.dir, e.strerror or e)
            return
        self.cache.prune()

    def abort(self) -> None:
        """Give the entry up: the temp file and its fd go (nothing after a commit)."""
        self.failed = True
        try:
            if self.f is not None:
                self.f.close()
        except OSError:
            pass
        finally:  # the temp file goes even if a second interrupt lands in the close
            self.tmp.discard()


def _spans_tuple(spans: SpanTable | None) -> tuple[int, list[int], bytes] | None:
    return None if spans is None else (spans.kind, spans.lengths, spans.digests)


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

    def get(self, key: str) -> CachedLayer | None:
        path = self._path(key)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        head = len(MAGIC) + 1
        if len(raw) < head + 32 or raw[: len(MAGIC)] != MAGIC or raw[len(MAGIC)] != VERSION:
            log.warning("ignoring a foreign cache entry %s", path)
            return None
        if hashlib.sha256(raw[:-32]).digest() != raw[-32:]:
            log.warning("ignoring a corrupt cache entry %s", path)
            return None
        records = []
        dctx = zstandard.ZstdDecompressor()
        pos, end = head, len(raw) - 32
        try:
            while pos < end:
                (n,) = _LEN.unpack_from(raw, pos)
                records.append(marshal.loads(dctx.decompress(raw[pos + 4 : pos + 4 + n])))
                pos += 4 + n
        except (ValueError, EOFError, TypeError, struct.error, zstandard.ZstdError):
            log.warning("ignoring an unreadable cache entry %s", path)
            return None
        if not records or not isinstance(records[-1], dict) or records[-1].get("key") != key:
            return None
        try:
            os.utime(path)  # least recently used goes first
        except OSError:
            pass
        obj: dict[str, Any] = records[-1]
        acc = obj["access"]
        kind = PackedAccess if acc[4] else LayerAccess
        enc = obj.get("encoded")
        return CachedLayer(
            entries=[CachedEntry(t) for batch in records[:-1] for t in batch],
            access=kind(acc[0], acc[1], [tuple(p) for p in acc[2]], [tuple(f) for f in acc[3]],
                        SpanTable(*acc[5]) if acc[5] is not None else None),
            compression=obj["compression"],
            uncompressed_size=obj["uncompressed_size"],
            diff_id=obj["diff_id"],
            file_digests=obj["file_digests"],
            encoded=EncodedAccess(*enc) if enc is not None else None,
        )

    def _fp_path(self, key: str, dev: int, ino: int) -> Path:
        return self.dir / f"{hashlib.sha256(key.encode()).hexdigest()}-{dev:x}-{ino:x}.fp"

    def remember(self, key: str, fp: Fingerprint) -> None:
        """Record that the blob with this stat fingerprint was verified for entry key."""
        body = json.dumps({"key": key, "fingerprint": list(fp)}).encode()
        tmp = TempFile(self.dir, ".tmp-")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(tmp.create(), "wb", closefd=False) as f:
                f.write(body)
            tmp.close()
            os.replace(tmp.path, self._fp_path(key, fp[0], fp[1]))
        except BaseException as e:
            tmp.discard()
            if not isinstance(e, OSError):
                raise
            log.warning("cannot write the layer cache in %s: %s", self.dir, e.strerror or e)

    def vouches(self, key: str, st: os.stat_result) -> bool:
        """Whether a blob with this stat was verified for entry key (its fingerprint)."""
        try:
            rec = json.loads(self._fp_path(key, st.st_dev, st.st_ino).read_bytes())
            return bool(rec["key"] == key and tuple(rec["fingerprint"]) == fingerprint(st))
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def writer(self, key: str) -> CacheWriter:
        """A writer for one layer's entry (nothing created until its start())."""
        return CacheWriter(self, key)

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
        try:  # fingerprints of entries that are gone
            for fp in self.dir.glob("*.fp"):
                if not (self.dir / (fp.name.split("-")[0] + ".layer")).exists():
                    fp.unlink(missing_ok=True)
        except OSError:
            pass
