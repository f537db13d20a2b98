"""`clipctl stats MOUNTPOINT`: a live mount's counters, asked of its process.

The mount's tree stays exactly the image, so the counters are not files in it: the mount
process answers on a Unix socket in the abstract namespace named after the mount's device
number (`\\0clipcy-stats/MAJOR:MINOR`, the st_dev of the mountpoint, unique among the live
mounts of the machine). Abstract sockets leave no file behind when the process dies, need no
writable directory and have no path-length limit; the server answers only its own user and
root (SO_PEERCRED). Asking: connect, read one JSON document until EOF.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from clipcy.errors import MountError

log = logging.getLogger("clipcy.mount")

__all__ = ["query", "serve_stats", "socket_name"]

ANSWER_LIMIT = 1 << 20
TIMEOUT = 10.0


def socket_name(dev: int) -> bytes:
    return f"\0clipcy-stats/{os.major(dev)}:{os.minor(dev)}".encode()


def serve_stats(dev: int, answer: Callable[[], dict[str, Any]]) -> socket.socket:
    """Answer `clipctl stats` for the mount on device dev, on a daemon thread, until the
    process ends. Returns the listening socket (close it to stop)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(socket_name(dev))
    except OSError as e:
        sock.close()
        raise MountError(f"cannot open the stats socket: {e.strerror or e}") from None
    sock.listen(8)
    me = os.getuid()

    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed
            try:
                conn.settimeout(TIMEOUT)
                cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                       struct.calcsize("3i"))
                uid = struct.unpack("3i", cred)[1]
                if uid not in (me, 0):
                    conn.sendall(json.dumps({"error": "not your mount"}).encode())
                else:
                    conn.sendall(json.dumps(answer(), sort_keys=True).encode())
            except Exception as e:  # noqa: BLE001 - a client going away must not stop the loop
                log.info("stats: %s", e)
            finally:
                conn.close()

    threading.Thread(target=loop, name="clipcy-stats", daemon=True).start()
    return sock


def query(mountpoint: str) -> dict[str, Any]:
    """The counters of the clipcy mount at mountpoint, or MountError in one line."""
    from clipcy.fusemount.service import FSTYPE, is_mounted, stale_error

    if not is_mounted(mountpoint, FSTYPE):
        if not os.path.isdir(mountpoint):
            raise MountError(f"mountpoint {mountpoint} does not exist or is not a directory")
        raise MountError(f"{mountpoint} is not a clipcy mount")
    try:
        os.statvfs(mountpoint)  # statfs reaches the mount's process (stat may be cached)
        dev = os.stat(mountpoint).st_dev
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise stale_error(mountpoint) from None
        raise MountError(f"cannot stat {mountpoint}: {e.strerror or e}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(TIMEOUT)
    try:
        try:
            sock.connect(socket_name(dev))
        except OSError as e:
            raise MountError(f"{mountpoint}: its mount process does not answer ({e.strerror or e}"
                             "; a mount by an older clipcy, or one in another network "
                             "namespace)") from None
        chunks = []
        size = 0
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > ANSWER_LIMIT:
                    raise MountError(f"{mountpoint}: the stats answer is too large")
        except OSError as e:
            raise MountError(f"{mountpoint}: no stats answer: {e.strerror or e}") from None
    finally:
        sock.close()
    try:
        doc = json.loads(b"".join(chunks))
    except ValueError:
        raise MountError(f"{mountpoint}: the mount process's stats answer is not JSON") from None
    if not isinstance(doc, dict):
        raise MountError(f"{mountpoint}: the mount process's stats answer is not an object")
    if "error" in doc:
        raise MountError(f"{mountpoint}: {doc['error']}")
    return doc
