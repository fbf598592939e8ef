"""Headroom of the data tasks (ftbench/datatasks.py): how far data edits get past the best
hyperparameter-only plan, on the arith base model, on CPU.

    PYTHONPATH=. TREX_HOME=/tmp/hr .venv/bin/python tools/bench_headroom.py \
        --task arith-sub-retain --part base,hp,data [--steps 300] [--n-hp 20] [--out docs/results/headroom]

Per task it measures the base model, a seeded hyperparameter-only sweep (a reference plan plus
``--n-hp`` random draws over lr 1e-4..3e-2 log, rank {2,4,8,16,32}, targets {q,v | attention |
all linear}, schedule {constant, linear, cosine}, warmup {0, 0.05, 0.1}; fixed steps and batch,
train split only) and the hand-written data-edited plans of ``DATA_PLANS`` (mixing a pool,
loss-based cleaning, a prompt template). Every trial trains a LoRA adapter with trex's own worker
loop (``trex.train.loop.run``, in process, one thread) and scores it by greedy exact match
(``ftbench.arith.exact_match``) on the merged adapter, on every eval and test split.

Mixing follows ``trex.recipe``'s rule (each source gets weight/sum of the rows, capped by what it
has: no upsampling, so a small pool at a large share shrinks the total). Cleaning trains a probe
adapter with the same plan on the split alone, scores every row's completion loss (mean
token cross-entropy over completion + eos) under it and drops the highest ``drop`` fraction; the
probe's training counts in the trial's seconds. Results are appended to ``<out>/<task>.json``
after every trial (a rerun skips the trials already there). ``--only A,B --seeds 1,2`` reruns plans
with other training seeds (trials ``A@s1``...); ``--part summary`` writes ``<out>/summary.json``
(base, best HP-only and best data-edited trial per task, chosen on val, with seed means).
The numbers and what they mean: docs/results/headroom/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGETS = {"qv": ["q_proj", "v_proj"], "attention": ["q_proj", "k_proj", "v_proj", "o_proj"], "all": ALL_LINEAR}

# the primary metric (split) first; constraint: (metric, split, minimum)
TASKS = {
    "arith-sub-retain": {"metrics": {"sub": ("eval", "test"), "add": ("eval_add", "test_add")},
                         "primary": "sub", "constraint": ("add", 0.9)},
    "arith-sub-noisy": {"metrics": {"sub": ("eval", "test"), "add": ("eval_add", "test_add")},
                        "primary": "sub", "constraint": None},
    "arith-sub-shift": {"metrics": {"sub": ("eval", "test"), "src": ("eval_src", None)},
                        "primary": "sub", "constraint": None},
}

REF = {"learning_rate": 5e-3, "lora_rank": 16, "targets": "all", "lr_schedule": "cosine", "warmup_ratio": 0.05}


def hp_plans(n: int, seed: int = 0) -> list[dict]:
    """The reference plan and ``n`` seeded random draws (the same for every task)."""
    rng = random.Random(f"headroom-hp-{seed}")
    out = [dict(REF, name="hp00-ref")]
    for i in range(1, n + 1):
        out.append({"name": f"hp{i:02d}",
                    "learning_rate": float(f"{math.exp(rng.uniform(math.log(1e-4), math.log(3e-2))):.3g}"),
                    "lora_rank": rng.choice([2, 4, 8, 16, 32]), "targets": rng.choice(["qv", "attention", "all"]),
                    "lr_schedule": rng.choice(["constant", "linear", "cosine"]),
                    "warmup_ratio": rng.choice([0.0, 0.05, 0.1])})
    return out


# data-edited plans, by task: hyperparameters ("hp": a name from the sweep, or a dict) + sources;
# a source: {"split", "weight", optional "drop" (cleaning fraction), optional "template"}
def _mix2(a: str, b: str, share_b: float) -> list[dict]:
    return [{"split": a, "weight": round(1 - share_b, 4)}, {"split": b, "weight": share_b}]


DATA_PLANS: dict[str, list[dict]] = {
    "arith-sub-retain": [
        *({"name": f"ref+add{int(p * 100)}", "hp": "hp00-ref", "sources": _mix2("train", "pool_add", p)}
          for p in (0.1, 0.2, 0.3, 0.4, 0.5)),
        # round 2: the sweep's best hyperparameters (hp07, hp08) with the feasible shares, and 35%
        *({"name": f"{h}+add{int(p * 100)}", "hp": h, "sources": _mix2("train", "pool_add", p)}
          for h in ("hp07", "hp08") for p in (0.35, 0.4)),
        {"name": "ref+add35", "hp": "hp00-ref", "sources": _mix2("train", "pool_add", 0.35)},
    ],
    "arith-sub-noisy": [
        *({"name": f"ref+clean{int(d * 100)}", "hp": "hp00-ref", "sources": [{"split": "train", "drop": d}]}
          for d in (0.3, 0.4, 0.5)),
        {"name": "ref+pool20", "hp": "hp00-ref", "sources": _mix2("train", "pool_clean", 0.2)},
        {"name": "ref+poolonly", "hp": "hp00-ref", "sources": [{"split": "pool_clean"}]},
        {"name": "ref+clean40+pool20", "hp": "hp00-ref",
         "sources": [{"split": "train", "drop": 0.4, "weight": 0.8}, {"split": "pool_clean", "weight": 0.2}]},
        # round 2: a lighter cleaning; the sweep's best hyperparameters (hp12) with the best cleaning
        {"name": "ref+clean20", "hp": "hp00-ref", "sources": [{"split": "train", "drop": 0.2}]},
        {"name": "hp12+clean30", "hp": "hp12", "sources": [{"split": "train", "drop": 0.3}]},
    ],
    "arith-sub-shift": [
        {"name": "ref+poolonly", "hp": "hp00-ref", "sources": [{"split": "pool_target"}]},
        *({"name": f"ref+pool{int(p * 100)}", "hp": "hp00-ref", "sources": _mix2("train", "pool_target", p)}
          for p in (0.1, 0.3, 0.5)),
        {"name": "ref+template", "hp": "hp00-ref", "sources": [{"split": "train", "template": "{a} - {b} ="}]},
        # round 2: upsampled pool (repeat: k copies at weight/k, no dedup; weights by size keep all train
        # rows), the template with the sweep's best subtraction plans (hp07, hp08), template + pool
        *({"name": f"{h}+pool{k}x", "hp": h, "sources": [{"split": "train", "weight": 3750},
                                                        {"split": "pool_target", "weight": 250 * k, "repeat": k}]}
          for h in ("hp00-ref", "hp08") for k in (4, 8)),
        *({"name": f"{h}+template", "hp": h, "sources": [{"split": "train", "template": "{a} - {b} ="}]}
          for h in ("hp07", "hp08")),
        {"name": "hp08+template+pool", "hp": "hp08",
         "sources": [{"split": "train", "template": "{a} - {b} =", "weight": 3750}, {"split": "pool_target", "weight": 250}]},
    ],
}


# ------------------------------------------------------------------ pieces
def task_data(task: str, seed: int = 0) -> dict[str, list[dict]]:
    from ftbench.datatasks import GENERATORS

    return GENERATORS[task](seed)


def mix(parts: list[tuple[list[dict], float]], shuffle_seed: int = 0, dedup: bool = True) -> list[dict]:
    """trex.recipe's mixing rule over in-memory rows (dedup, ratio capped by availability, shuffle)."""
    from trex.recipe import dedup_parts, mix_by_weight

    rows = [p for p, _ in parts]
    mixed = mix_by_weight(dedup_parts(rows) if dedup else rows, [w for _, w in parts], seed=shuffle_seed)
    out = [{"prompt": r["prompt"], "completion": r["completion"]} for r in mixed]
    random.Random(f"{shuffle_seed}-shuffle").shuffle(out)
    return out


def make_plan(hp: dict, steps: int, batch: int) -> dict:
    from trex.plan import Plan
    from trex.recipe import Source, Recipe

    p = Plan(learning_rate=hp["learning_rate"], lora_rank=hp["lora_rank"],
             target_modules=tuple(TARGETS[hp["targets"]]), lr_schedule=hp["lr_schedule"],
             warmup_ratio=hp["warmup_ratio"], max_steps=steps, batch_size=batch, seed=hp.get("seed", 0),
             data=Recipe(sources=(Source(uri="rows.jsonl"),)))
    return p.model_dump(mode="json")


def train(rows: list[dict], hp: dict, steps: int, batch: int, base: Path, work: Path) -> tuple[Path, dict]:
    from trex.train.loop import Reporter, WorkerSpec, run

    work.mkdir(parents=True, exist_ok=True)
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prog = work / "progress.jsonl"
    prog.unlink(missing_ok=True)
    spec = WorkerSpec(plan=make_plan(hp, steps, batch), base_model_dir=str(base), data_path=str(data),
                      out_dir=str(work / "adapter"), progress_path=str(prog), threads=1, device="cpu",
                      progress_every=max(1, steps))
    res = run(spec, Reporter(str(prog)))
    return work / "adapter", res["train_metrics"]


def row_losses(model, rows: list[dict], batch_size: int = 256) -> list[float]:
    """Mean cross-entropy of each row's completion (+eos) tokens."""
    import torch

    from ftbench.arith import make_batch

    out: list[float] = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            ids, mask, labels = make_batch(rows[s:s + batch_size])
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            lab = labels[:, 1:]
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1),
                                                   ignore_index=-100, reduction="none").view(lab.shape)
            n = (lab != -100).sum(1).clamp(min=1)
            out.extend((ce.sum(1) / n).tolist())
    return out


def score(model, data: dict[str, list[dict]], task: str) -> dict[str, float]:
    from ftbench.arith import exact_match

    out = {}
    for m, (ev, te) in TASKS[task]["metrics"].items():
        for kind, split in (("val", ev), ("test", te)):
            if split is not None:
                out[f"{m}_{kind}"] = exact_match(model, data[split], max_new_tokens=4)
    return out


def hp_key(hp: dict) -> str:
    body = json.dumps({k: hp[k] for k in sorted(hp) if k != "name"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:12]


# ------------------------------------------------------------------ driver
class Bench:
    def __init__(self, task: str, steps: int, batch: int, out: Path, base: Path, tmp: Path):
        self.task, self.steps, self.batch, self.base, self.tmp = task, steps, batch, base, tmp
        self.path = out / f"{task}.json"
        self.data = task_data(task)
        self.res = json.loads(self.path.read_text()) if self.path.is_file() else {
            "task": task, "steps": steps, "batch_size": batch, "trials": []}
        if self.res.get("steps") != steps or self.res.get("batch_size") != batch:
            raise SystemExit(f"{self.path}: measured at steps {self.res.get('steps')} batch "
                             f"{self.res.get('batch_size')}; pass the same or another --out")
        self.probes: dict[tuple, list[float]] = {}

    def done(self, name: str) -> bool:
        return any(t["name"] == name for t in self.res["trials"])

    def save(self, trial: dict) -> None:
        self.res["trials"].append(trial)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.res, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
        s = {k: v for k, v in trial.items() if k.endswith(("_val", "_test")) or k in ("seconds", "rows")}
        print(f"[{self.task}] {trial['name']}: {json.dumps(s)}", flush=True)

    def base_trial(self) -> None:
        if self.done("base"):
            return
        from ftbench.arith import load_for_eval

        t = time.time()
        model = load_for_eval(self.base)
        self.save({"name": "base", "kind": "base", **score(model, self.data, self.task), "seconds": time.time() - t})

    def _clean(self, split: str, drop: float, hp: dict) -> tuple[list[dict], dict]:
        """The split without its ``drop`` hardest rows under a probe adapter trained on it (same plan)."""
        from ftbench.arith import load_for_eval

        rows = self.data[split]
        key = (split, hp_key(hp))
        info = {"probe_seconds": 0.0}
        if key not in self.probes:
            t = time.time()
            adapter, _ = train(mix([(rows, 1.0)]), hp, self.steps, self.batch, self.base, self.tmp / "probe")
            model = load_for_eval(self.base, adapter)
            self.probes[key] = row_losses(model, rows)
            info["probe_seconds"] = time.time() - t
            info["probe_scores"] = score(model, self.data, self.task)
        losses = self.probes[key]
        order = sorted(range(len(rows)), key=lambda i: (-losses[i], i))
        dropped = set(order[:int(drop * len(rows))])
        if self.task == "arith-sub-noisy":  # how well the losses find the planted noise
            wrong = {i for i, r in enumerate(rows) if int(r["completion"]) != _answer(r["prompt"])}
            info.update(noisy_rows=len(wrong), dropped=len(dropped), dropped_noisy=len(dropped & wrong),
                        noisy_left=len(wrong - dropped))
        return [r for i, r in enumerate(rows) if i not in dropped], info

    def trial(self, name: str, hp: dict, sources: list[dict], kind: str) -> None:
        if self.done(name):
            return
        from ftbench.arith import load_for_eval

        t = time.time()
        parts, info = [], {}
        for s in sources:
            rows = self.data[s["split"]]
            if s.get("drop"):
                rows, ci = self._clean(s["split"], s["drop"], hp)
                info.update(ci)
            if s.get("template"):
                rows = [dict(r, prompt=s["template"].format(**r)) for r in rows]
            k = s.get("repeat", 1)  # k copies of the source at weight/k each, and no dedup: upsampling
            parts.extend([(rows, s.get("weight", 1.0) / k)] * k)
        rows = mix(parts, dedup=not any(s.get("repeat", 1) > 1 for s in sources))
        counts = {}
        for s, (p, _) in zip(sources, _firsts(sources, parts)):
            keys = {(x["prompt"], x["completion"]) for x in p}
            counts[s["split"]] = sum(1 for r in rows if (r["prompt"], r["completion"]) in keys)  # rows, copies too
        adapter, tm = train(rows, hp, self.steps, self.batch, self.base, self.tmp / "trial")
        model = load_for_eval(self.base, adapter)
        sc = score(model, self.data, self.task)
        self.save({"name": name, "kind": kind, "hp": hp, "sources": sources, "rows": len(rows), "row_counts": counts,
                   **sc, **info, "train_seconds": tm["train_seconds"], "final_loss": tm["final_loss"],
                   "seconds": time.time() - t})


def _best(trials: list[dict], kind: str, primary: str, constraint) -> dict | None:
    """The trial of ``kind`` with the best primary val score (ties: the first), meeting the constraint."""
    best = None
    for t in trials:
        if t["kind"] != kind:
            continue
        if constraint is not None and t[f"{constraint[0]}_val"] < constraint[1]:
            continue
        if best is None or t[f"{primary}_val"] > best[f"{primary}_val"]:
            best = t
    return best


def summarize(out: Path) -> dict:
    """``summary.json``: per task, the base, the best hyperparameter-only and the best data-edited trial
    (chosen on val; with and without the constraint) and, where reruns exist, their seed means."""
    summary = {}
    for task, spec in TASKS.items():
        f = out / f"{task}.json"
        if not f.is_file():
            continue
        res = json.loads(f.read_text())
        trials = res["trials"]
        p, c = spec["primary"], spec["constraint"]
        keys = [f"{m}_{k}" for m in spec["metrics"] for k in ("val", "test")]

        def brief(t):
            if t is None:
                return None
            seeds = [x for x in trials if x["name"] == t["name"] or x["name"].startswith(t["name"] + "@s")]
            out_ = {"name": t["name"], **{k: t[k] for k in keys if k in t}}
            if "hp" in t:
                out_["hp"], out_["sources"], out_["seconds"] = t["hp"], t["sources"], round(t["seconds"], 1)
            if len(seeds) > 1:
                out_["seeds"] = len(seeds)
                for k in keys:
                    if k in t:
                        vals = [x[k] for x in seeds]
                        out_[f"{k}_mean"] = round(sum(vals) / len(vals), 4)
                        out_[f"{k}_min"], out_[f"{k}_max"] = min(vals), max(vals)
            return out_

        base = next((t for t in trials if t["name"] == "base"), None)
        row = {"steps": res["steps"], "batch_size": res["batch_size"], "primary": p, "constraint": c,
               "base": brief(base),
               "hp_best": brief(_best(trials, "hp", p, None)), "data_best": brief(_best(trials, "data", p, None)),
               "n_hp": sum(t["kind"] == "hp" for t in trials), "n_data": sum(t["kind"] == "data" for t in trials),
               "trial_seconds": {k: round(max((t["seconds"] for t in trials if t["kind"] == k), default=0), 1)
                                 for k in ("hp", "data")}}
        row["trial_seconds_mean"] = {k: round(sum(t["seconds"] for t in trials if t["kind"] == k) /
                                              max(1, sum(t["kind"] == k for t in trials)), 1) for k in ("hp", "data")}
        if c is not None:
            row["hp_best_feasible"] = brief(_best(trials, "hp", p, c))
            row["data_best_feasible"] = brief(_best(trials, "data", p, c))
        summary[task] = row
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    print(json.dumps(summary, indent=1, sort_keys=True))
    return summary


def _firsts(sources: list[dict], parts: list) -> list:
    """The first part of each source (a source with ``repeat`` k fills k parts)."""
    out, i = [], 0
    for s in sources:
        out.append(parts[i])
        i += s.get("repeat", 1)
    return out


def _answer(prompt: str) -> int:
    a, b = prompt.replace(" ", "").rstrip("=").split("-")
    return int(a) - int(b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--part", default="base,hp,data", help="comma list of base, hp, data, summary")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n-hp", type=int, default=20)
    ap.add_argument("--only", default=None, help="comma list of trial names to run (hp or data)")
    ap.add_argument("--seeds", default=None,
                    help="comma list of training seeds: rerun the --only plans with each (trials NAME@sSEED)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/results/headroom")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from ftbench.arith import prepare_base_model

    home = Path(os.environ.get("TREX_HOME", ".trex"))
    base = prepare_base_model(home)
    tmp = Path(tempfile.mkdtemp(prefix="headroom-"))
    try:
        b = Bench(args.task, args.steps, args.batch, args.out, base, tmp)
        only = set(args.only.split(",")) if args.only else None
        parts = args.part.split(",")
        hps = {h["name"]: h for h in hp_plans(args.n_hp)}
        if "base" in parts:
            b.base_trial()
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [None]

        def go(name, hp, sources, kind):
            hp = {k: v for k, v in hp.items() if k != "name"}
            for sd in seeds:
                if sd is None:
                    b.trial(name, hp, sources, kind)
                else:
                    b.trial(f"{name}@s{sd}", dict(hp, seed=sd), sources, kind + "-seed")

        if "hp" in parts:
            for name, hp in hps.items():
                if only is None or name in only:
                    go(name, hp, [{"split": "train"}], "hp")
        if "data" in parts:
            for dp in DATA_PLANS[args.task]:
                if only is None or dp["name"] in only:
                    go(dp["name"], dp["hp"] if isinstance(dp["hp"], dict) else hps[dp["hp"]], dp["sources"], "data")
        if "summary" in parts:
            summarize(args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
