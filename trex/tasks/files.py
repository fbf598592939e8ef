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


def write_jsonl(rows: Sequence[dict], path: Path) -> Path:
    """Atomically (temp file, fsync, rename), never through a link: a link at ``path`` is refused,
    and the temp file is created fresh (``O_EXCL | O_NOFOLLOW``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.parent.is_symlink():
        raise ValueError(f"{path}: is a symbolic link (or inside one): trex never writes through a link")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
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
