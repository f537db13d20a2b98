"""One pass over a whole blob over HTTP(S), in order, as the indexer streams a layer.

BlobStream reads a blob from one GET for as long as its body lasts. A body that breaks (a
reset, a truncated body, a read timeout) is continued from the byte reached with
`Range: bytes=N-`, so the caller's running hash never starts again; a server that answers
that with 200 (no Range support) is read from the start again and the first N bytes are
skipped. Connection errors, 429 and 5xx are retried with the readers' backoff (HttpClient),
up to `tries` failures in a row (a failure after new bytes arrived starts the count again).
Redirects are followed by hand, the final URL cached, Authorization sent only to the origin;
a 401 from the origin asks the authorizer once, a 401/403 from a redirect target goes back
to the origin once (an expired presigned URL), as BlobURL does for range reads.

Reads are bounded by the expected size + 1 byte: a longer blob is noticed without reading
the rest of it. The bytes are unverified: the caller hashes them (digest, span checksums).
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import TYPE_CHECKING

from clipcy.errors import RemoteAuthError, RemoteError
from clipcy.storage.http import (
    _CONTENT_RANGE,
    MAX_HOPS,
    REDIRECTS,
    USER_AGENT,
    Authorizer,
    HttpClient,
    _describe,
    _Retry,
    origin,
    redact,
    retry_after,
)

if TYPE_CHECKING:
    import urllib3

log = logging.getLogger("clipcy")

CHUNK = 1 << 20


class BlobStream:
    """read(): the blob's next bytes at `url` (b"" at its end); close() when done."""

    def __init__(self, client: HttpClient, url: str, name: str, size: int,
                 auth: Authorizer | None = None, chunk: int = CHUNK) -> None:
        self.client = client
        self.url = url
        self.name = name  # the digest, for messages
        self.size = size  # what the descriptor says
        self.auth = auth
        self.chunk = chunk
        self.pos = 0  # bytes handed out
        self.limit = size + 1  # never more than this: one byte past the size says "longer"
        self.end: int | None = None  # where the current body ends (None: unknown)
        self.resumed = 0  # bodies continued by a Range request
        self._origin = origin(url)
        self._location: str | None = None  # the redirect target, once known
        self._resp: urllib3.BaseHTTPResponse | None = None
        self._skip = 0  # bytes of the current body to drop (a server without Range)
        self._failures = 0  # in a row, without new bytes
        self._last = "no answer"
        self._auth_asked = False
        self._re_resolved = False

    def __repr__(self) -> str:
        return f"<BlobStream {self.name} at {redact(self.url)} pos {self.pos}>"

    def _fail(self, why: str) -> RemoteError:
        return RemoteError(f"cannot read blob {self.name} from {redact(self.url)}: {why}")

    def read(self) -> bytes:
        """The next chunk of the blob, or b"" at its end (or once size + 1 bytes were read).
        RemoteError / RemoteAuthError once retries are spent or on an answer that cannot
        be retried (404, 403, ...)."""
        while self.pos < self.limit:
            if self._resp is None:
                if self.end is not None and self.pos >= self.end:
                    return b""  # the body ended where the server said it would
                try:
                    self._open()
                except _Retry as e:
                    self._again(str(e), e.wait)
                    continue
            resp = self._resp
            assert resp is not None
            data, broken = self._take(resp)
            if data:
                self.client.count(len(data))
                self.pos += len(data)
                self._failures = 0
                if broken:
                    self._drop()  # the next read goes on from self.pos
                return data
            if broken:
                self._drop()
                self._again(f"{broken} after {self.pos} of {self.size} bytes", None)
                continue
            self._release()
            if self.end is not None and self.pos < self.end:
                self._again(f"body truncated after {self.pos} of {self.end} bytes", None)
                continue
            self.end = self.pos
            return b""
        self._drop()  # bounded: whatever is left is not read
        return b""

    def _take(self, resp: urllib3.BaseHTTPResponse) -> tuple[bytes, str]:
        """Up to a chunk of the body (less at its end), and why the body broke ("" if it did
        not). What arrived before a break is kept: read1 hands out what is there, where
        read(n) would drop a partial piece with the error."""
        import urllib3

        want = min(self.chunk, self.limit - self.pos)
        parts: list[bytes] = []
        got = 0
        try:
            while self._skip:  # a 200 to a resume: drop what was handed out already
                b = resp.read1(min(self._skip, self.chunk), decode_content=False)
                if not b:
                    return b"", "body truncated before the resume point"
                self.client.count(len(b))
                self._skip -= len(b)
            while got < want:
                b = resp.read1(want - got, decode_content=False)
                if not b:
                    break
                parts.append(b)
                got += len(b)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return b"".join(parts), _describe(e)
        return (parts[0] if len(parts) == 1 else b"".join(parts)), ""

    def _again(self, why: str, wait: float | None) -> None:
        self._failures += 1
        self._last = why
        log.debug("blob %s: %s (try %d)", self.name, why, self._failures)
        if self._failures >= self.client.options.tries:
            raise self._fail(f"{why} (after {self._failures} tries)")
        self.client.backoff(self._failures, wait)

    def _open(self) -> None:
        """Start a body at self.pos: self._resp set, or _Retry / RemoteError."""
        import urllib3

        for _hop in range(MAX_HOPS + 1):
            url = self._location or self.url
            at_origin = origin(url) == self._origin
            headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
            if self.pos:
                headers["Range"] = f"bytes={self.pos}-"
            sent: dict[str, str] = {}
            if at_origin and self.auth is not None:
                sent = self.auth.headers()
                headers.update(sent)
            try:
                resp = self.client.request(url, headers)
            except urllib3.exceptions.HTTPError as e:
                raise _Retry(_describe(e)) from None
            st = resp.status
            log.debug("GET %s %s: HTTP %d", redact(url), headers.get("Range", ""), st)
            if st in (200, 206):
                self._start(resp, st)
                return
            try:
                if st in REDIRECTS:
                    loc = resp.headers.get("Location")
                    if not loc:
                        raise self._fail(f"HTTP {st} without a Location")
                    self._location = urllib.parse.urljoin(url, loc)
                    continue
                if st in (401, 403) and not at_origin:
                    if self._re_resolved:
                        raise self._fail(f"HTTP {st} from the redirect target "
                                         f"{redact(url)} after re-resolving")
                    self._re_resolved = True
                    self._location = None
                    continue
                if st == 401:
                    if self.auth is None:
                        raise self._fail("HTTP 401 (unauthorized)")
                    if self._auth_asked:
                        raise RemoteAuthError(f"cannot read blob {self.name} from "
                                              f"{redact(self.url)}: {self.auth.rejected()}")
                    self._auth_asked = True
                    try:
                        self.auth.challenge(resp.headers.get("WWW-Authenticate", ""), sent)
                    except RemoteAuthError as e:
                        raise RemoteAuthError(f"cannot read blob {self.name} from "
                                              f"{redact(self.url)}: {e}") from None
                    continue
                if st == 403:
                    raise self._fail("HTTP 403 (access denied)")
                if st == 404:
                    raise self._fail("HTTP 404 (no such blob)")
                if st == 416:
                    raise self._fail(f"HTTP 416 (bytes from {self.pos} not satisfiable: the "
                                     f"blob is shorter than its descriptor's {self.size})")
                if st == 429 or st >= 500:
                    raise _Retry(f"HTTP {st}", retry_after(resp.headers.get("Retry-After")))
                raise self._fail(f"unexpected HTTP {st}")
            finally:
                if st in REDIRECTS or st == 401:
                    resp.drain_conn()  # small bodies: the connection is kept
                else:
                    resp.close()
                resp.release_conn()
        raise self._fail(f"more than {MAX_HOPS} redirects")

    def _start(self, resp: urllib3.BaseHTTPResponse, status: int) -> None:
        """A body begins: where it ends, and what of it to skip."""
        length = resp.headers.get("Content-Length")
        n = int(length) if length is not None and length.isdigit() else None
        self._skip = 0
        self._auth_asked = self._re_resolved = False  # answered: the next 401 may be new
        if status == 206:
            cr = resp.headers.get("Content-Range", "")
            m = _CONTENT_RANGE.match(cr)
            if not m or int(m.group(1)) != self.pos:
                resp.close()
                resp.release_conn()
                raise _Retry(f"HTTP 206 with Content-Range {cr[:60]!r} for bytes from "
                              f"{self.pos}")
            self.end = int(m.group(2)) + 1
            self.resumed += 1
        else:
            # the whole blob: at 0 as asked, or a server that ignores Range
            self._skip = self.pos
            self.end = n
        if self._skip:
            log.debug("blob %s: the server ignored the Range; skipping %d bytes", self.name,
                      self._skip)
        self._resp = resp

    def _release(self) -> None:
        if self._resp is not None:
            self._resp.release_conn()
            self._resp = None

    def _drop(self) -> None:
        """Give up the current body (broken, or not to be read further)."""
        if self._resp is not None:
            self._resp.close()
            self._resp.release_conn()
            self._resp = None

    def close(self) -> None:
        self._drop()
