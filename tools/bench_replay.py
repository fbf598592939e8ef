#!/usr/bin/env python
"""Benchmark: read + fold a 10,000-node / ~100,000-event search.

    .venv/bin/python tools/bench_replay.py [--nodes 10000] [--repeat 3] [--keep DIR]

Writes a synthetic search (trex.search.scenario) through EventLog into a temp
home in appends of 1000 events, then times, separately: reading the events
(EventLog.read -> envelopes), folding them into the tree, hashing the tree, and
one MCTS selection. Wall and CPU times are the best of --repeat runs (the
machine may be shared: CPU time is the steadier figure).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trex.events.log import EventLog  # noqa: E402
from trex.search import fold, select, tree_hash  # noqa: E402
from trex.search.scenario import synthetic_search  # noqa: E402


def timed(fn, repeat: int):
    best_wall = best_cpu = float("inf")
    out = None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    return out, best_wall, best_cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="read + fold benchmark of the search tree")
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="write the log here instead of a temp dir")
    args = ap.parse_args(argv)

    raws = synthetic_search("bench", args.nodes, seed=1, progress_steps=3)
    with tempfile.TemporaryDirectory() as tmp:
        home = args.keep or Path(tmp)
        log = EventLog(home)
        t0 = time.perf_counter()
        for i in range(0, len(raws), 1000):
            log.append_raw("bench", raws[i:i + 1000], expected_version=i)
        write_s = time.perf_counter() - t0
        segs = sorted(p.name for p in (home / "log" / "segments").iterdir())

        envs, read_w, read_c = timed(lambda: log.read("bench"), args.repeat)
        recs, rrec_w, rrec_c = timed(lambda: log.read_records("bench"), args.repeat)
        tree, fold_w, fold_c = timed(lambda: fold(envs), args.repeat)
        _, foldr_w, foldr_c = timed(lambda: fold(recs), args.repeat)
        h, hash_w, hash_c = timed(lambda: tree_hash(tree), args.repeat)
        d, sel_w, sel_c = timed(lambda: select(tree), args.repeat)

    rows = [
        ("write (appends of 1000, fsync each)", write_s, None),
        ("read: EventLog.read -> envelopes", read_w, read_c),
        ("read: EventLog.read_records -> dicts", rrec_w, rrec_c),
        ("fold envelopes -> SearchTree", fold_w, fold_c),
        ("fold records -> SearchTree", foldr_w, foldr_c),
        ("read + fold (envelopes)", read_w + fold_w, read_c + fold_c),
        ("tree hash", hash_w, hash_c),
        ("one MCTS selection", sel_w, sel_c),
    ]
    print(f"search: {len(tree.nodes)} nodes, {len(envs)} events, segments {segs}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} cpus, load average {load:.1f} at the end")
    print(f"tree hash {h[:16]}…, best {tree.best_node_id} ({tree.best_score}), next decision {d.node_id} {d.operator}")
    print(f"{'step':42s} {'wall s':>8s} {'cpu s':>8s}")
    for name, w, c in rows:
        print(f"{name:42s} {w:8.3f} {'' if c is None else f'{c:8.3f}':>8s}")
    print(f"fold target (<= 1 s): wall {'met' if fold_w <= 1.0 else 'NOT met'} ({fold_w:.3f} s), "
          f"cpu {'met' if fold_c <= 1.0 else 'NOT met'} ({fold_c:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
