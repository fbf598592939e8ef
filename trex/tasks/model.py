"""What a task is at run time: a small frozen description.

A :class:`Task` says what to fine-tune (a named base-model builder or a local model folder), on
what (named data splits made by a named generator, or local data files), how to prompt, and how
to score (metric names and direction). Builders and generators are named, not held, so a task
stays plain data that a log can record and another process can rebuild.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"  # task names, also folder names under the trex home
SPLIT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # split names, also file names (<split>.jsonl) under the home
SplitName = Annotated[str, Field(pattern=SPLIT_PATTERN)]


class MetricSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    split: SplitName  # the data split it is measured on during the search (validation: selection, evidence)
    test_split: SplitName | None = None  # its held-out twin, scored once per chosen node when the search ends
    direction: Literal["max", "min"] = "max"
    primary: bool = False
    description: str = ""


class Task(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    description: str
    base_model: str | None = None  # a registered base-model builder ...
    base_model_path: str | None = None  # ... or a local model folder (absolute)
    base_seed: int = 0
    data: str | None = None  # a registered data generator ...
    data_files: dict[SplitName, str] | None = None  # ... or split -> a local JSONL/JSON/CSV file (absolute)
    prompt_field: str = "prompt"  # the data files' field names
    completion_field: str = "completion"
    data_seed: int = 0
    splits: tuple[SplitName, ...] = ("train", "eval")
    prompt_template: str = "{prompt}"
    metrics: tuple[MetricSpec, ...]
    max_new_tokens: int = Field(default=4, ge=1, le=4096)
    # the task file's budget defaults: trials, steps, batch_size, eval_limit (used where a command gives none)
    defaults: dict[str, int | None] = Field(default_factory=dict)

    @property
    def primary_metric(self) -> MetricSpec:
        return next(m for m in self.metrics if m.primary)

    @property
    def has_test(self) -> bool:
        """Whether the primary metric has a held-out test split (without one, the reported score is
        the selection score, and trex says so)."""
        return self.primary_metric.test_split is not None


class TaskAssets(BaseModel):
    """A prepared task: its base model folder and its data folder (``<split>.jsonl`` files)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    task: str
    base_model_dir: Path
    data_dir: Path

    def split_path(self, split: str) -> Path:
        return split_file(self.data_dir, split)


def split_file(folder: Path, split: str) -> Path:
    """``folder/<split>.jsonl``, the split name checked first (a name from outside never becomes a path)."""
    import re

    if not isinstance(split, str) or not re.match(SPLIT_PATTERN, split):
        raise ValueError(f"invalid split name {split!r} (lowercase letters, digits, '_' and '-', at most 64)")
    return Path(folder) / f"{split}.jsonl"
