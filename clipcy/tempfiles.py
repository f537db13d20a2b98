"""Temp files that an interrupt cannot leave behind.

A signal's exception (KeyboardInterrupt, or SIGTERM's Terminated) is raised between
bytecodes, e.g. as soon as os.open or os.close returns, or as soon as tempfile.mkstemp
returns and before its result is assigned: `fd, tmp = mkstemp()` can leave both an open fd
and a file whose name the caller never learnt, whether or not it sits inside a `try`.

TempFile picks the name first (nothing exists yet), then creates the file with O_EXCL and
holds its fd in a list filled inside the C call that opens it (call_held: list.extend over
starmap, no bytecode between the two), as extract.Fds does. So whatever point an interrupt
lands on, discard() knows the name and every fd: it closes them and removes the file. It
never raises OSError (it runs while another exception is on its way).
"""

from __future__ import annotations

import os
from itertools import starmap

TYPE_CHECKING = False  # typing's constant, without importing typing at start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(
    os, "O_NOFOLLOW", 0)


def call_held(held: list[int], make_fd: Callable[..., int], *args: Any) -> int:
    """make_fd(*args) (os.open, os.dup, os.memfd_create...), the fd it returns appended to
    held inside the call (no bytecode between the two); the fd."""
    held.extend(starmap(make_fd, (args,)))
    return held[-1]


def open_held(held: list[int], path: str | os.PathLike[str], flags: int,
              mode: int = 0o777) -> int:
    """os.open, its fd appended to held inside the call (no bytecode between the two)."""
    return call_held(held, os.open, path, flags, mode)


def close_held(held: list[int]) -> None:
    """Close every fd in held, each removed before it is closed (never closed twice);
    raises no OSError, and closes the rest even if interrupted between two."""
    try:
        while held:
            fd = held[-1]
            del held[-1]  # no bytecode between this and the close
            try:
                os.close(fd)
            except OSError:
                pass
    finally:
        if held:
            close_held(held)


class TempFile:
    """A new file in directory, named prefix + 16 random hex digits + suffix.

        tmp = TempFile(directory, ".name.", ".tmp")  # opens nothing
        try:
            fd = tmp.create()
            ...write...
            tmp.close()
            os.replace(tmp.path, dest)
        except BaseException:
            tmp.discard()
            raise
    """

    __slots__ = ("path", "fds", "made")

    def __init__(self, directory: str | os.PathLike[str], prefix: str = "",
                 suffix: str = "") -> None:
        self.path = os.path.join(os.fspath(directory), f"{prefix}{os.urandom(8).hex()}{suffix}")
        self.fds: list[int] = []
        self.made = False  # set before the fd leaves self.fds: the file is this one's

    def create(self, mode: int = 0o600) -> int:
        """Create the file (O_EXCL, not following a symlink); its fd, open for reading and
        writing until close() or discard()."""
        return open_held(self.fds, self.path, _FLAGS, mode)

    def close(self) -> None:
        """Close the fd (its error raised); the file stays until replaced or discarded."""
        fds = self.fds
        while fds:
            self.made = True
            fd = fds[-1]
            del fds[-1]  # no bytecode between this and the close: never closed twice
            os.close(fd)

    def discard(self) -> None:
        """Close the fd if still open and remove the file if this made it (not another's of
        the same name, should create() have failed); raises no OSError. Safe to call again,
        and after the file was renamed away."""
        try:
            while self.fds:
                try:
                    self.close()
                except OSError:
                    pass
        finally:  # the file goes even if a second interrupt lands in the close
            if self.made or self.fds:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
