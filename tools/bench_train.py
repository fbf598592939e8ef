"""Training benchmark on arith-sub: trials per hour at 400 steps, and the compute saved
by the result cache (a repeated plan) and by checkpoint continuation on a small tree.

    .venv/bin/python tools/bench_train.py [--base-model DIR] [--threads N] [--steps 400] [--json]

Tree: three 400-step drafts (different learning rates / ranks), one repeated plan
(served from the cache), one child continued from the best draft for 100 more steps,
and, to price the continuation, the same 500 steps trained from scratch.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-model", type=Path, default=None,
                    help="prepared arith base model folder (default: .trex-test-cache/models/arith-base-0, built if missing)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from ftbench.arith import prepare_base_model
    from ftbench.arith import evaluate_adapter
    from trex.events import EventLog
    from trex.plan import example_plan
    from trex.train import Executor

    repo = Path(__file__).resolve().parents[1]
    base = args.base_model or prepare_base_model(cache_dir=repo / ".trex-test-cache" / "models" / "arith-base-0")
    home = Path(tempfile.mkdtemp(prefix="trex-bench-train-"))
    shutil.copytree(base, home / "models" / "arith-base-0")
    log = EventLog(home)
    ex = Executor(home, lambda ev: log.append("bench", [ev]), search_id="bench", threads=args.threads,
                  progress_every=50)
    S = args.steps
    common = dict(batch_size=32, lr_schedule="cosine", warmup_steps=20)
    drafts = [
        example_plan(max_steps=S, learning_rate=3e-3, lora_rank=8, **common),
        example_plan(max_steps=S, learning_rate=1e-2, lora_rank=8, **common),
        example_plan(max_steps=S, learning_rate=3e-3, lora_rank=16,
                     target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                     **common),
    ]
    rows = []
    t_all = time.time()

    def run(name, plan, **kw):
        t = time.time()
        out = ex.run(plan, task="arith-sub", node_id=name, **kw)
        wall = time.time() - t
        metrics = evaluate_adapter(ex.store.get(out.adapter), "arith-sub", home) if out.ok else {}
        rows.append({"node": name, "status": out.status, "wall_s": round(wall, 2),
                     "compute_s": round(out.compute_seconds, 2), "steps": out.steps,
                     "train_s": round(out.train_metrics.get("train_seconds", 0.0), 2), **metrics})
        print(json.dumps(rows[-1]), file=sys.stderr)
        return out, wall

    outs = [run(f"draft{i}", p) for i, p in enumerate(drafts)]
    draft_walls = [w for _, w in outs]
    rep, rep_wall = run("repeat", drafts[0])
    best_i = max(range(3), key=lambda i: rows[i].get("exact_match", 0.0))
    best_plan, best_out = drafts[best_i], outs[best_i][0]
    child = best_plan.model_copy(update={"max_steps": S // 4, "continue_from_parent": True})
    cont, cont_wall = run("continued", child, parent_adapter=best_out.adapter)
    scratch_plan = best_plan.model_copy(update={"max_steps": S + S // 4})
    scratch, scratch_wall = run("scratch-equivalent", scratch_plan)
    total_wall = time.time() - t_all

    mean_trial = sum(draft_walls) / len(draft_walls)
    report = {
        "machine": {"cpus": os.cpu_count(), "threads": args.threads or os.cpu_count()},
        "steps_per_trial": S,
        "trial_wall_s_mean": round(mean_trial, 2),
        "trials_per_hour": round(3600 / mean_trial, 1),
        "train_s_per_trial_mean": round(sum(r["train_s"] for r in rows[:3]) / 3, 2),
        "cache": {"repeat_wall_s": round(rep_wall, 2), "saved_compute_s": round(outs[0][0].compute_seconds, 2),
                  "status": rep.status},
        "continuation": {"child_steps": S // 4, "child_compute_s": round(cont.compute_seconds, 2),
                         "scratch_steps": S + S // 4, "scratch_compute_s": round(scratch.compute_seconds, 2),
                         "saved_compute_s": round(scratch.compute_seconds - cont.compute_seconds, 2),
                         "child_exact_match": rows[-2].get("exact_match"),
                         "scratch_exact_match": rows[-1].get("exact_match")},
        "tree_compute_s": round(sum(r["compute_s"] for r in rows[:5]), 2),
        "tree_compute_without_reuse_s": round(sum(r["compute_s"] for r in rows[:3]) + outs[0][0].compute_seconds
                                              + scratch.compute_seconds, 2),
        "total_wall_s": round(total_wall, 1),
        "nodes": rows,
    }
    shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(json.dumps({k: v for k, v in report.items() if k != "nodes"}, indent=2))
        for r in rows:
            print(r)


if __name__ == "__main__":
    main()
