"""Data files: the JSONL a prepared task keeps per split, and a user's own data files.

:func:`write_jsonl` writes under a temp name and renames (a reader never sees half a file);
:func:`read_rows` reads a user's ``.jsonl`` / ``.json`` / ``.csv`` into prompt/completion rows,
naming the file, line and field of whatever is wrong; :func:`read_input_file` reads a small file
a user names (a plan, a task file, an installed ``task.json``): a regular file, and at most
:data:`MAX_INPUT_BYTES`.
"""
from __future__ import annotations

import csv
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Sequence

from trex.events.errors import LinkRefused

MAX_INPUT_BYTES = 16 * 1024 * 1024  # a plan, a task file, an installed task.json: real ones are a few KiB


class InputFileError(ValueError):
    """A file a user named that cannot be read as one: missing, not a regular file, too large. The
    message names the file and what is wrong, in one line."""


def read_input_file(path: str | os.PathLike, what: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of the ``what`` (e.g. "plan", "task file") at ``path``: opened once without blocking and
    then checked, so a FIFO with no writer cannot hang the open and a path swapped after a check is seen;
    a folder, pipe, device or socket is refused before anything is read, and so is a file larger than
    ``limit`` (``/dev/zero`` or a huge file would be read until memory runs out). :class:`InputFileError`."""
    try:  # a link is followed: the file is only read
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such {what}") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise InputFileError(f"{path}: is a folder, not a {what}")
        raise InputFileError(f"{path}: not a regular file (a pipe, a device or a socket); the {what} must be a "
                             "regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise InputFileError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    if len(data) > limit:
        raise InputFileError(f"{path}: the {what} is larger than {limit // (1024 * 1024)} MiB "
                             f"({limit} bytes): refused")
    return data


def long_number_line(text: str) -> int | None:
    """The line of the first run of more digits than Python converts to an int
    (``sys.get_int_max_str_digits``) in ``text``, or None."""
    limit = sys.get_int_max_str_digits()
    if not limit:
        return None
    m = re.search(r"\d{%d}" % (limit + 1), text)
    return None if m is None else text.count("\n", 0, m.start()) + 1


def too_long_number(e: ValueError) -> str | None:
    """When ``e`` (from parsing JSON or YAML) is Python refusing an integer of too many digits, one
    line saying so (in place of its advice to call ``sys.set_int_max_str_digits``), else None."""
    if isinstance(e, json.JSONDecodeError) or "integer string conversion" not in str(e):
        return None
    return f"a number with more than {sys.get_int_max_str_digits()} digits (not a value trex reads)"


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
            text = path.read_text(encoding="utf-8")
            try:
                raw = json.loads(text)
            except ValueError as e:  # a number of thousands of digits: say where, not Python's advice
                long = too_long_number(e)
                if long is None:
                    raise
                line = long_number_line(text)
                raise KeyError(f"{path}: {f'line {line}: ' if line else ''}{long}") from None
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
                        except ValueError as e:  # an integer of more digits than Python converts
                            why = too_long_number(e) or " ".join(str(e).split())
                            raise KeyError(f"{path}: line {i}: {why}") from None
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
