"""Read-only, sandboxed SQL over the event log with DuckDB.

The connection is in-memory. Sealed segments are read by DuckDB straight from
their Parquet files; the open segment's complete lines are parsed here and
registered as an Arrow table. Then the sandbox closes: file access is limited
to the trex home, configuration is locked, and only SELECT / EXPLAIN statements
run — so ``COPY … TO``, ``ATTACH``, ``INSTALL``/``LOAD``, ``SET`` and reading
files outside the home are refused with a clear message.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from trex.events import layout
from trex.events.errors import EventError
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


def _snapshot(home: Path) -> tuple[list[Path], list[str]]:
    """(sealed segment paths, JSON arrays of the open segments' records), consistent with each other.

    A damaged open segment, or a segment that is a link, fails the query with one line naming it."""
    segdir = layout.segments_dir(home)
    for _attempt in range(100):
        try:
            sealed, open_ = layout.listing(segdir)
            texts = []
            for n in open_:
                bodies = layout.open_segment_bodies(segdir, n)
                texts.append("[" + b",".join(b[1:-1] for b in bodies).decode() + "]")
        except FileNotFoundError:
            continue  # sealed between listing and reading: list again
        except EventError as e:
            raise SqlFailed(str(e)) from None
        return [layout.seg_path(segdir, n, "parquet") for n in sealed], texts
    raise SqlFailed("the log kept being sealed under the query; try again")


def connect(home: str | Path, memory_limit: str = "1GB", threads: int = 2,
            views: Iterable[str] = ()) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the log's views, sandboxed to the log's segments.

    ``views``: more ``CREATE VIEW`` statements over ``events``, created after the log's own, from a
    package above the log (:func:`trex.search.views.connect` adds ``nodes`` and ``decisions``)."""

    home = Path(home)
    readable = str(layout.segments_dir(home).resolve())
    # no temp directory: DuckDB would spill there, and files it writes there are readable by queries
    con = duckdb.connect(":memory:", config={"memory_limit": memory_limit, "threads": threads,
                                             "temp_directory": ""})
    sealed, texts = _snapshot(home)
    parts = []
    if sealed:
        files = ", ".join(_sql_str(str(p.resolve())) for p in sealed)
        parts.append(f"SELECT {_COLS} FROM read_parquet([{files}])")
    for i, text in enumerate(texts):
        con.execute(_OPEN_TABLE.format(name=f"_open_segment_{i}", struct=_OPEN_STRUCT), [text])
        parts.append(f"SELECT {_COLS} FROM _open_segment_{i}")
    con.execute(EVENTS_VIEW.format(source=" UNION ALL ".join(parts) or _EMPTY))
    for sql in [*LOG_VIEWS.values(), *views]:
        con.execute(sql)
    # Only the segments are readable; SELECT cannot write, and no other statement type runs.
    con.execute(f"SET allowed_directories=[{_sql_str(readable + '/')}]")
    con.execute("SET enable_external_access=false")
    con.execute("SET autoinstall_known_extensions=false")
    con.execute("SET autoload_known_extensions=false")
    con.execute("SET lock_configuration=true")
    return con


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)
_UNITS = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def _line(e: BaseException) -> str:
    """DuckDB's messages run to several lines of advice: the first says what went wrong."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def check_limits(timeout_s: float, memory_limit: str) -> int:
    """Refuse limits that would not hold (0, negative, NaN, infinite, malformed); returns the bytes."""
    import math

    if not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) or not 0 < timeout_s <= 86400:
        raise SqlRefused(f"timeout {timeout_s!r} s: give a number of seconds above 0 and at most 86400")
    m = _MEMORY.match(str(memory_limit))
    if not m or float(m.group(1)) <= 0:
        raise SqlRefused(f"memory limit {memory_limit!r}: give a size such as 512MB or 2GB")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size < 16 * 2**20:
        raise SqlRefused(f"memory limit {memory_limit!r} is below 16 MiB")
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


def _child(conn, home, sql, timeout_s, memory_limit, views, size) -> None:  # pragma: no cover - in a child
    import resource

    try:
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        cap = vm + 2 * size + 256 * 2**20  # what is mapped now + DuckDB's buffers + room for what they miss
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (OSError, ValueError, StopIteration):
        pass
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
    con = connect(home, memory_limit=memory_limit, views=views)
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
    return Result(columns, rows)
