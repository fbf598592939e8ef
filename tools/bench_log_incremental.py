"""Benchmark reads after a position (``EventLog.read(sid, after_seq=last)``) on logs of 1k vs 100k events.

Not a test: prints figures for docs/events.md. A background of searches fills the log (sealed
segments of 20,000 events plus an open one); one tracked search gets an event appended by another
``EventLog`` instance, then the reader asks for what is after the last seq it saw — what a
Conductor does each step.

    .venv/bin/python tools/bench_log_incremental.py [--sizes 1000 100000] [--steps 200] [--json]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from trex.events.log import EventLog
from trex.events.notes import NoteAdded
from trex.events.trials import TrialProgressed


def fill(home: Path, total: int, batch: int = 500) -> EventLog:
    log = EventLog(home)
    left, b = total, 0
    while left > 0:
        k = min(batch, left)
        log.append(f"bg-{b % 50}", [TrialProgressed(node_id=f"n{b}", trial_id=f"t{b}", step=i, loss=1.0)
                                     for i in range(k)])
        log.append("tracked", [NoteAdded(text=f"fill {b}")])
        left -= k + 1
        b += 1
    return log


def ms(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1000, 3)


def bench(total: int, steps: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="trex-bench-inc-"))
    try:
        writer = fill(home, total)
        segs = sorted(p.name for p in writer.segdir.iterdir())
        # a full read from a fresh instance: what every read cost before the offset index
        t = time.perf_counter()
        envs = EventLog(home).read("tracked")
        full_cold = time.perf_counter() - t
        reader = EventLog(home)
        last = reader.read("tracked")[-1].seq  # warms the reader: footers read, open segment decoded
        inc, idle, fresh, full_warm = [], [], [], []
        for i in range(steps):
            writer.append("tracked", [NoteAdded(text=f"step {i}")])
            t = time.perf_counter()
            new = reader.read("tracked", after_seq=last)
            inc.append(time.perf_counter() - t)
            assert [e.seq for e in new] == [last + 1], new
            last = new[-1].seq
            t = time.perf_counter()
            assert reader.read("tracked", after_seq=last) == []
            idle.append(time.perf_counter() - t)
            if i % 20 == 0:
                t = time.perf_counter()
                EventLog(home).read("tracked", after_seq=last)
                fresh.append(time.perf_counter() - t)
                t = time.perf_counter()
                reader.read("tracked")
                full_warm.append(time.perf_counter() - t)
        return {"events": total, "segments": segs, "tracked_events": len(envs) + steps,
                "full_read_fresh_instance_ms": round(full_cold * 1000, 3),
                "full_read_warm_ms": ms(full_warm),
                "after_seq_one_new_event_ms": ms(inc), "after_seq_nothing_new_ms": ms(idle),
                "after_seq_fresh_instance_ms": ms(fresh)}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = [bench(n, a.steps) for n in a.sizes]
    if a.json:
        print(json.dumps({"python": sys.version.split()[0], "machine": platform.machine(), "results": res}, indent=2))
        return
    for r in res:
        print(f"{r['events']:>7} events ({len(r['segments'])} segment files): "
              f"after_seq with 1 new event {r['after_seq_one_new_event_ms']} ms, nothing new "
              f"{r['after_seq_nothing_new_ms']} ms, fresh instance {r['after_seq_fresh_instance_ms']} ms; "
              f"full read fresh {r['full_read_fresh_instance_ms']} ms, warm {r['full_read_warm_ms']} ms")


if __name__ == "__main__":
    main()
