"""Plans proposed by the Researcher, their rejections, LLM calls and tool calls."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from trex.events.base import Event, event, upcaster
from trex.events.search import Operator


@event("PlanProposed")
class PlanProposed(Event):
    node_id: str
    parent_id: str | None
    operator: Operator = "draft"
    plan: dict[str, Any]
    plan_hash: str = ""
    rationale: str = ""
    proposer: str = ""
    decision_id: str | None = None
    insights: tuple[str, ...] = ()  # insight ids the proposer was given


@event("PlanRejected")
class PlanRejected(Event):
    """A plan that failed validation: recorded, never trained."""

    node_id: str | None = None
    parent_id: str | None = None
    proposer: str = ""
    reason: str
    raw: str = ""
    decision_id: str | None = None


@event("LlmCallMade")
class LlmCallMade(Event):
    call_id: str
    purpose: str
    backend: str
    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    prompt_hash: str
    prompt: str | None = None
    prompt_artifact: str | None = None
    response: str
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    latency_s: float = Field(default=0.0, ge=0)
    attempt: int = Field(default=1, ge=1)
    node_id: str | None = None  # the node the call was made for, when there is one
    decision_id: str | None = None


@event("LlmCallFailed")
class LlmCallFailed(Event):
    call_id: str
    purpose: str
    backend: str
    model: str
    error: str
    response: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    prompt_hash: str = ""
    prompt: str | None = None
    prompt_artifact: str | None = None
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    attempt: int = Field(default=1, ge=1)
    latency_s: float = Field(default=0.0, ge=0)
    node_id: str | None = None
    decision_id: str | None = None


@event("ToolCalled")
class ToolCalled(Event):
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    ok: bool = True
    result: str = ""


@event("ProposalFailed")
class ProposalFailed(Event):
    """The Researcher died or raised while answering a decision; the decision is asked again a few times."""

    decision_id: str
    reason: str = ""


@event("HypothesisStated", version=2)
class HypothesisStated(Event):
    """What a proposal predicts about its node, falsifiably: a named validation metric against a number,
    and the evidence it rests on — ``evidence`` says it in words, ``cites`` names the ``ToolCalled``
    events (their event ids, in this search's stream) whose results it reads. v2 adds ``cites``."""

    node_id: str
    text: str = Field(min_length=1, max_length=1000)
    metric: str = Field(min_length=1, max_length=128)
    op: Literal[">=", ">", "<=", "<"]
    threshold: float = Field(allow_inf_nan=False)
    evidence: str = Field(default="", max_length=2000)
    cites: tuple[str, ...] = Field(default=(), max_length=16)


@upcaster("HypothesisStated", 1)
def upcast_hypothesis_stated_v1_v2(d: dict) -> dict:
    """v1 hypotheses cited their evidence in words only."""
    return {**d, "cites": ()}


@event("HypothesisTested")
class HypothesisTested(Event):
    """The Distiller's verdict on a node's hypothesis, once the node is evaluated: the value it observed."""

    node_id: str
    supported: bool
    observed: float | None = None
    metric: str = ""
