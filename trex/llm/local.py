"""In-process transformers backend with grammar-constrained JSON (xgrammar's HF logits processor).

Any local model folder (``save_pretrained`` layout) works. With a schema, the pydantic JSON schema
is compiled once per (schema, tokenizer) by xgrammar with ``any_whitespace=False`` and applied as a
``LogitsProcessor``: the model can only emit tokens that keep the output a valid instance of the
schema — types, enums, required keys, and numeric bounds (``ge``/``le``) included. What a JSON
schema cannot say (cross-field checks) is left to pydantic in :class:`~trex.llm.client.LLMClient`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from trex.llm.types import Completion, LLMTimeout, Message, Usage


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Use ``n`` torch threads inside the block (torch's setting is process-wide; restored after)."""
    import torch

    if not n:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class TransformersBackend:
    name = "transformers"

    def __init__(self, model_dir: str | os.PathLike, *, device: str = "cpu", dtype: str = "float32",
                 threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        self.model = str(model_dir)
        self.threads = threads  # torch threads while generating (restored after); None = leave as is
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.lm = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, dtype)).to(device)
        self.lm.eval()
        self.device = device
        self._grammars: dict[str, Any] = {}
        self._compiler = None
        self._lock = threading.Lock()

    # -- prompts -------------------------------------------------------------------------------
    def _input_ids(self, messages: Sequence[Message]):
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            enc = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)
            return enc["input_ids"]
        text = "\n".join(f"{m['role']}: {m['content']}" for m in msgs) + "\nassistant:"
        return self.tokenizer(text, return_tensors="pt")["input_ids"]

    def count_tokens(self, messages: Sequence[Message]) -> int | None:
        return int(self._input_ids(messages).shape[-1])

    # -- grammar -------------------------------------------------------------------------------
    def _grammar(self, json_schema: dict[str, Any]):
        import xgrammar as xgr

        key = hashlib.sha256(json.dumps(json_schema, sort_keys=True).encode()).hexdigest()
        g = self._grammars.get(key)
        if g is None:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.lm.config.vocab_size)
                self._compiler = xgr.GrammarCompiler(info, max_threads=2)
            g = self._grammars[key] = self._compiler.compile_json_schema(json.dumps(json_schema), any_whitespace=False)
        return g

    # -- generation ----------------------------------------------------------------------------
    def complete(self, messages: Sequence[Message], *, json_schema: dict[str, Any] | None, schema_name: str,
                 max_tokens: int, temperature: float, seed: int | None, timeout: float) -> Completion:
        import torch
        from xgrammar.contrib.hf import LogitsProcessor

        ids = self._input_ids(messages).to(self.device)
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "max_time": timeout}
        if temperature and temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if json_schema is not None:
            kwargs["logits_processor"] = [LogitsProcessor(self._grammar(json_schema))]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with self._lock, torch.inference_mode(), torch_threads(self.threads):
            if seed is not None:
                torch.manual_seed(seed)
            t0 = time.perf_counter()
            out = self.lm.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=pad, **kwargs)
            dt = time.perf_counter() - t0
        new = out[0, ids.shape[-1]:]
        eos = self.lm.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        finished = len(new) > 0 and int(new[-1]) in eos_ids
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        if not finished and len(new) < max_tokens and dt >= timeout:
            raise LLMTimeout(f"generation passed {timeout:.0f}s after {len(new)} tokens")
        reason = "stop" if finished else ("length" if len(new) >= max_tokens else "stop")
        return Completion(text=text, usage=Usage(int(ids.shape[-1]), int(len(new))), finish_reason=reason)
