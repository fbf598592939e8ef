"""Work that stops coming back: the Ray Conductor detects the stall, records it, restarts the actor and
retries within its bounds — the search makes progress or ends, never waits forever.

The executors here are scripted (they record the events a trial would, instantly, or hang): what is
under test is the Conductor's stall handling with real Ray actors, restarts and kills.
"""
from __future__ import annotations

import os
import sys
import time

import pytest

from tests.test_two_drivers import ScriptedEvaluator, fake_train, fake_train_started
from trex.conductor import SearchConfig, start_search
from trex.events.log import EventLog
from trex.events.search import Budget
from trex.events.verify import verify
from trex.search import build_tree

pytestmark = pytest.mark.slow


class HangingExecutor:
    """Starts a trial, then never answers — on the commands named in ``hang`` (every one when None) and,
    with ``once``, only on their first attempt."""

    def __init__(self, hang=None, once=True):
        self.hang, self.once = hang, once

    def train(self, home, sid, task, node_id, plan, parent_adapter, attempt, command_id, time_limit_s=None):
        if (self.hang is None or node_id in self.hang) and not (self.once and attempt > 1):
            fake_train_started(home, sid, node_id, plan, attempt)
            time.sleep(3600)  # the trial's worker wedged: nothing comes back
        return fake_train(home, sid, node_id, plan, parent_adapter, attempt)

    def inflight(self):
        return []

    def wait(self, command_id):
        return None

    def pid(self):
        return os.getpid()


def _pool(ray, executor):
    from trex.actors.conduct import Pool
    from trex.actors.shells import remote_classes

    return Pool(researcher=remote_classes()["researcher"].remote(), executors=[executor],
                evaluator=ray.remote(num_cpus=0)(ScriptedEvaluator).remote())


def _kill(ray, pool):
    for h in (pool.researcher, pool.evaluator, *pool.executors):
        try:
            ray.kill(h, no_restart=True)
        except Exception:  # noqa: BLE001
            pass


@pytest.mark.timeout(300)
def test_a_stalled_trial_is_recorded_its_executor_restarted_and_the_trial_retried(tmp_path, ray_local):
    import ray

    from trex.actors.conduct import conduct

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sid = start_search(EventLog(tmp_path), SearchConfig(task="arith-sub", budget=Budget(max_trials=3), seed=1))
    ex = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)(HangingExecutor).remote(hang=("n1",))
    pool = _pool(ray, ex)
    pid = ray.get(ex.pid.remote())
    t0 = time.time()
    try:
        conduct(tmp_path, sid, pool, poll_s=0.05, lookahead=False, stall_s={"train": 3.0})
        new_pid = ray.get(ex.pid.remote())
    finally:
        _kill(ray, pool)
    assert time.time() - t0 < 120
    events = EventLog(tmp_path).read(sid)
    stalls = [e.event for e in events if e.type == "WorkStalled"]
    assert len(stalls) == 1 and stalls[0].kind == "train" and stalls[0].command == f"{sid}:n1"
    assert stalls[0].actor == "executor-0" and stalls[0].waited_s >= 3.0 and stalls[0].limit_s == 3.0
    assert new_pid != pid  # the stalled executor was restarted
    tree = build_tree(EventLog(tmp_path), sid)
    assert tree.status == "finished" and tree.stalls == 1
    assert tree.nodes["n1"].trials == 2 and tree.nodes["n1"].status in ("evaluated", "failed")
    # the trial lost to the stall did not use up the budget: 3 trials, 3 nodes tried, one of them twice
    assert tree.nodes_tried == 3 and tree.trials == 4
    assert verify(EventLog(tmp_path), sid).ok


@pytest.mark.timeout(300)
def test_an_executor_that_never_answers_ends_the_search_with_recorded_stalls(tmp_path, ray_local):
    import ray

    from trex.actors.conduct import conduct

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sid = start_search(EventLog(tmp_path), SearchConfig(task="arith-sub", budget=Budget(max_trials=2), seed=2))
    ex = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)(HangingExecutor).remote(hang=None, once=False)
    pool = _pool(ray, ex)
    t0 = time.time()
    try:
        conduct(tmp_path, sid, pool, poll_s=0.05, lookahead=False, stall_s={"train": 2.0})
    finally:
        _kill(ray, pool)
    assert time.time() - t0 < 180
    tree = build_tree(EventLog(tmp_path), sid)
    assert tree.status == "finished" and tree.finish_reason == "budget exhausted: trials"
    # each of the two trials stalled on both attempts: recorded, retried once, then closed as abandoned
    assert tree.stalls == 4
    assert [tree.nodes[n].status for n in tree.order] == ["abandoned", "abandoned"]
    assert all(tree.nodes[n].trials == 2 and not tree.nodes[n].open_trials for n in tree.order)
    assert verify(EventLog(tmp_path), sid).ok


class SlowEvaluator:
    """Evaluates as the scripted one does, each call taking ``seconds`` (two at a time, as the real one)."""

    def __init__(self, seconds):
        from tests.test_two_drivers import ScriptedEvaluator

        self.seconds, self.inner = seconds, ScriptedEvaluator()

    def evaluate(self, *a, **kw):
        time.sleep(self.seconds)
        return self.inner.evaluate(*a, **kw)

    def evaluate_heldout(self, *a, **kw):
        time.sleep(self.seconds)
        return self.inner.evaluate_heldout(*a, **kw)


class QuickExecutor(HangingExecutor):
    """Every trial finishes at once (none of the scripted one-in-eight failures: which plans a search
    proposes depends on when evaluations land, so a failure would make the trained count vary)."""

    def __init__(self):
        super().__init__(hang=())

    def train(self, home, sid, task, node_id, plan, parent_adapter, attempt, command_id, time_limit_s=None):
        return fake_train(home, sid, node_id, plan, parent_adapter, attempt, fail=False)


@pytest.mark.timeout(300)
def test_evaluations_queued_behind_others_are_not_taken_for_stalled_ones(tmp_path, ray_local):
    """Four executors finish at once and their evaluations queue behind the Evaluator's two slots: each
    waits longer than the evaluation bound since it was sent, yet none runs longer than it. The stall
    clock starts when a call can run, so nothing is recorded as stalled and nothing is restarted;
    and the end of the search (held-out scoring) waits within the same bound."""
    import ray

    from trex.actors.conduct import Pool, conduct
    from trex.actors.shells import CONCURRENCY, remote_classes

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sid = start_search(EventLog(tmp_path), SearchConfig(task="arith-sub", budget=Budget(max_trials=4), seed=4))
    mk = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)(QuickExecutor)
    ev = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=CONCURRENCY["evaluator"])(SlowEvaluator).remote(1.2)
    pool = Pool(researcher=remote_classes()["researcher"].remote(), executors=[mk.remote() for _ in range(4)],
                evaluator=ev)
    try:
        conduct(tmp_path, sid, pool, poll_s=0.05, stall_s={"train": 60.0, "evaluate": 2.0})
    finally:
        _kill(ray, pool)
    tree = build_tree(EventLog(tmp_path), sid)
    assert tree.status == "finished" and tree.stalls == 0, [e.event for e in EventLog(tmp_path).read(sid)
                                                             if e.type == "WorkStalled"]
    events = EventLog(tmp_path).read(sid)
    trained = {e.event.node_id for e in events if e.type == "TrialFinished"}
    assert len(trained) == 4 and not any(e.type == "EvaluationFailed" for e in events)
    assert {n.node_id for n in tree.nodes.values() if n.status == "evaluated"} == trained
    assert tree.heldout  # the end of the search scored the chosen node on test, within the bound
    assert verify(EventLog(tmp_path), sid).ok


class HangOnceResearcher:
    """The real Researcher shell, whose first proposal for search ``victim`` wedges while holding the
    shell's one-proposal-at-a-time lock (so every other search's proposal waits behind it)."""

    def __init__(self, marker, victim):
        from trex.actors.shells import ResearcherShell

        self.inner, self.marker, self.victim = ResearcherShell(), marker, victim

    def propose(self, home, sid, decision):
        if sid == self.victim and not os.path.exists(self.marker):
            with self.inner._lock:
                open(self.marker, "w").close()
                time.sleep(3600)
        return self.inner.propose(home, sid, decision)

    def pid(self):
        return os.getpid()


def test_the_restart_book_names_only_another_searchs_restart_since_a_call_was_sent():
    from trex.actors.scheduler import RestartBook

    b = RestartBook()
    b.note("researcher", "a", now=100.0)
    assert b.by_other("researcher", "b", since=90.0) == "a"
    assert b.by_other("researcher", "a", since=90.0) is None  # its own restart counts against it
    assert b.by_other("researcher", "b", since=101.0) is None  # restarted before the call was sent
    assert b.by_other("evaluator", "b", since=90.0) is None


@pytest.mark.timeout(300)
def test_a_shared_researcher_restarted_for_one_searchs_stall_costs_the_other_search_no_attempt(tmp_path, ray_local):
    """Two searches share one pool (its scheduler, Researcher and Evaluator, as ``trex-actors`` makes).
    Search a's first proposal wedges the Researcher; b's proposal waits behind it. a records the stall
    and restarts the Researcher, which fails b's call too: b sends it again (``WorkResent``, naming a)
    with no ``ProposalFailed`` counted against it, and both searches finish. a's own stall counts
    once: its next call, if it meets the Researcher still restarting, is sent again uncounted."""
    import threading

    import ray

    from trex.actors.conduct import Pool, conduct
    from trex.actors.scheduler import SchedulerShell
    from trex.actors.shells import CONCURRENCY

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    log = EventLog(tmp_path)
    a = start_search(log, SearchConfig(task="arith-sub", budget=Budget(max_trials=2), seed=5))
    b = start_search(log, SearchConfig(task="arith-sub", budget=Budget(max_trials=2), seed=6))
    marker = tmp_path / "wedged"
    researcher = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0,
                            max_concurrency=CONCURRENCY["researcher"])(HangOnceResearcher).remote(str(marker), a)
    pid = ray.get(researcher.pid.remote())
    mk = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)(QuickExecutor)
    pool = Pool(researcher=researcher, executors=[mk.remote(), mk.remote()],
                evaluator=ray.remote(num_cpus=0, max_restarts=-1)(ScriptedEvaluator).remote(),
                scheduler=ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=8)(SchedulerShell).remote(2))
    errors = []

    def run(sid, stall_s):
        try:
            conduct(tmp_path, sid, pool, poll_s=0.05, lookahead=False, stall_s=stall_s)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ta = threading.Thread(target=run, args=(a, {"propose": 4.0}))
    ta.start()
    try:
        t0 = time.time()
        while not marker.exists() and time.time() - t0 < 60:
            time.sleep(0.05)
        assert marker.exists(), "search a's proposal never reached the Researcher"
        tb = threading.Thread(target=run, args=(b, {"propose": 120.0}))
        tb.start()
        ta.join(200)
        tb.join(200)
        assert not ta.is_alive() and not tb.is_alive() and not errors, errors
        new_pid = ray.get(researcher.pid.remote())
    finally:
        for h in (pool.researcher, pool.evaluator, pool.scheduler, *pool.executors):
            try:
                ray.kill(h, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
    assert new_pid != pid  # the wedged Researcher was restarted
    ev_a = [e for e in log.read(a)]
    ev_b = [e for e in log.read(b)]
    stalls = [e.event for e in ev_a if e.type == "WorkStalled"]
    assert len(stalls) == 1 and stalls[0].kind == "propose" and stalls[0].actor == "researcher"
    assert sum(e.type == "ProposalFailed" for e in ev_a) == 1  # a's own stall counts against a
    # a's next call may meet the Researcher still restarting: the restart a already counted, sent again
    assert all(e.event.restarted_by == a for e in ev_a if e.type == "WorkResent")
    assert not any(e.type in ("ProposalFailed", "WorkStalled") for e in ev_b)
    resent = [e.event for e in ev_b if e.type == "WorkResent"]
    assert resent and all(r.kind == "propose" and r.restarted_by == a and r.actor == "researcher" for r in resent)
    for sid in (a, b):
        tree = build_tree(log, sid)
        assert tree.status == "finished" and tree.nodes_tried == 2, (sid, tree.finish_reason)
        assert verify(log, sid).ok
