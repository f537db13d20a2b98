"""The demo image in clipcy/sample/ (made by tools/make_sample.sh).

Descriptor checks use hashlib/gzip/json only, so they do not depend on clipcy's own code;
tarfile reads layer members to check the sample still shows what the demo talks about.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Protocol

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "clipcy" / "sample"
SCRIPT = ROOT / "tools" / "make_sample.sh"

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF = "org.opencontainers.image.ref.name"


class Dir(Protocol):
    """What both pathlib.Path and importlib.resources' Traversable offer."""

    @property
    def name(self) -> str: ...
    def joinpath(self, *child: str) -> Dir: ...
    def read_bytes(self) -> bytes: ...
    def is_file(self) -> bool: ...
    def is_dir(self) -> bool: ...
    def iterdir(self) -> Any: ...


class Bad(Exception):
    pass


def _blob(layout: Dir, desc: dict[str, Any], where: str) -> bytes:
    """Read the blob a descriptor names and check its size and sha256."""
    digest = desc.get("digest", "")
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64:
        raise Bad(f"{where}: bad digest {digest!r}")
    path = layout.joinpath("blobs", "sha256", hexd)
    if not path.is_file():
        raise Bad(f"{where}: blob {digest} missing")
    data = path.read_bytes()
    if len(data) != desc.get("size"):
        raise Bad(
            f"{where}: blob {digest} is {len(data)} bytes, descriptor says {desc.get('size')}"
        )
    if hashlib.sha256(data).hexdigest() != hexd:
        raise Bad(f"{where}: blob {digest} has sha256 {hashlib.sha256(data).hexdigest()}")
    return data


def check_layout(layout: Dir) -> dict[str, list[bytes]]:
    """Check every descriptor reachable from index.json; return {ref: [gunzipped layer tars]}."""
    if json.loads(layout.joinpath("oci-layout").read_bytes()) != {"imageLayoutVersion": "1.0.0"}:
        raise Bad("oci-layout: not imageLayoutVersion 1.0.0")
    index = json.loads(layout.joinpath("index.json").read_bytes())
    if index.get("schemaVersion") != 2:
        raise Bad("index.json: schemaVersion is not 2")
    used: set[str] = set()
    images: dict[str, list[bytes]] = {}
    for i, mdesc in enumerate(index["manifests"]):
        ref = mdesc.get("annotations", {}).get(REF, f"#{i}")
        where = f"index.json manifests[{i}] ({ref})"
        if mdesc.get("mediaType") != MANIFEST:
            raise Bad(f"{where}: mediaType {mdesc.get('mediaType')!r}")
        manifest = json.loads(_blob(layout, mdesc, where))
        used.add(mdesc["digest"])
        if manifest.get("schemaVersion") != 2 or manifest["config"].get("mediaType") != CONFIG:
            raise Bad(f"{where}: manifest is not an OCI v2 manifest with an OCI config")
        config = json.loads(_blob(layout, manifest["config"], f"{where} config"))
        used.add(manifest["config"]["digest"])
        diff_ids = config["rootfs"]["diff_ids"]
        if config["rootfs"]["type"] != "layers" or len(diff_ids) != len(manifest["layers"]):
            raise Bad(
                f"{where}: config has {len(diff_ids)} diff_ids for {len(manifest['layers'])} layers"
            )
        tars = []
        for j, ldesc in enumerate(manifest["layers"]):
            lwhere = f"{where} layer {j}"
            if ldesc.get("mediaType") != LAYER_GZIP:
                raise Bad(f"{lwhere}: mediaType {ldesc.get('mediaType')!r}")
            tar = gzip.decompress(_blob(layout, ldesc, lwhere))
            used.add(ldesc["digest"])
            if "sha256:" + hashlib.sha256(tar).hexdigest() != diff_ids[j]:
                raise Bad(f"{lwhere}: gunzipped sha256 differs from config diff_ids[{j}]")
            tars.append(tar)
        images[ref] = tars
    # nothing else in the layout: no orphan blobs, no tool leftovers
    top = sorted(p.name for p in layout.iterdir())
    if top != ["blobs", "index.json", "oci-layout"]:
        raise Bad(f"layout top level holds {top}")
    blobs = sorted("sha256:" + p.name for p in layout.joinpath("blobs", "sha256").iterdir())
    if blobs != sorted(used):
        raise Bad(f"blobs not referenced from index.json: {sorted(set(blobs) - used)}")
    return images


def _packaged() -> Dir:
    return importlib.resources.files("clipcy").joinpath("sample")


def _files(layout: Path) -> dict[str, bytes]:
    return {str(p.relative_to(layout)): p.read_bytes() for p in layout.rglob("*") if p.is_file()}


def _members(tar: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        return {m.name.removeprefix("./").rstrip("/") or ".": m for m in tf.getmembers()}


def test_sample_is_package_data() -> None:
    sample = _packaged()
    assert sample.joinpath("index.json").is_file()
    assert sample.joinpath("oci-layout").is_file()
    assert sample.joinpath("blobs", "sha256").is_dir()


def test_committed_sample_matches_its_descriptors() -> None:
    images = check_layout(COMMITTED)
    assert sorted(images) == ["latest", "v1"]


def test_packaged_sample_matches_its_descriptors() -> None:
    # the copy an installed clipcy ships (the checkout itself under an editable install)
    images = check_layout(_packaged())
    assert sorted(images) == ["latest", "v1"]


def test_packaged_sample_equals_committed() -> None:
    sample = _packaged()
    for rel, data in _files(COMMITTED).items():
        assert sample.joinpath(*rel.split("/")).read_bytes() == data, rel


def test_sample_shape() -> None:
    images = check_layout(COMMITTED)
    latest, v1 = images["latest"], images["v1"]
    assert len(latest) == 3
    assert v1 == latest[:1]
    size = sum(len(d) for d in _files(COMMITTED).values())
    assert size < 200 * 1024, size


def test_layer_contents_show_the_features() -> None:
    l1, l2, l3 = (_members(t) for t in check_layout(COMMITTED)["latest"])
    # layer 1: a tiny root fs with one of each interesting kind of entry
    assert l1["usr/bin/hello"].isreg() and l1["usr/bin/hello"].mode == 0o755
    assert l1["usr/bin/hi"].issym() and l1["usr/bin/hi"].linkname == "hello"
    hard = l1["usr/share/licenses/hello/COPYING"]
    assert hard.islnk() and hard.linkname == "usr/share/doc/hello/COPYING"
    assert l1["usr/libexec/hello/hello-helper"].mode == 0o4755
    assert l1["tmp"].isdir() and l1["tmp"].mode == 0o1777
    assert l1["var/cache/hello"].isdir()
    assert not any(n.startswith("var/cache/hello/") for n in l1)
    readme = l1["usr/share/doc/hello/README"]
    assert readme.pax_headers.get("SCHILY.xattr.user.mime_type") == "text/plain"
    assert (l1["home/hello/.profile"].uid, l1["home/hello/.profile"].gid) == (1000, 1000)
    assert l1["var/log/hello.log"].size >= 200 * 1024
    for name in ("etc/motd", "etc/os-release", "etc/hello.d/20-colour.conf", "etc/hostname"):
        assert l1[name].isreg(), name
    # layer 2: whiteout, replacement, opaque directory
    assert {"etc/.wh.motd", "etc/os-release", "etc/hello.d/.wh..wh..opq"} <= set(l2)
    assert "etc/hello.d/10-greeting.conf" in l2
    # layer 3: exactly one new file
    assert list(l3) == ["usr/share/doc/hello/NEWS"]
    # every member's mtime is one of the script's fixed epochs
    epochs = {1700000000, 1700086400, 1700172800}
    assert {m.mtime for layer in (l1, l2, l3) for m in layer.values()} <= epochs


def test_checker_catches_a_corrupt_copy(tmp_path: Path) -> None:
    # the checks above can fail: flip one byte of the big layer, then drop a blob
    copy = tmp_path / "sample"
    shutil.copytree(COMMITTED, copy)
    blobs = sorted((copy / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    big = blobs[-1]
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 0x01
    big.write_bytes(bytes(data))
    with pytest.raises(Bad, match="has sha256"):
        check_layout(copy)
    big.unlink()
    with pytest.raises(Bad, match="missing"):
        check_layout(copy)


def _can_rebuild() -> str | None:
    if not SCRIPT.is_file():
        return "tools/make_sample.sh not present"
    if os.geteuid() != 0:
        return "make_sample.sh needs root"
    for tool in ("umoci", "setfattr", "getfattr", "tar", "gzip", "awk"):
        if shutil.which(tool) is None:
            return f"make_sample.sh needs {tool}"
    return None


def test_script_reproduces_committed_sample(tmp_path: Path) -> None:
    why = _can_rebuild()
    if why:
        pytest.skip(why)
    out = tmp_path / "sample"
    subprocess.run(["bash", str(SCRIPT), str(out)], check=True, capture_output=True, timeout=120)
    built, committed = _files(out), _files(COMMITTED)
    assert sorted(built) == sorted(committed)
    differ = [rel for rel in committed if built[rel] != committed[rel]]
    # differing bytes with the same names would mean other tool versions (umoci, GNU tar)
    assert not differ, f"make_sample.sh output differs from clipcy/sample: {differ}"
