"""Baseline proposers: valid plans, deterministic per decision, continuation keeps the parent's shape."""
from __future__ import annotations

from trex.events.log import EventLog
from trex.events.search import SearchStarted
from trex.plan import Plan
from trex.propose import propose_optuna, propose_random
from trex.search import build_tree, select
from trex.search.policy import Decision

from tests.plugins.search_fixtures import evaluated


def _tree(tmp_path, proposer="random"):
    log = EventLog(tmp_path)
    plan = propose_random(build_tree_empty(log), _decision("d0", None, "draft"), task="arith-sub", steps=40).plan
    log.append("s", [SearchStarted(task="arith-sub", proposer=proposer)])
    evs = evaluated("a", None, 0.4)
    evs[0] = evs[0].model_copy(update={"plan": plan.model_dump(mode="json")})
    log.append("s", evs)
    return build_tree(log, "s")


def build_tree_empty(log):
    log.append("empty", [SearchStarted(task="arith-sub")])
    return build_tree(log, "empty")


def _decision(did, node, op):
    return Decision(node_id=node, operator=op, policy="mcts", seed=0, index=0, decision_id=did)


def test_random_drafts_are_valid_and_deterministic(tmp_path):
    tree = _tree(tmp_path)
    d = select(tree)
    a = propose_random(tree, d, task="arith-sub", steps=40)
    b = propose_random(tree, d, task="arith-sub", steps=40)
    assert isinstance(a.plan, Plan) and a.plan == b.plan and a.rejection is None


def test_improve_sometimes_continues_the_parent_with_its_shape(tmp_path):
    tree = _tree(tmp_path)
    parent = tree.nodes["a"]
    kinds = set()
    for i in range(30):
        p = propose_random(tree, _decision(f"d{i}", "a", "improve"), task="arith-sub", steps=40)
        assert isinstance(p.plan, Plan), p.rejection
        if p.plan.continue_from_parent:
            kinds.add("continue")
            assert p.plan.lora_rank == parent.plan["lora_rank"]
            assert list(p.plan.target_modules) == list(parent.plan["target_modules"])
            assert p.plan.max_steps == parent.plan["max_steps"] // 2
        else:
            kinds.add("perturb")
            assert p.plan.model_dump(mode="json") != dict(parent.plan)
    assert kinds == {"continue", "perturb"}


def test_debug_lowers_the_learning_rate_after_nan(tmp_path):
    tree = _tree(tmp_path)
    node = tree.nodes["a"]
    import dataclasses

    failed = dataclasses.replace(node, status="failed", failure="nan_loss", adapter=None)
    tree2 = dataclasses.replace(tree, nodes={**tree.nodes, "a": failed})
    p = propose_random(tree2, _decision("dbg", "a", "debug"), task="arith-sub", steps=40)
    assert p.plan.learning_rate < node.plan["learning_rate"] and "NaN" in p.rationale


def test_optuna_is_valid_and_deterministic(tmp_path):
    tree = _tree(tmp_path, proposer="optuna")
    d = select(tree)
    a = propose_optuna(tree, d, task="arith-sub", steps=40)
    b = propose_optuna(tree, d, task="arith-sub", steps=40)
    assert isinstance(a.plan, Plan) and a.plan == b.plan and "1 evaluated" in a.rationale
