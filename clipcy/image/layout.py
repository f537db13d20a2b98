"""OCI image resolution: refs, index.json, nested indexes, platforms, blobs, digests.

Follows the OCI image-layout and image-spec rules (and Docker v2 schema 2 media types). An
image comes from an ImageSource: a Layout (a directory on disk) here, or a registry
(image/registry.py, the distribution API); resolve() is the same for both. Every small blob
(index, manifest, config) is read whole and checked against its descriptor's digest and
size; layer blobs are only located here and are checked while indexer.py streams them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform as _platform
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from clipcy.errors import BlobError, DigestMismatchError, LayoutError, ManifestNotFoundError
from clipcy.limits import DEFAULT as DEFAULT_LIMITS
from clipcy.limits import Limits, exceeded
from clipcy.storage.refs import parse_digest

if TYPE_CHECKING:
    from clipcy.image.cache import Fingerprint

log = logging.getLogger("clipcy")

REF_NAME = "org.opencontainers.image.ref.name"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)

# Layer media type -> the compression it announces (the blob's magic bytes decide).
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "plain",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "plain",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}
FOREIGN_LAYER_TYPES = (
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)

READ_CHUNK = 1 << 20  # a layer blob is streamed in pieces of this size
MAX_JSON_BLOB = DEFAULT_LIMITS.json_size  # index, manifest, config: larger ones are refused
MAX_INDEX_DEPTH = DEFAULT_LIMITS.index_depth


# ---------------------------------------------------------------------------------------
# Digests and blobs


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def stat_blob(path: Path, size: int | None, what: str) -> os.stat_result:
    """Check, without opening it, that path is a regular file inside its layout (symlinks
    are followed only while they stay inside) whose size is the descriptor's `size`.

    A FIFO, a device, a directory or a socket could block, never end, or read as something
    else; a blob is refused before a byte of it is read. Blobs live at ROOT/blobs/ALG/HEX.
    """
    root = path.parent.parent.parent
    try:
        real = Path(os.path.realpath(path, strict=True))
        inside = real.is_relative_to(os.path.realpath(root))
        st = os.stat(real, follow_symlinks=False)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BlobError(f"failed to open {what}: symlink loop ({path})") from e
        raise BlobError(f"failed to open {what}: {e.strerror or e} ({path})") from e
    if not inside:
        raise BlobError(f"refusing {what}: it is a symlink leading outside the layout ({real})")
    if not stat.S_ISREG(st.st_mode):
        raise BlobError(f"refusing {what}: {_kind_of(st.st_mode)}, not a regular file ({path})")
    if size is not None and st.st_size != size:
        raise DigestMismatchError(
            f"{what} is {st.st_size} bytes, its descriptor says {size} ({path})"
        )
    return st


def open_blob(path: Path, size: int | None, what: str) -> IO[bytes]:
    """stat_blob's checks, then the file opened unbuffered (and checked to be the same one)."""
    st = stat_blob(path, size, what)
    try:
        fd = os.open(
            os.path.realpath(path),
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
        )
    except OSError as e:
        raise BlobError(f"failed to open {what}: {e.strerror or e} ({path})") from e
    f = os.fdopen(fd, "rb", buffering=0)
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
        f.close()
        raise BlobError(f"refusing {what}: it changed while being opened ({path})")
    return f


def read_small_file(path: Path, what: str, limit: int) -> bytes:
    """A whole small file of the layout (oci-layout, index.json), at most `limit` bytes."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise LayoutError(f"failed to read {what}: {e.strerror or e} ({path})") from e
    if not stat.S_ISREG(st.st_mode):
        raise LayoutError(f"failed to read {what}: {_kind_of(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        too_big = exceeded("json_size", limit, f"{st.st_size} bytes")
        raise LayoutError(f"failed to read {what}: {too_big}")
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise LayoutError(f"failed to read {what}: {e.strerror or e} ({path})") from e
    if len(raw) > limit:
        raise LayoutError(f"failed to read {what}: " + exceeded("json_size", limit, "its size"))
    return raw


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] | None = None

    @classmethod
    def parse(cls, obj: object, where: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise LayoutError(f"invalid descriptor in {where}: not an object")
        digest = obj.get("digest")
        parse_digest(digest, where)
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise LayoutError(f"invalid size {size!r} for {digest} in {where}")
        media_type = obj.get("mediaType", "")
        if not isinstance(media_type, str):
            raise LayoutError(f"invalid mediaType for {digest} in {where}")
        ann = obj.get("annotations") or {}
        plat = obj.get("platform")
        if not isinstance(ann, dict) or (plat is not None and not isinstance(plat, dict)):
            raise LayoutError(f"invalid annotations or platform for {digest} in {where}")
        return cls(media_type, str(digest), size, {str(k): str(v) for k, v in ann.items()}, plat)


class LayerBlob:
    """A layer blob open for one pass (indexer.LayerStream): its bytes in chunks, every read
    bounded by the descriptor's size + 1 byte so that a longer blob is noticed without
    reading the rest of it."""

    def read(self) -> bytes:
        """The next chunk (b"" at the end or past the bound)."""
        raise NotImplementedError

    def first(self) -> bytes:
        """The first chunk (its read errors said as the blob's)."""
        return self.read()

    def read_error(self, e: OSError) -> BlobError:
        """The error for an OSError out of read()."""
        return BlobError(f"failed to read a layer blob: {e.strerror or e}")

    def fingerprint(self, started: int) -> Fingerprint | None:
        """What the layer cache remembers of a blob verified in this pass (None: nothing
        vouches for a later read of it; started: time.time_ns() before the pass)."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> LayerBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageSource:
    """Where an image's manifests, config and layer blobs come from: resolve() reads the
    small documents through it, the indexer streams the layers from it."""

    limits: Limits = DEFAULT_LIMITS

    def top(self, tag: str | None, digest: str | None) -> Descriptor:
        """The descriptor the image reference names (by tag or digest)."""
        raise NotImplementedError

    def read_blob(self, desc: Descriptor, what: str) -> bytes:
        """A small blob (manifest, index, config), read whole and checked (check_blob)."""
        raise NotImplementedError

    def read_json(self, desc: Descriptor, what: str) -> dict[str, Any]:
        if desc.size > self.limits.json_size:
            what_size = f"{what} {desc.digest} of {desc.size} bytes"
            raise LayoutError(exceeded("json_size", self.limits.json_size, what_size))
        data = self.read_blob(desc, what)
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise LayoutError(f"failed to parse {what} {desc.digest}: {e}") from e
        if not isinstance(obj, dict):
            raise LayoutError(f"failed to parse {what} {desc.digest}: not a JSON object")
        return obj

    def layer_path(self, digest: str) -> Path | None:
        """The layer blob's file, if it is one on this machine."""
        return None

    def open_layer(self, info: LayerInfo) -> LayerBlob:
        """The layer blob, open for one pass."""
        raise NotImplementedError

    def storage_ref(self) -> str:
        """Where the blobs are, as recorded when no --storage-ref is given."""
        raise NotImplementedError

    def source_ref(self, tag: str | None) -> str:
        """The image, as recorded in the archive's source_ref."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Layout(ImageSource):
    """An OCI image layout directory on disk."""

    def __init__(self, root: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> None:
        self.text = os.fspath(root)  # as given: the archive's source_ref says it so
        self.root = Path(root)
        self.limits = limits
        if not self.root.is_dir():
            why = "not a directory" if os.path.lexists(self.root) else "no such directory"
            raise LayoutError(f"failed to open layout {str(self.root)!r}: {why}")
        self._check_oci_layout()
        self.index = self._read_index()

    def _check_oci_layout(self) -> None:
        path = self.root / "oci-layout"
        try:
            data = json.loads(read_small_file(path, "oci-layout", self.limits.json_size))
        except FileNotFoundError:
            raise LayoutError(f"not an OCI image layout: {path} is missing") from None
        except (OSError, ValueError) as e:
            raise LayoutError(f"failed to read oci-layout: {e}") from e
        version = data.get("imageLayoutVersion") if isinstance(data, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise LayoutError(f"unsupported imageLayoutVersion {version!r} in {path}")

    def _read_index(self) -> dict[str, Any]:
        path = self.root / "index.json"
        try:
            raw = read_small_file(path, "index.json", self.limits.json_size)
        except FileNotFoundError as e:
            raise LayoutError(f"failed to read index.json: {e.strerror or e} ({path})") from e
        try:
            index = json.loads(raw)
        except ValueError as e:
            raise LayoutError(f"failed to read index.json: invalid JSON ({e})") from e
        if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
            raise LayoutError("failed to read index.json: 'manifests' is not a list")
        return index

    def blob_path(self, digest: str) -> Path:
        alg, hexpart = parse_digest(digest)
        return self.root / "blobs" / alg / hexpart

    def read_blob(self, desc: Descriptor, what: str) -> bytes:
        """A small blob, read whole and checked against its descriptor."""
        path = self.blob_path(desc.digest)
        with open_blob(path, desc.size, f"{what} blob {desc.digest}") as f:
            try:
                data = f.read(desc.size + 1)
            except OSError as e:
                raise BlobError(
                    f"failed to read {what} blob {desc.digest}: {e.strerror or e}"
                ) from e
        check_blob(data, desc, what)
        return data

    def descriptors(self) -> list[Descriptor]:
        return [Descriptor.parse(m, "index.json") for m in self.index.get("manifests", [])]

    def top(self, tag: str | None, digest: str | None) -> Descriptor:
        return select_top(self, tag, digest)

    def layer_path(self, digest: str) -> Path:
        return self.blob_path(digest)

    def open_layer(self, info: LayerInfo) -> LayerBlob:
        assert info.path is not None
        return BoundedFile(info.path, info.size, info.digest)

    def storage_ref(self) -> str:
        return str(self.root.resolve())

    def source_ref(self, tag: str | None) -> str:
        return self.text if tag is None else f"{self.text}:{tag}"


class BoundedFile(LayerBlob):
    """A layer blob of a layout: a regular file of the descriptor's size inside the layout
    (or refused unread)."""

    def __init__(self, path: Path, size: int, digest: str) -> None:
        self.digest = digest
        self.file = open_blob(path, size, f"layer blob {digest}")
        self.before = os.fstat(self.file.fileno())  # the layer cache's fingerprint (cache.py)
        self.left = size + 1

    def read(self) -> bytes:
        data = self.file.read(min(READ_CHUNK, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        return data

    def first(self) -> bytes:
        try:
            return self.read()
        except OSError as e:
            raise self.read_error(e) from e

    def read_error(self, e: OSError) -> BlobError:
        return BlobError(f"failed to read layer blob {self.digest}: {e.strerror or e}")

    def fingerprint(self, started: int) -> Fingerprint | None:
        from clipcy.image.cache import trusted_fingerprint

        return trusted_fingerprint(self.before, os.fstat(self.file.fileno()), started)

    def close(self) -> None:
        self.file.close()


def check_blob(data: bytes, desc: Descriptor, what: str) -> None:
    if len(data) != desc.size:
        raise DigestMismatchError(
            f"{what} blob {desc.digest} has size {len(data)}, descriptor says {desc.size}"
        )
    alg, hexpart = parse_digest(desc.digest)
    actual = hashlib.new(alg, data).hexdigest()
    if actual != hexpart:
        raise DigestMismatchError(f"{what} blob {desc.digest} has digest {alg}:{actual}")


# ---------------------------------------------------------------------------------------
# References: "DIR", "oci:DIR:TAG", "oci-layout://DIR:TAG", "DIR@sha256:..."


@dataclass(frozen=True, slots=True)
class LayoutRef:
    path: str
    tag: str | None = None
    digest: str | None = None


def parse_layout_ref(ref: str, tag: str | None = None, digest: str | None = None) -> LayoutRef:
    """Split a --layout value; a tag or digest given both ways must agree."""
    path, ref_tag, ref_digest = ref, None, None
    for prefix in ("oci-layout://", "oci:"):
        if ref.startswith(prefix):
            rest = ref[len(prefix) :]
            # As containers/image does: the directory ends at the first ':'.
            path, sep, name = rest.partition(":")
            if sep and name:
                ref_tag = name
            break
    if "@" in path:
        base, _, maybe = path.rpartition("@")
        if maybe.startswith(("sha256:", "sha512:")):
            path, ref_digest = base, maybe
    if ref_tag is not None and "@" in ref_tag:
        ref_tag, _, ref_digest = ref_tag.partition("@")
    if not path:
        raise LayoutError(f"invalid layout reference {ref!r}: no directory")
    if ref_digest is not None:
        parse_digest(ref_digest, f"layout reference {ref!r}")
    if tag is not None and ref_tag is not None and tag != ref_tag:
        raise LayoutError(f"--tag {tag!r} disagrees with the tag {ref_tag!r} in {ref!r}")
    if digest is not None and ref_digest is not None and digest != ref_digest:
        raise LayoutError(f"--digest {digest} disagrees with the digest in {ref!r}")
    if digest is not None:
        parse_digest(digest, "--digest")
    return LayoutRef(
        path, tag if tag is not None else ref_tag, digest if digest is not None else ref_digest
    )


# ---------------------------------------------------------------------------------------
# Platforms, matched as containerd does after normalisation (arm64/v8 == arm64).

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64el": "ppc64le",
}


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if not 1 <= len(parts) <= 3 or not all(parts):
            raise LayoutError(f"invalid platform {text!r}: expected os/arch[/variant]")
        if len(parts) == 1:  # "arm64" alone: the os is linux, as containerd guesses
            parts = ["linux", parts[0]]
        return cls(*parts).normalized()

    @classmethod
    def host(cls) -> Platform:
        machine = _platform.machine().lower()
        variant = "v7" if machine.startswith("armv7") else ""
        arch = "arm" if machine.startswith("armv") else _ARCH_ALIASES.get(machine, machine)
        return cls("linux", arch, variant).normalized()

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Platform:
        return cls(
            str(obj.get("os", "")).lower(),
            str(obj.get("architecture", "")).lower(),
            str(obj.get("variant", "") or "").lower(),
        ).normalized()

    def normalized(self) -> Platform:
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        variant = self.variant
        if variant and not variant.startswith("v") and variant.isdigit():
            variant = "v" + variant
        if arch == "arm64" and variant == "v8":
            variant = ""
        if arch == "arm" and variant == "":
            variant = "v7"
        if arch == "amd64" and variant == "v1":
            variant = ""
        return Platform(self.os, arch, variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


# ---------------------------------------------------------------------------------------
# Resolution


@dataclass(slots=True)
class LayerInfo:
    digest: str
    size: int
    media_type: str
    announced: str  # compression announced by the media type: plain, gzip or zstd
    diff_id: str
    path: Path | None  # the blob's file; None when it is not on this machine (a registry)


@dataclass(slots=True)
class ResolvedImage:
    layout: ImageSource
    manifest_digest: str
    manifest_media_type: str
    manifest: dict[str, Any]
    config_digest: str
    config: dict[str, Any]
    layers: list[LayerInfo]
    platform: Platform | None
    tag: str | None


def select_top(layout: Layout, tag: str | None, digest: str | None) -> Descriptor:
    """The index.json entry named by tag or digest (or the only entry)."""
    descs = layout.descriptors()
    if digest is not None:
        for d in descs:
            if d.digest == digest:
                if tag is not None and d.annotations.get(REF_NAME) not in (tag, None):
                    continue
                return d
        raise ManifestNotFoundError(f"no manifest found for digest {digest}")
    tags = [d.annotations.get(REF_NAME) for d in descs]
    available = ", ".join(sorted({t for t in tags if t})) or "none"
    if tag is None:
        if len(descs) == 1:
            return descs[0]
        raise ManifestNotFoundError(
            f"the layout has {len(descs)} manifests: give a tag (available: {available})"
        )
    exact = [d for d in descs if d.annotations.get(REF_NAME) == tag]
    if not exact:  # fully qualified names: "registry.example.com/ns/app:1.2" matches "1.2"
        exact = [d for d in descs if (d.annotations.get(REF_NAME) or "").endswith(":" + tag)]
    digests = {d.digest for d in exact}
    if len(digests) == 1:
        return exact[0]
    if len(digests) > 1:
        names = ", ".join(sorted(str(d.annotations.get(REF_NAME)) for d in exact))
        raise ManifestNotFoundError(f"tag {tag!r} is ambiguous: {names}")
    raise ManifestNotFoundError(f"no manifest found for tag {tag!r} (available: {available})")


def _kind(desc: Descriptor, obj: dict[str, Any]) -> str:
    media_type = desc.media_type or str(obj.get("mediaType", ""))
    if media_type in INDEX_TYPES or (not media_type and "manifests" in obj):
        return "index"
    if media_type in MANIFEST_TYPES or (not media_type and "layers" in obj):
        return "manifest"
    if media_type == "application/vnd.docker.distribution.manifest.v1+json" or media_type.endswith(
        "manifest.v1+prettyjws"
    ):
        raise LayoutError(f"Docker schema 1 manifest {desc.digest} is not supported")
    raise LayoutError(f"unsupported manifest media type {media_type!r} ({desc.digest})")


def _pick_platform(descs: list[Descriptor], want: Platform, where: str) -> Descriptor:
    seen = []
    for d in descs:
        if d.platform is None:
            continue
        plat = Platform.from_json(d.platform)
        seen.append(str(plat))
        if plat == want:
            return d
    raise ManifestNotFoundError(
        f"no manifest for platform {want} in {where} (available: {', '.join(seen) or 'none'})"
    )


def resolve(
    layout: ImageSource, tag: str | None = None, digest: str | None = None,
    platform: str | None = None
) -> ResolvedImage:
    """The image `tag` or `digest` names in the source: an image index resolved for
    `platform` (default: this machine), its manifest, config and layer descriptors."""
    desc = layout.top(tag, digest)
    want = Platform.parse(platform) if platform else None
    seen: set[str] = set()
    depth = layout.limits.index_depth
    for _depth in range(depth):
        if desc.digest in seen:  # impossible with verified digests; cheap insurance
            raise LayoutError(f"image index cycle at {desc.digest}")
        seen.add(desc.digest)
        obj = layout.read_json(desc, "manifest")
        if _kind(desc, obj) == "manifest":
            return _resolve_manifest(layout, desc, obj, want, tag)
        children = [Descriptor.parse(m, f"index {desc.digest}") for m in obj.get("manifests", [])]
        parent = desc.digest
        desc = _pick_platform(children, want or Platform.host(), f"index {parent}")
        log.debug("index %s -> %s", parent, desc.digest)
    raise LayoutError(exceeded("index_depth", depth, "image index nesting"))


def _resolve_manifest(
    layout: ImageSource,
    desc: Descriptor,
    manifest: dict[str, Any],
    want: Platform | None,
    tag: str | None,
) -> ResolvedImage:
    where = f"manifest {desc.digest}"
    config_desc = Descriptor.parse(manifest.get("config"), where)
    if config_desc.media_type and config_desc.media_type not in CONFIG_TYPES:
        raise LayoutError(f"unsupported config media type {config_desc.media_type!r} in {where}")
    config = layout.read_json(config_desc, "config")
    plat = Platform.from_json(config) if config.get("architecture") else None
    if want is not None and plat is not None and plat != want:
        raise ManifestNotFoundError(f"{where} is for platform {plat}, not {want}")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise LayoutError(f"config {config_desc.digest} has no rootfs.diff_ids")
    raw_layers = manifest.get("layers")
    if not isinstance(raw_layers, list):
        raise LayoutError(f"{where} has no layers list")
    if len(raw_layers) != len(diff_ids):
        raise LayoutError(
            f"{where} has {len(raw_layers)} layers but config "
            f"{config_desc.digest} lists {len(diff_ids)} diff_ids"
        )
    layers = []
    for i, (raw, diff_id) in enumerate(zip(raw_layers, diff_ids, strict=True)):
        ldesc = Descriptor.parse(raw, f"{where} layer {i}")
        parse_digest(diff_id, f"config {config_desc.digest} diff_ids[{i}]")
        if ldesc.media_type in FOREIGN_LAYER_TYPES or raw.get("urls"):
            raise LayoutError(
                f"layer {i} ({ldesc.digest}) is a foreign (non-distributable) "
                f"layer: its blob is not in the image"
            )
        announced = LAYER_TYPES.get(ldesc.media_type)
        if announced is None:
            raise LayoutError(
                f"unsupported layer media type {ldesc.media_type!r} (layer {i}, {ldesc.digest})"
            )
        layers.append(
            LayerInfo(
                ldesc.digest,
                ldesc.size,
                ldesc.media_type,
                announced,
                str(diff_id),
                layout.layer_path(ldesc.digest),
            )
        )
    return ResolvedImage(
        layout,
        desc.digest,
        desc.media_type or str(manifest.get("mediaType", "")),
        manifest,
        config_desc.digest,
        config,
        layers,
        plat,
        tag,
    )
