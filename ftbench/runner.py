"""``ftbench run``: every (task, proposer, seed) as a normal trex search, one after another.

Each cell is a search with a fixed id (``<tag>-<task>-<proposer>-s<seed>``), so running the same
command again skips finished cells and continues an interrupted one where its log stops (the
Conductor's own recovery: nothing trained twice). One local Ray and one actor pool serve every
cell. The cell's coordinates are recorded in ``SearchStarted.labels`` (``ftbench_tag``, …), which is how
``ftbench report`` finds them with SQL.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Cell:
    task: str
    proposer: str
    seed: int
    tag: str

    @property
    def search_id(self) -> str:
        return f"{self.tag}-{self.task}-{self.proposer}-s{self.seed}"


def cells(tasks, proposers, seeds, tag: str) -> list[Cell]:
    """Task-major order, seeds interleaved across proposers (a cut-short run still compares them)."""
    return [Cell(t, p, s, tag) for t in tasks for s in seeds for p in proposers]


def start_cell(home: Path, cell: Cell, task, *, budget_trials: int, policy: str, parallel: int, threads: int,
               steps: int, batch_size: int, eval_limit: int | None, trial_time_limit_s: float,
               extra: dict | None = None, reuse: str = "cell") -> str:
    """Record the cell's ``SearchStarted`` (once; an existing search is left as it is). ``reuse``: where its
    trials may be served from identical work — ``cell``, its own search only (cells are independent samples:
    work another cell did would arrive at no cost and change this cell's timing, and with it the decisions),
    or ``home`` (any search in the home; faster, and its compute is charged in the report). It is the
    label ``ftbench_reuse`` (a search started before it existed reused across the home)."""
    from trex.conductor import SearchConfig, start_search
    from trex.events.log import EventLog
    from trex.events.search import Budget

    log = EventLog(home)
    want = {"max_trials": budget_trials, "policy": policy, "trial_steps": steps, "batch_size": batch_size,
            "eval_limit": eval_limit, "reuse": reuse}
    if log.exists(cell.search_id):  # continue it, but only with the settings it was started with
        first = log.read(cell.search_id, until_seq=1)[0].event
        mine = cell_labels(cell)
        if {k: first.labels.get(k) for k in mine} != mine or first.task != task.name:
            raise ValueError(f"search {cell.search_id} exists in {home} but is not this benchmark cell ({mine}); "
                             "use another --tag")
        have = {"max_trials": first.budget.max_trials, "policy": first.policy,
                "trial_steps": first.trial.steps, "batch_size": first.trial.batch_size,
                "eval_limit": first.trial.eval_limit, "reuse": first.labels.get("ftbench_reuse", "home")}
        diff = {k: (have[k], v) for k, v in want.items() if have[k] != v}
        if diff:
            raise ValueError(f"search {cell.search_id} exists with other settings ("
                             + ", ".join(f"{k} {a} there, {b} asked" for k, (a, b) in diff.items())
                             + "): rerun with its settings to continue it, or use another --tag")
        return cell.search_id
    cfg = SearchConfig(
        task=task.name, proposer=cell.proposer, policy=policy, seed=cell.seed,
        budget=Budget(max_trials=budget_trials), trial_steps=steps, batch_size=batch_size, eval_limit=eval_limit,
        trial_time_limit_s=trial_time_limit_s, threads=threads, parallel=parallel,
        # cells are independent samples: the llm proposer does not read other cells' insights
        extra={**(extra or {}), "prior_insights": False, "metric_direction": task.primary_metric.direction,
               "labels": {**cell_labels(cell), "ftbench_reuse": reuse}})
    return start_search(log, cfg, cell.search_id)


def cell_labels(cell) -> dict[str, str]:
    """The cell's coordinates as the search's labels (what ``ftbench report`` selects by)."""
    return {"ftbench_tag": cell.tag, "ftbench_task": cell.task, "ftbench_proposer": cell.proposer,
            "ftbench_seed": str(cell.seed)}


def run_cells(home: Path, todo: list[Cell], pool: dict, *, on_tick: Callable[[Cell, object, float], None],
              poll_s: float = 1.0) -> list[dict]:
    """Conduct each cell's search to its end with ``pool``; returns each search's summary."""
    import ray

    from trex.actors.shells import remote_classes
    from trex.commands.run_cmds import follow
    from trex.events.log import EventLog
    from trex.search import build_tree

    log = EventLog(home)
    out = []
    for cell in todo:
        tree = build_tree(log, cell.search_id)
        if tree.status == "finished":
            out.append(tree.summary())
            on_tick(cell, tree, 0.0)
            continue
        conductor = remote_classes()["conductor"].remote()
        ref = conductor.run.remote(str(home.resolve()), cell.search_id, pool)
        t0 = time.time()
        follow(ref, log, cell.search_id, tree, lambda t: on_tick(cell, t, time.time() - t0), poll_s)
        out.append(ray.get(ref))
        ray.kill(conductor)
    return out
