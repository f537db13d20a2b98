"""`clipctl extract`: write the archived tree (or subtrees) under a directory, safely.

Every path is opened component by component from the destination's directory fd with
O_NOFOLLOW, so neither a `..`/absolute name in a hostile archive nor a symlink created earlier
in the tree can redirect a write outside DEST. Owners, devices and xattrs are applied only when
running as root; directory modes and times are set last, deepest first.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import starmap
from typing import TYPE_CHECKING, Any

from clipcy.archive.files import ArchiveFile, LayerReaders
from clipcy.archive.reader import storage_or_layout
from clipcy.errors import ArchivePathError, ClipError
from clipcy.node import BLOCK, CHAR, DIR, FIFO, FILE, SYMLINK, Node

if TYPE_CHECKING:
    from clipcy.archive.reader import Archive
    from clipcy.storage.registry import RemoteOptions

log = logging.getLogger("clipcy")
COPY_PIECE = 1 << 20
LOOKAHEAD_BYTES = 8 << 20  # a remote store is told about the next files up to this many bytes
LOOKAHEAD_NODES = 256  # ... or this many nodes of the walk ahead of the one being extracted
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def safe_parts(path: bytes) -> list[bytes]:
    """The components of an archive path; refuses '..' and NULs rather than cleaning them."""
    parts = [p for p in path.split(b"/") if p not in (b"", b".")]
    for p in parts:
        if p == b".." or b"\0" in p:
            raise ClipError(f"unsafe path in archive: {path!r}")
    return parts


class Fds:
    """The file descriptors an Extractor holds, kept so that an interrupt cannot make it close
    one twice or lose one.

    A signal's exception (KeyboardInterrupt, or SIGTERM's Terminated) is raised between
    bytecodes, e.g. as soon as os.open or os.close returns. So an fd enters the list inside
    the C call that opens it (list.extend over starmap: no bytecode between the two), leaves
    the list before it is closed (never closed twice: a second close could hit another
    thread's new fd of the same number), and whatever is still listed when the work is cut
    short is closed by close_all(). Only fds in the list are ever closed.
    """

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: list[int] = []

    def open(
        self, path: str | bytes | os.PathLike[str], flags: int, mode: int = 0o777,
        *, dir_fd: int | None = None,
    ) -> int:
        self.held.extend(starmap(partial(os.open, dir_fd=dir_fd), ((path, flags, mode),)))
        return self.held[-1]

    def dup(self, fd: int) -> int:
        self.held.extend(map(os.dup, (fd,)))
        return self.held[-1]

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


class Extractor:
    def __init__(
        self, dest: str | os.PathLike[str], store: LayerReaders, progress: Any = None
    ) -> None:
        os.makedirs(dest, exist_ok=True)
        self.fds = Fds()
        try:
            self.root_fd = self.fds.open(dest, os.O_RDONLY | os.O_DIRECTORY)
        except BaseException:
            self.fds.close_all()
            raise
        self.store = store
        self.as_root = os.geteuid() == 0
        self.first_path: dict[int, list[bytes]] = {}  # ino -> parts of its first extracted path
        self.dirs: list[tuple[list[bytes], Node]] = []
        self.progress = progress
        self.files = 0
        self.bytes = 0
        self.upcoming: list[Node] = []  # the next regular files to extract (prefetch hints)

    def close(self) -> None:
        """Close the destination's fd and any other still open (after an interrupt)."""
        self.fds.close_all()

    # -- path handling ---------------------------------------------------------------
    def _open_parent(self, parts: list[bytes]) -> int:
        """An fd of the directory holding parts[-1], created if missing, never via a symlink."""
        fds = self.fds
        fd = fds.dup(self.root_fd)
        try:
            for comp in parts[:-1]:
                try:
                    nfd = fds.open(comp, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = fds.open(comp, DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise ClipError(
                            f"refusing to extract through non-directory "
                            f"{os.fsdecode(comp)!r} in {os.fsdecode(b'/'.join(parts))}"
                        ) from e
                    raise
                # fd names the new directory before the old one is closed: an interrupt
                # right after that close must not make the cleanup below close it again
                old, fd = fd, nfd
                fds.close(old)
            return fd
        except BaseException:
            fds.discard(fd)
            raise

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

    # -- one node --------------------------------------------------------------------
    def extract(self, node: Node) -> None:
        parts = safe_parts(node.path)
        if not parts:  # the root: only its metadata, applied at the end
            self.dirs.append((parts, node))
            return
        fd = self._open_parent(parts)
        name = parts[-1]
        try:
            self._extract_at(fd, name, parts, node)
        finally:
            self.fds.discard(fd)

    def _extract_at(self, fd: int, name: bytes, parts: list[bytes], node: Node) -> None:
        self._clear(name, fd, node.type == DIR)
        if node.type == DIR:
            try:
                os.mkdir(name, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            self.dirs.append((parts, node))
            return
        if node.type == FILE:
            first = self.first_path.get(node.ino)
            if first is not None and node.nlink > 1:
                src_fd = self._open_parent(first)
                try:
                    os.link(
                        first[-1], name, src_dir_fd=src_fd, dst_dir_fd=fd, follow_symlinks=False
                    )
                finally:
                    self.fds.discard(src_fd)
                return
            self._write_file(fd, name, node)
            self.first_path[node.ino] = parts
        elif node.type == SYMLINK:
            os.symlink(node.linkname, name, dir_fd=fd)
        elif node.type == FIFO:
            os.mkfifo(name, 0o600, dir_fd=fd)
        elif node.type in (CHAR, BLOCK):
            if not self.as_root:
                log.warning("skipping device %s (needs root)", os.fsdecode(node.path))
                return
            kind = stat.S_IFCHR if node.type == CHAR else stat.S_IFBLK
            os.mknod(name, kind | 0o600, os.makedev(node.devmajor, node.devminor), dir_fd=fd)
        self._apply_meta(fd, name, node)

    def _write_file(self, fd: int, name: bytes, node: Node) -> None:
        fds = self.fds
        out = -1
        try:
            out = fds.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd
            )
            src = ArchiveFile(node, self.store)
            runs = node.sparse if node.sparse is not None else ((0, node.size),)
            ahead = bool(self.upcoming)
            for off, length in runs:
                pos = off
                while pos < off + length:
                    data = src.pread(pos, min(COPY_PIECE, off + length - pos))
                    if ahead:  # after this file's first read, which needs the connection
                        # first: the next files' starts travel while this one is written
                        ahead = False
                        upcoming, self.upcoming = self.upcoming, []
                        self.store.prefetch(n for n in upcoming if not (
                            n.nlink > 1 and n.ino in self.first_path))  # (linked, not read)
                    os.pwrite(out, data, pos)
                    pos += len(data)
                    self.bytes += len(data)
            os.ftruncate(out, node.size)  # sparse tails and holes
            fds.close(out)  # its error (e.g. EIO, ENOSPC on NFS) fails the file
        except BaseException:
            try:
                fds.discard(out)  # nothing if it was closed, or not opened
            finally:
                # a file cut short (an interrupt; or its blob changed: SpanChecksumError) is
                # not left. _clear() emptied the name, so what is there is this call's file.
                try:
                    os.unlink(name, dir_fd=fd)
                except OSError:
                    pass
            raise
        self.files += 1
        if self.progress is not None:
            self.progress("progress", {"files": self.files, "bytes": self.bytes})

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
            if not parts:
                self._apply_meta_root(node)
                continue
            fd = self._open_parent(parts)
            try:
                self._apply_meta(fd, parts[-1], node)
            finally:
                self.fds.discard(fd)

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
    """Extract into dest; returns (files written, bytes written). The bytes come through the
    archive's layer readers (the storage it was opened with), or through readers of their
    own when storage (a storage ref overriding the archive's; layout: the same, deprecated)
    or remote (RemoteOptions) is given."""
    storage = storage_or_layout(storage, layout)
    own = storage is not None or remote is not None
    store = arc.open_layer_readers(storage, remote) if own else arc.layer_readers()
    ex = Extractor(dest, store, progress)
    walk = iter(select_nodes(arc, paths))
    window: collections.deque[Node] = collections.deque()
    ahead = 0  # bytes of the regular files in the window
    lookahead = getattr(store.store, "prefetches", False)
    try:
        while True:
            if window:
                node = window.popleft()
                if node.type == FILE and node.size:
                    ahead -= node.size
            else:
                got = next(walk, None)
                if got is None:
                    break
                node = got
            # the walk order is known: a remote store learns of the files after this one
            # (in batches, after each file's first read) and fetches them ahead
            while lookahead and ahead < LOOKAHEAD_BYTES and len(window) < LOOKAHEAD_NODES:
                following = next(walk, None)
                if following is None:
                    lookahead = False
                    break
                window.append(following)
                if following.type == FILE and following.size:
                    ahead += following.size
                    ex.upcoming.append(following)
            try:
                ex.extract(node)
            except OSError as e:
                raise ClipError(
                    f"failed to extract {os.fsdecode(node.path)}: {e.strerror or e}"
                ) from e
        ex.finish()
    finally:
        try:
            ex.close()
        finally:
            if own:
                store.close()
    return ex.files, ex.bytes
