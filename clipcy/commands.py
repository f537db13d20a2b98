"""The clipctl subcommands' work (cli.py holds only the argparse side)."""

from __future__ import annotations

import os
import stat as statmod
import sys
import time

from clipcy.errors import ClipError
from clipcy.logs import log, step  # (log imports logging only when it logs)
from clipcy.node import BLOCK, CHAR, DIR, FIFO, FILE, SYMLINK, Node

# Start-up: a plain `clipctl cat` imports only what reading a local archive needs; the
# modules of other commands (json, export, progress, tempfile, pathlib, the remote stores)
# are imported by the functions that use them.
TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    import argparse  # (the handlers take its Namespace; cli.py parses)
    from pathlib import Path
    from typing import Any

    from clipcy.archive.reader import Archive
    from clipcy.storage.registry import RemoteOptions

_TYPE_CHAR = {DIR: "d", FILE: "-", SYMLINK: "l", CHAR: "c", BLOCK: "b", FIFO: "p"}
_TYPE_BITS = {
    DIR: statmod.S_IFDIR,
    FILE: statmod.S_IFREG,
    SYMLINK: statmod.S_IFLNK,
    CHAR: statmod.S_IFCHR,
    BLOCK: statmod.S_IFBLK,
    FIFO: statmod.S_IFIFO,
}


def open_archive(path: str, *, storage: str | None = None,
                 remote: RemoteOptions | None = None) -> Archive:
    """The archive at path, or an image reference's (docker://HOST/REPO:TAG, by
    clipcy.publish, imported only then: a local archive opens without it)."""
    if path.startswith("docker://"):
        from clipcy.publish import open_archive as open_any
    else:
        from clipcy.archive.reader import open_archive as open_any
    return open_any(path, storage=storage, remote=remote)


def _print_json(obj: Any) -> None:
    import json

    json.dump(obj, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# -- index-layout --------------------------------------------------------------------------


def cmd_index_layout(args: argparse.Namespace) -> int:
    from clipcy.image.cache import default_cache_dir
    from clipcy.image.indexer import create_index_only_archive_from_oci_layout
    from clipcy.limits import parse_overrides
    from clipcy.progress import make_reporter

    if args.workers is not None and args.workers < 1:
        raise ClipError("--workers must be at least 1")
    if args.checkpoint_mib is not None and not 0 < args.checkpoint_mib <= 1024:
        raise ClipError("--checkpoint-mib must be more than 0 and at most 1024")
    limits = parse_overrides(args.limit)
    remote = None
    if args.authfile is not None:  # urllib3 and the rest only for a registry
        from clipcy.storage.registry import RemoteOptions

        remote = RemoteOptions(authfile=args.authfile, cache=False)
    reporter = make_reporter(args.progress)
    try:
        summary = create_index_only_archive_from_oci_layout(
            args.layout,
            args.tag,
            args.out,
            platform=args.platform,
            storage_ref=args.storage_ref,
            verify=args.verify,
            digest=args.digest,
            workers=args.workers,
            file_digests=args.file_digests,
            checkpoint_span=int(args.checkpoint_mib * (1 << 20)) if args.checkpoint_mib else None,
            cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
            progress=reporter,
            limits=limits,
            prefetch=args.prefetch,
            check_storage=args.check_storage,
            remote=remote,
        )
    finally:
        if reporter is not None:
            reporter.close()
    if args.json:
        _print_json(summary.as_dict())
    else:
        pct = 100.0 * summary.archive_size / summary.image_size if summary.image_size else 0.0
        mbs = summary.bytes_indexed / (1 << 20) / summary.seconds if summary.seconds else 0.0
        print(
            f"wrote {summary.archive}: {summary.node_count} nodes from {summary.layer_count} "
            f"layers, {human(summary.archive_size)} ({pct:.2f}% of "
            f"{human(summary.image_size)}), {mbs:.0f} MiB/s"
        )
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from clipcy.image.indexer import (
        create_index_only_archive_from_oci_layout,
        create_index_only_archive_from_registry,
    )
    from clipcy.limits import parse_overrides
    from clipcy.progress import make_reporter

    if args.workers is not None and args.workers < 1:
        raise ClipError("--workers must be at least 1")
    if args.checkpoint_mib is not None and not 0 < args.checkpoint_mib <= 1024:
        raise ClipError("--checkpoint-mib must be more than 0 and at most 1024")
    limits = parse_overrides(args.limit)
    remote = registry_options(args)
    from_registry = args.image.startswith("docker://")
    push = None
    if args.push is not None:
        if not from_registry:
            raise ClipError("--push needs an image in a registry (docker://...); push a "
                            "layout's archive with clipctl push")
        from clipcy.storage.artifact import parse_image_ref

        repo = parse_image_ref(args.image).repo.text
        push = f"{repo}:{args.push}" if args.push else repo
        parse_image_ref(push, default_tag=None)  # a bad TAG fails before the indexing
    reporter = make_reporter(args.progress)
    common: dict[str, Any] = dict(
        platform=args.platform, storage_ref=args.storage_ref, verify=args.verify,
        workers=args.workers, file_digests=args.file_digests,
        checkpoint_span=int(args.checkpoint_mib * (1 << 20)) if args.checkpoint_mib else None,
        progress=reporter, limits=limits, prefetch=args.prefetch,
        check_storage=args.check_storage, remote=remote)
    try:
        if from_registry:
            summary = create_index_only_archive_from_registry(args.image, args.out, **common)
        else:
            from clipcy.image.cache import default_cache_dir

            summary = create_index_only_archive_from_oci_layout(
                args.image, None, args.out, cache_dir=default_cache_dir(), **common)
    finally:
        if reporter is not None:
            reporter.close()
    doc = summary.as_dict()
    if push is not None:
        from clipcy.publish import push_archive

        with step(f"push {args.out} to {push}"):
            done = push_archive(args.out, push, remote=remote)
        doc["pushed"] = {"artifact": done.artifact, "tag": done.tag, "subject": done.subject,
                         "referrers": done.referrers, "uploaded": done.uploaded,
                         "requests": done.requests}
    if args.json:
        _print_json(doc)
        return 0
    pct = 100.0 * summary.archive_size / summary.image_size if summary.image_size else 0.0
    mbs = summary.bytes_indexed / (1 << 20) / summary.seconds if summary.seconds else 0.0
    print(
        f"wrote {summary.archive}: {summary.node_count} nodes from {summary.layer_count} "
        f"layers, {human(summary.archive_size)} ({pct:.2f}% of "
        f"{human(summary.image_size)}), {mbs:.0f} MiB/s"
    )
    if push is not None:
        print(f"pushed {args.out} as {done.artifact}, tagged {done.tag}, for image "
              f"{done.subject}")
    return 0


# -- inspect -------------------------------------------------------------------------------


def _prefetch_info(arc: Archive) -> dict[str, int] | None:
    """The stored prefetch list: how many files and bytes it covers (None: no list)."""
    from clipcy.archive.prefetch import coverage

    positions = arc.prefetch_positions()
    if positions is None:
        return None
    files, size = coverage(arc, positions)
    return {"files": files, "bytes": size}


def inspect_dict(arc: Archive) -> dict[str, Any]:
    md = arc.metadata
    config = md.get("config") or {}
    layers = []
    counts: dict[str, int] = dict(md.get("node_counts") or {})
    if not counts:  # archives written without the counts (not by index-layout): walk
        for node in arc.walk():
            counts[node.type] = counts.get(node.type, 0) + 1
    for i, layer in enumerate(md.get("layers", [])):
        acc = arc.access(i)
        if acc.kind == "gzip" and len(acc.points) <= 1:
            seek = "gzip: read from its start (small layer)"
        elif acc.kind == "gzip":
            seek = f"gzip: {len(acc.points)} resume points every {acc.span / 2**20:g} MiB"
        elif acc.kind == "zstd":
            seek = (
                f"zstd: {len(acc.frames)} frames"
                if len(acc.frames) > 1
                else "zstd: single frame (read from its start)"
            )
        else:
            seek = "plain: direct offsets"
        layers.append(dict(layer, index=i, seekable=seek))
    image_size = md.get("image_size") or 0
    return {
        "archive": {
            "size": arc.size,
            "format_version": arc.format_version,
            "percent_of_image": round(100.0 * arc.size / image_size, 4) if image_size else None,
        },
        "manifest_digest": md.get("manifest_digest"),
        "config_digest": md.get("config_digest"),
        "tag": md.get("tag"),
        "source_ref": md.get("source_ref"),
        "storage_ref": md.get("storage_ref"),
        "platform": md.get("platform"),
        "created": config.get("created"),
        "config": config.get("config", {}),
        "layers": layers,
        "image_size": image_size,
        "nodes": {"total": arc.node_count, **dict(sorted(counts.items()))},
        "prefetch": _prefetch_info(arc),
        "created_by": md.get("created_by"),
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    import json

    with open_archive(args.archive) as arc:
        info = inspect_dict(arc)
    info["cache"] = image_cached(info["layers"], getattr(args, "cache_dir", None))
    if args.json:
        _print_json(info)
        return 0
    a = info["archive"]
    version = ".".join(str(v) for v in a["format_version"])
    print(
        f"archive:   {args.archive} ({human(a['size'])}, format {version}"
        + (
            f", {a['percent_of_image']:.3f}% of the image)"
            if a["percent_of_image"] is not None
            else ")"
        )
    )
    print(f"manifest:  {info['manifest_digest']}")
    print(f"config:    {info['config_digest']}")
    print(f"platform:  {info['platform'] or 'unknown'}")
    print(f"source:    {info['source_ref']}")
    print(f"storage:   {info['storage_ref']}")
    cfg = info["config"] or {}
    if cfg.get("Entrypoint") or cfg.get("Cmd"):
        print(f"command:   {json.dumps((cfg.get('Entrypoint') or []) + (cfg.get('Cmd') or []))}")
    nodes = info["nodes"]
    print("nodes:     " + ", ".join(f"{v} {k}" for k, v in nodes.items()))
    pre = info["prefetch"]
    print("prefetch:  " + (f"{pre['files']} files, {human(pre['bytes'])} (replayed at mount)"
                           if pre is not None else "none"))
    print(f"layers:    {len(info['layers'])} ({human(info['image_size'])} compressed)")
    for layer in info["layers"]:
        print(
            f"  [{layer['index']}] {layer['digest']}  {human(layer['size'])} -> "
            f"{human(layer['uncompressed_size'])}  {layer['seekable']}"
        )
    c = info["cache"]
    print(f"cached:    {human(c['spans']['bytes'])} of {human(c['spans']['of'])} compressed "
          f"(span cache), {human(c['decoded']['bytes'])} of {human(c['decoded']['of'])} "
          f"decoded (decoded cache)")
    return 0


def image_cached(layers: list[dict[str, Any]], cache_dir: str | None) -> dict[str, Any]:
    """How much of the image's layers the two span caches hold on this machine (entries of
    the layers' blob digests, unchecked)."""
    dirs = _cache_dirs(cache_dir)
    out: dict[str, Any] = {}
    for kind, total_key in (("spans", "size"), ("decoded", "uncompressed_size")):
        cache = _span_cache(kind, dirs[kind])
        held = 0
        for digest in {str(la["digest"]) for la in layers}:
            held += cache.blob_usage(digest)[1]
        out[kind] = {"dir": str(dirs[kind]), "bytes": held,
                     "of": sum(int(la.get(total_key) or 0) for la in
                               {str(la["digest"]): la for la in layers}.values())}
    return out


# -- ls / stat -----------------------------------------------------------------------------


def _mode_string(node: Node) -> str:
    return statmod.filemode(_TYPE_BITS[node.type] | node.mode)


def _long_line(node: Node, name: str) -> str:
    from clipcy.export import decode_path

    size = f"{node.devmajor}, {node.devminor}" if node.type in (CHAR, BLOCK) else str(node.st_size)
    when = (
        time.strftime("%Y-%m-%d %H:%M", time.gmtime(node.mtime_sec))
        if -(2**40) < node.mtime_sec < 2**40
        else str(node.mtime_sec)
    )
    line = (
        f"{_mode_string(node)} {node.nlink:>3} {node.uid:>5} {node.gid:>5} {size:>10} {when} {name}"
    )
    if node.type == SYMLINK:
        line += " -> " + decode_path(node.linkname)
    return line


def _join(parent: bytes, name: bytes) -> bytes:
    return parent.rstrip(b"/") + b"/" + name


def resolved_node(arc: Archive, path: str, follow: bool = False) -> Node:
    """The node at path, parent symlinks followed as POSIX resolution does; the last
    component too with follow (-L) or a trailing slash (which wants a directory)."""
    from clipcy.pathwalk import resolve_path

    def kind(p: bytes) -> tuple[str, bytes] | None:
        node = arc.lookup(p)
        return None if node is None else (node.type, node.linkname)

    return arc.stat(resolve_path(path, kind, follow))


def cmd_ls(args: argparse.Namespace) -> int:
    from clipcy.export import decode_path

    with open_archive(args.archive) as arc:
        top = resolved_node(arc, args.path, args.follow)
        if top.type != DIR:
            _ls_print(args, top, args.path)
            return 0
        dirs = [top.path]
        first = True
        while dirs:
            path = dirs.pop(0)
            if args.recursive and not args.json:
                if not first:
                    print()
                print(decode_path(path) + ":")
            first = False
            subdirs = []
            for name in arc.listdir(path):
                child = _join(path, name)
                node = arc.stat(child)
                _ls_print(args, node, decode_path(name))
                if node.type == DIR:
                    subdirs.append(child)
            if args.recursive:
                dirs[0:0] = subdirs
    return 0


def _ls_print(args: argparse.Namespace, node: Node, name: str) -> None:
    import json

    from clipcy.export import node_record

    if args.json:
        print(json.dumps(dict(node_record(node), name=name), sort_keys=True))
    elif args.long:
        print(_long_line(node, name))
    else:
        print(name)


def cmd_stat(args: argparse.Namespace) -> int:
    from clipcy.export import node_record

    with open_archive(args.archive) as arc:
        node = resolved_node(arc, args.path, args.follow)
    rec = node_record(node)
    rec["mtime_nsec"] = node.mtime_nsec
    if args.json:
        _print_json(rec)
        return 0
    print(f"  path: {rec['path']}" + (f" -> {rec['linkname']}" if "linkname" in rec else ""))
    print(
        f"  type: {node.type}  mode: {node.mode:04o} ({_mode_string(node)})  "
        f"uid: {node.uid}  gid: {node.gid}"
    )
    print(f"  size: {node.st_size}  nlink: {node.nlink}  ino: {node.ino}")
    print(f" mtime: {node.mtime_sec}.{node.mtime_nsec:09d}")
    if node.type in (CHAR, BLOCK):
        print(f"device: {node.devmajor},{node.devminor}")
    if node.type == FILE:
        print(
            f"  data: layer {node.layer}, offset {node.offset}"
            + (f", sparse runs {list(node.sparse)}" if node.sparse else "")
        )
    for k, v in rec["xattrs"].items():
        print(f" xattr: {k}={v} (base64)")
    return 0


# -- export --------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from clipcy.export import write_export

    with open_archive(args.archive) as arc:
        top = resolved_node(arc, args.path) if args.path != "/" else None
        write_export(arc.walk(top.path if top is not None else b"/"), sys.stdout)
    return 0


# -- cat / extract / verify ---------------------------------------------------------------


def blob_ref(args: argparse.Namespace) -> str | None:
    """--storage or --layout (they exclude each other), or None: the archive's ref."""
    ref: str | None = getattr(args, "storage", None) or getattr(args, "layout", None)
    return ref


# The readers' remote options as the parser defaults them (clipcy.cli.add_storage_options):
# RemoteOptions() holds the same values (tests/test_cli.py checks it).
_REMOTE_DEFAULTS = {"authfile": None, "insecure": False, "connect_timeout": 5.0,
                    "read_timeout": 30.0, "retries": 5, "cache_dir": None,
                    "cache_max_mib": 1024, "no_cache": False, "decoded_cache_mib": 2048}


def remote_options(args: argparse.Namespace) -> RemoteOptions | None:
    """The readers' --authfile, --insecure, timeouts, retries and span-cache options; None
    when all are the defaults, so that reading a local archive imports no remote store."""
    if args.connect_timeout <= 0 or args.read_timeout <= 0:
        raise ClipError("--connect-timeout and --read-timeout must be positive")
    if args.retries < 0:
        raise ClipError("--retries must be 0 or more")
    if args.cache_max_mib < 0:
        raise ClipError("--cache-max-mib must be 0 or more")
    decoded_mib = getattr(args, "decoded_cache_mib", 2048)
    if decoded_mib < 0:
        raise ClipError("--decoded-cache-mib must be 0 or more")
    if all(getattr(args, k, v) == v for k, v in _REMOTE_DEFAULTS.items()):
        return None
    return build_remote_options(args)


def build_remote_options(args: argparse.Namespace) -> RemoteOptions:
    """RemoteOptions from the readers' options (checked by remote_options)."""
    from clipcy.storage.http import HttpOptions
    from clipcy.storage.registry import RemoteOptions

    http = HttpOptions(connect_timeout=args.connect_timeout, read_timeout=args.read_timeout,
                       tries=args.retries + 1)
    return RemoteOptions(authfile=args.authfile, http=http, insecure=args.insecure,
                         cache=not args.no_cache, cache_dir=args.cache_dir,
                         cache_max_mib=args.cache_max_mib,
                         decoded_cache_mib=getattr(args, "decoded_cache_mib", 2048))


def cmd_cat(args: argparse.Namespace) -> int:
    from clipcy.archive.files import read_piecewise

    with open_archive(args.archive, storage=blob_ref(args), remote=remote_options(args)) as arc, \
            step(f"cat {args.path}"), arc.open(args.path) as f:
        node = f.node
        log.debug("cat %s: %d bytes of layer %d at offset %d", os.fsdecode(node.path),
                  node.size, node.layer, node.offset)
        read_piecewise(f, sys.stdout.buffer)
    sys.stdout.flush()
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from clipcy.extract import extract_archive
    from clipcy.progress import make_reporter

    reporter = make_reporter(args.progress)
    try:
        with open_archive(args.archive, storage=blob_ref(args),
                          remote=remote_options(args)) as arc:
            files, nbytes = extract_archive(arc, args.dest, args.paths, progress=reporter)
        if reporter is not None:
            reporter("done", {"files": files, "bytes": nbytes})
    finally:
        if reporter is not None:
            reporter.close()
    log.info("extracted %d files, %d bytes into %s", files, nbytes, args.dest)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from clipcy.progress import make_reporter
    from clipcy.verify import verify_archive

    reporter = make_reporter(args.progress)
    try:
        with open_archive(args.archive, storage=blob_ref(args),
                          remote=remote_options(args)) as arc:
            if reporter is not None:
                reporter(
                    "start",
                    {"layers": len(arc.layers), "bytes": sum(x["size"] for x in arc.layers)},
                )
            checked: dict[str, Any] = {}
            problems = verify_archive(arc, progress=reporter, checked=checked)
            if reporter is not None:
                reporter("done", {"problems": len(problems)})
    finally:
        if reporter is not None:
            reporter.close()
    if args.json:
        _print_json({"archive": args.archive, "ok": not problems, "problems": problems,
                     "checked": checked})
    for p in problems:
        print(f"{args.archive}: {p}", file=sys.stderr)
    if problems:
        raise ClipError(f"verify failed: {len(problems)} problem(s) in {args.archive}")
    if not args.json:
        if getattr(args, "verbose", 0):
            _print_checked(checked)
        print(f"{args.archive}: OK")
    return 0


def _print_checked(checked: dict[str, Any]) -> None:
    """verify -v: what was checked, one line per part."""
    a = checked["archive"]
    print(f"archive: whole-file sha256, {a['sections']} section checksums, {a['nodes']} nodes "
          "decoded")
    for layer in checked["layers"]:
        where = (f"{layer['resume_points']} resume points" if layer["compression"] == "gzip"
                 else f"{layer['frames']} frames" if layer["compression"] == "zstd"
                 else "direct offsets")
        print(f"layer {layer['index']}: {layer['digest']}: blob of {layer['size']} bytes "
              f"streamed again, digest and diff_id {layer['diff_id']} match; {where} and "
              f"{layer['span_checksums']} span checksums match a fresh index")
    print(f"tree: {checked['nodes']} nodes match the image's layers")
    files = checked["files"]
    if files["sha256"]:
        print(f"files: {files['count']} files, {files['bytes']} bytes read through the archive, "
              "each matching its recorded sha256")
    else:
        print("files: not read (no per-file sha256 in the archive; index-layout "
              "--file-digests records them)")


# -- demo ----------------------------------------------------------------------------------


def sample_layout() -> Path:
    from importlib import resources
    from pathlib import Path

    path = Path(str(resources.files("clipcy") / "sample"))
    if not (path / "index.json").is_file():
        raise ClipError(f"the sample layout is missing from the installation ({path})")
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from clipcy.image.indexer import create_index_only_archive_from_oci_layout

    layout = sample_layout()
    if args.keep:
        try:
            os.makedirs(args.keep, exist_ok=True)
        except OSError as e:
            raise ClipError(f"cannot create {args.keep}: {e.strerror or e}") from None
    with tempfile.TemporaryDirectory(prefix="clipcy-demo-") as tmp:
        where = args.keep or tmp
        out = Path(args.out) if args.out else Path(where) / "sample.clip"
        print(f"$ clipctl index-layout --layout {layout} --tag latest --out {out}")
        summary = create_index_only_archive_from_oci_layout(layout, "latest", out)
        pct = 100.0 * summary.archive_size / summary.image_size
        print(
            f"wrote {out}: {summary.node_count} nodes from {summary.layer_count} layers, "
            f"{human(summary.archive_size)} ({pct:.1f}% of {human(summary.image_size)})\n"
        )
        for argv in (
            ["inspect", str(out)],
            ["ls", str(out), "/", "-l", "-R"],
            ["cat", str(out), "/etc/os-release"],
        ):
            print("$ clipctl " + " ".join(argv))
            sys.stdout.flush()
            from clipcy.cli import build_parser

            sub = build_parser().parse_args(argv)
            sub.func(sub)
            print()
        if args.out or args.keep:
            print(f"kept {out}")
        else:
            print(f"{tmp} is a temporary directory, deleted now that the demo ends; keep the "
                  "archive with --keep DIR or --out FILE")
    return 0


def cmd_mount(args: argparse.Namespace) -> int:
    from clipcy.fusemount import service

    archive, storage = args.archive, blob_ref(args)
    checked = False  # the storage proven by requests made here (no probe before ready)
    if archive.startswith("docker://"):  # an image reference: its archive, from the cache
        from clipcy.publish import fetch_by_reference

        archive, repo = fetch_by_reference(archive, remote_options(args))
        checked = storage is None  # the blobs are read from the repository just asked
        storage = storage or repo
    if args.record_seconds is not None and args.record is None:
        raise ClipError("--record-seconds needs --record FILE")
    pre = service.PrefetchOptions(record=args.record, record_seconds=args.record_seconds,
                                  list_file=args.prefetch, replay=not args.no_prefetch,
                                  wait=args.prefetch_wait, fetch_all=args.fetch_all)
    if args.foreground or args.ready_fd is not None:
        return service.serve(archive, args.mountpoint, storage, args.cache_mib,
                             args.options, args.ready_fd, remote_options(args),
                             xattrs=args.xattrs, mkdir=args.mkdir, prefetch=pre,
                             storage_checked=checked)
    pid, log_path = service.fork_and_serve(archive, args.mountpoint, storage,
                                           args.cache_mib, args.options, remote_options(args),
                                           args.log, xattrs=args.xattrs, mkdir=args.mkdir,
                                           prefetch=pre, storage_checked=checked)
    print(f"clipctl: serving {args.archive} at {args.mountpoint} (pid {pid}, log "
          f"{log_path}); unmount with: clipctl umount {args.mountpoint}", file=sys.stderr)
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    from clipcy.errors import MountError
    from clipcy.fusemount import service

    mp = args.mountpoint
    # a stale mount (its process died) fails stat with ENOTCONN: /proc/self/mountinfo knows it
    if not service.is_mounted(mp, service.FSTYPE):
        if not os.path.isdir(mp):
            raise MountError(f"mountpoint {mp} does not exist or is not a directory")
        raise MountError(f"{mp} is not a clipcy mount")
    service.unmount(mp, lazy=args.lazy)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    import json

    from clipcy.fusemount.stats import query

    doc = query(args.mountpoint)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print(format_stats(doc))
    return 0


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def format_stats(doc: dict[str, Any]) -> str:
    """clipctl stats without --json: the counters a person asks about first."""
    m, req, cache = doc["mount"], doc["requests"], doc["span_cache"]
    lines = [f"mount       {m['mountpoint']} (pid {m['pid']}, up {doc['uptime_seconds']:.1f} s)"]
    for lane in ("foreground", "replay", "background"):
        r = req[lane]
        lines.append(f"{lane + ' fetches':<22}{r['requests']:>8}  {_mib(r['bytes'])}")
    if doc.get("http") is not None:
        h = doc["http"]
        lines.append(f"{'http requests':<22}{h['requests']:>8}  {_mib(h['bytes'])}")
    lines.append(f"{'decoded span hits':<22}{cache['hits']:>8}  (of which replayed "
                 f"{cache['replay_hits']})")
    lines.append(f"{'spans decoded':<22}{cache['spans_decoded']:>8}  "
                 f"{_mib(cache['bytes_decoded'])}")
    if cache.get("disk_hits") is not None:
        lines.append(f"{'disk span cache':<22}{cache['disk_hits']:>8}  hits, "
                     f"{cache['disk_misses']} misses")
    dc = doc.get("decoded_cache")
    lines.append(f"{'decoded cache':<22}" + (
        f"{dc['hits']:>8}  hits, {dc['puts']} put, {dc['spans_streamed']} streamed "
        f"({dc['layers_streamed']} layers), {_mib(dc['disk_bytes'])} of "
        f"{_mib(dc['max_bytes'])} on disk" if dc is not None else f"{'off':>8}"))
    errors = doc["read_errors"]
    lines.append(f"{'read errors':<22}{doc['read_errors_total']:>8}"
                 + ("  " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items()))
                    if errors else ""))
    rp = doc["replay"]
    lines.append(f"replay      {rp['state']}: {rp.get('files_planned', 0)} of "
                 f"{rp.get('files', 0)} files, {rp.get('spans_filled', 0)} of "
                 f"{rp.get('spans', 0)} spans decoded"
                 + (f", error: {rp['error']}" if rp.get("error") else ""))
    bg = doc["background"]
    lines.append(f"background  {bg['state']}"
                 + (f": {_mib(bg['bytes_fetched'] + bg['bytes_cached'])} of "
                    f"{_mib(bg['bytes_total'])} cached ({_mib(bg['bytes_fetched'])} fetched)"
                    if bg["state"] != "off" else "")
                 + (f", error: {bg['error']}" if bg.get("error") else ""))
    return "\n".join(lines)


# -- cache ---------------------------------------------------------------------------------

CACHE_KINDS = ("spans", "decoded", "layers", "archives")


def _cache_dirs(cache_dir: str | None) -> dict[str, Path]:
    from pathlib import Path

    from clipcy.image.cache import default_cache_dir
    from clipcy.publish import archive_cache_dir
    from clipcy.storage.decodedcache import decoded_cache_dir
    from clipcy.storage.diskcache import default_span_cache_dir
    from clipcy.storage.registry import RemoteOptions

    return {"spans": Path(cache_dir) if cache_dir else default_span_cache_dir(),
            "decoded": decoded_cache_dir(cache_dir),
            "layers": default_cache_dir(),
            "archives": Path(archive_cache_dir(RemoteOptions(cache_dir=cache_dir)))}


def _span_cache(kind: str, root: Path) -> Any:
    from clipcy.storage.decodedcache import DecodedDiskCache
    from clipcy.storage.diskcache import DiskSpanCache

    return (DecodedDiskCache if kind == "decoded" else DiskSpanCache)(root)


def _files(root: Path) -> list[Path]:
    """The regular files under root (lock files left out: they are not entries)."""
    from pathlib import Path

    out = []
    for dirpath, _, names in os.walk(root):
        out += [Path(dirpath) / n for n in names if n != "lock"]
    return out


def cache_usage(cache_dir: str | None) -> dict[str, dict[str, Any]]:
    """Each kind of on-disk cache: its directory, entries and bytes."""
    out: dict[str, dict[str, Any]] = {}
    for kind, root in _cache_dirs(cache_dir).items():
        if kind in ("spans", "decoded"):
            entries, size = _span_cache(kind, root).usage()
        else:
            sizes = []
            for p in _files(root):
                try:
                    sizes.append(p.stat().st_size)
                except OSError:
                    continue
            entries, size = len(sizes), sum(sizes)
        out[kind] = {"dir": str(root), "entries": entries, "bytes": size}
    return out


def _print_usage(usage: dict[str, dict[str, Any]]) -> None:
    names = {"spans": "compressed spans", "decoded": "decoded spans", "layers": "layer cache",
             "archives": "archives"}
    for kind, u in usage.items():
        print(f"{names[kind]:<18}{u['entries']:>8} entries  {human(u['bytes']):>10}  {u['dir']}")
    total = sum(u["bytes"] for u in usage.values())
    print(f"{'total':<18}{'':>8}          {human(total):>10}")


def cmd_cache(args: argparse.Namespace) -> int:
    if args.action == "info":
        if args.all or args.max_mib is not None or args.kind:
            raise ClipError("cache info takes no --all, --max-mib or --kind")
        usage = cache_usage(args.cache_dir)
        if args.json:
            _print_json(usage)
        else:
            _print_usage(usage)
        return 0
    if not args.all and args.max_mib is None:
        raise ClipError("cache prune needs --all or --max-mib N")
    if args.max_mib is not None and args.max_mib < 0:
        raise ClipError("--max-mib must be 0 or more")
    kinds = args.kind or (list(CACHE_KINDS) if args.all else ["spans", "decoded"])
    if args.max_mib is not None and set(kinds) - {"spans", "decoded"}:
        raise ClipError("--max-mib prunes the span caches only (--kind spans, decoded); "
                        "use --all for the layer cache and archives")
    target = 0 if args.all else args.max_mib << 20
    dirs = _cache_dirs(args.cache_dir)
    for kind in kinds:
        root = dirs[kind]
        if kind in ("spans", "decoded"):
            if root.exists() and _span_cache(kind, root).evict(target) < 0:
                raise ClipError(f"the {kind} cache in {root} is being pruned by another "
                                f"process; try again")
        else:
            for p in _files(root):
                try:
                    p.unlink()
                except OSError as e:
                    raise ClipError(f"cannot remove {p}: {e.strerror or e}") from None
    usage = cache_usage(args.cache_dir)
    if args.json:
        _print_json(usage)
    else:
        _print_usage(usage)
    return 0


# -- push / pull ---------------------------------------------------------------------------


def registry_options(args: argparse.Namespace) -> RemoteOptions:
    """push and pull: --authfile, --insecure, timeouts and retries (no span cache)."""
    from clipcy.storage.http import HttpOptions
    from clipcy.storage.registry import RemoteOptions

    if args.connect_timeout <= 0 or args.read_timeout <= 0:
        raise ClipError("--connect-timeout and --read-timeout must be positive")
    if args.retries < 0:
        raise ClipError("--retries must be 0 or more")
    http = HttpOptions(connect_timeout=args.connect_timeout, read_timeout=args.read_timeout,
                       tries=args.retries + 1)
    return RemoteOptions(authfile=args.authfile, http=http, insecure=args.insecure, cache=False)


def cmd_push(args: argparse.Namespace) -> int:
    from clipcy.publish import push_archive

    with step(f"push {args.archive} to {args.ref}"):
        done = push_archive(args.archive, args.ref, remote=registry_options(args))
    found = "the referrers API" if done.referrers == "api" else f"the referrers {done.referrers}"
    if args.json:
        _print_json({"artifact": done.artifact, "tag": done.tag, "subject": done.subject,
                     "referrers": done.referrers, "uploaded": done.uploaded,
                     "requests": done.requests})
    else:
        print(f"pushed {args.archive} as {done.artifact}, tagged {done.tag}, for image "
              f"{done.subject} (found through {found})")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from clipcy.publish import pull_archive

    with step(f"pull {args.ref}"):
        got = pull_archive(args.ref, args.out, platform=args.platform,
                           remote=registry_options(args))
    version = f"{got.version[0]}.{got.version[1]}"
    if args.json:
        _print_json({"path": got.path, "image": got.image, "artifact": got.artifact,
                     "blob": got.blob, "size": got.size, "format": version,
                     "found": got.found, "candidates": got.candidates,
                     "requests": got.requests})
    else:
        other = (f"; the newest readable of {got.candidates} archives"
                 if got.candidates > 1 else "")
        print(f"wrote {got.path}: {human(got.size)}, format {version}, archive {got.artifact} "
              f"of image {got.image} (found through the {got.found}{other})")
    return 0
