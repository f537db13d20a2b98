"""Storage refs (where an archive's layer blobs live) and the remote blob stores.

A storage ref is one of:
- a directory: an OCI layout (`oci:DIR` and `oci-layout://DIR` name the same), blobs at
  DIR/blobs/ALG/HEX;
- `docker://HOST[:PORT]/REPO`: the OCI distribution API, `GET /v2/REPO/blobs/DIGEST`; plain
  http for localhost, 127.0.0.1 and ::1 (or with `insecure`), https otherwise;
  `docker.io` means Docker Hub (`registry-1.docker.io`, one-word repos under `library/`);
- `http://BASE` or `https://BASE`: blobs at BASE/ALG/HEX (`BASE/sha256/...`).
Credentials never go into a ref (it is recorded in the archive and shown by inspect): a ref
with user info is refused; use an auth file.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field

from clipcy.errors import StorageRefError
from clipcy.storage.auth import RegistryAuth
from clipcy.storage.diskcache import DEFAULT_MAX_MIB, DiskSpanCache
from clipcy.storage.http import BlobURL, HttpClient, HttpOptions

DIR, DOCKER, HTTP = "dir", "docker", "http"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])$")
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
_HELP = "use a directory, docker://HOST[:PORT]/REPO or http(s)://BASE"


@dataclass(frozen=True)
class StorageRef:
    kind: str  # DIR, DOCKER or HTTP
    text: str  # as given
    path: str = ""  # DIR: the layout directory
    host: str = ""  # DOCKER: host[:port] as used for credentials
    repo: str = ""  # DOCKER: repository path
    base: str = ""  # HTTP: base URL without a trailing slash

    @property
    def remote(self) -> bool:
        return self.kind != DIR


def parse_storage_ref(ref: str | os.PathLike[str]) -> StorageRef:
    """Parse and validate a storage ref, or raise StorageRefError (one line, what and why)."""
    text = os.fspath(ref)
    if not isinstance(text, str) or not text.strip():
        raise StorageRefError("empty storage ref: " + _HELP)
    if text.startswith("docker://"):
        return _parse_docker(text)
    if text.startswith(("http://", "https://")):
        return _parse_http(text)
    for prefix in ("oci-layout://", "oci:"):
        if text.startswith(prefix):
            path = text[len(prefix):].partition(":")[0]
            if not path:
                raise StorageRefError(f"storage ref {text!r} names no directory")
            return StorageRef(DIR, text, path=path)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if m:
        raise StorageRefError(f"unsupported storage ref scheme {m.group(1)!r} in {_safe(text)}: "
                              + _HELP)
    return StorageRef(DIR, text, path=text)


def _safe(text: str) -> str:
    """A ref for a message, without anything that looks like user info."""
    return re.sub(r"(://)[^/@]*@", r"\1…@", text)


def _parse_docker(text: str) -> StorageRef:
    rest = text[len("docker://"):]
    hostport, slash, repo = rest.partition("/")
    if "@" in hostport:
        raise StorageRefError(f"storage ref {_safe(text)} carries credentials: remove them and "
                              "use an auth file (--authfile, REGISTRY_AUTH_FILE)")
    if not slash or not repo:
        raise StorageRefError(f"storage ref {text!r} names no repository: "
                              "docker://HOST[:PORT]/REPO")
    host, port = _split_port(hostport, text)
    if "." not in host and host != "localhost" and not host.startswith("[") and port is None:
        raise StorageRefError(f"storage ref {text!r}: {host!r} is not a registry host name "
                              "(docker://HOST[:PORT]/REPO, e.g. docker://docker.io/library/x)")
    if "@" in repo:
        raise StorageRefError(f"storage ref {text!r} names an image digest: give the "
                              "repository only (docker://HOST[:PORT]/REPO)")
    if ":" in repo:
        raise StorageRefError(f"storage ref {text!r} names a tag: give the repository only "
                              "(docker://HOST[:PORT]/REPO); blobs are found by digest")
    if not _REPO.match(repo):
        raise StorageRefError(f"storage ref {text!r}: {repo!r} is not a valid repository name "
                              "(lowercase letters, digits, separators . _ __ -, and /)")
    if host.lower() == "docker.io":
        host = "registry-1.docker.io"
        if "/" not in repo:
            repo = "library/" + repo
    hp = host.lower() + (f":{port}" if port is not None else "")
    return StorageRef(DOCKER, text, host=hp, repo=repo)


def _split_port(hostport: str, text: str) -> tuple[str, int | None]:
    host, port_s = hostport, ""
    if hostport.startswith("["):
        end = hostport.find("]")
        host, port_s = hostport[:end + 1], hostport[end + 1:].lstrip(":")
        if end < 0:
            raise StorageRefError(f"storage ref {text!r}: bad IPv6 host")
    elif ":" in hostport:
        host, _, port_s = hostport.partition(":")
    if not host or not _HOST.match(host):
        raise StorageRefError(f"storage ref {text!r}: bad host {host!r}")
    if port_s == "" and ":" not in hostport.replace(host, "", 1):
        return host, None
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise StorageRefError(f"storage ref {text!r}: bad port {port_s!r}")
    return host, int(port_s)


def _parse_http(text: str) -> StorageRef:
    try:
        p = urllib.parse.urlsplit(text)
        port = p.port
    except ValueError:
        raise StorageRefError(f"storage ref {_safe(text)}: bad URL") from None
    if p.username is not None or p.password is not None or "@" in p.netloc:
        raise StorageRefError(f"storage ref {_safe(text)} carries credentials: remove them and "
                              "use an auth file (--authfile, REGISTRY_AUTH_FILE)")
    if not p.hostname or not _HOST.match(p.hostname if ":" not in p.hostname
                                         else f"[{p.hostname}]"):
        raise StorageRefError(f"storage ref {text!r}: bad host")
    if p.query or p.fragment:
        raise StorageRefError(f"storage ref {text!r}: a base URL takes no query or fragment")
    del port
    return StorageRef(HTTP, text, base=text.rstrip("/"),
                      host=p.netloc.lower())


@dataclass(frozen=True)
class RemoteOptions:
    """How remote stores connect and cache (the readers' --authfile, --timeout, --cache-*)."""

    authfile: str | None = None
    http: HttpOptions = field(default_factory=HttpOptions)
    insecure: bool = False  # docker://: plain http even for non-loopback hosts
    cache: bool = True
    cache_dir: str | None = None
    cache_max_mib: int = DEFAULT_MAX_MIB


class RemoteStore:
    """Blob sources of a docker:// or http(s):// ref, sharing one connection pool, one
    authorizer and one span cache."""

    def __init__(self, ref: StorageRef, options: RemoteOptions | None = None) -> None:
        if not ref.remote:
            raise ValueError(f"not a remote storage ref: {ref.text}")
        self.ref = ref
        self.options = options or RemoteOptions()
        self.client = HttpClient(self.options.http)
        self.auth = RegistryAuth(self.client, ref.host, ref.repo, self.options.authfile)
        self.cache: DiskSpanCache | None = None
        if self.options.cache and self.options.cache_max_mib > 0:
            self.cache = DiskSpanCache(self.options.cache_dir, self.options.cache_max_mib << 20)

    def __repr__(self) -> str:
        return f"<RemoteStore {self.ref.text}>"

    def blob_url(self, digest: str) -> str:
        alg, _, hexpart = digest.partition(":")
        if self.ref.kind == DOCKER:
            bare = self.ref.host.split(":")[0] if not self.ref.host.startswith("[") \
                else self.ref.host.split("]")[0] + "]"
            scheme = "http" if self.options.insecure or bare in _LOOPBACK else "https"
            return f"{scheme}://{self.ref.host}/v2/{self.ref.repo}/blobs/{digest}"
        return f"{self.ref.base}/{alg}/{hexpart}"

    def source(self, digest: str, size: int) -> BlobURL:
        """A fetcher of the blob's compressed bytes (unverified: see clipcy.storage.spans)."""
        return BlobURL(self.client, self.blob_url(digest), digest, size, self.auth)

    def close(self) -> None:
        self.client.close()
