"""An on-disk cache of verified compressed spans of remote blobs (--cache-dir, --cache-max-mib).

Keyed by blob digest and span (compressed offset and length): `ROOT/v1/ALG/HH/HEX/OFF-LEN`.
Only spans that passed the archive's span checksum are put; a hit is checked again on the way
out (by the caller, against the same checksum) and also here, against a keyed blake2b stored
in the entry, so a torn or bit-rotted file is a miss (and is deleted), never wrong bytes.

- Atomic: an entry is written to a temp file in its directory and renamed into place, so
  concurrent processes see a whole entry or none; two writers of one span write equal bytes.
- Bounded (LRU): a hit refreshes the entry's mtime; when the bytes this process believes are
  cached pass the limit, it takes a non-blocking flock on ROOT/lock, lists the entries and
  deletes the oldest until the cache is at 90% of the limit (a process that finds the lock
  taken leaves the work to the one holding it). A reader whose entry is deleted under it
  either still holds the open file or gets a miss.
- Survives restarts: nothing is kept in memory but the running size estimate.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("clipcy")

MAGIC = b"CLIPSPN1"
_SUM = 16
DEFAULT_MAX_MIB = 1024
STALE_TMP = 3600.0  # temp files older than this were left by a killed writer


def default_span_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clipcy" / "spans"


def _sum(key: str, data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_SUM, key=key.encode()[:64]).digest()


class DiskSpanCache:
    """get/put of verified spans, shared by threads and processes."""

    def __init__(self, root: str | os.PathLike[str] | None = None,
                 max_bytes: int = DEFAULT_MAX_MIB << 20) -> None:
        self.root = Path(root) if root is not None else default_span_cache_dir()
        self.max_bytes = max_bytes
        self._base = self.root / "v1"
        self._lock = threading.Lock()
        self._approx: int | None = None  # bytes believed cached (None: not scanned yet)
        self.hits = self.misses = 0

    def __repr__(self) -> str:
        return f"<DiskSpanCache {self.root} max {self.max_bytes >> 20} MiB>"

    def _path(self, digest: str, offset: int, length: int) -> Path:
        alg, _, hexpart = digest.partition(":")
        if not alg.isalnum() or not hexpart.isalnum():
            raise ValueError(f"bad digest {digest!r}")
        return self._base / alg / hexpart[:2] / hexpart / f"{offset}-{length}"

    def get(self, digest: str, offset: int, length: int) -> bytes | None:
        path = self._path(digest, offset, length)
        key = path.name + digest
        try:
            with open(path, "rb") as f:
                raw = f.read(len(MAGIC) + _SUM + length + 1)
        except OSError:
            with self._lock:
                self.misses += 1
            return None
        data = raw[len(MAGIC) + _SUM:]
        if (raw[:len(MAGIC)] != MAGIC or len(data) != length
                or raw[len(MAGIC):len(MAGIC) + _SUM] != _sum(key, data)):
            log.warning("span cache: dropping a damaged entry %s", path)
            self._unlink(path)
            with self._lock:
                self.misses += 1
            return None
        try:
            if time.time() - path.stat().st_mtime > 1.0:
                os.utime(path)  # LRU: a hit makes the entry young again
        except OSError:
            pass
        with self._lock:
            self.hits += 1
        log.debug("span cache hit: %s at %d (%d bytes)", digest, offset, length)
        return data

    def has(self, digest: str, offset: int, length: int) -> bool:
        """Whether an entry exists (unchecked: get() checks it)."""
        return self._path(digest, offset, length).exists()

    def put(self, digest: str, offset: int, data: bytes) -> None:
        """Store a span that the caller has verified. Errors (a full disk) only log."""
        if self.max_bytes <= 0 or len(data) > self.max_bytes // 4:
            return
        path = self._path(digest, offset, len(data))
        tmp = path.parent / f".tmp-{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(MAGIC + _sum(path.name + digest, data) + data)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("span cache: cannot write %s: %s", path, e.strerror or e)
            self._unlink(tmp)
            return
        with self._lock:
            if self._approx is None:
                self._approx = self._scan_size()
            else:
                self._approx += len(data) + len(MAGIC) + _SUM
            over = self._approx > self.max_bytes
        if over:
            self.evict()

    def _entries(self) -> list[tuple[float, int, Path]]:
        out = []
        now = time.time()
        for dirpath, _, files in os.walk(self._base):
            for name in files:
                p = Path(dirpath) / name
                try:
                    st = p.stat()
                except OSError:
                    continue
                if name.startswith(".tmp-"):
                    if now - st.st_mtime > STALE_TMP:
                        self._unlink(p)
                    continue
                out.append((st.st_mtime, st.st_size, p))
        return out

    def _scan_size(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def evict(self) -> None:
        """Delete the least recently used entries until the cache is at 90% of its limit."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            log.warning("span cache: cannot lock %s: %s", self.root, e.strerror or e)
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return  # another process is evicting
                raise
            entries = sorted(self._entries())
            total = sum(size for _, size, _ in entries)
            target = self.max_bytes * 9 // 10
            for _, size, p in entries:
                if total <= target:
                    break
                if self._unlink(p):
                    total -= size
            with self._lock:
                self._approx = total
        finally:
            os.close(fd)

    @staticmethod
    def _unlink(p: Path) -> bool:
        try:
            p.unlink()
            return True
        except OSError:
            return False

    def size(self) -> int:
        """Bytes on disk in entries (a fresh scan)."""
        return self._scan_size()
