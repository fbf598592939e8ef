"""``trex-actors``: start, inspect and stop trex's named, detached actors on a Ray cluster
(the console script ``trex.commands.actors_cmds:main``).

``start`` is idempotent: the actors are created with ``get_if_exists``, so running it twice
leaves the same actors running. A search submitted with ``trex run TASK --address ADDR`` (from
any machine that reaches the cluster, or as a ``ray job submit``) uses these actors; its
Conductor lives as long as that driver.
"""
from __future__ import annotations

import click

from trex.commands.common import OneLineErrors, emit_json, fail, format_option, home_option, info

KINDS = ("researcher", "evaluator", "distiller", "scheduler")


def _connect(address: str | None, home):
    from trex.actors.runtime import init_ray

    try:
        return init_ray(home, address=address or "auto")
    except Exception as e:  # noqa: BLE001 - no cluster there: say so plainly
        fail(f"cannot connect to a Ray cluster at {address or 'auto'}: {e}\n"
             f"start one with `ray start --head` (or pass --address)")


def _named(ray) -> list[dict]:
    """trex's named actors alive on the cluster (looked up by name: no dashboard needed)."""
    from trex.actors.runtime import NAMESPACE

    def get(name):
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return None

    names = [f"trex-{k}" for k in KINDS]
    i = 0
    while get(f"trex-executor-{i}") is not None:
        names.append(f"trex-executor-{i}")
        i += 1
    # the homes' log services (started by the searches' Conductors, one per home)
    names += sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["namespace"] == NAMESPACE and a["name"].startswith("trex-log-"))
    rows = []
    for name in names:
        h = get(name)
        if h is None:
            continue
        try:
            pid = ray.get(h.pid.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - restarting or dead
            pid = None
        row = {"name": name, "actor_id": h._actor_id.hex(), "pid": pid}
        if name.startswith("trex-log-"):
            try:
                row["home"] = ray.get(h.stats.remote(), timeout=30)["home"]
            except Exception:  # noqa: BLE001 - restarting
                row["home"] = None
        rows.append(row)
    return rows


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Manage trex's named, detached actors on a Ray cluster."""


@main.command()
@click.option("--address", default=None, help="Ray cluster address (default: auto, the local cluster).")
@click.option("--executors", type=click.IntRange(1, 1024), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="CPUs (torch threads) per executor.")
@home_option
@format_option
def start(address, executors, threads, home, fmt):
    """Start (or find) the Researcher, Executors, Evaluator and Insight-distiller."""
    from trex.actors.conduct import spawn_pool

    ray = _connect(address, home)
    pool = spawn_pool(executors, threads=threads, named=True, prefix="trex")
    ray.get([pool.researcher.pid.remote(), pool.evaluator.pid.remote(), pool.distiller.pid.remote()]
            + [e.pid.remote() for e in pool.executors])
    rows = _named(ray)
    if fmt == "json":
        emit_json({"address": address or "auto", "actors": rows})
        return
    for r in rows:
        click.echo(f"{r['name']}\t{r['actor_id']}\tpid {r['pid']}")
    info(f"submit a search: trex run TASK --address {address or 'auto'} --parallel {executors} --home SHARED_DIR "
         f"(or: ray job submit -- trex run TASK --address auto ...)")


@main.command()
@click.option("--address", default=None)
@home_option
@format_option
def status(address, home, fmt):
    """List trex's actors alive on the cluster."""
    ray = _connect(address, home)
    rows = _named(ray)
    if fmt == "json":
        emit_json(rows)
        return
    if not rows:
        info("no trex actors are running (start them with `trex-actors start`)")
    for r in rows:
        click.echo(f"{r['name']}\t{r['actor_id']}\tpid {r['pid']}" + (f"\thome {r['home']}" if "home" in r else ""))


@main.command()
@click.option("--address", default=None)
@home_option
@format_option
def stop(address, home, fmt):
    """Kill trex's named actors (searches they served can be resumed with `trex resume`)."""
    from trex.actors.runtime import NAMESPACE

    ray = _connect(address, home)
    rows = _named(ray)
    for r in rows:
        ray.kill(ray.get_actor(r["name"], namespace=NAMESPACE), no_restart=True)
    if fmt == "json":
        emit_json({"stopped": [r["name"] for r in rows]})
    else:
        info(f"stopped {len(rows)} actor(s)")


if __name__ == "__main__":
    main()
