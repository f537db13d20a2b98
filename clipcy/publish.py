"""Archives in the image's registry: push_archive, pull_archive (clipctl push, pull), and
open_archive by image reference (the readers and the mount take docker://HOST/REPO:TAG).

The registry side (the artifact manifest, blob uploads, referrers) is
clipcy.storage.artifact; this module joins it to the archive reader (what a push needs from
the archive, the check of a pulled one) and to the image's platforms.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from clipcy._fields import FrozenFields
from clipcy.errors import ArchiveError, ClipError
from clipcy.tempfiles import TempFile

if TYPE_CHECKING:
    from clipcy.archive.reader import Archive
    from clipcy.storage.artifact import Candidate, Found, Pushed, Registry
    from clipcy.storage.registry import RemoteOptions


def _registry(ref: Any, remote: RemoteOptions | None, push: bool) -> Registry:
    from clipcy.storage.artifact import Registry
    from clipcy.storage.registry import RemoteOptions

    o = remote or RemoteOptions()
    return Registry(ref, authfile=o.authfile, http=o.http, insecure=o.insecure, push=push)


def push_archive(archive: str | os.PathLike[str], ref: str, *,
                 remote: RemoteOptions | None = None) -> Pushed:
    """Store the archive in the registry beside the image it was made from, as an OCI
    artifact whose subject is that image's manifest, tagged with ref's TAG (default: the
    archive's tag + ".clip"). ref is docker://HOST[:PORT]/REPO[:TAG]: the image is the one
    the archive names, and must be in REPO. remote: authfile, insecure, timeouts, retries
    (a clipcy.storage.registry.RemoteOptions)."""
    from clipcy import __version__
    from clipcy.archive.reader import open_archive
    from clipcy.storage.artifact import ArtifactError, parse_image_ref
    from clipcy.storage.artifact import push_archive as push

    image = parse_image_ref(ref, default_tag=None)
    if image.digest is not None:
        raise ArtifactError(f"{ref}: push takes docker://HOST[:PORT]/REPO[:TAG]; the image is "
                            "the one the archive was made from (TAG names the archive)")
    with open_archive(archive) as arc:
        digest = arc.metadata.get("manifest_digest")
        version = arc.format_version
        made_tag = arc.metadata.get("tag")
    if not isinstance(digest, str):
        raise ArtifactError(f"archive {os.fspath(archive)} records no image manifest digest")
    tag = image.tag
    if tag is None:
        tag = (f"{made_tag}.clip" if isinstance(made_tag, str) and made_tag
               else digest.replace(":", "-") + ".clip")
    reg = _registry(image.repo, remote, push=True)
    try:
        return push(reg, archive, digest, version, __version__, tag)
    finally:
        reg.close()


class Pulled(FrozenFields):
    __slots__ = ("path", "image", "artifact", "blob", "size", "version", "found",
                 "candidates", "requests")
    path: str
    image: str  # the image manifest's digest
    artifact: str  # the artifact manifest's digest
    blob: str  # the archive's digest
    size: int
    version: tuple[int, int]
    found: str  # where it was found
    candidates: int  # how many clipcy archives refer to the image
    requests: int

    def __init__(self, path: str, image: str, artifact: str, blob: str, size: int,
                 version: tuple[int, int], found: str, candidates: int, requests: int) -> None:
        self._init(path, image, artifact, blob, size, version, found, candidates, requests)


def _pick(platform: str | None) -> Any:
    """pick(manifests, where): an image index's entry for platform (default: this
    machine's). A platform given is checked at once; clipcy.image.layout is imported only
    then or when an index is met (~4.5 ms of a mount by reference otherwise)."""
    given = None
    if platform:
        from clipcy.image.layout import Platform

        given = Platform.parse(platform)

    def pick(manifests: list[dict[str, Any]], where: str) -> dict[str, Any]:
        from clipcy.errors import ManifestNotFoundError
        from clipcy.image.layout import Platform

        want = given or Platform.host()
        seen = []
        for m in manifests:
            p = m.get("platform")
            if not isinstance(p, dict):
                continue
            plat = Platform.from_json(p)
            seen.append(str(plat))
            if plat == want:
                return m
        raise ManifestNotFoundError(f"no manifest for platform {want} in {where} (available: "
                                    f"{', '.join(seen) or 'none'})")

    return pick


def _made_for(path: str) -> str:
    """The image manifest digest a downloaded archive records (or an error if it is none)."""
    from clipcy.archive.reader import open_archive

    with open_archive(path) as arc:
        digest = arc.metadata.get("manifest_digest")
    return str(digest)


def find_archive(reg: Registry, ref: str, platform: str | None
                 ) -> tuple[Found, list[Candidate]]:
    """The image's manifest digest and the archives to try for it, best first."""
    from clipcy.archive.format import FORMAT_MAJOR
    from clipcy.storage.artifact import choose, find_archives, parse_image_ref, resolve_image

    image = parse_image_ref(ref)
    # find_archives sends two requests at once: the second connection they need is opened
    # while the image is resolved, not after (a TCP and TLS handshake, 2 round trips)
    opening = reg.preconnect()
    try:
        digest = resolve_image(reg, image, _pick(platform))
        found = find_archives(reg, digest,
                              f"{image.tag}.clip" if image.digest is None else None)
    finally:
        opening.wait()  # no thread left running: clipctl mount forks next
    return found, choose(found, FORMAT_MAJOR, reg.where)


def pull_archive(ref: str, out: str | os.PathLike[str], *, platform: str | None = None,
                 remote: RemoteOptions | None = None) -> Pulled:
    """Download the clipcy archive of the image at ref (docker://HOST[:PORT]/REPO[:TAG] or
    @sha256:HEX; an index resolved for platform, default this machine) into out, atomically:
    found through the referrers API, else the referrers tag, else the tag TAG.clip; the
    newest format this clipcy reads. Checked: the blob's digest, and that the archive
    indexes that image. On any error out is not written (nor a partial file left)."""
    from clipcy.storage.artifact import (
        ArchiveGone,
        ArtifactError,
        fetch_archive,
        parse_image_ref,
    )

    image = parse_image_ref(ref)
    out = os.fspath(out)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ClipError(f"cannot write {out}: no such directory {parent}")
    reg = _registry(image.repo, remote, push=False)
    try:
        found, order = find_archive(reg, ref, platform)
        tmp = TempFile(parent, f".{os.path.basename(out)}.", ".part")
        try:
            tmp.create()
            tmp.close()
            for i, cand in enumerate(order):
                try:
                    blob, size = fetch_archive(reg, cand, found.image, tmp.path, _made_for)
                    break
                except ArchiveGone:
                    if i == len(order) - 1:
                        raise
                except ArchiveError as e:
                    raise ArtifactError(f"the archive {cand.digest} in {reg.where} is not a "
                                        f"usable clipcy archive: {e}") from None
            os.chmod(tmp.path, 0o644 & ~_umask())
            os.replace(tmp.path, out)
        except BaseException:
            tmp.discard()
            raise
        return Pulled(out, found.image, cand.digest, blob, size, cand.version, cand.found,
                      len(found.candidates), reg.client.requests)
    finally:
        reg.close()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def archive_cache_dir(remote: RemoteOptions | None) -> str:
    """Where archives fetched by image reference are kept: CACHE_DIR/archives with
    --cache-dir, else $XDG_CACHE_HOME/clipcy/archives (~/.cache/clipcy/archives)."""
    if remote is not None and remote.cache_dir:
        return os.path.join(remote.cache_dir, "archives")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "clipcy", "archives")


def fetch_by_reference(ref: str, remote: RemoteOptions | None = None,
                       platform: str | None = None) -> tuple[str, str]:
    """The image's archive as a local file, and the storage ref of its blobs (the image's
    repository): found as pull finds it, and kept in the cache by the artifact's digest,
    so that a second open downloads no archive (it still resolves the image and lists its
    referrers: a newer archive is taken when there is one)."""
    from clipcy.storage.artifact import ArchiveGone, ArtifactError, fetch_archive, parse_image_ref

    image = parse_image_ref(ref)
    cache = archive_cache_dir(remote)
    reg = _registry(image.repo, remote, push=False)
    try:
        found, order = find_archive(reg, ref, platform)
        for i, cand in enumerate(order):
            path = os.path.join(cache, cand.digest.replace(":", "-") + ".clip")
            if os.path.isfile(path):
                return path, image.repo.text
            try:
                os.makedirs(cache, exist_ok=True)
            except OSError as e:
                raise ClipError(f"cannot create the archive cache {cache}: "
                                f"{e.strerror or e}") from None
            tmp = TempFile(cache, ".fetch-", ".part")
            try:
                tmp.create()
                tmp.close()
                fetch_archive(reg, cand, found.image, tmp.path, _made_for)
                os.replace(tmp.path, path)
                return path, image.repo.text
            except ArchiveGone:
                if i == len(order) - 1:
                    raise
            except ArchiveError as e:
                raise ArtifactError(f"the archive {cand.digest} in {reg.where} is not a "
                                    f"usable clipcy archive: {e}") from None
            finally:
                tmp.discard()  # nothing left once renamed
        raise AssertionError("unreachable: choose() returns at least one candidate")
    finally:
        reg.close()


def open_archive(path: str | os.PathLike[str], layout: str | os.PathLike[str] | None = None,
                 *, storage: str | os.PathLike[str] | None = None,
                 remote: RemoteOptions | None = None) -> Archive:
    """clipcy.archive.reader.open_archive, which also takes an image reference
    (docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]): its archive is fetched as pull fetches
    it (kept in the cache dir by digest) and its blobs are read from that repository,
    unless storage names another place."""
    from clipcy.archive.reader import open_archive as open_local

    text = os.fspath(path)
    if isinstance(text, str) and text.startswith("docker://"):
        local, repo = fetch_by_reference(text, remote)
        if storage is None and layout is None:
            storage = repo
        return open_local(local, layout, storage=storage, remote=remote)
    return open_local(path, layout, storage=storage, remote=remote)
