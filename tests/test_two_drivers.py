"""The two drivers make the same search: the in-process Runner and the Ray Conductor share their rules.

Both drive the same scripted workers — an executor and an evaluator that record plausible events
instantly, with a score and a failure that follow from the plan's hash — with the real policy
and the real proposers (the Ray one through the real Researcher actor). With one executor and no
lookahead the Ray Conductor decides in the in-process order, so the nodes, their parents, plan
hashes, statuses and scores, the decisions, and the finish reason must be identical. The fakes
stand in for training and scoring only; what is under test is the drivers' rules (ids, budget,
recovery, stopping), which is why they may be fakes here.
"""
from __future__ import annotations

import hashlib
import shutil
import sys

import pytest

from trex.conductor import Runner, SearchConfig, _started_at, start_search
from trex.events.evaluation import EvaluationFinished, HeldOutScored, MetricRecorded
from trex.events.log import EventLog
from trex.events.search import Budget
from trex.events.trials import TrialFailed, TrialFinished, TrialStarted
from trex.search import build_tree

BASE_SCORE = 0.1


def _digest(plan: dict) -> int:
    from trex.plan import parse_plan, plan_hash

    return int(hashlib.sha256(plan_hash(parse_plan(plan)).encode()).hexdigest()[:8], 16)


def fake_train_started(home, sid: str, node_id: str, plan: dict, attempt: int) -> tuple[str, str]:
    from trex.plan import parse_plan, plan_hash

    trial = f"{sid}:{node_id}:t{attempt}"
    h = plan_hash(parse_plan(plan))
    EventLog(home).append(sid, [TrialStarted(node_id=node_id, trial_id=trial, command_id=f"{sid}:{node_id}",
                                             plan_hash=h, attempt=attempt)])
    return trial, h


def fake_train(home, sid: str, node_id: str, plan: dict, parent_adapter: str | None, attempt: int,
               fail: bool = True) -> dict:
    """A trial that records what a real one would; about one plan in eight fails (none with ``fail=False``)."""
    trial, h = fake_train_started(home, sid, node_id, plan, attempt)
    log = EventLog(home)
    if fail and _digest(plan) % 8 == 0:
        log.append(sid, [TrialFailed(node_id=node_id, trial_id=trial, reason="nan_loss", message="loss is nan at step 3")])
        return {"ok": False}
    adapter = hashlib.sha256(f"{h}:{parent_adapter}".encode()).hexdigest()
    log.append(sid, [TrialFinished(node_id=node_id, trial_id=trial, adapter=adapter, plan_hash=h, steps=10,
                                   train_metrics={"loss": 1.0})])
    return {"ok": True, "adapter": adapter}


def fake_evaluate(home, sid: str, node_id: str, adapter: str | None, plan: dict | None) -> bool:
    score = BASE_SCORE if plan is None else round((_digest(plan) % 1000) / 1000, 3)
    eval_id = f"{sid}:{node_id}:eval"
    EventLog(home).append(sid, [MetricRecorded(node_id=node_id, name="exact_match", value=score, primary=True,
                                               eval_id=eval_id),
                                EvaluationFinished(node_id=node_id, eval_id=eval_id, backend="scripted",
                                                   n_examples=10, adapter=adapter)])
    return True


def fake_heldout(home, sid: str, node_id: str, adapter: str | None, rank: int, plan: dict, anytime=()) -> bool:
    """The held-out score: the validation score shrunk a little (the winner's curse, scripted)."""
    score = round(0.9 * (_digest(plan) % 1000) / 1000, 4)
    EventLog(home).append(sid, [HeldOutScored(node_id=node_id, name="exact_match", value=score, split="test",
                                              primary=True, rank=rank, anytime=tuple(anytime),
                                              eval_id=f"{sid}:{node_id}:test")])
    return True


def _plan_of(home, sid, node_id):
    node = build_tree(EventLog(home), sid).nodes.get(node_id)
    return dict(node.plan) if node is not None else None


class Crash(Exception):
    """The driver's process dying at a chosen point (nothing after it is recorded)."""


class ScriptedRunner(Runner):
    """The in-process driver with the scripted executor and evaluator; ``crash`` names where it dies:
    ``("training", node)`` after the trial started, ``("scoring", node)`` after it was trained,
    ``("proposing", k)`` after the k-th decision was recorded."""

    def __init__(self, home, sid, crash=None):
        super().__init__(home, sid)
        self.crash = crash

    def train(self, node_id, plan, parent_adapter, attempt=1):
        if self.crash == ("training", node_id):
            fake_train_started(self.home, self.sid, node_id, plan, attempt)
            raise Crash(self.crash)
        out = fake_train(self.home, self.sid, node_id, plan, parent_adapter, attempt)
        if out["ok"]:
            if self.crash == ("scoring", node_id):
                raise Crash(self.crash)
            self.evaluate(node_id, out["adapter"])

    def evaluate(self, node_id, adapter):
        fake_evaluate(self.home, self.sid, node_id, adapter, _plan_of(self.home, self.sid, node_id))

    def evaluate_heldout(self, node_id, adapter, rank, anytime=()):
        fake_heldout(self.home, self.sid, node_id, adapter, rank, _plan_of(self.home, self.sid, node_id), anytime)

    def _answer(self, tree, decision):
        if self.crash == ("proposing", decision.index):
            raise Crash(self.crash)
        return super()._answer(tree, decision)


class ScriptedExecutor:
    def train(self, home, sid, task, node_id, plan, parent_adapter, attempt, command_id, time_limit_s=None):
        return fake_train(home, sid, node_id, plan, parent_adapter, attempt)

    def inflight(self):
        return []

    def wait(self, command_id):
        return None


class ScriptedEvaluator:
    def evaluate(self, home, sid, task, node_id, adapter, limit=None):
        return fake_evaluate(home, sid, node_id, adapter, _plan_of(home, sid, node_id))

    def evaluate_heldout(self, home, sid, task, node_id, adapter, rank, anytime=()):
        return fake_heldout(home, sid, node_id, adapter, rank, _plan_of(home, sid, node_id), anytime)


def view(home, sid):
    """What both drivers must agree on (ids included: they are deterministic)."""
    tree = build_tree(EventLog(home), sid)
    nodes = [(n, tree.nodes[n].parent_id, tree.nodes[n].operator, tree.nodes[n].plan_hash, tree.nodes[n].status,
              tree.nodes[n].score) for n in tree.order]
    return {"nodes": nodes, "decisions": [(d.decision_id, d.node_id, d.operator) for d in tree.decisions],
            "status": tree.status, "finish_reason": tree.finish_reason, "trials": tree.trials,
            "base": tree.base_score, "heldout": dict(tree.heldout)}


def run_in_process(home, sid, crash=None) -> bool:
    """Drive the search in this process until it ends (True) or the scripted crash (False)."""
    runner = ScriptedRunner(home, sid, crash)
    try:
        runner.recover()
        started = _started_at(runner.log, sid)
        while runner.step(started):
            pass
    except Crash:
        return False
    return True


# three crashes, each continued by the next run; the last one is left for both drivers to recover
SCENARIOS = {
    "random": [("training", "n3"), ("scoring", "n5"), ("proposing", 6)],  # ends with a decision never answered
    "optuna": [("proposing", 2), ("scoring", "n4"), ("training", "n5")],  # ends with a trial left open
}


@pytest.mark.parametrize("proposer", sorted(SCENARIOS))
def test_ray_conductor_and_in_process_runner_make_the_same_tree(proposer, tmp_path, ray_local):
    import ray

    from trex.actors.conduct import Pool, conduct
    from trex.actors.shells import remote_classes

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = SearchConfig(task="arith-sub", proposer=proposer, seed=7, budget=Budget(max_trials=9))
    homes = {k: tmp_path / k for k in ("local", "ray")}
    sid = start_search(EventLog(homes["local"]), cfg, search_id="same-search")
    # crashes mid-trial, after training and while proposing; both drivers take over the same crashed log
    for crash in SCENARIOS[proposer]:
        assert not run_in_process(homes["local"], sid, crash), f"the script did not reach {crash}"
    crashed = build_tree(EventLog(homes["local"]), sid)
    left = crashed.open_decisions if proposer == "random" else crashed.nodes["n5"].open_trials
    assert left, "the last crash should leave work open for the drivers to recover"
    shutil.copytree(homes["local"], homes["ray"])
    sids = {"local": sid, "ray": sid}

    assert run_in_process(homes["local"], sids["local"])
    pool = Pool(researcher=remote_classes()["researcher"].remote(),
                executors=[ray.remote(num_cpus=0)(ScriptedExecutor).remote()],
                evaluator=ray.remote(num_cpus=0)(ScriptedEvaluator).remote())
    try:
        conduct(homes["ray"], sids["ray"], pool, lookahead=False, poll_s=0.05)
    finally:
        for h in (pool.researcher, pool.evaluator, *pool.executors):
            ray.kill(h, no_restart=True)

    local, remote = view(homes["local"], sids["local"]), view(homes["ray"], sids["ray"])
    assert local["status"] == "finished" and local["finish_reason"] == "budget exhausted: trials"
    # 9 trials in the budget; the one lost to the "training" crash was retried: 10 started, 9 nodes tried
    assert local["base"] == BASE_SCORE and local["trials"] == 10
    # the node chosen on validation and the next two, on test, once each, in both drivers
    ranked = sorted((n for n in local["nodes"] if n[5] is not None), key=lambda n: -n[5])
    assert {n: h.rank for n, h in local["heldout"].items()} == {n[0]: r for r, n in enumerate(ranked[:3], 1)}
    fin = [e.event for e in EventLog(homes["ray"]).read(sid) if e.type == "SearchFinished"][-1]
    assert fin.best_node_id == ranked[0][0] and fin.reported == "test"
    assert fin.test_score == local["heldout"][ranked[0][0]].score != fin.best_score
    retried = build_tree(EventLog(homes["ray"]), sid).nodes[SCENARIOS[proposer][0 if proposer == "random" else 2][1]]
    assert retried.trials == 2 and retried.status in ("evaluated", "failed"), "a trial left open is retried once"
    assert any(s == "failed" for *_, s, _ in local["nodes"]), "the script should make a trial fail"
    assert len({p for _, p, *_ in local["nodes"]}) > 1, "the policy should have grown a tree, not only drafts"
    assert remote == local


def test_the_in_process_runner_reasks_a_decision_left_open_by_a_crash(tmp_path):
    """A decision recorded but never answered (the driver died while proposing) is answered on resume."""
    from trex.search import select

    home = tmp_path / "h"
    log = EventLog(home)
    sid = start_search(log, SearchConfig(task="arith-sub", proposer="random", budget=Budget(max_trials=2)))
    fake_evaluate(home, sid, "base", None, None)
    d = select(build_tree(log, sid))
    log.append(sid, [d.to_event()])  # ... and the driver died here
    run_in_process(home, sid)
    tree = build_tree(log, sid)
    assert tree.nodes["n1"].decision_id == d.decision_id
    assert tree.status == "finished" and len(tree.nodes) == 2
