"""The LLM layer: one interface for the agents, several backends, replay, a token budget.

::

    from trex.llm import LLMClient, OpenAIBackend, TransformersBackend, ReplayLLM, default_backend
    client = LLMClient(default_backend(), emit=emit, max_total_tokens=100_000)
    res = client.chat(messages, schema=Plan, purpose="propose", max_tokens=512, temperature=0.0, seed=0)

See docs/llm_and_eval.md.
"""
from trex.llm.client import LLMClient, parse_output, prompt_hash
from trex.llm.local import TransformersBackend  # imports torch only when constructed
from trex.llm.openai_compat import OpenAIBackend
from trex.llm.replay import ReplayLLM
from trex.llm.types import (
    Backend,
    BackendError,
    Completion,
    InvalidOutput,
    LLMCallError,
    LLMError,
    LLMResult,
    LLMTimeout,
    Message,
    ReplayMiss,
    TokenBudgetExceeded,
    Usage,
)


def default_backend(home=None, **kw):
    """The embedded default: SmolLM2-135M-Instruct, converted once under ``$HOME/models/``."""
    from trex.llm.smollm2 import smollm2_backend

    return smollm2_backend(home, **kw)


__all__ = [
    "Backend", "BackendError", "Completion", "InvalidOutput", "LLMCallError", "LLMClient", "LLMError", "LLMResult",
    "LLMTimeout", "Message", "OpenAIBackend", "ReplayLLM", "ReplayMiss", "TokenBudgetExceeded",
    "TransformersBackend", "Usage", "default_backend", "parse_output", "prompt_hash",
]
