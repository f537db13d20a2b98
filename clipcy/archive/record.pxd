# cython: language_level=3
# The positions of a decoded node record's fields, for the compiled modules: the same names
# and values as clipcy/archive/record.py (tests/test_nodeblock.py checks that they agree).
# Use them qualified (`from clipcy.archive cimport record as R`; R.SIZE): bare names such as
# SIZE or TYPE would shadow others.

cdef enum:
    PATH = 0
    TYPE = 1
    MODE = 2
    UID = 3
    GID = 4
    MTIME_SEC = 5
    MTIME_NSEC = 6
    SIZE = 7
    LINKNAME = 8
    DEVMAJOR = 9
    DEVMINOR = 10
    XATTRS = 11
    INO = 12
    NLINK = 13
    LAYER = 14
    OFFSET = 15
    SPARSE = 16
    DIGEST = 17
