"""The ``ftbench`` command: ``ftbench list``, ``ftbench prepare arith``."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """FT-Bench: fine-tuning tasks for trex."""


@main.command("list")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def list_(fmt: str) -> None:
    """List the registered tasks."""
    from ftbench.tasks import list_tasks

    tasks = list_tasks()
    if fmt == "json":
        click.echo(json.dumps([t.model_dump(mode="json") for t in tasks], indent=2, sort_keys=True))
        return
    for t in tasks:
        metrics = ", ".join(f"{m.name}({m.direction}{', primary' if m.primary else ''})" for m in t.metrics)
        click.echo(f"{t.name}\t{t.description}\n\tbase model: {t.base_model}-{t.base_seed}; metrics: {metrics}")


@main.command()
@click.argument("family", type=click.Choice(["arith"]))
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="TREX_HOME", default=".trex",
              show_default=True, help="The trex home (env TREX_HOME).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def prepare(family: str, home: Path, seed: int, fmt: str) -> None:
    """Build (or find cached) the base model and data of a task family; print path and base scores."""
    from ftbench.arith import model_dir, prepare_base_model
    from ftbench.tasks import evaluate_adapter, prepare_data
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
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    else:
        click.echo(str(path))
        for k, v in scores.items():
            click.echo(f"{k}\t{v:.4f}")


if __name__ == "__main__":
    main()
