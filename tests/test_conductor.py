"""The sequential search loop, end to end on the tiny task: real training, real evaluation."""
from __future__ import annotations

from collections import Counter

from trex.conductor import BASE_NODE, Runner, SearchConfig, base_score, run_search, start_search
from trex.events.log import EventLog
from trex.events.plans import PlanProposed
from trex.events.search import Budget
from trex.events.trials import TrialStarted
from trex.events.verify import verify
from trex.search import build_tree, select, tree_hash

CLOSING = ("TrialFinished", "TrialFailed", "TrialAbandoned", "TrialReused")


def _cfg(**kw):
    base = dict(task="arith-sub", proposer="random", policy="mcts", seed=1, budget=Budget(max_trials=3),
                trial_steps=20, eval_limit=40, batch_size=16)
    base.update(kw)
    return SearchConfig(**base)


def _closed_once(log, sid):
    envs = log.read(sid)
    starts = Counter(e.event.trial_id for e in envs if e.type == "TrialStarted")
    closes = Counter(e.event.trial_id for e in envs if e.type in CLOSING[:3])
    assert starts.keys() == closes.keys(), "a trial has no closing event"
    assert set(closes.values()) == {1}, "a trial closed twice"
    finished = Counter(e.event.node_id for e in envs if e.type == "TrialFinished")
    assert all(v == 1 for v in finished.values()), "a node was trained twice"


def test_search_runs_its_budget_and_replays_to_the_same_tree(arith_home):
    log = EventLog(arith_home)
    sid = start_search(log, _cfg(proposer="optuna"))
    tree = run_search(arith_home, sid)
    assert tree.status == "finished" and tree.trials == 3
    assert all(n.status == "evaluated" for n in tree.nodes.values())
    assert base_score(log, sid) is not None
    types = [e.type for e in log.read(sid)]
    assert types[-2:] == ["BudgetExhausted", "SearchFinished"]
    assert types.count("NodeSelected") == 3 and types.count("PlanProposed") == 3
    _closed_once(log, sid)
    assert tree_hash(build_tree(log, sid)) == tree_hash(tree)
    assert verify(log).ok
    # honest scores: the chosen node and the next two, on the whole held-out test split, once each
    from trex.tasks import load_split

    held = [e.event for e in log.read(sid) if e.type == "HeldOutScored"]
    ranked = sorted(tree.nodes.values(), key=lambda n: -n.score)
    assert {(h.node_id, h.rank) for h in held if h.primary} == {(n.node_id, r) for r, n in enumerate(ranked[:3], 1)}
    assert {h.split for h in held} == {"test", "test_add"}
    assert all(h.n_examples == len(load_split("arith-sub", h.split, arith_home)) == 500 for h in held)
    fin = [e.event for e in log.read(sid) if e.type == "SearchFinished"][-1]
    assert fin.best_node_id == ranked[0].node_id and fin.reported == "test"
    assert fin.test_score == tree.test_score == tree.heldout[ranked[0].node_id].score
    # the test results never reach the node's score, metrics or evaluation outputs (what proposers read)
    for n in tree.nodes.values():
        assert all(not o or o not in {h.outputs_artifact for h in held} for o in n.outputs)
        assert "test" not in str(n.metrics)
    # a resumed search scores nothing twice
    assert run_search(arith_home, sid).heldout == tree.heldout
    assert sum(e.type == "HeldOutScored" for e in log.read(sid)) == len(held)


def test_a_crashed_run_is_continued_without_training_anything_twice(arith_home):
    log = EventLog(arith_home)
    sid = start_search(log, _cfg(budget=Budget(max_trials=2)))
    runner = Runner(arith_home, sid)
    runner.recover()  # base model evaluation
    # what a driver killed mid-trial leaves behind: a decision, a plan, a trial that never closed
    tree = runner.tree()
    d = select(tree)
    from trex.propose import propose_random
    from trex.plan import plan_hash

    prop = propose_random(tree, d, task="arith-sub", steps=20, batch_size=16)
    log.append(sid, [d.to_event(), PlanProposed(node_id="n1", parent_id=None, operator=d.operator,
                                                plan=prop.plan.model_dump(mode="json"), plan_hash=plan_hash(prop.plan),
                                                proposer="random", decision_id=d.decision_id),
                     TrialStarted(node_id="n1", trial_id="lost", plan_hash=plan_hash(prop.plan))])
    tree = run_search(arith_home, sid)
    envs = log.read(sid)
    types = [e.type for e in envs]
    assert "SearchResumed" in types and "TrialAbandoned" in types
    assert tree.nodes["n1"].status == "evaluated" and tree.status == "finished"
    assert [e.event.node_id for e in envs if e.type == "MetricRecorded" and e.event.primary].count(BASE_NODE) == 1
    assert Counter(e.event.node_id for e in envs if e.type == "TrialFinished")["n1"] == 1
    assert [e.event.trial_id for e in envs if e.type == "TrialAbandoned"] == ["lost"]
    _closed_once(log, sid)
    assert verify(log).ok


def test_a_second_runner_on_the_same_search_is_refused_before_it_decides(tmp_path):
    import pytest

    from trex.conductor import ConcurrentRun
    from trex.events.notes import NoteAdded

    home = tmp_path / "h"
    log = EventLog(home)
    sid = start_search(log, _cfg())
    runner = Runner(home, sid)
    runner.recover = lambda: 0  # no base evaluation needed for this check
    # another process appends between this runner's fold and its decision
    real_tree = runner.tree

    def tree_then_interleave():
        t = real_tree()
        log.append(sid, [NoteAdded(text="someone else")])
        return t

    runner.tree = tree_then_interleave
    with pytest.raises(ConcurrentRun, match="another process"):
        runner.step(started_at=0.0 + __import__("time").time())
    assert [e.type for e in log.read(sid)] == ["SearchStarted", "NoteAdded"]


def test_proposer_that_only_produces_invalid_plans_ends_the_search(tmp_path, monkeypatch):
    from trex import propose
    from trex.conductor import MAX_REJECTIONS_IN_A_ROW

    home = tmp_path / "h"
    log = EventLog(home)
    sid = start_search(log, _cfg())
    monkeypatch.setitem(propose.PROPOSERS, "random",
                        lambda tree, d, **kw: propose.Proposal(None, {"junk": 1}, "junk", rejection="invalid plan: junk"))
    runner = Runner(home, sid)
    import time as _t

    t0 = _t.time()
    while runner.step(t0):
        pass
    types = [e.type for e in log.read(sid)]
    assert types.count("PlanRejected") == MAX_REJECTIONS_IN_A_ROW
    assert types[-1] == "SearchFinished" and "invalid plans" in log.read(sid)[-1].event.reason


def test_both_drivers_hold_the_same_run_lock(tmp_path):
    """An in-process run of a search that a Conductor (or another process) is running fails at once."""
    import pytest

    from trex.conductor import ConcurrentRun, run_lock

    home = tmp_path / "h"
    sid = start_search(EventLog(home), _cfg())
    held = run_lock(home, sid)  # what the Ray Conductor holds while it runs (trex.actors.conduct.conduct)
    try:
        with pytest.raises(ConcurrentRun, match="another conductor"):
            run_search(home, sid)
        assert [e.type for e in EventLog(home).read(sid)] == ["SearchStarted"]  # nothing done
    finally:
        held.release()
    with pytest.raises(ConcurrentRun):  # and the other way round: a running in-process driver holds it
        from unittest import mock

        with mock.patch("trex.conductor.Runner.recover", lambda self: run_lock(home, sid)):
            run_search(home, sid)
