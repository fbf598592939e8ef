"""Reading a search back: resolving forks, folding, and forking.

A fork's stream starts with ``SearchForked(parent_search_id, at_seq, at_node)``.
Its events are the parent's events with ``seq <= at_seq`` (resolved the same
way when the parent is itself a fork), then its own. ``until`` always counts in
the stream asked for.

``at_seq`` of a new fork is the seq, in the parent's own stream, of the last
event about the forked node (its evaluation, typically); when that event lies in
the parent's own fork prefix, it is 1 (the parent's SearchForked). So forking
the same node twice gives the same prefix even while the parent keeps running,
and the fork sees everything the parent knew when the node got its last update.
"""
from __future__ import annotations

import json

from trex.events.base import EventError, upcast
from trex.events.envelope import Envelope, new_id
from trex.events.log import MAX_SEARCH_ID_LEN, EventLog, UnknownSearch
from trex.events.search import MAX_FORK_DEPTH, Budget, SearchForked
from trex.events.transfer import lineage
from trex.search.projection import fold
from trex.search.tree import SearchTree


class ReplayError(EventError):
    """A bad request (unknown node, a position past the end, a fork cycle)."""


def load_events(log: EventLog, search_id: str, until: int | None = None, _depth: int = 0) -> list[Envelope]:
    """The events that make up ``search_id``'s tree (fork prefixes resolved), in fold order."""
    if _depth > MAX_FORK_DEPTH:
        raise ReplayError(f"fork chain deeper than {MAX_FORK_DEPTH} at {search_id!r} (a cycle?)")
    own = log.read(search_id)
    if not own:
        raise UnknownSearch(f"no search {search_id!r} in {log.home}")
    end = own[-1].seq
    if until is not None:
        if until < 0 or until > end:
            raise ReplayError(f"search {search_id!r} has events 1..{end}: position {until} is out of range")
        own = [e for e in own if e.seq <= until]
    if own and own[0].type == "SearchForked":
        d = upcast("SearchForked", own[0].schema_version, json.loads(own[0].payload))
        try:
            prefix = load_events(log, d["parent_search_id"], d["at_seq"], _depth + 1)
        except UnknownSearch:
            raise ReplayError(f"search {search_id!r} forks from {d['parent_search_id']!r}, which this log "
                              f"does not hold (import it first)") from None
        return prefix + own
    return own


def fork_depth(log: EventLog, search_id: str) -> int:
    """How many forks ``search_id`` sits under (0 for a search that is no fork): its lineage, less itself."""
    return len(lineage(log, search_id)) - 1


def build_tree(log: EventLog, search_id: str, until: int | None = None) -> SearchTree:
    return fold(load_events(log, search_id, until))


def fork_point(log: EventLog, search_id: str, at_node: str, at_seq: int | None = None) -> tuple[int, SearchTree]:
    """(at_seq, the parent's tree at that point) for a fork of ``search_id`` at ``at_node``."""
    tree = build_tree(log, search_id)
    if at_seq is None:
        node = tree.nodes.get(at_node)
        if node is None:
            raise ReplayError(f"search {search_id!r} has no node {at_node!r}")
        at_seq = node.updated_seq if node.updated_in == search_id else 1
    elif at_seq < 1 or at_seq > log.version(search_id):
        raise ReplayError(f"search {search_id!r} has events 1..{log.version(search_id)}: "
                          f"cannot fork at position {at_seq}")
    prefix = build_tree(log, search_id, at_seq)
    if at_node not in prefix.nodes:
        raise ReplayError(f"search {search_id!r} has no node {at_node!r} at position {at_seq}")
    return at_seq, prefix


def fork(log: EventLog, search_id: str, at_node: str, new_search_id: str | None = None,
         at_seq: int | None = None, budget: Budget | None = None) -> Envelope:
    """Start a new search from ``search_id``'s prefix at ``at_node``; returns its first event."""
    at_seq, _ = fork_point(log, search_id, at_node, at_seq)
    depth = fork_depth(log, search_id)
    if depth + 1 > MAX_FORK_DEPTH:  # checked before the append: replay would refuse the new search
        raise ReplayError(f"search {search_id!r} already sits under {depth} forks: a fork of it would be "
                          f"{depth + 1} deep, past the {MAX_FORK_DEPTH} a replay follows (fork its root instead)")
    if new_search_id is None:
        node = at_node[:40]  # a node id from an imported log may be long: the generated id stays an id
        new = f"{search_id}~{node}~{new_id()[:8]}"
        if len(new) > MAX_SEARCH_ID_LEN:  # a long parent id: the generated id keeps the parent's head
            new = f"{search_id[:MAX_SEARCH_ID_LEN - len(node) - 10]}~{node}~{new_id()[:8]}"
    else:
        new = new_search_id
    if new == search_id:
        raise ReplayError("a fork needs a search id of its own")
    if log.exists(new):
        raise ReplayError(f"a search {new!r} exists already: a fork needs a new search id")
    ev = SearchForked(parent_search_id=search_id, at_seq=at_seq, at_node=at_node, budget=budget)
    return log.append(new, [ev], expected_version=0)[0]
