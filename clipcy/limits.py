"""Every size and count limit clipcy enforces on its inputs, in one place (docs/LIMITS.md).

A hostile or broken input must end in one line naming the limit it broke, never in unbounded
time or memory. The defaults are far above what real images use (LIMITS.md says why), and
`clipctl index-layout --limit NAME=N` changes one for a run. The limits the archive reader
enforces on the sections of a .clip file (MAX_*) are defined here too; they are part of the
format, so clipcy.archive.format names them as well.
"""

from __future__ import annotations

from collections.abc import Iterable

from clipcy._fields import FrozenFields
from clipcy.errors import ClipError, LimitError


class Limits(FrozenFields):
    """Input limits of index-layout. Field names are the names users see in messages.
    Immutable: replace() makes a changed copy (a plain class, not a dataclass: see
    clipcy._fields)."""

    __slots__ = ("entries_per_layer", "nodes_per_image", "path_length", "link_length",
                 "path_depth", "pax_header", "xattrs_per_entry", "xattr_size", "json_size",
                 "index_depth")
    entries_per_layer: int
    nodes_per_image: int
    path_length: int
    link_length: int
    path_depth: int
    pax_header: int
    xattrs_per_entry: int
    xattr_size: int
    json_size: int
    index_depth: int

    def __init__(
        self,
        entries_per_layer: int = 4_000_000,  # tar entries of one layer (headers, not bytes)
        nodes_per_image: int = 8_000_000,  # paths of the merged tree
        path_length: int = 4096,  # bytes of an entry's name (Linux PATH_MAX)
        link_length: int = 4096,  # bytes of a symlink/hardlink target (Linux PATH_MAX)
        path_depth: int = 1024,  # components of an entry's name
        pax_header: int = 1 << 20,  # bytes of extended headers (PAX, GNU long names) per entry
        xattrs_per_entry: int = 1024,  # extended attributes of one entry
        xattr_size: int = 65536,  # bytes of one xattr value (Linux XATTR_SIZE_MAX)
        json_size: int = 16 << 20,  # bytes of index.json, a manifest, an index or a config
        index_depth: int = 8,  # image indexes nested inside index.json's entry
    ) -> None:
        self._init(entries_per_layer, nodes_per_image, path_length, link_length, path_depth,
                   pax_header, xattrs_per_entry, xattr_size, json_size, index_depth)

    def check(self, name: str, value: int, what: str) -> None:
        """Raise LimitError when value is above the limit `name`."""
        limit = getattr(self, name)
        if value > limit:
            raise LimitError(exceeded(name, limit, what))

    def replace(self, **changes: int) -> Limits:
        """A copy with some limits changed (an unknown name is a TypeError)."""
        return Limits(**{**self._asdict(), **changes})


def exceeded(name: str, limit: int, what: str) -> str:
    """The one message format of every broken limit (the tar parsers build the same text)."""
    return f"{what} exceeds the limit {name}={limit}"


DEFAULT = Limits()
NAMES = Limits.FIELDS
__all__ = ["ARCHIVE_SECTIONS", "DEFAULT", "MAX_ACCESS_RAW", "MAX_BLOCK_RAW", "MAX_METADATA_RAW",
           "MAX_PREFETCH_RAW", "NAMES", "PREFETCH_FILES", "PREFETCH_LIST_BYTES", "LimitError",
           "Limits", "exceeded", "parse_overrides"]

# Sections of a .clip archive, checked by the reader before it decompresses them.
MAX_BLOCK_RAW = 64 * 1024 * 1024  # one node block, decompressed
MAX_METADATA_RAW = 64 * 1024 * 1024  # the metadata JSON, decompressed
MAX_ACCESS_RAW = 512 * 1024 * 1024  # one layer's access frame, decompressed
MAX_PREFETCH_RAW = 1 << 20  # the prefetch list, decompressed (PREFETCH_FILES varints of <= 5 bytes)
ARCHIVE_SECTIONS = {
    "node_block_raw": MAX_BLOCK_RAW,
    "metadata_raw": MAX_METADATA_RAW,
    "access_raw": MAX_ACCESS_RAW,
    "prefetch_raw": MAX_PREFETCH_RAW,
}

# Prefetch lists (docs/FORMAT.md "Prefetch lists"): a container start reads hundreds to a few
# thousand files; a list far longer than that is not a start but a copy of the image, which
# `--fetch-all` is for.
PREFETCH_FILES = 65_536  # files in one list
PREFETCH_LIST_BYTES = 16 << 20  # bytes of a list file (65,536 paths of 256 bytes)


def parse_overrides(items: Iterable[str], base: Limits = DEFAULT) -> Limits:
    """Limits from "NAME=N" strings (clipctl --limit)."""
    changes: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in NAMES:
            raise ClipError(
                f"invalid --limit {item!r}: expected NAME=N with NAME one of {', '.join(NAMES)}"
            )
        try:
            n = int(value)
        except ValueError:
            n = -1
        if n < 1:
            raise ClipError(f"invalid --limit {item!r}: N must be a positive integer")
        changes[name] = n
    return base.replace(**changes)
