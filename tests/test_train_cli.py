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
    assert types[0] == "SearchStarted" and types[1] == "TrialStarted" and "TrialFinished" in types
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
