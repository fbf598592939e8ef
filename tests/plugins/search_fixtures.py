"""Fixtures of the search-tree tests: small hand-made and synthetic searches."""
from __future__ import annotations

import pytest

from trex.events.evaluation import EvaluationFinished, MetricRecorded
from trex.events.plans import PlanProposed
from trex.events.search import SearchStarted
from trex.events.trials import TrialFailed, TrialFinished, TrialStarted
from trex.search.scenario import synthetic_search


def evaluated(node_id: str, parent_id: str | None, score: float, operator: str = "improve",
              compute: float = 1.0) -> list:
    """The events of one node that was proposed, trained and evaluated."""
    op = "draft" if parent_id is None and operator == "improve" else operator
    return [
        PlanProposed(node_id=node_id, parent_id=parent_id, operator=op, plan={"lr": 1e-4}),
        TrialStarted(node_id=node_id, trial_id=f"t-{node_id}"),
        TrialFinished(node_id=node_id, trial_id=f"t-{node_id}", adapter=f"a-{node_id}", compute_seconds=compute),
        MetricRecorded(node_id=node_id, name="acc", value=score, primary=True),
        EvaluationFinished(node_id=node_id, eval_id=f"e-{node_id}", backend="cpu", n_examples=8),
    ]


def failed(node_id: str, parent_id: str | None, operator: str = "improve") -> list:
    op = "draft" if parent_id is None and operator == "improve" else operator
    return [
        PlanProposed(node_id=node_id, parent_id=parent_id, operator=op, plan={"lr": 1.0}),
        TrialStarted(node_id=node_id, trial_id=f"t-{node_id}"),
        TrialFailed(node_id=node_id, trial_id=f"t-{node_id}", reason="nan_loss", log_tail="loss=nan",
                    compute_seconds=2.0),
    ]


@pytest.fixture
def started():
    """A SearchStarted factory: ``started(policy="greedy", seed=3, policy_params={...})``."""

    def make(**kw) -> SearchStarted:
        kw.setdefault("task", "arith-sub")
        return SearchStarted(**kw)

    return make


@pytest.fixture
def synthetic_log(log):
    """A log holding one synthetic search ``s1`` of 40 nodes (about 400 events)."""
    log.append_raw("s1", synthetic_search("s1", 40, seed=7), expected_version=0)
    return log
