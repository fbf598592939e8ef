"""A user's tasks, recorded in the trex home (``HOME/tasks/<name>/task.json``).

A task from a task file is installed so that every process of a search — executors, evaluator,
researcher, ``trex resume`` — finds it by name. A name means one definition for as long as the
home's log exists: a second, different definition under the same name is refused, and so is a
built-in task's name.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from trex.tasks.model import NAME_PATTERN, Task
from trex.tasks.registry import REGISTRY

_NAME = re.compile(NAME_PATTERN)


def trex_home(home: str | os.PathLike | None = None) -> Path:
    """``home``, else $TREX_HOME, else ``./.trex``."""
    return Path(home if home is not None else os.environ.get("TREX_HOME", ".trex"))


def task_folder(name: str, home: str | os.PathLike | None = None) -> Path:
    """``HOME/tasks/<name>``: the installed definition and the prepared data of a task."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):  # a name from outside never becomes a path
        raise KeyError(f"{name!r} is not a task name (lowercase letters, digits, '.', '_', '-')")
    return trex_home(home) / "tasks" / name


def _one_line(e: ValueError) -> str:
    """A pydantic ``ValidationError`` (or any ``ValueError``) as one short line."""
    from pydantic import ValidationError

    from trex.events.base import validation_errors

    return " ".join((validation_errors(e, 4) if isinstance(e, ValidationError) else str(e)).split())[:500]


def _read_definition(p: Path) -> Task:
    """The :class:`Task` recorded in ``p`` (an installed ``task.json``); ValueError naming the file, in one
    line, for one that is not a regular file, too large, or not a valid task definition."""
    from trex.tasks.files import InputFileError, read_input_file

    try:
        return Task.model_validate_json(read_input_file(p, "installed task definition"))
    except InputFileError:
        raise
    except ValueError as e:  # pydantic's ValidationError: not JSON, or not a task
        raise ValueError(f"{p}: a damaged installed task definition ({_one_line(e)})") from None


def installed_task(name: str, home: str | os.PathLike | None = None) -> Task | None:
    """The task installed under ``name`` in the home, or None. ``KeyError`` (one line, naming the file) for
    a ``task.json`` there that cannot be used: not a regular file, damaged, or not a task this registry
    can run (remove ``HOME/tasks/<name>`` and run its task file again)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return None
    p = task_folder(name, home) / "task.json"
    if not os.path.lexists(p):
        return None
    try:
        task = _read_definition(p)
    except ValueError as e:
        raise KeyError(f"task {name!r}: {e}") from None
    try:
        return REGISTRY.check_task(task)
    except ValueError as e:  # its messages name the task
        raise KeyError(f"{e} (its installed definition: {p})") from None


def install_task(task: Task, home: str | os.PathLike | None = None) -> Path | None:
    """Record a user's task in the home; the path of its ``task.json`` (None for a built-in task's
    own definition, which needs no installing). ValueError for a taken name, or a damaged definition
    recorded under it (named; nothing written); ``LinkRefused`` for a link at ``HOME/tasks``, the task's
    folder or its ``task.json`` (never written through)."""
    if REGISTRY.is_builtin(task.name):  # the runnable ones and the known-only (hub) ones alike
        if REGISTRY.task(task.name) == task:
            return None
        raise ValueError(f"task {task.name!r}: a built-in task has that name; rename the task file's `name`")
    from trex.events.fsio import check_not_link, ensure_dir_under, write_file_replace

    p = task_folder(task.name, home) / "task.json"
    ensure_dir_under(trex_home(home), p.parent)  # no folder on the way is a link (LinkRefused names it)
    if check_not_link(p).is_file():
        if _read_definition(p) != task:  # a damaged one: ValueError naming it, nothing written
            raise ValueError(f"task {task.name!r} is already installed in {p.parent.parent.parent} with a different "
                             f"definition ({p}); rename the task file's `name`")
        return p
    write_file_replace(p, task.model_dump_json(indent=2).encode("utf-8"))
    return p
