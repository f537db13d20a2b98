# cython: language_level=3
# A bounded cursor over a contiguous buffer (asyncpg's frb idea): every read checks the
# length, so the parser never touches memory outside the caller's buffer.

cdef struct Cursor:
    const unsigned char *p
    Py_ssize_t left
    long long pos            # absolute offset in the uncompressed stream, for messages


cdef inline void cursor_init(Cursor *c, const unsigned char *p, Py_ssize_t n,
                             long long pos) noexcept nogil:
    c.p = p
    c.left = n
    c.pos = pos


cdef inline const unsigned char *take(Cursor *c, Py_ssize_t n) noexcept nogil:
    """n bytes from the cursor, or NULL (nothing consumed) when fewer are left."""
    cdef const unsigned char *out = c.p
    if n < 0 or n > c.left:
        return NULL           # the caller raises with context
    c.p += n
    c.left -= n
    c.pos += n
    return out


cdef inline Py_ssize_t skip_upto(Cursor *c, long long n) noexcept nogil:
    """Advance by min(n, left) bytes; returns how many."""
    cdef Py_ssize_t k = c.left
    if n < k:
        k = <Py_ssize_t>n
    if k < 0:
        k = 0
    c.p += k
    c.left -= k
    c.pos += k
    return k
