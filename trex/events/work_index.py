"""Identical work in a home's log: the finished (and reused) trials, by work key.

The Executor serves a plan from earlier identical work (the same work key) instead of training it
again. Its index under the home knows what was trained there; the log knows the rest (imported
searches, executors on other nodes). :class:`WorkIndex` folds a log into that map per stream,
incrementally, so that the home's log service, which keeps one, answers a lookup for the cost of
the events since the last one rather than a read of every search in the home.
"""
from __future__ import annotations

from collections import deque
from typing import Any


MAX_CURVE = 1_000
"""Points of a sampled curve an entry keeps: the last ones, which is what judging the curve's end reads (a
trial samples every ``progress_every`` steps: 40 points for 400 steps at the default 10)."""


def sampled_curve(raw: Any) -> tuple[tuple[int, float | None], ...]:
    """A trial's sampled (step, loss) curve from a cache entry or an event: pairs of an int step and a
    finite loss (or None); anything else — a cache file edited by hand, an older entry — reads as no
    curve, never as a wrong one."""
    try:
        out = []
        for step, loss in list(raw or ())[-MAX_CURVE:]:
            if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 2**63:
                return ()
            if loss is not None:
                if isinstance(loss, bool) or not isinstance(loss, (int, float)) or loss != loss \
                        or abs(loss) == float("inf"):
                    return ()
                loss = float(loss)
            out.append((step, loss))
        return tuple(out)
    except (TypeError, ValueError):
        return ()


def work_entry(env, curve: Any = ()) -> tuple[str, dict[str, Any]] | None:
    """(work key, the Executor's cache entry) of a ``TrialFinished`` (``curve``: its trial's sampled
    losses) or ``TrialReused`` (which carries its source's); else None. A reuse names the trial it
    came from, so the entry points at the work's origin."""
    if env.type not in ("TrialFinished", "TrialReused"):
        return None
    d = env.data
    key, adapter = d.get("work_key"), d.get("adapter")
    if not key or not adapter:
        return None
    if env.type == "TrialFinished":
        src = (env.search_id, d.get("node_id", ""))
    else:
        src, curve = (d.get("source_search_id", ""), d.get("source_node_id", "")), d.get("progress", ())
    return key, {"adapter": adapter, "plan_hash": d.get("plan_hash", ""), "search_id": src[0], "node_id": src[1],
                 "steps": d.get("steps", 0), "train_metrics": d.get("train_metrics", {}),
                 "compute_seconds": d.get("compute_seconds", 0.0),
                 "progress": [list(p) for p in sampled_curve(curve)]}


_CLOSES_TRIAL = ("TrialFinished", "TrialFailed", "TrialAbandoned")


class WorkIndex:
    """Work key -> the entries of every trial that did that work, in log order, per stream."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}  # stream -> the last seq folded in
        self.entries: dict[str, list[dict]] = {}
        self._curves: dict[tuple[str, str], deque] = {}  # open trials' sampled losses (the last MAX_CURVE)

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
            trial = (env.search_id, str(env.data.get("trial_id", "")))
            if env.type == "TrialProgressed":
                curve = self._curves.setdefault(trial, deque(maxlen=MAX_CURVE))
                if curve and env.data.get("step", 0) <= curve[-1][0]:
                    curve.clear()  # the steps started again: a new attempt, and only the last one counts
                curve.append((env.data.get("step", 0), env.data.get("loss")))
                continue
            if env.type == "SearchFinished":  # a trial left open in a finished search never closes
                for k in [k for k in self._curves if k[0] == env.search_id]:
                    del self._curves[k]
            curve = self._curves.pop(trial, ()) if env.type in _CLOSES_TRIAL else ()
            hit = work_entry(env, curve)
            if hit is not None:
                self.entries.setdefault(hit[0], []).append(hit[1])

    def candidates(self, key: str) -> list[dict]:
        return [dict(e) for e in self.entries.get(key, ())]
