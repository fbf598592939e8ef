"""``trex replay``, ``trex tree`` and ``trex fork``. Data goes to stdout, messages to stderr."""
from __future__ import annotations

from pathlib import Path

import click

from trex.commands.common import FiniteRange, emit_json, fail, finite, home_option, info
from trex.events.base import EventError


def _log(home: Path):
    from trex.events.layout import quarantine_note
    from trex.events.log import EventLog

    note = quarantine_note(home)
    if note:
        info(note)
    return EventLog(home)


def _tree(home: Path, search: str, until: int | None):
    from trex.search.replay import build_tree

    try:
        return build_tree(_log(home), search, until)
    except EventError as e:
        fail(str(e))


@click.command()
@click.argument("search")
@click.option("--until", type=int, default=None, help="Fold only the events with seq <= SEQ.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@home_option
def replay(search: str, until: int | None, fmt: str, home: Path) -> None:
    """Fold SEARCH's events (its fork prefix included) and print its summary and tree hash."""
    from trex.search.hashing import tree_hash

    tree = _tree(home, search, until)
    summary = dict(tree.summary(), tree_hash=tree_hash(tree), until=until)
    if fmt == "json":
        emit_json(summary)
        return
    by_status = ", ".join(f"{k} {v}" for k, v in summary["by_status"].items()) or "none"
    best = (f"{summary['best_node_id']} ({summary['best_score']:.6g})" if summary["best_node_id"] else "-")
    lines = [
        f"search      {tree.search_id}" + (f" (until seq {until})" if until is not None else ""),
        f"task        {tree.task}   base model {tree.base_model or '-'}   policy {tree.policy}",
        f"status      {tree.status}" + (f" ({tree.finish_reason})" if tree.finish_reason else ""),
        f"nodes       {len(tree.nodes)}: {by_status}",
        f"best        {best}   ({'lower' if tree.metric_direction == 'min' else 'higher'} is better)",
        f"trials      {tree.trials} started, {tree.trials_finished} finished, {tree.trials_failed} failed, "
        f"{tree.trials_reused} reused",
        f"cost        {tree.compute_seconds:.1f} compute seconds, {tree.tokens} LLM tokens in {tree.llm_calls} calls",
        f"decisions   {len(tree.decisions)}   insights in force {len(tree.insights)}   events {tree.n_events}",
        f"tree hash   {summary['tree_hash']}",
    ]
    click.echo("\n".join(lines))


@click.command()
@click.argument("search")
@click.option("--until", type=int, default=None, help="Fold only the events with seq <= SEQ.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to FILE instead of stdout.")
@home_option
def tree(search: str, until: int | None, fmt: str, output: Path | None, home: Path) -> None:
    """Render SEARCH's tree: text (a tree), json (for scripts) or html (one self-contained page)."""
    import json

    from trex.search import render
    from trex.search.hashing import tree_hash, tree_to_dict

    t = _tree(home, search, until)
    if fmt == "text" and output is None:
        from rich.console import Console

        import sys

        Console(width=None if sys.stdout.isatty() else 240).print(render.rich_tree(t))
        return
    if fmt == "text":
        import io

        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=200, no_color=True).print(render.rich_tree(t))
        text = buf.getvalue()
    elif fmt == "json":
        text = json.dumps(finite(dict(tree_to_dict(t), tree_hash=tree_hash(t))), indent=2, sort_keys=True,
                          default=str, allow_nan=False)
    else:
        text = render.to_html(t)
    if output is None:
        click.echo(text)
        return
    from trex.events.fsio import write_output

    try:  # never into the log, through a link or into a pipe; written whole, then renamed
        write_output(output, text.encode("utf-8"), home)
    except EventError as e:
        fail(str(e))
    info(f"wrote {output}")


@click.command()
@click.argument("search")
@click.option("--at", "at_node", required=True, help="The node to fork at.")
@click.option("--at-seq", type=int, default=None,
              help="Fork after this seq of SEARCH (default: the node's last update).")
@click.option("--search-id", "new_id", default=None, help="The new search's id (default: generated).")
@click.option("--budget-trials", type=click.IntRange(1), default=None,
              help="The fork's own trials (default: it continues the parent's budget).")
@click.option("--budget-compute", type=FiniteRange(0, min_open=True), default=None,
              help="The fork's own compute-seconds.")
@click.option("--budget-time", type=FiniteRange(0, min_open=True), default=None,
              help="The fork's own wall-clock seconds, from the fork.")
@click.option("--budget-tokens", type=click.IntRange(1), default=None, help="The fork's own LLM tokens.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@home_option
def fork(search: str, at_node: str, at_seq: int | None, new_id: str | None, budget_trials: int | None,
         budget_compute: float | None, budget_time: float | None, budget_tokens: int | None, fmt: str,
         home: Path) -> None:
    """Start a new search from SEARCH's prefix at node --at: its first event is SearchForked.

    With a --budget-* option the fork gets a budget of its own, counted from the fork point;
    without one it continues under the parent's budget.
    """
    from trex.events.search import Budget
    from trex.search import replay as rp
    from trex.search.hashing import tree_hash

    log = _log(home)
    budget = None
    if any(v is not None for v in (budget_trials, budget_compute, budget_time, budget_tokens)):
        budget = Budget(max_trials=budget_trials, max_compute_seconds=budget_compute, max_seconds=budget_time,
                        max_tokens=budget_tokens)
    try:
        env = rp.fork(log, search, at_node, new_id, at_seq, budget=budget)
        t = rp.build_tree(log, env.search_id)
    except EventError as e:
        fail(str(e))
    ev = env.event
    out = {"search_id": env.search_id, "parent_search_id": ev.parent_search_id, "at_seq": ev.at_seq,
           "at_node": ev.at_node, "nodes": len(t.nodes), "tree_hash": tree_hash(t)}
    if fmt == "json":
        emit_json(out)
    else:
        click.echo(env.search_id)
        info(f"forked {search} at node {at_node} (seq {ev.at_seq}): {len(t.nodes)} nodes, "
             f"tree hash {out['tree_hash'][:16]}…")
