"""The contamination guard: exact and n-gram overlap of training rows with held-out rows, its
calibration, its cache, its event, and the pre-run check of a user's task file."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from trex.events.base import registered_types
from trex.tasks import contamination as cg
from trex.tasks.contamination import OverlapSettings, check_overlap, check_task_data

REPO = Path(__file__).resolve().parents[1]
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu red green blue amber violet cyan "
         "river stone cloud field forest ocean desert valley harbor bridge castle garden market tower").split()
TEMPLATE = ("Read the following note carefully and answer with the single word that best names its main "
            "subject, using lowercase letters only.\nNote:")


def _rows(n: int, seed: int, template: str = TEMPLATE) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": f"{template} {' '.join(rng.choice(WORDS) for _ in range(14))}\nAnswer:",
             "completion": f" {rng.choice(WORDS)}"} for _ in range(n)]


@pytest.fixture(scope="module")
def splits():
    return {"val": _rows(200, 2), "test": _rows(200, 3)}


def test_a_source_holding_5_percent_of_the_test_prompts_is_refused_with_the_overlap_named(splits):
    planted = [dict(r) for r in splits["test"][:10]]  # 5% of test's 200 prompts
    source = _rows(990, 1) + planted
    r = check_overlap(source, splits)
    assert r.refused
    assert r.exact_prompts == 10 and r.exact_pairs == 10 and r.flagged_rows == 10
    test = next(s for s in r.splits if s.split == "test")
    assert test.covered == 10 and test.exact_prompts == 10
    assert "10 of 1000 training rows (1.0%)" in r.reason and "share their prompt with test" in r.reason
    assert "10 of 200 test rows (5.0%)" in r.reason and "refused" in r.reason and "\n" not in r.reason
    assert set(r.example_rows) <= set(range(990, 1000)) and len(r.example_rows) == 5
    assert "Read the following" not in r.model_dump_json()  # counts and ids, never row text


def test_a_planted_copy_differing_in_case_and_spacing_is_still_an_exact_match(splits):
    leak = [{"prompt": "  " + r["prompt"].upper().replace(" ", "   "), "completion": r["completion"]}
            for r in splits["val"][:10]]
    r = check_overlap(_rows(500, 1) + leak, splits)
    assert r.refused and r.exact_prompts == 10 and "with val" in r.reason


def test_a_clean_source_passes(splits):
    r = check_overlap(_rows(1000, 1), splits)
    assert not r.refused and r.flagged_rows == 0 and r.fraction == 0.0
    assert r.reason.startswith("no overlap: 0 of 1000 training rows match test/val")
    assert r.threshold_used is not None and r.threshold_used >= r.baseline + r.settings.margin - 1e-9


def test_rows_sharing_a_long_template_with_test_but_not_their_content_pass(splits):
    """The template is 21 words (14 8-grams wholly inside it): dropped as frequent, it is no evidence."""
    r = check_overlap(_rows(1000, 1), splits)
    assert r.ngram_rows == 0 and not r.refused
    # the same rows with the frequency filter off: nearly every row "overlaps" through the template alone
    off = check_overlap(_rows(1000, 1), splits,
                        settings=OverlapSettings(frequent_fraction=1.0, baseline_quantile=0.01, margin=0.0))
    assert off.ngram_rows > 900


def test_near_copies_are_caught_by_n_grams_calibrated_on_the_clean_train(splits):
    """Test prompts with a word added: no exact match, but nearly all their n-grams are test's."""
    near = [{"prompt": r["prompt"] + " please", "completion": " x"} for r in splits["test"][:20]]
    clean = _rows(1000, 1)
    r = check_overlap(clean[:500] + near, splits, reference=clean)
    assert r.exact_prompts == 0 and r.ngram_rows == 20 and r.refused
    assert f"share at least {r.threshold_used:.0%} of their 8-grams with test" in r.reason
    assert r.baseline < r.threshold_used


def test_short_prompts_use_exact_match_only():
    rng = random.Random(0)
    pairs = sorted({(rng.randrange(100), rng.randrange(100)) for _ in range(3000)})
    rows = [{"prompt": f"{a}-{b}=", "completion": str(a - b)} for a, b in pairs]
    train, test = rows[:2000], rows[2000:2200]
    r = check_overlap(train, {"test": test})
    assert not r.refused and r.short_rows == 2000 and r.ngram_rows == 0
    leaked = check_overlap(train + [{"prompt": f" {test[0]['prompt']} ", "completion": "0"}] * 1
                           + test[1:30], {"test": test})
    assert leaked.refused and leaked.exact_prompts == 30 and leaked.exact_pairs == 29 and leaked.ngram_rows == 0


@pytest.mark.parametrize("name", ["arith-sub", "tickets", "orders"])
def test_the_built_in_cpu_tasks_pass_clean(name, tmp_path):
    from trex.tasks import get_task

    r = check_task_data(get_task(name), tmp_path)
    assert not r.refused, r.reason
    assert r.exact_prompts == 0 and r.exact_pairs == 0
    assert (tmp_path / "cache" / "overlap" / f"{r.key}.json").is_file()


def test_a_report_seen_before_is_read_back_not_recomputed(splits, tmp_path, monkeypatch):
    src = _rows(300, 1) + splits["test"][:10]
    first = check_overlap(src, splits, cache_dir=tmp_path)
    files = os.listdir(tmp_path)
    assert files == [f"{first.key}.json"] and all(c in "0123456789abcdef" for c in first.key)

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(cg, "_compute", boom)
    assert check_overlap([dict(r) for r in src], splits, cache_dir=tmp_path) == first
    with pytest.raises(AssertionError, match="recomputed"):  # other settings: another key
        check_overlap(src, splits, cache_dir=tmp_path, settings=OverlapSettings(n=6))
    with pytest.raises(AssertionError, match="recomputed"):  # other rows: another key
        check_overlap(src[:-1], splits, cache_dir=tmp_path)


def test_a_damaged_or_linked_cache_entry_is_recomputed_and_never_followed(splits, tmp_path):
    src = _rows(100, 1)
    r = check_overlap(src, splits, cache_dir=tmp_path)
    entry = tmp_path / f"{r.key}.json"
    entry.write_text("{not json")
    assert check_overlap(src, splits, cache_dir=tmp_path) == r
    assert json.loads(entry.read_text())["key"] == r.key  # rewritten whole
    target = tmp_path / "elsewhere.json"
    target.write_text(r.model_dump_json())
    entry.unlink()
    entry.symlink_to(target)
    assert check_overlap(src, splits, cache_dir=tmp_path) == r  # not read through the link
    assert not entry.is_symlink() and target.read_text() == r.model_dump_json()  # replaced, target untouched


def test_the_event_holds_counts_and_ids_and_the_fold_ignores_it(splits, started):
    from trex.events.base import decode, encode
    from trex.events.data import DataOverlapChecked
    from trex.events.plans import PlanProposed
    from trex.search import fold
    from trex.search.hashing import canonical_lines

    cls, version = registered_types()["DataOverlapChecked"]
    assert cls is DataOverlapChecked and cls.model_config["frozen"] and cls.model_config["extra"] == "forbid"
    r = check_overlap(_rows(300, 1) + splits["test"][:10], splits)
    ev = r.event(node_id="n1")
    assert ev.example_rows == r.example_rows and isinstance(ev.heldout_rows, tuple) and ev.refused
    t, v, payload = encode(ev)
    assert decode(t, v, payload) == ev
    assert "Read the following" not in json.dumps(payload) and "Answer:" not in json.dumps(payload)
    a = fold([started(), PlanProposed(node_id="n1", parent_id=None, plan={})])
    b = fold([started(), ev, PlanProposed(node_id="n1", parent_id=None, plan={})])
    drop = lambda t: [x for x in canonical_lines(t) if "last_seq" not in x]  # noqa: E731
    assert b.nodes.keys() == a.nodes.keys() and b.nodes["n1"].status == a.nodes["n1"].status
    assert len(drop(a)) == len(drop(b))


# ------------------------------------------------------------------------------ a user's task file
TASK_FILE = """
name: my-leaky
domain: notes
description: name a note's subject, from my own files
base_model: {path: model}
data: {files: {train: train.jsonl, eval: eval.jsonl}}
metrics: [{name: exact_match, split: eval, primary: true}]
budget: {trials: 1, steps: 5}
"""


def _task_file(tmp_path: Path, leak: int) -> Path:
    folder = tmp_path / "task"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text("{}")
    ev = _rows(100, 3)
    train = _rows(400, 1) + ev[:leak]
    for name, rows in (("train", train), ("eval", ev)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "task.yaml").write_text(TASK_FILE)
    return folder / "task.yaml"


def test_trex_run_refuses_a_task_file_whose_train_holds_part_of_its_eval_before_anything_trains(tmp_path):
    from trex.events.log import EventLog

    home = tmp_path / "home"
    task = _task_file(tmp_path, leak=10)
    res = subprocess.run([sys.executable, "-m", "trex.cli", "run", str(task), "--home", str(home)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: task 'my-leaky': 10 of 410 training rows (2.4%)")
    assert "share their prompt with eval" in lines[0] and "10 of 100 eval rows (10.0%)" in lines[0]
    assert "--allow-overlap" in lines[0]
    assert EventLog(home).searches() == []


def test_allow_overlap_lets_it_through_and_records_the_override(tmp_path, capsys):
    from trex.commands.run_cmds import resolve_task

    home = tmp_path / "home"
    task = _task_file(tmp_path, leak=10)
    with pytest.raises(SystemExit):
        resolve_task(str(task), home)
    t, extra = resolve_task(str(task), home, allow_overlap=True)
    assert t.name == "my-leaky"
    assert extra["labels"]["overlap_override"].startswith("10 of 410 training rows")
    assert extra["labels"]["data_overlap"] == extra["labels"]["overlap_override"]
    assert "running anyway (--allow-overlap, recorded)" in capsys.readouterr().err
    from trex.events.search import SearchStarted

    SearchStarted(task=t.name, **extra)  # the labels are valid SearchStarted fields


def test_a_clean_task_file_passes_and_prints_its_numbers(tmp_path, capsys):
    from trex.commands.run_cmds import resolve_task

    t, extra = resolve_task(str(_task_file(tmp_path, leak=0)), tmp_path / "home")
    assert "overlap_override" not in extra["labels"]
    err = capsys.readouterr().err
    assert "overlap check: no overlap: 0 of 400 training rows match eval" in err and "clean baseline" in err
