"""What `clipctl --version` prints: version, core in use, library versions."""

from __future__ import annotations

from clipcy import __version__


def core_implementation() -> str:
    from clipcy import tarparse

    return str(tarparse.IMPLEMENTATION)


def version_text() -> str:
    import zlib

    import zstandard

    core = core_implementation()
    label = "compiled (Cython)" if core == "cython" else "pure Python (CLIPCY_PUREPYTHON)"
    return (
        f"clipctl {__version__}\n"
        f"core: {label}\n"
        f"zlib: {zlib.ZLIB_RUNTIME_VERSION}, zstd: {zstandard.ZSTD_VERSION[0]}."
        f"{zstandard.ZSTD_VERSION[1]}.{zstandard.ZSTD_VERSION[2]} "
        f"(python-zstandard {zstandard.__version__})"
    )
