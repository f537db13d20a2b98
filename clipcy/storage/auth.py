"""Registry authentication: credentials from auth files, Basic, and bearer tokens.

Credentials are looked up, for the registry's host (host:port), in the first of these files
that has an entry for it (the order of podman/skopeo, then Docker's file):
`--authfile`, `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
`~/.config/containers/auth.json`, `~/.docker/config.json`. Entries are `auths` keys (a host,
a host:port, or Docker's `https://host/v1/` form) holding base64 `user:password` in `auth`.
Credential helpers are run as Docker runs them: in a file that names one for the host
(`credHelpers`) or for every host (`credsStore`), `docker-credential-NAME get` is given the
host on stdin and answers `{"Username": ..., "Secret": ...}`; a helper that has nothing for
the host sends the lookup on to the next file, one that is missing or fails is an error.

A 401 with `WWW-Authenticate: Basic` makes every later request carry the Basic credentials;
`Bearer realm=...,service=...,scope=...` fetches a token from the realm (anonymously, or with
the Basic credentials), cached per scope until `expires_in` (60 s when absent) and refreshed
on the first 401 that the cached token gets.

Secrets never leave this module except in Authorization headers: Credentials and tokens have
no repr with their values, and messages name the host, the realm (without query) and the
file, never a user name, password or token.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clipcy.errors import RemoteAuthError
from clipcy.storage.http import HttpClient, redact

DEFAULT_EXPIRES = 60.0
_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True)
class Credentials:
    username: str = field(repr=False)
    password: str = field(repr=False)
    source: str = ""  # the file they came from (not secret)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def auth_files(authfile: str | os.PathLike[str] | None = None) -> list[Path]:
    """Candidate auth files, in lookup order (whether or not they exist)."""
    files: list[Path] = []
    if authfile is not None:
        files.append(Path(authfile))
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        files.append(Path(env))
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        files.append(Path(xdg) / "containers" / "auth.json")
    home = Path(os.path.expanduser("~"))
    files.append(home / ".config" / "containers" / "auth.json")
    files.append(home / ".docker" / "config.json")
    return files


def _key_host(key: str) -> str:
    """The host[:port] an `auths` key stands for ("https://h/v1/" -> "h", "h/ns" -> "h")."""
    k = key.strip()
    if "://" in k:
        k = k.split("://", 1)[1]
    return k.split("/", 1)[0].lower()


HELPER_TIMEOUT = 30.0  # seconds a credential helper may take (it may ask a keychain)
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _helper_for(doc: dict[str, object], host: str) -> str | None:
    """The credential helper a Docker config names for host: credHelpers, then credsStore."""
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if isinstance(key, str) and _key_host(key) == host and isinstance(name, str):
                return name
    store = doc.get("credsStore")
    return store if isinstance(store, str) and store else None


def run_helper(name: str, host: str, path: Path) -> Credentials | None:
    """`docker-credential-NAME get` for host: its credentials, or None if it has none."""
    import shutil
    import subprocess

    where = f"credential helper docker-credential-{name} (named in {path})"
    if not _HELPER_NAME.fullmatch(name):
        raise RemoteAuthError(f"auth file {path}: {name!r} is not a credential helper name")
    exe = shutil.which(f"docker-credential-{name}")
    if exe is None:
        raise RemoteAuthError(f"{where} is not installed (not found on PATH)")
    try:
        done = subprocess.run([exe, "get"], input=host.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise RemoteAuthError(f"{where} did not answer for {host} within "
                              f"{HELPER_TIMEOUT:.0f} s") from None
    except OSError as e:
        raise RemoteAuthError(f"{where} cannot be run: {e.strerror}") from None
    if done.returncode != 0:
        said = (done.stdout or done.stderr).decode("utf-8", "replace").strip()
        if "credentials not found" in said.lower():  # the helpers' protocol for "none"
            return None
        first = said.splitlines()[0][:200] if said else f"exit status {done.returncode}"
        raise RemoteAuthError(f"{where} failed for {host}: {first}")
    try:
        answer = json.loads(done.stdout)
        user, secret = answer["Username"], answer["Secret"]
        if not isinstance(user, str) or not isinstance(secret, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise RemoteAuthError(f"{where} answered for {host} with something other than "
                              "{\"Username\": ..., \"Secret\": ...}") from None
    if user == "<token>":
        raise RemoteAuthError(f"{where} gave an identity token for {host}: clipcy does not "
                              "support identity tokens yet; log in with a user name and password")
    if not user or not secret:
        return None
    return Credentials(user, secret, f"{path} via docker-credential-{name}")


def load_credentials(host: str, authfile: str | os.PathLike[str] | None = None
                     ) -> Credentials | None:
    """Credentials for host ("host" or "host:port") from the first auth file that has them.

    An explicit authfile that cannot be read, or any file that is not valid JSON, is an error
    (naming the file, never its content)."""
    want = host.lower()
    for i, path in enumerate(auth_files(authfile)):
        explicit = authfile is not None and i == 0
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if explicit:
                raise RemoteAuthError(f"auth file {path} does not exist") from None
            continue
        except (OSError, UnicodeDecodeError) as e:
            if explicit:
                raise RemoteAuthError(f"cannot read auth file {path}: "
                                      f"{getattr(e, 'strerror', None) or type(e).__name__}"
                                      ) from None
            continue
        try:
            doc = json.loads(text)
        except ValueError:
            raise RemoteAuthError(f"auth file {path} is not valid JSON") from None
        if not isinstance(doc, dict):
            continue
        helper = _helper_for(doc, want)
        if helper is not None:
            found = run_helper(helper, want, path)
            if found is not None:
                return found
            continue
        auths = doc.get("auths")
        if not isinstance(auths, dict):
            continue
        for key, entry in auths.items():
            if not isinstance(key, str) or _key_host(key) != want:
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
                continue
            try:
                raw = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise RemoteAuthError(f"auth file {path}: the entry for {host} is not base64 "
                                      "of user:password") from None
            user, sep, password = raw.partition(":")
            if not sep or not user:
                raise RemoteAuthError(f"auth file {path}: the entry for {host} is not base64 "
                                      "of user:password")
            return Credentials(user, password, str(path))
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """("bearer"|"basic"|..., params) from a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return scheme.lower(), params


class _Token:
    __slots__ = ("value", "expires")

    def __init__(self, value: str, expires: float) -> None:
        self.value = value
        self.expires = expires

    def __repr__(self) -> str:
        return "<token>"


class RegistryAuth:
    """Authorization for one registry host and repository (the Authorizer of http.BlobURL).

    Thread-safe: one token fetch at a time; readers share the cached token."""

    def __init__(self, client: HttpClient, host: str, repo: str,
                 authfile: str | os.PathLike[str] | None = None) -> None:
        self.client = client
        self.host = host
        self.repo = repo
        self._authfile = authfile
        self._creds: Credentials | None = None
        self._creds_loaded = False
        self._lock = threading.Lock()
        self._mode = ""  # "", "basic" or "bearer"
        self._bearer: dict[str, str] = {}  # realm, service, scope of the last challenge
        self._tokens: dict[str, _Token] = {}  # scope -> token
        self.token_fetches = 0
        # what token expiry is measured with (a test sets a fake clock)
        self.clock: Callable[[], float] = time.monotonic

    def __repr__(self) -> str:
        return f"<RegistryAuth {self.host}/{self.repo} {self._mode or 'anonymous'}>"

    def _credentials(self) -> Credentials | None:
        if not self._creds_loaded:
            self._creds = load_credentials(self.host, self._authfile)
            self._creds_loaded = True
        return self._creds

    def _scope(self) -> str:
        return self._bearer.get("scope") or f"repository:{self.repo}:pull"

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._mode == "basic":
                creds = self._credentials()
                return {"Authorization": creds.basic()} if creds else {}
            if self._mode == "bearer":
                tok = self._tokens.get(self._scope())
                if tok is None or tok.expires <= self.clock():
                    tok = self._fetch_token()
                return {"Authorization": f"Bearer {tok.value}"}
            return {}

    def challenge(self, www_authenticate: str, sent: dict[str, str]) -> None:
        scheme, params = parse_challenge(www_authenticate)
        with self._lock:
            if scheme == "basic":
                creds = self._credentials()
                if creds is None:
                    raise RemoteAuthError(self._no_credentials())
                if sent.get("Authorization") == creds.basic():
                    raise RemoteAuthError(f"registry {self.host} rejected the credentials "
                                          f"from {creds.source} (HTTP 401)")  # = rejected()
                self._mode = "basic"
                return
            if scheme == "bearer" and params.get("realm"):
                self._mode = "bearer"
                self._bearer = params
                tok = self._tokens.get(self._scope())
                if tok is not None and sent.get("Authorization") != f"Bearer {tok.value}":
                    return  # another thread refreshed it meanwhile
                self._tokens.pop(self._scope(), None)
                self._fetch_token()
                return
            raise RemoteAuthError(f"registry {self.host} asks for unsupported authentication "
                                  f"{scheme or '(none)'!r}")

    def rejected(self) -> str:
        creds = self._credentials()
        if creds is None:
            return self._no_credentials()
        return f"registry {self.host} rejected the credentials from {creds.source} (HTTP 401)"

    def _no_credentials(self) -> str:
        files = ", ".join(str(p) for p in auth_files(self._authfile))
        return (f"registry {self.host} requires authentication and no credentials for it were "
                f"found (looked in {files})")

    def _fetch_token(self) -> _Token:
        """A new token for the current scope (called with the lock held)."""
        realm = self._bearer.get("realm", "")
        split = urllib.parse.urlsplit(realm)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise RemoteAuthError(f"registry {self.host} names a bad token realm "
                                  f"{redact(realm)!r}")
        query = {k: v for k, v in (("service", self._bearer.get("service")),
                                   ("scope", self._scope())) if v}
        url = realm + ("&" if split.query else "?") + urllib.parse.urlencode(query)
        creds = self._credentials()
        headers = {"Authorization": creds.basic()} if creds else {}
        self.token_fetches += 1
        status, _, body = self.client.get_small(url, headers, f"token for {self.host}")
        if status in (401, 403):
            if creds is None:
                raise RemoteAuthError(self._no_credentials())
            raise RemoteAuthError(f"token server {redact(realm)} rejected the credentials from "
                                  f"{creds.source} (HTTP {status})")
        if status != 200:
            raise RemoteAuthError(f"token server {redact(realm)} answered HTTP {status}")
        try:
            doc = json.loads(body)
            value = doc.get("token") or doc.get("access_token")
            expires_in = float(doc.get("expires_in") or DEFAULT_EXPIRES)
        except (ValueError, AttributeError, TypeError):
            raise RemoteAuthError(f"token server {redact(realm)} sent no usable token") from None
        if not isinstance(value, str) or not value or not value.isprintable():
            raise RemoteAuthError(f"token server {redact(realm)} sent no usable token")
        tok = _Token(value, self.clock() + max(1.0, expires_in))
        self._tokens[self._scope()] = tok
        return tok
