"""Ids, budget, retries and stopping: the decisions both drivers make the same way.

Ids are deterministic, so a driver that restarts (or the other driver, on the same events)
names the same things the same way and an idempotent append drops what is already stored:

* a node is ``n<k>``, ``k`` one more than the largest ``n<k>`` in the tree;
* a decision's ``NodeSelected`` has event id ``<search>:<decision>``, the plan that answers it
  ``<search>:proposed:<decision>``; a node's training command is ``<search>:<node>``.

Budget: a node whose trial started *or whose result was reused* takes a trial's place (a reused
result is work the search chose; counting it keeps a search that hits the cache from running
forever). A retry of a trial lost to a crash is not a new trial.
"""
from __future__ import annotations

from trex.events.search import BudgetExhausted, SearchFinished
from trex.search.budget import KINDS, budget_used
from trex.search.insight_index import InsightIndex, prior_insights
from trex.search.projection import BASE_NODE  # noqa: F401  (the drivers' name for it)
from trex.search.tree import Node, SearchTree, is_number

MAX_REJECTIONS_IN_A_ROW = 5  # a proposer this stuck ends the search
MAX_TRIAL_ATTEMPTS = 2  # a trial abandoned by a dead worker is retried once, under the same command id
MAX_DISPATCH_ATTEMPTS = 2  # an executor failing before the trial starts: once more, then the plan is refused
MAX_PROPOSAL_ATTEMPTS = 3  # a Researcher dying on the same decision this often: the decision is rejected
MAX_EVAL_ATTEMPTS = 2  # an evaluation that raised (not a recorded EvaluationFailed) is run once more


class ConcurrentRun(RuntimeError):
    """Another driver is running this search (or appended to it while this one was deciding)."""


# ---------------------------------------------------------------------------------------- ids
def next_node_id(tree: SearchTree) -> str:
    return f"n{1 + max((int(n[1:]) for n in tree.order if n[:1] == 'n' and n[1:].isdigit()), default=0)}"


def command_id(search_id: str, node_id: str) -> str:
    return f"{search_id}:{node_id}"


def decision_event_id(search_id: str, decision_id: str) -> str:
    return f"{search_id}:{decision_id}"


def proposal_event_id(search_id: str, decision_id: str) -> str:
    return f"{search_id}:proposed:{decision_id}"


def hypothesis_event_id(search_id: str, decision_id: str) -> str:
    return f"{search_id}:hypothesis:{decision_id}"


# ------------------------------------------------------------------------------------- budget
def trials_used(tree: SearchTree) -> int:
    """Nodes whose trial started plus results reused: what the trial budget counts. A trial lost to a
    crash and retried under the same command is the same trial: it does not use the budget twice."""
    return tree.nodes_tried + tree.trials_reused


def exhausted(tree: SearchTree, elapsed_s: float | None, committed: int | None = None) -> BudgetExhausted | None:
    """The limit used up, or None. ``committed``: trials used plus those the driver has in hand
    (dispatched, ready, being proposed); when given, the trial limit counts those too."""
    used = dict(budget_used(tree, elapsed_s))
    used["trials"] = float(trials_used(tree) if committed is None else committed)
    for kind, key in KINDS:
        limit, u = tree.budget.get(key), used[kind]
        if limit is not None and u is not None and u >= float(limit):
            return BudgetExhausted(kind=kind, limit=float(limit), used=float(trials_used(tree))
                                   if kind == "trials" else u)
    return None


def stop_reason(tree: SearchTree, elapsed_s: float | None, committed: int | None = None) -> str | None:
    """Why no new decision may be made now (None: go on)."""
    ex = exhausted(tree, elapsed_s, committed)
    if ex is not None:
        return f"budget exhausted: {ex.kind}"
    if tree.rejections_in_a_row >= MAX_REJECTIONS_IN_A_ROW:
        return f"the proposer produced {MAX_REJECTIONS_IN_A_ROW} invalid plans in a row"
    return None


def finish_events(tree: SearchTree, elapsed_s: float | None) -> list:
    """What a driver records when nothing is left to run: BudgetExhausted (if one ran out) + SearchFinished."""
    ex = exhausted(tree, elapsed_s)
    reason = (f"budget exhausted: {ex.kind}" if ex is not None else
              f"the proposer produced {MAX_REJECTIONS_IN_A_ROW} invalid plans in a row"
              if tree.rejections_in_a_row >= MAX_REJECTIONS_IN_A_ROW else "nothing left to run")
    best = tree.best
    chosen = tree.chosen
    test = chosen[1].score if chosen is not None and best is not None and chosen[0] == best.node_id else None
    return ([ex] if ex is not None else []) + [SearchFinished(
        reason=reason, best_node_id=best.node_id if best else None, best_score=best.score if best else None,
        test_score=test, reported="test" if test is not None else "selection")]


# ------------------------------------------------------------------------------ proposing ahead
def blind_draft(tree: SearchTree, decision) -> bool:
    """Whether ``decision`` is a draft past the policy's ``num_drafts`` — one made because no node can be
    expanded yet (every draft still training or being scored), or by the root's widening or re-drafting
    rules. A driver proposing ahead of its executors (every executor busy) waits for the results in
    flight instead: the next score may make a node worth improving, and a small budget is not spent on
    drafts no evidence asked for. An idle executor is kept waiting for this only where
    :func:`late_blind_wait` says (a trial budget, a private pool); otherwise the search goes on."""
    from trex.search.policy import DEFAULTS, draft_count, first_drafts, policy_params

    if decision.operator != "draft" or decision.policy not in DEFAULTS:
        return False
    params = policy_params(tree, decision.policy)
    wanted = (first_drafts(tree, params) if decision.policy == "mcts"  # at most a third of a trial budget
              else int(params.get("num_drafts", 0)))
    return draft_count(tree) >= wanted


def blind_improve(decision, busy) -> bool:
    """Whether ``decision`` edits a node that already has a child in flight (``busy``: the parents of
    the plans being proposed, waiting or training). Made ahead of the executors it would choose the
    parent's next edit before the result of the one in flight says whether that direction works (the
    demo improved its weakest draft three times while its best draft's first result was a minute away):
    the driver waits for the results in flight instead, as for a blind draft. An idle executor is kept
    waiting for this only where :func:`late_blind_wait` says."""
    return decision.operator in ("improve", "debug") and decision.node_id is not None and decision.node_id in set(busy)


def endgame_wait(tree: SearchTree, committed: int, in_flight: int) -> bool:
    """Whether the next decision, made while ``in_flight`` trials have no result yet, is one of a trial
    budget's last ones — no more trials left to decide than results still coming (``committed``: trials
    used, dispatched, waiting or being proposed). The driver then waits for those results, even with an
    executor idle: a budget's last trials are worth the most information, and spent before the results
    in flight they follow whichever line is not pending (the demo's sixth trial improved a draft at 0.1
    while the continuation that scored 0.2 was being evaluated). Only a trial budget has an end known
    ahead; the cost is wall time at the end, never a trial."""
    limit = tree.budget.get("max_trials")
    if not in_flight or not isinstance(limit, (int, float)) or isinstance(limit, bool):
        return False
    return float(limit) - committed <= in_flight


def last_round(tree: SearchTree, committed: int, executors: int) -> bool:
    """Whether the next decision is in a trial budget's last round: no more trials left to decide than
    executors (``committed``: trials used, dispatched, waiting or being proposed), after a first round
    (at least as many trials committed as executors). A budget of one round starts every executor at
    once; with many executors for the budget (six trials on four) only the trials after the first
    round count, not most of the budget."""
    limit = tree.budget.get("max_trials")
    return (is_number(limit) and float(limit) > executors
            and committed >= max(float(limit) - executors, executors))


def late_blind_wait(tree: SearchTree, committed: int, in_flight: int, scoring: int, executors: int) -> bool:
    """Whether a blind decision (:func:`blind_draft`, :func:`blind_improve`) waits for the results in
    flight even with an executor idle — with a trial budget of more than one round, when a score is
    being computed (``scoring``: evaluations in flight, the base model's included; an evaluation is
    assumed shorter than a trial, as on every task here), or in the budget's :func:`last_round`
    (``in_flight``: plans being proposed, waiting, training or scored). In the last round the driver
    also decides without virtual loss (``select(..., virtual_loss=False)``): the last trials go where
    the scores in hand say, and one that would edit the best line's parent while the line's child is
    in flight waits for that child instead of spreading to a weaker line.

    The demo's six trials on two executors: an idle executor drafted a third time while the first
    draft was being scored (0.7 s); in the last round it edited the best line's parent a second time
    while the line's continuation was being proposed, or continued a weaker line because the stronger
    one's trial in flight counted as a loss; each time the best line, still learning, ended two
    continuations deep (test 0.84, 0.88). The cost is idle executors, never a trial: the last round
    can run one trial after another, up to ``executors - 1`` trials' time more. A search sharing its
    executors with other searches does not wait (the driver's check): another search can use them."""
    limit = tree.budget.get("max_trials")
    if not in_flight or not is_number(limit) or float(limit) <= executors:
        return False
    return bool(scoring) or last_round(tree, committed, executors)


# ------------------------------------------------------------------------------------ repeats
NO_REPEAT_PROPOSERS = frozenset({"rules", "llm", "llm-notools"})  # the agent's proposers: never a plan twice


def repeated_plan(tree: SearchTree, plan_hash: str, parent_id: str | None = None, continues: bool = False) -> str | None:
    """The node whose plan a new proposal repeats exactly, for a proposer that promises never to
    repeat one (the baselines may: Optuna's TPE does, and a repeat is served from the work cache).
    The proposers check the tree; this is the check of the search itself, for proposals made at the
    same time (two in flight for one parent, neither knowing the other's answer).

    A plan that continues its parent's adapter (``continues``) repeats only the same plan continuing
    the same parent: continuing n5 with the values n5 continued n2 with is new work (a demo refused it
    five times as a repeat of n5 and ended its search a trial short)."""
    if tree.proposer not in NO_REPEAT_PROPOSERS:
        return None
    return next((n.node_id for n in tree.nodes.values() if n.plan_hash == plan_hash
                 and (not continues or n.parent_id == parent_id)), None)


# ------------------------------------------------------------------------------------ retries
def may_retry_trial(node: Node) -> bool:
    return node.trials < MAX_TRIAL_ATTEMPTS


def may_retry_dispatch(node: Node) -> bool:
    """After its TrialDispatchFailed is folded."""
    return node.dispatch_failures < MAX_DISPATCH_ATTEMPTS


def may_retry_proposal(tree: SearchTree, decision_id: str) -> bool:
    """After its ProposalFailed is folded."""
    return tree.proposal_failures.get(decision_id, 0) < MAX_PROPOSAL_ATTEMPTS


def may_retry_evaluation(attempt: int) -> bool:
    return attempt < MAX_EVAL_ATTEMPTS


# ---------------------------------------------------------------------------- what is proposed from
def proposal_context(tree: SearchTree, insights: InsightIndex) -> dict:
    """What the Researcher is told besides the tree, alike in both drivers: for the llm proposer, the
    base score and the insights earlier searches on the task left in force (none when the search is
    kept independent, ``prior_insights: false``, as a benchmark cell is)."""
    if not tree.uses_llm:
        return {}
    prior = prior_insights(insights, tree.task, tree.search_id) if tree.started.prior_insights else {}
    return {"prior_insights": prior, "base": tree.base_score}


# ------------------------------------------------------------------------------- held-out test
def ranked_by_val(tree: SearchTree) -> list[str]:
    """Feasible scored nodes, best validation score first (the tree's direction; NaN never ranks, and a node
    outside the task's constraints is never reported)."""
    scored = [n for n in tree.order if tree.nodes[n].feasible]  # what the fold's best ranks, too
    return sorted(scored, key=lambda n: -tree.nodes[n].score if tree.higher_is_better else tree.nodes[n].score)


ANYTIME_TRIALS = (5, 10)  # the benchmark's anytime points: the val-best node after this many trials


def best_after(tree: SearchTree, trials: int) -> str | None:
    """The node that was best by validation once ``trials`` trials had started (None if the search
    never got that far or nothing was scored by then)."""
    if tree.trials + tree.trials_reused < trials:
        return None
    best = None
    for p in tree.history:
        if p.trials > trials or not is_number(p.score) or not getattr(tree.nodes.get(p.node_id), "feasible", False):
            continue
        if best is None or tree.better(p.score, best[1]):
            best = (p.node_id, p.score)
    return best[0] if best else None


def heldout_todo(tree: SearchTree, k: int) -> list[tuple[str, int, tuple[int, ...]]]:
    """(node, rank by validation, anytime points) to score on the held-out test split before the search
    finishes: the best node by validation (rank 1, the one reported), the next ``k`` for information,
    and the val-best node after each of :data:`ANYTIME_TRIALS` trials (the benchmark's anytime curve;
    only the report reads them). A node already scored (or whose held-out evaluation failed) is never
    scored again, so a resume repeats nothing."""
    ranked = ranked_by_val(tree)
    rank = {n: i for i, n in enumerate(ranked, start=1)}
    want: dict[str, tuple[int, ...]] = {n: () for n in ranked[:1 + max(0, k)]}
    for t in ANYTIME_TRIALS:
        n = best_after(tree, t)
        if n is not None and n in rank:
            want[n] = want.get(n, ()) + (t,)
    return [(n, rank[n], at) for n, at in sorted(want.items(), key=lambda kv: rank[kv[0]]) if n not in tree.heldout]
