"""The Evaluator on the transformers+peft CPU backend, with a small arith base and quick LoRA adapters."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from trex.evaluate import EvalSpec, EvaluationError, Evaluator, TransformersEvalBackend, register_scorer
from trex.events.evaluation import EvaluationFailed, EvaluationFinished, MetricRecorded


@pytest.fixture(scope="module")
def tf_backend(eval_arith_base):
    return TransformersEvalBackend(eval_arith_base, batch_size=128, threads=1)


def sub_spec(rows, **kw):
    kw.setdefault("metrics", ("exact_match", "accuracy", "macro_f1", "rougeL"))
    return EvalSpec(task="arith-sub", examples=rows, max_new_tokens=4, add_bos=True, **kw)


def test_scores_adapter_records_events_and_parquet(tf_backend, eval_arith_adapters, arith_sub_eval, tmp_path):
    evs = []
    ev = Evaluator(tf_backend, home=tmp_path, emit=evs.append)
    res = ev.evaluate(sub_spec(arith_sub_eval), eval_arith_adapters[-1], node_id="n1")
    assert res.n_examples == len(arith_sub_eval) == 500
    assert set(res.metrics) == {"exact_match", "accuracy", "macro_f1", "rougeL"}
    assert res.primary == "exact_match" and 0 <= res.primary_value <= 1
    assert res.metrics["accuracy"] == pytest.approx(res.metrics["exact_match"])
    # events: one MetricRecorded per metric, the primary flagged, then EvaluationFinished
    assert [type(e) for e in evs] == [MetricRecorded] * 4 + [EvaluationFinished]
    assert [e.name for e in evs[:4] if e.primary] == ["exact_match"]
    assert all(e.eval_id == res.eval_id and e.node_id == "n1" for e in evs)
    fin = evs[-1]
    assert fin.backend == "transformers" and fin.n_examples == 500 and fin.outputs_artifact == res.outputs_artifact
    # per-example outputs as a Parquet artifact
    path = tmp_path / "artifacts" / fin.outputs_artifact
    assert path == res.outputs_path and path.exists() and path.suffix == ".parquet"
    t = pq.read_table(path)
    assert t.num_rows == 500
    assert {"index", "input", "prompt", "reference", "output", "score", "metric_exact_match"} <= set(t.column_names)
    d = t.to_pydict()
    assert d["input"][0] == arith_sub_eval[0]["prompt"] and d["reference"][0] == arith_sub_eval[0]["completion"]
    assert sum(d["score"]) / 500 == pytest.approx(res.primary_value)
    assert d["output"] == res.outputs
    assert not list((tmp_path / "artifacts" / "evals").glob(".*tmp"))  # no temp files left


def test_same_adapter_same_score_and_no_base_reload(tf_backend, eval_arith_adapters, arith_sub_eval, tmp_path):
    ev = Evaluator(tf_backend, home=tmp_path)
    spec = sub_spec(arith_sub_eval, metrics=("exact_match",))
    a0, a1 = eval_arith_adapters[0], eval_arith_adapters[3]
    r0 = ev.evaluate(spec, a0, node_id="a")
    r1 = ev.evaluate(spec, a1, node_id="b")
    r0b = ev.evaluate(spec, a0, node_id="a")
    rb = ev.evaluate(spec, None, node_id="base")
    assert r0b.outputs == r0.outputs and r0b.primary_value == r0.primary_value
    assert r0b.outputs_artifact == r0.outputs_artifact  # content-addressed
    assert r1.outputs != r0.outputs and rb.outputs != r1.outputs  # adapters really swapped (and disabled for base)
    assert tf_backend.base_loads == 1


def test_adapter_eviction_keeps_results(eval_arith_base, eval_arith_adapters, arith_sub_eval, tmp_path):
    rows = arith_sub_eval[:100]
    small = TransformersEvalBackend(eval_arith_base, batch_size=100, max_loaded=2, threads=1)
    ev = Evaluator(small, home=tmp_path)
    spec = sub_spec(rows, metrics=("exact_match",))
    first = [ev.evaluate(spec, a, node_id="x").outputs for a in eval_arith_adapters[:4]]
    assert len(small.peft.peft_config) == 2
    again = [ev.evaluate(spec, a, node_id="x").outputs for a in eval_arith_adapters[:4]]
    assert again == first and small.base_loads == 1


def test_left_padded_batches_match_unbatched(eval_arith_base, eval_arith_adapters, arith_sub_eval, tmp_path):
    rows = [r for r in arith_sub_eval if len(r["prompt"]) <= 4][:10] + [r for r in arith_sub_eval if len(r["prompt"]) == 6][:20]
    spec = sub_spec(rows, metrics=("exact_match",))
    one = Evaluator(TransformersEvalBackend(eval_arith_base, batch_size=1, threads=1), home=tmp_path).evaluate(spec, eval_arith_adapters[5], node_id="x")
    big = Evaluator(TransformersEvalBackend(eval_arith_base, batch_size=64, threads=1), home=tmp_path).evaluate(spec, eval_arith_adapters[5], node_id="x")
    assert big.outputs == one.outputs


def test_failure_is_an_event_then_an_error(tf_backend, arith_sub_eval, tmp_path):
    evs = []
    ev = Evaluator(tf_backend, home=tmp_path, emit=evs.append)
    with pytest.raises(EvaluationError) as ei:
        ev.evaluate(sub_spec(arith_sub_eval[:5]), tmp_path / "no-such-adapter", node_id="n9")
    assert [type(e) for e in evs] == [EvaluationFailed]
    assert evs[0].node_id == "n9" and evs[0].reason == ei.value.reason == "FileNotFoundError"
    evs.clear()
    with pytest.raises(EvaluationError):
        ev.evaluate(sub_spec([]), None, node_id="n9")
    assert evs[0].reason == "empty_eval_set"


def test_task_names_its_own_scorer(tf_backend, eval_arith_adapters, arith_sub_eval, tmp_path):
    @register_scorer("arith_within_2")
    def within_2(outputs, references):
        per = []
        for o, r in zip(outputs, references):
            try:
                per.append(1.0 if abs(int(o) - int(r)) <= 2 else 0.0)
            except (TypeError, ValueError):
                per.append(0.0)
        return per

    task = {"name": "arith-sub", "eval_examples": arith_sub_eval[:200], "max_new_tokens": 4, "add_bos": True,
            "metrics": ["exact_match"], "scorer": "arith_within_2"}
    spec = EvalSpec.from_task(task)
    assert spec.primary == "arith_within_2" and set(spec.metrics) == {"arith_within_2", "exact_match"}
    res = Evaluator(tf_backend, home=tmp_path).evaluate(spec, eval_arith_adapters[7], node_id="n")
    assert res.metrics["arith_within_2"] >= res.metrics["exact_match"]


def test_unknown_metric_fails_fast():
    with pytest.raises(KeyError):
        EvalSpec(task="t", examples=[{"prompt": "a", "completion": "b"}], metrics=("bleurt_9000",))


def test_ftbench_task_all_splits(tf_backend, eval_arith_adapters, tmp_path):
    pytest.importorskip("ftbench.tasks")
    from trex.tasks import get_task

    from trex.evaluate import evaluate_task

    evs = []
    ev = Evaluator(tf_backend, home=tmp_path, emit=evs.append)
    res = evaluate_task(ev, get_task("arith-sub"), eval_arith_adapters[4], node_id="n", home=tmp_path, limit=100)
    assert list(res) == ["eval", "eval_add"]
    assert res["eval"].primary == "exact_match" and res["eval_add"].primary == "add_exact_match"
    metrics = [e for e in evs if isinstance(e, MetricRecorded)]
    assert [(e.name, e.split, e.primary) for e in metrics] == [("exact_match", "eval", True),
                                                             ("add_exact_match", "eval_add", False)]
    # same scores as ftbench's own reference scorer (merged adapter, no padding)
    from ftbench.arith import evaluate_adapter

    ref = evaluate_adapter(eval_arith_adapters[4], "arith-sub", home=tmp_path, base_model_dir=tf_backend.base_model, limit=100)
    assert res["eval"].primary_value == pytest.approx(ref["exact_match"], abs=0.01)
    assert res["eval_add"].primary_value == pytest.approx(ref["add_exact_match"], abs=0.01)


def test_full_model_folder_is_evaluated_without_touching_the_base(tf_backend, eval_arith_base, eval_arith_adapters,
                                                                 arith_sub_eval, tmp_path):
    import shutil

    full = tmp_path / "full-ft"
    shutil.copytree(eval_arith_base, full)  # a "method: full" result is a whole model folder
    ev = Evaluator(tf_backend, home=tmp_path)
    spec = sub_spec(arith_sub_eval[:100], metrics=("exact_match",))
    base = ev.evaluate(spec, None, node_id="b")
    assert ev.evaluate(spec, full, node_id="f").outputs == base.outputs
    ev.evaluate(spec, eval_arith_adapters[1], node_id="a")  # adapters still work after it
    assert tf_backend.base_loads == 1


def test_a_score_computed_before_is_served_from_the_cache(tf_backend, eval_arith_adapters, arith_sub_eval, tmp_path,
                                                          monkeypatch):
    """Same adapter, split and decoding: the second evaluation generates nothing and says it was cached."""
    evs = []
    ev = Evaluator(tf_backend, home=tmp_path, emit=evs.append, cache=True)
    spec = sub_spec(arith_sub_eval[:64], metrics=("exact_match", "rougeL"))
    first = ev.evaluate(spec, eval_arith_adapters[2], node_id="a")
    calls = []
    real = tf_backend.generate
    monkeypatch.setattr(tf_backend, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = ev.evaluate(spec, eval_arith_adapters[2], node_id="b")
    assert calls == [] and again.metrics == first.metrics and again.outputs == first.outputs
    assert again.per_example == first.per_example and again.outputs_artifact == first.outputs_artifact
    fins = [e for e in evs if isinstance(e, EvaluationFinished)]
    assert [f.cached for f in fins] == [False, True] and fins[1].node_id == "b"
    # another split content, another adapter or other decoding settings: computed again
    ev.evaluate(sub_spec(arith_sub_eval[:63], metrics=("exact_match", "rougeL")), eval_arith_adapters[2], node_id="c")
    ev.evaluate(spec, eval_arith_adapters[3], node_id="d")
    ev.evaluate(EvalSpec(task="arith-sub", examples=arith_sub_eval[:64], max_new_tokens=3, add_bos=True,
                         metrics=("exact_match", "rougeL")), eval_arith_adapters[2], node_id="e")
    assert len(calls) == 3
    # a cache entry whose outputs artifact is gone is a miss, not an error
    (tmp_path / "artifacts" / first.outputs_artifact).unlink()
    ev.evaluate(spec, eval_arith_adapters[2], node_id="f")
    assert len(calls) == 4
