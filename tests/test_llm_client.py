"""LLMClient, ReplayLLM and the token budget on a scripted fake backend (fast, no model)."""
from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel, Field, model_validator

from trex.events.plans import LlmCallFailed, LlmCallMade
from trex.llm import (
    BackendError,
    Completion,
    LLMCallError,
    LLMClient,
    ReplayLLM,
    ReplayMiss,
    TokenBudgetExceeded,
    Usage,
    prompt_hash,
)


class MiniPlan(BaseModel):
    method: Literal["lora", "full"]
    learning_rate: float = Field(ge=1e-6, le=1e-2)
    epochs: int = Field(ge=1, le=5)


class Scripted:
    """A backend that answers from a script; counts calls."""

    name = "scripted"
    model = "fake-1"

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) for m in messages)

    def complete(self, messages, *, json_schema, schema_name, max_tokens, temperature, seed, timeout):
        self.calls.append(dict(temperature=temperature, seed=seed, schema=json_schema is not None))
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return Completion(a, Usage(self.count_tokens(messages), len(a) // 4 + 1), "stop")


MSGS = [{"role": "system", "content": "You plan."}, {"role": "user", "content": "Plan a run."}]
GOOD = json.dumps({"method": "lora", "learning_rate": 0.001, "epochs": 2})


def test_structured_ok_emits_made():
    evs = []
    b = Scripted([GOOD])
    r = LLMClient(b, emit=evs.append).chat(MSGS, schema=MiniPlan, purpose="propose", max_tokens=50, seed=3)
    assert isinstance(r.parsed, MiniPlan) and r.parsed.epochs == 2
    assert r.attempts == 1 and r.usage.total_tokens > 0
    assert [type(e) for e in evs] == [LlmCallMade]
    e = evs[0]
    assert e.purpose == "propose" and e.backend == "scripted" and e.model == "fake-1"
    assert e.params == {"max_tokens": 50, "temperature": 0.0, "seed": 3, "schema": "MiniPlan"}
    assert e.prompt_hash == prompt_hash(MSGS, MiniPlan.model_json_schema()) and "Plan a run." in e.prompt
    assert e.response == GOOD and e.prompt_tokens == 5


def test_invalid_then_valid_is_retried_with_new_seed_and_temperature():
    evs = []
    bad_bound = json.dumps({"method": "lora", "learning_rate": 5.0, "epochs": 2})
    b = Scripted(["not json", bad_bound, GOOD])
    r = LLMClient(b, emit=evs.append, max_attempts=3).chat(MSGS, schema=MiniPlan, purpose="p", seed=10)
    assert r.attempts == 3 and r.parsed.learning_rate == 0.001
    assert [type(e) for e in evs] == [LlmCallFailed, LlmCallFailed, LlmCallMade]
    assert "not valid JSON" in evs[0].error and "learning_rate" in evs[1].error
    assert evs[1].response == bad_bound
    assert len({e.call_id for e in evs}) == 1 and [e.attempt for e in evs] == [1, 2, 3]
    assert [c["seed"] for c in b.calls] == [10, 11, 12]
    assert [c["temperature"] for c in b.calls] == [0.0, 0.7, 0.7]


def test_all_attempts_fail_raises_clear_error(tmp_path):
    evs = []
    b = Scripted(["{}", BackendError("HTTP 500"), "[1]"])
    with pytest.raises(LLMCallError) as ei:
        LLMClient(b, emit=evs.append, max_attempts=3, home=tmp_path).chat(MSGS, schema=MiniPlan, purpose="propose")
    assert evs[0].prompt and "user" in evs[0].prompt  # the prompt of a call that never succeeded stays traceable
    assert evs[0].params["max_tokens"] == 512
    assert len(ei.value.errors) == 3 and "after 3 attempt" in str(ei.value)
    assert ei.value.last_text == "[1]"
    assert [type(e) for e in evs] == [LlmCallFailed] * 3
    assert "HTTP 500" in evs[1].error


def test_token_budget_blocks_call_before_it_is_made():
    evs = []
    b = Scripted([GOOD, GOOD])
    c = LLMClient(b, emit=evs.append, max_total_tokens=80)
    c.chat(MSGS, schema=MiniPlan, purpose="p", max_tokens=60)
    used = c.tokens_used
    assert 0 < used < 80
    with pytest.raises(TokenBudgetExceeded) as ei:
        c.chat(MSGS, schema=MiniPlan, purpose="p", max_tokens=60)
    assert "budget 80" in str(ei.value)
    assert len(b.calls) == 1 and c.tokens_used == used  # the second call was never made
    assert isinstance(evs[-1], LlmCallFailed) and evs[-1].error.startswith("TokenBudgetExceeded")


def test_long_prompt_goes_to_artifact(tmp_path):
    evs = []
    msgs = [{"role": "user", "content": "x " * 5000}]
    LLMClient(Scripted(["ok"]), emit=evs.append, home=tmp_path).chat(msgs, purpose="free")
    e = evs[0]
    assert e.prompt is None and e.prompt_artifact == f"prompts/{e.prompt_hash}.json"
    stored = json.loads((tmp_path / "artifacts" / e.prompt_artifact).read_text())
    assert stored["messages"][0]["content"] == msgs[0]["content"]


def test_replay_serves_recorded_calls_in_order_and_never_calls_a_backend():
    evs = []
    b = Scripted(["bad", GOOD, "hello", json.dumps({"method": "full", "learning_rate": 1e-4, "epochs": 1})])
    c = LLMClient(b, emit=evs.append)
    first = c.chat(MSGS, schema=MiniPlan, purpose="propose")
    text = c.chat(MSGS, purpose="note").text
    second = c.chat(MSGS, schema=MiniPlan, purpose="propose")
    n_calls = len(b.calls)

    r = ReplayLLM(evs)
    assert r.chat(MSGS, schema=MiniPlan, purpose="propose").parsed == first.parsed
    assert r.chat(MSGS, purpose="note").text == text
    again = r.chat(MSGS, schema=MiniPlan, purpose="propose")
    assert again.parsed == second.parsed and again.parsed.method == "full"
    assert len(b.calls) == n_calls  # replay touched no backend
    r.assert_exhausted()
    with pytest.raises(ReplayMiss):
        r.chat(MSGS, schema=MiniPlan, purpose="propose")
    with pytest.raises(ReplayMiss):
        ReplayLLM(evs).chat([{"role": "user", "content": "something else"}], purpose="propose")


def test_replay_reraises_recorded_failures(tmp_path):
    evs = []
    c = LLMClient(Scripted(["x", "y"]), emit=evs.append, max_attempts=2, max_total_tokens=10_000, home=tmp_path)
    with pytest.raises(LLMCallError):
        c.chat(MSGS, schema=MiniPlan, purpose="propose")
    c.max_total_tokens = 1
    with pytest.raises(TokenBudgetExceeded):
        c.chat(MSGS, purpose="note")
    r = ReplayLLM(evs)
    with pytest.raises(LLMCallError):
        r.chat(MSGS, schema=MiniPlan, purpose="propose")
    with pytest.raises(TokenBudgetExceeded):
        r.chat(MSGS, purpose="note")


def test_replay_from_event_log(tmp_path):
    from trex.events import EventLog, NewEvent

    log = EventLog(tmp_path / "home")
    c = LLMClient(Scripted([GOOD]), emit=lambda ev: log.append("s1", [NewEvent(ev)], expected_version=None))
    res = c.chat(MSGS, schema=MiniPlan, purpose="propose")
    r = ReplayLLM(log.read("s1"))
    assert r.chat(MSGS, schema=MiniPlan, purpose="propose").parsed == res.parsed
    r2 = ReplayLLM(log.iter_events("s1"))
    assert r2.chat(MSGS, schema=MiniPlan, purpose="propose").parsed == res.parsed


class CrossField(BaseModel):
    low: int = Field(ge=0, le=9)
    high: int = Field(ge=0, le=9)

    @model_validator(mode="after")
    def _order(self):
        if self.low >= self.high:
            raise ValueError("low must be < high")
        return self


def test_cross_field_violation_is_a_recorded_retry():
    evs = []
    b = Scripted(['{"low":5,"high":2}', '{"low":1,"high":2}'])
    r = LLMClient(b, emit=evs.append).chat(MSGS, schema=CrossField, purpose="p")
    assert (r.parsed.low, r.parsed.high) == (1, 2)
    assert isinstance(evs[0], LlmCallFailed) and "low must be < high" in evs[0].error


def test_unexpected_backend_crash_is_recorded_and_retried():
    evs = []
    b = Scripted([RuntimeError("out of memory"), GOOD])
    r = LLMClient(b, emit=evs.append).chat(MSGS, schema=MiniPlan, purpose="p")
    assert r.attempts == 2 and isinstance(evs[0], LlmCallFailed) and "RuntimeError: out of memory" in evs[0].error
