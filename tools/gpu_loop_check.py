"""trex's trial worker (``trex.train.loop.run``) on a GPU: default GPU path vs the plain path.

    python tools/gpu_loop_check.py            # CUDA: Qwen3-0.6B-shaped model, seq 1024, batch 8, 60 steps
    python tools/gpu_loop_check.py --smoke    # CPU: tiny model, 6 steps, checks it runs

Unlike ``gpu_check.py`` (the ops alone), this runs the worker function a trial runs, with a
real ``Plan``: a base model folder built from a config (random weights, the arith char
tokenizer), a JSONL of varied-length examples, LoRA r=16 on all linear layers, bf16. It runs
the plan twice, once with the defaults (on CUDA: packing, chunked CE, bf16 base) and
once with all three off, then with compile on too, and prints steady-state seconds per step (between progress reports,
so compile time is excluded) and the loss of each as JSON. Needs pydantic on the GPU machine.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()

    import torch
    from transformers import Qwen3Config

    from ftbench.arith import build_tokenizer
    from trex.train.loop import WorkerSpec, run

    smoke = args.smoke or not torch.cuda.is_available()
    steps = args.steps or (6 if smoke else 60)
    every = 2 if smoke else 10
    seq = 64 if smoke else 1024
    tmp = Path(tempfile.mkdtemp(prefix="trex-gpu-loop-"))
    tok = build_tokenizer()
    tok.model_max_length = seq
    if smoke:
        cfg = Qwen3Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
    else:  # Qwen3-0.6B
        cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                          num_attention_heads=16, num_key_value_heads=8, head_dim=128, rope_theta=1_000_000.0,
                          max_position_embeddings=40960, tie_word_embeddings=True)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device("cpu" if smoke else "cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32 if smoke else torch.bfloat16)
    base = tmp / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    del model
    rng = random.Random(0)
    data = tmp / "train.jsonl"
    with open(data, "w") as f:
        for _ in range(2000):
            n = rng.randint(seq // 8, seq - 2)
            s = "".join(rng.choice("0123456789+-=") for _ in range(n))
            f.write(json.dumps({"prompt": s[: n // 2], "completion": s[n // 2:]}) + "\n")
    plan = {"method": "lora", "lora_rank": 16, "lora_alpha": 32.0,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "learning_rate": 1e-4, "lr_schedule": "constant", "max_steps": steps, "batch_size": 8,
            "max_seq_len": seq, "precision": "bf16", "seed": 0,
            "data": {"sources": [{"uri": "train.jsonl"}]}}
    out = {"device": torch.cuda.get_device_name(0) if not smoke else "cpu", "torch": torch.__version__,
           "steps": steps, "seq": seq, "batch": 8}
    print(json.dumps(out), flush=True)
    variants = (("default", {}), ("plain", {"packing": False, "chunked_ce": False, "compile": False}),
                ("compiled", {"compile": True}))
    for name, opts in variants:
        times: list[tuple[int, float]] = []
        lines: list[dict] = []

        def report(kind, **data):
            lines.append({"kind": kind, **data})
            if kind == "progress":
                times.append((data["step"], time.perf_counter()))

        spec = WorkerSpec(plan=plan, base_model_dir=str(base), data_path=str(data), out_dir=str(tmp / name),
                          progress_path=str(tmp / f"{name}.progress"), progress_every=every, **opts)
        t0 = time.perf_counter()
        try:
            res = run(spec, report)
        except Exception as e:  # noqa: BLE001
            out[name] = {"error": repr(e)[:2000]}
            continue
        started = next(m for m in lines if m["kind"] == "started")
        (s0, t_a), (s1, t_b) = times[1], times[-1]
        out[name] = {"seconds_per_step": round((t_b - t_a) / (s1 - s0), 4), "wall_s": round(time.perf_counter() - t0, 1),
                     "final_loss": round(res["train_metrics"]["final_loss"], 4),
                     "options": {k: started.get(k) for k in ("packing", "chunked_ce", "compile")},
                     "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if not smoke else None}
        print(json.dumps({name: out[name]}), flush=True)
        if not smoke:
            torch.cuda.reset_peak_memory_stats()
    if "seconds_per_step" in out.get("default", {}) and "seconds_per_step" in out.get("plain", {}):
        out["speedup"] = round(out["plain"]["seconds_per_step"] / out["default"]["seconds_per_step"], 2)
    print(json.dumps(out, indent=2))
    sys.exit(1 if any("error" in out.get(k, {}) for k, _ in variants) else 0)


if __name__ == "__main__":
    main()
