"""The metric registry: metric names and their scorers, on well-kept libraries: scikit-learn
(accuracy, macro-F1) and rouge-score (ROUGE-1/L F-measure). Exact match is a plain comparison
after normalisation. Pure Python (no torch): the task-file checks ask :func:`can_score` before
anything starts, and the Evaluator (:mod:`trex.evaluate`) runs the scorers.

Every metric takes ``(outputs, references)`` and returns ``(aggregate, per_example_scores)``;
outputs may be malformed (None, not a string, empty, garbage) and then score 0, never raise.
A task may name its own scorer: :func:`register_scorer` puts a callable under a name and
:func:`get_metric` finds it (built-ins: ``exact_match``, ``json_fields``, ``accuracy``,
``macro_f1``, ``rouge1``, ``rougeL``). A name ``<prefix>_exact_match`` that is not registered
(e.g. arith-sub's ``add_exact_match``, measured on its retention split) is exact match under
that name.
"""
from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Callable, Sequence

MetricFn = Callable[[Sequence[Any], Sequence[Any]], "tuple[float, list[float]]"]

INVALID_LABEL = "<invalid>"

_WS = re.compile(r"\s+")


def normalize(x: Any) -> str:
    """Text used for comparison: str, NFKC, trimmed, inner whitespace collapsed. Non-strings
    (None, numbers from a broken parser) become "" or their str()."""
    if x is None:
        return ""
    if isinstance(x, float) and math.isnan(x):
        return ""
    s = x if isinstance(x, str) else str(x)
    s = unicodedata.normalize("NFKC", s)
    return _WS.sub(" ", s).strip()


def exact_match(outputs: Sequence[Any], references: Sequence[Any]) -> tuple[float, list[float]]:
    _check(outputs, references)
    per = [1.0 if isinstance(o, str) and normalize(o) == normalize(r) else 0.0 for o, r in zip(outputs, references)]
    return (sum(per) / len(per) if per else 0.0), per


def accuracy(outputs: Sequence[Any], references: Sequence[Any]) -> tuple[float, list[float]]:
    """Classification accuracy (scikit-learn) over normalised labels; malformed outputs are a wrong class."""
    from sklearn.metrics import accuracy_score

    _check(outputs, references)
    y_true, y_pred = _labels(outputs, references)
    if not y_true:
        return 0.0, []
    per = [1.0 if p == t else 0.0 for p, t in zip(y_pred, y_true)]
    return float(accuracy_score(y_true, y_pred)), per


def macro_f1(outputs: Sequence[Any], references: Sequence[Any]) -> tuple[float, list[float]]:
    """Macro-F1 (scikit-learn) over the reference classes; an output that is no reference class
    counts as the class ``<invalid>`` (a false negative, never a class of its own in the average)."""
    from sklearn.metrics import f1_score

    _check(outputs, references)
    y_true, y_pred = _labels(outputs, references)
    if not y_true:
        return 0.0, []
    classes = sorted(set(y_true))
    known = set(classes)
    y_pred = [p if p in known else INVALID_LABEL for p in y_pred]
    per = [1.0 if p == t else 0.0 for p, t in zip(y_pred, y_true)]
    return float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)), per


def _rouge(kind: str) -> MetricFn:
    def fn(outputs: Sequence[Any], references: Sequence[Any]) -> tuple[float, list[float]]:
        from rouge_score import rouge_scorer

        _check(outputs, references)
        sc = rouge_scorer.RougeScorer([kind], use_stemmer=True)
        per = []
        for o, r in zip(outputs, references):
            o, r = normalize(o), normalize(r)
            per.append(float(sc.score(r, o)[kind].fmeasure) if o and r else 0.0)
        return (sum(per) / len(per) if per else 0.0), per

    fn.__name__ = kind
    return fn


rouge1 = _rouge("rouge1")
rougeL = _rouge("rougeL")


def _labels(outputs, references) -> tuple[list[str], list[str]]:
    y_true = [normalize(r) for r in references]
    y_pred = [normalize(o) or INVALID_LABEL for o in outputs]
    return y_true, y_pred


def _check(outputs: Sequence[Any], references: Sequence[Any]) -> None:
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs for {len(references)} references")


def json_fields(outputs: Sequence[Any], references: Sequence[Any]) -> tuple[float, list[float]]:
    """Structured output: the share of the reference JSON object's fields that the output gets right
    (values compared as normalised text). Output that is not a JSON object scores 0; extra keys
    are ignored; text after the object (a model that keeps talking) is ignored."""
    import json

    _check(outputs, references)
    dec = json.JSONDecoder()
    per = []
    for o, r in zip(outputs, references):
        ref = json.loads(r) if isinstance(r, str) else r
        if not isinstance(ref, dict) or not ref:
            raise ValueError(f"json_fields: a reference must be a non-empty JSON object, got {r!r}")
        got = None
        if isinstance(o, str):
            s = o.strip()
            try:
                got, _ = dec.raw_decode(s)
            except ValueError:
                got = None
        if not isinstance(got, dict):
            per.append(0.0)
            continue
        per.append(sum(1.0 for k, v in ref.items() if k in got and normalize(got[k]) == normalize(v)) / len(ref))
    return (sum(per) / len(per) if per else 0.0), per


class ScorerRegistry:
    """Metric name -> scorer. Registering a name twice with another function is refused."""

    def __init__(self, scorers: dict[str, MetricFn]):
        self._scorers = dict(scorers)

    def register(self, name: str, fn: MetricFn) -> MetricFn:
        if name in self._scorers and self._scorers[name] is not fn:
            raise ValueError(f"scorer {name!r} already registered")
        self._scorers[name] = fn
        return fn

    def get(self, name: str) -> MetricFn:
        fn = self._scorers.get(name)
        if fn is None and name.endswith("exact_match"):
            return exact_match
        if fn is None:
            raise KeyError(f"unknown metric or scorer {name!r} (known: {', '.join(self.names())}, or *_exact_match)")
        return fn

    def can_score(self, name: str) -> bool:
        return name in self._scorers or name.endswith("exact_match")

    def names(self) -> list[str]:
        return sorted(self._scorers)


SCORERS = ScorerRegistry({
    "json_fields": json_fields,
    "exact_match": exact_match,
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "rouge1": rouge1,
    "rougeL": rougeL,
})


def register_scorer(name: str, fn: MetricFn | None = None):
    """Register ``fn(outputs, references) -> (aggregate, per_example)`` under ``name`` (also a decorator).

    A scorer may also return a plain list of per-example scores; the aggregate is then their mean.
    """

    def deco(f: MetricFn) -> MetricFn:
        return SCORERS.register(name, f)

    return deco(fn) if fn is not None else deco


def get_metric(name: str) -> MetricFn:
    return SCORERS.get(name)


def can_score(name: str) -> bool:
    """A registered metric or scorer, or ``<prefix>_exact_match`` (exact match under that name)."""
    return SCORERS.can_score(name)


def metric_names() -> list[str]:
    return SCORERS.names()


def score(name: str, outputs: Sequence[Any], references: Sequence[Any]) -> tuple[float, list[float]]:
    """Run a metric or a registered scorer, coercing a list-only result to (mean, list)."""
    res = get_metric(name)(outputs, references)
    if isinstance(res, tuple) and len(res) == 2 and not isinstance(res[0], (list, tuple)):
        agg, per = res
        return float(agg), [float(x) for x in per]
    per = [float(x) for x in res]  # type: ignore[union-attr]
    return (sum(per) / len(per) if per else 0.0), per
