"""Training plans: what the Researcher proposes and the Executor trains.

A :class:`Plan` is frozen, flat-ish and fully range-checked, so that
``Plan.model_json_schema()`` serves as a structured-output schema for an LLM.
Agent output goes through :func:`parse_plan`, which returns a Plan or a rejection
reason (recorded as ``PlanRejected``, never trained).

    plan = Plan(learning_rate=1e-3, max_steps=100, data=recipe_for_task("arith-sub"))
    plan_hash(plan)      # sha256 of the canonical JSON

The Plan's limits are what the Executor can train (hard limits: a plan outside them is rejected).
The search explores a subset of it, declared once in :mod:`trex.propose.space`, a layer above,
which reads :data:`DEFAULT_MAX_STEPS` from here: the one default number of steps per trial.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trex.events.search import DEFAULT_TRIAL_STEPS as DEFAULT_MAX_STEPS  # the one number: TrialSettings.steps's
from trex.recipe import Recipe, Source

TargetModule = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALL_LINEAR: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["lora", "full"] = Field(default="lora", description="LoRA adapter or full fine-tuning")
    lora_rank: int = Field(default=8, ge=1, le=256)
    lora_alpha: float = Field(default=16.0, gt=0, le=1024)
    lora_dropout: float = Field(default=0.0, ge=0, le=0.5)
    target_modules: tuple[TargetModule, ...] = Field(default=("q_proj", "v_proj"), min_length=1, max_length=7)
    learning_rate: float = Field(default=1e-3, gt=0, le=1.0)
    lr_schedule: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0, le=100_000, description="used when warmup_ratio is 0")
    warmup_ratio: float = Field(default=0.0, ge=0, le=0.5, description="fraction of max_steps; overrides warmup_steps")
    weight_decay: float = Field(default=0.0, ge=0, le=1.0)
    max_steps: int | None = Field(default=DEFAULT_MAX_STEPS, ge=1, le=1_000_000, description="optimizer steps; or set epochs")
    epochs: float | None = Field(default=None, gt=0, le=100)
    batch_size: int = Field(default=32, ge=1, le=4096)
    grad_accum: int = Field(default=1, ge=1, le=256)
    max_seq_len: int = Field(default=64, ge=8, le=131_072)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    precision: Literal["fp32", "bf16", "fp16"] = Field(default="bf16", description="GPU precision; CPU trains fp32")
    continue_from_parent: bool = Field(default=False, description="start from the parent node's adapter")
    data: Recipe

    @model_validator(mode="after")
    def _check(self) -> "Plan":
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of max_steps and epochs")
        if len(set(self.target_modules)) != len(self.target_modules):
            raise ValueError("target_modules has duplicates")
        return self


def canonical_plan(plan: Plan) -> dict[str, Any]:
    return plan.model_dump(mode="json")


def plan_hash(plan: Plan) -> str:
    body = json.dumps(canonical_plan(plan), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _fmt_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:8]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "plan"
        parts.append(f"{loc}: {err.get('msg')}")
    more = len(e.errors()) - 8
    return "invalid plan: " + "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse_plan(raw: dict[str, Any] | str | bytes) -> Plan | str:
    """A Plan, or a one-line rejection reason for ``PlanRejected`` (never raises on bad input)."""
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return f"plan is not valid JSON: {e}"
    if not isinstance(raw, dict):
        return f"plan must be a JSON object, not {type(raw).__name__}"
    try:
        return Plan.model_validate(raw)
    except ValidationError as e:
        return _fmt_error(e)
    except (ValueError, TypeError) as e:
        return f"invalid plan: {e}"


def plan_schema() -> dict[str, Any]:
    """JSON schema for structured LLM output."""
    return Plan.model_json_schema()


def example_plan(task: str = "arith-sub", **kw) -> Plan:
    data = kw.pop("data", None) or Recipe(sources=(Source(uri=f"task:{task}/train"),))
    return Plan(data=data, **kw)


def total_warmup(plan: Plan, total_steps: int) -> int:
    return int(plan.warmup_ratio * total_steps) if plan.warmup_ratio > 0 else min(plan.warmup_steps, total_steps)
