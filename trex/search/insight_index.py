"""The home's insights by task: a fold over insight events only, instead of a fold of every search.

A new search reads the insights earlier searches on its task left in force. Building every
search's tree for that (as the Researcher did, once per proposal) costs the whole home per
proposal. This index folds only ``SearchStarted``/``SearchForked`` (which task a stream is
about) and ``InsightDistilled``/``InsightRetired``, skipping every other record without
decoding its payload, and is folded on: :func:`refresh` folds only records the index has not
seen (by stream and seq), so a long-lived Researcher keeps one and decodes only new events.

An insight is in force for a task until the search that distilled it retires it (a fork's
distiller retires what it inherited by id, which is not evidence against the parent's insight).
Reads: :func:`refresh` reads the home's records (the log's incremental reads make that cheap for
sealed segments that hold nothing new; the open segment is decoded once per ``EventLog``) and
decodes only the insight and start events among them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Iterable, Mapping

_TYPES = frozenset({"SearchStarted", "SearchForked", "InsightDistilled", "InsightRetired"})


@dataclass(frozen=True)
class InsightIndex:
    task_of: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # stream -> task
    parent_of: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # fork -> parent stream
    in_force: Mapping[str, tuple[str, str, str]] = field(
        default_factory=lambda: MappingProxyType({}))  # insight id -> (task, source stream, text)
    seen: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # stream -> last seq folded


def _task(index_task: dict, parents: dict, sid: str) -> str:
    seen = set()
    while sid and sid not in index_task and sid in parents and sid not in seen:
        seen.add(sid)
        sid = parents[sid]
    return index_task.get(sid, "")


def fold_records(index: InsightIndex, records: Iterable[Mapping]) -> InsightIndex:
    """The index after ``records`` (log records: search_id, seq, type, payload). Pure."""
    task_of, parent_of, in_force, seen = (dict(index.task_of), dict(index.parent_of), dict(index.in_force),
                                          dict(index.seen))
    for r in records:
        sid, seq = r["search_id"], int(r["seq"])
        if seq <= seen.get(sid, 0):
            continue
        seen[sid] = seq
        t = r["type"]
        if t not in _TYPES:
            continue
        d = json.loads(r["payload"]) if isinstance(r["payload"], (str, bytes)) else dict(r["payload"])
        if t == "SearchStarted":
            task_of[sid] = d.get("task", "")
        elif t == "SearchForked":
            parent_of[sid] = d.get("parent_search_id", "")
        elif t == "InsightDistilled":
            task = d.get("task") or _task(task_of, parent_of, sid)
            in_force[d["insight_id"]] = (task, sid, d.get("text", ""))
        else:  # InsightRetired: only by the search that distilled it (a fork's distiller retires what it
            # inherited by id, which says nothing of the parent's evidence)
            held = in_force.get(d["insight_id"])
            if held is not None and held[1] == sid:
                del in_force[d["insight_id"]]
    return replace(index, task_of=MappingProxyType(task_of), parent_of=MappingProxyType(parent_of),
                   in_force=MappingProxyType(in_force), seen=MappingProxyType(seen))


def refresh(index: InsightIndex, log) -> InsightIndex:
    """Fold in what ``log`` holds beyond the index (records already folded are skipped by seq)."""
    return fold_records(index, log.read_records())


def prior_insights(index: InsightIndex, task: str, exclude: str) -> dict[str, str]:
    """Insights in force on ``task`` from streams other than ``exclude``, each prefixed with its source."""
    return {iid: f"[{src}] {text}" for iid, (t, src, text) in sorted(index.in_force.items())
            if t == task and src != exclude}
