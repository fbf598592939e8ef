"""The Insight-distiller's domain: short, falsifiable statements learned from evaluated trials.

An insight compares the plans of evaluated nodes along one dimension the search varies (each
dimension of :mod:`trex.propose.space`: learning-rate band, LoRA rank, target modules, schedule, warmup): "targets=all (mean 0.41: n3, n5)
beats targets=qv (mean 0.12: n1, n2) on arith-sub". It is written only when each side has at
least ``min_support`` nodes and the gap is at least ``min_gap`` of the observed score range, and
it names every supporting node, so anyone can check it with ``trex sql``. When later evidence
reverses or erases a gap, the insight is retired (``InsightRetired``); a claim that still holds
is restated under the same id with its current numbers and nodes.

This is statistics by hand, not an LLM: a 135M local model cannot be trusted to summarise a
table faithfully, and an insight must be checkable against the nodes it cites. The statements
are what later proposals (and later searches on the task) receive.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

from trex.events.insights import InsightDistilled, InsightRetired
from trex.propose.space import SPACE, insight_key


def _data_mix(plan) -> str:
    sources = (plan.get("data") or {}).get("sources") or ()
    pools = sorted({str(s.get("uri", "")).rsplit("/", 1)[-1] for s in sources if str(s.get("uri", "")).startswith("pool:")})
    return f"pool {'+'.join(pools)} mixed in" if pools else "train split only"


def _cleaning(plan) -> str:
    return "cleaned by loss" if (plan.get("data") or {}).get("clean") else "not cleaned"


DIMENSIONS: dict[str, Any] = {  # insight-id name -> the group a plan falls in along that dimension
    **{d.label: (lambda p, d=d: insight_key(d, p)) for d in SPACE},
    # the data the plan trained on (plans without a data space all fall in one group: no insight)
    "data mix": _data_mix,
    "cleaning": _cleaning,
}


def _iid(search_id: str, dim: str, win: str, lose: str) -> str:
    return "ins-" + hashlib.sha256(f"{search_id}|{dim}|{win}|{lose}".encode()).hexdigest()[:12]


def distill(tree, *, min_support: int = 2, min_gap: float = 0.15) -> list:
    """Events that bring the tree's insights up to date with its evaluated nodes (may be empty). Under
    constraints, scores are compared among feasible nodes only, and a dimension whose groups differ in how
    often they are feasible gets an insight of its own ("pool addition mixed in: 3/3 feasible ...")."""
    tested = check_hypotheses(tree)
    judged = [n for n in tree.nodes.values() if n.score is not None and n.plan]
    constrained = bool(tree.started.constraints)
    scored = [n for n in judged if n.infeasible is None] if constrained else judged
    wanted: dict[str, tuple[str, tuple[str, ...]]] = {}  # id -> (text, supporting node ids)
    if constrained:
        _feasibility(tree, judged, min_support, wanted)
    if len(scored) < 2 * min_support:
        return tested + (_sync(tree, wanted) if constrained else [])
    lo, hi = min(n.score for n in scored), max(n.score for n in scored)
    span = hi - lo
    sign = 1.0 if tree.higher_is_better else -1.0
    for dim, key in DIMENSIONS.items():
        groups: dict[str, list] = defaultdict(list)
        for n in scored:
            groups[key(n.plan)].append(n)
        groups = {k: v for k, v in groups.items() if len(v) >= min_support}
        if len(groups) < 2 or span <= 0:
            continue
        mean = {k: sum(n.score for n in v) / len(v) for k, v in groups.items()}
        ranked = sorted(mean, key=lambda k: sign * mean[k], reverse=True)
        win, lose = ranked[0], ranked[-1]
        if abs(mean[win] - mean[lose]) < min_gap * span:
            continue

        def cite(k: str) -> str:
            ids = ", ".join(sorted((n.node_id for n in groups[k]), key=lambda s: (len(s), s)))
            return f"mean {mean[k]:.3g}: {ids}"

        text = f"{win} ({cite(win)}) beats {lose} ({cite(lose)}) on {tree.task}"
        support = tuple(sorted((n.node_id for n in groups[win] + groups[lose]), key=lambda s: (len(s), s)))
        wanted[_iid(tree.search_id, dim, win, lose)] = (text, support)
    return tested + _sync(tree, wanted)


def check_hypotheses(tree) -> list:
    """``HypothesisTested`` for every evaluated node whose hypothesis has no verdict yet: the value of the
    metric it named (the primary score, or a secondary metric) against its threshold."""
    from trex.events.plans import HypothesisTested
    from trex.propose.baselines import Hypothesis

    out = []
    for nid in tree.order:
        n = tree.nodes[nid]
        if n.hypothesis is None or n.supported is not None or n.status not in ("evaluated", "failed"):
            continue
        hypothesis = Hypothesis(*n.hypothesis)
        metric = hypothesis.metric
        value = n.score if metric == tree.primary_metric else dict(n.metrics).get(metric)
        ok = value is not None and value == value and hypothesis.holds(value)
        out.append(HypothesisTested(node_id=nid, supported=bool(ok), observed=value, metric=metric))
    return out


def _ids(nodes) -> list[str]:
    return sorted((n.node_id for n in nodes), key=lambda s: (len(s), s))


def _feasibility(tree, judged, min_support: int, wanted: dict) -> None:
    """Along each dimension: the group most often feasible against the group least often (a gap of at
    least half)."""
    for dim, key in DIMENSIONS.items():
        groups: dict[str, list] = defaultdict(list)
        for n in judged:
            groups[key(n.plan)].append(n)
        groups = {k: v for k, v in groups.items() if len(v) >= min_support}
        if len(groups) < 2:
            continue
        rate = {k: sum(n.infeasible is None for n in v) / len(v) for k, v in groups.items()}
        ranked = sorted(rate, key=lambda k: rate[k], reverse=True)
        win, lose = ranked[0], ranked[-1]
        if rate[win] - rate[lose] < 0.5:
            continue

        def cite(k: str) -> str:
            ok = sum(n.infeasible is None for n in groups[k])
            return f"{ok}/{len(groups[k])} feasible: {', '.join(_ids(groups[k]))}"

        text = f"{win} ({cite(win)}) meets the constraints more often than {lose} ({cite(lose)}) on {tree.task}"
        wanted[_iid(tree.search_id, f"feasible {dim}", win, lose)] = (text, tuple(_ids(groups[win] + groups[lose])))


def _sync(tree, wanted: dict) -> list:
    events: list = []
    for iid, text in tree.insights.items():
        if iid not in wanted and iid.startswith("ins-"):
            events.append(InsightRetired(insight_id=iid, reason="no longer supported by the evaluated nodes"))
    for iid, (text, support) in wanted.items():
        if tree.insights.get(iid) != text:
            events.append(InsightDistilled(insight_id=iid, text=text, support=support,
                                           source_search_id=tree.search_id, task=tree.task))
    return events

