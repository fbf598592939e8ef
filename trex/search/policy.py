"""Selection policies: which node to expand next, and with which operator.

A policy is a pure function of the tree, the search's seed and the pending
expansions; it returns a :class:`Decision` that the caller records as a
``NodeSelected`` event. Its randomness is ``random.Random(f"{seed}:{n}")`` where
``n`` is the number of decisions already taken (recorded ones plus the pending
ones passed in), so a replayed search takes the same decisions.

Pending work (virtual loss): every node that is proposed/running/trained but has
no result yet, and every recorded decision whose plan has not arrived
(``tree.open_decisions``), counts as a visit with value 0 to the node it
expands; ``pending=`` adds decisions the caller has handed out but not recorded
yet. So K workers asking in turn (:func:`select_many`) do not get the same node K times.

Policies:

* ``mcts`` — UCT descent from the root. At each node: if progressive widening
  allows another child (``children < ceil(pw_k * visits ** pw_alpha)``, and the
  root until ``num_drafts`` drafts exist — at most a third of a trial budget, and never past a third
  of a trial budget unless no node beats the base model or no child can be expanded), expand it; else go to the child with
  the highest UCT ``Q + c * sqrt(ln N(parent) / N(child)) + gain``. N and Q come
  from :func:`mcts_stats`: visits and value sums backed up over each node's
  subtree (evaluated nodes count their score min-max normalised to [0, 1] in the
  metric's direction, failures, infeasible nodes (outside the task's
  constraints) and pending work count 0). A trained node's own result is its
  first visit (its rollout), so a weak draft is not improved before a strong one
  merely because it was created first; with ``unvisited_first`` a child never
  expanded scores +inf (reported as 1e9) instead — classic UCT, every child
  expanded once before any is revisited (the default before the Researcher's
  evidence reached the policy). Evidence that a line can still gain steers the
  budget into depth, and the exploration term ``c`` is scaled by the share of a
  trial budget not yet decided (``horizon``: exploring late has no trials left to
  pay off). ``gain`` (``gain_bonus``) is added for a node whose training loss was
  still falling (:func:`~trex.search.tree.still_learning`), and a node one
  of whose children improved on it is deepened (the descent goes on into its
  children, by UCT) rather than widened (``deepen_on_gain``); at the root, while
  drafts are scored, no node beats the base model, no draft is still learning and
  no other draft is pending, it drafts again (up to twice ``num_drafts`` drafts)
  rather than improve a line no evidence says gains.
* ``greedy`` — AIDE's: draft until ``num_drafts`` drafts exist; then with
  probability ``debug_prob`` debug a failed leaf whose debug chain is shorter
  than ``max_debug_depth``; else improve the best node (the next best if it is
  already pending).
* ``best_first`` — improve the best-scoring node that is not pending; draft when
  none has a score.
"""
from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from trex.events.search import NodeSelected
from trex.search.tree import IN_FLIGHT, ROOT, Node, SearchTree, is_number, still_learning

UNVISITED = 1e9  # the reported UCT of a child never expanded (JSON has no infinity)

DEFAULTS: dict[str, dict[str, Any]] = {
    "mcts": {"c_uct": 1.0, "num_drafts": 3, "pw_k": 1.0, "pw_alpha": 0.5, "max_debug_depth": 3,
             "unvisited_first": False, "gain_bonus": 0.25, "deepen_on_gain": True, "horizon": True},
    "greedy": {"num_drafts": 5, "debug_prob": 0.5, "max_debug_depth": 3},
    "best_first": {"num_drafts": 1},
}


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Decision:
    node_id: str | None  # None: the root, i.e. a fresh draft
    operator: str  # draft / improve / debug
    policy: str
    seed: int
    index: int  # how many decisions came before this one
    decision_id: str
    scores: tuple[tuple[str, float], ...] = ()
    reason: str = ""

    def to_event(self) -> NodeSelected:
        return NodeSelected(decision_id=self.decision_id, node_id=self.node_id, operator=self.operator,
                            policy=self.policy, seed=self.seed, scores=self.scores, reason=self.reason)


@dataclass(frozen=True)
class Stats:
    """What MCTS backs up over a node's subtree (the node included)."""

    visits: int  # results (scores, failures) + pending work in the subtree
    scored: int  # nodes with a score in the subtree
    score_sum: float  # sum of their raw scores
    expansions: int  # children + pending expansions of this node itself


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(f"{seed}:{index}")


def _decision_id(tree: SearchTree, seed: int, index: int) -> str:
    return hashlib.sha256(f"{tree.search_id}:{seed}:{index}".encode()).hexdigest()[:16]


def pending_targets(tree: SearchTree, pending: Iterable[str | None] = ()) -> Counter:
    """Expansions in progress per target node (None = the root): open decisions and caller's pending."""
    c: Counter = Counter(tree.open_decisions.values())
    c.update(pending)
    return c


def _expandable(n: Node, max_debug_depth: int) -> str | None:
    """The operator that would expand ``n``, or None if it cannot be expanded."""
    if n.status == "evaluated" and is_number(n.score):
        return "improve"
    if n.status == "failed" and n.debug_depth < max_debug_depth:
        return "debug"
    return None


def draft_count(tree: SearchTree, pending: Iterable[str | None] = ()) -> int:
    """Drafts made or being made: the root's children (rejected ones aside) and the decisions targeting
    the root that have no plan yet (open ones, and ``pending``). Not the driver's ``busy``: a draft
    training or being proposed is already one of those, and counting it again cut the first drafts short."""
    return (sum(1 for c in tree.children.get(None, ()) if tree.nodes[c].status != "rejected")
            + pending_targets(tree, pending)[None])


def mcts_stats(tree: SearchTree, pending: Iterable[str | None] = (), virtual_loss: bool = True
               ) -> dict[str | None, Stats]:
    """Visits and value sums backed up from every node to its ancestors and the root (key None).
    Without ``virtual_loss`` work with no result yet (pending decisions, nodes in flight) is not
    counted as a visit: only results are."""
    pend = pending_targets(tree, pending)
    visits: dict[str | None, int] = {None: 0}
    scored: dict[str | None, int] = {None: 0}
    ssum: dict[str | None, float] = {None: 0.0}
    for nid in tree.order:
        visits[nid] = 0
        scored[nid] = 0
        ssum[nid] = 0.0
    for target, k in pend.items():  # a pending expansion will be a child of its target
        if virtual_loss and (target is None or target in visits):
            visits[target] += k
    for nid in reversed(tree.order):  # children come after their parents in creation order
        n = tree.nodes[nid]
        if is_number(n.score) and n.infeasible is None:
            scored[nid] += 1
            ssum[nid] += n.score
            visits[nid] += 1
        elif n.status == "failed" or (virtual_loss and n.status in IN_FLIGHT) or is_number(n.score):
            visits[nid] += 1  # a failure, an infeasible node, or work with no result yet: a visit worth 0
        p = n.parent_id if n.parent_id in visits else None
        visits[p] += visits[nid]
        scored[p] += scored[nid]
        ssum[p] += ssum[nid]
    out = {}
    for key in visits:
        kids = tree.children.get(key, ())
        expansions = sum(1 for c in kids if tree.nodes[c].status != "rejected") + pend[key]
        out[key] = Stats(visits[key], scored[key], ssum[key], expansions)
    return out


def _normaliser(tree: SearchTree):
    scores = [n.score for n in tree.nodes.values() if n.feasible]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 0.0)
    span = hi - lo

    def value(st: Stats) -> float:
        """Mean value in [0, 1] over the subtree: normalised scores, 0 for failures and pending work."""
        if st.visits == 0:
            return 0.0
        if span <= 0:
            total = float(st.scored)
        elif tree.higher_is_better:
            total = (st.score_sum - st.scored * lo) / span
        else:
            total = (st.scored * hi - st.score_sum) / span
        return total / st.visits

    return value


def _mcts(tree: SearchTree, pend: Counter, p: Mapping[str, Any], pending: tuple, drafts: int,
          virtual_loss: bool = True) -> tuple[str | None, str, tuple, str]:
    stats = mcts_stats(tree, pending, virtual_loss)
    value = _normaliser(tree)
    mdd = int(p["max_debug_depth"])
    # can the node, or something under it, be expanded? Bottom-up (children are created after
    # their parents), so that deep chains need no recursion. Pruned subtrees are left alone.
    below: set[str] = set()
    ok: set[str] = set()
    for nid in reversed(tree.order):
        n = tree.nodes[nid]
        if n.status != "pruned" and (nid in below or _expandable(n, mdd) is not None):
            ok.add(nid)
            if n.parent_id is not None:
                below.add(n.parent_id)
    selectable = ok.__contains__

    c_uct = float(p["c_uct"]) * (_horizon(tree, pend) if p["horizon"] else 1.0)
    v: str | None = None
    path: list[str] = []
    last: tuple = ()
    reason = ""
    while True:
        st = stats[v]
        if v is None:
            own_op: str | None = "draft"
            first = first_drafts(tree, p)
            if drafts < first:
                return None, "draft", (), f"drafts {drafts} < {first}"
        else:
            own_op = _expandable(tree.nodes[v], mdd)
        allowed = math.ceil(float(p["pw_k"]) * max(st.visits, 1) ** float(p["pw_alpha"]))
        kids = [c for c in tree.children.get(v, ()) if selectable(c)]
        where = " > ".join(path) or ROOT
        gained = bool(p["deepen_on_gain"]) and any(_gained(tree, tree.nodes[c]) for c in kids)
        if v is None:
            if _redraft(tree, kids, pend, p, drafts):  # no node beats the base model yet: explore another draft
                return None, "draft", last, f"{where}: no node beats the base model ({tree.base_score:g}) yet"
            gained = False  # the root widens as progressive widening allows, up to a third of a trial budget
            if drafts >= max_drafts(tree, p):
                allowed = st.expansions
        if own_op is not None and ((st.expansions < allowed and not gained) or not kids):
            why = "no selectable child" if not kids else f"widening ({st.expansions} expansions < {allowed})"
            return v, own_op, last, f"{reason}{where}: {why}"
        if not kids:  # unreachable: a node is only descended into when selectable
            raise PolicyError(f"mcts: nothing to expand under {where}")
        log_n = math.log(max(st.visits, 1))
        scored = []
        for c in kids:
            cs = stats[c]
            n = tree.nodes[c]
            if cs.expansions == 0 and _expandable(n, mdd) and p["unvisited_first"]:
                u = UNVISITED
            else:
                u = value(cs) + c_uct * math.sqrt(log_n / max(cs.visits, 1))
                if n.feasible and still_learning(tree, n):
                    u += float(p["gain_bonus"])
            scored.append((c, u))
        best_c, best_u = scored[0]
        for c, u in scored[1:]:
            if u > best_u:  # ties: the first created wins
                best_c, best_u = c, u
        last = last + tuple((c, round(u, 12)) for c, u in scored)  # every level of the descent
        if best_u >= UNVISITED:
            return best_c, _expandable(tree.nodes[best_c], mdd), last, f"{reason}{where}: unexpanded child {best_c}"
        reason = f"{where}: {'gained, ' if gained else ''}uct {best_u:.4f} -> "
        path.append(best_c)
        v = best_c


def first_drafts(tree: SearchTree, p: Mapping[str, Any]) -> int:
    """How many drafts come before any improve: ``num_drafts``, and at most a third of a trial budget
    (rounded up), so that two thirds are left for the lines the evidence says gain. With six trials and
    three drafts the demo's best line got two continuations and stopped at test 0.84 while still
    learning; a budget of ten keeps its three."""
    n = int(p["num_drafts"])
    limit = tree.budget.get("max_trials")
    if is_number(limit) and limit > 0:
        n = min(n, max(1, math.ceil(float(limit) / 3)))
    return n


def max_drafts(tree: SearchTree, p: Mapping[str, Any]) -> float:
    """How many drafts the root may widen to: a third of a trial budget (rounded up; never fewer than
    :func:`first_drafts`, which is at most that), unbounded without one. Progressive widening alone lets
    the root grow with the square root of its visits: the demo's sixth visit drafted a third time while
    its best line, still learning at val 0.44, had one continuation left to reach 0.84 instead of more.
    Not bounded by this: drafting again when no node beats the base model (``_redraft``), and a draft
    when the root has no selectable child (every draft in flight, or failed past the debug depth)."""
    limit = tree.budget.get("max_trials")
    if not (is_number(limit) and limit > 0):
        return math.inf
    return math.ceil(float(limit) / 3)


def _horizon(tree: SearchTree, pend: Counter) -> float:
    """The share of a trial budget still to decide (1.0 without one): UCT's exploration term is scaled
    by it, because exploring pays off only through the trials that come after it. With a budget of six
    the last decisions follow the best line instead of spreading over drafts (the demo's best results
    came from one line continued twice)."""
    limit = tree.budget.get("max_trials")
    if not is_number(limit) or limit <= 0:
        return 1.0
    used = sum(1 for n in tree.nodes.values() if n.status != "rejected") + sum(pend.values())
    return min(1.0, max(0.0, (float(limit) - used) / float(limit)))


def _redraft(tree: SearchTree, kids: list[str], pend: Counter, p: Mapping[str, Any], drafts: int) -> bool:
    """Draft again rather than improve: drafts are scored, no feasible node anywhere beats the base
    model, no draft's loss is still falling (that one is continued instead), no other draft is pending,
    and fewer than twice ``num_drafts`` drafts exist (the search then improves what it has)."""
    if not p["deepen_on_gain"] or not is_number(tree.base_score) or pend[None]:
        return False
    if drafts >= 2 * int(p["num_drafts"]):
        return False
    if not any(tree.nodes[c].feasible for c in kids):
        return False
    better = (lambda x: x > tree.base_score) if tree.higher_is_better else (lambda x: x < tree.base_score)
    if any(n.feasible and better(n.score) for n in tree.nodes.values()):
        return False
    return not any(tree.nodes[c].feasible and still_learning(tree, tree.nodes[c]) for c in kids)


def _gained(tree: SearchTree, child: Node) -> bool:
    """Whether ``child`` improved on its parent (both feasible), or a draft on the base model (when its
    score is known; else any scored feasible draft counts): the line it continues still gains."""
    if not child.feasible:
        return False
    if child.parent_id is None:
        ref = tree.base_score
        if not is_number(ref):
            return True
    else:
        parent = tree.nodes.get(child.parent_id)
        if parent is None or not parent.feasible:
            return False
        ref = parent.score
    return child.score > ref if tree.higher_is_better else child.score < ref


def _ranked(tree: SearchTree) -> list[Node]:
    """Scored nodes that can be improved, feasible ones first, best first (ties: created first). An
    infeasible node stays improvable (a child may repair it: mix replay data in), after every feasible one."""
    nodes = [tree.nodes[nid] for nid in tree.order]
    nodes = [n for n in nodes if n.status == "evaluated" and is_number(n.score)]
    sign = -1.0 if tree.higher_is_better else 1.0
    idx = {nid: i for i, nid in enumerate(tree.order)}
    return sorted(nodes, key=lambda n: (n.infeasible is not None, sign * n.score, idx[n.node_id]))


def _greedy(tree: SearchTree, pend: Counter, p: Mapping[str, Any], rng: random.Random, drafts: int):
    if drafts < int(p["num_drafts"]):
        return None, "draft", (), f"drafts {drafts} < {p['num_drafts']}"
    mdd = int(p["max_debug_depth"])
    if rng.random() < float(p["debug_prob"]):
        leaves = [tree.nodes[nid] for nid in tree.order]
        leaves = [n for n in leaves if n.status == "failed" and n.debug_depth < mdd
                  and not tree.children.get(n.node_id) and not pend[n.node_id]]
        if leaves:
            n = rng.choice(leaves)
            return n.node_id, "debug", (), f"debug failed leaf (debug depth {n.debug_depth} < {mdd})"
    return _improve_best_free(tree, pend, "improve best free node")


def _best_first(tree: SearchTree, pend: Counter, p: Mapping[str, Any], drafts: int):
    if drafts < int(p["num_drafts"]):
        return None, "draft", (), f"drafts {drafts} < {p['num_drafts']}"
    return _improve_best_free(tree, pend, "best free node")


def _improve_best_free(tree: SearchTree, pend: Counter, why: str):
    """Improve the best scored node nobody is working on; draft when there is none."""
    ranked = _ranked(tree)
    scores = tuple((n.node_id, float(n.score)) for n in ranked[:10])
    for n in ranked:
        if not pend[n.node_id]:
            return n.node_id, "improve", scores, f"{why} ({n.score:g})"
    return None, "draft", scores, "no free scored node: drafting"


def policy_params(tree: SearchTree, policy: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then SearchStarted.policy_params, then ``overrides``."""
    if policy not in DEFAULTS:
        raise PolicyError(f"unknown policy {policy!r} (known: {', '.join(DEFAULTS)})")
    out = dict(DEFAULTS[policy])
    out.update(tree.started.policy_params)
    out.update(overrides or {})
    return out


def select(
    tree: SearchTree,
    seed: int | None = None,
    *,
    policy: str | None = None,
    pending: Iterable[str | None] = (),
    params: Mapping[str, Any] | None = None,
    busy: Iterable[str | None] = (),
    virtual_loss: bool = True,
) -> Decision:
    """The next decision. ``seed`` defaults to the search's (SearchStarted.seed), ``policy`` to its policy.

    ``pending``: decisions made but not yet in ``tree`` (they advance the decision index);
    ``busy``: targets whose recorded children are still being proposed or trained (virtual loss
    only: they do not change the index, so decision ids stay unique).
    ``virtual_loss=False`` (mcts): work with no result yet does not count as a visit worth 0, so the
    decision follows the results in hand, even onto a node that is busy. A driver asks for it in a
    trial budget's last round (:func:`trex.orchestrate.rules.last_round`), where spreading parallel
    work over other lines has no trials left to pay off, and waits when the decision edits a busy
    parent."""
    seed = tree.seed if seed is None else seed
    name = (policy or tree.policy or "mcts").replace("-", "_")
    p = policy_params(tree, name, params)
    pending, busy = tuple(pending), tuple(busy)
    pend = pending_targets(tree, pending + busy)
    drafts = draft_count(tree, pending)
    index = tree.n_decisions + len(pending)
    rng = _rng(seed, index)
    if name == "mcts":
        node_id, op, scores, reason = _mcts(tree, pend, p, pending + busy, drafts, virtual_loss)
    elif name == "greedy":
        node_id, op, scores, reason = _greedy(tree, pend, p, rng, drafts)
    else:
        node_id, op, scores, reason = _best_first(tree, pend, p, drafts)
    return Decision(node_id, op, name, seed, index, _decision_id(tree, seed, index), scores, reason)


def select_many(tree: SearchTree, k: int, seed: int | None = None, **kw: Any) -> list[Decision]:
    """K decisions for K idle workers: each one sees the previous ones as pending."""
    out: list[Decision] = []
    pending = list(kw.pop("pending", ()))
    for _ in range(k):
        d = select(tree, seed, pending=pending, **kw)
        out.append(d)
        pending.append(d.node_id)
    return out
