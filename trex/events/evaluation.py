"""Evaluation of adapters: metrics and the per-example outputs artifact."""
from __future__ import annotations

from pydantic import Field

from trex.events.base import Event, event, upcaster


@event("MetricRecorded")
class MetricRecorded(Event):
    node_id: str
    name: str
    value: float
    primary: bool = False
    split: str = "eval"
    eval_id: str = ""


@event("EvaluationFinished", version=2)
class EvaluationFinished(Event):
    node_id: str
    eval_id: str
    backend: str
    n_examples: int = Field(ge=0)
    outputs_artifact: str = ""
    seconds: float = Field(default=0.0, ge=0)
    adapter: str | None = None  # content hash of the adapter scored (None: the base model)
    base_model: str = ""
    cached: bool = False  # v2: the score was computed before (same adapter, split, decoding) and served again


@event("EvaluationFailed")
class EvaluationFailed(Event):
    node_id: str
    eval_id: str = ""
    reason: str
    message: str = ""


@upcaster("EvaluationFinished", 1)
def upcast_evaluation_finished_v1_v2(d: dict) -> dict:
    """v2 adds ``cached`` (False: every v1 evaluation generated its outputs)."""
    return {**d, "cached": False}


@event("HeldOutScored")
class HeldOutScored(Event):
    """A node's score on a held-out test split, recorded when the search ends (once per node).

    Its own event, never a ``MetricRecorded``: the fold keeps it out of the node's score, metrics
    and evaluation outputs, so no selection, proposal, tool or insight can read it. ``rank``: the
    node's place by validation score when it was scored (1: the node the search chose; the others
    are shown for information, never used to choose)."""

    node_id: str
    name: str
    value: float
    split: str
    primary: bool = False
    rank: int = Field(ge=1)
    anytime: tuple[int, ...] = ()  # trial counts after which this node was the val-best (the report's curve)
    eval_id: str = ""
    n_examples: int = Field(default=0, ge=0)
    outputs_artifact: str = ""
    adapter: str | None = None


@event("HeldOutFailed")
class HeldOutFailed(Event):
    """The held-out evaluation of a node failed; it is not tried again (a node is scored on test once)."""

    node_id: str
    rank: int = Field(ge=1)
    eval_id: str = ""
    reason: str
    message: str = ""
