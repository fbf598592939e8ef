"""Golden logs: replaying them must give the committed tree hashes.

A change that alters a golden tree fails here until the hashes are deliberately
regenerated with ``.venv/bin/python tools/update_golden.py`` (and committed).
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from trex.events.log import EventLog
from trex.search import build_tree, fold, tree_hash

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "fixtures" / "golden"


def _tool():
    spec = importlib.util.spec_from_file_location("update_golden", ROOT / "tools" / "update_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


EXPECTED = json.loads((GOLDEN / "hashes.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_tree_hashes(name, tmp_path):
    tool = _tool()
    records = tool.read_golden(GOLDEN / f"{name}.jsonl")
    log = EventLog(tmp_path / "home")
    tool.import_records(log, records)
    got = {sid: tree_hash(build_tree(log, sid)) for sid in log.searches()}
    changed = {sid: (EXPECTED[name].get(sid), h) for sid, h in got.items() if EXPECTED[name].get(sid) != h}
    assert not changed and set(got) == set(EXPECTED[name]), (
        f"golden log {name}.jsonl folds to a different tree: {changed}. If this change to the tree is "
        f"deliberate, run `.venv/bin/python tools/update_golden.py` and commit tests/fixtures/golden/hashes.json.")


def test_golden_records_fold_without_the_log():
    """Folding the stored records directly agrees with the log (plain streams, no fork resolution)."""
    tool = _tool()
    recs = tool.read_golden(GOLDEN / "basic.jsonl")
    assert tree_hash(fold(recs)) == EXPECTED["basic"]["golden-basic"]


def test_golden_mixed_content(tmp_path):
    tool = _tool()
    log = EventLog(tmp_path / "home")
    tool.import_records(log, tool.read_golden(GOLDEN / "mixed.jsonl"))
    t = build_tree(log, "golden-mixed")
    assert {k: n.status for k, n in t.nodes.items()} == {"a": "trained", "b": "rejected", "c": "abandoned"}
    assert math.isnan(t.nodes["a"].score) and t.best_node_id is None
    assert t.nodes["a"].tokens == 350 and t.nodes["c"].tokens == 200 and t.tokens == 550
    assert t.nodes["a"].reused_from == ("old", "x") and not t.insights and t.resumes == 1
    assert (t.status, t.exhausted, t.notes) == ("finished", ("tokens",), (("ops", "looks fine"),))


def test_golden_forks_content(tmp_path):
    tool = _tool()
    log = EventLog(tmp_path / "home")
    tool.import_records(log, tool.read_golden(GOLDEN / "forks.jsonl"))
    gf2 = build_tree(log, "gf2")
    assert [f[:2] for f in gf2.forks] == [("gf1", "gf"), ("gf2", "gf1")]
    assert gf2.nodes["f2n"].parent_id == "f1n1" and gf2.nodes["f1n1"].status == "failed"
    assert gf2.metric_direction == "min" and gf2.best_node_id == "n00003"  # lowest: 0.050136 < f1n0 0.125
    assert gf2.nodes["f1n0"].score == 0.125 and gf2.nodes["f1n0"].origin == "gf1"
    # gf1's own budget (5 trials) is offset by the trials its prefix had started; gf2 inherits it
    prefix_trials = build_tree(log, "gf1", until=1).trials
    assert prefix_trials > 0 and dict(gf2.budget) == {"max_trials": 5 + prefix_trials}
