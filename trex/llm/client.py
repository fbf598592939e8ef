"""The one interface the agents use: chat messages in, text or a validated pydantic object out.

::

    client = LLMClient(backend, emit=lambda ev: log.append(search_id, [ev]), max_total_tokens=200_000)
    res = client.chat(messages, schema=Plan, purpose="propose", max_tokens=512, temperature=0.0, seed=0)
    res.parsed  # a Plan, schema-valid (grammar-constrained on local backends, response_format remotely)

Every attempt is an event through ``emit``: ``LlmCallMade`` for the attempt that succeeded,
``LlmCallFailed`` for each one that did not (bad JSON, failed pydantic validation, backend error,
timeout). All attempts of one ``chat`` share a ``call_id``. After ``max_attempts`` failures the
call raises :class:`LLMCallError`, which the caller records (rule 3: a failed trial is an event).
A call whose worst case (prompt tokens + ``max_tokens``) would pass ``max_total_tokens`` is not
made: it is recorded as ``LlmCallFailed`` with an error starting ``TokenBudgetExceeded`` and raises
:class:`TokenBudgetExceeded`.

Retries of a greedy call would repeat the same output, so attempt k > 1 uses ``seed + k - 1`` and,
when ``temperature`` is 0, ``retry_temperature``.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ValidationError

from trex.events.base import Event, validation_errors
from trex.events.envelope import canonical_json, new_id
from trex.events.plans import LlmCallFailed, LlmCallMade
from trex.llm.types import (
    Backend,
    InvalidOutput,
    LLMCallError,
    LLMResult,
    Message,
    TokenBudgetExceeded,
    Usage,
)

Emit = Callable[[Event], None]

#: prompts longer than this (characters of canonical JSON) go to an artifact file, not the event
INLINE_PROMPT_CHARS = 8_000


def schema_of(schema: type[BaseModel] | None) -> dict[str, Any] | None:
    return None if schema is None else schema.model_json_schema()


def prompt_text(messages: Sequence[Message], json_schema: dict[str, Any] | None) -> str:
    """The canonical text of a prompt: what is hashed and stored."""
    body: dict[str, Any] = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    if json_schema is not None:
        body["schema"] = json_schema
    return canonical_json(body)


def prompt_hash(messages: Sequence[Message], json_schema: dict[str, Any] | None) -> str:
    return hashlib.sha256(prompt_text(messages, json_schema).encode()).hexdigest()


def parse_output(text: str, schema: type[BaseModel]) -> BaseModel:
    """Parse a completion into ``schema``; raises :class:`InvalidOutput` with a short reason."""
    s = text.strip()
    if s.startswith("```"):  # tolerate a fenced block from unconstrained remote models
        s = s.strip("`")
        if s.startswith("json"):
            s = s[4:]
    try:
        data = json.loads(s)
    except json.JSONDecodeError as e:
        raise InvalidOutput(f"not valid JSON: {e}", text) from None
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise InvalidOutput(f"schema validation failed: {validation_errors(e)}", text) from None


class LLMClient:
    """Retries, validation, events and the token budget around one :class:`Backend`."""

    def __init__(
        self,
        backend: Backend,
        *,
        emit: Emit | None = None,
        max_total_tokens: int | None = None,
        max_attempts: int = 3,
        timeout: float = 120.0,
        retry_temperature: float = 0.7,
        home: str | os.PathLike | None = None,
        inline_prompt_chars: int = INLINE_PROMPT_CHARS,
    ):
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.backend = backend
        self.emit = emit
        self.max_total_tokens = max_total_tokens
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.retry_temperature = retry_temperature
        self.home = Path(home) if home is not None else None
        self.inline_prompt_chars = inline_prompt_chars
        self.used = Usage()

    # -- helpers -------------------------------------------------------------------------------
    @property
    def tokens_used(self) -> int:
        return self.used.total_tokens

    def _emit(self, ev: Event) -> None:
        if self.emit is not None:
            self.emit(ev)

    def _store_prompt(self, text: str, h: str, force_artifact: bool = False) -> tuple[str | None, str | None]:
        if len(text) <= self.inline_prompt_chars and not force_artifact:
            return text, None
        from trex.events.log import default_home

        from trex.events.fsio import write_file_once_under

        home = self.home if self.home is not None else default_home()
        # content-addressed, never through a link: a link at the file or on the way from the home
        # is refused (LinkRefused names it)
        write_file_once_under(home, home / "artifacts" / "prompts" / f"{h}.json", text)
        return None, f"prompts/{h}.json"

    def _estimate_prompt_tokens(self, messages: Sequence[Message]) -> int:
        n = None
        try:
            n = self.backend.count_tokens(messages)
        except Exception:  # noqa: BLE001 - estimation must never fail a call
            n = None
        if n is None:  # conservative: about 3 characters a token, plus chat-template overhead
            n = sum(len(m["content"]) for m in messages) // 3 + 8 * len(messages)
        return int(n)

    # -- the interface -------------------------------------------------------------------------
    def chat(
        self,
        messages: Sequence[Message],
        *,
        schema: type[BaseModel] | None = None,
        purpose: str,
        max_tokens: int = 512,
        temperature: float = 0.0,
        seed: int | None = 0,
    ) -> LLMResult:
        json_schema = schema_of(schema)
        text = prompt_text(messages, json_schema)
        h = hashlib.sha256(text.encode()).hexdigest()
        call_id = new_id()
        backend_name, model = self.backend.name, self.backend.model
        schema_name = schema.__name__ if schema is not None else ""

        if self.max_total_tokens is not None:
            need = self._estimate_prompt_tokens(messages) + max_tokens
            if self.tokens_used + need > self.max_total_tokens:
                err = TokenBudgetExceeded(self.tokens_used, need, self.max_total_tokens, purpose)
                self._emit(LlmCallFailed(call_id=call_id, purpose=purpose, backend=backend_name, model=model,
                                         error=f"TokenBudgetExceeded: {err}", prompt_hash=h, attempt=1))
                raise err

        prompt_inline, prompt_artifact = self._store_prompt(text, h)
        errors: list[str] = []
        total = Usage()
        last_text: str | None = None
        for attempt in range(1, self.max_attempts + 1):
            temp = temperature if attempt == 1 or temperature > 0 else self.retry_temperature
            s = None if seed is None else seed + attempt - 1
            params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temp, "seed": s}
            if schema is not None:
                params["schema"] = schema_name
            if attempt > 1 and self.max_total_tokens is not None:
                need = self._estimate_prompt_tokens(messages) + max_tokens
                if self.tokens_used + need > self.max_total_tokens:
                    err = TokenBudgetExceeded(self.tokens_used, need, self.max_total_tokens, purpose)
                    self._emit(LlmCallFailed(call_id=call_id, purpose=purpose, backend=backend_name, model=model,
                                             error=f"TokenBudgetExceeded: {err}", prompt_hash=h, attempt=attempt))
                    raise err
            t0 = time.perf_counter()
            try:
                comp = self.backend.complete(
                    messages, json_schema=json_schema, schema_name=schema_name or "output", max_tokens=max_tokens,
                    temperature=temp, seed=s, timeout=self.timeout,
                )
            except Exception as e:  # noqa: BLE001 - backend errors, timeouts, and any crash: recorded, retried
                dt = time.perf_counter() - t0
                errors.append(f"{type(e).__name__}: {e}"[:2000])
                self._emit(LlmCallFailed(call_id=call_id, purpose=purpose, backend=backend_name, model=model,
                                         error=errors[-1], prompt_hash=h, attempt=attempt, latency_s=dt,
                                         params=params, prompt=prompt_inline, prompt_artifact=prompt_artifact))
                continue
            dt = time.perf_counter() - t0
            self.used = self.used + comp.usage
            total = total + comp.usage
            last_text = comp.text
            parsed = None
            if schema is not None:
                try:
                    parsed = parse_output(comp.text, schema)
                except InvalidOutput as e:
                    if comp.finish_reason == "length":
                        e = InvalidOutput(f"{e} (output cut at max_tokens={max_tokens})", comp.text)
                    errors.append(f"InvalidOutput: {e}")
                    self._emit(LlmCallFailed(call_id=call_id, purpose=purpose, backend=backend_name, model=model,
                                             error=errors[-1], response=comp.text, prompt_hash=h,
                                             params=params, prompt=prompt_inline, prompt_artifact=prompt_artifact,
                                             prompt_tokens=comp.usage.prompt_tokens,
                                             completion_tokens=comp.usage.completion_tokens,
                                             attempt=attempt, latency_s=dt))
                    continue
            self._emit(LlmCallMade(call_id=call_id, purpose=purpose, backend=backend_name, model=model, params=params,
                                   prompt_hash=h, prompt=prompt_inline, prompt_artifact=prompt_artifact,
                                   response=comp.text, prompt_tokens=comp.usage.prompt_tokens,
                                   completion_tokens=comp.usage.completion_tokens, latency_s=dt, attempt=attempt))
            return LLMResult(text=comp.text, parsed=parsed, usage=total, latency=dt, attempts=attempt,
                             call_id=call_id, prompt_hash=h)
        raise LLMCallError(purpose, errors, last_text, call_id)
