"""Build the compiled core. Everything else is declared in pyproject.toml."""

import hashlib
import os
import shutil
import subprocess
import tempfile

from build_manpages import build_manpages, get_build_py_cmd, get_install_cmd
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build import build as _build

# CLIPCY_DEBUG_BUILD=1 keeps bounds checks and writes the annotated HTML.
debug = bool(os.environ.get("CLIPCY_DEBUG_BUILD"))

ZLIB = {"libraries": ["z"], "define_macros": [("ZLIB_CONST", None)]}



def _fuse3() -> dict[str, list]:
    """Compiler flags of libfuse3 (libfuse3-dev), or {} to build without the mount."""
    if shutil.which("pkg-config") is None:
        return {}
    try:
        out = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], check=True,
                             capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return {}
    inc = [f[2:] for f in out if f.startswith("-I")]
    if not any(os.path.exists(os.path.join(d, "fuse_lowlevel.h")) for d in inc):
        return {}
    return {
        "include_dirs": inc,
        "libraries": [f[2:] for f in out if f.startswith("-l")],
        "define_macros": [("FUSE_USE_VERSION", "312"), ("_FILE_OFFSET_BITS", "64")],
    }


FUSE3 = _fuse3()

EXTENSIONS = [
    Extension("clipcy.tar._tarparse", ["clipcy/tar/_tarparse.pyx"]),
    Extension("clipcy.layers._checkpoint", ["clipcy/layers/_checkpoint.pyx"], **ZLIB),
    Extension("clipcy.layers._inflate", ["clipcy/layers/_inflate.pyx"], **ZLIB),
    Extension("clipcy.archive._writer", ["clipcy/archive/_writer.pyx"]),
    Extension("clipcy.archive._nodeblock", ["clipcy/archive/_nodeblock.pyx"]),
    Extension("clipcy.image._merge", ["clipcy/image/_merge.pyx"]),
]
# `clipctl mount` needs libfuse3: built only where its headers are (Debian libfuse3-dev);
# elsewhere clipcy installs without it and `clipctl mount` names the packages to install.
if FUSE3:
    EXTENSIONS.append(Extension("clipcy.fusemount._fuse", ["clipcy/fusemount/_fuse.pyx"], **FUSE3))
else:
    print("clipcy: libfuse3 headers not found (pkg-config fuse3): building without mount")

class build(_build):
    """Build directories outside the source tree (`pip install .` used to leave build/ in
    it): $TMPDIR/clipcy-build-UID-HASH, one per checkout, unless --build-base is given."""

    def initialize_options(self) -> None:
        super().initialize_options()
        here = os.path.dirname(os.path.abspath(__file__))
        tag = hashlib.sha256(here.encode()).hexdigest()[:12]
        self.build_base = os.path.join(tempfile.gettempdir(),
                                       f"clipcy-build-{os.getuid()}-{tag}")


setup(
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        annotate=debug,
        force=debug,
        compiler_directives={
            "boundscheck": debug,
            "initializedcheck": debug,
            "wraparound": False,
            "embedsignature": True,
        },
    ),
    cmdclass={
        "build": build,
        "build_manpages": build_manpages,
        "build_py": get_build_py_cmd(),
        "install": get_install_cmd(),
    },
)
