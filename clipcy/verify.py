"""`clipctl verify`: does the archive still describe the blobs, byte for byte?

Checks, in order: the archive's own checksums; every layer blob against its recorded digest,
size and diff_id (by streaming it again, exactly as index-layout did); that re-indexing the
blobs gives the same resume points and the same tree; and, when the archive carries per-file
digests, that every file read through the recorded locations has that digest.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipcy.archive.files import ArchiveFile, LayerReaders
from clipcy.archive.reader import storage_or_layout
from clipcy.errors import ClipError
from clipcy.layers.packing import same_access
from clipcy.node import FILE, Node

if TYPE_CHECKING:
    from clipcy.archive.reader import Archive
    from clipcy.storage.registry import RemoteOptions

# Every Node field but the path (the key), ino (numbering) and digest (compared separately).
_NODE_FIELDS = tuple(f for f in Node.FIELDS if f not in ("path", "ino", "digest"))


def _node_diff(a: Node, b: Node) -> list[str]:
    return [f for f in _NODE_FIELDS if getattr(a, f) != getattr(b, f)]


def verify_archive(
    arc: Archive,
    storage: str | os.PathLike[str] | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
    remote: RemoteOptions | None = None,
    checked: dict[str, Any] | None = None,
    *,
    layout: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Problems found (empty when everything holds). The blobs are read through the
    archive's layer readers, or through readers of their own when storage (a storage ref
    overriding the archive's; layout: the same, deprecated) or remote is given. checked,
    when given, is filled with what was checked (the keys of `clipctl verify --json`'s
    "checked", docs/CLI.md)."""
    storage = storage_or_layout(storage, layout)
    if checked is None:
        checked = {}
    try:
        arc.verify()
    except ClipError as e:
        return [f"archive: {e}"]
    checked["archive"] = {"sha256": True, "sections": len(arc.section_sizes()),
                          "nodes": arc.node_count}
    checked["layers"] = []
    own = storage is not None or remote is not None
    store = arc.open_layer_readers(storage, remote) if own else arc.layer_readers()
    try:
        return _verify(arc, store, progress, checked)
    finally:
        if own:
            store.close()


@contextmanager
def _blob_file(store: LayerReaders, i: int) -> Iterator[Path]:
    """The layer blob as a local file: in its layout, or (a remote store) downloaded into a
    temp file for the time of its re-index (its digest is checked by that re-index)."""
    local = store.blob_path(i)
    if local is not None:
        yield local
        return
    layer = store.layers[i]
    with tempfile.TemporaryDirectory(prefix="clipcy-verify-") as tmp:
        path = Path(tmp) / "blob"
        store.store.download(layer["digest"], layer["size"], path)
        yield path


def _verify(arc: Archive, store: LayerReaders,
            progress: Callable[[str, dict[str, Any]], None] | None,
            checked: dict[str, Any]) -> list[str]:
    from clipcy.image.indexer import LayerResult, index_layer
    from clipcy.image.layout import LAYER_TYPES, LayerInfo
    from clipcy.image.merge import merge_layers

    problems: list[str] = []
    layers = arc.metadata.get("layers", [])
    stored = list(arc.walk())
    with_digests = any(n.digest for n in stored if n.type == FILE)
    results: list[LayerResult] = []
    for i, layer in enumerate(layers):
        recorded = arc.access(i)
        try:
            with _blob_file(store, i) as blob:
                info = LayerInfo(
                    layer["digest"],
                    layer["size"],
                    layer["media_type"],
                    LAYER_TYPES.get(layer["media_type"], layer["compression"]),
                    layer["diff_id"],
                    blob,
                )
                res = index_layer(
                    info,
                    i,
                    verify=True,
                    file_digests=with_digests,
                    span=recorded.span,
                    progress=progress,
                )
        except ClipError as e:
            problems.append(f"layer {i}: {e}")
            continue
        if not same_access(res.access, recorded):
            problems.append(f"layer {i} ({info.digest}): resume points differ from a fresh index")
        else:
            checked["layers"].append({
                "index": i, "digest": info.digest, "size": info.size, "diff_id": info.diff_id,
                "compression": recorded.kind, "uncompressed_size": res.uncompressed_size,
                "resume_points": len(recorded.points), "frames": len(recorded.frames),
                "span_checksums": len(recorded.spans.lengths) if recorded.spans else 0,
            })
        results.append(res)
    if problems:
        return problems
    fresh = merge_layers(
        (r.entries for r in results),
        [r.file_digests or {} for r in results] if with_digests else None,
    )
    fresh_by_path = {n.path: n for n in fresh}
    for node in stored:
        other = fresh_by_path.pop(node.path, None)
        if other is None:
            problems.append(f"{os.fsdecode(node.path)}: not in the image")
            continue
        fields = _node_diff(node, other)
        if with_digests and node.digest != other.digest:
            fields.append("sha256")
        if fields:
            problems.append(
                f"{os.fsdecode(node.path)}: differs from the image in " + ", ".join(fields)
            )
    for path in sorted(fresh_by_path):
        problems.append(f"{os.fsdecode(path)}: missing from the archive")
    if not problems:
        checked["nodes"] = len(stored)
        checked["files"] = {"sha256": with_digests, "count": 0, "bytes": 0}
    if problems or not with_digests:
        return problems
    # Every file read through its recorded location, resume points included.
    seen: set[int] = set()
    for node in stored:
        if node.type != FILE or node.ino in seen:
            continue
        seen.add(node.ino)
        h = hashlib.sha256()
        f = ArchiveFile(node, store)
        try:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                checked["files"]["bytes"] += len(chunk)
        except ClipError as e:
            problems.append(f"{os.fsdecode(node.path)}: {e}")
            continue
        checked["files"]["count"] += 1
        if h.digest() != node.digest:
            problems.append(
                f"{os.fsdecode(node.path)}: content read through the archive has "
                f"sha256 {h.hexdigest()}, recorded {node.digest.hex()}"
            )
    return problems
