"""index-layout's pipeline (image/indexer.py IndexRun) through the public API: a failing layer
stops the run with that layer's error and leaves nothing behind, and the layer cache's typed
hits give the same archive as streaming."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clipcy import create_index_only_archive_from_oci_layout
from clipcy.errors import DigestMismatchError
from clipcy.image.cache import CachedLayer, LayerCache

Layout = Callable[..., Path]
Tar = Callable[[list[tuple[str, str, bytes]]], bytes]


def _three_layers(tmp_path: Path, layout_factory: Layout, tar_factory: Tar) -> Path:
    tars = [
        tar_factory([("a", "dir", b""), *((f"a/f{i}", "file", b"x" * i) for i in range(300))]),
        tar_factory([("b", "dir", b""), ("b/one", "file", bytes(range(256)) * 512)]),
        tar_factory([("c", "dir", b""), *((f"c/g{i}", "file", b"y" * i) for i in range(300))]),
    ]
    return layout_factory(tmp_path / "layout", tars)


def _layer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("clipcy-layer")]


def test_a_failing_layer_leaves_nothing_behind(tmp_path: Path, layout_factory: Layout,
                                               tar_factory: Tar) -> None:
    """A layer whose blob changed: the run raises that layer's error, every worker has
    stopped when the call returns, no layer cache temp file is left, and the file at the
    output path is untouched."""
    layout = _three_layers(tmp_path, layout_factory, tar_factory)
    events: list[tuple[str, dict[str, Any]]] = []
    create_index_only_archive_from_oci_layout(layout, "latest", tmp_path / "ok.clip",
                                              progress=lambda e, d: events.append((e, d)))
    layer1 = next(d["digest"] for e, d in events if e == "layer-start" and d["layer"] == 1)
    blob = layout / "blobs" / "sha256" / layer1.split(":")[1]
    data = bytearray(blob.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    blob.write_bytes(bytes(data))
    out = tmp_path / "img.clip"
    out.write_bytes(b"an older archive")
    cache = tmp_path / "cache"
    with pytest.raises(DigestMismatchError, match=rf"^layer 1 \({layer1}\): blob digest is "):
        create_index_only_archive_from_oci_layout(layout, "latest", out, cache_dir=cache,
                                                  workers=3)
    assert _layer_threads() == []
    assert out.read_bytes() == b"an older archive"
    assert [p.name for p in tmp_path.glob(".img.clip.*")] == []
    assert [p.name for p in cache.glob(".tmp-*")] == []


def test_cache_hits_give_the_same_archive(tmp_path: Path, layout_factory: Layout,
                                          tar_factory: Tar) -> None:
    """The second run takes every layer from the cache (typed CachedLayer hits) and writes
    the same bytes as the first, which streamed them."""
    layout = _three_layers(tmp_path, layout_factory, tar_factory)
    cache = tmp_path / "cache"
    first = create_index_only_archive_from_oci_layout(layout, "latest", tmp_path / "a.clip",
                                                      cache_dir=cache)
    seconds: list[float] = []

    def progress(event: str, data: dict[str, Any]) -> None:
        if event == "layer-done":
            seconds.append(data["seconds"])

    create_index_only_archive_from_oci_layout(layout, "latest", tmp_path / "b.clip",
                                              cache_dir=cache, progress=progress)
    assert seconds == [0.0, 0.0, 0.0]  # a hit streams nothing
    assert (tmp_path / "a.clip").read_bytes() == (tmp_path / "b.clip").read_bytes()
    hit = LayerCache(cache).get(LayerCache.key(first.layers[0]["digest"], None, False))
    assert isinstance(hit, CachedLayer)
    assert len(hit.entries) == 301 and hit.diff_id == first.layers[0]["diff_id"]
    assert hit.access.spans is not None and hit.access.spans.size == first.layers[0]["size"]
