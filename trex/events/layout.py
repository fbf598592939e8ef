"""Where the log's files live. Kept free of pydantic and pyarrow so ``trex sql`` starts fast."""
from __future__ import annotations

import os
from pathlib import Path


def segments_dir(home: str | os.PathLike) -> Path:
    return Path(home) / "log" / "segments"


def listing(segdir: Path) -> tuple[list[int], list[int]]:
    """(sealed segment numbers, open segment numbers); a jsonl beside its parquet counts as sealed."""
    sealed, open_ = [], []
    try:
        names = os.listdir(segdir)
    except FileNotFoundError:
        return [], []
    for name in names:
        stem, _, ext = name.partition(".")
        if not stem.isdigit():
            continue
        if ext == "parquet":
            sealed.append(int(stem))
        elif ext == "jsonl":
            open_.append(int(stem))
    sealed.sort()
    done = set(sealed)
    return sealed, sorted(n for n in open_ if n not in done)


def seg_path(segdir: Path, n: int, ext: str) -> Path:
    return segdir / f"{n:08d}.{ext}"


def valid_prefix(data: bytes) -> str:
    """The complete, CRC-valid lines at the start of an open segment, as text.

    Each line is ``CRC32 JSON-ARRAY\\n``; reading stops at the first line that is
    incomplete (a torn tail) or fails its CRC. JSON is not parsed here: DuckDB does that.
    """
    import zlib

    pos, n = 0, len(data)
    while pos < n:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        line = data[pos:nl]
        try:
            ok = len(line) > 9 and line[8:9] == b" " and int(line[:8], 16) == zlib.crc32(line[9:])
        except ValueError:
            ok = False
        if not ok:
            break
        pos = nl + 1
    return data[:pos].decode()
