"""Where layer blobs come from, and the verified reads of their bytes.

    store = open_store("oci-layout:///srv/layouts/app")      # or a plain directory path
    blob = store.open_blob(layer_descriptor, access.spans)   # a spans.VerifiedBlob
    blob.pread(offset, n)                                    # checked compressed bytes

A BlobStore turns a layer descriptor ({"digest", "size", ...}) and the archive's span
checksums of that blob into a VerifiedBlob: every byte it returns belongs to a span whose
BLAKE3 digest matched the archive (clipcy.storage.spans). The decompressing readers
(clipcy.layers.blobread) take their compressed input only from a VerifiedBlob.

A store for another transport subclasses BlobStore and BlobSource: it implements
BlobSource.fetch(offset, n) (one call per run of adjacent spans, so HTTP can ask for one Range),
overrides the hints it can use (will_need, read_limit, prefetch, discard: no-ops by default),
and may pass a SpanCache to VerifiedBlob so verified spans are kept (and looked up) in its own
cache. open_store() picks the store from the reference; add new schemes there.
"""

from __future__ import annotations

import os

from clipcy.errors import ClipError
from clipcy.storage.spans import (
    BlobSource,
    SpanCache,
    SpanHasher,
    SpanTable,
    VerifiedBlob,
)

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from clipcy.storage.registry import RemoteOptions

__all__ = ["BlobStore", "BlobSource", "SpanCache", "SpanHasher", "SpanTable", "VerifiedBlob",
           "open_store"]


class BlobStore:
    """Where the layer blobs of a storage ref are: open_blob() gives each one's verified
    reader. What a store can do beyond that is declared here, with defaults, not probed."""

    # its blobs fetch ahead on prefetch() hints: a reader that knows what it reads next
    # (extract's walk, a file's first read) says so; False: hints would be wasted work
    prefetches = False

    def open_blob(self, layer: dict[str, Any], spans: SpanTable,
                  cache: SpanCache | None = None) -> VerifiedBlob:
        """The verified reader of the blob of a layer descriptor ({"digest", "size"})."""
        raise NotImplementedError

    def blob_path(self, digest: str) -> Path | None:
        """The blob as a local file, or None when it is not one (a remote store)."""
        return None

    def download(self, digest: str, size: int, dest: str | os.PathLike[str]) -> None:
        """The whole blob into the file dest (unverified: the caller checks its digest)."""
        path = self.blob_path(digest)
        if path is None:
            raise NotImplementedError
        with open(path, "rb") as src, open(dest, "wb") as out:
            while piece := src.read(8 << 20):
                out.write(piece)

    def probe(self, digest: str, size: int) -> None:
        """One cheap check that a blob can be read (it is there, the credentials are
        accepted): raises the error a read of it would (clipcy.storage.check.check_store)."""

    def background_blob(self, layer: dict[str, Any], spans: SpanTable) -> VerifiedBlob | None:
        """A verified reader of the blob that fills the store's span cache and shares no
        read-ahead state with the readers (a mount's --fetch-all), or None when the store
        keeps no cache (a local layout: nothing to fetch ahead)."""
        return None

    def cached(self, digest: str, offset: int, length: int) -> bool:
        """Whether the store's span cache holds that span (unchecked: reads check it)."""
        return False

    def close(self) -> None:
        """Release connections, helper threads and open blobs' shared state."""


def open_store(ref: str | os.PathLike[str] | None,
               options: RemoteOptions | None = None) -> BlobStore:
    """The store for a storage ref (clipcy.storage.refs.parse_storage_ref): a layout
    directory ("DIR", "oci:DIR[:TAG]", "oci-layout://DIR"), "docker://HOST/REPO" or
    "http(s)://BASE" (options: a registry.RemoteOptions)."""
    from clipcy.storage.local import LocalStore
    from clipcy.storage.refs import parse_storage_ref

    if not ref:
        raise ClipError("the archive records no storage ref: give the layout directory")
    parsed = parse_storage_ref(ref)
    if not parsed.remote:
        return LocalStore(parsed.path)
    from clipcy.storage.registry import RemoteStore

    return RemoteStore(parsed, options)
