"""Where the log's files live. Kept free of pydantic and pyarrow so ``trex sql`` starts fast."""
from __future__ import annotations

import os
import re
from pathlib import Path

from trex.events import records
from trex.events.errors import EventError, LinkRefused


_SEGMENT_NAME = re.compile(r"([0-9]{8}|[1-9][0-9]{8,})\.(parquet|jsonl)", re.ASCII)  # what seg_path writes, exactly


# what a crash can leave: a Parquet seal's temp file (``.tmp<pid>``), a repair's temp file
_LEFTOVER_NAME = re.compile(r"([0-9]{8}|[1-9][0-9]{8,})\.(parquet\.tmp[0-9]+|jsonl\.repair\.tmp)", re.ASCII)


def leftovers(segdir: Path, sealed: list[int]) -> list[Path]:
    """Files a crash left in the segments folder, to remove: a segment's jsonl beside its parquet (a
    crash in the middle of sealing) and the temp files of a seal or repair — by the exact names trex
    writes, and only files or links (unlinking a link removes the link). An operator's ``1.jsonl`` or
    ``0001.jsonl`` is not trex's and stays; a folder under a temp name is left alone, not unlinked."""
    done = set(sealed)
    out = []
    try:
        entries = list(os.scandir(segdir))
    except FileNotFoundError:
        return []
    for e in entries:
        m = _SEGMENT_NAME.fullmatch(e.name)
        ours = (m is not None and m.group(2) == "jsonl" and int(m.group(1)) in done and int(m.group(1))) \
            or _LEFTOVER_NAME.fullmatch(e.name) is not None
        if ours and (e.is_symlink() or e.is_file(follow_symlinks=False)):
            out.append(Path(e.path))
    return out


def segments_dir(home: str | os.PathLike) -> Path:
    return Path(home) / "log" / "segments"


def quarantine_note(home: str | os.PathLike) -> str | None:
    """What a reader says (on stderr) while ``HOME/log/quarantine`` holds anything: records that
    ``trex verify --repair`` moved out of the log are not in what it reads. Names only, nothing read or
    followed (``verify`` counts the records)."""
    qdir = Path(home) / "log" / "quarantine"
    try:
        names = os.listdir(qdir) if os.path.isdir(qdir) and not os.path.islink(qdir) else []
    except OSError:
        names = []
    if not names:
        return None
    return (f"note: {qdir} holds {len(names)} file(s) of damaged records that repair moved out of the log: "
            "their events are not in what follows (`trex verify` lists them)")


class SegmentMissing(EventError):
    """A segment number between the first and the last is not there: its events are gone."""


def missing(sealed: list[int], open_: list[int], limit: int = 10) -> tuple[list[int], int]:
    """(the first ``limit`` segment numbers absent from 1 .. the last, how many are absent): segments are
    numbered from 1 and each seal opens the next, so a gap is a segment deleted or moved, never a state
    trex leaves. Linear in the segments there are, whatever the numbers (a stray 99999999.jsonl)."""
    first, count, expected = [], 0, 1
    for n in sorted(set(sealed) | set(open_)):
        if n > expected:
            first.extend(range(expected, min(n, expected + limit - len(first))))
            count += n - expected
        expected = n + 1
    return first[:limit], count


def listing(segdir: Path, allow_missing: bool = False) -> tuple[list[int], list[int]]:
    """(sealed segment numbers, open segment numbers); a jsonl beside its parquet counts as sealed.

    A segment that is a symbolic link raises :class:`LinkRefused`: it is never read or written. A
    segment missing between the first and the last raises :class:`SegmentMissing` (readers would
    otherwise return the events around it, exit 0) unless ``allow_missing`` (``trex verify`` lists it)."""
    sealed, open_ = [], []
    for d in (segdir.parent, segdir):  # HOME/log and HOME/log/segments: a link would read another home's log
        if d.is_symlink():
            raise LinkRefused(f"{d} is a symbolic link: refused (trex never reads or writes the log through "
                              "links; replace it with the folder itself)")
    try:
        entries = list(os.scandir(segdir))
    except FileNotFoundError:
        return [], []
    for e in entries:
        m = _SEGMENT_NAME.fullmatch(e.name)
        if m is None or not int(m.group(1)):  # only names trex writes: '1.parquet', '٣.jsonl' and segment 0
            continue  # (numbering starts at 1) must not alias a segment
        stem, ext = m.group(1), m.group(2)
        if e.is_symlink():
            raise LinkRefused(f"segment {e.path} is a symbolic link: refused (trex never reads or writes "
                              "segments through links; replace it with the file itself)")
        if not e.is_file(follow_symlinks=False):  # a FIFO or a folder under a segment's name: never opened
            raise EventError(f"segment {e.path} is not a regular file: refused (move it out of the log)")
        (sealed if ext == "parquet" else open_).append(int(stem))
    sealed.sort()
    done = set(sealed)
    open_ = sorted(n for n in open_ if n not in done)
    gone, count = missing(sealed, open_, limit=1) if not allow_missing else ([], 0)
    if count:
        raise SegmentMissing(f"segment {gone[0]:08d} is missing from {str(segdir)!r}"
                             + (f" (and {count - 1} more)" if count > 1 else "")
                             + ": the events it held are not in the log; restore it (`trex verify` lists the damage)")
    return sealed, open_


def seg_path(segdir: Path, n: int, ext: str) -> Path:
    return segdir / f"{n:08d}.{ext}"


def open_segment_bodies(segdir: Path, n: int) -> list[bytes]:
    """The JSON bodies (arrays of event records) of open segment ``n``'s good records, decoded by
    the one scanner (:mod:`trex.events.records`). Damage raises :class:`CorruptLog`; a torn tail is left out."""
    path = seg_path(segdir, n, "jsonl")
    return records.scan(records.read_segment(path), path.name).bodies
