"""The Conductor's loop over the actors: keep K executors busy until the budget is spent.

Decisions and proposals are recorded by the Conductor alone (it holds the search's run lock),
trials and evaluations by the actors that do them. Proposals are made ahead — up to one per
executor waits, ready, while the executors train — so a freed executor takes its next plan
at once; everything in flight is bounded and waited on with ``ray.wait``.

Crash safety comes from the log. When the Conductor starts (first run, a restart after
SIGKILL, or ``trex resume`` after the driver died) it folds the log and asks every executor
what it is training: a trial still in flight is re-attached by its command id (never trained
twice), a trial whose executor is gone is recorded ``TrialAbandoned`` and retried at most once
under the same command id, proposed nodes are trained, trained nodes are evaluated and open
decisions are proposed again (the proposers are deterministic given the decision).
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trex.conductor import BASE_NODE, MAX_REJECTIONS_IN_A_ROW, ConcurrentRun, _started_at, metric_nodes, open_trials
from trex.events.envelope import NewEvent
from trex.events.evaluation import EvaluationFailed
from trex.events.log import EventLog
from trex.events.plans import PlanProposed, PlanRejected
from trex.events.search import SearchFinished, SearchResumed
from trex.events.trials import TrialAbandoned

MAX_PROPOSAL_RETRIES = 3  # a Researcher that dies on the same decision this often: the decision is rejected


@dataclass
class Pool:
    researcher: Any
    executors: list
    evaluator: Any
    distiller: Any = None

    def as_dict(self) -> dict:
        return {"researcher": self.researcher, "executors": list(self.executors), "evaluator": self.evaluator,
                "distiller": self.distiller}


@dataclass
class _State:
    ready: deque = field(default_factory=deque)  # node ids proposed, waiting for an executor
    props: dict = field(default_factory=dict)  # ref -> decision dict
    trains: dict = field(default_factory=dict)  # ref -> (node id, executor index)
    evals: dict = field(default_factory=dict)  # ref -> (node id, adapter, attempt)
    distill: Any = None
    idle: list = field(default_factory=list)
    dispatched: dict = field(default_factory=dict)  # node id -> its trials count when dispatched
    prop_failures: dict = field(default_factory=dict)
    start_failures: dict = field(default_factory=dict)  # node id -> executor failures before TrialStarted
    rejections_in_a_row: int = 0
    evaluated: int = 0
    next_n: int = 1  # the next node id is f"n{next_n}"


def run_lock(home, sid: str):
    """Held by the one Conductor of a search while it runs (released by the OS if it dies)."""
    from filelock import Timeout

    from trex.actors.runtime import home_lock

    lock = home_lock(home, f"run-{sid}")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConcurrentRun(f"search {sid!r} is being run by another conductor") from None
    return lock


def conduct(home, sid: str, pool: Pool, *, distill_every: int = 3, poll_s: float = 0.5) -> dict:
    """Run (or continue) search ``sid`` with the actors in ``pool``. Returns the tree's summary."""
    import ray

    from trex.search import build_tree, fold

    home = Path(home)
    log = EventLog(home)
    lock = run_lock(home, sid)
    try:
        tree = build_tree(log, sid)
        if tree.status == "new":
            raise ValueError(f"no search {sid!r} in {home}")
        if tree.status == "finished":
            return tree.summary()
        cfg = dict(tree.config)
        eval_limit = cfg.get("eval_limit")
        time_limit = cfg.get("trial_time_limit_s")
        st = _State(idle=list(range(len(pool.executors))))
        st.next_n = 1 + max((int(n[1:]) for n in tree.order if n[:1] == "n" and n[1:].isdigit()), default=0)
        started_at = _started_at(log, sid)

        def emit(*events, **kw):
            log.append(sid, [NewEvent(e, **kw) for e in events])
            refresh()

        def refresh():
            nonlocal tree
            tree = fold(log.read(sid, after_seq=tree.last_seq), start=tree)
            return tree

        def dispatch_eval(nid, adapter, attempt=1):
            ref = pool.evaluator.evaluate.remote(str(home), sid, tree.task, nid, adapter, eval_limit)
            st.evals[ref] = (nid, adapter, attempt)

        def dispatch_proposal(decision: dict):
            ref = pool.researcher.propose.remote(str(home), sid, decision)
            st.props[ref] = decision

        # ------------------------------------------------------------------ recovery
        # decisions recorded but never answered: asked again below (SearchResumed closes them in the fold)
        reopen = [rec for rec in tree.decisions if rec.decision_id in tree.open_decisions]
        if any(e.type not in ("SearchStarted", "SearchForked") for e in log.read(sid, until_seq=3)):
            emit(SearchResumed(reason="conductor started on a search with history"))
        inflight: dict[str, int] = {}
        for i, ex in enumerate(pool.executors):
            for cmd in ray.get(ex.inflight.remote()):
                inflight[cmd] = i
        if BASE_NODE not in metric_nodes(log, sid):
            dispatch_eval(BASE_NODE, None)
        for nid in list(tree.order):
            node = tree.nodes[nid]
            cmd = f"{sid}:{nid}"
            if cmd in inflight:  # still training on a live executor: re-attach, never start it again
                i = inflight[cmd]
                st.trains[pool.executors[i].wait.remote(cmd)] = (nid, i)
                if i in st.idle:
                    st.idle.remove(i)
                st.dispatched[nid] = node.trials
            elif node.status == "running":
                for trial_id in open_trials(log, sid, nid):
                    emit(TrialAbandoned(node_id=nid, trial_id=trial_id, reason="its executor is gone"))
                if tree.nodes[nid].trials < 2:
                    st.ready.append(nid)
            elif node.status == "abandoned" and node.trials < 2 or node.status == "proposed":
                st.ready.append(nid)
            elif node.status == "trained":
                dispatch_eval(nid, node.adapter)
        for rec in reopen:
            dispatch_proposal({"decision_id": rec.decision_id, "node_id": rec.node_id,
                               "operator": rec.operator, "index": 0})

        # ------------------------------------------------------------------ the loop
        while True:
            refresh()
            for nid in [n for n, k in st.dispatched.items() if tree.nodes[n].trials > k]:
                del st.dispatched[nid]
            max_trials = tree.budget.get("max_trials")
            max_seconds = tree.budget.get("max_seconds")
            # trials started or reused, plus those dispatched, waiting or being proposed
            committed = tree.trials + tree.trials_reused + len(st.dispatched) + len(st.ready) + len(st.props)
            time_up = max_seconds is not None and time.time() - started_at >= float(max_seconds)
            out_of_trials = max_trials is not None and committed >= int(max_trials)
            other = _other_budget(tree)
            stuck = st.rejections_in_a_row >= MAX_REJECTIONS_IN_A_ROW
            can_propose = not (time_up or out_of_trials or other or stuck)

            # propose ahead: at most one waiting plan per executor
            while can_propose and len(st.ready) + len(st.props) < len(pool.executors):
                from trex.search import select

                busy = [tree.nodes[n].parent_id for n in st.ready] + [tree.nodes[n].parent_id
                                                                       for n, _ in st.trains.values()
                                                                       if n in tree.nodes]
                d = select(tree, busy=busy)
                emit(d.to_event(), event_id=f"{sid}:{d.decision_id}")
                dispatch_proposal({"decision_id": d.decision_id, "node_id": d.node_id, "operator": d.operator,
                                   "index": d.index})
                committed += 1
                if max_trials is not None and committed >= int(max_trials):
                    break

            # train: an idle executor takes the next ready plan
            while st.idle and st.ready:
                nid = st.ready.popleft()
                node = tree.nodes[nid]
                if node.status not in ("proposed", "abandoned", "running"):
                    continue
                parent = tree.nodes.get(node.parent_id) if node.parent_id else None
                i = st.idle.pop(0)
                ref = pool.executors[i].train.remote(str(home), sid, tree.task, nid, dict(node.plan),
                                                     parent.adapter if parent else None, node.trials + 1,
                                                     f"{sid}:{nid}", time_limit)
                st.trains[ref] = (nid, i)
                st.dispatched[nid] = node.trials

            refs = list(st.props) + list(st.trains) + list(st.evals) + ([st.distill] if st.distill else [])
            if not refs:
                if st.ready and not st.idle:  # cannot happen: every executor is idle when nothing runs
                    raise RuntimeError("ready plans but no idle executor")
                if st.ready:
                    continue
                break  # nothing running, nothing to propose: finished
            done, _ = ray.wait(refs, num_returns=1, timeout=poll_s)
            for ref in done:
                if ref in st.props:
                    _on_proposal(ref, st, tree, emit, dispatch_proposal, sid)
                elif ref in st.trains:
                    _on_trained(ref, st, log, sid, emit, dispatch_eval, refresh)
                elif ref in st.evals:
                    nid, adapter, attempt = st.evals.pop(ref)
                    try:
                        ray.get(ref)
                        if nid != BASE_NODE:
                            st.evaluated += 1
                            if pool.distiller is not None and st.distill is None and st.evaluated % distill_every == 0:
                                st.distill = pool.distiller.distill.remote(str(home), sid)
                    except Exception as e:  # noqa: BLE001 - the Evaluator died or raised: once more, then an event
                        if attempt < 2:
                            dispatch_eval(nid, adapter, attempt + 1)
                        else:
                            emit(EvaluationFailed(node_id=nid, reason=type(e).__name__, message=str(e)[:2000]))
                elif ref == st.distill:
                    st.distill = None
                    try:
                        ray.get(ref)
                    except Exception:  # noqa: BLE001 - insights are advisory; the next round retries
                        pass

        # ------------------------------------------------------------------ the end
        if pool.distiller is not None:
            try:
                ray.get(pool.distiller.distill.remote(str(home), sid))
            except Exception:  # noqa: BLE001
                pass
        refresh()
        if tree.status != "finished":
            from trex.search import budget_check

            exhausted = budget_check(tree, time.time() - started_at)
            used = tree.trials + tree.trials_reused  # a reused result takes a trial's place in the budget
            if exhausted is None and max_trials is not None and used >= int(max_trials):
                from trex.events.search import BudgetExhausted

                exhausted = BudgetExhausted(kind="trials", limit=float(max_trials), used=float(used))
            best = tree.best
            reason = (f"budget exhausted: {exhausted.kind}" if exhausted is not None else
                      f"the proposer produced {MAX_REJECTIONS_IN_A_ROW} invalid plans in a row"
                      if st.rejections_in_a_row >= MAX_REJECTIONS_IN_A_ROW else "nothing left to run")
            evs = ([exhausted] if exhausted is not None else []) + [SearchFinished(
                reason=reason, best_node_id=best.node_id if best else None, best_score=best.score if best else None)]
            emit(*evs)
        return tree.summary()
    finally:
        lock.release()


def _other_budget(tree) -> bool:
    from trex.search import budget_check

    ex = budget_check(tree, None)
    return ex is not None and ex.kind != "trials"


def _on_proposal(ref, st: _State, tree, emit, dispatch_proposal, sid: str) -> None:
    import ray

    from trex.plan import parse_plan, plan_hash

    decision = st.props.pop(ref)
    did = decision["decision_id"]
    try:
        prop = ray.get(ref)
    except ray.exceptions.RayActorError as e:  # the Researcher died: ask its successor, a few times
        st.prop_failures[did] = st.prop_failures.get(did, 0) + 1
        if st.prop_failures[did] < MAX_PROPOSAL_RETRIES:
            dispatch_proposal(decision)
            return
        prop = {"plan": None, "rejection": f"the researcher died {MAX_PROPOSAL_RETRIES} times: {e}"[:2000],
                "raw": "", "rationale": ""}
    except Exception as e:  # noqa: BLE001 - a proposer that raised: a rejection, never a crash
        prop = {"plan": None, "rejection": f"{type(e).__name__}: {e}"[:2000], "raw": "", "rationale": ""}
    if prop["plan"] is None:
        emit(PlanRejected(parent_id=decision.get("node_id"), proposer=tree.proposer, reason=prop["rejection"] or "",
                          raw=prop.get("raw") or "", decision_id=did), correlation_id=did)
        st.rejections_in_a_row += 1
        return
    plan = parse_plan(prop["plan"])
    st.rejections_in_a_row = 0
    nid = f"n{st.next_n}"
    st.next_n += 1
    emit(PlanProposed(node_id=nid, parent_id=decision.get("node_id"), operator=decision["operator"],
                      plan=prop["plan"], plan_hash=plan_hash(plan), rationale=prop.get("rationale") or "",
                      proposer=tree.proposer, decision_id=did, insights=tuple(tree.insights)),
         event_id=f"{sid}:proposed:{did}", correlation_id=did)
    st.ready.append(nid)


def _on_trained(ref, st: _State, log, sid: str, emit, dispatch_eval, refresh_tree) -> None:
    import ray

    nid, i = st.trains.pop(ref)
    if i not in st.idle and not any(j == i for _, j in st.trains.values()):
        st.idle.append(i)
    st.dispatched.pop(nid, None)
    try:
        out = ray.get(ref)
    except ray.exceptions.RayActorError:  # the executor died mid-trial (it is restarted by Ray)
        out = None
    except Exception as e:  # noqa: BLE001 - a shell that raised: its trial is closed as abandoned
        out = {"ok": False, "error": repr(e)}
    if out is not None and out.get("ok"):
        dispatch_eval(nid, out.get("adapter"))
        return
    if out is not None and "error" not in out:
        return  # a failed trial: TrialFailed is in the log
    for trial_id in open_trials(log, sid, nid):
        emit(TrialAbandoned(node_id=nid, trial_id=trial_id, reason="its executor died"))
    node = refresh_tree().nodes.get(nid)
    if node is None:
        return
    if node.status == "trained":  # it died after recording its result: evaluate that
        dispatch_eval(nid, node.adapter)
    elif node.status == "abandoned" and node.trials < 2:
        st.ready.appendleft(nid)  # retried once, under the same command id
    elif node.status == "proposed":  # it failed before the trial started: once more, then refused
        st.start_failures[nid] = st.start_failures.get(nid, 0) + 1
        if st.start_failures[nid] < 2:
            st.ready.appendleft(nid)
        else:
            why = (out or {}).get("error") or "its executor died"
            emit(PlanRejected(node_id=nid, parent_id=node.parent_id, proposer=node.proposer,
                              reason=f"the executor failed twice before the trial started: {why}"[:2000],
                              decision_id=node.decision_id))


def spawn_pool(executors: int = 1, *, threads: int | None = None, executor_options: dict | None = None,
               time_limit_s: float | None = None, named: bool = False, prefix: str = "trex",
               gpus: float = 0) -> Pool:
    """Create (or, with ``named``, get or create detached) actors for a pool."""
    from trex.actors.shells import remote_classes

    rc = remote_classes()
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, executors))

    def make(kind: str, name: str, *args, **opts):
        cls = rc[kind]
        if named:
            opts.update(name=f"{prefix}-{name}", lifetime="detached", get_if_exists=True)
        return cls.options(**opts).remote(*args) if opts else cls.remote(*args)

    return Pool(
        researcher=make("researcher", "researcher"),
        # an executor reserves its CPUs, and its GPU(s): Ray sets CUDA_VISIBLE_DEVICES, so K executors
        # on a K-GPU node train on K different GPUs
        executors=[make("executor", f"executor-{i}", i, threads, time_limit_s, executor_options, num_cpus=threads,
                        **({"num_gpus": gpus} if gpus else {}))
                   for i in range(executors)],
        evaluator=make("evaluator", "evaluator"),
        distiller=make("distiller", "distiller"),
    )
