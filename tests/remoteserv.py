"""Real servers for the remote-storage tests and perf/remote.py (no pytest in here).

- Registry: Debian's `docker-registry serve` (the distribution registry 2.8) on 127.0.0.1 with
  a free port and filesystem storage in a temp dir; optional htpasswd (bcrypt, made with
  `htpasswd -Bbn`) or token auth (`auth: token:` with a signing certificate made here).
- TokenIssuer: a small token server that signs JWTs (RS256, x5c header) the way the
  distribution registry's token spec describes; its tokens' expiry can be set short.
- FaultProxy: an HTTP proxy on 127.0.0.1 between client and registry that injects faults
  (503, 429 + Retry-After, resets mid-body, truncated bodies, 200 for a Range, flipped bytes,
  wrong Content-Range, redirects to a second loopback address, stalls, delays).
- push(): `skopeo copy --dest-tls-verify=false --preserve-digests oci:DIR:TAG docker://...`.
"""

from __future__ import annotations

import base64
import collections
import http.client
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

TOOLS = ("docker-registry", "skopeo")


def have_tools(*extra: str) -> bool:
    return all(shutil.which(t) for t in TOOLS + extra)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


# shutdown() waits for serve_forever's next poll: short, so that a teardown takes no time
POLL_INTERVAL = 0.01


def _serve(server: http.server.HTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL},
                         daemon=True)
    t.start()
    return t


class TokenIssuer:
    """GET /token?service=S&scope=repository:NAME:ACTIONS -> {"token", "expires_in"}.

    users: {user: password} accepted with Basic auth; anonymous gets pull only when
    `anonymous_pull`. `lifetime` is the JWT's real validity (the registry adds a 60 s leeway,
    subtracted here; a negative one gives a token the registry already refuses); `expires_in`
    is what the client is told. `lifetimes` are the next tokens' lifetimes (then `lifetime`
    again). `token_field` is the JSON key the token travels in ("token",
    or "access_token" as OAuth2 servers answer)."""

    def __init__(self, tmp: Path, users: dict[str, str] | None = None,
                 anonymous_pull: bool = False) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = users or {}
        self.anonymous_pull = anonymous_pull
        self.lifetime = 3600.0
        self.expires_in: int | None = 300
        self.token_field = "token"
        self.lifetimes: collections.deque[float] = collections.deque()  # the next tokens'
        self.requests = 0
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clipcy test token issuer")])
        now = time.time()
        import datetime as dt

        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(dt.datetime.fromtimestamp(now - 3600, dt.timezone.utc))
                .not_valid_after(dt.datetime.fromtimestamp(now + 86400, dt.timezone.utc))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_pem = tmp / "token-cert.pem"
        self.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self.service = "clipcy-test-registry"
        self.issuer = "clipcy-test-issuer"
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                issuer.requests += 1
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = ""
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if issuer.users.get(u) != p:
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = u
                elif not issuer.anonymous_pull:
                    self.send_response(401)
                    self.end_headers()
                    return
                access = []
                for scope in q.get("scope", []):
                    kind, name, actions = scope.split(":")
                    allowed = actions.split(",") if user else ["pull"]
                    access.append({"type": kind, "name": name,
                                   "actions": [a for a in allowed if a in ("pull", "push")]})
                body: dict[str, Any] = {issuer.token_field: issuer.sign(user, access)}
                if issuer.expires_in is not None:
                    body["expires_in"] = issuer.expires_in
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = _serve(self.server)

    def sign(self, user: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        lifetime = self.lifetimes.popleft() if self.lifetimes else self.lifetime
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {"iss": self.issuer, "sub": user, "aud": self.service,
                  "exp": now + int(lifetime) - 60, "nbf": now - 5, "iat": now,
                  "jti": os.urandom(8).hex(), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(sig)

    def config(self) -> dict[str, Any]:
        return {"token": {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                          "rootcertbundle": str(self.cert_pem)}}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Registry:
    """docker-registry serve on 127.0.0.1:free port, storage in tmp; stop() kills it."""

    def __init__(self, tmp: Path, auth: dict[str, Any] | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        cfg = {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
               "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}},
               "http": {"addr": self.host}}
        if auth:
            cfg["auth"] = auth
        (tmp / "config.yml").write_text(json.dumps(cfg))  # JSON is YAML
        self.log = open(tmp / "registry.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(["docker-registry", "serve", str(tmp / "config.yml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("docker-registry did not start: "
                                       + (tmp / "registry.log").read_text()[-2000:]) from None
                time.sleep(0.05)

    def push(self, layout: Path, tag: str, name: str, dest_tag: str,
             creds: str | None = None) -> subprocess.CompletedProcess[str]:
        policy = self.tmp / "policy.json"
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        cmd = ["skopeo", "--policy", str(policy), "copy", "--all", "--quiet",
               "--dest-tls-verify=false", "--preserve-digests"]
        if creds:
            cmd += ["--dest-creds", creds]
        cmd += [f"oci:{layout}:{tag}", f"docker://{self.host}/{name}:{dest_tag}"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def upload_blob(base: str, name: str, digest: str, data: bytes,
                authorization: str | None = None) -> None:
    """Monolithic blob upload (distribution API: POST uploads/, then PUT ?digest=)."""
    headers = {"Authorization": authorization} if authorization else {}
    req = urllib.request.Request(f"{base}/v2/{name}/blobs/uploads/", method="POST",
                                 headers=headers, data=b"")
    with urllib.request.urlopen(req) as resp:
        loc = resp.headers["Location"]
    url = urllib.parse.urljoin(base, loc)
    url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
    req = urllib.request.Request(url, method="PUT", data=data,
                                 headers={**headers, "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req) as resp:
        assert resp.status in (201, 202), resp.status


class _QuietServer(http.server.ThreadingHTTPServer):
    """Clients that hang up (a reader giving up, a reset we caused) are not errors here."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RequestLog(list[tuple[str, str, int]]):
    """The proxy's (path, Range, status) records; a test can wait for the next one."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()

    def append(self, item: tuple[str, str, int]) -> None:
        with self.cond:
            super().append(item)
            self.cond.notify_all()

    def wait_len(self, n: int, timeout: float = 60.0) -> bool:
        """Wait until n records are logged (True), or give up after timeout (False)."""
        with self.cond:
            return self.cond.wait_for(lambda: len(self) >= n, timeout)


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of `upstream` ("host:port") that injects faults.

    Faults are queued (`add("503", "reset", ...)`) and each is applied to one blob GET, in
    order: 503 (no Retry-After), 429 (Retry-After: 1), reset (RST after half the body),
    truncate (half the body, then FIN), 200 (the whole blob, Range ignored), flip (one byte
    of the body inverted), badrange (206 with a shifted Content-Range), redirect (307 to the
    same path on a second server at 127.0.0.2, which serves it like object storage: no auth
    needed, and every request's headers recorded), stall (no answer: the connection is
    held until the client hangs up; logged with status 0), expire (that second server answers its
    next request 403). `delay` seconds are added to every request. `always` is a fault
    applied to every blob GET."""

    def __init__(self, upstream: str, target_auth: str | None = None) -> None:
        self.upstream = upstream
        self.faults: collections.deque[str] = collections.deque()
        self.always = ""
        self.delay = 0.0
        self.log = RequestLog()  # (path, Range, status)
        self.target_log: list[dict[str, str]] = []  # headers seen by the 127.0.0.2 server
        self.target_expire = 0
        self.target_auth = target_auth  # what the redirect target uses upstream
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # what real servers do (Go's net/http, nginx): without it the body's first
            # small write waits for the client's delayed ACK of the headers (up to 40 ms)
            disable_nagle_algorithm = True

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                proxy._handle(self, target=False)

        class TargetHandler(Handler):
            def do_GET(self) -> None:  # noqa: N802
                proxy._handle(self, target=True)

        self.server = _QuietServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.target_port = free_port("127.0.0.2")
        self.target = _QuietServer(("127.0.0.2", self.target_port), TargetHandler)
        self.target.daemon_threads = True
        for s in (self.server, self.target):
            _serve(s)

    def add(self, *faults: str) -> None:
        with self.lock:
            self.faults.extend(faults)

    def blob_requests(self) -> int:
        return sum(1 for p, _, _ in self.log if "/blobs/" in p)

    def _upstream(self, path: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]],
                                                                       bytes]:
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            conn.close()

    def _handle(self, h: http.server.BaseHTTPRequestHandler, target: bool) -> None:
        if self.delay:
            time.sleep(self.delay)
        fwd = {k: v for k, v in h.headers.items()
               if k.lower() in ("range", "authorization", "accept", "accept-encoding")}
        fault = ""
        if target:
            with self.lock:
                self.target_log.append(dict(h.headers.items()))
                expire = self.target_expire > 0
                if expire:
                    self.target_expire -= 1
            if expire:
                return self._send(h, 403, [], b"expired")
            fwd.pop("Authorization", None)
            if h.path.startswith("/static/"):  # BASE/sha256/HEX -> the registry's blob URL
                _, _, name, alg, hexpart = h.path.split("/", 4)
                h.path = f"/v2/{name}/blobs/{alg}:{hexpart}"
            if self.target_auth:
                fwd["Authorization"] = self.target_auth
        elif "/blobs/" in h.path:
            with self.lock:
                fault = self.faults.popleft() if self.faults else self.always
        rng = h.headers.get("Range", "")
        if fault == "stall":  # never answer: wait until the client gives up and hangs up
            self.log.append((h.path, rng, 0))
            h.connection.settimeout(120)  # (a bound for a client that never gives up)
            try:
                h.connection.recv(1)
            except OSError:
                pass
            h.close_connection = True
            return None
        if fault in ("503", "429"):
            self.log.append((h.path, rng, int(fault)))
            extra = [("Retry-After", "1")] if fault == "429" else []
            return self._send(h, int(fault), extra, b"busy")
        if fault == "redirect":
            self.log.append((h.path, rng, 307))
            loc = f"http://127.0.0.2:{self.target_port}{h.path}"
            return self._send(h, 307, [("Location", loc)], b"")
        if fault == "200":
            fwd.pop("Range", None)
        if not fault:  # stream the answer through as it arrives (perf: no store-and-forward)
            return self._stream(h, fwd, rng, target)
        status, headers, body = self._upstream(h.path, fwd)
        if not target:
            self.log.append((h.path, rng, status))
        keep = [(k, v) for k, v in headers
                if k.lower() in ("content-range", "content-type", "www-authenticate",
                                 "location", "docker-content-digest", "retry-after")]
        if fault == "flip" and body:
            i = len(body) // 2
            body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1:]
        if fault == "badrange":
            keep = [(k, v) for k, v in keep if k.lower() != "content-range"]
            a, b = rng[len("bytes="):].split("-")
            keep.append(("Content-Range", f"bytes {int(a) + 1}-{int(b) + 1}/*"))
        if fault in ("reset", "truncate") and len(body) > 1:
            h.send_response(status)
            for k, v in keep:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            if fault == "reset":
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
            h.close_connection = True
            return None
        return self._send(h, status, keep, body)

    _KEEP = ("content-range", "content-type", "www-authenticate", "location",
             "docker-content-digest", "retry-after", "content-length")

    def _stream(self, h: http.server.BaseHTTPRequestHandler, fwd: dict[str, str], rng: str,
                target: bool) -> None:
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.request("GET", h.path, headers=fwd)
            r = conn.getresponse()
            if not target:
                self.log.append((h.path, rng, r.status))
            h.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() in self._KEEP:
                    h.send_header(k, v)
            if r.getheader("Content-Length") is None:
                h.send_header("Content-Length", "0")
            h.end_headers()
            while chunk := r.read(256 << 10):
                h.wfile.write(chunk)
        finally:
            conn.close()

    @staticmethod
    def _send(h: http.server.BaseHTTPRequestHandler, status: int,
              headers: list[tuple[str, str]], body: bytes) -> None:
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        for s in (self.server, self.target):
            s.shutdown()
            s.server_close()


def self_signed(tmp: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A CA certificate and a server certificate for `host` signed by it (RSA 2048): returns
    (ca.pem, server.pem with its key)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def make(cn: str, issuer: Any, key: Any, signer: Any, ca: bool) -> Any:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(hours=1))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clipcy test CA")])
    ca = make("clipcy test CA", ca_name, ca_key, ca_key, True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = make(host, ca_name, key, ca_key, False)
    ca_pem, server_pem = tmp / "ca.pem", tmp / "server.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return ca_pem, server_pem


class BlobServer:
    """Serves a layout's blobs as an http(s)://BASE store (BASE/sha256/HEX, Range honoured):
    plain, or TLS with `certfile`. `silent`: accept each connection and never answer (for
    read timeouts). `url` is the BASE to give clipctl."""

    def __init__(self, layout: Path, certfile: Path | None = None) -> None:
        import ssl

        blobs = layout / "blobs"
        self.silent = threading.Event()
        self.release = threading.Event()  # set at close: silent handlers return
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.requests += 1
                if server.silent.is_set():
                    server.release.wait()
                    return
                path = blobs / self.path.lstrip("/").removeprefix("blobs/")
                if ".." in self.path or not path.is_file():
                    return FaultProxy._send(self, 404, [], b"")
                data = path.read_bytes()
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes="):
                    a, b = (int(x) for x in rng[len("bytes="):].split("-"))
                    b = min(b, len(data) - 1)
                    return FaultProxy._send(self, 206, [
                        ("Content-Range", f"bytes {a}-{b}/{len(data)}")], data[a:b + 1])
                return FaultProxy._send(self, 200, [], data)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if certfile is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        port = self.server.server_address[1]
        self.url = f"{'https' if certfile else 'http'}://127.0.0.1:{port}/blobs"
        _serve(self.server)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    """`python tests/remoteserv.py proxy UPSTREAM DELAY_MS`: a FaultProxy in its own process
    (perf/remote.py: so that its Python threads do not share the reader's GIL); prints its
    port, serves until stdin closes."""
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "proxy":
        raise SystemExit(main.__doc__)
    p = FaultProxy(sys.argv[2])
    p.delay = float(sys.argv[3]) / 1000
    print(p.port, flush=True)
    sys.stdin.read()
    p.close()


if __name__ == "__main__":
    main()
