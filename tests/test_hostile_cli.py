"""A matrix of hostile input against the commands, run as a user runs them (a subprocess each).

Every case must be a clear refusal — a non-zero exit, one line on stderr naming what is wrong,
no traceback — and must leave what the log had acknowledged as it was (same events, same
hashes). The home starts with one search of five notes and one exported copy of it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trex.events.log import EventLog
from trex.events.notes import NoteAdded
from trex.events.transfer import export_search
from trex.plan import example_plan

GOOD_TASK = """name: my-task
domain: test
description: a user's own task
base_model: {path: model}
data: {files: {train: train.jsonl, eval: eval.jsonl}}
metrics: [{name: exact_match, split: eval, primary: true}]
"""


def _write(p: Path, text: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
    return p


def _segment(home: Path) -> Path:
    return next((home / "log" / "segments").glob("*.jsonl"))


def _flip_last_record(home: Path, tmp: Path | None = None) -> None:
    seg = _segment(home)
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0x01
    seg.write_bytes(bytes(data))


def _garbage_in_middle(home: Path, tmp: Path | None = None) -> None:
    seg = _segment(home)
    lines = seg.read_bytes().split(b"\n")
    lines.insert(2, b"~00000010 deadbeef not a record at all")
    seg.write_bytes(b"\n".join(lines))


def _segment_is_a_link(home: Path, tmp: Path | None = None) -> None:
    seg = _segment(home)
    victim = home.parent / "victim.jsonl"
    victim.write_bytes(seg.read_bytes())
    seg.unlink()
    seg.symlink_to(victim)


def _lock_is_a_folder(home: Path, tmp: Path | None = None) -> None:
    lock = home / "log" / "append.lock"
    if lock.exists():
        lock.unlink()
    lock.mkdir()


# (id, args with {home}/{tmp} placeholders, a setup on (home, tmp), text the one line must contain)
CASES = [
    # ---- trex sql: statements the sandbox refuses, limits that would not hold, nonsense
    ("sql-copy", ["sql", "COPY events TO '{tmp}/x.csv'"], None, "refused"),
    ("sql-attach", ["sql", "ATTACH '{tmp}/x.db'"], None, "refused"),
    ("sql-install", ["sql", "INSTALL httpfs"], None, "refused"),
    ("sql-load", ["sql", "LOAD httpfs"], None, "refused"),
    ("sql-set", ["sql", "SET memory_limit='100GB'"], None, "refused"),
    ("sql-create", ["sql", "CREATE TABLE t AS SELECT 1"], None, "refused"),
    ("sql-insert", ["sql", "INSERT INTO events VALUES (1)"], None, "refused"),
    ("sql-delete", ["sql", "DELETE FROM events"], None, "refused"),
    ("sql-select-then-copy", ["sql", "SELECT 1; COPY events TO '{tmp}/x.csv'"], None, "refused"),
    ("sql-explain-analyze", ["sql", "EXPLAIN ANALYZE SELECT 1"], None, "refused"),
    ("sql-read-passwd", ["sql", "SELECT * FROM read_csv('/etc/passwd')"], None, "refused"),
    ("sql-read-home", ["sql", "SELECT * FROM read_text('{tmp}/secret.txt')"],
     lambda h, t: _write(t / "secret.txt", "s3cret"), "refused"),
    ("sql-syntax", ["sql", "SELEC 1"], None, "error"),
    ("sql-unknown-view", ["sql", "SELECT * FROM nope"], None, "nope"),
    ("sql-empty", ["sql", ""], None, "error"),
    ("sql-timeout-0", ["sql", "SELECT 1", "--timeout", "0"], None, "timeout"),
    ("sql-timeout-neg", ["sql", "SELECT 1", "--timeout", "-3"], None, "timeout"),
    ("sql-timeout-nan", ["sql", "SELECT 1", "--timeout", "nan"], None, "timeout"),
    ("sql-timeout-inf", ["sql", "SELECT 1", "--timeout", "inf"], None, "timeout"),
    ("sql-timeout-text", ["sql", "SELECT 1", "--timeout", "soon"], None, "timeout"),
    ("sql-memory-words", ["sql", "SELECT 1", "--memory-limit", "lots"], None, "memory limit"),
    ("sql-memory-zero", ["sql", "SELECT 1", "--memory-limit", "0GB"], None, "memory limit"),
    ("sql-memory-tiny", ["sql", "SELECT 1", "--memory-limit", "1KB"], None, "memory limit"),
    ("sql-memory-past", ["sql", "SELECT length(string_agg(repeat('x', 1000), '')) FROM range(3000000)",
                         "--memory-limit", "64MB"], None, "memory"),
    ("sql-format", ["sql", "SELECT 1", "--format", "xml"], None, "format"),
    # ---- damaged or hostile log files
    ("log-flipped-last", ["sql", "SELECT count(*) FROM events"], _flip_last_record, "segment"),
    ("log-flipped-ls", ["ls"], _flip_last_record, "segment"),
    ("log-flipped-note", ["note", "s", "more"], _flip_last_record, "segment"),
    ("log-garbage-sql", ["sql", "SELECT count(*) FROM events"], _garbage_in_middle, "segment"),
    ("log-garbage-replay", ["replay", "s"], _garbage_in_middle, "segment"),
    ("log-garbage-tree", ["tree", "s"], _garbage_in_middle, "segment"),
    ("log-link-note", ["note", "s", "more"], _segment_is_a_link, "link"),
    ("log-link-sql", ["sql", "SELECT 1"], _segment_is_a_link, "link"),
    ("log-lock-folder", ["note", "s", "more"], _lock_is_a_folder, "lock"),
    ("log-newer-segment", ["ls"], lambda h, t: _write(_segment(h), _segment(h).read_bytes().replace(
        b"trex-log-segment v2", b"trex-log-segment v9", 1)), "segment"),
    # ---- trex import
    ("import-missing", ["import", "{tmp}/nothing.parquet"], None, "no such file"),
    ("import-text", ["import", "{tmp}/x.parquet"], lambda h, t: _write(t / "x.parquet", "hello"), "Parquet"),
    ("import-empty", ["import", "{tmp}/e.parquet"], lambda h, t: _write(t / "e.parquet", b""), "Parquet"),
    ("import-folder", ["import", "{tmp}"], None, "error"),
    ("import-deep-json", ["import", "{tmp}/deep.parquet"],
     lambda h, t: _write(t / "deep.parquet", "[" * 200000 + "]" * 200000), "Parquet"),
    ("import-into-log", ["export", "s", "-o", "{home}/log/segments/x.parquet"], None, "refusing"),
    # ---- trex note and the commands on searches
    ("note-unknown", ["note", "nope", "hi"], None, "no search"),
    ("note-empty", ["note", "s", ""], None, "invalid note"),
    ("note-huge", ["note", "s", "x" * 20000], None, "invalid note"),
    ("replay-unknown", ["replay", "nope"], None, "nope"),
    ("replay-until-past", ["replay", "s", "--until", "999"], None, "out of range"),
    ("replay-until-neg", ["replay", "s", "--until", "-1"], None, "out of range"),
    ("tree-unknown", ["tree", "nope"], None, "nope"),
    ("tree-format", ["tree", "s", "--format", "pdf"], None, "format"),
    ("fork-unknown-node", ["fork", "s", "--at", "n99"], None, "n99"),
    ("fork-unknown-search", ["fork", "nope", "--at", "n1"], None, "nope"),
    ("export-unknown", ["export", "nope", "-o", "{tmp}/o.parquet"], None, "nope"),
    ("status-unknown", ["status", "nope"], None, "nope"),
    ("resume-unknown", ["resume", "nope"], None, "nope"),
    ("unknown-command", ["frobnicate"], None, "frobnicate"),
    # ---- plans (trex train)
    ("plan-missing", ["train", "{tmp}/none.json", "--task", "arith-sub"], None, "none.json"),
    ("plan-not-json", ["train", "{tmp}/p.json", "--task", "arith-sub"],
     lambda h, t: _write(t / "p.json", "{lr: fast"), "plan"),
    ("plan-deep", ["train", "{tmp}/p.json", "--task", "arith-sub"],
     lambda h, t: _write(t / "p.json", "[" * 100000 + "]" * 100000), "nested too deeply"),
    ("plan-bad-lr", ["train", "{tmp}/p.json", "--task", "arith-sub"],
     lambda h, t: _write(t / "p.json", json.dumps({"learning_rate": 7})), "invalid plan"),
    ("plan-unknown-field", ["train", "{tmp}/p.json", "--task", "arith-sub"],
     lambda h, t: _write(t / "p.json", json.dumps({"colour": "blue"})), "invalid plan"),
    ("plan-list", ["train", "{tmp}/p.json", "--task", "arith-sub"],
     lambda h, t: _write(t / "p.json", "[1, 2]"), "plan"),
    ("plan-unknown-task", ["train", "{tmp}/p.json", "--task", "nope"],
     lambda h, t: _write(t / "p.json", example_plan().model_dump_json()), "unknown task"),
    ("plan-task-path", ["train", "{tmp}/p.json", "--task", "../../etc"],
     lambda h, t: _write(t / "p.json", example_plan().model_dump_json()), "task"),
    # ---- task files (trex run refuses them before anything starts)
    ("task-not-yaml", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", "name: [unclosed\n"), "YAML"),
    ("task-list", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", "- a\n- b\n"), "mapping"),
    ("task-split-path", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK.replace(
        "eval: eval.jsonl}", "../../x: eval.jsonl}") + "splits: [train, ../../x]\n"), "pattern"),
    ("task-bad-name", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK.replace(
        "name: my-task", "name: ../../evil")), "name"),
    ("task-missing-files", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK), "model"),
    ("task-unknown-metric", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK.replace(
        "exact_match", "bleurt_42")), "bleurt_42"),
    ("task-two-primaries", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK.replace(
        "primary: true}]", "primary: true}, {name: accuracy, split: eval, primary: true}]")), "primary"),
    ("task-extra-key", ["run", "{tmp}/t.yaml"], lambda h, t: _write(t / "t.yaml", GOOD_TASK + "colour: red\n"),
     "colour"),
    ("run-unknown-task", ["run", "nope"], None, "unknown task"),
    ("run-bad-budget", ["run", "arith-sub", "--budget-trials", "0"], None, "budget-trials"),
]


def _snapshot(home: Path) -> list[tuple]:
    return [(e.search_id, e.seq, e.event_id, e.hash) for e in EventLog(home).read()]


def _files(home: Path) -> dict[str, bytes]:
    """Every file under the log, as bytes (links and folders by what they are, not followed)."""
    out = {}
    for p in sorted((home / "log").rglob("*")):
        key = str(p.relative_to(home))
        out[key] = (b"link:" + os.readlink(p).encode()) if p.is_symlink() else (
            p.read_bytes() if p.is_file() and p.name != "append.lock" else b"dir")
    return out


@pytest.fixture
def hostile_home(tmp_path):
    home = tmp_path / "home"
    log = EventLog(home)
    log.append("s", [NoteAdded(text=f"note {i}") for i in range(5)])
    export_search(log, "s", tmp_path / "s.parquet")
    return home


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_clear_refusal_and_loses_nothing(case, hostile_home, tmp_path):
    name, args, setup, needle = case
    before = _snapshot(hostile_home)
    if setup is not None:
        setup(hostile_home, tmp_path)
    damaged = _files(hostile_home)
    argv = [a.format(home=hostile_home, tmp=tmp_path) for a in args]
    env = {**os.environ, "TREX_HOME": str(hostile_home), "TREX_LOCK_TIMEOUT": "2"}
    r = subprocess.run([sys.executable, "-m", "trex.cli", *argv], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=120)
    err = r.stderr.strip()
    assert r.returncode != 0, f"{name}: exit 0\n{r.stdout[-500:]}"
    assert "Traceback" not in r.stderr, f"{name}: a traceback\n{r.stderr[-2000:]}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, f"{name}: no message"
    last = lines[-1]
    # click prints usage lines before its one error line; ours is that one line
    assert needle.lower() in last.lower(), f"{name}: {needle!r} not in {last!r}"
    assert len([ln for ln in lines if ln.lower().startswith(("error", "refused"))]) <= 1, f"{name}: {lines}"
    if name.startswith("log-"):  # a damaged log is reported, never rewritten by a command that is not repair
        assert _files(hostile_home) == damaged, f"{name}: the damaged log was changed"
    else:
        assert _snapshot(hostile_home) == before, f"{name}: acknowledged events changed"
