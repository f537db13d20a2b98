"""The clipctl command line (argparse only).

Only the standard library is imported at the top: argparse-manpage loads this file on its own
(pyfile=) to build the man page, before clipcy is importable. Handlers import clipcy lazily.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

PROG = "clipctl"
log = logging.getLogger("clipcy")


class _VersionAction(argparse.Action):
    """--version: imported lazily, and says whether the compiled core is in use."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from clipcy.version import version_text

        print(version_text())
        parser.exit()


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more logging (-v info, -vv debug); beats CLIP_LOG_LEVEL")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="errors only: silence warnings")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Index local OCI image layouts into small index-only .clip archives, "
        "and read files lazily through them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  clipctl index-layout --layout ./img --tag latest --out img.clip\n"
        "  clipctl inspect img.clip\n"
        "  clipctl ls img.clip /etc -l\n"
        "  clipctl demo\n",
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version, the core in use and the zlib/zstd versions")
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for register in _COMMANDS:
        register(sub)
    return parser


# ---------------------------------------------------------------------------------------
# Subcommands. Each register function adds one subparser and sets `func`.

def _sub(sub: Any, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=help[:1].upper() + help[1:] + ".",
        epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p)
    return p


_COMMANDS: list[Callable[[Any], None]] = []


def _command(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    _COMMANDS.append(fn)
    return fn


def _setup_logging(args: argparse.Namespace) -> None:
    from clipcy.logs import setup_logging

    setup_logging(verbose=getattr(args, "verbose", 0), quiet=getattr(args, "quiet", False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
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
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 1


def _fail(args: argparse.Namespace, message: str) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("traceback", exc_info=True)
    print(f"{PROG}: error: {message}", file=sys.stderr)
