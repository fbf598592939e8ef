"""The log service on real Ray: the same answers as the log, group commit, and kill -9 of the
service while appenders keep appending (nothing acknowledged lost, nothing stored twice)."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from trex.actors.log_service import RemoteLog, ensure_service, find_service, service_name
from trex.events.envelope import NewEvent, RawEvent
from trex.events.log import ConcurrencyConflict, EventError, EventLog
from trex.events.notes import NoteAdded
from trex.events.verify import verify


@pytest.fixture
def service(ray_local, tmp_path):
    home = tmp_path / "home"
    h = ensure_service(home)
    yield home, h, RemoteLog(h, home)


def test_the_service_answers_as_the_log_does(service):
    home, h, remote = service
    direct = EventLog(home)
    envs = remote.append("s", [NoteAdded(text="one"), NoteAdded(text="two")], expected_version=0)
    assert [e.seq for e in envs] == [1, 2] and envs == direct.read("s")
    with pytest.raises(ConcurrencyConflict, match="at version 2, expected 0"):
        remote.append("s", [NoteAdded(text="late")], expected_version=0)
    with pytest.raises(EventError, match="recorded_at"):
        remote.append_raw("s", [RawEvent("r1", "NoteAdded", 1, '{"author":"","text":"x"}', "yesterday")])
    with pytest.raises(EventError, match="invalid search id"):
        remote.append("", [NoteAdded(text="x")])
    direct.append("t", [NoteAdded(text="direct")])  # a direct writer beside the service (the CLI's `trex note`)
    assert [e.event_id for e in remote.read("s", after_seq=1)] == [envs[1].event_id]
    assert remote.version("s") == 2 and remote.exists("t") and not remote.exists("u")
    assert remote.searches() == ["s", "t"] and len(remote.read_records()) == 3
    assert ensure_service(home)._actor_id == h._actor_id  # one service per home
    assert find_service(home)._actor_id == h._actor_id and service_name(home).startswith("trex-log-")
    assert str(home) not in service_name(home)  # a name, never the path


def test_concurrent_appends_are_written_in_groups(service, ray_local):
    home, h, remote = service
    threads, per = 16, 40

    def work(i):
        for j in range(per):
            remote.append(f"w{i % 4}", [NoteAdded(text=f"{i}-{j}")])

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    stats = ray_local.get(h.stats.remote())
    assert stats["appends"] == threads * per and stats["events"] == threads * per
    assert stats["groups"] < stats["appends"], stats  # appends that waited shared a write and its fsync
    log = EventLog(home)
    for k in range(4):
        assert [e.seq for e in log.read(f"w{k}")] == list(range(1, 4 * per + 1))
    assert verify(log).ok


@pytest.mark.timeout(300)
def test_kill_9_of_the_service_loses_no_acknowledged_event_and_stores_none_twice(service, ray_local):
    home, h, _ = service
    acked: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def work(i):
        remote = RemoteLog(h, home)
        try:
            while not stop.is_set():
                ne = NewEvent(NoteAdded(text=f"{i}"))
                remote.append(f"a{i}", [ne])
                acked[i].append(ne.event_id)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    pids = []
    for _ in range(2):
        time.sleep(1.5)
        pid = ray_local.get(h.pid.remote(), timeout=60)
        pids.append(pid)
        os.kill(pid, signal.SIGKILL)
    # liveness: every writer has appends acknowledged by the restarted service (waited for, not slept:
    # under a loaded suite a fixed 1.5 s saw a writer with only the acks from before the kills)
    at_kill = [len(a) for a in acked]
    t0 = time.time()
    while not errors and time.time() - t0 < 120 and any(len(a) < n + 3 for a, n in zip(acked, at_kill)):
        time.sleep(0.1)
    stop.set()
    for t in ts:
        t.join(120)
    assert not errors, errors
    after = ray_local.get(h.pid.remote(), timeout=60)
    assert after not in pids  # Ray restarted it (twice), on this node
    log = EventLog(home)
    assert verify(log).ok
    for i in range(4):
        stored = [e.event_id for e in log.read(f"a{i}")]
        assert len(stored) == len(set(stored)), "an event stored twice"
        assert stored == acked[i], "an acknowledged event missing, or one stored that was never acknowledged"
        assert len(acked[i]) >= at_kill[i] + 3, "a writer got nothing acknowledged after the restarts"


def test_the_service_finds_identical_work_incrementally_whoever_wrote_it(service):
    """The Executor's lookup of identical work goes to the service's index, not a read of the home."""
    from trex.events.trials import TrialFinished, TrialReused
    from trex.events.work_index import WorkIndex

    home, h, remote = service
    direct = EventLog(home)
    a = "a" * 64
    remote.append("s", [TrialFinished(node_id="n1", trial_id="t1", adapter=a, work_key="k1", steps=5)])
    assert [e["node_id"] for e in remote.find_work("k1")] == ["n1"] and remote.find_work("k2") == []
    # a writer beside the service (an import), and a reuse recorded later: both found on the next lookup
    direct.append("imported", [TrialFinished(node_id="n7", trial_id="t7", adapter="b" * 64, work_key="k2")])
    remote.append("s", [TrialReused(node_id="n2", plan_hash="", adapter=a, work_key="k1", source_search_id="s",
                                    source_node_id="n1")])
    got = remote.find_work("k1")
    assert [(e["search_id"], e["node_id"], e["adapter"]) for e in got] == [("s", "n1", a)] * 2
    assert remote.find_work("k2")[0]["search_id"] == "imported"
    assert got == WorkIndex().update(direct).candidates("k1")  # what reading the whole log finds



def test_the_work_index_keeps_the_last_attempts_curve_and_a_reuses_own(tmp_path):
    """An entry carries the sampled losses of the trial that did the work: of its last attempt (a
    retry starts its steps again), and a reuse passes on the curve it carries; a malformed curve in a
    cache entry reads as none."""
    from trex.events.trials import TrialAbandoned, TrialFinished, TrialProgressed, TrialReused
    from trex.events.work_index import MAX_CURVE, WorkIndex, sampled_curve

    log = EventLog(tmp_path)
    p = lambda step, loss: TrialProgressed(node_id="n1", trial_id="t1", step=step, loss=loss)  # noqa: E731
    log.append("s", [p(10, 3.0), p(20, 2.0), TrialAbandoned(node_id="n1", trial_id="t1"),
                     p(10, 2.9), p(20, 1.9), p(30, None),
                     TrialProgressed(node_id="n2", trial_id="t2", step=10, loss=9.0),
                     TrialFinished(node_id="n1", trial_id="t1", adapter="a" * 64, work_key="k1"),
                     TrialReused(node_id="n3", plan_hash="", adapter="b" * 64, work_key="k2",
                                 source_search_id="x", source_node_id="y", progress=((5, 1.0),))])
    log.append("r", [TrialProgressed(node_id="n5", trial_id="t5", step=10, loss=5.0),
                     TrialProgressed(node_id="n5", trial_id="t5", step=20, loss=4.0),
                     TrialProgressed(node_id="n5", trial_id="t5", step=10, loss=4.5),  # a retry, nothing closed
                     TrialFinished(node_id="n5", trial_id="t5", adapter="c" * 64, work_key="k3")])
    idx = WorkIndex().update(log)
    assert idx.candidates("k3")[0]["progress"] == [[10, 4.5]]
    assert idx.candidates("k1")[0]["progress"] == [[10, 2.9], [20, 1.9], [30, None]]
    assert idx.candidates("k2")[0]["progress"] == [[5, 1.0]]
    assert sampled_curve([[1, "x"]]) == () and sampled_curve("junk") == () and sampled_curve(None) == ()
    assert sampled_curve([[1, float("nan")]]) == () and sampled_curve([[True, 1.0]]) == ()
    assert sampled_curve([[10**400, 1.0]]) == ()  # a step no event can hold
    long = [[i, 1.0] for i in range(MAX_CURVE + 50)]
    assert sampled_curve(long)[0] == (50, 1.0) and len(sampled_curve(long)) == MAX_CURVE  # the end is kept
