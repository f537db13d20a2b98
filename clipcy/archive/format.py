"""On-disk layout of .clip archives: constants and struct formats, one-to-one with docs/FORMAT.md.

Both writers (clipcy.archive._writer, clipcy.archive._writer_py) encode node records and
layer-access payloads themselves and hand the raw pieces to `assemble()`, which compresses them
and lays out the header, the section table, the sections and the trailer. The reader
(clipcy.archive.reader) parses
with the same constants. Change this file, FORMAT.md and the golden archive together.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections import namedtuple
from collections.abc import Iterable, Iterator, Sequence

from clipcy._zstd import zstandard
from clipcy.errors import ArchiveWriteError
from clipcy.limits import MAX_ACCESS_RAW as MAX_ACCESS_RAW
from clipcy.limits import MAX_BLOCK_RAW as MAX_BLOCK_RAW
from clipcy.limits import MAX_METADATA_RAW as MAX_METADATA_RAW
from clipcy.limits import MAX_PREFETCH_RAW as MAX_PREFETCH_RAW
from clipcy.storage.checksums import CHECKSUM_BLAKE3 as CHECKSUM_BLAKE3
from clipcy.storage.checksums import CHECKSUM_BLAKE3_128 as CHECKSUM_BLAKE3_128
from clipcy.storage.checksums import CHECKSUM_DIGEST_SIZES as CHECKSUM_DIGEST_SIZES
from clipcy.storage.checksums import CHECKSUM_NONE as CHECKSUM_NONE
from clipcy.storage.checksums import CHECKSUM_WRITTEN as CHECKSUM_WRITTEN
from clipcy.storage.checksums import SPAN_SIZE as SPAN_SIZE

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from typing import Any, NamedTuple

    from clipcy.layers.packing import PackedAccess

# -- header ------------------------------------------------------------------------------
MAGIC = b"\x89CLIP\r\n\x1a"  # PNG-style: high bit, CR LF and ^Z catch text-mode mangling
FORMAT_MAJOR = 2  # a reader refuses any other major (2.0: span checksums in access data)
FORMAT_MINOR = 0  # a reader accepts any minor of its major (newer minors only add sections)
# 2.1 added the optional PREFETCH section; writers write minor 1 only in an archive that has
# one, so an archive without a list is byte-identical to 2.0
FORMAT_MINOR_PREFETCH = 1
HEADER = struct.Struct("<8sHHIQII")  # magic, major, minor, flags, file_size, nsections, crc
HEADER_SIZE = HEADER.size  # 32
HEADER_CRC_OFFSET = 28  # the crc32 covers header bytes 0..27 plus the whole section table
KNOWN_FLAGS = 0  # no header flags are defined; a set unknown bit means "refuse"

SECTION = struct.Struct("<IIQQ")  # kind, crc32 of the section bytes, offset, length
SECTION_SIZE = SECTION.size  # 24

TRAILER_MAGIC = b"CLIPEND\n"
TRAILER = struct.Struct("<32s8s")  # sha256 of bytes [0, file_size - 40), TRAILER_MAGIC
TRAILER_SIZE = TRAILER.size  # 40

# -- section kinds (written in this order) ------------------------------------------------
SEC_METADATA = 1  # u64 raw length + zstd frame of canonical JSON
SEC_NODE_INDEX = 2  # u64 node count, u32 block count, block entries
SEC_NODE_BLOCKS = 3  # concatenated zstd frames, one per node block
SEC_ACCESS_INDEX = 4  # u32 layer count, layer entries
SEC_ACCESS_DATA = 5  # concatenated zstd frames, one per layer
SEC_PREFETCH = 6  # optional (2.1): u64 raw length + zstd frame of the prefetch list
REQUIRED_SECTIONS = (SEC_METADATA, SEC_NODE_INDEX, SEC_NODE_BLOCKS, SEC_ACCESS_INDEX,
                     SEC_ACCESS_DATA)
SECTION_NAMES = {SEC_METADATA: "metadata", SEC_NODE_INDEX: "node index",
                 SEC_NODE_BLOCKS: "node blocks", SEC_ACCESS_INDEX: "access index",
                 SEC_ACCESS_DATA: "access data", SEC_PREFETCH: "prefetch"}
# Sections whose crc32 the reader checks when opening (small); the two data sections are
# checked item by item when read, and as wholes by verify().
CHECKED_AT_OPEN = (SEC_METADATA, SEC_NODE_INDEX, SEC_ACCESS_INDEX)

U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")
NODE_INDEX_HEAD = struct.Struct("<QI")  # node count, block count
BLOCK_ENTRY = struct.Struct("<QIIIII")  # offset, clen, rawlen, nnodes, crc32(comp), path len
ACCESS_INDEX_HEAD = U32  # layer count
ACCESS_ENTRY = struct.Struct("<QQQI")  # offset, clen, rawlen, crc32 of the compressed bytes

# -- node blocks ----------------------------------------------------------------------------
BLOCK_MAX_NODES = 512  # a block closes after this many records ...
BLOCK_TARGET_BYTES = 128 * 1024  # ... or once its raw records reach this many bytes
# MAX_BLOCK_RAW, MAX_METADATA_RAW, MAX_ACCESS_RAW: hard limits the reader enforces before
# decompressing, imported above from clipcy.limits (docs/LIMITS.md "Archive limits").

# record type codes (low 3 bits of the flags varint)
TYPE_CODES = {"dir": 0, "file": 1, "symlink": 2, "char": 3, "block": 4, "fifo": 5}
TYPE_NAMES = ("dir", "file", "symlink", "char", "block", "fifo")
TYPE_MASK = 0x7
# presence flags: an absent field has its Node default
F_NSEC = 1 << 3  # mtime_nsec != 0
F_NLINK = 1 << 4  # nlink != 1
F_SIZE = 1 << 5  # size != 0
F_DATA = 1 << 6  # layer != -1 or offset != 0: varint layer+1, varint offset
F_SPARSE = 1 << 7  # sparse is not None: count, then (offset, length) pairs
F_DIGEST = 1 << 8  # digest != b""
F_LINK = 1 << 9  # linkname != b""
F_DEV = 1 << 10  # devmajor or devminor != 0
F_XATTR = 1 << 11  # xattrs non-empty: count, then (name, value) pairs sorted by name bytes
KNOWN_RECORD_FLAGS = (1 << 12) - 1

# -- layer access ---------------------------------------------------------------------------
ACCESS_KIND_CODES = {"plain": 0, "gzip": 1, "zstd": 2}
ACCESS_KIND_NAMES = ("plain", "gzip", "zstd")

# -- span checksums (end of each layer access payload, since 2.0) ----------------------------
# CHECKSUM_NONE, CHECKSUM_BLAKE3, CHECKSUM_BLAKE3_128 (the kinds), CHECKSUM_DIGEST_SIZES,
# CHECKSUM_WRITTEN and SPAN_SIZE (the writers' grid): defined beside the reads that check them
# (clipcy.storage.checksums), imported above as part of the format.


def encode_spans(layer: int, spans: Any) -> bytes:
    """The span-checksum tail of an access payload (docs/FORMAT.md "Span checksums");
    spans is a clipcy.storage.spans.SpanTable or None (kind 0, no spans)."""
    if spans is None:
        return uvarint(CHECKSUM_NONE) + uvarint(0)
    where = f"cannot encode access data of layer {layer}"
    size = CHECKSUM_DIGEST_SIZES.get(spans.kind) if isinstance(spans.kind, int) else None
    if not size:
        raise ArchiveWriteError(f"{where}: unknown span checksum kind {spans.kind!r}")
    lengths, digests = spans.lengths, spans.digests
    if not isinstance(digests, bytes) or len(digests) != size * len(lengths):
        raise ArchiveWriteError(f"{where}: {len(lengths)} spans need {size * len(lengths)} "
                                f"digest bytes")
    out = [uvarint(spans.kind), uvarint(len(lengths))]
    for n in lengths:
        if not isinstance(n, int) or not 0 < n < 1 << 64:
            raise ArchiveWriteError(f"{where}: span length {n!r} is not in 1..2**64-1")
        out.append(uvarint(n))
    out.append(digests)
    return b"".join(out)


# -- compression: fixed so that output is reproducible -------------------------------------
ZSTD_LEVEL = 9  # ~5x faster than 12 for ~4% more bytes on node blocks (perf/archive.py)
# Access data is mostly 32 KiB resume windows: level 3 is ~5x faster than 9 for ~10% more
# bytes (0.08 s -> 0.017 s on a 500 MB layer's 450 windows, 708 -> 780 KB).
ZSTD_LEVEL_ACCESS = 3


def _compressor(level: int = ZSTD_LEVEL) -> zstandard.ZstdCompressor:
    # No content size (the raw length is stored beside each frame, and a forged content size
    # cannot make the reader allocate), no checksum (crc32 covers the frame), no dict id.
    return zstandard.ZstdCompressor(level=level, write_content_size=False,
                                    write_checksum=False, write_dict_id=False, threads=0)


def canonical_json(metadata: dict[str, Any]) -> bytes:
    """The metadata as reproducible JSON bytes (sorted keys, compact, UTF-8)."""
    if not isinstance(metadata, dict):
        raise ArchiveWriteError(f"cannot encode metadata: expected a dict, got "
                                f"{type(metadata).__name__}")
    try:
        text = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
        return text.encode("utf-8")
    except (TypeError, ValueError) as e:  # UnicodeEncodeError is a ValueError
        raise ArchiveWriteError(f"cannot encode metadata as JSON: {e}") from e


def _check_raw(what: str, raw: bytes, limit: int) -> None:
    if len(raw) > limit:
        raise ArchiveWriteError(f"cannot encode {what}: {len(raw)} bytes exceed the limit of "
                                f"{limit}")


if TYPE_CHECKING:
    class EncodedAccess(NamedTuple):
        """A layer's access payload as its archive frame: raw length and zstd frame."""

        raw_len: int
        frame: bytes
else:  # the same class (typing.NamedTuple makes one), without importing typing
    EncodedAccess = namedtuple("EncodedAccess", ("raw_len", "frame"))


def compress_access(chunks: Iterable[bytes], layer: int) -> EncodedAccess:
    """The access frame of a payload given in pieces (streamed: the whole payload is never
    held). zstd's streaming output does not depend on how the input is cut, so a payload
    compressed whole or piece by piece gives the same frame."""
    cobj = _compressor(ZSTD_LEVEL_ACCESS).compressobj()
    out = []
    raw_len = 0
    for chunk in chunks:
        raw_len += len(chunk)
        if raw_len > MAX_ACCESS_RAW:
            raise ArchiveWriteError(f"cannot encode access data of layer {layer}: more than "
                                    f"the limit of {MAX_ACCESS_RAW} bytes")
        out.append(cobj.compress(chunk))
    out.append(cobj.flush())
    return EncodedAccess(raw_len, b"".join(out))


def encode_packed_access(access: PackedAccess, layer: int) -> EncodedAccess:
    """The access frame of a layer whose windows are kept compressed (clipcy.layers.packing),
    streamed one window at a time: the same frame as from the raw LayerAccess."""
    return compress_access(_packed_payload(access, layer), layer)


def _packed_payload(access: PackedAccess, layer: int) -> Iterator[bytes]:
    """docs/FORMAT.md "Layer access payload", piece by piece."""
    uv = uvarint
    yield uv(ACCESS_KIND_CODES[access.kind]) + uv(access.span) + uv(len(access.points))
    for c, b, u, w in access.windows():
        yield uv(c) + bytes([b]) + uv(u) + uv(len(w)) + w
    yield uv(len(access.frames)) + b"".join(uv(x) for fr in access.frames for x in fr)
    yield encode_spans(layer, access.spans)


def _exact(frame: bytes) -> bytes:
    """python-zstandard's compress() keeps the whole bound-sized buffer behind the (much
    shorter) bytes it returns: ~64 KiB per node block. Copy to an exact-size object."""
    return memoryview(frame).tobytes()


def uvarint(v: int) -> bytes:
    """Unsigned LEB128 (docs/FORMAT.md "varint")."""
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _compress_blocks(cctx: zstandard.ZstdCompressor,
                     raws: list[bytes | bytearray | memoryview]) -> list[bytes]:
    """One zstd frame per node block. python-zstandard's C backend compresses a batch on
    several threads without the GIL (the 150k-node layer's 300 blocks: 0.08 s -> 0.04 s on
    two cores); each frame is the same bytes compress() makes of it alone."""
    threads = min(2, os.cpu_count() or 1)
    if threads > 1 and len(raws) > 1 and hasattr(cctx, "multi_compress_to_buffer"):
        batch = cctx.multi_compress_to_buffer(raws, threads=threads)
        return [batch[i].tobytes() for i in range(len(batch))]  # exact-size copies
    return [_exact(cctx.compress(raw)) for raw in raws]


def assemble(meta_json: bytes, node_count: int,
             blocks: Sequence[tuple[bytes, int, bytes]],
             access_payloads: Sequence[bytes | EncodedAccess]) -> bytes:
    """Lay out a whole archive.

    blocks: (first path, record count, raw records) per node block, in path order.
    access_payloads: each layer's raw access payload, or that payload already compressed by
    compress_access (index-layout streams it there so raw windows never pile up).
    """
    cctx = _compressor()
    _check_raw("metadata", meta_json, MAX_METADATA_RAW)
    metadata = U64.pack(len(meta_json)) + _exact(cctx.compress(meta_json))

    for first, _, raw in blocks:
        _check_raw(f"node block starting at {first!r}", raw, MAX_BLOCK_RAW)
    frames = _compress_blocks(cctx, [raw for _, _, raw in blocks])
    index = [NODE_INDEX_HEAD.pack(node_count, len(blocks))]
    data: list[bytes] = []
    pos = 0
    for (first, count, raw), frame in zip(blocks, frames, strict=True):
        index.append(BLOCK_ENTRY.pack(pos, len(frame), len(raw), count, zlib.crc32(frame),
                                      len(first)))
        index.append(first)
        data.append(frame)
        pos += len(frame)
    node_index, node_blocks = b"".join(index), b"".join(data)

    index = [ACCESS_INDEX_HEAD.pack(len(access_payloads))]
    data = []
    pos = 0
    for i, item in enumerate(access_payloads):
        enc = item if isinstance(item, EncodedAccess) else compress_access([item], i)
        frame = enc.frame
        index.append(ACCESS_ENTRY.pack(pos, len(frame), enc.raw_len, zlib.crc32(frame)))
        data.append(frame)
        pos += len(frame)
    access_index, access_data = b"".join(index), b"".join(data)

    sections = [(SEC_METADATA, metadata), (SEC_NODE_INDEX, node_index),
                (SEC_NODE_BLOCKS, node_blocks), (SEC_ACCESS_INDEX, access_index),
                (SEC_ACCESS_DATA, access_data)]
    offset = HEADER_SIZE + SECTION_SIZE * len(sections)
    table = []
    for kind, body in sections:
        table.append(SECTION.pack(kind, zlib.crc32(body), offset, len(body)))
        offset += len(body)
    file_size = offset + TRAILER_SIZE
    table_bytes = b"".join(table)
    head = HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, 0, file_size, len(sections), 0)
    crc = zlib.crc32(table_bytes, zlib.crc32(head[:HEADER_CRC_OFFSET]))
    head = head[:HEADER_CRC_OFFSET] + U32.pack(crc)
    import hashlib  # (writers only: a reader's start-up does without OpenSSL)

    body = b"".join([head, table_bytes] + [s for _, s in sections])
    return body + TRAILER.pack(hashlib.sha256(body).digest(), TRAILER_MAGIC)


def add_section(archive: bytes, kind: int, body: bytes, minor: int) -> bytes:
    """An assembled archive with one more section (appended after the others) and the format
    minor raised to at least `minor`: header, table and trailer laid out again, the sections'
    bytes unchanged."""
    magic, major, old_minor, flags, _, nsec, _ = HEADER.unpack_from(archive, 0)
    table_end = HEADER_SIZE + SECTION_SIZE * nsec
    entries = [SECTION.unpack_from(archive, HEADER_SIZE + i * SECTION_SIZE) for i in range(nsec)]
    if any(k == kind for k, _, _, _ in entries):
        raise ArchiveWriteError(f"the archive has a {SECTION_NAMES.get(kind, kind)} section "
                                f"already")
    shift = SECTION_SIZE  # the table grows by one entry
    data_end = len(archive) - TRAILER_SIZE
    table = [SECTION.pack(k, crc, off + shift, length) for k, crc, off, length in entries]
    table.append(SECTION.pack(kind, zlib.crc32(body), data_end + shift, len(body)))
    table_bytes = b"".join(table)
    file_size = data_end + shift + len(body) + TRAILER_SIZE
    head = HEADER.pack(magic, major, max(old_minor, minor), flags, file_size, nsec + 1, 0)
    crc = zlib.crc32(table_bytes, zlib.crc32(head[:HEADER_CRC_OFFSET]))
    head = head[:HEADER_CRC_OFFSET] + U32.pack(crc)
    import hashlib

    out = b"".join([head, table_bytes, archive[table_end:data_end], body])
    return out + TRAILER.pack(hashlib.sha256(out).digest(), TRAILER_MAGIC)
