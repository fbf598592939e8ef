"""Training-path optimisations used on GPUs: sequence packing and chunked cross-entropy.

* :func:`pack_examples` concatenates tokenized examples into rows of ``max_len`` with
  ``position_ids`` restarting at 0 for each example. Passed with ``attention_mask=None``
  and ``use_cache=False`` (with a KV cache transformers does not look for packing),
  transformers (masking_utils) detects the packed format from the position ids and
  builds a block-diagonal causal mask (sdpa, flash), so examples never see each other.
* :func:`chunked_causal_lm_loss` computes the LM loss from the final hidden states
  chunk by chunk over the *labelled* tokens only, recomputing each chunk's logits in
  the backward pass (checkpointing): with a 152k vocabulary the full
  ``[tokens, vocab]`` logits tensor (GBs in fp32) is never materialised.
"""
from __future__ import annotations

from typing import Sequence


def tokenize_rows(rows: Sequence[dict], tokenizer, max_len: int) -> list[tuple[list[int], list[int]]]:
    """[(input ids, labels)] with the loss on the completion (+eos) only, truncated to max_len."""
    bos = getattr(tokenizer, "bos_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    out = []
    for r in rows:
        p = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        c = tokenizer(r["completion"], add_special_tokens=False)["input_ids"]
        p = ([bos] if bos is not None else []) + list(p)
        c = list(c) + ([eos] if eos is not None else [])
        ids = (p + c)[:max_len]
        labels = ([-100] * len(p) + c)[:max_len]
        out.append((ids, labels))
    return out


def pad_batch(examples: Sequence[tuple[list[int], list[int]]], pad_id: int):
    import torch

    n = max(len(e[0]) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    for i, (s, l) in enumerate(examples):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
        labels[i, : len(l)] = torch.tensor(l, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack_examples(examples: Sequence[tuple[list[int], list[int]]], max_len: int, pad_id: int):
    """Greedy first-fit packing into rows of exactly ``max_len`` tokens.

    Returns ``input_ids``, ``labels`` and ``position_ids`` ([rows, max_len]); padding at a
    row's end is a separate "example" with labels -100 and positions restarting at 0.
    """
    import torch

    rows: list[list[tuple[list[int], list[int]]]] = []
    room: list[int] = []
    for ex in sorted(examples, key=lambda e: -len(e[0])):
        n = len(ex[0])
        for i, r in enumerate(room):
            if r >= n:
                rows[i].append(ex)
                room[i] -= n
                break
        else:
            rows.append([ex])
            room.append(max_len - n)
    ids = torch.full((len(rows), max_len), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), max_len), -100, dtype=torch.long)
    pos = torch.zeros((len(rows), max_len), dtype=torch.long)
    for i, row in enumerate(rows):
        at = 0
        for s, l in row:
            n = len(s)
            ids[i, at : at + n] = torch.tensor(s, dtype=torch.long)
            labels[i, at : at + n] = torch.tensor(l, dtype=torch.long)
            pos[i, at : at + n] = torch.arange(n)
            at += n
        if at < max_len:
            pos[i, at:] = torch.arange(max_len - at)
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


def _ce_chunk(h, w, y):
    import torch.nn.functional as F

    return F.cross_entropy((h @ w.t()).float(), y, reduction="sum")


def chunked_causal_lm_loss(hidden, weight, labels, chunk_size: int = 4096):
    """Mean next-token CE over labelled positions, computed in chunks with recomputation.

    ``hidden``: [B, T, H] final hidden states (after the final norm); ``weight``: the
    lm_head weight [V, H]; ``labels``: [B, T] with -100 for ignored positions.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    h = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1)
    keep = y != -100
    h, y = h[keep], y[keep]
    n = y.numel()
    if n == 0:
        return hidden.sum() * 0.0
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, n, chunk_size):
        total = total + checkpoint(_ce_chunk, h[s : s + chunk_size], weight, y[s : s + chunk_size],
                                   use_reentrant=False)
    return total / n


def causal_lm_parts(model):
    """(decoder body, lm_head) of a (possibly peft-wrapped) causal LM."""
    m = model
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    body = getattr(m, "model", None)
    head = getattr(m, "lm_head", None)
    if body is None or head is None:
        raise TypeError(f"{type(m).__name__}: cannot find .model and .lm_head for chunked loss")
    return body, head
