"""`clipctl mount` and clipcy.mount(): an archive as a read-only FUSE filesystem.

    with clipcy.mount("img.clip", "/mnt/img", storage="./img") as m:
        print(os.listdir(m.mountpoint))

The filesystem is served by a separate process (`clipctl mount -f`, see service.py) over
libfuse3's low-level API (_fuse.pyx, built when libfuse3-dev is installed); file bytes are
read lazily from the layer blobs through a decompressed-span cache (spans.py).
"""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from clipcy.fusemount.service import (
    DEFAULT_CACHE_MIB,
    PrefetchOptions,
    is_mounted,
    start,
    unmount,
)

__all__ = ["DEFAULT_CACHE_MIB", "Mount", "mount", "unmount", "available"]


def available() -> bool:
    """True when this clipcy can mount (the libfuse3 binding is built and /dev/fuse exists)."""
    try:
        from clipcy.fusemount import _fuse  # noqa: F401
    except ImportError:
        return False
    return os.path.exists("/dev/fuse")


class Mount:
    """A mounted archive; unmounted by unmount() or on leaving the with block."""

    def __init__(self, proc: subprocess.Popen[bytes], mountpoint: str, log_path: str) -> None:
        self.mountpoint = mountpoint
        self.log_path = log_path  # the serving process's log
        self.pid = proc.pid
        self._proc = proc

    def unmount(self, timeout: float = 30.0) -> None:
        """Unmount and wait for the serving process to exit."""
        if self._proc.poll() is None and is_mounted(self.mountpoint):
            unmount(self.mountpoint)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.terminate()
            self._proc.wait()

    def stats(self) -> dict[str, Any]:
        """The mount's counters, as `clipctl stats --json` prints them (docs/CLI.md)."""
        from clipcy.fusemount.stats import query

        return query(self.mountpoint)

    def __enter__(self) -> Mount:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.unmount()

    def __repr__(self) -> str:
        return f"<clipcy Mount {self.mountpoint!r} pid {self.pid}>"


def mount(archive: str | os.PathLike[str], mountpoint: str | os.PathLike[str], *,
          storage: str | os.PathLike[str] | None = None, cache_mib: int = DEFAULT_CACHE_MIB,
          options: Sequence[str] = (), log_path: str | None = None,
          layout: str | os.PathLike[str] | None = None, xattrs: bool = False,
          mkdir: bool = False, fetch_all: bool = False) -> Mount:
    """Mount archive read-only at mountpoint (returns once the tree is visible).

    storage: where the layer blobs are when not at the archive's storage ref, any storage ref
    (a layout directory, docker://HOST/REPO, http(s)://BASE); layout: the same, deprecated;
    cache_mib: the decoded-span cache; options: FUSE -o options (e.g. "allow_other",
    "nonempty"); log_path: the serving process's log (default: one file per mount in
    service.log_dir()); xattrs: real getxattr answers for an image without xattrs (default:
    ENOSYS, see docs/CLI.md); mkdir: create a missing mountpoint; fetch_all: fetch every
    layer blob into the disk span cache in the background (clipctl mount --fetch-all).
    Raises MountError (a ClipError) with a one-line message when it cannot mount."""
    if layout is not None:
        if storage is not None:
            raise ValueError("give layout or storage, not both")
        warnings.warn("layout= is deprecated: use storage= (it takes any storage ref, a layout "
                      "directory included)", DeprecationWarning, stacklevel=2)
        storage = layout
    where = ["--storage", os.fspath(storage)] if storage is not None else []
    pre = PrefetchOptions(fetch_all=True) if fetch_all else None
    proc, log = start(os.fspath(archive), os.fspath(mountpoint), where, cache_mib, options,
                      log_path, xattrs=xattrs, mkdir=mkdir, prefetch=pre)
    return Mount(proc, os.path.realpath(mountpoint), log)
