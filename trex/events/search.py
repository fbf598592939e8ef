"""Search lifecycle, decisions of the selection policy, budget and forks."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trex.events.base import Event, event

Operator = Literal["draft", "improve", "debug"]


class Budget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    max_trials: int | None = Field(default=None, ge=1)
    max_seconds: float | None = Field(default=None, gt=0)
    max_compute_seconds: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)


@event("SearchStarted")
class SearchStarted(Event):
    task: str
    base_model: str = ""
    proposer: str = "random"
    policy: str = "mcts"
    seed: int = 0
    parallel: int = Field(default=1, ge=1)
    budget: Budget = Budget()
    config: dict[str, Any] = Field(default_factory=dict)


@event("SearchForked")
class SearchForked(Event):
    """First event of a fork: the fork's tree is the parent's prefix up to ``at_seq`` plus its own events."""

    parent_search_id: str
    at_seq: int = Field(ge=1)
    at_node: str | None = None
    budget: Budget | None = None


@event("SearchResumed")
class SearchResumed(Event):
    reason: str = ""


@event("SearchFinished")
class SearchFinished(Event):
    reason: str
    best_node_id: str | None = None
    best_score: float | None = None


@event("BudgetExhausted")
class BudgetExhausted(Event):
    kind: Literal["trials", "seconds", "compute_seconds", "tokens"]
    limit: float
    used: float


@event("NodeSelected")
class NodeSelected(Event):
    """A decision of the selection policy, with the scores that led to it (for auditors)."""

    decision_id: str
    node_id: str | None  # the node to expand; None = the root (a fresh draft)
    operator: Operator
    policy: str
    seed: int
    scores: tuple[tuple[str, float], ...] = ()
    reason: str = ""


@event("NodePruned")
class NodePruned(Event):
    node_id: str
    reason: str
