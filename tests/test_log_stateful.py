"""Hypothesis stateful test: random interleavings of appends (from two handles, as two processes
would), conflicting appends, duplicate retries, seals and reads, checked against a simple model."""
from __future__ import annotations

import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trex.events import log as logmod
from trex.events.envelope import NewEvent
from trex.events.log import ConcurrencyConflict, EventLog
from trex.events.notes import NoteAdded
from trex.events.verify import verify

STREAMS = st.sampled_from(["a", "b", "c"])


class LogMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.handles = [EventLog(self.dir), EventLog(self.dir)]
        self.model: dict[str, list[str]] = {}  # stream -> texts
        self.sent: list[tuple[str, list[NewEvent]]] = []
        self.counter = 0

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _batch(self, n):
        out = []
        for _ in range(n):
            self.counter += 1
            out.append(NewEvent(NoteAdded(text=f"t{self.counter}")))
        return out

    @rule(h=st.integers(0, 1), stream=STREAMS, n=st.integers(1, 4), use_version=st.booleans())
    def append(self, h, stream, n, use_version):
        batch = self._batch(n)
        expected = len(self.model.get(stream, [])) if use_version else None
        out = self.handles[h].append(stream, batch, expected_version=expected)
        self.model.setdefault(stream, []).extend(e.payload.text for e in batch)
        assert [e.seq for e in out] == list(range(len(self.model[stream]) - n + 1, len(self.model[stream]) + 1))
        self.sent.append((stream, batch))

    @rule(h=st.integers(0, 1), stream=STREAMS, stale=st.integers(1, 3))
    def conflicting_append(self, h, stream, stale):
        current = len(self.model.get(stream, []))
        wrong = current + stale if current == 0 else max(0, current - stale)
        if wrong == current:
            wrong = current + 1
        try:
            self.handles[h].append(stream, self._batch(2), expected_version=wrong)
        except ConcurrencyConflict:
            return
        raise AssertionError("a stale expected version was accepted")

    @precondition(lambda self: self.sent)
    @rule(h=st.integers(0, 1), data=st.data())
    def retry_duplicate(self, h, data):
        stream, batch = data.draw(st.sampled_from(self.sent))
        out = self.handles[h].append(stream, batch, expected_version=0)  # idempotent despite the stale version
        assert [e.event_id for e in out] == [e.event_id for e in batch]

    @rule(h=st.integers(0, 1))
    def seal(self, h):
        self.handles[h].seal()

    @rule(h=st.integers(0, 1), stream=STREAMS)
    def read_stream(self, h, stream):
        envs = self.handles[h].read(stream)
        assert [e.event.text for e in envs] == self.model.get(stream, [])
        assert [e.seq for e in envs] == list(range(1, len(envs) + 1))

    @invariant()
    def positions_gapless(self):
        envs = self.handles[0].read()
        assert [e.position for e in envs] == list(range(1, len(envs) + 1))
        assert sum(map(len, self.model.values())) == len(envs)

    def check_verify(self):
        assert verify(self.handles[1]).ok


LogMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class TestLogStateful(LogMachine.TestCase):
    pass


class SmallSegmentsMachine(LogMachine):
    def __init__(self):
        super().__init__()
        self._old = logmod.SEAL_EVENTS
        logmod.SEAL_EVENTS = 4

    def teardown(self):
        assert verify(self.handles[0]).ok
        logmod.SEAL_EVENTS = self._old
        super().teardown()


SmallSegmentsMachine.TestCase.settings = LogMachine.TestCase.settings


class TestLogStatefulSmallSegments(SmallSegmentsMachine.TestCase):
    pass
