"""Insights distilled from results: short, falsifiable, citing the nodes that support them."""
from __future__ import annotations

from trex.events.base import Event, event


@event("InsightDistilled")
class InsightDistilled(Event):
    insight_id: str
    text: str
    support: tuple[str, ...] = ()  # node ids
    source_search_id: str = ""
    task: str = ""


@event("InsightRetired")
class InsightRetired(Event):
    insight_id: str
    reason: str = ""
