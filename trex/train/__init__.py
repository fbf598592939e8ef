"""Training: the Executor's domain (worker subprocess per trial, events via ``emit``).

Import-light: torch/transformers are imported only inside the worker and in functions.
"""
from trex.train.executor import Executor, TrialOutcome, base_model_hash, run_trial, work_key

__all__ = ["Executor", "TrialOutcome", "base_model_hash", "run_trial", "work_key"]
