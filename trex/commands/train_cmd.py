"""``trex train PLAN.json --task arith-sub``: train one plan outside any search.

The adapter is scored the way a search scores a node (:func:`trex.conductor.make_evaluator` and
:func:`trex.evaluate.evaluate_task`, with the search's default eval limit), so the number it
prints is the number a search would record for that adapter.

Events (training and evaluation) go to the search stream ``train-<plan_hash[:12]>`` of the
home's log; data (adapter hash, metrics) to stdout, progress to stderr. torch and transformers
are imported lazily (in the worker and inside functions), never at import of this module.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import click

from trex.commands.common import FiniteRange, emit_json, fail, format_option, home_option, info


def stream_name(phash: str) -> str:
    return f"train-{phash[:12]}"


def read_plan_file(plan_file: Path):
    """The parsed JSON of a plan file, or one error line naming the file and exit 1.

    The file must be a regular file of at most :data:`~trex.tasks.files.MAX_INPUT_BYTES` (a FIFO would
    block forever, ``/dev/zero`` be read until memory runs out: both refused before reading), UTF-8 JSON
    read by the log's strict decoder (:func:`trex.events.log.strict_json`: a key given twice, NaN,
    nesting deeper than the log takes are refused), with no integer of more digits than Python reads."""
    from trex.events.log import MAX_JSON_DEPTH, strict_json
    from trex.tasks.files import InputFileError, long_number_line, read_input_file, too_long_number

    try:
        text = read_input_file(plan_file, "plan").decode("utf-8")
    except InputFileError as e:
        fail(str(e))
    except UnicodeDecodeError as e:
        fail(f"{plan_file}: not a JSON plan: not UTF-8 text ({e.reason} at byte {e.start})")
    try:
        return strict_json(text)
    except json.JSONDecodeError as e:
        fail(f"{plan_file}: not a JSON plan: {e}")
    except ValueError as e:
        long = too_long_number(e)
        if long is not None:
            line = long_number_line(text)
            fail(f"{plan_file}: not a JSON plan: {f'line {line}: ' if line else ''}{long}")
        why = str(e)
        if why == f"nested deeper than {MAX_JSON_DEPTH} levels":
            fail(f"{plan_file}: the plan is nested too deeply to read ({why})")
        fail(f"{plan_file}: not a JSON plan: {why}")


@click.command()
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--task", required=True, help="A task name, e.g. arith-sub.")
@home_option
@format_option
@click.option("--threads", type=int, default=None, help="torch threads in the worker (default: all cores).")
@click.option("--time-limit", type=FiniteRange(0, min_open=True), default=None,
              help="Seconds before the trial is killed (timeout).")
@click.option("--eval-limit", type=click.IntRange(1, None), default=None,
              help="Examples per eval split (default: the task file's budget.eval_limit, else 200, as in a search).")
@click.option("--no-eval", is_flag=True, help="Skip scoring the adapter on the task's eval sets.")
def train(plan_file: Path, task: str, home: Path, fmt: str, threads: int | None, time_limit: float | None,
          eval_limit: int | None, no_eval: bool) -> None:
    """Train one plan outside any search and print the adapter hash and metrics."""
    from rich.console import Console

    from trex.events import EventLog
    from trex.plan import parse_plan, plan_hash
    from trex.train.executor import Executor

    raw = read_plan_file(plan_file)
    plan = parse_plan(raw)
    if isinstance(plan, str):
        fail(f"{plan_file}: {plan}")
        return
    if plan.continue_from_parent:
        fail(f"{plan_file}: continue_from_parent needs a parent node; `trex train` trains plans alone")
        return
    from trex.tasks import get_task

    try:
        t = get_task(task, home)
    except KeyError as e:
        fail(str(e.args[0]))
        return
    phash = plan_hash(plan)
    sid = stream_name(phash)
    log = EventLog(home)
    console = Console(stderr=True)

    def emit(ev) -> None:
        log.append(sid, [ev])
        name = type(ev).__name__
        if name == "TrialProgressed":
            console.print(f"[dim]step {ev.step}[/] loss {ev.loss if ev.loss is None else f'{ev.loss:.4f}'}")
        elif name in ("TrialStarted", "TrialFinished", "TrialFailed", "TrialReused"):
            console.print(f"[bold]{name}[/] " + ", ".join(
                f"{k}={v}" for k, v in ev.model_dump().items() if k in ("trial_id", "adapter", "reason", "message", "worker")))

    info(f"training plan {phash[:12]} on {task} (events: search {sid} in {home})")
    if not log.exists(sid):
        from trex.events.search import SearchStarted

        log.append(sid, [SearchStarted(task=task, proposer="manual", policy="none", seed=plan.seed,
                                       labels={"plan_hash": phash, "command": "trex train"})])
    ex = Executor(home, emit, search_id=sid, threads=threads, time_limit_s=time_limit)
    cancel = threading.Event()
    try:
        out = ex.run(plan, task=task, node_id="root", cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        fail("interrupted")
        return
    result = {"search_id": sid, "plan_hash": phash, "status": out.status, "adapter": out.adapter,
              "steps": out.steps, "train_metrics": out.train_metrics, "compute_seconds": out.compute_seconds,
              "reason": out.reason, "message": out.message}
    if out.ok and not no_eval:
        adapter_dir = ex.store.get(out.adapter)
        result["adapter_path"] = str(adapter_dir)
        result.update(_score(home, t, adapter_dir, eval_limit or t.defaults.get("eval_limit") or 200, emit))
    if fmt == "json":
        emit_json(result)
    else:
        if out.ok:
            click.echo(f"adapter\t{out.adapter}")
            click.echo(f"status\t{out.status}")
            for k, v in sorted({**out.train_metrics, **result.get("eval_metrics", {})}.items()):
                click.echo(f"{k}\t{v:.6g}" if isinstance(v, float) else f"{k}\t{v}")
        else:
            click.echo(f"status\t{out.status}\nreason\t{out.reason}\nmessage\t{out.message}")
    if not out.ok:
        raise SystemExit(2)


def _score(home: Path, task, adapter_dir: Path, limit: int, emit) -> dict:
    """The adapter on every split of the task, as a search scores a node (the same evaluator and
    limit); the result's eval fields. A failed evaluation is an event and one error line."""
    from transformers.utils import logging as hf_logging

    from trex.conductor import make_evaluator
    from trex.evaluate.evaluator import EvaluationError, evaluate_task

    hf_logging.disable_progress_bar()
    try:
        results = evaluate_task(make_evaluator(home, task.name, emit), task, adapter_dir, node_id="root", home=home,
                                limit=limit)
    except EvaluationError as e:
        fail(f"the adapter trained ({adapter_dir}) but its evaluation failed: {e}", code=2)
    primary = task.primary_metric
    return {"eval_metrics": {name: v for r in results.values() for name, v in r.metrics.items()},
            "eval_limit": limit, "primary_metric": primary.name,
            "primary_score": results[primary.split].metrics[primary.name]}
