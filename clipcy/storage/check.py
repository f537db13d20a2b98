"""Are the blobs really where the archive says they are? index-layout --storage-ref asks
before indexing (check_storage_ref), a mount before it reports ready (check_store).

One cheap probe per layer blob: in a directory, a stat (a
regular file of the descriptor's size at blobs/ALG/HEX); on a registry or HTTP server, one
1-byte range request for the blob's last byte (a missing blob is a 404, a shorter one a 416
or a short answer). The bytes themselves are checked by every reader (span checksums).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from typing import TYPE_CHECKING

from clipcy.errors import ClipError, StorageRefError
from clipcy.interrupts import waiting

if TYPE_CHECKING:
    from clipcy.storage import BlobStore
    from clipcy.storage.registry import RemoteOptions

# probes are one request each: a dead host should fail in seconds, not after the readers' retries
CHECK_TRIES = 2
PROBES = 8  # a mount's probes in flight at once


def check_storage_ref(ref: str, blobs: Iterable[tuple[str, int]],
                      remote: RemoteOptions | None = None) -> int:
    """Check that every (digest, size) blob is at the storage ref; returns how many were
    checked. Raises StorageRefError naming the ref and the first blob that is not there."""
    from clipcy.storage.refs import parse_storage_ref

    parsed = parse_storage_ref(ref)
    blobs = list(blobs)
    if not parsed.remote:
        _check_directory(ref, parsed.path, blobs)
        return len(blobs)
    from dataclasses import replace

    from clipcy.storage.http import HttpOptions
    from clipcy.storage.registry import RemoteOptions, RemoteStore

    opts = remote or RemoteOptions()
    opts = replace(opts, cache=False,
                   http=replace(opts.http or HttpOptions(), tries=CHECK_TRIES))
    store = RemoteStore(parsed, opts)
    try:
        for digest, size in blobs:
            try:
                got = store.source(digest, size).fetch(size - 1, 1) if size else b""
            except ClipError as e:
                raise StorageRefError(f"storage ref {ref}: {e} (--no-check-storage skips "
                                      "this check)") from None
            if size and len(got) != 1:
                raise StorageRefError(f"storage ref {ref}: blob {digest} is shorter than its "
                                      f"{size} bytes")
    finally:
        try:
            store.close()
        finally:  # an error or interrupt closing the store leaves no connection open
            store.client.close()
    return len(blobs)


def check_store(store: BlobStore, blobs: Iterable[tuple[str, int]],
                workers: int = PROBES) -> int:
    """A mount's storage check before it reports ready: BlobStore.probe (a stat and open in a
    directory, one 1-byte range request remotely) of every distinct (digest, size) blob, up
    to `workers` at a time, so a registry costs about one round trip (plus the auth
    exchange). Raises the error the first failing blob's read would give (the same line
    clipctl cat prints); returns how many blobs were probed."""
    distinct = list(dict.fromkeys(blobs))
    if len(distinct) <= 1 or workers <= 1:
        for digest, size in distinct:
            store.probe(digest, size)
        return len(distinct)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(distinct)),
                            thread_name_prefix="clipcy-check") as pool:
        futures = [pool.submit(store.probe, digest, size) for digest, size in distinct]
        for f in futures:  # in layer order: the first failing blob is the one named
            waiting(f.result)
    return len(distinct)


def _check_directory(ref: str, root: str, blobs: list[tuple[str, int]]) -> None:
    if not os.path.isdir(root):
        why = "not a directory" if os.path.lexists(root) else "no such directory"
        raise StorageRefError(f"storage ref {ref}: {why} (--no-check-storage skips this check)")
    for digest, size in blobs:
        alg, _, hexpart = digest.partition(":")
        path = os.path.join(root, "blobs", alg, hexpart)
        try:
            st = os.stat(path)
        except OSError as e:
            raise StorageRefError(f"storage ref {ref}: blob {digest} is missing ({path}: "
                                  f"{e.strerror or e}; --no-check-storage skips this check)"
                                  ) from None
        if not stat.S_ISREG(st.st_mode):
            raise StorageRefError(f"storage ref {ref}: blob {digest} is not a regular file "
                                  f"({path})")
        if st.st_size != size:
            raise StorageRefError(f"storage ref {ref}: blob {digest} has {st.st_size} bytes, "
                                  f"the manifest says {size} ({path})")
