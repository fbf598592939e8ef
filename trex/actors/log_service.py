"""The log service: on Ray, one detached actor per home owns that home's appends and serves reads.

Executors, the Researcher, the Evaluator, the Distiller and the Conductor append and read through
it (:class:`RemoteLog`, the part of :class:`~trex.events.log.EventLog`'s interface they use), so
an actor on a node that cannot see the home still records what it does. The service runs on the
node that holds the home (hard node affinity to the process that started it) and is restarted
there by Ray when it dies; a call in flight then is retried (``max_task_retries``), and a caller
that sees the service gone retries within :data:`LOG_WAIT_S`. Appends are idempotent by event id
(the ids are fixed by the caller before the first try), so a retry never stores an event twice.

Group commit: appends that arrive while one is being written wait for it, then go to the disk
together as one record with one fsync (:meth:`EventLog.append_group`), each still succeeding or
failing on its own. The CLI (``trex sql``, ``verify``, …) keeps reading the home directly.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Iterable, Iterator

LOG_WAIT_S = 120.0  # how long a caller waits for the service (a restart included) before it gives up
MAX_GROUP = 512  # appends written together at most
CALLS = 64  # calls the service answers at once (appends waiting for their group, reads)


class LogServiceUnavailable(RuntimeError):
    """The home's log service did not answer within :data:`LOG_WAIT_S` (nothing is known to be stored)."""


def service_name(home: str | os.PathLike) -> str:
    """The service's actor name: from the home's absolute path, never the path itself."""
    return "trex-log-" + hashlib.sha256(os.path.abspath(os.fspath(home)).encode()).hexdigest()[:16]


class LogServiceShell:
    """The actor's body: an :class:`EventLog` on this node's copy of the home, and the committer
    thread that writes queued appends in groups."""

    def __init__(self, home: str):
        from trex.events.log import EventLog

        self.home = home
        self.log = EventLog(home)
        self._queue: list[tuple[tuple, Future]] = []
        self._work = None  # the home's work-key index (trex.events.work_index), built on first use
        self._work_lock = threading.Lock()
        self._cv = threading.Condition()
        self.appends = self.groups = self.events = 0
        threading.Thread(target=self._commit_loop, name="log-committer", daemon=True).start()

    # ------------------------------------------------------------------ appends
    def append(self, search_id: str, raws: list, expected_version: int | None = None, validated: bool = True):
        """Envelopes of the stored events (raises what :meth:`EventLog.append_raw` would). ``raws``
        built from typed events by the caller are ``validated``; others are decoded strictly here."""
        from trex.events.log import check_append

        check_append(search_id, raws, expected_version)  # junk from a caller never reaches the committer
        fut: Future = Future()
        with self._cv:
            self._queue.append(((search_id, raws, expected_version, validated), fut))
            self._cv.notify()
        out = fut.result()
        if isinstance(out, BaseException):
            raise out
        return out

    def _commit_loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                batch, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            try:
                results = self._write(batch)
            except BaseException as e:  # noqa: BLE001 - the group's callers get the error, the loop goes on
                results = [e] * len(batch)
            for (_, fut), res in zip(batch, results):
                fut.set_result(res)

    def _write(self, batch) -> list:
        self.appends += len(batch)
        self.groups += 1
        trusted = [i for i, (req, _) in enumerate(batch) if req[3]]
        checked = [i for i, (req, _) in enumerate(batch) if not req[3]]
        results: list = [None] * len(batch)
        for ids, validated in ((trusted, True), (checked, False)):
            if not ids:
                continue
            try:  # each sub-group is answered on its own: one failing never misreports the other
                outs = self.log.append_group([batch[i][0][:3] for i in ids], _validated=validated)
            except Exception as e:  # noqa: BLE001 - nothing of this sub-group was stored
                outs = [e] * len(ids)
            for i, out in zip(ids, outs):
                results[i] = out
                self.events += 0 if isinstance(out, BaseException) else len(out)
        return results

    # -------------------------------------------------------------------- reads
    def read(self, search_id=None, after_seq=0, until_seq=None):
        return self.log.read(search_id, after_seq, until_seq)

    def read_records(self, search_id=None, after_seq=0, until_seq=None):
        return self.log.read_records(search_id, after_seq, until_seq)

    def version(self, search_id: str) -> int:
        return self.log.version(search_id)

    def searches(self) -> list[str]:
        return self.log.searches()

    def find_work(self, key: str) -> list[dict]:
        """The Executor's cache entries of trials that did work ``key`` (its lookup of identical work),
        from an index this service folds on incrementally: every stream, whoever wrote it."""
        from trex.events.work_index import WorkIndex

        if not isinstance(key, str) or not 0 < len(key) <= 200:
            raise ValueError(f"invalid work key {str(key)[:80]!r}: a string of 1 to 200 characters")
        with self._work_lock:
            self._work = (self._work or WorkIndex()).update(self.log)
            return self._work.candidates(key)

    def stats(self) -> dict:
        """Append calls, groups written and events answered since this process started."""
        return {"appends": self.appends, "groups": self.groups, "events": self.events, "pid": os.getpid(),
                "home": self.home}

    def pid(self) -> int:
        return os.getpid()


def ensure_service(home: str | os.PathLike):
    """The home's log service, started (detached, pinned to this node) if it is not running.
    Call it on the node that holds the home."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from trex.actors.runtime import NAMESPACE

    home = os.path.abspath(os.fspath(home))
    cls = ray.remote(LogServiceShell)
    here = ray.get_runtime_context().get_node_id()
    h = cls.options(name=service_name(home), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                    max_restarts=-1, max_task_retries=-1, max_concurrency=CALLS, num_cpus=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote(home)
    return h


def find_service(home: str | os.PathLike):
    """The home's running log service, or None."""
    import ray

    from trex.actors.runtime import NAMESPACE

    try:
        return ray.get_actor(service_name(home), namespace=NAMESPACE)
    except ValueError:
        return None


class HomeNotHere(RuntimeError):
    """This node cannot see the home and no log service runs for it: its events would go nowhere."""


def holds_home(home) -> bool:
    """Whether this node has ``home``: its log folder is here (a bare folder at that path is not it)."""
    return os.path.isdir(os.path.join(os.path.abspath(os.fspath(home)), "log"))


def node_home(home) -> Path:
    """Where this node keeps the files it makes for ``home``: the home itself where this node sees
    it, else a node-local stand-in under the temp folder (its task data, caches, downloaded
    artifacts and base models). Events still go to the home through its log service, and
    adapters through the artifact store (``TREX_ARTIFACTS``: object storage on a cluster)."""
    from trex.events.fsio import ensure_dir

    p = Path(os.path.abspath(os.fspath(home)))
    if holds_home(p):
        return p
    import stat
    import tempfile

    # per user, 0700, owned by this user: the temp folder is shared with every user of the node,
    # and what is cached here (task data, downloaded base models) is trusted afterwards
    mine = ensure_dir(Path(tempfile.gettempdir()), f"trex-nodes-{os.getuid()}")
    st = os.lstat(mine)
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        if st.st_uid != os.getuid():
            raise HomeNotHere(f"{mine} belongs to another user: refusing to keep this node's files for {p} there")
        os.chmod(mine, 0o700)
    return ensure_dir(mine, service_name(p)[len("trex-log-"):])


def log_for(home, cache: dict | None = None):
    """How an actor reaches ``home``'s log: through its log service when one runs, else directly
    (a home without a service: a Ray instance started before it, or a test of the shells alone).
    A node that cannot see the home and finds no service raises :class:`HomeNotHere`."""
    from trex.events.log import EventLog

    key = os.path.abspath(os.fspath(home))
    if cache is not None and key in cache:
        return cache[key]
    h = find_service(key)
    if h is None and not holds_home(key):
        raise HomeNotHere(f"the home {key} is not on this node and no log service runs for it "
                          f"(searches start one; `trex-actors status` lists them)")
    log = RemoteLog(h, key) if h is not None else EventLog(key)
    if cache is not None and h is not None:  # a direct log is not cached: a service started later is found
        cache[key] = log
    return log


class RemoteLog:
    """The log as the actors use it, answered by the log service (the same results and errors)."""

    def __init__(self, handle, home: str | os.PathLike, wait_s: float = LOG_WAIT_S):
        self.handle = handle
        self.home = Path(home)
        self.wait_s = wait_s

    def _call(self, method: str, *args):
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

        deadline = time.monotonic() + self.wait_s
        delay = 0.05
        while True:
            left = deadline - time.monotonic()
            try:
                return ray.get(getattr(self.handle, method).remote(*args), timeout=max(left, 0.001))
            except GetTimeoutError:
                break
            except RayTaskError as e:  # the log's own answer (a conflict, bad input): raised as it was
                if isinstance(e.cause, Exception):
                    raise e.cause from None
                raise
            except (ActorDiedError, ActorUnavailableError, RayActorError):
                if time.monotonic() + delay >= deadline:
                    break
                time.sleep(delay)  # restarting: the same call again (idempotent by event id)
                delay = min(delay * 2, 2.0)
                h = find_service(self.home)
                if h is not None:
                    self.handle = h
        raise LogServiceUnavailable(f"the log service of {self.home} did not answer {method} within "
                                    f"{self.wait_s:.0f} s (is its node up? `trex-actors status`)")

    def append(self, search_id: str, events: Iterable, expected_version: int | None = None,
               causation_id: str | None = None, correlation_id: str | None = None):
        from trex.events.log import raws_of

        return self._call("append", search_id, raws_of(events, causation_id, correlation_id), expected_version, True)

    def append_raw(self, search_id: str, raws, expected_version: int | None = None):
        return self._call("append", search_id, list(raws), expected_version, False)

    def read(self, search_id=None, after_seq=0, until_seq=None):
        return self._call("read", search_id, after_seq, until_seq)

    def read_records(self, search_id=None, after_seq=0, until_seq=None):
        return self._call("read_records", search_id, after_seq, until_seq)

    def version(self, search_id: str) -> int:
        return self._call("version", search_id)

    def find_work(self, key: str) -> list[dict]:
        return self._call("find_work", key)

    def exists(self, search_id: str) -> bool:
        return self.version(search_id) > 0

    def searches(self) -> list[str]:
        return self._call("searches")

    def iter_events(self, search_id: str, until_seq: int | None = None) -> Iterator:
        for env in self.read(search_id, until_seq=until_seq):
            yield env, env.event
