"""Every test-corpus image (tests/corpus/build.sh) read through a real registry, its layout deleted.

For each layout: a copy is pushed to Debian's docker-registry with skopeo (--preserve-digests),
indexed with `--storage-ref docker://127.0.0.1:PORT/NAME`, and deleted; then `clipctl extract`
rebuilds every image's tree from the registry alone and tree.py compares it with the
oracle's expected tree (types, modes, owners, xattrs, sha256 of every file).
Also through clipctl: the span cache (a second read makes no request, across processes),
--storage overriding the recorded ref, faults on the wire, and auth with no secret leaking.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import remoteserv as rs  # noqa: E402
from corpus.cases import TREE_PY, TREES, expected_name, tree_id  # noqa: E402

pytestmark = pytest.mark.skipif(not rs.have_tools(), reason="docker-registry/skopeo absent")


def _case_id(c: tuple[str, str, str | None]) -> str:
    return tree_id(*c)


def clipctl(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], capture_output=True,
                          cwd=cwd, env=env, timeout=600)


class Pushed:
    def __init__(self, reg: rs.Registry, archives: dict[str, Path], fallback: list[str],
                 tmp: Path, expected: Path) -> None:
        self.reg = reg
        self.expected = expected  # the corpus's expected/ folder
        self.archives = archives
        self.fallback = fallback  # layouts whose blobs skopeo did not push faithfully
        self.tmp = tmp


def _registry_has(reg: rs.Registry, name: str, digest: str) -> bool:
    import urllib.request

    req = urllib.request.Request(f"http://{reg.host}/v2/{name}/blobs/{digest}", method="HEAD")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def pushed(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    tmp = tmp_path_factory.mktemp("remote-corpus")
    reg = rs.Registry(tmp / "registry")
    archives: dict[str, Path] = {}
    fallback: list[str] = []
    try:
        for layout in sorted({c[0] for c in TREES}):
            copy = tmp / "layouts" / layout
            shutil.copytree(corpus / layout, copy)
            failed = False
            for k, (_, tag, _p) in enumerate(c for c in TREES if c[0] == layout):
                failed |= reg.push(copy, tag, layout, f"t{k}").returncode != 0
            for name, tag, platform in (c for c in TREES if c[0] == layout):
                out = tmp / "archives" / f"{_case_id((name, tag, platform)).replace('/', '_')}.clip"
                out.parent.mkdir(exist_ok=True)
                argv = ["index-layout", "--layout", str(copy), "--tag", tag, "--out", str(out),
                        "--storage-ref", f"docker://{reg.host}/{layout}", "--no-cache",
                        "--checkpoint-mib", "0.25",
                        # blobs skopeo could not push are uploaded below, once the archive
                        # names them: the registry may lack them until then
                        "--no-check-storage"]
                if platform:
                    argv += ["--platform", platform]
                r = clipctl(*argv, cwd=tmp)
                assert r.returncode == 0, r.stderr.decode()
                archives[_case_id((name, tag, platform))] = out
                # skopeo 1.9's oci: transport cannot read every layout (Docker media types in
                # an OCI index are "not found"). The reads
                # need only the layer blobs, by digest: upload those that are missing with the
                # distribution API's monolithic upload, and say so.
                from clipcy import open_archive

                with open_archive(out) as arc:
                    for layer in arc.layers:
                        if not _registry_has(reg, layout, layer["digest"]):
                            blob = copy / "blobs" / "sha256" / layer["digest"].split(":")[1]
                            rs.upload_blob(f"http://{reg.host}", layout, layer["digest"],
                                           blob.read_bytes())
                            if layout not in fallback:
                                fallback.append(layout)
            # a layout skopeo pushed must have every layer in the registry, digests preserved
            assert failed or layout not in fallback, layout
            shutil.rmtree(copy)  # the blobs now live only in the registry
        if fallback:
            print(f"\nremote corpus: blobs uploaded with the registry API for {fallback}")
        yield Pushed(reg, archives, fallback, tmp, corpus / "expected")
    finally:
        reg.stop()


def _tree_compare(expected: Path, dest: Path, tmp: Path) -> str:
    actual = tmp / "actual.jsonl"
    with open(actual, "w") as f:
        subprocess.run([sys.executable, str(TREE_PY), "rootfs", str(dest)], stdout=f, check=True)
    out = subprocess.run([sys.executable, str(TREE_PY), "compare", str(expected), str(actual)],
                         capture_output=True, text=True)
    return out.stdout if out.returncode else ""


@pytest.mark.skipif(os.geteuid() != 0, reason="owners, devices and xattrs need root")
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c[0] == "big"
                                  else c for c in TREES], ids=_case_id)
def test_extract_from_registry_matches_expected_tree(
    pushed: Pushed, tmp_path: Path, case: tuple[str, str, str | None]
) -> None:
    dest = tmp_path / "rootfs"
    r = clipctl("extract", str(pushed.archives[_case_id(case)]), "-C", str(dest),
                "--cache-dir", str(tmp_path / "spans"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    diffs = _tree_compare(pushed.expected / expected_name(*case), dest, tmp_path)
    assert diffs == "", diffs


def _expected_files(expected: Path, case: str) -> dict[str, dict[str, Any]]:
    """The file records of one case's expected tree (expected: the corpus's expected/)."""
    recs = {}
    tree = next(c for c in TREES if _case_id(c) == case)
    for line in (expected / expected_name(*tree)).open():
        rec = json.loads(line)
        if rec["type"] == "file":
            recs[rec["path"]] = rec
    return recs


@pytest.fixture
def proxy(pushed: Pushed) -> Iterator[rs.FaultProxy]:
    p = rs.FaultProxy(pushed.reg.host)
    try:
        yield p
    finally:
        p.close()


def _biggest(expected: Path, case: str) -> tuple[str, dict[str, Any]]:
    return max(_expected_files(expected, case).items(), key=lambda kv: kv[1]["size"])


def test_second_read_makes_no_request(pushed: Pushed, proxy: rs.FaultProxy,
                                      tmp_path: Path) -> None:
    """The span cache on disk: a second process reading the same file asks nothing."""
    import hashlib

    path, rec = _biggest(pushed.expected, "basic@latest")
    argv = ["cat", str(pushed.archives["basic@latest"]), path, "--storage",
            f"docker://127.0.0.1:{proxy.port}/basic", "--cache-dir", str(tmp_path / "spans")]
    first = clipctl(*argv, cwd=tmp_path)
    assert first.returncode == 0, first.stderr.decode()
    assert hashlib.sha256(first.stdout).hexdigest() == rec["sha256"]
    n = proxy.blob_requests()
    assert n >= 1
    second = clipctl(*argv, cwd=tmp_path)
    assert second.stdout == first.stdout
    assert proxy.blob_requests() == n
    # a damaged cache entry is not used: it is fetched again, and the bytes are right
    entries = sorted((tmp_path / "spans").rglob("*-*"), key=lambda p: p.stat().st_size)
    victim = entries[-1]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    victim.write_bytes(raw)
    third = clipctl(*argv, cwd=tmp_path)
    assert third.stdout == first.stdout
    assert proxy.blob_requests() == n + 1
    # --no-cache: every run asks
    fourth = clipctl(*argv[:-2], "--no-cache", cwd=tmp_path)
    assert fourth.stdout == first.stdout and proxy.blob_requests() > n + 1


def test_storage_overrides_recorded_ref(pushed: Pushed, corpus: Path, tmp_path: Path) -> None:
    """An archive indexed with a directory ref reads from the registry with --storage, and
    from a directory with --layout; giving both is a usage error."""
    import hashlib

    arc = tmp_path / "local.clip"
    r = clipctl("index-layout", "--layout", str(corpus / "zstd-multiframe"), "--tag", "latest",
                "--out", str(arc), "--no-cache", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    path, rec = _biggest(pushed.expected, "zstd-multiframe@latest")
    r = clipctl("cat", str(arc), path, "--storage",
                f"docker://{pushed.reg.host}/zstd-multiframe", "--no-cache", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert hashlib.sha256(r.stdout).hexdigest() == rec["sha256"]
    r = clipctl("cat", str(arc), path, "--storage", "docker://x.example/y",
                "--layout", str(corpus / "zstd-multiframe"), cwd=tmp_path)
    assert r.returncode == 2 and b"not allowed with argument" in r.stderr
    r = clipctl("cat", str(arc), path, "--storage", "docker://x.example/Y", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith(b"clipctl: error: storage ref ")


FAULTS = ["503", "429", "reset", "truncate", "badrange", "flip", "200", "redirect", "503"]


@pytest.mark.parametrize("case", ["basic@latest", "zstd-multiframe@latest",
                                  "multimember@latest", "plain@latest"])
def test_faults_byte_exact(pushed: Pushed, proxy: rs.FaultProxy, tmp_path: Path,
                           case: str) -> None:
    """Every fault once, spread over a whole read of every file: the bytes are right."""
    import hashlib

    from clipcy import open_archive
    from clipcy.storage.http import HttpOptions
    from clipcy.storage.registry import RemoteOptions

    layout = case.split("@")[0]
    opts = RemoteOptions(cache=False, http=HttpOptions(backoff=0.01, backoff_max=0.05,
                                                       retry_after_max=0.1))
    proxy.add(*FAULTS)
    with open_archive(pushed.archives[case], storage=f"docker://127.0.0.1:{proxy.port}/{layout}",
                      remote=opts) as arc:
        for path, rec in _expected_files(pushed.expected, case).items():
            with arc.open(path) as f:
                assert hashlib.sha256(f.read()).hexdigest() == rec["sha256"], path
    assert not proxy.faults  # all were met
    assert proxy.target_log and not any(k.lower() == "authorization"
                                        for h in proxy.target_log for k in h)


@pytest.mark.parametrize("fault,match", [
    ("503", r"HTTP 503 \(after 3 tries\)"),
    ("flip", "span checksum mismatch at compressed offset"),
    ("reset", r"after \d+ of \d+ bytes \(after 3 tries\)"),
])
def test_persistent_fault_is_one_line(pushed: Pushed, proxy: rs.FaultProxy, tmp_path: Path,
                                      fault: str, match: str) -> None:
    import re

    path, _ = _biggest(pushed.expected, "basic@latest")
    proxy.always = fault
    out = tmp_path / "out"
    r = clipctl("extract", str(pushed.archives["basic@latest"]), path, "-C", str(out),
                "--storage", f"docker://127.0.0.1:{proxy.port}/basic", "--no-cache",
                "--retries", "2", cwd=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.startswith("clipctl: error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err
    assert "sha256:" in err  # the blob is named
    if fault != "flip":
        assert f"http://127.0.0.1:{proxy.port}/v2/basic/blobs/sha256:" in err
    # never wrong bytes: the file is absent or incomplete-and-removed, never different
    written = out / path.lstrip("/")
    assert not written.exists()


USER, PASSWORD = "clipuser", "pa55-w0rd-secret"


@pytest.mark.skipif(shutil.which("htpasswd") is None, reason="no htpasswd")
def test_auth_through_cli_leaks_no_secret(corpus: Path, tmp_path: Path) -> None:
    import hashlib

    ht = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True,
                        check=True).stdout
    (tmp_path / "htpasswd").write_text(ht)
    reg = rs.Registry(tmp_path / "reg", {"htpasswd": {"realm": "clipcy",
                                                      "path": str(tmp_path / "htpasswd")}})
    try:
        r = reg.push(corpus / "basic", "latest", "basic", "latest", f"{USER}:{PASSWORD}")
        assert r.returncode == 0, r.stderr
        arc = tmp_path / "basic.clip"
        authfile = tmp_path / "auth.json"
        authfile.write_text(json.dumps({"auths": {reg.host: {"auth": base64.b64encode(
            f"{USER}:{PASSWORD}".encode()).decode()}}}))
        # index-layout checks that the blobs are at the ref: it needs the credentials too
        r2 = clipctl("index-layout", "--layout", str(corpus / "basic"), "--tag", "latest",
                     "--out", str(arc), "--storage-ref", f"docker://{reg.host}/basic",
                     "--no-cache", "--authfile", str(authfile), cwd=tmp_path)
        assert r2.returncode == 0, r2.stderr.decode()
        env = dict(os.environ, HOME=str(tmp_path / "home"))
        env.pop("REGISTRY_AUTH_FILE", None)
        env.pop("XDG_RUNTIME_DIR", None)
        path, rec = _biggest(corpus / "expected", "basic@latest")
        denied = clipctl("cat", str(arc), path, "--no-cache", cwd=tmp_path, env=env)
        assert denied.returncode == 1
        assert b"requires authentication and no credentials" in denied.stderr
        ok = clipctl("-vv", "cat", str(arc), path, "--authfile", str(authfile), "--no-cache",
                     cwd=tmp_path, env=env)
        assert ok.returncode == 0, ok.stderr.decode()
        assert hashlib.sha256(ok.stdout).hexdigest() == rec["sha256"]
        assert b"GET " in ok.stderr  # the debug log names the requests...
        b64 = base64.b64encode(f"{USER}:{PASSWORD}".encode())
        insp = clipctl("inspect", str(arc), "--json", cwd=tmp_path)
        for blob in (ok.stderr, denied.stderr, insp.stdout, arc.read_bytes()):
            assert PASSWORD.encode() not in blob and b64 not in blob  # ...but no secret
    finally:
        reg.stop()


@pytest.mark.parametrize("case", ["basic@latest", "multimember@latest", "big@latest"])
def test_cold_random_read_is_one_request(pushed: Pushed, proxy: rs.FaultProxy,
                                         case: str) -> None:
    """A 64 KiB read at a random offset: one range request from its resume point (the
    reader says how far it will read), whatever the file; read-ahead keeps a sequential
    read of the same file to a few requests."""
    import hashlib
    import random

    from clipcy import open_archive
    from clipcy.storage.registry import RemoteOptions

    rng = random.Random(case)
    files = sorted((r["size"], p) for p, r in _expected_files(pushed.expected, case).items()
                   if r["size"] >= 1 << 20)
    layout = case.split("@")[0]
    for size, path in files[-3:]:
        for _ in range(3):
            off = rng.randrange(0, size - (64 << 10))
            before = len(proxy.log)
            with open_archive(pushed.archives[case], remote=RemoteOptions(cache=False),
                              storage=f"docker://127.0.0.1:{proxy.port}/{layout}") as arc:
                with arc.open(path) as f:
                    f.seek(off)
                    assert len(f.read(64 << 10)) == 64 << 10
            # counted once the archive is closed: no helper can still be on its way
            assert sum(len(r) for r in _ranges_by_blob(proxy, before).values()) == 1, (path, off)
    size, path = files[-1]
    before = len(proxy.log)
    with open_archive(pushed.archives[case], remote=RemoteOptions(cache=False),
                      storage=f"docker://127.0.0.1:{proxy.port}/{layout}") as arc:
        with arc.open(path) as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        end = _compressed_end(arc, path)
    assert digest == _expected_files(pushed.expected, case)[path]["sha256"]
    # read-ahead splits the read into as many requests as the machine's timing makes, so
    # what is checked is what they fetched (from the log, once the archive is closed): one
    # run of bytes up to the file's compressed end, no range twice, hardly a byte twice,
    # and no request smaller than a span unless it is the last
    (ranges,) = _ranges_by_blob(proxy, before).values()
    ((lo, hi),) = _union(ranges)
    assert hi <= end, (ranges, end)
    for i, (a, b) in enumerate(ranges):
        for j, (c, d) in enumerate(ranges):
            assert i == j or not (c <= a and b <= d), ((a, b), (c, d))
    assert sum(b - a for a, b in ranges) <= (hi - lo) * 1.02, ranges
    assert len(ranges) <= (hi - lo) // (64 << 10) + 1, ranges


def _starts(proxy: rs.FaultProxy, since: int = 0) -> list[int]:
    """The first byte of each blob range request the proxy saw, in order."""
    return [int(rng[len("bytes="):].split("-")[0]) for p, rng, _ in proxy.log[since:]
            if "/blobs/" in p and rng]


def test_first_request_is_the_readers_own(pushed: Pushed, proxy: rs.FaultProxy) -> None:
    """A fresh archive reading a file whole: the request the reader waits for (from the
    resume point) goes first; read-ahead is asked for once the blob's URL is resolved, and
    does not queue ahead of it (fetches take turns until then)."""
    import hashlib

    from clipcy import open_archive
    from clipcy.storage.registry import RemoteOptions

    path, rec = _biggest(pushed.expected, "basic@latest")
    with open_archive(pushed.archives["basic@latest"], remote=RemoteOptions(cache=False),
                      storage=f"docker://127.0.0.1:{proxy.port}/basic") as arc:
        with arc.open(path) as f:  # in 1 MiB reads, as cat and extract do
            data = b"".join(iter(lambda: f.read(1 << 20), b""))
    assert hashlib.sha256(data).hexdigest() == rec["sha256"]
    starts = _starts(proxy)
    assert len(starts) >= 2, starts  # the file is read with read-ahead
    assert starts[0] == min(starts), starts


def _compressed_end(arc: Any, path: str) -> int:
    """The span boundary at or after the compressed bytes that reading path whole needs."""
    node = arc.stat(path)
    reader = arc.layer_reader(node.layer)
    spans = reader.blob.table
    end = reader._compressed_end(node.offset + node.size)
    return int(spans.bounds(spans.index(min(end, spans.size) - 1))[1])


@pytest.mark.parametrize("case,path", [
    ("basic@latest", "/usr/lib/libbig.so"),  # gzip
    ("multimember@latest", None),  # gzip members
])
@pytest.mark.parametrize("fault", ["", "flip", "reset", "503"])
def test_prefetch_is_used_and_checked(pushed: Pushed, proxy: rs.FaultProxy, case: str,
                                      path: str | None, fault: str) -> None:
    """A prefetched file start (the next file of an extract) is fetched on a helper thread
    in one request that stops within the file's compressed end; the file's first read then
    takes it without a request of its own; a fault on the prefetch (damaged bytes, a reset,
    a 503) still gives exact bytes."""
    import hashlib

    from clipcy import open_archive
    from clipcy.layers.blobread import PREFETCH_OUT
    from clipcy.storage.http import HttpOptions
    from clipcy.storage.registry import RemoteOptions

    files = _expected_files(pushed.expected, case)
    path = path or max((p for p, r in files.items() if r["size"] <= PREFETCH_OUT),
                       key=lambda p: files[p]["size"])
    layout = case.split("@")[0]
    opts = RemoteOptions(cache=False, http=HttpOptions(backoff=0.01, backoff_max=0.05))
    with open_archive(pushed.archives[case], storage=f"docker://127.0.0.1:{proxy.port}/{layout}",
                      remote=opts) as arc:
        node = arc.stat(path)
        other = max((n for n in arc.walk() if n.type == "file" and n.size
                     and n.layer == node.layer and n.path != node.path),
                    key=lambda n: abs(n.offset - node.offset))
        with arc.open(other.path) as f:  # resolves the blob URL, as an extract's first
            f.read(1)  # file does, far from the file to prefetch
        end = _compressed_end(arc, path)
        before = len(proxy.log)
        if fault:
            proxy.add(fault)
        arc._blob_store().prefetch([node])
        assert proxy.log.wait_len(before + 1), "no prefetch request"
        first = _starts(proxy, before)
        assert first, "no prefetch request"
        rng = proxy.log[before][1]
        assert int(rng.split("-")[1]) < end, (rng, end)  # never past the file's end
        with arc.open(path) as f:
            data = b"".join(iter(lambda: f.read(1 << 20), b""))
        assert hashlib.sha256(data).hexdigest() == files[path]["sha256"]
        if not fault:  # the read took the prefetched bytes: it asked only for what
            # follows them, if anything (the decoder may read one piece further)
            lo, hi = (int(x) for x in rng[len("bytes="):].split("-"))
            for _, later, _ in proxy.log[before + 1:]:
                a, b = (int(x) for x in later[len("bytes="):].split("-"))
                assert b < lo or a > hi, (rng, later)


def test_extract_several_files_reads_ahead_within_them(pushed: Pushed, proxy: rs.FaultProxy,
                                                       tmp_path: Path) -> None:
    """`clipctl extract` of chosen files tells the store the next files: every request ends
    within the compressed bytes of the chosen files, and the files are exact; a fault that
    persists is one line, and no file is left cut short."""
    import hashlib

    from clipcy import open_archive

    case = "basic@latest"
    files = _expected_files(pushed.expected, case)
    paths = sorted(files, key=lambda p: -files[p]["size"])[:4]
    with open_archive(pushed.archives[case]) as arc:
        ends = {arc.stat(p).layer: 0 for p in paths}
        for p in paths:
            layer = arc.stat(p).layer
            ends[layer] = max(ends[layer], _compressed_end(arc, p))
        digests = {layer["digest"]: i for i, layer in enumerate(arc.layers)}
    out = tmp_path / "out"
    r = clipctl("extract", str(pushed.archives[case]), *paths, "-C", str(out), "--storage",
                f"docker://127.0.0.1:{proxy.port}/basic", "--no-cache", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    for p in paths:
        assert hashlib.sha256((out / p.lstrip("/")).read_bytes()).hexdigest() == \
            files[p]["sha256"], p
    for url, rng, _ in proxy.log:
        layer = digests[url.rsplit("/", 1)[1]]
        assert int(rng[len("bytes="):].split("-")[1]) < ends[layer], (url, rng)
    proxy.always = "503"
    out2 = tmp_path / "out2"
    r = clipctl("extract", str(pushed.archives[case]), *paths, "-C", str(out2), "--storage",
                f"docker://127.0.0.1:{proxy.port}/basic", "--no-cache", "--retries", "2",
                cwd=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.startswith("clipctl: error: ") and err.count("\n") == 1, err
    assert not [q for q in out2.rglob("*") if q.is_file()]


@pytest.mark.parametrize("case", ["multimember@latest", "basic@latest",
                                  pytest.param("big@latest", marks=pytest.mark.slow)])
def test_extract_lookahead_fetches_each_byte_once(pushed: Pushed, proxy: rs.FaultProxy,
                                                  tmp_path: Path, case: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole extract through the registry with the next files fetched ahead: no more
    requests than without, hardly a compressed byte asked for twice (0.6% on 'big', where
    read-ahead and a prefetch can race for the same span), every file exact."""
    import hashlib

    import clipcy.extract as extract
    from clipcy import open_archive
    from clipcy.storage.registry import RemoteOptions

    layout = case.split("@")[0]
    files = _expected_files(pushed.expected, case)
    asked: dict[int, tuple[int, int]] = {}
    for lookahead in (0, extract.LOOKAHEAD_NODES):
        monkeypatch.setattr(extract, "LOOKAHEAD_NODES", lookahead)
        before = len(proxy.log)
        out = tmp_path / f"out{lookahead}"
        with open_archive(pushed.archives[case], remote=RemoteOptions(cache=False),
                          storage=f"docker://127.0.0.1:{proxy.port}/{layout}") as arc:
            extract.extract_archive(arc, out)
            sizes = {layer["digest"]: layer["size"] for layer in arc.layers}
        # read from the proxy's log once the extract has returned and the archive is closed
        by_blob = _ranges_by_blob(proxy, before)
        asked[lookahead] = (sum(len(r) for r in by_blob.values()),
                            sum(b - a for r in by_blob.values() for a, b in r))
        for path, rec in files.items():
            q = out / path.lstrip("/")
            assert hashlib.sha256(q.read_bytes()).hexdigest() == rec["sha256"], path
        for digest, ranges in by_blob.items():
            # the blob is fetched whole (nothing missing), within its size
            assert _union(ranges) == [(0, sizes[digest])], (lookahead, digest, ranges)
        # without the lookahead the same range (or one inside another) is never fetched
        # twice; with it, a prefetch and read-ahead may race for a span (CHANGELOG: the
        # bytes it may fetch twice), which the byte bound below limits
        for ranges in by_blob.values() if not lookahead else ():
            for i, (a, b) in enumerate(ranges):
                for j, (c, d) in enumerate(ranges):
                    assert i == j or not (c <= a and b <= d), (lookahead, (a, b), (c, d))
    total = sum(sizes.values())
    for n_requests, nbytes in asked.values():
        assert total <= nbytes <= total * 1.02, asked  # hardly a byte twice
        # no more requests than pieces of the blob a reader can ask for on its own (the
        # first fetch, then read-ahead pieces): nothing split into many small requests
        assert n_requests <= len(sizes) + total // (256 << 10) + 1, asked


def _ranges_by_blob(proxy: rs.FaultProxy, since: int) -> dict[str, list[tuple[int, int]]]:
    """Each blob's range requests, as half-open (start, end) in arrival order."""
    out: dict[str, list[tuple[int, int]]] = {}
    for path, rng, _ in proxy.log[since:]:
        if "/blobs/" in path and rng:
            a, b = rng[len("bytes="):].split("-")
            out.setdefault(path.rsplit("/", 1)[1], []).append((int(a), int(b) + 1))
    return out


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


@pytest.mark.parametrize("case", ["basic@latest", "zstd@latest"])
def test_verify_through_registry(pushed: Pushed, tmp_path: Path, case: str) -> None:
    """verify downloads each blob (checked by its digest while re-indexed) and compares."""
    r = clipctl("verify", str(pushed.archives[case]), "--no-cache", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().endswith(": OK\n")
