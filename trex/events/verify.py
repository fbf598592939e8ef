"""``trex verify``: hash chains, gapless sequences, unique ids, segment footers, torn tails."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from trex.events.base import EventError, decode
from trex.events.envelope import GENESIS, Envelope
from trex.events import records
from trex.events.errors import CorruptLog
from trex.events.fsio import DigestUnreadable, read_digest
from trex.events.log import EventLog


@dataclass(frozen=True)
class Problem:
    # torn_tail | missing_segment | corrupt_segment | corrupt_digest | corrupt_record | quarantined | hash_mismatch | broken_chain | gap
    # | duplicate_id | bad_payload
    kind: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.detail}"


@dataclass
class Report:
    events: int = 0
    searches: int = 0
    segments: int = 0
    problems: list[Problem] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)  # names of the files under HOME/log/quarantine
    quarantine: list = field(default_factory=list)  # the same, described (trex.events.quarantine.QuarantineFile)
    notes: list[str] = field(default_factory=list)  # findings that do not fail verify (a quarantined header)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(log: EventLog, search_id: str | None = None, check_payloads: bool = True) -> Report:
    """Check the whole log (or one stream's chain); safe while searches append and seal."""
    for _attempt in range(20):
        try:
            return _verify(log, search_id, check_payloads)
        except FileNotFoundError:
            continue  # a segment was sealed while we read it: start over
    raise EventError("the log kept being sealed under verify; try again")


def _verify(log: EventLog, search_id: str | None, check_payloads: bool) -> Report:
    from trex.events import layout, segments

    rep = Report()
    sealed, open_ = layout.listing(log.segdir, allow_missing=True)
    gone, count = layout.missing(sealed, open_)
    for n in gone:
        rep.problems.append(Problem("missing_segment", f"{n:08d}", "no segment of this number: the events it held "
                                    "are not in the log (deleted or moved); restore it from a backup"))
    if count > len(gone):
        rep.problems.append(Problem("missing_segment", f"{count - len(gone)} more", "segment numbers missing "
                                    f"up to {max(sealed + open_):08d} (a stray file of that number?)"))
    tagged: list[tuple[str, dict]] = []
    readable = []
    for n in sealed:
        path = log.seg_path(n, "parquet")
        rep.segments += 1
        try:
            read_digest(path)
        except DigestUnreadable as e:  # the segment itself is checked whole below, as if it had none
            rep.problems.append(Problem("corrupt_digest", path.name, _unprefixed(str(e), path.name)
                                        + "; `trex verify --repair` checks the segment whole and records it again"))
        except EventError:
            pass  # a link: read_table below refuses it, one problem for the segment
        try:
            segments.check_footer(path)
            recs = segments.read_table(path).to_pylist()
        except EventError as e:
            rep.problems.append(Problem("corrupt_segment", path.name, _unprefixed(str(e), path.name)))
            continue
        tagged.extend((path.name, r) for r in recs)
        readable.append(path)
    from trex.events.sql import check_column_types

    for path, why in check_column_types(readable):  # as DuckDB reads them, digest or not
        rep.problems.append(Problem("corrupt_segment", path.name, why))
    for n in open_:
        path = log.seg_path(n, "jsonl")
        rep.segments += 1
        try:
            scan = records.scan(records.read_segment(path), path.name, salvage=True)
        except CorruptLog as e:  # a newer format: not damage, nothing of it can be read here
            rep.problems.append(Problem("corrupt_segment", path.name, _unprefixed(str(e), path.name)))
            continue
        for d in scan.damage:
            rep.problems.append(
                Problem("corrupt_record", f"{path.name} byte {d.offset}",
                        f"{d.reason} ({d.end - d.offset} bytes); `trex verify --repair` moves them to the quarantine")
            )
        if scan.torn:
            rep.problems.append(
                Problem(
                    "torn_tail", path.name,
                    f"{scan.torn} bytes after byte {scan.end} are an incomplete append that was never "
                    "acknowledged (a crash mid-write); `trex verify --repair` truncates them",
                )
            )
        tagged.extend((path.name, r) for r in scan.records)
    _quarantine(log, rep)

    seen_ids: dict[str, str] = {}
    expected_pos = 1
    streams: dict[str, tuple[int, str]] = {}
    for where, r in tagged:
        env = Envelope(**r)
        loc = f"{where} position {env.position} (search {env.search_id!r}, seq {env.seq}, event {env.event_id})"
        if env.position != expected_pos:
            rep.problems.append(Problem("gap", loc, f"global position {env.position}, expected {expected_pos}"))
        expected_pos = env.position + 1
        if env.event_id in seen_ids:
            rep.problems.append(Problem("duplicate_id", loc, f"event id also stored at {seen_ids[env.event_id]}"))
        seen_ids[env.event_id] = loc
        if search_id is not None and env.search_id != search_id:
            continue
        rep.events += 1
        last_seq, last_hash = streams.get(env.search_id, (0, GENESIS))
        if env.seq != last_seq + 1:
            rep.problems.append(Problem("gap", loc, f"stream sequence {env.seq}, expected {last_seq + 1}"))
        if env.prev_hash != last_hash:
            rep.problems.append(Problem("broken_chain", loc, "prev_hash does not match the previous event's hash"))
        computed = env.expected_hash()
        if computed != env.hash:
            rep.problems.append(
                Problem("hash_mismatch", loc, f"stored hash {env.hash[:16]}…, computed {computed[:16]}…: the event was modified")
            )
        streams[env.search_id] = (env.seq, env.hash)
        if check_payloads:
            try:
                decode(env.type, env.schema_version, json.loads(env.payload))
            except (EventError, ValueError) as e:
                rep.problems.append(Problem("bad_payload", loc, str(e)))
    rep.searches = len(streams)
    return rep


def _unprefixed(detail: str, name: str) -> str:
    """A message without the segment name the problem line already starts with."""
    for prefix in (f"segment {name}: ", f"{name}: "):
        if detail.startswith(prefix):
            return detail[len(prefix):]
    return detail


def _quarantine(log: EventLog, rep: Report) -> None:
    """Each quarantine file is a finding of its own: records in it are acknowledged events that
    repair moved out of the log, so verify fails (exit 1) until an operator has dealt with them
    and moved the file out of the folder. A file holding only a damaged segment header (no event)
    is a note: reported, not failing."""
    from trex.events.quarantine import quarantine_files

    qdir = log.dir / "quarantine"
    if qdir.is_symlink():
        rep.problems.append(Problem("quarantined", "quarantine", f"{qdir} is a symbolic link (not followed)"))
        return
    rep.quarantine = quarantine_files(log.dir)
    rep.quarantined = [q.name for q in rep.quarantine]
    for q in rep.quarantine:
        where = f"quarantine/{q.name}"
        origin = f" from {q.segment} byte {q.offset}" if q.segment else ""
        if not q.regular:
            rep.problems.append(Problem("quarantined", where, "is not a regular file (a link is never followed): "
                                        "repair does not write it; remove it"))
        elif q.header and not q.records:
            rep.notes.append(f"{qdir / q.name}: a damaged segment header ({q.size} bytes){origin}, "
                             "moved out by repair; it held no event")
        else:
            rep.problems.append(Problem(
                "quarantined", where,
                f"at least {q.records} damaged record(s) ({q.size} bytes){origin}"
                f"{' with a damaged segment header' if q.header else ''} moved out of the log by repair: "
                f"their events are not in the log; inspect {qdir / q.name}, then move it out of the "
                "quarantine folder to clear this"))
