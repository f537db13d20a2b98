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

It is found as the import system finds it (clipcy._select.extension_spec), loaded under its
own name and kept in sys.modules, as the package's import would keep it: a later `import
zstandard` in the same process re-exports this same module (one ZstdError class). Only the
package's attribute `zstandard.backend_c` is then missing (it is set when the import system
loads a submodule itself); nothing reads it.

Anything else falls back to `import zstandard`: zstandard already imported (its backend is
the one to use), another Python implementation, PYTHON_ZSTANDARD_IMPORT_POLICY asking for a
backend other than the C one, no compiled backend_c, or one that fails to load or lacks a
name in NEEDED.
"""

from __future__ import annotations

import os
import sys

from clipcy._select import extension_spec

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from types import ModuleType

    import zstandard as zstandard  # (re-exported: what the loaded module stands for)

BACKEND = "zstandard.backend_c"
# what clipcy uses from zstandard at run time (grep 'zstandard\.' under clipcy/)
NEEDED = ("ZstdCompressor", "ZstdDecompressor", "ZstdError", "frame_content_size",
          "get_frame_parameters", "CONTENTSIZE_UNKNOWN")


def load_backend() -> ModuleType:
    """zstandard.backend_c, loaded without running zstandard/__init__.py; raises on any
    problem (the caller falls back to the package)."""
    loaded = sys.modules.get(BACKEND)
    if loaded is not None:
        module = loaded
    else:
        spec = extension_spec("zstandard", "backend_c")
        loader = spec.loader  # an ExtensionFileLoader (extension_spec checks)
        created = loader.create_module(spec) if loader is not None else None  # runs its init
        if loader is None or created is None:
            raise ImportError("zstandard.backend_c: no module created")
        # what importlib sets on a module it loads (its _init_module_attrs)
        created.__spec__ = spec
        created.__loader__ = loader
        created.__package__ = "zstandard"
        loader.exec_module(created)  # (nothing more for a single-phase module)
        sys.modules[BACKEND] = module = created
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
