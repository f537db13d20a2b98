"""Random access into compressed layer blobs: while a layer streams, record where decoding
can resume (`blobindex`: gzip resume points with their windows via `_checkpoint`, zstd
frames, plain offsets; `packing` keeps the windows small), describe it (`access`), and later
read any byte range from those points (`blobread`). `_inflate` picks zlib-ng or zlib."""
