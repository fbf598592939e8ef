"""Export a search to one Parquet file and import it elsewhere through the normal append path."""
from __future__ import annotations

import json
import os
import stat
from collections import defaultdict
from pathlib import Path

from trex.events.base import EventError, decode
from trex.events.envelope import GENESIS, Envelope, RawEvent
from trex.events.log import ConcurrencyConflict, EventLog, UnknownSearch, check_raw, check_search_id, strict_json
from trex.events.search import MAX_FORK_DEPTH

EXPORT_MAGIC = "trex.export.v1"


class BadImportFile(EventError):
    """An import file refused, with one line saying what is wrong (and nothing written)."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


_MAX_MESSAGE = 600


def _one_line(message: str) -> str:
    """A message on one line: a validation error's lines joined, pydantic's links left out, cut if long."""
    lines = [ln.strip() for ln in str(message).splitlines()]
    text = "; ".join(ln for ln in lines if ln and not ln.startswith("For further information"))
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def lineage(log: EventLog, search_id: str) -> list[str]:
    """The search and the searches it was forked from, oldest ancestor first."""
    chain, sid = [], search_id
    while sid is not None:
        if sid in chain:
            raise EventError(f"fork cycle at {sid!r}")
        recs = log.read_records(sid, until_seq=1)
        if not recs:
            raise UnknownSearch(f"no search {sid!r} in {log.home}")
        chain.append(sid)
        first = recs[0]
        sid = json.loads(first["payload"]).get("parent_search_id") if first["type"] == "SearchForked" else None
    return chain[::-1]


def export_search(log: EventLog, search_id: str, out: Path) -> int:
    from trex.events import segments

    from trex.events.fsio import check_output, in_log_folder

    if in_log_folder(out, log.home):
        raise EventError(f"refusing to export into the log's own folder ({log.dir})")
    check_output(out)  # written beside the destination and renamed over it: only a file is replaced

    records = []
    for sid in lineage(log, search_id):
        records.extend(log.read_records(sid))
    segments.write_parquet(Path(out), records, metadata={EXPORT_MAGIC: search_id}, outside=True)
    return len(records)


def _read_import(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trex.events import segments

    try:  # opened once, then checked: a path swapped for a pipe after a check cannot hang the read
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # may be a link: an import is only read
    except FileNotFoundError:
        raise BadImportFile(f"{path}: no such file") from None
    except OSError as e:
        raise BadImportFile(f"{path}: cannot be read ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise BadImportFile(f"{path}: is a folder, not a file made by `trex export`")
        if not stat.S_ISREG(mode):
            raise BadImportFile(f"{path}: not a regular file (a device, pipe or socket), not a file made by "
                                "`trex export`")
        try:  # one thread: pyarrow's threaded read of a Python file object aborted the process at exit
            table = pq.read_table(f, use_threads=False)  # under load (std::terminate, 4 in 10 on 2 busy cores)
        except (OSError, pa.ArrowException) as e:
            raise BadImportFile(f"{path}: not a readable Parquet file ({e})") from None
    meta = table.schema.metadata or {}
    if EXPORT_MAGIC.encode() not in meta:
        raise BadImportFile(f"{path}: not a trex export (no {EXPORT_MAGIC} marker)")
    missing = set(segments.SCHEMA.names) - set(table.column_names)
    if missing:
        raise BadImportFile(f"{path}: missing columns {sorted(missing)}")
    try:
        table = table.select(segments.SCHEMA.names).cast(segments.SCHEMA)
    except (pa.ArrowException, ValueError) as e:
        raise BadImportFile(f"{path}: columns have the wrong types ({e})") from None
    for col in ("position", "search_id", "seq", "event_id", "type", "schema_version", "recorded_at", "payload",
                "prev_hash", "hash"):
        if table.column(col).null_count:
            raise BadImportFile(f"{path}: column {col!r} has nulls")
    try:  # a string column whose bytes are not UTF-8: refused by Arrow's own check, before Python decodes them
        table.validate(full=True)
    except (pa.ArrowException, ValueError) as e:
        raise BadImportFile(f"{path}: a column holds what its type does not allow ({_first_line(e)})") from None
    try:
        return table.to_pylist()
    except UnicodeDecodeError as e:
        raise BadImportFile(f"{path}: a text column holds bytes that are not UTF-8 ({e.reason} at byte {e.start})") from None


def _check_forks(log: EventLog, path: Path, order: list[str], by_stream: dict) -> None:
    """A fork in the file names a parent that the file or this home holds, at a seq the parent has
    reached: an orphan made `trex status` fail for every search of the home, and a fork past its
    parent's end took in whatever the parent appended after the import (its prefix was not fixed)."""
    def fork_of(sid: str):
        """(parent, at_seq) of a fork in the file or the home; None for a root search or a bad payload."""
        first = next((r for r in by_stream.get(sid, ()) if r["seq"] == 1), None)
        if first is None:
            try:
                first = next(iter(log.read_records(sid, until_seq=1)), None)
            except EventError:
                first = None
        if first is None or first["type"] != "SearchForked":
            return None
        try:
            payload = json.loads(first["payload"])
            parent, at = payload["parent_search_id"], payload["at_seq"]
        except (ValueError, KeyError, TypeError):
            return None  # the event's own check refuses it
        if not isinstance(parent, str) or isinstance(at, bool) or not isinstance(at, int):
            return None
        return parent, at

    for sid in order:
        fork = fork_of(sid)
        if fork is None:
            continue
        parent, at = fork
        seen, up = {sid}, fork
        while up is not None:  # the lineage ends at a root search: a cycle never ends a replay
            if up[0] in seen:
                raise BadImportFile(f"{path}: search {sid!r} forks, through {up[0]!r}, from itself")
            seen.add(up[0])
            if len(seen) - 1 > MAX_FORK_DEPTH:  # replay refuses it: `trex status` failed for every search
                raise BadImportFile(f"{path}: search {sid!r} sits under more than {MAX_FORK_DEPTH} forks, "
                                    "past what a replay follows")
            up = fork_of(up[0])
        ends = [r["seq"] for r in by_stream.get(parent, ())]
        try:
            ends.append(log.version(parent))
        except EventError:
            pass
        end = max(ends, default=0)
        if not end:
            raise BadImportFile(f"{path}: search {sid!r} forks from {parent!r}, which neither the file nor this "
                                "home holds (export the fork with its parent: `trex export` does)")
        if at > end:
            raise BadImportFile(f"{path}: search {sid!r} forks from {parent!r} at seq {at}, past its last event "
                                f"(seq {end})")


def import_file(log: EventLog, path: Path) -> dict[str, int]:
    """Validate the whole file first, then append each stream; returns events added per search.

    Importing the same file twice adds nothing (event ids are idempotent). A file
    whose hash chain does not verify, or that disagrees with what this home
    already holds for the same search, is rejected before anything is written.
    """
    records = _read_import(Path(path))
    by_stream: dict[str, list[dict]] = defaultdict(list)
    order: list[str] = []
    first_at: dict[str, tuple[str, int]] = {}
    for r in records:
        try:
            check_search_id(r["search_id"])
        except EventError as e:
            raise BadImportFile(f"{path}: {e}") from None
        seen = first_at.setdefault(r["event_id"], (r["search_id"], r["seq"]))
        if seen != (r["search_id"], r["seq"]):
            raise BadImportFile(f"{path}: event id {r['event_id']!r} appears twice (search {seen[0]!r} seq {seen[1]} "
                                f"and search {r['search_id']!r} seq {r['seq']})")
        if r["search_id"] not in by_stream:
            order.append(r["search_id"])
        by_stream[r["search_id"]].append(r)
    plans: dict[str, list[RawEvent]] = {}
    for sid in order:
        recs = sorted(by_stream[sid], key=lambda r: r["seq"])
        prev = GENESIS
        for i, r in enumerate(recs, start=1):
            env = Envelope(**r)
            where = f"{path}: search {sid!r} seq {env.seq}"
            if env.seq != i:
                raise BadImportFile(f"{where}: sequence has a gap (expected {i})")
            if env.prev_hash != prev or env.expected_hash() != env.hash:
                raise BadImportFile(f"{where}: hash chain does not verify (the file was modified or truncated)")
            prev = env.hash
        existing = {r["seq"]: r for r in log.read_records(sid)}
        for r in recs:
            mine = existing.get(r["seq"])
            if mine is not None and (mine["event_id"] != r["event_id"] or mine["hash"] != r["hash"]):
                raise BadImportFile(
                    f"{path}: search {sid!r} already exists here with a different event at seq {r['seq']}"
                )
        raws = [
            RawEvent(r["event_id"], r["type"], r["schema_version"], r["payload"], r["recorded_at"],
                     r["causation_id"], r["correlation_id"], expect_hash=r["hash"])
            for r in recs if r["seq"] not in existing
        ]
        for raw in raws:  # everything is checked before the first stream is appended: no half-import
            try:
                check_raw(raw)
                payload = strict_json(raw.payload)
                if not isinstance(payload, dict):
                    raise EventError("payload is not a JSON object")
                decode(raw.type, raw.schema_version, payload)
            except (EventError, ValueError) as e:
                raise BadImportFile(f"{path}: search {sid!r} event {raw.event_id}: {e}") from None
        plans[sid] = raws
    _check_forks(log, path, order, by_stream)
    held = {}
    for sid in order:
        for raw in plans[sid]:
            other = held.setdefault(raw.event_id, sid)
            if other != sid:
                raise BadImportFile(f"{path}: event id {raw.event_id} appears in searches {other!r} and {sid!r}")
    # every stream in one append: an import is written whole or not at all
    written: dict[str, int] = {}
    try:
        log.append_streams([(sid, plans[sid], len(by_stream[sid]) - len(plans[sid])) for sid in order if plans[sid]],
                           _validated=True, written=written)
    except ConcurrencyConflict as e:  # raised before anything is written: this home disagrees with the file
        raise BadImportFile(f"{path}: {e}") from None
    return {sid: written.get(sid, 0) for sid in order}  # what this import wrote, not what it planned
