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
where its length says, garbage, a record whose JSON is not events (every field of every event is
checked: :func:`check_event_record`), a damaged segment header — is **damage**: readers raise
:class:`CorruptLog` naming the segment and byte offset; ``verify --repair`` quarantines it.

A damaged v2 header does not make a segment v1 (:func:`_detect`): the records after it are found
by their frames and read, and only the header's bytes are damage. After damage the scanner
resynchronises on the next valid v2 frame, wherever it starts.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass, field
from datetime import datetime
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


_HEADER_LEN = len(HEADER_V2)
HEADER_DAMAGE = "damaged segment header"  # how a damaged header's reason starts


class NewerFormat(CorruptLog):
    """A segment header naming a format newer than this trex: not damage, so never quarantined."""


def detect(data: bytes) -> tuple[int | None, int, int]:
    """(version, where records start, torn bytes) of a segment from its first bytes.

    Raises :class:`CorruptLog` for a damaged segment header (see :func:`_detect`, which also
    says where the records after a damaged v2 header start)."""
    version, start, torn, damage = _detect(data)
    if damage is not None:
        raise CorruptLog(damage.reason)
    return version, start, torn


def _header_reason(data: bytes) -> str:
    head = data[:_HEADER_LEN]
    diff = next((i for i, (a, b) in enumerate(zip(head, HEADER_V2)) if a != b), min(len(head), _HEADER_LEN))
    return f"{HEADER_DAMAGE}: byte {diff} differs from {HEADER_V2.decode()!r}"


def _first_v2_record(data: bytes, start: int, torn_at_start: bool = True) -> int | None:
    """Where the first valid v2 record at or after ``start`` begins (or, with ``torn_at_start``, a torn
    final one exactly at ``start``). A torn-looking frame found further on is not one: ``~`` and
    18 header-shaped bytes inside a damaged record's text (a note can hold them) would otherwise make
    the rest of that acknowledged record a "torn tail" that repair truncates."""
    if start < len(data) and (_v2_good_or_torn(data, start) if torn_at_start else _v2_good(data, start)):
        return start
    i = start
    while True:
        j = data.find(b"~", i)
        if j < 0:
            return None
        if _v2_good(data, j):
            return j
        i = j + 1


def _v2_good(data: bytes, pos: int) -> bool:
    r = _v2_at(data, pos)
    return r[0] == "ok" and not isinstance(_records(r[2]), str)


def _v2_good_or_torn(data: bytes, pos: int) -> bool:
    r = _v2_at(data, pos)
    return r[0] == "torn" or (r[0] == "ok" and not isinstance(_records(r[2]), str))


def _detect(data: bytes) -> tuple[int | None, int, int, Damage | None]:
    """(version, where records start, torn bytes, damaged header) of a segment.

    A header that is not ``trex-log-segment v2\\n`` (a flipped byte) does not make the
    segment v1: if v2 records follow it (the first one right after the header's 20 bytes, or,
    failing that, the first valid v2 record found anywhere), the segment is v2 with a damaged
    header — ``Damage`` over the bytes before its first record — and its records are read. A
    segment is v1 only if it starts with a valid v1 line, or holds no v2 record at all and does
    not start like a segment header. A header naming a newer format raises :class:`NewerFormat`.
    """
    if not data:
        return None, 0, 0, None
    if data.startswith(HEADER_V2):
        return 2, _HEADER_LEN, 0, None
    if HEADER_V2.startswith(data):
        return None, 0, len(data), None  # a crash while the header (and the first record) was written
    if data.startswith(MAGIC):
        nl = data.find(b"\n")
        ver = data[len(MAGIC):nl] if nl >= 0 else b""
        if ver.isdigit() and int(ver) > CURRENT:
            raise NewerFormat(f"segment format v{int(ver)} is newer than this trex knows (v{CURRENT}): upgrade trex")
    if data.find(b"\n") >= 0 and _v1_at(data, 0)[0] == "ok":
        return 1, 0, 0, None  # a v1 segment's first line, intact
    first = _first_v2_record(data, min(_HEADER_LEN, len(data)))
    if first is not None:
        return 2, first, 0, Damage(0, first, _header_reason(data))
    if data.startswith(MAGIC) or _looks_like_header(data):
        return None, 0, 0, Damage(0, len(data), _header_reason(data) + ", and no record after it")
    return 1, 0, 0, None


def _looks_like_header(data: bytes) -> bool:
    """The first 20 bytes are the v2 header with at most 2 bytes changed."""
    head = data[:_HEADER_LEN]
    return len(head) == _HEADER_LEN and sum(a != b for a, b in zip(head, HEADER_V2)) <= 2


_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z")  # recorded_at, as the log writes it
_HEX_CHARS = "0123456789abcdef"
_I64 = (1 << 63) - 1
_I32 = (1 << 31) - 1
_MAX_ID = 200  # search ids: what the log has always taken
MAX_JSON_DEPTH = 100  # deeper than any event trex writes; what SQL, the fold and pydantic can all take


class _NotStrict(ValueError):
    pass


def _unique(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        keys = [k for k, _ in pairs]
        raise _NotStrict(f"has the key {next(k for k in keys if keys.count(k) > 1)[:40]!r} twice")
    return d


def _no_constant(name: str):
    raise _NotStrict(f"holds {name}, which is not JSON")


_RECORDS = json.JSONDecoder(object_pairs_hook=_unique)  # a record body: an array of flat event objects
_STRICT = json.JSONDecoder(object_pairs_hook=_unique, parse_constant=_no_constant)  # built once: json.loads
# with hooks would build a decoder per call


def json_depth(obj) -> int:
    """How deeply ``obj`` (parsed JSON) nests objects and arrays, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: a lone surrogate is how Python hands over bytes of argv (or of a
    path) that are not UTF-8, and no event, search id or DuckDB query may hold one."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def lone_surrogate(text: str, obj) -> bool:
    """Whether JSON ``text`` (parsed: ``obj``) holds a ``\\ud800``-style escape of half a surrogate pair:
    Python's JSON reads it, DuckDB refuses the whole value (an imported one made `trex ls` fail for
    good). Only text holding such an escape is looked at closely."""
    return bool(_SURROGATE_ESCAPE.search(text)) and not is_utf8(json.dumps(obj, ensure_ascii=False))


def _bad_payload(text: str) -> str | None:
    """What the log's strict JSON refuses in a payload (duplicate keys, NaN, deep nesting), or None."""
    try:
        obj = _STRICT.decode(text)
    except _NotStrict as e:
        return str(e)
    except RecursionError:
        return f"is nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError:
        return "is not JSON"
    if type(obj) is not dict:
        return "is not a JSON object"
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and json_depth(obj) > MAX_JSON_DEPTH:
        return f"is nested deeper than {MAX_JSON_DEPTH} levels"
    return None  # (a lone surrogate escape is refused where events are written — append, import — not
    # here: a record stored before that check is still read, never turned into damage)


def _bad_hash(h) -> bool:
    return type(h) is not str or len(h) != 64 or bool(h.strip(_HEX_CHARS))


def check_event_record(r, _seen_times: set | None = None) -> str | None:
    """What is wrong with one event record of a segment (every field's type and form), or None.

    The rules the log's append enforces, so a record that breaks one was not written by trex:
    it is damage, found here, and never handed to SQL, the fold or a command. ``_seen_times``
    holds recorded_at values already found good (one append call shares one)."""
    if type(r) is not dict or r.keys() != KEYS:
        return "does not hold events"
    v = r["position"]
    if type(v) is not int or not 0 < v <= _I64:
        return "its position is not an integer from 1 to 2^63-1"
    v = r["seq"]
    if type(v) is not int or not 0 < v <= _I64:
        return "its seq is not an integer from 1 to 2^63-1"
    v = r["schema_version"]
    if type(v) is not int or not 0 < v <= _I32:
        return "its schema_version is not an integer from 1 to 2^31-1"
    v = r["search_id"]
    if type(v) is not str or not v or len(v) > _MAX_ID or "\x00" in v:
        return "its search_id is not a search id (a string of 1 to 200 characters)"
    v = r["event_id"]
    if type(v) is not str or not v:  # no length bound: imports before it was checked took any
        return "its event_id is not an event id (a non-empty string)"
    v = r["type"]
    if type(v) is not str or not v:
        return "its type is not an event type name"
    at = r["recorded_at"]
    if _seen_times is None or at not in _seen_times:
        if type(at) is not str or not _TIME.fullmatch(at):
            return "its recorded_at is not a UTC time like 2026-01-01T00:00:00.000000Z"
        try:
            datetime.fromisoformat(at[:-1] + "+00:00")
        except ValueError:
            return f"its recorded_at {at!r} is not a real time"
        if _seen_times is not None:
            _seen_times.add(at)
    v = r["causation_id"]
    if v is not None and type(v) is not str:
        return "its causation_id is neither a string nor null"
    v = r["correlation_id"]
    if v is not None and type(v) is not str:
        return "its correlation_id is neither a string nor null"
    if _bad_hash(r["prev_hash"]):
        return "its prev_hash is not 64 lower-case hex digits"
    if _bad_hash(r["hash"]):
        return "its hash is not 64 lower-case hex digits"
    p = r["payload"]
    if type(p) is not str:
        return "its payload is not JSON text"
    why = _bad_payload(p)
    if why is not None:
        return f"its payload {why}"
    return None


def _records(body: bytes) -> list[dict] | str:
    if body[:1] != b"[" or body[-1:] != b"]":  # what the append writes; `trex sql` splices bodies by these
        return "record passes its checksum but does not hold a list of events"
    try:
        recs = _RECORDS.decode(body.decode("utf-8"))  # a key twice: Python and DuckDB read other values
    except _NotStrict as e:
        return f"record passes its checksum but an event {e}"
    except (ValueError, RecursionError):  # UnicodeDecodeError too: `trex sql` decodes strictly
        return "record passes its checksum but is not JSON"
    if not isinstance(recs, list) or not recs:
        return "record passes its checksum but does not hold a list of events"
    times: set = set()
    for i, r in enumerate(recs):
        why = check_event_record(r, times)
        if why is not None:
            at = f" (event {i + 1} of {len(recs)})" if len(recs) > 1 else ""
            return f"record passes its checksum but {why}{at}"
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


_V1_HEX = frozenset(b"0123456789abcdefABCDEF")


def _v1_torn_shape(tail: bytes) -> bool:
    """Whether an unterminated final v1 line could be the start of one (``CRC(8 hex) SPACE [``): zeroed
    or foreign bytes are damage, not an append that never finished (a lost page of zeros was once
    truncated as a torn tail, with every acknowledged event in it)."""
    return (all(c in _V1_HEX for c in tail[:8]) and (len(tail) <= 8 or tail[8:9] == b" ")
            and (len(tail) <= 9 or tail[9:10] == b"["))


def _v1_whole_but_its_end(tail: bytes) -> bool:
    """A final v1 line all there but for its newline, which is another byte: its CRC matches the bytes
    before that last one. A write that stopped short has no such last byte; a flipped newline does."""
    try:
        return len(tail) > 10 and tail[8:9] == b" " and int(tail[:8], 16) == zlib.crc32(tail[9:-1])
    except ValueError:
        return False


def _v1_at(data: bytes, pos: int):
    nl = data.find(b"\n", pos)
    if nl < 0:
        if _v1_whole_but_its_end(data[pos:]):
            return ("bad", "a complete line whose final newline is damaged")
        if _v1_torn_shape(data[pos:]):
            return ("torn",)  # an unterminated final line shaped like one: an append that never finished
        return ("bad", "unterminated bytes that are not the start of a record")
    line = data[pos:nl]
    try:
        ok = len(line) > 9 and line[8:9] == b" " and int(line[:8], 16) == zlib.crc32(line[9:])
    except ValueError:
        ok = False
    if not ok:
        return ("bad", "checksum mismatch or malformed line")
    return ("ok", nl + 1, line[9:])


def _resync(data: bytes, pos: int, at) -> int:
    """The next offset after ``pos`` where a valid record starts, or len(data): bytes after damage are
    damage up to the next valid record, never a torn tail (repair quarantines them, never truncates).

    v2 records are found by their frame (``~`` length, checksum, events), wherever they start: a
    damaged record whose final newline was flipped does not take the intact record after it along.
    A ``~`` inside a record's JSON cannot start a valid frame (its body would need unescaped quotes).
    v1 lines are found after the next newline, as before."""
    if at is _v2_at:
        nxt = _first_v2_record(data, pos + 1, torn_at_start=False)
        return len(data) if nxt is None else nxt
    i = pos
    while True:
        j = data.find(b"\n", i)
        if j < 0:
            return len(data)
        c = j + 1
        r = at(data, c)
        if r[0] == "ok" and not isinstance(_records(r[2]), str):
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
    header: Damage | None = None
    if base == 0:
        try:
            version, start, torn, header = _detect(data)
        except NewerFormat as e:  # not damage: refused by readers and by repair alike
            raise NewerFormat(f"segment {name}: {e}") from None
        if header is not None and not salvage:
            raise CorruptLog(f"segment {name}: {header.reason}"
                             + (f" (v2 records follow from byte {start})" if version else "")
                             + "; `trex verify --repair` moves it to the quarantine")
        if version is None:
            return Scan(None, end=0, torn=torn, damage=[header] if header else [])
    elif version is None:
        raise ValueError("a scan from a later offset needs the segment's version")
    at = _v2_at if version == 2 else _v1_at
    out = Scan(version, end=base + start, damage=[header] if header else [])
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
