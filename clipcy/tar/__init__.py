"""The tar core: an incremental tar header parser (compiled `_tarparse`, pure-Python twin
`_tarparse_py`, chosen by `tarparse`) and the chunked decompressors (`streams`) that feed it
plain, gzip and zstd layer blobs. Knows nothing of images or archives."""
