"""The append-only event log: the only source of truth in trex.

Public API::

    from trex.events import EventLog, NewEvent, Envelope
    log = EventLog(home)
    log.append(search_id, [SearchStarted(task="arith-sub")], expected_version=0)
    for env in log.read(search_id): env.event  # typed, upcast payload

Names are resolved lazily so that ``trex sql`` (which needs only
:mod:`trex.events.layout` and DuckDB) does not pay for pydantic and pyarrow.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Event": "base", "EventError": "base", "InvalidPayload": "base", "SchemaTooNew": "base",
    "UnknownEventType": "base", "decode": "base", "encode": "base", "event": "base",
    "registered_types": "base", "upcaster": "base",
    "Envelope": "envelope", "NewEvent": "envelope", "RawEvent": "envelope", "new_id": "envelope",
    "LinkRefused": "errors", "LockTimeout": "errors",
    "ConcurrencyConflict": "log", "CorruptLog": "log", "EventLog": "log", "UnknownSearch": "log",
    "default_home": "log",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'trex.events' has no attribute {name!r}")
    return getattr(importlib.import_module(f"trex.events.{mod}"), name)
