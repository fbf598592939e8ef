"""Data files: the JSONL a prepared task keeps per split, and a user's own data files.

:func:`write_jsonl` writes under a temp name and renames (a reader never sees half a file);
:func:`read_rows` reads a user's ``.jsonl`` / ``.json`` / ``.csv`` into prompt/completion rows,
naming the file, line and field of whatever is wrong.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Sequence

from trex.events.errors import LinkRefused


class DataLinkRefused(LinkRefused, ValueError):
    """A link where task data would be written: a ``LinkRefused`` that is also the ``ValueError``
    :func:`write_jsonl` raised for it before."""


def write_jsonl(rows: Sequence[dict], path: Path, home: str | os.PathLike | None = None) -> Path:
    """Atomically (temp file, fsync, rename), never through a link: a link at ``path`` is refused
    (:class:`~trex.events.errors.LinkRefused`), and so is one on the way from ``home`` (when given and
    ``path`` lies under it; otherwise the file's own folder) — the folders are made without following one."""
    from trex.events.fsio import ensure_dir_for, write_file_replace

    path = Path(path)
    try:
        ensure_dir_for(path.parent, home)
        write_file_replace(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode("utf-8"))
    except LinkRefused as e:
        raise DataLinkRefused(str(e)) from None
    return path


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_rows(path: Path, prompt_field: str = "prompt", completion_field: str = "completion") -> list[dict]:
    """A user's data file (``.jsonl``, ``.json`` list, or ``.csv``) → ``{"prompt", "completion"}`` rows.

    Raises ``KeyError`` naming the file, the row and the missing field."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet's byte-order mark
                raw = list(csv.DictReader(f))
        elif suffix == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, list):
                raise KeyError(f"{path}: a .json data file holds a list of objects")
        else:
            raw = []
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            raw.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise KeyError(f"{path}: line {i} is not JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KeyError(f"{path}: cannot read ({e})") from None
    rows = []
    for i, r in enumerate(raw, 1):
        if not isinstance(r, dict) or prompt_field not in r or completion_field not in r:
            raise KeyError(f"{path}: row {i} lacks {prompt_field!r} or {completion_field!r}")
        rows.append({"prompt": str(r[prompt_field]), "completion": str(r[completion_field])})
    if not rows:
        raise KeyError(f"{path}: no rows")
    return rows
