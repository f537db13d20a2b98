"""Following symlinks inside an image's tree, the way path resolution under a root works.

Used by the merge (an entry under a symlinked directory lands in its target) and by the
readers (cat and Archive.open follow links like open(2)); each supplies its own lookup.
"""

from __future__ import annotations

import os
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


def resolve_path(path: str | bytes, lookup: Callable[[bytes], tuple[str, bytes] | None],
                 follow_last: bool = False) -> bytes:
    """The path of the node that path names under POSIX resolution inside the image: every
    parent component that is a symlink is followed (so `/bin/sh` with `/bin -> usr/bin` is
    `/usr/bin/sh`), `..` goes up from where the links led; the last component is followed
    only with follow_last (stat -L) or a trailing slash, which also demands a directory.
    lookup(p) is (type, linkname) of the node at exactly p, or None. Raises ArchivePathError:
    no such path, not a directory, or too many levels of symbolic links."""
    from clipcy.errors import ArchivePathError

    raw = os.fsencode(path)
    shown = os.fsdecode(raw if raw.startswith(b"/") else b"/" + raw)
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    trailing = bool(parts) and (raw.endswith(b"/") or raw.endswith(b"/."))
    cur: list[bytes] = []
    kind = "dir"  # the root
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == b"..":
            if cur:
                cur.pop()
            kind = "dir"
            continue
        here = b"/" + b"/".join(cur + [part])
        found = lookup(here)
        if found is None:
            raise ArchivePathError(f"no such path in archive: {shown}")
        kind, target = found
        if kind == "symlink" and (parts or follow_last or trailing):
            hops += 1
            if hops > MAX_HOPS:
                raise ArchivePathError(f"too many levels of symbolic links: {shown}")
            if target.startswith(b"/"):
                cur = []
            parts[:0] = [p for p in target.split(b"/") if p not in (b"", b".")]
            kind = "dir"  # where the link points from: its parent, a directory
            continue
        if parts and kind != "dir":
            raise ArchivePathError(f"not a directory in archive: {shown}")
        cur.append(part)
    if trailing and kind != "dir":
        raise ArchivePathError(f"not a directory in archive: {shown}")
    return b"/" + b"/".join(cur)
