"""Archive writer selector: the compiled clipcy.archive._writer, or its pure-Python twin.

encode_archive(metadata, nodes, access) -> bytes: the whole .clip archive (docs/FORMAT.md).
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

__all__ = ["IMPLEMENTATION", "encode_archive"]
