"""A small program using clipcy's public API; CI checks it with `mypy --strict` (the stubs and
py.typed must make the compiled modules' types visible to callers)."""

from __future__ import annotations

from pathlib import Path

import clipcy
from clipcy.archive.reader import Archive
from clipcy.errors import ClipError
from clipcy.node import Node
from clipcy.tar.tarparse import TarEntry


def largest_files(archive: Path, n: int = 5) -> list[tuple[int, bytes]]:
    with clipcy.open_archive(archive) as arc:
        files = [(node.size, node.path) for node in arc.walk() if node.type == "file"]
    return sorted(files, reverse=True)[:n]


def first_bytes(arc: Archive, path: str, n: int = 16) -> bytes:
    node: Node | None = arc.lookup(path)
    if node is None:
        raise KeyError(path)
    with arc.open(path) as f:
        data: bytes = f.read(n)
    return data


def layer_names(layer: Path) -> list[bytes]:
    entries: list[TarEntry] = list(clipcy.walk_tar(layer))
    return [e.name for e in entries if e.type != "dir"]


def index(layout: Path, tag: str, out: Path) -> int:
    try:
        summary = clipcy.create_index_only_archive_from_oci_layout(layout, tag, out)
    except ClipError as e:
        print(f"error: {e}")
        return 1
    print(summary.node_count, summary.archive_size)
    return 0


def mounted_names(archive: Path, mountpoint: Path) -> list[str]:
    from clipcy.fusemount import Mount

    with clipcy.mount(archive, mountpoint, cache_mib=32, options=["allow_other"]) as m:
        assert isinstance(m, Mount)
        return sorted(p.name for p in Path(m.mountpoint).iterdir())
