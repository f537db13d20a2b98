"""Archives in a registry: an OCI artifact beside the image it indexes (push, find, pull).

An archive is stored in its image's repository as an OCI image manifest (image-spec 1.1):

    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "artifactType": "application/vnd.clipcy.archive.v2",
     "config": the empty descriptor (application/vnd.oci.empty.v1+json, the 2 bytes "{}"),
     "layers": [{"mediaType": "application/vnd.clipcy.archive.v2.clip", digest, size}],
     "subject": the image manifest the archive was made from,
     "annotations": {"io.clipcy.archive.format": "2.0", "io.clipcy.version": "0.1.0",
                     "io.clipcy.archive.digest": the layer's digest,
                     "io.clipcy.archive.size": the layer's size, in decimal}}

It is found from the image (distribution-spec 1.1): the referrers API
(`GET /v2/NAME/referrers/DIGEST`) where the registry has it, which the registry says by
answering the manifest PUT with an `OCI-Subject` header; otherwise the referrers tag schema,
an image index tagged `sha256-HEX` (the image manifest's digest) that lists the referrers,
updated by read-modify-write that keeps every other entry (a reader asks both at once and
takes the API's list when it names an archive). The artifact is also tagged
(`TAG.clip` by default) so that `garbage-collect --delete-untagged` keeps it; a tag that
holds anything but a clipcy archive is never moved.

The layer's digest and size are annotations as well: a registry copies a manifest's
annotations into its referrers list (and push copies them into the referrers tag's index),
so a reader that finds the archive there downloads it without reading the manifest first.

Nothing here reads an archive: callers pass what push needs from it (the image manifest
digest, the format version) and a check that pull runs on the downloaded file.

Requests go through the readers' HttpClient and RegistryAuth (the same auth-file lookup,
Basic and bearer tokens; tokens for a push ask for `pull,push`), with the same retries of
connection errors, 429 and 5xx. A blob up to UPLOAD_CHUNK is uploaded in one PUT; a larger
one in PATCH chunks, each retried, resuming from the offset the registry reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

from clipcy._fields import Fields, FrozenFields
from clipcy.errors import ClipError, RemoteAuthError, RemoteError, StorageRefError
from clipcy.storage.auth import RegistryAuth
from clipcy.storage.http import (
    USER_AGENT,
    BlobURL,
    HttpClient,
    HttpOptions,
    _describe,
    redact,
    retry_after,
)
from clipcy.storage.refs import DOCKER, LOOPBACK, StorageRef, parse_digest, parse_storage_ref

if TYPE_CHECKING:
    import urllib3

log = logging.getLogger("clipcy")

ARTIFACT_PREFIX = "application/vnd.clipcy.archive.v"
LAYER_SUFFIX = ".clip"
FORMAT_ANNOTATION = "io.clipcy.archive.format"
VERSION_ANNOTATION = "io.clipcy.version"
BLOB_DIGEST_ANNOTATION = "io.clipcy.archive.digest"  # the archive blob's (the layer's)
BLOB_SIZE_ANNOTATION = "io.clipcy.archive.size"  # its size in bytes, decimal
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_DATA = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY_DATA).hexdigest()
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
MANIFEST_MAX = 4 << 20  # the distribution registry's own bound on a manifest
UPLOAD_CHUNK = 8 << 20  # blobs up to this size: one PUT; larger ones: PATCH chunks of it
DOWNLOAD_PIECE = 8 << 20
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_FALLBACK_TAG = re.compile(r"sha256-[0-9a-f]{64}")


def artifact_type(major: int) -> str:
    return f"{ARTIFACT_PREFIX}{major}"


def layer_type(major: int) -> str:
    return artifact_type(major) + LAYER_SUFFIX


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for a manifest digest: sha256-HEX."""
    alg, hexpart = parse_digest(digest, "image reference")
    return f"{alg}-{hexpart}"


class ArtifactError(ClipError):
    """No usable clipcy archive for an image in a registry, or a push that must not happen."""


# -- image references ---------------------------------------------------------------------


class ImageRef(FrozenFields):
    """docker://HOST[:PORT]/REPO[:TAG][@sha256:HEX], parsed."""

    __slots__ = ("text", "repo", "tag", "digest")
    text: str
    repo: StorageRef  # docker://HOST[:PORT]/REPO: where the manifests and blobs are
    tag: str | None
    digest: str | None

    def __init__(self, text: str, repo: StorageRef, tag: str | None = None,
                 digest: str | None = None) -> None:
        self._init(text, repo, tag, digest)

    @property
    def reference(self) -> str:
        """What /v2/REPO/manifests/ takes: the digest if there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return self.text


def parse_image_ref(text: str, default_tag: str | None = "latest") -> ImageRef:
    """Parse docker://HOST[:PORT]/REPO[:TAG][@DIGEST] (the host rules of storage refs);
    no tag and no digest: default_tag."""
    if not isinstance(text, str) or not text.startswith("docker://"):
        raise StorageRefError(f"image reference {text!r}: expected "
                              "docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]")
    rest = text[len("docker://"):]
    digest = None
    if "@" in rest.partition("/")[2]:
        rest, _, digest = rest.rpartition("@")
        parse_digest(digest, f"image reference {text}")
    tag = None
    head, slash, path = rest.partition("/")
    if ":" in path:
        path, _, tag = path.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise StorageRefError(f"image reference {text!r}: {tag!r} is not a valid tag")
    repo = parse_storage_ref(f"docker://{head}{slash}{path}")
    if tag is None and digest is None:
        tag = default_tag
    return ImageRef(text, repo, tag, digest)


# -- the registry client ------------------------------------------------------------------


class _PushAuth(RegistryAuth):
    """Tokens that also allow pushing to the repository (asked once, for every request)."""

    def _scope(self) -> str:
        scope = super()._scope()
        if scope == f"repository:{self.repo}:pull":
            scope += ",push"
        return scope


class Response(FrozenFields):
    __slots__ = ("status", "headers", "body", "url")
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    url: str

    def __init__(self, status: int, headers: dict[str, str], body: bytes, url: str) -> None:
        self._init(status, headers, body, url)


class Registry:
    """The distribution API of one repository: manifests, blob uploads and downloads,
    referrers. Every request is counted in client.requests."""

    def __init__(self, ref: StorageRef, authfile: str | None = None,
                 http: HttpOptions | None = None, insecure: bool = False,
                 push: bool = False) -> None:
        if ref.kind != DOCKER:
            raise StorageRefError(f"{ref.text} is not a registry (docker://HOST/REPO)")
        self.ref = ref
        self.authfile = authfile
        self.http = http or HttpOptions()
        self.insecure = insecure
        self.push = push  # ask for tokens that may push
        self.client = HttpClient(self.http)
        kind = _PushAuth if push else RegistryAuth
        self.auth: RegistryAuth = kind(self.client, ref.host, ref.repo, authfile)

    def __repr__(self) -> str:
        return f"<Registry {self.where}>"

    def close(self) -> None:
        self.client.close()

    def preconnect(self) -> _Beside[None]:
        """Open a second connection to the registry on a thread of its own, so that two
        requests sent at once later (find_archives) both find one open; wait() on what is
        returned before the process forks."""
        return _Beside(lambda: self.client.preconnect(self.base))

    @property
    def base(self) -> str:
        host = self.ref.host
        bare = host.split("]")[0] + "]" if host.startswith("[") else host.split(":")[0]
        scheme = "http" if self.insecure or bare in LOOPBACK else "https"
        return f"{scheme}://{host}/v2/{self.ref.repo}"

    @property
    def where(self) -> str:
        return f"{self.ref.host}/{self.ref.repo}"

    def request(self, method: str, url: str, what: str, headers: dict[str, str] | None = None,
                body: bytes = b"", limit: int = MANIFEST_MAX, retry: bool = True) -> Response:
        """One request with the readers' retries (connection errors, 429, 5xx; none
        without `retry`) and one re-authentication on a 401; the body is read up to limit
        bytes. Any other status is returned for the caller to judge."""
        import urllib3

        opts = self.client.options
        same_origin = _origin(url) == _origin(self.base)
        last = "no answer"
        auth_asked = False
        attempt = 0
        while True:
            sent = self.auth.headers() if same_origin else {}
            hdrs = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **sent,
                    **(headers or {})}
            if method in ("PUT", "PATCH", "POST"):
                hdrs.setdefault("Content-Length", str(len(body)))
            wait: float | None = None
            try:
                resp = self._send(method, url, hdrs, body)
            except urllib3.exceptions.HTTPError as e:
                last = _describe(e)
                resp = None
            if resp is not None:
                try:
                    st = resp.status
                    log.debug("%s %s: HTTP %d", method, redact(url), st)
                    if st == 401 and same_origin and not auth_asked:
                        auth_asked = True
                        challenge = resp.headers.get("WWW-Authenticate", "")
                        try:
                            self.auth.challenge(challenge, sent)
                        except RemoteAuthError as e:
                            raise RemoteAuthError(f"{what}: {e}") from None
                        continue
                    if st == 401:
                        raise RemoteAuthError(f"{what}: {self.auth.rejected()}")
                    if st == 429 or st >= 500:
                        last = f"HTTP {st}"
                        wait = retry_after(resp.headers.get("Retry-After"))
                    else:
                        data = b"" if method == "HEAD" else resp.read(limit + 1)
                        if len(data) > limit:
                            resp.close()  # (not drained: the rest may be large)
                            raise RemoteError(f"{what}: the answer from {redact(url)} is "
                                              f"larger than {limit} bytes")
                        return Response(st, {k.lower(): v for k, v in resp.headers.items()},
                                        data, url)
                except ClipError:  # (RemoteError is an OSError too)
                    resp.close()
                    raise
                except (urllib3.exceptions.HTTPError, OSError) as e:
                    last = _describe(e)
                    resp.close()
                finally:
                    if not resp.closed:
                        resp.drain_conn()  # an unread error body must not reach the next
                    resp.release_conn()
            attempt += 1
            if attempt >= opts.tries or not retry:
                raise RemoteError(f"{what}: {last} from {redact(url)} (after {attempt} tries)")
            self.client.backoff(attempt, wait)

    def _send(self, method: str, url: str, headers: dict[str, str],
              body: bytes) -> urllib3.BaseHTTPResponse:
        with self.client._lock:
            self.client.requests += 1
        return self.client._pool.request(method, url, headers=headers,
                                         body=body if method != "GET" and method != "HEAD"
                                         else None, redirect=False, retries=False,
                                         preload_content=False, decode_content=False)

    def fail(self, what: str, r: Response) -> RemoteError:
        """One line for an answer the caller did not expect."""
        why = {401: "unauthorized", 403: "access denied", 404: "not found"}.get(r.status, "")
        detail = _registry_error(r.body)
        text = f"{what}: HTTP {r.status}" + (f" ({why})" if why else "")
        if detail:
            text += f": {detail}"
        return RemoteError(text + f" at {redact(r.url)}")

    # -- manifests ---------------------------------------------------------------------------
    def get_manifest(self, reference: str, what: str) -> tuple[str, str, bytes] | None:
        """(digest, media type, bytes) of the manifest at a tag or digest, or None (404).
        A digest reference is checked against the bytes."""
        r = self.request("GET", f"{self.base}/manifests/{reference}", what,
                         {"Accept": ACCEPT})
        if r.status == 404:
            return None
        if r.status != 200:
            raise self.fail(what, r)
        digest = "sha256:" + hashlib.sha256(r.body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RemoteError(f"{what}: the registry sent a manifest whose digest is {digest}, "
                              f"not {reference}")
        media = r.headers.get("content-type", "").split(";")[0].strip()
        doc = _json(r.body)  # (whether it is what the caller wants: the caller's check)
        if isinstance(doc, dict) and isinstance(doc.get("mediaType"), str):
            media = doc["mediaType"]
        return digest, media, r.body

    def put_manifest(self, reference: str, media_type: str, body: bytes,
                     what: str) -> Response:
        r = self.request("PUT", f"{self.base}/manifests/{reference}", what,
                         {"Content-Type": media_type}, body)
        if r.status not in (200, 201):
            raise self.fail(what, r)
        return r

    # -- blobs -----------------------------------------------------------------------------------
    def upload(self, digest: str, size: int, reader: Callable[[int, int], bytes],
               chunk: int = UPLOAD_CHUNK) -> bool:
        """Put a blob into the repository unless it is there: False if it was. One POST
        that mounts the blob from this same repository (201: it is there), else the upload
        session it opened: one PUT with the bytes (up to `chunk`), or PATCHes of `chunk`
        bytes, then the closing PUT. A PATCH that fails is resumed where the registry says
        the session stands; a session the registry no longer accepts (the distribution
        registry drops one whose state token fell behind, as when only a PATCH's answer
        was lost) is started again."""
        what = f"upload blob {digest} to {self.where}"
        q = urllib.parse.urlencode({"mount": digest, "from": self.ref.repo})
        r = self.request("POST", f"{self.base}/blobs/uploads/?{q}", what)
        if r.status == 201:
            return False
        if r.status != 202 or not r.headers.get("location"):
            raise self.fail(what, r)
        location = urllib.parse.urljoin(r.url, r.headers["location"])
        if size <= chunk:
            self._close_upload(location, digest, reader(0, size), what)
            return True
        done = 0
        failures = 0
        while done < size:
            n = min(chunk, size - done)
            try:
                # not retried as is: the registry may hold the chunk already (only the
                # answer was lost), and then the same PATCH would not fit
                r = self.request("PATCH", location, what, {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{done}-{done + n - 1}"}, reader(done, n), retry=False)
                if r.status != 202:
                    raise self.fail(what, r)
            except RemoteError as e:
                failures += 1
                if isinstance(e, RemoteAuthError) or failures >= self.client.options.tries:
                    raise
                self.client.backoff(failures, None)
                location, done = self._resume(location, what)
                continue
            location = urllib.parse.urljoin(r.url, r.headers.get("location") or location)
            done += n
        self._close_upload(location, digest, b"", what)
        return True

    def _resume(self, location: str, what: str) -> tuple[str, int]:
        """Where an upload goes on: (session URL, bytes the registry holds), from the
        session's status (its Range: 0-END), or a new session from 0."""
        r = self.request("GET", location, what)
        if r.status == 204:
            m = re.fullmatch(r"\s*(?:bytes=)?0-(\d+)\s*", r.headers.get("range", ""))
            loc = urllib.parse.urljoin(r.url, r.headers.get("location") or location)
            return loc, (int(m.group(1)) + 1 if m else 0)
        if r.status not in (400, 404, 416):
            raise self.fail(what + " (resuming)", r)
        log.debug("upload session gone (HTTP %d): starting again", r.status)
        r = self.request("POST", f"{self.base}/blobs/uploads/", what)
        if r.status != 202 or not r.headers.get("location"):
            raise self.fail(what, r)
        return urllib.parse.urljoin(r.url, r.headers["location"]), 0

    def _close_upload(self, location: str, digest: str, data: bytes, what: str) -> None:
        sep = "&" if urllib.parse.urlsplit(location).query else "?"
        url = location + sep + urllib.parse.urlencode({"digest": digest})
        r = self.request("PUT", url, what, {"Content-Type": "application/octet-stream"}, data)
        if r.status not in (201, 204):
            raise self.fail(what, r)

    def download(self, digest: str, size: int, out: IO[bytes],
                 piece: int = DOWNLOAD_PIECE) -> str:
        """The blob into out, by range requests (retried and resumed like reads): its
        sha256 digest as computed."""
        src = BlobURL(self.client, f"{self.base}/blobs/{digest}", digest, size, self.auth)
        h = hashlib.sha256()
        for off in range(0, size, piece):
            data = src.fetch(off, min(piece, size - off))
            h.update(data)
            out.write(data)
        return "sha256:" + h.hexdigest()

    # -- referrers -------------------------------------------------------------------------------
    def referrers_api(self, digest: str) -> list[dict[str, Any]] | None:
        """The referrers API's list for a manifest, or None where the registry has no
        referrers API (404)."""
        what = f"list the referrers of {digest} in {self.where}"
        r = self.request("GET", f"{self.base}/referrers/{digest}", what,
                         {"Accept": OCI_INDEX})
        if r.status == 404:
            return None
        if r.status != 200:
            raise self.fail(what, r)
        return parse_referrers(r.body, f"the referrers API's answer for {digest}")


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urllib.parse.urlsplit(url)
    return p.scheme, (p.hostname or "").lower(), p.port


def _registry_error(body: bytes) -> str:
    """The first error of a distribution API error body ({"errors": [{code, message}]})."""
    try:
        doc = json.loads(body)
        err = doc["errors"][0]
        text = f"{err.get('code', '')} {err.get('message', '')}".strip()
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""
    return text[:200] if text.isprintable() else ""


def parse_referrers(body: bytes, what: str) -> list[dict[str, Any]]:
    """The descriptors of a referrers index (the API's answer or the fallback tag's
    index), each checked to have a digest and a size: or ArtifactError."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise ArtifactError(f"malformed referrers index: {what} is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
        raise ArtifactError(f"malformed referrers index: {what} is not an image index "
                            "(no manifests list)")
    out = []
    for i, d in enumerate(doc.get("manifests", [])):
        if not isinstance(d, dict) or not isinstance(d.get("size"), int) or d["size"] < 0:
            raise ArtifactError(f"malformed referrers index: {what}: entry {i} is not a "
                                "descriptor with a digest and a size")
        try:
            parse_digest(d.get("digest"), what)
        except ClipError:
            raise ArtifactError(f"malformed referrers index: {what}: entry {i} has an "
                                f"invalid digest {str(d.get('digest'))[:80]!r}") from None
        out.append(d)
    return out


# -- push -------------------------------------------------------------------------------------


class Pushed(FrozenFields):
    __slots__ = ("artifact", "tag", "subject", "referrers", "uploaded", "requests")
    artifact: str  # the artifact manifest's digest
    tag: str
    subject: str
    referrers: str  # "api" (the registry indexes referrers) or "tag sha256-HEX"
    uploaded: bool  # False: the archive blob was in the repository already
    requests: int

    def __init__(self, artifact: str, tag: str, subject: str, referrers: str, uploaded: bool,
                 requests: int) -> None:
        self._init(artifact, tag, subject, referrers, uploaded, requests)


def artifact_manifest(blob_digest: str, blob_size: int, subject: dict[str, Any],
                      version: tuple[int, int], clipcy_version: str) -> bytes:
    """The artifact's manifest, canonical JSON (sorted keys, no spaces): the same archive
    pushed again for the same image is the same manifest."""
    layer = {"mediaType": layer_type(version[0]), "digest": blob_digest, "size": blob_size}
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type(version[0]),
        "config": {"mediaType": EMPTY_TYPE, "digest": EMPTY_DIGEST, "size": len(EMPTY_DATA)},
        "layers": [layer],
        "subject": subject,
        "annotations": {FORMAT_ANNOTATION: f"{version[0]}.{version[1]}",
                        VERSION_ANNOTATION: clipcy_version,
                        BLOB_DIGEST_ANNOTATION: blob_digest,
                        BLOB_SIZE_ANNOTATION: str(blob_size)},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _is_clipcy(doc: object) -> bool:
    return isinstance(doc, dict) and str(doc.get("artifactType", "")).startswith(ARTIFACT_PREFIX)


def push_archive(reg: Registry, path: str | os.PathLike[str], image_digest: str,
                 version: tuple[int, int], clipcy_version: str, tag: str) -> Pushed:
    """Store the archive at path as the artifact of image_digest (which must be in the
    repository) and tag it; then make it findable from the image (referrers)."""
    where = reg.where
    if not _TAG.fullmatch(tag):
        raise ArtifactError(f"{tag!r} is not a valid tag")
    if _FALLBACK_TAG.fullmatch(tag):
        raise ArtifactError(f"tag {tag} is the referrers tag of an image (sha256-HEX): "
                            "give another tag")
    parse_digest(image_digest, "the archive's manifest digest")
    subject = reg.get_manifest(image_digest, f"look up image {image_digest} in {where}")
    if subject is None:
        raise ArtifactError(f"image {image_digest} is not in {where}: push the image the "
                            "archive was made from first (the archive refers to it)")
    _, subject_type, subject_body = subject
    if subject_type not in MANIFEST_TYPES:
        kind = subject_type or "manifest of no media type"
        raise ArtifactError(f"{image_digest} in {where} is a {kind}, not an image manifest")
    held = reg.get_manifest(tag, f"look up tag {tag} in {where}")
    if held is not None and not _is_clipcy(_json(held[2])):
        raise ArtifactError(f"tag {tag} in {where} holds {held[0]}, which is not a clipcy "
                            "archive: refusing to move it (give another TAG)")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        blob_digest = "sha256:" + h.hexdigest()

        def reader(off: int, n: int) -> bytes:
            data = os.pread(f.fileno(), n, off)
            if len(data) != n:
                raise ArtifactError(f"{os.fspath(path)} changed while it was pushed")
            return data

        uploaded = reg.upload(blob_digest, size, reader)
    subject_desc = {"mediaType": subject_type, "digest": image_digest,
                    "size": len(subject_body)}
    body = artifact_manifest(blob_digest, size, subject_desc, version, clipcy_version)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    what = f"push the archive's manifest to {where}"
    url = f"{reg.base}/manifests/{tag}"
    headers = {"Content-Type": OCI_MANIFEST}
    r = reg.request("PUT", url, what, headers, body)
    if r.status in (400, 404):
        # The empty config blob is in most repositories that hold an artifact already, so
        # it is uploaded only when the registry says it is missing (one request saved on
        # every push but the first).
        reg.upload(EMPTY_DIGEST, len(EMPTY_DATA), lambda off, n: EMPTY_DATA[off:off + n])
        r = reg.request("PUT", url, what, headers, body)
    if r.status not in (200, 201):
        raise reg.fail(what, r)
    if r.headers.get("oci-subject") == image_digest:
        how = "api"
    else:
        how = "tag " + fallback_tag(image_digest)
        _add_referrer(reg, image_digest, {
            "mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
            "artifactType": artifact_type(version[0]),
            "annotations": _json(body)["annotations"]})
    return Pushed(digest, tag, image_digest, how, uploaded, reg.client.requests)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _add_referrer(reg: Registry, image_digest: str, desc: dict[str, Any]) -> None:
    """Read-modify-write of the referrers tag's index: every other entry kept as it was,
    an older entry for the same digest replaced."""
    tag = fallback_tag(image_digest)
    what = f"the referrers index {tag} in {reg.where}"
    held = reg.get_manifest(tag, f"read {what}")
    entries: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX}
    if held is not None:
        entries = parse_referrers(held[2], what)
        old = _json(held[2])
        if held[1] not in INDEX_TYPES:
            raise ArtifactError(f"malformed referrers index: {what} is a {held[1]}, not an "
                                "image index")
        doc = {k: v for k, v in old.items() if k != "manifests"}
    doc["manifests"] = [d for d in entries if d.get("digest") != desc["digest"]] + [desc]
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    reg.put_manifest(tag, OCI_INDEX, body, f"update {what}")


# -- find and pull ------------------------------------------------------------------------


class Candidate(FrozenFields):
    __slots__ = ("digest", "version", "found", "blob")
    digest: str  # the artifact manifest
    version: tuple[int, int]
    found: str  # where: "referrers API", "referrers tag sha256-HEX", "tag T"
    # the archive blob (digest, size) as the list's annotations name it, or the manifest
    # itself where it was found by its tag; None: only the manifest says (an older push)
    blob: tuple[str, int] | None

    def __init__(self, digest: str, version: tuple[int, int], found: str,
                 blob: tuple[str, int] | None = None) -> None:
        self._init(digest, version, found, blob)


class Found(Fields):
    __slots__ = ("image", "candidates", "looked", "requests")

    def __init__(self, image: str, candidates: list[Candidate], looked: list[str],
                 requests: int = 0) -> None:
        self.image = image  # the image manifest's digest
        self.candidates = candidates
        self.looked = looked  # where it looked, for the message when there is none
        self.requests = requests


def resolve_image(reg: Registry, ref: ImageRef,
                  pick: Callable[[list[dict[str, Any]], str], dict[str, Any]]) -> str:
    """The image manifest's digest for ref: an index resolved by pick(manifests, where)
    (the platform's entry)."""
    reference = ref.reference
    for _ in range(4):  # index depth
        got = reg.get_manifest(reference, f"resolve {ref.text}")
        if got is None:
            raise ArtifactError(f"no image {reference} in {reg.where} (HTTP 404)")
        digest, media, body = got
        doc = _json(body)
        if media in INDEX_TYPES or (not media and isinstance(doc, dict)
                                    and "manifests" in doc):
            manifests = doc.get("manifests") if isinstance(doc, dict) else None
            if not isinstance(manifests, list):
                raise ArtifactError(f"image index {digest} in {reg.where} has no manifests")
            chosen = pick([m for m in manifests if isinstance(m, dict)],
                          f"index {digest} of {ref.text}")
            reference = str(chosen.get("digest"))
            parse_digest(reference, f"index {digest}")
            continue
        if _is_clipcy(doc):
            raise ArtifactError(f"{ref.text} is a clipcy archive, not an image: give the "
                                "image's reference")
        return digest
    raise ArtifactError(f"{ref.text}: image indexes nested too deep")


def _listed_blob(desc: dict[str, Any]) -> tuple[str, int] | None:
    """The archive blob a referrer descriptor's annotations name (digest, size), or None if
    they name none or something that is not a sha256 digest and a decimal size."""
    ann = desc.get("annotations")
    if not isinstance(ann, dict):
        return None
    digest, size = ann.get(BLOB_DIGEST_ANNOTATION), ann.get(BLOB_SIZE_ANNOTATION)
    if (not isinstance(digest, str) or not digest.startswith("sha256:")
            or not isinstance(size, str) or not size.isascii() or not size.isdigit()
            or len(size) > 19):  # (an int64, as descriptor sizes are)
        return None
    try:
        parse_digest(digest)
    except ClipError:
        return None
    return digest, int(size)


def _archive_layer(doc: object) -> tuple[str, int] | None:
    """The archive blob (digest, size) of an artifact manifest: its one layer of a clipcy
    media type, or None."""
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if (not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict)
            or not str(layers[0].get("mediaType", "")).startswith(ARTIFACT_PREFIX)
            or not isinstance(layers[0].get("size"), int) or layers[0]["size"] < 0):
        return None
    digest = layers[0].get("digest")
    try:
        parse_digest(digest)
    except ClipError:
        return None
    return str(digest), int(layers[0]["size"])


def _version(desc: dict[str, Any]) -> tuple[int, int] | None:
    """The format version a referrer descriptor announces, or None if it is no clipcy
    archive."""
    kind = str(desc.get("artifactType", ""))
    if not kind.startswith(ARTIFACT_PREFIX) or not kind[len(ARTIFACT_PREFIX):].isdigit():
        return None
    major = int(kind[len(ARTIFACT_PREFIX):])
    ann = desc.get("annotations")
    text = ann.get(FORMAT_ANNOTATION, "") if isinstance(ann, dict) else ""
    m = re.fullmatch(r"(\d+)\.(\d+)", str(text))
    return (major, int(m.group(2))) if m and int(m.group(1)) == major else (major, 0)


_T = TypeVar("_T")


class _Beside(Generic[_T]):
    """A call run on a thread of its own while the caller does something else; result()
    waits for it and returns what it returned or raises what it raised.

    A bare _thread: threading's start() waits until the new thread runs, which under load
    takes longer than the request that the thread is there to overlap. (Such a thread does
    not hold up the interpreter's exit: an interrupted caller does not wait for a request
    to time out.) Once wait() has returned the thread holds nothing: the process may fork
    (clipctl mount does, once its archive is found)."""

    def __init__(self, call: Callable[[], _T]) -> None:
        import _thread

        self._call = call
        self._value: tuple[_T] | None = None
        self._error: BaseException | None = None
        self._done = _thread.allocate_lock()
        self._done.acquire()  # released when the call has returned or raised
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        try:
            self._value = (self._call(),)
        except BaseException as e:  # noqa: BLE001 (raised again by result())
            self._error = e
        finally:
            self._done.release()

    def wait(self) -> None:
        with self._done:
            pass

    def result(self) -> _T:
        self.wait()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value[0]


def find_archives(reg: Registry, image_digest: str, artifact_tag: str | None) -> Found:
    """The clipcy archives that refer to the image: from the referrers API, else the
    referrers tag, else the artifact tag.

    The referrers API and the referrers tag are asked at the same time (one round trip,
    not two, on a registry without the API), and both answers are awaited, so that the
    requests made are the same every time. The tag's answer is used as if it had been
    asked after the API: only when the API lists no clipcy archive (its errors too)."""
    found = Found(image_digest, [], [])

    def add(descs: list[dict[str, Any]], where: str,
            blob: tuple[str, int] | None = None) -> None:
        for d in descs:
            v = _version(d)
            if v is not None and not any(c.digest == d["digest"] for c in found.candidates):
                found.candidates.append(Candidate(d["digest"], v, where,
                                                  blob or _listed_blob(d)))

    tag = fallback_tag(image_digest)
    index = f"the referrers index {tag} in {reg.where}"
    by_tag = _Beside(lambda: reg.get_manifest(tag, f"read {index}"))
    try:
        listed = reg.referrers_api(image_digest)
    except Exception:
        by_tag.wait()  # no request left in flight (the counts stay exact)
        raise
    if listed is not None:
        found.looked.append("the referrers API")
        add(listed, "referrers API")
    if found.candidates:
        by_tag.wait()
    else:
        found.looked.append(f"the referrers tag {tag}")
        held = by_tag.result()
        if held is not None:
            add(parse_referrers(held[2], index), f"referrers tag {tag}")
    if not found.candidates and artifact_tag:
        found.looked.append(f"the tag {artifact_tag}")
        held = reg.get_manifest(artifact_tag, f"read tag {artifact_tag} in {reg.where}")
        doc = _json(held[2]) if held is not None else None
        if held is not None and isinstance(doc, dict) and _is_clipcy(doc):
            subject = doc.get("subject")
            if not isinstance(subject, dict) or subject.get("digest") != image_digest:
                got = subject.get("digest") if isinstance(subject, dict) else "no image"
                raise ArtifactError(f"the archive at tag {artifact_tag} in {reg.where} was made "
                                    f"for another image ({got}, not {image_digest})")
            add([{"digest": held[0], "size": len(held[2]),
                  "artifactType": doc.get("artifactType"),
                  "annotations": doc.get("annotations")}], f"tag {artifact_tag}",
                _archive_layer(doc))
    found.requests = reg.client.requests
    return found


def choose(found: Found, reads: int, where: str) -> list[Candidate]:
    """The candidates this reader (format major `reads`) can read, the one to take first:
    the newest format, and of equals the last listed (the last pushed, in a referrers tag's
    index)."""
    if not found.candidates:
        raise ArtifactError(f"no clipcy archive for image {found.image} in {where} (looked in "
                            + ", ".join(found.looked) + ")")
    ok = [c for c in found.candidates if c.version[0] == reads]
    if not ok:
        have = ", ".join(sorted({f"{c.version[0]}.{c.version[1]}" for c in found.candidates}))
        raise ArtifactError(f"the clipcy archives for image {found.image} in {where} are of "
                            f"format {have}; this clipcy reads {reads}.x")
    order = list(reversed(ok))
    return sorted(order, key=lambda c: c.version[1], reverse=True)


class ArchiveGone(ArtifactError):
    """A referrer that is listed but whose manifest is gone (deleted, garbage-collected)."""


def fetch_archive(reg: Registry, cand: Candidate, image_digest: str, dest: str,
                  check: Callable[[str], str]) -> tuple[str, int]:
    """Download the candidate's archive blob to dest (a new file), checking the blob's
    digest and size, and check(dest) (the archive's image manifest digest) against
    image_digest. (blob digest, size). dest is left for the caller to remove on error.

    A blob the referrers list names (cand.blob) is downloaded straight away: the two checks
    are what make it safe, not the list. If that fails in any way but authentication (gone,
    another size, another digest, another image's archive), the artifact's manifest decides:
    the error stands if it names that same blob, else its own blob is taken."""
    what = f"the clipcy archive {cand.digest} in {reg.where}"
    if cand.blob is None:
        return _download(reg, what, _read_layer(reg, cand.digest, what, image_digest),
                         image_digest, dest, check)
    try:
        return _download(reg, what, cand.blob, image_digest, dest, check)
    except RemoteAuthError:
        raise
    except ClipError as e:
        listed_error = e
    # (ArchiveGone if the manifest is gone too)
    named = _read_layer(reg, cand.digest, what, image_digest)
    if named == cand.blob:
        raise listed_error
    log.warning("%s: found as listed with blob %s (%d bytes), but its manifest names %s "
                "(%d bytes): taking the manifest's", what, *cand.blob, *named)
    return _download(reg, what, named, image_digest, dest, check)


def _read_layer(reg: Registry, artifact: str, what: str, image_digest: str
                ) -> tuple[str, int]:
    """The archive blob (digest, size) that the artifact's manifest names, its subject
    checked to be the image."""
    got = reg.get_manifest(artifact, f"read {what}")
    if got is None:
        raise ArchiveGone(f"{what} is listed but not there (HTTP 404)")
    doc = _json(got[2])
    if not _is_clipcy(doc):
        raise ArtifactError(f"{what} is not a clipcy archive manifest")
    subject = doc.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != image_digest:
        other = subject.get("digest") if isinstance(subject, dict) else "no image"
        raise ArtifactError(f"{what} was made for another image ({other}, not "
                            f"{image_digest})")
    layer = _archive_layer(doc)
    if layer is None:
        raise ArtifactError(f"{what} does not hold one archive layer")
    return layer


def _download(reg: Registry, what: str, layer: tuple[str, int], image_digest: str, dest: str,
              check: Callable[[str], str]) -> tuple[str, int]:
    blob, size = layer
    with open(dest, "wb") as out:
        computed = reg.download(blob, size, out)
        out.flush()
        os.fsync(out.fileno())
    if computed != blob:
        raise ArtifactError(f"the archive blob of {what} is not the one the artifact names "
                            f"(its digest is {computed}, expected {blob}): tampered with")
    made_for = check(dest)
    if made_for != image_digest:
        raise ArtifactError(f"{what} was made for another image: the archive indexes "
                            f"{made_for}, not {image_digest}")
    return blob, size
