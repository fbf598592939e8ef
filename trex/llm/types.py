"""Shared types of the LLM layer: messages, results, errors, the backend protocol."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, TypedDict, runtime_checkable

from pydantic import BaseModel


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)


@dataclass(frozen=True)
class Completion:
    """What a backend returns for one generation."""

    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = ""


@dataclass(frozen=True)
class LLMResult:
    """The outcome of :meth:`LLMClient.chat`.

    ``parsed`` is the validated pydantic object when a schema was given (else None);
    ``usage`` sums every attempt (failed ones included: that is what the budget counts);
    ``latency`` is the wall time of the successful attempt in seconds;
    ``attempts`` is how many generations were made (1 = first try).
    """

    text: str
    parsed: BaseModel | None
    usage: Usage
    latency: float
    attempts: int
    call_id: str = ""
    prompt_hash: str = ""


class LLMError(Exception):
    """Base of every error the LLM layer raises."""


class BackendError(LLMError):
    """A backend could not produce a completion (transport, server, timeout)."""


class LLMTimeout(BackendError):
    pass


class InvalidOutput(LLMError):
    """A completion that is not valid JSON or fails the pydantic schema."""

    def __init__(self, message: str, text: str = ""):
        super().__init__(message)
        self.text = text


class LLMCallError(LLMError):
    """Every attempt of a call failed. ``errors`` holds one message per attempt; the caller records it
    (e.g. as a PlanRejected / TrialFailed event) — each attempt already went out as ``LlmCallFailed``."""

    def __init__(self, purpose: str, errors: Sequence[str], last_text: str | None = None, call_id: str = ""):
        self.purpose = purpose
        self.errors = list(errors)
        self.last_text = last_text
        self.call_id = call_id
        super().__init__(f"LLM call {purpose!r} failed after {len(self.errors)} attempt(s): {self.errors[-1] if self.errors else '?'}")


class TokenBudgetExceeded(LLMError):
    """The call's worst-case token count (prompt + max_tokens) would pass ``max_total_tokens``; it was not made."""

    def __init__(self, used: int, needed: int, budget: int, purpose: str = ""):
        self.used, self.needed, self.budget, self.purpose = used, needed, budget, purpose
        super().__init__(
            f"token budget exceeded for {purpose!r}: {used} used + up to {needed} needed > budget {budget}"
        )


class ReplayMiss(LLMError):
    """Replay was asked for a call that was not recorded (or not in this order)."""


@runtime_checkable
class Backend(Protocol):
    """A thing that turns chat messages into one completion. Implementations: OpenAIBackend,
    TransformersBackend (and the embedded SmolLM2 default built on it)."""

    name: str  # backend kind, recorded in events ("openai", "transformers", ...)
    model: str  # model id / folder, recorded in events

    def complete(
        self,
        messages: Sequence[Message],
        *,
        json_schema: dict[str, Any] | None,
        schema_name: str,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        timeout: float,
    ) -> Completion: ...

    def count_tokens(self, messages: Sequence[Message]) -> int | None:
        """Prompt tokens for these messages, or None when the backend cannot tell before calling."""
        ...
