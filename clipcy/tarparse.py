"""Tar parsing: picks the compiled parser or its pure-Python twin, and streams layer blobs.

    for entry in walk_tar("layer.tar.gz"):
        print(entry.name, entry.type, entry.size, entry.offset)

walk_tar detects gzip / zstd / plain from the magic bytes, decompresses in bounded chunks
(clipcy.streams), feeds the parser and yields entries as their headers are parsed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from clipcy._select import PUREPYTHON, compiled, implementation
from clipcy.streams import detect, open_stream

if TYPE_CHECKING or PUREPYTHON:
    from clipcy import _tarparse_py as _impl
else:
    _impl = compiled("clipcy._tarparse", "clipcy._tarparse_py")

IMPLEMENTATION: str = implementation(_impl)
TarEntry = _impl.TarEntry
TarParser = _impl.TarParser

# Compressed bytes read per step. The decompressors bound each output piece (MAX_PIECE).
READ_SIZE = 1 << 20


def walk_tar(source: str | os.PathLike[str] | IO[bytes], *,
             max_header: int = 1 << 20) -> Iterator[TarEntry]:
    """Yield the entries of a plain, gzip or zstd tar stream (a path or a binary file)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            yield from _walk(f, max_header)
    else:
        yield from _walk(source, max_header)


def _walk(f: IO[bytes], max_header: int) -> Iterator[TarEntry]:
    head = f.read(READ_SIZE)
    while len(head) < 4:  # a short read must not hide the magic
        more = f.read(READ_SIZE)
        if not more:
            break
        head += more
    stream = open_stream(detect(head))
    parser = TarParser(max_header)
    chunk = head
    while chunk:
        for piece in stream.feed(chunk):
            yield from parser.feed(piece)
        chunk = f.read(READ_SIZE)
    stream.finish()
    parser.close()


__all__ = ["IMPLEMENTATION", "TarEntry", "TarParser", "walk_tar", "READ_SIZE"]
