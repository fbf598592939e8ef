#!/usr/bin/env python
"""Golden logs of the search tree: regenerate their tree hashes (and, on request, the logs).

    .venv/bin/python tools/update_golden.py            # re-fold tests/fixtures/golden/*.jsonl, rewrite hashes.json
    .venv/bin/python tools/update_golden.py --logs     # also rebuild the logs from the scenarios below

The logs are JSONL, one envelope record per line (the log's own columns), built
through a real EventLog with fixed event ids and recorded_at values, so they
are byte-identical on every machine. tests/test_search_golden.py replays them
and fails while a tree differs from hashes.json: run this script only when the
change to the tree is deliberate, and commit the new hashes with it.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trex.events.envelope import RawEvent  # noqa: E402
from trex.events.evaluation import EvaluationFinished, MetricRecorded  # noqa: E402
from trex.events.insights import InsightDistilled, InsightRetired  # noqa: E402
from trex.events.log import EventLog  # noqa: E402
from trex.events.notes import NoteAdded  # noqa: E402
from trex.events.plans import LlmCallMade, PlanProposed, PlanRejected  # noqa: E402
from trex.events.search import (  # noqa: E402
    Budget, BudgetExhausted, NodeSelected, SearchFinished, SearchForked, SearchResumed, SearchStarted,
)
from trex.events.trials import (  # noqa: E402
    TrialAbandoned, TrialFailed, TrialFinished, TrialReused, TrialStarted,
)
from trex.search.hashing import tree_hash  # noqa: E402
from trex.search.replay import build_tree, fork_point  # noqa: E402
from trex.search.scenario import raw, synthetic_search  # noqa: E402

GOLDEN = ROOT / "tests" / "fixtures" / "golden"
HASHES = GOLDEN / "hashes.json"


def _basic(log: EventLog) -> None:
    log.append_raw("golden-basic", synthetic_search("golden-basic", 25, seed=1), expected_version=0)


def _forks(log: EventLog) -> None:
    """A min-direction search, a fork of it, and a fork of the fork, each with events of its own."""
    log.append_raw("gf", synthetic_search("gf", 15, seed=2, direction="min", finish=False), expected_version=0)
    at_seq, _ = fork_point(log, "gf", "n00006")
    events = [raw(SearchForked(parent_search_id="gf", at_seq=at_seq, at_node="n00006",
                               budget=Budget(max_trials=5)), "gf1-0", 1000)]
    own = [
        PlanProposed(node_id="f1n0", parent_id="n00006", operator="improve", plan={"lr": 0.001}),
        TrialStarted(node_id="f1n0", trial_id="t0"),
        TrialFinished(node_id="f1n0", trial_id="t0", adapter="ad0", compute_seconds=3.25),
        MetricRecorded(node_id="f1n0", name="loss", value=0.125, primary=True),
        EvaluationFinished(node_id="f1n0", eval_id="e0", backend="cpu", n_examples=4),
        PlanProposed(node_id="f1n1", parent_id="f1n0", operator="improve", plan={"lr": 0.002}),
        TrialStarted(node_id="f1n1", trial_id="t1"),
        TrialFailed(node_id="f1n1", trial_id="t1", reason="oom", log_tail="CUDA out of memory", compute_seconds=1.5),
    ]
    events += [raw(e, f"gf1-{i + 1}", 1001 + i) for i, e in enumerate(own)]
    log.append_raw("gf1", events, expected_version=0)
    at_seq, _ = fork_point(log, "gf1", "f1n1")
    log.append_raw("gf2", [raw(SearchForked(parent_search_id="gf1", at_seq=at_seq, at_node="f1n1"), "gf2-0", 2000),
                           raw(NodeSelected(decision_id="gf2-d", node_id="f1n1", operator="improve", policy="greedy",
                                            seed=9), "gf2-1", 2001),
                           raw(PlanProposed(node_id="f2n", parent_id="f1n1", operator="improve", plan={"lr": 0.5},
                                            decision_id="gf2-d"), "gf2-2", 2002)], expected_version=0)


def _mixed(log: EventLog) -> None:
    """Hand-made events for the less common paths: reuse, abandon, rejection, resume, NaN, notes."""
    evs = [
        (SearchStarted(task="t", base_model="m", policy="greedy", seed=4, budget=Budget(max_tokens=500),
                       policy_params={"num_drafts": 2}), None),
        (InsightDistilled(insight_id="i1", text="small lr"), None),
        (NodeSelected(decision_id="d1", node_id=None, operator="draft", policy="greedy", seed=4), None),
        (LlmCallMade(call_id="c1", purpose="propose", backend="fake", model="m", prompt_hash="p", response="{}",
                     prompt_tokens=300, completion_tokens=50), "d1"),
        (PlanProposed(node_id="a", parent_id=None, plan={"lr": 1e-4, "nested": {"k": [1, 2]}}, decision_id="d1",
                      insights=("i1",)), None),
        (TrialReused(node_id="a", plan_hash="h", adapter="ad", source_search_id="old", source_node_id="x"), None),
        (MetricRecorded(node_id="a", name="acc", value=float("nan"), primary=True), None),
        (NodeSelected(decision_id="d2", node_id=None, operator="draft", policy="greedy", seed=4), None),
        (PlanRejected(node_id="b", parent_id=None, reason="bad lr", raw="{}"), None),
        (PlanProposed(node_id="c", parent_id=None, plan={}), None),
        (TrialStarted(node_id="c", trial_id="t"), None),
        (TrialAbandoned(node_id="c", trial_id="t", reason="worker lost"), None),
        (SearchResumed(reason="crash"), None),
        (InsightRetired(insight_id="i1", reason="wrong"), None),
        (NoteAdded(text="looks fine", author="ops"), None),
        (LlmCallMade(call_id="c2", purpose="distill", backend="fake", model="m", prompt_hash="p", response="",
                     prompt_tokens=200, completion_tokens=0), "c"),
        (BudgetExhausted(kind="tokens", limit=500, used=550), None),
        (SearchFinished(reason="budget", best_node_id=None), None),
    ]
    log.append_raw("golden-mixed", [raw(e, f"gm-{i}", i, corr) for i, (e, corr) in enumerate(evs)],
                   expected_version=0)


SCENARIOS = {"basic": _basic, "forks": _forks, "mixed": _mixed}


def build_logs() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, make in SCENARIOS.items():
        with tempfile.TemporaryDirectory() as tmp:
            log = EventLog(tmp)
            make(log)
            lines = [json.dumps(r, sort_keys=True, ensure_ascii=True) for r in log.read_records()]
        (GOLDEN / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {name}.jsonl ({len(lines)} events)", file=sys.stderr)


def read_golden(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def import_records(log: EventLog, records: list[dict]) -> None:
    """Append golden records to a log as they were (ids, times, payloads).

    The records' chain hashes are not checked here: they belong to the log's format, and the
    golden test is about the tree; a change of the chain format must not look like a tree change.
    """
    run: list[dict] = []

    def flush() -> None:
        if run:
            log.append_raw(run[0]["search_id"], [
                RawEvent(event_id=r["event_id"], type=r["type"], schema_version=r["schema_version"],
                         payload=r["payload"], recorded_at=r["recorded_at"], causation_id=r["causation_id"],
                         correlation_id=r["correlation_id"]) for r in run])
            run.clear()

    for r in records:
        if run and run[0]["search_id"] != r["search_id"]:
            flush()
        run.append(r)
    flush()


def compute_hashes() -> dict[str, dict[str, str]]:
    """name -> search id -> tree hash, replaying each golden log through a fresh EventLog."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted(GOLDEN.glob("*.jsonl")):
        records = read_golden(path)
        with tempfile.TemporaryDirectory() as tmp:
            log = EventLog(tmp)
            import_records(log, records)
            out[path.stem] = {sid: tree_hash(build_tree(log, sid)) for sid in log.searches()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--logs", action="store_true", help="rebuild the golden logs from the scenarios first")
    args = ap.parse_args(argv)
    if args.logs:
        build_logs()
    hashes = compute_hashes()
    old = json.loads(HASHES.read_text()) if HASHES.exists() else {}
    HASHES.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for name, per in hashes.items():
        for sid, h in per.items():
            mark = "unchanged" if old.get(name, {}).get(sid) == h else "UPDATED"
            print(f"{name:8s} {sid:14s} {h}  {mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
