"""An image in a registry as an ImageSource: `clipctl index docker://HOST/REPO:TAG`.

The manifest (or index) the reference names, the nested manifests and the config are
fetched through the distribution API (storage/artifact.py's Registry: the readers' auth-file
lookup, Basic and bearer tokens, retries) and checked by layout.py's rules exactly as a
layout's are (check_blob: size and digest against the descriptor; resolve(): platforms,
media types, diff_ids). Each layer blob is one streaming GET (storage/blobstream.py), resumed
by Range where a body breaks, and hashed by the indexer as it streams: nothing of it is
written to disk.

Requests: the reference's manifest (the answer to a digest reference is checked against
it), each nested index or manifest by digest, the config blob (one range read), one GET per
layer (more only where a body breaks), and a token fetch with token auth.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from clipcy.errors import BlobError, DigestMismatchError, ManifestNotFoundError
from clipcy.image.layout import Descriptor, ImageSource, LayerBlob, LayerInfo, check_blob
from clipcy.limits import DEFAULT as DEFAULT_LIMITS
from clipcy.limits import Limits

if TYPE_CHECKING:
    from clipcy.storage.artifact import ImageRef, Registry
    from clipcy.storage.blobstream import BlobStream
    from clipcy.storage.registry import RemoteOptions

ACCEPT = ", ".join((
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
))


class StreamedBlob(LayerBlob):
    """A layer blob read from the registry in one pass (BlobStream)."""

    def __init__(self, stream: BlobStream) -> None:
        self.stream = stream

    def read(self) -> bytes:
        return self.stream.read()

    def read_error(self, e: OSError) -> BlobError:
        return BlobError(f"failed to read layer blob {self.stream.name}: {e.strerror or e}")

    def close(self) -> None:
        self.stream.close()


class RegistrySource(ImageSource):
    """The image at an ImageRef (docker://HOST[:PORT]/REPO[:TAG|@DIGEST])."""

    def __init__(self, ref: ImageRef, remote: RemoteOptions | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        from clipcy.storage.artifact import Registry
        from clipcy.storage.registry import RemoteOptions

        o = remote or RemoteOptions()
        self.ref = ref
        self.limits = limits
        self.reg: Registry = Registry(ref.repo, authfile=o.authfile, http=o.http,
                                      insecure=o.insecure)
        self._fetched: dict[str, bytes] = {}  # the top manifest, fetched by tag already

    @property
    def requests(self) -> int:
        return self.reg.client.requests

    def _manifest(self, reference: str, what: str) -> tuple[str, str, bytes]:
        """(digest, media type, bytes) of the manifest or index at a tag or digest."""
        reg = self.reg
        r = reg.request("GET", f"{reg.base}/manifests/{reference}", what, {"Accept": ACCEPT},
                        limit=self.limits.json_size)
        if r.status == 404:
            raise ManifestNotFoundError(str(reg.fail(what, r)))
        if r.status != 200:
            raise reg.fail(what, r)
        digest = "sha256:" + hashlib.sha256(r.body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatchError(f"{what}: the registry sent a manifest whose digest is "
                                      f"{digest}, not {reference}")
        media = r.headers.get("content-type", "").split(";")[0].strip()
        try:
            doc = json.loads(r.body)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("mediaType"), str):
            media = doc["mediaType"]
        return digest, media, r.body

    def top(self, tag: str | None, digest: str | None) -> Descriptor:
        reference = digest or tag or "latest"
        what = f"resolve {self.ref.text}"
        got, media, body = self._manifest(reference, what)
        self._fetched[got] = body
        return Descriptor(media, got, len(body))

    def read_blob(self, desc: Descriptor, what: str) -> bytes:
        if what == "config":
            from clipcy.storage.http import BlobURL

            reg = self.reg
            url = BlobURL(reg.client, f"{reg.base}/blobs/{desc.digest}", desc.digest,
                          desc.size, reg.auth)
            data = url.fetch(0, desc.size)
        else:
            data = self._fetched.pop(desc.digest, b"")
            if not data:
                data = self._manifest(desc.digest, f"read {what} {desc.digest} of "
                                      f"{self.ref.text}")[2]
        check_blob(data, desc, what)
        return data

    def open_layer(self, info: LayerInfo) -> LayerBlob:
        from clipcy.storage.blobstream import BlobStream

        reg = self.reg
        return StreamedBlob(BlobStream(reg.client, f"{reg.base}/blobs/{info.digest}",
                                       info.digest, info.size, reg.auth))

    def storage_ref(self) -> str:
        return self.ref.repo.text

    def source_ref(self, tag: str | None) -> str:
        return self.ref.text

    def close(self) -> None:
        self.reg.close()
