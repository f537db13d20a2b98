"""`clipctl extract`: write the archived tree (or subtrees) under a directory, safely.

Every path is opened component by component from the destination's directory fd with
O_NOFOLLOW, so neither a `..`/absolute name in a hostile archive nor a symlink created earlier
in the tree can redirect a write outside DEST. Owners, devices and xattrs are applied only when
running as root.

The order is the data's, not the paths': directories first (path order); then the regular
files of each layer in the order their bytes lie in it, each layer read once from its first
needed byte to its last (a layer reader's decoder continues from the end of one file to the
next, and resumes at a recorded point only to skip a gap longer than the way to that point),
layers on WORKERS threads (inflate runs without the GIL); then hardlinks (their target is
written), symlinks and special files; last, directory modes and times, deepest first. A layer
made in readdir order is thus streamed like `tar -x` does, not inflated again from a resume
point for each file.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from clipcy.archive.files import ArchiveFile, LayerReaders
from clipcy.archive.reader import storage_or_layout
from clipcy.errors import ArchivePathError, ClipError
from clipcy.interrupts import waiting
from clipcy.node import BLOCK, CHAR, DIR, FIFO, FILE, SYMLINK, Node
from clipcy.tempfiles import call_held

if TYPE_CHECKING:
    from clipcy.archive.reader import Archive
    from clipcy.storage.registry import RemoteOptions

log = logging.getLogger("clipcy")
COPY_PIECE = 1 << 20
LOOKAHEAD_BYTES = 8 << 20  # a remote store is told about the next files up to this many bytes
LOOKAHEAD_NODES = 256  # ... or this many files of the layer ahead of the one being extracted
WORKERS = 2  # threads writing regular files, one layer each at a time
DIR_FDS = 64  # directory fds each of those threads (and the main one) keeps open
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def safe_parts(path: bytes) -> list[bytes]:
    """The components of an archive path; refuses '..' and NULs rather than cleaning them."""
    parts = [p for p in path.split(b"/") if p not in (b"", b".")]
    for p in parts:
        if p == b".." or b"\0" in p:
            raise ClipError(f"unsafe path in archive: {path!r}")
    return parts


class Fds:
    """The file descriptors one thread of an Extractor holds, kept so that an interrupt cannot
    make it close one twice or lose one.

    A signal's exception (KeyboardInterrupt, or SIGTERM's Terminated) is raised between
    bytecodes, e.g. as soon as os.open or os.close returns. So an fd enters the list inside
    the C call that opens it (tempfiles.call_held: no bytecode between the two), leaves
    the list before it is closed (never closed twice: a second close could hit another
    thread's new fd of the same number), and whatever is still listed when the work is cut
    short is closed by close_all(). Only fds in the list are ever closed. One per thread:
    the list's index-then-delete is not atomic across threads.
    """

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: list[int] = []

    def open(
        self, path: str | bytes | os.PathLike[str], flags: int, mode: int = 0o777,
        *, dir_fd: int | None = None,
    ) -> int:
        return call_held(self.held, partial(os.open, dir_fd=dir_fd), path, flags, mode)

    def dup(self, fd: int) -> int:
        return call_held(self.held, os.dup, fd)

    def close(self, fd: int) -> None:
        """Close fd, raising its error; nothing if it is not held (already closed)."""
        held = self.held
        if fd in held:
            del held[held.index(fd)]  # no bytecode between this and the close
            os.close(fd)

    def discard(self, fd: int) -> None:
        """close() for cleanup: an error closing (a directory, or a file being given up) is
        not raised over what is being cleaned up after."""
        try:
            self.close(fd)
        except OSError:
            pass

    def close_all(self) -> None:
        # (not tempfiles.close_held: the closes go through this module's `os`, which the
        # interrupt tests replace to interrupt after each one)
        held = self.held
        try:
            while held:
                fd = held[-1]
                del held[-1]
                try:
                    os.close(fd)
                except OSError:
                    pass
        finally:
            if held:  # interrupted between two closes: the rest are closed all the same
                self.close_all()


class Dirs:
    """fds of directories under DEST for one thread, each opened component by component with
    O_NOFOLLOW from DEST's fd (created when missing), the last DIR_FDS used kept open: the
    files of one directory mostly lie together in a layer, so most files need no directory
    open. An fd names the directory it was opened on; the extractor never replaces a
    directory, so a kept fd stays the directory its path names. The fds are held in fds (and
    closed with it): fds of this cache are never closed by its users."""

    def __init__(self, fds: Fds, root_fd: int) -> None:
        self.fds = fds
        self.root_fd = root_fd
        self.kept: OrderedDict[bytes, int] = OrderedDict()

    def parent(self, parts: list[bytes]) -> int:
        """The fd of the directory holding parts[-1]."""
        return self.open(parts[:-1])

    def open(self, parts: list[bytes]) -> int:
        """The fd of the directory at parts (DEST for []), made if missing."""
        kept = self.kept
        n = len(parts)
        k = n
        fd = self.root_fd
        # the longest kept prefix, among the last few (a path deeper than that is opened
        # from DEST: cheap next to the quadratic keys of a hostile, very deep path)
        while k > 0 and k > n - 8:
            got = kept.get(b"/".join(parts[:k]))
            if got is not None:
                kept.move_to_end(b"/".join(parts[:k]))
                fd = got
                break
            k -= 1
        else:
            k = 0
        for i in range(k, n):
            comp = parts[i]
            try:
                nfd = self.fds.open(comp, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(comp, 0o755, dir_fd=fd)
                nfd = self.fds.open(comp, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ClipError(
                        f"refusing to extract through non-directory "
                        f"{os.fsdecode(comp)!r} in {os.fsdecode(b'/'.join(parts))}"
                    ) from e
                raise
            kept[b"/".join(parts[:i + 1])] = fd = nfd
            if len(kept) > DIR_FDS:  # the oldest: never the one just opened, which is
                _, old = kept.popitem(last=False)  # the newest (DIR_FDS > 1)
                self.fds.close(old)  # (still held if an interrupt lands before this)
        return fd


class _Stopped(Exception):
    """A writing thread gives up: another one failed, or the extract was interrupted."""


@dataclass
class Plan:
    """The nodes of an extract by phase: directories (path order); regular files by layer,
    each layer's in data order; the extra paths of hardlinked files; the rest (symlinks,
    FIFOs, devices) in path order."""

    dirs: list[Node] = field(default_factory=list)
    layers: dict[int, list[Node]] = field(default_factory=dict)
    links: list[Node] = field(default_factory=list)
    rest: list[Node] = field(default_factory=list)

    @classmethod
    def of(cls, nodes: Iterable[Node], unique: bool = False) -> Plan:
        """unique: drop a path seen before (overlapping subtrees)."""
        plan = cls()
        seen: set[bytes] = set()
        written: set[int] = set()  # ino of hardlinked files whose data one path carries
        for node in nodes:
            if unique:
                if node.path in seen:
                    continue
                seen.add(node.path)
            if node.type == DIR:
                plan.dirs.append(node)
            elif node.type == FILE:
                if node.nlink > 1:
                    if node.ino in written:
                        plan.links.append(node)
                        continue
                    written.add(node.ino)
                plan.layers.setdefault(node.layer, []).append(node)
            else:
                plan.rest.append(node)
        for files in plan.layers.values():
            files.sort(key=lambda n: n.offset)  # stable: path order where offsets tie
        return plan


class Extractor:
    def __init__(
        self, dest: str | os.PathLike[str], store: LayerReaders, progress: Any = None
    ) -> None:
        os.makedirs(dest, exist_ok=True)
        self.fds = Fds()  # the calling thread's; each writing thread has its own
        try:  # up to the end: the caller gets no Extractor to close if this raises
            self.root_fd = self.fds.open(dest, os.O_RDONLY | os.O_DIRECTORY)
            self.paths = Dirs(self.fds, self.root_fd)
            self.store = store
            self.as_root = os.geteuid() == 0
            self.first_path: dict[int, list[bytes]] = {}  # ino -> parts of its first path
            self.dirs: list[tuple[list[bytes], Node]] = []
            self.progress = progress
            self.files = 0
            self.bytes = 0
            self.lookahead = store.store.prefetches
            self._count_lock = threading.Lock()
        except BaseException:
            self.fds.close_all()
            raise

    def close(self) -> None:
        """Close the destination's fd and any other still open (after an interrupt)."""
        self.fds.close_all()

    @staticmethod
    def _clear(name: bytes, fd: int, want_dir: bool) -> None:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if want_dir:
                return
            raise ClipError(f"cannot replace existing directory {os.fsdecode(name)!r}")
        os.unlink(name, dir_fd=fd)

    # -- the phases ------------------------------------------------------------------
    def run(self, plan: Plan) -> None:
        """Extract plan's nodes, phase by phase (the module's docstring)."""
        for node in plan.dirs:
            self._one(node, self._make_dir)
        self.write_layers(plan.layers)
        for node in plan.links:
            self._one(node, self._make_file)
        for node in plan.rest:
            self._one(node, self._make_other)
        self.finish()

    def extract(self, node: Node) -> None:
        """One node, on the calling thread (a directory's metadata waits for finish())."""
        if node.type == DIR:
            self._make_dir(node)
        elif node.type == FILE:
            self._make_file(node)
        else:
            self._make_other(node)

    @staticmethod
    def _one(node: Node, make: Any) -> None:
        try:
            make(node)
        except OSError as e:
            raise ClipError(
                f"failed to extract {os.fsdecode(node.path)}: {e.strerror or e}"
            ) from e

    def _make_dir(self, node: Node) -> None:
        parts = safe_parts(node.path)
        if parts:  # (the root: only its metadata, applied at the end)
            fd, name = self.paths.parent(parts), parts[-1]
            try:
                os.mkdir(name, 0o700, dir_fd=fd)
            except FileExistsError:
                self._clear(name, fd, True)  # a directory there is kept
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
        self.dirs.append((parts, node))

    def _make_file(self, node: Node) -> None:
        """A regular file on the calling thread: a link to the path its data went to, if it
        is a hardlink and that path was written, else the file."""
        parts = safe_parts(node.path)
        first = self.first_path.get(node.ino)
        if first is None or node.nlink <= 1:
            self._write_file(self.fds, self.paths, parts, node)
            return
        fds = self.fds
        src = fds.dup(self.paths.parent(first))  # (opening parts' parent may drop it)
        try:
            fd, name = self.paths.parent(parts), parts[-1]
            try:
                os.link(first[-1], name, src_dir_fd=src, dst_dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                self._clear(name, fd, False)
                os.link(first[-1], name, src_dir_fd=src, dst_dir_fd=fd, follow_symlinks=False)
        finally:
            fds.discard(src)

    def _make_other(self, node: Node) -> None:
        parts = safe_parts(node.path)
        if not parts:
            raise ClipError(f"the archive's root is a {node.type}, not a directory")
        fd, name = self.paths.parent(parts), parts[-1]
        self._clear(name, fd, False)
        if node.type == SYMLINK:
            os.symlink(node.linkname, name, dir_fd=fd)
        elif node.type == FIFO:
            os.mkfifo(name, 0o600, dir_fd=fd)
        elif node.type in (CHAR, BLOCK):
            if not self.as_root:
                log.warning("skipping device %s (needs root)", os.fsdecode(node.path))
                return
            kind = stat.S_IFCHR if node.type == CHAR else stat.S_IFBLK
            os.mknod(name, kind | 0o600, os.makedev(node.devmajor, node.devminor), dir_fd=fd)
        else:
            raise ClipError(f"corrupt archive: {os.fsdecode(node.path)} has type {node.type}")
        self._apply_meta(fd, name, node)

    # -- regular files, layers on threads -----------------------------------------------
    def write_layers(self, layers: dict[int, list[Node]]) -> None:
        """Write each layer's files in data order, the layers on up to WORKERS threads (each
        layer, the largest first, to the thread with the fewest bytes so far: a fixed split,
        so that a run's work per thread does not depend on timing). An error on one thread
        stops the others (each removes the file it was writing) and is raised here; an
        interrupt of this thread does the same."""
        shares: list[list[list[Node]]] = [[] for _ in range(min(WORKERS, len(layers)))]
        if not shares:
            return
        loads = [0] * len(shares)
        for files in sorted(layers.values(), key=lambda fs: -sum(n.size for n in fs)):
            k = loads.index(min(loads))
            shares[k].append(files)
            loads[k] += sum(n.size for n in files)
        abort = threading.Event()
        errors: list[BaseException] = []
        done = [threading.Event() for _ in shares]
        threads = [threading.Thread(target=self._worker, args=(share, abort, errors, d),
                                    name=f"clipcy-extract-{i}", daemon=True)
                   for i, (share, d) in enumerate(zip(shares, done, strict=True))]
        started: list[threading.Event] = []
        try:
            _start(threads, done, started)
            for d in started:
                waiting(d.wait)
        finally:
            abort.set()
            _wait(started)
        if errors:
            raise errors[0]

    def _worker(self, share: list[list[Node]], abort: threading.Event,
                errors: list[BaseException], done: threading.Event) -> None:
        try:
            fds = Fds()
            try:
                paths = Dirs(fds, self.root_fd)
                for files in share:
                    self._write_layer(files, fds, paths, abort)
            except _Stopped:
                pass
            except BaseException as e:  # noqa: BLE001 - raised by write_layers, whatever it is
                errors.append(e)
                abort.set()
            finally:
                try:
                    fds.close_all()
                except BaseException as e:  # noqa: BLE001 - (an interrupt after a close)
                    errors.append(e)
                    abort.set()
        finally:
            done.set()

    def _write_layer(self, files: list[Node], fds: Fds, paths: Dirs,
                     abort: threading.Event) -> None:
        upcoming: list[Node] = []  # files to tell a remote store of after the next read
        told = 0  # files[:told] were told
        ahead = 0  # bytes of files[i + 1:told]
        lookahead = self.lookahead and LOOKAHEAD_NODES > 0
        for i, node in enumerate(files):
            if abort.is_set():
                raise _Stopped
            if lookahead:
                # the order is known: a remote store learns of the files after this one (in
                # batches, after a file's first read) and fetches ahead; in data order the
                # next files follow this one, so its read-ahead runs on into them
                if i < told:
                    ahead -= files[i].size
                told = max(told, i + 1)
                while told < len(files) and ahead < LOOKAHEAD_BYTES and \
                        told - i <= LOOKAHEAD_NODES:
                    ahead += files[told].size
                    upcoming.append(files[told])
                    told += 1
            try:
                self._write_file(fds, paths, safe_parts(node.path), node, upcoming, abort)
            except OSError as e:
                raise ClipError(
                    f"failed to extract {os.fsdecode(node.path)}: {e.strerror or e}"
                ) from e

    def _create(self, fds: Fds, fd: int, name: bytes) -> int:
        try:
            return fds.open(name, FILE_FLAGS, 0o600, dir_fd=fd)
        except FileExistsError:
            self._clear(name, fd, False)
        return fds.open(name, FILE_FLAGS, 0o600, dir_fd=fd)

    def _write_file(self, fds: Fds, paths: Dirs, parts: list[bytes], node: Node,
                    upcoming: list[Node] | None = None,
                    abort: threading.Event | None = None) -> None:
        if not parts:
            raise ClipError("the archive's root is a file, not a directory")
        fd, name = paths.parent(parts), parts[-1]
        out = -1
        written = 0
        try:
            out = self._create(fds, fd, name)
            src = ArchiveFile(node, self.store)
            runs = node.sparse if node.sparse is not None else ((0, node.size),)
            for off, length in runs:
                pos = off
                while pos < off + length:
                    if abort is not None and abort.is_set():
                        raise _Stopped
                    data = src.pread(pos, min(COPY_PIECE, off + length - pos))
                    if upcoming:  # after this file's first read, which needs the connection
                        # first: the next files' starts travel while this one is written
                        self.store.prefetch(list(upcoming))
                        upcoming.clear()
                    os.pwrite(out, data, pos)
                    pos += len(data)
                    written += len(data)
            if node.sparse is not None:
                os.ftruncate(out, node.size)  # holes, and a hole at the end
            self._apply_meta_fd(out, node)
            fds.close(out)  # its error (e.g. EIO, ENOSPC on NFS) fails the file
        except BaseException:
            try:
                fds.discard(out)  # nothing if it was closed, or not opened
            finally:
                # a file cut short (an interrupt; or its blob changed: SpanChecksumError) is
                # not left. _create() emptied the name, so what is there is this call's file.
                try:
                    os.unlink(name, dir_fd=fd)
                except OSError:
                    pass
            raise
        self.first_path[node.ino] = parts
        with self._count_lock:
            self.files += 1
            self.bytes += written
            if self.progress is not None:
                self.progress("progress", {"files": self.files, "bytes": self.bytes})

    # -- metadata --------------------------------------------------------------------
    def _apply_meta_fd(self, fd: int, node: Node) -> None:
        """A regular file's owner, xattrs, mode and times, through its open fd."""
        if self.as_root:
            os.fchown(fd, node.uid, node.gid)
            for key, value in node.xattrs.items():
                try:
                    os.setxattr(fd, key, value)
                except OSError as e:
                    log.warning(
                        "cannot set xattr %s on %s: %s", key, os.fsdecode(node.path), e.strerror
                    )
        os.fchmod(fd, node.mode)
        ns = node.mtime_sec * 1_000_000_000 + node.mtime_nsec
        os.utime(fd, ns=(ns, ns))

    def _apply_meta(self, fd: int, name: bytes, node: Node) -> None:
        is_link = node.type == SYMLINK
        if self.as_root:
            os.chown(name, node.uid, node.gid, dir_fd=fd, follow_symlinks=False)
            for key, value in node.xattrs.items():
                try:
                    os.setxattr(
                        f"/proc/self/fd/{fd}/{os.fsdecode(name)}", key, value, follow_symlinks=False
                    )
                except OSError as e:
                    log.warning(
                        "cannot set xattr %s on %s: %s", key, os.fsdecode(node.path), e.strerror
                    )
        if not is_link:  # Linux cannot chmod a symlink
            os.chmod(name, node.mode, dir_fd=fd)
        ns = node.mtime_sec * 1_000_000_000 + node.mtime_nsec
        os.utime(name, ns=(ns, ns), dir_fd=fd, follow_symlinks=False)

    def finish(self) -> None:
        """Directory metadata last, deepest first, so writing children does not disturb it."""
        for parts, node in sorted(self.dirs, key=lambda d: len(d[0]), reverse=True):
            try:
                if not parts:
                    self._apply_meta_root(node)
                else:
                    self._apply_meta(self.paths.parent(parts), parts[-1], node)
            except OSError as e:
                raise ClipError(
                    f"failed to extract {os.fsdecode(node.path)}: {e.strerror or e}"
                ) from e

    def _apply_meta_root(self, node: Node) -> None:
        fd = self.root_fd
        if self.as_root:
            os.fchown(fd, node.uid, node.gid)
            for key, value in node.xattrs.items():
                try:
                    os.setxattr(fd, key, value)
                except OSError as e:
                    log.warning("cannot set xattr %s on /: %s", key, e.strerror)
        os.fchmod(fd, node.mode)
        ns = node.mtime_sec * 1_000_000_000 + node.mtime_nsec
        os.utime(fd, ns=(ns, ns))


def _start(threads: list[threading.Thread], done: list[threading.Event],
           started: list[threading.Event]) -> None:
    """Start threads, adding each one's done event to started, with SIGINT and SIGTERM
    blocked: the threads inherit the mask (the signals are the calling thread's to take), and
    no interrupt lands between a thread's start and its entry in started."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        for t, d in zip(threads, done, strict=True):
            t.start()
            started.append(d)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _wait(done: list[threading.Event]) -> None:
    """Wait until every started thread is done, even if interrupted meanwhile (the last
    interrupt comes out, once none runs). Not Thread.join: an interrupted join can leave a
    running thread marked as stopped (CPython 3.11)."""
    try:
        for d in done:
            waiting(d.wait)
    finally:
        if not all(d.is_set() for d in done):
            _wait(done)


def select_nodes(arc: Any, paths: Iterable[str] | None) -> Iterator[Node]:
    """All nodes, or the subtrees at paths (with their parent directories' entries)."""
    if not paths:
        yield from arc.walk()
        return
    for p in paths:
        node = arc.lookup(os.fsencode(p))
        if node is None:
            raise ArchivePathError(f"no such path in archive: {p}")
        yield from arc.walk(node.path)


def extract_archive(
    arc: Archive,
    dest: str | os.PathLike[str],
    paths: Iterable[str] | None = None,
    *,
    storage: str | os.PathLike[str] | None = None,
    remote: RemoteOptions | None = None,
    progress: Any = None,
    layout: str | os.PathLike[str] | None = None,
) -> tuple[int, int]:
    """Extract into dest, in data order (the module's docstring); returns (files written,
    bytes written). The bytes come through the archive's layer readers (the storage it was
    opened with), or through readers of their own when storage (a storage ref overriding the
    archive's; layout: the same, deprecated) or remote (RemoteOptions) is given."""
    storage = storage_or_layout(storage, layout)
    paths = list(paths) if paths else None
    plan = Plan.of(select_nodes(arc, paths), unique=bool(paths and len(paths) > 1))
    own = storage is not None or remote is not None
    store = arc.open_layer_readers(storage, remote) if own else arc.layer_readers()
    try:
        ex = Extractor(dest, store, progress)
        try:
            ex.run(plan)
        finally:
            ex.close()
    finally:
        if own:
            store.close()
    return ex.files, ex.bytes
