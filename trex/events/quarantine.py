"""``verify --repair`` for damage: damaged records of the open segment are moved to
``HOME/log/quarantine/`` — never deleted — and the segment keeps every good record, byte for byte.

A quarantine file is named ``<segment>.at-<byte offset>.damaged`` and holds the damaged bytes
exactly as they were (readable for forensics). The segment is rewritten under a temp name with
its header, its good records and any torn tail, fsynced and renamed over the original; the
quarantine files are durable before that rename.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trex.events import records
from trex.events.fsio import check_dir, fsync_dir, write_new_file


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
    if not qdir.is_dir():
        qdir.mkdir()
        fsync_dir(log.dir)
    moved = []
    for d in sc.damage:
        q = qdir / f"{path.name}.at-{d.offset}.damaged"
        chunk = data[d.offset:d.end]
        if os.path.lexists(q):  # an earlier repair that crashed before its rename: same bytes, keep it
            if q.is_symlink() or q.read_bytes() != chunk:
                q = qdir / f"{path.name}.at-{d.offset}.{os.getpid()}.damaged"
                if os.path.lexists(q):
                    os.unlink(q)
                write_new_file(q, chunk)
        else:
            write_new_file(q, chunk)
        moved.append(Quarantined(path.name, d.offset, d.end - d.offset, d.reason, q))
    if sc.version is None:  # the header itself was damaged: nothing in the segment could be read
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
