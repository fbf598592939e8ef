"""Identical work in a home's log: the finished (and reused) trials, by work key.

The Executor serves a plan from earlier identical work (the same work key) instead of training it
again. Its index under the home knows what was trained there; the log knows the rest (imported
searches, executors on other nodes). :class:`WorkIndex` folds a log into that map per stream,
incrementally, so that the home's log service, which keeps one, answers a lookup for the cost of
the events since the last one rather than a read of every search in the home.
"""
from __future__ import annotations

from typing import Any


def work_entry(env) -> tuple[str, dict[str, Any]] | None:
    """(work key, the Executor's cache entry) of a ``TrialFinished`` or ``TrialReused``; else None.
    A reuse names the trial it came from, so the entry points at the work's origin."""
    if env.type not in ("TrialFinished", "TrialReused"):
        return None
    d = env.data
    key, adapter = d.get("work_key"), d.get("adapter")
    if not key or not adapter:
        return None
    if env.type == "TrialFinished":
        src = (env.search_id, d.get("node_id", ""))
    else:
        src = (d.get("source_search_id", ""), d.get("source_node_id", ""))
    return key, {"adapter": adapter, "plan_hash": d.get("plan_hash", ""), "search_id": src[0], "node_id": src[1],
                 "steps": d.get("steps", 0), "train_metrics": d.get("train_metrics", {}),
                 "compute_seconds": d.get("compute_seconds", 0.0)}


class WorkIndex:
    """Work key -> the entries of every trial that did that work, in log order, per stream."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}  # stream -> the last seq folded in
        self.entries: dict[str, list[dict]] = {}

    def update(self, log) -> "WorkIndex":
        """Fold in what ``log`` holds past what this index has seen (every stream, new ones included).

        The first update reads the whole log once, in log order. Later ones read only the streams
        that moved, past what was seen: a log that appends in this process (the log service's) says
        which without a read (:meth:`EventLog.stream_heads`). It knows of a writer beside it (an
        import) from its next append on; until then a lookup misses that work, which costs a trial
        trained again, never a wrong answer. Any other log is listed whole."""
        if not self.seen:
            self._fold(log.read())
            return self
        heads = getattr(log, "stream_heads", None)
        heads = heads() if heads is not None else None
        sids = [s for s, seq in heads.items() if seq > self.seen.get(s, 0)] if heads else log.searches()
        for sid in sids:
            self._fold(log.read(sid, after_seq=self.seen.get(sid, 0)))
        return self

    def _fold(self, envs) -> None:
        for env in envs:
            if env.seq <= self.seen.get(env.search_id, 0):
                continue
            self.seen[env.search_id] = env.seq
            hit = work_entry(env)
            if hit is not None:
                self.entries.setdefault(hit[0], []).append(hit[1])

    def candidates(self, key: str) -> list[dict]:
        return [dict(e) for e in self.entries.get(key, ())]
