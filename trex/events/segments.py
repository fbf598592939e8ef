"""Sealed segments: Parquet files with page checksums, written under a temp name and renamed, each
with its SHA-256 recorded beside it (:func:`trex.events.fsio.write_digest`) before it is renamed into place.

Readers check a sealed segment's bytes against its digest before they trust them (once per process
per file: :func:`check_digest`); a segment sealed before digests existed is checked whole instead
(:func:`verify_whole`: page checksums, every event's hash, positions, the footer's statistics)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trex.events.base import EventError
from trex.events.fsio import (DigestUnreadable, digest_path, fsync_dir, open_nofollow, read_digest, read_file_nofollow, sha256_file,
                              sha256_of, write_digest)

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


def _one_line(e: BaseException) -> str:
    """pyarrow's messages run to several lines (thrift's, page headers'): one line of them."""
    return " ".join(str(e).split())[:300] or type(e).__name__


def _damaged(path: Path, why: str) -> CorruptSegment:
    return CorruptSegment(f"segment {Path(path).name}: damaged: {why}")


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


def write_parquet(path: Path, records: list[dict], metadata: dict[str, str] | None = None,
                  digest: bool = False, outside: bool = False) -> None:
    """Write under a temp name (created without following a link), fsync, rename over ``path``.

    ``digest``: first record the file's SHA-256 beside it (what a sealed segment gets), so that no
    reader ever sees the segment without its digest. ``outside``: ``path`` is in a folder trex does not
    own (an export): written through :func:`trex.events.fsio.output_file` — a fresh unique temp name,
    never a fixed name a user's file could hold, and only a new name or a regular file replaced."""
    table = records_to_table(records)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    if outside:
        from trex.events.fsio import output_file

        with output_file(path) as f:
            pq.write_table(table, f, compression="zstd", write_page_checksum=True, row_group_size=64 * 1024)
        return
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)  # left by a crash of a process with our pid; unlinking a link removes only the link
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with os.fdopen(fd, "wb") as f:
        pq.write_table(table, f, compression="zstd", write_page_checksum=True, row_group_size=64 * 1024)
        f.flush()
        os.fsync(f.fileno())
    if digest:
        write_digest(path, *sha256_file(tmp))  # the bytes as written; a crash before the rename leaves
        # a digest without its segment, which the next seal of the same segment replaces
    os.replace(tmp, path)  # replaces a link at ``path`` itself, never its target


def write_sealed(path: Path, records: list[dict]) -> None:
    """A sealed segment, with each search's seq range in the footer (for reads after a position)."""
    write_parquet(path, records, metadata={SEQ_RANGES: json.dumps(ranges_of(records), separators=(",", ":"))},
                  digest=True)


def seq_ranges(path: Path) -> dict[str, tuple[int, int]]:
    """{search_id: (min seq, max seq)} of a sealed segment: from its footer, else from its columns.
    The segment is checked first (:func:`check_digest`): readers skip segments by these ranges, so a
    damaged footer must fail here, not hide events."""
    check_digest(path)
    try:
        meta = pq.read_metadata(path).metadata or {}
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise _damaged(path, f"cannot be read ({_one_line(e)})") from None
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
        raise _damaged(path, "not a complete Parquet file (missing header/footer magic)")


def read_table(path: Path, columns: list[str] | None = None, filters=None) -> pa.Table:
    check_digest(path)
    try:
        return pq.read_table(path, columns=columns, filters=filters, page_checksum_verification=True)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise _damaged(path, f"cannot be read ({_one_line(e)})") from None


# ------------------------------------------------------------------ integrity of sealed segments
_CHECKED: dict[tuple, bool] = {}  # (path, dev, ino, size, mtime_ns, ctime_ns) -> has a digest (checked in this process)


def _stat_key(path: Path) -> tuple:
    st = os.stat(path)
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def check_digest(path: Path) -> bool:
    """Check a sealed segment before its bytes are trusted (once per process for the same file: same
    inode, size, mtime and ctime): against the digest recorded when it was sealed, or, for a segment
    without one (sealed by a trex from before digests) or whose digest file is damaged, whole
    (:func:`verify_whole`: slower, but nothing in its footer is trusted unchecked). Returns whether it
    has a usable digest; damage raises :class:`CorruptSegment` naming the segment."""
    path = Path(path)
    key = _stat_key(path)
    known = _CHECKED.get(key)
    if known is not None:
        return known
    try:
        want = read_digest(path)
    except DigestUnreadable:
        want = None  # `trex verify` reports the digest file; the segment itself is checked whole
    if want is not None:
        got = sha256_file(path)
        if got != want:
            raise _damaged(path, f"its bytes do not match the digest recorded when it was sealed "
                                 f"({digest_path(path).name}; the segment or that file changed)")
    else:
        check_whole(path)
    _CHECKED[key] = want is not None
    return want is not None


def check_whole(path: Path, data: bytes | None = None) -> int:
    """A segment without a digest, checked whole as both of its readers read it: pyarrow
    (:func:`verify_whole`) and DuckDB (:func:`trex.events.sql.whole_check`: the column types it reads
    and the statistics it prunes by). A digest recorded after this vouches for the bytes to both."""
    n = verify_whole(path, data)
    from trex.events.sql import SqlFailed, whole_check

    try:
        whole_check(path)
    except SqlFailed as e:
        raise CorruptSegment(str(e).removesuffix(" (nothing was read; `trex verify` lists the damage)")) from None
    return n


def verify_whole(path: Path, data: bytes | None = None) -> int:
    """Check a sealed segment that has no digest, whole: that it reads with every page checksum right,
    has the log's columns, positions consecutive, every event's hash right (recomputed: the hash covers
    every field but the position), each search's seq range as its footer says, and row-group statistics
    that agree with the data (DuckDB prunes by them). ``data``: the file's bytes if already read.
    Returns the number of events; damage raises :class:`CorruptSegment` naming the segment."""
    from trex.events.envelope import chain_hash

    path = Path(path)
    if data is None:
        data = read_file_nofollow(path)
    try:
        pf = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
        md = pf.metadata
        if (pf.schema_arrow.remove_metadata() != SCHEMA
                or [md.schema.column(i).path for i in range(md.num_columns)] != SCHEMA.names):
            raise _damaged(path, "its columns are not the log's")
        meta = md.metadata or {}  # the key-value metadata readers use (not the copy inside ARROW:schema)
        ranges: dict[str, list[int]] = {}
        position = None
        n = 0
        for g in range(md.num_row_groups):
            t = pf.read_row_group(g)
            if t.num_rows != md.row_group(g).num_rows:
                raise _damaged(path, f"row group {g} holds {t.num_rows} rows, its footer says {md.row_group(g).num_rows}")
            cols = [c.to_pylist() for c in t.columns]
            _check_stats(path, md.row_group(g), t, md.schema)
            for row in zip(*cols):
                (pos, sid, seq, eid, typ, ver, at, cause, corr, payload, prev, h) = row
                if position is not None and pos != position + 1:
                    raise _damaged(path, f"position {pos} follows {position}")
                position = pos
                if h != chain_hash(prev, eid, sid, seq, typ, ver, at, cause, corr, payload):
                    raise _damaged(path, f"the event at position {pos} does not match its hash")
                lo_hi = ranges.get(sid)
                if lo_hi is None:
                    ranges[sid] = [seq, seq]
                else:
                    lo_hi[0], lo_hi[1] = min(lo_hi[0], seq), max(lo_hi[1], seq)
                n += 1
    except CorruptSegment:
        raise
    except (OSError, pa.ArrowException, ValueError, TypeError, KeyError, IndexError) as e:
        raise _damaged(path, f"cannot be read ({_one_line(e)})") from None
    if n != md.num_rows:
        raise _damaged(path, f"{n} rows read, its footer says {md.num_rows}")
    raw = meta.get(SEQ_RANGES.encode())
    if raw is not None:
        try:
            footer = {k: [int(v[0]), int(v[1])] for k, v in json.loads(raw).items()}
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise _damaged(path, f"its footer's {SEQ_RANGES} cannot be read") from None
        if footer != ranges:
            raise _damaged(path, f"its events do not match the seq ranges in its footer")
    return n


def _check_stats(path: Path, rg, t: pa.Table, schema) -> None:
    """Row-group statistics must agree with the data: readers (DuckDB, pyarrow filters) skip row groups by
    them, so a damaged statistic would hide rows without an error. No bloom filter or page index is written."""
    import pyarrow.compute as pc

    for j in range(rg.num_columns):
        c = rg.column(j)
        name = c.path_in_schema
        if c.physical_type != schema.column(j).physical_type:  # pyarrow aborts the process on its statistics
            raise _damaged(path, f"column {name}'s chunk is of type {c.physical_type}, its schema says "
                                 f"{schema.column(j).physical_type}")
        if c.bloom_filter_offset is not None or c.has_column_index or c.has_offset_index:
            raise _damaged(path, f"column {name} has an index trex never writes")
        s = c.statistics
        if s is None:
            continue
        col = t.column(name)
        if s.null_count is not None and s.null_count != col.null_count:
            raise _damaged(path, f"the statistics of column {name} do not match its data")
        if s.has_min_max:
            mm = pc.min_max(col)
            if (mm["min"].as_py(), mm["max"].as_py()) != (s.min, s.max):
                raise _damaged(path, f"the statistics of column {name} do not match its data")


def record_digests(segdir: Path, sealed: list[int], skip_damaged: bool = False) -> tuple[list[str], list[str]]:
    """Give each sealed segment without a digest (sealed by a trex from before digests) its digest, after
    :func:`verify_whole` has checked the very bytes it hashes. Returns (names digested, damage found); a
    damaged segment gets no digest and raises :class:`CorruptSegment`, or with ``skip_damaged`` is listed.
    Never touches a segment itself."""
    from trex.events import layout

    done, damaged = [], []
    for n in sealed:
        path = layout.seg_path(segdir, n, "parquet")
        try:
            if read_digest(path) is not None:
                continue
        except DigestUnreadable:
            pass
        try:
            data = read_file_nofollow(path)
        except FileNotFoundError:
            continue
        try:
            check_whole(path, data)
        except CorruptSegment as e:
            if not skip_damaged:
                raise
            damaged.append(str(e))
            continue
        try:
            write_digest(path, sha256_of(data), len(data))
        except (OSError, EventError) as e:  # e.g. a folder planted under the digest's name
            why = getattr(e, "strerror", None) or str(e)
            msg = f"segment {path.name}: its digest cannot be recorded at {digest_path(path).name} ({why})"
            if not skip_damaged:
                raise CorruptSegment(msg) from None
            damaged.append(msg)
            continue
        done.append(path.name)
    if done:
        fsync_dir(segdir)
    return done, damaged


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
