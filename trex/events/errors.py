"""The event layer's errors, in a module with no dependencies (``trex sql`` imports it without pydantic)."""
from __future__ import annotations


class EventError(Exception):
    """Base of every error the event layer raises."""


class CorruptLog(EventError):
    """The log holds bytes that are neither valid events nor a torn tail."""


class LinkRefused(EventError):
    """A path trex would write (or read as its own) under the home is a symbolic link: refused, never followed."""


class LockTimeout(EventError):
    """The append lock stayed held by another process past the wait limit."""
