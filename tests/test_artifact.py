"""clipctl push / pull: archives stored beside their images as OCI artifacts, against Debian's
docker-registry (distribution 2.8, no referrers API: the sha256-HEX referrers tag), and a
small referrers-API server in front of it; skopeo pushes the images; htpasswd and token auth.

The Proxy below forwards every method to the registry and logs (method, path, status): the
request counts are exact, whatever the scheduling. It can also answer the referrers API
(`OCI-Subject` on a manifest PUT with a subject, `GET /v2/NAME/referrers/DIGEST`), and
inject faults into chosen requests.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import remoteserv as rs  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "clipcy" / "sample"
USER, PASSWORD = "clipcy-user", "s3cret-Pa55word"
ARTIFACT_TYPE = "application/vnd.clipcy.archive.v2"

pytestmark = pytest.mark.skipif(not rs.have_tools(), reason="docker-registry/skopeo absent")


# -- helpers ------------------------------------------------------------------------------------
def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # the timeout is a liveness bound only
    return subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, r.stderr
    return r


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("clipctl: error: ") and r.stderr.count("\n") == 1, r.stderr
    return r.stderr


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layout_manifest(layout: Path, tag: str) -> str:
    idx = json.loads((layout / "index.json").read_text())
    for m in idx["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return str(m["digest"])
    raise KeyError(tag)


class Api:
    """Plain distribution-API calls a test makes on its own (another tool's view)."""

    def __init__(self, host: str, auth: str | None = None) -> None:
        self.base = f"http://{host}"
        self.auth = auth

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        h = dict(headers or {})
        if self.auth:
            h["Authorization"] = self.auth
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers.items()), e.read()

    def manifest(self, repo: str, ref: str) -> tuple[int, bytes]:
        accept = ("application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.oci.image.index.v1+json")
        st, _, body = self.call("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept})
        return st, body

    def put_manifest(self, repo: str, ref: str, doc: dict[str, Any], media: str) -> str:
        body = json.dumps(doc).encode()
        st, _, err = self.call("PUT", f"/v2/{repo}/manifests/{ref}", body,
                               {"Content-Type": media})
        assert st == 201, (st, err)
        return sha(body)

    def upload(self, repo: str, data: bytes) -> str:
        rs.upload_blob(self.base, repo, sha(data), data, self.auth)
        return sha(data)


# -- the proxy ----------------------------------------------------------------------------------
class Proxy:
    """HTTP proxy on 127.0.0.1 in front of the registry: forwards every method, logs
    (method, path, status), and with `referrers` answers the referrers API itself.

    faults: (METHOD, path regex, kind) applied once each, to the first request matching:
    "503" (answer 503), "drop" (close the connection, nothing forwarded), "lost-answer"
    (forward, then close without answering), "body=TEXT" (forward, answer TEXT instead)."""

    def __init__(self, upstream: str, referrers: bool = False) -> None:
        self.upstream = upstream
        self.log: list[tuple[str, str, int]] = []
        self.faults: collections.deque[tuple[str, str, str]] = collections.deque()
        self.always: tuple[str, str, str] | None = None
        self.referrers: dict[str, list[dict[str, Any]]] | None = {} if referrers else None
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                proxy.handle(self)

            do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def count(self, method: str | None = None, pattern: str = "") -> int:
        return sum(1 for m, p, _ in self.log
                   if (method is None or m == method) and re.search(pattern, p))

    def asked(self) -> list[str]:
        """The log as "METHOD WHAT STATUS", WHAT the path after /v2/REPO/ (manifests/REF,
        referrers/DIGEST, blobs/DIGEST) without its query."""
        def what(path: str) -> str:
            return re.sub(r"^/v2/.+?/(manifests|referrers|blobs)/", r"\1/", path.split("?")[0])

        return [f"{m} {what(p)} {st}" for m, p, st in self.log]

    def _fault(self, method: str, path: str) -> str:
        with self.lock:
            for f in list(self.faults):
                if f[0] == method and re.search(f[1], path):
                    self.faults.remove(f)
                    return f[2]
            if self.always and self.always[0] == method and re.search(self.always[1], path):
                return self.always[2]
        return ""

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        fault = self._fault(method, path)
        if fault == "drop":
            self.log.append((method, path, 0))
            h.close_connection = True
            return
        if fault == "503":
            self.log.append((method, path, 503))
            return self._send(h, 503, [], b"busy")
        m = re.fullmatch(r"/v2/(.+)/referrers/(sha256:[0-9a-f]{64})(\?.*)?", path)
        if self.referrers is not None and method == "GET" and m:
            with self.lock:
                listed = list(self.referrers.get(m.group(2), []))
            doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": listed}
            out = fault[5:].encode() if fault.startswith("body=") else json.dumps(doc).encode()
            self.log.append((method, path, 200))
            return self._send(h, 200, [("Content-Type",
                                        "application/vnd.oci.image.index.v1+json")], out)
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in ("connection", "keep-alive", "proxy-connection")}
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            conn.request(method, path, body=body if method not in ("GET", "HEAD") else None,
                         headers=headers)
            r = conn.getresponse()
            status, rheaders, rbody = r.status, r.getheaders(), r.read()
        finally:
            conn.close()
        self.log.append((method, path, status))
        if fault == "lost-answer":
            h.close_connection = True
            return
        if fault.startswith("body="):
            rbody = fault[5:].encode()
        keep = [(k, v) for k, v in rheaders
                if k.lower() not in ("content-length", "transfer-encoding", "connection")]
        if (self.referrers is not None and method == "PUT" and status == 201
                and "/manifests/" in path):
            doc = json.loads(body)
            subject = doc.get("subject")
            if isinstance(subject, dict):
                desc = {"mediaType": doc.get("mediaType"), "digest": sha(body),
                        "size": len(body), "artifactType": doc.get("artifactType"),
                        "annotations": doc.get("annotations", {})}
                with self.lock:
                    lst = self.referrers.setdefault(subject["digest"], [])
                    lst[:] = [d for d in lst if d["digest"] != desc["digest"]] + [desc]
                keep.append(("OCI-Subject", subject["digest"]))
        self._send(h, status, keep, rbody, head=method == "HEAD")

    @staticmethod
    def _send(h: http.server.BaseHTTPRequestHandler, status: int,
              headers: list[tuple[str, str]], body: bytes, head: bool = False) -> None:
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- fixtures -----------------------------------------------------------------------------------
def _index(layout: Path, tag: str, out: Path, *extra: str) -> Path:
    ok(cli("-q", "index-layout", "--layout", str(layout), "--tag", tag, "--out", str(out),
           "--no-cache", *extra))
    return out


@pytest.fixture(scope="module")
def multi_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample layout plus an image index tagged "multi": latest as linux/amd64, v1 as
    linux/arm64 (two platforms of one image)."""
    layout = tmp_path_factory.mktemp("multi") / "layout"
    shutil.copytree(SAMPLE, layout)
    blobs = layout / "blobs" / "sha256"

    def put(doc: dict[str, Any]) -> tuple[str, int]:
        body = json.dumps(doc).encode()
        (blobs / sha(body).split(":")[1]).write_bytes(body)
        return sha(body), len(body)

    idx = json.loads((layout / "index.json").read_text())
    by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in idx["manifests"]}
    # v1's layers under an arm64 config
    v1 = json.loads((blobs / by_tag["v1"]["digest"].split(":")[1]).read_bytes())
    config = json.loads((blobs / v1["config"]["digest"].split(":")[1]).read_bytes())
    config["architecture"] = "arm64"
    digest, size = put(config)
    v1["config"] = dict(v1["config"], digest=digest, size=size)
    arm_digest, arm_size = put(v1)
    entries = [(by_tag["latest"]["digest"], by_tag["latest"]["size"], "amd64"),
               (arm_digest, arm_size, "arm64")]
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": d, "size": n,
                            "platform": {"os": "linux", "architecture": a}}
                           for d, n, a in entries]}
    body = json.dumps(index).encode()
    put(index)
    idx["manifests"].append({"mediaType": index["mediaType"], "digest": sha(body),
                             "size": len(body),
                             "annotations": {"org.opencontainers.image.ref.name": "multi"}})
    (layout / "index.json").write_text(json.dumps(idx))
    return layout


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory, multi_layout: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("archives")
    return {
        "latest": _index(SAMPLE, "latest", d / "latest.clip"),
        # the same image, another archive (its files' sha256 recorded)
        "latest-fd": _index(SAMPLE, "latest", d / "latest-fd.clip", "--file-digests"),
        "v1": _index(SAMPLE, "v1", d / "v1.clip"),
        "amd64": _index(multi_layout, "multi", d / "amd64.clip", "--platform", "linux/amd64"),
        "arm64": _index(multi_layout, "multi", d / "arm64.clip", "--platform", "linux/arm64"),
    }


@pytest.fixture()
def registry(tmp_path: Path, multi_layout: Path) -> Iterator[rs.Registry]:
    reg = rs.Registry(tmp_path / "registry")
    try:
        for tag in ("latest", "v1", "multi"):
            r = reg.push(multi_layout, tag, "sample", tag)
            assert r.returncode == 0, r.stderr
        yield reg
    finally:
        reg.stop()


def _no_part_files(d: Path) -> None:
    assert not [p.name for p in d.iterdir() if p.name.endswith(".part")]


# -- push and pull through the referrers tag ----------------------------------------------------
def test_push_pull_roundtrip(registry: rs.Registry, archives: dict[str, Path],
                             tmp_path: Path) -> None:
    repo = f"docker://{registry.host}/sample"
    image = layout_manifest(SAMPLE, "latest")
    r = ok(cli("push", str(archives["latest"]), repo, "--json"))
    pushed = json.loads(r.stdout)
    assert pushed["tag"] == "latest.clip" and pushed["subject"] == image
    assert pushed["referrers"] == "tag " + image.replace(":", "-")
    api = Api(registry.host)
    # the artifact as the registry holds it
    st, body = api.manifest("sample", "latest.clip")
    assert st == 200 and sha(body) == pushed["artifact"]
    doc = json.loads(body)
    data = archives["latest"].read_bytes()
    assert doc["artifactType"] == ARTIFACT_TYPE
    assert doc["config"] == {"mediaType": "application/vnd.oci.empty.v1+json",
                             "digest": sha(b"{}"), "size": 2}
    assert doc["layers"] == [{"mediaType": ARTIFACT_TYPE + ".clip", "digest": sha(data),
                              "size": len(data)}]
    st, image_body = api.manifest("sample", image)
    assert doc["subject"] == {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                              "digest": image, "size": len(image_body)}
    from clipcy import __version__

    assert doc["annotations"] == {"io.clipcy.archive.format": "2.0",
                                  "io.clipcy.version": __version__,
                                  "io.clipcy.archive.digest": sha(data),
                                  "io.clipcy.archive.size": str(len(data))}
    st, body = api.manifest("sample", image.replace(":", "-"))
    assert st == 200
    assert [m["digest"] for m in json.loads(body)["manifests"]] == [pushed["artifact"]]
    # pushed again: the same artifact (deterministic), listed once, the blob not uploaded
    again = json.loads(ok(cli("push", str(archives["latest"]), repo, "--json")).stdout)
    assert again["artifact"] == pushed["artifact"] and not again["uploaded"]
    st, body = api.manifest("sample", image.replace(":", "-"))
    assert len(json.loads(body)["manifests"]) == 1
    # pulled by tag and by digest: the same bytes, written as a whole file
    for ref in (f"{repo}:latest", f"{repo}@{image}"):
        out = tmp_path / "out" / "got.clip"
        out.parent.mkdir(exist_ok=True)
        r = ok(cli("pull", ref, "-o", str(out)))
        assert out.read_bytes() == data
        assert "format 2.0" in r.stdout and "referrers tag" in r.stdout, r.stdout
        _no_part_files(out.parent)
    # and read
    r = ok(cli("cat", str(out), "/etc/os-release"))
    assert "Hello" in r.stdout


def test_two_archives_and_another_tools_referrer_stay_listed(
        registry: rs.Registry, archives: dict[str, Path], tmp_path: Path) -> None:
    repo = f"docker://{registry.host}/sample"
    image = layout_manifest(SAMPLE, "latest")
    api = Api(registry.host)
    # another tool's referrer (an SBOM, say), with its own referrers-tag entry
    layer = api.upload("sample", b'{"sbom": true}')
    config = api.upload("sample", b"{}")
    st, image_body = api.manifest("sample", image)
    sbom = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.sbom",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config,
                       "size": 2},
            "layers": [{"mediaType": "application/json", "digest": layer, "size": 14}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": image, "size": len(image_body)}}
    sbom_digest = api.put_manifest("sample", "sbom", sbom,
                                   "application/vnd.oci.image.manifest.v1+json")
    foreign = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": sbom_digest, "size": len(json.dumps(sbom)),
               "artifactType": "application/vnd.example.sbom",
               "annotations": {"example.tool": "kept as it was"}}
    api.put_manifest("sample", image.replace(":", "-"),
                     {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                      "manifests": [foreign]}, "application/vnd.oci.image.index.v1+json")
    a = json.loads(ok(cli("push", str(archives["latest"]), f"{repo}:a.clip", "--json")).stdout)
    b = json.loads(ok(cli("push", str(archives["latest-fd"]), f"{repo}:b.clip",
                          "--json")).stdout)
    assert a["artifact"] != b["artifact"]
    st, body = api.manifest("sample", image.replace(":", "-"))
    listed = json.loads(body)["manifests"]
    assert listed[0] == foreign  # untouched, first
    assert [m["digest"] for m in listed] == [sbom_digest, a["artifact"], b["artifact"]]
    assert [m["artifactType"] for m in listed[1:]] == [ARTIFACT_TYPE] * 2
    # pull takes the last pushed of equal formats and says so
    out = tmp_path / "got.clip"
    r = ok(cli("pull", f"{repo}:latest", "-o", str(out), "--json"))
    got = json.loads(r.stdout)
    assert got["artifact"] == b["artifact"] and got["candidates"] == 2
    assert out.read_bytes() == archives["latest-fd"].read_bytes()
    r = ok(cli("pull", f"{repo}:latest", "-o", str(out)))
    assert "newest readable of 2 archives" in r.stdout


def test_two_platforms(registry: rs.Registry, archives: dict[str, Path], tmp_path: Path) -> None:
    """One tag, an index of two platforms: each platform's archive refers to its own
    manifest, and pull --platform picks it (default: this machine)."""
    repo = f"docker://{registry.host}/sample"
    for plat in ("amd64", "arm64"):
        ok(cli("push", str(archives[plat]), f"{repo}:multi-{plat}.clip"))
    for plat in ("amd64", "arm64"):
        out = tmp_path / f"{plat}.clip"
        ok(cli("pull", f"{repo}:multi", "--platform", f"linux/{plat}", "-o", str(out)))
        assert out.read_bytes() == archives[plat].read_bytes()
    import platform

    host = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine())
    if host:
        out = tmp_path / "host.clip"
        ok(cli("pull", f"{repo}:multi", "-o", str(out)))
        assert out.read_bytes() == archives[host].read_bytes()
    err = one_line(cli("pull", f"{repo}:multi", "--platform", "linux/s390x",
                       "-o", str(tmp_path / "no.clip")))
    assert "linux/s390x" in err and "linux/amd64" in err
    assert not (tmp_path / "no.clip").exists()


def test_platform_pick_imports_the_layout_module_only_when_needed() -> None:
    """A reference to a plain image manifest never needs clipcy.image.layout (its import is
    ~4.5 ms of a mount by reference): it is imported for an index, or for a --platform,
    which is checked at once."""
    code = ("import sys\n"
            "from clipcy.publish import _pick\n"
            "pick = _pick(None)\n"
            "assert 'clipcy.image.layout' not in sys.modules\n"
            "entry = {'platform': {'os': 'plan9', 'architecture': 'amd64'}}\n"
            "try:\n"
            "    pick([entry], 'an index')\n"
            "    raise SystemExit('picked another platform')\n"
            "except Exception as e:\n"
            "    assert type(e).__name__ == 'ManifestNotFoundError' and 'plan9' in str(e), e\n"
            "try:\n"
            "    _pick('a/b/c/d')\n"
            "except Exception as e:\n"
            "    print(type(e).__name__)\n")
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "LayoutError\n"


def test_push_never_moves_an_image_tag(registry: rs.Registry, archives: dict[str, Path]) -> None:
    repo = f"docker://{registry.host}/sample"
    api = Api(registry.host)
    before = api.manifest("sample", "latest")
    err = one_line(cli("push", str(archives["latest"]), f"{repo}:v1"))
    assert "tag v1" in err and "not a clipcy archive" in err
    image = layout_manifest(SAMPLE, "latest")
    err = one_line(cli("push", str(archives["latest"]), f"{repo}:{image.replace(':', '-')}"))
    assert "referrers tag" in err
    err = one_line(cli("push", str(archives["latest"]), f"{repo}@{image}"))
    assert "TAG names the archive" in err
    assert api.manifest("sample", "latest") == before
    assert api.manifest("sample", "v1")[1] != b""
    assert json.loads(api.manifest("sample", "v1")[1]).get("artifactType") is None
    # an archive tag can be moved to another archive
    ok(cli("push", str(archives["latest"]), f"{repo}:x.clip"))
    ok(cli("push", str(archives["v1"]), f"{repo}:x.clip"))


def test_push_into_a_repository_without_the_image(registry: rs.Registry,
                                                  archives: dict[str, Path]) -> None:
    err = one_line(cli("push", str(archives["latest"]), f"docker://{registry.host}/other"))
    assert "not in" in err and "other" in err and layout_manifest(SAMPLE, "latest") in err


def test_garbage_collect_keeps_the_artifact(tmp_path: Path, archives: dict[str, Path]) -> None:
    """garbage-collect --delete-untagged, with the registry stopped, then restarted: the
    tagged artifact and its blob are kept (and an artifact whose tag moved is collected, so
    the collection did run)."""
    reg = rs.Registry(tmp_path / "reg")
    try:
        assert reg.push(SAMPLE, "latest", "sample", "latest").returncode == 0
        repo = f"docker://{reg.host}/sample"
        old = json.loads(ok(cli("push", str(archives["latest-fd"]), repo, "--json")).stdout)
        new = json.loads(ok(cli("push", str(archives["latest"]), repo, "--json")).stdout)
        assert old["tag"] == new["tag"] == "latest.clip" and old["artifact"] != new["artifact"]
    finally:
        reg.stop()
    gc = subprocess.run(["docker-registry", "garbage-collect", "--delete-untagged",
                         str(tmp_path / "reg" / "config.yml")], capture_output=True, text=True,
                        timeout=300)
    assert gc.returncode == 0, gc.stderr
    reg = rs.Registry(tmp_path / "reg")  # the same storage, a new port
    try:
        api = Api(reg.host)
        assert api.manifest("sample", old["artifact"])[0] == 404  # collected
        assert api.manifest("sample", new["artifact"])[0] == 200
        out = tmp_path / "got.clip"
        r = ok(cli("pull", f"docker://{reg.host}/sample:latest", "-o", str(out), "--json"))
        assert json.loads(r.stdout)["artifact"] == new["artifact"]
        assert out.read_bytes() == archives["latest"].read_bytes()
    finally:
        reg.stop()


# -- the referrers API --------------------------------------------------------------------------
def test_referrers_api(registry: rs.Registry, archives: dict[str, Path], tmp_path: Path) -> None:
    proxy = Proxy(registry.host, referrers=True)
    try:
        repo = f"docker://{proxy.host}/sample"
        image = layout_manifest(SAMPLE, "latest")
        pushed = json.loads(ok(cli("push", str(archives["latest"]), repo, "--json")).stdout)
        assert pushed["referrers"] == "api"
        # no referrers tag was written
        assert Api(registry.host).manifest("sample", image.replace(":", "-"))[0] == 404
        assert proxy.count(pattern=image.replace(":", "-")) == 0
        out = tmp_path / "got.clip"
        proxy.log.clear()
        got = json.loads(ok(cli("pull", f"{repo}:latest", "-o", str(out), "--json")).stdout)
        assert got["found"] == "referrers API" and got["artifact"] == pushed["artifact"]
        assert out.read_bytes() == archives["latest"].read_bytes()
        # the tag; the referrers API and the referrers tag at once (the tag's answer unused);
        # the archive, which the API's list names (the registry copies the artifact's
        # annotations into it): the artifact's manifest is not read
        asked = proxy.asked()
        assert got["requests"] == len(asked) == 4, asked
        assert asked[0] == "GET manifests/latest 200"
        assert sorted(asked[1:3]) == [f"GET manifests/{image.replace(':', '-')} 404",
                                      f"GET referrers/{image} 200"], asked
        assert asked[3:] == [f"GET blobs/{sha(archives['latest'].read_bytes())} 206"], asked
        # a malformed answer of the referrers API: one line, no file
        out.unlink()
        for text in ("not json", '{"manifests": {}}', '{"manifests": [{"digest": "x"}]}'):
            proxy.faults.append(("GET", "/referrers/", "body=" + text))
            err = one_line(cli("pull", f"{repo}:latest", "-o", str(out)))
            assert "malformed referrers index" in err, err
            assert not out.exists()
            _no_part_files(tmp_path)
    finally:
        proxy.close()


def test_malformed_referrers_tag(registry: rs.Registry, archives: dict[str, Path],
                                 tmp_path: Path) -> None:
    proxy = Proxy(registry.host)
    try:
        repo = f"docker://{proxy.host}/sample"
        ok(cli("push", str(archives["latest"]), repo))
        out = tmp_path / "got.clip"
        proxy.faults.append(("GET", "/manifests/sha256-", "body=[1, 2"))
        err = one_line(cli("pull", f"{repo}:latest", "-o", str(out)))
        assert "malformed referrers index" in err and "sha256-" in err
        # and a push does not overwrite it
        proxy.faults.append(("GET", "/manifests/sha256-", 'body={"manifests": [7]}'))
        err = one_line(cli("push", str(archives["latest-fd"]), f"{repo}:fd.clip"))
        assert "malformed referrers index" in err
        assert not out.exists()
    finally:
        proxy.close()


# -- request counts -----------------------------------------------------------------------------
def test_request_counts(registry: rs.Registry, archives: dict[str, Path],
                        tmp_path: Path) -> None:
    """Counted by the proxy, so exact: a push makes 5 requests plus the referrers-index
    update (2), and 3 more the first time into a repository (the empty config blob is
    uploaded when the registry says it is missing); a pull makes 4."""
    proxy = Proxy(registry.host)
    try:
        repo = f"docker://{proxy.host}/sample"
        r = json.loads(ok(cli("push", str(archives["latest"]), repo, "--json")).stdout)
        assert len(proxy.log) == r["requests"] == 5 + 3 + 2, proxy.log
        proxy.log.clear()
        r = json.loads(ok(cli("push", str(archives["latest-fd"]), f"{repo}:fd.clip",
                              "--json")).stdout)
        assert len(proxy.log) == r["requests"] == 5 + 2, proxy.log
        assert [m for m, _, _ in proxy.log] == ["GET", "GET", "POST", "PUT", "PUT", "GET",
                                                "PUT"]
        proxy.log.clear()
        got = json.loads(ok(cli("pull", f"{repo}:latest", "-o", str(tmp_path / "x.clip"),
                                "--json")).stdout)
        # the tag; the referrers API (404 here) and the referrers tag at once; the archive,
        # which the referrers tag's index names (push copied the artifact's annotations)
        asked = proxy.asked()
        assert len(asked) == got["requests"] == 4, asked
        image = layout_manifest(SAMPLE, "latest")
        assert asked[0] == "GET manifests/latest 200"
        assert sorted(asked[1:3]) == [f"GET manifests/{image.replace(':', '-')} 200",
                                      f"GET referrers/{image} 404"], asked
        assert asked[3:] == [f"GET blobs/{got['blob']} 206"], asked
    finally:
        proxy.close()


def test_referrers_api_first_then_the_tag(registry: rs.Registry, archives: dict[str, Path],
                                          tmp_path: Path) -> None:
    """The referrers API and the referrers tag are asked at once, but read as one after
    the other: the tag's list only when the API lists no clipcy archive; then its errors
    too."""
    image = layout_manifest(SAMPLE, "latest")
    plain = Proxy(registry.host)  # no referrers API: the push writes the referrers tag
    api = Proxy(registry.host, referrers=True)
    try:
        by_tag = json.loads(ok(cli("push", str(archives["latest"]),
                                   f"docker://{plain.host}/sample", "--json")).stdout)
        repo = f"docker://{api.host}/sample"
        out = tmp_path / "got.clip"
        # the API answers, but lists nothing: the tag's list is used
        got = json.loads(ok(cli("pull", f"{repo}:latest", "-o", str(out), "--json")).stdout)
        assert got["found"] == f"referrers tag {image.replace(':', '-')}"
        assert got["artifact"] == by_tag["artifact"] and got["requests"] == 4
        assert out.read_bytes() == archives["latest"].read_bytes()
        # the tag's list malformed: that error
        api.faults.append(("GET", "/manifests/sha256-", "body=[1, 2"))
        err = one_line(cli("pull", f"{repo}:latest", "-o", str(tmp_path / "no.clip")))
        assert "malformed referrers index" in err and "sha256-" in err
        # now the API lists another archive: it is taken, the tag's list is not read
        by_api = json.loads(ok(cli("push", str(archives["latest-fd"]), f"{repo}:fd.clip",
                                   "--json")).stdout)
        assert by_api["referrers"] == "api"
        api.faults.append(("GET", "/manifests/sha256-", "body=[1, 2"))  # a malformed tag
        api.log.clear()
        got = json.loads(ok(cli("pull", f"{repo}:latest", "-o", str(out), "--json")).stdout)
        assert got["found"] == "referrers API" and got["artifact"] == by_api["artifact"]
        assert got["candidates"] == 1 and got["requests"] == 4
        assert api.count("GET", "/manifests/sha256-") == 1  # asked all the same
        assert out.read_bytes() == archives["latest-fd"].read_bytes()
        assert not (tmp_path / "no.clip").exists()
    finally:
        plain.close()
        api.close()


# -- uploads: chunked, resumed ------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["drop", "lost-answer", "503"])
def test_chunked_upload_resumes(registry: rs.Registry, fault: str) -> None:
    """A blob larger than the chunk goes up in PATCHes; one lost on the way (before the
    registry got it, or after, or refused) is resumed where the registry says it is."""
    from clipcy.storage.artifact import Registry
    from clipcy.storage.http import HttpOptions
    from clipcy.storage.refs import parse_storage_ref

    proxy = Proxy(registry.host)
    try:
        data = os.urandom(300_000)
        # the first PATCH goes through, the second meets the fault
        proxy.faults.extend([("PATCH", "/blobs/uploads/", "pass"),
                             ("PATCH", "/blobs/uploads/", fault)])
        reg = Registry(parse_storage_ref(f"docker://{proxy.host}/sample"),
                       http=HttpOptions(backoff=0.01, read_timeout=5))
        try:
            assert reg.upload(sha(data), len(data), lambda o, n: data[o:o + n], chunk=64 << 10)
        finally:
            reg.close()
        # 300 kB in 64 KiB pieces: 5 PATCHes, the second twice (asked where to resume:
        # the registry had not taken it)
        assert proxy.count("GET", "/blobs/uploads/") == 1, proxy.log
        if fault == "lost-answer":
            # the registry took the chunk but its answer was lost: the distribution
            # registry then refuses the session (its state token fell behind): a new one
            assert proxy.count("PATCH") == 2 + 5 and proxy.count("POST") == 2
        else:
            assert proxy.count("PATCH") == 6 and proxy.count("POST") == 1
        st, _, body = Api(registry.host).call("GET", f"/v2/sample/blobs/{sha(data)}")
        assert st == 200 and body == data
    finally:
        proxy.close()


# -- honest errors ------------------------------------------------------------------------------
def test_pull_errors(registry: rs.Registry, archives: dict[str, Path], tmp_path: Path) -> None:
    repo = f"docker://{registry.host}/sample"
    out = tmp_path / "got.clip"
    v1 = layout_manifest(SAMPLE, "v1")
    # no archive for the image: says where it looked
    err = one_line(cli("pull", f"{repo}:v1", "-o", str(out)))
    assert f"no clipcy archive for image {v1}" in err
    assert f"referrers tag {v1.replace(':', '-')}" in err and "the tag v1.clip" in err
    # no such image, no such repository
    err = one_line(cli("pull", f"{repo}:nope", "-o", str(out)))
    assert "no image nope" in err and "404" in err
    err = one_line(cli("pull", f"docker://{registry.host}/nothing:latest", "-o", str(out)))
    assert "nothing" in err
    # an archive made for another image, found by its tag
    ok(cli("push", str(archives["v1"]), f"{repo}:latest.clip"))
    err = one_line(cli("pull", f"{repo}:latest", "-o", str(out)))
    assert "made for another image" in err and v1 in err
    assert not out.exists()
    _no_part_files(tmp_path)


def _uploaded_artifact(api: Api, data: bytes, image: str) -> dict[str, Any]:
    """The archive bytes and the empty config uploaded to the sample repository, and the
    artifact manifest clipcy would push for them with image as its subject (not put)."""
    from clipcy.storage.artifact import artifact_manifest

    api.upload("sample", data)
    api.upload("sample", b"{}")
    st, image_body = api.manifest("sample", image)
    assert st == 200, st
    return json.loads(artifact_manifest(sha(data), len(data), {  # type: ignore[no-any-return]
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image,
        "size": len(image_body)}, (2, 0), "0"))


def test_archive_of_another_image_under_the_right_subject(
        registry: rs.Registry, archives: dict[str, Path], tmp_path: Path) -> None:
    """An artifact whose subject is the image but whose archive indexes another one."""
    api = Api(registry.host)
    image = layout_manifest(SAMPLE, "latest")
    doc = _uploaded_artifact(api, archives["v1"].read_bytes(), image)
    api.put_manifest("sample", "latest.clip", doc, "application/vnd.oci.image.manifest.v1+json")
    out = tmp_path / "got.clip"
    err = one_line(cli("pull", f"docker://{registry.host}/sample:latest", "-o", str(out)))
    assert "made for another image" in err and layout_manifest(SAMPLE, "v1") in err
    assert not out.exists()
    _no_part_files(tmp_path)


INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def _edit_referrers(api: Api, image: str,
                    edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Rewrite the image's referrers tag index (as another tool, or an attacker, could)."""
    tag = image.replace(":", "-")
    st, body = api.manifest("sample", tag)
    assert st == 200, st
    doc = json.loads(body)
    doc["manifests"] = edit(doc["manifests"])
    api.put_manifest("sample", tag, doc, INDEX_TYPE)


def test_older_push_without_the_blob_annotations(
        registry: rs.Registry, archives: dict[str, Path], tmp_path: Path) -> None:
    """An artifact pushed before its manifest named the archive blob in its annotations (so
    neither do the referrers lists): found and read as before, through its manifest."""
    api = Api(registry.host)
    image = layout_manifest(SAMPLE, "latest")
    data = archives["latest"].read_bytes()
    doc = _uploaded_artifact(api, data, image)
    for key in ("io.clipcy.archive.digest", "io.clipcy.archive.size"):
        del doc["annotations"][key]
    artifact = api.put_manifest("sample", "latest.clip", doc, MANIFEST_TYPE)
    api.put_manifest("sample", image.replace(":", "-"), {
        "schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [{
            "mediaType": MANIFEST_TYPE, "digest": artifact,
            "size": len(json.dumps(doc)), "artifactType": ARTIFACT_TYPE,
            "annotations": doc["annotations"]}]}, INDEX_TYPE)
    proxy = Proxy(registry.host)
    try:
        repo = f"docker://{proxy.host}/sample"
        out = tmp_path / "got.clip"
        got = json.loads(ok(cli("pull", f"{repo}:latest", "-o", str(out), "--json")).stdout)
        assert got["artifact"] == artifact and out.read_bytes() == data
        # the tag; the referrers API and the referrers tag; the artifact; the archive
        asked = proxy.asked()
        assert got["requests"] == len(asked) == 5, asked
        assert asked[3:] == [f"GET manifests/{artifact} 200", f"GET blobs/{sha(data)} 206"]
        r = ok(cli("cat", f"{repo}:latest", "/etc/os-release", "--no-cache",
                   env=_fresh_env(tmp_path)))
        assert "Hello" in r.stdout
        from clipcy.fusemount import available

        if os.geteuid() == 0 and available():
            mnt = tmp_path / "mnt"
            mnt.mkdir()
            ok(cli("mount", f"{repo}:latest", str(mnt), env=_fresh_env(tmp_path / "m")))
            try:
                assert "Hello" in (mnt / "etc" / "os-release").read_text()
            finally:
                ok(cli("umount", str(mnt)))
    finally:
        proxy.close()


@pytest.mark.parametrize("tamper", ["another-archive", "size+1", "size-1", "missing",
                                    "not-a-digest"])
def test_tampered_blob_annotations(registry: rs.Registry, archives: dict[str, Path],
                                   tmp_path: Path, tamper: str) -> None:
    """A referrers list whose annotations name another blob (another image's archive in
    the repository, a wrong size, a blob that is not there) or nothing usable: never that
    archive; the artifact's manifest names the right one, which is taken."""
    api = Api(registry.host)
    image = layout_manifest(SAMPLE, "latest")
    data = archives["latest"].read_bytes()
    pushed = json.loads(ok(cli("push", str(archives["latest"]),
                               f"docker://{registry.host}/sample", "--json")).stdout)
    other = archives["v1"].read_bytes()
    api.upload("sample", other)
    named = {"another-archive": (sha(other), str(len(other))),
             "size+1": (sha(data), str(len(data) + 1)),
             "size-1": (sha(data), str(len(data) - 1)),
             "missing": (sha(b"not there"), str(len(data))),
             "not-a-digest": ("sha256:../../etc", str(len(data)))}[tamper]

    def edit(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        (entry,) = entries
        entry["annotations"]["io.clipcy.archive.digest"] = named[0]
        entry["annotations"]["io.clipcy.archive.size"] = named[1]
        return [entry]

    _edit_referrers(api, image, edit)
    proxy = Proxy(registry.host)
    try:
        out = tmp_path / "got.clip"
        r = ok(cli("pull", f"docker://{proxy.host}/sample:latest", "-o", str(out), "--json"))
        got = json.loads(r.stdout)
        assert out.read_bytes() == data
        assert got["artifact"] == pushed["artifact"] and got["blob"] == sha(data)
        asked = proxy.asked()
        assert asked[-2:] == [f"GET manifests/{pushed['artifact']} 200",
                              f"GET blobs/{sha(data)} 206"], asked
        if tamper == "not-a-digest":  # not taken as a blob: the manifest read first
            assert len(asked) == 5 and "WARNING" not in r.stderr.upper(), asked
        else:  # the listed blob tried first, then the manifest's
            assert len(asked) == 6, asked
            assert "its manifest names" in r.stderr and named[0] in r.stderr
        _no_part_files(tmp_path)
    finally:
        proxy.close()


def test_listed_archive_gone(registry: rs.Registry, archives: dict[str, Path],
                             tmp_path: Path) -> None:
    """A listed archive whose manifest and blob are both gone (deleted from the repository,
    as garbage collection leaves them, its referrers-tag entry kept): its listed blob's 404,
    then its manifest's 404; the next archive listed is taken. When it is the only one: one
    line and no file."""
    api = Api(registry.host)
    image = layout_manifest(SAMPLE, "latest")
    repo = f"docker://{registry.host}/sample"
    kept = json.loads(ok(cli("push", str(archives["latest-fd"]), f"{repo}:fd.clip",
                             "--json")).stdout)
    gone = json.loads(ok(cli("push", str(archives["latest"]), repo, "--json")).stdout)
    links = registry.tmp / "data" / "docker" / "registry" / "v2" / "repositories" / "sample"
    gone_blob = sha(archives["latest"].read_bytes())
    shutil.rmtree(links / "_manifests" / "revisions" / "sha256" / gone["artifact"][7:])
    shutil.rmtree(links / "_layers" / "sha256" / gone_blob[7:])
    data = archives["latest-fd"].read_bytes()
    proxy = Proxy(registry.host)
    try:
        out = tmp_path / "got.clip"
        got = json.loads(ok(cli("pull", f"docker://{proxy.host}/sample:latest", "-o",
                                str(out), "--json")).stdout)
        assert got["artifact"] == kept["artifact"] and got["candidates"] == 2
        assert out.read_bytes() == data
        asked = proxy.asked()
        assert asked[3:] == [f"GET blobs/{gone_blob} 404",
                             f"GET manifests/{gone['artifact']} 404",
                             f"GET blobs/{sha(data)} 206"], asked
        out.unlink()
        # only the other one listed, then gone as well (the registry refuses an index that
        # lists a manifest it does not hold, so it is removed after the PUT)
        _edit_referrers(api, image, lambda entries: entries[:1])
        shutil.rmtree(links / "_manifests" / "revisions" / "sha256" / kept["artifact"][7:])
        shutil.rmtree(links / "_layers" / "sha256" / sha(data)[7:])
        err = one_line(cli("pull", f"docker://{proxy.host}/sample:latest", "-o", str(out)))
        assert "listed but not there" in err and kept["artifact"] in err
        assert not out.exists()
        _no_part_files(tmp_path)
    finally:
        proxy.close()


def test_tampered_blob(registry: rs.Registry, archives: dict[str, Path], tmp_path: Path) -> None:
    repo = f"docker://{registry.host}/sample"
    ok(cli("push", str(archives["latest"]), repo))
    data = archives["latest"].read_bytes()
    hexd = sha(data).split(":")[1]
    stored = (registry.tmp / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
              / hexd[:2] / hexd / "data")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(flipped))
    out = tmp_path / "got.clip"
    out.write_bytes(b"the old file")
    err = one_line(cli("pull", f"{repo}:latest", "-o", str(out)))
    assert "tampered" in err and sha(data) in err
    assert out.read_bytes() == b"the old file"  # not replaced
    _no_part_files(tmp_path)


def test_5xx_after_retries(registry: rs.Registry, archives: dict[str, Path],
                           tmp_path: Path) -> None:
    ok(cli("push", str(archives["latest"]), f"docker://{registry.host}/sample"))
    proxy = Proxy(registry.host)
    try:
        repo = f"docker://{proxy.host}/sample"
        out = tmp_path / "got.clip"
        proxy.always = ("GET", "/blobs/sha256:", "503")
        err = one_line(cli("pull", f"{repo}:latest", "-o", str(out), "--retries", "1"))
        assert "HTTP 503" in err and "2 tries" in err
        assert proxy.count("GET", "/blobs/sha256:") == 2
        proxy.always = ("GET", "/manifests/", "503")
        err = one_line(cli("pull", f"{repo}:latest", "-o", str(out), "--retries", "2"))
        assert "HTTP 503" in err and "3 tries" in err
        proxy.always = ("PUT", "/manifests/", "503")
        err = one_line(cli("push", str(archives["latest-fd"]), f"{repo}:z.clip",
                           "--retries", "0"))
        assert "HTTP 503" in err
        assert not out.exists()
        _no_part_files(tmp_path)
    finally:
        proxy.close()


# -- credentials ---------------------------------------------------------------------------------
def _authfile(tmp: Path, host: str) -> Path:
    path = tmp / "auth.json"
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def _no_secret(*texts: str | bytes) -> None:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for t in texts:
        b = t.encode() if isinstance(t, str) else t
        assert PASSWORD.encode() not in b and token.encode() not in b


def _auth_roundtrip(reg: rs.Registry, tmp: Path, archive: Path) -> None:
    env = {"HOME": str(tmp / "home"), "REGISTRY_AUTH_FILE": "", "XDG_RUNTIME_DIR": ""}
    repo = f"docker://{reg.host}/sample"
    out = tmp / "got.clip"
    # no credentials: one line, for push and pull
    err = one_line(cli("push", str(archive), repo, env=env))
    assert "requires authentication" in err
    err = one_line(cli("pull", f"{repo}:latest", "-o", str(out), env=env))
    assert "requires authentication" in err
    authfile = str(_authfile(tmp, reg.host))
    p = ok(cli("-vv", "push", str(archive), repo, "--authfile", authfile, env=env))
    g = ok(cli("-vv", "pull", f"{repo}:latest", "-o", str(out), "--authfile", authfile, env=env))
    assert out.read_bytes() == archive.read_bytes()
    from clipcy.storage.artifact import Registry
    from clipcy.storage.refs import parse_storage_ref

    client = Registry(parse_storage_ref(repo), authfile=authfile)
    try:
        held = client.get_manifest("latest.clip", "read the artifact")
    finally:
        client.close()
    assert held is not None and ARTIFACT_TYPE.encode() in held[2]
    artifact = held[2]
    _no_secret(p.stdout, p.stderr, g.stdout, g.stderr, out.read_bytes(), artifact)


@pytest.mark.skipif(shutil.which("htpasswd") is None, reason="no htpasswd")
def test_htpasswd_auth(tmp_path: Path, archives: dict[str, Path]) -> None:
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True,
                              text=True, check=True).stdout
    (tmp_path / "htpasswd").write_text(htpasswd)
    reg = rs.Registry(tmp_path / "reg", {"htpasswd": {"realm": "clipcy-test",
                                                      "path": str(tmp_path / "htpasswd")}})
    try:
        assert reg.push(SAMPLE, "latest", "sample", "latest",
                        f"{USER}:{PASSWORD}").returncode == 0
        _auth_roundtrip(reg, tmp_path, archives["latest"])
    finally:
        reg.stop()


def test_token_auth(tmp_path: Path, archives: dict[str, Path]) -> None:
    """Bearer tokens: the push asks for pull,push (the issuer grants only what is asked)."""
    pytest.importorskip("cryptography")
    issuer = rs.TokenIssuer(tmp_path, users={USER: PASSWORD})
    reg = rs.Registry(tmp_path / "reg", issuer.config())
    try:
        assert reg.push(SAMPLE, "latest", "sample", "latest",
                        f"{USER}:{PASSWORD}").returncode == 0
        _auth_roundtrip(reg, tmp_path, archives["latest"])
    finally:
        reg.stop()
        issuer.close()


# -- image references where an archive is taken -------------------------------------------------
def _fresh_env(tmp: Path) -> dict[str, str]:
    """No local files: a new HOME and cache."""
    return {"HOME": str(tmp / "home"), "XDG_CACHE_HOME": str(tmp / "cache"),
            "XDG_STATE_HOME": str(tmp / "state"), "REGISTRY_AUTH_FILE": "",
            "XDG_RUNTIME_DIR": ""}


def test_readers_take_an_image_reference(registry: rs.Registry, archives: dict[str, Path],
                                         tmp_path: Path) -> None:
    """cat, ls, stat, inspect, extract, verify and open_archive take docker://REPO:TAG: the
    archive is fetched once (then from the cache by digest), the blobs are read from that
    repository (the archive records a local layout, which is not used)."""
    ok(cli("push", str(archives["latest"]), f"docker://{registry.host}/sample"))
    proxy = Proxy(registry.host)
    try:
        ref = f"docker://{proxy.host}/sample:latest"
        env = _fresh_env(tmp_path)
        blob = sha(archives["latest"].read_bytes())
        r = ok(cli("cat", ref, "/etc/os-release", "--no-cache", env=env))
        expected = ok(cli("cat", str(archives["latest"]), "/etc/os-release")).stdout
        assert r.stdout == expected and "Hello" in expected
        assert proxy.count("GET", f"/blobs/{blob}") == 1
        layer_reads = proxy.count("GET", r"/blobs/sha256:") - 1
        assert layer_reads >= 1  # the file's bytes came from this repository
        cached = list((tmp_path / "cache" / "clipcy" / "archives").iterdir())
        assert [p.read_bytes() for p in cached] == [archives["latest"].read_bytes()]
        for args in (["ls", ref, "/etc"], ["stat", ref, "/etc/os-release"], ["inspect", ref],
                     ["extract", ref, "-C", str(tmp_path / "x"), "--no-cache"],
                     ["verify", ref, "--no-cache"]):
            ok(cli(*args, env=env))
        assert (tmp_path / "x" / "etc" / "os-release").read_text() == expected
        assert proxy.count("GET", f"/blobs/{blob}") == 1  # never downloaded again
        # the Python API
        import clipcy

        os.environ["XDG_CACHE_HOME"] = str(tmp_path / "cache")
        try:
            with clipcy.open_archive(ref) as arc:
                assert arc.metadata["manifest_digest"] == layout_manifest(SAMPLE, "latest")
                with arc.open("/etc/os-release") as f:
                    assert f.read().decode() == expected
        finally:
            del os.environ["XDG_CACHE_HOME"]
        assert proxy.count("GET", f"/blobs/{blob}") == 1
        err = one_line(cli("cat", f"docker://{proxy.host}/sample:v1", "/etc/os-release",
                           env=env))
        assert "no clipcy archive for image" in err
    finally:
        proxy.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="the mount tests run as root")
def test_mount_by_reference(registry: rs.Registry, archives: dict[str, Path],
                            tmp_path: Path) -> None:
    """With no local files, a mount by image reference is ready after 4 requests in 3 round
    trips (the tag; the referrers API's 404 and the referrers tag at once; the archive,
    which the referrers tag's index names): the image manifest just fetched from the blobs'
    repository is its storage check, so no blob is probed; its files are then read from the
    registry."""
    from clipcy.archive.reader import open_archive
    from clipcy.fusemount import available

    if not available():
        pytest.skip("FUSE unavailable")
    with open_archive(archives["latest"]) as arc:
        layers = {la["digest"] for la in arc.layers}

    def probes() -> int:
        """Requests for the image's layer blobs (the check's, before ready: one each)."""
        return sum(1 for e in proxy.log if any(d in e[1] for d in layers))
    ok(cli("push", str(archives["latest"]), f"docker://{registry.host}/sample"))
    proxy = Proxy(registry.host)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        env = _fresh_env(tmp_path)
        ok(cli("mount", f"docker://{proxy.host}/sample:latest", str(mnt), env=env))
        try:
            asked = proxy.asked()
            image = layout_manifest(SAMPLE, "latest")
            assert probes() == 0 and len(asked) == 4, asked
            assert asked[0] == "GET manifests/latest 200"
            assert sorted(asked[1:3]) == [f"GET manifests/{image.replace(':', '-')} 200",
                                          f"GET referrers/{image} 404"], asked
            assert asked[3] == f"GET blobs/{sha(archives['latest'].read_bytes())} 206"
            before = len(proxy.log)
            text = (mnt / "etc" / "os-release").read_text()
            assert "Hello" in text
            assert len(proxy.log) > before  # read from the registry
        finally:
            ok(cli("umount", str(mnt)))
        # mounted again: the archive from the cache
        proxy.log.clear()
        ok(cli("mount", f"docker://{proxy.host}/sample:latest", str(mnt), env=env))
        try:
            # the archive from the cache: no blob requested before the first read
            assert proxy.count("GET", "/blobs/") == probes() == 0, proxy.log
            assert len(proxy.log) <= 3, proxy.log
            assert (mnt / "etc" / "os-release").read_text() == text
        finally:
            ok(cli("umount", str(mnt)))
    finally:
        proxy.close()
