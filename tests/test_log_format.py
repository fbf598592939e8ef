"""The open segment's record format on real files: torn tail vs damage, quarantine, v1 segments,
links refused, incremental reads."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest

from trex.events import records
from trex.events.errors import CorruptLog, LinkRefused, LockTimeout
from trex.events.log import EventLog
from trex.events.notes import NoteAdded
from trex.events.quarantine import quarantine_damage
from trex.events.records import HEADER_V2, encode_line_v1, encode_record
from trex.events.verify import verify


def _notes(n, prefix="n"):
    return [NoteAdded(text=f"{prefix}{i}") for i in range(n)]


def _open_segment(log):
    (path,) = [p for p in log.segdir.iterdir() if p.suffix == ".jsonl"]
    return path


def _texts(log, sid="s"):
    return [e.event.text for e in EventLog(log.home).read(sid)]


def _record_offsets(data: bytes) -> list[int]:
    """Start offsets of the v2 records in a segment's bytes."""
    sc = records.scan(data, "x", salvage=True)
    return [a for a, _ in sc.good]


def cli(home, *args):
    return subprocess.run([sys.executable, "-m", "trex.cli", *args, "--home", str(home)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


def _one_line_error(r):
    assert r.returncode != 0, r
    assert "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


# ------------------------------------------------------------------ the format
def test_new_segments_are_v2_with_a_header_and_length_prefixed_records(log):
    log.append("s", _notes(2))
    log.append("s", _notes(1, "m"))
    data = _open_segment(log).read_bytes()
    assert data.startswith(HEADER_V2)
    sc = records.scan(data, "x")
    assert sc.version == 2 and sc.torn == 0 and sc.end == len(data) and len(sc.records) == 3
    assert len(sc.bodies) == 2  # one record per append call


def test_every_truncation_is_a_torn_tail_holding_exactly_the_complete_records(log):
    for i in range(3):
        log.append("s", _notes(2, f"a{i}"))
    data = _open_segment(log).read_bytes()
    ends = [b for _, b in records.scan(data, "x", salvage=True).good]
    for cut in range(len(data)):
        sc = records.scan(data[:cut], "x")  # never raises: only an incomplete final record is cut off
        complete = sum(1 for e in ends if e <= cut)
        assert len(sc.records) == 2 * complete, cut
        assert sc.end + sc.torn == cut


def test_every_flipped_byte_is_caught_never_a_silent_drop(log):
    for i in range(3):
        log.append("s", _notes(2, f"a{i}"))
    data = _open_segment(log).read_bytes()
    full = records.scan(data, "x").records
    for i in range(len(data)):
        for bit in (0x01, 0x20):
            bad = bytearray(data)
            bad[i] ^= bit
            try:
                sc = records.scan(bytes(bad), "x")
            except CorruptLog:
                continue
            # not caught: it must not have lost a record nor reported a torn tail
            assert len(sc.records) == len(full) and sc.torn == 0, (i, bit)


# ------------------------------------------------------------- damage vs torn
def test_flipped_byte_in_last_complete_record_is_damage_naming_segment_and_offset(log):
    log.append("s", _notes(2))
    log.append("s", _notes(2, "m"))
    path = _open_segment(log)
    data = bytearray(path.read_bytes())
    last = _record_offsets(bytes(data))[-1]
    data[data.index(b"m1")] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match=rf"segment {path.name}: damaged record at byte {last}: checksum"):
        EventLog(log.home).read("s")
    with pytest.raises(CorruptLog, match=rf"{path.name}.*byte {last}"):
        EventLog(log.home).append("s", _notes(1, "x"))
    assert path.read_bytes() == bytes(data)  # the append neither dropped nor "fixed" it
    rep = verify(EventLog(log.home))
    assert [p.kind for p in rep.problems] == ["corrupt_record"] and f"byte {last}" in rep.problems[0].where


def test_torn_final_record_is_dropped_by_the_next_append_and_acknowledged_events_kept(log):
    log.append("s", _notes(3))
    path = _open_segment(log)
    size = path.stat().st_size
    rec = encode_record([{"k": "an append that crashed"}])
    with open(path, "ab") as f:
        f.write(rec[:-5])
    assert _texts(log) == ["n0", "n1", "n2"]
    rep = verify(EventLog(log.home))
    assert [p.kind for p in rep.problems] == ["torn_tail"]
    out = EventLog(log.home).append("s", [NoteAdded(text="after")], expected_version=3)
    assert out[0].seq == 4
    assert _texts(log) == ["n0", "n1", "n2", "after"]
    assert path.read_bytes()[size:].startswith(b"~")  # the torn bytes were truncated before the write
    assert verify(EventLog(log.home)).ok


def test_length_flipped_past_the_end_is_not_taken_for_a_torn_tail(log):
    log.append("s", _notes(1))
    log.append("s", _notes(1, "m"))
    path = _open_segment(log)
    data = bytearray(path.read_bytes())
    last = _record_offsets(bytes(data))[-1]
    data[last + 1:last + 9] = b"%08x" % 0xFFFFFF  # the length now runs past the end of the file
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match=f"byte {last}"):
        EventLog(log.home).append("s", _notes(1, "x"))


def test_a_record_that_passes_its_checksum_but_is_not_events_is_damage(log):
    log.append("s", _notes(1))
    path = _open_segment(log)
    with open(path, "ab") as f:
        f.write(encode_record([{"not": "an event"}]))
    with pytest.raises(CorruptLog, match="passes its checksum but does not hold events"):
        EventLog(log.home).read()


def test_a_segment_of_a_newer_format_is_refused(log):
    log.append("s", _notes(1))
    path = _open_segment(log)
    path.write_bytes(path.read_bytes().replace(b"segment v2", b"segment v9", 1))
    with pytest.raises(CorruptLog, match="v9 is newer"):
        EventLog(log.home).read()


def test_damage_mid_segment_fails_sql_ls_and_reads_with_one_line(log):
    log.append("s", _notes(2))
    log.append("s", _notes(2, "m"))
    log.append("s", _notes(2, "z"))
    path = _open_segment(log)
    data = bytearray(path.read_bytes())
    mid = _record_offsets(bytes(data))[1]
    data[data.index(b"m0")] ^= 0x02
    path.write_bytes(bytes(data))
    for args in (["sql", "SELECT count(*) FROM events"], ["ls"], ["verify"]):
        r = cli(log.home, *args)
        if args[0] == "verify":
            assert r.returncode == 1 and "Traceback" not in r.stderr and f"byte {mid}" in r.stdout
            continue
        line = _one_line_error(r)
        assert path.name in line and f"byte {mid}" in line, line
        assert r.stdout == ""
    with pytest.raises(CorruptLog):
        EventLog(log.home).read("s")
    r = cli(log.home, "note", "s", "hi")
    assert path.name in _one_line_error(r)


def test_repair_quarantines_damage_and_keeps_every_other_record(log):
    log.append("s", _notes(2))
    log.append("s", _notes(2, "m"))
    log.append("s", _notes(2, "z"))
    path = _open_segment(log)
    data = bytearray(path.read_bytes())
    offs = _record_offsets(bytes(data))
    data[data.index(b"m0")] ^= 0x02
    path.write_bytes(bytes(data))
    damaged = bytes(data[offs[1]:offs[2]])
    r = cli(log.home, "verify", "--repair")
    assert "Traceback" not in r.stderr
    assert f"quarantined {len(damaged)} damaged bytes of {path.name} at byte {offs[1]}" in r.stderr
    qfile = log.dir / "quarantine" / f"{path.name}.at-{offs[1]}.damaged"
    assert qfile.read_bytes() == damaged  # moved, byte for byte, never deleted
    assert "quarantine" in r.stderr and r.returncode == 1  # the gap left behind is reported
    assert "gap" in r.stdout
    assert _texts(log) == ["n0", "n1", "z0", "z1"]
    # a second repair finds nothing more to move; appends go on
    assert quarantine_damage(EventLog(log.home)) == []
    EventLog(log.home).append("s", _notes(1, "after"))
    assert _texts(log)[-1] == "after0"


def test_repair_of_a_damaged_final_record_quarantines_it_and_the_next_append_works(log):
    log.append("s", _notes(1))
    log.append("s", _notes(1, "m"))
    path = _open_segment(log)
    data = bytearray(path.read_bytes())
    last = _record_offsets(bytes(data))[-1]
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    moved = quarantine_damage(EventLog(log.home))
    assert [(q.segment, q.offset) for q in moved] == [(path.name, last)]
    assert moved[0].file.read_bytes() == bytes(data[last:])
    assert _texts(log) == ["n0"]


# ------------------------------------------------------------------ v1 segments
def _write_v1_home(log, n_calls=3):
    """An open segment as trex wrote it before the format version (records from a v2 log)."""
    for i in range(n_calls):
        log.append("s", _notes(2, f"v{i}"))
    sc = records.scan(_open_segment(log).read_bytes(), "x")
    by_call = [json.loads(b) for b in sc.bodies]
    path = _open_segment(log)
    path.write_bytes(b"".join(encode_line_v1(c) for c in by_call))
    return path


def test_a_v1_segment_still_reads_and_the_next_append_seals_it_unchanged(log):
    path = _write_v1_home(log)
    v1_bytes = path.read_bytes()
    fresh = EventLog(log.home)
    before = [(e.event_id, e.hash) for e in fresh.read("s")]
    assert len(before) == 6 and verify(fresh).ok
    r = cli(log.home, "sql", "SELECT count(*) FROM events", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == [{"count_star()": 6}]
    assert path.read_bytes() == v1_bytes  # readers never rewrite it
    fresh.append("s", _notes(1, "new"))
    names = sorted(p.name for p in log.segdir.iterdir())
    assert names == [path.with_suffix(".parquet").name, f"{int(path.stem) + 1:08d}.jsonl"]
    assert _open_segment(log).read_bytes().startswith(HEADER_V2)
    after = EventLog(log.home).read("s")
    assert [(e.event_id, e.hash) for e in after[:6]] == before and after[6].event.text == "new0"
    assert verify(EventLog(log.home)).ok


def test_v1_torn_line_is_a_torn_tail_but_a_complete_bad_line_is_damage(log):
    path = _write_v1_home(log, 2)
    good = path.read_bytes()
    path.write_bytes(good + b'1234abcd [{"position":5')  # unterminated: an append that never finished
    assert len(EventLog(log.home).read("s")) == 4
    assert EventLog(log.home).repair() > 0 and path.read_bytes() == good
    lines = good.split(b"\n")
    lines[1] = lines[1][:20] + bytes([lines[1][20] ^ 1]) + lines[1][21:]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(CorruptLog, match=rf"{path.name}: damaged record at byte {len(lines[0]) + 1}"):
        EventLog(log.home).read("s")
    moved = quarantine_damage(EventLog(log.home))
    assert len(moved) == 1 and len(EventLog(log.home).read("s")) == 2


# ------------------------------------------------------------------------ links
def test_a_symlinked_open_segment_is_refused_and_its_target_untouched(log, tmp_path):
    log.append("s", _notes(2))
    path = _open_segment(log)
    target = tmp_path / "victim.txt"
    target.write_bytes(path.read_bytes() + b"~0000")  # would look torn: a repair would truncate it
    before = target.read_bytes()
    path.unlink()
    path.symlink_to(target)
    for act in (lambda lg: lg.append("s", _notes(1)), lambda lg: lg.repair(), lambda lg: lg.read("s"),
                lambda lg: quarantine_damage(lg)):
        with pytest.raises(LinkRefused, match="symbolic link"):
            act(EventLog(log.home))
    assert target.read_bytes() == before
    for args in (["sql", "SELECT 1 FROM events"], ["note", "s", "x"], ["verify", "--repair"]):
        line = _one_line_error(cli(log.home, *args))
        assert "symbolic link" in line, line
    assert target.read_bytes() == before


def test_a_symlinked_lock_is_refused_and_its_target_untouched(log, tmp_path):
    log.append("s", _notes(1))
    lock = log.dir / "append.lock"
    lock.unlink(missing_ok=True)
    target = tmp_path / "precious.txt"
    target.write_text("do not truncate me")
    lock.symlink_to(target)
    with pytest.raises(LinkRefused, match="append.lock is a symbolic link"):
        EventLog(log.home).append("s", _notes(1))
    assert target.read_text() == "do not truncate me"
    line = _one_line_error(cli(log.home, "note", "s", "x"))
    assert "append.lock" in line and "symbolic link" in line
    assert len(EventLog(log.home).read("s")) == 1


def test_a_link_at_the_parquet_temp_name_is_never_written_through(log, tmp_path):
    log.append("s", _notes(3))
    n = int(_open_segment(log).stem)
    target = tmp_path / "victim.bin"
    target.write_text("keep")
    (log.segdir / f"{n:08d}.parquet.tmp{os.getpid()}").symlink_to(target)
    log.seal()
    assert target.read_text() == "keep"
    assert len(EventLog(log.home).read("s")) == 3


def test_a_symlinked_quarantine_folder_is_refused(log, tmp_path):
    log.append("s", _notes(1))
    log.append("s", _notes(1, "m"))
    path = _open_segment(log)
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.write_bytes(bytes(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (log.dir / "quarantine").symlink_to(elsewhere)
    with pytest.raises(LinkRefused):
        quarantine_damage(EventLog(log.home))
    assert list(elsewhere.iterdir()) == [] and path.read_bytes() == bytes(data)


def test_a_held_lock_is_waited_for_a_bounded_time_with_a_message(log):
    log.append("s", _notes(1))
    fd = os.open(log.dir / "append.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        other = EventLog(log.home)
        other._lock.timeout_s = 0.2
        with pytest.raises(LockTimeout, match="waited 0.2 s for the append lock"):
            other.append("s", _notes(1))
    finally:
        os.close(fd)
    assert len(EventLog(log.home).read("s")) == 1


def test_a_lock_path_that_is_a_directory_is_one_line(log):
    log.append("s", _notes(1))
    lock = log.dir / "append.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()
    assert "is a directory" in _one_line_error(cli(log.home, "note", "s", "x"))


# ------------------------------------------------------------- incremental reads
def test_reads_after_a_position_match_a_full_read_across_sealed_and_open_segments(log, monkeypatch):
    import trex.events.log as logmod

    monkeypatch.setattr(logmod, "SEAL_EVENTS", 10)
    for i in range(12):
        log.append("a", _notes(3, f"a{i}-"))
        log.append("b", _notes(1, f"b{i}-"))
    assert len(list(log.segdir.glob("*.parquet"))) >= 3
    reader = EventLog(log.home)
    full = reader.read("a")
    for after in (0, 1, 7, 20, 35, 36, 40):
        assert reader.read("a", after_seq=after) == [e for e in full if e.seq > after]
        assert reader.read("a", after_seq=after, until_seq=after + 5) == [
            e for e in full if after < e.seq <= after + 5]
        assert reader.read_records("a", after_seq=after) == [e._asdict() for e in full if e.seq > after]
    assert reader.read(after_seq=11) == [e for e in EventLog(log.home).read() if e.seq > 11]
    # another process appends: the same reader sees exactly the new tail
    EventLog(log.home).append("a", _notes(2, "late"))
    new = reader.read("a", after_seq=36)
    assert [e.event.text for e in new] == ["late0", "late1"]
    assert reader.read("a") == EventLog(log.home).read("a")


def test_incremental_reader_notices_a_segment_replaced_by_repair(log):
    log.append("s", _notes(1))
    log.append("s", _notes(1, "m"))
    log.append("s", _notes(1, "z"))
    reader = EventLog(log.home)
    assert len(reader.read("s")) == 3
    path = _open_segment(log)
    data = bytearray(path.read_bytes())
    data[data.index(b"m0")] ^= 1
    path.write_bytes(bytes(data))
    quarantine_damage(EventLog(log.home))
    assert [e.event.text for e in reader.read("s")] == ["n0", "z0"]


def test_sealed_segments_record_their_seq_ranges(log):
    from trex.events import segments

    log.append("a", _notes(3))
    log.append("b", _notes(2))
    log.seal()
    (seg,) = list(log.segdir.glob("*.parquet"))
    assert segments.seq_ranges(seg) == {"a": (1, 3), "b": (1, 2)}


# ------------------------------------------------------------------- fuzzing
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _segment_bytes(tmp_path_factory):
    log = EventLog(tmp_path_factory.mktemp("fuzz") / "home")
    for i in range(4):
        log.append("s", _notes(i + 1, f"f{i}"))
    return _open_segment(log).read_bytes()


@pytest.fixture(scope="module")
def fuzz_segment(tmp_path_factory):
    return _segment_bytes(tmp_path_factory)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_random_damage_is_caught_or_harmless(fuzz_segment, data):
    seg = fuzz_segment
    full = records.scan(seg, "x").records
    start = data.draw(st.integers(0, len(seg) - 2))
    junk = data.draw(st.binary(min_size=1, max_size=40))
    junk = junk[: len(seg) - 1 - start]  # damage strictly inside the file: the tail stays intact
    bad = seg[:start] + junk + seg[start + len(junk):]
    try:
        sc = records.scan(bad, "x")
    except CorruptLog as e:
        assert "damaged record at byte" in str(e) or "header" in str(e) or "format" in str(e)
        salvaged = records.scan(bad, "x", salvage=True)  # repair's view: damage found, never a crash
        assert salvaged.damage
        return
    assert sc.records == full and sc.torn == 0  # only bytes that changed nothing pass


def test_a_v1_segment_written_by_the_previous_trex_reads_unchanged(tmp_path):
    """tests/fixtures/log_v1/00000001.jsonl was written by trex before the format version (recorded once)."""
    import shutil
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "log_v1" / "00000001.jsonl"
    seg = tmp_path / "home" / "log" / "segments"
    seg.mkdir(parents=True)
    shutil.copy(fixture, seg / fixture.name)
    log = EventLog(tmp_path / "home")
    envs = log.read()
    assert [(e.search_id, e.seq, e.type) for e in envs] == [
        ("s", 1, "SearchStarted"), ("s", 2, "NoteAdded"), ("s", 3, "NoteAdded"), ("t", 1, "NoteAdded")]
    assert [e.event.text for e in envs[1:]] == ["one", "two", "other stream"]
    assert all(e.hash == e.expected_hash() for e in envs) and verify(log).ok
    assert (seg / fixture.name).read_bytes() == fixture.read_bytes()
    log.append("s", _notes(1, "v2-"), expected_version=3)
    assert [e.seq for e in EventLog(log.home).read("s")] == [1, 2, 3, 4] and verify(EventLog(log.home)).ok
