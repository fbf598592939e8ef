"""`trex sql`: the views, the read-only sandbox, and reading while a search writes."""
from __future__ import annotations

import json
import threading

import pytest

from trex.events.evaluation import MetricRecorded
from trex.events.log import EventLog
from trex.events.notes import NoteAdded
from trex.events.search import SearchStarted
from trex.events.sql import SqlFailed, SqlRefused, query
from trex.events.trials import TrialFinished, TrialStarted


@pytest.fixture
def filled(log):
    log.append("s1", [SearchStarted(task="arith-sub"), NoteAdded(text="first")])
    log.seal()  # one sealed segment and one open one
    log.append("s1", [TrialStarted(node_id="n1", trial_id="t1"),
                      TrialFinished(node_id="n1", trial_id="t1", adapter="abc", compute_seconds=2.5),
                      MetricRecorded(node_id="n1", name="exact_match", value=0.75, primary=True)])
    log.append("s2", [SearchStarted(task="other")])
    return log


def test_events_view_spans_sealed_and_open_segments(filled):
    res = query(filled.home, "SELECT search_id, seq, type FROM events ORDER BY position")
    assert res.columns == ["search_id", "seq", "type"]
    assert res.rows == [("s1", 1, "SearchStarted"), ("s1", 2, "NoteAdded"), ("s1", 3, "TrialStarted"),
                        ("s1", 4, "TrialFinished"), ("s1", 5, "MetricRecorded"), ("s2", 1, "SearchStarted")]
    res = query(filled.home, "SELECT payload->>'task' FROM events WHERE type = 'SearchStarted' ORDER BY search_id")
    assert res.rows == [("arith-sub",), ("other",)]


def test_derived_views(filled):
    assert query(filled.home, "SELECT node_id, name, value, \"primary\" FROM metrics").rows == [("n1", "exact_match", 0.75, True)]
    rows = query(filled.home, "SELECT trial_id, last_event, adapter, compute_seconds FROM trials").rows
    assert rows == [("t1", "TrialFinished", "abc", 2.5)]
    assert query(filled.home, "SELECT text FROM notes").rows == [("first",)]


def test_empty_home_has_an_empty_events_view(tmp_path):
    assert query(tmp_path / "nothing", "SELECT count(*) FROM events").rows == [(0,)]


@pytest.mark.parametrize(
    "bad, match",
    [
        ("COPY (SELECT * FROM events) TO 'out.csv'", "COPY statements are not allowed"),
        ("ATTACH 'x.db' AS x", "ATTACH statements are not allowed"),
        ("INSTALL httpfs", "not allowed"),
        ("LOAD httpfs", "not allowed"),
        ("SET memory_limit='100GB'", "SET statements are not allowed"),
        ("CREATE TABLE t AS SELECT 1", "CREATE statements are not allowed"),
        ("SELECT 1; DROP VIEW events", "DROP statements are not allowed"),
        ("SELECT * FROM read_csv('/etc/passwd')", "sandbox"),
        ("SELECT * FROM read_text('/etc/hostname')", "sandbox"),
    ],
)
def test_sandbox_refuses(filled, bad, match):
    with pytest.raises(SqlRefused, match=match):
        query(filled.home, bad)


def test_runaway_query_is_interrupted(filled):
    with pytest.raises(SqlFailed, match="timeout"):
        query(filled.home, "SELECT count(*) FROM range(10000000000) a, range(1000) b", timeout_s=0.5)


def test_memory_limit_bounds_a_query(filled):
    with pytest.raises(SqlFailed, match="memory|Out of Memory"):
        query(filled.home, "SELECT list(range) FROM range(100000000)", memory_limit="64MB")


def test_sql_errors_are_clear(filled):
    with pytest.raises(SqlFailed, match="nosuchtable"):
        query(filled.home, "SELECT * FROM nosuchtable")


def test_queries_while_another_writer_appends_and_seals(tmp_path, monkeypatch):
    from trex.events import log as logmod

    monkeypatch.setattr(logmod, "SEAL_EVENTS", 60)
    home = tmp_path / "h"
    writer = EventLog(home)
    writer.append("w", [NoteAdded(text="0")])
    stop = threading.Event()
    errors: list[BaseException] = []

    def write():
        try:
            while not stop.is_set():
                writer.append("w", [NoteAdded(text="x")] * 3)
                stop.wait(0.003)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=write)
    t.start()
    try:
        counts = []
        for _ in range(25):
            (n, maxseq, minpos), = query(home, "SELECT count(*), max(seq), min(position) FROM events").rows
            assert n == maxseq and minpos == 1  # a consistent prefix, whatever was being sealed
            counts.append(n)
    finally:
        stop.set()
        t.join()
    assert not errors
    assert counts == sorted(counts) and counts[-1] > counts[0]
    assert any(p.suffix == ".parquet" for p in writer.segdir.iterdir())


@pytest.mark.parametrize("bad", [
    "EXPLAIN ANALYZE COPY (SELECT * FROM events WHERE false) TO 'seg.parquet' (FORMAT parquet)",
    "EXPLAIN ANALYZE SELECT 1",
    "EXPLAIN COPY (SELECT 1) TO 'x.csv'",
    "explain   analyse create table t as select 1",
])
def test_explain_cannot_smuggle_a_write(filled, bad):
    before = sorted((p.name, p.stat().st_size) for p in filled.segdir.iterdir())
    with pytest.raises(SqlRefused):
        query(filled.home, bad)
    assert sorted((p.name, p.stat().st_size) for p in filled.segdir.iterdir()) == before


def test_explain_of_a_select_runs(filled):
    res = query(filled.home, "EXPLAIN SELECT count(*) FROM events")
    assert res.rows


def test_files_in_the_home_outside_the_log_are_not_readable(filled):
    (filled.home / "secret.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SqlRefused, match="sandbox"):
        query(filled.home, f"SELECT * FROM read_csv('{filled.home / 'secret.csv'}')")


def test_sql_limits_that_would_not_hold_are_refused(tmp_path):
    from trex.events.sql import SqlRefused, check_limits

    for t in (0, -1, float("nan"), float("inf"), 10**9):
        with pytest.raises(SqlRefused, match="timeout"):
            check_limits(t, "1GB")
    for m in ("lots", "0GB", "-1GB", "1 PB", "1KB"):
        with pytest.raises(SqlRefused, match="memory limit"):
            check_limits(5, m)
    assert check_limits(5, "512MB") == 512 * 10**6 and check_limits(0.5, "2 GiB") == 2 * 2**30


def test_an_isolated_query_is_killed_at_its_timeout_and_stopped_at_its_memory_cap(tmp_path, monkeypatch):
    """The child process is what holds the limits; a stand-in for one long DuckDB string operation
    (which DuckDB's interrupt does not stop) sleeps or allocates in the child."""
    import time

    from trex.events import sql as sqlmod
    from trex.events.sql import SqlFailed, query_isolated

    def slow(*a, **k):
        time.sleep(60)

    monkeypatch.setattr(sqlmod, "query", slow)
    t0 = time.perf_counter()
    with pytest.raises(SqlFailed, match="after the 1 s timeout"):
        query_isolated(tmp_path, "SELECT 1", timeout_s=1, memory_limit="64MB")
    assert time.perf_counter() - t0 < 20

    def greedy(*a, **k):
        hog = [bytearray(64 * 2**20) for _ in range(200)]  # 12.5 GiB: far past the cap
        return hog

    monkeypatch.setattr(sqlmod, "query", greedy)
    with pytest.raises(SqlFailed, match="more memory than the 64MB limit"):
        query_isolated(tmp_path, "SELECT 1", timeout_s=30, memory_limit="64MB")


def test_trex_sql_answers_in_one_line_and_reads_the_log(tmp_path):
    import subprocess
    import sys

    from trex.events.log import EventLog
    from trex.events.notes import NoteAdded

    EventLog(tmp_path).append("s", [NoteAdded(text="x")])

    def run(*args):
        return subprocess.run([sys.executable, "-m", "trex.cli", "sql", *args, "--home", str(tmp_path)],
                              capture_output=True, text=True)

    ok = run("SELECT count(*) AS n FROM events", "--format", "json")
    assert ok.returncode == 0 and json.loads(ok.stdout) == [{"n": 1}]
    big = run("SELECT length(string_agg(repeat('x', 1000), '')) FROM range(3000000)", "--memory-limit", "64MB")
    assert big.returncode == 1 and "memory limit" in big.stderr
    assert len(big.stderr.strip().splitlines()) == 1 and "Traceback" not in big.stderr
