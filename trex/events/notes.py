"""Operator notes: the simplest event there is."""
from __future__ import annotations

from pydantic import Field

from trex.events.base import Event, event


@event("NoteAdded")
class NoteAdded(Event):
    text: str = Field(min_length=1, max_length=10_000)
    author: str = ""
