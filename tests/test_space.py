"""The one search space: every dimension reaches every place derived from it, and nothing else restates it.

``trex/propose/space.py`` declares the values a plan varies; the random sampler, the optuna
distributions, the LLM's ``PlanChoice`` schema and prompt, the distiller's dimensions and the
off-space check all come from it. These tests fail when a dimension is added in one place only, or
when a bound is written down again somewhere else under ``trex/``.
"""
from __future__ import annotations

import io
import math
import random
import re
import tokenize
from pathlib import Path

import pytest
from pydantic import ValidationError

from trex.insights import DIMENSIONS
from trex.plan import Plan, parse_plan
from trex.propose import space
from trex.propose.researcher import PlanChoice, build_messages, system_prompt
from trex.propose.space import DEFAULT_TRIAL_STEPS, SPACE, off_space, optuna_distributions, to_plan, values_of

TREX = Path(__file__).resolve().parents[1] / "trex"
SPACE_FILE = TREX / "propose" / "space.py"
FLOATS = [d for d in SPACE if d.kind == "float"]
CHOICES = [d for d in SPACE if d.kind == "choice"]


def _inside(d) -> list:
    return [d.low, d.high] if d.kind == "float" else list(d.choices)


def _outside(d) -> list:
    if d.kind == "float":
        return [math.nextafter(d.low, 0.0), math.nextafter(d.high, math.inf)]
    if all(isinstance(c, (int, float)) for c in d.choices):
        return [max(d.choices) * 2 or 1, (min(d.choices) - 1) if min(d.choices) > 0 else -1]
    return ["nope"]


def _choice(**values) -> dict:
    base = {d.name: d.default for d in SPACE}
    return {"rationale": "n1 was best", **base, **values, "continue_from_parent": False}


# ------------------------------------------------------------------ every dimension, everywhere
def test_every_dimension_is_in_the_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    dists = optuna_distributions()
    assert list(dists) == [d.name for d in SPACE]
    for d in SPACE:
        if d.kind == "float":
            assert isinstance(dists[d.name], FloatDistribution)
            assert (dists[d.name].low, dists[d.name].high, dists[d.name].log) == (d.low, d.high, d.log)
        else:
            assert isinstance(dists[d.name], CategoricalDistribution) and dists[d.name].choices == d.choices


def test_every_dimension_is_in_the_random_samplers_output_and_within_the_space():
    rng = random.Random(0)
    seen = {d.name: set() for d in CHOICES}
    for _ in range(300):
        v = space.sample(rng)
        assert list(v) == [d.name for d in SPACE] and off_space(v) is None
        for d in CHOICES:
            seen[d.name].add(v[d.name])
    assert all(seen[d.name] == set(d.choices) for d in CHOICES)  # every choice is reachable


def test_every_dimension_is_in_the_plan_choice_schema_with_its_bounds():
    schema = PlanChoice.model_json_schema()
    props = schema["properties"]
    for d in SPACE:
        assert d.name in props and d.name in schema["required"], d.name
        if d.kind == "float":
            assert (props[d.name]["minimum"], props[d.name]["maximum"]) == (d.low, d.high)
        else:
            assert props[d.name]["enum"] == list(d.choices)
    assert set(props) == {d.name for d in SPACE} | {"rationale", "continue_from_parent"}


def test_every_dimension_is_described_in_the_prompt_with_its_range_and_no_preference():
    text = system_prompt()
    for d in SPACE:
        assert f"{d.name}:" in text and d.description in text
        for x in _inside(d):
            assert (space._num(x) if isinstance(x, float) else str(x)) in text
    lowered = text.lower()
    for advice in ("usually", "work best", "learn fastest", "recommended", "prefer"):
        assert advice not in lowered  # a small model repeats whatever region it is told is best


def test_every_dimension_is_in_the_trials_table_the_llm_reads():
    from trex.events.search import SearchStarted
    from trex.search import fold
    from trex.search.policy import Decision

    tree = fold([SearchStarted(task="arith-sub", proposer="llm")])
    msgs = build_messages(tree, Decision(node_id=None, operator="draft", policy="mcts", seed=0, index=0,
                                         decision_id="d"), "task", "no insights", None, None)
    assert msgs[0]["content"] == system_prompt()
    from trex.propose.researcher import _node_line

    class N:
        node_id, parent_id, score, failure, status = "n1", None, 0.5, None, "evaluated"
        plan = to_plan("arith-sub", 10, 8, space.sample(random.Random(1)))

    line = _node_line(N)
    assert all(f"{d.name} " in line for d in SPACE)


def test_every_dimension_is_one_the_distiller_compares_along():
    assert list(DIMENSIONS) == [d.label for d in SPACE] + ["data mix", "cleaning"]  # + the recipe's, per plan
    # the insight ids hash these names: the four of the first release must never change
    assert {"learning rate", "rank", "targets", "schedule"} <= set(DIMENSIONS)
    plan = to_plan("arith-sub", 10, 8, {"learning_rate": 2e-3, "lora_rank": 16, "targets": "all",
                                         "lr_schedule": "linear", "warmup_ratio": 0.05})
    assert [DIMENSIONS[d.label](plan) for d in SPACE] == [
        "lr 1e-3..5e-3", "rank 16", "targets all linear", "linear schedule", "warmup 0.05"]
    assert DIMENSIONS["learning rate"]({"learning_rate": 5e-4}) == "lr<1e-3"
    assert DIMENSIONS["learning rate"]({"learning_rate": 5e-3}) == "lr>=5e-3"
    assert DIMENSIONS["targets"]({"target_modules": ["q_proj", "k_proj", "v_proj"]}) == "targets 3 modules"


def test_values_and_plans_round_trip_along_every_dimension():
    rng = random.Random(3)
    for _ in range(50):
        v = space.sample(rng)
        raw = to_plan("arith-sub", 40, 16, v)
        plan = parse_plan(raw)
        assert isinstance(plan, Plan), plan
        back = values_of(plan.model_dump(mode="json"), 40)
        assert {d.name: back[d.name] for d in SPACE} == v and back["max_steps"] == 40


# -------------------------------------------------------------------------------- the bounds
@pytest.mark.parametrize("d", SPACE, ids=lambda d: d.name)
def test_a_plan_at_each_bound_validates_and_one_just_outside_is_rejected(d):
    dists = optuna_distributions()
    for x in _inside(d):
        PlanChoice.model_validate(_choice(**{d.name: x}))
        values = {**{e.name: e.default for e in SPACE}, d.name: x}
        plan = parse_plan(to_plan("arith-sub", 40, 16, values))
        assert isinstance(plan, Plan), plan  # the space lies within what the Executor can train
        assert off_space(values_of(plan.model_dump(mode="json"), 40)) is None
        assert dists[d.name]._contains(dists[d.name].to_internal_repr(x))
    for x in _outside(d):
        with pytest.raises(ValidationError):
            PlanChoice.model_validate(_choice(**{d.name: x}))
        reason = off_space({**{e.name: e.default for e in SPACE}, d.name: x})
        assert reason is not None and d.name in reason


def test_the_space_agrees_with_the_plan_it_expands_into():
    """The Plan is a layer below (what can be trained) and keeps its own defaults: they must be the space's."""
    for d in SPACE:
        default = Plan.model_fields[d.field].default
        assert default == (tuple(d.codes[d.default]) if d.codes else d.default), d.name
    assert Plan.model_fields["max_steps"].default == DEFAULT_TRIAL_STEPS == 100


def test_one_default_of_steps_per_trial():
    import inspect

    from trex.conductor import SearchConfig

    assert inspect.signature(SearchConfig).parameters["trial_steps"].default == DEFAULT_TRIAL_STEPS


# ------------------------------------------------------------------- nothing else restates it
def _tokens(path: Path):
    return list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))


def _sources():
    return [p for p in sorted(TREX.rglob("*.py")) if p != SPACE_FILE]


def _spellings(x: float) -> set[str]:
    m, e = f"{x:.0e}".split("e")
    return {repr(x), f"{x:g}", f"{x:.0e}", f"{m}e{int(e)}", f"{m}e-{abs(int(e)):02d}"}


def _number(text: str) -> float:
    text = text.replace("_", "").lower()
    if text.endswith("j"):
        return math.nan
    return float(int(text, 0)) if text[:2] in ("0x", "0o", "0b") else float(text)


def restatements(paths, root: Path) -> list[str]:
    """Where ``paths`` write a float bound, a numeric choice list or a coded choice name of the space."""
    bounds = {x for d in FLOATS for x in (d.low, d.high)}
    spelled = re.compile(r"(?<![\w.])(" + "|".join(re.escape(s) for x in bounds for s in _spellings(x)) + r")(?![\w.])")
    numeric_choices = [tuple(float(c) for c in d.choices) for d in CHOICES
                       if len(d.choices) >= 3 and all(isinstance(c, (int, float)) for c in d.choices)]
    names = {c for d in CHOICES if d.codes for c in d.choices}  # the space's own names (qv, attn, all)
    hits = []
    for path in paths:
        named: list[str] = []  # coded names: two of them in one file restate the mapping ("all" alone is a word)
        run: list[float] = []  # the numbers of the current comma-separated run
        for t in _tokens(path):
            where = f"{path.relative_to(root)}:{t.start[0]}"
            if t.type == tokenize.NUMBER:
                x = _number(t.string)
                if x in bounds:
                    hits.append(f"{where}: {t.string}")
                run.append(x)
                for ch in numeric_choices:
                    if tuple(run[-len(ch):]) == ch:
                        hits.append(f"{where}: the choices {tuple(d for d in ch)}")
                continue
            if t.type == tokenize.OP and t.string == ",":
                continue
            run = []
            if t.type == tokenize.STRING:
                if spelled.search(t.string):
                    hits.append(f"{where}: {t.string[:70]}")
                if t.string.strip("\"'") in names:
                    named.append(f"{where}: {t.string}")
        if len({n.rsplit(": ", 1)[1] for n in named}) >= 2:
            hits += named
    return hits


def test_no_other_module_under_trex_hardcodes_the_bounds():
    hits = restatements(_sources(), TREX.parent)
    assert not hits, "the search space is restated outside trex/propose/space.py:\n" + "\n".join(hits)


def test_the_bounds_scanner_finds_a_restated_bound(tmp_path):
    """The scanner above is not vacuous: the kinds of copies it replaced are found."""
    old = tmp_path / "old.py"
    old.write_text('LR = (1e-4, 3e-2)\nRANKS = (2, 4, 8, 16, 32)\nT = {"qv": 1, "attn": 2}\n'
                   's = "learning rates (allowed: 1e-4 to 3e-2)"\nW = [0.0, 0.05, 0.1]\nok = (0.3, 1e-3, 2, 4)\n')
    hits = restatements([old], tmp_path)
    assert [h.split(":")[1] for h in hits] == ["1", "1", "2", "4", "5", "3", "3"], hits
    (tmp_path / "words.py").write_text('choice = "all"\n')
    assert restatements([tmp_path / "words.py"], tmp_path) == []
