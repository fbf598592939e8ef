"""The data half of the search space: what a plan's recipe may change, per task.

The training values (:mod:`trex.propose.space`) are the same for every task; the data values
depend on what the task offers:

* ``pool_<name>`` for each pool the task declares: the share of the training rows drawn from it
  (0 = not mixed in; otherwise 0.01..0.5 on a log scale). Conditional: a sampler first decides
  whether to mix the pool at all, then how much (optuna sees it as a conditional parameter);
* ``template``: the training prompt template, among the task's ``templates`` (when it gives two or more);
* ``balance_labels``: for classification tasks (primary metric accuracy or macro-F1);
* ``rows``: cap the training rows ("all", or a seeded subset);
* ``dedup``: drop exact duplicates or keep them;
* ``clean_fraction`` with ``clean_node``: drop that share of the rows a node's adapter finds hardest
  (a standard fix for label noise). Only offered once some node has an adapter; the recipe records
  the node *and its adapter hash*, so it stays content-addressed.

With every value at its default the recipe is exactly the task's default (``task:<task>/train``, as
before there was a data space), so a plan that does not touch data hashes as it always did.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Mapping

from trex.propose.space import Dimension, _num

CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
SHARE_LOW, SHARE_HIGH = 0.01, 0.5
ROWS = ("all", 256, 1024)
CLEAN_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4)


class DataChoiceError(ValueError):
    """Data values that cannot become a recipe (a cleaning node without an adapter, an unknown pool)."""


@dataclass(frozen=True)
class DataSpace:
    """The data dimensions of one task (built from its pools, templates and primary metric)."""

    task: str
    pools: tuple[tuple[str, str], ...] = ()  # (name, description)
    templates: tuple[str, ...] = ()  # the choices; the first is the default
    classification: bool = False
    cleaning: bool = True  # offer clean_fraction (the LLM's schema leaves it out until a node has an adapter)

    @classmethod
    def for_task(cls, task) -> "DataSpace":
        """From a :class:`~trex.tasks.model.Task` (its pools, templates, primary metric)."""
        templates = tuple(dict.fromkeys(("{prompt}", *task.templates))) if task.templates else ()
        return cls(task=task.name, pools=tuple((p.name, p.description) for p in task.pools),
                   templates=templates if len(templates) > 1 else (),
                   classification=task.primary_metric.name in CLASSIFICATION_METRICS)

    # ------------------------------------------------------------------------ dimensions
    @property
    def dims(self) -> tuple[Dimension, ...]:
        out = [Dimension(f"pool_{name}", "share", 0.0, f"share of the training rows drawn from pool {name!r} "
                         f"({desc}); 0 = not mixed in", low=SHARE_LOW, high=SHARE_HIGH, log=True,
                         label=f"pool {name}", group=f"pool {name} {{}}")
               for name, desc in self.pools]
        if self.templates:
            out.append(Dimension("template", "choice", self.templates[0], "the training prompt template",
                                 choices=self.templates, label="template", group="template {}"))
        if self.classification:
            out.append(Dimension("balance_labels", "choice", False, "keep as many rows per label as the rarest has",
                                 choices=(False, True), label="balance", group="balance {}"))
        out.append(Dimension("rows", "choice", "all", "cap the training rows (a seeded subset)", choices=ROWS,
                             label="rows", group="rows {}"))
        out.append(Dimension("dedup", "choice", True, "drop exact duplicate rows", choices=(True, False),
                             label="dedup", group="dedup {}"))
        if self.cleaning:
            out.append(Dimension("clean_fraction", "choice", 0.0, "drop this share of the rows that clean_node's "
                                 "adapter finds hardest (label noise)", choices=CLEAN_FRACTIONS, ordered=True,
                                 label="cleaning", group="clean {}"))
        return tuple(out)

    def dim(self, name: str) -> Dimension:
        return next(d for d in self.dims if d.name == name)

    def defaults(self) -> dict[str, Any]:
        out = {d.name: d.default for d in self.dims}
        out["clean_node"] = None
        return out

    def describe(self) -> str:
        lines = [f"- {_describe(d)}" for d in self.dims]
        if self.cleaning:
            lines.append("- clean_node: the id of a node with an adapter, used when clean_fraction > 0 "
                         "(default: the parent)")
        return "\n".join(lines)

    # ------------------------------------------------------------------------ values <-> recipes
    def values_of(self, recipe: Mapping[str, Any] | None) -> dict[str, Any]:
        """A recipe's values along the data space (defaults where it is silent or outside it)."""
        v = self.defaults()
        if not recipe:
            return v
        sources = list(recipe.get("sources") or ())
        total = sum(float(s.get("weight", 1.0)) for s in sources) or 1.0
        for s in sources:
            uri = str(s.get("uri", ""))
            for name, _ in self.pools:
                if uri == f"pool:{self.task}/{name}":
                    v[f"pool_{name}"] = float(s.get("weight", 1.0)) / total
        if self.templates and recipe.get("prompt_template") in self.templates:
            v["template"] = recipe["prompt_template"]
        if self.classification:
            v["balance_labels"] = bool(recipe.get("balance_labels", False))
        v["rows"] = recipe.get("max_rows") or "all"
        v["dedup"] = bool(recipe.get("dedup", True))
        clean = recipe.get("clean") or None
        if clean:
            v["clean_fraction"] = float(clean.get("fraction", 0.0))
            v["clean_node"] = clean.get("node")
        return v

    def to_recipe(self, values: Mapping[str, Any], adapters: Mapping[str, str | None]) -> dict[str, Any]:
        """The recipe (a dict, parsed with the plan) for ``values``; ``adapters``: node id -> adapter hash."""
        shares = {name: float(values.get(f"pool_{name}") or 0.0) for name, _ in self.pools}
        used = {k: x for k, x in shares.items() if x > 0}
        if sum(used.values()) >= 1.0:
            raise DataChoiceError(f"pool shares add up to {sum(used.values()):.2f}; they must leave room for the "
                                  f"train split")
        train_w = 1.0 - sum(used.values())
        sources = [{"uri": f"task:{self.task}/train", "weight": 1.0 if not used else round(train_w, 6)}]
        sources += [{"uri": f"pool:{self.task}/{k}", "weight": round(x, 6)} for k, x in sorted(used.items())]
        recipe: dict[str, Any] = {"sources": [{"uri": s["uri"]} if s["weight"] == 1.0 else s for s in sources]}
        if used:
            recipe["mix"] = "first"
        if self.templates and values.get("template", self.templates[0]) != "{prompt}":
            recipe["prompt_template"] = values["template"]
        if self.classification and values.get("balance_labels"):
            recipe["balance_labels"] = True
        rows = values.get("rows", "all")
        if rows != "all" and rows is not None:
            recipe["max_rows"] = int(rows)
        if values.get("dedup", True) is False:
            recipe["dedup"] = False
        frac = float(values.get("clean_fraction") or 0.0)
        if frac > 0:
            node = values.get("clean_node")
            if not node:
                raise DataChoiceError("clean_fraction > 0 needs clean_node: the node whose adapter scores the rows")
            if node not in adapters:
                raise DataChoiceError(f"clean_node {node!r} is not a node of this search")
            if not adapters[node]:
                raise DataChoiceError(f"clean_node {node!r} has no adapter (it was not trained)")
            recipe["clean"] = {"node": node, "adapter": adapters[node], "fraction": frac}
        return recipe

    def off_space(self, values: Mapping[str, Any]) -> str | None:
        bad = [f"{d.name}={values.get(d.name)!r}" for d in self.dims if d.name in values and not d.contains(values[d.name])]
        return f"outside the data space: {', '.join(bad)}" if bad else None

    # ------------------------------------------------------------------------ samplers
    def sample(self, rng: random.Random, cleanable: str | None) -> dict[str, Any]:
        """A draw of every data dimension: each pool mixed in or not (a coin), then its share (log-uniform);
        a cleaning step only when ``cleanable`` (a node with an adapter) is given."""
        v = self.defaults()
        for d in self.dims:
            if d.kind == "share":
                v[d.name] = _log_uniform(rng, d.low, d.high) if rng.random() < 0.5 else 0.0
            elif d.name == "clean_fraction":
                if cleanable is not None:
                    v[d.name] = rng.choice(d.choices)
                    v["clean_node"] = cleanable if v[d.name] > 0 else None
            else:
                v[d.name] = rng.choice(d.choices)
        return v

    def perturb(self, v: dict[str, Any], rng: random.Random, cleanable: str | None) -> str:
        """Change one data value of ``v`` in place (a small move); returns its name."""
        names = [d.name for d in self.dims if d.name != "clean_fraction" or cleanable is not None]
        name = rng.choice(names)
        d = self.dim(name)
        if d.kind == "share":
            cur = float(v.get(name) or 0.0)
            v[name] = (_log_uniform(rng, d.low, d.high) if cur == 0 else
                       rng.choice([0.0, min(d.high, cur * 2), max(d.low, cur / 2)]))
        else:
            others = [c for c in d.choices if c != v.get(name)]
            v[name] = rng.choice(others)
            if name == "clean_fraction":
                v["clean_node"] = cleanable if v[name] > 0 else None
        return name

    def suggest(self, trial, cleanable: str | None) -> dict[str, Any]:
        """Optuna's define-by-run draw: a pool's share is asked only when the pool is mixed in."""
        v = self.defaults()
        for d in self.dims:
            if d.kind == "share":
                if trial.suggest_categorical(f"{d.name}_on", (False, True)):
                    v[d.name] = trial.suggest_float(d.name, d.low, d.high, log=True)
            elif d.name == "clean_fraction":
                if cleanable is not None:
                    v[d.name] = trial.suggest_categorical(d.name, d.choices)
                    v["clean_node"] = cleanable if v[d.name] > 0 else None
            else:
                v[d.name] = trial.suggest_categorical(d.name, d.choices)
        return v

    def optuna_params(self, v: Mapping[str, Any], with_clean: bool):
        """(params, distributions) of a told trial: the conditional parameters it had."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        params, dists = {}, {}
        for d in self.dims:
            if d.kind == "share":
                on = float(v.get(d.name) or 0.0) > 0
                params[f"{d.name}_on"], dists[f"{d.name}_on"] = on, CategoricalDistribution((False, True))
                if on:
                    params[d.name] = min(d.high, max(d.low, float(v[d.name])))
                    dists[d.name] = FloatDistribution(d.low, d.high, log=True)
            elif d.name == "clean_fraction":
                if with_clean:
                    params[d.name], dists[d.name] = v.get(d.name, 0.0), CategoricalDistribution(d.choices)
            else:
                params[d.name], dists[d.name] = v.get(d.name, d.default), CategoricalDistribution(d.choices)
        return params, dists


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _describe(d: Dimension) -> str:
    if d.kind == "share":
        return f"{d.name}: 0, or a number from {_num(d.low)} to {_num(d.high)}; {d.description}"
    return d.describe()


def adapters_of(tree) -> dict[str, str | None]:
    """node id -> its adapter (None when it has none): what a cleaning step may name."""
    return {nid: n.adapter for nid, n in tree.nodes.items()}


def cleanable_node(tree, parent=None) -> str | None:
    """The node whose adapter a sampled cleaning step uses: the parent when it has one, else the best
    feasible node with an adapter (None: no node has one yet)."""
    if parent is not None and parent.adapter:
        return parent.node_id
    best = tree.best
    if best is not None and best.adapter:
        return best.node_id
    return next((nid for nid in tree.order if tree.nodes[nid].adapter), None)


__all__ = ["CLASSIFICATION_METRICS", "DataChoiceError", "DataSpace", "adapters_of", "cleanable_node"]
