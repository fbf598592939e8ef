"""What a driver does first on a search with history: one plan, from the tree alone.

A driver (first run, a restart after SIGKILL, ``trex resume``) folds the log, asks its
executors which commands they are running, and calls :func:`recovery_plan`. Each node gets
at most one action:

* its command still runs on a live executor → :class:`Reattach` (never trained twice);
* ``running`` (its worker is gone) → :class:`Abandon` its open trials, then :class:`Train`
  it again if it has attempts left;
* ``abandoned`` with attempts left, or ``proposed`` → :class:`Train`;
* ``trained`` (a result without a score) → :class:`Evaluate`.

The base model is evaluated first if it has no metrics; decisions recorded but never answered
are asked again (:class:`Repropose`; proposers are deterministic given the decision). The plan
must be made *before* ``SearchResumed`` is recorded, since the fold closes open decisions then.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Union

from trex.orchestrate.rules import command_id, may_retry_trial
from trex.search.tree import DecisionRecord, SearchTree


@dataclass(frozen=True)
class EvaluateBase:
    pass


@dataclass(frozen=True)
class Reattach:
    node_id: str


@dataclass(frozen=True)
class Abandon:
    node_id: str
    trial_ids: tuple[str, ...]


@dataclass(frozen=True)
class Train:
    node_id: str
    attempt: int


@dataclass(frozen=True)
class Evaluate:
    node_id: str
    adapter: str | None


@dataclass(frozen=True)
class Repropose:
    decision: DecisionRecord


Action = Union[EvaluateBase, Reattach, Abandon, Train, Evaluate, Repropose]


def needs_resume(tree: SearchTree) -> bool:
    """A driver starting on this search records ``SearchResumed``: it has a history and is not over."""
    return tree.status == "running" and tree.activity > 0


def recovery_plan(tree: SearchTree, inflight: Collection[str] = ()) -> list[Action]:
    """The actions, in order, for a driver taking over ``tree``. ``inflight``: command ids live executors run."""
    if tree.status != "running":
        return []
    out: list[Action] = []
    if not tree.base_metrics:
        out.append(EvaluateBase())
    for nid in tree.order:
        node = tree.nodes[nid]
        if command_id(tree.search_id, nid) in inflight:
            out.append(Reattach(nid))
        elif node.status == "running":
            out.append(Abandon(nid, node.open_trials))
            if may_retry_trial(node):
                out.append(Train(nid, node.trials + 1))
        elif node.status == "abandoned" and may_retry_trial(node) or node.status == "proposed":
            out.append(Train(nid, node.trials + 1))
        elif node.status == "trained":
            out.append(Evaluate(nid, node.adapter))
    out.extend(Repropose(rec) for rec in tree.decisions if rec.decision_id in tree.open_decisions)
    return out
