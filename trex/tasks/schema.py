"""The task-file schema: a YAML file (pydantic models), loaded with clear errors.

A task file says what to fine-tune, on what, how to prompt and decode, and how to score::

    name: arith-sub
    domain: arithmetic
    description: what the Researcher is told
    base_model: {builder: arith-base, seed: 0}      # or {path: ./model} or {hub: Qwen/Qwen3-1.7B}
    data: {generator: arith-sub, seed: 0}           # or {files: {train: a.jsonl, eval: b.jsonl}} or {hub: id, ...}
    splits: [train, eval]
    prompt_template: "{prompt}"
    decoding: {max_new_tokens: 4}
    metrics: [{name: exact_match, split: eval, primary: true}]
    budget: {trials: 8, steps: 200}
    requires: {gpu: false, hub: false}

:func:`load_spec` validates the file (the error names the file and the field);
:func:`fetch_plan` lists what a hub task would download; :func:`spec_to_task` turns a spec into
its run-time :class:`~trex.tasks.model.Task` (unchecked: :mod:`trex.tasks.checks` says whether
it can run here).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trex.events.base import validation_errors
from trex.tasks.model import NAME_PATTERN, POOL_NAME_PATTERN, MetricSpec, Pool, SplitName, Task


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _exactly_one(obj: BaseModel, what: str, names: tuple[str, ...]) -> None:
    if sum(getattr(obj, n) is not None for n in names) != 1:
        raise ValueError(f"{what} needs exactly one of {', '.join(names)}")


class BaseModelRef(_Frozen):
    """Exactly one of: a registered base-model builder (with its seed), a local folder, a hub id."""

    builder: str | None = None
    seed: int = 0
    path: str | None = None
    hub: str | None = None
    revision: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "BaseModelRef":
        _exactly_one(self, "base_model", ("builder", "path", "hub"))
        return self


class DataRef(_Frozen):
    """Exactly one of: a registered seeded data generator, local files per split, a hub dataset."""

    generator: str | None = None
    seed: int = 0
    files: dict[SplitName, str] | None = None  # split -> path (relative to the task file)
    hub: str | None = None
    hub_config: str | None = None
    hub_splits: dict[SplitName, str] = Field(default_factory=dict)  # our split -> the hub's split name
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    source: str = ""  # paper / repository the data comes from

    @model_validator(mode="after")
    def _one(self) -> "DataRef":
        _exactly_one(self, "data", ("generator", "files", "hub"))
        return self


class MetricRef(_Frozen):
    name: str
    split: SplitName  # validation: what the search selects on, what the Researcher may see
    test_split: SplitName | None = None  # its held-out twin: scored once per chosen node, when the search ends
    direction: Literal["max", "min"] = "max"
    primary: bool = False
    description: str = ""
    at_least: float | None = Field(default=None, allow_inf_nan=False)  # a constraint: feasible nodes hold it
    at_most: float | None = Field(default=None, allow_inf_nan=False)


class PoolRef(_Frozen):
    """A candidate training source: a split the generator makes (``split``) or a file (``file``)."""

    name: str = Field(pattern=POOL_NAME_PATTERN)
    description: str = Field(min_length=1, max_length=500)
    split: SplitName | None = None
    file: str | None = None  # relative to the task file

    @model_validator(mode="after")
    def _one(self) -> "PoolRef":
        _exactly_one(self, f"pool {self.name!r}", ("split", "file"))
        return self

    @property
    def split_name(self) -> str:
        return self.split if self.split is not None else f"pool-{self.name}"


class Decoding(_Frozen):
    max_new_tokens: int = Field(default=4, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0, le=2)


class BudgetDefaults(_Frozen):
    trials: int = Field(default=8, ge=1)
    steps: int = Field(default=200, ge=1)
    batch_size: int = Field(default=32, ge=1)
    eval_limit: int | None = Field(default=None, ge=1)


class Requires(_Frozen):
    gpu: bool = False
    hub: bool = False
    scorers: tuple[str, ...] = ()  # metrics computed by a scorer that is not built in (must be registered)


class TaskSpec(_Frozen):
    name: str = Field(pattern=NAME_PATTERN)
    domain: str
    description: str = Field(min_length=1)
    base_model: BaseModelRef
    data: DataRef
    splits: tuple[SplitName, ...] = ("train", "eval")
    prompt_template: str = "{prompt}"
    decoding: Decoding = Decoding()
    metrics: tuple[MetricRef, ...] = Field(min_length=1)
    pools: tuple[PoolRef, ...] = ()
    templates: tuple[str, ...] = Field(default=(), max_length=8)
    budget: BudgetDefaults = BudgetDefaults()
    requires: Requires = Requires()
    paper: str = ""  # where the task comes from (benchmark paper, reference)

    @model_validator(mode="after")
    def _consistent(self) -> "TaskSpec":
        if sum(m.primary for m in self.metrics) != 1:
            raise ValueError("exactly one metric must be primary")
        for m in self.metrics:
            if m.primary and (m.at_least is not None or m.at_most is not None):
                raise ValueError(f"metric {m.name!r} is the primary metric (what the search optimises); "
                                 f"a bound (at_least/at_most) belongs on a secondary metric")
            if m.at_least is not None and m.at_most is not None and m.at_most < m.at_least:
                raise ValueError(f"metric {m.name!r}: at_most is below at_least")
            if m.split not in self.splits:
                raise ValueError(f"metric {m.name!r} is measured on split {m.split!r}, which is not in splits")
            if m.test_split is not None and m.test_split not in self.splits:
                raise ValueError(f"metric {m.name!r} has test split {m.test_split!r}, which is not in splits")
            if m.test_split is not None and m.test_split in {x.split for x in self.metrics}:
                raise ValueError(f"split {m.test_split!r} cannot be both a metric's split and a test split")
            if m.test_split == "train" or m.split == "train":
                raise ValueError(f"metric {m.name!r}: the train split is never scored")
        if "train" not in self.splits:
            raise ValueError("splits must include 'train'")
        if (self.base_model.hub or self.data.hub) and not self.requires.hub:
            raise ValueError("a base model or data from the hub needs requires.hub: true")
        if self.data.files is not None and set(self.data.files) != set(self.splits):
            raise ValueError(f"data.files must name a file for each split {list(self.splits)}")
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be distinct: {names}")
        for pool in self.pools:
            if pool.file is not None and pool.split_name in self.splits:
                raise ValueError(f"pool {pool.name!r}: its rows would be split {pool.split_name!r}, which the task "
                                 f"already has (rename the pool or the split)")
            if pool.file is not None and self.data.files is None:
                raise ValueError(f"pool {pool.name!r}: a file pool needs data.files (a generator makes its pools "
                                 f"as splits)")
            if pool.split is not None and pool.split not in self.splits:
                raise ValueError(f"pool {pool.name!r}: split {pool.split!r} is not in splits")
        for t in self.templates:
            if "{prompt}" not in t:
                raise ValueError(f"template {t!r} must contain {{prompt}}")
        if "{prompt}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {prompt}")
        return self

    @property
    def primary(self) -> MetricRef:
        return next(m for m in self.metrics if m.primary)


class SpecError(ValueError):
    """A task file that is not a valid task: the message names the file and what is wrong."""


class _DuplicateKey(Exception):
    """A mapping of a task file that gives a key twice (the message names the key and its line)."""


@functools.cache
def _task_loader():
    """PyYAML's SafeLoader, stricter: a key given twice in one mapping is refused (PyYAML keeps the last
    one silently, where the log, imports and plans refuse a duplicate key), and an integer of more digits
    than Python converts is a YAML error at its line (not a bare ``ValueError``). Built on first use."""
    import yaml
    from yaml.constructor import ConstructorError

    class TaskLoader(yaml.SafeLoader):
        def flatten_mapping(self, node):
            # checked once per node, on its first flattening (before PyYAML merges `<<` keys into it in
            # place: a node merged elsewhere and used again through an alias holds merged keys twice)
            checked = self.__dict__.setdefault("_dup_checked", set())
            if isinstance(node, yaml.MappingNode) and id(node) not in checked:
                checked.add(id(node))
                seen: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may override merged keys
                        continue
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        if key in seen:
                            raise _DuplicateKey(f"line {line}: the key {str(key)[:80]!r} is given twice in "
                                                f"one mapping (first at line {seen[key]})")
                        seen[key] = line
                    except TypeError:  # an unhashable key: SafeLoader's own error says so
                        continue
            return super().flatten_mapping(node)

        def construct_yaml_int(self, node):
            try:
                return super().construct_yaml_int(node)
            except ValueError as e:  # Python's limit on the digits of an int
                from trex.tasks.files import too_long_number

                raise ConstructorError(None, None, too_long_number(e) or " ".join(str(e).split()),
                                       node.start_mark) from None

    TaskLoader.add_constructor("tag:yaml.org,2002:int", TaskLoader.construct_yaml_int)
    return TaskLoader


def load_spec(path: str | Path) -> TaskSpec:
    """The task file at ``path``, validated; :class:`SpecError` naming the file and what is wrong.

    The file must be a regular file of at most :data:`~trex.tasks.files.MAX_INPUT_BYTES` (a FIFO, a device
    or a folder is refused before anything is read), UTF-8 YAML with no key given twice in a mapping."""
    import yaml

    from trex.tasks.files import InputFileError, read_input_file

    p = Path(path)
    try:
        text = read_input_file(p, "task file").decode("utf-8")
        raw = yaml.load(text, Loader=_task_loader())  # noqa: S506 - a SafeLoader subclass
    except InputFileError as e:
        raise SpecError(str(e)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: cannot read the task file ({e})") from None
    except _DuplicateKey as e:
        raise SpecError(f"{p}: {e}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{p}: a task file is a YAML mapping, got {type(raw).__name__}")
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(f"{p}: {validation_errors(e, 8)}") from None


def fetch_plan(spec: TaskSpec) -> list[str]:
    """What preparing this task would download from the hub (nothing for a local task)."""
    out = []
    if spec.base_model.hub:
        rev = f"@{spec.base_model.revision}" if spec.base_model.revision else ""
        out.append(f"model {spec.base_model.hub}{rev} (safetensors weights, config, tokenizer)")
    if spec.data.hub:
        cfg = f" config {spec.data.hub_config!r}" if spec.data.hub_config else ""
        splits = ", ".join(f"{ours}<-{theirs}" for ours, theirs in spec.data.hub_splits.items()) or "all splits"
        out.append(f"dataset {spec.data.hub}{cfg}, splits {splits}")
    return out


def spec_to_task(spec: TaskSpec, base_dir: str | Path | None = None) -> Task:
    """The run-time :class:`Task` of a task file (relative paths resolved against ``base_dir``).

    Not checked against the registry (builder and generator names): see
    :func:`trex.tasks.checks.task_from_spec`. A task whose model or data come from the hub does
    not run here (ValueError)."""
    if spec.base_model.hub or spec.data.hub:
        raise ValueError(f"task {spec.name!r} needs the Hugging Face hub, which trex does not fetch from")
    base = Path(base_dir if base_dir is not None else ".").resolve()
    files = {k: str(base / v) for k, v in spec.data.files.items()} if spec.data.files else None
    splits = spec.splits
    for pool in spec.pools:
        if pool.file is not None:
            files[pool.split_name] = str(base / pool.file)
            splits = splits + (pool.split_name,)
    return Task(
        name=spec.name, description=spec.description, base_model=spec.base_model.builder,
        base_model_path=str(base / spec.base_model.path) if spec.base_model.path else None,
        base_seed=spec.base_model.seed, data=spec.data.generator, data_seed=spec.data.seed,
        data_files=files,
        prompt_field=spec.data.prompt_field, completion_field=spec.data.completion_field, splits=splits,
        prompt_template=spec.prompt_template, max_new_tokens=spec.decoding.max_new_tokens,
        metrics=tuple(MetricSpec(name=m.name, split=m.split, test_split=m.test_split, direction=m.direction,
                                 primary=m.primary, description=m.description, at_least=m.at_least,
                                 at_most=m.at_most) for m in spec.metrics),
        pools=tuple(Pool(name=p.name, split=p.split_name, description=p.description) for p in spec.pools),
        templates=spec.templates,
        defaults=spec.budget.model_dump(),
    )
