"""Make tests/data/golden/golden.clip from a fixed input, through the public writer API.

    /work/venv/bin/python tests/data/golden/make_golden.py

tests/test_format.py imports golden_input() from this file, checks that today's writers
reproduce golden.clip byte for byte and that the reader decodes it back to the same input.
Regenerate (and say why in the commit) only when the format changes on purpose; then update
docs/FORMAT.md and clipcy/archive/format.py in the same commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipcy.archive.format import CHECKSUM_WRITTEN
from clipcy.layers.access import LayerAccess
from clipcy.node import Node
from clipcy.storage.spans import SpanTable, span_digest

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden.clip"


def golden_input() -> tuple[dict[str, Any], list[Node], list[LayerAccess]]:
    """A small tree touching every record flag, three blocks, and all three access kinds."""
    metadata: dict[str, Any] = {
        "schema": 1,
        "manifest_digest": "sha256:" + "ab" * 32,
        "platform": {"os": "linux", "architecture": "amd64"},
        "refs": ["golden:latest"],
        "layers": [
            {"digest": "sha256:" + "01" * 32, "size": 1000, "mediaType":
             "application/vnd.oci.image.layer.v1.tar+gzip"},
            {"digest": "sha256:" + "02" * 32, "size": 2000, "mediaType":
             "application/vnd.oci.image.layer.v1.tar+zstd"},
            {"digest": "sha256:" + "03" * 32, "size": 3000, "mediaType":
             "application/vnd.oci.image.layer.v1.tar"},
        ],
        "config": {"Env": ["PATH=/usr/bin"], "Labels": {"é": "ünïcode", "empty": None},
                   "flag": True},
    }
    deep = b"/deep"
    long_dirs = []
    for i in range(18):  # 18 components of 250 bytes: a path of ~4.5 KiB
        deep += b"/" + bytes([ord("a") + i]) * 250
        long_dirs.append(deep)
    nodes = [
        Node(b"/", "dir", 0o755, 0, 0, 1_700_000_000, nlink=6, ino=1),
        Node(b"/bin", "symlink", 0o777, 0, 0, 1_700_000_001, linkname=b"usr/bin", ino=2),
        Node(b"/deep", "dir", 0o700, 1, 1, 0, nlink=3, ino=3),
    ]
    ino = 3
    for i, d in enumerate(long_dirs):
        ino += 1
        nodes.append(Node(d, "dir", 0o755, 0, 0, -1 - i, 999_999_999, ino=ino,
                          nlink=2 if i == len(long_dirs) - 1 else 3))
    ino += 1
    nodes.append(Node(long_dirs[-1] + b"/" + b"z" * 255, "file", 0o644, 0, 0, 5, size=1,
                      layer=2, offset=512, ino=ino))
    nodes += [
        Node(b"/dev", "dir", 0o755, 0, 0, 7, nlink=2, ino=ino + 1),
        Node(b"/dev/fifo", "fifo", 0o600, 0, 0, 7, ino=ino + 2),
        Node(b"/dev/null", "char", 0o666, 0, 0, 7, devmajor=1, devminor=3, ino=ino + 3),
        Node(b"/dev/sda", "block", 0o660, 0, 6, 7, devmajor=8, devminor=2**20 - 1,
             ino=ino + 4),
        Node(b"/empty", "dir", 0o755, 0, 0, -2**40, 1, nlink=2, ino=ino + 5),
    ]
    ino += 6
    nodes.append(Node(b"/etc", "dir", 0o755, 0, 0, 9, nlink=2, ino=ino))
    nodes.append(Node(b"/etc/hard1", "file", 0o644, 2**32 - 1, 2**32 - 2, 9, 5, size=11,
                      layer=0, offset=1024, ino=ino + 1, nlink=2,
                      digest=bytes(range(32))))
    nodes.append(Node(b"/etc/hard2", "file", 0o644, 2**32 - 1, 2**32 - 2, 9, 5, size=11,
                      layer=0, offset=1024, ino=ino + 1, nlink=2,
                      digest=bytes(range(32))))
    nodes.append(Node(b"/etc/latin1-\xe9t\xe9", "file", 0o4755, 0, 0, 10, size=0, layer=1,
                      offset=0, ino=ino + 2,
                      xattrs={"user.bin": b"\x00\xff\x80", "security.capability":
                              b"\x01\x00\x00\x02" + bytes(16), "user.empty": b""}))
    nodes.append(Node(b"/etc/sparse", "file", 0o600, 0, 0, 11, size=1 << 40, layer=1,
                      offset=4096, ino=ino + 3, sparse=((0, 512), (1 << 30, 1024), (1 << 40, 0))))
    nodes.append(Node(b"/etc/sparse-empty", "file", 0o600, 0, 0, 11, size=0, layer=0,
                      offset=8192, ino=ino + 4, sparse=()))
    ino += 5
    nodes.append(Node(b"/many", "dir", 0o755, 0, 0, 12, nlink=2, ino=ino))
    for i in range(1040):  # enough records for three node blocks (512 records each)
        ino += 1
        nodes.append(Node(b"/many/f%04d" % i, "file", 0o644, 1000, 1000, 1_600_000_000 + i,
                          size=i, layer=i % 3, offset=10_000 + 512 * i, ino=ino))
    # span checksums: BLAKE3 of fixed stand-in bytes (the golden blobs do not exist); the
    # plain layer has none (kind 0), which a writer stores and a reader refuses to read from
    spans = [SpanTable(CHECKSUM_WRITTEN, lengths, b"".join(
        span_digest(b"golden %d %d" % (layer, k)) for k in range(len(lengths))))
        for layer, lengths in ((0, [1000]), (1, [1024, 976]))]
    access = [
        LayerAccess("gzip", 1 << 20, [(10, 0, 0, b""), (70_000, 3, 1 << 20, b"w" * 32768),
                                       (140_001, 7, 2 << 20, bytes(range(256)) * 128)],
                    spans=spans[0]),
        LayerAccess("zstd", 0, [], [(0, 900, 0, 2048), (900, 850, 2048, 2048)], spans[1]),
        LayerAccess("plain"),
    ]
    return metadata, nodes, access


def main() -> None:
    from clipcy.archive.writer import encode_archive

    data = encode_archive(*golden_input())
    GOLDEN.write_bytes(data)
    print(f"wrote {GOLDEN} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
