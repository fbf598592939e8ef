"""Training trials: start, sampled progress, and exactly one closing event each."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from trex.events.base import Event, event, upcaster

FailureReason = Literal["oom", "nan_loss", "timeout", "bad_plan", "crash", "cancelled"]


@event("TrialStarted")
class TrialStarted(Event):
    node_id: str
    trial_id: str
    command_id: str = ""
    plan_hash: str = ""
    worker: str = ""
    device: str = "cpu"
    attempt: int = Field(default=1, ge=1)
    resume_from: str | None = None  # adapter hash of the parent checkpoint, when continuing


@event("TrialProgressed")
class TrialProgressed(Event):
    node_id: str
    trial_id: str
    step: int = Field(ge=0)
    loss: float | None = None
    learning_rate: float | None = None


@event("TrialFinished")
class TrialFinished(Event):
    node_id: str
    trial_id: str
    adapter: str  # artifact hash
    plan_hash: str = ""
    work_key: str = ""  # plan + recipe output + base model + seed (+ parent adapter): identical work, same key
    steps: int = Field(default=0, ge=0)
    train_metrics: dict[str, float] = Field(default_factory=dict)
    compute_seconds: float = Field(default=0.0, ge=0)
    device: str = "cpu"


@event("TrialFailed")
class TrialFailed(Event):
    node_id: str
    trial_id: str
    reason: FailureReason
    message: str = ""
    log_tail: str = ""
    compute_seconds: float = Field(default=0.0, ge=0)


@event("TrialAbandoned")
class TrialAbandoned(Event):
    """The worker running a trial died or vanished; the trial may be retried once."""

    node_id: str
    trial_id: str
    reason: str = ""


@event("TrialReused", version=2)
class TrialReused(Event):
    """Identical work was already done: the node points to the existing result, nothing is trained.
    v2: ``progress``, the source trial's sampled (step, loss) curve, so that a reused node carries the
    same evidence as the work it stands for (whether its loss was still falling reads the same)."""

    node_id: str
    plan_hash: str
    adapter: str
    work_key: str = ""
    source_search_id: str
    source_node_id: str
    train_metrics: dict[str, Any] = Field(default_factory=dict)
    progress: tuple[tuple[int, float | None], ...] = ()


@upcaster("TrialReused", 1)
def upcast_trial_reused_v1_v2(d: dict) -> dict:
    """A v1 reuse carried no curve: it reads with none (its node falls back to first/final loss)."""
    return dict(d)


@event("TrialDispatchFailed")
class TrialDispatchFailed(Event):
    """The executor failed before the trial started (no TrialStarted): retried once, then the plan is refused."""

    node_id: str
    reason: str = ""


@event("WorkStalled", version=2)
class WorkStalled(Event):
    """Work in flight that did not come back within its bound: which command, on which actor, how long.
    The driver then restarts that actor, and the work is retried within its usual bound (a trial once,
    a proposal a few times) before a recorded failure: a stall never holds a search forever.
    v2: ``kind`` may be ``distill`` (the end of a search waits on the Distiller, bounded too)."""

    kind: Literal["train", "propose", "evaluate", "distill"]
    command: str  # the trial's command id, the decision id, or the evaluated node id
    node_id: str | None = None
    actor: str = ""  # e.g. "executor-0", "researcher"
    waited_s: float = Field(ge=0)
    limit_s: float = Field(gt=0)
    action: str = "actor restarted"


@upcaster("WorkStalled", 1)
def upcast_work_stalled_v1_v2(d: dict) -> dict:
    """v2 only widens ``kind``: every v1 stall reads as it was."""
    return dict(d)


@event("WorkResent")
class WorkResent(Event):
    """A call to an actor that searches share (the Researcher or Evaluator of a ``trex-actors`` pool)
    failed because another search restarted that actor for its own stall (``restarted_by``), or
    because this search restarted it for another call's stall (``restarted_by`` is this search; that
    stall was counted) while this call was in flight there or just before it was sent: it is sent again, and the
    failure is not counted against this search's attempts (a few times per call at most, then it
    counts as any death of the actor does)."""

    kind: Literal["propose", "evaluate"]
    command: str  # the decision id, or the evaluated node id
    node_id: str | None = None
    actor: str = ""
    restarted_by: str = ""  # the search whose stall restarted the actor


@event("ExecutorLeased")
class ExecutorLeased(Event):
    """The scheduler of a shared executor pool gave this search executor ``executor``: no other
    search's trial runs on it until this search releases it (``ExecutorReleased``)."""

    executor: int = Field(ge=0)
    actor: str = ""  # e.g. "trex-executor-1"


@event("ExecutorReleased")
class ExecutorReleased(Event):
    executor: int = Field(ge=0)
    reason: str = ""  # "idle" (its trial came back and nothing was ready) or "search ended"


@event("ExecutorsAwaited")
class ExecutorsAwaited(Event):
    """Work is ready and every executor of the shared pool is leased to other searches: this search
    waits for one (``trex status`` shows it) until its next ``ExecutorLeased``."""

    wanted: int = Field(ge=1)
    holders: tuple[str, ...] = ()  # the searches holding the pool's executors when it began to wait
