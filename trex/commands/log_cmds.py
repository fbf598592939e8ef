"""Commands over the event log: sql, note, verify, export, import, ls. None imports torch or Ray."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click

from trex.commands.common import emit_json, existing_home, fail, finite, format_option, home_option, info

TABLE_ROWS = 1000  # rows `trex sql` lays out as a table; csv and json print every row


def _jsonable(v):
    if isinstance(v, float):
        return finite(v)  # NaN and inf as the log's strings: JSON has no such literal
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


@click.command()
@click.argument("query")
@home_option
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds before the query is interrupted.")
@click.option("--memory-limit", default="1GB", show_default=True)
def sql(query, home, fmt, timeout, memory_limit):
    """Run a read-only SQL QUERY over the event log.

    Views: events, trials, metrics, insights, llm_calls, notes, nodes, decisions.
    Only SELECT and EXPLAIN run; files outside the trex home cannot be read.
    """
    from trex.events.sql import SqlFailed, SqlRefused
    from trex.search.views import query as run_query

    existing_home(home)
    try:
        res = run_query(home, query, timeout_s=timeout, memory_limit=memory_limit, isolated=True)
    except SqlRefused as e:
        fail(f"refused: {e}", 2)
    except SqlFailed as e:
        fail(str(e), 1)
    for n in res.notes:
        info(n)
    if fmt == "json":
        click.echo(json.dumps([dict(zip(res.columns, map(_jsonable, r))) for r in res.rows], default=str,
                              allow_nan=False))
    elif fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")  # csv defaults to \r\n: not what a shell pipeline expects
        w.writerow(res.columns)
        w.writerows(res.rows)
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        # cells and headers are Text, never markup: a stored "[/bold]" failed every query over notes,
        # and "[draft]" or "[nan]" vanished from the cell
        t = Table(show_lines=False)
        for c in res.columns:
            t.add_column(Text(str(c)))
        shown = res.rows[:TABLE_ROWS]  # rich lays a table out whole: 100,000 rows took a minute, past --timeout
        for r in shown:
            t.add_row(*(Text("NULL" if v is None else str(v)) for v in r))
        Console(soft_wrap=True).print(t)
        if len(shown) < len(res.rows):
            info(f"{len(res.rows)} row(s); the table shows the first {len(shown)}: --format csv or json prints all")
        else:
            info(f"{len(res.rows)} row(s)")


@click.command()
@click.argument("search")
@click.argument("text")
@click.option("--author", default="", help="Who writes the note.")
@home_option
@format_option
def note(search, text, author, home, fmt):
    """Add an operator note TEXT to SEARCH (an event in its stream)."""
    from pydantic import ValidationError

    from trex.events.log import EventLog
    from trex.events.notes import NoteAdded

    from trex.events.records import is_utf8

    for name, value in (("text", text), ("author", author)):
        if not is_utf8(value):  # a byte that is not UTF-8 reaches here as a lone surrogate: no event may hold one
            fail(f"invalid note: its {name} is not UTF-8 text")
    log = EventLog(home)
    if not log.exists(search):
        fail(f"no search {search!r} in {home}")
    try:
        ev = NoteAdded(text=text, author=author)
    except ValidationError as e:
        fail(f"invalid note: {e.errors()[0]['msg']}")
    (env,) = log.append(search, [ev])
    if fmt == "json":
        emit_json({"search_id": search, "seq": env.seq, "event_id": env.event_id})
    else:
        click.echo(f"{search} seq {env.seq} {env.event_id}")


@click.command()
@click.argument("search", required=False)
@click.option("--repair", is_flag=True,
              help="First move damaged records to HOME/log/quarantine/ (never deleting them) and truncate a "
                   "torn tail (an append that was never acknowledged).")
@home_option
@format_option
def verify(search, repair, home, fmt):
    """Check the log (or one SEARCH): hash chains, gapless sequences, unique ids, segment footers."""
    from trex.events import segments
    from trex.events.base import EventError
    from trex.events.log import EventLog
    from trex.events.quarantine import quarantine_damage
    from trex.events.verify import verify as run_verify

    existing_home(home)
    log = EventLog(home)
    if repair:
        try:
            for q in quarantine_damage(log):
                info(str(q))
            dropped = log.repair()
        except EventError as e:
            fail(f"cannot repair: {e}")
        if dropped:
            info(f"repaired: dropped a torn tail of {dropped} bytes")
        # segments sealed by a trex from before digests: checked whole, then their digest recorded beside
        # them (the segments themselves are never rewritten); a damaged one gets none and is reported below
        digested, damaged = segments.record_digests(log.segdir, log._listing()[0], skip_damaged=True)
        if digested:
            info(f"recorded the digests of {len(digested)} sealed segment(s) without a readable one, "
                 "after checking them whole")
        for d in damaged:
            info(f"not repaired: {d}")
    rep = run_verify(log, search)
    if search is not None and rep.events == 0 and rep.ok:  # with damage, its events may be in what is damaged
        fail(f"no search {search!r} in {home}")
    if fmt == "json":
        emit_json({"ok": rep.ok, "events": rep.events, "searches": rep.searches, "segments": rep.segments,
                   "problems": [p.__dict__ for p in rep.problems], "quarantined": rep.quarantined,
                   "quarantine": [q.as_dict() for q in rep.quarantine], "notes": rep.notes})
    else:
        for p in rep.problems:  # a quarantine file holding records is one of them, one line each
            click.echo(str(p))
        for note in rep.notes:
            info(f"note: {note}")
        status = "OK" if rep.ok else f"{len(rep.problems)} problem(s)"
        lost = sum(q.records for q in rep.quarantine)
        if lost:
            status += f", at least {lost} quarantined record(s) not in the log"
        info(f"{status}: {rep.events} events, {rep.searches} searches, {rep.segments} segments")
    sys.exit(0 if rep.ok else 1)


@click.command()
@click.argument("search")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@home_option
def export(search, output, home):
    """Export SEARCH (with the searches it forks from) to a Parquet file."""
    from trex.events.base import EventError
    from trex.events.layout import quarantine_note
    from trex.events.log import EventLog
    from trex.events.transfer import export_search

    if note := quarantine_note(home):
        info(note)
    try:
        n = export_search(EventLog(home), search, output)
    except EventError as e:
        fail(str(e))
    info(f"exported {n} events to {output}")


@click.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@home_option
@format_option
def import_(file, home, fmt):
    """Import a file made by `trex export` (idempotent: importing twice adds nothing)."""
    from trex.events.base import EventError
    from trex.events.log import EventLog
    from trex.events.transfer import import_file

    try:
        added = import_file(EventLog(home), file)
    except EventError as e:
        fail(str(e))
    if fmt == "json":
        emit_json(added)
    else:
        for sid, n in added.items():
            click.echo(f"{sid}\t{n} events added")


@click.command()
@home_option
@format_option
def ls(home, fmt):
    """List the searches in this trex home."""
    from trex.events.sql import SqlFailed

    existing_home(home)
    try:
        res = _ls_query(home)
    except SqlFailed as e:
        fail(str(e))
    for n in res.notes:
        info(n)
    rows = [dict(zip(res.columns, map(_jsonable, r))) for r in res.rows]
    if fmt == "json":
        emit_json(rows)
    else:
        for r in rows:
            click.echo(f"{r['search_id']}\t{r['events']}\t{r['first_event']}\t{r['task_or_parent'] or ''}\t{r['last_update']}")


def _ls_query(home):
    from trex.events.sql import query

    return query(home, """
        SELECT search_id, count(*) AS events,
               arg_min(coalesce(payload->>'task', payload->>'parent_search_id'), seq) AS task_or_parent,
               arg_min(type, seq) AS first_event, max(recorded_at) AS last_update
        FROM events GROUP BY search_id ORDER BY min(position)""")
