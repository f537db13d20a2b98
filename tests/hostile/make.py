"""The hostile corpus: OCI layouts that `clipctl index-layout` must refuse with one line and
exit 1, or (where the input is legal) index with the semantics each case states.

    python tests/hostile/make.py OUT            # every case: OUT/<name>/ and OUT/cases.json
    python tests/hostile/make.py OUT --slow     # also the 1M-entry layer

Layer bytes start from real tools' output (GNU tar, gzip -n, zstd) and are then damaged on
purpose; the few headers no tool writes (length lies, base-256 overflows, a 1 GiB GNU long
name) are built here field by field. tests/test_hostile.py runs every case under resource
limits (address space, CPU seconds, a wall-clock timeout).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TAR_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_ZST = "application/vnd.oci.image.layer.v1.tar+zstd"
TAR = "application/vnd.oci.image.layer.v1.tar"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
REF = "org.opencontainers.image.ref.name"
TOOLS = ("tar", "gzip", "zstd")


# ---------------------------------------------------------------------------------------
# Bytes from real tools


def gnu_tar(files: dict[str, bytes], fmt: str = "posix") -> bytes:
    """GNU tar's archive of these files (reproducible: sorted, mtime 0, owner 0)."""
    with tempfile.TemporaryDirectory(prefix="hostile-") as d:
        for name, data in files.items():
            p = Path(d, name)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return subprocess.run(
            [
                "tar",
                f"--format={fmt}",
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--pax-option=delete=atime,delete=ctime",
                "-C",
                d,
                "-cf",
                "-",
                *sorted(files),
            ],
            check=True,
            stdout=subprocess.PIPE,
        ).stdout


def gzip_n(data: bytes) -> bytes:
    return subprocess.run(
        ["gzip", "-n", "-c"], input=data, check=True, stdout=subprocess.PIPE
    ).stdout


def zstd_c(data: bytes) -> bytes:
    """zstd's CLI writes a content checksum by default (--check)."""
    return subprocess.run(
        ["zstd", "-q", "-c", "--check"], input=data, check=True, stdout=subprocess.PIPE
    ).stdout


def base_tar() -> bytes:
    return gnu_tar(
        {"etc/hostname": b"hostile\n", "usr/bin/tool": random.Random(12).randbytes(3000)}
    )


# ---------------------------------------------------------------------------------------
# Tar headers no tool writes


def _pad(n: int) -> bytes:
    return bytes(-n % 512)


def header(
    name: bytes,
    typeflag: bytes = b"0",
    size: int = 0,
    linkname: bytes = b"",
    size_field: bytes | None = None,
    checksum: bool = True,
) -> bytes:
    b = bytearray(512)
    b[0 : len(name[:100])] = name[:100]
    b[100:108] = b"0000644\0"
    b[108:116] = b"0000000\0"
    b[116:124] = b"0000000\0"
    b[124:136] = size_field if size_field is not None else b"%011o\0" % size
    b[136:148] = b"00000000000\0"
    b[156:157] = typeflag
    b[157 : 157 + len(linkname[:100])] = linkname[:100]
    b[257:265] = b"ustar\x0000"
    b[148:156] = b" " * 8
    total = sum(b)
    b[148:156] = b"%06o\0 " % (total if checksum else total + 1)
    return bytes(b)


def member(name: bytes, data: bytes = b"", **kw: object) -> bytes:
    return header(name, size=len(data), **kw) + data + _pad(len(data))  # type: ignore[arg-type]


def pax(records: bytes) -> bytes:
    return header(b"PaxHeader", b"x", len(records)) + records + _pad(len(records))


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n += 1
    return str(n).encode() + body


END = bytes(1024)


# ---------------------------------------------------------------------------------------
# Layouts


def _put(root: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest).write_bytes(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def layout(
    root: Path,
    layers: list[tuple[bytes, str, str]],
    *,
    tag: str = "latest",
    diff_ids: list[str] | None = None,
    edit_manifest: Callable[[dict[str, object]], None] | None = None,
) -> dict[str, object]:
    """An OCI layout of (blob, media type, diff_id) layers; returns the index.json entry."""
    root.mkdir(parents=True, exist_ok=True)
    descs = [dict(_put(root, blob), mediaType=media) for blob, media, _ in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids if diff_ids is not None else [d for _, _, d in layers],
        },
    }
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": dict(_put(root, json.dumps(config).encode()), mediaType=CONFIG),
        "layers": descs,
    }
    if edit_manifest is not None:
        edit_manifest(manifest)
    top = dict(
        _put(root, json.dumps(manifest).encode()), mediaType=MANIFEST, annotations={REF: tag}
    )
    write_index(root, [top])
    return top


def write_index(root: Path, manifests: list[dict[str, object]]) -> None:
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def tar_layer(tar: bytes, kind: str = "gzip") -> tuple[bytes, str, str]:
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    if kind == "gzip":
        return gzip_n(tar), TAR_GZ, diff_id
    if kind == "zstd":
        return zstd_c(tar), TAR_ZST, diff_id
    return tar, TAR, diff_id


def raw_layer(blob: bytes, media: str, diff_of: bytes | None = None) -> tuple[bytes, str, str]:
    """A layer whose blob is exactly these bytes (its digest matches them, so the damage is
    found by the decompressor or the parser, not by the digest check)."""
    return blob, media, "sha256:" + hashlib.sha256(diff_of or blob).hexdigest()


def layer_blob(root: Path, i: int = 0) -> Path:
    index = json.loads((root / "index.json").read_text())
    mdig = index["manifests"][0]["digest"].split(":")[1]
    man = json.loads((root / "blobs" / "sha256" / mdig).read_text())
    return root / "blobs" / "sha256" / man["layers"][i]["digest"].split(":")[1]


# ---------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], None]
    # "error": exit 1 with one line containing `match`;
    # "ok": exit 0, and `match` names the semantics (tests/test_hostile.py checks them)
    expect: str
    match: str
    slow: bool = False
    root: bool = False  # needs root to build (device nodes)


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x10
    return bytes(b)


def _gz(name: str, mutate: Callable[[bytes], bytes], match: str) -> Case:
    def build(root: Path) -> None:
        tar = base_tar()
        blob = mutate(gzip_n(tar))
        layout(root, [raw_layer(blob, TAR_GZ, tar)])

    return Case(name, build, "error", match)


def _zst(name: str, mutate: Callable[[bytes], bytes], match: str) -> Case:
    def build(root: Path) -> None:
        tar = base_tar()
        blob = mutate(zstd_c(tar))
        layout(root, [raw_layer(blob, TAR_ZST, tar)])

    return Case(name, build, "error", match)


def _tar(
    name: str,
    tar: Callable[[], bytes],
    expect: str,
    match: str,
    kind: str = "gzip",
    slow: bool = False,
) -> Case:
    def build(root: Path) -> None:
        layout(root, [tar_layer(tar(), kind)])

    return Case(name, build, expect, match, slow)


def _gzip_crc(blob: bytes) -> bytes:
    b = bytearray(blob)
    b[-8] ^= 0xFF
    return bytes(b)


def _gzip_isize(blob: bytes) -> bytes:
    b = bytearray(blob)
    b[-4] ^= 0x01
    return bytes(b)


def _zstd_checksum(blob: bytes) -> bytes:
    b = bytearray(blob)
    b[-1] ^= 0xFF  # the last 4 bytes are the XXH64 content checksum
    return bytes(b)


def _tar_checksum() -> bytes:
    t = bytearray(base_tar())
    t[148:156] = b"0000000\0"
    return bytes(t)


def _base256_overflow() -> bytes:
    # a size of 2**88: base-256 with the high bit, far beyond any int64
    return header(b"big", size_field=b"\x80" + b"\xff" * 11) + END


def _base256_negative() -> bytes:
    return header(b"neg", size_field=b"\xff" * 12) + END


def _gnu_longname_1gib() -> bytes:
    return header(b"././@LongLink", b"L", 1 << 30) + b"x" * 512 + END


def _deep(depth: int) -> bytes:
    name = "/".join(["d"] * depth) + "/f"
    return pax(pax_record(b"path", name.encode())) + member(b"placeholder", b"x") + END


def _million() -> bytes:
    """1,048,576 empty files in 1024 directories (headers only: 512 MiB of tar)."""
    parts = []
    for d in range(1024):
        parts.append(header(b"d%04d/" % d, b"5"))
        parts.extend(header(b"d%04d/f%04d" % (d, f)) for f in range(1024))
    parts.append(END)
    return b"".join(parts)


def _layout_case(
    name: str,
    build: Callable[[Path], None],
    expect: str = "error",
    match: str = "",
    root: bool = False,
) -> Case:
    return Case(name, build, expect, match, root=root)


def _simple(root: Path) -> dict[str, object]:
    return layout(root, [tar_layer(base_tar())])


def _not_json(root: Path) -> None:
    _simple(root)
    (root / "index.json").write_bytes(b"{not json")


def _wrong_schema(root: Path) -> None:
    _simple(root)
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": {"a": 1}}))


def _wrong_schema_entry(root: Path) -> None:
    _simple(root)
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [42]}))


def _huge_index(root: Path) -> None:
    top = _simple(root)
    pad = {"x-pad": "p" * (17 << 20)}
    (root / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [top], "annotations": pad})
    )


def _desc_size_lie_manifest(root: Path) -> None:
    top = _simple(root)
    write_index(root, [dict(top, size=int(top["size"]) + 1)])  # type: ignore[call-overload]


def _desc_size_lie_layer(root: Path) -> None:
    def edit(m: dict[str, object]) -> None:
        m["layers"][0]["size"] += 100  # type: ignore[index]

    layout(root, [tar_layer(base_tar())], edit_manifest=edit)


def _desc_size_huge(root: Path) -> None:
    def edit(m: dict[str, object]) -> None:
        m["layers"][0]["size"] = 1 << 62  # type: ignore[index]

    layout(root, [tar_layer(base_tar())], edit_manifest=edit)


def _unknown_alg(root: Path) -> None:
    top = _simple(root)
    write_index(root, [dict(top, digest="md5:" + "0" * 32)])


def _digest_path_chars(root: Path) -> None:
    def edit(m: dict[str, object]) -> None:
        m["layers"][0]["digest"] = "sha256:../../../../etc/passwd"  # type: ignore[index]

    layout(root, [tar_layer(base_tar())], edit_manifest=edit)


def _blob_outside(root: Path) -> None:
    _simple(root)
    blob = layer_blob(root)
    outside = root.parent.resolve() / (root.name + "-outside")
    outside.write_bytes(blob.read_bytes())
    blob.unlink()
    blob.symlink_to(outside)


def _blob_dev_zero(root: Path) -> None:
    # the case 3: a symlink to a device that never ends, with a huge size
    def edit(m: dict[str, object]) -> None:
        m["layers"][0]["size"] = 1 << 40  # type: ignore[index]

    layout(root, [tar_layer(base_tar())], edit_manifest=edit)
    blob = layer_blob(root)
    blob.unlink()
    blob.symlink_to("/dev/zero")


def _blob_fifo(root: Path) -> None:
    _simple(root)
    blob = layer_blob(root)
    blob.unlink()
    os.mkfifo(blob)


def _blob_dir(root: Path) -> None:
    _simple(root)
    blob = layer_blob(root)
    blob.unlink()
    blob.mkdir()


def _blob_device(root: Path) -> None:
    _simple(root)
    blob = layer_blob(root)
    blob.unlink()
    os.mknod(blob, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers


def _blob_socket(root: Path) -> None:
    import socket

    _simple(root)
    blob = layer_blob(root)
    blob.unlink()
    cwd = os.getcwd()
    os.chdir(blob.parent)  # an AF_UNIX path is limited to 108 bytes: bind a relative one
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(blob.name)
    finally:
        os.chdir(cwd)


def _blob_symlink_fifo_inside(root: Path) -> None:
    _simple(root)
    blob = layer_blob(root)
    blob.unlink()
    os.mkfifo(root / "fifo")
    blob.symlink_to("../../fifo")


def _blob_symlink_inside(root: Path) -> None:
    # legal: a symlink to a regular file of the right content inside the layout
    _simple(root)
    blob = layer_blob(root)
    blob.rename(root / "elsewhere")
    blob.symlink_to("../../elsewhere")


def _index_json_fifo(root: Path) -> None:
    _simple(root)
    (root / "index.json").unlink()
    os.mkfifo(root / "index.json")


def _manifest_blob_fifo(root: Path) -> None:
    top = _simple(root)
    p = root / "blobs" / "sha256" / str(top["digest"]).split(":")[1]
    p.unlink()
    os.mkfifo(p)


def _index_cycle(root: Path) -> None:
    # An index that names itself cannot have a matching digest: the blob at the digest it
    # names is this index, whose real digest differs, so the digest check ends the loop.
    _simple(root)
    fake = "sha256:" + "ab" * 32
    idx = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {
                "mediaType": INDEX,
                "digest": fake,
                "size": 0,
                "platform": {"os": "linux", "architecture": "amd64"},
            }
        ],
    }
    data = json.dumps(idx).encode()
    idx["manifests"][0]["size"] = len(data)  # type: ignore[index]
    data = json.dumps(idx).encode()
    (root / "blobs" / "sha256" / fake.split(":")[1]).write_bytes(data)
    write_index(
        root,
        [{"mediaType": INDEX, "digest": fake, "size": len(data), "annotations": {REF: "latest"}}],
    )


def _deep_nesting(root: Path) -> None:
    top = _simple(root)
    desc = {k: top[k] for k in ("mediaType", "digest", "size")}
    for _ in range(40):
        child = dict(desc, platform={"os": "linux", "architecture": "amd64"})
        d = _put(
            root,
            json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [child]}).encode(),
        )
        desc = dict(d, mediaType=INDEX)
    write_index(root, [dict(desc, annotations={REF: "latest"})])


def _few_diff_ids(root: Path) -> None:
    tar = base_tar()
    layout(
        root,
        [tar_layer(tar), tar_layer(gnu_tar({"x": b"y"}))],
        diff_ids=["sha256:" + hashlib.sha256(tar).hexdigest()],
    )


def _foreign(root: Path) -> None:
    def edit(m: dict[str, object]) -> None:
        m["layers"][0]["mediaType"] = (  # type: ignore[index]
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        )
        m["layers"][0]["urls"] = ["https://example.invalid/layer"]  # type: ignore[index]

    layout(root, [tar_layer(base_tar())], edit_manifest=edit)


CASES: list[Case] = [
    # -- compressed streams ---------------------------------------------------------------
    _gz("gzip-truncated", lambda b: b[: len(b) // 2], "truncated gzip stream"),
    _gz("gzip-truncated-header", lambda b: b[:5], "truncated gzip stream"),
    _gz("gzip-bitflip", lambda b: _flip(b, len(b) // 2), "layer 0"),
    _gz("gzip-wrong-crc", _gzip_crc, "incorrect data check"),
    _gz("gzip-wrong-isize", _gzip_isize, "incorrect length check"),
    _zst("zstd-truncated", lambda b: b[: len(b) // 2], "truncated zstd stream"),
    _zst("zstd-bitflip", lambda b: _flip(b, len(b) // 2), "layer 0"),
    _zst("zstd-wrong-checksum", _zstd_checksum, "doesn't match checksum"),
    # -- tar -----------------------------------------------------------------------------
    _tar("tar-truncated", lambda: base_tar()[:1000], "error", "truncated tar", kind="plain"),
    _tar(
        "tar-bitflip-header",
        lambda: _flip(base_tar(), 0),
        "error",
        "bad tar header checksum",
        kind="plain",
    ),
    _tar("tar-checksum", _tar_checksum, "error", "bad tar header checksum"),
    _tar("pax-length-negative", lambda: pax(b"-5 path=x\n") + member(b"a") + END, "error", "pax"),
    _tar(
        "pax-length-huge",
        lambda: pax(b"99999999999999999999 path=x\n") + member(b"a") + END,
        "error",
        "pax",
    ),
    _tar("pax-length-nonnumeric", lambda: pax(b"1x path=x\n") + member(b"a") + END, "error", "pax"),
    _tar(
        "pax-header-2gib", lambda: header(b"PaxHeader", b"x", 2 << 30) + END, "error", "pax_header="
    ),
    _tar("base256-overflow", _base256_overflow, "error", "size"),
    _tar("base256-negative", _base256_negative, "error", "size"),
    _tar("gnu-longname-1gib", _gnu_longname_1gib, "error", "pax_header="),
    _tar(
        "name-nul",
        lambda: pax(pax_record(b"path", b"a\0b")) + member(b"x") + END,
        "error",
        "bad pax path",
    ),
    _tar("name-newline", lambda: gnu_tar({"a\nb": b"1"}), "ok", "the path a<newline>b is kept"),
    _tar(
        "name-dotdot",
        lambda: member(b"../../etc/passwd", b"x") + END,
        "ok",
        "../ resolved inside the root: /etc/passwd",
    ),
    _tar(
        "name-absolute",
        lambda: member(b"/etc/passwd", b"x") + END,
        "ok",
        "leading / dropped: /etc/passwd",
    ),
    _tar(
        "hardlink-missing",
        lambda: member(b"h", typeflag=b"1", linkname=b"nowhere") + END,
        "ok",
        "link dropped with a warning",
    ),
    _tar(
        "hardlink-later",
        lambda: member(b"h", typeflag=b"1", linkname=b"t") + member(b"t", b"x") + END,
        "ok",
        "link dropped with a warning (targets come first)",
    ),
    _tar(
        "symlink-loop",
        lambda: (
            member(b"a", typeflag=b"2", linkname=b"b")
            + member(b"b", typeflag=b"2", linkname=b"a")
            + END
        ),
        "ok",
        "both symlinks kept",
    ),
    _tar("deep-4096", lambda: _deep(4096), "error", "path_length="),
    _tar("deep-1500", lambda: _deep(1500), "error", "path_depth="),
    _tar("million-entries", _million, "ok", "1049600 entries indexed", slow=True),
    # -- layouts -------------------------------------------------------------------------
    _layout_case("index-not-json", _not_json, match="invalid JSON"),
    _layout_case("index-wrong-schema", _wrong_schema, match="not a list"),
    _layout_case("index-entry-not-object", _wrong_schema_entry, match="not an object"),
    _layout_case("index-huge", _huge_index, match="json_size="),
    _layout_case("index-json-fifo", _index_json_fifo, match="FIFO"),
    _layout_case("manifest-blob-fifo", _manifest_blob_fifo, match="FIFO"),
    _layout_case("size-lie-manifest", _desc_size_lie_manifest, match="descriptor says"),
    _layout_case("size-lie-layer", _desc_size_lie_layer, match="descriptor says"),
    _layout_case("size-lie-huge", _desc_size_huge, match="descriptor says"),
    _layout_case("digest-unknown-algorithm", _unknown_alg, match="unsupported digest algorithm"),
    _layout_case("digest-path-characters", _digest_path_chars, match="invalid digest"),
    _layout_case("blob-symlink-outside", _blob_outside, match="outside the layout"),
    _layout_case("blob-symlink-dev-zero", _blob_dev_zero, match="outside the layout"),
    _layout_case("blob-fifo", _blob_fifo, match="a FIFO, not a regular file"),
    _layout_case("blob-directory", _blob_dir, match="a directory, not a regular file"),
    _layout_case("blob-device", _blob_device, match="a character device", root=True),
    _layout_case("blob-socket", _blob_socket, match="a socket, not a regular file"),
    _layout_case("blob-symlink-to-fifo", _blob_symlink_fifo_inside, match="a FIFO"),
    _layout_case("blob-symlink-inside", _blob_symlink_inside, "ok", "indexed through the link"),
    _layout_case("index-cycle", _index_cycle, match="digest"),
    _layout_case("index-deep-nesting", _deep_nesting, match="index_depth="),
    _layout_case("config-few-diff-ids", _few_diff_ids, match="diff_ids"),
    _layout_case("foreign-layer", _foreign, match="foreign"),
]


def build(out: Path, slow: bool = False) -> list[Case]:
    """Build every case (that this user can) under out/<name>; returns the cases built."""
    built = []
    for case in CASES:
        if (case.slow and not slow) or (case.root and os.geteuid() != 0):
            continue
        target = out / case.name
        if target.exists():
            shutil.rmtree(target)
        case.build(target)
        built.append(case)
    (out / "cases.json").write_text(
        json.dumps(
            [{"name": c.name, "expect": c.expect, "match": c.match} for c in built], indent=1
        )
    )
    return built


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--slow", action="store_true", help="also the 1M-entry layer")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for c in build(args.out, args.slow):
        print(f"{c.name}: {c.expect} ({c.match})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
