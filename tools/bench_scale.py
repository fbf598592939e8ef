"""Scale of trex on Ray: many simulated executors, many searches, one log service, one scheduler.

    python tools/bench_scale.py [--executors 100] [--searches 10] [--trials 10000] [--hosts 4]
                                [--trial-s 2.0] [--sweep 10,25,50,100] [--sweep-trials-per-executor 12]
                                [--out docs/results/scale.json]

What is real here: the Conductors (one :class:`trex.actors.shells.ConductorShell` per search, the
code ``trex run --address`` runs), the home's log service, the lease scheduler of a shared pool,
the Researchers (``ResearcherShell``, the random proposer) and the event log on disk. What is
simulated: the trainer and the evaluator. A simulated executor sleeps a sampled trial time
(lognormal around ``--trial-s``) and appends, one event per call through the log service, what a
real Executor appends for a trial (``DataOverlapChecked``, ``TrialStarted``, sampled
``TrialProgressed``, ``TrialFinished``); the simulated evaluator appends a real evaluation's events
for both of arith-sub's validation splits (and its held-out scores at the end). A hundred worker
processes do not fit two cores, so the simulated executors are threads in ``--hosts`` actors.

Measured, from the log's timestamps and the actors' processes:

* dispatch gap per executor (its previous trial's close to its next ``TrialStarted``), over all
  gaps and over those whose next plan was already proposed when the executor freed;
* executor idle fraction: 1 - busy / (executors x span);
* events per second through the log service (mean over the run, and the busiest 10 s), and the
  append latency the simulated executors saw (p50/p95): the service saturates where the event
  rate stops growing with the executors and the latency climbs — the ``--sweep`` finds that point;
* CPU seconds per event of the log service (and of every actor of the run), to extrapolate;
* Conductor memory (RSS of each Conductor's process at the end);
* overlaps: two trials on one executor at once (must be 0).

Prints one JSON object (and writes it to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASK = "arith-sub"


# ------------------------------------------------------------------------------ simulated work
class SimHost:
    """``count`` simulated executors (indices ``first`` ...) as threads of one actor.

    Answers what a Conductor asks an executor (``train``, ``inflight``, ``wait``), each call with
    the executor's index first (see :class:`SimExecutor`)."""

    def __init__(self, first: int, count: int, trial_s: float, progress: int, seed: int):
        self.first, self.count = first, count
        self.trial_s, self.progress = trial_s, progress
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self._busy: set[int] = set()
        self._done: dict[str, dict] = {}
        self._running: dict[str, int] = {}
        self._logs: dict = {}
        self.latencies: list[float] = []
        self.overlaps = 0

    def _sample(self) -> float:
        with self._lock:
            return min(5 * self.trial_s, max(0.2 * self.trial_s, self.rng.lognormvariate(math.log(self.trial_s), 0.5)))

    def train(self, i, home, sid, task, node_id, plan, parent_adapter, attempt, command_id, time_limit_s=None):
        import hashlib

        from trex.actors.log_service import log_for
        from trex.events.data import DataOverlapChecked
        from trex.events.envelope import new_id
        from trex.events.trials import TrialFinished, TrialProgressed, TrialStarted
        from trex.plan import parse_plan, plan_hash

        with self._lock:
            if command_id in self._done:
                return self._done[command_id]
            if i in self._busy:
                self.overlaps += 1
            self._busy.add(i)
            self._running[command_id] = i
        try:
            log = log_for(home, self._logs)

            def emit(ev):
                t0 = time.perf_counter()
                log.append(sid, [ev])
                dt = time.perf_counter() - t0
                with self._lock:
                    self.latencies.append(dt)

            phash = plan_hash(parse_plan(plan))
            digest = hashlib.sha256(f"{sid}/{node_id}/{attempt}".encode()).hexdigest()
            trial_id, dur = new_id(), self._sample()
            emit(DataOverlapChecked(node_id=node_id, key=digest, train_hash=digest, train_rows=2000,
                                    heldout_rows=(("eval", 500), ("test", 500))))
            emit(TrialStarted(node_id=node_id, trial_id=trial_id, command_id=command_id, plan_hash=phash,
                              worker=f"sim/executor-{i}", attempt=attempt))
            t_start = time.time()
            for k in range(self.progress):
                time.sleep(max(0.0, t_start + dur * (k + 1) / (self.progress + 1) - time.time()))
                emit(TrialProgressed(node_id=node_id, trial_id=trial_id, step=(k + 1) * 50, loss=2.0 / (k + 2)))
            time.sleep(max(0.0, t_start + dur - time.time()))
            emit(TrialFinished(node_id=node_id, trial_id=trial_id, adapter=digest, plan_hash=phash, work_key=digest,
                               steps=50 * (self.progress + 1), train_metrics={"train_loss": 0.5},
                               compute_seconds=round(dur, 3)))
            out = {"node_id": node_id, "command_id": command_id, "ok": True, "status": "finished",
                   "adapter": digest, "reason": ""}
        finally:
            with self._lock:
                self._busy.discard(i)
                self._running.pop(command_id, None)
        with self._lock:
            self._done[command_id] = out
        return out

    def inflight(self, i) -> list[str]:
        with self._lock:
            return [c for c, j in self._running.items() if j == i]

    def wait(self, i, command_id):
        while True:
            with self._lock:
                if command_id in self._done:
                    return self._done[command_id]
                if command_id not in self._running:
                    return None
            time.sleep(0.05)

    def stats(self) -> dict:
        with self._lock:
            return {"latencies": list(self.latencies), "overlaps": self.overlaps, "pid": os.getpid()}


class SimEvaluator:
    """Scores by sleeping ``eval_s`` and appending a real evaluation's events (both val splits)."""

    def __init__(self, eval_s: float, seed: int):
        self.eval_s = eval_s
        self.rng = random.Random(seed)
        self._logs: dict = {}
        self._lock = threading.Lock()

    def _value(self) -> float:
        with self._lock:
            return round(self.rng.random(), 3)

    def evaluate(self, home, sid, task, node_id, adapter, limit=None) -> bool:
        from trex.actors.log_service import log_for
        from trex.events.envelope import new_id
        from trex.events.evaluation import EvaluationFinished, MetricRecorded

        log = log_for(home, self._logs)
        time.sleep(self.eval_s)
        for name, split, primary in (("exact_match", "eval", True), ("add_exact_match", "eval_add", False)):
            eid = new_id()
            log.append(sid, [MetricRecorded(node_id=node_id, name=name, value=self._value(), primary=primary,
                                            split=split, eval_id=eid)])
            log.append(sid, [EvaluationFinished(node_id=node_id, eval_id=eid, backend="sim", n_examples=200,
                                                seconds=self.eval_s / 2, adapter=adapter)])
        return True

    def evaluate_heldout(self, home, sid, task, node_id, adapter, rank, anytime=()) -> bool:
        from trex.actors.log_service import log_for
        from trex.events.evaluation import HeldOutScored

        log = log_for(home, self._logs)
        time.sleep(self.eval_s)
        log.append(sid, [HeldOutScored(node_id=node_id, name=n, value=self._value(), split=s, primary=p, rank=rank,
                                       anytime=tuple(anytime), n_examples=500, adapter=adapter)
                         for n, s, p in (("exact_match", "test", True), ("add_exact_match", "test_add", False))])
        return True

    def pid(self) -> int:
        return os.getpid()


class _Call:
    def __init__(self, method, i: int):
        self.method, self.i = method, i

    def remote(self, *args, **kwargs):
        return self.method.remote(self.i, *args, **kwargs)


class SimExecutor:
    """What a Conductor holds for one simulated executor: its calls go to its host with its index."""

    def __init__(self, host, i: int):
        self.host, self.i = host, i

    @property
    def train(self):
        return _Call(self.host.train, self.i)

    @property
    def inflight(self):
        return _Call(self.host.inflight, self.i)

    @property
    def wait(self):
        return _Call(self.host.wait, self.i)


# ------------------------------------------------------------------------------ one run
def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def _cpu(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def run_once(ray, root: Path, executors: int, searches: int, trials: int, hosts: int, trial_s: float, eval_s: float,
             progress: int, researchers: int, seed: int, limit_s: float) -> dict:
    import psutil

    from trex.actors.conduct import Pool
    from trex.actors.log_service import ensure_service
    from trex.actors.runtime import NAMESPACE
    from trex.actors.scheduler import scheduler_for
    from trex.actors.shells import remote_classes
    from trex.conductor import SearchConfig, start_search
    from trex.events.log import EventLog
    from trex.events.search import Budget

    home = Path(tempfile.mkdtemp(prefix=f"scale-{executors}-", dir=root))
    log = EventLog(home)
    per = [trials // searches + (1 if k < trials % searches else 0) for k in range(searches)]
    sids = [start_search(log, SearchConfig(task=TASK, proposer="random", seed=seed + k,
                                           budget=Budget(max_trials=n), trial_time_limit_s=max(60.0, 20 * trial_s),
                                           parallel=executors), search_id=f"scale-{k:02d}")
            for k, n in enumerate(per)]
    service = ensure_service(home)
    service_pid = ray.get(service.pid.remote())
    prefix = f"scale{executors}-{os.getpid()}"
    sched = scheduler_for(executors, prefix)
    rc = remote_classes()
    host_cls = ray.remote(num_cpus=0, max_concurrency=2 * (executors // hosts + 1) + 8)(SimHost)
    bounds = [(h * executors // hosts, (h + 1) * executors // hosts) for h in range(hosts)]
    host_actors = [host_cls.remote(a, b - a, trial_s, progress, seed + 100 + h) for h, (a, b) in enumerate(bounds)]
    sims = [SimExecutor(host_actors[h], i) for h, (a, b) in enumerate(bounds) for i in range(a, b)]
    evaluator = ray.remote(num_cpus=0, max_concurrency=64)(SimEvaluator).remote(eval_s, seed + 7)
    res = [rc["researcher"].remote() for _ in range(researchers)]
    conductors = [rc["conductor"].remote() for _ in sids]
    pids = {"service": service_pid, "scheduler": ray.get(sched.pid.remote()), "evaluator": ray.get(evaluator.pid.remote()),
            "hosts": [ray.get(h.stats.remote())["pid"] for h in host_actors],
            "researchers": [ray.get(r.pid.remote()) for r in res], "conductors": [ray.get(c.pid.remote()) for c in conductors]}
    every = [pids["service"], pids["scheduler"], pids["evaluator"], *pids["hosts"], *pids["researchers"],
             *pids["conductors"]]
    cpu0 = {p: _cpu(p) for p in every}
    t0 = time.time()
    runs = [c.run.remote(str(home), sid, Pool(researcher=res[k % researchers], executors=sims, evaluator=evaluator,
                                                distiller=None, scheduler=sched).as_dict(), {"distill_every": 10**9})
            for k, (c, sid) in enumerate(zip(conductors, sids))]
    rss_peak = {p: 0 for p in pids["conductors"]}
    pending, failed = list(runs), []
    while pending and time.time() - t0 < limit_s:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=5)
        for r in done:
            try:
                ray.get(r)
            except Exception as e:  # noqa: BLE001 - reported, never hidden
                failed.append(f"{type(e).__name__}: {str(e)[:300]}")
        for p in rss_peak:
            try:
                rss_peak[p] = max(rss_peak[p], psutil.Process(p).memory_info().rss)
            except psutil.Error:
                pass
        print(f"  [{executors} executors] {time.time() - t0:6.0f}s, {len(runs) - len(pending)}/{len(runs)} searches done",
              file=sys.stderr, flush=True)
    wall = time.time() - t0
    cpu = {p: _cpu(p) - cpu0[p] for p in every}
    host_stats = [ray.get(h.stats.remote()) for h in host_actors]
    svc = ray.get(service.stats.remote())
    for a in [*conductors, *host_actors, evaluator, *res, sched, service]:
        ray.kill(a, no_restart=True)
    time.sleep(1)

    # ---------------------------------------------------------------- from the log
    per_worker: dict[str, list] = {}
    proposed, stamps, n_events, heldout = {}, [], 0, 0
    reader = EventLog(home)
    finished = 0
    for sid in sids:
        started = {}
        for e in reader.read(sid):
            t = _ts(e.recorded_at)
            stamps.append(t)
            n_events += 1
            if e.type == "PlanProposed":
                proposed[(sid, e.event.node_id)] = t
            elif e.type == "TrialStarted":
                started[e.event.trial_id] = (t, e.event.worker, e.event.node_id)
            elif e.type in ("TrialFinished", "TrialFailed", "TrialAbandoned") and e.event.trial_id in started:
                t1, w, nid = started[e.event.trial_id]
                per_worker.setdefault(w, []).append((t1, t, sid, nid))
            elif e.type == "HeldOutScored":
                heldout += 1
            elif e.type == "SearchFinished":
                finished += 1
    spans = sorted(s for v in per_worker.values() for s in v)
    gaps, ready_gaps, overlaps = [], [], 0
    for v in per_worker.values():
        v.sort()
        for a, b in zip(v, v[1:]):
            if b[0] < a[1]:
                overlaps += 1
            gaps.append(b[0] - a[1])
            if proposed.get((b[2], b[3]), float("inf")) < a[1]:
                ready_gaps.append(b[0] - a[1])
    busy = sum(b - a for a, b, _, _ in spans)
    first, last = (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else (0.0, 0.0)
    span = max(1e-9, last - first)
    stamps.sort()
    busiest, j = 0, 0
    for i, t in enumerate(stamps):
        while stamps[j] < t - 10:
            j += 1
        busiest = max(busiest, i - j + 1)
    lat = [x for h in host_stats for x in h["latencies"]]
    events_in_span = sum(1 for t in stamps if first <= t <= last)
    shutil.rmtree(home, ignore_errors=True)

    def dist(xs):
        return {"median": round(statistics.median(xs), 4), "p95": round(_pct(xs, 0.95), 4), "n": len(xs)} if xs else None

    return {
        "executors": executors, "searches": searches, "trials_budget": trials, "hosts": hosts, "researchers": researchers,
        "trial_s_median_sampled": trial_s, "eval_s": eval_s, "progress_events_per_trial": progress,
        "searches_finished": finished, "search_failures": failed, "wall_s": round(wall, 1),
        "trials_run": len(spans), "heldout_scores": heldout,
        "trials_per_s": round(len(spans) / span, 2),
        "ideal_trials_per_s": round(executors / (statistics.mean(b - a for a, b, _, _ in spans) if spans else 1), 2),
        "events": n_events, "events_per_trial": round(n_events / max(1, len(spans)), 1),
        "events_per_s_mean": round(events_in_span / span, 1), "events_per_s_busiest_10s": round(busiest / 10, 1),
        "append_latency_s": dist(lat),
        "service_append_calls": svc["appends"], "service_groups": svc["groups"],
        "service_mean_group": round(svc["appends"] / max(1, svc["groups"]), 2),
        "dispatch_gap_s": dist(gaps), "dispatch_gap_when_ready_s": dist(ready_gaps),
        "idle_fraction": round(1 - busy / (executors * span), 3), "span_s": round(span, 1),
        "overlaps_log": overlaps, "overlaps_seen_by_hosts": sum(h["overlaps"] for h in host_stats),
        "cpu_s": {"service": round(cpu[pids["service"]], 1), "scheduler": round(cpu[pids["scheduler"]], 1),
                  "conductors": round(sum(cpu[p] for p in pids["conductors"]), 1),
                  "researchers": round(sum(cpu[p] for p in pids["researchers"]), 1),
                  "sim_hosts": round(sum(cpu[p] for p in pids["hosts"]), 1),
                  "sim_evaluator": round(cpu[pids["evaluator"]], 1)},
        "service_cpu_ms_per_event": round(1000 * cpu[pids["service"]] / max(1, n_events), 3),
        "all_actors_cpu_ms_per_event": round(1000 * sum(cpu.values()) / max(1, n_events), 3),
        "conductor_rss_mb": {"max": round(max(rss_peak.values()) / 2**20, 1),
                             "median": round(statistics.median(rss_peak.values()) / 2**20, 1)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--executors", type=int, default=100)
    ap.add_argument("--searches", type=int, default=10)
    ap.add_argument("--trials", type=int, default=10000)
    ap.add_argument("--hosts", type=int, default=4, help="actors hosting the simulated executors")
    ap.add_argument("--researchers", type=int, default=2)
    ap.add_argument("--trial-s", type=float, default=2.0, help="median sampled trial time (lognormal, sigma 0.5)")
    ap.add_argument("--eval-s", type=float, default=0.2)
    ap.add_argument("--progress", type=int, default=4, help="TrialProgressed events per trial")
    ap.add_argument("--sweep", default="", help="executor counts to run first (e.g. 10,25,50,100), a few trials each")
    ap.add_argument("--sweep-trials-per-executor", type=int, default=12)
    ap.add_argument("--skip-main", action="store_true", help="only the sweep")
    ap.add_argument("--limit-s", type=float, default=3600.0, help="stop waiting for a run after this long")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    a = ap.parse_args()

    from trex.actors.runtime import init_ray

    root = Path(tempfile.mkdtemp(prefix="trex-bench-scale-"))
    ray = init_ray(root, num_cpus=os.cpu_count() or 2)
    out = {"machine": {"cpus": os.cpu_count()}, "sweep": [], "main": None}
    try:
        for n in [int(x) for x in a.sweep.split(",") if x.strip()]:
            r = run_once(ray, root, n, min(a.searches, n), n * a.sweep_trials_per_executor, min(a.hosts, n), a.trial_s,
                         a.eval_s, a.progress, a.researchers, a.seed, a.limit_s)
            out["sweep"].append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
        if not a.skip_main:
            out["main"] = run_once(ray, root, a.executors, a.searches, a.trials, a.hosts, a.trial_s, a.eval_s,
                                   a.progress, a.researchers, a.seed, a.limit_s)
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    # saturation: the fewest executors at which each executor's trial rate fell below 80% of the best
    # per-executor rate of these runs (the start and end of a run cost every size alike; past this point
    # the Ray side — log service, Conductors, on this machine's cores — and not the executors sets the pace)
    pts = sorted(out["sweep"] + ([out["main"]] if out["main"] else []), key=lambda r: r["executors"])
    out["efficiency"] = [{"executors": r["executors"], "trials": r["trials_run"], "trials_per_s": r["trials_per_s"],
                          "per_executor": round(r["trials_per_s"] / r["executors"], 4),
                          "of_ideal": round(r["trials_per_s"] / r["ideal_trials_per_s"], 3),
                          "events_per_s": r["events_per_s_mean"], "append_p95_s": (r["append_latency_s"] or {}).get("p95"),
                          "idle_fraction": r["idle_fraction"]} for r in pts]
    best = max((e["per_executor"] for e in out["efficiency"]), default=0)
    out["saturates_at_executors"] = next((e["executors"] for e in out["efficiency"] if e["per_executor"] < 0.8 * best),
                                         None)
    text = json.dumps(out, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
