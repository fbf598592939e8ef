"""A user's task reaches nodes that cannot see the home through object storage (moto's S3 server)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from trex.tasks import get_task, install_task, load_task_file
from trex.tasks.prepare import load_split, prepare_task
from trex.tasks.published import publish_task

TASK_FILE = """\
name: my-notes
domain: notes
description: a user's task, from files only the home's node can read
base_model: {path: model}
data: {files: {train: train.jsonl, eval: eval.jsonl}}
metrics: [{name: exact_match, split: eval, primary: true}]
budget: {trials: 1, steps: 5}
"""


def _task(folder: Path, name: str = "my-notes"):
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text('{"model_type": "llama"}')
    for split, n in (("train", 30), ("eval", 10)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"prompt": f"{split} {i}=", "completion": str(i)})
                                                       + "\n" for i in range(n)))
    (folder / "task.yaml").write_text(TASK_FILE.replace("my-notes", name))
    return load_task_file(folder / "task.yaml")


def test_a_worker_without_the_home_gets_a_published_task_its_data_and_its_base_model(tmp_path, s3_root, monkeypatch):
    head, worker = tmp_path / "head-home", tmp_path / "worker-home"
    t = _task(tmp_path / "user")
    install_task(t, head)
    monkeypatch.setenv("TREX_ARTIFACTS", s3_root)
    digest = publish_task(t, head)
    assert digest is not None and publish_task(t, head) == digest  # content-addressed: the same artifact again

    # the worker sees neither the home nor the user's files
    for p in (tmp_path / "user" / "train.jsonl", tmp_path / "user" / "eval.jsonl"):
        p.unlink()
    (tmp_path / "user" / "model" / "config.json").unlink()
    got = get_task("my-notes", worker)
    assert got == t
    assert load_split(got, "train", worker) == load_split(t, "train", head) and len(load_split(got, "eval", worker)) == 10
    assets = prepare_task(got, worker)
    assert json.loads((assets.base_model_dir / "config.json").read_text()) == {"model_type": "llama"}
    assert assets.base_model_dir.is_relative_to(worker)  # the downloaded, hash-verified copy
    assert (worker / "tasks" / "my-notes" / "task.json").is_file()


def test_a_published_artifact_that_is_another_task_is_refused_in_one_line(tmp_path, s3_root, monkeypatch):
    from trex.artifacts import ArtifactStore

    monkeypatch.setenv("TREX_ARTIFACTS", s3_root)
    other = _task(tmp_path / "other", "other-task")
    install_task(other, tmp_path / "a")
    digest = publish_task(other, tmp_path / "a")
    ArtifactStore(tmp_path / "a").set_ref("task-victim", digest)  # a ref pointing at a different task
    with pytest.raises(KeyError) as e:
        get_task("victim", tmp_path / "b")
    assert "defines task 'other-task'" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "b" / "tasks" / "victim").exists()  # nothing half-installed
    with pytest.raises(KeyError, match="unknown task 'never-published'"):
        get_task("never-published", tmp_path / "b")
    with pytest.raises(KeyError, match="is not a task name"):
        get_task("../../etc", tmp_path / "b")


def test_with_the_store_on_the_homes_disk_nothing_is_published(tmp_path, monkeypatch):
    monkeypatch.delenv("TREX_ARTIFACTS", raising=False)
    t = _task(tmp_path / "user")
    install_task(t, tmp_path / "home")
    assert publish_task(t, tmp_path / "home") is None
    with pytest.raises(KeyError, match="unknown task"):
        get_task("my-notes", tmp_path / "elsewhere")


def test_evaluation_outputs_written_on_one_node_are_read_on_another(tmp_path, s3_root, monkeypatch):
    """The Researcher's bad-cases evidence on a node that did not evaluate (a worker without the home)."""
    from types import SimpleNamespace

    import pyarrow as pa
    import pyarrow.parquet as pq

    from trex.artifacts import ArtifactError, evaluation_outputs, publish_outputs
    from trex.propose.evidence import bad_cases

    monkeypatch.setenv("TREX_ARTIFACTS", s3_root)
    evals = tmp_path / "evaluator-node" / "artifacts" / "evals"
    evals.mkdir(parents=True)
    h = "ab" * 32
    path = evals / f"{h}.parquet"
    pq.write_table(pa.table({"input": ["1-1=", "5-2="], "reference": ["0", "3"], "output": ["0", "4"],
                             "score": [1.0, 0.0]}), path)
    publish_outputs(tmp_path / "evaluator-node", path)
    other = tmp_path / "researcher-node"
    got = evaluation_outputs(other, f"evals/{h}.parquet")
    assert got.read_bytes() == path.read_bytes() and got.is_relative_to(other)
    text = bad_cases(other, SimpleNamespace(node_id="n1", outputs=(f"evals/{h}.parquet",)))
    assert "5-2=" in text and "no evaluation outputs" not in text
    with pytest.raises(ArtifactError, match="not an evaluation outputs artifact"):
        evaluation_outputs(other, "../../../etc/passwd")
    with pytest.raises(ArtifactError, match="no evaluation outputs"):
        evaluation_outputs(other, f"evals/{'cd' * 32}.parquet")


def test_a_model_folder_the_store_refuses_still_leaves_the_task_published(tmp_path, s3_root, monkeypatch):
    """A hub cache's snapshot folder is made of links, which the store refuses: the task is there anyway."""
    from trex.artifacts import ArtifactError

    monkeypatch.setenv("TREX_ARTIFACTS", s3_root)
    t = _task(tmp_path / "user")
    cfg = tmp_path / "user" / "model" / "config.json"
    (tmp_path / "blob").write_text(cfg.read_text())
    cfg.unlink()
    cfg.symlink_to(tmp_path / "blob")
    install_task(t, tmp_path / "head")
    with pytest.raises(ArtifactError):
        publish_task(t, tmp_path / "head")
    assert get_task("my-notes", tmp_path / "worker") == t
