"""Group commit (``EventLog.append_group``): many appends, one record and one fsync, each append
answered as if it had been made alone — checked against the same appends made one by one."""
from __future__ import annotations

import os
import tempfile

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from trex.events import records
from trex.events.envelope import RawEvent
from trex.events.log import ConcurrencyConflict, EventError, EventLog, raws_of
from trex.events.notes import NoteAdded
from trex.events.verify import verify

AT = "2026-12-03T00:00:00.000000Z"


def note(eid: str, text: str = "x") -> RawEvent:
    return RawEvent(eid, "NoteAdded", 1, f'{{"author":"","text":"{text}"}}', AT)


def open_records(log: EventLog) -> int:
    """How many records (one per write) the open segment holds."""
    (n,) = [int(p.split(".")[0]) for p in os.listdir(log.segdir) if p.endswith(".jsonl")]
    path = log.seg_path(n, "jsonl")
    return len(records.scan(records.read_segment(path), path.name).bodies)


def test_a_group_is_one_record_and_each_request_is_answered_alone(tmp_path):
    log = EventLog(tmp_path)
    log.append_raw("a", [note("a0")])
    before = open_records(log)
    out = log.append_group([
        ("a", [note("a1"), note("a2")], 1),      # right version
        ("b", [note("b0")], 0),                  # a new stream
        ("a", [note("a3")], 1),                  # stale: the first request moved "a" to 3
        ("a", [note("a4")], 3),                  # sees the first request's events
        ("a", [note("a1"), note("a2")], 0),      # a retry of the first in the same group: its envelopes
        ("b", [note("a0")], None),               # an id stored in another stream
        ("", [note("z0")], None),                # not a search id
        ("c", [note("c0"), note("c0")], None),   # duplicate ids in one request
        ("c", [RawEvent("c1", "NoSuchEvent", 1, "{}", AT)], None),  # not an event
        ("c", [], None),                          # nothing to do
    ])
    assert open_records(log) == before + 1  # one write for the whole group
    assert [e.seq for e in out[0]] == [2, 3] and [e.seq for e in out[1]] == [1]
    assert isinstance(out[2], ConcurrencyConflict) and "at version 3, expected 1" in str(out[2])
    assert [e.seq for e in out[3]] == [4]
    assert [e.event_id for e in out[4]] == ["a1", "a2"] and [e.seq for e in out[4]] == [2, 3]
    assert isinstance(out[5], ConcurrencyConflict) and "already stored in search 'a'" in str(out[5])
    for i in (6, 7, 8):
        assert isinstance(out[i], EventError), out[i]
    assert out[9] == []
    stored = [(e.search_id, e.seq, e.event_id) for e in EventLog(tmp_path).read()]
    assert stored == [("a", 1, "a0"), ("a", 2, "a1"), ("a", 3, "a2"), ("b", 1, "b0"), ("a", 4, "a4")]
    assert verify(EventLog(tmp_path)).ok


def test_a_retry_of_events_stored_earlier_gets_their_envelopes(tmp_path):
    log = EventLog(tmp_path)
    first = log.append_raw("a", [note("a0"), note("a1")])
    (again,) = log.append_group([("a", [note("a0"), note("a1")], 0)])
    assert again == first


def test_a_failed_write_fails_every_staged_request_and_stores_nothing(tmp_path, monkeypatch):
    log = EventLog(tmp_path)
    log.append_raw("a", [note("a0")])

    def disk_full(recs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log, "_write_line", disk_full)
    out = log.append_group([("a", [note("a1")], None), ("b", [note("b0")], 0), ("a", [note("a2")], 7)])
    assert isinstance(out[0], OSError) and isinstance(out[1], OSError)
    assert isinstance(out[2], ConcurrencyConflict)  # its own answer: it was never staged
    monkeypatch.undo()
    assert [e.event_id for e in EventLog(tmp_path).read()] == ["a0"]
    assert [e.seq for e in log.append_raw("a", [note("a1")])] == [2]  # the index was not moved


REQUEST = st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3),
                    st.one_of(st.none(), st.integers(0, 6)), st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=st.lists(st.lists(REQUEST, min_size=1, max_size=6), min_size=1, max_size=4))
def test_groups_store_and_answer_what_one_by_one_appends_would(groups):
    """Each group against the same requests appended one at a time on another log: the same
    streams, seqs and ids, and the same answer (envelopes or the same kind of error) per request."""
    counter = 0
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        grouped, single = EventLog(d1), EventLog(d2)
        sent: list[RawEvent] = []
        for group in groups:
            reqs = []
            for stream, n, version, retry in group:
                if retry and sent:
                    raws = [sent[-1]]  # an event stored (or staged) before: idempotent
                else:
                    raws = []
                    for _ in range(n):
                        counter += 1
                        raws.append(note(f"e{counter}", f"t{counter}"))
                    sent.extend(raws)
                reqs.append((stream, raws, version))
            got = grouped.append_group(reqs)
            for (stream, raws, version), g in zip(reqs, got):
                try:
                    want = single.append_raw(stream, raws, version)
                except (ConcurrencyConflict, EventError) as e:
                    assert type(g) is type(e), (g, e)
                    continue
                assert not isinstance(g, BaseException), g
                assert [(e.search_id, e.seq, e.event_id) for e in g] == [(e.search_id, e.seq, e.event_id) for e in want]
        key = [(e.search_id, e.seq, e.event_id, e.payload) for e in grouped.read()]
        assert key == [(e.search_id, e.seq, e.event_id, e.payload) for e in single.read()]
        assert verify(EventLog(d1)).ok


def test_raws_of_fixes_the_ids_so_a_resend_is_idempotent(tmp_path):
    log = EventLog(tmp_path)
    raws = raws_of([NoteAdded(text="one"), NoteAdded(text="two")], correlation_id="c")
    (first,) = log.append_group([("s", raws, 0)], _validated=True)  # stamped by the log (recorded_at "")
    (again,) = log.append_group([("s", raws, 0)], _validated=True)
    assert first == again and [e.seq for e in first] == [1, 2]
    assert [e.correlation_id for e in log.read("s")] == ["c", "c"]


@pytest.mark.parametrize("n", [1, 20])
def test_catch_up_sees_another_handles_appends_after_the_fast_path(tmp_path, n):
    """The appender's catch-up skips listing the folder when its open segment is unchanged; any
    other writer's append changes it, and is seen."""
    a, b = EventLog(tmp_path), EventLog(tmp_path)
    for i in range(n):
        a.append_raw("s", [note(f"a{i}")])
        b.append_raw("s", [note(f"b{i}")])
    assert [e.seq for e in EventLog(tmp_path).read("s")] == list(range(1, 2 * n + 1))
    b.seal()  # sealed by the other handle: the first must start a new segment, not write to the old one
    a.append_raw("s", [note("after")])
    assert [e.event_id for e in EventLog(tmp_path).read("s")][-1] == "after"
    assert verify(EventLog(tmp_path)).ok
