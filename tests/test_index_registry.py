"""clipctl index docker://HOST/REPO:TAG: an image indexed straight from a registry (Debian's
docker-registry, images pushed by skopeo from the test corpus) gives the archive that
`skopeo copy` to a layout followed by `index-layout` gives; broken bodies are resumed by
Range, transient errors retried, bad blobs and refused requests one line with no file;
htpasswd and token auth; `--push`, then a mount by reference with no local files runs a
program under chroot.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import remoteserv as rs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAKE_EXEC = ROOT / "tests" / "data" / "mount" / "make-exec-layouts.sh"
USER, PASSWORD = "clipcy-user", "s3cret-Pa55word"
# corpus layouts pushed as REPO:latest (multiarch is an image index of two platforms)
IMAGES = ("basic", "big", "multiarch", "multimember", "plain", "zstd")
CASES = [("basic", None), ("big", None), ("multiarch", "linux/amd64"),
         ("multiarch", "linux/arm64/v8"), ("multimember", None), ("plain", None),
         ("zstd", None)]

pytestmark = pytest.mark.skipif(not rs.have_tools(), reason="docker-registry/skopeo absent")


def cli(*args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # the timeout is a liveness bound only
    return subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, r.stderr
    return r


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("clipctl: error: ") and r.stderr.count("\n") == 1, r.stderr
    return r.stderr


def sections(path: Path) -> dict[int, bytes]:
    """The archive's sections by kind (docs/FORMAT.md: header, then the section table)."""
    data = path.read_bytes()
    (count,) = struct.unpack_from("<I", data, 24)
    out = {}
    for i in range(count):
        kind, _crc, off, length = struct.unpack_from("<IIQQ", data, 32 + 24 * i)
        out[kind] = data[off:off + length]
    return out


def metadata(path: Path) -> dict[str, object]:
    from clipcy.archive.reader import open_archive

    with open_archive(path, storage=str(path.parent)) as arc:
        return dict(arc.metadata)


def same_archive(from_layout: Path, from_registry: Path, *other: str) -> None:
    """Tree, resume points and span checksums byte for byte (every section but METADATA),
    and the metadata but for where the image was read from (source_ref) and `other` keys."""
    a, b = sections(from_layout), sections(from_registry)
    assert sorted(a) == sorted(b)
    for kind in a:
        if kind != 1:
            assert a[kind] == b[kind], f"section {kind} differs"
    ma, mb = metadata(from_layout), metadata(from_registry)
    assert ma.pop("source_ref") != mb.pop("source_ref")
    for key in other:
        del ma[key], mb[key]
    assert ma == mb
    assert ok(cli("export", str(from_layout))).stdout == ok(cli("export",
                                                                 str(from_registry))).stdout


@dataclass
class Pushed:
    reg: rs.Registry
    tmp: Path
    copies: dict[str, Path]  # name -> the layout skopeo copied back from the registry
    policy: Path


def skopeo_copy(src: str, dest: Path, policy: Path, *extra: str) -> None:
    r = subprocess.run(["skopeo", "--policy", str(policy), "copy", "--all", "--quiet",
                        "--src-tls-verify=false", "--preserve-digests", *extra, src,
                        f"oci:{dest}:latest"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def pushed(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    tmp = tmp_path_factory.mktemp("index-registry")
    reg = rs.Registry(tmp / "registry")
    policy = tmp / "policy.json"
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    try:
        copies = {}
        (tmp / "copies").mkdir()
        for name in IMAGES:
            r = reg.push(corpus / name, "latest", name, "latest")
            assert r.returncode == 0, r.stderr
            copies[name] = tmp / "copies" / name
            skopeo_copy(f"docker://{reg.host}/{name}:latest", copies[name], policy)
        yield Pushed(reg, tmp, copies, policy)
    finally:
        reg.stop()


def index_layout(p: Pushed, name: str, platform: str | None, out: Path,
                 storage: str | None = None) -> Path:
    ok(cli("-q", "index-layout", "--layout", str(p.copies[name]), "--tag", "latest",
           "--out", str(out), "--no-cache", "--no-check-storage", "--storage-ref",
           storage or f"docker://{p.reg.host}/{name}",
           *(["--platform", platform] if platform else [])))
    return out


def layers_of(p: Pushed, name: str) -> list[dict[str, object]]:
    """The layer descriptors of a single-platform image in the copied layout."""
    root = p.copies[name]
    idx = json.loads((root / "index.json").read_text())
    blob = root / "blobs" / "sha256" / idx["manifests"][0]["digest"].split(":")[1]
    layers: list[dict[str, object]] = json.loads(blob.read_text())["layers"]
    return layers


# -- the same archive as skopeo copy + index-layout ------------------------------------------
@pytest.mark.parametrize("name,platform", CASES,
                         ids=[n + (f"@{p}" if p else "") for n, p in CASES])
def test_equals_skopeo_copy_then_index_layout(pushed: Pushed, tmp_path: Path, name: str,
                                              platform: str | None) -> None:
    ref = index_layout(pushed, name, platform, tmp_path / "layout.clip")
    out = tmp_path / "registry.clip"
    r = ok(cli("index", f"docker://{pushed.reg.host}/{name}:latest", "--out", str(out),
               "--json", "--progress", "none",
               *(["--platform", platform] if platform else [])))
    same_archive(ref, out)
    meta = metadata(out)
    assert meta["storage_ref"] == f"docker://{pushed.reg.host}/{name}"  # the default
    assert meta["source_ref"] == f"docker://{pushed.reg.host}/{name}:latest"
    assert json.loads(r.stdout)["manifest_digest"] == meta["manifest_digest"]


def test_python_api_and_digest_reference(pushed: Pushed, tmp_path: Path) -> None:
    from clipcy import create_index_only_archive_from_registry

    ref = index_layout(pushed, "basic", None, tmp_path / "layout.clip")
    digest = metadata(ref)["manifest_digest"]
    out = tmp_path / "api.clip"
    summary = create_index_only_archive_from_registry(
        f"docker://{pushed.reg.host}/basic@{digest}", out)
    assert summary.manifest_digest == digest and summary.layer_count == 3
    same_archive(ref, out, "tag")
    assert metadata(out)["tag"] is None


def test_each_layer_streamed_once(pushed: Pushed, tmp_path: Path) -> None:
    """One GET per layer blob, no Range: the whole blob in one body, several at once."""
    proxy = rs.FaultProxy(pushed.reg.host)
    try:
        out = tmp_path / "x.clip"
        ok(cli("index", f"docker://127.0.0.1:{proxy.port}/basic", "--out", str(out),
               "--workers", "3"))
        for layer in layers_of(pushed, "basic"):
            got = [(rng, st) for path, rng, st in proxy.log if path.endswith(str(layer["digest"]))]
            assert got == [("", 200)]
    finally:
        proxy.close()


# -- faults ----------------------------------------------------------------------------------
@pytest.fixture
def proxy(pushed: Pushed) -> Iterator[rs.FaultProxy]:
    p = rs.FaultProxy(pushed.reg.host)
    try:
        yield p
    finally:
        p.close()


def _through(proxy: rs.FaultProxy, pushed: Pushed, out: Path,
             *extra: str) -> subprocess.CompletedProcess[str]:
    # one layer at a time: the blob GETs come in order (the config first, then layer 0)
    return cli("index", f"docker://127.0.0.1:{proxy.port}/basic:latest", "--out", str(out),
               "--workers", "1", "--storage-ref", f"docker://{pushed.reg.host}/basic",
               "--no-check-storage", *extra)


@pytest.mark.parametrize("faults", [("truncate",), ("truncate", "200"), ("reset", "503"),
                                    ("503", "429", "truncate", "reset")])
def test_broken_bodies_resume(pushed: Pushed, proxy: rs.FaultProxy, tmp_path: Path,
                              faults: tuple[str, ...]) -> None:
    """A body cut mid-stream goes on from the byte reached (Range: bytes=N-); a server that
    answers that with 200 is skipped to N; 503 and 429 are retried. The archive is the
    same as without faults."""
    ref = index_layout(pushed, "basic", None, tmp_path / "layout.clip")
    proxy.add("", *faults)  # "": the config's GET goes through
    out = tmp_path / "x.clip"
    ok(_through(proxy, pushed, out))
    same_archive(ref, out)
    layer0 = layers_of(pushed, "basic")[0]
    got = [(rng, st) for path, rng, st in proxy.log if path.endswith(str(layer0["digest"]))]
    half = int(str(layer0["size"])) // 2
    # one GET per fault, and one more unless the last fault's answer was the rest
    assert len(got) == len(faults) + (faults[-1] != "200"), got
    for i, fault in enumerate(faults):
        if fault == "truncate" and got[i][0] == "":  # half the body, then the connection ends
            assert got[i + 1][0] == f"bytes={half}-", got
    # a reset may lose what the kernel held: each GET goes on from the byte reached
    offsets = [int(rng[len("bytes="):-1]) for rng, _ in got if rng]
    assert offsets == sorted(offsets) and all(o > 0 for o in offsets), got
    if "200" in faults:
        assert got[-1] == (f"bytes={half}-", 200)


@pytest.mark.parametrize("faults,match", [
    (("", "flip"), "digest"),  # a flipped byte in layer 0
    (("flip",), "config blob sha256:"),  # ... in the config
])
def test_wrong_bytes_one_line_no_file(pushed: Pushed, proxy: rs.FaultProxy, tmp_path: Path,
                                      faults: tuple[str, ...], match: str) -> None:
    proxy.add(*faults)
    out = tmp_path / "x.clip"
    err = one_line(_through(proxy, pushed, out))
    assert match in err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_5xx_after_retries(pushed: Pushed, proxy: rs.FaultProxy, tmp_path: Path) -> None:
    proxy.add("")
    proxy.always = "503"
    out = tmp_path / "x.clip"
    err = one_line(_through(proxy, pushed, out, "--retries", "2"))
    assert "HTTP 503" in err and "after 3 tries" in err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_unknown_repository_or_tag(pushed: Pushed, tmp_path: Path) -> None:
    out = tmp_path / "x.clip"
    for ref in (f"docker://{pushed.reg.host}/nothere:latest",
                f"docker://{pushed.reg.host}/basic:nothere",
                f"docker://{pushed.reg.host}/basic@sha256:{'0' * 64}"):
        err = one_line(cli("index", ref, "--out", str(out)))
        assert "HTTP 404" in err
        assert not out.exists()
    err = one_line(cli("index", f"docker://{pushed.reg.host}/multiarch", "--out", str(out),
                       "--platform", "linux/s390x"))
    assert "no manifest for platform linux/s390x" in err
    err = one_line(cli("index", f"docker://{pushed.reg.host}/basic:Bad Tag", "--out",
                       str(out)))
    assert not out.exists()
    err = one_line(cli("index", str(pushed.copies["basic"]), "--out", str(out), "--push"))
    assert "--push needs an image in a registry" in err


# -- credentials ---------------------------------------------------------------------------------
def _auth_case(reg: rs.Registry, pushed: Pushed, tmp: Path) -> None:
    assert reg.push(pushed.copies["basic"], "latest", "basic", "latest",
                    f"{USER}:{PASSWORD}").returncode == 0
    env = {"HOME": str(tmp / "home"), "REGISTRY_AUTH_FILE": "", "XDG_RUNTIME_DIR": ""}
    ref = f"docker://{reg.host}/basic:latest"
    out = tmp / "x.clip"
    err = one_line(cli("index", ref, "--out", str(out), env=env))
    assert "requires authentication" in err and not out.exists()
    authfile = tmp / "auth.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    r = ok(cli("-vv", "index", ref, "--out", str(out), "--authfile", str(authfile),
               "--workers", "3", env=env))
    ref_archive = index_layout(pushed, "basic", None, tmp / "layout.clip",
                               f"docker://{reg.host}/basic")
    same_archive(ref_archive, out)
    for text in (r.stdout.encode(), r.stderr.encode(), out.read_bytes()):
        assert PASSWORD.encode() not in text and token.encode() not in text


@pytest.mark.skipif(shutil.which("htpasswd") is None, reason="no htpasswd")
def test_htpasswd_auth(pushed: Pushed, tmp_path: Path) -> None:
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True,
                              text=True, check=True).stdout
    (tmp_path / "htpasswd").write_text(htpasswd)
    reg = rs.Registry(tmp_path / "reg", {"htpasswd": {"realm": "clipcy-test",
                                                      "path": str(tmp_path / "htpasswd")}})
    try:
        _auth_case(reg, pushed, tmp_path)
    finally:
        reg.stop()


def test_token_auth(pushed: Pushed, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    issuer = rs.TokenIssuer(tmp_path, users={USER: PASSWORD})
    reg = rs.Registry(tmp_path / "reg", issuer.config())
    try:
        _auth_case(reg, pushed, tmp_path)
    finally:
        reg.stop()
        issuer.close()


# -- one-step build, then a start with nothing local ----------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="the mount tests run as root")
def test_push_then_mount_by_reference_runs_a_program(tmp_path: Path) -> None:
    """index --push on one machine; on another (a fresh HOME, no files at all) the image
    is mounted by its reference and busybox runs from it under chroot."""
    from clipcy.fusemount import available
    from clipcy.fusemount.service import is_mounted, unmount

    if not available():
        pytest.skip("FUSE unavailable")
    for tool in ("umoci", "ldd", "chroot"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    if not Path("/bin/busybox").is_file():
        pytest.skip("needs /bin/busybox (busybox-static)")
    layouts = tmp_path / "exec"
    subprocess.run([str(MAKE_EXEC), str(layouts)], check=True, capture_output=True)
    reg = rs.Registry(tmp_path / "registry")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        assert reg.push(layouts / "busybox", "latest", "tools/busybox", "v1").returncode == 0
        build = tmp_path / "build"
        build.mkdir()
        ref = f"docker://{reg.host}/tools/busybox:v1"
        r = ok(cli("index", ref, "--out", "bb.clip", "--push", "--json", cwd=build))
        done = json.loads(r.stdout)
        assert done["pushed"]["tag"] == "v1.clip"
        assert done["pushed"]["subject"] == done["manifest_digest"]
        from clipcy.archive.reader import open_archive

        with open_archive(build / "bb.clip") as arc:  # its blobs: from the registry
            want = hashlib.sha256(arc.open("/data/random.bin").read()).hexdigest()
        shutil.rmtree(build)
        shutil.rmtree(layouts)
        home = tmp_path / "home"
        env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
               "XDG_STATE_HOME": str(home / ".state"), "XDG_CONFIG_HOME": str(home / ".config"),
               "REGISTRY_AUTH_FILE": "", "XDG_RUNTIME_DIR": ""}
        ok(cli("mount", ref, str(mnt), env=env))
        try:
            script = "busybox cat /etc/hello; busybox sha256sum /data/random.bin"
            run = subprocess.run(["chroot", str(mnt), "/bin/busybox", "sh", "-c", script],
                                 capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stderr
        finally:
            ok(cli("umount", str(mnt)))
        assert run.stdout == f"hello from the image\n{want}  /data/random.bin\n"
    finally:
        for _ in range(3):
            if not is_mounted(mnt):
                break
            unmount(mnt, lazy=True)
        reg.stop()
