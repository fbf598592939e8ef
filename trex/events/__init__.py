"""The append-only event log: the only source of truth in trex.

Public API::

    from trex.events import EventLog, NewEvent, Envelope
    log = EventLog(home)
    log.append(search_id, [SearchStarted(task="arith-sub")], expected_version=0)
    for env in log.read(search_id): env.event  # typed, upcast payload
"""
from trex.events.base import (
    Event,
    EventError,
    InvalidPayload,
    SchemaTooNew,
    UnknownEventType,
    decode,
    encode,
    event,
    registered_types,
    upcaster,
)
from trex.events.envelope import Envelope, NewEvent, RawEvent, new_id
from trex.events.log import ConcurrencyConflict, CorruptLog, EventLog, UnknownSearch, default_home

__all__ = [
    "ConcurrencyConflict", "CorruptLog", "Envelope", "Event", "EventError", "EventLog", "InvalidPayload",
    "NewEvent", "RawEvent", "SchemaTooNew", "UnknownEventType", "UnknownSearch", "decode", "default_home",
    "encode", "event", "new_id", "registered_types", "upcaster",
]
