"""The Ray actors: thin shells over plain functions, holding only caches.

Every actor writes its own events to the search's log — through the home's log service
(:mod:`trex.actors.log_service`) when one runs, so it needs no access to the home's files for
that — and keeps no state that is not rebuilt from the log: a restarted actor
(``max_restarts=-1``) is as good as the one that died. Homes are passed per call, so one set
of detached actors (``trex-actors start``) serves any home on storage the cluster shares.

* :class:`ExecutorActor` — trains one node at a time in a worker process; remembers, by
  command id, what it is training and what it trained, so a restarted Conductor re-attaches
  to a trial in flight instead of training it again.
* :class:`ResearcherActor` — decision in, proposal out (any proposer; LLM clients cached).
* :class:`EvaluatorActor` — scores adapters (one evaluator per home and task, cached).
* :class:`DistillerActor` — writes insights from a search's evaluated nodes.
* :class:`ConductorActor` — runs :func:`trex.actors.conduct.conduct` for one search.
"""
from __future__ import annotations

import os
import socket
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

from trex.actors.log_service import holds_home, log_for, node_home


def _append(log, sid: str, events, correlation_id: str | None = None, event_id: str | None = None) -> None:
    from trex.events.envelope import NewEvent

    if events:
        ids = {"event_id": event_id} if event_id is not None and len(events) == 1 else {}
        log.append(sid, [NewEvent(e, correlation_id=correlation_id, **ids) for e in events])


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _log(home, log=None):
    from trex.events.log import EventLog

    return log if log is not None else EventLog(home)


# ------------------------------------------------------------------------------ plain functions
def train_node(home, sid: str, task: str, node_id: str, plan: dict, parent_adapter: str | None, *, attempt: int,
               command_id: str, threads: int | None, time_limit_s: float | None, worker: str,
               executor_options: dict | None = None, log=None) -> dict[str, Any]:
    from trex.events.trials import TrialStarted
    from trex.train import Executor

    log = _log(home, log)

    def emit(ev):
        if isinstance(ev, TrialStarted):
            ev = ev.model_copy(update={"worker": worker})
        log.append(sid, [ev])

    out = Executor(home, emit=emit, search_id=sid, threads=threads, time_limit_s=time_limit_s, log=log,
                   **(executor_options or {})).run(plan, task=task, node_id=node_id, parent_adapter=parent_adapter,
                                                   attempt=attempt, command_id=command_id)
    return {"node_id": node_id, "command_id": command_id, "ok": out.status in ("finished", "reused"),
            "status": out.status, "adapter": out.adapter, "reason": out.reason}


def propose_for(home, sid: str, decision: dict, clients: dict, indexes: dict | None = None, log=None,
                trees: dict | None = None) -> dict[str, Any]:
    """Answer ``decision`` (``clients``/``indexes``/``trees``: the calling actor's LLM clients,
    insight indexes and search trees, kept between calls; all are rebuilt from the log when lost).

    A cached tree is brought up to date with the events after its last position, as the Conductor
    does: a proposal costs the events since the last one, not a read and fold of the whole search
    (which made a search's proposals quadratic in its length)."""
    from trex.events.plans import LlmCallFailed, LlmCallMade
    from trex.orchestrate.rules import proposal_context
    from trex.propose import make_client, propose
    from trex.search.insight_index import InsightIndex, refresh

    log = _log(home, log)
    tree = _tree_of(log, sid, trees)
    did = decision["decision_id"]
    indexes = {} if indexes is None else indexes

    def emit(ev, event_id: str | None = None):  # every call is tied to its decision (tokens: to its node)
        if isinstance(ev, (LlmCallMade, LlmCallFailed)):
            ev = ev.model_copy(update={"decision_id": did, "node_id": decision.get("node_id")})
        _append(log, sid, [ev], correlation_id=did, event_id=event_id)

    client, context = None, {}
    if tree.uses_llm:  # only the agent reads the LLM, the base score and earlier searches
        key = tree.started.llm.model_dump_json()
        if key not in clients:
            clients[key] = make_client(tree.started.llm, home, None)
        client = clients[key]
        client.emit = emit
        index = indexes[str(home)] = refresh(indexes.get(str(home), InsightIndex()), log)
        context = proposal_context(tree, index)
    from trex.search.policy import Decision

    d = Decision(decision.get("node_id"), decision["operator"], tree.policy, tree.seed, int(decision.get("index", 0)),
                 did, (), "")
    prop = propose(tree, d, home=home, search_id=sid, emit=emit, client=client, **context)
    return {"plan": prop.plan.model_dump(mode="json") if prop.plan is not None else None,
            "rationale": prop.rationale, "rejection": prop.rejection, "raw": str(prop.raw)[:4000],
            "hypothesis": prop.hypothesis.as_dict() if prop.hypothesis is not None else None}


def _tree_of(log, sid: str, trees: dict | None):
    """``sid``'s tree now: the cached one folded on with what came after it, or built afresh."""
    from trex.search import build_tree, fold

    if trees is None:
        return build_tree(log, sid)
    key = (str(log.home), sid)
    tree = trees.get(key)
    tree = build_tree(log, sid) if tree is None else fold(log.read(sid, after_seq=tree.last_seq), start=tree)
    trees.pop(key, None)
    trees[key] = tree  # the most recently used last
    while len(trees) > 64:  # the searches this actor answers now, not every search it ever saw
        trees.pop(next(iter(trees)))
    return tree


def distill_search(home, sid: str, log=None) -> int:
    from trex.insights import distill
    from trex.search import build_tree

    log = _log(home, log)
    events = distill(build_tree(log, sid))
    _append(log, sid, events)
    return len(events)


COMMAND_LOCK_WAIT_S = float(os.environ.get("TREX_COMMAND_LOCK_TIMEOUT", "600"))


def command_lock_wait_s(time_limit_s: float | None) -> float:
    """How long a duplicate dispatch waits for the one training the command: the trial's time limit
    and a margin (its data work, storing the adapter), at least ``TREX_COMMAND_LOCK_TIMEOUT`` (600 s)."""
    if time_limit_s is None or not time_limit_s > 0:
        return COMMAND_LOCK_WAIT_S
    return max(COMMAND_LOCK_WAIT_S, float(time_limit_s) + 300.0)


def _command_lock(home, command_id: str, time_limit_s: float | None = None):
    """The command's lock under ``<home>/locks``, held for a ``with`` block: the wait is bounded
    (:func:`command_lock_wait_s`), said in one line on stderr while it lasts, and a wait that runs out
    raises ``LockTimeout`` (a ``filelock.Timeout`` too) naming the lock and the command."""
    import hashlib

    from trex.actors.runtime import home_lock
    from trex.events.fsio import waited_lock

    lock = home_lock(home, f"cmd-{hashlib.sha256(command_id.encode()).hexdigest()[:16]}")
    return waited_lock(lock, command_lock_wait_s(time_limit_s),
                       f"command {command_id}, being trained by another executor; "
                       "TREX_COMMAND_LOCK_TIMEOUT sets the least wait")


# ---------------------------------------------------------------------------------- the shells
class _Shell:
    """What every actor answers about itself: its process and its Ray node."""

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        return _node_id()


class ExecutorShell(_Shell):
    """One trial at a time (the pool has one actor per slot); other methods answer meanwhile."""

    def __init__(self, index: int = 0, threads: int | None = None, time_limit_s: float | None = None,
                 executor_options: dict | None = None):
        self.index = index
        self.threads = threads
        self.time_limit_s = time_limit_s
        self.options = dict(executor_options or {})
        self.worker = f"{socket.gethostname()}/executor-{index}"
        self._running: dict[str, Future] = {}
        self._done: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self._slot = threading.Lock()  # the actor trains one plan at a time
        self._logs: dict = {}

    def train(self, home, sid, task, node_id, plan, parent_adapter, attempt, command_id, time_limit_s=None):
        with self._lock:
            if command_id in self._done:
                return self._done[command_id]
            fut = self._running.get(command_id)
            mine = fut is None
            if mine:
                fut = self._running[command_id] = Future()
        if not mine:  # the same command again (a restarted Conductor): wait for the first one
            return fut.result()
        try:
            # one command trains in one place: a duplicate dispatch (a Conductor restarted between
            # dispatching and the actor starting the call) waits here, then is served from the
            # Executor's cache of identical work (TrialReused), never trained twice
            here = node_home(home)
            limit = time_limit_s or self.time_limit_s
            with self._slot, _command_lock(here, command_id, limit):
                out = train_node(here, sid, task, node_id, plan, parent_adapter, attempt=attempt,
                                 command_id=command_id, threads=self.threads,
                                 time_limit_s=limit, worker=self.worker,
                                 executor_options=self.options, log=log_for(home, self._logs))
        except BaseException as e:
            fut.set_exception(e)
            with self._lock:
                self._running.pop(command_id, None)
            raise
        fut.set_result(out)
        with self._lock:
            self._running.pop(command_id, None)
            self._done[command_id] = out
            while len(self._done) > 256:
                self._done.popitem(last=False)
        return out

    def where(self, home) -> dict:
        """Where this executor works for ``home``: its node, whether it sees the home, and the
        node-local folder it uses instead (with how many files it holds)."""
        from pathlib import Path

        here = node_home(home)
        local = here != Path(home)
        return {"node": _node_id(), "sees_home": holds_home(home), "folder": str(here),
                "task_data": local and (here / "tasks").is_dir(), "models_built": local and (here / "models").exists(),
                "downloads": local and (here / "cache" / "artifacts").is_dir()}

    def inflight(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def wait(self, command_id: str):
        """The outcome of ``command_id`` (waiting while it runs); None if this actor never had it."""
        with self._lock:
            if command_id in self._done:
                return self._done[command_id]
            fut = self._running.get(command_id)
        return None if fut is None else fut.result()


class ResearcherShell(_Shell):
    def __init__(self):
        self._clients: dict = {}
        self._insights: dict = {}
        self._logs: dict = {}
        self._trees: dict = {}
        self._lock = threading.Lock()

    def propose(self, home, sid, decision: dict) -> dict:
        with self._lock:  # one local LLM: one proposal at a time
            return propose_for(node_home(home), sid, decision, self._clients, self._insights,
                               log=log_for(home, self._logs), trees=self._trees)


class EvaluatorShell(_Shell):
    def __init__(self, eval_limit: int | None = None):
        self._evaluators: dict = {}
        self._logs: dict = {}
        self._lock = threading.Lock()

    def evaluate(self, home, sid, task, node_id, adapter, limit=None) -> bool:
        from trex.conductor import evaluate_node
        from trex.events.evaluation import EvaluationFailed

        return self._with_evaluator(
            home, sid, task,
            lambda e: EvaluationFailed(node_id=node_id, reason=type(e).__name__, message=str(e)[:2000]),
            lambda ev, emit, here: evaluate_node(ev, here, task, node_id, adapter, limit=limit, emit=emit))

    def evaluate_heldout(self, home, sid, task, node_id, adapter, rank, anytime=()) -> bool:
        from trex.conductor import heldout_node
        from trex.events.evaluation import HeldOutFailed

        return self._with_evaluator(
            home, sid, task,
            lambda e: HeldOutFailed(node_id=node_id, rank=rank, reason=type(e).__name__, message=str(e)[:2000]),
            lambda ev, emit, here: heldout_node(ev, here, task, node_id, adapter, rank, tuple(anytime), emit=emit))

    def _with_evaluator(self, home, sid, task, failed, work) -> bool:
        """Run ``work(evaluator, emit, node_home)`` on this actor's evaluator for (home, task), built
        once; an evaluator that cannot be built (model missing, bad task) is the event ``failed(error)``."""
        from trex.conductor import make_evaluator

        log = log_for(home, self._logs)
        home = node_home(home)

        def emit(ev):
            _append(log, sid, [ev])

        with self._lock:
            key = (str(home), task)
            ev = self._evaluators.get(key)
            if ev is None:
                try:
                    ev = self._evaluators[key] = make_evaluator(home, task, emit)
                except Exception as e:  # noqa: BLE001 - no evaluator: an event, never a crash
                    emit(failed(e))
                    return False
            ev.emit = emit
            return work(ev, emit, home)


class DistillerShell(_Shell):
    def __init__(self):
        self._logs: dict = {}

    def distill(self, home, sid) -> int:
        return distill_search(home, sid, log=log_for(home, self._logs))


class ConductorShell(_Shell):
    """Stateless: the pool comes with the call, so a restarted Conductor re-runs it as it was."""

    def run(self, home, sid, pool: dict, options: dict | None = None) -> dict:
        from trex.actors.conduct import Pool, conduct

        return conduct(home, sid, Pool(**pool), **(options or {}))


# calls each actor runs at once; more wait in its queue (the Conductor's stall clock starts when a
# call gets a slot, not when it was sent: see trex.actors.conduct)
CONCURRENCY = {"researcher": 2, "evaluator": 2, "distiller": 1}


def remote_classes():
    """The Ray actor classes (created lazily: importing this module does not import Ray)."""
    import ray

    restart = {"max_restarts": -1, "max_task_retries": 0}
    return {
        "executor": ray.remote(**restart, max_concurrency=4)(ExecutorShell),
        "researcher": ray.remote(**restart, num_cpus=0, max_concurrency=CONCURRENCY["researcher"])(ResearcherShell),
        "evaluator": ray.remote(**restart, num_cpus=0, max_concurrency=CONCURRENCY["evaluator"])(EvaluatorShell),
        "distiller": ray.remote(**restart, num_cpus=0)(DistillerShell),
        # a restarted Conductor re-runs the call it was in (max_task_retries): the log says where it was
        "conductor": ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0, max_concurrency=2)(ConductorShell),
    }
