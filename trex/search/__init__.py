"""The search tree: a pure projection of a search's events, its policies, forks and views.

Public API::

    from trex.search import fold, apply, build_tree, load_events, tree_hash, select, budget_check
    tree = build_tree(EventLog(home), search_id)      # fork prefixes resolved
    decision = select(tree)                           # -> record decision.to_event() as NodeSelected
    exhausted = budget_check(tree, elapsed_seconds)   # -> BudgetExhausted | None, to record

Nothing here imports torch, transformers or Ray. Names resolve lazily, so that `trex sql`
(which needs only :mod:`trex.search.views`) does not pay for the rest.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "budget_check": "budget",
    "canonical": "hashing", "tree_hash": "hashing", "tree_to_dict": "hashing",
    "Decision": "policy", "PolicyError": "policy", "mcts_stats": "policy", "pending_targets": "policy",
    "select": "policy", "select_many": "policy",
    "HANDLERS": "projection", "apply": "projection", "fold": "projection",
    "ReplayError": "replay", "build_tree": "replay", "fork": "replay", "fork_point": "replay",
    "load_events": "replay",
    "STATUSES": "tree", "DecisionRecord": "tree", "HistoryPoint": "tree", "Node": "tree", "SearchTree": "tree",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'trex.search' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trex.search.{mod}"), name)
