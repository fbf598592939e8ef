"""Budget checks: trials, wall-clock, compute seconds, LLM tokens — whichever runs out first.

Pure: the elapsed wall-clock time is passed in by the caller (the projection has
no clock). Trials count nodes whose trial started (a retry after a crash is the same trial) and
results reused, so parallel workers cannot overshoot the limit by starting trials that are still
running. The budget is
the search's (SearchStarted.budget), or the fork's when its SearchForked names one: the fold
then offsets it by the prefix's usage, so a fork's own budget counts only the fork's own work.
"""
from __future__ import annotations

from trex.events.search import BudgetExhausted
from trex.search.tree import SearchTree

# checked in this order; the first one used up is reported
KINDS = (("trials", "max_trials"), ("seconds", "max_seconds"),
         ("compute_seconds", "max_compute_seconds"), ("tokens", "max_tokens"))


def budget_used(tree: SearchTree, now_seconds_since_start: float | None = None) -> dict[str, float | None]:
    return {
        "trials": float(tree.nodes_tried + tree.trials_reused),
        "seconds": None if now_seconds_since_start is None else float(now_seconds_since_start),
        "compute_seconds": float(tree.compute_seconds),
        "tokens": float(tree.tokens),
    }


def budget_check(tree: SearchTree, now_seconds_since_start: float | None = None) -> BudgetExhausted | None:
    """The BudgetExhausted event to record, or None while every limit holds."""
    used = budget_used(tree, now_seconds_since_start)
    for kind, key in KINDS:
        limit = tree.budget.get(key)
        u = used[kind]
        if limit is None or u is None:
            continue
        if u >= float(limit):
            return BudgetExhausted(kind=kind, limit=float(limit), used=u)
    return None
