"""The Executor's domain function: train one plan in a worker subprocess, emitting events.

    from trex.train import Executor
    ex = Executor(home, emit=lambda ev: log.append(search_id, [ev]), search_id=search_id)
    out = ex.run(plan, task="arith-sub", node_id="n1")             # -> TrialOutcome
    out = ex.run(child, task="arith-sub", node_id="n2", parent_adapter=out.adapter)

Events, through ``emit``: ``TrialStarted``, sampled ``TrialProgressed``, then exactly one
of ``TrialFinished`` / ``TrialFailed``; or, when identical work was already done, one
``TrialReused`` and nothing else (no worker is started).

Identical work = same *work key*: sha256 over the plan hash, the recipe output hash,
the base model's content hash, the seed and (when continuing) the parent adapter.
The key → result index lives under ``HOME/train/index/<hh>/<key>.json`` (written
after ``TrialFinished`` is emitted); when it has no entry and the Executor was given
``log=EventLog``, the log's ``TrialFinished``/``TrialReused`` events are searched by
their ``work_key``. A result is honoured only if its adapter is in the artifact store.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from trex.artifacts import ArtifactStore, base_model_hash, content_hash  # noqa: F401  (base_model_hash re-exported)
from trex.events.base import Event
from trex.events.envelope import new_id
from trex.events.errors import EventError, LinkRefused
from trex.events.fsio import check_not_link, ensure_dir, open_nofollow, write_file_replace, write_file_under
from trex.events.plans import PlanRejected
from trex.events.trials import TrialFailed, TrialFinished, TrialProgressed, TrialReused, TrialStarted
from trex.events.work_index import MAX_CURVE, sampled_curve
from trex.plan import Plan, parse_plan, plan_hash
from trex.recipe import RecipeError, materialize
from trex.train.row_loss import loss_key

TRAIN_CODE_VERSION = 1
EXIT_REASONS = {3: "nan_loss", 4: "oom", 5: "bad_plan"}
LOG_TAIL_CHARS = 4000

Emit = Callable[[Event], Any]


@dataclass
class TrialOutcome:
    status: Literal["finished", "reused", "failed", "refused"]  # refused: its data overlaps held-out rows
    node_id: str
    plan_hash: str
    work_key: str = ""
    trial_id: str | None = None
    adapter: str | None = None
    steps: int = 0
    train_metrics: dict[str, float] = field(default_factory=dict)
    compute_seconds: float = 0.0
    reason: str | None = None
    message: str = ""
    resume_from: str | None = None
    worker_pid: int | None = None
    reused_from: dict[str, str] | None = None  # source search/node of a reused result
    events: list[Event] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("finished", "reused")


def work_key(plan: Plan, data_hash: str, base_hash: str, parent_adapter: str | None) -> str:
    body = json.dumps({
        "v": TRAIN_CODE_VERSION, "plan": plan_hash(plan), "data": data_hash, "base": base_hash,
        "seed": plan.seed, "parent": parent_adapter if plan.continue_from_parent else None,
    }, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _tail(path: Path, n: int = LOG_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class _SetupRefused(Exception):
    """A trial's files could not be laid out under the home (a link in the way): before any worker."""


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _detect_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        return "cpu"


def _entry_ok(entry) -> bool:
    """A work-index entry (a file under the home, so anything may stand there) that a reuse can be
    built from: an adapter hash, whole steps, numeric training metrics, names that are strings."""
    if not isinstance(entry, dict) or not isinstance(entry.get("adapter"), str):
        return False
    steps, metrics = entry.get("steps", 0), entry.get("train_metrics", {})
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 or not isinstance(metrics, dict):
        return False
    if not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
               for k, v in metrics.items()):
        return False
    return all(isinstance(entry.get(k, ""), str) for k in ("search_id", "node_id", "plan_hash"))


class Executor:
    """Trains plans for one trex home. Thread-safe enough for one trial per call at a time."""

    def __init__(self, home: str | os.PathLike, emit: Emit, *, search_id: str = "", threads: int | None = None,
                 device: str = "auto", progress_every: int = 10, time_limit_s: float | None = None,
                 allowed_roots: Sequence[str | os.PathLike] = (), store: ArtifactStore | None = None,
                 worker_env: dict[str, str] | None = None, packing: bool | None = None,
                 chunked_ce: bool | None = None, compile: bool | None = None, log=None,
                 reuse: Literal["home", "search"] = "home"):
        if reuse not in ("home", "search"):
            raise ValueError(f"reuse must be 'home' or 'search', not {reuse!r}")
        self.home = Path(home)
        # where identical work may come from: anywhere in the home, or only this search's own trials (a
        # benchmark's cells are independent samples: work another cell did would arrive at no cost and
        # change the timing, and so the decisions, of the cell that reuses it)
        self.reuse = reuse
        self.emit_fn = emit
        self.search_id = search_id
        self.threads = threads
        self.device = device
        self.progress_every = max(1, progress_every)
        self.time_limit_s = time_limit_s
        self.allowed_roots = list(allowed_roots)
        self.store = store or ArtifactStore.for_home(self.home)
        self.worker_env = dict(worker_env or {})
        self.options = {"packing": packing, "chunked_ce": chunked_ce, "compile": compile}
        self.log = log  # optional EventLog: searched for earlier work when the index has no entry

    # ----------------------------------------------------------------- index
    def _index_path(self, key: str) -> Path:
        return self.home / "train" / "index" / key[:2] / f"{key}.json"

    def lookup(self, key: str) -> dict | None:
        """Earlier identical work: the index under the home, else (if given) the event log."""
        p = self._index_path(key)
        try:
            fd = open_nofollow(p, os.O_RDONLY)  # an entry that is a link is not read through (said, a miss)
            with os.fdopen(fd, "rb") as f:
                entry = json.loads(f.read())
        except LinkRefused as e:
            _say(f"trex: work index entry ignored: {e}")
            entry = None
        except (OSError, ValueError):
            entry = None
        if not _entry_ok(entry) or not self._mine(entry):
            entry = None  # an entry that is not one (a list, a string, a field of the wrong kind) is a miss
        if entry is not None and self.store.exists(entry["adapter"]):
            if "progress" not in entry:  # written before curves were kept: the log has this work's curve
                entry = self._with_curve(key, entry)
            return entry
        return self._lookup_log(key) if self.log is not None else None

    def _mine(self, entry: dict) -> bool:
        """Whether this Executor may serve ``entry``'s work (with ``reuse="search"``: only its search's)."""
        return self.reuse == "home" or entry.get("search_id") == self.search_id

    def _with_curve(self, key: str, entry: dict) -> dict:
        """An index entry from before curves were kept, given the curve the log holds for the same trial
        (the same adapter: never another trial of the same work), else none; rewritten either way, so
        the log is asked once. The log is advice here: when it cannot answer, the entry stands."""
        curve: list = []
        if self.log is not None:
            try:
                same = next((e for e in self._log_entries(key) if e.get("adapter") == entry["adapter"]), None)
                curve = list(same.get("progress") or []) if same is not None else []
            except Exception as e:  # noqa: BLE001 - a log that cannot be read costs the curve, not the reuse
                _say(f"trex: the curve of work {key[:12]} was not read from the log: {type(e).__name__}: {e}")
                return entry
        entry = {**entry, "progress": curve}
        self._record(key, entry)
        return entry

    def _log_entries(self, key: str) -> list[dict]:
        """Every trial of identical work in the log, in log order. Through the log service, its
        incremental index answers (:meth:`RemoteLog.find_work`); a log read here directly is indexed
        whole (:class:`trex.events.work_index.WorkIndex`)."""
        from trex.events.work_index import WorkIndex

        find = getattr(self.log, "find_work", None)
        return find(key) if find is not None else WorkIndex().update(self.log).candidates(key)

    def _lookup_log(self, key: str) -> dict | None:
        """The first trial of identical work in the log that this Executor may serve and whose adapter
        the store holds."""
        for entry in self._log_entries(key):
            if isinstance(entry.get("adapter"), str) and self._mine(entry) and self.store.exists(entry["adapter"]):
                self._record(key, entry)
                return entry
        return None

    def _record(self, key: str, entry: dict) -> None:
        """The index entry, written whole and never through a link. It is a cache of what the log
        records: when a link is in the way it is said (one line on stderr), not written, not fatal."""
        try:
            write_file_under(self.home, self._index_path(key), json.dumps(entry, sort_keys=True).encode())
        except EventError as e:
            _say(f"trex: work index entry not written: {e}")

    # ------------------------------------------------------------------- run
    def run(self, plan: Plan | dict, *, task: str, node_id: str, parent_adapter: str | None = None,
            base_model_dir: str | os.PathLike | None = None, trial_id: str | None = None,
            cancel: threading.Event | None = None, time_limit_s: float | None = None,
            on_worker_start: Callable[[int], Any] | None = None, command_id: str = "",
            attempt: int = 1) -> TrialOutcome:
        """Train ``plan`` for ``node_id`` (or reuse identical earlier work). Never raises for a
        failed trial: the outcome (and the events emitted) says what happened."""
        events: list[Event] = []

        def emit(ev: Event) -> None:
            events.append(ev)
            self.emit_fn(ev)

        trial_id = trial_id or new_id()
        limit = time_limit_s if time_limit_s is not None else self.time_limit_s
        device = _detect_device(self.device)

        def bad(msg: str, phash: str = "") -> TrialOutcome:
            emit(TrialStarted(node_id=node_id, trial_id=trial_id, command_id=command_id, plan_hash=phash,
                              worker=socket.gethostname(), device=device, attempt=attempt))
            emit(TrialFailed(node_id=node_id, trial_id=trial_id, reason="bad_plan", message=msg[:2000]))
            return TrialOutcome("failed", node_id, phash, trial_id=trial_id, reason="bad_plan", message=msg,
                                events=events)

        if not isinstance(plan, Plan):
            parsed = parse_plan(plan)
            if isinstance(parsed, str):
                return bad(parsed)
            plan = parsed
        phash = plan_hash(plan)
        if plan.continue_from_parent and not parent_adapter:
            return bad("continue_from_parent is set but the node has no parent adapter", phash)
        resume_from = parent_adapter if plan.continue_from_parent else None
        try:
            from trex.tasks import get_task, prepare_task

            assets = prepare_task(get_task(task, self.home), self.home, base_model_dir)
        except KeyError as e:
            return bad(str(e.args[0]) if e.args else str(e), phash)
        except EventError as e:  # a link under the home (LinkRefused), a held lock: a failed trial, said
            return bad(f"task {task}: {e}", phash)
        parent_dir = None
        if resume_from:
            try:
                if not self.store.exists(resume_from):
                    return bad(f"parent adapter {resume_from} is not in the artifact store", phash)
                parent_dir = self.store.get(resume_from)
            except LinkRefused as e:  # the store under the home holds a link: a failed trial, never followed
                return bad(f"parent adapter: {e}", phash)
            err = _check_continuation(plan, parent_dir)
            if err:
                return bad(err, phash)
        t_data = time.time()  # data work (materialising, scoring rows for cleaning) is charged like training
        base_hash = base_model_hash(assets.base_model_dir)
        try:
            data_hash, data_path = materialize(plan.data, self.home, [*self.allowed_roots, assets.data_dir],
                                               row_losses=self._row_losses(plan, assets.base_model_dir, base_hash),
                                               loss_key=loss_key(base_hash, plan.max_seq_len))
        except (RecipeError, ValueError, LinkRefused) as e:
            return bad(f"data recipe: {e}", phash)
        except Exception as e:  # noqa: BLE001 - scoring rows (torch, files, memory) failing is a failed trial
            return bad(f"data recipe: {type(e).__name__}: {e}", phash)
        try:
            refusal = self._guard(task, data_hash, data_path, node_id, emit)
        except Exception as e:  # noqa: BLE001 - a guard that cannot run is a failed trial, never a crash
            return bad(f"contamination check: {type(e).__name__}: {e}", phash)
        if refusal is not None:  # training rows that overlap held-out data: the plan is refused, never trained
            emit(PlanRejected(node_id=node_id, reason=refusal[:2000]))
            return TrialOutcome("refused", node_id, phash, reason="data_overlap", message=refusal, events=events)
        key = work_key(plan, data_hash, base_hash, resume_from)

        hit = self.lookup(key)
        if hit is not None:
            metrics = dict(hit.get("train_metrics", {}))
            emit(TrialReused(node_id=node_id, plan_hash=phash, adapter=hit["adapter"], work_key=key,
                             source_search_id=hit.get("search_id", ""), source_node_id=hit.get("node_id", ""),
                             train_metrics=metrics, progress=sampled_curve(hit.get("progress"))))
            return TrialOutcome("reused", node_id, phash, work_key=key, adapter=hit["adapter"],
                                steps=int(hit.get("steps", 0)), train_metrics=metrics,
                                compute_seconds=0.0, resume_from=resume_from,
                                reused_from={"search_id": hit.get("search_id", ""), "node_id": hit.get("node_id", ""),
                                             "compute_seconds": str(hit.get("compute_seconds", 0.0))},
                                events=events)
        try:
            return self._train(plan, phash, key, node_id, trial_id, assets.base_model_dir, data_path, parent_dir,
                               resume_from, device, limit, cancel, on_worker_start, emit, events, command_id,
                               attempt, data_seconds=time.time() - t_data)
        except _SetupRefused as e:  # the trial's files could not be laid out (a link in the way): no worker
            return bad(f"trial files: {e}", phash)

    def _row_losses(self, plan: Plan, base_dir: Path, base_hash: str):
        """How a recipe's ``clean`` step scores its rows: the named adapter from this home's store,
        losses cached by (adapter, rows)."""
        if plan.data.clean is None:
            return None
        step = plan.data.clean

        def score(adapter: str, rows: list[dict]) -> list[float]:
            from trex.train.row_loss import cached_row_losses

            if not self.store.exists(adapter):
                raise RecipeError(f"cleaning by loss: node {step.node}'s adapter {adapter[:12]} is not in the "
                                  f"artifact store")
            return cached_row_losses(self.home, base_dir, adapter, self.store.get(adapter), rows,
                                     max_len=plan.max_seq_len, threads=self.threads, base_hash=base_hash)

        return score

    def _guard(self, task: str, data_hash: str, data_path: Path, node_id: str, emit) -> str | None:
        """The contamination guard on a materialised training set (cached by its content hash):
        records ``DataOverlapChecked``; returns the refusal line, or None when the rows are clean."""
        from trex.tasks import get_task
        from trex.tasks.contamination import check_overlap, heldout_splits
        from trex.tasks.files import read_jsonl
        from trex.tasks.prepare import load_split

        t = get_task(task, self.home)
        ensure_dir(self.home, "cache", "overlap")  # its cache folder: no link on the way (LinkRefused)
        report = check_overlap(read_jsonl(data_path), heldout_splits(t, self.home),
                               reference=load_split(t, "train", self.home), train_hash=data_hash,
                               cache_dir=self.home / "cache" / "overlap")
        emit(report.event(node_id=node_id))
        if report.refused and self._overlap_allowed():
            return None  # the user started the search with --allow-overlap: recorded, checked, not refused
        return report.reason if report.refused else None

    def _overlap_allowed(self) -> bool:
        """The search was started with an explicit, recorded override (``labels.overlap_override``)."""
        if self.log is None or not self.search_id or not self.log.exists(self.search_id):
            return False
        sid, seen = self.search_id, set()
        while sid and sid not in seen and self.log.exists(sid):  # a fork inherits its root's recorded override
            seen.add(sid)
            first = self.log.read(sid, until_seq=1)[0].event
            if type(first).__name__ != "SearchForked":
                return bool(getattr(first, "labels", {}).get("overlap_override"))
            sid = first.parent_search_id
        return False

    def _train(self, plan, phash, key, node_id, trial_id, base_dir, data_path, parent_dir, resume_from, device,
               limit, cancel, on_worker_start, emit, events, command_id="", attempt=1,
               data_seconds: float = 0.0) -> TrialOutcome:
        from trex.train.loop import WorkerSpec

        try:  # HOME/train/runs/<trial>: no folder on the way, nor any file the worker writes, is a link
            run_dir = ensure_dir(self.home, "train", "runs", trial_id)
            progress = check_not_link(run_dir / "progress.jsonl")
            log_path = check_not_link(run_dir / "worker.log")
            out_dir = check_not_link(run_dir / "out")
            spec = WorkerSpec(plan=plan.model_dump(mode="json"), base_model_dir=str(base_dir),
                              data_path=str(data_path), out_dir=str(out_dir), progress_path=str(progress),
                              parent_adapter_dir=str(parent_dir) if parent_dir else None, threads=self.threads,
                              device=device, progress_every=self.progress_every, **self.options)
            write_file_replace(run_dir / "spec.json", spec.model_dump_json(indent=2).encode())
            log_fd = open_nofollow(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        except EventError as e:
            raise _SetupRefused(str(e)) from None
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.update(self.worker_env)
        t0 = time.time() - data_seconds  # the trial's compute includes its data work
        with os.fdopen(log_fd, "wb") as logf:
            proc = subprocess.Popen([sys.executable, "-m", "trex.train.worker", str(run_dir / "spec.json")],
                                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
        try:
            return self._watch(proc, plan, phash, key, node_id, trial_id, run_dir, progress, log_path, out_dir,
                               resume_from, device, limit, cancel, on_worker_start, emit, events, command_id,
                               attempt, t0)
        finally:
            if proc.poll() is None:  # an exception escaped (e.g. from emit): never leave the worker behind
                _kill(proc)

    def _watch(self, proc, plan, phash, key, node_id, trial_id, run_dir, progress, log_path, out_dir, resume_from,
               device, limit, cancel, on_worker_start, emit, events, command_id, attempt, t0) -> TrialOutcome:
        import shutil

        emit(TrialStarted(node_id=node_id, trial_id=trial_id, command_id=command_id, plan_hash=phash,
                          worker=f"{socket.gethostname()}:{proc.pid}", device=device, attempt=attempt,
                          resume_from=resume_from))
        if on_worker_start is not None:
            on_worker_start(proc.pid)
        offset = 0
        lines: list[dict] = []
        curve: deque = deque(maxlen=MAX_CURVE)  # the sampled losses (the last ones), for the work index's entry
        killed_for: str | None = None

        def drain() -> None:
            nonlocal offset
            try:
                with open(progress, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                return
            end = data.rfind(b"\n")
            if end < 0:
                return
            offset += end + 1
            for raw in data[: end + 1].splitlines():
                try:
                    msg = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                lines.append(msg)
                if msg.get("kind") == "progress":
                    loss = msg.get("loss")
                    if loss is not None and not (isinstance(loss, float) and loss == loss and abs(loss) != float("inf")):
                        loss = None
                    emit(TrialProgressed(node_id=node_id, trial_id=trial_id, step=int(msg["step"]), loss=loss,
                                         learning_rate=msg.get("lr")))
                    curve.append((int(msg["step"]), loss))

        while True:
            rc = proc.poll()
            drain()
            if rc is not None:
                break
            if cancel is not None and cancel.is_set():
                killed_for = "cancelled"
            elif limit is not None and time.time() - t0 > limit:
                killed_for = "timeout"
            if killed_for:
                _kill(proc)
                drain()
                break
            time.sleep(0.1)
        rc = proc.returncode
        compute = time.time() - t0
        finished = next((m for m in lines if m.get("kind") == "finished"), None)
        failed = next((m for m in lines if m.get("kind") == "failed"), None)
        if killed_for is None and rc == 0 and finished is not None and out_dir.is_dir():
            try:
                adapter = self.store.put(out_dir)
            except Exception as e:  # noqa: BLE001
                failed, rc = {"reason": "crash", "message": f"storing the adapter failed: {e}"}, -1
            else:
                metrics = {k: float(v) for k, v in finished.get("train_metrics", {}).items()}
                steps = int(finished.get("steps", 0))
                emit(TrialFinished(node_id=node_id, trial_id=trial_id, adapter=adapter, plan_hash=phash, work_key=key,
                                   steps=steps,
                                   train_metrics=metrics, compute_seconds=compute, device=finished.get("device", device)))
                self._record(key, {"adapter": adapter, "plan_hash": phash, "search_id": self.search_id,
                                   "node_id": node_id, "trial_id": trial_id, "steps": steps,
                                   "train_metrics": metrics, "compute_seconds": compute,
                                   "progress": [list(p) for p in curve]})
                shutil.rmtree(run_dir, ignore_errors=True)
                return TrialOutcome("finished", node_id, phash, work_key=key, trial_id=trial_id, adapter=adapter,
                                    steps=steps, train_metrics=metrics, compute_seconds=compute,
                                    resume_from=resume_from, worker_pid=proc.pid, events=events)
        if killed_for:
            reason = killed_for
            message = f"worker killed: {'cancelled by the caller' if reason == 'cancelled' else f'time limit {limit}s'}"
        elif failed is not None:
            reason, message = failed.get("reason", "crash"), failed.get("message", "")
        elif rc in EXIT_REASONS:
            reason, message = EXIT_REASONS[rc], f"worker exited with code {rc}"
        else:
            reason = "crash"
            message = (f"worker killed by signal {signal.Signals(-rc).name}" if rc is not None and rc < 0
                       else f"worker exited with code {rc}")
            if rc == -signal.SIGKILL:
                message += " (killed externally, or by the kernel's OOM killer)"
        if reason not in ("oom", "nan_loss", "timeout", "bad_plan", "crash", "cancelled"):
            reason = "crash"
        emit(TrialFailed(node_id=node_id, trial_id=trial_id, reason=reason, message=message[:2000],
                         log_tail=_tail(log_path), compute_seconds=compute))
        shutil.rmtree(out_dir, ignore_errors=True)
        return TrialOutcome("failed", node_id, phash, work_key=key, trial_id=trial_id, reason=reason, message=message,
                            compute_seconds=compute, resume_from=resume_from, worker_pid=proc.pid, events=events)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    proc.wait()


def _check_continuation(plan: Plan, parent_dir: Path) -> str | None:
    is_lora = (parent_dir / "adapter_config.json").is_file()
    if plan.method == "lora" and not is_lora:
        return "continue_from_parent: the parent is a full fine-tune, the child a LoRA plan"
    if plan.method == "full" and is_lora:
        return "continue_from_parent: the parent is a LoRA adapter, the child a full fine-tune"
    if is_lora:
        cfg = json.loads((parent_dir / "adapter_config.json").read_text())
        if int(cfg.get("r", -1)) != plan.lora_rank or sorted(cfg.get("target_modules") or []) != sorted(plan.target_modules):
            return (f"continue_from_parent: the parent adapter has rank {cfg.get('r')} on "
                    f"{sorted(cfg.get('target_modules') or [])}; the child plan must keep them")
    return None


def run_trial(plan: Plan | dict, *, home: str | os.PathLike, task: str, node_id: str, emit: Emit,
              parent_adapter: str | None = None, search_id: str = "", **kw) -> TrialOutcome:
    """One-shot form of :meth:`Executor.run` (Executor options and run options both accepted)."""
    run_keys = {"base_model_dir", "trial_id", "cancel", "time_limit_s", "on_worker_start", "command_id", "attempt"}
    run_kw = {k: kw.pop(k) for k in list(kw) if k in run_keys}
    return Executor(home, emit, search_id=search_id, **kw).run(plan, task=task, node_id=node_id,
                                                               parent_adapter=parent_adapter, **run_kw)
