"""File operations of the log that never follow a link, and the append lock with a bounded wait."""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from pathlib import Path

from trex.events.errors import EventError, LinkRefused, LockTimeout

LOCK_TIMEOUT_S = float(os.environ.get("TREX_LOCK_TIMEOUT", "120"))


def _refuse(path, what: str = "written") -> LinkRefused:
    return LinkRefused(f"{path} is a symbolic link: refused (trex never {what} through a link under its home)")


def open_nofollow(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """``os.open`` with ``O_NOFOLLOW``: a link at ``path`` raises :class:`LinkRefused`."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(path, "writes" if flags & (os.O_WRONLY | os.O_RDWR) else "reads") from None
        raise


def check_dir(path: Path) -> None:
    """A folder trex writes into must not be a link."""
    if path.is_symlink():
        raise _refuse(path, "writes")


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist, and is never a link), write ``data``, fsync it and its folder."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


class AppendLock:
    """An exclusive ``flock`` on ``path``, opened without following a link, waited for at most
    ``timeout_s`` (then :class:`LockTimeout` says what it waited for). Re-entrant within a thread."""

    def __init__(self, path: Path, timeout_s: float | None = None):
        self.path = Path(path)
        self.timeout_s = LOCK_TIMEOUT_S if timeout_s is None else timeout_s
        self._tlock = threading.RLock()
        self._fd: int | None = None
        self._depth = 0

    def __enter__(self) -> "AppendLock":
        self._tlock.acquire()
        if self._depth:
            self._depth += 1
            return self
        try:
            self._fd = self._open()
            self._wait(self._fd)
        except BaseException:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._tlock.release()
            raise
        self._depth = 1
        return self

    def _open(self) -> int:
        try:
            fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
        except IsADirectoryError:
            raise EventError(f"the lock path {self.path} is a directory, not a file") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise EventError(f"the lock path {self.path} is not a regular file")
        return fd

    def _wait(self, fd: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"waited {self.timeout_s:g} s for the append lock {self.path}, held by another "
                        "process (TREX_LOCK_TIMEOUT sets the limit)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def __exit__(self, *exc) -> None:
        try:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None
        finally:
            self._tlock.release()
