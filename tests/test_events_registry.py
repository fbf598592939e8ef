"""The registry, upcasters and schema versions."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from trex.events.base import (
    Event, EventError, SchemaTooNew, UnknownEventType, decode, event, lookup, registered_types, upcaster,
)
from trex.events.envelope import RawEvent, canonical_json
from trex.events.notes import NoteAdded


@event("TestThresholdChanged", version=3)
class ThresholdChanged(Event):
    """v1 had ``limit``; v2 renamed it ``threshold``; v3 added ``unit``."""

    threshold: float
    unit: str


@upcaster("TestThresholdChanged", 1)
def upcast_v1_v2(d: dict) -> dict:
    d["threshold"] = d.pop("limit")
    return d


@upcaster("TestThresholdChanged", 2)
def upcast_v2_v3(d: dict) -> dict:
    return {**d, "unit": "s"}


def test_families_are_registered_with_versions():
    types = registered_types()
    for name in ["SearchStarted", "SearchForked", "PlanProposed", "LlmCallMade", "TrialStarted",
                 "TrialFinished", "TrialFailed", "MetricRecorded", "InsightDistilled", "NoteAdded"]:
        cls, version = types[name]
        assert cls.TYPE == name and version >= 1
        assert cls.model_config["frozen"] and cls.model_config["extra"] == "forbid"


def test_upcasters_apply_in_order_on_read(log):
    ev = decode("TestThresholdChanged", 1, {"limit": 2.5})
    assert ev == ThresholdChanged(threshold=2.5, unit="s")
    log.append_raw("s", [RawEvent("e1", "TestThresholdChanged", 1, canonical_json({"limit": 1.0}), "2026-01-01T00:00:00Z")])
    env = log.read("s")[0]
    assert env.schema_version == 1  # stored as written, never rewritten
    assert env.event == ThresholdChanged(threshold=1.0, unit="s")


def test_too_new_and_unknown_are_hard_errors():
    with pytest.raises(SchemaTooNew):
        decode("TestThresholdChanged", 4, {})
    with pytest.raises(UnknownEventType):
        lookup("Nope")


def test_events_are_frozen_and_strict():
    n = NoteAdded(text="x")
    with pytest.raises(ValidationError):
        n.text = "y"
    with pytest.raises(ValidationError):
        NoteAdded(text="x", extra_field=1)
    with pytest.raises(EventError, match="registered twice"):
        event("NoteAdded")(type("Other", (Event,), {}))
