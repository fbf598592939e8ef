"""The ``trex`` command. Subcommands are imported lazily so that ``trex --help``,
``trex sql`` and ``trex note`` never import torch, transformers, Ray or vLLM."""
from __future__ import annotations

import importlib

import click

from trex.commands.common import OneLineErrors

# name -> "module:attribute" of a click command; imported only when invoked
COMMANDS: dict[str, tuple[str, str]] = {
    "sql": ("trex.commands.log_cmds:sql", "Run a read-only SQL query over the event log."),
    "note": ("trex.commands.log_cmds:note", "Add an operator note to a search."),
    "verify": ("trex.commands.log_cmds:verify", "Check hash chains, gaplessness, ids and segment footers."),
    "export": ("trex.commands.log_cmds:export", "Export a search (and the searches it forks from) to Parquet."),
    "import": ("trex.commands.log_cmds:import_", "Import a search exported with `trex export`."),
    "ls": ("trex.commands.log_cmds:ls", "List the searches in this trex home."),
    "replay": ("trex.commands.search_cmds:replay", "Fold a search's events and print its summary and tree hash."),
    "tree": ("trex.commands.search_cmds:tree", "Render a search's tree as text, json or a self-contained html page."),
    "fork": ("trex.commands.search_cmds:fork", "Fork a search at a node: a new search that starts from its prefix."),
    "train": ("trex.commands.train_cmd:train", "Train one plan outside any search and print the adapter hash and metrics."),
    "demo": ("trex.commands.demo:demo", "Run trex's main job on its embedded defaults."),
    "run": ("trex.commands.run_cmds:run", "Run a search on a task with the Ray actors until its budget is spent."),
    "resume": ("trex.commands.run_cmds:resume", "Continue a search after a crash: nothing lost, nothing run twice."),
    "status": ("trex.commands.run_cmds:status", "Show one search's state, or every search's."),
}


class LazyGroup(OneLineErrors):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        spec = COMMANDS.get(name)
        if spec is None:
            return None
        mod, _, attr = spec[0].partition(":")
        try:
            return getattr(importlib.import_module(mod), attr)
        except ModuleNotFoundError as e:
            if e.name == mod:
                return None  # that command's module is not part of this build
            raise

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trex")
def main() -> None:
    """trex: agent-driven tree search over LLM fine-tuning strategies.

    Every step is an immutable event in an append-only log under the trex home
    (--home DIR on each command, env TREX_HOME, default ./.trex).
    """


if __name__ == "__main__":
    main()
