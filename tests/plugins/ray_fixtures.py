"""One real Ray instance for the session, and actor pools that are killed after each test.

Ray runs locally (127.0.0.1, files under a session temp dir, no usage stats) with 2 CPUs:
the executors reserve their torch threads as CPUs, so a pool left alive would starve the
next test's; the ``actor_pool`` factory kills every actor it made at teardown.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    from trex.actors.runtime import init_ray

    ray = init_ray(tmp_path_factory.mktemp("ray-home"), num_cpus=2)
    yield ray
    ray.shutdown()


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
        for h in [pool.researcher, pool.evaluator, pool.distiller, *pool.executors, *getattr(pool, "extra", [])]:
            try:
                ray_local.kill(h, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
