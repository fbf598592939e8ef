"""The search reaches data: pools, recipe operators, the data space, cleaning by loss, constraints.

Pure operators are checked as properties (hypothesis); cleaning by loss trains two real adapters
of the tiny arith model and checks that the rows dropped are the ones the *named* adapter finds
hardest; short real searches (random and optuna, 3 trials of 20 steps) check that proposers edit
data and that feasibility is tracked. That a search *reaches* feasible, better nodes is shown by
the benchmark (docs/ftbench.md), not here.
"""
from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from trex.events.evaluation import EvaluationFinished, MetricRecorded
from trex.events.plans import PlanProposed
from trex.events.search import Constraint, SearchStarted
from trex.events.trials import TrialFailed, TrialFinished, TrialStarted
from trex.plan import parse_plan, plan_hash
from trex.propose import propose_random
from trex.propose.baselines import finish
from trex.propose.data_space import DataSpace
from trex.propose.space import to_plan
from trex.recipe import Recipe, RecipeError, Source, _mix, apply_recipe, balance_labels, drop_hardest, recipe_for_task
from trex.search import apply, fold
from trex.search.policy import Decision

ADAPTER = "a" * 64


def rows(prefix: str, n: int) -> list[dict]:
    return [{"prompt": f"{prefix}{i}", "completion": f"c{i % 3}"} for i in range(n)]


# ------------------------------------------------------------------------------------- operators
@settings(max_examples=60, deadline=None)
@given(n1=st.integers(1, 60), n2=st.integers(1, 40), share=st.floats(0.01, 0.5))
def test_mix_first_keeps_every_train_row_and_draws_the_pool_to_its_share(n1, n2, share):
    r = Recipe(sources=(Source(uri="a.jsonl", weight=1 - share), Source(uri="b.jsonl", weight=share)), mix="first")
    a, b = rows("a", n1), rows("b", n2)
    out = _mix(r, [a, b])
    assert [x for x in out if x["prompt"].startswith("a")] == a  # every train row, once, in order
    pool = [x for x in out if x["prompt"].startswith("b")]
    assert len(pool) == int(round(n1 / (1 - share) * share))
    counts = {x["prompt"]: 0 for x in b}
    for x in pool:
        counts[x["prompt"]] += 1
    assert max(counts.values()) - min(counts.values()) <= 1  # repeated evenly when the pool is small


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=80), seed=st.integers(0, 5))
def test_balance_labels_keeps_the_rarest_labels_count_of_each(labels, seed):
    data = [{"prompt": f"p{i}", "completion": f" {lab}"} for i, lab in enumerate(labels)]
    out = balance_labels(data, seed)
    n = min(labels.count(x) for x in set(labels))
    assert {x: [r["completion"].strip() for r in out].count(x) for x in set(labels)} == {x: n for x in set(labels)}
    idx = [int(r["prompt"][1:]) for r in out]
    assert idx == sorted(idx)  # a subset, in the original order


@settings(max_examples=60, deadline=None)
@given(losses=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=60), frac=st.floats(0.01, 0.9))
def test_drop_hardest_drops_exactly_the_highest_losses(losses, frac):
    data = [{"prompt": f"p{i}", "completion": "c"} for i in range(len(losses))]
    out = drop_hardest(data, losses, frac)
    kept = {int(r["prompt"][1:]) for r in out}
    dropped = set(range(len(losses))) - kept
    assert len(dropped) == int(len(losses) * frac)
    if kept and dropped:
        assert max(losses[i] for i in kept) <= min(losses[i] for i in dropped)


def test_drop_hardest_counts_a_nan_loss_as_hardest_and_refuses_a_count_mismatch():
    data = rows("p", 4)
    assert [r["prompt"] for r in drop_hardest(data, [0.1, math.nan, 0.2, 0.3], 0.25)] == ["p0", "p2", "p3"]
    with pytest.raises(RecipeError, match="3 losses for 4 rows"):
        drop_hardest(data, [0.1, 0.2, 0.3], 0.5)


@pytest.fixture
def pool_task(tmp_path):
    """A user task (files) with a pool of its own, installed in a fresh home."""
    from trex.tasks import install_task, load_task_file

    d = tmp_path / "task"
    d.mkdir()
    for name, n in (("train", 30), ("eval", 6), ("pool", 5)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": f"{name} q{i}", "completion": f" {i % 2}"}) + "\n"
                                                 for i in range(n)))
    (d / "task.yaml").write_text(
        "name: pooled\ndomain: test\ndescription: a task with a pool\nbase_model: {builder: arith-base}\n"
        "data: {files: {train: train.jsonl, eval: eval.jsonl}}\nsplits: [train, eval]\n"
        "pools: [{name: extra, file: pool.jsonl, description: five extra rows}]\n"
        "templates: ['{prompt}', 'Q: {prompt}']\n"
        "metrics: [{name: accuracy, split: eval, primary: true}]\n")
    home = tmp_path / "home"
    task = load_task_file(d / "task.yaml")
    install_task(task, home)
    return home, task


def test_a_pool_is_a_training_source_mixed_in_by_share_and_never_a_held_out_split(pool_task):
    from trex.tasks.contamination import heldout_splits

    home, task = pool_task
    assert [p.name for p in task.pools] == ["extra"] and "pool-extra" in task.splits
    assert set(heldout_splits(task, home)) == {"eval"}  # the guard checks training rows against eval only
    r = Recipe(sources=(Source(uri="task:pooled/train", weight=0.8), Source(uri="pool:pooled/extra", weight=0.2)),
               mix="first", prompt_template="Q: {prompt}")
    out = apply_recipe(r, home)
    assert sum(x["prompt"].startswith("Q: train") for x in out) == 30
    assert sum(x["prompt"].startswith("Q: pool") for x in out) == round(30 / 0.8 * 0.2)
    with pytest.raises(RecipeError, match="has no pool 'nope'"):
        apply_recipe(Recipe(sources=(Source(uri="pool:pooled/nope"),)), home)


def test_identical_recipes_are_materialised_once_and_again_when_a_source_changes(pool_task, monkeypatch):
    import trex.recipe as recipe_mod

    home, task = pool_task
    r = Recipe(sources=(Source(uri="task:pooled/train", weight=0.8), Source(uri="pool:pooled/extra", weight=0.2)),
               mix="first")
    digest, path = recipe_mod.materialize(r, home)
    calls = []
    real = recipe_mod.apply_recipe
    monkeypatch.setattr(recipe_mod, "apply_recipe", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert recipe_mod.materialize(r, home) == (digest, path) and not calls  # answered from the index
    pool_file = home / "tasks" / "pooled" / "pool-extra.jsonl"
    pool_file.write_text(pool_file.read_text().replace("pool q0", "pool q0 changed"))
    digest2, _ = recipe_mod.materialize(r, home)
    assert calls == [1] and digest2 != digest  # a source's content is part of the key


def test_the_data_space_of_a_task_follows_its_pools_templates_and_kind(pool_task):
    _, task = pool_task
    ds = DataSpace.for_task(task)
    assert [d.name for d in ds.dims] == ["pool_extra", "template", "balance_labels", "rows", "dedup", "clean_fraction"]
    # every value at its default: exactly the task's train split as is, and the plan hashes as before
    v = ds.defaults()
    assert Recipe.model_validate(ds.to_recipe(v, {})) == recipe_for_task("pooled")
    plain = parse_plan(to_plan("pooled", 20, 8, {}))
    assert plan_hash(parse_plan(to_plan("pooled", 20, 8, v, ds))) == plan_hash(plain)
    assert "mix" not in plain.data.model_dump() and "clean" not in plain.data.model_dump()


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_data_values_and_recipes_round_trip(seed):
    ds = DataSpace(task="pooled", pools=(("extra", "five rows"), ("more", "more rows")),
                   templates=("{prompt}", "Q: {prompt}"), classification=True)
    v = ds.sample(random.Random(seed), cleanable="n1")
    recipe = Recipe.model_validate(ds.to_recipe(v, {"n1": ADAPTER}))
    back = ds.values_of(recipe.model_dump(mode="json"))
    for k, x in v.items():
        assert back[k] == pytest.approx(x, abs=1e-5) if isinstance(x, float) else back[k] == x, k
    assert ds.off_space(v) is None


def test_each_data_operator_changes_the_materialised_rows_as_its_value_says(pool_task):
    home, task = pool_task
    ds = DataSpace.for_task(task)

    def out(**kw):
        return apply_recipe(Recipe.model_validate(ds.to_recipe({**ds.defaults(), **kw}, {})), home)

    base = out()
    assert len(base) == 30 and all(x["prompt"].startswith("train") for x in base)
    assert sum(x["prompt"].startswith("pool") for x in out(pool_extra=0.25)) == 10
    assert all(x["prompt"].startswith("Q: ") for x in out(template="Q: {prompt}"))
    bal = out(balance_labels=True)
    assert [x["completion"] for x in bal].count(" 0") == [x["completion"] for x in bal].count(" 1") == 15
    assert len(out(rows=256)) == 30  # a cap above the rows there are keeps them all


def test_the_random_and_optuna_proposers_draw_data_edits(pool_task):
    from trex.propose import propose_optuna

    _, task = pool_task
    ds = DataSpace.for_task(task)
    tree = fold([SearchStarted(task="pooled", proposer="random")])
    default = recipe_for_task("pooled")
    for fn in (propose_random, propose_optuna):
        plans = [fn(tree, Decision(None, "draft", "mcts", 0, i, f"d{i}"), task="pooled", steps=20, batch_size=8,
                    data=ds).plan for i in range(12)]
        assert all(p is not None for p in plans)
        assert sum(p.data != default for p in plans) >= 6, fn.__name__
        assert any(len(p.data.sources) == 2 for p in plans), fn.__name__


# ------------------------------------------------------------------------------------- bad input
def test_a_cleaning_step_naming_a_node_without_an_adapter_is_a_rejection(pool_task):
    _, task = pool_task
    ds = DataSpace.for_task(task)
    evs = [SearchStarted(task="pooled"), PlanProposed(node_id="n1", parent_id=None, plan={}),
           TrialStarted(node_id="n1", trial_id="t1"), TrialFailed(node_id="n1", trial_id="t1", reason="crash")]
    tree = fold(evs)
    for node, why in (("n1", "clean_node 'n1' has no adapter"), ("n9", "clean_node 'n9' is not a node"),
                      (None, "needs clean_node")):
        p = finish("pooled", 20, 8, {**ds.defaults(), "clean_fraction": 0.2, "clean_node": node}, "r", ds, tree)
        assert p.plan is None and why in p.rejection, p.rejection


@pytest.mark.parametrize("weight", [0, -1, float("nan"), float("inf")])
def test_a_source_weight_that_is_not_a_positive_number_is_refused(weight):
    raw = json.loads(json.dumps(to_plan("arith-sub", 20, 8, {})))
    raw["data"]["sources"][0]["weight"] = weight
    why = parse_plan(raw)
    assert isinstance(why, str) and "weight" in why


def test_a_template_without_prompt_is_refused_in_a_recipe_and_in_a_task_file(tmp_path, pool_task):
    from trex.tasks import SpecError, load_task_file

    with pytest.raises(ValueError, match=r"must contain \{prompt\}"):
        Recipe(sources=(Source(uri="x.jsonl"),), prompt_template="{completion}")
    spec = (tmp_path / "task" / "task.yaml").read_text().replace("'Q: {prompt}'", "'Q: {question}'")
    (tmp_path / "task" / "bad.yaml").write_text(spec)
    with pytest.raises(SpecError, match=r"template 'Q: \{question\}' must contain \{prompt\}"):
        load_task_file(tmp_path / "task" / "bad.yaml")


def test_a_pool_naming_a_missing_file_is_one_clear_error(tmp_path, pool_task):
    from trex.tasks import SpecError, load_task_file

    spec = (tmp_path / "task" / "task.yaml").read_text().replace("file: pool.jsonl", "file: gone.jsonl")
    (tmp_path / "task" / "bad.yaml").write_text(spec)
    with pytest.raises(SpecError, match=r"pool 'extra': data file .*gone.jsonl' does not exist") as e:
        load_task_file(tmp_path / "task" / "bad.yaml")
    assert "\n" not in str(e.value)


def test_a_pool_whose_rows_would_take_a_splits_name_or_another_pools_is_refused(tmp_path, pool_task):
    from trex.tasks import SpecError, load_task_file

    spec = (tmp_path / "task" / "task.yaml").read_text()
    clash = spec.replace("train.jsonl, eval: eval.jsonl}", "train.jsonl, eval: eval.jsonl, pool-extra: eval.jsonl}"
                         ).replace("splits: [train, eval]", "splits: [train, eval, pool-extra]")
    twice = spec.replace("description: five extra rows}]",
                         "description: five extra rows}, {name: extra, file: pool.jsonl, description: again}]")
    for text, why in ((clash, "pool 'extra': its rows would be split 'pool-extra', which the task already has"),
                      (twice, "pool names must be distinct")):
        (tmp_path / "task" / "bad.yaml").write_text(text)
        with pytest.raises(SpecError, match=why):
            load_task_file(tmp_path / "task" / "bad.yaml")


def test_optuna_skips_a_told_node_whose_data_value_is_off_the_grid(pool_task):
    """A node whose recipe holds a value the data space has no choice for (rows=300, an LLM's or a user's
    plan) is not told to TPE; the proposal still comes."""
    from trex.events.evaluation import EvaluationFinished, MetricRecorded
    from trex.events.trials import TrialFinished
    from trex.plan import example_plan
    from trex.propose import propose_optuna

    _, task = pool_task
    ds = DataSpace.for_task(task)
    odd = example_plan("pooled", data=Recipe.model_validate({**recipe_for_task("pooled").model_dump(), "max_rows": 300}))
    assert ds.off_space(ds.values_of(odd.data.model_dump(mode="json")))
    evs = [SearchStarted(task="pooled", proposer="optuna")]
    for i in range(6):
        nid = f"n{i}"
        evs += [PlanProposed(node_id=nid, parent_id=None, plan=odd.model_dump(mode="json")),
                TrialStarted(node_id=nid, trial_id=f"t{i}"),
                TrialFinished(node_id=nid, trial_id=f"t{i}", adapter=f"{i}" * 64, compute_seconds=1.0),
                MetricRecorded(node_id=nid, name="accuracy", value=0.1 * i, primary=True),
                EvaluationFinished(node_id=nid, eval_id=f"e{i}", backend="cpu", n_examples=6)]
    p = propose_optuna(fold(evs), Decision(None, "draft", "mcts", 0, 7, "d7"), task="pooled", steps=20,
                       batch_size=8, data=ds)
    assert p.plan is not None and "after 0 evaluated trials" in p.rationale


def test_a_constraint_on_the_primary_metric_is_refused(tmp_path, pool_task):
    from trex.tasks import SpecError, load_task_file

    spec = (tmp_path / "task" / "task.yaml").read_text().replace("primary: true}", "primary: true, at_least: 0.5}")
    (tmp_path / "task" / "bad.yaml").write_text(spec)
    with pytest.raises(SpecError, match="primary metric"):
        load_task_file(tmp_path / "task" / "bad.yaml")


# ------------------------------------------------------------------------------------- constraints
def _scored(nid: str, score: float, add: float | None, secondary_first: bool) -> list:
    evs = [PlanProposed(node_id=nid, parent_id=None, plan={}), TrialStarted(node_id=nid, trial_id=f"t{nid}"),
           TrialFinished(node_id=nid, trial_id=f"t{nid}", adapter=f"a{nid}")]
    metrics = [MetricRecorded(node_id=nid, name="exact_match", value=score, primary=True)]
    if add is not None:
        metrics.append(MetricRecorded(node_id=nid, name="add_exact_match", value=add))
    if secondary_first:
        metrics.reverse()
    return evs + metrics + [EvaluationFinished(node_id=nid, eval_id=f"e{nid}", backend="cpu", n_examples=1)]


@settings(max_examples=150, deadline=None)
@given(nodes=st.lists(st.tuples(st.floats(0, 1), st.one_of(st.none(), st.floats(0, 1)), st.booleans()),
                      min_size=1, max_size=12))
def test_an_infeasible_node_is_never_the_best(nodes):
    evs = [SearchStarted(task="arith-sub-retain", constraints=(Constraint(metric="add_exact_match", at_least=0.9),))]
    for i, (score, add, first) in enumerate(nodes):
        evs += _scored(f"n{i}", score, add, first)
    tree = fold(evs)
    feasible = [(s, i) for i, (s, a, _) in enumerate(nodes) if a is not None and a >= 0.9]
    for i, (s, a, _) in enumerate(nodes):
        n = tree.nodes[f"n{i}"]
        assert (n.infeasible is None) == (a is not None and a >= 0.9)
    if not feasible:
        assert tree.best is None
    else:
        best = max(s for s, _ in feasible)
        assert tree.best.feasible and tree.best_score == best
    # event by event, the fold never holds an infeasible best either
    t = fold(evs[:1])
    for ev in evs[1:]:
        t = apply(t, ev)
        assert t.best is None or t.best.infeasible is None


def test_the_held_out_ranking_and_the_finish_skip_infeasible_nodes():
    from trex.orchestrate.rules import finish_events, heldout_todo

    evs = [SearchStarted(task="arith-sub-retain", constraints=(Constraint(metric="add_exact_match", at_least=0.9),))]
    evs += _scored("n1", 0.9, 0.2, False) + _scored("n2", 0.5, 0.95, False) + _scored("n3", 0.7, None, False)
    tree = fold(evs)
    assert tree.nodes["n1"].infeasible == "add_exact_match 0.2 < 0.9 required"
    assert tree.nodes["n3"].infeasible == "add_exact_match not measured"
    assert [n for n, _, _ in heldout_todo(tree, 2)] == ["n2"]
    assert finish_events(tree, None)[-1].best_node_id == "n2"
    assert tree.summary()["infeasible"] == {"n1": "add_exact_match 0.2 < 0.9 required",
                                            "n3": "add_exact_match not measured"}


def test_insights_under_constraints_compare_feasible_nodes_and_say_what_meets_the_constraints():
    from trex.insights import distill

    cons = (Constraint(metric="add_exact_match", at_least=0.9),)
    mixed = {"data": {"sources": [{"uri": "task:arith-sub-retain/train", "weight": 0.8},
                                  {"uri": "pool:arith-sub-retain/addition", "weight": 0.2}], "mix": "first"}}
    plain = {"data": {"sources": [{"uri": "task:arith-sub-retain/train"}]}}
    evs = [SearchStarted(task="arith-sub-retain", constraints=cons)]
    for nid, plan, score, add in (("n1", plain, 0.8, 0.1), ("n2", plain, 0.7, 0.2), ("n3", mixed, 0.5, 0.95),
                                  ("n4", mixed, 0.4, 0.97)):
        evs += [PlanProposed(node_id=nid, parent_id=None, plan=plan)] + _scored(nid, score, add, False)[1:]
    texts = [e.text for e in distill(fold(evs))]
    assert ("pool addition mixed in (2/2 feasible: n3, n4) meets the constraints more often than train split only "
            "(0/2 feasible: n1, n2) on arith-sub-retain") in texts
    assert not any("beats" in t and "train split only" in t.split(" beats ")[0] for t in texts)  # never from infeasible scores


# ------------------------------------------------------------------------------------- real training
@pytest.mark.slow
def test_cleaning_by_loss_drops_the_rows_the_named_adapter_finds_hardest(arith_home):
    from trex.artifacts import ArtifactStore
    from trex.events import EventLog
    from trex.plan import example_plan
    from trex.train import Executor
    from trex.train.row_loss import row_losses
    from trex.artifacts import base_model_hash

    log = EventLog(arith_home)
    ex = Executor(arith_home, lambda ev: log.append("s", [ev]), search_id="s", threads=1)
    small = Recipe(sources=(Source(uri="task:arith-sub/train"),), max_rows=200)
    a = ex.run(example_plan(max_steps=20, learning_rate=5e-3, batch_size=16, data=small), task="arith-sub",
               node_id="n1")
    b = ex.run(example_plan(max_steps=20, learning_rate=1e-4, batch_size=16, data=small), task="arith-sub",
               node_id="n2")
    assert a.ok and b.ok and a.adapter != b.adapter
    store = ArtifactStore.for_home(arith_home)
    base = arith_home / "models" / "arith-base-0"
    from trex.recipe import materialize

    kept = {}
    for node, out in (("n1", a), ("n2", b)):
        plan = example_plan(max_steps=20, data=Recipe.model_validate(
            {**small.model_dump(), "clean": {"node": node, "adapter": out.adapter, "fraction": 0.25}}))
        _, path = materialize(plan.data, arith_home, row_losses=ex._row_losses(plan, base, base_model_hash(base)))
        kept[node] = [json.loads(x) for x in path.read_text().splitlines()]
    plain = apply_recipe(small, arith_home)  # the same 200 rows (shuffled: the set dropped does not depend on it)
    for node, out in (("n1", a), ("n2", b)):
        losses = row_losses(base, store.get(out.adapter), plain, max_len=64)
        want = {r["prompt"] for r in drop_hardest(plain, losses, 0.25)}
        assert {r["prompt"] for r in kept[node]} == want and len(want) == 150, node
    assert {r["prompt"] for r in kept["n1"]} != {r["prompt"] for r in kept["n2"]}  # the named adapter decides
    cached = list((arith_home / "cache" / "row-loss").rglob("*.json"))
    assert len(cached) == 2
    # an adapter the store does not hold: a failed trial naming it, no worker started
    plan = example_plan(max_steps=20, data=Recipe.model_validate(
        {**small.model_dump(), "clean": {"node": "n7", "adapter": "b" * 64, "fraction": 0.25}}))
    out = ex.run(plan, task="arith-sub", node_id="n3")
    assert out.status == "failed" and "node n7's adapter bbbbbbbbbbbb is not in the artifact store" in out.message


@pytest.mark.slow
@pytest.mark.parametrize("proposer", ["random", "optuna"])
def test_short_searches_edit_data_and_track_feasibility(arith_home, proposer):
    """3 trials of 20 steps on arith-sub-retain (addition exact match >= 0.9 required): the proposer edits
    the recipe (a pool share, a row cap, ...), the constraint is recorded and every scored node is judged
    by it; whatever is reported as best is feasible, on validation and (where scored) on test."""
    from click.testing import CliRunner

    from trex.cli import main as cli
    from trex.conductor import SearchConfig, run_search, start_search
    from trex.events import EventLog
    from trex.events.search import Budget

    log = EventLog(arith_home)
    sid = start_search(log, SearchConfig(task="arith-sub-retain", proposer=proposer, budget=Budget(max_trials=3),
                                         trial_steps=20, batch_size=32, eval_limit=100, threads=1, seed=3))
    tree = run_search(arith_home, sid)
    assert tree.started.constraints == (Constraint(metric="add_exact_match", at_least=0.9),)
    default = recipe_for_task("arith-sub-retain")
    plans = [Recipe.model_validate(n.plan["data"]) for n in tree.nodes.values() if n.plan]
    assert len(plans) == 3 and any(p != default for p in plans), plans
    scored = [n for n in tree.nodes.values() if n.score is not None]
    assert scored
    for n in scored:
        add = dict(n.metrics).get("add_exact_match")
        assert (n.infeasible is None) == (add is not None and add >= 0.9), (n.node_id, add, n.infeasible)
    assert tree.best is None or tree.best.feasible
    out = CliRunner().invoke(cli, ["status", sid, "--home", str(arith_home)])
    assert out.exit_code == 0 and "constraints: add_exact_match >= 0.9" in out.output, out.output


@pytest.mark.slow
def test_a_second_stage_continues_the_parents_adapter_on_another_recipe_and_is_reused_when_repeated(arith_home):
    from trex.events import EventLog
    from trex.plan import example_plan
    from trex.train import Executor

    log = EventLog(arith_home)
    seen = []
    ex = Executor(arith_home, lambda ev: (seen.append(ev), log.append("s", [ev])), search_id="s", threads=1)
    first = ex.run(example_plan("arith-sub-retain", max_steps=20, learning_rate=3e-3, batch_size=16),
                   task="arith-sub-retain", node_id="n1")
    assert first.status == "finished"
    ds = DataSpace.for_task(__import__("trex.tasks", fromlist=["get_task"]).get_task("arith-sub-retain", arith_home))
    stage = Recipe.model_validate(ds.to_recipe({**ds.defaults(), "pool_addition": 0.3, "rows": 256}, {}))
    child = example_plan("arith-sub-retain", max_steps=10, learning_rate=1e-3, batch_size=16, data=stage,
                         continue_from_parent=True)
    second = ex.run(child, task="arith-sub-retain", node_id="n2", parent_adapter=first.adapter)
    assert second.status == "finished" and second.resume_from == first.adapter
    assert second.adapter != first.adapter
    again = ex.run(child, task="arith-sub-retain", node_id="n3", parent_adapter=first.adapter)
    assert again.status == "reused" and again.adapter == second.adapter
    fresh = ex.run(child.model_copy(update={"continue_from_parent": False}), task="arith-sub-retain", node_id="n4")
    assert fresh.status == "finished" and fresh.work_key != second.work_key  # the parent is part of the work
