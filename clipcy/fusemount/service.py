"""Mounting: checks, the serving process, background start, unmount.

serve() is the mount process itself (`clipctl mount -f`): it checks everything, mounts, writes
"ok" (or the one-line error) to the ready pipe, then answers requests on libfuse's worker
threads until the filesystem is unmounted: by `clipctl umount`, by SIGINT/SIGTERM, or by
anyone's umount. start() runs that process detached (the CLI without -f, and clipcy.mount())
and returns once it reports the mount ready, or raises its error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from clipcy.errors import ClipError, MountError

if TYPE_CHECKING:
    import socket

    from clipcy.archive.reader import Archive
    from clipcy.fusemount._fuse import Session
    from clipcy.fusemount.fs import ImageFS
    from clipcy.storage.decodedcache import DecodedDiskCache
    from clipcy.storage.registry import RemoteOptions

log = logging.getLogger("clipcy.mount")

__all__ = ["DEFAULT_CACHE_MIB", "PrefetchOptions", "serve", "start", "unmount", "is_mounted",
           "default_log_path", "LOGS_KEPT"]

# the decompressed-span cache (perf/RESULTS-mount.md: a sequential read needs a few spans,
# a container start's files fit in a few MiB; 64 MiB keeps the process within its budget)
DEFAULT_CACHE_MIB = 64
FSTYPE = "fuse.clipcy"
THREADS = 16
# mount logs kept in log_dir(): the newest ones, and those of mounts still served
LOGS_KEPT = 20
MISSING_LIBFUSE = ("clipctl mount needs libfuse3: install the Debian packages fuse3 and "
                   "libfuse3-dev (apt-get install fuse3 libfuse3-dev), then reinstall clipcy "
                   "(pip install --force-reinstall --no-deps clipcy)")


@dataclass(frozen=True)
class PrefetchOptions:
    """What a mount records and replays (clipctl mount --record, --prefetch, --no-prefetch)."""

    record: str | None = None  # write the files read here when the mount ends
    record_seconds: float | None = None  # ... or this long after ready, if sooner
    list_file: str | None = None  # replay this list instead of the archive's
    replay: bool = True  # False: replay no list at all
    wait: bool = False  # report ready only once the replay is done
    fetch_all: bool = False  # then fetch the rest of every layer into the disk span cache

    def argv(self) -> list[str]:
        out = ["--record", self.record] if self.record is not None else []
        if self.record_seconds is not None:
            out += ["--record-seconds", str(self.record_seconds)]
        out += ["--prefetch", self.list_file] if self.list_file is not None else []
        out += ["--prefetch-wait"] if self.wait else []
        out += ["--fetch-all"] if self.fetch_all else []
        return out + ([] if self.replay else ["--no-prefetch"])


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount this process sees."""
    out: list[tuple[str, str]] = []
    try:
        text = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return out
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) >= 5 and right:
            mp = fields[4].encode().decode("unicode_escape").encode("latin-1").decode(
                "utf-8", "surrogateescape")  # octal escapes (\040) back to the name
            out.append((mp, right.split()[0]))
    return out


def is_mounted(mountpoint: str | os.PathLike[str], fstype: str | None = None) -> bool:
    mp = os.path.realpath(mountpoint)
    return any(m == mp and (fstype is None or t == fstype) for m, t in _mountinfo())


def stale_error(mountpoint: str) -> MountError:
    return MountError(f"{mountpoint}: stale mount (its process is gone): run clipctl umount "
                      f"{mountpoint}")


def check_mountpoint(mountpoint: str, nonempty: bool = False, mkdir: bool = False) -> str:
    """The absolute mount point, or MountError naming what is wrong with it. An empty
    directory unless nonempty (files under a mount are hidden: fuse2's rule); mkdir creates
    a missing one."""
    try:
        # statfs, not stat: the kernel may answer stat from its cache even when the mount's
        # process is gone, statfs always asks it (and gets ENOTCONN from a dead mount)
        os.statvfs(mountpoint)
    except OSError as e:
        if e.errno == errno.ENOTCONN:  # a FUSE mount whose process died
            raise stale_error(mountpoint) from None
        if mkdir and e.errno == errno.ENOENT and not os.path.lexists(mountpoint):
            try:
                os.makedirs(mountpoint)
            except OSError as e2:
                raise MountError(f"cannot create mountpoint {mountpoint}: "
                                 f"{e2.strerror or e2}") from None
    if not os.path.lexists(mountpoint):
        raise MountError(f"mountpoint {mountpoint} does not exist (--mkdir creates it)")
    if not os.path.isdir(mountpoint):
        raise MountError(f"mountpoint {mountpoint} is not a directory")
    if os.path.ismount(mountpoint) or is_mounted(mountpoint):
        raise MountError(f"mountpoint {mountpoint} is already a mount point")
    if not nonempty:
        try:
            entries = os.listdir(mountpoint)
        except OSError as e:
            raise MountError(f"cannot read mountpoint {mountpoint}: {e.strerror or e}") from None
        if entries:
            raise MountError(f"mountpoint {mountpoint} is not empty: the mount would hide its "
                             f"{len(entries)} entries (-o nonempty mounts anyway)")
    return os.path.realpath(mountpoint)


def binding() -> ModuleType:
    """The compiled libfuse3 binding, or MountError naming the packages to install."""
    try:
        from clipcy.fusemount import _fuse
    except ImportError:  # not built (no libfuse3-dev at install) or libfuse3.so missing
        raise MountError(MISSING_LIBFUSE) from None
    if not os.path.exists("/dev/fuse"):
        raise MountError("no /dev/fuse: load the fuse kernel module (modprobe fuse), or give "
                         "the container the device (--device /dev/fuse)")
    return _fuse


def log_dir() -> str:
    """Where mount logs go: $XDG_STATE_HOME/clipcy/mounts (~/.local/state/clipcy/mounts);
    $XDG_RUNTIME_DIR/clipcy/mounts when that cannot be made."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                              ".local", "state")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    last: OSError | None = None
    for base in [state] + ([runtime] if runtime else []):
        path = os.path.join(base, "clipcy", "mounts")
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            return path
        except OSError as e:
            last = e
    assert last is not None
    raise MountError(f"cannot create a directory for the mount log: {last}")


def default_log_path(mountpoint: str, pid: int) -> str:
    """log_dir()/mount-<mountpoint>-<pid>.log: one file per mount, named after where it is
    mounted (slashes as underscores) and its serving process."""
    tag = "".join(c if c.isalnum() or c in "._-" else "_"
                  for c in os.path.realpath(mountpoint).strip("/"))[-80:] or "root"
    return os.path.join(log_dir(), f"mount-{tag}-{pid}.log")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's, alive
        return True
    return True


def prune_logs(directory: str, keep: int = LOGS_KEPT) -> None:
    """Remove mount logs beyond the newest `keep`, except those of processes still alive."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith("mount-") and n.endswith(".log")]
        aged = sorted(names, key=lambda n: os.stat(os.path.join(directory, n)).st_mtime_ns,
                      reverse=True)
    except OSError as e:
        log.info("mount logs not pruned: %s", e)
        return
    for name in aged[keep:]:
        pid = name[:-4].rpartition("-")[2]
        if pid.isdigit() and _alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _open_log(mountpoint: str, log_path: str | None) -> tuple[int, str]:
    """(fd, path) of the log a background mount process writes: log_path, or a new file in
    log_dir() named for now after this process (renamed after the child by _name_log)."""
    path = log_path or default_log_path(mountpoint, os.getpid())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise MountError(f"cannot open the log file {path}: {e.strerror or e}") from None
    return fd, path


def _name_log(mountpoint: str, path: str, given: bool, pid: int) -> str:
    """The log's name once the serving process is known; older logs pruned."""
    if given:
        return path
    final = default_log_path(mountpoint, pid)
    try:
        os.replace(path, final)
    except OSError as e:
        log.info("mount log left at %s: %s", path, e)
        return path
    prune_logs(os.path.dirname(final))
    return final


def _raise_readahead(mountpoint: str, kib: int = 1024) -> None:
    """The kernel caps FUSE readahead at its bdi default (128 KiB): raise it (root only)."""
    try:
        dev = os.stat(mountpoint).st_dev
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        with open(path, "w") as f:
            f.write(str(kib))
    except OSError as e:
        log.info("readahead left at the kernel default: %s", e)


# A FUSE mount stays busy for a moment after the last process using it exits: the kernel
# holds the file's path until the mount process answers its RELEASE, which it may be slow to
# do while its threads inflate. So EBUSY is retried for this long before it is an error.
UNMOUNT_BUSY_SECONDS = 3.0


def unmount(mountpoint: str | os.PathLike[str], lazy: bool = False) -> None:
    """Unmount a FUSE filesystem: umount2 as root, fusermount3 -u otherwise.

    A mount that is busy is retried for UNMOUNT_BUSY_SECONDS before the error says so.
    """
    mp = os.fspath(mountpoint)
    deadline = time.monotonic() + UNMOUNT_BUSY_SECONDS
    pause = 0.01
    while True:
        busy, why = _unmount_once(mp, lazy)
        if not busy or time.monotonic() >= deadline:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.2)
    if why:
        hint = " (still in use: see fuser -vm; --lazy detaches it now)" if busy else ""
        raise MountError(f"cannot unmount {mp}: {why}{hint}")


def _unmount_once(mp: str, lazy: bool) -> tuple[bool, str]:
    """One unmount attempt: (busy, the error or "")."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.umount2(os.fsencode(mp), 2 if lazy else 0) == 0:  # 2: MNT_DETACH
            return False, ""
        err = ctypes.get_errno()
        return err == errno.EBUSY, os.strerror(err)
    tool = shutil.which("fusermount3")
    if tool is None:
        raise MountError("cannot unmount: fusermount3 not found (Debian package fuse3)")
    r = subprocess.run([tool, "-u"] + (["-z"] if lazy else []) + [mp], capture_output=True,
                       text=True)
    if r.returncode == 0:
        return False, ""
    why = r.stderr.strip() or "fusermount3 failed"
    return os.strerror(errno.EBUSY) in why, why


def _bound_malloc() -> None:
    """glibc keeps freed memory per thread arena (up to 8 per core): with 16 threads handing
    out 256 KiB spans, RSS grows past the span cache. Two arenas keep the process near its
    budget. (A fixed mmap threshold did too, but halved sequential reads: an mmap and 64 page
    faults per span; perf/RESULTS.md.)"""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def serve(archive: str, mountpoint: str, storage: str | None = None,
          cache_mib: int = DEFAULT_CACHE_MIB, options: Sequence[str] = (),
          ready_fd: int | None = None, remote: RemoteOptions | None = None, *,
          xattrs: bool = False, mkdir: bool = False,
          prefetch: PrefetchOptions | None = None, storage_checked: bool = False) -> int:
    """Mount and serve until unmounted. Errors before the mount is ready: MountError (and,
    with ready_fd, the message on that pipe). xattrs: answer getxattr/listxattr even for an
    image without any (by default they answer ENOSYS then, and the kernel stops asking);
    mkdir: create a missing mountpoint; prefetch: what to record and replay."""
    pre = prefetch or PrefetchOptions()
    try:
        session, arc, fs, positions = _prepare(archive, mountpoint, storage, cache_mib,
                                               options, remote, mkdir, pre, storage_checked)
    except MountError as e:
        if ready_fd is not None:
            os.write(ready_fd, f"error {e}\n".encode())
            os.close(ready_fd)
        raise
    mp = session.mountpoint
    _bound_malloc()
    stop = threading.Event()
    done = threading.Event()

    def loop() -> None:
        try:
            session.serve(THREADS)
        finally:
            done.set()

    def on_signal(signum: int, frame: object) -> None:
        if not stop.is_set():
            stop.set()
            log.info("signal %d: unmounting %s", signum, mp)
            try:
                unmount(mp, lazy=True)
            except MountError as e:
                log.error("%s", e)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    recorder = _Recorder(session, arc, pre, archive) if pre.record is not None else None
    worker = threading.Thread(target=loop, name="clipcy-fuse", daemon=True)
    worker.start()
    _raise_readahead(mp)
    replay = None
    if positions:
        from clipcy.fusemount.replay import Replay

        replay = Replay(arc, fs.spans, positions, fs.counters.replay)
        replay.start()
        if pre.wait:
            replay.wait()
    if pre.fetch_all:
        from clipcy.fusemount.background import BackgroundFetch

        BackgroundFetch(arc, fs.counters, replay.wait if replay is not None else None,
                        fs.spans.stream).start()
    try:
        stats = _serve_stats(mp, archive, fs)
    except (OSError, MountError) as e:
        stats = None
        log.warning("clipctl stats will not answer for this mount: %s", e)
    log.info("serving %s on %s", archive, mp)
    if ready_fd is not None:
        os.write(ready_fd, b"ok\n")
        os.close(ready_fd)
    else:  # clipctl mount -f: say where, and how to stop it
        print(f"clipctl: serving {archive} at {mp} (pid {os.getpid()}); stop with Ctrl-C or "
              f"clipctl umount {mp}", file=sys.stderr, flush=True)
    # after "ready": load the blob store and decode the node blocks while the first requests
    # come in; an image without xattrs then answers getxattr with ENOSYS (unless xattrs)
    def set_xattrs(enabled: bool) -> None:
        if xattrs and not enabled:
            log.info("no xattrs in the image; --xattrs: getxattr answers all the same")
            return
        session.set_xattrs(enabled)

    def warm() -> None:
        fs.warm(set_xattrs)
        log.info("warm-up done")

    threading.Thread(target=warm, name="clipcy-warm", daemon=True).start()
    if recorder is not None and pre.record_seconds is not None:
        timer = threading.Timer(pre.record_seconds, recorder.write)
        timer.daemon = True
        timer.start()
    while not done.wait(0.5):  # wake now and then so that signal handlers run
        pass
    if recorder is not None:
        recorder.write()
    session.close_after_unmount(is_mounted(mp, FSTYPE))
    fs.spans.flush()  # the decoded spans still queued for the disk cache
    if stats is not None:
        stats.close()
    log.info("counters %s", json.dumps(mount_counters(fs), sort_keys=True))
    arc.close()
    log.info("unmounted %s", mp)
    return 0


def mount_counters(fs: ImageFS) -> dict[str, Any]:
    """The mount's counters as one dict (clipctl stats --json; the keys: docs/CLI.md)."""
    return fs.counters.snapshot(fs.spans, fs.arc.layer_readers())


def _serve_stats(mp: str, archive: str, fs: ImageFS) -> socket.socket:
    """Answer clipctl stats on the mount's socket (clipcy.fusemount.stats), before ready."""
    from clipcy.fusemount.stats import serve_stats

    pid = os.getpid()

    def answer() -> dict[str, Any]:
        return {"mount": {"pid": pid, "mountpoint": mp, "archive": os.path.abspath(archive)},
                **mount_counters(fs)}

    return serve_stats(os.stat(mp).st_dev, answer)


class _Recorder:
    """--record: the files read, written (atomically, once) when the mount ends or after
    --record-seconds, whichever comes first."""

    def __init__(self, session: Session, arc: Archive, pre: PrefetchOptions,
                 archive: str) -> None:
        from clipcy.limits import PREFETCH_FILES

        self.session, self.arc, self.path, self.archive = session, arc, pre.record, archive
        self._once = threading.Lock()
        self._written = False
        session.record_start(arc.node_count, PREFETCH_FILES)

    def write(self) -> None:
        with self._once:
            if self._written:
                return
            self._written = True
            ids = self.session.record_stop()
        from clipcy.archive.prefetch import format_list
        from clipcy.limits import PREFETCH_FILES

        assert self.path is not None
        total = self.session.recorded_count()
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        header = (f"clipcy prefetch list: files read by a start of "
                  f"{os.path.basename(self.archive)}, in first-access order\n"
                  f"recorded {when}: {len(ids)} files"
                  + (f" (the first {PREFETCH_FILES} of {total})" if total > PREFETCH_FILES
                     else ""))
        try:
            text = format_list(self.arc, [i - 1 for i in ids], header)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            log.info("recorded %d files to %s", len(ids), self.path)
        except (OSError, ClipError) as e:
            log.error("cannot write the record %s: %s", self.path, e)


def _replay_list(arc: Archive, pre: PrefetchOptions) -> list[int] | None:
    """The node positions to replay: --prefetch FILE's, else the archive's stored list (None:
    nothing to replay). A bad list is a MountError, before ready."""
    if not pre.replay:
        return None
    from clipcy.archive.prefetch import read_list, resolve

    try:
        if pre.list_file is not None:
            return resolve(arc, read_list(pre.list_file), pre.list_file)
        return arc.prefetch_positions()
    except ClipError as e:
        raise MountError(str(e)) from None


def _check_storage(arc: Archive, fs: ImageFS, probe: bool = True) -> None:
    """Fail fast: every distinct blob answers one cheap probe (a stat in a layout directory,
    a 1-byte range request from a registry, credentials included) before the mount is
    ready, or MountError with the line clipctl cat would print. The store stays open for the
    reads, its blobs counted by the mount's counters from the first fetch.

    probe=False: the caller's own requests proved the storage a moment ago. A mount by image
    reference has just fetched the image manifest from the blobs' repository with the same
    credentials, and a registry keeps every blob a manifest it holds refers to, so probing
    each blob again would only add requests before ready."""
    from clipcy.storage.check import check_store

    try:
        readers = arc.layer_readers()
        readers.observer = fs.counters
        if not probe:
            return
        check_store(readers.store, [(str(la["digest"]), int(la["size"])) for la in arc.layers
                                    if la.get("size")])
    except ClipError as e:
        raise MountError(str(e)) from None


def _check_fetch_all(arc: Archive) -> None:
    """--fetch-all keeps every blob in the remote store's span cache: refuse it when there is
    none, or when the blobs would not fit (it would evict what it fetched, forever)."""
    from clipcy.storage.registry import RemoteStore

    store = arc.layer_readers().store
    if not isinstance(store, RemoteStore):
        return  # a layout directory: nothing to fetch
    if store.cache is None:
        raise MountError("--fetch-all keeps the blobs in the span cache: not with --no-cache "
                         "or --cache-max-mib 0")
    total = sum(int(la.get("size") or 0) for la in arc.layers)
    room = store.cache.max_bytes * 9 // 10  # eviction brings the cache down to 90%
    if total > room:
        raise MountError(f"--fetch-all: the image's layer blobs are {total >> 20} MiB, more than "
                         f"the span cache keeps ({room >> 20} MiB of --cache-max-mib "
                         f"{store.cache.max_bytes >> 20}): give it more room")


def _decoded_cache(remote: RemoteOptions | None) -> DecodedDiskCache | None:
    """The on-disk cache of decoded spans (storage.decodedcache): under the readers'
    --cache-dir, bounded by --decoded-cache-mib; none with --no-cache or a bound of 0."""
    from clipcy.storage.decodedcache import DecodedDiskCache, decoded_cache_dir
    from clipcy.storage.registry import RemoteOptions

    opts = remote or RemoteOptions()
    if not opts.cache or opts.decoded_cache_mib <= 0:
        return None
    return DecodedDiskCache(decoded_cache_dir(opts.cache_dir), opts.decoded_cache_mib << 20)


def _prepare(archive: str, mountpoint: str, storage: str | None, cache_mib: int,
             options: Sequence[str], remote: RemoteOptions | None,
             mkdir: bool = False,
             pre: PrefetchOptions | None = None,
             storage_checked: bool = False
             ) -> tuple[Session, Archive, ImageFS, list[int] | None]:
    fuse = binding()
    extra = [o for opt in options for o in opt.split(",") if o]
    # nonempty: fuse2's option, which libfuse3 rejects; it is clipcy's check that it lifts
    mp = check_mountpoint(mountpoint, nonempty="nonempty" in extra, mkdir=mkdir)
    if cache_mib < 0:
        raise MountError(f"--cache-mib must be >= 0, not {cache_mib}")
    from clipcy.archive.reader import open_archive
    from clipcy.fusemount.fs import ImageFS

    try:
        arc = open_archive(archive, storage=storage, remote=remote)
    except ClipError as e:
        raise MountError(str(e)) from None
    pre = pre or PrefetchOptions()
    if pre.record is not None:
        where = os.path.dirname(os.path.abspath(pre.record))
        if not os.path.isdir(where) or not os.access(where, os.W_OK):
            arc.close()
            raise MountError(f"cannot write the record {pre.record}: {where} is not a "
                             f"writable directory")
    if pre.record_seconds is not None and not pre.record_seconds > 0:
        arc.close()
        raise MountError(f"--record-seconds must be more than 0, not {pre.record_seconds}")
    try:
        positions = _replay_list(arc, pre)
    except MountError:
        arc.close()
        raise
    fs = ImageFS(arc, cache_mib << 20, _decoded_cache(remote))
    try:
        if pre.fetch_all:
            _check_fetch_all(arc)
        _check_storage(arc, fs, probe=not storage_checked)
    except MountError:
        arc.close()
        raise
    name = os.path.abspath(archive).replace(",", "_").replace("\\", "_")
    opts = ["ro", "default_permissions", f"fsname=clipcy:{name}", "subtype=clipcy"]
    opts += [o for o in extra if o != "nonempty"]
    try:
        session: Session = fuse.Session(fs, mp, ["-o", ",".join(opts)])
        session.mount()
    except OSError as e:
        arc.close()
        raise MountError(str(e)) from None
    return session, arc, fs, positions


def fork_and_serve(archive: str, mountpoint: str, storage: str | None,
                   cache_mib: int, options: Sequence[str], remote: RemoteOptions | None,
                   log_path: str | None, *, xattrs: bool = False,
                   mkdir: bool = False,
                   prefetch: PrefetchOptions | None = None,
                   storage_checked: bool = False) -> tuple[int, str]:
    """`clipctl mount` without -f: fork (this process has no threads yet, and the child
    needs no second interpreter start), serve in the child, return (its pid, its log) once
    the mount is ready; the child's one-line error otherwise."""
    logfd, path = _open_log(mountpoint, log_path)
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the mount process
        rc = 1
        try:
            os.close(rfd)
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(logfd, 1)
            os.dup2(logfd, 2)
            rc = serve(archive, mountpoint, storage, cache_mib, options, wfd, remote,
                       xattrs=xattrs, mkdir=mkdir, prefetch=prefetch,
                       storage_checked=storage_checked)
        except MountError:
            rc = 1  # already on the ready pipe
        except BaseException as e:  # noqa: BLE001 - the child must never return to the CLI
            log.error("mount process failed: %s", e, exc_info=True)
        finally:
            os._exit(rc)
    os.close(wfd)
    os.close(logfd)
    log_path = _name_log(mountpoint, path, log_path is not None, pid)
    with os.fdopen(rfd, "rb") as ready:
        answer = ready.readline().decode("utf-8", "replace").strip()
    if answer == "ok":
        return pid, log_path
    _, status = os.waitpid(pid, 0)
    if answer.startswith("error "):
        raise MountError(answer[6:])
    raise MountError(f"the mount process exited with status {os.waitstatus_to_exitcode(status)}"
                     f" before the mount was ready (log: {log_path})")


_CHILD = "import sys; del sys.path[0]; from clipcy.cli import main; sys.exit(main())"


def start(archive: str, mountpoint: str, storage_argv: Sequence[str] = (),
          cache_mib: int = DEFAULT_CACHE_MIB, options: Sequence[str] = (),
          log_path: str | None = None,
          timeout: float = 60.0, *, xattrs: bool = False,
          mkdir: bool = False,
          prefetch: PrefetchOptions | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Run the mount process in the background; (the process, its log) once the mount is
    ready."""
    rfd, wfd = os.pipe()
    # Not `python -m clipcy`: that puts the working directory first on sys.path, so a mount
    # started from a source checkout would import ./clipcy (no compiled modules) instead of
    # the installed package. The child drops that entry before importing anything.
    cmd = [sys.executable, "-c", _CHILD, "mount", "-f", "--ready-fd", str(wfd),
           "--cache-mib", str(cache_mib), archive, mountpoint]
    cmd += list(storage_argv)  # --layout, --storage and the remote options
    cmd += ["--xattrs"] if xattrs else []
    cmd += ["--mkdir"] if mkdir else []
    cmd += prefetch.argv() if prefetch is not None else []
    for o in options:
        cmd += ["-o", o]
    try:
        logfd, path = _open_log(mountpoint, log_path)
    except MountError:
        os.close(rfd)
        os.close(wfd)
        raise
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logfd, stderr=logfd,
                                pass_fds=(wfd,), start_new_session=True)
    finally:
        os.close(logfd)
    os.close(wfd)
    log_path = _name_log(mountpoint, path, log_path is not None, proc.pid)
    with os.fdopen(rfd, "rb") as ready:
        answer = ready.readline().decode("utf-8", "replace").strip()
    if answer == "ok":
        return proc, log_path
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    if answer.startswith("error "):
        raise MountError(answer[6:])
    raise MountError(f"the mount process exited with status {rc} before the mount was ready "
                     f"(log: {log_path})")
