"""The append-only event log on a folder.

Layout under ``HOME/log/``::

    append.lock          held only while appending (any number of processes may append)
    segments/00000001.parquet   sealed segments (written to a temp name, fsynced, renamed)
    segments/00000007.jsonl     the open segment: one line per append call

A line of the open segment is ``CRC32 JSON-ARRAY\\n``: one append call is one
line, so an append is atomic for readers too (a torn line is an append that was
never acknowledged, and is dropped). Readers take no lock: they list the folder,
read sealed segments and the complete lines of the open one, and retry if a
segment is sealed under them.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from filelock import FileLock

from trex.events import layout
from trex.events.base import Event, EventError, decode, encode_json
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


class CorruptLog(EventError):
    """The log holds bytes that are neither valid events nor a torn tail."""


class UnknownSearch(EventError):
    pass


def default_home() -> Path:
    return Path(os.environ.get("TREX_HOME", ".trex"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_line(records: Sequence[dict]) -> bytes:
    body = json.dumps(list(records), separators=(",", ":"), ensure_ascii=False).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


_ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


def check_raw(r: RawEvent) -> None:
    """Envelope fields of an already-serialised event (import): what the log and its SQL rely on."""
    if not isinstance(r.event_id, str) or not r.event_id or len(r.event_id) > 200:
        raise EventError(f"invalid event id {r.event_id!r}")
    if not isinstance(r.type, str) or not isinstance(r.schema_version, int) or isinstance(r.schema_version, bool):
        raise EventError(f"event {r.event_id}: invalid type or schema version")
    if not isinstance(r.payload, str):
        raise EventError(f"event {r.event_id}: payload must be JSON text")
    if not isinstance(r.recorded_at, str) or not _ISO_UTC.match(r.recorded_at):
        raise EventError(f"event {r.event_id}: recorded_at {r.recorded_at!r} is not an ISO-8601 UTC time ending in Z")
    for name in ("causation_id", "correlation_id"):
        v = getattr(r, name)
        if v is not None and not isinstance(v, str):
            raise EventError(f"event {r.event_id}: {name} must be a string or null")


@dataclass
class OpenSegmentScan:
    records: list[dict]
    good_bytes: int  # offset just past the last valid line
    torn_bytes: int  # bytes after it that are an incomplete / invalid final line
    corrupt: str | None = None  # an invalid line followed by valid ones


def scan_open_segment(data: bytes, start: int = 0) -> OpenSegmentScan:
    records: list[dict] = []
    pos = start
    n = len(data)
    bad_at: int | None = None
    while pos < n:
        nl = data.find(b"\n", pos)
        if nl < 0:
            bad_at = pos if bad_at is None else bad_at
            break
        line = data[pos:nl]
        ok = False
        if len(line) > 9 and line[8:9] == b" ":
            body = line[9:]
            try:
                ok = int(line[:8], 16) == zlib.crc32(body)
            except ValueError:
                ok = False
        if not ok:
            if bad_at is None:
                bad_at = pos
            pos = nl + 1
            continue
        if bad_at is not None:
            return OpenSegmentScan(records, bad_at, 0, corrupt=f"invalid line at byte {bad_at} followed by valid lines")
        records.extend(json.loads(body))
        pos = nl + 1
    good = bad_at if bad_at is not None else pos
    return OpenSegmentScan(records, good, n - good)


@dataclass
class _Index:
    """What an appending process knows of the log; caught up under the lock before each append."""

    position: int = 0
    streams: dict[str, tuple[int, str]] = field(default_factory=dict)  # search_id -> (last seq, last hash)
    ids: dict[str, tuple[str, int]] = field(default_factory=dict)  # event_id -> (search_id, position)
    sealed_upto: int = 0
    open_seg: int | None = None
    open_offset: int = 0
    open_count: int = 0
    open_bytes: int = 0

    def add(self, r: dict) -> None:
        if r["position"] <= self.position:
            return
        self.position = r["position"]
        self.streams[r["search_id"]] = (r["seq"], r["hash"])
        self.ids[r["event_id"]] = (r["search_id"], r["position"])


class EventLog:
    """The log of one trex home. Cheap to construct; safe to use from many processes at once."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = Path(home) if home is not None else default_home()
        self.dir = self.home / "log"
        self.segdir = self.dir / "segments"
        self._lock = FileLock(str(self.dir / "append.lock"))
        self._index = _Index()

    # ------------------------------------------------------------------ paths
    def _ensure(self) -> None:
        if not self.segdir.is_dir():
            self.segdir.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.dir)

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
        raws = []
        for ev in events:
            ne = ev if isinstance(ev, NewEvent) else NewEvent(ev)
            type_, version, payload = encode_json(ne.payload)
            raws.append(
                RawEvent(
                    event_id=ne.event_id,
                    type=type_,
                    schema_version=version,
                    payload=payload,
                    recorded_at="",
                    causation_id=ne.causation_id or causation_id,
                    correlation_id=ne.correlation_id or correlation_id,
                )
            )
        return self.append_raw(search_id, raws, expected_version, _validated=True)

    def append_raw(
        self,
        search_id: str,
        raws: Sequence[RawEvent],
        expected_version: int | None = None,
        _validated: bool = False,
    ) -> list[Envelope]:
        if not isinstance(search_id, str) or not search_id or len(search_id) > 200 or "\x00" in search_id:
            raise EventError(f"invalid search id {search_id!r}")
        if not raws:
            return []
        if not _validated:
            for r in raws:
                check_raw(r)
                try:
                    payload = json.loads(r.payload)
                except json.JSONDecodeError as e:
                    raise EventError(f"event {r.event_id}: payload is not JSON: {e}") from None
                if not isinstance(payload, dict):
                    raise EventError(f"event {r.event_id}: payload is not a JSON object")
                decode(r.type, r.schema_version, payload)  # raises on unknown type / too new / invalid
        ids_in_call = [r.event_id for r in raws]
        if len(set(ids_in_call)) != len(ids_in_call):
            raise EventError("duplicate event ids within one append")
        self._ensure()
        with self._lock:
            self._catch_up(repair=True)
            idx = self._index
            for r in raws:
                held = idx.ids.get(r.event_id)
                if held is not None and held[0] != search_id:
                    raise ConcurrencyConflict(
                        f"event id {r.event_id} is already stored in search {held[0]!r}, not {search_id!r}"
                    )
            fresh = [r for r in raws if r.event_id not in idx.ids]
            if not fresh:
                return self._read_ids(search_id, set(ids_in_call))
            last_seq, last_hash = idx.streams.get(search_id, (0, GENESIS))
            if expected_version is not None and expected_version != last_seq:
                raise ConcurrencyConflict(
                    f"search {search_id!r} is at version {last_seq}, expected {expected_version}: nothing written"
                )
            records, envs = [], []
            pos, seq, prev = idx.position, last_seq, last_hash
            stamp = now_iso()
            for r in fresh:
                pos += 1
                seq += 1
                at = r.recorded_at or stamp
                h = chain_hash(prev, r.event_id, search_id, seq, r.type, r.schema_version, at,
                               r.causation_id, r.correlation_id, r.payload)
                if r.expect_hash is not None and r.expect_hash != h:
                    raise ConcurrencyConflict(
                        f"event {r.event_id} would get hash {h[:12]}… at seq {seq} but its origin has "
                        f"{r.expect_hash[:12]}…: the stream here differs from the origin (nothing written)"
                    )
                env = Envelope(pos, search_id, seq, r.event_id, r.type, r.schema_version, at,
                               r.causation_id, r.correlation_id, r.payload, prev, h)
                envs.append(env)
                records.append(env.as_record())
                prev = h
            self._write_line(records)
            for rec in records:
                idx.add(rec)
            if idx.open_count >= SEAL_EVENTS or idx.open_bytes >= SEAL_BYTES:
                try:
                    self._seal(idx.open_seg)
                except Exception as e:  # the events are durable already: report, seal again next time
                    import warnings

                    warnings.warn(f"sealing segment {idx.open_seg} failed ({e}); it stays open", stacklevel=2)
            return envs

    def _write_line(self, records: list[dict]) -> None:
        idx = self._index
        if idx.open_seg is None:
            sealed, open_ = self._listing()
            n = max(sealed + open_ + [0]) + 1
            path = self.seg_path(n, "jsonl")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            _fsync_dir(self.segdir)
            idx.open_seg, idx.open_offset, idx.open_count, idx.open_bytes = n, 0, 0, 0
        line = encode_line(records)
        fd = os.open(self.seg_path(idx.open_seg, "jsonl"), os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(line)
            while view:
                n = os.write(fd, view)  # a short write (e.g. disk full) must not be acknowledged as whole
                view = view[n:]
            os.fdatasync(fd)
        except OSError:
            os.ftruncate(fd, idx.open_offset)  # drop the partial line: nothing of this append is stored
            raise  # data and the size needed to read it back: durable before we acknowledge
        finally:
            os.close(fd)
        idx.open_offset += len(line)
        idx.open_bytes += len(line)
        idx.open_count += len(records)

    def _seal(self, n: int | None) -> None:
        """Turn the open segment into Parquet: temp name, fsync, rename, fsync dir, drop the jsonl."""
        if n is None:
            return
        from trex.events import segments

        src = self.seg_path(n, "jsonl")
        scan = scan_open_segment(src.read_bytes())
        if scan.corrupt:
            raise CorruptLog(f"segment {src.name}: {scan.corrupt}")
        segments.write_parquet(self.seg_path(n, "parquet"), scan.records)
        _fsync_dir(self.segdir)
        src.unlink()
        _fsync_dir(self.segdir)
        idx = self._index
        idx.sealed_upto = n
        idx.open_seg, idx.open_offset, idx.open_count, idx.open_bytes = None, 0, 0, 0

    def seal(self) -> None:
        """Seal the open segment now (export, benchmarks, tests)."""
        self._ensure()
        with self._lock:
            self._catch_up(repair=True)
            if self._index.open_seg is not None and self._index.open_count:
                self._seal(self._index.open_seg)

    def repair(self) -> int:
        """Truncate a torn tail (an append that crashed before it was acknowledged). Returns bytes dropped."""
        self._ensure()
        with self._lock:
            return self._catch_up(repair=True)

    # --------------------------------------------------------------- catch-up
    def _catch_up(self, repair: bool) -> int:
        """Bring the in-memory index up to date with the folder. Caller holds the lock."""
        from trex.events import segments

        idx = self._index
        sealed, open_ = self._listing()
        # a jsonl left beside its parquet by a crash in the middle of sealing
        for name in os.listdir(self.segdir):
            stem, _, ext = name.partition(".")
            if stem.isdigit() and ext == "jsonl" and int(stem) in sealed:
                os.unlink(self.segdir / name)
            elif ".parquet.tmp" in name:
                os.unlink(self.segdir / name)
        for n in sealed:
            if n <= idx.sealed_upto:
                continue
            for rec in segments.read_index_columns(self.seg_path(n, "parquet"), after_position=idx.position):
                idx.add(rec)
            idx.sealed_upto = n
            if idx.open_seg == n:
                idx.open_seg, idx.open_offset, idx.open_count, idx.open_bytes = None, 0, 0, 0
        if len(open_) > 1:
            raise CorruptLog(f"more than one open segment: {open_}")
        dropped = 0
        if open_:
            n = open_[0]
            if idx.open_seg != n:
                idx.open_seg, idx.open_offset, idx.open_count, idx.open_bytes = n, 0, 0, 0
            path = self.seg_path(n, "jsonl")
            with open(path, "rb") as f:
                f.seek(idx.open_offset)
                data = f.read()
            scan = scan_open_segment(data)
            if scan.corrupt:
                raise CorruptLog(f"segment {path.name}: {scan.corrupt} (offset {idx.open_offset})")
            for rec in scan.records:
                idx.add(rec)
            idx.open_count += len(scan.records)
            idx.open_offset += scan.good_bytes
            idx.open_bytes = idx.open_offset
            if scan.torn_bytes and repair:
                with open(path, "r+b") as f:
                    f.truncate(idx.open_offset)
                    os.fsync(f.fileno())
                dropped = scan.torn_bytes
        return dropped

    def _read_ids(self, search_id: str, ids: set[str]) -> list[Envelope]:
        return [e for e in self.read(search_id) if e.event_id in ids]

    # ------------------------------------------------------------------- read
    def read(self, search_id: str | None = None, after_seq: int = 0, until_seq: int | None = None) -> list[Envelope]:
        """A consistent snapshot of events (one stream, or all), in log order. Never blocks."""
        from trex.events import segments

        for _attempt in range(50):
            sealed, open_ = self._listing()
            try:
                out: list[Envelope] = []
                for n in sealed:
                    out.extend(map(Envelope._make, segments.read_rows(self.seg_path(n, "parquet"), search_id)))
                for n in open_:
                    scan = scan_open_segment(self.seg_path(n, "jsonl").read_bytes())
                    if scan.corrupt:
                        raise CorruptLog(f"segment {n:08d}.jsonl: {scan.corrupt}")
                    out.extend(Envelope(**r) for r in scan.records if search_id is None or r["search_id"] == search_id)
            except FileNotFoundError:
                continue  # sealed under us: list again
            if after_seq or until_seq is not None:
                out = [e for e in out if e.seq > after_seq and (until_seq is None or e.seq <= until_seq)]
            return out
        raise EventError("log kept changing under the reader")

    def read_records(self, search_id: str | None = None, after_seq: int = 0, until_seq: int | None = None) -> list[dict]:
        from trex.events import segments

        for _attempt in range(50):
            sealed, open_ = self._listing()
            try:
                out: list[dict] = []
                for n in sealed:
                    out.extend(segments.read_records(self.seg_path(n, "parquet"), search_id))
                for n in open_:
                    data = self.seg_path(n, "jsonl").read_bytes()
                    scan = scan_open_segment(data)
                    if scan.corrupt:
                        raise CorruptLog(f"segment {n:08d}.jsonl: {scan.corrupt}")
                    recs = scan.records
                    if search_id is not None:
                        recs = [r for r in recs if r["search_id"] == search_id]
                    out.extend(recs)
            except FileNotFoundError:
                continue  # sealed under us: list again
            if after_seq or until_seq is not None:
                out = [r for r in out if r["seq"] > after_seq and (until_seq is None or r["seq"] <= until_seq)]
            return out
        raise EventError("log kept changing under the reader")

    def snapshot(self) -> tuple[list[Path], list[dict]]:
        """A consistent view for bulk readers: the sealed segment paths and the open segment's records."""
        for _attempt in range(50):
            sealed, open_ = self._listing()
            try:
                recs: list[dict] = []
                for n in open_:
                    scan = scan_open_segment(self.seg_path(n, "jsonl").read_bytes())
                    if scan.corrupt:
                        raise CorruptLog(f"segment {n:08d}.jsonl: {scan.corrupt}")
                    recs.extend(scan.records)
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
            try:
                tables = [segments.read_table(self.seg_path(n, "parquet")) for n in sealed]
                for n in open_:
                    scan = scan_open_segment(self.seg_path(n, "jsonl").read_bytes())
                    if scan.corrupt:
                        raise CorruptLog(f"segment {n:08d}.jsonl: {scan.corrupt}")
                    tables.append(segments.records_to_table(scan.records))
            except FileNotFoundError:
                continue
            return segments.concat(tables)
        raise EventError("log kept changing under the reader")

    def searches(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.read_records():
            seen.setdefault(r["search_id"], None)
        return list(seen)

    def version(self, search_id: str) -> int:
        recs = self.read_records(search_id)
        return recs[-1]["seq"] if recs else 0

    def exists(self, search_id: str) -> bool:
        return self.version(search_id) > 0

    def iter_events(self, search_id: str, until_seq: int | None = None) -> Iterator[tuple[Envelope, Event]]:
        for env in self.read(search_id, until_seq=until_seq):
            yield env, env.event
