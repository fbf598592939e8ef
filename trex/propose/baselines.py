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

import random
from dataclasses import dataclass
from typing import Any, Mapping

from trex.plan import Plan, parse_plan
from trex.propose import space
from trex.propose.data_space import DataChoiceError, adapters_of, cleanable_node
from trex.propose.space import DIMS, TARGETS, off_space, optuna_distributions, sample, to_plan, values_of

_LR, _RANK = DIMS["learning_rate"], DIMS["lora_rank"]
# the names the proposers used before there was one space (kept for callers)
LR = (_LR.low, _LR.high)
RANKS = _RANK.choices
SCHEDULES = DIMS["lr_schedule"].choices


@dataclass(frozen=True)
class Hypothesis:
    """A proposal's falsifiable prediction: ``metric op threshold`` on validation, and what it rests on."""

    text: str
    metric: str
    op: str  # ">=", ">", "<=", "<"
    threshold: float
    evidence: str = ""
    cites: tuple[str, ...] = ()  # event ids of the ToolCalled events it rests on

    def holds(self, value: float) -> bool:
        """Whether ``value`` bears the prediction out (an unknown operator never does)."""
        return {">=": value >= self.threshold, ">": value > self.threshold, "<=": value <= self.threshold,
                "<": value < self.threshold}.get(self.op, False)

    def as_dict(self) -> dict:
        return {"text": self.text, "metric": self.metric, "op": self.op, "threshold": self.threshold,
                "evidence": self.evidence[:2000], "cites": tuple(self.cites)}


@dataclass(frozen=True)
class Proposal:
    plan: Plan | None
    raw: Any
    rationale: str
    rejection: str | None = None  # set when the raw plan failed validation (record PlanRejected)
    hypothesis: Hypothesis | None = None  # recorded as HypothesisStated on the node, tested by the Distiller


def finish(task: str, steps: int, batch_size: int, values: Mapping[str, Any], rationale: str, data=None,
           tree=None) -> Proposal:
    """Expand ``values`` into a plan and parse it: a Proposal with the plan, or with the rejection.
    ``data``: the task's :class:`~trex.propose.data_space.DataSpace` (the recipe follows the values);
    ``tree``: where a cleaning step's node is looked up."""
    try:
        raw = to_plan(task, steps, batch_size, values, data, adapters_of(tree) if tree is not None else {})
    except DataChoiceError as e:
        return Proposal(None, dict(values), rationale, rejection=f"invalid data choice: {e}")
    parsed = parse_plan(raw)
    if isinstance(parsed, str):
        return Proposal(None, raw, rationale, rejection=parsed)
    return Proposal(parsed, raw, rationale)


def _clamp(d: space.Dimension, x: float) -> float:
    return min(d.high, max(d.low, x))


def _perturb(d: space.Dimension, v: Any, rng: random.Random) -> Any:
    """A small move along one dimension that stays in the space and changes the value."""
    if d.kind == "float":
        moves = [x for x in (_clamp(d, v * f) for f in (1 / 3, 1 / 2, 2, 3)) if x != v]
        return rng.choice(moves)
    if d.ordered:
        i = d.choices.index(v) if v in d.choices else d.choices.index(d.default)
        return d.choices[rng.choice([j for j in (i - 1, i + 1) if 0 <= j < len(d.choices)])]
    return rng.choice([c for c in d.choices if c != v])


def propose_random(tree, decision, *, task: str, steps: int, batch_size: int = 32, data=None) -> Proposal:
    """``data``: the task's data space (None: training values only, the train split as is)."""
    rng = random.Random(decision.decision_id)
    parent = tree.nodes.get(decision.node_id) if decision.node_id else None

    def done(v, why):
        return finish(task, steps, batch_size, v, why, data, tree)

    if decision.operator == "draft" or parent is None:
        v = sample(rng)
        if data is not None:  # drawn after the training values: those are the draws they always were
            v.update(data.sample(rng, cleanable_node(tree)))
        return done(v, "random draft from the search space")
    v = values_of(parent.plan, steps, data)
    if decision.operator == "debug":
        reason = parent.failure or ""
        if reason == "nan_loss":
            v["learning_rate"] = max(_LR.low, v["learning_rate"] / 10)
            why = f"parent {parent.node_id} diverged (NaN loss): lr / 10"
        elif reason == "timeout":
            v["max_steps"] = max(1, int(v["max_steps"]) // 2)
            why = f"parent {parent.node_id} timed out: half the steps"
        elif reason == "oom":
            v["lora_rank"] = max(_RANK.choices[0], int(v["lora_rank"]) // 2)
            why = f"parent {parent.node_id} ran out of memory: half the rank"
        else:
            v = sample(rng)
            if data is not None:
                v.update(data.sample(rng, cleanable_node(tree)))
            why = f"parent {parent.node_id} failed ({reason or 'unknown'}): a fresh draft"
        return done(v, why)
    same_shape = (parent.plan.get("method", "lora") == "lora" and v["lora_rank"] in _RANK.choices
                  and tuple(parent.plan.get("target_modules", ())) in TARGETS.values())
    if parent.adapter and same_shape and rng.random() < 1 / 3:
        # continue training the parent's adapter: same rank and modules (the checkpoint fixes them),
        # a new learning rate, half the steps — the child pays only for its own steps; with a data
        # space, half the time on another recipe (a second stage: mix replay data in, clean, ...)
        v["continue_from_parent"] = True
        v["learning_rate"] = _clamp(_LR, v["learning_rate"] * rng.choice((1 / 3, 1 / 2, 1, 2)))
        v["max_steps"] = max(1, int(v["max_steps"]) // 2)
        stage = ""
        if data is not None and rng.random() < 1 / 2:
            stage = f", data: {data.perturb(v, rng, cleanable_node(tree, parent))} changed"
        return done(v, f"continue {parent.node_id}'s adapter for {v['max_steps']} more steps at lr "
                       f"{v['learning_rate']:.3g}{stage}")
    # improve: perturb one or two values of a good parent (training or data)
    names = [d.name for d in space.SPACE if d.perturb] + (["data"] if data is not None else [])
    changed = []
    for key in rng.sample(names, k=rng.choice((1, 2))):
        if key == "data":
            changed.append(data.perturb(v, rng, cleanable_node(tree, parent)))
        else:
            v[key] = _perturb(DIMS[key], v[key], rng)
            changed.append(key)
    return done(v, f"improve {parent.node_id}: changed {', '.join(changed)}")


def _represents(data, vals, node, tree) -> bool:
    """Whether the data space's values of ``node`` give back its recipe (a user's or an older space's
    recipe that the space cannot express is not told to optuna)."""
    from trex.recipe import Recipe

    try:
        return Recipe.model_validate(data.to_recipe(vals, adapters_of(tree))) == Recipe.model_validate(
            node.plan.get("data") or {})
    except (DataChoiceError, ValueError, TypeError):
        return False


def _constraint_attrs(tree, node) -> dict[str, float]:
    """The node's constraint values as optuna stores them (``Trial.set_constraint``: > 0 is a violation by
    that much), so TPE models infeasible trials apart from the feasible ones (optuna 5's TPE reads
    them from every trial, no ``constraints_func`` needed)."""
    out = {}
    metrics = dict(node.metrics)
    for c in tree.started.constraints:
        v = metrics.get(c.metric)
        if v is None or v != v:
            gap = 1.0  # not measured: infeasible
        else:
            gap = max((c.at_least - v) if c.at_least is not None else -1.0,
                      (v - c.at_most) if c.at_most is not None else -1.0)
        out[f"constraints:{c.metric}"] = float(gap)
    return out


def propose_optuna(tree, decision, *, task: str, steps: int, batch_size: int = 32, data=None,
                   fixed: Mapping[str, Any] | None = None) -> Proposal:
    """TPE's plan from the tree's evaluated nodes. ``fixed``: optuna parameters held at these values
    (the structure a caller chose), the others TPE's, conditioned on them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = optuna_distributions()
    direction = "minimize" if tree.metric_direction == "min" else "maximize"
    seed = random.Random(decision.decision_id).randrange(2**31)
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))
    parent = tree.nodes.get(decision.node_id) if decision.node_id else None
    cleanable = cleanable_node(tree, parent) if data is not None else None
    told = 0
    for node in sorted(tree.nodes.values(), key=lambda n: n.created_seq):
        if node.score is None:
            continue
        vals = values_of(node.plan, steps, data)
        params = {k: vals[k] for k in dists}
        if off_space(params):  # a plan outside the space (a user's, an older space's) is not told
            continue
        nd = dict(dists)
        if data is not None:
            if data.off_space(vals) or not _represents(data, vals, node, tree):
                continue  # a data value off the space's grid (a user's, an LLM's) cannot be told either
            dp, dd = data.optuna_params(vals, with_clean=cleanable is not None)
            params.update(dp)
            nd.update(dd)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=nd, value=float(node.score),
                                                  system_attrs=_constraint_attrs(tree, node)))
        told += 1
    if fixed:
        study.enqueue_trial(dict(fixed), skip_if_exists=False)
    if data is None:
        trial = study.ask(dists)
        return finish(task, steps, batch_size, dict(trial.params), f"TPE suggestion after {told} evaluated trials")
    trial = study.ask()
    v = {name: (trial.suggest_float(name, d.low, d.high, log=d.log) if hasattr(d, "low")
                else trial.suggest_categorical(name, d.choices)) for name, d in dists.items()}
    v.update(data.suggest(trial, cleanable))
    return finish(task, steps, batch_size, v, f"TPE suggestion after {told} evaluated trials", data, tree)


PROPOSERS = {"random": propose_random, "optuna": propose_optuna}

__all__ = ["LR", "PROPOSERS", "Proposal", "RANKS", "SCHEDULES", "TARGETS", "finish", "propose_optuna",
           "propose_random"]
