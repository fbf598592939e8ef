"""The training loop that runs inside a worker process (plain PyTorch, no Trainer).

Input is a :class:`WorkerSpec` (JSON); output is JSON lines appended to
``spec.progress_path`` (``started``, ``progress``, then ``finished`` or ``failed``) and
the adapter (peft) or full model folder written to ``spec.out_dir``.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

EXIT_NAN = 3
EXIT_OOM = 4
EXIT_BAD_PLAN = 5


class WorkerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: dict[str, Any]
    base_model_dir: str
    data_path: str
    out_dir: str
    progress_path: str
    parent_adapter_dir: str | None = None
    threads: int | None = None
    device: str = "auto"  # auto | cpu | cuda
    progress_every: int = 10
    # GPU-path options; None = the default for the device (see run())
    packing: bool | None = None
    chunked_ce: bool | None = None
    compile: bool | None = None


class NanLoss(Exception):
    pass


class Reporter:
    def __init__(self, path: str):
        self.path = path

    def __call__(self, kind: str, **data) -> None:
        from trex.events.fsio import open_nofollow

        line = json.dumps({"kind": kind, **data}, allow_nan=True) + "\n"
        # appended, never through a link (the Executor laid out the run folder without following one)
        fd = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "w") as f:
            f.write(line)
            f.flush()


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    frac = (step - warmup) / max(1, total - warmup)
    frac = min(1.0, max(0.0, frac))
    if schedule == "linear":
        return 1.0 - frac
    return 0.5 * (1.0 + math.cos(math.pi * frac))


def diverged_above(first_loss: float, vocab_size: int) -> float:
    """A loss above this is treated like NaN: ten times a uniform guess over the vocabulary
    (ln V) and ten times the first step's loss. Only an exploding run gets there."""
    return 10.0 * max(math.log(max(vocab_size, 2)), first_loss)


def _fault(step: int) -> None:
    """Fault injection for tests/tools: TREX_FAULT=nan@N | crash@N | sleep@N."""
    spec = os.environ.get("TREX_FAULT", "")
    if not spec:
        return
    kind, _, at = spec.partition("@")
    if at and int(at) != step:
        return
    if kind == "crash":
        os._exit(70)
    if kind == "sleep":
        time.sleep(3600)
    if kind == "nan":
        raise NanLoss(f"loss is nan at step {step} (injected)")


def run(spec: WorkerSpec, report: Reporter) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trex.plan import Plan, total_warmup
    from trex.train.ops import causal_lm_parts, chunked_causal_lm_loss, pack_examples, pad_batch, tokenize_rows

    plan = Plan.model_validate(spec.plan)
    torch.set_num_threads(spec.threads or os.cpu_count() or 1)
    torch.manual_seed(plan.seed)
    random.seed(plan.seed)
    cuda = torch.cuda.is_available() and spec.device in ("auto", "cuda")
    device = torch.device("cuda" if cuda else "cpu")
    amp_dtype = None
    if cuda and plan.precision == "bf16":
        amp_dtype = torch.bfloat16
    elif cuda and plan.precision == "fp16":
        amp_dtype = torch.float16
    # packing and chunked CE are on by default on CUDA (2.3x the plain loop in tools/gpu_check.py);
    # compile only when asked: it doubled the ops with static shapes, but a trial's packed
    # batches vary in rows, and a first run of the worker with compile on did not finish
    # in 5 minutes on an H100 (docs/training.md)
    packing, chunked_ce = (cuda if v is None else v for v in (spec.packing, spec.chunked_ce))
    compile_ = bool(spec.compile)
    # LoRA trains only the adapter: the frozen base can stay in the autocast dtype (no fp32
    # copy to cast on every matmul); full fine-tuning keeps fp32 master weights
    base_dtype = amp_dtype if (amp_dtype is not None and plan.method != "full") else torch.float32
    t0 = time.time()

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass
    tok = AutoTokenizer.from_pretrained(spec.base_model_dir)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    load_kw: dict[str, Any] = {}
    if cuda:
        load_kw["attn_implementation"] = "sdpa"
    if plan.method == "full":
        src = spec.parent_adapter_dir or spec.base_model_dir
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **load_kw)
    else:
        from peft import LoraConfig, PeftModel, get_peft_model

        model = AutoModelForCausalLM.from_pretrained(spec.base_model_dir, dtype=base_dtype, **load_kw)
        if spec.parent_adapter_dir:
            model = PeftModel.from_pretrained(model, spec.parent_adapter_dir, is_trainable=True)
        else:
            cfg = LoraConfig(r=plan.lora_rank, lora_alpha=plan.lora_alpha, lora_dropout=plan.lora_dropout,
                             target_modules=list(plan.target_modules), task_type="CAUSAL_LM", bias="none")
            model = get_peft_model(model, cfg)
    model.to(device)
    model.train()
    report("started", device=device.type, pid=os.getpid(), load_seconds=time.time() - t0,
           packing=packing, chunked_ce=chunked_ce, compile=compile_)

    with open(spec.data_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    examples = tokenize_rows(rows, tok, plan.max_seq_len)
    per_step = plan.batch_size * plan.grad_accum
    if plan.max_steps is not None:
        total = plan.max_steps
    else:
        total = max(1, math.ceil(plan.epochs * len(examples) / per_step))
    warmup = total_warmup(plan, total)

    vocab_size = int(getattr(model.config, "vocab_size", 0) or len(tok))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=plan.learning_rate, weight_decay=plan.weight_decay)
    body, head = causal_lm_parts(model) if chunked_ce else (None, None)
    fwd_model = model
    if compile_:  # with chunked CE only the decoder body runs as a module: compile that
        if chunked_ce:
            body = torch.compile(body)
        else:
            fwd_model = torch.compile(model)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    gen = random.Random(plan.seed)
    order: list[int] = []

    def next_examples(n: int):
        nonlocal order
        while len(order) < n:
            perm = list(range(len(examples)))
            gen.shuffle(perm)
            order.extend(perm)
        take, order = order[:n], order[n:]
        return [examples[i] for i in take]

    def loss_of(batch_ex):
        if packing:
            b = pack_examples(batch_ex, plan.max_seq_len, pad_id)
            inputs = {"input_ids": b["input_ids"], "position_ids": b["position_ids"]}
        else:
            b = pad_batch(batch_ex, pad_id)
            inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["use_cache"] = False  # with a cache, transformers ignores packed position ids
        labels = b["labels"].to(device)
        ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else _null()
        with ctx:
            if chunked_ce:
                hidden = body(**inputs).last_hidden_state
                return chunked_causal_lm_loss(hidden, head.weight, labels), int((labels[:, 1:] != -100).sum())
            out = fwd_model(**inputs, labels=labels)
            return out.loss, int((labels[:, 1:] != -100).sum())

    losses: list[float] = []
    first_loss = None
    tokens = 0
    t_train = time.time()
    for step in range(total):
        f = lr_factor(plan.lr_schedule, step, total, warmup)
        for g in opt.param_groups:
            g["lr"] = plan.learning_rate * f
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(plan.grad_accum):
            loss, ntok = loss_of(next_examples(plan.batch_size))
            tokens += ntok
            if scaler is not None:
                scaler.scale(loss / plan.grad_accum).backward()
            else:
                (loss / plan.grad_accum).backward()
            step_loss += float(loss.detach()) / plan.grad_accum
        _fault(step + 1)
        if not math.isfinite(step_loss):
            raise NanLoss(f"loss is {step_loss} at step {step + 1}")
        if first_loss is not None and step_loss > diverged_above(first_loss, vocab_size):
            raise NanLoss(f"loss diverged to {step_loss:.4g} at step {step + 1} (first loss {first_loss:.4g}, "
                          f"threshold {diverged_above(first_loss, vocab_size):.4g})")
        if scaler is not None:
            scaler.unscale_(opt)
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        if not math.isfinite(float(gn)) and scaler is None:
            raise NanLoss(f"gradient norm is {float(gn)} at step {step + 1}")
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if first_loss is None:
            first_loss = step_loss
        losses.append(step_loss)
        if (step + 1) % spec.progress_every == 0 or step + 1 == total:
            report("progress", step=step + 1, loss=step_loss, lr=plan.learning_rate * f)
    train_s = time.time() - t_train
    from trex.events.fsio import ensure_dir, fresh_dir_in, move_dir_into_place

    # saved into a fresh folder (mkdtemp: never a link) beside ``out_dir``, then renamed onto it; a link
    # at ``out_dir`` or at its folder is refused (LinkRefused), never written through
    out_dir = Path(spec.out_dir)
    tmp = fresh_dir_in(ensure_dir(out_dir.parent), f".{out_dir.name}.")
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        if plan.method == "full":
            tok.save_pretrained(str(tmp))
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    move_dir_into_place(tmp, out_dir)
    tail = losses[-max(1, min(10, len(losses))):]
    metrics = {
        "first_loss": float(first_loss if first_loss is not None else float("nan")),
        "final_loss": float(sum(tail) / len(tail)),
        "tokens": float(tokens),
        "train_seconds": float(train_s),
        "tokens_per_second": float(tokens / train_s) if train_s > 0 else 0.0,
        "examples": float(len(examples)),
    }
    result = {"steps": total, "train_metrics": metrics, "device": device.type}
    report("finished", **result)
    return result


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
