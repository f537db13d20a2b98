# cython: language_level=3
# distutils: libraries = z
# distutils: define_macros = ZLIB_CONST
"""gzip resume points (indexing) and random-access reads from them, on zlib's C API.

No pure-Python twin: Python's zlib cannot prime a raw inflate with leftover bits, so this
module is compiled even under CLIPCY_PUREPYTHON=1. The model is zlib's examples/zran.c:

* indexing inflates each gzip member with `inflateInit2(16+MAX_WBITS)`; at deflate block
  boundaries (`data_type & 128 and not data_type & 64`) that lie at least `span`
  uncompressed bytes after the previous point it records (compressed offset, unused bits,
  uncompressed offset, last <= 32 KiB of output). The window comes from
  `inflateGetDictionary` (zlib keeps it anyway), so output goes straight into the bytes
  objects handed to the caller: no rolling copy of our own. Between points inflate runs
  with Z_NO_FLUSH and an output limit that stops exactly at the span; only then Z_BLOCK.
* sparse windows (default): the input after a point is kept until 32 KiB of output
  followed it, replayed twice with marker dictionaries, and window bytes that nothing
  copies are zeroed. Resuming is unchanged (a dictionary's unused bytes never matter) and
  the windows compress ~4x better in the archive.
* each member start is a point too: bits 0, window b"" (the reader parses a gzip header).
* reading resumes with a raw inflate (`inflateInit2(-15)`, `inflatePrime`,
  `inflateSetDictionary`), or a gzip inflate at a member start, and crosses members.

All inflate work and preads run with the GIL released.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport errno
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset, strerror
from posix.types cimport off_t
from posix.unistd cimport pread

from clipcy.layers._zlib cimport (
    MAX_WBITS,
    Z_BLOCK,
    Z_BUF_ERROR,
    Z_DATA_ERROR,
    Z_ERRNO,
    Z_MEM_ERROR,
    Z_NEED_DICT,
    Z_NO_FLUSH,
    Z_OK,
    Z_STREAM_END,
    Z_STREAM_ERROR,
    Z_VERSION_ERROR,
    Bytef,
    uInt,
    z_stream,
    zlibVersion,
)
# zlib's inflate API, served by zlib-ng when installed (clipcy/layers/_inflate.pyx)
from clipcy.layers._inflate cimport (
    inflate,
    inflateEnd,
    inflateGetDictionary,
    inflateInit2,
    inflatePrime,
    inflateReset,
    inflateReset2,
    inflateSetDictionary,
)

from clipcy.errors import BlobError, CompressionError

cdef enum:
    WINSIZE = 32768           # deflate's window: what a resume point must carry
    OUT_CHUNK = 1 << 20       # indexer output pieces (bounded memory on deflate bombs)
    IN_MAX = 1 << 30          # avail_in is 32-bit: feed huge buffers in slices
    READ_CHUNK = 1 << 17      # reader: compressed bytes per pread
    DISCARD = 1 << 18         # reader: scratch output while skipping to the offset
    CAPTURE_MAX = 1 << 18     # indexer: compressed bytes kept to sparsify a window

# indexer events (returned by the nogil step)
cdef enum:
    EV_NEED_INPUT = 0
    EV_OUT_FULL = 1
    EV_POINT = 2
    EV_MEMBER = 3
    EV_ERROR = 4
    EV_SPARSE = 5

cdef enum:
    ERR_GARBAGE = -1000       # not a zlib code: bytes after a member that start no member

# indexer states
cdef enum:
    ST_HEAD = 0               # before a member: nothing of it consumed yet
    ST_MEMBER = 1             # inside a member
    ST_FAILED = 2


def zlib_version() -> str:
    return zlibVersion().decode("ascii")


cdef str _zname(int ret):
    if ret == Z_OK:
        return "Z_OK"
    if ret == Z_STREAM_END:
        return "Z_STREAM_END"
    if ret == Z_NEED_DICT:
        return "Z_NEED_DICT"
    if ret == Z_ERRNO:
        return "Z_ERRNO"
    if ret == Z_STREAM_ERROR:
        return "Z_STREAM_ERROR"
    if ret == Z_DATA_ERROR:
        return "Z_DATA_ERROR"
    if ret == Z_MEM_ERROR:
        return "Z_MEM_ERROR"
    if ret == Z_BUF_ERROR:
        return "Z_BUF_ERROR"
    if ret == Z_VERSION_ERROR:
        return "Z_VERSION_ERROR"
    return f"zlib error {ret}"


cdef object _zerror(str func, int ret, z_stream *strm, unsigned long long offset):
    """The one mapping of zlib return codes: a CompressionError naming the offset."""
    cdef str reason = ""
    if strm != NULL and strm.msg != NULL:
        reason = f" ({strm.msg.decode('utf-8', 'replace')})"
    return CompressionError(
        f"{func} failed with {_zname(ret)}{reason} at compressed offset {offset}")


cdef class GzipIndexer:
    """Streams a gzip blob (one or more members) and records resume points.

    ``for out in ix.feed(chunk)`` yields the decompressed output in pieces of at most 1 MiB;
    each generator must be exhausted before the next feed(). finish() raises
    CompressionError when the stream is truncated. ``min_points_layer``: a layer whose
    uncompressed size stays below it keeps only the point at offset 0.
    """

    cdef z_stream strm
    cdef bint zinit
    cdef int state
    cdef int err
    cdef bint stalled           # last inflate filled the output: more may come without input
    cdef bint busy
    cdef bint finished
    cdef readonly long long span
    cdef readonly long long min_points_layer
    cdef readonly long long members
    cdef readonly bint sparse_windows
    cdef unsigned long long _in, _out
    cdef unsigned long long member_in, member_out, last_out
    cdef list _points
    cdef unsigned char last_byte  # the last compressed byte consumed (a point's bits live there)
    # sparse windows: the compressed input after the newest point is captured until 32 KiB of
    # output followed it; replaying that input with marker dictionaries tells which window
    # bytes it references, and the others are zeroed (zeros compress to nothing).
    cdef bint pending
    cdef Py_ssize_t pend_index
    cdef unsigned long long pend_out
    cdef int pend_bits
    cdef unsigned char pend_prime
    cdef uInt pend_wlen
    cdef unsigned char *pend_win
    cdef unsigned char *cap_buf
    cdef size_t cap_len
    cdef unsigned char *side_out
    cdef unsigned char *dicts
    cdef z_stream side
    cdef bint side_init

    def __cinit__(self, long long span, long long min_points_layer=0, bint sparse_windows=True):
        cdef int ret, k
        if span <= 0:
            raise ValueError(f"span must be positive, not {span}")
        self.span = span
        self.min_points_layer = min_points_layer
        self.sparse_windows = sparse_windows
        self._points = [(0, 0, 0, b"")]
        memset(&self.strm, 0, sizeof(z_stream))
        memset(&self.side, 0, sizeof(z_stream))
        ret = inflateInit2(&self.strm, 16 + MAX_WBITS)
        if ret != Z_OK:
            raise _zerror("inflateInit2", ret, &self.strm, 0)
        self.zinit = True
        if sparse_windows:
            ret = inflateInit2(&self.side, -MAX_WBITS)
            if ret != Z_OK:
                raise _zerror("inflateInit2", ret, &self.side, 0)
            self.side_init = True
            self.pend_win = <unsigned char *>malloc(WINSIZE)
            self.cap_buf = <unsigned char *>malloc(CAPTURE_MAX)
            self.side_out = <unsigned char *>malloc(2 * WINSIZE)
            self.dicts = <unsigned char *>malloc(2 * WINSIZE)
            if (self.pend_win == NULL or self.cap_buf == NULL or self.side_out == NULL
                    or self.dicts == NULL):
                raise MemoryError()
            for k in range(WINSIZE):
                # marker dictionaries: window position k = h << 7 | l shows up as byte
                # h (pass 2) and (h + 1 + l) & 255 (pass 1), never equal: a literal is the
                # same in both passes, a copied byte is not and says where it came from
                self.dicts[WINSIZE + k] = k >> 7
                self.dicts[k] = ((k >> 7) + 1 + (k & 127)) & 255

    def __dealloc__(self):
        if self.zinit:
            inflateEnd(&self.strm)
        if self.side_init:
            inflateEnd(&self.side)
        free(self.pend_win)
        free(self.cap_buf)
        free(self.side_out)
        free(self.dicts)

    @property
    def total_in(self) -> int:
        return self._in

    @property
    def total_out(self) -> int:
        return self._out

    @property
    def points(self) -> list:
        return list(self._points)

    cdef int _step(self, const unsigned char *src, size_t srclen, size_t *srcpos,
                   unsigned char *out, size_t cap, size_t *have) noexcept nogil:
        """Inflate until an event needs Python: output full, input used up, a point."""
        cdef z_stream *s = &self.strm
        cdef size_t n
        cdef uInt ain, lim, used
        cdef unsigned long long dist
        cdef int ret, flush
        while True:
            if s.avail_in == 0 and srcpos[0] < srclen:
                n = srclen - srcpos[0]
                if n > IN_MAX:
                    n = IN_MAX
                s.next_in = src + srcpos[0]
                s.avail_in = <uInt>n
                srcpos[0] += n
            if self.state == ST_HEAD:
                if s.avail_in == 0:
                    return EV_NEED_INPUT
                if self.members > 0:
                    if s.next_in[0] != 0x1f:  # zlib would wait for a 2nd byte to say so
                        self.err = ERR_GARBAGE
                        self.member_in = self._in
                        self.member_out = self._out
                        return EV_ERROR
                    ret = inflateReset(s)
                    if ret != Z_OK:
                        self.err = ret
                        return EV_ERROR
                self.state = ST_MEMBER
                self.members += 1
                self.member_in = self._in
                self.member_out = self._out
                if self.members > 1 and self._out - self.last_out >= <unsigned long long>self.span:
                    return EV_MEMBER
            if have[0] == cap:
                return EV_OUT_FULL
            if s.avail_in == 0 and not self.stalled:
                return EV_NEED_INPUT
            dist = self._out - self.last_out
            lim = <uInt>(cap - have[0])
            if dist >= <unsigned long long>self.span:
                flush = Z_BLOCK
            else:
                flush = Z_NO_FLUSH
                if self.span - dist < lim:
                    lim = <uInt>(self.span - dist)
            if self.pending and self.pend_out + WINSIZE - self._out < lim:
                lim = <uInt>(self.pend_out + WINSIZE - self._out)  # capture no more than needed
            s.next_out = out + have[0]
            s.avail_out = lim
            ain = s.avail_in
            ret = inflate(s, flush)
            used = ain - s.avail_in
            self._in += used
            self._out += lim - s.avail_out
            have[0] += lim - s.avail_out
            self.stalled = s.avail_out == 0
            if used:
                self.last_byte = (s.next_in - 1)[0]
                if self.pending:
                    if self.cap_len + used > CAPTURE_MAX:
                        self.pending = False  # odd stream (long runs of empty blocks): keep all
                    else:
                        memcpy(self.cap_buf + self.cap_len, s.next_in - used, used)
                        self.cap_len += used
            if ret == Z_STREAM_END:
                self.state = ST_HEAD
                self.stalled = False
            elif ret != Z_OK and ret != Z_BUF_ERROR:
                self.err = ret
                return EV_ERROR
            if self.pending and (ret == Z_STREAM_END or self._out >= self.pend_out + WINSIZE):
                self.pending = False
                if self._sparsify() == 0:
                    return EV_SPARSE
            if ret == Z_STREAM_END:
                continue
            if (flush == Z_BLOCK and (s.data_type & 128) and not (s.data_type & 64)
                    and self._out > self.member_out):
                return EV_POINT

    cdef int _sparsify(self) noexcept nogil:
        """Zero the bytes of the pending window that the next 32 KiB of output never copy.

        Replays the captured input twice with marker dictionaries (see __cinit__); a copy
        can reach at most 32 KiB back, so nothing after that uses the window.
        """
        cdef z_stream *z = &self.side
        cdef int p, ret
        cdef uInt produced[2]
        cdef unsigned char *a = self.side_out
        cdef unsigned char *h = self.side_out + WINSIZE
        cdef unsigned char *used = self.cap_buf  # the capture is no longer needed after pass 2
        cdef uInt j, k, low, w = self.pend_wlen
        for p in range(2):
            ret = inflateReset2(z, -MAX_WBITS)
            if ret == Z_OK and self.pend_bits:
                ret = inflatePrime(z, self.pend_bits, self.pend_prime >> (8 - self.pend_bits))
            if ret == Z_OK:  # the last w bytes of the marker table line up with positions
                ret = inflateSetDictionary(z, self.dicts + p * WINSIZE + WINSIZE - w, w)
            if ret != Z_OK:
                return -1
            z.next_in = self.cap_buf
            z.avail_in = <uInt>self.cap_len
            z.next_out = self.side_out + p * WINSIZE
            z.avail_out = WINSIZE
            ret = Z_OK
            while ret == Z_OK and z.avail_in > 0 and z.avail_out > 0:
                ret = inflate(z, Z_NO_FLUSH)
            if ret != Z_OK and ret != Z_STREAM_END and ret != Z_BUF_ERROR:
                return -1
            produced[p] = WINSIZE - z.avail_out
        if produced[0] != produced[1]:
            return -1
        memset(used, 0, w)
        for j in range(produced[0]):
            if a[j] != h[j]:  # copied from the window
                low = (a[j] - h[j] - 1) & 255
                if low > 127:
                    return -1  # cannot happen: keep the whole window
                k = (<uInt>h[j] << 7 | low) - (WINSIZE - w)
                if k < w:
                    used[k] = 1
        for k in range(w):
            if not used[k]:
                self.pend_win[k] = 0
        return 0

    cdef object _error(self):
        self.state = ST_FAILED
        if self.err == ERR_GARBAGE or (
                self.err == Z_DATA_ERROR and self.members > 1 and self._out == self.member_out
                and self.strm.msg != NULL
                and self.strm.msg.decode("ascii", "replace") == "incorrect header check"):
            return CompressionError(
                f"trailing garbage after the last gzip member at compressed offset "
                f"{self.member_in} (not a gzip header)")
        return _zerror("inflate", self.err, &self.strm, self._in)

    def feed(self, data):
        """Yield the output of one more piece of compressed input (bytes-like)."""
        if self.busy:
            raise RuntimeError("GzipIndexer.feed: the previous feed() was not consumed")
        if self.finished or self.state == ST_FAILED:
            raise RuntimeError("GzipIndexer.feed after finish() or an error")
        cdef const unsigned char[::1] view = data
        self.busy = True
        return self._feed(view)

    def _feed(self, const unsigned char[::1] view):
        cdef size_t srclen = view.shape[0]
        cdef size_t srcpos = 0
        cdef const unsigned char *src = NULL
        cdef size_t have = 0
        cdef int ev, ret
        cdef uInt wlen
        cdef bytes out, window
        cdef unsigned char *outp
        if srclen > 0:
            src = &view[0]
        try:
            out = PyBytes_FromStringAndSize(NULL, OUT_CHUNK)
            outp = <unsigned char *>PyBytes_AS_STRING(out)
            while True:
                with nogil:
                    ev = self._step(src, srclen, &srcpos, outp, OUT_CHUNK, &have)
                if ev == EV_OUT_FULL:
                    yield out
                    out = PyBytes_FromStringAndSize(NULL, OUT_CHUNK)
                    outp = <unsigned char *>PyBytes_AS_STRING(out)
                    have = 0
                elif ev == EV_POINT:
                    window = PyBytes_FromStringAndSize(NULL, WINSIZE)
                    wlen = WINSIZE
                    ret = inflateGetDictionary(&self.strm, <Bytef *>PyBytes_AS_STRING(window),
                                               &wlen)
                    if ret != Z_OK:
                        self.err = ret
                        raise _zerror("inflateGetDictionary", ret, &self.strm, self._in)
                    if wlen < WINSIZE:
                        window = window[:wlen]
                    self._points.append((self._in, self.strm.data_type & 7, self._out, window))
                    self.last_out = self._out
                    if self.sparse_windows:
                        self.pending = True
                        self.pend_index = len(self._points) - 1
                        self.pend_out = self._out
                        self.pend_bits = self.strm.data_type & 7
                        self.pend_prime = self.last_byte
                        self.pend_wlen = wlen
                        memcpy(self.pend_win, PyBytes_AS_STRING(window), wlen)
                        self.cap_len = 0
                elif ev == EV_SPARSE:
                    c, b, u, _ = self._points[self.pend_index]
                    self._points[self.pend_index] = (
                        c, b, u, PyBytes_FromStringAndSize(<char *>self.pend_win, self.pend_wlen))
                elif ev == EV_MEMBER:
                    self._points.append((self.member_in, 0, self._out, b""))
                    self.last_out = self._out
                elif ev == EV_NEED_INPUT:
                    if have:
                        yield out[:have]
                    return
                else:
                    raise self._error()
        finally:
            # the z_stream must never keep a pointer into a buffer we no longer hold
            self.strm.next_in = NULL
            self.strm.avail_in = 0
            self.busy = False

    def finish(self) -> None:
        """Check that the stream ended at a member end; CompressionError otherwise."""
        if self.busy:
            raise RuntimeError("GzipIndexer.finish: the last feed() was not consumed")
        if self.state == ST_FAILED:
            raise CompressionError(f"gzip stream failed earlier (compressed offset {self._in})")
        if self.members == 0:
            raise CompressionError("truncated gzip stream: no data (compressed offset 0)")
        if self.state == ST_MEMBER:
            raise CompressionError(
                f"truncated gzip stream: the member at compressed offset {self.member_in} "
                f"ends early at compressed offset {self._in}")
        self.finished = True

    def drain_points(self):
        """The resume points whose windows are final, removed from the indexer.

        Between feeds only. The caller keeps them (index-layout compresses their windows at
        once, so raw 32 KiB windows never pile up); access() then returns only the rest.
        A point whose sparse window is still being worked out stays, with any after it.
        """
        if self.busy:
            raise RuntimeError("GzipIndexer.drain_points: the last feed() was not consumed")
        cdef Py_ssize_t n = len(self._points)
        if self.pending:
            n = self.pend_index
        taken = self._points[:n]
        del self._points[:n]
        if self.pending:
            self.pend_index -= n
        return taken

    def access(self):
        """The LayerAccess (kind gzip) for what was fed; call after finish()."""
        from clipcy.layers.access import GZIP, LayerAccess

        if not self.finished:
            raise RuntimeError("GzipIndexer.access before a successful finish()")
        points = list(self._points)
        if <long long>self._out < self.min_points_layer:
            points = points[:1]
        return LayerAccess(kind=GZIP, span=self.span, points=points)


# GzipResumer failure kinds
cdef enum:
    RF_NONE = 0
    RF_ZLIB = 1               # code: zlib return value
    RF_IO = 2                 # code: errno
    RF_TRUNC = 3              # blob ended inside a member
    RF_TRAILER = 4            # blob ended inside a member trailer
    RF_SOURCE = 5             # the source's pread raised (kept in .exc)


cdef class GzipResumer:
    """A decoder resumed at a point that keeps its place: read() continues where it stopped.

    The point is (comp_offset, bits, window) from a GzipIndexer, at uncompressed offset
    `out_offset`; window b"" with bits 0 means a member start (a gzip header is parsed there).
    Reads cross members and are short only at the end of the blob. `source` is either an
    object with pread(offset, n) -> bytes (short only at the end of the blob; in clipcy a
    clipcy.storage.VerifiedBlob, which checks span checksums), called with the GIL in pieces
    of READ_CHUNK while inflate runs without it, or an int fd read with pread(2) (tests).
    One GzipResumer must not be used by two threads at once. After an error the stream is
    dead (every later read raises; a source's exception is raised again as is).
    """

    cdef z_stream strm
    cdef bint zinit
    cdef int fd                 # -1: read from src
    cdef object src
    cdef object held            # the source's bytes inflate is reading (next_in points in)
    cdef object exc             # what the source raised
    cdef bint raw               # raw deflate (resumed mid-member): the trailer is skipped
    cdef unsigned char *inbuf
    cdef unsigned char *scratch
    cdef unsigned long long comp_start
    cdef unsigned long long pos        # next compressed byte to pread
    cdef unsigned long long consumed   # next compressed byte inflate takes
    cdef readonly unsigned long long position  # uncompressed offset of the next output byte
    cdef bint eof, stalled, between, ended
    cdef int trailer            # raw mode: bytes of the member trailer left to skip
    cdef int kind, code         # failure, once failed

    def __cinit__(self, source, unsigned long long comp_offset, int bits, window,
                  unsigned long long out_offset=0):
        cdef const unsigned char[::1] win = window
        cdef Py_ssize_t wlen = win.shape[0]
        cdef unsigned char prime = 0
        cdef ssize_t r
        cdef int ret
        if bits < 0 or bits > 7 or (bits and comp_offset == 0):
            raise ValueError(f"bad resume point: bits {bits} at compressed offset {comp_offset}")
        if wlen > WINSIZE:
            raise ValueError(f"resume window of {wlen} bytes (at most {WINSIZE})")
        cdef int fd = -1
        cdef bytes pb
        if isinstance(source, int):
            fd = source
        else:
            self.src = source
        self.fd = fd
        self.raw = wlen > 0 or bits != 0
        self.comp_start = comp_offset
        self.pos = self.consumed = comp_offset
        self.position = out_offset
        self.inbuf = <unsigned char *>malloc(READ_CHUNK)
        if self.inbuf == NULL:
            raise MemoryError()
        memset(&self.strm, 0, sizeof(z_stream))
        ret = inflateInit2(&self.strm, -MAX_WBITS if self.raw else 16 + MAX_WBITS)
        if ret != Z_OK:
            raise _zerror("inflateInit2", ret, &self.strm, comp_offset)
        self.zinit = True
        if bits:
            if fd >= 0:
                with nogil:
                    r = pread(fd, &prime, 1, <off_t>(comp_offset - 1))
            else:
                pb = self.src.pread(comp_offset - 1, 1)
                r = len(pb)
                if r:
                    prime = pb[0]
            if r < 0:
                self._fail(RF_IO, errno)
            elif r == 0:
                self._fail(RF_TRUNC, 0)
            else:
                ret = inflatePrime(&self.strm, bits, prime >> (8 - bits))
                if ret != Z_OK:
                    self._fail(RF_ZLIB, ret)
        if self.kind == RF_NONE and wlen > 0:
            ret = inflateSetDictionary(&self.strm, &win[0], <uInt>wlen)
            if ret != Z_OK:
                self._fail(RF_ZLIB, ret)
        if self.kind != RF_NONE:
            raise self._exception()

    def __dealloc__(self):
        if self.zinit:
            inflateEnd(&self.strm)
        free(self.inbuf)
        free(self.scratch)

    cdef void _fail(self, int kind, int code) noexcept nogil:
        self.kind = kind
        self.code = code

    cdef Py_ssize_t _fill(self) noexcept with gil:
        """Next compressed piece from the source into next_in: its length, 0 at the end,
        -1 when the source raised (kept in self.exc)."""
        cdef Py_ssize_t n
        try:
            data = self.src.pread(self.pos, READ_CHUNK)
            if type(data) is not bytes:
                data = bytes(data)
            n = len(data)
            if n > READ_CHUNK:
                raise ValueError(f"source returned {n} bytes, asked for {READ_CHUNK}")
        except BaseException as e:
            self.exc = e
            return -1
        self.held = data
        self.strm.next_in = <const Bytef *>PyBytes_AS_STRING(data)
        return n

    cdef object _exception(self):
        if self.kind == RF_SOURCE:
            return self.exc
        if self.kind == RF_ZLIB:
            return _zerror("inflate", self.code, &self.strm, self.consumed)
        if self.kind == RF_IO:
            return BlobError(f"pread failed: {strerror(self.code).decode('utf-8', 'replace')} "
                             f"(compressed offset {self.pos})")
        if self.kind == RF_TRUNC:
            return CompressionError(
                f"truncated gzip stream: blob ends at compressed offset {self.consumed} inside "
                f"a member (resumed at compressed offset {self.comp_start})")
        return CompressionError(
            f"truncated gzip stream: blob ends at compressed offset {self.consumed} inside "
            f"a member trailer")

    cdef Py_ssize_t _run(self, unsigned char *outp, Py_ssize_t n,
                         unsigned long long skip) noexcept nogil:
        """Discard `skip` bytes, then write up to n bytes to outp; returns how many."""
        cdef z_stream *s = &self.strm
        cdef Py_ssize_t got = 0
        cdef ssize_t r
        cdef uInt ain, aout, lim
        cdef int ret
        while self.kind == RF_NONE and (got < n or skip > 0) and not self.ended:
            if s.avail_in == 0 and not self.eof:
                if self.fd >= 0:
                    r = pread(self.fd, self.inbuf, READ_CHUNK, <off_t>self.pos)
                    if r < 0:
                        self._fail(RF_IO, errno)
                        break
                    if r > 0:
                        s.next_in = self.inbuf
                else:
                    r = self._fill()
                    if r < 0:
                        self._fail(RF_SOURCE, 0)
                        break
                if r == 0:
                    self.eof = True
                else:
                    s.avail_in = <uInt>r
                    self.pos += r
            if self.trailer:
                # a raw inflate stops before the member's CRC32+ISIZE: step over them
                if s.avail_in == 0:
                    if self.eof:
                        self._fail(RF_TRAILER, 0)
                    continue
                ain = <uInt>self.trailer if <uInt>self.trailer < s.avail_in else s.avail_in
                s.next_in += ain
                s.avail_in -= ain
                self.consumed += ain
                self.trailer -= ain
                if self.trailer == 0:
                    self.between = True
                continue
            if self.between:
                if s.avail_in == 0:
                    if self.eof:
                        self.ended = True  # clean end of the last member: a short read
                        break
                    continue
                ret = inflateReset2(s, 16 + MAX_WBITS)
                if ret != Z_OK:
                    self._fail(RF_ZLIB, ret)
                    break
                self.raw = False
                self.between = False
            if s.avail_in == 0 and not self.stalled:
                if self.eof:
                    self._fail(RF_TRUNC, 0)
                    break
                continue
            if skip > 0:
                lim = DISCARD if skip > DISCARD else <uInt>skip
                s.next_out = self.scratch
            else:
                lim = <uInt>(n - got) if n - got < IN_MAX else IN_MAX
                s.next_out = outp + got
            s.avail_out = lim
            ain = s.avail_in
            ret = inflate(s, Z_NO_FLUSH)
            self.consumed += ain - s.avail_in
            aout = lim - s.avail_out
            self.position += aout
            if skip > 0:
                skip -= aout
            else:
                got += aout
            self.stalled = s.avail_out == 0
            if ret == Z_STREAM_END:
                self.stalled = False
                if self.raw:
                    self.trailer = 8
                else:
                    self.between = True
                continue
            if ret != Z_OK and ret != Z_BUF_ERROR:
                self._fail(RF_ZLIB, ret)
                break
        return got

    def read(self, Py_ssize_t n, unsigned long long skip=0) -> bytes:
        """Skip `skip` bytes, then return the next n (fewer only at the end of the blob)."""
        cdef bytes out
        cdef unsigned char *outp
        cdef Py_ssize_t got
        if n < 0:
            raise ValueError(f"negative read size {n}")
        if self.kind != RF_NONE:
            raise self._exception()
        if skip > 0 and self.scratch == NULL:
            self.scratch = <unsigned char *>malloc(DISCARD)
            if self.scratch == NULL:
                raise MemoryError()
        out = PyBytes_FromStringAndSize(NULL, n)
        outp = <unsigned char *>PyBytes_AS_STRING(out)
        with nogil:
            got = self._run(outp, n, skip)
        if self.kind != RF_NONE:
            raise self._exception()
        if got < n:
            return out[:got]
        return out


# the former name, kept working (clipcy.tar.streams.GzipStream is the walker's decompressor)
GzipStream = GzipResumer


def gzip_read(int fd, unsigned long long comp_offset, int bits, window,
              unsigned long long skip, Py_ssize_t n) -> bytes:
    """Read n bytes of the uncompressed stream starting `skip` bytes after a resume point.

    One-shot GzipResumer(fd, comp_offset, bits, window).read(n, skip).
    """
    if n < 0:
        raise ValueError(f"negative read size {n}")
    if n == 0:
        return b""
    return GzipResumer(fd, comp_offset, bits, window).read(n, skip)
