"""Contract tests for the event log, run against every backend configuration."""
from __future__ import annotations

import json

import pytest

from trex.events import log as logmod
from trex.events.base import SchemaTooNew, UnknownEventType
from trex.events.envelope import GENESIS, NewEvent, RawEvent, canonical_json
from trex.events.log import ConcurrencyConflict, EventLog
from trex.events.notes import NoteAdded
from trex.events.search import SearchStarted
from trex.events.verify import verify


@pytest.fixture(params=["folder", "folder-tiny-segments"])
def elog(request, tmp_path, monkeypatch):
    if request.param == "folder-tiny-segments":
        monkeypatch.setattr(logmod, "SEAL_EVENTS", 3)
    return EventLog(tmp_path / "home")


def notes(*texts):
    return [NoteAdded(text=t) for t in texts]


def test_append_assigns_gapless_seq_and_positions(elog):
    a = elog.append("a", notes("1", "2"), expected_version=0)
    b = elog.append("b", notes("x"), expected_version=0)
    c = elog.append("a", notes("3"), expected_version=2)
    assert [e.seq for e in a + c] == [1, 2, 3]
    assert [e.position for e in a + b + c] == [1, 2, 3, 4]
    assert a[0].prev_hash == GENESIS and a[1].prev_hash == a[0].hash and c[0].prev_hash == a[1].hash
    assert [e.event.text for e in elog.read("a")] == ["1", "2", "3"]
    assert [e.search_id for e in elog.read()] == ["a", "a", "b", "a"]


def test_expected_version_conflict_writes_nothing(elog):
    elog.append("a", notes("1"), expected_version=0)
    with pytest.raises(ConcurrencyConflict, match="at version 1, expected 0"):
        elog.append("a", notes("2", "3"), expected_version=0)
    assert [e.event.text for e in elog.read("a")] == ["1"]


def test_retry_with_same_event_ids_is_idempotent(elog):
    batch = [NewEvent(NoteAdded(text="1")), NewEvent(NoteAdded(text="2"))]
    first = elog.append("a", batch, expected_version=0)
    again = elog.append("a", batch, expected_version=0)  # a retry after a lost ack: no conflict, no duplicate
    assert [e.event_id for e in again] == [e.event_id for e in first]
    assert len(elog.read("a")) == 2
    partial = [batch[1], NewEvent(NoteAdded(text="3"))]
    out = elog.append("a", partial, expected_version=2)
    assert [e.seq for e in out] == [3]
    assert [e.event.text for e in elog.read("a")] == ["1", "2", "3"]


def test_event_id_of_another_stream_is_a_conflict(elog):
    ne = NewEvent(NoteAdded(text="1"))
    elog.append("a", [ne])
    with pytest.raises(ConcurrencyConflict, match="already stored in search 'a'"):
        elog.append("b", [ne])


def test_two_handles_on_one_home_see_each_other(elog):
    other = EventLog(elog.home)
    elog.append("a", notes("1"))
    other.append("a", notes("2"), expected_version=1)
    elog.append("a", notes("3"), expected_version=2)
    assert [e.seq for e in other.read("a")] == [1, 2, 3]
    assert verify(other).ok


def test_read_until_and_after(elog):
    elog.append("a", notes(*"abcdef"))
    assert [e.seq for e in elog.read("a", until_seq=3)] == [1, 2, 3]
    assert [e.seq for e in elog.read("a", after_seq=4)] == [5, 6]


def test_unknown_type_and_too_new_version_are_rejected_on_append(elog):
    payload = canonical_json({"text": "x", "author": ""})
    with pytest.raises(UnknownEventType, match="NoSuchThing"):
        elog.append_raw("a", [RawEvent("e1", "NoSuchThing", 1, payload, "2026-01-01T00:00:00Z")])
    with pytest.raises(SchemaTooNew, match="schema version 9"):
        elog.append_raw("a", [RawEvent("e2", "NoteAdded", 9, payload, "2026-01-01T00:00:00Z")])
    assert elog.read() == []


def test_invalid_payload_is_rejected_and_nothing_written(elog):
    elog.append("a", notes("ok"))
    good = RawEvent("g", "NoteAdded", 1, canonical_json({"text": "fine", "author": ""}), "2026-01-01T00:00:00Z")
    bad = RawEvent("b", "NoteAdded", 1, canonical_json({"text": "", "nope": 1}), "2026-01-01T00:00:00Z")
    with pytest.raises(Exception, match="invalid payload"):
        elog.append_raw("a", [good, bad])
    assert [e.event.text for e in elog.read("a")] == ["ok"]  # atomic: the good one was not written either


def test_payload_round_trips_with_nan(elog):
    from trex.events.trials import TrialProgressed

    elog.append("a", [TrialProgressed(node_id="n", trial_id="t", step=3, loss=float("nan"))])
    (env,) = elog.read("a")
    assert env.event.loss != env.event.loss  # NaN survives the round trip
    assert verify(elog).ok


def test_sealing_keeps_everything_readable(tmp_path):
    elog = EventLog(tmp_path / "h")
    for i in range(5):
        elog.append("a", notes(str(i)))
    elog.seal()
    elog.append("a", notes("after"))
    assert [e.event.text for e in elog.read("a")] == ["0", "1", "2", "3", "4", "after"]
    files = sorted(p.name for p in elog.segdir.iterdir())
    assert files == ["00000001.parquet", "00000001.sha256", "00000002.jsonl"]  # a sealed segment and its digest
    assert verify(elog).ok
    assert elog.read_table().num_rows == 6


def test_invalid_search_ids_are_rejected(elog):
    for bad in ["", "a\x00b", "x" * 201]:
        with pytest.raises(Exception, match="invalid search id"):
            elog.append(bad, notes("1"))


def test_search_started_payload_is_typed(elog):
    elog.append("s", [SearchStarted(task="arith-sub", seed=3)])
    ev = elog.read("s")[0].event
    assert isinstance(ev, SearchStarted) and ev.seed == 3 and ev.budget.max_trials is None
    assert json.loads(elog.read("s")[0].payload)["task"] == "arith-sub"
