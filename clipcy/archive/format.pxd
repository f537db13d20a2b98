# cython: language_level=3
# The record flag bits of docs/FORMAT.md "Node records" as C constants, for the compiled
# writer and decoder: the same names and values as clipcy/archive/format.py
# (tests/test_nodeblock.py checks that they agree).

cdef enum:
    TYPE_MASK = 0x7
    F_NSEC = 1 << 3
    F_NLINK = 1 << 4
    F_SIZE = 1 << 5
    F_DATA = 1 << 6
    F_SPARSE = 1 << 7
    F_DIGEST = 1 << 8
    F_LINK = 1 << 9
    F_DEV = 1 << 10
    F_XATTR = 1 << 11
    KNOWN_RECORD_FLAGS = (1 << 12) - 1
