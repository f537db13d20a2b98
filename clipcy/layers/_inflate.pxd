# cython: language_level=3
# The inflate engine: zlib's inflate API, served by zlib-ng when its Python wheel is installed
# (much faster), else by the system zlib. Same names and signatures as <zlib.h>, so callers
# cimport these instead of clipcy.layers._zlib's. One engine per process, chosen at import
# (clipcy/layers/_inflate.pyx); a stream must be inflated by the engine that initialised it.

from clipcy.layers._zlib cimport Bytef, uInt, z_stream

cdef int inflateInit2(z_stream *strm, int windowBits) noexcept nogil
cdef int inflate(z_stream *strm, int flush) noexcept nogil
cdef int inflateEnd(z_stream *strm) noexcept nogil
cdef int inflateReset(z_stream *strm) noexcept nogil
cdef int inflateReset2(z_stream *strm, int windowBits) noexcept nogil
cdef int inflatePrime(z_stream *strm, int bits, int value) noexcept nogil
cdef int inflateSetDictionary(z_stream *strm, const Bytef *dictionary,
                              uInt dictLength) noexcept nogil
cdef int inflateGetDictionary(z_stream *strm, Bytef *dictionary, uInt *dictLength) noexcept nogil
