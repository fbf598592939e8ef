"""Metric functions of the Evaluator on known outputs, malformed ones included."""
from __future__ import annotations

import math

import pytest

from trex.tasks.metrics import (
    accuracy,
    exact_match,
    get_metric,
    macro_f1,
    normalize,
    register_scorer,
    rouge1,
    rougeL,
    score,
)


def test_exact_match_known_and_malformed():
    outs = ["46", " 46 ", "46\n", None, 46, "", "4 6", float("nan")]
    refs = ["46"] * 8
    agg, per = exact_match(outs, refs)
    assert per == [1, 1, 1, 0, 0, 0, 0, 0]
    assert agg == pytest.approx(3 / 8)


def test_exact_match_empty_reference_and_unicode():
    assert exact_match(["", "x"], ["", ""])[1] == [1.0, 0.0]
    assert exact_match(["ｆｕｌｌ"], ["full"])[1] == [1.0]  # NFKC
    assert normalize("  a \t b\n") == "a b"


def test_accuracy_and_macro_f1_known_values():
    refs = ["pos", "pos", "neg", "neg"]
    outs = ["pos", "neg", "neg", "neg"]
    assert accuracy(outs, refs)[0] == pytest.approx(0.75)
    # pos: P=1, R=.5, F1=2/3 ; neg: P=2/3, R=1, F1=.8 -> macro (2/3+.8)/2
    assert macro_f1(outs, refs)[0] == pytest.approx((2 / 3 + 0.8) / 2)


def test_macro_f1_malformed_outputs_count_as_misses_not_classes():
    refs = ["a", "b", "a", "b"]
    outs = ["a", None, "garbage{", ""]
    f1, per = macro_f1(outs, refs)
    assert per == [1.0, 0.0, 0.0, 0.0]
    # a: P=1 R=.5 F1=2/3 ; b: no true positive -> 0
    assert f1 == pytest.approx((2 / 3) / 2)
    acc, _ = accuracy(outs, refs)
    assert acc == pytest.approx(0.25)


def test_rouge_known_values():
    agg, per = rouge1(["the cat sat", "", None], ["the cat sat on the mat", "x", "y"])
    # ROUGE-1 F: P=3/3, R=3/6 -> 2/3
    assert per[0] == pytest.approx(2 / 3) and per[1:] == [0.0, 0.0]
    assert rougeL(["a b c d"], ["a b c d"])[0] == pytest.approx(1.0)
    assert rougeL(["d c b a"], ["a b c d"])[0] == pytest.approx(0.25)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        exact_match(["a"], ["a", "b"])


def test_registered_scorer_by_name():
    @register_scorer("test_abs_within_1")
    def within_one(outputs, references):
        per = []
        for o, r in zip(outputs, references):
            try:
                per.append(1.0 if abs(int(str(o).strip()) - int(r)) <= 1 else 0.0)
            except (TypeError, ValueError):
                per.append(0.0)
        return per  # a plain list: the aggregate is the mean

    assert get_metric("test_abs_within_1") is within_one
    agg, per = score("test_abs_within_1", ["10", "12", "x", None], ["11", "10", "1", "1"])
    assert per == [1.0, 0.0, 0.0, 0.0] and agg == 0.25
    with pytest.raises(KeyError):
        get_metric("no_such_metric")
    assert not math.isnan(score("exact_match", [], [])[0])
