"""Executors shared by searches: the lease rule alone, the lease fold, and three searches on one
named pool of two executors on real Ray (all finish; no executor ever runs two trials at once)."""
from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from trex.actors.scheduler import LEASE_TTL_S, LeaseBook
from trex.events.log import EventLog
from trex.events.trials import ExecutorLeased, ExecutorReleased, ExecutorsAwaited
from trex.orchestrate.leases import leases_of


def grant(book, *a, **kw):
    return book.request(*a, **kw)[0]


def test_a_free_executor_goes_to_the_waiter_holding_fewest_then_the_oldest():
    b = LeaseBook(2)
    assert grant(b, "a", [], 2, now=0) == [0, 1]  # alone: it takes both
    assert grant(b, "b", [], 1, now=1) == []  # both leased: b waits
    assert grant(b, "c", [], 1, now=2) == []
    b.release("a", [0])
    assert grant(b, "a", [1], 1, now=3) == []  # a holds one already; b and c hold none: their turn
    assert grant(b, "c", [], 1, now=4) == []  # b has waited longer
    assert grant(b, "b", [], 1, now=5) == [0]
    b.release("a", [1])
    assert grant(b, "c", [], 1, now=6) == [1]
    assert sorted(b.holder.items()) == [(0, "b"), (1, "c")]  # never one executor to two searches


def test_a_search_uses_only_its_own_pool_size_and_a_restarted_book_learns_holdings_back():
    b = LeaseBook(4)
    assert grant(b, "small", [], 3, now=0, size=2) == [0, 1]
    assert grant(b, "big", [], 1, now=0.5, size=4) == [2]  # "small" waits, but cannot use executor 2
    fresh = LeaseBook(4)  # the scheduler restarted: its table is empty
    assert fresh.request("small", [0, 1], 0, now=1) == ([], [0, 1]) and fresh.holder == {0: "small", 1: "small"}
    assert grant(fresh, "big", [], 4, now=2) == [2, 3]


def test_what_another_search_holds_now_is_not_confirmed_and_a_lost_grant_is_freed():
    b = LeaseBook(2)
    assert grant(b, "a", [], 1, now=0) == [0]
    # a's lease lapsed and went to b; a (restarted, from its log) still claims it: not confirmed
    b.holder[0] = "b"
    assert b.request("a", [0], 0, now=1) == ([], [])
    assert b.holder == {0: "b"}
    # b got executor 1 but never heard the answer: its next call, holding only 0, frees 1
    assert grant(b, "b", [0], 1, now=2) == [1]
    assert b.request("b", [0], 0, now=3) == ([], [0]) and b.holder == {0: "b"}


def test_a_search_not_heard_from_loses_its_leases():
    b = LeaseBook(1)
    assert grant(b, "gone", [], 1, now=0) == [0]
    assert grant(b, "alive", [], 1, now=LEASE_TTL_S / 2) == []
    assert grant(b, "alive", [], 1, now=LEASE_TTL_S + 1) == [0]


def test_leases_fold_from_a_searchs_own_events(tmp_path):
    log = EventLog(tmp_path)
    log.append("s", [ExecutorsAwaited(wanted=1, holders=("t",))])
    assert leases_of(log.read("s")).waiting
    log.append("s", [ExecutorLeased(executor=1), ExecutorLeased(executor=0), ExecutorReleased(executor=1)])
    state = leases_of(log.read("s"))
    assert state.held == {0} and not state.waiting


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


@pytest.mark.timeout(900)
def test_three_searches_share_two_executors_and_none_runs_two_trials_at_once(ray_local, arith_home, actor_pool):
    from tests.test_actors import check_invariants, new_search, run_conductor_actor

    pool = actor_pool(2, threads=1, named=True, prefix=f"t{uuid.uuid4().hex[:6]}")
    sids = [new_search(arith_home, "random", trials=2, steps=30, eval_limit=20) for _ in range(3)]
    refs = [run_conductor_actor(ray_local, arith_home, sid, pool)[1] for sid in sids]
    ray_local.get(refs, timeout=800)
    spans: dict[str, list] = {}
    leases: dict[int, list] = {}  # executor -> (leased at, released at, search), from every search's log
    awaited = 0
    for sid in sids:
        inv = check_invariants(arith_home, sid)
        assert inv["tree"].trials_finished == 2
        started = {}
        for e in inv["events"]:
            if e.type == "TrialStarted":
                started[e.event.trial_id] = (_ts(e.recorded_at), e.event.worker)
            elif e.type in ("TrialFinished", "TrialFailed", "TrialAbandoned"):
                t0, worker = started[e.event.trial_id]
                spans.setdefault(worker, []).append((t0, _ts(e.recorded_at), sid))
        types = [e.type for e in inv["events"]]
        assert "ExecutorLeased" in types
        awaited += types.count("ExecutorsAwaited")
        open_: dict[int, float] = {}
        for e in inv["events"]:
            if e.type == "ExecutorLeased":
                assert e.event.executor not in open_
                open_[e.event.executor] = _ts(e.recorded_at)
            elif e.type == "ExecutorReleased":
                leases.setdefault(e.event.executor, []).append((open_.pop(e.event.executor), _ts(e.recorded_at), sid))
        assert not open_, f"{sid} ended holding {open_}"  # every lease given back at the end
    for worker, s in spans.items():
        s.sort()
        for a, b in zip(s, s[1:]):
            assert b[0] >= a[1], f"{worker} ran two trials at once: {a} and {b}"
    for ex, s in leases.items():  # the scheduler's own guarantee, from the events: one search at a time
        s.sort()
        for a, b in zip(s, s[1:]):
            assert b[0] >= a[1], f"executor {ex} leased to {a[2]} and {b[2]} at once"
    assert len(spans) == 2 and sum(len(s) for s in spans.values()) == 6
    assert awaited >= 1  # three searches, two executors: someone waited, and it is on record
    assert ray_local.get(pool.scheduler.state.remote())["holder"] == {}
