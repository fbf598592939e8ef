import json

import pytest
from click.testing import CliRunner

from ftbench import arith
from ftbench.arith import evaluate_adapter
from trex.tasks import Task, get_task, list_tasks, load_split, prepare_task


def test_data_generators_seeded_and_disjoint():
    tr, ev = arith.subtraction_split(0)
    tr2, ev2 = arith.subtraction_split(0)
    assert tr == tr2 and ev == ev2 and len(ev) == 500 and len(tr) == 4000
    assert not {r["prompt"] for r in tr} & {r["prompt"] for r in ev}
    for r in tr[:200] + ev:
        a, b = map(int, r["prompt"][:-1].split("-"))
        assert 0 <= b <= a <= 99 and int(r["completion"]) == a - b
    assert arith.subtraction_split(1)[1] != ev
    test = arith.subtraction_test(0)
    assert len(test) == 500 and test == arith.subtraction_test(0)
    assert not {r["prompt"] for r in test} & ({r["prompt"] for r in tr} | {r["prompt"] for r in ev})
    add_tr, add_ev = arith.addition_split(0)
    assert len(add_tr) == 10000 and len(add_ev) == 500
    add_test = arith.addition_test(0)
    assert len(add_test) == 500 and not {r["prompt"] for r in add_test} & {r["prompt"] for r in add_ev}
    assert all(int(r["completion"]) == sum(map(int, r["prompt"][:-1].split("+"))) for r in add_ev)


def test_tokenizer_roundtrip():
    ids = arith.encode("12-3=9\n ")
    assert arith.decode(ids) == "12-3=9\n "
    assert arith.decode(ids + [arith.EOS_ID] + arith.encode("77")) == "12-3=9\n "


def test_build_is_bit_identical(tmp_path):
    a = arith.build_base_model(tmp_path / "a", seed=3, steps=4, batch_size=16)
    b = arith.build_base_model(tmp_path / "b", seed=3, steps=4, batch_size=16)
    assert a["steps"] == b["steps"] == 4
    sa = arith.file_sha256(tmp_path / "a" / "model.safetensors")
    assert sa == arith.file_sha256(tmp_path / "b" / "model.safetensors")
    c = arith.build_base_model(tmp_path / "c", seed=4, steps=4, batch_size=16)
    assert arith.file_sha256(tmp_path / "c" / "model.safetensors") != sa


def test_prepared_base_model_loads_with_auto_classes(arith_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(arith_base)
    model = AutoModelForCausalLM.from_pretrained(arith_base)
    assert tok("12+34=", add_special_tokens=False)["input_ids"] == arith.encode("12+34=")
    assert tok.decode(arith.encode("46"), skip_special_tokens=True) == "46"
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n < 1.5e6
    build = json.loads((arith_base / "build.json").read_text())
    assert build["add_exact_match"] == 1.0


def test_base_scores(arith_home):
    m = evaluate_adapter(None, "arith-sub", arith_home)
    assert m["add_exact_match"] == 1.0
    assert m["exact_match"] < 0.2  # it has never seen '-'


def test_task_registry(tmp_path):
    t = get_task("arith-sub")
    assert isinstance(t, Task) and t.primary_metric.name == "exact_match"
    assert [x.name for x in list_tasks()] == ["arith-sub", "arith-sub-noisy", "arith-sub-retain", "arith-sub-shift",
                                              "orders", "tickets"]  # the CPU tasks
    with pytest.raises(KeyError, match="unknown task"):
        get_task("nope")
    with pytest.raises(Exception):
        t.name = "x"  # frozen
    assert len(load_split(t, "eval", tmp_path)) == 500


def test_ftbench_cli(arith_home):
    from ftbench.cli import main

    r = CliRunner().invoke(main, ["list"])
    assert r.exit_code == 0 and "arith-sub" in r.output
    r = CliRunner().invoke(main, ["prepare", "arith", "--home", str(arith_home), "--format", "json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["cached"] and out["base_scores"]["add_exact_match"] == 1.0
    assert out["model_dir"] == str(prepare_task("arith-sub", arith_home).base_model_dir)
