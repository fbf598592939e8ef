"""FT-Bench task files: a YAML schema (pydantic), loading with clear errors, and readiness checks.

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
:func:`problems` says why a valid spec cannot run on this machine (a builder or generator that
does not exist, a data file that is missing, a metric nobody can compute, a hub that is not
reachable) — checked before anything starts; :func:`fetch_plan` lists what ``ftbench prepare``
would download for a hub task.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _exactly_one(obj: BaseModel, what: str, names: tuple[str, ...]) -> None:
    if sum(getattr(obj, n) is not None for n in names) != 1:
        raise ValueError(f"{what} needs exactly one of {', '.join(names)}")


class BaseModelRef(_Frozen):
    """Exactly one of: a builder under ``ftbench/`` (with its seed), a local folder, a hub id."""

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
    """Exactly one of: a seeded generator under ``ftbench/``, local files per split, a hub dataset."""

    generator: str | None = None
    seed: int = 0
    files: dict[str, str] | None = None  # split -> path (relative to the task file)
    hub: str | None = None
    hub_config: str | None = None
    hub_splits: dict[str, str] = Field(default_factory=dict)  # our split -> the hub's split name
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    source: str = ""  # paper / repository the data comes from

    @model_validator(mode="after")
    def _one(self) -> "DataRef":
        _exactly_one(self, "data", ("generator", "files", "hub"))
        return self


class MetricRef(_Frozen):
    name: str
    split: str
    direction: Literal["max", "min"] = "max"
    primary: bool = False
    description: str = ""


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
    name: str = Field(pattern=NAME)
    domain: str
    description: str = Field(min_length=1)
    base_model: BaseModelRef
    data: DataRef
    splits: tuple[str, ...] = ("train", "eval")
    prompt_template: str = "{prompt}"
    decoding: Decoding = Decoding()
    metrics: tuple[MetricRef, ...] = Field(min_length=1)
    budget: BudgetDefaults = BudgetDefaults()
    requires: Requires = Requires()
    paper: str = ""  # where the task comes from (benchmark paper, reference)

    @model_validator(mode="after")
    def _consistent(self) -> "TaskSpec":
        if sum(m.primary for m in self.metrics) != 1:
            raise ValueError("exactly one metric must be primary")
        for m in self.metrics:
            if m.split not in self.splits:
                raise ValueError(f"metric {m.name!r} is measured on split {m.split!r}, which is not in splits")
        if "train" not in self.splits:
            raise ValueError("splits must include 'train'")
        if (self.base_model.hub or self.data.hub) and not self.requires.hub:
            raise ValueError("a base model or data from the hub needs requires.hub: true")
        if self.data.files is not None and set(self.data.files) != set(self.splits):
            raise ValueError(f"data.files must name a file for each split {list(self.splits)}")
        if "{prompt}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {prompt}")
        return self

    @property
    def primary(self) -> MetricRef:
        return next(m for m in self.metrics if m.primary)


class SpecError(ValueError):
    """A task file that is not a valid task: the message names the file and what is wrong."""


def load_spec(path: str | Path) -> TaskSpec:
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{p}: no such task file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: cannot read the task file ({e})") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{p}: a task file is a YAML mapping, got {type(raw).__name__}")
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, x['loc'])) or '<root>'}: {x['msg']}" for x in e.errors()[:8])
        raise SpecError(f"{p}: {errs}") from None


def problems(spec: TaskSpec, base_dir: str | Path | None = None, *, hub_reachable: bool = False,
             gpu: bool | None = None) -> list[str]:
    """Why ``spec`` cannot run here (empty: it can). Checked before a search starts."""
    from ftbench.tasks import BASE_MODELS, DATA_GENERATORS
    from trex.evaluate.metrics import can_score, metric_names

    out: list[str] = []
    base = Path(base_dir) if base_dir is not None else Path(".")
    bm = spec.base_model
    if bm.builder is not None and bm.builder not in BASE_MODELS:
        out.append(f"unknown base model builder {bm.builder!r} (known: {', '.join(sorted(BASE_MODELS))})")
    if bm.path is not None and not (base / bm.path).is_dir():
        out.append(f"base model folder {str(base / bm.path)!r} does not exist")
    elif bm.path is not None and not (base / bm.path / "config.json").is_file():
        out.append(f"base model folder {str(base / bm.path)!r} has no config.json (a transformers model folder)")
    d = spec.data
    if d.generator is not None and d.generator not in DATA_GENERATORS:
        out.append(f"unknown data generator {d.generator!r} (known: {', '.join(sorted(DATA_GENERATORS))})")
    for split, f in (d.files or {}).items():
        if not (base / f).is_file():
            out.append(f"data file for split {split!r} ({str(base / f)!r}) does not exist")
    for m in spec.metrics:
        if can_score(m.name):
            continue
        if m.name in spec.requires.scorers:
            out.append(f"metric {m.name!r} needs a scorer that is not installed here (register it with "
                       f"trex.evaluate.metrics.register_scorer)")
        else:
            out.append(f"unknown metric {m.name!r} (known: {', '.join(metric_names())}, or *_exact_match)")
    if spec.requires.hub and not hub_reachable:
        out.append("needs the Hugging Face hub, which is not reachable here: " + "; ".join(fetch_plan(spec)))
    if spec.requires.gpu and gpu is False:
        out.append("needs a GPU")
    return out


def fetch_plan(spec: TaskSpec) -> list[str]:
    """What ``ftbench prepare`` would download for this task (nothing for a local task)."""
    out = []
    if spec.base_model.hub:
        rev = f"@{spec.base_model.revision}" if spec.base_model.revision else ""
        out.append(f"model {spec.base_model.hub}{rev} (safetensors weights, config, tokenizer)")
    if spec.data.hub:
        cfg = f" config {spec.data.hub_config!r}" if spec.data.hub_config else ""
        splits = ", ".join(f"{ours}<-{theirs}" for ours, theirs in spec.data.hub_splits.items()) or "all splits"
        out.append(f"dataset {spec.data.hub}{cfg}, splits {splits}")
    return out


def specs_dir() -> Path:
    return Path(__file__).resolve().parent / "specs"


def builtin_specs() -> dict[str, TaskSpec]:
    """Every task file shipped under ``ftbench/specs/`` (the CPU tasks and the paper's ten)."""
    out = {}
    for p in sorted(specs_dir().glob("*.yaml")):
        s = load_spec(p)
        if s.name in out:
            raise SpecError(f"{p}: a second task named {s.name!r}")
        out[s.name] = s
    return out
