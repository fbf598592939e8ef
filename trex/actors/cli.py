"""``trex-actors``: start, inspect and stop trex's named, detached Ray actors.

The actors themselves (Conductor, Researcher, Executor pool, Evaluator,
Insight-distiller) are not built yet; until then this group has no commands
and says so rather than pretending.
"""
from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Manage trex's actors on a Ray cluster (not available in this build yet)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help(), err=True)
        click.echo("\nerror: the Ray actors are not part of this build yet; use `trex train` for single trials.", err=True)
        ctx.exit(2)
