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
- Survives restarts: the disk holds every entry. A process may also keep the entries it put
  last in memory (`memory_bytes`): a span that a background fetch (a mount's replay) verified
  and put is then read back by the inflater waiting for it without a file read and a checksum.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from clipcy.tempfiles import close_held, open_held

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
    """get/put of verified spans, shared by threads and processes. A subclass may keep other
    entries in the same way (storage.decodedcache: decoded spans) by setting `magic` and
    `sum_size` and overriding `checksum`."""

    magic = MAGIC
    sum_size = _SUM
    kind = "span cache"  # in log lines

    def __init__(self, root: str | os.PathLike[str] | None = None,
                 max_bytes: int = DEFAULT_MAX_MIB << 20, memory_bytes: int = 0) -> None:
        self.root = Path(root) if root is not None else default_span_cache_dir()
        self.max_bytes = max_bytes
        # the entries put last, up to memory_bytes (0: none), least recently used out first
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._memory_held = 0
        self._base = self.root / "v1"
        self._lock = threading.Lock()
        self._approx: int | None = None  # bytes believed cached (None: not scanned yet)
        self.hits = self.misses = 0
        self.write_errors = 0  # puts that failed (a full disk): the first is logged
        self.damaged = 0  # entries that failed their check (deleted, counted as misses)

    def checksum(self, key: str, data: bytes) -> bytes:
        """The entry's check value (sum_size bytes) over its key and bytes."""
        return _sum(key, data)

    @property
    def approx_bytes(self) -> int | None:
        """Bytes this process believes are cached (None until a put or evict scanned)."""
        return self._approx

    def __repr__(self) -> str:
        return f"<DiskSpanCache {self.root} max {self.max_bytes >> 20} MiB>"

    def _path(self, digest: str, offset: int, length: int) -> Path:
        alg, _, hexpart = digest.partition(":")
        if not alg.isalnum() or not hexpart.isalnum():
            raise ValueError(f"bad digest {digest!r}")
        return self._base / alg / hexpart[:2] / hexpart / f"{offset}-{length}"

    def get(self, digest: str, offset: int, length: int) -> bytes | None:
        if self.memory_bytes:
            with self._lock:
                data = self._memory.get((digest, offset, length))
                if data is not None:
                    self._memory.move_to_end((digest, offset, length))
                    self.hits += 1
                    return data
        path = self._path(digest, offset, length)
        key = path.name + digest
        magic, head = self.magic, len(self.magic) + self.sum_size
        try:
            # unbuffered, the head and the bytes in two reads: the bytes are not copied again
            # (a decoded span is 256 KiB, read on a FUSE read's path)
            with open(path, "rb", buffering=0) as f:
                top = f.read(head)
                data = f.read(length + 1)
                mtime = os.fstat(f.fileno()).st_mtime
        except OSError:
            with self._lock:
                self.misses += 1
            return None
        if (top[:len(magic)] != magic or len(top) != head or len(data) != length
                or top[len(magic):] != self.checksum(key, data)):
            log.warning("%s: dropping a damaged entry %s", self.kind, path)
            self._unlink(path)
            with self._lock:
                self.misses += 1
                self.damaged += 1
            return None
        try:
            if time.time() - mtime > 1.0:
                os.utime(path)  # LRU: a hit makes the entry young again
        except OSError:
            pass
        with self._lock:
            self.hits += 1
        log.debug("%s hit: %s at %d (%d bytes)", self.kind, digest, offset, length)
        return data

    def has(self, digest: str, offset: int, length: int) -> bool:
        """Whether an entry exists (unchecked: get() checks it)."""
        return self._path(digest, offset, length).exists()

    def put(self, digest: str, offset: int, data: bytes) -> bool:
        """Store a span that the caller has verified; whether it was written. Errors (a full
        disk) only log: the first at warning level, the others at debug level."""
        if self.max_bytes <= 0 or len(data) > self.max_bytes // 4:
            return False
        if self.memory_bytes:
            self._remember(digest, offset, data)
        path = self._path(digest, offset, len(data))
        tmp = path.parent / f".tmp-{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(self.magic + self.checksum(path.name + digest, data))
                f.write(data)  # not joined: a decoded span is 256 KiB
            os.replace(tmp, path)
        except OSError as e:
            with self._lock:
                self.write_errors += 1
                first = self.write_errors == 1
            (log.warning if first else log.debug)("%s: cannot write %s: %s", self.kind, path,
                                                  e.strerror or e)
            self._unlink(tmp)
            return False
        except BaseException:  # an interrupt: the temp file goes all the same
            self._unlink(tmp)
            raise
        with self._lock:
            if self._approx is None:
                self._approx = self._scan_size()
            else:
                self._approx += len(data) + len(self.magic) + self.sum_size
            over = self._approx > self.max_bytes
        if over:
            self.evict()
        return True

    def _remember(self, digest: str, offset: int, data: bytes) -> None:
        key = (digest, offset, len(data))
        with self._lock:
            old = self._memory.pop(key, None)
            if old is not None:
                self._memory_held -= len(old)
            self._memory[key] = bytes(data)
            self._memory_held += len(data)
            while self._memory_held > self.memory_bytes:
                _, dropped = self._memory.popitem(last=False)
                self._memory_held -= len(dropped)

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

    def evict(self, target: int | None = None) -> int:
        """Delete the least recently used entries until the cache is at `target` bytes (by
        default 90% of its limit); the bytes left (-1: another process is evicting)."""
        held: list[int] = []  # the lock's fd, held from inside its open (an interrupt)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = open_held(held, self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                           0o644)
        except BaseException as e:
            close_held(held)
            if not isinstance(e, OSError):
                raise
            log.warning("%s: cannot lock %s: %s", self.kind, self.root, e.strerror or e)
            return -1
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return -1  # another process is evicting
                raise
            entries = sorted(self._entries())
            total = sum(size for _, size, _ in entries)
            if target is None:
                target = self.max_bytes * 9 // 10
            for _, size, p in entries:
                if total <= target:
                    break
                if self._unlink(p):
                    total -= size
            with self._lock:
                self._approx = total
            return total
        finally:
            close_held(held)

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

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) on disk (a fresh scan)."""
        entries = self._entries()
        return len(entries), sum(size for _, size, _ in entries)

    def blob_usage(self, digest: str) -> tuple[int, int]:
        """(entries, bytes of the spans they hold) of one blob (a scan of its directory)."""
        d = self._path(digest, 0, 0).parent
        try:
            names = [n for n in os.listdir(d) if not n.startswith(".")]
        except OSError:
            return 0, 0
        total = 0
        for name in names:
            _, _, length = name.partition("-")
            total += int(length) if length.isdigit() else 0
        return len(names), total
