"""Orchestration overhead and executor idle time of a search on the Ray actors.

    python tools/bench_actors.py [--executors 2] [--trials 10] [--steps 200] [--proposer random]

Runs one real search on ``arith-sub`` (local Ray, a fresh home under /tmp that links the
cached base model) and measures from the log's timestamps, per executor (``TrialStarted.worker``):

* dispatch gap — from the event that freed an executor (its previous trial's close) to the
  ``TrialStarted`` of its next trial: the Conductor's reaction plus the Executor's start-up
  of the trial (plan parse, recipe, cache lookup) before the worker process is launched; and
  the same over the gaps whose next plan was already proposed when the executor freed (the
  others include waiting for the policy, an evaluation or the Researcher);
* proposal wait — from a node's ``PlanProposed`` to its ``TrialStarted`` (a plan made ahead
  waits here while the executors are busy: large is good, it means no executor waited for it);
* idle fraction — 1 − busy / (executors × span), busy = sum of trial durations, span = first
  ``TrialStarted`` to last trial close.

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def measure(home, sid, executors: int) -> dict:
    from trex.events.log import EventLog

    events = EventLog(home).read(sid)
    started, proposed = {}, {}
    per_worker: dict[str, list] = {}
    for e in events:
        t = ts(e.recorded_at)
        if e.type == "PlanProposed":
            proposed[e.event.node_id] = t
        elif e.type == "TrialStarted":
            started[e.event.trial_id] = (t, e.event.worker, e.event.node_id)
        elif e.type in ("TrialFinished", "TrialFailed", "TrialAbandoned") and e.event.trial_id in started:
            t0, w, nid = started[e.event.trial_id]
            per_worker.setdefault(w, []).append((t0, t, nid))
    spans = sorted(s for v in per_worker.values() for s in v)
    gaps, ready_gaps = [], []
    for v in per_worker.values():
        v.sort()
        for a, b in zip(v, v[1:]):
            gaps.append(b[0] - a[1])
            if proposed.get(b[2], float("inf")) < a[1]:  # its plan was waiting when the executor freed
                ready_gaps.append(b[0] - a[1])
    waits = [s[0] - proposed[s[2]] for s in spans if s[2] in proposed]
    busy = sum(b - a for a, b, _ in spans)
    span = max(b for _, b, _ in spans) - min(a for a, _, _ in spans)
    return {
        "trials": len(spans),
        "trial_seconds_median": round(statistics.median(b - a for a, b, _ in spans), 2),
        "dispatch_gap_s": {"median": round(statistics.median(gaps), 3), "max": round(max(gaps), 3), "n": len(gaps)}
        if gaps else None,
        # the issue-16 figure: the gap when a proposal was ready (not waiting for the policy or the LLM)
        "dispatch_gap_when_ready_s": {"median": round(statistics.median(ready_gaps), 3),
                                      "max": round(max(ready_gaps), 3), "n": len(ready_gaps)} if ready_gaps else None,
        "proposal_wait_s_median": round(statistics.median(waits), 2) if waits else None,
        "idle_fraction": round(1 - busy / (executors * span), 3),
        "span_s": round(span, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--executors", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--proposer", default="random")
    ap.add_argument("--base-model", default=str(Path(__file__).resolve().parents[1] / ".trex-test-cache" / "models"
                                                / "arith-base-0"), help="a prepared arith base model folder")
    args = ap.parse_args()

    from trex.actors.conduct import conduct, spawn_pool
    from trex.actors.runtime import init_ray
    from trex.conductor import SearchConfig, start_search
    from trex.events.log import EventLog
    from trex.events.search import Budget

    home = Path(tempfile.mkdtemp(prefix="trex-bench-"))
    base = Path(args.base_model)
    if base.exists():
        shutil.copytree(base, home / "models" / "arith-base-0")
    sid = start_search(EventLog(home), SearchConfig(
        task="arith-sub", proposer=args.proposer, budget=Budget(max_trials=args.trials), trial_steps=args.steps,
        eval_limit=100, parallel=args.executors))
    init_ray(home, num_cpus=args.executors * args.threads)
    pool = spawn_pool(args.executors, threads=args.threads)
    t0 = time.time()
    summary = conduct(home, sid, pool)
    wall = time.time() - t0
    out = {"executors": args.executors, "threads": args.threads, "steps": args.steps, "proposer": args.proposer,
           "wall_s": round(wall, 1), "best_score": summary["best_score"], **measure(home, sid, args.executors)}
    print(json.dumps(out, indent=2))
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
