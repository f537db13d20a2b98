"""Shared fixtures. The first lines make sure the tests import the *installed* clipcy."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# `python -m pytest` puts the checkout on sys.path; the checkout has no compiled modules
# (unless built in place), so drop it and import the installed package instead.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != _ROOT]
sys.path.insert(0, str(_ROOT / "tests"))  # shared helpers: samples.py, remoteserv.py

import shutil  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

import clipcy  # noqa: E402

ROOT = _ROOT
DATA = ROOT / "tests" / "data"


# Parallel by default (pyproject's addopts: -n auto): most tests wait on child processes, a
# registry or a mount, so two workers per core pay. Beyond that, every worker sets up its own
# module fixtures (registries, indexed corpora) and the machine's disk, not its cores, limits.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(MAX_WORKERS, 2 * len(os.sched_getaffinity(0))))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse a stale in-place build: a .so older than its .pyx (or any .pxd)."""
    pkg = Path(clipcy.__file__).resolve().parent
    if pkg != ROOT / "clipcy" or os.environ.get("CLIPCY_ALLOW_STALE"):
        return  # a regular install: nothing in the checkout is used
    sources = list(pkg.rglob("*.pxd"))
    for so in pkg.rglob("_*.*.so"):
        pyx = so.parent / (so.name.split(".")[0] + ".pyx")
        newest = max([p.stat().st_mtime for p in sources + [pyx] if p.exists()], default=0)
        if newest > so.stat().st_mtime:
            pytest.exit(
                f"{so.name} is older than its sources: rebuild with "
                "'pip install --no-build-isolation -e .' "
                "(or set CLIPCY_ALLOW_STALE=1 to run anyway)",
                returncode=3,
            )


# -- the test corpus: tests/corpus/build.sh, built once and cached ---------------------------
CORPUS_SRC = ROOT / "tests" / "corpus"
# tool -> the Debian package that has it (README, "Set up")
CORPUS_TOOLS = {
    "umoci": "umoci", "skopeo": "skopeo", "bsdtar": "libarchive-tools", "pigz": "pigz",
    "zstd": "zstd", "pzstd": "zstd", "setfattr": "attr", "tar": "tar", "gzip": "gzip",
    "unshare": "util-linux", "mknod": "coreutils", "truncate": "coreutils",
}
# read before any test points XDG_CACHE_HOME at its own directory (_private_layer_cache)
CORPUS_CACHE = Path(
    os.environ.get("CLIPCY_CORPUS_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipcy-test-corpus"
)


def corpus_key() -> str:
    """A hash of what decides the corpus's bytes: the files of tests/corpus and the versions
    of the tools that write archives (other versions compress differently)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(CORPUS_SRC.iterdir()):
        if path.suffix in (".sh", ".py"):
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for tool in ("tar", "bsdtar", "gzip", "pigz", "zstd", "umoci", "skopeo"):
        r = subprocess.run([tool, "--version"], capture_output=True)
        h.update(tool.encode() + b"\0" + r.stdout + r.stderr + b"\0")
    return h.hexdigest()[:20]


def build_corpus(out: Path, *, expected: bool = True) -> None:
    """Run build.sh into the new directory out; a failure names the step and its output."""
    env = dict(os.environ, PYTHON=sys.executable, SKIP_EXPECTED="0" if expected else "1")
    r = subprocess.run(
        ["bash", str(CORPUS_SRC / "build.sh"), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if r.returncode:
        raise RuntimeError(f"tests/corpus/build.sh {out} failed:\n{r.stderr[-4000:]}")


@pytest.fixture(scope="session")
def corpus_builder() -> Any:
    """build_corpus, for the reproducibility test (conftest is not importable)."""
    return build_corpus


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The layouts, tars and expected trees of tests/corpus/build.sh (see its header).

    Built once into $XDG_CACHE_HOME/clipcy-test-corpus/KEY (CLIPCY_CORPUS_CACHE overrides
    the folder), KEY = corpus_key(); later sessions reuse it. A build goes to a temporary
    sibling renamed into place when complete, under a lock, so concurrent sessions neither
    build twice nor see half a corpus. Skipped, with the reason, only without the tools or
    without root (chown, mknod and umoci unpack need it) when nothing is cached yet.
    """
    import fcntl
    import time

    missing = [t for t in CORPUS_TOOLS if shutil.which(t) is None]
    if missing:
        pkgs = " ".join(sorted({CORPUS_TOOLS[t] for t in missing}))
        pytest.skip(f"the test corpus needs {', '.join(missing)} (apt-get install {pkgs})")
    final = CORPUS_CACHE / corpus_key()
    if final.is_dir():
        os.utime(final)  # in use: not pruned (below)
        return final
    if os.geteuid() != 0:
        pytest.skip("building the test corpus needs root (chown, mknod, umoci unpack)")
    CORPUS_CACHE.mkdir(parents=True, exist_ok=True)
    with open(CORPUS_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.is_dir():  # another session may have built it while we waited
            for old in CORPUS_CACHE.iterdir():  # half-built by a session that was killed
                if old.name.endswith(".part"):
                    shutil.rmtree(old, ignore_errors=True)
            part = CORPUS_CACHE / f"{final.name}.{os.getpid()}.part"
            build_corpus(part)
            part.rename(final)
        # other keys (older scripts or tools) unused for a week
        for old in CORPUS_CACHE.iterdir():
            if old.is_dir() and old != final and time.time() - old.stat().st_mtime > 7 * 86400:
                shutil.rmtree(old, ignore_errors=True)
    return final


def write_layout(
    root: Path,
    layers: list[bytes],
    tag: str = "latest",
    gzip_layers: bool = True,
    arch: str = "amd64",
) -> Path:
    """A minimal OCI layout with the given uncompressed layer tars (for hostile-input tests;
    real-tool layouts come from tests/corpus/build.sh and clipcy/sample)."""
    import gzip
    import hashlib
    import json

    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return "sha256:" + digest, len(data)

    descs, diff_ids = [], []
    for tar in layers:
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        blob = gzip.compress(tar, mtime=0) if gzip_layers else tar
        digest, size = put(blob)
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip_layers else "")
        descs.append({"mediaType": media, "digest": digest, "size": size})
    config = {
        "architecture": arch,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }
    cdigest, csize = put(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": cdigest,
            "size": csize,
        },
        "layers": descs,
    }
    mdigest, msize = put(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdigest,
                "size": msize,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return root


def make_tar(members: list[tuple[str, str, bytes]]) -> bytes:
    """A PAX tar from (name, kind, data-or-linkname) with kind file/dir/symlink/hardlink."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
            }[kind]
            info.mode = 0o755 if kind == "dir" else 0o777
            info.linkname = data.decode()
            tf.addfile(info)
    return buf.getvalue()


@pytest.fixture
def layout_factory() -> object:
    return write_layout


@pytest.fixture
def tar_factory() -> object:
    return make_tar


@pytest.fixture
def mnt(tmp_path: Path) -> Any:
    """An empty directory to mount on; unmounted (lazily) if a test left it mounted."""
    from clipcy.fusemount.service import is_mounted, unmount

    d = tmp_path / "mnt"
    d.mkdir()
    yield d
    for _ in range(3):
        if not is_mounted(d):
            break
        unmount(d, lazy=True)


@pytest.fixture(autouse=True)
def _private_layer_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets an empty layer cache (clipctl index-layout caches by default)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))


# -- bounded CLI runs (hostile inputs, limits, interruptions) ----------------------------
MIB = 1 << 20


def _rlimits(mem: int, cpu: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))


def run_bounded(
    argv: list[str], *, mem: int = 1024 * MIB, cpu: int = 60, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """`python -I -m clipcy ARGV` with its address space, CPU seconds and wall time bounded:
    a run that would take unbounded memory or time fails the test instead of the machine."""
    import functools

    return subprocess.run(
        [sys.executable, "-I", "-m", "clipcy", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=functools.partial(_rlimits, mem, cpu),
        **kw,
    )


def one_line_error(r: subprocess.CompletedProcess[str], match: str) -> str:
    """Exit 1 and one `clipctl: error:` line containing match (warnings may precede it)."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("clipctl: error: ")]
    assert len(errors) == 1 and r.stderr.rstrip().endswith(errors[0]), r.stderr
    assert match in errors[0], errors[0]
    return errors[0]


def load_test_module(relpath: str) -> Any:
    """A helper module of tests/ by path (tests/ is not a package)."""
    import importlib.util

    path = ROOT / "tests" / relpath
    name = "clipcy_tests_" + path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def bounded() -> Any:
    """run_bounded and one_line_error, for test modules (conftest is not importable)."""
    import types

    return types.SimpleNamespace(run=run_bounded, error=one_line_error, MIB=MIB)


@pytest.fixture(scope="session")
def hostile() -> Any:
    """tests/hostile/make.py (the hostile corpus), once the tools it runs are present."""
    mod = load_test_module("hostile/make.py")
    for tool in mod.TOOLS:
        if shutil.which(tool) is None:
            pytest.skip(f"the hostile corpus needs {tool}")
    return mod
