"""The ``ftbench`` command: ``list``, ``prepare``, ``run`` (the benchmark matrix), ``report``."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click

from trex.commands.common import FiniteRange, OneLineErrors, finite, format_option, home_option
from trex.propose.space import DEFAULT_TRIAL_STEPS


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """FT-Bench: fine-tuning tasks for trex."""


@main.command("list")
@format_option
def list_(fmt: str) -> None:
    """List every task: the CPU tasks that run here and the paper's tasks (GPU + hub)."""
    from ftbench.tasks import builtin_specs
    from trex.tasks import fetch_plan, problems

    rows = []
    for spec in builtin_specs().values():
        why = problems(spec)
        rows.append({"name": spec.name, "domain": spec.domain, "runnable_here": not why, "problems": why,
                     "requires": spec.requires.model_dump(mode="json"), "fetches": fetch_plan(spec),
                     "primary_metric": spec.primary.name, "spec": spec.model_dump(mode="json")})
    if fmt == "json":
        click.echo(json.dumps(finite(rows), indent=2, sort_keys=True, allow_nan=False))
        return
    for r in rows:
        where = "runs here" if r["runnable_here"] else ("needs " + " + ".join(
            k for k in ("gpu", "hub") if r["requires"][k]) or "more")
        click.echo(f"{r['name']}\t{r['domain']}\t{r['primary_metric']}\t{where}")


@main.command()
@click.argument("family")
@home_option
@click.option("--seed", type=int, default=0, show_default=True)
@format_option
def prepare(family: str, home: Path, seed: int, fmt: str) -> None:
    """Build (or find cached) the base model and data of a task family; print path and base scores.

    FAMILY is ``arith`` (the CPU tasks' base model) or a task name; for a task that needs the hub
    it prints exactly what it would fetch and exits with status 2 (nothing is fetched here)."""
    if family != "arith":
        from ftbench.tasks import builtin_specs
        from trex.tasks import fetch_plan, problems

        spec = builtin_specs().get(family)
        if spec is None:
            click.echo(f"error: unknown task {family!r} (see `ftbench list`)", err=True)
            raise SystemExit(1)
        if spec.base_model.builder == "arith-base":
            family = "arith"
        else:
            plan = {"task": spec.name, "would_fetch": fetch_plan(spec), "problems": problems(spec)}
            if fmt == "json":
                click.echo(json.dumps(finite(plan), indent=2, sort_keys=True, allow_nan=False))
            else:
                for line in plan["would_fetch"]:
                    click.echo(f"would fetch: {line}")
                for line in plan["problems"]:
                    click.echo(f"cannot run here: {line}", err=True)
            raise SystemExit(2)
    from ftbench.arith import evaluate_adapter, model_dir, prepare_base_model
    from trex.tasks import prepare_data
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    cached = (model_dir(home, seed) / "build.json").is_file()
    if not cached:
        click.echo(f"building arith-base-{seed} (about a minute or more on a CPU)...", err=True)
    path = prepare_base_model(home, seed=seed, log=lambda m: click.echo(m, err=True))
    prepare_data("arith-sub", home)
    scores = evaluate_adapter(None, "arith-sub", home, base_model_dir=path)
    build = json.loads((path / "build.json").read_text())
    out = {"model_dir": str(path), "cached": cached, "base_scores": scores, "build": build}
    if fmt == "json":
        click.echo(json.dumps(finite(out), indent=2, sort_keys=True, allow_nan=False))
    else:
        click.echo(str(path))
        for k, v in scores.items():
            click.echo(f"{k}\t{v:.4f}")



def _csv(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


@main.command()
@click.option("--tasks", required=True, help="Comma-separated task names or task files.")
@click.option("--proposers", default="llm,optuna,random", show_default=True,
              help="Comma-separated proposers: llm, llm-notools (the LLM without tools), rules (rules + optimiser, "
                   "no LLM), optuna, random.")
@click.option("--policy", type=click.Choice(["mcts", "greedy", "best-first"]), default="mcts", show_default=True)
@click.option("--budget-trials", type=click.IntRange(1, 100_000), default=10, show_default=True)
@click.option("--seeds", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="Seeds 0..N-1 per (task, proposer).")
@click.option("--parallel", type=click.IntRange(1, 256), default=1, show_default=True, help="Executors per search.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="Torch threads per executor "
              "(default: CPUs / parallel).")
@click.option("--steps", type=click.IntRange(1, 1_000_000), default=None,
              help="Optimizer steps per trial (default: each task file's budget.steps).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help="Default: each task file's.")
@click.option("--eval-limit", type=click.IntRange(1, None), default=None,
              help="Evaluation examples per split (default: each task file's).")
@click.option("--trial-time-limit", type=FiniteRange(1, None), default=900.0, show_default=True)
@click.option("--reuse", type=click.Choice(["cell", "home"]), default="cell", show_default=True,
              help="Where a trial may be served from identical work: its own search (cells stay independent "
                   "samples) or any search in the home (faster; the report charges the source's compute).")
@click.option("--tag", default="ftb", show_default=True,
              help="Names this benchmark run: searches are <tag>-<task>-<proposer>-s<seed>.")
@home_option
@format_option
def run(tasks, proposers, policy, budget_trials, seeds, parallel, threads, steps, batch_size, eval_limit,
        trial_time_limit, reuse, tag, home, fmt):
    """Run every (task, proposer, seed) as a trex search; run it again to continue where it stopped."""

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from trex.commands.common import emit_json, fail, info
    from trex.commands.run_cmds import executor_threads, resolve_task

    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,31}", tag):
        fail(f"--tag {tag!r}: use lowercase letters, digits, '.', '_' or '-'")
    props = _csv(proposers)
    known = ("llm", "llm-notools", "rules", "optuna", "random")
    bad = [p for p in props if p not in known]
    if bad or not props:
        fail(f"--proposers: unknown {', '.join(bad) or '(none given)'} (known: {', '.join(known)})")
    home.mkdir(parents=True, exist_ok=True)
    resolved = {}
    for arg in _csv(tasks):
        t, extra = resolve_task(arg, home)
        resolved[t.name] = (t, extra)
    if not resolved:
        fail("--tasks: no task given")

    from ftbench.runner import cells, run_cells, start_cell
    from trex.tasks import prepare_task
    from trex.actors.conduct import spawn_pool
    from trex.actors.runtime import init_ray

    console = Console(stderr=True)
    for name, (t, _) in resolved.items():
        with console.status(f"preparing {name} (the base model is built once, then cached)…"):
            try:
                prepare_task(t, home)
            except KeyError as e:
                fail(f"cannot prepare task {name!r}: {e.args[0] if e.args else e}")
    threads = executor_threads(init_ray(home).cluster_resources(), parallel, threads)
    todo = cells(list(resolved), props, list(range(seeds)), tag)
    for c in todo:
        t, extra = resolved[c.task]
        d = t.defaults
        try:
            start_cell(home, c, t, budget_trials=budget_trials, policy=policy.replace("-", "_"), parallel=parallel,
                       threads=threads, steps=steps or d.get("steps") or DEFAULT_TRIAL_STEPS,
                       batch_size=batch_size or d.get("batch_size") or 32, eval_limit=eval_limit or d.get("eval_limit"),
                       trial_time_limit_s=trial_time_limit, extra=extra, reuse=reuse)
        except ValueError as e:
            fail(str(e))
    info(f"{len(todo)} searches ({len(resolved)} task(s) x {len(props)} proposer(s) x {seeds} seed(s)), "
         f"{budget_trials} trials each, {parallel} executor(s) x {threads} thread(s); home {home}")
    pool = spawn_pool(parallel, threads=threads, time_limit_s=trial_time_limit,
                      executor_options={"reuse": "search" if reuse == "cell" else "home"}).as_dict()
    done: set[str] = set()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False, disable=not console.is_terminal) as bar:
        overall = bar.add_task("searches", total=len(todo))
        current = bar.add_task("", total=budget_trials)
        last = [None]

        def tick(cell, tree, elapsed):
            n = tree.trials_finished + tree.trials_reused + tree.trials_failed
            best = "-" if tree.best_score is None else f"{tree.best_score:.3f}"
            line = f"{cell.search_id}: trials {n}/{budget_trials}, best {best}"
            bar.update(current, description=line, completed=n)
            if tree.status == "finished" and cell.search_id not in done:
                done.add(cell.search_id)
                bar.advance(overall)
            if not console.is_terminal and line != last[0]:
                info(f"[{len(done)}/{len(todo)}] {line} ({elapsed:.0f}s)")
                last[0] = line

        try:
            summaries = run_cells(home, todo, pool, on_tick=tick)
        except Exception as e:  # noqa: BLE001 - the log holds everything done so far
            fail(f"the conductor stopped: {e}\nthe same `ftbench run` command continues where it stopped")
    rows = [{"search_id": c.search_id, "task": c.task, "proposer": c.proposer, "seed": c.seed,
             "status": s.get("status"), "trials": s.get("trials"), "best_score": s.get("best_score")}
            for c, s in zip(todo, summaries)]
    if fmt == "json":
        emit_json(rows)
    else:
        for r in rows:
            best = "-" if r["best_score"] is None else f"{r['best_score']:.4f}"
            click.echo(f"{r['search_id']}\t{r['status']}\t{r['trials']} trials\tbest {best}")
        info(f"`ftbench report --tag {tag} --home {home}` writes the report")



@main.command()
@click.option("--tag", default="ftb", show_default=True, help="The benchmark run (ftbench run --tag).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for report.md, results.json and the plots (default: HOME/reports/TAG).")
@home_option
@format_option
def report(tag, out_dir, home, fmt):
    """Write the Markdown report and PNG plots of a benchmark run, read from the log with DuckDB."""
    from ftbench.report import write_report
    from trex.commands.common import emit_json, fail, info
    from trex.events.sql import SqlFailed, SqlRefused

    if not home.is_dir():
        fail(f"no trex home at {home}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,31}", tag):  # it becomes a folder name: never a path
        fail(f"--tag {tag!r}: use lowercase letters, digits, '.', '_' or '-'")
    out_dir = out_dir or home / "reports" / tag
    from trex.events.fsio import in_log_folder

    if in_log_folder(out_dir, home):  # resolved: a link to it, or `..` through it, is seen
        fail(f"--out {out_dir}: refusing to write the report into the log's own folder ({home / 'log'})")
    try:
        summary = write_report(home, tag, out_dir, warn=info)
    except LookupError as e:
        fail(str(e.args[0]))
    except (SqlFailed, SqlRefused) as e:  # a damaged log, a link in it: one line naming the segment
        fail(str(e))
    if fmt == "json":
        emit_json(summary)
        return
    click.echo(str(out_dir / "report.md"))
    for task, s in summary["tasks"].items():
        for p, r in s["proposers"].items():
            best = "-" if r["best_median"] is None else f"{r['best_median']:.4f}"
            info(f"{task}\t{p}\tbest median {best}\treached 90%: {r['reached_90']}/{len(r['seeds'])}")


if __name__ == "__main__":
    main()
