#!/usr/bin/env python3
"""The baseline: a bare zlib decompress loop over gzip blobs (multi-member aware), one core."""

import sys
import zlib

CHUNK = 1 << 20

total = 0
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        d = zlib.decompressobj(31)
        while chunk := f.read(CHUNK):
            while chunk:
                total += len(d.decompress(chunk))
                if d.eof:  # next gzip member
                    chunk = d.unused_data
                    d = zlib.decompressobj(31)
                else:
                    chunk = b""
print(total)
