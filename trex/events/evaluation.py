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
