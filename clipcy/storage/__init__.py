"""Blob stores: where an archive's layer blobs are read from (directory, registry, HTTP)."""
