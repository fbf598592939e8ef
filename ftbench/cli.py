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
    """List every task: the CPU tasks that run here and the paper's tasks (GPU + hub)."""
    from ftbench.spec import builtin_specs, fetch_plan, problems

    rows = []
    for spec in builtin_specs().values():
        why = problems(spec)
        rows.append({"name": spec.name, "domain": spec.domain, "runnable_here": not why, "problems": why,
                     "requires": spec.requires.model_dump(mode="json"), "fetches": fetch_plan(spec),
                     "primary_metric": spec.primary.name, "spec": spec.model_dump(mode="json")})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    for r in rows:
        where = "runs here" if r["runnable_here"] else ("needs " + " + ".join(
            k for k in ("gpu", "hub") if r["requires"][k]) or "more")
        click.echo(f"{r['name']}\t{r['domain']}\t{r['primary_metric']}\t{where}")


@main.command()
@click.argument("family")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="TREX_HOME", default=".trex",
              show_default=True, help="The trex home (env TREX_HOME).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def prepare(family: str, home: Path, seed: int, fmt: str) -> None:
    """Build (or find cached) the base model and data of a task family; print path and base scores.

    FAMILY is ``arith`` (the CPU tasks' base model) or a task name; for a task that needs the hub
    it prints exactly what it would fetch and exits with status 2 (nothing is fetched here)."""
    if family != "arith":
        from ftbench.spec import builtin_specs, fetch_plan, problems

        spec = builtin_specs().get(family)
        if spec is None:
            click.echo(f"error: unknown task {family!r} (see `ftbench list`)", err=True)
            raise SystemExit(1)
        if spec.base_model.builder == "arith-base":
            family = "arith"
        else:
            plan = {"task": spec.name, "would_fetch": fetch_plan(spec), "problems": problems(spec)}
            if fmt == "json":
                click.echo(json.dumps(plan, indent=2, sort_keys=True))
            else:
                for line in plan["would_fetch"]:
                    click.echo(f"would fetch: {line}")
                for line in plan["problems"]:
                    click.echo(f"cannot run here: {line}", err=True)
            raise SystemExit(2)
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
