"""``trex demo``: trex's main job on its embedded defaults, on a CPU laptop.

Builds the tiny arith base model (cached), starts a search on ``arith-sub`` with the
random proposer and MCTS, trains and evaluates a few real LoRA adapters, and prints
the tree, the best node against the base model, and where its adapter is.
"""
from __future__ import annotations

import click

from trex.commands.common import emit_json, format_option, home_option, info


@click.command()
@home_option
@format_option
@click.option("--trials", type=click.IntRange(1, 1000), default=4, show_default=True, help="Trials in the demo search.")
@click.option("--steps", type=click.IntRange(1, 100_000), default=300, show_default=True, help="Optimizer steps per trial.")
@click.option("--proposer", type=click.Choice(["random", "optuna"]), default="random", show_default=True)
@click.option("--policy", type=click.Choice(["mcts", "greedy", "best-first"]), default="mcts", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(home, fmt, trials, steps, proposer, policy, seed):
    """Run a small real search on arith-sub (CPU, a few minutes)."""
    from rich.console import Console

    from trex.tasks import get_task, prepare_task
    from trex.conductor import SearchConfig, run_search, start_search
    from trex.events.log import EventLog
    from trex.events.search import Budget

    console = Console(stderr=True)
    with console.status("preparing the arith base model (built once, then cached)…"):
        assets = prepare_task(get_task("arith-sub"), home)
    info(f"base model: {assets.base_model_dir}")
    log = EventLog(home)
    cfg = SearchConfig(task="arith-sub", proposer=proposer, policy=policy, seed=seed,
                       budget=Budget(max_trials=trials), trial_steps=steps, eval_limit=200)
    sid = start_search(log, cfg)
    info(f"search {sid}: {trials} trials of {steps} steps, proposer {proposer}, policy {policy}")

    def on_event(ev):
        t = type(ev).__name__
        if t == "PlanProposed":
            console.print(f"[cyan]{ev.node_id}[/] {ev.operator} ← {ev.parent_id or 'root'}: {ev.rationale}")
        elif t in ("TrialFinished", "TrialFailed", "TrialReused"):
            console.print(f"  {ev.node_id}: {t}" + (f" ({ev.reason})" if t == "TrialFailed" else ""))
        elif t == "MetricRecorded" and ev.primary:
            console.print(f"  {ev.node_id}: {ev.name} = {ev.value:.3f} (val)")
        elif t == "HeldOutScored" and ev.primary:
            console.print(f"  {ev.node_id}: {ev.name} = {ev.value:.3f} on held-out {ev.split} (val rank {ev.rank})")

    tree = run_search(home, sid, on_event=on_event)
    base = tree.base_score
    best = tree.best
    from trex.artifacts import ArtifactStore

    adapter_path = str(ArtifactStore(home).get(best.adapter)) if best and best.adapter else None
    result = {"search_id": sid, "best_node": best.node_id if best else None,
              "best_score": best.score if best else None, "val_score": best.score if best else None,
              "test_score": tree.test_score, "base_score": base, "adapter": adapter_path,
              "trials": tree.trials, "compute_seconds": round(tree.compute_seconds, 1)}
    if fmt == "json":
        emit_json(result)
        return
    from trex.search.render import rich_tree

    Console().print(rich_tree(tree))
    click.echo(f"best node {result['best_node']}: exact match val {result['best_score']} (selection; base model "
               f"{base}), test {tree.test_score} (held out: the score to report)")
    click.echo(f"adapter: {adapter_path}")
    info(f"explore: trex tree {sid} --format html -o tree.html --home {home}; "
         f"trex sql \"SELECT * FROM nodes WHERE search_id = '{sid}'\" --home {home}")
