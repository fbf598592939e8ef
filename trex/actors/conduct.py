"""The Conductor's loop over the actors: keep K executors busy until the budget is spent.

Decisions and proposals are recorded by the Conductor alone (it holds the search's run lock),
trials and evaluations by the actors that do them. Proposals are made ahead — up to one per
executor waits, ready, while the executors train — so a freed executor takes its next plan
at once; everything in flight is bounded and waited on with ``ray.wait``.

The rules are the in-process driver's (:mod:`trex.orchestrate`): the same recovery plan, node
ids, trial budget (a reused result takes a trial's place), retry limits and finish events.
Every counter those rules read — rejections in a row, a decision's proposal failures, a node's
dispatch failures — is a field of the fold, recorded as an event, so a restarted Conductor
continues where the dead one stopped. What lives only in memory here is what is in flight.
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trex.actors.log_service import RemoteLog, ensure_service
from trex.actors.shells import CONCURRENCY
from trex.conductor import _started_at, run_lock  # noqa: F401  (run_lock: both drivers hold it)
from trex.events.envelope import NewEvent
from trex.events.evaluation import EvaluationFailed
from trex.events.plans import HypothesisStated, PlanProposed, PlanRejected, ProposalFailed
from trex.events.search import SearchResumed
from trex.events.trials import (ExecutorLeased, ExecutorReleased, ExecutorsAwaited, TrialAbandoned,
                                TrialDispatchFailed, WorkResent, WorkStalled)
from trex.orchestrate import recovery as rec
from trex.orchestrate.rules import (
    BASE_NODE, MAX_DISPATCH_ATTEMPTS, MAX_PROPOSAL_ATTEMPTS, ConcurrentRun, blind_draft, blind_improve, command_id, decision_event_id,
    endgame_wait, last_round, late_blind_wait,
    finish_events, hypothesis_event_id, may_retry_dispatch, may_retry_evaluation, may_retry_proposal, may_retry_trial, next_node_id,
    proposal_event_id, repeated_plan, stop_reason, trials_used,
)


@dataclass
class Pool:
    researcher: Any
    executors: list
    evaluator: Any
    distiller: Any = None
    scheduler: Any = None  # a shared (named) pool's lease scheduler: trex.actors.scheduler

    def as_dict(self) -> dict:
        return {"researcher": self.researcher, "executors": list(self.executors), "evaluator": self.evaluator,
                "distiller": self.distiller, "scheduler": self.scheduler}


STALL_GRACE_S = 120.0  # a trial that has not come back this long after its own time limit is stalled
PROPOSE_STALL_S = 900.0  # a proposal (tools + a local LLM under load) that takes longer than this
EVALUATE_STALL_S = 900.0  # an evaluation that takes longer than this
LEASE_HEARTBEAT_S = 10.0  # a search holding or wanting nothing still tells the scheduler it is alive
OWN_RESTART_WINDOW_S = 60.0  # a call sent this soon after this search restarted its actor may meet the restart
MAX_FREE_RESENDS = 3  # a call failed by another search's restart of a shared actor, sent again uncounted
SHARED = ("researcher", "evaluator", "distiller")  # the actors of a shared pool that every search calls


class _GaveUp(Exception):
    """Work whose actor was restarted for a stall and that still did not come back: given up on, like an
    actor that died (the usual bounded retries, then a recorded failure)."""


@dataclass
class _InFlight:
    """What this Conductor has in hand; everything else is in the fold."""

    ready: deque = field(default_factory=deque)  # node ids proposed, waiting for an executor
    props: dict = field(default_factory=dict)  # ref -> decision dict
    trains: dict = field(default_factory=dict)  # ref -> (node id, executor index)
    evals: dict = field(default_factory=dict)  # ref -> (node id, adapter, attempt)
    distill: Any = None
    idle: list = field(default_factory=list)
    dispatched: dict = field(default_factory=dict)  # node id -> its trials count when dispatched
    evaluated: int = 0
    since: dict = field(default_factory=dict)  # ref -> when it was dispatched (train, proposal, evaluation)
    sent: dict = field(default_factory=dict)  # ref -> when it was sent (proposal, evaluation): never reset
    resent: dict = field(default_factory=dict)  # (kind, command) -> times sent again uncounted (WorkResent)
    stalled: dict = field(default_factory=dict)  # ref -> when its actor was restarted for a stall
    restarted: dict = field(default_factory=dict)  # actor name -> when this search last restarted it
    leased: set = field(default_factory=set)  # executors of a shared pool this search holds
    awaiting: bool = False  # ExecutorsAwaited recorded, no lease since
    asked_at: float = 0.0  # when the scheduler last heard from this search
    shared: bool = False  # the pool is shared: an executor is this search's only while leased


def conduct(home, sid: str, pool: Pool, *, distill_every: int = 3, poll_s: float = 0.5,
            lookahead: bool = True, stall_s: dict | None = None) -> dict:
    """Run (or continue) search ``sid`` with the actors in ``pool``. Returns the tree's summary.

    ``lookahead``: propose while executors train (one ready plan per executor). Without it a
    decision is made only when nothing is in flight, which is the in-process driver's order
    (one executor and no distiller then make the same tree as :func:`trex.conductor.run_search`).

    Stalls: work that does not come back within its bound (``stall_s``: ``{"train", "propose",
    "evaluate"}`` seconds; by default a trial's time limit plus :data:`STALL_GRACE_S`, and
    :data:`PROPOSE_STALL_S` / :data:`EVALUATE_STALL_S`) is recorded as ``WorkStalled`` and its actor
    restarted; the work then fails as if the actor had died (retried within the usual bounds, then a
    recorded failure), and work that still does not answer one more bound later is given up on."""
    import ray

    from trex.search import build_tree, fold

    home = Path(home)
    # the Conductor runs on the node that holds the home: its log service is started there
    log = RemoteLog(ensure_service(home), home)
    lock = run_lock(home, sid)
    try:
        tree = build_tree(log, sid)
        if tree.status == "new":
            raise ValueError(f"no search {sid!r} in {home}")
        if tree.status == "finished":
            return tree.summary()
        if not pool.executors:
            raise ValueError("a pool needs at least one executor")
        _publish_task(tree.task, home)
        eval_limit = tree.started.trial.eval_limit
        time_limit = tree.started.trial.time_limit_s
        sched = pool.scheduler
        if sched is None:  # a private pool: every executor is this search's
            st = _InFlight(idle=list(range(len(pool.executors))))
        else:  # a shared pool: only what the scheduler leased (a restarted Conductor: its log says what)
            from trex.orchestrate.leases import leases_of

            held = leases_of(log.read(sid))
            st = _InFlight(idle=sorted(i for i in held.held if i < len(pool.executors)), awaiting=held.waiting,
                           shared=True)
            st.leased = set(st.idle)
        started_at = _started_at(log, sid)
        limits = {"train": time_limit + STALL_GRACE_S, "propose": PROPOSE_STALL_S, "evaluate": EVALUATE_STALL_S,
                  **(stall_s or {})}

        def emit(*events, **kw):
            nonlocal tree
            stored = log.append(sid, [NewEvent(e, **kw) for e in events])
            if stored and len(stored) == len(events) and stored[0].seq == tree.last_seq + 1:
                tree = fold(stored, start=tree)  # nothing came in between: fold what was stored, no read
                return tree
            return refresh()

        def refresh():
            nonlocal tree
            tree = fold(log.read(sid, after_seq=tree.last_seq), start=tree)
            return tree

        def dispatch_eval(nid, adapter, attempt=1):
            ref = pool.evaluator.evaluate.remote(str(home), sid, tree.task, nid, adapter, eval_limit)
            st.evals[ref] = (nid, adapter, attempt)
            st.since[ref] = st.sent[ref] = time.time()

        def dispatch_proposal(decision: dict):
            ref = pool.researcher.propose.remote(str(home), sid, decision)
            st.props[ref] = decision
            st.since[ref] = st.sent[ref] = time.time()

        def lease(want: int) -> None:
            """Ask the scheduler for ``want`` more executors (0: only say what this search holds).
            What it no longer confirms (leased to another search after a scheduler restart or an
            expiry) is dropped here, never dispatched to. A scheduler that does not answer is
            asked again on the next round; nothing is dispatched meanwhile."""
            st.asked_at = time.time()
            try:
                out = ray.get(sched.request.remote(sid, sorted(st.leased), want, len(pool.executors)), timeout=60)
            except Exception:  # noqa: BLE001 - restarting or slow: no grant this round
                return
            busy = {i for _, i in st.trains.values()}
            for i in sorted(st.leased - set(out["held"]) - busy):
                st.leased.discard(i)
                if i in st.idle:
                    st.idle.remove(i)
                emit(ExecutorReleased(executor=i, reason="lost: the scheduler gave it to another search"))
            for i in out["granted"]:
                st.leased.add(i)
                if i not in st.idle:
                    st.idle.append(i)
                emit(ExecutorLeased(executor=i, actor=f"executor-{i}"))
                st.awaiting = False
            if want and not out["granted"] and not st.awaiting and not st.leased:
                emit(ExecutorsAwaited(wanted=want, holders=tuple(out["holders"])))
                st.awaiting = True

        def release_idle(reason: str) -> None:
            gone = list(st.idle)
            for i in gone:
                emit(ExecutorReleased(executor=i, reason=reason))
                st.idle.remove(i)
                st.leased.discard(i)
            if gone:
                try:
                    ray.get(sched.release.remote(sid, gone), timeout=60)
                except Exception:  # noqa: BLE001 - its lease lapses with this search's next call or its TTL
                    pass

        def watch_stalls() -> list:
            """Record and break stalls; returns the refs given up on (handled as failed below).

            A call's clock runs from when it can run: calls queued behind an actor's slots
            (:data:`trex.actors.shells.CONCURRENCY`) restart their clock until they reach one, so
            evaluations waiting behind others are never taken for stalled ones."""
            now, gave_up = time.time(), []
            work = ([("train", r, f"executor-{i}", pool.executors[i], command_id(sid, n), n)
                     for r, (n, i) in st.trains.items()]
                    + [("propose", r, "researcher", pool.researcher, d["decision_id"], d.get("node_id"))
                       for r, d in st.props.items()]
                    + [("evaluate", r, "evaluator", pool.evaluator, n, n) for r, (n, _, _) in st.evals.items()])
            for name in ("researcher", "evaluator"):
                mine = sorted((w for w in work if w[2] == name and w[1] not in st.stalled),
                              key=lambda w: st.since.get(w[1], now))
                for w in mine[CONCURRENCY[name]:]:  # still queued on this Conductor's side of the actor
                    st.since[w[1]] = now
            for kind, ref, name, actor, cmd, nid in work:
                limit = limits[kind]
                if ref in st.stalled:
                    if now - st.stalled[ref] > limit:
                        gave_up.append(ref)
                    continue
                waited = now - st.since.get(ref, now)
                if waited <= limit:
                    continue
                emit(WorkStalled(kind=kind, command=cmd, node_id=nid, actor=name, waited_s=round(waited, 3),
                                 limit_s=limit))
                st.stalled[ref] = st.restarted[name] = now
                _restart(actor, name, sched, sid)  # Ray restarts it; the call fails as the actor's death
            return gave_up

        def resend_free(kind: str, cmd: str, nid, err: BaseException, since: float, was_stalled: bool = False) -> bool:
            """A call of this search that failed with a restart it does not owe: another search
            restarted the shared actor for its own stall, or this search restarted it for another
            call's stall (counted then) while this call was in flight there, or just before this call
            was sent (it met the actor still restarting). Recorded (``WorkResent``) and sent again, once the actor answers,
            without counting against this search's attempts, at most :data:`MAX_FREE_RESENDS` times."""
            name = "researcher" if kind == "propose" else "evaluator"
            if not isinstance(err, ray.exceptions.RayActorError) or st.resent.get((kind, cmd), 0) >= MAX_FREE_RESENDS:
                return False
            own = st.restarted.get(name)
            if own is not None and not was_stalled and since - own <= OWN_RESTART_WINDOW_S:
                by = sid  # sent just after this search's restart, or in flight when it killed the actor
            elif sched is None:
                return False
            else:
                try:  # a restart noted a moment before the call was sent still failed it
                    by = ray.get(sched.restarted_by.remote(name, sid, since - 5.0), timeout=10)
                except Exception:  # noqa: BLE001 - the scheduler cannot tell: the failure counts
                    return False
                if not by:
                    return False
            st.resent[(kind, cmd)] = st.resent.get((kind, cmd), 0) + 1
            emit(WorkResent(kind=kind, command=cmd, node_id=nid, actor=name, restarted_by=by))
            _until_alive(pool.researcher if kind == "propose" else pool.evaluator, min(limits[kind], 30.0))
            return True

        # ------------------------------------------------------------------ recovery
        inflight: dict[str, int] = {}
        for i, ex in enumerate(pool.executors):
            for cmd in ray.get(ex.inflight.remote()):
                inflight[cmd] = i
        plan = rec.recovery_plan(tree, inflight)  # before SearchResumed, which closes open decisions
        if rec.needs_resume(tree):
            emit(SearchResumed(reason="conductor started on a search with history"))
        for act in plan:
            if isinstance(act, rec.EvaluateBase):
                dispatch_eval(BASE_NODE, None)
            elif isinstance(act, rec.Reattach):  # still training on a live executor: never started again
                i = inflight[command_id(sid, act.node_id)]
                wref = pool.executors[i].wait.remote(command_id(sid, act.node_id))
                st.trains[wref] = (act.node_id, i)
                st.since[wref] = time.time()
                if i in st.idle:
                    st.idle.remove(i)  # its trial started already: tree.trials counts it
            elif isinstance(act, rec.Abandon):
                for trial_id in act.trial_ids:
                    emit(TrialAbandoned(node_id=act.node_id, trial_id=trial_id, reason="its executor is gone"))
            elif isinstance(act, rec.Train):
                st.ready.append(act.node_id)
            elif isinstance(act, rec.Evaluate):
                dispatch_eval(act.node_id, act.adapter)
            elif isinstance(act, rec.Repropose):
                d = act.decision
                dispatch_proposal({"decision_id": d.decision_id, "node_id": d.node_id, "operator": d.operator,
                                   "index": 0})

        if sched is not None and st.leased:  # a restarted Conductor: the scheduler confirms what the log says
            lease(0)

        # ------------------------------------------------------------------ the loop
        while True:
            refresh()
            for nid in [n for n, k in st.dispatched.items() if tree.nodes[n].trials > k]:
                del st.dispatched[nid]
            # trials used, plus those dispatched, waiting or being proposed
            committed = trials_used(tree) + len(st.dispatched) + len(st.ready) + len(st.props)
            elapsed = time.time() - started_at
            busy_now = bool(st.props or st.trains or st.evals or st.ready)
            want = len(pool.executors) if lookahead else (0 if busy_now else 1)
            if st.shared and lookahead:  # one ready plan per executor it holds, and one to ask for another:
                want = min(want, len(st.leased) + 1)  # not one per executor of a pool other searches share

            # propose ahead: at most one waiting plan per executor (none while busy without lookahead)
            while len(st.ready) + len(st.props) < want and stop_reason(tree, elapsed, committed) is None:
                from trex.search import select

                busy = ([tree.nodes[n].parent_id for n in st.ready]
                        + [tree.nodes[n].parent_id for n, _ in st.trains.values() if n in tree.nodes]
                        + [d.get("node_id") for d in st.props.values()])  # a parent being proposed for too
                # made ahead: every executor this search holds has a plan (ready or being proposed), and a
                # shared pool has no executor left to ask for
                ahead = len(st.idle) <= len(st.ready) + len(st.props) and not (
                    st.shared and len(st.leased) < len(pool.executors))
                # results still coming: plans being proposed, waiting for an executor, training or scored
                in_flight = len(st.props) + len(st.ready) + len(st.trains) + len(st.evals)
                if lookahead and endgame_wait(tree, committed, len(st.trains) + len(st.evals)):
                    break  # the budget's last decisions wait for the results in flight
                d = select(tree, busy=busy, virtual_loss=st.shared or not last_round(tree, committed,
                                                                                  len(pool.executors)))
                scoring = [tree.nodes[n].parent_id for n, *_ in st.evals.values() if n in tree.nodes]
                if (blind_draft(tree, d) or blind_improve(d, busy + scoring)) and (
                        (ahead and st.trains)
                        or (not st.shared and late_blind_wait(tree, committed, in_flight, len(st.evals),
                                                                   len(pool.executors)))):
                    break  # wait for the results in flight rather than draft, or edit a parent again, blind
                emit(d.to_event(), event_id=decision_event_id(sid, d.decision_id))
                dispatch_proposal({"decision_id": d.decision_id, "node_id": d.node_id, "operator": d.operator,
                                   "index": d.index})
                committed += 1

            if sched is not None:  # a shared pool: lease for the ready plans, give back what idles
                need = len(st.ready) - len(st.idle)
                if need > 0:
                    lease(need)
                elif st.idle and not st.ready:
                    release_idle("idle")
                elif time.time() - st.asked_at > LEASE_HEARTBEAT_S:
                    lease(0)

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
                                                     command_id(sid, nid), time_limit)
                st.trains[ref] = (nid, i)
                st.since[ref] = time.time()
                st.dispatched[nid] = node.trials

            refs = list(st.props) + list(st.trains) + list(st.evals) + ([st.distill] if st.distill else [])
            if not refs:
                if st.ready:
                    if sched is not None and not st.idle:
                        time.sleep(poll_s)  # waiting for another search to give an executor back
                    continue
                refresh()
                if stop_reason(tree, time.time() - started_at, trials_used(tree)) is None:
                    continue  # nothing in flight and the budget not spent: decide again at the top
                break  # nothing running, nothing left to decide: finished
            done, _ = ray.wait(refs, num_returns=1, timeout=poll_s)
            gave_up = set(watch_stalls())
            for ref in list(done) + [r for r in gave_up if r not in done]:
                stuck = ref in gave_up and ref not in done
                st.since.pop(ref, None)
                was_stalled = st.stalled.pop(ref, None) is not None  # the call the restart was for: it counts
                sent = st.sent.pop(ref, time.time())
                if ref in st.props:
                    _on_proposal(ref, st, tree, emit, dispatch_proposal, sid, stuck,
                                 lambda e, d: resend_free("propose", d["decision_id"], d.get("node_id"), e, sent,
                                                          was_stalled))
                elif ref in st.trains:
                    _on_trained(ref, st, tree, sid, emit, dispatch_eval, stuck)
                elif ref in st.evals:
                    nid, adapter, attempt = st.evals.pop(ref)
                    try:
                        _result(ref, stuck)
                        if nid != BASE_NODE:
                            st.evaluated += 1
                            if pool.distiller is not None and st.distill is None and st.evaluated % distill_every == 0:
                                st.distill = pool.distiller.distill.remote(str(home), sid)
                    except Exception as e:  # noqa: BLE001 - the Evaluator died or raised: once more, then an event
                        if not stuck and resend_free("evaluate", nid, nid, e, sent, was_stalled):
                            dispatch_eval(nid, adapter, attempt)
                        elif may_retry_evaluation(attempt):
                            dispatch_eval(nid, adapter, attempt + 1)
                        else:
                            emit(EvaluationFailed(node_id=nid, reason=type(e).__name__, message=str(e)[:2000]))
                elif ref == st.distill:
                    st.distill = None
                    try:
                        ray.get(ref)
                    except Exception:  # noqa: BLE001 - insights are advisory; the next round retries
                        pass

        # ------------------------------------------------------------------ the end (every wait bounded)
        if sched is not None:
            release_idle("search ended")
            try:
                ray.get(sched.end.remote(sid), timeout=60)
            except Exception:  # noqa: BLE001 - what it held lapses with its TTL
                pass
        if pool.distiller is not None:
            _bounded_get(pool.distiller.distill.remote(str(home), sid), "distill", "distiller", pool.distiller,
                         limits["propose"], sid, emit, sched=sched, restarted=st.restarted)
        refresh()
        if tree.status != "finished":
            _score_heldout(pool, home, sid, tree, emit, limits["evaluate"], resend_free, st.restarted)
            emit(*finish_events(refresh(), time.time() - started_at))
        return tree.summary()
    finally:
        lock.release()


def _publish_task(task: str, home: Path) -> None:
    """A user's task published for executors and evaluators on nodes without the home (a no-op for a
    built-in task or a store on the home's disk). One that cannot be published is said, not fatal:
    the trials of a node that cannot find the task then fail as such, recorded."""
    import sys

    from trex.tasks import get_task
    from trex.tasks.published import publish_task

    try:
        publish_task(get_task(task, home), home)
    except Exception as e:  # noqa: BLE001 - the search goes on; where the task is missing it is recorded
        print(f"trex: task {task!r} was not published to the artifact store: {e}", file=sys.stderr)


def _restart(actor, name: str, sched, sid: str) -> None:
    """Restart ``actor`` for this search's stall. An actor every search of a shared pool calls is
    first noted with the pool's scheduler, so that the other searches whose calls fail with it send
    them again without counting the failure (``WorkResent``)."""
    import ray

    if sched is not None and name in SHARED:
        try:
            ray.get(sched.note_restart.remote(name, sid), timeout=10)
        except Exception:  # noqa: BLE001 - not noted: the other searches count the failure, as before
            pass
    try:
        ray.kill(actor, no_restart=False)
    except Exception:  # noqa: BLE001 - an actor already gone: its calls fail on their own
        pass


def _until_alive(actor, limit: float) -> None:
    """Wait (at most ``limit`` seconds) until a restarted actor answers, so that work sent again meets
    its new process rather than the restart. An actor without ``pid`` or one that does not answer: the
    work is sent anyway and fails or succeeds on its own."""
    import ray

    try:
        ray.get(actor.pid.remote(), timeout=limit)
    except Exception:  # noqa: BLE001 - see above
        pass


def _bounded_get(ref, kind: str, name: str, actor, limit: float, sid: str, emit, node_id: str | None = None,
                 sched=None, restarted: dict | None = None):
    """``ray.get`` that waits at most ``limit`` seconds: past it the stall is recorded, the actor restarted
    and :class:`_GaveUp` raised (the end of a search never hangs on one call). Other failures raise as is."""
    import ray
    from ray.exceptions import GetTimeoutError

    t0 = time.time()
    try:
        return ray.get(ref, timeout=limit)
    except GetTimeoutError:
        emit(WorkStalled(kind=kind, command=f"{sid}:{kind}:{node_id or 'search'}", node_id=node_id, actor=name,
                         waited_s=round(time.time() - t0, 3), limit_s=limit))
        if restarted is not None:
            restarted[name] = time.time()
        _restart(actor, name, sched, sid)
        raise _GaveUp(f"no answer from the {name} after {limit:g}s") from None
    except Exception:  # noqa: BLE001 - the caller decides; distilling is advisory
        if kind == "distill":
            return None
        raise


def _score_heldout(pool: Pool, home: Path, sid: str, tree, emit, limit: float = EVALUATE_STALL_S,
                   resend_free=None, restarted: dict | None = None) -> None:
    """The chosen node and the next ``heldout_k`` on the held-out test split, once each (the rule and
    the recording are the in-process driver's: :func:`trex.orchestrate.rules.heldout_todo`). Each call
    waits at most ``limit`` seconds (then a recorded stall, the Evaluator restarted, one more try)."""
    import ray

    from trex.conductor import task_has_test
    from trex.events.evaluation import HeldOutFailed
    from trex.orchestrate.rules import heldout_todo

    if not task_has_test(tree.task, home):
        return
    for node_id, rank, anytime in heldout_todo(tree, tree.started.heldout_k):
        adapter, attempt = tree.nodes[node_id].adapter, 1
        while True:
            sent = time.time()
            try:
                _bounded_get(pool.evaluator.evaluate_heldout.remote(str(home), sid, tree.task, node_id, adapter, rank,
                                                                    anytime), "evaluate", "evaluator", pool.evaluator,
                             limit, sid, emit, node_id, sched=pool.scheduler, restarted=restarted)
                break
            except Exception as e:  # noqa: BLE001 - the Evaluator died or raised: once more, then an event
                if resend_free is not None and resend_free("evaluate", f"heldout:{node_id}", node_id, e, sent):
                    continue
                if not may_retry_evaluation(attempt):
                    emit(HeldOutFailed(node_id=node_id, rank=rank, reason=type(e).__name__, message=str(e)[:2000]))
                    break
                attempt += 1


def _result(ref, stuck: bool):
    """The call's result; for work given up on after a stall, :class:`_GaveUp`."""
    import ray

    if stuck:
        raise _GaveUp("no answer after its actor was restarted for a stall")
    return ray.get(ref)


def _on_proposal(ref, st: _InFlight, tree, emit, dispatch_proposal, sid: str, stuck: bool = False,
                 resend_free=None) -> None:
    import ray

    from trex.plan import parse_plan, plan_hash

    decision = st.props.pop(ref)
    did = decision["decision_id"]
    try:
        prop = _result(ref, stuck)
    except (ray.exceptions.RayActorError, _GaveUp) as e:  # the Researcher died: ask its successor, a few times
        if not stuck and resend_free is not None and resend_free(e, decision):  # another search's restart
            dispatch_proposal(decision)
            return
        tree = emit(ProposalFailed(decision_id=did, reason=f"the researcher died: {e}"[:2000]), correlation_id=did)
        if may_retry_proposal(tree, did):
            dispatch_proposal(decision)
            return
        prop = {"plan": None, "rejection": f"the researcher died {MAX_PROPOSAL_ATTEMPTS} times: {e}"[:2000],
                "raw": "", "rationale": ""}
    except Exception as e:  # noqa: BLE001 - a proposer that raised: a rejection, never a crash
        prop = {"plan": None, "rejection": f"{type(e).__name__}: {e}"[:2000], "raw": "", "rationale": ""}
    if prop["plan"] is None:
        emit(PlanRejected(parent_id=decision.get("node_id"), proposer=tree.proposer, reason=prop["rejection"] or "",
                          raw=prop.get("raw") or "", decision_id=did), correlation_id=did)
        return
    plan = parse_plan(prop["plan"])
    if isinstance(plan, str):  # a proposer's plan that does not parse: its rejection, never a crash
        emit(PlanRejected(parent_id=decision.get("node_id"), proposer=tree.proposer, reason=plan[:2000],
                          raw=str(prop["plan"])[:4000], decision_id=did), correlation_id=did)
        return
    same = repeated_plan(tree, plan_hash(plan), decision.get("node_id"), bool(plan.continue_from_parent))
    if same is not None:  # proposed at the same time as its twin: refused, and the next decision is made afresh
        emit(PlanRejected(parent_id=decision.get("node_id"), proposer=tree.proposer,
                          reason=f"repeats the plan of {same} (proposed while this one was in flight)",
                          raw=str(prop["plan"])[:4000], decision_id=did), correlation_id=did)
        return
    nid = next_node_id(tree)
    emit(PlanProposed(node_id=nid, parent_id=decision.get("node_id"), operator=decision["operator"],
                      plan=prop["plan"], plan_hash=plan_hash(plan), rationale=prop.get("rationale") or "",
                      proposer=tree.proposer, decision_id=did, insights=tuple(tree.insights)),
         event_id=proposal_event_id(sid, did), correlation_id=did)
    if prop.get("hypothesis"):
        emit(HypothesisStated(node_id=nid, **prop["hypothesis"]), event_id=hypothesis_event_id(sid, did),
             correlation_id=did)
    st.ready.append(nid)


def _on_trained(ref, st: _InFlight, tree, sid: str, emit, dispatch_eval, stuck: bool = False) -> None:
    import ray

    nid, i = st.trains.pop(ref)
    if i not in st.idle and not any(j == i for _, j in st.trains.values()) and (not st.shared or i in st.leased):
        st.idle.append(i)
    st.dispatched.pop(nid, None)
    try:
        out = _result(ref, stuck)
    except (ray.exceptions.RayActorError, _GaveUp):  # the executor died mid-trial (it is restarted by Ray)
        out = None
    except Exception as e:  # noqa: BLE001 - a shell that raised: its trial is closed as abandoned
        out = {"ok": False, "error": repr(e)}
    if out is not None and out.get("ok"):
        dispatch_eval(nid, out.get("adapter"))
        return
    if out is not None and "error" not in out:
        return  # a failed trial: TrialFailed is in the log
    node = tree.nodes.get(nid)
    for trial_id in (node.open_trials if node else ()):
        tree = emit(TrialAbandoned(node_id=nid, trial_id=trial_id, reason="its executor died"))
    node = tree.nodes.get(nid)
    if node is None:
        return
    if node.status == "trained":  # it died after recording its result: evaluate that
        dispatch_eval(nid, node.adapter)
    elif node.status == "abandoned" and may_retry_trial(node):
        st.ready.appendleft(nid)  # retried once, under the same command id
    elif node.status == "proposed":  # it failed before the trial started: once more, then refused
        why = (out or {}).get("error") or "its executor died"
        node = emit(TrialDispatchFailed(node_id=nid, reason=why[:2000])).nodes[nid]
        if may_retry_dispatch(node):
            st.ready.appendleft(nid)
        else:
            emit(PlanRejected(node_id=nid, parent_id=node.parent_id, proposer=node.proposer,
                              reason=f"the executor failed {MAX_DISPATCH_ATTEMPTS} times before the trial "
                                     f"started: {why}"[:2000], decision_id=node.decision_id))


def spawn_pool(executors: int = 1, *, threads: int | None = None, executor_options: dict | None = None,
               time_limit_s: float | None = None, named: bool = False, prefix: str = "trex",
               gpus: float = 0, resources: dict[str, float] | None = None) -> Pool:
    """Create (or, with ``named``, get or create detached) actors for a pool.

    ``resources``: custom Ray resources the executors and the Researcher require (e.g.
    ``{"worker": 0.01}`` to keep them on nodes started with ``--resources '{"worker": N}'``)."""
    from trex.actors.scheduler import scheduler_for
    from trex.actors.shells import remote_classes

    rc = remote_classes()
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, executors))

    def make(kind: str, name: str, *args, **opts):
        cls = rc[kind]
        if named:
            opts.update(name=f"{prefix}-{name}", lifetime="detached", get_if_exists=True)
        return cls.options(**opts).remote(*args) if opts else cls.remote(*args)

    placed = {"resources": dict(resources)} if resources else {}
    return Pool(
        researcher=make("researcher", "researcher", **placed),
        # an executor reserves its CPUs, and its GPU(s): Ray sets CUDA_VISIBLE_DEVICES, so K executors
        # on a K-GPU node train on K different GPUs
        executors=[make("executor", f"executor-{i}", i, threads, time_limit_s, executor_options, num_cpus=threads,
                        **({"num_gpus": gpus} if gpus else {}), **placed)
                   for i in range(executors)],
        evaluator=make("evaluator", "evaluator"),
        distiller=make("distiller", "distiller"),
        scheduler=scheduler_for(executors, prefix) if named else None,  # named executors are shared
    )
