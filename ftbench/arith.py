"""The arith task family: a char-level tokenizer, a ~1M-parameter Llama pretrained on
2-digit addition, seeded data generators and a fast greedy exact-match scorer.

Everything here is reproducible from a seed: the base model is rebuilt bit-identically
(same safetensors sha256) when its cache folder is gone, on the same torch build.

Data conventions (all tasks of the family):

* an example is ``{"prompt": "12+34=", "completion": "46"}``; the model sees
  ``<s>`` + prompt + completion + ``</s>`` and is scored on the completion only;
* operands are 0..99 ("2-digit" includes 1-digit numbers, written without leading zeros);
* subtraction keeps ``a >= b``: no negative answers (the answer alphabet is the same
  as addition's, so the task is learning a new operator, not a new sign convention).

torch and transformers are imported lazily, inside functions.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

SPECIALS = ("<pad>", "<s>", "</s>")
CHARS = "0123456789+-= \n"
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
N_ADD_EVAL = 500  # fixed addition eval pairs (retention / forgetting metric)
N_SUB_EVAL = 500
N_SUB_TRAIN = 4000
BUILD_VERSION = 1  # bump when the build recipe changes (part of the cache folder name)
BUILD_LOCK_TIMEOUT_S = float(os.environ.get("TREX_BUILD_LOCK_TIMEOUT", "1800"))  # waiting on another build

MODEL_CONFIG = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=32,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)


# ----------------------------------------------------------------- tokenizer
def vocab() -> dict[str, int]:
    v = {s: i for i, s in enumerate(SPECIALS)}
    for c in CHARS:
        v[c] = len(v)
    return v


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` over a char-level BPE without merges (AutoTokenizer loads it)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(vocab=vocab(), merges=[]))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=32
    )


_V = None


def encode(text: str) -> list[int]:
    """Char-level ids without specials (no tokenizer object needed)."""
    global _V
    if _V is None:
        _V = vocab()
    return [_V[c] for c in text]


def decode(ids: Iterable[int]) -> str:
    inv = {i: s for s, i in vocab().items()}
    out = []
    for i in ids:
        if i == EOS_ID:
            break
        if i in (PAD_ID, BOS_ID):
            continue
        out.append(inv.get(int(i), ""))
    return "".join(out)


# ---------------------------------------------------------------------- data
def _all_pairs() -> list[tuple[int, int]]:
    return [(a, b) for a in range(100) for b in range(100)]


def add_example(a: int, b: int) -> dict[str, str]:
    return {"prompt": f"{a}+{b}=", "completion": str(a + b)}


def sub_example(a: int, b: int) -> dict[str, str]:
    if a < b:
        a, b = b, a
    return {"prompt": f"{a}-{b}=", "completion": str(a - b)}


def addition_split(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(pretraining rows, fixed eval rows) for addition.

    Pretraining covers all 10,000 pairs 0..99 + 0..99; the eval set is a fixed, seeded
    sample of 500 of them. It measures *retention* (forgetting) after fine-tuning on
    another task, so it is held out from fine-tuning data, not from pretraining.
    """
    pairs = _all_pairs()
    random.Random(f"arith-add-{seed}").shuffle(pairs)
    held = sorted(pairs[:N_ADD_EVAL])
    return [add_example(a, b) for a, b in _all_pairs()], [add_example(a, b) for a, b in held]


def addition_test(seed: int = 0) -> list[dict]:
    """500 more addition pairs, disjoint from :func:`addition_split`'s eval pairs: the retention
    metric's held-out test twin (nothing a search decides looks at them)."""
    pairs = _all_pairs()
    random.Random(f"arith-add-{seed}").shuffle(pairs)
    return [add_example(a, b) for a, b in sorted(pairs[N_ADD_EVAL:2 * N_ADD_EVAL])]


def subtraction_test(seed: int = 0, n_train: int = N_SUB_TRAIN, n_eval: int = N_SUB_EVAL,
                     n_test: int = N_SUB_EVAL) -> list[dict]:
    """Held-out subtraction problems disjoint from :func:`subtraction_split`'s train and eval (the
    pairs after both in the same seeded order: 5,050 pairs hold 500 + 4,000 + 500)."""
    pairs = [(a, b) for a in range(100) for b in range(a + 1)]
    random.Random(f"arith-sub-{seed}").shuffle(pairs)
    return [sub_example(a, b) for a, b in sorted(pairs[n_eval + n_train:n_eval + n_train + n_test])]


def subtraction_split(seed: int = 0, n_train: int = N_SUB_TRAIN, n_eval: int = N_SUB_EVAL) -> tuple[list[dict], list[dict]]:
    """(train, held-out eval) for subtraction with a >= b; the eval pairs never occur in train."""
    pairs = [(a, b) for a in range(100) for b in range(a + 1)]  # 5050 pairs
    random.Random(f"arith-sub-{seed}").shuffle(pairs)
    held = sorted(pairs[:n_eval])
    rest = pairs[n_eval:]
    train = rest[:n_train]  # keeps the seeded order
    return [sub_example(a, b) for a, b in train], [sub_example(a, b) for a, b in held]


# ------------------------------------------------------------- tensors
def make_batch(rows: Sequence[dict], bos: int | None = BOS_ID, eos: int | None = EOS_ID,
               pad: int = PAD_ID, tok: Callable[[str], list[int]] | None = None, max_len: int | None = None):
    """Right-padded (input_ids, attention_mask, labels) with the loss on the completion (+eos) only."""
    import torch

    tok = tok or encode
    seqs, labs = [], []
    for r in rows:
        p = ([bos] if bos is not None else []) + tok(r["prompt"])
        c = tok(r["completion"]) + ([eos] if eos is not None else [])
        ids = p + c
        lab = [-100] * len(p) + c
        if max_len is not None:
            ids, lab = ids[:max_len], lab[:max_len]
        seqs.append(ids)
        labs.append(lab)
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    labels = torch.full((len(seqs), n), -100, dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labs)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, : len(l)] = torch.tensor(l)
    return ids, mask, labels


# ------------------------------------------------------------------ scoring
def greedy_answers(model, rows: Sequence[dict], max_new_tokens: int = 4, batch_size: int = 512,
                   tok: Callable[[str], list[int]] | None = None, detok: Callable[[list[int]], str] | None = None,
                   bos: int | None = BOS_ID, eos: int = EOS_ID) -> list[str]:
    """Greedy completions, batched by prompt length (so no padding is ever needed)."""
    import torch

    tok = tok or encode
    detok = detok or decode
    device = next(model.parameters()).device
    out: list[str | None] = [None] * len(rows)
    groups: dict[int, list[int]] = {}
    enc = [([bos] if bos is not None else []) + tok(r["prompt"]) for r in rows]
    for i, e in enumerate(enc):
        groups.setdefault(len(e), []).append(i)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for _, idxs in sorted(groups.items()):
            for s in range(0, len(idxs), batch_size):
                chunk = idxs[s : s + batch_size]
                x = torch.tensor([enc[i] for i in chunk], device=device)
                gen = []
                for _ in range(max_new_tokens):
                    logits = model(input_ids=x).logits[:, -1, :]
                    nxt = logits.argmax(-1, keepdim=True)
                    gen.append(nxt)
                    x = torch.cat([x, nxt], dim=1)
                    if bool((torch.cat(gen, 1) == eos).any(1).all()):
                        break
                g = torch.cat(gen, 1).tolist()
                for i, ids in zip(chunk, g):
                    out[i] = detok(ids)
    if was_training:
        model.train()
    return [o or "" for o in out]


def exact_match(model, rows: Sequence[dict], **kw) -> float:
    if not rows:
        return 0.0
    answers = greedy_answers(model, rows, **kw)
    return sum(a == r["completion"] for a, r in zip(answers, rows)) / len(rows)


def load_for_eval(base_model_dir: str | os.PathLike, adapter_dir: str | os.PathLike | None = None):
    """The base model with an adapter applied (a peft adapter folder, or a full model folder)."""
    from transformers import AutoModelForCausalLM

    if adapter_dir is not None and (Path(adapter_dir) / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(str(adapter_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    if adapter_dir is not None:
        import warnings

        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecation inside peft
            model = model.merge_and_unload()
    return model


def evaluate_adapter(adapter_dir: str | os.PathLike | None, task="arith-sub", home: str | os.PathLike | None = None,
                     base_model_dir: str | os.PathLike | None = None, limit: int | None = None) -> dict[str, float]:
    """The arith reference scorer: an adapter (None = the base model itself) on every metric of an
    arith task, through this module's char tokenizer (merged adapter, greedy, no padding).

    Independent of the Evaluator, which it cross-checks in the tests; ``ftbench prepare arith``
    reports the base model's scores with it. Returns ``{metric name: value}``. Other tasks are
    scored by trex's Evaluator (``trex.evaluate.evaluate_task``)."""
    import torch

    from trex.tasks import as_task, load_split, prepare_task

    t = as_task(task, home)
    if t.base_model != "arith-base":
        raise ValueError(f"task {t.name!r}: the arith reference scorer scores arith tasks only "
                         f"(score others with trex.evaluate.evaluate_task)")
    assets = prepare_task(t, home, base_model_dir)
    model = load_for_eval(assets.base_model_dir, adapter_dir)
    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        for m in t.metrics:
            rows = load_split(t, m.split, home)
            if limit is not None:
                rows = rows[:limit]
            out[m.name] = exact_match(model, rows, max_new_tokens=t.max_new_tokens)
    return out


# -------------------------------------------------------------------- model
def _model_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(vocab()), pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                       **MODEL_CONFIG)


def default_home() -> Path:
    return Path(os.environ.get("TREX_HOME", ".trex"))


def model_dir(home: str | os.PathLike | None = None, seed: int = 0) -> Path:
    return Path(home if home is not None else default_home()) / "models" / f"arith-base-{seed}"


def build_base_model(out_dir: str | os.PathLike, seed: int = 0, steps: int | None = None, max_steps: int = 1500,
                     batch_size: int = 128, lr: float = 3e-3, eval_every: int = 100, threads: int = 1,
                     log: Callable[[str], None] | None = None,
                     home: str | os.PathLike | None = None) -> dict[str, Any]:
    """Pretrain the arith base model on addition and save it as a model folder at ``out_dir``.

    Never written through a link: with ``home`` (``out_dir`` under it) no folder from the home down
    may be a link, else ``out_dir``'s own folder must not be one; a link at ``out_dir`` is refused.

    ``steps=None``: train until held-out addition exact match is 1.0 (checked every
    ``eval_every`` steps) or ``max_steps``; ``steps=N``: exactly N steps (tests).
    The build is deterministic: seeded init and data order, deterministic algorithms,
    a fixed thread count (``threads``), no wall-clock dependence. Returns build info,
    also saved as ``build.json`` in the folder.
    """
    import torch
    from transformers import LlamaForCausalLM

    from trex.events.fsio import ensure_dir_for, fresh_dir_in, move_dir_into_place, write_file_replace

    out_dir = Path(out_dir)
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(_model_config())
        model.train()
        train_rows, held = addition_split(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
        total = steps if steps is not None else max_steps
        warm = min(100, max(1, total // 10))

        def lr_at(s: int) -> float:  # warmup, cosine to 10% over `total`, then 10% until 100% exact match
            if s < warm:
                return lr * (s + 1) / warm
            frac = min(1.0, (s - warm) / max(1, total - warm))
            return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

        rng = random.Random(f"arith-pretrain-{seed}")
        order: list[int] = []
        em = 0.0
        step = 0
        loss_v = float("nan")
        limit = total if steps is not None else total * 3
        while step < limit:
            if len(order) < batch_size:
                perm = list(range(len(train_rows)))
                rng.shuffle(perm)
                order.extend(perm)
            idx, order = order[:batch_size], order[batch_size:]
            ids, mask, labels = make_batch([train_rows[i] for i in idx])
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            loss_v = float(loss.detach())
            if steps is None and step % eval_every == 0:
                em = exact_match(model, held)
                if log:
                    log(f"step {step} loss {loss_v:.4f} add_em {em:.3f}")
                if em >= 1.0:
                    break
        em = exact_match(model, held)
        info = {"seed": seed, "steps": step, "final_loss": loss_v, "add_exact_match": em,
                "build_version": BUILD_VERSION, "threads": threads, "torch": torch.__version__}
        # never through a link: the folders on the way (from ``home`` when given), a fresh temp folder
        # (mkdtemp), then a rename that refuses a link at ``out_dir``
        ensure_dir_for(out_dir.parent, home)
        tmp = fresh_dir_in(out_dir.parent, f".{out_dir.name}.")
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            build_tokenizer().save_pretrained(tmp)
            write_file_replace(tmp / "build.json", json.dumps(info, indent=2, sort_keys=True).encode())
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        move_dir_into_place(tmp, out_dir)
        info["seconds"] = time.time() - t0
        return info
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


def prepare_base_model(home: str | os.PathLike | None = None, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                       log: Callable[[str], None] | None = None) -> Path:
    """The cached, fully pretrained base model folder; built (deterministically) if missing.

    Cached at ``cache_dir`` if given, else ``$TREX_HOME/models/arith-base-<seed>/``. Never through a
    link under the home: a link at the folder, its lock or on the way is refused (``LinkRefused``);
    a build by another process is waited for at most ``TREX_BUILD_LOCK_TIMEOUT`` seconds (1800), said.
    """
    from trex.events.fsio import HomeLock, check_not_link, ensure_dir_for, waited_lock

    base = None if cache_dir is not None else Path(home if home is not None else default_home())
    d = Path(cache_dir) if cache_dir is not None else model_dir(base, seed)
    if base is not None:  # HOME/models/arith-base-<seed>: a link there or on the way is refused (LinkRefused)
        ensure_dir_for(d.parent, base)
        check_not_link(d)
    if (d / "build.json").is_file() and (d / "model.safetensors").is_file():
        return d
    ensure_dir_for(d.parent, base)
    with waited_lock(HomeLock(d.parent / f".{d.name}.lock"), BUILD_LOCK_TIMEOUT_S,
                     f"another process building {d.name}"):
        if not (d / "build.json").is_file():
            build_base_model(d, seed=seed, log=log, home=base)
    return d


def load_model(path: str | os.PathLike):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path))


def file_sha256(path: str | os.PathLike) -> str:
    from trex.artifacts import file_hash

    return file_hash(path)
