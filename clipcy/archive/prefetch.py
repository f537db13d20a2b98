"""Prefetch lists: the files a program reads when it starts, in first-access order.

The text form (what `clipctl mount --record` writes and `--prefetch FILE` reads; docs/FORMAT.md
"Prefetch lists") is one absolute image path per line, `#` comments and blank lines ignored.
In an archive the list is the optional PREFETCH section (format 2.1): the files' node positions
(their place in path order), so a mount plans its replay from records it decodes anyway, with
no path lookup.

    paths = read_list("start.list")            # PrefetchListError: one line naming the problem
    positions = resolve(arc, paths, "start.list")  # ... or the first path not in the image
    data = attach(archive_bytes, positions)    # index-layout --prefetch
    arc.prefetch_positions()                   # what a mount replays (None: no list stored)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from clipcy.archive import format as F
from clipcy.archive.record import LINKNAME, PATH, SIZE, SPARSE, TYPE
from clipcy.errors import PrefetchListError
from clipcy.limits import DEFAULT as LIMITS
from clipcy.limits import PREFETCH_FILES, PREFETCH_LIST_BYTES, exceeded
from clipcy.pathwalk import follow_symlinks
from clipcy.tempfiles import call_held, close_held

if TYPE_CHECKING:
    from clipcy.archive.reader import Archive
    from clipcy.layers.access import LayerAccess

__all__ = ["attach", "attach_paths", "compressed_range", "coverage", "decode_section",
           "encode_section", "format_list", "parse_list", "read_list", "resolve"]


def _show(path: bytes) -> str:
    text = path.decode("utf-8", "backslashreplace")
    return text if len(text) <= 200 else text[:200] + "..."


def read_list(path: str | os.PathLike[str]) -> list[bytes]:
    """The paths of a list file, or PrefetchListError naming the file and what is wrong."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read(PREFETCH_LIST_BYTES + 1)
    except OSError as e:
        raise PrefetchListError(f"cannot read prefetch list {name}: {e.strerror or e}") from None
    return parse_list(data, name)


def parse_list(data: bytes, name: str = "<list>") -> list[bytes]:
    """The paths of a list's text, normalized ("//a/./b" stays as given: it must name an
    image path as the image spells it, less repeated and trailing slashes)."""
    where = f"prefetch list {name}"
    if len(data) > PREFETCH_LIST_BYTES:
        raise PrefetchListError(f"{where}: " + exceeded(
            "prefetch_list_bytes", PREFETCH_LIST_BYTES, f"a file of {len(data)}+ bytes"))
    nul = data.find(b"\0")
    if nul >= 0:
        at = data.count(b"\n", 0, nul) + 1
        raise PrefetchListError(f"{where}, line {at}: binary data (a NUL byte): not a "
                                f"prefetch list (one absolute path per line)")
    seen: dict[bytes, int] = {}
    out: list[bytes] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        if not line.startswith(b"/"):
            raise PrefetchListError(f"{where}, line {number}: not an absolute path: "
                                    f"{_show(line)!r}")
        if len(line) > LIMITS.path_length:
            raise PrefetchListError(f"{where}, line {number}: " + exceeded(
                "path_length", LIMITS.path_length, f"a path of {len(line)} bytes"))
        path = b"/" + b"/".join(p for p in line.split(b"/") if p)
        first = seen.get(path)
        if first is not None:
            raise PrefetchListError(f"{where}, line {number}: {_show(path)} is listed twice "
                                    f"(first on line {first})")
        if len(out) == PREFETCH_FILES:
            raise PrefetchListError(f"{where}, line {number}: " + exceeded(
                "prefetch_files", PREFETCH_FILES, f"path {len(out) + 1}"))
        seen[path] = number
        out.append(path)
    return out


def resolve(arc: Archive, paths: list[bytes], name: str = "<list>") -> list[int]:
    """The node positions of the listed regular files, in list order. A symlink counts as the
    file it leads to inside the image (a file reached twice is kept once); a path not in the
    image, or not leading to a regular file, is an error naming it (the first one)."""
    out: list[int] = []
    taken: set[int] = set()

    def target_of(p: bytes) -> bytes | None:
        hit = arc.locate(p)
        if hit is None:
            raise KeyError(p)
        rec = hit[1]
        return rec[LINKNAME] if rec[TYPE] == "symlink" else None

    for path in paths:
        where = f"prefetch list {name}: {_show(path)}"
        try:
            resolved, complete = follow_symlinks(path, target_of)
        except KeyError:
            raise PrefetchListError(f"{where} is not in the image") from None
        hit = arc.locate(resolved) if complete else None
        if hit is None:
            raise PrefetchListError(f"{where} is not in the image" if complete
                                    else f"{where}: too many levels of symbolic links")
        pos, rec = hit
        if rec[TYPE] != "file":
            raise PrefetchListError(f"{where} is a {rec[TYPE]}, not a regular file")
        if pos not in taken:
            taken.add(pos)
            out.append(pos)
    return out


def format_list(arc: Archive, positions: list[int], header: str = "") -> bytes:
    """The text form of a list of node positions (paths holding a newline are left out: a
    line cannot name them)."""
    lines = [f"# {line}".encode() for line in header.splitlines()]
    for pos in positions:
        path = arc.record_at(pos)[PATH]
        if b"\n" not in path and b"\r" not in path:
            lines.append(path)
    return b"".join(line + b"\n" for line in lines)


def _zigzag(v: int) -> int:
    return (v << 1) ^ (v >> 63)


def encode_section(positions: list[int]) -> bytes:
    """The PREFETCH section's bytes: u64 raw length, then a zstd frame of varint count and
    one zigzag varint per file (its position minus the previous one's; the first's minus 0)."""
    raw = [F.uvarint(len(positions))]
    prev = 0
    for pos in positions:
        raw.append(F.uvarint(_zigzag(pos - prev)))
        prev = pos
    payload = b"".join(raw)
    if len(payload) > F.MAX_PREFETCH_RAW:
        raise PrefetchListError(f"the prefetch list encodes to {len(payload)} bytes, more than "
                                f"the limit of {F.MAX_PREFETCH_RAW}")
    return F.U64.pack(len(payload)) + F._exact(F._compressor().compress(payload))


def decode_section(body: bytes, node_count: int) -> list[int]:
    """The positions a PREFETCH section lists; ValueError saying what is wrong."""
    from clipcy._zstd import zstandard

    if len(body) < 8:
        raise ValueError("prefetch section shorter than 8 bytes")
    (raw_len,) = F.U64.unpack_from(body)
    if raw_len > F.MAX_PREFETCH_RAW:
        raise ValueError(f"prefetch list of {raw_len} bytes exceeds the limit of "
                         f"{F.MAX_PREFETCH_RAW}")
    try:
        params = zstandard.get_frame_parameters(body[8:])
        if params.content_size not in (zstandard.CONTENTSIZE_UNKNOWN, raw_len):
            raise ValueError("prefetch list frame declares another size")
        raw = zstandard.ZstdDecompressor().decompress(body[8:], max_output_size=raw_len)
    except zstandard.ZstdError as e:
        raise ValueError(f"prefetch list frame: {e}") from None
    if len(raw) != raw_len:
        raise ValueError(f"prefetch list decompressed to {len(raw)} bytes, expected {raw_len}")
    values: list[int] = []
    pos = 0
    while pos < len(raw):
        v = shift = 0
        while True:
            if pos >= len(raw) or shift > 63:
                raise ValueError("prefetch list: bad varint")
            b = raw[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        values.append(v)
    if not values or values[0] != len(values) - 1 or values[0] > PREFETCH_FILES:
        raise ValueError("prefetch list: count does not match its entries")
    out: list[int] = []
    prev = 0
    for z in values[1:]:
        prev += (z >> 1) ^ -(z & 1)
        if not 0 <= prev < node_count:
            raise ValueError(f"prefetch list names node {prev} of {node_count}")
        out.append(prev)
    if len(set(out)) != len(out):
        raise ValueError("prefetch list names a node twice")
    return out


def attach(archive: bytes, positions: list[int]) -> bytes:
    """The archive with a PREFETCH section holding positions (format 2.1)."""
    return F.add_section(archive, F.SEC_PREFETCH, encode_section(positions),
                         F.FORMAT_MINOR_PREFETCH)


def attach_paths(archive: bytes, paths: list[bytes], name: str) -> bytes:
    """attach() for a list of paths, resolved in the archive's own tree (read from a memfd:
    the bytes are not written anywhere first)."""
    from clipcy.archive.reader import Archive

    held: list[int] = []  # the memfd, from inside its creation (an interrupt cannot leak it)
    try:
        fd = call_held(held, os.memfd_create, "clipcy-archive", os.MFD_CLOEXEC)
        with open(fd, "wb", closefd=False) as f:
            f.write(archive)
        with Archive(f"/proc/self/fd/{fd}") as arc:
            positions = resolve(arc, paths, name)
    finally:
        close_held(held)
    return attach(archive, positions)


def coverage(arc: Archive, positions: list[int]) -> tuple[int, int]:
    """(files, bytes) a list covers: its regular files and their data bytes."""
    files = total = 0
    for pos in positions:
        rec = arc.record_at(pos)
        if rec[TYPE] == "file":
            files += 1
            sparse = rec[SPARSE]
            total += rec[SIZE] if sparse is None else sum(n for _, n in sparse)
    return files, total


def compressed_range(access: LayerAccess, blob_size: int, offset: int,
                     end: int) -> tuple[int, int]:
    """The compressed bytes decoding [offset, end) of a layer's stream needs (a replay fetches
    them ahead): gzip from the resume point at or before offset to the point after end, plus
    one decoder piece (a decoder continued from an earlier point reads its pieces from
    there); the zstd frames under the range; the range itself for a plain layer. (0, 0): none."""
    from clipcy.layers.access import GZIP, PLAIN, ZSTD
    from clipcy.layers.blobread import GZIP_READ_CHUNK, first_fetch

    if access.kind == PLAIN:
        return first_fetch(access, blob_size, offset, end)
    if access.kind == GZIP:
        lo, hi = first_fetch(access, blob_size, offset, end)
        return lo, min(hi + GZIP_READ_CHUNK, blob_size) if lo < hi else hi
    if access.kind == ZSTD:
        under = [(c, c + n) for c, n, u, un in access.frames if u < end and offset < u + un]
        if under:
            return min(c for c, _ in under), min(max(e for _, e in under), blob_size)
    return 0, 0

