"""What `clipctl --version` prints: version, core in use, mount, library versions."""

from __future__ import annotations

import os
import shutil

from clipcy import __version__

INSTALL_LIBFUSE_DEV = ("apt-get install fuse3 libfuse3-dev, then pip install --force-reinstall "
                       "--no-deps --no-binary clipcy clipcy; or install a clipcy wheel, "
                       "which carries libfuse3")


def core_implementation() -> str:
    from clipcy.tar import tarparse

    return str(tarparse.IMPLEMENTATION)


def inflate_engine() -> str:
    """The library that inflates gzip layers: zlib-ng (from the zlib-ng wheel) or zlib."""
    from clipcy.layers import _inflate

    if _inflate.NAME != "zlib-ng":
        return _inflate.engine()
    from importlib.metadata import PackageNotFoundError, version

    try:
        wheel = f" (python-zlib-ng {version('zlib-ng')})"
    except PackageNotFoundError:
        wheel = ""
    return _inflate.engine() + wheel


def _loaded_libfuse() -> str | None:
    """The file of the libfuse3 this process has loaded (from /proc/self/maps), if known."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.split(maxsplit=5)[-1].strip()
                if "libfuse3" in os.path.basename(path):
                    return path
    except OSError:
        pass
    return None


def mount_status() -> str:
    """Whether `clipctl mount` works here, and if not, what to install."""
    import importlib.util

    if importlib.util.find_spec("clipcy.fusemount._fuse") is None:
        return ("not built (libfuse3's headers were missing when clipcy was built): "
                + INSTALL_LIBFUSE_DEV)
    try:
        from clipcy.fusemount import _fuse
    except ImportError as e:  # built, but libfuse3.so.3 is gone
        return f"built, but libfuse3 does not load ({e}): apt-get install fuse3"
    v = _fuse.LIBFUSE_VERSION
    lib = _loaded_libfuse()
    if lib is None:
        origin = ""
    elif "/clipcy.libs/" in lib:  # auditwheel's directory of grafted libraries
        origin = ", carried by the wheel"
    else:
        origin = f", {lib}"
    text = f"available (libfuse3 {v // 100}.{v % 100}{origin})"
    missing = []
    if not os.path.exists("/dev/fuse"):
        missing.append("no /dev/fuse: modprobe fuse, or run the container with --device /dev/fuse")
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        missing.append("no fusermount3, which mounts for non-root users: apt-get install fuse3")
    return text if not missing else text + "; but " + "; ".join(missing)


def version_text() -> str:
    import zlib

    import zstandard

    core = core_implementation()
    label = "compiled (Cython)" if core == "cython" else "pure Python (CLIPCY_PUREPYTHON)"
    return (
        f"clipctl {__version__}\n"
        f"core: {label}\n"
        f"mount: {mount_status()}\n"
        f"inflate: {inflate_engine()}\n"
        f"zlib: {zlib.ZLIB_RUNTIME_VERSION}, zstd: {zstandard.ZSTD_VERSION[0]}."
        f"{zstandard.ZSTD_VERSION[1]}.{zstandard.ZSTD_VERSION[2]} "
        f"(python-zstandard {zstandard.__version__})"
    )
