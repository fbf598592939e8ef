"""Hostile files a user names, run as a user runs the commands (a subprocess each): plans and task files
that are FIFOs, devices or too large, keys given twice, a damaged installed task, integers of thousands
of digits, and ``ftbench report`` on a log whose labels are paths or with ``--out`` inside the log.

Every case must be a clear refusal — a non-zero exit that is not the catch-all's 70, one error line
naming what is wrong, no traceback — and write nothing (no home made, nothing changed under one).
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_hostile_cli import GOOD_TASK, _write
from trex.events.log import EventLog
from trex.events.transfer import import_file
from trex.plan import example_plan

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "old_logs" / "2026-11-26" / "baseline-arith-sub-random-s0.parquet"


def _cli(module: str, *args, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "TREX_LOCK_TIMEOUT": "2", "PYTHONPATH": str(ROOT)}
    env.pop("TREX_HOME", None)
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def _trex(*args, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return _cli("trex.cli", *args, cwd=cwd, timeout=timeout)


def _refused(r: subprocess.CompletedProcess, *needles: str) -> str:
    """A clear refusal: exit 1 or 2 (never 0, never the catch-all's 70), one line on stderr, no traceback;
    the line holds every needle. Returns the line."""
    assert r.returncode not in (0, 70), f"exit {r.returncode}\n{r.stdout[-500:]}\n{r.stderr[-1500:]}"
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "Error:" not in lines[0], lines[0]
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in {lines[0]!r}"
    return lines[0]


def _tree(root: Path) -> dict[str, object]:
    """Every path under ``root``: a regular file by its bytes, anything else by its kind (a FIFO is never
    opened)."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        m = os.lstat(p).st_mode
        out[str(p.relative_to(root))] = p.read_bytes() if stat.S_ISREG(m) else stat.S_IFMT(m)
    return out


PLAN = example_plan().model_dump_json()


# ---- 2. plans and task files that are not regular files, or too large: refused before anything is read
@pytest.mark.parametrize("case", ["train-fifo", "run-fifo", "train-dev-zero", "run-folder", "train-huge",
                                  "run-huge"])
def test_a_plan_or_task_file_that_is_not_a_small_regular_file_is_refused_unread(case, tmp_path):
    home = tmp_path / "home"
    if case.endswith("fifo"):
        path = tmp_path / ("plan.json" if case.startswith("train") else "task.yaml")
        os.mkfifo(path)
        needle = "not a regular file"
    elif case == "train-dev-zero":
        path, needle = Path("/dev/zero"), "not a regular file"
    elif case == "run-folder":  # (`trex train` takes its plan as a click.Path(dir_okay=False): click says so)
        path, needle = tmp_path / "folder.yaml", "is a folder, not a task file"
        path.mkdir()
    else:  # 17 MiB of spaces around a valid document: too large, whatever it holds
        doc = PLAN if case.startswith("train") else GOOD_TASK
        path = _write(tmp_path / ("big.json" if case.startswith("train") else "big.yaml"),
                      doc + " " * (17 * 1024 * 1024))
        needle = "larger than 16 MiB"
    before = _tree(tmp_path)
    args = ["train", path, "--task", "arith-sub"] if case.startswith("train") else ["run", path]
    try:  # a FIFO with no writer blocked the read forever: fail, never hang the suite
        r = _trex(*args, "--home", home, cwd=tmp_path, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: the command blocked on {path}")
    _refused(r, str(path), needle)
    assert not home.exists() and _tree(tmp_path) == before


# ---- 3. a key given twice, in a plan (JSON) or a task file (YAML)
def test_a_plan_with_a_key_twice_is_refused(tmp_path):
    plan = PLAN[:-1] + ', "learning_rate": 7, "learning_rate": 0.001}'
    p = _write(tmp_path / "dup.json", plan)
    before = _tree(tmp_path)
    _refused(_trex("train", p, "--task", "arith-sub", "--home", tmp_path / "home", cwd=tmp_path),
             str(p), "duplicate key 'learning_rate'")
    assert _tree(tmp_path) == before


def _user_task(tmp_path: Path, task: str = GOOD_TASK, train: str = '{"prompt": "1", "completion": "x"}\n',
               name: str = "train.jsonl") -> Path:
    d = tmp_path / "task"
    _write(d / "model" / "config.json", "{}")
    _write(d / name, train)
    _write(d / "eval.jsonl", '{"prompt": "2", "completion": "y"}\n')
    return _write(d / "task.yaml", task.replace("train: train.jsonl", f"train: {name}"))


@pytest.mark.parametrize("dup", ["top", "nested"])
def test_a_task_file_with_a_key_twice_is_refused(dup, tmp_path):
    if dup == "top":  # the second `metrics` silently replaced the first
        task, key, line = GOOD_TASK + "metrics: [{name: bleurt_42, split: eval, primary: true}]\n", "metrics", 7
    else:
        task, key, line = GOOD_TASK.replace("{path: model}", "{path: model, path: other}"), "path", 4
    p = _user_task(tmp_path, task)
    before = _tree(tmp_path)
    _refused(_trex("run", p, "--home", tmp_path / "home", cwd=tmp_path), str(p), f"key '{key}'", f"line {line}")
    assert _tree(tmp_path) == before


# ---- 4. a damaged installed task (HOME/tasks/<name>/task.json): one line naming the file, exit 1
@pytest.mark.parametrize("command,damage", [("train", "not-json"), ("run", "not-json"), ("run", "not-a-task")])
def test_a_damaged_installed_task_is_one_line_naming_its_file(command, damage, tmp_path):
    home = tmp_path / "home"
    body = '{"name": "my-task", garbage' if damage == "not-json" else '{"name": "my-task", "colour": "red"}'
    tj = _write(home / "tasks" / "my-task" / "task.json", body)
    plan = _write(tmp_path / "plan.json", PLAN)
    before = _tree(tmp_path)
    args = ["train", plan, "--task", "my-task"] if command == "train" else ["run", "my-task"]
    _refused(_trex(*args, "--home", home, cwd=tmp_path), str(tj), "my-task")
    assert _tree(tmp_path) == before


# ---- 5. an integer of 5000 digits: in a plan, in a task's data file (JSONL and a JSON list)
def test_a_plan_with_a_5000_digit_number_is_refused_naming_the_file(tmp_path):
    p = _write(tmp_path / "plan.json", '{\n"seed": ' + "9" * 5000 + "}")
    before = _tree(tmp_path)
    _refused(_trex("train", p, "--task", "arith-sub", "--home", tmp_path / "home", cwd=tmp_path),
             str(p), "line 2", "4300 digits")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_a_data_file_with_a_5000_digit_number_is_refused_naming_file_and_row(kind, tmp_path):
    big = '{"prompt": ' + "9" * 5000 + ', "completion": "x"}'
    ok = '{"prompt": "1", "completion": "x"}'
    if kind == "jsonl":
        p = _user_task(tmp_path, train=f"{ok}\n{ok}\n{big}\n")
    else:
        p = _user_task(tmp_path, train=f"[{ok},\n{ok},\n{big}]", name="train.json")
    data = p.parent / f"train.{kind}"
    before = _tree(tmp_path)
    _refused(_trex("run", p, "--home", tmp_path / "home", cwd=tmp_path), str(data), "line 3", "4300 digits")
    assert _tree(tmp_path) == before


# ---- 1. ftbench report: labels from the log never become paths; --out never inside the log
def _crafted_export(dst: Path, sid: str, old: str, new: str) -> Path:
    """The committed fixture search, renamed ``sid``, ``old`` replaced by ``new`` in its first event's
    payload, every hash recomputed: a file `trex import` takes as a valid export."""
    import pyarrow.parquet as pq

    from trex.events import segments
    from trex.events.envelope import GENESIS, chain_hash
    from trex.events.transfer import EXPORT_MAGIC

    rows = pq.read_table(FIXTURE).to_pylist()
    prev = GENESIS
    for i, r in enumerate(rows):
        r["search_id"], r["event_id"] = sid, f"{sid}-{r['event_id']}"
        if i == 0:
            assert old in r["payload"]
            r["payload"] = r["payload"].replace(old, new, 1)
        r["prev_hash"] = prev
        r["hash"] = prev = chain_hash(prev, r["event_id"], sid, r["seq"], r["type"], r["schema_version"],
                                      r["recorded_at"], r["causation_id"], r["correlation_id"], r["payload"])
    segments.write_parquet(dst, rows, metadata={EXPORT_MAGIC: sid}, outside=True)
    return dst


def test_ftbench_report_leaves_out_a_search_whose_task_label_is_a_path(tmp_path):
    home, outside = tmp_path / "home", tmp_path / "outside"
    outside.mkdir()
    evil = _crafted_export(tmp_path / "evil.parquet", "trav", '"task":"arith-sub","proposer"',
                           '"task":"../../../outside/evil","proposer"')
    for f in (FIXTURE, evil):
        import_file(EventLog(home), f)
    r = _cli("ftbench.cli", "report", "--tag", "baseline", "--home", home, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning")]
    assert len(warnings) == 1 and "'trav'" in warnings[0] and "task label" in warnings[0], r.stderr
    assert _tree(outside) == {}, "a plot was written outside the report folder"
    report = home / "reports" / "baseline"
    assert sorted(p.name for p in report.iterdir()) == [
        "arith-sub-compute.png", "arith-sub-trials.png", "arith-sub-wall.png", "report.md", "results.json"]
    assert "trav" not in (report / "results.json").read_text()
    assert {p.name for p in tmp_path.iterdir()} == {"home", "outside", "evil.parquet"}


@pytest.mark.parametrize("via", ["path", "link"])
def test_ftbench_report_refuses_an_out_folder_inside_the_log(via, tmp_path):
    home = tmp_path / "home"
    import_file(EventLog(home), FIXTURE)  # a benchmark run whose report would be written
    if via == "path":
        out = home / "log" / "quarantine"
    else:  # a link to the log, and `..` on the way: resolved, both are seen
        (tmp_path / "elsewhere").symlink_to(home / "log")
        out = tmp_path / "elsewhere" / ".." / "log" / "quarantine"
    before = _tree(tmp_path)
    r = _cli("ftbench.cli", "report", "--tag", "baseline", "--home", home, "--out", out, cwd=tmp_path)
    _refused(r, "--out", "log's own folder")
    assert _tree(tmp_path) == before
    assert _trex("verify", "--home", home, cwd=tmp_path).returncode == 0


def test_yaml_merge_keys_reused_through_an_alias_are_not_duplicates():
    """A mapping merged into another (`<<`) and used again through its alias holds the merged keys twice
    after PyYAML flattens it in place: the duplicate-key check reads each mapping once, as written."""
    import yaml

    from trex.tasks.schema import _task_loader

    text = "base: &base {lr: 1, a: 2}\ny: {<<: &x {<<: *base, lr: 2}}\nz: *x\n"
    assert yaml.load(text, Loader=_task_loader()) == {"base": {"lr": 1, "a": 2}, "y": {"lr": 2, "a": 2},
                                                      "z": {"lr": 2, "a": 2}}
    with pytest.raises(Exception, match="'y' is given twice"):
        yaml.load("base: &b {x: 1}\nm: {<<: *b, y: 1, y: 2}\n", Loader=_task_loader())
