"""Following symlinks inside an image's tree, the way path resolution under a root works.

Used by the merge (an entry under a symlinked directory lands in its target) and by the
readers (cat and Archive.open follow links like open(2)); each supplies its own lookup.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_HOPS = 40  # symlinks followed at most, as Linux's path resolution


def follow_symlinks(path: bytes, target_of: Callable[[bytes], bytes | None]) -> tuple[bytes, bool]:
    """path with every symlink among its components followed: '..' never climbs above '/', an
    absolute target restarts at '/'. target_of(p) is the target of the symlink at p, or None
    when p is something else. Returns (resolved path, True); after MAX_HOPS links (a loop) the
    remaining components are taken as they are and the flag is False."""
    parts = [p for p in path.split(b"/") if p not in (b"", b".")]
    cur: list[bytes] = []
    hops = 0
    complete = True
    while parts:
        part = parts.pop(0)
        if part == b"..":
            if cur:
                cur.pop()
            continue
        target = target_of(b"/" + b"/".join(cur + [part]))
        if target is not None and hops >= MAX_HOPS:
            complete, target = False, None
        if target is None:
            cur.append(part)
            continue
        hops += 1
        if target.startswith(b"/"):
            cur = []
        parts[:0] = [p for p in target.split(b"/") if p not in (b"", b".")]
    return b"/" + b"/".join(cur), complete
