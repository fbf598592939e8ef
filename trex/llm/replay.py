"""Replay never calls a model: :class:`ReplayLLM` serves recorded answers.

It is built from the ``LlmCallMade`` / ``LlmCallFailed`` events of a search (payloads or
envelopes, in log order). Attempts sharing a ``call_id`` form one recorded call; recorded calls are
queued per (prompt hash, purpose) in the order they were first seen. ``chat`` takes the next call
of its queue and returns what was recorded (the validated object, usage, attempts), re-raises
``LLMCallError`` / ``TokenBudgetExceeded`` when the recorded call failed, and raises
:class:`ReplayMiss` when no such call was recorded. It has the same ``chat`` signature as
:class:`~trex.llm.client.LLMClient` and emits nothing (the events are already in the log).
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from pydantic import BaseModel

from trex.llm.client import parse_output, prompt_hash, schema_of
from trex.llm.types import (
    InvalidOutput,
    LLMCallError,
    LLMResult,
    Message,
    ReplayMiss,
    TokenBudgetExceeded,
    Usage,
)


@dataclass
class _Recorded:
    call_id: str
    purpose: str
    prompt_hash: str
    made: Any = None  # LlmCallMade
    failed: list[Any] = field(default_factory=list)  # LlmCallFailed, in order


class ReplayLLM:
    name = "replay"

    def __init__(self, events: Iterable[Any]):
        from trex.events.plans import LlmCallFailed, LlmCallMade

        calls: "OrderedDict[str, _Recorded]" = OrderedDict()
        for ev in events:
            if isinstance(ev, (LlmCallMade, LlmCallFailed)):
                pass
            elif isinstance(getattr(ev, "type", None), str) and hasattr(ev, "payload"):  # an Envelope
                if ev.type not in ("LlmCallMade", "LlmCallFailed"):  # decode only what we need
                    continue
                ev = ev.event
            elif isinstance(ev, tuple) and len(ev) == 2:  # (Envelope, Event) from EventLog.iter_events
                ev = ev[1]
            if not isinstance(ev, (LlmCallMade, LlmCallFailed)):
                continue
            rec = calls.get(ev.call_id)
            if rec is None:
                rec = calls[ev.call_id] = _Recorded(ev.call_id, ev.purpose, ev.prompt_hash)
            if isinstance(ev, LlmCallMade):
                rec.made = ev
            else:
                rec.failed.append(ev)
        self._queues: dict[tuple[str, str], deque[_Recorded]] = {}
        for rec in calls.values():
            self._queues.setdefault((rec.prompt_hash, rec.purpose), deque()).append(rec)
        self.served = 0

    def remaining(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def assert_exhausted(self) -> None:
        if self.remaining():
            raise ReplayMiss(f"{self.remaining()} recorded LLM call(s) were never replayed")

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
        h = prompt_hash(messages, schema_of(schema))
        q = self._queues.get((h, purpose))
        if not q:
            raise ReplayMiss(
                f"replay: no recorded LLM call left for purpose {purpose!r} and prompt hash {h[:12]}… "
                "(the code asks the model something the recorded search did not)"
            )
        rec = q.popleft()
        self.served += 1
        usage = Usage()
        for f in rec.failed:
            usage = usage + Usage(f.prompt_tokens, f.completion_tokens)
        if rec.made is None:
            errors = [f.error for f in rec.failed]
            if errors and errors[-1].startswith("TokenBudgetExceeded"):
                raise TokenBudgetExceeded(0, 0, 0, purpose)
            raise LLMCallError(purpose, errors, rec.failed[-1].response if rec.failed else None, rec.call_id)
        m = rec.made
        usage = usage + Usage(m.prompt_tokens, m.completion_tokens)
        parsed = None
        if schema is not None:
            try:
                parsed = parse_output(m.response, schema)
            except InvalidOutput as e:  # the schema changed since the search was recorded
                raise ReplayMiss(f"replay: recorded response no longer validates against {schema.__name__}: {e}") from None
        return LLMResult(text=m.response, parsed=parsed, usage=usage, latency=m.latency_s, attempts=m.attempt,
                         call_id=m.call_id, prompt_hash=h)
