"""The log commands end to end, and the CLI's start-up staying light."""
from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from trex.cli import main
from trex.events.log import EventLog
from trex.events.search import SearchStarted

HEAVY = ("torch", "transformers", "ray", "vllm", "peft", "datasets")


def run(*args, home=None):
    argv = list(args) + (["--home", str(home)] if home is not None else [])
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def test_note_appends_an_event_and_rejects_unknown_search(log):
    r = run("note", "s", "hello", home=log.home)
    assert r.exit_code == 1 and "no search 's'" in r.stderr
    log.append("s", [SearchStarted(task="t")])
    r = run("note", "s", "looks good", "--author", "ops", "--format", "json", home=log.home)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["seq"] == 2
    ev = log.read("s")[-1].event
    assert ev.text == "looks good" and ev.author == "ops"
    r = run("note", "s", "", home=log.home)
    assert r.exit_code == 1 and "invalid note" in r.stderr


def test_sql_formats_and_refusal_exit_code(log):
    log.append("s", [SearchStarted(task="t")])
    r = run("sql", "SELECT search_id, seq FROM events", "--format", "json", home=log.home)
    assert json.loads(r.stdout) == [{"search_id": "s", "seq": 1}]
    r = run("sql", "SELECT search_id, seq FROM events", "--format", "csv", home=log.home)
    assert r.stdout == "search_id,seq\ns,1\n"  # \n, not csv's default \r\n
    r = run("sql", "SELECT search_id FROM events", home=log.home)
    assert "s" in r.stdout and "1 row(s)" in r.stderr
    r = run("sql", "COPY (SELECT 1) TO 'x.csv'", home=log.home)
    assert r.exit_code == 2 and "refused" in r.stderr and r.stdout == ""


def test_verify_export_import(log, tmp_path):
    log.append("s", [SearchStarted(task="t")])
    r = run("verify", "--format", "json", home=log.home)
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True
    seg = next(log.segdir.glob("*.jsonl"))
    with open(seg, "ab") as f:
        f.write(b"~00000400 1234abcd [torn")  # a record header whose length runs past the end
    r = run("verify", home=log.home)
    assert r.exit_code == 1 and "torn_tail" in r.stdout
    r = run("verify", "--repair", home=log.home)
    assert r.exit_code == 0 and "dropped a torn tail" in r.stderr
    out = tmp_path / "s.parquet"
    assert run("export", "s", "-o", str(out), home=log.home).exit_code == 0
    other = tmp_path / "other"
    r = run("import", str(out), "--format", "json", home=other)
    assert json.loads(r.stdout) == {"s": 1}
    r = run("import", str(out), "--format", "json", home=other)
    assert json.loads(r.stdout) == {"s": 0}
    assert run("verify", "s", home=other).exit_code == 0
    r = run("export", "nope", "-o", str(out), home=log.home)
    assert r.exit_code == 1 and "no search 'nope'" in r.stderr
    r = run("ls", "--format", "json", home=other)
    assert [x["search_id"] for x in json.loads(r.stdout)] == ["s"]


def test_light_commands_import_no_heavy_library(tmp_path):
    EventLog(tmp_path).append("s", [SearchStarted(task="t")])
    code = (
        "import sys\n"
        "from trex.cli import main\n"
        "for argv in (['--help'], ['sql', 'SELECT count(*) FROM events', '--home', sys.argv[1]],\n"
        "             ['note', 's', 'x', '--home', sys.argv[1]], ['status', '--home', sys.argv[1]],\n"
        "             ['status', 's', '--home', sys.argv[1]], ['run', '--help'], ['resume', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, (argv, e.code)\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_json_output_is_strict_json_even_for_a_nan_or_infinite_metric(log):
    """A metric of NaN (a diverged run) and one of inf: `--format json` printed the bare literals NaN and
    Infinity, which JSON does not have (strict parsers refused it, exit 0). They come out as the log
    stores them: the strings "NaN" and "Infinity"."""
    from trex.events.evaluation import EvaluationFinished, MetricRecorded
    from trex.events.plans import PlanProposed
    from trex.events.trials import TrialFinished, TrialStarted

    log.append("s", [SearchStarted(task="arith-sub"), PlanProposed(node_id="n1", parent_id=None, plan={}),
                     TrialStarted(node_id="n1", trial_id="t1"), TrialFinished(node_id="n1", trial_id="t1", adapter="a"),
                     MetricRecorded(node_id="n1", name="acc", value=float("nan"), primary=True),
                     MetricRecorded(node_id="n1", name="loss", value=float("inf")),
                     EvaluationFinished(node_id="n1", eval_id="e1", backend="cpu", n_examples=1, outputs_artifact="o")])
    r = run("sql", "SELECT name, value FROM metrics ORDER BY name", "--format", "json", home=log.home)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout, parse_constant=lambda c: 1 / 0) == [{"name": "acc", "value": "NaN"},
                                                                   {"name": "loss", "value": "Infinity"}]
    r = run("tree", "s", "--format", "json", home=log.home)
    assert r.exit_code == 0, r.output
    json.loads(r.stdout, parse_constant=lambda c: 1 / 0)  # no bare NaN or Infinity anywhere
