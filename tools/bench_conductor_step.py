"""The Conductor's per-step cost against the size of the home (issue 12's goal: 100k events within 2x of 1k).

One step of driver bookkeeping is what both drivers do between two pieces of work: append an
event to the search, fold the new events into the tree (incrementally), check the stop rules
and make the next decision. Training and proposing are left out: they do not depend on the log.
The home is filled with other searches' events (``TrialProgressed`` in batches) so that the
search driven is the same small one at every size. Not a test: prints figures for docs/events.md.

    .venv/bin/python tools/bench_conductor_step.py [--sizes 1000 100000] [--steps 200] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from trex.conductor import Runner, SearchConfig, start_search
from trex.events.log import EventLog
from trex.events.notes import NoteAdded
from trex.events.search import Budget
from trex.events.trials import TrialProgressed
from trex.orchestrate.rules import stop_reason
from trex.search import select


def fill(home: Path, n: int, batch: int = 1000) -> None:
    log = EventLog(home)
    for b in range(max(1, n // batch)):
        log.append(f"other-{b % 50}", [TrialProgressed(node_id=f"n{b}", trial_id=f"t{b}", step=i, loss=1.0)
                                       for i in range(min(batch, n))])
    log.seal()  # most of a real home is sealed segments; the open one holds the recent tail


def step_costs(home: Path, steps: int) -> dict[str, list[float]]:
    """Per step: the append (fsync'd: the disk's cost, the same at any size) and the bookkeeping
    that reads the log (incremental fold) and decides (stop rules, selection)."""
    log = EventLog(home)
    sid = start_search(log, SearchConfig(task="arith-sub", budget=Budget(max_trials=10_000)))
    runner = Runner(home, sid)
    runner.tree()
    out: dict[str, list[float]] = {"append": [], "fold_and_decide": [], "step": []}
    for i in range(steps):
        t0 = time.perf_counter()
        runner.emit(NoteAdded(text=f"step {i}"))
        t1 = time.perf_counter()
        tree = runner.tree()
        stop_reason(tree, 0.0)
        select(tree)
        t2 = time.perf_counter()
        out["append"].append(t1 - t0)
        out["fold_and_decide"].append(t2 - t1)
        out["step"].append(t2 - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            t = time.perf_counter()
            fill(home, n)
            built = time.perf_counter() - t
            costs = step_costs(home, args.steps)
        row = {"events_in_home": n, "fill_s": round(built, 2), "steps": args.steps}
        for k, v in costs.items():
            row[f"{k}_median_ms"] = round(1000 * statistics.median(v), 3)
        rows.append(row)
    if len(rows) > 1:
        for k in ("append", "fold_and_decide", "step"):
            rows[-1][f"{k}_ratio_to_first"] = round(rows[-1][f"{k}_median_ms"] / rows[0][f"{k}_median_ms"], 2)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(r)


if __name__ == "__main__":
    main()
