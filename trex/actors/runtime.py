"""Connecting to Ray: a local instance under the trex home, or an existing cluster.

A local instance binds to 127.0.0.1, keeps its files under ``<home>/ray`` (or a short
path under /tmp when the home's path is too long for Ray's unix sockets), sends no usage
stats and writes no auth token. ``address`` connects to a running cluster instead
(``auto``, ``ray://host:10001`` or ``host:6379``).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

NAMESPACE = "trex"
# Ray's socket paths (<temp>/session_<date>_<pid>/sockets/plasma_store) must fit in 107 bytes
_MAX_TEMP_DIR = 50


def ray_temp_dir(home: str | os.PathLike) -> Path:
    d = Path(home).resolve() / "ray"
    if len(str(d)) <= _MAX_TEMP_DIR:
        return d
    return Path("/tmp") / ("trex-ray-" + hashlib.sha256(str(d).encode()).hexdigest()[:10])


def home_lock(home: str | os.PathLike, name: str):
    """A file lock under ``<home>/locks`` (held per process; the OS releases it if the process dies).
    Never through a link: a link at the lock or on the way is refused (``LinkRefused``); a wait
    that runs out raises ``filelock.Timeout`` (a ``LockTimeout`` too)."""
    from trex.events.fsio import HomeLock, ensure_dir

    return HomeLock(ensure_dir(Path(home), "locks") / f"{name}.lock")


# what every actor must see as the driver does: where artifacts live (object storage on a cluster)
# and how to reach it (botocore and s3fs read these)
FORWARDED = ("TREX_ARTIFACTS", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")


def forwarded_env() -> dict[str, str]:
    """The driver's settings the actors on every node need (passed through Ray's runtime env)."""
    return {k: os.environ[k] for k in FORWARDED if os.environ.get(k)}


def quiet_env() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def init_ray(home: str | os.PathLike, *, address: str | None = None, num_cpus: int | None = None,
             log_to_driver: bool = False):
    """``ray.init`` once per process (a no-op when already connected). Returns the ``ray`` module."""
    quiet_env()
    import ray

    if ray.is_initialized():
        return ray
    runtime_env = {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", **forwarded_env()}}
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=log_to_driver, runtime_env=runtime_env)
        return ray
    from trex.events.fsio import ensure_dir

    tmp = ray_temp_dir(home)
    ensure_dir(tmp.parent, tmp.name)  # <home>/ray (or the short /tmp folder) is never a link (LinkRefused)
    reap_orphans(tmp)
    ray.init(num_cpus=num_cpus if num_cpus is not None else (os.cpu_count() or 1), namespace=NAMESPACE,
             include_dashboard=False, _temp_dir=str(tmp), _node_ip_address="127.0.0.1",
             log_to_driver=log_to_driver, runtime_env=runtime_env, configure_logging=False)
    return ray


def reap_orphans(temp_dir: Path) -> int:
    """Kill Ray processes of an earlier local instance under ``temp_dir`` left orphaned by a killed
    driver (its dashboard and runtime-env agents outlive it). Returns how many were killed."""
    import psutil

    me = os.getpid()
    n = 0
    for p in psutil.process_iter(["pid", "ppid", "cmdline"]):
        try:
            if p.info["pid"] == me or p.info["ppid"] != 1:
                continue
            cmd = " ".join(p.info["cmdline"] or ())
            if str(temp_dir) in cmd and ("ray" in cmd):
                p.kill()
                n += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return n
