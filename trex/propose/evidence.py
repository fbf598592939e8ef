"""The Researcher's evidence tools: short, structured summaries of what the search has seen.

Each tool is a plain function of the tree (and, for data and bad cases, of files in the home) that
returns a few lines of text; :func:`call_tool` records a call as a ``ToolCalled`` event and returns
its event id, so a hypothesis can cite the evidence it rests on (``HypothesisStated.cites``).
Everything here reads train, pools and validation only — never a test split, nor a held-out score.
Outputs are summaries, bounded in size whatever the tree's size (the prompt of a small model must
stay small as evidence grows).
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

Emit = Callable[..., Any]
MAX_RESULT = 1500  # characters of one tool's result (what a prompt holds of it)


def call_tool(emit: Emit | None, name: str, args: dict, fn: Callable[[], str]) -> tuple[str, str | None]:
    """Run a tool; record the call (``ToolCalled``, its own event id) when ``emit`` is given.
    Returns ``(result, event id or None)``. A tool that raises is a result the agent sees."""
    from trex.events.envelope import new_id
    from trex.events.plans import ToolCalled

    try:
        out, ok = fn(), True
    except Exception as e:  # noqa: BLE001 - a failed tool call is a result the agent sees
        out, ok = f"{type(e).__name__}: {e}", False
    out = out[:MAX_RESULT]
    if emit is None:
        return out, None
    eid = new_id()
    emit(ToolCalled(tool=name, args=args, ok=ok, result=out), event_id=eid)
    return out, eid


def _f(x) -> str:
    return "-" if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else f"{x:.3g}"


# ------------------------------------------------------------------------------------ training
def training_curve(tree, node) -> str:
    """The node's training loss (first -> final), its validation score against its parent's and the
    base model's, and what that says: diverged (the loss rose), underfitting (loss still above half its
    start), overfitting (loss near zero while validation falls behind the parent), or neither."""
    from trex.search.tree import line_first_loss, still_learning

    tm = dict(node.train_metrics)
    first, final = line_first_loss(tree, node), tm.get("final_loss")  # a continuation: from its line's start
    parent = tree.nodes.get(node.parent_id) if node.parent_id else None
    pscore = parent.score if parent is not None else None
    verdict = "no training curve recorded"
    if isinstance(first, (int, float)) and isinstance(final, (int, float)) and first > 0:
        if final > first:
            verdict = "diverged: the loss rose above its start (the learning rate is too high)"
        elif final > 0.5 * first:
            verdict = "underfitting: the loss is still above half its start"
        elif final < 0.05 * first and pscore is not None and node.score is not None and _worse(tree, node.score,
                                                                                                  pscore):
            verdict = "overfitting: training loss near zero while validation fell behind the parent"
        else:
            verdict = "fits: the loss fell below half its start"
    trend = node.loss_trend
    if trend is not None:
        middle, last = trend
        verdict += (f"; still falling at the end (last third {_f(last)} vs middle third {_f(middle)}): more steps "
                    "can gain" if still_learning(tree, node) else
                    f"; stalled at the end (last third {_f(last)} vs middle third {_f(middle)})")
    steps = node.plan.get("max_steps", "-") if node.plan else "-"
    return (f"{node.node_id}: train loss {_f(first)} -> {_f(final)} over {steps} steps; "
            f"val {tree.primary_metric or 'score'} {_f(node.score)} (parent {_f(pscore)}, base {_f(tree.base_score)}); "
            f"{verdict}")


def _worse(tree, a: float, b: float) -> bool:
    return a < b if tree.higher_is_better else a > b


def constraint_slack(tree, node) -> str:
    """Each constraint of the task against the node's validation value: how far inside or outside."""
    cons = tree.started.constraints
    if not cons:
        return "the task has no constraints"
    metrics = dict(node.metrics)
    lines = []
    for c in cons:
        v = metrics.get(c.metric)
        if v is None or not math.isfinite(v):
            lines.append(f"{c.metric}: not measured on {node.node_id}")
            continue
        if c.at_least is not None:
            lines.append(f"{c.metric} {_f(v)} vs >= {c.at_least:g}: slack {v - c.at_least:+.3g}"
                         + (" (violated)" if v < c.at_least else ""))
        if c.at_most is not None:
            lines.append(f"{c.metric} {_f(v)} vs <= {c.at_most:g}: slack {c.at_most - v:+.3g}"
                         + (" (violated)" if v > c.at_most else ""))
    return f"{node.node_id}: " + "; ".join(lines)


def tried_plans(tree, steps: int, data=None, limit: int = 8) -> str:
    """The tried plans, best first (at most ``limit``, then a count): what each changed from its parent,
    and its result."""
    from trex.propose.space import values_of

    def changes(n) -> str:
        v = values_of(n.plan, steps, data)
        parent = tree.nodes.get(n.parent_id) if n.parent_id else None
        if parent is None or not parent.plan:
            return "draft " + ", ".join(f"{k}={_short(x)}" for k, x in sorted(v.items()) if x is not None)
        pv = values_of(parent.plan, steps, data)
        diff = [f"{k} {_short(pv.get(k))}->{_short(x)}" for k, x in sorted(v.items()) if pv.get(k) != x]
        cont = "continues " if n.plan.get("continue_from_parent") else ""
        return f"{cont}{n.parent_id}: " + (", ".join(diff) or "no change")

    def result(n) -> str:
        if n.score is None:
            return n.failure or n.status
        return _f(n.score) + (f" infeasible ({n.infeasible})" if n.infeasible else "")

    nodes = [n for n in tree.nodes.values() if n.plan]
    if not nodes:
        return "no plans tried yet"
    sign = -1 if tree.higher_is_better else 1
    nodes.sort(key=lambda n: (n.score is None, sign * (n.score or 0)))
    lines = [f"{n.node_id} ({changes(n)}) -> {result(n)}" for n in nodes[:limit]]
    if len(nodes) > limit:
        lines.append(f"... and {len(nodes) - limit} more")
    return "\n".join(lines)


def _short(x) -> str:
    return f"{x:.2g}" if isinstance(x, float) else str(x)


# ------------------------------------------------------------------------------------ outputs
_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def bad_cases(home: str | os.PathLike, node, n: int = 3) -> str:
    """The node's validation errors grouped by kind — empty output, broken format (no number where a
    number is expected), near-miss numbers (within 10% or 2), wrong class (with the confusion pairs) —
    and a few examples of the largest group."""
    import pyarrow.parquet as pq

    from trex.artifacts import evaluation_outputs

    art = node.outputs[0] if node.outputs else None
    if art is None:
        return f"node {node.node_id} has no evaluation outputs"
    rows = pq.read_table(evaluation_outputs(home, art)).to_pylist()
    wrong = [r for r in rows if not r.get("score")]
    if not rows:
        return f"node {node.node_id}: no examples scored"
    refs = Counter(str(r.get("reference", "")).strip() for r in rows)
    classes = len(refs) <= 10 and len(rows) >= 2 * len(refs)
    kinds: dict[str, list] = {}
    confusion: Counter = Counter()
    for r in wrong:
        ref, out = str(r.get("reference", "")).strip(), str(r.get("output", "")).strip()
        if not out:
            k = "empty output"
        elif _NUM.fullmatch(ref) and not _NUM.search(out):
            k = "broken format (no number)"
        elif _NUM.fullmatch(ref) and _near(ref, out):
            k = "near-miss number"
        elif classes:
            k = "wrong class"
            confusion[(ref, out[:20])] += 1
        else:
            k = "wrong answer"
        kinds.setdefault(k, []).append(r)
    head = (f"{node.node_id}: {len(wrong)} of {len(rows)} validation examples wrong"
            + (": " + ", ".join(f"{k} {len(v)}" for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1])))
               if kinds else ""))
    lines = [head]
    if confusion:
        lines.append("confusion (expected -> got): " + ", ".join(f"{a!r}->{b!r} x{c}"
                                                                 for (a, b), c in confusion.most_common(5)))
    if kinds:
        top = max(kinds.values(), key=len)
        for r in top[:n]:
            lines.append(f"- input {str(r.get('input', ''))[:120]!r} expected {str(r.get('reference', ''))[:40]!r} "
                         f"got {str(r.get('output', ''))[:40]!r}")
    return "\n".join(lines)


def _near(ref: str, out: str) -> bool:
    m = _NUM.search(out)
    try:
        a, b = float(ref), float(m.group()) if m else None
    except ValueError:
        return False
    return b is not None and a != b and abs(a - b) <= max(2.0, 0.1 * abs(a))


# ------------------------------------------------------------------------------------ data
def data_profile(task: str, home, max_rows: int = 5000) -> str:
    """Each training source of the task (its train split and every pool): rows, exact duplicates,
    labels (for a few distinct completions), prompt lengths and two samples. Never a held-out split."""
    from trex.tasks import get_task, load_split

    t = get_task(task, home)
    sources = [("train", "train")] + [(f"pool {p.name}", p.split) for p in t.pools]
    out = []
    for label, split in sources:
        rows = load_split(t, split, home)[:max_rows]
        if not rows:
            out.append(f"{label}: no rows")
            continue
        keys = Counter((r.get("prompt"), r.get("completion")) for r in rows)
        dups = sum(c - 1 for c in keys.values())
        comps = Counter(str(r.get("completion", "")).strip() for r in rows)
        lens = sorted(len(str(r.get("prompt", ""))) for r in rows)
        line = (f"{label}: {len(rows)} rows, {dups} duplicates, prompt length median {lens[len(lens) // 2]} "
                f"max {lens[-1]}")
        if len(comps) <= 10:
            line += "; labels " + ", ".join(f"{k!r} {c}" for k, c in comps.most_common())
        samples = "; ".join(f"{str(r.get('prompt', ''))[:60]!r} -> {str(r.get('completion', ''))[:20]!r}"
                            for r in rows[:2])
        out.append(f"{line}; e.g. {samples}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ formats
_RUNS = re.compile(r"[0-9]+|[^\W\d_]+")
FORMAT_COVER = 0.9  # the validation prompts' commonest shapes must cover this share of them ...
FORMAT_SHAPES = 20  # ... in at most this many shapes (free text has a shape per row: nothing to match)
FORMAT_MATCH = 0.9  # a source whose rows take the shapes of at least this share of validation is in its format


def shape(text: str) -> str:
    """A prompt's format with its content taken out: every run of digits one ``9``, every run of
    letters one ``a``; spaces, newlines and punctuation kept (``'1-1=0\n12-5='`` -> ``'9-9=9\n9-9='``)."""
    return _RUNS.sub(lambda m: "9" if m.group()[0].isdigit() else "a", text)


@dataclass(frozen=True)
class FormatMatch:
    """How the validation prompts' format is met by each training source: ``shares`` maps a source
    (``"train"``, ``"template '<t>'"``: the train split written in template ``t`` (its repr), ``"pool <name>"``) to
    the share of validation prompts whose shape some row of that source has."""

    val_shape: str  # the commonest validation shape (for the text)
    shares: tuple[tuple[str, float], ...]

    def share(self, source: str) -> float:
        return dict(self.shares).get(source, 0.0)

    def text(self) -> str:
        parts = ", ".join(f"{cut(k)} {v:.2f}" for k, v in self.shares)
        return (f"validation prompts are written like {cut(repr(self.val_shape))}; share of them in each "
                f"source's format: {parts}")


def cut(text: str, n: int = 80) -> str:
    """A task's text (a template, a shape) in a result or a hypothesis, bounded: a template may be 2,000
    characters."""
    return text if len(text) <= n else text[: n - 3] + "..."


def format_match(task: str, home, max_rows: int = 5000) -> FormatMatch | None:
    """The validation split's prompt format against the train split's (as is and written in each of the
    task's templates) and each pool's; None for a task without pools or templates, or whose validation
    prompts are free text (no few shapes cover them). Reads train, pools and validation, never test."""
    from trex.tasks import get_task, load_split

    t = get_task(task, home)
    if not t.pools and not t.templates:
        return None
    val = load_split(t, t.primary_metric.split, home)[:max_rows]
    if not val:
        return None
    render = lambda tpl, rows: Counter(shape(_render(tpl, r)) for r in rows)  # noqa: E731
    vshapes = render(t.prompt_template, val)
    common = vshapes.most_common(FORMAT_SHAPES)
    if sum(c for _, c in common) < FORMAT_COVER * len(val):
        return None
    train = load_split(t, "train", home)[:max_rows]
    sources = [("train", render("{prompt}", train))]
    sources += [(f"template {tpl!r}", render(tpl, train)) for tpl in t.templates if tpl != "{prompt}"]
    sources += [(f"pool {p.name}", render("{prompt}", load_split(t, p.split, home)[:max_rows])) for p in t.pools]
    n = sum(vshapes.values())
    shares = tuple((name, round(sum(c for s, c in vshapes.items() if s in have) / n, 3)) for name, have in sources)
    return FormatMatch(common[0][0], shares)


def _render(template: str, row: dict) -> str:
    try:
        return template.format(**row)
    except (KeyError, IndexError, ValueError, AttributeError):
        return str(row.get("prompt", ""))


def format_text(fm: FormatMatch | None) -> str:
    """The ``prompt_format`` tool's result for a :func:`format_match` reading."""
    return "no format evidence: no pools or templates, no validation rows, or free-text validation prompts " \
           "(no few shapes cover them)" if fm is None else fm.text()


def prompt_format(task: str, home) -> str:
    return format_text(format_match(task, home))


__all__ = ["bad_cases", "call_tool", "constraint_slack", "data_profile", "format_match", "format_text", "prompt_format", "shape", "training_curve", "tried_plans"]
