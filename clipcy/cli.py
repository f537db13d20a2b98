"""The clipctl command line (argparse only).

Only the standard library is imported at the top: argparse-manpage loads this file on its own
(pyfile=) to build the man page, before clipcy is importable. Handlers import clipcy lazily.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

TYPE_CHECKING = False  # typing's constant, without importing typing (~5 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

PROG = "clipctl"


class _VersionAction(argparse.Action):
    """--version: imported lazily, and says whether the compiled core is in use."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str = argparse.SUPPRESS,
        default: Any = argparse.SUPPRESS,
        help: str | None = None,
    ) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        from clipcy.version import version_text

        print(version_text())
        parser.exit()


def _add_indexing_options(p: argparse.ArgumentParser) -> None:
    """What index-layout and index record and check, the same for a layout or a registry."""
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip checking blob digests and diff_ids (faster, not recommended)",
    )
    p.add_argument(
        "--file-digests",
        action="store_true",
        help="record each file's sha256 (checked by verify; export shows it)",
    )
    p.add_argument(
        "--checkpoint-mib",
        type=float,
        metavar="N",
        help="gzip resume points every N MiB of uncompressed data "
        "(default: chosen by measurement, see docs/FORMAT.md)",
    )


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        choices=("auto", "tty", "json", "none"),
        default="auto",
        help="progress on stderr: a bar on a terminal (auto, tty), one JSON event "
        "per line (json), or nothing (none; also auto when stderr is not a terminal)",
    )


def add_storage_options(p: argparse.ArgumentParser) -> None:
    """Where a reader finds the layer blobs, and how it reaches a remote store."""
    g = p.add_argument_group("blob storage")
    where = g.add_mutually_exclusive_group()
    where.add_argument(
        "--layout", metavar="DIR", help="where the blobs are (default: the archive's storage ref)"
    )
    where.add_argument(
        "--storage",
        metavar="REF",
        help="read the blobs from REF instead of the archive's storage ref: a directory, "
        "docker://HOST[:PORT]/REPO (a registry) or http(s)://BASE (blobs at BASE/sha256/HEX)",
    )
    _add_connection_options(g, "plain http for docker:// refs")
    g.add_argument(
        "--cache-dir", metavar="DIR",
        help="on-disk cache of verified remote spans (default ~/.cache/clipcy/spans)",
    )
    g.add_argument(
        "--cache-max-mib", type=int, default=1024, metavar="N",
        help="bound of the span cache, least recently used spans go first (default 1024)",
    )
    g.add_argument(
        "--no-cache", action="store_true", help="keep no on-disk cache of remote spans"
    )


def _add_common(p: argparse.ArgumentParser, top: bool = False) -> None:
    # Subcommands must not reset what `clipctl -v COMMAND` set: their defaults are SUPPRESS.
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="more logging (-v info, -vv debug); beats CLIP_LOG_LEVEL",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="errors only: silence warnings",
    )


def _columns() -> int:
    """shutil.get_terminal_size().columns, without importing shutil (and bz2, lzma, fnmatch
    with it) at every start: argparse makes a formatter for every argument it adds."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's RawDescriptionHelpFormatter, given its width (see _columns)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


class _Unused:
    """Takes the arguments of a subcommand that is not the one run: the parser of a command
    has only that subcommand (build_parser(command)), as each subparser and add_argument
    costs argparse 0.1 to 1 ms, at every start."""

    def __getattr__(self, name: str) -> Any:
        return self._take

    def _take(self, *args: Any, **kwargs: Any) -> _Unused:
        return self


def command_of(argv: Sequence[str] | None) -> str | None:
    """The subcommand argv runs: its first word that is not an option, when every option
    before it is -v or -q (so not -h), else None."""
    for arg in sys.argv[1:] if argv is None else argv:
        if not arg.startswith("-"):
            return arg
        if arg not in ("-q", "--quiet", "--verbose") and arg.strip("v") != "-":
            return None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """clipctl's parser; given a command (command_of), the parser of that subcommand only,
    which parses it as the full parser does: what main() parses with."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Index local OCI image layouts into small index-only .clip archives, "
        "and read files lazily through them.",
        formatter_class=_Formatter,
        epilog="examples:\n"
        "  clipctl index-layout --layout ./img --tag latest --out img.clip\n"
        "  clipctl inspect img.clip\n"
        "  clipctl ls img.clip /etc -l\n"
        "  clipctl demo\n",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version, the core in use and the zlib/zstd versions",
    )
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.clipcy_only = command  # type: ignore[attr-defined]  # read by _sub
    for register in _COMMANDS:
        register(sub)
    if command is not None and not sub.choices:  # no such command: the full parser says so
        return build_parser()
    return parser


# ---------------------------------------------------------------------------------------
# Subcommands. Each register function adds one subparser and sets `func`.


def _sub(sub: Any, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    if sub.clipcy_only not in (None, name):
        return _Unused()  # type: ignore[return-value]
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=help[:1].upper() + help[1:] + ".",
        epilog="examples:\n" + examples,
        formatter_class=_Formatter,
    )
    _add_common(p)
    return p


_COMMANDS: list[Callable[[Any], None]] = []


def _command(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    _COMMANDS.append(fn)
    return fn


def _handler(name: str) -> Callable[[argparse.Namespace], int]:
    """A handler of clipcy.commands, imported only when the command runs."""

    def run(args: argparse.Namespace) -> int:
        from clipcy import commands

        fn: Callable[[argparse.Namespace], int] = getattr(commands, name)
        return fn(args)

    return run


@_command
def _index_layout(sub: Any) -> None:
    p = _sub(
        sub,
        "index-layout",
        "index an OCI image layout into an index-only .clip archive",
        "  clipctl index-layout --layout ./img --tag latest --out img.clip\n"
        "  clipctl index-layout --layout oci:./img:latest --out img.clip\n"
        "  clipctl index-layout --layout ./img --digest sha256:<hex> --out img.clip\n"
        "  clipctl index-layout --layout ./img --tag latest --platform linux/arm64 "
        "--out arm.clip\n",
    )
    p.add_argument(
        "--layout",
        required=True,
        metavar="DIR",
        help="the OCI layout: DIR, oci:DIR[:TAG], oci-layout://DIR[:TAG] or DIR@sha256:...",
    )
    p.add_argument(
        "--tag",
        help="the image's tag (org.opencontainers.image.ref.name); "
        "may be omitted when the layout holds one image",
    )
    p.add_argument("--digest", metavar="sha256:HEX", help="pick the manifest by digest")
    p.add_argument("--out", required=True, metavar="FILE", help="the .clip archive to write")
    p.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="platform to pick from an image index (default: linux and the host's architecture)",
    )
    p.add_argument(
        "--storage-ref",
        metavar="REF",
        help="where the blobs will live at run time: a directory, docker://HOST[:PORT]/REPO "
        "(a registry) or http(s)://BASE (blobs at BASE/sha256/HEX); default: the layout's "
        "absolute path. Checked now: every layer blob must be there (one request or stat "
        "each); never put credentials in it",
    )
    p.add_argument(
        "--no-check-storage",
        dest="check_storage",
        action="store_false",
        help="do not check that the blobs are at --storage-ref (its syntax still is)",
    )
    p.add_argument(
        "--authfile",
        metavar="FILE",
        help="registry credentials for checking --storage-ref (auth.json); default as the "
        "readers: REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ...",
    )
    _add_indexing_options(p)
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="layer cache: layers indexed before (same blob digest) are not streamed "
        "again, once the blob is proved the verified one (stat fingerprint, else a re-hash) "
        "(default: $XDG_CACHE_HOME/clipcy/layers or ~/.cache/clipcy/layers)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not use the layer cache")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="layers indexed in parallel (default: the number of CPUs)",
    )
    p.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=N",
        help="change one input limit for this run, e.g. entries_per_layer=8000000 "
        "(names and defaults: docs/LIMITS.md; the layer cache is not used then)",
    )
    p.add_argument(
        "--prefetch",
        metavar="FILE",
        help="store this prefetch list in the archive (one absolute image path per line, as "
        "clipctl mount --record writes it): every mount replays it unless told otherwise",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_progress(p)
    p.set_defaults(func=_handler("cmd_index_layout"))


@_command
def _index(sub: Any) -> None:
    p = _sub(
        sub,
        "index",
        "index an image straight from a registry (or a layout) into an index-only .clip "
        "archive",
        "  clipctl index docker://registry.example/team/app:v1 --out app.clip\n"
        "  clipctl index docker://registry.example/team/app@sha256:<hex> --out app.clip\n"
        "  clipctl index docker://registry.example/team/app:v1 --out app.clip --push\n"
        "  clipctl index oci:./img:latest --out img.clip\n",
    )
    p.add_argument(
        "image",
        metavar="IMAGE",
        help="docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX] (default tag: latest), each layer "
        "blob streamed once from the registry; or a layout, as index-layout's --layout",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the .clip archive to write")
    p.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="platform to pick from an image index (default: linux and the host's architecture)",
    )
    p.add_argument(
        "--storage-ref",
        metavar="REF",
        help="where the blobs will live at run time (as index-layout's); default: the "
        "image's repository, docker://HOST[:PORT]/REPO (for a layout: its absolute path)",
    )
    p.add_argument(
        "--no-check-storage",
        dest="check_storage",
        action="store_false",
        help="do not check that the blobs are at --storage-ref (its syntax still is)",
    )
    p.add_argument(
        "--push",
        nargs="?",
        const="",
        metavar="TAG",
        help="then push the archive beside the image, as clipctl push does (TAG names the "
        "artifact; default: the image's tag + '.clip')",
    )
    _add_indexing_options(p)
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="layers streamed and indexed at once (default: the number of CPUs)",
    )
    p.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=N",
        help="change one input limit for this run (names and defaults: docs/LIMITS.md)",
    )
    p.add_argument(
        "--prefetch",
        metavar="FILE",
        help="store this prefetch list in the archive (as index-layout --prefetch)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_progress(p)
    _add_registry_options(p)
    p.set_defaults(func=_handler("cmd_index"))


@_command
def _inspect(sub: Any) -> None:
    p = _sub(
        sub,
        "inspect",
        "show an archive's image, platform, layers and sizes",
        "  clipctl inspect img.clip\n  clipctl inspect img.clip --json | jq .layers\n",
    )
    p.add_argument("archive", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="the readers' --cache-dir, for how much of the image is cached "
                   "(default: $XDG_CACHE_HOME/clipcy)")
    p.set_defaults(func=_handler("cmd_inspect"))


@_command
def _ls(sub: Any) -> None:
    p = _sub(
        sub,
        "ls",
        "list a directory of the archived root filesystem",
        "  clipctl ls img.clip\n  clipctl ls img.clip /etc -l\n  clipctl ls img.clip / -R\n",
    )
    p.add_argument("archive", metavar="FILE")
    p.add_argument("path", nargs="?", default="/", metavar="PATH")
    p.add_argument("-l", dest="long", action="store_true", help="long listing")
    p.add_argument("-R", dest="recursive", action="store_true", help="list subdirectories too")
    p.add_argument("-L", dest="follow", action="store_true",
                   help="follow PATH if it is a symlink (parent symlinks are always followed; "
                   "a trailing slash follows it too)")
    p.add_argument("--json", action="store_true", help="one JSON object per entry")
    p.set_defaults(func=_handler("cmd_ls"))


@_command
def _stat(sub: Any) -> None:
    p = _sub(
        sub,
        "stat",
        "show one path's metadata and data location",
        "  clipctl stat img.clip /etc/os-release\n  clipctl stat img.clip /bin --json\n",
    )
    p.add_argument("archive", metavar="FILE")
    p.add_argument("path", metavar="PATH",
                   help="parent symlinks are followed inside the image; PATH itself is "
                   "described, not its target (as lstat), unless -L")
    p.add_argument("-L", dest="follow", action="store_true",
                   help="follow PATH if it is a symlink (as stat -L)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_handler("cmd_stat"))


@_command
def _export(sub: Any) -> None:
    p = _sub(
        sub,
        "export",
        "print every node as a JSON line, sorted by path",
        "  clipctl export img.clip > tree.jsonl\n  clipctl export img.clip /etc\n",
    )
    p.add_argument("archive", metavar="FILE")
    p.add_argument("path", nargs="?", default="/", metavar="PATH",
                   help="only the subtree at PATH (parent symlinks followed; a trailing slash "
                   "follows PATH itself)")
    p.set_defaults(func=_handler("cmd_export"))


@_command
def _demo(sub: Any) -> None:
    p = _sub(
        sub,
        "demo",
        "index the sample image shipped with clipcy and show the result",
        "  clipctl demo\n  clipctl demo --out sample.clip\n  clipctl demo --keep ./demo\n",
    )
    p.add_argument(
        "--out", metavar="FILE", help="keep the archive here (default: a temporary file, "
        "deleted when the demo ends)"
    )
    p.add_argument(
        "--keep", metavar="DIR", help="write the archive into DIR (created if missing) and "
        "keep it, instead of a temporary directory deleted when the demo ends"
    )
    p.set_defaults(func=_handler("cmd_demo"))


@_command
def _cat(sub: Any) -> None:
    p = _sub(
        sub,
        "cat",
        "write a file of the image to stdout, read lazily from the layer blobs",
        "  clipctl cat img.clip /etc/os-release\n"
        "  clipctl cat img.clip /usr/bin/tool --layout ./img > tool\n",
    )
    p.add_argument("archive", metavar="FILE")
    p.add_argument("path", metavar="PATH", help="symlinks are followed inside the image")
    add_storage_options(p)
    p.set_defaults(func=_handler("cmd_cat"))


@_command
def _extract(sub: Any) -> None:
    p = _sub(
        sub,
        "extract",
        "write the image's tree (or some subtrees) into a directory",
        "  clipctl extract img.clip -C rootfs\n"
        "  clipctl extract img.clip /etc /usr/bin -C out --layout ./img\n"
        "  clipctl extract img.clip -C out /etc /usr/bin   # paths before or after -C\n",
    )
    p.add_argument("archive", metavar="FILE")
    p.add_argument("paths", nargs="*", metavar="PATH", help="subtrees to extract (default: all)")
    p.add_argument(
        "-C",
        dest="dest",
        required=True,
        metavar="DIR",
        help="destination directory (created if missing); nothing is written outside it",
    )
    add_storage_options(p)
    _add_progress(p)
    p.set_defaults(func=_handler("cmd_extract"))


@_command
def _verify(sub: Any) -> None:
    p = _sub(
        sub,
        "verify",
        "check an archive against its layer blobs",
        "  clipctl verify img.clip\n  clipctl verify img.clip --layout ./img\n"
        "  clipctl verify -v img.clip      # say what was checked\n"
        "  clipctl verify img.clip --json\n",
    )
    p.add_argument("archive", metavar="FILE")
    p.add_argument("--json", action="store_true",
                   help="print what was checked and the problems found as JSON")
    add_storage_options(p)
    _add_progress(p)
    p.set_defaults(func=_handler("cmd_verify"))


@_command
def _mount(sub: Any) -> None:
    p = _sub(
        sub,
        "mount",
        "mount an archive as a read-only FUSE filesystem, files read lazily from the blobs",
        "  clipctl mount img.clip /mnt/img\n"
        "  clipctl mount img.clip /mnt/img --layout ./img -o allow_other\n"
        "  clipctl mount img.clip /mnt/img --storage docker://registry.example/app\n"
        "  clipctl mount -f img.clip /mnt/img      # in the foreground, until Ctrl-C\n",
    )
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument("mountpoint", metavar="MOUNTPOINT",
                   help="an empty directory (-o nonempty: any directory; --mkdir: created)")
    p.add_argument("--mkdir", action="store_true", help="create MOUNTPOINT if it is missing")
    p.add_argument("--xattrs", action="store_true",
                   help="answer getxattr/listxattr even when the image has no xattrs (an "
                   "empty list, ENODATA); by default they answer ENOSYS then, so that the "
                   "kernel stops asking (a round trip saved per exec and open), and tools "
                   "like getfattr -d say 'Operation not supported'")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="serve in the foreground until unmounted or SIGINT/SIGTERM (default: "
                   "return once the mount is ready and serve in the background)")
    p.add_argument("--cache-mib", type=int, default=64, metavar="N",
                   help="decompressed-span cache in MiB (default: 64)")
    p.add_argument("--decoded-cache-mib", type=int, default=2048, metavar="N",
                   help="bound of the on-disk cache of decoded spans (CACHE_DIR/decoded, "
                   "default $XDG_CACHE_HOME/clipcy/decoded), shared by mounts; least recently "
                   "used spans go first; 0 or --no-cache: none (default: 2048)")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                   help="FUSE mount options, e.g. allow_other (the mount is always ro); "
                   "nonempty mounts over a directory that has files (they are hidden)")
    p.add_argument("--log", metavar="FILE",
                   help="the background process's log (default: "
                   "$XDG_STATE_HOME/clipcy/mounts/mount-MOUNTPOINT-PID.log, "
                   "~/.local/state/clipcy/mounts without XDG_STATE_HOME; the newest 20 "
                   "and those of live mounts are kept; named on stderr)")
    p.add_argument("--record", metavar="FILE",
                   help="write the files read (opened or executed) to FILE when the mount "
                   "ends, in first-access order: a prefetch list for index-layout --prefetch "
                   "or mount --prefetch (docs/FORMAT.md \"Prefetch lists\")")
    p.add_argument("--record-seconds", type=float, metavar="N",
                   help="with --record: write FILE N seconds after the mount is ready, if it "
                   "is still mounted then")
    pre = p.add_mutually_exclusive_group()
    pre.add_argument("--prefetch", metavar="FILE",
                     help="replay this prefetch list instead of the one stored in the archive: "
                     "the listed files' bytes are fetched (merged ranges, several in flight) "
                     "and inflated before the program reads them")
    pre.add_argument("--no-prefetch", action="store_true",
                     help="replay no prefetch list, not even the archive's")
    p.add_argument("--prefetch-wait", action="store_true",
                   help="return (ready) only once the replay has fetched and inflated the "
                   "list (as stargz-snapshotter prefetches before the container starts); "
                   "by default the replay runs while the program starts")
    p.add_argument("--fetch-all", action="store_true",
                   help="after the prefetch list, fetch the rest of every layer blob into "
                   "the disk span cache at low priority (2 requests in flight, paused while "
                   "reads fetch), so that the mount survives the registry going away; "
                   "clipctl stats says when it is done")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    add_storage_options(p)
    p.set_defaults(func=_handler("cmd_mount"))


@_command
def _umount(sub: Any) -> None:
    p = _sub(
        sub,
        "umount",
        "unmount an archive mounted by clipctl mount",
        "  clipctl umount /mnt/img\n"
        "  clipctl umount --lazy /mnt/img   # detach now, finish when no longer busy\n",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT",
                   help="also a stale mount, whose serving process is gone")
    p.add_argument("-l", "--lazy", action="store_true",
                   help="detach the mount now and clean up once it is no longer busy "
                   "(umount -l, fusermount3 -z)")
    p.set_defaults(func=_handler("cmd_umount"))


@_command
def _stats(sub: Any) -> None:
    p = _sub(
        sub,
        "stats",
        "a live mount's counters: requests and bytes (reads, replay, background fetch), "
        "span caches, read errors by kind, the replay and the background fetch",
        "  clipctl stats /mnt/img\n"
        "  clipctl stats --json /mnt/img | jq .background.done\n",
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="where clipctl mount serves")
    p.add_argument("--json", action="store_true",
                   help="print the counters as one JSON object (keys: docs/CLI.md)")
    p.set_defaults(func=_handler("cmd_stats"))


@_command
def _cache(sub: Any) -> None:
    p = _sub(
        sub,
        "cache",
        "what clipcy keeps on local disk (compressed spans, decoded spans, the layer cache, "
        "archives fetched by image reference), and pruning it",
        "  clipctl cache info\n"
        "  clipctl cache info --json | jq .decoded.bytes\n"
        "  clipctl cache prune --max-mib 512       # each span cache down to 512 MiB (LRU)\n"
        "  clipctl cache prune --all --kind decoded\n",
    )
    p.add_argument("action", choices=("info", "prune"),
                   help="info: where each cache is, its entries and bytes; prune: delete")
    p.add_argument("--json", action="store_true", help="info (and prune's result) as JSON")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--all", action="store_true",
                     help="prune: delete every entry of the kinds chosen")
    how.add_argument("--max-mib", type=int, metavar="N",
                     help="prune: delete the least recently used spans until each span cache "
                     "(compressed, decoded) holds at most N MiB")
    p.add_argument("--kind", action="append", choices=("spans", "decoded", "layers",
                                                       "archives"),
                   help="only this kind (repeatable; default: all four for --all, the two "
                   "span caches for --max-mib)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="the readers' --cache-dir: spans in DIR, decoded spans in "
                   "DIR/decoded, archives in DIR/archives (default: $XDG_CACHE_HOME/clipcy/"
                   "spans, .../decoded, .../archives); the layer cache is always "
                   "$XDG_CACHE_HOME/clipcy/layers")
    p.set_defaults(func=_handler("cmd_cache"))


def _add_registry_options(p: argparse.ArgumentParser) -> None:
    """How push and pull reach the registry (as the readers reach a docker:// store)."""
    _add_connection_options(p.add_argument_group("registry"), "plain http")


def _add_connection_options(g: argparse._ArgumentGroup, insecure: str) -> None:
    """Credentials, plain http and timeouts: the same for every command that talks to a
    registry (readers of a docker:// store, push, pull, index)."""
    g.add_argument(
        "--authfile",
        metavar="FILE",
        help="registry credentials (auth.json); default: REGISTRY_AUTH_FILE, "
        "$XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, "
        "~/.docker/config.json",
    )
    g.add_argument(
        "--insecure",
        action="store_true",
        help=f"{insecure} (default: https, except localhost and 127.0.0.1)",
    )
    g.add_argument(
        "--connect-timeout", type=float, default=5.0, metavar="SECONDS",
        help="seconds to open a connection (default 5)",
    )
    g.add_argument(
        "--read-timeout", type=float, default=30.0, metavar="SECONDS",
        help="seconds without data before a request is retried (default 30)",
    )
    g.add_argument(
        "--retries", type=int, default=5, metavar="N",
        help="retries of a failed request (errors, 429, 5xx), with backoff (default 5)",
    )


@_command
def _push(sub: Any) -> None:
    p = _sub(
        sub,
        "push",
        "store an archive in its image's repository, as an OCI artifact that refers to the image",
        "  clipctl push img.clip docker://registry.example/team/app\n"
        "  clipctl push arm.clip docker://registry.example/team/app:v1-arm64.clip\n",
    )
    p.add_argument("archive", metavar="ARCHIVE")
    p.add_argument(
        "ref",
        metavar="docker://HOST[:PORT]/REPO[:TAG]",
        help="the image's repository; TAG names the archive (default: the archive's tag + "
        "'.clip'), and a TAG that holds anything but a clipcy archive is refused. The image "
        "is the one the archive was made from, and must be in REPO",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_registry_options(p)
    p.set_defaults(func=_handler("cmd_push"))


@_command
def _pull(sub: Any) -> None:
    p = _sub(
        sub,
        "pull",
        "download the clipcy archive of an image from its registry",
        "  clipctl pull docker://registry.example/team/app:v1 -o app.clip\n"
        "  clipctl pull docker://registry.example/team/app@sha256:<hex> -o app.clip\n"
        "  clipctl pull docker://registry.example/team/app:v1 --platform linux/arm64 "
        "-o arm.clip\n",
    )
    p.add_argument(
        "ref",
        metavar="docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]",
        help="the image (default tag: latest); its archive is found through the referrers "
        "API, else the referrers tag sha256-HEX, else the tag TAG.clip",
    )
    p.add_argument("-o", "--out", required=True, metavar="FILE",
                   help="the archive to write (atomically: never a partial file)")
    p.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="platform to pick from an image index (default: linux and the host's architecture)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_registry_options(p)
    p.set_defaults(func=_handler("cmd_pull"))


def _setup_logging(args: argparse.Namespace) -> None:
    from clipcy.logs import setup_logging

    setup_logging(verbose=getattr(args, "verbose", 0), quiet=getattr(args, "quiet", False))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that the same cleanup runs (temp
    files removed, workers stopped) instead of the process dying where it stands."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


def _handle_sigterm() -> Callable[[], None]:
    """Install the SIGTERM handler; returns what puts the old one back."""
    import signal

    # not over a handler or an ignore someone else set up, and only in the main thread (where
    # signal.signal works: elsewhere it raises ValueError)
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return lambda: None
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        return lambda: None

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return restore


def parse_args(parser: argparse.ArgumentParser,
               argv: Sequence[str] | None = None) -> argparse.Namespace:
    """parse_args, except that extract takes its paths after options too, as tar does
    (`extract img.clip -C out /etc /usr/bin`); argparse stops filling a positional list at
    the first option, and its intermixed parsing refuses subcommands."""
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) == "extract":
        args.paths = list(args.paths) + [a for a in extra if not a.startswith("-")]
        extra = [a for a in extra if a.startswith("-")]
    if extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(command_of(argv))
    args = parse_args(parser, argv)
    _setup_logging(args)
    restore = _handle_sigterm()
    try:
        return _run(args)
    finally:
        restore()


def _run(args: argparse.Namespace) -> int:
    from clipcy.errors import ClipError

    try:
        rc: int = args.func(args)
        return rc
    except ClipError as e:
        _fail(args, str(e))
    except BrokenPipeError:
        # `clipctl export x | head`: not an error; keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM, as a shell reports a process killed by it
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 1


def _fail(args: argparse.Namespace, message: str) -> None:
    from clipcy.logs import DEBUG, log
    from clipcy.progress import clear_active

    clear_active()
    if log.isEnabledFor(DEBUG):
        log.debug("traceback", exc_info=True)
    print(f"{PROG}: error: {message}", file=sys.stderr)
