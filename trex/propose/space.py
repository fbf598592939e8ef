"""The one search space: the training values a plan varies, declared once.

Every proposer explores this space and everything that talks about it is derived from it:

* the random sampler (:func:`sample`) and the optuna distributions (:func:`optuna_distributions`),
* the check that a plan lies in the space (:func:`off_space`; a plan outside it is still a valid
  :class:`~trex.plan.Plan`, which has wider, hard limits of its own, but optuna is not told it),
* the LLM's structured-output schema (:func:`plan_choice_model`) and the prompt's description of
  the values (:func:`describe`),
* the dimensions the Insight-distiller compares nodes along (:func:`insight_key`).

A proposer works on *values* (``{"learning_rate": 3e-3, "lora_rank": 8, "targets": "qv", ...}``);
:func:`values_of` reads them from a plan and :func:`to_plan` expands them into a full plan.

The Plan (:mod:`trex.plan`) is a layer below: what the Executor can train. The space is a subset of
it (a test holds every bound, choice and default of the space against the Plan's), and the one
default number of optimizer steps per trial is the Plan's (:data:`DEFAULT_TRIAL_STEPS`).
"""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from trex.plan import DEFAULT_MAX_STEPS
from trex.recipe import recipe_for_task

DEFAULT_TRIAL_STEPS: int = DEFAULT_MAX_STEPS
"""Optimizer steps per trial when neither the search nor the task says: one number everywhere."""


@dataclass(frozen=True)
class Dimension:
    """One value the search varies."""

    name: str  # key in a proposer's values, in the LLM's answer and (but for ``codes``) in the plan
    kind: Literal["float", "choice", "share"]  # share: 0 (off) or a float in [low, high] (the data space's pools)
    default: Any  # the value read from a plan that does not set it
    description: str  # one line, for the LLM prompt and the schema
    low: float | None = None  # float: inclusive bounds
    high: float | None = None
    log: bool = False  # float: sampled on a log scale
    choices: tuple = ()  # choice: the allowed values, in order
    ordered: bool = False  # choice: neighbours are a small move (the random proposer's improve)
    codes: Mapping[str, tuple] | None = None  # choice: name -> what the plan holds in ``plan_field``
    plan_field: str | None = None  # the plan's field, when not ``name``
    perturb: bool = True  # the random proposer's improve may change it
    label: str = ""  # the dimension's name in insights (part of an insight's id: keep it)
    group: str = ""  # how insights name a group of plans along it: "rank {}" -> "rank 8"
    bands: tuple[float, ...] = ()  # float: insights group by these edges ("lr<1e-3", "lr 1e-3..5e-3", ...)

    @property
    def field(self) -> str:
        return self.plan_field or self.name

    def contains(self, value: Any) -> bool:
        if self.kind in ("float", "share"):
            try:
                x = float(value)
            except (TypeError, ValueError):
                return False
            return self.low <= x <= self.high or (self.kind == "share" and x == 0.0)
        return value in self.choices

    def describe(self) -> str:
        if self.kind == "float":
            where = f"a number from {_num(self.low)} to {_num(self.high)}" + (" (log scale)" if self.log else "")
        else:
            where = "one of " + ", ".join(_num(c) if isinstance(c, float) else str(c) for c in self.choices)
        return f"{self.name}: {where}; {self.description}"


TARGETS: dict[str, tuple[str, ...]] = {
    "qv": ("q_proj", "v_proj"),
    "attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
TARGET_LABELS: dict[str, str] = {"qv": "q,v", "attn": "attention", "all": "all linear"}

SPACE: tuple[Dimension, ...] = (  # the order is the samplers' draw order: changing it changes every search
    Dimension("learning_rate", "float", 1e-3, "the peak learning rate", low=1e-4, high=3e-2, log=True,
              label="learning rate", group="lr", bands=(1e-3, 5e-3)),
    Dimension("lora_rank", "choice", 8, "the LoRA rank (alpha is twice the rank)", choices=(2, 4, 8, 16, 32),
              ordered=True, label="rank", group="rank {}"),
    Dimension("targets", "choice", "qv", "LoRA on q,v (qv), on all attention projections (attn) or on all "
              "linear layers (all)", choices=tuple(TARGETS), codes=TARGETS, plan_field="target_modules",
              label="targets", group="targets {}"),
    Dimension("lr_schedule", "choice", "cosine", "the learning-rate schedule after warmup",
              choices=("constant", "linear", "cosine"), label="schedule", group="{} schedule"),
    Dimension("warmup_ratio", "choice", 0.0, "the fraction of the steps spent warming the learning rate up",
              choices=(0.0, 0.05, 0.1), ordered=True, perturb=False, label="warmup", group="warmup {}"),
)
DIMS: dict[str, Dimension] = {d.name: d for d in SPACE}


def _num(x: float) -> str:
    """1e-4 -> '1e-4', 0.05 -> '0.05': short, exact for the one-significant-digit numbers of the space."""
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return f"{x:g}"
    m, e = f"{x:.0e}".split("e")
    return f"{m}e{int(e)}"


# ------------------------------------------------------------------------- values <-> plans
def _decode(d: Dimension, plan: Mapping[str, Any]) -> Any:
    if d.field not in plan:
        return d.default
    raw = plan[d.field]
    if d.codes is None:
        return raw
    mods = tuple(raw)
    return next((name for name, code in d.codes.items() if tuple(code) == mods), d.default)


def _encode(d: Dimension, value: Any) -> Any:
    if d.codes is not None:
        return list(d.codes[value])
    return type(d.default)(value)  # int / float / str, as the plan holds it


def values_of(plan: Mapping[str, Any], steps: int, data=None) -> dict[str, Any]:
    """A plan's values along the space (its defaults where the plan is silent), plus steps and seed;
    with ``data`` (a :class:`~trex.propose.data_space.DataSpace`) its recipe's data values too."""
    out = {d.name: _decode(d, plan) for d in SPACE}
    out["max_steps"] = plan.get("max_steps") or steps
    out["seed"] = plan.get("seed", 0)
    if data is not None:
        out.update(data.values_of(plan.get("data")))
    return out


def to_plan(task: str, steps: int, batch_size: int, values: Mapping[str, Any], data=None,
            adapters: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """The full plan (a dict, to be parsed) for ``values``; what the space does not vary follows the search.
    With ``data`` the recipe follows the data values (``adapters``: node -> adapter, for a cleaning
    step); without, it is the task's train split as is. Raises
    :class:`~trex.propose.data_space.DataChoiceError` for data values no recipe can hold."""
    plan: dict[str, Any] = {"method": "lora"}
    for d in SPACE:
        plan[d.field] = _encode(d, values.get(d.name, d.default))
    plan["lora_alpha"] = float(2 * plan["lora_rank"])
    plan.update(max_steps=int(values.get("max_steps", steps)), batch_size=batch_size, seed=int(values.get("seed", 0)),
                continue_from_parent=bool(values.get("continue_from_parent", False)),
                data=recipe_for_task(task).model_dump(mode="json") if data is None
                else data.to_recipe(values, adapters or {}))
    return plan


def off_space(values: Mapping[str, Any]) -> str | None:
    """Why ``values`` lie outside the space (one line), or None when every dimension is within it."""
    bad = [f"{d.name}={values.get(d.name)!r}" for d in SPACE if not d.contains(values.get(d.name))]
    return f"outside the search space: {', '.join(bad)}" if bad else None


# ----------------------------------------------------------------------------- samplers
def sample(rng: random.Random) -> dict[str, Any]:
    """A uniform draw of every dimension (log-uniform where ``log``), in the space's order."""
    out: dict[str, Any] = {}
    for d in SPACE:
        if d.kind == "float":
            out[d.name] = (math.exp(rng.uniform(math.log(d.low), math.log(d.high))) if d.log
                           else rng.uniform(d.low, d.high))
        else:
            out[d.name] = rng.choice(d.choices)
    return out


def space_filling(n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` points of a scrambled Sobol sequence over the training values (seeded): a
    space-filling design, whose first 2^k points fall each in its own 1/2^k of every dimension's
    range (log scale for a log dimension) — what the first drafts of a search are drawn from, where
    an optimiser has nothing to model yet and independent random draws clump."""
    from scipy.stats import qmc

    m = max(1, math.ceil(math.log2(max(n, 2))))
    pts = qmc.Sobol(d=len(SPACE), scramble=True, seed=seed).random_base2(m)[:n]
    return [{d.name: _from_unit(d, float(u)) for d, u in zip(SPACE, p)} for p in pts]


def _from_unit(d: Dimension, u: float) -> Any:
    if d.kind == "float":
        x = d.low * (d.high / d.low) ** u if d.log else d.low + u * (d.high - d.low)
        return float(min(d.high, max(d.low, x)))
    return d.choices[min(len(d.choices) - 1, int(u * len(d.choices)))]


def optuna_distributions() -> dict[str, Any]:
    """The space as optuna distributions (for ``study.ask`` and ``create_trial``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {d.name: (FloatDistribution(d.low, d.high, log=d.log) if d.kind == "float"
                     else CategoricalDistribution(d.choices)) for d in SPACE}


# --------------------------------------------------------------------------------- the LLM
def describe() -> str:
    """The values the LLM chooses, one line each: the ranges, with no preference among them."""
    return "\n".join(f"- {d.describe()}" for d in SPACE)


@functools.lru_cache(maxsize=64)  # a pydantic model per data space (DataSpace is frozen, hashable)
def plan_choice_model(data=None):
    """The pydantic model of the LLM's answer: a rationale, every dimension (bounded), continue_from_parent;
    with ``data`` (a task's :class:`~trex.propose.data_space.DataSpace`) its data values too."""
    from pydantic import ConfigDict, Field, create_model

    fields: dict[str, Any] = {
        "rationale": (str, Field(min_length=1, max_length=200, description="why this plan, citing node ids"))}
    for d in SPACE:
        if d.kind == "float":
            fields[d.name] = (float, Field(ge=d.low, le=d.high, description=d.description))
        else:
            fields[d.name] = (Literal[d.choices], Field(description=d.description))
    fields["continue_from_parent"] = (bool, Field(description="start from the parent's adapter (same rank and "
                                                              "targets)"))
    for d in (data.dims if data is not None else ()):
        if d.kind == "share":
            fields[d.name] = (float, Field(ge=0, le=d.high, description=d.description))
        else:
            fields[d.name] = (Literal[d.choices], Field(description=d.description))
    if data is not None and data.cleaning:
        fields["clean_node"] = (str | None, Field(default=None, max_length=64,
                                                  description="the node whose adapter scores the rows, when "
                                                              "clean_fraction > 0 (default: the parent)"))
    return create_model(
        "PlanChoice", __config__=ConfigDict(extra="forbid"),
        __doc__="What the LLM chooses; the rest of the plan follows from the task and the search config.",
        **fields)


# ------------------------------------------------------------------------------ insights
def targets_label(modules) -> str:
    """Insights group target modules by how many there are (a plan may name its own set)."""
    n = len(tuple(modules))
    by_count = {len(TARGETS[k]): TARGET_LABELS[k] for k in TARGETS}
    return by_count.get(n, f"{n} modules")


def _band(d: Dimension, x: float) -> str:
    edges, short = d.bands, d.group
    if x < edges[0]:
        return f"{short}<{_num(edges[0])}"
    for lo, hi in zip(edges, edges[1:]):
        if x < hi:
            return f"{short} {_num(lo)}..{_num(hi)}"
    return f"{short}>={_num(edges[-1])}"


def insight_key(d: Dimension, plan: Mapping[str, Any]) -> str:
    """The group a plan falls in along ``d``, as insights name it ("lr<1e-3", "rank 8", "targets q,v")."""
    if d.codes is not None:
        return d.group.format(targets_label(plan.get(d.field, ())))
    value = plan.get(d.field, d.default)
    if d.bands:
        return _band(d, float(value))
    if isinstance(d.default, float):
        return d.group.format(_num(float(value)))
    return d.group.format(type(d.default)(value))


__all__ = ["DEFAULT_TRIAL_STEPS", "DIMS", "Dimension", "SPACE", "TARGETS", "TARGET_LABELS", "describe",
           "insight_key", "off_space", "optuna_distributions", "plan_choice_model", "sample", "targets_label",
           "to_plan", "values_of"]
