"""Per-row training loss under a trained adapter: what cleaning by loss ranks rows by.

A recipe's ``clean`` step names a node and its adapter; the Executor scores the recipe's rows with
:func:`row_losses` (the mean cross-entropy of each row's completion tokens, as the worker trains
them: ``bos + prompt + completion + eos``, truncated to the plan's ``max_seq_len``) and drops the
hardest. Scores are cached by (adapter, rows, max_len) under ``HOME/cache/row-loss`` so a second
plan cleaning the same rows with the same adapter pays nothing.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Sequence

ROW_LOSS_VERSION = 1


def loss_key(base_hash: str, max_len: int) -> str:
    """What row losses depend on besides the adapter and the rows: the base model under the adapter,
    the scoring length and this module's version (a recipe that cleans by loss is keyed by it too)."""
    return f"v{ROW_LOSS_VERSION}:{base_hash}:{max_len}"


def cache_path(home: Path, adapter: str, rows: Sequence[dict], max_len: int, base_hash: str = "") -> Path:
    from trex.recipe import rows_hash

    key = hashlib.sha256(json.dumps({"v": ROW_LOSS_VERSION, "adapter": adapter, "rows": rows_hash(rows),
                                     "max_len": max_len, "base": base_hash}, sort_keys=True).encode()).hexdigest()
    return Path(home) / "cache" / "row-loss" / key[:2] / f"{key}.json"


def row_losses(base_model_dir: str | os.PathLike, adapter_dir: str | os.PathLike, rows: Sequence[dict], *,
               max_len: int = 64, batch_size: int = 64, threads: int | None = None) -> list[float]:
    """Mean completion loss of each row under the base model with the adapter (a LoRA folder, or a
    full model folder with its own ``config.json``). NaN where a row has no completion token left."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trex.train.ops import pad_batch, tokenize_rows

    if threads:
        torch.set_num_threads(threads)
    adapter_dir = Path(adapter_dir)
    full = (adapter_dir / "config.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(adapter_dir if full and (adapter_dir / "tokenizer.json").is_file()
                                            else base_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(adapter_dir if full else base_model_dir), dtype=torch.float32)
    if not full:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    examples = tokenize_rows(rows, tok, max_len)
    out: list[float] = []
    with torch.no_grad():
        for s in range(0, len(examples), batch_size):
            batch = pad_batch(examples[s:s + batch_size], pad_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1, :]
            logits = logits.float()
            target = batch["labels"][:, 1:]
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
            keep = (target != -100).float()
            n = keep.sum(1)
            per = (ce * keep).sum(1) / n.clamp(min=1)
            out.extend(float(x) if c > 0 else math.nan for x, c in zip(per.tolist(), n.tolist()))
    return out


def cached_row_losses(home: str | os.PathLike, base_model_dir: str | os.PathLike, adapter: str, adapter_dir: Path,
                      rows: Sequence[dict], *, max_len: int, threads: int | None = None,
                      base_hash: str = "") -> list[float]:
    """:func:`row_losses`, read back from the cache when these rows were scored by this adapter before."""
    from trex.events.fsio import check_not_link, ensure_dir, write_file_replace

    home = Path(home)
    p = cache_path(home, adapter, rows, max_len, base_hash)
    if check_not_link(p).is_file():
        try:
            got = json.loads(p.read_text())
            if isinstance(got, list) and len(got) == len(rows):
                return [math.nan if x is None else float(x) for x in got]
        except (OSError, ValueError):
            pass  # a damaged entry is recomputed
    losses = row_losses(base_model_dir, adapter_dir, rows, max_len=max_len, threads=threads)
    ensure_dir(home, *p.parent.relative_to(home).parts)
    write_file_replace(p, json.dumps([x if math.isfinite(x) else None for x in losses]).encode())
    return losses
