"""Search lifecycle, decisions of the selection policy, budget and forks."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trex.events.base import Event, event, upcaster

Operator = Literal["draft", "improve", "debug"]


class Budget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    max_trials: int | None = Field(default=None, ge=1)
    max_seconds: float | None = Field(default=None, gt=0)
    max_compute_seconds: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)


DEFAULT_TRIAL_STEPS = 100  # steps per trial unless the search says otherwise (one default, everywhere)


class TrialSettings(BaseModel):
    """How each trial of a search is trained and scored."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    steps: int = Field(default=DEFAULT_TRIAL_STEPS, ge=1)
    batch_size: int = Field(default=32, ge=1)
    eval_limit: int | None = Field(default=None, ge=1)  # examples per eval split (None: the task's, else all)
    time_limit_s: float = Field(default=600.0, gt=0)
    threads: int | None = Field(default=None, ge=1)


class LlmSettings(BaseModel):
    """The llm proposer's model: an OpenAI-compatible ``url``, a local ``model_dir``, or (neither) SmolLM2."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    url: str | None = None
    model: str | None = None
    model_dir: str | None = None
    threads: int | None = Field(default=None, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    temperature: float = Field(default=0.7, ge=0)
    max_total_tokens: int | None = Field(default=None, ge=1)  # the search's LLM token cap


class Constraint(BaseModel):
    """A secondary metric a node must hold to be feasible (the task's ``at_least``/``at_most``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    metric: str = Field(min_length=1, max_length=128)
    at_least: float | None = Field(default=None, allow_inf_nan=False)
    at_most: float | None = Field(default=None, allow_inf_nan=False)

    def violation(self, value: float | None) -> str | None:
        """Why ``value`` breaks the constraint (one line), or None when it holds."""
        import math

        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{self.metric} not measured"
        if self.at_least is not None and value < self.at_least:
            return f"{self.metric} {value:.4g} < {self.at_least:g} required"
        if self.at_most is not None and value > self.at_most:
            return f"{self.metric} {value:.4g} > {self.at_most:g} allowed"
        return None


def violations(constraints, metrics) -> str | None:
    """Why ``metrics`` (name -> value) break ``constraints``, every broken one in one line; None when all hold."""
    why = [w for w in (c.violation(metrics.get(c.metric)) for c in constraints) if w]
    return "; ".join(why) if why else None


@event("SearchStarted", version=2)
class SearchStarted(Event):
    """What a search is started with, every setting a typed field (v1 kept them in a ``config`` dict)."""

    task: str
    base_model: str = ""
    proposer: str = "random"
    policy: str = "mcts"
    seed: int = 0
    parallel: int = Field(default=1, ge=1)
    budget: Budget = Budget()
    trial: TrialSettings = TrialSettings()
    metric_direction: Literal["max", "min"] = "max"
    # a user's task: its definition as installed when the search started, and that JSON's sha256
    task_def: dict[str, Any] | None = None
    task_def_hash: str = ""
    task_file: str | None = None
    llm: LlmSettings = LlmSettings()
    prior_insights: bool = True  # the llm proposer reads earlier searches' insights (off: independent cells)
    policy_params: dict[str, int | float] = Field(default_factory=dict)
    search_url: str | None = None  # a literature/web search endpoint for the Researcher
    heldout_k: int = Field(default=2, ge=0)  # nodes after the chosen one also scored on test (for information)
    constraints: tuple[Constraint, ...] = ()  # the task's: a node outside them is infeasible, never the best
    labels: dict[str, str] = Field(default_factory=dict)  # free tags for reports (ftbench_tag, …)


_V1_TRIAL = {"trial_steps": "steps", "batch_size": "batch_size", "eval_limit": "eval_limit",
             "trial_time_limit_s": "time_limit_s", "threads": "threads"}
_V1_TOP = ("metric_direction", "task_def", "task_file", "prior_insights", "policy_params", "search_url")


@upcaster("SearchStarted", 1)
def upcast_v1_v2(d: dict) -> dict:
    """v1 kept the settings in ``config``; each known key moves to its typed field, and whatever does not
    fit one (an unknown key, a value v1's fold tolerated but v2's type refuses) is kept as a label."""
    out = {k: v for k, v in d.items() if k != "config"}
    cfg = _dict(d.get("config"))
    labels: dict[str, str] = {}
    if d.get("config") is not None and not isinstance(d.get("config"), dict):
        labels["v1_config"] = _label(d["config"])

    def keep(name: str, v: Any) -> None:
        labels[name] = _label(v)

    out["trial"] = {}
    for old, new in _V1_TRIAL.items():
        v = cfg.pop(old, None)
        if v is not None:
            if _fits(TrialSettings, new, v):
                out["trial"][new] = v
            else:
                keep(f"v1_{old}", v)
    md = cfg.pop("metric_direction", None)
    out["metric_direction"] = "min" if md == "min" else "max"  # v1's fold: "min" or else higher is better
    if md not in (None, "min", "max"):
        keep("v1_metric_direction", md)
    for k in ("task_def", "task_file", "prior_insights", "policy_params", "search_url"):
        v = cfg.pop(k, None)
        if v is not None:
            if _fits(SearchStarted, k, v):
                out[k] = v
            else:
                keep(f"v1_{k}", v)
    raw_llm = cfg.pop("llm", None)
    llm = _dict(raw_llm)
    if raw_llm is not None and not isinstance(raw_llm, dict):
        keep("v1_llm", raw_llm)
    if "llm_temperature" in cfg:
        llm["temperature"] = cfg.pop("llm_temperature")
    if "max_llm_tokens" in cfg:
        llm["max_total_tokens"] = cfg.pop("max_llm_tokens")
    out["llm"] = {}
    for k, v in llm.items():
        if k in LlmSettings.model_fields and v is not None and _fits(LlmSettings, k, v):
            out["llm"][k] = v
        else:
            keep(f"llm_{k}", v)
    fb = cfg.pop("ftbench", None)
    for k, v in (_dict(fb) if isinstance(fb, dict) else ({} if fb is None else {"": fb})).items():
        keep(f"ftbench_{k}" if k else "ftbench", v)
    for k, v in cfg.items():
        keep(str(k), v)
    out["labels"] = labels
    if out.get("task_def") is not None:
        out["task_def_hash"] = task_def_hash(out["task_def"])
    return out


def _dict(v: Any) -> dict:
    return dict(v) if isinstance(v, dict) else {}


def _fits(model: type[BaseModel], field: str, value: Any) -> bool:
    """Whether ``value`` is valid for ``model.field`` (checked alone, through pydantic)."""
    from pydantic import TypeAdapter, ValidationError

    info = model.model_fields[field]
    try:
        TypeAdapter(Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation) \
            .validate_python(value)
        return True
    except (ValidationError, TypeError):
        return False


def _label(v: Any) -> str:
    import json

    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def task_def_hash(task_def: dict) -> str:
    """The sha256 of a task definition's canonical JSON (what ``SearchStarted.task_def_hash`` holds)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(task_def, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


MAX_FORK_DEPTH = 64
"""The most forks a search may sit under (a fork of a fork ...): replay refuses deeper lineages, so a
fork or an import that would make one is refused before anything is written."""


@event("SearchForked")
class SearchForked(Event):
    """First event of a fork: the fork's tree is the parent's prefix up to ``at_seq`` plus its own events."""

    parent_search_id: str
    at_seq: int = Field(ge=1)
    at_node: str | None = None
    budget: Budget | None = None


@event("SearchResumed")
class SearchResumed(Event):
    reason: str = ""


@event("SearchFinished", version=2)
class SearchFinished(Event):
    """``best_*``: the node chosen on validation and its validation (selection) score; ``test_score``
    its held-out score, the number trex reports; ``reported``: ``test``, or ``selection`` when the
    task has no test split (then the reported score is the selection score, and says so)."""

    reason: str
    best_node_id: str | None = None
    best_score: float | None = None
    test_score: float | None = None
    reported: Literal["test", "selection", ""] = ""


@upcaster("SearchFinished", 1)
def upcast_search_finished_v1_v2(d: dict) -> dict:
    """v1 reported the selection score only (it had no held-out evaluation)."""
    return {**d, "test_score": None, "reported": "selection"}


@event("BudgetExhausted")
class BudgetExhausted(Event):
    kind: Literal["trials", "seconds", "compute_seconds", "tokens"]
    limit: float
    used: float


@event("NodeSelected")
class NodeSelected(Event):
    """A decision of the selection policy, with the scores that led to it (for auditors)."""

    decision_id: str
    node_id: str | None  # the node to expand; None = the root (a fresh draft)
    operator: Operator
    policy: str
    seed: int
    scores: tuple[tuple[str, float], ...] = ()
    reason: str = ""


@event("NodePruned")
class NodePruned(Event):
    node_id: str
    reason: str
