"""Deterministic synthetic searches, for golden logs, property tests and the replay benchmark.

``synthetic_search`` plays a plausible search (drafts, improvements, debugs,
failures, LLM calls, insights) from a seed and returns its events as
:class:`RawEvent` with fixed event ids and ``recorded_at`` values, so the same
arguments always give byte-identical logs. It does not run a policy: parents
are picked by its own seeded generator.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from trex.events.base import Event, encode
from trex.events.envelope import RawEvent, canonical_json
from trex.events.evaluation import EvaluationFinished, MetricRecorded
from trex.events.insights import InsightDistilled, InsightRetired
from trex.events.plans import LlmCallMade, PlanProposed, PlanRejected
from trex.events.search import Budget, NodeSelected, NodePruned, SearchFinished, SearchStarted
from trex.events.trials import TrialFailed, TrialFinished, TrialProgressed, TrialStarted

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def raw(ev: Event, event_id: str, index: int, correlation_id: str | None = None) -> RawEvent:
    """A RawEvent with a fixed id and a fixed recorded_at (EPOCH + index seconds)."""
    type_, version, payload = encode(ev)
    at = (EPOCH + timedelta(seconds=index)).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return RawEvent(event_id=event_id, type=type_, schema_version=version, payload=canonical_json(payload),
                    recorded_at=at, correlation_id=correlation_id)


def synthetic_search(
    search_id: str,
    n_nodes: int,
    seed: int = 0,
    *,
    n_drafts: int = 3,
    fail_rate: float = 0.15,
    progress_steps: int = 2,
    direction: str = "max",
    finish: bool = True,
    llm_calls: bool = True,
) -> list[RawEvent]:
    rng = random.Random(f"synthetic:{seed}")
    evs: list[tuple[Event, str | None]] = []
    add = lambda ev, corr=None: evs.append((ev, corr))  # noqa: E731
    add(SearchStarted(task="arith-sub", base_model="tiny-gpt2", proposer="synthetic", policy="mcts", seed=seed,
                      budget=Budget(max_trials=max(1, n_nodes * 2), max_tokens=10**9),
                      metric_direction=direction))
    evaluated: list[str] = []
    failed: list[tuple[str, int]] = []  # (node, debug depth)
    insights: list[str] = []
    for i in range(n_nodes):
        nid = f"n{i:05d}"
        if i < n_drafts or not (evaluated or failed):
            parent, op, ddepth = None, "draft", 0
        elif failed and (not evaluated or rng.random() < 0.3):
            parent, pd = failed.pop(rng.randrange(len(failed)))
            op, ddepth = "debug", pd + 1
        else:
            parent, op, ddepth = rng.choice(evaluated[-50:]), "improve", 0
        dec = f"{search_id}-dec{i}"
        add(NodeSelected(decision_id=dec, node_id=parent, operator=op, policy="mcts", seed=seed,
                         scores=((parent or "root", round(rng.random(), 6)),), reason="synthetic"))
        if llm_calls:
            add(LlmCallMade(call_id=f"call{i}", purpose="propose", backend="fake", model="fake-1",
                            prompt_hash=f"{i:064x}", response="{}", prompt_tokens=100 + i % 7,
                            completion_tokens=20 + i % 5), dec)
        if i % 97 == 13:
            add(PlanRejected(parent_id=parent, proposer="synthetic", reason="lr out of range", raw="{...}"))
            continue
        lr = round(10 ** rng.uniform(-5, -3), 8)
        plan = {"lr": lr, "epochs": rng.randint(1, 3), "lora_r": rng.choice([4, 8, 16]), "recipe": "default"}
        given = tuple(insights[-2:])
        add(PlanProposed(node_id=nid, parent_id=parent, operator=op, plan=plan, plan_hash=f"h{i}",
                         rationale=f"try lr={lr}", proposer="synthetic", decision_id=dec, insights=given))
        trial = f"t{i}"
        add(TrialStarted(node_id=nid, trial_id=trial, plan_hash=f"h{i}"))
        for s in range(progress_steps):
            add(TrialProgressed(node_id=nid, trial_id=trial, step=(s + 1) * 10, loss=round(2.0 / (s + 1) + rng.random(), 6)))
        cs = round(rng.uniform(5, 60), 3)
        if rng.random() < fail_rate:
            add(TrialFailed(node_id=nid, trial_id=trial, reason=rng.choice(["oom", "nan_loss", "crash"]),
                            message="boom", log_tail="Traceback...\nRuntimeError: boom", compute_seconds=cs))
            if ddepth < 3:
                failed.append((nid, ddepth))
            continue
        add(TrialFinished(node_id=nid, trial_id=trial, adapter=f"a{i:08x}", plan_hash=f"h{i}", steps=30,
                          train_metrics={"train_loss": round(rng.random(), 6)}, compute_seconds=cs))
        score = round(rng.random(), 6)
        add(MetricRecorded(node_id=nid, name="accuracy", value=score, primary=True, eval_id=f"e{i}"))
        add(MetricRecorded(node_id=nid, name="loss", value=round(1 - score, 6), eval_id=f"e{i}"))
        add(EvaluationFinished(node_id=nid, eval_id=f"e{i}", backend="cpu", n_examples=64))
        evaluated.append(nid)
        if i % 50 == 49:
            iid = f"ins{i}"
            add(InsightDistilled(insight_id=iid, text=f"lr near {lr} helps", support=(nid,), task="arith-sub"))
            insights.append(iid)
            if len(insights) > 3 and i % 100 == 99:
                add(InsightRetired(insight_id=insights.pop(0), reason="contradicted"))
        if i % 211 == 100:
            add(NodePruned(node_id=nid, reason="dominated"))
    if finish:
        add(SearchFinished(reason="budget"))
    return [raw(ev, f"{search_id}-{k:07d}", k, corr) for k, (ev, corr) in enumerate(evs)]
