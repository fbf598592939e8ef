"""The append-only event log on a folder.

Layout under ``HOME/log/``::

    append.lock          held only while appending (any number of processes may append)
    segments/00000001.parquet   sealed segments (written to a temp name, fsynced, renamed)
    segments/00000007.jsonl     the open segment: a format header, then one record per append call
    quarantine/          damaged records moved aside by ``verify --repair``

The open segment's format (v2: length + CRC per record; v1 still read) and the one scanner
that tells a torn tail from damage live in :mod:`trex.events.records`; see docs/events.md.
One append call is one record, so an append is atomic for readers too. Readers take no lock:
they list the folder, read sealed segments and the good records of the open one, and retry if
a segment is sealed under them. No write follows a link (:mod:`trex.events.fsio`).
"""
from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from trex.events import layout, reader, records
from trex.events.base import Event, EventError, decode, encode_json
from trex.events.errors import CorruptLog, LinkRefused  # noqa: F401  (re-exported)
from trex.events.fsio import AppendLock, check_dir, fsync_dir, open_nofollow
from trex.events.envelope import (
    COLUMNS,
    GENESIS,
    Envelope,
    NewEvent,
    RawEvent,
    chain_hash,
    now_iso,
)

# Small enough that a reader parses the open segment's JSON in well under 100 ms.
SEAL_EVENTS = 20_000
SEAL_BYTES = 16 * 1024 * 1024


class ConcurrencyConflict(EventError):
    """An append's expected stream version did not match: nothing was written."""


class UnknownSearch(EventError):
    pass


def default_home() -> Path:
    return Path(os.environ.get("TREX_HOME", ".trex"))


encode_line = records.encode_record  # one append call = one record of the current format


_ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z\Z")  # \Z: no newline after


def _unique_keys(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"duplicate key {dup!r} (SQL and the fold would read different values)")
    return dict(pairs)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON (trex stores NaN and infinities as strings)")


MAX_JSON_DEPTH = records.MAX_JSON_DEPTH  # one bound for the log's strict JSON and the record check


def strict_json(text: str):
    """``json.loads`` that refuses duplicate object keys, the non-JSON literals NaN/Infinity and
    nesting deeper than :data:`MAX_JSON_DEPTH` (all as ``ValueError``)."""
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    if records.json_depth(obj) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if records.lone_surrogate(text, obj):
        raise ValueError("holds half of a surrogate pair (an escape like \\ud800 alone): not Unicode text")
    return obj


MAX_SEARCH_ID_LEN = 200


def check_search_id(search_id) -> None:
    """What the log takes as a search id (a stream's name; never a path): UTF-8 text of at most
    :data:`MAX_SEARCH_ID_LEN` characters, no control character."""
    if (not isinstance(search_id, str) or not search_id or len(search_id) > MAX_SEARCH_ID_LEN
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in search_id)):  # no NUL, newline or other control
        raise EventError(f"invalid search id {str(search_id)[:80]!r}")
    if not records.is_utf8(search_id):  # a byte of argv that is not UTF-8
        raise EventError(f"invalid search id {search_id[:80]!r}: not UTF-8 text")


def check_raw(r: RawEvent) -> None:
    """Envelope fields of an already-serialised event (import): what the log and its SQL rely on."""
    if not isinstance(r.event_id, str) or not r.event_id or len(r.event_id) > 200:
        raise EventError(f"invalid event id {str(r.event_id)[:80]!r}")
    if not isinstance(r.type, str) or not isinstance(r.schema_version, int) or isinstance(r.schema_version, bool):
        raise EventError(f"event {r.event_id}: invalid type or schema version")
    if not isinstance(r.payload, str):
        raise EventError(f"event {r.event_id}: payload must be JSON text")
    if not isinstance(r.recorded_at, str) or not _ISO_UTC.match(r.recorded_at):
        raise EventError(f"event {r.event_id}: recorded_at {r.recorded_at!r} is not an ISO-8601 UTC time ending in Z")
    try:  # the pattern is not enough: 2026-13-45T25:61:00Z matches it
        datetime.fromisoformat(r.recorded_at[:-1] + "+00:00")
    except ValueError:
        raise EventError(f"event {r.event_id}: recorded_at {r.recorded_at!r} is not a real time") from None
    for name in ("causation_id", "correlation_id"):
        v = getattr(r, name)
        if v is not None and not isinstance(v, str):
            raise EventError(f"event {r.event_id}: {name} must be a string or null")


@dataclass
class _Index:
    """What an appending process knows of the log; caught up under the lock before each append."""

    position: int = 0
    streams: dict[str, tuple[int, str]] = field(default_factory=dict)  # search_id -> (last seq, last hash)
    ids: dict[str, tuple[str, int]] = field(default_factory=dict)  # event_id -> (search_id, position)
    sealed_upto: int = 0
    open_seg: int | None = None
    open_version: int | None = None  # format of the open segment (None: empty, no header yet)
    open_ino: int | None = None
    open_offset: int = 0
    open_count: int = 0
    open_bytes: int = 0

    def add(self, r: dict) -> None:
        if r["position"] <= self.position:
            return
        self.position = r["position"]
        self.streams[r["search_id"]] = (r["seq"], r["hash"])
        self.ids[r["event_id"]] = (r["search_id"], r["position"])

    def reset_open(self, n: int | None = None) -> None:
        self.open_seg, self.open_version, self.open_ino = n, None, None
        self.open_offset = self.open_count = self.open_bytes = 0


def raws_of(events: Iterable[Event | NewEvent], causation_id: str | None = None,
            correlation_id: str | None = None) -> list[RawEvent]:
    """Typed events serialised for an append (validated: they were built as typed events); the ids
    are fixed here, so sending the same list again (a retry) is idempotent."""
    raws = []
    for ev in events:
        ne = ev if isinstance(ev, NewEvent) else NewEvent(ev)
        type_, version, payload = encode_json(ne.payload)
        raws.append(RawEvent(event_id=ne.event_id, type=type_, schema_version=version, payload=payload,
                             recorded_at="", causation_id=ne.causation_id or causation_id,
                             correlation_id=ne.correlation_id or correlation_id))
    return raws


def _check_position(name: str, value, optional: bool = False) -> None:
    """A seq or version from a caller (a remote one: the log service): a whole number >= 0."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EventError(f"invalid {name} {value!r}: a whole number >= 0")


def _check_read(search_id, after_seq, until_seq) -> None:
    if search_id is not None:
        check_search_id(search_id)
    _check_position("after_seq", after_seq)
    _check_position("until_seq", until_seq, optional=True)


def check_append(search_id, raws, expected_version=None) -> None:
    """The shape of one append (a name, a list of serialised events, a version), before any of it is
    decoded: what a remote caller (the log service) is refused on at once."""
    check_search_id(search_id)
    _check_position("expected version", expected_version, optional=True)
    if not isinstance(raws, (list, tuple)) or not all(isinstance(r, RawEvent) for r in raws):
        raise EventError("an append takes a list of serialised events (RawEvent)")


def _check_request(search_id, raws: Sequence[RawEvent], validated: bool, expected_version=None) -> None:
    """One stream's append: a valid name, a list of serialised events, distinct ids, and (unless the
    caller built them from typed events) every event decoded strictly, as an import must be."""
    check_append(search_id, raws, expected_version)
    if not validated:
        for r in raws:
            check_raw(r)
            try:
                payload = strict_json(r.payload)
            except ValueError as e:
                raise EventError(f"event {r.event_id}: payload is not strict JSON: {e}") from None
            if not isinstance(payload, dict):
                raise EventError(f"event {r.event_id}: payload is not a JSON object")
            decode(r.type, r.schema_version, payload)  # raises on unknown type / too new / invalid
    ids = [r.event_id for r in raws]
    if len(set(ids)) != len(ids):
        raise EventError("duplicate event ids within one append")


class _Stage:
    """Envelopes of appends made under one lock, before they are written. Later appends see the
    earlier ones (stream heads, ids) through overlays; the index changes only once it is written."""

    def __init__(self, idx: _Index, stamp: str):
        self.idx, self.stamp = idx, stamp
        self.pos = idx.position
        self.heads: dict[str, tuple[int, str]] = {}
        self.ids: dict[str, str] = {}  # event_id -> search_id, staged here
        self.envs: dict[str, Envelope] = {}
        self.records: list[dict] = []

    def _held(self, event_id: str) -> str | None:
        sid = self.ids.get(event_id)
        if sid is not None:
            return sid
        held = self.idx.ids.get(event_id)
        return None if held is None else held[0]

    def add(self, search_id: str, raws: Sequence[RawEvent], expected_version: int | None) -> list[Envelope] | None:
        """Stage one stream's events; None when all of them are stored already (a retried call:
        it succeeds whatever the expected version). Raises :class:`ConcurrencyConflict`, staging nothing."""
        fresh = []
        for r in raws:
            held = self._held(r.event_id)
            if held is None:
                fresh.append(r)
            elif held != search_id:
                raise ConcurrencyConflict(f"event id {r.event_id} is already stored in search {held!r}, not {search_id!r}")
        if not fresh:
            return None
        last_seq, last_hash = self.heads.get(search_id) or self.idx.streams.get(search_id, (0, GENESIS))
        if expected_version is not None and expected_version != last_seq:
            raise ConcurrencyConflict(
                f"search {search_id!r} is at version {last_seq}, expected {expected_version}: nothing written")
        envs = []
        pos, seq, prev = self.pos, last_seq, last_hash
        for r in fresh:
            pos += 1
            seq += 1
            at = r.recorded_at or self.stamp
            h = chain_hash(prev, r.event_id, search_id, seq, r.type, r.schema_version, at,
                           r.causation_id, r.correlation_id, r.payload)
            if r.expect_hash is not None and r.expect_hash != h:
                raise ConcurrencyConflict(
                    f"event {r.event_id} would get hash {h[:12]}… at seq {seq} but its origin has "
                    f"{r.expect_hash[:12]}…: the stream here differs from the origin (nothing written)")
            envs.append(Envelope(pos, search_id, seq, r.event_id, r.type, r.schema_version, at,
                                 r.causation_id, r.correlation_id, r.payload, prev, h))
            prev = h
        self.pos, self.heads[search_id] = pos, (seq, prev)
        for env in envs:
            self.ids[env.event_id] = search_id
            self.envs[env.event_id] = env
            self.records.append(env.as_record())
        return envs


class EventLog:
    """The log of one trex home. Cheap to construct; safe to use from many processes at once."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = Path(home) if home is not None else default_home()
        self.dir = self.home / "log"
        self.segdir = self.dir / "segments"
        self._lock = AppendLock(self.dir / "append.lock")
        self._index = _Index()
        self._tail = reader.OpenTail()
        self._ranges = reader.SealedRanges()

    # ------------------------------------------------------------------ paths
    def _ensure(self) -> None:
        check_dir(self.home)
        check_dir(self.dir)
        check_dir(self.segdir)
        if not self.segdir.is_dir():
            self.segdir.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.dir)

    def _listing(self) -> tuple[list[int], list[int]]:
        return layout.listing(self.segdir)

    def seg_path(self, n: int, ext: str) -> Path:
        return self.segdir / f"{n:08d}.{ext}"

    # ----------------------------------------------------------------- append
    def append(
        self,
        search_id: str,
        events: Iterable[Event | NewEvent],
        expected_version: int | None = None,
        causation_id: str | None = None,
        correlation_id: str | None = None,
    ) -> list[Envelope]:
        """Append events to one search's stream, atomically and durably.

        ``expected_version`` is the stream's last sequence number the caller has
        seen (0 for a new stream); a mismatch raises :class:`ConcurrencyConflict`
        and writes nothing. Events whose id the log already holds are skipped, so
        a retried call is harmless; if every event is already there the call
        succeeds whatever the expected version.
        """
        raws = raws_of(events, causation_id, correlation_id)
        return self.append_raw(search_id, raws, expected_version, _validated=True)

    def append_raw(
        self,
        search_id: str,
        raws: Sequence[RawEvent],
        expected_version: int | None = None,
        _validated: bool = False,
    ) -> list[Envelope]:
        return self.append_streams([(search_id, raws, expected_version)], _validated=_validated)[search_id]

    def append_streams(
        self,
        batches: Sequence[tuple[str, Sequence[RawEvent], int | None]],
        _validated: bool = False,
        written: dict[str, int] | None = None,
    ) -> dict[str, list[Envelope]]:
        """Append to several streams at once, as one record: every stream's events are written, or
        none (what an import of several searches needs). ``batches``: (search id, events, expected
        version) per stream, each stream at most once. Returns the envelopes per stream (stored ones
        for ids stored before); ``written``, when given, gets how many events this call wrote per
        stream (two imports of one file at once: the second writes none, and must not say it added them)."""
        sids = [b[0] for b in batches]
        if len(set(sids)) != len(sids):
            raise EventError("a stream appears twice in one append")
        ids_seen: set[str] = set()
        for search_id, raws, expected in batches:
            _check_request(search_id, raws, _validated, expected)
            ids_in_call = {r.event_id for r in raws}
            if ids_seen & ids_in_call:
                raise EventError("duplicate event ids within one append")
            ids_seen |= ids_in_call
        if not any(raws for _, raws, _ in batches):
            return {sid: [] for sid in sids}
        self._ensure()
        with self._lock:
            self._catch_up(repair=True)
            stage = _Stage(self._index, now_iso())
            staged = {sid: stage.add(sid, raws, ev) for sid, raws, ev in batches}  # a conflict: nothing written
            self._commit(stage)
            if written is not None:
                written.update({sid: len(envs or ()) for sid, envs in staged.items()})
            return {sid: self._staged_or_stored(stage, sid, raws, staged[sid], _validated) for sid, raws, _ in batches}

    def append_group(
        self,
        requests: Sequence[tuple[str, Sequence[RawEvent], int | None]],
        _validated: bool = False,
    ) -> list[list[Envelope] | BaseException]:
        """Group commit: many independent appends under one lock, written as one record with one
        fsync. Each request (search id, events, expected version) succeeds or fails on its own —
        its outcome is its envelopes or the exception it raised (bad input, a version conflict),
        exactly as :meth:`append_raw` would have — and a later request in the group sees the ones
        before it (same stream: the next seq). If the write fails, every staged request fails."""
        results: list = [None] * len(requests)
        todo = []
        for i, (search_id, raws, expected) in enumerate(requests):
            try:
                _check_request(search_id, raws, _validated, expected)
            except Exception as e:  # noqa: BLE001 - this request's answer, not the group's
                results[i] = e
                continue
            if raws:
                todo.append(i)
            else:
                results[i] = []
        if not todo:
            return results
        self._ensure()
        with self._lock:
            self._catch_up(repair=True)
            stage = _Stage(self._index, now_iso())
            staged = {}
            for i in todo:
                try:
                    staged[i] = stage.add(*requests[i])
                except Exception as e:  # noqa: BLE001 - a conflict, or a malformed event: this request's answer
                    results[i] = e
            try:
                self._commit(stage)
            except Exception as e:  # noqa: BLE001 - nothing of the group is stored
                for i in staged:
                    results[i] = e
                return results
            for i, envs in staged.items():
                search_id, raws, _ = requests[i]
                results[i] = self._staged_or_stored(stage, search_id, raws, envs, _validated)
            return results

    def _staged_or_stored(self, stage: "_Stage", search_id: str, raws, envs, validated: bool) -> list[Envelope]:
        """The envelopes of ``raws``: staged now, or stored before. An id stored before answers with the
        stored event: trex's own ids are fixed per step (the first writer wins, as a retry must); an
        event from outside (an import, a raw remote append) under an id stored with other content is
        refused instead, so its sender never believes its content stored."""
        if envs is not None:
            return envs
        if not raws:
            return []
        ids = {r.event_id for r in raws}  # all stored before (or earlier in this group): read them back
        if ids <= stage.envs.keys():
            return [stage.envs[r.event_id] for r in raws]
        got = {e.event_id: e for e in self._read_ids(search_id, ids)}
        out = [got.get(r.event_id) or stage.envs[r.event_id] for r in raws]
        for r, env in zip(raws, out):
            if not validated and (env.type, env.schema_version, env.payload) != (r.type, r.schema_version, r.payload):
                raise ConcurrencyConflict(f"event id {r.event_id} is stored with other content: the stored event "
                                          f"stands (seq {env.seq} of {search_id!r})")
        return out

    def _commit(self, stage: "_Stage") -> None:
        """Write what ``stage`` holds as one record (durable before return) and index it. Caller holds the lock."""
        if not stage.records:
            return
        idx = self._index
        self._write_line(stage.records)  # one record: all of it or none
        for rec in stage.records:
            idx.add(rec)
        if idx.open_count >= SEAL_EVENTS or idx.open_bytes >= SEAL_BYTES:
            try:
                self._seal(idx.open_seg)
            except Exception as e:  # the events are durable already: report, seal again next time
                import warnings

                warnings.warn(f"sealing segment {idx.open_seg} failed ({e}); it stays open", stacklevel=3)

    def _write_line(self, recs: list[dict]) -> None:
        idx = self._index
        if idx.open_seg is not None and idx.open_version == 1:
            self._seal(idx.open_seg)  # a segment written before the format version is sealed as it is
        if idx.open_seg is None:
            sealed, open_ = self._listing()
            n = max(sealed + open_ + [0]) + 1
            fd = open_nofollow(self.seg_path(n, "jsonl"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            os.close(fd)
            fsync_dir(self.segdir)
            idx.reset_open(n)
        # an empty segment gets its format header in the same write as its first record
        line = (records.HEADER_V2 if idx.open_version is None else b"") + records.encode_record(recs)
        fd = open_nofollow(self.seg_path(idx.open_seg, "jsonl"), os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(line)
            while view:
                n = os.write(fd, view)  # a short write (e.g. disk full) must not be acknowledged as whole
                view = view[n:]
            os.fdatasync(fd)  # data and the size needed to read it back: durable before we acknowledge
            idx.open_ino = os.fstat(fd).st_ino
        except OSError:
            os.ftruncate(fd, idx.open_offset)  # drop the partial record: nothing of this append is stored
            raise
        finally:
            os.close(fd)
        idx.open_version = records.CURRENT
        idx.open_offset += len(line)
        idx.open_bytes += len(line)
        idx.open_count += len(recs)

    def _seal(self, n: int | None) -> None:
        """Turn the open segment into Parquet: temp name, fsync, rename, fsync dir, drop the jsonl."""
        if n is None:
            return
        from trex.events import segments

        src = self.seg_path(n, "jsonl")
        scan = records.scan(records.read_segment(src), src.name)  # damage raises: nothing is sealed
        segments.write_sealed(self.seg_path(n, "parquet"), scan.records)
        fsync_dir(self.segdir)
        src.unlink()
        fsync_dir(self.segdir)
        idx = self._index
        idx.sealed_upto = n
        idx.reset_open()

    def seal(self) -> None:
        """Seal the open segment now (export, benchmarks, tests)."""
        self._ensure()
        with self._lock:
            self._catch_up(repair=True)
            if self._index.open_seg is not None and self._index.open_count:
                self._seal(self._index.open_seg)

    def repair(self) -> int:
        """Truncate a torn tail (an append that crashed before it was acknowledged). Returns bytes dropped.

        Damage (anything but an incomplete final record) raises :class:`CorruptLog`; see
        :func:`trex.events.quarantine.quarantine_damage` to move it aside."""
        self._ensure()
        with self._lock:
            return self._catch_up(repair=True)

    # --------------------------------------------------------------- catch-up
    def _unchanged(self) -> bool:
        """Whether nobody has appended, sealed or repaired since this process last did: the open
        segment is the file it wrote (same inode, same size, a plain file) and has not been sealed
        (no parquet of its number, which a seal that crashed before removing the jsonl leaves).
        Two stats instead of listing the folder: most of the cost of one appender's catch-up."""
        idx = self._index
        if idx.open_seg is None or idx.open_ino is None:
            return False
        try:
            st = os.lstat(self.seg_path(idx.open_seg, "jsonl"))
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_ino != idx.open_ino or st.st_size != idx.open_offset:
            return False
        return not os.path.lexists(self.seg_path(idx.open_seg, "parquet"))

    def _catch_up(self, repair: bool) -> int:
        """Bring the in-memory index up to date with the folder. Caller holds the lock."""
        from trex.events import segments

        idx = self._index
        if self._unchanged():
            return 0
        sealed, open_ = self._listing()
        # a jsonl left beside its parquet by a crash in the middle of sealing; temp files of a crash
        for path in layout.leftovers(self.segdir, sealed):
            if path.suffix == ".jsonl" and not path.is_symlink():
                self._check_sealed_copy(path)  # the jsonl may be the only intact copy of its events
            os.unlink(path)  # unlinking a link removes the link, never its target
        for n in sealed:
            if n <= idx.sealed_upto:
                continue
            for rec in segments.read_index_columns(self.seg_path(n, "parquet"), after_position=idx.position):
                idx.add(rec)
            idx.sealed_upto = n
            if idx.open_seg == n:
                idx.reset_open()
        if len(open_) > 1:
            raise CorruptLog(f"more than one open segment: {open_}")
        dropped = 0
        if open_:
            n = open_[0]
            path = self.seg_path(n, "jsonl")
            fd = open_nofollow(path, os.O_RDWR if repair else os.O_RDONLY)
            st = os.fstat(fd)
            if idx.open_seg == n and idx.open_ino is not None and (
                    idx.open_ino != st.st_ino or st.st_size < idx.open_offset):
                os.close(fd)  # replaced by a repair (or shrunk under us): start over from the folder
                self._index = _Index()
                return self._catch_up(repair)
            try:
                if idx.open_seg != n or idx.open_ino is None:
                    if idx.open_seg != n:
                        idx.reset_open(n)
                    idx.open_ino = st.st_ino
                os.lseek(fd, idx.open_offset, os.SEEK_SET)
                data = _read_all(fd)
                scan = records.scan(data, path.name, base=idx.open_offset,
                                    version=idx.open_version if idx.open_offset else None)
                if not idx.open_offset:
                    idx.open_version = scan.version
                for rec in scan.records:
                    idx.add(rec)
                idx.open_count += len(scan.records)
                idx.open_offset = idx.open_bytes = scan.end
                if scan.torn and repair:
                    os.ftruncate(fd, scan.end)
                    os.fsync(fd)
                    dropped = scan.torn
                    if scan.end == 0:
                        idx.open_version = None
            finally:
                os.close(fd)
        return dropped

    def _check_sealed_copy(self, jsonl: Path) -> None:
        """A segment's jsonl left beside its parquet (a crash between the seal's rename and this unlink)
        is removed only once the parquet is whole and holds the same events: if the parquet is
        damaged, the jsonl may be the only intact copy, and is kept (the append fails naming both)."""
        from trex.events import segments

        parquet = jsonl.with_suffix(".parquet")
        try:
            segments.check_digest(parquet)
            rows = segments.read_index_columns(parquet)
        except EventError as e:
            raise CorruptLog(f"{e}; {jsonl.name} beside it, left by a seal that crashed, is kept (it may be the only "
                             "intact copy of those events: restore the segment from it)") from None
        try:
            body = records.scan(records.read_segment(jsonl), jsonl.name, salvage=True)
        except EventError:
            return  # a newer format or a link: the parquet is whole, and it is the segment
        got = [(r["position"], r["event_id"]) for r in body.records]
        if not set(got) <= {(r["position"], r["event_id"]) for r in rows}:
            raise CorruptLog(f"segment {parquet.name} does not hold the events of {jsonl.name} beside it (left by a "
                             "seal that crashed): both are kept; `trex verify` lists the damage")

    def _read_ids(self, search_id: str, ids: set[str]) -> list[Envelope]:
        return [e for e in self.read(search_id) if e.event_id in ids]

    # ------------------------------------------------------------------- read
    def _open_records(self, n: int, search_id: str | None, after_seq: int, until_seq: int | None) -> list[dict]:
        with self._tail.lock:
            self._tail.update(self.seg_path(n, "jsonl"), n)
            return self._tail.select(search_id, after_seq, until_seq)

    def _sealed_wanted(self, n: int, search_id: str | None, after_seq: int, until_seq: int | None) -> bool:
        if search_id is None and not after_seq and until_seq is None:
            return True
        ranges = self._ranges.get(self.seg_path(n, "parquet"), n)
        return reader.SealedRanges.may_hold(ranges, search_id, after_seq, until_seq)

    def read(self, search_id: str | None = None, after_seq: int = 0, until_seq: int | None = None) -> list[Envelope]:
        """A consistent snapshot of events (one stream, or all), in log order. Never blocks.

        Sealed segments that cannot hold a seq after ``after_seq`` are skipped, and the open
        segment is decoded incrementally, so a read after the last seen seq stays cheap."""
        from trex.events import segments

        _check_read(search_id, after_seq, until_seq)
        for _attempt in range(50):
            sealed, open_ = self._listing()
            try:
                out: list[Envelope] = []
                order = _InOrder()
                for n in sealed:
                    if self._sealed_wanted(n, search_id, after_seq, until_seq):
                        rows = segments.read_rows(self.seg_path(n, "parquet"), search_id, after_seq, until_seq)
                        out.extend(order.check(self.seg_path(n, "parquet").name, list(map(Envelope._make, rows))))
                for n in open_:
                    out.extend(order.check(self.seg_path(n, "jsonl").name, [
                        Envelope(**r) for r in self._open_records(n, search_id, after_seq, until_seq)]))
            except FileNotFoundError:
                continue  # sealed under us: list again
            return out
        raise EventError("log kept changing under the reader")

    def read_records(self, search_id: str | None = None, after_seq: int = 0, until_seq: int | None = None) -> list[dict]:
        from trex.events import segments

        _check_read(search_id, after_seq, until_seq)
        for _attempt in range(50):
            sealed, open_ = self._listing()
            try:
                out: list[dict] = []
                order = _InOrder()
                for n in sealed:
                    if self._sealed_wanted(n, search_id, after_seq, until_seq):
                        out.extend(order.check_records(self.seg_path(n, "parquet").name, segments.read_records(
                            self.seg_path(n, "parquet"), search_id, after_seq, until_seq)))
                for n in open_:
                    out.extend(order.check_records(self.seg_path(n, "jsonl").name, [
                        dict(r) for r in self._open_records(n, search_id, after_seq, until_seq)]))
            except FileNotFoundError:
                continue  # sealed under us: list again
            return out
        raise EventError("log kept changing under the reader")

    def snapshot(self) -> tuple[list[Path], list[dict]]:
        """A consistent view for bulk readers: the sealed segment paths and the open segment's records."""
        for _attempt in range(50):
            sealed, open_ = self._listing()
            try:
                recs: list[dict] = []
                for n in open_:
                    recs.extend(dict(r) for r in self._open_records(n, None, 0, None))
            except FileNotFoundError:
                continue
            paths = [self.seg_path(n, "parquet") for n in sealed]
            if all(p.exists() for p in paths):
                return paths, recs
        raise EventError("log kept changing under the reader")

    def read_table(self):
        """All events as one Arrow table (columns :data:`COLUMNS`), for bulk folds and SQL."""
        from trex.events import segments

        for _attempt in range(50):
            sealed, open_ = self._listing()
            order = _InOrder()
            try:
                tables = []
                for n in sealed:
                    t = segments.read_table(self.seg_path(n, "parquet"))
                    if t.num_rows:  # consecutive within a sealed segment (its checks); across them, here
                        pos = t.column("position")
                        order.check_positions(self.seg_path(n, "parquet").name, [pos[0].as_py()])
                        order.last = max(order.last, pos[-1].as_py())
                    tables.append(t)
                for n in open_:
                    recs = order.check_records(self.seg_path(n, "jsonl").name, self._open_records(n, None, 0, None))
                    tables.append(segments.records_to_table(recs))
            except FileNotFoundError:
                continue
            return segments.concat(tables)
        raise EventError("log kept changing under the reader")

    def stream_heads(self) -> dict[str, int]:
        """Every stream's last seq as this process's appender index knows it: no read, so it lags a
        writer beside this process until this process's next append, and is empty before its first.
        For a long-lived appender (the log service) that wants to know which streams moved."""
        return {sid: head[0] for sid, head in dict(self._index.streams).items()}

    def searches(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.read_records():
            seen.setdefault(r["search_id"], None)
        return list(seen)

    def version(self, search_id: str) -> int:
        check_search_id(search_id)
        recs = self.read_records(search_id)
        return recs[-1]["seq"] if recs else 0

    def exists(self, search_id: str) -> bool:
        return self.version(search_id) > 0

    def iter_events(self, search_id: str, until_seq: int | None = None) -> Iterator[tuple[Envelope, Event]]:
        for env in self.read(search_id, until_seq=until_seq):
            yield env, env.event


class _InOrder:
    """Positions rise across everything one read returns. A segment present twice (a copy under a later
    number) or out of place was read as more events, exit 0 (`trex ls` counted 9 of 6, replay's last
    seq went back to 3). A gap passes: a record quarantined by repair leaves one (readers say so, and
    ``verify`` reports it)."""

    def __init__(self):
        self.last = 0

    def check_positions(self, segment: str, positions) -> None:
        for p in positions:
            if p <= self.last:
                raise CorruptLog(f"segment {segment}: the event at position {p} comes after position {self.last}: "
                                 "a segment present twice or out of place (`trex verify` lists the damage)")
            self.last = p

    def check(self, segment: str, envs: list) -> list:
        self.check_positions(segment, (e.position for e in envs))
        return envs

    def check_records(self, segment: str, recs: list) -> list:
        self.check_positions(segment, (r["position"] for r in recs))
        return recs


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
