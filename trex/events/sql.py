"""Read-only, sandboxed SQL over the event log with DuckDB.

The connection is in-memory. Sealed segments are read by DuckDB straight from
their Parquet files, once their bytes are checked (DuckDB does not verify Parquet
page checksums): against the SHA-256 recorded when each was sealed, or, for a
segment sealed before digests existed, whole (every event's hash, positions, the
footer's statistics). The open segment's good records are decoded by the log's
scanner and loaded into a temporary table. Then the sandbox closes: file access is limited
to the trex home, configuration is locked, and only SELECT / EXPLAIN statements
run — so ``COPY … TO``, ``ATTACH``, ``INSTALL``/``LOAD``, ``SET`` and reading
files outside the home are refused with a clear message.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from trex.events import fsio, layout
from trex.events.errors import EventError
from trex.events.records import is_utf8
from trex.events.views import VIEWS as LOG_VIEWS

ALLOWED = {"SELECT", "EXPLAIN"}

EVENTS_VIEW = """
CREATE VIEW events AS
SELECT search_id, seq, event_id, type, schema_version,
       CAST(recorded_at AS TIMESTAMPTZ) AS recorded_at, causation_id, correlation_id,
       CAST(payload AS JSON) AS payload, position, prev_hash, hash
FROM ({source})
"""


class SqlRefused(Exception):
    """The query is not allowed in trex's read-only sandbox."""


class SqlFailed(Exception):
    pass


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple]
    notes: tuple[str, ...] = ()  # what the reader wants said (on stderr, by the CLI), e.g. a slow check


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _statements(query: str):
    try:
        return duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise SqlFailed(f"cannot parse query: {_line(e)}") from None


_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(ANALY[SZ]E\b)?", re.IGNORECASE)


def check_statements(query: str) -> None:
    """Only SELECT runs, and EXPLAIN of a SELECT. ``EXPLAIN ANALYZE`` executes its statement, so it is
    refused outright (``EXPLAIN ANALYZE COPY … TO`` would otherwise write files)."""
    if not is_utf8(query):  # a byte of argv that is not UTF-8: DuckDB's parser raised a TypeError
        raise SqlRefused("the query is not UTF-8 text")
    stmts = _statements(query)
    if not stmts:
        raise SqlRefused("empty query")
    for st in stmts:
        kind = st.type.name
        if kind == "EXPLAIN":
            m = _EXPLAIN.match(st.query)
            if m is None or m.group(1):
                raise SqlRefused("EXPLAIN ANALYZE is not allowed: it executes the statement (use EXPLAIN)")
            inner = _statements(st.query[m.end():])
            if len(inner) != 1 or inner[0].type.name != "SELECT":
                raise SqlRefused("only EXPLAIN of a SELECT is allowed: trex sql is read-only")
        elif kind != "SELECT":
            raise SqlRefused(
                f"{kind} statements are not allowed: trex sql is read-only (only SELECT and EXPLAIN run)"
            )


_OPEN_STRUCT = (
    '[{"position":"BIGINT","search_id":"VARCHAR","seq":"BIGINT","event_id":"VARCHAR","type":"VARCHAR",'
    '"schema_version":"INTEGER","recorded_at":"VARCHAR","causation_id":"VARCHAR","correlation_id":"VARCHAR",'
    '"payload":"VARCHAR","prev_hash":"VARCHAR","hash":"VARCHAR"}]'
)
_COLS = "position, search_id, seq, event_id, type, schema_version, recorded_at, causation_id, correlation_id, payload, prev_hash, hash"

# The open segment is decoded by the log's one scanner (trex.events.records: checksums, torn tail
# vs damage); what reaches DuckDB is only the JSON of its good records, as one array, parsed here
# into a temporary table before the sandbox closes. Sealed segments are immutable and never
# deleted, so once the open segment's bytes are read the snapshot is consistent whatever a writer
# seals meanwhile.
_OPEN_TABLE = """
CREATE TEMP TABLE {name} AS
SELECT r.* FROM (SELECT unnest(from_json($1, '{struct}')) AS r)"""

_EMPTY = (
    "SELECT NULL::BIGINT AS position, NULL::VARCHAR AS search_id, NULL::BIGINT AS seq, NULL::VARCHAR AS event_id, "
    "NULL::VARCHAR AS type, NULL::INTEGER AS schema_version, NULL::VARCHAR AS recorded_at, "
    "NULL::VARCHAR AS causation_id, NULL::VARCHAR AS correlation_id, NULL::VARCHAR AS payload, "
    "NULL::VARCHAR AS prev_hash, NULL::VARCHAR AS hash WHERE false"
)


def _snapshot(home: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """(sealed segment paths, (name, JSON array of its records) of each open segment), consistent.

    A damaged open segment, or a segment that is a link, fails the query with one line naming it."""
    segdir = layout.segments_dir(home)
    for _attempt in range(100):
        try:
            sealed, open_ = layout.listing(segdir)
            texts = []
            for n in open_:
                bodies = layout.open_segment_bodies(segdir, n)
                texts.append((layout.seg_path(segdir, n, "jsonl").name,
                              "[" + b",".join(b[1:-1] for b in bodies).decode() + "]"))
        except FileNotFoundError:
            continue  # sealed between listing and reading: list again
        except EventError as e:
            raise SqlFailed(str(e)) from None
        return [layout.seg_path(segdir, n, "parquet") for n in sealed], texts
    raise SqlFailed("the log kept being sealed under the query; try again")


# ------------------------------------------------------------------ integrity of sealed segments
# DuckDB reads Parquet without verifying page checksums, and a damaged footer statistic makes it skip
# rows without an error. So before DuckDB sees a sealed segment its bytes are checked: against the
# SHA-256 recorded beside it when it was sealed (fast: hashing runs at ~1.4 GB/s, in threads), or, for
# a segment sealed by a trex from before digests, whole by DuckDB itself (every event's hash recomputed,
# positions, the footer's statistics against the data) — slower, which the CLI says, naming the fix
# (`trex verify --repair` records their digests after checking them). A damaged segment fails the
# query with one line naming it: nothing is read as a clean prefix or a clean subset. Checks are
# remembered per process for a file that has not changed (same inode, size, mtime and ctime).
_CHECKED: dict[tuple, bool] = {}


def _stat_key(path: Path) -> tuple:
    st = os.stat(path)
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _damaged(path: Path, why: str) -> SqlFailed:
    return SqlFailed(f"segment {path.name}: damaged: {why} (nothing was read; `trex verify` lists the damage)")


def _digest_check(path: Path) -> bool:
    """True if ``path`` matches its recorded digest, False if it has none (or an unreadable one)."""
    try:
        want = fsio.read_digest(path)
    except fsio.DigestUnreadable:
        return False
    if want is None:
        return False
    if fsio.sha256_file(path) != want:
        raise _damaged(path, f"its bytes do not match the digest recorded when it was sealed "
                             f"({fsio.digest_path(path).name}; the segment or that file changed)")
    return True


def _f(col: str) -> str:
    return f"CASE WHEN {col} IS NULL THEN '-' ELSE CAST(length({col}) AS VARCHAR) || ':' || {col} END"


# trex.events.envelope.chain_hash, in SQL: sha256 over the length-prefixed envelope fields, a newline,
# the payload text (tests/test_sql_integrity.py checks that the two agree, non-ASCII text included)
_HASH_SQL = ("sha256(concat_ws('|', " + ", ".join(_f(c) for c in (
    "prev_hash", "event_id", "search_id", "CAST(seq AS VARCHAR)", "type", "CAST(schema_version AS VARCHAR)",
    "recorded_at", "causation_id", "correlation_id")) + ") || chr(10) || payload)")
_GLOB = re.compile(r"[*?\[\]{}]")
_COL_NAMES = [c.strip() for c in _COLS.split(",")]
# per column: the type DuckDB must read, and the Parquet (physical, converted) type it reads it from (a
# text column whose converted type is not UTF8 is BLOB to DuckDB, whatever its logical type says)
_KINDS = {"int32": ("INTEGER", ("INT32", None)), "int64": ("BIGINT", ("INT64", None)),
          "text": ("VARCHAR", ("BYTE_ARRAY", "UTF8"))}
_KIND = {c: "int32" if c == "schema_version" else "int64" if c in ("position", "seq") else "text" for c in _COL_NAMES}
_DUCK_TYPES = [(c, _KINDS[_KIND[c]][0]) for c in _COL_NAMES]
_PARQUET_TYPES = {c: _KINDS[_KIND[c]][1] for c in _COL_NAMES}


def check_column_types(paths: list[Path]) -> list[tuple[Path, str]]:
    """Each segment's column types as DuckDB reads them (the footers only: one query for all), for
    segments with a digest too — a digest recorded by an older trex may vouch for a footer whose text
    columns DuckDB reads as BLOB. Returns (path, what is wrong) for each segment that is not right."""
    if not paths:
        return []
    con = duckdb.connect()
    try:
        with _without_patterns(paths) as names:
            rows = con.execute("SELECT file_name, name, type, converted_type FROM parquet_schema(?) "
                               "WHERE type IS NOT NULL", [names]).fetchall()
    except (duckdb.Error, ValueError, UnicodeError) as e:
        return [(paths[0], f"its footer cannot be read ({_line(e)})")] if len(paths) == 1 else \
            [bad for p in paths for bad in check_column_types([p])]
    finally:
        con.close()
    got: dict[str, dict] = {}
    for f, name, typ, conv in rows:
        got.setdefault(f, {})[name] = (typ, conv)
    out = []
    for p, name in zip(paths, names):
        cols = got.get(name, {})
        if cols != _PARQUET_TYPES:
            bad = next((f"{c} is {'/'.join(map(str, cols[c]))}" for c in _COL_NAMES if c in cols
                        and cols[c] != _PARQUET_TYPES[c]), "its columns differ")
            out.append((p, f"its columns are not the log's ({bad}: DuckDB would not read the log's types)"))
    return out


def _plain_tempdir() -> str | None:
    """A temporary folder whose path holds no character DuckDB reads as a file pattern (TMPDIR may),
    for what must be read under a plain name; None if there is none."""
    import tempfile

    return next((t for t in (tempfile.gettempdir(), "/tmp", "/var/tmp")
                 if not _GLOB.search(os.path.realpath(t)) and os.path.isdir(t)), None)


@contextlib.contextmanager
def _without_patterns(paths: list[Path]):
    """File names DuckDB reads as these paths and never as patterns: the paths themselves, or, where a
    home's path holds ``* ? [ ] { }`` (DuckDB globbed ``g[1]`` into a sibling home ``g1``), links to them
    in a temp folder without such characters (footers only are read through them; nothing is written)."""
    import tempfile

    resolved = [str(p.resolve()) for p in paths]
    if not any(_GLOB.search(r) for r in resolved):
        yield resolved
        return
    tmp = _plain_tempdir()
    if tmp is None:
        raise SqlFailed("the log's path holds a character DuckDB reads as a file pattern and no temporary "
                        "folder without one is at hand; set TMPDIR")
    with tempfile.TemporaryDirectory(prefix="trex-footers-", dir=tmp) as d:
        names = []
        for i, r in enumerate(resolved):
            link = os.path.join(os.path.realpath(d), f"{i:08d}.parquet")
            os.symlink(r, link)
            names.append(link)
        yield names


def whole_check(path: Path) -> None:
    """:func:`_whole_check` on a connection of its own: what ``trex verify --repair`` asks before it
    records a digest (a digest blesses the bytes for DuckDB too)."""
    path = Path(path)
    con = duckdb.connect()
    try:
        if _GLOB.search(str(path.resolve())):  # DuckDB would read it as a pattern: check a copy of its bytes
            import shutil
            import tempfile

            tmp = _plain_tempdir()
            if tmp is None:
                raise _damaged(path, "its path holds a character DuckDB reads as a file pattern and no temporary "
                                     "folder without one is at hand to check a copy; set TMPDIR")
            with tempfile.TemporaryDirectory(prefix="trex-check-", dir=tmp) as d:
                copy = Path(d) / path.name
                try:
                    with open(fsio.open_nofollow(path, os.O_RDONLY), "rb") as src, open(copy, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except OSError as e:
                    raise SqlFailed(f"segment {path.name}: cannot be checked: copying it to {d} failed "
                                    f"({e.strerror or e})") from None
                _whole_check(con, copy)
        else:
            _whole_check(con, path)
    finally:
        con.close()


def _whole_check(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Check a sealed segment that has no digest, whole, as DuckDB reads it: every event's hash
    recomputed, positions consecutive, the row count and the row-group statistics (DuckDB skips row
    groups by them) as the data says, no index trex never writes."""
    if _GLOB.search(str(path.resolve())):
        raise _damaged(path, "its path holds a character DuckDB reads as a file pattern (*, ?, [, {); "
                             "use a home path without them")
    f = _sql_str(str(path.resolve()))
    try:
        # the types DuckDB reads: one flipped bit in a footer's converted type made a text column BLOB,
        # which pyarrow (reading the Arrow schema stored beside it) never saw
        types = [(c, t) for c, t, *_ in con.execute(f"DESCRIBE SELECT * FROM read_parquet({f})").fetchall()]
        if types != _DUCK_TYPES:
            bad = next((f"{c} {t}" for (c, t), want in zip(types, _DUCK_TYPES) if (c, t) != want), "")
            raise _damaged(path, "its columns are not the log's" + (f" (DuckDB reads {bad})" if bad else ""))
        meta = con.execute(
            "SELECT row_group_id, row_group_num_rows, path_in_schema, stats_min_value, stats_max_value, "
            "stats_null_count, min_is_exact, max_is_exact, bloom_filter_offset, column_index_offset, "
            f"offset_index_offset FROM parquet_metadata({f})").fetchall()
        r = con.execute(
            f"SELECT count(*), min(position), max(position), count(DISTINCT position), "
            f"count(*) FILTER (WHERE {_HASH_SQL} IS DISTINCT FROM hash) FROM read_parquet({f})").fetchone()
        groups = dict(sorted({(rg, nrows) for (rg, nrows, *_rest) in meta}))
        # each row group's own minimum, maximum and null count, as DuckDB reads them (it skips a group by
        # its statistics; a file of more than one group — a seal of over 65,536 events, the first trex's
        # 100,000 — was once left unchecked here)
        ends, total = [], 0
        for rg, nrows in groups.items():
            total += nrows
            ends.append((rg, total))
        which = "CASE " + " ".join(f"WHEN file_row_number < {e} THEN {rg}" for rg, e in ends) + " END"
        aggs = ", ".join(f"CAST(min({c}) AS VARCHAR), CAST(max({c}) AS VARCHAR), count(*) - count({c})"
                         for c in _COL_NAMES)
        per_group = {row[0]: row[1:] for row in con.execute(
            f"SELECT {which} AS g, {aggs} FROM read_parquet({f}, file_row_number=true) GROUP BY g").fetchall()
        } if ends else {}
    except (duckdb.Error, ValueError, UnicodeError) as e:  # a damaged name in the footer: not UTF-8
        raise _damaged(path, f"cannot be read ({_line(e)})") from None
    stats = {}
    for (rg, _n, col, lo, hi, nulls, lo_exact, hi_exact, bloom, cidx, oidx) in meta:
        if bloom is not None or cidx is not None or oidx is not None:
            raise _damaged(path, f"column {col} has an index trex never writes")
        stats[(rg, col)] = (lo, hi, nulls, lo_exact, hi_exact)
    n, pmin, pmax, pdistinct, bad = r
    rows = sum(groups.values())
    if n != rows:
        raise _damaged(path, f"{n} rows read, its footer says {rows}")
    if not n:
        return
    if bad:
        raise _damaged(path, f"{bad} event(s) do not match their hash")
    if pmin is None or pmax is None or not (pmax - pmin + 1 == n == pdistinct):
        raise _damaged(path, "its positions are not consecutive")
    for rg, nrows in groups.items():
        got = per_group.get(rg)
        if nrows and got is None:
            raise _damaged(path, f"row group {rg} holds no rows, its footer says {nrows}")
        for i, col in enumerate(_COL_NAMES):
            if got is not None:
                _check_group_stat(path, rg, col, stats.get((rg, col)), got[3 * i: 3 * i + 3])


def _check_group_stat(path: Path, rg: int, col: str, st, data) -> None:
    """One row group's statistics of one column against its data (min, max, null count, as text)."""
    lo, hi, nulls = data
    where = f"the statistics of column {col} (row group {rg}) do not match its data"
    if st is None:
        raise _damaged(path, f"row group {rg} has no column {col}")
    slo, shi, snulls, lo_exact, hi_exact = st
    if snulls is not None and snulls != nulls:
        raise _damaged(path, where)
    if (slo is None) != (shi is None):  # one bound without the other: DuckDB prunes by the one
        raise _damaged(path, where)
    if slo is None or shi is None or lo is None or hi is None:
        if (slo is None) != (lo is None) and slo is not None:
            raise _damaged(path, where)
        return
    try:
        if col in ("position", "seq", "schema_version"):
            ok = (int(slo), int(shi)) == (int(lo), int(hi))
        else:
            ok = (slo == lo if lo_exact else slo <= lo) and (shi == hi if hi_exact else shi >= hi)
    except ValueError:
        ok = False
    if not ok:
        raise _damaged(path, where)


def _check_sealed(con: duckdb.DuckDBPyConnection, sealed: list[Path]) -> list[str]:
    """Check every sealed segment before DuckDB reads it; returns notes for the user (slow checks)."""
    keys = {}
    todo = []
    for p in sealed:
        keys[p] = _stat_key(p)
        if keys[p] not in _CHECKED:
            todo.append(p)
    if len(todo) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as ex:  # hashlib releases the GIL
            found = list(ex.map(_digest_check, todo))
    else:
        found = [_digest_check(p) for p in todo]
    for p, why in check_column_types([p for p, has in zip(todo, found) if has]):
        raise _damaged(p, why)
    legacy = [p for p, has in zip(todo, found) if not has]
    for p, has in zip(todo, found):
        if has:
            _CHECKED[keys[p]] = True
    for p in legacy:
        _whole_check(con, p)
        _CHECKED[keys[p]] = False
    if legacy:
        return [f"note: {len(legacy)} of {len(sealed)} sealed segment(s) have no digest (sealed by an older trex) "
                "and were checked whole, which is slower; `trex verify --repair` records their digests"]
    return []


def _check_order(con: duckdb.DuckDBPyConnection, sealed: list[Path], open_names: list[str]) -> None:
    """Each segment's positions come after the previous segment's (from the footers' statistics, checked
    before, and the open segments' records). A segment present twice — a copy under a later number —
    was read as more events, exit 0. A gap passes: a record quarantined by repair leaves one."""
    ranges: list[tuple[str, int | None, int | None]] = []
    if sealed:
        files = ", ".join(_sql_str(str(p.resolve())) for p in sealed)
        try:
            rows = con.execute(
                "SELECT file_name, min(TRY_CAST(stats_min_value AS BIGINT)), max(TRY_CAST(stats_max_value AS BIGINT)) "
                f"FROM parquet_metadata([{files}]) WHERE path_in_schema = 'position' GROUP BY file_name").fetchall()
        except duckdb.Error as e:
            raise SqlFailed(f"the segments' footers cannot be read ({_line(e)})") from None
        by = {Path(f).name: (lo, hi) for f, lo, hi in rows}
        for p in sealed:
            lo, hi = by.get(p.name, (None, None))
            if lo is None or hi is None:  # no statistics (a footer written without them): from the data
                try:
                    lo, hi = con.execute(f"SELECT min(position), max(position) FROM read_parquet({_sql_str(str(p.resolve()))})"
                                         ).fetchone()
                except duckdb.Error as e:
                    raise _damaged(p, f"cannot be read ({_line(e)})") from None
            ranges.append((p.name, lo, hi))
    for i, name in enumerate(open_names):
        lo, hi, n, distinct = con.execute(
            f"SELECT min(position), max(position), count(*), count(DISTINCT position) FROM _open_segment_{i}").fetchone()
        if n != distinct:  # a record present twice: positions rise in a segment written by the append
            raise SqlFailed(f"segment {name}: {n - distinct} event(s) repeat the position of another "
                            "(nothing was read; `trex verify` lists the damage)")
        ranges.append((name, lo, hi))
    last, last_name = 0, ""
    for name, lo, hi in ranges:
        if lo is None or hi is None:  # an empty segment
            continue
        if lo <= last:
            raise SqlFailed(f"segment {name}: its events (positions {lo}..{hi}) do not come after those of "
                            f"{last_name} (up to {last}): a segment present twice or out of place "
                            "(nothing was read; `trex verify` lists the damage)")
        last, last_name = hi, name


def connect(home: str | Path, memory_limit: str = "1GB", threads: int = 2,
            views: Iterable[str] = ()) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the log's views, sandboxed to the log's segments.

    ``views``: more ``CREATE VIEW`` statements over ``events``, created after the log's own, from a
    package above the log (:func:`trex.search.views.connect` adds ``nodes`` and ``decisions``).
    A damaged segment raises :class:`SqlFailed` naming it."""
    return _connect(home, memory_limit, threads, views)[0]


def _connect(home: str | Path, memory_limit: str = "1GB", threads: int = 2,
             views: Iterable[str] = ()) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    home = Path(home)
    readable = str(layout.segments_dir(home).resolve())
    if not is_utf8(readable):  # DuckDB takes paths as UTF-8 only (InvalidInputException, exit 70)
        raise SqlFailed(f"the log's path {readable!r} is not UTF-8 text: DuckDB cannot read it; use a home "
                        "path in UTF-8")
    if _GLOB.search(readable):  # read_parquet would expand it: another home's segments read as this one's
        raise SqlFailed(f"the log's path {readable!r} holds a character DuckDB reads as a file pattern "
                        "(*, ?, [, {): `trex sql` cannot read it safely; use a home path without them")
    # no temp directory: DuckDB would spill there, and files it writes there are readable by queries
    con = duckdb.connect(":memory:", config={"memory_limit": memory_limit, "threads": threads,
                                             "temp_directory": ""})
    try:
        sealed, texts = _snapshot(home)
        try:
            notes = _check_sealed(con, sealed)  # before the sandbox closes: the whole check reads footers
            notes += [n for n in (layout.quarantine_note(home),) if n]
        except FileNotFoundError as e:
            raise SqlFailed(f"segment {Path(e.filename or '?').name} vanished under the query; try again") from None
        except EventError as e:
            raise SqlFailed(str(e)) from None
    except BaseException:
        con.close()
        raise
    parts = []
    if sealed:
        files = ", ".join(_sql_str(str(p.resolve())) for p in sealed)
        parts.append(f"SELECT {_COLS} FROM read_parquet([{files}])")
    for i, (_name, text) in enumerate(texts):
        con.execute(_OPEN_TABLE.format(name=f"_open_segment_{i}", struct=_OPEN_STRUCT), [text])
        parts.append(f"SELECT {_COLS} FROM _open_segment_{i}")
    try:
        _check_order(con, sealed, [name for name, _t in texts])
    except BaseException:
        con.close()
        raise
    con.execute(EVENTS_VIEW.format(source=" UNION ALL ".join(parts) or _EMPTY))
    for sql in [*LOG_VIEWS.values(), *views]:
        con.execute(sql)
    # Only the segments are readable; SELECT cannot write, and no other statement type runs.
    con.execute(f"SET allowed_directories=[{_sql_str(readable + '/')}]")
    con.execute("SET enable_external_access=false")
    con.execute("SET autoinstall_known_extensions=false")
    con.execute("SET autoload_known_extensions=false")
    con.execute("SET lock_configuration=true")
    return con, notes


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)
_UNITS = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def _line(e: BaseException) -> str:
    """DuckDB's messages run to several lines of advice: the first says what went wrong."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


MAX_MEMORY = 64 * 2**40  # the query process's address-space cap must stay a sane number (RLIMIT_AS)


def check_limits(timeout_s: float, memory_limit: str) -> int:
    """Refuse limits that would not hold (0, negative, NaN, infinite, malformed); returns the bytes."""
    import math

    if not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) or not 0 < timeout_s <= 86400:
        raise SqlRefused(f"timeout {timeout_s!r} s: give a number of seconds above 0 and at most 86400")
    m = _MEMORY.match(str(memory_limit))
    if not m or not math.isfinite(float(m.group(1))) or float(m.group(1)) <= 0:
        raise SqlRefused(f"memory limit {memory_limit!r}: give a size such as 512MB or 2GB")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size < 16 * 2**20:
        raise SqlRefused(f"memory limit {memory_limit!r} is below 16 MiB")
    if size > MAX_MEMORY:
        raise SqlRefused(f"memory limit {memory_limit!r} is above {MAX_MEMORY // 2**40} TiB: give a size this "
                         "machine could hold, such as 512MB or 64GB")
    return size


def query_isolated(home: str | Path, sql: str, timeout_s: float = 30.0, memory_limit: str = "1GB",
                   views: Iterable[str] = ()) -> Result:
    """:func:`query` in a child process whose address space is capped and which is killed at the
    timeout: DuckDB's own limits do not stop one long string operation (its interrupt is checked
    between operators, its memory limit covers its buffers only). What ``trex sql`` runs."""
    import multiprocessing as mp
    import os

    size = check_limits(timeout_s, memory_limit)
    check_statements(sql)
    ctx = mp.get_context("fork")  # the child inherits the imports; no DuckDB connection exists before
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, str(home), sql, timeout_s, memory_limit, tuple(views), size),
                       daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s + 2.0):
            raise SqlFailed(f"query stopped after the {timeout_s:g} s timeout")
        try:
            kind, payload = parent.recv()
        except EOFError:
            raise SqlFailed(f"query stopped: it needed more memory than the {memory_limit} limit allows") from None
    finally:
        if proc.is_alive():
            os.kill(proc.pid, 9)
        proc.join(5)
        parent.close()
    if kind == "ok":
        return payload
    raise (SqlRefused if kind == "refused" else SqlFailed)(payload)


def _cap_memory(size: int) -> None:
    """Cap this process's address space: what is mapped now + DuckDB's buffers + room for what they miss.
    A hard limit already lower than that stays (it bounds the query too)."""
    import resource

    try:
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, ValueError, StopIteration):
        vm = 0
    cap = vm + 2 * size + 256 * 2**20
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY and cap > hard:
        cap = hard
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard if hard != resource.RLIM_INFINITY else cap))


def _child(conn, home, sql, timeout_s, memory_limit, views, size) -> None:  # pragma: no cover - in a child
    try:
        _cap_memory(size)
    except (OSError, ValueError, OverflowError) as e:  # the limit would not hold: refuse to run unbounded
        conn.send(("failed", f"cannot cap the query's memory at the {memory_limit} limit: {e}"))
        conn.close()
        return
    try:
        conn.send(("ok", query(home, sql, timeout_s=timeout_s, memory_limit=memory_limit, views=views)))
    except SqlRefused as e:
        conn.send(("refused", str(e)))
    except MemoryError:
        conn.send(("failed", f"query stopped: it needed more memory than the {memory_limit} limit allows"))
    except (SqlFailed, EventError) as e:
        conn.send(("failed", str(e)))
    except Exception as e:  # noqa: BLE001 - one line for the parent, never a traceback
        conn.send(("failed", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def query(home: str | Path, sql: str, timeout_s: float = 30.0, memory_limit: str = "1GB",
          views: Iterable[str] = ()) -> Result:
    """Run one read-only query; refused statements raise :class:`SqlRefused`, errors :class:`SqlFailed`.

    ``views`` as for :func:`connect`. In this process, under DuckDB's own limits (see
    :func:`query_isolated` for limits that hold)."""
    check_limits(timeout_s, memory_limit)
    check_statements(sql)
    con, notes = _connect(home, memory_limit=memory_limit, views=views)
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.start()
    try:
        cur = con.execute(sql)
        rows = cur.fetchall()
        columns = [d[0] for d in cur.description] if cur.description else []
    except duckdb.InterruptException:
        raise SqlFailed(f"query interrupted after the {timeout_s:g} s timeout") from None
    except duckdb.PermissionException as e:
        raise SqlRefused(f"refused by the sandbox: {_line(e)}") from None
    except duckdb.OutOfMemoryException as e:
        raise SqlFailed(f"query exceeded the {memory_limit} memory limit: {_line(e)}") from None
    except duckdb.Error as e:
        raise SqlFailed(_line(e)) from None
    finally:
        timer.cancel()
        con.close()
    return Result(columns, rows, tuple(notes))
