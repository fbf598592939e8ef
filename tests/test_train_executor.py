"""Real training of the tiny arith model in worker subprocesses (tens of steps each)."""
import os
import signal
import threading

import pytest

from trex.events import EventLog
from trex.events.trials import TrialFailed, TrialFinished, TrialProgressed, TrialReused, TrialStarted
from trex.plan import example_plan
from trex.recipe import Recipe, Source
from trex.train import Executor

pytestmark = pytest.mark.slow

SID = "search-1"


def make_executor(home, **kw):
    log = EventLog(home)
    seen = []

    def emit(ev):
        seen.append(ev)
        log.append(SID, [ev])

    kw.setdefault("threads", 1)
    kw.setdefault("progress_every", 5)
    return Executor(home, emit, search_id=SID, **kw), log, seen


def kinds(events):
    return [type(e).__name__ for e in events]


def trial(events):
    """The trial's own events: every run starts with the contamination check of its data (tested below)."""
    assert type(events[0]).__name__ == "DataOverlapChecked", kinds(events)
    return events[1:]


def plan(**kw):
    kw.setdefault("max_steps", 30)
    kw.setdefault("learning_rate", 3e-3)
    kw.setdefault("batch_size", 32)
    kw.setdefault("lr_schedule", "constant")
    return example_plan(**kw)


def test_train_reuse_and_continue(arith_home):
    ex, log, seen = make_executor(arith_home)
    p = plan()
    out = ex.run(p, task="arith-sub", node_id="n1")
    assert out.status == "finished", (out.reason, out.message)
    k = kinds(trial(out.events))
    assert k[0] == "TrialStarted" and k[-1] == "TrialFinished" and k.count("TrialProgressed") == 6
    fin = out.events[-1]
    assert isinstance(fin, TrialFinished) and fin.steps == 30 and fin.adapter == out.adapter
    assert fin.train_metrics["final_loss"] < fin.train_metrics["first_loss"]
    assert fin.compute_seconds > 0
    steps = [e.step for e in out.events if isinstance(e, TrialProgressed)]
    assert steps == [5, 10, 15, 20, 25, 30]
    assert (ex.store.get(out.adapter) / "adapter_config.json").is_file()
    assert [e.type for e in log.read(SID)] == ["DataOverlapChecked", *k]

    # the same plan again: served from the cache, no worker
    started = []
    again = ex.run(p, task="arith-sub", node_id="n2", on_worker_start=started.append)
    assert again.status == "reused" and not started
    assert kinds(trial(again.events)) == ["TrialReused"]
    r = trial(again.events)[0]
    assert isinstance(r, TrialReused) and r.adapter == out.adapter and r.source_node_id == "n1"
    assert r.source_search_id == SID and r.work_key == fin.work_key == out.work_key != ""
    curve = tuple((e.step, e.loss) for e in out.events if isinstance(e, TrialProgressed))
    assert r.progress == curve  # the reuse carries the curve its source sampled: the same evidence

    # the index is only a cache of the log: without it, an Executor given the log finds the work there
    import shutil

    shutil.rmtree(arith_home / "train" / "index")
    ex_log = Executor(arith_home, lambda ev: None, search_id="other", log=log, threads=1)
    assert ex.lookup(out.work_key) is None
    via_log = ex_log.run(p, task="arith-sub", node_id="m1", on_worker_start=started.append)
    assert via_log.status == "reused" and via_log.adapter == out.adapter and not started
    assert trial(via_log.events)[0].source_node_id == "n1" and trial(via_log.events)[0].source_search_id == SID
    assert trial(via_log.events)[0].progress == curve  # the log's index gathers it from TrialProgressed

    # a continued child starts from its parent's checkpoint and trains only its own steps
    child = plan(max_steps=10, continue_from_parent=True)
    c = ex.run(child, task="arith-sub", node_id="n3", parent_adapter=out.adapter)
    assert c.status == "finished", (c.reason, c.message)
    st = trial(c.events)[0]
    assert isinstance(st, TrialStarted) and st.resume_from == out.adapter
    assert c.steps == 10 and c.adapter != out.adapter
    # it starts where the parent ended, far below a fresh adapter's first loss
    assert c.train_metrics["first_loss"] < fin.train_metrics["first_loss"] - 0.1
    # continuing needs the parent, and the same adapter shape
    nop = ex.run(child, task="arith-sub", node_id="n4")
    assert nop.status == "failed" and nop.reason == "bad_plan"
    bad = ex.run(plan(max_steps=10, continue_from_parent=True, lora_rank=4), task="arith-sub", node_id="n5",
                 parent_adapter=out.adapter)
    assert bad.reason == "bad_plan" and "rank" in bad.message


def test_nan_loss_then_crash_then_carry_on(arith_home):
    ex, log, seen = make_executor(arith_home)
    nan = ex.run(plan(method="full", learning_rate=1.0, max_steps=60), task="arith-sub", node_id="nan")
    assert nan.status == "failed" and nan.reason == "nan_loss", nan.message
    assert kinds(trial(nan.events))[0] == "TrialStarted" and kinds(nan.events)[-1] == "TrialFailed"

    # SIGKILL the worker after its first progress report
    pid = {}

    def emit(ev):
        seen.append(ev)
        log.append(SID, [ev])
        if isinstance(ev, TrialProgressed) and ev.node_id == "killed":
            os.kill(pid["pid"], signal.SIGKILL)

    ex.emit_fn = emit
    killed = ex.run(plan(max_steps=5000), task="arith-sub", node_id="killed",
                    on_worker_start=lambda p: pid.setdefault("pid", p))
    assert killed.status == "failed" and killed.reason == "crash"
    fail = killed.events[-1]
    assert isinstance(fail, TrialFailed) and "SIGKILL" in fail.message
    assert sum(isinstance(e, (TrialFinished, TrialFailed)) for e in killed.events) == 1

    # the caller carries on: the next trial (a full fine-tune) trains normally
    ok = ex.run(plan(max_steps=10, method="full", learning_rate=1e-3), task="arith-sub", node_id="after")
    assert ok.status == "finished", ok.message
    from ftbench.arith import evaluate_adapter

    full_dir = ex.store.get(ok.adapter)
    assert (full_dir / "config.json").is_file() and not (full_dir / "adapter_config.json").exists()
    m = evaluate_adapter(full_dir, "arith-sub", arith_home, limit=50)
    assert set(m) == {"exact_match", "add_exact_match"}


def test_injected_nan_cancel_and_timeout(arith_home):
    ex, log, seen = make_executor(arith_home, worker_env={"TREX_FAULT": "nan@3"})
    out = ex.run(plan(max_steps=10), task="arith-sub", node_id="inj")
    assert out.reason == "nan_loss" and "injected" in out.message

    cancel = threading.Event()
    ex2, _, _ = make_executor(arith_home)
    ex2.emit_fn = lambda ev: cancel.set() if isinstance(ev, TrialProgressed) else None
    c = ex2.run(plan(max_steps=5000), task="arith-sub", node_id="cancel", cancel=cancel)
    assert c.status == "failed" and c.reason == "cancelled"

    ex3, _, _ = make_executor(arith_home, worker_env={"TREX_FAULT": "sleep@1"})
    t = ex3.run(plan(max_steps=10), task="arith-sub", node_id="slow", time_limit_s=8)
    assert t.reason == "timeout" and t.compute_seconds >= 8


def test_bad_recipe_never_starts_a_worker(arith_home, tmp_path):
    ex, log, seen = make_executor(arith_home)
    started = []
    p = plan(data=Recipe(sources=(Source(uri="../../etc/passwd.jsonl"),)))
    out = ex.run(p, task="arith-sub", node_id="evil", on_worker_start=started.append)
    assert out.reason == "bad_plan" and "'..'" in out.message and not started
    assert kinds(out.events) == ["TrialStarted", "TrialFailed"]
    out = ex.run({"learning_rate": 3}, task="arith-sub", node_id="evil2")
    assert out.reason == "bad_plan" and "invalid plan" in out.message


def test_emit_error_never_leaves_a_worker_behind(arith_home):
    pid = {}

    def emit(ev):
        if isinstance(ev, TrialProgressed):
            raise RuntimeError("log unavailable")

    ex = Executor(arith_home, emit, threads=1, progress_every=1)
    with pytest.raises(RuntimeError, match="log unavailable"):
        ex.run(plan(max_steps=5000), task="arith-sub", node_id="x", on_worker_start=lambda p: pid.setdefault("p", p))
    with pytest.raises(ProcessLookupError):
        os.kill(pid["p"], 0)


def test_a_recipe_holding_held_out_prompts_is_refused_and_never_trained(arith_home):
    """The contamination guard before training: a planted source with 5% of the test prompts."""
    import json

    from trex.events.data import DataOverlapChecked
    from trex.events.plans import PlanRejected
    from trex.tasks import load_split

    train, held = load_split("arith-sub", "train", arith_home), load_split("arith-sub", "test", arith_home)
    planted = train[:380] + held[:20]  # 20 of 400 rows (5%) are held-out test rows
    path = arith_home / "data" / "planted.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in planted))
    ex, log, seen = make_executor(arith_home)
    out = ex.run(plan(data=Recipe(sources=(Source(uri=str(path)),))), task="arith-sub", node_id="n1")
    assert out.status == "refused" and not out.ok and "test" in out.message and "20 of" in out.message
    assert kinds(seen) == ["DataOverlapChecked", "PlanRejected"]  # no TrialStarted: nothing was trained
    checked = next(e for e in seen if isinstance(e, DataOverlapChecked))
    assert checked.refused and checked.exact_prompts >= 20 and checked.node_id == "n1"
    assert next(e for e in seen if isinstance(e, PlanRejected)).node_id == "n1"
    # the task's own train split passes (and the verdict is cached by the recipe's content hash)
    seen.clear()
    clean = ex.run(plan(max_steps=2), task="arith-sub", node_id="n2")
    assert clean.ok and kinds(seen)[0] == "DataOverlapChecked" and not seen[0].refused


def test_a_recorded_overlap_override_holds_for_the_search_and_its_forks(tmp_path):
    from trex.events.search import SearchForked, SearchStarted

    log = EventLog(tmp_path)
    log.append("allowed", [SearchStarted(task="t", labels={"overlap_override": "2 of 40 rows share a prompt"})])
    log.append("strict", [SearchStarted(task="t")])
    log.append("allowed~f", [SearchForked(parent_search_id="allowed", at_seq=1)])
    log.append("allowed~f~g", [SearchForked(parent_search_id="allowed~f", at_seq=1)])
    allowed = {sid: Executor(tmp_path, lambda ev: None, search_id=sid, log=log)._overlap_allowed()
               for sid in ("allowed", "strict", "allowed~f", "allowed~f~g", "nope")}
    assert allowed == {"allowed": True, "strict": False, "allowed~f": True, "allowed~f~g": True, "nope": False}


def test_an_index_entry_from_before_curves_gets_its_own_trials_curve_once_and_a_bad_entry_is_a_miss(tmp_path):
    """No training: the index and the log by hand. An entry without ``progress`` is given the curve the log
    holds for the same adapter — not another trial's of the same work — and rewritten, so the log is read
    once; an entry that is not one (a list, steps as text, metrics as a list) is a miss, never a crash."""
    import json

    home = tmp_path / "home"
    ex, log, _ = make_executor(home, log=EventLog(home))
    adir = tmp_path / "adapter"
    adir.mkdir()
    (adir / "adapter_config.json").write_text("{}")
    a = ex.store.put(adir)
    other = "f" * 64  # another trial of the same work, logged first, whose adapter the store lacks
    log.append("s0", [TrialProgressed(node_id="m1", trial_id="u1", step=10, loss=9.0),
                      TrialFinished(node_id="m1", trial_id="u1", adapter=other, work_key="k")])
    log.append("s1", [TrialProgressed(node_id="n1", trial_id="t1", step=10, loss=2.0),
                      TrialProgressed(node_id="n1", trial_id="t1", step=20, loss=1.5),
                      TrialFinished(node_id="n1", trial_id="t1", adapter=a, work_key="k")])
    path = ex._index_path("k")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"adapter": a, "search_id": "s1", "node_id": "n1", "steps": 20,
                                "train_metrics": {"final_loss": 1.5}}))
    got = ex.lookup("k")
    assert got["adapter"] == a and got["progress"] == [[10, 2.0], [20, 1.5]]
    assert json.loads(path.read_text())["progress"] == [[10, 2.0], [20, 1.5]]  # rewritten: asked once
    for bad in ([a], {"adapter": a, "steps": "20"}, {"adapter": a, "train_metrics": [1]}, {"adapter": 7},
                {"adapter": a, "train_metrics": {"x": "y"}}):
        path.write_text(json.dumps(bad))
        again = ex.lookup("k")  # a miss in the index: the log's own entry (the stored adapter), or none
        assert again is not None and again["adapter"] == a and again["progress"] == [[10, 2.0], [20, 1.5]]
    bare = Executor(home, lambda ev: None, search_id="x", threads=1)  # no log to ask
    path.write_text(json.dumps({"adapter": a, "steps": 3}))
    assert bare.lookup("k")["progress"] == []


def test_an_executor_scoped_to_its_search_serves_only_that_searchs_work(tmp_path):
    """``reuse="search"`` (a benchmark's cells): identical work another search did is not served — from
    the index or the log — so it cannot arrive at no cost and change the cell's timing; ``"home"`` serves it."""
    import json

    home = tmp_path / "home"
    log = EventLog(home)
    adir = tmp_path / "adapter"
    adir.mkdir()
    (adir / "adapter_config.json").write_text("{}")
    a = Executor(home, lambda ev: None, threads=1).store.put(adir)
    log.append("other", [TrialFinished(node_id="n1", trial_id="t1", adapter=a, work_key="k")])
    path = Executor(home, lambda ev: None)._index_path("k")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"adapter": a, "search_id": "other", "node_id": "n1", "steps": 1,
                                "train_metrics": {}, "progress": []}))
    mine = Executor(home, lambda ev: None, search_id="cell", log=log, reuse="search")
    assert mine.lookup("k") is None
    assert Executor(home, lambda ev: None, search_id="other", log=log, reuse="search").lookup("k")["node_id"] == "n1"
    assert Executor(home, lambda ev: None, search_id="cell", log=log).lookup("k")["search_id"] == "other"
    log.append("cell", [TrialFinished(node_id="n4", trial_id="t4", adapter=a, work_key="k")])
    assert mine.lookup("k")["node_id"] == "n4"  # its own work, found in the log
    with pytest.raises(ValueError, match="reuse must be"):
        Executor(home, lambda ev: None, reuse="everywhere")
