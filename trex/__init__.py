"""trex: agent-driven tree search over LLM fine-tuning strategies, over an append-only event log.

The public API for scripts::

    import trex

    log = trex.EventLog(home)
    sid = trex.start_search(log, trex.SearchConfig(task="arith-sub", proposer="optuna",
                                                   budget=trex.Budget(max_trials=4)))
    tree = trex.run_search(home, sid)          # the in-process driver (`trex run` uses the Ray actors)
    tree = trex.build_tree(log, sid)           # the same tree, at any time: a pure fold of the events
    print(tree.best_node_id, trex.tree_hash(tree))

Tasks: ``trex.get_task(name)``, ``trex.load_task_file(path)``, and the hooks a task plugin
calls (``register_task``, ``register_base_model``, ``register_data_generator``,
``register_scorer``). Everything else is reached through its package (``trex.events``,
``trex.search``, ``trex.tasks``, ``trex.llm``, ``trex.evaluate``, ...).

Names resolve on first use, so ``import trex`` imports none of torch, transformers, Ray or
vLLM; ``tests/test_exports.py`` pins this list.
"""
from __future__ import annotations

import importlib

# name -> the module that defines it
_EXPORTS = {
    # the event log
    "EventLog": "trex.events.log",
    "UnknownSearch": "trex.events.log",
    "default_home": "trex.events.log",
    "EventError": "trex.events.base",
    "Budget": "trex.events.search",
    # starting and running a search
    "SearchConfig": "trex.conductor",
    "start_search": "trex.conductor",
    "run_search": "trex.conductor",
    # the tree: replay, fork, hash
    "SearchTree": "trex.search.tree",
    "Node": "trex.search.tree",
    "build_tree": "trex.search.replay",
    "fork": "trex.search.replay",
    "fold": "trex.search.projection",
    "tree_hash": "trex.search.hashing",
    # tasks and the plugin hooks
    "Task": "trex.tasks.model",
    "MetricSpec": "trex.tasks.model",
    "TaskSpec": "trex.tasks.schema",
    "SpecError": "trex.tasks.schema",
    "get_task": "trex.tasks.lookup",
    "list_tasks": "trex.tasks.lookup",
    "load_task_file": "trex.tasks.checks",
    "install_task": "trex.tasks.installed",
    "prepare_task": "trex.tasks.prepare",
    "load_split": "trex.tasks.prepare",
    "register_task": "trex.tasks.registry",
    "register_base_model": "trex.tasks.registry",
    "register_data_generator": "trex.tasks.registry",
    "register_scorer": "trex.tasks.metrics",
    # what a trial trains, and where its outputs live
    "Plan": "trex.plan",
    "parse_plan": "trex.plan",
    "plan_hash": "trex.plan",
    "Recipe": "trex.recipe",
    "ArtifactStore": "trex.artifacts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup does not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
