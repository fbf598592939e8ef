"""Preparing a task: its base model folder (built once by its builder, then cached) and its data
splits as ``HOME/tasks/<name>/<split>.jsonl`` (generated or read from the user's files, once)."""
from __future__ import annotations

import os
from pathlib import Path

from trex.tasks.files import read_jsonl, read_rows, write_jsonl
from trex.tasks.installed import task_folder, trex_home
from trex.tasks.lookup import as_task
from trex.tasks.model import Task, TaskAssets, split_file
from trex.tasks.registry import REGISTRY


def task_data_dir(task: Task | str, home: str | os.PathLike | None = None) -> Path:
    return task_folder(as_task(task, home).name, home)


def prepare_data(task: Task | str, home: str | os.PathLike | None = None) -> Path:
    """Write the task's splits as ``<split>.jsonl`` under the task data folder (idempotent). Never
    through a link: one at ``HOME/tasks``, the task's folder or a split file is refused
    (:class:`~trex.events.errors.LinkRefused`, naming it)."""
    from trex.events.fsio import check_not_link, ensure_dir_under

    t = as_task(task, home)
    d = task_data_dir(t, home)
    ensure_dir_under(trex_home(home), d)  # HOME/tasks/<name>: no folder on the way is a link
    if all(check_not_link(split_file(d, s)).is_file() for s in t.splits):
        return d
    rows = REGISTRY.data_generator(t.data)(t.data_seed) if t.data is not None else {
        split: read_rows(Path(f), t.prompt_field, t.completion_field) for split, f in t.data_files.items()}
    for split in t.splits:
        write_jsonl(rows[split], split_file(d, split), trex_home(home))
    return d


def prepare_task(task: Task | str, home: str | os.PathLike | None = None,
                 base_model_dir: str | os.PathLike | None = None) -> TaskAssets:
    """Base model folder (built and cached if missing) and data folder of a task."""
    t = as_task(task, home)
    h = trex_home(home)
    if base_model_dir is not None:
        base = Path(base_model_dir)
    elif t.base_model_path is not None:
        base = Path(t.base_model_path)
        if not (base / "config.json").is_file():
            from trex.tasks.published import fetch_base_model

            fetched = fetch_base_model(t, h)  # a node that cannot see the folder: the copy its head published
            if fetched is None:
                raise KeyError(f"task {t.name!r}: base model folder {str(base)!r} has no config.json")
            base = fetched
    else:
        base = built_base_model(t, h)
    return TaskAssets(task=t.name, base_model_dir=base, data_dir=prepare_data(t, h))


def load_split(task: Task | str, split: str, home: str | os.PathLike | None = None) -> list[dict]:
    """The rows of one split of the task (prepared first if needed)."""
    t = as_task(task, home)
    if split not in t.splits:
        raise KeyError(f"task {t.name!r} has no split {split!r} (splits: {', '.join(t.splits)})")
    return read_jsonl(split_file(prepare_data(t, home), split))


def built_base_model(t: Task, home: Path) -> Path:
    """A builder's base model. With the artifact store on object storage (``TREX_ARTIFACTS``) it
    is built once, by the first node that needs it, and published there under a ref
    (``base-<builder>-<seed>``); other nodes (a worker that cannot see the home) download it
    instead of building it again. With a local store the home's own copy is used."""
    from trex.artifacts import ArtifactNotFound, ArtifactStore

    store = ArtifactStore(home)
    if store.local:
        return REGISTRY.base_model(t.base_model)(home, t.base_seed)
    name = f"base-{t.base_model}-{t.base_seed}"
    h = store.ref(name)
    if h is not None:
        try:
            return store.get(h)
        except ArtifactNotFound:  # a ref whose artifact is gone: built and published again
            pass
    base = REGISTRY.base_model(t.base_model)(home, t.base_seed)
    store.set_ref(name, store.put(base))
    return base
