"""Stand-ins shared by several test files (conftest puts tests/ on sys.path): deterministic
layer payloads, and a tar entry the merge accepts."""

from __future__ import annotations

import gc
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any


def payload(seed: int, size: int) -> bytes:
    """Deterministic mix of word text and random bytes (both compress very differently)."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 10)))
             for _ in range(3000)]
    parts: list[bytes] = []
    total = 0
    while total < size:
        if rnd.random() < 0.3:
            part = rnd.randbytes(rnd.randint(100, 40000))
        else:
            part = b" ".join(rnd.choices(words, k=rnd.randint(50, 6000))) + b"\n"
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


@dataclass
class E:
    """A parsed tar entry as the merge reads it (the fields of clipcy.image.merge's Entry)."""

    name: bytes
    type: str = "file"
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: float = 1.0
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    offset: int = 0
    sparse: Any = None


def open_fds() -> set[str]:
    """The fds this process has open (their numbers)."""
    return set(os.listdir("/proc/self/fd"))


def leaked_fds(before: set[str]) -> set[str]:
    """The fds open now that were not open before. An fd that another thread of the test
    process (a server or pool left by an earlier test in this worker) has open for a moment
    is not a leak: new fds must stay for 2 s, through a garbage collection, to count. An
    object whose finalizer closes it (a file, an Archive) lost to an interrupt as it was
    returned is closed by the collector, as it would be in the program."""
    new = open_fds() - before
    if not new:
        return new
    gc.collect()
    deadline = time.monotonic() + 2.0
    while True:
        new = open_fds() - before
        if not new or time.monotonic() >= deadline:
            return new
        time.sleep(0.01)
