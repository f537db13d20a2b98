# cython: language_level=3
"""A thin binding of libfuse3's low-level API (fuse_lowlevel.h) for a read-only filesystem.

Session(fs, mountpoint, options) mounts, serve() runs fuse_session_loop_mt (the calling thread
waits without the GIL; libfuse's worker threads take the GIL only inside a callback). Each
callback asks the Python filesystem object (clipcy.fusemount.fs.ImageFS) for Python values and
turns them into libfuse's C structs here: stat from a node record, directory entries with
their attributes (readdirplus), file bytes (pieces of the span cache replied as one iovec,
without the GIL). Every write operation
answers EROFS. Exceptions: OSError -> its errno; anything else -> EIO and a log line.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EIO, ENODATA, ENOSYS, ERANGE, EROFS
from libc.stdint cimport int64_t, uint64_t
from libc.stdio cimport fflush, fputs, stderr
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset
from posix.unistd cimport W_OK

from clipcy.archive cimport record as R

import logging
import os

log = logging.getLogger("clipcy.mount")

__all__ = ["Session", "LIBFUSE_VERSION"]


cdef extern from "<stdarg.h>":
    ctypedef struct va_list:
        pass

cdef extern from "<stdio.h>" nogil:
    int vsnprintf(char *s, size_t n, const char *fmt, va_list ap)

cdef extern from "<sys/stat.h>" nogil:
    ctypedef unsigned long dev_t
    ctypedef unsigned int mode_t
    struct timespec:
        long tv_sec
        long tv_nsec
    struct stat:
        uint64_t st_ino
        mode_t st_mode
        uint64_t st_nlink
        unsigned int st_uid
        unsigned int st_gid
        dev_t st_rdev
        int64_t st_size
        long st_blksize
        int64_t st_blocks
        timespec st_mtim
        timespec st_atim
        timespec st_ctim

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/sysmacros.h>" nogil:
    dev_t makedev(unsigned int major, unsigned int minor)

cdef extern from "<sys/statvfs.h>" nogil:
    struct statvfs:
        unsigned long f_bsize
        unsigned long f_frsize
        unsigned long f_blocks
        unsigned long f_bfree
        unsigned long f_bavail
        unsigned long f_files
        unsigned long f_ffree
        unsigned long f_favail
        unsigned long f_namemax

cdef extern from "fuse_lowlevel.h" nogil:
    ctypedef uint64_t fuse_ino_t
    cdef struct fuse_req:
        pass
    ctypedef fuse_req *fuse_req_t
    cdef struct fuse_session:
        pass
    cdef struct fuse_loop_config:
        pass
    cdef struct fuse_args:
        int argc
        char **argv
        int allocated
    cdef struct fuse_entry_param:
        fuse_ino_t ino
        uint64_t generation
        stat attr
        double attr_timeout
        double entry_timeout
    cdef struct fuse_file_info:
        int flags
        unsigned int keep_cache
        unsigned int cache_readdir
        unsigned int noflush
        unsigned int direct_io
        uint64_t fh
    cdef struct fuse_conn_info:
        unsigned max_write
        unsigned max_read
        unsigned max_readahead
        unsigned capable
        unsigned want
        unsigned max_background
        unsigned congestion_threshold
    cdef struct fuse_forget_data:
        pass
    cdef struct fuse_lowlevel_ops:
        void (*init)(void *userdata, fuse_conn_info *conn)
        void (*lookup)(fuse_req_t req, fuse_ino_t parent, const char *name)
        void (*forget)(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
        void (*forget_multi)(fuse_req_t req, size_t count, fuse_forget_data *forgets)
        void (*getattr)(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi)
        void (*setattr)(fuse_req_t req, fuse_ino_t ino, stat *attr, int to_set,
                        fuse_file_info *fi)
        void (*readlink)(fuse_req_t req, fuse_ino_t ino)
        void (*mknod)(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      dev_t rdev)
        void (*mkdir)(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
        void (*unlink)(fuse_req_t req, fuse_ino_t parent, const char *name)
        void (*rmdir)(fuse_req_t req, fuse_ino_t parent, const char *name)
        void (*symlink)(fuse_req_t req, const char *link, fuse_ino_t parent,
                        const char *name)
        void (*rename)(fuse_req_t req, fuse_ino_t parent, const char *name,
                       fuse_ino_t newparent, const char *newname, unsigned int flags)
        void (*link)(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
                     const char *newname)
        void (*open)(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi)
        void (*read)(fuse_req_t req, fuse_ino_t ino, size_t size, long off, fuse_file_info *fi)
        void (*write)(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, long off,
                      fuse_file_info *fi)
        void (*release)(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi)
        void (*opendir)(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi)
        void (*readdir)(fuse_req_t req, fuse_ino_t ino, size_t size, long off,
                        fuse_file_info *fi)
        void (*readdirplus)(fuse_req_t req, fuse_ino_t ino, size_t size, long off,
                            fuse_file_info *fi)
        void (*releasedir)(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi)
        void (*statfs)(fuse_req_t req, fuse_ino_t ino)
        void (*setxattr)(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                         size_t size, int flags)
        void (*getxattr)(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
        void (*listxattr)(fuse_req_t req, fuse_ino_t ino, size_t size)
        void (*removexattr)(fuse_req_t req, fuse_ino_t ino, const char *name)
        void (*access)(fuse_req_t req, fuse_ino_t ino, int mask)
        void (*create)(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                       fuse_file_info *fi)
    enum:
        FUSE_CAP_READDIRPLUS
        FUSE_CAP_READDIRPLUS_AUTO
        FUSE_CAP_CACHE_SYMLINKS
        FUSE_CAP_PARALLEL_DIROPS
        FUSE_CAP_AUTO_INVAL_DATA
        FUSE_CAP_ASYNC_READ
        FUSE_CAP_NO_OPEN_SUPPORT
        FUSE_CAP_NO_OPENDIR_SUPPORT
    int fuse_reply_err(fuse_req_t req, int err)
    void fuse_reply_none(fuse_req_t req)
    int fuse_reply_entry(fuse_req_t req, const fuse_entry_param *e)
    int fuse_reply_attr(fuse_req_t req, const stat *attr, double attr_timeout)
    int fuse_reply_readlink(fuse_req_t req, const char *link)
    int fuse_reply_open(fuse_req_t req, const fuse_file_info *fi)
    int fuse_reply_buf(fuse_req_t req, const char *buf, size_t size)
    int fuse_reply_iov(fuse_req_t req, const iovec *iov, int count)
    int fuse_reply_statfs(fuse_req_t req, const statvfs *stbuf)
    int fuse_reply_xattr(fuse_req_t req, size_t count)
    size_t fuse_add_direntry(fuse_req_t req, char *buf, size_t bufsize, const char *name,
                             const stat *stbuf, long off)
    size_t fuse_add_direntry_plus(fuse_req_t req, char *buf, size_t bufsize, const char *name,
                                  const fuse_entry_param *e, long off)
    void *fuse_req_userdata(fuse_req_t req)
    fuse_session *fuse_session_new(fuse_args *args, const fuse_lowlevel_ops *op, size_t op_size,
                                   void *userdata)
    int fuse_session_mount(fuse_session *se, const char *mountpoint)
    int fuse_session_loop_mt(fuse_session *se, fuse_loop_config *config)
    void fuse_session_unmount(fuse_session *se)
    void fuse_session_destroy(fuse_session *se)
    fuse_loop_config *fuse_loop_cfg_create()
    void fuse_loop_cfg_destroy(fuse_loop_config *config)
    void fuse_loop_cfg_set_max_threads(fuse_loop_config *config, unsigned int value)
    void fuse_loop_cfg_set_idle_threads(fuse_loop_config *config, unsigned int value)
    int fuse_version()
    void fuse_opt_free_args(fuse_args *args)
    int fuse_opt_add_arg(fuse_args *args, const char *arg)

cdef extern from "fuse_log.h" nogil:
    ctypedef void (*fuse_log_func_t)(int level, const char *fmt, va_list ap)
    void fuse_set_log_func(fuse_log_func_t func)


LIBFUSE_VERSION: int = fuse_version()

# The archive never changes: entries, attributes and negative lookups stay valid for the
# life of the mount (the kernel drops them only under memory pressure).
cdef double TIMEOUT = 1e9
cdef unsigned[6] S_IFMT_OF = [0o040000, 0o100000, 0o120000, 0o020000, 0o060000, 0o010000]
cdef dict _TYPE_INDEX = {"dir": 0, "file": 1, "symlink": 2, "char": 3, "block": 4, "fifo": 5}

# False once the image is known to hold no xattr at all: getxattr/listxattr then answer
# ENOSYS without the GIL, and the kernel stops asking (no round trip per exec or open).
cdef bint _xattrs = True
# the kernel accepts ENOSYS for open / opendir (FUSE_CAP_NO_OPEN(DIR)_SUPPORT, Linux 3.19 /
# 5.1): set at init from what it offers
cdef bint _no_open = False
cdef bint _no_opendir = False

# Recording (clipctl mount --record): the node ids of the files read, in first-access order.
# One byte per node says "seen" (set with an atomic exchange, so each id is appended once even
# when two threads read it first at the same time); the order array is filled by an atomic
# counter. Both are touched without the GIL, before the read's own work: a few nanoseconds.
cdef extern from *:
    """
    static inline int clipcy_first_touch(unsigned char *seen, unsigned long long i) {
        return __atomic_exchange_n(&seen[i], (unsigned char)1, __ATOMIC_RELAXED) == 0;
    }
    static inline unsigned long long clipcy_next(unsigned long long *n) {
        return __atomic_fetch_add(n, 1ULL, __ATOMIC_RELAXED);
    }
    static inline void clipcy_store(unsigned long long *p, unsigned long long v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline unsigned long long clipcy_load(unsigned long long *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    """
    int clipcy_first_touch(unsigned char *seen, unsigned long long i) nogil
    unsigned long long clipcy_next(unsigned long long *n) nogil
    void clipcy_store(unsigned long long *p, unsigned long long v) nogil
    unsigned long long clipcy_load(unsigned long long *p) nogil

cdef unsigned char *_seen = NULL  # node id -> touched (ids < _nseen)
cdef unsigned long long *_order = NULL  # node ids in first-access order (up to _cap)
cdef unsigned long long _nseen = 0
cdef unsigned long long _cap = 0
cdef unsigned long long _count = 0
cdef bint _recording = False


cdef inline void _touch(fuse_ino_t ino) noexcept nogil:
    cdef unsigned long long i
    if _recording and ino < _nseen and clipcy_first_touch(_seen, ino):
        i = clipcy_next(&_count)
        if i < _cap:
            clipcy_store(&_order[i], ino)


# libfuse's messages (unknown options, mount failures): the last one is kept for the error
# we raise; once serving, they also go to stderr (the log).
cdef char _last_log[1024]
cdef bint _log_to_stderr = False


cdef void _fuse_log(int level, const char *fmt, va_list ap) noexcept nogil:
    vsnprintf(_last_log, sizeof(_last_log), fmt, ap)
    if _log_to_stderr:
        fputs(_last_log, stderr)
        fflush(stderr)


fuse_set_log_func(<fuse_log_func_t>_fuse_log)


def last_libfuse_message() -> str:
    return (<char *>_last_log).decode("utf-8", "replace").strip()


cdef inline Session _session(fuse_req_t req):
    return <Session>fuse_req_userdata(req)


cdef int _errno_of(object e) noexcept:
    if isinstance(e, OSError) and e.errno:
        return e.errno
    log.error("internal error: %s: %s", type(e).__name__, e, exc_info=e)
    return EIO


cdef int _fill_stat(stat *st, tuple rec) except -1:
    """struct stat from a node record (positions: clipcy/archive/record.pxd)."""
    cdef int t = _TYPE_INDEX[rec[R.TYPE]]
    cdef int64_t size = 0
    memset(st, 0, sizeof(stat))
    st.st_ino = rec[R.INO]
    st.st_mode = S_IFMT_OF[t] | <unsigned>(rec[R.MODE] & 0o7777)
    st.st_nlink = rec[R.NLINK]
    st.st_uid = rec[R.UID] & 0xFFFFFFFF
    st.st_gid = rec[R.GID] & 0xFFFFFFFF
    if t == 1:
        size = rec[R.SIZE]
        st.st_blocks = (size + 511) // 512
        if rec[R.SPARSE] is not None:  # sparse: the blocks of the data runs
            st.st_blocks = (sum([length for _, length in rec[R.SPARSE]]) + 511) // 512
    elif t == 2:
        size = len(rec[R.LINKNAME])
    elif t == 3 or t == 4:
        st.st_rdev = makedev(rec[R.DEVMAJOR] & 0xFFFFFFFF, rec[R.DEVMINOR] & 0xFFFFFFFF)
    st.st_size = size
    st.st_blksize = 4096
    st.st_mtim.tv_sec = rec[R.MTIME_SEC]
    st.st_mtim.tv_nsec = rec[R.MTIME_NSEC]
    st.st_atim = st.st_mtim
    st.st_ctim = st.st_mtim
    return 0


cdef int _fill_entry(fuse_entry_param *e, uint64_t nodeid, tuple rec) except -1:
    memset(e, 0, sizeof(fuse_entry_param))
    e.ino = nodeid
    e.generation = 1
    _fill_stat(&e.attr, rec)
    e.attr_timeout = TIMEOUT
    e.entry_timeout = TIMEOUT
    return 0


# -- callbacks (libfuse worker threads) ------------------------------------------------------
cdef void _init(void *userdata, fuse_conn_info *conn) noexcept nogil:
    cdef unsigned want = conn.want
    # readdirplus always (a listing carries every child's attributes: one round trip for
    # `ls -l` or a walk), symlink targets cached by the kernel, parallel lookups
    want |= conn.capable & (FUSE_CAP_READDIRPLUS | FUSE_CAP_CACHE_SYMLINKS
                            | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_ASYNC_READ)
    want &= ~(FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_AUTO_INVAL_DATA)
    conn.want = want
    global _no_open, _no_opendir
    _no_open = (conn.capable & FUSE_CAP_NO_OPEN_SUPPORT) != 0
    _no_opendir = (conn.capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0
    conn.max_readahead = 1 << 20
    # above the kernel's default of 12: asynchronous readahead stops at 75% of it
    conn.max_background = 64
    conn.congestion_threshold = 48


cdef void _lookup_g(fuse_req_t req, fuse_ino_t parent, const char *name) noexcept:
    cdef fuse_entry_param e
    cdef int err = 0
    try:
        hit = _session(req).fs.lookup(parent, <bytes>name)
        if hit is None:  # final: the index knows every name; cache the miss
            memset(&e, 0, sizeof(e))
            e.entry_timeout = TIMEOUT
        else:
            _fill_entry(&e, hit[0], hit[1])
    except BaseException as ex:
        err = _errno_of(ex)
    if err:
        fuse_reply_err(req, err)
    else:
        fuse_reply_entry(req, &e)


cdef void _lookup(fuse_req_t req, fuse_ino_t parent, const char *name) noexcept nogil:
    with gil:
        _lookup_g(req, parent, name)


cdef void _forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) noexcept nogil:
    fuse_reply_none(req)  # node ids are record positions: nothing to free


cdef void _forget_multi(fuse_req_t req, size_t count, fuse_forget_data *f) noexcept nogil:
    fuse_reply_none(req)


cdef void _getattr_g(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept:
    cdef stat st
    cdef int err = 0
    try:
        _fill_stat(&st, _session(req).fs.record(ino))
    except BaseException as ex:
        err = _errno_of(ex)
    if err:
        fuse_reply_err(req, err)
    else:
        fuse_reply_attr(req, &st, TIMEOUT)


cdef void _getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept nogil:
    with gil:
        _getattr_g(req, ino, fi)


cdef void _readlink_g(fuse_req_t req, fuse_ino_t ino) noexcept:
    cdef int err = 0
    try:
        target = _session(req).fs.readlink(ino)
        fuse_reply_readlink(req, PyBytes_AS_STRING(target))
    except BaseException as ex:
        err = _errno_of(ex)
    if err:
        fuse_reply_err(req, err)


cdef void _readlink(fuse_req_t req, fuse_ino_t ino) noexcept nogil:
    with gil:
        _readlink_g(req, ino)


cdef void _open(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept nogil:
    _touch(ino)
    if fi.flags & 3:  # O_WRONLY or O_RDWR
        fuse_reply_err(req, EROFS)
    elif _no_open:
        # the kernel then opens files itself, never sends open/release again, and keeps
        # their pages (FOPEN_KEEP_CACHE is its default): no round trip per open
        fuse_reply_err(req, ENOSYS)
    else:
        fi.keep_cache = 1  # the content never changes: keep pages across opens
        fi.noflush = 1
        fi.fh = 0  # reads find the file by its node id
        fuse_reply_open(req, fi)


cdef void _read_g(fuse_req_t req, fuse_ino_t ino, size_t size, long off,
                fuse_file_info *fi) noexcept:
    # the pieces of cached spans go to the kernel as one iovec: no join or slice here, and
    # the GIL is released while the kernel copies them into the page cache
    cdef int err = 0
    cdef iovec[8] local
    cdef iovec *iov = local
    cdef Py_ssize_t count = 0, i, start, length
    cdef object data
    try:
        parts = _session(req).fs.read_parts(ino, size, off)
        count = len(parts)
        if count > 8:
            iov = <iovec *>malloc(count * sizeof(iovec))
            if iov == NULL:
                raise MemoryError()
        for i in range(count):
            data, start, length = parts[i]
            if (type(data) is not bytes or start < 0 or length < 0
                    or start + length > PyBytes_GET_SIZE(data)):
                raise ValueError(f"bad read piece {i}: {type(data).__name__} [{start}:+{length}]")
            iov[i].iov_base = PyBytes_AS_STRING(data) + start
            iov[i].iov_len = <size_t>length
        with nogil:  # `parts` holds the bytes until the reply is written
            fuse_reply_iov(req, iov, <int>count)
    except BaseException as ex:
        err = _errno_of(ex)
    if iov != local:
        free(iov)
    if err:
        fuse_reply_err(req, err)


cdef void _read(fuse_req_t req, fuse_ino_t ino, size_t size, long off,
                fuse_file_info *fi) noexcept nogil:
    _touch(ino)
    with gil:
        _read_g(req, ino, size, off, fi)


cdef void _release(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept nogil:
    fuse_reply_err(req, 0)


cdef void _opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept nogil:
    if _no_opendir:  # as _open: the kernel then caches listings (FOPEN_CACHE_DIR) by itself
        fuse_reply_err(req, ENOSYS)
        return
    fi.fh = 0
    fi.keep_cache = 1
    fi.cache_readdir = 1  # the kernel keeps the listing: later readdirs do not reach us
    fuse_reply_open(req, fi)


cdef void _readdir_any_g(fuse_req_t req, fuse_ino_t ino, size_t size, long off,
                       fuse_file_info *fi, bint plus) noexcept:
    cdef int err = 0
    cdef char *buf = <char *>malloc(size)
    cdef size_t used = 0, need
    cdef fuse_entry_param e
    cdef long i
    if buf == NULL:
        fuse_reply_err(req, EIO)
        return
    try:
        entries = _session(req).fs.listing(ino)
        for i in range(off, len(entries)):
            name, nodeid, rec = entries[i]
            if plus:
                if nodeid:
                    _fill_entry(&e, nodeid, rec)
                else:  # "." and "..": attributes only, no lookup count taken
                    memset(&e, 0, sizeof(e))
                    _fill_stat(&e.attr, rec)
                need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, i + 1)
            else:
                _fill_stat(&e.attr, rec)
                need = fuse_add_direntry(req, buf + used, size - used, name, &e.attr,
                                         i + 1)
            if need > size - used:
                break
            used += need
    except BaseException as ex:
        err = _errno_of(ex)
    if err:
        fuse_reply_err(req, err)
    else:
        fuse_reply_buf(req, buf, used)
    free(buf)


cdef void _readdir_any(fuse_req_t req, fuse_ino_t ino, size_t size, long off,
                       fuse_file_info *fi, bint plus) noexcept nogil:
    with gil:
        _readdir_any_g(req, ino, size, off, fi, plus)


cdef void _readdir(fuse_req_t req, fuse_ino_t ino, size_t size, long off,
                   fuse_file_info *fi) noexcept nogil:
    _readdir_any(req, ino, size, off, fi, False)


cdef void _readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, long off,
                       fuse_file_info *fi) noexcept nogil:
    _readdir_any(req, ino, size, off, fi, True)


cdef void _releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept nogil:
    fuse_reply_err(req, 0)


cdef void _statfs_g(fuse_req_t req, fuse_ino_t ino) noexcept:
    cdef statvfs sv
    cdef int err = 0
    memset(&sv, 0, sizeof(sv))
    try:
        blocks, files = _session(req).fs.statfs()
        sv.f_bsize = sv.f_frsize = 4096
        sv.f_blocks = (blocks + 4095) // 4096
        sv.f_files = files
        sv.f_namemax = 255
    except BaseException as ex:
        err = _errno_of(ex)
    if err:
        fuse_reply_err(req, err)
    else:
        fuse_reply_statfs(req, &sv)


cdef void _statfs(fuse_req_t req, fuse_ino_t ino) noexcept nogil:
    with gil:
        _statfs_g(req, ino)


cdef void _getxattr_g(fuse_req_t req, fuse_ino_t ino, const char *name,
                    size_t size) noexcept:
    cdef int err = 0
    cdef size_t n = 0
    try:
        value = _session(req).fs.getxattr(ino, <bytes>name)
        if value is None:
            err = ENODATA
        else:
            n = PyBytes_GET_SIZE(value)
            if size == 0:
                fuse_reply_xattr(req, n)
            elif n > size:
                err = ERANGE
            else:
                fuse_reply_buf(req, PyBytes_AS_STRING(value), n)
    except BaseException as ex:
        err = _errno_of(ex)
    if err:
        fuse_reply_err(req, err)


cdef void _getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                    size_t size) noexcept nogil:
    if not _xattrs:
        fuse_reply_err(req, ENOSYS)
        return
    with gil:
        _getxattr_g(req, ino, name, size)


cdef void _listxattr_g(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept:
    cdef int err = 0
    cdef size_t n
    try:
        names = _session(req).fs.listxattr(ino)  # b"name\0name\0"
        n = PyBytes_GET_SIZE(names)
        if size == 0:
            fuse_reply_xattr(req, n)
        elif n > size:
            err = ERANGE
        else:
            fuse_reply_buf(req, PyBytes_AS_STRING(names), n)
    except BaseException as ex:
        err = _errno_of(ex)
    if err:
        fuse_reply_err(req, err)


cdef void _listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept nogil:
    if not _xattrs:
        fuse_reply_err(req, ENOSYS)
        return
    with gil:
        _listxattr_g(req, ino, size)


cdef void _access(fuse_req_t req, fuse_ino_t ino, int mask) noexcept nogil:
    fuse_reply_err(req, EROFS if mask & W_OK else 0)


# every write operation: EROFS (the mount is also "ro", so most never reach us)
cdef void _setattr(fuse_req_t req, fuse_ino_t ino, stat *attr, int to_set,
                   fuse_file_info *fi) noexcept nogil:
    fuse_reply_err(req, EROFS)


cdef void _mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                 dev_t rdev) noexcept nogil:
    fuse_reply_err(req, EROFS)


cdef void _mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
                 mode_t mode) noexcept nogil:
    fuse_reply_err(req, EROFS)


cdef void _unlink(fuse_req_t req, fuse_ino_t parent, const char *name) noexcept nogil:
    fuse_reply_err(req, EROFS)


cdef void _symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
                   const char *name) noexcept nogil:
    fuse_reply_err(req, EROFS)


cdef void _rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags) noexcept nogil:
    fuse_reply_err(req, EROFS)


cdef void _link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
                const char *newname) noexcept nogil:
    fuse_reply_err(req, EROFS)


cdef void _write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, long off,
                 fuse_file_info *fi) noexcept nogil:
    fuse_reply_err(req, EROFS)


cdef void _setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                    size_t size, int flags) noexcept nogil:
    fuse_reply_err(req, EROFS)


cdef void _removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) noexcept nogil:
    fuse_reply_err(req, EROFS)


cdef void _create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  fuse_file_info *fi) noexcept nogil:
    fuse_reply_err(req, EROFS)


cdef class Session:
    """One FUSE session: Session(fs, mountpoint, options); mount(); serve(threads); close()."""

    cdef fuse_session *se
    cdef fuse_lowlevel_ops ops
    cdef readonly object fs
    cdef readonly str mountpoint
    cdef bint mounted

    def __cinit__(self) -> None:
        self.se = NULL
        self.mounted = False

    def __init__(self, fs: object, mountpoint: str, options: list) -> None:
        self.fs = fs
        self.mountpoint = mountpoint
        memset(&self.ops, 0, sizeof(self.ops))
        self.ops.init = _init
        self.ops.lookup = _lookup
        self.ops.forget = _forget
        self.ops.forget_multi = _forget_multi
        self.ops.getattr = _getattr
        self.ops.readlink = _readlink
        self.ops.open = _open
        self.ops.read = _read
        self.ops.release = _release
        self.ops.opendir = _opendir
        self.ops.readdir = _readdir
        self.ops.readdirplus = _readdirplus
        self.ops.releasedir = _releasedir
        self.ops.statfs = _statfs
        self.ops.getxattr = _getxattr
        self.ops.listxattr = _listxattr
        self.ops.access = _access
        self.ops.setattr = _setattr
        self.ops.mknod = _mknod
        self.ops.mkdir = _mkdir
        self.ops.unlink = _unlink
        self.ops.rmdir = _unlink
        self.ops.symlink = _symlink
        self.ops.rename = _rename
        self.ops.link = _link
        self.ops.write = _write
        self.ops.setxattr = _setxattr
        self.ops.removexattr = _removexattr
        self.ops.create = _create
        cdef fuse_args args
        args.argc = 0
        args.argv = NULL
        args.allocated = 0
        try:
            for a in ["clipcy"] + list(options):
                if fuse_opt_add_arg(&args, os.fsencode(a)) != 0:
                    raise MemoryError()
            _last_log[0] = 0
            self.se = fuse_session_new(&args, &self.ops, sizeof(self.ops), <void *>self)
        finally:
            fuse_opt_free_args(&args)
        if self.se == NULL:
            raise OSError(f"libfuse refused the options: {last_libfuse_message() or options}")

    def mount(self) -> None:
        _last_log[0] = 0
        if fuse_session_mount(self.se, os.fsencode(self.mountpoint)) != 0:
            raise OSError(f"cannot mount on {self.mountpoint}: "
                          f"{last_libfuse_message() or 'fuse_session_mount failed'}")
        self.mounted = True

    def set_xattrs(self, bint enabled) -> None:
        """False: the image has no xattrs; answer ENOSYS so that the kernel stops asking."""
        global _xattrs
        _xattrs = enabled

    def record_start(self, unsigned long long nodes, unsigned long long most) -> None:
        """Start recording the node ids (1..nodes) of files opened or read, the first `most`
        of them in first-access order. Once per process (the buffers live as long as it)."""
        global _seen, _order, _nseen, _cap, _count, _recording
        if _seen != NULL:
            raise RuntimeError("recording was started already")
        _seen = <unsigned char *>calloc(nodes + 1, 1)
        _order = <unsigned long long *>calloc(most if most else 1, sizeof(unsigned long long))
        if _seen == NULL or _order == NULL:
            free(_seen)
            free(_order)
            _seen = NULL
            _order = NULL
            raise MemoryError()
        _cap = most
        _count = 0
        _nseen = nodes + 1
        _recording = True

    def record_stop(self) -> list:
        """Stop recording; the node ids recorded, in first-access order (the buffers stay
        allocated: a callback may still be looking at them)."""
        global _recording
        _recording = False
        cdef unsigned long long n = clipcy_load(&_count), i, v
        out = []
        if _order == NULL:
            return out
        for i in range(min(n, _cap)):
            v = clipcy_load(&_order[i])
            if v:  # 0: a slot taken but not yet written when recording stopped
                out.append(v)
        return out

    def recorded_count(self) -> int:
        """Distinct files touched so far (also beyond the recorded `most`)."""
        return clipcy_load(&_count)

    def serve(self, int threads=16) -> int:
        """Answer requests until the filesystem is unmounted (returns libfuse's status)."""
        global _log_to_stderr
        cdef fuse_loop_config *cfg = fuse_loop_cfg_create()
        cdef int rc
        if cfg == NULL:
            raise MemoryError()
        fuse_loop_cfg_set_max_threads(cfg, threads)
        fuse_loop_cfg_set_idle_threads(cfg, threads)
        _log_to_stderr = True
        try:
            with nogil:
                rc = fuse_session_loop_mt(self.se, cfg)
        finally:
            fuse_loop_cfg_destroy(cfg)
        return rc

    def close(self) -> None:
        """Unmount (if still mounted) and free the session."""
        if self.se != NULL:
            if self.mounted:
                with nogil:
                    fuse_session_unmount(self.se)
                self.mounted = False
            fuse_session_destroy(self.se)
            self.se = NULL

    def close_after_unmount(self, bint still_mounted) -> None:
        """close() once the loop has returned: unmount only if it is still mounted (libfuse
        complains when asked to unmount what is gone)."""
        self.mounted = self.mounted and still_mounted
        self.close()

    def __dealloc__(self) -> None:
        if self.se != NULL:
            fuse_session_destroy(self.se)
