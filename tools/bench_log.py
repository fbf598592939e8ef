"""Benchmark the event log (issue 2 targets). Not a test: prints figures to put in docs/events.md.

    .venv/bin/python tools/bench_log.py [--events 1000000] [--json]
    .venv/bin/python tools/bench_log.py --vs-optuna [--rounds 5] [--appends 300] [--threads 16] [--service]

``--vs-optuna``: durable single-event appends side by side with Optuna's ``JournalFileBackend`` in one
run, interleaved round by round (same disk, same moment): trex's ``EventLog.append`` of one event
against Optuna's ``append_logs`` of one operation (both take a file lock, write and fsync before
returning), and against a whole ``JournalStorage`` write (``set_trial_intermediate_value``: the
operation plus the storage's own Python work and its read-back of the journal). Then the same with
``--threads`` appenders at once (threads of one process). Medians over rounds, and trex/Optuna ratios.
``--service`` adds the arm of an actor on Ray: the same appends through the home's log service
(a local Ray instance; the appenders are threads of this driver, each append one actor call, which
the service writes in groups: one record and one fsync for the appends that waited together).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from trex.events.log import EventLog
from trex.events.notes import NoteAdded
from trex.events.trials import TrialProgressed


def bench_single(home: Path, n: int = 1000) -> float:
    log = EventLog(home)
    t = time.perf_counter()
    for i in range(n):
        log.append("single", [NoteAdded(text=f"note {i}")])
    return n / (time.perf_counter() - t)


def bench_batches(home: Path, total: int, batch: int = 1000) -> float:
    log = EventLog(home)
    t = time.perf_counter()
    for b in range(total // batch):
        log.append(
            f"search-{b % 50}",
            [TrialProgressed(node_id=f"n{b}", trial_id=f"t{b}", step=i, loss=1.0 / (i + 1)) for i in range(batch)],
        )
    return total / (time.perf_counter() - t)


def bench_read_fold(home: Path) -> dict:
    log = EventLog(home)
    t = time.perf_counter()
    envs = log.read()
    t_read = time.perf_counter() - t
    t = time.perf_counter()
    counts: Counter = Counter()
    last: dict[str, int] = {}
    for e in envs:  # a fold: events per type and the head of each stream
        counts[e.type] += 1
        last[e.search_id] = e.seq
    t_fold = time.perf_counter() - t
    return {"events": len(envs), "read_s": round(t_read, 3), "fold_s": round(t_fold, 3), "total_s": round(t_read + t_fold, 3)}


def bench_sql(home: Path) -> dict:
    from trex.search.views import connect, query  # what `trex sql` runs: the log's views and the tree's

    queries = {
        "count": "SELECT count(*) FROM events",
        "group_by": "SELECT type, count(*) FROM events GROUP BY type",
        "group_by_search": "SELECT search_id, count(*), max(seq) FROM events GROUP BY search_id",
    }
    out = {}
    con = connect(home)
    for name, q in queries.items():
        con.execute(q).fetchall()  # warm
        times = []
        for _ in range(5):
            t = time.perf_counter()
            con.execute(q).fetchall()
            times.append(time.perf_counter() - t)
        out[f"{name}_warm_ms"] = round(statistics.median(times) * 1000, 1)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            query(home, q)
            times.append(time.perf_counter() - t)
        out[f"{name}_fresh_connection_ms"] = round(statistics.median(times) * 1000, 1)
    trex = shutil.which("trex") or str(Path(sys.executable).with_name("trex"))
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([trex, "sql", queries["count"], "--home", str(home), "--format", "json"], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    out["cli_count_end_to_end_ms"] = round(statistics.median(times) * 1000, 1)
    return out


def _rate(fn, n: int, threads: int = 1) -> float:
    """Calls of ``fn(i)`` per second, ``n`` in all, spread over ``threads`` threads."""
    from concurrent.futures import ThreadPoolExecutor

    t = time.perf_counter()
    if threads == 1:
        for i in range(n):
            fn(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, range(n)))
    return n / (time.perf_counter() - t)


def vs_optuna(base: Path, rounds: int, n: int, threads: int, service: bool = False) -> dict:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    log = EventLog(base / "trex")
    backend = JournalFileBackend(str(base / "optuna-raw.log"))
    storage = JournalStorage(JournalFileBackend(str(base / "optuna-storage.log")))
    study = optuna.create_study(storage=storage)
    trial_id = storage.create_new_trial(study._study_id)
    op = {"op_code": 8, "worker_id": "bench", "trial_id": 0, "step": 0, "intermediate_value": 0.5}

    arms = {
        "trex_append": lambda i: log.append("bench", [NoteAdded(text=f"note {i}")]),
        "optuna_backend_append": lambda i: backend.append_logs([{**op, "step": i}]),
        "optuna_storage_write": lambda i: storage.set_trial_intermediate_value(trial_id, i, 0.5),
    }
    remote_stats = None
    if service:
        from trex.actors.log_service import RemoteLog, ensure_service
        from trex.actors.runtime import init_ray

        ray = init_ray(base / "ray-home", num_cpus=2)
        handle = ensure_service(base / "trex-service")
        remote = RemoteLog(handle, base / "trex-service")
        remote.append("warm", [NoteAdded(text="warm")])
        arms["trex_service_append"] = lambda i: remote.append("bench", [NoteAdded(text=f"note {i}")])
        remote_stats = lambda: ray.get(handle.stats.remote())  # noqa: E731
    single = {k: [] for k in arms}
    many = {k: [] for k in arms if k != "optuna_storage_write"}  # the storage is not meant for threads
    for _ in range(rounds):  # interleaved: every arm sees the same disk state and load
        for k, fn in arms.items():
            single[k].append(_rate(fn, n))
        for k in many:
            many[k].append(_rate(arms[k], n, threads))
    med = lambda xs: round(statistics.median(xs))  # noqa: E731
    out = {"rounds": rounds, "appends_per_round": n, "threads": threads,
           "single_appender_per_s": {k: med(v) for k, v in single.items()},
           f"{threads}_appenders_per_s": {k: med(v) for k, v in many.items()}}
    s1, sm = out["single_appender_per_s"], out[f"{threads}_appenders_per_s"]
    out["ratios"] = {
        "single: trex / optuna backend": round(s1["trex_append"] / s1["optuna_backend_append"], 2),
        "single: trex / optuna storage write": round(s1["trex_append"] / s1["optuna_storage_write"], 2),
        f"{threads} threads: trex / optuna backend": round(sm["trex_append"] / sm["optuna_backend_append"], 2),
    }
    if remote_stats is not None:
        st = remote_stats()
        out["ratios"]["single: trex service / optuna backend"] = round(
            s1["trex_service_append"] / s1["optuna_backend_append"], 2)
        out["ratios"][f"{threads} threads: trex service / optuna backend"] = round(
            sm["trex_service_append"] / sm["optuna_backend_append"], 2)
        out["service_appends_per_group"] = round(st["appends"] / max(1, st["groups"]), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--vs-optuna", action="store_true", help="durable appends side by side with Optuna's journal")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--appends", type=int, default=300)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--service", action="store_true", help="with --vs-optuna: also through the log service on Ray")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="trex-bench-"))
    if args.vs_optuna:
        try:
            res = {"machine": f"{platform.machine()} {platform.python_version()}",
                   **vs_optuna(base, args.rounds, args.appends, args.threads, args.service)}
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print(json.dumps(res, indent=2))
        return
    try:
        res = {"machine": f"{platform.machine()} {platform.python_version()}"}
        res["single_appends_per_s"] = round(bench_single(base / "single"))
        res["batch_1000_events_per_s"] = round(bench_batches(base / "big", args.events))
        res["read_and_fold"] = bench_read_fold(base / "big")
        res["sql"] = bench_sql(base / "big")
        res["cli_help_ms"] = round(min(_time([str(Path(sys.executable).with_name("trex")), "--help"]) for _ in range(3)) * 1000, 1)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(res, indent=2))


def _time(cmd) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
