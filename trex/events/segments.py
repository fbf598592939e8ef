"""Sealed segments: Parquet files with page checksums, written under a temp name and renamed."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trex.events.base import EventError
from trex.events.fsio import open_nofollow

SEQ_RANGES = "trex.seq_ranges"  # footer key: {search_id: [min seq, max seq]} of the segment

SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("search_id", pa.string()),
        ("seq", pa.int64()),
        ("event_id", pa.string()),
        ("type", pa.string()),
        ("schema_version", pa.int32()),
        ("recorded_at", pa.string()),
        ("causation_id", pa.string()),
        ("correlation_id", pa.string()),
        ("payload", pa.string()),
        ("prev_hash", pa.string()),
        ("hash", pa.string()),
    ]
)


class CorruptSegment(EventError):
    pass


def records_to_table(records: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=SCHEMA)


def concat(tables: list[pa.Table]) -> pa.Table:
    if not tables:
        return SCHEMA.empty_table()
    return pa.concat_tables(tables)


def ranges_of(records: list[dict]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in records:
        lo_hi = out.get(r["search_id"])
        if lo_hi is None:
            out[r["search_id"]] = [r["seq"], r["seq"]]
        else:
            lo_hi[0], lo_hi[1] = min(lo_hi[0], r["seq"]), max(lo_hi[1], r["seq"])
    return out


def write_parquet(path: Path, records: list[dict], metadata: dict[str, str] | None = None) -> None:
    """Write under a temp name (created without following a link), fsync, rename over ``path``."""
    table = records_to_table(records)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)  # left by a crash of a process with our pid; unlinking a link removes only the link
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with os.fdopen(fd, "wb") as f:
        pq.write_table(table, f, compression="zstd", write_page_checksum=True, row_group_size=64 * 1024)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # replaces a link at ``path`` itself, never its target


def write_sealed(path: Path, records: list[dict]) -> None:
    """A sealed segment, with each search's seq range in the footer (for reads after a position)."""
    write_parquet(path, records, metadata={SEQ_RANGES: json.dumps(ranges_of(records), separators=(",", ":"))})


def seq_ranges(path: Path) -> dict[str, tuple[int, int]]:
    """{search_id: (min seq, max seq)} of a sealed segment: from its footer, else from its columns."""
    try:
        meta = pq.read_metadata(path).metadata or {}
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise CorruptSegment(f"{path.name}: cannot be read ({e})") from None
    raw = meta.get(SEQ_RANGES.encode())
    if raw is not None:
        try:
            return {k: (int(v[0]), int(v[1])) for k, v in json.loads(raw).items()}
        except (ValueError, TypeError, KeyError, IndexError):
            pass  # a damaged key: fall back to the columns
    t = read_table(path, columns=["search_id", "seq"])
    return {k: (v[0], v[1]) for k, v in ranges_of(t.to_pylist()).items()}


def check_footer(path: Path) -> None:
    """Parquet files start and end with the magic ``PAR1``; a missing footer means a torn write."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if size < 12 or head != b"PAR1" or tail != b"PAR1":
        raise CorruptSegment(f"{path.name}: not a complete Parquet file (missing header/footer magic)")


def read_table(path: Path, columns: list[str] | None = None, filters=None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns, filters=filters, page_checksum_verification=True)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise CorruptSegment(f"{path.name}: cannot be read ({e})") from None


def _filters(search_id: str | None, after_seq: int = 0, until_seq: int | None = None):
    f = []
    if search_id is not None:
        f.append(("search_id", "=", search_id))
    if after_seq:
        f.append(("seq", ">", after_seq))
    if until_seq is not None:
        f.append(("seq", "<=", until_seq))
    return f or None


def read_records(path: Path, search_id: str | None = None, after_seq: int = 0,
                 until_seq: int | None = None) -> list[dict]:
    return read_table(path, filters=_filters(search_id, after_seq, until_seq)).to_pylist()


def read_rows(path: Path, search_id: str | None = None, after_seq: int = 0,
              until_seq: int | None = None) -> list[tuple]:
    """Rows as tuples in :data:`SCHEMA` order; column-wise conversion is ~5x faster than ``to_pylist``."""
    t = read_table(path, filters=_filters(search_id, after_seq, until_seq))
    return list(zip(*(col.to_pylist() for col in t.columns)))


def read_index_columns(path: Path, after_position: int = 0) -> list[dict]:
    cols = ["position", "search_id", "seq", "event_id", "hash"]
    t = read_table(path, columns=cols, filters=[("position", ">", after_position)] if after_position else None)
    return t.to_pylist()
