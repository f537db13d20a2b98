"""The span checksum kinds and the writers' span grid (docs/FORMAT.md "Span checksums").

They belong to the blob reads that check them (clipcy.storage.spans); clipcy.archive.format
re-exports them as part of the format, where FORMAT.md names them (`format.CHECKSUM_*`,
`format.SPAN_SIZE`). Constants only: importing this loads nothing else.
"""

from __future__ import annotations

CHECKSUM_NONE = 0  # no checksums (only for a layer of no bytes; readers refuse reads else)
CHECKSUM_BLAKE3 = 1  # BLAKE3, 32-byte digests (read, no longer written)
CHECKSUM_BLAKE3_128 = 2  # BLAKE3's first 16 output bytes: what writers write. A read must
# match a digest made from the honest bytes (a second preimage, 2**128 work); half the bytes
# keep a many-small-files image's archive under 1% of the image (perf/RESULTS-integrity.md).
CHECKSUM_DIGEST_SIZES = {CHECKSUM_NONE: 0, CHECKSUM_BLAKE3: 32, CHECKSUM_BLAKE3_128: 16}
CHECKSUM_WRITTEN = CHECKSUM_BLAKE3_128
SPAN_SIZE = 64 * 1024  # writers' grid of compressed bytes (perf/RESULTS-integrity.md)
