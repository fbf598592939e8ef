"""No write through a link under the home: artifacts, datasets and lock files.

For each writer, a symbolic link (to a file or folder outside the home, with known content) is
planted where the writer would write — the file itself, or a folder on the way — and the writer
must refuse with :class:`LinkRefused` naming the path, leaving the link's target untouched.
"""
from __future__ import annotations

import json
import os
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
    import shutil

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
