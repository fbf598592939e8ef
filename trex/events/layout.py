"""Where the log's files live. Kept free of pydantic and pyarrow so ``trex sql`` starts fast."""
from __future__ import annotations

import os
from pathlib import Path

from trex.events import records
from trex.events.errors import EventError, LinkRefused


def segments_dir(home: str | os.PathLike) -> Path:
    return Path(home) / "log" / "segments"


def listing(segdir: Path) -> tuple[list[int], list[int]]:
    """(sealed segment numbers, open segment numbers); a jsonl beside its parquet counts as sealed.

    A segment that is a symbolic link raises :class:`LinkRefused`: it is never read or written."""
    sealed, open_ = [], []
    try:
        entries = list(os.scandir(segdir))
    except FileNotFoundError:
        return [], []
    for e in entries:
        stem, _, ext = e.name.partition(".")
        if not stem.isdigit() or ext not in ("parquet", "jsonl"):
            continue
        if e.is_symlink():
            raise LinkRefused(f"segment {e.path} is a symbolic link: refused (trex never reads or writes "
                              "segments through links; replace it with the file itself)")
        if not e.is_file(follow_symlinks=False):  # a FIFO or a folder under a segment's name: never opened
            raise EventError(f"segment {e.path} is not a regular file: refused (move it out of the log)")
        (sealed if ext == "parquet" else open_).append(int(stem))
    sealed.sort()
    done = set(sealed)
    return sealed, sorted(n for n in open_ if n not in done)


def seg_path(segdir: Path, n: int, ext: str) -> Path:
    return segdir / f"{n:08d}.{ext}"


def open_segment_bodies(segdir: Path, n: int) -> list[bytes]:
    """The JSON bodies (arrays of event records) of open segment ``n``'s good records, decoded by
    the one scanner (:mod:`trex.events.records`). Damage raises :class:`CorruptLog`; a torn tail is left out."""
    path = seg_path(segdir, n, "jsonl")
    return records.scan(records.read_segment(path), path.name).bodies
