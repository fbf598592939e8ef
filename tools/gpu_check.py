"""LoRA training throughput on a Qwen3-1.7B-shaped model: a plain loop vs trex's training path.

    python tools/gpu_check.py                 # on a GPU: seq 1024, batch 8, bf16, sdpa, LoRA r=16 on all linears
    python tools/gpu_check.py --smoke         # on a CPU: tiny config, 2 steps, just checks nothing crashes

The model is built from a ``Qwen3Config`` with random weights (no hub). The data are
synthetic examples of varied length (uniform in [seq/8, seq]) with the loss on the
second half of each, as in instruction tuning. Both paths see the same examples:

(a) plain: transformers + peft, each batch of ``batch`` examples right-padded, ``model(labels=...)``;
(b) trex: the ops used by ``trex.train`` on GPUs: examples packed into ``batch`` rows of
    ``seq`` tokens (block-diagonal attention via position ids), chunked cross-entropy over
    the labelled tokens only (no [tokens x 152k] logits), ``torch.compile`` of the decoder.

Throughput counts real (non-pad) tokens per second. MFU uses 6·N·tokens + attention
(12·L·H·s per token, PaLM convention) over the GPU's peak dense bf16 FLOPs (H100/H200:
989 TFLOPs; override with --peak-tflops). Prints one JSON object; ``ratio`` = trex/plain
tokens per second (target >= 1.5).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def qwen3_config(smoke: bool):
    from transformers import Qwen3Config

    if smoke:
        return Qwen3Config(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                           tie_word_embeddings=True)
    # Qwen3-1.7B
    return Qwen3Config(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                       rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)


def make_examples(n: int, seq: int, vocab: int, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        L = rng.randint(max(4, seq // 8), seq)
        ids = [rng.randrange(3, vocab) for _ in range(L)]
        p = L // 2
        out.append((ids, [-100] * p + ids[p:]))
    return out


def build_model(cfg, device, dtype, rank: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=ALL_LINEAR,
                                             task_type="CAUSAL_LM", lora_dropout=0.0))
    model.train()
    return model


def bench(path: str, cfg, args, device, dtype, examples):
    import torch

    ops = _load_ops()
    causal_lm_parts, chunked_causal_lm_loss = ops.causal_lm_parts, ops.chunked_causal_lm_loss
    pack_examples, pad_batch = ops.pack_examples, ops.pad_batch

    model = build_model(cfg, device, dtype, args.rank)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    compile_error = None
    body, head = causal_lm_parts(model)
    if path == "trex":
        # pack the whole stream of examples once, then take `batch` rows per step
        packed = pack_examples(examples, args.seq, 0)
        rows = packed["input_ids"].shape[0]
        row_real = [int(_real_tokens(packed["position_ids"][i : i + 1], packed["labels"][i : i + 1]))
                    for i in range(rows)]
        fwd_body = body
        if args.compile:
            try:
                fwd_body = torch.compile(body, dynamic=False)
            except Exception as e:  # noqa: BLE001
                compile_error = repr(e)

        def batches():
            i = 0
            while True:
                sl = slice(i, i + args.batch)
                if sl.stop > rows:
                    i, sl = 0, slice(0, args.batch)
                yield ({"input_ids": packed["input_ids"][sl], "position_ids": packed["position_ids"][sl]},
                       packed["labels"][sl], sum(row_real[sl]))
                i += args.batch

        def loss_fn(inputs, labels):
            hidden = fwd_body(**inputs).last_hidden_state
            return chunked_causal_lm_loss(hidden, head.weight, labels, chunk_size=args.ce_chunk)
    else:
        def batches():
            i = 0
            while True:
                ex = examples[i : i + args.batch]
                if len(ex) < args.batch:
                    i, ex = 0, examples[: args.batch]
                b = pad_batch(ex, 0)
                yield ({"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}, b["labels"],
                       int(b["attention_mask"].sum()))
                i += args.batch

        def loss_fn(inputs, labels):
            return model(**inputs, labels=labels).loss

    it = batches()
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else _Null()

    def step():
        inputs, labels, real = next(it)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["use_cache"] = False  # with a cache, transformers ignores packed position ids
        labels = labels.to(device)
        with autocast:
            loss = loss_fn(inputs, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach()), real

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    tokens = 0
    losses = []
    for _ in range(args.steps):
        loss, n = step()
        tokens += n
        losses.append(loss)
    sync()
    dt = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * args.seq
    tps = tokens / dt
    res = {"tokens_per_s": round(tps, 1), "seconds": round(dt, 3), "steps": args.steps, "real_tokens": tokens,
           "loss_last": losses[-1] if losses else None, "finite": all(math.isfinite(x) for x in losses),
           "model_tflops_per_s": round(tps * flops_per_token / 1e12, 2)}
    if args.peak_tflops:
        res["mfu"] = round(tps * flops_per_token / (args.peak_tflops * 1e12), 4)
    if device.type == "cuda":
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if compile_error:
        res["compile_error"] = compile_error
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def _load_ops():
    """trex/train/ops.py by file path: it needs only torch, and importing the ``trex`` package
    would pull pydantic and the rest of trex's dependencies onto a bare GPU machine."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "trex" / "train" / "ops.py"
    spec = importlib.util.spec_from_file_location("trex_train_ops", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _real_tokens(position_ids, labels):
    # packed rows: padding at a row's end is a run of positions restarting at 0 with no labels;
    # count every token of a segment that has at least one label (the examples)
    import torch

    total = 0
    for row_pos, row_lab in zip(position_ids.tolist(), labels.tolist()):
        seg_len, seg_has_label = 0, False
        for p, l in zip(row_pos + [0], row_lab + [-100]):
            if p == 0 and seg_len:
                total += seg_len if seg_has_label else 0
                seg_len, seg_has_label = 0, False
            seg_len += 1
            seg_has_label |= l != -100
    return torch.tensor(total)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny config on CPU, 2 steps")
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--ce-chunk", type=int, default=4096)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOPs (default: by GPU name)")
    ap.add_argument("--only", choices=["plain", "trex"], default=None)
    args = ap.parse_args()

    import torch

    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    args.seq = args.seq or (64 if args.smoke else 1024)
    args.batch = args.batch or (2 if args.smoke else 8)
    args.steps = args.steps or (2 if args.smoke else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    if args.smoke:
        args.compile = False
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    if args.peak_tflops is None and cuda:
        args.peak_tflops = 989.0 if ("H100" in name or "H200" in name) else (312.0 if "A100" in name else None)
    cfg = qwen3_config(args.smoke)
    n_ex = args.batch * (args.steps + args.warmup) * 2
    examples = make_examples(n_ex, args.seq, cfg.vocab_size)
    out = {"device": name, "torch": torch.__version__, "smoke": args.smoke, "seq": args.seq, "batch": args.batch,
           "rank": args.rank, "dtype": str(dtype).replace("torch.", ""), "compile": args.compile,
           "peak_tflops": args.peak_tflops}
    for path in ("plain", "trex"):
        if args.only and path != args.only:
            continue
        try:
            out[path] = bench(path, cfg, args, device, dtype, examples)
        except Exception as e:  # noqa: BLE001
            out[path] = {"error": repr(e)[:2000]}
    if "tokens_per_s" in out.get("plain", {}) and "tokens_per_s" in out.get("trex", {}):
        out["ratio"] = round(out["trex"]["tokens_per_s"] / out["plain"]["tokens_per_s"], 3)
        out["target_met"] = out["ratio"] >= 1.5
    print(json.dumps(out, indent=2))
    if any("error" in out.get(p, {}) for p in ("plain", "trex")):
        sys.exit(1)


if __name__ == "__main__":
    main()
