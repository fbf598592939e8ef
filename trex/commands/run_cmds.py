"""``trex run``, ``trex resume`` and ``trex status``: a search on the actors, from a laptop or a cluster.

``run`` and ``resume`` import Ray (they start or join it); ``status`` reads the log only.
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from trex.commands.common import FiniteRange, emit_json, existing_home, fail, format_option, home_option, info
from trex.propose.space import DEFAULT_TRIAL_STEPS

POLICIES = ["mcts", "greedy", "best-first"]


def _ray_options(f):
    f = click.option("--address", default=None, help="Ray cluster to join (auto, host:6379, ray://host:10001); "
                     "default: a local Ray under the trex home, bound to 127.0.0.1.")(f)
    f = click.option("--num-cpus", type=click.IntRange(1, 4096), default=None,
                     help="CPUs of the local Ray (default: this machine's).")(f)
    f = click.option("--gpus-per-executor", type=FiniteRange(0, 64), default=None,
                     help="GPUs each executor reserves (default: 1 where the cluster has GPUs, else 0).")(f)
    return f


@click.command("run")
@click.argument("task")
@click.option("--proposer", type=click.Choice(["llm", "llm-notools", "rules", "optuna", "random"]), default="llm", show_default=True,
              help="llm: the Researcher with a local or remote model; llm-notools: the same model without "
                   "evidence tools (an ablation); rules: evidence-driven edits with TPE's numbers, no LLM; "
                   "optuna: TPE; random.")
@click.option("--policy", type=click.Choice(POLICIES), default="mcts", show_default=True)
@click.option("--budget-trials", type=click.IntRange(1, 100_000), default=None,
              help="Trials (default: the task file's budget.trials, else 8).")
@click.option("--budget-time", type=FiniteRange(1, None), default=None, help="Wall-clock seconds.")
@click.option("--budget-compute", type=FiniteRange(1, None), default=None, help="Training compute seconds.")
@click.option("--budget-tokens", type=click.IntRange(1, None), default=None, help="LLM tokens.")
@click.option("--parallel", type=click.IntRange(1, 256), default=1, show_default=True, help="Executors.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="Torch threads per executor "
              "(default: CPUs / parallel).")
@click.option("--steps", "trial_steps", type=click.IntRange(1, 1_000_000), default=None,
              help=f"Optimizer steps per trial (default: the task file's budget.steps, else {DEFAULT_TRIAL_STEPS}).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help="Default: the task file's, else 32.")
@click.option("--eval-limit", type=click.IntRange(1, None), default=None,
              help="Evaluation examples per split (default: the task file's, else 200).")
@click.option("--trial-time-limit", type=FiniteRange(1, None), default=600.0, show_default=True)
@click.option("--llm-url", default=None, help="OpenAI-compatible endpoint for the llm proposer (e.g. a vLLM server).")
@click.option("--llm-model", default=None, help="Model name at --llm-url (default: the server's first).")
@click.option("--llm-model-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="A local transformers model folder for the llm proposer (default: embedded SmolLM2).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--search-id", default=None, help="Name the search (default: TASK-<random>).")
@click.option("--allow-overlap", is_flag=True, default=False,
              help="Run a task file whose train split overlaps its held-out splits above the threshold "
                   "(the override is recorded in the search's labels).")
@_ray_options
@home_option
@format_option
def run(task, proposer, policy, budget_trials, budget_time, budget_compute, budget_tokens, parallel, threads,
        trial_steps, batch_size, eval_limit, trial_time_limit, llm_url, llm_model, llm_model_dir, seed, search_id,
        allow_overlap, address, num_cpus, gpus_per_executor, home, fmt):
    """Run a search on TASK with the actors: propose, train, evaluate, learn — until the budget is spent.

    TASK is a built-in task's name (from the installed task plugins) or a task file (`path/to/task.yaml`);
    a task file is checked whole before anything starts and recorded in the trex home and the log."""
    from trex.conductor import SearchConfig, start_search
    from trex.events.log import EventLog
    from trex.events.search import Budget

    t, extra = resolve_task(task, home, allow_overlap=allow_overlap)
    task = t.name
    d = t.defaults
    budget_trials = budget_trials or d.get("trials") or 8
    trial_steps = trial_steps or d.get("steps") or DEFAULT_TRIAL_STEPS
    batch_size = batch_size or d.get("batch_size") or 32
    eval_limit = eval_limit or d.get("eval_limit") or 200
    llm = None
    if llm_url:
        llm = {"url": llm_url, **({"model": llm_model} if llm_model else {})}
    elif llm_model_dir:
        llm = {"model_dir": str(Path(llm_model_dir).resolve())}
    cfg = SearchConfig(task=task, proposer=proposer, policy=policy.replace("-", "_"), seed=seed,
                       budget=Budget(max_trials=budget_trials, max_seconds=budget_time,
                                     max_compute_seconds=budget_compute, max_tokens=budget_tokens),
                       trial_steps=trial_steps, batch_size=batch_size, eval_limit=eval_limit,
                       trial_time_limit_s=trial_time_limit, threads=threads, parallel=parallel, llm=llm,
                       extra=extra)
    home.mkdir(parents=True, exist_ok=True)
    log = EventLog(home)
    if search_id and log.exists(search_id):
        fail(f"search {search_id!r} already exists in {home}: `trex resume {search_id}` continues it")
    sid = start_search(log, cfg, search_id)
    info(f"search {sid}: task {task}, proposer {proposer}, policy {policy}, {budget_trials} trials, "
         f"{parallel} executor(s)")
    _drive(home, sid, parallel=parallel, threads=threads, address=address, num_cpus=num_cpus, fmt=fmt,
           gpus=gpus_per_executor)


@click.command("resume")
@click.argument("search")
@click.option("--parallel", type=click.IntRange(1, 256), default=None, help="Executors (default: as started).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None)
@_ray_options
@home_option
@format_option
def resume(search, parallel, threads, address, num_cpus, gpus_per_executor, home, fmt):
    """Continue SEARCH after a crash or a stop: nothing lost, nothing trained twice."""
    from trex.events.log import EventLog
    from trex.search import build_tree

    log = EventLog(home)
    if not log.exists(search):
        fail(f"no search {search!r} in {home} (see `trex ls --home {home}`)")
    tree = build_tree(log, search)
    if tree.status == "finished":
        info(f"search {search} is already finished ({tree.finish_reason})")
        _report(home, search, tree, fmt)
        return
    _check_task(tree.task, home, tree.started.task_def)
    par = parallel or max(1, tree.parallel)
    _drive(home, search, parallel=par, threads=threads or tree.started.trial.threads, address=address,
           num_cpus=num_cpus, fmt=fmt, gpus=gpus_per_executor)


@click.command("status")
@click.argument("search", required=False)
@home_option
@format_option
def status(search, home, fmt):
    """One search's state (nodes, best, running trials), or every search's in one line each."""
    from trex.events.layout import quarantine_note
    from trex.events.log import EventLog
    from trex.orchestrate.leases import leases_of
    from trex.search import build_tree

    existing_home(home)
    log = EventLog(home)
    if note := quarantine_note(home):
        info(note)
    if search is None:
        from trex.search.replay import ReplayError

        rows, unreadable = [], 0
        for sid in log.searches():
            try:
                t = build_tree(log, sid)
            except ReplayError as e:  # one search that cannot be replayed: said, the others still listed
                info(f"search {sid[:80]!r} cannot be replayed: {e}")
                unreadable += 1
                continue
            waits = t.status == "running" and leases_of(log.read(sid)).waiting
            rows.append({"search_id": sid, "task": t.task, "status": "waiting for an executor" if waits else t.status,
                         "proposer": t.proposer, "trials": t.trials, "best_node_id": t.best_node_id,
                         "best_score": t.best_score})
        if fmt == "json":
            emit_json(rows)
        else:
            for r in rows:
                click.echo(f"{r['search_id']}\t{r['task']}\t{r['status']}\t{r['proposer']}\t{r['trials']} trials"
                           f"\tbest {r['best_node_id'] or '-'} {_fmt(r['best_score'])}")
        if unreadable:
            fail(f"{unreadable} search(es) could not be replayed (listed above); the others are shown")
        return
    if not log.exists(search):
        fail(f"no search {search!r} in {home}")
    t = build_tree(log, search)
    s = t.summary()
    s["base_score"] = t.base_score
    s["running"] = [n.node_id for n in t.nodes.values() if n.status == "running"]
    s["insights"] = list(t.insights.values())
    leases = leases_of(log.read(search))  # a shared pool (trex-actors): what it holds, whether it waits
    s["executors_leased"] = sorted(leases.held)
    s["waiting_for_executor"] = leases.waiting and t.status == "running"
    if fmt == "json":
        emit_json(s)
        return
    click.echo(f"{search}: {s['status']}{' (' + s['finish_reason'] + ')' if s['finish_reason'] else ''}, "
               f"task {s['task']}, {s['trials']} trials ({s['trials_finished']} finished, {s['trials_failed']} failed)")
    feasible = " feasible" if s["constraints"] else ""
    click.echo(f"best{feasible} {s['best_node_id'] or '-'} val {_fmt(s['best_score'])} (selection; base model "
               f"{_fmt(s['base_score'])}); running: {', '.join(s['running']) or 'none'}")
    if s["waiting_for_executor"]:
        click.echo("waiting for an executor: every executor of the shared pool is leased to other searches")
    elif s["executors_leased"]:
        click.echo("executors leased: " + ", ".join(f"executor-{i}" for i in s["executors_leased"]))
    if s["constraints"]:
        click.echo("constraints: " + ", ".join(_constraint_text(c) for c in s["constraints"])
                   + f"; {len(s['infeasible'])} infeasible node(s)")
        for nid, why in list(s["infeasible"].items())[:10]:
            click.echo(f"  {nid} infeasible: {why}")
    if t.status == "finished":
        click.echo(_test_line(t))
    for text in s["insights"]:
        click.echo(f"insight: {text}")


# ------------------------------------------------------------------------------------- helpers
def _constraint_text(c: dict) -> str:
    return " and ".join(x for x in (f"{c['metric']} >= {c['at_least']:g}" if c.get("at_least") is not None else "",
                                    f"{c['metric']} <= {c['at_most']:g}" if c.get("at_most") is not None else "") if x)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _test_line(tree) -> str:
    """What the reported number is: the chosen node's held-out test score, or, for a task without a
    test split, plainly the selection score."""
    if tree.started.constraints and tree.best is None and any(n.infeasible for n in tree.nodes.values()):
        return "no feasible node: every scored node breaks a constraint (see the infeasible nodes above)"
    if tree.test_score is not None:
        held = ""
        if tree.started.constraints:
            why = tree.test_infeasible(tree.best_node_id)
            held = f"; on test the constraints {'break: ' + why if why else 'hold'}"
        return f"test {_fmt(tree.test_score)} (held out: no decision saw it; this is the score to report){held}"
    if tree.chosen is None and not tree.heldout:
        return "no test score: this task has no test split, so the reported score is the selection (val) score"
    return "test score not recorded (the held-out evaluation failed or the chosen node changed)"


def resolve_task(arg: str, home: Path, *, allow_overlap: bool = False):
    """TASK as given → (the Task, more SearchStarted fields). A task file is validated, checked
    for what it needs here, and installed in the home; its definition goes into the log too.
    A user's task (a file, or one installed from a file) is checked for train vs held-out overlap
    first: refused above the threshold unless ``allow_overlap``, which the labels record."""
    from trex.tasks import SpecError, get_task, install_task, is_builtin, load_task_file

    if arg.endswith((".yaml", ".yml")) or Path(arg).is_file():
        try:
            t = load_task_file(arg)
            install_task(t, home)
        except (SpecError, ValueError) as e:
            fail(str(e))
        extra = {"task_def": t.model_dump(mode="json"), "task_file": str(Path(arg).resolve()),
                 "metric_direction": t.primary_metric.direction}
        return t, _check_overlap(t, home, extra, allow_overlap)
    try:
        t = get_task(arg, home)
    except KeyError as e:
        fail(str(e.args[0]) if e.args else str(e))
    extra = {"metric_direction": t.primary_metric.direction}
    if not is_builtin(t.name):  # a task installed from a file earlier: the log carries its definition too
        extra["task_def"] = t.model_dump(mode="json")
        extra = _check_overlap(t, home, extra, allow_overlap)
    return t, extra


def _check_overlap(t, home: Path, extra: dict, allow: bool) -> dict:
    """The contamination guard on a user's task: its train split vs every other split, printed;
    above the threshold one line and exit 1, unless ``allow`` (then recorded in the labels)."""
    from trex.tasks.contamination import check_task_data

    try:
        r = check_task_data(t, home)
    except (KeyError, ValueError, OSError) as e:
        fail(f"task {t.name!r}: cannot read its splits for the overlap check: {e.args[0] if e.args else e}")
    labels = {**extra.get("labels", {}), "data_overlap": r.reason}
    if r.refused and not allow:
        fail(f"task {t.name!r}: {r.reason}; pass --allow-overlap to run it anyway")
    info(f"overlap check: {r.reason}" + (" — running anyway (--allow-overlap, recorded)" if r.refused else ""))
    if r.refused:
        labels["overlap_override"] = r.reason
    return {**extra, "labels": labels}


def _check_task(task: str, home: Path, task_def: dict | None = None) -> None:
    """The search's task is known here; a user's task recorded in the log is installed again if the
    home lost it (a log imported into another home)."""
    from trex.tasks import Task, get_task, install_task

    try:
        if task_def is not None:
            install_task(Task.model_validate(task_def), home)
        get_task(task, home)
    except (KeyError, ValueError) as e:
        fail(str(e.args[0]) if e.args else str(e))


def _drive(home: Path, sid: str, *, parallel: int, threads: int | None, address: str | None, num_cpus: int | None,
           fmt: str, gpus: float | None = None) -> None:
    """Start the actors, run the Conductor, show progress until it returns, print the result."""
    from rich.console import Console
    from rich.live import Live

    from trex.tasks import get_task, prepare_task
    from trex.actors.conduct import spawn_pool
    from trex.actors.runtime import init_ray
    from trex.actors.shells import remote_classes
    from trex.events.log import EventLog
    from trex.search import build_tree, fold

    console = Console(stderr=True)
    log = EventLog(home)
    tree = build_tree(log, sid)
    with console.status(f"preparing {tree.task} (the base model is built once, then cached)…"):
        try:
            prepare_task(get_task(tree.task, home), home)
        except KeyError as e:  # a model folder or data file gone since the search started
            fail(f"cannot prepare task {tree.task!r}: {e.args[0] if e.args else e}")
    ray = init_ray(home, address=address, num_cpus=num_cpus)
    res = ray.cluster_resources()
    threads = executor_threads(res, parallel, threads)
    if gpus is None:
        gpus = 1.0 if res.get("GPU", 0) >= 1 else 0.0
    if gpus and parallel * gpus > res.get("GPU", 0):
        fail(f"{parallel} executor(s) x {gpus:g} GPU(s) need {parallel * gpus:g} GPUs; the cluster has "
             f"{res.get('GPU', 0):g}")
    pool = spawn_pool(parallel, threads=threads, time_limit_s=tree.started.trial.time_limit_s,
                      named=bool(address), prefix="trex", gpus=gpus)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # the Conductor (and the log service it starts) run where the home is: on this node
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    conductor = remote_classes()["conductor"].options(scheduling_strategy=here).remote()
    ref = conductor.run.remote(str(home.resolve()), sid, pool.as_dict())
    t0 = time.time()
    if console.is_terminal:
        with Live(_progress(tree, t0), console=console, refresh_per_second=2, transient=fmt == "json") as live:
            tree = follow(ref, log, sid, tree, lambda t: live.update(_progress(t, t0)))
    else:  # a log file or a pipe: one plain line whenever something changes
        last = [None]

        def show(t) -> None:
            line = _progress_line(t)
            if line != last[0]:
                info(f"[{time.time() - t0:5.0f}s] {line}")
                last[0] = line

        tree = follow(ref, log, sid, tree, show)
    try:
        ray.get(ref)
    except Exception as e:  # noqa: BLE001 - the log holds everything done so far
        fail(f"the conductor stopped: {e}\n`trex resume {sid} --home {home}` continues the search")
    _report(home, sid, fold(log.read(sid, after_seq=tree.last_seq), start=tree), fmt)


def executor_threads(resources: dict, parallel: int, threads: int | None) -> int:
    """Torch threads per executor (default: the cluster's CPUs shared out); refuses a pool that does
    not fit, whose extra executors would wait for CPUs forever."""
    cpus = int(resources.get("CPU", 0))
    threads = threads or max(1, cpus // parallel)
    if parallel * threads > cpus:
        fail(f"{parallel} executor(s) x {threads} thread(s) need {parallel * threads} CPUs; the Ray cluster has "
             f"{cpus}: lower --parallel or --threads, or give Ray more CPUs")
    return threads


def follow(ref, log, sid: str, tree, show, poll_s: float = 1.0):
    """Fold search ``sid``'s new events every ``poll_s`` and ``show`` the tree until the Conductor's
    call ``ref`` returns; the tree as last folded."""
    import ray

    from trex.search import fold

    while True:
        ready, _ = ray.wait([ref], timeout=poll_s)
        tree = fold(log.read(sid, after_seq=tree.last_seq), start=tree)
        show(tree)
        if ready:
            return tree


def _progress_facts(tree) -> dict:
    """What the progress display shows, for the live table and the plain line alike."""
    return {"done": tree.trials_finished + tree.trials_reused, "budget": tree.budget.get("max_trials") or "∞",
            "failed": tree.trials_failed,
            "running": ", ".join(n.node_id for n in tree.nodes.values() if n.status == "running") or "-",
            "best": f"{tree.best_node_id or '-'} {_fmt(tree.best_score)}", "insights": len(tree.insights)}


def _progress(tree, t0: float):
    from rich.table import Table

    f = _progress_facts(tree)
    t = Table.grid(padding=(0, 2))
    t.add_row("search", tree.search_id, "elapsed", f"{time.time() - t0:.0f}s")
    t.add_row("trials", f"{f['done']} done / {f['budget']} ({f['failed']} failed)", "running", f["running"])
    t.add_row("best", f["best"], "insights", str(f["insights"]))
    return t


def _progress_line(tree) -> str:
    f = _progress_facts(tree)
    return (f"trials {f['done']}/{f['budget']} done, {f['failed']} failed; running {f['running']}; "
            f"best {f['best']}; insights {f['insights']}")


def _report(home: Path, sid: str, tree, fmt: str) -> None:
    from trex.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore

    base = tree.base_score
    best = tree.best
    adapter = None
    if best and best.adapter:
        try:
            adapter = str(ArtifactStore(home).get(best.adapter))
        except ArtifactNotFound:  # a log imported without its artifacts: the adapter is elsewhere
            info(f"the best adapter ({best.adapter[:12]}) is not in this home's artifacts")
        except ArtifactError as e:  # an imported event naming something that is not an artifact: reported
            info(f"the best adapter cannot be looked up: {e}")
    result = {"search_id": sid, "status": tree.status, "finish_reason": tree.finish_reason,
              "best_node": best.node_id if best else None, "best_score": best.score if best else None,
              "val_score": best.score if best else None, "test_score": tree.test_score,
              "heldout": tree.summary()["heldout"],
              "base_score": base, "adapter": adapter, "trials": tree.trials,
              "trials_failed": tree.trials_failed, "compute_seconds": round(tree.compute_seconds, 1),
              "insights": list(tree.insights.values())}
    if fmt == "json":
        emit_json(result)
        return
    from rich.console import Console

    from trex.search.render import rich_tree

    Console().print(rich_tree(tree))
    gain = "" if best is None or base is None else f" ({best.score - base:+.4g} over the base model)"
    click.echo(f"best node {result['best_node']}: val {_fmt(result['best_score'])} (selection) vs base "
               f"{_fmt(base)}{gain}")
    click.echo(_test_line(tree))
    for n, h in result["heldout"].items():
        if h["rank"] > 1:
            click.echo(f"  also scored on test, for information: {n} (val rank {h['rank']}): test "
                       f"{_fmt(h['test_score'])}, val {_fmt(h['val_score'])}")
    click.echo(f"adapter: {adapter}")
    for text in result["insights"]:
        click.echo(f"insight: {text}")
