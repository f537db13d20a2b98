"""atheris fuzz targets for clipcy's parsers of untrusted bytes.

    python fuzz/targets.py TARGET [libFuzzer flags] [CORPUS_DIR ...]

(fuzz/run.py seeds the corpora from the tests' data and picks the flags; use that.)

Targets (each one function of the fuzzer's bytes):
  tar         the compiled tar parser and its pure-Python twin on the same stream, fed in
              pieces of a fuzzed size: same entries, or the same exception class and message
  merge       the compiled overlay merge and its twin on 1-3 fuzzed layers of entries whose
              paths collide (whiteouts, opaque dirs, '..', hardlinks, symlinked parents):
              equal trees, or the same exception class and message
  archive     a .clip archive: open, walk, lookup, listdir, read every file (blobs from the
              shipped sample layout), verify
  checkpoint  the gzip resume-point indexer (clipcy.layers._checkpoint): output equal to
              zlib's; every
              recorded point resumes to the same bytes; fuzzed points/windows fail cleanly
  layout      OCI layout resolution: a fuzzed index.json, image index, manifest or config (its
              descriptor digests made to match), fuzzed tag/platform/reference strings

"Clean" means a ClipError subclass (clipcy/errors.py). Anything else (another exception, a
crash, a hang past -timeout, memory past -rss_limit_mb) is a finding: fuzz/run.py keeps the
input (WORKDIR/artifacts/); each finding becomes a regression test in tests/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports():
    import clipcy.image._merge_py as merge_py
    import clipcy.tar._tarparse_py as tar_py
    from clipcy.archive import reader as _reader  # noqa: F401  (instrumented for coverage)
    from clipcy.errors import ClipError
    from clipcy.image.layout import Layout, parse_layout_ref, resolve

import clipcy.image._merge as merge_c  # noqa: E402
import clipcy.layers._checkpoint as checkpoint  # noqa: E402  (compiled: not instrumented)
import clipcy.tar._tarparse as tar_c  # noqa: E402

logging.getLogger("clipcy").setLevel(logging.CRITICAL)  # the merge's warnings: not findings

SAMPLE = Path(str(resources.files("clipcy") / "sample"))
TMP = Path(tempfile.mkdtemp(prefix="clipcy-fuzz-"))
MAX_READ = 1 << 20  # bytes read per file by the archive target


# ---------------------------------------------------------------------------------------
# tar: both parsers agree


def _parse(mod: Any, data: bytes, piece: int, limits: dict[str, int]) -> tuple[Any, ...]:
    p = mod.TarParser(**limits)
    out: list[Any] = []
    try:
        for i in range(0, len(data), piece):
            out += [e.as_tuple() for e in p.feed(data[i : i + piece])]
        p.close()
    except ClipError as e:
        # (the entries of the failing feed() are not returned: which ones came before the
        # error depends on where the pieces end, so only the error is compared)
        return ("error", type(e).__name__, str(e))
    return ("ok", out)


def tar(data: bytes) -> None:
    if len(data) < 2:
        return
    piece = data[0] * 37 + 1
    small = data[1] & 1  # half the runs with small limits, to reach the limit paths
    limits = (
        dict(
            max_header=2048,
            max_path=300,
            max_link=200,
            max_depth=8,
            max_xattrs=3,
            max_xattr_size=64,
        )
        if small
        else {}
    )
    body = data[2:]
    whole = _parse(tar_c, body, max(len(body), 1), limits)
    split = _parse(tar_py, body, piece, limits)
    if whole != split:
        raise AssertionError(f"parsers disagree:\ncompiled {whole!r}\ntwin {split!r}")
    if _parse(tar_c, body, piece, limits) != whole:
        raise AssertionError("the compiled parser depends on how the stream is split")


# ---------------------------------------------------------------------------------------
# merge: the compiled overlay merge and its twin agree on the tree


# Path pieces that collide on purpose: whiteouts, opaque markers, dot-dot, empty components.
_PARTS = (b"a", b"b", b"c", b".wh.a", b".wh.b", b".wh..wh..opq", b"..", b".", b"", b".wh..wh.plnk")
_KINDS = ("file", "dir", "symlink", "hardlink", "char", "block", "fifo")


class _Entry:
    """What the merge reads of a tar entry (clipcy.image.merge.Entry)."""

    def __init__(self, fdp: Any, kind: str) -> None:
        self.type = kind
        self.name = _fuzz_path(fdp)
        self.linkname = _fuzz_path(fdp) if kind in ("symlink", "hardlink") else b""
        self.mode = fdp.ConsumeIntInRange(0, 0o7777)
        self.uid = fdp.ConsumeIntInRange(0, 70000)
        self.gid = fdp.ConsumeIntInRange(0, 70000)
        self.size = fdp.ConsumeIntInRange(0, 1 << 20) if kind == "file" else 0
        self.mtime = fdp.ConsumeIntInRange(-(1 << 34), 1 << 34) + fdp.ConsumeIntInRange(0, 9) / 10
        self.devmajor = self.devminor = 0
        self.xattrs = {"user.x": b"1"} if fdp.ConsumeBool() else {}
        self.offset = fdp.ConsumeIntInRange(0, 1 << 30)
        self.sparse = None


def _fuzz_path(fdp: Any) -> bytes:
    parts = [
        _PARTS[fdp.ConsumeIntInRange(0, len(_PARTS) - 1)]
        for _ in range(fdp.ConsumeIntInRange(1, 4))
    ]
    return (b"/" if fdp.ConsumeBool() else b"") + b"/".join(parts)


def merge(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    layers = []
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        layers.append(
            [
                _Entry(fdp, _KINDS[fdp.ConsumeIntInRange(0, len(_KINDS) - 1)])
                for _ in range(fdp.ConsumeIntInRange(0, 12))
            ]
        )
    results = []
    for mod in (merge_c, merge_py):
        try:  # fresh lists: apply_layer consumes them
            results.append(("ok", mod.merge_layers([list(x) for x in layers])))
        except ClipError as e:
            results.append(("error", type(e).__name__, str(e)))
    if results[0] != results[1]:
        raise AssertionError(f"merges disagree:\ncompiled {results[0]!r}\ntwin {results[1]!r}")


# ---------------------------------------------------------------------------------------
# archive: open, lookup, walk, read, verify


def archive(data: bytes) -> None:
    from clipcy.archive.reader import open_archive

    path = TMP / "fuzz.clip"
    path.write_bytes(data)
    try:
        with open_archive(path, layout=SAMPLE) as arc:
            _ = arc.metadata, arc.node_count, arc.format_version
            for i in range(min(arc.layer_count, 64)):
                arc.access(i)
            for n, node in enumerate(arc.walk()):
                if n > 10_000:
                    break
                again = arc.lookup(node.path)
                if again is None or again.path != node.path:
                    raise AssertionError(f"walk gave {node.path!r}, lookup {again!r}")
                if node.type == "dir":
                    arc.listdir(node.path)
                elif node.type == "file":
                    with arc.open(node.path) as f:
                        got = f.read(MAX_READ)
                    if len(got) != min(node.size, MAX_READ):
                        raise AssertionError(f"read {len(got)} of {node.size} bytes")
            arc.lookup(b"/no/such/path")
            arc.verify()
    except ClipError:
        pass


# ---------------------------------------------------------------------------------------
# checkpoint: the gzip indexer against zlib, and resuming at its points


def _zlib_members(data: bytes) -> bytes | None:
    """What zlib makes of a (multi-member) gzip stream; None when it refuses it."""
    out = []
    rest = data
    try:
        while rest:
            d = zlib.decompressobj(31)
            out.append(d.decompress(rest))
            if not d.eof:
                return None
            rest = d.unused_data
    except zlib.error:
        return None
    return b"".join(out)


def checkpoint_target(data: bytes) -> None:
    if len(data) < 3:
        return
    span = (data[0] + 1) * 512
    piece = data[1] * 61 + 1
    mode = data[2] & 3
    blob = data[3:]
    if mode == 3:  # fuzzed resume parameters on fuzzed bytes: a clean error or bytes
        fdp = atheris.FuzzedDataProvider(blob)
        off = fdp.ConsumeIntInRange(0, 1 << 16)
        bits = fdp.ConsumeIntInRange(0, 8)
        window = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40000))
        skip = fdp.ConsumeIntInRange(0, 1 << 16)
        n = fdp.ConsumeIntInRange(0, 1 << 16)
        rest = fdp.ConsumeBytes(1 << 20)
        fd = _tmpfd(rest)
        try:
            out = checkpoint.gzip_read(fd, off, bits, window, skip, n)
            if len(out) > n:
                raise AssertionError(f"gzip_read returned {len(out)} > {n} bytes")
        except (ClipError, ValueError):
            pass
        finally:
            os.close(fd)
        return
    if mode == 2:  # mostly-valid input: a real gzip stream of the fuzzed bytes
        blob = zlib.compress(blob, 6, wbits=31) * ((data[2] >> 2 & 1) + 1)
    ix = checkpoint.GzipIndexer(span, 0)
    out = []
    try:
        for i in range(0, len(blob), piece):
            out += [bytes(b) for b in ix.feed(blob[i : i + piece])]
        ix.finish()
    except ClipError:
        return
    got = b"".join(out)
    want = _zlib_members(blob)
    if want is not None and got != want:
        raise AssertionError("GzipIndexer output differs from zlib's")
    fd = _tmpfd(blob)
    try:
        for comp_off, bits, out_off, window in ix.points[:32]:
            n = min(len(got) - out_off, 4096)
            if n <= 0:
                continue
            again = checkpoint.gzip_read(fd, comp_off, bits, window, 0, n)
            if again != got[out_off : out_off + n]:
                raise AssertionError(f"resuming at {comp_off}/{bits} gives other bytes")
    finally:
        os.close(fd)


def _tmpfd(data: bytes) -> int:
    path = TMP / "blob"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


# ---------------------------------------------------------------------------------------
# layout: index.json, image index, manifest, config


def _sample_docs() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    index = json.loads((SAMPLE / "index.json").read_bytes())
    mdesc = index["manifests"][0]
    manifest = json.loads(_blob(SAMPLE, mdesc["digest"]))
    config = json.loads(_blob(SAMPLE, manifest["config"]["digest"]))
    return index, manifest, config


def _blob(root: Path, digest: str) -> bytes:
    return (root / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def _put(root: Path, data: bytes) -> dict[str, Any]:
    d = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256" / d).write_bytes(data)
    return {"digest": "sha256:" + d, "size": len(data)}


def layout(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 4)
    tag = fdp.ConsumeUnicodeNoSurrogates(12) if fdp.ConsumeBool() else None
    plat = fdp.ConsumeUnicodeNoSurrogates(20) if fdp.ConsumeBool() else None
    ref = fdp.ConsumeUnicodeNoSurrogates(40)
    doc = fdp.ConsumeBytes(1 << 20)
    try:
        parse_layout_ref(ref, tag)
    except ClipError:
        pass
    root = TMP / "layout"
    if root.exists():
        shutil.rmtree(root)
    (root / "blobs" / "sha256").mkdir(parents=True)
    shutil.copy(SAMPLE / "oci-layout", root / "oci-layout")
    index, manifest, config = _sample_docs()
    for layer in manifest["layers"]:  # layers are located, not read, by resolve()
        (root / "blobs" / "sha256" / layer["digest"].split(":")[1]).write_bytes(b"")
    mtype = "application/vnd.oci.image.manifest.v1+json"
    if which == 0:  # index.json itself
        (root / "index.json").write_bytes(doc)
    else:
        if which == 1:  # the config
            cdesc = _put(root, doc)
            manifest = dict(manifest, config=dict(manifest["config"], **cdesc))
            top = dict(_put(root, json.dumps(manifest).encode()), mediaType=mtype)
        elif which == 2:  # the manifest
            _put(root, json.dumps(config).encode())
            top = dict(_put(root, doc), mediaType=mtype)
        else:  # an image index (3) or a manifest whose media type is left to be guessed (4)
            _put(root, json.dumps(config).encode())
            _put(root, json.dumps(manifest).encode())
            top = _put(root, doc)
            if which == 3:
                top["mediaType"] = "application/vnd.oci.image.index.v1+json"
        top["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
        (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    try:
        lay = Layout(root)
        image = resolve(lay, tag, None, plat)
        for info in image.layers:
            if not str(info.path).startswith(str(root / "blobs")):
                raise AssertionError(f"layer path {info.path} outside the layout")
    except ClipError:
        pass


TARGETS = {
    "tar": tar,
    "merge": merge,
    "archive": archive,
    "checkpoint": checkpoint_target,
    "layout": layout,
}


def main() -> None:
    name = sys.argv[1]
    target = TARGETS[name]
    # coverage feedback from every Python function loaded (clipcy's pure parts, the twins,
    # these targets); the compiled modules are not instrumented
    atheris.instrument_all()
    # argv[0] is what libFuzzer re-runs for -jobs (fuzz/run.py points it at a wrapper)
    argv0 = os.environ.get("CLIPCY_FUZZ_ARGV0", sys.argv[0])
    atheris.Setup([argv0, *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
