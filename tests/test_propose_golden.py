"""The baseline proposers' golden answers: the same decisions give the same plans, release after release.

A search is reproducible only if its proposer is: a resumed or forked search asks the same question
again and must get the same plan. Each scenario below is a small tree (scored drafts, a failed node of
every kind, a plan off the search space) and many decisions on it; the digest of every answer
(raw plan, rationale, rejection) is committed in ``tests/fixtures/proposals.json``. Optuna's answers
depend on optuna's TPE, so they are checked only under the optuna version they were recorded with.

Regenerate deliberately (and say why in the commit): ``python tests/test_propose_golden.py``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


from trex.events.evaluation import MetricRecorded
from trex.events.plans import PlanProposed
from trex.events.search import SearchStarted
from trex.events.trials import TrialFailed, TrialFinished, TrialStarted
from trex.propose import propose_optuna, propose_random
from trex.search import fold
from trex.search.policy import Decision

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "proposals.json"
STEPS, BATCH = 40, 16
OFF_SPACE = {"method": "lora", "lora_rank": 64, "lora_alpha": 128.0, "target_modules": ["q_proj", "k_proj", "v_proj"],
             "learning_rate": 5e-2, "lr_schedule": "linear", "warmup_ratio": 0.2, "max_steps": 30, "seed": 3}


def _decision(did: str, node: str | None, op: str) -> Decision:
    return Decision(node_id=node, operator=op, policy="mcts", seed=0, index=0, decision_id=did)


def _node(nid: str, plan: dict, score: float | None = None, failure: str | None = None) -> list:
    evs = [PlanProposed(node_id=nid, parent_id=None, operator="draft", plan=plan), TrialStarted(node_id=nid, trial_id=f"t{nid}")]
    if failure is not None:
        return evs + [TrialFailed(node_id=nid, trial_id=f"t{nid}", reason=failure)]
    return evs + [TrialFinished(node_id=nid, trial_id=f"t{nid}", adapter=f"a{nid}"),
                  MetricRecorded(node_id=nid, name="exact_match", value=score, primary=True)]


def _tree(proposer: str, n_scored: int, direction: str = "max"):
    """``n_scored`` evaluated random drafts, one failed node per failure kind, one off-space node."""
    empty = fold([SearchStarted(task="arith-sub", proposer=proposer)])
    evs: list = [SearchStarted(task="arith-sub", proposer=proposer, metric_direction=direction)]
    for i in range(n_scored):
        plan = propose_random(empty, _decision(f"draft-{i}", None, "draft"), task="arith-sub", steps=STEPS,
                              batch_size=BATCH).plan
        evs += _node(f"n{i}", plan.model_dump(mode="json"), score=((i * 37) % 11) / 10)
    for j, reason in enumerate(("nan_loss", "timeout", "oom", "crash")):
        plan = propose_random(empty, _decision(f"fail-{j}", None, "draft"), task="arith-sub", steps=STEPS,
                              batch_size=BATCH).plan
        evs += _node(f"f{reason}", plan.model_dump(mode="json"), failure=reason)
    evs += _node("off", OFF_SPACE, score=0.55)
    return fold(evs)


def _answer(p) -> dict:
    return {"raw": p.raw, "rationale": p.rationale, "rejection": p.rejection}


def random_answers() -> list[dict]:
    tree = _tree("random", 6)
    out = []
    for i in range(40):
        out.append(_answer(propose_random(tree, _decision(f"d{i}", None, "draft"), task="arith-sub", steps=STEPS,
                                          batch_size=BATCH)))
    for node in ("n0", "n1", "n2", "n3", "off"):
        for i in range(40):
            out.append(_answer(propose_random(tree, _decision(f"i{node}{i}", node, "improve"), task="arith-sub",
                                              steps=STEPS, batch_size=BATCH)))
    for node in ("fnan_loss", "ftimeout", "foom", "fcrash", "off"):
        for i in range(5):
            out.append(_answer(propose_random(tree, _decision(f"b{node}{i}", node, "debug"), task="arith-sub",
                                              steps=STEPS, batch_size=BATCH)))
    return out


def optuna_answers() -> list[dict]:
    out = []
    for n_scored, direction in ((0, "max"), (3, "max"), (7, "max"), (7, "min")):
        tree = _tree("optuna", n_scored, direction)
        for i in range(4):
            out.append(_answer(propose_optuna(tree, _decision(f"o{n_scored}{direction}{i}", None, "draft"),
                                              task="arith-sub", steps=STEPS, batch_size=BATCH)))
    return out


def digest(answers: list[dict]) -> str:
    body = json.dumps(answers, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _optuna_version() -> str:
    import optuna

    return optuna.__version__


def test_random_proposals_are_the_golden_ones():
    assert digest(random_answers()) == json.loads(FIXTURE.read_text())["random"]


def test_optuna_proposals_are_the_golden_ones():
    """Never skipped: a new optuna whose TPE proposes differently fails here, and is re-recorded deliberately
    (``python tests/test_propose_golden.py``) rather than passing unseen."""
    want = json.loads(FIXTURE.read_text())["optuna"]
    assert digest(optuna_answers()) == want["digest"], (
        f"optuna proposals changed (recorded with optuna {want['optuna_version']}, this is {_optuna_version()})")


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps({"random": digest(random_answers()),
                                   "optuna": {"optuna_version": _optuna_version(), "digest": digest(optuna_answers())}},
                                  indent=2) + "\n")
    print(f"wrote {FIXTURE}")
