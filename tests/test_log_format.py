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
from trex.events.base import EventError
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


def _flip_in_last_record(log):
    """Flip one bit near the end of the open segment's last complete record: damage, not a torn tail.
    Returns (segment path, the record's offset, the damaged bytes)."""
    path = _open_segment(log)
    data = bytearray(path.read_bytes())
    last = _record_offsets(bytes(data))[-1]
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    return path, last, data


def test_repair_of_a_damaged_final_record_quarantines_it_and_the_next_append_works(log):
    log.append("s", _notes(1))
    log.append("s", _notes(1, "m"))
    path, last, data = _flip_in_last_record(log)
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
    names = sorted(p.name for p in log.segdir.iterdir() if p.suffix in (".parquet", ".jsonl"))  # not digests
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


@pytest.mark.parametrize("planted", ["fifo", "folder", "other bytes"])
def test_something_under_the_quarantine_files_name_is_never_opened_or_replaced(log, planted):
    """A FIFO at the name repair writes hung it (it compared the bytes there); a folder was a bare OS
    error. What is there is left alone and the damage goes to the next free name."""
    log.append("s", _notes(1))
    log.append("s", _notes(1, "m"))
    path, last, data = _flip_in_last_record(log)
    qdir = log.dir / "quarantine"
    qdir.mkdir()
    target = qdir / f"{path.name}.at-{last}.damaged"
    {"fifo": lambda: os.mkfifo(target), "folder": target.mkdir,
     "other bytes": lambda: target.write_bytes(b"an operator's notes\n")}[planted]()
    (qdir / f"{path.name}.at-{last}.1.damaged").mkdir()  # the first spare name is taken too
    moved = quarantine_damage(EventLog(log.home))
    assert moved[0].file.name == f"{path.name}.at-{last}.2.damaged"
    assert moved[0].file.read_bytes() == bytes(data[last:]) and _texts(log) == ["n0"]
    assert os.path.lexists(target)


def test_a_quarantine_path_that_is_a_file_is_one_clear_refusal(log):
    log.append("s", _notes(1))
    log.append("s", _notes(1, "m"))
    path, _last, data = _flip_in_last_record(log)
    (log.dir / "quarantine").write_bytes(b"not a folder")
    with pytest.raises(EventError, match="quarantine is not a folder"):
        quarantine_damage(EventLog(log.home))
    assert path.read_bytes() == bytes(data)  # nothing changed


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


# ------------------------------------------- a damaged v2 header (issue 17 audit, gap A)
def _three_calls(log):
    log.append("s", _notes(2))
    log.append("t", _notes(1, "t"))
    log.append("s", _notes(2, "m"))
    return _open_segment(log)


def run(home, *args):
    """A command in this process (faster than a subprocess): exit_code, stdout, stderr."""
    from click.testing import CliRunner

    from trex.cli import main

    return CliRunner().invoke(main, [*args, "--home", str(home)], catch_exceptions=False)


def _repaired_bytes(data: bytes) -> bytes:
    """What `verify --repair` keeps of a segment (the same rule as trex.events.quarantine)."""
    sc = records.scan(data, "x", salvage=True)
    head = HEADER_V2 if sc.version == 2 else b""
    return head + b"".join(data[a:b] for a, b in sc.good) + (data[len(data) - sc.torn:] if sc.torn else b"")


def test_every_flipped_header_byte_keeps_every_record_and_repair_restores_the_segment(log):
    data = _three_calls(log).read_bytes()
    full = records.scan(data, "x").records
    hl = len(HEADER_V2)
    for i in range(hl):
        for bit in (0x01, 0x02, 0x20, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            bad = bytes(bad)
            try:
                records.scan(bad, "x")
            except records.NewerFormat:  # "v2" became "v3".."v9": refused by readers and by repair alike
                with pytest.raises(records.NewerFormat):
                    records.scan(bad, "x", salvage=True)
                continue
            except CorruptLog as e:
                assert f"x: damaged segment header: byte {i} differs" in str(e), (i, bit, e)
            else:
                raise AssertionError(f"flip {bit:#x} of header byte {i} was not caught")
            sc = records.scan(bad, "x", salvage=True)
            assert sc.version == 2 and sc.records == full, (i, bit)  # never read as a v1 segment
            assert [(d.offset, d.end) for d in sc.damage] == [(0, hl)], (i, bit)
            assert _repaired_bytes(bad) == data, (i, bit)  # repair gives back the segment as written


def test_repair_of_a_flipped_header_byte_quarantines_only_the_header(log):
    """The audit's repro: byte 3 of the header flipped; verify fails naming the segment and byte;
    repair moves the 20 header bytes aside, restores the header and keeps every event."""
    path = _three_calls(log)
    data = path.read_bytes()
    before = [(e.event_id, e.hash) for e in EventLog(log.home).read()]
    bad = bytearray(data)
    bad[3] ^= 0x01
    path.write_bytes(bytes(bad))
    r = run(log.home, "verify")
    assert r.exit_code == 1
    assert f"corrupt_record: {path.name} byte 0: damaged segment header: byte 3 differs" in r.stdout
    with pytest.raises(CorruptLog, match=rf"segment {path.name}: damaged segment header: byte 3 differs"):
        EventLog(log.home).read()
    with pytest.raises(CorruptLog, match="damaged segment header: byte 3"):
        EventLog(log.home).append("s", _notes(1, "x"))
    assert path.read_bytes() == bytes(bad)  # no command but repair changes it (ls, sql, note: the matrix)
    r = run(log.home, "verify", "--repair")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert f"quarantined 20 damaged bytes of {path.name} at byte 0" in r.stderr
    qfile = log.dir / "quarantine" / f"{path.name}.at-0.header.damaged"
    assert qfile.read_bytes() == bytes(bad[:20])
    assert path.read_bytes() == data
    assert [(e.event_id, e.hash) for e in EventLog(log.home).read()] == before
    assert "a damaged segment header (20 bytes)" in r.stderr and "it held no event" in r.stderr
    assert "OK: 5 events" in r.stderr


def test_a_damaged_header_and_first_record_quarantine_those_and_keep_the_rest(log):
    path = _three_calls(log)
    data = path.read_bytes()
    offs = _record_offsets(data)
    bad = bytearray(data)
    bad[5] ^= 0x01
    bad[offs[0] + 40] ^= 0x01
    path.write_bytes(bytes(bad))
    sc = records.scan(bytes(bad), "x", salvage=True)
    assert [(d.offset, d.end) for d in sc.damage] == [(0, offs[1])]
    moved = quarantine_damage(EventLog(log.home))
    assert [(q.offset, q.file.name) for q in moved] == [(0, f"{path.name}.at-0.header.damaged")]
    assert path.read_bytes() == HEADER_V2 + data[offs[1]:]
    assert [e.event.text for e in EventLog(log.home).read()] == ["t0", "m0", "m1"]
    rep = verify(EventLog(log.home))  # the first record's events are gone: a finding, not a note
    assert "quarantined" in [p.kind for p in rep.problems]
    (q,) = [p for p in rep.problems if p.kind == "quarantined"]
    assert "1 damaged record(s)" in q.detail and f"from {path.name} byte 0" in q.detail


def test_a_flipped_record_newline_takes_no_intact_record_with_it(log):
    path = _three_calls(log)
    data = path.read_bytes()
    offs = _record_offsets(data) + [len(data)]
    for k in range(len(offs) - 1):
        bad = bytearray(data)
        bad[offs[k + 1] - 1] ^= 0x01  # the record's final newline
        sc = records.scan(bytes(bad), "x", salvage=True)
        assert [(d.offset, d.end) for d in sc.damage] == [(offs[k], offs[k + 1])], k
        assert [a for a, _ in sc.good] == [o for j, o in enumerate(offs[:-1]) if j != k], k
        assert sc.torn == 0


def test_a_v1_segment_is_never_taken_for_a_v2_one_with_a_damaged_header(log):
    path = _write_v1_home(log, 2)
    good = path.read_bytes()
    first_nl = good.index(b"\n")
    for i in range(0, first_nl + 1, 7):
        bad = bytearray(good)
        bad[i] ^= 0x01
        sc = records.scan(bytes(bad), "x", salvage=True)
        assert sc.version == 1 and [(d.offset, d.end) for d in sc.damage] == [(0, first_nl + 1)], i
        assert len(sc.records) == 2  # the second line's two events


def test_repair_refuses_a_segment_of_a_newer_format_and_moves_nothing(log):
    log.append("s", _notes(1))
    path = _open_segment(log)
    path.write_bytes(path.read_bytes().replace(b"segment v2", b"segment v9", 1))
    before = path.read_bytes()
    with pytest.raises(CorruptLog, match="v9 is newer"):
        quarantine_damage(EventLog(log.home))
    assert path.read_bytes() == before and not (log.dir / "quarantine").exists()
    rep = verify(EventLog(log.home))
    assert [(p.kind, p.where) for p in rep.problems] == [("corrupt_segment", path.name)]
    assert "v9 is newer" in rep.problems[0].detail and path.name not in rep.problems[0].detail
    r = run(log.home, "verify", "--repair")
    assert r.exit_code == 1 and "cannot repair" in r.stderr and "v9 is newer" in r.stderr
    assert path.read_bytes() == before


# ------------------------------- records that pass their checksum but are not events (gap C)
_BAD_FIELDS = [
    ("payload", 5, "payload is not JSON text"),
    ("payload", "[1,2]", "payload is not a JSON object"),
    ("payload", "{\"text\":\"a\"", "payload is not JSON"),
    ("payload", '{"text":"a","text":"b","author":""}', "payload has the key 'text' twice"),
    ("payload", '{"text":"a","author":"","x":NaN}', "payload holds NaN"),
    ("payload", '{"text":"a","author":"","x":' + "[" * 150 + "]" * 150 + "}", "payload is nested deeper"),
    ("payload", '{"text":"a","author":"","x":' + "[" * 5000 + "]" * 5000 + "}", "payload is nested deeper"),
    ("recorded_at", "2026-13-45T25:61:00Z", "recorded_at '2026-13-45T25:61:00Z' is not a real time"),
    ("recorded_at", "2026-02-30T10:00:00Z", "is not a real time"),
    ("recorded_at", "2026-12-31T23:59:60Z", "is not a real time"),
    ("recorded_at", "2026-01-01T00:00:00+00:00", "recorded_at is not a UTC time"),
    ("recorded_at", "2026-01-01T00:00:00Z\n", "recorded_at is not a UTC time"),
    ("recorded_at", 1767225600, "recorded_at is not a UTC time"),
    ("hash", 7, "hash is not 64 lower-case hex"),
    ("hash", "A" * 64, "hash is not 64 lower-case hex"),
    ("prev_hash", "0" * 63, "prev_hash is not 64 lower-case hex"),
    ("search_id", 12, "search_id is not a search id"),
    ("search_id", "", "search_id is not a search id"),
    ("search_id", "s" * 201, "search_id is not a search id"),
    ("search_id", "s\x00", "search_id is not a search id"),
    ("event_id", None, "event_id is not an event id"),
    ("event_id", "", "event_id is not an event id"),
    ("type", 3, "type is not an event type name"),
    ("seq", 2 ** 70, "seq is not an integer"),
    ("seq", 0, "seq is not an integer"),
    ("seq", True, "seq is not an integer"),
    ("position", -1, "position is not an integer"),
    ("position", 1.0, "position is not an integer"),
    ("schema_version", 2 ** 40, "schema_version is not an integer"),
    ("causation_id", 5, "causation_id is neither a string nor null"),
    ("correlation_id", [], "correlation_id is neither a string nor null"),
]


def _forge(log, field, value, n_events=1):
    """Append a record that passes its checksum but whose last event has ``field`` = ``value``."""
    path = _open_segment(log)
    recs = [dict(r) for r in EventLog(log.home).read_records("s")[-n_events:]]
    for i, r in enumerate(recs):
        r["position"] += n_events
        r["seq"] += n_events
        r["event_id"] = f"forged-{i}"
    recs[-1][field] = value
    at = path.stat().st_size
    with open(path, "ab") as f:
        f.write(encode_record(recs))
    return path, at


@pytest.mark.parametrize("field,value,why", _BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(_BAD_FIELDS)])
def test_a_record_with_a_field_of_the_wrong_form_is_damage_named_and_quarantined(log, field, value, why):
    log.append("s", _notes(2))
    before = [(e.event_id, e.hash) for e in EventLog(log.home).read()]
    path, at = _forge(log, field, value)
    data = path.read_bytes()
    with pytest.raises(CorruptLog) as e:
        EventLog(log.home).read()
    assert f"segment {path.name}: damaged record at byte {at}: record passes its checksum but its" in str(e.value)
    assert why in str(e.value)
    with pytest.raises(CorruptLog, match=f"byte {at}"):
        EventLog(log.home).append("s", _notes(1, "x"))
    rep = verify(EventLog(log.home))
    assert [(p.kind, p.where) for p in rep.problems] == [("corrupt_record", f"{path.name} byte {at}")]
    assert path.read_bytes() == data
    moved = quarantine_damage(EventLog(log.home))
    assert [(q.offset, q.length) for q in moved] == [(at, len(data) - at)]
    assert moved[0].file.read_bytes() == data[at:]
    assert [(e.event_id, e.hash) for e in EventLog(log.home).read()] == before


def test_a_bad_event_in_a_record_of_several_is_named_by_its_index(log):
    log.append("s", _notes(3))
    path, at = _forge(log, "payload", 5, n_events=3)
    with pytest.raises(CorruptLog, match=rf"byte {at}: .*payload is not JSON text \(event 3 of 3\)"):
        EventLog(log.home).read()


def test_every_event_trex_writes_passes_the_record_check(log):
    """The check holds records to what the log's append writes (the golden logs hold every family)."""
    log.append("s", _notes(3))
    for r in EventLog(log.home).read_records():
        assert records.check_event_record(r) is None


# ------------------------------------------------ the quarantine in verify (gap B)
def test_verify_fails_while_the_quarantine_holds_records_and_says_where(log):
    log.append("s", _notes(2))
    log.append("s", _notes(1, "m"))
    path, last, data = _flip_in_last_record(log)
    (q,) = quarantine_damage(EventLog(log.home))
    rep = verify(EventLog(log.home))  # the log itself is consistent: the lost event was the last one
    assert [p.kind for p in rep.problems] == ["quarantined"] and not rep.ok
    assert rep.problems[0].where == f"quarantine/{q.file.name}"
    assert f"1 damaged record(s) ({len(data) - last} bytes) from {path.name} byte {last}" in rep.problems[0].detail
    r = run(log.home, "verify")
    assert r.exit_code == 1
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("quarantined:")] == [str(rep.problems[0])]
    assert "1 quarantined record(s) not in the log" in r.stderr.splitlines()[-1]
    r = run(log.home, "verify", "--format", "json")
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["ok"] is False and out["quarantined"] == [q.file.name]
    assert out["quarantine"] == [{"file": str(q.file), "records": 1, "bytes": len(data) - last,
                                  "segment": path.name, "offset": last, "header": False, "regular_file": True}]
    # every reader says that what it reads lacks what the quarantine holds (on stderr; data unchanged)
    for args in (("ls",), ("sql", "SELECT count(*) AS n FROM events"), ("replay", "s"), ("status",),
                 ("export", "s", "-o", str(log.home / "s.parquet"))):
        r = run(log.home, *args)
        assert "holds 1 file(s) of damaged records that repair moved out of the log" in r.stderr, (args, r.stderr)
    assert "\n2\n" in run(log.home, "sql", "SELECT count(*) AS n FROM events", "--format", "csv").stdout
    # the operator has dealt with it and moved it out: verify is clean again, and readers say nothing
    q.file.rename(log.home / "kept.damaged")
    assert verify(EventLog(log.home)).ok and run(log.home, "verify").exit_code == 0
    assert "quarantine" not in run(log.home, "ls").stderr


def test_a_link_in_the_quarantine_is_a_finding_never_followed(log, tmp_path):
    log.append("s", _notes(1))
    qdir = log.dir / "quarantine"
    qdir.mkdir()
    (qdir / "00000001.jsonl.at-9.damaged").symlink_to("/dev/zero")
    rep = verify(EventLog(log.home))
    assert [(p.kind, p.where) for p in rep.problems] == [("quarantined", "quarantine/00000001.jsonl.at-9.damaged")]
    assert "not a regular file" in rep.problems[0].detail


def test_corrupt_segment_names_the_segment_once(log):
    log.append("s", _notes(3))
    log.seal()
    (seg,) = log.segdir.glob("*.parquet")
    seg.write_bytes(seg.read_bytes()[:-10])
    rep = verify(EventLog(log.home))
    assert rep.problems and all(str(p).count(seg.name) == 1 for p in rep.problems), [str(p) for p in rep.problems]


# ------------------------------------------------ the fifth audit: damage never taken for a torn tail
def test_a_zeroed_open_segment_is_damage_not_a_torn_tail_and_nothing_is_truncated(log):
    """A lost page of zeros (no newline, no ``~``, no header) was detected as v1, all of it an append
    that never finished: readers read nothing of it with exit 0, and the next append truncated every
    acknowledged event in it."""
    log.append("s", _notes(3))
    log.seal()
    for i in range(3):
        log.append("s", _notes(1, f"ack{i}"))
    path = _open_segment(log)
    size = path.stat().st_size
    path.write_bytes(b"\0" * size)
    with pytest.raises(CorruptLog, match=r"00000002\.jsonl: damaged record at byte 0: unterminated bytes"):
        EventLog(log.home).read("s")
    with pytest.raises(CorruptLog):
        EventLog(log.home).append("s", _notes(1, "later"))
    assert path.stat().st_size == size  # nothing truncated
    (q,) = quarantine_damage(EventLog(log.home))
    assert q.file.read_bytes() == b"\0" * size and q.length == size
    assert not verify(EventLog(log.home)).ok


def test_a_frame_shaped_text_inside_a_damaged_record_does_not_make_its_rest_a_torn_tail(log):
    """The last record's newline flipped, and its note holds ``~ffffffff ffffffff ``: the scan
    resynchronised on that fake frame, called the rest of the record a torn tail, and repair truncated
    it (only part of an acknowledged record survived anywhere). Now all of it is quarantined."""
    log.append("s", _notes(1))
    log.append("s", [NoteAdded(text="before ~ffffffff ffffffff after, and more text")])
    path = _open_segment(log)
    data = bytearray(path.read_bytes())
    last = _record_offsets(bytes(data))[-1]
    data[-1] ^= 0x01  # the final newline
    path.write_bytes(bytes(data))
    sc = records.scan(bytes(data), path.name, salvage=True)
    assert sc.torn == 0 and [(d.offset, d.end) for d in sc.damage] == [(last, len(data))]
    (q,) = quarantine_damage(EventLog(log.home))
    assert q.file.read_bytes() == bytes(data[last:])  # the whole record, kept
    assert path.stat().st_size == last and _texts(log) == ["n0"]


def test_a_zeroed_first_page_is_quarantined_as_records_not_as_a_header_that_held_none(log):
    from trex.events.quarantine import quarantine_files

    for i in range(40):
        log.append("s", _notes(1, f"record {i} " + "x" * 150))
    path = _open_segment(log)
    data = bytearray(path.read_bytes())
    assert len(data) > 6000
    data[:4096] = b"\0" * 4096
    path.write_bytes(bytes(data))
    (q,) = quarantine_damage(EventLog(log.home))
    assert q.offset == 0 and q.file.name.endswith(".header.damaged") and q.length > 4096
    (f,) = quarantine_files(log.dir)
    assert f.header and f.records >= 1
    rep = verify(EventLog(log.home))
    assert not rep.ok and any(p.kind == "quarantined" and "at least 1 damaged record(s)" in p.detail
                              for p in rep.problems), rep.problems
    assert not any("held no event" in n for n in rep.notes)


def test_a_segment_present_twice_fails_every_reader_instead_of_reading_more_events(log):
    import shutil

    from trex.events import sql
    from trex.events.fsio import digest_path

    log.append("s", _notes(3))
    log.seal()
    log.append("s", _notes(3, "m"))
    log.seal()
    one = log.segdir / "00000001.parquet"
    shutil.copy(one, log.segdir / "00000003.parquet")
    shutil.copy(digest_path(one), digest_path(log.segdir / "00000003.parquet"))
    with pytest.raises(CorruptLog, match=r"00000003\.parquet: the event at position 1 comes after position 6"):
        EventLog(log.home).read("s")
    with pytest.raises(CorruptLog, match="present twice"):
        EventLog(log.home).read_records()
    with pytest.raises(CorruptLog, match="present twice"):
        EventLog(log.home).read_table()
    with pytest.raises(sql.SqlFailed, match=r"00000003\.parquet: its events \(positions 1\.\.3\) do not come after"):
        sql.query(log.home, "SELECT count(*) FROM events")
    assert not verify(EventLog(log.home)).ok


def test_appends_remove_only_the_leftovers_trex_writes_never_an_operators_files(log):
    log.append("s", _notes(2))
    log.seal()
    keep = ["1.jsonl", "0001.jsonl", "\u0661.jsonl", "00000001.jsonl.bak", "00000000.jsonl", "notes.parquet.tmp1"]
    for name in keep:
        (log.segdir / name).write_text("an operator's file")
    (log.segdir / "00000001.parquet.tmp77").mkdir()  # a folder under a temp name: left alone, no failure
    (log.segdir / "00000001.parquet.tmp123").write_bytes(b"a crashed seal")  # trex's own leftovers: removed
    (log.segdir / "00000001.jsonl").write_bytes(b"a crash in the middle of sealing")
    EventLog(log.home).append("s", _notes(1, "m"))
    left = set(os.listdir(log.segdir))
    assert set(keep) <= left and "00000001.parquet.tmp77" in left
    assert "00000001.parquet.tmp123" not in left and "00000001.jsonl" not in left
    assert _texts(log) == ["n0", "n1", "m0"]


def test_export_refuses_a_destination_that_is_not_a_regular_file(log, tmp_path):
    log.append("s", _notes(1))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "link").symlink_to(target)
    for dest in (fifo, tmp_path / "link"):  # (a folder: click refuses it, exit 2)
        r = run(log.home, "export", "s", "-o", str(dest))
        assert r.exit_code == 1 and f"refusing to write to {dest}" in r.stderr, r.stderr
    assert fifo.is_fifo() and (tmp_path / "link").is_symlink() and target.read_text() == "keep"
    assert run(log.home, "export", "s", "-o", str(tmp_path / "s.parquet")).exit_code == 0


def test_verify_of_a_home_whose_path_is_a_pattern_reads_its_own_footers_not_a_siblings(tmp_path):
    for name in ("g1", "g[1]"):
        h = EventLog(tmp_path / name)
        h.append("s", _notes(2, name))
        h.seal()
    assert verify(EventLog(tmp_path / "g[1]")).ok


# ------------------------------------------------ the sixth audit
def test_a_v1_final_line_whose_newline_was_flipped_is_damage_not_a_torn_tail(log):
    """All of the line is there and its CRC matches the bytes before its last one: the newline was
    damaged at rest, the append was acknowledged. It was truncated as a torn tail by the next append."""
    path = _write_v1_home(log)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # \n -> \x0b
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match="a complete line whose final newline is damaged"):
        EventLog(log.home).read("s")
    with pytest.raises(CorruptLog):
        EventLog(log.home).append("s", _notes(1, "later"))
    assert path.read_bytes() == bytes(data)
    truncated = bytes(data[:-1])  # a write that stopped before the newline: a torn tail, as always
    assert records.scan(truncated, "x").torn > 0


@pytest.mark.parametrize("edit, why", [
    (lambda b: b.replace(b'"search_id":"s"', b'"search_id":"s","search_id":"other"', 1), "has the key 'search_id' twice"),
    (lambda b: b" " + b + b" ", "does not hold a list of events"),  # `trex sql` spliced bodies by their brackets
])
def test_a_record_body_trex_would_not_write_is_damage_to_sql_and_the_log_alike(log, edit, why):
    """With the CRC recomputed: Python kept a key's last value and DuckDB its first; spaces around
    the array made `trex sql` read one all-NULL row for two events, exit 0."""
    from trex.events import sql

    log.append("s", _notes(2))
    path = _open_segment(log)
    data = path.read_bytes()
    (start,) = _record_offsets(data)
    path.write_bytes(data[:start] + encode_record_body(edit(data[start + 19:-1])))
    with pytest.raises(CorruptLog, match=why):
        EventLog(log.home).read()
    with pytest.raises(sql.SqlFailed, match=why):
        sql.query(log.home, "SELECT search_id FROM events")


def encode_record_body(body: bytes) -> bytes:
    import zlib

    return b"~%08x %08x " % (len(body), zlib.crc32(body)) + body + b"\n"


def test_a_record_present_twice_in_the_open_segment_fails_sql(log):
    from trex.events import sql

    log.append("s", _notes(1))
    log.append("s", _notes(1, "m"))
    path = _open_segment(log)
    data = path.read_bytes()
    last = _record_offsets(data)[-1]
    path.write_bytes(data + data[last:])
    with pytest.raises(sql.SqlFailed, match="00000001.jsonl: 1 event.s. repeat the position of another"):
        sql.query(log.home, "SELECT count(*) FROM events")
    with pytest.raises(CorruptLog, match="comes after position 2"):
        EventLog(log.home).read("s")
    with pytest.raises(CorruptLog, match="comes after position 2"):
        EventLog(log.home).read_table()


def test_a_copy_without_statistics_is_still_placed_by_its_positions(log):
    import pyarrow.parquet as pq

    from trex.events import sql

    log.append("s", _notes(3))
    log.seal()
    table = pq.read_table(log.segdir / "00000001.parquet")
    with open(log.segdir / "00000002.parquet", "wb") as f:  # no digest, no statistics: checked whole
        pq.write_table(table, f, write_statistics=False, write_page_checksum=True)
    sql._CHECKED.clear()
    with pytest.raises(sql.SqlFailed, match=r"00000002\.parquet: its events \(positions 1\.\.3\)"):
        sql.query(log.home, "SELECT count(*) FROM events")


def test_a_jsonl_beside_a_damaged_parquet_is_kept_as_the_intact_copy(log):
    log.append("s", _notes(3))
    jsonl = _open_segment(log)
    kept = jsonl.read_bytes()
    log.seal()
    (log.segdir / jsonl.name).write_bytes(kept)  # a crash between the seal's rename and its unlink
    parquet = log.segdir / "00000001.parquet"
    data = bytearray(parquet.read_bytes())
    data[len(data) // 2] ^= 0x01
    parquet.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match="00000001.jsonl beside it, left by a seal that crashed, is kept"):
        EventLog(log.home).append("s", _notes(1, "later"))
    assert (log.segdir / jsonl.name).read_bytes() == kept
    r = run(log.home, "verify", "--repair")
    assert r.exit_code == 1 and (log.segdir / jsonl.name).read_bytes() == kept


def test_a_jsonl_beside_its_whole_parquet_is_removed_as_before(log):
    log.append("s", _notes(3))
    jsonl = _open_segment(log)
    kept = jsonl.read_bytes()
    log.seal()
    (log.segdir / jsonl.name).write_bytes(kept)
    EventLog(log.home).append("s", _notes(1, "m"))
    assert not (log.segdir / jsonl.name).exists() and len(_texts(log)) == 4


def test_tree_output_is_never_written_into_the_log_through_a_link_or_into_a_pipe(log, tmp_path):
    from trex.search.hashing import tree_hash  # noqa: F401  (the command's own imports, warmed)

    log.append("s", _notes(1))
    seg = _open_segment(log)
    before = seg.read_bytes()
    target = tmp_path / "target.txt"
    target.write_text("precious")
    (tmp_path / "link.json").symlink_to(target)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for dest, why in ((seg, "into the log's own folder"), (tmp_path / "link.json", "a symbolic link"),
                      (fifo, "not a regular file")):
        r = run(log.home, "tree", "s", "--format", "json", "-o", str(dest))
        assert r.exit_code == 1 and why in r.stderr, r.stderr
    assert seg.read_bytes() == before and target.read_text() == "precious" and fifo.is_fifo()


def test_export_never_unlinks_a_users_file_under_a_temp_name(log, tmp_path):
    log.append("s", _notes(1))
    out = tmp_path / "out"
    out.mkdir()
    mine = out / f"s.parquet.tmp{os.getpid()}"
    mine.write_text("a user's file")
    assert run(log.home, "export", "s", "-o", str(out / "s.parquet")).exit_code == 0
    assert mine.read_text() == "a user's file"
    assert sorted(p.name for p in out.iterdir()) == sorted(["s.parquet", mine.name])
    assert (out / "s.parquet").stat().st_mode & 0o044  # readable as a file the user made
