"""A stable, canonical form of a tree and its sha256.

The canonical form is JSON with sorted keys, no whitespace and ``ensure_ascii``;
floats are written by Python's shortest round-trip ``repr`` (never by locale),
NaN and infinities as the tokens ``NaN``/``Infinity``/``-Infinity``; tuples are
arrays. It is the tree-level fields, then one line per node in creation order.
Everything in the tree is in it. Wall-clock times are not, because the tree
holds none: ``recorded_at`` is not part of the tree's semantics, so the same
events recorded at other times give the same tree hash.
"""
from __future__ import annotations

import hashlib
import json
from types import MappingProxyType
from typing import Any, Iterator

from trex.search.tree import SearchTree

HASH_VERSION = 5  # 5: constraints (SearchStarted.constraints, Node.infeasible); 4: held-out test results (tree.heldout) and heldout_k; 3: the typed SearchStarted (v2); 2: base score, open trials, outputs,
# counters (bump when the canonical form changes)


def _default(x: Any) -> Any:
    if isinstance(x, MappingProxyType):
        return dict(x)
    if hasattr(x, "__dataclass_fields__"):
        return x.__dict__
    if hasattr(x, "model_dump"):  # a pydantic model the tree holds (SearchStarted)
        return x.model_dump(mode="json")
    raise TypeError(f"cannot serialise {type(x).__name__}")


def _dumps(x: Any) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_default)


def canonical_lines(tree: SearchTree) -> Iterator[str]:
    head = {k: getattr(tree, k) for k in SearchTree.__dataclass_fields__ if k not in ("nodes", "children")}
    head["children"] = {("" if k is None else k): v for k, v in tree.children.items()}
    yield _dumps({"hash_version": HASH_VERSION, "tree": head})
    for nid in tree.order:
        yield _dumps(tree.nodes[nid].__dict__)


def canonical(tree: SearchTree) -> str:
    return "\n".join(canonical_lines(tree))


def tree_hash(tree: SearchTree) -> str:
    h = hashlib.sha256()
    for line in canonical_lines(tree):
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


def tree_to_dict(tree: SearchTree) -> dict[str, Any]:
    """The tree as plain JSON-ready data (what ``trex tree --format json`` prints)."""
    d = json.loads(_dumps({k: getattr(tree, k) for k in SearchTree.__dataclass_fields__ if k not in ("nodes", "children")}))
    d["children"] = {("" if k is None else k): list(v) for k, v in tree.children.items()}
    d["nodes"] = [json.loads(_dumps(tree.nodes[nid].__dict__)) for nid in tree.order]
    d["best_score"] = tree.best_score  # validation (selection)
    d["test_score"] = tree.test_score  # held out: the chosen node's test score
    return d
