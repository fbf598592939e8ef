"""Hostile calls to the shared services: the home's log service and a pool's lease scheduler.

Both are Ray actors that many processes call; a caller with a bug (or worse) must get one clear
refusal naming what is wrong, and nothing stored, lost or leased may change. The shells are
called directly here (what Ray would run in the actor); what is under test is their checks.
"""
from __future__ import annotations

import dataclasses
import math

import pytest

from trex.actors.log_service import LogServiceShell
from trex.actors.scheduler import MAX_POOL, SchedulerCallError, SchedulerShell
from trex.events.envelope import NewEvent
from trex.events.log import ConcurrencyConflict, EventError, EventLog, raws_of
from trex.events.notes import NoteAdded

NOW = "2026-12-05T10:00:00.000000Z"


def _raw(**changes):
    """A serialised note as an import or a remote caller sends it, with ``changes`` applied."""
    r = dataclasses.replace(raws_of([NewEvent(NoteAdded(text="hostile"))])[0], recorded_at=NOW)
    return dataclasses.replace(r, **changes)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    home = tmp_path_factory.mktemp("svc")
    svc = LogServiceShell(str(home))
    svc.append("s1", raws_of([NewEvent(NoteAdded(text="acknowledged"))]))
    return svc


def _stored(svc) -> list:
    return [(e.search_id, e.seq, e.event_id, e.payload) for e in EventLog(svc.home).read()]


DEEP = '{"text":' + "[" * 5000 + "]" * 5000 + "}"

APPENDS = {
    # (search id, raws, expected version, validated) -> words the refusal must contain
    "search id empty": (("", [_raw()], None, False), "search id"),
    "search id None": ((None, [_raw()], None, False), "search id"),
    "search id a number": ((7, [_raw()], None, False), "search id"),
    "search id with NUL": (("s\x00", [_raw()], None, False), "search id"),
    "search id 5000 chars": (("s" * 5000, [_raw()], None, False), "search id"),
    "raws a string": (("s1", "events", None, False), "list of serialised events"),
    "raws of dicts": (("s1", [{"event_id": "x"}], None, False), "list of serialised events"),
    "raws None": (("s1", None, None, True), "list of serialised events"),
    "expected version a string": (("s1", [_raw()], "1", True), "expected version"),
    "expected version negative": (("s1", [_raw()], -1, True), "expected version"),
    "expected version NaN": (("s1", [_raw()], math.nan, True), "expected version"),
    "expected version a bool": (("s1", [_raw()], True, True), "expected version"),
    "expected version behind": (("s1", [_raw()], 0, True), "expected 0"),
    "payload a list": (("s1", [_raw(payload="[1]")], None, False), "not a JSON object"),
    "payload not JSON": (("s1", [_raw(payload="{x")], None, False), "strict JSON"),
    "payload duplicate keys": (("s1", [_raw(payload='{"text":"a","text":"b"}')], None, False), "strict JSON"),
    "payload NaN": (("s1", [_raw(payload='{"text":NaN}')], None, False), "strict JSON"),
    "payload nested 5000 deep": (("s1", [_raw(payload=DEEP)], None, False), "nested"),
    "payload None": (("s1", [_raw(payload=None)], None, False), "payload"),
    "payload extra field": (("s1", [_raw(payload='{"text":"a","x":1}')], None, False), "x"),
    "payload wrong type": (("s1", [_raw(payload='{"text":5}')], None, False), "text"),
    "unknown event type": (("s1", [_raw(type="NoSuchEvent")], None, False), "NoSuchEvent"),
    "schema version from the future": (("s1", [_raw(schema_version=99)], None, False), "99"),
    "schema version a string": (("s1", [_raw(schema_version="1")], None, False), "schema version"),
    "time not a real time": (("s1", [_raw(recorded_at="2026-13-45T99:99:99Z")], None, False), "not a real time"),
    "time not UTC": (("s1", [_raw(recorded_at="2026-12-05T10:00:00+02:00")], None, False), "recorded_at"),
    "event id empty": (("s1", [_raw(event_id="")], None, False), "event id"),
    "event id 500 chars": (("s1", [_raw(event_id="e" * 500)], None, False), "event id"),
    "one id twice in a call": (("s1", [_raw(event_id="dup"), _raw(event_id="dup")], None, False), "duplicate"),
}


@pytest.mark.parametrize("case", sorted(APPENDS))
def test_a_hostile_append_is_refused_and_changes_nothing(service, case):
    args, words = APPENDS[case]
    before = _stored(service)
    with pytest.raises((EventError, ConcurrencyConflict)) as err:
        service.append(*args)
    msg = str(err.value)
    assert words in msg and "\n" not in msg and len(msg) < 600, msg
    assert _stored(service) == before


def test_an_acknowledged_event_id_sent_again_with_other_content_is_refused(service):
    first = service.read("s1")[0]
    before = _stored(service)
    with pytest.raises(EventError):
        service.append("s1", [_raw(event_id=first.event_id, payload='{"text":"rewritten"}')], validated=False)
    assert _stored(service) == before and service.read("s1")[0].payload == first.payload


READS = {
    "after_seq negative": (("s1", -1), "after_seq"),
    "after_seq a string": (("s1", "0"), "after_seq"),
    "after_seq NaN": (("s1", math.nan), "after_seq"),
    "after_seq None": (("s1", None), "after_seq"),
    "until_seq negative": (("s1", 0, -3), "until_seq"),
    "until_seq a float": (("s1", 0, 2.5), "until_seq"),
    "search id a list": ((["s1"], 0), "search id"),
}


@pytest.mark.parametrize("case", sorted(READS))
@pytest.mark.parametrize("method", ["read", "read_records"])
def test_a_hostile_read_is_refused(service, case, method):
    args, words = READS[case]
    with pytest.raises(EventError, match=words):
        getattr(service, method)(*args)


@pytest.mark.parametrize("key", [5, None, "", "k" * 10_000, ["k"]])
def test_a_hostile_work_key_is_refused(service, key):
    with pytest.raises(ValueError, match="work key"):
        service.find_work(key)


def test_the_version_of_no_search_is_refused_not_the_whole_logs(service):
    with pytest.raises(EventError, match="search id"):
        service.version(None)


@pytest.fixture
def scheduler():
    s = SchedulerShell(2)
    s.request("a", [], 1)  # a holds executor 0
    return s


def _book(s) -> dict:
    st = s.state()
    return {"size": st["size"], "holder": st["holder"], "waiting": sorted(st["waiting"])}


REQUESTS = {
    "want negative": (("b", [], -1), "want"),
    "want a billion": (("b", [], 10**9), "want"),
    "want NaN": (("b", [], math.nan), "want"),
    "want a string": (("b", [], "2"), "want"),
    "want a bool": (("b", [], True), "want"),
    "held not a list": (("b", 3, 1), "executors"),
    "held a string": (("b", "01", 1), "executors"),
    "held index a string": (("b", ["0"], 1), "executor index"),
    "held index negative": (("b", [-1], 1), "executor index"),
    "held index past any pool": (("b", [MAX_POOL], 1), "executor index"),
    "held far too many": (("b", list(range(MAX_POOL)) * 2, 1), "executors"),
    "pool size a million": (("b", [], 1, 10**6), "pool size"),
    "pool size zero": (("b", [], 1, 0), "pool size"),
    "pool size negative": (("b", [], 1, -3), "pool size"),
    "search id None": ((None, [], 1), "search id"),
    "search id a number": ((5, [], 1), "search id"),
    "search id empty": (("", [], 1), "search id"),
    "search id 5000 chars": (("b" * 5000, [], 1), "search id"),
}


@pytest.mark.parametrize("case", sorted(REQUESTS))
def test_a_hostile_lease_request_is_refused_and_changes_no_lease(scheduler, case):
    args, words = REQUESTS[case]
    before = _book(scheduler)
    with pytest.raises(SchedulerCallError, match=words):
        scheduler.request(*args)
    assert _book(scheduler) == before
    # the book still works: b waits for what a holds, and gets the free executor
    assert scheduler.request("b", [], 1)["granted"] == [1]


@pytest.mark.parametrize("args", [("a", ["0"]), ("a", None), (None, [0]), ("a", [-1]), ("a", [0.5])])
def test_a_hostile_release_is_refused_and_frees_nothing(scheduler, args):
    before = _book(scheduler)
    with pytest.raises(SchedulerCallError):
        scheduler.release(*args)
    with pytest.raises(SchedulerCallError):
        scheduler.end(None)
    assert _book(scheduler) == before and before["holder"] == {0: "a"}


@pytest.mark.parametrize("size", [0, -1, MAX_POOL + 1, "2", None])
def test_a_scheduler_of_a_size_no_pool_has_is_refused(size):
    with pytest.raises(SchedulerCallError, match="pool size"):
        SchedulerShell(size)
