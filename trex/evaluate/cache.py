"""Scores already computed: an adapter on a split is evaluated once, whoever asks again.

A plan trained twice is served from the Executor's cache; its evaluation was not, and it is
most of the time of a repeated ``trex train`` or a reused trial. The key covers everything a
score depends on: the adapter's content hash (or the base model), the split's content and the
decoding settings (:meth:`EvalSpec.fingerprint`: examples, template, max new tokens, stop,
BOS, metrics), the backend (transformers and vLLM may differ in the last digit) and the base
model by content (its folder's hash, as the Executor's work key has it). An entry is a small JSON file under ``HOME/cache/evals/`` naming the outputs
artifact (which holds every per-example score) and the metrics; written atomically, never
through a link; the key is a hash, so nothing from outside becomes a path.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from trex.events.envelope import canonical_json


def cache_key(adapter_hash: str | None, spec_fingerprint: str, backend: str, base_model: str) -> str:
    body = {"adapter": adapter_hash or "base", "spec": spec_fingerprint, "backend": backend,
            "base_model": base_model}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def base_identity(base_model: str) -> str:
    """The base model by content (its folder's hash) where it is a folder here, else as named."""
    from trex.artifacts import base_model_hash

    p = Path(base_model) if base_model else None
    if p is not None and p.is_dir():
        return base_model_hash(p)
    return str(base_model)


def _path(home: Path, key: str) -> Path:
    return Path(home) / "cache" / "evals" / f"{key}.json"


def lookup(home: Path, key: str) -> dict[str, Any] | None:
    """The cached entry, or None (a missing, unreadable or dangling entry is a miss)."""
    p = _path(home, key)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            entry = json.loads(f.read())
        except ValueError:
            return None
    if not isinstance(entry, dict) or not isinstance(entry.get("outputs_artifact"), str):
        return None
    art = Path(home) / "artifacts" / entry["outputs_artifact"]
    if not isinstance(entry.get("metrics"), dict) or not art.is_file() or art.is_symlink():
        return None
    return entry


def store(home: Path, key: str, entry: dict[str, Any]) -> bool:
    """Record an entry; False (nothing written) when it cannot be: a full disk, or a link in the way
    (checked before any folder is made, and said in one line on stderr: a cache entry is never
    written through a link, nor is the link replaced)."""
    import sys

    from trex.events.errors import EventError
    from trex.events.fsio import write_file_under

    try:
        write_file_under(home, _path(home, key), json.dumps(entry, sort_keys=True).encode())
        return True
    except EventError as e:  # a link in the way (LinkRefused), a file where a folder should be
        print(f"trex: evaluation cache entry not written: {e}", file=sys.stderr, flush=True)
        return False
    except OSError:
        return False
