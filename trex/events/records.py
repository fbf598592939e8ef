"""The open segment's record format and the one scanner every reader of it uses.

Kept free of pydantic and pyarrow (``trex sql`` imports it). Two formats exist:

* **v1** (segments written before the format version): no header; one line per append call,
  ``CRC32(8 hex) SPACE JSON-ARRAY \\n``. Still read, never written.
* **v2**: the file starts with the line ``trex-log-segment v2\\n``; then one record per append
  call, ``~ LEN(8 hex) SPACE CRC32(8 hex) SPACE BODY \\n`` (no spaces after ``~``), where BODY is
  LEN bytes of JSON (an array of event records, never holding a raw newline) and the CRC is over BODY.

Only an *incomplete final record* is a torn tail (an append that crashed before it was
acknowledged): the bytes after the last good record are a strict prefix of a record (a header
prefix, or a complete header whose length runs past the end of the file) and hold no newline.
Anything else that is not a valid record — a checksum that does not match, a record not ended
where its length says, garbage, a record whose JSON is not events — is **damage**: readers raise
:class:`CorruptLog` naming the segment and byte offset; ``verify --repair`` quarantines it.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from trex.events.errors import CorruptLog

MAGIC = b"trex-log-segment v"
HEADER_V2 = MAGIC + b"2\n"
CURRENT = 2
_HDR = 19  # len(b"~LLLLLLLL CCCCCCCC ")
_HDR_RE = re.compile(rb"~([0-9a-f]{8}) ([0-9a-f]{8}) ")
_HDR_SHAPE = b"~hhhhhhhh hhhhhhhh "
_HEX = frozenset(b"0123456789abcdef")
KEYS = frozenset(("position", "search_id", "seq", "event_id", "type", "schema_version", "recorded_at",
                  "causation_id", "correlation_id", "payload", "prev_hash", "hash"))


def _dumps(records: Sequence[dict]) -> bytes:
    return json.dumps(list(records), separators=(",", ":"), ensure_ascii=False).encode()


def encode_record(records: Sequence[dict]) -> bytes:
    """One v2 record (one append call)."""
    body = _dumps(records)
    return b"~%08x %08x " % (len(body), zlib.crc32(body)) + body + b"\n"


def encode_line_v1(records: Sequence[dict]) -> bytes:
    """One v1 line: kept to write test fixtures of segments made before the format version."""
    body = _dumps(records)
    return b"%08x " % zlib.crc32(body) + body + b"\n"


@dataclass
class Damage:
    offset: int  # absolute byte offset in the segment
    end: int
    reason: str


@dataclass
class Scan:
    version: int | None  # None: an empty segment (or a torn header), no format yet
    records: list[dict] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # each good record's JSON text (an array)
    end: int = 0  # absolute offset just past the last good record (where the next append goes)
    torn: int = 0  # bytes after ``end`` that are an incomplete final record
    damage: list[Damage] = field(default_factory=list)  # only filled when salvaging
    good: list[tuple[int, int]] = field(default_factory=list)  # byte spans of good records (salvage)


def read_segment(path: Path, offset: int = 0) -> bytes:
    """The bytes of an open segment from ``offset``, never through a link."""
    from trex.events.fsio import open_nofollow

    with os.fdopen(open_nofollow(path, os.O_RDONLY), "rb") as f:
        if offset:
            f.seek(offset)
        return f.read()


def detect(data: bytes) -> tuple[int | None, int, int]:
    """(version, where records start, torn bytes) of a segment from its first bytes."""
    if not data:
        return None, 0, 0
    if data.startswith(MAGIC):
        nl = data.find(b"\n")
        if nl < 0:
            if HEADER_V2.startswith(data):
                return None, 0, len(data)  # a crash while the header was written
            raise CorruptLog("damaged segment header at byte 0")
        ver = data[len(MAGIC):nl]
        if not ver.isdigit():
            raise CorruptLog("damaged segment header at byte 0")
        if int(ver) > CURRENT:
            raise CorruptLog(f"segment format v{int(ver)} is newer than this trex knows (v{CURRENT}): upgrade trex")
        if int(ver) != 2:
            raise CorruptLog(f"unknown segment format v{int(ver)} at byte 0")
        return 2, nl + 1, 0
    if HEADER_V2.startswith(data):
        return None, 0, len(data)
    return 1, 0, 0


def _records(body: bytes) -> list[dict] | str:
    try:
        recs = json.loads(body)
    except (ValueError, RecursionError):
        return "record passes its checksum but is not JSON"
    if not isinstance(recs, list) or not recs:
        return "record passes its checksum but does not hold a list of events"
    for r in recs:
        if not isinstance(r, dict) or r.keys() != KEYS:
            return "record passes its checksum but does not hold events"
        for k in ("position", "seq", "schema_version"):
            if type(r[k]) is not int:
                return f"record passes its checksum but its {k} is not an integer"
    return recs


def _v2_at(data: bytes, pos: int):
    """('ok', end, body) | ('torn',) | ('bad', reason) for the record at ``pos``."""
    n = len(data)
    head = data[pos:pos + _HDR]
    if len(head) < _HDR:
        if all(c in _HEX if s == 0x68 else c == s for c, s in zip(head, _HDR_SHAPE)):
            return ("torn",)
        return ("bad", "malformed record header")
    m = _HDR_RE.fullmatch(head)
    if m is None:
        return ("bad", "malformed record header")
    end = pos + _HDR + int(m[1], 16) + 1
    if end > n:
        if data.find(b"\n", pos) < 0:
            return ("torn",)
        return ("bad", "record length runs past the next record")
    if data[end - 1] != 0x0A:
        return ("bad", "record not terminated where its length says")
    body = data[pos + _HDR:end - 1]
    if zlib.crc32(body) != int(m[2], 16):
        return ("bad", "checksum mismatch")
    return ("ok", end, body)


def _v1_at(data: bytes, pos: int):
    nl = data.find(b"\n", pos)
    if nl < 0:
        return ("torn",)  # v1 cannot tell more: an unterminated final line is an append that never finished
    line = data[pos:nl]
    try:
        ok = len(line) > 9 and line[8:9] == b" " and int(line[:8], 16) == zlib.crc32(line[9:])
    except ValueError:
        ok = False
    if not ok:
        return ("bad", "checksum mismatch or malformed line")
    return ("ok", nl + 1, line[9:])


def _resync(data: bytes, pos: int, at) -> int:
    """The next offset after ``pos`` where a valid record (or a torn final one) starts, or len(data)."""
    marker = b"\n~" if at is _v2_at else b"\n"
    i = pos
    while True:
        j = data.find(marker, i)
        if j < 0:
            return len(data)
        c = j + 1
        r = at(data, c)
        if r[0] == "torn" or (r[0] == "ok" and not isinstance(_records(r[2]), str)):
            return c
        i = c


def scan(data: bytes, name: str, base: int = 0, version: int | None = None, salvage: bool = False) -> Scan:
    """Scan an open segment's bytes (``data`` starts at absolute offset ``base``).

    With ``base == 0`` the format is detected from the header; a later ``base`` needs the
    ``version`` found then. Damage raises :class:`CorruptLog` (segment and byte offset in
    the message) unless ``salvage``, which records it in ``Scan.damage`` and reads on.
    """
    def fail(off: int, reason: str):
        raise CorruptLog(f"segment {name}: damaged record at byte {off}: {reason} "
                         "(`trex verify --repair` moves it to the quarantine)")

    start = 0
    if base == 0:
        try:
            version, start, torn = detect(data)
        except CorruptLog as e:
            if not salvage:
                raise CorruptLog(f"segment {name}: {e}") from None
            return Scan(None, damage=[Damage(0, len(data), str(e))])
        if version is None:
            return Scan(None, end=0, torn=torn)
    elif version is None:
        raise ValueError("a scan from a later offset needs the segment's version")
    at = _v2_at if version == 2 else _v1_at
    out = Scan(version, end=base + start)
    pos, n = start, len(data)
    while pos < n:
        r = at(data, pos)
        if r[0] == "ok":
            recs = _records(r[2])
            if not isinstance(recs, str):
                out.records.extend(recs)
                out.bodies.append(r[2])
                if salvage:
                    out.good.append((base + pos, base + r[1]))
                pos = r[1]
                out.end = base + pos
                continue
            r = ("bad", recs)
        if r[0] == "torn":
            out.torn = n - pos
            break
        if not salvage:
            fail(base + pos, r[1])
        nxt = _resync(data, pos, at)
        out.damage.append(Damage(base + pos, base + nxt, r[1]))
        pos = nxt
    return out
