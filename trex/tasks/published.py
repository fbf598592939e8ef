"""A user's task on nodes that cannot see the home: published to object storage, fetched by name.

A task from a task file lives in ``HOME/tasks/<name>/`` (its definition and its prepared splits,
read from the user's own files). A worker node works from a node-local stand-in of the home
(:func:`trex.actors.log_service.node_home`) that has none of it. With the artifact store on
object storage (``TREX_ARTIFACTS``), the node that holds the home publishes the task — its
``task.json`` and one ``<split>.jsonl`` per split, pools included (pools are splits) — as one
content-addressed artifact named by the ref ``task-<name>`` (and its own base model folder, if it
names one, under ``model-<hash of the folder's path>``); a node that does not know the task
fetches it from there into its own ``tasks/<name>/`` (:func:`fetch_task`, called by
:func:`trex.tasks.get_task` for a name it does not know).

What arrives is checked as if it came from outside: the artifact's files are verified against
its hash by the store, the definition is validated as a task file's is (it must be the task of
that name), and only the files that definition names are copied, never through a link.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from trex.tasks.installed import installed_task, task_folder, trex_home
from trex.tasks.model import Task, split_file


def _ref_name(name: str) -> str:
    return f"task-{name}"


def _model_ref(path: str) -> str:
    """The ref of a task's own base model folder, by its absolute path (what the task names)."""
    import hashlib

    return f"model-{hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:32]}"


def publish_task(task: Task, home: str | os.PathLike | None = None) -> str | None:
    """Publish a user's task (prepared first) for nodes without the home; its artifact hash, or
    None where there is nothing to do (a built-in task, or a store on the home's own disk)."""
    from trex.artifacts import ArtifactStore
    from trex.tasks.prepare import prepare_data
    from trex.tasks.registry import REGISTRY

    h = trex_home(home)
    store = ArtifactStore(h)
    if store.local or REGISTRY.is_builtin(task.name):
        return None
    data = prepare_data(task, h)
    with tempfile.TemporaryDirectory(prefix="trex-task-") as tmp:
        out = Path(tmp) / task.name
        out.mkdir()
        (out / "task.json").write_text(task.model_dump_json(indent=2))
        for s in task.splits:
            shutil.copyfile(split_file(data, s), split_file(out, s))
        digest = store.put(out)
    if store.ref(_ref_name(task.name)) != digest:
        store.set_ref(_ref_name(task.name), digest)
    if task.base_model_path is not None and (Path(task.base_model_path) / "config.json").is_file():
        # the task first: a model folder the store cannot take (one made of links, as a hub cache's
        # snapshot is) leaves workers that see it on a shared volume able to run the task
        model = store.put(task.base_model_path)  # content-addressed: a no-op (a hash) once it is stored
        if store.ref(_model_ref(task.base_model_path)) != model:
            store.set_ref(_model_ref(task.base_model_path), model)
    return digest


def fetch_base_model(task: Task, home: str | os.PathLike | None = None) -> Path | None:
    """The local copy (downloaded, hash-verified) of the base model folder ``task`` names, as its
    head published it; None where there is none."""
    from trex.artifacts import ArtifactNotFound, ArtifactStore

    store = ArtifactStore(trex_home(home))
    if store.local or task.base_model_path is None:
        return None
    digest = store.ref(_model_ref(task.base_model_path))
    if digest is None:
        return None
    try:
        base = store.get(digest)
    except ArtifactNotFound:
        return None
    return base if (base / "config.json").is_file() else None


def fetch_task(name: str, home: str | os.PathLike | None = None) -> Task | None:
    """The task ``name`` published to the artifact store, installed in ``home`` (a node's local
    folder); None where the store is the home's own disk or holds no such task. ValueError for a
    published artifact that is not that task."""
    from trex.artifacts import ArtifactNotFound, ArtifactStore
    from trex.events.fsio import ensure_dir, write_file_replace
    from trex.tasks.registry import REGISTRY

    h = trex_home(home)
    store = ArtifactStore(h)
    if store.local:
        return None
    task_folder(name, h)  # the name is checked (KeyError) before it becomes a ref or a path
    digest = store.ref(_ref_name(name))
    if digest is None:
        return None
    try:
        src = store.get(digest)
    except ArtifactNotFound:
        return None
    try:
        task = REGISTRY.check_task(Task.model_validate_json((src / "task.json").read_text()))
    except (OSError, ValueError) as e:
        raise ValueError(f"the published task {name!r} ({digest[:12]}) is not a valid task: {e}") from None
    if task.name != name:
        raise ValueError(f"the published task {name!r} ({digest[:12]}) defines task {task.name!r}")
    dest = ensure_dir(h, "tasks", name)
    for s in task.splits:  # the splits first, the definition last: a node that sees task.json sees its data
        try:
            rows = split_file(src, s).read_bytes()
        except OSError:
            raise ValueError(f"the published task {name!r} ({digest[:12]}) has no data for its split {s!r}") from None
        write_file_replace(split_file(dest, s), rows)
    write_file_replace(dest / "task.json", task.model_dump_json(indent=2).encode())
    return installed_task(name, h)
