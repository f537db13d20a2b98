"""clipctl mount fails fast: the storage is probed before the mount reports ready.

An unreachable registry, a refused connection, a wrong password or a missing auth file end
`clipctl mount` with exit 1 and the one line `clipctl cat` prints for the same storage, and
leave nothing mounted (/proc/self/mountinfo). The check costs one request per distinct blob
(counted at a proxy). Real FUSE mounts, a real docker-registry (htpasswd for the auth cases).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import remoteserv as rs  # noqa: E402

from clipcy.fusemount import available  # noqa: E402
from clipcy.fusemount.service import unmount  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "clipcy" / "sample"
USER, PASSWORD = "clipuser", "s3cr3t-pa55"
# one try each: the messages are the same as with retries, the failures come sooner
FAST = ["--retries", "0", "--connect-timeout", "2"]

pytestmark = [
    pytest.mark.skipif(not available(), reason="FUSE unavailable (no /dev/fuse or binding)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the mount tests run as root (CI does)"),
    pytest.mark.skipif(not rs.have_tools(), reason="docker-registry/skopeo absent"),
]


def clipctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def mounted_under(path: Path) -> list[str]:
    """Mount points at or under path, from /proc/self/mountinfo."""
    text = Path("/proc/self/mountinfo").read_text()
    return [line.split()[4] for line in text.splitlines()
            if line.split()[4].startswith(str(path))]


@pytest.fixture(scope="module")
def sample_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clip") / "sample.clip"
    r = clipctl("index-layout", "--layout", str(SAMPLE), "--tag", "latest", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No credentials or span cache of the machine's: a home of the test's own."""
    e = {k: v for k, v in os.environ.items()
         if k not in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG")}
    e.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"),
             XDG_STATE_HOME=str(tmp_path / "state"))
    return e


def assert_fails_like_cat(clip: Path, mnt: Path, env: dict[str, str], *storage: str) -> str:
    """clipctl mount exits 1 with one line, cat's line for the same storage (less the read
    it was doing), nothing mounted; the line."""
    cat = clipctl("cat", str(clip), "/etc/hostname", *storage, env=env)
    assert cat.returncode == 1, cat.stderr
    r = clipctl("mount", str(clip), str(mnt), *storage, env=env)
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("clipctl: error: "), r.stderr
    # cat's line names the read too: " (reading N bytes at uncompressed offset X)"
    cat_lines = cat.stderr.splitlines()
    assert len(cat_lines) == 1 and cat_lines[0].startswith(lines[0]), (lines, cat_lines)
    assert cat_lines[0][len(lines[0]):] in ("",) or cat_lines[0][len(lines[0]):].startswith(
        " (reading "), (lines, cat_lines)
    assert mounted_under(mnt) == [] and os.listdir(mnt) == []
    return lines[0]


def test_refused_connection(sample_clip: Path, mnt: Path, env: dict[str, str]) -> None:
    port = rs.free_port()  # nothing listens there
    line = assert_fails_like_cat(sample_clip, mnt, env, "--storage",
                                 f"docker://127.0.0.1:{port}/sample", *FAST)
    assert "cannot read blob sha256:" in line and "cannot connect" in line, line


def test_unreachable_registry(sample_clip: Path, mnt: Path, env: dict[str, str]) -> None:
    """Something answers TCP but never HTTP: it closes every connection at once."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def hang_up() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.close()

    t = threading.Thread(target=hang_up, daemon=True)
    t.start()
    try:
        line = assert_fails_like_cat(sample_clip, mnt, env, "--storage",
                                     f"docker://127.0.0.1:{srv.getsockname()[1]}/sample", *FAST)
        assert "cannot read blob sha256:" in line, line
    finally:
        stop.set()
        # wake the accept with one more connection: the loop then sees `stop` (a shutdown of
        # the listener did not always wake it: the README's test run hung here)
        socket.create_connection(srv.getsockname(), timeout=10).close()
        t.join()
        srv.close()


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rs.Registry]:
    if shutil.which("htpasswd") is None:
        pytest.skip("no htpasswd")
    tmp = tmp_path_factory.mktemp("authreg")
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True,
                              text=True, check=True).stdout
    (tmp / "htpasswd").write_text(htpasswd)
    reg = rs.Registry(tmp / "reg", {"htpasswd": {"realm": "clipcy-test",
                                                 "path": str(tmp / "htpasswd")}})
    try:
        r = reg.push(SAMPLE, "latest", "sample", "latest", f"{USER}:{PASSWORD}")
        assert r.returncode == 0, r.stderr
        yield reg
    finally:
        reg.stop()


def _authfile(path: Path, host: str, password: str) -> Path:
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def test_wrong_password(sample_clip: Path, mnt: Path, env: dict[str, str],
                        auth_registry: rs.Registry, tmp_path: Path) -> None:
    bad = _authfile(tmp_path / "bad.json", auth_registry.host, "wrong-" + PASSWORD)
    line = assert_fails_like_cat(sample_clip, mnt, env, "--storage",
                                 f"docker://{auth_registry.host}/sample", "--authfile", str(bad),
                                 *FAST)
    assert "rejected the credentials" in line and PASSWORD not in line, line
    # the right password mounts, and the files read
    good = _authfile(tmp_path / "good.json", auth_registry.host, PASSWORD)
    r = clipctl("mount", str(sample_clip), str(mnt), "--storage",
                f"docker://{auth_registry.host}/sample", "--authfile", str(good), env=env)
    assert r.returncode == 0, r.stderr
    try:
        assert (mnt / "etc" / "hostname").read_bytes() == subprocess.run(
            [sys.executable, "-I", "-m", "clipcy", "cat", str(sample_clip), "/etc/hostname",
             "--layout", str(SAMPLE)], capture_output=True, check=True, env=env).stdout
    finally:
        unmount(mnt)


def test_no_credentials(sample_clip: Path, mnt: Path, env: dict[str, str],
                        auth_registry: rs.Registry) -> None:
    line = assert_fails_like_cat(sample_clip, mnt, env, "--storage",
                                 f"docker://{auth_registry.host}/sample", *FAST)
    assert "requires authentication" in line, line


def test_missing_auth_file(sample_clip: Path, mnt: Path, env: dict[str, str],
                           auth_registry: rs.Registry, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-auth.json"
    line = assert_fails_like_cat(sample_clip, mnt, env, "--storage",
                                 f"docker://{auth_registry.host}/sample", "--authfile",
                                 str(missing), *FAST)
    assert str(missing) in line, line


def test_missing_local_blob(sample_clip: Path, mnt: Path, env: dict[str, str],
                            tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    shutil.copytree(SAMPLE, layout)
    man = json.loads((layout / "index.json").read_text())["manifests"]
    digest = next(m["digest"] for m in man if m.get("annotations", {}).get(
        "org.opencontainers.image.ref.name") == "latest")
    manifest = json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_text())
    gone = manifest["layers"][0]["digest"]  # /etc/hostname's layer
    (layout / "blobs" / "sha256" / gone.split(":")[1]).unlink()
    line = assert_fails_like_cat(sample_clip, mnt, env, "--layout", str(layout))
    assert gone in line, line


def test_check_is_one_request_per_blob(sample_clip: Path, mnt: Path, env: dict[str, str],
                                       tmp_path: Path) -> None:
    """Before ready the mount sends one blob request per distinct blob, and no more (the
    first reads fetch the bytes)."""
    reg = rs.Registry(tmp_path / "reg")
    proxy = None
    try:
        r = reg.push(SAMPLE, "latest", "sample", "latest")
        assert r.returncode == 0, r.stderr
        proxy = rs.FaultProxy(reg.host)
        r = clipctl("mount", str(sample_clip), str(mnt), "--storage",
                    f"docker://127.0.0.1:{proxy.port}/sample", env=env)
        assert r.returncode == 0, r.stderr
        try:
            idx = json.loads((SAMPLE / "index.json").read_text())["manifests"]
            digest = next(m["digest"] for m in idx if m.get("annotations", {}).get(
                "org.opencontainers.image.ref.name") == "latest")
            layers = json.loads((SAMPLE / "blobs" / "sha256" / digest.split(":")[1])
                                .read_text())["layers"]
            blobs = [(p, rng) for p, rng, _ in proxy.log if "/blobs/" in p]
            assert len(blobs) == len({la["digest"] for la in layers}), blobs
            assert all(rng.startswith("bytes=") for _, rng in blobs)
        finally:
            unmount(mnt)
    finally:
        if proxy is not None:
            proxy.close()
        reg.stop()
