# cython: language_level=3
"""The inflate engine behind clipcy.layers._checkpoint: zlib's API from zlib-ng or from zlib.

zlib-ng (https://github.com/zlib-ng/zlib-ng) keeps zlib's inflate API, including what resume
points need (`Z_BLOCK` stops with the bit position in `data_type`, `inflatePrime`,
`inflateGetDictionary`, `inflateSetDictionary`), and inflates 2-3x faster on x86-64 and
arm64. Debian 12 does not package it, but the `zlib-ng` wheel on PyPI (a dependency of
clipcy) links it statically and exports its native `zng_*` functions, so this module finds
them with dlopen/dlsym in that extension module: `pip install .` brings the fast path with
no other step. The module is found, not imported (clipcy._select.extension_spec): dlopen
needs only its file, and importing it runs zlib_ng's __init__ and its init, which imports
gzip (0.3 to 1.6 ms of a reader's start-up, perf/RESULTS.md); a later import of it by Python
shares the loaded library. Without the wheel (or on a platform where zng_stream and z_stream
differ: `unsigned long` narrower than `size_t`, as on Windows) the system zlib serves.

Resume points do not depend on the engine: a deflate block boundary is a property of the
compressed stream, Z_BLOCK reports each one in both libraries, and the window is the
output before it. Archives are byte-identical either way (tests/test_inflate_engine.py).

CLIPCY_INFLATE=zlib forces zlib (for comparisons); unset or "auto" takes zlib-ng when it is
there; CLIPCY_INFLATE=zlib-ng does too, and logs a warning saying why when it is not.
"""

from libc.string cimport strncmp
from posix.dlfcn cimport RTLD_LOCAL, RTLD_NOW, dlopen, dlsym

from clipcy.layers._zlib cimport Bytef, uInt, z_stream, zlibVersion
from clipcy.layers._zlib cimport inflate as z_inflate
from clipcy.layers._zlib cimport inflateEnd as z_inflateEnd
from clipcy.layers._zlib cimport inflateGetDictionary as z_inflateGetDictionary
from clipcy.layers._zlib cimport inflateInit2 as z_inflateInit2
from clipcy.layers._zlib cimport inflatePrime as z_inflatePrime
from clipcy.layers._zlib cimport inflateReset as z_inflateReset
from clipcy.layers._zlib cimport inflateReset2 as z_inflateReset2
from clipcy.layers._zlib cimport inflateSetDictionary as z_inflateSetDictionary

import os

ctypedef int (*init2_f)(z_stream *, int) noexcept nogil
ctypedef int (*flush_f)(z_stream *, int) noexcept nogil
ctypedef int (*end_f)(z_stream *) noexcept nogil
ctypedef int (*prime_f)(z_stream *, int, int) noexcept nogil
ctypedef int (*setdict_f)(z_stream *, const Bytef *, uInt) noexcept nogil
ctypedef int (*getdict_f)(z_stream *, Bytef *, uInt *) noexcept nogil
ctypedef const char *(*version_f)() noexcept nogil

cdef struct Engine:
    init2_f init2
    flush_f inflate
    end_f end
    end_f reset
    init2_f reset2
    prime_f prime
    setdict_f setdict
    getdict_f getdict

cdef Engine E


cdef int _zlib_init2(z_stream *strm, int windowBits) noexcept nogil:
    return z_inflateInit2(strm, windowBits)  # a macro in zlib.h: wrapped to take its address


cdef int inflateInit2(z_stream *strm, int windowBits) noexcept nogil:
    return E.init2(strm, windowBits)


cdef int inflate(z_stream *strm, int flush) noexcept nogil:
    return E.inflate(strm, flush)


cdef int inflateEnd(z_stream *strm) noexcept nogil:
    return E.end(strm)


cdef int inflateReset(z_stream *strm) noexcept nogil:
    return E.reset(strm)


cdef int inflateReset2(z_stream *strm, int windowBits) noexcept nogil:
    return E.reset2(strm, windowBits)


cdef int inflatePrime(z_stream *strm, int bits, int value) noexcept nogil:
    return E.prime(strm, bits, value)


cdef int inflateSetDictionary(z_stream *strm, const Bytef *dictionary,
                              uInt dictLength) noexcept nogil:
    return E.setdict(strm, dictionary, dictLength)


cdef int inflateGetDictionary(z_stream *strm, Bytef *dictionary, uInt *dictLength) noexcept nogil:
    return E.getdict(strm, dictionary, dictLength)


cdef void _use_zlib() noexcept:
    E.init2 = _zlib_init2
    E.inflate = z_inflate
    E.end = z_inflateEnd
    E.reset = z_inflateReset
    E.reset2 = z_inflateReset2
    E.prime = z_inflatePrime
    E.setdict = z_inflateSetDictionary
    E.getdict = z_inflateGetDictionary


cdef void *_sym(void *lib, const char *name) except NULL:
    cdef void *p = dlsym(lib, name)
    if p == NULL:
        raise ImportError(f"zlib-ng: no symbol {name.decode()}")
    return p


cdef str _use_zlib_ng():
    """Point the engine at zlib-ng's zng_* functions; returns its version."""
    if sizeof(unsigned long) != sizeof(size_t):  # zng_stream's size_t fields vs z_stream's uLong
        raise ImportError("zlib-ng: zng_stream and z_stream differ on this platform")
    from clipcy._select import extension_spec

    origin = extension_spec("zlib_ng", "zlib_ng").origin  # the wheel's module, zlib-ng in it
    path = os.fsencode(origin)
    cdef void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL)  # as Python would load it
    if lib == NULL:
        raise ImportError(f"zlib-ng: cannot dlopen {origin}")
    cdef const char *ver = (<version_f>_sym(lib, b"zlibng_version"))()
    if strncmp(ver, b"2.", 2) != 0:  # the native API as of zlib-ng 2.x
        raise ImportError(f"zlib-ng: version {ver.decode()} not supported")
    cdef Engine ng
    ng.init2 = <init2_f>_sym(lib, b"zng_inflateInit2")
    ng.inflate = <flush_f>_sym(lib, b"zng_inflate")
    ng.end = <end_f>_sym(lib, b"zng_inflateEnd")
    ng.reset = <end_f>_sym(lib, b"zng_inflateReset")
    ng.reset2 = <init2_f>_sym(lib, b"zng_inflateReset2")
    ng.prime = <prime_f>_sym(lib, b"zng_inflatePrime")
    ng.setdict = <setdict_f>_sym(lib, b"zng_inflateSetDictionary")
    ng.getdict = <getdict_f>_sym(lib, b"zng_inflateGetDictionary")
    E.init2, E.inflate, E.end, E.reset = ng.init2, ng.inflate, ng.end, ng.reset
    E.reset2, E.prime, E.setdict, E.getdict = ng.reset2, ng.prime, ng.setdict, ng.getdict
    return ver.decode("ascii")


def _choose():
    choice = os.environ.get("CLIPCY_INFLATE", "auto")
    _use_zlib()
    if choice not in ("auto", "zlib", "zlib-ng", ""):
        import logging  # only to warn: importing it costs a reader's start-up ~3 ms

        logging.getLogger("clipcy").warning(
            "CLIPCY_INFLATE=%s is not auto, zlib or zlib-ng; using auto", choice)
    if choice == "zlib":
        return "zlib", zlibVersion().decode("ascii")
    try:
        return "zlib-ng", _use_zlib_ng()
    except ImportError as e:
        if choice == "zlib-ng":  # asked for: say why it is not there (never a traceback)
            import logging

            logging.getLogger("clipcy").warning("CLIPCY_INFLATE=zlib-ng: %s; using zlib", e)
        _use_zlib()
        return "zlib", zlibVersion().decode("ascii")


NAME, VERSION = _choose()


def engine() -> str:
    """The inflate engine in use, e.g. "zlib-ng 2.3.3" or "zlib 1.2.13"."""
    return f"{NAME} {VERSION}"
