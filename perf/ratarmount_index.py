#!/usr/bin/env python3
"""Baseline: build ratarmount's index of each layer blob (ratarmountcore's SQLiteIndexedTar,
the index `ratarmount` writes before mounting), with gzip seek points every 1 MiB as clipcy's
resume points and both cores (`-P 2`). Needs `pip install ratarmount` (perf/run.sh does).

  python perf/ratarmount_index.py BLOB...
"""

import sys
import tempfile
from pathlib import Path

from ratarmountcore.mountsource.formats.tar import SQLiteIndexedTar

with tempfile.TemporaryDirectory() as tmp:
    for i, blob in enumerate(sys.argv[1:]):
        src = SQLiteIndexedTar(
            blob,
            writeIndex=True,
            indexFilePath=str(Path(tmp) / f"layer{i}.index.sqlite"),
            gzipSeekPointSpacing=1 << 20,
            parallelization=2,
        )
        print(blob, len(list(src.list("/") or [])))
        src.__exit__(None, None, None)
