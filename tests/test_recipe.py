import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trex.recipe import (
    Recipe,
    RecipeError,
    Source,
    UnsafePath,
    apply_recipe,
    dataset_path,
    materialize,
    recipe_for_task,
    resolve_local,
)


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def rhome(tmp_path):
    h = tmp_path / "home"
    rows = [{"prompt": f"q{i}", "completion": f"a{i}", "topic": "x" if i % 2 else "y"} for i in range(20)]
    rows += [{"prompt": "q0", "completion": "a0", "topic": "y"}]  # a duplicate
    write_jsonl(h / "data" / "a.jsonl", rows)
    write_jsonl(h / "data" / "b.jsonl", [{"prompt": f"long question {i}", "completion": "b"} for i in range(40)])
    return h


def test_task_source_is_deterministic_and_cached(tmp_path):
    home = tmp_path / "h"
    r = recipe_for_task("arith-sub", max_rows=100)
    h1, p1 = materialize(r, home)
    h2, p2 = materialize(r, home)
    assert h1 == h2 and p1 == p2 == dataset_path(home, h1) and p1.is_file()
    rows = [json.loads(x) for x in p1.read_text().splitlines()]
    assert len(rows) == 100 and all("-" in x["prompt"] for x in rows)
    h3, _ = materialize(recipe_for_task("arith-sub", max_rows=100, shuffle_seed=1), home)
    assert h3 != h1


def test_ops_filter_dedup_template(rhome):
    r = Recipe(sources=(Source(uri="data/a.jsonl"),), include_regex=r"^q1", prompt_template="[{topic}] {prompt}")
    rows = apply_recipe(r, rhome)
    assert sorted(x["prompt"] for x in rows) == sorted(f"[{'x' if i % 2 else 'y'}] q{i}" for i in [1] + list(range(10, 20)))
    assert len(apply_recipe(Recipe(sources=(Source(uri="data/a.jsonl"),)), rhome)) == 20  # dedup
    assert len(apply_recipe(Recipe(sources=(Source(uri="data/a.jsonl"),), dedup=False), rhome)) == 21
    assert len(apply_recipe(Recipe(sources=(Source(uri="data/b.jsonl"),), max_chars=16), rhome)) == 10
    assert len(apply_recipe(Recipe(sources=(Source(uri="data/a.jsonl"),), exclude_regex="q1"), rhome)) == 9


def test_mix_by_ratio(rhome):
    r = Recipe(sources=(Source(uri="data/a.jsonl", weight=1), Source(uri="data/b.jsonl", weight=3)))
    rows = apply_recipe(r, rhome)
    a = sum(x["prompt"].startswith("q") for x in rows)
    b = sum(x["prompt"].startswith("long") for x in rows)
    assert (a, b) == (13, 40) or abs(b / (a + b) - 0.75) < 0.02
    r2 = Recipe(sources=r.sources, max_rows=20)
    rows2 = apply_recipe(r2, rhome)
    assert len(rows2) == 20 and sum(x["prompt"].startswith("long") for x in rows2) == 15


def test_csv_and_parquet_sources(rhome):
    (rhome / "data" / "c.csv").write_text("prompt,completion\nhi,there\nfoo,bar\n")
    pq.write_table(pa.table({"question": ["x", "y"], "answer": ["1", "2"]}), rhome / "data" / "d.parquet")
    r = Recipe(sources=(Source(uri="data/c.csv"),
                        Source(uri="data/d.parquet", prompt_field="question", completion_field="answer")))
    rows = apply_recipe(r, rhome)
    assert sorted(x["prompt"] for x in rows) == ["foo", "hi", "x", "y"]


def test_missing_column_and_missing_file(rhome):
    with pytest.raises(RecipeError, match="no column"):
        apply_recipe(Recipe(sources=(Source(uri="data/a.jsonl", prompt_field="question"),)), rhome)
    with pytest.raises(RecipeError, match="not found"):
        apply_recipe(Recipe(sources=(Source(uri="data/none.jsonl"),)), rhome)


# ------------------------------------------------------------------ path attacks
def test_attack_dotdot(rhome, tmp_path):
    write_jsonl(tmp_path / "secret.jsonl", [{"prompt": "p", "completion": "c"}])
    for uri in ("../secret.jsonl", "data/../../secret.jsonl", "data/..\\..\\secret.jsonl"):
        with pytest.raises(UnsafePath, match=r"'\.\.'"):
            apply_recipe(Recipe(sources=(Source(uri=uri),)), rhome)


def test_attack_absolute_outside(rhome, tmp_path):
    p = write_jsonl(tmp_path / "elsewhere" / "x.jsonl", [{"prompt": "p", "completion": "c"}])
    with pytest.raises(UnsafePath, match="outside the trex home"):
        apply_recipe(Recipe(sources=(Source(uri=str(p)),)), rhome)
    with pytest.raises(UnsafePath, match="outside"):
        resolve_local("/etc/passwd", rhome)
    # absolute inside the home is fine
    assert resolve_local(str(rhome / "data" / "a.jsonl"), rhome) == (rhome / "data" / "a.jsonl").resolve()


def test_attack_symlink_out(rhome, tmp_path):
    target = write_jsonl(tmp_path / "outside.jsonl", [{"prompt": "p", "completion": "c"}])
    os.symlink(target, rhome / "data" / "link.jsonl")
    os.symlink(tmp_path, rhome / "data" / "linkdir")
    for uri in ("data/link.jsonl", "data/linkdir/outside.jsonl"):
        with pytest.raises(UnsafePath, match="outside"):
            apply_recipe(Recipe(sources=(Source(uri=uri),)), rhome)
    # a symlink that stays inside is fine
    os.symlink(rhome / "data" / "a.jsonl", rhome / "data" / "inside.jsonl")
    assert apply_recipe(Recipe(sources=(Source(uri="data/inside.jsonl"),)), rhome)


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "file://data/a.jsonl", "FILE:data/a.jsonl",
                                 "s3://bucket/x.jsonl", "http://example.com/x.jsonl", "memory://x.jsonl"])
def test_attack_urls(rhome, uri):
    with pytest.raises(UnsafePath, match="URL"):
        apply_recipe(Recipe(sources=(Source(uri=uri),)), rhome)


def test_attack_nul_byte(rhome):
    with pytest.raises(UnsafePath, match="NUL"):
        resolve_local("data/a.jsonl\x00.txt", rhome)
    with pytest.raises(ValueError, match="NUL"):
        Source(uri="data/a.jsonl\x00")


def test_attack_home_tilde_and_bad_suffix(rhome):
    with pytest.raises(UnsafePath):
        resolve_local("~/x.jsonl", rhome)
    (rhome / "data" / "x.py").write_text("print(1)")
    with pytest.raises(RecipeError, match="unsupported"):
        resolve_local("data/x.py", rhome)


def test_task_split_must_be_training_and_hub_needs_network(rhome, monkeypatch):
    with pytest.raises(RecipeError, match="only training splits"):
        apply_recipe(Recipe(sources=(Source(uri="task:arith-sub/eval"),)), rhome)
    with pytest.raises(RecipeError, match="unknown task"):
        apply_recipe(Recipe(sources=(Source(uri="task:nope/train"),)), rhome)
    monkeypatch.delenv("TREX_ALLOW_HUB", raising=False)
    with pytest.raises(RecipeError, match="hub"):
        apply_recipe(Recipe(sources=(Source(uri="hf:openai/gsm8k:train"),)), rhome)


def test_a_recipe_regex_runs_in_linear_time_and_unsupported_syntax_is_one_clear_refusal(tmp_path):
    """(a+)+$ backtracks for ages in Python's re on 40 a's and a b; RE2 answers at once."""
    import time

    import pytest

    from trex.recipe import linear_regex

    t0 = time.perf_counter()
    assert linear_regex(r"(a+)+$").search("a" * 5000 + "b") is None
    assert time.perf_counter() - t0 < 10.0  # Python re would not finish in the lifetime of the machine
    with pytest.raises(ValueError, match="RE2 syntax"):
        Recipe(sources=(Source(uri="data/a.jsonl"),), include_regex=r"(q)\1")
    with pytest.raises(ValueError, match="invalid regex"):
        Recipe(sources=(Source(uri="data/a.jsonl"),), exclude_regex="(?=lookahead)")


def test_a_cached_dataset_that_no_longer_holds_its_rows_is_materialised_again(rhome):
    """The recipe index answers a recipe seen before only while the cached rows still hash to what it
    says: a tampered or truncated copy is rewritten from the sources, never handed to training."""
    r = Recipe(sources=(Source(uri="data/a.jsonl"),))
    digest, path = materialize(r, rhome)
    good = path.read_bytes()
    for damage in (b'{"prompt": "q0", "completion": "WRONG"}\n', good[: len(good) // 2], b""):
        path.write_bytes(damage)
        again, path2 = materialize(r, rhome)
        assert (again, path2) == (digest, path) and path.read_bytes() == good


def test_the_recipe_index_never_reads_or_writes_through_a_link(rhome, tmp_path):
    r = Recipe(sources=(Source(uri="data/a.jsonl"),))
    digest, path = materialize(r, rhome)
    index_dir = rhome / "datasets" / "index"
    outside = tmp_path / "outside"
    index_dir.rename(outside)
    index_dir.symlink_to(outside)
    with pytest.raises(Exception, match="symbolic link"):
        materialize(r, rhome)
    assert not any(outside.rglob("*.tmp*"))  # nothing was written through the link


def test_a_recipe_that_cleans_by_loss_is_keyed_by_what_the_losses_depend_on(rhome):
    """Row losses depend on the base model and the scoring length as well as the adapter: a cleaning
    recipe scored under another base is another dataset. A recipe without cleaning keeps its key."""
    from trex.recipe import recipe_key

    plain = Recipe(sources=(Source(uri="data/a.jsonl"),))
    clean = Recipe.model_validate({**plain.model_dump(), "clean": {"node": "n1", "adapter": "a" * 64,
                                                                     "fraction": 0.25}})
    assert recipe_key(plain, rhome) == recipe_key(plain, rhome, loss_key="v1:base-a:64")
    keys = {recipe_key(clean, rhome, loss_key=k) for k in ("v1:base-a:64", "v1:base-b:64", "v1:base-a:128")}
    assert len(keys) == 3


def test_a_mix_that_would_make_more_rows_than_allowed_is_refused_before_it_is_made(rhome):
    r = Recipe(sources=(Source(uri="data/a.jsonl", weight=1e-6), Source(uri="data/b.jsonl", weight=1.0)), mix="first")
    with pytest.raises(RecipeError, match=r"mix .first. would make 2e\+07 rows .*; at most 1000000 are allowed"):
        apply_recipe(r, rhome)
