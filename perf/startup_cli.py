"""Start-up of the command line: `clipctl cat ARCHIVE /etc/os-release` vs `python -c pass`.

    python perf/startup_cli.py [--runs 21] [--archive A] [--before PYTHON]
                               [--preload MOD,MOD ...] [--out FILE]

Runs the two commands alternately, each in a fresh process of the same interpreter (the
clipctl console script next to it), and reports each one's median CPU time (user + system of
the child, from wait4) and wall time, and their ratios. The archive is the bundled sample
(indexed once into a temporary directory) unless --archive is given. --before PYTHON adds a
third command to the alternation: the clipctl next to another interpreter (a venv with an
older clipcy installed), with its ratio to the same `python -c pass`. Measure with a regular
install (`pip install .`): an editable install's import finder adds its own start-up cost.
Also runs, in the same alternation, three parts of the floor: `python -c 'import re'` (the
console script's own import, with enum), `python -c 'import ...'` of the modules a local cat
cannot do without (DEPS), and the read alone (READ: the same cat through clipcy.commands with
the parser's defaults, no argument parsing); and prints the ten largest cumulative imports of
one `cat` (python -X importtime). --preload MODS (repeatable) adds the cat with those modules
imported first (`python -c`: clipcy.cli.main after importing them), beside the same cat with
none: what a module the cat no longer imports would cost it again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import runinfo

# What a local `cat` cannot do without (argument parsing, the metadata JSON, zstd sections
# through zstandard's C backend as clipcy loads it, blake3 span checksums, zlib-ng's inflate
# through the compiled engine that dlopens it): a floor for its start-up.
DEPS = "import argparse, json, blake3, clipcy._zstd, clipcy.layers._inflate"

# The same cat without the command line: no argparse, no parser, no SIGTERM handler; re
# imported as the console script imports it (argv: archive, path).
READ = ("import re, sys, types\n"
        "from clipcy import commands\n"
        "args = types.SimpleNamespace(archive=sys.argv[1], path=sys.argv[2], layout=None,\n"
        "                             storage=None, **commands._REMOTE_DEFAULTS)\n"
        "sys.exit(commands.cmd_cat(args))\n")

# The cat through clipcy.cli.main after importing the comma-separated modules in argv[1].
PRELOAD = ("import sys\n"
           "for name in filter(None, sys.argv[1].split(',')):\n"
           "    __import__(name)\n"
           "import re\n"
           "from clipcy.cli import main\n"
           "sys.exit(main(['cat', sys.argv[2], sys.argv[3]]))\n")

# the .pyc files written at the warm-up runs, as an installed package has them
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_once(cmd: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of cmd; its output is discarded."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(cmd[0], cmd, ENV,
                         file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with status {status}")
    return ru.ru_utime + ru.ru_stime, wall


def top_imports(cmd: list[str], n: int = 10) -> list[tuple[int, str]]:
    """The n largest cumulative import times (µs) of one run of cmd (python -X importtime)."""
    py, rest = cmd[0], cmd[1:]
    out = subprocess.run([py, "-X", "importtime", *rest], capture_output=True, text=True,
                         check=True).stderr
    rows = []
    for line in out.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum_us, name = line[len("import time:"):].split("|")
        rows.append((int(cum_us), name.strip()))
    return sorted(rows, reverse=True)[:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21, help="runs of each command (alternating)")
    ap.add_argument("--archive", help="the archive to cat (default: the bundled sample's)")
    ap.add_argument("--path", default="/etc/os-release", help="the file to cat")
    ap.add_argument("--before", metavar="PYTHON",
                    help="also run the clipctl next to this interpreter (an older install)")
    ap.add_argument("--preload", action="append", default=[], metavar="MOD,MOD",
                    help="also run the cat with these modules imported first (repeatable)")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args()

    py = sys.executable
    clipctl = str(Path(py).parent / "clipctl")
    if not os.access(clipctl, os.X_OK):
        raise SystemExit(f"no clipctl console script next to {py}")
    with tempfile.TemporaryDirectory() as tmp:
        archive = args.archive
        if archive is None:
            archive = os.path.join(tmp, "sample.clip")
            subprocess.run([clipctl, "demo", "--keep", tmp], check=True,
                           stdout=subprocess.DEVNULL)
        cmds = {"base": [py, "-c", "pass"], "re": [py, "-c", "import re"],
                "deps": [py, "-c", DEPS], "read": [py, "-c", READ, archive, args.path],
                "cat": [clipctl, "cat", archive, args.path]}
        if args.before:
            cmds["before"] = [str(Path(args.before).parent / "clipctl"), "cat", archive, args.path]
        for mods in ["", *args.preload] if args.preload else []:
            cmds[f"preload:{mods}"] = [py, "-c", PRELOAD, mods, archive, args.path]
        for cmd in cmds.values():  # warm the page cache and the .pyc files
            run_once(cmd)
        cpu: dict[str, list[float]] = {key: [] for key in cmds}
        wall: dict[str, list[float]] = {key: [] for key in cmds}
        for _ in range(args.runs):
            for key, cmd in cmds.items():
                c, w = run_once(cmd)
                cpu[key].append(c)
                wall[key].append(w)
        imports = top_imports([py, clipctl, "cat", archive, args.path])

    def med(xs: list[float]) -> float:
        return statistics.median(xs) * 1000

    def label(key: str) -> str:
        if key == "re":
            return "`python -c 'import re'` (the console script's own import)"
        if key == "deps":
            return f"`python -c '{DEPS}'` (the floor)"
        if key == "read":
            return "the read alone: `commands.cmd_cat` with the parser's defaults (READ)"
        if key.startswith("preload:"):
            mods = key.partition(":")[2]
            return (f"`clipcy.cli.main` cat after importing {mods}" if mods
                    else "`clipcy.cli.main` cat (python -c, the --preload rows' reference)")
        return f"`clipctl cat ARCHIVE {args.path}`" + (" (--before)" if key == "before" else "")

    lines = [
        f"# clipctl start-up ({runinfo.machine()}; commit {runinfo.commit()}, "
        f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f})",
        "",
        f"{args.runs} runs of each, alternating; medians; Python {sys.version.split()[0]}.",
        "",
        "| command | CPU ms (x `python -c pass`) | wall ms (x) |",
        "|---|---:|---:|",
        f"| `python -c pass` | {med(cpu['base']):.1f} | {med(wall['base']):.1f} |",
        *(f"| {label(key)} | {med(cpu[key]):.1f} ({med(cpu[key]) / med(cpu['base']):.2f}x) "
          f"| {med(wall[key]):.1f} ({med(wall[key]) / med(wall['base']):.2f}x) |"
          for key in cmds if key != "base"),
        "",
        "Largest cumulative imports of one `cat` (-X importtime, µs):",
        "",
        *(f"- {name}: {us}" for us, name in imports),
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
