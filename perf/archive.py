"""Archive writer/reader benchmark on a synthetic 150,000-node Debian-like tree.

    /work/venv/bin/python perf/archive.py [--nodes 150000] [--out perf/RESULTS-archive.md]

Builds the tree (deterministic: fixed seed), encodes it with the compiled writer and the
pure-Python twin (timing each, checking the bytes are identical), writes the archive and
measures bytes per node, open + one lookup in a fresh process, listdir of a 1000-entry
directory, and a full walk. Appends nothing: rewrites the results file as a markdown table.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import runinfo

from clipcy.archive import _writer, _writer_py
from clipcy.archive.reader import open_archive
from clipcy.layers.access import LayerAccess
from clipcy.node import Node

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SYL = ("lib", "gnu", "ssl", "x", "core", "util", "py", "perl", "gtk", "dbus", "sys", "net",
       "font", "cups", "xml", "z", "bz", "lz", "ma", "tiny", "pam", "krb", "ldap", "sasl",
       "curl", "gcc", "std", "c", "apt", "deb", "conf", "glib", "cairo", "pango", "har")
LOCALES = ("de", "fr", "es", "it", "ja", "pt_BR", "ru", "zh_CN", "sv", "pl", "nl", "cs",
           "fi", "da", "uk", "tr", "ko", "hu", "ca", "el")


def _pkg(rng: random.Random) -> str:
    name = "".join(rng.choice(SYL) for _ in range(rng.randint(1, 3)))
    return name + rng.choice(("", "", "-common", "-dev", "-bin", "-data", "3", "6", "2.0-0"))


def make_tree(target: int, seed: int = 1) -> tuple[list[Node], str]:
    """(nodes sorted by path with inodes assigned, path of a 1000-entry directory).

    About 3,000 directories, the rest files (5% symlinks, a few hardlinks and xattrs) spread
    over them like a Debian-based image: many small dirs, a few very large ones.
    """
    rng = random.Random(seed)
    pkgs: list[str] = []
    seen: set[str] = set()
    while len(pkgs) < 1000:
        p = _pkg(rng)
        if p not in seen:
            seen.add(p)
            pkgs.append(p)
    # (directory, weight, name maker): files are drawn into directories by weight
    pools: list[tuple[str, float, str]] = [
        ("/usr/bin", 3, "bin"), ("/usr/sbin", 0.5, "bin"),
        ("/usr/lib/x86_64-linux-gnu", 8, "so"),
    ]
    pools += [(f"/usr/share/locale/{loc}/LC_MESSAGES", 0.6, "mo") for loc in LOCALES]
    pools += [(f"/usr/share/man/man{k}", 1.2, "man") for k in range(1, 9)]
    for p in rng.sample(pkgs, 350):
        mod = p.replace("-", "_").replace(".", "_")
        base = f"/usr/lib/python3/dist-packages/{mod}"
        pools.append((base, 0.4, "py"))
        for _ in range(rng.randint(0, 3)):
            pools.append((f"{base}/{rng.choice(SYL)}{rng.randint(0, 9)}", 0.15, "py"))
    for p in rng.sample(pkgs, 250):
        pools.append((f"/usr/include/{p}", 0.2, "h"))
    for p in rng.sample(pkgs, 300):
        for sub in rng.sample(("icons", "data", "templates", "help", "scripts"), 2):
            pools.append((f"/usr/share/{p}/{sub}", 0.2, "data"))
    for p in rng.sample(pkgs, 150):
        pools.append((f"/etc/{p}", 0.05, "conf"))
    entries: dict[bytes, str] = {}  # path -> kind
    for p in pkgs:  # /usr/share/doc: exactly 1000 package directories
        for f in ("copyright", "changelog.Debian.gz", "NEWS.gz")[: rng.randint(1, 3)]:
            entries[f"/usr/share/doc/{p}/{f}".encode()] = "file"
    dirs = {"/"}
    for d, _, _ in pools:
        dirs.add(d)
    for p in list(entries) + [d.encode() for d in dirs]:
        parts = os.fsdecode(p).split("/")
        for i in range(2, len(parts)):
            dirs.add("/".join(parts[:i]))
    weights = [w for _, w, _ in pools]
    cum = list(itertools.accumulate(weights))
    while len(entries) + len(dirs) < target:
        d, _, kind = pools[bisect.bisect(cum, rng.random() * cum[-1])]
        stem = f"{rng.choice(SYL)}{rng.choice(SYL)}{rng.randint(0, 999)}"
        name = {"bin": stem, "so": f"lib{stem}.so.{rng.randint(0, 9)}.{rng.randint(0, 30)}",
                "mo": f"{stem}.mo", "man": f"{stem}.{rng.randint(1, 8)}.gz",
                "py": f"{stem}.py", "h": f"{stem}.h", "conf": f"{stem}.conf",
                "data": f"{stem}.{rng.choice(('png', 'svg', 'xml', 'json'))}"}[kind]
        path = f"{d}/{name}".encode()
        if path in entries:
            continue
        r = rng.random()
        if kind == "so" and r < 0.3:
            entries[path] = "symlink"
        elif kind == "bin" and r < 0.05 and entries:
            entries[path] = "hardlink"
        else:
            entries[path] = "file"
    allents = sorted([(d.encode(), "dir") for d in dirs] + list(entries.items()))
    subdirs: dict[bytes, int] = {}
    for d in dirs:
        if d != "/":
            parent = d.rsplit("/", 1)[0] or "/"
            subdirs[parent.encode()] = subdirs.get(parent.encode(), 0) + 1
    nodes: list[Node] = []
    bins: list[Node] = []
    offset = 0
    ino = 0
    for path, kind in allents:
        mtime = 1_700_000_000 + rng.randint(-10**7, 0)
        if kind == "hardlink" and bins:
            src = rng.choice(bins)
            src.nlink += 1
            # every path of the inode carries the final link count: patched below
            nodes.append(Node(path, "file", src.mode, 0, 0, src.mtime_sec, size=src.size,
                              ino=src.ino, layer=src.layer, offset=src.offset))
            continue
        ino += 1
        if kind == "dir":
            n = Node(path, "dir", 0o755, 0, 0, mtime, ino=ino, nlink=2 + subdirs.get(path, 0))
        elif kind == "symlink":
            target = path.rsplit(b"/", 1)[1].rsplit(b".", 1)[0]
            n = Node(path, "symlink", 0o777, 0, 0, mtime, linkname=target, ino=ino)
        else:
            size = int(rng.lognormvariate(8, 2.2))
            offset += 512 + (size + 511) // 512 * 512
            isbin = b"/bin/" in path or b"/sbin/" in path
            xattrs = {"security.capability": b"\x01\x00\x00\x02" + bytes(16)} \
                if isbin and rng.random() < 0.02 else {}
            n = Node(path, "file", 0o755 if isbin else 0o644, 0, 0, mtime,
                     rng.randrange(10**9) if rng.random() < 0.3 else 0, size=size,
                     xattrs=xattrs, ino=ino, layer=rng.randrange(3), offset=offset)
            if isbin:
                bins.append(n)
        nodes.append(n)
    links = {n.ino: n.nlink for n in bins if n.nlink > 1}
    for n in nodes:
        if n.type == "file" and n.ino in links:
            n.nlink = links[n.ino]
    return nodes, "/usr/share/doc"


def make_access(rng: random.Random) -> list[LayerAccess]:
    """Three layers: gzip with resume points every 1 MiB (text-like windows), zstd frames."""
    words = [bytes(rng.choice(b"abcdefghij ") for _ in range(rng.randint(2, 9)))
             for _ in range(3000)]
    out = []
    for _ in range(2):
        pts = []
        for i in range(60):
            win = b" ".join(rng.choice(words) for _ in range(7000))[:32768] if i else b""
            pts.append((i * 400_000 + 10, i % 8 if i else 0, i << 20, win))
        out.append(LayerAccess("gzip", 1 << 20, pts))
    out.append(LayerAccess("zstd", 0, [], [(i * 900_000, 900_000, i << 21, 1 << 21)
                                          for i in range(40)]))
    return out


LOOKUP = """
import sys, time
t0 = time.perf_counter()
from clipcy.archive.reader import open_archive
t1 = time.perf_counter()
a = open_archive(sys.argv[1])
n = a.lookup(sys.argv[2])
t2 = time.perf_counter()
assert n is not None
print((t1 - t0) * 1e3, (t2 - t1) * 1e3)
"""


def _median_ms(fn, k: int) -> float:
    ts = []
    for _ in range(k):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=150_000)
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS-archive.md")
    args = ap.parse_args()

    t = time.perf_counter()
    nodes, bigdir = make_tree(args.nodes)
    access = make_access(random.Random(2))
    build_s = time.perf_counter() - t
    meta = {"layers": [{"digest": f"sha256:{i:064x}", "size": 1} for i in range(3)],
            "config": {"architecture": "amd64", "os": "linux"}}

    times: dict[str, float] = {}
    blobs: dict[str, bytes] = {}
    for name, mod in (("cython", _writer), ("python", _writer_py)):
        t = time.perf_counter()
        blobs[name] = mod.encode_archive(meta, nodes, access)
        times[name] = time.perf_counter() - t
        t = time.perf_counter()
        blocks = mod.encode_blocks(nodes)
        times[name + "_records"] = time.perf_counter() - t
    assert blobs["cython"] == blobs["python"], "writers differ"
    data = blobs["cython"]
    raw_records = sum(len(r) for _, _, r in blocks)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.clip")
        with open(path, "wb") as f:
            f.write(data)
        probe = nodes[len(nodes) * 2 // 3].path.decode()
        imports, opens = [], []
        for _ in range(9):
            out = subprocess.run([sys.executable, "-c", LOOKUP, path, probe], check=True,
                                 capture_output=True, text=True).stdout.split()
            imports.append(float(out[0]))
            opens.append(float(out[1]))
        with open_archive(path) as a:
            nblocks = len(a._blocks)
            meta_len = a._sections[1][1]
            idx_len = a._sections[2][1]
            blk_len = a._sections[3][1]
            acc_len = a._sections[5][1]

        def listdir_cold() -> None:
            with open_archive(path) as a:
                names = a.listdir(bigdir)
            assert len(names) == 1000, len(names)

        def open_only() -> None:
            open_archive(path).close()

        def walk_all() -> None:
            with open_archive(path) as a:
                assert sum(1 for _ in a.walk()) == len(nodes)

        def verify() -> None:
            with open_archive(path) as a:
                a.verify()

        listdir_ms = _median_ms(listdir_cold, 7) - _median_ms(open_only, 7)
        walk_ms = _median_ms(walk_all, 3)
        verify_ms = _median_ms(verify, 3)

    commit, cpu = runinfo.commit(), runinfo.cpu_model()
    n = len(nodes)
    hardlinked = sum(x.type == "file" and x.nlink > 1 for x in nodes)
    rows = [
        ("nodes (dirs / files / symlinks / hardlinked paths)",
         f"{n} ({sum(x.type == 'dir' for x in nodes)} / {sum(x.type == 'file' for x in nodes)}"
         f" / {sum(x.type == 'symlink' for x in nodes)} / {hardlinked})"),
        ("archive size", f"{len(data)} bytes ({nblocks} node blocks)"),
        ("node records raw (before zstd)", f"{raw_records / n:.1f} bytes/node"),
        ("node index + blocks (compressed)", f"{(idx_len + blk_len) / n:.1f} bytes/node "
         f"(index {idx_len}, blocks {blk_len})"),
        (f"whole file / node (incl. {acc_len / 1024:.0f} KiB access data, metadata "
         f"{meta_len} B)", f"{len(data) / n:.1f} bytes/node"),
        ("encode_archive, Cython writer", f"{times['cython'] * 1e3:.0f} ms"),
        ("encode_archive, Python twin", f"{times['python'] * 1e3:.0f} ms "
         f"({times['python'] / times['cython']:.2f}x)"),
        ("record encoding only (encode_blocks), Cython / Python",
         f"{times['cython_records'] * 1e3:.0f} / {times['python_records'] * 1e3:.0f} ms "
         f"({times['python_records'] / times['cython_records']:.1f}x)"),
        ("byte-identical output", "yes"),
        ("fresh process: import clipcy.archive.reader (median of 9)",
         f"{statistics.median(imports):.1f} ms"),
        ("fresh process: open_archive + one lookup (median of 9)",
         f"{statistics.median(opens):.2f} ms (min {min(opens):.2f}, max {max(opens):.2f})"),
        (f"listdir {bigdir} (1000 entries, cold cache)", f"{listdir_ms:.1f} ms"),
        ("walk() of all nodes (median of 3)", f"{walk_ms:.0f} ms"),
        ("verify() (median of 3)", f"{verify_ms:.0f} ms"),
    ]
    lines = [
        "# Archive format benchmark (perf/archive.py)",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- commit: {commit}",
        f"- machine: {cpu}, {os.cpu_count()} cores (shared with other jobs), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- data: synthetic Debian-like tree, seed 1, built in {build_s:.1f} s "
        f"(`python perf/archive.py --nodes {args.nodes}`)",
        "",
        "| measure | result |",
        "|---|---|",
    ] + [f"| {k} | {v} |" for k, v in rows]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
