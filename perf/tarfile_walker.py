#!/usr/bin/env python3
"""The peer: Python's tarfile in stream mode walking every layer of an OCI layout (tag latest),
recording the metadata clipcy records (name, type, mode, owner, size, mtime, link, devices,
xattrs, data offset). No digests are computed: this is a lower bar than clipctl's work."""

import json
import sys
import tarfile
from pathlib import Path

import zstandard

layout = Path(sys.argv[1])
index = json.loads((layout / "index.json").read_text())
man = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
records = []
for desc in man["layers"]:
    blob = open(layout / "blobs/sha256" / desc["digest"][7:], "rb")
    if desc["mediaType"].endswith("zstd"):
        stream = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
        tf = tarfile.open(fileobj=stream, mode="r|")
    else:
        tf = tarfile.open(fileobj=blob, mode="r|gz")
    for m in tf:
        records.append(
            (
                m.name,
                m.type,
                m.mode,
                m.uid,
                m.gid,
                m.size,
                m.mtime,
                m.linkname,
                m.devmajor,
                m.devminor,
                dict(m.pax_headers),
                m.offset_data,
            )
        )
print(len(records))
