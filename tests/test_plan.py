import json

import pytest

from trex.plan import Plan, example_plan, parse_plan, plan_hash, plan_schema
from trex.recipe import Recipe, Source


def raw_plan(**kw):
    d = {"data": {"sources": [{"uri": "task:arith-sub/train"}]}}
    d.update(kw)
    return d


def test_defaults_and_hash_stable():
    p = example_plan()
    assert p.method == "lora" and p.max_steps == 100
    h = plan_hash(p)
    assert len(h) == 64 and h == plan_hash(Plan.model_validate(json.loads(p.model_dump_json())))
    assert plan_hash(example_plan(learning_rate=2e-3)) != h
    assert plan_hash(example_plan(data=Recipe(sources=(Source(uri="task:arith-sub/train"),), shuffle_seed=1))) != h


def test_frozen_and_extra_forbidden():
    p = example_plan()
    with pytest.raises(Exception):
        p.learning_rate = 1.0  # type: ignore[misc]
    assert isinstance(parse_plan(raw_plan(optimizer="sgd")), str)


@pytest.mark.parametrize("bad", [
    {"learning_rate": 0}, {"learning_rate": 5.0}, {"lora_rank": 0}, {"lora_rank": 1024},
    {"lora_dropout": 0.9}, {"batch_size": 0}, {"grad_accum": 1000}, {"max_steps": 0},
    {"method": "qlora"}, {"precision": "int8"}, {"lr_schedule": "step"}, {"target_modules": ["lm_head"]},
    {"target_modules": []}, {"target_modules": ["q_proj", "q_proj"]}, {"warmup_ratio": 0.9},
    {"max_steps": None}, {"max_steps": 10, "epochs": 1.0}, {"seed": -1}, {"max_seq_len": 2},
    {"data": {"sources": []}}, {"data": {"sources": [{"uri": "x.jsonl", "weight": 0}]}},
    {"data": {"sources": [{"uri": "x.jsonl"}], "include_regex": "("}},
    {"data": {"sources": [{"uri": "x.jsonl"}], "prompt_template": "Q: {question}"}},
    {"data": {"sources": [{"uri": "x.jsonl"}], "prompt_template": "{prompt.__class__}"}},
    {"data": {"sources": [{"uri": "x.jsonl"}], "prompt_template": "{prompt!r}"}},
    {"data": {"sources": [{"uri": "a\x00b.jsonl"}]}},
])
def test_range_checks_reject(bad):
    reason = parse_plan(raw_plan(**bad))
    assert isinstance(reason, str) and reason.startswith("invalid plan"), reason


def test_parse_plan_accepts_json_text_and_rejects_garbage():
    assert isinstance(parse_plan(json.dumps(raw_plan(learning_rate=1e-4))), Plan)
    assert "not valid JSON" in parse_plan("{nope")
    assert "JSON object" in parse_plan("[1, 2]")
    assert isinstance(parse_plan(raw_plan(epochs=2.0, max_steps=None)), Plan)


def test_schema_is_llm_friendly():
    s = plan_schema()
    json.dumps(s)
    props = s["properties"]
    assert props["method"]["enum"] == ["lora", "full"]
    assert props["learning_rate"]["exclusiveMinimum"] == 0 and props["learning_rate"]["maximum"] == 1.0
    assert s["additionalProperties"] is False
    assert "Recipe" in s["$defs"] and "Source" in s["$defs"]
