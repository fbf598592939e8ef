"""FT-Bench's runner and report, and a user's own task file run with `trex run path/to/task.yaml`."""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tests.test_actors as actors_tests  # its helpers (a module alias: pytest does not collect its tests twice)
from ftbench.report import CellRun, best_so_far, reach, summarise
from trex.conductor import base_score
from trex.events.log import EventLog
from trex.search import build_tree

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
FTBENCH = [sys.executable, "-m", "ftbench.cli"]
TREX = [sys.executable, "-m", "trex.cli"]


def _run(args, timeout=900):
    return subprocess.run(args, env=ENV, capture_output=True, text=True, cwd=REPO, timeout=timeout)


# ------------------------------------------------------------------------------ report arithmetic
def test_best_so_far_skips_failed_trials_and_follows_the_direction():
    assert best_so_far([None, 0.2, 0.1, None, 0.5]) == [None, 0.2, 0.2, 0.2, 0.5]
    assert best_so_far([0.9, None, 0.4, 0.6], "min") == [0.9, 0.9, 0.4, 0.4]
    assert best_so_far([None, 0.1, 0.3], start=0.2) == [0.2, 0.2, 0.3]  # the base model until beaten


def test_reach_counts_trials_and_compute_until_the_threshold():
    assert reach([0.1, None, 0.8, 0.9], [10, 5, 20, 30], 0.75) == (3, 35.0)
    assert reach([0.1, 0.2], [1, 1], 0.75) == (None, None)
    assert reach([0.5, 0.2], [4, 4], 0.3, "min") == (2, 8.0)


def test_the_wall_clock_axis_takes_each_score_when_it_was_recorded_llm_time_included():
    """Wall-clock since the search began, proposing included: a score counts from when it was recorded,
    not in the order its trial closed (a later-closing trial can be scored first)."""
    from ftbench.report import _curves, reach_wall

    assert reach_wall([0.1, 0.9, None, 0.95], [5.0, 40.0, None, 30.0], 0.75) == 30.0
    assert reach_wall([0.1, 0.2], [1.0, 2.0], 0.75) is None
    assert reach_wall([0.5, 0.2], [4.0, 9.0], 0.3, "min") == 9.0
    r = _cell("a", 0, [0.3, 0.9, None], base=0.2)
    r.wall = [50.0, 20.0, None]
    row = _curves([r], "max", grid=[0.0, 19.9, 20.0, 49.0, 60.0], axis="wall")[0].tolist()
    assert row == [0.2, 0.2, 0.9, 0.9, 0.9]
    assert _curves([r], "max", grid=[0.0, 10.0, 20.0, 30.0], axis="compute")[0].tolist() == [0.2, 0.3, 0.9, 0.9]


def _cell(proposer, seed, scores, base=0.2, task="t"):
    from trex.events.search import SearchStarted, TrialSettings

    started = SearchStarted(task=task, proposer=proposer, seed=seed, trial=TrialSettings(steps=10))
    return CellRun(f"x-{task}-{proposer}-s{seed}", task, proposer, seed, started, len(scores), 60.0,
                   True, base, list(scores), [10.0] * len(scores))


def test_summary_measures_90_percent_of_the_gain_over_the_base_model():
    runs = [_cell("a", 0, [0.3, 1.0]), _cell("a", 1, [0.95, 0.4]), _cell("a", 2, [None, 0.5]),
            _cell("b", 0, [0.25, 0.3]), _cell("b", 1, [0.9, None]), _cell("b", 2, [0.2, 0.21])]
    s = summarise(runs)["tasks"]["t"]
    assert s["base_score"] == 0.2 and s["best_known"] == 1.0
    assert s["threshold_90"] == pytest.approx(0.92)  # 0.2 + 0.9 * (1.0 - 0.2), not 0.9 * 1.0
    a, b = s["proposers"]["a"], s["proposers"]["b"]
    assert a["best_per_seed"] == [1.0, 0.95, 0.5] and a["best_median"] == 0.95
    assert (a["best_min"], a["best_max"]) == (0.5, 1.0)
    assert a["reached_90"] == 2 and a["trials_to_90_median"] == 1.5 and a["compute_to_90_median_s"] == 15.0
    assert a["failed_trials"] == 1
    assert b["reached_90"] == 0 and b["trials_to_90_median"] is None and b["best_median"] == 0.3


# ------------------------------------------------------------------------------ a user's task file
TASK_FILE = """
name: my-sub
domain: arithmetic
description: subtraction from my own files, on my own model folder
base_model: {path: model}
data: {files: {train: data/train.jsonl, eval: data/eval.csv}, prompt_field: q, completion_field: a}
metrics: [{name: exact_match, split: eval, primary: true}]
budget: {trials: 1, steps: 30, batch_size: 16, eval_limit: 40}
"""


def _user_task(tmp_path, arith_home, metric="exact_match"):
    import shutil

    from ftbench.arith import subtraction_split

    folder = tmp_path / "mytask"
    shutil.copytree(arith_home / "models" / "arith-base-0", folder / "model")
    train, ev = subtraction_split(7)
    (folder / "data").mkdir()
    (folder / "data" / "train.jsonl").write_text("".join(json.dumps({"q": r["prompt"], "a": r["completion"]}) + "\n"
                                                         for r in train[:400]))
    (folder / "data" / "eval.csv").write_text("q,a\n" + "".join(f"{r['prompt']},{r['completion']}\n" for r in ev[:60]))
    (folder / "task.yaml").write_text(TASK_FILE.replace("exact_match", metric))
    return folder / "task.yaml"


@pytest.mark.slow
def test_trex_run_takes_a_users_task_file_and_records_it(tmp_path, arith_home):
    task_file = _user_task(tmp_path, arith_home)
    res = _run(TREX + ["run", str(task_file), "--proposer", "random", "--search-id", "mine", "--num-cpus", "2",
                       "--home", str(arith_home), "--format", "json"])
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["status"] == "finished" and out["trials"] == 1 and out["base_score"] is not None
    log = EventLog(arith_home)
    started = log.read("mine", until_seq=1)[0].event
    assert started.task == "my-sub" and started.budget.max_trials == 1  # the file's budget defaults
    assert started.trial.steps == 30 and started.trial.eval_limit == 40
    assert Path(started.task_def["base_model_path"]) == (task_file.parent / "model").resolve()
    assert len(started.task_def_hash) == 64
    # the data came from the user's files, mapped to prompt/completion
    rows = [json.loads(x) for x in (arith_home / "tasks" / "my-sub" / "eval.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and set(rows[0]) == {"prompt", "completion"}
    # every process found the task by name in the home: the base model and the trial were scored on it
    tree = build_tree(log, "mine")
    assert tree.trials_finished == 1 and tree.best is not None


def test_a_task_file_that_cannot_run_is_refused_before_anything_starts(tmp_path, arith_home):
    task_file = _user_task(tmp_path, arith_home, "no_such_metric")
    res = _run(TREX + ["run", str(task_file), "--home", str(arith_home)], timeout=120)
    assert res.returncode == 1 and str(task_file) in res.stderr and "unknown metric 'no_such_metric'" in res.stderr
    (task_file.parent / "data" / "eval.csv").unlink()
    task_file.write_text(TASK_FILE)
    res = _run(TREX + ["run", str(task_file), "--home", str(arith_home)], timeout=120)
    assert res.returncode == 1 and "data file for split 'eval'" in res.stderr and "eval.csv" in res.stderr
    (task_file.parent / "data" / "eval.csv").write_text("q,answer\n1-1=,0\n")  # no column 'a'
    res = _run(TREX + ["run", str(task_file), "--home", str(arith_home)], timeout=120)
    assert res.returncode == 1 and "eval.csv: row 1 lacks 'q' or 'a'" in res.stderr
    assert EventLog(arith_home).searches() == []
    assert not (arith_home / "tasks" / "my-sub").exists()  # nothing installed either
    (task_file.parent / "data" / "eval.csv").write_text("\ufeffq,a\n1-1=,0\n")  # a spreadsheet's BOM: fine
    (task_file.parent / "model" / "config.json").unlink()
    res = _run(TREX + ["run", str(task_file), "--home", str(arith_home)], timeout=120)
    assert res.returncode == 1 and "has no config.json" in res.stderr and "Traceback" not in res.stderr
    assert EventLog(arith_home).searches() == []


def test_an_installed_task_name_means_one_definition(tmp_path):
    from trex.tasks import TaskSpec, get_task, install_task, task_from_spec
    import yaml

    spec = TaskSpec.model_validate(yaml.safe_load(TASK_FILE))
    t = task_from_spec(spec, tmp_path)
    install_task(t, tmp_path)
    assert get_task("my-sub", tmp_path) == t
    install_task(t, tmp_path)  # the same definition again: fine
    other = task_from_spec(spec, tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="already installed .* different definition"):
        install_task(other, tmp_path)
    with pytest.raises(ValueError, match="built-in task has that name"):
        install_task(t.model_copy(update={"name": "arith-sub"}), tmp_path)
    with pytest.raises(ValueError, match="built-in task has that name"):  # a paper task, not runnable here
        install_task(t.model_copy(update={"name": "sst2"}), tmp_path)
    with pytest.raises(KeyError, match="unknown task 'my-sub'"):
        get_task("my-sub", tmp_path / "another-home")


# ------------------------------------------------------------------------------ ftbench run + report
@pytest.mark.slow
def test_ftbench_run_survives_a_kill_resumes_and_the_report_matches_the_log(tmp_path, arith_home):
    home = arith_home
    args = FTBENCH + ["run", "--tasks", "arith-sub", "--proposers", "random,optuna", "--seeds", "2",
                      "--budget-trials", "2", "--steps", "30", "--eval-limit", "40", "--parallel", "2",
                      "--threads", "1", "--tag", "t", "--home", str(home)]
    sids = ["t-arith-sub-random-s0", "t-arith-sub-optuna-s0", "t-arith-sub-random-s1", "t-arith-sub-optuna-s1"]
    with open(tmp_path / "killed-run.log", "w") as out:  # a file, not a pipe nobody reads while we wait
        proc = subprocess.Popen(args, env=ENV, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            actors_tests.wait_for(home, sids[1], "TrialStarted", timeout=600)  # the second search is training
            time.sleep(0.5)
        finally:
            proc.kill()
            proc.wait()
    log = EventLog(home)
    assert set(log.searches()) == set(sids)  # every cell was recorded up front
    assert build_tree(log, sids[0]).status == "finished" and build_tree(log, sids[1]).status == "running"
    first_done = log.version(sids[0])

    res = _run(args + ["--format", "json"])
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["search_id"]: r for r in json.loads(res.stdout)}
    assert set(rows) == set(sids) and all(r["status"] == "finished" for r in rows.values())
    assert log.version(sids[0]) == first_done  # a finished cell is not touched again
    for sid in sids:
        inv = actors_tests.check_invariants(home, sid)  # nothing trained twice, every trial closed
        assert inv["tree"].started.labels["ftbench_tag"] == "t"
    assert build_tree(log, sids[1]).resumes >= 1

    out = tmp_path / "report"
    rep = _run(FTBENCH + ["report", "--tag", "t", "--home", str(home), "--out", str(out), "--format", "json"],
               timeout=120)
    assert rep.returncode == 0, rep.stderr[-3000:]
    summary = json.loads(rep.stdout)
    task = summary["tasks"]["arith-sub"]
    for p in ("random", "optuna"):
        trees = [build_tree(log, f"t-arith-sub-{p}-s{s}") for s in (0, 1)]
        assert task["proposers"][p]["best_per_seed"] == [t.best_score for t in trees]
        # one row per trial the budget paid for: an attempt abandoned by the kill and its retry are two
        assert task["proposers"][p]["trials_per_seed"] == [t.trials for t in trees]
    assert task["base_score"] == pytest.approx(base_score(log, sids[0]))
    assert task["settings"]["trial_steps"] == 30 and task["settings"]["budget_trials"] == 2
    md = (out / "report.md").read_text()
    assert "## arith-sub" in md and "| random |" in md and "| optuna |" in md
    for axis in ("trials", "compute", "wall"):
        assert (out / f"arith-sub-{axis}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = _run(FTBENCH + ["report", "--tag", "nope", "--home", str(home), "--out", str(out)], timeout=120)
    assert missing.returncode == 1 and "no searches of benchmark run 'nope'" in missing.stderr


def test_a_benchmark_cell_continues_only_with_the_settings_it_started_with(tmp_path):
    from ftbench.runner import Cell, start_cell
    from trex.tasks import get_task

    kw = dict(budget_trials=3, policy="mcts", parallel=1, threads=1, steps=20, batch_size=8, eval_limit=10,
              trial_time_limit_s=60)
    cell = Cell("arith-sub", "random", 1, "x")
    assert start_cell(tmp_path, cell, get_task("arith-sub"), **kw) == "x-arith-sub-random-s1"
    started = EventLog(tmp_path).read(cell.search_id)[0].event
    assert started.seed == 1 and started.proposer == "random" and started.prior_insights is False
    assert start_cell(tmp_path, cell, get_task("arith-sub"), **kw) == cell.search_id  # the same: continue it
    assert EventLog(tmp_path).version(cell.search_id) == 1
    with pytest.raises(ValueError, match="trial_steps 20 there, 40 asked.*another --tag"):
        start_cell(tmp_path, cell, get_task("arith-sub"), **{**kw, "steps": 40})
    assert started.labels["ftbench_reuse"] == "cell"  # its trials are served only from its own work
    with pytest.raises(ValueError, match="reuse cell there, home asked"):
        start_cell(tmp_path, cell, get_task("arith-sub"), **{**kw, "reuse": "home"})
    assert started.metric_direction == "max"
    from trex.conductor import SearchConfig, start_search
    from trex.events.search import Budget

    start_search(EventLog(tmp_path), SearchConfig(budget=Budget(max_trials=3)), "x-arith-sub-random-s2")
    with pytest.raises(ValueError, match="is not this benchmark cell"):  # a search of that name made by hand
        start_cell(tmp_path, Cell("arith-sub", "random", 2, "x"), get_task("arith-sub"), **kw)


def test_a_users_data_files_are_read_as_jsonl_json_or_csv_and_bad_rows_are_named(tmp_path):
    from trex.tasks import read_rows

    (tmp_path / "a.jsonl").write_text('{"q": "1-1=", "a": 0}\n\n{"q": "3-1=", "a": "2"}\n')
    assert read_rows(tmp_path / "a.jsonl", "q", "a") == [{"prompt": "1-1=", "completion": "0"},
                                                          {"prompt": "3-1=", "completion": "2"}]
    (tmp_path / "b.json").write_text('[{"prompt": "x", "completion": "y"}]')
    assert read_rows(tmp_path / "b.json") == [{"prompt": "x", "completion": "y"}]
    (tmp_path / "c.csv").write_text("prompt,completion\n\"a,b\",c\n")
    assert read_rows(tmp_path / "c.csv") == [{"prompt": "a,b", "completion": "c"}]
    (tmp_path / "bad.jsonl").write_text('{"q": "1", "a": "1"}\n{"q": "2"}\n')
    with pytest.raises(KeyError, match=r"bad.jsonl: row 2 lacks 'q' or 'a'"):
        read_rows(tmp_path / "bad.jsonl", "q", "a")
    (tmp_path / "torn.jsonl").write_text('{"q": "1", "a": "1"}\n{"q": \n')
    with pytest.raises(KeyError, match=r"torn.jsonl: line 2 is not JSON"):
        read_rows(tmp_path / "torn.jsonl", "q", "a")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(KeyError, match="no rows"):
        read_rows(tmp_path / "empty.jsonl")


@pytest.mark.parametrize("folder,tag,searches", [("ftbench", "baseline", 18), ("ftbench-hybrid", "hybrid", 15),
                                                  ("ftbench-retain15", "retain15", 9),
                                                  ("ftbench-noisy15", "noisy15", 6),
                                                  ("ftbench-noisy17", "noisy17", 15),
                                                  ("ftbench-retain17", "retain17", 15),
                                                  ("ftbench-tickets17", "tickets17", 3),
                                                  ("ftbench-shift19", "shift19", 15),
                                                  ("ftbench-noisy17-rules5", "noisy17", 5),
                                                  ("ftbench-noisy19", "noisy19", 5),
                                                  ("ftbench-noisy20", "noisy20", 5),
                                                  ("ftbench-orders21", "orders21", 5)])
def test_a_committed_report_is_reproduced_from_its_committed_log(tmp_path, folder, tag, searches):
    """docs/results/<folder>: the log of a benchmark run, exported, gives the committed numbers again (the
    baseline, issue 15's arms on arith-sub with its goals section, and three of them on the constrained
    arith-sub-retain, where seeds without a feasible best rank below every score)."""
    from ftbench.report import write_report
    from trex.events.transfer import import_file

    results = REPO / "docs" / "results" / folder
    log = EventLog(tmp_path)
    for f in sorted((results / "log").glob("*.parquet")):
        import_file(log, f)
    summary = write_report(tmp_path, tag, tmp_path / "out")
    committed = json.loads((results / "results.json").read_text())

    def no_literals(x):  # NaN / Infinity: not JSON, refused by strict parsers
        raise AssertionError(f"results.json holds the literal {x}")

    json.loads((tmp_path / "out" / "results.json").read_text(), parse_constant=no_literals)

    def without_intervals(tasks):  # the bootstrap intervals come from the evaluation outputs, not the log
        return {t: {**v, "proposers": {p: {k: x for k, x in r.items() if k != "test_ci_per_seed"}
                                       for p, r in v["proposers"].items()}} for t, v in tasks.items()}

    assert without_intervals(summary["tasks"]) == without_intervals(committed["tasks"])
    assert [{k: x for k, x in r.items() if k != "test_ci"} for r in summary["searches"]] == \
        [{k: x for k, x in r.items() if k != "test_ci"} for r in committed["searches"]]
    assert len(summary["searches"]) == searches and all(s["finished"] for s in summary["searches"])
    assert all(len(s["scores"]) >= 8 for s in summary["searches"])  # 10 trials each (a reused one has no row)
    ours, theirs = ((d / "report.md").read_text().split("\n")[3:] for d in (tmp_path / "out", results))
    with_ci = any("test_ci_per_seed" in r for v in committed["tasks"].values() for r in v["proposers"].values())
    if not with_ci:
        assert ours == theirs  # all but the line naming the home
    else:  # every line but the held-out table's intervals, and the goals section word for word
        rank_row = re.compile(r"^\| \d+ \| ")  # a row of the held-out table, which shows the intervals
        assert [x for x in ours if not rank_row.match(x)] == [x for x in theirs if not rank_row.match(x)]
        if any("optuna" in v["proposers"] for v in committed["tasks"].values()):  # goals are against optuna
            assert "## Goals (issue 15), on held-out test" in ours


def test_the_report_ranks_proposers_by_held_out_test_with_bootstrap_intervals(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ftbench.report import _test_table, bootstrap_ci, summarise

    f = tmp_path / "outs.parquet"
    pq.write_table(pa.table({"score": [1.0] * 60 + [0.0] * 40}), f)
    lo, hi = bootstrap_ci(f)
    assert lo < 0.6 < hi and hi - lo < 0.25 and bootstrap_ci(f) == (lo, hi)  # seeded: the same interval
    # optuna chose better on validation, random generalised better on test: the ranking follows test
    cells = [_cell("optuna", s, [0.9, 0.95]) for s in range(3)] + [_cell("random", s, [0.8, 0.85]) for s in range(3)]
    for c in cells:
        c.test, c.test_ci = (0.6, (0.5, 0.7)) if c.proposer == "optuna" else (0.75, (0.65, 0.85))
    s = summarise(cells)["tasks"]["t"]
    assert s["proposers"]["optuna"]["best_median"] == 0.95 and s["proposers"]["optuna"]["test_median"] == 0.6
    table = "\n".join(_test_table(s))
    assert table.index("| 1 | random |") < table.index("| 2 | optuna |")
    assert "0.750 [0.650–0.850]" in table or "0.75 [0.65–0.85]" in table


def test_the_report_states_each_goal_of_the_agent_as_met_or_not_and_credits_the_llm_only_its_margin():
    """The goals section, from held-out test scores: the agent's median against optuna's, its val-best after
    5 trials against optuna's 10-trial median, and its paired margin over "rules + optimiser"."""
    from ftbench.report import goals

    cells = []
    for p, tests, at5 in (("llm", (0.5, 0.6, 0.4), 0.45), ("optuna", (0.5, 0.3, 0.45), 0.3),
                          ("rules", (0.55, 0.62, 0.45), 0.5)):
        for seed, t in enumerate(tests):
            c = _cell(p, seed, [t, t])
            c.test, c.test_ci, c.test_at = t, None, {5: at5, 10: t}
            cells.append(c)
    text = "\n".join(goals(summarise(cells)))
    assert "| t | met (0.500 vs 0.450) | yes (0.450 vs 0.450) | no constraints |" in text
    assert "-0.050 median over 3 paired seeds: the LLM adds nothing over rules + optimiser here" in text
    assert "1 of 1 task(s) — met" in text
    assert goals(summarise([c for c in cells if c.proposer != "optuna"])) == []  # no optuna arm: no goals


def test_a_seed_without_a_feasible_best_ranks_below_every_score_and_counts_against_its_arm():
    """The retain run: rules 0.795, none, 0.07 over three seeds; llm none, none, 0.055. Leaving the seeds
    without a feasible node out made rules' median 0.43 and llm's 0.055, and the paired margin 0.000 over
    one seed; they count as nothing better than the base model instead."""
    from ftbench.report import _median_of_seeds, goals

    assert _median_of_seeds([0.795, None, 0.07]) == 0.07 and _median_of_seeds([None, None, 0.055]) is None
    assert _median_of_seeds([0.3, None]) is None and _median_of_seeds([0.3, 0.5, 0.4, None]) == 0.35
    assert _median_of_seeds([None, 0.2], "min") is None and _median_of_seeds([0.1, 0.2, None], "min") == 0.2
    cells = []
    for p, tests in (("llm", (None, None, 0.032)), ("optuna", (None, 0.012, 0.016)), ("rules", (0.826, None, 0.032))):
        for seed, t in enumerate(tests):
            c = _cell(p, seed, [t, t])
            c.test, c.test_ci, c.test_at = t, None, {10: t}
            cells.append(c)
    s = summarise(cells)["tasks"]["t"]["proposers"]
    assert (s["llm"]["test_median"], s["rules"]["test_median"], s["optuna"]["test_median"]) == (None, 0.032, 0.012)
    text = "\n".join(goals(summarise(cells)))
    assert "| t | not met (– vs 0.012) |" in text
    # seed 0: rules had a feasible best, llm none (-inf); seed 1: neither (a tie); seed 2: 0.032 both
    assert "0.000 median over 3 paired seeds: the LLM adds nothing" in text
