"""Options and output helpers shared by commands (stdout for data, stderr for messages)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TREX_HOME",
    default=".trex",
    show_default=True,
    help="The trex home (env TREX_HOME).",
)
format_option = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="text for people, json for scripts.",
)


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def fail(msg: str, code: int = 1) -> "None":
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def info(msg: str) -> None:
    click.echo(msg, err=True)
