"""What build.sh writes to OUTDIR/expected, as lists the tests parametrize over at collection
time, before the session fixture has built anything. test_corpus_build.py checks that a build
writes exactly these files, so a tree added to build.sh but not here cannot go untested."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

# (layout, tag, platform): expected/LAYOUT@quote(TAG)[@OS-ARCH[-VARIANT]].jsonl
TREES: list[tuple[str, str, str | None]] = [
    ("basic", "latest", None),
    ("basic", "v1", None),
    ("big", "latest", None),
    ("docker", "latest", None),
    ("empty", "empty", None),
    ("manytags", "Latest", None),
    ("manytags", "latest", None),
    ("manytags", "registry.example.com/ns/app:1.2", None),
    ("manytags", "v1", None),
    ("multiarch", "latest", "linux/amd64"),
    ("multiarch", "latest", "linux/arm64/v8"),
    ("multimember", "latest", None),
    ("plain", "latest", None),
    ("zstd", "latest", None),
    ("zstd", "v1", None),
    ("zstd-multiframe", "latest", None),
    ("zstd-skippable", "latest", None),
]

# tars/NAME.tar, expected/tars/NAME.jsonl
TARS: list[str] = [
    *(f"bsdtar-{x}" for x in ("gnutar", "pax", "pax-common", "ustar")),
    *(f"fmt-{x}" for x in ("gnu", "oldgnu", "posix", "ustar", "v7")),
    "huge-sparse-oldgnu",
    "huge-sparse-pax",
    *(f"long-{x}" for x in ("gnu", "oldgnu", "posix", "ustar")),
    "nonutf8-gnu",
    "nonutf8-pax",
    "pax-xattrs-global",
    *(f"sparse-{x}" for x in ("gnu", "oldgnu", "pax-0.0", "pax-0.1", "pax-1.0")),
]

# the comparer, run on the oracle's unpacked trees and on clipcy's
TREE_PY = Path(__file__).resolve().parent / "tree.py"


def tree_id(layout: str, tag: str, platform: str | None) -> str:
    return f"{layout}@{tag}" + (f"@{platform}" if platform else "")


def expected_name(layout: str, tag: str, platform: str | None) -> str:
    """The file name under expected/ for one tree."""
    name = f"{layout}@{urllib.parse.quote(tag, safe='')}"
    if platform:
        name += "@" + platform.replace("/", "-")
    return name + ".jsonl"
