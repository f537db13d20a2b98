# cython: language_level=3
# Extern declarations of <zlib.h> (only what clipcy uses). Build with -DZLIB_CONST (setup.py
# does) so that next_in is const in zlib.h too, matching the declaration below: the decoders
# feed it from read-only bytes objects.

cdef extern from "<zlib.h>" nogil:
    ctypedef unsigned char Bytef
    ctypedef unsigned int uInt
    ctypedef unsigned long uLong
    ctypedef struct z_stream:
        const Bytef *next_in   # const only with -DZLIB_CONST
        uInt avail_in          # 32-bit: feed buffers > 4 GiB in chunks
        uLong total_in         # 32-bit on Windows, reset per member: keep own 64-bit counters
        Bytef *next_out
        uInt avail_out
        uLong total_out
        const char *msg
        int data_type          # after inflate(): unused bits (& 7), +64 last block, +128 boundary
    int Z_OK, Z_STREAM_END, Z_NEED_DICT, Z_ERRNO, Z_STREAM_ERROR, Z_DATA_ERROR, Z_MEM_ERROR
    int Z_BUF_ERROR, Z_VERSION_ERROR
    int Z_NO_FLUSH, Z_BLOCK, MAX_WBITS
    const char *zlibVersion()
    int inflateInit2(z_stream *strm, int windowBits)   # a macro in zlib.h; Cython calls it fine
    int inflate(z_stream *strm, int flush)
    int inflateEnd(z_stream *strm)
    int inflateReset(z_stream *strm)
    int inflateReset2(z_stream *strm, int windowBits)
    int inflatePrime(z_stream *strm, int bits, int value)
    int inflateSetDictionary(z_stream *strm, const Bytef *dictionary, uInt dictLength)
    int inflateGetDictionary(z_stream *strm, Bytef *dictionary, uInt *dictLength)
