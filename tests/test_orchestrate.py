"""The rules both drivers share: fold-held counters, ids, budget, retries, recovery (no Ray, no training)."""
from __future__ import annotations

from tests.plugins.search_fixtures import evaluated
from trex.events.evaluation import EvaluationFinished, MetricRecorded
from trex.events.plans import PlanProposed, PlanRejected, ProposalFailed
from trex.events.search import Budget, NodeSelected, SearchFinished, SearchResumed
from trex.events.trials import TrialAbandoned, TrialDispatchFailed, TrialReused, TrialStarted
from trex.orchestrate.recovery import (
    Abandon, Evaluate, EvaluateBase, Reattach, Repropose, Train, needs_resume, recovery_plan,
)
from trex.orchestrate.rules import (
    MAX_REJECTIONS_IN_A_ROW, exhausted, finish_events, may_retry_dispatch, may_retry_proposal, next_node_id,
    stop_reason, trials_used,
)
from trex.search import fold


def _tree(started, *events, **kw):
    return fold([started(**kw), *events])


def test_fold_holds_base_score_open_trials_and_outputs(started):
    t = _tree(started, MetricRecorded(node_id="base", name="acc", value=0.25, primary=True),
              MetricRecorded(node_id="base", name="add_acc", value=0.9),
              EvaluationFinished(node_id="base", eval_id="e0", backend="cpu", n_examples=4, outputs_artifact="o0"),
              *evaluated("n1", None, 0.5)[:2], TrialStarted(node_id="n1", trial_id="t-x"),
              TrialAbandoned(node_id="n1", trial_id="t-n1"))
    assert t.base_score == 0.25 and dict(t.base_metrics) == {"acc": 0.25, "add_acc": 0.9}
    assert "base" not in t.nodes and t.ignored == 0
    assert t.nodes["n1"].open_trials == ("t-x",)
    t = fold([*evaluated("n2", None, 0.7)[:-1],
              EvaluationFinished(node_id="n2", eval_id="e", backend="cpu", n_examples=4, outputs_artifact="o/n2")],
             start=t)
    assert t.nodes["n2"].open_trials == () and t.nodes["n2"].outputs == ("o/n2",)


def test_rejections_in_a_row_come_from_the_fold(started):
    rej = [PlanRejected(parent_id=None, reason="junk", decision_id=f"d{i}") for i in range(MAX_REJECTIONS_IN_A_ROW)]
    t = _tree(started, *rej[:2])
    assert t.rejections_in_a_row == 2 and stop_reason(t, 0.0) is None
    t = fold([*evaluated("n1", None, 0.1)], start=t)
    assert t.rejections_in_a_row == 0  # a trial that ran resets the count
    t = fold(rej, start=t)
    assert "invalid plans in a row" in stop_reason(t, 0.0)
    # a plan refused before its trial (contaminated data, an executor failing twice) could not be tried
    # either: proposed-then-refused plans, over and over, end the search rather than spin forever
    refused = [e for i in range(MAX_REJECTIONS_IN_A_ROW) for e in (
        PlanProposed(node_id=f"r{i}", parent_id=None, plan={}), PlanRejected(node_id=f"r{i}", reason="overlap"))]
    t2 = _tree(started, *refused)
    assert t2.rejections_in_a_row == MAX_REJECTIONS_IN_A_ROW and stop_reason(t2, 0.0) is not None
    # ... and a node-level refusal does not close an unrelated open decision (old events' fallback)
    from trex.search import select

    d = select(t2)
    t3 = fold([d.to_event(), PlanRejected(node_id="r0", reason="again")], start=t2)
    assert d.decision_id in t3.open_decisions


def test_dispatch_and_proposal_failures_survive_a_restart(started):
    t = _tree(started, PlanProposed(node_id="n1", parent_id=None, plan={}), TrialDispatchFailed(node_id="n1"))
    assert may_retry_dispatch(t.nodes["n1"])
    t = fold([TrialDispatchFailed(node_id="n1")], start=t)
    assert not may_retry_dispatch(t.nodes["n1"])
    t = fold([ProposalFailed(decision_id="d1")] * 2, start=t)
    assert may_retry_proposal(t, "d1")
    t = fold([ProposalFailed(decision_id="d1")], start=t)
    assert not may_retry_proposal(t, "d1") and may_retry_proposal(t, "d2")


def test_reused_results_take_a_trials_place_in_the_budget(started):
    t = _tree(started, *evaluated("n1", None, 0.5),
              PlanProposed(node_id="n2", parent_id=None, plan={}),
              TrialReused(node_id="n2", plan_hash="h", adapter="a-n1", source_search_id="s", source_node_id="n1"),
              budget=Budget(max_trials=2))
    assert (t.trials, trials_used(t)) == (1, 2)
    ex = exhausted(t, 1.0)
    assert ex is not None and (ex.kind, ex.used) == ("trials", 2.0)
    evs = finish_events(t, 1.0)
    assert [type(e).__name__ for e in evs] == ["BudgetExhausted", "SearchFinished"]
    assert evs[1].best_node_id == "n1" and evs[1].reason == "budget exhausted: trials"
    # what a driver has in hand counts before it is started
    t1 = _tree(started, budget=Budget(max_trials=2))
    assert stop_reason(t1, 0.0, committed=1) is None and stop_reason(t1, 0.0, committed=2) is not None


def test_node_ids_are_deterministic(started):
    t = _tree(started, *evaluated("n1", None, 0.1), *evaluated("n7", None, 0.1), *evaluated("x", None, 0.1))
    assert next_node_id(t) == "n8"
    assert next_node_id(_tree(started)) == "n1"


def test_recovery_plan_covers_every_status(started):
    t = _tree(
        started,
        NodeSelected(decision_id="d1", node_id=None, operator="draft", policy="mcts", seed=0),
        PlanProposed(node_id="n1", parent_id=None, plan={}, decision_id="d1"),  # proposed, never trained
        PlanProposed(node_id="n2", parent_id=None, plan={}),
        TrialStarted(node_id="n2", trial_id="t2"),  # running, its worker gone
        PlanProposed(node_id="n3", parent_id=None, plan={}),
        TrialStarted(node_id="n3", trial_id="t3a"), TrialAbandoned(node_id="n3", trial_id="t3a"),
        TrialStarted(node_id="n3", trial_id="t3b"),  # running on its second attempt: no retry left
        *evaluated("n4", None, 0.3)[:3],  # trained, not scored
        PlanProposed(node_id="n5", parent_id=None, plan={}),
        TrialStarted(node_id="n5", trial_id="t5"),  # running on a live executor
        NodeSelected(decision_id="d9", node_id="n4", operator="improve", policy="mcts", seed=0),  # unanswered
    )
    assert needs_resume(t)
    plan = recovery_plan(t, inflight={f"{t.search_id}:n5"})
    assert plan == [EvaluateBase(), Train("n1", 1), Abandon("n2", ("t2",)), Train("n2", 2),
                    Abandon("n3", ("t3b",)), Evaluate("n4", "a-n4"), Reattach("n5"),
                    Repropose(t.decisions[-1])]
    # after SearchResumed the fold closes open decisions: the plan must be made before it
    assert not any(isinstance(a, Repropose) for a in recovery_plan(fold([SearchResumed()], start=t)))
    assert recovery_plan(fold([SearchFinished(reason="done")], start=t)) == []


def test_a_fresh_search_is_not_resumed(started):
    t = _tree(started)
    assert not needs_resume(t) and recovery_plan(t) == [EvaluateBase()]
    assert needs_resume(fold([MetricRecorded(node_id="base", name="acc", value=0.1, primary=True)], start=t))


def test_held_out_todo_names_the_chosen_node_the_next_k_and_the_anytime_bests_once(started):
    from trex.events.evaluation import HeldOutScored
    from trex.orchestrate.rules import best_after, finish_events, heldout_todo

    evs = []
    for i, score in enumerate([0.3, 0.5, 0.4, 0.2, 0.45, 0.1, 0.9, 0.35, 0.6, 0.05, 0.7], start=1):
        evs += evaluated(f"n{i}", None, score)
    t = _tree(started, *evs)
    assert best_after(t, 5) == "n2" and best_after(t, 10) == "n7" and best_after(t, 50) is None
    todo = heldout_todo(t, 2)
    assert todo == [("n7", 1, (10,)), ("n11", 2, ()), ("n9", 3, ()), ("n2", 4, (5,))]
    assert heldout_todo(t, 0)[0] == ("n7", 1, (10,))
    # scored once: a second pass (a resume) has nothing left; the reported number is the chosen node's test
    done = fold([HeldOutScored(node_id=n, name="exact_match", value=0.5 + r / 100, split="test", primary=True,
                               rank=r, anytime=at) for n, r, at in todo], start=t)
    assert heldout_todo(done, 2) == [] and done.test_score == 0.51 and done.heldout["n2"].anytime == (5,)
    fin = finish_events(done, 0.0)[-1]
    assert fin.best_node_id == "n7" and fin.best_score == 0.9 and fin.test_score == 0.51 and fin.reported == "test"
    # a task without a test split: the reported score is the selection score, and the event says so
    assert finish_events(t, 0.0)[-1].reported == "selection" and finish_events(t, 0.0)[-1].test_score is None


def test_a_blind_draft_past_num_drafts_is_known_so_a_driver_ahead_of_its_executors_can_wait(started):
    """Three drafts in flight, none scored: the policy's next decision is a fourth draft (nothing can be
    expanded); ``blind_draft`` says so. Once a draft is scored the next decision improves it."""
    from trex.orchestrate.rules import blind_draft
    from trex.search import select

    running = [e for nid in ("n1", "n2", "n3") for e in evaluated(nid, None, 0.5)[:2]]
    t = _tree(started, *running, policy="mcts", policy_params={"num_drafts": 3})
    d = select(t)
    assert d.operator == "draft" and blind_draft(t, d)
    t2 = _tree(started, *evaluated("n1", None, 0.5), *running[2:], policy="mcts", policy_params={"num_drafts": 3})
    d2 = select(t2)
    assert (d2.node_id, d2.operator) == ("n1", "improve") and not blind_draft(t2, d2)
    # the drafts a policy wants are never blind
    t3 = _tree(started, *running[:2], policy="mcts", policy_params={"num_drafts": 3})
    assert not blind_draft(t3, select(t3))
    # ... which for mcts is at most a third of a trial budget: with six trials, two drafts in flight make a
    # third blind (the demo drafted it while both were training, and its best line ran out of trials)
    t4 = _tree(started, *running[:4], policy="mcts", policy_params={"num_drafts": 3}, budget=Budget(max_trials=6))
    d4 = select(t4)
    assert d4.operator == "draft" and blind_draft(t4, d4)
    t5 = _tree(started, *running[:4], policy="mcts", policy_params={"num_drafts": 3}, budget=Budget(max_trials=10))
    assert not blind_draft(t5, select(t5))


def test_an_improve_of_a_parent_with_a_child_in_flight_is_blind_so_a_driver_ahead_can_wait(started):
    """The demo: n1 (0.015) scored, its child n4 training, the other drafts training; the next decision
    made ahead of the executors improved n1 again, and again, before n4 said whether the edit worked."""
    from trex.orchestrate.rules import blind_improve
    from trex.search import select

    running = [e for nid in ("n2", "n3") for e in evaluated(nid, None, 0.5)[:2]]
    child = evaluated("n4", "n1", 0.5)[:2]
    t = _tree(started, *evaluated("n1", None, 0.015), *running, *child, policy="mcts",
              policy_params={"num_drafts": 3})
    d = select(t, busy=["n1", None, None])
    assert (d.node_id, d.operator) == ("n1", "improve")
    assert blind_improve(d, ["n1", None, None]) and not blind_improve(d, [None, None])


def test_a_trial_budgets_last_decisions_wait_for_the_results_in_flight(started):
    """Budget 6: five trials committed, two of them still training or being scored — the sixth decision
    waits for their results (an idle executor waits too); with two trials left and one in flight, or
    nothing in flight, or no trial budget, it does not."""
    from trex.events.search import Budget
    from trex.orchestrate.rules import endgame_wait
    from trex.search import fold

    t = fold([started(policy="mcts", budget=Budget(max_trials=6))])
    assert endgame_wait(t, committed=5, in_flight=2) and endgame_wait(t, committed=5, in_flight=1)
    assert not endgame_wait(t, committed=4, in_flight=1)  # two left, one result coming: decide now
    assert not endgame_wait(t, committed=5, in_flight=0)  # nothing to wait for: the search goes on
    assert not endgame_wait(fold([started(policy="mcts", budget=Budget(max_seconds=60))]), committed=5, in_flight=2)


def test_a_continuation_repeats_only_the_same_plan_continuing_the_same_parent(started):
    """A demo's n5 continued n2 at n2's values and was still learning; continuing n5 at those values
    was refused five times as "repeats the plan of n5" and the search ended a trial short. Continuing
    another adapter is new work; the same continuation of the same parent, and any plan from the base
    model proposed twice, are repeats."""
    from trex.orchestrate.rules import repeated_plan

    cont = {"learning_rate": 5e-3, "continue_from_parent": True}
    t = _tree(started, PlanProposed(node_id="n1", parent_id=None, operator="draft", plan={"learning_rate": 5e-3},
                                    plan_hash="h-draft", proposer="rules"),
              PlanProposed(node_id="n2", parent_id="n1", operator="improve", plan=cont, plan_hash="h-cont",
                           proposer="rules"), proposer="rules")
    assert repeated_plan(t, "h-cont", "n2", True) is None  # n2's values, continuing n2: new
    assert repeated_plan(t, "h-cont", "n1", True) == "n2"  # n1 continued that way already
    assert repeated_plan(t, "h-draft", "n2", False) == "n1"  # from the base model: the parent is moot
    assert repeated_plan(t, "h-draft", None, False) == "n1"


def test_a_blind_decision_waits_for_a_score_or_in_a_budgets_last_round_even_with_an_executor_idle(started):
    """Six trials on two executors. A blind decision waits while an evaluation is in flight (the demo's
    third draft was made while its first draft was being scored), and in the last round (two trials left
    to decide) while any result is coming; earlier, with nothing in flight, without a trial budget, or
    with a budget of one round (four trials on four executors: all start at once), it does not."""
    from trex.events.search import Budget
    from trex.orchestrate.rules import late_blind_wait
    from trex.search import fold

    t = fold([started(policy="mcts", budget=Budget(max_trials=6))])
    assert late_blind_wait(t, committed=2, in_flight=2, scoring=1, executors=2)  # a score seconds away
    assert not late_blind_wait(t, committed=2, in_flight=2, scoring=0, executors=2)  # four left: explore
    assert late_blind_wait(t, committed=4, in_flight=1, scoring=0, executors=2)  # the last round
    assert not late_blind_wait(t, committed=4, in_flight=0, scoring=0, executors=2)  # nothing to wait for
    four = fold([started(policy="mcts", budget=Budget(max_trials=4))])  # one round on four executors
    assert not late_blind_wait(four, committed=2, in_flight=2, scoring=0, executors=4)
    assert not late_blind_wait(four, committed=2, in_flight=2, scoring=1, executors=4)
    assert not late_blind_wait(fold([started(policy="mcts", budget=Budget(max_seconds=60))]), committed=5,
                               in_flight=2, scoring=1, executors=2)


def test_the_last_round_of_a_trial_budget_has_no_more_trials_left_than_executors(started):
    from trex.events.search import Budget
    from trex.orchestrate.rules import last_round
    from trex.search import fold

    t = fold([started(policy="mcts", budget=Budget(max_trials=6))])
    assert [last_round(t, c, 2) for c in range(7)] == [False] * 4 + [True] * 3
    assert not last_round(fold([started(policy="mcts", budget=Budget(max_trials=4))]), 3, 4)  # one round
    # six trials on four executors: the last round is what comes after the first, not trials 3 to 6
    assert [last_round(t, c, 4) for c in range(7)] == [False] * 4 + [True] * 3
    assert not last_round(fold([started(policy="mcts", budget=Budget(max_seconds=60))]), 5, 2)
