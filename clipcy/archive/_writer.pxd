# cython: language_level=3
# The writer's record encoder, shared at C level with the compiled merge
# (clipcy/image/_merge.pyx encode_tree feeds it from its inodes, without a Node per path).
from libc.stdint cimport uint64_t


cdef struct _Delta:
    # a block's delta state, all 0 at the start of a block (docs/FORMAT.md "Node records")
    uint64_t ino
    uint64_t mtime       # the previous mtime's two's-complement bits
    uint64_t data_end    # predicted offset: previous data end + one 512-byte tar header


cdef class _Buf:
    cdef unsigned char *data
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef int reserve(self, Py_ssize_t extra) except -1
    cdef int uv(self, uint64_t v) except -1
    cdef int byte(self, unsigned char c) except -1
    cdef int put(self, const unsigned char *p, Py_ssize_t k) except -1
    cdef int put_bytes(self, bytes b) except -1
    cdef bytes take(self)


cdef class BlockEncoder:
    cdef list blocks
    cdef set dirs
    cdef _Buf out
    cdef Py_ssize_t count
    cdef Py_ssize_t max_nodes
    cdef Py_ssize_t target_bytes
    cdef bytes first
    cdef bytes prev
    cdef bytes last
    cdef _Delta st
    cdef int add(self, object path, object type, object mode, object uid, object gid,
                 object mtime_sec, object mtime_nsec, object size, object linkname,
                 object devmajor, object devminor, object xattrs, object ino, object nlink,
                 object layer, object offset, object sparse, object digest) except -1
    cpdef list finish(self)
