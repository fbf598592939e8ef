import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from trex.events import EventLog
from trex.plan import example_plan, plan_hash
from trex.commands.train_cmd import stream_name, train


def test_cli_module_does_not_import_torch():
    code = "import sys, trex.commands.train_cmd, trex.cli, trex.tasks, trex.train, trex.plan, trex.recipe, trex.artifacts, ftbench.tasks, ftbench.cli; " \
           "bad = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules]; " \
           "assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_trex_train_json(arith_home, tmp_path):
    p = example_plan(max_steps=20, learning_rate=3e-3, batch_size=32)
    f = tmp_path / "plan.json"
    f.write_text(p.model_dump_json())
    r = CliRunner().invoke(train, [str(f), "--task", "arith-sub", "--home", str(arith_home), "--format", "json",
                                   "--threads", "1"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["status"] == "finished" and len(out["adapter"]) == 64
    assert out["search_id"] == stream_name(plan_hash(p)) == f"train-{plan_hash(p)[:12]}"
    assert 0.0 <= out["eval_metrics"]["exact_match"] <= 1.0 and "add_exact_match" in out["eval_metrics"]
    types = [e.type for e in EventLog(arith_home).read(out["search_id"])]
    assert types[:3] == ["SearchStarted", "DataOverlapChecked", "TrialStarted"] and "TrialFinished" in types
    assert types[-1] == "EvaluationFinished"  # scored through the search's Evaluator, recorded in the train stream
    # again: reused, text format
    r2 = CliRunner().invoke(train, [str(f), "--task", "arith-sub", "--home", str(arith_home), "--no-eval"])
    assert r2.exit_code == 0, r2.output
    assert f"adapter\t{out['adapter']}" in r2.stdout and "status\treused" in r2.stdout


def test_trex_train_rejects_bad_input(tmp_path):
    f = tmp_path / "plan.json"
    f.write_text(json.dumps({"learning_rate": 7}))
    r = CliRunner().invoke(train, [str(f), "--task", "arith-sub", "--home", str(tmp_path / "h")])
    assert r.exit_code == 1 and "invalid plan" in r.output
    f.write_text(example_plan().model_dump_json())
    r = CliRunner().invoke(train, [str(f), "--task", "nope", "--home", str(tmp_path / "h")])
    assert r.exit_code == 1 and "unknown task" in r.output


@pytest.mark.slow
def test_trex_train_on_tickets_scores_as_a_search_scores_the_same_adapter(tmp_path, smollm2_dir):
    """The number `trex train` prints is the Evaluator's: the same adapter scored as a search node agrees."""
    import shutil

    from trex.conductor import SearchConfig, evaluate_node, make_evaluator, start_search
    from trex.events.search import Budget
    from trex.llm.smollm2 import smollm2_dir as home_smollm2_dir

    home = tmp_path / "home"
    shutil.copytree(smollm2_dir, home_smollm2_dir(home))  # the converted model, as a fresh home would build it
    p = example_plan(max_steps=6, learning_rate=1e-3, batch_size=4)
    f = tmp_path / "plan.json"
    f.write_text(p.model_dump_json())
    r = CliRunner().invoke(train, [str(f), "--task", "tickets", "--home", str(home), "--format", "json",
                                   "--threads", "2", "--eval-limit", "24"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["primary_metric"] == "macro_f1" and out["eval_limit"] == 24

    log = EventLog(home)
    sid = start_search(log, SearchConfig(task="tickets", budget=Budget(max_trials=1), eval_limit=24))
    emit = lambda ev: log.append(sid, [ev])  # noqa: E731
    from trex.artifacts import ArtifactStore

    assert ArtifactStore(home).get(out["adapter"]).is_dir()
    assert evaluate_node(make_evaluator(home, "tickets", emit), home, "tickets", "n1", out["adapter"], limit=24,
                         emit=emit)
    scored = [e.event for e in log.read(sid) if e.type == "MetricRecorded" and e.event.primary]
    assert [m.value for m in scored] == [out["primary_score"]]
