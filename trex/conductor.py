"""The search loop as plain functions: fold → budget → select → propose → train → evaluate.

This is the Conductor's domain, run in one process (``trex demo``, tests, and the
sequential fallback). Everything it decides is appended to the log before it acts,
so a crashed run is continued by :func:`run_search` on the same search id: nodes
proposed but never trained are trained, a trial left open is recorded abandoned
and retried once, trained nodes without a score are evaluated. Nothing is trained
twice for one node (and identical work is served from the Executor's cache).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from trex.events.envelope import NewEvent
from trex.events.evaluation import EvaluationFailed
from trex.events.log import ConcurrencyConflict, EventLog
from trex.events.plans import HypothesisStated, PlanProposed, PlanRejected
from trex.events.search import DEFAULT_TRIAL_STEPS, Budget, SearchResumed, SearchStarted
from trex.events.trials import TrialAbandoned

from trex.orchestrate.rules import BASE_NODE, MAX_REJECTIONS_IN_A_ROW, ConcurrentRun  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class SearchConfig:
    task: str = "arith-sub"
    proposer: str = "random"
    policy: str = "mcts"
    seed: int = 0
    budget: Budget = field(default_factory=lambda: Budget(max_trials=4))
    trial_steps: int = DEFAULT_TRIAL_STEPS
    batch_size: int = 32
    eval_limit: int | None = None
    trial_time_limit_s: float = 600.0
    threads: int | None = None
    parallel: int = 1
    llm: dict | None = None  # LlmSettings fields: {"url", "model"} | {"model_dir"} | None = the embedded SmolLM2
    extra: dict = field(default_factory=dict)  # more SearchStarted fields (metric_direction, task_def, labels, …)


def start_search(log: EventLog, cfg: SearchConfig, search_id: str | None = None) -> str:
    """Record the ``SearchStarted`` of a new search (every setting validated here, typed) and return its id."""
    from trex.events.envelope import new_id
    from trex.events.search import LlmSettings, TrialSettings, task_def_hash

    sid = search_id or f"{cfg.task}-{new_id()[:8]}"
    extra = dict(cfg.extra)
    if extra.get("task_def") is not None:
        extra["task_def_hash"] = task_def_hash(extra["task_def"])
    if "constraints" not in extra:
        extra["constraints"] = _constraints_of(cfg.task, log.home)
    log.append(sid, [SearchStarted(
        task=cfg.task, base_model=_base_model_of(cfg.task, log.home), proposer=cfg.proposer, policy=cfg.policy,
        seed=cfg.seed, budget=cfg.budget, parallel=cfg.parallel,
        trial=TrialSettings(steps=cfg.trial_steps, batch_size=cfg.batch_size, eval_limit=cfg.eval_limit,
                            time_limit_s=cfg.trial_time_limit_s, threads=cfg.threads),
        llm=LlmSettings(**(cfg.llm or {})), **extra,
    )], expected_version=0)
    return sid


def _base_model_of(task: str, home) -> str:
    """The task's base model as a name ("builder:arith-base", or its folder), for auditors; "" if unknown."""
    from trex.tasks import get_task

    try:
        t = get_task(task, home)
    except Exception:  # noqa: BLE001 - the task is checked where it is run; the start only records it
        return ""
    return f"builder:{t.base_model}" if t.base_model else (t.base_model_path or "")


def _constraints_of(task: str, home) -> tuple:
    """The task's constraints, recorded with the search (the fold judges nodes by them, forks included)."""
    from trex.events.search import Constraint
    from trex.tasks import get_task

    try:
        t = get_task(task, home)
    except Exception:  # noqa: BLE001 - as above: the task is checked where it is run
        return ()
    return tuple(Constraint(metric=m.name, at_least=m.at_least, at_most=m.at_most) for m in t.constraints)


def _started_at(log: EventLog, sid: str) -> float:
    first = log.read(sid, until_seq=1)[0]
    return datetime.fromisoformat(first.recorded_at.replace("Z", "+00:00")).timestamp()


class Runner:
    """Holds the heavy collaborators (executor, evaluator) for one search run."""

    def __init__(self, home, search_id: str, on_event: Callable[[Any], None] | None = None):
        from trex.search import build_tree

        self.home = Path(home)
        self.log = EventLog(home)
        self.sid = search_id
        self.on_event = on_event
        tree = build_tree(self.log, search_id)
        if tree.status == "new":
            raise ValueError(f"no search {search_id!r} in {home}")
        self.task = tree.task
        self.eval_limit = tree.started.trial.eval_limit
        self.time_limit = tree.started.trial.time_limit_s
        self.threads = tree.started.trial.threads
        self._executor = None
        self._evaluator = None
        self._client = None
        self.proposer = tree.proposer
        self._tree = tree
        self._insights = None  # the home's insight index, folded on before each llm proposal

    # ----------------------------------------------------------- plumbing
    def emit(self, ev, **kw) -> None:
        self.log.append(self.sid, [NewEvent(ev, **kw)] if kw else [ev])
        if self.on_event is not None:
            self.on_event(ev)

    def tree(self):
        """The search's tree, folded incrementally: only events after the last one folded are read."""
        from trex.search import fold

        self._tree = fold(self.log.read(self.sid, after_seq=self._tree.last_seq), start=self._tree)
        return self._tree

    @property
    def executor(self):
        if self._executor is None:
            from trex.train import Executor

            self._executor = Executor(self.home, emit=self.emit, search_id=self.sid, time_limit_s=self.time_limit,
                                      threads=self.threads, log=self.log)
        return self._executor

    @property
    def evaluator(self):
        if self._evaluator is None:
            self._evaluator = make_evaluator(self.home, self.task, self.emit)
        return self._evaluator

    # --------------------------------------------------------------- steps
    def evaluate(self, node_id: str, adapter: str | None) -> None:
        evaluate_node(self.evaluator, self.home, self.task, node_id, adapter, limit=self.eval_limit, emit=self.emit)

    def train(self, node_id: str, plan: dict, parent_adapter: str | None, attempt: int = 1) -> None:
        outcome = self.executor.run(plan, task=self.task, node_id=node_id, parent_adapter=parent_adapter,
                                    attempt=attempt, command_id=f"{self.sid}:{node_id}")
        if outcome.ok:
            self.evaluate(node_id, outcome.adapter)

    def score_heldout(self, tree) -> int:
        """Before the search finishes: the node chosen on validation, and the next ``heldout_k``, on
        the task's held-out test split, once each. Returns how many were scored now."""
        from trex.orchestrate.rules import heldout_todo

        todo = heldout_todo(tree, tree.started.heldout_k) if task_has_test(self.task, self.home) else []
        for node_id, rank, anytime in todo:
            self.evaluate_heldout(node_id, tree.nodes[node_id].adapter, rank, anytime)
        return len(todo)

    def evaluate_heldout(self, node_id: str, adapter: str | None, rank: int, anytime: tuple[int, ...] = ()) -> None:
        heldout_node(self.evaluator, self.home, self.task, node_id, adapter, rank, anytime, emit=self.emit)

    def recover(self) -> int:
        """Finish what a crashed run left open (:func:`trex.orchestrate.recovery.recovery_plan`),
        recording ``SearchResumed`` first when the search has a history. Returns how many actions it took."""
        from trex.orchestrate.recovery import (Abandon, Evaluate, EvaluateBase, Repropose, Train, needs_resume,
                                               recovery_plan)

        tree = self.tree()
        actions = recovery_plan(tree)  # before SearchResumed, which closes the open decisions in the fold
        if needs_resume(tree):
            self.emit(SearchResumed(reason="run_search continued an existing search"))
        for act in actions:
            tree = self.tree()  # a parent recovered earlier in this pass may have a new adapter
            if isinstance(act, EvaluateBase):
                self.evaluate(BASE_NODE, None)
            elif isinstance(act, Abandon):
                for trial_id in act.trial_ids:
                    self.emit(TrialAbandoned(node_id=act.node_id, trial_id=trial_id,
                                             reason="the run that trained it stopped"))
            elif isinstance(act, Train):
                node = tree.nodes[act.node_id]
                parent = tree.nodes.get(node.parent_id) if node.parent_id else None
                self.train(act.node_id, dict(node.plan), parent.adapter if parent else None, attempt=act.attempt)
            elif isinstance(act, Evaluate):
                self.evaluate(act.node_id, act.adapter)
            elif isinstance(act, Repropose):
                from trex.search.policy import Decision

                rec = act.decision
                self._answer(tree, Decision(rec.node_id, rec.operator, tree.policy, tree.seed, 0,
                                            rec.decision_id, (), ""))
        return len(actions)

    def step(self, started_at: float) -> bool:
        """One expansion. Returns False when the search is finished."""
        from trex.orchestrate.rules import decision_event_id, finish_events, stop_reason
        from trex.search import select

        tree = self.tree()
        if tree.status == "finished":
            return False
        elapsed = time.time() - started_at
        if stop_reason(tree, elapsed) is not None:
            self.distill()
            self.score_heldout(self.tree())
            for ev in finish_events(self.tree(), elapsed):
                self.emit(ev)
            return False
        decision = select(tree)
        try:  # the expected version makes a second runner on the same search fail here, before any work
            self.log.append(self.sid, [NewEvent(decision.to_event(),
                                                event_id=decision_event_id(self.sid, decision.decision_id))],
                            expected_version=tree.last_seq)
        except ConcurrencyConflict as e:
            raise ConcurrentRun(f"search {self.sid!r} is being run by another process ({e})") from None
        self._answer(self.tree(), decision)
        self.distill()
        return True

    def distill(self) -> int:
        """The Distiller's pass, as the Ray driver's DistillerShell runs it: hypotheses tested, insights
        brought up to date. Returns how many events it recorded."""
        from trex.insights import distill

        events = distill(self.tree())
        for ev in events:
            self.emit(ev)
        return len(events)

    def _answer(self, tree, decision) -> None:
        """Propose for ``decision`` (the Researcher's entry point), record the plan, train it."""
        from trex.orchestrate.rules import hypothesis_event_id, next_node_id, proposal_event_id, repeated_plan
        from trex.plan import plan_hash
        from trex.propose import propose

        prop = propose(tree, decision, home=self.home, search_id=self.sid, client=self.client,
                       emit=lambda ev, **kw: self.emit(ev, correlation_id=decision.decision_id, **kw),
                       **self._context(tree))
        if prop.plan is None:
            self.emit(PlanRejected(parent_id=decision.node_id, proposer=tree.proposer, reason=prop.rejection or "",
                                   raw=str(prop.raw)[:4000], decision_id=decision.decision_id))
            return
        same = repeated_plan(tree, plan_hash(prop.plan), decision.node_id, bool(prop.plan.continue_from_parent))
        if same is not None:
            self.emit(PlanRejected(parent_id=decision.node_id, proposer=tree.proposer,
                                   reason=f"repeats the plan of {same}", raw=str(prop.raw)[:4000],
                                   decision_id=decision.decision_id))
            return
        node_id = next_node_id(tree)
        self.emit(PlanProposed(node_id=node_id, parent_id=decision.node_id, operator=decision.operator,
                               plan=prop.plan.model_dump(mode="json"), plan_hash=plan_hash(prop.plan),
                               rationale=prop.rationale, proposer=tree.proposer, decision_id=decision.decision_id,
                               insights=tuple(tree.insights)),
                  event_id=proposal_event_id(self.sid, decision.decision_id))
        if prop.hypothesis is not None:
            self.emit(HypothesisStated(node_id=node_id, **prop.hypothesis.as_dict()),
                      event_id=hypothesis_event_id(self.sid, decision.decision_id))
        parent = tree.nodes.get(decision.node_id) if decision.node_id else None
        self.train(node_id, prop.plan.model_dump(mode="json"), parent.adapter if parent else None)

    def _context(self, tree) -> dict:
        """The base score and earlier searches' insights, as the Ray Researcher gives them."""
        if not tree.uses_llm:
            return {}
        from trex.orchestrate.rules import proposal_context
        from trex.search.insight_index import InsightIndex, refresh

        self._insights = refresh(self._insights or InsightIndex(), self.log)
        return proposal_context(tree, self._insights)

    @property
    def client(self):
        """The LLM client for the ``llm`` proposer (built once; None for the others)."""
        if self._client is None and self._tree.uses_llm:
            from trex.propose import make_client

            self._client = make_client(self._tree.started.llm, self.home, self.emit)
        return self._client


def make_evaluator(home, task: str, emit):
    """The CPU evaluator for ``task``'s base model (transformers, adapters swapped in place)."""
    from trex.tasks import get_task, prepare_task
    from trex.evaluate.backends import TransformersEvalBackend
    from trex.evaluate.evaluator import Evaluator

    assets = prepare_task(get_task(task, home), home)
    return Evaluator(TransformersEvalBackend(assets.base_model_dir), home=home, emit=emit, cache=True)


def evaluate_node(evaluator, home, task: str, node_id: str, adapter: str | None, *, limit: int | None,
                  emit) -> bool:
    """Score ``adapter`` (None: the base model) on every split of ``task``; True when it worked.
    A failure is an ``EvaluationFailed`` event, never an exception."""
    from trex.artifacts import ArtifactStore
    from trex.evaluate.evaluator import EvaluationError, evaluate_task

    try:
        adapter_dir = ArtifactStore(home).get(adapter) if adapter else None
        evaluate_task(evaluator, task, adapter_dir, node_id=node_id, home=home, limit=limit)
        return True
    except EvaluationError:
        return False  # recorded as EvaluationFailed by the evaluator
    except Exception as e:  # noqa: BLE001 - a failed evaluation is an event, never the end of the search
        emit(EvaluationFailed(node_id=node_id, reason=type(e).__name__, message=str(e)[:2000]))
        return False


def task_has_test(task: str, home) -> bool:
    """Whether ``task``'s primary metric has a held-out test split."""
    from trex.tasks import get_task

    try:
        return get_task(task, home).has_test
    except KeyError:
        return False


def heldout_node(evaluator, home, task: str, node_id: str, adapter: str | None, rank: int,
                 anytime: tuple[int, ...] = (), *, emit) -> bool:
    """Score a node on the task's held-out test splits (``HeldOutScored``); True when it worked. A
    failure is a ``HeldOutFailed`` event, never an exception, and the node is not tried again."""
    from trex.artifacts import ArtifactStore
    from trex.evaluate.evaluator import EvaluationError, evaluate_heldout
    from trex.events.evaluation import HeldOutFailed

    try:
        adapter_dir = ArtifactStore(home).get(adapter) if adapter else None
        evaluate_heldout(evaluator, task, adapter_dir, node_id=node_id, rank=rank, anytime=tuple(anytime), home=home)
        return True
    except EvaluationError:
        return False  # recorded as HeldOutFailed by the evaluator
    except Exception as e:  # noqa: BLE001 - a failed held-out evaluation is an event
        emit(HeldOutFailed(node_id=node_id, rank=rank, reason=type(e).__name__, message=str(e)[:2000]))
        return False


def run_lock(home, sid: str):
    """Held by the one driver of a search while it runs, in-process or on Ray (released by the OS if
    its process dies); a second driver fails at once with :class:`ConcurrentRun`."""
    import hashlib

    from filelock import Timeout

    from trex.events.fsio import HomeLock, ensure_dir

    # <home>/locks/run-<hash>.lock, as trex.actors.runtime.home_lock names them: a search id is not a path
    lock = HomeLock(ensure_dir(Path(home), "locks") / f"run-{hashlib.sha256(sid.encode()).hexdigest()[:16]}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConcurrentRun(f"search {sid!r} is being run by another conductor") from None
    return lock


def run_search(home, search_id: str, on_event: Callable[[Any], None] | None = None):
    """Run (or continue) a search until its budget is spent. Returns the final tree."""
    runner = Runner(home, search_id, on_event)
    lock = run_lock(home, search_id)
    try:
        runner.recover()
        started = _started_at(runner.log, search_id)
        while runner.step(started):
            pass
        return runner.tree()
    finally:
        lock.release()


def base_score(log: EventLog, search_id: str) -> float | None:
    """The base model's primary score (a fold field)."""
    from trex.search import build_tree

    return build_tree(log, search_id).base_score
