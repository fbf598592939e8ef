"""The LLM layer with the real embedded model (SmolLM2-135M-Instruct, grammar-constrained on CPU)."""
from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel, Field, model_validator

from trex.events.plans import LlmCallFailed, LlmCallMade
from trex.llm import LLMCallError, LLMClient, ReplayLLM, TokenBudgetExceeded


class TrainPlan(BaseModel):
    """A plan-like schema with numeric bounds the grammar must enforce."""

    method: Literal["lora", "full"]
    learning_rate: float = Field(ge=1e-5, le=1e-2)
    epochs: int = Field(ge=1, le=5)
    lora_rank: int = Field(ge=1, le=64)


class Impossible(BaseModel):
    """Schema-valid outputs exist, but the cross-field check (not expressible in JSON schema) rejects all."""

    low: int = Field(ge=0, le=9)
    high: int = Field(ge=0, le=9)

    @model_validator(mode="after")
    def _check(self):
        if self.low + self.high <= 18:
            raise ValueError("low + high must exceed 18")
        return self


MSGS = [
    {"role": "system", "content": "You are an ML engineer. Answer with a JSON fine-tuning plan."},
    {"role": "user", "content": "Propose a plan to fine-tune a small model on 2-digit subtraction."},
]


def _plan_schema():
    try:  # the project's own Plan, when it is there and small enough for a 135M model
        from trex.plan import Plan  # type: ignore

        if len(str(Plan.model_json_schema())) < 1500:
            return Plan
    except Exception:  # noqa: BLE001
        pass
    return TrainPlan


def test_constrained_decoding_gives_schema_valid_objects(smollm2_backend, tmp_path):
    evs = []
    client = LLMClient(smollm2_backend, emit=evs.append, max_attempts=1, home=tmp_path)
    schema = _plan_schema()
    for seed in (0, 1):
        r = client.chat(MSGS, schema=schema, purpose="propose", max_tokens=120, temperature=0.8, seed=seed)
        assert isinstance(r.parsed, schema)
        assert r.attempts == 1 and r.usage.completion_tokens > 0
        if schema is TrainPlan:
            assert 1e-5 <= r.parsed.learning_rate <= 1e-2 and 1 <= r.parsed.epochs <= 5
    assert [type(e) for e in evs] == [LlmCallMade, LlmCallMade]
    assert evs[0].backend == "transformers" and evs[0].model == "SmolLM2-135M-Instruct"
    assert evs[0].prompt_tokens > 0 and evs[0].latency_s > 0


def test_output_failing_validation_is_retried_then_recorded(smollm2_backend, tmp_path):
    evs = []
    client = LLMClient(smollm2_backend, emit=evs.append, max_attempts=2, home=tmp_path)
    with pytest.raises(LLMCallError) as ei:
        client.chat(MSGS, schema=Impossible, purpose="propose", max_tokens=24, seed=0)
    assert len(ei.value.errors) == 2
    assert [type(e) for e in evs] == [LlmCallFailed, LlmCallFailed]
    for e in evs:
        assert "low + high must exceed 18" in e.error
        d = json.loads(e.response)  # the grammar held: schema-shaped JSON, only the cross-field check failed
        assert set(d) == {"low", "high"} and 0 <= d["low"] <= 9 and 0 <= d["high"] <= 9


def test_replay_makes_zero_model_calls(smollm2_backend, monkeypatch, tmp_path):
    evs = []
    client = LLMClient(smollm2_backend, emit=evs.append, home=tmp_path)
    recorded = [
        client.chat(MSGS, schema=TrainPlan, purpose="propose", max_tokens=120, seed=0).parsed,
        client.chat([{"role": "user", "content": "Say hi."}], purpose="note", max_tokens=8).text,
    ]

    from trex.llm import local

    calls = {"init": 0, "complete": 0}

    def no_init(self, *a, **kw):
        calls["init"] += 1
        raise AssertionError("replay constructed a model backend")

    def no_complete(self, *a, **kw):
        calls["complete"] += 1
        raise AssertionError("replay called a model")

    monkeypatch.setattr(local.TransformersBackend, "__init__", no_init)
    monkeypatch.setattr(local.TransformersBackend, "complete", no_complete)
    replay = ReplayLLM(evs)
    got = [
        replay.chat(MSGS, schema=TrainPlan, purpose="propose", max_tokens=120, seed=0).parsed,
        replay.chat([{"role": "user", "content": "Say hi."}], purpose="note", max_tokens=8).text,
    ]
    assert got == recorded
    assert calls == {"init": 0, "complete": 0}
    replay.assert_exhausted()


def test_token_budget_with_real_model(smollm2_backend, tmp_path):
    client = LLMClient(smollm2_backend, max_total_tokens=120, home=tmp_path)
    r = client.chat([{"role": "user", "content": "Say hi."}], purpose="note", max_tokens=16)
    assert 0 < client.tokens_used == r.usage.total_tokens <= 120
    before = client.tokens_used
    with pytest.raises(TokenBudgetExceeded):
        client.chat(MSGS, schema=TrainPlan, purpose="propose", max_tokens=100)
    assert client.tokens_used == before
