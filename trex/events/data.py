"""Data checks: the contamination guard's result on a training set (counts and row ids, never rows)."""
from __future__ import annotations

from pydantic import Field

from trex.events.base import Event, event


@event("DataOverlapChecked")
class DataOverlapChecked(Event):
    """A training set checked against the held-out splits (:mod:`trex.tasks.contamination`).

    ``scope``: ``task_file`` (a user's task before ``trex run``) or ``recipe`` (a trial's
    materialised rows before it trains). ``example_rows`` are training row indices only."""

    node_id: str = ""
    scope: str = "recipe"
    key: str  # the guard's cache key: sha256 of the content hashes and the settings
    train_hash: str
    train_rows: int = Field(ge=0)
    heldout_rows: tuple[tuple[str, int], ...] = ()
    exact_pairs: int = Field(default=0, ge=0)
    exact_prompts: int = Field(default=0, ge=0)
    ngram_rows: int = Field(default=0, ge=0)
    flagged_rows: int = Field(default=0, ge=0)
    fraction: float = Field(default=0.0, ge=0, le=1)
    heldout_covered: tuple[tuple[str, int], ...] = ()
    example_rows: tuple[int, ...] = ()
    n: int = Field(default=8, ge=1)
    row_threshold: float = 0.5
    threshold_used: float | None = None  # the calibrated n-gram threshold; None: the n-gram check was off
    baseline: float = 0.0  # the task's clean train-vs-held-out per-row n-gram fraction
    refused: bool = False
    override: bool = False  # refused, but the user let it run (recorded)
    reason: str = ""
