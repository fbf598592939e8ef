"""Event base class, the registry of event types and the upcasters.

Every payload is a frozen pydantic model with ``extra="forbid"``. The registry
maps a type name to (class, current schema version). Stored events carry the
version they were written with; on read, upcasters ``upcast_vN_vN+1(dict) -> dict``
are applied in order until the current version is reached. A stored version
newer than the code knows is a hard error, never a silent guess.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from trex.events.errors import EventError  # defined without dependencies; re-exported here


class UnknownEventType(EventError):
    pass


class SchemaTooNew(EventError):
    pass


class InvalidPayload(EventError):
    pass


class Event(BaseModel):
    """Base of all event payloads. Subclasses are registered with :func:`event`."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True)
class _Entry:
    cls: type[Event]
    version: int


_REGISTRY: dict[str, _Entry] = {}
_UPCASTERS: dict[tuple[str, int], Callable[[dict], dict]] = {}


def event(type_name: str, version: int = 1):
    """Class decorator: register an event payload class under ``type_name``."""

    def deco(cls: type[Event]) -> type[Event]:
        if type_name in _REGISTRY and _REGISTRY[type_name].cls is not cls:
            raise EventError(f"event type {type_name!r} registered twice")
        cls.TYPE = type_name
        cls.VERSION = version
        _REGISTRY[type_name] = _Entry(cls, version)
        return cls

    return deco


def upcaster(type_name: str, from_version: int):
    """Register a pure function turning a v``from_version`` payload dict into v``from_version+1``."""

    def deco(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
        _UPCASTERS[(type_name, from_version)] = fn
        return fn

    return deco


def registered_types() -> dict[str, tuple[type[Event], int]]:
    _load_families()
    return {k: (v.cls, v.version) for k, v in sorted(_REGISTRY.items())}


def lookup(type_name: str) -> tuple[type[Event], int]:
    _load_families()
    entry = _REGISTRY.get(type_name)
    if entry is None:
        close = difflib.get_close_matches(str(type_name), list(_REGISTRY), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else f" ({len(_REGISTRY)} types are known)"
        raise UnknownEventType(f"unknown event type {str(type_name)[:80]!r}{hint}")
    return entry.cls, entry.version


def upcast(type_name: str, version: int, payload: dict) -> dict:
    """Bring a stored payload dict up to the current version of its type."""
    cls, current = lookup(type_name)
    if version > current:
        raise SchemaTooNew(
            f"event type {type_name!r} stored at schema version {version}, but this trex knows only "
            f"up to version {current}: upgrade trex to read this log"
        )
    if version < 1:
        raise InvalidPayload(f"event type {type_name!r} has invalid schema version {version}")
    while version < current:
        fn = _UPCASTERS.get((type_name, version))
        if fn is None:
            raise EventError(f"no upcaster for {type_name!r} v{version} -> v{version + 1}")
        try:
            payload = fn(dict(payload))
        except (TypeError, AttributeError, KeyError, ValueError) as e:  # a payload the old version never wrote
            raise InvalidPayload(f"event type {type_name!r} v{version}: cannot be read ({type(e).__name__}: {e})") \
                from None
        version += 1
    return payload


def validation_errors(e: ValidationError, limit: int = 5) -> str:
    """A pydantic ``ValidationError``'s first ``limit`` errors on one line: ``loc: msg; loc: msg``."""
    return "; ".join(f"{'.'.join(map(str, x['loc'])) or '<root>'}: {x['msg']}" for x in e.errors()[:limit])


def decode(type_name: str, version: int, payload: dict) -> Event:
    cls, _ = lookup(type_name)
    data = upcast(type_name, version, payload)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise InvalidPayload(f"invalid payload for {type_name!r}: {validation_errors(e)}") from None


def encode_json(ev: Event) -> tuple[str, int, str]:
    """(type, version, payload as JSON text): the form the log stores and hashes."""
    if not isinstance(ev, Event) or not ev.TYPE:
        raise EventError(f"{type(ev).__name__} is not a registered event")
    return ev.TYPE, ev.VERSION, ev.model_dump_json()


def encode(ev: Event) -> tuple[str, int, dict[str, Any]]:
    """(type, version, json-ready payload) for an event instance."""
    if not isinstance(ev, Event) or not ev.TYPE:
        raise EventError(f"{type(ev).__name__} is not a registered event")
    # via JSON so that NaN/inf serialise as strings (ser_json_inf_nan) instead of failing
    return ev.TYPE, ev.VERSION, json.loads(ev.model_dump_json())


_LOADED = False


def _load_families() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from trex.events import families  # noqa: F401  (registers every family)
