"""A real multi-node Ray cluster on this machine with no shared filesystem: a head and two worker
nodes (``ray start``, 127.0.0.1, their own temp dirs), the workers started in their own mount
namespace with the home's parent hidden under a tmpfs (``unshare -m``). Artifacts live on a real
S3 API (moto's server); events reach the home through its log service. A search runs with the
executors and the Researcher on the workers, then again with a kill -9 of the log service and of
one worker's raylet (the node lost) mid-search."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from trex.events.log import EventLog

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                                reason="needs unshare -m (root) to hide the home from the worker nodes")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
            # a lost node is noticed in seconds, not the default half minute
            "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3", **extra}


def _processes_of(root: Path) -> list[psutil.Process]:
    """Every process of this cluster: those naming its folder, and all their descendants."""
    found = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if str(root) in " ".join(p.info["cmdline"] or ()):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [p for pid, p in found.items() if pid != os.getpid()]


def _kill(procs) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def cluster(s3_root, arith_base):
    root = Path("/tmp") / f"trex-mn-{uuid.uuid4().hex[:8]}"  # short: Ray's socket paths must fit
    hidden = root / "hidden"
    home = hidden / "home"
    (home / "models").mkdir(parents=True)
    shutil.copytree(arith_base, home / "models" / "arith-base-0")
    port = _free_port()
    env = _env()
    try:
        subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=0",
                        "--resources={\"head\": 1}", "--include-dashboard=false", f"--temp-dir={root}/rh",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)
        for w in ("w1", "w2"):
            start = (f"mount -t tmpfs tmpfs {hidden} && exec {RAY} start --address=127.0.0.1:{port} "
                     f"--node-ip-address=127.0.0.1 --num-cpus=2 --resources='{{\"worker\": 2}}' "
                     f"--temp-dir={root}/{w} --disable-usage-stats")
            subprocess.run(["unshare", "-m", "sh", "-c", start], env=env, check=True, capture_output=True,
                           timeout=120)
        yield {"root": root, "home": home, "address": f"127.0.0.1:{port}", "s3_root": s3_root}
    finally:
        _kill(_processes_of(root))
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(_stand_in(home), ignore_errors=True)


def _stand_in(home: Path) -> Path:
    """Where a worker keeps its files for ``home`` (``trex.actors.log_service.node_home``)."""
    import tempfile

    from trex.actors.log_service import service_name

    return Path(tempfile.gettempdir()) / f"trex-nodes-{os.getuid()}" / service_name(home)[len("trex-log-"):]


def _drive(c, sid: str, trials: int, steps: int, task_file: Path | None = None) -> subprocess.Popen:
    env = _env(TREX_ARTIFACTS=c["s3_root"], PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "multinode_driver.py"), c["address"], str(c["home"]),
                             sid, str(trials), str(steps), *([str(task_file)] if task_file else [])], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _user_task(c) -> Path:
    """A user's task file, its data and its base model folder where only the head can read them."""
    from trex.tasks import get_task
    from trex.tasks.prepare import load_split

    folder = c["home"].parent / "user"
    folder.mkdir()
    arith = get_task("arith-sub")
    for split, n in (("train", 2000), ("eval", 100)):
        rows = load_split(arith, split, c["root"] / "gen")[:n]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "task.yaml").write_text(
        "name: mn-sub\ndomain: arithmetic\ndescription: subtraction from files only the head can read\n"
        f"base_model: {{path: {c['home'] / 'models' / 'arith-base-0'}}}\n"
        "data: {files: {train: train.jsonl, eval: eval.jsonl}}\n"
        "metrics: [{name: exact_match, split: eval, primary: true}]\n")
    return folder / "task.yaml"


def _finish(proc: subprocess.Popen, timeout: float = 420) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def _check(home: Path, sid: str) -> dict:
    from tests.test_actors import check_invariants

    return check_invariants(home, sid)


def _wait_for(home: Path, sid: str, type_: str, timeout: float = 240) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if any(e.type == type_ for e in EventLog(home).read(sid)):
                return
        except Exception:  # noqa: BLE001 - not started yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"no {type_} in {sid} after {timeout}s")


@pytest.mark.timeout(900)
def test_a_search_runs_on_worker_nodes_that_cannot_see_the_home(cluster):
    c = cluster
    # the workers cannot see the home: their mount namespace has a tmpfs over its parent
    hidden = [p for p in _processes_of(c["root"]) if "raylet" in " ".join(p.cmdline()) and "/w1" in " ".join(p.cmdline())]
    assert hidden, "no raylet for worker w1"
    assert os.readlink(f"/proc/{hidden[0].pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert (c["home"] / "models").is_dir() and not Path(f"/proc/{hidden[0].pid}/root{c['home']}").exists()

    # a user's task: its definition, data files and base model folder are hidden from the workers too
    out = _finish(_drive(c, "mn-1", trials=3, steps=20, task_file=_user_task(c)))
    inv = _check(c["home"], "mn-1")
    assert inv["tree"].task == "mn-sub" and inv["tree"].trials_finished == 3
    nodes = out["nodes"]
    assert nodes["researcher"] != nodes["driver"] and all(n != nodes["driver"] for n in nodes["executors"])
    # adapters went to object storage; the workers worked from node-local stand-ins of the home
    import fsspec

    fs = fsspec.filesystem("s3")
    for e in inv["events"]:
        if e.type == "TrialFinished":
            assert fs.exists(f"{c['s3_root']}/{e.event.adapter[:2]}/{e.event.adapter}.json")
    for w in out["nodes"]["where"]:  # each executor's own view, on its node
        assert not w["sees_home"] and w["folder"] == str(_stand_in(c["home"])), w
        assert w["task_data"] and w["downloads"] and not w["models_built"], w  # task and base model came from S3

    # again, with a kill -9 of the log service and of one worker's raylet (and so its node) mid-search
    proc = _drive(c, "mn-2", trials=4, steps=40)
    _wait_for(c["home"], "mn-2", "TrialProgressed")
    services = [p for p in _processes_of(c["root"] / "rh") if p.name().startswith("ray::LogServiceShell")
                or "LogServiceShell" in " ".join(p.cmdline())]
    assert services, "no log service process on the head"
    _kill(services)
    time.sleep(2)
    w1 = [p for p in _processes_of(c["root"] / "w1") if "raylet" in p.name()]
    lost = next(a.split("=", 1)[1] for a in w1[0].cmdline() if a.startswith("--node_id="))
    _kill(_processes_of(c["root"] / "w1"))
    out = _finish(proc)
    inv = _check(c["home"], "mn-2")
    # the lost node's actors were restarted on the surviving worker; its trial abandoned, then retried once
    assert lost not in out["nodes"]["executors"] and lost != out["nodes"]["researcher"]
    assert out["nodes"]["driver"] not in out["nodes"]["executors"]
    assert inv["tree"].trials_finished == 4
    from trex.events.verify import verify

    assert verify(EventLog(c["home"])).ok
