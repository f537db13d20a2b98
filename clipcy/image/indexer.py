"""index-layout: a local OCI image layout into an index-only .clip archive.

Each layer blob is streamed once: the compressed bytes are hashed (descriptor digest), fed
to an indexer that decompresses them and records resume points (blobindex.py), the output is
hashed (diff_id) and parsed (tarparse.TarParser). Layers run in parallel threads: inflate,
zstd and sha256 release the GIL. The merged tree and the metadata go to the writer, and the
archive is written atomically (temp file in the target directory, fsync, rename).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipcy import __version__
from clipcy.archive.format import CHECKSUM_WRITTEN, EncodedAccess, encode_packed_access
from clipcy.errors import BlobError, ClipError, DigestMismatchError, RemoteError
from clipcy.image.cache import Fingerprint, LayerCache, trusted_fingerprint
from clipcy.image.digests import FileHasher
from clipcy.image.hashpipe import HashPipe
from clipcy.image.layout import (
    READ_CHUNK,
    ImageSource,
    LayerBlob,
    LayerInfo,
    Layout,
    ResolvedImage,
    open_blob,
    parse_layout_ref,
    resolve,
    stat_blob,
)
from clipcy.interrupts import waiting
from clipcy.layers.access import LayerAccess
from clipcy.layers.packing import PackedAccess, WindowPacker
from clipcy.limits import DEFAULT as DEFAULT_LIMITS
from clipcy.limits import LimitError, Limits, exceeded
from clipcy.logs import step
from clipcy.storage.spans import SpanHasher, SpanTable
from clipcy.tempfiles import TempFile, close_held, open_held

if TYPE_CHECKING:
    from clipcy.storage.registry import RemoteOptions

log = logging.getLogger("clipcy")

_RUNS = itertools.count()  # numbers each run's worker threads
STREAM_DEPTH = 64  # batches of layer-0 entries in flight to the merging thread


@dataclass(slots=True)
class LayerResult:
    """One layer after streaming: its entries, resume points and measured digests."""

    index: int
    entries: list[Any]
    access: LayerAccess | PackedAccess
    compression: str
    uncompressed_size: int
    diff_id: str | None
    seconds: float
    file_digests: dict[int, bytes] | None = None  # data offset -> sha256 of the content
    entry_count: int = 0
    encoded: EncodedAccess | None = None  # the access frame, once made (on the worker)
    fingerprint: Fingerprint | None = None  # the blob's stat when its digest was checked


@dataclass(slots=True)
class IndexSummary:
    archive: str
    manifest_digest: str
    layer_count: int
    node_count: int
    bytes_indexed: int  # uncompressed layer bytes
    image_size: int  # compressed layer bytes
    archive_size: int
    seconds: float
    layers: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


ProgressFn = Callable[[str, dict[str, Any]], None]


def index_layer(
    info: LayerInfo,
    index: int,
    *,
    verify: bool = True,
    file_digests: bool = False,
    span: int | None = None,
    progress: ProgressFn | None = None,
    on_entries: Callable[[list[Any]], None] | None = None,
    keep_entries: bool = True,
    limits: Limits = DEFAULT_LIMITS,
    abort: threading.Event | None = None,
    source: ImageSource | None = None,
) -> LayerResult:
    """Stream one layer blob: check its digest and diff_id, parse its tar, record access.

    on_entries gets each batch of entries as it is parsed (their data may not have streamed
    yet); with keep_entries=False the result holds no entries (the callback had them all).
    Once `abort` is set (the run failed or was interrupted), the next chunk raises ClipError.
    `source`: where the blob is read from (its open_layer); default: the file info.path.
    """
    return LayerStream(info, index, verify=verify, file_digests=file_digests, span=span,
                       progress=progress, on_entries=on_entries, keep_entries=keep_entries,
                       limits=limits, abort=abort, source=source).run()


def _open_file(info: LayerInfo) -> LayerBlob:
    from clipcy.image.layout import BoundedFile

    assert info.path is not None, "a layer blob with no file needs its source"
    return BoundedFile(info.path, info.size, info.digest)


class LayerStream:
    """One pass over a layer blob (index_layer), in stages: open the blob, detect its
    compression and set up the pass, stream it, then check its length and digests and make the
    LayerResult.

    Each chunk of compressed bytes goes to the hash pipe (stream 0: the blob's sha256 if
    verifying, and always its span checksums; on the pipe's own threads) and to the indexer,
    which decompresses it and records resume points (gzip) or frames (zstd). Each piece of
    tar bytes it yields goes to the tar's sha256 (stream 1), the tar parser, and the file
    hasher; parsed entries go to `on_entries` batch by batch. gzip windows are compressed
    as soon as they are final (layers/packing.py), so they never pile up raw.
    """

    def __init__(self, info: LayerInfo, index: int, *, verify: bool, file_digests: bool,
                 span: int | None, progress: ProgressFn | None,
                 on_entries: Callable[[list[Any]], None] | None, keep_entries: bool,
                 limits: Limits, abort: threading.Event | None,
                 source: ImageSource | None = None) -> None:
        self.info, self.index, self.verify, self.span = info, index, verify, span
        self.open: Callable[[LayerInfo], LayerBlob] = (
            source.open_layer if source is not None else _open_file)
        self.progress, self.on_entries, self.keep_entries = progress, on_entries, keep_entries
        self.limits, self.abort = limits, abort
        self.want_file_digests = file_digests
        self.where = f"layer {index} ({info.digest})"
        self.entries: list[Any] = []
        self.count = 0  # entries parsed
        self.packed: list[Any] = []  # gzip points whose windows are compressed already

    def run(self) -> LayerResult:
        t0 = time.perf_counter()
        cpu0 = time.thread_time()  # this thread's CPU: inflate + parse (the debug log's profile)
        started = time.time_ns()
        info = self.info
        with self.open(info) as blob:
            head = blob.first()
            self._set_up(head)
            try:
                read = self._stream(blob, head)
            except RemoteError:
                raise  # the blob could not be read (it names the blob); nothing to explain
            except ClipError as e:
                raise self._explain(e, blob) from e
            except OSError as e:
                raise blob.read_error(e) from e
            finally:
                self.pipe.close()
            fingerprint = blob.fingerprint(started) if self.verify and read == info.size \
                else None
        if read != info.size:
            raise DigestMismatchError(
                f"{self.where}: blob is {'longer' if read > info.size else 'shorter'}"
                f" than the descriptor's {info.size} bytes"
            )
        spans = self.pipe.spans()
        diff_id = self._check_digests()
        seconds = time.perf_counter() - t0
        indexer = self.indexer
        log.debug(
            "%s: %d entries, %d -> %d bytes, %s, %.3f s (CPU: %.3f s decompress+parse, "
            "%.3f s hash)",
            self.where,
            self.count,
            indexer.total_in,
            indexer.total_out,
            self.kind,
            seconds,
            time.thread_time() - cpu0,
            self.pipe.cpu_seconds,
        )
        return self._result(spans, seconds, diff_id, fingerprint)

    def _set_up(self, head: bytes) -> None:
        """The compression from the blob's first bytes, and the indexer, parser and hashers."""
        from clipcy.layers._checkpoint import GzipIndexer
        from clipcy.layers.blobindex import make_indexer
        from clipcy.tar.streams import detect
        from clipcy.tar.tarparse import TarParser

        info, limits = self.info, self.limits
        self.kind = kind = detect(head)
        if kind != info.announced:
            log.warning(
                "layer %d (%s): media type %s says %s but the blob is %s; using %s",
                self.index,
                info.digest,
                info.media_type,
                info.announced,
                kind,
                kind,
            )
        self.indexer = make_indexer(kind) if self.span is None else make_indexer(kind,
                                                                                 span=self.span)
        self.parser = TarParser(
            limits.pax_header, limits.path_length, limits.link_length, limits.path_depth,
            limits.xattrs_per_entry, limits.xattr_size,
        )
        self.hasher = FileHasher() if self.want_file_digests else None
        # stream 0: the blob (sha256 if verify, and always its span checksums), 1: the tar
        self.pipe = HashPipe(2 if self.verify else 0)
        self.gz = self.indexer if isinstance(self.indexer, GzipIndexer) else None
        self.packer = WindowPacker()

    def _stream(self, blob: LayerBlob, head: bytes) -> int:
        """Feed the whole blob through; the number of bytes read (the size + 1 if longer)."""
        # locals: this loop runs once per piece of tar bytes
        info, index, verify = self.info, self.index, self.verify
        indexer, parser, pipe, hasher, gz = (self.indexer, self.parser, self.pipe, self.hasher,
                                             self.gz)
        progress, on_entries, abort = self.progress, self.on_entries, self.abort
        entries = self.entries if self.keep_entries else None
        max_entries = self.limits.entries_per_layer
        pos = 0  # uncompressed offset of the next output piece
        count = 0
        read = len(head)
        chunk = head
        try:
            while chunk:
                pipe.update(0, chunk)
                for out in indexer.feed(chunk):
                    if verify:
                        pipe.update(1, out)
                    new = parser.feed(out)
                    count += len(new)
                    if count > max_entries:
                        raise LimitError(
                            exceeded("entries_per_layer", max_entries, "its tar")
                        )
                    if entries is not None:
                        entries.extend(new)
                    if on_entries is not None and new:
                        on_entries(new)
                    if hasher is not None:
                        hasher.add(new)
                        hasher.feed(out, pos)
                    pos += len(out)
                if gz is not None and gz.total_out >= gz.min_points_layer:
                    self.packed.extend(self.packer.pack(gz.drain_points()))
                if progress is not None:
                    progress("layer-progress", {"layer": index, "bytes": read})
                if abort is not None and abort.is_set():
                    raise ClipError("indexing aborted")
                chunk = blob.read()
                read += len(chunk)
                if read > info.size:
                    break  # longer than its descriptor: no need to read the rest
            if read == info.size:
                indexer.finish()
                parser.close()
        finally:
            self.count = count
        return read

    def _explain(self, e: ClipError, blob: LayerBlob) -> ClipError:
        """The error to raise for a failed stream, naming the layer."""
        if self.verify:
            # A corrupt stream is most often a changed blob: say so when the digest agrees.
            while rest := blob.read():
                self.pipe.update(0, rest)
            actual = "sha256:" + self.pipe.hexdigests()[0]
            if actual != self.info.digest:
                return DigestMismatchError(f"{self.where}: blob digest is {actual}, expected "
                                           f"{self.info.digest} ({e})")
        return type(e)(f"{self.where}: {e}")

    def _check_digests(self) -> str | None:
        """The blob's sha256 against its descriptor and the tar's against the config's
        diff_id; the diff_id (None without verification)."""
        if not self.verify:
            return None
        info = self.info
        blob_hex, tar_hex = self.pipe.hexdigests()
        if "sha256:" + blob_hex != info.digest:
            raise DigestMismatchError(f"{self.where}: blob digest is sha256:{blob_hex}, "
                                      f"expected {info.digest}")
        diff_id = "sha256:" + tar_hex
        if diff_id != info.diff_id:
            raise DigestMismatchError(
                f"{self.where}: uncompressed digest {diff_id} differs from "
                f"the config's diff_id {info.diff_id}"
            )
        return diff_id

    def _result(self, spans: SpanTable, seconds: float, diff_id: str | None,
                fingerprint: Fingerprint | None) -> LayerResult:
        access: LayerAccess | PackedAccess = self.indexer.access()
        access.spans = spans
        if self.gz is not None:
            access = PackedAccess(access.kind, access.span,
                                  self.packed + self.packer.pack(access.points), spans=spans)
        return LayerResult(
            self.index,
            self.entries,
            access,
            self.kind,
            self.indexer.total_out,
            diff_id,
            seconds,
            self.hasher.digests if self.hasher is not None else None,
            self.count,
            fingerprint=fingerprint,
        )


def _rehash(info: LayerInfo, index: int, spans: SpanTable | None = None
            ) -> tuple[bool, Fingerprint | None]:
    """Prove a layer cache hit that the blob's stat fingerprint does not vouch for: read the
    blob and check its size and content. (True, the fingerprint to remember, if any), or
    (False, None) when the entry must not be used.

    The content check is the entry's span checksums when it has BLAKE3-128 ones: they were
    computed from the very bytes whose sha256 matched the descriptor, so a blob with every
    span equal is that blob (128-bit second-preimage strength, as for every read), and
    BLAKE3 runs ~2.5x faster than sha256 here (perf/RESULTS.md, layer cache). A blob whose
    spans differ is checked by its sha256 as without the cache: a digest mismatch is the
    same error, a match means the entry itself is wrong, and it is not used."""
    import hashlib

    where = f"layer {index} ({info.digest})"
    assert info.path is not None  # (cache hits are used for layouts only: _from_cache)
    started = time.time_ns()
    use_spans = (spans is not None and spans.kind == CHECKSUM_WRITTEN
                 and spans.size == info.size)
    f = open_blob(info.path, info.size, f"layer blob {info.digest}")
    h: Any = SpanHasher() if use_spans else hashlib.sha256()
    read = 0
    with f:
        before = os.fstat(f.fileno())
        try:
            while read <= info.size and (chunk := f.read(min(READ_CHUNK, info.size + 1 - read))):
                h.update(chunk)
                read += len(chunk)
        except OSError as e:
            raise BlobError(f"failed to read layer blob {info.digest}: {e.strerror or e}") from e
        after = os.fstat(f.fileno())
    if read != info.size:
        raise DigestMismatchError(
            f"{where}: blob is {'longer' if read > info.size else 'shorter'}"
            f" than the descriptor's {info.size} bytes"
        )
    if use_spans:
        assert spans is not None
        table = h.table()
        if table.lengths != spans.lengths or table.digests != spans.digests:
            _rehash(info, index)  # the sha256 decides: an error, or a bad entry
            log.warning("%s: the layer cache entry does not match the blob; indexing it again",
                        where)
            return False, None
    elif "sha256:" + h.hexdigest() != info.digest:
        raise DigestMismatchError(f"{where}: blob digest is sha256:{h.hexdigest()}, "
                                  f"expected {info.digest}")
    return True, trusted_fingerprint(before, after, started)


def _access_for_writer(res: LayerResult) -> LayerAccess | EncodedAccess:
    if res.encoded is not None:
        return res.encoded
    if isinstance(res.access, PackedAccess):
        return encode_packed_access(res.access, res.index)
    return res.access


def _fan_out(sinks: list[Callable[[list[Any]], None]]) -> Callable[[list[Any]], None] | None:
    if not sinks:
        return None
    if len(sinks) == 1:
        return sinks[0]

    def both(batch: list[Any]) -> None:
        for sink in sinks:
            sink(batch)

    return both


def _from_cache(
    cache: LayerCache | None, key: str, info: LayerInfo, index: int, verify: bool
) -> LayerResult | None:
    if cache is None or info.path is None:
        return None
    hit = cache.get(key)
    if hit is None:
        return None
    st = stat_blob(info.path, info.size, f"layer blob {info.digest}")
    how = "size only (--no-verify)"
    if verify:
        if hit.diff_id != info.diff_id:
            return None
        # the entry is for this digest; is the file still the blob that was verified?
        if cache.vouches(key, st):
            how = "stat fingerprint"
        else:
            ok, fp = _rehash(info, index, hit.access.spans)
            if not ok:
                return None
            if fp is not None:
                cache.remember(key, fp)
            how = "blob re-hashed"
    log.debug("layer %d (%s): from the layer cache (%s)", index, info.digest, how)
    return LayerResult(
        index,
        hit.entries,
        hit.access,
        hit.compression,
        hit.uncompressed_size,
        hit.diff_id,
        0.0,
        hit.file_digests,
        len(hit.entries),
        hit.encoded,
    )


def build_metadata(
    image: ResolvedImage, results: Sequence[LayerResult], storage_ref: str, source_ref: str
) -> dict[str, Any]:
    layers = []
    for info, res in zip(image.layers, results, strict=True):
        layers.append(
            {
                "digest": info.digest,
                "size": info.size,
                "media_type": info.media_type,
                "compression": res.compression,
                "diff_id": info.diff_id,
                "uncompressed_size": res.uncompressed_size,
            }
        )
    return {
        "clipcy_format": "index-only",
        "created_by": f"clipcy {__version__}",
        "source_ref": source_ref,
        "storage_ref": storage_ref,
        "tag": image.tag,
        "manifest_digest": image.manifest_digest,
        "manifest_media_type": image.manifest_media_type,
        "config_digest": image.config_digest,
        "config": image.config,
        "platform": str(image.platform) if image.platform else None,
        "layers": layers,
        "image_size": sum(info.size for info in image.layers),
    }


def write_atomic(path: Path, data: bytes) -> None:
    """Write data to path through a temp file in the same directory, fsync and rename."""
    directory = path.parent
    tmp = TempFile(directory, f".{path.name}.", ".tmp")
    try:
        try:
            fd = tmp.create()
        except OSError as e:
            raise ClipError(f"failed to create {path}: {e.strerror or e}") from e
        with open(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(fd)
        tmp.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp.path, 0o666 & ~umask)
        os.replace(tmp.path, path)
    except BaseException as e:
        tmp.discard()
        if isinstance(e, OSError):
            raise ClipError(f"failed to write {path}: {e.strerror or e}") from e
        raise
    dfd: list[int] = []
    try:
        os.fsync(open_held(dfd, directory, os.O_RDONLY))
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is done
    finally:
        close_held(dfd)


def create_index_only_archive_from_oci_layout(
    layout_dir: str | os.PathLike[str],
    tag: str | None,
    archive_path: str | os.PathLike[str],
    *,
    platform: str | None = None,
    storage_ref: str | None = None,
    verify: bool = True,
    digest: str | None = None,
    workers: int | None = None,
    file_digests: bool = False,
    checkpoint_span: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    limits: Limits = DEFAULT_LIMITS,
    prefetch: str | os.PathLike[str] | None = None,
    check_storage: bool = False,
    remote: RemoteOptions | None = None,
) -> IndexSummary:
    """Index the image `tag` of the OCI layout `layout_dir` into `archive_path`.

    `layout_dir` may also be a reference: "oci:DIR:TAG", "oci-layout://DIR:TAG", "DIR@sha256:...".
    `cache_dir`: a layer cache (cache.py) keyed by blob digest; layers found there are not
    streamed again (their blob's size is checked, its digest was checked when cached).
    `prefetch`: a prefetch list file (clipcy.archive.prefetch), stored in the archive for
    mounts to replay (read before anything is indexed; its paths must be in the image).
    `check_storage` (what `clipctl index-layout` does unless --no-check-storage): every layer
    blob must be at `storage_ref` before anything is indexed (clipcy.storage.check: a stat
    each in a directory, one 1-byte range request each remotely; `remote`: the
    registry.RemoteOptions to reach it, e.g. its auth file); StorageRefError otherwise.
    Returns an IndexSummary. Raises a ClipError subclass on any problem; then no archive is
    written and an existing file at archive_path is untouched.
    """
    run = IndexRun(verify=verify, file_digests=file_digests, checkpoint_span=checkpoint_span,
                   cache_dir=cache_dir, progress=progress, limits=limits, workers=workers)
    if prefetch is not None:
        from clipcy.archive.prefetch import read_list

        run.prefetch = (read_list(prefetch), os.fspath(prefetch))
    run.storage_check = check_storage
    run.remote = remote
    return run.run(layout_dir, tag, digest, platform, storage_ref, Path(archive_path))


def create_index_only_archive_from_registry(
    ref: str,
    archive_path: str | os.PathLike[str],
    *,
    platform: str | None = None,
    storage_ref: str | None = None,
    verify: bool = True,
    workers: int | None = None,
    file_digests: bool = False,
    checkpoint_span: int | None = None,
    progress: ProgressFn | None = None,
    limits: Limits = DEFAULT_LIMITS,
    prefetch: str | os.PathLike[str] | None = None,
    check_storage: bool = False,
    remote: RemoteOptions | None = None,
) -> IndexSummary:
    """Index the image at `ref` in a registry (docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX],
    default tag latest) into `archive_path`, as create_index_only_archive_from_oci_layout
    indexes a layout: the same resolution (an index by `platform`, default this machine),
    checks and archive. Each layer blob is streamed once from the registry (no copy on
    disk; `workers` layers at a time, default the number of CPUs), resumed by Range where a
    body breaks; its digest and diff_id are checked as it streams. The storage ref recorded
    is the image's repository (docker://HOST[:PORT]/REPO) unless `storage_ref` says
    otherwise (then `check_storage` probes it). `remote`: a registry.RemoteOptions (auth
    file, insecure, timeouts, retries). No layer cache. On any error no archive is
    written."""
    from clipcy.image.registry import RegistrySource
    from clipcy.storage.artifact import parse_image_ref

    run = IndexRun(verify=verify, file_digests=file_digests, checkpoint_span=checkpoint_span,
                   cache_dir=None, progress=progress, limits=limits, workers=workers)
    run.check_ref(storage_ref)
    image = parse_image_ref(os.fspath(ref))
    if prefetch is not None:
        from clipcy.archive.prefetch import read_list

        run.prefetch = (read_list(prefetch), os.fspath(prefetch))
    run.storage_check = check_storage
    run.remote = remote
    return run.run_source(lambda: RegistrySource(image, remote, limits), image.tag,
                          image.digest, platform, storage_ref, Path(archive_path), "image")


class IndexRun:
    """The index-layout pipeline (create_index_only_archive_from_oci_layout), in stages:

    1. resolve: the layout reference to a manifest, a config and layer descriptors.
    2. read_layer (on a worker thread per layer): a layer cache hit, or index_layer, which
       streams the blob once (digests, resume points, tar entries); the result goes to the
       layer cache and its access data is compressed, still on the worker.
    3. index_and_merge (this thread): the workers run while this thread merges. Layer 0 has
       no lower layer, so its entries stream from its worker straight into the tree (through
       `stream0`) while it still inflates; the later layers are merged in order as they
       complete, and each layer's entries are dropped once merged.
    4. encode: the metadata, and the archive's bytes straight from the merged tree.
    5. write: a temp file in the target directory, fsync, rename (write_atomic).

    Cancellation has one place: `abort`. index_and_merge sets it whenever it stops (done, an
    error in any worker or in the merge, or KeyboardInterrupt) and then waits for every worker
    thread. A worker sees it between two chunks of its blob (index_layer's `abort`) and while
    handing layer 0's entries over (_offer); either raises ClipError("indexing aborted"), which
    ends that worker. Nothing is written before all layers are merged, so a failed or
    interrupted run leaves no output (and no layer cache temp file: CacheWriter.abort).
    """

    def __init__(self, *, verify: bool, file_digests: bool, checkpoint_span: int | None,
                 cache_dir: str | os.PathLike[str] | None, progress: ProgressFn | None,
                 limits: Limits, workers: int | None) -> None:
        from clipcy.image.merge import Tree

        self.verify, self.file_digests, self.span = verify, file_digests, checkpoint_span
        self.progress, self.limits, self.workers = progress, limits, workers
        self.cache_dir = cache_dir
        self.cache: LayerCache | None = None
        self.layers: list[LayerInfo] = []  # the image's, once resolved
        self.tree = Tree()
        self.results: list[LayerResult] = []
        self.abort = threading.Event()
        self.stream0: queue.Queue[list[Any] | None] = queue.Queue(STREAM_DEPTH)
        self.awaiting: dict[int, Any] = {}  # layer 0: data offset -> inode waiting for its digest
        self.prefetch: tuple[list[bytes], str] | None = None  # a list's paths, its file name
        self.storage_check = False  # probe the storage ref's blobs first (clipcy.storage.check)
        self.remote: RemoteOptions | None = None  # how to reach a remote storage ref
        self.source: ImageSource | None = None  # where the image is read from, once resolved

    def emit(self, event: str, data: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(event, data)

    def run(self, layout_dir: str | os.PathLike[str], tag: str | None, digest: str | None,
            platform: str | None, storage_ref: str | None, out: Path) -> IndexSummary:
        """Index the image of a layout reference (index-layout)."""
        self.check_ref(storage_ref)
        ref = parse_layout_ref(os.fspath(layout_dir), tag, digest)
        return self.run_source(lambda: Layout(ref.path, self.limits), ref.tag, ref.digest,
                               platform, storage_ref, out, "layout")

    @staticmethod
    def check_ref(storage_ref: str | None) -> None:
        if storage_ref is not None:  # a bad ref fails now, not on the machine that reads later
            from clipcy.storage.refs import parse_storage_ref

            parse_storage_ref(storage_ref)

    def run_source(self, open_source: Callable[[], ImageSource], tag: str | None,
                   digest: str | None, platform: str | None, storage_ref: str | None,
                   out: Path, what: str) -> IndexSummary:
        """Index the image `tag` or `digest` of the source open_source() opens (a layout, a
        registry: `what`, for the log) into `out` (storage_ref: checked by check_ref)."""
        t0 = time.perf_counter()
        source: ImageSource | None = None
        try:  # one try from the open: an interrupt as the resolve step ends closes it too
            with step(f"resolve {what}"):
                source = open_source()
                image = self.resolve(source, tag, digest, platform)
            return self._run(source, image, storage_ref, out, tag, t0)
        finally:
            if source is not None:
                source.close()

    def _run(self, source: ImageSource, image: ResolvedImage, storage_ref: str | None,
             out: Path, tag: str | None, t0: float) -> IndexSummary:
        log.info("manifest %s: %d layers", image.manifest_digest, len(image.layers))
        if self.storage_check and storage_ref is not None:
            from clipcy.storage.check import check_storage_ref

            with step(f"check storage ref {storage_ref}"):
                check_storage_ref(storage_ref, [(x.digest, x.size) for x in image.layers],
                                  self.remote)
        self.emit(
            "start",
            {
                "manifest": image.manifest_digest,
                "layers": len(image.layers),
                "bytes": sum(x.size for x in image.layers),
            },
        )
        # cached layers were checked against the default limits only
        if self.cache_dir is not None and self.limits == DEFAULT_LIMITS:
            self.cache = LayerCache(self.cache_dir)
        with step("index and merge layers"):
            self.index_and_merge(image)
        storage = storage_ref if storage_ref is not None else source.storage_ref()
        metadata, count = self.metadata(image, storage, source.source_ref(tag))
        with step("sort the tree and encode the archive"):
            data = self.encode(metadata)
        if self.prefetch is not None:
            from clipcy.archive.prefetch import attach_paths

            with step("store the prefetch list"):
                data = attach_paths(data, *self.prefetch)
        with step("write archive"):
            write_atomic(out, data)
        summary = IndexSummary(
            archive=str(out),
            manifest_digest=image.manifest_digest,
            layer_count=len(self.results),
            node_count=count,
            bytes_indexed=sum(r.uncompressed_size for r in self.results),
            image_size=metadata["image_size"],
            archive_size=len(data),
            seconds=time.perf_counter() - t0,
            layers=metadata["layers"],
        )
        self.emit("done", summary.as_dict())
        return summary

    # -- 1. resolve ----------------------------------------------------------------------------

    def resolve(self, source: ImageSource, tag: str | None, digest: str | None,
                platform: str | None) -> ResolvedImage:
        self.source = source
        image = resolve(source, tag, digest, platform)
        self.layers = image.layers
        return image

    # -- 2. per-layer read, on a worker thread -------------------------------------------------

    def read_layer(self, i: int) -> LayerResult:
        info = self.layers[i]
        self.emit("layer-start", {"layer": i, "digest": info.digest, "size": info.size})
        cache = self.cache
        key = LayerCache.key(info.digest, self.span, self.file_digests)
        try:
            res = _from_cache(cache, key, info, i, self.verify)
            if res is None:
                res = self._index(i, info, key)
        finally:
            if i == 0:
                self._offer(None)  # the end of layer 0's stream
        self.emit(
            "layer-done",
            {
                "layer": i,
                "digest": info.digest,
                "seconds": round(res.seconds, 6),
                "uncompressed": res.uncompressed_size,
                "entries": res.entry_count,
            },
        )
        return res

    def _index(self, i: int, info: LayerInfo, key: str) -> LayerResult:
        """Stream the layer (index_layer), into the layer cache as it goes."""
        cache = self.cache
        writer = cache.writer(key) if cache is not None and self.verify else None
        try:  # up to the commit: the entry's temp file goes whatever raises before it
            if writer is not None and not writer.start():
                writer = None
            sinks: list[Callable[[list[Any]], None]] = []
            if writer is not None:
                sinks.append(writer.add)
            if i == 0:
                sinks.append(self._to_merge)
            res = index_layer(
                info,
                i,
                verify=self.verify,
                file_digests=self.file_digests,
                span=self.span,
                progress=self.progress,
                on_entries=_fan_out(sinks),
                keep_entries=i != 0,
                limits=self.limits,
                abort=self.abort,
                source=self.source,
            )
            if isinstance(res.access, PackedAccess):  # compress on this worker thread
                res.encoded = encode_packed_access(res.access, i)
            if writer is not None:
                writer.commit(
                    res.access,
                    res.compression,
                    res.uncompressed_size,
                    res.diff_id,
                    res.file_digests,
                    res.encoded,
                )
        except BaseException:
            if writer is not None:
                writer.abort()  # after the commit: nothing
            raise
        if writer is not None and res.fingerprint is not None and cache is not None:
            cache.remember(key, res.fingerprint)
        return res

    def _to_merge(self, batch: list[Any]) -> None:
        """Layer 0's entries, batch by batch, to the merging thread."""
        # a copy: the merge empties its list while the file hasher still reads the batch
        if not self._offer(list(batch)):
            raise ClipError("indexing aborted")

    def _offer(self, item: list[Any] | None) -> bool:
        """Hand item to the merging thread; False once the run was aborted."""
        while not self.abort.is_set():
            try:
                self.stream0.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # -- 3. index and merge: the workers, and the merge on this thread -------------------------

    def index_and_merge(self, image: ResolvedImage) -> None:
        from clipcy.image.merge import apply_stream

        layers = image.layers
        n_workers = max(1, min(self.workers or os.cpu_count() or 1, len(layers) or 1))
        prefix = f"clipcy-layer-{next(_RUNS)}"
        try:
            with ThreadPoolExecutor(n_workers, thread_name_prefix=prefix) as pool:
                futures: list[Future[LayerResult]] = []
                try:
                    # submitted inside the try: an interrupt between two submits must still
                    # set `abort`, or a started layer-0 worker waits forever to hand over
                    for i in range(len(layers)):
                        futures.append(pool.submit(self.read_layer, i))
                    if futures:
                        while (batch := waiting(self.stream0.get)) is not None:
                            apply_stream(self.tree, batch, 0,
                                         self.awaiting if self.file_digests else None)
                            self._check_nodes()
                    for fut in futures:
                        self._merge(waiting(fut.result))
                        self._check_nodes()
                finally:
                    self._cancel(futures)
        finally:
            self._join_workers(prefix)

    def _cancel(self, futures: list[Future[LayerResult]]) -> None:
        """Stop every worker: set `abort` (the one flag they watch), drop queued layers."""
        self.abort.set()
        for fut in futures:
            fut.cancel()

    @staticmethod
    def _join_workers(prefix: str) -> None:
        # An interrupt inside pool.submit() can leave a started worker the pool does not
        # know of (and so does not join): wait for it too, so that no worker still runs
        # (and writes) once this call has returned or raised. They stop at `abort`.
        for t in threading.enumerate():
            if t.name.startswith(prefix + "_"):
                t.join()

    def _merge(self, res: LayerResult) -> None:
        # Layers are merged in order as they complete, on this thread, while the workers
        # inflate later layers (the GIL is free then); each layer's entries are dropped at once.
        from clipcy.image.merge import apply_layer

        if res.index == 0 and not res.entries:  # streamed: only the digests are left to set
            for offset, inode in self.awaiting.items():
                inode.digest = (res.file_digests or {}).get(offset, b"")
            self.awaiting.clear()
        else:
            apply_layer(self.tree, res.entries, res.index,
                        res.file_digests if self.file_digests else None)
        res.entries = []
        self.results.append(res)

    def _check_nodes(self) -> None:
        if len(self.tree.paths) > self.limits.nodes_per_image:
            raise LimitError(
                exceeded("nodes_per_image", self.limits.nodes_per_image, "the merged tree")
            )

    # -- 4. encode (5. write: write_atomic) ----------------------------------------------------

    def metadata(self, image: ResolvedImage, storage: str,
                 source: str) -> tuple[dict[str, Any], int]:
        """The archive's metadata, and the number of paths."""
        metadata = build_metadata(image, self.results, storage, source)
        # paths by type (hardlinks count once per path): inspect then needs no walk of the tree
        node_types: dict[str, int] = {}
        for inode in self.tree.paths.values():
            node_types[inode.type] = node_types.get(inode.type, 0) + 1
        metadata["node_counts"] = dict(sorted(node_types.items()))
        return metadata, sum(node_types.values())

    def encode(self, metadata: dict[str, Any]) -> bytes:
        from clipcy.archive.writer import assemble_archive
        from clipcy.image.merge import encode_tree

        access = [_access_for_writer(r) for r in self.results]
        # the records are written straight from the tree: no Node (or list of them) is made
        return assemble_archive(metadata, encode_tree(self.tree), access)
