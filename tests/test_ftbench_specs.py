"""Task files: the schema, the shipped specs (CPU task and the paper's ten), and clear errors."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ftbench.tasks import builtin_specs
from trex.tasks import SpecError, fetch_plan, load_spec, problems

PAPER = {"aci-bench", "tomg-bench", "omebench", "hoc", "sst2", "cs-bench", "openfindata", "econlogicqa", "gta",
         "lawbench"}


def test_the_paper_tasks_validate_and_say_they_need_a_gpu_and_the_hub():
    specs = builtin_specs()
    assert PAPER <= set(specs)
    for name in PAPER:
        s = specs[name]
        assert s.base_model.hub == "Qwen/Qwen3-1.7B" and s.requires.gpu and s.requires.hub
        assert s.data.hub and s.paper
        plan = fetch_plan(s)
        assert any(s.data.hub in line for line in plan) and any("Qwen3-1.7B" in line for line in plan)
        assert problems(s)  # none of them runs on this machine, and each says why


def test_the_cpu_task_runs_here_and_matches_its_registered_task():
    from trex.tasks import get_task

    s = builtin_specs()["arith-sub"]
    assert problems(s) == [] and fetch_plan(s) == []
    t = get_task("arith-sub")
    assert t.description == s.description and [m.name for m in t.metrics] == [m.name for m in s.metrics]


def test_a_paper_task_is_refused_by_name_with_the_reason():
    from trex.tasks import get_task

    with pytest.raises(KeyError, match="cannot run here: needs the Hugging Face hub.*stanfordnlp/sst2"):
        get_task("sst2")


def write(tmp_path, text: str):
    p = tmp_path / "task.yaml"
    p.write_text(text)
    return p


GOOD = """
name: my-task
domain: test
description: a user's own task
base_model: {path: model}
data: {files: {train: train.jsonl, eval: eval.jsonl}}
metrics: [{name: exact_match, split: eval, primary: true}]
"""


def test_a_users_task_file_with_missing_files_is_rejected_naming_them(tmp_path):
    s = load_spec(write(tmp_path, GOOD))
    why = problems(s, tmp_path)
    assert any("base model folder" in w and "model" in w for w in why)
    assert any("split 'train'" in w for w in why) and any("split 'eval'" in w for w in why)
    (tmp_path / "model").mkdir()
    (tmp_path / "train.jsonl").write_text("{}\n")
    (tmp_path / "eval.jsonl").write_text("{}\n")
    assert problems(s, tmp_path) == [f"base model folder {str(tmp_path / 'model')!r} has no config.json "
                                     "(a transformers model folder)"]
    (tmp_path / "model" / "config.json").write_text("{}")
    assert problems(s, tmp_path) == []


@pytest.mark.parametrize("change, message", [
    ("metrics: [{name: bleurt_42, split: eval, primary: true}]", "unknown metric 'bleurt_42'"),
])
def test_an_unknown_metric_is_a_problem_before_anything_starts(tmp_path, change, message):
    text = GOOD.replace("metrics: [{name: exact_match, split: eval, primary: true}]", change)
    assert any(message in w for w in problems(load_spec(write(tmp_path, text)), tmp_path))


@pytest.mark.parametrize("text, message", [
    ("name: x\n", "domain: Field required"),
    (GOOD.replace("primary: true", "primary: false"), "exactly one metric must be primary"),
    (GOOD.replace("split: eval", "split: test"), "split 'test', which is not in splits"),
    (GOOD.replace("base_model: {path: model}", "base_model: {path: model, hub: org/m}"), "exactly one of builder"),
    (GOOD.replace("base_model: {path: model}", "base_model: {hub: org/m}"), "requires.hub: true"),
    (GOOD.replace("{files: {train: train.jsonl, eval: eval.jsonl}}", "{files: {train: train.jsonl}}"),
     "a file for each split"),
    (GOOD + "colour: blue\n", "colour: Extra inputs are not permitted"),
    ("- just\n- a list\n", "a task file is a YAML mapping"),
    ("name: [unclosed\n", "not valid YAML"),
    # a split name becomes a file name under the home: anything but a plain name is refused where it is read
    (GOOD.replace("{files: {train: train.jsonl, eval: eval.jsonl}}",
                  "{files: {train: train.jsonl, ../../log/segments/00000001: eval.jsonl}}")
     + "splits: [train, ../../log/segments/00000001]\n", "String should match pattern"),
    (GOOD + "splits: [train, eval, Eval/x]\n", "String should match pattern"),
    (GOOD.replace("split: eval", "split: ../eval"), "String should match pattern"),
])
def test_invalid_task_files_are_rejected_naming_the_file_and_field(tmp_path, text, message):
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, text))
    assert str(tmp_path / "task.yaml") in str(e.value) and message in str(e.value)


def test_ftbench_list_and_prepare_of_a_hub_task(tmp_path):
    from ftbench.cli import main

    r = CliRunner().invoke(main, ["list", "--format", "json"])
    assert r.exit_code == 0
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert rows["arith-sub"]["runnable_here"] and not rows["sst2"]["runnable_here"]
    r = CliRunner().invoke(main, ["prepare", "hoc", "--home", str(tmp_path), "--format", "json"])
    assert r.exit_code == 2
    plan = json.loads(r.stdout)
    assert any("bigbio/hallmarks_of_cancer" in x for x in plan["would_fetch"])
    assert not any(tmp_path.iterdir())  # nothing fetched, nothing written


# ------------------------------------------------------------------ the SmolLM2 CPU tasks
def test_the_generators_are_deterministic_and_their_splits_disjoint():
    from ftbench.synthetic import orders, tickets

    for gen in (tickets, orders):
        a, b, c = gen(0), gen(0), gen(1)
        assert a == b and a != c
        train = {r["prompt"] for r in a["train"]}
        val, test = {r["prompt"] for r in a["eval"]}, {r["prompt"] for r in a["test"]}
        assert len(train) == len(a["train"]) and len(test) == len(a["test"]) == 200
        assert not train & val and not train & test and not val & test  # train / validation / test
    labels = {r["completion"] for r in tickets(0)["eval"]}
    assert labels == {"billing", "technical", "shipping", "account"}


def test_macro_f1_scores_routing_outputs_including_malformed_ones():
    from trex.tasks.metrics import score

    refs = ["billing", "technical", "shipping", "account"]
    assert score("macro_f1", [" billing", "technical\n", "shipping", "account"], refs)[0] == 1.0
    assert score("macro_f1", ["billing", "technical", "Shipping", "account"], refs)[1][2] == 0.0  # labels are exact
    value, per = score("macro_f1", ["billing", "I think tech", "", "account"], refs)
    assert per == [1.0, 0.0, 0.0, 1.0] and value == pytest.approx(0.5)


def test_json_fields_scores_each_field_and_zero_for_malformed_output():
    from ftbench.synthetic import orders
    from trex.tasks.metrics import score

    ref = orders(0)["eval"][0]["completion"]
    fields = json.loads(ref)
    perfect = json.dumps(fields)
    one_wrong = json.dumps({**fields, "city": "Nowhere"})
    qty_as_text = json.dumps({**fields, "qty": str(fields["qty"])})
    outputs = [perfect + " and some chatter", one_wrong, qty_as_text, '{"id": "1", "name":', "not json", "[1, 2]",
               None]
    value, per = score("json_fields", outputs, [ref] * len(outputs))
    assert per == [1.0, 0.75, 1.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="reference must be a non-empty JSON object"):
        score("json_fields", ["{}"], ["[]"])


def test_the_smollm2_tasks_are_registered_and_run_here():
    from trex.tasks import get_task

    specs = builtin_specs()
    for name, metric in (("tickets", "macro_f1"), ("orders", "json_fields")):
        assert problems(specs[name]) == []
        t = get_task(name)
        assert t.base_model == "smollm2-135m" and t.primary_metric.name == metric


def test_a_split_name_from_a_recorded_task_definition_never_becomes_a_path(tmp_path):
    """A log's task_def (hostile or damaged) goes through the same check before anything is written."""
    from pydantic import ValidationError

    from trex.tasks import Task, get_task
    from trex.tasks.model import split_file

    d = get_task("tickets").model_dump(mode="json")
    d["splits"] = ["train", "../../../elsewhere"]
    with pytest.raises(ValidationError, match="splits"):
        Task.model_validate(d)
    with pytest.raises(ValueError, match="invalid split name"):
        split_file(tmp_path, "../x")
    assert split_file(tmp_path, "eval_add") == tmp_path / "eval_add.jsonl"


def test_task_data_is_never_written_through_a_link(tmp_path):
    from trex.tasks.files import write_jsonl

    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    link = tmp_path / "d" / "train.jsonl"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"):
        write_jsonl([{"prompt": "a", "completion": "b"}], link)
    assert target.read_text() == "keep me"
