"""Whether a task file can run here, checked before anything starts.

:func:`problems` lists why a valid spec cannot run on this machine (a builder or generator
nobody registered, a data file or model folder that is missing, a metric nobody can score, a hub
that is not reachable, a GPU it needs); :func:`load_task_file` turns a user's task file into a
checked :class:`~trex.tasks.model.Task` or one :class:`~trex.tasks.schema.SpecError` naming
everything that is wrong.
"""
from __future__ import annotations

import os
from pathlib import Path

from trex.tasks.files import read_rows
from trex.tasks.metrics import can_score, metric_names
from trex.tasks.model import Task
from trex.tasks.registry import REGISTRY, TaskRegistry
from trex.tasks.schema import SpecError, TaskSpec, fetch_plan, load_spec, spec_to_task


def problems(spec: TaskSpec, base_dir: str | Path | None = None, *, hub_reachable: bool = False,
             gpu: bool | None = None, registry: TaskRegistry = REGISTRY) -> list[str]:
    """Why ``spec`` cannot run here (empty: it can). Relative paths are resolved against ``base_dir``."""
    out: list[str] = []
    base = Path(base_dir) if base_dir is not None else Path(".")
    bm = spec.base_model
    builders = registry.base_model_names()
    if bm.builder is not None and bm.builder not in builders:
        out.append(f"unknown base model builder {bm.builder!r} (known: {', '.join(builders)})")
    if bm.path is not None and not (base / bm.path).is_dir():
        out.append(f"base model folder {str(base / bm.path)!r} does not exist")
    elif bm.path is not None and not (base / bm.path / "config.json").is_file():
        out.append(f"base model folder {str(base / bm.path)!r} has no config.json (a transformers model folder)")
    d = spec.data
    generators = registry.data_generator_names()
    if d.generator is not None and d.generator not in generators:
        out.append(f"unknown data generator {d.generator!r} (known: {', '.join(generators)})")
    for split, f in (d.files or {}).items():
        if not (base / f).is_file():
            out.append(f"data file for split {split!r} ({str(base / f)!r}) does not exist")
    for pool in spec.pools:
        if pool.file is not None and not (base / pool.file).is_file():
            out.append(f"pool {pool.name!r}: data file {str(base / pool.file)!r} does not exist")
    for m in spec.metrics:
        if can_score(m.name):
            continue
        if m.name in spec.requires.scorers:
            out.append(f"metric {m.name!r} needs a scorer that is not installed here (register it with "
                       f"trex.tasks.register_scorer)")
        else:
            out.append(f"unknown metric {m.name!r} (known: {', '.join(metric_names())}, or *_exact_match)")
    if spec.requires.hub and not hub_reachable:
        out.append("needs the Hugging Face hub, which is not reachable here: " + "; ".join(fetch_plan(spec)))
    if spec.requires.gpu and gpu is False:
        out.append("needs a GPU")
    return out


def task_from_spec(spec: TaskSpec, base_dir: str | os.PathLike | None = None,
                   registry: TaskRegistry = REGISTRY) -> Task:
    """The checked run-time :class:`Task` of a task file (relative paths resolved against ``base_dir``)."""
    return registry.check_task(spec_to_task(spec, base_dir))


def load_task_file(path: str | os.PathLike) -> Task:
    """A task file → its :class:`Task`, or :class:`SpecError` naming what is wrong, including
    anything that keeps it from running here (missing files, unknown metric, hub)."""
    p = Path(path)
    spec = load_spec(p)
    why = problems(spec, p.parent)
    if why:
        raise SpecError(f"{p}: cannot run: " + "; ".join(why))
    try:
        task = task_from_spec(spec, p.parent)
    except ValueError as e:  # pydantic's ValidationError included: the Task's own checks, in one line
        raise SpecError(f"{p}: " + " ".join(str(e).split())) from None
    for f in (task.data_files or {}).values():  # every row readable before anything starts
        try:
            read_rows(Path(f), task.prompt_field, task.completion_field)
        except KeyError as e:
            raise SpecError(f"{p}: {e.args[0]}") from None
    return task
