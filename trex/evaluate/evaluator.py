"""The Evaluator: score an adapter on a task's held-out set and record it as events.

::

    ev = Evaluator(TransformersEvalBackend(base_dir), home=home, emit=emit)
    res = ev.evaluate(spec, adapter_dir, node_id="n3")
    res.primary_value, res.metrics, res.outputs_artifact

It builds prompts with the task's template, runs batched greedy generation on the backend,
scores the outputs with the task's metrics (and its own scorer, if it names one), writes the
per-example table (index, input, prompt, reference, output, score, one column per metric) as a
Parquet artifact ``$HOME/artifacts/evals/<hash>.parquet`` (temp name, fsync, rename; the hash
covers the table, so identical results share a file), and emits one ``MetricRecorded`` per metric
(the primary one flagged) and then ``EvaluationFinished``. Any failure emits
``EvaluationFailed`` and raises :class:`EvaluationError` for the caller to carry on.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from trex.tasks.metrics import get_metric, score
from trex.events.base import Event
from trex.events.envelope import canonical_json, new_id
from trex.events.evaluation import EvaluationFailed, EvaluationFinished, HeldOutFailed, HeldOutScored, MetricRecorded

Emit = Callable[[Event], None]


class EvaluationError(Exception):
    def __init__(self, reason: str, message: str, eval_id: str = ""):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message, self.eval_id = reason, message, eval_id


@dataclass(frozen=True)
class EvalSpec:
    """What to evaluate and how: the held-out examples, the prompt template, decoding, metrics.

    ``examples`` are mappings with ``input_key`` (default "prompt") and ``reference_key``
    (default "completion"); ``prompt_template`` is a ``str.format`` template over the example's
    fields (default: the input as is). Decoding is greedy, ``max_new_tokens`` long, cut at
    ``stop``. ``add_bos``: None = the tokenizer's default specials, True = force BOS first.
    ``metrics`` are built-in metric or registered scorer names; ``primary`` is one of them.
    """

    task: str
    examples: tuple[Mapping[str, Any], ...]
    prompt_template: str = "{prompt}"
    input_key: str = "prompt"
    reference_key: str = "completion"
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ()
    add_bos: bool | None = None
    metrics: tuple[str, ...] = ("exact_match",)
    primary: str = "exact_match"
    split: str = "eval"
    flag_primary: bool = True  # False for a secondary split (e.g. a retention set): no metric flagged primary

    def __post_init__(self):
        object.__setattr__(self, "examples", tuple(self.examples))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.primary not in self.metrics:
            object.__setattr__(self, "metrics", (self.primary, *self.metrics))
        for m in self.metrics:
            get_metric(m)  # unknown names fail here, before any generation

    @classmethod
    def from_task(cls, task: Any, **overrides: Any) -> "EvalSpec":
        """Build from a task object or mapping (duck-typed): its name, held-out rows and, when it
        has them, prompt template / max_new_tokens / stop / add_bos / metrics / primary / scorer."""
        get = (lambda k, d=None: task.get(k, d)) if isinstance(task, Mapping) else (lambda k, d=None: getattr(task, k, d))
        rows = None
        for k in ("eval_examples", "eval_rows", "held_out", "eval_set"):
            v = get(k)
            if v is not None:
                rows = v() if callable(v) else v
                break
        if rows is None:
            raise ValueError(f"task {get('name', task)!r} has no held-out examples (eval_examples / eval_rows)")
        kw: dict[str, Any] = {"task": str(get("name", "task")), "examples": tuple(rows)}
        for k in ("prompt_template", "input_key", "reference_key", "max_new_tokens", "stop", "add_bos", "metrics",
                  "primary"):
            v = get(k)
            if v is not None:
                kw[k] = tuple(v) if k in ("stop", "metrics") else v
        scorer = get("scorer")
        if scorer:
            kw["primary"] = scorer
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def for_task(cls, task: Any, home: str | os.PathLike | None = None, *, limit: int | None = None,
                 role: str = "val") -> list["EvalSpec"]:
        """One spec per data split that a :class:`trex.tasks.Task` (or its name) measures, its primary
        split first. ``role``: ``val``, the splits the search selects on (each metric's ``split``), or
        ``test``, their held-out twins (``test_split``; metrics without one are left out).

        Metric names are built-ins or registered scorers; a name ``<prefix>_exact_match`` that is
        neither (e.g. arith-sub's ``add_exact_match`` on ``eval_add``) is exact match under that name.
        Prompts get BOS first (the arith convention: ``<s>`` + prompt).
        """
        from trex.tasks import as_task, can_score, load_split

        t = as_task(task, home)
        by_split: dict[str, list] = {}
        for m in t.metrics:
            if not can_score(m.name):
                raise KeyError(f"task {t.name!r}: unknown metric {m.name!r}")
            split = m.split if role == "val" else m.test_split
            if split is not None:
                by_split.setdefault(split, []).append(m)
        specs = []
        for split, ms in sorted(by_split.items(), key=lambda kv: not any(m.primary for m in kv[1])):
            rows = load_split(t, split, home)
            if limit is not None:
                rows = rows[:limit]
            prim = next((m for m in ms if m.primary), ms[0])
            specs.append(cls(task=t.name, examples=rows, prompt_template=t.prompt_template,
                             max_new_tokens=t.max_new_tokens, add_bos=True, metrics=tuple(m.name for m in ms),
                             primary=prim.name, split=split, flag_primary=any(m.primary for m in ms)))
        return specs

    def fingerprint(self) -> str:
        body = {k: getattr(self, k) for k in ("task", "prompt_template", "input_key", "reference_key",
                                              "max_new_tokens", "stop", "add_bos", "metrics", "primary", "split")}
        body["examples"] = [dict(e) for e in self.examples]
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()


@dataclass
class EvalResult:
    eval_id: str
    node_id: str
    backend: str
    metrics: dict[str, float]
    primary: str
    primary_value: float
    n_examples: int
    outputs: list[str]
    per_example: dict[str, list[float]]
    outputs_artifact: str  # relative to $HOME/artifacts
    outputs_path: Path
    seconds: float
    generation_seconds: float = 0.0
    events: list[Event] = field(default_factory=list)


class Evaluator:
    def __init__(self, backend, *, home: str | os.PathLike | None = None, emit: Emit | None = None,
                 cache: bool = False):
        """``cache``: serve an adapter's score on a split computed before (:mod:`trex.evaluate.cache`)
        instead of generating again; the search and ``trex train`` use it, backend tests do not."""
        from trex.events.log import default_home

        self.backend = backend
        self.home = Path(home) if home is not None else default_home()
        self.emit = emit
        self.cache = cache

    def _emit(self, ev: Event, sink: list[Event]) -> None:
        sink.append(ev)
        if self.emit is not None:
            self.emit(ev)

    def generate(self, spec: EvalSpec, adapter_dir) -> tuple[list[str], list[str]]:
        prompts = [spec.prompt_template.format(**ex) for ex in spec.examples]
        ids = self.backend.encode(prompts, spec.add_bos)
        outs = self.backend.generate(adapter_dir, ids, max_new_tokens=spec.max_new_tokens, stop=spec.stop)
        return prompts, outs

    def evaluate(self, spec: EvalSpec, adapter_dir: str | os.PathLike | None, *, node_id: str,
                 eval_id: str | None = None, heldout_rank: int | None = None,
                 heldout_anytime: tuple[int, ...] = ()) -> EvalResult:
        """Score ``adapter_dir`` (None: the base model) on ``spec``. ``heldout_rank``: a held-out test
        split, recorded as ``HeldOutScored``/``HeldOutFailed`` (never as the node's metrics)."""
        from trex.artifacts import content_hash
        from trex.evaluate import cache as eval_cache

        eval_id = eval_id or new_id()
        sink: list[Event] = []
        t0 = time.perf_counter()
        adapter_hash, key, hit = None, None, None
        try:
            if self.cache and adapter_dir is not None:
                adapter_hash = content_hash(adapter_dir)
            if not spec.examples:
                raise EvaluationError("empty_eval_set", f"task {spec.task!r} has no held-out examples", eval_id)
            if self.cache:
                key = eval_cache.cache_key(adapter_hash, spec.fingerprint(), self.backend.name,
                                           eval_cache.base_identity(getattr(self.backend, "base_model", "")))
            hit = eval_cache.lookup(self.home, key) if key else None
            if hit is not None:
                rel, metrics, tg = hit["outputs_artifact"], {k: float(v) for k, v in hit["metrics"].items()}, 0.0
                path, outs, per = self._read_outputs(rel, spec)
            else:
                prompts, outs = self.generate(spec, adapter_dir)
                tg = time.perf_counter() - t0
                refs = [ex[spec.reference_key] for ex in spec.examples]
                metrics = {}
                per = {}
                for m in spec.metrics:
                    metrics[m], per[m] = score(m, outs, refs)
                path, rel = self._write_outputs(spec, adapter_dir, prompts, outs, refs, per)
        except EvaluationError as e:
            self._emit(self._failed(node_id, eval_id, e.reason, e.message, heldout_rank), sink)
            raise
        except Exception as e:  # noqa: BLE001 - a failed evaluation is an event, then the caller decides
            self._emit(self._failed(node_id, eval_id, type(e).__name__, str(e)[:2000], heldout_rank), sink)
            raise EvaluationError(type(e).__name__, str(e), eval_id) from e
        if adapter_hash is None and adapter_dir is not None:
            adapter_hash = content_hash(adapter_dir)
        if key and hit is None:  # a cache that cannot be written costs the next caller time, nothing else
            eval_cache.store(self.home, key, {"outputs_artifact": rel, "metrics": metrics})
        if heldout_rank is not None:
            for m in spec.metrics:
                self._emit(HeldOutScored(node_id=node_id, name=m, value=float(metrics[m]), split=spec.split,
                                         primary=spec.flag_primary and m == spec.primary, rank=heldout_rank,
                                         anytime=tuple(heldout_anytime), eval_id=eval_id, n_examples=len(outs), outputs_artifact=rel,
                                         adapter=adapter_hash), sink)
            return EvalResult(eval_id=eval_id, node_id=node_id, backend=self.backend.name, metrics=metrics,
                              primary=spec.primary, primary_value=metrics[spec.primary], n_examples=len(outs),
                              outputs=outs, per_example=per, outputs_artifact=rel, outputs_path=path,
                              seconds=time.perf_counter() - t0, generation_seconds=tg, events=sink)
        for m in spec.metrics:
            self._emit(MetricRecorded(node_id=node_id, name=m, value=float(metrics[m]),
                                      primary=spec.flag_primary and m == spec.primary,
                                      split=spec.split, eval_id=eval_id), sink)
        seconds = time.perf_counter() - t0
        self._emit(EvaluationFinished(node_id=node_id, eval_id=eval_id, backend=self.backend.name,
                                      n_examples=len(outs), outputs_artifact=rel, seconds=seconds,
                                      adapter=adapter_hash, base_model=str(getattr(self.backend, "base_model", "")),
                                      cached=hit is not None), sink)
        return EvalResult(eval_id=eval_id, node_id=node_id, backend=self.backend.name, metrics=metrics,
                          primary=spec.primary, primary_value=metrics[spec.primary], n_examples=len(outs),
                          outputs=outs, per_example=per, outputs_artifact=rel, outputs_path=path, seconds=seconds,
                          generation_seconds=tg, events=sink)

    @staticmethod
    def _failed(node_id: str, eval_id: str, reason: str, message: str, heldout_rank: int | None) -> Event:
        if heldout_rank is not None:
            return HeldOutFailed(node_id=node_id, rank=heldout_rank, eval_id=eval_id, reason=reason, message=message)
        return EvaluationFailed(node_id=node_id, eval_id=eval_id, reason=reason, message=message)

    def _read_outputs(self, rel: str, spec: EvalSpec) -> tuple[Path, list[str], dict[str, list[float]]]:
        """A cached evaluation's outputs and per-example scores, from its artifact."""
        import pyarrow.parquet as pq

        path = self.home / "artifacts" / rel
        cols = pq.read_table(path).to_pydict()
        self._publish(path)  # written before the store was remote, or its publishing failed then
        return path, list(cols["output"]), {m: list(cols[f"metric_{m}"]) for m in spec.metrics}

    def _write_outputs(self, spec: EvalSpec, adapter_dir, prompts: Sequence[str], outs: Sequence[str],
                       refs: Sequence[Any], per: dict[str, list[float]]) -> tuple[Path, str]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols: dict[str, list] = {
            "index": list(range(len(outs))),
            "input": [str(ex.get(spec.input_key, "")) for ex in spec.examples],
            "prompt": list(prompts),
            "reference": [str(r) for r in refs],
            "output": [o if isinstance(o, str) else ("" if o is None else str(o)) for o in outs],
            "score": per[spec.primary],
        }
        for m, v in per.items():
            cols[f"metric_{m}"] = v
        meta = {"task": spec.task, "primary": spec.primary, "spec": spec.fingerprint(),
                "adapter": "" if adapter_dir is None else str(adapter_dir), "backend": self.backend.name,
                "base_model": str(getattr(self.backend, "base_model", ""))}
        h = hashlib.sha256(canonical_json({"cols": cols, "meta": {k: meta[k] for k in ("task", "primary", "spec")}})
                           .encode()).hexdigest()
        from trex.events.fsio import check_not_link, ensure_dir_under, write_file_replace

        d = ensure_dir_under(self.home, self.home / "artifacts" / "evals")  # no folder on the way is a link
        path = d / f"{h}.parquet"
        rel = f"evals/{h}.parquet"
        if not check_not_link(path).exists():  # content-addressed: one already there is this one
            table = pa.table(cols).replace_schema_metadata({k: str(v) for k, v in meta.items()})
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf)
            write_file_replace(path, buf.getvalue().to_pybytes())  # temp file (O_EXCL|O_NOFOLLOW), fsync, rename
        self._publish(path)
        return path, rel

    def _publish(self, path: Path) -> None:
        """The outputs to the object store, for a Researcher on another node (a no-op on a local store).
        Best effort: a score already computed is never failed for it; the reader says what is missing."""
        import sys

        from trex.artifacts import publish_outputs

        try:
            publish_outputs(self.home, path)
        except Exception as e:  # noqa: BLE001 - the store is down or refuses: said, not fatal
            print(f"trex: evaluation outputs {path.name} not published to the artifact store: {e}", file=sys.stderr)


def evaluate_task(evaluator: Evaluator, task: Any, adapter_dir: str | os.PathLike | None, *, node_id: str,
                  home: str | os.PathLike | None = None, eval_id: str | None = None,
                  limit: int | None = None) -> dict[str, EvalResult]:
    """Evaluate an adapter on every split a task measures (primary split first).

    Each split is one evaluation (its own ``EvaluationFinished``, eval id ``<eval_id>-<split>``);
    only the task's primary metric is flagged primary. Returns ``{split: EvalResult}``.
    """
    base = eval_id or new_id()
    specs = EvalSpec.for_task(task, home if home is not None else evaluator.home, limit=limit)
    return {s.split: evaluator.evaluate(s, adapter_dir, node_id=node_id, eval_id=f"{base}-{s.split}") for s in specs}


def evaluate_heldout(evaluator: Evaluator, task: Any, adapter_dir: str | os.PathLike | None, *, node_id: str,
                     rank: int, anytime: tuple[int, ...] = (), home: str | os.PathLike | None = None,
                     eval_id: str | None = None) -> dict[str, EvalResult]:
    """Score an adapter on every held-out test split of a task, whole (no limit), as ``HeldOutScored``."""
    base = eval_id or new_id()
    specs = EvalSpec.for_task(task, home if home is not None else evaluator.home, role="test")
    return {s.split: evaluator.evaluate(s, adapter_dir, node_id=node_id, eval_id=f"{base}-{s.split}",
                                        heldout_rank=rank, heldout_anytime=anytime) for s in specs}
