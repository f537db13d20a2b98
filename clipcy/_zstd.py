"""python-zstandard for clipcy: its C backend, loaded without the package's __init__.

    from clipcy._zstd import zstandard   # then zstandard.ZstdDecompressor() etc., as ever

`import zstandard` runs zstandard/__init__.py, which imports platform (to pick a backend)
and, on Python < 3.12, typing (for one annotation): ~3 ms more than the extension alone
(with re, argparse and json loaded), a quarter of `python -c pass`. Everything clipcy uses
from it (NEEDED) is defined by the C extension zstandard.backend_c, which __init__
re-exports unchanged (`from .backend_c import *`) on CPython, where it always picks that
backend. The extension imports nothing when it loads (python-zstandard's c-ext/backend_c.c:
a single-phase module whose init checks the zstd library's version and adds its types,
functions and constants; it imports io only to raise io.UnsupportedOperation), so loading it
directly gives the very objects the package would.

It is found as the import system finds it (sys.meta_path, then zstandard's package
directory), loaded under its own name and kept in sys.modules, as the package's import would
keep it: a later `import zstandard` in the same process re-exports this same module (one
ZstdError class). Only the package's attribute `zstandard.backend_c` is then missing (it is
set when the import system loads a submodule itself); nothing reads it.

Anything else falls back to `import zstandard`: zstandard already imported (its backend is
the one to use), another Python implementation, PYTHON_ZSTANDARD_IMPORT_POLICY asking for a
backend other than the C one, no compiled backend_c, or one that fails to load or lacks a
name in NEEDED.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType

    import zstandard as zstandard  # (re-exported: what the loaded module stands for)

BACKEND = "zstandard.backend_c"
# what clipcy uses from zstandard at run time (grep 'zstandard\.' under clipcy/)
NEEDED = ("ZstdCompressor", "ZstdDecompressor", "ZstdError", "frame_content_size",
          "get_frame_parameters", "CONTENTSIZE_UNKNOWN")


def _find_spec(name: str, path: list[str] | None = None) -> ModuleSpec | None:
    """The spec the import system would use for name (importlib.util.find_spec without
    importing the parent package, and without importing importlib.util)."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        spec: ModuleSpec | None = find(name, path) if find is not None else None
        if spec is not None:
            return spec
    return None


def load_backend() -> ModuleType:
    """zstandard.backend_c, loaded without running zstandard/__init__.py; raises on any
    problem (the caller falls back to the package)."""
    from importlib.machinery import ExtensionFileLoader

    loaded = sys.modules.get(BACKEND)
    if loaded is not None:
        module = loaded
    else:
        package = _find_spec("zstandard")
        if package is None or not package.submodule_search_locations:
            raise ImportError("zstandard is not an installed package")
        spec = _find_spec(BACKEND, list(package.submodule_search_locations))
        if spec is None or not isinstance(spec.loader, ExtensionFileLoader):
            raise ImportError("zstandard has no compiled backend_c")
        module = spec.loader.create_module(spec)  # (a single-phase module: runs its init)
        # what importlib sets on a module it loads (its _init_module_attrs)
        module.__spec__ = spec
        module.__loader__ = spec.loader
        module.__package__ = "zstandard"
        spec.loader.exec_module(module)
        sys.modules[BACKEND] = module
    missing = [name for name in NEEDED if not hasattr(module, name)]
    if missing:
        raise ImportError(f"zstandard.backend_c lacks {', '.join(missing)}")
    return module


def _load() -> ModuleType:
    package = sys.modules.get("zstandard")
    if package is not None:
        return package
    policy = os.environ.get("PYTHON_ZSTANDARD_IMPORT_POLICY", "default").strip()
    if sys.implementation.name == "cpython" and policy in ("default", "cext"):
        try:
            return load_backend()
        except Exception:  # noqa: BLE001  (whatever it is, the package's import is the answer)
            pass
    import zstandard

    return zstandard


if not TYPE_CHECKING:
    zstandard = _load()
