"""The task registry: built-in tasks, base-model builders and data generators, filled by plugins.

trex ships no tasks of its own. A package that has some (the benchmark shipped beside trex is
one) declares a plugin in the entry-point group ``trex.tasks`` of its ``pyproject.toml``::

    [project.entry-points."trex.tasks"]
    mybench = "mybench.tasks:register"

A plugin is a function ``register(registry)`` that calls, on the :class:`TaskRegistry` it is
given, :meth:`~TaskRegistry.register_base_model`, :meth:`~TaskRegistry.register_data_generator`
and :meth:`~TaskRegistry.register_task_file` / :meth:`~TaskRegistry.register_task` (builders and
generators first: a task is checked against them when it is registered).

Plugins are loaded lazily, on the first lookup, once per registry (idempotent and thread-safe).
Where they come from:

* the entry points of the group ``trex.tasks`` (``importlib.metadata``) — the normal way;
* the environment variable ``TREX_TASK_PLUGINS``: comma-separated ``module:function``, for a
  checkout whose installed metadata lacks the entry point (not reinstalled since it was added),
  and for tests. A plugin named both ways is loaded once.

If there are none, trex simply has no built-in tasks (task files still work). A plugin that
fails to load is skipped and named in the "unknown task" message, so one broken package never
stops trex.

A task file whose model or data come from the hub is *known* but not runnable here: its name
is reserved (:meth:`~TaskRegistry.is_builtin`) and :func:`trex.tasks.get_task` refuses it with
the reason.
"""
from __future__ import annotations

import importlib
import os
import re
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Iterable

from trex.tasks.model import Task
from trex.tasks.schema import SpecError, TaskSpec, load_spec, spec_to_task

PLUGIN_GROUP = "trex.tasks"
PLUGIN_ENV = "TREX_TASK_PLUGINS"

BaseModelBuilder = Callable[[Path, int], Path]  # (trex home, seed) -> a model folder
DataGenerator = Callable[[int], "dict[str, list[dict]]"]  # seed -> split -> rows
Plugin = Callable[["TaskRegistry"], None]

_BUILDER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_PLUGIN_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def plugin_refs() -> list[str]:
    """Every plugin named here: the entry points of ``trex.tasks``, then ``$TREX_TASK_PLUGINS``
    (each ``module:function`` once, in that order)."""
    refs = [ep.value.strip() for ep in entry_points(group=PLUGIN_GROUP)]
    refs += [r.strip() for r in os.environ.get(PLUGIN_ENV, "").split(",") if r.strip()]
    return list(dict.fromkeys(refs))


def load_plugin(ref: str) -> Plugin:
    """``module:function`` → the function (ValueError naming what is wrong)."""
    if not isinstance(ref, str) or not _PLUGIN_REF.fullmatch(ref):
        raise ValueError(f"{ref!r} is not module:function")
    mod, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load {ref!r}: {e}") from None
    if not callable(fn):
        raise ValueError(f"{ref!r} is not callable")
    return fn


class TaskRegistry:
    """Built-in tasks (runnable), known task files (runnable or not), builders and generators.

    ``plugins``: the plugin references to load on the first lookup; None = :func:`plugin_refs`
    at that moment (a test passes ``[]`` or its own)."""

    def __init__(self, plugins: Iterable[str] | None = None):
        self._plugin_list = None if plugins is None else list(plugins)
        self._base_models: dict[str, BaseModelBuilder] = {}
        self._generators: dict[str, DataGenerator] = {}
        self._tasks: dict[str, Task] = {}
        self._specs: dict[str, TaskSpec] = {}
        self._failures: dict[str, str] = {}
        self._loaded = False
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ filling (plugins call these)
    def register_base_model(self, name: str, fn: BaseModelBuilder) -> None:
        """``fn(home, seed) -> model folder`` under ``name`` (a task file's ``base_model.builder``)."""
        self._put(self._base_models, "base model builder", name, fn)

    def register_data_generator(self, name: str, fn: DataGenerator) -> None:
        """``fn(seed) -> {split: rows}`` under ``name`` (a task file's ``data.generator``)."""
        self._put(self._generators, "data generator", name, fn)

    def register_task(self, task: Task) -> Task:
        """A runnable built-in task (checked against the builders and generators registered so far)."""
        with self._lock:
            self.check_task(task)
            old = self._tasks.get(task.name)
            if old is not None and old != task:
                raise ValueError(f"task {task.name!r} is already registered with a different definition")
            self._tasks[task.name] = task
            return task

    def register_task_file(self, path: str | os.PathLike) -> TaskSpec:
        """A task file: runnable here (a builder and a generator, or local files) → a built-in task;
        needing the hub → known, its name reserved, refused by :func:`get_task` with the reason."""
        p = Path(path)
        spec = load_spec(p)
        with self._lock:
            old = self._specs.get(spec.name)
            if old is not None and old != spec:
                raise SpecError(f"{p}: a second task named {spec.name!r}")
            if not (spec.base_model.hub or spec.data.hub):
                self.register_task(spec_to_task(spec, p.parent))
            self._specs[spec.name] = spec
        return spec

    def _put(self, table: dict, what: str, name: str, fn: Callable) -> None:
        if not isinstance(name, str) or not _BUILDER_NAME.fullmatch(name):
            raise ValueError(f"{what} name {name!r}: use lowercase letters, digits, '.', '_' or '-'")
        if not callable(fn):
            raise ValueError(f"{what} {name!r}: {fn!r} is not callable")
        with self._lock:
            if name in table and table[name] is not fn:
                raise ValueError(f"{what} {name!r} is already registered")
            table[name] = fn

    # ------------------------------------------------------------------ plugins
    def load_plugins(self) -> None:
        """Load the plugins once (later calls return at once). A failing plugin is recorded, not raised."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True  # first: a plugin that looks something up does not load again
            refs = plugin_refs() if self._plugin_list is None else self._plugin_list
            for ref in refs:
                try:
                    load_plugin(ref)(self)
                except Exception as e:  # noqa: BLE001 - one broken package never stops trex
                    self._failures[ref] = f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)

    def plugin_failures(self) -> dict[str, str]:
        """``{plugin reference: why it failed}`` of the plugins that did not load."""
        self.load_plugins()
        return dict(self._failures)

    # ------------------------------------------------------------------ lookups
    def task(self, name: str) -> Task | None:
        """The runnable built-in task of that name, or None."""
        self.load_plugins()
        return self._tasks.get(name)

    def tasks(self) -> list[Task]:
        self.load_plugins()
        return [self._tasks[k] for k in sorted(self._tasks)]

    def spec(self, name: str) -> TaskSpec | None:
        """The registered task file of that name (runnable here or not), or None."""
        self.load_plugins()
        return self._specs.get(name)

    def specs(self) -> dict[str, TaskSpec]:
        self.load_plugins()
        return dict(sorted(self._specs.items()))

    def is_builtin(self, name: str) -> bool:
        """A name a plugin registered (runnable or known only): a user's task may not take it."""
        self.load_plugins()
        return name in self._tasks or name in self._specs

    def base_model(self, name: str) -> BaseModelBuilder:
        self.load_plugins()
        try:
            return self._base_models[name]
        except KeyError:
            raise KeyError(f"unknown base model builder {name!r} (known: {', '.join(self.base_model_names())})") from None

    def data_generator(self, name: str) -> DataGenerator:
        self.load_plugins()
        try:
            return self._generators[name]
        except KeyError:
            raise KeyError(f"unknown data generator {name!r} (known: {', '.join(self.data_generator_names())})") from None

    def base_model_names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._base_models)

    def data_generator_names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._generators)

    def check_task(self, task: Task) -> Task:
        """``task`` names one model source and one data source, known ones, and one primary metric."""
        self.load_plugins()
        if (task.base_model is None) == (task.base_model_path is None):
            raise ValueError(f"task {task.name!r}: needs exactly one of a base model builder and a model folder")
        if task.base_model is not None and task.base_model not in self._base_models:
            raise ValueError(f"task {task.name!r}: unknown base model builder {task.base_model!r}")
        if (task.data is None) == (task.data_files is None):
            raise ValueError(f"task {task.name!r}: needs exactly one of a data generator and data files")
        if task.data is not None and task.data not in self._generators:
            raise ValueError(f"task {task.name!r}: unknown data generator {task.data!r}")
        if sum(m.primary for m in task.metrics) != 1:
            raise ValueError(f"task {task.name!r}: exactly one metric must be primary")
        return task


REGISTRY = TaskRegistry()  # the process's registry; its plugins load on the first lookup


def register_base_model(name: str, fn: BaseModelBuilder) -> None:
    REGISTRY.register_base_model(name, fn)


def register_data_generator(name: str, fn: DataGenerator) -> None:
    REGISTRY.register_data_generator(name, fn)


def register_task(task: Task) -> Task:
    return REGISTRY.register_task(task)


def register_task_file(path: str | os.PathLike) -> TaskSpec:
    return REGISTRY.register_task_file(path)


def is_builtin(name: str) -> bool:
    return REGISTRY.is_builtin(name)


def check_task(task: Task) -> Task:
    return REGISTRY.check_task(task)
