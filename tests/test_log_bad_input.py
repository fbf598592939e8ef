"""Damaged logs and bad input get precise errors and lose nothing that was acknowledged."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from trex.events.base import SchemaTooNew, UnknownEventType
from trex.events.envelope import chain_hash
from trex.events.log import CorruptLog, EventLog, encode_line
from trex.events.notes import NoteAdded
from trex.events.records import HEADER_V2
from trex.events.segments import CorruptSegment
from trex.events.transfer import BadImportFile, export_search, import_file
from trex.events.verify import verify


def _notes(n, prefix="n"):
    return [NoteAdded(text=f"{prefix}{i}") for i in range(n)]


def _open_segment(log):
    (path,) = [p for p in log.segdir.iterdir() if p.suffix == ".jsonl"]
    return path


def test_torn_tail_is_reported_then_dropped_and_acknowledged_events_survive(log):
    log.append("s", _notes(3))
    path = _open_segment(log)
    whole = encode_line([{"position": 4, "search_id": "s"}])
    with open(path, "ab") as f:  # a crash in the middle of an append's write
        f.write(whole[: len(whole) // 2])
    rep = verify(EventLog(log.home))
    assert [p.kind for p in rep.problems] == ["torn_tail"]
    assert "never acknowledged" in rep.problems[0].detail and path.name in rep.problems[0].where
    fresh = EventLog(log.home)
    assert [e.event.text for e in fresh.read("s")] == ["n0", "n1", "n2"]  # readers skip the torn tail
    out = fresh.append("s", [NoteAdded(text="after")], expected_version=3)  # the writer truncates it
    assert out[0].seq == 4 and out[0].position == 4
    assert verify(fresh).ok


def test_flipped_byte_in_open_segment_is_reported_precisely(log):
    log.append("s", _notes(2))
    log.append("s", _notes(2, "m"))
    path = _open_segment(log)
    data = bytearray(path.read_bytes())
    i = data.index(b"n1")
    data[i + 1] ^= 0x01
    path.write_bytes(bytes(data))
    rep = verify(EventLog(log.home))
    assert rep.problems and rep.problems[0].kind == "corrupt_record"
    with pytest.raises(CorruptLog, match=rf"segment {path.name}: damaged record at byte {len(HEADER_V2)}: checksum"):
        EventLog(log.home).append("s", _notes(1))


def test_flipped_byte_in_sealed_segment_is_reported_and_never_rewritten(log):
    log.append("s", _notes(50))
    log.seal()
    (seg,) = list(log.segdir.glob("*.parquet"))
    data = bytearray(seg.read_bytes())
    data[len(data) // 3] ^= 0xFF
    seg.write_bytes(bytes(data))
    rep = verify(EventLog(log.home))
    assert rep.problems and rep.problems[0].kind == "corrupt_segment" and seg.name in rep.problems[0].where
    with pytest.raises(CorruptSegment, match=seg.name):
        EventLog(log.home).read("s")
    damaged = seg.read_bytes()
    try:  # appending goes to a new segment; it never touches (or "fixes") the damaged one
        EventLog(log.home).append("s", _notes(1))
    except CorruptSegment:
        pass
    assert seg.read_bytes() == damaged
    assert not verify(EventLog(log.home)).ok


def test_truncated_parquet_footer_is_reported(log):
    log.append("s", _notes(5))
    log.seal()
    (seg,) = list(log.segdir.glob("*.parquet"))
    seg.write_bytes(seg.read_bytes()[:-10])
    rep = verify(EventLog(log.home))
    assert rep.problems[0].kind == "corrupt_segment" and "footer" in rep.problems[0].detail


def test_modified_payload_breaks_the_hash_chain(log):
    log.append("s", _notes(3))
    path = _open_segment(log)
    recs = json.loads(path.read_bytes()[len(HEADER_V2):].split(b" ", 2)[2])
    recs[1]["payload"] = json.dumps({"author": "", "text": "forged"}, separators=(",", ":"))
    path.write_bytes(HEADER_V2 + encode_line(recs))  # a valid CRC: only the hash chain can tell
    rep = verify(EventLog(log.home))
    assert [p.kind for p in rep.problems] == ["hash_mismatch"]
    assert "seq 2" in rep.problems[0].where


def _forge(log, type_, version, payload):
    """Store an event as a newer trex would: valid line, valid hash, unknown to this code."""
    prev = log.read("s")[-1]
    p = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    rec = {"position": prev.position + 1, "search_id": "s", "seq": prev.seq + 1, "event_id": "forged",
           "type": type_, "schema_version": version, "recorded_at": "2026-01-01T00:00:00Z",
           "causation_id": None, "correlation_id": None, "payload": p, "prev_hash": prev.hash}
    rec["hash"] = chain_hash(prev.hash, "forged", "s", prev.seq + 1, type_, version, rec["recorded_at"], None, None, p)
    with open(_open_segment(log), "ab") as f:
        f.write(encode_line([rec]))


def test_unknown_event_type_in_the_log_is_a_hard_error_on_decode(log):
    log.append("s", _notes(1))
    _forge(log, "WidgetFrobbed", 1, {"x": 1})
    env = EventLog(log.home).read("s")[-1]
    with pytest.raises(UnknownEventType, match="WidgetFrobbed"):
        env.event
    rep = verify(EventLog(log.home))
    assert [p.kind for p in rep.problems] == ["bad_payload"]


@pytest.mark.parametrize("type_, version, error, match", [
    ("WidgetFrobbed", 1, UnknownEventType, "seq 2: unknown event type 'WidgetFrobbed'"),
    ("NoteAdded", 7, SchemaTooNew, "version 7.*upgrade trex"),
    ("ExecutorLeased", 9, SchemaTooNew, "seq 2: ExecutorLeased version 9 is newer"),  # one the tree skips
])
def test_the_fold_refuses_an_event_it_cannot_read_rather_than_skip_it(log, type_, version, error, match):
    """A record with a right checksum and hash the fold does not know would otherwise be skipped
    unread: a tree short of an event, exit 0."""
    from trex.search.projection import fold

    log.append("s", _notes(1))
    _forge(log, type_, version, {"x": 1})
    with pytest.raises(error, match=match):
        fold(EventLog(log.home).read("s"))
    with pytest.raises(error, match=match):
        fold(EventLog(log.home).read_records("s"))


def test_too_new_schema_version_in_the_log_is_a_hard_error(log):
    log.append("s", _notes(1))
    _forge(log, "NoteAdded", 7, {"text": "from the future", "author": ""})
    with pytest.raises(SchemaTooNew, match="version 7.*upgrade trex"):
        EventLog(log.home).read("s")[-1].event


def test_malformed_import_files_are_rejected_before_anything_is_written(log, tmp_path):
    log.append("s", _notes(4))
    good = tmp_path / "s.parquet"
    export_search(log, "s", good)
    other = EventLog(tmp_path / "other")

    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(BadImportFile, match="not a readable Parquet file"):
        import_file(other, junk)

    table = pq.read_table(good)
    plain = tmp_path / "plain.parquet"
    pq.write_table(table.replace_schema_metadata({}), plain)
    with pytest.raises(BadImportFile, match="not a trex export"):
        import_file(other, plain)

    rows = table.to_pylist()
    rows[2]["payload"] = json.dumps({"author": "", "text": "tampered"}, separators=(",", ":"))
    import pyarrow as pa

    tampered = tmp_path / "tampered.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), tampered)
    with pytest.raises(BadImportFile, match="seq 3: hash chain does not verify"):
        import_file(other, tampered)

    gap = tmp_path / "gap.parquet"
    pq.write_table(pa.Table.from_pylist(rows[:1] + rows[2:], schema=table.schema), gap)
    with pytest.raises(BadImportFile, match="gap"):
        import_file(other, gap)

    missing = tmp_path / "missing.parquet"
    pq.write_table(table.drop(["hash"]), missing)
    with pytest.raises(BadImportFile, match="missing columns"):
        import_file(other, missing)
    assert other.read() == []


def test_export_import_round_trip_is_idempotent_and_keeps_hashes(log, tmp_path):
    log.append("s", _notes(3))
    log.append("t", _notes(1))
    out = tmp_path / "s.parquet"
    assert export_search(log, "s", out) == 3
    other = EventLog(tmp_path / "other")
    other.append("unrelated", _notes(2))
    assert import_file(other, out) == {"s": 3}
    assert import_file(other, out) == {"s": 0}
    mine = [(e.event_id, e.seq, e.hash) for e in log.read("s")]
    theirs = [(e.event_id, e.seq, e.hash) for e in other.read("s")]
    assert mine == theirs
    assert verify(other).ok
    # the origin goes on; a later export imports only the new suffix
    log.append("s", _notes(2, "late"))
    export_search(log, "s", out)
    assert import_file(other, out) == {"s": 2}
    # a home whose stream diverged refuses the file
    other.append("s", _notes(1, "local"))
    log.append("s", _notes(1, "remote"))
    export_search(log, "s", out)
    with pytest.raises(BadImportFile, match="different event at seq 6"):
        import_file(other, out)


def test_a_bad_stream_anywhere_in_an_import_writes_nothing(log, tmp_path):
    import pyarrow as pa

    log.append("a", _notes(2))
    log.append("b", _notes(2))
    both = tmp_path / "both.parquet"
    from trex.events import segments

    recs = [e._asdict() for e in log.read()]
    # stream b gets an event whose payload is invalid for its type, chain recomputed so only the payload is wrong
    from trex.events.envelope import GENESIS

    prev = GENESIS
    for r in recs:
        if r["search_id"] == "b":
            if r["seq"] == 2:
                r["payload"] = json.dumps({"text": ""})  # NoteAdded needs a non-empty text
            r["prev_hash"] = prev
            r["hash"] = chain_hash(prev, r["event_id"], "b", r["seq"], r["type"], r["schema_version"],
                                   r["recorded_at"], r["causation_id"], r["correlation_id"], r["payload"])
            prev = r["hash"]
    segments.write_parquet(both, recs, metadata={"trex.export.v1": "a"})
    other = EventLog(tmp_path / "other")
    with pytest.raises(BadImportFile, match="search 'b'"):
        import_file(other, both)
    assert other.read() == []
    bad_time = [dict(r) for r in recs if r["search_id"] == "a"]
    bad_time[0]["recorded_at"] = "not a time"
    bad_time[0]["hash"] = chain_hash(GENESIS, bad_time[0]["event_id"], "a", 1, "NoteAdded", 1, "not a time",
                                     None, None, bad_time[0]["payload"])
    bad_time[1]["prev_hash"] = bad_time[0]["hash"]
    bad_time[1]["hash"] = chain_hash(bad_time[0]["hash"], bad_time[1]["event_id"], "a", 2, "NoteAdded", 1,
                                     bad_time[1]["recorded_at"], None, None, bad_time[1]["payload"])
    f = tmp_path / "time.parquet"
    segments.write_parquet(f, bad_time, metadata={"trex.export.v1": "a"})
    with pytest.raises(BadImportFile, match="recorded_at"):
        import_file(other, f)
    assert other.read() == []
    with pytest.raises(Exception, match="refusing to export into the log"):
        export_search(log, "a", log.segdir / "00000099.parquet")


def _forged_export(log, tmp_path, name, change):
    """An export of every stream in ``log`` with ``change(record)`` applied and the chains recomputed."""
    from trex.events import segments
    from trex.events.envelope import GENESIS

    recs = [e._asdict() for e in log.read()]
    prev: dict = {}
    for r in recs:
        change(r)
        p = prev.get(r["search_id"], GENESIS)
        r["prev_hash"] = p
        r["hash"] = chain_hash(p, r["event_id"], r["search_id"], r["seq"], r["type"], r["schema_version"],
                               r["recorded_at"], r["causation_id"], r["correlation_id"], r["payload"])
        prev[r["search_id"]] = r["hash"]
    out = tmp_path / f"{name}.parquet"
    segments.write_parquet(out, recs, metadata={"trex.export.v1": "a"})
    return out


@pytest.mark.parametrize("name, change, message", [
    ("time", lambda r: r.update(recorded_at="2026-13-45T25:61:00.000000Z") if r["seq"] == 2 and r["search_id"] == "b"
     else None, "is not a real time"),
    ("dupkeys", lambda r: r.update(payload='{"author":"","text":"one","text":"two"}')
     if r["seq"] == 1 and r["search_id"] == "b" else None, "duplicate key 'text'"),
])
def test_an_import_is_parsed_strictly_and_written_whole_or_not_at_all(log, tmp_path, name, change, message):
    log.append("a", _notes(2))
    log.append("b", _notes(2))
    forged = _forged_export(log, tmp_path, name, change)
    other = EventLog(tmp_path / "other")
    with pytest.raises(BadImportFile, match=message):
        import_file(other, forged)
    assert other.read() == []  # stream a, valid, was not imported either


def test_a_conflict_in_one_stream_leaves_the_other_streams_of_the_import_unwritten(log, tmp_path):
    log.append("a", _notes(2))
    log.append("b", _notes(2))
    both = _forged_export(log, tmp_path, "both", lambda r: None)
    other = EventLog(tmp_path / "other")
    other.append("b", _notes(1, "mine"))  # b here diverges from the file's b
    with pytest.raises(BadImportFile):
        import_file(other, both)
    assert {e.search_id for e in other.read()} == {"b"} and len(other.read("b")) == 1
    fresh = EventLog(tmp_path / "fresh")
    assert import_file(fresh, both) == {"a": 2, "b": 2}
    assert verify(fresh).ok


def test_append_streams_writes_every_stream_or_none(log):
    from trex.events.log import ConcurrencyConflict
    from trex.events.base import encode_json
    from trex.events.envelope import RawEvent

    def raws(prefix, n):
        out = []
        for i, ev in enumerate(_notes(n, prefix)):
            t, v, payload = encode_json(ev)
            out.append(RawEvent(f"{prefix}-{i}", t, v, payload, "2026-12-02T00:00:00.000000Z"))
        return out

    log.append("b", _notes(1))
    with pytest.raises(ConcurrencyConflict, match="'b' is at version 1"):
        log.append_streams([("a", raws("a", 2), 0), ("b", raws("b", 2), 0)])
    assert log.read("a") == [] and len(log.read("b")) == 1
    got = log.append_streams([("a", raws("a", 2), 0), ("b", raws("b", 2), 1)])
    assert [e.seq for e in got["a"]] == [1, 2] and [e.seq for e in got["b"]] == [2, 3]
    assert verify(log).ok


def test_a_segment_missing_from_the_middle_fails_every_reader_and_verify_names_it(log):
    """Deleting sealed segment 2 of 3 left readers returning the events around it with exit 0."""
    from trex.events.layout import SegmentMissing

    for i in range(3):
        log.append("s", _notes(2, f"p{i}"))
        log.seal()
    (log.segdir / "00000002.parquet").unlink()
    (log.segdir / "00000002.sha256").unlink()
    with pytest.raises(SegmentMissing, match="segment 00000002 is missing"):
        EventLog(log.home).read("s")
    rep = verify(EventLog(log.home))
    assert rep.problems[0].kind == "missing_segment" and rep.problems[0].where == "00000002"


@pytest.mark.parametrize("type_, payload", [("NodeSelected", {}), ("TrialFinished", {"node_id": [1]})])
def test_a_payload_the_fold_cannot_read_is_one_line_naming_it(log, type_, payload):
    """A record altered with its checksum and hash recomputed: the handler's KeyError/TypeError was the
    whole message."""
    from trex.events.base import InvalidPayload
    from trex.search.projection import fold

    log.append("s", _notes(1))
    _forge(log, type_, 1, payload)
    with pytest.raises(InvalidPayload, match=rf"search 's' seq 2: the {type_} payload cannot be folded"):
        fold(EventLog(log.home).read("s"))


@pytest.mark.parametrize("linked", ["log", "log/segments"])
def test_a_linked_log_or_segments_folder_is_refused_by_readers_too(log, tmp_path, linked):
    """Writers refused the link; readers followed it and answered another home's log with exit 0."""
    import shutil

    from trex.events.errors import LinkRefused
    from trex.events.sql import SqlFailed, query

    log.append("s", _notes(2))
    other = tmp_path / "other"
    src = log.home / linked
    shutil.move(str(src), str(other))
    src.symlink_to(other)
    with pytest.raises(LinkRefused, match="is a symbolic link"):
        EventLog(log.home).read("s")
    with pytest.raises(SqlFailed, match="is a symbolic link"):
        query(log.home, "SELECT count(*) FROM events")


@pytest.mark.parametrize("stray", ["1.parquet", "2.jsonl", "٣.jsonl", "99999999.jsonl"])
def test_a_stray_file_never_aliases_a_segment_nor_costs_memory(log, stray):
    """An empty '1.parquet' was read as segment 1 (every event twice); '99999999.jsonl' made the
    missing-segment check list a hundred million numbers. Only the names trex writes are segments,
    and a gap up to a stray number is counted, not listed."""
    from trex.events.layout import SegmentMissing

    log.append("s", _notes(2))
    log.seal()
    log.append("s", _notes(1, "m"))
    (log.segdir / stray).write_bytes(b"")
    if stray == "99999999.jsonl":
        with pytest.raises(SegmentMissing, match=r"segment 00000003 is missing .* \(and 99999995 more\)"):
            EventLog(log.home).read("s")
    else:
        assert [e.seq for e in EventLog(log.home).read("s")] == [1, 2, 3]
