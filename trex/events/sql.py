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
        raise SqlFailed(f"cannot parse query: {e}") from None


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
    con = duckdb.connect(":memory:", config={"memory_limit": memory_limit, "threads": threads})
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


def query(home: str | Path, sql: str, timeout_s: float = 30.0, memory_limit: str = "1GB",
          views: Iterable[str] = ()) -> Result:
    """Run one read-only query; refused statements raise :class:`SqlRefused`, errors :class:`SqlFailed`.

    ``views`` as for :func:`connect`."""
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
        raise SqlRefused(f"refused by the sandbox: {e}") from None
    except duckdb.OutOfMemoryException as e:
        raise SqlFailed(f"query exceeded the {memory_limit} memory limit: {e}") from None
    except duckdb.Error as e:
        raise SqlFailed(str(e)) from None
    finally:
        timer.cancel()
        con.close()
    return Result(columns, rows)
