"""One real Ray instance for the session, and actor pools that are killed after each test.

Ray runs locally (127.0.0.1, files under a session temp dir, no usage stats) with 2 CPUs:
the executors reserve their torch threads as CPUs, so a pool left alive would starve the
next test's; the ``actor_pool`` factory kills every actor it made at teardown.
"""
from __future__ import annotations

import os
import signal

import pytest


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """The session's Ray. At the end of the session no trex actor may be left alive: one left polling a
    search its test gave up on costs every later test CPU (a Conductor was once found at ~38% for 30
    minutes). Leftovers are killed, and the session fails naming them."""
    from trex.actors.runtime import init_ray

    ray = init_ray(tmp_path_factory.mktemp("ray-home"), num_cpus=2)
    yield ray
    import time

    deadline = time.time() + 15  # actors killed by the last test's teardown take a moment to be DEAD
    while (left := alive_actors()) and time.time() < deadline:
        time.sleep(0.5)
    for pid in left.values():  # a leftover nobody holds a handle to any more: its process is ended
        if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
            continue  # never signal a process group (0, negative) or this test process
        try:
            os.kill(pid, signal.SIGKILL)
        except (OSError, TypeError):
            pass
    ray.shutdown()
    assert not left, f"trex actors still alive at the end of the session: {sorted(left)}"


def alive_actors() -> dict[str, int]:
    """``{"<class> <actor id>": pid}`` of every actor alive in this Ray (read from the GCS: no dashboard)."""
    from ray._private import state

    return {f"{info.get('ActorClassName')} {aid[:8]}": info.get("Pid")
            for aid, info in state.actors().items() if info.get("State") == "ALIVE"}


# Ray runs its workers (executors, their training processes, the Conductor actor) at this niceness
# (Ray's ``worker_niceness``); the load runs beside them at the same priority.
RAY_WORKER_NICENESS = 15


@pytest.fixture
def busy_cores():
    """Every core kept busy by another process while the test runs (a loaded machine, as a user's is
    while trex runs beside other work): the fault tests must hold under it.

    The spinners run at Ray's worker niceness, so they share the cores equally with trex's actors and
    training: other work at nice 0 would leave Ray's nice-15 workers ~3% of a core (the kernel's
    weights 1024 vs 36), where no trial finishes in any bound and what is tested is only that the
    stall bounds end the search (``tests/test_stalls.py`` checks that directly)."""
    import multiprocessing as mp
    import os

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 1)]
    for p in procs:
        p.start()
    yield len(procs)
    for p in procs:
        p.kill()
        p.join(5)


def _spin() -> None:
    import os

    os.nice(RAY_WORKER_NICENESS)
    while True:
        pass


@pytest.fixture
def actor_pool(ray_local):
    """``make(executors=1, threads=None) -> Pool``; every actor made is killed afterwards."""
    from trex.actors.conduct import spawn_pool

    made = []

    def make(executors: int = 1, threads: int | None = None, **kw):
        pool = spawn_pool(executors, threads=threads, **kw)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        for h in [pool.researcher, pool.evaluator, pool.distiller, *pool.executors, *getattr(pool, "extra", []),
                  *([pool.scheduler] if getattr(pool, "scheduler", None) is not None else [])]:
            try:
                ray_local.kill(h, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
    kill_log_services(ray_local)


def kill_log_services(ray) -> None:
    """The homes' log services (detached: they outlive the test that started them)."""
    from trex.actors.runtime import NAMESPACE

    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["namespace"] == NAMESPACE and a["name"].startswith("trex-log-"):
            try:
                ray.kill(ray.get_actor(a["name"], namespace=NAMESPACE), no_restart=True)
            except Exception:  # noqa: BLE001 - gone already
                pass


@pytest.fixture(autouse=True)
def _log_services_stopped():
    """After each test on the session's Ray, the log services its searches started are stopped: they
    are detached (one per home, outliving any one search), and the next test's home is another."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        kill_log_services(ray)
