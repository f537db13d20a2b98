"""An on-disk cache of decoded spans: pieces of the layers' uncompressed streams, kept so that
bytes inflated once are not inflated again, by this mount, the next one, or another process.

Entries are DiskSpanCache's (storage/diskcache.py), keyed by the layer blob's digest and the
span's offset and length in the blob's *uncompressed* stream:
`ROOT/v1/ALG/HH/HEX/OFF-LEN`, ROOT being `$XDG_CACHE_HOME/clipcy/decoded` (`--cache-dir
DIR`: `DIR/decoded`). Each entry is MAGIC, a CRC-32 (zlib-ng's, ~20 GB/s: a hit of a 256 KiB
span costs ~12 us to check) over its key and bytes, and the bytes. A damaged entry (a flipped
byte, a truncated file, another entry's bytes renamed into place) fails the check: a miss,
and the entry is deleted; never wrong bytes. The checksum is there against damage at rest;
the bytes put in were decoded from verified compressed spans.

Writes are atomic (a temp file renamed into place), so mounts and processes share the
directory; the bound (DEFAULT_MAX_MIB, `--decoded-cache-mib`) is kept by deleting the least
recently used entries (a hit refreshes the entry's mtime) down to 90% of it, as the
compressed span cache does. A full disk makes puts fail (logged once): reads then decode.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from zlib_ng import zlib_ng

from clipcy.storage.diskcache import DiskSpanCache

__all__ = ["DEFAULT_MAX_MIB", "MAGIC", "DecodedDiskCache", "LayerSpans", "decoded_cache_dir",
           "default_decoded_cache_dir"]

MAGIC = b"CLIPDEC1"
DEFAULT_MAX_MIB = 2048


def default_decoded_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clipcy" / "decoded"


def decoded_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """Where the decoded cache lives: CACHE_DIR/decoded with the readers' --cache-dir, else
    $XDG_CACHE_HOME/clipcy/decoded (~/.cache/clipcy/decoded)."""
    return Path(cache_dir) / "decoded" if cache_dir is not None else default_decoded_cache_dir()


class DecodedDiskCache(DiskSpanCache):
    """DiskSpanCache's entries, bound and eviction, with a CRC-32 check (decoded spans are
    large and read often: blake2b would cost 1 ms a hit)."""

    magic = MAGIC
    sum_size = 4
    kind = "decoded cache"

    def __init__(self, root: str | os.PathLike[str] | None = None,
                 max_bytes: int = DEFAULT_MAX_MIB << 20) -> None:
        super().__init__(root if root is not None else default_decoded_cache_dir(), max_bytes)
        # the size on disk is scanned on a thread, not by the first put (a read's path): a
        # full cache holds thousands of entries; puts meanwhile count from 0 (eviction
        # recounts exactly)
        self._approx = 0
        threading.Thread(target=self._count, daemon=True, name="clipcy-decoded-scan").start()

    def _count(self) -> None:
        total = self._scan_size()
        with self._lock:
            self._approx = (self._approx or 0) + total

    def __repr__(self) -> str:
        return f"<DecodedDiskCache {self.root} max {self.max_bytes >> 20} MiB>"

    def checksum(self, key: str, data: bytes) -> bytes:
        crc: int = zlib_ng.crc32(data, zlib_ng.crc32(key.encode()))
        return crc.to_bytes(4, "big")


class LayerSpans:
    """One archive's view of the decoded cache: span k of layer i is the entry of the layer's
    blob digest at k * span, of the length the layer's uncompressed size gives."""

    def __init__(self, cache: DecodedDiskCache, layers: list[tuple[str, int]],
                 span: int) -> None:
        self.cache = cache
        self.layers = layers  # (blob digest, uncompressed size) per layer
        self.span = span
        threading.Thread(target=self._make_dirs, daemon=True, name="clipcy-decoded-dirs").start()

    def _make_dirs(self) -> None:
        """Create the layers' directories at the start, off any read's path: on a cold file
        system the first put's mkdirs read its metadata from disk."""
        for digest, size in self.layers:
            if size:
                try:
                    self.cache._path(digest, 0, 0).parent.mkdir(parents=True, exist_ok=True)
                except (OSError, ValueError):
                    pass

    def length(self, layer: int, k: int) -> int:
        """The length of span k (0 past the end, or for a layer of unknown size)."""
        _, size = self.layers[layer]
        return max(0, min(self.span, size - k * self.span))

    def spans(self, layer: int) -> int:
        """How many spans the layer's stream has."""
        return -(-self.layers[layer][1] // self.span)

    def get(self, layer: int, k: int) -> bytes | None:
        n = self.length(layer, k)
        return self.cache.get(self.layers[layer][0], k * self.span, n) if n else None

    def has(self, layer: int, k: int) -> bool:
        n = self.length(layer, k)
        return bool(n) and self.cache.has(self.layers[layer][0], k * self.span, n)

    def will_need(self, layer: int, k: int) -> bool:
        """Ask the kernel to read span k's entry into the page cache, without waiting for
        it; whether there is one."""
        n = self.length(layer, k)
        if not n:
            return False
        try:
            fd = os.open(self.cache._path(self.layers[layer][0], k * self.span, n),
                         os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
        return True

    def put(self, layer: int, k: int, data: bytes) -> bool:
        """Keep span k's bytes (only a whole span of the expected length)."""
        if not data or len(data) != self.length(layer, k):
            return False
        return self.cache.put(self.layers[layer][0], k * self.span, data)

    def room_for(self, layer: int) -> bool:
        """Whether streaming the whole layer leaves the cache under its bound: a layer over
        half the bound would evict itself (and every other layer) while it streams."""
        return 0 < self.layers[layer][1] <= self.cache.max_bytes // 2
