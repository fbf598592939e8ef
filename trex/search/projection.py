"""The fold: events -> :class:`SearchTree`, one handler per event type.

``apply(tree, event)`` is pure: it never changes ``tree`` and returns a new one.
It copies the tree's top-level containers (O(size of tree)), so for many
events use ``fold(events, start=tree)``, which owns a private mutable
:class:`_Builder` for the whole run and freezes it once at the end: O(1)
amortised per event. Both run the same handlers (the ``HANDLERS`` dict).

Payloads are read from the stored JSON (after the upcasters), not through
pydantic: the log validated every payload on append, and building 100k pydantic
models would cost more than the whole fold. Events of types the tree does not
care about are counted and never decoded. A handler reads only its payload and
the builder: no clock, randomness or I/O.
"""
from __future__ import annotations

import gc
import json
from dataclasses import MISSING
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from trex.events.base import Event, InvalidPayload, SchemaTooNew, UnknownEventType, registered_types, upcast
from trex.events.envelope import Envelope
from trex.events.search import SearchStarted, violations
from trex.search.tree import DecisionRecord, HeldOut, HistoryPoint, Node, SearchTree, is_number

Item = Envelope | Event | dict


_NODE_DEFAULTS = {k: f.default for k, f in Node.__dataclass_fields__.items() if f.default is not MISSING}
_NODE_DEFAULTS["plan"] = {}
BASE_NODE = "base"  # metrics of the untouched base model are recorded under this node id


def _thaw_node(n: Node) -> dict[str, Any]:
    d = dict(n.__dict__)
    d["progress"] = list(n.progress)
    d["metrics"] = dict(n.metrics)
    d["open_trials"] = list(n.open_trials)
    d["outputs"] = list(n.outputs)
    return d


def _freeze_node(d: dict[str, Any]) -> Node:
    new = object.__new__(Node)
    nd = new.__dict__
    nd.update(d)
    nd["progress"] = tuple(d["progress"])
    nd["metrics"] = tuple(sorted(d["metrics"].items()))
    nd["open_trials"] = tuple(d["open_trials"])
    nd["outputs"] = tuple(d["outputs"])
    return new


class _Builder:
    """The mutable twin of SearchTree, private to one fold (never shared, never returned).

    Nodes the fold touches are copied once into plain dicts (``dirty``) and
    changed in place; :meth:`freeze` turns them back into frozen Nodes.
    """

    __slots__ = (
        "f", "nodes", "dirty", "children", "order", "decisions", "open_decisions", "insights", "notes",
        "history", "exhausted", "forks", "pending_tokens", "by_decision", "best_id", "seq", "sid",
    )

    def __init__(self, t: SearchTree):
        self.f: dict[str, Any] = {
            k: getattr(t, k) for k in SearchTree.__dataclass_fields__
            if k not in ("nodes", "children", "order", "decisions", "open_decisions", "insights", "notes",
                         "history", "exhausted", "forks", "pending_tokens", "best_node_id")
        }
        self.nodes: Mapping[str, Node] = t.nodes  # read-only; writes go to dirty
        self.dirty: dict[str, dict[str, Any]] = {}
        self.children: dict[str | None, Any] = dict(t.children)  # tuples until first append, then lists
        self.order = list(t.order)
        self.decisions = list(t.decisions)
        self.open_decisions = dict(t.open_decisions)
        self.insights = dict(t.insights)
        self.notes = list(t.notes)
        self.history = list(t.history)
        self.exhausted = list(t.exhausted)
        self.forks = list(t.forks)
        self.pending_tokens = dict(t.pending_tokens)
        self.by_decision = {n.decision_id: n.node_id for n in t.nodes.values() if n.decision_id}
        self.best_id = t.best_node_id
        self.seq = 0
        self.sid = ""

    def freeze(self) -> SearchTree:
        nodes = dict(self.nodes)
        for nid, d in self.dirty.items():
            nodes[nid] = _freeze_node(d)
        return SearchTree(
            **self.f,
            nodes=MappingProxyType(nodes),
            children=MappingProxyType({k: tuple(v) for k, v in self.children.items()}),
            order=tuple(self.order),
            decisions=tuple(self.decisions),
            open_decisions=MappingProxyType(dict(self.open_decisions)),
            insights=MappingProxyType(dict(self.insights)),
            notes=tuple(self.notes),
            history=tuple(self.history),
            exhausted=tuple(self.exhausted),
            forks=tuple(self.forks),
            pending_tokens=MappingProxyType(dict(self.pending_tokens)),
            best_node_id=self.best_id,
        )

    # ------------------------------------------------------------ helpers
    def has(self, nid: Any) -> bool:
        return nid in self.dirty or nid in self.nodes

    def r(self, nid: Any) -> Mapping[str, Any] | None:
        """A node's fields, for reading."""
        d = self.dirty.get(nid)
        if d is not None:
            return d
        n = self.nodes.get(nid) if isinstance(nid, str) else None
        return n.__dict__ if n is not None else None

    def w(self, nid: Any, count_missing: bool = True) -> dict[str, Any] | None:
        """A node's fields, for changing (copied out of the frozen node once per fold)."""
        d = self.dirty.get(nid)
        if d is None:
            n = self.nodes.get(nid) if isinstance(nid, str) else None
            if n is None:
                if count_missing:
                    self.f["ignored"] += 1
                return None
            d = self.dirty[nid] = _thaw_node(n)
        return d

    def touch(self, nid: Any) -> dict[str, Any] | None:
        """``w`` and mark the node as updated by the current event."""
        d = self.dirty.get(nid)  # the common case, inlined: the node was already touched in this fold
        if d is None:
            d = self.w(nid)
            if d is None:
                return None
        d["updated_seq"] = self.seq
        d["updated_in"] = self.sid
        return d

    def add_node(self, d: dict[str, Any]) -> None:
        nid = d["node_id"]
        self.dirty[nid] = d
        self.order.append(nid)
        kids = self.children.get(d["parent_id"])
        if kids is None:
            self.children[d["parent_id"]] = [nid]
        elif isinstance(kids, tuple):
            self.children[d["parent_id"]] = [*kids, nid]
        else:
            kids.append(nid)

    def better(self, a: float, b: float) -> bool:
        return a > b if self.f["metric_direction"] != "min" else a < b

    def judge(self, n: dict[str, Any]) -> None:
        """Set a scored node's ``infeasible`` from the search's constraints (None: it holds them all)."""
        cons = self.f["started"].constraints
        if not cons or not is_number(n["score"]):
            n["infeasible"] = None
            return
        n["infeasible"] = violations(cons, n["metrics"])

    def rescore(self, node_id: str) -> None:
        """Keep the best node current after ``node_id``'s score (or feasibility) changed: the best is the
        best-scoring *feasible* node."""
        if self.best_id == node_id:  # the best changed (got worse, lost its score or feasibility): look again
            self.best_id = None
            best_s = None
            for nid in self.order:
                r = self.r(nid)
                s = r["score"]
                if is_number(s) and r.get("infeasible") is None and (best_s is None or self.better(s, best_s)):
                    self.best_id, best_s = nid, s
            return
        n = self.r(node_id)
        if is_number(n["score"]) and n.get("infeasible") is None:
            best = self.r(self.best_id) if self.best_id else None
            if best is None or self.better(n["score"], best["score"]):
                self.best_id = node_id


def _f(x: Any, default: float = 0.0) -> float:
    """A stored float: JSON number, or the strings 'NaN'/'Infinity' pydantic writes for those."""
    if x is None:
        return default
    return float(x)


def _fn(x: Any) -> float | None:
    return None if x is None else float(x)


def _i(x: Any) -> int:
    return int(x or 0)


# ---------------------------------------------------------------- handlers
def _search_started(b: _Builder, d: dict) -> None:
    f = b.f
    f["search_id"] = b.sid
    f["task"] = d.get("task", "")
    f["base_model"] = d.get("base_model", "")
    f["proposer"] = d.get("proposer", "random")
    f["policy"] = d.get("policy", "mcts")
    f["seed"] = _i(d.get("seed"))
    f["parallel"] = _i(d.get("parallel")) or 1
    f["budget"] = MappingProxyType({k: v for k, v in (d.get("budget") or {}).items() if v is not None})
    started = SearchStarted.model_validate(d)
    f["started"] = started
    f["metric_direction"] = started.metric_direction
    f["status"] = "running"


def _search_forked(b: _Builder, d: dict) -> None:
    b.f["search_id"] = b.sid
    b.forks.append((b.sid, d["parent_search_id"], _i(d["at_seq"]), d.get("at_node")))
    if d.get("budget"):
        # the fork's own budget counts only the fork's usage: offset it by what the prefix used
        # (wall-clock is measured by the caller from the fork's own first event)
        used = {"max_trials": b.f["nodes_tried"] + b.f["trials_reused"], "max_compute_seconds": b.f["compute_seconds"],
                "max_tokens": b.f["tokens"]}
        b.f["budget"] = MappingProxyType(
            {k: v + used[k] if k in used else v for k, v in d["budget"].items() if v is not None})
    b.f["status"] = "running"
    b.f["finish_reason"] = None
    b.exhausted.clear()  # the parent's exhaustion does not bind the fork
    b.f["activity"] = 0  # the fork's own history starts here
    b.open_decisions.clear()  # the parent's in-flight decisions are not the fork's to fulfil
    b.f["heldout"] = MappingProxyType({})  # the fork reports its own choice


def _search_resumed(b: _Builder, d: dict) -> None:
    b.f["resumes"] += 1
    b.f["status"] = "running"
    b.f["finish_reason"] = None
    b.open_decisions.clear()  # decisions of the crashed run will never be fulfilled


def _search_finished(b: _Builder, d: dict) -> None:
    b.f["status"] = "finished"
    b.f["finish_reason"] = d.get("reason", "")


def _budget_exhausted(b: _Builder, d: dict) -> None:
    b.exhausted.append(d["kind"])


def _node_selected(b: _Builder, d: dict) -> None:
    dec = DecisionRecord(
        seq=b.seq, decision_id=d["decision_id"], node_id=d.get("node_id"), operator=d.get("operator", "draft"),
        policy=d.get("policy", ""), seed=_i(d.get("seed")),
        scores=tuple((str(k), _f(v)) for k, v in d.get("scores") or ()), reason=d.get("reason", ""),
    )
    b.decisions.append(dec)
    b.open_decisions[dec.decision_id] = dec.node_id


def _node_pruned(b: _Builder, d: dict) -> None:
    n = b.touch(d["node_id"])
    if n is not None:
        n["status"] = "pruned"


def _new_node(b: _Builder, nid: str, parent_id: str | None, **fields: Any) -> dict[str, Any]:
    parent = b.r(parent_id) if parent_id is not None else None
    n = dict(_NODE_DEFAULTS)
    n.update(node_id=nid, parent_id=parent_id, plan={}, progress=[], metrics={}, open_trials=[], outputs=[],
             created_seq=b.seq, origin=b.sid,
             updated_seq=b.seq, updated_in=b.sid, depth=(parent["depth"] + 1) if parent else 1)
    n.update(fields)
    if n["operator"] == "debug":
        n["debug_depth"] = (parent["debug_depth"] if parent else 0) + 1
    return n


def _plan_proposed(b: _Builder, d: dict) -> None:
    nid = d["node_id"]
    if b.has(nid):  # a duplicate proposal of an existing node: the first one stands
        b.f["ignored"] += 1
        return
    parent_id = d.get("parent_id")
    if parent_id is not None and not b.has(parent_id):  # a child of nothing: kept out, so no cycles
        b.f["ignored"] += 1
        return
    dec_id = d.get("decision_id")
    tokens = 0
    if dec_id:
        b.open_decisions.pop(dec_id, None)
        tokens = b.pending_tokens.pop(dec_id, 0)
        b.by_decision[dec_id] = nid
    b.add_node(_new_node(
        b, nid, parent_id, operator=d.get("operator", "draft"), plan=dict(d.get("plan") or {}),
        plan_hash=d.get("plan_hash", ""), rationale=d.get("rationale", ""), proposer=d.get("proposer", ""),
        decision_id=dec_id, insights=tuple(d.get("insights") or ()), tokens=tokens,
    ))


def _plan_rejected(b: _Builder, d: dict) -> None:
    parent_id = d.get("parent_id")
    dec = d.get("decision_id")
    nid = d.get("node_id")
    if dec:  # the decision it answers (proposals made ahead: several may be open on one target)
        b.open_decisions.pop(dec, None)
    elif not nid:  # older events: close the oldest open decision on the same target
        for dec_id, target in b.open_decisions.items():
            if target == parent_id:
                del b.open_decisions[dec_id]
                break
    # a plan that could not be tried (the proposer's, or one refused before its trial started)
    b.f["rejections_in_a_row"] += 1
    if not nid:
        b.f["rejected_plans"] += 1
        return
    reason = d.get("reason", "")
    n = b.touch(nid) if b.has(nid) else None
    if n is not None:
        n["status"], n["failure"] = "rejected", reason
        return
    if parent_id is not None and not b.has(parent_id):
        b.f["ignored"] += 1
        return
    b.add_node(_new_node(b, nid, parent_id, status="rejected", failure=reason, proposer=d.get("proposer", "")))


def _llm_call(b: _Builder, d: dict, corr: str | None, cause: str | None) -> None:
    tokens = _i(d.get("prompt_tokens")) + _i(d.get("completion_tokens"))
    b.f["tokens"] += tokens
    b.f["llm_calls"] += 1
    if not tokens:
        return
    for key in (corr, cause):
        if not key:
            continue
        nid = key if b.has(key) else b.by_decision.get(key)
        if nid is not None:
            n = b.w(nid)
            n["tokens"] += tokens
            return
        if key in b.open_decisions:  # the proposer's call, before its plan exists
            b.pending_tokens[key] = b.pending_tokens.get(key, 0) + tokens
            return


def _trial_started(b: _Builder, d: dict) -> None:
    b.f["trials"] += 1
    b.f["rejections_in_a_row"] = 0  # a plan ran
    n = b.touch(d["node_id"])
    if n is not None:
        if n["trials"] == 0:
            b.f["nodes_tried"] += 1  # what the trial budget counts: a retry after a crash is not a new trial
        n["status"] = "running"
        n["trials"] += 1
        n["open_trials"].append(d.get("trial_id", ""))


def _trial_progressed(b: _Builder, d: dict) -> None:
    n = b.touch(d["node_id"])
    if n is not None:
        n["progress"].append((_i(d.get("step")), _fn(d.get("loss"))))


def _close_trial(b: _Builder, d: dict, counter: str) -> dict | None:
    """Count a closed trial and charge its compute to the search and its node (returned)."""
    cs = _f(d.get("compute_seconds"))
    b.f[counter] += 1
    b.f["compute_seconds"] += cs
    n = b.touch(d["node_id"])
    if n is not None:
        n["compute_seconds"] += cs
        _close(n, d)
    return n


def _close(n: dict, d: dict) -> None:
    tid = d.get("trial_id")
    if tid in n["open_trials"]:
        n["open_trials"].remove(tid)


def _trial_finished(b: _Builder, d: dict) -> None:
    n = _close_trial(b, d, "trials_finished")
    if n is not None:
        n["status"], n["adapter"] = "trained", d.get("adapter")
        n["train_metrics"] = tuple(sorted((d.get("train_metrics") or {}).items()))


def _trial_failed(b: _Builder, d: dict) -> None:
    n = _close_trial(b, d, "trials_failed")
    if n is not None:
        n["status"], n["failure"] = "failed", d.get("reason")
        n["failure_message"], n["log_tail"] = d.get("message", ""), d.get("log_tail", "")


def _trial_abandoned(b: _Builder, d: dict) -> None:
    n = b.touch(d["node_id"])
    if n is not None:
        n["status"], n["failure"] = "abandoned", d.get("reason") or "abandoned"
        _close(n, d)


def _trial_dispatch_failed(b: _Builder, d: dict) -> None:
    n = b.touch(d["node_id"])
    if n is not None:
        n["dispatch_failures"] += 1


def _hypothesis_stated(b: _Builder, d: dict) -> None:
    n = b.touch(d["node_id"])
    if n is not None:
        n["hypothesis"] = (d.get("text", ""), d.get("metric", ""), d.get("op", ">"), _f(d.get("threshold")),
                           d.get("evidence", ""))


def _hypothesis_tested(b: _Builder, d: dict) -> None:
    n = b.touch(d["node_id"])
    if n is not None:
        n["supported"] = bool(d.get("supported"))
        n["observed"] = _fn(d.get("observed"))


def _work_stalled(b: _Builder, d: dict) -> None:
    b.f["stalls"] += 1


def _heldout_scored(b: _Builder, d: dict) -> None:
    nid = d["node_id"]
    held = dict(b.f["heldout"])
    cur = held.get(nid) or HeldOut(_i(d.get("rank")) or 1, None)
    metrics = tuple(sorted({**dict(cur.metrics), d.get("name", ""): _f(d.get("value"))}.items()))
    score = _f(d.get("value")) if d.get("primary") else cur.score
    held[nid] = cur._replace(metrics=metrics, score=score, anytime=tuple(d.get("anytime") or ()))
    b.f["heldout"] = MappingProxyType(held)


def _heldout_failed(b: _Builder, d: dict) -> None:
    held = dict(b.f["heldout"])
    cur = held.get(d["node_id"]) or HeldOut(_i(d.get("rank")) or 1, None)
    held[d["node_id"]] = cur._replace(failure=d.get("reason") or "failed")
    b.f["heldout"] = MappingProxyType(held)


def _proposal_failed(b: _Builder, d: dict) -> None:
    did = d["decision_id"]
    fails = dict(b.f["proposal_failures"])
    fails[did] = fails.get(did, 0) + 1
    b.f["proposal_failures"] = MappingProxyType(fails)


def _trial_reused(b: _Builder, d: dict) -> None:
    b.f["trials_reused"] += 1
    b.f["rejections_in_a_row"] = 0
    n = b.touch(d["node_id"])
    if n is not None:
        n["status"], n["adapter"] = "trained", d.get("adapter")
        n["reused_from"] = (d.get("source_search_id", ""), d.get("source_node_id", ""))
        n["train_metrics"] = tuple(sorted((d.get("train_metrics") or {}).items()))
        if "progress" in d:  # v2: the source's curve (a v1 reuse leaves the node's as it was)
            n["progress"] = [(_i(step), _fn(loss)) for step, loss in d["progress"] or ()]


def _metric_recorded(b: _Builder, d: dict) -> None:
    nid = d["node_id"]
    if nid == BASE_NODE:
        value = _f(d.get("value"))
        b.f["base_metrics"] = tuple(sorted({**dict(b.f["base_metrics"]), d.get("name", ""): value}.items()))
        if d.get("primary"):
            b.f["base_score"] = value
        return
    n = b.touch(nid)
    if n is None:
        return
    value = _f(d.get("value"))
    if d.get("primary"):
        if not b.f["primary_metric"]:
            b.f["primary_metric"] = d.get("name", "")
        n["score"] = value
        b.judge(n)
        b.rescore(nid)
        best = b.r(b.best_id)["score"] if b.best_id else None
        b.history.append(HistoryPoint(b.f["trials"], b.f["compute_seconds"], nid, value, best))
    else:
        n["metrics"][d.get("name", "")] = value
        if b.f["started"].constraints:  # a constraint's metric may come after the primary
            b.judge(n)
            b.rescore(nid)
            if b.history and b.history[-1].node_id == nid:  # the point its primary score made, now judged
                best = b.r(b.best_id)["score"] if b.best_id else None
                b.history[-1] = b.history[-1]._replace(best_score=best)


def _evaluation_finished(b: _Builder, d: dict) -> None:
    n = b.touch(d["node_id"]) if d["node_id"] != BASE_NODE else None
    if n is not None:
        n["status"] = "evaluated"
        if d.get("outputs_artifact"):
            n["outputs"].append(d["outputs_artifact"])


def _evaluation_failed(b: _Builder, d: dict) -> None:
    n = b.touch(d["node_id"]) if d["node_id"] != BASE_NODE else None
    if n is not None:
        if n.get("score") is None:  # a node already scored (another split failed) keeps its result
            n["status"] = "failed"
        n["failure"] = d.get("reason")
        n["failure_message"] = d.get("message", "")


def _insight_distilled(b: _Builder, d: dict) -> None:
    b.insights[d["insight_id"]] = d.get("text", "")


def _insight_retired(b: _Builder, d: dict) -> None:
    b.insights.pop(d["insight_id"], None)


def _note_added(b: _Builder, d: dict) -> None:
    b.notes.append((d.get("author", ""), d.get("text", "")))


_Handler = Callable[[_Builder, dict], None]

HANDLERS: dict[str, _Handler] = {
    "SearchStarted": _search_started,
    "SearchForked": _search_forked,
    "SearchResumed": _search_resumed,
    "SearchFinished": _search_finished,
    "BudgetExhausted": _budget_exhausted,
    "NodeSelected": _node_selected,
    "NodePruned": _node_pruned,
    "PlanProposed": _plan_proposed,
    "PlanRejected": _plan_rejected,
    "TrialStarted": _trial_started,
    "TrialProgressed": _trial_progressed,
    "TrialFinished": _trial_finished,
    "TrialFailed": _trial_failed,
    "TrialAbandoned": _trial_abandoned,
    "TrialReused": _trial_reused,
    "TrialDispatchFailed": _trial_dispatch_failed,
    "WorkStalled": _work_stalled,
    "HypothesisStated": _hypothesis_stated,
    "HypothesisTested": _hypothesis_tested,
    "ProposalFailed": _proposal_failed,
    "HeldOutScored": _heldout_scored,
    "HeldOutFailed": _heldout_failed,
    "MetricRecorded": _metric_recorded,
    "EvaluationFinished": _evaluation_finished,
    "EvaluationFailed": _evaluation_failed,
    "InsightDistilled": _insight_distilled,
    "InsightRetired": _insight_retired,
    "NoteAdded": _note_added,
}
# handlers that also need the envelope's correlation / causation ids
META_HANDLERS: dict[str, Callable[[_Builder, dict, str | None, str | None], None]] = {
    "LlmCallMade": _llm_call,
    "LlmCallFailed": _llm_call,
}

_VERSIONS: dict[str, int] = {}
_WANTED = frozenset(HANDLERS) | frozenset(META_HANDLERS)


def _versions() -> dict[str, int]:
    """Current schema version of every type the tree folds."""
    if not _VERSIONS:
        _VERSIONS.update({k: ver for k, ver in _all_versions().items() if k in _WANTED})
    return _VERSIONS


_CHUNK = 4096
_FIRST = frozenset({"SearchStarted", "SearchForked"})
_ALL_VERSIONS: dict[str, int] = {}


def _all_versions() -> dict[str, int]:
    """Current schema version of every registered type (the fold skips most of them unread)."""
    if not _ALL_VERSIONS:
        _ALL_VERSIONS.update({k: ver for k, (_, ver) in registered_types().items()})
    return _ALL_VERSIONS


def _unfoldable_payload(t: str, seq: int, sid: str, e: Exception) -> None:
    """A stored payload the handler cannot read (the log validated it on append: only a record altered
    with its checksum and hash recomputed gets here): one line naming it, never a bare KeyError."""
    raise InvalidPayload(f"search {sid!r} seq {seq}: the {t} payload cannot be folded ({type(e).__name__}: "
                         f"{str(e)[:120]}); `trex verify` checks the log") from None


def _not_foldable(t: str, version: int, seq: int, sid: str) -> None:
    """An event this trex cannot read is a hard error, never skipped: skipping one the tree should
    have folded would show a wrong tree with exit 0 (a log written by a newer trex, or damage that kept
    its checksum right)."""
    known = _all_versions().get(t)
    if known is None:
        raise UnknownEventType(f"search {sid!r} seq {seq}: unknown event type {str(t)[:80]!r} "
                               "(written by a newer trex, or damaged; `trex verify` checks the log)")
    if version > known:
        raise SchemaTooNew(f"search {sid!r} seq {seq}: {t} version {version} is newer than this trex "
                           f"reads (up to {known}); upgrade trex to read this log")


def _fold_chunk(b: _Builder, items: list) -> None:
    """Fold a run of events: decode the payloads the tree cares about at once, then run the handlers.

    Stored payloads are JSON objects (the log checks them on append), so one
    ``json.loads`` over them joined as an array is equivalent to one per
    payload, and much cheaper; should the count not match, each is decoded alone.
    """
    f = b.f
    wanted = _WANTED
    known = _all_versions()
    last = f["last_seq"]
    rows: list[tuple] = []  # (type, seq, search id, correlation, causation, version, text index or dict)
    texts: list[str] = []
    for item in items:
        cls = item.__class__
        if cls is Envelope:
            last = item.seq
            t = item.type
            if t in wanted:
                rows.append((t, last, item.search_id, item.correlation_id, item.causation_id, item.schema_version,
                             len(texts)))
                texts.append(item.payload)
            elif item.schema_version > known.get(t, -1):
                _not_foldable(t, item.schema_version, last, item.search_id)
        elif cls is dict:  # a record of EventLog.read_records()
            last = item["seq"]
            t = item["type"]
            if t in wanted:
                rows.append((t, last, item["search_id"], item.get("correlation_id"), item.get("causation_id"),
                             item["schema_version"], len(texts)))
                texts.append(item["payload"])
            elif item["schema_version"] > known.get(t, -1):
                _not_foldable(t, item["schema_version"], last, item["search_id"])
        elif isinstance(item, Event):  # a bare event follows the previous one, in the same stream
            last += 1
            if item.TYPE in wanted:
                rows.append((item.TYPE, last, f["search_id"], None, None, item.VERSION, item.model_dump(mode="json")))
        else:
            raise TypeError(f"cannot fold a {type(item).__name__}")
    decoded: list = []
    if texts:
        try:
            decoded = json.loads("[" + ",".join(texts) + "]")
        except ValueError:
            decoded = []
        if len(decoded) != len(texts):
            decoded = [json.loads(t) for t in texts]  # let a bad one raise on its own
    handlers, meta = HANDLERS, META_HANDLERS
    versions = _versions()
    for t, seq, sid, corr, cause, version, p in rows:
        d = decoded[p] if p.__class__ is int else p
        if version != versions[t]:
            d = upcast(t, version, d)
        b.seq, b.sid = seq, sid
        if sid == f["search_id"] and t not in _FIRST:
            f["activity"] += 1
        h = handlers.get(t)
        try:
            if h is not None:
                h(b, d)
            else:
                meta[t](b, d, corr, cause)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError) as e:
            _unfoldable_payload(t, seq, sid, e)
    f["n_events"] += len(items)
    f["last_seq"] = last


def fold(events: Iterable[Item], start: SearchTree | None = None) -> SearchTree:
    """The tree after ``events`` (envelopes, log records or bare events), starting from ``start``."""
    # The fold allocates many small acyclic objects (dicts, tuples): the cyclic garbage collector
    # would rescan the whole (large) heap over and over for nothing, about a third of the time.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        b = _Builder(start if start is not None else SearchTree())
        chunk: list = []
        for item in events:
            chunk.append(item)
            if len(chunk) >= _CHUNK:
                _fold_chunk(b, chunk)
                chunk = []
        if chunk:
            _fold_chunk(b, chunk)
        return b.freeze()
    finally:
        if gc_was_enabled:
            gc.enable()


def apply(tree: SearchTree, item: Item) -> SearchTree:
    """One event: a new tree; ``tree`` is left as it was."""
    return fold((item,), start=tree)
