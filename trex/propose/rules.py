"""The ``rules`` proposer: candidate edits a practitioner would make, from the evidence in the tree,
with the numbers left to TPE — the "rules + optimiser, no LLM" arm of the Researcher.

For an ``improve`` of a parent the evidence is read from the fold: whether the parent breaks a
constraint and by how much, its training curve (first and final loss), its score against the base
model's, and what its plan already does with the data; and, from the task's files, which training
source is written in the validation prompts' format (:func:`trex.propose.evidence.format_match`).
Each rule that fires proposes one edit of the parent's values with a hypothesis stating what it
should change:

* a secondary metric below its bound and a pool to replay → mix the pool in (or double its share);
* the parent's rows not in the validation prompts' format while a template or a pool is → train in
  it (``match-format``: the template first, then the pool; an adapter that fits its rows continued);
* the final training loss above the first (the loss rose: it diverged) → a tenth of the learning rate,
  retrained from the base (a higher lr, as for underfitting, made FT-Bench's orders draft worse still);
* the final training loss still high (above half the first: underfitting) → a higher learning rate
  (x3; x10 when the loss barely moved, under 10% down: the lr is then orders of magnitude low);
* the parent saw each of its capped rows :data:`MANY_EPOCHS` times or more and is not underfitting
  (the loss fell: it memorises them) → continue its adapter on all the train rows;
* the training loss still falling when the trial ended (:func:`~trex.search.tree.still_learning`)
  → a continuation of the parent's adapter for as many steps again;
* the loss stalled far above fitting the rows → a third of the learning rate (it was too high),
  unless the tree already retrained a parent at this lr or a higher one at a lower lr and the loss did
  not fall (:func:`lower_lr_refuted`: the stall is then not the lr's);

  once :data:`TPE_MIN_SCORED` nodes are scored, a rule that moves the learning rate takes TPE's
  (the parent's other values held: the structure the rule chose) when TPE's lies on the rule's side
  of the parent's by more than a grid step, and a pool's share is TPE's the same way;
* the training loss low and no longer falling but the score low (the rows teach the wrong thing:
  label noise), or stalled where a lower lr already failed to lower it → clean by loss with the
  parent's adapter (or clean more); a loss still falling says
  the rows are not learnt yet, and cleaning would drop the ones not learnt (the demo's n5 cleaned a
  node still learning, 0.17 -> 0.155, while continuing it reached 0.675);
* a pool the parent never used → try it (a pool written in the evaluation's format helps a shift);
* otherwise, for a parent that is not underfitting and whose loss stopped falling → continue its
  adapter at a lower learning rate (a second stage); a loss still falling is continued as it is.

Candidates are ranked in that order; the first that is not a repeat of a plan already tried is
proposed. A repeat is the same structure (operator, continuation and of which parent, data sources, cleaning, rank,
targets, schedule) with every number within one step of the grid: learning rate within 10%, a pool
share within 20%. Drafts, debugs and an improve where every candidate repeats take TPE's suggestion
(:func:`trex.propose.baselines.propose_optuna`) — deduplicated the same way, re-asked with other
seeds a few times before the repeat is allowed through (and said so).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from trex.propose.evidence import FORMAT_MATCH, FormatMatch, cut
from trex.propose.baselines import Hypothesis, Proposal, _clamp, finish, propose_optuna, propose_random
from trex.propose.space import DIMS, values_of
from trex.search.tree import FIT_RATIO, is_number, line_first_loss, line_start, still_learning

_LR = DIMS["learning_rate"]
BARELY = 0.1  # a loss that fell by less than this fraction of its start "barely moved"
LR_STEP = 1.10  # learning rates within 10% are the same point of the grid
SHARE_STEP = 1.20
REPLAY_FLOOR = 0.2
"""The least share a rule mixes a pool in at (a replay, a pool tried, a pool in the validation format).
On the constrained arith-sub-retain (docs/results/ftbench-retain15) replay at shares of 0.01-0.11 (TPE's, drawn with no feasible node yet) left addition at 0.005-0.48 (median
~0.1), at 0.2-0.44 at 0.55-0.81 (one parent at lr 1.3e-2 excepted); the bound was 0.9."""


@dataclass(frozen=True)
class Candidate:
    edit: str  # short name: "replay", "match-format", "higher-lr", "more-rows", "continue", "lower-lr", "clean", ...
    values: Mapping[str, Any]
    hypothesis: str
    evidence: str
    metric: str = ""  # the prediction: ``metric op threshold`` on validation ("" = the primary metric)
    op: str = ">"
    threshold: float = 0.0
    tools: tuple[str, ...] = ()  # the evidence tools it rests on (their calls are cited by the hypothesis)


# which evidence tool each edit reads
EDIT_TOOLS = {"replay": ("constraint_slack",), "higher-lr": ("training_curve",), "lower-lr": ("training_curve",),
              "clean": ("training_curve", "bad_cases"), "try-pool": ("data_profile",),
              "continue": ("training_curve",), "more-rows": ("training_curve", "data_profile"),
              "match-format": ("prompt_format", "training_curve")}




@dataclass
class Evidence:
    node_id: str
    score: float | None
    base: float | None
    first_loss: float | None
    final_loss: float | None
    violations: list = field(default_factory=list)  # (metric, value, bound)

    @property
    def underfit(self) -> bool:
        return self.first_loss is not None and self.final_loss is not None and self.final_loss > 0.5 * self.first_loss

    @property
    def diverged(self) -> bool:
        """The loss ended above where it started: the learning rate is too high, not too low (FT-Bench's
        orders draft at lr 0.0128 went 0.886 -> 6.22 and scored 0; read as underfitting, ten times the lr
        went to 9.02 and 0 again)."""
        return self.first_loss is not None and self.final_loss is not None and self.final_loss > self.first_loss

    @property
    def barely_moved(self) -> bool:
        """The loss hardly fell (less than :data:`BARELY` of its start): the learning rate is not a bit
        low but an order of magnitude or more."""
        return self.first_loss is not None and self.final_loss is not None and \
            self.final_loss > (1 - BARELY) * self.first_loss

    @property
    def fits(self) -> bool:
        """The training rows are fitted (the loss fell below :data:`FIT_RATIO` of its start): a low score
        then says the rows teach the wrong thing, which cleaning can help; short of it, the node is
        still learning, and cleaning it only removes rows it had not learnt yet."""
        return self.first_loss is not None and self.final_loss is not None and \
            self.final_loss < FIT_RATIO * self.first_loss

    def line(self) -> str:
        parts = [f"{self.node_id}: score {_f(self.score)} (base {_f(self.base)})",
                 f"train loss {_f(self.first_loss)} -> {_f(self.final_loss)}"]
        parts += [f"{m} {_f(v)} < {b:g} required" for m, v, b in self.violations]
        return "; ".join(parts)


MANY_EPOCHS = 10
"""Passes over its capped rows past which a loss that fell reads as memorising them: fine-tuning runs
usually take 1 to 5 (the demo's 256-row drafts took 37 and scored 0.1, and a continuation on the same
rows stayed there; its 1,024-row draft, 9, still gained 0.17 -> 0.675 when continued on the same rows)."""


def _rows_cap(plan) -> Any:
    return (plan.get("data") or {}).get("max_rows") if isinstance(plan.get("data"), Mapping) else None


def epochs(tree, node) -> float | None:
    """How many times the adapter ``node`` trained saw each of its rows: the steps of its line (a
    continuation adds its parent's, while it trained on the same row cap) times the batch, over the
    rows it trained on (``examples``); a plan given in epochs adds its epochs."""
    rows = dict(node.train_metrics).get("examples")
    if not is_number(rows) or rows <= 0:
        return None
    cap = _rows_cap(node.plan)
    seen, n, visited = 0.0, node, set()
    while n is not None and n.node_id not in visited and _rows_cap(n.plan) == cap:
        visited.add(n.node_id)
        plan = n.plan
        steps, batch, accum = plan.get("max_steps"), plan.get("batch_size", 32), plan.get("grad_accum", 1)
        if is_number(steps) and is_number(batch) and is_number(accum):
            seen += float(steps) * float(batch) * float(accum) / float(rows)
        elif is_number(plan.get("epochs")):
            seen += float(plan["epochs"])
        else:
            return None
        n = tree.nodes.get(n.parent_id) if plan.get("continue_from_parent") and n.parent_id else None
    return seen


def _trend(node) -> str:
    t = node.loss_trend
    return "no sampled curve" if t is None else f"loss {_f(t[0])} in the middle third, {_f(t[1])} in the last"


def _f(x) -> str:
    return "-" if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else f"{x:.3g}"


def evidence(tree, node) -> Evidence:
    tm = dict(node.train_metrics)
    metrics = dict(node.metrics)
    viol = []
    for c in tree.started.constraints:
        v = metrics.get(c.metric)
        if c.at_least is not None and (v is None or v < c.at_least):
            viol.append((c.metric, v, c.at_least))
    num = lambda x: float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None  # noqa: E731
    return Evidence(node.node_id, node.score, tree.base_score, num(line_first_loss(tree, node)),
                    num(tm.get("final_loss")), viol)


def candidates(tree, parent, data, steps: int, share_for=None, lr_for=None, formats=None) -> list[Candidate]:
    """The edits the evidence on ``parent`` suggests, best first (values are the parent's, edited).
    ``share_for(pool) -> share | None``: the optimiser's share for mixing a pool in (None: the rule's 0.2).
    ``lr_for() -> lr | None``: the optimiser's learning rate for this parent's structure; a rule that moves
    the lr takes it when it moves the way the rule says by more than a grid step (else the rule's factor).
    ``formats``: the validation prompts' format against each training source's
    (:func:`trex.propose.evidence.format_match`), or None."""
    ev = evidence(tree, parent)
    v0 = values_of(parent.plan, steps, data)
    pools = [d.name for d in data.dims if d.kind == "share"] if data is not None else []
    out: list[Candidate] = []

    better = float(ev.score) if ev.score is not None else 0.0
    higher = tree.higher_is_better

    def add(edit, changes, hypothesis, metric="", op=None, threshold=None):
        out.append(Candidate(edit, {**v0, **changes}, hypothesis, ev.line(), metric,
                             op or (">" if higher else "<"), better if threshold is None else threshold,
                             EDIT_TOOLS.get(edit, ())))

    shares: dict[str, float | None] = {}

    def first_share(p: str) -> float:
        if p not in shares:
            shares[p] = share_for(p) if share_for is not None else None
        return shares[p] or 0.2

    for metric, value, bound in ev.violations:
        for p in pools:
            share = float(v0.get(p) or 0.0)
            # the optimiser's share, or twice the parent's, but never below REPLAY_FLOOR: a metric this far
            # below its bound is not moved by a sliver of replay (TPE, with few feasible nodes, drew 0.01-0.04)
            new = max(first_share(p), REPLAY_FLOOR) if share == 0 else min(0.5, max(share * 2, REPLAY_FLOOR))
            if new != share:
                add("replay", {p: new}, f"{parent.node_id} has {metric} {_f(value)} < {bound:g}: mixing "
                                        f"{p[5:]} at {new:g} raises {metric} to >= {bound:g}", metric, ">=", bound)
    out += _format_edits(tree, parent, ev, v0, data, steps, formats, first_share)
    tpe_lr: list[float | None] = []

    def optimiser_lr(higher_lr: bool) -> float | None:
        """TPE's lr if it lies beyond a grid step on the rule's side of the parent's, else None."""
        if lr_for is None:
            return None
        if not tpe_lr:
            tpe_lr.append(lr_for())
        x, lr0 = tpe_lr[0], float(v0["learning_rate"])
        if x is None or not (x > lr0 * LR_STEP if higher_lr else x < lr0 / LR_STEP):
            return None
        return x

    if ev.diverged:
        lr = _clamp(_LR, v0["learning_rate"] / 10)
        how = "at a tenth of the lr"
        if (t := optimiser_lr(False)) is not None and t <= float(v0["learning_rate"]) / 3:  # a cut that counts
            lr, how = t, f"at lr {t:.3g} (the optimiser's, below {float(v0['learning_rate']):.3g})"
        if lr != v0["learning_rate"]:  # retrained from the base: the diverged adapter holds nothing to keep
            add("lower-lr", {"learning_rate": lr, "continue_from_parent": False},
                f"{parent.node_id}'s loss rose ({_f(ev.first_loss)} -> {_f(ev.final_loss)}): the lr is too high; "
                f"{how} the loss falls and the score rises above {_f(ev.score)}")
    elif ev.underfit:
        factor = 10 if ev.barely_moved else 3
        lr = _clamp(_LR, v0["learning_rate"] * factor)
        how = f"lr x{factor}"
        if (t := optimiser_lr(True)) is not None:
            lr, how = t, f"lr {t:.3g} (the optimiser's, above {float(v0['learning_rate']):.3g})"
        if lr != v0["learning_rate"]:
            add("higher-lr", {"learning_rate": lr}, f"{parent.node_id} underfits (loss {_f(ev.first_loss)} -> "
                                                    f"{_f(ev.final_loss)}): {how} raises the score above "
                                                    f"{_f(ev.score)}")
    learning = still_learning(tree, parent)
    passes = epochs(tree, parent)
    rows = v0.get("rows", "all") if data is not None else "all"
    examples = dict(parent.train_metrics).get("examples")
    capped = isinstance(rows, int) and is_number(examples) and examples >= rows  # a cap that bit ("all": none)
    if (capped and passes is not None and passes >= MANY_EPOCHS and not ev.underfit
            and "all" in data.dim("rows").choices):
        # the loss fell on rows seen over and over: the adapter memorises them; more steps on the same
        # few rows do not generalise (the rules' demo continued a 256-row draft: val 0.1 -> 0.1), more
        # rows do; continuing the adapter keeps what its steps learnt, at its line's training values
        # (not a second stage's third of the lr and half the steps)
        changes: dict[str, Any] = {"rows": "all", **line_training(tree, parent, steps, data)}
        if parent.adapter:
            changes.update(continue_from_parent=True)
        add("more-rows", changes,
            f"{parent.node_id} saw each of its {rows} rows about {passes:.0f} times (loss {_f(ev.first_loss)} -> "
            f"{_f(ev.final_loss)}) yet scores {_f(ev.score)}: it memorises them; "
            f"{'continued' if parent.adapter else 'trained'} on all the train rows it scores above {_f(ev.score)}")
    if learning and parent.adapter and not ev.diverged:  # the loss was still falling: more steps on the adapter
        add("continue", {"continue_from_parent": True, "max_steps": int(v0["max_steps"])},
            f"{parent.node_id} was still learning ({_trend(parent)}): {v0['max_steps']} more steps raise the "
            f"score above {_f(ev.score)}")
    stall_not_lr = lower_lr_refuted(tree, steps, data, like=v0)
    if stall_not_lr is not None and float(v0["learning_rate"]) > stall_not_lr[0] * LR_STEP:
        stall_not_lr = None  # tested below a lower lr only: this parent's higher lr may still be the cause
    if not learning and not ev.underfit and ev.final_loss is not None and not ev.fits and stall_not_lr is None:
        # the loss fell, then stalled well above a fit: the lr is too high (one that never fell is too low)
        lr = _clamp(_LR, v0["learning_rate"] / 3)
        how = "at a third of the lr"
        if (t := optimiser_lr(False)) is not None:
            lr, how = t, f"at lr {t:.3g} (the optimiser's, below {float(v0['learning_rate']):.3g})"
        if lr != v0["learning_rate"]:
            add("lower-lr", {"learning_rate": lr},
                f"{parent.node_id}'s loss stalled at {_f(ev.final_loss)} ({_trend(parent)}), far from fitting its "
                f"rows: {how} it keeps falling and the score rises above {_f(ev.score)}")
    # a stall the lr did not cause (a lower lr already failed to lower it) is the rows' as much as a fit is
    noise = ev.fits or (stall_not_lr is not None and not ev.underfit and ev.final_loss is not None)
    if data is not None and parent.adapter and noise and not learning:
        frac = float(v0.get("clean_fraction") or 0.0)
        nxt = next((c for c in data.dim("clean_fraction").choices if c > max(frac, 0.1)), None)
        # cleaning retrains from the base: with the training values of the line's start, not a second
        # stage's third of the lr and half the steps (the demo's n6 retrained at those and scored 0.02)
        training = line_training(tree, parent, steps, data)
        if nxt is not None:
            why = (f"fits its rows (loss {_f(ev.first_loss)} -> {_f(ev.final_loss)})" if ev.fits else
                   f"stalls at loss {_f(ev.final_loss)} that a lower lr did not lower ({stall_not_lr[1]})")
            add("clean", {**training, "clean_fraction": nxt, "clean_node": parent.node_id},
                f"{parent.node_id} {why} yet scores {_f(ev.score)}: the rows it finds hardest are noise, and "
                f"dropping {nxt:g} of them raises the score above {_f(ev.score)}")
    for p in pools:
        if not float(v0.get(p) or 0.0):
            # at a sliver of the rows a pool is not tried: TPE's 0.011 and 0.019 (noisy17) and 0.0175
            # (shift18) changed nothing; the same floor as a replay
            new = max(first_share(p), REPLAY_FLOOR)
            add("try-pool", {p: new}, f"pool {p[5:]} adds what the train split lacks: at {new:.3g} the score rises "
                                      f"above {_f(ev.score)}")
    # refining an adapter that learnt little at a lower lr gains nothing; one whose loss still falls gains
    # from more steps at its lr (the continuation above), not from a third of it for half the steps: the
    # demo's LLM chose the second stage for such a node twice (0.145 -> 0.225, where continuing gained 0.3)
    if parent.adapter and not ev.underfit and not learning:
        add("continue", {"continue_from_parent": True, "learning_rate": _clamp(_LR, v0["learning_rate"] / 3),
                         "max_steps": max(1, int(v0["max_steps"]) // 2)},
            f"a second stage at a third of the lr refines {parent.node_id} above {_f(ev.score)}")
    return out


def line_training(tree, parent, steps: int, data) -> dict[str, Any]:
    """The training values (and steps) of the draft that started ``parent``'s line of continuations, or
    nothing when ``parent`` is that draft: what more-rows, cleaning and match-format train with, not a
    second stage's third of the lr and half the steps."""
    start = line_start(tree, parent)
    if start is parent:
        return {}
    return {k: x for k, x in values_of(start.plan, steps, data).items() if k in DIMS or k == "max_steps"}


def _format_edits(tree, parent, ev: Evidence, v0: Mapping[str, Any], data, steps: int, formats,
                  first_share) -> list[Candidate]:
    """Train in the validation prompts' format when the parent's data is not in it and a template or a
    pool is: a practitioner makes the training prompts look like the ones to be answered. An adapter
    that learnt the task in the other format (its loss fits its rows) is continued in the new one; one
    that did not is retrained from the base with its line's first values. The template goes first: it
    writes every train row in the format (FT-Bench's headroom on arith-sub-shift, val / test: template
    0.106 / 0.118, mean of three seeds 0.167; a 30% target pool 0.116 / 0.096; the best of 21
    hyperparameter-only plans 0.024 / 0.018)."""
    if formats is None or data is None:
        return []
    template = str(v0.get("template") or "{prompt}")
    pools = [d.name for d in data.dims if d.kind == "share"]
    used = [p for p in pools if float(v0.get(p) or 0.0) > 0]
    mixed = min(1.0, sum(float(v0[p]) for p in used))
    # the validation format's share of the parent's rows, weighted by their shares in its mix; a template
    # writes the pool rows too, and pools were measured as they are (so under another template: none)
    have = formats.share("train" if template == "{prompt}" else f"template {template!r}") * (1 - mixed) + \
        sum(formats.share(f"pool {p[5:]}") * float(v0[p]) for p in used if template == "{prompt}")
    if have >= FORMAT_MATCH:
        return []  # the parent already trains on rows in the validation format
    carry = parent.adapter is not None and ev.fits
    training = line_training(tree, parent, steps, data)  # not a second stage's third of the lr, half the steps
    how = (f"continued on its adapter (it fits its rows: loss {_f(ev.first_loss)} -> {_f(ev.final_loss)})"
           if carry else "retrained")
    out = []

    def add(edit_values, source, share):
        out.append(Candidate("match-format", {**v0, **training, **edit_values,
                                              **({"continue_from_parent": True} if carry else {})},
                             f"{formats.share(source):.0%} of validation prompts are written like "
                             f"{cut(repr(formats.val_shape))}, {have:.0%} of {parent.node_id}'s training rows are: "
                             f"{how} on {cut(source)}{share} it scores above {_f(ev.score)}",
                             ev.line(), "", ">" if tree.higher_is_better else "<",
                             float(ev.score) if ev.score is not None else 0.0, EDIT_TOOLS["match-format"]))

    if data.templates:
        for tpl in data.templates:
            if tpl != template and formats.share(f"template {tpl!r}") >= FORMAT_MATCH:
                add({"template": tpl}, f"template {tpl!r}", "")
                break
    for p in pools:
        if p not in used and formats.share(f"pool {p[5:]}") >= FORMAT_MATCH:
            share = max(first_share(p), REPLAY_FLOOR)
            add({p: share, **({"template": "{prompt}"} if data.templates else {})}, f"pool {p[5:]}",
                f" mixed in at {share:.3g}")  # as measured: its rows as they are
            break
    return out


def lower_lr_refuted(tree, steps: int, data, like: Mapping[str, Any] | None = None) -> tuple[float, str] | None:
    """The highest learning rate from which this tree already retrained at a lower one and the loss did
    not fall below the parent's (``(lr, "n5 at lr 2e-3 ended at loss 1.56, n2 at 6e-3 at 1.45")``), or None.

    The lower-lr rule reads a stalled loss as a learning rate too high; such a child is the test of
    that reading and it failed: the stall is the rows' (label noise) or the steps', not the lr's, and it
    will be no more the lr's at a parent's lr lower still. In the committed FT-Bench logs (every arm: 44
    such retrains) the 11 whose loss fell below the parent's won 10 and tied 1; the 33 whose loss rose
    lost 30, tied 1 and gained twice (0.005, 0.01). Replayed on those trees, this gate would have
    stopped 5 of the losses and none of the gains (docs/search.md, "When lower-lr is offered"). A
    retrain is a child that does not continue its parent and changes nothing but a lower learning
    rate (a grid step or more), whichever proposer made it, of a parent trained from the base model (a
    continuation's final loss is its whole line's: a retrain of its values from the base is no test).
    With ``like`` (a parent's values) only retrains on the same data count: a stall is the rows'."""
    worst: tuple[float, str] | None = None
    for n in tree.nodes.values():
        p = tree.nodes.get(n.parent_id) if n.parent_id else None
        if p is None or not n.plan or not p.plan or n.plan.get("continue_from_parent") or \
                p.plan.get("continue_from_parent"):
            continue
        a, b = values_of(p.plan, steps, data), values_of(n.plan, steps, data)
        la, lb = a.pop("learning_rate", None), b.pop("learning_rate", None)
        if not (is_number(la) and is_number(lb)) or lb * LR_STEP >= la or a != b:
            continue
        if like is not None and _data_values(a) != _data_values(like):
            continue
        fa, fb = dict(p.train_metrics).get("final_loss"), dict(n.train_metrics).get("final_loss")
        if is_number(fa) and is_number(fb) and fb >= fa and (worst is None or la > worst[0]):
            worst = (float(la), f"{n.node_id} at lr {lb:.2g} ended at loss {_f(fb)}, {p.node_id} at {la:.2g} "
                                f"at {_f(fa)}")
    return worst


def _data_values(values: Mapping[str, Any]) -> dict:
    """Which rows a plan trains on, for :func:`lower_lr_refuted`: rows, pools and template (its values
    outside the training dimensions and the steps). Cleaning is left out: it drops some of the same rows,
    and a stall on them is still theirs (noisy19's rules-s1 cleaned 0.2, then 0.3: 0.095, 0.17)."""
    return {k: x for k, x in values.items()
            if k not in DIMS and k not in ("max_steps", "clean_node", "clean_fraction")}


# ------------------------------------------------------------------------------------- repeats
def signature(values: Mapping[str, Any]) -> tuple:
    """What makes two plans the same point: the structure exactly, the numbers on a coarse grid."""
    out = []
    for k in sorted(values):
        x = values[k]
        if k == "learning_rate":
            x = round(math.log(float(x)) / math.log(LR_STEP))
        elif k.startswith("pool_"):
            x = 0 if not x else round(math.log(float(x)) / math.log(SHARE_STEP))
        elif isinstance(x, float):
            x = round(x, 3)
        out.append((k, x))
    return tuple(out)


def _continues(plan: Mapping[str, Any], parent_id: str | None) -> dict:
    """What a plan continues, as part of its signature: the parent whose adapter it trains on (False for a
    plan from the base model). Continuing n5 with n5's own values is a new point, not a repeat of n5 (the
    demo's continuation of a continuation was refused as one, leaving only a second stage at a third of the lr)."""
    return {"continue_from_parent": (parent_id or True) if plan.get("continue_from_parent") else False}


def tried(tree, steps: int, data) -> set[tuple]:
    return {signature(values_of(n.plan, steps, data) | _continues(n.plan, n.parent_id))
            for n in tree.nodes.values() if n.plan}


def _values(p: Proposal, steps: int, data, parent_id: str | None = None) -> dict | None:
    """A proposal's values as :func:`tried` signs them, for a plan whose parent is ``parent_id``."""
    if p.plan is None:
        return None
    plan = p.plan.model_dump(mode="json")
    return values_of(plan, steps, data) | _continues(plan, parent_id)


@dataclass(frozen=True)
class Ranked:
    """A candidate made into a plan that repeats nothing tried: what the rules proposer would take,
    and what the hybrid proposer offers the LLM to choose among."""

    candidate: Candidate
    proposal: Proposal  # with its hypothesis (citing the tool calls it rests on)


def gather_evidence(tree, parent, *, home=None, data=None, emit=None
                    ) -> tuple[dict[str, tuple[str, str | None]], FormatMatch | None]:
    """The evidence tools on ``parent``, each call recorded (``ToolCalled``) when ``emit`` is given:
    ``{tool: (result, event id)}``, and the prompt-format reading behind that tool's result (read once:
    the ``match-format`` rule takes it, see :func:`ranked_candidates`). Bad cases need the home (the
    Evaluator's outputs); the data profile runs only for a task with pools (what a pool would add is
    what it reads), the prompt format for a task with pools or templates."""
    from trex.propose import evidence as tools

    out = {"training_curve": tools.call_tool(emit, "training_curve", {"node_id": parent.node_id},
                                             lambda: tools.training_curve(tree, parent))}
    if tree.started.constraints:
        out["constraint_slack"] = tools.call_tool(emit, "constraint_slack", {"node_id": parent.node_id},
                                                  lambda: tools.constraint_slack(tree, parent))
    if home is not None and parent.outputs:
        out["bad_cases"] = tools.call_tool(emit, "bad_cases", {"node_id": parent.node_id},
                                           lambda: tools.bad_cases(home, parent))
    if home is not None and data is not None and data.pools:
        out["data_profile"] = tools.call_tool(emit, "data_profile", {"task": tree.task},
                                              lambda: tools.data_profile(tree.task, home))
    read: list[FormatMatch | None] = []
    if home is not None and data is not None and (data.pools or data.templates):
        def prompt_format() -> str:
            read.append(tools.format_match(tree.task, home))
            return tools.format_text(read[0])

        out["prompt_format"] = tools.call_tool(emit, "prompt_format", {"task": tree.task}, prompt_format)
    return out, (read[0] if read else None)  # unread, or unreadable data (the tool's result says why): none


TPE_MIN_SCORED = 5  # TPE's startup trials: below this many scored nodes its draws are random ones


def tpe_value(tree, decision, parent, key: str, *, task: str, steps: int, batch_size: int, data) -> float | None:
    """TPE's value of ``key`` (a pool's share, or the learning rate) for ``parent``'s plan, every other
    value held at the parent's (the structure the rule chose), from the tree's evaluated nodes; None
    while fewer than :data:`TPE_MIN_SCORED` nodes are scored (then the rule's own number is better than
    a random draw)."""
    from trex.propose.space import optuna_distributions

    if sum(1 for n in tree.nodes.values() if is_number(n.score)) < TPE_MIN_SCORED:
        return None
    try:
        v0 = values_of(parent.plan, steps, data)
        fixed = {k: v0[k] for k in optuna_distributions() if k in v0 and k != key}
        if data is not None:
            pool = key.startswith("pool_")
            dp, _ = data.optuna_params({**v0, key: data.dim(key).low} if pool else v0, with_clean=True)
            fixed.update({k: x for k, x in dp.items() if k != key})
            if pool:
                fixed[f"{key}_on"] = True
        p = propose_optuna(tree, replace(decision, decision_id=f"{decision.decision_id}:{key}"), task=task,
                           steps=steps, batch_size=batch_size, data=data, fixed=fixed)
        if p.plan is None:
            return None
        x = float(values_of(p.plan.model_dump(mode="json"), steps, data).get(key) or 0.0)
    except Exception:  # noqa: BLE001 - the optimiser is advice: the rule's own number stands
        return None
    return x if x > 0 and math.isfinite(x) else None


def ranked_candidates(tree, parent, *, task: str, steps: int, batch_size: int, data=None,
                      evidence: Mapping[str, tuple[str, str | None]] | None = None,
                      decision=None, formats: FormatMatch | None = None) -> list[Ranked]:
    """The rules' candidate edits of ``parent`` that make a valid plan repeating no tried plan, best
    first, each with its hypothesis citing the evidence tool calls its rule reads. With ``decision``
    the share a pool is mixed in at is TPE's (conditioned on the rest of the parent's plan); with
    ``formats`` (:func:`gather_evidence`'s reading) ``match-format`` is offered where it fits."""
    seen = tried(tree, steps, data)
    evidence = evidence or {}
    out, sigs = [], set()
    share_for = lr_for = None
    if decision is not None and data is not None and data.pools:
        def share_for(pool):
            return tpe_value(tree, decision, parent, pool, task=task, steps=steps, batch_size=batch_size, data=data)
    if decision is not None:
        def lr_for():
            return tpe_value(tree, decision, parent, "learning_rate", task=task, steps=steps,
                             batch_size=batch_size, data=data)
    for c in candidates(tree, parent, data, steps, share_for, lr_for, formats):
        v = dict(c.values)
        if v.get("continue_from_parent") and not parent.adapter:
            continue
        p = finish(task, steps, batch_size, v, f"{c.edit}: {c.hypothesis} (evidence: {c.evidence})", data, tree)
        got = _values(p, steps, data, parent.node_id)
        if got is None or signature(got) in seen or signature(got) in sigs:
            continue
        sigs.add(signature(got))
        cites = tuple(eid for t in c.tools if (eid := evidence.get(t, ("", None))[1]))
        texts = " | ".join(evidence[t][0].splitlines()[0][:300] for t in c.tools if t in evidence)
        metric = c.metric or primary_metric(tree)
        h = Hypothesis(c.hypothesis[:1000], metric, c.op, c.threshold, f"{c.evidence}" + (f" | {texts}" if texts else ""),
                       cites)
        out.append(Ranked(c, replace(p, hypothesis=h)))
    return out


def propose_rules(tree, decision, *, task: str, steps: int, batch_size: int = 32, data=None, home=None,
                  emit=None) -> Proposal:
    parent = tree.nodes.get(decision.node_id) if decision.node_id else None
    if decision.operator == "improve" and parent is not None and parent.plan:
        ev, formats = gather_evidence(tree, parent, home=home, data=data, emit=emit)
        ranked = ranked_candidates(tree, parent, task=task, steps=steps, batch_size=batch_size, data=data,
                                   evidence=ev, decision=decision, formats=formats)
        if ranked:
            return ranked[0].proposal
    return fresh_numbers(tree, decision, task=task, steps=steps, batch_size=batch_size, data=data, emit=emit)


def fresh_numbers(tree, decision, *, task: str, steps: int, batch_size: int, data=None, emit=None) -> Proposal:
    """A debug's fix (a random move away from the failure), a draft, or an improve no rule could make
    new: TPE's numbers, never a repeat if a few re-asks can help it. Its hypothesis: it scores above
    the best so far (the base model's score before any), citing the tried-plans table."""
    from trex.propose import evidence as tools

    parent = tree.nodes.get(decision.node_id) if decision.node_id else None
    seen = tried(tree, steps, data)
    table, eid = tools.call_tool(emit, "tried_plans", {}, lambda: tools.tried_plans(tree, steps, data))
    p = None
    if decision.operator == "debug" and parent is not None:  # the failure says what to fix (lr, steps, rank)
        q = propose_random(tree, decision, task=task, steps=steps, batch_size=batch_size, data=data)
        got = _values(q, steps, data, decision.node_id)
        if got is None or signature(got) not in seen:
            p = q
    if p is None and (decision.operator == "draft" or parent is None):  # the same drafts the LLM chooses among
        drafts, _ = draft_candidates(tree, decision, task=task, steps=steps, batch_size=batch_size, data=data)
        if drafts:
            return replace(drafts[0].proposal, hypothesis=beats_best(tree, table, eid))
    if p is None:
        first = None
        for attempt in range(4):
            d = decision if attempt == 0 else _reseeded(decision, attempt)
            q = propose_optuna(tree, d, task=task, steps=steps, batch_size=batch_size, data=data)
            first = first or q
            got = _values(q, steps, data, decision.node_id)
            if got is None or signature(got) not in seen:
                p = q if attempt == 0 else Proposal(q.plan, q.raw, f"{q.rationale} (re-asked {attempt}x: "
                                                                   f"the first answers repeated tried plans)")
                break
        if p is None:
            p = Proposal(first.plan, first.raw, f"{first.rationale} (every answer repeated a tried plan)")
    if p.plan is None:
        return p
    return replace(p, hypothesis=beats_best(tree, table, eid))


DRAFT_CHOICES = 3  # the optimiser's drafts the LLM chooses among


def draft_candidates(tree, decision, *, task: str, steps: int, batch_size: int, data=None, emit=None,
                     k: int = DRAFT_CHOICES) -> tuple[list[Ranked], str]:
    """Up to ``k`` new plans, none repeating a tried plan nor each other, each with the hypothesis that
    it beats the best so far, citing the tried-plans table (one recorded call). Returns them with the
    table: what the LLM chooses a draft among, and from.

    Once :data:`TPE_MIN_SCORED` nodes are scored they are TPE's (on the tree's evaluated nodes).
    Before that TPE's draws are independent random ones, which clump (three of them missed a whole
    decade of learning rates in the demo): the training values then come from the search's scrambled
    Sobol sequence (seeded by the search), a window of ``k`` points per draft by its place among the
    search's drafts (so drafts decided at once are offered different points), skipping points tried
    already, on the task's own recipe (the data space's defaults): a data edit is a structural choice
    the evidence asks for (forgetting → replay, noise → cleaning, a shift → a pool), made by the rules
    on a trained node, not drawn at random before any evidence exists (random draws capped the demos'
    drafts at 256 of 4,000 rows, seen ~37 times each: they memorised them, and a trial went on
    undoing it). The ``rules`` arm drafts the first of them: the two arms differ only in who chooses."""
    from trex.propose import evidence as tools

    table, eid = tools.call_tool(emit, "tried_plans", {}, lambda: tools.tried_plans(tree, steps, data))
    h = beats_best(tree, table, eid)
    seen = tried(tree, steps, data)
    informed = sum(1 for n in tree.nodes.values() if is_number(n.score)) >= TPE_MIN_SCORED
    out: list[Ranked] = []

    def take(q: Proposal) -> bool:
        got = _values(q, steps, data)
        if got is None or signature(got) in seen:
            return False
        seen.add(signature(got))
        out.append(Ranked(Candidate("draft", got, h.text, h.evidence, h.metric, h.op, h.threshold, ("tried_plans",)),
                          replace(q, hypothesis=h)))
        return len(out) == k

    if not informed:  # TPE's draws would be random ones: the search's space-filling sequence instead
        from trex.propose.space import DIMS as TRAINING, space_filling

        # this draft's place among the search's drafts: concurrent drafts start at different points
        position = 0
        for dr in tree.decisions:
            if dr.decision_id == decision.decision_id:
                break
            position += dr.node_id is None
        offset = k * position  # disjoint windows: drafts decided at once are offered different points
        recipe = {key: x for key, x in values_of({}, steps, data).items() if key not in TRAINING}  # the task's own
        for i, point in enumerate(space_filling(offset + 4 * k, tree.seed)[offset:]):
            v = recipe | point
            if take(finish(task, steps, batch_size, v, f"space-filling draft {offset + i + 1} of the search "
                                                       f"(Sobol, seed {tree.seed})", data, tree)):
                break
    for attempt in range(3 * k):
        if len(out) == k:
            break
        if take(propose_optuna(tree, decision if attempt == 0 else _reseeded(decision, attempt), task=task,
                               steps=steps, batch_size=batch_size, data=data)):
            break
    return out, table


def beats_best(tree, table: str, eid: str | None) -> Hypothesis:
    """The hypothesis of a fresh draw: it scores above the best feasible node so far (or the base)."""
    best = tree.best
    ref, who = (best.score, best.node_id) if best is not None else (tree.base_score, "the base model")
    ref = float(ref) if isinstance(ref, (int, float)) and math.isfinite(ref) else 0.0
    higher = tree.higher_is_better
    return Hypothesis(f"a new point of the space scores {'above' if higher else 'below'} {who} ({ref:.3g})",
                      primary_metric(tree), ">" if higher else "<", ref,
                      f"tried plans: {table.splitlines()[0][:300] if table else '-'}", (eid,) if eid else ())


def _reseeded(decision, attempt: int):
    return replace(decision, decision_id=f"{decision.decision_id}:{attempt}")


def primary_metric(tree) -> str:
    """The name the primary metric is recorded under: the tree's (its first score says it), else the
    task's, else "exact_match" (a user's task this process cannot look up before anything is scored)."""
    from trex.tasks import get_task

    if getattr(tree, "primary_metric", ""):
        return tree.primary_metric
    try:
        return get_task(tree.task).primary_metric.name
    except Exception:  # noqa: BLE001 - a task this process cannot look up: the common name
        return "exact_match"


__all__ = ["Candidate", "Evidence", "Ranked", "candidates", "draft_candidates", "evidence", "fresh_numbers",
           "gather_evidence",
           "propose_rules", "ranked_candidates", "signature"]
