"""Stand-ins shared by several test files (conftest puts tests/ on sys.path): deterministic
layer payloads, and a tar entry the merge accepts."""

from __future__ import annotations

import random
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
