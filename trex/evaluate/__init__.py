"""The Evaluator: scores adapters on a task's held-out set (transformers+peft on CPU, or vLLM multi-LoRA).

See :mod:`trex.evaluate.evaluator` and docs/llm_and_eval.md.
"""
from trex.evaluate.backends import TransformersEvalBackend, VLLMEvalBackend, adapter_name
from trex.evaluate.evaluator import EvalResult, EvalSpec, EvaluationError, Evaluator, evaluate_task
from trex.tasks.metrics import get_metric, metric_names, normalize, register_scorer, score

__all__ = [
    "EvalResult", "EvalSpec", "EvaluationError", "Evaluator", "TransformersEvalBackend", "VLLMEvalBackend",
    "adapter_name", "evaluate_task", "get_metric", "metric_names", "normalize", "register_scorer", "score",
]
