"""What a task is: the model (:mod:`.model`), the task-file schema (:mod:`.schema`) and its checks
(:mod:`.checks`), the registry that plugins fill (:mod:`.registry`), a user's installed tasks
(:mod:`.installed`), lookup (:mod:`.lookup`), data preparation (:mod:`.prepare`), data files
(:mod:`.files`) and the metric names and scorers (:mod:`.metrics`).

    task = get_task("arith-sub")               # built-in (a plugin's) or installed in the home
    assets = prepare_task(task, home)          # base model folder + data folder (cached)
    rows = load_split(task, "eval", home)

Light to import: pydantic and PyYAML only, never torch, and never the benchmark.
"""
from trex.tasks.checks import load_task_file, problems, task_from_spec
from trex.tasks.files import read_jsonl, read_rows, write_jsonl
from trex.tasks.installed import install_task, installed_task, trex_home
from trex.tasks.lookup import as_task, get_task, list_tasks
from trex.tasks.metrics import can_score, get_metric, metric_names, register_scorer, score
from trex.tasks.model import MetricSpec, Task, TaskAssets
from trex.tasks.prepare import load_split, prepare_data, prepare_task, task_data_dir
from trex.tasks.registry import (
    REGISTRY,
    TaskRegistry,
    check_task,
    is_builtin,
    register_base_model,
    register_data_generator,
    register_task,
    register_task_file,
)
from trex.tasks.schema import SpecError, TaskSpec, fetch_plan, load_spec, spec_to_task

__all__ = [
    "REGISTRY", "MetricSpec", "SpecError", "Task", "TaskAssets", "TaskRegistry", "TaskSpec", "as_task",
    "can_score", "check_task", "fetch_plan", "get_metric", "get_task", "install_task", "installed_task",
    "is_builtin", "list_tasks", "load_spec", "load_split", "load_task_file", "metric_names", "prepare_data",
    "prepare_task", "problems", "read_jsonl", "read_rows", "register_base_model", "register_data_generator",
    "register_scorer", "register_task", "register_task_file", "score", "spec_to_task", "task_data_dir",
    "task_from_spec", "trex_home", "write_jsonl",
]
