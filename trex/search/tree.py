"""The values of the search-tree projection: :class:`Node` and :class:`SearchTree`.

Both are frozen. They are built by :mod:`trex.search.projection`, which is the only
place that knows how events change them. A plan is a plain dict inside a frozen
node, shared by the successive trees that hold the node: treat it as read-only
(the fold never changes one).

Invariants the fold keeps: a node's parent exists before it (so ``order``, the
creation order, lists parents before children and the tree has no cycles), and
``children`` lists each parent's children in creation order, None for the root.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

from trex.events.search import SearchStarted, violations

# Lifecycle: proposed -> running -> trained -> evaluated, or one of the closed states.
STATUSES = ("proposed", "running", "trained", "evaluated", "failed", "rejected", "pruned", "abandoned")
IN_FLIGHT = frozenset({"proposed", "running", "trained"})  # work started, no result yet
ROOT = "root"  # how the implicit root is named where a string is needed (scores, html); its node_id is None


def is_number(x: Any) -> bool:
    """A usable score: a finite int or float (NaN and infinities never rank)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


FIT_RATIO = 0.15
"""A node whose final training loss is below this share of its first has fitted its training rows."""
FALLING = 0.95
"""A loss curve whose last third averages below this share of its middle third is still falling. Under a
decaying schedule the last third trains at a quarter (cosine) to a third (linear) of the peak learning
rate, so a 5% fall there says a continuation, at the full rate again, still gains: at 0.8 the demo's n2
(1.4 -> 1.13 under cosine, val 0.17) read as stalled and was cleaned instead of continued. At 0.9 a
curve at 0.93 on the label-noise task read as stalled, where continuing it took val 0.105 -> 0.32, and
on the committed FT-Bench logs a second stage at a third of the lr gained ~0 in 5 of 7 tries from
parents at 0.73-0.91 (docs/search.md, "How still-falling was set")."""


@dataclass(frozen=True)
class Node:
    node_id: str
    parent_id: str | None  # None: a draft, child of the implicit root
    operator: str = "draft"
    plan: Mapping[str, Any] = field(default_factory=dict)
    plan_hash: str = ""
    rationale: str = ""
    proposer: str = ""
    decision_id: str | None = None
    insights: tuple[str, ...] = ()  # insight ids the proposer was given
    status: str = "proposed"
    score: float | None = None  # the primary metric
    metrics: tuple[tuple[str, float], ...] = ()  # secondary metrics, sorted by name
    train_metrics: tuple[tuple[str, Any], ...] = ()
    compute_seconds: float = 0.0
    tokens: int = 0
    adapter: str | None = None
    failure: str | None = None  # TrialFailed.reason, EvaluationFailed.reason, or the rejection reason
    failure_message: str = ""
    log_tail: str = ""
    reused_from: tuple[str, str] | None = None  # (source search, source node) of a TrialReused
    trials: int = 0  # TrialStarted events (attempts)
    progress: tuple[tuple[int, float | None], ...] = ()  # (step, loss) of TrialProgressed
    created_seq: int = 0  # seq of the event that created the node, in the stream named by origin
    origin: str = ""  # the search id whose stream created the node (differs from the tree's in a fork)
    updated_seq: int = 0  # seq (in ``updated_in``) of the last event about this node
    updated_in: str = ""
    depth: int = 1  # drafts are at depth 1; the root is depth 0
    debug_depth: int = 0  # length of the chain of debug operators ending at this node
    open_trials: tuple[str, ...] = ()  # trial ids started and not yet closed (finished, failed, abandoned)
    outputs: tuple[str, ...] = ()  # evaluation-output artifacts (relative to HOME/artifacts), primary split first
    dispatch_failures: int = 0  # TrialDispatchFailed: the executor failed before the trial started
    infeasible: str | None = None  # why a scored node breaks the search's constraints (None: feasible, or unscored)
    hypothesis: tuple | None = None  # HypothesisStated: (text, metric, op, threshold, evidence)
    supported: bool | None = None  # HypothesisTested: the Distiller's verdict (None: not tested yet)
    observed: float | None = None  # ... and the value it observed

    @property
    def feasible(self) -> bool:
        """Scored and within every constraint: a node that may be reported as the best."""
        return is_number(self.score) and self.infeasible is None

    @property
    def loss_trend(self) -> tuple[float, float] | None:
        """The mean training loss over the middle and the last third of the sampled curve of its last
        trial (``TrialProgressed``; a retried trial starts its steps again, and only the last run
        counts), or None with fewer than six points."""
        losses: list[float] = []
        last_step = None
        for step, x in self.progress:
            if last_step is not None and step <= last_step:
                losses = []  # the steps started again: a new attempt of the trial
            last_step = step
            if is_number(x):
                losses.append(x)
        if len(losses) < 6:
            return None
        k = len(losses) // 3
        return sum(losses[k:2 * k]) / k, sum(losses[-k:]) / k


def line_start(tree: "SearchTree", node: Node) -> Node:
    """The node that started the adapter ``node`` trained: ``node`` itself, or — for a continuation —
    the first node of its line."""
    n, seen = node, set()
    while n.plan.get("continue_from_parent") and n.parent_id in tree.nodes and n.node_id not in seen:
        seen.add(n.node_id)
        n = tree.nodes[n.parent_id]
    return n


def line_first_loss(tree: "SearchTree", node: Node) -> Any:
    """The first training loss of the adapter ``node`` trained: its own, or — for a continuation,
    which starts from its parent's last loss — that of the first node of its line (the one that
    started the adapter). What underfitting and fitting are judged against."""
    return dict(line_start(tree, node).train_metrics).get("first_loss")


def still_learning(tree: "SearchTree", node: Node) -> bool:
    """Evidence that more steps can still gain on ``node``: its training loss was still falling when its
    trial ended (the last third of the sampled curve below :data:`FALLING` of the middle third's
    mean); without a curve of six points, the loss had not fitted the rows (final at or above
    :data:`FIT_RATIO` of its line's first loss: a continuation is measured from where its adapter
    started). A loss that stalled high is not learning: it says the learning rate (or the capacity) is
    wrong, which more steps do not fix."""
    trend = node.loss_trend
    if trend is not None:
        middle, last = trend
        return last < FALLING * middle
    first, final = line_first_loss(tree, node), dict(node.train_metrics).get("final_loss")
    return is_number(first) and is_number(final) and first > 0 and final >= FIT_RATIO * first


class HeldOut(NamedTuple):
    """A node's held-out test result (``HeldOutScored``/``HeldOutFailed``): never read by a decision."""

    rank: int  # by validation score when it was scored; 1 = the node the search chose
    score: float | None  # the primary metric on its test split (None: failed)
    metrics: tuple[tuple[str, float], ...] = ()  # every test metric, sorted by name
    failure: str | None = None
    anytime: tuple[int, ...] = ()  # trial counts after which it was the val-best (the report's anytime curve)


class DecisionRecord(NamedTuple):
    """A recorded NodeSelected, as the tree keeps it (a NamedTuple: cheap to build, immutable)."""

    seq: int
    decision_id: str
    node_id: str | None
    operator: str
    policy: str
    seed: int
    scores: tuple[tuple[str, float], ...] = ()
    reason: str = ""


class HistoryPoint(NamedTuple):
    """The best score so far, each time a node got a score (for the best-vs-trials/compute plots)."""

    trials: int
    compute_seconds: float
    node_id: str
    score: float | None
    best_score: float | None


LLM_PROPOSERS = frozenset({"llm", "llm-notools"})  # llm-notools: the ablation without evidence tools


@dataclass(frozen=True)
class SearchTree:
    search_id: str = ""
    task: str = ""
    base_model: str = ""
    proposer: str = ""
    policy: str = ""
    seed: int = 0
    parallel: int = 1
    budget: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    started: SearchStarted = field(default_factory=lambda: SearchStarted(task=""))  # its settings, typed
    metric_direction: str = "max"  # SearchStarted.metric_direction
    status: str = "new"  # new (no SearchStarted yet) / running / finished
    finish_reason: str | None = None
    exhausted: tuple[str, ...] = ()  # BudgetExhausted kinds, in order
    forks: tuple[tuple[str, str, int, str | None], ...] = ()  # (search, parent, at_seq, at_node) per SearchForked
    resumes: int = 0
    nodes: Mapping[str, Node] = field(default_factory=lambda: MappingProxyType({}))
    children: Mapping[str | None, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    order: tuple[str, ...] = ()  # node ids in creation order
    decisions: tuple[DecisionRecord, ...] = ()
    open_decisions: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))  # id -> target
    insights: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # in force: id -> text
    pending_tokens: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # open decision -> tokens
    notes: tuple[tuple[str, str], ...] = ()  # (author, text)
    rejected_plans: int = 0  # PlanRejected without a node id
    trials: int = 0  # TrialStarted events
    nodes_tried: int = 0  # nodes with at least one TrialStarted: the trial budget counts these (not retries)
    primary_metric: str = ""  # the name the primary metric is recorded under (its first MetricRecorded)
    stalls: int = 0  # WorkStalled: work that did not come back within its bound (its actor was restarted)
    trials_finished: int = 0
    trials_failed: int = 0
    trials_reused: int = 0
    compute_seconds: float = 0.0
    tokens: int = 0
    llm_calls: int = 0
    best_node_id: str | None = None
    history: tuple[HistoryPoint, ...] = ()
    n_events: int = 0  # events folded (the prefix of a fork included)
    last_seq: int = 0  # seq of the last event folded, in its own stream
    ignored: int = 0  # events about unknown nodes (kept out of the tree, counted for auditors)
    # facts the search loop needs often, kept by the fold rather than re-read from the log
    base_score: float | None = None  # the untouched base model's primary metric (node id "base")
    base_metrics: tuple[tuple[str, float], ...] = ()  # every metric recorded for the base model, sorted
    rejections_in_a_row: int = 0  # plans that could not be tried (PlanRejected) since a trial last ran or was reused
    proposal_failures: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # decision -> count
    activity: int = 0  # events of this search's own stream after its first (SearchStarted / SearchForked)
    heldout: Mapping[str, HeldOut] = field(default_factory=lambda: MappingProxyType({}))  # node -> its test result

    # ------------------------------------------------------------ the reported score
    @property
    def uses_llm(self) -> bool:
        """Whether the search's proposer asks an LLM (``llm``, or its ablation ``llm-notools``)."""
        return self.proposer in LLM_PROPOSERS

    @property
    def test_score(self) -> float | None:
        """The held-out test score of the node chosen on validation (None before it is scored)."""
        b, c = self.best, self.chosen
        return c[1].score if b is not None and c is not None and c[0] == b.node_id else None

    @property
    def chosen(self) -> tuple[str, HeldOut] | None:
        """(node, its test result) of the node the search chose on validation, once scored on test."""
        return next(((n, h) for n, h in self.heldout.items() if h.rank == 1), None)

    def test_infeasible(self, node_id: str) -> str | None:
        """Why ``node_id``'s held-out test metrics break the constraints (None: they hold, or it has none)."""
        h = self.heldout.get(node_id)
        if h is None or not self.started.constraints:
            return None
        return violations(self.started.constraints, dict(h.metrics))

    # ------------------------------------------------------------ queries
    @property
    def higher_is_better(self) -> bool:
        return self.metric_direction != "min"

    @property
    def best(self) -> Node | None:
        return self.nodes.get(self.best_node_id) if self.best_node_id else None

    @property
    def best_score(self) -> float | None:
        b = self.best
        return b.score if b else None

    def better(self, a: float, b: float) -> bool:
        """Is score ``a`` strictly better than ``b`` in this search's direction?"""
        return a > b if self.higher_is_better else a < b

    def children_of(self, node_id: str | None) -> tuple[Node, ...]:
        return tuple(self.nodes[c] for c in self.children.get(node_id, ()))

    def ancestors(self, node_id: str) -> tuple[str, ...]:
        """Parent first, up to the draft (the root, None, is not included)."""
        out = []
        p = self.nodes[node_id].parent_id
        while p is not None and p in self.nodes:
            out.append(p)
            p = self.nodes[p].parent_id
        return tuple(out)

    def count_by_status(self) -> dict[str, int]:
        counts = {s: 0 for s in STATUSES}
        for n in self.nodes.values():
            counts[n.status] = counts.get(n.status, 0) + 1
        return counts

    @property
    def n_decisions(self) -> int:
        return len(self.decisions)

    def summary(self) -> dict[str, Any]:
        b = self.best
        return {
            "search_id": self.search_id,
            "task": self.task,
            "base_model": self.base_model,
            "policy": self.policy,
            "status": self.status,
            "finish_reason": self.finish_reason,
            "nodes": len(self.nodes),
            "by_status": {k: v for k, v in self.count_by_status().items() if v},
            "best_node_id": b.node_id if b else None,
            "best_score": b.score if b else None,  # validation: the score the node was chosen on
            "test_score": self.test_score,  # held out: the number to report (None until scored)
            "heldout": {n: {"rank": h.rank, "test_score": h.score, "val_score": self.nodes[n].score
                            if n in self.nodes else None, "failure": h.failure}
                        for n, h in sorted(self.heldout.items(), key=lambda kv: kv[1].rank)},
            "metric_direction": self.metric_direction,
            "constraints": [c.model_dump(mode="json") for c in self.started.constraints],
            "infeasible": {n: self.nodes[n].infeasible for n in self.order if self.nodes[n].infeasible},
            "trials": self.trials,
            "trials_finished": self.trials_finished,
            "trials_failed": self.trials_failed,
            "trials_reused": self.trials_reused,
            "stalls": self.stalls,
            "compute_seconds": self.compute_seconds,
            "tokens": self.tokens,
            "llm_calls": self.llm_calls,
            "decisions": len(self.decisions),
            "insights_in_force": len(self.insights),
            "events": self.n_events,
            "last_seq": self.last_seq,
        }
