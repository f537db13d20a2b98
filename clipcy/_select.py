"""Chooses the compiled core or its pure-Python twin; the only reader of CLIPCY_PUREPYTHON.

Each selector module (tarparse.py, writer.py) does:

    if TYPE_CHECKING or PUREPYTHON: from clipcy import _x_py as _impl
    else: _impl = compiled("clipcy._x", "clipcy._x_py")

Also finds a dependency's compiled extension module without importing it or its package
(extension_spec): clipcy._zstd loads zstandard's backend alone, clipcy.layers._inflate
dlopens zlib-ng's.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

PUREPYTHON: bool = os.environ.get("CLIPCY_PUREPYTHON", "") not in ("", "0")


def compiled(name: str, twin: str) -> ModuleType:
    """Import the compiled module `name`, or the twin when it was not built."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return importlib.import_module(twin)


def find_spec(name: str, path: list[str] | None = None) -> ModuleSpec | None:
    """The spec the import system would use for name (sys.meta_path's finders in turn; path:
    the parent package's directories), found without importing anything: importlib.util's
    find_spec imports the parent package of a submodule, and importlib.util itself."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        spec: ModuleSpec | None = find(name, path) if find is not None else None
        if spec is not None:
            return spec
    return None


def extension_spec(package: str, name: str) -> ModuleSpec:
    """The spec of the compiled extension module package.name, found as an import would find
    it, without running the package's __init__; ImportError when there is none."""
    from importlib.machinery import ExtensionFileLoader

    parent = find_spec(package)
    if parent is None or not parent.submodule_search_locations:
        raise ImportError(f"{package} is not an installed package")
    spec = find_spec(f"{package}.{name}", list(parent.submodule_search_locations))
    if spec is None or not isinstance(spec.loader, ExtensionFileLoader) or not spec.origin:
        raise ImportError(f"{package} has no compiled {name}")
    return spec


def implementation(module: ModuleType) -> str:
    """'cython' for a compiled extension module, 'python' for a twin."""
    return "python" if (module.__file__ or "").endswith(".py") else "cython"
