"""Finding a task by name: a built-in one (from the registry's plugins), else one installed in the
trex home, else one published to the artifact store (:mod:`trex.tasks.published`), else a clear
refusal — naming why a known task cannot run here, or the known names."""
from __future__ import annotations

import os

from trex.tasks.checks import problems
from trex.tasks.installed import installed_task
from trex.tasks.model import Task
from trex.tasks.registry import REGISTRY


def get_task(name: str, home: str | os.PathLike | None = None) -> Task:
    """A built-in task, or a user's task installed in the trex home (``home``, else $TREX_HOME), or
    one the home's node published to object storage (fetched and installed here: a worker node).

    KeyError (one line) for a known task that cannot run here, with the reason, or an unknown one."""
    t = REGISTRY.task(name)
    if t is not None:
        return t
    t = installed_task(name, home)
    if t is not None:
        return t
    spec = REGISTRY.spec(name)
    if spec is None:  # a node without the home (or a new home on the same store): the task its head published
        from trex.tasks.published import fetch_task

        try:
            t = fetch_task(name, home)
        except KeyError:
            raise
        except Exception as e:  # noqa: BLE001 - a store that cannot be read, or a bad artifact: one line
            raise KeyError(f"task {name!r}: the published copy cannot be used: {e}") from None
        if t is not None:
            return t
    if spec is not None:  # a known task that cannot run here: say why
        raise KeyError(f"task {name!r} cannot run here: {'; '.join(problems(spec)) or 'not a local task'}")
    known = ", ".join(t.name for t in REGISTRY.tasks()) or "none: no task plugin is installed"
    failed = "".join(f"; task plugin {ref} failed: {why}" for ref, why in REGISTRY.plugin_failures().items())
    raise KeyError(f"unknown task {name!r} (known: {known}){failed}")


def as_task(task: Task | str, home: str | os.PathLike | None = None) -> Task:
    """``task`` itself, or the task of that name (:func:`get_task`)."""
    return get_task(task, home) if isinstance(task, str) else task


def list_tasks() -> list[Task]:
    """The runnable built-in tasks, by name."""
    return REGISTRY.tasks()
