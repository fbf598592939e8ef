"""No write through a link under the home: artifacts, datasets, lock files, task data and installed
tasks, LLM prompts, evaluation outputs and caches, the Executor's trial folders and work index, and
the model folders built under ``HOME/models``; and lock waits that are bounded and said.

For each writer, a symbolic link (to a file or folder outside the home, with known content) is
planted where the writer would write — the file itself, or a folder on the way — and the writer
must refuse with :class:`LinkRefused` naming the path, leaving the link's target untouched.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from trex.artifacts import ArtifactStore, file_hash, folder_hash
from trex.events.errors import LinkRefused, LockTimeout
from trex.recipe import Recipe, Source, apply_recipe, dataset_path, materialize, rows_hash

SECRET = b"outside the home: must not change\n"


@pytest.fixture
def outside(tmp_path):
    """A file and a folder outside the home, and a check that neither changed."""
    d = tmp_path / "outside"
    d.mkdir()
    f = d / "victim.txt"
    f.write_bytes(SECRET)
    sub = d / "dir"
    sub.mkdir()
    (sub / "keep.txt").write_bytes(SECRET)

    def unchanged():
        assert f.read_bytes() == SECRET
        assert sorted(p.name for p in sub.iterdir()) == ["keep.txt"] and (sub / "keep.txt").read_bytes() == SECRET
        assert sorted(p.name for p in d.iterdir()) == ["dir", "victim.txt"]

    return f, sub, unchanged


def _link(at: Path, target: Path) -> Path:
    at.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, at)
    return at


def _refused(fn, where: Path):
    with pytest.raises(LinkRefused) as e:
        fn()
    msg = str(e.value)
    assert str(where) in msg and "symbolic link" in msg and "\n" not in msg
    return msg


# ------------------------------------------------------------------------------- artifacts
@pytest.fixture
def adapter(tmp_path):
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(b"weights")
    (src / "adapter_config.json").write_text("{}")
    return src, folder_hash(src)


@pytest.mark.parametrize("where", ["manifest", "object", "shard", "root", "tmp", "lock"])
def test_artifact_put_refuses_a_link_where_it_writes(tmp_path, outside, adapter, where):
    victim, vdir, unchanged = outside
    src, h = adapter
    home = tmp_path / "home"
    root = home / "artifacts"
    at = {
        "manifest": (root / h[:2] / f"{h}.json", victim),  # the manifest, replaced on put
        "object": (root / h[:2] / h, vdir),                # the object folder, replaced on put
        "shard": (root / h[:2], vdir),                     # a folder on the way
        "root": (root, vdir),                              # the store's folder under the home
        "tmp": (root / "tmp", vdir),                       # where objects are staged
        "lock": (root / "tmp" / f"{h}.lock", victim),      # the put's lock file
    }[where]
    if where != "root":
        root.mkdir(parents=True)
    _link(*at)
    store = ArtifactStore(home)
    _refused(lambda: store.put(src), at[0])
    unchanged()


def test_artifact_file_put_refuses_a_linked_manifest(tmp_path, outside):
    victim, _, unchanged = outside
    f = tmp_path / "eval.json"
    f.write_text('{"acc": 1}')
    h = file_hash(f)
    home = tmp_path / "home"
    link = _link(home / "artifacts" / h[:2] / f"{h}.json", victim)
    _refused(lambda: ArtifactStore(home).put(f), link)
    unchanged()


def test_artifact_get_refuses_a_linked_object(tmp_path, outside, adapter):
    """An object replaced by a link after it was stored is not read as the artifact."""
    _, vdir, unchanged = outside
    src, _ = adapter
    home = tmp_path / "home"
    store = ArtifactStore(home)
    h = store.put(src)
    obj = Path(store._obj(h))
    shutil.rmtree(obj)
    _link(obj, vdir)
    _refused(lambda: store.get(h), obj)
    unchanged()


def test_remote_artifact_download_refuses_a_link_in_the_cache(tmp_path, outside, adapter):
    _, vdir, unchanged = outside
    src, _ = adapter
    home = tmp_path / "home"
    store = ArtifactStore(home, root="memory://nofollow-test")
    h = store.put(src)
    cached = _link(home / "cache" / "artifacts" / h[:2], vdir)  # a folder on the way of the download
    _refused(lambda: store.get(h), cached)
    unchanged()


def test_artifacts_still_store_and_dedupe(tmp_path, adapter):
    src, h = adapter
    store = ArtifactStore(tmp_path / "home")
    assert store.put(src) == h and store.put(src) == h
    assert store.verify(h) and json.loads(Path(store._manifest(h)).read_text())["kind"] == "dir"


# -------------------------------------------------------------------------------- datasets
@pytest.fixture
def recipe_home(tmp_path):
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "a.jsonl").write_text("".join(
        json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(5)))
    r = Recipe(sources=(Source(uri="data/a.jsonl"),))
    return home, r, rows_hash(apply_recipe(r, home))


@pytest.mark.parametrize("where", ["file", "shard", "datasets"])
def test_materialize_refuses_a_link_where_it_writes(recipe_home, outside, where):
    victim, vdir, unchanged = outside
    home, r, digest = recipe_home
    path = dataset_path(home, digest)
    at = {"file": (path, victim), "shard": (path.parent, vdir), "datasets": (home / "datasets", vdir)}[where]
    _link(*at)
    _refused(lambda: materialize(r, home), at[0])
    unchanged()


def test_materialize_refuses_a_link_to_an_existing_dataset(recipe_home, tmp_path):
    """A link to a file with the right rows is still a link: not taken as the cached dataset."""
    home, r, digest = recipe_home
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    (elsewhere / "data" / "a.jsonl").write_bytes((home / "data" / "a.jsonl").read_bytes())
    good = materialize(r, elsewhere)[1]
    path = dataset_path(home, digest)
    _link(path, good)
    before = good.read_bytes()
    _refused(lambda: materialize(r, home), path)
    assert good.read_bytes() == before


def test_materialize_writes_the_dataset(recipe_home):
    home, r, digest = recipe_home
    h, p = materialize(r, home)
    assert h == digest and p == dataset_path(home, digest) and not p.is_symlink()
    assert sorted(json.loads(x)["prompt"] for x in p.read_text().splitlines()) == [f"q{i}" for i in range(5)]
    assert materialize(r, home) == (h, p)
    assert [x.name for x in p.parent.iterdir()] == [p.name]  # no temporary file left


# ----------------------------------------------------------------------------------- locks
def test_home_lock_refuses_a_linked_lock_file(tmp_path, outside):
    from trex.actors.runtime import home_lock

    victim, _, unchanged = outside
    home = tmp_path / "home"
    link = _link(home / "locks" / "run-x.lock", victim)
    lock = home_lock(home, "run-x")
    _refused(lambda: lock.acquire(timeout=0), link)
    unchanged()


def test_home_lock_refuses_a_linked_locks_folder(tmp_path, outside):
    from trex.actors.runtime import home_lock

    _, vdir, unchanged = outside
    home = tmp_path / "home"
    home.mkdir()
    link = _link(home / "locks", vdir)
    _refused(lambda: home_lock(home, "run-x").acquire(timeout=0), link)
    unchanged()


def test_home_lock_keeps_filelocks_interface(tmp_path):
    from filelock import Timeout

    from trex.actors.runtime import home_lock

    home = tmp_path / "home"
    a, b = home_lock(home, "cmd-1"), home_lock(home, "cmd-1")
    a.acquire(timeout=0)
    assert a.is_locked and a.lock_file == str(home / "locks" / "cmd-1.lock")
    with pytest.raises(Timeout) as e:  # held by another open of the same file: what another process sees
        b.acquire(timeout=0.05)
    assert isinstance(e.value, LockTimeout) and "cmd-1.lock" in str(e.value) and "\n" not in str(e.value)
    with a:  # re-entrant in its thread
        pass
    assert a.is_locked
    a.release()
    assert not a.is_locked
    with b:
        assert b.is_locked
    assert not b.is_locked


def test_home_lock_timeout_pickles_as_itself(tmp_path):
    """A Ray actor's exception travels pickled: it must stay a filelock.Timeout and a LockTimeout."""
    import pickle

    from filelock import Timeout

    from trex.events.fsio import HomeLock

    a, b = HomeLock(tmp_path / "x.lock"), HomeLock(tmp_path / "x.lock")
    a.acquire()
    try:
        with pytest.raises(Timeout) as e:
            b.acquire(timeout=0)
    finally:
        a.release()
    back = pickle.loads(pickle.dumps(e.value))
    assert isinstance(back, Timeout) and isinstance(back, LockTimeout) and str(back) == str(e.value)


def test_a_linked_datasets_folder_is_a_failed_trial_not_a_crash(arith_home, outside):
    """The Executor answers the refusal with a failed trial (an event), and starts no worker."""
    from trex.events import EventLog
    from trex.plan import example_plan
    from trex.train import Executor

    _, vdir, unchanged = outside
    link = _link(arith_home / "datasets", vdir)
    log = EventLog(arith_home)
    ex = Executor(arith_home, lambda ev: log.append("s", [ev]), search_id="s", threads=1)
    started = []
    out = ex.run(example_plan(max_steps=5), task="arith-sub", node_id="n1", on_worker_start=started.append)
    assert out.reason == "bad_plan" and str(link) in out.message and "symbolic link" in out.message
    assert not started and [type(e).__name__ for e in out.events][-1] == "TrialFailed"
    unchanged()


# ------------------------------------------------------------------ task data and installed tasks
def _arith_split_names():
    from trex.tasks import get_task

    return list(get_task("arith-sub").splits)


@pytest.mark.parametrize("where", ["tasks", "task-folder", "split-file"])
def test_prepare_data_refuses_a_link_where_it_writes(tmp_path, outside, where):
    """The audit's probe: with ``HOME/tasks`` a link, the real prepare_data wrote 5 split files into
    its target. Now the link (there, at the task's folder, or at a split file) is refused."""
    from trex.tasks import prepare_data

    victim, vdir, unchanged = outside
    home = tmp_path / "home"
    first = _arith_split_names()[0]
    at = {"tasks": (home / "tasks", vdir), "task-folder": (home / "tasks" / "arith-sub", vdir),
          "split-file": (home / "tasks" / "arith-sub" / f"{first}.jsonl", victim)}[where]
    _link(*at)
    _refused(lambda: prepare_data("arith-sub", home), at[0])
    unchanged()


def test_prepare_data_still_writes_the_splits(tmp_path):
    from trex.tasks import prepare_data

    home = tmp_path / "home"
    d = prepare_data("arith-sub", home)
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted(f"{s}.jsonl" for s in _arith_split_names())  # no temporary file left
    assert all(not (d / n).is_symlink() and (d / n).stat().st_size > 0 for n in names)
    assert prepare_data("arith-sub", home) == d


@pytest.fixture
def user_task(tmp_path):
    from trex.tasks import load_task_file

    d = tmp_path / "taskfile"
    d.mkdir()
    for name, n in (("train", 12), ("eval", 4)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": f"{name} q{i}", "completion": f" {i % 2}"})
                                                 + "\n" for i in range(n)))
    (d / "task.yaml").write_text(
        "name: my-own\ndomain: test\ndescription: a user's task\nbase_model: {builder: arith-base}\n"
        "data: {files: {train: train.jsonl, eval: eval.jsonl}}\nsplits: [train, eval]\n"
        "metrics: [{name: accuracy, split: eval, primary: true}]\n")
    return d / "task.yaml", load_task_file(d / "task.yaml")


@pytest.mark.parametrize("where", ["tasks", "task-folder", "task-json"])
def test_install_task_refuses_a_link_where_it_writes(tmp_path, outside, user_task, where):
    from trex.tasks import install_task

    victim, vdir, unchanged = outside
    _, task = user_task
    home = tmp_path / "home"
    at = {"tasks": (home / "tasks", vdir), "task-folder": (home / "tasks" / "my-own", vdir),
          "task-json": (home / "tasks" / "my-own" / "task.json", victim)}[where]
    _link(*at)
    _refused(lambda: install_task(task, home), at[0])
    unchanged()


def test_install_task_still_installs(tmp_path, user_task):
    from trex.tasks import install_task, installed_task

    _, task = user_task
    home = tmp_path / "home"
    p = install_task(task, home)
    assert p == home / "tasks" / "my-own" / "task.json" and installed_task("my-own", home) == task
    assert sorted(x.name for x in p.parent.iterdir()) == ["task.json"]
    assert install_task(task, home) == p


def test_cli_run_with_a_linked_tasks_folder_is_one_line_and_no_traceback(tmp_path, outside, user_task):
    """``trex run task.yaml`` installs the task first: the link is refused in one line, exit 1, before
    anything starts (no Ray, no log)."""
    import subprocess
    import sys

    _, vdir, unchanged = outside
    task_file, _ = user_task
    home = tmp_path / "home"
    link = _link(home / "tasks", vdir)
    r = subprocess.run([sys.executable, "-m", "trex.cli", "run", str(task_file), "--home", str(home),
                        "--proposer", "random"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "TREX_HOME": str(home)})
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(lines) == 1 and str(link) in lines[0] and "symbolic link" in lines[0], lines
    assert not (home / "log").exists()
    unchanged()


# ------------------------------------------------------------------ LLM prompts and evaluation outputs
class _Scripted:
    name, model = "scripted", "fake-1"

    def count_tokens(self, messages):
        return 10

    def complete(self, messages, **kw):
        from trex.llm import Completion, Usage

        return Completion("ok", Usage(10, 1), "stop")


LONG = [{"role": "user", "content": "a long prompt " * 200}]  # past inline_prompt_chars: stored as an artifact


@pytest.mark.parametrize("where", ["artifacts", "prompts", "file"])
def test_llm_prompt_artifact_refuses_a_link(tmp_path, outside, where):
    from trex.llm import LLMClient

    victim, vdir, unchanged = outside
    home = tmp_path / "home"
    client = LLMClient(_Scripted(), home=home, inline_prompt_chars=100)
    client.chat(LONG, purpose="probe", max_tokens=5)  # learn the file's name from a clean home
    made = next((home / "artifacts" / "prompts").iterdir())
    shutil.rmtree(home / "artifacts")
    at = {"artifacts": (home / "artifacts", vdir), "prompts": (home / "artifacts" / "prompts", vdir),
          "file": (home / "artifacts" / "prompts" / made.name, victim)}[where]
    _link(*at)
    _refused(lambda: LLMClient(_Scripted(), home=home, inline_prompt_chars=100).chat(LONG, purpose="probe",
                                                                                        max_tokens=5), at[0])
    unchanged()


class _EchoBackend:
    """An evaluation backend that answers each prompt's reference: cheap, no model."""

    name, base_model = "echo", "none"

    def __init__(self, answers):
        self.answers = answers

    def encode(self, prompts, add_bos):
        return [[0] for _ in prompts]

    def generate(self, adapter_dir, ids, *, max_new_tokens, stop):
        return list(self.answers)


def _eval_spec():
    from trex.evaluate.evaluator import EvalSpec

    rows = [{"prompt": f"{i}+1=", "completion": str(i + 1)} for i in range(3)]
    return EvalSpec(task="probe", examples=rows), [r["completion"] for r in rows]


@pytest.mark.parametrize("where", ["artifacts", "evals"])
def test_evaluation_outputs_refuse_a_link(tmp_path, outside, where):
    """Evaluation outputs go to ``HOME/artifacts/evals``: a link there is a failed evaluation
    (EvaluationFailed recorded, one line naming the link), its target untouched."""
    from trex.evaluate.evaluator import EvaluationError, Evaluator

    _, vdir, unchanged = outside
    home = tmp_path / "home"
    at = {"artifacts": (home / "artifacts", vdir), "evals": (home / "artifacts" / "evals", vdir)}[where]
    _link(*at)
    spec, refs = _eval_spec()
    evs = []
    with pytest.raises(EvaluationError) as e:
        Evaluator(_EchoBackend(refs), home=home, emit=evs.append).evaluate(spec, None, node_id="n")
    msg = str(e.value.message)
    assert str(at[0]) in msg and "symbolic link" in msg and "\n" not in msg
    assert [type(x).__name__ for x in evs] == ["EvaluationFailed"]
    unchanged()


def test_evaluation_outputs_refuse_a_linked_parquet(tmp_path, outside):
    from trex.evaluate.evaluator import EvaluationError, Evaluator

    victim, _, unchanged = outside
    home = tmp_path / "home"
    spec, refs = _eval_spec()
    res = Evaluator(_EchoBackend(refs), home=home).evaluate(spec, None, node_id="n")
    assert res.primary_value == 1.0 and not res.outputs_path.is_symlink()
    path = res.outputs_path
    path.unlink()
    _link(path, victim)
    with pytest.raises(EvaluationError) as e:
        Evaluator(_EchoBackend(refs), home=home).evaluate(spec, None, node_id="n")
    assert str(path) in e.value.message and "symbolic link" in e.value.message
    unchanged()


def test_eval_cache_refuses_a_link_before_making_any_folder(tmp_path, outside, capsys):
    from trex.evaluate import cache as eval_cache

    _, vdir, unchanged = outside
    home = tmp_path / "home"
    link = _link(home / "cache", vdir)
    assert eval_cache.store(home, "k" * 64, {"outputs_artifact": "evals/x.parquet", "metrics": {}}) is False
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(link) in err[0] and "symbolic link" in err[0]
    unchanged()  # no ``evals`` folder made inside the link's target


# ------------------------------------------------------------------ the Executor's files
@pytest.fixture
def fake_base(tmp_path):
    """Stands in for a base model folder: the Executor hashes it, and no worker is started here."""
    d = tmp_path / "base"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


@pytest.mark.parametrize("where", ["train", "runs", "run-dir", "out", "worker-log", "spec", "progress"])
def test_executor_refuses_a_link_in_the_trial_folder(tmp_path, outside, fake_base, where):
    """``HOME/train/runs/<trial>`` and what the worker writes there: a link is a failed trial naming it,
    no worker is started, the link's target is unchanged."""
    from trex.plan import example_plan
    from trex.train import Executor

    victim, vdir, unchanged = outside
    home = tmp_path / "home"
    run = home / "train" / "runs" / "t1"
    at = {"train": (home / "train", vdir), "runs": (home / "train" / "runs", vdir), "run-dir": (run, vdir),
          "out": (run / "out", vdir), "worker-log": (run / "worker.log", victim),
          "spec": (run / "spec.json", victim), "progress": (run / "progress.jsonl", victim)}[where]
    _link(*at)
    evs, started = [], []
    ex = Executor(home, evs.append, search_id="s", threads=1)
    out = ex.run(example_plan(max_steps=5), task="arith-sub", node_id="n1", base_model_dir=fake_base,
                 trial_id="t1", on_worker_start=started.append)
    assert out.status == "failed" and str(at[0]) in out.message and "symbolic link" in out.message, out.message
    assert "\n" not in out.message and not started
    assert [type(e).__name__ for e in evs][-1] == "TrialFailed"
    unchanged()


@pytest.mark.parametrize("where", ["index", "shard", "entry"])
def test_executor_work_index_refuses_a_link(tmp_path, outside, capsys, where):
    """The work index (a cache of the log): a link is said in one line and neither read nor written."""
    from trex.train import Executor

    victim, vdir, unchanged = outside
    home = tmp_path / "home"
    key = "ab" + "0" * 62
    ex = Executor(home, lambda ev: None, search_id="s")
    p = ex._index_path(key)
    at = {"index": (home / "train" / "index", vdir), "shard": (p.parent, vdir), "entry": (p, victim)}[where]
    _link(*at)
    ex._record(key, {"adapter": "0" * 64})
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(at[0]) in err[0] and "symbolic link" in err[0], err
    if where == "entry":
        victim.write_bytes(json.dumps({"adapter": "f" * 64}).encode())
        assert ex.lookup(key) is None  # not read through the link
        victim.write_bytes(SECRET)
    unchanged()


def test_worker_progress_reporter_refuses_a_link(tmp_path, outside):
    from trex.train.loop import Reporter

    victim, _, unchanged = outside
    link = _link(tmp_path / "run" / "progress.jsonl", victim)
    _refused(lambda: Reporter(str(link))("progress", step=1), link)
    unchanged()


def test_model_folder_helpers_refuse_a_link(tmp_path, outside):
    """What the worker and the base model builders save through: a fresh folder, renamed into place;
    a link at the destination is refused and the fresh folder removed."""
    from trex.events.fsio import fresh_dir_in, move_dir_into_place

    _, vdir, unchanged = outside
    parent = tmp_path / "run"
    parent.mkdir()
    link = _link(parent / "out", vdir)
    tmp = fresh_dir_in(parent, ".out.")
    (tmp / "model.safetensors").write_bytes(b"w")
    _refused(lambda: move_dir_into_place(tmp, link), link)
    assert not tmp.exists()
    linked_parent = _link(tmp_path / "run2", vdir)
    _refused(lambda: fresh_dir_in(linked_parent, ".out."), linked_parent)
    unchanged()
    ok = fresh_dir_in(parent, ".x.")
    (ok / "f").write_bytes(b"1")
    assert (move_dir_into_place(ok, parent / "x") / "f").read_bytes() == b"1"


# ------------------------------------------------------------------ model folders under HOME/models
@pytest.mark.parametrize("where", ["models", "folder", "lock"])
def test_arith_base_model_refuses_a_link_before_building(tmp_path, outside, where):
    from ftbench.arith import prepare_base_model

    victim, vdir, unchanged = outside
    home = tmp_path / "home"
    at = {"models": (home / "models", vdir), "folder": (home / "models" / "arith-base-0", vdir),
          "lock": (home / "models" / ".arith-base-0.lock", victim)}[where]
    _link(*at)
    _refused(lambda: prepare_base_model(home, seed=0), at[0])
    unchanged()


@pytest.mark.parametrize("where", ["models", "lock"])
def test_smollm2_conversion_refuses_a_link_before_converting(tmp_path, outside, where):
    from trex.llm.smollm2 import MODEL_DIRNAME, ensure_smollm2

    victim, vdir, unchanged = outside
    home = tmp_path / "home"
    at = {"models": (home / "models", vdir), "lock": (home / "models" / f"{MODEL_DIRNAME}.lock", victim)}[where]
    _link(*at)
    _refused(lambda: ensure_smollm2(home), at[0])
    unchanged()


def test_smollm2_conversion_refuses_a_linked_model_folder(tmp_path, outside, monkeypatch):
    """A link where the converted folder goes: the conversion's fresh folder is not renamed onto it."""
    from trex.llm import smollm2

    _, vdir, unchanged = outside
    home = tmp_path / "home"
    link = _link(home / "models" / smollm2.MODEL_DIRNAME, vdir)
    monkeypatch.setattr(smollm2, "smollm2_gguf", lambda: tmp_path / "x.gguf")
    monkeypatch.setattr(smollm2, "_convert", lambda gguf, dest: (dest / "config.json").write_text("{}"))
    _refused(lambda: smollm2.ensure_smollm2(home), link)
    names = sorted(p.name for p in (home / "models").iterdir())  # the fresh folder was removed, not left
    assert names == sorted([smollm2.MODEL_DIRNAME, f"{smollm2.MODEL_DIRNAME}.lock"])
    unchanged()


# ------------------------------------------------------------------ bounded, announced lock waits
def test_command_lock_wait_is_bounded_and_said(tmp_path, monkeypatch, capsys):
    """GAP 6: a duplicate dispatch waits for the command's lock at most its bound, says so in one line,
    and then fails with one line naming the lock and the command."""
    from filelock import Timeout

    from trex.actors import shells
    from trex.actors.runtime import home_lock

    import hashlib
    import time

    home = tmp_path / "home"
    monkeypatch.setattr(shells, "COMMAND_LOCK_WAIT_S", 0.3)
    assert shells.command_lock_wait_s(None) == 0.3 and shells.command_lock_wait_s(60.0) == 360.0
    first = shells._command_lock(home, "cmd-a")
    with first as held:  # not waited for: nothing said
        assert held.is_locked
    assert capsys.readouterr().err == ""
    holder = home_lock(home, f"cmd-{hashlib.sha256(b'cmd-a').hexdigest()[:16]}")
    holder.acquire(timeout=0)
    try:
        t0 = time.monotonic()
        with pytest.raises(Timeout) as e:
            with shells._command_lock(home, "cmd-a"):
                pass
        assert 0.25 <= time.monotonic() - t0 < 5
    finally:
        holder.release()
    msg = str(e.value)
    assert isinstance(e.value, LockTimeout) and holder.lock_file in msg and "cmd-a" in msg and "\n" not in msg
    said = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(said) == 1 and "waiting up to 0.3 s" in said[0] and holder.lock_file in said[0]
    with shells._command_lock(home, "cmd-a"):  # free again: taken at once
        pass


def test_the_overlap_cache_never_writes_through_a_linked_folder(tmp_path):
    """The contamination guard's cache (HOME/cache/overlap): with HOME/cache a link, the check still
    answers, and nothing is created in the link's target (the report is recomputed next time)."""
    from trex.tasks.contamination import check_overlap

    home, outside = tmp_path / "home", tmp_path / "outside"
    home.mkdir()
    outside.mkdir()
    (home / "cache").symlink_to(outside)
    rows = [{"prompt": f"{i}-{i}=", "completion": "0"} for i in range(20)]
    report = check_overlap(rows, {"eval": rows[:5], "test": rows[5:10]}, cache_dir=home / "cache" / "overlap")
    assert report is not None and list(outside.iterdir()) == []
