"""Storage refs (where an archive's layer blobs live) and blob digests, parsed and checked.

A storage ref is one of:
- a directory: an OCI layout (`oci:DIR` and `oci-layout://DIR` name the same), blobs at
  DIR/blobs/ALG/HEX;
- `docker://HOST[:PORT]/REPO`: the OCI distribution API, `GET /v2/REPO/blobs/DIGEST`; plain
  http for localhost, 127.0.0.1 and ::1 (or with `insecure`), https otherwise;
  `docker.io` means Docker Hub (`registry-1.docker.io`, one-word repos under `library/`);
- `http://BASE` or `https://BASE`: blobs at BASE/ALG/HEX (`BASE/sha256/...`).
Credentials never go into a ref (it is recorded in the archive and shown by inspect): a ref
with user info is refused; use an auth file.

A blob digest (ALG:HEX) is checked by parse_digest before it becomes part of a path or URL.
"""

from __future__ import annotations

import os
import re

from clipcy._fields import FrozenFields
from clipcy.errors import LayoutError, StorageRefError

DIR, DOCKER, HTTP = "dir", "docker", "http"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# (patterns, compiled by re on first use: a local ref needs none of them, and compiling them all
# at import cost a reader's start-up ~0.4 ms)
_REPO = rf"^{_COMPONENT}(?:/{_COMPONENT})*$"
_HOST = (r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
         r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])$")
LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
_HELP = "use a directory, docker://HOST[:PORT]/REPO or http(s)://BASE"


class StorageRef(FrozenFields):
    """A parsed storage ref (immutable; a plain class, not a dataclass: see clipcy._fields)."""

    __slots__ = ("kind", "text", "path", "host", "repo", "base")
    kind: str  # DIR, DOCKER or HTTP
    text: str  # as given
    path: str  # DIR: the layout directory
    host: str  # DOCKER: host[:port] as used for credentials
    repo: str  # DOCKER: repository path
    base: str  # HTTP: base URL without a trailing slash

    def __init__(self, kind: str, text: str, path: str = "", host: str = "", repo: str = "",
                 base: str = "") -> None:
        self._init(kind, text, path, host, repo, base)

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
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text) if "://" in text else None
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
    if not re.match(_REPO, repo):
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
    if not host or not re.match(_HOST, host):
        raise StorageRefError(f"storage ref {text!r}: bad host {host!r}")
    if port_s == "" and ":" not in hostport.replace(host, "", 1):
        return host, None
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise StorageRefError(f"storage ref {text!r}: bad port {port_s!r}")
    return host, int(port_s)


def _parse_http(text: str) -> StorageRef:
    import urllib.parse  # (only here: a local ref is parsed without it)

    try:
        p = urllib.parse.urlsplit(text)
        port = p.port
    except ValueError:
        raise StorageRefError(f"storage ref {_safe(text)}: bad URL") from None
    if p.username is not None or p.password is not None or "@" in p.netloc:
        raise StorageRefError(f"storage ref {_safe(text)} carries credentials: remove them and "
                              "use an auth file (--authfile, REGISTRY_AUTH_FILE)")
    if not p.hostname or not re.match(_HOST, p.hostname if ":" not in p.hostname
                                         else f"[{p.hostname}]"):
        raise StorageRefError(f"storage ref {text!r}: bad host")
    if p.query or p.fragment:
        raise StorageRefError(f"storage ref {text!r}: a base URL takes no query or fragment")
    del port
    return StorageRef(HTTP, text, base=text.rstrip("/"),
                      host=p.netloc.lower())


_DIGEST_HEX = {"sha256": 64, "sha512": 128}  # lowercase hex digits of each algorithm's digest
_HEX = frozenset("0123456789abcdef")


def parse_digest(digest: object, where: str = "descriptor") -> tuple[str, str]:
    """Validate an OCI digest string before it becomes a path: ('sha256', hex)."""
    if not isinstance(digest, str) or ":" not in digest:
        raise LayoutError(f"invalid digest {digest!r} in {where}")
    alg, _, hexpart = digest.partition(":")
    size = _DIGEST_HEX.get(alg)
    if size is None:
        raise LayoutError(f"unsupported digest algorithm {alg!r} in {where} ({digest})")
    if len(hexpart) != size or not _HEX.issuperset(hexpart):
        raise LayoutError(f"invalid digest {digest!r} in {where}")
    return alg, hexpart
