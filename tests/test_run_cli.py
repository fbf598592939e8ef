"""`trex run/resume/status` on bad input, and `trex-actors start/status/stop` on the session's Ray."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from trex.conductor import SearchConfig, start_search
from trex.events.log import EventLog
from trex.events.search import Budget

REPO = Path(__file__).resolve().parents[1]
TREX = [sys.executable, "-m", "trex.cli"]


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300, **kw)


def test_run_rejects_an_unknown_task_before_anything_starts(tmp_path):
    res = run(TREX + ["run", "no-such-task", "--home", str(tmp_path)])
    assert res.returncode != 0
    assert "unknown task 'no-such-task'" in res.stderr and "arith-sub" in res.stderr
    assert EventLog(tmp_path).searches() == []


def test_resume_of_an_unknown_search_says_so(tmp_path):
    res = run(TREX + ["resume", "nope", "--home", str(tmp_path)])
    assert res.returncode != 0 and "no search 'nope'" in res.stderr


def test_run_refuses_to_reuse_a_search_id(tmp_path):
    start_search(EventLog(tmp_path), SearchConfig(budget=Budget(max_trials=1)), "taken")
    res = run(TREX + ["run", "arith-sub", "--search-id", "taken", "--home", str(tmp_path)])
    assert res.returncode != 0 and "already exists" in res.stderr and "trex resume taken" in res.stderr


def test_status_lists_searches_and_shows_one(tmp_path):
    log = EventLog(tmp_path)
    start_search(log, SearchConfig(proposer="optuna", budget=Budget(max_trials=2)), "s-a")
    start_search(log, SearchConfig(proposer="llm", budget=Budget(max_trials=2)), "s-b")
    res = run(TREX + ["status", "--home", str(tmp_path), "--format", "json"])
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [(r["search_id"], r["proposer"], r["status"]) for r in rows] == [("s-a", "optuna", "running"),
                                                                            ("s-b", "llm", "running")]
    one = json.loads(run(TREX + ["status", "s-a", "--home", str(tmp_path), "--format", "json"]).stdout)
    assert one["search_id"] == "s-a" and one["trials"] == 0 and one["running"] == []


def test_trex_actors_start_is_idempotent_and_stop_removes_them(ray_local, tmp_path):
    address = ray_local.get_runtime_context().gcs_address
    cli = [sys.executable, "-c", "from trex.commands.actors_cmds import main; main()"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        first = run(cli + ["start", "--address", address, "--executors", "1", "--threads", "1", "--home",
                           str(tmp_path), "--format", "json"], env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        a = {r["name"]: r["actor_id"] for r in json.loads(first.stdout)["actors"]}
        assert set(a) == {"trex-researcher", "trex-evaluator", "trex-distiller", "trex-executor-0", "trex-scheduler"}
        second = run(cli + ["start", "--address", address, "--executors", "1", "--threads", "1", "--home",
                            str(tmp_path), "--format", "json"], env=env)
        assert second.returncode == 0, second.stderr[-3000:]
        assert {r["name"]: r["actor_id"] for r in json.loads(second.stdout)["actors"]} == a  # the same actors
        from trex.actors.log_service import ensure_service, service_name

        ray_local.get(ensure_service(tmp_path).pid.remote())  # a home's log service, as a Conductor starts it
        a[service_name(tmp_path)] = None
        st = run(cli + ["status", "--address", address, "--home", str(tmp_path), "--format", "json"], env=env)
        rows = json.loads(st.stdout)
        assert {r["name"] for r in rows} == set(a)
        assert [r["home"] for r in rows if r["name"].startswith("trex-log-")] == [str(tmp_path)]
    finally:
        stop = run(cli + ["stop", "--address", address, "--home", str(tmp_path), "--format", "json"], env=env)
    assert stop.returncode == 0, stop.stderr[-3000:]
    assert set(json.loads(stop.stdout)["stopped"]) == set(a)
    after = run(cli + ["status", "--address", address, "--home", str(tmp_path), "--format", "json"], env=env)
    assert json.loads(after.stdout) == []


def test_run_refuses_more_executors_than_the_cpus_fit(arith_home):
    """Executors reserve their threads as CPUs: a pool that cannot fit would wait forever."""
    res = run(TREX + ["run", "arith-sub", "--parallel", "3", "--threads", "1", "--num-cpus", "2", "--proposer",
                      "random", "--home", str(arith_home)])
    assert res.returncode != 0
    assert "3 executor(s) x 1 thread(s) need 3 CPUs; the Ray cluster has 2" in res.stderr
