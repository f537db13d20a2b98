"""Layout resolution rules on small generated layouts (no corpus needed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from clipcy import create_index_only_archive_from_oci_layout, open_archive
from clipcy.errors import LayoutError, ManifestNotFoundError, StorageRefError


def _put(layout: Path, obj: Any) -> tuple[str, int]:
    raw = json.dumps(obj).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(raw)
    return digest, len(raw)


def _index(layout: Path) -> dict[str, Any]:
    return json.loads((layout / "index.json").read_text())  # type: ignore[no-any-return]


def _manifest(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    desc = _index(layout)["manifests"][0]
    return desc, json.loads((layout / "blobs/sha256" / desc["digest"][7:]).read_text())


def _set_top(layout: Path, entries: list[dict[str, Any]]) -> None:
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))


@pytest.fixture
def simple(tmp_path: Path, layout_factory: Any, tar_factory: Any) -> Path:
    tar = tar_factory([("etc", "dir", b""), ("etc/hostname", "file", b"box\n")])
    return layout_factory(tmp_path / "layout", [tar])  # type: ignore[no-any-return]


def test_foreign_layer_is_an_error(simple: Path, tmp_path: Path) -> None:
    desc, man = _manifest(simple)
    man["layers"][0]["mediaType"] = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    man["layers"][0]["urls"] = ["https://example.invalid/layer"]
    d, n = _put(simple, man)
    _set_top(simple, [dict(desc, digest=d, size=n)])
    with pytest.raises(LayoutError, match="foreign"):
        create_index_only_archive_from_oci_layout(simple, "latest", tmp_path / "x.clip")


def test_media_type_disagreeing_with_magic_warns(
    simple: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    desc, man = _manifest(simple)
    man["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"  # it is gzip
    d, n = _put(simple, man)
    _set_top(simple, [dict(desc, digest=d, size=n)])
    out = tmp_path / "x.clip"
    with caplog.at_level("WARNING", logger="clipcy"):
        create_index_only_archive_from_oci_layout(simple, "latest", out)
    assert "says zstd but the blob is gzip" in caplog.text
    with open_archive(out) as arc:
        assert arc.layers[0]["compression"] == "gzip"
        assert arc.lookup("/etc/hostname") is not None


def _platform_index(layout: Path, inner: dict[str, Any], nested: bool) -> None:
    """index.json -> (image index ->) image index with amd64 and arm64/v8 entries."""
    desc, _ = _manifest(layout)
    plat_amd = dict(desc, platform={"os": "linux", "architecture": "amd64"})
    plat_arm = dict(desc, platform={"os": "linux", "architecture": "arm64", "variant": "v8"})
    plat_arm.pop("annotations", None)
    plat_amd.pop("annotations", None)
    idx = {"schemaVersion": 2, "mediaType": inner["mediaType"], "manifests": [plat_amd, plat_arm]}
    d, n = _put(layout, idx)
    top = {"mediaType": inner["mediaType"], "digest": d, "size": n}
    if nested:
        d2, n2 = _put(
            layout,
            {
                "schemaVersion": 2,
                "mediaType": inner["mediaType"],
                "manifests": [dict(top, platform={"os": "linux", "architecture": "amd64"})],
            },
        )
        top = {"mediaType": inner["mediaType"], "digest": d2, "size": n2}
    top["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    _set_top(layout, [top])


@pytest.mark.parametrize(
    "media",
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ],
)
@pytest.mark.parametrize("nested", [False, True])
def test_index_platform_selection(simple: Path, tmp_path: Path, media: str, nested: bool) -> None:
    _platform_index(simple, {"mediaType": media}, nested)
    out = tmp_path / "x.clip"
    s = create_index_only_archive_from_oci_layout(simple, "latest", out, platform="linux/amd64")
    assert s.node_count == 3
    # arm64 and arm64/v8 are the same platform; the config says amd64, so it is refused
    if not nested:
        with pytest.raises(ManifestNotFoundError, match="is for platform linux/amd64"):
            create_index_only_archive_from_oci_layout(simple, "latest", out, platform="arm64")
    with pytest.raises(ManifestNotFoundError, match="no manifest for platform linux/s390x"):
        create_index_only_archive_from_oci_layout(simple, "latest", out, platform="linux/s390x")


def test_deep_index_chain_is_refused(simple: Path, tmp_path: Path) -> None:
    media = "application/vnd.oci.image.index.v1+json"
    plat = {"os": "linux", "architecture": "amd64"}
    desc, _ = _manifest(simple)
    top = {k: desc[k] for k in ("mediaType", "digest", "size")}
    for _ in range(12):
        d, n = _put(
            simple,
            {"schemaVersion": 2, "mediaType": media, "manifests": [dict(top, platform=plat)]},
        )
        top = {"mediaType": media, "digest": d, "size": n}
    _set_top(simple, [dict(top, annotations={"org.opencontainers.image.ref.name": "latest"})])
    with pytest.raises(LayoutError, match="image index nesting exceeds the limit index_depth=8"):
        create_index_only_archive_from_oci_layout(
            simple, "latest", tmp_path / "x.clip", platform="linux/amd64"
        )


def test_missing_config_and_bad_json(simple: Path, tmp_path: Path) -> None:
    _, man = _manifest(simple)
    (simple / "blobs/sha256" / man["config"]["digest"][7:]).unlink()
    with pytest.raises(LayoutError, match="failed to open config blob"):
        create_index_only_archive_from_oci_layout(simple, "latest", tmp_path / "x.clip")
    (simple / "index.json").write_text("{not json")
    with pytest.raises(LayoutError, match="failed to read index.json: invalid JSON"):
        create_index_only_archive_from_oci_layout(simple, "latest", tmp_path / "x.clip")


def test_single_manifest_needs_no_tag(simple: Path, tmp_path: Path) -> None:
    s = create_index_only_archive_from_oci_layout(simple, None, tmp_path / "x.clip")
    assert s.layer_count == 1


def test_storage_ref_recorded(simple: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.clip"
    ref = "docker://registry.example.com/ns/img"
    create_index_only_archive_from_oci_layout(simple, "latest", out, storage_ref=ref)
    with open_archive(out) as arc:
        assert arc.metadata["storage_ref"] == ref
    with pytest.raises(StorageRefError, match="unsupported storage ref scheme 's3'"):
        create_index_only_archive_from_oci_layout(simple, "latest", out, storage_ref="s3://b/i")
    create_index_only_archive_from_oci_layout(simple, "latest", out)
    with open_archive(out) as arc:
        assert arc.metadata["storage_ref"] == str(simple.resolve())


def test_whiteouts_in_the_first_layer_hide_nothing(tmp_path: Path, layout_factory: Any,
                                                   tar_factory: Any) -> None:
    """Layer 0 streams into the tree as it is parsed: its whiteouts and opaque markers have no
    lower layer to hide, and must not remove its own entries, before or after them."""
    tar0 = tar_factory([("a", "file", b"1"), (".wh.a", "file", b""), ("d", "dir", b""),
                        ("d/early", "file", b"2"), ("d/.wh..wh..opq", "file", b""),
                        ("d/late", "file", b"3"), (".wh.b", "file", b""), ("b", "file", b"4")])
    tar1 = tar_factory([(".wh.a", "file", b""), ("d/.wh..wh..opq", "file", b""),
                        ("d/new", "file", b"5")])
    layout = layout_factory(tmp_path / "l", [tar0, tar1])
    out = tmp_path / "x.clip"
    create_index_only_archive_from_oci_layout(layout, "latest", out, file_digests=True)
    with open_archive(out) as arc:
        paths = [n.path for n in arc.walk()]
        assert paths == [b"/", b"/b", b"/d", b"/d/new"]
        with arc.open("/b") as f:
            assert f.read() == b"4"
    one = tmp_path / "one.clip"
    create_index_only_archive_from_oci_layout(layout_factory(tmp_path / "m", [tar0]), "latest",
                                              one)
    with open_archive(one) as arc:
        assert [n.path for n in arc.walk()] == [b"/", b"/a", b"/b", b"/d", b"/d/early",
                                                b"/d/late"]
