"""``verify --repair`` for damage: damaged records of the open segment are moved to
``HOME/log/quarantine/`` — never deleted — and the segment keeps every good record, byte for byte.

A quarantine file is named ``<segment>.at-<byte offset>.damaged`` (``<segment>.at-0.header.damaged``
for a damaged segment header) and holds the damaged bytes exactly as they were (readable for
forensics). The segment is rewritten under a temp name with its header (a damaged v2 header is
written anew), its good records and any torn tail, fsynced and renamed over the original; the
quarantine files are durable before that rename. :func:`quarantine_files` describes what the
folder holds, for ``trex verify``.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from trex.events import records
from trex.events.base import EventError
from trex.events.errors import LinkRefused
from trex.events.fsio import check_dir, fsync_dir, open_nofollow, write_new_file


@dataclass(frozen=True)
class Quarantined:
    segment: str
    offset: int
    length: int
    reason: str
    file: Path

    def __str__(self) -> str:
        return (f"quarantined {self.length} damaged bytes of {self.segment} at byte {self.offset} "
                f"({self.reason}) to {self.file}")


def quarantine_damage(log) -> list[Quarantined]:
    """Move the damaged records of the log's open segment(s) aside (under the append lock)."""
    log._ensure()
    out: list[Quarantined] = []
    with log._lock:
        sealed, open_ = log._listing()
        for n in open_:
            if n in sealed:
                continue
            out.extend(_segment(log, log.seg_path(n, "jsonl")))
        if out:
            log._index = type(log._index)()  # offsets changed: catch up from scratch
    return out


def _segment(log, path: Path) -> list[Quarantined]:
    data = records.read_segment(path)
    sc = records.scan(data, path.name, salvage=True)
    if not sc.damage:
        return []
    qdir = log.dir / "quarantine"
    check_dir(qdir)
    if not os.path.lexists(qdir):
        qdir.mkdir()
        fsync_dir(log.dir)
    elif not stat.S_ISDIR(os.lstat(qdir).st_mode):
        raise EventError(f"cannot quarantine the damage of {path.name}: {qdir} is not a folder "
                         "(move it away; nothing was changed)")
    moved = []
    for d in sc.damage:
        kind = ".header" if d.offset == 0 and d.reason.startswith(records.HEADER_DAMAGE) else ""
        chunk = data[d.offset:d.end]
        q = qdir / f"{path.name}.at-{d.offset}{kind}.damaged"
        if not _holds(q, chunk):  # else: an earlier repair that crashed before its rename; keep it
            i = 1
            while os.path.lexists(q):  # something else under the name (a link, a FIFO, other bytes)
                q = qdir / f"{path.name}.at-{d.offset}{kind}.{i}.damaged"
                i += 1
            write_new_file(q, chunk)
        moved.append(Quarantined(path.name, d.offset, d.end - d.offset, d.reason, q))
    if sc.version is None:  # a damaged header and not one record after it: nothing to keep
        keep = b""
    else:
        head = records.HEADER_V2 if sc.version == 2 else b""
        keep = head + b"".join(data[a:b] for a, b in sc.good) + (data[len(data) - sc.torn:] if sc.torn else b"")
    tmp = path.with_name(path.name + ".repair.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    write_new_file(tmp, keep)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return moved


def _holds(q: Path, chunk: bytes) -> bool:
    """Whether ``q`` is a regular file holding exactly ``chunk`` (never opening a link, FIFO or device)."""
    try:
        st = os.lstat(q)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != len(chunk):
        return False
    try:
        with os.fdopen(open_nofollow(q, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            return f.read(len(chunk) + 1) == chunk
    except (OSError, LinkRefused):
        return False


_NAME = re.compile(r"(?P<segment>\d{8}\.jsonl)\.at-(?P<offset>\d+)(?P<header>\.header)?(?:\.\d+)?\.damaged")


@dataclass(frozen=True)
class QuarantineFile:
    """A file of ``HOME/log/quarantine``, as ``trex verify`` reports it."""

    name: str
    path: Path
    size: int
    records: int  # damaged records it holds (newline-ended runs; a damaged segment header not counted)
    segment: str | None  # the segment and byte it was moved out of (None: a name repair does not write)
    offset: int | None
    header: bool  # holds a damaged segment header
    regular: bool = True  # False: a link (never followed), a folder, ... (not written by repair)

    def as_dict(self) -> dict:
        return {"file": str(self.path), "records": self.records, "bytes": self.size, "segment": self.segment,
                "offset": self.offset, "header": self.header, "regular_file": self.regular}


def quarantine_files(log_dir: Path) -> list[QuarantineFile]:
    """What the quarantine folder holds, never following a link (a link is listed as one)."""
    qdir = log_dir / "quarantine"
    if not os.path.isdir(qdir) or os.path.islink(qdir):
        return []
    out = []
    for name in sorted(os.listdir(qdir)):
        p = qdir / name
        m = _NAME.fullmatch(name)
        seg, off, header = (m["segment"], int(m["offset"]), bool(m["header"])) if m else (None, None, False)
        st = os.lstat(p)
        if not stat.S_ISREG(st.st_mode):
            out.append(QuarantineFile(name, p, 0, 0, seg, off, header, regular=False))
            continue
        try:
            with os.fdopen(open_nofollow(p, os.O_RDONLY), "rb") as f:
                data = f.read()
        except LinkRefused:  # replaced by a link since the lstat
            out.append(QuarantineFile(name, p, 0, 0, seg, off, header, regular=False))
            continue
        runs = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        if header:
            runs = max(0, runs - 1)  # the header's own line (one run, if its newline was lost)
            if not runs and len(data) > len(records.HEADER_V2):
                runs = 1  # bytes past a header's length held records whose line ends are gone (a zeroed page)
        out.append(QuarantineFile(name, p, len(data), runs, seg, off, header))
    return out
