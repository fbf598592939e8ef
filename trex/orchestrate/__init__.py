"""The rules of a search loop, once, for both drivers.

The in-process driver (:mod:`trex.conductor`, ``trex demo``) and the Ray Conductor
(:mod:`trex.actors.conduct`) differ in how work is done — a call in this
process, or an actor on a cluster — and in nothing they decide. What they decide lives in
plain functions over the folded tree:

* :mod:`~trex.orchestrate.rules` — node, decision, proposal and command ids; what counts
  against the budget; how often a trial, a dispatch, a proposal or an evaluation is retried;
  when a search stops and what its ``SearchFinished`` says.
* :mod:`~trex.orchestrate.recovery` — what a driver starting on a search with history does
  with each node (re-attach, abandon, retrain, evaluate) and each unanswered decision, and
  whether it records ``SearchResumed``.

Every counter these rules read (rejections in a row, proposal and dispatch failures, open
trials, the base score) is a field of the fold, so a driver that restarts knows what the
one that died knew. Nothing here imports torch, transformers or Ray.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BASE_NODE": "rules", "ConcurrentRun": "rules", "MAX_EVAL_ATTEMPTS": "rules",
    "MAX_DISPATCH_ATTEMPTS": "rules", "MAX_PROPOSAL_ATTEMPTS": "rules", "MAX_REJECTIONS_IN_A_ROW": "rules",
    "MAX_TRIAL_ATTEMPTS": "rules", "command_id": "rules", "decision_event_id": "rules", "exhausted": "rules",
    "finish_events": "rules", "next_node_id": "rules", "proposal_event_id": "rules", "stop_reason": "rules",
    "trials_used": "rules",
    "Abandon": "recovery", "Evaluate": "recovery", "EvaluateBase": "recovery", "Reattach": "recovery",
    "Repropose": "recovery", "Train": "recovery", "needs_resume": "recovery", "recovery_plan": "recovery",
    "may_retry_dispatch": "rules", "may_retry_evaluation": "rules", "may_retry_proposal": "rules",
    "may_retry_trial": "rules",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'trex.orchestrate' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trex.orchestrate.{mod}"), name)
