"""Archive writer selector: the compiled clipcy.archive._writer, or its pure-Python twin.

encode_archive(metadata, nodes, access) -> bytes: the whole .clip archive (docs/FORMAT.md);
assemble_archive(metadata, blocks, access) the same from blocks already encoded.
Both implementations produce byte-identical output and raise the same errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipcy._select import PUREPYTHON, compiled, implementation

if TYPE_CHECKING or PUREPYTHON:
    from clipcy.archive import _writer_py as _impl
else:
    _impl = compiled("clipcy.archive._writer", "clipcy.archive._writer_py")

IMPLEMENTATION: str = implementation(_impl)
encode_archive = _impl.encode_archive
assemble_archive = _impl.assemble_archive

__all__ = ["IMPLEMENTATION", "assemble_archive", "encode_archive"]
