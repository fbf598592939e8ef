"""Property tests of the fold: any prefix folds, and batching never changes the tree."""
from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trex.events.evaluation import EvaluationFailed, EvaluationFinished, MetricRecorded
from trex.events.insights import InsightDistilled, InsightRetired
from trex.events.log import EventLog
from trex.events.plans import LlmCallMade, PlanProposed, PlanRejected
from trex.events.search import (
    BudgetExhausted, NodePruned, NodeSelected, SearchFinished, SearchResumed, SearchStarted,
)
from trex.events.trials import (
    TrialAbandoned, TrialFailed, TrialFinished, TrialProgressed, TrialReused, TrialStarted,
)
from trex.search import apply, budget_check, fold, select, tree_hash
from trex.search.scenario import synthetic_search
from trex.search.tree import SearchTree

ids = st.sampled_from(["a", "b", "c", "d"])
parents = st.one_of(st.none(), ids)
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
small = st.floats(min_value=0, max_value=1e6, allow_nan=False)

any_event = st.one_of(
    st.builds(SearchStarted, task=st.just("t"), policy=st.sampled_from(["mcts", "greedy", "best_first"]),
              metric_direction=st.sampled_from(["max", "min"])),
    st.builds(PlanProposed, node_id=ids, parent_id=parents, plan=st.just({"lr": 0.1}),
              operator=st.sampled_from(["draft", "improve", "debug"]),
              decision_id=st.one_of(st.none(), st.sampled_from(["d1", "d2"]))),
    st.builds(PlanRejected, node_id=st.one_of(st.none(), ids), parent_id=parents, reason=st.just("bad")),
    st.builds(NodeSelected, decision_id=st.sampled_from(["d1", "d2"]), node_id=parents,
              operator=st.sampled_from(["draft", "improve", "debug"]), policy=st.just("mcts"), seed=st.just(0)),
    st.builds(TrialStarted, node_id=ids, trial_id=st.just("t")),
    st.builds(TrialProgressed, node_id=ids, trial_id=st.just("t"), step=st.integers(0, 100),
              loss=st.one_of(st.none(), floats)),
    st.builds(TrialFinished, node_id=ids, trial_id=st.just("t"), adapter=st.just("ad"), compute_seconds=small),
    st.builds(TrialFailed, node_id=ids, trial_id=st.just("t"), reason=st.just("oom"), compute_seconds=small),
    st.builds(TrialAbandoned, node_id=ids, trial_id=st.just("t")),
    st.builds(TrialReused, node_id=ids, plan_hash=st.just("h"), adapter=st.just("ad"),
              source_search_id=st.just("o"), source_node_id=st.just("n")),
    st.builds(MetricRecorded, node_id=ids, name=st.sampled_from(["acc", "loss"]), value=floats,
              primary=st.booleans()),
    st.builds(EvaluationFinished, node_id=ids, eval_id=st.just("e"), backend=st.just("cpu"), n_examples=st.just(1)),
    st.builds(EvaluationFailed, node_id=ids, reason=st.just("x")),
    st.builds(NodePruned, node_id=ids, reason=st.just("r")),
    st.builds(InsightDistilled, insight_id=st.sampled_from(["i1", "i2"]), text=st.just("x")),
    st.builds(InsightRetired, insight_id=st.sampled_from(["i1", "i2"])),
    st.builds(LlmCallMade, call_id=st.just("c"), purpose=st.just("p"), backend=st.just("b"), model=st.just("m"),
              prompt_hash=st.just("h"), response=st.just(""), prompt_tokens=st.integers(0, 1000)),
    st.builds(BudgetExhausted, kind=st.just("trials"), limit=st.just(1.0), used=st.just(1.0)),
    st.builds(SearchResumed),
    st.builds(SearchFinished, reason=st.just("done")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(any_event, max_size=40), st.data())
def test_any_prefix_folds_and_any_split_agrees(events, data):
    trees = [SearchTree()]
    for e in events:  # every prefix folds, one event at a time
        trees.append(apply(trees[-1], e))
    whole = fold(events)
    assert tree_hash(trees[-1]) == tree_hash(whole)
    cut = data.draw(st.integers(0, len(events)))
    assert tree_hash(fold(events[cut:], start=fold(events[:cut]))) == tree_hash(whole)
    assert tree_hash(fold(events[:cut])) == tree_hash(trees[cut])
    # the policies and the budget check accept every tree the fold can produce
    for policy in ("mcts", "greedy", "best_first"):
        d = select(whole, policy=policy)
        assert d.node_id is None or d.node_id in whole.nodes
    budget_check(whole, 1.0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.lists(st.integers(1, 40), min_size=1, max_size=12), st.booleans())
def test_tree_is_independent_of_append_batching(seed, sizes, interleave):
    raws = synthetic_search("s", 12, seed=seed)
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as many:
        single = EventLog(one)
        single.append_raw("s", raws, expected_version=0)
        batched = EventLog(many)
        i = k = 0
        while i < len(raws):
            n = sizes[k % len(sizes)]
            batched.append_raw("s", raws[i:i + n], expected_version=i)
            if interleave:  # another search writing in between shifts every global position
                batched.append("other", [SearchStarted(task=f"o{k}")])
            i += n
            k += 1
        a = fold(single.read("s"))
        b = fold(batched.read("s"))
        assert tree_hash(a) == tree_hash(b)
        assert tree_hash(fold(batched.read_records("s"))) == tree_hash(a)
