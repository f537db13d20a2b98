"""What `clipctl --version` prints: version, core in use, library versions."""

from __future__ import annotations

from clipcy import __version__


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


def version_text() -> str:
    import zlib

    import zstandard

    core = core_implementation()
    label = "compiled (Cython)" if core == "cython" else "pure Python (CLIPCY_PUREPYTHON)"
    return (
        f"clipctl {__version__}\n"
        f"core: {label}\n"
        f"inflate: {inflate_engine()}\n"
        f"zlib: {zlib.ZLIB_RUNTIME_VERSION}, zstd: {zstandard.ZSTD_VERSION[0]}."
        f"{zstandard.ZSTD_VERSION[1]}.{zstandard.ZSTD_VERSION[2]} "
        f"(python-zstandard {zstandard.__version__})"
    )
