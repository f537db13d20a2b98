#!/usr/bin/env python3
"""List an unpacked tree as JSON lines, and compare two listings (stdlib only).

  tree.py rootfs DIR [--no-hash] [--no-root] > out.jsonl
      lstat every entry under DIR (symlinks not followed); one JSON object per line, keys
      sorted, lines sorted by the path's bytes. "/" (DIR itself) is the first line unless
      --no-root (a tar extracted into a fresh directory has no root entry of its own).
  tree.py compare EXPECTED ACTUAL [--no-mtime] [--ignore KEY]...
      Print "missing:", "extra:" and "differ:" lines and exit 1 on any difference.

build.sh runs `rootfs` on what umoci or GNU tar unpacked (the expected trees); the tests run
it on what clipcy extracted or mounted, or write the same records from `clipctl export`,
then `compare`.

Record keys:
  path      "/"-rooted; the name's bytes decoded as UTF-8 with surrogateescape, so a raw
            byte 0xE9 is "\\udce9" in the JSON and non-UTF-8 names survive
  type      dir, file, symlink, char, block, fifo, socket
  mode      st_mode & 0o7777 (setuid, setgid and sticky included)
  uid, gid  numeric
  size      st_size for files and symlinks (a symlink's is its target's length, as lstat
            says), 0 for anything else (a directory's st_size depends on the file system)
  mtime     whole seconds, floor (1700000000.75 -> 1700000000; -86400 stays)
  nlink     files: st_nlink; directories: 2 + number of subdirectories, computed from the
            tree (file systems disagree on what st_nlink says for a directory)
  ino       1, 2, 3... in path order, one per inode: hardlinked paths share the number of
            the first; compared as hardlink groups, so one extra entry does not cascade
  xattrs    {name: base64(value)}; security.selinux left out (the host's, not the image's)
  linkname  symlinks: the target as stored
  devmajor, devminor   char and block devices
  sha256    files: hex digest of the content (--no-hash leaves it out)

compare requires every key of the expected record; keys only the actual record has (an
export's layer and offset) are not compared, and sha256 only when the actual record has it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import sys
from typing import Any

TYPES = {
    stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char",
    stat.S_IFBLK: "block", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket",
}


def _xattrs(path: bytes) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {
        n: base64.b64encode(os.getxattr(path, n, follow_symlinks=False)).decode()
        for n in sorted(names) if n != "security.selinux"
    }


def _sha256(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def walk(root: str, with_hash: bool = True, with_root: bool = True) -> list[dict[str, Any]]:
    top = os.fsencode(root).rstrip(b"/") or b"/"
    rels, todo = [b"/"], [b""]
    while todo:
        rel = todo.pop()
        with os.scandir(top + rel) as it:
            for de in it:
                rels.append(rel + b"/" + de.name)
                if de.is_dir(follow_symlinks=False):
                    todo.append(rels[-1])
    rels.sort()
    sts = {rel: os.lstat(top if rel == b"/" else top + rel) for rel in rels}
    subdirs: dict[bytes, int] = {}
    for rel in rels[1:]:
        if stat.S_ISDIR(sts[rel].st_mode):
            parent = rel.rsplit(b"/", 1)[0] or b"/"
            subdirs[parent] = subdirs.get(parent, 0) + 1
    inos: dict[tuple[int, int], int] = {}
    out = []
    for rel in rels if with_root else rels[1:]:
        st, full = sts[rel], top if rel == b"/" else top + rel
        typ = TYPES.get(stat.S_IFMT(st.st_mode), "unknown")
        rec: dict[str, Any] = {
            "path": rel.decode("utf-8", "surrogateescape"),
            "type": typ,
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "size": st.st_size if typ in ("file", "symlink") else 0,
            "mtime": st.st_mtime_ns // 1_000_000_000,
            "nlink": 2 + subdirs.get(rel, 0) if typ == "dir" else st.st_nlink,
            "ino": inos.setdefault((st.st_dev, st.st_ino), len(inos) + 1),
            "xattrs": _xattrs(full),
        }
        if typ == "symlink":
            rec["linkname"] = os.readlink(full).decode("utf-8", "surrogateescape")
        if typ in ("char", "block"):
            rec["devmajor"], rec["devminor"] = os.major(st.st_rdev), os.minor(st.st_rdev)
        if typ == "file" and with_hash:
            rec["sha256"] = _sha256(full)
        out.append(rec)
    return out


def load(path: str) -> dict[str, dict[str, Any]]:
    """path -> record, in file order; a duplicate path is an error."""
    recs: dict[str, dict[str, Any]] = {}
    with open(path, encoding="ascii") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                rec = json.loads(line)
                if rec["path"] in recs:
                    raise SystemExit(f"{path}:{n}: duplicate path {rec['path']!r}")
                recs[rec["path"]] = rec
    return recs


def _groups(recs: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """path -> the other paths that share its inode."""
    by_ino: dict[Any, list[str]] = {}
    for p, rec in recs.items():
        if rec.get("ino") is not None:
            by_ino.setdefault(rec["ino"], []).append(p)
    return {p: sorted(x for x in by_ino.get(r.get("ino"), []) if x != p) for p, r in recs.items()}


def differences(expected: str, actual: str, ignore: set[str]) -> list[str]:
    exp, act = load(expected), load(actual)
    out = [f"missing: {p} ({r['type']})" for p, r in exp.items() if p not in act]
    out += [f"extra:   {p} ({r['type']})" for p, r in act.items() if p not in exp]
    eg, ag = _groups(exp), _groups(act)
    for p, e in exp.items():
        a = act.get(p)
        if a is None:
            continue
        for k in sorted(e):
            if k in ignore or k == "path" or (k == "sha256" and k not in a):
                continue
            if k == "ino":
                if eg[p] != ag[p]:
                    out.append(f"differ:  {p}: hardlinked with: expected {json.dumps(eg[p])}, "
                               f"got {json.dumps(ag[p])}")
            elif e[k] != a.get(k, "<absent>"):
                out.append(f"differ:  {p}: {k}: expected {json.dumps(e[k])}, "
                           f"got {json.dumps(a.get(k, '<absent>'))}")
    return out


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "rootfs" and set(argv[3:]) <= {"--no-hash", "--no-root"}:
        if not os.path.isdir(argv[2]):
            print(f"tree.py: {argv[2]}: not a directory", file=sys.stderr)
            return 1
        for rec in walk(argv[2], "--no-hash" not in argv[3:], "--no-root" not in argv[3:]):
            sys.stdout.write(json.dumps(rec, sort_keys=True, ensure_ascii=True) + "\n")
        return 0
    if len(argv) >= 4 and argv[1] == "compare":
        ignore, rest = set(), argv[4:]
        while rest:
            if rest[0] == "--no-mtime":
                ignore.add("mtime")
                rest = rest[1:]
            elif rest[0] == "--ignore" and len(rest) > 1:
                ignore.add(rest[1])
                rest = rest[2:]
            else:
                print(f"tree.py: unknown option {rest[0]!r}", file=sys.stderr)
                return 2
        diffs = differences(argv[2], argv[3], ignore)
        for d in diffs:
            print(d)
        if diffs:
            print(f"{len(diffs)} difference(s) between {argv[2]} and {argv[3]}")
            return 1
        print(f"same: {argv[2]} == {argv[3]}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
