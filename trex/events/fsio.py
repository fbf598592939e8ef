"""File operations of the log that never follow a link, and the append lock with a bounded wait."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import stat
import threading
import time
from pathlib import Path

from trex.events.errors import EventError, LinkRefused, LockTimeout

LOCK_TIMEOUT_S = 120.0  # the append lock's wait limit unless TREX_LOCK_TIMEOUT says otherwise
SAY_WAIT_AFTER_S = 1.0  # an append waiting longer than this on another process's lock says so, once


def lock_timeout_s() -> float:
    """The append lock's wait limit: ``TREX_LOCK_TIMEOUT`` (seconds, finite and >= 0), else 120. Read when
    the lock is taken (a reader that never appends is not refused for it), so a bad value is one line
    naming the variable (``nan``, ``inf`` and ``1e400`` waited forever; ``abc`` failed at import)."""
    raw = os.environ.get("TREX_LOCK_TIMEOUT")
    if raw is None:
        return LOCK_TIMEOUT_S
    try:
        x = float(raw)
    except ValueError:
        x = float("nan")
    if not (math.isfinite(x) and x >= 0):  # 0: never wait
        raise EventError(f"TREX_LOCK_TIMEOUT must be a number of seconds, 0 or more, got {raw!r}")
    return x


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
        self._timeout_s = timeout_s  # None: TREX_LOCK_TIMEOUT's, read when the lock is taken
        self._tlock = threading.RLock()
        self._fd: int | None = None
        self._depth = 0

    @property
    def timeout_s(self) -> float:
        return lock_timeout_s() if self._timeout_s is None else self._timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float | None) -> None:
        self._timeout_s = value

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
        return _open_lock(self.path)

    def _wait(self, fd: int) -> None:
        timeout_s = self.timeout_s
        start = time.monotonic()
        deadline = start + timeout_s
        delay = 0.001
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                now = time.monotonic()
                if not said and now - start >= min(SAY_WAIT_AFTER_S, timeout_s) and now < deadline:
                    said = True  # appenders take turns in milliseconds: only a real wait is worth a line
                    _say(f"trex: waiting up to {timeout_s:g} s for the append lock {self.path}, held by "
                         "another process")
                if now >= deadline:
                    raise LockTimeout(
                        f"waited {timeout_s:g} s for the append lock {self.path}, held by another "
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


# ------------------------------------------------------------------ folders and files under a home
def ensure_dir(base: Path, *parts: str) -> Path:
    """``base/parts...``, created where missing; ``base`` and every folder on the way must be a real
    folder, never a link (:class:`LinkRefused` names the first that is one). Returns the path."""
    cur = Path(base)
    check_dir(cur)
    cur.mkdir(parents=True, exist_ok=True)
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\x00" in part:
            raise EventError(f"{part!r} is not a folder name")
        cur = cur / part
        try:
            os.mkdir(cur)
        except FileExistsError:
            pass
        check_dir(cur)
        if not cur.is_dir():
            raise EventError(f"{cur} is in the way: trex needs a folder there")
    return cur


def check_not_link(path: Path) -> Path:
    """A path trex would write (or use as its own) must not be a link: :class:`LinkRefused` if it is."""
    if Path(path).is_symlink():
        raise _refuse(path, "writes")
    return Path(path)


def in_log_folder(path: str | os.PathLike, home: str | os.PathLike) -> bool:
    """Whether ``path`` is the home's ``log`` folder or lies in it, links and ``..`` resolved: no output a
    user names may land there (an export, a tree, a benchmark report)."""
    log_dir = (Path(home) / "log").resolve()
    target = Path(path).resolve()
    return target == log_dir or log_dir in target.parents


def check_output(path: str | os.PathLike, home: str | os.PathLike | None = None) -> Path:
    """A file a command writes where its user says (``export -o``, ``tree -o``): never inside the home's
    log, and only a new name or a regular file, which is replaced whole — a link, a pipe, a device or a
    folder there is refused (the write would replace or follow it). Raises :class:`EventError`."""
    from trex.events.errors import EventError

    path = Path(path)
    if home is not None:
        if in_log_folder(path, home):
            raise EventError(f"refusing to write {path} into the log's own folder ({Path(home) / 'log'})")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else \
            "not a regular file (a pipe, a device, a socket)"
        raise EventError(f"refusing to write to {path}: it is {what}, which the write would replace; name a file")
    return path


def unique_temp_beside(path: Path) -> tuple[int, Path]:
    """A new temp file beside ``path`` under a name nobody else holds (``mkstemp``: O_EXCL, random), for
    folders trex does not own: a fixed temp name there could be a user's file, unlinked to make room."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=Path(path).parent)
    mask = os.umask(0)  # mkstemp makes it 0600: the file a user asked for gets the usual mode
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)
    return fd, Path(tmp)


@contextlib.contextmanager
def output_file(path: str | os.PathLike, home: str | os.PathLike | None = None):
    """A binary file to write a user's output into (:func:`check_output`): a unique temp file beside
    ``path``, fsynced and renamed over it when the block ends (``path`` checked again just before), or
    removed if the block fails."""
    path = check_output(path, home)
    fd, tmp = unique_temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        check_output(path, home)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_output(path: str | os.PathLike, data: bytes, home: str | os.PathLike | None = None) -> None:
    """``data`` written whole to a user's output file (:func:`output_file`)."""
    with output_file(path, home) as f:
        f.write(data)


def _unlink_quietly(path: Path) -> None:
    """Remove a temp file of a write that failed (one already gone, or not ours to remove, is left)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def write_file_replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole: a new temporary file beside it (never through a link), fsync,
    rename over ``path``. A link at ``path`` is refused, not replaced."""
    path = check_not_link(Path(path))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)  # a crash of an earlier process with our pid; unlinking a link removes only the link
    try:
        write_new_file(tmp, data)
        check_not_link(path)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _lock_timeout_class():
    """:class:`LockTimeout` that is also ``filelock.Timeout`` (callers written for filelock catch it)."""
    global _LOCK_TIMEOUT
    if _LOCK_TIMEOUT is None:
        from filelock import Timeout

        class HomeLockTimeout(LockTimeout, Timeout):
            def __init__(self, message: str, lock_file: str):
                Exception.__init__(self, message)
                self._lock_file = lock_file
                self._holder = None

            def __str__(self) -> str:
                return self.args[0]

            def __reduce__(self):
                return (_make_lock_timeout, (self.args[0], self._lock_file))

        _LOCK_TIMEOUT = HomeLockTimeout
    return _LOCK_TIMEOUT


_LOCK_TIMEOUT = None


def _make_lock_timeout(message: str, lock_file: str):
    return _lock_timeout_class()(message, lock_file)


def _open_lock(path: Path) -> int:
    try:
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
    except IsADirectoryError:
        raise EventError(f"the lock path {path} is a directory, not a file") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise EventError(f"the lock path {path} is not a regular file")
    return fd


class HomeLock:
    """A lock file under a home, with ``filelock.FileLock``'s interface (``acquire(timeout=...)``,
    ``release()``, a context manager, ``is_locked``, ``lock_file``), that never follows a link: a link
    at its path is :class:`LinkRefused`. An exclusive ``flock``, released by the OS if the process dies.

    ``timeout``: seconds to wait (``-1``: no limit, filelock's default; ``0``: one try). A wait that runs
    out raises a :class:`LockTimeout` that is also ``filelock.Timeout``, saying what it waited for.
    Re-entrant within the thread that holds it."""

    def __init__(self, path: str | os.PathLike, timeout: float = -1):
        self.path = Path(path)
        self.timeout = timeout
        self._mx = threading.Lock()
        self._fd: int | None = None
        self._owner: int | None = None
        self._count = 0

    @property
    def lock_file(self) -> str:
        return str(self.path)

    @property
    def is_locked(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float | None = None, poll_interval: float = 0.05, *, blocking: bool = True):
        t = self.timeout if timeout is None else timeout
        if not blocking:
            t = 0
        me = threading.get_ident()
        with self._mx:
            if self._fd is not None and self._owner == me:
                self._count += 1
                return self
        fd = _open_lock(self.path)
        deadline = None if t is None or t < 0 else time.monotonic() + t
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise _lock_timeout_class()(
                            f"the lock {self.path} is held by another process (waited {t:g} s)", str(self.path)
                        ) from None
                    time.sleep(poll_interval if deadline is None else
                               max(0.0, min(poll_interval, deadline - time.monotonic())))
        except BaseException:
            os.close(fd)
            raise
        with self._mx:
            self._fd, self._owner, self._count = fd, me, 1
        return self

    def release(self, force: bool = False) -> None:
        with self._mx:
            if self._fd is None:
                return
            self._count = 0 if force else self._count - 1
            if self._count <= 0:
                fd, self._fd, self._owner, self._count = self._fd, None, None, 0
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)

    def __enter__(self) -> "HomeLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release(force=True)
        except Exception:
            pass


# ------------------------------------------------------------------ helpers for writers outside the log
def ensure_dir_under(home: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """``mkdir -p folder`` that never follows a link under ``home``: ``home`` and every folder from it
    down to ``folder`` must be a real folder (:class:`LinkRefused` names the first link). ``folder``
    must lie under ``home`` (compared without resolving links, so a link is seen, not followed)."""
    base, target = Path(os.path.abspath(home)), Path(os.path.abspath(folder))
    try:
        rel = target.relative_to(base)
    except ValueError:
        raise EventError(f"{folder} is not under the trex home {home}") from None
    ensure_dir(Path(home), *rel.parts)
    return Path(folder)


def ensure_dir_for(folder: str | os.PathLike, home: str | os.PathLike | None = None) -> Path:
    """:func:`ensure_dir_under` when ``folder`` lies under ``home``; otherwise (no home, or a place the
    caller chose outside it) ``folder`` is created where missing and must itself not be a link."""
    if home is not None:
        try:
            Path(os.path.abspath(folder)).relative_to(Path(os.path.abspath(home)))
        except ValueError:
            pass
        else:
            return ensure_dir_under(home, folder)
    return ensure_dir(Path(folder))


def write_file_under(home: str | os.PathLike, path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` under ``home`` whole and atomically, never through a
    link: the folders on the way are made with :func:`ensure_dir_under`, the file with
    :func:`write_file_replace` (a link at ``path`` is refused, not replaced)."""
    path = Path(path)
    ensure_dir_under(home, path.parent)
    write_file_replace(path, data.encode("utf-8") if isinstance(data, str) else data)
    return path


def write_file_once_under(home: str | os.PathLike, path: str | os.PathLike, data: bytes | str) -> Path:
    """:func:`write_file_under` for content-addressed files: a regular file already at ``path`` is kept
    (it holds the same bytes); a link there is refused."""
    path = Path(path)
    ensure_dir_under(home, path.parent)
    if check_not_link(path).is_file():
        return path
    write_file_replace(path, data.encode("utf-8") if isinstance(data, str) else data)
    return path


def fresh_dir_in(parent: str | os.PathLike, prefix: str) -> Path:
    """A new, empty folder inside ``parent`` (which must not be a link): ``mkdtemp``, whose ``mkdir``
    never follows a link. Fill it, then :func:`move_dir_into_place`."""
    import tempfile

    check_dir(Path(parent))
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def move_dir_into_place(tmp: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Rename the folder ``tmp`` to ``dest`` (same parent), replacing a real folder there; a link at
    ``dest`` is refused (and ``tmp`` removed), never followed nor replaced."""
    import shutil

    dest = Path(dest)
    try:
        check_not_link(dest)
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _say(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


class waited_lock:
    """Hold ``lock`` (a :class:`HomeLock`) for a ``with`` block, waiting at most ``timeout_s`` for it.
    When another process holds it, one line says what is waited for (``say``, default stderr); a wait
    that runs out raises a :class:`LockTimeout` (also ``filelock.Timeout``) naming the lock and ``what``."""

    def __init__(self, lock: HomeLock, timeout_s: float, what: str, say=None):
        self.lock, self.timeout_s, self.what, self.say = lock, float(timeout_s), what, say or _say

    def __enter__(self) -> HomeLock:
        try:
            self.lock.acquire(timeout=0)
            return self.lock
        except LockTimeout:
            pass
        self.say(f"trex: waiting up to {self.timeout_s:g} s for the lock {self.lock.path} ({self.what}), "
                 "held by another process")
        try:
            self.lock.acquire(timeout=self.timeout_s)
        except LockTimeout:
            raise _lock_timeout_class()(
                f"waited {self.timeout_s:g} s for the lock {self.lock.path} ({self.what}), still held by another "
                "process", str(self.lock.path)) from None
        return self.lock

    def __exit__(self, *exc) -> None:
        self.lock.release()


# ------------------------------------------------------------------ digests of sealed segments
# A sealed segment's SHA-256, recorded when it is sealed, in a file beside it (``00000001.sha256``
# for ``00000001.parquet``): one line ``sha256 <64 hex digits> <size in bytes>``. Parquet cannot hold
# a digest of itself (its footer is part of what must be checked), and DuckDB does not verify Parquet
# page checksums, so ``trex sql`` checks a segment's bytes against this before DuckDB reads it.
DIGEST_EXT = "sha256"


def digest_path(segment: Path) -> Path:
    return Path(segment).with_suffix("." + DIGEST_EXT)


def sha256_of(data: bytes | memoryview) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    """(hex SHA-256, size) of a file, read without following a link (hashlib releases the GIL: threads
    hashing several files run in parallel)."""
    import hashlib

    h = hashlib.sha256()
    size = 0
    fd = open_nofollow(path, os.O_RDONLY)
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return h.hexdigest(), size


def read_file_nofollow(path: str | os.PathLike) -> bytes:
    """The whole file, read without following a link."""
    fd = open_nofollow(path, os.O_RDONLY)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def write_digest(segment: Path, hexdigest: str, size: int) -> None:
    """Record ``segment``'s digest beside it, whole (temp file, fsync, rename; never through a link)."""
    write_file_replace(digest_path(segment), f"sha256 {hexdigest} {size}\n".encode())


class DigestUnreadable(EventError):
    """A digest file exists but does not hold a digest."""


def read_digest(segment: Path) -> tuple[str, int] | None:
    """(hex SHA-256, size) recorded for ``segment``, or None if it has no digest file (sealed by a trex
    from before digests). A digest file that is a link raises :class:`LinkRefused`; one that does not
    hold a digest raises :class:`DigestUnreadable`."""
    p = digest_path(segment)
    try:  # non-blocking: a FIFO planted at the name must not hang every reader
        fd = open_nofollow(p, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DigestUnreadable(f"segment {Path(segment).name}: its digest file {p.name} cannot be read "
                               f"({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DigestUnreadable(f"segment {Path(segment).name}: its digest file {p.name} is not a regular file")
        raw = os.read(fd, 200)
    finally:
        os.close(fd)
    parts = raw.split()
    if (len(parts) != 3 or parts[0] != b"sha256" or len(parts[1]) != 64 or not raw.endswith(b"\n")
            or not parts[2].isdigit()):
        raise DigestUnreadable(f"segment {Path(segment).name}: its digest file {p.name} is damaged "
                               "(not `sha256 HEX SIZE`)")
    try:
        int(parts[1], 16)
    except ValueError:
        raise DigestUnreadable(f"segment {Path(segment).name}: its digest file {p.name} is damaged "
                               "(not `sha256 HEX SIZE`)") from None
    return parts[1].decode(), int(parts[2])
