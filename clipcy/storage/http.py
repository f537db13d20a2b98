"""Range reads of one blob over HTTP(S): retries, redirects, Content-Range checks.

Why urllib3: the readers are synchronous and threaded (extract workers, FUSE threads, one
ArchiveFile per thread), and urllib3's PoolManager is documented thread-safe, keeps a bounded
pool of keep-alive connections per host, and hands back the raw status, headers and body
stream without following redirects, retrying or decoding on its own: clipcy needs each of
those under its own control (no Authorization to another host, Content-Range checked, no
gzip decoding of a gzip layer). It is the transport under requests and pip, and well kept.
requests' Session is not documented as thread-safe; httpx and aiohttp are async-first.

What a fetch does (BlobURL.fetch):
- one `Range: bytes=a-b` per request, `Accept-Encoding: identity`;
- a 206 must carry `Content-Range: bytes a-b/SIZE` with exactly the asked range and the size
  the archive recorded, and a body of exactly b-a+1 bytes;
- a 200 (the server ignored the Range) is read only when the asked range ends within
  `whole_body_max` bytes of the start, then the connection is dropped; otherwise a clear error;
- redirects are followed by hand and the final URL is cached, so later reads go straight to
  it; Authorization is only ever sent to the origin (scheme, host and port of the blob URL);
  a 401 or 403 from the redirect target re-resolves once (an expired presigned URL);
- a 401 from the origin asks the authorizer once per fetch (a new or refreshed token);
- connection errors, resets mid-body, truncated bodies, 5xx and 429 are retried with
  exponential backoff and jitter (429/503 honour Retry-After), up to `tries`; then one line
  naming the blob, the URL without credentials or query, and the last status.
The bytes returned are unverified: the caller checks them against the archive's span
checksums before using or caching them.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from clipcy.errors import RemoteAuthError, RemoteError

# urllib3 (with http.client, ssl and email) takes ~25 ms to import: it is imported where a
# request is made, so reading from a local layout never pays for it.
if TYPE_CHECKING:
    import urllib3

log = logging.getLogger("clipcy")

REDIRECTS = (301, 302, 303, 307, 308)
MAX_HOPS = 5
USER_AGENT = "clipcy"
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class HttpOptions:
    connect_timeout: float = 5.0  # seconds to open a connection
    read_timeout: float = 30.0  # seconds of silence while waiting for bytes
    tries: int = 6  # attempts per fetch, the first included
    backoff: float = 0.05  # first retry waits about this long, doubling up to backoff_max
    backoff_max: float = 5.0
    retry_after_max: float = 30.0  # a longer Retry-After is cut to this
    whole_body_max: int = 4 << 20  # bounded fallback when a server answers a Range with 200
    pool_size: int = 16  # keep-alive connections kept per host

    def __post_init__(self) -> None:
        if self.tries < 1:
            raise ValueError("tries must be at least 1")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("timeouts must be positive")


def redact(url: str) -> str:
    """The URL without user info and without a query (presigned URLs carry signatures)."""
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{p.port}" if p.port else "")
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "…" if p.query else "", ""))


def origin(url: str) -> tuple[str, str, int]:
    p = urllib.parse.urlsplit(url)
    port = p.port or (443 if p.scheme == "https" else 80)
    return p.scheme.lower(), (p.hostname or "").lower(), port


class HttpClient:
    """A thread-safe urllib3 pool plus request/byte counters (for tests and perf/)."""

    def __init__(self, options: HttpOptions | None = None) -> None:
        import urllib3
        self.options = options or HttpOptions()
        self._pool = urllib3.PoolManager(
            num_pools=32,
            maxsize=self.options.pool_size,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=self.options.connect_timeout,
                                    read=self.options.read_timeout),
        )
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes_received = 0

    def request(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        with self._lock:
            self.requests += 1
        return self._pool.request("GET", url, headers=headers, redirect=False, retries=False,
                                  preload_content=False, decode_content=False)

    def count(self, n: int) -> None:
        with self._lock:
            self.bytes_received += n

    def preconnect(self, url: str) -> None:
        """Open one more keep-alive connection to url's origin and leave it in the pool:
        the TCP (and TLS) handshake of a request to be sent beside another one, done while
        an earlier answer is awaited. Best effort: a failure is left for a request to meet."""
        import urllib3

        try:
            pool = self._pool.connection_from_url(url)
            # (urllib3 has no public call that opens a connection ahead of a request)
            conn = pool._get_conn()  # an idle one if there is one, else a new one
        except urllib3.exceptions.HTTPError:  # closed meanwhile: nothing to do
            return
        try:
            if conn.is_closed:
                conn.connect()
        except (urllib3.exceptions.HTTPError, OSError) as e:
            log.debug("preconnect to %s: %s", redact(url), _describe(e))
            conn.close()
        finally:
            pool._put_conn(conn)  # (closed, not kept, if the pool was closed meanwhile)

    def backoff(self, attempt: int, retry_after: float | None) -> None:
        """Sleep before retry number `attempt` (1-based): exponential with jitter, or the
        server's Retry-After when it gave one (capped)."""
        o = self.options
        delay = min(o.backoff_max, o.backoff * (2 ** (attempt - 1)))
        delay = delay / 2 + random.random() * delay / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, o.retry_after_max))
        time.sleep(delay)

    def get_small(self, url: str, headers: dict[str, str], what: str,
                  limit: int = 1 << 20) -> tuple[int, dict[str, str], bytes]:
        """GET a small document (a token) with the same retries: (status, headers, body)."""
        import urllib3
        last = "no answer"
        for attempt in range(1, self.options.tries + 1):
            if attempt > 1:
                self.backoff(attempt - 1, None)
            try:
                resp = self.request(url, {"Accept-Encoding": "identity",
                                          "User-Agent": USER_AGENT, **headers})
            except urllib3.exceptions.HTTPError as e:
                last = _describe(e)
                continue
            try:
                if resp.status == 429 or resp.status >= 500:
                    last = f"HTTP {resp.status}"
                    continue
                body = resp.read(limit + 1)
                if len(body) > limit:
                    raise RemoteError(f"{what}: answer from {redact(url)} is larger than "
                                      f"{limit} bytes")
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, body
            except (urllib3.exceptions.HTTPError, OSError) as e:
                last = _describe(e)
            finally:
                resp.release_conn()
        raise RemoteError(f"{what}: no answer from {redact(url)} after "
                          f"{self.options.tries} tries (last: {last})")

    def close(self) -> None:
        self._pool.clear()


def _describe(e: BaseException) -> str:
    """A short, secret-free description of a transport error."""
    import urllib3
    reason = getattr(e, "reason", None)
    inner = reason if isinstance(reason, BaseException) else e
    name = type(inner).__name__
    if isinstance(inner, urllib3.exceptions.NewConnectionError):
        return "cannot connect"
    if isinstance(inner, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return "read timed out"
    if isinstance(inner, urllib3.exceptions.ConnectTimeoutError):
        return "connect timed out"
    if isinstance(inner, ConnectionResetError):
        return "connection reset"
    if isinstance(inner, urllib3.exceptions.IncompleteRead):
        return "body truncated"
    if isinstance(inner, urllib3.exceptions.ProtocolError):
        return "connection broken"
    if isinstance(inner, urllib3.exceptions.SSLError):
        import ssl  # loaded with urllib3 already

        cause = next((a for a in inner.args if isinstance(a, ssl.SSLError)), None)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (f"TLS certificate not trusted ({cause.verify_message}; a private CA is "
                    "given with SSL_CERT_FILE)")
        return f"TLS error ({cause.reason if cause is not None else 'handshake failed'})"
    return name


def _untrusted(e: BaseException) -> bool:
    """Whether a transport error is a certificate that failed verification."""
    import ssl  # loaded with urllib3 already

    return any(isinstance(a, ssl.SSLCertVerificationError) for a in getattr(e, "args", ()))


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        import email.utils  # only for an HTTP-date Retry-After (~5 ms to import)
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Authorizer(Protocol):
    """What BlobURL needs from the registry's authentication (auth.py)."""

    def headers(self) -> dict[str, str]:
        """Authorization headers for the origin ({} when none is known yet)."""
        ...

    def challenge(self, www_authenticate: str, sent: dict[str, str]) -> None:
        """React to a 401 whose request carried `sent`: get or refresh credentials, or
        raise RemoteAuthError."""
        ...

    def rejected(self) -> str:
        """Why a request with fresh credentials still got a 401 (no secrets)."""
        ...


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying (the text says how)."""

    def __init__(self, why: str, wait: float | None = None) -> None:
        super().__init__(why)
        self.wait = wait


class BlobURL:
    """fetch(offset, n): compressed bytes of one blob at `url`, by HTTP range requests."""

    def __init__(self, client: HttpClient, url: str, name: str, size: int,
                 auth: Authorizer | None = None) -> None:
        self.client = client
        self.url = url
        self.name = name  # the blob digest, for messages
        self.size = size  # as recorded in the archive
        self.auth = auth
        self._origin = origin(url)
        self._lock = threading.Lock()
        self._resolve_lock = threading.Lock()  # one thread resolves; the others wait for it
        self._location: str | None = None  # cached final URL after redirects
        self._direct = False  # the origin answered without a redirect: no need to resolve

    def __repr__(self) -> str:
        return f"<BlobURL {self.name} at {redact(self.url)}>"

    @property
    def resolved(self) -> bool:
        """Whether fetches go straight to a known URL (no redirect left to resolve): until
        then they take turns, so that a redirect is resolved once."""
        with self._lock:
            return self._direct or self._location is not None

    def _fail(self, why: str) -> RemoteError:
        return RemoteError(f"cannot read blob {self.name} from {redact(self.url)}: {why}")

    def fetch(self, offset: int, n: int) -> bytes:
        """Exactly n bytes at offset (unverified), or RemoteError / RemoteAuthError."""
        if n <= 0:
            return b""
        if offset < 0 or offset + n > self.size:
            raise self._fail(f"range {offset}+{n} outside the blob's {self.size} bytes")
        opts = self.client.options
        last = "no answer"
        attempt = 0
        auth_asked = re_resolved = False
        hops = 0
        while True:
            with self._lock:
                location, direct = self._location, self._direct
            try:
                if location is not None:
                    data = self._attempt(location, offset, n)
                elif direct:
                    data = self._attempt(self.url, offset, n)
                else:
                    with self._resolve_lock:
                        with self._lock:
                            location, direct = self._location, self._direct
                        if location is None and not direct:
                            return self._attempt(self.url, offset, n)
                    continue  # resolved while this one waited: go without the lock
                return data
            except _Redirect:
                hops += 1
                if hops > MAX_HOPS:
                    raise self._fail(f"more than {MAX_HOPS} redirects") from None
                continue
            except _Reauth as r:
                if r.at_origin:
                    if self.auth is None:
                        raise self._fail(r.why) from None
                    if auth_asked:
                        raise RemoteAuthError(f"cannot read blob {self.name} from "
                                              f"{redact(self.url)}: {self.auth.rejected()}"
                                              ) from None
                    auth_asked = True
                    try:
                        self.auth.challenge(r.challenge, r.sent)
                    except RemoteAuthError as e:
                        raise RemoteAuthError(f"cannot read blob {self.name} from "
                                              f"{redact(self.url)}: {e}") from None
                    continue
                if re_resolved:
                    raise self._fail(f"{r.why} from the redirect target "
                                     f"{redact(location or '')} after re-resolving") from None
                re_resolved = True
                with self._lock:  # expired presigned URL: ask the origin again, once
                    if self._location == location:
                        self._location = None
                        self._direct = False
                continue
            except _Retry as r:
                attempt += 1
                last = str(r)
                if attempt >= opts.tries:
                    raise self._fail(f"{last} (after {attempt} tries)") from None
                self.client.backoff(attempt, r.wait)

    def _attempt(self, url: str, offset: int, n: int) -> bytes:
        import urllib3
        at_origin = origin(url) == self._origin
        headers = {"Range": f"bytes={offset}-{offset + n - 1}", "Accept-Encoding": "identity",
                   "User-Agent": USER_AGENT}
        sent: dict[str, str] = {}
        if at_origin and self.auth is not None:
            sent = self.auth.headers()
            headers.update(sent)
        try:
            resp = self.client.request(url, headers)
        except urllib3.exceptions.HTTPError as e:
            log.debug("GET %s %s: %s", redact(url), headers["Range"], _describe(e))
            if _untrusted(e):  # the same certificate again: no retry can succeed
                raise self._fail(_describe(e)) from None
            raise _Retry(_describe(e)) from None
        log.debug("GET %s %s: HTTP %d", redact(url), headers["Range"], resp.status)
        keep = False
        try:
            st = resp.status
            if st == 206:
                data = self._read_206(resp, offset, n)
                keep = True
                if at_origin and url == self.url:
                    with self._lock:
                        self._direct = True
                return data
            if st in REDIRECTS:
                loc = resp.headers.get("Location")
                if not loc:
                    raise self._fail(f"HTTP {st} without a Location")
                target = urllib.parse.urljoin(url, loc)
                with self._lock:  # cached before the resolve lock is released
                    self._location = target
                raise _Redirect(target)
            if st == 200:
                return self._read_200(resp, url, offset, n)
            if st in (401, 403):
                if at_origin and st == 401:
                    raise _Reauth(True, "HTTP 401 (unauthorized)",
                                  resp.headers.get("WWW-Authenticate", ""), sent)
                if not at_origin:
                    raise _Reauth(False, f"HTTP {st}", "", sent)
                raise self._fail("HTTP 403 (access denied)")
            if st == 404:
                raise self._fail("HTTP 404 (no such blob)")
            if st == 416:
                raise self._fail(f"HTTP 416 (range {offset}+{n} not satisfiable: "
                                 "the blob is shorter than the archive recorded)")
            if st == 429 or st >= 500:
                raise _Retry(f"HTTP {st}", retry_after(resp.headers.get("Retry-After")))
            raise self._fail(f"unexpected HTTP {st}")
        finally:
            if keep:
                resp.release_conn()
            else:
                resp.drain_conn() if resp.status in REDIRECTS else resp.close()
                resp.release_conn()

    def _read_206(self, resp: urllib3.BaseHTTPResponse, offset: int, n: int) -> bytes:
        cr = resp.headers.get("Content-Range", "")
        m = _CONTENT_RANGE.match(cr)
        if not m:
            raise _Retry(f"HTTP 206 with a bad Content-Range {cr[:60]!r}")
        a, b, total = int(m.group(1)), int(m.group(2)), m.group(3)
        if total != "*" and int(total) != self.size:
            raise self._fail(f"the server's blob has {total} bytes, the archive recorded "
                             f"{self.size}")
        if (a, b) != (offset, offset + n - 1):
            raise _Retry(f"HTTP 206 for bytes {a}-{b}, asked {offset}-{offset + n - 1}")
        return self._read_body(resp, n)

    def _read_body(self, resp: urllib3.BaseHTTPResponse, n: int) -> bytes:
        import urllib3
        parts = []
        got = 0
        try:
            while got < n:
                b = resp.read(min(n - got, 1 << 20), decode_content=False)
                if not b:
                    break
                parts.append(b)
                got += len(b)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            self.client.count(got)
            raise _Retry(f"{_describe(e)} after {got} of {n} bytes") from None
        self.client.count(got)
        if got != n:
            raise _Retry(f"body truncated after {got} of {n} bytes")
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_200(self, resp: urllib3.BaseHTTPResponse, url: str, offset: int, n: int) -> bytes:
        """The server ignored the Range: read the body's prefix if it is small enough."""
        end = offset + n
        limit = self.client.options.whole_body_max
        if end > limit:
            raise self._fail(f"the server at {redact(url)} ignored the Range request (HTTP 200 "
                             f"with the whole blob); reading {end} bytes of it per read is more "
                             f"than the {limit}-byte fallback allows")
        data = self._read_body(resp, end)
        return data[offset:end]


class _Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class _Reauth(Exception):
    def __init__(self, at_origin: bool, why: str, challenge: str, sent: dict[str, str]) -> None:
        super().__init__(why)
        self.at_origin = at_origin
        self.why = why
        self.challenge = challenge
        self.sent = sent
