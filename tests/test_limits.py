"""Each input limit (clipcy/limits.py, docs/LIMITS.md) through `clipctl index-layout`.

A small layout breaks one limit lowered with --limit: one line naming the limit, exit 1, no
output; the same layout passes with the defaults. The docs table must list every limit with
its default.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from clipcy import limits
from clipcy.errors import TarLimitError

ROOT = Path(__file__).resolve().parent.parent


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("usr/share/doc")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        f = tarfile.TarInfo("usr/share/doc/readme")
        f.size = 5
        f.pax_headers = {"SCHILY.xattr.user.a": "12345", "SCHILY.xattr.user.b": "1"}
        tf.addfile(f, io.BytesIO(b"hello"))
        s = tarfile.TarInfo("usr/share/doc/link")
        s.type = tarfile.SYMTYPE
        s.linkname = "readme"
        tf.addfile(s)
    return buf.getvalue()


@pytest.fixture
def small(tmp_path: Path, layout_factory: Any) -> Path:
    return layout_factory(tmp_path / "layout", [_tar()])  # type: ignore[no-any-return]


def _index(bounded: Any, layout: Path, out: Path, *limit: str, extra: tuple[str, ...] = ()) -> Any:
    argv = ["index-layout", "--layout", str(layout), "--out", str(out), *extra]
    for item in limit:
        argv += ["--limit", item]
    return bounded.run(argv, mem=768 * bounded.MIB, cpu=30, timeout=60)


# (limit, value that breaks it for the small layout, what the message says)
BROKEN = [
    ("entries_per_layer", 2, "layer 0 (sha256:"),
    ("nodes_per_image", 5, "the merged tree exceeds the limit nodes_per_image=5"),
    ("path_length", 19, "tar entry name of 20 bytes at offset"),
    ("link_length", 5, "tar link target of 6 bytes at offset"),
    ("path_depth", 3, "tar entry name of 4 components at offset"),
    ("pax_header", 40, "tar extended header of"),
    ("xattrs_per_entry", 1, "tar entry with 2 xattrs at offset"),
    ("xattr_size", 4, "tar xattr value of 5 bytes at offset"),
    ("json_size", 200, "exceeds the limit json_size=200"),
]


@pytest.mark.parametrize(("name", "value", "says"), BROKEN, ids=[b[0] for b in BROKEN])
def test_limit_broken_through_cli(
    name: str, value: int, says: str, small: Path, tmp_path: Path, bounded: Any
) -> None:
    out = tmp_path / "x.clip"
    line = bounded.error(_index(bounded, small, out, f"{name}={value}"), says)
    assert line.endswith(f"exceeds the limit {name}={value}") or f"{name}={value}" in line
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".x.clip")]
    # one more than what broke it passes (the limits are inclusive)
    if name not in ("pax_header", "json_size"):  # (those two: any smaller value breaks)
        ok = _index(bounded, small, out, f"{name}={value + 1}")
        assert ok.returncode == 0, ok.stderr


def test_defaults_pass(small: Path, tmp_path: Path, bounded: Any) -> None:
    r = _index(bounded, small, tmp_path / "x.clip")
    assert r.returncode == 0, r.stderr


def test_index_depth_through_cli(small: Path, tmp_path: Path, bounded: Any) -> None:
    import hashlib

    index = json.loads((small / "index.json").read_text())
    top = {k: index["manifests"][0][k] for k in ("mediaType", "digest", "size")}
    media = "application/vnd.oci.image.index.v1+json"
    for _ in range(3):
        data = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": media,
                "manifests": [dict(top, platform={"os": "linux", "architecture": "amd64"})],
            }
        ).encode()
        digest = hashlib.sha256(data).hexdigest()
        (small / "blobs" / "sha256" / digest).write_bytes(data)
        top = {"mediaType": media, "digest": "sha256:" + digest, "size": len(data)}
    index["manifests"] = [dict(top, annotations={"org.opencontainers.image.ref.name": "latest"})]
    (small / "index.json").write_text(json.dumps(index))
    out = tmp_path / "x.clip"
    plat = ("--platform", "linux/amd64")
    bounded.error(
        _index(bounded, small, out, "index_depth=3", extra=plat),
        "image index nesting exceeds the limit index_depth=3",
    )
    r = _index(bounded, small, out, "index_depth=4", extra=plat)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("bad", ["nope=3", "path_length", "path_length=0", "path_length=x"])
def test_bad_limit_option(bad: str, small: Path, tmp_path: Path, bounded: Any) -> None:
    bounded.error(_index(bounded, small, tmp_path / "x.clip", bad), "invalid --limit")


def test_limits_api() -> None:
    lim = limits.parse_overrides(["path-length=10"])
    assert lim.path_length == 10 and lim.link_length == limits.DEFAULT.link_length
    with pytest.raises(limits.LimitError, match="^x exceeds the limit path_length=10$"):
        lim.check("path_length", 11, "x")
    lim.check("path_length", 10, "x")
    assert issubclass(TarLimitError, ValueError)


def test_docs_table_lists_every_limit() -> None:
    """docs/LIMITS.md's table: one row per limit, with the default limits.py enforces."""
    text = (ROOT / "docs" / "LIMITS.md").read_text()
    input_part = text.split("## Archive limits")[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([\d,]+) \|", input_part, re.M))
    assert set(rows) == set(limits.NAMES)
    for name in limits.NAMES:
        assert int(rows[name].replace(",", "")) == getattr(limits.DEFAULT, name), name
    for name, value in limits.ARCHIVE_SECTIONS.items():
        assert f"`{name}`" in text and f"{value:,}" in text, name
