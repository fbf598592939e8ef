"""Selection policies (MCTS/UCT, greedy, best-first), virtual loss and budget checks."""
from __future__ import annotations

import math

import pytest

from tests.plugins.search_fixtures import evaluated, failed
from trex.events.evaluation import MetricRecorded
from trex.events.plans import PlanProposed
from trex.events.search import Budget
from trex.events.trials import TrialFinished, TrialStarted
from trex.search import apply, budget_check, fold, mcts_stats, select, select_many
from trex.search.tree import still_learning
from trex.search.policy import UNVISITED, PolicyError


def mcts_tree(started, *extra, **params):
    """Three scored drafts a (0.9), b (0.5), c (0.1); classic UCT (``unvisited_first``) unless ``params`` say."""
    cfg = {"num_drafts": 3, "unvisited_first": True, **params}
    return fold([started(policy="mcts", seed=5, policy_params=cfg), *evaluated("a", None, 0.9), *evaluated("b", None, 0.5),
                 *evaluated("c", None, 0.1), *extra])


def test_mcts_drafts_first(started):
    t = fold([started(policy="mcts"), *evaluated("a", None, 0.9)])
    d = select(t)
    assert (d.node_id, d.operator, d.policy) == (None, "draft", "mcts")


def test_mcts_picks_unvisited_child_before_revisiting(started):
    t = mcts_tree(started)
    d = select(t)
    assert (d.node_id, d.operator) == ("a", "improve")
    assert dict(d.scores) == {"a": UNVISITED, "b": UNVISITED, "c": UNVISITED}
    # a was expanded (and its child was even better): b and c are still unvisited and come first
    t = mcts_tree(started, *evaluated("a1", "a", 1.0))
    assert select(t).node_id == "b"
    t = mcts_tree(started, *evaluated("a1", "a", 1.0), *evaluated("b1", "b", 0.2))
    assert select(t).node_id == "c"


def learned(node_id, parent_id, score, first_loss=2.0, final_loss=0.1):
    """An evaluated node with its training curve (final / first < 0.15: it fitted its rows)."""
    evs = evaluated(node_id, parent_id, score)
    evs[2] = TrialFinished(node_id=node_id, trial_id=f"t-{node_id}", adapter=f"a-{node_id}",
                           train_metrics={"first_loss": first_loss, "final_loss": final_loss})
    return evs


def test_mcts_improves_the_strongest_draft_first_its_own_score_being_its_first_visit(started):
    """By default a trained node's result is its first visit: the best draft is improved first, not the
    first created (classic UCT's +inf for unexpanded children spent a small budget on weak drafts)."""
    t = fold([started(policy="mcts", seed=5, policy_params={"num_drafts": 3}), *learned("a", None, 0.1),
              *learned("b", None, 0.9), *learned("c", None, 0.5)])
    d = select(t)
    assert (d.node_id, d.operator) == ("b", "improve")
    s = dict(d.scores)
    assert s["b"] == pytest.approx(1.0 + math.sqrt(math.log(3))) and s["a"] == pytest.approx(math.sqrt(math.log(3)))


def test_mcts_gives_a_node_still_learning_the_gain_bonus(started):
    """a scores a little below b, but its loss was still falling (0.9 of its start): evidence that it can
    still gain, worth ``gain_bonus`` on its UCT; without the bonus b is taken."""
    evs = [*learned("a", None, 0.8, final_loss=1.8), *learned("b", None, 0.9), *learned("c", None, 0.1)]
    t = fold([started(policy="mcts", seed=5, policy_params={"num_drafts": 3}), *evs])
    assert still_learning(t, t.nodes["a"]) and not still_learning(t, t.nodes["b"])
    d = select(t)
    s = dict(d.scores)
    assert d.node_id == "a" and s["a"] == pytest.approx(0.875 + math.sqrt(math.log(3)) + 0.25)
    t0 = fold([started(policy="mcts", seed=5, policy_params={"num_drafts": 3, "gain_bonus": 0.0}), *evs])
    assert select(t0).node_id == "b"


def test_mcts_deepens_a_line_that_gains_instead_of_widening_its_parent(started):
    """b's child b1 beat b: the search goes down into b1 (depth 2) where widening would have made b a
    second child; with ``deepen_on_gain`` off it widens b."""
    evs = [*learned("a", None, 0.1), *learned("b", None, 0.6), *learned("c", None, 0.2),
           *learned("b1", "b", 0.9)]
    t = fold([started(policy="mcts", seed=5, policy_params={"num_drafts": 3}), *evs])
    d = select(t)
    assert (d.node_id, d.operator) == ("b1", "improve") and "gained" in d.reason
    t0 = fold([started(policy="mcts", seed=5, policy_params={"num_drafts": 3, "deepen_on_gain": False}), *evs])
    assert (select(t0).node_id, select(t0).operator) == ("b", "improve")


def test_mcts_drafts_again_while_no_scored_draft_beats_the_base_model(started):
    """Three drafts scored no better than the base model (0.5): no line is known to gain, so the search
    explores another draft instead of improving one; once a draft beats the base it is improved."""
    base = MetricRecorded(node_id="base", name="acc", value=0.5, primary=True)
    evs = [base, *learned("a", None, 0.5), *learned("b", None, 0.3), *learned("c", None, 0.4)]
    t = fold([started(policy="mcts", seed=5, policy_params={"num_drafts": 3}), *evs])
    d = select(t)
    assert (d.node_id, d.operator) == (None, "draft") and "beats the base model" in d.reason
    t = fold([started(policy="mcts", seed=5, policy_params={"num_drafts": 3}), *evs, *learned("d", None, 0.6)])
    assert (select(t).node_id, select(t).operator) == ("d", "improve")


def test_mcts_redrafts_only_while_no_node_anywhere_beats_the_base_and_no_draft_still_learns(started):
    """A debugged child that beats the base model (0.9 > 0.5) is improved, though every draft is below
    it; a draft below the base whose loss still falls is continued rather than drafted around; and
    re-drafting stops at twice ``num_drafts`` drafts."""
    from trex.events.trials import TrialProgressed

    base = MetricRecorded(node_id="base", name="acc", value=0.5, primary=True)
    cfg = {"num_drafts": 3}
    evs = [base, *learned("a", None, 0.2), *learned("b", None, 0.3), *learned("c", None, 0.4),
           *learned("a1", "a", 0.9)]
    d = select(fold([started(policy="mcts", seed=5, policy_params=cfg), *evs]))
    assert d.operator == "improve"
    falling = [TrialProgressed(node_id="c", trial_id="t-c", step=10 * (i + 1), loss=x)
               for i, x in enumerate([6.0, 4.0, 2.3, 1.6, 1.5, 1.2, 0.9, 0.6, 0.5, 0.3, 0.25, 0.2])]
    evs = [base, *learned("a", None, 0.2), *learned("b", None, 0.3), *learned("c", None, 0.4)[:2], *falling,
           *learned("c", None, 0.4)[2:]]
    t = fold([started(policy="mcts", seed=5, policy_params=cfg), *evs])
    assert still_learning(t, t.nodes["c"]) and select(t).operator == "improve"
    six = [base] + [e for i, x in enumerate((0.1, 0.2, 0.3, 0.4, 0.2, 0.1)) for e in learned(f"d{i}", None, x)]
    assert select(fold([started(policy="mcts", seed=5, policy_params=cfg), *six])).operator == "improve"


def test_a_retried_trial_is_judged_by_its_last_curve_only(started):
    """The fold keeps every attempt's progress; the trend reads only the last run of steps: a stalled
    retry after a falling first attempt is not still learning."""
    from trex.events.trials import TrialProgressed

    first = [6.0, 5.0, 4.5, 4.0, 3.5, 3.0]
    retry = [1.6, 1.6, 1.62, 1.59, 1.6, 1.61, 1.6, 1.6, 1.61]
    prog = [TrialProgressed(node_id="a", trial_id="t-a", step=10 * (i + 1), loss=x) for i, x in enumerate(first)]
    prog += [TrialProgressed(node_id="a", trial_id="t-a2", step=10 * (i + 1), loss=x) for i, x in enumerate(retry)]
    evs = learned("a", None, 0.4)
    t = fold([started(policy="mcts"), *evs[:2], *prog, *evs[2:]])
    middle, last = t.nodes["a"].loss_trend
    assert abs(middle - 1.6) < 0.02 and abs(last - 1.6) < 0.02 and not still_learning(t, t.nodes["a"])


def test_mcts_backs_values_up(started):
    t = mcts_tree(started, *evaluated("a1", "a", 0.7), *failed("a2", "a"), *evaluated("a11", "a1", 0.3),
                  PlanProposed(node_id="b1", parent_id="b", plan={}), TrialStarted(node_id="b1", trial_id="t"))
    st = mcts_stats(t)
    assert (st["a"].visits, st["a"].scored, st["a"].expansions) == (4, 3, 2)
    assert st["a"].score_sum == pytest.approx(0.9 + 0.7 + 0.3)
    assert (st["a1"].visits, st["a1"].scored, st["a1"].score_sum) == (2, 2, pytest.approx(1.0))
    assert (st["a2"].visits, st["a2"].scored) == (1, 0)  # a failure is a visit worth nothing
    assert (st["b"].visits, st["b"].scored) == (2, 1)  # the running child is a pending visit (virtual loss)
    assert (st[None].visits, st[None].scored, st[None].expansions) == (7, 5, 3)
    assert st[None].score_sum == pytest.approx(0.9 + 0.5 + 0.1 + 0.7 + 0.3)
    st2 = mcts_stats(t, pending=["a1", None])
    assert st2["a1"].visits == 3 and st2["a"].visits == 5 and st2[None].visits == 9 and st2["a1"].expansions == 2


def test_mcts_uct_exploits_and_explores(started):
    # every draft expanded; a's subtree is strong, c's weak, b's the least visited
    base = [*evaluated("a1", "a", 0.9), *evaluated("a2", "a", 0.8), *evaluated("b1", "b", 0.5),
            *evaluated("c1", "c", 0.1), *evaluated("c2", "c", 0.1)]
    exploit = select(mcts_tree(started, *base, c_uct=0.0, pw_k=0.1))
    s = dict(exploit.scores)
    # Q = mean of min-max normalised scores over the subtree: a = (1 + 1 + 0.875) / 3, b = 0.5, c = 0
    assert (s["a"], s["b"], s["c"]) == (pytest.approx(2.875 / 3), pytest.approx(0.5), pytest.approx(0.0))
    assert (exploit.node_id, exploit.operator) == ("a1", "improve")  # then a's first unexpanded child
    assert exploit.reason.startswith("root: uct 0.9583 -> a: unexpanded child a1")
    explore = select(mcts_tree(started, *base, c_uct=100.0, pw_k=0.1))
    s = dict(explore.scores)
    ln8 = math.log(8)
    assert s["b"] == pytest.approx(0.5 + 100 * math.sqrt(ln8 / 2))
    assert s["a"] == pytest.approx(2.875 / 3 + 100 * math.sqrt(ln8 / 3))
    assert explore.node_id == "b1"


def test_mcts_virtual_loss_spreads_parallel_workers(started):
    t = mcts_tree(started)
    ds = select_many(t, 3)
    assert [d.node_id for d in ds] == ["a", "b", "c"]
    assert [d.index for d in ds] == [0, 1, 2] and len({d.decision_id for d in ds}) == 3
    # the same, derived from the tree: a running child of a, and a recorded decision on b
    t2 = mcts_tree(started, PlanProposed(node_id="a1", parent_id="a", plan={}),
                   TrialStarted(node_id="a1", trial_id="t"))
    t2 = apply(t2, select(t2).to_event())
    assert t2.open_decisions and list(t2.open_decisions.values()) == ["b"]
    assert select(t2).node_id == "c"


def test_mcts_debugs_failed_node_within_depth(started):
    t = fold([started(policy="mcts", policy_params={"num_drafts": 1}), *failed("a", None)])
    d = select(t)
    assert (d.node_id, d.operator) == ("a", "debug")
    chain = [*failed("a", None), *failed("a1", "a", "debug"), *failed("a2", "a1", "debug"),
             *failed("a3", "a2", "debug")]
    t = fold([started(policy="mcts", policy_params={"num_drafts": 1, "max_debug_depth": 3}), *chain])
    assert t.nodes["a3"].debug_depth == 3
    d = select(t)
    assert (d.node_id, d.operator) == (None, "draft")  # nothing left to expand below: draft again


def test_select_is_deterministic_given_tree_and_seed(started):
    t = mcts_tree(started, *evaluated("a1", "a", 0.7), *failed("b1", "b"))
    for policy in ("mcts", "greedy", "best_first"):
        assert select(t, policy=policy) == select(t, policy=policy)
    g = [select(t, seed=s, policy="greedy", params={"num_drafts": 1, "debug_prob": 0.5}).operator for s in range(40)]
    assert set(g) == {"debug", "improve"}  # the seed matters...
    g2 = [select(t, seed=s, policy="greedy", params={"num_drafts": 1, "debug_prob": 0.5}).operator for s in range(40)]
    assert g == g2  # ...and decides


def greedy_tree(started, *evs, **params):
    cfg = {"num_drafts": 2, **params}
    return fold([started(policy="greedy", seed=1, policy_params=cfg), *evs])


def test_greedy_drafts_until_k_drafts(started):
    t = greedy_tree(started, *evaluated("a", None, 0.5))
    assert (select(t).node_id, select(t).operator) == (None, "draft")
    # a draft in flight counts: no third draft for a second worker
    ds = select_many(greedy_tree(started, *evaluated("a", None, 0.5), *evaluated("b", None, 0.7)), 2,
                     params={"debug_prob": 0.0})
    assert [(d.node_id, d.operator) for d in ds] == [("b", "improve"), ("a", "improve")]
    ds = select_many(t, 2, params={"debug_prob": 0.0})
    assert [(d.node_id, d.operator) for d in ds] == [(None, "draft"), ("a", "improve")]


def test_greedy_debugs_failed_leaf_then_improves_best(started):
    evs = [*evaluated("a", None, 0.5), *evaluated("b", None, 0.7), *failed("c", "a")]
    d = select(greedy_tree(started, *evs, debug_prob=1.0))
    assert (d.node_id, d.operator) == ("c", "debug")
    d = select(greedy_tree(started, *evs, debug_prob=0.0))
    assert (d.node_id, d.operator) == ("b", "improve") and d.scores[0] == ("b", 0.7)
    # debug depth bound: c's chain of debugs is at the limit, so improve the best instead
    deep = [*evs, *failed("c1", "c", "debug"), *failed("c2", "c1", "debug")]
    d = select(greedy_tree(started, *deep, debug_prob=1.0, max_debug_depth=2))
    assert (d.node_id, d.operator) == ("b", "improve")
    # a failed node that already has a child is not a leaf
    d = select(greedy_tree(started, *evs, *evaluated("c1", "c", 0.1, "debug"), debug_prob=1.0))
    assert d.operator == "improve"


def test_best_first_picks_best_free_node(started):
    evs = [*evaluated("a", None, 0.5), *evaluated("b", "a", 0.8), *evaluated("c", "a", 0.6), *failed("d", "b")]
    t = fold([started(policy="best_first"), *evs])
    ds = select_many(t, 4)
    assert [(d.node_id, d.operator) for d in ds] == [("b", "improve"), ("c", "improve"), ("a", "improve"),
                                                     (None, "draft")]
    t = fold([started(policy="best_first", metric_direction="min"), *evs])
    assert select(t).node_id == "a"
    assert select(fold([started(policy="best_first")])).operator == "draft"


def test_unknown_policy_is_an_error(started):
    with pytest.raises(PolicyError):
        select(fold([started()]), policy="random_walk")


def test_budget_whichever_first(started):
    t = fold([started(budget=Budget(max_trials=3, max_seconds=100, max_compute_seconds=2.5, max_tokens=10**6)),
              *evaluated("a", None, 0.5, compute=1.0)])
    assert budget_check(t) is None and budget_check(t, 99.0) is None
    ex = budget_check(t, 100.0)
    assert (ex.kind, ex.limit, ex.used) == ("seconds", 100.0, 100.0)
    t2 = fold([*evaluated("b", None, 0.1, compute=2.0)], start=t)
    ex = budget_check(t2, 5.0)
    assert (ex.kind, ex.used) == ("compute_seconds", 3.0)
    t3 = fold([*evaluated("c", None, 0.1, compute=0.0)], start=t2)
    assert budget_check(t3).kind == "trials"  # 3 trials started: checked before compute
    assert budget_check(fold([started()])) is None  # no limits


def test_budget_tokens(started):
    from trex.events.plans import LlmCallMade

    t = fold([started(budget=Budget(max_tokens=100)),
              LlmCallMade(call_id="c", purpose="p", backend="b", model="m", prompt_hash="h", response="",
                          prompt_tokens=90, completion_tokens=10)])
    ex = budget_check(t)
    assert (ex.kind, ex.used, ex.limit) == ("tokens", 100.0, 100.0)


def test_deep_chains_need_no_recursion(started):
    evs = [started(policy="mcts", policy_params={"num_drafts": 1, "pw_k": 0.01}),
           *evaluated("n0", None, 0.0)]
    for i in range(1, 3000):
        evs += evaluated(f"n{i}", f"n{i - 1}", i / 3000)
    t = fold(evs)
    assert t.nodes["n2999"].depth == 3000 and t.best_node_id == "n2999"
    st = mcts_stats(t)
    assert st["n0"].visits == 3000 and st[None].scored == 3000
    d = select(t)
    assert d.node_id == "n2999" and d.operator == "improve"  # the descent walks the whole chain
    for policy in ("greedy", "best_first"):
        assert select(t, policy=policy, params={"num_drafts": 1, "debug_prob": 0}).node_id == "n2999"


def test_busy_targets_add_virtual_loss_without_changing_the_decision_index(started):
    """The actors' Conductor passes nodes being worked on as ``busy``: ids stay unique per index."""
    from trex.search import fold, select

    from tests.plugins.search_fixtures import evaluated

    tree = fold([started(policy="greedy")] + evaluated("n1", None, 0.9) + evaluated("n2", None, 0.5)
                + evaluated("n3", None, 0.1))
    plain = select(tree, policy="best_first", params={"num_drafts": 1})
    busy = select(tree, policy="best_first", params={"num_drafts": 1}, busy=["n1"])
    assert plain.decision_id == busy.decision_id and plain.index == busy.index == tree.n_decisions
    assert plain.node_id == "n1" and busy.node_id == "n2"  # n1 is being improved already
    with_pending = select(tree, policy="best_first", params={"num_drafts": 1}, pending=["n1"])
    assert with_pending.index == tree.n_decisions + 1 and with_pending.decision_id != plain.decision_id


def test_mcts_explores_less_as_the_trial_budget_runs_out(started):
    """The demo's tree: a's continuation a1 gained (0.105 -> 0.245); b (0.145) was never improved. With
    two of six trials left, UCT's exploration is scaled by a third and the descent follows the gaining
    line (a, then a1) instead of widening to b, which full exploration picks."""
    def tree(**params):
        return fold([started(policy="mcts", seed=5, budget=Budget(max_trials=6),
                             policy_params={"num_drafts": 3, **params}),
                     *evaluated("a", None, 0.105), *evaluated("b", None, 0.145), *evaluated("c", None, 0.05),
                     *evaluated("a1", "a", 0.245)])

    assert select(tree(horizon=False)).node_id == "b"
    d = select(tree())
    assert (d.node_id, d.operator) == ("a1", "improve")
    s = dict(d.scores)
    qa = ((0.105 - 0.05) / 0.195 + 1.0) / 2
    assert s["a"] == pytest.approx(qa + (2 / 6) * math.sqrt(math.log(4) / 2))
    # with the last two trials handed out (pending), no exploration is left at all
    assert dict(select(tree(), pending=[None, None]).scores)["a"] == pytest.approx(qa)


def test_mcts_drafts_at_most_a_third_of_a_trial_budget_before_improving(started):
    """Six trials and three drafts left the demo's best line two continuations (test 0.84, still
    learning). Drafts before any improve: num_drafts, at most a third of the budget (rounded up)."""
    def tree(trials, *nodes):
        return fold([started(policy="mcts", seed=5, budget=Budget(max_trials=trials),
                             policy_params={"num_drafts": 3}), *nodes])

    two = [*evaluated("a", None, 0.17), *evaluated("b", None, 0.03)]
    assert select(tree(6, *two)).operator == "improve"  # 2 drafts of a 6-trial budget: improve now
    assert (select(tree(6, *evaluated("a", None, 0.17))).node_id, select(tree(6)).operator) == (None, "draft")
    assert select(tree(10, *two)).operator == "draft"  # a budget of ten keeps three drafts
    assert select(tree(2, *evaluated("a", None, 0.17))).operator == "improve"


def test_mcts_root_widens_to_at_most_a_third_of_a_trial_budget(started):
    """Two drafts, a improved once (a1 in flight), b twice: progressive widening alone drafts a third
    time on the fifth visit (ceil(sqrt(5)) = 3 > 2 drafts). With six trials a third of the budget is two
    drafts, so the descent improves a line; with ten (a third: four) the root still widens, and without
    a trial budget it widens as progressive widening allows."""
    from trex.search.policy import max_drafts

    nodes = [*evaluated("a", None, 0.17), *evaluated("b", None, 0.03), *evaluated("b1", "b", 0.02),
             *evaluated("b2", "b", 0.01), *evaluated("a1", "a", 0.4)[:2]]

    def tree(budget):
        return fold([started(policy="mcts", seed=5, budget=budget, policy_params={"num_drafts": 2}), *nodes])

    six, ten, free = tree(Budget(max_trials=6)), tree(Budget(max_trials=10)), tree(Budget(max_seconds=600))
    assert (max_drafts(six, {"num_drafts": 2}), max_drafts(ten, {"num_drafts": 2})) == (2, 4)
    assert select(six, params={"horizon": False}).operator == "improve"
    assert select(ten, params={"horizon": False}).operator == "draft"
    assert select(free).operator == "draft"


def test_without_virtual_loss_the_last_round_follows_the_results_in_hand(started):
    """The demo's fifth decision: n1 (0.03) -> n3 (0.2), n2 (0.135) with its continuation n4 in flight.
    Virtual loss counts n4 as a visit worth 0, so the descent continues the weaker line (n3); without
    it (a trial budget's last round) it goes to n2, whose line the scores in hand favour — an edit of a
    busy parent, which the driver then waits on."""
    t = fold([started(policy="mcts", seed=5, budget=Budget(max_trials=6), policy_params={"num_drafts": 3}),
              *evaluated("n1", None, 0.03), *evaluated("n2", None, 0.135), *evaluated("n3", "n1", 0.2),
              *evaluated("n4", "n2", 0.5)[:2]])
    assert select(t).node_id == "n3"
    d = select(t, virtual_loss=False)
    assert (d.node_id, d.operator) == ("n2", "improve")
    assert mcts_stats(t, virtual_loss=False)["n2"].visits == 1 and mcts_stats(t)["n2"].visits == 2
