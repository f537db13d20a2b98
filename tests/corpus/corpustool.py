#!/usr/bin/env python3
"""The few things build.sh needs that no archive tool does (stdlib only).

It never writes a tar or compresses a layer: GNU tar, bsdtar, gzip, pigz, zstd, umoci and
skopeo do that. This file makes seeded file contents, writes the OCI JSON that points at
blobs those tools made, and checks every layout before a test sees it.

  corpustool.py bytes SEED SIZE KIND          SIZE bytes on stdout; KIND random|text|zeros
  corpustool.py tree DIR SEED NFILES TOTAL EPOCH
        a generated tree of about NFILES files (TOTAL bytes, log-normal sizes plus the edge
        sizes 0, 1, 511, 512, 513, 1024, 10240, 64 KiB, 1 MiB), nested directories,
        hardlinks and relative symlinks, every mtime derived from EPOCH
  corpustool.py dir2oci OUT TAG=DIR...        wrap `skopeo copy ... dir:DIR` outputs as layout OUT
                                              (the index entry takes the manifest's media type,
                                              so a Docker schema2 copy stays Docker-typed)
  corpustool.py oci2dir LAYOUT TAG DIR        the reverse, for one tag (skopeo's oci: transport
                                              cannot read Docker-typed index entries)
  corpustool.py replace-layers LAYOUT TAG I=FILE=MEDIATYPE...
        point layer I at the blob FILE (same tar, other compression: diff_ids stay valid)
  corpustool.py make-index OUT TAG SRC:SRCTAG=OS/ARCH[/VARIANT]...
        layout OUT whose TAG is a nested image index over the given single-platform images
  corpustool.py layers LAYOUT TAG             "I MEDIATYPE BLOBPATH" per layer
  corpustool.py validate LAYOUT...            oci-layout, index.json, every reachable blob's
        size and sha256, manifests and configs, and each decompressed layer's sha256 against
        the config's diff_id (gzip members, zstd frames incl. skippable ones, plain tar); the
        blob's magic bytes must agree with its media type. One line and exit 1 on a problem.

Contents come from random.Random(seed) (Mersenne Twister: integer seeding and getrandbits
are stable across CPython versions), never from the clock or /dev/urandom.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import zlib
from typing import Any

REF = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
CHUNK = 1 << 20


# -- contents ---------------------------------------------------------------------------------
_words_cache: dict[int, list[str]] = {}
_text_cache: dict[int, bytes] = {}


def words(seed: int) -> list[str]:
    if seed not in _words_cache:
        r = random.Random(seed * 7919 + 17)
        abc = "abcdefghijklmnopqrstuvwxyz"
        _words_cache[seed] = [
            "".join(r.choice(abc) for _ in range(r.randint(2, 11))) for _ in range(4000)
        ]
    return _words_cache[seed]


def text_pool(seed: int = 1) -> bytes:
    """~2 MiB of word salad, compressible about 3:1 like real text."""
    if seed not in _text_cache:
        r = random.Random(seed)
        w = words(seed)
        lines = [" ".join(r.choices(w, k=r.randint(4, 14))) for _ in range(45000)]
        _text_cache[seed] = ("\n".join(lines) + "\n").encode("ascii")
    return _text_cache[seed]


def content(seed: int, size: int, kind: str) -> bytes:
    if size <= 0:
        return b""
    if kind == "zeros":
        return bytes(size)
    r = random.Random(seed)
    if kind == "random":
        return r.randbytes(size)
    if kind == "text":  # slices of the pool at random offsets: repetitive at a distance
        pool, out = text_pool(), bytearray()
        while len(out) < size:
            at = r.randrange(0, len(pool) - 1)
            out += pool[at : at + min(size - len(out), r.randint(4096, 262144))]
        return bytes(out[:size])
    raise SystemExit(f"corpustool: unknown content kind {kind!r}")


def make_tree(top: str, seed: int, nfiles: int, total: int, epoch: int) -> None:
    r = random.Random(seed)
    os.makedirs(top, exist_ok=True)
    dirs = [""]
    for i in range(max(4, nfiles // 50)):  # nested up to depth 5
        parent = r.choice(dirs) if len(dirs) < 8 else r.choice(dirs[1:] + [""])
        if parent.count("/") >= 4:
            parent = ""
        d = f"{parent}/d{i:03d}-{r.choice(words(seed))}".lstrip("/")
        dirs.append(d)
        os.makedirs(os.path.join(top, d), exist_ok=True)
    sizes = [0, 1, 511, 512, 513, 1024, 10240, 65536, 1 << 20]  # block-boundary edges
    nlarge = max(1, nfiles // 1000)
    raw = [min(int(r.lognormvariate(8.0, 1.6)), 2 << 20) for _ in range(nfiles - 9 - nlarge)]
    large = max(1, int(total * 0.15) // nlarge)
    scale = (total - sum(sizes) - large * nlarge) / max(1, sum(raw))
    sizes += [max(0, int(s * scale)) for s in raw]
    sizes += [large + r.randrange(0, 4096) for _ in range(nlarge)]
    files = []
    for i, size in enumerate(sizes):
        d = r.choice(dirs)
        kind = r.choices(["random", "text", "zeros"], weights=[48, 47, 5])[0]
        ext = {"random": "bin", "text": "txt", "zeros": "dat"}[kind]
        rel = os.path.join(d, f"f{i:05d}.{ext}")
        with open(os.path.join(top, rel), "wb") as fh:
            fh.write(content(seed * 1000003 + i, size, kind))
        os.chmod(os.path.join(top, rel), r.choices([0o644, 0o755, 0o600, 0o444], [80, 12, 6, 2])[0])
        files.append(rel)
    links = []
    for i in range(max(1, nfiles // 500)):
        src, d = r.choice(files), r.choice(dirs)
        links.append(os.path.join(d, f"hl{i:04d}"))
        os.link(os.path.join(top, src), os.path.join(top, links[-1]))
    for i in range(max(1, nfiles // 100)):
        src, d = r.choice(files), r.choice(dirs)
        links.append(os.path.join(d, f"ln{i:04d}"))
        os.symlink(os.path.relpath(src, d or "."), os.path.join(top, links[-1]))
    # mtimes in creation order (readdir order differs between file systems), dirs last
    for rel in files + links:
        t = epoch - r.randrange(0, 300_000_000)
        os.utime(os.path.join(top, rel), (t, t), follow_symlinks=False)
    for d in sorted(dirs, key=lambda x: (-x.count("/"), x)):
        os.chmod(os.path.join(top, d), 0o755)
        os.utime(os.path.join(top, d), (epoch, epoch))


# -- OCI JSON ---------------------------------------------------------------------------------
def dumps(obj: Any) -> bytes:
    """Compact JSON, as Go's encoding/json writes it (umoci, skopeo)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def read_json(path: str) -> Any:
    with open(path, "rb") as fh:
        return json.loads(fh.read())


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def blob(layout: str, digest: str) -> str:
    algo, hexd = digest.split(":", 1)
    return os.path.join(layout, "blobs", algo, hexd)


def put_bytes(layout: str, data: bytes) -> tuple[str, int]:
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.dirname(blob(layout, d)), exist_ok=True)
    with open(blob(layout, d), "wb") as fh:
        fh.write(data)
    return d, len(data)


def put_file(layout: str, src: str) -> tuple[str, int]:
    d = "sha256:" + sha256_file(src)
    os.makedirs(os.path.dirname(blob(layout, d)), exist_ok=True)
    if not os.path.exists(blob(layout, d)):
        shutil.copyfile(src, blob(layout, d))
    return d, os.path.getsize(blob(layout, d))


def init_layout(layout: str) -> None:
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "wb") as fh:
        fh.write(dumps({"imageLayoutVersion": "1.0.0"}))


def write_index(layout: str, index: Any) -> None:
    with open(os.path.join(layout, "index.json"), "wb") as fh:
        fh.write(dumps(index))


def tagged(layout: str, tag: str) -> tuple[Any, dict[str, Any]]:
    index = read_json(os.path.join(layout, "index.json"))
    hits = [m for m in index["manifests"] if m.get("annotations", {}).get(REF) == tag]
    if len(hits) != 1:
        raise SystemExit(f"corpustool: {layout}: tag {tag!r} found {len(hits)} times")
    return index, hits[0]


def gc(layout: str) -> None:
    """Delete the blobs index.json no longer reaches."""
    keep, todo = set(), list(read_json(os.path.join(layout, "index.json"))["manifests"])
    while todo:
        desc = todo.pop()
        if desc["digest"] in keep:
            continue
        keep.add(desc["digest"])
        if desc.get("mediaType") in INDEXES:
            todo += read_json(blob(layout, desc["digest"]))["manifests"]
        elif desc.get("mediaType") in MANIFESTS:
            man = read_json(blob(layout, desc["digest"]))
            todo += [man["config"], *man["layers"]]
    root = os.path.join(layout, "blobs")
    for algo in sorted(os.listdir(root)):
        for name in sorted(os.listdir(os.path.join(root, algo))):
            if f"{algo}:{name}" not in keep:
                os.unlink(os.path.join(root, algo, name))


def dir2oci(out: str, pairs: list[str]) -> None:
    init_layout(out)
    entries = []
    for pair in pairs:
        tag, src = pair.split("=", 1)
        for name in sorted(os.listdir(src)):
            if len(name) == 64 and put_file(out, os.path.join(src, name))[0] != "sha256:" + name:
                raise SystemExit(f"corpustool: {src}/{name} does not match its name")
        with open(os.path.join(src, "manifest.json"), "rb") as fh:
            raw = fh.read()
        d, size = put_bytes(out, raw)
        mt = json.loads(raw).get("mediaType", OCI_MANIFEST)
        entries.append({"mediaType": mt, "digest": d, "size": size, "annotations": {REF: tag}})
    write_index(out, {"schemaVersion": 2, "manifests": entries})
    gc(out)


def oci2dir(layout: str, tag: str, out: str) -> None:
    _, desc = tagged(layout, tag)
    os.makedirs(out, exist_ok=True)
    shutil.copyfile(blob(layout, desc["digest"]), os.path.join(out, "manifest.json"))
    man = read_json(blob(layout, desc["digest"]))
    for d in [man["config"], *man["layers"]]:
        shutil.copyfile(blob(layout, d["digest"]), os.path.join(out, d["digest"].split(":")[1]))
    with open(os.path.join(out, "version"), "w") as fh:
        fh.write("Directory Transport Version: 1.1\n")


def replace_layers(layout: str, tag: str, specs: list[str]) -> None:
    index, desc = tagged(layout, tag)
    man = read_json(blob(layout, desc["digest"]))
    for spec in specs:
        num, path, mediatype = spec.split("=", 2)
        d, size = put_file(layout, path)
        man["layers"][int(num)].update(mediaType=mediatype, digest=d, size=size)
    desc["digest"], desc["size"] = put_bytes(layout, dumps(man))
    write_index(layout, index)
    gc(layout)


def make_index(out: str, tag: str, items: list[str]) -> None:
    init_layout(out)
    entries = []
    for item in items:
        src, plat = item.rsplit("=", 1)
        src_layout, src_tag = src.split(":", 1)
        parts = plat.split("/")
        platform = {"architecture": parts[1], "os": parts[0]}
        _, sdesc = tagged(src_layout, src_tag)
        man = read_json(blob(src_layout, sdesc["digest"]))
        cfg = read_json(blob(src_layout, man["config"]["digest"]))
        if (cfg.get("os"), cfg.get("architecture")) != (parts[0], parts[1]):
            raise SystemExit(f"corpustool: {src} is not {plat}")
        if len(parts) > 2:
            platform["variant"] = cfg["variant"] = parts[2]
        man["config"]["digest"], man["config"]["size"] = put_bytes(out, dumps(cfg))
        for layer in man["layers"]:
            put_file(out, blob(src_layout, layer["digest"]))
        d, size = put_bytes(out, dumps(man))
        entries.append({"mediaType": OCI_MANIFEST, "digest": d, "size": size, "platform": platform})
    nested = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    d, size = put_bytes(out, dumps(nested))
    write_index(out, {"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": d, "size": size, "annotations": {REF: tag}}]})
    gc(out)


def layers(layout: str, tag: str) -> None:
    _, desc = tagged(layout, tag)
    for i, layer in enumerate(read_json(blob(layout, desc["digest"]))["layers"]):
        print(i, layer["mediaType"], blob(layout, layer["digest"]))


# -- validation -------------------------------------------------------------------------------
class Invalid(Exception):
    pass


def _compression(mediatype: str) -> str:
    if not ("layer" in mediatype or "rootfs" in mediatype):
        raise Invalid(f"not a layer media type: {mediatype}")
    for suffix, kind in (("gzip", "gzip"), ("zstd", "zstd")):
        if mediatype.endswith(suffix):
            return kind
    return "none"


def _tar_digest(path: str, kind: str) -> str:
    """sha256 of the uncompressed tar: every gzip member (empty ones too), or `zstd -dc`
    (frames, skippable frames), or the bytes as they are."""
    h = hashlib.sha256()
    if kind == "zstd":
        p = subprocess.run(["zstd", "-q", "-d", "-c", path], stdout=subprocess.PIPE, check=True)
        h.update(p.stdout)
        return h.hexdigest()
    with open(path, "rb") as fh:
        if kind == "none":
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
            return h.hexdigest()
        d, pending, inside = zlib.decompressobj(31), b"", False
        while True:
            if not pending:
                pending = fh.read(CHUNK)
                if not pending:
                    break
            h.update(d.decompress(pending))
            inside = not d.eof
            # the next member starts in unused_data
            pending, d = (d.unused_data, zlib.decompressobj(31)) if d.eof else (b"", d)
        if inside:
            raise Invalid(f"{path}: truncated gzip member")
    return h.hexdigest()


MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}


def validate(layout: str) -> str:
    with open(os.path.join(layout, "oci-layout"), "rb") as fh:
        if json.loads(fh.read()).get("imageLayoutVersion") != "1.0.0":
            raise Invalid("oci-layout: imageLayoutVersion is not 1.0.0")
    nblobs = nlayers = 0
    checked: set[str] = set()

    def load(desc: dict[str, Any]) -> bytes:
        nonlocal nblobs
        p = blob(layout, desc["digest"])
        if not os.path.isfile(p):
            raise Invalid(f"missing blob {desc['digest']}")
        if os.path.getsize(p) != desc["size"]:
            raise Invalid(f"blob {desc['digest']}: size {os.path.getsize(p)}, "
                          f"descriptor {desc['size']}")
        if desc["digest"] not in checked:
            if "sha256:" + sha256_file(p) != desc["digest"]:
                raise Invalid(f"blob {desc['digest']}: content does not match its digest")
            checked.add(desc["digest"])
            nblobs += 1
        with open(p, "rb") as fh:
            return fh.read(64 << 10 if desc.get("mediaType") in INDEXES + MANIFESTS else 4)

    index = read_json(os.path.join(layout, "index.json"))
    if index.get("schemaVersion") != 2 or not isinstance(index.get("manifests"), list):
        raise Invalid("index.json: not a schemaVersion 2 image index")
    todo = list(index["manifests"])
    while todo:
        desc = todo.pop()
        mt = desc.get("mediaType")
        doc: Any = json.loads(load(desc)) if mt in INDEXES + MANIFESTS else None
        if mt in INDEXES:
            todo += doc["manifests"]
        elif mt in MANIFESTS:
            if doc.get("mediaType", mt) != mt:
                raise Invalid(f"manifest {desc['digest']}: media type {doc.get('mediaType')}, "
                              f"descriptor {mt}")
            load(doc["config"])
            cfg = read_json(blob(layout, doc["config"]["digest"]))
            diff_ids = cfg.get("rootfs", {}).get("diff_ids", [])
            if cfg.get("rootfs", {}).get("type") != "layers" or len(diff_ids) != len(doc["layers"]):
                raise Invalid(f"config {doc['config']['digest']}: rootfs does not match the layers")
            for layer, diff_id in zip(doc["layers"], diff_ids, strict=True):
                kind = _compression(layer["mediaType"])
                head = load(layer)
                skippable = head[1:4] == b"\x2a\x4d\x18" and 0x50 <= head[0] <= 0x5F
                if kind in MAGIC and not (head.startswith(MAGIC[kind]) or
                                          (kind == "zstd" and skippable)):
                    raise Invalid(f"layer {layer['digest']}: bytes are not {kind}")
                if kind == "none" and any(head.startswith(m) for m in MAGIC.values()):
                    raise Invalid(f"layer {layer['digest']}: compressed bytes in a plain tar layer")
                if "sha256:" + _tar_digest(blob(layout, layer["digest"]), kind) != diff_id:
                    raise Invalid(f"layer {layer['digest']}: uncompressed sha256 is not {diff_id}")
                nlayers += 1
        else:
            raise Invalid(f"index.json: unknown media type {mt}")
    return f"OK {layout}: {nblobs} blobs, {nlayers} layer checks"


def main(argv: list[str]) -> int:
    cmd, args = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
    if cmd == "bytes" and len(args) == 3:
        sys.stdout.buffer.write(content(int(args[0]), int(args[1]), args[2]))
    elif cmd == "tree" and len(args) == 5:
        make_tree(args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]))
    elif cmd == "dir2oci" and len(args) >= 2:
        dir2oci(args[0], args[1:])
    elif cmd == "oci2dir" and len(args) == 3:
        oci2dir(*args)
    elif cmd == "replace-layers" and len(args) >= 3:
        replace_layers(args[0], args[1], args[2:])
    elif cmd == "make-index" and len(args) >= 3:
        make_index(args[0], args[1], args[2:])
    elif cmd == "layers" and len(args) == 2:
        layers(*args)
    elif cmd == "validate" and args:
        for layout in args:
            try:
                print(validate(layout))
            except (Invalid, OSError, ValueError, KeyError, zlib.error,
                    subprocess.CalledProcessError) as e:
                print(f"corpustool: {layout}: invalid: {e}", file=sys.stderr)
                return 1
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
