"""Every error clipcy raises on purpose is a ClipError; the CLI prints it as one line.

Subclasses also derive from the builtin that fits (ValueError, OSError), so callers that
catch builtins keep working.
"""

from __future__ import annotations


class ClipError(Exception):
    """Base class: `clipctl` prints `clipctl: error: <message>` and exits 1."""


# -- tar streams -------------------------------------------------------------------------
class TarError(ClipError, ValueError):
    """A tar stream is malformed. Messages name the byte offset in the uncompressed stream."""


class TarChecksumError(TarError):
    """A header's checksum matches neither the signed nor the unsigned sum."""


class TarTruncatedError(TarError):
    """The stream ended inside a header or inside an entry's data."""


class TarHeaderError(TarError):
    """A header field or an extended (PAX / GNU long name / sparse) record is malformed."""


class TarLimitError(TarError):
    """A tar entry breaks one of the limits (clipcy/limits.py): the message names it."""


class LimitError(ClipError, ValueError):
    """An input is larger than one of the limits of clipcy/limits.py (the message names it)."""


# -- compression -------------------------------------------------------------------------
class CompressionError(ClipError, ValueError):
    """A gzip or zstd stream is corrupt, truncated, or followed by garbage."""


# -- OCI image layouts -------------------------------------------------------------------
class LayoutError(ClipError):
    """The OCI layout (oci-layout, index.json, manifests, configs) is unusable."""


class ManifestNotFoundError(LayoutError):
    """No manifest matches the requested tag, digest or platform."""


class BlobError(LayoutError, OSError):
    """A blob is missing or unreadable."""


class DigestMismatchError(LayoutError):
    """A blob or a decompressed layer does not match its recorded digest or size."""


# -- .clip archives ----------------------------------------------------------------------
class ArchiveError(ClipError):
    """A .clip archive is corrupt, truncated or of an unsupported version."""


class ArchivePathError(ClipError, KeyError):
    """A path does not exist in the archive (or is not of the kind asked for)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ArchiveWriteError(ClipError, ValueError):
    """The writer was given input it cannot store (unsorted paths, out-of-range fields...)."""


class PrefetchListError(ClipError, ValueError):
    """A prefetch list (clipctl index-layout/mount --prefetch) that cannot be used."""


# -- blob stores (clipcy/storage) --------------------------------------------------------
class StorageRefError(ClipError, ValueError):
    """A storage ref (--storage-ref, --storage, storage=) is malformed or unsupported."""


class RemoteError(BlobError):
    """A blob could not be read from a registry or HTTP server (after retries)."""


class RemoteAuthError(RemoteError):
    """A registry refused the credentials, or asked for credentials that were not found."""


class SpanChecksumError(BlobError):
    """Compressed bytes of a layer blob do not match the archive's span checksum: the blob
    changed after indexing (or a store served other bytes). Names the blob and the offset."""


# -- mounts ------------------------------------------------------------------------------
class MountError(ClipError, OSError):
    """An archive cannot be mounted (mount point, archive, libfuse or /dev/fuse), or
    unmounted."""
