"""The parser on the test corpus's single tars (tests/corpus/build.sh) against the oracle, and on
the peers' archives (tests/data/peers) against their verdicts."""

from __future__ import annotations

import base64
import bz2
import hashlib
import io
import json
import lzma
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from corpus.cases import TARS

from clipcy._select import PUREPYTHON
from clipcy.errors import TarError, TarHeaderError, TarLimitError
from clipcy.tar import tarparse

# Go archive/tar and CPython tarfile test archives, committed with their licenses
PEERS = Path(__file__).resolve().parent / "data" / "peers"


@pytest.fixture(params=["cython", "python"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "cython":
        if PUREPYTHON:
            pytest.skip("CLIPCY_PUREPYTHON is set")
        from clipcy.tar import _tarparse

        return _tarparse
    from clipcy.tar import _tarparse_py

    return _tarparse_py


def _parse(impl: ModuleType, data: bytes) -> list[Any]:
    p = impl.TarParser()
    out: list[Any] = p.feed(data)
    p.close()
    return out


def _norm(name: bytes) -> str:
    while name.startswith(b"./"):
        name = name[2:]
    return "/" + name.strip(b"/").decode("utf-8", "surrogateescape")


def _records(data: bytes, entries: list[Any], hashes: bool) -> dict[str, dict[str, Any]]:
    """The entries as tree.py's JSON records (the oracle extracted the tar with GNU tar)."""
    out: dict[str, dict[str, Any]] = {}
    group: dict[str, str] = {}
    for e in entries:
        path = _norm(e.name)
        if e.type == "hardlink":
            target = _norm(e.linkname)
            rec = dict(out[target])  # a hard link shares the target's inode
            group[path] = group.get(target, target)
        else:
            group[path] = path
            rec = {
                "type": e.type,
                "mode": e.mode,
                "uid": e.uid,
                "gid": e.gid,
                # lstat's size: a symlink's is the length of its target
                "size": {"file": e.size, "symlink": len(e.linkname)}.get(e.type, 0),
                "mtime": int(e.mtime // 1),
                "xattrs": {
                    k: base64.b64encode(v).decode()
                    for k, v in e.xattrs.items()
                    if k != "security.selinux"
                },
            }
            if e.type == "symlink":
                rec["linkname"] = e.linkname.decode("utf-8", "surrogateescape")
            if e.type in ("char", "block"):
                rec["devmajor"], rec["devminor"] = e.devmajor, e.devminor
            if e.type == "file" and hashes:
                h = hashlib.sha256()
                if e.sparse is None:
                    h.update(data[e.offset : e.offset + e.size])
                else:  # rebuild the file from its map: holes are zeros
                    pos, at = e.offset, 0
                    for off, n in e.sparse:
                        h.update(bytes(off - at))
                        h.update(data[pos : pos + n])
                        pos += n
                        at = off + n
                    h.update(bytes(e.size - at))
                rec["sha256"] = h.hexdigest()
        rec["group"] = group[path]
        out[path] = rec
    return out


@pytest.mark.parametrize("name", TARS)
def test_corpus_tar(impl: ModuleType, corpus: Path, name: str) -> None:
    data = (corpus / "tars" / f"{name}.tar").read_bytes()
    expected = [
        json.loads(line)
        for line in (corpus / "expected" / "tars" / f"{name}.jsonl").read_text().splitlines()
    ]
    hashes = any("sha256" in r for r in expected)  # huge-sparse-*: size and map only
    got = _records(data, _parse(impl, data), hashes)
    assert sorted(got) == sorted(r["path"] for r in expected)
    groups = {path: rec.pop("group") for path, rec in got.items()}
    by_ino: dict[int, str] = {}
    for want in expected:
        rec = got[want["path"]]
        # hard link groups: paths sharing an inode in the oracle share a group here
        assert groups[want["path"]] == groups[by_ino.setdefault(want["ino"], want["path"])]
        for key in ("ino", "nlink", "path"):
            want.pop(key)
        if want["type"] == "symlink":
            want.pop("mode")  # lstat() of a symlink says 0777 whatever the header stored
            rec.pop("mode")
        assert rec == want, want


def test_huge_sparse_never_materialised(impl: ModuleType, corpus: Path) -> None:
    for name in ("huge-sparse-oldgnu", "huge-sparse-pax"):
        data = (corpus / "tars" / f"{name}.tar").read_bytes()
        (e,) = [e for e in _parse(impl, data) if e.type == "file"]
        assert e.size == 9 << 30 and e.sparse is not None
        assert sum(n for _, n in e.sparse) < len(data)
        assert e.sparse[-1][0] + e.sparse[-1][1] <= e.size


# -- peers: Go archive/tar and CPython tarfile test archives ---------------------------------
def _peers() -> list[tuple[str, str, str]]:
    rows = []
    for line in (PEERS / "EXPECT.tsv").read_text().splitlines():
        if line.startswith("#") or line.startswith("file\t"):
            continue
        f = line.split("\t")
        rows.append((f[0], f[1], "\t".join(f[2:])))
    return rows


def _count(verdicts: str) -> int:
    """The member count a reader reported: CPython's 'N members', else GNU tar's 'ok N'."""
    cols = verdicts.split("\t")
    gnu, py = cols[1], cols[2]
    if py.endswith(" members"):
        return int(py.split()[0])
    assert gnu.startswith("ok "), verdicts
    return int(gnu.split()[1])


# Where clipcy's count deliberately differs from the verdict's reader (docs/COMPAT.md).
COUNT_EXCEPTIONS: dict[str, int] = {}


@pytest.mark.parametrize("peer", _peers(), ids=lambda p: p[0])
def test_peer(impl: ModuleType, peer: tuple[str, str, str]) -> None:
    name, expect, verdicts = peer
    raw = (PEERS / name).read_bytes()
    if name.endswith(".bz2"):
        raw = bz2.decompress(raw)
    elif name.endswith(".xz"):
        raw = lzma.decompress(raw)
    if expect == "ok":
        entries = _parse(impl, raw)
        assert len(entries) == COUNT_EXCEPTIONS.get(name, _count(verdicts))
        # walk_tar (plain stream, through the selector) agrees
        assert [e.as_tuple() for e in tarparse.walk_tar(io.BytesIO(raw))] == [
            e.as_tuple() for e in entries
        ]
    else:
        with pytest.raises(TarError):
            _parse(impl, raw)


def test_peer_details(impl: ModuleType) -> None:
    go = PEERS / "go" / "testdata"
    # pax global records apply to later entries (GNU tar, CPython); an empty value clears
    # them (POSIX), so file3 keeps its own name where CPython lists ""
    ents = _parse(impl, (go / "pax-global-records.tar").read_bytes())
    assert [(e.name, e.mtime) for e in ents] == [
        (b"global1", 1500000000.0),
        (b"file2", 1500000000.0),
        (b"file3", 1500000000.0),
        (b"file4", 1400000000.0),
    ]
    # non-regular types ignore their size field: no data follows
    ents = _parse(impl, (go / "hdr-only.tar").read_bytes())
    assert [e.type for e in ents[8:]] == [e.type for e in ents[:8]]
    assert all(e.size == 0 for e in ents if e.type != "file")
    # several 'L'/'K' headers: the last wins; several 'x' headers: the last replaces the others
    (e,) = _parse(impl, (go / "gnu-multi-hdrs.tar").read_bytes())
    assert (e.name, e.linkname) == (b"GNU2/GNU2/long-path-name", b"GNU4/GNU4/long-linkpath-name")
    (e,) = _parse(impl, (go / "pax-multi-hdrs.tar").read_bytes())
    assert (e.name, e.linkname) == (b"bar", b"PAX4/PAX4/long-linkpath-name")
    # a GNU long name is cut at its first NUL
    (e,) = _parse(impl, (go / "gnu-long-nul.tar").read_bytes())
    assert e.name == b"0123456789"
    # sparse 60 GB files: size and map only
    for n in ("gnu-sparse-big.tar", "pax-sparse-big.tar"):
        (e,) = _parse(impl, (go / n).read_bytes())
        assert e.size == 60000000000 and e.sparse is not None
    with pytest.raises(TarLimitError):
        _parse(impl, bz2.decompress((go / "pax-bad-hdr-large.tar.bz2").read_bytes()))
    with pytest.raises(TarHeaderError, match="bad pax mtime value"):
        _parse(impl, (go / "pax-bad-mtime-file.tar").read_bytes())
    # the truncated peers parse their headers, then fail on the missing data
    p = impl.TarParser()
    assert len(p.feed((go / "writer-big.tar").read_bytes())) == 1
    with pytest.raises(TarError, match="truncated tar data"):
        p.close()


# -- whole layer blobs through walk_tar --------------------------------------------------------
def _layers(layout: Path) -> list[Path]:
    """Layer blobs of every manifest index.json names (nested indexes followed)."""
    out: list[Path] = []
    todo = [json.loads((layout / "index.json").read_text())]
    while todo:
        doc = todo.pop()
        for d in doc.get("manifests", []):
            todo.append(json.loads(_blob(layout, d["digest"]).read_text()))
        for d in doc.get("layers", []):
            if _blob(layout, d["digest"]) not in out:
                out.append(_blob(layout, d["digest"]))
    return out


def _blob(layout: Path, digest: str) -> Path:
    algo, hexd = digest.split(":")
    return layout / "blobs" / algo / hexd


@pytest.mark.parametrize(
    "group",
    [("basic", "zstd", "plain", "docker"), ("multimember", "zstd-multiframe", "zstd-skippable")],
)
def test_corpus_layers_same_entries(corpus: Path, group: tuple[str, ...]) -> None:
    """The same tar behind gzip members, zstd frames (skippable first) and no compression."""
    listings = []
    for layout in group:
        layers = _layers(corpus / layout)
        assert layers
        listings.append(sorted([e.as_tuple() for e in tarparse.walk_tar(p)] for p in layers))
    assert all(x == listings[0] for x in listings[1:])
    assert sum(len(x) for x in listings[0]) > 100


def test_cpython_testtar_matches_tarfile(impl: ModuleType) -> None:
    """CPython's own test archive (ustar, gnu, pax, v7, sparse, suntar/xstar headers, umlauts)
    read by us and by tarfile: same members, owners, times, links and contents. Modes are
    compared as the 12 permission bits (tarfile keeps v7's file-type bits)."""
    import tarfile

    data = (PEERS / "cpython" / "testtar.tar").read_bytes()
    entries = _parse(impl, data)
    types = {
        tarfile.LNKTYPE: "hardlink",
        tarfile.SYMTYPE: "symlink",
        tarfile.CHRTYPE: "char",
        tarfile.BLKTYPE: "block",
        tarfile.DIRTYPE: "dir",
        tarfile.FIFOTYPE: "fifo",
    }
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tf:
        members = tf.getmembers()
        assert len(members) == len(entries) == 39
        for m, e in zip(members, entries, strict=True):
            t = types.get(m.type, "file")
            if m.name == "pax/regtype2":
                # a global `uname=` deletes the global uname (POSIX; docs/COMPAT.md), so the
                # header's own name stays; CPython stores "" as the value
                assert (m.uname, e.uname) == ("", "tarfile")
                m.uname = e.uname
            assert (
                e.name,
                e.type,
                e.mode,
                e.uid,
                e.gid,
                e.uname,
                e.gname,
                e.mtime,
                e.linkname,
            ) == (
                m.name.encode("utf-8", "surrogateescape"),
                t,
                m.mode & 0o7777,
                m.uid,
                m.gid,
                m.uname,
                m.gname,
                float(m.mtime),
                m.linkname.encode("utf-8", "surrogateescape"),
            )
            if t == "file":
                want = tf.extractfile(m).read()  # type: ignore[union-attr]
                got = bytearray(e.size)
                pos = e.offset
                for off, n in e.sparse or ((0, e.size),):
                    got[off : off + n] = data[pos : pos + n]
                    pos += n
                assert bytes(got) == want, m.name


def test_twins_agree_on_peers_and_tars(corpus: Path) -> None:
    """Same entries, or the same exception class and message, from both twins; whole buffer
    and 1..4096-byte pieces."""
    if PUREPYTHON:
        pytest.skip("CLIPCY_PUREPYTHON is set")
    import random

    from clipcy.tar import _tarparse, _tarparse_py

    def outcome(mod: ModuleType, data: bytes, seed: int) -> object:
        p = mod.TarParser()
        got: list[Any] = []
        try:
            if seed < 0:
                got += p.feed(data)
            else:
                rnd, pos = random.Random(seed), 0
                while pos < len(data):
                    n = rnd.randint(1, 4096)
                    got += p.feed(data[pos : pos + n])
                    pos += n
            p.close()
        except TarError as e:
            return (type(e).__name__, str(e), [x.as_tuple() for x in got])
        return [x.as_tuple() for x in got]

    files = sorted(PEERS.rglob("*.tar")) + sorted((corpus / "tars").glob("*.tar"))
    assert len(files) > 50
    for f in files:
        data = f.read_bytes()
        want = outcome(_tarparse, data, -1)
        for mod, seed in ((_tarparse_py, -1), (_tarparse, 1), (_tarparse_py, 2)):
            assert outcome(mod, data, seed) == want, (f.name, mod.__name__, seed)
