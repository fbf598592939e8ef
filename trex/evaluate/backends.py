"""Generation backends of the Evaluator. Both take token ids built here (so the two agree on
the exact prompt), run greedy decoding and return the completion text per prompt.

* :class:`TransformersEvalBackend` — transformers + peft on CPU. The base model is loaded once;
  the first adapter wraps it in a ``PeftModel``, later ones are added with ``load_adapter`` and
  chosen with ``set_adapter`` (an LRU of ``max_loaded`` adapters; older ones are deleted).
  Batches are left-padded, prompts sorted by length so most batches need no padding.
* :class:`VLLMEvalBackend` — a running vLLM OpenAI server (``tools/vllm_cpu.sh start``) with
  ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``: each adapter is loaded once with
  ``POST /v1/load_lora_adapter`` and used as ``model=<adapter name>`` in ``/v1/completions``. The base
  model is never reloaded and adapters are never merged.

An adapter is named by the hash of its files (``adapter_name``), so the same adapter content is
loaded once and a changed folder at the same path is a new adapter.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol, Sequence

from trex.llm.local import torch_threads

AdapterPath = "str | os.PathLike | None"


def adapter_name(adapter_dir: str | os.PathLike) -> str:
    """A stable name from the adapter's content (config + weights)."""
    d = Path(adapter_dir)
    h = hashlib.sha256()
    files = [p for p in sorted(d.iterdir()) if p.is_file() and p.name.startswith("adapter_")]
    if not files:
        raise FileNotFoundError(f"{d} holds no adapter_config.json / adapter_model.* (not a peft adapter folder)")
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return "lora-" + h.hexdigest()[:16]


def is_full_model(path: "str | os.PathLike | None") -> bool:
    """A full fine-tune's model folder (``method: full`` plans) rather than a peft adapter."""
    if path is None:
        return False
    d = Path(path)
    return (d / "config.json").is_file() and not (d / "adapter_config.json").is_file()


def load_tokenizer(base_model_dir: str | os.PathLike):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_model_dir))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def encode_prompts(tokenizer, texts: Sequence[str], add_bos: bool | None = None) -> list[list[int]]:
    """Token ids per prompt. ``add_bos=None``: the tokenizer's own special-token handling;
    True: make sure the ids start with BOS (char tokenizers that add none); False: no specials."""
    out = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=add_bos is None)["input_ids"]
        if add_bos and tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
            ids = [tokenizer.bos_token_id] + ids
        out.append(list(ids))
    return out


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i >= 0:
                cut = min(cut, i)
    return text[:cut]


class EvalBackend(Protocol):
    name: str
    base_model: str

    def generate(self, adapter_dir: "str | os.PathLike | None", prompt_ids: Sequence[Sequence[int]], *,
                 max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]: ...

    def encode(self, texts: Sequence[str], add_bos: bool | None = None) -> list[list[int]]: ...


class TransformersEvalBackend:
    name = "transformers"

    def __init__(self, base_model_dir: str | os.PathLike, *, dtype: str = "float32", batch_size: int = 64,
                 max_loaded: int = 8, threads: int | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM

        self.threads = threads  # torch threads while generating (restored after); None = leave as is
        self.base_model = str(base_model_dir)
        self.tokenizer = load_tokenizer(base_model_dir)
        self.base = AutoModelForCausalLM.from_pretrained(str(base_model_dir), dtype=getattr(torch, dtype)).to(device)
        self.base.eval()
        self.base_loads = 1  # how many times the base weights were read (stays 1)
        self.adapter_loads = 0
        self.device = device
        self.batch_size = batch_size
        self.max_loaded = max_loaded
        self.peft = None
        self._loaded: "OrderedDict[str, str]" = OrderedDict()  # name -> path, LRU order
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], add_bos: bool | None = None) -> list[list[int]]:
        return encode_prompts(self.tokenizer, texts, add_bos)

    def _activate(self, adapter_dir) -> Any:
        if adapter_dir is None:
            return None
        from peft import PeftModel

        name = adapter_name(adapter_dir)
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base, str(adapter_dir), adapter_name=name, is_trainable=False)
            self.peft.eval()
            self.adapter_loads += 1
        elif name not in self.peft.peft_config:
            self.peft.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
            self.adapter_loads += 1
        self._loaded[name] = str(adapter_dir)
        self._loaded.move_to_end(name)
        self.peft.set_adapter(name)
        while len(self._loaded) > self.max_loaded:
            old, _ = self._loaded.popitem(last=False)
            self.peft.delete_adapter(old)
        return name

    def _full_model(self, path):
        """A full fine-tuned model folder: loaded on its own (one cached), the shared base is not touched."""
        import torch
        from transformers import AutoModelForCausalLM

        key = str(Path(path).resolve())
        if getattr(self, "_full", (None, None))[0] != key:
            m = AutoModelForCausalLM.from_pretrained(key, dtype=next(self.base.parameters()).dtype).to(self.device)
            m.eval()
            self._full = (key, m)
        return self._full[1]

    def generate(self, adapter_dir, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int,
                 stop: Sequence[str] = ()) -> list[str]:
        import contextlib

        import torch

        with self._lock:
            if is_full_model(adapter_dir):
                name, model, ctx = "full", self._full_model(adapter_dir), contextlib.nullcontext()
            else:
                name = self._activate(adapter_dir)
            if name == "full":
                pass
            elif name is None:
                model = self.peft if self.peft is not None else self.base
                ctx = self.peft.disable_adapter() if self.peft is not None else contextlib.nullcontext()
            else:
                model, ctx = self.peft, contextlib.nullcontext()
            tok = self.tokenizer
            pad = tok.pad_token_id
            eos = tok.eos_token_id
            order = sorted(range(len(prompt_ids)), key=lambda i: (len(prompt_ids[i]), i))
            out: list[str] = [""] * len(prompt_ids)
            with ctx, torch.inference_mode(), torch_threads(self.threads):
                for s in range(0, len(order), self.batch_size):
                    chunk = order[s: s + self.batch_size]
                    n = max(len(prompt_ids[i]) for i in chunk)
                    ids = torch.full((len(chunk), n), pad, dtype=torch.long)
                    mask = torch.zeros((len(chunk), n), dtype=torch.long)
                    for r, i in enumerate(chunk):  # left padding
                        p = prompt_ids[i]
                        ids[r, n - len(p):] = torch.tensor(p, dtype=torch.long)
                        mask[r, n - len(p):] = 1
                    gen = model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                         max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                         top_p=None, top_k=None, pad_token_id=pad, eos_token_id=eos)
                    for r, i in enumerate(chunk):
                        new = gen[r, n:].tolist()
                        if eos is not None and eos in new:
                            new = new[: new.index(eos)]
                        out[i] = cut_at_stop(tok.decode(new, skip_special_tokens=True), stop)
            return out


class VLLMEvalBackend:
    name = "vllm"

    def __init__(self, base_url: str, base_model_dir: str | os.PathLike, *, timeout: float = 600.0,
                 batch_size: int = 512, max_registered: int = 64):
        from trex.llm.http import get_json

        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]
        self.base_model = str(base_model_dir)
        self.tokenizer = load_tokenizer(base_model_dir)
        self.timeout = timeout
        self.batch_size = batch_size
        self.max_registered = max_registered
        models = get_json(self.base_url + "/v1/models", timeout=30).get("data") or []
        roots = [m["id"] for m in models if not m.get("parent")]
        if not roots:
            raise RuntimeError(f"vLLM at {self.base_url} serves no base model")
        self.served_model = roots[0]
        self._loaded: "OrderedDict[str, str]" = OrderedDict(
            (m["id"], m.get("root", "")) for m in models if m.get("parent"))
        self.adapter_loads = 0
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], add_bos: bool | None = None) -> list[list[int]]:
        return encode_prompts(self.tokenizer, texts, add_bos)

    def _ensure(self, adapter_dir) -> str:
        from trex.llm.http import post_json
        from trex.llm.types import BackendError

        if adapter_dir is None:
            return self.served_model
        if is_full_model(adapter_dir):
            raise ValueError(f"{adapter_dir} is a full model, not a LoRA adapter: the vLLM backend serves adapters on "
                             "one base model; evaluate full fine-tunes with TransformersEvalBackend")
        name = adapter_name(adapter_dir)
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return name
            try:
                post_json(self.base_url + "/v1/load_lora_adapter",
                          {"lora_name": name, "lora_path": str(Path(adapter_dir).resolve())}, timeout=self.timeout)
            except BackendError as e:
                if "already" not in str(e).lower():
                    raise
            self.adapter_loads += 1
            self._loaded[name] = str(adapter_dir)
            while len(self._loaded) > self.max_registered:
                old, _ = self._loaded.popitem(last=False)
                try:
                    post_json(self.base_url + "/v1/unload_lora_adapter", {"lora_name": old}, timeout=60)
                except BackendError:
                    pass
        return name

    def generate(self, adapter_dir, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int,
                 stop: Sequence[str] = ()) -> list[str]:
        from trex.llm.http import post_json
        from trex.llm.types import BackendError

        model = self._ensure(adapter_dir)
        out: list[str] = []
        for s in range(0, len(prompt_ids), self.batch_size):
            chunk = [list(map(int, p)) for p in prompt_ids[s: s + self.batch_size]]
            body: dict[str, Any] = {"model": model, "prompt": chunk, "max_tokens": max_new_tokens,
                                    "temperature": 0.0, "seed": 0, "skip_special_tokens": True}
            if stop:
                body["stop"] = list(stop)
            res = post_json(self.base_url + "/v1/completions", body, timeout=self.timeout)
            choices = res.get("choices")
            if not isinstance(choices, list) or len(choices) != len(chunk):
                raise BackendError(f"vLLM returned {len(choices or [])} choices for {len(chunk)} prompts: {str(res)[:300]}")
            texts = [""] * len(chunk)
            for c in choices:
                texts[int(c["index"])] = cut_at_stop(c.get("text") or "", stop)
            out.extend(texts)
        return out
