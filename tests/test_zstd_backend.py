"""clipcy._zstd: python-zstandard's C backend loaded without the package's __init__ (no
platform, no typing at start-up), the very objects `import zstandard` gives, and the package
itself whenever the direct load is not sure to be right."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clipcy import _zstd


def _run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHON_ZSTANDARD_IMPORT_POLICY"}
    out = subprocess.run([sys.executable, "-I", "-c", code], check=True, capture_output=True,
                         text=True, env=dict(environ, **env))
    return out.stdout.strip()


def test_the_backend_loads_alone_and_is_the_one_the_package_exports() -> None:
    code = (
        "import sys\n"
        "from clipcy._zstd import zstandard as z\n"
        "print(z.__name__, sorted(m for m in ('zstandard', 'platform', 'typing')\n"
        "                         if m in sys.modules))\n"
        "frame = z.ZstdCompressor(level=3).compress(b'x' * 1000)\n"
        "assert z.ZstdDecompressor().decompress(frame) == b'x' * 1000\n"
        "import zstandard\n"  # later, as version.py or another library would
        "assert all(getattr(zstandard, n) is getattr(z, n) for n in ('ZstdError',\n"
        "           'ZstdCompressor', 'ZstdDecompressor', 'frame_content_size'))\n"
        "assert zstandard.backend == 'cext' and zstandard.decompress(frame) == b'x' * 1000\n"
        "try:\n"
        "    z.ZstdDecompressor().decompress(b'\\x28\\xb5\\x2f\\xfd garbage')\n"
        "except zstandard.ZstdError:\n"
        "    print('caught')\n"
    )
    assert _run(code).splitlines() == ["zstandard.backend_c []", "caught"]


@pytest.mark.parametrize("policy", ["cffi_fallback", "cffi"])
def test_another_import_policy_gets_the_package(policy: str) -> None:
    """PYTHON_ZSTANDARD_IMPORT_POLICY other than default or cext: the package picks its
    backend (cffi may not be installed: then the import fails as `import zstandard` does)."""
    code = ("try:\n"
            "    from clipcy._zstd import zstandard as z\n"
            "except ImportError:\n"
            "    print('ImportError')\n"
            "else:\n"
            "    print(z.__name__, z.backend)\n")
    out = _run(code, PYTHON_ZSTANDARD_IMPORT_POLICY=policy)
    if policy == "cffi_fallback":
        assert out == "zstandard cext"
    else:
        assert out in ("zstandard cffi", "ImportError")


def test_cext_policy_loads_the_backend_directly() -> None:
    code = "from clipcy._zstd import zstandard as z\nprint(z.__name__)\n"
    assert _run(code, PYTHON_ZSTANDARD_IMPORT_POLICY="cext") == "zstandard.backend_c"


def test_a_failed_direct_load_falls_back_to_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import zstandard

    def broken() -> None:
        raise OSError("simulated")

    monkeypatch.setattr(_zstd, "load_backend", broken)
    monkeypatch.delitem(sys.modules, "zstandard")  # (put back when the test ends)
    package = _zstd._load()
    assert package.__name__ == "zstandard" and package.ZstdError is zstandard.ZstdError


def test_an_imported_package_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    import zstandard

    monkeypatch.setattr(_zstd, "load_backend", lambda: pytest.fail("not to be called"))
    assert _zstd._load() is zstandard


def test_a_backend_without_a_needed_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_zstd, "NEEDED", (*_zstd.NEEDED, "no_such_function"))
    with pytest.raises(ImportError, match="lacks no_such_function"):
        _zstd.load_backend()
