"""clipcy: index local OCI image layouts into small index-only .clip archives.

Public API (imports are lazy so that `import clipcy` stays cheap):

- walk_tar(source): the entries of one plain, gzip or zstd tar stream.
- create_index_only_archive_from_oci_layout(layout_dir, tag, archive_path, ...)
- create_index_only_archive_from_registry(ref, archive_path, ...): the image at
  docker://HOST/REPO:TAG, its layer blobs streamed from the registry.
- open_archive(path): an Archive with .metadata, .lookup(), .listdir(), .walk(), .layers;
  path may be an image reference, docker://HOST/REPO:TAG (its archive from the registry).
- mount(archive, mountpoint, ...): the archive as a read-only FUSE filesystem (a context
  manager; needs libfuse3, see docs/API.md).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "walk_tar",
    "create_index_only_archive_from_oci_layout",
    "create_index_only_archive_from_registry",
    "open_archive",
    "mount",
]

_LAZY = {
    "walk_tar": "clipcy.tar.tarparse",
    "create_index_only_archive_from_oci_layout": "clipcy.image.indexer",
    "create_index_only_archive_from_registry": "clipcy.image.indexer",
    "open_archive": "clipcy.publish",  # (local archives: clipcy.archive.reader's)
    "mount": "clipcy.fusemount",
}

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

    from clipcy.fusemount import mount
    from clipcy.image.indexer import (
        create_index_only_archive_from_oci_layout,
        create_index_only_archive_from_registry,
    )
    from clipcy.publish import open_archive
    from clipcy.tar.tarparse import walk_tar


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clipcy' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
