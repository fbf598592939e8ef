"""Baseline proposers: turn a policy decision into a child plan without an LLM.

* ``random``: a draft samples the search space; ``improve`` perturbs one or two
  values of the parent's plan (sometimes continuing from its adapter); ``debug``
  repairs a failed parent by its failure reason (NaN → lower lr, timeout → fewer
  steps, anything else → a fresh draft).
* ``optuna``: TPE through ask/tell. The study is rebuilt from the tree (every
  evaluated node is told back), so the proposer has no state of its own and a
  resumed or replayed search asks the same question.

Both are deterministic given the decision (its id seeds them), which is itself a
recorded event. The LLM proposer lives with the Researcher (it needs the LLM layer).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Mapping

from trex.plan import Plan, parse_plan
from trex.recipe import recipe_for_task

LR = (1e-4, 3e-2)
RANKS = (2, 4, 8, 16, 32)
TARGETS = {
    "qv": ("q_proj", "v_proj"),
    "attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class Proposal:
    plan: Plan | None
    raw: Any
    rationale: str
    rejection: str | None = None  # set when the raw plan failed validation (record PlanRejected)


def _plan(task: str, steps: int, batch_size: int, values: Mapping[str, Any]) -> dict[str, Any]:
    rank = int(values["lora_rank"])
    return {
        "method": "lora",
        "lora_rank": rank,
        "lora_alpha": float(2 * rank),
        "target_modules": list(TARGETS[values["targets"]]),
        "learning_rate": float(values["learning_rate"]),
        "lr_schedule": values["lr_schedule"],
        "warmup_ratio": float(values.get("warmup_ratio", 0.0)),
        "max_steps": int(values.get("max_steps", steps)),
        "batch_size": batch_size,
        "seed": int(values.get("seed", 0)),
        "continue_from_parent": bool(values.get("continue_from_parent", False)),
        "data": recipe_for_task(task).model_dump(mode="json"),
    }


def _targets_name(modules) -> str:
    mods = tuple(modules)
    for name, t in TARGETS.items():
        if t == mods:
            return name
    return "qv"


def _values_of(plan: Mapping[str, Any], steps: int) -> dict[str, Any]:
    return {
        "learning_rate": plan.get("learning_rate", 1e-3),
        "lora_rank": plan.get("lora_rank", 8),
        "targets": _targets_name(plan.get("target_modules", ("q_proj", "v_proj"))),
        "lr_schedule": plan.get("lr_schedule", "cosine"),
        "warmup_ratio": plan.get("warmup_ratio", 0.0),
        "max_steps": plan.get("max_steps") or steps,
        "seed": plan.get("seed", 0),
    }


def _sample(rng: random.Random) -> dict[str, Any]:
    return {
        "learning_rate": math.exp(rng.uniform(math.log(LR[0]), math.log(LR[1]))),
        "lora_rank": rng.choice(RANKS),
        "targets": rng.choice(list(TARGETS)),
        "lr_schedule": rng.choice(SCHEDULES),
        "warmup_ratio": rng.choice((0.0, 0.05, 0.1)),
    }


def _finish(task, steps, batch_size, values, rationale) -> Proposal:
    raw = _plan(task, steps, batch_size, values)
    parsed = parse_plan(raw)
    if isinstance(parsed, str):
        return Proposal(None, raw, rationale, rejection=parsed)
    return Proposal(parsed, raw, rationale)


def propose_random(tree, decision, *, task: str, steps: int, batch_size: int = 32) -> Proposal:
    rng = random.Random(decision.decision_id)
    parent = tree.nodes.get(decision.node_id) if decision.node_id else None
    if decision.operator == "draft" or parent is None:
        v = _sample(rng)
        return _finish(task, steps, batch_size, v, "random draft from the search space")
    v = _values_of(parent.plan, steps)
    if decision.operator == "debug":
        reason = parent.failure or ""
        if reason == "nan_loss":
            v["learning_rate"] = max(LR[0], v["learning_rate"] / 10)
            why = f"parent {parent.node_id} diverged (NaN loss): lr / 10"
        elif reason == "timeout":
            v["max_steps"] = max(1, int(v["max_steps"]) // 2)
            why = f"parent {parent.node_id} timed out: half the steps"
        elif reason == "oom":
            v["lora_rank"] = max(RANKS[0], int(v["lora_rank"]) // 2)
            why = f"parent {parent.node_id} ran out of memory: half the rank"
        else:
            v = _sample(rng)
            why = f"parent {parent.node_id} failed ({reason or 'unknown'}): a fresh draft"
        return _finish(task, steps, batch_size, v, why)
    same_shape = (parent.plan.get("method", "lora") == "lora" and v["lora_rank"] in RANKS
                  and tuple(parent.plan.get("target_modules", ())) in TARGETS.values())
    if parent.adapter and same_shape and rng.random() < 1 / 3:
        # continue training the parent's adapter: same rank and modules (the checkpoint fixes them),
        # a new learning rate, half the steps — the child pays only for its own steps
        v["continue_from_parent"] = True
        v["learning_rate"] = min(LR[1], max(LR[0], v["learning_rate"] * rng.choice((1 / 3, 1 / 2, 1, 2))))
        v["max_steps"] = max(1, int(v["max_steps"]) // 2)
        return _finish(task, steps, batch_size, v,
                       f"continue {parent.node_id}'s adapter for {v['max_steps']} more steps at lr {v['learning_rate']:.3g}")
    # improve: perturb one or two values of a good parent
    changed = []
    for key in rng.sample(["learning_rate", "lora_rank", "targets", "lr_schedule"], k=rng.choice((1, 2))):
        if key == "learning_rate":  # only moves that stay in range and change something
            moves = [x for x in (min(LR[1], max(LR[0], v[key] * f)) for f in (1 / 3, 1 / 2, 2, 3)) if x != v[key]]
            v[key] = rng.choice(moves)
        elif key == "lora_rank":
            i = RANKS.index(v[key]) if v[key] in RANKS else 2
            v[key] = RANKS[rng.choice([j for j in (i - 1, i + 1) if 0 <= j < len(RANKS)])]
        elif key == "targets":
            v[key] = rng.choice([t for t in TARGETS if t != v[key]])
        else:
            v[key] = rng.choice([s for s in SCHEDULES if s != v[key]])
        changed.append(key)
    return _finish(task, steps, batch_size, v, f"improve {parent.node_id}: changed {', '.join(changed)}")


def propose_optuna(tree, decision, *, task: str, steps: int, batch_size: int = 32) -> Proposal:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {
        "learning_rate": optuna.distributions.FloatDistribution(LR[0], LR[1], log=True),
        "lora_rank": optuna.distributions.CategoricalDistribution(RANKS),
        "targets": optuna.distributions.CategoricalDistribution(tuple(TARGETS)),
        "lr_schedule": optuna.distributions.CategoricalDistribution(SCHEDULES),
        "warmup_ratio": optuna.distributions.CategoricalDistribution((0.0, 0.05, 0.1)),
    }
    direction = "minimize" if tree.metric_direction == "min" else "maximize"
    seed = random.Random(decision.decision_id).randrange(2**31)
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))
    told = 0
    for node in sorted(tree.nodes.values(), key=lambda n: n.created_seq):
        if node.score is None:
            continue
        vals = _values_of(node.plan, steps)
        params = {k: vals[k] for k in dists}
        if params["lora_rank"] not in RANKS or not (LR[0] <= params["learning_rate"] <= LR[1]):
            continue
        if params["warmup_ratio"] not in (0.0, 0.05, 0.1):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(node.score)))
        told += 1
    trial = study.ask(dists)
    return _finish(task, steps, batch_size, dict(trial.params), f"TPE suggestion after {told} evaluated trials")


PROPOSERS = {"random": propose_random, "optuna": propose_optuna}
