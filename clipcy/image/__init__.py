"""From an OCI image layout to one merged tree: resolve the ref to a manifest and its blobs
(`layout`), index every layer while hashing it (`indexer`, `hashpipe`, `digests`), overlay
the layers' entries with whiteouts and hardlinks (`merge`: compiled `_merge` or twin
`_merge_py`), and reuse indexed layers (`cache`)."""
