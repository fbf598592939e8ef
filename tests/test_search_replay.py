"""Replay, fork (and forks of forks) through the API and the `trex replay|tree|fork` commands."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.plugins.search_fixtures import evaluated
from trex.cli import main
from trex.events.envelope import NewEvent
from trex.events.log import UnknownSearch
from trex.search import build_tree, fold, fork, load_events, tree_hash
from trex.search.replay import ReplayError, fork_point


def run(home, *args):
    return CliRunner().invoke(main, [*args, "--home", str(home)])


def test_until_is_a_prefix(synthetic_log):
    evs = synthetic_log.read("s1")
    for until in (1, 10, len(evs) // 2, len(evs)):
        assert tree_hash(build_tree(synthetic_log, "s1", until)) == tree_hash(fold(evs[:until]))
    with pytest.raises(ReplayError, match="out of range"):
        build_tree(synthetic_log, "s1", len(evs) + 1)
    with pytest.raises(UnknownSearch):
        build_tree(synthetic_log, "nope")


def test_fork_prefix_then_own_events(synthetic_log, started):
    parent = build_tree(synthetic_log, "s1")
    node = parent.nodes["n00010"]
    env = fork(synthetic_log, "s1", "n00010", "f1")
    assert env.seq == 1 and env.type == "SearchForked"
    ev = env.event
    assert (ev.parent_search_id, ev.at_seq, ev.at_node) == ("s1", node.updated_seq, "n00010")
    prefix = build_tree(synthetic_log, "s1", ev.at_seq)
    t = build_tree(synthetic_log, "f1")
    assert t.search_id == "f1" and t.forks == (("f1", "s1", ev.at_seq, "n00010"),)
    assert set(t.nodes) == set(prefix.nodes) and t.nodes["n00010"] == prefix.nodes["n00010"]
    assert len(load_events(synthetic_log, "f1")) == ev.at_seq + 1
    # the fork's own events come after the prefix
    synthetic_log.append("f1", evaluated("g1", "n00010", 0.99), expected_version=1)
    t2 = build_tree(synthetic_log, "f1")
    assert t2.nodes["g1"].parent_id == "n00010" and t2.best_node_id == "g1" and t2.nodes["g1"].origin == "f1"
    assert "g1" not in build_tree(synthetic_log, "s1").nodes
    assert tree_hash(build_tree(synthetic_log, "f1", until=1)) == tree_hash(t)


def test_forking_the_same_point_twice_gives_the_same_prefix(synthetic_log):
    a = fork(synthetic_log, "s1", "n00005", "fa").event
    synthetic_log.append("s1", [NewEvent(e) for e in evaluated("late", "n00005", 0.5)])  # the parent moves on
    b = fork(synthetic_log, "s1", "n00005", "fb").event
    assert a.at_seq == b.at_seq
    ta, tb = build_tree(synthetic_log, "fa"), build_tree(synthetic_log, "fb")
    pa = fold(load_events(synthetic_log, "fa")[:-1])
    pb = fold(load_events(synthetic_log, "fb")[:-1])
    assert tree_hash(pa) == tree_hash(pb)
    assert {k: v for k, v in ta.nodes.items()} == {k: v for k, v in tb.nodes.items()}
    assert "late" not in ta.nodes


def test_fork_of_a_fork(synthetic_log):
    fork(synthetic_log, "s1", "n00020", "f1")
    synthetic_log.append("f1", evaluated("g1", "n00020", 0.3) + evaluated("g2", "g1", 0.4), expected_version=1)
    # g2 was last updated in f1's own stream: its seq there is the fork point
    env = fork(synthetic_log, "f1", "g2", "f2")
    assert env.event.at_seq == build_tree(synthetic_log, "f1").nodes["g2"].updated_seq
    synthetic_log.append("f2", evaluated("h1", "g2", 0.5), expected_version=1)
    t = build_tree(synthetic_log, "f2")
    assert {"n00020", "g1", "g2", "h1"} <= set(t.nodes)
    assert [f[0] for f in t.forks] == ["f1", "f2"]
    assert t.nodes["h1"].depth == t.nodes["n00020"].depth + 3
    # a node of the grandparent's prefix: the fork point is f1's first event
    env = fork(synthetic_log, "f1", "n00003", "f3")
    assert env.event.at_seq == 1
    assert set(build_tree(synthetic_log, "f3").nodes) == set(build_tree(synthetic_log, "f1", 1).nodes)


def test_fork_errors(synthetic_log):
    with pytest.raises(ReplayError, match="no node 'ghost'"):
        fork(synthetic_log, "s1", "ghost", "x")
    end = synthetic_log.version("s1")
    with pytest.raises(ReplayError, match="cannot fork at position"):
        fork(synthetic_log, "s1", "n00001", "x", at_seq=end + 1)
    with pytest.raises(ReplayError, match="at position 1"):  # the node did not exist yet at seq 1
        fork_point(synthetic_log, "s1", "n00001", at_seq=1)
    with pytest.raises(UnknownSearch):
        fork(synthetic_log, "nope", "n00001", "x")
    fork(synthetic_log, "s1", "n00001", "x")
    with pytest.raises(ReplayError, match="'x' exists already"):  # a fork is always a new stream (said
        fork(synthetic_log, "s1", "n00002", "x")  # plainly; a race is still a ConcurrencyConflict of the append)
    assert not synthetic_log.exists("y")


def test_cli_replay(synthetic_log, home):
    r = run(home, "replay", "s1")
    assert r.exit_code == 0, r.output
    t = build_tree(synthetic_log, "s1")
    assert tree_hash(t) in r.stdout and "evaluated" in r.stdout and t.best_node_id in r.stdout
    r = run(home, "replay", "s1", "--until", "30", "--format", "json")
    data = json.loads(r.stdout)
    assert data["tree_hash"] == tree_hash(build_tree(synthetic_log, "s1", 30)) and data["until"] == 30
    r = run(home, "replay", "s1", "--until", "100000")
    assert r.exit_code != 0 and "out of range" in r.stderr and r.stdout == ""
    r = run(home, "replay", "missing")
    assert r.exit_code != 0 and "no search 'missing'" in r.stderr


def test_cli_tree_formats(synthetic_log, home, tmp_path):
    r = run(home, "tree", "s1")
    assert r.exit_code == 0 and "n00000" in r.stdout and "[draft]" in r.stdout
    r = run(home, "tree", "s1", "--format", "json")
    data = json.loads(r.stdout)
    assert len(data["nodes"]) == len(build_tree(synthetic_log, "s1").nodes)
    out = tmp_path / "t.html"
    r = run(home, "tree", "s1", "--format", "html", "-o", str(out))
    assert r.exit_code == 0 and str(out) in r.stderr and r.stdout == ""
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")


def test_cli_fork(synthetic_log, home):
    r = run(home, "fork", "s1", "--at", "n00004", "--search-id", "cf", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["search_id"] == "cf" and data["parent_search_id"] == "s1"
    assert data["tree_hash"] == tree_hash(build_tree(synthetic_log, "cf"))
    r = run(home, "fork", "s1", "--at", "n00004")
    assert r.exit_code == 0 and r.stdout.strip().startswith("s1~n00004~")
    r = run(home, "fork", "s1", "--at", "ghost")
    assert r.exit_code != 0 and "no node 'ghost'" in r.stderr
    r = run(home, "fork", "s1", "--at", "n00004", "--at-seq", "999999")
    assert r.exit_code != 0 and "cannot fork at position 999999" in r.stderr
    r = run(home, "fork", "s1", "--at", "n00004", "--search-id", "cf")
    assert r.exit_code != 0 and "error:" in r.stderr


def test_cli_does_not_import_heavy_modules():
    import subprocess
    import sys

    code = ("import sys, trex.commands.search_cmds, trex.search; "
            "bad = [m for m in ('torch', 'transformers', 'ray') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_html_data_is_strict_json_even_with_nan(started):
    """JSON.parse in the page rejects NaN: non-finite numbers become null in the embedded data."""
    import re

    from trex.events.evaluation import MetricRecorded
    from trex.search.render import to_html

    t = fold([started(), *evaluated("a", None, 0.5), MetricRecorded(node_id="a", name="x", value=float("inf")),
              *evaluated("b", None, float("nan"))])
    page = to_html(t)
    raw = re.search(r'<script type="application/json" id="tree-data">(.*?)</script>', page, re.S).group(1)
    data = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    nodes = {n["node_id"]: n for n in data["nodes"]}
    assert nodes["b"]["score"] is None and nodes["a"]["metrics"] == [["x", None]] and nodes["a"]["score"] == 0.5


def test_a_fork_with_its_own_budget_counts_only_its_own_work(tmp_path):
    from trex.events.log import EventLog
    from trex.events.search import Budget, SearchStarted
    from trex.search import budget_check, build_tree, fork
    from tests.plugins.search_fixtures import evaluated

    log = EventLog(tmp_path)
    log.append("p", [SearchStarted(task="t", budget=Budget(max_trials=2)), *evaluated("a", None, 0.5),
                     *evaluated("b", "a", 0.6)])
    assert budget_check(build_tree(log, "p")).kind == "trials"
    fork(log, "p", "b", "own", budget=Budget(max_trials=1))
    assert budget_check(build_tree(log, "own")) is None  # the parent's two trials do not count
    log.append("own", evaluated("c", "b", 0.7))
    spent = budget_check(build_tree(log, "own"))
    assert spent is not None and spent.kind == "trials"
    fork(log, "p", "b", "inherits")
    assert budget_check(build_tree(log, "inherits")).kind == "trials"  # no budget of its own: the parent's
