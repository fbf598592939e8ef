"""What a task is at run time: a small frozen description.

A :class:`Task` says what to fine-tune (a named base-model builder or a local model folder), on
what (named data splits made by a named generator, or local data files), how to prompt, and how
to score (metric names and direction). Builders and generators are named, not held, so a task
stays plain data that a log can record and another process can rebuild.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    # a constraint: a node whose score on this metric falls outside the bound is infeasible (never "best")
    at_least: float | None = Field(default=None, allow_inf_nan=False)
    at_most: float | None = Field(default=None, allow_inf_nan=False)

    @property
    def constrained(self) -> bool:
        return self.at_least is not None or self.at_most is not None


POOL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class Pool(BaseModel):
    """A candidate training source besides the train split: rows a recipe may mix in (``pool:<task>/<name>``).

    Its rows are one split of the task's data (``split``), checked by the contamination guard like any
    training row and never scored. ``description`` is what the Researcher reads about it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=POOL_NAME_PATTERN)
    split: SplitName
    description: str = Field(min_length=1, max_length=500)


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
    pools: tuple[Pool, ...] = ()  # candidate training sources the search may mix in
    templates: tuple[str, ...] = ()  # training prompt templates the search may choose among (each has {prompt})
    # the task file's budget defaults: trials, steps, batch_size, eval_limit (used where a command gives none)
    defaults: dict[str, int | None] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _pools_and_templates(self) -> "Task":
        scored = {m.split for m in self.metrics} | {m.test_split for m in self.metrics if m.test_split}
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.name!r}: two pools share a name")
        for p in self.pools:
            if p.split not in self.splits:
                raise ValueError(f"pool {p.name!r}: its split {p.split!r} is not one of the task's splits")
            if p.split == "train" or p.split in scored:
                raise ValueError(f"pool {p.name!r}: split {p.split!r} is the train split or a scored split")
        for t in self.templates:
            if "{prompt}" not in t:
                raise ValueError(f"template {t!r} must contain {{prompt}}")
        if len(set(self.templates)) != len(self.templates):
            raise ValueError(f"task {self.name!r}: a template is listed twice")
        for m in self.metrics:
            if m.primary and m.constrained:
                raise ValueError(f"metric {m.name!r} is the primary metric (what the search optimises); "
                                 f"a bound belongs on a secondary metric")
            if m.at_least is not None and m.at_most is not None and m.at_most < m.at_least:
                raise ValueError(f"metric {m.name!r}: at_most is below at_least")
        return self

    @property
    def primary_metric(self) -> MetricSpec:
        return next(m for m in self.metrics if m.primary)

    @property
    def constraints(self) -> tuple[MetricSpec, ...]:
        """The metrics a node must hold within their bounds to be feasible."""
        return tuple(m for m in self.metrics if m.constrained)

    def pool(self, name: str) -> Pool | None:
        return next((p for p in self.pools if p.name == name), None)

    @property
    def pool_splits(self) -> frozenset[str]:
        return frozenset(p.split for p in self.pools)

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

    if not isinstance(split, str) or not re.fullmatch(SPLIT_PATTERN, split):
        raise ValueError(f"invalid split name {split!r} (lowercase letters, digits, '_' and '-', at most 64)")
    return Path(folder) / f"{split}.jsonl"
