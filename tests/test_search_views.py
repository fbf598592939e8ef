"""The SQL views agree with the projection."""
from __future__ import annotations

import json
import math

import duckdb

from tests.plugins.search_fixtures import evaluated, failed
from trex.events.evaluation import EvaluationFailed, MetricRecorded
from trex.events.plans import PlanProposed, PlanRejected
from trex.events.search import NodePruned, SearchStarted
from trex.events.trials import TrialAbandoned, TrialStarted
from trex.search import build_tree, fork, select
from trex.search.views import VIEWS


def connect(log):
    con = duckdb.connect()
    con.register("events_raw", log.read_table())
    con.execute("CREATE VIEW events AS SELECT * FROM events_raw")
    for sql in VIEWS.values():
        con.execute(sql)
    return con


def rows(con, sql):
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def test_nodes_view_matches_projection(synthetic_log):
    fork(synthetic_log, "s1", "n00007", "f1")  # a fork holds no node rows of its own
    synthetic_log.append("x", [
        SearchStarted(task="t"), *evaluated("a", None, 0.5), *failed("b", "a"),
        PlanProposed(node_id="c", parent_id="a", plan={"k": [1]}), TrialStarted(node_id="c", trial_id="t"),
        TrialAbandoned(node_id="c", trial_id="t"), PlanProposed(node_id="d", parent_id="a", plan={}),
        NodePruned(node_id="d", reason="r"), PlanRejected(node_id="e", parent_id="a", reason="bad"),
        PlanProposed(node_id="e", parent_id="a", plan={}),  # a proposal after the rejection: ignored
        *evaluated("f", "a", 0.7), EvaluationFailed(node_id="f", reason="x"),
        MetricRecorded(node_id="a", name="acc", value=0.9, primary=True),
        PlanProposed(node_id="a", parent_id=None, plan={}),  # a duplicate proposal: changes nothing
        TrialStarted(node_id="ghost", trial_id="t"),
    ])
    con = connect(synthetic_log)
    for sid in ("s1", "x"):
        tree = build_tree(synthetic_log, sid)
        got = {r["node_id"]: r for r in rows(con, f"SELECT * FROM nodes WHERE search_id = '{sid}'")}
        assert set(got) == set(tree.nodes)
        for nid, n in tree.nodes.items():
            r = got[nid]
            assert (r["parent_id"], r["operator"], r["status"], r["created_seq"]) == (
                n.parent_id, n.operator, n.status, n.created_seq), nid
            assert r["score"] == n.score or (r["score"] is None and n.score is None), nid
            assert json.loads(r["plan"]) == dict(n.plan)
    assert rows(con, "SELECT count(*) AS n FROM nodes WHERE search_id = 'f1'") == [{"n": 0}]
    statuses = {r["node_id"]: r["status"] for r in rows(con, "SELECT * FROM nodes WHERE search_id = 'x'")}
    assert statuses == {"a": "evaluated", "b": "failed", "c": "abandoned", "d": "pruned", "e": "rejected",
                        "f": "evaluated"}


def test_decisions_and_metrics_views(synthetic_log):
    tree = build_tree(synthetic_log, "s1")
    d = select(tree)
    synthetic_log.append("s1", [d.to_event()])
    con = connect(synthetic_log)
    got = rows(con, "SELECT * FROM decisions WHERE search_id = 's1' ORDER BY seq")
    tree = build_tree(synthetic_log, "s1")
    assert [r["decision_id"] for r in got] == [x.decision_id for x in tree.decisions]
    last = got[-1]
    assert (last["node_id"], last["operator"], last["policy"], last["seed"], last["reason"]) == (
        d.node_id, d.operator, d.policy, d.seed, d.reason)
    assert [tuple(x) for x in json.loads(last["scores"])] == [tuple(x) for x in d.scores]


def test_nan_metric_in_sql(log):
    log.append("s", [SearchStarted(task="t"), *evaluated("a", None, float("nan"))])
    con = connect(log)
    (score,) = con.execute("SELECT score FROM nodes").fetchone()
    assert score is None or math.isnan(score)


def test_views_run_inside_trex_sql(synthetic_log, home):
    """The same views through `trex sql`'s connection (payload typed JSON, recorded_at a timestamp)."""
    from trex.search import views

    con = views.connect(home)
    tree = build_tree(synthetic_log, "s1")
    got = dict(con.execute("SELECT node_id, status FROM nodes WHERE search_id = 's1'").fetchall())
    assert got == {k: n.status for k, n in tree.nodes.items()}
    (n,) = con.execute("SELECT count(*) FROM decisions WHERE search_id = 's1'").fetchone()
    assert n == len(tree.decisions)


def test_nodes_view_says_why_a_node_is_infeasible_as_the_fold_does(log):
    """``infeasible`` in SQL is the fold's judgement, word for word: every broken constraint (a secondary
    metric below or above its bound, or not measured), NULL for a feasible or unscored node; a fork is
    judged by the constraints its root search started with."""
    from trex.events.search import Constraint

    cons = (Constraint(metric="add", at_least=0.9), Constraint(metric="len", at_most=20.0))
    log.append("c", [
        SearchStarted(task="t", constraints=cons),
        *evaluated("ok", None, 0.5), MetricRecorded(node_id="ok", name="add", value=0.95),
        MetricRecorded(node_id="ok", name="len", value=3.0),
        *evaluated("low", None, 0.9), MetricRecorded(node_id="low", name="add", value=0.123456),
        MetricRecorded(node_id="low", name="len", value=25.0),
        *evaluated("none", None, 0.7),  # no secondary metric measured
        *evaluated("nan", None, 0.6), MetricRecorded(node_id="nan", name="add", value=float("nan")),
        MetricRecorded(node_id="nan", name="len", value=1.0),
        # a later value replaces an earlier one, as in the fold
        *evaluated("late", None, 0.4), MetricRecorded(node_id="late", name="add", value=0.1),
        MetricRecorded(node_id="late", name="add", value=0.99), MetricRecorded(node_id="late", name="len", value=1.0),
        PlanProposed(node_id="unscored", parent_id=None, plan={}),
    ])
    fork(log, "c", "late", "cf")
    log.append("cf", [*evaluated("g", None, 0.8), MetricRecorded(node_id="g", name="add", value=0.5),
                      MetricRecorded(node_id="g", name="len", value=1.0)])
    con = connect(log)
    for sid in ("c", "cf"):
        tree = build_tree(log, sid)
        got = {r["node_id"]: r["infeasible"] for r in rows(con, f"SELECT * FROM nodes WHERE search_id = '{sid}'")}
        assert got and all(got[nid] == tree.nodes[nid].infeasible for nid in got), (sid, got)
    c = {r["node_id"]: r["infeasible"] for r in rows(con, "SELECT * FROM nodes WHERE search_id = 'c'")}
    assert c == {"ok": None, "low": "add 0.1235 < 0.9 required; len 25 > 20 allowed",
                 "none": "add not measured; len not measured", "nan": "add not measured", "late": None,
                 "unscored": None}
    assert rows(con, "SELECT infeasible FROM nodes WHERE search_id = 'cf'") == [{"infeasible": "add 0.5 < 0.9 required"}]
    log.append("p", [SearchStarted(task="t"), *evaluated("a", None, 0.5)])
    assert rows(connect(log), "SELECT infeasible FROM nodes WHERE search_id = 'p'") == [{"infeasible": None}]
