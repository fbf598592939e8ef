"""Which executors of a shared pool a search holds, folded from its own events (pure).

A restarted Conductor takes its leases back from this (the scheduler's own table is soft state,
re-asserted by every Conductor's calls), and ``trex status`` shows a search that waits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Leases:
    held: frozenset[int] = frozenset()
    waiting: bool = False  # an ExecutorsAwaited not yet followed by a lease


def apply_lease(state: Leases, type_: str, data: dict) -> Leases:
    if type_ == "ExecutorLeased":
        return Leases(state.held | {int(data["executor"])}, False)
    if type_ == "ExecutorReleased":
        return Leases(state.held - {int(data["executor"])}, state.waiting)
    if type_ == "ExecutorsAwaited":
        return Leases(state.held, True)
    if type_ == "SearchFinished":
        return Leases(frozenset(), False)
    return state


def leases_of(envelopes: Iterable) -> Leases:
    """The lease state after ``envelopes`` (a search's stream, in order)."""
    state = Leases()
    for env in envelopes:
        if env.type in ("ExecutorLeased", "ExecutorReleased", "ExecutorsAwaited", "SearchFinished"):
            state = apply_lease(state, env.type, env.data)
    return state
