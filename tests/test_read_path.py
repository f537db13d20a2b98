"""One path to a file's bytes, kept true: every reader goes through the Archive's layer readers
(the storage given once at open), records are read by name, blob sources declare their hints.

The first tests run the public API over the sample image; the last ones read the package's
source, the way test_imports.py keeps the import direction true.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import pytest

import clipcy
from clipcy.archive.reader import open_archive
from clipcy.extract import extract_archive
from clipcy.storage import BlobStore
from clipcy.storage.local import LocalBlob, LocalStore
from clipcy.storage.spans import BlobSource
from clipcy.verify import verify_archive

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "clipcy"
SAMPLE = PKG / "sample"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(archive, a copy of the layout at a path the archive does not record)."""
    tmp = tmp_path_factory.mktemp("readpath")
    layout = tmp / "moved"
    shutil.copytree(SAMPLE, layout)
    arc = tmp / "sample.clip"
    clipcy.create_index_only_archive_from_oci_layout(layout, "latest", arc)
    shutil.move(layout, tmp / "elsewhere")
    return arc, tmp / "elsewhere"


def test_storage_given_once_reaches_every_reader(sample: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    arc_path, layout = sample
    with open_archive(arc_path, storage=layout) as arc:
        assert arc.storage == str(layout)
        with arc.open("/etc/os-release") as f:
            data = f.read()
        readers = arc.layer_readers()
        assert readers is arc.layer_readers()  # one set, shared
        node = arc.stat("/etc/os-release")
        assert arc.layer_reader(node.layer) is readers.reader(node.layer)
        assert readers.blob_path(node.layer) == LocalStore(layout).blob_path(
            arc.layers[node.layer]["digest"])
        files, _ = extract_archive(arc, tmp_path / "x")
        assert files > 0 and (tmp_path / "x" / "etc" / "os-release").read_bytes() == data
        assert verify_archive(arc) == []
        assert arc.layer_readers() is readers  # extract and verify did not close them


def test_layout_is_a_deprecated_storage(sample: tuple[Path, Path], tmp_path: Path) -> None:
    arc_path, layout = sample
    with pytest.warns(DeprecationWarning, match="storage="):
        arc = open_archive(arc_path, layout=layout)
    with arc, open_archive(arc_path, storage=layout) as arc2:
        assert arc.storage == arc2.storage == str(layout)
        assert arc.open("/etc/os-release").read() == arc2.open("/etc/os-release").read()
        with pytest.warns(DeprecationWarning, match="storage="):
            extract_archive(arc, tmp_path / "y", ["/etc"], layout=layout)
        with pytest.warns(DeprecationWarning, match="storage="):
            assert verify_archive(arc, layout=layout) == []
        with pytest.raises(ValueError, match="not both"):
            open_archive(arc_path, layout=layout, storage=layout)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # storage= itself does not warn
        open_archive(arc_path, storage=layout).close()


def test_positions_and_records(sample: tuple[Path, Path]) -> None:
    from clipcy.archive import record as R

    with open_archive(sample[0]) as arc:
        hit = arc.locate(b"/etc")
        assert hit is not None
        pos, rec = hit
        assert arc.record_at(pos) == rec and R.to_node(rec) == arc.stat("/etc")
        assert arc.record_at(0)[R.PATH] == b"/"
        names = [name for name, _, _ in arc.children(b"/etc")]
        assert names == arc.listdir("/etc")
        for name, p, r in arc.children(b"/etc"):
            assert arc.record_at(p) == r and r[R.PATH] == b"/etc/" + name
        with pytest.raises(IndexError):
            arc.record_at(arc.node_count)
        assert isinstance(arc.preload_blocks(), int)


def test_blob_sources_and_stores_declare_their_hints(tmp_path: Path) -> None:
    """A source or store that takes no hint inherits no-ops: the callers never probe."""
    blob = tmp_path / "b"
    blob.write_bytes(b"abc")
    src = LocalBlob(blob, "sha256:x", 3)
    assert isinstance(src, BlobSource)
    src.will_need(0, 3)
    src.read_limit(3, True)
    src.prefetch(0, 3)
    assert src.discard() is False  # a local file gives the same bytes again
    src.close()
    store = LocalStore(tmp_path)
    assert isinstance(store, BlobStore) and store.prefetches is False
    assert BlobStore().blob_path("sha256:" + "0" * 64) is None


# -- the package's source ----------------------------------------------------------------------
def _sources(*under: str) -> list[Path]:
    return sorted(p for u in under for p in (PKG / u).rglob("*")
                  if p.suffix in (".py", ".pyx", ".pxd") and "__pycache__" not in p.parts)


def _hits(paths: list[Path], pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for p in paths for i, line in enumerate(p.read_text().splitlines(), 1)
            if rx.search(line)]


def test_records_are_read_by_name() -> None:
    """Only clipcy/archive/record.py knows a record's positions by number (records are `rec`
    everywhere, and also `r` in archive/)."""
    paths = [p for p in _sources(".") if p.name != "record.py"]
    assert _hits(paths, r"\b(rec|record)\[[0-9]+\]") == []
    assert _hits([p for p in _sources("archive") if p.name != "record.py"],
                 r"\br\[[0-9]+\]") == []


def test_nothing_outside_archive_touches_a_private_archive_member() -> None:
    paths = [p for p in _sources(".") if "archive" not in p.relative_to(PKG).parts[:1]]
    assert _hits(paths, r"(?<![.\w])(arc|archive|self\.arc)\._[a-z]") == []
    assert _hits(paths, r"\bBlobStore\(|\bLayerReaders\(") == []


def test_no_probe_of_a_blob_source_store_or_reader() -> None:
    paths = _sources("storage", "layers", "archive") + [PKG / "extract.py", PKG / "verify.py"]
    probe = r"\b(getattr|hasattr)\((self\.)?(blob|source|store|reader|r|store\.store)\b"
    assert _hits(paths, probe) == []
