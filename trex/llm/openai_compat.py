"""Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, hosted APIs).

Structured output goes through ``response_format={"type": "json_schema", ...}``; the server's
grammar (vLLM: xgrammar) enforces the schema and pydantic re-checks what it cannot express.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from trex.llm.http import get_json, post_json
from trex.llm.types import BackendError, Completion, Message, Usage


class OpenAIBackend:
    name = "openai"

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 extra_body: dict[str, Any] | None = None):
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.extra_body = dict(extra_body or {})
        if model is None:  # the server's first (usually only) model
            models = get_json(self.base_url + "/models", timeout=30, headers=self._headers()).get("data") or []
            if not models:
                raise BackendError(f"{self.base_url} serves no model")
            model = models[0]["id"]
        self.model = model

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def count_tokens(self, messages: Sequence[Message]) -> int | None:
        return None

    def complete(self, messages: Sequence[Message], *, json_schema: dict[str, Any] | None, schema_name: str,
                 max_tokens: int, temperature: float, seed: int | None, timeout: float) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            **self.extra_body,
        }
        if seed is not None:
            body["seed"] = seed
        if json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name or "output", "schema": json_schema, "strict": True},
            }
        out = post_json(self.base_url + "/chat/completions", body, timeout=timeout, headers=self._headers())
        try:
            choice = out["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"unexpected answer from {self.base_url}: {str(out)[:500]}") from None
        u = out.get("usage") or {}
        return Completion(text=text, usage=Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)),
                          finish_reason=choice.get("finish_reason") or "")
