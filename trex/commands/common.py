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


class FiniteRange(click.FloatRange):
    """click's ``FloatRange`` that refuses ``nan`` and ``inf``: they compare false with its bounds, so
    ``FloatRange(0, min_open=True)`` took ``nan`` and pydantic's traceback-like message followed."""

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if rv != rv or rv in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


def finite(v):
    """``v`` with every NaN or infinite float written as the log stores it (``"NaN"``, ``"Infinity"``,
    ``"-Infinity"``): ``json.dumps`` would print the bare literals, which JSON does not have and strict
    parsers refuse."""
    if isinstance(v, float) and v != v:
        return "NaN"
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    return v


def emit_json(obj) -> None:
    click.echo(json.dumps(finite(obj), indent=2, sort_keys=True, default=str, allow_nan=False))


def fail(msg: str, code: int = 1) -> "None":
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def info(msg: str) -> None:
    click.echo(msg, err=True)


def existing_home(home) -> None:
    """A reader's home must exist: a mistyped ``--home`` read as a healthy empty log (``verify`` said
    "OK: 0 events", ``ls`` and ``status`` printed nothing, exit 0). A folder with nothing written yet
    is a home with no search."""
    import os

    if not os.path.lexists(home):
        fail(f"no trex home at {home}: the folder does not exist")


class OneLineErrors(click.Group):
    """A command group whose commands answer every failure in one line, never a traceback."""

    def invoke(self, ctx):
        from trex.events.errors import EventError

        try:
            return super().invoke(ctx)
        except EventError as e:  # a damaged log, a link under the home, a held lock: one line, no traceback
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except RecursionError:  # json of a plan, an import or a payload nested thousands deep
            click.echo("error: the input is nested too deeply to read", err=True)
            ctx.exit(1)
        except OSError as e:  # a path that is a folder, a permission, a full disk
            click.echo(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", err=True)
            ctx.exit(1)
        except Exception as e:  # noqa: BLE001 - the last line of defence: one line, never a traceback
            import os

            if os.environ.get("TREX_DEBUG"):
                raise
            msg = " ".join(str(e).split())[:300]
            click.echo(f"error: {type(e).__name__}: {msg} (TREX_DEBUG=1 shows where)", err=True)
            ctx.exit(70)
