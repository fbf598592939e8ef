"""Logs written by an older trex replay to the same stable view of their tree, forever.

``tests/fixtures/old_logs/2026-11-26/`` holds the FT-Bench baseline's exports as that version
wrote them (18 searches, real trials). ``views.json`` beside them was recorded once, from
that log, and is never regenerated: the tree hash grows fields from issue to issue, but the
stable view below — nodes, parents, operators, plan hashes, statuses, scores, the base score
and the finish — must not change for a log already written. The recording was checked
against the benchmark's own per-trial scores (``docs/results/ftbench/results.json``, which lists
them in the order trials finished: the same scores and base score per search, as multisets).

To add a new old version: copy its exports to a new dated folder and run
``python tests/test_old_logs.py <folder>`` (it refuses to overwrite an existing views.json).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from trex.events.log import EventLog
from trex.events.transfer import import_file
from trex.search import build_tree

OLD = Path(__file__).parent / "fixtures" / "old_logs"
VERSIONS = sorted(p for p in OLD.iterdir() if p.is_dir())


def stable_view(tree) -> dict:
    """The part of a tree every version must rebuild alike (frozen here, not imported from trex)."""
    return {
        "status": tree.status,
        "finish_reason": tree.finish_reason,
        "base": tree.base_score,
        "nodes": [[n, tree.nodes[n].parent_id, tree.nodes[n].operator, tree.nodes[n].plan_hash,
                   tree.nodes[n].status, tree.nodes[n].score] for n in tree.order],
    }


def views_of(folder: Path, home: Path) -> dict:
    log = EventLog(home)
    sids: list[str] = []
    for f in sorted(folder.glob("*.parquet")):
        sids.extend(s for s in import_file(log, f) if s not in sids)
    return {sid: stable_view(build_tree(log, sid)) for sid in sorted(sids)}


@pytest.mark.parametrize("folder", VERSIONS, ids=lambda p: p.name)
def test_an_old_log_replays_to_its_recorded_view(folder, tmp_path):
    want = json.loads((folder / "views.json").read_text())
    got = views_of(folder, tmp_path / "home")
    assert sorted(got) == sorted(want)
    for sid in want:
        assert got[sid] == want[sid], f"{folder.name}/{sid}: the tree of an old log changed"


if __name__ == "__main__":
    folder = Path(sys.argv[1]).resolve()
    out = folder / "views.json"
    if out.exists():
        sys.exit(f"{out} exists: old views are recorded once and never regenerated")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        views = views_of(folder, Path(tmp))
    out.write_text(json.dumps(views, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({len(views)} searches)", file=sys.stderr)
