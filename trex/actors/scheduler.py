"""Executors shared by searches: a scheduler that leases the executors of one named pool.

Several Conductors on one cluster (``trex-actors start`` and ``trex run --address``) each ask
for executors when they have a plan ready and give them back when a trial comes back; no
executor is leased to two searches at once, so no executor ever runs two trials at once. The
rule (:class:`LeaseBook`) is plain and fair: a free executor goes to the waiting search that
holds the fewest, then to the one that has waited longest. The table is soft state: every
call re-asserts what the caller holds (a restarted scheduler learns it back), a restarted
Conductor takes its leases back from its log (:mod:`trex.orchestrate.leases`), and a search
not heard from for :data:`LEASE_TTL_S` (its Conductor gone) loses its leases.
"""
from __future__ import annotations

import threading
import time

LEASE_TTL_S = 900.0  # far above any one wait of a Conductor (a log-service restart: trex.actors.log_service.LOG_WAIT_S)
NAME = "trex-scheduler"
MAX_POOL = 1024  # executors in one pool at most: a caller's size beyond it is refused, never looped over


class SchedulerCallError(ValueError):
    """A call whose arguments are not what the scheduler takes: refused before anything changes."""


def _whole(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SchedulerCallError(f"invalid {name} {value!r}: a whole number from {low} to {high}")
    return value


def check_call(sid, executors=(), want: int = 0, size: int | None = None) -> None:
    """What every scheduler call takes: a search id, executor indexes inside a pool, a count."""
    from trex.events.log import EventError, check_search_id

    try:
        check_search_id(sid)
    except EventError as e:
        raise SchedulerCallError(str(e)) from None
    if not isinstance(executors, (list, tuple)) or len(executors) > MAX_POOL:
        raise SchedulerCallError(f"invalid executors {str(executors)[:80]}: a list of at most {MAX_POOL} indexes")
    for i in executors:
        _whole("executor index", i, 0, MAX_POOL - 1)
    _whole("want", want, 0, MAX_POOL)
    if size is not None:
        _whole("pool size", size, 1, MAX_POOL)


class LeaseBook:
    """Who holds which executor of a pool of ``size``, and who waits since when."""

    def __init__(self, size: int):
        self.size = size
        self.holder: dict[int, str] = {}
        self.waiting: dict[str, tuple[float, int]] = {}  # search -> (waiting since, its pool size)
        self.seen: dict[str, float] = {}

    def _count(self, sid: str) -> int:
        return sum(1 for h in self.holder.values() if h == sid)

    def _expire(self, now: float) -> None:
        gone = {s for s, t in self.seen.items() if now - t > LEASE_TTL_S}
        for i in [i for i, h in self.holder.items() if h in gone]:
            del self.holder[i]
        for s in gone:
            self.waiting.pop(s, None)
            self.seen.pop(s, None)

    def request(self, sid: str, held: list[int], want: int, now: float,
                size: int | None = None) -> tuple[list[int], list[int]]:
        """(executors newly leased to ``sid``, at most ``want``; what it holds now, confirmed).

        ``held`` is what the caller believes it holds: what is free is taken back (a restarted
        scheduler learns it), what another search holds now is not confirmed (the caller drops
        it), and what the book gives ``sid`` beyond ``held`` (a grant whose answer was lost) is
        freed. Only the first ``size`` executors are leased to it (a search started with fewer
        executors uses only those)."""
        self.size = max(self.size, size or 0)
        size = self.size if size is None else min(size, self.size)
        self._expire(now)
        self.seen[sid] = now
        claimed = {i for i in held if 0 <= i < self.size}
        for i in [i for i, h in self.holder.items() if h == sid and i not in claimed]:
            del self.holder[i]
        for i in claimed:
            if self.holder.get(i, sid) == sid:
                self.holder[i] = sid
        confirmed = sorted(i for i, h in self.holder.items() if h == sid)
        if want <= 0:
            self.waiting.pop(sid, None)
            return [], confirmed
        self.waiting[sid] = (self.waiting.get(sid, (now, size))[0], size)
        granted: list[int] = []
        for i in range(size):
            if len(granted) >= want:
                break
            if i in self.holder:
                continue
            fits = [s for s, (_, n) in self.waiting.items() if i < n]  # waiters that can use executor i
            first = min(fits, key=lambda s: (self._count(s), self.waiting[s][0], s))
            if first != sid:
                break  # the next free executor is another search's turn
            self.holder[i] = sid
            granted.append(i)
        if len(granted) >= want:
            self.waiting.pop(sid, None)
        return granted, sorted(set(confirmed) | set(granted))

    def release(self, sid: str, executors: list[int]) -> None:
        for i in executors:
            if self.holder.get(i) == sid:
                del self.holder[i]
        self.waiting.pop(sid, None)  # it gives back: it is not waiting (it asks again when it is)

    def end(self, sid: str) -> None:
        self.release(sid, [i for i, h in self.holder.items() if h == sid])
        self.waiting.pop(sid, None)
        self.seen.pop(sid, None)

    def holders(self) -> list[str]:
        return sorted(set(self.holder.values()))


class RestartBook:
    """Which search restarted which shared actor (the pool's Researcher, Evaluator or Distiller) for
    its own stall, and when: a call of another search that failed then is sent again without
    counting against that search's attempts. Soft state, like the leases: a restarted scheduler
    forgets, and such a failure then counts as any death of the actor does."""

    KEEP_S = 3600.0

    def __init__(self):
        self.restarts: list[tuple[float, str, str]] = []  # (when, actor, search)

    def note(self, actor: str, sid: str, now: float) -> None:
        self.restarts = [r for r in self.restarts if now - r[0] <= self.KEEP_S][-255:] + [(now, actor, sid)]

    def by_other(self, actor: str, sid: str, since: float) -> str | None:
        """The search (not ``sid``) that restarted ``actor`` at ``since`` or later, if any."""
        return next((s for t, a, s in reversed(self.restarts) if a == actor and s != sid and t >= since), None)


class SchedulerShell:
    def __init__(self, size: int):
        _whole("pool size", size, 1, MAX_POOL)
        self.book = LeaseBook(size)
        self.restarts = RestartBook()
        self._lock = threading.Lock()

    def request(self, sid: str, held: list[int], want: int, size: int | None = None) -> dict:
        check_call(sid, held, want, size)
        with self._lock:
            got, held_now = self.book.request(sid, list(held), want, time.time(), size)
            return {"granted": got, "held": held_now, "holders": [h for h in self.book.holders() if h != sid]}

    def release(self, sid: str, executors: list[int]) -> None:
        check_call(sid, executors)
        with self._lock:
            self.book.release(sid, list(executors))

    def end(self, sid: str) -> None:
        check_call(sid)
        with self._lock:
            self.book.end(sid)

    def note_restart(self, actor: str, sid: str) -> None:
        """``sid`` is about to restart the shared ``actor`` for its stall (:class:`RestartBook`)."""
        check_call(sid)
        if not isinstance(actor, str) or not 0 < len(actor) <= 100:
            raise SchedulerCallError(f"invalid actor name {str(actor)[:80]!r}")
        with self._lock:
            self.restarts.note(actor, sid, time.time())

    def restarted_by(self, actor: str, sid: str, since: float) -> str | None:
        """The other search that restarted ``actor`` since ``since`` (a call of ``sid`` sent then failed)."""
        check_call(sid)
        if isinstance(since, bool) or not isinstance(since, (int, float)) or since != since:
            raise SchedulerCallError(f"invalid time {since!r}")
        with self._lock:
            return self.restarts.by_other(actor, sid, float(since))

    def state(self) -> dict:
        with self._lock:
            return {"size": self.book.size, "holder": dict(self.book.holder),
                    "waiting": {k: v[0] for k, v in self.book.waiting.items()}}

    def pid(self) -> int:
        import os

        return os.getpid()


def scheduler_for(size: int, prefix: str = "trex"):
    """The cluster's scheduler for the named pool (created, detached, if missing)."""
    import ray

    from trex.actors.runtime import NAMESPACE

    cls = ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0, max_concurrency=8)(SchedulerShell)
    return cls.options(name=f"{prefix}-scheduler", namespace=NAMESPACE, lifetime="detached",
                       get_if_exists=True).remote(size)
