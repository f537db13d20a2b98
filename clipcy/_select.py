"""Chooses the compiled core or its pure-Python twin; the only reader of CLIPCY_PUREPYTHON.

Each selector module (tarparse.py, writer.py) does:

    if TYPE_CHECKING or PUREPYTHON: from clipcy import _x_py as _impl
    else: _impl = compiled("clipcy._x", "clipcy._x_py")
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PUREPYTHON: bool = os.environ.get("CLIPCY_PUREPYTHON", "") not in ("", "0")


def compiled(name: str, twin: str) -> ModuleType:
    """Import the compiled module `name`, or the twin when it was not built."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return importlib.import_module(twin)


def implementation(module: ModuleType) -> str:
    """'cython' for a compiled extension module, 'python' for a twin."""
    return "python" if (module.__file__ or "").endswith(".py") else "cython"
