"""Build the compiled core. Everything else is declared in pyproject.toml."""

import os

from build_manpages import build_manpages, get_build_py_cmd, get_install_cmd
from Cython.Build import cythonize
from setuptools import Extension, setup

# CLIPCY_DEBUG_BUILD=1 keeps bounds checks and writes the annotated HTML.
debug = bool(os.environ.get("CLIPCY_DEBUG_BUILD"))

ZLIB = {"libraries": ["z"], "define_macros": [("ZLIB_CONST", None)]}

EXTENSIONS = [
    Extension("clipcy._tarparse", ["clipcy/_tarparse.pyx"]),
    Extension("clipcy._checkpoint", ["clipcy/_checkpoint.pyx"], **ZLIB),
    Extension("clipcy._inflate", ["clipcy/_inflate.pyx"], **ZLIB),
    Extension("clipcy._writer", ["clipcy/_writer.pyx"]),
    Extension("clipcy._nodeblock", ["clipcy/_nodeblock.pyx"]),
    Extension("clipcy._merge", ["clipcy/_merge.pyx"]),
]

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
        "build_manpages": build_manpages,
        "build_py": get_build_py_cmd(),
        "install": get_install_cmd(),
    },
)
