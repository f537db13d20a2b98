"""Remote blob reads against a real registry (Debian's docker-registry), with real auth
(htpasswd bcrypt, a token issuer), a fault-injecting proxy, and the on-disk span cache.

These tests drive clipcy.storage's fetchers through the Python API on the sample layout's
blobs; test_remote_corpus.py reads whole images through clipctl.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import remoteserv as rs  # noqa: E402

from clipcy.errors import LayoutError, RemoteAuthError, RemoteError, StorageRefError  # noqa: E402
from clipcy.storage.diskcache import DiskSpanCache  # noqa: E402
from clipcy.storage.http import HttpOptions, redact  # noqa: E402
from clipcy.storage.refs import DOCKER, HTTP, parse_digest, parse_storage_ref  # noqa: E402
from clipcy.storage.registry import RemoteOptions, RemoteStore  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "clipcy" / "sample"
needs_registry = pytest.mark.skipif(not rs.have_tools(), reason="docker-registry/skopeo absent")
FAST = HttpOptions(backoff=0.01, backoff_max=0.05, retry_after_max=1.0)


def sample_layers() -> list[tuple[str, int, bytes]]:
    idx = json.loads((SAMPLE / "index.json").read_text())
    man = json.loads((SAMPLE / "blobs" / "sha256" /
                      idx["manifests"][0]["digest"].split(":")[1]).read_text())
    out = []
    for layer in man["layers"]:
        data = (SAMPLE / "blobs" / "sha256" / layer["digest"].split(":")[1]).read_bytes()
        out.append((layer["digest"], layer["size"], data))
    return out


def _push_sample(reg: rs.Registry, creds: str | None = None) -> None:
    r = reg.push(SAMPLE, "latest", "sample", "latest", creds)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rs.Registry]:
    if not rs.have_tools():
        pytest.skip("docker-registry/skopeo absent")
    reg = rs.Registry(tmp_path_factory.mktemp("registry"))
    try:
        _push_sample(reg)
        yield reg
    finally:
        reg.stop()


def _store(ref: str, **kw: Any) -> RemoteStore:
    opts = dict(cache=False, http=FAST)
    opts.update(kw)
    return RemoteStore(parse_storage_ref(ref), RemoteOptions(**opts))


# -- storage refs ------------------------------------------------------------------------
@pytest.mark.parametrize("ref,kind,host,repo", [
    ("docker://127.0.0.1:5000/sample", DOCKER, "127.0.0.1:5000", "sample"),
    ("docker://registry.example.com/ns/app", DOCKER, "registry.example.com", "ns/app"),
    ("docker://localhost/a-b/c__d.e", DOCKER, "localhost", "a-b/c__d.e"),
    ("docker://docker.io/alpine", DOCKER, "registry-1.docker.io", "library/alpine"),
    ("docker://[::1]:5000/x", DOCKER, "[::1]:5000", "x"),
    ("https://blobs.example.com/base/", HTTP, "blobs.example.com", ""),
])
def test_parse_storage_ref(ref: str, kind: str, host: str, repo: str) -> None:
    r = parse_storage_ref(ref)
    assert (r.kind, r.host, r.repo) == (kind, host, repo)


@pytest.mark.parametrize("ref,match", [
    ("docker://127.0.0.1:5000", "names no repository"),
    ("docker://127.0.0.1:5000/sample:latest", "names a tag"),
    ("docker://127.0.0.1:5000/sample@sha256:00", "names an image digest"),
    ("docker://user:secret@127.0.0.1:5000/sample", "carries credentials"),
    ("https://user:secret@example.com/base", "carries credentials"),
    ("docker://127.0.0.1:99999/sample", "bad port"),
    ("docker://127.0.0.1:5000/Sample", "not a valid repository"),
    ("docker://sample/x", "not a registry host"),
    ("https://example.com/base?sig=1", "no query"),
    ("s3://bucket/x", "unsupported storage ref scheme 's3'"),
    ("", "empty storage ref"),
])
def test_bad_storage_ref(ref: str, match: str) -> None:
    with pytest.raises(StorageRefError, match=match) as ei:
        parse_storage_ref(ref)
    assert "secret" not in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.parametrize("digest,ok", [
    ("sha256:" + "0123456789abcdef" * 4, True),
    ("sha512:" + "f" * 128, True),
    ("sha256:" + "A" * 64, False),  # uppercase: not an OCI digest
    ("sha256:" + "0" * 63, False),
    ("sha256:" + "0" * 65, False),
    ("sha256:" + "0" * 63 + "g", False),
    ("sha256:" + "0" * 63 + "\n", False),
    ("sha256:" + "0" * 62 + "/.", False),
    ("sha256:", False),
    ("md5:" + "0" * 32, False),
    ("sha256" + "0" * 64, False),
    (None, False),
])
def test_parse_digest(digest: object, ok: bool) -> None:
    if ok:
        assert isinstance(digest, str)
        assert parse_digest(digest) == tuple(digest.split(":"))
    else:
        with pytest.raises(LayoutError, match="(invalid|unsupported) digest"):
            parse_digest(digest)


def test_index_layout_validates_storage_ref(tmp_path: Path) -> None:
    out = tmp_path / "x.clip"
    for ref in ("docker://127.0.0.1:5000/Bad", "docker://u:secret@h.example/x"):
        r = subprocess.run([sys.executable, "-I", "-m", "clipcy", "index-layout", "--layout",
                            str(SAMPLE), "--tag", "latest", "--out", str(out),
                            "--storage-ref", ref], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 1
        assert r.stderr.startswith("clipctl: error: storage ref "), r.stderr
        assert r.stderr.count("\n") == 1 and "secret" not in r.stderr
        assert not out.exists()


def test_redact() -> None:
    assert redact("https://u:p@h.example:444/a/b?X-Amz-Signature=s") == "https://h.example:444/a/b?…"


# -- plain reads -------------------------------------------------------------------------
@needs_registry
def test_ranges_byte_exact(registry: rs.Registry) -> None:
    st = _store(f"docker://{registry.host}/sample")
    for digest, size, data in sample_layers():
        src = st.source(digest, size)
        for off, n in ((0, 1), (0, size), (size - 1, 1), (size // 3, size // 3), (7, 513)):
            assert src.fetch(off, n) == data[off:off + n]
    # one request per fetch, and the bytes received are the bytes asked for
    st2 = _store(f"docker://{registry.host}/sample")
    digest, size, data = sample_layers()[0]
    st2.source(digest, size).fetch(100, 1000)
    assert (st2.client.requests, st2.client.bytes_received) == (1, 1000)


@needs_registry
def test_missing_blob_and_wrong_size(registry: rs.Registry) -> None:
    st = _store(f"docker://{registry.host}/sample")
    with pytest.raises(RemoteError, match=r"HTTP 404 \(no such blob\)"):
        st.source("sha256:" + "0" * 64, 10).fetch(0, 5)
    digest, size, _ = sample_layers()[0]
    with pytest.raises(RemoteError, match="the archive recorded"):
        st.source(digest, size + 1).fetch(0, 5)


@needs_registry
def test_preconnect(registry: rs.Registry) -> None:
    """preconnect leaves one open connection in the pool, which the next request takes (none
    is opened for it); with one idle already it opens none; a host that refuses is left for
    the request to report."""
    from clipcy.storage.http import HttpClient

    client = HttpClient(FAST)
    url = f"http://{registry.host}/v2/"
    try:
        client.preconnect(url)
        pool = client._pool.connection_from_url(url)
        assert pool.num_connections == 1
        r = client.request(url, {})
        assert r.status == 200
        r.read()
        r.release_conn()
        client.preconnect(url)
        assert pool.num_connections == 1 and pool.num_requests == 1
    finally:
        client.close()
    refused = HttpClient(FAST)
    try:
        url = f"http://127.0.0.1:{rs.free_port()}/v2/"
        refused.preconnect(url)  # no error here
        import urllib3

        with pytest.raises(urllib3.exceptions.NewConnectionError):
            refused.request(url, {})
    finally:
        refused.close()


@needs_registry
def test_http_base_url_store(proxy: rs.FaultProxy) -> None:
    """http(s)://BASE: blobs at BASE/sha256/HEX (the proxy's second address serves the
    registry's blobs under /static/NAME/sha256/HEX, with ranges)."""
    st = _store(f"http://127.0.0.2:{proxy.target_port}/static/sample/")
    for digest, size, data in sample_layers():
        assert st.blob_url(digest) == (f"http://127.0.0.2:{proxy.target_port}/static/sample/"
                                       f"sha256/{digest.split(':')[1]}")
        assert st.source(digest, size).fetch(3, size - 5) == data[3:size - 2]


# -- faults --------------------------------------------------------------------------------
@pytest.fixture
def proxy(registry: rs.Registry) -> Iterator[rs.FaultProxy]:
    p = rs.FaultProxy(registry.host)
    try:
        yield p
    finally:
        p.close()


@needs_registry
@pytest.mark.parametrize("faults", [
    ["503"], ["503", "503", "503"], ["429"], ["reset"], ["truncate"], ["badrange"],
    ["reset", "truncate", "503"], ["200"],
])
def test_faults_are_retried(proxy: rs.FaultProxy, faults: list[str]) -> None:
    st = _store(f"docker://127.0.0.1:{proxy.port}/sample")
    digest, size, data = sample_layers()[0]
    proxy.add(*faults)
    off, n = size // 4, size // 2
    assert st.source(digest, size).fetch(off, n) == data[off:off + n]
    assert not proxy.faults
    expect = 1 if faults == ["200"] else len(faults) + 1
    assert proxy.blob_requests() == expect


@needs_registry
def test_read_timeout_is_retried(proxy: rs.FaultProxy) -> None:
    st = _store(f"docker://127.0.0.1:{proxy.port}/sample", http=HttpOptions(
        read_timeout=0.3, backoff=0.01, backoff_max=0.02))
    digest, size, data = sample_layers()[0]
    proxy.add("stall")
    assert st.source(digest, size).fetch(5, 500) == data[5:505]  # the second try
    proxy.always = "stall"
    st2 = _store(f"docker://127.0.0.1:{proxy.port}/sample", http=HttpOptions(
        read_timeout=0.3, tries=2, backoff=0.01, backoff_max=0.02))
    with pytest.raises(RemoteError, match=r"read timed out \(after 2 tries\)"):
        st2.source(digest, size).fetch(0, 10)


@needs_registry
def test_retries_end_in_one_line(proxy: rs.FaultProxy) -> None:
    st = _store(f"docker://127.0.0.1:{proxy.port}/sample", http=HttpOptions(
        tries=3, backoff=0.01, backoff_max=0.02))
    digest, size, _ = sample_layers()[0]
    proxy.always = "503"
    with pytest.raises(RemoteError) as ei:
        st.source(digest, size).fetch(0, 100)
    msg = str(ei.value)
    assert msg == (f"cannot read blob {digest} from http://127.0.0.1:{proxy.port}/v2/sample/"
                   f"blobs/{digest}: HTTP 503 (after 3 tries)")
    assert proxy.blob_requests() == 3


@needs_registry
def test_200_for_range_is_bounded(proxy: rs.FaultProxy) -> None:
    st = _store(f"docker://127.0.0.1:{proxy.port}/sample",
                http=HttpOptions(whole_body_max=1000, backoff=0.01))
    digest, size, data = sample_layers()[0]
    proxy.always = "200"
    assert st.source(digest, size).fetch(10, 500) == data[10:510]  # within the bound
    with pytest.raises(RemoteError, match=r"ignored the Range request \(HTTP 200"):
        st.source(digest, size).fetch(2000, 10)
    assert proxy.blob_requests() == 2  # not retried


@needs_registry
def test_flipped_bytes_reach_the_verifier(proxy: rs.FaultProxy) -> None:
    """HTTP cannot see a flipped byte: the fetcher returns what came, unverified (the span
    reader's checksums catch it: test_remote_corpus.py)."""
    st = _store(f"docker://127.0.0.1:{proxy.port}/sample")
    digest, size, data = sample_layers()[0]
    proxy.add("flip")
    assert st.source(digest, size).fetch(0, 1000) != data[:1000]


@needs_registry
def test_redirect_cached_and_no_authorization_elsewhere(tmp_path: Path) -> None:
    reg, proxy = _auth_registry(tmp_path)
    try:
        st = _store(f"docker://127.0.0.1:{proxy.port}/sample",
                    authfile=str(_authfile(tmp_path, f"127.0.0.1:{proxy.port}")))
        digest, size, data = sample_layers()[0]
        src = st.source(digest, size)
        assert src.fetch(0, 10) == data[:10]  # 401, then with credentials
        proxy.add("redirect")
        assert src.fetch(10, 100) == data[10:110]
        n_origin = proxy.blob_requests()
        assert src.fetch(200, 100) == data[200:300]  # straight to the cached location
        assert proxy.blob_requests() == n_origin
        assert len(proxy.target_log) == 2
        # an expired presigned URL: re-resolved once through the origin
        proxy.target_expire = 1
        proxy.add("redirect")
        assert src.fetch(300, 100) == data[300:400]
        assert proxy.blob_requests() == n_origin + 1
        assert len(proxy.target_log) == 4
        assert all("Authorization" not in h and "authorization" not in h
                   for h in proxy.target_log)
    finally:
        proxy.close()
        reg.stop()


# -- auth ------------------------------------------------------------------------------------
USER, PASSWORD = "clipuser", "s3cr3t-pa55"


def _authfile(tmp: Path, host: str, user: str = USER, password: str = PASSWORD) -> Path:
    path = tmp / f"auth-{'good' if password == PASSWORD else 'bad'}.json"
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def _auth_registry(tmp: Path) -> tuple[rs.Registry, rs.FaultProxy]:
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True,
                              text=True, check=True).stdout
    (tmp / "htpasswd").write_text(htpasswd)
    reg = rs.Registry(tmp / "reg", {"htpasswd": {"realm": "clipcy-test",
                                                 "path": str(tmp / "htpasswd")}})
    _push_sample(reg, f"{USER}:{PASSWORD}")
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return reg, rs.FaultProxy(reg.host, target_auth=basic)


needs_htpasswd = pytest.mark.skipif(shutil.which("htpasswd") is None, reason="no htpasswd")


@needs_registry
@needs_htpasswd
def test_basic_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg, proxy = _auth_registry(tmp_path)
    proxy.close()
    try:
        digest, size, data = sample_layers()[0]
        ref = f"docker://{reg.host}/sample"
        # no credentials anywhere
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        with pytest.raises(RemoteAuthError, match="requires authentication and no "
                           "credentials for it were found"):
            _store(ref).source(digest, size).fetch(0, 10)
        # wrong password
        bad = _authfile(tmp_path, reg.host, password="wrong-" + PASSWORD)
        with pytest.raises(RemoteAuthError, match="rejected the credentials") as ei:
            _store(ref, authfile=str(bad)).source(digest, size).fetch(0, 10)
        assert PASSWORD not in str(ei.value) and "\n" not in str(ei.value)
        # the lookup order: REGISTRY_AUTH_FILE, then XDG_RUNTIME_DIR, then ~/.config, ~/.docker
        good = _authfile(tmp_path, reg.host)
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(good))
        assert _store(ref).source(digest, size).fetch(5, 50) == data[5:55]
        monkeypatch.delenv("REGISTRY_AUTH_FILE")
        docker = tmp_path / "home" / ".docker" / "config.json"
        docker.parent.mkdir(parents=True)
        docker.write_text(json.dumps({"auths": {f"https://{reg.host}/v1/": {
            "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
        assert _store(ref).source(digest, size).fetch(5, 50) == data[5:55]
        xdg = tmp_path / "run"
        (xdg / "containers").mkdir(parents=True)
        (xdg / "containers" / "auth.json").write_text(bad.read_text())
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))  # found first, and wrong
        with pytest.raises(RemoteAuthError, match=str(xdg)):
            _store(ref).source(digest, size).fetch(0, 10)
        # --authfile beats them all
        assert _store(ref, authfile=str(good)).source(digest, size).fetch(0, 9) == data[:9]
    finally:
        reg.stop()


HELPER = """#!{python}
# stands in for docker-credential-pass/-secretservice: a store of host -> [user, secret]
import json, sys
assert sys.argv[1:] == ["get"], sys.argv
host = sys.stdin.read().strip()
creds = json.load(open({store!r})).get(host)
if creds is None:
    print("credentials not found in native keychain")
    sys.exit(1)
json.dump({{"ServerURL": host, "Username": creds[0], "Secret": creds[1]}}, sys.stdout)
"""


@needs_registry
@needs_htpasswd
def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~/.docker/config.json's credsStore and credHelpers run docker-credential-NAME get, as
    Docker does, through the API and through `clipctl cat`."""
    reg, proxy = _auth_registry(tmp_path)
    proxy.close()
    try:
        digest, size, data = sample_layers()[0]
        ref = f"docker://{reg.host}/sample"
        home = tmp_path / "home"
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        store = tmp_path / "store.json"
        store.write_text(json.dumps({reg.host: [USER, PASSWORD]}))
        bindir = tmp_path / "bin"
        bindir.mkdir()
        helper = bindir / "docker-credential-clipcytest"
        helper.write_text(HELPER.format(python=sys.executable, store=str(store)))
        helper.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        docker = home / ".docker" / "config.json"
        docker.parent.mkdir(parents=True)
        # credsStore: the helper for every host (Docker leaves an empty auths entry)
        docker.write_text(json.dumps({"credsStore": "clipcytest", "auths": {reg.host: {}}}))
        assert _store(ref).source(digest, size).fetch(5, 50) == data[5:55]
        # credHelpers names one for this host, and beats credsStore
        docker.write_text(json.dumps({"credsStore": "absent",
                                      "credHelpers": {reg.host: "clipcytest"}}))
        assert _store(ref).source(digest, size).fetch(0, 9) == data[:9]
        # through the command line
        arc = tmp_path / "sample.clip"
        r = subprocess.run([sys.executable, "-I", "-m", "clipcy", "-q", "index-layout",
                            "--layout", str(SAMPLE), "--tag", "latest", "--out", str(arc),
                            "--no-cache",
                            "--storage-ref", ref], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([sys.executable, "-I", "-m", "clipcy", "cat", str(arc),
                            "/etc/os-release", "--no-cache"], capture_output=True, text=True)
        assert r.returncode == 0 and "PRETTY_NAME" in r.stdout, r.stderr
        # wrong secret from the helper: rejected, and the secret is in no message
        store.write_text(json.dumps({reg.host: [USER, "wrong-" + PASSWORD]}))
        with pytest.raises(RemoteAuthError, match="rejected the credentials") as ei:
            _store(ref).source(digest, size).fetch(0, 10)
        assert PASSWORD not in str(ei.value)
        # nothing for this host in the helper: as if there were no credentials
        store.write_text("{}")
        with pytest.raises(RemoteAuthError, match="no credentials for it were found"):
            _store(ref).source(digest, size).fetch(0, 10)
        # a helper that is not installed, or that fails: one line naming it
        docker.write_text(json.dumps({"credsStore": "absent"}))
        with pytest.raises(RemoteAuthError, match="docker-credential-absent .* not installed"):
            _store(ref).source(digest, size).fetch(0, 10)
        helper.write_text("#!/bin/sh\necho 'keychain locked' >&2\nexit 3\n")
        docker.write_text(json.dumps({"credHelpers": {reg.host: "clipcytest"}}))
        with pytest.raises(RemoteAuthError, match="failed for .*: keychain locked"):
            _store(ref).source(digest, size).fetch(0, 10)
    finally:
        reg.stop()


@needs_registry
def test_token_auth_with_expiry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cryptography")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    issuer = rs.TokenIssuer(tmp_path, users={USER: PASSWORD})
    reg = rs.Registry(tmp_path / "reg", issuer.config())
    try:
        _push_sample(reg, f"{USER}:{PASSWORD}")
        ref = f"docker://{reg.host}/sample"
        digest, size, data = sample_layers()[0]
        # anonymous pull is refused by the issuer
        with pytest.raises(RemoteAuthError, match="requires authentication"):
            _store(ref).source(digest, size).fetch(0, 10)
        # ... until it hands out anonymous pull tokens (a public repository)
        issuer.anonymous_pull = True
        issuer.requests = 0
        anon = _store(ref)
        assert anon.source(digest, size).fetch(0, 10) == data[:10]
        assert anon.source(digest, size).fetch(10, 10) == data[10:20]
        assert issuer.requests == 1 and anon.auth.token_fetches == 1
        issuer.anonymous_pull = False
        authfile = str(_authfile(tmp_path, reg.host))
        st = _store(ref, authfile=authfile)
        src = st.source(digest, size)
        issuer.requests = 0
        for i in range(5):
            assert src.fetch(i * 10, 10) == data[i * 10:i * 10 + 10]
        assert issuer.requests == 1  # cached per scope
        # the registry stops accepting the token (its exp passed) while the client still
        # believes it valid: the first 401 refreshes it, once
        st2 = _store(ref, authfile=authfile)
        src2 = st2.source(digest, size)
        issuer.requests = 0
        assert src2.fetch(0, 10) == data[:10]
        assert issuer.requests == 1
        (held,) = st2.auth._tokens.values()
        issuer.lifetimes.append(-10.0)  # signed by the issuer, refused by the registry: expired
        held.value = issuer.sign(USER, [{"type": "repository", "name": "sample",
                                         "actions": ["pull"]}])
        assert src2.fetch(10, 10) == data[10:20]
        assert issuer.requests == 2 and st2.auth.token_fetches == 2
        (fresh,) = st2.auth._tokens.values()
        assert fresh.value != held.value
        assert src2.fetch(20, 10) == data[20:30]  # the fresh one is kept
        assert issuer.requests == 2
        # a short expires_in: the client refreshes before using a stale token (its clock)
        issuer.expires_in = 1
        st3 = _store(ref, authfile=authfile)
        now = [1000.0]
        st3.auth.clock = lambda: now[0]
        src3 = st3.source(digest, size)
        issuer.requests = 0
        assert src3.fetch(0, 10) == data[:10]
        assert issuer.requests == 1
        now[0] += 0.9  # still valid: no request
        assert src3.fetch(10, 10) == data[10:20]
        assert issuer.requests == 1
        now[0] += 0.2  # past expires_in: a new token before the blob request, not after a 401
        assert src3.fetch(20, 10) == data[20:30]
        assert issuer.requests == 2 and st3.auth.token_fetches == 2
        for s in (st, st2, st3):
            for tok in s.auth._tokens.values():
                assert tok.value not in repr(s.auth) and tok.value not in repr(s.auth.__dict__)
            assert PASSWORD not in repr(s.auth.__dict__)
    finally:
        reg.stop()
        issuer.close()


@needs_registry
def test_token_in_access_token_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token server that answers as OAuth2 does ({"access_token": ...}, no "token")."""
    pytest.importorskip("cryptography")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    issuer = rs.TokenIssuer(tmp_path, users={USER: PASSWORD})
    reg = rs.Registry(tmp_path / "reg", issuer.config())
    try:
        _push_sample(reg, f"{USER}:{PASSWORD}")
        issuer.token_field = "access_token"
        issuer.requests = 0
        digest, size, data = sample_layers()[0]
        st = _store(f"docker://{reg.host}/sample", authfile=str(_authfile(tmp_path, reg.host)))
        assert st.source(digest, size).fetch(7, 40) == data[7:47]
        assert issuer.requests == 1
        issuer.token_field = "no_token_here"
        st = _store(f"docker://{reg.host}/sample", authfile=str(_authfile(tmp_path, reg.host)))
        with pytest.raises(RemoteAuthError, match="sent no usable token"):
            st.source(digest, size).fetch(0, 10)
    finally:
        reg.stop()
        issuer.close()


# -- span cache ------------------------------------------------------------------------------
DIG = "sha256:" + "ab" * 32


def test_span_cache_roundtrip_and_damage(tmp_path: Path) -> None:
    c = DiskSpanCache(tmp_path / "c", 1 << 20)
    assert c.get(DIG, 0, 5) is None
    c.put(DIG, 0, b"hello")
    assert c.get(DIG, 0, 5) == b"hello"
    assert c.get(DIG, 0, 4) is None and c.get(DIG, 1, 5) is None
    # survives a restart
    assert DiskSpanCache(tmp_path / "c", 1 << 20).get(DIG, 0, 5) == b"hello"
    # a damaged entry is a miss and is removed
    (path,) = [p for p in (tmp_path / "c").rglob("0-5")]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(raw)
    assert c.get(DIG, 0, 5) is None
    assert not path.exists()


def test_span_cache_memory_front(tmp_path: Path) -> None:
    """The entries put last are also kept in memory, up to memory_bytes: a get of one does not
    read its file (deleted here), an older one comes from the disk again."""
    c = DiskSpanCache(tmp_path / "c", 1 << 20, memory_bytes=10)
    c.put(DIG, 0, b"hello")
    c.put(DIG, 5, b"world")
    for p in (tmp_path / "c").rglob("*-5"):
        p.unlink()
    assert c.get(DIG, 0, 5) == b"hello" and c.get(DIG, 5, 5) == b"world"
    assert c.get(DIG, 0, 4) is None  # the length is part of the key
    c.put(DIG, 10, b"abcde")  # over memory_bytes: the least recently used one (0) goes
    assert c.get(DIG, 0, 5) is None and c.get(DIG, 5, 5) == b"world"
    assert c.get(DIG, 10, 5) == b"abcde"
    plain = DiskSpanCache(tmp_path / "d", 1 << 20)  # memory_bytes=0: the disk only
    plain.put(DIG, 0, b"hello")
    for p in (tmp_path / "d").rglob("0-5"):
        p.unlink()
    assert plain.get(DIG, 0, 5) is None


def test_span_cache_lru_bound(tmp_path: Path) -> None:
    c = DiskSpanCache(tmp_path / "c", 100_000)
    base = time.time() - 10_000

    def age(offset: int, t: float) -> None:  # explicit times: no two entries in one tick
        os.utime(next((tmp_path / "c").rglob(f"{offset}-10000")), (t, t))

    for i in range(30):
        c.put(DIG, i * 10_000, bytes([i]) * 10_000)
        age(i * 10_000, base + i)
        if i > 5:
            assert c.get(DIG, 0, 10_000) == bytes([0]) * 10_000  # span 0 stays in use
            age(0, base + i + 0.5)
    assert c.size() <= 100_000
    assert c.get(DIG, 0, 10_000) == bytes([0]) * 10_000
    assert c.get(DIG, 29 * 10_000, 10_000) == bytes([29]) * 10_000
    assert c.get(DIG, 10_000, 10_000) is None


_WRITER = """
import sys
from clipcy.storage.diskcache import DiskSpanCache
DIG = "sha256:" + "ab" * 32
c = DiskSpanCache(sys.argv[1], 2_000_000)
for i in range(300):
    k = i % 50
    c.put(DIG, k * 1000, bytes([k]) * (1000 + k))
    got = c.get(DIG, k * 1000, 1000 + k)
    assert got is None or got == bytes([k]) * (1000 + k)
"""


def test_span_cache_concurrent_processes(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-I", "-c", _WRITER, str(tmp_path / "c")],
                              cwd=tmp_path) for _ in range(4)]
    for p in procs:
        assert p.wait(120) == 0
    c = DiskSpanCache(tmp_path / "c", 2_000_000)
    for i in range(50):
        assert c.get(DIG, i * 1000, 1000 + i) == bytes([i]) * (1000 + i)
    assert not list((tmp_path / "c").rglob(".tmp-*"))


# -- TLS, --insecure, timeouts and the span cache bound, through clipctl -----------------------
def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # a liveness bound only: each case below ends in well under a second when it works
    return subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("clipctl: error: ") and r.stderr.count("\n") == 1, r.stderr
    return r.stderr


@pytest.fixture(scope="module")
def sample_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    arc = tmp_path_factory.mktemp("sample") / "sample.clip"
    r = _cli("-q", "index-layout", "--layout", str(SAMPLE), "--tag", "latest", "--out", str(arc),
             "--no-cache")
    assert r.returncode == 0, r.stderr
    return arc


def test_https_with_a_ca_file(sample_clip: Path, tmp_path: Path) -> None:
    """A blob store behind TLS with a certificate of a private CA: refused until the CA is
    trusted (SSL_CERT_FILE, as for every OpenSSL client), then read."""
    pytest.importorskip("cryptography")
    ca, server_pem = rs.self_signed(tmp_path)
    srv = rs.BlobServer(SAMPLE, certfile=server_pem)
    try:
        plain = _cli("cat", str(sample_clip), "/etc/os-release", "--no-cache")
        assert plain.returncode == 0 and "PRETTY_NAME" in plain.stdout, plain.stderr
        err = _one_line(_cli("cat", str(sample_clip), "/etc/os-release", "--no-cache",
                             "--storage", srv.url, env={"SSL_CERT_FILE": str(tmp_path / "no")}))
        assert "TLS certificate not trusted (unable to get local issuer certificate;" in err, err
        assert "SSL_CERT_FILE" in err and "tries" not in err  # not retried: it cannot succeed
        assert srv.requests == 0  # the handshake failed: no request got through
        r = _cli("cat", str(sample_clip), "/etc/os-release", "--no-cache", "--storage", srv.url,
                 env={"SSL_CERT_FILE": str(ca)})
        assert r.returncode == 0, r.stderr
        assert r.stdout == plain.stdout
        assert srv.requests >= 1  # through this server
    finally:
        srv.close()


@needs_registry
def test_insecure_is_plain_http_for_a_registry(registry: rs.Registry) -> None:
    """docker:// is https except for loopback names; 127.0.0.2 is not one of them, so a
    plain-http registry there needs --insecure (the proxy's second address serves the
    registry's API without auth)."""
    digest, size, data = sample_layers()[0]
    proxy = rs.FaultProxy(registry.host)
    try:
        ref = f"docker://127.0.0.2:{proxy.target_port}/sample"
        with pytest.raises(RemoteError, match="127.0.0.2"):  # https to a plain-http server
            _store(ref).source(digest, size).fetch(0, 10)
        assert not proxy.target_log
        assert _store(ref, insecure=True).source(digest, size).fetch(0, 10) == data[:10]
        assert proxy.target_log  # plain http, to 127.0.0.2
    finally:
        proxy.close()


def test_read_timeout_is_one_line_not_a_hang(sample_clip: Path) -> None:
    """A server that accepts and never answers: --read-timeout ends each try, and the last
    one is a one-line error (the subprocess timeout is only a liveness bound)."""
    srv = rs.BlobServer(SAMPLE)
    srv.silent.set()
    try:
        err = _one_line(_cli("cat", str(sample_clip), "/etc/os-release", "--no-cache",
                             "--storage", srv.url, "--read-timeout", "0.3", "--retries", "1"))
        assert "read timed out (after 2 tries)" in err, err
        assert srv.requests >= 2
    finally:
        srv.close()


def test_connect_timeout_is_one_line_not_a_hang(sample_clip: Path) -> None:
    """A listener whose accept queue is full drops new connections' SYNs: the connect never
    completes, and --connect-timeout ends it."""
    import socket

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    filler = []
    try:
        for _ in range(4):  # fill the accept queue (never accepted)
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            filler.append(s)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this kernel completes connections past a full accept queue")
        except TimeoutError:
            pass
        finally:
            probe.close()
        err = _one_line(_cli("cat", str(sample_clip), "/etc/os-release", "--no-cache",
                             "--storage", f"http://127.0.0.1:{port}/blobs",
                             "--connect-timeout", "0.3", "--retries", "0"))
        assert "127.0.0.1:" in err and "timed out" in err.lower(), err
    finally:
        for s in filler:
            s.close()
        lst.close()


def test_cache_max_mib_bounds_the_span_cache(tmp_path: Path) -> None:
    """--cache-max-mib: after reading a file of several MiB through a remote store, the disk
    span cache holds at most that much (least recently used spans go), and a larger bound
    keeps more."""
    from test_integrity import make_layout  # a layer of a few MiB, compressed

    layout, files, _ = make_layout(tmp_path, "gzip")
    arc = tmp_path / "img.clip"
    r = _cli("-q", "index-layout", "--layout", str(layout), "--out", str(arc), "--no-cache")
    assert r.returncode == 0, r.stderr
    srv = rs.BlobServer(layout)
    try:
        held = {}
        for mib in (1, 64):
            cache = tmp_path / f"spans{mib}"
            r = subprocess.run([sys.executable, "-I", "-m", "clipcy", "cat", str(arc), "/big.bin",
                                "--storage", srv.url, "--cache-dir", str(cache),
                                "--cache-max-mib", str(mib)], capture_output=True, timeout=300)
            assert r.returncode == 0, r.stderr
            assert r.stdout == files["big.bin"]
            held[mib] = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        blob_size = sum(p.stat().st_size for p in (layout / "blobs").rglob("*"))
        assert blob_size > 3 << 19  # bigger than the small bound
        assert 0 < held[1] <= 1 << 20, held
        assert held[64] > 1 << 20, held
    finally:
        srv.close()
