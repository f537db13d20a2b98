"""Resume windows stay compressed while a layer streams, without changing the archive."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from clipcy import create_index_only_archive_from_oci_layout, open_archive
from clipcy.archive.writer import encode_archive
from clipcy.image.indexer import index_layer
from clipcy.image.layout import Layout, resolve
from clipcy.layers.packing import PackedAccess, same_access


def test_archive_equals_the_writer_on_raw_windows(corpus: Path, tmp_path: Path) -> None:
    """Re-encoding what the reader decodes (raw windows, one-shot payloads) gives the same
    bytes as index-layout's streamed, packed path."""
    out = tmp_path / "mm.clip"
    create_index_only_archive_from_oci_layout(corpus / "multimember", "latest", out,
                                              checkpoint_span=128 << 10)
    with open_archive(out) as arc:
        assert len(arc.access(1).points) > 20
        again = encode_archive(arc.metadata, list(arc.walk()),
                               [arc.access(i) for i in range(len(arc.layers))])
    assert again == out.read_bytes()


def test_windows_do_not_pile_up(corpus: Path) -> None:
    image = resolve(Layout(corpus / "big"), "latest")
    tracemalloc.start()
    try:
        res = index_layer(image.layers[0], 0, verify=False, span=64 << 10, keep_entries=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(res.access, PackedAccess)
    raw = sum(len(w) for _, _, _, w in res.access.windows())
    assert raw > 25 << 20  # ~1,000 windows of up to 32 KiB: what used to be held
    assert peak < raw // 3, (peak, raw)
    assert same_access(res.access, res.access.unpacked())
